//! The breaker: a word in a [`Store`], the transitions of [`crate::word`] applied by one CAS
//! loop, and the hooks (metrics, listener) that observe them.

use core::cell::Cell;
use core::fmt;
use core::future::Future;
use core::num::NonZeroU32;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::announce::Announcer;
use crate::word::{Admission, Command, Limits, Outcome, Quick, Snapshot, Step, Ticket};
use crate::window::{WindowHandle, WindowTotals};
use crate::future::{Classify, ErrIsFailure, Guarded};
use crate::{
    CallError, Clock, Config, ConfigError, Counters, DefaultClock, InFlight, LocalInFlight, LocalWord, Metrics, OwnedPermit,
    Permit, Rejected, State, Store, Transition, WallAnchor,
};

/// A circuit breaker whose whole state is one 64-bit word.
///
/// `C` is where time comes from ([`DefaultClock`] unless told otherwise), `M` what is counted
/// ([`Counters`], or [`crate::NoMetrics`] for nothing) and `S` where the word lives
/// ([`LocalWord`] in this process unless told otherwise; see [`Store`]). Share it by reference
/// or `Arc`: every method takes `&self` and none blocks.
///
/// ```
/// use cb_core::{CircuitBreaker, CallError, Config, State};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::new(
///     Config::default().failure_threshold(2).recovery_timeout(Duration::from_secs(30)),
/// ).unwrap();
/// for _ in 0..2 {
///     let _ = breaker.call(|| Err::<(), _>("connection refused"));
/// }
/// assert_eq!(breaker.state(), State::Open);
/// // Rejected without running the closure.
/// match breaker.call(|| -> Result<(), ()> { unreachable!() }) {
///     Err(CallError::Rejected(rejected)) => assert!(rejected.retry_after().unwrap() <= Duration::from_secs(30)),
///     _ => panic!("expected a rejection"),
/// }
/// ```
pub struct CircuitBreaker<C: Clock = DefaultClock, M: Metrics = Counters, S: Store = LocalWord> {
    store: S,
    limits: Limits,
    config: Config,
    clock: C,
    metrics: M,
    announcer: Option<Announcer>,
    pub(crate) name: Option<&'static str>,
    anchor: WallAnchor,
    /// The sliding window of the rate policies (only when one is configured).
    window: Option<WindowHandle>,
    /// Whether admissions are stamped with the time (a slow-call policy).
    times_calls: bool,
    /// Whether a CLOSED admission does more than read the word: time it, or take a place
    /// under `max_concurrent_calls`. One flag, so the plain hot path tests one byte, as before
    /// there was a limit.
    admits_slowly: bool,
    /// Whether an outcome does more than the word's own work: count it in the rate window, or
    /// give back its place. One flag, for the same reason.
    records_slowly: bool,
    /// The calls in flight, when `max_concurrent_calls` is set and the store does not count
    /// them itself ([`Store::shared_in_flight`]).
    in_flight: LocalInFlight,
}


/// Reads the clock at most once, however many times a CAS loop retries.
struct LazyNow<'c, C> {
    clock: &'c C,
    value: Cell<Option<u64>>,
}

impl<'c, C: Clock> LazyNow<'c, C> {
    fn new(clock: &'c C) -> Self {
        LazyNow { clock, value: Cell::new(None) }
    }

    /// Already read: asking again costs nothing.
    fn known(clock: &'c C, now: u64) -> Self {
        LazyNow { clock, value: Cell::new(Some(now)) }
    }

    fn get(&self) -> u64 {
        match self.value.get() {
            Some(t) => t,
            None => {
                let t = self.clock.now();
                self.value.set(Some(t));
                t
            }
        }
    }
}

/// Names live as long as the program: a [`Rejected`] carries its breaker's name without a
/// reference count to touch on the rejection path. Each distinct name is stored once.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    match names.get(name) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.into());
            names.insert(leaked);
            leaked
        }
    }
}

impl CircuitBreaker {
    /// A breaker with the default clock and counters.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(cb_core::Config::default()).unwrap();
    /// assert_eq!(breaker.state(), cb_core::State::Closed);
    /// ```
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_parts(config, DefaultClock::default(), Counters::default())
    }
}

impl<C: Clock, M: Metrics> CircuitBreaker<C, M> {
    /// A breaker with the given clock and metrics, its word in this process. Fails if `config`
    /// is out of range.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, ManualClock, NoMetrics};
    /// let err = CircuitBreaker::with_parts(Config::default().half_open_max_calls(300), ManualClock::new(0), NoMetrics);
    /// assert_eq!(err.unwrap_err().field(), "half_open_max_calls");
    /// ```
    pub fn with_parts(config: Config, clock: C, metrics: M) -> Result<Self, ConfigError> {
        CircuitBreaker::with_store(config, clock, metrics, LocalWord::default())
    }
}

