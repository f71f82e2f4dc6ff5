//! The breaker's whole state as one 64-bit word, and every transition as a pure function of it.
//!
//! Nothing in this module touches an atomic, a clock or a thread: each transition takes the
//! current [`Snapshot`] and the time (in clock ticks, milliseconds) and returns a [`Step`]: the
//! next word to write (if any), what to tell the caller, and the transition the write makes (if
//! any). The CAS loop in [`crate::CircuitBreaker`] applies them to wherever the word is stored
//! (a [`crate::Store`]: an `AtomicU64` in this process, or a slot in shared memory), and every
//! store runs the very same functions.
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
//!
//! # Words from outside
//!
//! A word read from shared memory may have been written by anyone. The transitions accept every
//! 64-bit value and make progress from it, so no value can wedge a breaker (the property test
//! `core/tests/foreign_words.rs` checks this for arbitrary words):
//!
//! - an unknown state tag reads as CLOSED with no failures, and the next write replaces it;
//! - counts beyond the limits saturate (a CLOSED word at or over the threshold trips on the next
//!   failure; a HALF_OPEN word with too many probes in flight waits for the probe timeout);
//! - a timestamp further in the future than [`CLOCK_SKEW_TICKS`] cannot come from a clock this
//!   host shares, and reads as long past: OPEN is due for a probe, HALF_OPEN probes are expired.
//!
//! [`Snapshot::is_well_formed`] tells whether a word is one these functions could have written.

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
const GENERATION_MASK: u64 = mask(GENERATION_BITS);
const PAYLOAD_MASK: u64 = mask(PAYLOAD_BITS);

/// HALF_OPEN: consecutive probe successes, in the lowest bits of the payload.
const SUCCESS_BITS: u32 = 8;
const SUCCESS_MASK: u64 = mask(SUCCESS_BITS);
/// HALF_OPEN: probes admitted and not yet reported, above the successes.
const IN_FLIGHT_BITS: u32 = 8;
const IN_FLIGHT_SHIFT: u32 = SUCCESS_BITS;
const IN_FLIGHT_MASK: u64 = mask(IN_FLIGHT_BITS);
/// HALF_OPEN: when the last probe was admitted, in units of `1 << COARSE_SHIFT` ticks, above the
/// probes in flight.
const LAST_ADMIT_SHIFT: u32 = IN_FLIGHT_SHIFT + IN_FLIGHT_BITS;
const LAST_ADMIT_BITS: u32 = PAYLOAD_BITS - LAST_ADMIT_SHIFT;
const LAST_ADMIT_MASK: u64 = mask(LAST_ADMIT_BITS);
/// A coarse unit is 2^10 ms = 1.024 s.
pub(crate) const COARSE_SHIFT: u32 = 10;

/// The largest `half_open_max_calls` the word can count.
pub const MAX_HALF_OPEN_CALLS: u32 = IN_FLIGHT_MASK as u32;
/// The largest `success_threshold` the word can count.
pub const MAX_SUCCESS_THRESHOLD: u32 = SUCCESS_MASK as u32;
/// The largest clock reading, in ticks (ms), that OPEN can stamp: 2^46 - 1 ms, about 2,229 years.
pub const MAX_TICKS: u64 = PAYLOAD_MASK;
/// How far (ms) a stamp in the word may be ahead of the reader's clock and still be believed.
///
/// Processes on one host read one `CLOCK_MONOTONIC`, but through clocks of different
/// resolution: the coarse clock lags the exact one by up to one kernel tick (at most 10 ms).
/// A stamp further ahead than this second was not written by a clock this host shares.
pub const CLOCK_SKEW_TICKS: u64 = 1_000;

const fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

/// State tag of CLOSED. Zero, so that the all-zero word is a fresh breaker.
const TAG_CLOSED: u64 = 0;
/// State tag of OPEN; the payload is the tick it opened at.
const TAG_OPEN: u64 = 1;
/// State tag of HALF_OPEN; the payload packs last admission, probes in flight and successes.
const TAG_HALF_OPEN: u64 = 2;
/// State tag of FORCED_OPEN (set by `force_open`); no payload.
const TAG_FORCED_OPEN: u64 = 3;
/// State tag of DISABLED (set by `disable`); no payload.
const TAG_DISABLED: u64 = 4;

