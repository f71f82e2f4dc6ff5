"""The FastAPI app of issue 22, as a user would write it: one breaker in front of an upstream that
may hang, called from a sync endpoint (thread pool, `requests`) and from an async endpoint
(`httpx.AsyncClient`), plus an endpoint that needs no upstream at all.

Run it with `uvicorn hung_app:app --workers 4` (or gunicorn with `uvicorn_worker.UvicornWorker`)
from this folder. Environment:

- `UPSTREAM_URL`: the dependency (required).
- `CB_LIMIT`: `max_concurrent_calls` of the breaker; unset: no limit (the keyword is not passed).
- `CB_PROBE_TIMEOUT`: `probe_timeout_seconds`; unset: the library's default.
- `CIRCUIT_BREAKER_SHARED_MEMORY`: read by the library itself (one breaker per host).

Every answer names the worker's pid, so a test can tell which process served it. A rejection
(`CircuitBreakerOpenError`, of which the "full" error is a subclass) is a 503 whose body names
the exception class and its message; an upstream timeout is a 504, any other upstream error a 502.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict

import httpx
import requests
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError

UPSTREAM = os.environ["UPSTREAM_URL"]
UPSTREAM_TIMEOUT = 4.0  # seconds: the client timeout of issue 22

OPTIONS: Dict[str, Any] = {}
if os.environ.get("CB_PROBE_TIMEOUT"):
    OPTIONS["probe_timeout_seconds"] = float(os.environ["CB_PROBE_TIMEOUT"])
if os.environ.get("CB_LIMIT"):
    OPTIONS["max_concurrent_calls"] = int(os.environ["CB_LIMIT"])

# The breaker must not simply trip: the point is an upstream that accepts and never answers, so
# the failure threshold is far above the number of calls that can time out during a test.
upstream = CircuitBreaker("upstream", failure_threshold=100_000, recovery_timeout_seconds=5, **OPTIONS)
PID = os.getpid()
client: httpx.AsyncClient  # one per worker, made at startup (building one loads the CA bundle:
# done by the first request instead, it would hold up that worker's event loop for a while)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global client
    async with httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT) as client:  # httpx's default pool (100)
        yield


app = FastAPI(lifespan=lifespan)


def rejected(exc: CircuitBreakerOpenError) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "message": str(exc), "pid": PID}, status_code=503)


def failed(status: int, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "pid": PID}, status_code=status)


def fetch_sync() -> int:
    return requests.get(f"{UPSTREAM}/data", timeout=UPSTREAM_TIMEOUT).status_code


@app.get("/sync")
def sync_endpoint() -> Any:
    try:
        status = upstream.call(fetch_sync)
    except CircuitBreakerOpenError as exc:
        return rejected(exc)
    except requests.Timeout as exc:
        return failed(504, exc)
    except requests.RequestException as exc:
        return failed(502, exc)
    return {"upstream_status": status, "pid": PID}


async def fetch_async() -> int:
    return (await client.get(f"{UPSTREAM}/data")).status_code


@app.get("/async")
async def async_endpoint() -> Any:
    try:
        status = await upstream.call_async(fetch_async)
    except CircuitBreakerOpenError as exc:
        return rejected(exc)
    except httpx.TimeoutException as exc:
        return failed(504, exc)
    except httpx.HTTPError as exc:
        return failed(502, exc)
    return {"upstream_status": status, "pid": PID}


@app.get("/local")
def local_endpoint() -> Any:
    """Needs no upstream. A sync endpoint on purpose: it shares the thread pool with `/sync`, which
    is how a hung dependency takes down endpoints that never call it (issue 22's table)."""
    return {"pid": PID}
