//! Monitoring counters, kept off the state word and out of each other's way.
//!
//! Counters that every call touches (successes, failures, ignored, rejections) are striped: each
//! thread adds to one of [`STRIPES`] cache-padded slots picked once per thread, and a read sums the
//! slots. Two threads on the closed path therefore never write the same cache line, and the state
//! word is not written at all. [`NoMetrics`] compiles every hook to nothing.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::{State, Transition};

/// The hooks a breaker calls. Implemented by [`Counters`] (the default) and [`NoMetrics`].
pub trait Metrics: Send + Sync {
    /// Whether [`Metrics::on_failure`] uses its `now` argument; when false the breaker reads no
    /// clock for a failure that does not trip.
    fn wants_failure_time(&self) -> bool;
    /// A call reported success (stale or not).
    fn on_success(&self);
    /// A call reported failure (stale or not), at tick `now` (0 when
    /// [`Metrics::wants_failure_time`] is false).
    fn on_failure(&self, now: u64);
    /// A call reported neither, or its permit was dropped.
    fn on_ignored(&self);
    /// A call was rejected by the state (OPEN, HALF_OPEN with every probe slot taken,
    /// FORCED_OPEN).
    fn on_rejected(&self);
    /// A call was rejected because `max_concurrent_calls` calls were in flight (see
    /// [`crate::limit`]). Not a failure, and not counted by [`Metrics::on_rejected`].
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, DefaultClock, Metrics, Transition};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// #[derive(Default)]
    /// struct FullOnly(AtomicU64);
    /// impl Metrics for FullOnly {
    ///     fn wants_failure_time(&self) -> bool { false }
    ///     fn on_success(&self) {}
    ///     fn on_failure(&self, _now: u64) {}
    ///     fn on_ignored(&self) {}
    ///     fn on_rejected(&self) {}
    ///     fn on_transition(&self, _: &Transition, _now: u64) {}
    ///     fn on_full(&self) { self.0.fetch_add(1, Ordering::Relaxed); }
    /// }
    ///
    /// let breaker = CircuitBreaker::with_parts(Config::default().max_concurrent_calls(1), DefaultClock::default(), FullOnly::default())?;
    /// let _held = breaker.admit().unwrap();
    /// assert!(breaker.admit().is_err());
    /// assert_eq!(breaker.metrics().0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    #[inline]
    fn on_full(&self) {}
    /// The breaker changed state, at tick `now`.
    fn on_transition(&self, transition: &Transition, now: u64);
    /// Whether [`Metrics::on_transition`] uses its `now` argument; when false the breaker reads
    /// no clock to announce a transition.
    fn wants_transition_time(&self) -> bool {
        true
    }
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
    #[inline(always)]
    fn wants_failure_time(&self) -> bool {
        false
    }
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
    #[inline(always)]
    fn wants_transition_time(&self) -> bool {
        false
    }
}

/// How many slots each striped counter has: a power of two, more than the cores a breaker is
/// usually hammered from.
pub const STRIPES: usize = 16;

/// A stamp of 0 means "never"; any other value is the tick plus one, so that an all-zero block
/// (fresh memory, a new shared-memory slot) reads as a breaker nothing has happened to.
fn stamp(tick: u64) -> u64 {
    tick.saturating_add(1)
}

fn unstamp(stamp: u64) -> Option<u64> {
    stamp.checked_sub(1)
}

#[repr(C)]
#[derive(Default)]
struct Stripe {
    successes: AtomicU64,
    failures: AtomicU64,
    ignored: AtomicU64,
    rejections: AtomicU64,
    full_rejections: AtomicU64,
}

/// Every counter of one breaker, as plain atomics with no pointers: valid when all-zero, and the
/// same bytes whether it lives on the heap or in a shared-memory slot.
#[repr(C)]
#[derive(Default)]
pub(crate) struct CounterBlock {
    stripes: [CachePadded<Stripe>; STRIPES],
    opened: CachePadded<AtomicU64>,
    last_failure: AtomicU64,
    last_change: AtomicU64,
    successes_at_reset: AtomicU64,
    failures_at_reset: AtomicU64,
}

impl CounterBlock {
    /// Zeroes every counter and stamps `tick` as the last change: a slot claimed for a new
    /// breaker (its creation is the first "state change" a report shows).
    #[cfg_attr(not(all(unix, feature = "shared-memory")), allow(dead_code))]
    pub(crate) fn start(&self, tick: u64) {
        for s in &self.stripes {
            for c in [&s.successes, &s.failures, &s.ignored, &s.rejections, &s.full_rejections] {
                c.store(0, Ordering::Relaxed);
            }
        }
        for c in [&*self.opened, &self.last_failure, &self.successes_at_reset, &self.failures_at_reset] {
            c.store(0, Ordering::Relaxed);
        }
        self.last_change.store(stamp(tick), Ordering::Relaxed);
    }
}

