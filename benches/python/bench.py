"""Python benchmark: circuit_breaker (this project) against pybreaker, circuitbreaker and the
pure-Python baseline, in one process, interleaved, medians of many repetitions.

    python benches/python/bench.py [--reps 25] [--loops 20000] [--markdown]

Needs: pip install . pybreaker circuitbreaker redis, and redis-server on the PATH for the
Redis rows (the benchmark starts its own on a free loopback port).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import baseline  # noqa: E402
import circuitbreaker  # noqa: E402
import pybreaker  # noqa: E402

import circuit_breaker  # noqa: E402

LONG = 3600
# The shared-memory store, in a region of its own where regions live by default (/dev/shm).
SHARED = f"/dev/shm/cb-python-bench-{os.getpid()}" if os.path.isdir("/dev/shm") else None
OURS, OURS_SHARED = "circuit_breaker (ours)", "circuit_breaker, shared memory"
OURS_REDIS, PYB_REDIS = "circuit_breaker, Redis", "pybreaker + CircuitRedisStorage"
OURS_RATE = "circuit_breaker, failure-rate policy"
OURS_LIMIT, OURS_SHARED_LIMIT = "circuit_breaker, max_concurrent_calls", "circuit_breaker, shared memory, max_concurrent_calls"
LIMIT = dict(max_concurrent_calls=64)
RATE = dict(failure_rate_threshold=0.5, minimum_calls=100, window_seconds=10)
# Libraries whose every call is a network round trip are timed on fewer calls per sample.
SLOW = {PYB_REDIS}


def start_redis() -> Optional[Tuple["subprocess.Popen[bytes]", str]]:
    """A redis-server of the benchmark's own on a free loopback port, or None."""
    if shutil.which("redis-server") is None:
        print("(redis-server not found: the Redis rows are left out)", file=sys.stderr)
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="cb-bench-redis-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                return None
            time.sleep(0.02)


REDIS = start_redis()
REDIS_URL = REDIS[1] if REDIS else None


def pybreaker_redis(fail_max: int, name: str) -> "pybreaker.CircuitBreaker":
    import redis

    client = redis.Redis.from_url(REDIS_URL or "")
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=f"{name}-{os.getpid()}")
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=LONG, state_storage=storage)


def f() -> int:
    return 1


def failing() -> None:
    raise ValueError("down")


class Floor(Exception):
    pass


def make_closed() -> Dict[str, Callable[[], object]]:
    ours = circuit_breaker.CircuitBreaker("bench")
    shared = circuit_breaker.CircuitBreaker("bench", shared_memory=SHARED)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=LONG)
    # circuitbreaker checks the state only in its decorator (its call() never rejects), so it
    # is measured the way its users call it.
    cb_f = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=LONG)(f)
    base = baseline.CircuitBreaker("bench")
    rate = circuit_breaker.CircuitBreaker("bench-rate", **RATE)  # type: ignore[arg-type]
    limited = circuit_breaker.CircuitBreaker("bench-limit", **LIMIT)  # type: ignore[arg-type]
    shared_limited = circuit_breaker.CircuitBreaker("bench-limit", shared_memory=SHARED, **LIMIT)  # type: ignore[arg-type]
    cases: Dict[str, Callable[[], object]] = {
        OURS: lambda: ours.call(f),
        OURS_SHARED: lambda: shared.call(f),
        OURS_RATE: lambda: rate.call(f),
        OURS_LIMIT: lambda: limited.call(f),
        OURS_SHARED_LIMIT: lambda: shared_limited.call(f),
        "pybreaker": lambda: pyb.call(f),
        "circuitbreaker": cb_f,
        "pure-Python baseline": lambda: base.call(f),
    }
    if REDIS_URL:
        fleet = circuit_breaker.CircuitBreaker(f"bench-{os.getpid()}", redis=REDIS_URL)
        pyb_redis = pybreaker_redis(5, "bench-closed")
        cases[OURS_REDIS] = lambda: fleet.call(f)
        cases[PYB_REDIS] = lambda: pyb_redis.call(f)
    return cases


