"""A Redis store nobody uses is closed: its background thread ends and its connections close
(issue 21, item 9). Before, every `RedisStore` with distinct options lived as long as the
process: 20 dropped stores left 19 threads, 38 descriptors and 42 Redis clients."""

from __future__ import annotations

import gc
import os
import threading
import time

from test_redis import Server, server  # noqa: F401 - the suite's own redis-server fixture

from circuit_breaker import CircuitBreaker, RedisStore


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def clients(server: Server) -> int:
    return len(server.admin().client_list())


def settle(condition, within: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.05)
    return True


def test_stores_nobody_uses_are_closed(server: Server) -> None:
    admin_clients = clients(server)  # the test's own admin connection
    threads, fds = threading.active_count(), open_descriptors()
    native_threads = len(os.listdir("/proc/self/task"))
    for i in range(20):
        # Distinct options: each is a store of its own.
        store = RedisStore(server.url, prefix=f"life{i}:")
        breaker = CircuitBreaker(f"svc{i}", redis=store)
        assert breaker.call(lambda: 42) == 42
        del breaker, store
    assert settle(lambda: len(os.listdir("/proc/self/task")) <= native_threads), (
        f"{len(os.listdir('/proc/self/task')) - native_threads} background threads outlived their stores"
    )
    assert settle(lambda: open_descriptors() <= fds), f"{open_descriptors() - fds} descriptors left open"
    assert settle(lambda: clients(server) <= admin_clients), f"{clients(server) - admin_clients} Redis clients left"
    assert threading.active_count() <= threads


def test_a_store_in_use_stays_open_and_is_shared(server: Server) -> None:
    a = CircuitBreaker("kept-a", redis=server.url)
    b = CircuitBreaker("kept-b", redis=server.url)
    assert a.redis == b.redis and a.redis is not None
    gc.collect()
    time.sleep(0.2)
    # Still one store, still connected: the cache held it weakly, the breakers strongly.
    assert a.redis.connected
    a.force_open()
    c = CircuitBreaker("kept-a", redis=server.url)
    assert c.get_state().name == "OPEN"
