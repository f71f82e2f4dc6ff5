//! `circuit_breaker._core`: the `CircuitBreaker` class, with the whole admit → call → record
//! path in Rust on top of `cb_core`.
//!
//! `call` is a vectorcall method of our own (see [`vectorcall`]); the rest are ordinary PyO3
//! methods. The `CircuitBreakerState` enum and the exception classes are Python
//! (`circuit_breaker/_types.py`: a real `Enum`, exceptions with a Python `__init__` that users
//! can subclass and pickle); this module looks them up once and keeps them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cb_core::{Config, ConfigError, Outcome, State, Ticket, Transition};
use pyo3::exceptions::PyRuntimeError;
use pyo3::types::PyWeakrefReference;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

mod protected;
mod shared;
mod store;
mod vectorcall;
use vectorcall::CallArgs;

/// Python objects looked up once: the enum members, the open error, `BaseException.__new__`
/// (to build the error without running a Python `__init__`) and the logger.
struct Refs {
    closed: Py<PyAny>,
    open: Py<PyAny>,
    half_open: Py<PyAny>,
    open_error: Py<PyAny>,
    exception_new: Py<PyAny>,
    logger: Py<PyAny>,
    /// `circuit_breaker._support.record_when_done(permit, coroutine, args, kwargs)`.
    record_when_done: Py<PyAny>,
    /// `circuit_breaker._support.call_fallback(fallback, error, args, kwargs)`.
    call_fallback: Py<PyAny>,
    /// `circuit_breaker.SharedMemoryError`.
    shared_memory_error: Py<PyAny>,
}

static REFS: PyOnceLock<Refs> = PyOnceLock::new();

fn refs(py: Python<'_>) -> PyResult<&'static Refs> {
    REFS.get_or_try_init(py, || {
        let types = py.import("circuit_breaker._types")?;
        let state = types.getattr("CircuitBreakerState")?;
        Ok(Refs {
            closed: state.getattr("CLOSED")?.unbind(),
            open: state.getattr("OPEN")?.unbind(),
            half_open: state.getattr("HALF_OPEN")?.unbind(),
            open_error: types.getattr("CircuitBreakerOpenError")?.unbind(),
            exception_new: py.get_type::<PyException>().getattr("__new__")?.unbind(),
            logger: py.import("logging")?.call_method1("getLogger", ("circuit_breaker",))?.unbind(),
            record_when_done: py.import("circuit_breaker._support")?.getattr("record_when_done")?.unbind(),
            call_fallback: py.import("circuit_breaker._support")?.getattr("call_fallback")?.unbind(),
            shared_memory_error: types.getattr("SharedMemoryError")?.unbind(),
        })
    })
}

/// The documented API knows three states; FORCED_OPEN reads as OPEN and DISABLED as CLOSED.
fn state_name(state: State) -> &'static str {
    match state {
        State::Open | State::ForcedOpen => "OPEN",
        State::HalfOpen => "HALF_OPEN",
        // CLOSED, DISABLED, and any state a later core adds that admits calls.
        _ => "CLOSED",
    }
}

/// The Python listeners of one breaker, shared with its transition hook.
struct Listeners {
    /// A weak reference to the breaker, set by the first `add_listener` (a strong one would be
    /// a cycle: the breaker owns this hook).
    owner: PyOnceLock<Py<PyWeakrefReference>>,
    list: Mutex<Vec<Py<PyAny>>>,
    any: AtomicBool,
}

impl Listeners {
    fn new() -> Self {
        Listeners { owner: PyOnceLock::new(), list: Mutex::new(Vec::new()), any: AtomicBool::new(false) }
    }

    fn snapshot(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|l| l.clone_ref(py)).collect()
    }
}

fn state_member(r: &Refs, state: State) -> &Py<PyAny> {
    match state_name(state) {
        "OPEN" => &r.open,
        "HALF_OPEN" => &r.half_open,
        _ => &r.closed,
    }
}

