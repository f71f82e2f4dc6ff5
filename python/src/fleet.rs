//! Fleet-wide breakers: the `RedisStore` class, the `CIRCUIT_BREAKER_REDIS_URL` environment
//! variable, and attaching a breaker to its word in Redis.
//!
//! A breaker is placed by its `redis` argument: omitted or `None`, the environment decides;
//! `False`, not in Redis; `True`, the Redis the environment names (an error if it names none);
//! a `RedisStore`, that one; a string, the Redis at that URL. Each process opens one connection
//! handle per distinct store (URL and options), however many breakers use it.

use std::sync::Mutex;

use cb_core::{Config, Counters, FleetEvent, RedisError, RedisFleet, RedisOptions, WeakRedisFleet};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString, PyType};

use crate::args::seconds_arg;
use crate::store::PyStore;

/// A `redis://` or `rediss://` URL: every breaker made without a `redis` argument is shared
/// through it.
pub(crate) const ENV_URL: &str = "CIRCUIT_BREAKER_REDIS_URL";

/// The fleet handles this process has opened, by URL and options, held weakly: a store that no
/// `RedisStore` and no breaker uses any more is closed (its thread ends, its connections close)
/// instead of living as long as the process.
static FLEETS: Mutex<Vec<(String, WeakRedisFleet)>> = Mutex::new(Vec::new());

/// Where breakers are shared by every host of a fleet: a Redis server.
///
/// `RedisStore(url, *, prefix='circuit_breaker:', ttl_seconds=86400, timeout_seconds=0.05,
/// refresh_seconds=1.0)`. Raises `ValueError` for a URL or option that cannot work and
/// `RedisStoreError` when Redis refuses the credentials or a permission; an unreachable Redis
/// is not an error (the breakers work on this host's copy until it answers).
#[pyclass(frozen, module = "circuit_breaker", name = "RedisStore")]
pub(crate) struct RedisStore {
    pub(crate) fleet: RedisFleet,
}

#[pymethods]
impl RedisStore {
    #[new]
    #[pyo3(signature = (url, *, prefix = None, ttl_seconds = None, timeout_seconds = None, refresh_seconds = None))]
    fn new(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        prefix: Option<&Bound<'_, PyAny>>,
        ttl_seconds: Option<&Bound<'_, PyAny>>,
        timeout_seconds: Option<&Bound<'_, PyAny>>,
        refresh_seconds: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let url = string_arg("url", url)?;
        let mut options = RedisOptions::new(url);
        if let Some(prefix) = prefix {
            options = options.prefix(string_arg("prefix", prefix)?);
        }
        if let Some(v) = ttl_seconds {
            options = options.ttl(seconds_arg("ttl_seconds", v)?);
        }
        if let Some(v) = timeout_seconds {
            options = options.timeout(seconds_arg("timeout_seconds", v)?);
        }
        if let Some(v) = refresh_seconds {
            options = options.refresh(seconds_arg("refresh_seconds", v)?);
        }
        Ok(RedisStore { fleet: open(py, options)? })
    }

    /// The store `CIRCUIT_BREAKER_REDIS_URL` names, or None.
    #[staticmethod]
    fn from_environment(py: Python<'_>) -> PyResult<Option<RedisStore>> {
        Ok(from_environment(py)?.map(|fleet| RedisStore { fleet }))
    }

    /// The URL, with any password replaced by `***`.
    #[getter]
    fn url(&self) -> String {
        self.fleet.options().redacted_url()
    }

    /// The prefix of every key and channel.
    #[getter]
    fn prefix(&self) -> String {
        self.fleet.options().get_prefix().to_string()
    }

    /// Whether Redis answered the last operation (False while this host works on its own copy).
    #[getter]
    fn connected(&self) -> bool {
        self.fleet.is_connected()
    }

    /// How many outages this process has ridden out on this store.
    #[getter]
    fn outages(&self) -> u64 {
        self.fleet.outages()
    }