/// The limits a transition needs, in the units of the word (ticks are milliseconds).
///
/// Built once from a validated [`crate::Config`], so the transitions never see a value the word
/// cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub(crate) failure_threshold: u64,
    /// Whether CLOSED counts consecutive failures (`Config::consecutive_failures`); when not,
    /// a failure in CLOSED leaves the word as it is (and `failure_threshold` is 0, so that the
    /// common failure's check, `counts_failure`, fails without a test of its own).
    pub(crate) counts_failures: bool,
    pub(crate) success_threshold: u64,
    pub(crate) half_open_max_calls: u64,
    /// OPEN lasts this many ticks.
    pub(crate) recovery_ticks: u64,
    /// `recovery_ticks + CLOCK_SKEW_TICKS`: the longest wait an OPEN stamp can mean.
    pub(crate) open_window_ticks: u64,
    /// A probe slot held this many coarse units (rounded up, plus one for the truncation of the
    /// stamp) is presumed lost.
    pub(crate) probe_expiry_units: u64,
    /// The failure-rate and slow-call policies, if any.
    pub(crate) rates: Option<crate::window::RateLimits>,
    /// `Config::max_concurrent_calls`: `None` counts nothing.
    pub(crate) max_concurrent_calls: Option<core::num::NonZeroU32>,
}

/// What a transition function decided.
///
/// ```
/// use cb_core::{Config, Outcome, Snapshot, State};
/// let limits = Config::default().failure_threshold(1).limits().unwrap();
/// let ticket = Snapshot::default().admit(|| 0, &limits).result.ticket().unwrap();
/// let step = Snapshot::default().record(&ticket, Outcome::Failure, || 42, &limits);
/// assert_eq!(step.next.unwrap().opened_at(), Some(42));
/// assert_eq!(step.transition.unwrap().to, State::Open);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a step does nothing until its word is written"]
pub struct Step<R = ()> {
    /// The word to write, or `None` when the current word stays as it is.
    pub next: Option<Snapshot>,
    /// What the caller is told (the admission decision, the state read, ...).
    pub result: R,
    /// The change of state that writing `next` makes, if any: announced once it is written.
    pub transition: Option<Transition>,
}

impl<R> Step<R> {
    /// Writes nothing.
    const fn stay(result: R) -> Self {
        Step { next: None, result, transition: None }
    }

    /// Writes `next` without changing the state.
    const fn write(next: Snapshot, result: R) -> Self {
        Step { next: Some(next), result, transition: None }
    }

    /// Writes `next`, which moves from one state to another.
    const fn transition(next: Snapshot, result: R, transition: Transition) -> Self {
        Step { next: Some(next), result, transition: Some(transition) }
    }
}

/// What admission decided, for the caller of [`Snapshot::admit`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
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

impl Admission {
    /// The ticket, if admitted.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// let limits = Config::default().limits().unwrap();
    /// assert!(Snapshot::default().admit(|| 0, &limits).result.ticket().is_some());
    /// ```
    pub fn ticket(self) -> Option<Ticket> {
        match self {
            Admission::Admitted(ticket) => Some(ticket),
            Admission::Rejected { .. } => None,
        }
    }
}

/// What the word decides on its own on the hot path: admit (CLOSED, DISABLED, without reading the
/// clock), reject (OPEN before its timeout, after one clock read), or hand over to the full
/// transition with the time already read.
pub(crate) enum Quick {
    Admitted(Ticket),
    Rejected { retry_after_ticks: u64 },
    Undecided { now: u64 },
}

/// Which generation and kind of slot an admitted call holds. The RAII wrapper is
/// [`crate::Permit`].
///
/// Neither `Copy` nor `Clone`: an admitted call holds its place under
/// `Config::max_concurrent_calls` (and a HALF_OPEN probe its slot) until its ticket is passed
/// to [`crate::CircuitBreaker::record`], which takes it by value, so a place is given back
/// exactly once. A ticket dropped without being recorded keeps its place for good (use a
/// [`crate::Permit`], which records on drop, unless you keep tickets yourself).
///
/// ```compile_fail
/// # use cb_core::{CircuitBreaker, Outcome};
/// let breaker = CircuitBreaker::new(Default::default()).unwrap();
/// let ticket = breaker.admit_ticket().unwrap();
/// breaker.record(ticket, Outcome::Success);
/// breaker.record(ticket, Outcome::Success); // used after move: a place cannot be returned twice
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket holds its call's place until it is passed to CircuitBreaker::record"]
pub struct Ticket {
    /// The generation in the low 16 bits; above them, when the breaker times its calls (a
    /// slow-call policy), the admission time in ticks (else 0). Packed so that a ticket stays
    /// two registers wide and the hot paths keep it in registers.
    pub(crate) stamp: u64,
    pub(crate) probe: bool,
}

