"""What counts as failure, fallbacks, and the open error's last failure."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, List, Optional

import pytest

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, circuit_breaker


class Timeout(Exception):
    pass


class NotFound(Exception):
    pass


def raises(exc: BaseException) -> Any:
    def f(*_: Any, **__: Any) -> None:
        raise exc

    return f


# --- expected_exceptions / exclude ---------------------------------------------------------


def test_expected_exceptions_only_those_count() -> None:
    b = CircuitBreaker("expected", failure_threshold=1, expected_exceptions=(Timeout, ConnectionError))
    error = NotFound("404")
    with pytest.raises(NotFound) as info:
        b.call(raises(error))
    assert info.value is error, "propagates unchanged"
    assert b.is_closed() and b.get_metrics()["total_ignored"] == 1
    with pytest.raises(ConnectionResetError):  # a subclass of ConnectionError counts
        b.call(raises(ConnectionResetError()))
    assert b.is_open()


def test_a_single_expected_type_and_uncounted_errors_free_the_probe_slot() -> None:
    b = CircuitBreaker("expected_one", failure_threshold=1, recovery_timeout_seconds=0.05, expected_exceptions=Timeout)
    with pytest.raises(Timeout):
        b.call(raises(Timeout()))
    time.sleep(0.07)
    with pytest.raises(NotFound):
        b.call(raises(NotFound()))
    assert b.is_half_open()
    b.call(lambda: None)
    assert b.is_closed()


def test_exclude_types_and_predicates() -> None:
    b = CircuitBreaker(
        "exclude",
        failure_threshold=1,
        exclude=[NotFound, lambda e: isinstance(e, ValueError) and "client" in str(e)],
    )
    with pytest.raises(NotFound):
        b.call(raises(NotFound()))
    with pytest.raises(ValueError):
        b.call(raises(ValueError("client error")))
    assert b.is_closed()
    with pytest.raises(ValueError):
        b.call(raises(ValueError("server error")))
    assert b.is_open()


def test_a_raising_classifier_is_logged_and_counts_as_failure(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: BaseException) -> bool:
        raise RuntimeError("classifier bug")

    b = CircuitBreaker("broken_classifier", failure_threshold=1, exclude=[broken])
    original = Timeout()
    with caplog.at_level(logging.ERROR, logger="circuit_breaker"):
        with pytest.raises(Timeout) as info:
            b.call(raises(original))
    assert info.value is original
    assert b.is_open()
    record = next(r for r in caplog.records if "exclude predicate" in r.getMessage())
    assert record.exc_info is not None and "classifier bug" in str(record.exc_info[1])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"expected_exceptions": ()}, ValueError),
        ({"expected_exceptions": int}, TypeError),
        ({"expected_exceptions": (Timeout, "x")}, TypeError),
        ({"exclude": 5}, TypeError),
        ({"exclude": ["not callable"]}, TypeError),
        ({"failure_predicate": 3}, TypeError),
        ({"fallback": "x"}, TypeError),
        ({"fallback_on_failure": True}, ValueError),
        ({"fallback": print, "fallback_on_failure": 1}, TypeError),
    ],
)
def test_bad_policy_arguments(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        CircuitBreaker("bad", **kwargs)


# --- failure_predicate ---------------------------------------------------------------------


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


def test_failure_predicate_counts_error_values_and_returns_them() -> None:
    b = CircuitBreaker("predicate", failure_threshold=2, failure_predicate=lambda r: r.status >= 500)
    ok, bad = Response(200), Response(503)
    assert b.call(lambda: ok) is ok
    assert b.call(lambda: bad) is bad
    assert b.get_status()["failure_count"] == 1
    assert b.call(lambda: bad) is bad
    assert b.is_open()
    assert b.last_failure is None, "no exception opened it"


def test_failure_predicate_applies_to_coroutines() -> None:
    b = CircuitBreaker("predicate_async", failure_threshold=1, failure_predicate=lambda r: r.status >= 500)

    async def fetch() -> Response:
        return Response(502)

    assert asyncio.run(b.call(fetch)).status == 502
    assert b.is_open()


# --- fallbacks -----------------------------------------------------------------------------


def test_fallback_replaces_the_open_error() -> None:
    seen: List[Optional[BaseException]] = []

    def cached(symbol: str, *, source: str = "cache") -> str:
        seen.append(sys.exc_info()[1])
        return f"{symbol} from {source}"

    b = CircuitBreaker("fallback", failure_threshold=1, recovery_timeout_seconds=60, fallback=cached)
    with pytest.raises(Timeout):
        b.call(raises(Timeout()))
    ran = []
    assert b.call(lambda s, source: ran.append(s), "AAPL", source="x") == "AAPL from x"
    assert ran == []
    assert isinstance(seen[0], CircuitBreakerOpenError)
    assert b.get_metrics()["total_rejections"] == 1


def test_a_failing_fallback_chains_to_the_open_error() -> None:
    b = CircuitBreaker("fallback_fails", failure_threshold=1, fallback=raises(KeyError("no cache")))
    with pytest.raises(Timeout):
        b.call(raises(Timeout()))
    with pytest.raises(KeyError) as info:
        b.call(lambda: None)
    assert isinstance(info.value.__context__, CircuitBreakerOpenError)


def test_fallback_on_failure_sees_the_original_exception() -> None:
    seen: List[Optional[BaseException]] = []

    def fallback(x: int) -> int:
        seen.append(sys.exc_info()[1])
        return -x

    b = CircuitBreaker("on_failure", failure_threshold=5, fallback=fallback, fallback_on_failure=True, exclude=[NotFound])
    original = Timeout("slow")
    assert b.call(raises(original), 7) == -7
    assert seen == [original]
    assert b.get_status()["failure_count"] == 1, "still counted"
    with pytest.raises(NotFound):  # not a failure: no fallback
        b.call(raises(NotFound()), 1)
    assert b.call(lambda x: x, 3) == 3


def test_fallbacks_in_async_code() -> None:
    async def fallback(x: int) -> str:
        await asyncio.sleep(0)
        return f"fallback {x}"

    b = CircuitBreaker("async_fallback", failure_threshold=1, fallback=fallback, fallback_on_failure=True)

    async def fail(x: int) -> str:
        raise Timeout()

    async def main() -> None:
        assert await b.call(fail, 1) == "fallback 1"
        assert b.is_open()
        assert await b.call(fail, 2) == "fallback 2"  # rejected: the fallback's coroutine
        assert await b.call_async(fail, 3) == "fallback 3"

    asyncio.run(main())


def test_decorator_factory_takes_a_fallback() -> None:
    @circuit_breaker(failure_threshold=1, fallback=lambda symbol: f"cached {symbol}")
    def quote(symbol: str) -> str:
        raise Timeout()

    with pytest.raises(Timeout):
        quote("AAPL")
    assert quote("AAPL") == "cached AAPL"


# --- the open error's last failure ---------------------------------------------------------


def test_open_error_carries_the_failure_that_opened_it() -> None:
    b = CircuitBreaker("last_failure", failure_threshold=2, recovery_timeout_seconds=60)
    first, second = Timeout("first"), Timeout("second")
    with pytest.raises(Timeout):
        b.call(raises(first))
    assert b.last_failure is None, "not open yet"
    with pytest.raises(Timeout):
        b.call(raises(second))
    with pytest.raises(CircuitBreakerOpenError) as info:
        b.call(lambda: None)
    assert info.value.last_failure is second
    assert b.last_failure is second
    manual = CircuitBreakerOpenError("svc", 1.0, last_failure=first)
    assert manual.last_failure is first
    forced = CircuitBreaker("forced_last")
    forced.force_open()
    with pytest.raises(CircuitBreakerOpenError) as info:
        forced.call(lambda: None)
    assert info.value.last_failure is None