def make_open() -> Dict[str, Tuple[Callable[[], object], type]]:
    ours = circuit_breaker.CircuitBreaker("bench", failure_threshold=1, recovery_timeout_seconds=LONG)
    shared = circuit_breaker.CircuitBreaker("bench-open", failure_threshold=1, recovery_timeout_seconds=LONG, shared_memory=SHARED)
    pyb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=LONG)
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=LONG)
    cb_failing, cb_f = cb(failing), cb(f)
    base = baseline.CircuitBreaker("bench", failure_threshold=1, recovery_timeout_seconds=LONG)
    rate = circuit_breaker.CircuitBreaker("bench-rate-open", failure_threshold=1, recovery_timeout_seconds=LONG, **RATE)  # type: ignore[arg-type]
    limited = circuit_breaker.CircuitBreaker("bench-limit-open", failure_threshold=1, recovery_timeout_seconds=LONG, **LIMIT)  # type: ignore[arg-type]
    shared_limited = circuit_breaker.CircuitBreaker(
        "bench-limit-open", failure_threshold=1, recovery_timeout_seconds=LONG, shared_memory=SHARED, **LIMIT  # type: ignore[arg-type]
    )
    trips = [ours, shared, rate, limited, shared_limited]
    for trip in [*(lambda b=b: b.call(failing) for b in trips), cb_failing, lambda: base.call(failing)]:
        try:
            trip()
        except ValueError:
            pass
    pyb.open()
    cases: Dict[str, Tuple[Callable[[], object], type]] = {
        OURS: (lambda: ours.call(f), circuit_breaker.CircuitBreakerOpenError),
        OURS_SHARED: (lambda: shared.call(f), circuit_breaker.CircuitBreakerOpenError),
        OURS_RATE: (lambda: rate.call(f), circuit_breaker.CircuitBreakerOpenError),
        OURS_LIMIT: (lambda: limited.call(f), circuit_breaker.CircuitBreakerOpenError),
        OURS_SHARED_LIMIT: (lambda: shared_limited.call(f), circuit_breaker.CircuitBreakerOpenError),
        "pybreaker": (lambda: pyb.call(f), pybreaker.CircuitBreakerError),
        "circuitbreaker": (cb_f, circuitbreaker.CircuitBreakerError),
        "pure-Python baseline": (lambda: base.call(f), baseline.CircuitBreakerOpenError),
    }
    if REDIS_URL:
        fleet = circuit_breaker.CircuitBreaker(
            f"bench-open-{os.getpid()}", failure_threshold=1, recovery_timeout_seconds=LONG, redis=REDIS_URL
        )
        try:
            fleet.call(failing)
        except ValueError:
            pass
        pyb_redis = pybreaker_redis(1, "bench-open")
        pyb_redis.open()
        cases[OURS_REDIS] = (lambda: fleet.call(f), circuit_breaker.CircuitBreakerOpenError)
        cases[PYB_REDIS] = (lambda: pyb_redis.call(f), pybreaker.CircuitBreakerError)
    for name, (call, error) in cases.items():
        try:
            call()
            raise SystemExit(f"{name} did not reject")
        except error:
            pass
    return cases


