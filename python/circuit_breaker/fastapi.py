"""FastAPI integration: a router serving ``GET /health/circuit-breakers``.

    from circuit_breaker.fastapi import health_router, StateHeaderMiddleware
    app.include_router(health_router(critical={"current_price"}))
    app.add_middleware(StateHeaderMiddleware, breaker="options_chain")

Needs ``pip install .[fastapi]``. The body is :func:`circuit_breaker.health.health_report`'s.
"""

from __future__ import annotations

from typing import Iterable, Optional

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ._registry import CircuitBreakerRegistry
from .health import StateHeaderMiddleware, health_report

__all__ = ["health_router", "StateHeaderMiddleware"]


def health_router(
    registry: Optional[CircuitBreakerRegistry] = None,
    *,
    critical: Iterable[str] = (),
    path: str = "/health/circuit-breakers",
) -> APIRouter:
    """A router answering ``GET path`` with every breaker's status and the totals: 200, or 503
    when a breaker named in ``critical`` is open."""
    router = APIRouter()
    critical = frozenset(critical)

    @router.get(path, tags=["health"])
    def circuit_breaker_health() -> JSONResponse:
        code, body = health_report(registry, critical)
        return JSONResponse(status_code=code, content=body)

    del circuit_breaker_health  # registered on the router by the decorator
    return router
