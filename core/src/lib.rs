//! A lock-free circuit breaker whose whole state is one `AtomicU64`.
//!
//! A circuit breaker stops calls to a failing dependency: CLOSED admits everything and opens
//! after `failure_threshold` consecutive failures; OPEN rejects without running the call until
//! `recovery_timeout` has elapsed; then it is HALF_OPEN and admits up to `half_open_max_calls`
//! probes at a time: `success_threshold` consecutive probe successes close it, any probe failure
//! opens it again.
//!
//! ```
//! use cb_core::{CircuitBreaker, Config, State};
//! use std::time::Duration;
//!
//! let breaker = CircuitBreaker::new(
//!     Config::default().failure_threshold(3).recovery_timeout(Duration::from_millis(50)),
//! )?;
//! for _ in 0..3 {
//!     let _ = breaker.call(|| Err::<(), _>("timeout"));
//! }
//! assert_eq!(breaker.state(), State::Open);
//! std::thread::sleep(Duration::from_millis(70));
//! assert_eq!(breaker.state(), State::HalfOpen);
//! assert_eq!(breaker.call(|| Ok::<_, &str>("pong")), Ok("pong"));
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), cb_core::ConfigError>(())
//! ```
//!
//! # Design
//!
//! - [`Snapshot`] is the 64-bit word as a value: state, generation and the state's counts or
//!   timestamp (the layout is drawn in [`word`]). Every transition is a pure function
//!   `(Snapshot, now) -> Option<Snapshot>`; [`CircuitBreaker`] applies them with one CAS loop.
//! - The closed path reads the word and, when nothing needs counting, writes nothing and reads no
//!   clock. The open path is one load, one clock read and a compare.
//! - Every admitted call gets a [`Ticket`] naming the generation it was admitted in; every state
//!   change starts a new generation, and an outcome from an older one changes nothing.
//! - A HALF_OPEN probe slot is released by its outcome or by dropping its [`Permit`]. A slot that
//!   is neither (a leaked permit, a crashed process sharing the word) is presumed lost after
//!   `probe_timeout`: the next caller starts a fresh round of probes.
//! - The word lives in a [`Store`]: [`LocalWord`] in this process by default. The CAS loop and
//!   the transitions do not know where it is.
//! - `Config::max_concurrent_calls` caps the calls in flight (see [`limit`]): a full breaker
//!   rejects at once, and a full rejection is never a failure.
//! - Time is a [`Clock`]; counters are a [`Metrics`]; transitions go to one listener.
//! - Futures run under a [`Permit`] or an [`OwnedPermit`] inside a [`Guarded`] future
//!   ([`CircuitBreaker::call_async`]); a [`Classify`] decides what their result counts as. No
//!   runtime is needed. With the `tower` feature, `BreakerLayer` puts a breaker in front of any
//!   tower service (see the `tower` module).

#![warn(missing_docs)]

mod announce;
mod breaker;
mod clock;
mod config;
mod error;
#[cfg(feature = "redis")]
pub mod fleet;
mod future;
pub mod limit;
mod loom;
mod metrics;
mod permit;
#[cfg(all(unix, feature = "shared-memory"))]
pub mod shared;
mod store;
pub mod window;
#[cfg(feature = "tower")]
pub mod tower;
pub mod word;

use core::fmt;

pub use breaker::CircuitBreaker;
pub use error::{CallError, Rejected};
pub use permit::{OwnedPermit, Permit};
pub use clock::{CachedClock, Clock, CoarseClock, DefaultClock, ManualClock, MonotonicClock, WallAnchor, WallClock};
pub use config::{Config, ConfigError, MAX_TIMEOUT};
pub use future::{AnyPermit, Classify, ErrIsFailure, Guarded};
pub use limit::{InFlight, LocalInFlight};
pub use metrics::{Counters, Metrics, NoMetrics, Totals, STRIPES};
#[cfg(all(unix, feature = "shared-memory"))]
pub use shared::{RegionError, RegionOptions, SharedBreaker, SharedRegion, SharedSlot, SlotInFlight, SlotWindow, SlotWord};
#[cfg(feature = "redis")]
pub use fleet::{FleetEvent, RedisBreaker, RedisError, RedisFleet, RedisOptions, RedisSlot, RedisWord, WeakRedisFleet};
pub use store::{LocalWord, Store};
pub use window::{SlidingWindow, Window, WindowTotals, MAX_BUCKET_CALLS, MAX_WINDOW_CALLS, MAX_WINDOW_TIME, WINDOW_BUCKETS};
#[cfg(feature = "tower")]
pub use tower::{BreakerHandle, BreakerLayer, BreakerService};
pub use word::{Admission, Command, Limits, Outcome, Snapshot, Step, Ticket, CLOCK_SKEW_TICKS};

