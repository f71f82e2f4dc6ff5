"""Python benchmark: circuit_breaker (this project) against pybreaker, circuitbreaker and the
pure-Python baseline, in one process, interleaved, medians of many repetitions.

    python benches/python/bench.py [--reps 25] [--loops 20000] [--markdown]

Needs: pip install . pybreaker circuitbreaker
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import random
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import baseline  # noqa: E402
import circuitbreaker  # noqa: E402
import pybreaker  # noqa: E402

import circuit_breaker  # noqa: E402

LONG = 3600
# The shared-memory store, in a region of its own where regions live by default (/dev/shm).
SHARED = f"/dev/shm/cb-python-bench-{os.getpid()}" if os.path.isdir("/dev/shm") else None
OURS, OURS_SHARED = "circuit_breaker (ours)", "circuit_breaker, shared memory"


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
    return {
        OURS: lambda: ours.call(f),
        OURS_SHARED: lambda: shared.call(f),
        "pybreaker": lambda: pyb.call(f),
        "circuitbreaker": cb_f,
        "pure-Python baseline": lambda: base.call(f),
    }


def make_open() -> Dict[str, Tuple[Callable[[], object], type]]:
    ours = circuit_breaker.CircuitBreaker("bench", failure_threshold=1, recovery_timeout_seconds=LONG)
    shared = circuit_breaker.CircuitBreaker("bench-open", failure_threshold=1, recovery_timeout_seconds=LONG, shared_memory=SHARED)
    pyb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=LONG)
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=LONG)
    cb_failing, cb_f = cb(failing), cb(f)
    base = baseline.CircuitBreaker("bench", failure_threshold=1, recovery_timeout_seconds=LONG)
    for trip in [lambda: ours.call(failing), lambda: shared.call(failing), cb_failing, lambda: base.call(failing)]:
        try:
            trip()
        except ValueError:
            pass
    pyb.open()
    cases = {
        OURS: (lambda: ours.call(f), circuit_breaker.CircuitBreakerOpenError),
        OURS_SHARED: (lambda: shared.call(f), circuit_breaker.CircuitBreakerOpenError),
        "pybreaker": (lambda: pyb.call(f), pybreaker.CircuitBreakerError),
        "circuitbreaker": (cb_f, circuitbreaker.CircuitBreakerError),
        "pure-Python baseline": (lambda: base.call(f), baseline.CircuitBreakerOpenError),
    }
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
        cases.append((f"closed/{name}", lambda call=call: time_loop(call, args.loops)))
    for name, (call, error) in opened.items():
        cases.append((f"open/{name}", lambda call=call, error=error: time_reject(call, error, args.loops)))

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
        "pybreaker": pybreaker.CircuitBreaker(fail_max=5, reset_timeout=LONG).call,
        "circuitbreaker": lambda fn: cb_par(fn)(),
        "pure-Python baseline": baseline.CircuitBreaker("par").call,
    }
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


if __name__ == "__main__":
    try:
        main()
    finally:
        if SHARED and os.path.exists(SHARED):
            os.unlink(SHARED)
