"""Breakers shared by every host of a fleet through Redis, tested against real ``redis-server``
processes that these tests start on free loopback ports (and kill, restart empty, freeze with
SIGSTOP, fill with garbage, lock down with ACLs). Each child process stands for one host: it
has its own mirror of every word and its own connections."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from children import PREAMBLE as PREAMBLE_COMMON
from children import finish, opens, release_together
import redis  # redis-py, from the test extra: administers the test's own servers

from circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    RedisStore,
    RedisStoreError,
)


ENV = "CIRCUIT_BREAKER_REDIS_URL"
SHM_ENV = "CIRCUIT_BREAKER_SHARED_MEMORY"

if shutil.which("redis-server") is None:  # pragma: no cover - .ci/run installs it
    pytest.fail("redis-server is not installed (apt-get install -y redis-server)", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A redis-server of the test's own, in its own directory, stopped when the test ends."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.dir = directory
        self.extra = list(extra)
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.admin().ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def admin(self) -> Any:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.process is not None and s.process.poll() is None:
        s.signal(signal.SIGCONT)
        s.kill()


# The children's script starts with children.PREAMBLE, then names the server.
PREAMBLE = PREAMBLE_COMMON + 'URL = os.environ.get("CB_TEST_URL")\n'


def start(script: str, env: Dict[str, str]) -> "subprocess.Popen[str]":
    child_env = {k: v for k, v in os.environ.items() if k not in (ENV, SHM_ENV)}
    child_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(script)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_hosts(script: str, hosts: int, env: Dict[str, str], go: Path) -> List[Dict[str, Any]]:
    """Starts `hosts` children, lets them attach, then tells them all to go at once."""
    return release_together([start(script, {**env, "CB_TEST_GO": str(go)}) for _ in range(hosts)], go, settle=0.5)


def eventually(condition: Any, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def test_only_the_environment_variable_shares_a_registry_breaker_across_hosts(server: Server, tmp_path: Path) -> None:
    """The issue's done-when: four hosts call a dead dependency 50 times a second through a
    registry breaker (threshold 3) with only CIRCUIT_BREAKER_REDIS_URL set. The dependency sees
    at most threshold + 4 calls before every host rejects, and nothing but the dependency's own
    error and the open error ever reaches a caller."""
    reports = run_hosts(
        """
        registry = CircuitBreakerRegistry()
        b = registry.get_or_create("upstream", failure_threshold=3, recovery_timeout_seconds=60)
        upstream_calls = 0
        def dead():
            global upstream_calls
            upstream_calls += 1
            raise ConnectionError("upstream is down")
        surprises = []
        wait_for_go()
        for _ in range(100):  # 2 s at 50 calls/s
            try:
                b.call(dead)
            except (ConnectionError, CircuitBreakerOpenError):
                pass
            except BaseException as e:
                surprises.append(repr(e))
            time.sleep(0.02)
        report(upstream_calls=upstream_calls, surprises=surprises, state=b.get_status()["state"],
               scope=b.get_status()["scope"])
        """,
        hosts=4,
        env={ENV: server.url},
        go=tmp_path / "go",
    )
    calls = sum(r["upstream_calls"] for r in reports)
    assert calls <= 3 + 4, f"{calls} calls reached the dead upstream: {[r['upstream_calls'] for r in reports]}"
    assert all(r["surprises"] == [] for r in reports)
    assert all(r["state"] == "OPEN" and r["scope"] == "fleet" for r in reports)
    assert sum(opens(r) for r in reports) == 1, "exactly one host logs the trip"


def test_without_the_store_each_host_learns_alone(server: Server, tmp_path: Path) -> None:
    """The same run with no store: the comparison that makes the test above mean something."""
    reports = run_hosts(
        """
        b = CircuitBreaker("upstream", failure_threshold=3, recovery_timeout_seconds=60)
        upstream_calls = 0
        wait_for_go()
        for _ in range(20):
            try:
                b.call(lambda: (_ for _ in ()).throw(ConnectionError("down")))
            except (ConnectionError, CircuitBreakerOpenError) as e:
                upstream_calls += isinstance(e, ConnectionError)
        report(upstream_calls=upstream_calls)
        """,
        hosts=4,
        env={},
        go=tmp_path / "go",
    )
    assert sum(r["upstream_calls"] for r in reports) == 4 * 3


def test_racing_hosts_trip_once_and_the_probe_limit_holds_fleet_wide(server: Server, tmp_path: Path) -> None:
    """Four hosts hammer one breaker: exactly one OPEN transition; then, half-open with two
    probe slots, never more than two probes run at once across all hosts (each probe holds a
    slot in a Redis set while it runs, so the peak is measured fleet-wide)."""
    reports = run_hosts(
        """
        import redis as redis_py
        admin = redis_py.Redis.from_url(URL)
        b = CircuitBreaker("probed", failure_threshold=20, recovery_timeout_seconds=0.3,
                           half_open_max_calls=2, redis=URL)
        wait_for_go()
        for _ in range(50):
            try:
                b.call(lambda: (_ for _ in ()).throw(Boom()))
            except (Boom, CircuitBreakerOpenError):
                pass
        peak, probes = 0, 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                permit = b.acquire()
            except CircuitBreakerOpenError:
                time.sleep(0.001)
                continue
            if permit.is_probe:
                probes += 1
                running = admin.incr("running")
                peak = max(peak, running)
                time.sleep(0.005)
                admin.decr("running")
                permit.ignore()  # stays HALF_OPEN: every probe races for a freed slot
            else:
                permit.ignore()
        report(peak=peak, probes=probes)
        """,
        hosts=4,
        env={"CB_TEST_URL": server.url},
        go=tmp_path / "go",
    )
    assert sum(opens(r) for r in reports) == 1, [r["records"] for r in reports]
    assert sum(r["probes"] for r in reports) > 20
    assert max(r["peak"] for r in reports) <= 2, [r["peak"] for r in reports]


def test_manual_control_propagates_to_every_host(server: Server, tmp_path: Path) -> None:
    step = tmp_path / "step"
    child = start(
        """
        b = CircuitBreaker("controlled", failure_threshold=3, redis=URL)
        seen = []
        def wait_state(want):
            deadline = time.monotonic() + 5
            while b.get_status()["mode"] + "/" + b.get_status()["state"] != want:
                assert time.monotonic() < deadline, (want, b.get_status())
                time.sleep(0.002)
            seen.append(want)
        print("READY", flush=True)
        wait_state("forced_open/OPEN")
        try:
            b.call(lambda: 1)
        except CircuitBreakerOpenError:
            seen.append("rejected")
        wait_state("normal/CLOSED")
        wait_state("disabled/CLOSED")
        report(seen=seen)
        """,
        {"CB_TEST_URL": server.url, "CB_TEST_STEP": str(step)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    here = CircuitBreaker("controlled", failure_threshold=3, redis=server.url)
    here.force_open()
    time.sleep(0.2)
    here.reset()
    time.sleep(0.2)
    here.disable()
    r = finish(child)
    assert r["seen"] == ["forced_open/OPEN", "rejected", "normal/CLOSED", "disabled/CLOSED"]


def test_redis_killed_restarted_empty_and_frozen_never_fails_a_call(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(server.url, timeout_seconds=0.05, refresh_seconds=0.1)
    b = CircuitBreaker("faulty", failure_threshold=3, recovery_timeout_seconds=600, redis=store)
    caplog.set_level(logging.WARNING, logger="circuit_breaker")

    def worst(calls: int, fail: bool) -> float:
        slowest = 0.0
        for _ in range(calls):
            started = time.perf_counter()
            try:
                b.call(lambda: (_ for _ in ()).throw(ConnectionError()) if fail else 1)
            except (ConnectionError, CircuitBreakerOpenError):
                pass
            slowest = max(slowest, time.perf_counter() - started)
        return slowest

    assert worst(20, False) < 0.2
    # Killed: the calls go on, on this host's state; failures still trip it.
    server.kill()
    assert worst(20, True) < 0.2
    assert b.get_state() is CircuitBreakerState.OPEN
    assert b.get_status()["degraded"] is True and not store.connected
    outage_lines = [r for r in caplog.records if "stopped answering" in r.getMessage()]
    eventually(lambda: len([r for r in caplog.records if "stopped answering" in r.getMessage()]) >= 1)
    # Restarted empty: the host resyncs and seeds the key with its own state.
    server.start()
    eventually(lambda: store.connected)
    eventually(lambda: server.admin().get("circuit_breaker:word:faulty") is not None)
    assert b.get_status()["degraded"] is False
    b.reset()
    eventually(lambda: any("answers again" in r.getMessage() for r in caplog.records))
    # Frozen for 2 s: no call waits longer than the deadline (plus scheduling slack).
    server.signal(signal.SIGSTOP)
    try:
        slowest = worst(40, True)
    finally:
        time.sleep(2.0)
        server.signal(signal.SIGCONT)
    assert slowest < 0.2, slowest
    eventually(lambda: store.connected, within=5)
    outage_lines = [r for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(outage_lines) == 2, "one line per outage, not per call"
    assert store.outages == 2


def test_a_garbage_value_under_the_key_is_repaired(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="circuit_breaker")
    store = RedisStore(server.url, refresh_seconds=0.05)
    b = CircuitBreaker("garbled", failure_threshold=2, redis=store)
    server.admin().set("circuit_breaker:word:garbled", "not a word")
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    eventually(lambda: (server.admin().get("circuit_breaker:word:garbled") or b"").isdigit())
    assert b.get_state() is CircuitBreakerState.OPEN
    eventually(lambda: any("not a breaker state" in r.getMessage() for r in caplog.records))


def test_credentials_and_permissions_are_checked_once_with_a_clear_error(server: Server) -> None:
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">secret", "~*", "&*", "+get", "+ping", "+mget")
    with pytest.raises(RedisStoreError, match="refused") as denied:
        RedisStore(f"redis://reader:secret@127.0.0.1:{server.port}/0", prefix="acl-test:")
    assert "secret" not in str(denied.value), "the password never appears in a message"
    assert isinstance(denied.value, CircuitBreakerError) and isinstance(denied.value, ConnectionError)
    with pytest.raises(RedisStoreError):
        RedisStore(f"redis://reader:wrong@127.0.0.1:{server.port}/0", prefix="acl-test2:")
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~cb:*", "&cb:*", "+@all")
    ok = RedisStore(f"redis://app:pw@127.0.0.1:{server.port}/0", prefix="cb:")
    assert ok.connected and ok.url == f"redis://app:***@127.0.0.1:{server.port}/0"
    assert CircuitBreaker("acl", redis=ok).get_status()["scope"] == "fleet"


def test_forged_messages_on_the_channel_change_no_breaker(server: Server) -> None:
    # A client allowed only to PUBLISH floods the channel with the FORCED_OPEN and DISABLED
    # words; the host (a child, so that a hang fails the test) reads states back from Redis.
    forger = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import redis
            r = redis.Redis(host="127.0.0.1", port={server.port})
            while True:
                r.publish("circuit_breaker:word:forged", str(3 << 61))
                r.publish("circuit_breaker:word:forged", str(4 << 61))
        """)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        host = start(
            """
            store = RedisStore(URL)
            b = CircuitBreaker("forged", failure_threshold=1, recovery_timeout_seconds=600, redis=store)
            ok = rejected = 0
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                try:
                    b.call(lambda: None)
                    ok += 1
                except CircuitBreakerOpenError:
                    rejected += 1
            try:
                b.call(boom)
            except Boom:
                pass
            admitted = 0
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                try:
                    b.call(boom)
                    admitted += 1
                except Boom:
                    admitted += 1
                except CircuitBreakerOpenError:
                    pass
            report(ok=ok, rejected=rejected, admitted=admitted, connected=store.connected)
            """,
            {"CB_TEST_URL": server.url},
        )
        result = finish(host, timeout=30)
    finally:
        forger.kill()
        forger.wait()
    assert result["ok"] > 100 and result["rejected"] == 0, result
    assert result["admitted"] == 0, "calls let through while Redis held OPEN"
    assert result["connected"] is True


