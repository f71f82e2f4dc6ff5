//! The breaker's configuration, validated in one place.

use core::fmt;
use std::time::Duration;

use crate::window::{RateLimits, SlidingWindow, MAX_WINDOW_CALLS, MAX_WINDOW_TIME};
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
/// | `consecutive_failures` | true | false needs a rate policy | whether `failure_threshold` trips at all |
/// | `recovery_timeout` | 60 s | 0 ..= [`MAX_TIMEOUT`] | how long OPEN lasts before probing; 0 probes at once |
/// | `success_threshold` | 1 | 1 ..= 255 | consecutive probe successes in HALF_OPEN that close it |
/// | `half_open_max_calls` | 1 | 1 ..= 255 | probes admitted at the same time in HALF_OPEN |
/// | `probe_timeout` | 60 s | 1 ms ..= [`MAX_TIMEOUT`] | a probe slot held this long without an outcome is presumed lost |
/// | `failure_rate_threshold` | none | (0, 1] | also trip when this fraction of the calls in the window failed |
/// | `slow_call_duration` | none | 1 ms ..= [`MAX_TIMEOUT`] | a call this long or longer is slow (even if it succeeds) |
/// | `slow_call_rate_threshold` | 1.0 with `slow_call_duration` | (0, 1] | also trip when this fraction of the calls in the window were slow |
/// | `minimum_calls` | 100 | 1 ..= the window's calls | no rate trips the breaker before the window holds this many calls |
/// | `sliding_window` | the last 100 calls | see [`SlidingWindow`] | the calls the rates are computed over |
/// | `max_concurrent_calls` | none (no limit) | 1 ..= 2^32 - 1 | calls admitted and not yet finished at once; one more is rejected as full (see [`crate::limit`]) |
///
/// The rate policies are off unless `failure_rate_threshold` or `slow_call_duration` is set;
/// then whichever condition is met first trips the breaker (see [`crate::window`]).
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
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Consecutive failures in CLOSED that open the breaker.
    pub failure_threshold: u64,
    /// Whether `failure_threshold` consecutive failures trip the breaker (the default). `false`
    /// leaves tripping to the rate policies, as in resilience4j: a failure in CLOSED is then
    /// counted in the window only, and writes nothing to the word.
    pub consecutive_failures: bool,
    /// How long OPEN lasts before the breaker admits probes.
    pub recovery_timeout: Duration,
    /// Consecutive probe successes in HALF_OPEN that close the breaker.
    pub success_threshold: u64,
    /// Probes admitted at the same time in HALF_OPEN.
    pub half_open_max_calls: u64,
    /// How long a probe slot may be held without an outcome before it is presumed lost.
    pub probe_timeout: Duration,
    /// Trip when at least this fraction of the calls in the window failed (`None`: off).
    pub failure_rate_threshold: Option<f64>,
    /// A call that takes this long or longer is slow (`None`: no slow-call policy).
    pub slow_call_duration: Option<Duration>,
    /// Trip when at least this fraction of the calls in the window were slow (`None` with a
    /// `slow_call_duration`: 1.0, every call).
    pub slow_call_rate_threshold: Option<f64>,
    /// No rate trips the breaker before the window holds this many calls.
    pub minimum_calls: u64,
    /// The calls the rates are computed over.
    pub sliding_window: SlidingWindow,
    /// At most this many calls in flight at once (`None`: no limit). See [`crate::limit`].
    pub max_concurrent_calls: Option<u64>,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        let bits = |r: Option<f64>| r.map(f64::to_bits);
        self.failure_threshold == other.failure_threshold
            && self.consecutive_failures == other.consecutive_failures
            && self.recovery_timeout == other.recovery_timeout
            && self.success_threshold == other.success_threshold
            && self.half_open_max_calls == other.half_open_max_calls
            && self.probe_timeout == other.probe_timeout
            && bits(self.failure_rate_threshold) == bits(other.failure_rate_threshold)
            && self.slow_call_duration == other.slow_call_duration
            && bits(self.slow_call_rate_threshold) == bits(other.slow_call_rate_threshold)
            && self.minimum_calls == other.minimum_calls
            && self.sliding_window == other.sliding_window
            && self.max_concurrent_calls == other.max_concurrent_calls
    }
}

impl Eq for Config {}