/// Logs `(message, *args)` at `level` on the `circuit_breaker` logger; a logging error is
/// reported as unraisable, never raised.
fn log<'py>(py: Python<'py>, level: &str, message_and_args: impl pyo3::call::PyCallArgs<'py>) {
    if let Err(err) = refs(py).and_then(|r| r.logger.bind(py).call_method1(level, message_and_args)) {
        err.write_unraisable(py, None);
    }
}

/// Logs `message % args` at ERROR on the `circuit_breaker` logger with `err`'s traceback.
fn log_error_with_traceback<'py>(
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
fn on_transition(name: &str, listeners: &Listeners, transition: &Transition) {
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

/// Reads a positive integer argument, with Python's errors: `TypeError` for a non-int (bools
/// included), `ValueError` naming the argument and range otherwise.
fn int_arg(name: &str, value: &Bound<'_, PyAny>, max: u64) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {}",
            value.get_type().name()?
        )));
    }
    match value.extract::<i64>() {
        Ok(n) if n >= 1 && (n as u64) <= max => Ok(n as u64),
        _ => Err(PyValueError::new_err(format!("{name} must be in 1..={max}, got {value}"))),
    }
}

/// Reads a duration in seconds (int or float): `TypeError` for other types, `ValueError` for
/// negative, NaN, infinite or too large values.
fn seconds_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int or a float, got {}",
            value.get_type().name()?
        )));
    }
    let max = cb_core::MAX_TIMEOUT.as_secs();
    let out_of_range =
        || PyValueError::new_err(format!("{name} must be a finite number in 0..={max} seconds, got {value}"));
    let secs: f64 = value.extract().map_err(|_| out_of_range())?;
    if !secs.is_finite() || secs < 0.0 || secs > max as f64 {
        return Err(out_of_range());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| out_of_range())
}

fn config_error(err: ConfigError) -> PyErr {
    let field = match err.field() {
        "recovery_timeout" => "recovery_timeout_seconds",
        "probe_timeout" => "probe_timeout_seconds",
        other => other,
    };
    PyValueError::new_err(format!("{field} must be in {}, got an out-of-range value", err.allowed()))
}

/// ISO-8601 UTC with milliseconds and `Z`, e.g. `2026-01-26T11:05:56.123Z`.
fn iso8601(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A constructor argument that was passed (even as `None`, which is then a type error) or
/// left out (the documented default applies).
enum Arg<'py> {
    Given(Bound<'py, PyAny>),
    Omitted,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg::Given(obj.to_owned()))
    }
}

impl<'py> Arg<'py> {
    fn given(&self) -> Option<&Bound<'py, PyAny>> {
        match self {
            Arg::Given(v) => Some(v),
            Arg::Omitted => None,
        }
    }
}

/// What counts as failure, and what to return instead of an error. Set once, at construction.
struct Policy {
    /// Only these exception types (and subclasses) count as failures.
    expected: Option<Py<PyTuple>>,
    /// Exception types that never count.
    exclude_types: Option<Py<PyTuple>>,
    /// Predicates `exc -> bool`: a true answer means the exception does not count.
    exclude_predicates: Vec<Py<PyAny>>,
    /// `result -> bool`: a true answer means the returned value is a failure.
    failure_predicate: Option<Py<PyAny>>,
    fallback: Option<Py<PyAny>>,
    fallback_on_failure: bool,
}

impl Policy {
    /// Whether every exception counts and no value does: the documented behaviour.
    fn is_plain(&self) -> bool {
        self.expected.is_none()
            && self.exclude_types.is_none()
            && self.exclude_predicates.is_empty()
            && self.failure_predicate.is_none()
    }
}

/// Whether `value` is a subclass of `BaseException`.
fn is_exception_type(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    match value.cast::<pyo3::types::PyType>() {
        Ok(t) => t.is_subclass(&value.py().get_type::<pyo3::exceptions::PyBaseException>()),
        Err(_) => Ok(false),
    }
}

