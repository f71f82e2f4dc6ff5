//! Futures run under a breaker, and what their results count as.
//!
//! [`CircuitBreaker::call_async`] admits a call, makes its future and returns a [`Guarded`]
//! future that awaits it and records what [`Classify`] says its result counts as. Admission is
//! decided when `call_async` is called (as in `tower::Service::call`); the outcome when the
//! future completes. Dropping a [`Guarded`] before it completes (a cancelled task, a
//! `timeout`, the losing branch of a `select!`) drops its permit, which counts as
//! [`Outcome::Ignored`] and frees a HALF_OPEN probe slot at once.
//!
//! Nothing here needs a runtime: a [`Guarded`] is a plain [`Future`], allocates nothing and
//! works under any executor.
//!
//! [`CircuitBreaker::call_async`]: crate::CircuitBreaker::call_async

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{ready, Context, Poll};

use pin_project_lite::pin_project;

use crate::{CallError, Clock, Metrics, OwnedPermit, Outcome, Permit, Rejected, Store};

/// Decides what the result of a call counts as: [`Outcome::Success`], [`Outcome::Failure`] or
/// [`Outcome::Ignored`] (neither: an error that is the caller's own fault, say).
///
/// Implemented by [`ErrIsFailure`] (the default) and by every closure
/// `Fn(&Result<T, E>) -> Outcome`.
///
/// ```
/// use cb_core::{Classify, ErrIsFailure, Outcome};
/// // An HTTP status as the error: 4xx is the caller's problem, 5xx the dependency's.
/// let classify = |r: &Result<(), u16>| match r {
///     Ok(()) => Outcome::Success,
///     Err(status) if *status < 500 => Outcome::Ignored,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(&Err(404)), Outcome::Ignored);
/// assert_eq!(classify.classify(&Err(503)), Outcome::Failure);
/// assert_eq!(ErrIsFailure.classify(&Err::<(), u16>(404)), Outcome::Failure);
/// ```
pub trait Classify<T, E> {
    /// What `result` counts as.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classification: `Ok` is a success, `Err` a failure (as [`CircuitBreaker::call`]
/// counts).
///
/// ```
/// use cb_core::{Classify, ErrIsFailure, Outcome};
/// assert_eq!(ErrIsFailure.classify(&Ok::<u8, ()>(1)), Outcome::Success);
/// assert_eq!(ErrIsFailure.classify(&Err::<u8, ()>(())), Outcome::Failure);
/// ```
///
/// [`CircuitBreaker::call`]: crate::CircuitBreaker::call
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ErrIsFailure;

impl<T, E> Classify<T, E> for ErrIsFailure {
    #[inline(always)]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

mod sealed {
    use crate::{Outcome, Transition};

