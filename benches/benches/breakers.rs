//! cb_core against its peers (failsafe, recloser; tower-resilience-circuitbreaker for the tower
//! middleware; tower's ConcurrencyLimit and tower-resilience-bulkhead for the limit on calls in
//! flight) and the physical floor, in one run.
//!
//! ```text
//! cargo bench -p benches --bench breakers
//! ```
//!
//! Every benchmark is one operation on one breaker; BENCHMARKS.md explains how to read them.

use std::future::ready;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cb_core::{
    BreakerLayer, BreakerService, CachedClock, CircuitBreaker, Clock, CoarseClock, Config, Counters, ErrIsFailure,
    Metrics, MonotonicClock, NoMetrics, RedisFleet, RedisOptions, RegionOptions, SharedRegion, SlidingWindow,
};
use benches::{poll_now, through, Answer};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use failsafe::{backoff, failure_policy, CircuitBreaker as _};
use tower_resilience_circuitbreaker::CircuitBreakerLayer as ResilienceLayer;
use tower_layer::Layer;

const LONG: Duration = Duration::from_secs(3_600);

fn cb<C: Clock, M: Metrics>(config: Config, clock: C, metrics: M) -> CircuitBreaker<C, M> {
    CircuitBreaker::with_parts(config, clock, metrics).unwrap()
}

fn tripped<C: Clock, M: Metrics>(recovery: Duration, clock: C, metrics: M) -> CircuitBreaker<C, M> {
    let b = cb(Config::default().failure_threshold(1).recovery_timeout(recovery), clock, metrics);
    let _ = b.call(|| Err::<(), ()>(()));
    b
}

fn failsafe_breaker(
    failures: u32,
    wait: Duration,
) -> failsafe::StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()> {
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(failures, backoff::constant(wait)))
        .build()
}

fn recloser_breaker(closed_len: usize, wait: Duration) -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(closed_len)
        .half_open_len(1)
        .open_wait(wait)
        .build()
}

/// Calls made on breakers that must not trip: `iters` calls timed in chunks of [`CHUNK`], each
/// on a fresh breaker from `make` (made outside the timed region).
const CHUNK: u64 = 100_000;

