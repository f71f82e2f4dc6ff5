"""The threaded companion of test_model.py: many threads on one breaker doing every kind of call,
then the totals add up exactly, the half-open limit was never exceeded, each trip was logged
exactly once, and the listener heard one unbroken chain of transitions."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Dict, List, Tuple

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerState

from model import Boom, Excluded

THREADS = 16
SECONDS = float(os.environ.get("CB_MODEL_THREAD_SECONDS", "1.5"))
PROBES = 3


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: List[Tuple[str, str]] = []
        self.mutex = threading.Lock()  # not `lock`: that is logging.Handler's own

    def emit(self, record: logging.LogRecord) -> None:
        with self.mutex:
            self.lines.append((record.levelname, record.getMessage()))


def test_many_threads_keep_exact_totals_limits_logs_and_one_chain_of_events() -> None:
    breaker = CircuitBreaker(
        "threads-model",
        failure_threshold=5,
        recovery_timeout_seconds=0.02,
        success_threshold=2,
        half_open_max_calls=PROBES,
        exclude=[Excluded],
    )
    events: List[Tuple[str, str, str]] = []
    events_lock = threading.Lock()

    def hear(b: CircuitBreaker, old: CircuitBreakerState, new: CircuitBreakerState, reason: str) -> None:
        with events_lock:
            events.append((old.value, new.value, reason))

    breaker.add_listener(hear)
    handler = Collect()
    logger = logging.getLogger("circuit_breaker")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    seen: Dict[str, int] = {"success": 0, "failure": 0, "ignored": 0, "rejected": 0}
    seen_lock = threading.Lock()
    # Probes running now per round (generation), and the most seen at once in any round: the
    # limit holds per round (a failed round's stale probes may still run in the next).
    probing: Dict[int, int] = {}
    peak = [0]
    probing_lock = threading.Lock()
    stop = time.monotonic() + SECONDS
    start = threading.Barrier(THREADS)

    def count(key: str) -> None:
        with seen_lock:
            seen[key] += 1

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        while time.monotonic() < stop:
            fail = rng.random() < 0.45
            way = rng.randrange(4)
            try:
                if way == 0:
                    breaker.call(lambda: (_ for _ in ()).throw(Boom("x")) if fail else 1)
                    count("success")
                elif way == 1:
                    with breaker:
                        if fail:
                            raise Boom("x")
                    count("success")
                elif way == 2:
                    breaker.call(lambda: (_ for _ in ()).throw(Excluded("x")))
                else:
                    permit = breaker.acquire()
                    if permit.is_probe:
                        with probing_lock:
                            probing[permit.generation] = probing.get(permit.generation, 0) + 1
                            peak[0] = max(peak[0], probing[permit.generation])
                        time.sleep(0.001)
                        with probing_lock:
                            probing[permit.generation] -= 1
                    if fail:
                        permit.failure()
                        count("failure")
                    else:
                        permit.success()
                        count("success")
            except Boom:
                count("failure")
            except Excluded:
                count("ignored")
            except CircuitBreakerOpenError:
                count("rejected")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.removeHandler(handler)

    m = breaker.get_metrics()
    assert (m["total_successes"], m["total_failures"], m["total_ignored"], m["total_rejections"]) == (
        seen["success"],
        seen["failure"],
        seen["ignored"],
        seen["rejected"],
    )
    assert m["total_requests"] == sum(seen.values())
    assert m["circuit_opened_count"] > 1, "the run should trip the breaker several times"
    assert 1 <= peak[0] <= PROBES, f"{peak[0]} probes of one round ran at once"

    opens = [line for line in handler.lines if "transitioning to OPEN" in line[1]]
    assert len(opens) == m["circuit_opened_count"], "each trip logged exactly once"

    # One unbroken chain: each event starts where the one before ended.
    assert events and events[0][0] == "CLOSED"
    breaks = [(a, b) for a, b in zip(events, events[1:]) if a[1] != b[0]]
    assert not breaks, f"{len(breaks)} breaks in {len(events)} events, e.g. {breaks[:3]}"
    assert events[-1][1] == breaker.get_state().value
