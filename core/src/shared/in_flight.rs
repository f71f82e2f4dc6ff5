//! The host-wide count of a shared breaker's calls in flight, kept in its slot beside the word.
//!
//! A [`SlotInFlight`] ([`SharedSlot::in_flight`](super::SharedSlot::in_flight)) admits a call
//! only while fewer than `max` calls of *every process of the host together* are in flight, and
//! gives back the places of a process that died holding them without anyone's help.
//!
//! ```
//! use cb_core::{Config, RegionOptions, SharedRegion};
//! # let dir = std::env::temp_dir().join(format!("cb-doc-inflight-mod-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let options = RegionOptions::new().path(dir.join("region"));
//! let (worker_a, worker_b) = (SharedRegion::open(&options)?, SharedRegion::open(&options)?);
//! let a = worker_a.attach("quotes", &Config::default())?.in_flight();
//! let b = worker_b.attach("quotes", &Config::default())?.in_flight();
//! assert!(a.try_enter(2) && b.try_enter(2));
//! assert!(!a.try_enter(2), "two calls in flight in the host: full");
//! b.leave();
//! assert_eq!(a.in_flight(), 1);
//! assert!(a.try_enter(2));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), cb_core::RegionError>(())
//! ```
//!
//! # Rows, one a process
//!
//! Each slot holds a table of [`IN_FLIGHT_ROWS`] counters, one *row* for each process that holds
//! places in the breaker, and a hint of how many rows were ever used:
//!
//! ```text
//! used          rows claimed so far (a hint: rows at and past it are not read)
//! reclaimed_at  CLOCK_MONOTONIC ms of the last look for dead rows (a rate limit)
//! rows[64]      places held by each row's owner
//! ```
//!
//! - **Owning a row.** A process owns a row by an *open file description* lock
//!   (`fcntl(F_OFD_SETLK)`, write, non-blocking) on that row's 8 bytes of the region file,
//!   taken through a descriptor of its own (the region file opened once more). The kernel
//!   drops the lock when the process dies, whoever killed it and however, so the lock says
//!   exactly whether a row's owner lives: no pid is stored, so no reused pid can pass for the
//!   owner, and no time-based lease can expire under a live call that hangs. The lock is the
//!   arbiter of who owns a row: two processes claiming at once both try the same free row and
//!   the kernel gives it to one, so no region-wide `flock` is needed (and a claim never waits).
//!   A process claims its row lazily, on its first admission (the cold path, under a `Mutex`
//!   of the mapping), takes the lowest free row, zeroes what a dead owner left in it (so
//!   claiming a dead process's row gives its places back too) and raises the hint; it keeps that row for every breaker of the same name in the same
//!   [`SharedRegion`](super::SharedRegion) (another `SharedRegion::open` of the same file is
//!   another owner, with rows of its own).
//! - **Admission** ([`SlotInFlight::try_enter`]): add 1 to the own row (one atomic
//!   read-modify-write), then sum the used rows (one or two cache lines for a few processes); a
//!   sum over `max` takes the 1 back and rejects. Every such step is sequentially consistent, so
//!   of two racers at the last place at least one sees the other: never more than `max` are
//!   admitted at once, under any interleaving; both may back off, which only rejects a call
//!   that could have run. No system call, lock or allocation on this path once the row is
//!   claimed.
//! - **Leaving** ([`SlotInFlight::leave`]): subtract 1 from the own row, never below 0 (a
//!   compare-and-swap loop), so a place is returned at most once and only to the own row: it
//!   can never free a place another process holds.
//! - **Reclaim**: a call that finds the breaker full looks for dead rows, at most once every
//!   100 ms per slot ([`SlotInFlight::reclaim_interval`]; a stamp in the slot, taken by one
//!   compare-and-swap, so one caller of the host looks while the others reject at once). For
//!   every other row with a count, it tries to take that row's lock itself: it gets it only if
//!   the owner is dead, zeroes the row while holding the lock (so nobody can claim the row and
//!   count in it meanwhile), and lets go. Then the call is retried once. The places of a killed
//!   process thus come back on the first full call after its death (no timer thread), at most
//!   one reclaim interval later; the places of a live process, however long its calls hang,
//!   never.
//! - **`fork()`**: a child shares its parent's descriptors, and with them their open file
//!   descriptions and every lock on them. So that a child never counts in its parent's row, nor
//!   keeps the parent's rows alive after the parent died, a `pthread_atfork` handler closes the
//!   inherited row descriptors in the child (only `close`, which is safe there), and the child's
//!   first admission opens the file anew and claims a row of its own (noticed through
//!   `crate::clock::forks`, as `crate::fleet` does). Places the parent took stay the
//!   parent's; a child that leaves a place it took before the fork gives nothing back.
//! - **A mutex inherited locked**: a child forked while another thread of its parent was
//!   claiming a row inherits the mapping's mutex locked for good; its limited calls on that
//!   mapping are then rejected after waiting the region's
//!   [`lock_timeout`](super::RegionOptions::lock_timeout), never hung (open the region again in
//!   the child to count there).
//! - **Full table**: with every row owned by a live process, a process that has no row yet is
//!   rejected as full, never admitted uncounted; likewise where the row lock cannot be taken at
//!   all (a file system without OFD locks).
//!
//! # What someone who can write the file can do
//!
//! The region may be written by any process of the user (or of the group, with mode `0660`):
//! every row, the hint and the stamp can hold any value. Nothing here panics or reads out of
//! bounds whatever they hold: the hint is clamped to the table (and always covers the own
//! row), sums saturate instead of wrapping, a row never goes below 0, and a stamp in the future
//! counts as old. But such a writer decides admission: it can **block** every admission by
//! writing big counts into rows of live processes (or by holding row locks itself, so no
//! process can claim a row), and it can **admit more** than `max` by zeroing rows or lowering
//! the hint. Big counts in rows nobody owns are reclaimed like a dead process's. The README's
//! Safety section says the same of the word: whoever can write the region can set any state.
//!
//! # Elsewhere than Linux
//!
//! Without OFD locks, rows are owned by classic POSIX record locks (`F_SETLK`), which belong
//! to the process: a child does not inherit them, but the process loses *all* its locks on the
//! file as soon as it closes *any* descriptor of it (opening and dropping a second
//! [`SharedRegion`](super::SharedRegion) on the same file, for one), after which its live rows
//! look dead and may be reclaimed: up to its places could then be admitted twice.

