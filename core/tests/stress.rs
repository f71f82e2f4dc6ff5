//! Real threads on every core, hammering one breaker: no over-admission, one event per
//! transition, and counters that add up exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use cb_core::{CircuitBreaker, Config, MonotonicClock, Outcome, State, Transition};

const THREADS: usize = 8;

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn concurrent_failures_open_exactly_once() {
    for _round in 0..20 {
        let events = Arc::new(Mutex::new(Vec::<Transition>::new()));
        let log = Arc::clone(&events);
        let breaker = Arc::new(
            CircuitBreaker::new(Config::default().failure_threshold(50).recovery_timeout(Duration::from_secs(600)))
                .unwrap()
                .on_transition(move |t| log.lock().unwrap().push(*t)),
        );
        let start = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (b, start) = (Arc::clone(&breaker), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..100 {
                        let _ = b.call(|| Err::<(), _>(()));
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(breaker.state(), State::Open);
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(breaker.metrics().totals().opened, 1);
        let t = breaker.metrics().totals();
        assert_eq!(t.failures + t.rejections, (THREADS * 100) as u64);
        assert!(t.failures >= 50);
    }
}

#[test]
fn half_open_never_admits_more_than_max_calls_and_counters_add_up() {
    const MAX_CALLS: u64 = 3;
    const RUN_FOR: Duration = Duration::from_millis(400);
    let events = Arc::new(Mutex::new(Vec::<Transition>::new()));
    let log = Arc::clone(&events);
    let breaker = Arc::new(
        CircuitBreaker::with_parts(
            Config::default()
                .failure_threshold(3)
                .recovery_timeout(Duration::ZERO)
                .half_open_max_calls(MAX_CALLS)
                .success_threshold(2),
            MonotonicClock,
            cb_core::Counters::default(),
        )
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push(*t)),
    );
    // Probes running now, per generation: the limit holds per round of probes.
    let probes_now: Arc<Vec<AtomicU64>> = Arc::new((0..1 << 15).map(|_| AtomicU64::new(0)).collect());
    let max_seen = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|i| {
            let (b, probes_now, max_seen, attempts, start) = (
                Arc::clone(&breaker),
                Arc::clone(&probes_now),
                Arc::clone(&max_seen),
                Arc::clone(&attempts),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (i + 1);
                start.wait();
                let began = std::time::Instant::now();
                while began.elapsed() < RUN_FOR {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let Ok(permit) = b.admit() else { continue };
                    let probe = permit.is_probe();
                    if probe {
                        let round = &probes_now[permit.generation() as usize];
                        let n = round.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(n, Ordering::SeqCst);
                        thread::yield_now();
                        round.fetch_sub(1, Ordering::SeqCst);
                    }
                    // Mostly failing, so the breaker keeps cycling through every state.
                    match xorshift(&mut seed) % 10 {
                        0..=5 => permit.failure(),
                        6..=8 => permit.success(),
                        _ => drop(permit),
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let max = max_seen.load(Ordering::SeqCst);
    assert!(max <= MAX_CALLS, "saw {max} probes at once");
    assert!(max >= 1, "the run never reached HALF_OPEN, so it proved nothing");
    let t = breaker.metrics().totals();
    assert_eq!(t.successes + t.failures + t.ignored + t.rejections, attempts.load(Ordering::Relaxed));
    // The listener hears transitions in the order they happened, even when they race: one
    // unbroken chain, each transition once.
    let events = events.lock().unwrap();
    assert!(events.len() > 100, "only {} transitions", events.len());
    let breaks = events.windows(2).filter(|w| w[0].to != w[1].from).count();
    assert_eq!(breaks, 0, "the chain of {} events breaks {breaks} times", events.len());
    assert_eq!(events.first().unwrap().from, State::Closed);
    assert_eq!(events.last().unwrap().to, breaker.snapshot().stored_state());
    let opens = events.iter().filter(|e| e.to == State::Open).count() as u64;
    assert_eq!(opens, t.opened);
    let into_half_open = events.iter().filter(|e| e.to == State::HalfOpen).count();
    let out_of_half_open = events.iter().filter(|e| e.from == State::HalfOpen).count();
    // Every HALF_OPEN entered was left, except possibly the current one.
    let current = usize::from(breaker.snapshot().stored_state() == State::HalfOpen);
    assert_eq!(into_half_open, out_of_half_open + current);
}

#[test]
fn closed_path_under_contention_keeps_exact_totals() {
    let breaker = Arc::new(CircuitBreaker::new(Config::default()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let b = Arc::clone(&breaker);
            thread::spawn(move || {
                for _ in 0..100_000 {
                    b.admit().unwrap().record(Outcome::Success);
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(breaker.metrics().totals().successes, THREADS as u64 * 100_000);
    assert_eq!(breaker.snapshot(), cb_core::Snapshot::default(), "no write to the word");
}

#[test]
fn the_limit_on_calls_in_flight_holds_under_contention_and_every_place_comes_back() {
    const LIMIT: u64 = 3;
    const RUN_FOR: Duration = Duration::from_millis(400);
    // Failing often enough to cycle through every state: the limit holds in CLOSED and in
    // HALF_OPEN (with its own probe limit) alike.
    let config = Config::default()
        .failure_threshold(2)
        .recovery_timeout(Duration::ZERO)
        .half_open_max_calls(2)
        .success_threshold(2)
        .max_concurrent_calls(LIMIT);
    let breaker = Arc::new(CircuitBreaker::with_parts(config, MonotonicClock, cb_core::Counters::default()).unwrap());
    let running = Arc::new(AtomicU64::new(0));
    let max_seen = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|i| {
            let (b, running, max_seen, attempts, start) =
                (Arc::clone(&breaker), Arc::clone(&running), Arc::clone(&max_seen), Arc::clone(&attempts), Arc::clone(&start));
            thread::spawn(move || {
                let mut seed = 0x2545_F491_4F6C_DD1D ^ (i + 1);
                start.wait();
                let began = std::time::Instant::now();
                while began.elapsed() < RUN_FOR {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let permit = match b.admit() {
                        Ok(permit) => permit,
                        Err(rejected) => {
                            assert!(!rejected.is_full() || rejected.limit() == Some(LIMIT as u32));
                            continue;
                        }
                    };
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max_seen.fetch_max(now, Ordering::SeqCst);
                    thread::yield_now();
                    running.fetch_sub(1, Ordering::SeqCst);
                    match xorshift(&mut seed) % 10 {
                        0..=3 => permit.failure(),
                        4..=7 => permit.success(),
                        8 => permit.ignore(),
                        _ => drop(permit),
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let max = max_seen.load(Ordering::SeqCst);
    assert!(max <= LIMIT, "saw {max} calls at once");
    assert_eq!(max, LIMIT, "the run never filled the limit, so it proved nothing");
    assert_eq!(breaker.in_flight(), 0, "every place came back");
    let t = breaker.metrics().totals();
    assert!(t.full_rejections > 0);
    assert!(t.opened > 0, "the run never left CLOSED");
    assert_eq!(t.requests(), attempts.load(Ordering::Relaxed));
}
