"""Issue 22 end to end: a hung dependency cannot take the service down.

`apps/hung_app.py` (FastAPI: `/sync` calls the upstream with `requests` in the thread pool,
`/async` with `httpx.AsyncClient`, `/local` needs no upstream) runs under real
`uvicorn --workers 4` and `gunicorn --workers 4 --worker-class uvicorn_worker.UvicornWorker`
with `CIRCUIT_BREAKER_SHARED_MEMORY=<tmp>/region` and `max_concurrent_calls=8`, in front of an
upstream (in this process) that accepts every connection and never answers within the app's 4 s
client timeout. 100 requests/s go to the upstream endpoint for 6 s while `/local` is probed
20 times a second.

- Every server × client pair: the upstream never holds more than 8 calls at once (and does reach
  8: the limit is host-wide, not per worker), `/local` p99 stays under 100 ms, rejections (503)
  p99 under 50 ms, at least 90 % of the upstream endpoint's requests are rejected, every request
  is answered, each rejection is a `CircuitBreakerFullError` caught by the app's
  `except CircuitBreakerOpenError`, and the region's counts agree: `in_flight` back to 0, one
  full rejection per 503, one failure per upstream timeout (a full rejection is no failure), the
  breaker still CLOSED.
- A worker SIGKILLed while holding calls: the processes holding the 8 upstream calls are killed
  (found through /proc: the workers with an established connection to the upstream); all 8 slots
  come back within `probe_timeout_seconds` (plus the worker restart), the upstream again holds 8
  calls and never more, and `in_flight` read from the region returns to 0 once the load stops.
  It runs under gunicorn with `/sync` only, to keep the file near 90 s on 2 cores.

Without a limit the same load shows the issue's table (see `benches/python/hung_dependency.py`,
which reuses this app and harness). Every server runs in a process group of its own, killed in a
`finally`; every wait has a deadline and each test has a hard timeout (SIGALRM), so a hang fails
the test instead of stalling the suite. Until `max_concurrent_calls` exists, each test fails at
once, naming the `TypeError` the app gets when it builds its breaker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))
import hung_load as h  # noqa: E402

from circuit_breaker import CircuitBreaker  # noqa: E402

LIMIT = 8
PROBE_TIMEOUT = 5.0  # above the app's 4 s upstream timeout, as it should be: a call still
# running is never presumed lost, so only a dead worker's slots can come back early
RATE, LOCAL_RATE, SECONDS = 100, 20, 6.0
CLIENT_TIMEOUT = 10.0  # the load's own timeout: a request not answered by then counts as unanswered


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError("the test ran past its hard timeout: something hung")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(75)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def upstream() -> Iterator[h.HangingUpstream]:
    h.raise_fd_limit()
    u = h.HangingUpstream()
    try:
        yield u
    finally:
        u.close()


@contextmanager
def running(kind: str, tmp: Path, upstream: h.HangingUpstream) -> Iterator[h.Server]:
    server = h.Server(kind, tmp, upstream.url, LIMIT, PROBE_TIMEOUT)
    problem = server.app_problem()
    if problem is not None:
        pytest.fail(f"the app cannot build its breaker with max_concurrent_calls={LIMIT}: {problem}")
    server.start()
    try:
        try:
            server.wait_until_up()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield server
    finally:
        server.kill()


def region_breaker(region: Path) -> CircuitBreaker:
    """The app's breaker, read from this process through the region the workers share."""
    return CircuitBreaker(
        "upstream",
        failure_threshold=h.THRESHOLD,
        recovery_timeout_seconds=h.RECOVERY,
        probe_timeout_seconds=PROBE_TIMEOUT,
        max_concurrent_calls=LIMIT,  # issue 22
        shared_memory=str(region),
    )


def settled_status(region: Path, timeout: float) -> Dict[str, Any]:
    """The region's status once no call is in flight (or at the deadline)."""
    breaker = region_breaker(region)
    deadline = time.monotonic() + timeout
    while True:
        status: Dict[str, Any] = dict(breaker.get_status())
        if status["in_flight"] == 0 or time.monotonic() > deadline:
            status["metrics"] = dict(breaker.get_metrics())
            return status
        time.sleep(0.05)


def test_the_harness_reads_the_apps_settings() -> None:
    app = h.APP.read_text()
    assert f'CircuitBreaker("upstream", failure_threshold={h.THRESHOLD:_}, recovery_timeout_seconds={h.RECOVERY}' in app
    assert f"UPSTREAM_TIMEOUT = {h.UPSTREAM_TIMEOUT}" in app