use core::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

use super::sigbus::MAX_MAPPINGS;
use super::Mapping;
use crate::clock::forks;
use crate::{Clock, MonotonicClock};

/// The most processes that can hold places in one shared breaker at once.
pub const IN_FLIGHT_ROWS: usize = 64;

/// How often one slot's rows are looked at for dead owners, at most, unless
/// [`SlotInFlight::reclaim_interval`] says otherwise.
pub(super) const DEFAULT_RECLAIM_INTERVAL: Duration = Duration::from_millis(100);

/// A slot's table of calls in flight: see the [module docs](self).
#[repr(C)]
pub(super) struct InFlightRows {
    /// How many rows were ever claimed: rows at and past it are not read.
    used: AtomicU64,
    /// `CLOCK_MONOTONIC` ms of the last look for dead rows.
    reclaimed_at: AtomicU64,
    /// Places held by each row's owner.
    rows: [AtomicU64; IN_FLIGHT_ROWS],
}

impl InFlightRows {
    /// Empties the table, for a slot just claimed.
    pub(super) fn clear(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.reclaimed_at.store(0, Ordering::Relaxed);
        self.rows.iter().for_each(|row| row.store(0, Ordering::Relaxed));
    }

    /// How many rows to read: the hint, clamped to the table and covering the row `own`.
    #[inline(always)]
    fn used(&self, own: usize) -> usize {
        (self.used.load(Ordering::SeqCst).min(IN_FLIGHT_ROWS as u64) as usize).max(own + 1)
    }

    /// The places held in the first `n` rows, saturating.
    #[inline(always)]
    fn sum(&self, n: usize) -> u64 {
        self.rows[..n].iter().fold(0u64, |sum, row| sum.saturating_add(row.load(Ordering::SeqCst)))
    }

    /// Takes a place in row `own` if fewer than `max` are held in all rows; else leaves the
    /// row as it was.
    #[inline(always)]
    fn admit(&self, own: usize, max: u32) -> bool {
        self.rows[own].fetch_add(1, Ordering::SeqCst);
        if self.sum(self.used(own)) <= u64::from(max) {
            return true;
        }
        give_back(&self.rows[own]);
        false
    }
}

