//! The guards an admitted call holds until it reports its outcome: [`Permit`] (borrowing its
//! breaker) and [`OwnedPermit`] (holding an `Arc` of it).

use core::fmt;
use core::future::Future;
use std::sync::Arc;

use crate::future::{Classify, ErrIsFailure, Guarded};
use crate::word::{Outcome, Ticket};
use crate::{CircuitBreaker, Clock, Counters, DefaultClock, LocalWord, Metrics, Store, Transition};

/// The right to run one call, from [`CircuitBreaker::admit`]. Report how it ended with
/// [`Permit::success`], [`Permit::failure`] or [`Permit::ignore`]; dropping it unreported (a
/// panic, a cancelled future) counts as [`Outcome::Ignored`], so neither a HALF_OPEN slot nor a
/// place under `max_concurrent_calls` is ever kept.
///
/// ```
/// use cb_core::{CircuitBreaker, Config, State};
/// use std::time::Duration;
/// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO)).unwrap();
/// breaker.admit().unwrap().failure();
/// let probe = breaker.admit().unwrap();     // the one probe slot
/// assert!(breaker.admit().is_err());         // taken
/// drop(probe);                               // released, not counted
/// assert!(breaker.admit().is_ok());
/// ```
#[must_use = "a permit reports its outcome; dropping it at once counts as Ignored"]
pub struct Permit<'a, C: Clock = DefaultClock, M: Metrics = Counters, S: Store = LocalWord> {
    breaker: &'a CircuitBreaker<C, M, S>,
    ticket: Option<Ticket>,
}

impl<'a, C: Clock, M: Metrics, S: Store> Permit<'a, C, M, S> {
    #[inline(always)]
    pub(crate) fn new(breaker: &'a CircuitBreaker<C, M, S>, ticket: Ticket) -> Self {
        Permit { breaker, ticket: Some(ticket) }
    }

    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// The call ended in a way that says nothing about the dependency.
    #[inline]
    pub fn ignore(self) {
        self.record(Outcome::Ignored);
    }

    /// Reports `outcome`; returns the transition it made, if any (see
    /// [`CircuitBreaker::record`]).
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) -> Option<Transition> {
        self.ticket.take().and_then(|ticket| self.breaker.record(ticket, outcome))
    }

    /// Runs `future` under this permit: the returned [`Guarded`] future records `Ok` as
    /// success and `Err` as failure when it completes, and [`Outcome::Ignored`] if dropped
    /// before (its error type is [`CallError`](crate::CallError), though it is never `Rejected`).
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// let permit = breaker.admit().unwrap(); // rejections handled here, before any future exists
    /// assert_eq!(futures_executor::block_on(permit.run(async { Ok::<_, ()>(1) })), Ok(1));
    /// assert_eq!(breaker.metrics().totals().successes, 1);
    /// ```
    #[inline]
    pub fn run<Fut, T, E>(self, future: Fut) -> Guarded<Self, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        Guarded::admitted(self, future, ErrIsFailure)
    }

    /// [`Permit::run`] with a [`Classify`] deciding what the result counts as.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let cancelled_is_nothing = |r: &Result<(), &str>| match r {
    ///     Err("cancelled") => Outcome::Ignored,
    ///     Err(_) => Outcome::Failure,
    ///     Ok(()) => Outcome::Success,
    /// };
    /// let run = breaker.admit().unwrap().run_classified(cancelled_is_nothing, async { Err("cancelled") });
    /// let _ = futures_executor::block_on(run);
    /// assert_eq!(breaker.metrics().totals().ignored, 1);
    /// ```
    #[inline]
    pub fn run_classified<Fut, T, E, K>(self, classify: K, future: Fut) -> Guarded<Self, Fut, K>
    where
        Fut: Future<Output = Result<T, E>>,
        K: Classify<T, E>,
    {
        Guarded::admitted(self, future, classify)
    }

    /// Detaches the guard: the caller now owns the slot and must pass the ticket to
    /// [`CircuitBreaker::record`] (or a HALF_OPEN slot stays taken until the probe timeout, and
    /// a place under `max_concurrent_calls` for good). For bindings and for moving an outcome to
    /// another thread.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let ticket = breaker.admit().unwrap().into_ticket();
    /// breaker.record(ticket, Outcome::Success);
    /// assert_eq!(breaker.metrics().totals().successes, 1);
    /// ```
    pub fn into_ticket(mut self) -> Ticket {
        self.ticket.take().expect("a live permit holds its ticket")
    }

    /// Whether this call is a HALF_OPEN probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.as_ref().is_some_and(Ticket::is_probe)
    }

    /// The generation the call was admitted in. The `half_open_max_calls` limit holds per
    /// generation: once a probe fails, the others of its round are stale, and the next round
    /// (after the recovery timeout) has its own slots.
    pub fn generation(&self) -> u64 {
        self.ticket.as_ref().map_or(0, Ticket::generation)
    }
}

impl<C: Clock, M: Metrics, S: Store> Drop for Permit<'_, C, M, S> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.record(ticket, Outcome::Ignored);
        }
    }
}

impl<C: Clock, M: Metrics, S: Store> fmt::Debug for Permit<'_, C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("ticket", &self.ticket).finish()
    }
}

