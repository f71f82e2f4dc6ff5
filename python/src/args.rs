//! Constructor arguments, checked with Python's errors: `TypeError` for a wrong type (a `bool`
//! or `None` where a number belongs included), `ValueError` naming the argument and its range.

use std::time::Duration;

use cb_core::ConfigError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};

/// Reads a whole-number argument: `TypeError` for anything but an `int` (a `bool` included).
/// The range is the core's to check ([`cb_core::Config::limits`], reported by [`config_error`]);
/// a value no `u64` can hold stands in as `u64::MAX`, which every range rejects.
pub(crate) fn count_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!("{name} must be an int, got {}", value.get_type().name()?)));
    }
    Ok(value.extract::<u64>().unwrap_or(if value.lt(0)? { 0 } else { u64::MAX }))
}

/// Reads a duration in seconds (an `int` or a `float`): `TypeError` for other types,
/// `ValueError` for a negative, NaN or infinite number. How long it may be is the core's to
/// check; one too long for a `Duration` stands in as `Duration::MAX`.
pub(crate) fn seconds_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>() || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!("{name} must be an int or a float, got {}", value.get_type().name()?)));
    }
    let secs: f64 = value.extract()?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(PyValueError::new_err(format!("{name} must be a finite, non-negative number of seconds, got {value}")));
    }
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// Reads a fraction (an `int` or a `float`): `TypeError` for other types; its range, (0, 1],
/// is the core's to check.
pub(crate) fn fraction_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>() || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
        return Err(PyTypeError::new_err(format!("{name} must be a float, got {}", value.get_type().name()?)));
    }
    value.extract()
}

/// The core's range error in Python's words: the argument's Python name, its range (seconds for
/// durations) and the value as it was given (`given` holds the arguments passed).
pub(crate) fn config_error(err: ConfigError, given: &[(&str, &Bound<'_, PyAny>)]) -> PyErr {
    let name = match err.field() {
        "recovery_timeout" => "recovery_timeout_seconds",
        "probe_timeout" => "probe_timeout_seconds",
        "slow_call_duration" => "slow_call_seconds",
        "window_time" => "window_seconds",
        other => other,
    };
    let value = given.iter().find(|(n, _)| *n == name).map_or_else(|| "an out-of-range value".to_string(), |(_, v)| v.to_string());
    if name == "consecutive_failures" {
        return PyValueError::new_err(
            "failure_threshold=None (no trip on consecutive failures) needs a rate policy: failure_rate_threshold or slow_call_seconds",
        );
    }
    if name == "slow_call_rate_threshold" && err.allowed().starts_with("set together") {
        return PyValueError::new_err("slow_call_rate_threshold needs slow_call_seconds (the duration that makes a call slow)");
    }
    if name.ends_with("rate_threshold") {
        return PyValueError::new_err(format!("{name} must be a fraction in (0, 1], got {value}"));
    }
    let (min, max) = err.bounds();
    let allowed = if err.is_duration() {
        format!("{}..={} seconds", seconds(min), seconds(max))
    } else {
        format!("{min}..={max}")
    };
    PyValueError::new_err(format!("{name} must be in {allowed}, got {value}"))
}

fn seconds(ms: u64) -> String {
    if ms % 1_000 == 0 {
        (ms / 1_000).to_string()
    } else {
        format!("{}.{:03}", ms / 1_000, ms % 1_000)
    }
}

/// A constructor argument that was passed (even as `None`, which is then a type error) or
/// left out (the documented default applies).
pub(crate) enum Arg<'py> {
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
    pub(crate) fn given(&self) -> Option<&Bound<'py, PyAny>> {
        match self {
            Arg::Given(v) => Some(v),
            Arg::Omitted => None,
        }
    }
}

/// Whether `value` is a subclass of `BaseException`.
pub(crate) fn is_exception_type(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    match value.cast::<pyo3::types::PyType>() {
        Ok(t) => t.is_subclass(&value.py().get_type::<pyo3::exceptions::PyBaseException>()),
        Err(_) => Ok(false),
    }
}

pub(crate) fn exception_types<'py>(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
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

pub(crate) fn optional_callable(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    if value.is_none() {
        Ok(None)
    } else if value.is_callable() {
        Ok(Some(value.clone().unbind()))
    } else {
        Err(PyTypeError::new_err(format!("{name} must be callable or None, got {}", value.get_type().name()?)))
    }
}

/// The `TypeError` for `call()` on something that is not callable.
#[cold]
#[inline(never)]
pub(crate) fn not_callable(func: &Bound<'_, PyAny>) -> PyErr {
    let type_name = func.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    PyTypeError::new_err(format!("call() needs a callable, got {type_name}"))
}
