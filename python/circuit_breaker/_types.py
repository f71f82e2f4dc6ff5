"""The parts of the API that must be Python classes: the state enum and the exceptions.

The compiled ``circuit_breaker._core`` looks these up once and raises / returns them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Literal, Optional, Tuple, TypedDict, Union

if TYPE_CHECKING:
    from . import _core

__all__ = [
    "BreakerMetrics",
    "BreakerStatus",
    "CircuitBreakerState",
    "CircuitBreakerError",
    "CircuitBreakerOpenError",
    "CircuitBreakerFullError",
    "SharedMemoryError",
    "RedisStoreError",
]


class CircuitBreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "CLOSED"
    """Normal operation: requests pass through to the service."""
    OPEN = "OPEN"
    """Service failing: requests are rejected immediately."""
    HALF_OPEN = "HALF_OPEN"
    """Testing recovery: a limited number of probe requests pass."""


class CircuitBreakerError(Exception):
    """Base class of the errors this package raises."""


class SharedMemoryError(CircuitBreakerError, OSError):
    """A shared-memory region cannot be used: the file is not a region, is a symbolic link, is
    owned by another user or writable by every user (refused and left alone), every slot holds a
    breaker already, or the operating system refused to open or map it. The message names the
    file and says what to do."""


class RedisStoreError(CircuitBreakerError, ConnectionError):
    """Redis refused the breakers' store: a wrong password, or a user whose ACL lacks a command
    the store needs (PING, EVALSHA, EVAL, SCRIPT, TYPE, STRLEN, GET, GETRANGE, SET and PUBLISH on
    the key prefix, PSUBSCRIBE to it; a database that does not exist is a ``ValueError``). Raised
    once, when the store is opened or a breaker attached; an unreachable or
    failing Redis never raises (breakers then work on this host's own state)."""


class CircuitBreakerOpenError(CircuitBreakerError):
    """A call was rejected without running: the breaker is OPEN (or HALF_OPEN with every probe
    slot taken).

    ``name`` is the breaker's name, ``time_until_recovery_seconds`` the seconds until it admits a
    probe again (``0.0`` in HALF_OPEN, ``None`` when forced open until reset), ``state`` the
    state that rejected the call and ``last_failure`` the exception of the failure that last
    opened the breaker (``None`` if it was opened by hand or by a ``failure_predicate``).

    ``args`` is ``(name, time_until_recovery_seconds, state, source)``: ``source`` is the
    ``last_failure`` exception for an error built by hand, and the breaker itself for one a
    breaker raised (so the rejection path does no work for ``last_failure`` unless it is read);
    ``breaker`` is that breaker, or ``None``.
    """

    def __init__(
        self,
        name: str,
        time_until_recovery_seconds: Optional[float] = None,
        state: CircuitBreakerState = CircuitBreakerState.OPEN,
        last_failure: Optional[BaseException] = None,
    ) -> None:
        # The breaker builds this error through BaseException.__new__ and skips this method
        # (so a rejection runs no Python code), passing itself in place of ``last_failure``
        # so that it is only looked up if asked for. Everything is derived from ``args``.
        super().__init__(name, time_until_recovery_seconds, state, last_failure)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.name, self.time_until_recovery_seconds, self.state, self.last_failure))

    @property
    def last_failure(self) -> Optional[BaseException]:
        """The exception of the failure that last opened the breaker, if any."""
        source = self.args[3] if len(self.args) > 3 else None
        if source is None or isinstance(source, BaseException):
            return source
        last: Optional[BaseException] = source.last_failure
        return last

    @property
    def breaker(self) -> Optional["_core.BreakerCore"]:
        """The breaker that rejected the call (``None`` for an error built by hand)."""
        source = self.args[3] if len(self.args) > 3 else None
        return None if source is None or isinstance(source, BaseException) else source

    @property
    def name(self) -> str:
        """The name of the breaker that rejected the call."""
        return str(self.args[0])

    @property
    def time_until_recovery_seconds(self) -> Optional[float]:
        """Seconds until the breaker admits a probe; ``None`` if it is open until reset."""
        value = self.args[1] if len(self.args) > 1 else None
        return None if value is None else float(value)

    @property
    def state(self) -> CircuitBreakerState:
        """The state that rejected the call."""
        value = self.args[2] if len(self.args) > 2 else CircuitBreakerState.OPEN
        return CircuitBreakerState(value)

    def __str__(self) -> str:
        seconds = self.time_until_recovery_seconds
        if seconds is None:
            return f"CircuitBreaker '{self.name}' is OPEN until reset"
        if self.state is CircuitBreakerState.HALF_OPEN:
            return (
                f"CircuitBreaker '{self.name}' is HALF_OPEN and every probe slot is taken; "
                f"next probe in {seconds:.3f} s"
            )
        return f"CircuitBreaker '{self.name}' is OPEN; next probe in {seconds:.3f} s"


