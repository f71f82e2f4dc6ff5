"""The Prometheus collector, scraped with prometheus_client's own exposition and parser."""

from __future__ import annotations

from typing import Dict, Tuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from circuit_breaker import CircuitBreaker, CircuitBreakerOpenError, CircuitBreakerRegistry
from circuit_breaker.prometheus import register_metrics


def scrape(registry: CollectorRegistry) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_scrape_reports_state_calls_openings_and_failures() -> None:
    breakers = CircuitBreakerRegistry()
    breakers.register("prom_api", CircuitBreaker("prom_api", failure_threshold=2, recovery_timeout_seconds=60))
    breakers.register("prom_forced", CircuitBreaker("prom_forced"))
    prom = CollectorRegistry()
    register_metrics(breakers, prom)

    api = breakers.get("prom_api")
    api.call(lambda: None)
    with pytest.raises(ZeroDivisionError):
        api.call(lambda: 1 / 0)
    samples = scrape(prom)
    assert samples[("circuit_breaker_state", (("name", "prom_api"),))] == 0
    assert samples[("circuit_breaker_failure_count", (("name", "prom_api"),))] == 1
    with pytest.raises(ZeroDivisionError):
        api.call(lambda: 1 / 0)
    with pytest.raises(CircuitBreakerOpenError):
        api.call(lambda: None)
    breakers.get("prom_forced").force_open()

    samples = scrape(prom)
    label = (("name", "prom_api"),)
    assert samples[("circuit_breaker_state", label)] == 2
    assert samples[("circuit_breaker_opened_total", label)] == 1
    assert samples[("circuit_breaker_failure_count", label)] == 2
    for result, value in [("success", 1), ("failure", 2), ("rejected", 1), ("ignored", 0)]:
        assert samples[("circuit_breaker_calls_total", (("name", "prom_api"), ("result", result)))] == value
    assert samples[("circuit_breaker_state", (("name", "prom_forced"),))] == 2
    assert samples[("circuit_breaker_state", (("name", "current_price"),))] in (0, 1, 2)


def test_half_open_reads_1() -> None:
    import time

    breakers = CircuitBreakerRegistry()
    breakers.register("prom_half", CircuitBreaker("prom_half", failure_threshold=1, recovery_timeout_seconds=0.02))
    prom = CollectorRegistry()
    register_metrics(breakers, prom)
    with pytest.raises(ZeroDivisionError):
        breakers.get("prom_half").call(lambda: 1 / 0)
    time.sleep(0.04)
    assert scrape(prom)[("circuit_breaker_state", (("name", "prom_half"),))] == 1


def test_info_says_who_shares_the_state_and_what_the_counts_cover(tmp_path: object) -> None:
    import socket
    from pathlib import Path

    from circuit_breaker import RedisStore

    with socket.socket() as s:  # a port nothing listens on: the store starts degraded
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
    breakers = CircuitBreakerRegistry()
    breakers.register("prom_local", CircuitBreaker("prom_local"))
    breakers.register("prom_host", CircuitBreaker("prom_host", shared_memory=str(Path(str(tmp_path)) / "region")))
    breakers.register("prom_fleet", CircuitBreaker("prom_fleet", redis=RedisStore(f"redis://127.0.0.1:{nowhere}/0")))
    prom = CollectorRegistry()
    register_metrics(breakers, prom)
    samples = scrape(prom)
    labels = lambda name, scope, counts: (("counts_scope", counts), ("name", name), ("scope", scope))  # noqa: E731
    assert samples[("circuit_breaker_info", labels("prom_local", "process", "process"))] == 1
    assert samples[("circuit_breaker_info", labels("prom_host", "host", "host"))] == 1
    assert samples[("circuit_breaker_info", labels("prom_fleet", "fleet", "process"))] == 1
    for name in ("prom_local", "prom_host", "prom_fleet"):
        breakers.unregister(name)


def test_calls_in_flight_and_full_rejections_are_scraped() -> None:
    breakers = CircuitBreakerRegistry()
    breakers.register("prom_limited", CircuitBreaker("prom_limited", max_concurrent_calls=1))
    prom = CollectorRegistry()
    register_metrics(breakers, prom)
    limited = breakers.get("prom_limited")
    held = limited.acquire()
    for _ in range(3):
        with pytest.raises(CircuitBreakerOpenError):  # the full error is one
            limited.call(lambda: None)
    samples = scrape(prom)
    label = (("name", "prom_limited"),)
    assert samples[("circuit_breaker_in_flight", label)] == 1
    assert samples[("circuit_breaker_max_concurrent_calls", label)] == 1
    assert samples[("circuit_breaker_calls_total", (("name", "prom_limited"), ("result", "full")))] == 3
    assert samples[("circuit_breaker_calls_total", (("name", "prom_limited"), ("result", "failure")))] == 0
    # Breakers without a limit have no in-flight gauge.
    assert ("circuit_breaker_in_flight", (("name", "current_price"),)) not in samples
    held.success()
    assert scrape(prom)[("circuit_breaker_in_flight", label)] == 0
