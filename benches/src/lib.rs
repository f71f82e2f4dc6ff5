//! Benchmarks live in `benches/`; this holds what the criterion benchmarks and the
//! instruction-count example share: driving a future or a tower service without an executor.

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
