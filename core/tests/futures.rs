//! Futures run under a breaker: without any runtime (a hand-rolled executor), and under a
//! multi-threaded tokio runtime with cancellation by `timeout`, `select!` and `abort`, and 64
//! tasks racing for the HALF_OPEN probe slots.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use cb_core::{CallError, CircuitBreaker, Config, Guarded, OwnedPermit, Outcome, Permit, State};

/// A waker that does nothing: the futures below are polled by hand.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn noop_waker() -> Waker {
    Arc::new(Noop).into()
}

/// Polls `future` once.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(&noop_waker()))
}

/// Polls `future` to completion on this thread, without a runtime (the futures here never
/// wait on anything but themselves).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = poll_once(future.as_mut()) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// A future that is pending the first `n` polls, then `Ok(())`.
struct PendingFor(u32);

impl Future for PendingFor {
    type Output = Result<(), &'static str>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 == 0 {
            return Poll::Ready(Ok(()));
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// HALF_OPEN on the next admission, with `limit` probe slots.
fn half_open(limit: u64) -> Arc<CircuitBreaker> {
    let config = Config::default()
        .failure_threshold(1)
        .recovery_timeout(Duration::ZERO)
        .half_open_max_calls(limit);
    let breaker = Arc::new(CircuitBreaker::new(config).unwrap().named("upstream"));
    let _ = breaker.call(|| Err::<(), _>("boom"));
    assert_eq!(breaker.state(), State::HalfOpen);
    breaker
}

#[test]
fn runs_outcomes_and_rejections_without_a_runtime() {
    let breaker = CircuitBreaker::new(Config::default().failure_threshold(2)).unwrap().named("upstream");
    assert_eq!(block_on(breaker.run(PendingFor(3))), Ok(()));
    assert_eq!(block_on(breaker.call_async(|| async { Err::<(), _>("refused") })), Err(CallError::Inner("refused")));
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(block_on(breaker.call_async(|| async { Err::<(), _>("refused") })).unwrap_err().into_inner(), Some("refused"));
    assert_eq!(breaker.state(), State::Open);

    // Rejected: the closure is never called, and the future is ready at the first poll.
    let called = AtomicBool::new(false);
    let mut rejected = pin!(breaker.call_async(|| {
        called.store(true, Ordering::SeqCst);
        async { Ok::<(), &str>(()) }
    }));
    let Poll::Ready(Err(err)) = poll_once(rejected.as_mut()) else { panic!("a rejection is ready at once") };
    assert!(!called.load(Ordering::SeqCst));
    assert!(err.is_rejected());
    assert_eq!(err.rejected().unwrap().breaker_name(), Some("upstream"));
    assert!(err.to_string().starts_with("circuit breaker 'upstream' is OPEN; next probe in"), "{err}");
    let totals = breaker.metrics().totals();
    assert_eq!((totals.successes, totals.failures, totals.rejections), (1, 2, 1));
}

#[test]
fn dropping_a_pending_probe_frees_its_slot() {
    let breaker = half_open(1);
    {
        let mut probe = pin!(breaker.run(PendingFor(u32::MAX)));
        assert!(probe.is_admitted());
        assert!(poll_once(probe.as_mut()).is_pending());
        assert!(breaker.admit().is_err(), "the one slot is the pending probe's");
    } // dropped mid-flight
    let next = breaker.admit().expect("the slot was freed");
    assert!(next.is_probe());
    assert_eq!(breaker.metrics().totals().ignored, 1);
    next.success();
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn a_completed_future_records_once() {
    let breaker = CircuitBreaker::new(Default::default()).unwrap();
    {
        let mut call = pin!(breaker.run(async { Ok::<_, ()>(1) }));
        assert_eq!(poll_once(call.as_mut()), Poll::Ready(Ok(1)));
    } // dropped after completing: nothing more to record
    let totals = breaker.metrics().totals();
    assert_eq!((totals.successes, totals.ignored), (1, 0));
}

#[test]
fn a_classifier_decides_what_counts() {
    let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap();
    let by_status = |r: &Result<u16, std::io::Error>| match r {
        Ok(status) if *status >= 500 => Outcome::Failure,
        Ok(status) if *status >= 400 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    for _ in 0..10 {
        assert_eq!(block_on(breaker.call_async_classified(by_status, || async { Ok(404) })).unwrap(), 404);
    }
    assert_eq!(breaker.state(), State::Closed, "4xx are the caller's: they never trip it");
    assert_eq!(breaker.metrics().totals().ignored, 10);
    assert_eq!(block_on(breaker.call_async_classified(by_status, || async { Ok(503) })).unwrap(), 503);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn permits_run_futures() {
    let breaker = Arc::new(CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap());
    let permit: Permit<'_> = breaker.admit().unwrap();
    assert_eq!(block_on(permit.run(async { Ok::<_, ()>(1) })), Ok(1));
    let owned: OwnedPermit = breaker.admit_owned().unwrap();
    assert_eq!(owned.generation(), 0);
    assert!(!owned.is_probe());
    assert_eq!(block_on(owned.run(async { Err::<(), _>("refused") })), Err(CallError::Inner("refused")));
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn owned_permits_and_their_futures_are_static_and_send() {
    fn static_send<T: Send + 'static>(_: &T) {}
    let breaker = Arc::new(CircuitBreaker::new(Default::default()).unwrap());
    let permit = breaker.admit_owned().unwrap();
    static_send(&permit);
    let call: Guarded<OwnedPermit, _> = permit.run(async { Ok::<_, ()>(()) });
    static_send(&call);
    // And they outlive every other handle on the breaker.
    let weak = Arc::downgrade(&breaker);
    drop(breaker);
    assert_eq!(block_on(call), Ok(()));
    assert!(weak.upgrade().is_none(), "the future held the last share and let it go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_cancels_an_in_flight_probe_and_frees_its_slot() {
    let breaker = half_open(1);
    let hung = tokio::time::timeout(
        Duration::from_millis(20),
        breaker.call_async(|| async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok::<(), std::io::Error>(())
        }),
    )
    .await;
    assert!(hung.is_err(), "the probe timed out");
    assert_eq!(breaker.metrics().totals().ignored, 1, "its permit was dropped, not leaked");
    // The next call is admitted, as a probe, and its success closes the breaker.
    let next = breaker.admit_owned().expect("the slot was freed");
    assert!(next.is_probe());
    assert_eq!(next.run(async { Ok::<_, ()>(()) }).await, Ok(()));
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_and_abort_release_probes() {
    let breaker = half_open(1);
    tokio::select! {
        _ = breaker.run(std::future::pending::<Result<(), ()>>()) => unreachable!("it never completes"),
        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
    }
    assert!(breaker.admit().unwrap().is_probe(), "select! dropped the losing probe");

    // A spawned task holding an owned probe, aborted.
    let probe = breaker.admit_owned().unwrap();
    assert!(breaker.admit().is_err());
    let task = tokio::spawn(probe.run(std::future::pending::<Result<(), ()>>()));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(breaker.admit().unwrap().is_probe(), "abort dropped the spawned probe");
    assert_eq!(breaker.metrics().totals().ignored, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_admits_exactly_the_probe_limit_among_64_tasks() {
    const TASKS: usize = 64;
    const LIMIT: u64 = 3;
    let breaker = half_open(LIMIT);
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let (release, released) = tokio::sync::watch::channel(false);
    let (admitted, attempted, running, peak) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (breaker, start, mut released) = (Arc::clone(&breaker), Arc::clone(&start), released.clone());
            let (admitted, attempted, running, peak) =
                (Arc::clone(&admitted), Arc::clone(&attempted), Arc::clone(&running), Arc::clone(&peak));
            tokio::spawn(async move {
                start.wait().await;
                let call = breaker.call_async(|| async {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Hold the probe until every task has tried.
                    let _ = released.wait_for(|go| *go).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), std::io::Error>(())
                });
                if call.is_admitted() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
                attempted.fetch_add(1, Ordering::SeqCst);
                call.await
            })
        })
        .collect();

    // Every task has asked, and every admitted probe is running: let them finish.
    let settled = async {
        while attempted.load(Ordering::SeqCst) < TASKS as u64
            || running.load(Ordering::SeqCst) < admitted.load(Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled).await.expect("every task asked");
    release.send(true).unwrap();

    let mut rejections = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => {}
            Err(err) => {
                let rejected = err.rejected().expect("only rejections fail");
                assert_eq!(rejected.state(), State::HalfOpen);
                assert_eq!(rejected.breaker_name(), Some("upstream"));
                rejections += 1;
            }
        }
    }
    assert_eq!(admitted.load(Ordering::SeqCst), LIMIT);
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT);
    assert_eq!(rejections, TASKS - LIMIT as usize);
    assert_eq!(breaker.state(), State::Closed, "the probes succeeded");
}

#[test]
fn a_guarded_future_holds_its_place_until_it_completes_or_is_dropped() {
    let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap();
    let mut running = pin!(breaker.run(PendingFor(3)));
    assert!(poll_once(running.as_mut()).is_pending());
    assert_eq!(breaker.in_flight(), 1);
    // Full: rejected at once, and the closure that would make the future is never called.
    let full = breaker.call_async(|| -> std::future::Ready<Result<(), &str>> { unreachable!("never made") });
    let rejected = block_on(full).unwrap_err();
    assert!(rejected.rejected().unwrap().is_full());
    assert_eq!(block_on(running), Ok(()));
    assert_eq!(breaker.in_flight(), 0, "completed: recorded and released");

    let pending = breaker.run(PendingFor(u32::MAX));
    assert_eq!(breaker.in_flight(), 1, "admission happens when the future is made");
    drop(pending); // never polled
    assert_eq!(breaker.in_flight(), 0);
    let shared = Arc::new(CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap());
    let owned = shared.admit_owned().unwrap().run(PendingFor(u32::MAX));
    assert_eq!(shared.in_flight(), 1);
    std::thread::spawn(move || drop(owned)).join().unwrap();
    assert_eq!(shared.in_flight(), 0);
    assert_eq!(breaker.metrics().totals().full_rejections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_and_aborted_calls_give_their_places_back() {
    let breaker = Arc::new(CircuitBreaker::new(Config::default().max_concurrent_calls(2)).unwrap());
    let hung = |b: &Arc<CircuitBreaker>| {
        b.admit_owned().unwrap().run(async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok::<(), ()>(())
        })
    };
    let timed_out = tokio::time::timeout(Duration::from_millis(10), hung(&breaker));
    let task = tokio::spawn(hung(&breaker));
    assert_eq!(breaker.in_flight(), 2);
    assert!(breaker.admit().unwrap_err().is_full());
    assert!(timed_out.await.is_err());
    assert_eq!(breaker.in_flight(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(breaker.in_flight(), 0);
    assert_eq!(breaker.metrics().totals().ignored, 2);
}
