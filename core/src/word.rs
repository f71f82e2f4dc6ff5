//! The breaker's whole state as one 64-bit word, and every transition as a pure function of it.
//!
//! Nothing in this module touches an atomic, a clock or a thread: each transition takes the
//! current [`Snapshot`] and the time (in clock ticks, milliseconds) and says what the next word
//! is, if any. The CAS loop in [`crate::CircuitBreaker`] applies them to an `AtomicU64`; a later
//! store (a shared-memory file, a Redis key) can apply the very same functions to its own word.
//!
//! # Bit layout
//!
//! ```text
//!  63   61 60            46 45                                               0
//! +-------+----------------+--------------------------------------------------+
//! | state |   generation   |                     payload                      |
//! | 3 bit |     15 bit     |                     46 bit                       |
//! +-------+----------------+--------------------------------------------------+
//!
//! payload by state:
//!   CLOSED       consecutive failures                               (46 bit, < failure_threshold)
//!   OPEN         opened_at: clock ticks (ms) when it opened         (46 bit: 2,229 years)
//!   HALF_OPEN    | last_admit: ticks >> 10 (30 bit) | in_flight (8) | successes (8) |
//!                  (1.024 s units: 34.8 years)       (probes now)    (consecutive)
//!   FORCED_OPEN  0
//!   DISABLED     0
//! ```
//!
//! The all-zero word is CLOSED, generation 0, no failures: a fresh breaker.
//!
//! # Invariants
//!
//! - Every change of the stored state (and every `reset`) increments the generation, so an
//!   outcome reported on a permit from an earlier generation is recognised as stale and ignored.
//!   The generation wraps after 32,768 state changes; an outcome held across exactly a multiple of
//!   that many changes would be taken as current (and every count saturates, so even then no field
//!   over- or underflows).
//! - CLOSED: `failures < failure_threshold`.
//! - HALF_OPEN: `in_flight <= half_open_max_calls` and `successes < success_threshold`.
//! - OPEN is stored as OPEN until something writes; whether it *is* HALF_OPEN is computed from
//!   `opened_at` and the time ([`Snapshot::state_at`]), so no background thread is needed.

use core::fmt;

use crate::{Reason, State, Transition};

/// Bits of the state tag.
const STATE_BITS: u32 = 3;
/// Bits of the generation counter.
const GENERATION_BITS: u32 = 15;
/// Bits of the state-dependent payload: everything below the generation.
pub(crate) const PAYLOAD_BITS: u32 = 64 - STATE_BITS - GENERATION_BITS;

const STATE_SHIFT: u32 = 64 - STATE_BITS;
const GENERATION_SHIFT: u32 = PAYLOAD_BITS;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;
const PAYLOAD_MASK: u64 = (1 << PAYLOAD_BITS) - 1;

/// HALF_OPEN: consecutive probe successes, in the lowest bits of the payload.
const SUCCESS_BITS: u32 = 8;
/// HALF_OPEN: probes admitted and not yet reported, above the successes.
const IN_FLIGHT_BITS: u32 = 8;
const IN_FLIGHT_SHIFT: u32 = SUCCESS_BITS;
/// HALF_OPEN: when the last probe was admitted, in units of `1 << COARSE_SHIFT` ticks.
const LAST_ADMIT_SHIFT: u32 = SUCCESS_BITS + IN_FLIGHT_BITS;
const LAST_ADMIT_BITS: u32 = PAYLOAD_BITS - LAST_ADMIT_SHIFT;
/// A coarse unit is 2^10 ms = 1.024 s.
pub(crate) const COARSE_SHIFT: u32 = 10;

/// The largest `half_open_max_calls` the word can count.
pub const MAX_HALF_OPEN_CALLS: u32 = (1 << IN_FLIGHT_BITS) - 1;
/// The largest `success_threshold` the word can count.
pub const MAX_SUCCESS_THRESHOLD: u32 = (1 << SUCCESS_BITS) - 1;
/// The largest clock reading, in ticks (ms), that OPEN can stamp: 2^46 - 1 ms, about 2,229 years.
pub const MAX_TICKS: u64 = PAYLOAD_MASK;

