"""Two-step permits, manual control, metrics and transition listeners."""

from __future__ import annotations

import gc
import logging
import time
import weakref
from typing import Any, List, Tuple

import pytest

from circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    Permit,
)


def fail(breaker: CircuitBreaker) -> None:
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)


# --- two-step permits ----------------------------------------------------------------------


def test_acquire_then_report() -> None:
    b = CircuitBreaker("two_step", failure_threshold=2)
    permit = b.acquire()
    assert isinstance(permit, Permit) and permit.pending and not permit.is_probe
    permit.failure()
    assert not permit.pending
    assert b.get_status()["failure_count"] == 1
    b.acquire().success()
    assert b.get_status()["failure_count"] == 0
    b.acquire().ignore()
    assert b.get_metrics()["total_ignored"] == 1


def test_a_permit_reports_once() -> None:
    permit = CircuitBreaker("once").acquire()
    permit.success()
    with pytest.raises(RuntimeError, match="already"):
        permit.failure()


def test_acquire_is_rejected_when_open() -> None:
    b = CircuitBreaker("two_step_open", failure_threshold=1, recovery_timeout_seconds=60)
    b.acquire().failure()
    with pytest.raises(CircuitBreakerOpenError) as info:
        b.acquire()
    assert info.value.name == "two_step_open"


def test_a_collected_probe_permit_frees_its_slot() -> None:
    b = CircuitBreaker("gc_probe", failure_threshold=1, recovery_timeout_seconds=0.05)
    fail(b)
    time.sleep(0.07)
    probe = b.acquire()
    assert probe.is_probe
    with pytest.raises(CircuitBreakerOpenError):
        b.acquire()
    del probe
    gc.collect()
    assert b.is_half_open()
    b.acquire().success()
    assert b.is_closed()


# --- manual control ------------------------------------------------------------------------


def test_force_open_rejects_until_reset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="circuit_breaker")
    b = CircuitBreaker("forced", recovery_timeout_seconds=0)
    b.force_open()
    assert b.is_open() and b.get_state() is CircuitBreakerState.OPEN
    with pytest.raises(CircuitBreakerOpenError) as info:
        b.call(lambda: 1)
    assert info.value.time_until_recovery_seconds is None
    assert "until reset" in str(info.value)
    status = b.get_status()
    assert (status["state"], status["mode"], status["time_until_recovery_seconds"]) == ("OPEN", "forced_open", None)
    assert b.get_metrics()["mode"] == "forced_open"
    b.reset()
    assert b.call(lambda: 1) == 1 and b.get_status()["mode"] == "normal"
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "CircuitBreaker 'forced' transitioning to FORCED_OPEN (forced open)"),
        (logging.INFO, "CircuitBreaker 'forced' transitioning to CLOSED (manual reset)"),
    ]


def test_disable_admits_everything_and_never_trips() -> None:
    b = CircuitBreaker("disabled", failure_threshold=1)
    b.disable()
    for _ in range(20):
        fail(b)
    assert b.is_closed() and b.get_status()["mode"] == "disabled"
    b.reset()
    fail(b)
    assert b.is_open()


# --- metrics -------------------------------------------------------------------------------


def test_metrics_have_seed_003_keys_and_survive_state_changes() -> None:
    b = CircuitBreaker("metrics", failure_threshold=2, recovery_timeout_seconds=60)
    assert b.get_metrics()["success_rate"] == 0
    for _ in range(6):
        b.call(lambda: None)
    fail(b)
    fail(b)
    with pytest.raises(CircuitBreakerOpenError):
        b.call(lambda: None)
    m = b.get_metrics()
    assert list(m)[:7] == [
        "state",
        "total_requests",
        "total_successes",
        "total_failures",
        "success_rate",
        "circuit_opened_count",
        "current_failure_count",
    ]
    assert m["state"] == "OPEN"
    assert (m["total_requests"], m["total_successes"], m["total_failures"], m["total_rejections"]) == (9, 6, 2, 1)
    assert m["success_rate"] == pytest.approx(6 / 9 * 100)
    assert m["circuit_opened_count"] == 1
    assert m["current_failure_count"] == 2
    b.reset()
    after = b.get_metrics()
    assert after["total_requests"] == 9 and after["circuit_opened_count"] == 1
    assert after["current_failure_count"] == 0


# --- listeners -----------------------------------------------------------------------------