    /// How a [`super::Guarded`] reports its outcome, whichever permit it holds.
    pub trait Sealed {
        fn report(self, outcome: Outcome) -> Option<Transition>;
    }
}

/// A permit a [`Guarded`] future can hold: a [`Permit`] (borrowing its breaker) or an
/// [`OwnedPermit`] (holding an `Arc` of it, for futures that must be `'static`). Sealed.
///
/// ```
/// fn holds<P: cb_core::AnyPermit>(_: &P) {}
/// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
/// holds(&breaker.admit().unwrap());
/// ```
pub trait AnyPermit: sealed::Sealed {}

impl<C: Clock, M: Metrics, S: Store> sealed::Sealed for Permit<'_, C, M, S> {
    #[inline(always)]
    fn report(self, outcome: Outcome) -> Option<crate::Transition> {
        self.record(outcome)
    }
}

impl<C: Clock, M: Metrics, S: Store> AnyPermit for Permit<'_, C, M, S> {}

impl<C: Clock, M: Metrics, S: Store> sealed::Sealed for OwnedPermit<C, M, S> {
    #[inline(always)]
    fn report(self, outcome: Outcome) -> Option<crate::Transition> {
        self.record(outcome)
    }
}

impl<C: Clock, M: Metrics, S: Store> AnyPermit for OwnedPermit<C, M, S> {}

pin_project! {
    /// A future run under a breaker: from [`CircuitBreaker::call_async`],
    /// [`CircuitBreaker::run`], [`Permit::run`] and [`OwnedPermit::run`] (and the `tower`
    /// service's response future).
    ///
    /// It resolves to the future's `Ok`, to [`CallError::Inner`] with its error, or, at once
    /// and without polling anything, to [`CallError::Rejected`] if the breaker did not admit the
    /// call. When the future completes, the permit `P` records what the classifier `K` says the
    /// result counts as. Dropped before that, the permit records [`Outcome::Ignored`]: a
    /// cancelled probe frees its HALF_OPEN slot at once.
    ///
    /// ```
    /// use cb_core::{CallError, CircuitBreaker, Config, State};
    /// use futures_executor::block_on;
    ///
    /// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap().named("quotes");
    /// assert_eq!(block_on(breaker.run(async { Ok::<_, ()>(7) })), Ok(7));
    /// assert_eq!(block_on(breaker.run(async { Err::<u8, _>("timeout") })), Err(CallError::Inner("timeout")));
    /// assert_eq!(breaker.state(), State::Open);
    /// let rejected = block_on(breaker.run(async { Ok::<_, &str>(7) })).unwrap_err();
    /// assert!(rejected.is_rejected());
    /// assert!(rejected.to_string().starts_with("circuit breaker 'quotes' is OPEN"));
    /// ```
    ///
    /// [`CircuitBreaker::call_async`]: crate::CircuitBreaker::call_async
    /// [`CircuitBreaker::run`]: crate::CircuitBreaker::run
    #[must_use = "futures do nothing unless polled; dropping this one releases its permit"]
    pub struct Guarded<P, F, K = ErrIsFailure> {
        #[pin]
        state: GuardedState<P, F, K>,
    }
}

pin_project! {
    #[project = GuardedProj]
    enum GuardedState<P, F, K> {
        // `permit` is taken when the outcome is recorded, so it is recorded once.
        Admitted { #[pin] future: F, permit: Option<P>, classify: K },
        Rejected { rejected: Rejected },
    }
}

impl<P: AnyPermit, F, K> Guarded<P, F, K> {
    /// `future`, run under `permit`, its result classified by `classify`.
    #[inline(always)]
    pub(crate) fn admitted(permit: P, future: F, classify: K) -> Self {
        Guarded { state: GuardedState::Admitted { future, permit: Some(permit), classify } }
    }

    /// Resolves to the rejection at once.
    #[inline(always)]
    pub(crate) fn rejected(rejected: Rejected) -> Self {
        Guarded { state: GuardedState::Rejected { rejected } }
    }

    /// The call was admitted (and the future is run when this is polled).
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert!(breaker.run(async { Ok::<(), ()>(()) }).is_admitted());
    /// breaker.force_open();
    /// assert!(!breaker.run(async { Ok::<(), ()>(()) }).is_admitted());
    /// ```
    pub fn is_admitted(&self) -> bool {
        matches!(self.state, GuardedState::Admitted { .. })
    }
}

impl<P, F, K, T, E> Future for Guarded<P, F, K>
where
    P: AnyPermit,
    F: Future<Output = Result<T, E>>,
    K: Classify<T, E>,
{
    type Output = Result<T, CallError<E>>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardedProj::Admitted { future, permit, classify } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    sealed::Sealed::report(permit, classify.classify(&result));
                }
                Poll::Ready(result.map_err(CallError::Inner))
            }
            GuardedProj::Rejected { rejected } => Poll::Ready(Err(CallError::Rejected(*rejected))),
        }
    }
}

impl<P: fmt::Debug, F, K> fmt::Debug for Guarded<P, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            GuardedState::Admitted { permit, .. } => {
                f.debug_struct("Guarded").field("permit", permit).finish_non_exhaustive()
            }
            GuardedState::Rejected { rejected } => f.debug_struct("Guarded").field("rejected", rejected).finish(),
        }
    }
}
