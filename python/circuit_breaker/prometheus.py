"""Prometheus metrics for every breaker in the registry, read at scrape time.

    from circuit_breaker.prometheus import register_metrics
    register_metrics()              # once; then expose prometheus_client as usual

Needs ``pip install .[prometheus]``. Nothing runs per call: the collector reads the breakers'
lock-free counters when Prometheus scrapes.

| metric | type | labels | value |
|---|---|---|---|
| ``circuit_breaker_state`` | gauge | ``name`` | 0 closed, 1 half-open, 2 open (forced open reads 2, disabled 0) |
| ``circuit_breaker_calls_total`` | counter | ``name``, ``result`` | ``success``, ``failure``, ``rejected``, ``ignored`` |
| ``circuit_breaker_opened_total`` | counter | ``name`` | transitions into OPEN |
| ``circuit_breaker_failure_count`` | gauge | ``name`` | consecutive failures now |
| ``circuit_breaker_failure_rate`` | gauge | ``name`` | failures / calls in the rate window (breakers with a rate policy, once a call is in it) |
| ``circuit_breaker_slow_call_rate`` | gauge | ``name`` | slow calls / calls in the window (breakers with a slow-call policy) |
| ``circuit_breaker_window_calls`` | gauge | ``name`` | calls in the rate window (breakers with a rate policy) |
| ``circuit_breaker_info`` | gauge | ``name``, ``scope``, ``counts_scope`` | always 1; ``scope`` is who shares the state (``process``, ``host`` for shared memory, ``fleet`` for Redis), ``counts_scope`` what the counts cover (``host`` in shared memory, else ``process``) |

A breaker in shared memory reports host-wide counts, the same from whichever worker process
serves the scrape: scrape one endpoint per host (or aggregate with ``max``, not ``sum``, across
workers of one host).
"""

from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from ._registry import CircuitBreakerRegistry

__all__ = ["CircuitBreakerCollector", "register_metrics", "STATE_VALUES"]

STATE_VALUES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
"""The value of ``circuit_breaker_state`` for each state (0 closed, 1 half-open, 2 open)."""


class CircuitBreakerCollector(Collector):
    """A ``prometheus_client`` collector over a :class:`CircuitBreakerRegistry`."""

    def __init__(self, registry: Optional[CircuitBreakerRegistry] = None) -> None:
        self._registry = registry if registry is not None else CircuitBreakerRegistry()

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", labels=["name"]
        )
        calls = CounterMetricFamily(
            "circuit_breaker_calls", "Calls through the circuit breaker, by result.", labels=["name", "result"]
        )
        opened = CounterMetricFamily("circuit_breaker_opened", "Transitions into OPEN.", labels=["name"])
        failures = GaugeMetricFamily(
            "circuit_breaker_failure_count", "Consecutive failures counted now.", labels=["name"]
        )
        info = GaugeMetricFamily(
            "circuit_breaker_info",
            "Always 1; scope is who shares the state (process, host for shared memory, fleet for Redis); "
            "counts_scope is what the counts cover (host in shared memory, else process).",
            labels=["name", "scope", "counts_scope"],
        )
        failure_rate = GaugeMetricFamily(
            "circuit_breaker_failure_rate",
            "Failures / calls in the rate policies' window (breakers with a rate policy and calls in it).",
            labels=["name"],
        )
        slow_rate = GaugeMetricFamily(
            "circuit_breaker_slow_call_rate",
            "Slow calls / calls in the window (breakers with a slow-call policy and calls in it).",
            labels=["name"],
        )
        window_calls = GaugeMetricFamily(
            "circuit_breaker_window_calls", "Calls in the rate policies' window.", labels=["name"]
        )
        in_flight = GaugeMetricFamily(
            "circuit_breaker_in_flight",
            "Calls admitted and not finished (breakers with max_concurrent_calls; host-wide in shared memory).",
            labels=["name"],
        )
        limit = GaugeMetricFamily(
            "circuit_breaker_max_concurrent_calls", "The limit on calls in flight.", labels=["name"]
        )
        for name, breaker in sorted(self._registry.get_all().items()):
            m = breaker.get_metrics()
            state.add_metric([name], STATE_VALUES[m["state"]])
            calls.add_metric([name, "success"], m["total_successes"])
            calls.add_metric([name, "failure"], m["total_failures"])
            calls.add_metric([name, "rejected"], m["total_rejections"])
            calls.add_metric([name, "ignored"], m["total_ignored"])
            # Rejected because max_concurrent_calls were in flight: never a failure.
            calls.add_metric([name, "full"], m["total_full_rejections"])
            max_calls = breaker.max_concurrent_calls
            if max_calls is not None:
                in_flight.add_metric([name], m["in_flight"])
                limit.add_metric([name], max_calls)
            opened.add_metric([name], m["circuit_opened_count"])
            failures.add_metric([name], m["current_failure_count"])
            info.add_metric([name, m["scope"], m["counts_scope"]], 1)
            if m["calls_in_window"] is not None:
                window_calls.add_metric([name], m["calls_in_window"])
            if m["failure_rate"] is not None:
                failure_rate.add_metric([name], m["failure_rate"])
            if m["slow_call_rate"] is not None:
                slow_rate.add_metric([name], m["slow_call_rate"])
        return [state, calls, opened, failures, info, failure_rate, slow_rate, window_calls, in_flight, limit]


def register_metrics(
    registry: Optional[CircuitBreakerRegistry] = None,
    prometheus_registry: CollectorRegistry = REGISTRY,
) -> CircuitBreakerCollector:
    """Registers a :class:`CircuitBreakerCollector` with ``prometheus_registry`` (the default
    global one unless given) and returns it."""
    collector = CircuitBreakerCollector(registry)
    prometheus_registry.register(collector)
    return collector
