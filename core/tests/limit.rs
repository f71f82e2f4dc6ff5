//! `Config::max_concurrent_calls`: who takes a place, who gives it back, what a full
//! rejection says and what it never counts as.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cb_core::{
    CircuitBreaker, Config, Counters, DefaultClock, InFlight, LocalInFlight, LocalWord, ManualClock, Outcome, Snapshot,
    SlidingWindow, State, Store,
};

fn limited(n: u64) -> CircuitBreaker {
    CircuitBreaker::new(Config::default().max_concurrent_calls(n)).unwrap().named("quotes")
}

#[test]
fn the_limit_is_validated_into_a_typed_error() {
    for bad in [0, u64::from(u32::MAX) + 1, u64::MAX] {
        let err = CircuitBreaker::new(Config::default().max_concurrent_calls(bad)).unwrap_err();
        assert_eq!(err.field(), "max_concurrent_calls");
        assert_eq!(err.bounds(), (1, u64::from(u32::MAX)));
    }
    let most = CircuitBreaker::new(Config::default().max_concurrent_calls(u64::from(u32::MAX))).unwrap();
    assert_eq!(most.max_concurrent_calls(), Some(u32::MAX));
    let unlimited = CircuitBreaker::new(Config::default()).unwrap();
    assert_eq!((unlimited.max_concurrent_calls(), unlimited.config().max_concurrent_calls), (None, None));
    // Not part of what hosts sharing a word must agree on.
    assert_eq!(Config::default().max_concurrent_calls(8).describe(), Config::default().describe());
    assert_ne!(Config::default().max_concurrent_calls(8), Config::default());
}

#[test]
fn without_a_limit_nothing_is_counted() {
    let breaker = CircuitBreaker::new(Config::default()).unwrap();
    let held: Vec<_> = (0..1_000).map(|_| breaker.admit().unwrap()).collect();
    assert_eq!(breaker.in_flight(), 0);
    drop(held);
    assert_eq!(breaker.in_flight(), 0);
}

#[test]
fn the_call_past_the_limit_is_rejected_as_full_and_never_runs() {
    let breaker = limited(2);
    let a = breaker.admit().unwrap();
    let b = breaker.admit().unwrap();
    let ran = AtomicU32::new(0);
    let err = breaker.call(|| {
        ran.fetch_add(1, Ordering::Relaxed);
        Ok::<(), ()>(())
    });
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    let rejected = *err.unwrap_err().rejected().unwrap();
    assert!(rejected.is_full());
    assert_eq!((rejected.state(), rejected.in_flight(), rejected.limit()), (State::Closed, Some(2), Some(2)));
    assert_eq!(rejected.retry_after(), Some(Duration::ZERO));
    assert_eq!(rejected.breaker_name(), Some("quotes"));
    assert_eq!(rejected.to_string(), "circuit breaker 'quotes' is full: 2 calls in flight (max_concurrent_calls 2)");
    let anonymous = CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap();
    let _held = anonymous.admit().unwrap();
    assert_eq!(anonymous.admit().unwrap_err().to_string(), "circuit breaker is full: 1 calls in flight (max_concurrent_calls 1)");
    drop((a, b));
    assert_eq!(breaker.call(|| Ok::<_, ()>(7)), Ok(7));
}

#[test]
fn a_full_rejection_is_counted_on_its_own_and_never_trips() {
    let breaker = CircuitBreaker::new(Config::default().failure_threshold(1).max_concurrent_calls(1)).unwrap();
    let held = breaker.admit().unwrap();
    for _ in 0..10 {
        assert!(breaker.admit().unwrap_err().is_full());
    }
    assert_eq!(breaker.state(), State::Closed);
    let t = breaker.metrics().totals();
    assert_eq!((t.full_rejections, t.rejections, t.failures, t.opened), (10, 0, 0, 0));
    assert_eq!(t.requests(), 10);
    held.success();
    assert_eq!(breaker.metrics().totals().successes, 1);
}

