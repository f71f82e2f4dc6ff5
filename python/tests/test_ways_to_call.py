"""Context managers, asyncio and decorators."""

from __future__ import annotations

import asyncio
import gc
import inspect
import pickle
import sys
import threading
import weakref
import time
from typing import Any, AsyncIterator, Iterator, List

import pytest

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, _core, circuit_breaker


class Down(Exception):
    pass


def status(b: CircuitBreaker) -> tuple[int, int]:
    s = b.get_status()
    return s["success_count"], s["total_failures"]


# --- with / async with ---------------------------------------------------------------------


def test_with_block_records_its_outcome() -> None:
    b = CircuitBreaker("with_block", failure_threshold=2)
    with b as permit:
        assert permit.pending
    assert status(b) == (1, 0)
    with pytest.raises(Down):
        with b:
            raise Down()
    assert status(b) == (1, 1)
    with pytest.raises(KeyboardInterrupt):
        with b:
            raise KeyboardInterrupt()
    assert status(b) == (1, 1) and b.get_metrics()["total_ignored"] == 1
    with pytest.raises(Down):
        with b:
            raise Down()
    ran = []
    with pytest.raises(CircuitBreakerOpenError):
        with b:
            ran.append(1)
    assert ran == []


def test_with_blocks_nest_and_stay_apart_across_threads() -> None:
    b = CircuitBreaker("with_threads", failure_threshold=1_000)
    outer = CircuitBreaker("with_outer")
    with outer:
        with b:
            pass
        with pytest.raises(Down):
            with b:
                raise Down()
    assert status(b) == (1, 1) and status(outer) == (1, 0)

    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        for _ in range(200):
            try:
                with b:
                    barrier.wait() if _ == 0 else None
                    if i % 2:
                        raise Down()
            except Down:
                pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert status(b) == (1 + 800, 1 + 800)


def test_async_with_across_many_tasks() -> None:
    b = CircuitBreaker("async_with", failure_threshold=10_000)

    async def task(i: int) -> None:
        async with b:
            await asyncio.sleep(0)
            if i % 3 == 0:
                raise Down()

    async def main() -> List[Any]:
        return await asyncio.gather(*(task(i) for i in range(300)), return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, Down) for r in results) == 100
    assert status(b) == (200, 100)


# --- call() and call_async() with coroutines -----------------------------------------------


def test_call_with_a_coroutine_function_records_when_it_finishes() -> None:
    b = CircuitBreaker("coro", failure_threshold=1)

    async def fetch(x: int, *, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    async def fail() -> None:
        await asyncio.sleep(0)
        raise Down()

    async def main() -> None:
        pending = b.call(fetch, 1, y=2)
        assert status(b) == (0, 0), "nothing recorded before the coroutine ran"
        assert await pending == 3
        assert status(b) == (1, 0)
        with pytest.raises(Down):
            await b.call(fail)
        assert b.is_open()
        with pytest.raises(CircuitBreakerOpenError):
            await b.call_async(fetch, 1, y=2)

    asyncio.run(main())


def test_gather_hundreds_of_calls_without_blocking_the_loop() -> None:
    b = CircuitBreaker("gather", failure_threshold=5)

    async def fetch(i: int) -> int:
        await asyncio.sleep(0.05)
        return i

    async def main() -> List[int]:
        start = time.perf_counter()
        results = await asyncio.gather(*(b.call(fetch, i) for i in range(500)))
        assert time.perf_counter() - start < 1.0, "the calls ran concurrently"
        return list(results)

    assert asyncio.run(main()) == list(range(500))
    assert status(b) == (500, 0)


@pytest.mark.parametrize("use_call_async", [False, True])
def test_cancellation_frees_the_probe_slot_and_counts_as_nothing(use_call_async: bool) -> None:
    b = CircuitBreaker("cancel", failure_threshold=1, recovery_timeout_seconds=0.05)
    with pytest.raises(Down):
        b.call(lambda: (_ for _ in ()).throw(Down()))
    time.sleep(0.07)

    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        call = b.call_async(slow) if use_call_async else b.call(slow)
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.01)
        with pytest.raises(CircuitBreakerOpenError):
            b.acquire()  # the probe slot is held by the running task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert b.is_half_open()
    assert b.get_metrics()["total_failures"] == 1
    b.call(lambda: None)
    assert b.is_closed()


# --- decorators ----------------------------------------------------------------------------


def test_breaker_decorates_functions_and_keeps_their_metadata() -> None:
    b = CircuitBreaker("decorated", failure_threshold=2)

    @b
    def fetch(symbol: str) -> str:
        """Fetches a symbol."""
        if symbol == "bad":
            raise Down()
        return symbol.lower()

    assert fetch("AAPL") == "aapl"
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetches a symbol."
    assert fetch.__wrapped__ is not None  # type: ignore[attr-defined]
    assert fetch.circuit_breaker is b  # type: ignore[attr-defined]
    for _ in range(2):
        with pytest.raises(Down):
            fetch("bad")
    with pytest.raises(CircuitBreakerOpenError):
        fetch("AAPL")


