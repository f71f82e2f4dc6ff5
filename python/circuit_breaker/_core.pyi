"""Type stubs for the compiled ``circuit_breaker._core`` module."""

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, TypeVar, Union

from typing_extensions import ParamSpec

from ._types import BreakerMetrics, BreakerStatus, CircuitBreakerState

__version__: str
DEFAULTS: Dict[str, int]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_B = TypeVar("_B", bound="BreakerCore")

class Permit:
    """The right to run one call, from ``CircuitBreaker.acquire()``.

    Report the outcome once; a permit garbage-collected unreported counts as ignored.
    """

    def success(self) -> None: ...
    def failure(self) -> None: ...
    def ignore(self) -> None: ...
    def record_exception(self, error: Optional[BaseException] = None) -> bool:
        """Records what ``error`` counts as under the breaker's policy; True if a failure."""
    def record_result(self, value: object) -> bool:
        """Records ``value`` (a failure if ``failure_predicate`` says so); True if a failure."""
    def _finish_exception(self, error: BaseException, /) -> Optional[Callable[..., Any]]: ...
    def _finish_result(self, value: object, /) -> Optional[Callable[..., Any]]: ...
    @property
    def breaker(self) -> BreakerCore: ...
    @property
    def is_probe(self) -> bool: ...
    @property
    def pending(self) -> bool: ...
    @property
    def generation(self) -> int:
        """The breaker's generation at admission; the half-open limit holds per generation."""

