//! Every interleaving (bounded by `LOOM_MAX_PREEMPTIONS`) of concurrent admissions, outcomes,
//! timeouts and resets keeps the breaker's invariants. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release
//! ```
#![cfg(loom)]

use std::time::Duration;

use cb_core::{CircuitBreaker, Config, ManualClock, NoMetrics, Outcome, State, Transition};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The test's handle on the clock, shared with the breaker through loom's `Arc`.
#[derive(Clone)]
struct SharedClock(Arc<ManualClock>);

impl cb_core::Clock for SharedClock {
    fn now(&self) -> u64 {
        cb_core::Clock::now(&*self.0)
    }
}

type Breaker = CircuitBreaker<SharedClock, NoMetrics>;

struct Setup {
    breaker: Arc<Breaker>,
    clock: Arc<ManualClock>,
    events: Arc<Mutex<Vec<Transition>>>,
}

fn setup(config: Config) -> Setup {
    let clock = Arc::new(ManualClock::new(1_000));
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    let breaker = CircuitBreaker::with_parts(config, SharedClock(Arc::clone(&clock)), NoMetrics)
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push(*t));
    Setup { breaker: Arc::new(breaker), clock, events }
}

fn count(events: &Mutex<Vec<Transition>>, from: State, to: State) -> usize {
    events.lock().unwrap().iter().filter(|t| t.from == from && t.to == to).count()
}

/// A breaker that is HALF_OPEN (stored) with no probe in flight.
fn half_open(config: Config) -> Setup {
    let s = setup(config.failure_threshold(1).recovery_timeout(Duration::from_millis(10)));
    s.breaker.admit().unwrap().failure();
    s.clock.advance(Duration::from_millis(10));
    assert_eq!(s.breaker.state(), State::HalfOpen);
    s.events.lock().unwrap().clear();
    s
}

