//! Python objects the binding looks up once and keeps: the state enum's members, the open
//! error and how to build it without running Python code, the logger, and the `_support`
//! helpers the call path hands work to.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Python objects looked up once: the enum members, the open error, `BaseException.__new__`
/// (to build the error without running a Python `__init__`) and the logger.
pub(crate) struct Refs {
    pub(crate) closed: Py<PyAny>,
    pub(crate) open: Py<PyAny>,
    pub(crate) half_open: Py<PyAny>,
    pub(crate) open_error: Py<PyAny>,
    /// `circuit_breaker.CircuitBreakerFullError`.
    pub(crate) full_error: Py<PyAny>,
    pub(crate) exception_new: Py<PyAny>,
    pub(crate) logger: Py<PyAny>,
    /// `circuit_breaker._support.record_when_done(permit, coroutine, args, kwargs)`.
    pub(crate) record_when_done: Py<PyAny>,
    /// `circuit_breaker._support.call_fallback(fallback, error, args, kwargs)`.
    pub(crate) call_fallback: Py<PyAny>,
    /// `inspect.iscoroutinefunction`.
    pub(crate) iscoroutinefunction: Py<PyAny>,
    /// `circuit_breaker._support.maybe_await(value)`: a coroutine that returns `value`, awaited
    /// if it is awaitable.
    pub(crate) maybe_await: Py<PyAny>,
    /// `circuit_breaker.SharedMemoryError`.
    pub(crate) shared_memory_error: Py<PyAny>,
    /// `circuit_breaker.RedisStoreError`.
    pub(crate) redis_store_error: Py<PyAny>,
}

pub(crate) static REFS: PyOnceLock<Refs> = PyOnceLock::new();

pub(crate) fn refs(py: Python<'_>) -> PyResult<&'static Refs> {
    REFS.get_or_try_init(py, || {
        let types = py.import("circuit_breaker._types")?;
        let state = types.getattr("CircuitBreakerState")?;
        Ok(Refs {
            closed: state.getattr("CLOSED")?.unbind(),
            open: state.getattr("OPEN")?.unbind(),
            half_open: state.getattr("HALF_OPEN")?.unbind(),
            open_error: types.getattr("CircuitBreakerOpenError")?.unbind(),
            full_error: types.getattr("CircuitBreakerFullError")?.unbind(),
            exception_new: py.get_type::<PyException>().getattr("__new__")?.unbind(),
            logger: py.import("logging")?.call_method1("getLogger", ("circuit_breaker",))?.unbind(),
            record_when_done: py.import("circuit_breaker._support")?.getattr("record_when_done")?.unbind(),
            call_fallback: py.import("circuit_breaker._support")?.getattr("call_fallback")?.unbind(),
            shared_memory_error: types.getattr("SharedMemoryError")?.unbind(),
            redis_store_error: types.getattr("RedisStoreError")?.unbind(),
            iscoroutinefunction: py.import("inspect")?.getattr("iscoroutinefunction")?.unbind(),
            maybe_await: py.import("circuit_breaker._support")?.getattr("maybe_await")?.unbind(),
        })
    })
}
