"""Failure-rate and slow-call trip policies, and timeouts of coroutine calls: the issue's
done-when scenarios, argument errors, reports (status, metrics, Prometheus), and that the
consecutive-failure breaker of the documented module is unchanged by them."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import List

import pytest

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerRegistry, CircuitBreakerState


class Down(Exception):
    pass


def run_mix(breaker: CircuitBreaker, pattern: List[bool], calls: int) -> int:
    """Calls through `breaker` failing per `pattern` (cycled); returns calls made before a rejection."""

    def call(fail: bool) -> int:
        if fail:
            raise Down()
        return 1

    for i, fail in enumerate(itertools.islice(itertools.cycle(pattern), calls)):
        try:
            breaker.call(call, fail)
        except Down:
            pass
        except CircuitBreakerOpenError:
            return i
    return calls


def test_a_60_percent_mix_trips_and_a_40_percent_mix_does_not() -> None:
    # Failures at most 2 in a row: the consecutive threshold (5) never trips either.
    sixty = CircuitBreaker("sixty", failure_rate_threshold=0.5, minimum_calls=10, window_calls=20)
    made = run_mix(sixty, [True, True, False, True, False], 100)
    assert sixty.get_state() is CircuitBreakerState.OPEN and 10 <= made <= 20
    status = sixty.get_status()
    assert status["state"] == "OPEN" and status["calls_in_window"] == 0, "an open breaker's window is empty"

    forty = CircuitBreaker("forty", failure_rate_threshold=0.5, minimum_calls=10, window_calls=20)
    assert run_mix(forty, [True, False, True, False, False], 1_000) == 1_000
    assert forty.get_state() is CircuitBreakerState.CLOSED
    s = forty.get_status()
    assert s["calls_in_window"] is not None and 19 <= s["calls_in_window"] <= 20
    assert s["failure_rate"] is not None and 0.3 <= s["failure_rate"] <= 0.45


def test_no_trip_before_minimum_calls() -> None:
    b = CircuitBreaker("minimum", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=10, window_calls=50)
    assert run_mix(b, [True], 9) == 9
    assert b.get_state() is CircuitBreakerState.CLOSED and b.get_status()["failure_rate"] == 1.0
    with pytest.raises(Down):
        b.call(lambda: (_ for _ in ()).throw(Down()))
    assert b.get_state() is CircuitBreakerState.OPEN


def test_slow_successes_trip_the_slow_call_policy(caplog: pytest.LogCaptureFixture) -> None:
    b = CircuitBreaker("slow", slow_call_seconds=0.02, slow_call_rate_threshold=0.5, minimum_calls=4, window_calls=10)
    for _ in range(3):
        assert b.call(time.sleep, 0.03) is None
    assert b.get_state() is CircuitBreakerState.CLOSED, "3 calls: below minimum_calls"
    assert b.get_status()["slow_call_rate"] == 1.0
    b.call(time.sleep, 0.03)
    assert b.get_state() is CircuitBreakerState.OPEN
    assert b.get_metrics()["total_failures"] == 0, "slow calls succeeded"
    assert any("slow-call rate 100% (4 of the last 4 calls)" in r.getMessage() for r in caplog.records)
    fast = CircuitBreaker("fast", slow_call_seconds=0.5, minimum_calls=2, window_calls=10)
    for _ in range(20):
        fast.call(lambda: None)
    assert fast.get_state() is CircuitBreakerState.CLOSED and fast.get_status()["slow_call_rate"] == 0.0


def test_a_time_window_forgets_old_calls() -> None:
    b = CircuitBreaker("timed", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=3, window_seconds=0.2)
    run_mix(b, [True, True], 2)
    assert b.get_status()["calls_in_window"] == 2
    time.sleep(0.3)
    assert b.get_status()["calls_in_window"] == 0
    run_mix(b, [True, False], 2)
    assert b.get_state() is CircuitBreakerState.CLOSED, "the old failures left the window"


def test_a_coroutine_past_timeout_seconds_raises_timeout_error_and_counts_as_failure() -> None:
    b = CircuitBreaker("timeout", failure_threshold=2, recovery_timeout_seconds=60, timeout_seconds=0.05)
    cancelled = []

    async def hangs() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    @b
    async def decorated() -> str:
        return await hangs()

    async def main() -> None:
        started = time.perf_counter()
        with pytest.raises(TimeoutError, match="timeout_seconds=0.05"):
            await b.call_async(hangs)
        assert time.perf_counter() - started < 1
        with pytest.raises(TimeoutError):
            await decorated()
        with pytest.raises(CircuitBreakerOpenError):
            await b.call(hangs)

    asyncio.run(main())
    assert cancelled == [True, True], "the slow call was cancelled, not left running"
    assert b.get_metrics()["total_failures"] == 2 and b.get_state() is CircuitBreakerState.OPEN


def test_a_timed_out_probe_releases_its_slot() -> None:
    b = CircuitBreaker("probe timeout", failure_threshold=1, recovery_timeout_seconds=0.05, timeout_seconds=0.05)

    async def hangs() -> None:
        await asyncio.sleep(10)

    async def ok() -> str:
        return "ok"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await b.call(hangs)  # trips it
        await asyncio.sleep(0.08)
        with pytest.raises(TimeoutError):
            await b.call(hangs)  # the probe times out: a failure, back to OPEN
        await asyncio.sleep(0.08)
        assert await b.call(ok) == "ok"  # the slot was released: the next probe runs

    asyncio.run(main())
    assert b.get_state() is CircuitBreakerState.CLOSED


def test_failure_threshold_none_leaves_tripping_to_the_rates() -> None:
    # resilience4j's model: no consecutive count, only the rate over the window.
    breaker = CircuitBreaker("rates only", None, 30, failure_rate_threshold=0.5, minimum_calls=20, window_calls=20)
    assert breaker.failure_threshold is None
    assert run_mix(breaker, [True], 19) == 19, "19 failures in a row: fewer than minimum_calls, no trip"
    status = breaker.get_status()
    assert (status["state"], status["failure_threshold"], status["failure_count"]) == ("CLOSED", None, 0)
    assert status["calls_in_window"] == 19 and status["failure_rate"] == 1.0
    assert run_mix(breaker, [True], 5) == 1, "the 20th failure reaches minimum_calls at a rate of 1.0"
    status = breaker.get_status()
    assert (status["state"], status["failure_count"]) == ("OPEN", 0)
    assert "failure_threshold=None" in repr(breaker)
    # The same settings with the default consecutive count trip at 5 failures in a row.
    counted = CircuitBreaker("counted", failure_rate_threshold=0.5, minimum_calls=20, window_calls=20)
    assert run_mix(counted, [True], 19) == 5
    registry = CircuitBreakerRegistry()
    made = registry.get_or_create("rates only via registry", failure_threshold=None, failure_rate_threshold=0.5)
    assert made.failure_threshold is None
    assert registry.get_or_create("rates only via registry", failure_threshold=None) is made


def test_bad_values_are_clear_errors() -> None:
    cases = [
        (dict(failure_rate_threshold=0), ValueError, "failure_rate_threshold must be a fraction in \\(0, 1\\], got 0"),
        (dict(failure_rate_threshold=1.5), ValueError, "failure_rate_threshold must be a fraction"),
        (dict(failure_rate_threshold=float("nan")), ValueError, "failure_rate_threshold"),
        (dict(failure_rate_threshold="half"), TypeError, "failure_rate_threshold must be a float"),
        (dict(failure_rate_threshold=True), TypeError, "failure_rate_threshold must be a float"),
        (dict(slow_call_rate_threshold=0.5), ValueError, "slow_call_rate_threshold needs slow_call_seconds"),
        (dict(slow_call_seconds=0), ValueError, "slow_call_seconds must be in"),
        (dict(slow_call_seconds=-1), ValueError, "slow_call_seconds"),
        (dict(failure_rate_threshold=0.5, window_calls=10, window_seconds=1), ValueError, "not both"),
        (dict(failure_rate_threshold=0.5, window_calls=0), ValueError, "window_calls must be in 1..=100000, got 0"),
        (dict(failure_rate_threshold=0.5, window_seconds=0), ValueError, "window_seconds must be in"),
        (dict(failure_rate_threshold=0.5, window_seconds=7200), ValueError, "window_seconds must be in"),
        (dict(failure_rate_threshold=0.5, minimum_calls=30, window_calls=20), ValueError, "minimum_calls must be in 1..=20, got 30"),
        (dict(minimum_calls=10), ValueError, "set failure_rate_threshold or slow_call_seconds"),
        (dict(timeout_seconds=0), ValueError, "timeout_seconds must be greater than 0"),
        (dict(failure_threshold=None), ValueError, "failure_threshold=None .* needs a rate policy"),
        (dict(failure_threshold=None, minimum_calls=5), ValueError, "needs a rate policy: failure_rate_threshold or slow_call_seconds"),
        (dict(timeout_seconds="1"), TypeError, "timeout_seconds must be an int or a float"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            CircuitBreaker("bad", **kwargs)  # type: ignore[arg-type]


def test_defaults_and_getters() -> None:
    plain = CircuitBreaker("plain")
    assert (plain.failure_rate_threshold, plain.minimum_calls, plain.window_calls, plain.timeout_seconds) == (None, None, None, None)
    s = plain.get_status()
    assert (s["failure_rate"], s["slow_call_rate"], s["calls_in_window"]) == (None, None, None)
    small = CircuitBreaker("small", failure_rate_threshold=0.5, window_calls=20)
    assert small.minimum_calls == 20, "left out, minimum_calls is 100 or the whole window if smaller"
    timed = CircuitBreaker("timed", failure_rate_threshold=0.25, window_seconds=0.5, slow_call_seconds=2)
    assert (timed.window_seconds, timed.window_calls, timed.minimum_calls) == (0.5, None, 100)
    assert (timed.slow_call_seconds, timed.slow_call_rate_threshold) == (2.0, 1.0)
    registry = CircuitBreakerRegistry()
    made = registry.get_or_create("via registry", failure_rate_threshold=0.5, window_calls=10)
    assert made.failure_rate_threshold == 0.5


def test_prometheus_reports_the_window() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from circuit_breaker.prometheus import register_metrics

    breakers = CircuitBreakerRegistry()
    b = CircuitBreaker("prom_rate", failure_threshold=100, failure_rate_threshold=0.9, minimum_calls=10, window_calls=10)
    breakers.register("prom_rate", b)
    run_mix(b, [True, False, False, False], 8)
    prom = CollectorRegistry()
    register_metrics(breakers, prom)
    text = generate_latest(prom).decode()
    assert 'circuit_breaker_window_calls{name="prom_rate"} 8.0' in text
    assert 'circuit_breaker_failure_rate{name="prom_rate"} 0.25' in text
    assert "circuit_breaker_slow_call_rate{" not in text
    breakers.unregister("prom_rate")
