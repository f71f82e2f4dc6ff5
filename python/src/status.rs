//! The status and metrics dicts: the documented keys first, in order, then the extensions.

use cb_core::State;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::breaker::CircuitBreaker;
use crate::iso8601::iso8601;
use crate::state::{mode, state_name};

/// `get_status()`: the documented keys first, then `success_threshold`,
/// `half_open_max_calls`, `total_failures`, `total_rejections`, `mode`, `scope`,
/// `counts_scope`, `degraded`, `failure_rate`, `slow_call_rate`, `calls_in_window`,
/// `max_concurrent_calls`, `in_flight`, `total_full_rejections`, `concurrency_scope`.
pub(crate) fn status<'py>(b: &CircuitBreaker, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let state = b.state();
    let config = b.inner.config();
    let totals = b.inner.metrics().since_reset();
    let failure_count = failure_count(b, state);
    let failed_since_reset = totals.failures > 0;
    let last_failure = b
        .inner
        .last_failure_time()
        .filter(|_| failed_since_reset)
        .map(iso8601);
    let last_change = b.inner.last_state_change_time().unwrap_or(b.created);
    let until_recovery = match state {
        State::Open => b.inner.time_until_half_open().map(|d| d.as_secs_f64()),
        _ => None,
    };
    let status = PyDict::new(py);
    status.set_item(intern!(py, "name"), b.name.bind(py))?;
    status.set_item(intern!(py, "state"), state_name(state))?;
    status.set_item(intern!(py, "failure_count"), failure_count)?;
    status.set_item(intern!(py, "success_count"), totals.successes)?;
    status.set_item(intern!(py, "failure_threshold"), failure_threshold(config))?;
    status.set_item(intern!(py, "recovery_timeout_seconds"), b.recovery_timeout_seconds.bind(py))?;
    status.set_item(intern!(py, "last_failure_time"), last_failure)?;
    status.set_item(intern!(py, "last_state_change"), iso8601(last_change))?;
    status.set_item(intern!(py, "time_until_recovery_seconds"), until_recovery)?;
    status.set_item(intern!(py, "success_threshold"), config.success_threshold)?;
    status.set_item(intern!(py, "half_open_max_calls"), config.half_open_max_calls)?;
    status.set_item(intern!(py, "total_failures"), b.inner.metrics().totals().failures)?;
    status.set_item(intern!(py, "total_rejections"), totals.rejections)?;
    status.set_item(intern!(py, "mode"), mode(state))?;
    status.set_item(intern!(py, "scope"), scope(b))?;
    status.set_item(intern!(py, "counts_scope"), counts_scope(b))?;
    status.set_item(intern!(py, "degraded"), degraded(b))?;
    window(b, py, &status)?;
    let limit = b.inner.max_concurrent_calls();
    status.set_item(intern!(py, "max_concurrent_calls"), limit)?;
    // Counted only under a limit (an unlimited call pays nothing for it).
    status.set_item(intern!(py, "in_flight"), limit.map(|_| b.inner.in_flight()))?;
    status.set_item(intern!(py, "total_full_rejections"), b.inner.metrics().totals().full_rejections)?;
    status.set_item(intern!(py, "concurrency_scope"), limit.map(|_| concurrency_scope(b)))?;
    Ok(status)
}

