"""Every name, signature, example and rule of the documented module."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import sys
import time
import traceback
from typing import Any, List

import pytest

import circuit_breaker
from circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    CircuitBreakerState,
)

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DOCUMENTED_KEYS = [
    "name",
    "state",
    "failure_count",
    "success_count",
    "failure_threshold",
    "recovery_timeout_seconds",
    "last_failure_time",
    "last_state_change",
    "time_until_recovery_seconds",
]


class Boom(Exception):
    pass


def boom(*_: Any, **__: Any) -> None:
    raise Boom("service down")


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(Boom):
            breaker.call(boom)


# --- names and types ---------------------------------------------------------------------


def test_every_documented_name_is_exported() -> None:
    for name in [
        "CircuitBreaker",
        "CircuitBreakerRegistry",
        "CircuitBreakerState",
        "CircuitBreakerOpenError",
        "CircuitBreakerError",
    ]:
        assert hasattr(circuit_breaker, name)
    assert set(circuit_breaker.__all__) >= {
        "CircuitBreaker",
        "CircuitBreakerRegistry",
        "CircuitBreakerState",
        "CircuitBreakerOpenError",
        "CircuitBreakerError",
    }


def test_state_is_an_enum_with_three_members() -> None:
    import enum

    assert issubclass(CircuitBreakerState, enum.Enum)
    assert [m.name for m in CircuitBreakerState] == ["CLOSED", "OPEN", "HALF_OPEN"]


def test_exception_hierarchy() -> None:
    assert issubclass(CircuitBreakerError, Exception)
    assert issubclass(CircuitBreakerOpenError, CircuitBreakerError)


def test_constructor_signature_and_defaults() -> None:
    b = CircuitBreaker(name="my_api_endpoint")
    assert (b.name, b.failure_threshold, b.recovery_timeout_seconds) == ("my_api_endpoint", 5, 60)
    assert (b.success_threshold, b.half_open_max_calls) == (1, 1)
    b = CircuitBreaker("x", 7, 1.5, success_threshold=2, half_open_max_calls=3)
    assert (b.failure_threshold, b.recovery_timeout_seconds) == (7, 1.5)
    assert (b.success_threshold, b.half_open_max_calls) == (2, 3)
    with pytest.raises(TypeError):
        CircuitBreaker("x", 7, 1.5, 2)  # type: ignore[call-arg]  # success_threshold is keyword-only


# --- calling -------------------------------------------------------------------------------


def test_call_passes_args_and_kwargs_and_returns_the_value() -> None:
    b = CircuitBreaker(name="data_api")

    def fetch_data(symbol: str, *, fields: int = 1) -> dict[str, Any]:
        return {"symbol": symbol, "fields": fields}

    assert b.call(fetch_data, symbol="AAPL") == {"symbol": "AAPL", "fields": 1}
    assert b.call(fetch_data, "MSFT", fields=3) == {"symbol": "MSFT", "fields": 3}
    sentinel = object()
    assert b.call(lambda: sentinel) is sentinel
    # `func` is positional-only, so the callee may take a keyword named func.
    assert b.call(lambda func: func, func=5) == 5


def test_a_failure_propagates_the_same_exception_with_its_traceback() -> None:
    b = CircuitBreaker("x")
    error = Boom("original")

    def fail() -> None:
        raise error

    with pytest.raises(Boom) as info:
        b.call(fail)
    assert info.value is error
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "fail" in frames
    assert b.get_status()["failure_count"] == 1


def test_non_callable_is_a_type_error_that_changes_nothing() -> None:
    b = CircuitBreaker("x", failure_threshold=1)
    before = b.get_status()
    with pytest.raises(TypeError, match="callable"):
        b.call(42)  # type: ignore[arg-type]
    assert b.get_status() == before
    assert b.is_closed()


def test_transition_rules_1_to_4() -> None:
    b = CircuitBreaker("x", failure_threshold=5, recovery_timeout_seconds=0.1)
    # 1. CLOSED -> OPEN at exactly the threshold of consecutive failures.
    for i in range(4):
        with pytest.raises(Boom):
            b.call(boom)
        assert b.is_closed() and b.get_status()["failure_count"] == i + 1
    with pytest.raises(Boom):
        b.call(boom)
    assert b.is_open() and b.get_state() is CircuitBreakerState.OPEN
    ran: List[int] = []
    with pytest.raises(CircuitBreakerOpenError):
        b.call(ran.append, 1)
    assert ran == []
    # 2. OPEN -> HALF_OPEN once the timeout elapsed, without any call.
    time.sleep(0.12)
    assert b.is_half_open() and b.get_state() is CircuitBreakerState.HALF_OPEN
    # 4. HALF_OPEN -> OPEN on failure, restarting the timeout.
    with pytest.raises(Boom):
        b.call(boom)
    assert b.is_open()
    remaining = b.get_status()["time_until_recovery_seconds"]
    assert 0.05 < remaining <= 0.1
    time.sleep(0.12)
    # 3. HALF_OPEN -> CLOSED on success; failure count back to 0.
    assert b.call(lambda: "ok") == "ok"
    assert b.is_closed()
    assert b.get_status()["failure_count"] == 0


def test_a_success_resets_consecutive_failures() -> None:
    b = CircuitBreaker("x", failure_threshold=3)
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    b.call(lambda: None)
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    assert b.is_closed()


def test_half_open_admits_one_probe_by_default() -> None:
    b = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=0.05)
    trip(b)
    time.sleep(0.07)
    inner_results = []

    def probe() -> str:
        # While the probe runs, every other call is rejected.
        with pytest.raises(CircuitBreakerOpenError) as info:
            b.call(lambda: None)
        inner_results.append(info.value)
        return "probed"

    assert b.call(probe) == "probed"
    err = inner_results[0]
    assert err.state is CircuitBreakerState.HALF_OPEN
    assert err.time_until_recovery_seconds == 0.0
    assert b.is_closed()


def test_success_threshold_and_half_open_max_calls() -> None:
    b = CircuitBreaker(
        "x", failure_threshold=1, recovery_timeout_seconds=0.05, success_threshold=2, half_open_max_calls=2
    )
    trip(b)
    time.sleep(0.07)
    b.call(lambda: None)
    assert b.is_half_open()
    b.call(lambda: None)
    assert b.is_closed()


def test_open_error_names_the_breaker_and_the_wait() -> None:
    b = CircuitBreaker("current_price_test", failure_threshold=1, recovery_timeout_seconds=30)
    trip(b)
    with pytest.raises(CircuitBreakerOpenError) as info:
        b.call(lambda: None)
    e = info.value
    assert isinstance(e, CircuitBreakerError)
    assert e.name == "current_price_test"
    assert e.state is CircuitBreakerState.OPEN
    assert e.time_until_recovery_seconds is not None and 29 < e.time_until_recovery_seconds <= 30
    assert "current_price_test" in str(e) and re.search(r"\d+\.\d{3} s", str(e))
    # Users can build and pickle it too.
    import pickle

    copy = pickle.loads(pickle.dumps(e))
    assert (copy.name, copy.time_until_recovery_seconds, copy.state) == (e.name, e.time_until_recovery_seconds, e.state)
    manual = CircuitBreakerOpenError("svc", 1.5)
    assert (manual.name, manual.time_until_recovery_seconds) == ("svc", 1.5)


@pytest.mark.parametrize(
    "exc",
    [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError],
)
def test_base_exceptions_in_a_probe_propagate_uncounted_and_free_the_slot(exc: type) -> None:
    b = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=0.05)
    trip(b)
    time.sleep(0.07)
    raised = exc()

    def interrupted() -> None:
        raise raised

    with pytest.raises(exc) as info:
        b.call(interrupted)
    assert info.value is raised
    assert b.is_half_open(), "not counted as a failure"
    assert b.call(lambda: 1) == 1, "the probe slot was released"
    assert b.is_closed()


def test_base_exceptions_in_closed_do_not_count() -> None:
    b = CircuitBreaker("x", failure_threshold=1)
    with pytest.raises(KeyboardInterrupt):
        b.call(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert b.is_closed()
    assert b.get_status()["failure_count"] == 0


# --- status --------------------------------------------------------------------------------


def test_status_has_the_documented_keys_first_in_order() -> None:
    b = CircuitBreaker(name="my_api_endpoint", failure_threshold=5, recovery_timeout_seconds=60)
    for _ in range(15):
        b.call(lambda: None)
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    status = b.get_status()
    assert list(status)[: len(DOCUMENTED_KEYS)] == DOCUMENTED_KEYS
    assert status["name"] == "my_api_endpoint"
    assert status["state"] == "CLOSED"
    assert status["failure_count"] == 2
    assert status["success_count"] == 15
    assert status["failure_threshold"] == 5
    assert status["recovery_timeout_seconds"] == 60 and isinstance(status["recovery_timeout_seconds"], int)
    assert ISO.match(status["last_failure_time"])
    assert ISO.match(status["last_state_change"])
    assert status["time_until_recovery_seconds"] is None


def test_status_times_are_utc_now() -> None:
    from datetime import datetime, timezone

    b = CircuitBreaker("x", failure_threshold=1)
    with pytest.raises(Boom):
        b.call(boom)
    stamp = datetime.strptime(b.get_status()["last_failure_time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = stamp.replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 1.0


def test_status_while_open_and_half_open() -> None:
    b = CircuitBreaker("x", failure_threshold=2, recovery_timeout_seconds=0.1)
    trip(b)
    status = b.get_status()
    assert status["state"] == "OPEN"
    assert isinstance(status["time_until_recovery_seconds"], float)
    assert 0 < status["time_until_recovery_seconds"] <= 0.1
    time.sleep(0.12)
    status = b.get_status()
    assert status["state"] == "HALF_OPEN"
    assert status["time_until_recovery_seconds"] is None


def test_reset_closes_and_clears_counts() -> None:
    b = CircuitBreaker("x", failure_threshold=2, recovery_timeout_seconds=60)
    b.call(lambda: None)
    trip(b)
    time.sleep(0.002)
    b.reset()
    status = b.get_status()
    assert (status["state"], status["failure_count"], status["success_count"]) == ("CLOSED", 0, 0)
    assert status["last_failure_time"] is None
    assert b.call(lambda: 3) == 3


# --- logging -------------------------------------------------------------------------------


def test_each_transition_is_logged_once_in_the_documented_words(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="circuit_breaker")
    b = CircuitBreaker("options_chain", failure_threshold=3, recovery_timeout_seconds=0.05)
    b.call(lambda: None)
    trip(b)
    for _ in range(3):
        with pytest.raises(CircuitBreakerOpenError):
            b.call(lambda: None)
    time.sleep(0.07)
    assert b.is_half_open() and b.is_half_open()
    b.call(lambda: None)
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        ("circuit_breaker", logging.ERROR, "CircuitBreaker 'options_chain' transitioning to OPEN (3 consecutive failures)"),
        ("circuit_breaker", logging.INFO, "CircuitBreaker 'options_chain' transitioning to HALF_OPEN (recovery timeout elapsed)"),
        ("circuit_breaker", logging.INFO, "CircuitBreaker 'options_chain' transitioning to CLOSED (recovery successful)"),
    ]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": -3}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2**32}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2**80}, ValueError, "failure_threshold"),
        ({"failure_threshold": 1.0}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"failure_threshold": "5"}, TypeError, "failure_threshold"),
        ({"recovery_timeout_seconds": -0.1}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": float("nan")}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": float("inf")}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": 10**20}, ValueError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": "60"}, TypeError, "recovery_timeout_seconds"),
        ({"recovery_timeout_seconds": None}, TypeError, "recovery_timeout_seconds"),
        ({"success_threshold": 0}, ValueError, "success_threshold"),
        ({"success_threshold": 256}, ValueError, "success_threshold"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"half_open_max_calls": 1000}, ValueError, "half_open_max_calls"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs: dict[str, Any], error: type, argument: str) -> None:
    with pytest.raises(error, match=argument):
        CircuitBreaker("x", **kwargs)


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name"):
        CircuitBreaker(3)  # type: ignore[arg-type]


def test_zero_and_sub_second_timeouts_are_allowed() -> None:
    b = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=0)
    trip(b)
    assert b.is_half_open()
    b = CircuitBreaker("x", failure_threshold=1, recovery_timeout_seconds=0.25)
    assert b.recovery_timeout_seconds == 0.25


# --- registry ------------------------------------------------------------------------------


def test_registry_is_a_singleton_with_the_documented_breakers() -> None:
    registry = CircuitBreakerRegistry()
    assert registry is CircuitBreakerRegistry()
    for name in ["current_price", "price_history", "options_chain", "ticker_info", "expirations"]:
        assert registry.get(name).name == name
    assert CircuitBreakerRegistry._default_breakers["current_price"] == {
        "failure_threshold": 5,
        "recovery_timeout_seconds": 60,
    }
    assert CircuitBreakerRegistry._default_breakers["options_chain"] == {
        "failure_threshold": 3,
        "recovery_timeout_seconds": 90,
    }
    chain = registry.get("options_chain")
    assert (chain.failure_threshold, chain.recovery_timeout_seconds) == (3, 90)


def test_registry_register_get_and_unknown_names() -> None:
    registry = CircuitBreakerRegistry()
    custom = CircuitBreaker(name="my_custom_api", failure_threshold=10, recovery_timeout_seconds=120)
    registry.register("my_custom_api", custom)
    assert registry.get("my_custom_api") is custom
    with pytest.raises(KeyError, match="current_price") as info:
        registry.get("no_such_api")
    assert "no_such_api" in str(info.value)
    with pytest.raises(TypeError):
        registry.register("bad", object())  # type: ignore[arg-type]


def test_registry_bulk_operations() -> None:
    registry = CircuitBreakerRegistry()
    registry.reset_all()
    registry.register("bulk_open", CircuitBreaker("bulk_open", failure_threshold=1, recovery_timeout_seconds=60))
    registry.register("bulk_half", CircuitBreaker("bulk_half", failure_threshold=1, recovery_timeout_seconds=0))
    trip(registry.get("bulk_open"))
    trip(registry.get("bulk_half"))
    all_breakers = registry.get_all()
    assert all_breakers["bulk_open"] is registry.get("bulk_open")
    statuses = registry.get_status_all()
    assert statuses["bulk_open"]["state"] == "OPEN"
    assert list(statuses["current_price"])[:9] == DOCUMENTED_KEYS
    assert registry.get_open_breakers() == ["bulk_open"]
    assert registry.get_half_open_breakers() == ["bulk_half"]
    closed = registry.get_closed_breakers()
    assert "current_price" in closed and "bulk_open" not in closed
    registry.reset_all()
    assert registry.get_open_breakers() == [] and registry.get_half_open_breakers() == []


# --- the document's examples, run unchanged but for the import path --------------------------


def test_example_1_market_data_fetching() -> None:
    registry = CircuitBreakerRegistry()
    registry.reset_all()
    price_breaker = registry.get("current_price")
    cache = {"AAPL": 149.0}
    calls = []

    def _fetch_price(symbol: str) -> float:
        calls.append(symbol)
        raise ConnectionError("yfinance down")

    def get_stock_price(symbol: str) -> Any:
        try:
            return price_breaker.call(_fetch_price, symbol)
        except CircuitBreakerOpenError:
            return cache[symbol]
        except Exception:
            return None

    assert [get_stock_price("AAPL") for _ in range(7)] == [None] * 5 + [149.0, 149.0]
    assert len(calls) == 5, "the open breaker spared the service two calls"
    registry.reset_all()


def test_example_2_async_dashboard_loader() -> None:
    registry = CircuitBreakerRegistry()
    registry.reset_all()
    trip(registry.get("options_chain"))

    def fetch_price(symbol: str) -> float:
        return 150.25

    def fetch_history(symbol: str) -> List[float]:
        return [1.0, 2.0]

    def fetch_options(symbol: str) -> dict[str, Any]:
        raise AssertionError("must not run: options_chain is open")

    async def load_dashboard_data(symbol: str) -> dict[str, Any]:
        price_breaker = registry.get("current_price")
        history_breaker = registry.get("price_history")
        chain_breaker = registry.get("options_chain")
        dashboard_data: dict[str, Any] = {}
        try:
            dashboard_data["price"] = price_breaker.call(fetch_price, symbol)
        except CircuitBreakerOpenError:
            dashboard_data["price_status"] = "cached"
        try:
            dashboard_data["history"] = history_breaker.call(fetch_history, symbol)
        except CircuitBreakerOpenError:
            dashboard_data["history"] = []
        try:
            dashboard_data["chain"] = chain_breaker.call(fetch_options, symbol)
        except CircuitBreakerOpenError:
            dashboard_data["chain"] = {}
            dashboard_data["chain_status"] = "unavailable"
        return dashboard_data

    assert asyncio.run(load_dashboard_data("AAPL")) == {
        "price": 150.25,
        "history": [1.0, 2.0],
        "chain": {},
        "chain_status": "unavailable",
    }
    registry.reset_all()


def test_example_3_health_monitoring(caplog: pytest.LogCaptureFixture) -> None:
    registry = CircuitBreakerRegistry()
    registry.reset_all()
    trip(registry.get("ticker_info"))
    logger = logging.getLogger("health")
    alerts = []

    def check_api_health() -> None:
        open_breakers = registry.get_open_breakers()
        half_open = registry.get_half_open_breakers()
        if open_breakers:
            logger.error(f"ALERT: Circuit breakers OPEN: {open_breakers}")
            alerts.append(f"APIs down: {open_breakers}")
        if half_open:
            logger.warning(f"Circuit breakers recovering: {half_open}")
        for name, status in registry.get_status_all().items():
            logger.info(f"{name}: {status['state']} (failures: {status['failure_count']}/{status['failure_threshold']})")

    with caplog.at_level(logging.INFO):
        check_api_health()
    assert any("ticker_info" in a for a in alerts)
    assert "ticker_info: OPEN (failures: 5/5)" in caplog.text
    registry.reset_all()


def test_module_docstring_example_runs() -> None:
    import doctest

    failures, _ = doctest.testmod(circuit_breaker, verbose=False)
    assert failures == 0


def test_signature_of_call_is_introspectable() -> None:
    assert str(inspect.signature(CircuitBreaker.call)) == "(self, func, /, *args, **kwargs)"
    assert "coroutine" in (CircuitBreaker.call.__doc__ or "")


# `call` is a vectorcall method that hands its own argument array on to `func` (see
# python/src/vectorcall.rs); these pin down that nothing is lost, leaked or mixed up on the way.


def test_call_hands_on_every_argument_shape() -> None:
    b = CircuitBreaker("shapes")

    def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs

    assert b.call(echo) == ((), {})
    assert b.call(echo, 1, 2) == ((1, 2), {})
    assert b.call(echo, x=1) == ((), {"x": 1})
    many = list(range(300))
    named = {f"k{i}": i for i in range(40)}
    assert b.call(echo, *many, **named) == (tuple(many), named)
    bound = b.call  # a bound builtin method takes the other call path in CPython
    assert bound(echo, "a", b="c") == (("a",), {"b": "c"})
    assert b.get_metrics()["total_successes"] == 5


def test_call_needs_func_and_a_breaker() -> None:
    b = CircuitBreaker("needs_func")
    with pytest.raises(TypeError, match="'func'"):
        b.call()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'func'"):
        b.call(func=lambda: 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CircuitBreaker.call(object(), lambda: 1)  # type: ignore[arg-type]
    assert b.get_metrics()["total_requests"] == 0
    with pytest.raises(TypeError):
        circuit_breaker._core._bind_call(int)  # type: ignore[attr-defined]


def test_call_works_on_subclasses_and_the_rust_base_class() -> None:
    class Mine(CircuitBreaker):
        pass

    for b in (Mine("mine"), circuit_breaker._core.BreakerCore("base")):  # type: ignore[attr-defined]
        assert b.call(lambda x, y=0: x + y, 1, y=2) == 3
        assert b.get_metrics()["total_successes"] == 1


def test_call_keeps_reference_counts_balanced() -> None:
    # Every path through the Rust entry point (success, failure, rejection with a fallback
    # that gets the arguments re-packed, a coroutine) must leave the arguments' reference
    # counts as they were, with no garbage collection: a leak, a missing reference or a
    # reference cycle would show here.
    arg, kwarg, result = object(), object(), object()

    def ok(a: object, *, k: object) -> object:
        return result

    def fail(a: object, *, k: object) -> object:
        raise Boom()

    async def coro(a: object, *, k: object) -> object:
        return result

    def fallback(a: object, *, k: object) -> object:
        return result

    def counts() -> list[int]:
        return [sys.getrefcount(o) for o in (arg, kwarg, result)]

    b = CircuitBreaker("refs", failure_threshold=3, recovery_timeout_seconds=60, fallback=fallback)
    gc.disable()
    try:
        before = counts()
        for _ in range(100):
            assert b.call(ok, arg, k=kwarg) is result
            c = b.call(coro, arg, k=kwarg)
            with pytest.raises(StopIteration):
                c.send(None)
            del c
        assert counts() == before
        for _ in range(3):
            with pytest.raises(Boom):
                b.call(fail, arg, k=kwarg)
        assert b.is_open()
        # The breaker keeps the failure that opened it (for the open error), and with it the
        # traceback's frame of `fail`, which holds one reference to each argument.
        tripped = counts()
        assert tripped == [before[0] + 1, before[1] + 1, before[2]]
        for _ in range(100):
            assert b.call(ok, arg, k=kwarg) is result  # rejected: the fallback's value
        assert b.get_metrics()["total_rejections"] == 100
        assert counts() == tripped
    finally:
        gc.enable()


def test_gil_is_not_required() -> None:
    # The module declares gil_used = false; on a free-threaded build, importing it must not
    # turn the GIL back on. Only a free-threaded interpreter can check that.
    if not hasattr(sys, "_is_gil_enabled") or "free-threading" not in sys.version:
        pytest.skip("needs a free-threaded CPython build")
    assert not sys._is_gil_enabled()
