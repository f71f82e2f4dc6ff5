//! The failure-rate and slow-call trip policies: the scenarios, the peer bugs they must
//! not repeat (resilience4j #1443, #1335, #1262, #2334, #2379, #1034), threads racing to trip,
//! and a property test against a sequential reference window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use cb_core::{
    CircuitBreaker, Config, ManualClock, NoMetrics, Outcome, Reason, SlidingWindow, State, WindowTotals,
};
use proptest::prelude::*;

type Manual = CircuitBreaker<Arc<ManualClock>, NoMetrics>;

fn breaker(config: Config) -> (Manual, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (CircuitBreaker::with_parts(config, Arc::clone(&clock), NoMetrics).unwrap(), clock)
}

fn outcome(b: &Manual, fail: bool) -> Option<cb_core::Transition> {
    let ticket = b.admit_ticket().ok()?;
    b.record(ticket, if fail { Outcome::Failure } else { Outcome::Success })
}

fn rate(window: SlidingWindow) -> Config {
    Config::default().failure_threshold(1_000).failure_rate_threshold(0.5).minimum_calls(10).sliding_window(window)
}

#[test]
fn a_60_percent_mix_trips_and_a_40_percent_mix_does_not() {
    // Failures never more than 2 in a row, far below the consecutive threshold.
    let sixty = [true, true, false, true, false]; // 3 of 5
    let forty = [true, false, true, false, false]; // 2 of 5
    let (b, _) = breaker(rate(SlidingWindow::Calls(20)));
    let mut tripped = None;
    for (i, fail) in sixty.iter().cycle().take(40).enumerate() {
        if let Some(t) = outcome(&b, *fail) {
            tripped = Some((i, t));
            break;
        }
    }
    let (at, t) = tripped.expect("the 60 % mix trips");
    assert_eq!(t.to, State::Open);
    assert!(at >= 9, "not before minimum_calls (10) calls");
    assert!(matches!(t.reason, Reason::FailureRate { failures, calls } if failures * 2 >= calls && calls >= 10));

    let (b, _) = breaker(rate(SlidingWindow::Calls(20)));
    for fail in forty.iter().cycle().take(1_000) {
        assert!(outcome(&b, *fail).is_none());
    }
    assert_eq!(b.state(), State::Closed);
    let totals = b.window_totals().unwrap();
    assert!((19..=20).contains(&totals.calls) && totals.failures * 5 <= totals.calls * 2 + 2, "{totals:?}");
}

