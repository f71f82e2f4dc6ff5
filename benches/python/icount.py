"""Instructions per Python-level operation, deterministic (unlike wall-clock on a shared VM).

Run under callgrind with a fixed hash seed (CPython's hash randomisation changes dict probing,
and so the counts, between runs) at two loop lengths; the difference divided by the extra
iterations is the cost of one iteration, start-up cancelled out:

    export PYTHONHASHSEED=0 PY=$(python3 -c 'import sys; print(sys.executable)')
    for case in floor call raise reject; do for n in 20000 60000; do
        printf '%s %s ' $case $n
        valgrind --tool=callgrind --callgrind-out-file=/dev/null $PY benches/python/icount.py $case $n 2>&1 \\
            | awk '/Collected/ {print $4}'
    done; done

CLOSED overhead = (call60000 - call20000 - floor60000 + floor20000) / 40000; rejection over a
bare raise/except = the same with reject and raise.
"""

from __future__ import annotations

import logging
import sys

import circuit_breaker

CASE, N = sys.argv[1], int(sys.argv[2])


class Floor(Exception):
    pass


def f() -> int:
    return 1


def raise_floor() -> None:
    raise Floor


logging.getLogger("circuit_breaker").disabled = True
if CASE == "floor":
    for _ in range(N):
        f()
elif CASE == "call":
    breaker = circuit_breaker.CircuitBreaker("icount")
    for _ in range(N):
        breaker.call(f)
elif CASE == "raise":
    for _ in range(N):
        try:
            raise_floor()
        except Floor:
            pass
elif CASE == "reject":
    breaker = circuit_breaker.CircuitBreaker("icount", failure_threshold=1, recovery_timeout_seconds=3600)
    try:
        breaker.call(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    for _ in range(N):
        try:
            breaker.call(f)
        except circuit_breaker.CircuitBreakerOpenError:
            pass
else:
    raise SystemExit(f"unknown case {CASE!r}")