def test_a_user_who_may_not_subscribe_or_a_missing_database_is_refused_at_open(server: Server) -> None:
    server.admin().execute_command("ACL", "SETUSER", "deaf", "on", ">pw", "~*", "&*", "+@all", "-@pubsub")
    with pytest.raises(RedisStoreError, match="PSUBSCRIBE"):
        RedisStore(f"redis://deaf:pw@127.0.0.1:{server.port}/0", prefix="deaf:")
    with pytest.raises(ValueError, match="DB index"):
        RedisStore(f"redis://127.0.0.1:{server.port}/99")


def test_bad_arguments_are_value_or_type_errors(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not usable"):
        RedisStore("http://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="timeout"):
        RedisStore(server.url, timeout_seconds=0)
    with pytest.raises(ValueError, match="refresh"):
        RedisStore(server.url, refresh_seconds=0.001)
    with pytest.raises(TypeError, match="url must be a str"):
        RedisStore(6379)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="redis must be"):
        CircuitBreaker("x", redis=3.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs CIRCUIT_BREAKER_REDIS_URL"):
        CircuitBreaker("x", redis=True)
    assert RedisStore.from_environment() is None
    with pytest.raises(ValueError, match="1 to 512 bytes"):
        CircuitBreaker("n" * 600, redis=server.url)
    monkeypatch.setenv(ENV, "nonsense://")
    with pytest.raises(ValueError, match=ENV):
        CircuitBreaker("x")
    monkeypatch.setenv(ENV, server.url)
    assert RedisStore.from_environment() == RedisStore(server.url)
    monkeypatch.setenv(SHM_ENV, str(tmp_path / "region"))
    with pytest.raises(ValueError, match="choose one"):
        CircuitBreaker("both")
    assert CircuitBreaker("shm only", redis=False).get_status()["scope"] == "host"
    assert CircuitBreaker("redis only", shared_memory=False).get_status()["scope"] == "fleet"


def test_an_unreachable_redis_at_startup_is_ridden_out_locally(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="circuit_breaker")
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    assert not store.connected
    b = CircuitBreaker("alone", failure_threshold=2, redis=store)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
    assert b.get_state() is CircuitBreakerState.OPEN and b.get_status()["degraded"] is True
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


def test_status_labels_the_fleet_state_and_this_hosts_counts(server: Server) -> None:
    store = RedisStore(server.url)
    other = RedisStore(server.url, refresh_seconds=0.5)  # another handle: another "host"
    a = CircuitBreaker("labelled", failure_threshold=5, redis=store)
    b = CircuitBreaker("labelled", failure_threshold=5, redis=other)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            a.call(lambda: 1 / 0)
    eventually(lambda: b.get_status()["failure_count"] == 2)
    status, metrics = b.get_status(), b.get_metrics()
    assert (status["scope"], status["counts_scope"], metrics["counts_scope"]) == ("fleet", "process", "process")
    assert status["total_failures"] == 0 and a.get_status()["total_failures"] == 2
    assert b.redis == other and a.redis == store and a.redis != other


def test_config_differences_are_logged(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="circuit_breaker")
    CircuitBreaker("configured", failure_threshold=3, redis=server.url)
    CircuitBreaker("configured", failure_threshold=3, redis=server.url)
    assert not any("configured differently" in r.getMessage() for r in caplog.records)
    CircuitBreaker("configured", failure_threshold=9, redis=server.url)
    assert sum("configured differently" in r.getMessage() for r in caplog.records) == 1


def test_async_callers_never_wait_on_redis_in_the_event_loop(server: Server) -> None:
    """Redis frozen: recording a failure waits for the deadline (100 ms here) — on a worker
    thread. A ticker on the loop keeps ticking meanwhile."""
    store = RedisStore(server.url, timeout_seconds=0.1)
    b = CircuitBreaker("async", failure_threshold=100, redis=store)

    async def failing() -> None:
        raise ConnectionError("down")

    async def main() -> float:
        gaps: List[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        for call in (lambda: b.call(failing), lambda: b.call_async(failing)):
            with pytest.raises(ConnectionError):
                await call()
        elapsed = time.perf_counter() - started
        stop.set()
        await tick
        assert elapsed >= 0.1, "the write did wait on the frozen Redis"
        return max(gaps)

    server.signal(signal.SIGSTOP)
    try:
        worst_gap = asyncio.run(main())
    finally:
        server.signal(signal.SIGCONT)
    assert worst_gap < 0.05, f"the event loop stalled for {worst_gap * 1000:.0f} ms"
    assert b.get_status()["total_failures"] == 2


def test_rediss_urls_speak_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - Debian's redis-server depends on libssl; openssl is there
        pytest.fail("openssl is needed to make the test's certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = free_port()
    s = Server(tmp_path, "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
               "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")
    try:
        store = RedisStore(f"rediss://127.0.0.1:{port}/0#insecure")
        assert store.connected
        b = CircuitBreaker("tls", failure_threshold=1, redis=store)
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)
        assert s.admin().get("circuit_breaker:word:tls") is not None
    finally:
        s.kill()