fn exception_types<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = value.py();
    let items: Vec<Bound<'py, PyAny>> = if is_exception_type(value)? {
        vec![value.clone()]
    } else if value.is_instance_of::<PyTuple>() || value.is_instance_of::<pyo3::types::PyList>() {
        value.try_iter()?.collect::<PyResult<_>>()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an exception type or a tuple of them, got {}",
            value.get_type().name()?
        )));
    };
    if items.is_empty() {
        return Err(PyValueError::new_err(format!("{name} must name at least one exception type")));
    }
    for item in &items {
        if !is_exception_type(item)? {
            return Err(PyTypeError::new_err(format!("{name} must hold exception types, got {}", item.repr()?)));
        }
    }
    PyTuple::new(py, items)
}

fn optional_callable(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    if value.is_none() {
        Ok(None)
    } else if value.is_callable() {
        Ok(Some(value.clone().unbind()))
    } else {
        Err(PyTypeError::new_err(format!("{name} must be callable or None, got {}", value.get_type().name()?)))
    }
}

impl Policy {
    fn from_args(
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
            exclude_predicates: predicates,
            failure_predicate: optional_callable("failure_predicate", failure_predicate)?,
            fallback,
            fallback_on_failure,
        })
    }
}

/// A circuit breaker protecting one dependency. See the package documentation.
#[pyclass(frozen, subclass, weakref, module = "circuit_breaker", name = "CircuitBreaker")]
struct CircuitBreaker {
    listeners: Arc<Listeners>,
    policy: Policy,
    /// The exception of the failure that last opened the breaker (for the open error).
    last_failure: Mutex<Option<Py<PyAny>>>,
    name: Py<PyString>,
    /// `recovery_timeout_seconds` exactly as given (an int stays an int in the status).
    recovery_timeout_seconds: Py<PyAny>,
    inner: store::Inner,
    /// The shared-memory region its word and counters live in, if any.
    region: Option<cb_core::SharedRegion>,
    created: SystemTime,
}