    fn __repr__(&self) -> String {
        format!("RedisStore({:?}, prefix={:?})", self.url(), self.prefix())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<RedisStore>().is_ok_and(|o| identity(o.get().fleet.options()) == identity(self.fleet.options()))
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        identity(self.fleet.options()).hash(&mut h);
        h.finish()
    }
}

fn string_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Err(PyTypeError::new_err(format!("{name} must be a str, got {}", value.get_type().name()?))),
    }
}

fn identity(options: &RedisOptions) -> String {
    format!("{options:?}")
}

/// Opens a fleet handle for `options`, or returns the one this process already opened.
///
/// `FLEETS` is locked for a lookup or an insert only, never across the connect (made with the
/// GIL released): a thread waiting there holding the GIL would otherwise freeze the interpreter.
/// Two threads opening the same store at once both connect; the first to come back is kept.
fn open(py: Python<'_>, options: RedisOptions) -> PyResult<RedisFleet> {
    let key = identity(&options);
    let found = cached(&mut fleets(), &key);
    if let Some(fleet) = found {
        return Ok(fleet);
    }
    let opened = py.detach(|| RedisFleet::open(options)).map_err(|e| redis_error(py, e, None))?;
    let existing = {
        let mut fleets = fleets();
        let existing = cached(&mut fleets, &key);
        if existing.is_none() {
            fleets.push((key, opened.downgrade()));
        }
        existing
    };
    if let Some(fleet) = existing {
        // Ours is dropped unused (its watcher ends with it), outside the lock.
        return Ok(fleet);
    }
    let url = opened.options().redacted_url();
    if !opened.is_connected() {
        crate::announce::log(
            py,
            "warning",
            ("circuit_breaker: Redis at %s is unreachable; breakers shared through it work on this host's own state until it answers", url.clone()),
        );
    }
    opened.on_event(move |event| log_event(&url, event));
    Ok(opened)
}

/// `FLEETS`, locked. Callers hold it for a scan and a push only: no Python code runs and the
/// GIL is never released under it.
fn fleets() -> std::sync::MutexGuard<'static, Vec<(String, WeakRedisFleet)>> {
    FLEETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle this process opened for the store `key` names, if anything still uses it; the
/// entries of closed stores are forgotten.
fn cached(fleets: &mut Vec<(String, WeakRedisFleet)>, key: &str) -> Option<RedisFleet> {
    // The last handle of a store may be dropped here: that closes sockets only (no Python code
    // runs, the GIL is kept).
    fleets.retain(|(_, fleet)| fleet.upgrade().is_some());
    fleets.iter().find(|(k, _)| k == key).and_then(|(_, fleet)| fleet.upgrade())
}

/// Logs a fleet event on the `circuit_breaker` logger. It is logged from a thread of its own:
/// the event may come from a thread that holds a breaker's lock without the GIL, and waiting
/// for the GIL there could deadlock with a thread holding the GIL and waiting for that lock.
/// Events are rare (one per outage), so a thread each costs nothing that matters.
fn log_event(url: &str, event: &FleetEvent) {
    let (level, message, args): (&str, &str, Vec<String>) = match event {
        FleetEvent::Outage { reason } => (
            "warning",
            "circuit_breaker: Redis at %s stopped answering (%s); breakers shared through it work on this host's own state until it is back",
            vec![url.to_string(), reason.clone()],
        ),
        FleetEvent::Recovered { after } => (
            "warning",
            "circuit_breaker: Redis at %s answers again after %s s; breakers resynced from it",
            vec![url.to_string(), format!("{:.1}", after.as_secs_f64())],
        ),
        FleetEvent::Repaired { name, found } => (
            "warning",
            "circuit_breaker: the Redis key of CircuitBreaker '%s' held %r, which is not a breaker state; rewritten from this host's",
            vec![name.clone(), found.clone()],
        ),
        FleetEvent::Denied { reason } => (
            "error",
            "circuit_breaker: Redis at %s refuses the store (%s); breakers shared through it work on this host's own state until that is fixed",
            vec![url.to_string(), reason.clone()],
        ),
        _ => return,
    };
    let (level, message) = (level.to_string(), message.to_string());
    let _ = std::thread::Builder::new().name("cb-redis-log".into()).spawn(move || {
        Python::try_attach(|py| {
            let args = pyo3::types::PyTuple::new(py, std::iter::once(message).chain(args).collect::<Vec<_>>());
            if let Ok(args) = args {
                crate::announce::log(py, &level, args);
            }
        });
    });
}

