//! Where the breaker gets the time: a trait, so tests and loom control it, and the clocks that
//! ship.
//!
//! Ticks are milliseconds since a host-wide epoch. On Linux every clock here counts from the
//! same `CLOCK_MONOTONIC` epoch (boot), so a word written by one process is read correctly by
//! another on the same host: the property a breaker shared through memory needs. The word holds
//! 46 bits of ticks: 2,229 years of uptime before it could wrap.
//!
//! The clocks that ship, and what each costs, are listed on [`Clock`].

use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::loom::{AtomicU64, Ordering};

/// A source of ticks (milliseconds since a fixed, host-wide epoch) that never goes backwards.
///
/// The clocks that ship:
///
/// | clock | resolution | cost of `now` (measured, see BENCHMARKS.md) | notes |
/// |---|---|---|---|
/// | [`MonotonicClock`] | 1 ms (reads ns) | one `clock_gettime(CLOCK_MONOTONIC)` through the vDSO | exact |
/// | [`CoarseClock`] (the default, [`DefaultClock`]) | one kernel tick (1–10 ms; `clock_getres` says) | one `clock_gettime(CLOCK_MONOTONIC_COARSE)` | never ahead of real time, so a timeout ends late by at most one tick |
/// | [`CachedClock`] | the ticker's interval (1 ms by default) | one relaxed atomic load | opt-in: a background thread refreshes it |
/// | [`ManualClock`] | whatever the test sets | one atomic load | for tests and loom |
///
/// ```
/// use cb_core::{Clock, ManualClock};
/// let clock = ManualClock::new(5);
/// assert_eq!(clock.now(), 5);
/// ```
pub trait Clock: Send + Sync {
    /// The current tick.
    fn now(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// The clock a breaker uses unless told otherwise: [`CoarseClock`], the cheapest host-wide
/// monotonic clock (see the table on [`Clock`]).
pub type DefaultClock = CoarseClock;

#[cfg(unix)]
fn clock_gettime_ms(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec, and both clock ids used here exist on every
    // Linux since 2.6.32; on failure (impossible for these ids) `ts` stays zero.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64) * 1_000 + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(not(unix))]
fn process_epoch_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// `CLOCK_MONOTONIC`: exact to the millisecond, host-wide.
///
/// ```
/// use cb_core::{Clock, MonotonicClock};
/// let a = MonotonicClock.now();
/// assert!(MonotonicClock.now() >= a);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> u64 {
        #[cfg(unix)]
        return clock_gettime_ms(libc::CLOCK_MONOTONIC);
        #[cfg(not(unix))]
        return process_epoch_ms();
    }
}

/// `CLOCK_MONOTONIC_COARSE` on Linux: the time at the last kernel tick, so it costs no more than
/// a memory read in the vDSO. Never ahead of [`MonotonicClock`]; behind it by less than one tick.
/// Other systems fall back to [`MonotonicClock`].
///
/// ```
/// use cb_core::{Clock, CoarseClock, MonotonicClock};
/// let coarse = CoarseClock.now();
/// assert!(MonotonicClock.now() >= coarse);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> u64 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return clock_gettime_ms(libc::CLOCK_MONOTONIC_COARSE);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return MonotonicClock.now();
    }
}

struct CachedInner {
    line: crossbeam_utils::CachePadded<CachedLine>,
    stop: AtomicBool,
    interval: Duration,
}

/// What every reading loads, on one cache line.
struct CachedLine {
    ticks: StdAtomicU64,
    /// The process's fork count when the ticker was (re)started in it.
    forks: StdAtomicU64,
}

/// Forks of this process so far, bumped in the child by a `pthread_atfork` handler (one atomic
/// add: async-signal-safe). A child has no ticker thread: a clock that sees the count change
/// starts a new one.
static FORKS: StdAtomicU64 = StdAtomicU64::new(0);

/// Forks of this process so far (starting to count, if it was not yet): a handle that owns
/// threads or connections compares it with the count it started with to notice it is in a child.
#[cfg_attr(not(any(feature = "redis", all(unix, feature = "shared-memory"))), allow(dead_code))]
pub(crate) fn forks() -> u64 {
    watch_forks();
    FORKS.load(StdOrdering::Acquire)
}

#[cfg(unix)]
fn watch_forks() {
    extern "C" fn in_child() {
        FORKS.fetch_add(1, StdOrdering::Relaxed);
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only does an atomic add, which is safe in a forked child.
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(in_child));
    });
}

#[cfg(not(unix))]
fn watch_forks() {}

/// A clock read from memory, kept fresh by a background thread that stores
/// [`MonotonicClock`]'s reading every `interval`. The cheapest clock; opt-in because it costs a
/// thread. The thread stops when the last clone of the clock is dropped. In a child made by
/// `fork()` (which copies no threads) the first reading restarts the ticker, so the clock keeps
/// moving in pre-forked workers too.
///
/// ```
/// use cb_core::{CachedClock, Clock};
/// use std::time::Duration;
/// let clock = CachedClock::start(Duration::from_millis(1));
/// let a = clock.now();
/// std::thread::sleep(Duration::from_millis(20));
/// assert!(clock.now() > a);
/// ```
#[derive(Clone)]
pub struct CachedClock {
    inner: Arc<CachedInner>,
    _owner: Arc<TickerOwner>,
}

/// Stops the ticker when the last [`CachedClock`] clone goes away.
struct TickerOwner(Arc<CachedInner>);

impl Drop for TickerOwner {
    fn drop(&mut self) {
        self.0.stop.store(true, StdOrdering::Relaxed);
    }
}