impl CircuitBreaker {
    /// `call(func, /, *args, **kwargs)`: runs `func` through the breaker and returns its value.
    /// If `func` returns a coroutine (an `async def` function), returns an awaitable that
    /// records the outcome when the coroutine finishes. Python reaches it through
    /// [`vectorcall`], which hands over the arguments unpacked.
    #[inline(always)]
    fn call<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>, rest: &CallArgs<'_, 'py>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if !func.is_callable() {
            return Err(not_callable(func));
        }
        let ticket = match this.inner.admit() {
            Ok(permit) => permit.into_ticket(),
            Err(rejected) => return Self::rejected_call(slf, rejected, rest),
        };
        // From here the ticket is recorded exactly once (nothing below panics: PyO3 turns
        // Python errors into values).
        match rest.call(func) {
            Ok(value) => {
                // An exact type compare (coroutine objects cannot be subclassed); pyo3-ffi's
                // `PyCoro_CheckExact` calls `PyType_IsSubtype` (24 instructions a call).
                if value.get_type_ptr() == &raw mut pyo3::ffi::PyCoro_Type {
                    return Self::started_coroutine(slf, ticket, value, rest);
                }
                if this.policy.failure_predicate.is_none() {
                    this.inner.record(ticket, Outcome::Success);
                    return Ok(value.unbind());
                }
                this.returned_with_policy(py, ticket, value, rest)
            }
            Err(err) => this.raised(py, ticket, err, rest),
        }
    }

    fn rejection(slf: &Bound<'_, Self>, rejected: cb_core::Rejected) -> PyErr {
        let py = slf.py();
        let this = slf.get();
        let build = || -> PyResult<PyErr> {
            let r = refs(py)?;
            let secs = rejected.retry_after().map(|d| d.as_secs_f64());
            let state = match rejected.state() {
                State::HalfOpen => &r.half_open,
                _ => &r.open,
            };
            // BaseException.__new__ sets `args` without running the class's Python __init__.
            // The breaker rides along so `last_failure` is read only if someone asks.
            let exc = r.exception_new.bind(py).call1((
                r.open_error.bind(py),
                this.name.bind(py),
                secs,
                state.bind(py),
                slf,
            ))?;
            Ok(PyErr::from_value(exc))
        };
        build().unwrap_or_else(|e| e)
    }

    fn state(&self) -> State {
        self.inner.state()
    }

    /// `call` was rejected: the fallback's result, or the open error.
    #[cold]
    #[inline(never)]
    fn rejected_call(
        slf: &Bound<'_, Self>,
        rejected: cb_core::Rejected,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let error = Self::rejection(slf, rejected);
        match &this.policy.fallback {
            Some(fallback) => this.call_fallback(py, fallback, error.value(py), rest),
            None => Err(error),
        }
    }

    /// `call` started a coroutine: the outcome comes when it is awaited, so hand back an
    /// awaitable that owns the slot.
    #[cold]
    #[inline(never)]
    fn started_coroutine(
        slf: &Bound<'_, Self>,
        ticket: Ticket,
        coroutine: Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (args, kwargs) = rest.packed()?;
        let permit = Permit { breaker: slf.clone().unbind(), ticket: Mutex::new(Some(ticket)) };
        Ok(refs(py)?.record_when_done.bind(py).call1((permit, coroutine, args, kwargs))?.unbind())
    }

    /// `call` returned and a `failure_predicate` is set: classify, maybe fall back.
    #[inline(never)]
    fn returned_with_policy(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        value: Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let outcome = self.outcome_of_value(py, &value);
        self.finish(ticket, outcome, None);
        match (&self.policy.fallback, outcome) {
            (Some(fallback), Outcome::Failure) if self.policy.fallback_on_failure => {
                self.call_fallback(py, fallback, py.None().bind(py), rest)
            }
            _ => Ok(value.unbind()),
        }
    }

    /// `call` raised: classify (Exception subclasses are the dependency failing unless the
    /// policy says otherwise; other BaseExceptions — KeyboardInterrupt, SystemExit,
    /// GeneratorExit, CancelledError — say nothing about it and count as neither), maybe fall
    /// back, else propagate the very same exception.
    #[inline(never)]
    fn raised(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        err: PyErr,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let error = err.value(py);
        let outcome = self.outcome_of_error(py, error);
        self.finish(ticket, outcome, Some(error));
        match (&self.policy.fallback, outcome) {
            (Some(fallback), Outcome::Failure) if self.policy.fallback_on_failure => {
                self.call_fallback(py, fallback, error, rest)
            }
            _ => Err(err),
        }
    }

    /// Calls `fallback(*args, **kwargs)` while `error` is being handled, so the fallback sees
    /// it as `sys.exc_info()` and any error it raises chains to it.
    fn call_fallback(
        &self,
        py: Python<'_>,
        fallback: &Py<PyAny>,
        error: &Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let r = refs(py)?;
        let (args, kwargs) = rest.packed()?;
        let kwargs = match kwargs {
            Some(k) => k.clone(),
            None => PyDict::new(py),
        };
        Ok(r.call_fallback.bind(py).call1((fallback.bind(py), error, args, kwargs))?.unbind())
    }

    /// What an exception from the call counts as.
    fn outcome_of_error(&self, py: Python<'_>, error: &Bound<'_, PyAny>) -> Outcome {
        if !error.is_instance_of::<PyException>() {
            return Outcome::Ignored;
        }
        if self.policy.is_plain() {
            return Outcome::Failure;
        }
        let p = &self.policy;
        if let Some(types) = &p.exclude_types {
            if error.is_instance(types.bind(py)).unwrap_or(false) {
                return Outcome::Ignored;
            }
        }
        for predicate in &p.exclude_predicates {
            match predicate.bind(py).call1((error,)).and_then(|v| v.is_truthy()) {
                Ok(true) => return Outcome::Ignored,
                Ok(false) => {}
                Err(err) => self.log_classifier_error(py, "exclude predicate", predicate.bind(py), err),
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
    fn outcome_of_value(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> Outcome {
        let Some(predicate) = &self.policy.failure_predicate else { return Outcome::Success };
        match predicate.bind(py).call1((value,)).and_then(|v| v.is_truthy()) {
            Ok(true) => Outcome::Failure,
            Ok(false) => Outcome::Success,
            Err(err) => {
                self.log_classifier_error(py, "failure_predicate", predicate.bind(py), err);
                Outcome::Failure
            }
        }
    }

    /// A classifier that raises is a bug in it, not in the dependency: log it with its
    /// traceback and count the call as a failure; the caller's own result is never lost.
    fn log_classifier_error(&self, py: Python<'_>, what: &str, classifier: &Bound<'_, PyAny>, err: PyErr) {
        let Ok(r) = refs(py) else { return };
        let message = "CircuitBreaker '%s': %s %r raised; counting the call as a failure";
        log_error_with_traceback(r.logger.bind(py), (message, self.name.bind(py), what, classifier), &err);
    }

    /// Records `outcome` for a finished call and remembers a failure that opened the breaker.
    #[inline]
    fn finish(&self, ticket: Ticket, outcome: Outcome, error: Option<&Bound<'_, PyAny>>) {
        self.inner.record(ticket, outcome);
        if outcome == Outcome::Failure && self.inner.snapshot().stored_state() == State::Open {
            if let Some(error) = error {
                *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone().unbind());
            }
        }
    }

    /// What the counts in the status and metrics cover: `'process'`, or `'host'` when the
    /// breaker lives in shared memory.
    fn scope(&self) -> &'static str {
        if self.region.is_some() { "host" } else { "process" }
    }

    /// Consecutive failures now; the word keeps no count once open, so OPEN and HALF_OPEN
    /// report the threshold that opened it.
    fn failure_count(&self, state: State) -> u64 {
        match state {
            State::Closed => self.inner.snapshot().failures(),
            State::Open | State::HalfOpen => self.inner.config().failure_threshold,
            _ => 0,
        }
    }
}

/// The `TypeError` for `call()` on something that is not callable.
#[cold]
#[inline(never)]
fn not_callable(func: &Bound<'_, PyAny>) -> PyErr {
    let type_name = func.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    PyTypeError::new_err(format!("call() needs a callable, got {type_name}"))
}

/// `'normal'`, or the manual mode set by `force_open()` / `disable()`.
fn mode(state: State) -> &'static str {
    match state {
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        _ => "normal",
    }
}

