//! Host-wide breakers: the `SharedMemory` class, the `CIRCUIT_BREAKER_SHARED_MEMORY`
//! environment variable, and attaching a breaker to its slot.
//!
//! A breaker is placed by its `shared_memory` argument: omitted or `None`, the environment
//! decides; `False`, this process only; `True`, the region the environment names (or the
//! default one); a `SharedMemory`, that region; a path, the region at that path. Each process
//! maps each region once, however many breakers use it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

use cb_core::shared::MAX_CAPACITY;
use cb_core::{Config, Counters, RegionError, RegionOptions, SharedRegion};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

use crate::store::PyStore;

/// `1`/`true`/`yes`/`on` for the default region, a path for that region, or `0`/`false`/`no`/
/// `off`/empty (or unset) for none.
pub(crate) const ENV_REGION: &str = "CIRCUIT_BREAKER_SHARED_MEMORY";
/// The capacity of a region created through the environment (default 1024).
pub(crate) const ENV_CAPACITY: &str = "CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY";

/// The regions this process has mapped, by the path they were opened with.
static REGIONS: Mutex<Vec<(PathBuf, SharedRegion)>> = Mutex::new(Vec::new());

/// A shared-memory region: breakers made with it keep their state and counters in it, shared
/// by every process of the host that uses the same file.
///
/// `SharedMemory(path=None, *, capacity=1024, mode=0o600, allow_foreign=False)`: `path`
/// defaults to `$XDG_RUNTIME_DIR/circuit_breaker.region` when that directory is the user's own
/// and private, else `/dev/shm/circuit_breaker.<uid>`; `capacity` (slots, one per breaker name) and
/// `mode` apply when the file is created; `allow_foreign` accepts a file owned by another user
/// or writable by others. Opening it checks the file and raises `SharedMemoryError` if it
/// cannot be used.
#[pyclass(frozen, module = "circuit_breaker", name = "SharedMemory")]
pub(crate) struct SharedMemory {
    region: SharedRegion,
}

impl SharedMemory {
    pub(crate) fn new_for(region: SharedRegion) -> Self {
        SharedMemory { region }
    }
}

#[pymethods]
impl SharedMemory {
    #[new]
    #[pyo3(signature = (path = None, *, capacity = None, mode = None, allow_foreign = false))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        capacity: Option<&Bound<'_, PyAny>>,
        mode: Option<&Bound<'_, PyAny>>,
        allow_foreign: bool,
    ) -> PyResult<Self> {
        let mut options = RegionOptions::new().allow_foreign(allow_foreign);
        if let Some(path) = path {
            options = options.path(path);
        }
        if let Some(capacity) = capacity {
            options = options.capacity(usize::try_from(crate::args::count_arg("capacity", capacity)?).unwrap_or(usize::MAX));
        }
        if let Some(mode) = mode {
            options = options.mode(whole_number("mode", mode)? as u32);
        }
        Ok(SharedMemory { region: open(py, options)? })
    }

    /// The region the environment names (`CIRCUIT_BREAKER_SHARED_MEMORY`), or None.
    #[staticmethod]
    fn from_environment(py: Python<'_>) -> PyResult<Option<SharedMemory>> {
        Ok(from_environment(py)?.map(|region| SharedMemory { region }))
    }

    /// The file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.region.path().to_owned()
    }

    /// The number of slots (breaker names) the region holds.
    #[getter]
    fn capacity(&self) -> usize {
        self.region.capacity()
    }

    /// True once the file was cut short under this process: its breakers then run on a private
    /// copy (their status says `degraded`); open the path again to join the region that
    /// replaces it.
    #[getter]
    fn lost(&self) -> bool {
        self.region.is_lost()
    }

    /// The names of the breakers in the region.
    fn names(&self) -> PyResult<Vec<String>> {
        self.region.names().map_err(|e| region_error(e, None))
    }

    fn __repr__(&self) -> String {
        format!("SharedMemory({:?}, capacity={})", self.region.path().display().to_string(), self.region.capacity())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<SharedMemory>().is_ok_and(|o| o.get().region.path() == self.region.path())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.region.path().hash(&mut h);
        h.finish()
    }
}

fn whole_number(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!("{name} must be an int, got {}", value.get_type().name()?)));
    }
    value.extract::<u64>().map_err(|_| PyValueError::new_err(format!("{name} must not be negative, got {value}")))
}

/// Opens the region at `options`' path, or returns the one this process already mapped (unless
/// the file at the path was replaced since: then the new one, like any other process gets).
///
/// `REGIONS` is locked twice, each time for a lookup or an insert only: opening the file waits
/// on its `flock` with the GIL released, and a thread holding a Rust lock there while another
/// waited for that lock holding the GIL would freeze the interpreter. Two threads opening the
/// same path at once both map it; the first to come back is kept.
fn open(py: Python<'_>, options: RegionOptions) -> PyResult<SharedRegion> {
    let path = options.get_path();
    let found = mapped(&mut regions(), path);
    if let Some(region) = found {
        return Ok(region);
    }
    let opened = py.detach(|| SharedRegion::open(&options)).map_err(|e| region_error(e, None))?;
    let why = opened.recreated().map(str::to_owned);
    // A thread that mapped the path meanwhile wins; ours is unmapped (no Python runs in a drop).
    let existing = {
        let mut regions = regions();
        let existing = mapped(&mut regions, path);
        if existing.is_none() {
            regions.push((path.to_owned(), opened.clone()));
        }
        existing
    };
    if let Some(region) = existing {
        return Ok(region);
    }
    if let Some(why) = why {
        crate::announce::log(py, "warning", ("circuit_breaker shared memory: %s", why));
    }
    Ok(opened)
}