fn chunked<B>(iters: u64, make: impl Fn() -> B, call: impl Fn(&B)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let breaker = make();
        let start = Instant::now();
        for _ in 0..n {
            call(&breaker);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    let word = AtomicU64::new(0);
    g.bench_function("atomic_load_acquire", |b| b.iter(|| black_box(&word).load(Ordering::Acquire)));
    g.bench_function("clock/coarse (default)", |b| b.iter(|| CoarseClock.now()));
    g.bench_function("clock/monotonic", |b| b.iter(|| MonotonicClock.now()));
    g.bench_function("clock/std_instant_now", |b| b.iter(Instant::now));
    let cached = CachedClock::start(Duration::from_millis(1));
    g.bench_function("clock/cached", |b| b.iter(|| cached.now()));
    g.finish();
}

fn open_reject(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_reject");
    fn reject<C: Clock, M: Metrics>(b: &CircuitBreaker<C, M>) -> bool {
        black_box(b.call(|| Ok::<u64, ()>(1)).is_err())
    }

    let b = tripped(LONG, CoarseClock, NoMetrics);
    g.bench_function("cb_core/default_clock/no_counters", |i| i.iter(|| reject(&b)));
    let b = tripped(LONG, CoarseClock, Counters::default());
    g.bench_function("cb_core/default_clock/counters", |i| i.iter(|| reject(&b)));
    let b = tripped(LONG, MonotonicClock, NoMetrics);
    g.bench_function("cb_core/monotonic_clock/no_counters", |i| i.iter(|| reject(&b)));
    let b = tripped(LONG, CachedClock::start(Duration::from_millis(1)), NoMetrics);
    g.bench_function("cb_core/cached_clock/no_counters", |i| i.iter(|| reject(&b)));
    let b = tripped(LONG, CachedClock::start(Duration::from_millis(1)), Counters::default());
    g.bench_function("cb_core/cached_clock/counters", |i| i.iter(|| reject(&b)));

    let f = failsafe_breaker(1, LONG);
    let _ = f.call(|| Err::<(), ()>(()));
    assert!(!f.is_call_permitted());
    g.bench_function("failsafe", |i| i.iter(|| black_box(f.call(|| Ok::<u64, ()>(1)).is_err())));

    let r = recloser_breaker(1, LONG);
    let _ = r.call(|| Err::<(), ()>(()));
    let _ = r.call(|| Err::<(), ()>(()));
    assert!(matches!(r.call(|| Ok::<(), ()>(())), Err(recloser::Error::Rejected)));
    g.bench_function("recloser", |i| i.iter(|| black_box(r.call(|| Ok::<u64, ()>(1)).is_err())));
    g.finish();
}

fn closed_success(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_success");
    let ok = || Ok::<u64, ()>(black_box(1));
    let b = cb(Config::default(), CoarseClock, NoMetrics);
    g.bench_function("cb_core/no_counters", |i| i.iter(|| b.call(ok)));
    let b = cb(Config::default(), CoarseClock, Counters::default());
    g.bench_function("cb_core/counters", |i| i.iter(|| b.call(ok)));
    let f = failsafe_breaker(5, LONG);
    g.bench_function("failsafe", |i| i.iter(|| f.call(ok)));
    let r = recloser_breaker(100, LONG);
    g.bench_function("recloser", |i| i.iter(|| r.call(ok)));
    g.finish();
}

/// Failure-rate policies: cb_core's count- and time-based windows beside failsafe's
/// success-rate-over-time-window policy and recloser (whose only policy is a failure rate over
/// a ring buffer), on a CLOSED success and on a failure that is counted but trips nothing.
fn rate_policies(c: &mut Criterion) {
    const WINDOW: Duration = Duration::from_secs(10);
    let ok = || Ok::<u64, ()>(black_box(1));
    let rate = |window: SlidingWindow| Config::default().failure_rate_threshold(0.5).minimum_calls(100).sliding_window(window);
    let failsafe_rate = |required: f64, min: u32| {
        failsafe::Config::new()
            .failure_policy(failure_policy::success_rate_over_time_window(required, min, WINDOW, backoff::constant(LONG)))
            .build()
    };

    let mut g = c.benchmark_group("closed_success_rate_policy");
    let b = cb(rate(SlidingWindow::Calls(100)), CoarseClock, NoMetrics);
    g.bench_function("cb_core/count_window", |i| i.iter(|| b.call(ok)));
    let b = cb(rate(SlidingWindow::Time(WINDOW)), CoarseClock, NoMetrics);
    g.bench_function("cb_core/time_window", |i| i.iter(|| b.call(ok)));
    let b = cb(rate(SlidingWindow::Time(WINDOW)), CoarseClock, Counters::default());
    g.bench_function("cb_core/time_window/counters", |i| i.iter(|| b.call(ok)));
    let f = failsafe_rate(0.5, 100);
    g.bench_function("failsafe", |i| i.iter(|| f.call(ok)));
    let r = recloser_breaker(100, LONG);
    g.bench_function("recloser", |i| i.iter(|| r.call(ok)));
    g.finish();

    // Failures that never trip: a minimum number of calls no chunk reaches before its last
    // call (cb_core, failsafe) or a ring buffer longer than a chunk (recloser). Each is counted
    // in the window and the rate decided (cb_core: the current bucket plus the cached sums of
    // the closed ones). Like the peers, cb_core trips on the rate only here
    // (`consecutive_failures(false)`); `closed_failure_rate_and_consecutive` keeps both.
    let mut g = c.benchmark_group("closed_failure_rate_policy");
    let err = || Err::<u64, u64>(black_box(1));
    let never = Config::default()
        .consecutive_failures(false)
        .failure_rate_threshold(1.0)
        .minimum_calls(u64::from(u32::MAX))
        .sliding_window(SlidingWindow::Time(WINDOW));
    g.bench_function("cb_core/time_window", |i| {
        i.iter_custom(|n| chunked(n, || cb(never, CoarseClock, NoMetrics), |b| drop(black_box(b.call(err)))))
    });
    // The last 100,000 calls, in buckets of 6,250: every failure is counted with a
    // compare-and-set (a time bucket in this loop is full after its first 16,383 calls).
    let never_by_count = never.minimum_calls(100_000).sliding_window(SlidingWindow::Calls(100_000));
    let count_window = |i: &mut criterion::Bencher, config: Config| {
        i.iter_custom(|n| chunked(n, || cb(config, CoarseClock, NoMetrics), |b| drop(black_box(b.call(err)))))
    };
    g.bench_function("cb_core/count_window", |i| count_window(i, never_by_count));
    g.bench_function("failsafe", |i| {
        i.iter_custom(|n| chunked(n, || failsafe_rate(0.5, u32::MAX), |f| drop(black_box(f.call(err)))))
    });
    g.bench_function("recloser", |i| {
        i.iter_custom(|n| chunked(n, || recloser_breaker(2 * CHUNK as usize, LONG), |r| drop(black_box(r.call(err)))))
    });
    g.finish();

    // No peer keeps both policies: the same failure with the consecutive count kept too
    // (threshold out of reach), one compare-and-set on the word more.
    let mut g = c.benchmark_group("closed_failure_rate_and_consecutive");
    g.bench_function("cb_core/rates_only", |i| count_window(i, never_by_count));
    let both = never_by_count.consecutive_failures(true).failure_threshold(u64::from(u32::MAX));
    g.bench_function("cb_core/rates_and_consecutive", |i| count_window(i, both));
    g.finish();
}

/// Failures below the threshold: each sample gets fresh breakers (outside the timed region)
/// every CHUNK calls so none ever trips.
fn closed_failure(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_failure");
    let err = || Err::<u64, u64>(black_box(1));
    let config = Config::default().failure_threshold(u64::from(u32::MAX));
    g.bench_function("cb_core/no_counters", |i| {
        i.iter_custom(|n| chunked(n, || cb(config, CoarseClock, NoMetrics), |b| drop(black_box(b.call(err)))))
    });
    g.bench_function("cb_core/counters", |i| {
        i.iter_custom(|n| chunked(n, || cb(config, CoarseClock, Counters::default()), |b| drop(black_box(b.call(err)))))
    });
    // Failures (and transitions) stamped with the time: one clock read more per failure (no
    // peer records one).
    g.bench_function("cb_core/counters_with_times", |i| {
        i.iter_custom(|n| {
            chunked(n, || cb(config, CoarseClock, Counters::default().with_times()), |b| drop(black_box(b.call(err))))
        })
    });
    g.bench_function("failsafe", |i| {
        i.iter_custom(|n| chunked(n, || failsafe_breaker(u32::MAX, LONG), |b| drop(black_box(b.call(err)))))
    });
    // recloser trips on a failure rate once its ring buffer is full: make the buffer longer
    // than a chunk so every measured failure is below the threshold.
    g.bench_function("recloser", |i| {
        i.iter_custom(|n| chunked(n, || recloser_breaker(2 * CHUNK as usize, LONG), |b| drop(black_box(b.call(err)))))
    });
    g.finish();
}

/// One successful probe on a breaker that is HALF_OPEN (setup, untimed, trips it with a zero
/// recovery timeout).
fn half_open_success(c: &mut Criterion) {
    // Fresh breakers are made in batches of this many before the timed loop runs over them.
    // `BatchSize::SmallInput` made batches of up to a tenth of a sample (10^5 breakers and
    // more, hundreds of MB with counters): the row then measured DRAM misses on memory last
    // touched 10^5 breakers ago, not the probe path. 256 breakers (0.7 MB with counters) are
    // out of L1 and in L2 (2 MB per core here). With 1,024 (2.8 MB) this machine measured
    // counters 29.7 ns against failsafe's 41.7; with SmallInput 42.9 against 42.0.
    const HALF_OPEN_BATCH: u64 = 256;
    let mut g = c.benchmark_group("half_open_success");
    let ok = || Ok::<u64, ()>(black_box(1));
    g.bench_function("cb_core/no_counters", |i| {
        i.iter_batched_ref(|| tripped(Duration::ZERO, CoarseClock, NoMetrics), |b| b.call(ok), BatchSize::NumIterations(HALF_OPEN_BATCH))
    });
    g.bench_function("cb_core/counters", |i| {
        i.iter_batched_ref(|| tripped(Duration::ZERO, CoarseClock, Counters::default()), |b| b.call(ok), BatchSize::NumIterations(HALF_OPEN_BATCH))
    });
    // Transitions stamped with the time: one clock read more for the close (no peer records one).
    g.bench_function("cb_core/counters_with_times", |i| {
        i.iter_batched_ref(
            || tripped(Duration::ZERO, CoarseClock, Counters::default().with_times()),
            |b| b.call(ok),
            BatchSize::NumIterations(HALF_OPEN_BATCH),
        )
    });
    g.bench_function("failsafe", |i| {
        i.iter_batched_ref(
            || {
                let f = failsafe_breaker(1, Duration::ZERO);
                let _ = f.call(|| Err::<(), ()>(()));
                f
            },
            |f| f.call(ok),
            BatchSize::NumIterations(HALF_OPEN_BATCH),
        )
    });
    g.bench_function("recloser", |i| {
        i.iter_batched_ref(
            || {
                let r = recloser_breaker(1, Duration::ZERO);
                let _ = r.call(|| Err::<(), ()>(()));
                let _ = r.call(|| Err::<(), ()>(()));
                r
            },
            |r| r.call(ok),
            BatchSize::NumIterations(HALF_OPEN_BATCH),
        )
    });
    g.finish();
}

/// Two threads each calling `call` on one breaker `iters` times; per-thread time per call (the
/// mean of the two threads' elapsed times).
fn two_threads<B: Send + Sync + 'static>(iters: u64, breaker: Arc<B>, call: fn(&B)) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (b, barrier) = (Arc::clone(&breaker), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    call(&b);
                }
                start.elapsed()
            })
        })
        .collect();
    let times: Vec<Duration> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Per-thread time per call: the mean of the two threads' elapsed times.
    (times[0] + times[1]) / 2
}

