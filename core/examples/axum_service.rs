//! An axum service that calls a flaky upstream through a breaker (`BreakerLayer` over
//! hyper-util's client), and answers 503 with `Retry-After` while the upstream is down instead
//! of waiting on it.
//!
//! ```text
//! cargo run -p cb_core --features tower --example axum_service
//! ```
//!
//! It runs by itself and exits: it serves the upstream and the service on 127.0.0.1 (ports of
//! their own), sends the service a few rounds of requests while the upstream works, fails and
//! recovers, and prints what each request got and what the breaker did.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cb_core::{BreakerLayer, BreakerService, CircuitBreaker, Config, Outcome};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type ClientResult = Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>;

/// What counts against the upstream: 5xx and transport errors. A 404 is the caller's problem.
fn upstream_health(result: &ClientResult) -> Outcome {
    match result {
        Ok(response) if response.status().is_server_error() => Outcome::Failure,
        Ok(response) if response.status().is_client_error() => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// The upstream: prices, or 503 while `down`.
struct Upstream {
    down: AtomicBool,
    calls: AtomicU64,
}

async fn price(State(upstream): State<Arc<Upstream>>, Path(symbol): Path<String>) -> impl IntoResponse {
    upstream.calls.fetch_add(1, Ordering::SeqCst);
    if upstream.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_string());
    }
    match symbol.as_str() {
        "AAPL" => (StatusCode::OK, "150.25".to_string()),
        _ => (StatusCode::NOT_FOUND, format!("no such symbol {symbol}")),
    }
}

/// Our service's state: where the upstream is, and the client that reaches it through the
/// breaker (clones share the breaker).
#[derive(Clone)]
struct Quotes {
    upstream: SocketAddr,
    client: BreakerService<HttpClient, fn(&ClientResult) -> Outcome>,
}

async fn quote(State(quotes): State<Quotes>, Path(symbol): Path<String>) -> axum::response::Response {
    let Ok(request) = Request::get(format!("http://{}/price/{symbol}", quotes.upstream)).body(Full::new(Bytes::new()))
    else {
        return (StatusCode::BAD_REQUEST, format!("not a symbol: {symbol:?}")).into_response();
    };
    match quotes.client.oneshot(request).await {
        Ok(response) if response.status().is_success() => {
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (StatusCode::OK, format!("{symbol} {}", String::from_utf8_lossy(&body))).into_response()
        }
        Ok(response) if response.status() == StatusCode::NOT_FOUND => {
            (StatusCode::NOT_FOUND, format!("unknown symbol {symbol}")).into_response()
        }
        Ok(response) => (StatusCode::BAD_GATEWAY, format!("upstream answered {}", response.status())).into_response(),
        Err(err) => match err.rejected() {
            // Rejected without calling the upstream: say when to come back.
            Some(rejected) => {
                let retry_after = rejected.retry_after().map_or(1, |d| d.as_millis().div_ceil(1_000).max(1));
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, retry_after.to_string())], err.to_string())
                    .into_response()
            }
            None => (StatusCode::BAD_GATEWAY, format!("upstream unreachable: {err}")).into_response(),
        },
    }
}

async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream_state = Arc::new(Upstream { down: AtomicBool::new(false), calls: AtomicU64::new(0) });
    let upstream =
        serve(Router::new().route("/price/{symbol}", get(price)).with_state(Arc::clone(&upstream_state))).await?;

    let recovery = Duration::from_millis(300);
    let breaker = Arc::new(
        CircuitBreaker::new(Config::default().failure_threshold(3).recovery_timeout(recovery))?
            .named("prices")
            .on_transition(|t| println!("    breaker 'prices': {} -> {} ({})", t.from, t.to, t.reason)),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let classify: fn(&ClientResult) -> Outcome = upstream_health;
    let layer = BreakerLayer::new(Arc::clone(&breaker)).classify(classify);
    let quotes = Quotes { upstream, client: tower::Layer::layer(&layer, client) };
    let service = serve(Router::new().route("/quote/{symbol}", get(quote)).with_state(quotes)).await?;

    let caller: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut sent = 0;
    let mut ask = |path: &'static str| {
        sent += 1;
        let (caller, n) = (caller.clone(), sent);
        async move {
            let request = Request::get(format!("http://{service}{path}")).body(Full::new(Bytes::new()))?;
            let response = caller.request(request).await?;
            let status = response.status();
            let retry = response.headers().get(header::RETRY_AFTER).map(|v| format!(" (Retry-After: {v:?})"));
            let body = response.into_body().collect().await?.to_bytes();
            println!("{n:>3}. GET {path:<16} -> {} {}{}", status.as_u16(), String::from_utf8_lossy(&body), retry.unwrap_or_default());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
        }
    };

    println!("upstream up:");
    assert_eq!(ask("/quote/AAPL").await?, StatusCode::OK);
    assert_eq!(ask("/quote/NOPE").await?, StatusCode::NOT_FOUND); // ignored: not the upstream's fault
    assert_eq!(ask("/quote/AAPL").await?, StatusCode::OK);

    println!("upstream down:");
    upstream_state.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(ask("/quote/AAPL").await?, StatusCode::BAD_GATEWAY);
    }
    let calls_when_opened = upstream_state.calls.load(Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(ask("/quote/AAPL").await?, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(upstream_state.calls.load(Ordering::SeqCst), calls_when_opened, "rejected calls never reach the upstream");

    println!("upstream back; waiting out the recovery timeout ({} ms):", recovery.as_millis());
    upstream_state.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(recovery + Duration::from_millis(50)).await;
    for _ in 0..3 {
        assert_eq!(ask("/quote/AAPL").await?, StatusCode::OK);
    }

    let totals = breaker.metrics().totals();
    let upstream_calls = upstream_state.calls.load(Ordering::SeqCst);
    println!(
        "{sent} requests; the upstream saw {upstream_calls}; the breaker spared it {} \
         (successes {}, failures {}, ignored {}, rejections {}); breaker now {}",
        totals.rejections, totals.successes, totals.failures, totals.ignored, totals.rejections, breaker.state(),
    );
    assert_eq!(breaker.state(), cb_core::State::Closed);
    Ok(())
}
