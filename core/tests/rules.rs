//! One test per rule of the breaker, with a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cb_core::{
    CallError, CircuitBreaker, Config, Counters, ManualClock, NoMetrics, Outcome, Reason, State,
    Transition,
};

type Breaker = CircuitBreaker<Arc<ManualClock>, Counters>;

struct Fixture {
    clock: Arc<ManualClock>,
    breaker: Breaker,
    events: Arc<Mutex<Vec<Transition>>>,
}

fn fixture(config: Config) -> Fixture {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    let breaker = CircuitBreaker::with_parts(config, Arc::clone(&clock), Counters::default().with_times())
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push(*t));
    Fixture { clock, breaker, events }
}

fn fail(b: &Breaker) {
    b.admit().expect("admitted").failure();
}

fn succeed(b: &Breaker) {
    b.admit().expect("admitted").success();
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn tripped(threshold: u64, recovery: Duration) -> Fixture {
    let f = fixture(Config::default().failure_threshold(threshold).recovery_timeout(recovery));
    for _ in 0..threshold {
        fail(&f.breaker);
    }
    assert_eq!(f.breaker.snapshot().stored_state(), State::Open);
    f
}

#[test]
fn defaults_match_the_documented_values() {
    let c = Config::default();
    assert_eq!(c.failure_threshold, 5);
    assert_eq!(c.recovery_timeout, secs(60));
    assert_eq!(c.success_threshold, 1);
    assert_eq!(c.half_open_max_calls, 1);
}

#[test]
fn closed_opens_exactly_at_the_threshold() {
    let f = fixture(Config::default().failure_threshold(3));
    fail(&f.breaker);
    fail(&f.breaker);
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.breaker.snapshot().failures(), 2);
    fail(&f.breaker);
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(f.breaker.snapshot().opened_at(), Some(1_000_000));
    assert_eq!(
        *f.events.lock().unwrap(),
        [Transition {
            from: State::Closed,
            to: State::Open,
            reason: Reason::FailureThreshold { failures: 3 }
        }]
    );
}

#[test]
fn a_success_resets_the_consecutive_failure_count() {
    let f = fixture(Config::default().failure_threshold(3));
    fail(&f.breaker);
    fail(&f.breaker);
    succeed(&f.breaker);
    assert_eq!(f.breaker.snapshot().failures(), 0);
    fail(&f.breaker);
    fail(&f.breaker);
    assert_eq!(f.breaker.state(), State::Closed);
}

#[test]
fn a_closed_success_with_nothing_pending_writes_nothing() {
    let f = fixture(Config::default());
    let before = f.breaker.snapshot();
    for _ in 0..10 {
        succeed(&f.breaker);
    }
    assert_eq!(f.breaker.snapshot(), before);
}

#[test]
fn open_rejects_without_running_the_call_and_says_when_to_retry() {
    let f = tripped(1, secs(60));
    f.clock.advance(secs(20));
    let mut ran = false;
    let err = f.breaker.call(|| -> Result<(), ()> {
        ran = true;
        Ok(())
    });
    assert!(!ran);
    match err {
        Err(CallError::Rejected(r)) => {
            assert_eq!(r.state(), State::Open);
            assert_eq!(r.retry_after(), Some(secs(40)));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(f.breaker.time_until_half_open(), Some(secs(40)));
    assert_eq!(f.breaker.metrics().totals().rejections, 1);
}

#[test]
fn open_is_half_open_once_the_timeout_elapsed_without_any_call() {
    let f = tripped(1, secs(60));
    f.clock.advance(Duration::from_millis(59_999));
    assert_eq!(f.breaker.state(), State::Open);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.breaker.state(), State::HalfOpen);
    // The read materialised the transition and announced it once.
    assert_eq!(f.breaker.snapshot().stored_state(), State::HalfOpen);
    assert_eq!(f.breaker.state(), State::HalfOpen);
    let events = f.events.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].reason, Reason::RecoveryTimeoutElapsed);
}

#[test]
fn sub_second_and_zero_recovery_timeouts_work() {
    let f = tripped(1, Duration::from_millis(250));
    f.clock.advance(Duration::from_millis(249));
    assert!(f.breaker.admit().is_err());
    f.clock.advance(Duration::from_millis(1));
    assert!(f.breaker.admit().unwrap().is_probe());

    let f = tripped(1, Duration::ZERO);
    assert_eq!(f.breaker.state(), State::HalfOpen);
}