class BreakerCore:
    """The Rust half of ``circuit_breaker.CircuitBreaker`` (its base class): construction, the
    whole call path, control and reports. Use ``circuit_breaker.CircuitBreaker``."""

    def __init__(
        self,
        name: str,
        failure_threshold: Optional[int] = 5,
        recovery_timeout_seconds: Union[int, float] = 60,
        *,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
        expected_exceptions: Union[Type[BaseException], Sequence[Type[BaseException]], None] = None,
        exclude: Optional[Sequence[Union[Type[BaseException], Callable[[BaseException], object]]]] = None,
        failure_predicate: Optional[Callable[[Any], object]] = None,
        fallback: Optional[Callable[..., Any]] = None,
        fallback_on_failure: bool = False,
        probe_timeout_seconds: Union[int, float] = 60,
        shared_memory: Union[bool, SharedMemory, str, os.PathLike[str], None] = None,
        redis: Union[bool, RedisStore, str, None] = None,
        failure_rate_threshold: Optional[float] = None,
        minimum_calls: Optional[int] = None,
        window_calls: Optional[int] = None,
        window_seconds: Union[int, float, None] = None,
        slow_call_seconds: Union[int, float, None] = None,
        slow_call_rate_threshold: Optional[float] = None,
        timeout_seconds: Union[int, float, None] = None,
        max_concurrent_calls: Optional[int] = None,
    ) -> None: ...
    def call(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Runs ``func(*args, **kwargs)`` through the breaker and returns its value.

        Raises ``CircuitBreakerOpenError`` without running ``func`` when rejected; any
        ``Exception`` from ``func`` propagates unchanged and counts as a failure.
        """
    def is_open(self) -> bool: ...
    def is_half_open(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def get_state(self) -> CircuitBreakerState: ...
    def get_status(self) -> BreakerStatus: ...
    def reset(self) -> None: ...
    def get_metrics(self) -> BreakerMetrics:
        """Counters since creation: ``state``, ``total_requests``, ``total_successes``,
        ``total_failures``, ``success_rate`` (percent), ``circuit_opened_count``,
        ``current_failure_count``, ``total_rejections``, ``total_ignored``, ``mode``."""
    def acquire(self) -> Permit:
        """Admits one call (two-step use); raises ``CircuitBreakerOpenError`` when rejected."""
    def force_open(self) -> None:
        """OPEN until ``reset()``."""
    def disable(self) -> None:
        """Admit everything, never trip, until ``reset()``."""
    def add_listener(
        self: _B, listener: Callable[[_B, CircuitBreakerState, CircuitBreakerState, str], object]
    ) -> None:
        """Calls ``listener(breaker, old, new, reason)`` after every transition."""
    def remove_listener(
        self: _B, listener: Callable[[_B, CircuitBreakerState, CircuitBreakerState, str], object]
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def failure_threshold(self) -> Optional[int]:
        """Consecutive failures that open the breaker; None: the rate policies alone trip it."""
    @property
    def recovery_timeout_seconds(self) -> Union[int, float]: ...
    @property
    def success_threshold(self) -> int: ...
    @property
    def half_open_max_calls(self) -> int: ...
    @property
    def probe_timeout_seconds(self) -> float: ...
    @property
    def shared_memory(self) -> Optional[SharedMemory]:
        """The region the breaker's state lives in (shared by every process of the host), or
        None (this process only)."""
    @property
    def failure_rate_threshold(self) -> Optional[float]: ...
    @property
    def minimum_calls(self) -> Optional[int]: ...
    @property
    def window_calls(self) -> Optional[int]: ...
    @property
    def window_seconds(self) -> Optional[float]: ...
    @property
    def slow_call_seconds(self) -> Optional[float]: ...
    @property
    def slow_call_rate_threshold(self) -> Optional[float]: ...
    @property
    def timeout_seconds(self) -> Optional[float]:
        """The longest a coroutine call may take (cancelled, ``TimeoutError``, a failure)."""
    @property
    def max_concurrent_calls(self) -> Optional[int]:
        """The most calls in flight at once (host-wide in shared memory), or None."""
    @property
    def redis(self) -> Optional[RedisStore]:
        """The Redis store the breaker's state lives in (shared by every host of the fleet),
        or None."""
    def _record_is_remote(self, failed: bool) -> bool: ...
    def _admission_is_remote(self) -> bool: ...
    @property
    def fallback(self) -> Optional[Callable[..., Any]]: ...
    @property
    def fallback_on_failure(self) -> bool: ...
    def _rejection_fallback(self) -> Optional[Callable[..., Any]]: ...
    @property
    def last_failure(self) -> Optional[BaseException]: ...

class SharedMemory:
    """A shared-memory region: breakers made with it keep their state and counters in it,
    shared by every process of the host that opens the same file."""

    def __init__(
        self,
        path: Union[str, os.PathLike[str], None] = None,
        *,
        capacity: Optional[int] = None,
        mode: Optional[int] = None,
        allow_foreign: bool = False,
    ) -> None: ...
    @staticmethod
    def from_environment() -> Optional[SharedMemory]:
        """The region ``CIRCUIT_BREAKER_SHARED_MEMORY`` names, or None."""
    @property
    def path(self) -> Path: ...
    @property
    def capacity(self) -> int: ...
    @property
    def lost(self) -> bool:
        """True once the file was cut short under this process (its breakers run on a private
        copy); open the path again to join the region that replaces it."""
    def names(self) -> List[str]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class RedisStore:
    """A Redis server through which breakers are shared by every host of a fleet. Each host
    keeps a local copy of every breaker's state (read by the hot path) and writes changes with
    a compare-and-set script; an unreachable Redis is ridden out on the local copy."""

    def __init__(
        self,
        url: str,
        *,
        prefix: Optional[str] = None,
        ttl_seconds: Union[int, float, None] = None,
        timeout_seconds: Union[int, float, None] = None,
        refresh_seconds: Union[int, float, None] = None,
    ) -> None: ...
    @staticmethod
    def from_environment() -> Optional[RedisStore]:
        """The store ``CIRCUIT_BREAKER_REDIS_URL`` names, or None."""
    @property
    def url(self) -> str:
        """The URL, any password replaced by ``***``."""
    @property
    def prefix(self) -> str: ...
    @property
    def connected(self) -> bool:
        """Whether Redis answered the last operation."""
    @property
    def outages(self) -> int:
        """Outages this process has ridden out on this store."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class ProtectedFunction:
    """What ``@breaker`` makes of a plain function: calling it is
    ``breaker.call(func, *args, **kwargs)``, straight into Rust. Carries the function's
    ``functools.wraps`` metadata and binds to instances like a function."""

    def __init__(self, breaker: BreakerCore, func: Callable[..., Any], /) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, instance: object, owner: Optional[type] = None) -> Any: ...
    @property
    def circuit_breaker(self) -> BreakerCore: ...
    __wrapped__: Callable[..., Any]

def _bind_call(cls: Type[BreakerCore], /) -> None:
    """Gives ``cls`` (a subclass) a ``call`` descriptor of its own; CPython specializes a
    ``breaker.call(...)`` call site only for instances of exactly the descriptor's class."""