def time_loop(call: Callable[[], object], loops: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(loops):
        call()
    return (time.perf_counter_ns() - start) / loops


def time_reject(call: Callable[[], object], error: type, loops: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(loops):
        try:
            call()
        except error:
            pass
    return (time.perf_counter_ns() - start) / loops


def raise_floor() -> None:
    raise Floor


def parallel_wall(call: Callable[[Callable[[], object]], object], threads: int = 8) -> float:
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        call(lambda: time.sleep(0.010))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    barrier.wait()
    for t in pool:
        t.join()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=25, help="interleaved repetitions (default 25)")
    parser.add_argument("--loops", type=int, default=20_000, help="calls per timed sample (default 20000)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    # The breakers under test log their transitions; the benchmark's output is the tables.
    logging.getLogger("circuit_breaker").disabled = True

    closed = make_closed()
    opened = make_open()
    samples: Dict[str, List[float]] = {}
    # Every case is called through one lambda, so the floor is too: the wrapper cancels out.
    floor_f: Callable[[], object] = lambda: f()  # noqa: E731
    cases: List[Tuple[str, Callable[[], float]]] = [("floor/call f()", lambda: time_loop(floor_f, args.loops))]
    floor_raise_call: Callable[[], object] = lambda: raise_floor()  # noqa: E731
    cases.append(("floor/raise+except", lambda: time_reject(floor_raise_call, Floor, args.loops)))
    for name, call in closed.items():
        loops = args.loops // 50 if name in SLOW else args.loops
        cases.append((f"closed/{name}", lambda call=call, loops=loops: time_loop(call, loops)))
    for name, (call, error) in opened.items():
        loops = args.loops // 50 if name in SLOW else args.loops
        cases.append((f"open/{name}", lambda call=call, error=error, loops=loops: time_reject(call, error, loops)))

    gc.disable()
    for _ in range(args.reps):
        random.shuffle(cases)
        for label, run in cases:
            samples.setdefault(label, []).append(run())
    gc.enable()

    # 8 threads, one 10 ms call each, through one breaker per library.
    walls: Dict[str, List[float]] = {}
    cb_par = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=LONG)
    parallel = {
        OURS: circuit_breaker.CircuitBreaker("par").call,
        OURS_SHARED: circuit_breaker.CircuitBreaker("par", shared_memory=SHARED).call,
        OURS_RATE: circuit_breaker.CircuitBreaker("par-rate", **RATE).call,  # type: ignore[arg-type]
        OURS_LIMIT: circuit_breaker.CircuitBreaker("par-limit", **LIMIT).call,  # type: ignore[arg-type]
        OURS_SHARED_LIMIT: circuit_breaker.CircuitBreaker("par-limit", shared_memory=SHARED, **LIMIT).call,  # type: ignore[arg-type]
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=LONG).call,
        "circuitbreaker": lambda fn: cb_par(fn)(),
        "pure-Python baseline": baseline.CircuitBreaker("par").call,
    }
    if REDIS_URL:
        parallel[OURS_REDIS] = circuit_breaker.CircuitBreaker(f"par-{os.getpid()}", redis=REDIS_URL).call
        parallel[PYB_REDIS] = pybreaker_redis(5, "par").call
    for _ in range(7):
        for name, call in random.sample(list(parallel.items()), len(parallel)):
            walls.setdefault(name, []).append(parallel_wall(call))

    med = {k: statistics.median(v) for k, v in samples.items()}
    floor_call, floor_raise = med["floor/call f()"], med["floor/raise+except"]
    libs = list(closed)
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.reps} interleaved reps x {args.loops} calls; medians")
    print()
    print("| library | CLOSED call overhead (ns) | vs ours | OPEN rejection (ns) | vs ours | rejection minus raise floor (ns) | 8 x 10 ms calls, wall (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ours_closed = med[f"closed/{libs[0]}"] - floor_call
    ours_open = med[f"open/{libs[0]}"]
    for lib in libs:
        overhead = med[f"closed/{lib}"] - floor_call
        reject = med[f"open/{lib}"]
        print(
            f"| {lib} | {overhead:.0f} | {overhead / ours_closed:.1f}x | {reject:.0f} | {reject / ours_open:.1f}x "
            f"| {reject - floor_raise:.0f} | {statistics.median(walls[lib]):.1f} |"
        )
    print(f"| floor | `f()` = {floor_call:.0f} | | `raise`+`except` = {floor_raise:.0f} | | 0 | 10.0 |")
    print()
    extra_closed = med[f"closed/{OURS_SHARED}"] - med[f"closed/{OURS}"]
    extra_open = med[f"open/{OURS_SHARED}"] - med[f"open/{OURS}"]
    print(f"Shared memory minus in-process, same run: CLOSED call {extra_closed:+.1f} ns, OPEN rejection {extra_open:+.1f} ns.")
    rate_closed = med[f"closed/{OURS_RATE}"] - med[f"closed/{OURS}"]
    print(f"Failure-rate policy (10 s window) minus consecutive-only, same run: CLOSED call {rate_closed:+.1f} ns.")
    limit_closed = med[f"closed/{OURS_LIMIT}"] - med[f"closed/{OURS}"]
    limit_open = med[f"open/{OURS_LIMIT}"] - med[f"open/{OURS}"]
    shared_limit = med[f"closed/{OURS_SHARED_LIMIT}"] - med[f"closed/{OURS_SHARED}"]
    print(
        f"max_concurrent_calls minus no limit, same run: CLOSED call {limit_closed:+.1f} ns, OPEN rejection "
        f"{limit_open:+.1f} ns; in shared memory (host-wide count) CLOSED call {shared_limit:+.1f} ns."
    )
    if REDIS_URL:
        ratio_closed = (med[f"closed/{OURS_REDIS}"] - floor_call) / ours_closed
        ratio_open = med[f"open/{OURS_REDIS}"] / ours_open
        print(f"Redis store / in-process, same run: CLOSED call overhead {ratio_closed:.2f}x, OPEN rejection {ratio_open:.2f}x.")
        print()
        dead_dependency()


# One "host": a breaker shared through Redis (threshold 3) in front of a dependency that is
# down, called 50 times a second for 2 s. Prints how many calls reached the dependency.
HOST = textwrap.dedent(
    """
    import logging, os, sys, time
    logging.disable(logging.CRITICAL)
    lib, url, go = sys.argv[1], sys.argv[2], sys.argv[3]
    if lib == "ours":
        import circuit_breaker
        b = circuit_breaker.CircuitBreakerRegistry().get_or_create("dead", failure_threshold=3, recovery_timeout_seconds=60)
        rejected = circuit_breaker.CircuitBreakerOpenError
    else:
        import pybreaker, redis
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis.Redis.from_url(url), namespace="dead")
        b = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60, state_storage=storage)
        rejected = pybreaker.CircuitBreakerError
    reached = 0
    def dead():
        global reached
        reached += 1
        raise ConnectionError("down")
    while not os.path.exists(go):
        time.sleep(0.001)
    for _ in range(100):
        try:
            b.call(dead)
        except (ConnectionError, rejected):
            pass
        time.sleep(0.02)
    print(reached)
    """
)


def dead_dependency(hosts: int = 4, runs: int = 5) -> None:
    import redis

    print(f"Calls that reached a dead dependency: {hosts} processes x 50 calls/s for 2 s, threshold 3, "
          f"one Redis; median (and max) of {runs} runs")
    print()
    print("| library | calls reaching the dependency | max |")
    print("|---|---:|---:|")
    for lib, label in (("ours", f"{OURS_REDIS} (CIRCUIT_BREAKER_REDIS_URL only)"), ("pybreaker", PYB_REDIS)):
        totals = []
        for _ in range(runs):
            redis.Redis.from_url(REDIS_URL or "").flushall()
            go = tempfile.mktemp(prefix="cb-bench-go-")
            env = {**os.environ, "CIRCUIT_BREAKER_REDIS_URL": REDIS_URL or ""}
            children = [
                subprocess.Popen([sys.executable, "-c", HOST, lib, REDIS_URL or "", go], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(hosts)
            ]
            time.sleep(1.0)
            open(go, "w").close()
            totals.append(sum(int(c.communicate()[0].strip()) for c in children))
            os.unlink(go)
        print(f"| {label} | {statistics.median(totals):.0f} | {max(totals)} |")
    print(f"| one breaker (the floor) | 3 | 3 |")


if __name__ == "__main__":
    try:
        main()
    finally:
        if SHARED and os.path.exists(SHARED):
            os.unlink(SHARED)
        if REDIS:
            REDIS[0].kill()
            REDIS[0].wait()
