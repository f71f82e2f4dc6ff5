"""Type stubs for the compiled ``circuit_breaker._core`` module."""

from typing import Any, Callable, Dict, Optional, TypeVar, Union

from ._types import CircuitBreakerState

_T = TypeVar("_T")

class CircuitBreaker:
    """A circuit breaker protecting one dependency; the whole call path runs in Rust."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout_seconds: Union[int, float] = 60,
        *,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
    ) -> None: ...
    def call(self, func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Runs ``func(*args, **kwargs)`` through the breaker and returns its value.

        Raises ``CircuitBreakerOpenError`` without running ``func`` when rejected; any
        ``Exception`` from ``func`` propagates unchanged and counts as a failure.
        """
    def is_open(self) -> bool: ...
    def is_half_open(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def get_state(self) -> CircuitBreakerState: ...
    def get_status(self) -> Dict[str, Any]: ...
    def reset(self) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def failure_threshold(self) -> int: ...
    @property
    def recovery_timeout_seconds(self) -> Union[int, float]: ...
    @property
    def success_threshold(self) -> int: ...
    @property
    def half_open_max_calls(self) -> int: ...
