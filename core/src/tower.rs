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
//! - **Clones** of the service share the breaker (an `Arc`, or a `&'static` one), so its counts,
//!   its state and the HALF_OPEN probe limit are the same for every clone, task and thread.
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
//! # A breaker that lives as long as the program
//!
//! Through an `Arc`, every admitted request increments and decrements the `Arc`'s count (the
//! response future must own its share), and that count is one cache line written by every
//! thread. A breaker that is never dropped (a `static`, or leaked once at startup) can be
//! handed over as `&'static CircuitBreaker` instead: the response future then holds a
//! [`Permit<'static>`](crate::Permit) and the closed path writes nothing shared, as with
//! [`CircuitBreaker::call`]. Anything that is a [`BreakerHandle`] works.
//!
//! ```
//! use cb_core::{BreakerLayer, CircuitBreaker, Config};
//! use std::sync::OnceLock;
//! use tower::Layer;
//!
//! fn prices_breaker() -> &'static CircuitBreaker {
//!     static BREAKER: OnceLock<CircuitBreaker> = OnceLock::new();
//!     BREAKER.get_or_init(|| CircuitBreaker::new(Config::default()).unwrap().named("prices"))
//! }
//!
//! let service = BreakerLayer::new(prices_breaker()).layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n) }));
//! assert_eq!(service.breaker().name(), Some("prices"));
//! ```
//!
//! # axum
//!
//! In front of an axum router, put axum's `HandleErrorLayer` above the breaker to turn a
//! rejection into a response (`503 Service Unavailable`); `examples/axum_service.rs` shows a
//! whole server.

use core::fmt;
use core::task::{Context, Poll};
use std::sync::Arc;

use tower_layer::Layer;
use tower_service::Service;

use crate::{AnyPermit, CallError, CircuitBreaker, Classify, Clock, ErrIsFailure, Guarded, Metrics, OwnedPermit, Permit, Rejected, Store};

mod sealed {
    pub trait Sealed {
        /// Asks the breaker, for a permit the response future can own.
        fn admit_for_future(&self) -> Result<<Self as super::BreakerHandle>::Permit, crate::Rejected>
        where
            Self: super::BreakerHandle;
    }
}

/// How a [`BreakerService`] holds its breaker: an `Arc<CircuitBreaker>` (each response future
/// owns a share: an [`OwnedPermit`]) or a `&'static CircuitBreaker` (each holds a
/// [`Permit<'static>`](Permit), and no count is touched). Sealed.
///
/// ```
/// use cb_core::{BreakerHandle, CircuitBreaker};
/// use std::sync::Arc;
/// fn handle<B: BreakerHandle>(b: B) -> B { b }
/// let shared = handle(Arc::new(CircuitBreaker::new(Default::default()).unwrap()));
/// let forever: &'static CircuitBreaker = handle(Box::leak(Box::new(CircuitBreaker::new(Default::default()).unwrap())));
/// # let _ = (shared, forever);
/// ```
pub trait BreakerHandle: Clone + sealed::Sealed {
    /// What a response future holds while the inner service runs.
    type Permit: AnyPermit;
}

impl<C: Clock, M: Metrics, S: Store> sealed::Sealed for Arc<CircuitBreaker<C, M, S>> {
    #[inline(always)]
    fn admit_for_future(&self) -> Result<<Self as BreakerHandle>::Permit, Rejected> {
        self.admit_owned()
    }
}

impl<C: Clock, M: Metrics, S: Store> BreakerHandle for Arc<CircuitBreaker<C, M, S>> {
    type Permit = OwnedPermit<C, M, S>;
}

impl<C: Clock, M: Metrics, S: Store> sealed::Sealed for &'static CircuitBreaker<C, M, S> {
    #[inline(always)]
    fn admit_for_future(&self) -> Result<<Self as BreakerHandle>::Permit, Rejected> {
        let breaker: &'static CircuitBreaker<C, M, S> = self;
        breaker.admit()
    }
}

impl<C: Clock, M: Metrics, S: Store> BreakerHandle for &'static CircuitBreaker<C, M, S> {
    type Permit = Permit<'static, C, M, S>;
}

/// The future a [`BreakerService`] returns: the inner service's future under the permit its
/// breaker handle gives (see [`Guarded`]).
pub type ResponseFuture<F, K = ErrIsFailure, B = Arc<CircuitBreaker>> = Guarded<<B as BreakerHandle>::Permit, F, K>;

