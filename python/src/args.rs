//! Constructor arguments, checked with Python's errors: `TypeError` for a wrong type (a `bool`
//! or `None` where a number belongs included), `ValueError` naming the argument and its range.

use std::time::Duration;

use cb_core::ConfigError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};

/// Reads a positive integer argument, with Python's errors: `TypeError` for a non-int (bools
/// included), `ValueError` naming the argument and range otherwise.
pub(crate) fn int_arg(name: &str, value: &Bound<'_, PyAny>, max: u64) -> PyResult<u64> {
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
pub(crate) fn seconds_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
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

pub(crate) fn config_error(err: ConfigError) -> PyErr {
    let field = match err.field() {
        "recovery_timeout" => "recovery_timeout_seconds",
        "probe_timeout" => "probe_timeout_seconds",
        other => other,
    };
    PyValueError::new_err(format!("{field} must be in {}, got an out-of-range value", err.allowed()))
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
