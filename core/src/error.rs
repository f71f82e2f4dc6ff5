//! Why a call did not give its own result: [`Rejected`] (never run) and [`CallError`] (rejected,
//! or run and failed).

use core::fmt;
use core::num::NonZeroU32;
use std::time::Duration;

use crate::State;

/// Why a call was not run: the breaker's state (OPEN, HALF_OPEN with every probe slot taken,
/// FORCED_OPEN), or, when [`Rejected::is_full`], `max_concurrent_calls` calls in flight.
///
/// ```
/// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap().named("quotes");
/// breaker.force_open();
/// let rejected = breaker.admit().unwrap_err();
/// assert_eq!(rejected.to_string(), "circuit breaker 'quotes' is FORCED_OPEN until reset");
/// assert!(!rejected.is_full());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    state: State,
    why: Why,
    name: Option<&'static str>,
}

/// What rejected the call. One enum rather than a field per case: `Full` fits in the bytes
/// `retry_after` leaves free (its niche in the nanoseconds), so a rejection stays as small as
/// it was before the limit, and the open path writes no more than it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// The state: OPEN, HALF_OPEN (every probe slot taken) or FORCED_OPEN (`None`).
    State { retry_after: Option<Duration> },
    /// `max_concurrent_calls` calls in flight.
    Full { in_flight: u32, limit: NonZeroU32 },
}

const _: () = assert!(core::mem::size_of::<Why>() == core::mem::size_of::<Option<Duration>>());

impl Rejected {
    /// Rejected by the state.
    #[inline(always)]
    pub(crate) fn new(state: State, retry_after: Option<Duration>, name: Option<&'static str>) -> Self {
        Rejected { state, why: Why::State { retry_after }, name }
    }

    /// Rejected by the limit on calls in flight, in `state` (CLOSED, DISABLED or HALF_OPEN).
    #[cold]
    pub(crate) fn full(state: State, in_flight: u32, limit: NonZeroU32, name: Option<&'static str>) -> Self {
        Rejected { state, why: Why::Full { in_flight, limit }, name }
    }

    /// The state that rejected the call: OPEN, HALF_OPEN (every probe slot taken) or FORCED_OPEN.
    /// For a full rejection ([`Rejected::is_full`]), the state the breaker was in: CLOSED,
    /// DISABLED or HALF_OPEN.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker admits a probe: the rest of the recovery timeout in OPEN, zero
    /// in HALF_OPEN (a slot frees when a probe ends), `None` in FORCED_OPEN (until reset). Zero
    /// for a full rejection (a place frees when a call ends).
    pub fn retry_after(&self) -> Option<Duration> {
        match self.why {
            Why::State { retry_after } => retry_after,
            Why::Full { .. } => Some(Duration::ZERO),
        }
    }

    /// Whether the call was rejected because `max_concurrent_calls` calls were in flight (the
    /// breaker itself would have admitted it). Such a rejection is not a failure: it never
    /// trips the breaker.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config};
    /// let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap();
    /// let _running = breaker.admit().unwrap();
    /// let rejected = breaker.admit().unwrap_err();
    /// assert!(rejected.is_full());
    /// assert_eq!((rejected.in_flight(), rejected.limit()), (Some(1), Some(1)));
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self.why, Why::Full { .. })
    }

    /// A full rejection: the calls in flight when it was rejected (read just after the refusal,
    /// and never reported below the limit, which the count had reached). `None` otherwise.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// breaker.force_open();
    /// assert_eq!(breaker.admit().unwrap_err().in_flight(), None);
    /// ```
    pub fn in_flight(&self) -> Option<u32> {
        match self.why {
            Why::Full { in_flight, .. } => Some(in_flight),
            Why::State { .. } => None,
        }
    }

    /// A full rejection: `max_concurrent_calls`. `None` otherwise.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config};
    /// let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(3)).unwrap();
    /// let _running: Vec<_> = (0..3).map(|_| breaker.admit().unwrap()).collect();
    /// assert_eq!(breaker.admit().unwrap_err().limit(), Some(3));
    /// ```
    pub fn limit(&self) -> Option<u32> {
        match self.why {
            Why::Full { limit, .. } => Some(limit.get()),
            Why::State { .. } => None,
        }
    }

    /// The name of the breaker that rejected the call (see [`CircuitBreaker::named`](crate::CircuitBreaker::named)).
    pub fn breaker_name(&self) -> Option<&'static str> {
        self.name
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker ")?;
        if let Some(name) = self.name {
            write!(f, "'{name}' ")?;
        }
        let retry_after = match self.why {
            Why::Full { in_flight, limit } => {
                return write!(f, "is full: {in_flight} calls in flight (max_concurrent_calls {limit})")
            }
            Why::State { retry_after } => retry_after,
        };
        match (self.state, retry_after) {
            (_, None) => write!(f, "is {} until reset", self.state),
            (State::HalfOpen, Some(d)) => {
                write!(f, "is HALF_OPEN and every probe slot is taken; next probe in {:.3} s", d.as_secs_f64())
            }
            (state, Some(d)) => write!(f, "is {state}; next probe in {:.3} s", d.as_secs_f64()),
        }
    }
}

