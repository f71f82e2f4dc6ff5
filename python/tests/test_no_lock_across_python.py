"""No Rust lock is held while the GIL may be released or Python code may run, and every Python
object a breaker holds is visible to the cycle collector (issue 21, items 1, 2, 13, 14).

A hang here would freeze the whole interpreter, so each threaded scenario runs in a child
process with a hard timeout: a deadlock fails the test instead of stalling the suite."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from children import PREAMBLE

from test_redis import Server, server  # noqa: F401 - the suite's own redis-server fixture

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, SharedMemory


def run_child(script: str, env: Dict[str, str], timeout: float = 20) -> Dict[str, Any]:
    """Runs `script` after the common preamble; a child still running after `timeout` seconds
    is killed and fails the test as a hang."""
    child = subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child hung (killed after {timeout} s): a lock held across a GIL release?\n{err[-2000:]}")
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{err}"
    reports = [json.loads(line[len("REPORT ") :]) for line in out.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 1, out + err
    return dict(reports[0])


# Several threads construct breakers at once, each on regions no thread of the process has
# mapped yet: opening a region waits on its file lock with the GIL released.
CONSTRUCT_IN_THREADS = """
    import threading
    rounds, threads = 25, 4
    made = []
    def construct(i, barrier, spec):
        barrier.wait()
        made.append(CircuitBreaker("svc%d" % i, **spec))
    for r in range(rounds):
        barrier = threading.Barrier(threads)
        spec = SPEC(r)
        workers = [threading.Thread(target=construct, args=(i, barrier, spec)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    report(made=len(made))
"""


def test_threads_constructing_shared_memory_breakers_at_once_never_freeze_the_interpreter(tmp_path: Path) -> None:
    script = "SPEC = lambda r: {'shared_memory': os.path.join(os.environ['CB_TEST_DIR'], 'region%d' % r)}\n"
    report = run_child(script + textwrap.dedent(CONSTRUCT_IN_THREADS), {"CB_TEST_DIR": str(tmp_path)})
    assert report["made"] == 25 * 4


def test_threads_constructing_breakers_from_the_environment_never_freeze_the_interpreter(tmp_path: Path) -> None:
    # The issue's own repro: CIRCUIT_BREAKER_SHARED_MEMORY names a fresh path, four threads.
    script = "SPEC = lambda r: {}\n"
    env = {"CIRCUIT_BREAKER_SHARED_MEMORY": str(tmp_path / "region")}
    report = run_child(script + textwrap.dedent(CONSTRUCT_IN_THREADS), env)
    assert report["made"] == 25 * 4
    assert sorted(SharedMemory(tmp_path / "region").names()) == ["svc%d" % i for i in range(4)]


def test_threads_constructing_redis_breakers_at_once_never_freeze_the_interpreter(server: Server) -> None:
    # Connecting to Redis happens with the GIL released, as opening a region does.
    script = "SPEC = lambda r: {'redis': os.environ['CB_TEST_URL'].replace('/0', '/%d' % (r % 16))}\n"
    report = run_child(script + textwrap.dedent(CONSTRUCT_IN_THREADS), {"CB_TEST_URL": server.url})
    assert report["made"] == 25 * 4


def test_an_exception_whose_del_releases_the_gil_never_freezes_the_interpreter() -> None:
    # Each trip replaces the stored last failure; dropping the old one runs a __del__ that
    # sleeps (releasing the GIL) while the other thread trips the breaker again.
    script = """
        import threading
        class Sleepy:
            def __del__(self):
                time.sleep(0.001)
        class Failure(Exception):
            def __init__(self):
                super().__init__("down")
                self.payload = Sleepy()
        def fail():
            raise Failure()
        b = CircuitBreaker("sleepy", failure_threshold=1, recovery_timeout_seconds=0)
        counts = {"failed": 0, "rejected": 0}
        def hammer():
            for _ in range(400):
                try:
                    b.call(fail)
                except Failure:
                    counts["failed"] += 1
                except CircuitBreakerOpenError:
                    counts["rejected"] += 1
        workers = [threading.Thread(target=hammer) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        report(**counts, last=type(b.last_failure).__name__)
    """
    report = run_child(script, {})
    assert report["failed"] + report["rejected"] == 800
    assert report["failed"] > 0 and report["last"] == "Failure"


def test_listeners_whose_eq_and_del_release_the_gil_can_be_removed_while_others_transition() -> None:
    script = """
        import threading
        class Listener:
            def __init__(self, key):
                self.key = key
            def __call__(self, *args):
                calls.append(self.key)
                time.sleep(0.0005)
            def __eq__(self, other):
                time.sleep(0.0005)
                return isinstance(other, Listener) and other.key == self.key
            __hash__ = None
            def __del__(self):
                time.sleep(0.0005)
        calls = []
        b = CircuitBreaker("churn", failure_threshold=1, recovery_timeout_seconds=0)
        stop = threading.Event()
        def churn():
            for i in range(200):
                b.add_listener(Listener(i))
                b.remove_listener(Listener(i))  # an equal object, not the same one
        def trip():
            while not stop.is_set():
                try:
                    b.call(boom)
                except Exception:
                    pass
        t = threading.Thread(target=trip)
        t.start()
        churn()
        stop.set()
        t.join()
        during = len(calls)
        del calls[:]
        b.force_open()  # a transition: every listener still registered is called
        report(during=during, after=len(calls))
    """
    report = run_child(script, {})
    assert report["after"] == 0, "a listener removed by an equal object was still called"


def test_remove_listener_finds_an_equal_bound_method() -> None:
    # Each attribute access makes a new bound method: `remove_listener(obj.method)` must find
    # the one `add_listener(obj.method)` stored, as list.remove and logging do.
    class Watcher:
        def __init__(self) -> None:
            self.seen: list = []

        def on_change(self, breaker: Any, old: Any, new: Any, reason: str) -> None:
            self.seen.append(new.name)

    b = CircuitBreaker("bound", failure_threshold=1, recovery_timeout_seconds=60)
    w = Watcher()
    b.add_listener(w.on_change)
    b.remove_listener(w.on_change)
    with pytest.raises(Exception):
        b.call(lambda: 1 / 0)
    assert w.seen == []  # removed: not called on the trip
    with pytest.raises(ValueError, match="not added"):
        b.remove_listener(w.on_change)
    # Two equal listeners added: one removal removes one of them.
    b.reset()
    b.add_listener(w.on_change)
    b.add_listener(w.on_change)
    b.remove_listener(w.on_change)
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0)
    assert w.seen == ["OPEN"]


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    # Collections happen only where the test asks, so "collected" means "by this collect()".
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def collected(make: Any) -> bool:
    ref = make()
    gc.collect()
    return bool(ref() is None)


@pytest.mark.usefixtures("no_automatic_gc")
def test_a_breaker_whose_listener_refers_to_it_is_collected() -> None:
    def make() -> "weakref.ref[CircuitBreaker]":
        b = CircuitBreaker("cycle-listener")
        b.add_listener(lambda *args: b)
        return weakref.ref(b)

    assert collected(make)


@pytest.mark.usefixtures("no_automatic_gc")
def test_a_breaker_whose_last_failure_traceback_refers_to_it_is_collected() -> None:
    def make() -> "weakref.ref[CircuitBreaker]":
        b = CircuitBreaker("cycle-failure", failure_threshold=1, recovery_timeout_seconds=60)

        def fail() -> None:
            breaker = b  # noqa: F841 - the traceback's frame holds the breaker
            raise RuntimeError("down")

        with pytest.raises(RuntimeError):
            b.call(fail)
        assert b.last_failure is not None
        return weakref.ref(b)

    assert collected(make)


@pytest.mark.usefixtures("no_automatic_gc")
def test_a_breaker_whose_own_bound_methods_are_its_policy_is_collected() -> None:
    # A bound method has no tp_clear: only the breaker can break this cycle.
    class Checked(CircuitBreaker):
        def bad(self, value: Any) -> bool:
            return value is None

        def fallback_value(self, error: Any) -> str:
            return "cached"

    def make() -> "weakref.ref[CircuitBreaker]":
        b = Checked("cycle-policy")
        b2 = Checked("cycle-policy-2", failure_predicate=b.bad, fallback=b.fallback_value, exclude=[b.bad])
        b.__dict__["partner"] = b2
        b2.__dict__["partner"] = b
        return weakref.ref(b2)

    assert collected(make)


@pytest.mark.usefixtures("no_automatic_gc")
def test_permits_and_protected_functions_in_a_cycle_are_collected() -> None:
    def make() -> "weakref.ref[CircuitBreaker]":
        b = CircuitBreaker("cycle-permit")
        permit = b.acquire()
        b.add_listener(lambda *args: permit)

        @b
        def fetch() -> Any:
            return fetch

        b.add_listener(lambda *args: fetch)
        return weakref.ref(b)

    assert collected(make)


def test_a_lone_surrogate_name_is_refused_for_a_shared_breaker(tmp_path: Path) -> None:
    region = SharedMemory(tmp_path / "region")
    for name in ("svc\udc80", "svc\udc81"):
        with pytest.raises(ValueError, match="lone surrogate"):
            CircuitBreaker(name, shared_memory=region)
    assert region.names() == []
    # In this process only, nothing is shared and the name is kept as given.
    assert CircuitBreaker("svc\udc80", shared_memory=False).name == "svc\udc80"