/// The README's Rust examples, compiled and run as doctests so they cannot rot (with the
/// shared-memory, redis and tower features, which three of them use; `make test-rust` turns
/// them on).
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, unix, feature = "shared-memory", feature = "redis", feature = "tower"))]
pub struct ReadmeDoctests;

/// A breaker's state.
///
/// ```
/// assert_eq!(cb_core::State::HalfOpen.to_string(), "HALF_OPEN");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls run; failures are counted.
    Closed,
    /// Calls are rejected until the recovery timeout elapses.
    Open,
    /// A limited number of probe calls run to test the dependency.
    HalfOpen,
    /// Calls are rejected until `reset` (set by `force_open`).
    ForcedOpen,
    /// Calls run and nothing trips until `reset` (set by `disable`).
    Disabled,
}

impl State {
    /// The name used in reports and logs: `CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN`,
    /// `DISABLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::ForcedOpen => "FORCED_OPEN",
            State::Disabled => "DISABLED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
///
/// ```
/// use cb_core::Reason;
/// assert_eq!(Reason::FailureThreshold { failures: 3 }.to_string(), "3 consecutive failures");
/// assert_eq!(Reason::RecoveryTimeoutElapsed.to_string(), "recovery timeout elapsed");
/// assert_eq!(Reason::ProbeSucceeded { successes: 1 }.to_string(), "recovery successful");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// CLOSED → OPEN: this many consecutive failures reached the threshold.
    FailureThreshold {
        /// The consecutive failures counted.
        failures: u64,
    },
    /// OPEN → HALF_OPEN.
    RecoveryTimeoutElapsed,
    /// HALF_OPEN → CLOSED: this many consecutive probes succeeded.
    ProbeSucceeded {
        /// The consecutive probe successes counted.
        successes: u64,
    },
    /// HALF_OPEN → OPEN.
    ProbeFailed,
    /// Anything → CLOSED by `reset`.
    Reset,
    /// Anything → FORCED_OPEN by `force_open`.
    ForcedOpen,
    /// Anything → DISABLED by `disable`.
    Disabled,
    /// CLOSED → OPEN: the failure rate in the window reached `failure_rate_threshold`.
    FailureRate {
        /// Failures in the window.
        failures: u64,
        /// Calls in the window.
        calls: u64,
    },
    /// CLOSED → OPEN: the slow-call rate in the window reached `slow_call_rate_threshold`.
    SlowCallRate {
        /// Slow calls in the window.
        slow: u64,
        /// Calls in the window.
        calls: u64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FailureThreshold { failures } => write!(f, "{failures} consecutive failures"),
            Reason::RecoveryTimeoutElapsed => f.write_str("recovery timeout elapsed"),
            Reason::ProbeSucceeded { .. } => f.write_str("recovery successful"),
            Reason::ProbeFailed => f.write_str("half-open probe failed"),
            Reason::Reset => f.write_str("manual reset"),
            Reason::ForcedOpen => f.write_str("forced open"),
            Reason::Disabled => f.write_str("disabled"),
            Reason::FailureRate { failures, calls } => {
                write!(f, "failure rate {:.0}% ({failures} of the last {calls} calls)", percent(*failures, *calls))
            }
            Reason::SlowCallRate { slow, calls } => {
                write!(f, "slow-call rate {:.0}% ({slow} of the last {calls} calls)", percent(*slow, *calls))
            }
        }
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A change of state, as announced to the listener.
///
/// ```
/// use cb_core::{CircuitBreaker, Config, Outcome, Reason, State};
/// let breaker = CircuitBreaker::new(Config::default().failure_threshold(1)).unwrap();
/// let t = breaker.admit().unwrap().record(Outcome::Failure).unwrap();
/// assert_eq!((t.from, t.to, t.reason), (State::Closed, State::Open, Reason::FailureThreshold { failures: 1 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: Reason,
}