impl std::error::Error for Rejected {}

/// What [`CircuitBreaker::call`](crate::CircuitBreaker::call) returns on error: the call was rejected, or it ran and failed.
#[derive(Debug, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker did not run the call.
    Rejected(Rejected),
    /// The call ran and returned this error (counted as the classifier said).
    Inner(E),
}

impl<E> CallError<E> {
    /// Whether the breaker rejected the call (it never ran).
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// breaker.force_open();
    /// assert!(breaker.call(|| Ok::<(), ()>(())).unwrap_err().is_rejected());
    /// ```
    pub fn is_rejected(&self) -> bool {
        matches!(self, CallError::Rejected(_))
    }

    /// The rejection, if the call was rejected.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, State};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap().named("quotes");
    /// breaker.force_open();
    /// let err = breaker.call(|| Ok::<(), ()>(())).unwrap_err();
    /// let rejected = err.rejected().unwrap();
    /// assert_eq!((rejected.state(), rejected.breaker_name()), (State::ForcedOpen, Some("quotes")));
    /// ```
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(_) => None,
        }
    }

    /// The call's own error, if it ran and failed.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert_eq!(breaker.call(|| Err::<(), _>("refused")).unwrap_err().inner(), Some(&"refused"));
    /// ```
    pub fn inner(&self) -> Option<&E> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Rejected(_) => None,
        }
    }

    /// The call's own error, or `None` if the call was rejected.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// assert_eq!(breaker.call(|| Err::<(), _>("refused")).unwrap_err().into_inner(), Some("refused"));
    /// breaker.force_open();
    /// assert_eq!(breaker.call(|| Err::<(), _>("refused")).unwrap_err().into_inner(), None);
    /// ```
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Rejected(_) => None,
        }
    }

    /// The call's own error as a boxed error, or the [`Rejected`] boxed (find it again with
    /// `downcast_ref::<Rejected>()`). For stacks whose errors are all boxed (tower's
    /// `BoxError`), where the inner error is already a box: `CallError<Box<dyn Error>>` is not
    /// itself an `Error`, this is.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Rejected};
    /// type BoxError = Box<dyn std::error::Error + Send + Sync>;
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// let failed = breaker.call(|| Err::<(), BoxError>("refused".into())).unwrap_err();
    /// assert_eq!(failed.into_box_error().to_string(), "refused");
    /// breaker.force_open();
    /// let rejected = breaker.call(|| Ok::<(), BoxError>(())).unwrap_err().into_box_error();
    /// assert!(rejected.downcast_ref::<Rejected>().is_some());
    /// ```
    pub fn into_box_error(self) -> Box<dyn std::error::Error + Send + Sync>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self {
            CallError::Rejected(r) => Box::new(r),
            CallError::Inner(e) => e.into(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(e) => Some(e),
        }
    }
}
