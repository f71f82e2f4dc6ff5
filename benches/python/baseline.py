"""The "before": a faithful pure-Python implementation of the documented module, as its
document describes it (state guarded by one ``threading.Lock``). Used only as a benchmark
baseline."""

from __future__ import annotations

import enum
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, TypeVar

T = TypeVar("T")


class CircuitBreakerState(enum.Enum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreakerError(Exception):
    pass


class CircuitBreakerOpenError(CircuitBreakerError):
    pass


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int = 5, recovery_timeout_seconds: float = 60) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout_seconds = recovery_timeout_seconds
        self._lock = threading.Lock()
        self._state = CircuitBreakerState.CLOSED
        self._failure_count = 0
        self._success_count = 0
        self._last_failure_time: Optional[datetime] = None
        self._last_failure_monotonic: Optional[float] = None
        self._last_state_change = datetime.now(timezone.utc)

    def _transition(self, state: CircuitBreakerState) -> None:
        self._state = state
        self._last_state_change = datetime.now(timezone.utc)

    def _should_attempt_reset(self) -> bool:
        return (
            self._last_failure_monotonic is not None
            and time.monotonic() - self._last_failure_monotonic >= self.recovery_timeout_seconds
        )

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            if self._state is CircuitBreakerState.OPEN:
                if self._should_attempt_reset():
                    self._transition(CircuitBreakerState.HALF_OPEN)
                else:
                    raise CircuitBreakerOpenError(f"Circuit breaker '{self.name}' is OPEN")
        try:
            result = func(*args, **kwargs)
        except Exception:
            with self._lock:
                self._failure_count += 1
                self._last_failure_time = datetime.now(timezone.utc)
                self._last_failure_monotonic = time.monotonic()
                if (
                    self._state is CircuitBreakerState.HALF_OPEN
                    or self._failure_count >= self.failure_threshold
                ):
                    self._transition(CircuitBreakerState.OPEN)
            raise
        with self._lock:
            self._success_count += 1
            if self._state is CircuitBreakerState.HALF_OPEN:
                self._failure_count = 0
                self._transition(CircuitBreakerState.CLOSED)
            elif self._failure_count:
                self._failure_count = 0
        return result

    def get_status(self) -> Dict[str, Any]:
        with self._lock:
            return {"name": self.name, "state": self._state.value, "failure_count": self._failure_count}
