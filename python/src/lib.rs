//! `circuit_breaker._core`: the `CircuitBreaker` class, with the whole admit → call → record
//! path in Rust on top of `cb_core`.
//!
//! Only what must be Python lives in Python (`circuit_breaker/_types.py`): the
//! `CircuitBreakerState` enum and the exception classes (abi3 cannot subclass `Exception` from
//! Rust before 3.12). This module looks them up once and keeps them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cb_core::{Config, ConfigError, State, Transition};
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

/// Python objects looked up once: the enum members, the open error, `BaseException.__new__`
/// (to build the error without running a Python `__init__`) and the logger.
struct Refs {
    closed: Py<PyAny>,
    open: Py<PyAny>,
    half_open: Py<PyAny>,
    open_error: Py<PyAny>,
    exception_new: Py<PyAny>,
    logger: Py<PyAny>,
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
        })
    })
}

/// The documented API knows three states; FORCED_OPEN reads as OPEN and DISABLED as CLOSED.
fn state_name(state: State) -> &'static str {
    match state {
        State::Closed | State::Disabled => "CLOSED",
        State::Open | State::ForcedOpen => "OPEN",
        State::HalfOpen => "HALF_OPEN",
    }
}

/// Logs a transition on the `circuit_breaker` logger, in the documented words. Runs on the
/// thread that made the transition; an error in logging is reported as unraisable, never
/// propagated into the caller's call.
fn log_transition(name: &str, transition: &Transition) {
    Python::attach(|py| {
        let result = refs(py).and_then(|r| {
            let level = if transition.to == State::Open { "error" } else { "info" };
            r.logger.bind(py).call_method1(
                level,
                (
                    "CircuitBreaker '%s' transitioning to %s (%s)",
                    name,
                    state_name(transition.to),
                    transition.reason.to_string(),
                ),
            )
        });
        if let Err(err) = result {
            err.write_unraisable(py, None);
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

/// A circuit breaker protecting one dependency. See the package documentation.
#[pyclass(frozen, subclass, module = "circuit_breaker", name = "CircuitBreaker")]
struct CircuitBreaker {
    name: Py<PyString>,
    /// `recovery_timeout_seconds` exactly as given (an int stays an int in the status).
    recovery_timeout_seconds: Py<PyAny>,
    inner: cb_core::CircuitBreaker,
    /// Total successes at the last reset: `success_count` counts from there.
    success_baseline: AtomicU64,
    /// Total failures at the last reset: the last failure is reported only if one came since.
    failure_baseline: AtomicU64,
    created: SystemTime,
}

impl CircuitBreaker {
    fn rejection(&self, py: Python<'_>, rejected: cb_core::Rejected) -> PyErr {
        let build = || -> PyResult<PyErr> {
            let r = refs(py)?;
            let secs = rejected.retry_after().map(|d| d.as_secs_f64());
            let state = match rejected.state() {
                State::HalfOpen => &r.half_open,
                _ => &r.open,
            };
            // BaseException.__new__ sets `args` without running the class's Python __init__.
            let exc = r.exception_new.bind(py).call1((
                r.open_error.bind(py),
                self.name.bind(py),
                secs,
                state.bind(py),
            ))?;
            Ok(PyErr::from_value(exc))
        };
        build().unwrap_or_else(|e| e)
    }

    fn state(&self) -> State {
        self.inner.state()
    }
}

#[pymethods]
impl CircuitBreaker {
    #[new]
    #[pyo3(signature = (name, failure_threshold = Arg::Omitted, recovery_timeout_seconds = Arg::Omitted, *, success_threshold = Arg::Omitted, half_open_max_calls = Arg::Omitted))]
    fn new<'py>(
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        failure_threshold: Arg<'py>,
        recovery_timeout_seconds: Arg<'py>,
        success_threshold: Arg<'py>,
        half_open_max_calls: Arg<'py>,
    ) -> PyResult<Self> {
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
        let label = name.to_string();
        let inner = cb_core::CircuitBreaker::new(config)
            .map_err(config_error)?
            .on_transition(move |t| log_transition(&label, t));
        Ok(CircuitBreaker {
            name: name.clone().unbind(),
            recovery_timeout_seconds: recovery_obj,
            inner,
            success_baseline: AtomicU64::new(0),
            failure_baseline: AtomicU64::new(0),
            created: SystemTime::now(),
        })
    }

    /// Runs `func(*args, **kwargs)` through the breaker and returns its value.
    #[pyo3(signature = (func, /, *args, **kwargs))]
    fn call(
        &self,
        py: Python<'_>,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "call() needs a callable, got {}",
                func.get_type().name()?
            )));
        }
        let permit = self.inner.admit().map_err(|rejected| self.rejection(py, rejected))?;
        match func.call(args, kwargs) {
            Ok(value) => {
                permit.success();
                Ok(value.unbind())
            }
            Err(err) => {
                // Exception subclasses are the dependency failing; other BaseExceptions
                // (KeyboardInterrupt, SystemExit, GeneratorExit, CancelledError) say nothing
                // about it: they release the slot and count as neither.
                if err.is_instance_of::<PyException>(py) {
                    permit.failure();
                } else {
                    permit.ignore();
                }
                Err(err)
            }
        }
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
        let r = refs(py)?;
        Ok(match state_name(self.state()) {
            "OPEN" => r.open.clone_ref(py),
            "HALF_OPEN" => r.half_open.clone_ref(py),
            _ => r.closed.clone_ref(py),
        })
    }

    /// The status dict: the documented keys first, then `success_threshold`,
    /// `half_open_max_calls`, `total_failures`, `total_rejections`.
    fn get_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.state();
        let config = self.inner.config();
        let snapshot = self.inner.snapshot();
        let totals = self.inner.metrics().totals();
        let failure_count = match state {
            State::Closed => snapshot.failures(),
            // The word keeps no count once open: report the count that opened it.
            State::Open | State::HalfOpen => config.failure_threshold,
            State::ForcedOpen | State::Disabled => 0,
        };
        let failed_since_reset = totals.failures > self.failure_baseline.load(Ordering::Relaxed);
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
        status.set_item(
            intern!(py, "success_count"),
            totals.successes.saturating_sub(self.success_baseline.load(Ordering::Relaxed)),
        )?;
        status.set_item(intern!(py, "failure_threshold"), config.failure_threshold)?;
        status.set_item(intern!(py, "recovery_timeout_seconds"), self.recovery_timeout_seconds.bind(py))?;
        status.set_item(intern!(py, "last_failure_time"), last_failure)?;
        status.set_item(intern!(py, "last_state_change"), iso8601(last_change))?;
        status.set_item(intern!(py, "time_until_recovery_seconds"), until_recovery)?;
        status.set_item(intern!(py, "success_threshold"), config.success_threshold)?;
        status.set_item(intern!(py, "half_open_max_calls"), config.half_open_max_calls)?;
        status.set_item(intern!(py, "total_failures"), totals.failures)?;
        status.set_item(intern!(py, "total_rejections"), totals.rejections)?;
        Ok(status)
    }

    /// Back to CLOSED with the failure and success counts cleared.
    fn reset(&self) {
        let totals = self.inner.metrics().totals();
        self.success_baseline.store(totals.successes, Ordering::Relaxed);
        self.failure_baseline.store(totals.failures, Ordering::Relaxed);
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
    Ok(())
}