impl<C: Clock, M: Metrics, S: Store> CircuitBreaker<C, M, S> {
    /// A breaker whose word lives in `store`. The word is used as it is: attaching to a store
    /// that already holds a breaker's state never resets it.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, DefaultClock, Counters, LocalWord, Snapshot, State};
    /// let store = LocalWord::new(Snapshot::forced_open(0));
    /// let breaker = CircuitBreaker::with_store(Config::default(), DefaultClock::default(), Counters::default(), store)?;
    /// assert_eq!(breaker.state(), State::ForcedOpen);
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    pub fn with_store(config: Config, clock: C, metrics: M, store: S) -> Result<Self, ConfigError> {
        let anchor = WallAnchor::now(&clock);
        let limits = config.limits()?;
        let window = limits.rates.map(|_| WindowHandle::Owned(Box::default()));
        let times_calls = limits.rates.is_some_and(|r| r.slow_ticks > 0);
        let limited = limits.max_concurrent_calls.is_some();
        Ok(CircuitBreaker {
            store,
            limits,
            config,
            clock,
            metrics,
            announcer: None,
            name: None,
            anchor,
            admits_slowly: times_calls || limited,
            records_slowly: window.is_some() || limited,
            window,
            times_calls,
            in_flight: LocalInFlight::new(),
        })
    }

    /// Calls `listener` exactly once for every transition, after it took effect, in the order
    /// the transitions happened. It runs on the thread that made the transition, except when
    /// transitions race: then the thread already telling the listener tells the others' too,
    /// in order (the other threads return at once). It runs on a caller's path: keep it short
    /// (log, bump a metric). A transition the listener itself causes is told after it returns.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, State};
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap()
    ///     .on_transition(move |t| log.lock().unwrap().push((t.from, t.to, t.reason.to_string())));
    /// let _ = breaker.call(|| Err::<(), _>(()));
    /// assert_eq!(*seen.lock().unwrap(), [(State::Closed, State::Open, "1 consecutive failures".to_string())]);
    /// ```
    pub fn on_transition(mut self, listener: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.announcer = Some(Announcer::new(Box::new(listener)));
        self
    }