/// Wraps services in a [`BreakerService`] that shares this layer's breaker. Cloning the layer,
/// or layering many services with it, shares the one breaker.
///
/// ```
/// use cb_core::{BreakerLayer, CircuitBreaker};
/// use std::sync::Arc;
/// use tower::Layer;
///
/// let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(Default::default())?.named("inventory")));
/// let service = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n + 1) }));
/// assert_eq!(service.breaker().name(), Some("inventory"));
/// # Ok::<(), cb_core::ConfigError>(())
/// ```
pub struct BreakerLayer<K = ErrIsFailure, B = Arc<CircuitBreaker>> {
    breaker: B,
    classify: K,
}

impl<B: BreakerHandle> BreakerLayer<ErrIsFailure, B> {
    /// A layer for `breaker` (an `Arc` of a breaker, or a `&'static` one), counting `Err` as
    /// failure and `Ok` as success.
    ///
    /// ```
    /// use cb_core::{BreakerLayer, CircuitBreaker, State};
    /// use std::sync::Arc;
    /// let breaker = Arc::new(CircuitBreaker::new(Default::default())?);
    /// let layer = BreakerLayer::new(Arc::clone(&breaker));
    /// assert!(Arc::ptr_eq(layer.breaker(), &breaker));
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    pub fn new(breaker: B) -> Self {
        BreakerLayer { breaker, classify: ErrIsFailure }
    }
}

impl<K, B> BreakerLayer<K, B> {
    /// Classifies results with `classify` (a [`Classify`], such as a closure
    /// `Fn(&Result<Response, Error>) -> Outcome`) instead.
    ///
    /// ```
    /// use cb_core::{BreakerLayer, CircuitBreaker, Outcome};
    /// use std::sync::Arc;
    /// // A service whose Ok carries an HTTP status.
    /// let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(Default::default())?))
    ///     .classify(|r: &Result<u16, std::io::Error>| match r {
    ///         Ok(status) if *status >= 500 => Outcome::Failure,
    ///         Ok(status) if *status >= 400 => Outcome::Ignored,
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::Failure,
    ///     });
    /// # let _ = layer;
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    pub fn classify<K2>(self, classify: K2) -> BreakerLayer<K2, B> {
        BreakerLayer { breaker: self.breaker, classify }
    }

    /// The breaker every service of this layer shares.
    pub fn breaker(&self) -> &B {
        &self.breaker
    }
}

impl<Svc, K: Clone, B: Clone> Layer<Svc> for BreakerLayer<K, B> {
    type Service = BreakerService<Svc, K, B>;

    fn layer(&self, inner: Svc) -> Self::Service {
        BreakerService { inner, breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<K: Clone, B: Clone> Clone for BreakerLayer<K, B> {
    fn clone(&self) -> Self {
        BreakerLayer { breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<K, B: fmt::Debug> fmt::Debug for BreakerLayer<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}

/// A service whose calls go through a breaker: made by [`BreakerLayer`]. See the
/// [module docs](self) for what happens in `poll_ready`, `call` and the response future.
///
/// ```
/// use cb_core::{BreakerLayer, CircuitBreaker};
/// use std::sync::Arc;
/// use tower::{Layer, ServiceExt};
///
/// let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(Default::default())?));
/// let service = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, ()>(n + 1) }));
/// let copy = service.clone(); // the same breaker
/// assert_eq!(futures_executor::block_on(copy.oneshot(1)), Ok(2));
/// assert_eq!(service.breaker().metrics().totals().successes, 1);
/// # Ok::<(), cb_core::ConfigError>(())
/// ```
pub struct BreakerService<Svc, K = ErrIsFailure, B = Arc<CircuitBreaker>> {
    inner: Svc,
    breaker: B,
    classify: K,
}

impl<Svc, K, B> BreakerService<Svc, K, B> {
    /// The breaker this service shares with its clones.
    pub fn breaker(&self) -> &B {
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

impl<Req, Svc, K, B> Service<Req> for BreakerService<Svc, K, B>
where
    Svc: Service<Req>,
    K: Classify<Svc::Response, Svc::Error> + Clone,
    B: BreakerHandle,
{
    type Response = Svc::Response;
    type Error = CallError<Svc::Error>;
    type Future = ResponseFuture<Svc::Future, K, B>;

    /// Forwards to the inner service; never rejects (see the [module docs](self)).
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    /// Asks the breaker; calls the inner service only if admitted.
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        match sealed::Sealed::admit_for_future(&self.breaker) {
            Ok(permit) => Guarded::admitted(permit, self.inner.call(request), self.classify.clone()),
            Err(rejected) => Guarded::rejected(rejected),
        }
    }
}

impl<Svc: Clone, K: Clone, B: Clone> Clone for BreakerService<Svc, K, B> {
    fn clone(&self) -> Self {
        BreakerService { inner: self.inner.clone(), breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<Svc: fmt::Debug, K, B: fmt::Debug> fmt::Debug for BreakerService<Svc, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
