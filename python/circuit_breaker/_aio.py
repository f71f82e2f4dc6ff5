"""Recording the outcome of a coroutine when it finishes."""

from __future__ import annotations

from typing import Any, Awaitable, TypeVar

from ._core import Permit

__all__ = ["record_when_done", "settle"]

T = TypeVar("T")


def settle(permit: Permit, error: BaseException | None) -> None:
    """Reports on ``permit`` what ``error`` says about the dependency: nothing raised is a
    success, an ``Exception`` a failure, any other ``BaseException`` (``CancelledError``,
    ``KeyboardInterrupt``, ...) neither."""
    if error is None:
        permit.success()
    elif isinstance(error, Exception):
        permit.failure()
    else:
        permit.ignore()


async def record_when_done(permit: Permit, awaitable: Awaitable[T]) -> T:
    """Awaits ``awaitable`` and reports its outcome on ``permit``."""
    try:
        result = await awaitable
    except BaseException as error:
        settle(permit, error)
        raise
    settle(permit, None)
    return result


