"""One test per defect found and fixed, named for what it guards."""

from __future__ import annotations

import pickle
import time

import pytest

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerState


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


def test_a_stale_late_failure_does_not_replace_the_failure_that_opened_the_breaker() -> None:
    b = CircuitBreaker("stale", failure_threshold=1, recovery_timeout_seconds=60)
    p = b.acquire()  # admitted while CLOSED
    with pytest.raises(Boom):
        b.call(boom)  # another call trips it
    opened_by = b.last_failure
    assert isinstance(opened_by, Boom) and opened_by.args == ("down",)
    assert p.record_exception(Boom("reported")) is True  # counted as a failure, but stale
    assert b.last_failure is opened_by
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        b.call(lambda: None)
    assert rejected.value.last_failure is opened_by


def test_reset_and_force_open_clear_the_last_failure_consistently_with_the_status() -> None:
    b = CircuitBreaker("resetforce", failure_threshold=1, recovery_timeout_seconds=60)
    with pytest.raises(Boom):
        b.call(boom)
    assert b.last_failure is not None and b.get_status()["last_failure_time"] is not None
    b.reset()
    assert b.last_failure is None and b.get_status()["last_failure_time"] is None
    with pytest.raises(Boom):
        b.call(boom)
    b.force_open()
    assert b.last_failure is None, "opened by hand: no failure opened it"
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        b.call(lambda: None)
    assert rejected.value.last_failure is None


def test_a_failure_predicate_trip_has_no_last_failure() -> None:
    b = CircuitBreaker("predicate", failure_threshold=1, failure_predicate=lambda v: v == "bad")
    assert b.call(lambda: "bad") == "bad"
    assert b.is_open() and b.last_failure is None


def test_reported_times_do_not_move_between_reads() -> None:
    b = CircuitBreaker("stable", failure_threshold=2, recovery_timeout_seconds=60)
    with pytest.raises(Boom):
        b.call(boom)
    reads = []
    for _ in range(40):
        s = b.get_status()
        reads.append((s["last_failure_time"], s["last_state_change"]))
        time.sleep(0.001)
    assert len(set(reads)) == 1, reads[:3]


def test_the_open_error_names_its_breaker_and_keeps_a_hand_built_last_failure() -> None:
    b = CircuitBreaker("named", failure_threshold=1)
    with pytest.raises(Boom):
        b.call(boom)
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        b.call(lambda: None)
    assert rejected.value.breaker is b and rejected.value.args[3] is b
    by_hand = CircuitBreakerOpenError("x", 1.0, CircuitBreakerState.OPEN, Boom("y"))
    assert by_hand.breaker is None and isinstance(by_hand.last_failure, Boom)
    copy = pickle.loads(pickle.dumps(rejected.value))
    assert copy.breaker is None and isinstance(copy.last_failure, Boom) and str(copy) == str(rejected.value)


def test_half_open_rejections_say_next_probe_like_open_ones() -> None:
    b = CircuitBreaker("wording", failure_threshold=1, recovery_timeout_seconds=0)
    with pytest.raises(Boom):
        b.call(boom)
    probe = b.acquire()
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        b.call(lambda: None)
    assert str(rejected.value) == "CircuitBreaker 'wording' is HALF_OPEN and every probe slot is taken; next probe in 0.000 s"
    probe.success()


def test_permits_have_a_useful_repr() -> None:
    p = CircuitBreaker("permitted").acquire()
    assert repr(p) == "<Permit of CircuitBreaker 'permitted': probe=False, pending=True>"
    p.success()
    assert repr(p) == "<Permit of CircuitBreaker 'permitted': probe=False, pending=False>"


def test_pickling_a_breaker_says_why_it_cannot() -> None:
    with pytest.raises(TypeError, match="cannot pickle CircuitBreaker 'live': a breaker is live state"):
        pickle.dumps(CircuitBreaker("live"))


def test_users_see_one_class_named_circuit_breaker() -> None:
    names = [cls.__name__ for cls in CircuitBreaker.__mro__]
    assert names.count("CircuitBreaker") == 1, names