@pytest.mark.parametrize("path", ["/sync", "/async"])
@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_a_hung_upstream_gets_at_most_the_limit_and_the_rest_is_rejected_at_once(
    kind: str, path: str, tmp_path: Path, upstream: h.HangingUpstream
) -> None:
    with running(kind, tmp_path, upstream) as server:
        samples = h.Load(server.port, {path: RATE, "/local": LOCAL_RATE}, SECONDS, CLIENT_TIMEOUT).run()
        # The load waited for every answer, so every admitted call has ended (4 s timeouts).
        status = settled_status(server.region, timeout=2.0)
        log = server.log_tail()
    in_flight, peak, accepted = upstream.snapshot()
    calls, local = h.summarize(samples, path), h.summarize(samples, "/local")
    report = f"{kind} {path}: upstream peak {peak}, {accepted} calls; {path} {calls}; /local {local}; status {status}\n{log}"
    print(f"\n{kind} {path}: upstream peak {peak} ({accepted} calls), {path} {calls.codes}, 503 p99 {calls.rejection_p99_ms:.1f} ms, /local p99 {local.p99_ms:.1f} ms")

    assert peak <= LIMIT, f"the upstream held {peak} calls at once, over the limit of {LIMIT}: {report}"
    assert peak == LIMIT, f"the upstream never held {LIMIT} calls at once (the limit is host-wide, not per worker): {report}"
    assert calls.sent >= RATE * SECONDS * 0.95 and local.sent >= LOCAL_RATE * SECONDS * 0.95, report
    assert calls.answered == calls.sent, f"requests to {path} hung past {CLIENT_TIMEOUT} s: {report}"
    assert set(calls.codes) <= {503, 504}, report
    assert calls.rejections >= 0.9 * calls.sent, f"most requests should be rejected at once: {report}"
    assert calls.rejection_p99_ms < 50, f"rejections took {calls.rejection_p99_ms:.1f} ms at p99: {report}"
    assert local.answered == local.sent and set(local.codes) == {200}, report
    assert local.p99_ms < 100, f"/local took {local.p99_ms:.1f} ms at p99 while the upstream hung: {report}"

    # Each 503 is a full rejection that the app's `except CircuitBreakerOpenError` caught.
    bodies = [json.loads(s.body) for s in samples if s.path == path and s.status == 503]
    assert {b["error"] for b in bodies} == {"CircuitBreakerFullError"}, report
    message = bodies[0]["message"]
    assert "upstream" in message and str(LIMIT) in message, f"the message names the breaker, the calls in flight and the limit: {message!r}"
    assert len({b["pid"] for b in bodies}) >= 2, f"rejections came from one worker only: the test would prove nothing host-wide: {report}"

    # The region agrees: every slot came back, each 503 was counted as a full rejection and never
    # as a failure (each upstream timeout was), and the breaker did not trip.
    timeouts = calls.codes.get(504, 0)
    assert timeouts == accepted, report
    assert status["in_flight"] == 0 and status["metrics"]["in_flight"] == 0, report
    assert status["max_concurrent_calls"] == LIMIT, report
    assert status["total_full_rejections"] == status["metrics"]["total_full_rejections"] == calls.rejections, report
    assert status["metrics"]["total_failures"] == timeouts, report
    assert status["state"] == "CLOSED", report
    assert in_flight == 0, report


def test_a_worker_killed_holding_calls_gives_its_slots_back(tmp_path: Path, upstream: h.HangingUpstream) -> None:
    load: Optional[h.Load] = None
    with running("gunicorn", tmp_path, upstream) as server:
        try:
            load = h.Load(server.port, {"/sync": 20.0}, 40.0, CLIENT_TIMEOUT).start()
            deadline = time.monotonic() + 3.0
            while upstream.snapshot()[0] < LIMIT:
                assert time.monotonic() < deadline, f"the {LIMIT} slots were never taken: {upstream.snapshot()}\n{server.log_tail()}"
                time.sleep(0.01)
            workers = server.worker_pids()
            holders = h.connections_to(sorted(workers), upstream.port)
            assert sum(holders.values()) == LIMIT, f"{holders} of workers {workers}"
            for pid in holders:
                os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            held_for = killed - upstream.accept_times[0]
            assert held_for < h.UPSTREAM_TIMEOUT - 1, f"too slow: the calls were {held_for:.1f} s old when killed"

            # All 8 slots come back by themselves: the upstream holds 8 new calls again, within
            # probe_timeout_seconds of the kill (and the time the master takes to restart workers,
            # if none survived).
            survivors = workers - set(holders)
            deadline = killed + PROBE_TIMEOUT + (1.5 if survivors else 4.0)
            while upstream.accepted_since(killed) < LIMIT or upstream.snapshot()[0] < LIMIT:
                assert time.monotonic() < deadline, (
                    f"{upstream.accepted_since(killed)} calls admitted in the {time.monotonic() - killed:.1f} s after "
                    f"SIGKILL of {holders}; upstream (in flight, peak, calls) {upstream.snapshot()}; "
                    f"status {dict(region_breaker(server.region).get_status())}\n{server.log_tail()}"
                )
                time.sleep(0.02)
            recovered = time.monotonic() - killed
            assert not set(holders) & server.worker_pids(), "the killed workers still run"
        finally:
            if load is not None:
                load.stop()
                load.join()
        status = settled_status(server.region, timeout=h.UPSTREAM_TIMEOUT + 2)
    in_flight, peak, accepted = upstream.snapshot()
    print(f"\nkilled {holders} ({len(survivors)} survived); all {LIMIT} slots back after {recovered:.2f} s; upstream peak {peak}, {accepted} calls")
    assert peak <= LIMIT, f"the upstream held {peak} calls at once, over the limit of {LIMIT}"
    assert status["in_flight"] == 0, f"slots leaked: {status}"
    assert status["state"] == "CLOSED", status
