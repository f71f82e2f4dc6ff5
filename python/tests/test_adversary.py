"""Adversaries next to every shared thing, while real processes call through the breakers
(issue 21, "done when"): a process scribbling random bytes over a shared-memory region, and a
Redis client publishing forged words and garbage on the breakers' channels. What must hold:
no crash, no hang, no call slower than its bound, no count that wraps, and never more half-open
probes at once than `half_open_max_calls`, host-wide or fleet-wide.

The checked breaker trips on its first failure and then stays HALF_OPEN: every probe reports
`ignore()`, which frees its slot without ending the round. So after the first few calls every
admission is a probe, and each probe holds a Redis counter while it runs, which measures the
peak across processes. A forged CLOSED or DISABLED word taken for real would show as admissions
that are not probes; a forged HALF_OPEN word with free slots would raise the peak."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from children import PREAMBLE, finish
from test_redis import Server, server  # noqa: F401 - the suite's own redis-server fixture

from circuit_breaker import CircuitBreaker, SharedMemory

SECONDS = 3.0

# Each child: three threads call the checked breaker through permits (counting probes in Redis
# while they run) and through `call` on the others, timing every admission.
WORKER = """
    import random, threading
    import redis as redis_py
    admin = redis_py.Redis.from_url(os.environ["CB_TEST_COUNTER"])
    checked = CircuitBreaker("checked", failure_threshold=1, recovery_timeout_seconds=0.05,
                             half_open_max_calls=2, probe_timeout_seconds=30, **PLACE)
    others = [CircuitBreaker("chaos%d" % i, failure_threshold=2, recovery_timeout_seconds=0.05, **PLACE)
              for i in range(4)]
    stats = {"probes": 0, "not_probes": 0, "peak": 0, "worst": 0.0, "bad_status": [], "errors": []}
    lock = threading.Lock()
    STATES = {"CLOSED", "OPEN", "HALF_OPEN"}
    def work(seed):
        rng = random.Random(seed)
        deadline = time.monotonic() + float(os.environ["CB_TEST_SECONDS"])
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                permit = checked.acquire()
            except CircuitBreakerOpenError:
                permit = None
            took = time.perf_counter() - started
            if permit is not None and permit.is_probe:
                running = admin.incr("running")
                time.sleep(0.003)
                admin.decr("running")
                with lock:
                    stats["probes"] += 1
                    stats["peak"] = max(stats["peak"], running)
                permit.ignore()  # frees the slot, the round goes on
            elif permit is not None:
                with lock:
                    stats["not_probes"] += 1
                permit.failure()  # CLOSED (only before the first trip lands): trips it
            other = rng.choice(others)
            started = time.perf_counter()
            try:
                other.call(boom if rng.random() < 0.5 else (lambda: None))
            except (Boom, CircuitBreakerOpenError):
                pass
            except Exception as e:
                stats["errors"].append(repr(e))
            took = max(took, time.perf_counter() - started)
            status, metrics = other.get_status(), other.get_metrics()
            totals = [metrics[k] for k in ("total_successes", "total_failures", "total_rejections", "total_ignored")]
            # Garbage counters read as garbage, but a sum never wraps below its parts.
            ok = status["state"] in STATES and metrics["total_requests"] >= max(totals) and metrics["total_requests"] < 2**64
            with lock:
                stats["worst"] = max(stats["worst"], took)
                if not ok and len(stats["bad_status"]) < 5:
                    stats["bad_status"].append([status["state"], totals])
            time.sleep(0.0005)
    print("ATTACHED", flush=True)
    wait_for_go()
    def guarded(seed):
        try:
            work(seed)
        except BaseException as e:
            stats["errors"].append(repr(e))
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(**stats, final=checked.get_status()["state"])
"""


def start_workers(place: str, env: Dict[str, str], count: int) -> "List[subprocess.Popen[str]]":
    script = PREAMBLE + f"PLACE = {place}\n" + textwrap.dedent(WORKER)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUIT_BREAKER_")}
    child_env.update(env, CB_TEST_SECONDS=str(SECONDS))
    children = [
        subprocess.Popen([sys.executable, "-c", script], env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    # Every child has attached its breakers before anyone scribbles or forges.
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ATTACHED":
            for c in children:  # none is left running
                c.kill()
                c.wait()
            raise AssertionError(f"a worker did not attach: {line!r} {child.stderr.read() if child.stderr else ''}")
    return children


def check(reports: List[Dict[str, Any]], worst_allowed: float) -> None:
    for r in reports:
        assert r["errors"] == [], r["errors"]
        assert r["bad_status"] == [], r["bad_status"]
        assert r["worst"] < worst_allowed, f"a call took {r['worst'] * 1000:.0f} ms"
    assert max(r["peak"] for r in reports) <= 2, [r["peak"] for r in reports]
    assert sum(r["probes"] for r in reports) >= 50, "too few probes to say anything"
    # Only the calls admitted in CLOSED before the first failure landed (one per thread at
    # most): a forged CLOSED or DISABLED word taken for real admits thousands.
    not_probes = [r["not_probes"] for r in reports]
    assert sum(not_probes) <= 3 * len(reports), not_probes


def test_random_bytes_written_over_a_region_never_crash_hang_or_widen_admission(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "region"
    region = SharedMemory(path, capacity=16)
    names = ["checked"] + ["chaos%d" % i for i in range(4)]
    held = [CircuitBreaker(n, shared_memory=region) for n in names]  # claims the slots
    data = path.read_bytes()
    slot_size = (len(data) - 4096) // 16
    at = data.find(b"checked")
    assert at > 4096, "the slot layout changed: update this test"
    checked_slot = range(4096 + (at - 4096) // slot_size * slot_size, 4096 + ((at - 4096) // slot_size + 1) * slot_size)
    go = tmp_path / "go"
    workers = start_workers(f"{{'shared_memory': {str(path)!r}}}", {"CB_TEST_COUNTER": server.url, "CB_TEST_GO": str(go)}, 2)
    go.touch()
    # The checked breaker's own slot is spared: a writer of the region can set any word
    # (README, Safety), so what is checked is that damage anywhere else never widens it.
    rng = random.Random(21)
    writes = 0
    deadline = time.monotonic() + SECONDS
    with open(path, "r+b") as f:
        while time.monotonic() < deadline:
            size = rng.choice([1, 2, 4, 8, 8, 8, 64])
            offset = rng.randrange(0, len(data) - size)
            if offset + size > checked_slot.start and offset < checked_slot.stop:
                continue
            if size == 8:
                offset -= offset % 8  # whole words, counters and tags too
            f.seek(offset)
            f.write(rng.randbytes(size))
            f.flush()
            writes += 1
            if writes % 50 == 0:
                time.sleep(0.001)
    reports = [finish(w, timeout=60) for w in workers]
    assert writes > 1000
    check(reports, worst_allowed=0.5)
    del held


def test_forged_words_and_garbage_published_on_the_channels_change_nothing(server: Server, tmp_path: Path) -> None:
    import redis as redis_py

    admin = redis_py.Redis.from_url(server.url)
    # The words a forger would send, made by a real breaker on a scratch name.
    before = set(admin.keys("*"))
    scratch = CircuitBreaker("scratch", redis=server.url)
    scratch.force_open()
    forged: List[bytes] = []
    for control in (scratch.force_open, scratch.disable, scratch.reset):
        control()
        for key in set(admin.keys("*")) - before:
            value = admin.get(key) if admin.type(key) == b"string" else None
            if value is not None and value.isdigit():
                forged.append(value)
    assert len(forged) >= 3
    go = tmp_path / "go"
    workers = start_workers(f"{{'redis': {server.url!r}}}", {"CB_TEST_COUNTER": server.url, "CB_TEST_GO": str(go)}, 2)
    channels = [k for k in admin.keys("*") if b"checked" in k or b"chaos" in k]
    assert channels, "the breakers' keys were not found"
    garbage = [b"", b"-1", b"18446744073709551616", b"not a word", os.urandom(64), b"9" * 4096]
    stop = threading.Event()
    published = [0]

    def forge() -> None:
        rng = random.Random(4)
        while not stop.is_set():
            channel = rng.choice(channels)
            admin.publish(channel, rng.choice(forged + garbage))
            published[0] += 1

    forger = threading.Thread(target=forge)
    go.touch()
    forger.start()
    try:
        reports = [finish(w, timeout=60) for w in workers]
    finally:
        stop.set()
        forger.join()
    assert published[0] > 1000
    check(reports, worst_allowed=0.25)
