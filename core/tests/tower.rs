//! The `tower` layer against real HTTP: an axum server on 127.0.0.1 (port 0) and hyper-util's
//! client, on a multi-threaded tokio runtime. The breaker sits in front of the client (calls
//! out) and in front of the axum router (calls in).

#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::error::Error as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::State as Shared;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::Router;
use cb_core::{BreakerLayer, CallError, CircuitBreaker, Config, Outcome, Rejected, State};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type ClientError = hyper_util::client::legacy::Error;

/// What the upstream server saw.
struct Upstream {
    ok: AtomicU64,
    hold_running: AtomicU64,
    hold_peak: AtomicU64,
    release: watch::Receiver<bool>,
}

/// `/ok` 200, `/missing` 404, `/fail` 500, `/slow` answers in an hour, `/hold` waits for
/// `release` (counting how many wait at once).
fn upstream(release: watch::Receiver<bool>) -> (Router, Arc<Upstream>) {
    let seen = Arc::new(Upstream {
        ok: AtomicU64::new(0),
        hold_running: AtomicU64::new(0),
        hold_peak: AtomicU64::new(0),
        release,
    });
    let router = Router::new()
        .route(
            "/ok",
            get(|Shared(seen): Shared<Arc<Upstream>>| async move {
                seen.ok.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                "late"
            }),
        )
        .route(
            "/hold",
            get(|Shared(seen): Shared<Arc<Upstream>>| async move {
                let now = seen.hold_running.fetch_add(1, Ordering::SeqCst) + 1;
                seen.hold_peak.fetch_max(now, Ordering::SeqCst);
                let _ = seen.release.clone().wait_for(|go| *go).await;
                seen.hold_running.fetch_sub(1, Ordering::SeqCst);
                "held"
            }),
        )
        .with_state(Arc::clone(&seen));
    (router, seen)
}

/// Serves `router` on 127.0.0.1, on a port of its own.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get_request(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new())).unwrap()
}