#[test]
fn concurrent_failures_crossing_the_threshold_open_once() {
    loom::model(|| {
        let s = setup(Config::default().failure_threshold(2));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let b = Arc::clone(&s.breaker);
                thread::spawn(move || {
                    if let Ok(p) = b.admit() {
                        p.failure();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.breaker.snapshot().stored_state(), State::Open);
        assert_eq!(count(&s.events, State::Closed, State::Open), 1);
        assert_eq!(s.events.lock().unwrap().len(), 1);
    });
}

#[test]
fn half_open_never_admits_more_than_max_calls() {
    loom::model(|| {
        let s = half_open(Config::default().half_open_max_calls(2).success_threshold(3));
        let running = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (b, running) = (Arc::clone(&s.breaker), Arc::clone(&running));
                thread::spawn(move || {
                    if let Ok(p) = b.admit() {
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} probes at once");
                        running.fetch_sub(1, Ordering::SeqCst);
                        p.success();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.breaker.snapshot().in_flight(), 0);
    });
}

#[test]
fn success_and_failure_racing_in_half_open() {
    loom::model(|| {
        let s = half_open(Config::default().half_open_max_calls(2));
        let ka = s.breaker.admit().unwrap().into_ticket();
        let kb = s.breaker.admit().unwrap().into_ticket();
        assert_eq!(ka.generation(), kb.generation());
        let b1 = Arc::clone(&s.breaker);
        let b2 = Arc::clone(&s.breaker);
        let h1 = thread::spawn(move || b1.record(ka, Outcome::Success));
        let h2 = thread::spawn(move || b2.record(kb, Outcome::Failure));
        h1.join().unwrap();
        h2.join().unwrap();
        // Whichever came first decided; the other was stale. Exactly one transition.
        let events = s.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:?}");
        let stored = s.breaker.snapshot().stored_state();
        assert_eq!(stored, events[0].to);
        assert!(matches!(stored, State::Closed | State::Open));
    });
}

#[test]
fn a_stale_outcome_racing_a_transition_changes_nothing() {
    loom::model(|| {
        let s = setup(Config::default().failure_threshold(1).recovery_timeout(Duration::from_millis(10)));
        let slow = s.breaker.admit().unwrap().into_ticket(); // admitted in CLOSED
        let tripping = s.breaker.admit().unwrap().into_ticket();
        let b1 = Arc::clone(&s.breaker);
        let b2 = Arc::clone(&s.breaker);
        let h1 = thread::spawn(move || b1.record(tripping, Outcome::Failure));
        let h2 = thread::spawn(move || b2.record(slow, Outcome::Success));
        h1.join().unwrap();
        h2.join().unwrap();
        // The success either came first (a no-op in CLOSED with no failures) or was stale.
        assert_eq!(s.breaker.snapshot().stored_state(), State::Open);
        assert_eq!(s.events.lock().unwrap().len(), 1);
    });
}

#[test]
fn reset_racing_an_outcome() {
    loom::model(|| {
        let s = setup(Config::default().failure_threshold(2));
        s.breaker.admit().unwrap().failure();
        let pending = s.breaker.admit().unwrap().into_ticket();
        let b1 = Arc::clone(&s.breaker);
        let b2 = Arc::clone(&s.breaker);
        let h1 = thread::spawn(move || b1.reset());
        let h2 = thread::spawn(move || b2.record(pending, Outcome::Failure));
        h1.join().unwrap();
        h2.join().unwrap();
        // Either order ends CLOSED with nothing counted: reset wins last, or the failure is stale.
        let snap = s.breaker.snapshot();
        assert_eq!((snap.stored_state(), snap.failures()), (State::Closed, 0));
        let opened = count(&s.events, State::Closed, State::Open);
        let reset = count(&s.events, State::Open, State::Closed);
        assert_eq!(opened, reset, "an OPEN is always followed by the reset that closed it");
    });
}

#[test]
fn a_dropped_probe_permit_frees_its_slot() {
    loom::model(|| {
        let s = half_open(Config::default());
        let b1 = Arc::clone(&s.breaker);
        let b2 = Arc::clone(&s.breaker);
        let h1 = thread::spawn(move || drop(b1.admit()));
        let h2 = thread::spawn(move || b2.admit().map(|p| p.success()).is_ok());
        h1.join().unwrap();
        let second_probed = h2.join().unwrap();
        if second_probed {
            assert_eq!(s.breaker.snapshot().stored_state(), State::Closed);
        } else {
            // The dropped one held the slot when the other asked, and gave it back.
            assert_eq!(s.breaker.snapshot().in_flight(), 0);
            assert!(s.breaker.admit().is_ok());
        }
    });
}

#[test]
fn the_clock_advancing_on_its_own_thread() {
    loom::model(|| {
        let s = setup(Config::default().failure_threshold(1).recovery_timeout(Duration::from_millis(10)));
        s.breaker.admit().unwrap().failure();
        let clock = Arc::clone(&s.clock);
        let b = Arc::clone(&s.breaker);
        let ticker = thread::spawn(move || clock.advance(Duration::from_millis(10)));
        let caller = thread::spawn(move || b.admit().map(|p| p.is_probe()));
        ticker.join().unwrap();
        match caller.join().unwrap() {
            Ok(probe) => assert!(probe),
            Err(r) => assert_eq!(r.state(), State::Open),
        }
        // Whatever the order, the OPEN -> HALF_OPEN transition is announced exactly once.
        assert_eq!(s.breaker.state(), State::HalfOpen);
        assert_eq!(count(&s.events, State::Open, State::HalfOpen), 1);
    });
}

/// Whether the events form one chain: each starts where the one before ended.
fn one_chain(events: &[Transition], start: State) -> bool {
    let mut at = start;
    for t in events {
        if t.from != at {
            return false;
        }
        at = t.to;
    }
    true
}

#[test]
fn the_listener_hears_racing_transitions_in_the_order_they_happened() {
    loom::model(|| {
        // Zero recovery: a trip, a probe admission (OPEN -> HALF_OPEN) and a close can all race.
        let s = setup(Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO));
        let failing = Arc::clone(&s.breaker);
        let probing = Arc::clone(&s.breaker);
        let a = thread::spawn(move || {
            if let Ok(p) = failing.admit() {
                p.failure();
            }
        });
        let b = thread::spawn(move || {
            if let Ok(p) = probing.admit() {
                p.success();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        let events = s.events.lock().unwrap();
        assert!(one_chain(&events, State::Closed), "{events:?}");
        assert_eq!(events.last().map_or(State::Closed, |t| t.to), s.breaker.snapshot().stored_state(), "{events:?} vs {:?}", s.breaker.snapshot());
    });
}

#[test]
fn a_listener_that_resets_the_breaker_is_told_its_own_transition_after_returning() {
    loom::model(|| {
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&events);
        // The listener reaches its breaker through this cell, emptied at the end to break the
        // cycle (loom's Arc has no Weak).
        let me: Arc<Mutex<Option<Arc<Breaker>>>> = Arc::new(Mutex::new(None));
        let me_too = Arc::clone(&me);
        let breaker = Arc::new(
            CircuitBreaker::with_parts(Config::default().failure_threshold(1), SharedClock(Arc::new(ManualClock::new(0))), NoMetrics)
                .unwrap()
                .on_transition(move |t: &Transition| {
                    log.lock().unwrap().push(*t);
                    if t.to == State::Open {
                        // Re-entrant: the reset's own transition is queued, told after this returns.
                        let b = me_too.lock().unwrap().clone();
                        if let Some(b) = b {
                            b.reset();
                        }
                    }
                }),
        );
        *me.lock().unwrap() = Some(Arc::clone(&breaker));
        let other = Arc::clone(&breaker);
        let t = thread::spawn(move || {
            if let Ok(p) = other.admit() {
                p.failure();
            }
        });
        if let Ok(p) = breaker.admit() {
            p.failure();
        }
        t.join().unwrap();
        let events = events.lock().unwrap();
        assert!(one_chain(&events, State::Closed), "{events:?}");
        assert_eq!(events.last().unwrap().to, State::Closed);
        *me.lock().unwrap() = None;
    });
}

/// The failure-rate window: two threads record failures at a time slice that maps onto a
/// bucket still holding an older slice, so one of them rotates it while the other counts into
/// it. Whatever the interleaving: the old slice's call is gone, both failures are counted (no
/// lost or double count in the decision), and exactly one trip is made, by the thread whose
/// failure completed the window.
#[test]
fn rate_window_rotation_and_trip_under_concurrent_records() {
    loom::model(|| {
        // 16 ms window: 16 buckets of 1 ms; minimum 2 calls; every call must fail to trip.
        let config = cb_core::Config::default()
            .failure_threshold(100)
            .failure_rate_threshold(1.0)
            .minimum_calls(2)
            .sliding_window(cb_core::SlidingWindow::Time(Duration::from_millis(16)));
        let s = setup(config);
        s.breaker.admit().unwrap().success(); // slice t, bucket t % 16
        let tickets = [s.breaker.admit_ticket().unwrap(), s.breaker.admit_ticket().unwrap()];
        s.clock.advance(Duration::from_millis(16)); // same bucket, next slice: the success leaves
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = tickets
            .into_iter()
            .map(|ticket| {
                let (b, reasons) = (Arc::clone(&s.breaker), Arc::clone(&reasons));
                thread::spawn(move || {
                    if let Some(t) = b.record(ticket, Outcome::Failure) {
                        reasons.lock().unwrap().push(t.reason);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count(&s.events, State::Closed, State::Open), 1);
        assert_eq!(*reasons.lock().unwrap(), [cb_core::Reason::FailureRate { failures: 2, calls: 2 }]);
    });
}

/// `max_concurrent_calls` in CLOSED: three callers race for two places. No interleaving runs
/// more than two calls at once, a full caller is rejected as full (never by the state), and
/// every place comes back: by an outcome, and by a permit dropped without one.
#[test]
fn the_limit_on_calls_in_flight_holds_and_every_place_comes_back() {
    loom::model(|| {
        let s = setup(Config::default().failure_threshold(5).max_concurrent_calls(2));
        let running = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (b, running) = (Arc::clone(&s.breaker), Arc::clone(&running));
                thread::spawn(move || match b.admit() {
                    Ok(p) => {
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} calls at once");
                        running.fetch_sub(1, Ordering::SeqCst);
                        match i {
                            0 => p.success(),
                            1 => p.failure(),
                            _ => drop(p), // no outcome: the drop gives the place back
                        }
                    }
                    Err(r) => assert!(r.is_full() && r.state() == State::Closed, "{r}"),
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.breaker.in_flight(), 0);
        assert_eq!(s.breaker.snapshot().stored_state(), State::Closed);
    });
}

/// The limit and the HALF_OPEN probe limit at once: one probe slot, one place, and the place
/// held by a slow call admitted in CLOSED before the breaker tripped. Two callers race for the
/// probe while the slow call finishes (stale). Whatever the order: never more than one call
/// runs, a probe refused for want of a place gives its probe slot back (no slot is lost), and
/// every place comes back.
#[test]
fn the_limit_and_the_probe_limit_together_lose_nothing() {
    loom::model(|| {
        let s = setup(
            Config::default()
                .failure_threshold(1)
                .recovery_timeout(Duration::from_millis(10))
                .success_threshold(2)
                .max_concurrent_calls(2),
        );
        let slow = s.breaker.admit().unwrap().into_ticket(); // CLOSED, holds a place
        s.breaker.admit().unwrap().failure(); // OPEN; its place is back
        // One probe slot and, with the slow call holding a place, one place free. A probe's
        // outcome frees its slot before its place, so a second prober can find a slot and no
        // place: the path that gives the slot back.
        s.clock.advance(Duration::from_millis(10));
        assert_eq!(s.breaker.state(), State::HalfOpen);
        assert_eq!(s.breaker.in_flight(), 1);
        let running = Arc::new(AtomicUsize::new(1)); // the slow call
        let probers: Vec<_> = (0..2)
            .map(|i| {
                let (b, running) = (Arc::clone(&s.breaker), Arc::clone(&running));
                thread::spawn(move || match b.admit() {
                    Ok(p) => {
                        assert!(p.is_probe());
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} calls at once");
                        running.fetch_sub(1, Ordering::SeqCst);
                        if i == 0 {
                            p.success()
                        } else {
                            drop(p)
                        }
                    }
                    Err(r) => assert_eq!(r.state(), State::HalfOpen, "{r}"),
                })
            })
            .collect();
        let b = Arc::clone(&s.breaker);
        let finisher = thread::spawn(move || {
            running.fetch_sub(1, Ordering::SeqCst);
            b.record(slow, Outcome::Success) // stale: admitted before the trip
        });
        probers.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(finisher.join().unwrap(), None);
        assert_eq!(s.breaker.in_flight(), 0, "every place came back");
        let snap = s.breaker.snapshot();
        assert_eq!(snap.stored_state(), State::HalfOpen, "{snap:?}");
        assert_eq!(snap.in_flight(), 0, "every probe slot came back: {snap:?}");
    });
}