const TAG_CLOSED: u64 = 0;
const TAG_OPEN: u64 = 1;
const TAG_HALF_OPEN: u64 = 2;
const TAG_FORCED_OPEN: u64 = 3;
const TAG_DISABLED: u64 = 4;

/// The limits a transition needs, in the units of the word (ticks are milliseconds).
///
/// Built once from a validated [`crate::Config`], so the transitions never see a value the word
/// cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub(crate) failure_threshold: u64,
    pub(crate) success_threshold: u64,
    pub(crate) half_open_max_calls: u64,
    /// OPEN lasts this many ticks.
    pub(crate) recovery_ticks: u64,
    /// A probe slot held this many coarse units (rounded up, plus one for the truncation of the
    /// stamp) is presumed lost.
    pub(crate) probe_expiry_units: u64,
}

/// What admission decided, for the caller of [`Snapshot::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run the call; report its outcome with this ticket.
    Admitted(Ticket),
    /// Do not run the call.
    Rejected {
        /// The state that rejected it: OPEN, HALF_OPEN (all probe slots taken) or FORCED_OPEN.
        state: State,
        /// Milliseconds until OPEN turns HALF_OPEN; 0 in HALF_OPEN; `None` in FORCED_OPEN.
        retry_after_ticks: Option<u64>,
    },
}

/// Which generation and kind of slot an admitted call holds. Plain data: the RAII wrapper is
/// [`crate::Permit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) generation: u64,
    pub(crate) probe: bool,
}

impl Ticket {
    /// Whether this call is a HALF_OPEN probe (holds one of the `half_open_max_calls` slots).
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The generation the call was admitted in.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// How a call ended, as the caller classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency worked.
    Success,
    /// The dependency failed: counts towards opening (CLOSED) or reopens (HALF_OPEN).
    Failure,
    /// Neither (an error the caller chose not to count, a cancellation, a dropped permit): the
    /// probe slot, if any, is released and nothing else changes.
    Ignored,
}

/// The breaker's whole state as a plain value. See the [module docs](self) for the layout.
///
/// ```
/// use cb_core::{Snapshot, State};
/// let fresh = Snapshot::default();
/// assert_eq!(fresh.stored_state(), State::Closed);
/// assert_eq!(fresh.failures(), 0);
/// assert_eq!(format!("{fresh:?}"), "Snapshot { state: Closed, generation: 0, failures: 0 }");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Snapshot(u64);

impl Snapshot {
    /// Interprets a raw word (as read from wherever it is stored).
    pub const fn from_bits(bits: u64) -> Self {
        Snapshot(bits)
    }

    /// The raw word, to store.
    pub const fn bits(self) -> u64 {
        self.0
    }

    fn tag(self) -> u64 {
        self.0 >> STATE_SHIFT
    }

    fn payload(self) -> u64 {
        self.0 & PAYLOAD_MASK
    }

    /// The generation: incremented by every change of the stored state.
    pub fn generation(self) -> u64 {
        (self.0 >> GENERATION_SHIFT) & GENERATION_MASK
    }

    /// The state as stored. An OPEN word whose recovery timeout has elapsed is still stored as
    /// OPEN; [`Snapshot::state_at`] gives the state a caller sees.
    pub fn stored_state(self) -> State {
        match self.tag() {
            TAG_CLOSED => State::Closed,
            TAG_OPEN => State::Open,
            TAG_HALF_OPEN => State::HalfOpen,
            TAG_FORCED_OPEN => State::ForcedOpen,
            // Only the five tags above are ever written; an unknown tag (a corrupted external
            // store) is treated as DISABLED's opposite would be unsafe, so it reads as FORCED_OPEN.
            TAG_DISABLED => State::Disabled,
            _ => State::ForcedOpen,
        }
    }

    /// CLOSED: consecutive failures so far. 0 in every other state.
    pub fn failures(self) -> u64 {
        if self.tag() == TAG_CLOSED {
            self.payload()
        } else {
            0
        }
    }

    /// OPEN: the tick it opened at.
    pub fn opened_at(self) -> Option<u64> {
        (self.tag() == TAG_OPEN).then(|| self.payload())
    }

