//! The `CircuitBreaker` class: construction, the call path (`call` reaches it through
//! [`crate::vectorcall`]), manual control and getters. The status and metrics dicts are built in
//! [`crate::status`].

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use std::sync::atomic::Ordering;

use cb_core::{Config, Outcome, State, Ticket};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyWeakrefReference};
use pyo3::PyTraverseError;
use pyo3::IntoPyObjectExt;

use crate::announce::{on_transition, Listeners};
use crate::args::{config_error, count_arg, fraction_arg, not_callable, seconds_arg, Arg};
use crate::permit::Permit;
use crate::policy::Policy;
use crate::refs::refs;
use crate::state::{state_member, state_name};
use crate::vectorcall::CallArgs;
use crate::store::PyClock;
use crate::{fleet, shared, status, store};

/// The constructor's defaults, from the core's: `circuit_breaker.CircuitBreaker` builds its
/// signature from them, so `help()` and `inspect.signature` show the values that apply.
pub(crate) fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let c = Config::default();
    let d = PyDict::new(py);
    d.set_item("failure_threshold", c.failure_threshold)?;
    d.set_item("recovery_timeout_seconds", c.recovery_timeout.as_secs())?;
    d.set_item("success_threshold", c.success_threshold)?;
    d.set_item("half_open_max_calls", c.half_open_max_calls)?;
    d.set_item("probe_timeout_seconds", c.probe_timeout.as_secs())?;
    Ok(d)
}

/// A circuit breaker protecting one dependency. See the package documentation.
#[pyclass(frozen, subclass, weakref, module = "circuit_breaker._core", name = "BreakerCore")]
pub(crate) struct CircuitBreaker {
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) policy: Policy,
    /// The exception of the failure that last opened the breaker (for the open error). Locked
    /// for a swap or a clone_ref only: the value replaced is dropped after the unlock (its
    /// `__del__` may release the GIL), and no Python code runs under the lock.
    pub(crate) last_failure: Mutex<Option<Py<PyAny>>>,
    pub(crate) name: Py<PyString>,
    /// `recovery_timeout_seconds` exactly as given (an int stays an int in the status).
    pub(crate) recovery_timeout_seconds: Py<PyAny>,
    pub(crate) inner: store::Inner,
    /// The shared-memory region its word and counters live in, if any.
    pub(crate) region: Option<cb_core::SharedRegion>,
    /// The Redis its word lives in, if any (its counters are then this process's own).
    pub(crate) fleet: Option<cb_core::RedisFleet>,
    /// `timeout_seconds`: the longest a coroutine call may take (None: no limit).
    pub(crate) timeout: Option<f64>,
    pub(crate) created: SystemTime,
}

