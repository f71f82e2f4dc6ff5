//! Failure-rate and slow-call trip policies: a sliding window of recent calls kept beside the
//! word.
//!
//! The word's transitions stay the same pure functions; the window only decides *when*
//! CLOSED → OPEN happens besides the consecutive-failure count (whichever condition is met
//! first trips), and the trip itself is one compare-and-set on the word
//! ([`crate::Snapshot::trip`]), so exactly one thread makes it.
//!
//! # Layout
//!
//! A [`Window`] is plain atomics, no pointers: a call counter, [`WINDOW_BUCKETS`] (16)
//! buckets of one `u64` each, and two words of cached sums (152 bytes per breaker, whatever
//! the window's size). A bucket packs
//!
//! | bits | field |
//! |---|---|
//! | 63..56 | the breaker generation it belongs to (low 8 bits) |
//! | 55..40 | its epoch (low 16 bits): a time slice, or a run of consecutive calls |
//! | 39..26 | calls (at most 16,383 per bucket) |
//! | 25..13 | failures (at most 8,191) |
//! | 12..0 | slow calls (at most 8,191) |
//!
//! so a record is one compare-and-set on one bucket (its tag and room checked by one
//! subtraction), rotation is the same compare-and-set finding an older tag, and a transition
//! needs no reset at all: the next generation's calls
//! carry a new tag, and buckets tagged otherwise are not read. **The window starts clean on
//! every transition into CLOSED** (calls admitted before it are not counted), and only calls
//! admitted in CLOSED are counted (probes decide HALF_OPEN by themselves).
//!
//! Tags are truncated, so they are compared for equality only: a bucket of another generation
//! is an ended one's (overwritten) unless the word says that generation is live (then the call
//! is the stale one and is not counted); a count window's sequence says whether the window
//! moved on; a time bucket whose slice is at most 1,024 slices after the call's belongs to a
//! later slice (the call stalled a whole window or more: not counted), otherwise it is old.
//! One case stays ambiguous: a bucket untouched for exactly a multiple of 65,536 slices, or
//! 256 generations, in the same slice, carries the current tag, and its old counts read as
//! current until its slice ends.
//!
//! A failure (or slow call) decides on the window's totals: the current bucket plus the sums
//! of the closed buckets before it, which are summed once per slice and cached (tagged like a
//! bucket) for the slice's later decisions. A call that arrives late for a closed slice (a
//! thread that read the clock just before the slice ended) is still counted in its slice; the
//! decisions of the current slice that were made before it may not see it, the next slice's do.
//!
//! In a shared-memory slot the same 152 bytes sit beside the word, and every process attached
//! to the breaker counts into them (`CircuitBreaker::with_shared_window`, feature
//! `shared-memory`): the rates are the host's. A breaker in Redis keeps its window per host.
//!
//! # Windows
//!
//! - **Count-based** ([`SlidingWindow::Calls`]`(n)`): the last `n` calls, in buckets of
//!   `ceil(n / 16)` calls; the window holds the current bucket and the whole ones before it,
//!   i.e. between `n - ceil(n/16) + 1` and `n` calls (up to one bucket more when `n` is not a
//!   multiple of the bucket size). A bucket never holds more than its size: the call that
//!   finds it full moves the window on, and racing calls follow.
//! - **Time-based** ([`SlidingWindow::Time`]`(t)`): the last `t`, in `b` buckets of
//!   `ceil(t / 16)` ms (at least one clock tick, 1 ms: sub-second windows get sub-second
//!   buckets; resolution is never fixed to one second); the window holds the current bucket and
//!   the whole ones before it: a span between `(b - 1) × ceil(t/16)` and `b × ceil(t/16)` ms
//!   (for 1 s: 945 to 1008 ms).
//!
//! A bucket counts at most 16,383 calls; calls beyond that in one bucket (a time bucket at more
//! than 16,383 calls per `t / 16`) are not counted, so the rates are those of the bucket's
//! first 16,383 calls. A rate is decided only once `minimum_calls` calls are in the window: no
//! trip below it, by design (as in resilience4j and Polly).

use core::fmt;
use core::time::Duration;

use crate::loom::{AtomicU64, Ordering};