    /// HALF_OPEN: probes admitted and not yet reported. 0 in every other state.
    pub fn in_flight(self) -> u64 {
        if self.tag() == TAG_HALF_OPEN {
            (self.payload() >> IN_FLIGHT_SHIFT) & ((1 << IN_FLIGHT_BITS) - 1)
        } else {
            0
        }
    }

    /// HALF_OPEN: consecutive probe successes. 0 in every other state.
    pub fn successes(self) -> u64 {
        if self.tag() == TAG_HALF_OPEN {
            self.payload() & ((1 << SUCCESS_BITS) - 1)
        } else {
            0
        }
    }

    fn last_admit_units(self) -> u64 {
        self.payload() >> LAST_ADMIT_SHIFT
    }

    /// The state a caller sees at `now`: OPEN becomes HALF_OPEN once the recovery timeout has
    /// elapsed, before anything is written.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot, State};
    /// use std::time::Duration;
    /// let limits = Config::default().recovery_timeout(Duration::from_millis(100)).limits().unwrap();
    /// let open = Snapshot::open(7, 1_000);
    /// assert_eq!(open.state_at(1_099, &limits), State::Open);
    /// assert_eq!(open.state_at(1_100, &limits), State::HalfOpen);
    /// ```
    pub fn state_at(self, now: u64, limits: &Limits) -> State {
        match self.ticks_until_half_open(now, limits) {
            Some(0) => State::HalfOpen,
            _ => self.stored_state(),
        }
    }

    /// OPEN: ticks left until it turns HALF_OPEN (0 once elapsed). `None` in other states.
    #[inline(always)]
    pub fn ticks_until_half_open(self, now: u64, limits: &Limits) -> Option<u64> {
        if self.tag() != TAG_OPEN {
            return None;
        }
        Some(limits.recovery_ticks.saturating_sub(now.saturating_sub(self.payload())))
    }

    // ----- constructors, each the one place its state's word is assembled -----

    fn with(tag: u64, generation: u64, payload: u64) -> Self {
        debug_assert!(payload <= PAYLOAD_MASK);
        Snapshot(
            (tag << STATE_SHIFT)
                | ((generation & GENERATION_MASK) << GENERATION_SHIFT)
                | (payload & PAYLOAD_MASK),
        )
    }

    /// A CLOSED word.
    pub fn closed(generation: u64, failures: u64) -> Self {
        Self::with(TAG_CLOSED, generation, failures.min(PAYLOAD_MASK))
    }

    /// An OPEN word stamped at `opened_at` ticks.
    pub fn open(generation: u64, opened_at: u64) -> Self {
        Self::with(TAG_OPEN, generation, opened_at.min(MAX_TICKS))
    }

    /// A HALF_OPEN word.
    pub fn half_open(generation: u64, last_admit: u64, in_flight: u64, successes: u64) -> Self {
        let units = (last_admit >> COARSE_SHIFT) & ((1 << LAST_ADMIT_BITS) - 1);
        let in_flight = in_flight.min(u64::from(MAX_HALF_OPEN_CALLS));
        let successes = successes.min(u64::from(MAX_SUCCESS_THRESHOLD));
        Self::with(
            TAG_HALF_OPEN,
            generation,
            (units << LAST_ADMIT_SHIFT) | (in_flight << IN_FLIGHT_SHIFT) | successes,
        )
    }

    /// A FORCED_OPEN word.
    pub fn forced_open(generation: u64) -> Self {
        Self::with(TAG_FORCED_OPEN, generation, 0)
    }

    /// A DISABLED word.
    pub fn disabled(generation: u64) -> Self {
        Self::with(TAG_DISABLED, generation, 0)
    }

    fn next_generation(self) -> u64 {
        (self.generation() + 1) & GENERATION_MASK
    }

    // ----- transitions: pure functions of (snapshot, time) -----

