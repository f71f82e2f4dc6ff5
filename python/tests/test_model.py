"""Model-based test of the Python API: hypothesis drives the real breaker and the reference model
in `model.py` with the same random steps — every way to call (sync, coroutine, call_async,
decorated function, generator, `with`, `async with`, `acquire` with a late report or a dropped
permit, fallbacks), exception filters and a failure predicate, manual control, listeners that
raise — and after every step compares the state, `get_status()`, `get_metrics()`,
`last_failure`, the listener events and the log records.

Bounded for CI (well under a minute); `CB_MODEL_EXAMPLES=500` (and `CB_MODEL_STEPS=80`) runs it
longer.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Tuple

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerState, Permit
from model import (
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    Boom,
    Config,
    Excluded,
    Interrupt,
    Model,
    ModelPermit,
    Other,
    classify_error,
    classify_value,
    close,
    now,
)

EXAMPLES = int(os.environ.get("CB_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("CB_MODEL_STEPS", "30"))
SHORT = 0.25  # a real recovery timeout, waited for with real sleeps
names = itertools.count()

# What a call does: return a value, or raise.
RESULTS = ["ok", "bad", "explode"]
ERRORS = {"boom": Boom, "excluded": Excluded, "other": Other}
KINDS = RESULTS + list(ERRORS)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[Tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.held: List[Tuple[Permit, ModelPermit]] = []
        self.handler = Collect()
        self.logger = logging.getLogger("circuit_breaker")
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.events: List[Tuple[str, str, str]] = []
        self.last_change: Optional[str] = None

    def teardown(self) -> None:
        self.logger.removeHandler(self.handler)

    # ----- setup -----

    @initialize(
        threshold=st.integers(1, 4),
        recovery=st.sampled_from([0, 3600, SHORT]),
        successes=st.integers(1, 3),
        probes=st.integers(1, 3),
        filters=st.booleans(),
        predicate=st.booleans(),
        fallback=st.sampled_from(["none", "rejection", "failure"]),
    )
    def setup(self, threshold: int, recovery: float, successes: int, probes: int, filters: bool, predicate: bool, fallback: str) -> None:
        self.config = Config(threshold, recovery, successes, probes, filters, predicate, fallback != "none", fallback == "failure")
        name = f"model-{next(names)}"
        self.model = Model(name, self.config)
        kwargs: dict = {"success_threshold": successes, "half_open_max_calls": probes}
        if filters:
            kwargs.update(expected_exceptions=(Boom,), exclude=[Excluded])
        if predicate:
            kwargs["failure_predicate"] = self.predicate
        if fallback != "none":
            kwargs.update(fallback=self.fallback, fallback_on_failure=fallback == "failure")
        self.breaker = CircuitBreaker(name, threshold, recovery, **kwargs)
        self.breaker.add_listener(self.record_event)
        self.model.listeners.append(("record", repr(self.record_event)))
        self.raising_added = False
        self.last_change = self.breaker.get_status()["last_state_change"]

    @staticmethod
    def predicate(value: Any) -> bool:
        if value == "explode":
            raise ZeroDivisionError("the predicate itself failed")
        return bool(value == "bad")

    @staticmethod
    def fallback(*args: Any, **kwargs: Any) -> str:
        return "fallback"

    def record_event(self, breaker: CircuitBreaker, old: CircuitBreakerState, new: CircuitBreakerState, reason: str) -> None:
        assert breaker is self.breaker
        self.events.append((old.value, new.value, reason))

    @staticmethod
    def raising_listener(breaker: CircuitBreaker, old: CircuitBreakerState, new: CircuitBreakerState, reason: str) -> None:
        raise RuntimeError("listener bug")

    # ----- helpers -----

    def clear_of_deadline(self) -> float:
        """Waits until the time is clear of the recovery deadline; returns the time."""
        t = now()
        if self.model.near_deadline(t):
            d = self.model.deadline()
            assert d is not None
            time.sleep(d + self.model_margin() - t)
            t = now()
        return t

    @staticmethod
    def model_margin() -> float:
        from model import MARGIN

        return MARGIN * 1.5

    def func(self, kind: str) -> Callable[[], Any]:
        """The call's body; an exception it raises is kept in `self.thrown` (a fallback may
        replace it before the caller sees anything)."""
        self.thrown: Optional[BaseException] = None

        def f() -> Any:
            if kind in ERRORS:
                self.thrown = ERRORS[kind](kind)
                raise self.thrown
            return {"ok": 1}.get(kind, kind)

        return f

    def expect_outcome(self, permit: ModelPermit, kind: str, error: Optional[BaseException], t: float, fallback_applies: bool) -> Tuple[str, Any]:
        """Records `kind`'s outcome in the model; returns what the caller should see:
        ("value", v), ("raise", error) or ("fallback", None)."""
        if error is not None:
            outcome = classify_error(self.config, error)
            self.model.record(permit, outcome, error, t)
            if outcome == "failure" and fallback_applies and self.config.fallback_on_failure:
                return "fallback", None
            return "raise", error
        value = {"ok": 1}.get(kind, kind)
        outcome, raised = classify_value(self.config, value)
        if raised:
            self.model.log.append(("ERROR", f"CircuitBreaker '{self.model.name}': failure_predicate {self.predicate!r} raised; counting the call as a failure"))
        self.model.record(permit, outcome, None, t)
        if outcome == "failure" and fallback_applies and self.config.fallback_on_failure:
            return "fallback", None
        return "value", value

    def run_call(self, kind: str, invoke: Callable[[Callable[[], Any]], Any], fallback_applies: bool) -> None:
        """One call through `invoke`, checked against the model."""
        t = self.clear_of_deadline()
        permit = self.model.admit(t)
        f = self.func(kind)
        raised: Optional[BaseException] = None
        try:
            got: Any = invoke(f)
        except BaseException as e:  # noqa: B902 - Interrupt is a BaseException on purpose
            raised = e
        if permit is None:
            if fallback_applies and self.config.fallback:
                assert raised is None and got == "fallback", (raised, kind)
            else:
                assert isinstance(raised, CircuitBreakerOpenError), raised
                self.check_rejection(raised, t)
            return
        error = raised if isinstance(raised, Interrupt) else self.thrown
        if raised is not None and raised is not error:
            raise AssertionError(f"unexpected {raised!r}")
        what, expected = self.expect_outcome(permit, kind, error, t, fallback_applies)
        if what == "fallback":
            assert raised is None and got == "fallback", (raised, kind)
        elif what == "raise":
            assert raised is expected, (raised, expected)
        else:
            assert raised is None and got == expected, (raised, got, expected)

    def check_rejection(self, error: CircuitBreakerOpenError, t: float) -> None:
        assert error.name == self.model.name
        expected = self.model.retry_after(t)
        if expected is None:
            assert error.time_until_recovery_seconds is None
        else:
            got = error.time_until_recovery_seconds
            assert got is not None and abs(got - expected) < 0.1, (got, expected)
        assert error.state is (CircuitBreakerState.HALF_OPEN if self.model.state == HALF_OPEN else CircuitBreakerState.OPEN)
        assert error.last_failure is self.model.last_failure

    # ----- ways to call -----

    WAYS = ["call", "coroutine", "call_async", "decorated", "decorated_async", "generator", "with", "async_with"]
    # Every way takes every kind of result; `interrupt` (a BaseException) only where it can
    # propagate without an event loop in between.
    BLOCKS = {"generator", "with", "async_with"}

    @rule(way=st.sampled_from(WAYS), kind=st.sampled_from(KINDS + ["interrupt"]))
    def call(self, way: str, kind: str) -> None:
        if kind == "interrupt" and way not in ("call", "generator", "with"):
            kind = "boom"
        if way in self.BLOCKS and kind in RESULTS:
            kind = "ok"  # blocks have no value predicate: a normal exit is a success
        if way in self.BLOCKS:
            self.run_block(kind, lambda f: self.invoke(way, kind, f))
        else:
            self.run_call(kind, lambda f: self.invoke(way, kind, f), fallback_applies=True)

    def invoke(self, way: str, kind: str, f: Callable[[], Any]) -> Any:
        """Calls `f` through the breaker the way users do."""
        if kind == "interrupt":
            def interrupted() -> Any:
                raise Interrupt("stop")

            f = interrupted
        b = self.breaker

        async def g() -> Any:
            return f()

        if way == "call":
            return b.call(f)
        if way == "coroutine":
            async def main() -> Any:
                return await b.call(g)  # as a user writes it, whatever happened

            return asyncio.run(main())
        if way == "call_async":
            return asyncio.run(b.call_async(g))
        if way == "decorated":
            return b(f)()
        if way == "decorated_async":
            return asyncio.run(b(g)())
        if way == "generator":
            @b
            def gen() -> Iterator[Any]:
                yield 0
                yield f()

            return list(gen())[-1]
        if way == "with":
            with b:
                return f()
        async def in_async_with() -> Any:
            async with b:
                return f()

        return asyncio.run(in_async_with())

    @rule(way=st.sampled_from(["call", "decorated", "with"]))
    def fail_until_open(self, way: str) -> None:
        """Consecutive failures until the breaker leaves CLOSED (a macro step, so that trips,
        and outcomes reported after them, are common)."""
        for _ in range(self.config.failure_threshold):
            if self.model.state != "CLOSED":
                return
            self.call(way, "boom")

    def run_block(self, kind: str, invoke: Callable[[Callable[[], Any]], Any]) -> None:
        """A `with` block or a generator: no fallback, no value predicate (a normal exit is a
        success)."""
        t = self.clear_of_deadline()
        permit = self.model.admit(t)
        raised: Optional[BaseException] = None
        try:
            got = invoke(self.func(kind))
        except BaseException as e:  # noqa: B902
            raised = e
        if permit is None:
            assert isinstance(raised, CircuitBreakerOpenError), raised
            self.check_rejection(raised, t)
            return
        if raised is None:
            self.model.record(permit, "success", None, t)
            assert got == 1, got
            return
        assert isinstance(raised, tuple(ERRORS.values()) + (Interrupt,)), raised
        self.model.record(permit, classify_error(self.config, raised), raised, t)

    # ----- two steps -----

    @rule()
    def acquire(self) -> None:
        t = self.clear_of_deadline()
        permit = self.model.admit(t)
        try:
            real = self.breaker.acquire()
        except CircuitBreakerOpenError as e:
            assert permit is None
            self.check_rejection(e, t)
            return
        assert permit is not None, "admitted where the model rejects"
        assert real.is_probe == permit.probe and real.pending
        self.held.append((real, permit))

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), how=st.sampled_from(["success", "failure", "ignore", "boom", "excluded", "other", "interrupt", "ok", "bad", "drop"]))
    def report(self, data: st.DataObject, how: str) -> None:
        real, permit = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        t = self.clear_of_deadline()
        if how == "drop":
            del real
            gc.collect()
            self.model.record(permit, "ignored", None, t)
        elif how in ("success", "failure", "ignore"):
            getattr(real, how)()
            self.model.record(permit, {"ignore": "ignored"}.get(how, how), None, t)
        elif how in ("ok", "bad"):
            value = {"ok": 1}.get(how, how)
            outcome, _ = classify_value(self.config, value)
            assert real.record_result(value) is (outcome == "failure")
            self.model.record(permit, outcome, None, t)
        else:
            error: BaseException = Interrupt("stop") if how == "interrupt" else ERRORS[how](how)
            outcome = classify_error(self.config, error)
            assert real.record_exception(error) is (outcome == "failure")
            self.model.record(permit, outcome, error, t)

    # ----- manual control, listeners, time -----

    @rule(what=st.sampled_from(["force_open", "disable", "reset"]))
    def control(self, what: str) -> None:
        self.clear_of_deadline()
        getattr(self.breaker, what)()
        getattr(self.model, what)()

    @rule()
    def toggle_raising_listener(self) -> None:
        if self.raising_added:
            self.breaker.remove_listener(self.raising_listener)
            self.model.listeners = [entry for entry in self.model.listeners if entry[0] != "raise"]
        else:
            self.breaker.add_listener(self.raising_listener)
            self.model.listeners.append(("raise", repr(self.raising_listener)))
        self.raising_added = not self.raising_added

    @precondition(lambda self: self.config.recovery == SHORT and self.model.state == OPEN)
    @rule()
    def wait_for_recovery(self) -> None:
        d = self.model.deadline()
        assert d is not None
        time.sleep(max(0.0, d - now()) + self.model_margin())

    # ----- after every step -----

    @invariant()
    def everything_agrees(self) -> None:
        if not hasattr(self, "breaker"):
            return
        t = self.clear_of_deadline()
        self.model.settle(t)
        b, m = self.breaker, self.model
        assert b.get_state().value == m.shown()
        assert (b.is_open(), b.is_half_open(), b.is_closed()) == (m.shown() == "OPEN", m.shown() == "HALF_OPEN", m.shown() == "CLOSED")
        status = dict(b.get_status())
        last_change = status.pop("last_state_change")
        assert isinstance(last_change, str) and self.last_change is not None and last_change >= self.last_change
        self.last_change = last_change
        if status["last_failure_time"] is not None:
            status["last_failure_time"] = "set"
        until = status["time_until_recovery_seconds"]
        if until is not None:
            assert 0 <= until <= m.config.recovery + 0.01, until
            status["time_until_recovery_seconds"] = "set"
        assert status == m.status()
        metrics = dict(b.get_metrics())
        expected = m.metrics()
        assert close(metrics.pop("success_rate"), expected.pop("success_rate"))
        assert metrics == expected
        assert b.last_failure is m.last_failure, (b.last_failure, m.last_failure)
        assert self.events == m.events
        assert self.handler.records == m.log, (self.handler.records[-3:], m.log[-3:])


BreakerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
TestBreakerModel = BreakerMachine.TestCase