/// The right to run one call, from `CircuitBreaker.acquire()`. Report how it ended with
/// `success()`, `failure()` or `ignore()`, once; a permit garbage-collected unreported counts
/// as ignored and frees its half-open probe slot.
#[pyclass(frozen, module = "circuit_breaker", name = "Permit")]
struct Permit {
    breaker: Py<CircuitBreaker>,
    ticket: Mutex<Option<Ticket>>,
}

impl Permit {
    fn finish(&self, outcome: Outcome, error: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let ticket = self.ticket.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ticket {
            Some(ticket) => {
                self.breaker.get().finish(ticket, outcome, error);
                Ok(())
            }
            None => Err(PyRuntimeError::new_err("this permit has already reported its outcome")),
        }
    }
}

#[pymethods]
impl Permit {
    /// The call succeeded.
    fn success(&self) -> PyResult<()> {
        self.finish(Outcome::Success, None)
    }

    /// The call failed.
    fn failure(&self) -> PyResult<()> {
        self.finish(Outcome::Failure, None)
    }

    /// The call ended in a way that says nothing about the dependency.
    fn ignore(&self) -> PyResult<()> {
        self.finish(Outcome::Ignored, None)
    }

    /// The call raised `error` (or, for None, finished without raising): records what the
    /// breaker's policy says it counts as. Returns True if it counted as a failure.
    #[pyo3(signature = (error = None))]
    fn record_exception(&self, py: Python<'_>, error: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let outcome = match error {
            None => Outcome::Success,
            Some(e) => self.breaker.get().outcome_of_error(py, e),
        };
        self.finish(outcome, error)?;
        Ok(outcome == Outcome::Failure)
    }

    /// The call returned `value`: records success, or failure if the breaker's
    /// `failure_predicate` says so. Returns True if it counted as a failure.
    fn record_result(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let outcome = self.breaker.get().outcome_of_value(py, value);
        self.finish(outcome, None)?;
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
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.is_probe())
    }

    /// Whether an outcome is still to be reported.
    #[getter]
    fn pending(&self) -> bool {
        self.ticket.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let ticket = self.ticket.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ticket) = ticket {
            self.breaker.get().inner.record(ticket, Outcome::Ignored);
        }
    }
}