#[test]
fn half_open_admits_at_most_max_calls_probes() {
    let f = fixture(
        Config::default()
            .failure_threshold(1)
            .recovery_timeout(secs(1))
            .half_open_max_calls(3)
            .success_threshold(5),
    );
    fail(&f.breaker);
    f.clock.advance(secs(1));
    let probes: Vec<_> = (0..3).map(|_| f.breaker.admit().expect("probe")).collect();
    let rejected = f.breaker.admit().unwrap_err();
    assert_eq!(rejected.state(), State::HalfOpen);
    assert_eq!(rejected.retry_after(), Some(Duration::ZERO));
    assert_eq!(f.breaker.snapshot().in_flight(), 3);
    // One finishing frees one slot.
    let mut probes = probes.into_iter();
    probes.next().unwrap().success();
    let again = f.breaker.admit().expect("a slot was freed");
    assert!(f.breaker.admit().is_err());
    drop(again);
}

#[test]
fn success_threshold_consecutive_probe_successes_close_it() {
    let f = fixture(
        Config::default().failure_threshold(1).recovery_timeout(secs(1)).success_threshold(3),
    );
    fail(&f.breaker);
    f.clock.advance(secs(1));
    succeed(&f.breaker);
    succeed(&f.breaker);
    assert_eq!(f.breaker.state(), State::HalfOpen);
    assert_eq!(f.breaker.snapshot().successes(), 2);
    succeed(&f.breaker);
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.breaker.snapshot().failures(), 0);
    let last = *f.events.lock().unwrap().last().unwrap();
    assert_eq!(
        last,
        Transition {
            from: State::HalfOpen,
            to: State::Closed,
            reason: Reason::ProbeSucceeded { successes: 3 }
        }
    );
}

#[test]
fn a_probe_failure_reopens_and_restarts_the_timeout() {
    let f = fixture(
        Config::default().failure_threshold(1).recovery_timeout(secs(10)).success_threshold(2),
    );
    fail(&f.breaker);
    f.clock.advance(secs(10));
    succeed(&f.breaker);
    fail(&f.breaker);
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(f.breaker.snapshot().opened_at(), Some(1_010_000));
    f.clock.advance(secs(9));
    assert_eq!(f.breaker.state(), State::Open);
    f.clock.advance(secs(1));
    assert_eq!(f.breaker.state(), State::HalfOpen);
    // The earlier probe success does not carry over into the new round.
    succeed(&f.breaker);
    assert_eq!(f.breaker.state(), State::HalfOpen);
}

#[test]
fn stale_outcomes_do_not_change_the_state() {
    let f = fixture(Config::default().failure_threshold(2).recovery_timeout(secs(1)));
    let slow = f.breaker.admit().unwrap(); // admitted while CLOSED
    fail(&f.breaker);
    fail(&f.breaker);
    f.clock.advance(secs(1));
    let probe = f.breaker.admit().unwrap();
    assert!(probe.is_probe());
    let before = f.breaker.snapshot();
    slow.failure(); // finishes late: must not reopen HALF_OPEN
    assert_eq!(f.breaker.snapshot(), before);
    probe.success();
    assert_eq!(f.breaker.state(), State::Closed);
    // ...but it was still counted as a failure in the totals.
    assert_eq!(f.breaker.metrics().totals().failures, 3);
}

#[test]
fn a_stale_success_does_not_clear_a_new_generations_failures() {
    let f = fixture(Config::default().failure_threshold(3));
    let old = f.breaker.admit().unwrap();
    f.breaker.reset();
    fail(&f.breaker);
    old.success();
    assert_eq!(f.breaker.snapshot().failures(), 1);
}

#[test]
fn a_dropped_probe_permit_releases_its_slot() {
    let f = tripped(1, secs(1));
    f.clock.advance(secs(1));
    let probe = f.breaker.admit().unwrap();
    assert!(f.breaker.admit().is_err());
    drop(probe);
    assert_eq!(f.breaker.snapshot().in_flight(), 0);
    assert_eq!(f.breaker.state(), State::HalfOpen);
    assert_eq!(f.breaker.metrics().totals().ignored, 1);
    succeed(&f.breaker);
    assert_eq!(f.breaker.state(), State::Closed);
}

#[test]
fn a_panicking_call_releases_its_probe_slot() {
    let f = tripped(1, secs(1));
    f.clock.advance(secs(1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.breaker.call(|| -> Result<(), ()> { panic!("boom") });
    }));
    assert!(result.is_err());
    assert_eq!(f.breaker.snapshot().in_flight(), 0);
    assert!(f.breaker.admit().is_ok());
}

