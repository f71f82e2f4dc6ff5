"""HTTP helpers against a real server on 127.0.0.1 that the test switches between healthy,
failing, not-found and slow; and a port where nothing listens."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List

import httpx
import pytest
import requests

from circuit_breaker import CircuitBreakerOpenError, CircuitBreakerRegistry
from circuit_breaker.http import (
    async_protected_get,
    get_all_circuit_breaker_statuses,
    get_circuit_breaker_status,
    protected_get,
    protected_post,
    reset_circuit_breaker,
)


class Server:
    def __init__(self) -> None:
        self.mode = "healthy"
        self.hits: List[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                server.hits.append(self.path)
                if server.mode == "slow":
                    time.sleep(0.5)
                code = {"healthy": 200, "slow": 200, "failing": 503, "notfound": 404}[server.mode]
                body = b'{"ok": true}'
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                self._answer()

        class Quiet(ThreadingHTTPServer):
            # The timeout tests hang up on slow answers: the write then fails, as expected. Left
            # to the default, a handler thread prints the traceback while the next test runs.
            daemon_threads = False
            block_on_close = True  # server_close() waits for the handler threads

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()
    registry = CircuitBreakerRegistry()
    for name in list(registry.get_all()):
        if name.startswith("http://127.0.0.1") or name.startswith("svc-"):
            registry.unregister(name)


def test_5xx_opens_the_service_breaker_4xx_does_not(server: Server) -> None:
    assert protected_get(server.url + "/a", timeout=2, failure_threshold=3, recovery_timeout_seconds=0.2).status_code == 200
    status = get_circuit_breaker_status(server.url)
    assert status is not None and status["name"] == server.url and status["failure_threshold"] == 3
    by_url = get_circuit_breaker_status(server.url + "/some/path")
    assert by_url is not None and by_url["name"] == server.url, "a URL resolves to its service"

    server.mode = "notfound"
    for _ in range(5):
        assert protected_get(server.url + "/missing", timeout=2).status_code == 404
    assert get_circuit_breaker_status(server.url)["state"] == "CLOSED"  # type: ignore[index]

    server.mode = "failing"
    for _ in range(3):
        assert protected_post(server.url + "/b", json={"x": 1}, timeout=2).status_code == 503
    hits = len(server.hits)
    with pytest.raises(CircuitBreakerOpenError):
        protected_get(server.url + "/c", timeout=2)
    assert len(server.hits) == hits, "rejected without sending"
    assert get_circuit_breaker_status(server.url)["state"] == "OPEN"  # type: ignore[index]

    server.mode = "healthy"
    time.sleep(0.25)
    assert protected_get(server.url + "/d", timeout=2).status_code == 200
    assert get_circuit_breaker_status(server.url)["state"] == "CLOSED"  # type: ignore[index]


def test_timeouts_and_connection_errors_are_failures(server: Server) -> None:
    server.mode = "slow"
    for _ in range(2):
        with pytest.raises(requests.Timeout):
            protected_get(server.url, timeout=0.1, service_name="svc-slow", failure_threshold=2)
    assert get_circuit_breaker_status("svc-slow")["state"] == "OPEN"  # type: ignore[index]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(requests.ConnectionError):
        protected_get(dead, timeout=1, service_name="svc-dead", failure_threshold=1)
    with pytest.raises(CircuitBreakerOpenError):
        protected_get(dead, timeout=1, service_name="svc-dead")
    statuses = get_all_circuit_breaker_statuses()
    assert statuses["svc-dead"]["state"] == "OPEN" and "svc-slow" in statuses
    reset_circuit_breaker("svc-dead")
    assert get_circuit_breaker_status("svc-dead")["state"] == "CLOSED"  # type: ignore[index]
    assert get_circuit_breaker_status("svc-never-used") is None


def test_httpx_sync_client_and_async(server: Server) -> None:
    server.mode = "failing"
    with httpx.Client() as client:
        for _ in range(2):
            assert protected_get(server.url, session=client, service_name="svc-httpx", failure_threshold=2).status_code == 503
        with pytest.raises(CircuitBreakerOpenError):
            protected_get(server.url, session=client, service_name="svc-httpx")

    server.mode = "healthy"

    async def main() -> List[int]:
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(
                *(async_protected_get(server.url + f"/{i}", client=client, service_name="svc-async") for i in range(20))
            )
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 20
    server.mode = "slow"

    async def slow() -> None:
        for _ in range(2):
            with pytest.raises(httpx.TimeoutException):
                await async_protected_get(server.url, timeout=0.1, service_name="svc-async-slow", failure_threshold=2)
        with pytest.raises(CircuitBreakerOpenError):
            await async_protected_get(server.url, service_name="svc-async-slow")

    asyncio.run(slow())