impl CircuitBreaker {
    /// `call(func, /, *args, **kwargs)`: runs `func` through the breaker and returns its value.
    /// If `func` returns a coroutine (an `async def` function), returns an awaitable that
    /// records the outcome when the coroutine finishes. Python reaches it through
    /// [`vectorcall`], which hands over the arguments unpacked.
    #[inline(always)]
    pub(crate) fn call<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>, rest: &CallArgs<'_, 'py>) -> PyResult<Py<PyAny>> {
        let this = slf.get();
        if !func.is_callable() {
            return Err(not_callable(func));
        }
        let admitted = if this.inner.store().is_remote() {
            // In Redis: the two hot admissions read the mirror; one that writes (a probe) is
            // made without the GIL, or off the event loop.
            match this.inner.admit_without_writing() {
                Some(admitted) => admitted,
                None => return Self::call_with_remote_admission(slf, func, rest),
            }
        } else {
            this.inner.admit_ticket()
        };
        let ticket = match admitted {
            Ok(ticket) => ticket,
            Err(rejected) => return Self::rejected_call(slf, rejected, func, rest),
        };
        Self::run_admitted(slf, ticket, func, rest)
    }

    /// `call` after admission: runs `func` and records its outcome.
    #[inline(always)]
    fn run_admitted<'py>(slf: &Bound<'py, Self>, ticket: Ticket, func: &Bound<'py, PyAny>, rest: &CallArgs<'_, 'py>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        // From here the ticket is recorded exactly once (nothing below panics: PyO3 turns
        // Python errors into values).
        match rest.call(func) {
            Ok(value) => {
                // An exact type compare (coroutine objects cannot be subclassed); pyo3-ffi's
                // `PyCoro_CheckExact` calls `PyType_IsSubtype` (24 instructions a call).
                if value.get_type_ptr() == &raw mut pyo3::ffi::PyCoro_Type {
                    return Self::started_coroutine(slf, ticket, value, rest);
                }
                if this.policy.failure_predicate.get().is_none() {
                    this.record(py, ticket, Outcome::Success);
                    return Ok(value.unbind());
                }
                this.returned_with_policy(py, ticket, value, rest)
            }
            Err(err) => this.raised(py, ticket, err, rest),
        }
    }

    /// `call` on a breaker in Redis that may admit a probe, which writes to Redis. An `async
    /// def` function is handed to `call_async`, which admits on a worker thread (the caller is
    /// an event loop: it must not wait on the network); anything else is admitted without
    /// holding the GIL.
    #[cold]
    #[inline(never)]
    fn call_with_remote_admission<'py>(slf: &Bound<'py, Self>, func: &Bound<'py, PyAny>, rest: &CallArgs<'_, 'py>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if refs(py)?.iscoroutinefunction.bind(py).call1((func,))?.is_truthy()? {
            let (args, kwargs) = rest.packed()?;
            let args = pyo3::types::PyTuple::new(py, std::iter::once(func.clone()).chain(args.iter()).collect::<Vec<_>>())?;
            return Ok(slf.call_method(pyo3::intern!(py, "call_async"), args, kwargs.as_ref())?.unbind());
        }
        match slf.get().admit(py) {
            Ok(ticket) => Self::run_admitted(slf, ticket, func, rest),
            Err(rejected) => Self::rejected_call(slf, rejected, func, rest),
        }
    }

    /// Admits one call. Only a breaker in Redis that may admit a probe writes to Redis here;
    /// it lets other Python threads run while it waits on the network.
    #[inline(always)]
    pub(crate) fn admit(&self, py: Python<'_>) -> Result<Ticket, cb_core::Rejected> {
        if self.inner.store().is_remote() {
            return match self.inner.admit_without_writing() {
                Some(admitted) => admitted,
                None => self.admit_detached(py),
            };
        }
        self.inner.admit_ticket()
    }

    #[cold]
    #[inline(never)]
    fn admit_detached(&self, py: Python<'_>) -> Result<Ticket, cb_core::Rejected> {
        py.detach(|| self.inner.admit_ticket())
    }

    /// Records a call's outcome; as `admit`, without holding the GIL if it writes to Redis.
    #[inline(always)]
    pub(crate) fn record(&self, py: Python<'_>, ticket: Ticket, outcome: Outcome) -> Option<cb_core::Transition> {
        if self.inner.store().record_is_remote(outcome) {
            return self.record_detached(py, ticket, outcome);
        }
        self.inner.record(ticket, outcome)
    }

    #[cold]
    #[inline(never)]
    fn record_detached(&self, py: Python<'_>, ticket: Ticket, outcome: Outcome) -> Option<cb_core::Transition> {
        py.detach(|| self.inner.record(ticket, outcome))
    }

    /// Runs a manual control (`reset`, `force_open`, `disable`), without holding the GIL when
    /// it writes to Redis.
    fn control(&self, py: Python<'_>, op: impl FnOnce(&store::Inner) + Send) {
        if self.inner.store().redis().is_some() {
            py.detach(|| op(&self.inner));
        } else {
            op(&self.inner);
        }
    }

    pub(crate) fn rejection(slf: &Bound<'_, Self>, rejected: cb_core::Rejected) -> PyErr {
        let py = slf.py();
        let this = slf.get();
        let build = || -> PyResult<PyErr> {
            let r = refs(py)?;
            if let (Some(in_flight), Some(limit)) = (rejected.in_flight(), rejected.limit()) {
                // Full: the state it was in (CLOSED or HALF_OPEN), the count and the limit.
                let state = match rejected.state() {
                    State::HalfOpen => &r.half_open,
                    _ => &r.closed,
                };
                let exc = r.exception_new.bind(py).call1((
                    r.full_error.bind(py),
                    this.name.bind(py),
                    0.0,
                    state.bind(py),
                    slf,
                    in_flight,
                    limit,
                ))?;
                return Ok(PyErr::from_value(exc));
            }
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

    pub(crate) fn state(&self) -> State {
        self.inner.state()
    }

    /// `call` was rejected: the fallback's result, or the open error. The caller of an `async
    /// def` function awaits what `call` returns, so then the fallback's result comes as an
    /// awaitable too (awaiting it if it is one itself).
    #[cold]
    #[inline(never)]
    pub(crate) fn rejected_call(
        slf: &Bound<'_, Self>,
        rejected: cb_core::Rejected,
        func: &Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let error = Self::rejection(slf, rejected);
        let Some(fallback) = this.policy.fallback_after_rejection() else { return Err(error) };
        let result = this.call_fallback(py, fallback, error.value(py), rest)?;
        let r = refs(py)?;
        if r.iscoroutinefunction.bind(py).call1((func,))?.is_truthy()? {
            return Ok(r.maybe_await.bind(py).call1((result,))?.unbind());
        }
        Ok(result)
    }

    /// `call` started a coroutine: the outcome comes when it is awaited, so hand back an
    /// awaitable that owns the slot.
    #[cold]
    #[inline(never)]
    pub(crate) fn started_coroutine(
        slf: &Bound<'_, Self>,
        ticket: Ticket,
        coroutine: Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (args, kwargs) = rest.packed()?;
        let permit = Permit::new(slf.clone().unbind(), ticket);
        Ok(refs(py)?.record_when_done.bind(py).call1((permit, coroutine, args, kwargs))?.unbind())
    }

    /// `call` returned and a `failure_predicate` is set: classify, maybe fall back.
    #[inline(never)]
    pub(crate) fn returned_with_policy(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        value: Bound<'_, PyAny>,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let outcome = self.policy.outcome_of_value(py, self.name.bind(py), &value);
        self.finish(py, ticket, outcome, None);
        match self.policy.fallback_after(outcome) {
            Some(fallback) => self.call_fallback(py, fallback, py.None().bind(py), rest),
            None => Ok(value.unbind()),
        }
    }

    /// `call` raised: classify (Exception subclasses are the dependency failing unless the
    /// policy says otherwise; other BaseExceptions — KeyboardInterrupt, SystemExit,
    /// GeneratorExit, CancelledError — say nothing about it and count as neither), maybe fall
    /// back, else propagate the very same exception.
    #[inline(never)]
    pub(crate) fn raised(
        &self,
        py: Python<'_>,
        ticket: Ticket,
        err: PyErr,
        rest: &CallArgs<'_, '_>,
    ) -> PyResult<Py<PyAny>> {
        let error = err.value(py);
        let outcome = self.policy.outcome_of_error(py, self.name.bind(py), error);
        self.finish(py, ticket, outcome, Some(error));
        match self.policy.fallback_after(outcome) {
            Some(fallback) => self.call_fallback(py, fallback, error, rest),
            None => Err(err),
        }
    }

    /// Calls `fallback(*args, **kwargs)` while `error` is being handled, so the fallback sees
    /// it as `sys.exc_info()` and any error it raises chains to it.
    pub(crate) fn call_fallback(
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




    /// Records `outcome` for a finished call and remembers a failure that opened the breaker.
    #[inline]
    pub(crate) fn finish(&self, py: Python<'_>, ticket: Ticket, outcome: Outcome, error: Option<&Bound<'_, PyAny>>) {
        let transition = self.record(py, ticket, outcome);
        // Only the outcome whose CAS opened the breaker is "the failure that opened it"; a stale
        // failure reported while it is already open changes nothing. A failure_predicate
        // failure has no exception: it opens with last_failure None.
        if transition.is_some_and(|t| t.to == State::Open) {
            self.set_last_failure(error.map(|e| e.clone().unbind()));
        }
    }

    fn set_last_failure(&self, error: Option<Py<PyAny>>) {
        // Lock held for a swap only: the exception it held is dropped after the unlock, because
        // dropping it may run a `__del__` that releases the GIL, and a thread waiting for this
        // lock with the GIL held would then deadlock with us.
        let old = std::mem::replace(&mut *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()), error);
        drop(old);
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
        probe_timeout_seconds = Arg::Omitted, shared_memory = None, redis = None,
        failure_rate_threshold = None, minimum_calls = None, window_calls = None,
        window_seconds = None, slow_call_seconds = None, slow_call_rate_threshold = None,
        timeout_seconds = None, max_concurrent_calls = None,
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
        redis: Option<&Bound<'py, PyAny>>,
        failure_rate_threshold: Option<&Bound<'py, PyAny>>,
        minimum_calls: Option<&Bound<'py, PyAny>>,
        window_calls: Option<&Bound<'py, PyAny>>,
        window_seconds: Option<&Bound<'py, PyAny>>,
        slow_call_seconds: Option<&Bound<'py, PyAny>>,
        slow_call_rate_threshold: Option<&Bound<'py, PyAny>>,
        timeout_seconds: Option<&Bound<'py, PyAny>>,
        max_concurrent_calls: Option<&Bound<'py, PyAny>>,
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
        // Types here; every range once, in the core (Config::limits).
        match failure_threshold.given() {
            // None: no consecutive-failure trip; the rate policies decide (checked below).
            Some(v) if v.is_none() => config.consecutive_failures = false,
            Some(v) => config.failure_threshold = count_arg("failure_threshold", v)?,
            None => {}
        }
        if let Some(v) = success_threshold.given() {
            config.success_threshold = count_arg("success_threshold", v)?;
        }
        if let Some(v) = half_open_max_calls.given() {
            config.half_open_max_calls = count_arg("half_open_max_calls", v)?;
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
        fn set<'a, 'py>(v: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
            v.filter(|v| !v.is_none())
        }
        if let Some(v) = set(failure_rate_threshold) {
            config.failure_rate_threshold = Some(fraction_arg("failure_rate_threshold", v)?);
        }
        if let Some(v) = set(slow_call_rate_threshold) {
            config.slow_call_rate_threshold = Some(fraction_arg("slow_call_rate_threshold", v)?);
        }
        if let Some(v) = set(slow_call_seconds) {
            config.slow_call_duration = Some(seconds_arg("slow_call_seconds", v)?);
        }
        match (set(window_calls), set(window_seconds)) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err("give window_calls (the last N calls) or window_seconds (the last T seconds), not both"));
            }
            (Some(n), None) => config.sliding_window = cb_core::SlidingWindow::Calls(count_arg("window_calls", n)?),
            (None, Some(t)) => config.sliding_window = cb_core::SlidingWindow::Time(seconds_arg("window_seconds", t)?),
            (None, None) => {}
        }
        match set(minimum_calls) {
            Some(v) => config.minimum_calls = count_arg("minimum_calls", v)?,
            // Left out: 100, or the whole window if it holds fewer calls.
            None => {
                if let cb_core::SlidingWindow::Calls(n) = config.sliding_window {
                    config.minimum_calls = config.minimum_calls.min(n.max(1));
                }
            }
        }
        if let Some(v) = set(max_concurrent_calls) {
            config.max_concurrent_calls = Some(count_arg("max_concurrent_calls", v)?);
        }
        let timeout = match set(timeout_seconds) {
            Some(v) => {
                let d = seconds_arg("timeout_seconds", v)?;
                if d.is_zero() {
                    return Err(PyValueError::new_err(format!("timeout_seconds must be greater than 0, got {v}")));
                }
                Some(d.as_secs_f64())
            }
            None => None,
        };
        let given: Vec<(&str, &Bound<'_, PyAny>)> = [
            ("failure_rate_threshold", set(failure_rate_threshold)),
            ("minimum_calls", set(minimum_calls)),
            ("window_calls", set(window_calls)),
            ("window_seconds", set(window_seconds)),
            ("slow_call_seconds", set(slow_call_seconds)),
            ("slow_call_rate_threshold", set(slow_call_rate_threshold)),
            ("failure_threshold", failure_threshold.given()),
            ("success_threshold", success_threshold.given()),
            ("half_open_max_calls", half_open_max_calls.given()),
            ("recovery_timeout_seconds", recovery_timeout_seconds.given()),
            ("probe_timeout_seconds", probe_timeout_seconds.given()),
            ("max_concurrent_calls", set(max_concurrent_calls)),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
        config.limits().map_err(|e| config_error(e, &given))?;
        let rate_args = [failure_rate_threshold, minimum_calls, window_calls, window_seconds, slow_call_rate_threshold];
        if !config.has_rate_policy() && rate_args.iter().any(|a| set(*a).is_some()) {
            return Err(PyValueError::new_err(
                "minimum_calls, window_calls, window_seconds and slow_call_rate_threshold configure a rate policy: \
                 set failure_rate_threshold or slow_call_seconds too",
            ));
        }
        // Look the Python-side objects up now, so `call` can rely on them being there.
        refs(py)?;
        let label = name.to_string();
        let region = shared::placement(py, shared_memory)?;
        let fleet = fleet::placement(py, redis)?;
        if let (Some(region), Some(fleet)) = (&region, &fleet) {
            return Err(PyValueError::new_err(format!(
                "CircuitBreaker '{label}' would live both in shared memory ({}) and in Redis ({}); \
                 choose one (Redis already shares it with every process of every host): pass \
                 shared_memory=False or redis=False, or unset {} or {}",
                region.path().display(),
                fleet.options().redacted_url(),
                shared::ENV_REGION,
                fleet::ENV_URL,
            )));
        }
        if (region.is_some() || fleet.is_some()) && name.to_str().is_err() {
            // Its UTF-8 form would be lossy: two such names would share one slot or key.
            return Err(PyValueError::new_err(format!(
                "CircuitBreaker name {} holds a lone surrogate, which is not text; a breaker shared \
                 through shared memory or Redis needs a name that encodes to UTF-8",
                name.repr()?
            )));
        }
        let (store, counters, clock, window) = match &fleet {
            // Hosts share no monotonic clock: a word in Redis holds wall-clock milliseconds.
            // The rate window stays this host's (a shared one would cost a round trip per call).
            Some(fleet) => {
                let (store, counters) = fleet::attach(py, fleet, &label, &config)?;
                (store, counters, PyClock::Wall(cb_core::WallClock), None)
            }
            None => {
                let (store, counters, window) = shared::attach(py, region.as_ref(), &label, &config)?;
                (store, counters, PyClock::Monotonic(cb_core::DefaultClock::default()), window)
            }
        };
        let listeners = Arc::new(Listeners::new());
        let hook = Arc::clone(&listeners);
        // The status reports the last failure's time: stamp every failure.
        let mut inner = cb_core::CircuitBreaker::with_store(config, clock, counters.with_times(), store)
            .map_err(|e| config_error(e, &given))?
            .on_transition(move |t| on_transition(&label, &hook, t));
        if let Some(region) = &region {
            // Every process converts the shared ticks to wall-clock time alike.
            inner = inner.with_wall_anchor(region.wall_anchor());
        }
        if let Some(window) = window {
            // The rates are decided on every process's calls, as the state is.
            inner = inner.with_shared_window(window);
        }
        if fleet.is_some() {
            // The ticks are wall-clock milliseconds already.
            inner = inner.with_wall_anchor(cb_core::WallAnchor::new(0, 0));
        }
        Ok(CircuitBreaker {
            listeners,
            policy,
            last_failure: Mutex::new(None),
            name: name.clone().unbind(),
            recovery_timeout_seconds: recovery_obj,
            inner,
            region,
            fleet,
            timeout,
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

    /// The status dict (see [`status::status`]).
    fn get_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        status::status(self, py)
    }

    /// Counters since creation (see [`status::metrics`]).
    fn get_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        status::metrics(self, py)
    }

    /// Admits one call and returns its `Permit`, for code that is not one function call
    /// (streaming, callbacks). Raises `CircuitBreakerOpenError` when rejected.
    fn acquire(slf: &Bound<'_, Self>) -> PyResult<Permit> {
        let this = slf.get();
        let ticket = this.admit(slf.py()).map_err(|rejected| Self::rejection(slf, rejected))?;
        Ok(Permit::new(slf.clone().unbind(), ticket))
    }

    /// OPEN until `reset()`, whatever the timeout (reads as OPEN; `mode` is `'forced_open'`).
    fn force_open(&self, py: Python<'_>) {
        self.set_last_failure(None);
        self.control(py, |inner| inner.force_open());
    }

    /// Admits every call and never trips until `reset()` (reads as CLOSED; `mode` is
    /// `'disabled'`).
    fn disable(&self, py: Python<'_>) {
        self.control(py, |inner| inner.disable());
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

    /// Removes a listener added with `add_listener` (the first one equal to it, as
    /// `list.remove` finds it: a bound method made again from the same object and function is
    /// found); `ValueError` if it was not added.
    fn remove_listener(&self, listener: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = listener.py();
        // `==` runs Python code (`__eq__`), which may release the GIL: never under the lock.
        // Compare against a copy, then remove the exact object found, if it is still there.
        for candidate in self.listeners.snapshot(py) {
            let candidate = candidate.into_bound(py);
            if candidate.is(listener) || candidate.eq(listener)? {
                let removed = self.listeners.remove(&candidate);
                // The listener is dropped here, after the unlock (a drop may run `__del__`).
                if removed.is_some() {
                    return Ok(());
                }
            }
        }
        Err(PyValueError::new_err("listener was not added to this breaker"))
    }

    /// Back to CLOSED with the failure and success counts cleared.
    fn reset(&self, py: Python<'_>) {
        self.inner.metrics().mark_reset();
        self.set_last_failure(None);
        self.control(py, |inner| inner.reset());
    }

    /// Breakers are live state shared by the calls that use them; they are not copied into
    /// pickles (a copy would silently count apart).
    fn __reduce__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyTypeError::new_err(format!(
            "cannot pickle CircuitBreaker {}: a breaker is live state shared by the calls that use it; \
             pass its name and settings (or a shared_memory region) to the other process instead",
            self.name.bind(py).repr()?
        )))
    }

    /// The breaker's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    /// Consecutive failures that open the breaker (`None`: the rate policies alone trip it).
    #[getter]
    fn failure_threshold(&self) -> Option<u64> {
        status::failure_threshold(self.inner.config())
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

    /// Trip when at least this fraction of the window's calls failed (None: off).
    #[getter]
    fn failure_rate_threshold(&self) -> Option<f64> {
        self.inner.config().failure_rate_threshold
    }

    /// Calls the window must hold before a rate can trip the breaker.
    #[getter]
    fn minimum_calls(&self) -> Option<u64> {
        self.inner.config().has_rate_policy().then(|| self.inner.config().minimum_calls)
    }

    /// The count-based window's size in calls (None for a time-based window or no rate policy).
    #[getter]
    fn window_calls(&self) -> Option<u64> {
        match self.inner.config().sliding_window {
            cb_core::SlidingWindow::Calls(n) if self.inner.config().has_rate_policy() => Some(n),
            _ => None,
        }
    }

    /// The time-based window's length in seconds (None for a count-based window or no rate
    /// policy).
    #[getter]
    fn window_seconds(&self) -> Option<f64> {
        match self.inner.config().sliding_window {
            cb_core::SlidingWindow::Time(t) if self.inner.config().has_rate_policy() => Some(t.as_secs_f64()),
            _ => None,
        }
    }

    /// A call at least this long counts as slow (None: no slow-call policy).
    #[getter]
    fn slow_call_seconds(&self) -> Option<f64> {
        self.inner.config().slow_call_duration.map(|d| d.as_secs_f64())
    }

    /// Trip when at least this fraction of the window's calls were slow (None: no slow-call
    /// policy).
    #[getter]
    fn slow_call_rate_threshold(&self) -> Option<f64> {
        let c = self.inner.config();
        c.slow_call_duration.map(|_| c.slow_call_rate_threshold.unwrap_or(1.0))
    }

    /// The longest a coroutine call may take before it is cancelled and counted as a failure
    /// (None: no limit).
    #[getter]
    fn timeout_seconds(&self) -> Option<f64> {
        self.timeout
    }

    /// The most calls in flight at once (host-wide in shared memory), or None.
    #[getter]
    fn max_concurrent_calls(&self) -> Option<u32> {
        self.inner.max_concurrent_calls()
    }

    /// The Redis store its state lives in (fleet-wide), or None.
    #[getter]
    fn redis(&self) -> Option<fleet::RedisStore> {
        self.fleet.clone().map(|fleet| fleet::RedisStore { fleet })
    }

    /// Whether finishing a call with this outcome (`failed`: a failure, else a success) may
    /// wait on Redis; the asyncio paths then finish it on a worker thread, off the event loop.
    fn _record_is_remote(&self, failed: bool) -> bool {
        self.inner.store().record_is_remote(if failed { Outcome::Failure } else { Outcome::Success })
    }

    /// Whether admitting a call now may wait on Redis (a probe admission of a fleet breaker).
    fn _admission_is_remote(&self) -> bool {
        self.inner.store().admission_is_remote(&self.inner)
    }

    /// The fallback called instead of raising (None if none).
    #[getter]
    fn fallback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.policy.fallback.get().as_ref().map(|f| f.clone_ref(py))
    }

    /// The fallback to call instead of raising the open error, or None (the rule the call path
    /// applies, for the async paths written in Python).
    fn _rejection_fallback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.policy.fallback_after_rejection().map(|f| f.clone_ref(py))
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

    /// Everything the breaker refers to, for the cycle collector. Locks are only tried: a
    /// reference not reported keeps its object alive a little longer, never frees it early.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.policy.traverse(&visit)?;
        self.listeners.traverse(&visit)?;
        if let Ok(last) = self.last_failure.try_lock() {
            visit.call(&*last)?;
        }
        visit.call(&self.name)?;
        visit.call(&self.recovery_timeout_seconds)
    }

    /// Breaks reference cycles through the breaker (listeners, the last failure, the policy's
    /// callables). Each value is taken out under its lock and dropped after.
    fn __clear__(&self) {
        let listeners = self.listeners.take_all();
        let last = self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        // SAFETY: this is the breaker's `tp_clear`.
        let callables = unsafe { self.policy.take_callables() };
        drop((listeners, last, callables));
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CircuitBreaker(name={}, state={}, failure_threshold={}, recovery_timeout_seconds={})",
            self.name.bind(py).repr().map(|r| r.to_string()).unwrap_or_default(),
            state_name(self.state()),
            status::failure_threshold(self.inner.config()).map_or_else(|| "None".to_string(), |n| n.to_string()),
            self.recovery_timeout_seconds.bind(py),
        )
    }
}