/// Takes 1 from a row, never below 0.
#[inline(always)]
fn give_back(row: &AtomicU64) {
    let _ = row.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Bits of [`SlotInFlight`]'s cached row that hold the row number plus 1 (0: none cached).
const ROW_BITS: u32 = 8;
const ROW_MASK: u64 = (1 << ROW_BITS) - 1;

/// A cached row: the fork count it was claimed at, above the row number plus 1.
fn cached_row(generation: u64, row: usize) -> u64 {
    generation << ROW_BITS | (row as u64 + 1)
}

/// The calls in flight of one shared breaker, counted host-wide in its slot: see the
/// [module docs](self).
pub struct SlotInFlight {
    table: NonNull<InFlightRows>,
    index: usize,
    region: Arc<Mapping>,
    /// This process's row, as [`cached_row`] (0: look it up).
    row: AtomicU64,
    reclaim_interval_ms: u64,
}

// SAFETY: the table is atomics in a mapping that `region` keeps alive; it is only accessed
// atomically.
unsafe impl Send for SlotInFlight {}
// SAFETY: as above.
unsafe impl Sync for SlotInFlight {}

impl crate::InFlight for SlotInFlight {
    #[inline]
    fn try_enter(&self, max: u32) -> bool {
        SlotInFlight::try_enter(self, max)
    }

    #[inline]
    fn leave(&self) {
        SlotInFlight::leave(self)
    }

    fn in_flight(&self) -> u32 {
        SlotInFlight::in_flight(self)
    }
}

impl SlotInFlight {
    /// The counter of the table at `table`, slot `index` of `region`.
    ///
    /// # Safety
    /// `table` points to the in-flight table of slot `index` inside `region`'s mapping.
    pub(super) unsafe fn new(table: NonNull<InFlightRows>, index: usize, region: Arc<Mapping>) -> Self {
        let interval = DEFAULT_RECLAIM_INTERVAL.as_millis() as u64;
        SlotInFlight { table, index, region, row: AtomicU64::new(0), reclaim_interval_ms: interval }
    }

    /// Looks for dead processes' rows at most this often in this slot (100 ms unless set; the
    /// limit is shared by every process, through a stamp in the slot): the places of a killed
    /// process come back on the first full call this long after the last look. Rounded up to
    /// whole milliseconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use cb_core::{Config, RegionOptions, SharedRegion};
    /// # let dir = std::env::temp_dir().join(format!("cb-doc-inflight-interval-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let region = SharedRegion::open(&RegionOptions::new().path(dir.join("region")))?;
    /// let config = Config::default().probe_timeout(Duration::from_millis(50));
    /// let in_flight = region.attach("quotes", &config)?.in_flight().reclaim_interval(config.probe_timeout);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cb_core::RegionError>(())
    /// ```
    pub fn reclaim_interval(mut self, interval: Duration) -> Self {
        self.reclaim_interval_ms = u64::try_from(interval.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        self
    }

    /// Takes a place if fewer than `max` calls are in flight in all processes of the host
    /// together; `false` (full) otherwise. Give it back with [`SlotInFlight::leave`].
    #[inline]
    pub fn try_enter(&self, max: u32) -> bool {
        let Some(own) = self.own_row(true) else { return false };
        let table = self.table();
        table.admit(own, max) || (self.reclaim(own) && table.admit(own, max))
    }

    /// Gives back a place [`SlotInFlight::try_enter`] took (call it exactly once for each).
    /// Never takes this process's row below 0, and never touches another process's places.
    #[inline]
    pub fn leave(&self) {
        if let Some(own) = self.own_row(false) {
            give_back(&self.table().rows[own]);
        }
    }

    /// The calls in flight now, in all processes of the host together (saturating).
    pub fn in_flight(&self) -> u32 {
        let table = self.table();
        let used = table.used.load(Ordering::SeqCst).min(IN_FLIGHT_ROWS as u64) as usize;
        table.sum(used).min(u64::from(u32::MAX)) as u32
    }

    #[inline(always)]
    fn table(&self) -> &InFlightRows {
        // SAFETY: see `new` and the Send/Sync argument: valid for as long as `self` lives.
        unsafe { self.table.as_ref() }
    }

    /// This process's row in the slot, claiming one if `claim` and it has none (the cold path).
    #[inline(always)]
    fn own_row(&self, claim: bool) -> Option<usize> {
        let generation = forks();
        // Acquire: the claim's zeroing of the row happens before any count through the cache.
        let cached = self.row.load(Ordering::Acquire);
        if cached != 0 && cached >> ROW_BITS == generation & (u64::MAX >> ROW_BITS) {
            return Some((cached & ROW_MASK) as usize - 1);
        }
        self.look_up_row(generation, claim)
    }

    #[cold]
    fn look_up_row(&self, generation: u64, claim: bool) -> Option<usize> {
        let mut owner = lock_rows(&self.region, self.region.lock_timeout)?;
        let row = owner.row(&self.region, self.index, self.table(), generation, claim)?;
        self.row.store(cached_row(generation, row), Ordering::Release);
        Some(row)
    }

    /// Zeroes the rows of dead owners, unless this slot was looked at less than the reclaim
    /// interval ago; whether any place came free.
    #[cold]
    fn reclaim(&self, own: usize) -> bool {
        let table = self.table();
        let now = MonotonicClock.now();
        let last = table.reclaimed_at.load(Ordering::Relaxed);
        // A stamp in the future was written by no clock of this boot: take it as old.
        if last <= now && now - last < self.reclaim_interval_ms {
            return false;
        }
        if table.reclaimed_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false; // another caller looks now
        }
        // Held while looking, so no other thread of ours (same open file description, so no
        // conflict between us) lets go of a row we are zeroing.
        let Some(owner) = lock_rows(&self.region, Duration::ZERO) else { return false };
        let Some(fd) = owner.fd(forks()) else { return false };
        let mut freed = false;
        for (row, count) in table.rows[..table.used(own)].iter().enumerate() {
            if row == own || count.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let range = self.row_range(row);
            if lock_row(fd, range, true) {
                // The owner is dead, and nobody can claim the row while we hold its lock.
                freed |= count.swap(0, Ordering::SeqCst) != 0;
                lock_row(fd, range, false);
            }
        }
        freed
    }

    /// The offset in the file of `row`'s bytes.
    fn row_range(&self, row: usize) -> u64 {
        row_offset(&self.region, self.table(), row)
    }
}

impl fmt::Debug for SlotInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotInFlight").field("slot", &self.index).field("in_flight", &self.in_flight()).finish()
    }
}

