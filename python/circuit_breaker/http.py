"""HTTP calls through one circuit breaker per service.

    from circuit_breaker.http import protected_get, protected_post, get_circuit_breaker_status

    response = protected_get("https://api.example.com/data", timeout=5)
    response = protected_post("https://match.example.com/match", json=doc, service_name="matching")
    get_circuit_breaker_status("https://api.example.com")   # {'state': 'CLOSED', ...}

Needs ``pip install .[http]`` (``requests`` and/or ``httpx``). The breaker of a service is
created in the registry on first use, named by ``service_name`` or by the URL's scheme and host;
``failure_threshold`` / ``recovery_timeout_seconds`` / ``max_concurrent_calls`` given on that first
call configure it (``max_concurrent_calls`` caps the requests to the service in flight at once: the
next one raises ``CircuitBreakerFullError``, a ``CircuitBreakerOpenError``, without being sent).
Connection errors, timeouts and 5xx responses count as failures; 4xx responses do not (they are
the caller's problem) and every response is returned as it came. A rejected call raises
``CircuitBreakerOpenError`` without sending anything.

Sync calls use ``requests`` (or the ``session=`` given: a ``requests.Session`` or an
``httpx.Client``); async calls use ``httpx.AsyncClient`` (the ``client=`` given, or one per call).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Set, Tuple, Type
from urllib.parse import urlsplit

from ._breaker import CircuitBreaker
from ._registry import CircuitBreakerRegistry
from ._types import BreakerStatus

__all__ = [
    "protected_request",
    "protected_get",
    "protected_post",
    "async_protected_request",
    "async_protected_get",
    "async_protected_post",
    "get_circuit_breaker",
    "get_circuit_breaker_status",
    "get_all_circuit_breaker_statuses",
    "reset_circuit_breaker",
    "service_of",
]

_services: Set[str] = set()
_services_lock = threading.Lock()


def _transport_errors() -> Tuple[Type[BaseException], ...]:
    errors: list[Type[BaseException]] = []
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:
        pass
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    if not errors:
        raise ImportError("circuit_breaker.http needs requests or httpx: pip install .[http]")
    return tuple(errors)


def _is_server_error(response: Any) -> bool:
    return int(getattr(response, "status_code", 0)) >= 500


def service_of(url: str, service_name: Optional[str] = None) -> str:
    """The service a URL belongs to: ``service_name`` if given, else ``scheme://host[:port]``."""
    if service_name is not None:
        return service_name
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"cannot tell the service of {url!r}: give an absolute URL or service_name")
    return f"{parts.scheme}://{parts.netloc}"


def get_circuit_breaker(
    service: str,
    failure_threshold: Optional[int] = None,
    recovery_timeout_seconds: Optional[float] = None,
    max_concurrent_calls: Optional[int] = None,
) -> CircuitBreaker:
    """The breaker of ``service``, created (with these settings, if given) on first use."""
    registry = CircuitBreakerRegistry()
    try:
        breaker = registry.get(service)
    except KeyError:
        config: Dict[str, Any] = {
            "expected_exceptions": _transport_errors(),
            "failure_predicate": _is_server_error,
        }
        if failure_threshold is not None:
            config["failure_threshold"] = failure_threshold
        if recovery_timeout_seconds is not None:
            config["recovery_timeout_seconds"] = recovery_timeout_seconds
        if max_concurrent_calls is not None:
            config["max_concurrent_calls"] = max_concurrent_calls
        try:
            breaker = registry.get_or_create(service, **config)
        except ValueError:
            breaker = registry.get(service)  # another thread created it first, otherwise set
    with _services_lock:
        _services.add(service)
    return breaker


def reset_circuit_breaker(service: str) -> None:
    """Resets the breaker of ``service``; ``KeyError`` if it has none."""
    CircuitBreakerRegistry().get(service).reset()


def get_circuit_breaker_status(service: str) -> Optional[BreakerStatus]:
    """The status of ``service``'s breaker (a service name or a URL), or None if it has none."""
    registry = CircuitBreakerRegistry()
    for name in (service, service_of(service) if "://" in service else service):
        try:
            return registry.get(name).get_status()
        except KeyError:
            continue
    return None


def get_all_circuit_breaker_statuses() -> Dict[str, BreakerStatus]:
    """The status of every service's breaker used through this module, by service."""
    registry = CircuitBreakerRegistry()
    with _services_lock:
        services = sorted(_services)
    statuses = {}
    for service in services:
        try:
            statuses[service] = registry.get(service).get_status()
        except KeyError:  # unregistered since
            continue
    return statuses


def protected_request(
    method: str,
    url: str,
    *,
    service_name: Optional[str] = None,
    failure_threshold: Optional[int] = None,
    recovery_timeout_seconds: Optional[float] = None,
    max_concurrent_calls: Optional[int] = None,
    session: Any = None,
    **kwargs: Any,
) -> Any:
    """Sends ``method url`` through the service's breaker and returns the response.
    ``kwargs`` go to ``session.request`` (``requests.request`` without a session)."""
    breaker = get_circuit_breaker(
        service_of(url, service_name), failure_threshold, recovery_timeout_seconds, max_concurrent_calls
    )
    if session is not None:
        send = session.request
    else:
        try:
            import requests

            send = requests.request
        except ImportError:
            import httpx

            send = httpx.request
    return breaker.call(send, method, url, **kwargs)


def protected_get(url: str, **kwargs: Any) -> Any:
    """``protected_request("GET", url, **kwargs)``."""
    return protected_request("GET", url, **kwargs)


def protected_post(url: str, **kwargs: Any) -> Any:
    """``protected_request("POST", url, **kwargs)``."""
    return protected_request("POST", url, **kwargs)


async def async_protected_request(
    method: str,
    url: str,
    *,
    service_name: Optional[str] = None,
    failure_threshold: Optional[int] = None,
    recovery_timeout_seconds: Optional[float] = None,
    max_concurrent_calls: Optional[int] = None,
    client: Any = None,
    **kwargs: Any,
) -> Any:
    """The async form of :func:`protected_request`, on ``httpx.AsyncClient``."""
    import httpx

    breaker = get_circuit_breaker(
        service_of(url, service_name), failure_threshold, recovery_timeout_seconds, max_concurrent_calls
    )
    if client is not None:
        return await breaker.call_async(client.request, method, url, **kwargs)
    async with httpx.AsyncClient() as own:
        return await breaker.call_async(own.request, method, url, **kwargs)


async def async_protected_get(url: str, **kwargs: Any) -> Any:
    """``await async_protected_request("GET", url, **kwargs)``."""
    return await async_protected_request("GET", url, **kwargs)


async def async_protected_post(url: str, **kwargs: Any) -> Any:
    """``await async_protected_request("POST", url, **kwargs)``."""
    return await async_protected_request("POST", url, **kwargs)