/// The buckets of a window (a window of `n` calls or `t` uses up to all of them).
pub const WINDOW_BUCKETS: usize = 16;

const GEN_BITS: u32 = 8;
const EPOCH_BITS: u32 = 16;
const CALLS_BITS: u32 = 14;
const FAIL_BITS: u32 = 13;
const SLOW_BITS: u32 = 13;
const SLOW_SHIFT: u32 = 0;
const FAIL_SHIFT: u32 = SLOW_BITS;
const CALLS_SHIFT: u32 = FAIL_SHIFT + FAIL_BITS;
const EPOCH_SHIFT: u32 = CALLS_SHIFT + CALLS_BITS;
const GEN_SHIFT: u32 = EPOCH_SHIFT + EPOCH_BITS;
const _: () = assert!(GEN_SHIFT + GEN_BITS == 64);
/// The closed slices' sums (see `Window::closed`): 15 buckets of at most 16,383 calls each.
const CLOSED_BITS: u32 = 20;
const CLOSED_CALLS_SHIFT: u32 = CLOSED_BITS;
const _: () = assert!(2 * CLOSED_BITS <= EPOCH_SHIFT && (WINDOW_BUCKETS as u64 - 1) * ((1 << CALLS_BITS) - 1) < 1 << CLOSED_BITS);

const fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

/// The most calls one bucket counts.
pub const MAX_BUCKET_CALLS: u64 = mask(CALLS_BITS);
/// The longest count-based window, in calls.
pub const MAX_WINDOW_CALLS: u64 = 100_000;
/// The longest time-based window.
pub const MAX_WINDOW_TIME: Duration = Duration::from_secs(3_600);

/// Which recent calls a rate is computed over.
///
/// ```
/// use cb_core::{Config, SlidingWindow};
/// use std::time::Duration;
/// let last_20_calls = Config::default().failure_rate_threshold(0.5).minimum_calls(10).sliding_window(SlidingWindow::Calls(20));
/// let last_half_second = Config::default().failure_rate_threshold(0.5).sliding_window(SlidingWindow::Time(Duration::from_millis(500)));
/// assert!(last_20_calls.limits().is_ok() && last_half_second.limits().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlidingWindow {
    /// The last this many calls (1 ..= [`MAX_WINDOW_CALLS`]).
    Calls(u64),
    /// The calls of the last this long (1 ms ..= [`MAX_WINDOW_TIME`]).
    Time(Duration),
}

impl Default for SlidingWindow {
    /// The last 100 calls (resilience4j's default).
    fn default() -> Self {
        SlidingWindow::Calls(100)
    }
}

/// What the window holds now.
///
/// ```
/// let totals = cb_core::WindowTotals { calls: 10, failures: 4, slow: 1 };
/// assert_eq!(totals.failure_rate(), Some(0.4));
/// assert_eq!(cb_core::WindowTotals::default().failure_rate(), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Calls in the window (successes and failures; ignored calls are not counted).
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// Slow calls among them (successful or not).
    pub slow: u64,
}

impl WindowTotals {
    /// `failures / calls`, or `None` with no call in the window.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.failures as f64 / self.calls as f64)
    }

    /// `slow / calls`, or `None` with no call in the window.
    pub fn slow_call_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.slow as f64 / self.calls as f64)
    }
}

/// The rate policy in the units the window works in (from [`crate::Config::limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateLimits {
    /// Trip at this failure rate, in parts per million (0: no failure-rate policy).
    pub(crate) failure_ppm: u64,
    /// Trip at this slow-call rate, in parts per million (0: no slow-call policy).
    pub(crate) slow_ppm: u64,
    /// A call this many ticks long or longer is slow (0: no slow-call policy).
    pub(crate) slow_ticks: u64,
    pub(crate) minimum_calls: u64,
    /// Calls per bucket (count-based), or ticks per bucket (time-based).
    pub(crate) per_bucket: u64,
    /// `ceil(2^64 / per_bucket)`: dividing by `per_bucket` as a multiplication (see `epoch_of`).
    reciprocal: u64,
    /// Buckets in the window (1 ..= WINDOW_BUCKETS).
    pub(crate) buckets: u64,
    pub(crate) by_time: bool,
    /// A bucket minus its slice's tag is below this when the common case applies: the bucket is
    /// the slice's and has room (a count window's bucket is full at `per_bucket` calls, a time
    /// window's at [`MAX_BUCKET_CALLS`]). See [`Window::count_fast`].
    fast_below: u64,
}