    /// Decides whether a call may run. `now` is asked for only where the decision depends on
    /// time (OPEN, and HALF_OPEN with every slot taken), so CLOSED admission reads no clock.
    ///
    /// Returns the word to write (if any), the decision, and the transition it makes (if any).
    ///
    /// ```
    /// use cb_core::{Admission, Config, Snapshot, State};
    /// use std::time::Duration;
    /// let limits = Config::default().recovery_timeout(Duration::from_secs(1)).limits().unwrap();
    /// // CLOSED admits without writing.
    /// let (next, admission, _) = Snapshot::default().admit(|| unreachable!(), &limits);
    /// assert!(next.is_none() && matches!(admission, Admission::Admitted(_)));
    /// // OPEN rejects until the timeout has elapsed, then admits one probe.
    /// let open = Snapshot::open(1, 0);
    /// let (_, admission, _) = open.admit(|| 400, &limits);
    /// assert_eq!(admission, Admission::Rejected { state: State::Open, retry_after_ticks: Some(600) });
    /// let (next, admission, transition) = open.admit(|| 1_000, &limits);
    /// assert_eq!(next.unwrap().stored_state(), State::HalfOpen);
    /// assert!(matches!(admission, Admission::Admitted(t) if t.is_probe()));
    /// assert_eq!(transition.unwrap().to, State::HalfOpen);
    /// ```
    #[inline]
    pub fn admit(
        self,
        now: impl FnOnce() -> u64,
        limits: &Limits,
    ) -> (Option<Snapshot>, Admission, Option<Transition>) {
        // The hot cases inline into the caller: CLOSED/DISABLED admit on the word alone, and
        // OPEN before its timeout rejects after one clock read. Everything else is out of line.
        if let Some(ticket) = self.admits_freely() {
            return (None, Admission::Admitted(ticket), None);
        }
        let now = now();
        match self.open_wait(now, limits) {
            Some(left) => (
                None,
                Admission::Rejected { state: State::Open, retry_after_ticks: Some(left) },
                None,
            ),
            None => self.admit_slow(now, limits),
        }
    }

    /// CLOSED and DISABLED admit every call without writing or reading a clock: the ticket, or
    /// `None` when [`Snapshot::admit`] has to decide further. The hot path's first (and usually only)
    /// question, kept register-sized so it inlines anywhere.
    #[inline(always)]
    pub fn admits_freely(self) -> Option<Ticket> {
        let tag = self.tag();
        (tag == TAG_CLOSED || tag == TAG_DISABLED)
            .then_some(Ticket { generation: self.generation(), probe: false })
    }

    /// OPEN before its recovery timeout: the ticks left, so the call is rejected without a
    /// write. `None` in every other case (including an elapsed OPEN).
    #[inline(always)]
    pub fn open_wait(self, now: u64, limits: &Limits) -> Option<u64> {
        match self.ticks_until_half_open(now, limits) {
            Some(left) if left > 0 => Some(left),
            _ => None,
        }
    }

    /// Whether reporting `outcome` would leave the word as it is without looking further: a
    /// success in CLOSED with no failures pending (whatever its generation).
    #[inline(always)]
    pub fn ignores_quietly(self, outcome: Outcome) -> bool {
        outcome == Outcome::Success && self.tag() == TAG_CLOSED && self.payload() == 0
    }

    /// [`Snapshot::admit`] for an elapsed OPEN, HALF_OPEN and FORCED_OPEN.
    #[cold]
    #[inline(never)]
    fn admit_slow(self, now: u64, limits: &Limits) -> (Option<Snapshot>, Admission, Option<Transition>) {
        let generation = self.generation();
        let admitted = |generation, probe| Admission::Admitted(Ticket { generation, probe });
        match self.stored_state() {
            State::Closed | State::Disabled => (None, admitted(generation, false), None),
            State::ForcedOpen => (
                None,
                Admission::Rejected { state: State::ForcedOpen, retry_after_ticks: None },
                None,
            ),
            State::Open => {
                match self.ticks_until_half_open(now, limits) {
                    Some(left) if left > 0 => (
                        None,
                        Admission::Rejected { state: State::Open, retry_after_ticks: Some(left) },
                        None,
                    ),
                    _ => {
                        let next = Snapshot::half_open(self.next_generation(), now, 1, 0);
                        let transition = Transition {
                            from: State::Open,
                            to: State::HalfOpen,
                            reason: Reason::RecoveryTimeoutElapsed,
                        };
                        (Some(next), admitted(next.generation(), true), Some(transition))
                    }
                }
            }
            State::HalfOpen => {
                let in_flight = self.in_flight();
                if in_flight < limits.half_open_max_calls {
                    let next = Snapshot::half_open(generation, now, in_flight + 1, self.successes());
                    (Some(next), admitted(generation, true), None)
                } else if self.probes_expired(now, limits) {
                    // Every slot is held by a probe nobody has reported for the probe timeout:
                    // presume them lost (a leaked permit, a crashed process) and start a new round
                    // of probes. The new generation makes the lost permits stale.
                    let next = Snapshot::half_open(self.next_generation(), now, 1, 0);
                    (Some(next), admitted(next.generation(), true), None)
                } else {
                    (
                        None,
                        Admission::Rejected { state: State::HalfOpen, retry_after_ticks: Some(0) },
                        None,
                    )
                }
            }
        }
    }

