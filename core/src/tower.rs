//! A `tower` [`Layer`] and [`Service`] (feature `tower`): every request to the inner service
//! goes through one shared breaker.
//!
//! ```
//! use cb_core::{BreakerLayer, CircuitBreaker, Config, Outcome};
//! use std::sync::Arc;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # futures_executor::block_on(async {
//! let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(3))?.named("prices"));
//! let mut prices = ServiceBuilder::new()
//!     // Every clone of this service (one per connection, per task) uses this one breaker.
//!     .layer(BreakerLayer::new(Arc::clone(&breaker)))
//!     .service(service_fn(|symbol: &'static str| async move {
//!         match symbol {
//!             "AAPL" => Ok(150.25),
//!             _ => Err(std::io::Error::other("unknown symbol")),
//!         }
//!     }));
//! assert_eq!(prices.ready().await?.call("AAPL").await?, 150.25);
//! for _ in 0..3 {
//!     assert!(prices.ready().await?.call("MSFT").await.unwrap_err().into_inner().is_some());
//! }
//! let err = prices.ready().await?.call("AAPL").await.unwrap_err(); // not sent to the service
//! assert!(err.is_rejected());
//! assert!(err.to_string().starts_with("circuit breaker 'prices' is OPEN"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # What happens where
//!
//! - **`poll_ready`** only forwards to the inner service. It never rejects: an error from
//!   `poll_ready` tells tower the service is gone for good (tower issue #43), and an open
//!   breaker is temporary.
//! - **`call`** asks the breaker. Admitted, it calls the inner service and returns a
//!   [`ResponseFuture`] holding an [`OwnedPermit`]; rejected, it does not call the inner
//!   service, and the future resolves to [`CallError::Rejected`] at once. (Like tower's own
//!   `Filter`, it may leave the readiness of the inner service unused; the next call uses it.)
//! - **The response future** records what the classifier says the result counts as when it
//!   completes. Dropped before (a client that hung up, a `Timeout` above it, a `select!`), it
//!   records [`Outcome::Ignored`](crate::Outcome::Ignored): a cancelled HALF_OPEN probe frees its slot at once.
//! - **Clones** of the service share the breaker (an `Arc`), so its counts, its state and the
//!   HALF_OPEN probe limit are the same for every clone, task and thread.
//!
//! # Errors
//!
//! The service's error is [`CallError<E>`] around the inner service's `E`:
//! [`CallError::is_rejected`] tells a rejection apart, [`CallError::into_inner`] gives the
//! inner error back, and its `Display` names the breaker (`circuit breaker 'prices' is OPEN;
//! next probe in 29.998 s`). It is a `std::error::Error` (with the inner error or the
//! [`crate::Rejected`] as its `source`) when `E` is one. Above a layer whose errors are already
//! boxed (`tower::BoxError`, say a `Timeout` under the breaker), map it with
//! [`CallError::into_box_error`]: `.map_err(CallError::into_box_error)`.
//!
//! # Classification
//!
//! By default an `Err` from the inner service is a failure and any `Ok` a success. An HTTP
//! client reports 5xx as `Ok`, and 4xx is usually the caller's fault: say so with
//! [`BreakerLayer::classify`].
//!
//! ```
//! use cb_core::{BreakerLayer, CircuitBreaker, Outcome};
//! use std::sync::Arc;
//!
//! /// A response with a status, as an HTTP client returns.
//! struct Response { status: u16 }
//!
//! let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(Default::default())?))
//!     .classify(|r: &Result<Response, std::io::Error>| match r {
//!         Ok(response) if response.status >= 500 => Outcome::Failure,
//!         Ok(response) if response.status >= 400 => Outcome::Ignored,
//!         Ok(_) => Outcome::Success,
//!         Err(_) => Outcome::Failure,
//!     });
//! # let _ = layer;
//! # Ok::<(), cb_core::ConfigError>(())
//! ```
//!
//! In front of an axum router, put axum's `HandleErrorLayer` above the breaker to turn a
//! rejection into a response (`503 Service Unavailable`); `examples/axum_service.rs` shows a
//! whole server.

use core::fmt;
use core::task::{Context, Poll};
use std::sync::Arc;

use tower_layer::Layer;
use tower_service::Service;

use crate::{
    CallError, CircuitBreaker, Classify, Clock, Counters, DefaultClock, ErrIsFailure, Guarded, LocalWord, Metrics,
    OwnedPermit, Store,
};

/// The future a [`BreakerService`] returns: the inner service's future under an
/// [`OwnedPermit`] (see [`Guarded`]).
pub type ResponseFuture<F, K = ErrIsFailure, C = DefaultClock, M = Counters, S = LocalWord> =
    Guarded<OwnedPermit<C, M, S>, F, K>;

/// Wraps services in a [`BreakerService`] that shares this layer's breaker. Cloning the layer,
/// or layering many services with it, shares the one breaker.
///
/// ```
/// use cb_core::{BreakerLayer, CircuitBreaker};
/// use tower::Layer;
///
/// let layer = BreakerLayer::new(CircuitBreaker::new(Default::default())?.named("inventory"));
/// let service = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n + 1) }));
/// assert_eq!(service.breaker().name(), Some("inventory"));
/// # Ok::<(), cb_core::ConfigError>(())
/// ```
pub struct BreakerLayer<K = ErrIsFailure, C: Clock = DefaultClock, M: Metrics = Counters, S: Store = LocalWord> {
    breaker: Arc<CircuitBreaker<C, M, S>>,
    classify: K,
}