/// The store `CIRCUIT_BREAKER_REDIS_URL` names, opened, or None.
fn from_environment(py: Python<'_>) -> PyResult<Option<RedisFleet>> {
    let Some(value) = std::env::var_os(ENV_URL) else { return Ok(None) };
    let Some(url) = value.to_str().map(str::trim).filter(|u| !u.is_empty()) else {
        if value.is_empty() {
            return Ok(None);
        }
        return Err(PyValueError::new_err(format!("{ENV_URL} must be a redis:// or rediss:// URL, got {value:?}")));
    };
    open(py, RedisOptions::new(url)).map(Some).map_err(|err| {
        let message = format!("{ENV_URL}: {}", err.value(py));
        PyErr::from_type(err.get_type(py), message)
    })
}

/// The Redis a new breaker's word lives in, from its `redis` argument (`None` when omitted).
pub(crate) fn placement(py: Python<'_>, spec: Option<&Bound<'_, PyAny>>) -> PyResult<Option<RedisFleet>> {
    let Some(spec) = spec.filter(|s| !s.is_none()) else { return from_environment(py) };
    if let Ok(flag) = spec.cast::<PyBool>() {
        if !flag.is_true() {
            return Ok(None);
        }
        return match from_environment(py)? {
            Some(fleet) => Ok(Some(fleet)),
            None => Err(PyValueError::new_err(format!("redis=True needs {ENV_URL} to name the Redis to use"))),
        };
    }
    if let Ok(store) = spec.cast::<RedisStore>() {
        return Ok(Some(store.get().fleet.clone()));
    }
    if let Ok(url) = spec.cast::<PyString>() {
        return open(py, RedisOptions::new(url.to_string())).map(Some);
    }
    Err(PyTypeError::new_err(format!(
        "redis must be a bool, a RedisStore, a URL or None, got {}",
        spec.get_type().name()?
    )))
}

/// A breaker's word (in Redis) and counters (this process's own).
pub(crate) fn attach(py: Python<'_>, fleet: &RedisFleet, name: &str, config: &Config) -> PyResult<(PyStore, Counters)> {
    let slot = py.detach(|| fleet.attach(name, config)).map_err(|e| redis_error(py, e, Some(name)))?;
    if let Some(theirs) = slot.config_mismatch() {
        let message = "CircuitBreaker '%s' is shared through Redis at %s with hosts configured differently \
            (last attached: %s); each host applies its own settings to the shared state";
        crate::announce::log(py, "warning", (message, name, fleet.options().redacted_url(), theirs.to_string()));
    }
    Ok((PyStore::Redis(slot.into_word()), Counters::default()))
}

/// A store's error as Python's: what the arguments got wrong is `ValueError`; Redis refusing
/// the credentials or a permission is `RedisStoreError`.
fn redis_error(py: Python<'_>, err: RedisError, name: Option<&str>) -> PyErr {
    let message = match name {
        Some(name) => format!("CircuitBreaker '{name}': {err}"),
        None => err.to_string(),
    };
    match err {
        RedisError::Denied { .. } => match crate::refs::refs(py) {
            Ok(r) => match r.redis_store_error.bind(py).cast::<PyType>() {
                Ok(t) => PyErr::from_type(t.clone(), message),
                Err(e) => e.into(),
            },
            Err(e) => e,
        },
        _ => PyValueError::new_err(message),
    }
}