def test_decorated_methods_async_functions_and_generators() -> None:
    b = CircuitBreaker("decorated_kinds", failure_threshold=100)

    class Client:
        def __init__(self) -> None:
            self.base = 10

        @b
        def get(self, x: int) -> int:
            return self.base + x

    assert Client().get(5) == 15

    @b
    async def aget(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert asyncio.run(aget(4)) == 8

    @b
    def numbers(n: int) -> Iterator[int]:
        yield from range(n)
        raise Down()

    gen = numbers(3)
    assert status(b) == (2, 0), "a generator is admitted when it starts"
    assert next(gen) == 0
    with pytest.raises(Down):
        list(gen)

    @b
    async def anumbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def collect() -> List[int]:
        return [i async for i in anumbers(3)]

    assert asyncio.run(collect()) == [0, 1, 2]
    assert status(b) == (3, 1)


@circuit_breaker(name="module_level")
def module_level(x: int, *, scale: int = 1) -> int:
    """A decorated module-level function (picklable by reference)."""
    return x * scale


def test_a_decorated_function_behaves_like_the_function() -> None:
    # A plain function decorated is a Rust `ProtectedFunction`, not a Python wrapper: check
    # it passes for the function everywhere a caller would notice.
    assert module_level(3, scale=2) == 6
    assert str(inspect.signature(module_level)) == "(x: 'int', *, scale: 'int' = 1) -> 'int'"
    assert module_level.__doc__ == "A decorated module-level function (picklable by reference)."
    assert module_level.__module__ == __name__ and module_level.__qualname__ == "module_level"
    assert not inspect.iscoroutinefunction(module_level)
    assert pickle.loads(pickle.dumps(module_level)) is module_level
    assert repr(module_level) == "<protected function module_level (CircuitBreaker 'module_level')>"
    with pytest.raises(AttributeError):
        module_level.circuit_breaker = CircuitBreaker("other")  # type: ignore[attr-defined]
    module_level.note = "functions take attributes"  # type: ignore[attr-defined]
    assert module_level.note == "functions take attributes"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="callable"):
        CircuitBreaker("x")(42)  # type: ignore[type-var]
    with pytest.raises(TypeError):  # positional-only, as the stub says
        _core.ProtectedFunction(breaker=CircuitBreaker("x"), func=len)  # type: ignore[call-arg]


def test_decorated_methods_bind_like_functions() -> None:
    b = CircuitBreaker("methods", failure_threshold=100)

    class Client:
        scale = 3

        @b
        def get(self, x: int, *, plus: int = 0) -> tuple[Client, int]:
            return self, x * self.scale + plus

        @staticmethod
        @b
        def pure(x: int) -> int:
            return -x

        @classmethod
        @b
        def of_class(cls, x: int) -> tuple[type, int]:
            return cls, x

    client = Client()
    assert client.get(2, plus=1) == (client, 7)
    assert Client.get(client, 1) == (client, 3)
    assert inspect.ismethod(client.get) and client.get.__self__ is client
    assert Client.pure(4) == -4 and client.pure(5) == -5
    assert Client.of_class(1) == (Client, 1)
    assert b.get_metrics()["total_successes"] == 5


def test_decorated_calls_keep_reference_counts_balanced_and_collect_cycles() -> None:
    b = CircuitBreaker("decorated_refs")
    arg, kwarg = object(), object()

    @b
    def echo(a: object, *, k: object) -> object:
        return a

    before = [sys.getrefcount(arg), sys.getrefcount(kwarg)]
    for _ in range(100):
        assert echo(arg, k=kwarg) is arg
    assert [sys.getrefcount(arg), sys.getrefcount(kwarg)] == before

    # A decorated function that references itself (through its closure cell here) is a
    # cycle only the garbage collector can free; the wrapper must take part in it.
    def make() -> Any:
        @b
        def again(n: int) -> int:
            return again(n - 1) if n else 0

        return again

    wrapped = make()
    assert wrapped(3) == 0
    dead = weakref.ref(wrapped)
    del wrapped
    gc.collect()
    assert dead() is None


def test_circuit_breaker_factory() -> None:
    @circuit_breaker(failure_threshold=1, recovery_timeout_seconds=60)
    def flaky() -> None:
        raise Down()

    breaker = flaky.circuit_breaker  # type: ignore[attr-defined]
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.name == flaky.__qualname__
    assert breaker.failure_threshold == 1
    with pytest.raises(Down):
        flaky()
    with pytest.raises(CircuitBreakerOpenError):
        flaky()

    @circuit_breaker(name="named")
    async def named() -> int:
        return 1

    assert named.circuit_breaker.name == "named"  # type: ignore[attr-defined]
    assert asyncio.run(named()) == 1