/// An HTTP client's view: 5xx and transport errors are the upstream's failures, 4xx the
/// caller's own (ignored).
fn by_status<B>(result: &Result<Response<B>, ClientError>) -> Outcome {
    match result {
        Ok(response) if response.status().is_server_error() => Outcome::Failure,
        Ok(response) if response.status().is_client_error() => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// HALF_OPEN on the next admission, with `limit` probe slots.
fn half_open(limit: u64) -> Arc<CircuitBreaker> {
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO).half_open_max_calls(limit);
    let breaker = Arc::new(CircuitBreaker::new(config).unwrap().named("upstream"));
    let _ = breaker.call(|| Err::<(), _>("boom"));
    assert_eq!(breaker.state(), State::HalfOpen);
    breaker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_breaker_ignores_4xx_trips_on_5xx_and_rejects_without_sending() {
    let (router, seen) = upstream(watch::channel(true).1);
    let addr = serve(router).await;
    let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(3)).unwrap().named("upstream"));
    let mut http = ServiceBuilder::new()
        .layer(BreakerLayer::new(Arc::clone(&breaker)).classify(by_status))
        .service(client());

    for _ in 0..10 {
        let response = http.ready().await.unwrap().call(get_request(addr, "/missing")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(breaker.state(), State::Closed, "4xx are ignored: they never trip it");
    assert_eq!(breaker.metrics().totals().ignored, 10);

    let response = http.ready().await.unwrap().call(get_request(addr, "/ok")).await.unwrap();
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    for _ in 0..3 {
        let response = http.ready().await.unwrap().call(get_request(addr, "/fail")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(breaker.state(), State::Open);

    // poll_ready still succeeds (an error there would be final); call rejects.
    let err = http.ready().await.unwrap().call(get_request(addr, "/ok")).await.unwrap_err();
    assert!(err.is_rejected());
    assert_eq!(err.rejected().map(Rejected::state), Some(State::Open));
    assert!(err.to_string().starts_with("circuit breaker 'upstream' is OPEN; next probe in"), "{err}");
    let source = err.source().expect("a rejection is its own source");
    assert!(source.downcast_ref::<Rejected>().is_some());
    assert!(err.into_inner().is_none());
    assert_eq!(seen.ok.load(Ordering::SeqCst), 1, "the rejected request was never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_failures_and_keep_their_source() {
    // A port nobody listens on any more.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap().named("gone");
    let mut http = BreakerLayer::new(Arc::new(breaker)).classify(by_status).layer(client());
    let err = http.ready().await.unwrap().call(get_request(addr, "/ok")).await.unwrap_err();
    assert!(!err.is_rejected());
    assert!(err.inner().is_some_and(|e| e.is_connect()), "{err:?}");
    assert!(err.source().and_then(|s| s.downcast_ref::<ClientError>()).is_some());
    assert_eq!(http.breaker().state(), State::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_in_front_of_an_axum_router_answers_503_naming_itself() {
    let (router, seen) = upstream(watch::channel(true).1);
    let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(3)).unwrap().named("front"));
    let server_view = |r: &Result<Response<Body>, Infallible>| match r {
        Ok(response) if response.status().is_server_error() => Outcome::Failure,
        Ok(response) if response.status().is_client_error() => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(never) => match *never {},
    };
    let app = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: CallError<Infallible>| async move {
            (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }))
        .layer(BreakerLayer::new(Arc::clone(&breaker)).classify(server_view))
        .service(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::ServiceExt::<Request<Body>>::into_make_service(app)).await.unwrap() });

    let http = client();
    for _ in 0..5 {
        assert_eq!(http.request(get_request(addr, "/missing")).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(http.request(get_request(addr, "/ok")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(breaker.state(), State::Closed);
    for _ in 0..3 {
        assert_eq!(http.request(get_request(addr, "/fail")).await.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(breaker.state(), State::Open);
    let response = http.request(get_request(addr, "/ok")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"circuit breaker 'front' is OPEN; next probe in"), "{body:?}");
    assert_eq!(seen.ok.load(Ordering::SeqCst), 1, "the handler did not run for the rejected request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_probe_frees_its_slot_for_the_next_call() {
    let (router, seen) = upstream(watch::channel(true).1);
    let addr = serve(router).await;
    let breaker = half_open(1);
    let http = BreakerLayer::new(Arc::clone(&breaker)).classify(by_status).layer(client());

    let probe = http.clone().oneshot(get_request(addr, "/slow"));
    assert!(tokio::time::timeout(Duration::from_millis(100), probe).await.is_err(), "the probe hung");
    assert_eq!(breaker.metrics().totals().ignored, 1, "timeout dropped the probe's permit");

    // Without the drop releasing it, the one slot would stay taken for the probe timeout (60 s).
    let response = http.clone().oneshot(get_request(addr, "/ok")).await.expect("admitted as the next probe");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.ok.load(Ordering::SeqCst), 1);
    assert_eq!(breaker.state(), State::Closed, "its success closed the breaker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_breaker_works_the_same_without_an_arc() {
    let (router, seen) = upstream(watch::channel(true).1);
    let addr = serve(router).await;
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO);
    let breaker: &'static CircuitBreaker = Box::leak(Box::new(CircuitBreaker::new(config).unwrap().named("forever")));
    let http = ServiceBuilder::new().layer(BreakerLayer::new(breaker).classify(by_status)).service(client());

    // Trip it, then time out the probe: the slot comes back, as through an Arc.
    let _ = http.clone().oneshot(get_request(addr, "/fail")).await.unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    let probe = http.clone().oneshot(get_request(addr, "/slow"));
    assert!(tokio::time::timeout(Duration::from_millis(100), probe).await.is_err());
    let response = http.clone().oneshot(get_request(addr, "/ok")).await.expect("admitted as the next probe");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((seen.ok.load(Ordering::SeqCst), breaker.state()), (1, State::Closed));
    // The response future holds a Permit<'static>: spawnable like any other.
    let task = tokio::spawn(http.oneshot(get_request(addr, "/ok")));
    assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_with_clones_of_the_service_get_exactly_the_probe_limit() {
    const TASKS: usize = 64;
    const LIMIT: u64 = 4;
    let (release, released) = watch::channel(false);
    let (router, seen) = upstream(released);
    let addr = serve(router).await;
    let breaker = half_open(LIMIT);
    let http = BreakerLayer::new(Arc::clone(&breaker)).classify(by_status).layer(client());
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let (admitted, attempted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (mut http, start) = (http.clone(), Arc::clone(&start));
            let (admitted, attempted) = (Arc::clone(&admitted), Arc::clone(&attempted));
            tokio::spawn(async move {
                start.wait().await;
                let call = http.ready().await.unwrap().call(get_request(addr, "/hold"));
                if call.is_admitted() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
                attempted.fetch_add(1, Ordering::SeqCst);
                call.await
            })
        })
        .collect();

    // Every task has asked and every admitted probe has reached the server: let them finish.
    let settled = async {
        while attempted.load(Ordering::SeqCst) < TASKS as u64
            || seen.hold_running.load(Ordering::SeqCst) < admitted.load(Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled).await.expect("every task asked");
    release.send(true).unwrap();

    let (mut served, mut rejected) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                served += 1;
            }
            Err(err) => {
                assert!(err.is_rejected(), "{err}");
                assert_eq!(err.rejected().map(Rejected::state), Some(State::HalfOpen));
                assert_eq!(err.rejected().and_then(Rejected::breaker_name), Some("upstream"));
                rejected += 1;
            }
        }
    }
    assert_eq!(admitted.load(Ordering::SeqCst), LIMIT);
    assert_eq!(seen.hold_peak.load(Ordering::SeqCst), LIMIT, "probes at once, as the server saw them");
    assert_eq!((served, rejected), (LIMIT as usize, TASKS - LIMIT as usize));
    assert_eq!(breaker.state(), State::Closed);
}

/// A service whose readiness the test sets.
#[derive(Clone)]
struct Gate(Poll<Result<(), &'static str>>);

impl Service<u32> for Gate {
    type Response = u32;
    type Error = &'static str;
    type Future = std::future::Ready<Result<u32, &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(if n == 0 { Err("zero") } else { Ok(n) })
    }
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

#[test]
fn poll_ready_forwards_the_inner_service_and_never_rejects() {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    breaker.force_open();
    let layer = BreakerLayer::new(Arc::clone(&breaker));

    assert_eq!(layer.layer(Gate(Poll::Ready(Ok(())))).poll_ready(&mut cx), Poll::Ready(Ok(())), "open, yet ready");
    assert_eq!(layer.layer(Gate(Poll::Pending)).poll_ready(&mut cx), Poll::Pending);
    assert_eq!(
        layer.layer(Gate(Poll::Ready(Err("closed")))).poll_ready(&mut cx),
        Poll::Ready(Err(CallError::Inner("closed")))
    );
    // The rejection comes from call, as a ready future.
    let mut service = layer.layer(Gate(Poll::Ready(Ok(()))));
    let mut call = pin!(service.call(1));
    let Poll::Ready(Err(err)) = call.as_mut().poll(&mut cx) else { panic!("rejected at once") };
    assert_eq!(err.rejected().map(Rejected::state), Some(State::ForcedOpen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_and_services_of_one_layer_share_its_breaker() {
    let layer = BreakerLayer::new(Arc::new(CircuitBreaker::new(Config::default().failure_threshold(2)).unwrap().named("shared")));
    let one = layer.layer(Gate(Poll::Ready(Ok(()))));
    let other = layer.layer(Gate(Poll::Ready(Ok(()))));
    assert_eq!(one.clone().oneshot(0).await, Err(CallError::Inner("zero")));
    assert_eq!(other.clone().oneshot(0).await, Err(CallError::Inner("zero")));
    assert!(one.oneshot(1).await.unwrap_err().is_rejected());
    assert!(other.oneshot(1).await.unwrap_err().is_rejected());
    assert_eq!(layer.breaker().metrics().totals().rejections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxed_errors_stack_with_into_box_error() {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap().named("boxed"));
    // An inner service that already boxes its errors, as tower's Timeout does.
    let inner = tower::service_fn(|n: u32| async move { if n == 0 { Err::<u32, BoxError>("zero".into()) } else { Ok(n) } });
    let service = ServiceBuilder::new()
        .map_err(CallError::into_box_error)
        .layer(BreakerLayer::new(Arc::clone(&breaker)))
        .service(inner);
    let failed: BoxError = service.clone().oneshot(0).await.unwrap_err();
    assert_eq!(failed.to_string(), "zero");
    let rejected: BoxError = service.oneshot(1).await.unwrap_err();
    assert_eq!(rejected.downcast_ref::<Rejected>().and_then(Rejected::breaker_name), Some("boxed"));
}

/// The scenario: the upstream hangs. With `max_concurrent_calls(4)` it never sees more
/// than 4 requests at once, the rest are rejected at once without being sent (and never trip
/// the breaker), and the response futures that time out give their places back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_sees_at_most_the_limit_and_timed_out_calls_free_their_places() {
    const LIMIT: u64 = 4;
    let (release, released) = watch::channel(false);
    let (router, seen) = upstream(released);
    let addr = serve(router).await;
    let config = Config::default().failure_threshold(1).max_concurrent_calls(LIMIT);
    let breaker = Arc::new(CircuitBreaker::new(config).unwrap().named("upstream"));
    let http = BreakerLayer::new(Arc::clone(&breaker)).classify(by_status).layer(client());

    let calls: Vec<_> = (0..20)
        .map(|_| {
            let call = http.clone().oneshot(get_request(addr, "/hold"));
            tokio::spawn(tokio::time::timeout(Duration::from_millis(300), call))
        })
        .collect();
    let mut full = 0;
    let mut timed_out = 0;
    for call in calls {
        match call.await.unwrap() {
            Err(_elapsed) => timed_out += 1,
            Ok(Err(err)) => {
                let rejected = err.rejected().expect("only rejections end early");
                assert!(rejected.is_full());
                assert!(rejected.to_string().starts_with("circuit breaker 'upstream' is full: "), "{rejected}");
                full += 1;
            }
            Ok(Ok(response)) => panic!("the upstream answered {}", response.status()),
        }
    }
    assert_eq!((timed_out, full), (LIMIT, 20 - LIMIT));
    assert_eq!(seen.hold_peak.load(Ordering::SeqCst), LIMIT);
    assert_eq!(breaker.in_flight(), 0, "every timed-out response future gave its place back");
    assert_eq!(breaker.state(), State::Closed, "full rejections are not failures");
    let totals = breaker.metrics().totals();
    assert_eq!((totals.full_rejections, totals.ignored, totals.failures), (20 - LIMIT, LIMIT, 0));

    release.send(true).unwrap();
    let response = http.clone().oneshot(get_request(addr, "/ok")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(breaker.in_flight(), 0);
}

/// A response future dropped before it is polled at all gives its place back.
#[test]
fn a_dropped_response_future_frees_its_place() {
    let breaker = Arc::new(CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap());
    let mut service = BreakerLayer::new(Arc::clone(&breaker)).layer(tower::service_fn(|_: ()| std::future::pending::<Result<(), ()>>()));
    let pending = service.call(());
    assert!(pending.is_admitted());
    assert_eq!(breaker.in_flight(), 1);
    let rejected = service.call(());
    assert!(!rejected.is_admitted(), "full");
    drop(rejected);
    assert_eq!(breaker.in_flight(), 1, "a rejection holds no place");
    drop(pending);
    assert_eq!(breaker.in_flight(), 0);
    assert!(service.call(()).is_admitted());
}
