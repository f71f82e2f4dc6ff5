//! `ProtectedFunction`: what `@breaker` returns for a plain (not `async`, not generator)
//! function.
//!
//! A Python wrapper `def wrapper(*args, **kwargs): return breaker.call(func, *args, **kwargs)`
//! costs a Python frame and packs the arguments twice: more than the breaker itself. This
//! object is called straight from CPython (`tp_call`, one packing, done by CPython) into the
//! same Rust path as `CircuitBreaker.call`. It has a `__dict__`, so `functools.wraps` works on it
//! as on a function, and it binds to instances like a function does when used as a method.

use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::vectorcall::CallArgs;
use crate::args::not_callable;
use crate::breaker::CircuitBreaker;

// CPython's `PyMethod_New` (the C side of `types.MethodType`), which pyo3-ffi does not declare.
extern "C" {
    fn PyMethod_New(func: *mut ffi::PyObject, instance: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// A function protected by a circuit breaker (what `@breaker` makes of a plain function).
/// Calling it is `breaker.call(func, *args, **kwargs)`.
#[pyclass(frozen, dict, weakref, module = "circuit_breaker", name = "ProtectedFunction")]
pub(crate) struct ProtectedFunction {
    breaker: Py<CircuitBreaker>,
    func: Py<PyAny>,
}

#[pymethods]
impl ProtectedFunction {
    #[new]
    #[pyo3(signature = (breaker, func, /))]
    fn new(breaker: Bound<'_, CircuitBreaker>, func: Bound<'_, PyAny>) -> PyResult<Self> {
        if !func.is_callable() {
            return Err(not_callable(&func));
        }
        Ok(ProtectedFunction { breaker: breaker.unbind(), func: func.unbind() })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        CircuitBreaker::call(self.breaker.bind(py), self.func.bind(py), &CallArgs::Packed { args, kwargs })
    }

    /// Binds like a function: looked up on an instance, it is a method of that instance.
    fn __get__(
        slf: &Bound<'_, Self>,
        instance: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match instance {
            None => Ok(slf.clone().into_any().unbind()),
            // SAFETY: both are live objects; the result is a new reference or null with an
            // exception set.
            Some(instance) => unsafe {
                let method = PyMethod_New(slf.as_ptr(), instance.as_ptr());
                Ok(Bound::from_owned_ptr_or_err(slf.py(), method)?.unbind())
            },
        }
    }

    /// The breaker every call goes through.
    #[getter]
    fn circuit_breaker(&self, py: Python<'_>) -> Py<CircuitBreaker> {
        self.breaker.clone_ref(py)
    }

    /// Pickled by reference, as functions are: the module attribute named by `__qualname__`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(pyo3::intern!(slf.py(), "__qualname__"))
    }

    /// `<protected function fetch (CircuitBreaker 'data_api')>`.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let func = self.func.bind(py);
        let what = match func.getattr(pyo3::intern!(py, "__qualname__")) {
            Ok(qualname) => format!("function {qualname}"),
            Err(_) => func.repr()?.to_string(),
        };
        let name = self.breaker.bind(py).get().name.bind(py).repr()?;
        Ok(format!("<protected {what} (CircuitBreaker {name})>"))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.breaker)?;
        visit.call(&self.func)
    }
}