    /// HALF_OPEN: whether the last probe was admitted at least the probe timeout ago. The stamp
    /// is truncated to coarse units, so this is never early and at most two units late.
    fn probes_expired(self, now: u64, limits: &Limits) -> bool {
        let now_units = (now >> COARSE_SHIFT) & ((1 << LAST_ADMIT_BITS) - 1);
        now_units.saturating_sub(self.last_admit_units()) >= limits.probe_expiry_units
    }

    /// Whether an outcome reported on `ticket` still belongs to this word: same generation and
    /// the kind of slot this state hands out.
    pub fn is_current(self, ticket: Ticket) -> bool {
        self.generation() == ticket.generation
            && match self.stored_state() {
                State::HalfOpen => ticket.probe,
                State::Closed | State::Disabled => !ticket.probe,
                State::Open | State::ForcedOpen => false,
            }
    }

    /// Applies a call's outcome. A stale ticket (see [`Snapshot::is_current`]) changes nothing.
    /// `now` is asked for only when the outcome opens the breaker.
    ///
    /// ```
    /// use cb_core::{Admission, Config, Outcome, Snapshot, State};
    /// let limits = Config::default().failure_threshold(2).limits().unwrap();
    /// let Admission::Admitted(ticket) = Snapshot::default().admit(|| 0, &limits).1 else { panic!() };
    /// let (one, _) = Snapshot::default().record(ticket, Outcome::Failure, || 0, &limits);
    /// let one = one.unwrap();
    /// assert_eq!(one.failures(), 1);
    /// let (two, transition) = one.record(ticket, Outcome::Failure, || 42, &limits);
    /// assert_eq!(two.unwrap().opened_at(), Some(42));
    /// assert_eq!(transition.unwrap().to, State::Open);
    /// // A success in CLOSED with no failures pending writes nothing.
    /// assert_eq!(Snapshot::default().record(ticket, Outcome::Success, || 0, &limits).0, None);
    /// ```
    #[inline]
    pub fn record(
        self,
        ticket: Ticket,
        outcome: Outcome,
        now: impl FnOnce() -> u64,
        limits: &Limits,
    ) -> (Option<Snapshot>, Option<Transition>) {
        if self.ignores_quietly(outcome) {
            return (None, None);
        }
        self.record_slow(ticket, outcome, now, limits)
    }

    #[inline(never)]
    fn record_slow(
        self,
        ticket: Ticket,
        outcome: Outcome,
        now: impl FnOnce() -> u64,
        limits: &Limits,
    ) -> (Option<Snapshot>, Option<Transition>) {
        if !self.is_current(ticket) {
            return (None, None);
        }
        let generation = self.generation();
        match (self.stored_state(), outcome) {
            (State::Closed, Outcome::Success) if self.failures() == 0 => (None, None),
            (State::Closed, Outcome::Success) => (Some(Snapshot::closed(generation, 0)), None),
            (State::Closed, Outcome::Failure) => {
                let failures = self.failures() + 1;
                if failures >= limits.failure_threshold {
                    let transition = Transition {
                        from: State::Closed,
                        to: State::Open,
                        reason: Reason::FailureThreshold { failures },
                    };
                    (Some(Snapshot::open(self.next_generation(), now())), Some(transition))
                } else {
                    (Some(Snapshot::closed(generation, failures)), None)
                }
            }
            (State::HalfOpen, Outcome::Success) => {
                let successes = self.successes() + 1;
                if successes >= limits.success_threshold {
                    let transition = Transition {
                        from: State::HalfOpen,
                        to: State::Closed,
                        reason: Reason::ProbeSucceeded { successes },
                    };
                    (Some(Snapshot::closed(self.next_generation(), 0)), Some(transition))
                } else {
                    (Some(self.release_probe().with_successes(successes)), None)
                }
            }
            (State::HalfOpen, Outcome::Failure) => {
                let transition =
                    Transition { from: State::HalfOpen, to: State::Open, reason: Reason::ProbeFailed };
                (Some(Snapshot::open(self.next_generation(), now())), Some(transition))
            }
            (State::HalfOpen, Outcome::Ignored) => (Some(self.release_probe()), None),
            // CLOSED ignored, DISABLED anything: nothing to count.
            _ => (None, None),
        }
    }

