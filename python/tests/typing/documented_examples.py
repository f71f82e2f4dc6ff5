"""The document's examples, checked by ``mypy --strict`` (see test_typing.py). Not run."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from circuit_breaker import (
    BreakerStatus,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    CircuitBreakerState,
)

logger = logging.getLogger(__name__)

breaker = CircuitBreaker(
    name="my_api_endpoint",
    failure_threshold=5,
    recovery_timeout_seconds=60,
)
fractional = CircuitBreaker("fast", 3, 0.5, success_threshold=2, half_open_max_calls=2)


def fetch_data(symbol: str) -> Dict[str, float]:
    return {symbol: 1.0}


def use_call() -> Optional[Dict[str, float]]:
    try:
        data: Dict[str, float] = breaker.call(fetch_data, symbol="AAPL")
        return data
    except CircuitBreakerOpenError as e:
        wait: Optional[float] = e.time_until_recovery_seconds
        name: str = e.name
        logger.info("open %s %s", name, wait)
        return None
    except CircuitBreakerError:
        return None


def check_state() -> str:
    if breaker.is_open():
        return "open"
    elif breaker.is_half_open():
        return "half-open"
    elif breaker.is_closed():
        return "closed"
    state: CircuitBreakerState = breaker.get_state()
    status: BreakerStatus = breaker.get_status()
    state_name: str = status["state"]
    until: Optional[float] = status["time_until_recovery_seconds"]
    breaker.reset()
    return f"{state} {status['failure_count']}"


def registry_use() -> List[str]:
    registry = CircuitBreakerRegistry()
    price: CircuitBreaker = registry.get("current_price")
    value: float = price.call(lambda symbol: 150.25, symbol="AAPL")
    custom_breaker = CircuitBreaker(name="my_custom_api", failure_threshold=10, recovery_timeout_seconds=120)
    registry.register("my_custom_api", custom_breaker)
    all_breakers: Dict[str, CircuitBreaker] = registry.get_all()
    statuses: Dict[str, BreakerStatus] = registry.get_status_all()
    open_breakers: List[str] = registry.get_open_breakers()
    half_open: List[str] = registry.get_half_open_breakers()
    closed_breakers: List[str] = registry.get_closed_breakers()
    registry.reset_all()
    defaults: Dict[str, Dict[str, Any]] = CircuitBreakerRegistry._default_breakers
    logger.info("%s %s %s %s %s", value, all_breakers, statuses, half_open, defaults)
    return open_breakers + closed_breakers
