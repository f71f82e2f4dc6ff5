"""``CircuitBreaker``: the Rust class plus the ways to call it that must be Python (context
managers, ``async``, decorators). ``call`` itself is the Rust method, unchanged."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Iterator,
    Optional,
    Protocol,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
    overload,
)

from . import _core
from ._core import Permit
from ._support import call_fallback, maybe_await, record_when_done
from ._types import CircuitBreakerOpenError

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover - the stubs name it the same way on every version
    from typing_extensions import ParamSpec

__all__ = ["CircuitBreaker", "Protected", "circuit_breaker"]

T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)
P = ParamSpec("P")


class Protected(Protocol[P, R_co]):
    """What ``@breaker`` and ``@circuit_breaker(...)`` return: callable like the function they
    wrap (same parameters and return type), with the breaker as ``.circuit_breaker``. As a
    method it binds like a function (type checkers then check its return type, not its
    arguments)."""

    @property
    def circuit_breaker(self) -> "CircuitBreaker": ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: Optional[type] = None) -> "Protected[P, R_co]": ...

    @overload
    def __get__(self, instance: object, owner: Optional[type] = None) -> Callable[..., R_co]: ...

    def __get__(
        self, instance: Optional[object], owner: Optional[type] = None
    ) -> Union["Protected[P, R_co]", Callable[..., R_co]]: ...

# Permits of the `with` blocks open in this thread / asyncio task, innermost last. A ContextVar
# keeps concurrent blocks on one breaker apart.
_open_blocks: contextvars.ContextVar[Tuple[Tuple[int, Permit], ...]] = contextvars.ContextVar(
    "circuit_breaker_open_blocks", default=()
)


class CircuitBreaker(_core.BreakerCore):
    """A circuit breaker protecting one dependency (see the package documentation).

    Besides ``call``: ``with breaker:`` / ``async with breaker:`` around a block,
    ``await breaker.call_async(func, ...)``, and ``@breaker`` on functions, methods,
    ``async def`` functions and generators.
    """

    __slots__ = ()

    # --- context managers ---------------------------------------------------------------

    def __enter__(self) -> Permit:
        return self._opened(self.acquire())

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        permit = self._closed()
        if permit.pending:
            permit.record_exception(exc)

    async def __aenter__(self) -> Permit:
        if self._admission_is_remote():
            # A probe admission of a breaker in Redis waits on the network: off the loop.
            return self._opened(await asyncio.to_thread(self.acquire))
        return self._opened(self.acquire())

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        permit = self._closed()
        if not permit.pending:
            return
        if self._record_is_remote(exc is not None):
            # Recording this outcome writes to Redis: off the event loop.
            await asyncio.to_thread(permit.record_exception, exc)
        else:
            permit.record_exception(exc)

    def _opened(self, permit: Permit) -> Permit:
        """Remembers the permit of a block entered in this thread / task."""
        _open_blocks.set(_open_blocks.get() + ((id(self), permit),))
        return permit

    def _closed(self) -> Permit:
        """Forgets and returns the permit of this breaker's innermost open block."""
        blocks = _open_blocks.get()
        for i in range(len(blocks) - 1, -1, -1):
            if blocks[i][0] == id(self):
                _open_blocks.set(blocks[:i] + blocks[i + 1 :])
                return blocks[i][1]
        raise RuntimeError("CircuitBreaker.__exit__ without a matching __enter__")  # pragma: no cover

    # --- asyncio ------------------------------------------------------------------------

    async def call_async(self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Awaits ``func(*args, **kwargs)`` through the breaker. ``CancelledError`` frees a
        half-open probe slot and counts as neither success nor failure; the fallback and the
        failure policy apply as in ``call``."""
        try:
            if self._admission_is_remote():
                # A probe admission of a breaker in Redis waits on the network: off the loop.
                permit = await asyncio.to_thread(self.acquire)
            else:
                permit = self.acquire()
        except CircuitBreakerOpenError as error:
            fallback = self._rejection_fallback()
            if fallback is None:
                raise
            return cast(T, await maybe_await(call_fallback(fallback, error, args, kwargs)))

        async def run() -> T:
            # Calling func inside the awaited coroutine: an error raised by the call itself is
            # recorded like one raised while awaiting.
            return await func(*args, **kwargs)

        return cast(T, await record_when_done(permit, run(), args, kwargs))

    # --- decorator ----------------------------------------------------------------------

    def __call__(self, func: Callable[P, T]) -> Protected[P, T]:
        """``@breaker``: every call of ``func`` goes through this breaker. Works on plain
        functions, methods, ``async def`` functions, generators and async generators, and keeps
        ``functools.wraps`` metadata. The breaker is ``wrapped.circuit_breaker``."""
        breaker = self
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await breaker.call_async(func, *args, **kwargs)

            wrapper: Any = async_wrapper
        elif inspect.isasyncgenfunction(func):

            @functools.wraps(func)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                async with breaker:
                    async for item in func(*args, **kwargs):
                        yield item

            wrapper = async_gen_wrapper
        elif inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with breaker:
                    yield from func(*args, **kwargs)

            wrapper = gen_wrapper
        else:
            # Rust: called straight into the same path as `call`, with no Python frame in
            # between; `circuit_breaker` is a read-only attribute of it.
            return cast(Protected[P, T], functools.update_wrapper(_core.ProtectedFunction(breaker, func), func))
        wrapper.circuit_breaker = breaker
        return cast(Protected[P, T], wrapper)


# `call` (the Rust vectorcall method) bound to this class itself: CPython specializes
# `breaker.call(...)` call sites only for instances of exactly the descriptor's class.
_core._bind_call(CircuitBreaker)


def _signature() -> inspect.Signature:
    """The constructor's signature with the defaults that apply (the core's)."""
    defaults = _core.DEFAULTS
    P_, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("name", P_),
        inspect.Parameter("failure_threshold", P_, default=defaults["failure_threshold"]),
        inspect.Parameter("recovery_timeout_seconds", P_, default=defaults["recovery_timeout_seconds"]),
        inspect.Parameter("success_threshold", K, default=defaults["success_threshold"]),
        inspect.Parameter("half_open_max_calls", K, default=defaults["half_open_max_calls"]),
        inspect.Parameter("expected_exceptions", K, default=None),
        inspect.Parameter("exclude", K, default=None),
        inspect.Parameter("failure_predicate", K, default=None),
        inspect.Parameter("fallback", K, default=None),
        inspect.Parameter("fallback_on_failure", K, default=False),
        inspect.Parameter("probe_timeout_seconds", K, default=defaults["probe_timeout_seconds"]),
        inspect.Parameter("shared_memory", K, default=None),
        inspect.Parameter("redis", K, default=None),
        inspect.Parameter("failure_rate_threshold", K, default=None),
        inspect.Parameter("minimum_calls", K, default=None),
        inspect.Parameter("window_calls", K, default=None),
        inspect.Parameter("window_seconds", K, default=None),
        inspect.Parameter("slow_call_seconds", K, default=None),
        inspect.Parameter("slow_call_rate_threshold", K, default=None),
        inspect.Parameter("timeout_seconds", K, default=None),
        inspect.Parameter("max_concurrent_calls", K, default=None),
    ]
    return inspect.Signature(params)


CircuitBreaker.__signature__ = _signature()  # type: ignore[attr-defined]
CircuitBreaker.__module__ = "circuit_breaker"
Protected.__module__ = "circuit_breaker"


def circuit_breaker(name: Optional[str] = None, **config: Any) -> Callable[[Callable[P, T]], Protected[P, T]]:
    """Creates a breaker and decorates a function with it in one step::

        @circuit_breaker(failure_threshold=3, recovery_timeout_seconds=30)
        def fetch(symbol): ...

        fetch.circuit_breaker.get_status()

    ``name`` defaults to the function's qualified name; ``config`` takes the
    ``CircuitBreaker`` keyword arguments (``fallback=`` among them).
    """

    def decorate(func: Callable[P, T]) -> Protected[P, T]:
        return CircuitBreaker(name if name is not None else func.__qualname__, **config)(func)

    return decorate