impl Default for Config {
    fn default() -> Self {
        Config {
            failure_threshold: 5,
            consecutive_failures: true,
            recovery_timeout: Duration::from_secs(60),
            success_threshold: 1,
            half_open_max_calls: 1,
            probe_timeout: Duration::from_secs(60),
            failure_rate_threshold: None,
            slow_call_duration: None,
            slow_call_rate_threshold: None,
            minimum_calls: 100,
            sliding_window: SlidingWindow::Calls(100),
            max_concurrent_calls: None,
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

    /// Sets `consecutive_failures`: `false` trips on the rate policies only (one must be set),
    /// and a failure in CLOSED writes nothing but its bucket.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, SlidingWindow, State};
    /// let rates_only = Config::default()
    ///     .consecutive_failures(false)
    ///     .failure_rate_threshold(0.5)
    ///     .minimum_calls(20)
    ///     .sliding_window(SlidingWindow::Calls(20));
    /// let breaker = CircuitBreaker::new(rates_only).unwrap();
    /// for _ in 0..19 {
    ///     let _ = breaker.call(|| Err::<(), _>("503"));
    /// }
    /// assert_eq!(breaker.state(), State::Closed); // 19 failures in a row, but fewer than 20 calls
    /// let _ = breaker.call(|| Err::<(), _>("503"));
    /// assert_eq!(breaker.state(), State::Open);
    ///
    /// let err = Config::default().consecutive_failures(false).limits().unwrap_err();
    /// assert_eq!(err.field(), "consecutive_failures");
    /// ```
    pub fn consecutive_failures(mut self, on: bool) -> Self {
        self.consecutive_failures = on;
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

    /// Sets `failure_rate_threshold`: also trip when this fraction of the window's calls failed.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, SlidingWindow, State};
    /// let config = Config::default().failure_rate_threshold(0.5).minimum_calls(4).sliding_window(SlidingWindow::Calls(10));
    /// let breaker = CircuitBreaker::new(config).unwrap();
    /// for ok in [true, false, true, false] {  // never two failures in a row
    ///     let _ = breaker.call(|| if ok { Ok(()) } else { Err("503") });
    /// }
    /// assert_eq!(breaker.state(), State::Open); // 2 of 4 failed: 50 %
    /// ```
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.failure_rate_threshold = Some(rate);
        self
    }

    /// Sets `slow_call_duration`: a call this long or longer counts as slow.
    pub fn slow_call_duration(mut self, d: Duration) -> Self {
        self.slow_call_duration = Some(d);
        self
    }

    /// Sets `slow_call_rate_threshold`: also trip when this fraction of the window's calls were
    /// slow.
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.slow_call_rate_threshold = Some(rate);
        self
    }

    /// Sets `minimum_calls`.
    pub fn minimum_calls(mut self, n: u64) -> Self {
        self.minimum_calls = n;
        self
    }

    /// Sets `sliding_window`.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.sliding_window = window;
        self
    }

    /// Sets `max_concurrent_calls`: at most `n` calls admitted and not yet finished at once;
    /// the next is rejected as full (never counted as a failure). `n` must be in
    /// `1..=4294967295`; anything else is a [`ConfigError`] when the breaker is built.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config};
    /// let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(1)).unwrap();
    /// assert_eq!(breaker.config().max_concurrent_calls, Some(1));
    /// let running = breaker.admit().unwrap();
    /// assert!(breaker.admit().unwrap_err().is_full());
    /// running.success();
    /// assert!(breaker.admit().is_ok());
    ///
    /// let err = CircuitBreaker::new(Config::default().max_concurrent_calls(0)).unwrap_err();
    /// assert_eq!(err.to_string(), "max_concurrent_calls must be in 1..=4294967295, got 0");
    /// ```
    pub fn max_concurrent_calls(mut self, n: u64) -> Self {
        self.max_concurrent_calls = Some(n);
        self
    }

    /// The settings in one line, named as the Python package names its arguments: for messages
    /// such as a configuration that differs from another process's or host's. Only the settings
    /// of the shared word: `max_concurrent_calls` is left out, as it may differ between the
    /// hosts of one Redis breaker without any conflict (each counts its own calls).
    ///
    /// ```
    /// let line = cb_core::Config::default().failure_threshold(3).describe();
    /// assert!(line.starts_with("failure_threshold=3, recovery_timeout_seconds=60,"));
    /// ```
    pub fn describe(&self) -> String {
        let threshold = if self.consecutive_failures { self.failure_threshold.to_string() } else { "None".into() };
        let mut line = format!(
            "failure_threshold={}, recovery_timeout_seconds={}, success_threshold={}, half_open_max_calls={}, probe_timeout_seconds={}",
            threshold,
            self.recovery_timeout.as_secs_f64(),
            self.success_threshold,
            self.half_open_max_calls,
            self.probe_timeout.as_secs_f64()
        );
        if let Some(rate) = self.failure_rate_threshold {
            line += &format!(", failure_rate_threshold={rate}");
        }
        if let Some(slow) = self.slow_call_duration {
            let rate = self.slow_call_rate_threshold.unwrap_or(1.0);
            line += &format!(", slow_call_seconds={}, slow_call_rate_threshold={rate}", slow.as_secs_f64());
        }
        if self.has_rate_policy() {
            line += &format!(", minimum_calls={}", self.minimum_calls);
            line += &match self.sliding_window {
                SlidingWindow::Calls(n) => format!(", window_calls={n}"),
                SlidingWindow::Time(t) => format!(", window_seconds={}", t.as_secs_f64()),
            };
        }
        line
    }