#[pymethods]
impl CircuitBreaker {
    #[new]
    #[pyo3(signature = (
        name, failure_threshold = Arg::Omitted, recovery_timeout_seconds = Arg::Omitted, *,
        success_threshold = Arg::Omitted, half_open_max_calls = Arg::Omitted,
        expected_exceptions = None, exclude = None, failure_predicate = None,
        fallback = None, fallback_on_failure = None,
        probe_timeout_seconds = Arg::Omitted, shared_memory = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        failure_threshold: Arg<'py>,
        recovery_timeout_seconds: Arg<'py>,
        success_threshold: Arg<'py>,
        half_open_max_calls: Arg<'py>,
        expected_exceptions: Option<&Bound<'py, PyAny>>,
        exclude: Option<&Bound<'py, PyAny>>,
        failure_predicate: Option<&Bound<'py, PyAny>>,
        fallback: Option<&Bound<'py, PyAny>>,
        fallback_on_failure: Option<&Bound<'py, PyAny>>,
        probe_timeout_seconds: Arg<'py>,
        shared_memory: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let none = py.None().into_bound(py);
        let false_ = PyBool::new(py, false).to_owned().into_any();
        let policy = Policy::from_args(
            expected_exceptions.unwrap_or(&none),
            exclude.unwrap_or(&none),
            failure_predicate.unwrap_or(&none),
            fallback.unwrap_or(&none),
            fallback_on_failure.unwrap_or(&false_),
        )?;
        let name = name.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("name must be a str, got {}", name.get_type().name().map(|n| n.to_string()).unwrap_or_default()))
        })?;
        let defaults = Config::default();
        let mut config = defaults;
        if let Some(v) = failure_threshold.given() {
            config.failure_threshold = int_arg("failure_threshold", v, u64::from(u32::MAX))?;
        }
        if let Some(v) = success_threshold.given() {
            config.success_threshold = int_arg("success_threshold", v, 255)?;
        }
        if let Some(v) = half_open_max_calls.given() {
            config.half_open_max_calls = int_arg("half_open_max_calls", v, 255)?;
        }
        let recovery_obj = match recovery_timeout_seconds.given() {
            Some(v) => {
                config.recovery_timeout = seconds_arg("recovery_timeout_seconds", v)?;
                v.clone().unbind()
            }
            None => defaults.recovery_timeout.as_secs().into_py_any(py)?,
        };
        if let Some(v) = probe_timeout_seconds.given() {
            config.probe_timeout = seconds_arg("probe_timeout_seconds", v)?;
        }
        config.limits().map_err(config_error)?;
        // Look the Python-side objects up now, so `call` can rely on them being there.
        refs(py)?;
        let label = name.to_string();
        let region = shared::placement(py, shared_memory)?;
        let (store, counters) = shared::attach(py, region.as_ref(), &label, &config)?;
        let listeners = Arc::new(Listeners::new());
        let hook = Arc::clone(&listeners);
        // The status reports the last failure's time: stamp every failure.
        let mut inner = cb_core::CircuitBreaker::with_store(config, cb_core::DefaultClock::default(), counters.with_failure_times(), store)
            .map_err(config_error)?
            .on_transition(move |t| on_transition(&label, &hook, t));
        if let Some(region) = &region {
            // Every process converts the shared ticks to wall-clock time alike.
            inner = inner.with_wall_anchor(region.wall_anchor());
        }
        Ok(CircuitBreaker {
            listeners,
            policy,
            last_failure: Mutex::new(None),
            name: name.clone().unbind(),
            recovery_timeout_seconds: recovery_obj,
            inner,
            region,
            created: SystemTime::now(),
        })
    }

    /// Whether the breaker is OPEN now (rejecting calls).
    fn is_open(&self) -> bool {
        state_name(self.state()) == "OPEN"
    }

    /// Whether the breaker is HALF_OPEN now (the recovery timeout has elapsed).
    fn is_half_open(&self) -> bool {
        self.state() == State::HalfOpen
    }

    /// Whether the breaker is CLOSED now (normal operation).
    fn is_closed(&self) -> bool {
        state_name(self.state()) == "CLOSED"
    }

    /// The current `CircuitBreakerState`.
    fn get_state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(state_member(refs(py)?, self.state()).clone_ref(py))
    }

    /// The status dict: the documented keys first, then `success_threshold`,
    /// `half_open_max_calls`, `total_failures`, `total_rejections`.
    fn get_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.state();
        let config = self.inner.config();
        let totals = self.inner.metrics().since_reset();
        let failure_count = self.failure_count(state);
        let failed_since_reset = totals.failures > 0;
        let last_failure = self
            .inner
            .last_failure_time()
            .filter(|_| failed_since_reset)
            .map(iso8601);
        let last_change = self.inner.last_state_change_time().unwrap_or(self.created);
        let until_recovery = match state {
            State::Open => self.inner.time_until_half_open().map(|d| d.as_secs_f64()),
            _ => None,
        };
        let status = PyDict::new(py);
        status.set_item(intern!(py, "name"), self.name.bind(py))?;
        status.set_item(intern!(py, "state"), state_name(state))?;
        status.set_item(intern!(py, "failure_count"), failure_count)?;
        status.set_item(intern!(py, "success_count"), totals.successes)?;
        status.set_item(intern!(py, "failure_threshold"), config.failure_threshold)?;
        status.set_item(intern!(py, "recovery_timeout_seconds"), self.recovery_timeout_seconds.bind(py))?;
        status.set_item(intern!(py, "last_failure_time"), last_failure)?;
        status.set_item(intern!(py, "last_state_change"), iso8601(last_change))?;
        status.set_item(intern!(py, "time_until_recovery_seconds"), until_recovery)?;
        status.set_item(intern!(py, "success_threshold"), config.success_threshold)?;
        status.set_item(intern!(py, "half_open_max_calls"), config.half_open_max_calls)?;
        status.set_item(intern!(py, "total_failures"), self.inner.metrics().totals().failures)?;
        status.set_item(intern!(py, "total_rejections"), totals.rejections)?;
        status.set_item(intern!(py, "mode"), mode(state))?;
        status.set_item(intern!(py, "scope"), self.scope())?;
        Ok(status)
    }

    /// Counters since creation (a `reset` keeps them), seed 003's keys first.
    ///
    /// `total_requests` counts every call (rejected ones included); `success_rate` is the
    /// percentage of them that succeeded (0 before any call).
    fn get_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.state();
        let t = self.inner.metrics().totals();
        let requests = t.successes + t.failures + t.ignored + t.rejections;
        let rate = if requests == 0 { 0.0 } else { t.successes as f64 / requests as f64 * 100.0 };
        let metrics = PyDict::new(py);
        metrics.set_item(intern!(py, "state"), state_name(state))?;
        metrics.set_item(intern!(py, "total_requests"), requests)?;
        metrics.set_item(intern!(py, "total_successes"), t.successes)?;
        metrics.set_item(intern!(py, "total_failures"), t.failures)?;
        metrics.set_item(intern!(py, "success_rate"), rate)?;
        metrics.set_item(intern!(py, "circuit_opened_count"), t.opened)?;
        metrics.set_item(intern!(py, "current_failure_count"), self.failure_count(state))?;
        metrics.set_item(intern!(py, "total_rejections"), t.rejections)?;
        metrics.set_item(intern!(py, "total_ignored"), t.ignored)?;
        metrics.set_item(intern!(py, "mode"), mode(state))?;
        metrics.set_item(intern!(py, "scope"), self.scope())?;
        Ok(metrics)
    }

    /// Admits one call and returns its `Permit`, for code that is not one function call
    /// (streaming, callbacks). Raises `CircuitBreakerOpenError` when rejected.
    fn acquire(slf: &Bound<'_, Self>) -> PyResult<Permit> {
        let this = slf.get();
        let permit = this.inner.admit().map_err(|rejected| Self::rejection(slf, rejected))?;
        Ok(Permit { breaker: slf.clone().unbind(), ticket: Mutex::new(Some(permit.into_ticket())) })
    }

    /// OPEN until `reset()`, whatever the timeout (reads as OPEN; `mode` is `'forced_open'`).
    fn force_open(&self) {
        self.inner.force_open();
    }

    /// Admits every call and never trips until `reset()` (reads as CLOSED; `mode` is
    /// `'disabled'`).
    fn disable(&self) {
        self.inner.disable();
    }

    /// Calls `listener(breaker, old_state, new_state, reason)` after every transition, on the
    /// thread that made it. An exception from a listener is logged and never breaks a call.
    fn add_listener(slf: &Bound<'_, Self>, listener: &Bound<'_, PyAny>) -> PyResult<()> {
        if !listener.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "listener must be callable, got {}",
                listener.get_type().name()?
            )));
        }
        let this = slf.get();
        let py = slf.py();
        this.listeners.owner.get_or_try_init(py, || {
            PyWeakrefReference::new(slf).map(|w| w.unbind())
        })?;
        this.listeners.list.lock().unwrap_or_else(|e| e.into_inner()).push(listener.clone().unbind());
        this.listeners.any.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes a listener added with `add_listener`; `ValueError` if it was not added.
    fn remove_listener(&self, listener: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut list = self.listeners.list.lock().unwrap_or_else(|e| e.into_inner());
        let position = list.iter().position(|l| l.bind(listener.py()).is(listener));
        match position {
            Some(i) => {
                list.remove(i);
                self.listeners.any.store(!list.is_empty(), Ordering::Release);
                Ok(())
            }
            None => Err(PyValueError::new_err("listener was not added to this breaker")),
        }
    }

    /// Back to CLOSED with the failure and success counts cleared.
    fn reset(&self) {
        self.inner.metrics().mark_reset();
        self.inner.reset();
    }

    /// The breaker's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Consecutive failures that open the breaker.
    #[getter]
    fn failure_threshold(&self) -> u64 {
        self.inner.config().failure_threshold
    }

    /// Seconds OPEN lasts before probing, as given.
    #[getter]
    fn recovery_timeout_seconds(&self, py: Python<'_>) -> Py<PyAny> {
        self.recovery_timeout_seconds.clone_ref(py)
    }

    /// Consecutive probe successes that close the breaker.
    #[getter]
    fn success_threshold(&self) -> u64 {
        self.inner.config().success_threshold
    }

    /// Probes admitted at the same time in HALF_OPEN.
    #[getter]
    fn half_open_max_calls(&self) -> u64 {
        self.inner.config().half_open_max_calls
    }

    /// Seconds a half-open probe slot may be held without an outcome before it is presumed lost
    /// (a leaked permit, a worker killed mid-probe).
    #[getter]
    fn probe_timeout_seconds(&self) -> f64 {
        self.inner.config().probe_timeout.as_secs_f64()
    }

    /// The shared-memory region its state lives in (host-wide), or None (this process only).
    #[getter]
    fn shared_memory(&self) -> Option<shared::SharedMemory> {
        self.region.clone().map(shared::SharedMemory::new_for)
    }

    /// The fallback called instead of raising (None if none).
    #[getter]
    fn fallback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.policy.fallback.as_ref().map(|f| f.clone_ref(py))
    }

    /// Whether the fallback also replaces a failed call's exception.
    #[getter]
    fn fallback_on_failure(&self) -> bool {
        self.policy.fallback_on_failure
    }

    /// The exception of the failure that last opened the breaker, or None.
    #[getter]
    fn last_failure(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|e| e.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CircuitBreaker(name={}, state={}, failure_threshold={}, recovery_timeout_seconds={})",
            self.name.bind(py).repr().map(|r| r.to_string()).unwrap_or_default(),
            state_name(self.state()),
            self.inner.config().failure_threshold,
            self.recovery_timeout_seconds.bind(py),
        )
    }
}

/// `circuit_breaker._core`.
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CircuitBreaker>()?;
    vectorcall::install(&m.py().get_type::<CircuitBreaker>())?;
    m.add_class::<Permit>()?;
    m.add_class::<protected::ProtectedFunction>()?;
    m.add_class::<shared::SharedMemory>()?;
    m.add_function(wrap_pyfunction!(vectorcall::_bind_call, m)?)?;
    Ok(())
}
