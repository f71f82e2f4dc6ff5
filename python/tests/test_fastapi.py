"""The document's FastAPI example, run for real."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from circuit_breaker import CircuitBreakerOpenError, CircuitBreakerRegistry

logger = logging.getLogger(__name__)


def test_options_endpoint_fails_three_times_then_503() -> None:
    app = FastAPI()
    registry = CircuitBreakerRegistry()
    registry.reset_all()
    upstream_calls = []

    def fetch_options_from_api(symbol: str) -> Any:
        upstream_calls.append(symbol)
        raise ConnectionError("options provider down")

    @app.get("/api/options/{symbol}")
    async def get_options(symbol: str) -> Any:
        """Fetch options chain with circuit breaker protection."""
        breaker = registry.get("options_chain")

        try:
            data = breaker.call(fetch_options_from_api, symbol)
            return data
        except CircuitBreakerOpenError:
            raise HTTPException(
                status_code=503,
                detail="Options service temporarily unavailable. Try again later.",
            )
        except Exception as e:
            logger.error(f"Failed to fetch options: {e}")
            raise HTTPException(status_code=500, detail="Failed to fetch options data")

    client = TestClient(app)
    codes = [client.get("/api/options/AAPL").status_code for _ in range(5)]
    assert codes == [500, 500, 500, 503, 503]
    assert len(upstream_calls) == 3
    assert client.get("/api/options/AAPL").json()["detail"].startswith("Options service temporarily unavailable")
    registry.reset_all()