impl Ticket {
    /// Whether this call is a HALF_OPEN probe (holds one of the `half_open_max_calls` slots).
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// let limits = Config::default().limits().unwrap();
    /// let ticket = Snapshot::default().admit(|| 0, &limits).result.ticket().unwrap();
    /// assert!(!ticket.is_probe());
    /// ```
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The generation the call was admitted in.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// let limits = Config::default().limits().unwrap();
    /// let ticket = Snapshot::closed(7, 0).admit(|| 0, &limits).result.ticket().unwrap();
    /// assert_eq!(ticket.generation(), 7);
    /// ```
    pub fn generation(&self) -> u64 {
        self.stamp & TICKET_GENERATION_MASK
    }

    /// A ticket for a call admitted in `generation`.
    pub(crate) const fn new(generation: u64, probe: bool) -> Ticket {
        Ticket { stamp: generation, probe }
    }

    /// When the call was admitted (ticks), if stamped; else 0.
    pub(crate) fn started(&self) -> u64 {
        self.stamp >> TICKET_TIME_SHIFT
    }

    /// The same ticket stamped with its admission time (wrapping at 2^48 ticks, about 8,900
    /// years of milliseconds).
    pub(crate) fn stamped(self, now: u64) -> Ticket {
        Ticket { stamp: self.generation() | (now << TICKET_TIME_SHIFT), probe: self.probe }
    }
}

const TICKET_TIME_SHIFT: u32 = 16;
const TICKET_GENERATION_MASK: u64 = mask(TICKET_TIME_SHIFT);
const _: () = assert!(GENERATION_BITS <= TICKET_TIME_SHIFT);

