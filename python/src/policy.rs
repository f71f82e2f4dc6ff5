//! What counts as a failure, and what to return instead of an error: set once, at
//! construction.

use cb_core::Outcome;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;
use pyo3::types::{PyBool, PyString, PyTuple};

use crate::announce::log_error_with_traceback;
use crate::args::{exception_types, is_exception_type, optional_callable};
use crate::gc::{visit_all, GcCell};
use crate::refs::refs;

/// What counts as failure, and what to return instead of an error. Set once, at construction.
pub(crate) struct Policy {
    /// Only these exception types (and subclasses) count as failures.
    pub(crate) expected: Option<Py<PyTuple>>,
    /// Exception types that never count.
    pub(crate) exclude_types: Option<Py<PyTuple>>,
    /// Predicates `exc -> bool`: a true answer means the exception does not count.
    pub(crate) exclude_predicates: GcCell<Vec<Py<PyAny>>>,
    /// `result -> bool`: a true answer means the returned value is a failure.
    pub(crate) failure_predicate: GcCell<Option<Py<PyAny>>>,
    pub(crate) fallback: GcCell<Option<Py<PyAny>>>,
    pub(crate) fallback_on_failure: bool,
}

impl Policy {
    /// Whether every exception counts and no value does: the documented behaviour.
    pub(crate) fn is_plain(&self) -> bool {
        self.expected.is_none()
            && self.exclude_types.is_none()
            && self.exclude_predicates.get().is_empty()
            && self.failure_predicate.get().is_none()
    }
}

impl Policy {
    pub(crate) fn from_args(
        expected_exceptions: &Bound<'_, PyAny>,
        exclude: &Bound<'_, PyAny>,
        failure_predicate: &Bound<'_, PyAny>,
        fallback: &Bound<'_, PyAny>,
        fallback_on_failure: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let py = exclude.py();
        let expected = if expected_exceptions.is_none() {
            None
        } else {
            Some(exception_types("expected_exceptions", expected_exceptions)?.unbind())
        };
        let mut types = Vec::new();
        let mut predicates = Vec::new();
        if !exclude.is_none() {
            let iter = exclude.try_iter().map_err(|_| {
                PyTypeError::new_err("exclude must be a sequence of exception types or predicates")
            })?;
            for item in iter {
                let item = item?;
                if is_exception_type(&item)? {
                    types.push(item);
                } else if item.is_callable() {
                    predicates.push(item.unbind());
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "exclude must hold exception types or predicates, got {}",
                        item.repr()?
                    )));
                }
            }
        }
        let fallback_on_failure = fallback_on_failure.cast::<PyBool>().map_err(|_| {
            PyTypeError::new_err("fallback_on_failure must be a bool")
        })?.is_true();
        let fallback = optional_callable("fallback", fallback)?;
        if fallback_on_failure && fallback.is_none() {
            return Err(PyValueError::new_err("fallback_on_failure=True needs a fallback"));
        }
        Ok(Policy {
            expected,
            exclude_types: if types.is_empty() { None } else { Some(PyTuple::new(py, types)?.unbind()) },
            exclude_predicates: GcCell::new(predicates),
            failure_predicate: GcCell::new(optional_callable("failure_predicate", failure_predicate)?),
            fallback: GcCell::new(fallback),
            fallback_on_failure,
        })
    }
}

impl Policy {
    /// Every object the policy holds, for the breaker's `__traverse__`.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.expected)?;
        visit.call(&self.exclude_types)?;
        visit_all(visit, self.exclude_predicates.get())?;
        visit.call(self.failure_predicate.get())?;
        visit.call(self.fallback.get())
    }

    /// Lets go of the callables (the tuples of exception types hold only types, which clear
    /// themselves), for the breaker's `__clear__`; the caller drops them.
    ///
    /// # Safety
    ///
    /// Only from the breaker's `__clear__` (see [`GcCell::take`]).
    pub(crate) unsafe fn take_callables(&self) -> (Vec<Py<PyAny>>, Option<Py<PyAny>>, Option<Py<PyAny>>) {
        // SAFETY: forwarded from the caller.
        unsafe { (self.exclude_predicates.take(), self.failure_predicate.take(), self.fallback.take()) }
    }

    /// The fallback that replaces the open error, if any.
    pub(crate) fn fallback_after_rejection(&self) -> Option<&Py<PyAny>> {
        self.fallback.get().as_ref()
    }

    /// The fallback that replaces the result of a call that ended with `outcome`: only after a
    /// failure, and only with `fallback_on_failure`.
    pub(crate) fn fallback_after(&self, outcome: Outcome) -> Option<&Py<PyAny>> {
        self.fallback.get().as_ref().filter(|_| outcome == Outcome::Failure && self.fallback_on_failure)
    }

    /// What an exception from the call counts as.
    pub(crate) fn outcome_of_error(&self, py: Python<'_>, name: &Bound<'_, PyString>, error: &Bound<'_, PyAny>) -> Outcome {
        if !error.is_instance_of::<PyException>() {
            return Outcome::Ignored;
        }
        if self.is_plain() {
            return Outcome::Failure;
        }
        let p = self;
        if let Some(types) = &p.exclude_types {
            if error.is_instance(types.bind(py)).unwrap_or(false) {
                return Outcome::Ignored;
            }
        }
        for predicate in p.exclude_predicates.get() {
            match predicate.bind(py).call1((error,)).and_then(|v| v.is_truthy()) {
                Ok(true) => return Outcome::Ignored,
                Ok(false) => {}
                Err(err) => Self::log_classifier_error(py, name, "exclude predicate", predicate.bind(py), err),
            }
        }
        if let Some(types) = &p.expected {
            if !error.is_instance(types.bind(py)).unwrap_or(false) {
                return Outcome::Ignored;
            }
        }
        Outcome::Failure
    }

    /// What a value returned by the call counts as.
    pub(crate) fn outcome_of_value(&self, py: Python<'_>, name: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> Outcome {
        let Some(predicate) = self.failure_predicate.get() else { return Outcome::Success };
        match predicate.bind(py).call1((value,)).and_then(|v| v.is_truthy()) {
            Ok(true) => Outcome::Failure,
            Ok(false) => Outcome::Success,
            Err(err) => {
                Self::log_classifier_error(py, name, "failure_predicate", predicate.bind(py), err);
                Outcome::Failure
            }
        }
    }

    /// A classifier that raises is a bug in it, not in the dependency: log it with its
    /// traceback and count the call as a failure; the caller's own result is never lost.
    fn log_classifier_error(py: Python<'_>, name: &Bound<'_, PyString>, what: &str, classifier: &Bound<'_, PyAny>, err: PyErr) {
        let Ok(r) = refs(py) else { return };
        let message = "CircuitBreaker '%s': %s %r raised; counting the call as a failure";
        log_error_with_traceback(r.logger.bind(py), (message, name, what, classifier), &err);
    }
}
