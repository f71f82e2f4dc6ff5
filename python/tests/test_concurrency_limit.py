"""`max_concurrent_calls`: a limit on calls in flight (issue 22). Every way to call counts a call
from its admission to its outcome; the call after the limit is rejected at once, without running,
by `CircuitBreakerFullError` (a `CircuitBreakerOpenError`, so existing handlers and fallbacks take
it unchanged); a full rejection is never a failure. With a shared-memory region the limit is the
host's: every process together, and a process killed while holding calls gives them back."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from children import PREAMBLE, finish

from circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerFullError,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    SharedMemory,
    circuit_breaker,
)


class Boom(Exception):
    pass


def full_error(b: CircuitBreaker) -> CircuitBreakerFullError:
    ran: List[int] = []
    with pytest.raises(CircuitBreakerFullError) as rejected:
        b.call(lambda: ran.append(1))
    assert ran == [], "a full breaker ran the function"
    return rejected.value


def test_the_call_after_the_limit_is_rejected_at_once_and_names_the_limit() -> None:
    b = CircuitBreaker("limited", max_concurrent_calls=2)
    first, second = b.acquire(), b.acquire()
    assert b.get_status()["in_flight"] == 2
    error = full_error(b)
    assert isinstance(error, CircuitBreakerOpenError)
    assert (error.name, error.in_flight, error.max_concurrent_calls) == ("limited", 2, 2)
    assert str(error) == "CircuitBreaker 'limited' is full: 2 calls in flight (max_concurrent_calls=2)"
    assert error.state is CircuitBreakerState.CLOSED and error.last_failure is None
    first.success()
    assert b.call(lambda: "again") == "again"  # the place came back
    second.failure()
    s = b.get_status()
    assert (s["in_flight"], s["max_concurrent_calls"], s["total_full_rejections"]) == (0, 2, 1)
    assert s["concurrency_scope"] == "process"
    m = b.get_metrics()
    assert (m["in_flight"], m["total_full_rejections"]) == (0, 1)


def test_without_a_limit_nothing_changes() -> None:
    b = CircuitBreaker("unlimited")
    permits = [b.acquire() for _ in range(1000)]
    s = b.get_status()
    # Not counted without a limit: an unlimited call pays nothing for it.
    assert (s["max_concurrent_calls"], s["concurrency_scope"], s["total_full_rejections"]) == (None, None, 0)
    assert s["in_flight"] is None and b.get_metrics()["in_flight"] is None
    for p in permits:
        p.success()
    assert b.get_status()["state"] == "CLOSED"


def test_a_full_rejection_is_not_a_failure_and_never_trips_the_breaker() -> None:
    b = CircuitBreaker(
        "never-trips", failure_threshold=1, max_concurrent_calls=1, failure_rate_threshold=0.5, minimum_calls=2
    )
    held = b.acquire()
    for _ in range(50):
        full_error(b)
    assert b.get_state() is CircuitBreakerState.CLOSED
    s, m = b.get_status(), b.get_metrics()
    assert (s["failure_count"], s["total_failures"], s["total_rejections"]) == (0, 0, 0)
    assert s["calls_in_window"] == 0 and m["total_full_rejections"] == 50
    assert m["total_requests"] == 50  # counted as calls, like every rejection
    held.success()


def test_the_seeds_handlers_and_fallbacks_take_a_full_rejection_unchanged() -> None:
    # A fallback is called with the call's arguments while the rejection is being handled.
    b = CircuitBreaker("handled", max_concurrent_calls=1, fallback=lambda: f"fallback: {type(sys.exc_info()[1]).__name__}")
    held = b.acquire()
    assert b.call(lambda: "live") == "fallback: CircuitBreakerFullError"
    plain = CircuitBreaker("handled-plain", max_concurrent_calls=1)
    held2 = plain.acquire()
    try:
        plain.call(lambda: "live")
    except CircuitBreakerOpenError as e:  # the seed's handler
        caught: Any = e
    assert isinstance(caught, CircuitBreakerFullError)
    held.success()
    held2.success()


def test_bad_limits_are_refused_at_construction() -> None:
    for bad in (0, -1, 2**32, 2**64):
        with pytest.raises(ValueError, match="max_concurrent_calls"):
            CircuitBreaker("bad", max_concurrent_calls=bad)
    for wrong in (True, 2.5, "8"):
        with pytest.raises(TypeError, match="max_concurrent_calls"):
            CircuitBreaker("bad", max_concurrent_calls=wrong)
    assert CircuitBreaker("fine", max_concurrent_calls=None).get_status()["max_concurrent_calls"] is None
    assert CircuitBreaker("max", max_concurrent_calls=2**32 - 1).get_status()["max_concurrent_calls"] == 2**32 - 1


def hold_calls(b: CircuitBreaker, way: str, count: int) -> Callable[[], None]:
    """Starts `count` calls through `b` the way named, each blocked until the returned function
    releases them; returns once all are in flight."""
    entered = threading.Semaphore(0)
    gate = threading.Event()

    def body() -> str:
        entered.release()
        gate.wait(10)
        return "done"

    async def abody() -> str:
        entered.release()
        while not gate.is_set():
            await asyncio.sleep(0.001)
        return "done"

    def run() -> None:
        if way == "call":
            b.call(body)
        elif way == "decorator":
            b(body)()
        elif way == "context":
            with b:
                body()
        elif way == "coroutine":
            asyncio.run(b.call(abody))
        elif way == "call_async":
            asyncio.run(b.call_async(abody))
        elif way == "async_context":

            async def block() -> None:
                async with b:
                    await abody()

            asyncio.run(block())
        elif way == "generator":

            @b
            def gen() -> Iterator[int]:
                entered.release()
                gate.wait(10)
                yield 1

            list(gen())
        else:
            raise AssertionError(way)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for _ in range(count):
        assert entered.acquire(timeout=10)

    def release() -> None:
        gate.set()
        for t in threads:
            t.join(10)

    return release


@pytest.mark.parametrize("way", ["call", "decorator", "context", "coroutine", "call_async", "async_context", "generator"])
def test_every_way_to_call_counts_until_its_outcome(way: str) -> None:
    b = CircuitBreaker(f"ways-{way}", max_concurrent_calls=3)
    release = hold_calls(b, way, 3)
    try:
        assert b.get_status()["in_flight"] == 3
        full_error(b)
        with pytest.raises(CircuitBreakerFullError):
            b.acquire()
    finally:
        release()
    assert b.get_status()["in_flight"] == 0
    assert b.call(lambda: 1) == 1


def test_a_permit_dropped_without_an_outcome_gives_its_place_back() -> None:
    b = CircuitBreaker("dropped", max_concurrent_calls=1)
    p = b.acquire()
    full_error(b)
    del p
    gc.collect()
    assert b.get_status()["in_flight"] == 0
    assert b.call(lambda: 2) == 2


def test_a_failing_call_and_a_timed_out_coroutine_give_their_places_back() -> None:
    b = CircuitBreaker("outcomes", max_concurrent_calls=1, failure_threshold=100, timeout_seconds=0.05)
    with pytest.raises(Boom):
        b.call(lambda: (_ for _ in ()).throw(Boom()))
    assert b.get_status()["in_flight"] == 0

    async def hang() -> None:
        await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(b.call_async(hang))
    assert b.get_status()["in_flight"] == 0
    # A cancelled task gives its place back too.

    async def cancel() -> None:
        task = asyncio.ensure_future(b.call_async(hang))
        await asyncio.sleep(0.01)
        assert b.get_status()["in_flight"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    assert b.get_status()["in_flight"] == 0


def test_threads_never_exceed_the_limit() -> None:
    b = CircuitBreaker("threads", max_concurrent_calls=4)
    lock = threading.Lock()
    running, peak, rejected = [0], [0], [0]

    def body() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.0005)
        with lock:
            running[0] -= 1

    def hammer() -> None:
        for _ in range(300):
            try:
                b.call(body)
            except CircuitBreakerFullError:
                with lock:
                    rejected[0] += 1

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 4, peak
    assert rejected[0] > 0
    assert b.get_status()["in_flight"] == 0
    assert b.get_metrics()["total_full_rejections"] == rejected[0]


def test_the_decorator_factory_takes_the_limit() -> None:
    @circuit_breaker(name="decorated-limit", max_concurrent_calls=1)
    def fetch() -> str:
        return "ok"

    assert fetch() == "ok"
    assert fetch.circuit_breaker.get_status()["max_concurrent_calls"] == 1


HOLDER = """
    import threading
    b = CircuitBreaker("hostwide", max_concurrent_calls=3, probe_timeout_seconds=1, shared_memory=os.environ["CB_TEST_REGION"])
    permits = [b.acquire() for _ in range(int(os.environ["CB_TEST_HOLD"]))]
    print("HOLDING", flush=True)
    time.sleep(60)