/// Totals since creation (a `reset` does not clear them), striped per thread: each thread adds
/// to one of [`STRIPES`] cache-padded slots picked once per thread, and a read sums the slots, so
/// two threads on the closed path never write the same cache line. A breaker shared through
/// memory keeps its counters in its slot, so every process adds to and reads the same totals.
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
    block: NonNull<CounterBlock>,
    /// What keeps the block alive: `None` for a block this value allocated (and frees), or the
    /// shared-memory mapping the block lives in.
    owner: Option<Arc<dyn Any + Send + Sync>>,
    /// Whether failures and transitions are stamped with the time (a clock read each).
    times: bool,
}

// SAFETY: the block is only accessed through shared references to atomics, and it lives as long
// as this value (allocated by it, or kept alive by `owner`).
unsafe impl Send for Counters {}
// SAFETY: as above; every access is an atomic operation.
unsafe impl Sync for Counters {}

impl Default for Counters {
    fn default() -> Self {
        Counters { block: NonNull::from(Box::leak(Box::<CounterBlock>::default())), owner: None, times: false }
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        if self.owner.is_none() {
            // SAFETY: allocated by `Default` through a Box and never freed elsewhere.
            drop(unsafe { Box::from_raw(self.block.as_ptr()) });
        }
    }
}

/// A sum of [`Counters`] read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Calls that reported success.
    pub successes: u64,
    /// Calls that reported failure.
    pub failures: u64,
    /// Calls that reported neither, or were dropped without an outcome.
    pub ignored: u64,
    /// Calls rejected without running by the state (OPEN, HALF_OPEN with every probe slot
    /// taken, FORCED_OPEN).
    pub rejections: u64,
    /// Calls rejected without running because `max_concurrent_calls` calls were in flight.
    pub full_rejections: u64,
    /// Transitions into OPEN or FORCED_OPEN.
    pub opened: u64,
}

impl Totals {
    /// Every call counted: successes, failures, ignored calls and both kinds of rejection. Saturates: the
    /// counters of a shared-memory slot may hold anything, and a sum of them never wraps to a
    /// small number.
    ///
    /// ```
    /// let breaker = cb_core::CircuitBreaker::new(Default::default()).unwrap();
    /// let _ = breaker.call(|| Ok::<_, ()>(()));
    /// let _ = breaker.call(|| Err::<(), _>("down"));
    /// assert_eq!(breaker.metrics().totals().requests(), 2);
    /// ```
    pub fn requests(&self) -> u64 {
        self.successes
            .saturating_add(self.failures)
            .saturating_add(self.ignored)
            .saturating_add(self.rejections)
            .saturating_add(self.full_rejections)
    }
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // Processes sharing a slot each start counting threads at zero; the process id spreads
        // their first threads over different stripes.
        static INDEX: usize = (NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize) % STRIPES;
    }
    INDEX.with(|i| *i)
}

impl Counters {
    /// Counters kept in `block`, which `owner` keeps alive (a shared-memory mapping).
    ///
    /// # Safety
    /// `block` must point to a `CounterBlock` that stays valid, and is only accessed atomically,
    /// for as long as `owner` lives.
    #[cfg_attr(not(all(unix, feature = "shared-memory")), allow(dead_code))]
    pub(crate) unsafe fn in_place(block: NonNull<CounterBlock>, owner: Arc<dyn Any + Send + Sync>) -> Self {
        Counters { block, owner: Some(owner), times: false }
    }

    /// Also stamps every failure and every transition with the time, for
    /// [`Counters::last_failure_tick`] and [`Counters::last_change_tick`] (and the breaker's
    /// `last_failure_time()` / `last_state_change_time()`). Costs a clock read per failure and
    /// per transition that the breaker would not otherwise make (about 5 ns each with the
    /// default clock: half of a failure's cost), so it is opt-in: plain counters only count.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Counters, DefaultClock};
    /// let plain = CircuitBreaker::new(Config::default()).unwrap();
    /// let _ = plain.call(|| Err::<(), _>("down"));
    /// assert_eq!(plain.metrics().last_failure_tick(), None);
    /// let stamped = CircuitBreaker::with_parts(Config::default(), DefaultClock::default(), Counters::default().with_times()).unwrap();
    /// let _ = stamped.call(|| Err::<(), _>("down"));
    /// assert!(stamped.metrics().last_failure_tick().is_some());
    /// ```
    pub fn with_times(mut self) -> Self {
        self.times = true;
        self
    }