/// The offset in the region file of `row` of `table` (which lies in `region`'s mapping).
fn row_offset(region: &Mapping, table: &InFlightRows, row: usize) -> u64 {
    let at = std::ptr::addr_of!(table.rows[row]) as usize;
    (at - region.map.as_ptr() as usize) as u64
}

/// This process's rows in one mapping: the descriptor whose open file description locks them,
/// and the row it owns in each slot. Touched only on the cold paths, under the mapping's mutex.
#[derive(Default)]
pub(super) struct RowOwner {
    fd: Option<OwnerFd>,
    /// (slot index, row) for every slot this process has a row in.
    claimed: Vec<(usize, usize)>,
}

impl RowOwner {
    /// The descriptor locking this process's rows, if it has one opened since the last fork.
    fn fd(&self, generation: u64) -> Option<RawFd> {
        self.fd.as_ref().filter(|fd| fd.forks == generation).map(|fd| fd.fd)
    }

    /// This process's row in slot `index`, claimed if it has none and `claim`.
    fn row(&mut self, region: &Mapping, index: usize, table: &InFlightRows, generation: u64, claim: bool) -> Option<usize> {
        if self.fd.as_ref().is_some_and(|fd| fd.forks != generation) {
            // A forked child: the rows are the parent's (its descriptor was closed at the fork).
            // The list is forgotten, not freed: a thread of the parent may have been changing
            // it at the fork.
            self.fd = None;
            std::mem::forget(std::mem::take(&mut self.claimed));
        }
        if let Some(&(_, row)) = self.claimed.iter().find(|(slot, _)| *slot == index) {
            return Some(row);
        }
        if !claim {
            return None;
        }
        let fd = match &self.fd {
            Some(fd) => fd.fd,
            None => self.fd.insert(OwnerFd::open(region, generation)?).fd,
        };
        let row = (0..IN_FLIGHT_ROWS).find(|&row| lock_row(fd, row_offset(region, table, row), true))?;
        // What a dead owner left: nobody else counts in the row while we hold its lock.
        table.rows[row].store(0, Ordering::SeqCst);
        table.used.fetch_max(row as u64 + 1, Ordering::SeqCst);
        self.claimed.push((index, row));
        Some(row)
    }
}