impl CachedClock {
    /// Starts the ticker thread. A reading is at most `interval` (plus scheduling delay) behind.
    pub fn start(interval: Duration) -> Self {
        watch_forks();
        let inner = Arc::new(CachedInner {
            line: crossbeam_utils::CachePadded::new(CachedLine {
                ticks: StdAtomicU64::new(MonotonicClock.now()),
                forks: StdAtomicU64::new(FORKS.load(StdOrdering::Relaxed)),
            }),
            stop: AtomicBool::new(false),
            interval,
        });
        spawn_ticker(Arc::clone(&inner));
        CachedClock { _owner: Arc::new(TickerOwner(Arc::clone(&inner))), inner }
    }

    /// The first reading in a forked child: start this process's ticker (once, whichever thread
    /// gets here first) and read the real clock meanwhile.
    #[cold]
    #[inline(never)]
    fn restart_after_fork(&self) -> u64 {
        let now = MonotonicClock.now();
        let line = &self.inner.line;
        let seen = line.forks.load(StdOrdering::Relaxed);
        let forks = FORKS.load(StdOrdering::Relaxed);
        if seen != forks && line.forks.compare_exchange(seen, forks, StdOrdering::AcqRel, StdOrdering::Relaxed).is_ok() {
            line.ticks.store(now, StdOrdering::Relaxed);
            spawn_ticker(Arc::clone(&self.inner));
        }
        now
    }
}

fn spawn_ticker(ticker: Arc<CachedInner>) {
    thread::Builder::new()
        .name("cb-clock-ticker".into())
        .spawn(move || {
            while !ticker.stop.load(StdOrdering::Relaxed) {
                ticker.line.ticks.store(MonotonicClock.now(), StdOrdering::Relaxed);
                thread::sleep(ticker.interval);
            }
        })
        .expect("spawning the clock ticker thread");
}

impl Clock for CachedClock {
    #[inline]
    fn now(&self) -> u64 {
        let line = &self.inner.line;
        if line.forks.load(StdOrdering::Relaxed) == FORKS.load(StdOrdering::Relaxed) {
            line.ticks.load(StdOrdering::Relaxed)
        } else {
            self.restart_after_fork()
        }
    }
}

impl core::fmt::Debug for CachedClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CachedClock").field("ticks", &self.now()).finish()
    }
}

/// Milliseconds since the Unix epoch, from `CLOCK_REALTIME_COARSE` (one vDSO read, one
/// kernel tick of resolution): the clock of breakers shared between hosts, which share no
/// monotonic clock. It can jump when the system time is set; a stamp it wrote that is later
/// more than [`crate::CLOCK_SKEW_TICKS`] ahead of the clock reads as elapsed (see
/// [`crate::word`]), so a jump back never wedges a breaker.
///
/// ```
/// use cb_core::{Clock, WallClock};
/// use std::time::{SystemTime, UNIX_EPOCH};
/// let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
/// assert!(WallClock.now().abs_diff(ms) < 1_000);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    #[inline]
    fn now(&self) -> u64 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return clock_gettime_ms(libc::CLOCK_REALTIME_COARSE);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    }
}

/// Turns clock ticks into wall-clock time, from one reading of both clocks taken together.
///
/// Converting with a fixed anchor gives the same answer for the same tick on every call (and,
/// with a region's anchor, in every process sharing it), where subtracting "ticks ago" from the
/// wall clock now would move by up to a coarse tick between two reads.
///
/// ```
/// use cb_core::WallAnchor;
/// use std::time::{Duration, UNIX_EPOCH};
/// let anchor = WallAnchor::new(1_700_000_000_000, 5_000);
/// assert_eq!(anchor.wall_time(6_500), UNIX_EPOCH + Duration::from_millis(1_700_000_001_500));
/// assert_eq!(anchor.wall_time(4_000), UNIX_EPOCH + Duration::from_millis(1_699_999_999_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallAnchor {
    unix_ms: u64,
    tick: u64,
}

impl WallAnchor {
    /// The wall-clock time `unix_ms` (milliseconds since the Unix epoch) was tick `tick`.
    pub const fn new(unix_ms: u64, tick: u64) -> Self {
        WallAnchor { unix_ms, tick }
    }

    /// Reads `clock` and the wall clock now.
    ///
    /// ```
    /// use cb_core::{Clock, MonotonicClock, WallAnchor};
    /// use std::time::{Duration, SystemTime};
    /// let anchor = WallAnchor::now(&MonotonicClock);
    /// let now = anchor.wall_time(MonotonicClock.now());
    /// assert!(SystemTime::now().duration_since(now).unwrap_or_default() < Duration::from_secs(1));
    /// ```
    pub fn now(clock: &impl Clock) -> Self {
        let tick = clock.now();
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        WallAnchor { unix_ms, tick }
    }

    /// The wall-clock time of `tick`.
    pub fn wall_time(&self, tick: u64) -> SystemTime {
        let ms = if tick >= self.tick {
            self.unix_ms.saturating_add(tick - self.tick)
        } else {
            self.unix_ms.saturating_sub(self.tick - tick)
        };
        UNIX_EPOCH + Duration::from_millis(ms)
    }
}

/// A clock that moves only when told to: for tests, and for loom (its atomic is loom's there).
///
/// ```
/// use cb_core::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(0);
/// clock.advance(Duration::from_millis(1_500));
/// assert_eq!(clock.now(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    ticks: AtomicU64,
}

impl ManualClock {
    /// A clock reading `ticks`.
    pub fn new(ticks: u64) -> Self {
        ManualClock { ticks: AtomicU64::new(ticks) }
    }

    /// Moves the clock forward (whole milliseconds, rounded down).
    pub fn advance(&self, by: Duration) {
        self.ticks.fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }

    /// Sets the clock to `ticks`.
    pub fn set(&self, ticks: u64) {
        self.ticks.store(ticks, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }
}