class CircuitBreakerFullError(CircuitBreakerOpenError):
    """A call was rejected without running because ``max_concurrent_calls`` calls were already in
    flight through the breaker (in this process, or on the whole host for a breaker in shared
    memory).

    A subclass of :class:`CircuitBreakerOpenError`, so every handler written for rejections
    (``except CircuitBreakerOpenError:``, ``fallback=``) handles it unchanged; catch it first to
    tell "full" from "open". It is not a failure: it never trips the breaker.

    ``in_flight`` is the number of calls in flight that filled it, ``max_concurrent_calls`` the
    limit; ``time_until_recovery_seconds`` is ``0.0`` (a place frees as soon as a call ends) and
    ``last_failure`` is ``None``. ``args`` is ``(name, 0.0, state, source, in_flight,
    max_concurrent_calls)``.
    """

    def __init__(
        self,
        name: str,
        in_flight: int,
        max_concurrent_calls: int,
        state: CircuitBreakerState = CircuitBreakerState.CLOSED,
    ) -> None:
        # The breaker builds this error through BaseException.__new__ and skips this method.
        BaseException.__init__(self, name, 0.0, state, None, in_flight, max_concurrent_calls)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.name, self.in_flight, self.max_concurrent_calls, self.state))

    @property
    def last_failure(self) -> Optional[BaseException]:
        """Always ``None``: a full breaker rejects for its calls in flight, not for a failure."""
        return None

    @property
    def in_flight(self) -> int:
        """The calls in flight when this one was rejected."""
        return int(self.args[4])

    @property
    def max_concurrent_calls(self) -> int:
        """The breaker's limit on calls in flight."""
        return int(self.args[5])

    def __str__(self) -> str:
        return (
            f"CircuitBreaker '{self.name}' is full: {self.in_flight} calls in flight "
            f"(max_concurrent_calls={self.max_concurrent_calls})"
        )


StateName = Literal["CLOSED", "OPEN", "HALF_OPEN"]
Mode = Literal["normal", "forced_open", "disabled"]
Scope = Literal["process", "host", "fleet"]
CountsScope = Literal["process", "host"]


class BreakerStatus(TypedDict):
    """What ``CircuitBreaker.get_status()`` returns: the documented keys first, in order."""

    name: str
    state: StateName
    failure_count: int
    """Consecutive failures now (the threshold while OPEN or HALF_OPEN; 0 without one)."""
    success_count: int
    """Successes since creation or the last ``reset()``."""
    failure_threshold: Optional[int]
    """None when consecutive failures do not trip the breaker (the rate policies alone do)."""
    recovery_timeout_seconds: Union[int, float]
    last_failure_time: Optional[str]
    """ISO-8601 UTC with milliseconds, or None (no failure since the last reset)."""
    last_state_change: str
    time_until_recovery_seconds: Optional[float]
    """Seconds until a probe is admitted while OPEN, else None."""
    success_threshold: int
    half_open_max_calls: int
    total_failures: int
    total_rejections: int
    mode: Mode
    scope: Scope
    """Who shares the state: this process, the host (shared memory) or the fleet (Redis)."""
    counts_scope: CountsScope
    """What the counts cover: the host for a breaker in shared memory, else this process (a
    breaker in Redis shares its state fleet-wide but counts this process's calls)."""
    degraded: bool
    """True while a breaker in Redis cannot reach it (its state is then this process's own)."""
    failure_rate: Optional[float]
    """Failures / calls in the rate policies' window (None: no rate policy or no call yet)."""
    slow_call_rate: Optional[float]
    """Slow calls / calls in the window (None: no slow-call policy or no call yet)."""
    calls_in_window: Optional[int]
    """Calls in the window (None: no rate policy)."""
    max_concurrent_calls: Optional[int]
    """The limit on calls in flight (None: no limit)."""
    in_flight: Optional[int]
    """Calls admitted and not finished yet (host-wide for a breaker in shared memory); None
    without a limit (calls are then not counted, so that they cost nothing more)."""
    total_full_rejections: int
    """Calls rejected because the breaker was full (never counted as failures)."""
    concurrency_scope: Optional[CountsScope]
    """What ``max_concurrent_calls`` covers: this process, or the host for a breaker in shared
    memory (None: no limit)."""


class BreakerMetrics(TypedDict):
    """What ``CircuitBreaker.get_metrics()`` returns: counters since creation."""

    state: StateName
    total_requests: int
    total_successes: int
    total_failures: int
    success_rate: float
    """Percent of ``total_requests`` that succeeded (0.0 before any call)."""
    circuit_opened_count: int
    current_failure_count: int
    total_rejections: int
    total_ignored: int
    mode: Mode
    scope: Scope
    """Who shares the state: this process, the host (shared memory) or the fleet (Redis)."""
    counts_scope: CountsScope
    """What the counts cover (see ``BreakerStatus.counts_scope``)."""
    failure_rate: Optional[float]
    slow_call_rate: Optional[float]
    calls_in_window: Optional[int]
    in_flight: Optional[int]
    total_full_rejections: int