#[test]
fn no_trip_below_minimum_calls_by_design() {
    // resilience4j #1443: 9 failures out of 9 calls stay CLOSED with minimum_calls 10.
    let (b, _) = breaker(rate(SlidingWindow::Calls(100)));
    for _ in 0..9 {
        assert!(outcome(&b, true).is_none());
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(outcome(&b, true).map(|t| t.to), Some(State::Open), "the 10th call decides");
}

#[test]
fn slow_successes_trip_the_slow_call_policy() {
    let config = Config::default()
        .slow_call_duration(Duration::from_millis(100))
        .slow_call_rate_threshold(0.5)
        .minimum_calls(4)
        .sliding_window(SlidingWindow::Calls(10));
    let (b, clock) = breaker(config);
    let mut last = None;
    for _ in 0..4 {
        let ticket = b.admit_ticket().unwrap();
        clock.advance(Duration::from_millis(150)); // slow, and successful
        last = b.record(ticket, Outcome::Success);
    }
    let t = last.expect("4 slow successes of 4 trip it");
    assert!(matches!(t.reason, Reason::SlowCallRate { slow: 4, calls: 4 }));
    // Fast calls do not count as slow.
    let (b, clock) = breaker(config);
    for _ in 0..20 {
        let ticket = b.admit_ticket().unwrap();
        clock.advance(Duration::from_millis(99));
        assert!(b.record(ticket, Outcome::Success).is_none());
    }
    assert_eq!(b.window_totals().unwrap().slow, 0);
}

#[test]
fn time_windows_rotate_without_negative_or_double_counts() {
    // resilience4j #1335/#1262: counts after rotation. 1 s window, 16 buckets of 62 ms.
    let (b, clock) = breaker(rate(SlidingWindow::Time(Duration::from_secs(1))).minimum_calls(1_000));
    for step in 0..10_000u64 {
        outcome(&b, step % 3 == 0);
        clock.advance(Duration::from_millis(1));
        if step % 97 == 0 {
            let t = b.window_totals().unwrap();
            // 16 buckets of 63 ms at one call per ms: never more than 16 buckets hold (1008),
            // never fewer than the 15 whole ones (945).
            assert!(t.calls <= 1_008 && t.failures <= t.calls, "{t:?} at {step}");
            if step >= 1_008 {
                assert!(t.calls >= 945, "{t:?} at {step}");
                let expected = t.calls / 3;
                assert!(t.failures.abs_diff(expected) <= 1, "{t:?} at {step}");
            }
        }
    }
    // Idle for longer than the window: empty, not negative.
    clock.advance(Duration::from_secs(5));
    assert_eq!(b.window_totals().unwrap(), WindowTotals::default());
}

#[test]
fn sub_second_windows_are_stable_and_finer_than_a_second() {
    // resilience4j #2334/#2379 (1 s and shorter windows) and #1034 (1 s resolution).
    for ms in [1u64, 10, 100, 250, 1_000] {
        let window = SlidingWindow::Time(Duration::from_millis(ms));
        let (b, clock) = breaker(rate(window).minimum_calls(1));
        outcome(&b, false);
        assert_eq!(b.window_totals().unwrap().calls, 1, "{ms} ms");
        clock.advance(Duration::from_millis(ms + ms / 8 + 1));
        assert_eq!(b.window_totals().unwrap().calls, 0, "{ms} ms window forgot the call in time");
    }
    // A 100 ms window trips on failures 50 ms apart while a 1 s bucket would hold older
    // successes: resolution follows the window.
    let (b, clock) = breaker(rate(SlidingWindow::Time(Duration::from_millis(100))).minimum_calls(2));
    for _ in 0..10 {
        outcome(&b, false);
    }
    clock.advance(Duration::from_millis(200));
    assert!(outcome(&b, true).is_none(), "one call is below minimum_calls");
    clock.advance(Duration::from_millis(50));
    assert_eq!(outcome(&b, true).map(|t| t.to), Some(State::Open));
}

#[test]
fn the_window_starts_clean_after_every_transition_into_closed() {
    let (b, clock) = breaker(rate(SlidingWindow::Calls(20)).recovery_timeout(Duration::from_secs(1)));
    for fail in [false, true].iter().cycle().take(10) {
        outcome(&b, *fail);
    }
    assert_eq!(b.state(), State::Open, "5 of 10 failed, the 10th a failure: it decides");
    clock.advance(Duration::from_secs(2));
    assert!(outcome(&b, false).is_some_and(|t| t.to == State::Closed));
    assert_eq!(b.window_totals(), Some(WindowTotals::default()));
    for _ in 0..9 {
        outcome(&b, true);
    }
    assert_eq!(b.state(), State::Closed, "nine calls in the new window: below minimum_calls");
    b.reset();
    assert_eq!(b.window_totals(), Some(WindowTotals::default()));
}

#[test]
fn with_the_consecutive_count_off_only_the_rates_trip_and_closed_failures_write_nothing() {
    let config = rate(SlidingWindow::Calls(20)).failure_threshold(3).consecutive_failures(false).recovery_timeout(Duration::from_secs(1));
    let (b, clock) = breaker(config);
    let before = b.snapshot();
    for _ in 0..5 {
        assert!(outcome(&b, false).is_none());
    }
    for i in 0..4 {
        assert!(outcome(&b, true).is_none(), "failure {i}: the threshold of 3 is off");
    }
    assert_eq!(b.snapshot(), before, "CLOSED failures and successes leave the word as it was");
    assert_eq!(b.window_totals().unwrap(), WindowTotals { calls: 9, failures: 4, slow: 0 });
    let t = outcome(&b, true).expect("5 of 10 calls failed: the rate trips");
    assert_eq!((t.to, t.reason), (State::Open, Reason::FailureRate { failures: 5, calls: 10 }));
    // HALF_OPEN still decides on its probes: a failed probe reopens, a successful one closes.
    clock.advance(Duration::from_secs(2));
    assert!(outcome(&b, true).is_some_and(|t| t.from == State::HalfOpen && t.to == State::Open));
    clock.advance(Duration::from_secs(2));
    assert!(outcome(&b, false).is_some_and(|t| t.to == State::Closed));
    assert_eq!(b.snapshot().failures(), 0);
    assert!(Config::default().consecutive_failures(false).slow_call_duration(Duration::from_millis(5)).limits().is_ok());
    assert!(Config::default().consecutive_failures(false).describe().starts_with("failure_threshold=None,"));
    // A shared word another process counts failures in is not taken for corruption.
    let limits = config.limits().unwrap();
    assert!(cb_core::Snapshot::closed(b.snapshot().generation(), 7).is_well_formed(0, &limits));
}

#[test]
fn bad_values_are_typed_errors_naming_the_field() {
    let cases: [(Config, &str); 9] = [
        (Config::default().consecutive_failures(false), "consecutive_failures"),
        (Config::default().failure_rate_threshold(0.0), "failure_rate_threshold"),
        (Config::default().failure_rate_threshold(1.5), "failure_rate_threshold"),
        (Config::default().failure_rate_threshold(f64::NAN), "failure_rate_threshold"),
        (Config::default().slow_call_rate_threshold(0.5), "slow_call_rate_threshold"),
        (Config::default().slow_call_duration(Duration::ZERO), "slow_call_duration"),
        (Config::default().failure_rate_threshold(0.5).sliding_window(SlidingWindow::Calls(0)), "window_calls"),
        (Config::default().failure_rate_threshold(0.5).sliding_window(SlidingWindow::Time(Duration::ZERO)), "window_time"),
        (Config::default().failure_rate_threshold(0.5).minimum_calls(21).sliding_window(SlidingWindow::Calls(20)), "minimum_calls"),
    ];
    for (config, field) in cases {
        assert_eq!(config.limits().unwrap_err().field(), field);
    }
}

#[test]
fn racing_threads_count_every_call_and_trip_once() {
    for _ in 0..50 {
        let config = Config::default()
            .failure_threshold(1_000)
            .failure_rate_threshold(1.0)
            .minimum_calls(64)
            .sliding_window(SlidingWindow::Calls(64));
        let trips = Arc::new(AtomicU64::new(0));
        let heard = Arc::clone(&trips);
        let b = Arc::new(
            CircuitBreaker::new(config).unwrap().on_transition(move |t| {
                if t.to == State::Open {
                    heard.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
        let start = Arc::new(Barrier::new(4));
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (b, start, reasons) = (Arc::clone(&b), Arc::clone(&start), Arc::clone(&reasons));
                thread::spawn(move || {
                    let tickets: Vec<_> = (0..16).map(|_| b.admit_ticket().unwrap()).collect();
                    start.wait();
                    for t in tickets {
                        if let Some(tr) = b.record(t, Outcome::Failure) {
                            reasons.lock().unwrap().push(tr.reason);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(trips.load(Ordering::SeqCst), 1);
        assert_eq!(*reasons.lock().unwrap(), [Reason::FailureRate { failures: 64, calls: 64 }], "the 64th call trips, with every call counted");
    }
}

#[derive(Clone, Debug)]
struct Call {
    gap_ms: u64,
    fail: bool,
    took_ms: u64,
}

fn calls() -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec(
        (0u64..40, any::<bool>(), 0u64..30).prop_map(|(gap_ms, fail, took_ms)| Call { gap_ms, fail, took_ms }),
        1..200,
    )
}

proptest! {
    /// The breaker against a sequential reference: every call kept with its time slice; the
    /// window is the calls whose slice is one of the last `buckets`; it trips at the first
    /// failure or slow call after which the rates reach a threshold with minimum_calls in. The
    /// consecutive count (1,000, out of reach) on or off makes no difference.
    #[test]
    fn the_window_matches_a_sequential_reference(calls in calls(), window_ms in 16u64..400, min in 1u64..20, by_time in any::<bool>(), consecutive in any::<bool>()) {
        let window = if by_time { SlidingWindow::Time(Duration::from_millis(window_ms)) } else { SlidingWindow::Calls(window_ms / 4 + min) };
        let config = Config::default()
            .failure_threshold(1_000)
            .consecutive_failures(consecutive)
            .failure_rate_threshold(0.5)
            .slow_call_duration(Duration::from_millis(20))
            .slow_call_rate_threshold(0.75)
            .minimum_calls(min)
            .sliding_window(window);
        let (b, clock) = breaker(config);
        let (size, by_time) = match window { SlidingWindow::Calls(n) => (n, false), SlidingWindow::Time(t) => (t.as_millis() as u64, true) };
        let per_bucket = size.div_ceil(16).max(1);
        let buckets = size.div_ceil(per_bucket).min(16);
        let mut kept: Vec<(u64, bool, bool)> = Vec::new(); // (slice, failed, slow)
        let mut now = 1_000_000u64;
        for (i, c) in calls.iter().enumerate() {
            clock.advance(Duration::from_millis(c.gap_ms));
            now += c.gap_ms;
            let ticket = b.admit_ticket().unwrap();
            clock.advance(Duration::from_millis(c.took_ms));
            now += c.took_ms;
            let got = b.record(ticket, if c.fail { Outcome::Failure } else { Outcome::Success });
            let slice = if by_time { now / per_bucket } else { i as u64 / per_bucket };
            let slow = c.took_ms >= 20;
            kept.push((slice, c.fail, slow));
            let in_window: Vec<_> = kept.iter().filter(|(s, _, _)| s + buckets > slice).collect();
            let n = in_window.len() as u64;
            let failures = in_window.iter().filter(|(_, f, _)| *f).count() as u64;
            let slows = in_window.iter().filter(|(_, _, s)| *s).count() as u64;
            let decides = (c.fail || slow) && n >= min;
            let expected = if decides && failures * 2 >= n {
                Some(Reason::FailureRate { failures, calls: n })
            } else if decides && slows * 4 >= 3 * n {
                Some(Reason::SlowCallRate { slow: slows, calls: n })
            } else {
                None
            };
            prop_assert_eq!(got.map(|t| t.reason), expected, "call {}", i);
            if expected.is_some() {
                break;
            }
            prop_assert_eq!(b.window_totals().unwrap(), WindowTotals { calls: n, failures, slow: slows });
        }
    }
}