/// How a call ended, as the caller classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// Interprets a raw word (as read from wherever it is stored). Every value is accepted; see
    /// [Words from outside](self#words-from-outside).
    ///
    /// ```
    /// use cb_core::Snapshot;
    /// assert_eq!(Snapshot::from_bits(Snapshot::open(3, 99).bits()), Snapshot::open(3, 99));
    /// ```
    pub const fn from_bits(bits: u64) -> Self {
        Snapshot(bits)
    }

    /// The raw word, to store.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::default().bits(), 0);
    /// ```
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
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::open(12, 0).generation(), 12);
    /// ```
    pub fn generation(self) -> u64 {
        (self.0 >> GENERATION_SHIFT) & GENERATION_MASK
    }

    /// The state as stored. An OPEN word whose recovery timeout has elapsed is still stored as
    /// OPEN; [`Snapshot::state_at`] gives the state a caller sees. An unknown tag (only a
    /// foreign or corrupted word has one) reads as CLOSED.
    ///
    /// ```
    /// use cb_core::{Snapshot, State};
    /// assert_eq!(Snapshot::forced_open(0).stored_state(), State::ForcedOpen);
    /// assert_eq!(Snapshot::from_bits(7 << 61).stored_state(), State::Closed);
    /// ```
    pub fn stored_state(self) -> State {
        match self.tag() {
            TAG_OPEN => State::Open,
            TAG_HALF_OPEN => State::HalfOpen,
            TAG_FORCED_OPEN => State::ForcedOpen,
            TAG_DISABLED => State::Disabled,
            _ => State::Closed,
        }
    }

    /// CLOSED: consecutive failures so far. 0 in every other state (and for an unknown tag).
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::closed(0, 2).failures(), 2);
    /// ```
    pub fn failures(self) -> u64 {
        if self.tag() == TAG_CLOSED {
            self.payload()
        } else {
            0
        }
    }

    /// OPEN: the tick it opened at.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::open(0, 1_234).opened_at(), Some(1_234));
    /// ```
    pub fn opened_at(self) -> Option<u64> {
        (self.tag() == TAG_OPEN).then(|| self.payload())
    }

    /// HALF_OPEN: probes admitted and not yet reported. 0 in every other state.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::half_open(0, 0, 2, 1).in_flight(), 2);
    /// ```
    pub fn in_flight(self) -> u64 {
        if self.tag() == TAG_HALF_OPEN {
            (self.payload() >> IN_FLIGHT_SHIFT) & IN_FLIGHT_MASK
        } else {
            0
        }
    }

    /// HALF_OPEN: consecutive probe successes. 0 in every other state.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::half_open(0, 0, 2, 1).successes(), 1);
    /// ```
    pub fn successes(self) -> u64 {
        if self.tag() == TAG_HALF_OPEN {
            self.payload() & SUCCESS_MASK
        } else {
            0
        }
    }

    fn last_admit_units(self) -> u64 {
        (self.payload() >> LAST_ADMIT_SHIFT) & LAST_ADMIT_MASK
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

    /// OPEN: ticks left until it turns HALF_OPEN (0 once elapsed). `None` in other states. A
    /// stamp too far in the future to be believed ([`CLOCK_SKEW_TICKS`]) counts as elapsed.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// use std::time::Duration;
    /// let limits = Config::default().recovery_timeout(Duration::from_secs(10)).limits().unwrap();
    /// assert_eq!(Snapshot::open(0, 5_000).ticks_until_half_open(8_000, &limits), Some(7_000));
    /// // Stamped a day ahead of this clock: not a stamp this host wrote.
    /// assert_eq!(Snapshot::open(0, 86_400_000).ticks_until_half_open(8_000, &limits), Some(0));
    /// ```
    #[inline(always)]
    pub fn ticks_until_half_open(self, now: u64, limits: &Limits) -> Option<u64> {
        if self.tag() != TAG_OPEN {
            return None;
        }
        // The stamp's age, shifted by the skew so that a stamp up to CLOCK_SKEW_TICKS ahead still
        // has a non-negative age; a stamp further ahead wraps to a huge age, which reads as long
        // elapsed. One subtraction more than the plain `recovery - (now - opened)`.
        let age = now.wrapping_sub(self.payload()).wrapping_add(CLOCK_SKEW_TICKS);
        Some(limits.open_window_ticks.saturating_sub(age))
    }

    /// Whether this word is one the transitions could have written under `limits` by time
    /// `now`: a known tag, counts within the limits, no stamp beyond the clock skew, an empty
    /// payload where the state has none. A store that reads a word from outside uses this to
    /// report (and repair) corruption; the transitions themselves accept any word.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// let limits = Config::default().failure_threshold(3).limits().unwrap();
    /// assert!(Snapshot::closed(4, 2).is_well_formed(0, &limits));
    /// assert!(!Snapshot::closed(4, 3).is_well_formed(0, &limits));       // at the threshold
    /// assert!(!Snapshot::open(0, 90_000).is_well_formed(1_000, &limits)); // stamped ahead
    /// assert!(!Snapshot::from_bits(6 << 61).is_well_formed(0, &limits));  // unknown tag
    /// ```
    pub fn is_well_formed(self, now: u64, limits: &Limits) -> bool {
        let not_ahead = |tick: u64| tick <= now.saturating_add(CLOCK_SKEW_TICKS);
        match self.tag() {
            TAG_CLOSED => self.failures() < limits.failure_threshold || !limits.counts_failures,
            TAG_OPEN => not_ahead(self.payload()),
            TAG_HALF_OPEN => {
                self.in_flight() <= limits.half_open_max_calls
                    && self.successes() < limits.success_threshold
                    && self.last_admit_units() <= Self::units(now.saturating_add(CLOCK_SKEW_TICKS))
            }
            TAG_FORCED_OPEN | TAG_DISABLED => self.payload() == 0,
            _ => false,
        }
    }

    // ----- constructors, each the one place its state's word is assembled -----

    fn with(tag: u64, generation: u64, payload: u64) -> Self {
        debug_assert!(payload <= PAYLOAD_MASK);
        Snapshot((tag << STATE_SHIFT) | ((generation & GENERATION_MASK) << GENERATION_SHIFT) | (payload & PAYLOAD_MASK))
    }

    /// A CLOSED word.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::closed(1, 4).failures(), 4);
    /// ```
    pub fn closed(generation: u64, failures: u64) -> Self {
        Self::with(TAG_CLOSED, generation, failures.min(PAYLOAD_MASK))
    }

    /// An OPEN word stamped at `opened_at` ticks.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::open(1, 500).opened_at(), Some(500));
    /// ```
    pub fn open(generation: u64, opened_at: u64) -> Self {
        Self::with(TAG_OPEN, generation, opened_at.min(MAX_TICKS))
    }

    /// A HALF_OPEN word: the last probe admitted at tick `last_admit` (kept in 1.024 s units),
    /// `in_flight` probes running, `successes` consecutive probe successes.
    ///
    /// ```
    /// use cb_core::{Snapshot, State};
    /// let s = Snapshot::half_open(2, 10_000, 1, 0);
    /// assert_eq!((s.stored_state(), s.in_flight(), s.successes()), (State::HalfOpen, 1, 0));
    /// ```
    pub fn half_open(generation: u64, last_admit: u64, in_flight: u64, successes: u64) -> Self {
        let in_flight = in_flight.min(IN_FLIGHT_MASK);
        let successes = successes.min(SUCCESS_MASK);
        let payload =
            (Self::units(last_admit) << LAST_ADMIT_SHIFT) | (in_flight << IN_FLIGHT_SHIFT) | successes;
        Self::with(TAG_HALF_OPEN, generation, payload)
    }

    /// A FORCED_OPEN word.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::forced_open(0).stored_state(), cb_core::State::ForcedOpen);
    /// ```
    pub fn forced_open(generation: u64) -> Self {
        Self::with(TAG_FORCED_OPEN, generation, 0)
    }

    /// A DISABLED word.
    ///
    /// ```
    /// assert_eq!(cb_core::Snapshot::disabled(0).stored_state(), cb_core::State::Disabled);
    /// ```
    pub fn disabled(generation: u64) -> Self {
        Self::with(TAG_DISABLED, generation, 0)
    }

    /// A tick in the coarse units HALF_OPEN keeps its admission stamp in.
    fn units(tick: u64) -> u64 {
        (tick >> COARSE_SHIFT) & LAST_ADMIT_MASK
    }

    fn next_generation(self) -> u64 {
        (self.generation() + 1) & GENERATION_MASK
    }

    /// HALF_OPEN: the same word with one probe fewer in flight (never below zero).
    fn release_probe(self) -> Snapshot {
        let in_flight = self.in_flight().saturating_sub(1);
        Snapshot((self.0 & !(IN_FLIGHT_MASK << IN_FLIGHT_SHIFT)) | (in_flight << IN_FLIGHT_SHIFT))
    }

    /// HALF_OPEN: the same word with another success count.
    fn with_successes(self, successes: u64) -> Snapshot {
        Snapshot((self.0 & !SUCCESS_MASK) | successes.min(SUCCESS_MASK))
    }

    // ----- the hot path's questions, asked of the word alone -----

    /// The hot path of admission, written once for [`Snapshot::admit`] and the breaker: CLOSED and
    /// DISABLED admit on the word alone (no clock read, no write); OPEN before its timeout
    /// rejects after one clock read; everything else is undecided, with the time read.
    #[inline(always)]
    pub(crate) fn admit_quick(self, now: impl FnOnce() -> u64, limits: &Limits) -> Quick {
        let tag = self.tag();
        if tag == TAG_CLOSED || tag == TAG_DISABLED {
            return Quick::Admitted(Ticket::new(self.generation(), false));
        }
        let now = now();
        match self.ticks_until_half_open(now, limits) {
            Some(left) if left > 0 => Quick::Rejected { retry_after_ticks: left },
            _ => Quick::Undecided { now },
        }
    }

    /// Whether reporting `outcome` leaves the word as it is without looking further: a success
    /// in CLOSED with no failures pending (whatever its generation).
    #[inline(always)]
    pub(crate) fn ignores_quietly(self, outcome: Outcome) -> bool {
        outcome == Outcome::Success && self.tag() == TAG_CLOSED && self.payload() == 0
    }

    /// Whether a failure leaves the word as it is without looking further: CLOSED, a call
    /// admitted in CLOSED, and no consecutive count kept (`Config::consecutive_failures` off;
    /// the rate policies decide).
    #[inline(always)]
    pub(crate) fn ignores_failure(self, ticket: &Ticket, limits: &Limits) -> bool {
        !limits.counts_failures && !ticket.probe && self.tag() == TAG_CLOSED
    }

    /// The common failure, decided on the word alone: CLOSED, the ticket current, and the count
    /// still below the threshold after it. The next word is this one plus one (the count is the
    /// payload's lowest bits and stays far below its width). `None` when the full transition
    /// has to decide.
    #[inline(always)]
    pub(crate) fn counts_failure(self, ticket: &Ticket, limits: &Limits) -> Option<Snapshot> {
        let current = self.tag() == TAG_CLOSED && self.generation() == ticket.generation() && !ticket.probe;
        (current && self.payload() + 1 < limits.failure_threshold).then_some(Snapshot(self.0 + 1))
    }

    // ----- transitions: pure functions of (snapshot, time) -----

    /// Decides whether a call may run. `now` is asked for only where the decision depends on
    /// time (OPEN, HALF_OPEN), so CLOSED admission reads no clock.
    ///
    /// ```
    /// use cb_core::{Admission, Config, Snapshot, State};
    /// use std::time::Duration;
    /// let limits = Config::default().recovery_timeout(Duration::from_secs(1)).limits().unwrap();
    /// // CLOSED admits without writing.
    /// let step = Snapshot::default().admit(|| unreachable!(), &limits);
    /// assert!(step.next.is_none() && step.result.ticket().is_some());
    /// // OPEN rejects until the timeout has elapsed, then admits one probe.
    /// let open = Snapshot::open(1, 0);
    /// let step = open.admit(|| 400, &limits);
    /// assert_eq!(step.result, Admission::Rejected { state: State::Open, retry_after_ticks: Some(600) });
    /// let step = open.admit(|| 1_000, &limits);
    /// assert_eq!(step.next.unwrap().stored_state(), State::HalfOpen);
    /// assert!(step.result.ticket().unwrap().is_probe());
    /// assert_eq!(step.transition.unwrap().to, State::HalfOpen);
    /// ```
    #[inline]
    pub fn admit(self, now: impl FnOnce() -> u64, limits: &Limits) -> Step<Admission> {
        match self.admit_quick(now, limits) {
            Quick::Admitted(ticket) => Step::stay(Admission::Admitted(ticket)),
            Quick::Rejected { retry_after_ticks } => Step::stay(Admission::Rejected {
                state: State::Open,
                retry_after_ticks: Some(retry_after_ticks),
            }),
            Quick::Undecided { now } => self.admit_slow(now, limits),
        }
    }

    /// [`Snapshot::admit`] for an elapsed OPEN, HALF_OPEN and FORCED_OPEN.
    #[inline(never)]
    fn admit_slow(self, now: u64, limits: &Limits) -> Step<Admission> {
        let generation = self.generation();
        let admitted = |generation, probe| Admission::Admitted(Ticket::new(generation, probe));
        match self.stored_state() {
            State::Closed | State::Disabled => Step::stay(admitted(generation, false)),
            State::ForcedOpen => {
                Step::stay(Admission::Rejected { state: State::ForcedOpen, retry_after_ticks: None })
            }
            State::Open => match self.ticks_until_half_open(now, limits) {
                Some(left) if left > 0 => Step::stay(Admission::Rejected {
                    state: State::Open,
                    retry_after_ticks: Some(left),
                }),
                _ => {
                    let next = Snapshot::half_open(self.next_generation(), now, 1, 0);
                    let transition =
                        Transition { from: State::Open, to: State::HalfOpen, reason: Reason::RecoveryTimeoutElapsed };
                    Step::transition(next, admitted(next.generation(), true), transition)
                }
            },
            State::HalfOpen => {
                let in_flight = self.in_flight();
                if in_flight < limits.half_open_max_calls {
                    let next = Snapshot::half_open(generation, now, in_flight + 1, self.successes());
                    Step::write(next, admitted(generation, true))
                } else if self.probes_expired(now, limits) {
                    // Every slot is held by a probe nobody has reported for the probe timeout:
                    // presume them lost (a leaked permit, a crashed process) and start a new round
                    // of probes. The new generation makes the lost permits stale.
                    let next = Snapshot::half_open(self.next_generation(), now, 1, 0);
                    Step::write(next, admitted(next.generation(), true))
                } else {
                    Step::stay(Admission::Rejected { state: State::HalfOpen, retry_after_ticks: Some(0) })
                }
            }
        }
    }

    /// HALF_OPEN: whether the last probe was admitted at least the probe timeout ago. The stamp
    /// is truncated to coarse units, so this is never early and at most two units late. A stamp
    /// ahead of the clock by more than the skew is not believed and counts as expired.
    fn probes_expired(self, now: u64, limits: &Limits) -> bool {
        let last = self.last_admit_units();
        let now_units = Self::units(now);
        if last > Self::units(now.saturating_add(CLOCK_SKEW_TICKS)) {
            return true;
        }
        now_units.saturating_sub(last) >= limits.probe_expiry_units
    }

    /// Whether an outcome reported on `ticket` still belongs to this word: same generation and
    /// the kind of slot this state hands out.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot};
    /// let limits = Config::default().limits().unwrap();
    /// let ticket = Snapshot::closed(3, 0).admit(|| 0, &limits).result.ticket().unwrap();
    /// assert!(Snapshot::closed(3, 1).is_current(&ticket));
    /// assert!(!Snapshot::closed(4, 0).is_current(&ticket)); // a reset came in between
    /// ```
    pub fn is_current(self, ticket: &Ticket) -> bool {
        self.generation() == ticket.generation()
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
    /// use cb_core::{Config, Outcome, Snapshot, State};
    /// let limits = Config::default().failure_threshold(2).limits().unwrap();
    /// let ticket = Snapshot::default().admit(|| 0, &limits).result.ticket().unwrap();
    /// let one = Snapshot::default().record(&ticket, Outcome::Failure, || 0, &limits).next.unwrap();
    /// assert_eq!(one.failures(), 1);
    /// let step = one.record(&ticket, Outcome::Failure, || 42, &limits);
    /// assert_eq!(step.next.unwrap().opened_at(), Some(42));
    /// assert_eq!(step.transition.unwrap().to, State::Open);
    /// // A success in CLOSED with no failures pending writes nothing.
    /// assert_eq!(Snapshot::default().record(&ticket, Outcome::Success, || 0, &limits).next, None);
    /// ```
    #[inline]
    pub fn record(self, ticket: &Ticket, outcome: Outcome, now: impl FnOnce() -> u64, limits: &Limits) -> Step {
        if self.ignores_quietly(outcome) {
            return Step::stay(());
        }
        if outcome == Outcome::Failure {
            if let Some(next) = self.counts_failure(ticket, limits) {
                return Step::write(next, ());
            }
        }
        self.record_slow(ticket, outcome, now, limits)
    }

    /// CLOSED → OPEN for a trip policy other than the consecutive count (a rate over the
    /// window): only from the CLOSED generation `ticket` was admitted in, so of many threads
    /// deciding to trip on the same window exactly one writes the transition.
    ///
    /// ```
    /// use cb_core::{Config, Reason, Snapshot, State};
    /// let limits = Config::default().limits().unwrap();
    /// let ticket = Snapshot::default().admit(|| 0, &limits).result.ticket().unwrap();
    /// let reason = Reason::FailureRate { failures: 6, calls: 10 };
    /// let step = Snapshot::default().trip(&ticket, reason, || 7);
    /// assert_eq!(step.transition.unwrap().to, State::Open);
    /// let opened = step.next.unwrap();
    /// assert!(opened.trip(&ticket, reason, || 8).next.is_none()); // already tripped
    /// ```
    pub fn trip(self, ticket: &Ticket, reason: Reason, now: impl FnOnce() -> u64) -> Step {
        if ticket.probe || self.generation() != ticket.generation() || self.stored_state() != State::Closed {
            return Step::stay(());
        }
        let transition = Transition { from: State::Closed, to: State::Open, reason };
        Step::transition(Snapshot::open(self.next_generation(), now()), (), transition)
    }

    #[inline(never)]
    fn record_slow(self, ticket: &Ticket, outcome: Outcome, now: impl FnOnce() -> u64, limits: &Limits) -> Step {
        // Decided on the tag directly (the same rules as `is_current` and `stored_state`, in
        // one match): a stale ticket, or one of the wrong kind for the state, changes nothing.
        if self.generation() != ticket.generation() {
            return Step::stay(());
        }
        let generation = self.generation();
        match self.tag() {
            TAG_HALF_OPEN if ticket.probe => match outcome {
                Outcome::Success => {
                    let successes = self.successes() + 1;
                    if successes >= limits.success_threshold {
                        let reason = Reason::ProbeSucceeded { successes };
                        let transition = Transition { from: State::HalfOpen, to: State::Closed, reason };
                        Step::transition(Snapshot::closed(self.next_generation(), 0), (), transition)
                    } else {
                        Step::write(self.release_probe().with_successes(successes), ())
                    }
                }
                Outcome::Failure => {
                    let transition = Transition { from: State::HalfOpen, to: State::Open, reason: Reason::ProbeFailed };
                    Step::transition(Snapshot::open(self.next_generation(), now()), (), transition)
                }
                Outcome::Ignored => Step::write(self.release_probe(), ()),
            },
            // CLOSED, and an unknown tag, which reads as CLOSED with no failures.
            tag if !ticket.probe && (tag == TAG_CLOSED || tag > TAG_DISABLED) => match outcome {
                Outcome::Success if self.failures() == 0 => Step::stay(()),
                Outcome::Success => Step::write(Snapshot::closed(generation, 0), ()),
                Outcome::Failure if !limits.counts_failures => Step::stay(()),
                Outcome::Failure => {
                    let failures = self.failures() + 1;
                    if failures >= limits.failure_threshold {
                        let reason = Reason::FailureThreshold { failures };
                        let transition = Transition { from: State::Closed, to: State::Open, reason };
                        Step::transition(Snapshot::open(self.next_generation(), now()), (), transition)
                    } else {
                        Step::write(Snapshot::closed(generation, failures), ())
                    }
                }
                Outcome::Ignored => Step::stay(()),
            },
            // OPEN, FORCED_OPEN, DISABLED, or a ticket of the wrong kind: nothing to count.
            _ => Step::stay(()),
        }
    }

    /// Materialises an elapsed OPEN as HALF_OPEN with no probe in flight, so that the transition
    /// a state read reports is also written and announced once. The result is the state a
    /// caller sees at `now`.
    ///
    /// ```
    /// use cb_core::{Config, Snapshot, State};
    /// use std::time::Duration;
    /// let limits = Config::default().recovery_timeout(Duration::from_secs(1)).limits().unwrap();
    /// assert_eq!(Snapshot::open(0, 0).settle(500, &limits).result, State::Open);
    /// let step = Snapshot::open(0, 0).settle(1_000, &limits);
    /// assert_eq!((step.result, step.next.unwrap().in_flight()), (State::HalfOpen, 0));
    /// ```
    pub fn settle(self, now: u64, limits: &Limits) -> Step<State> {
        match self.state_at(now, limits) {
            State::HalfOpen if self.stored_state() == State::Open => {
                let transition =
                    Transition { from: State::Open, to: State::HalfOpen, reason: Reason::RecoveryTimeoutElapsed };
                Step::transition(Snapshot::half_open(self.next_generation(), now, 0, 0), State::HalfOpen, transition)
            }
            state => Step::stay(state),
        }
    }

    /// A manual command: always writes (a new generation, so permits from before the command are
    /// stale), and is a transition if the visible state changes.
    ///
    /// ```
    /// use cb_core::{Command, Snapshot, State};
    /// let step = Snapshot::closed(0, 3).command(Command::Reset);
    /// let next = step.next.unwrap();
    /// assert_eq!((next.failures(), next.generation()), (0, 1));
    /// assert!(step.transition.is_none()); // CLOSED -> CLOSED is not a transition
    /// let step = next.command(Command::ForceOpen);
    /// assert_eq!(step.next.unwrap().stored_state(), State::ForcedOpen);
    /// assert_eq!(step.transition.unwrap().from, State::Closed);
    /// ```
    pub fn command(self, command: Command) -> Step {
        let generation = self.next_generation();
        let (next, reason) = match command {
            Command::Reset => (Snapshot::closed(generation, 0), Reason::Reset),
            Command::ForceOpen => (Snapshot::forced_open(generation), Reason::ForcedOpen),
            Command::Disable => (Snapshot::disabled(generation), Reason::Disabled),
        };
        // The state a reader saw: an elapsed OPEN was HALF_OPEN to them, but it was never
        // announced, so the transition starts from what was last announced (stored).
        let (from, to) = (self.stored_state(), next.stored_state());
        if from == to {
            Step::write(next, ())
        } else {
            Step::transition(next, (), Transition { from, to, reason })
        }
    }
}

/// A manual control of the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
        match self.tag() {
            TAG_CLOSED => d.field("failures", &self.failures()),
            TAG_OPEN => d.field("opened_at", &self.payload()),
            TAG_HALF_OPEN => d
                .field("in_flight", &self.in_flight())
                .field("successes", &self.successes())
                .field("last_admit_units", &self.last_admit_units()),
            TAG_FORCED_OPEN | TAG_DISABLED => &mut d,
            _ => d.field("unknown_tag", &self.tag()).field("payload", &self.payload()),
        };
        d.finish()
    }
}