    /// Names the breaker (for rejections, `tracing` events and `Debug`). Each distinct name is
    /// kept for the life of the program, so a [`Rejected`] can carry it at no cost.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap().named("quotes");
    /// assert_eq!(breaker.name(), Some("quotes"));
    /// ```
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(intern(name));
        self
    }

    /// The name given by [`CircuitBreaker::named`], if any.
    ///
    /// ```
    /// assert_eq!(cb_core::CircuitBreaker::new(Default::default()).unwrap().name(), None);
    /// ```
    pub fn name(&self) -> Option<&'static str> {
        self.name
    }

    /// The one CAS loop: applies `f` to the current word until its step is written or asks for
    /// no write, then announces the transition it made, if any. Returns the step's result and
    /// that transition.
    #[inline]
    fn update<R>(&self, now: &LazyNow<'_, C>, f: impl FnMut(Snapshot) -> Step<R>) -> (R, Option<Transition>) {
        self.update_from(self.store.load(), now, f)
    }

    /// [`CircuitBreaker::update`] from a word the caller has just read.
    #[inline]
    fn update_from<R>(
        &self,
        mut current: Snapshot,
        now: &LazyNow<'_, C>,
        mut f: impl FnMut(Snapshot) -> Step<R>,
    ) -> (R, Option<Transition>) {
        loop {
            let step = f(current);
            let Some(next) = step.next else { return (step.result, None) };
            let written = match (&step.transition, &self.announcer) {
                // Written and queued in one step: the queue is in the order of the swaps.
                (Some(transition), Some(announcer)) => {
                    let mut pending = announcer.pending();
                    let written = self.store.compare_exchange(current, next);
                    if written.is_ok() {
                        pending.push_back(*transition);
                    }
                    written
                }
                _ => self.store.compare_exchange(current, next),
            };
            match written {
                Ok(()) => {
                    if let Some(transition) = &step.transition {
                        let now = if self.metrics.wants_transition_time() { now.get() } else { 0 };
                        self.announce(transition, now);
                    }
                    return (step.result, step.transition);
                }
                Err(actual) => current = actual,
            }
        }
    }

    #[cold]
    fn announce(&self, transition: &Transition, now: u64) {
        #[cfg(feature = "tracing")]
        {
            let name = self.name.unwrap_or("");
            let (from, to, reason) = (transition.from.as_str(), transition.to.as_str(), &transition.reason);
            if transition.to == State::Open {
                tracing::warn!(target: "cb_core", name, from, to, %reason, "circuit breaker transition");
            } else {
                tracing::info!(target: "cb_core", name, from, to, %reason, "circuit breaker transition");
            }
        }
        self.metrics.on_transition(transition, now);
        if let Some(announcer) = &self.announcer {
            announcer.tell();
        }
    }

    /// Asks to run a call. On success the returned [`Permit`] holds the slot (and its place
    /// under `max_concurrent_calls`) until it reports an outcome or is dropped (a drop reports
    /// [`Outcome::Ignored`]). Rejected by the state, or, when the breaker would admit it but
    /// `max_concurrent_calls` calls are in flight, as full ([`Rejected::is_full`]).
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// let permit = breaker.admit().expect("closed admits");
    /// // ... make the call ...
    /// permit.success();
    /// ```
    #[inline]
    pub fn admit(&self) -> Result<Permit<'_, C, M, S>, Rejected> {
        self.admit_ticket().map(|ticket| Permit::new(self, ticket))
    }

    /// [`CircuitBreaker::admit`] for a breaker in an `Arc`: the [`OwnedPermit`] holds a clone of
    /// the `Arc` instead of a borrow, so it is `'static` and `Send` and can go into a spawned
    /// task or a `tower` response future. Dropped without an outcome it reports
    /// [`Outcome::Ignored`], as a [`Permit`] does.
    ///
    /// ```
    /// use cb_core::CircuitBreaker;
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    /// let permit = breaker.admit_owned().expect("closed admits");
    /// std::thread::spawn(move || permit.success()).join().unwrap();
    /// assert_eq!(breaker.metrics().totals().successes, 1);
    /// ```
    #[inline]
    pub fn admit_owned(self: &Arc<Self>) -> Result<OwnedPermit<C, M, S>, Rejected> {
        self.admit_ticket().map(|ticket| OwnedPermit::new(Arc::clone(self), ticket))
    }

    /// [`CircuitBreaker::admit`] without the guard: the caller must pass the ticket to
    /// [`CircuitBreaker::record`] (which takes it by value: once), or a HALF_OPEN slot stays
    /// taken until the probe timeout and a place under `max_concurrent_calls` for good. For
    /// bindings that keep the ticket in their own object.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let ticket = breaker.admit_ticket().unwrap();
    /// breaker.record(ticket, Outcome::Success);
    /// ```
    #[inline(always)]
    pub fn admit_ticket(&self) -> Result<Ticket, Rejected> {
        // The two hot paths decide on one load and write nothing: CLOSED/DISABLED admit, OPEN
        // before its timeout rejects after one clock read. Everything else is out of line, with
        // the time already read.
        match self.store.load().admit_quick(|| self.clock.now(), &self.limits) {
            Quick::Admitted(ticket) if !self.admits_slowly => Ok(ticket),
            Quick::Admitted(ticket) => self.admitted_slowly(ticket),
            Quick::Rejected { retry_after_ticks } => Err(self.rejected(State::Open, Some(retry_after_ticks))),
            Quick::Undecided { now } => self.admit_slow(now),
        }
    }

    /// The two hot admissions, decided on the word without writing it: `Some(Ok)` in CLOSED or
    /// DISABLED, `Some(Err)` while OPEN before its timeout (one clock read). `None` when
    /// admitting has to write the word (a probe, a forced-open check, a stale probe slot): for
    /// callers that want that write elsewhere — a binding that lets go of its interpreter lock
    /// around a store that waits on the network. Call [`CircuitBreaker::admit_ticket`] then.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config};
    /// use std::time::Duration;
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO)).unwrap();
    /// assert!(matches!(breaker.admit_without_writing(), Some(Ok(_))));
    /// let _ = breaker.call(|| Err::<(), _>("down")); // OPEN, and its timeout already over
    /// assert!(breaker.admit_without_writing().is_none()); // a probe: admitting writes the word
    /// assert!(breaker.admit_ticket().unwrap().is_probe());
    /// ```
    #[inline(always)]
    pub fn admit_without_writing(&self) -> Option<Result<Ticket, Rejected>> {
        match self.store.load().admit_quick(|| self.clock.now(), &self.limits) {
            Quick::Admitted(ticket) if !self.admits_slowly => Some(Ok(ticket)),
            Quick::Admitted(ticket) => Some(self.admitted_slowly(ticket)),
            Quick::Rejected { retry_after_ticks } => Some(Err(self.rejected(State::Open, Some(retry_after_ticks)))),
            Quick::Undecided { .. } => None,
        }
    }

    /// A CLOSED (or DISABLED) admission that the word made without writing, and that takes a
    /// place under the limit or is timed (a slow-call policy), or both.
    #[inline(never)]
    fn admitted_slowly(&self, ticket: Ticket) -> Result<Ticket, Rejected> {
        if let Some(max) = self.limits.max_concurrent_calls {
            if !self.enter(max) {
                // CLOSED admission wrote nothing to the word: nothing to undo. The state the
                // rejection names is read again (CLOSED or DISABLED, or whatever it is now):
                // keeping the admitting word would cost the path without a limit a register.
                return Err(self.full(self.store.load().stored_state(), max));
            }
        }
        Ok(if self.times_calls { self.timed(ticket) } else { ticket })
    }

    /// Stamps a CLOSED admission with its start time (a slow-call policy times calls).
    #[inline(never)]
    fn timed(&self, ticket: Ticket) -> Ticket {
        ticket.stamped(self.clock.now())
    }

    #[inline(never)]
    fn admit_slow(&self, now: u64) -> Result<Ticket, Rejected> {
        let now = LazyNow::known(&self.clock, now);
        let ticket = match self.update(&now, |s| s.admit(|| now.get(), &self.limits)).0 {
            Admission::Admitted(ticket) => ticket,
            Admission::Rejected { state, retry_after_ticks } => return Err(self.rejected(state, retry_after_ticks)),
        };
        if let Some(max) = self.limits.max_concurrent_calls {
            if !self.enter(max) {
                let state = if ticket.probe { State::HalfOpen } else { self.store.load().stored_state() };
                if ticket.probe {
                    // The word gave this call a probe slot; it will not run, so the slot goes
                    // back (as a dropped probe's does, but counted as nothing at all).
                    self.update(&now, |s| s.record(&ticket, Outcome::Ignored, || now.get(), &self.limits));
                }
                return Err(self.full(state, max));
            }
        }
        Ok(if !ticket.probe && self.times_calls { self.timed(ticket) } else { ticket })
    }

    /// Takes a place under the limit, in the store's count if it keeps one, else in ours.
    #[inline(always)]
    fn enter(&self, max: NonZeroU32) -> bool {
        match self.store.shared_in_flight() {
            Some(shared) => shared.try_enter(max.get()),
            None => self.in_flight.try_enter(max.get()),
        }
    }

    /// Gives back a place [`CircuitBreaker::enter`] took.
    #[inline(always)]
    fn leave(&self) {
        match self.store.shared_in_flight() {
            Some(shared) => shared.leave(),
            None => self.in_flight.leave(),
        }
    }

    /// Calls admitted and not yet finished (their outcome not recorded, their permit not
    /// dropped), counted when `max_concurrent_calls` is set: 0 without a limit. With a store
    /// that counts for every process of a host, the count is the host's.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Outcome};
    /// let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(8)).unwrap();
    /// let ticket = breaker.admit_ticket().unwrap();
    /// let permit = breaker.admit().unwrap();
    /// assert_eq!(breaker.in_flight(), 2);
    /// breaker.record(ticket, Outcome::Failure);
    /// drop(permit);
    /// assert_eq!(breaker.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> u32 {
        match self.store.shared_in_flight() {
            Some(shared) => shared.in_flight(),
            None => self.in_flight.in_flight(),
        }
    }

    /// `max_concurrent_calls`, validated: `None` without a limit.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config};
    /// assert_eq!(CircuitBreaker::new(Config::default()).unwrap().max_concurrent_calls(), None);
    /// assert_eq!(CircuitBreaker::new(Config::default().max_concurrent_calls(8)).unwrap().max_concurrent_calls(), Some(8));
    /// ```
    pub fn max_concurrent_calls(&self) -> Option<u32> {
        self.limits.max_concurrent_calls.map(NonZeroU32::get)
    }

    /// A full rejection: counted on its own, never as a failure.
    #[cold]
    #[inline(never)]
    fn full(&self, state: State, max: NonZeroU32) -> Rejected {
        self.metrics.on_full();
        // The count was at the limit when the place was refused; it may have dropped since.
        let in_flight = self.in_flight().max(max.get());
        Rejected::full(state, in_flight, max, self.name)
    }

    #[inline(always)]
    fn rejected(&self, state: State, retry_after_ticks: Option<u64>) -> Rejected {
        self.metrics.on_rejected();
        Rejected::new(state, retry_after_ticks.map(Duration::from_millis), self.name)
    }

    /// Reports the outcome of a call admitted with `ticket`, and returns the transition this
    /// outcome made, if any (`None` also when it is stale: admitted in an earlier generation,
    /// it is counted in the metrics but does not change the state). Whatever the outcome, stale
    /// or not, the call's place under `max_concurrent_calls` is given back.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Outcome, State};
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap();
    /// let (early, late) = (breaker.admit_ticket().unwrap(), breaker.admit_ticket().unwrap());
    /// assert_eq!(breaker.record(early, Outcome::Failure).unwrap().to, State::Open);
    /// assert_eq!(breaker.record(late, Outcome::Failure), None); // stale: it is already open
    /// ```
    #[inline(always)]
    pub fn record(&self, ticket: Ticket, outcome: Outcome) -> Option<Transition> {
        if outcome == Outcome::Success {
            self.metrics.on_success();
            // A success in CLOSED with nothing pending writes nothing and reads no clock (with
            // a rate policy it is counted in the window, out of line).
            let current = self.store.load();
            if !self.records_slowly {
                if current.ignores_quietly(outcome) {
                    return None;
                }
                return self.record_slow(current, ticket, outcome, LazyNow::new(&self.clock));
            }
            return self.record_success_slowly(current, ticket);
        }
        self.record_failure_or_ignored(ticket, outcome)
    }

    /// A success with a rate policy or a limit: counted in the window, if any, then as without;
    /// then its place is given back.
    #[inline(never)]
    fn record_success_slowly(&self, current: Snapshot, ticket: Ticket) -> Option<Transition> {
        if self.window.is_some() {
            return self.record_success_windowed(current, ticket);
        }
        // A limit alone: the plain success, then the place back.
        let transition = if current.ignores_quietly(Outcome::Success) {
            None
        } else {
            self.record_slow(current, ticket, Outcome::Success, LazyNow::new(&self.clock))
        };
        self.leave();
        transition
    }

    /// Gives back the place of a call whose outcome is recorded (or that was dropped), if the
    /// breaker counts calls in flight.
    #[inline(always)]
    fn release(&self) {
        if self.limits.max_concurrent_calls.is_some() {
            self.leave();
        }
    }

    /// A success with a rate policy: counted in the window, then as without. The common case
    /// (a CLOSED call, not slow, its bucket current and with room, nothing pending on the word)
    /// is one compare-and-set on the bucket, plus a clock read for a time window or a slow-call
    /// policy. Out of line, so that breakers without a rate policy keep their registers.
    #[inline(never)]
    fn record_success_windowed(&self, current: Snapshot, ticket: Ticket) -> Option<Transition> {
        let tripped = self.window_trip(&ticket, Outcome::Success);
        let transition = if current.ignores_quietly(Outcome::Success) && tripped.is_none() {
            None
        } else {
            self.record_slow(self.store.load(), ticket, Outcome::Success, LazyNow::new(&self.clock))
        };
        self.release();
        tripped.or(transition)
    }

    /// Counts a call in the rate policies' window (a call admitted in CLOSED; not a probe, not
    /// ignored) and, when that trips the breaker, makes the trip and returns it. The word is
    /// not read for the window: a call of a generation that has ended is counted under its own
    /// generation's tag, which the current window never reads (and a trip it decides is a
    /// compare-and-set from that ended generation: a no-op).
    #[inline(always)]
    fn window_trip(&self, ticket: &Ticket, outcome: Outcome) -> Option<Transition> {
        let (window, rates) = (self.window.as_ref()?.get(), self.limits.rates.as_ref()?);
        if ticket.probe || outcome == Outcome::Ignored {
            return None;
        }
        let at = if rates.reads_clock() { self.clock.now() } else { 0 };
        let slow = rates.slow_ticks > 0 && at.saturating_sub(ticket.started()) >= rates.slow_ticks;
        let live = || self.store.load().generation();
        let reason = window.record(ticket.generation(), outcome == Outcome::Failure, slow, at, rates, &live)?;
        self.trip(ticket, reason)
    }

    /// The window decided to trip: one compare-and-set on the word (only from the CLOSED
    /// generation the call was admitted in, so exactly one of the racing deciders makes it).
    #[cold]
    #[inline(never)]
    fn trip(&self, ticket: &Ticket, reason: crate::Reason) -> Option<Transition> {
        let now = LazyNow::new(&self.clock);
        self.update(&now, |s| s.trip(ticket, reason, || now.get())).1
    }

    /// What the window of the rate policies holds now (`None` without a rate policy).
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, SlidingWindow, WindowTotals};
    /// let config = Config::default().failure_rate_threshold(0.5).minimum_calls(5).sliding_window(SlidingWindow::Calls(10));
    /// let breaker = CircuitBreaker::new(config).unwrap();
    /// let _ = breaker.call(|| Err::<(), _>("503"));
    /// let _ = breaker.call(|| Ok::<_, ()>(()));
    /// assert_eq!(breaker.window_totals(), Some(WindowTotals { calls: 2, failures: 1, slow: 0 }));
    /// ```
    pub fn window_totals(&self) -> Option<WindowTotals> {
        let (window, rates) = (self.window.as_ref()?.get(), self.limits.rates?);
        let current = self.store.load();
        if current.stored_state() != State::Closed {
            return Some(WindowTotals::default());
        }
        let now = if rates.by_time { self.clock.now() } else { 0 };
        Some(window.totals(current.generation(), now, &rates))
    }

    #[inline(never)]
    fn record_failure_or_ignored(&self, ticket: Ticket, outcome: Outcome) -> Option<Transition> {
        if self.records_slowly {
            return self.record_failure_slowly(ticket, outcome);
        }
        self.record_failure_or_ignored_consecutive(ticket, outcome)
    }

    /// A failure (or ignored call) with a rate policy or a limit: counted in the window, if
    /// any, then as without; then its place is given back.
    #[inline(never)]
    fn record_failure_slowly(&self, ticket: Ticket, outcome: Outcome) -> Option<Transition> {
        let transition = if self.window.is_some() {
            self.record_failure_windowed(ticket, outcome)
        } else {
            self.record_failure_or_ignored_consecutive(ticket, outcome)
        };
        self.release();
        transition
    }

    /// A failure (or ignored call) with a rate policy: counted in the window, then as without.
    #[inline(never)]
    fn record_failure_windowed(&self, ticket: Ticket, outcome: Outcome) -> Option<Transition> {
        let tripped = self.window_trip(&ticket, outcome);
        // Counted in the metrics (and, if the window tripped it, stale for the word now).
        let transition = self.record_failure_or_ignored_consecutive(ticket, outcome);
        tripped.or(transition)
    }

    #[inline(always)]
    fn record_failure_or_ignored_consecutive(&self, ticket: Ticket, outcome: Outcome) -> Option<Transition> {
        let now = LazyNow::new(&self.clock);
        if outcome == Outcome::Failure {
            self.metrics.on_failure(if self.metrics.wants_failure_time() { now.get() } else { 0 });
            // A failure that only counts: one CAS, no loop machinery (and none at all when the
            // consecutive count is off).
            let current = self.store.load();
            if let Some(next) = current.counts_failure(&ticket, &self.limits) {
                match self.store.compare_exchange(current, next) {
                    Ok(()) => return None,
                    Err(actual) => return self.record_slow(actual, ticket, outcome, now),
                }
            }
            if current.ignores_failure(&ticket, &self.limits) {
                return None;
            }
            return self.record_slow(current, ticket, outcome, now);
        }
        self.metrics.on_ignored();
        self.record_slow(self.store.load(), ticket, outcome, now)
    }

    /// The full transition through the CAS loop, with the time if it was read already.
    #[inline(never)]
    fn record_slow(&self, current: Snapshot, ticket: Ticket, outcome: Outcome, now: LazyNow<'_, C>) -> Option<Transition> {
        self.update_from(current, &now, |s| s.record(&ticket, outcome, || now.get(), &self.limits)).1
    }

    /// Runs `f` if admitted; `Ok` counts as success and `Err` as failure. A panic in `f`
    /// releases the slot and counts as neither.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert_eq!(breaker.call(|| Ok::<_, ()>(42)).unwrap(), 42);
    /// ```
    #[inline(always)]
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        self.call_classified(
            |r: &Result<T, E>| if r.is_ok() { Outcome::Success } else { Outcome::Failure },
            f,
        )
    }

    /// Runs `f` if admitted and lets `classify` decide what its result counts as: an error that
    /// is the caller's own fault, or a cancellation, can be [`Outcome::Ignored`]; an `Ok` that
    /// carries an error status can be [`Outcome::Failure`].
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Outcome, State};
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap();
    /// // 404 is the caller's problem, not the dependency's.
    /// let classify = |r: &Result<u16, u16>| match r {
    ///     Ok(_) => Outcome::Success,
    ///     Err(code) if *code < 500 => Outcome::Ignored,
    ///     Err(_) => Outcome::Failure,
    /// };
    /// let _ = breaker.call_classified(classify, || Err(404));
    /// assert_eq!(breaker.state(), State::Closed);
    /// let _ = breaker.call_classified(classify, || Err(503));
    /// assert_eq!(breaker.state(), State::Open);
    /// ```
    #[inline(always)]
    pub fn call_classified<T, E>(
        &self,
        classify: impl FnOnce(&Result<T, E>) -> Outcome,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CallError<E>> {
        let permit = self.admit().map_err(CallError::Rejected)?;
        let result = f();
        permit.record(classify(&result));
        result.map_err(CallError::Inner)
    }

    /// The async [`CircuitBreaker::call`]: if admitted, calls `f` for its future and returns a
    /// [`Guarded`] future that awaits it; `Ok` counts as success and `Err` as failure. If
    /// rejected, `f` is not called and the returned future resolves to
    /// [`CallError::Rejected`] at once.
    ///
    /// Admission happens here, when `call_async` is called, not at the first poll. Dropping the
    /// returned future before it completes counts as [`Outcome::Ignored`] and frees a
    /// HALF_OPEN probe slot. No runtime is needed and nothing is allocated.
    ///
    /// ```
    /// use cb_core::CircuitBreaker;
    /// use futures_executor::block_on;
    ///
    /// async fn fetch_price(symbol: &str) -> Result<f64, std::io::Error> {
    ///     Ok(if symbol == "AAPL" { 150.25 } else { 0.0 })
    /// }
    ///
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let price = block_on(breaker.call_async(|| fetch_price("AAPL"))).unwrap();
    /// assert_eq!(price, 150.25);
    /// ```
    #[inline]
    pub fn call_async<Fut, T, E>(&self, f: impl FnOnce() -> Fut) -> Guarded<Permit<'_, C, M, S>, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_async_classified(ErrIsFailure, f)
    }

    /// [`CircuitBreaker::call_async`] with a [`Classify`] deciding what the result counts as
    /// (any `Fn(&Result<T, E>) -> Outcome` closure is one).
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Outcome, State};
    /// use futures_executor::block_on;
    ///
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap();
    /// let client_errors_are_ours = |r: &Result<(), u16>| match r {
    ///     Ok(()) => Outcome::Success,
    ///     Err(status) if *status < 500 => Outcome::Ignored,
    ///     Err(_) => Outcome::Failure,
    /// };
    /// let _ = block_on(breaker.call_async_classified(client_errors_are_ours, || async { Err(404) }));
    /// assert_eq!(breaker.state(), State::Closed);
    /// let _ = block_on(breaker.call_async_classified(client_errors_are_ours, || async { Err(503) }));
    /// assert_eq!(breaker.state(), State::Open);
    /// ```
    #[inline]
    pub fn call_async_classified<Fut, T, E, K>(&self, classify: K, f: impl FnOnce() -> Fut) -> Guarded<Permit<'_, C, M, S>, Fut, K>
    where
        Fut: Future<Output = Result<T, E>>,
        K: Classify<T, E>,
    {
        match self.admit() {
            Ok(permit) => Guarded::admitted(permit, f(), classify),
            Err(rejected) => Guarded::rejected(rejected),
        }
    }

    /// Runs a future you already have under the breaker: [`CircuitBreaker::call_async`]`(|| future)`.
    /// If rejected, `future` is dropped without being polled.
    ///
    /// ```
    /// use cb_core::CircuitBreaker;
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let answer = futures_executor::block_on(breaker.run(async { Ok::<_, ()>(42) }));
    /// assert_eq!(answer, Ok(42));
    /// ```
    #[inline]
    pub fn run<Fut, T, E>(&self, future: Fut) -> Guarded<Permit<'_, C, M, S>, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_async(|| future)
    }

    /// The state now. An elapsed OPEN reads HALF_OPEN, and that transition is written and
    /// announced (once, by whichever reader or caller gets there first).
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, ManualClock, NoMetrics, State};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(0);
    /// let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(5));
    /// let breaker = CircuitBreaker::with_parts(config, &clock, NoMetrics).unwrap();
    /// let _ = breaker.call(|| Err::<(), _>(()));
    /// assert_eq!(breaker.state(), State::Open);
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(breaker.state(), State::HalfOpen);
    /// ```
    pub fn state(&self) -> State {
        let now = LazyNow::new(&self.clock);
        self.update(&now, |s| {
            if s.stored_state() != State::Open {
                return Step { next: None, result: s.stored_state(), transition: None };
            }
            s.settle(now.get(), &self.limits)
        })
        .0
    }

    /// The raw word, for inspection. Reading it writes nothing.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert_eq!(breaker.snapshot().failures(), 0);
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        self.store.load()
    }

    /// OPEN: time left until it admits a probe (zero once elapsed). `None` in other states.
    pub fn time_until_half_open(&self) -> Option<Duration> {
        self.snapshot()
            .ticks_until_half_open(self.clock.now(), &self.limits)
            .map(Duration::from_millis)
    }

    fn command(&self, command: Command) {
        let now = LazyNow::new(&self.clock);
        self.update(&now, |s| s.command(command));
    }

    /// Back to CLOSED with the failure count cleared. Outcomes of calls admitted before are
    /// ignored. Totals in the metrics are kept.
    pub fn reset(&self) {
        self.command(Command::Reset);
    }

    /// OPEN until [`CircuitBreaker::reset`], whatever the timeout.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// breaker.force_open();
    /// assert_eq!(breaker.admit().unwrap_err().retry_after(), None);
    /// breaker.reset();
    /// assert!(breaker.admit().is_ok());
    /// ```
    pub fn force_open(&self) {
        self.command(Command::ForceOpen);
    }

    /// Admits everything and never trips, until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        self.command(Command::Disable);
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration in the word's units.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The clock it reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The metrics it feeds.
    pub fn metrics(&self) -> &M {
        &self.metrics
    }

    /// Where its word lives.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Converts a tick of this breaker's clock into wall-clock time (for reports), by its
    /// [`WallAnchor`]: the same tick gives the same time on every call.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert_eq!(breaker.wall_time(1_000), breaker.wall_time(1_000));
    /// ```
    pub fn wall_time(&self, tick: u64) -> SystemTime {
        self.anchor.wall_time(tick)
    }

    /// Converts ticks to wall-clock time by `anchor` instead of the reading taken when the
    /// breaker was made (breakers in one shared region use the region's, so every process
    /// reports the same times).
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, WallAnchor};
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap().with_wall_anchor(WallAnchor::new(0, 0));
    /// assert_eq!(breaker.wall_time(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
    /// ```
    pub fn with_wall_anchor(mut self, anchor: WallAnchor) -> Self {
        self.anchor = anchor;
        self
    }

    /// Counts the rate policies' window in a shared-memory slot instead of this process's
    /// memory, so that every process attached to the slot decides the rates on all their calls
    /// together (as they share the word). Without a rate policy there is no window and this
    /// changes nothing. [`SharedRegion::breaker`](crate::SharedRegion::breaker) does it.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, CoarseClock, RegionOptions, SharedRegion, SlidingWindow};
    /// let path = std::env::temp_dir().join(format!("window-doc-{}.region", std::process::id()));
    /// let region = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap();
    /// let config = Config::default().failure_rate_threshold(0.5).minimum_calls(4).sliding_window(SlidingWindow::Calls(10));
    /// let slot = region.attach("checkout", &config).unwrap();
    /// let breaker = CircuitBreaker::with_store(config, CoarseClock, slot.counters(), slot.word()).unwrap()
    ///     .with_shared_window(slot.window());
    /// let _ = breaker.call(|| Err::<(), _>("503"));
    /// assert_eq!(breaker.window_totals().unwrap().failures, 1);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    #[cfg(all(unix, feature = "shared-memory"))]
    pub fn with_shared_window(mut self, window: crate::shared::SlotWindow) -> Self {
        if self.window.is_some() {
            self.window = Some(WindowHandle::Mapped(window));
        }
        self
    }
}

impl<C: Clock, S: Store> CircuitBreaker<C, Counters, S> {
    /// Wall-clock time of the last reported failure, if any.
    pub fn last_failure_time(&self) -> Option<SystemTime> {
        self.metrics.last_failure_tick().map(|t| self.wall_time(t))
    }

    /// Wall-clock time of the last transition, if any.
    pub fn last_state_change_time(&self) -> Option<SystemTime> {
        self.metrics.last_change_tick().map(|t| self.wall_time(t))
    }
}

impl<C: Clock, M: Metrics, S: Store> fmt::Debug for CircuitBreaker<C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("snapshot", &self.snapshot())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