#[test]
fn a_full_rejection_never_counts_in_the_rate_window() {
    let config = Config::default()
        .consecutive_failures(false)
        .failure_rate_threshold(0.5)
        .minimum_calls(2)
        .sliding_window(SlidingWindow::Calls(10))
        .max_concurrent_calls(1);
    let breaker = CircuitBreaker::new(config).unwrap();
    let held = breaker.admit().unwrap();
    for _ in 0..5 {
        assert!(breaker.admit().unwrap_err().is_full());
    }
    assert_eq!(breaker.window_totals().unwrap().calls, 0);
    held.failure();
    assert_eq!(breaker.window_totals().unwrap().calls, 1);
    assert_eq!(breaker.in_flight(), 0);
    let _ = breaker.call(|| Err::<(), _>("503")); // 2 of 2 failed: the rate trips it
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.in_flight(), 0);
}

#[test]
fn every_outcome_gives_the_place_back_even_stale_and_ignored() {
    let breaker = limited(1);
    for outcome in [Outcome::Success, Outcome::Failure, Outcome::Ignored] {
        let ticket = breaker.admit_ticket().unwrap();
        assert_eq!(breaker.in_flight(), 1);
        assert!(breaker.admit_ticket().unwrap_err().is_full());
        breaker.record(ticket, outcome);
        assert_eq!(breaker.in_flight(), 0, "{outcome:?}");
    }
    // Stale: admitted before a reset (a new generation); the word ignores the outcome, the
    // place still comes back.
    let ticket = breaker.admit_ticket().unwrap();
    breaker.reset();
    let generation = breaker.snapshot().generation();
    assert_eq!(breaker.record(ticket, Outcome::Failure), None);
    assert_eq!(breaker.snapshot().generation(), generation);
    assert_eq!(breaker.in_flight(), 0);
    // Stale across a trip and a force_open.
    let ticket = breaker.admit_ticket().unwrap();
    breaker.force_open();
    breaker.record(ticket, Outcome::Success);
    assert_eq!(breaker.in_flight(), 0);
}

#[test]
fn permits_give_their_place_back_when_reported_or_dropped() {
    let breaker = limited(1);
    breaker.admit().unwrap().success();
    breaker.admit().unwrap().failure();
    breaker.admit().unwrap().ignore();
    drop(breaker.admit().unwrap());
    let ticket = breaker.admit().unwrap().into_ticket();
    assert_eq!(breaker.in_flight(), 1, "a detached ticket keeps its place");
    breaker.record(ticket, Outcome::Success);
    assert_eq!(breaker.in_flight(), 0);
    // A panic inside `call` drops the permit: the place comes back.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = breaker.call(|| -> Result<(), ()> { panic!("boom") });
    }));
    assert!(panicked.is_err());
    assert_eq!(breaker.in_flight(), 0);

    let shared = Arc::new(CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap());
    let owned = shared.admit_owned().unwrap();
    assert!(shared.admit_owned().unwrap_err().is_full());
    std::thread::spawn(move || drop(owned)).join().unwrap();
    assert_eq!(shared.in_flight(), 0);
    shared.admit_owned().unwrap().failure();
    let ticket = shared.admit_owned().unwrap().into_ticket();
    shared.record(ticket, Outcome::Ignored);
    assert_eq!(shared.in_flight(), 0);
}