    /// HALF_OPEN: one probe fewer in flight (never below zero).
    fn release_probe(self) -> Snapshot {
        let in_flight = self.in_flight().saturating_sub(1);
        Snapshot((self.0 & !(((1 << IN_FLIGHT_BITS) - 1) << IN_FLIGHT_SHIFT)) | (in_flight << IN_FLIGHT_SHIFT))
    }

    /// HALF_OPEN: the same word with another success count.
    fn with_successes(self, successes: u64) -> Snapshot {
        let successes = successes.min(u64::from(MAX_SUCCESS_THRESHOLD));
        Snapshot((self.0 & !((1 << SUCCESS_BITS) - 1)) | successes)
    }

    /// Materialises an elapsed OPEN as HALF_OPEN with no probe in flight, so that the transition
    /// a state read reports is also written and announced once. Nothing to do otherwise.
    pub fn settle(self, now: u64, limits: &Limits) -> (Option<Snapshot>, Option<Transition>) {
        if self.stored_state() == State::Open && self.state_at(now, limits) == State::HalfOpen {
            let transition = Transition {
                from: State::Open,
                to: State::HalfOpen,
                reason: Reason::RecoveryTimeoutElapsed,
            };
            (Some(Snapshot::half_open(self.next_generation(), now, 0, 0)), Some(transition))
        } else {
            (None, None)
        }
    }

    /// A manual command: the new word, and the transition if the visible state changes. Always
    /// writes (a new generation), so permits from before the command are stale.
    ///
    /// ```
    /// use cb_core::{Command, Snapshot, State};
    /// let (next, transition) = Snapshot::closed(0, 3).command(Command::Reset);
    /// assert_eq!(next.failures(), 0);
    /// assert_eq!(next.generation(), 1);
    /// assert!(transition.is_none()); // CLOSED -> CLOSED is not a transition
    /// let (next, transition) = next.command(Command::ForceOpen);
    /// assert_eq!(next.stored_state(), State::ForcedOpen);
    /// assert_eq!(transition.unwrap().from, State::Closed);
    /// ```
    pub fn command(self, command: Command) -> (Snapshot, Option<Transition>) {
        let generation = self.next_generation();
        let (next, reason) = match command {
            Command::Reset => (Snapshot::closed(generation, 0), Reason::Reset),
            Command::ForceOpen => (Snapshot::forced_open(generation), Reason::ForcedOpen),
            Command::Disable => (Snapshot::disabled(generation), Reason::Disabled),
        };
        // The state a reader saw: an elapsed OPEN was HALF_OPEN to them, but it was never
        // announced, so the transition starts from what was last announced (stored).
        let from = self.stored_state();
        let transition = (from != next.stored_state()).then_some(Transition { from, to: next.stored_state(), reason });
        (next, transition)
    }
}

/// A manual control of the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Back to CLOSED with every count cleared.
    Reset,
    /// OPEN until the next reset, whatever happens (resilience4j FORCED_OPEN, Polly Isolate).
    ForceOpen,
    /// Admit everything and never trip, until the next reset.
    Disable,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Snapshot");
        d.field("state", &self.stored_state()).field("generation", &self.generation());
        match self.stored_state() {
            State::Closed => d.field("failures", &self.failures()),
            State::Open => d.field("opened_at", &self.payload()),
            State::HalfOpen => d
                .field("in_flight", &self.in_flight())
                .field("successes", &self.successes())
                .field("last_admit_units", &self.last_admit_units()),
            State::ForcedOpen | State::Disabled => &mut d,
        };
        d.finish()
    }
}