def test_listeners_hear_every_transition() -> None:
    b = CircuitBreaker("listened", failure_threshold=1, recovery_timeout_seconds=0.05)
    heard: List[Tuple[Any, CircuitBreakerState, CircuitBreakerState, str]] = []
    listener = lambda *args: heard.append(args)  # noqa: E731
    b.add_listener(listener)
    fail(b)
    time.sleep(0.07)
    b.call(lambda: None)
    assert [(h[0] is b, h[1], h[2], h[3]) for h in heard] == [
        (True, CircuitBreakerState.CLOSED, CircuitBreakerState.OPEN, "1 consecutive failures"),
        (True, CircuitBreakerState.OPEN, CircuitBreakerState.HALF_OPEN, "recovery timeout elapsed"),
        (True, CircuitBreakerState.HALF_OPEN, CircuitBreakerState.CLOSED, "recovery successful"),
    ]
    b.remove_listener(listener)
    fail(b)
    assert len(heard) == 3
    with pytest.raises(ValueError):
        b.remove_listener(listener)


def test_a_raising_listener_is_logged_and_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    b = CircuitBreaker("bad_listener", failure_threshold=1)
    calls = []

    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(broken)
    b.add_listener(lambda *args: calls.append(args))
    with caplog.at_level(logging.ERROR, logger="circuit_breaker"):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    assert b.is_open()
    assert len(calls) == 1, "the next listener still ran"
    record = next(r for r in caplog.records if "transition listener" in r.getMessage())
    assert record.exc_info is not None and "listener bug" in str(record.exc_info[1])


def test_listeners_must_be_callable_and_do_not_keep_the_breaker_alive() -> None:
    b = CircuitBreaker("weak")
    with pytest.raises(TypeError):
        b.add_listener(42)  # type: ignore[arg-type]
    b.add_listener(lambda *args: None)
    ref = weakref.ref(b)
    del b
    gc.collect()
    assert ref() is None


# --- registry additions --------------------------------------------------------------------


def test_get_or_create_is_atomic_and_refuses_conflicting_settings() -> None:
    import threading

    from circuit_breaker import CircuitBreakerRegistry

    registry = CircuitBreakerRegistry()
    barrier = threading.Barrier(8)
    got: List[CircuitBreaker] = []

    def work() -> None:
        barrier.wait()
        got.append(registry.get_or_create("provider_x", failure_threshold=3, recovery_timeout_seconds=30))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(b is got[0] for b in got) and registry.get("provider_x") is got[0]
    assert got[0].failure_threshold == 3
    assert registry.get_or_create("provider_x") is got[0]
    assert registry.get_or_create("provider_x", failure_threshold=3) is got[0]
    with pytest.raises(ValueError, match="failure_threshold=4"):
        registry.get_or_create("provider_x", failure_threshold=4)
    with pytest.raises(ValueError, match="failure_threshold"):
        registry.get_or_create("provider_bad", failure_threshold=0)
    with pytest.raises(KeyError):
        registry.get("provider_bad")


def test_unregister() -> None:
    from circuit_breaker import CircuitBreakerRegistry

    registry = CircuitBreakerRegistry()
    b = registry.get_or_create("to_remove")
    assert registry.unregister("to_remove") is b
    with pytest.raises(KeyError, match="to_remove"):
        registry.unregister("to_remove")
    assert "to_remove" not in registry.get_all()


def test_load_defaults_from_a_mapping() -> None:
    from circuit_breaker import CircuitBreakerRegistry

    registry = CircuitBreakerRegistry()
    registry.register("endpoint_kept", CircuitBreaker("endpoint_kept", failure_threshold=9))
    config = {
        "endpoint_a": {"failure_threshold": 2, "recovery_timeout_seconds": 5},
        "endpoint_kept": {"failure_threshold": 1},
    }
    assert registry.load_defaults(config) == ["endpoint_a"]
    assert registry.get("endpoint_a").recovery_timeout_seconds == 5
    assert registry.get("endpoint_kept").failure_threshold == 9
    assert registry.load_defaults(config, replace=True) == ["endpoint_a", "endpoint_kept"]
    assert registry.get("endpoint_kept").failure_threshold == 1
    with pytest.raises(ValueError):
        registry.load_defaults({"endpoint_new": {}, "endpoint_broken": {"failure_threshold": -1}})
    assert "endpoint_new" not in registry.get_all(), "a bad entry registers nothing"