/// `REGIONS`, locked. Callers hold it for a scan and a push only: no Python code runs and the
/// GIL is never released under it.
fn regions() -> std::sync::MutexGuard<'static, Vec<(PathBuf, SharedRegion)>> {
    REGIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The region this process mapped at `path`, if the path still names its file (`is_replaced`
/// is one stat; a region forgotten here is only unmapped).
fn mapped(regions: &mut Vec<(PathBuf, SharedRegion)>, path: &std::path::Path) -> Option<SharedRegion> {
    regions.retain(|(_, region)| !region.is_replaced());
    regions.iter().find(|(p, _)| p == path).map(|(_, region)| region.clone())
}

/// The region `CIRCUIT_BREAKER_SHARED_MEMORY` names, opened, or None.
fn from_environment(py: Python<'_>) -> PyResult<Option<SharedRegion>> {
    let Some(value) = std::env::var_os(ENV_REGION) else { return Ok(None) };
    let flag = value.to_str().map(|v| v.trim().to_ascii_lowercase());
    let mut options = RegionOptions::new();
    match flag.as_deref() {
        Some("" | "0" | "false" | "no" | "off") => return Ok(None),
        Some("1" | "true" | "yes" | "on") => {}
        _ => options = options.path(PathBuf::from(value.clone())),
    }
    if let Some(capacity) = std::env::var_os(ENV_CAPACITY) {
        let parsed = capacity.to_str().and_then(|c| c.trim().parse::<usize>().ok()).filter(|c| (1..=MAX_CAPACITY).contains(c));
        let Some(capacity) = parsed else {
            return Err(PyValueError::new_err(format!(
                "{ENV_CAPACITY} must be a whole number in 1..={MAX_CAPACITY}, got {capacity:?}"
            )));
        };
        options = options.capacity(capacity);
    }
    open(py, options).map(Some).map_err(|e| with_context(py, e, &value))
}

fn with_context(py: Python<'_>, err: PyErr, value: &OsString) -> PyErr {
    let message = format!("{ENV_REGION}={value:?}: {}", err.value(py));
    PyErr::from_type(err.get_type(py), message)
}

/// Where a new breaker's word lives, from its `shared_memory` argument (`None` when omitted).
pub(crate) fn placement(py: Python<'_>, spec: Option<&Bound<'_, PyAny>>) -> PyResult<Option<SharedRegion>> {
    let Some(spec) = spec.filter(|s| !s.is_none()) else { return from_environment(py) };
    if let Ok(flag) = spec.cast::<PyBool>() {
        return if flag.is_true() {
            from_environment(py)?.map_or_else(|| open(py, RegionOptions::new()), Ok).map(Some)
        } else {
            Ok(None)
        };
    }
    if let Ok(shared) = spec.cast::<SharedMemory>() {
        return Ok(Some(shared.get().region.clone()));
    }
    match spec.extract::<PathBuf>() {
        Ok(path) => open(py, RegionOptions::new().path(path)).map(Some),
        Err(_) => Err(PyTypeError::new_err(format!(
            "shared_memory must be a bool, a SharedMemory, a path or None, got {}",
            spec.get_type().name()?
        ))),
    }
}

/// A breaker's word, counters and rate window: its slot in `region` (claimed if new), or this
/// process's.
pub(crate) fn attach(
    py: Python<'_>,
    region: Option<&SharedRegion>,
    name: &str,
    config: &Config,
) -> PyResult<(PyStore, Counters, Option<cb_core::SlotWindow>)> {
    let Some(region) = region else {
        return Ok((PyStore::Local(cb_core::LocalWord::default()), Counters::default(), None));
    };
    let slot = py.detach(|| region.attach(name, config)).map_err(|e| region_error(e, Some(name)))?;
    if let Some(theirs) = slot.config_mismatch() {
        let message = "CircuitBreaker '%s' is shared through %s with processes configured differently \
            (theirs: %s; ours: %s); each process applies its own settings to the shared state";
        let (theirs, ours) = (theirs.describe(), config.describe());
        crate::announce::log(py, "warning", (message, name, region.path().display().to_string(), theirs, ours));
    }
    if let Some(what) = slot.repaired() {
        crate::announce::log(py, "warning", ("CircuitBreaker '%s' in %s: %s", name, region.path().display().to_string(), what));
    }
    Ok((PyStore::Shared(slot.word()), slot.counters(), Some(slot.window())))
}

/// A region's error as Python's: bad arguments are `ValueError`, everything about the file a
/// `SharedMemoryError` (an `OSError` and a `CircuitBreakerError`).
pub(crate) fn region_error(err: RegionError, name: Option<&str>) -> PyErr {
    let message = match name {
        Some(name) => format!("CircuitBreaker '{name}': {err}"),
        None => err.to_string(),
    };
    match err {
        RegionError::BadName { .. } | RegionError::BadOption { .. } | RegionError::Config(_) => {
            PyValueError::new_err(message)
        }
        _ => Python::attach(|py| match crate::refs::refs(py) {
            Ok(r) => PyErr::from_type(r.shared_memory_error.bind(py).cast::<pyo3::types::PyType>().map_or_else(
                |_| py.get_type::<pyo3::exceptions::PyOSError>(),
                |t| t.clone(),
            ), message),
            Err(e) => e,
        }),
    }
}
