"""Instructions per Python-level operation, deterministic (unlike wall-clock on a shared VM).

    python benches/python/icount.py report     # the table (needs valgrind; ~1 minute)

`report` runs this script under callgrind with a fixed hash seed (CPython's hash randomisation
changes dict probing, and so the counts, between runs) at two loop lengths per case; the
difference divided by the extra iterations is the cost of one iteration, start-up cancelled
out. Overheads subtract the matching floor the same way: a CLOSED call (`breaker.call(f)`, and
`f` decorated with `@breaker`) against `f()`, a rejection against a bare `raise`/`except`.
Run one case by hand with `python benches/python/icount.py CASE N`.
"""

from __future__ import annotations

import logging
import sys

import circuit_breaker

CASES = {
    "call": "floor",
    "call_shared": "floor",
    "call_rate_count": "floor",
    "call_rate_time": "floor",
    "call_limited": "floor",
    "call_limited_shared": "floor",
    "decorated": "floor",
    "reject": "raise",
    "reject_shared": "raise",
}


def report() -> None:
    import os
    import subprocess

    env = dict(os.environ, PYTHONHASHSEED="0")

    def instructions(case: str, n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, case, str(n)],
            env=env, capture_output=True, text=True, check=True,
        ).stderr
        return int(next(line for line in out.splitlines() if "Collected" in line).split()[-1])

    def per_iteration(case: str) -> float:
        return (instructions(case, 60_000) - instructions(case, 20_000)) / 40_000

    floors = {floor: per_iteration(floor) for floor in set(CASES.values())}
    print(f"Python {sys.version.split()[0]}, callgrind, instructions per operation\n")
    print("| case | instructions | over | overhead |\n|---|---:|---|---:|")
    for case, floor in CASES.items():
        total = per_iteration(case)
        print(f"| {case} | {total:.0f} | {floor} ({floors[floor]:.0f}) | {total - floors[floor]:.0f} |")


if sys.argv[1:] == ["report"]:
    report()
    raise SystemExit
CASE, N = sys.argv[1], int(sys.argv[2])


class Floor(Exception):
    pass


def f() -> int:
    return 1


def raise_floor() -> None:
    raise Floor


def floor(n: int) -> None:
    for _ in range(n):
        f()


def call(n: int, **where: object) -> None:
    breaker = circuit_breaker.CircuitBreaker("icount", **where)
    for _ in range(n):
        breaker.call(f)


def in_shared_memory(run):  # type: ignore[no-untyped-def]
    """The same case with the breaker in a shared-memory region of its own (removed after)."""

    def shared(n: int) -> None:
        import os
        import tempfile

        path = os.path.join(tempfile.mkdtemp(), "region")
        try:
            run(n, shared_memory=path)
        finally:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))

    return shared


def decorated(n: int) -> None:
    g = circuit_breaker.CircuitBreaker("icount")(f)
    for _ in range(n):
        g()


def raise_(n: int) -> None:
    for _ in range(n):
        try:
            raise_floor()
        except Floor:
            pass


def reject(n: int, **where: object) -> None:
    breaker = circuit_breaker.CircuitBreaker("icount", failure_threshold=1, recovery_timeout_seconds=3600, **where)
    try:
        breaker.call(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    open_error = circuit_breaker.CircuitBreakerOpenError
    for _ in range(n):
        try:
            breaker.call(f)
        except open_error:
            pass


# The loops run in functions, so the names they use are fast locals and a case's count is
# not shifted by dict lookups of module globals.
RUNS = {
    "floor": floor,
    "call": call,
    "call_shared": in_shared_memory(call),
    # A failure-rate policy over the last 100 calls / the last 10 s.
    "call_rate_count": lambda n: call(n, failure_rate_threshold=0.5, window_calls=100),
    "call_rate_time": lambda n: call(n, failure_rate_threshold=0.5, window_seconds=10),
    # max_concurrent_calls: a place taken and given back per call (in this process / the slot).
    "call_limited": lambda n: call(n, max_concurrent_calls=64),
    "call_limited_shared": in_shared_memory(lambda n, **where: call(n, max_concurrent_calls=64, **where)),
    "decorated": decorated,
    "raise": raise_,
    "reject": reject,
    "reject_shared": in_shared_memory(reject),
}
logging.getLogger("circuit_breaker").disabled = True
if CASE not in RUNS:
    raise SystemExit(f"unknown case {CASE!r}")
RUNS[CASE](N)