/// A [`Permit`] that owns a share of its breaker instead of borrowing it, from
/// [`CircuitBreaker::admit_owned`]: `'static` and `Send`, for spawned tasks and response
/// futures. Report how the call ended with [`OwnedPermit::success`], [`OwnedPermit::failure`]
/// or [`OwnedPermit::ignore`]; dropping it unreported counts as [`Outcome::Ignored`], so a
/// HALF_OPEN slot is never kept.
///
/// ```
/// use cb_core::{CircuitBreaker, Config};
/// use std::sync::Arc;
/// use std::time::Duration;
/// let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO)).unwrap());
/// breaker.admit_owned().unwrap().failure();
/// let probe = breaker.admit_owned().unwrap();   // the one probe slot
/// assert!(probe.is_probe());
/// assert!(breaker.admit_owned().is_err());       // taken
/// std::thread::spawn(move || drop(probe)).join().unwrap(); // released on another thread
/// assert!(breaker.admit_owned().is_ok());
/// ```
#[must_use = "a permit reports its outcome; dropping it at once counts as Ignored"]
pub struct OwnedPermit<C: Clock = DefaultClock, M: Metrics = Counters, S: Store = LocalWord> {
    breaker: Arc<CircuitBreaker<C, M, S>>,
    /// Taken when the ticket is recorded or handed out, so it is recorded exactly once.
    ticket: Option<Ticket>,
}

impl<C: Clock, M: Metrics, S: Store> OwnedPermit<C, M, S> {
    #[inline(always)]
    pub(crate) fn new(breaker: Arc<CircuitBreaker<C, M, S>>, ticket: Ticket) -> Self {
        OwnedPermit { breaker, ticket: Some(ticket) }
    }

    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// The call ended in a way that says nothing about the dependency.
    #[inline]
    pub fn ignore(self) {
        self.record(Outcome::Ignored);
    }

    /// Reports `outcome`; returns the transition it made, if any (see
    /// [`CircuitBreaker::record`]).
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Outcome, State};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap());
    /// let permit = breaker.admit_owned().unwrap();
    /// assert_eq!(permit.record(Outcome::Failure).unwrap().to, State::Open);
    /// ```
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) -> Option<Transition> {
        self.ticket.take().and_then(|ticket| self.breaker.record(ticket, outcome))
    }

    /// Runs `future` under this permit, as [`Permit::run`] does; the returned future is
    /// `'static` (if `future` is), so it can be spawned.
    ///
    /// ```
    /// use cb_core::CircuitBreaker;
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    /// let call = breaker.admit_owned().unwrap().run(async { Ok::<_, ()>("pong") });
    /// let answer = std::thread::spawn(move || futures_executor::block_on(call)).join().unwrap();
    /// assert_eq!(answer, Ok("pong"));
    /// ```
    #[inline]
    pub fn run<Fut, T, E>(self, future: Fut) -> Guarded<Self, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        Guarded::admitted(self, future, ErrIsFailure)
    }

    /// [`OwnedPermit::run`] with a [`Classify`] deciding what the result counts as.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    /// let never_counts = |_: &Result<(), ()>| Outcome::Ignored;
    /// let _ = futures_executor::block_on(breaker.admit_owned().unwrap().run_classified(never_counts, async { Err(()) }));
    /// assert_eq!(breaker.metrics().totals().failures, 0);
    /// ```
    #[inline]
    pub fn run_classified<Fut, T, E, K>(self, classify: K, future: Fut) -> Guarded<Self, Fut, K>
    where
        Fut: Future<Output = Result<T, E>>,
        K: Classify<T, E>,
    {
        Guarded::admitted(self, future, classify)
    }

    /// Detaches the guard, as [`Permit::into_ticket`] does: the caller must pass the ticket to
    /// [`CircuitBreaker::record`] exactly once.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    /// let ticket = breaker.admit_owned().unwrap().into_ticket();
    /// breaker.record(ticket, Outcome::Success);
    /// assert_eq!(breaker.metrics().totals().successes, 1);
    /// ```
    pub fn into_ticket(mut self) -> Ticket {
        self.ticket.take().expect("a live permit holds its ticket")
    }

    /// Whether this call is a HALF_OPEN probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.as_ref().is_some_and(Ticket::is_probe)
    }

    /// The generation the call was admitted in (see [`Permit::generation`]).
    pub fn generation(&self) -> u64 {
        self.ticket.as_ref().map_or(0, Ticket::generation)
    }

    /// The breaker that admitted the call.
    ///
    /// ```
    /// use cb_core::CircuitBreaker;
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap().named("quotes"));
    /// assert_eq!(breaker.admit_owned().unwrap().breaker().name(), Some("quotes"));
    /// ```
    pub fn breaker(&self) -> &Arc<CircuitBreaker<C, M, S>> {
        &self.breaker
    }
}

impl<C: Clock, M: Metrics, S: Store> Drop for OwnedPermit<C, M, S> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.record(ticket, Outcome::Ignored);
        }
    }
}

impl<C: Clock, M: Metrics, S: Store> fmt::Debug for OwnedPermit<C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").field("breaker", &self.breaker.name).field("ticket", &self.ticket).finish()
    }
}