#[test]
fn open_and_forced_open_reject_by_state_without_touching_the_count() {
    /// Counts every call the breaker makes on it.
    #[derive(Default)]
    struct Watched {
        count: LocalInFlight,
        touched: AtomicU64,
    }
    impl InFlight for Watched {
        fn try_enter(&self, max: u32) -> bool {
            self.touched.fetch_add(1, Ordering::Relaxed);
            self.count.try_enter(max)
        }
        fn leave(&self) {
            self.touched.fetch_add(1, Ordering::Relaxed);
            self.count.leave()
        }
        fn in_flight(&self) -> u32 {
            self.count.in_flight()
        }
    }
    struct WatchedStore(LocalWord, Watched);
    impl Store for WatchedStore {
        fn load(&self) -> Snapshot {
            self.0.load()
        }
        fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
            self.0.compare_exchange(current, next)
        }
        fn shared_in_flight(&self) -> Option<&dyn InFlight> {
            Some(&self.1)
        }
    }
    let clock = ManualClock::new(0);
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(10)).max_concurrent_calls(1);
    let store = WatchedStore(LocalWord::default(), Watched::default());
    let breaker = CircuitBreaker::with_store(config, &clock, Counters::default(), store).unwrap();
    let held = breaker.admit().unwrap();
    let _ = breaker.store().1.touched.swap(0, Ordering::Relaxed);
    breaker.force_open();
    for _ in 0..3 {
        let rejected = breaker.admit().unwrap_err();
        assert!(!rejected.is_full(), "state is checked first");
        assert_eq!(rejected.state(), State::ForcedOpen);
    }
    assert_eq!(breaker.store().1.touched.load(Ordering::Relaxed), 0);
    held.success(); // stale, but gives the place back
    assert_eq!(breaker.in_flight(), 0);
    breaker.reset();
    breaker.admit().unwrap().failure(); // OPEN
    let _ = breaker.store().1.touched.swap(0, Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(breaker.admit().unwrap_err().state(), State::Open);
    }
    assert_eq!(breaker.store().1.touched.load(Ordering::Relaxed), 0);
    assert_eq!(breaker.metrics().totals().full_rejections, 0);
    // The store's count is the one used and reported.
    clock.advance(Duration::from_secs(10));
    let probe = breaker.admit().unwrap();
    assert_eq!((breaker.in_flight(), breaker.store().1.count.in_flight()), (1, 1));
    probe.success();
    assert_eq!(breaker.store().1.count.in_flight(), 0);
}

#[test]
fn half_open_gives_the_probe_slot_back_when_the_limit_is_full() {
    let clock = ManualClock::new(0);
    let config = Config::default()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_secs(1))
        .half_open_max_calls(3)
        .max_concurrent_calls(2);
    let breaker = CircuitBreaker::with_parts(config, &clock, Counters::default()).unwrap();
    let slow = breaker.admit().unwrap(); // CLOSED; keeps its place while it hangs
    breaker.admit().unwrap().failure(); // OPEN
    clock.advance(Duration::from_secs(1));
    let probe = breaker.admit().unwrap();
    assert!(probe.is_probe());
    assert_eq!((breaker.in_flight(), breaker.snapshot().in_flight()), (2, 1));
    // A probe slot is free, but no place is: rejected as full in HALF_OPEN, and the probe slot
    // it took from the word went back.
    let rejected = breaker.admit().unwrap_err();
    assert!(rejected.is_full());
    assert_eq!(rejected.state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().in_flight(), 1);
    assert_eq!(breaker.metrics().totals().ignored, 0, "the returned slot counts as nothing");
    // The hung CLOSED call ends (stale): its place comes back, and the next probe gets it.
    slow.failure();
    assert_eq!(breaker.state(), State::HalfOpen);
    let second = breaker.admit().unwrap();
    assert!(second.is_probe());
    assert_eq!(breaker.snapshot().in_flight(), 2);
    drop((probe, second));
    assert_eq!((breaker.in_flight(), breaker.snapshot().in_flight()), (0, 0));
}

/// A word in this process, its count of calls in flight shared with other breakers (as a
/// shared-memory slot shares it between processes).
struct Pooled<'a>(LocalWord, &'a LocalInFlight);

impl Store for Pooled<'_> {
    fn load(&self) -> Snapshot {
        self.0.load()
    }
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        self.0.compare_exchange(current, next)
    }
    fn shared_in_flight(&self) -> Option<&dyn InFlight> {
        Some(self.1)
    }
}

