//! `circuit_breaker._core`: the `CircuitBreaker` class, with the whole admit → call → record
//! path in Rust on top of `cb_core`.
//!
//! `call` is a vectorcall method of our own (see the `vectorcall` module); the rest are ordinary PyO3
//! methods. The `CircuitBreakerState` enum and the exception classes are Python
//! (`circuit_breaker/_types.py`: a real `Enum`, exceptions with a Python `__init__` that users
//! can subclass and pickle); this module looks them up once and keeps them.

mod announce;
mod args;
mod breaker;
mod fleet;
mod gc;
mod iso8601;
mod permit;
mod policy;
mod protected;
mod refs;
mod shared;
mod state;
mod status;
mod store;
mod vectorcall;

use pyo3::prelude::*;

/// `circuit_breaker._core`.
#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<breaker::CircuitBreaker>()?;
    vectorcall::install(&m.py().get_type::<breaker::CircuitBreaker>())?;
    m.add_class::<permit::Permit>()?;
    m.add_class::<protected::ProtectedFunction>()?;
    m.add_class::<shared::SharedMemory>()?;
    m.add_class::<fleet::RedisStore>()?;
    m.add_function(wrap_pyfunction!(vectorcall::_bind_call, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULTS", breaker::defaults(m.py())?)?;
    Ok(())
}
