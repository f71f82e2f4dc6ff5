//! Monitoring counters, kept off the state word and out of each other's way.
//!
//! Counters that every call touches (successes, failures, ignored, rejections) are striped: each
//! thread adds to one of [`STRIPES`] cache-padded slots picked once per thread, and a read sums the
//! slots. Two threads on the closed path therefore never write the same cache line, and the state
//! word is not written at all. [`NoMetrics`] compiles every hook to nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::{State, Transition};

/// The hooks a breaker calls. Implemented by [`Counters`] (the default) and [`NoMetrics`].
pub trait Metrics: Send + Sync {
    /// Whether [`Metrics::on_failure`] and [`Metrics::on_transition`] use their `now` argument;
    /// when false the breaker skips the clock read on a failure that does not trip.
    const WANTS_TIME: bool;
    /// A call reported success (stale or not).
    fn on_success(&self);
    /// A call reported failure (stale or not), at tick `now` (0 when `WANTS_TIME` is false).
    fn on_failure(&self, now: u64);
    /// A call reported neither, or its permit was dropped.
    fn on_ignored(&self);
    /// A call was rejected.
    fn on_rejected(&self);
    /// The breaker changed state, at tick `now`.
    fn on_transition(&self, transition: &Transition, now: u64);
}

/// No counting at all: for zero-cost use from Rust.
///
/// ```
/// use cb_core::{CircuitBreaker, Config, DefaultClock, NoMetrics};
/// let breaker = CircuitBreaker::with_parts(Config::default(), DefaultClock::default(), NoMetrics).unwrap();
/// assert!(breaker.call(|| Ok::<_, ()>(1)).is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    const WANTS_TIME: bool = false;
    #[inline]
    fn on_success(&self) {}
    #[inline]
    fn on_failure(&self, _now: u64) {}
    #[inline]
    fn on_ignored(&self) {}
    #[inline]
    fn on_rejected(&self) {}
    #[inline]
    fn on_transition(&self, _transition: &Transition, _now: u64) {}
}

/// How many slots each striped counter has: a power of two, more than the cores a breaker is
/// usually hammered from.
pub const STRIPES: usize = 16;

const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct Stripe {
    successes: AtomicU64,
    failures: AtomicU64,
    ignored: AtomicU64,
    rejections: AtomicU64,
}

/// Totals since creation (a `reset` does not clear them), striped per thread; see the [module docs](self).
///
/// ```
/// use cb_core::CircuitBreaker;
/// let breaker = CircuitBreaker::new(Default::default()).unwrap();
/// let _ = breaker.call(|| Ok::<_, ()>(()));
/// let _ = breaker.call(|| Err::<(), _>("down"));
/// let totals = breaker.metrics().totals();
/// assert_eq!((totals.successes, totals.failures), (1, 1));
/// ```
pub struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
    opened: CachePadded<AtomicU64>,
    last_failure: AtomicU64,
    last_change: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..STRIPES).map(|_| CachePadded::new(Stripe::default())).collect(),
            opened: CachePadded::new(AtomicU64::new(0)),
            last_failure: AtomicU64::new(NEVER),
            last_change: AtomicU64::new(NEVER),
        }
    }
}

/// A sum of [`Counters`] read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls that reported success.
    pub successes: u64,
    /// Calls that reported failure.
    pub failures: u64,
    /// Calls that reported neither, or were dropped without an outcome.
    pub ignored: u64,
    /// Calls rejected without running.
    pub rejections: u64,
    /// Transitions into OPEN or FORCED_OPEN.
    pub opened: u64,
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

impl Counters {
    #[inline]
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    /// Sums every stripe. Concurrent calls may or may not be included.
    pub fn totals(&self) -> Totals {
        let mut t = Totals { opened: self.opened.load(Ordering::Relaxed), ..Totals::default() };
        for s in self.stripes.iter() {
            t.successes += s.successes.load(Ordering::Relaxed);
            t.failures += s.failures.load(Ordering::Relaxed);
            t.ignored += s.ignored.load(Ordering::Relaxed);
            t.rejections += s.rejections.load(Ordering::Relaxed);
        }
        t
    }

    /// The tick of the last reported failure, if any.
    pub fn last_failure_tick(&self) -> Option<u64> {
        Some(self.last_failure.load(Ordering::Relaxed)).filter(|&t| t != NEVER)
    }

    /// The tick of the last state change, if any.
    pub fn last_change_tick(&self) -> Option<u64> {
        Some(self.last_change.load(Ordering::Relaxed)).filter(|&t| t != NEVER)
    }
}

impl Metrics for Counters {
    const WANTS_TIME: bool = true;

    #[inline]
    fn on_success(&self) {
        self.stripe().successes.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn on_failure(&self, now: u64) {
        self.stripe().failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure.store(now, Ordering::Relaxed);
    }

    #[inline]
    fn on_ignored(&self) {
        self.stripe().ignored.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn on_rejected(&self) {
        self.stripe().rejections.fetch_add(1, Ordering::Relaxed);
    }

    fn on_transition(&self, transition: &Transition, now: u64) {
        if matches!(transition.to, State::Open | State::ForcedOpen) {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        self.last_change.store(now, Ordering::Relaxed);
    }
}

impl core::fmt::Debug for Counters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Counters")
            .field("totals", &self.totals())
            .field("last_failure_tick", &self.last_failure_tick())
            .field("last_change_tick", &self.last_change_tick())
            .finish()
    }
}
