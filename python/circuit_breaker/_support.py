"""Helpers the Rust ``call`` hands work to: finishing a coroutine's call, and fallbacks."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple, TypeVar

from ._core import Permit

__all__ = ["record_when_done", "call_fallback", "maybe_await"]

T = TypeVar("T")


def call_fallback(
    fallback: Callable[..., Any],
    error: Optional[BaseException],
    args: Tuple[Any, ...],
    kwargs: Dict[str, Any],
) -> Any:
    """Calls ``fallback(*args, **kwargs)`` while ``error`` (the open error, or the failure it
    replaces) is being handled: the fallback sees it as ``sys.exc_info()``, and an exception
    the fallback raises chains to it as ``__context__``."""
    if error is None:
        return fallback(*args, **kwargs)
    try:
        raise error
    except BaseException:
        try:
            return fallback(*args, **kwargs)
        finally:
            # `raise` put this frame on the error's traceback; without this `del` the frame
            # would hold the error and the error the frame: a cycle per fallback call, left
            # for the garbage collector.
            del error


async def record_when_done(
    permit: Permit, awaitable: Awaitable[T], args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]]
) -> Any:
    """Awaits the coroutine an ``async def`` call returned and records its outcome on
    ``permit`` by the breaker's policy, falling back if the breaker says so; past the breaker's
    ``timeout_seconds`` the call is cancelled and raises ``TimeoutError``. A breaker in Redis
    records an outcome that writes there on a worker thread, never blocking the event loop."""
    breaker = permit.breaker
    try:
        timeout = breaker.timeout_seconds
        if timeout is None:
            result = await awaitable
        else:
            result = await _within(awaitable, timeout, permit)
    except BaseException as error:
        if breaker._record_is_remote(True):
            # Recording it writes to Redis: off the event loop.
            fallback = await asyncio.to_thread(permit._finish_exception, error)
        else:
            fallback = permit._finish_exception(error)
        if fallback is not None:
            return await maybe_await(call_fallback(fallback, error, args, kwargs or {}))
        raise
    if breaker._record_is_remote(False):
        fallback = await asyncio.to_thread(permit._finish_result, result)
    else:
        fallback = permit._finish_result(result)
    if fallback is not None:
        return await maybe_await(call_fallback(fallback, None, args, kwargs or {}))
    return result


async def _within(awaitable: Awaitable[T], timeout: float, permit: Permit) -> T:
    """Awaits ``awaitable`` for at most ``timeout`` seconds: past it the call is cancelled and
    ``TimeoutError`` raised (a failure, unless the breaker's policy says otherwise)."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(
            f"CircuitBreaker {permit.breaker.name!r}: the call took longer than timeout_seconds={timeout:g}"
        ) from None


async def maybe_await(value: Any) -> Any:
    """``value``, awaited if it is awaitable (an ``async`` fallback)."""
    return await value if inspect.isawaitable(value) else value