#[test]
fn a_leaked_probe_permit_expires_after_the_probe_timeout() {
    let f = fixture(
        Config::default().failure_threshold(1).recovery_timeout(secs(1)).probe_timeout(secs(5)),
    );
    fail(&f.breaker);
    f.clock.advance(secs(1));
    let leaked = f.breaker.admit().unwrap();
    std::mem::forget(leaked);
    f.clock.advance(secs(5));
    assert!(f.breaker.admit().is_err(), "not before the timeout (plus the coarse unit)");
    f.clock.advance(Duration::from_millis(2_100));
    let fresh = f.breaker.admit().expect("the lost slot expired");
    assert!(fresh.is_probe());
    assert!(f.breaker.admit().is_err(), "still only one probe at a time");
    fresh.success();
    assert_eq!(f.breaker.state(), State::Closed);
}

#[test]
fn ignored_outcomes_release_the_slot_and_change_nothing_else() {
    let f = fixture(Config::default().failure_threshold(2).recovery_timeout(secs(1)));
    fail(&f.breaker);
    f.breaker.admit().unwrap().ignore();
    assert_eq!(f.breaker.snapshot().failures(), 1);
    fail(&f.breaker);
    f.clock.advance(secs(1));
    f.breaker.admit().unwrap().record(Outcome::Ignored);
    assert_eq!(f.breaker.state(), State::HalfOpen);
    assert_eq!(f.breaker.snapshot().in_flight(), 0);
}

#[test]
fn reset_closes_and_clears_counts_but_keeps_totals() {
    let f = tripped(2, secs(60));
    f.breaker.reset();
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.breaker.snapshot().failures(), 0);
    assert_eq!(f.breaker.metrics().totals().failures, 2);
    assert_eq!(f.events.lock().unwrap().last().unwrap().reason, Reason::Reset);
}

#[test]
fn force_open_rejects_until_reset_whatever_the_time() {
    let f = fixture(Config::default().recovery_timeout(secs(1)));
    f.breaker.force_open();
    f.clock.advance(secs(3_600));
    assert_eq!(f.breaker.state(), State::ForcedOpen);
    let r = f.breaker.admit().unwrap_err();
    assert_eq!((r.state(), r.retry_after()), (State::ForcedOpen, None));
    f.breaker.reset();
    assert!(f.breaker.admit().is_ok());
}

#[test]
fn disable_admits_everything_and_never_trips() {
    let f = fixture(Config::default().failure_threshold(1));
    f.breaker.disable();
    for _ in 0..100 {
        fail(&f.breaker);
    }
    assert_eq!(f.breaker.state(), State::Disabled);
    f.breaker.reset();
    fail(&f.breaker);
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn the_listener_hears_each_transition_once_in_order() {
    let f = fixture(Config::default().failure_threshold(1).recovery_timeout(secs(1)));
    fail(&f.breaker);
    f.clock.advance(secs(1));
    fail(&f.breaker);
    f.clock.advance(secs(1));
    succeed(&f.breaker);
    f.breaker.force_open();
    f.breaker.disable();
    f.breaker.reset();
    let seen: Vec<_> = f.events.lock().unwrap().iter().map(|t| (t.from, t.to)).collect();
    use State::*;
    assert_eq!(
        seen,
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, ForcedOpen),
            (ForcedOpen, Disabled),
            (Disabled, Closed)
        ]
    );
    assert_eq!(f.breaker.metrics().totals().opened, 3);
}

#[test]
fn counters_and_wall_times() {
    let f = fixture(Config::default().failure_threshold(2));
    assert!(f.breaker.last_failure_time().is_none());
    assert!(f.breaker.last_state_change_time().is_none());
    succeed(&f.breaker);
    fail(&f.breaker);
    f.breaker.admit().unwrap().ignore();
    fail(&f.breaker);
    let _ = f.breaker.admit();
    let t = f.breaker.metrics().totals();
    assert_eq!((t.successes, t.failures, t.ignored, t.rejections, t.opened), (1, 2, 1, 1, 1));
    let last = f.breaker.last_failure_time().unwrap();
    let now = std::time::SystemTime::now();
    assert!(now.duration_since(last).unwrap() < secs(1));
    // The wall time of an event is fixed once it happened: reading it again, later, gives the
    // same instant (no drift with the clock), and a later event reads exactly that much later.
    let opened = f.breaker.last_state_change_time().unwrap();
    f.clock.advance(secs(30));
    assert_eq!(f.breaker.last_state_change_time(), Some(opened));
    assert_eq!(f.breaker.last_failure_time(), Some(last));
    f.breaker.reset();
    assert_eq!(f.breaker.last_state_change_time().unwrap().duration_since(opened).unwrap(), secs(30));
}

