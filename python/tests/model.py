"""A plain-Python reference model of a circuit breaker, written from README.md's description of
the Python API (not from the Rust code): what each call does to the state, the counts, the
last failure, the log and the listeners. `test_model.py` drives the real breaker and this model
with the same random steps and compares everything they report after each one."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED = "CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN", "DISABLED"
# What the three-state Python API shows for each state.
SHOWN = {CLOSED: "CLOSED", OPEN: "OPEN", HALF_OPEN: "HALF_OPEN", FORCED_OPEN: "OPEN", DISABLED: "CLOSED"}
LEVEL = {OPEN: "ERROR", FORCED_OPEN: "WARNING"}

# A margin around every recovery deadline inside which the model does not predict the state
# (the real breaker reads a coarse clock); steps wait until they are clear of it.
MARGIN = 0.06


class Boom(Exception):
    """The dependency failing: always a failure."""


class Excluded(Exception):
    """Never a failure when the breaker has filters (exclude=[Excluded])."""


class Other(Exception):
    """A failure without filters; ignored with them (expected_exceptions=(Boom,))."""


class Interrupt(BaseException):
    """Not an Exception: propagates and counts as neither, like KeyboardInterrupt."""


@dataclass
class Config:
    failure_threshold: int
    recovery: float
    success_threshold: int
    half_open_max_calls: int
    filters: bool  # expected_exceptions=(Boom,), exclude=[Excluded]
    predicate: bool  # failure_predicate: "bad" is a failure, "explode" makes it raise
    fallback: bool
    fallback_on_failure: bool


@dataclass
class ModelPermit:
    generation: int
    probe: bool
    pending: bool = True


@dataclass
class Model:
    name: str
    config: Config
    state: str = CLOSED
    generation: int = 0
    failures: int = 0  # CLOSED: consecutive failures
    opened_at: float = 0.0  # OPEN: when (time.monotonic())
    in_flight: int = 0  # HALF_OPEN
    successes: int = 0  # HALF_OPEN: consecutive probe successes
    totals: dict = field(default_factory=lambda: {"success": 0, "failure": 0, "ignored": 0, "rejected": 0, "opened": 0})
    successes_at_reset: int = 0
    failures_at_reset: int = 0
    last_failure: Optional[BaseException] = None
    transitions: int = 0
    log: List[Tuple[str, str]] = field(default_factory=list)
    events: List[Tuple[str, str, str]] = field(default_factory=list)
    # (kind, repr) of the listeners added, in order: "record" appends to events, "raise" raises.
    listeners: List[Tuple[str, str]] = field(default_factory=list)

    # ----- time -----

    def deadline(self) -> Optional[float]:
        return self.opened_at + self.config.recovery if self.state == OPEN else None

    def near_deadline(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and abs(now - d) < MARGIN

    def settle(self, now: float) -> None:
        """An elapsed OPEN is HALF_OPEN, announced when first observed."""
        d = self.deadline()
        if d is not None and now >= d:
            self.go(HALF_OPEN, "recovery timeout elapsed")
            self.in_flight = self.successes = 0

    # ----- transitions -----

    def go(self, to: str, reason: str) -> None:
        old = self.state
        self.state = to
        self.generation += 1
        if to == CLOSED:
            self.failures = 0
        if to in (OPEN, FORCED_OPEN):
            self.totals["opened"] += 1
        self.transitions += 1
        self.log.append((LEVEL.get(to, "INFO"), f"CircuitBreaker '{self.name}' transitioning to {to} ({reason})"))
        for kind, text in self.listeners:
            if kind == "record":
                self.events.append((SHOWN[old], SHOWN[to], reason))
            else:
                self.log.append(("ERROR", f"CircuitBreaker '{self.name}': transition listener {text} raised"))

    def command(self, to: str, reason: str) -> None:
        # Every command starts a new generation; a transition only if the stored state changes
        # (an elapsed OPEN that nobody observed is still stored as OPEN).
        if self.state == to:
            self.generation += 1
            if to == CLOSED:
                self.failures = 0
        else:
            self.go(to, reason)

    def reset(self) -> None:
        self.successes_at_reset = self.totals["success"]
        self.failures_at_reset = self.totals["failure"]
        self.last_failure = None
        self.command(CLOSED, "manual reset")

    def force_open(self) -> None:
        self.last_failure = None
        self.command(FORCED_OPEN, "forced open")

    def disable(self) -> None:
        self.command(DISABLED, "disabled")

    # ----- admission and outcomes -----

    def admit(self, now: float) -> Optional[ModelPermit]:
        """A permit, or None when rejected (counted)."""
        self.settle(now)
        if self.state in (CLOSED, DISABLED):
            return ModelPermit(self.generation, probe=False)
        if self.state == HALF_OPEN and self.in_flight < self.config.half_open_max_calls:
            self.in_flight += 1
            return ModelPermit(self.generation, probe=True)
        self.totals["rejected"] += 1
        return None

    def retry_after(self, now: float) -> Optional[float]:
        """What a rejection says about the next probe."""
        if self.state == FORCED_OPEN:
            return None
        if self.state == HALF_OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.config.recovery - now)

    def current(self, p: ModelPermit) -> bool:
        if p.generation != self.generation:
            return False
        return (self.state == HALF_OPEN) == p.probe and self.state in (CLOSED, DISABLED, HALF_OPEN)

    def record(self, p: ModelPermit, outcome: str, error: Optional[BaseException], now: float) -> None:
        """`outcome` is success, failure or ignored."""
        assert p.pending
        p.pending = False
        self.totals[outcome] += 1
        if not self.current(p):
            return  # stale: counted, changes nothing
        if self.state == CLOSED:
            if outcome == "success":
                self.failures = 0
            elif outcome == "failure":
                self.failures += 1
                if self.failures >= self.config.failure_threshold:
                    self.trip(f"{self.failures} consecutive failures", error, now)
        elif self.state == HALF_OPEN:
            if outcome == "success":
                self.successes += 1
                self.in_flight -= 1
                if self.successes >= self.config.success_threshold:
                    self.go(CLOSED, "recovery successful")
            elif outcome == "failure":
                self.trip("half-open probe failed", error, now)
            else:
                self.in_flight -= 1

    def trip(self, reason: str, error: Optional[BaseException], now: float) -> None:
        self.go(OPEN, reason)
        self.opened_at = now
        self.last_failure = error

    # ----- what the breaker reports -----

    def shown(self) -> str:
        return SHOWN[self.state]

    def mode(self) -> str:
        return {FORCED_OPEN: "forced_open", DISABLED: "disabled"}.get(self.state, "normal")

    def failure_count(self) -> int:
        if self.state == CLOSED:
            return self.failures
        if self.state in (OPEN, HALF_OPEN):
            return self.config.failure_threshold
        return 0

    def status(self) -> dict:
        t = self.totals
        return {
            "name": self.name,
            "state": self.shown(),
            "failure_count": self.failure_count(),
            "success_count": t["success"] - self.successes_at_reset,
            "failure_threshold": self.config.failure_threshold,
            "recovery_timeout_seconds": self.config.recovery,
            "last_failure_time": "set" if t["failure"] > self.failures_at_reset else None,
            "time_until_recovery_seconds": "set" if self.state == OPEN else None,
            "success_threshold": self.config.success_threshold,
            "half_open_max_calls": self.config.half_open_max_calls,
            "total_failures": t["failure"],
            "total_rejections": t["rejected"],
            "mode": self.mode(),
            "scope": "process",
            "counts_scope": "process",
            "degraded": False,
            "failure_rate": None,
            "slow_call_rate": None,
            "calls_in_window": None,
            # The model's breakers have no limit on calls in flight (test_concurrency_limit.py).
            "max_concurrent_calls": None,
            "in_flight": None,
            "total_full_rejections": 0,
            "concurrency_scope": None,
        }

    def metrics(self) -> dict:
        t = self.totals
        requests = t["success"] + t["failure"] + t["ignored"] + t["rejected"]
        return {
            "state": self.shown(),
            "total_requests": requests,
            "total_successes": t["success"],
            "total_failures": t["failure"],
            "success_rate": 0.0 if requests == 0 else t["success"] / requests * 100.0,
            "circuit_opened_count": t["opened"],
            "current_failure_count": self.failure_count(),
            "total_rejections": t["rejected"],
            "total_ignored": t["ignored"],
            "mode": self.mode(),
            "scope": "process",
            "counts_scope": "process",
            "failure_rate": None,
            "slow_call_rate": None,
            "calls_in_window": None,
            "in_flight": None,
            "total_full_rejections": 0,
        }


def classify_error(config: Config, error: BaseException) -> str:
    """What an exception from the call counts as (README: "What counts as failure")."""
    if not isinstance(error, Exception):
        return "ignored"  # BaseException that is not an Exception
    if config.filters:
        if isinstance(error, Excluded):
            return "ignored"
        if not isinstance(error, Boom):
            return "ignored"
    return "failure"


def classify_value(config: Config, value: Any) -> Tuple[str, bool]:
    """What a returned value counts as, and whether the predicate raised (logged)."""
    if not config.predicate:
        return "success", False
    if value == "explode":
        return "failure", True
    return ("failure" if value == "bad" else "success"), False


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def now() -> float:
    return time.monotonic()