impl<C: Clock, M: Metrics, S: Store> BreakerLayer<ErrIsFailure, C, M, S> {
    /// A layer for `breaker` (a breaker, or an `Arc` of one to keep a handle on it), counting
    /// `Err` as failure and `Ok` as success.
    ///
    /// ```
    /// use cb_core::{BreakerLayer, CircuitBreaker, State};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default())?);
    /// let layer = BreakerLayer::new(Arc::clone(&breaker));
    /// assert!(Arc::ptr_eq(layer.breaker(), &breaker));
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    pub fn new(breaker: impl Into<Arc<CircuitBreaker<C, M, S>>>) -> Self {
        BreakerLayer { breaker: breaker.into(), classify: ErrIsFailure }
    }
}

impl<K, C: Clock, M: Metrics, S: Store> BreakerLayer<K, C, M, S> {
    /// Classifies results with `classify` (a [`Classify`], such as a closure
    /// `Fn(&Result<Response, Error>) -> Outcome`) instead.
    ///
    /// ```
    /// use cb_core::{BreakerLayer, CircuitBreaker, Outcome};
    /// // A service whose Ok carries an HTTP status.
    /// let layer = BreakerLayer::new(CircuitBreaker::new(Default::default())?)
    ///     .classify(|r: &Result<u16, std::io::Error>| match r {
    ///         Ok(status) if *status >= 500 => Outcome::Failure,
    ///         Ok(status) if *status >= 400 => Outcome::Ignored,
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::Failure,
    ///     });
    /// # let _ = layer;
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    pub fn classify<K2>(self, classify: K2) -> BreakerLayer<K2, C, M, S> {
        BreakerLayer { breaker: self.breaker, classify }
    }

    /// The breaker every service of this layer shares.
    pub fn breaker(&self) -> &Arc<CircuitBreaker<C, M, S>> {
        &self.breaker
    }
}

impl<Svc, K: Clone, C: Clock, M: Metrics, S: Store> Layer<Svc> for BreakerLayer<K, C, M, S> {
    type Service = BreakerService<Svc, K, C, M, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        BreakerService { inner, breaker: Arc::clone(&self.breaker), classify: self.classify.clone() }
    }
}

impl<K: Clone, C: Clock, M: Metrics, S: Store> Clone for BreakerLayer<K, C, M, S> {
    fn clone(&self) -> Self {
        BreakerLayer { breaker: Arc::clone(&self.breaker), classify: self.classify.clone() }
    }
}

impl<K, C: Clock, M: Metrics, S: Store> fmt::Debug for BreakerLayer<K, C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}

/// A service whose calls go through a breaker: made by [`BreakerLayer`]. See the
/// [module docs](self) for what happens in `poll_ready`, `call` and the response future.
///
/// ```
/// use cb_core::{BreakerLayer, CircuitBreaker};
/// use tower::{Layer, ServiceExt};
///
/// let layer = BreakerLayer::new(CircuitBreaker::new(Default::default())?);
/// let service = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n + 1) }));
/// let copy = service.clone(); // the same breaker
/// assert_eq!(futures_executor::block_on(copy.oneshot(1)), Ok(2));
/// assert_eq!(service.breaker().metrics().totals().successes, 1);
/// # Ok::<(), cb_core::ConfigError>(())
/// ```
pub struct BreakerService<Svc, K = ErrIsFailure, C: Clock = DefaultClock, M: Metrics = Counters, S: Store = LocalWord> {
    inner: Svc,
    breaker: Arc<CircuitBreaker<C, M, S>>,
    classify: K,
}

impl<Svc, K, C: Clock, M: Metrics, S: Store> BreakerService<Svc, K, C, M, S> {
    /// The breaker this service shares with its clones.
    pub fn breaker(&self) -> &Arc<CircuitBreaker<C, M, S>> {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// The inner service, without the breaker.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<Req, Svc, K, C, M, S> Service<Req> for BreakerService<Svc, K, C, M, S>
where
    Svc: Service<Req>,
    K: Classify<Svc::Response, Svc::Error> + Clone,
    C: Clock,
    M: Metrics,
    S: Store,
{
    type Response = Svc::Response;
    type Error = CallError<Svc::Error>;
    type Future = ResponseFuture<Svc::Future, K, C, M, S>;

    /// Forwards to the inner service; never rejects (see the [module docs](self)).
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    /// Asks the breaker; calls the inner service only if admitted.
    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.admit_owned() {
            Ok(permit) => Guarded::admitted(permit, self.inner.call(request), self.classify.clone()),
            Err(rejected) => Guarded::rejected(rejected),
        }
    }
}

impl<Svc: Clone, K: Clone, C: Clock, M: Metrics, S: Store> Clone for BreakerService<Svc, K, C, M, S> {
    fn clone(&self) -> Self {
        BreakerService { inner: self.inner.clone(), breaker: Arc::clone(&self.breaker), classify: self.classify.clone() }
    }
}

impl<Svc: fmt::Debug, K, C: Clock, M: Metrics, S: Store> fmt::Debug for BreakerService<Svc, K, C, M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
