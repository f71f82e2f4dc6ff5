//! `Permit`: the right to run one call, for two-step use (`CircuitBreaker.acquire()`).

use std::sync::Mutex;

use cb_core::{Outcome, Ticket};
use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::breaker::CircuitBreaker;

/// The right to run one call, from `CircuitBreaker.acquire()`. Report how it ended with
/// `success()`, `failure()` or `ignore()`, once; a permit garbage-collected unreported counts
/// as ignored and frees its half-open probe slot.
#[pyclass(frozen, module = "circuit_breaker", name = "Permit")]
pub(crate) struct Permit {
    pub(crate) breaker: Py<CircuitBreaker>,
    /// Plain data, locked for a take or a peek: no Python object is dropped and no Python code
    /// runs under the lock (the outcome is recorded after it is released).
    pub(crate) ticket: Mutex<Option<Ticket>>,
    /// The ticket's generation, kept after the outcome is reported.
    generation: u64,
}

impl Permit {
    pub(crate) fn new(breaker: Py<CircuitBreaker>, ticket: Ticket) -> Self {
        Permit { breaker, generation: ticket.generation(), ticket: Mutex::new(Some(ticket)) }
    }

    pub(crate) fn finish(&self, py: Python<'_>, outcome: Outcome, error: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let ticket = self.ticket.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ticket {
            Some(ticket) => {
                self.breaker.get().finish(py, ticket, outcome, error);
                Ok(())
            }
            None => Err(PyRuntimeError::new_err("this permit has already reported its outcome")),
        }
    }
}

#[pymethods]
impl Permit {
    /// The call succeeded.
    fn success(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, Outcome::Success, None)
    }

    /// The call failed.
    fn failure(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, Outcome::Failure, None)
    }

    /// The call ended in a way that says nothing about the dependency.
    fn ignore(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, Outcome::Ignored, None)
    }

    /// Records the exception an awaited call raised and returns the fallback that replaces it,
    /// or None (the rule the call path applies, for the async paths written in Python).
    fn _finish_exception(&self, py: Python<'_>, error: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let b = self.breaker.get();
        let outcome = b.policy.outcome_of_error(py, b.name.bind(py), error);
        self.finish(py, outcome, Some(error))?;
        Ok(b.policy.fallback_after(outcome).map(|f| f.clone_ref(py)))
    }

    /// Records the value an awaited call returned and returns the fallback that replaces it, or
    /// None.
    fn _finish_result(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let b = self.breaker.get();
        let outcome = b.policy.outcome_of_value(py, b.name.bind(py), value);
        self.finish(py, outcome, None)?;
        Ok(b.policy.fallback_after(outcome).map(|f| f.clone_ref(py)))
    }

    /// The call raised `error` (or, for None, finished without raising): records what the
    /// breaker's policy says it counts as. Returns True if it counted as a failure.
    #[pyo3(signature = (error = None))]
    fn record_exception(&self, py: Python<'_>, error: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let outcome = match error {
            None => Outcome::Success,
            Some(e) => self.breaker.get().policy.outcome_of_error(py, self.breaker.get().name.bind(py), e),
        };
        self.finish(py, outcome, error)?;
        Ok(outcome == Outcome::Failure)
    }

    /// The call returned `value`: records success, or failure if the breaker's
    /// `failure_predicate` says so. Returns True if it counted as a failure.
    fn record_result(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let outcome = self.breaker.get().policy.outcome_of_value(py, self.breaker.get().name.bind(py), value);
        self.finish(py, outcome, None)?;
        Ok(outcome == Outcome::Failure)
    }

    /// The breaker this permit belongs to.
    #[getter]
    fn breaker(&self, py: Python<'_>) -> Py<CircuitBreaker> {
        self.breaker.clone_ref(py)
    }

    /// Whether this call is a half-open probe.
    #[getter]
    fn is_probe(&self) -> bool {
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|t| t.is_probe())
    }

    /// The breaker's generation when this call was admitted: it changes with every change of
    /// state. The `half_open_max_calls` limit holds per generation (per round of probes): when
    /// a probe fails the breaker reopens, and the next round has its own slots even if probes
    /// of the failed round still run.
    #[getter]
    fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether an outcome is still to be reported.
    #[getter]
    fn pending(&self) -> bool {
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The breaker, for the cycle collector (a permit is immutable apart from its ticket, which
    /// is plain data: it has nothing to clear; a cycle through it is broken at the breaker).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.breaker)
    }

    /// `<Permit of CircuitBreaker 'quotes': probe=False, pending=True>`.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = self.breaker.get().name.bind(py).repr()?;
        Ok(format!("<Permit of CircuitBreaker {name}: probe={}, pending={}>", py_bool(self.is_probe()), py_bool(self.pending())))
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let ticket = self.ticket.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ticket) = ticket {
            // A pyclass is dropped with the GIL held.
            Python::attach(|py| self.breaker.get().record(py, ticket, Outcome::Ignored));
        }
    }
}
