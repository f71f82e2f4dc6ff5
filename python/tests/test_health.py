"""The health endpoint (FastAPI router and plain ASGI app) and the state-header middleware."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from circuit_breaker import CircuitBreaker, CircuitBreakerRegistry
from circuit_breaker.fastapi import StateHeaderMiddleware, health_router
from circuit_breaker.health import health_app


@pytest.fixture()
def registry() -> CircuitBreakerRegistry:
    r = CircuitBreakerRegistry()
    r.reset_all()
    for name in list(r.get_all()):
        if name.startswith("health_"):
            r.unregister(name)
    r.register("health_quotes", CircuitBreaker("health_quotes", failure_threshold=1, recovery_timeout_seconds=60))
    r.register("health_news", CircuitBreaker("health_news", failure_threshold=1, recovery_timeout_seconds=60))
    return r


def trip(registry: CircuitBreakerRegistry, name: str) -> None:
    with pytest.raises(ZeroDivisionError):
        registry.get(name).call(lambda: 1 / 0)


def test_router_reports_every_breaker_and_503_for_critical_open(registry: CircuitBreakerRegistry) -> None:
    app = FastAPI()
    app.include_router(health_router(critical={"health_quotes"}))
    client = TestClient(app)
    response = client.get("/health/circuit-breakers")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["total"] == len(registry.get_all())
    assert (body["open"], body["half_open"]) == (0, 0)
    assert body["circuit_breakers"]["health_quotes"]["state"] == "CLOSED"
    assert set(body["circuit_breakers"]["health_quotes"]) >= {"name", "failure_count", "last_state_change"}

    trip(registry, "health_news")  # not critical: degraded, still 200
    response = client.get("/health/circuit-breakers")
    assert (response.status_code, response.json()["status"], response.json()["open"]) == (200, "degraded", 1)

    trip(registry, "health_quotes")
    response = client.get("/health/circuit-breakers")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["critical_open"] == ["health_quotes"]
    registry.reset_all()


def test_plain_asgi_app(registry: CircuitBreakerRegistry) -> None:
    client = TestClient(health_app(critical=["health_news"]))
    assert client.get("/").status_code == 200
    trip(registry, "health_news")
    response = client.get("/anything")
    assert response.status_code == 503 and response.json()["open"] == 1
    assert client.post("/").status_code == 405
    registry.reset_all()


def test_state_header_middleware(registry: CircuitBreakerRegistry) -> None:
    app = FastAPI()
    app.add_middleware(StateHeaderMiddleware, breaker="health_quotes")

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "ok"}

    client = TestClient(app)
    assert client.get("/ping").headers["x-circuit-breaker-state"] == "CLOSED"
    trip(registry, "health_quotes")
    assert client.get("/ping").headers["x-circuit-breaker-state"] == "OPEN"
    with pytest.raises(KeyError):
        StateHeaderMiddleware(app, breaker="health_missing")
    registry.reset_all()
