"""The health report of every registered breaker, and a plain ASGI app and middleware serving it
(no web framework needed; ``circuit_breaker.fastapi`` wraps the same report in a router).

    from circuit_breaker.health import health_app
    app = health_app(critical={"current_price"})   # GET -> 200, or 503 if a critical breaker is open
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict, Iterable, MutableMapping, Optional, Tuple

from ._registry import CircuitBreakerRegistry

__all__ = ["health_report", "health_app", "StateHeaderMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def health_report(
    registry: Optional[CircuitBreakerRegistry] = None, critical: Iterable[str] = ()
) -> Tuple[int, Dict[str, Any]]:
    """``(http_status, body)``: 503 if any breaker named in ``critical`` is open, else 200.

    ``body`` holds ``status`` (``'healthy'``, ``'degraded'`` when some breaker is open or
    half-open, ``'unhealthy'`` when a critical one is open), the totals ``total``, ``open``,
    ``half_open`` and ``closed``, the open ``critical`` names, and ``circuit_breakers``: every
    breaker's ``get_status()`` by name.
    """
    registry = registry if registry is not None else CircuitBreakerRegistry()
    statuses = registry.get_status_all()
    count = {state: sum(1 for s in statuses.values() if s["state"] == state) for state in ("OPEN", "HALF_OPEN", "CLOSED")}
    critical_open = sorted(name for name in set(critical) if name in statuses and statuses[name]["state"] == "OPEN")
    if critical_open:
        status, code = "unhealthy", 503
    elif count["OPEN"] or count["HALF_OPEN"]:
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    body = {
        "status": status,
        "total": len(statuses),
        "open": count["OPEN"],
        "half_open": count["HALF_OPEN"],
        "closed": count["CLOSED"],
        "critical_open": critical_open,
        "circuit_breakers": statuses,
    }
    return code, body


def health_app(registry: Optional[CircuitBreakerRegistry] = None, critical: Iterable[str] = ()) -> ASGIApp:
    """A minimal ASGI app that answers every HTTP GET with :func:`health_report` as JSON."""
    critical = frozenset(critical)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            code, payload = 405, b'{"detail":"Method Not Allowed"}'
        else:
            code, body = health_report(registry, critical)
            payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


class StateHeaderMiddleware:
    """ASGI middleware adding ``X-Circuit-Breaker-State: <state>`` of one breaker to every
    HTTP response. With FastAPI: ``app.add_middleware(StateHeaderMiddleware, breaker="options_chain")``."""

    def __init__(self, app: ASGIApp, breaker: str, registry: Optional[CircuitBreakerRegistry] = None) -> None:
        self.app = app
        self.breaker = breaker
        self.registry = registry if registry is not None else CircuitBreakerRegistry()
        self.registry.get(breaker)  # an unknown name is a KeyError now, not on every request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = self.registry.get(self.breaker).get_state().value
                message["headers"] = list(message.get("headers", [])) + [
                    (b"x-circuit-breaker-state", state.encode())
                ]
            await send(message)

        await self.app(scope, receive, send_with_header)
