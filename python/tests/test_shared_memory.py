"""Breakers shared by every process of a host through shared memory, tested with real processes:
children started with subprocess (and forked ones, as under ``gunicorn --preload``) hammer,
trip, probe and are killed; the environment variable shares registry, decorator and HTTP-helper
breakers with no code change; manual control and reports agree across processes; bad regions
and bad arguments get clear errors."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from children import PREAMBLE as PREAMBLE_COMMON
from children import finish, opens, release_together

from circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    SharedMemory,
    SharedMemoryError,
)

ENV = "CIRCUIT_BREAKER_SHARED_MEMORY"

# The children's script starts with children.PREAMBLE, then names the region.
PREAMBLE = PREAMBLE_COMMON + 'REGION = os.environ.get("CB_TEST_REGION")\n'


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


@pytest.fixture
def region(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "region"


def start(script: str, region: Path, go: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
    child_env = {k: v for k, v in os.environ.items() if k != ENV}
    child_env.update({"CB_TEST_REGION": str(region), "CB_TEST_GO": str(go or region.with_name("go"))})
    child_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(script)],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_all(script: str, region: Path, processes: int, env: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    go = region.with_name("go")
    return release_together([start(script, region, go, env) for _ in range(processes)], go, settle=0.2)


def test_processes_count_every_call_and_trip_exactly_once(region: Path) -> None:
    reports = run_all(
        """
        b = CircuitBreaker("hammered", failure_threshold=50, recovery_timeout_seconds=600, shared_memory=REGION)
        wait_for_go()
        for _ in range(300):
            try:
                b.call(boom)
            except (Boom, CircuitBreakerOpenError):
                pass
        report()
        """,
        region,
        processes=4,
    )
    assert sum(opens(r) for r in reports) == 1, [r["records"] for r in reports]
    b = CircuitBreaker("hammered", failure_threshold=50, recovery_timeout_seconds=600, shared_memory=str(region))
    m = b.get_metrics()
    assert m["total_failures"] + m["total_rejections"] == 4 * 300
    assert m["total_failures"] >= 50
    assert m["circuit_opened_count"] == 1
    assert m["scope"] == "host"
    assert b.is_open()


def test_mixed_outcomes_from_many_processes_add_up_exactly(region: Path) -> None:
    run_all(
        """
        b = CircuitBreaker("mixed", failure_threshold=1_000_000, shared_memory=REGION)
        wait_for_go()
        for i in range(2_000):
            try:
                b.call(boom if i % 4 == 0 else (lambda: i))
            except Boom:
                pass
        report()
        """,
        region,
        processes=4,
    )
    b = CircuitBreaker("mixed", failure_threshold=1_000_000, shared_memory=SharedMemory(region))
    status, metrics = b.get_status(), b.get_metrics()
    assert (metrics["total_requests"], metrics["total_successes"], metrics["total_failures"]) == (8_000, 6_000, 2_000)
    assert status["success_count"] == 6_000 and status["total_failures"] == 2_000
    assert status["state"] == "CLOSED"


def test_half_open_probes_are_limited_across_processes(region: Path) -> None:
    limit = 2
    setup = CircuitBreaker("probed", failure_threshold=1, recovery_timeout_seconds=0, half_open_max_calls=limit, shared_memory=str(region))
    with pytest.raises(Boom):
        setup.call(boom)
    reports = run_all(
        """
        b = CircuitBreaker("probed", failure_threshold=1, recovery_timeout_seconds=0, half_open_max_calls=2, shared_memory=REGION)
        wait_for_go()
        spans = []
        deadline = time.monotonic() + 20
        while len(spans) < 25 and time.monotonic() < deadline:
            try:
                permit = b.acquire()
            except CircuitBreakerOpenError:
                continue
            start = time.monotonic()   # CLOCK_MONOTONIC: one clock for every process
            time.sleep(0.003)
            spans.append((start, time.monotonic()))
            permit.ignore()            # stays HALF_OPEN: every probe races for a freed slot
        report(spans=spans)
        """,
        region,
        processes=4,
    )
    spans = sorted((s, e) for r in reports for s, e in r["spans"])
    assert len(spans) == 4 * 25, "every process ran its probes"
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == limit, f"{peak} probes ran at once across processes (limit {limit})"


def test_the_failure_rate_is_decided_on_every_processs_calls(region: Path) -> None:
    """Four processes each make 5 calls, 3 of them failing and never two in a row: no process
    alone reaches minimum_calls (12), all of them together trip the breaker, once, and every
    process then rejects."""
    reports = run_all(
        """
        b = CircuitBreaker("rated", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=12,
                           window_calls=40, shared_memory=REGION)
        wait_for_go()
        outcomes = []
        for fail in [True, False, True, False, True]:
            try:
                b.call(boom) if fail else b.call(lambda: None)
                outcomes.append("ok")
            except Boom:
                outcomes.append("failed")
            except CircuitBreakerOpenError:
                outcomes.append("rejected")
            time.sleep(0.01)
        deadline = time.monotonic() + 5
        while b.get_state() is not CircuitBreakerState.OPEN and time.monotonic() < deadline:
            time.sleep(0.01)
        report(outcomes=outcomes, state=b.get_state().name, calls=b.get_metrics()["total_requests"])
        """,
        region,
        processes=4,
    )
    assert sum(opens(r) for r in reports) == 1, [r["records"] for r in reports]
    assert all(r["state"] == "OPEN" for r in reports)
    ran = sum(o != "rejected" for r in reports for o in r["outcomes"])
    assert 12 <= ran <= 20, ran
    alone = CircuitBreaker("rated alone", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=12, window_calls=40)
    for fail in [True, False, True, False, True]:
        try:
            alone.call(boom) if fail else alone.call(lambda: None)
        except Boom:
            pass
    assert alone.get_state() is CircuitBreakerState.CLOSED, "one process's calls alone stay below minimum_calls"


def test_a_prober_killed_with_sigkill_frees_its_slot_after_the_probe_timeout(region: Path) -> None:
    b = CircuitBreaker("killed", failure_threshold=1, recovery_timeout_seconds=0, probe_timeout_seconds=1, shared_memory=str(region))
    with pytest.raises(Boom):
        b.call(boom)
    child = start(
        """
        b = CircuitBreaker("killed", failure_threshold=1, recovery_timeout_seconds=0, probe_timeout_seconds=1, shared_memory=REGION)
        permit = b.acquire()
        assert permit.is_probe
        print("PROBING", flush=True)
        time.sleep(600)
        """,
        region,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "PROBING"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        with pytest.raises(CircuitBreakerOpenError) as rejected:
            b.call(lambda: "probe")
        assert rejected.value.state is CircuitBreakerState.HALF_OPEN
        while True:
            try:
                assert b.call(lambda: "probe") == "probe"
                break
            except CircuitBreakerOpenError:
                assert time.monotonic() - killed < 10, "the dead worker's probe slot was never recovered"
                time.sleep(0.02)
        waited = time.monotonic() - killed
        assert 0.9 <= waited < 4.5, waited
        assert b.is_closed()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()


def test_forked_workers_share_breakers_created_before_the_fork(region: Path) -> None:
    # gunicorn --preload: the app (and its registry breakers) is imported once, then forked.
    report = finish(
        start(
            """
            registry = CircuitBreakerRegistry()
            b = registry.get_or_create("preloaded", failure_threshold=3, recovery_timeout_seconds=600)
            assert b.shared_memory is not None
            children = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    try:
                        b.call(boom)
                    except Boom:
                        pass
                    logging.shutdown()
                    os._exit(0 if not records or "OPEN" in records[-1][1] else 0)
                children.append(pid)
            codes = [os.waitpid(pid, 0)[1] for pid in children]
            report(state=b.get_state().value, codes=codes, failures=b.get_metrics()["total_failures"])
            """,
            region,
            env={ENV: str(region)},
        )
    )
    assert report["codes"] == [0, 0, 0]
    assert report["state"] == "OPEN", "the children's failures opened the parent's breaker"
    assert report["failures"] == 3
    assert report["records"] == [], "the parent made no transition: the child whose failure tripped it logged it"


def test_the_environment_variable_shares_registry_decorator_and_http_breakers(region: Path) -> None:
    script = """
        from circuit_breaker.http import get_circuit_breaker
        registry = CircuitBreakerRegistry()
        @circuit_breaker(name="decorated", failure_threshold=1, recovery_timeout_seconds=600)
        def flaky():
            raise Boom("down")
        made = {
            "registry": registry.get("options_chain"),
            "decorated": flaky.circuit_breaker,
            "http": get_circuit_breaker("http://127.0.0.1:9"),
            "direct": CircuitBreaker("direct"),
        }
        if os.environ.get("CB_TRIP"):
            try:
                flaky()
            except Boom:
                pass
            made["http"].force_open()
        report(shared={k: str(b.shared_memory.path) if b.shared_memory else None for k, b in made.items()},
               scope={k: b.get_status()["scope"] for k, b in made.items()},
               state={k: b.get_state().value for k, b in made.items()})
    """
    tripper = finish(start(script, region, env={ENV: str(region), "CB_TRIP": "1"}))
    assert set(tripper["shared"].values()) == {str(region)}
    assert set(tripper["scope"].values()) == {"host"}
    watcher = finish(start(script, region, env={ENV: str(region)}))
    assert watcher["state"] == {"registry": "CLOSED", "decorated": "OPEN", "http": "OPEN", "direct": "CLOSED"}
    local = finish(start(script, region, env={ENV: "0"}))
    assert set(local["shared"].values()) == {None} and set(local["scope"].values()) == {"process"}


def test_manual_control_in_one_process_takes_effect_in_all(region: Path) -> None:
    here = CircuitBreaker("manual", failure_threshold=1, recovery_timeout_seconds=600, shared_memory=str(region))
    there = """
        b = CircuitBreaker("manual", failure_threshold=1, recovery_timeout_seconds=600, shared_memory=REGION)
        getattr(b, os.environ["CB_DO"])()
        report(mode=b.get_status()["mode"])
    """
    assert finish(start(there, region, env={"CB_DO": "force_open"}))["mode"] == "forced_open"
    with pytest.raises(CircuitBreakerOpenError) as rejected:
        here.call(lambda: 1)
    assert rejected.value.time_until_recovery_seconds is None
    finish(start(there, region, env={"CB_DO": "disable"}))
    with pytest.raises(Boom):
        here.call(boom)
    assert here.is_closed() and here.get_status()["mode"] == "disabled"
    finish(start(there, region, env={"CB_DO": "reset"}))
    assert here.get_status()["mode"] == "normal"
    with pytest.raises(Boom):
        here.call(boom)
    assert here.is_open()
    assert finish(start(there, region, env={"CB_DO": "reset"}))["records"] == [
        ["INFO", "CircuitBreaker 'manual' transitioning to CLOSED (manual reset)"]
    ]
    assert here.is_closed()
    assert here.get_status()["success_count"] == 0 and here.get_status()["last_failure_time"] is None


def test_every_process_reports_the_same_status(region: Path) -> None:
    b = CircuitBreaker("reported", failure_threshold=2, recovery_timeout_seconds=600, shared_memory=str(region))
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    mine = b.get_status()
    theirs = finish(
        start(
            """
            b = CircuitBreaker("reported", failure_threshold=2, recovery_timeout_seconds=600, shared_memory=REGION)
            report(status=b.get_status(), metrics=b.get_metrics())
            """,
            region,
        )
    )
    for status in (mine, theirs["status"]):
        status.pop("time_until_recovery_seconds")
    assert theirs["status"] == mine
    assert theirs["metrics"] == b.get_metrics()
    assert mine["last_failure_time"] is not None and mine["state"] == "OPEN"


def test_the_last_failure_object_is_per_process_its_time_is_host_wide(region: Path) -> None:
    b = CircuitBreaker("origin", failure_threshold=1, recovery_timeout_seconds=600, shared_memory=str(region))
    finish(
        start(
            """
            b = CircuitBreaker("origin", failure_threshold=1, recovery_timeout_seconds=600, shared_memory=REGION)
            try:
                b.call(boom)
            except Boom:
                pass
            report()
            """,
            region,
        )
    )
    assert b.is_open()
    assert b.last_failure is None, "the exception object lives in the process that raised it"
    assert b.get_status()["last_failure_time"] is not None


def test_a_different_configuration_warns_once_and_each_process_keeps_its_own(region: Path, caplog: pytest.LogCaptureFixture) -> None:
    sm = SharedMemory(region)
    patient = CircuitBreaker("rollout", failure_threshold=5, shared_memory=sm)
    with caplog.at_level(logging.WARNING, logger="circuit_breaker"):
        eager = CircuitBreaker("rollout", failure_threshold=2, shared_memory=sm)
        CircuitBreaker("rollout", failure_threshold=2, shared_memory=sm)
    warnings = [r.getMessage() for r in caplog.records if "configured differently" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "theirs: failure_threshold=5" in warnings[0] and "ours: failure_threshold=2" in warnings[0]
    assert (patient.failure_threshold, eager.failure_threshold) == (5, 2)
    with pytest.raises(Boom):
        patient.call(boom)
    with pytest.raises(Boom):
        eager.call(boom)
    assert patient.is_open(), "the eager process tripped the shared state at its own threshold"


def test_a_region_deleted_under_a_process_is_opened_anew_for_new_breakers(region: Path) -> None:
    old = CircuitBreaker("moved", failure_threshold=1, shared_memory=str(region))
    old.force_open()
    region.unlink()
    finish(start('CircuitBreaker("moved", shared_memory=REGION).force_open(); report()', region))
    new = CircuitBreaker("moved", failure_threshold=1, shared_memory=str(region))
    assert new.shared_memory is not None and new.shared_memory.path == region
    assert new.get_status()["mode"] == "forced_open", "joined the file other processes use now"
    new.reset()
    assert old.get_status()["mode"] == "forced_open", "the old breaker keeps its old file"


def test_a_stale_region_is_replaced_with_one_log_line(region: Path) -> None:
    SharedMemory(region)
    with open(region, "r+b") as f:
        f.truncate(5_000)
    report = finish(
        start(
            """
            a = CircuitBreaker("after", shared_memory=REGION)
            b = CircuitBreaker("after2", shared_memory=REGION)
            report(state=a.get_state().value)
            """,
            region,
        )
    )
    stale = [m for level, m in report["records"] if "stale region" in m]
    assert len(stale) == 1 and "5000 bytes" in stale[0], report["records"]
    assert report["state"] == "CLOSED"


def test_files_that_are_not_ours_or_not_safe_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(SharedMemoryError, match="not a circuit breaker region") as refused:
        SharedMemory(notes)
    assert isinstance(refused.value, OSError) and isinstance(refused.value, CircuitBreakerError)
    assert notes.read_text() == "precious"
    with pytest.raises(SharedMemoryError, match="not a circuit breaker region"):
        CircuitBreaker("on_notes", shared_memory=str(notes))
    open_to_all = tmp_path / "open"
    finish(start("SharedMemory(REGION); report()", open_to_all))  # made by another process
    open_to_all.chmod(0o666)
    with pytest.raises(SharedMemoryError, match="writable by every user"):
        SharedMemory(open_to_all)
    assert SharedMemory(open_to_all, allow_foreign=True).capacity == 1024
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SharedMemoryError, match="symbolic link"):
        SharedMemory(link)


def test_a_full_region_and_bad_arguments_get_clear_errors(tmp_path: Path) -> None:
    small = SharedMemory(tmp_path / "small", capacity=2)
    CircuitBreaker("one", shared_memory=small)
    CircuitBreaker("two", shared_memory=small)
    with pytest.raises(SharedMemoryError, match=r"all 2 slots hold breakers.*CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY"):
        CircuitBreaker("three", shared_memory=small)
    assert sorted(small.names()) == ["one", "two"]
    with pytest.raises(ValueError, match="1 to 200 bytes"):
        CircuitBreaker("x" * 201, shared_memory=small)
    with pytest.raises(TypeError, match="shared_memory must be"):
        CircuitBreaker("typed", shared_memory=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="capacity must be an int"):
        SharedMemory(tmp_path / "c", capacity=True)
    with pytest.raises(ValueError, match="capacity must be in 1..="):
        SharedMemory(tmp_path / "c", capacity=0)
    with pytest.raises(ValueError, match="mode must be"):
        SharedMemory(tmp_path / "c", mode=0o400)
    with pytest.raises(ValueError, match="probe_timeout_seconds"):
        CircuitBreaker("probe", probe_timeout_seconds=0)
    assert not (tmp_path / "c").exists()


def test_the_environment_variable_is_parsed_strictly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "from_env"))
    monkeypatch.setenv("CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY", "lots")
    with pytest.raises(ValueError, match="CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY must be a whole number"):
        CircuitBreaker("env_bad")
    monkeypatch.setenv("CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY", "16")
    b = CircuitBreaker("env_ok")
    assert b.shared_memory == SharedMemory.from_environment()
    assert b.shared_memory is not None and b.shared_memory.capacity == 16
    assert CircuitBreaker("env_off", shared_memory=False).shared_memory is None
    for off in ("0", "false", "off", ""):
        monkeypatch.setenv(ENV, off)
        assert CircuitBreaker("env_off").shared_memory is None and SharedMemory.from_environment() is None
    monkeypatch.setenv(ENV, str(tmp_path / "notes"))
    (tmp_path / "notes").write_text("precious")
    with pytest.raises(SharedMemoryError, match="CIRCUIT_BREAKER_SHARED_MEMORY="):
        CircuitBreaker("env_refused")


def test_true_and_1_mean_the_default_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The default region is in $XDG_RUNTIME_DIR when that is a private directory of ours: a
    # temporary one here, so the test never touches the user's real default region.
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    default = runtime / "circuit_breaker.region"
    name = f"default-{uuid.uuid4().hex}"
    monkeypatch.setenv(ENV, "1")
    from_env = CircuitBreaker(name)
    monkeypatch.delenv(ENV)
    explicit = CircuitBreaker(name, shared_memory=True)
    assert from_env.shared_memory == explicit.shared_memory == SharedMemory()
    assert explicit.shared_memory is not None and explicit.shared_memory.path == default
    explicit.force_open()
    assert from_env.is_open()
    from_env.reset()


def test_a_region_cut_short_under_a_process_does_not_kill_it(region: Path) -> None:
    # Issue 21, item 10: `truncate -s 100` on a mapped region used to end the process with SIGBUS.
    go = region.with_name("go")
    attached = region.with_name("attached")
    child = start(
        """
        b = CircuitBreaker("cut", failure_threshold=3, shared_memory=REGION)
        b.force_open()
        Path(os.environ["CB_TEST_GO"]).with_name("attached").write_text("")
        wait_for_go()
        admitted = 0
        for i in range(1_000):
            admitted += b.call(lambda: 1)
        for i in range(3):
            try:
                b.call(boom)
            except Boom:
                pass
        degraded = b.get_status()["degraded"]
        again = CircuitBreaker("cut-again", shared_memory=REGION)  # the cut file is replaced
        report(admitted=admitted, state=b.get_state().value, again=again.get_state().value,
               degraded=degraded, again_degraded=again.get_status()["degraded"])
        """,
        region,
        go,
    )
    try:
        deadline = time.monotonic() + 30
        while not attached.exists():
            assert time.monotonic() < deadline and child.poll() is None, "the child never attached"
            time.sleep(0.01)
        with open(region, "r+b") as f:
            f.truncate(100)
        go.write_text("go")
        report = finish(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The child went on alone, on a private copy that started CLOSED and tripped on its own.
    assert (report["admitted"], report["state"], report["again"]) == (1_000, "OPEN", "CLOSED")
    # The status says the breaker is no longer shared; the new region's breaker is.
    assert (report["degraded"], report["again_degraded"]) == (True, False)
    assert any("stale region" in m and "truncated" in m for _, m in report["records"]), report["records"]


def test_corrupt_counters_saturate_instead_of_wrapping(region: Path) -> None:
    # Issue 21, item 12: four counters full of 0xff summed to 18446744073709551612.
    b = CircuitBreaker("counted", shared_memory=SharedMemory(region, capacity=1))
    before = region.read_bytes()
    b.call(lambda: 1)  # a CLOSED success writes one stripe's success count, nothing else
    after = region.read_bytes()
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert len(changed) == 1 and after[changed[0]] == 1, changed
    with open(region, "r+b") as f:
        f.seek(changed[0])
        f.write(b"\xff" * 32)  # successes, failures, ignored and rejections of that stripe
    metrics = b.get_metrics()
    assert metrics["total_successes"] == metrics["total_failures"] == 2**64 - 1
    assert metrics["total_requests"] == 2**64 - 1