/// The mapping's [`RowOwner`], waiting for it at most `timeout`: a forked child inherits the
/// mutex locked for good if another thread of its parent held it at the fork, and a limited
/// call there is then rejected (as full) after the wait, never hung.
fn lock_rows(region: &Mapping, timeout: Duration) -> Option<MutexGuard<'_, RowOwner>> {
    let start = Instant::now();
    loop {
        match region.rows.try_lock() {
            Ok(owner) => return Some(owner),
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if start.elapsed() < timeout => std::thread::sleep(Duration::from_micros(50)),
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// Takes (`lock`) or lets go of the write lock on the 8 bytes at `offset`, without waiting:
/// whether it was done (`false`: another owner holds it, or the file system refused).
fn lock_row(fd: RawFd, offset: u64, lock: bool) -> bool {
    // SAFETY: a zeroed flock is a valid value; we fill in every field the call reads.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as _;
    range.l_whence = libc::SEEK_SET as _;
    range.l_start = offset as libc::off_t;
    range.l_len = 8;
    loop {
        // SAFETY: `fd` is an open descriptor of ours and `range` a valid flock; SETLK never
        // waits.
        if unsafe { libc::fcntl(fd, SET_LOCK, &range) } == 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// Locks owned by the open file description (Linux), not by the process.
#[cfg(target_os = "linux")]
const SET_LOCK: libc::c_int = libc::F_OFD_SETLK;
/// Classic record locks, owned by the process: see the [module docs](self#elsewhere-than-linux).
#[cfg(not(target_os = "linux"))]
const SET_LOCK: libc::c_int = libc::F_SETLK;

/// A descriptor of the region file opened by this process for its row locks (its own open
/// file description), registered so that a forked child closes its copy at once.
struct OwnerFd {
    fd: RawFd,
    /// Its entry in [`OWNER_FDS`].
    entry: usize,
    /// The fork count it was opened at: in a child it is the parent's, closed by the fork.
    forks: u64,
}

impl OwnerFd {
    /// Opens the mapped file once more: `/proc/self/fd/N` names the very file mapped even if
    /// the path now names another; the path is the fallback, checked to be the same file.
    fn open(region: &Mapping, generation: u64) -> Option<OwnerFd> {
        let open = |path: &std::path::Path| {
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path)
        };
        let proc_path = std::path::PathBuf::from(format!("/proc/self/fd/{}", region.file.as_raw_fd()));
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(proc_path)
            .or_else(|_| open(&region.path))
            .ok()?;
        let (ours, mapped) = (file.metadata().ok()?, region.file.metadata().ok()?);
        if (ours.dev(), ours.ino()) != (mapped.dev(), mapped.ino()) {
            return None;
        }
        watch_forks();
        let fd = file.into_raw_fd();
        let Some(entry) = OWNER_FDS.iter().position(|e| e.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok())
        else {
            // SAFETY: the descriptor we just opened and own.
            unsafe { libc::close(fd) };
            return None;
        };
        Some(OwnerFd { fd, entry, forks: generation })
    }
}

impl Drop for OwnerFd {
    fn drop(&mut self) {
        if forks() != self.forks {
            return; // the parent's: closed in this child at the fork
        }
        let fd = OWNER_FDS[self.entry].swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: our descriptor, taken out of the registry, so closed exactly once.
            unsafe { libc::close(fd) };
        }
    }
}

/// Every row descriptor of this process (-1: a free entry). At most one per mapping, and no
/// more mappings can exist than the `SIGBUS` handler protects.
static OWNER_FDS: [AtomicI32; MAX_MAPPINGS] = [NO_FD; MAX_MAPPINGS];
#[allow(clippy::declare_interior_mutable_const)] // used only to initialise OWNER_FDS
const NO_FD: AtomicI32 = AtomicI32::new(-1);

/// Registers the handler that closes the row descriptors in a forked child, once.
fn watch_forks() {
    extern "C" fn close_inherited() {
        for entry in OWNER_FDS.iter() {
            let fd = entry.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: a descriptor inherited from the parent, closed once (the entry is
                // emptied first); close is async-signal-safe, so fine in a forked child.
                unsafe { libc::close(fd) };
            }
        }
    }
    static ONCE: Once = Once::new();
    // SAFETY: registers a child handler that only swaps atomics and closes descriptors.
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(close_inherited));
    });
}

/// The mutex a mapping keeps its [`RowOwner`] under.
pub(super) type Rows = Mutex<RowOwner>;