impl RateLimits {
    pub(crate) fn new(
        failure_rate: Option<f64>,
        slow_rate: Option<f64>,
        slow_ticks: u64,
        minimum_calls: u64,
        window: SlidingWindow,
    ) -> RateLimits {
        let ppm = |rate: Option<f64>| rate.map_or(0, |r| ((r * 1e6).round() as u64).clamp(1, 1_000_000));
        let (size, by_time) = match window {
            SlidingWindow::Calls(n) => (n, false),
            SlidingWindow::Time(t) => (t.as_millis() as u64, true),
        };
        let per_bucket = size.div_ceil(WINDOW_BUCKETS as u64).max(1);
        let buckets = size.div_ceil(per_bucket).clamp(1, WINDOW_BUCKETS as u64);
        RateLimits {
            reciprocal: if per_bucket == 1 { 0 } else { (u64::MAX / per_bucket) + 1 },
            fast_below: (if by_time { MAX_BUCKET_CALLS } else { per_bucket }) << CALLS_SHIFT,
            failure_ppm: ppm(failure_rate),
            slow_ppm: if slow_ticks > 0 { ppm(slow_rate.or(Some(1.0))) } else { 0 },
            slow_ticks,
            minimum_calls,
            per_bucket,
            buckets,
            by_time,
        }
    }

    /// `n / per_bucket`, by a multiplication: exact while `n * per_bucket < 2^64` (with
    /// `reciprocal = floor(2^64 / d) + 1` the error term is `n / 2^64 < 1 / d`), which holds
    /// for every tick count (< 2^46) and per-bucket size (< 2^18); a larger `n` divides.
    #[inline(always)]
    fn epoch_of(&self, n: u64) -> u64 {
        if self.per_bucket == 1 {
            return n;
        }
        if n < (1 << 46) {
            return ((u128::from(n) * u128::from(self.reciprocal)) >> 64) as u64;
        }
        n / self.per_bucket
    }

    /// Whether recording a call reads the clock (a time window or a slow-call policy).
    #[inline(always)]
    pub(crate) fn reads_clock(&self) -> bool {
        self.by_time || self.slow_ticks > 0
    }

    /// Whether the rates at `totals` trip the breaker, and why.
    #[inline(always)]
    fn decide(&self, t: WindowTotals) -> Option<crate::Reason> {
        if t.calls < self.minimum_calls || t.calls == 0 {
            return None;
        }
        let at_least = |count: u64, ppm: u64| ppm > 0 && u128::from(count) * 1_000_000 >= u128::from(ppm) * u128::from(t.calls);
        if at_least(t.failures, self.failure_ppm) {
            return Some(crate::Reason::FailureRate { failures: t.failures, calls: t.calls });
        }
        if at_least(t.slow, self.slow_ppm) {
            return Some(crate::Reason::SlowCallRate { slow: t.slow, calls: t.calls });
        }
        None
    }
}

