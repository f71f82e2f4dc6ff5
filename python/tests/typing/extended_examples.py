"""The API beyond the documented module, checked by ``mypy --strict`` (see test_typing.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional

import circuit_breaker as circuit_breaker_module
from circuit_breaker import (
    BreakerMetrics,
    BreakerStatus,
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitBreakerRegistry,
    CircuitBreakerState,
    Permit,
    circuit_breaker,
)

breaker = CircuitBreaker(
    "payments",
    failure_threshold=3,
    recovery_timeout_seconds=0.5,
    expected_exceptions=(TimeoutError, ConnectionError),
    exclude=[PermissionError, lambda e: "404" in str(e)],
    failure_predicate=lambda r: r is None,
    fallback=lambda *a, **k: None,
    fallback_on_failure=True,
)


@breaker
def charge(amount: int) -> str:
    return f"charged {amount}"


@circuit_breaker(failure_threshold=2)
async def fetch(symbol: str) -> float:
    await asyncio.sleep(0)
    return 1.0


def on_change(b: CircuitBreaker, old: CircuitBreakerState, new: CircuitBreakerState, reason: str) -> None:
    print(b.name, old, new, reason)


async def use() -> List[Any]:
    breaker.add_listener(on_change)
    permit: Permit = breaker.acquire()
    failed: bool = permit.record_exception(None)
    with breaker:
        pass
    async with breaker:
        pass
    price: float = await breaker.call_async(fetch, "AAPL")
    metrics: BreakerMetrics = breaker.get_metrics()
    rate: float = metrics["success_rate"]
    last: Optional[BaseException] = breaker.last_failure
    try:
        breaker.force_open()
        breaker.call(charge, 1)
    except CircuitBreakerOpenError as e:
        last = e.last_failure
    breaker.disable()
    breaker.reset()
    registry = CircuitBreakerRegistry()
    created: CircuitBreaker = registry.get_or_create("x", failure_threshold=2)
    removed: CircuitBreaker = registry.unregister("x")
    names: List[str] = registry.load_defaults({"y": {"failure_threshold": 2}})
    breaker.remove_listener(on_change)
    return [failed, price, metrics, last, created, removed, names, charge(3)]


@circuit_breaker(failure_threshold=3)
async def get_chain(symbol: str) -> List[str]:
    return [symbol]


class Quotes:
    @breaker
    def quote(self, symbol: str) -> float:
        return 1.0


async def decorated() -> List[Any]:
    chain: List[str] = await get_chain("AAPL")
    status: BreakerStatus = get_chain.circuit_breaker.get_status()
    price: float = Quotes().quote("AAPL")
    via_class: CircuitBreaker = Quotes.quote.circuit_breaker
    version: str = circuit_breaker_module.__version__
    return [chain, status, price, via_class, version]