    #[inline(always)]
    fn block(&self) -> &CounterBlock {
        // SAFETY: see the type's Send/Sync argument: the block outlives `self`.
        unsafe { self.block.as_ref() }
    }

    #[inline]
    fn stripe(&self) -> &Stripe {
        &self.block().stripes[stripe_index()]
    }

    /// Sums every stripe. Concurrent calls may or may not be included. Sums saturate: a block in
    /// shared memory may hold anything.
    ///
    /// ```
    /// let counters = cb_core::Counters::default();
    /// assert_eq!(counters.totals().successes, 0);
    /// ```
    pub fn totals(&self) -> Totals {
        let b = self.block();
        let mut t = Totals { opened: b.opened.load(Ordering::Relaxed), ..Totals::default() };
        for s in b.stripes.iter() {
            t.successes = t.successes.saturating_add(s.successes.load(Ordering::Relaxed));
            t.failures = t.failures.saturating_add(s.failures.load(Ordering::Relaxed));
            t.ignored = t.ignored.saturating_add(s.ignored.load(Ordering::Relaxed));
            t.rejections = t.rejections.saturating_add(s.rejections.load(Ordering::Relaxed));
            t.full_rejections = t.full_rejections.saturating_add(s.full_rejections.load(Ordering::Relaxed));
        }
        t
    }

    /// The tick of the last reported failure, if any was stamped (see [`Counters::with_times`];
    /// in a shared slot, by any process that stamps).
    ///
    /// ```
    /// assert_eq!(cb_core::Counters::default().last_failure_tick(), None);
    /// ```
    pub fn last_failure_tick(&self) -> Option<u64> {
        unstamp(self.block().last_failure.load(Ordering::Relaxed))
    }

    /// The tick of the last state change, if any was stamped (see [`Counters::with_times`]; a
    /// shared slot is stamped when it is claimed).
    ///
    /// ```
    /// assert_eq!(cb_core::Counters::default().last_change_tick(), None);
    /// ```
    pub fn last_change_tick(&self) -> Option<u64> {
        unstamp(self.block().last_change.load(Ordering::Relaxed))
    }

    /// Remembers the totals now as the start of a new count (what `reset` does for the counts a
    /// report shows "since the last reset"). The totals themselves are kept.
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Outcome};
    /// let breaker = CircuitBreaker::new(Default::default()).unwrap();
    /// breaker.admit().unwrap().success();
    /// breaker.metrics().mark_reset();
    /// breaker.admit().unwrap().success();
    /// assert_eq!(breaker.metrics().since_reset().successes, 1);
    /// assert_eq!(breaker.metrics().totals().successes, 2);
    /// ```
    pub fn mark_reset(&self) {
        let t = self.totals();
        let b = self.block();
        b.successes_at_reset.store(t.successes, Ordering::Relaxed);
        b.failures_at_reset.store(t.failures, Ordering::Relaxed);
    }

    /// Successes and failures since the last [`Counters::mark_reset`] (the other fields are the
    /// totals).
    pub fn since_reset(&self) -> Totals {
        let t = self.totals();
        let b = self.block();
        Totals {
            successes: t.successes.saturating_sub(b.successes_at_reset.load(Ordering::Relaxed)),
            failures: t.failures.saturating_sub(b.failures_at_reset.load(Ordering::Relaxed)),
            ..t
        }
    }
}

impl Metrics for Counters {
    #[inline(always)]
    fn wants_failure_time(&self) -> bool {
        self.times
    }

    #[inline(always)]
    fn wants_transition_time(&self) -> bool {
        self.times
    }

    #[inline]
    fn on_success(&self) {
        self.stripe().successes.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn on_failure(&self, now: u64) {
        self.stripe().failures.fetch_add(1, Ordering::Relaxed);
        if self.times {
            self.block().last_failure.store(stamp(now), Ordering::Relaxed);
        }
    }

    #[inline]
    fn on_ignored(&self) {
        self.stripe().ignored.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn on_rejected(&self) {
        self.stripe().rejections.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn on_full(&self) {
        self.stripe().full_rejections.fetch_add(1, Ordering::Relaxed);
    }

    fn on_transition(&self, transition: &Transition, now: u64) {
        if matches!(transition.to, State::Open | State::ForcedOpen) {
            self.block().opened.fetch_add(1, Ordering::Relaxed);
        }
        if self.times {
            self.block().last_change.store(stamp(now), Ordering::Relaxed);
        }
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