/// The sliding window of one breaker: see the [module docs](self).
#[repr(C)]
pub struct Window {
    /// The current epoch of a count-based window: the bucket calls go to now. The call that
    /// fills a bucket moves it on (never reset: epochs keep increasing).
    seq: AtomicU64,
    buckets: [AtomicU64; WINDOW_BUCKETS],
    /// The sums of the closed slices in the window (every bucket but the current one), for
    /// the slice and generation in their tag, so that deciding on a failure reads three words
    /// instead of sixteen. `[tag | calls << 20 | failures, tag | slow]`; a decision in another
    /// slice finds another tag and sums the buckets again (once per slice).
    closed: [AtomicU64; 2],
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window").field("seq", &self.seq.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Default for Window {
    fn default() -> Self {
        Window {
            seq: AtomicU64::new(0),
            buckets: core::array::from_fn(|_| AtomicU64::new(0)),
            closed: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Window {
    /// Empties the window (a shared-memory slot claimed for a new breaker).
    #[cfg_attr(not(all(unix, feature = "shared-memory")), allow(dead_code))]
    pub(crate) fn clear(&self) {
        self.seq.store(0, Ordering::Relaxed);
        for word in self.buckets.iter().chain(&self.closed) {
            word.store(0, Ordering::Relaxed);
        }
    }
}

/// Where a breaker's window lives: its own heap allocation, or a shared-memory slot that every
/// process attached to the breaker counts into (see [`crate::SharedSlot::window`]).
pub(crate) enum WindowHandle {
    Owned(Box<Window>),
    #[cfg(all(unix, feature = "shared-memory"))]
    Mapped(crate::shared::SlotWindow),
}

impl WindowHandle {
    #[inline(always)]
    pub(crate) fn get(&self) -> &Window {
        match self {
            WindowHandle::Owned(window) => window,
            #[cfg(all(unix, feature = "shared-memory"))]
            WindowHandle::Mapped(window) => window,
        }
    }
}

/// A bucket's tag: generation and epoch, both truncated.
fn tag(generation: u64, epoch: u64) -> u64 {
    ((generation & mask(GEN_BITS)) << GEN_SHIFT) | ((epoch & mask(EPOCH_BITS)) << EPOCH_SHIFT)
}

fn tag_of(bucket: u64) -> u64 {
    bucket & !mask(EPOCH_SHIFT)
}

fn counts(bucket: u64) -> WindowTotals {
    WindowTotals {
        calls: (bucket >> CALLS_SHIFT) & mask(CALLS_BITS),
        failures: (bucket >> FAIL_SHIFT) & mask(FAIL_BITS),
        slow: (bucket >> SLOW_SHIFT) & mask(SLOW_BITS),
    }
}

/// How many slices ahead of a call's a bucket of its generation can be and still be read as
/// newer (the call stalled that long between reading the clock and writing); further ahead,
/// its truncated epoch has wrapped: it is older.
const LATE_EPOCHS: u64 = 1 << 10;

impl Window {
    /// The epoch of a call recorded now (count-based: takes the next call number).
    #[inline]
    fn current_epoch(&self, now: u64, limits: &RateLimits) -> u64 {
        if limits.by_time {
            limits.epoch_of(now)
        } else {
            self.seq.load(Ordering::Acquire)
        }
    }

    /// A count-based window's bucket for `epoch` is full: the window moves on to the next
    /// bucket (one of racing callers does; the others follow it). Returns the epoch now.
    fn move_on(&self, epoch: u64) -> u64 {
        match self.seq.compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => epoch + 1,
            Err(now) => now,
        }
    }

    /// Counts one call of `generation` (a failure and/or slow) and, when it was a failure or
    /// slow, says whether the window's rates now trip the breaker. `live` reads the breaker's
    /// generation now (asked only when a bucket of another generation is found).
    #[inline(always)]
    pub(crate) fn record(
        &self,
        generation: u64,
        failed: bool,
        slow: bool,
        now: u64,
        limits: &RateLimits,
        live: &dyn Fn() -> u64,
    ) -> Option<crate::Reason> {
        let epoch = self.current_epoch(now, limits);
        let add = (1 << CALLS_SHIFT) | (u64::from(failed) << FAIL_SHIFT) | (u64::from(slow) << SLOW_SHIFT);
        if !self.count_fast(generation, epoch, add, limits) {
            return self.record_slow(generation, epoch, add, failed || slow, limits, live);
        }
        if failed || slow {
            return self.decide(generation, epoch, limits);
        }
        None // a fast success cannot raise a rate
    }

    /// The common case, one compare-and-set: the bucket of `epoch` is this slice's already and
    /// has room. One subtraction checks both: a bucket minus its own tag is its counts, below
    /// `fast_below` when it has room; a bucket of an older tag wraps around, and one of a newer
    /// tag leaves 2^40 or more. A full time bucket is common too (at more than 16,383 calls per
    /// slice): the call is not counted (documented) and nothing is written.
    #[inline(always)]
    fn count_fast(&self, generation: u64, epoch: u64, add: u64, limits: &RateLimits) -> bool {
        let bucket = &self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        let current = bucket.load(Ordering::Acquire);
        let counts = current.wrapping_sub(tag(generation, epoch));
        if counts < limits.fast_below {
            return bucket.compare_exchange_weak(current, current + add, Ordering::AcqRel, Ordering::Acquire).is_ok();
        }
        limits.by_time && counts < 1 << EPOCH_SHIFT
    }

    /// Everything but the common case, then the decision if `decide`.
    #[cold]
    #[inline(never)]
    fn record_slow(
        &self,
        generation: u64,
        epoch: u64,
        add: u64,
        decide: bool,
        limits: &RateLimits,
        live: &dyn Fn() -> u64,
    ) -> Option<crate::Reason> {
        let epoch = self.count_slow(generation, epoch, add, limits, live)?;
        if decide {
            return self.decide(generation, epoch, limits);
        }
        None
    }

    #[inline(always)]
    fn decide(&self, generation: u64, epoch: u64, limits: &RateLimits) -> Option<crate::Reason> {
        limits.decide(self.totals_at(generation, epoch, limits))
    }

    /// The compare-and-set loop for everything but the common case: a full count bucket (the
    /// window moves on), rotation (the bucket held an older slice or generation), a call late
    /// by a whole window, a full time bucket, a lost race. Returns the epoch the call was
    /// counted in (or would have been, in a full time bucket), or `None` if it is not counted:
    /// stale (its generation has ended) or late by a whole window.
    ///
    /// Tags hold truncated generations and epochs, so "older" and "newer" are not read from
    /// them alone: a bucket of another generation is older unless it is the live one's (asked
    /// of `live`, the word); in a count window the sequence says whether the window moved on;
    /// in a time window a bucket is newer only by at most [`LATE_EPOCHS`] slices (a thread that
    /// stalled between its clock read and its write), else older (however long ago).
    fn count_slow(&self, generation: u64, mut epoch: u64, add: u64, limits: &RateLimits, live: &dyn Fn() -> u64) -> Option<u64> {
        // A count bucket is full at its size (then the window moves on), a time bucket at the
        // most a bucket counts (then calls are not counted until the next slice, documented).
        let full = if limits.by_time { MAX_BUCKET_CALLS } else { limits.per_bucket };
        'bucket: loop {
            let bucket = &self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
            let ours = tag(generation, epoch);
            let mut current = bucket.load(Ordering::Acquire);
            loop {
                let next = if counts(current).calls == 0 {
                    ours | add // never written (every write counts a call)
                } else if tag_of(current) == ours {
                    if counts(current).calls < full {
                        current + add
                    } else if limits.by_time {
                        return Some(epoch);
                    } else {
                        epoch = self.move_on(epoch);
                        continue 'bucket;
                    }
                } else if current >> GEN_SHIFT != generation & mask(GEN_BITS) {
                    if current >> GEN_SHIFT == live() & mask(GEN_BITS) {
                        return None; // the live generation's bucket: this call's has ended
                    }
                    ours | add // an ended generation's bucket
                } else if !limits.by_time {
                    let now = self.seq.load(Ordering::Acquire);
                    if now != epoch {
                        // The window moved on while this call was on its way: follow it.
                        epoch = now;
                        continue 'bucket;
                    }
                    ours | add // rotation: every bucket but the sequence's is older
                } else {
                    let ahead = ((current >> EPOCH_SHIFT).wrapping_sub(epoch)) & mask(EPOCH_BITS);
                    if ahead <= LATE_EPOCHS {
                        return None; // a slice at least a window later owns the bucket: too late
                    }
                    ours | add // rotation: the bucket held an older slice
                };
                match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(epoch),
                    Err(actual) => current = actual,
                }
            }
        }
    }

