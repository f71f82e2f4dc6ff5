//! Where transitions are told: the `circuit_breaker` logger and the breaker's listeners.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use cb_core::{State, Transition};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::PyTraverseError;
use pyo3::types::{PyDict, PyWeakrefReference};

use crate::refs::refs;
use crate::state::state_member;

/// The Python listeners of one breaker, shared with its transition hook.
///
/// The list's lock is held only to copy, push, or take out a reference: never while Python
/// code runs (a listener, an `__eq__`, a `__del__` of a dropped listener) and never across a
/// GIL release, so a thread that waits for it while holding the GIL always gets it.
pub(crate) struct Listeners {
    /// A weak reference to the breaker, set by the first `add_listener` (a strong one would be
    /// a cycle: the breaker owns this hook).
    pub(crate) owner: PyOnceLock<Py<PyWeakrefReference>>,
    pub(crate) list: Mutex<Vec<Py<PyAny>>>,
    pub(crate) any: AtomicBool,
}

impl Listeners {
    pub(crate) fn new() -> Self {
        Listeners { owner: PyOnceLock::new(), list: Mutex::new(Vec::new()), any: AtomicBool::new(false) }
    }

    pub(crate) fn snapshot(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|l| l.clone_ref(py)).collect()
    }

    /// Takes `listener` (this very object) out of the list; the caller drops it, unlocked.
    pub(crate) fn remove(&self, listener: &Bound<'_, PyAny>) -> Option<Py<PyAny>> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        let position = list.iter().position(|l| l.as_ptr() == listener.as_ptr())?;
        let removed = list.remove(position);
        self.any.store(!list.is_empty(), Ordering::Release);
        Some(removed)
    }

    /// Takes every listener out (for `__clear__`); the caller drops them, unlocked.
    pub(crate) fn take_all(&self) -> Vec<Py<PyAny>> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *list)
    }

    /// Visits the listeners (for `__traverse__`; the weak reference to the breaker owns
    /// nothing). The lock is only tried: the collector must never wait.
    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(list) = self.list.try_lock() {
            for listener in list.iter() {
                visit.call(listener)?;
            }
        }
        Ok(())
    }
}

/// Logs `(message, *args)` at `level` on the `circuit_breaker` logger; a logging error is
/// reported as unraisable, never raised.
pub(crate) fn log<'py>(py: Python<'py>, level: &str, message_and_args: impl pyo3::call::PyCallArgs<'py>) {
    if let Err(err) = refs(py).and_then(|r| r.logger.bind(py).call_method1(level, message_and_args)) {
        err.write_unraisable(py, None);
    }
}

/// Logs `message % args` at ERROR on the `circuit_breaker` logger with `err`'s traceback.
pub(crate) fn log_error_with_traceback<'py>(
    logger: &Bound<'py, PyAny>,
    args: impl pyo3::call::PyCallArgs<'py>,
    err: &PyErr,
) {
    let py = logger.py();
    let kwargs = PyDict::new(py);
    let logged = kwargs
        .set_item("exc_info", err.value(py))
        .and_then(|()| logger.call_method("error", args, Some(&kwargs)));
    if let Err(e) = logged {
        e.write_unraisable(py, None);
    }
}

/// Logs a transition on the `circuit_breaker` logger, in the documented words, then calls the
/// breaker's listeners with `(breaker, old, new, reason)`. Runs on the thread that made the
/// transition; nothing raised here reaches the caller's call: a logging error is reported as
/// unraisable, a listener's exception is logged.
pub(crate) fn on_transition(name: &str, listeners: &Listeners, transition: &Transition) {
    Python::attach(|py| {
        let Ok(r) = refs(py) else { return };
        let logger = r.logger.bind(py);
        let level = match transition.to {
            State::Open => "error",
            State::ForcedOpen => "warning",
            _ => "info",
        };
        let logged = logger.call_method1(
            level,
            (
                "CircuitBreaker '%s' transitioning to %s (%s)",
                name,
                transition.to.as_str(),
                transition.reason.to_string(),
            ),
        );
        if let Err(err) = logged {
            err.write_unraisable(py, None);
        }
        if !listeners.any.load(Ordering::Acquire) {
            return;
        }
        let Some(breaker) = listeners.owner.get(py).and_then(|w| w.bind(py).upgrade()) else { return };
        let old = state_member(r, transition.from).bind(py);
        let new = state_member(r, transition.to).bind(py);
        let reason = transition.reason.to_string();
        for listener in listeners.snapshot(py) {
            if let Err(err) = listener.bind(py).call1((&breaker, old, new, &reason)) {
                let message = "CircuitBreaker '%s': transition listener %r raised";
                log_error_with_traceback(logger, (message, name, listener.bind(py)), &err);
            }
        }
    });
}