/// `get_metrics()`: counters since creation (a `reset` keeps them), the widely used keys first.
///
/// `total_requests` counts every call (rejected ones included); `success_rate` is the
/// percentage of them that succeeded (0 before any call).
pub(crate) fn metrics<'py>(b: &CircuitBreaker, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let state = b.state();
    let t = b.inner.metrics().totals();
    let requests = t.requests();
    let rate = if requests == 0 { 0.0 } else { t.successes as f64 / requests as f64 * 100.0 };
    let metrics = PyDict::new(py);
    metrics.set_item(intern!(py, "state"), state_name(state))?;
    metrics.set_item(intern!(py, "total_requests"), requests)?;
    metrics.set_item(intern!(py, "total_successes"), t.successes)?;
    metrics.set_item(intern!(py, "total_failures"), t.failures)?;
    metrics.set_item(intern!(py, "success_rate"), rate)?;
    metrics.set_item(intern!(py, "circuit_opened_count"), t.opened)?;
    metrics.set_item(intern!(py, "current_failure_count"), failure_count(b, state))?;
    metrics.set_item(intern!(py, "total_rejections"), t.rejections)?;
    metrics.set_item(intern!(py, "total_ignored"), t.ignored)?;
    metrics.set_item(intern!(py, "mode"), mode(state))?;
    metrics.set_item(intern!(py, "scope"), scope(b))?;
    metrics.set_item(intern!(py, "counts_scope"), counts_scope(b))?;
    window(b, py, &metrics)?;
    metrics.set_item(intern!(py, "in_flight"), b.inner.max_concurrent_calls().map(|_| b.inner.in_flight()))?;
    metrics.set_item(intern!(py, "total_full_rejections"), t.full_rejections)?;
    Ok(metrics)
}

/// The rate policies' window: `failure_rate` and `slow_call_rate` (fractions, None with no call
/// in the window) and `calls_in_window`; all None without a rate policy. The window is this
/// process's (it starts clean on every transition into CLOSED).
fn window(b: &CircuitBreaker, py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<()> {
    let totals = b.inner.window_totals();
    d.set_item(intern!(py, "failure_rate"), totals.and_then(|t| t.failure_rate()))?;
    let slow = totals.filter(|_| b.inner.config().slow_call_duration.is_some());
    d.set_item(intern!(py, "slow_call_rate"), slow.and_then(|t| t.slow_call_rate()))?;
    d.set_item(intern!(py, "calls_in_window"), totals.map(|t| t.calls))?;
    Ok(())
}

/// Who shares the state: `'process'`, `'host'` (shared memory) or `'fleet'` (Redis).
pub(crate) fn scope(b: &CircuitBreaker) -> &'static str {
    if b.fleet.is_some() {
        "fleet"
    } else if b.region.is_some() {
        "host"
    } else {
        "process"
    }
}

/// What the counts cover: `'host'` in shared memory (the counters live in the slot), else
/// `'process'` — a breaker in Redis shares its state with the fleet but counts this process's
/// calls only (a fleet-wide count would cost a round trip per call).
pub(crate) fn counts_scope(b: &CircuitBreaker) -> &'static str {
    if b.region.is_some() {
        "host"
    } else {
        "process"
    }
}

/// What `max_concurrent_calls` covers: the host for a breaker in shared memory (the slot
/// counts every process's calls), else this process (a breaker in Redis counts here: a round
/// trip per call would cost more than the limit saves).
pub(crate) fn concurrency_scope(b: &CircuitBreaker) -> &'static str {
    match b.inner.store() {
        crate::store::PyStore::Shared(_) => "host",
        _ => "process",
    }
}

/// True while a breaker in Redis cannot reach it (its state is then this process's own until
/// Redis answers and it resyncs), and for good once the shared-memory region under a breaker
/// was cut short by someone (it then runs on a private copy in this process; a breaker made
/// anew with the same name joins the region that replaces the cut one).
pub(crate) fn degraded(b: &CircuitBreaker) -> bool {
    b.fleet.as_ref().is_some_and(|f| !f.is_connected()) || b.region.as_ref().is_some_and(|r| r.is_lost())
}

/// Consecutive failures now; the word keeps no count once open, so OPEN and HALF_OPEN report
/// the threshold that opened it. Without a consecutive count (`failure_threshold=None`): 0.
pub(crate) fn failure_count(b: &CircuitBreaker, state: State) -> u64 {
    match (state, failure_threshold(b.inner.config())) {
        (State::Closed, _) => b.inner.snapshot().failures(),
        (State::Open | State::HalfOpen, Some(threshold)) => threshold,
        _ => 0,
    }
}

/// `failure_threshold` as Python shows it: `None` when consecutive failures do not trip.
pub(crate) fn failure_threshold(config: &cb_core::Config) -> Option<u64> {
    config.consecutive_failures.then_some(config.failure_threshold)
}
