//! The breaker's configuration, validated in one place.

use core::fmt;
use std::time::Duration;

use crate::word::{Limits, CLOCK_SKEW_TICKS, COARSE_SHIFT, MAX_HALF_OPEN_CALLS, MAX_SUCCESS_THRESHOLD, MAX_TICKS};

/// The longest `recovery_timeout` or `probe_timeout`: 2^46 - 1 ms (about 2,229 years), the
/// most the word's timestamp can hold.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(MAX_TICKS);

/// How a breaker trips and recovers. Every field has a default; [`Config::limits`] validates.
///
/// Build one from [`Config::default`] (or [`Config::new`]) and the setters; fields may be read
/// directly. The struct is `#[non_exhaustive]`, so later policies can add fields without
/// breaking code that builds a `Config` this way.
///
/// | field | default | allowed | meaning |
/// |---|---|---|---|
/// | `failure_threshold` | 5 | 1 ..= 2^32 - 1 | consecutive failures in CLOSED that open it |
/// | `recovery_timeout` | 60 s | 0 ..= [`MAX_TIMEOUT`] | how long OPEN lasts before probing; 0 probes at once |
/// | `success_threshold` | 1 | 1 ..= 255 | consecutive probe successes in HALF_OPEN that close it |
/// | `half_open_max_calls` | 1 | 1 ..= 255 | probes admitted at the same time in HALF_OPEN |
/// | `probe_timeout` | 60 s | 1 ms ..= [`MAX_TIMEOUT`] | a probe slot held this long without an outcome is presumed lost |
///
/// Time is kept in whole milliseconds: a timeout with a fraction of a millisecond is rounded
/// up (never early). `probe_timeout` is checked in 1.024 s units (never early, up to about 2 s
/// late): it is a safety net for permits that are leaked, not dropped.
///
/// ```
/// use cb_core::Config;
/// use std::time::Duration;
/// let config = Config::default().failure_threshold(3).recovery_timeout(Duration::from_millis(250));
/// assert!(config.limits().is_ok());
/// let err = Config::default().failure_threshold(0).limits().unwrap_err();
/// assert_eq!(err.field(), "failure_threshold");
/// assert_eq!(err.to_string(), "failure_threshold must be in 1..=4294967295, got 0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Consecutive failures in CLOSED that open the breaker.
    pub failure_threshold: u64,
    /// How long OPEN lasts before the breaker admits probes.
    pub recovery_timeout: Duration,
    /// Consecutive probe successes in HALF_OPEN that close the breaker.
    pub success_threshold: u64,
    /// Probes admitted at the same time in HALF_OPEN.
    pub half_open_max_calls: u64,
    /// How long a probe slot may be held without an outcome before it is presumed lost.
    pub probe_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(60),
            success_threshold: 1,
            half_open_max_calls: 1,
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// The defaults: the same as [`Config::default`].
    ///
    /// ```
    /// assert_eq!(cb_core::Config::new(), cb_core::Config::default());
    /// ```
    pub fn new() -> Self {
        Config::default()
    }

    /// Sets `failure_threshold`.
    pub fn failure_threshold(mut self, n: u64) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Sets `recovery_timeout`.
    pub fn recovery_timeout(mut self, d: Duration) -> Self {
        self.recovery_timeout = d;
        self
    }

    /// Sets `success_threshold`.
    pub fn success_threshold(mut self, n: u64) -> Self {
        self.success_threshold = n;
        self
    }

    /// Sets `half_open_max_calls`.
    pub fn half_open_max_calls(mut self, n: u64) -> Self {
        self.half_open_max_calls = n;
        self
    }

    /// Sets `probe_timeout`.
    pub fn probe_timeout(mut self, d: Duration) -> Self {
        self.probe_timeout = d;
        self
    }

    /// Validates every field and converts it to the word's units.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        check("failure_threshold", self.failure_threshold, 1, u64::from(u32::MAX))?;
        check("success_threshold", self.success_threshold, 1, u64::from(MAX_SUCCESS_THRESHOLD))?;
        check("half_open_max_calls", self.half_open_max_calls, 1, u64::from(MAX_HALF_OPEN_CALLS))?;
        let recovery_ticks = timeout_ticks("recovery_timeout", self.recovery_timeout, 0)?;
        let probe_ticks = timeout_ticks("probe_timeout", self.probe_timeout, 1)?;
        let unit = 1u64 << COARSE_SHIFT;
        Ok(Limits {
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
            half_open_max_calls: self.half_open_max_calls,
            recovery_ticks,
            open_window_ticks: recovery_ticks + CLOCK_SKEW_TICKS,
            // +1: the admission stamp is truncated to a unit, so one more unit guarantees the
            // full timeout has passed.
            probe_expiry_units: probe_ticks.div_ceil(unit) + 1,
        })
    }
}

fn check(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError { field, value: value.to_string(), allowed: format!("{min}..={max}"), bounds: (min, max), millis: false })
    }
}

fn timeout_ticks(field: &'static str, d: Duration, min_ms: u64) -> Result<u64, ConfigError> {
    let allowed = || format!("{min_ms} ms ..= {} ms", MAX_TICKS);
    let err = || ConfigError { field, value: format!("{d:?}"), allowed: allowed(), bounds: (min_ms, MAX_TICKS), millis: true };
    // Round up to whole milliseconds: a timeout may end late by less than 1 ms, never early.
    let ms = d.as_nanos().div_ceil(1_000_000);
    let ms = u64::try_from(ms).map_err(|_| err())?;
    if ms < min_ms || ms > MAX_TICKS {
        return Err(err());
    }
    Ok(ms)
}

/// A configuration value out of its range: names the field, the value and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    allowed: String,
    bounds: (u64, u64),
    millis: bool,
}

impl ConfigError {
    /// The field that is out of range, as named in [`Config`].
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The allowed range, e.g. `1..=255`.
    pub fn allowed(&self) -> &str {
        &self.allowed
    }

    /// The allowed range as numbers, inclusive: a count, or milliseconds for a duration (see
    /// [`ConfigError::is_duration`]). For bindings that word the error in their own units.
    ///
    /// ```
    /// use cb_core::Config;
    /// use std::time::Duration;
    /// let err = Config::default().probe_timeout(Duration::ZERO).limits().unwrap_err();
    /// assert_eq!((err.bounds().0, err.is_duration()), (1, true));
    /// ```
    pub fn bounds(&self) -> (u64, u64) {
        self.bounds
    }

    /// Whether the field is a duration (its bounds are milliseconds).
    pub fn is_duration(&self) -> bool {
        self.millis
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be in {}, got {}", self.field, self.allowed, self.value)
    }
}

impl std::error::Error for ConfigError {}