#[test]
fn the_first_probe_refused_by_the_limit_leaves_half_open_with_no_probe_held() {
    let clock = ManualClock::new(0);
    let pool = LocalInFlight::new();
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(1)).max_concurrent_calls(1);
    let other = CircuitBreaker::with_store(config, &clock, Counters::default(), Pooled(LocalWord::default(), &pool)).unwrap();
    let transitions = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&transitions);
    let breaker = CircuitBreaker::with_store(config, &clock, Counters::default(), Pooled(LocalWord::new(Snapshot::open(1, 0)), &pool))
        .unwrap()
        .on_transition(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
    let held = other.admit().unwrap(); // the pool's one place, taken elsewhere
    assert_eq!(breaker.in_flight(), 1);
    assert_eq!(breaker.admit().unwrap_err().state(), State::Open);
    clock.advance(Duration::from_secs(1));
    // The recovery timeout is over: the word admits a probe (OPEN -> HALF_OPEN), the pool
    // is full, so the probe slot goes back and the call is rejected as full.
    let rejected = breaker.admit().unwrap_err();
    assert_eq!((rejected.is_full(), rejected.state()), (true, State::HalfOpen));
    assert_eq!(breaker.snapshot().stored_state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().in_flight(), 0);
    assert_eq!(transitions.load(Ordering::Relaxed), 1);
    drop(held);
    let probe = breaker.admit().unwrap();
    assert!(probe.is_probe());
    assert!(other.admit().unwrap_err().is_full(), "the pool is shared");
    probe.success();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(pool.in_flight(), 0);
}

#[test]
fn disabled_is_limited_too() {
    let breaker = limited(1);
    breaker.disable();
    let held = breaker.admit().unwrap();
    let rejected = breaker.admit().unwrap_err();
    assert_eq!((rejected.is_full(), rejected.state()), (true, State::Disabled));
    drop(held);
    assert!(breaker.admit().is_ok());
}

#[test]
fn admitting_without_writing_the_word_still_takes_a_place() {
    let breaker = limited(1);
    let ticket = breaker.admit_without_writing().unwrap().unwrap();
    assert!(breaker.admit_without_writing().unwrap().unwrap_err().is_full());
    breaker.record(ticket, Outcome::Success);
    assert_eq!(breaker.in_flight(), 0);
}

#[test]
fn a_slow_call_policy_and_a_limit_together() {
    let clock = ManualClock::new(0);
    let config = Config::default()
        .consecutive_failures(false)
        .slow_call_duration(Duration::from_millis(100))
        .slow_call_rate_threshold(1.0)
        .minimum_calls(2)
        .sliding_window(SlidingWindow::Calls(2))
        .max_concurrent_calls(2);
    let breaker = CircuitBreaker::with_parts(config, &clock, Counters::default()).unwrap();
    let (a, b) = (breaker.admit().unwrap(), breaker.admit().unwrap());
    assert!(breaker.admit().unwrap_err().is_full());
    clock.advance(Duration::from_millis(100));
    a.success();
    b.success();
    assert_eq!(breaker.window_totals().unwrap().slow, 0, "2 slow calls trip a window of 2");
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.in_flight(), 0);
}

#[test]
fn the_local_count_saturates_at_zero() {
    let count = LocalInFlight::new();
    count.leave();
    count.leave();
    assert_eq!(count.in_flight(), 0);
    assert!(count.try_enter(1));
    assert!(!count.try_enter(1));
    count.leave();
    count.leave();
    assert_eq!(count.in_flight(), 0);
    assert!(count.try_enter(u32::MAX));
}

#[test]
fn the_default_store_counts_in_the_breaker() {
    assert!(LocalWord::default().shared_in_flight().is_none());
    let breaker =
        CircuitBreaker::with_parts(Config::default().max_concurrent_calls(3), DefaultClock::default(), Counters::default())
            .unwrap();
    let held: Vec<_> = (0..3).map(|_| breaker.admit().unwrap()).collect();
    assert_eq!(breaker.in_flight(), 3);
    drop(held);
    assert_eq!(breaker.in_flight(), 0);
}