/// Two threads hammering one breaker's closed path; reports per-thread time per call.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_closed_success_2_threads");
    let no_counters = Arc::new(cb(Config::default(), CoarseClock, NoMetrics));
    g.bench_function("cb_core/no_counters", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&no_counters), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    let counters = Arc::new(cb(Config::default(), CoarseClock, Counters::default()));
    g.bench_function("cb_core/counters", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&counters), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    let f = Arc::new(failsafe_breaker(5, LONG));
    g.bench_function("failsafe", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&f), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    let r = Arc::new(recloser_breaker(100, LONG));
    g.bench_function("recloser", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&r), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    g.finish();
}

/// The same breaker with its word and counters in a shared-memory slot (what every worker
/// process of a host attaches), beside the in-process one, on the three paths that matter:
/// rejecting while OPEN, a CLOSED success with counters, and two threads on the closed path.
fn shared_memory(c: &mut Criterion) {
    // Where regions live by default (/dev/shm: memory, no writeback), under a name of its own.
    let default = RegionOptions::default_path();
    let path = default.with_file_name(format!("cb-bench-{}", std::process::id()));
    let region = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap();
    let shared = |name: &str, config: Config| {
        let slot = region.attach(name, &config).unwrap();
        CircuitBreaker::with_store(config, CoarseClock, slot.counters(), slot.word()).unwrap()
    };
    let trip = Config::default().failure_threshold(1).recovery_timeout(LONG);
    // The Redis store: a redis-server of the bench's own on loopback; these two paths read the
    // host's mirror and never touch it.
    let server = benches::RedisServer::start();
    let fleet = server.as_ref().map(|s| RedisFleet::open(RedisOptions::new(s.url()).prefix(format!("bench{}:", std::process::id()))).unwrap());

    let mut g = c.benchmark_group("shared_open_reject");
    let local = cb(trip, CoarseClock, Counters::default());
    let _ = local.call(|| Err::<(), ()>(()));
    g.bench_function("in_process", |i| i.iter(|| black_box(local.call(|| Ok::<u64, ()>(1)).is_err())));
    let slot = shared("open", trip);
    let _ = slot.call(|| Err::<(), ()>(()));
    g.bench_function("shared", |i| i.iter(|| black_box(slot.call(|| Ok::<u64, ()>(1)).is_err())));
    if let Some(fleet) = &fleet {
        let redis = fleet.breaker("open", trip).unwrap();
        let _ = redis.call(|| Err::<(), ()>(()));
        g.bench_function("redis", |i| i.iter(|| black_box(redis.call(|| Ok::<u64, ()>(1)).is_err())));
    }
    g.finish();

    let mut g = c.benchmark_group("shared_closed_success_counters");
    let ok = || Ok::<u64, ()>(black_box(1));
    let local = cb(Config::default(), CoarseClock, Counters::default());
    g.bench_function("in_process", |i| i.iter(|| local.call(ok)));
    let slot = shared("closed", Config::default());
    g.bench_function("shared", |i| i.iter(|| slot.call(ok)));
    if let Some(fleet) = &fleet {
        let redis = fleet.breaker("closed", Config::default()).unwrap();
        g.bench_function("redis", |i| i.iter(|| redis.call(ok)));
    }
    g.finish();

    let mut g = c.benchmark_group("shared_contended_closed_success_2_threads");
    let local = Arc::new(cb(Config::default(), CoarseClock, Counters::default()));
    g.bench_function("in_process", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&local), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    let slot = Arc::new(shared("contended", Config::default()));
    g.bench_function("shared", |i| {
        i.iter_custom(|n| two_threads(n, Arc::clone(&slot), |b| drop(black_box(b.call(|| Ok::<u64, ()>(1))))))
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

/// The tower middleware path: cb_core's `BreakerLayer` against tower-resilience-circuitbreaker,
/// both counting consecutive failures over the same instant inner service, each request
/// `poll_ready` + `call` + the response future awaited. `cb_core` holds its breaker in an
/// `Arc` (a count up and down per admitted request), `cb_core/static` as `&'static` (none);
/// `no_breaker` is the inner service alone.
fn tower_layers(c: &mut Criterion) {
    let resilience = |failures: usize| {
        ResilienceLayer::builder().consecutive_failures(failures).wait_duration_in_open(LONG).build().unwrap()
    };

    let mut g = c.benchmark_group("tower_closed_success");
    let mut alone = Answer;
    g.bench_function("no_breaker", |i| i.iter(|| through(&mut alone, black_box(1))));
    let mut ours = tower_service_of(cb(Config::default(), CoarseClock, Counters::default()));
    g.bench_function("cb_core", |i| i.iter(|| through(&mut ours, black_box(1))));
    let mut ours = static_tower_service_of(cb(Config::default(), CoarseClock, Counters::default()));
    g.bench_function("cb_core/static", |i| i.iter(|| through(&mut ours, black_box(1))));
    let mut theirs = resilience(5).layer_fn(Answer);
    g.bench_function("tower-resilience", |i| i.iter(|| through(&mut theirs, black_box(1))));
    g.finish();

    let mut g = c.benchmark_group("tower_open_reject");
    let mut ours = tower_service_of(cb(Config::default().failure_threshold(1).recovery_timeout(LONG), CoarseClock, Counters::default()));
    assert_eq!(through(&mut ours, 0).unwrap_err().into_inner(), Some(0));
    assert!(through(&mut ours, 1).unwrap_err().is_rejected());
    g.bench_function("cb_core", |i| i.iter(|| black_box(through(&mut ours, black_box(1)).is_err())));
    let mut ours = static_tower_service_of(cb(Config::default().failure_threshold(1).recovery_timeout(LONG), CoarseClock, Counters::default()));
    assert_eq!(through(&mut ours, 0).unwrap_err().into_inner(), Some(0));
    g.bench_function("cb_core/static", |i| i.iter(|| black_box(through(&mut ours, black_box(1)).is_err())));
    let mut theirs = resilience(1).layer_fn(Answer);
    assert!(!through(&mut theirs, 0).unwrap_err().is_circuit_open());
    assert!(through(&mut theirs, 1).unwrap_err().is_circuit_open());
    g.bench_function("tower-resilience", |i| i.iter(|| black_box(through(&mut theirs, black_box(1)).is_err())));
    g.finish();
}

/// cb_core's service over [`Answer`], its breaker in an `Arc`.
fn tower_service_of<C: Clock, M: Metrics>(breaker: CircuitBreaker<C, M>) -> BreakerService<Answer, ErrIsFailure, Arc<CircuitBreaker<C, M>>> {
    BreakerLayer::new(Arc::new(breaker)).layer(Answer)
}

/// cb_core's service over [`Answer`], its breaker `&'static` (leaked: one per benchmark).
fn static_tower_service_of<C: Clock + 'static, M: Metrics + 'static>(
    breaker: CircuitBreaker<C, M>,
) -> BreakerService<Answer, ErrIsFailure, &'static CircuitBreaker<C, M>> {
    BreakerLayer::new(&*Box::leak(Box::new(breaker))).layer(Answer)
}

/// `max_concurrent_calls`: a CLOSED call that takes a place and gives it back, beside the same
/// call without a limit, and the tower middlewares that only limit: tower's
/// `ConcurrencyLimit` (a tokio semaphore, its permit taken in `poll_ready`) and
/// tower-resilience's bulkhead in its fail-fast mode (`reject_when_full`). Every tower row is
/// `poll_ready` + `call` + the response polled once, over the same instant inner service; the
/// limit is 8 and never reached (one call at a time), so each row is the cost of admitting and
/// releasing. `cb_core` rows keep the breaker's own work too (state, counters).
fn limit(c: &mut Criterion) {
    const MAX: u64 = 8;
    let mut g = c.benchmark_group("limit_closed_success");
    let ok = || Ok::<u64, ()>(black_box(1));
    let b = cb(Config::default(), CoarseClock, Counters::default());
    g.bench_function("cb_core/no_limit", |i| i.iter(|| b.call(ok)));
    let b = cb(Config::default().max_concurrent_calls(MAX), CoarseClock, Counters::default());
    g.bench_function("cb_core/limit", |i| i.iter(|| b.call(ok)));
    assert_eq!(b.in_flight(), 0);

    let mut alone = Answer;
    g.bench_function("tower/no_layer", |i| i.iter(|| through(&mut alone, black_box(1))));
    let mut ours = tower_service_of(cb(Config::default(), CoarseClock, Counters::default()));
    g.bench_function("tower/cb_core/no_limit", |i| i.iter(|| through(&mut ours, black_box(1))));
    let mut ours = tower_service_of(cb(Config::default().max_concurrent_calls(MAX), CoarseClock, Counters::default()));
    g.bench_function("tower/cb_core/limit", |i| i.iter(|| through(&mut ours, black_box(1))));
    assert_eq!(ours.breaker().in_flight(), 0);
    let mut ours = static_tower_service_of(cb(Config::default().max_concurrent_calls(MAX), CoarseClock, Counters::default()));
    g.bench_function("tower/cb_core/limit/static", |i| i.iter(|| through(&mut ours, black_box(1))));
    let mut theirs = tower::limit::ConcurrencyLimitLayer::new(MAX as usize).layer(Answer);
    g.bench_function("tower/ConcurrencyLimit", |i| i.iter(|| through(&mut theirs, black_box(1))));
    // The bulkhead's fail-fast admission is `tokio::time::timeout(ZERO, acquire)`: it needs a
    // runtime's timer in context (entered, not run: the acquire is ready at the first poll).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _context = runtime.enter();
    let bulkhead = tower_resilience_bulkhead::BulkheadLayer::builder().max_concurrent_calls(MAX as usize).reject_when_full().build().unwrap();
    let mut theirs = bulkhead.layer(Answer);
    assert_eq!(through(&mut theirs, 1).ok(), Some(1));
    g.bench_function("tower/tower-resilience-bulkhead", |i| i.iter(|| through(&mut theirs, black_box(1))));
    g.finish();
}

/// The plain future path, `breaker.run(ready(..))` polled once, beside the closure API `call`
/// on the same breaker.
fn futures(c: &mut Criterion) {
    let mut g = c.benchmark_group("future_closed_success");
    let b = cb(Config::default(), CoarseClock, Counters::default());
    g.bench_function("cb_core/call_sync", |i| i.iter(|| b.call(|| Ok::<u64, ()>(black_box(1)))));
    g.bench_function("cb_core/run", |i| i.iter(|| poll_now(b.run(ready(Ok::<u64, ()>(black_box(1)))))));
    g.finish();

    let mut g = c.benchmark_group("future_open_reject");
    let b = tripped(LONG, CoarseClock, Counters::default());
    g.bench_function("cb_core/call_sync", |i| i.iter(|| black_box(b.call(|| Ok::<u64, ()>(1)).is_err())));
    g.bench_function("cb_core/run", |i| i.iter(|| black_box(poll_now(b.run(ready(Ok::<u64, ()>(1)))).is_err())));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = floor, open_reject, closed_success, closed_failure, half_open_success, contended, rate_policies,
        shared_memory, tower_layers, futures, limit
}
criterion_main!(benches);