#[test]
fn classifier_decides_what_counts() {
    let f = fixture(Config::default().failure_threshold(1));
    let classify = |r: &Result<u16, u16>| match r {
        Ok(code) if *code >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    };
    assert_eq!(f.breaker.call_classified(classify, || Err(1)), Err(CallError::Inner(1)));
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.breaker.call_classified(classify, || Ok(503)), Ok(503));
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn call_returns_the_value_and_the_error_unchanged() {
    let f = fixture(Config::default());
    assert_eq!(f.breaker.call(|| Ok::<_, String>(vec![1, 2])), Ok(vec![1, 2]));
    assert_eq!(
        f.breaker.call(|| Err::<(), _>("down".to_string())),
        Err(CallError::Inner("down".to_string()))
    );
}

#[test]
fn no_metrics_breakers_work_the_same() {
    let clock = ManualClock::new(0);
    let b = CircuitBreaker::with_parts(
        Config::default().failure_threshold(1).recovery_timeout(secs(1)),
        &clock,
        NoMetrics,
    )
    .unwrap();
    let _ = b.call(|| Err::<(), _>(()));
    assert!(b.admit().is_err());
    clock.advance(secs(1));
    assert!(b.call(|| Ok::<_, ()>(())).is_ok());
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn every_validation_error_names_its_field_and_range() {
    let cases: [(Config, &str, &str); 9] = [
        (Config::default().failure_threshold(0), "failure_threshold", "1..=4294967295"),
        (Config::default().failure_threshold(1 << 32), "failure_threshold", "1..=4294967295"),
        (Config::default().success_threshold(0), "success_threshold", "1..=255"),
        (Config::default().success_threshold(256), "success_threshold", "1..=255"),
        (Config::default().half_open_max_calls(0), "half_open_max_calls", "1..=255"),
        (Config::default().half_open_max_calls(256), "half_open_max_calls", "1..=255"),
        (
            Config::default().recovery_timeout(Duration::from_secs(u64::MAX)),
            "recovery_timeout",
            "0 ms ..= 70368744177663 ms",
        ),
        (Config::default().probe_timeout(Duration::ZERO), "probe_timeout", "1 ms ..= 70368744177663 ms"),
        (
            Config::default().recovery_timeout(cb_core::MAX_TIMEOUT + Duration::from_millis(1)),
            "recovery_timeout",
            "0 ms ..= 70368744177663 ms",
        ),
    ];
    for (config, field, allowed) in cases {
        let err = CircuitBreaker::new(config).unwrap_err();
        assert_eq!((err.field(), err.allowed()), (field, allowed), "{err}");
        assert!(err.to_string().starts_with(field));
    }
    // The extremes themselves are fine.
    assert!(Config::default().failure_threshold(u64::from(u32::MAX)).limits().is_ok());
    assert!(Config::default().recovery_timeout(cb_core::MAX_TIMEOUT).limits().is_ok());
    assert!(Config::default().recovery_timeout(Duration::ZERO).limits().is_ok());
}

#[test]
fn sub_millisecond_timeouts_round_up_never_early() {
    let limits = Config::default().recovery_timeout(Duration::from_micros(1_500)).limits().unwrap();
    let open = cb_core::Snapshot::open(0, 100);
    assert_eq!(open.state_at(101, &limits), State::Open);
    assert_eq!(open.state_at(102, &limits), State::HalfOpen);
}

#[test]
fn real_clocks_are_monotonic_and_agree() {
    use cb_core::{CachedClock, Clock, CoarseClock, MonotonicClock};
    let cached = CachedClock::start(Duration::from_millis(1));
    for _ in 0..1_000 {
        let coarse = CoarseClock.now();
        let mono = MonotonicClock.now();
        assert!(mono >= coarse);
        assert!(mono - coarse < 100, "coarse lags by one kernel tick at most");
    }
    std::thread::sleep(Duration::from_millis(5));
    let (c, m) = (cached.now(), MonotonicClock.now());
    assert!(m >= c && m - c < 200, "cached {c} vs monotonic {m}");
}


#[test]
fn a_panicking_listener_does_not_silence_the_next_transitions() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    let breaker = CircuitBreaker::new(Config::default().failure_threshold(1).recovery_timeout(secs(0)))
        .unwrap()
        .on_transition(move |t| {
            log.lock().unwrap().push(t.to);
            assert_ne!(t.to, State::Open, "a listener bug");
        });
    let tripped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| breaker.admit().unwrap().failure()));
    assert!(tripped.is_err(), "the listener's panic reaches the caller that made the transition");
    assert_eq!(breaker.snapshot().stored_state(), State::Open, "the transition itself took effect");
    breaker.admit().unwrap().success(); // OPEN -> HALF_OPEN -> CLOSED: told as usual
    assert_eq!(*heard.lock().unwrap(), [State::Open, State::HalfOpen, State::Closed]);
}