"""


def start_holder(region: Path, hold: int) -> "subprocess.Popen[str]":
    child = subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(HOLDER)],
        env={**os.environ, "CB_TEST_REGION": str(region), "CB_TEST_HOLD": str(hold)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "HOLDING", line + (child.stderr.read() if child.stderr else "")
    return child


def test_in_shared_memory_the_limit_is_the_hosts_and_a_killed_holder_gives_its_calls_back(tmp_path: Path) -> None:
    region = tmp_path / "region"
    b = CircuitBreaker("hostwide", max_concurrent_calls=3, probe_timeout_seconds=1, shared_memory=region)
    assert b.get_status()["concurrency_scope"] == "host"
    holder = start_holder(region, 2)
    try:
        assert b.get_status()["in_flight"] == 2
        mine = b.acquire()  # the third place, host-wide
        full_error(b)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # Nobody gives the places back by hand: the next full call finds the holder dead.
        deadline = time.monotonic() + 1.0  # probe_timeout_seconds
        while True:
            try:
                extra = [b.acquire(), b.acquire()]
                break
            except CircuitBreakerFullError:
                assert time.monotonic() < deadline, "a killed process kept its places"
                time.sleep(0.01)
        assert b.get_status()["in_flight"] == 3
        for p in [mine, *extra]:
            p.success()
        assert b.get_status()["in_flight"] == 0
        assert b.get_state() is CircuitBreakerState.CLOSED
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_live_holder_keeps_its_calls_however_long_they_take(tmp_path: Path) -> None:
    region = tmp_path / "region"
    b = CircuitBreaker("hostwide", max_concurrent_calls=3, probe_timeout_seconds=1, shared_memory=region)
    holder = start_holder(region, 3)
    try:
        deadline = time.monotonic() + 1.5  # past the probe timeout: hung calls still count
        while time.monotonic() < deadline:
            full_error(b)
            time.sleep(0.02)
        assert b.get_status()["in_flight"] == 3
    finally:
        holder.kill()
        holder.wait()


def test_with_redis_the_limit_is_this_processes(tmp_path: Path) -> None:
    from test_redis import Server

    server = Server(tmp_path)
    try:
        b = CircuitBreaker("limited-fleet", max_concurrent_calls=1, redis=server.url)
        assert b.get_status()["concurrency_scope"] == "process"
        held = b.acquire()
        full_error(b)
        held.success()
    finally:
        server.kill()


def test_the_http_helpers_count_requests_in_flight() -> None:
    import http.server

    from circuit_breaker.http import get_circuit_breaker_status, protected_get

    gate, arrived = threading.Event(), threading.Semaphore(0)

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.release()
            gate.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    answers: List[int] = []
    first = threading.Thread(
        target=lambda: answers.append(
            protected_get(url, service_name="http-limited", max_concurrent_calls=1, timeout=10).status_code
        )
    )
    try:
        first.start()
        assert arrived.acquire(timeout=10)
        with pytest.raises(CircuitBreakerFullError):
            protected_get(url, service_name="http-limited", timeout=10)
        assert not arrived.acquire(timeout=0.2), "a full breaker sent the request"
        status = get_circuit_breaker_status("http-limited")
        assert status is not None and status["in_flight"] == 1
    finally:
        gate.set()
        first.join(10)
        server.shutdown()
    assert answers == [200]


def test_the_health_report_shows_calls_in_flight_and_full_rejections() -> None:
    from circuit_breaker import CircuitBreakerRegistry
    from circuit_breaker.health import health_report

    registry = CircuitBreakerRegistry()
    b = registry.get_or_create("health-limited", max_concurrent_calls=1)
    held = b.acquire()
    full_error(b)
    try:
        code, body = health_report(registry)
        reported = body["circuit_breakers"]["health-limited"]
        assert code == 200 and reported["state"] == "CLOSED"  # full is not a failure
        assert (reported["in_flight"], reported["max_concurrent_calls"], reported["total_full_rejections"]) == (1, 1, 1)
    finally:
        held.success()
        registry.unregister("health-limited")
