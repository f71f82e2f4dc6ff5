"""A lock-free circuit breaker in Rust: a drop-in replacement for the documented
``circuit_breaker`` module (``CircuitBreaker``, ``CircuitBreakerRegistry``,
``CircuitBreakerState``, ``CircuitBreakerOpenError``, ``CircuitBreakerError``).

>>> from circuit_breaker import CircuitBreaker
>>> breaker = CircuitBreaker("data_api", failure_threshold=3, recovery_timeout_seconds=30)
>>> breaker.call(lambda symbol: {"symbol": symbol}, symbol="AAPL")
{'symbol': 'AAPL'}
"""

from ._types import (
    BreakerMetrics,
    BreakerStatus,
    CircuitBreakerError,
    CircuitBreakerFullError,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    RedisStoreError,
    SharedMemoryError,
)
from ._breaker import CircuitBreaker, Protected, circuit_breaker
from ._core import Permit, RedisStore, SharedMemory, __version__
from ._registry import CircuitBreakerRegistry

__all__ = [
    "BreakerMetrics",
    "BreakerStatus",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitBreakerFullError",
    "CircuitBreakerOpenError",
    "CircuitBreakerRegistry",
    "CircuitBreakerState",
    "Permit",
    "Protected",
    "RedisStore",
    "RedisStoreError",
    "SharedMemory",
    "SharedMemoryError",
    "circuit_breaker",
    "__version__",
]
