//! Benchmarks live in `benches/`; this holds what the criterion benchmarks and the examples
//! share: driving a future or a tower service without an executor, and a `redis-server` of
//! their own on a free loopback port, for the Redis-store figures.

use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower_service::Service;

/// Polls `future` once with a no-op waker: every future measured here is ready at once, so
/// this is the whole cost of awaiting it, with no executor in the measurement.
///
/// # Panics
///
/// If `future` is not ready at the first poll.
#[inline(always)]
pub fn poll_now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked futures are always ready"),
    }
}

/// One request through a tower service the way a caller drives it: `poll_ready`, `call`, and
/// the response future awaited (polled once; see [`poll_now`]).
///
/// # Panics
///
/// If the service is not ready, or its response not ready, at once.
#[inline(always)]
pub fn through<S: Service<u64>>(service: &mut S, request: u64) -> Result<S::Response, S::Error> {
    match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => poll_now(service.call(request)),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => panic!("the benchmarked services are always ready"),
    }
}

/// The inner service of the tower benchmarks: answers at once, `Err` for request 0 (to trip
/// the breakers), else `Ok` with the request.
#[derive(Clone, Copy, Debug)]
pub struct Answer;

impl Service<u64> for Answer {
    type Response = u64;
    type Error = u64;
    type Future = Ready<Result<u64, u64>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), u64>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: u64) -> Self::Future {
        ready(if request == 0 { Err(0) } else { Ok(request) })
    }
}

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` started for a benchmark (no persistence, in a temporary directory), killed
/// when dropped.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or returns `None` (with the reason on stderr) if `redis-server` cannot run
    /// here.
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!("cb-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                eprintln!("redis-server not started ({e}): the Redis figures are skipped");
                return None;
            }
        };
        let server = RedisServer { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                eprintln!("redis-server did not start: the Redis figures are skipped");
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    /// Its URL (database 0).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
