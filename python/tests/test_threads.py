"""Many threads on one breaker: exact counts, one OPEN log line, one probe, no serialization."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List

import pytest

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerRegistry

THREADS = 16


def run_threads(n: int, target: Callable[[int], Any]) -> List[Any]:
    barrier = threading.Barrier(n)
    results: List[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = target(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_successes_from_many_threads_add_up_exactly() -> None:
    b = CircuitBreaker("threads_ok")

    def work(_: int) -> int:
        total = 0
        for _ in range(2_000):
            total += b.call(lambda: 1)
        return total

    assert sum(run_threads(THREADS, work)) == THREADS * 2_000
    assert b.get_status()["success_count"] == THREADS * 2_000


def test_concurrent_failures_open_once_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="circuit_breaker")
    b = CircuitBreaker("threads_fail", failure_threshold=10, recovery_timeout_seconds=60)
    failures = []
    rejections = []

    def work(_: int) -> None:
        for _ in range(50):
            try:
                b.call(lambda: 1 / 0)
            except ZeroDivisionError:
                failures.append(1)
            except CircuitBreakerOpenError:
                rejections.append(1)

    run_threads(THREADS, work)
    assert b.is_open()
    opens = [r for r in caplog.records if "transitioning to OPEN" in r.getMessage()]
    assert len(opens) == 1
    status = b.get_status()
    assert len(failures) == status["total_failures"] >= 10
    assert len(rejections) == status["total_rejections"]
    assert len(failures) + len(rejections) == THREADS * 50


def test_after_the_timeout_exactly_one_probe_runs() -> None:
    for _ in range(5):
        b = CircuitBreaker("threads_probe", failure_threshold=1, recovery_timeout_seconds=0.05)
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
        time.sleep(0.07)
        ran = []
        release = threading.Event()

        def slow_probe() -> str:
            ran.append(1)
            release.wait(5)
            return "ok"

        def work(i: int) -> str:
            try:
                return str(b.call(slow_probe))
            except CircuitBreakerOpenError:
                return "rejected"

        def let_go() -> None:
            time.sleep(0.2)
            release.set()

        threading.Thread(target=let_go).start()
        results = run_threads(THREADS, work)
        assert len(ran) == 1, f"{len(ran)} probes ran"
        assert sorted(results).count("ok") == 1
        assert b.is_closed()


def test_half_open_max_calls_probes_exactly() -> None:
    b = CircuitBreaker("threads_probes3", failure_threshold=1, recovery_timeout_seconds=0.05, half_open_max_calls=3, success_threshold=3)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    time.sleep(0.07)
    running = []
    release = threading.Event()

    def probe() -> None:
        running.append(1)
        release.wait(5)

    def work(_: int) -> bool:
        try:
            b.call(probe)
            return True
        except CircuitBreakerOpenError:
            return False

    threading.Timer(0.2, release.set).start()
    admitted = run_threads(THREADS, work)
    assert admitted.count(True) == 3 == len(running)
    assert b.is_closed()


def test_calls_through_one_breaker_run_in_parallel() -> None:
    b = CircuitBreaker("threads_parallel")
    start = time.perf_counter()
    run_threads(8, lambda _: b.call(time.sleep, 0.1))
    elapsed = time.perf_counter() - start
    # Serialized, this would take 0.8 s.
    assert elapsed < 0.4, f"{elapsed:.3f} s"


def test_registry_singleton_under_threads() -> None:
    saved = CircuitBreakerRegistry._instance
    try:
        CircuitBreakerRegistry._instance = None
        instances = run_threads(THREADS, lambda _: CircuitBreakerRegistry())
        assert all(r is instances[0] for r in instances)
    finally:
        CircuitBreakerRegistry._instance = saved


def test_registration_and_lookup_under_threads() -> None:
    registry = CircuitBreakerRegistry()

    def work(i: int) -> bool:
        name = f"threaded_{i}"
        breaker = CircuitBreaker(name)
        registry.register(name, breaker)
        return registry.get(name) is breaker and name in registry.get_all()

    assert all(run_threads(THREADS, work))
