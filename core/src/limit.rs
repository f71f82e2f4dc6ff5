//! A limit on calls in flight: `Config::max_concurrent_calls`.
//!
//! A breaker learns only from calls that have finished. While a dependency hangs, every caller
//! until the first timeout starts one more call, and the callers' threads or connections run
//! out. `max_concurrent_calls` caps the calls admitted and not yet finished: the next one is
//! rejected at once, with a [`Rejected`] whose [`Rejected::is_full`] is true. A full rejection
//! is not a failure: it never trips the breaker and never counts in the rate window; it is
//! counted on its own ([`crate::Metrics::on_full`], [`crate::Totals::full_rejections`]).
//!
//! Every admitted call holds its place until its outcome: [`CircuitBreaker::record`] gives it
//! back (whatever the outcome, stale or not), and so do a dropped [`crate::Permit`] or
//! [`crate::OwnedPermit`], a dropped [`crate::Guarded`] future and a dropped tower response
//! future. A [`crate::Ticket`] cannot be copied, so a place is given back exactly once.
//!
//! The count is an [`InFlight`]: [`LocalInFlight`] in the breaker by default (one atomic on a
//! cache line of its own); a [`crate::Store`] that counts for every process of a host returns
//! its own from [`crate::Store::shared_in_flight`]. Waiting for a place is not offered: a caller
//! that waits holds the very thread the limit protects.
//!
//! ```
//! use cb_core::{CircuitBreaker, Config, State};
//!
//! let breaker = CircuitBreaker::new(Config::default().max_concurrent_calls(2))?.named("quotes");
//! let first = breaker.admit().unwrap();
//! let second = breaker.admit().unwrap();
//! assert_eq!(breaker.in_flight(), 2);
//!
//! let full = breaker.admit().unwrap_err();
//! assert!(full.is_full());
//! assert_eq!(full.state(), State::Closed); // full, not open: nothing was counted against the dependency
//! assert_eq!(full.to_string(), "circuit breaker 'quotes' is full: 2 calls in flight (max_concurrent_calls 2)");
//!
//! first.success();  // gives its place back
//! drop(second);     // so does a permit dropped without an outcome
//! assert_eq!(breaker.in_flight(), 0);
//! assert_eq!(breaker.metrics().totals().full_rejections, 1);
//! # Ok::<(), cb_core::ConfigError>(())
//! ```
//!
//! [`CircuitBreaker::record`]: crate::CircuitBreaker::record
//! [`Rejected`]: crate::Rejected
//! [`Rejected::is_full`]: crate::Rejected::is_full

use core::fmt;

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicU32, Ordering};

/// Counts a breaker's calls in flight, for `Config::max_concurrent_calls`.
///
/// Implemented by [`LocalInFlight`] (the default: this process) and by stores that count for
/// every process of a host (see [`crate::Store::shared_in_flight`]). `try_enter` and `leave`
/// must be atomic with respect to each other: however many threads race, no more than `max`
/// places are taken at once. The count may live in memory that others can write, so `leave`
/// saturates at 0 rather than wrap.
///
/// ```
/// use cb_core::{InFlight, LocalInFlight};
/// let count = LocalInFlight::new();
/// assert!(count.try_enter(1));
/// assert!(!count.try_enter(1)); // full
/// assert_eq!(count.in_flight(), 1);
/// count.leave();
/// assert!(count.try_enter(1));
/// ```
pub trait InFlight: Send + Sync {
    /// Takes a place if fewer than `max` calls are in flight; false when full.
    fn try_enter(&self, max: u32) -> bool;
    /// Gives back a place `try_enter` took (called exactly once per place taken).
    fn leave(&self);
    /// Calls in flight now (for status).
    fn in_flight(&self) -> u32;
}

/// The in-process counter: one `AtomicU32` on a cache line of its own (compare-and-set if below
/// the limit on enter, a saturating decrement on leave: 2 atomic read-modify-writes per call).
///
/// ```
/// use cb_core::{InFlight, LocalInFlight};
/// let count = LocalInFlight::default();
/// count.leave(); // nothing to give back: stays at 0, never wraps
/// assert_eq!(count.in_flight(), 0);
/// assert!(count.try_enter(2) && count.try_enter(2) && !count.try_enter(2));
/// assert_eq!(format!("{count:?}"), "LocalInFlight { in_flight: 2 }");
/// ```
pub struct LocalInFlight {
    count: CachePadded<AtomicU32>,
}

impl LocalInFlight {
    /// A counter with nothing in flight.
    ///
    /// ```
    /// use cb_core::{InFlight, LocalInFlight};
    /// assert_eq!(LocalInFlight::new().in_flight(), 0);
    /// ```
    pub fn new() -> Self {
        LocalInFlight { count: CachePadded::new(AtomicU32::new(0)) }
    }
}

impl Default for LocalInFlight {
    fn default() -> Self {
        LocalInFlight::new()
    }
}

impl InFlight for LocalInFlight {
    /// Acquire on success: whatever the call that gave this place back did before leaving
    /// happens before the call that takes it.
    #[inline]
    fn try_enter(&self, max: u32) -> bool {
        let mut current = self.count.load(Ordering::Relaxed);
        while current < max {
            match self.count.compare_exchange_weak(current, current + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// Release, paired with `try_enter`'s Acquire. Saturates at 0: one compare-and-set when
    /// uncontended, like a `fetch_sub`, but a stray extra `leave` cannot wrap the count to
    /// `u32::MAX` (which would read as full for good).
    #[inline]
    fn leave(&self) {
        let mut current = self.count.load(Ordering::Relaxed);
        while current > 0 {
            match self.count.compare_exchange_weak(current, current - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    #[inline]
    fn in_flight(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LocalInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalInFlight").field("in_flight", &self.in_flight()).finish()
    }
}
