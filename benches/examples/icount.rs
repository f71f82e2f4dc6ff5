//! Instructions per operation, deterministic whatever the machine is doing (wall-clock times
//! on a shared 2-core VM swing by 2x between identical runs):
//!
//! ```text
//! cargo build --release -p benches --example icount
//! for case in baseline clock closed/none closed/counters open/none open/counters \
//!             failure/none failure/counters failure/with_times cycle/none cycle/counters \
//!             rate/count rate/time rate/time_failure rate/count_failure rate/count_failure_rates_only \
//!             future/closed future/open tower/none tower/closed tower/open tower/static \
//!             limit/none limit/counters limit/tower; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/icount $case 2>&1 | grep Collected
//! done
//! ```
//! Each case makes 1,000,000 calls: (Collected - baseline) / 1e6 = instructions per call.

use std::hint::black_box;
use std::time::Duration;

use benches::{poll_now, through, Answer};
use cb_core::{BreakerLayer, CircuitBreaker, CoarseClock, Config, Counters, Metrics, NoMetrics, SlidingWindow};
use tower_layer::Layer;

const CALLS: u64 = 1_000_000;

fn run<M: Metrics>(metrics: M, open: bool) {
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(3_600));
    let b = CircuitBreaker::with_parts(config, CoarseClock, metrics).unwrap();
    if open {
        let _ = b.call(|| Err::<(), ()>(()));
    }
    for _ in 0..CALLS {
        let _ = black_box(b.call(|| Ok::<u64, ()>(black_box(1))));
    }
}

/// A CLOSED success with `max_concurrent_calls` set (never reached): the place taken and
/// given back, beside `closed/*` without a limit.
fn limited<M: Metrics>(metrics: M) {
    let config = Config::default().max_concurrent_calls(8);
    let b = CircuitBreaker::with_parts(config, CoarseClock, metrics).unwrap();
    for _ in 0..CALLS {
        let _ = black_box(b.call(|| Ok::<u64, ()>(black_box(1))));
    }
}

/// A failure below the threshold, every call.
fn fail<M: Metrics>(metrics: M) {
    let config = Config::default().failure_threshold(u64::from(u32::MAX));
    let b = CircuitBreaker::with_parts(config, CoarseClock, metrics).unwrap();
    for _ in 0..CALLS {
        let _ = black_box(b.call(|| Err::<u64, u64>(black_box(1))));
    }
}

/// A failure that trips (threshold 1, recovery 0), then a probe that succeeds and closes it:
/// the trip, the probe admission and the close, every iteration.
fn cycle<M: Metrics>(metrics: M) {
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO);
    let b = CircuitBreaker::with_parts(config, CoarseClock, metrics).unwrap();
    for _ in 0..CALLS {
        let _ = black_box(b.call(|| Err::<u64, u64>(black_box(1))));
        let _ = black_box(b.call(|| Ok::<u64, u64>(black_box(1))));
    }
}

/// A CLOSED success, and a failure that trips nothing, with a failure-rate policy over a count
/// or a time window (and the consecutive count, out of reach, unless `rates_only`).
fn rate(window: SlidingWindow, fail: bool, rates_only: bool) {
    let config = Config::default()
        .failure_threshold(u64::from(u32::MAX))
        .consecutive_failures(!rates_only)
        .failure_rate_threshold(1.0)
        .minimum_calls(if matches!(window, SlidingWindow::Calls(_)) { 100 } else { u64::from(u32::MAX) })
        .sliding_window(window);
    let b = CircuitBreaker::with_parts(config, CoarseClock, NoMetrics).unwrap();
    for i in 0..CALLS {
        // Failing every other call at most, so a count window (rate 1.0) never trips.
        let failed = fail && (matches!(window, SlidingWindow::Time(_)) || i % 2 == 0);
        let _ = black_box(b.call(|| if failed { Err::<u64, u64>(black_box(1)) } else { Ok(black_box(1)) }));
    }
}

/// `run` of a ready future, polled once (counters on), CLOSED or OPEN.
fn future(open: bool) {
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(3_600));
    let b = CircuitBreaker::with_parts(config, CoarseClock, Counters::default()).unwrap();
    if open {
        let _ = b.call(|| Err::<(), ()>(()));
    }
    for _ in 0..CALLS {
        let _ = black_box(poll_now(b.run(std::future::ready(Ok::<u64, ()>(black_box(1))))));
    }
}

/// One request through the tower `BreakerService` (counters on), CLOSED or OPEN: poll_ready,
/// call, the response polled once.
fn tower(open: bool) {
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(3_600));
    let breaker = CircuitBreaker::with_parts(config, CoarseClock, Counters::default()).unwrap();
    let mut service = BreakerLayer::new(std::sync::Arc::new(breaker)).layer(Answer);
    if open {
        let _ = through(&mut service, 0);
    }
    for _ in 0..CALLS {
        let _ = black_box(through(&mut service, black_box(1)));
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("closed/none") => run(NoMetrics, false),
        Some("closed/counters") => run(Counters::default(), false),
        Some("open/none") => run(NoMetrics, true),
        Some("open/counters") => run(Counters::default(), true),
        Some("failure/none") => fail(NoMetrics),
        Some("failure/counters") => fail(Counters::default()),
        Some("failure/with_times") => fail(Counters::default().with_times()),
        Some("cycle/none") => cycle(NoMetrics),
        Some("cycle/counters") => cycle(Counters::default()),
        Some("rate/count") => rate(SlidingWindow::Calls(100), false, false),
        Some("rate/time") => rate(SlidingWindow::Time(Duration::from_secs(10)), false, false),
        Some("rate/time_failure") => rate(SlidingWindow::Time(Duration::from_secs(10)), true, false),
        Some("rate/count_failure") => rate(SlidingWindow::Calls(100), true, false),
        Some("rate/count_failure_rates_only") => rate(SlidingWindow::Calls(100), true, true),
        Some("future/closed") => future(false),
        Some("future/open") => future(true),
        Some("tower/closed") => tower(false),
        Some("tower/open") => tower(true),
        Some("limit/none") => limited(NoMetrics),
        Some("limit/counters") => limited(Counters::default()),
        Some("limit/tower") => {
            let config = Config::default().max_concurrent_calls(8);
            let breaker = CircuitBreaker::with_parts(config, CoarseClock, Counters::default()).unwrap();
            let mut service = BreakerLayer::new(std::sync::Arc::new(breaker)).layer(Answer);
            for _ in 0..CALLS {
                let _ = black_box(through(&mut service, black_box(1)));
            }
        }
        Some("tower/static") => {
            let breaker: &'static CircuitBreaker = Box::leak(Box::new(CircuitBreaker::new(Config::default()).unwrap()));
            let mut service = BreakerLayer::new(breaker).layer(Answer);
            for _ in 0..CALLS {
                let _ = black_box(through(&mut service, black_box(1)));
            }
        }
        Some("tower/none") => {
            let mut service = Answer;
            for _ in 0..CALLS {
                let _ = black_box(through(&mut service, black_box(1)));
            }
        }
        Some("clock") => {
            for _ in 0..CALLS {
                black_box(cb_core::Clock::now(&CoarseClock));
            }
        }
        Some("baseline") | None => {}
        Some(other) => eprintln!("unknown case {other}"),
    }
}
