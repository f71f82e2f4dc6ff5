"""The parts of the API that must be Python classes: the state enum and the exceptions.

The compiled ``circuit_breaker._core`` looks these up once and raises / returns them.
"""

from __future__ import annotations

import enum
from typing import Optional

__all__ = ["CircuitBreakerState", "CircuitBreakerError", "CircuitBreakerOpenError"]


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


class CircuitBreakerOpenError(CircuitBreakerError):
    """A call was rejected without running: the breaker is OPEN (or HALF_OPEN with every probe
    slot taken).

    ``name`` is the breaker's name, ``time_until_recovery_seconds`` the seconds until it admits a
    probe again (``0.0`` in HALF_OPEN, ``None`` when forced open until reset) and ``state`` the
    state that rejected the call.
    """

    def __init__(
        self,
        name: str,
        time_until_recovery_seconds: Optional[float] = None,
        state: CircuitBreakerState = CircuitBreakerState.OPEN,
    ) -> None:
        # The breaker builds this error through BaseException.__new__ with the same three
        # arguments and skips this method, so everything must be derived from ``args``.
        super().__init__(name, time_until_recovery_seconds, state)

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
                f"retry in {seconds:.3f} s"
            )
        return f"CircuitBreaker '{self.name}' is OPEN; next probe in {seconds:.3f} s"
