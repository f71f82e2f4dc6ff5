"""``CircuitBreakerRegistry``: the process-wide set of named breakers."""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Dict, List, Mapping, Optional

from ._breaker import CircuitBreaker
from ._types import BreakerStatus

__all__ = ["CircuitBreakerRegistry"]


# Settings get_or_create compares with an existing breaker's.
_COMPARABLE = (
    "failure_threshold",
    "recovery_timeout_seconds",
    "success_threshold",
    "half_open_max_calls",
    "probe_timeout_seconds",
    "max_concurrent_calls",
)


class CircuitBreakerRegistry:
    """A process-wide singleton holding the named breakers.

    Every ``CircuitBreakerRegistry()`` returns the same object (also when threads race to
    create it). It starts with one breaker per entry of ``_default_breakers``; more can be
    added with :meth:`register`. Registration and lookup are thread-safe.
    """

    _default_breakers: ClassVar[Dict[str, Dict[str, Any]]] = {
        "current_price": {"failure_threshold": 5, "recovery_timeout_seconds": 60},
        "price_history": {"failure_threshold": 5, "recovery_timeout_seconds": 60},
        "options_chain": {
            "failure_threshold": 3,  # More conservative for complex operation
            "recovery_timeout_seconds": 90,  # Longer timeout
        },
        "ticker_info": {"failure_threshold": 5, "recovery_timeout_seconds": 60},
        "expirations": {"failure_threshold": 5, "recovery_timeout_seconds": 60},
    }

    _instance: ClassVar[Optional[CircuitBreakerRegistry]] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    _breakers: Dict[str, CircuitBreaker]
    _lock: threading.Lock

    def __new__(cls) -> CircuitBreakerRegistry:
        instance = cls._instance
        if instance is None:
            with cls._instance_lock:
                instance = cls._instance
                if instance is None:
                    instance = super().__new__(cls)
                    instance._lock = threading.Lock()
                    instance._breakers = {
                        name: CircuitBreaker(name, **config)
                        for name, config in cls._default_breakers.items()
                    }
                    cls._instance = instance
        return instance

    def register(self, name: str, breaker: CircuitBreaker) -> None:
        """Registers ``breaker`` under ``name``, replacing any breaker of that name."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        with self._lock:
            self._breakers[name] = breaker

    def get(self, name: str) -> CircuitBreaker:
        """The breaker registered as ``name``; ``KeyError`` listing the known names if none."""
        try:
            return self._breakers[name]
        except KeyError:
            known = ", ".join(sorted(self._breakers))
            raise KeyError(f"no circuit breaker named {name!r}; registered: {known}") from None

    def get_or_create(self, name: str, **config: Any) -> CircuitBreaker:
        """The breaker registered as ``name``, created with ``config`` (the ``CircuitBreaker``
        keyword arguments) and registered if there is none. Atomic: concurrent callers get the
        same breaker. Asking for settings that differ from an existing breaker's is a
        ``ValueError`` rather than a silent mismatch."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, **config)
                self._breakers[name] = breaker
                return breaker
        conflicts = [
            f"{key}={value!r} (it has {getattr(breaker, key)!r})"
            for key, value in config.items()
            if key in _COMPARABLE and getattr(breaker, key) != value
        ]
        if conflicts:
            raise ValueError(f"circuit breaker {name!r} already exists with other settings: {', '.join(conflicts)}")
        return breaker

    def unregister(self, name: str) -> CircuitBreaker:
        """Removes and returns the breaker registered as ``name``; ``KeyError`` if none."""
        with self._lock:
            breaker = self._breakers.pop(name, None)
            known = ", ".join(sorted(self._breakers))
        if breaker is None:
            raise KeyError(f"no circuit breaker named {name!r}; registered: {known}")
        return breaker

    def load_defaults(self, mapping: Mapping[str, Mapping[str, Any]], *, replace: bool = False) -> List[str]:
        """Creates a breaker per entry of ``mapping`` (name → ``CircuitBreaker`` keyword
        arguments), in the format of ``_default_breakers``. Every entry is validated before any
        is registered, so a bad one changes nothing. Names already registered are kept unless
        ``replace`` is true. Returns the names registered."""
        built = {name: CircuitBreaker(name, **dict(config)) for name, config in mapping.items()}
        with self._lock:
            names = [name for name in built if replace or name not in self._breakers]
            for name in names:
                self._breakers[name] = built[name]
        return names

    def get_all(self) -> Dict[str, CircuitBreaker]:
        """A copy of the name → breaker mapping."""
        with self._lock:
            return dict(self._breakers)

    def get_status_all(self) -> Dict[str, BreakerStatus]:
        """Every breaker's :meth:`CircuitBreaker.get_status`, by name."""
        return {name: breaker.get_status() for name, breaker in self.get_all().items()}

    def get_open_breakers(self) -> List[str]:
        """Names of the breakers that are OPEN now."""
        return [name for name, b in self.get_all().items() if b.is_open()]

    def get_half_open_breakers(self) -> List[str]:
        """Names of the breakers that are HALF_OPEN now."""
        return [name for name, b in self.get_all().items() if b.is_half_open()]

    def get_closed_breakers(self) -> List[str]:
        """Names of the breakers that are CLOSED now."""
        return [name for name, b in self.get_all().items() if b.is_closed()]

    def reset_all(self) -> None:
        """Resets every registered breaker."""
        for breaker in self.get_all().values():
            breaker.reset()
