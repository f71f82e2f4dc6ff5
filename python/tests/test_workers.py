"""The README's FastAPI app, unchanged, under real `uvicorn --workers 4` and `gunicorn --workers 4`
with only CIRCUIT_BREAKER_SHARED_MEMORY set, calling a local upstream that fails for 12 s:
the upstream gets at most the threshold plus one probe per recovery window, every health answer
agrees, and every transition is logged once (by whichever worker made it)."""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from circuit_breaker import CircuitBreaker

README = Path(__file__).resolve().parents[2] / "README.md"
OUTAGE_SECONDS = 12.0
RATE = 200  # requests per second, at most
THRESHOLD, RECOVERY = 3, 5  # the app's settings (checked against the README below)


def readme_app() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    apps = [b for b in blocks if b.startswith("# app.py\n")]
    assert len(apps) == 1, "README shows one app.py"
    assert f"failure_threshold={THRESHOLD}, recovery_timeout_seconds={RECOVERY}" in apps[0]
    return apps[0]


class Upstream:
    """A dependency on 127.0.0.1 that answers 200 or, while `failing`, 503; it records every call."""

    def __init__(self) -> None:
        self.failing = False
        self.calls: List[Tuple[float, bool]] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                failing = upstream.failing
                upstream.calls.append((time.monotonic(), failing))
                body = b'{"error": "down"}' if failing else b'{"price": 101.5}'
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def failed_calls(self) -> int:
        return sum(1 for _, failing in self.calls if failing)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_config(path: Path) -> Dict[str, Any]:
    handler = {"class": "logging.FileHandler", "filename": str(path), "formatter": "pid"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"pid": {"format": "%(process)d %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": handler},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "loggers": {
            "circuit_breaker": {"level": "INFO", "handlers": ["file"], "propagate": False},
            "uvicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["file"], "propagate": False},
        },
    }


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    try:
        yield u
    finally:
        u.close()


def start_server(kind: str, tmp: Path, upstream: Upstream) -> Tuple["subprocess.Popen[bytes]", str, Path, Path]:
    (tmp / "app.py").write_text(readme_app())
    logs = tmp / "server.log"
    port = free_port()
    region = tmp / "region"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUIT_BREAKER_")}
    env.update({"CIRCUIT_BREAKER_SHARED_MEMORY": str(region), "UPSTREAM_URL": upstream.url, "PYTHONPATH": str(tmp)})
    if kind == "uvicorn":
        (tmp / "log.json").write_text(json.dumps(log_config(logs)))
        argv = [sys.executable, "-m", "uvicorn", "app:app", "--workers", "4", "--port", str(port), "--log-config", str(tmp / "log.json")]
    else:
        (tmp / "gunicorn.conf.py").write_text(
            f"logconfig_dict = {log_config(logs)!r}\naccesslog = '-'\n"
        )
        argv = [
            sys.executable, "-m", "gunicorn", "app:app", "--workers", "4", "--worker-class", "uvicorn_worker.UvicornWorker",
            "--bind", f"127.0.0.1:{port}", "-c", str(tmp / "gunicorn.conf.py"),
        ]  # fmt: skip
    server = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return server, f"http://127.0.0.1:{port}", logs, region


def stop(server: "subprocess.Popen[bytes]") -> str:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.stderr is not None
    err = server.stderr.read().decode(errors="replace")
    server.stderr.close()
    return err


def get(client: httpx.Client, url: str) -> httpx.Response:
    return client.get(url, headers={"Connection": "close"})


def wait_until_up(client: httpx.Client, base: str, server: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        try:
            if get(client, f"{base}/health/circuit-breakers").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server never answered")


def health_burst(client: httpx.Client, base: str, polls: int = 20) -> List[Dict[str, Any]]:
    bodies = []
    for _ in range(polls):
        body = get(client, f"{base}/health/circuit-breakers").json()
        for status in body["circuit_breakers"].values():
            status.pop("time_until_recovery_seconds")  # seconds left, read at a different instant
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_the_readme_app_under_four_workers_shares_one_breaker(kind: str, tmp_path: Path, upstream: Upstream) -> None:
    server, base, logs, region = start_server(kind, tmp_path, upstream)
    err = ""
    try:
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            wait_until_up(client, base, server)
            for _ in range(40):
                assert get(client, f"{base}/quote/AAPL").status_code == 200
            upstream.failing = True
            began = time.monotonic()
            codes: Dict[int, int] = {}
            bursts: List[List[Dict[str, Any]]] = []
            sent = 0
            while (elapsed := time.monotonic() - began) < OUTAGE_SECONDS:
                if not bursts and elapsed > 2.5 or len(bursts) == 1 and elapsed > 7.5:
                    bursts.append(health_burst(client, base))  # OPEN and steady: far from any timeout
                code = get(client, f"{base}/quote/AAPL").status_code
                codes[code] = codes.get(code, 0) + 1
                sent += 1
                time.sleep(max(0.0, began + sent / RATE - time.monotonic()))
            upstream.failing = False
            recovered = time.monotonic() + RECOVERY + 3
            while get(client, f"{base}/quote/AAPL").status_code != 200:
                assert time.monotonic() < recovered, "the breaker never closed after the outage"
                time.sleep(0.05)
            outage_calls = upstream.failed_calls()
            final = health_burst(client, base)
    finally:
        err = stop(server)

    windows = math.ceil(OUTAGE_SECONDS / RECOVERY)
    print(f"\n{kind}: {sent} requests in the {OUTAGE_SECONDS:.0f} s outage ({codes}); upstream got {outage_calls} calls")
    assert THRESHOLD <= outage_calls <= THRESHOLD + windows, (
        f"the failing upstream got {outage_calls} calls (at most {THRESHOLD} + {windows} probes); {codes}; {err[-2000:]}"
    )
    assert sent > 12 * 50, f"only {sent} requests were sent during the outage"
    assert codes.get(503, 0) >= sent - THRESHOLD - windows, codes
    for burst in bursts + [final]:
        assert all(body == burst[0] for body in burst[1:]), "workers answered health checks differently"
    assert [b[0]["circuit_breakers"]["quotes"]["state"] for b in bursts] == ["OPEN", "OPEN"]
    assert final[0]["circuit_breakers"]["quotes"]["state"] == "CLOSED"

    lines = logs.read_text().splitlines()
    transitions = [line.split(" ", 3)[3] for line in lines if " circuit_breaker " in line and "'quotes'" in line]
    names = [re.search(r"transitioning to (\w+)", t).group(1) for t in transitions]  # type: ignore[union-attr]
    # One chain, each transition once: CLOSED -> OPEN, then (HALF_OPEN -> OPEN) per failed probe,
    # and HALF_OPEN -> CLOSED at the end.
    assert names[0] == "OPEN" and names[-1] == "CLOSED", transitions
    assert all(a != b for a, b in zip(names, names[1:])), f"a transition was logged twice: {transitions}"
    opened = CircuitBreaker("quotes", failure_threshold=THRESHOLD, recovery_timeout_seconds=RECOVERY, shared_memory=str(region))
    assert names.count("OPEN") == opened.get_metrics()["circuit_opened_count"], transitions
    workers = {line.split(" ", 1)[0] for line in lines if "/quote/AAPL" in line}
    assert len(workers) >= 2, f"requests reached {len(workers)} worker(s): the test would prove nothing"
