//! `CircuitBreaker.call` as a vectorcall (`METH_FASTCALL | METH_KEYWORDS`) method.
//!
//! A `#[pymethods]` method with `*args, **kwargs` receives them packed into a tuple (and a
//! dict), and calling `func` with them goes through `PyObject_Call`. For a breaker that does
//! a few nanoseconds of work per call, packing and unpacking were most of the cost: two tuple
//! allocations per call. Here the arguments Python passed to `call` are handed on to `func` as
//! the very same array (`PyObject_Vectorcall`), so a CLOSED call allocates nothing.
//!
//! PyO3 has no attribute for "pass the raw vectorcall array through", so the method is a
//! `PyMethodDef` of our own, wrapped in PyO3's trampoline (which attaches the thread, catches
//! panics and turns a `PyErr` into a raised exception, exactly as for generated methods) and
//! installed on the class when the module is initialised ([`install`]). Only the unsafe
//! translation from raw pointers lives here; the logic is the safe `CircuitBreaker::call`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::breaker::CircuitBreaker;

/// The arguments after `func` of one call through a breaker, as they arrived.
pub(crate) enum CallArgs<'a, 'py> {
    /// Borrowed from the vectorcall array of `CircuitBreaker.call`: the positional arguments,
    /// then the values of the keywords named in `kwnames`.
    Vector {
        py: Python<'py>,
        values: &'a [*mut ffi::PyObject],
        positional: usize,
        /// The keyword names, or null.
        kwnames: *mut ffi::PyObject,
    },
    /// Packed by CPython for a `tp_call` (a decorated function, [`crate::ProtectedFunction`]).
    Packed { args: &'a Bound<'py, PyTuple>, kwargs: Option<&'a Bound<'py, PyDict>> },
}

impl<'py> CallArgs<'_, 'py> {
    /// `func(*args, **kwargs)`, without packing anything that is not packed yet.
    #[inline(always)]
    pub(crate) fn call(&self, func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match *self {
            // SAFETY: `values` holds `positional` arguments followed by one value per name in
            // `kwnames` (a tuple or null), all borrowed for the duration of this call, which
            // is the layout PyObject_Vectorcall takes. Its result is a new reference or null
            // with an exception set.
            CallArgs::Vector { py, values, positional, kwnames } => unsafe {
                let result = ffi::PyObject_Vectorcall(func.as_ptr(), values.as_ptr(), positional, kwnames);
                Bound::from_owned_ptr_or_err(py, result)
            },
            CallArgs::Packed { args, kwargs } => func.call(args, kwargs),
        }
    }

    /// The arguments as `(args, kwargs)`, for the cold paths that hand them to Python code
    /// (fallbacks, the awaitable wrapping a coroutine).
    pub(crate) fn packed(&self) -> PyResult<(Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>)> {
        let (py, values, positional, kwnames) = match *self {
            CallArgs::Vector { py, values, positional, kwnames } => (py, values, positional, kwnames),
            CallArgs::Packed { args, kwargs } => return Ok((args.clone(), kwargs.cloned())),
        };
        // SAFETY: every pointer in `values` is a valid borrowed reference during the call.
        let borrowed = |p: *mut ffi::PyObject| unsafe { Borrowed::from_ptr(py, p) };
        let args = PyTuple::new(py, values[..positional].iter().map(|&p| borrowed(p)))?;
        if kwnames.is_null() {
            return Ok((args, None));
        }
        // SAFETY: a non-null kwnames is a tuple of str, borrowed during the call.
        let names = unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() };
        let kwargs = PyDict::new(py);
        for (name, &value) in names.iter().zip(&values[positional..]) {
            kwargs.set_item(name, borrowed(value))?;
        }
        Ok((args, Some(kwargs)))
    }
}

/// The body behind the trampoline: raw pointers to safe types.
///
/// # Safety
/// Called only by CPython through [`CALL_DEF`]: `slf` is a `CircuitBreaker` (the method
/// descriptor checks the type before calling), `args` holds `nargs` positional arguments
/// followed by one value per name in `kwnames` (a tuple, or null).
unsafe fn call_entry(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // CPython passes a plain count here (method descriptors strip PY_VECTORCALL_ARGUMENTS_OFFSET).
    let nargs = nargs as usize;
    // SAFETY: a non-null kwnames is a tuple.
    let nkw = if kwnames.is_null() { 0 } else { unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize } };
    if nargs == 0 {
        return Err(missing_func());
    }
    // SAFETY: by the function's contract: `args` holds `nargs + nkw` borrowed references, `slf`
    // is a CircuitBreaker.
    let (all, slf) = unsafe {
        (std::slice::from_raw_parts(args, nargs + nkw), Borrowed::from_ptr(py, slf).cast_unchecked::<CircuitBreaker>())
    };
    // SAFETY: a borrowed reference from the array.
    let func = unsafe { Borrowed::from_ptr(py, all[0]) };
    let rest = CallArgs::Vector { py, values: &all[1..], positional: nargs - 1, kwnames };
    CircuitBreaker::call(&slf, &func, &rest).map(Py::into_ptr)
}

#[cold]
#[inline(never)]
fn missing_func() -> PyErr {
    pyo3::exceptions::PyTypeError::new_err("CircuitBreaker.call() missing 1 required positional argument: 'func'")
}

/// A `PyMethodDef` in a `static` (it holds raw pointers, which are not `Sync`; CPython only
/// reads it).
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is immutable and its pointers are to 'static data.
unsafe impl Sync for MethodDef {}

static CALL_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"call".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: pyo3::get_trampoline_function!(fastcall_cfunction_with_keywords, call_entry),
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    // The first lines are the signature `inspect.signature` reads.
    ml_doc: c"call($self, func, /, *args, **kwargs)\n--\n\n\
Runs ``func(*args, **kwargs)`` through the breaker and returns its value. If ``func`` returns a \
coroutine (an ``async def`` function), returns an awaitable that records the outcome when the \
coroutine finishes."
        .as_ptr(),
});

/// Puts `call` on `class`, as a method descriptor bound to it (so `CircuitBreaker.call(x, f)`
/// with `x` of another type raises `TypeError`, as for any method).
pub(crate) fn install(class: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
    let py = class.py();
    if !class.is_subclass_of::<CircuitBreaker>()? {
        return Err(pyo3::exceptions::PyTypeError::new_err("_bind_call() needs a subclass of _core.BreakerCore"));
    }
    // SAFETY: CALL_DEF is 'static and never written (CPython takes `*mut` but only reads);
    // the result is a new reference or null with an exception set.
    let descriptor = unsafe {
        let raw = ffi::PyDescr_NewMethod(class.as_type_ptr(), std::ptr::from_ref(&CALL_DEF.0).cast_mut());
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    class.setattr("call", descriptor)
}

/// `_core._bind_call(cls)`: gives a subclass its own `call` descriptor. CPython 3.11+
/// specializes a call site on a method descriptor only for instances of exactly the
/// descriptor's class, so the public class gets one of its own.
#[pyfunction]
pub(crate) fn _bind_call(class: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
    install(class)
}