    /// What the window of `generation` holds at `now`.
    pub(crate) fn totals(&self, generation: u64, now: u64, limits: &RateLimits) -> WindowTotals {
        self.totals_at(generation, self.current_epoch(now, limits), limits)
    }

    /// The current bucket plus the closed slices' sums, from the cache when it is of this
    /// slice (see [`Window::closed`]).
    #[inline(always)]
    fn totals_at(&self, generation: u64, epoch: u64, limits: &RateLimits) -> WindowTotals {
        let ours = tag(generation, epoch);
        let (sums, slow) = (self.closed[0].load(Ordering::Acquire), self.closed[1].load(Ordering::Acquire));
        let mut total = if tag_of(sums) == ours && tag_of(slow) == ours {
            WindowTotals { calls: (sums >> CLOSED_CALLS_SHIFT) & mask(CLOSED_BITS), failures: sums & mask(CLOSED_BITS), slow: slow & mask(CLOSED_BITS) }
        } else {
            let closed = self.sum_closed(generation, epoch, limits);
            self.closed[0].store(ours | (closed.calls << CLOSED_CALLS_SHIFT) | closed.failures, Ordering::Release);
            self.closed[1].store(ours | closed.slow, Ordering::Release);
            closed
        };
        let current = self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize].load(Ordering::Acquire);
        if tag_of(current) == ours {
            let c = counts(current);
            total.calls += c.calls;
            total.failures += c.failures;
            total.slow += c.slow;
        }
        total
    }

    /// The sums of the slices before `epoch` that are in the window.
    #[cold]
    #[inline(never)]
    fn sum_closed(&self, generation: u64, epoch: u64, limits: &RateLimits) -> WindowTotals {
        let mut sum = WindowTotals::default();
        for back in 1..limits.buckets.min(epoch + 1) {
            let e = epoch - back;
            let bucket = self.buckets[(e % WINDOW_BUCKETS as u64) as usize].load(Ordering::Acquire);
            if tag_of(bucket) == tag(generation, e) {
                let c = counts(bucket);
                sum.calls += c.calls;
                sum.failures += c.failures;
                sum.slow += c.slow;
            }
        }
        sum
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn limits(window: SlidingWindow) -> RateLimits {
        RateLimits::new(Some(0.5), None, 0, 4, window)
    }

    #[test]
    fn rotation_drops_old_slices_and_never_counts_negative_or_twice() {
        let l = limits(SlidingWindow::Time(Duration::from_millis(160))); // 16 buckets of 10 ms
        let w = Window::default();
        for t in 0..160 {
            assert_eq!(w.record(1, false, false, t, &l, &|| 1), None);
        }
        assert_eq!(w.totals(1, 159, &l).calls, 160);
        // 10 ms later the oldest slice (t 0..10) has left the window.
        assert_eq!(w.totals(1, 160, &l).calls, 150);
        assert_eq!(w.totals(1, 1_000, &l), WindowTotals::default());
        assert_eq!(w.totals(2, 159, &l), WindowTotals::default(), "another generation starts clean");
    }

    #[test]
    fn a_stale_generation_does_not_overwrite_a_newer_one() {
        let l = limits(SlidingWindow::Calls(16));
        let w = Window::default();
        w.record(5, true, false, 0, &l, &|| 5);
        w.record(4, true, false, 0, &l, &|| 5); // stale
        w.record(5, false, false, 0, &l, &|| 5);
        assert_eq!(w.totals(5, 0, &l), WindowTotals { calls: 2, failures: 1, slow: 0 });
    }

    #[test]
    fn division_by_multiplication_is_exact() {
        for per_bucket in [1u64, 2, 3, 7, 16, 63, 1_000, 6_250, 225_000] {
            let l = RateLimits { per_bucket, ..RateLimits::new(Some(0.5), None, 0, 1, SlidingWindow::Calls(per_bucket * 16)) };
            let l = RateLimits { reciprocal: if per_bucket == 1 { 0 } else { u64::MAX / per_bucket + 1 }, ..l };
            for n in (0..10_000).chain([(1 << 46) - 1, (1 << 46) - per_bucket, 1 << 46, u64::MAX, 1_764_000_000_000]) {
                assert_eq!(l.epoch_of(n), n / per_bucket, "{n} / {per_bucket}");
            }
        }
    }

    /// The brute-force sum the cached decision must agree with.
    fn summed(w: &Window, generation: u64, epoch: u64, l: &RateLimits) -> WindowTotals {
        let mut t = w.sum_closed(generation, epoch, l);
        let current = w.buckets[(epoch % WINDOW_BUCKETS as u64) as usize].load(Ordering::Relaxed);
        if tag_of(current) == tag(generation, epoch) {
            t.calls += counts(current).calls;
            t.failures += counts(current).failures;
            t.slow += counts(current).slow;
        }
        t
    }

    #[test]
    fn cached_sums_of_closed_slices_follow_every_slice_and_generation() {
        let l = limits(SlidingWindow::Time(Duration::from_millis(160))); // 16 buckets of 10 ms
        let w = Window::default();
        for t in 0..400u64 {
            let generation = t / 150; // a new generation every 150 ms
            w.record(generation, t % 3 == 0, false, t, &l, &|| generation);
            // A decision (cached after the first in each slice) and a brute-force sum agree,
            // including the calls counted in the current slice since the cache was written.
            assert_eq!(w.totals(generation, t, &l), summed(&w, generation, t / 10, &l), "at {t}");
        }
        // The cache is of the slice asked about: another slice or generation is summed afresh.
        assert_eq!(w.totals(2, 1_000, &l), WindowTotals::default());
        assert_eq!(w.totals(1, 399, &l), WindowTotals { calls: 60, failures: 20, slow: 0 }, "generation 1's last 60 ms");
        assert_eq!(w.totals(1, 399, &l), summed(&w, 1, 39, &l));
    }

    #[test]
    fn a_count_bucket_never_holds_more_than_its_size_under_racing_threads() {
        let l = limits(SlidingWindow::Calls(100)); // 15 buckets of 7 calls
        let w = std::sync::Arc::new(Window::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        w.record(0, (n + i) % 4 == 0, false, 0, &l, &|| 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for bucket in &w.buckets {
            assert!(counts(bucket.load(Ordering::Relaxed)).calls <= 7);
        }
        let total = w.totals(0, 0, &l);
        assert!((99..=105).contains(&total.calls), "{total:?}");
        assert_eq!(total, summed(&w, 0, w.seq.load(Ordering::Relaxed), &l));
    }

    #[test]
    fn a_time_window_counts_again_after_a_quiet_spell_its_truncated_epochs_misread() {
        // 16 buckets of 1 ms. After 40 s of quiet the buckets' 16-bit epochs, compared by
        // wrapping distance alone, looked newer than the clock's, and calls went into them
        // unread: the window was blind until the distance wrapped again.
        let l = limits(SlidingWindow::Time(Duration::from_millis(16)));
        let w = Window::default();
        for t in 0..16 {
            w.record(0, true, false, t, &l, &|| 0);
        }
        for t in 40_016..40_026 {
            w.record(0, t % 2 == 0, false, t, &l, &|| 0);
        }
        assert_eq!(w.totals(0, 40_025, &l), WindowTotals { calls: 10, failures: 5, slow: 0 });
        // A call that stalled for less than a window is counted in its own slice; one that
        // stalled for a whole window or more finds a later slice in its bucket and is not.
        w.record(0, true, false, 40_020, &l, &|| 0);
        assert_eq!(w.totals(0, 40_025, &l).calls, 11);
        w.record(0, true, false, 40_009, &l, &|| 0);
        assert_eq!(w.totals(0, 40_025, &l).calls, 11);
    }

    #[test]
    fn a_bucket_of_an_ended_generation_is_reused_whatever_its_truncated_tag_says() {
        // Generation 100's bucket, then generation 306 (56 in 8 bits, "before" 100 by wrapping
        // distance): it used to be taken for a newer generation's, and every call was dropped.
        let l = limits(SlidingWindow::Calls(160));
        let w = Window::default();
        for _ in 0..5 {
            w.record(100, true, false, 0, &l, &|| 100);
        }
        for _ in 0..3 {
            w.record(306, false, false, 0, &l, &|| 306);
        }
        assert_eq!(w.totals(306, 0, &l), WindowTotals { calls: 3, failures: 0, slow: 0 });
        // While 306 is live, a late call of 100 changes nothing.
        w.record(100, true, false, 0, &l, &|| 306);
        assert_eq!(w.totals(306, 0, &l), WindowTotals { calls: 3, failures: 0, slow: 0 });
    }

    #[test]
    fn buckets_saturate_instead_of_wrapping() {
        let l = RateLimits::new(Some(0.5), None, 0, 1, SlidingWindow::Time(Duration::from_secs(16)));
        let w = Window::default();
        for _ in 0..(MAX_BUCKET_CALLS + 10) {
            w.record(0, false, false, 5, &l, &|| 0);
        }
        assert_eq!(w.totals(0, 5, &l).calls, MAX_BUCKET_CALLS);
    }
}