    /// Whether a rate policy is on (a window is kept).
    pub fn has_rate_policy(&self) -> bool {
        self.failure_rate_threshold.is_some() || self.slow_call_duration.is_some()
    }

    /// Validates every field and converts it to the word's units.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        check("failure_threshold", self.failure_threshold, 1, u64::from(u32::MAX))?;
        check("success_threshold", self.success_threshold, 1, u64::from(MAX_SUCCESS_THRESHOLD))?;
        check("half_open_max_calls", self.half_open_max_calls, 1, u64::from(MAX_HALF_OPEN_CALLS))?;
        let recovery_ticks = timeout_ticks("recovery_timeout", self.recovery_timeout, 0)?;
        let probe_ticks = timeout_ticks("probe_timeout", self.probe_timeout, 1)?;
        let unit = 1u64 << COARSE_SHIFT;
        let rates = self.rate_limits()?;
        let max_concurrent_calls = match self.max_concurrent_calls {
            Some(n) => {
                check("max_concurrent_calls", n, 1, u64::from(u32::MAX))?;
                core::num::NonZeroU32::new(n as u32)
            }
            None => None,
        };
        if !self.consecutive_failures && rates.is_none() {
            return Err(ConfigError {
                field: "consecutive_failures",
                value: "false".into(),
                allowed: "true, or false with a rate policy (failure_rate_threshold or slow_call_duration): nothing else would trip the breaker".into(),
                bounds: (1, 1),
                millis: false,
            });
        }
        Ok(Limits {
            // Off: 0, which no count is below (see `Limits::counts_failures`).
            failure_threshold: if self.consecutive_failures { self.failure_threshold } else { 0 },
            counts_failures: self.consecutive_failures,
            success_threshold: self.success_threshold,
            half_open_max_calls: self.half_open_max_calls,
            recovery_ticks,
            open_window_ticks: recovery_ticks + CLOCK_SKEW_TICKS,
            // +1: the admission stamp is truncated to a unit, so one more unit guarantees the
            // full timeout has passed.
            probe_expiry_units: probe_ticks.div_ceil(unit) + 1,
            rates,
            max_concurrent_calls,
        })
    }

    fn rate_limits(&self) -> Result<Option<RateLimits>, ConfigError> {
        rate("failure_rate_threshold", self.failure_rate_threshold)?;
        rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_rate_threshold.is_some() && self.slow_call_duration.is_none() {
            return Err(ConfigError {
                field: "slow_call_rate_threshold",
                value: format!("{:?}", self.slow_call_rate_threshold.unwrap_or_default()),
                allowed: "set together with slow_call_duration".into(),
                bounds: (0, 0),
                millis: false,
            });
        }
        let slow_ticks = match self.slow_call_duration {
            Some(d) => timeout_ticks("slow_call_duration", d, 1)?,
            None => 0,
        };
        let window_calls = match self.sliding_window {
            SlidingWindow::Calls(n) => {
                check("window_calls", n, 1, MAX_WINDOW_CALLS)?;
                n
            }
            SlidingWindow::Time(t) => {
                let ms = timeout_ticks("window_time", t, 1)?;
                let max = MAX_WINDOW_TIME.as_millis() as u64;
                if ms > max {
                    return Err(ConfigError { field: "window_time", value: format!("{t:?}"), allowed: format!("1 ms ..= {max} ms"), bounds: (1, max), millis: true });
                }
                u64::MAX
            }
        };
        check("minimum_calls", self.minimum_calls, 1, window_calls.min(u64::from(u32::MAX)))?;
        if !self.has_rate_policy() {
            return Ok(None);
        }
        Ok(Some(RateLimits::new(
            self.failure_rate_threshold,
            self.slow_call_rate_threshold,
            slow_ticks,
            self.minimum_calls,
            self.sliding_window,
        )))
    }
}

fn rate(field: &'static str, value: Option<f64>) -> Result<(), ConfigError> {
    match value {
        Some(r) if !(r.is_finite() && r > 0.0 && r <= 1.0) => Err(ConfigError {
            field,
            value: format!("{r:?}"),
            allowed: "(0, 1]".into(),
            bounds: (0, 1),
            millis: false,
        }),
        _ => Ok(()),
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
