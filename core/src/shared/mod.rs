//! Breakers shared by every process of a host, through one memory-mapped file.
//!
//! A [`SharedRegion`] is a file (in `$XDG_RUNTIME_DIR` or `/dev/shm` by default: see
//! [`RegionOptions::default_path`]) holding a header and a fixed number of named slots. A slot
//! holds one breaker's word, its counters and the window of its rate policies
//! ([`crate::window`]), as plain atomics; a breaker made from a slot
//! ([`SharedRegion::breaker`]) runs the same CAS loop and transitions as an in-process one, on
//! the word in the slot. Every process that attaches the same name
//! sees the same state: one process's failures open the breaker for all of them, one probe
//! admission takes a probe slot for the whole host, a `reset` anywhere closes it everywhere.
//!
//! ```
//! use cb_core::{Config, RegionOptions, SharedRegion, State};
//! # let dir = std::env::temp_dir().join(format!("cb-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("region");
//! let options = RegionOptions::new().path(&path);
//! // Two processes opening the same path; here two mappings in one process show the same thing.
//! let (worker_a, worker_b) = (SharedRegion::open(&options)?, SharedRegion::open(&options)?);
//! let config = Config::default().failure_threshold(2);
//! let a = worker_a.breaker("quotes", config)?;
//! let b = worker_b.breaker("quotes", config)?;
//! let _ = a.call(|| Err::<(), _>("timeout"));
//! let _ = b.call(|| Err::<(), _>("timeout"));     // the second failure, counted host-wide
//! assert_eq!(a.state(), State::Open);
//! assert!(b.admit().is_err());                    // rejected in every process
//! assert_eq!(b.metrics().totals().failures, 2);   // counters are host-wide too
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), cb_core::RegionError>(())
//! ```
//!
//! # The file
//!
//! ```text
//! offset 0      header (4 KiB): magic "CBREGION", layout version, header and slot sizes,
//!               capacity, a hash of the slot layout, the boot id, the clock, a checksum,
//!               and a ready mark written last
//! offset 4096   slot 0, slot 1, ... slot capacity-1 (each `slot_size` bytes):
//!                 meta     name, hash, the last attacher's configuration, rate policies
//!                          included (under the file lock)
//!                 word     the breaker word, alone on its cache line
//!                 counters striped totals, last failure / last change stamps
//!                 window   the rate policies' buckets (host-wide rates; empty without a policy)
//!                 in_flight  calls in flight: a hint, a stamp and 64 rows, one a process
//!                          ([`SlotInFlight`], [`in_flight`])
//! ```
//!
//! Nothing read from the file is trusted: [`SharedRegion::open`] checks every header field
//! against what this build writes and the file's size against the header before any offset is
//! used, and every slot index is checked against the capacity. A file that is not a region
//! (another magic), a symlink, a file owned by another user or writable by others is refused
//! and left alone. A region of ours that is stale (an earlier boot, another layout version,
//! truncated, even below the magic, a magic with a few flipped bits or whose header checksum
//! fits ours, a bad checksum, creation stamps that cannot be true, never finished) is replaced:
//! a complete new file is renamed over it, so processes still mapping the old one keep a valid
//! mapping, and [`SharedRegion::recreated`] says why (one log line for whoever reports it). A
//! new file is built unnamed (`O_TMPFILE`) where the file system allows, so a process killed
//! while building it leaves nothing; elsewhere its hidden `.<name>.<pid>.<n>.tmp` is removed by
//! a later open once that process is gone. A breaker word
//! that no transition could have written is repaired to CLOSED on attach
//! ([`SharedSlot::repaired`]); counters are only reported, and their sums saturate.
//!
//! # A file cut short
//!
//! Whoever can write the file can also truncate it under every process mapping it, and
//! touching a mapped page beyond the end of a file raises `SIGBUS`, which ends a process by
//! default. On Linux every mapping of a region is registered with a process-wide `SIGBUS`
//! handler (installed on the first open, chaining to the handler it replaces for faults
//! anywhere else): a fault inside a region's mapping replaces that whole mapping, in place,
//! with private zeroed memory, and the access is retried. The breakers on it continue in this
//! process alone, as if just claimed (CLOSED, counters at zero), and
//! [`SharedRegion::is_lost`] (and [`SharedRegion::is_replaced`]) say so; opening the path again
//! replaces the cut file and shares state again. At most 1,024 regions can be mapped by one
//! process at once. A `SIGBUS` handler installed after ours comes first until the next
//! [`SharedRegion::open`] installs ours again on top of it: one that ends the process on any
//! `SIGBUS` (Python's `faulthandler.enable()` called after the region was opened) still does.
//!
//! # Clock
//!
//! Words hold ticks of `CLOCK_MONOTONIC` (milliseconds since boot), which every process of a
//! host reads alike; the region records the boot it was made in and a region from another boot
//! is never used. Breakers made by [`SharedRegion::breaker`] read the [`crate::DefaultClock`];
//! with [`CircuitBreaker::with_store`] any [`crate::Clock`] counting `CLOCK_MONOTONIC`
//! milliseconds may be used ([`crate::MonotonicClock`], [`crate::CachedClock`], which restarts
//! its ticker in a forked child).
//!
//! # Configuration
//!
//! Each process applies its own [`Config`] to the shared word: the word is valid under any
//! limits, so processes configured differently (a rolling deploy) share one state, and during
//! the overlap the most eager setting acts first (the lowest threshold trips, the shortest
//! recovery timeout probes). The slot records the configuration of the last process that
//! attached; [`SharedSlot::config_mismatch`] reports a different one, for a warning.
//!
//! # Locks and crashes
//!
//! Opening and attaching take an exclusive `flock` on the file for a few microseconds (the
//! kernel releases it if the holder dies); nothing else ever waits for a lock, and no lock is
//! held while a call runs. A process that counts calls in flight ([`SharedSlot::in_flight`])
//! also holds, for as long as it lives, a non-blocking record lock on the 8 bytes of its row
//! in each slot it counts in: that lock is how other processes tell it is alive (see
//! [`in_flight`]). A file is checked (type, owner, mode) before its lock is taken, so a file that
//! will be refused is never waited on; and the wait is bounded by
//! [`RegionOptions::lock_timeout`] (5 s), after which [`RegionError::LockTimeout`] names the
//! file, since anyone who can open it can hold its lock. A slot is claimed in one step under that lock. A process killed at any point
//! leaves every word valid (each write is one atomic compare-and-swap) and a probe slot it held
//! is recovered after the probe timeout ([`Config::probe_timeout`]); the calls in flight it
//! held come back on the first call that finds the breaker full, at most one reclaim interval
//! (100 ms) after the last look ([`SlotInFlight::reclaim_interval`]).


mod error;
mod file;
pub mod in_flight;
mod layout;
mod options;
mod sigbus;

use core::fmt;
use std::any::Any;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::MmapRaw;

pub use self::error::RegionError;
pub use self::in_flight::{SlotInFlight, IN_FLIGHT_ROWS};
pub use self::layout::{DEFAULT_CAPACITY, MAX_CAPACITY, MAX_NAME_LEN};
pub use self::options::RegionOptions;

use self::file::{
    check_ownership, create_new, io_error, inspect, map, open_existing, remove_stale_temporaries, same_file, FileLock, Unusable,
};
use self::layout::{config_from_words, config_words, fingerprint, fnv1a, Slot, SlotMeta, HEADER_SIZE, SLOT_EMPTY, SLOT_READY, SLOT_SIZE};
use self::in_flight::{InFlightRows, Rows};
use self::sigbus::Protected;
use crate::window::Window;
use crate::word::{Limits, MAX_HALF_OPEN_CALLS, MAX_SUCCESS_THRESHOLD};
use crate::{CircuitBreaker, Clock, Command, Config, Counters, DefaultClock, MonotonicClock, Snapshot, Store, WallAnchor};

/// The mapping and the file behind a [`SharedRegion`]; kept alive by every breaker made from it.
struct Mapping {
    /// Declared first so it is dropped first: the mapping is unregistered from the `SIGBUS`
    /// handler before it is unmapped.
    protected: Protected,
    map: MmapRaw,
    file: File,
    path: PathBuf,
    capacity: usize,
    recreated: Option<String>,
    anchor: WallAnchor,
    lock_timeout: Duration,
    /// This process's rows of calls in flight (see [`in_flight`]); cold paths only.
    rows: Rows,
}

/// A region of named breaker slots shared by every process that opens the same file. Cheap to
/// clone; the mapping lives while any clone or breaker made from it does. See the
/// [module docs](self).
#[derive(Clone)]
pub struct SharedRegion {
    inner: Arc<Mapping>,
}

/// A breaker whose word and counters live in a [`SharedRegion`] slot.
pub type SharedBreaker<C = DefaultClock> = CircuitBreaker<C, Counters, SlotWord>;

impl SharedRegion {
    /// Opens (creating if needed) the region at `options`' path. See the [module docs](self)
    /// for what is checked, refused and replaced.
    pub fn open(options: &RegionOptions) -> Result<SharedRegion, RegionError> {
        options.check()?;
        let path = options.path.clone();
        remove_stale_temporaries(&path);
        loop {
            let file = match open_existing(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match create_new(options, None) {
                        Ok(()) => continue,
                        Err(RegionError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(RegionError::Insecure { path, reason: "it is a symbolic link".into() })
                }
                Err(e) => return Err(io_error(&path, "open", e)),
            };
            // Check the file we opened (its type, owner and mode) before locking it: anyone can
            // hold the lock of a file they made, and a file that will be refused is never waited on.
            let meta = file.metadata().map_err(|e| io_error(&path, "stat", e))?;
            check_ownership(&path, &meta, options.allow_foreign)?;
            let _lock = FileLock::exclusive(&file, &path, options.lock_timeout)?;
            // The file may have been replaced while we waited for the lock: use what the path
            // names now.
            if !same_file(&path, &file) {
                continue;
            }
            let meta = file.metadata().map_err(|e| io_error(&path, "stat", e))?;
            check_ownership(&path, &meta, options.allow_foreign)?;
            match inspect(&file, meta.len()) {
                Ok((capacity, anchor)) => return SharedRegion::map(file, path, capacity, anchor, None, options),
                Err(Unusable::NotOurs) => return Err(RegionError::NotARegion { path }),
                Err(Unusable::Stale(reason)) => {
                    // Ours but unusable: build a complete new region and rename it over this one,
                    // while we hold this one's lock so nobody else replaces it at the same time.
                    create_new(options, Some(&path))?;
                    let file = open_existing(&path).map_err(|e| io_error(&path, "open", e))?;
                    let meta = file.metadata().map_err(|e| io_error(&path, "stat", e))?;
                    check_ownership(&path, &meta, options.allow_foreign)?;
                    let (capacity, anchor) =
                        inspect(&file, meta.len()).map_err(|_| RegionError::NotARegion { path: path.clone() })?;
                    let recreated = Some(format!("replaced a stale region at {}: {reason}", path.display()));
                    return SharedRegion::map(file, path, capacity, anchor, recreated, options);
                }
            }
        }
    }

    /// Maps a checked region file, registering the mapping with the `SIGBUS` handler.
    fn map(
        file: File,
        path: PathBuf,
        capacity: usize,
        anchor: WallAnchor,
        recreated: Option<String>,
        options: &RegionOptions,
    ) -> Result<SharedRegion, RegionError> {
        let map = map(&file, &path)?;
        let protected = sigbus::protect(map.as_mut_ptr(), map.len()).ok_or_else(|| {
            let why = format!("this process maps {} regions already, the most that can be protected", sigbus::MAX_MAPPINGS);
            io_error(&path, "protect", io::Error::other(why))
        })?;
        let lock_timeout = options.lock_timeout;
        Ok(SharedRegion { inner: Arc::new(Mapping { protected, map, file, path, capacity, recreated, anchor, lock_timeout, rows: Rows::default() }) })
    }

    /// Opens the region at [`RegionOptions::default_path`].
    pub fn open_default() -> Result<SharedRegion, RegionError> {
        SharedRegion::open(&RegionOptions::default())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this mapping no longer shows the region at the path: the path names another file
    /// (or none), because the region was deleted or replaced (a stale region is replaced by
    /// renaming a new file over it), or the mapping was lost ([`SharedRegion::is_lost`]).
    /// Breakers made from this region keep working on what they map, apart from processes that
    /// open the path anew; open it again to join them.
    pub fn is_replaced(&self) -> bool {
        self.is_lost() || !same_file(&self.inner.path, &self.inner.file)
    }

    /// Whether the file was cut short under this mapping (someone who can write it truncated
    /// it), so that touching the slots raised `SIGBUS`: this process then replaced the whole
    /// mapping with private zeroed memory instead of dying, and its breakers on this region
    /// continue on that private copy (each as if just claimed: CLOSED, counters at zero),
    /// shared with no other process. Warn once and open the region again
    /// ([`SharedRegion::open`] replaces the cut file) to share state again. Linux only;
    /// elsewhere always `false` and a cut file still ends the process.
    ///
    /// ```
    /// use cb_core::{Config, RegionOptions, SharedRegion};
    /// # let dir = std::env::temp_dir().join(format!("cb-doc-lost-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("region");
    /// let region = SharedRegion::open(&RegionOptions::new().path(&path))?;
    /// let breaker = region.breaker("quotes", Config::default())?;
    /// std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap(); // `truncate -s 100`
    /// assert!(breaker.call(|| Ok::<_, ()>(())).is_ok()); // no SIGBUS: this process goes on alone
    /// assert!(region.is_lost() && region.is_replaced());
    /// let again = SharedRegion::open(&RegionOptions::new().path(&path))?; // shares state again
    /// assert!(again.recreated().is_some() && !again.is_lost());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cb_core::RegionError>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.inner.protected.is_lost()
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// How every process converts the region's ticks to wall-clock time (taken when the region
    /// was created): breakers made from the region use it, so their reports agree to the ms.
    pub fn wall_anchor(&self) -> WallAnchor {
        self.inner.anchor
    }

    /// Why the file was replaced when this region was opened, if it was (say it once in a log).
    pub fn recreated(&self) -> Option<&str> {
        self.inner.recreated.as_deref()
    }

    /// The slot named `name`, claimed for `config` if no process has claimed it yet. Attaching
    /// never resets the word or the counters.
    pub fn attach(&self, name: &str, config: &Config) -> Result<SharedSlot, RegionError> {
        let limits = config.limits()?;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(RegionError::BadName { len: name.len() });
        }
        let ours = config_words(config);
        let hash = fnv1a(name.as_bytes());
        let _lock = FileLock::exclusive(&self.inner.file, &self.inner.path, self.inner.lock_timeout)?;
        let capacity = self.inner.capacity;
        for probe in 0..capacity {
            let index = ((hash as usize) % capacity + probe) % capacity;
            let slot = self.slot(index);
            // SAFETY: `index < capacity`, so the slot is inside the mapping (see `slot`); its
            // meta is only touched under the lock we hold.
            let meta = unsafe { &mut *std::ptr::addr_of_mut!((*slot.as_ptr()).meta).cast::<SlotMeta>() };
            match meta.state.load(Ordering::Acquire) {
                SLOT_EMPTY => {
                    meta.name_len = name.len() as u32;
                    meta.name_hash = hash;
                    meta.name = [0; MAX_NAME_LEN];
                    meta.name[..name.len()].copy_from_slice(name.as_bytes());
                    meta.config = ours;
                    meta.fingerprint = fingerprint(&ours);
                    // A new breaker: a fresh word and counters, its creation the first change.
                    // SAFETY: in bounds; nobody uses an EMPTY slot, and these are atomics.
                    unsafe {
                        (*std::ptr::addr_of!((*slot.as_ptr()).word)).store(0, Ordering::Relaxed);
                        (*std::ptr::addr_of!((*slot.as_ptr()).counters)).start(MonotonicClock.now());
                        (*std::ptr::addr_of!((*slot.as_ptr()).window)).clear();
                        (*std::ptr::addr_of!((*slot.as_ptr()).in_flight)).clear();
                    }
                    meta.state.store(SLOT_READY, Ordering::Release);
                    return Ok(self.finish_attach(index, limits, None, config.probe_timeout));
                }
                SLOT_READY => {
                    let len = meta.name_len as usize;
                    if len <= MAX_NAME_LEN && meta.name_hash == hash && &meta.name[..len] == name.as_bytes() {
                        let theirs = meta.config;
                        let mismatch = (meta.fingerprint != fingerprint(&ours) || theirs != ours).then(|| {
                            meta.config = ours;
                            meta.fingerprint = fingerprint(&ours);
                            config_from_words(theirs)
                        });
                        return Ok(self.finish_attach(index, limits, mismatch, config.probe_timeout));
                    }
                }
                // A state no build writes: a damaged slot, perhaps someone's breaker. Leave it
                // and look further.
                _ => {}
            }
        }
        Err(RegionError::Full { path: self.inner.path.clone(), capacity })
    }

    /// A breaker on the slot named `name` (claimed if new), reading the default clock and
    /// counting in the slot.
    pub fn breaker(&self, name: &str, config: Config) -> Result<SharedBreaker, RegionError> {
        let slot = self.attach(name, &config)?;
        let breaker = CircuitBreaker::with_store(config, DefaultClock::default(), slot.counters(), slot.word())?;
        Ok(breaker.named(name).with_wall_anchor(self.wall_anchor()).with_shared_window(slot.window()))
    }

    /// The names of the breakers in the region, in slot order.
    pub fn names(&self) -> Result<Vec<String>, RegionError> {
        let _lock = FileLock::exclusive(&self.inner.file, &self.inner.path, self.inner.lock_timeout)?;
        let mut names = Vec::new();
        for index in 0..self.inner.capacity {
            // SAFETY: as in `attach`: in bounds, and read under the lock.
            let meta = unsafe { &*std::ptr::addr_of!((*self.slot(index).as_ptr()).meta).cast::<SlotMeta>() };
            let len = meta.name_len as usize;
            if meta.state.load(Ordering::Acquire) == SLOT_READY && len <= MAX_NAME_LEN {
                names.push(String::from_utf8_lossy(&meta.name[..len]).into_owned());
            }
        }
        Ok(names)
    }

    /// Slot `index`. Panics if out of bounds, which no caller allows (`index < capacity`, and the
    /// file's size was checked to hold `capacity` slots).
    fn slot(&self, index: usize) -> NonNull<Slot> {
        assert!(index < self.inner.capacity, "slot index {index} out of bounds");
        let offset = HEADER_SIZE + index * SLOT_SIZE;
        debug_assert!(offset + SLOT_SIZE <= self.inner.map.len());
        // SAFETY: `offset + SLOT_SIZE <= len` (checked in `inspect` for the whole table), and
        // the mapping is page-aligned, so every slot is aligned for `Slot` (its size is a multiple
        // of its alignment, which divides the page size).
        unsafe { NonNull::new_unchecked(self.inner.map.as_mut_ptr().add(offset).cast::<Slot>()) }
    }

    fn finish_attach(&self, index: usize, limits: Limits, mismatch: Option<Config>, probe_timeout: std::time::Duration) -> SharedSlot {
        let reclaim_interval = probe_timeout.min(in_flight::DEFAULT_RECLAIM_INTERVAL);
        let slot = SharedSlot { region: self.clone(), index, mismatch, repaired: None, reclaim_interval };
        let word = slot.word();
        let now = MonotonicClock.now();
        let current = word.load();
        // Loosest limits: only a word no configuration could have written is repaired, never
        // one another process wrote under its own (different) settings.
        let loose = Config::default()
            .failure_threshold(u64::from(u32::MAX))
            .success_threshold(u64::from(MAX_SUCCESS_THRESHOLD))
            .half_open_max_calls(u64::from(MAX_HALF_OPEN_CALLS))
            .limits()
            .unwrap_or(limits);
        if current.is_well_formed(now, &loose) {
            return slot;
        }
        let repaired = current.command(Command::Reset).next.unwrap_or_default();
        let repaired_now = word.compare_exchange(current, repaired).is_ok();
        SharedSlot {
            repaired: repaired_now.then(|| format!("repaired a malformed breaker word {current:?}")),
            ..slot
        }
    }
}

impl fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRegion").field("path", &self.inner.path).field("capacity", &self.inner.capacity).finish()
    }
}

/// One breaker's slot in a [`SharedRegion`]: the store for its word ([`SharedSlot::word`]) and
/// its counters ([`SharedSlot::counters`]).
#[derive(Clone, Debug)]
pub struct SharedSlot {
    region: SharedRegion,
    index: usize,
    mismatch: Option<Config>,
    repaired: Option<String>,
    /// How often a full call may look for the places of dead processes: the shorter of 100 ms
    /// and the probe timeout, so a killed process's calls come back within the probe timeout.
    reclaim_interval: std::time::Duration,
}

impl SharedSlot {
    /// The word, as a [`Store`] for [`CircuitBreaker::with_store`].
    pub fn word(&self) -> SlotWord {
        let slot = self.region.slot(self.index);
        // SAFETY: in bounds (see `SharedRegion::slot`); `word` is an AtomicU64 at an offset
        // aligned for it.
        let word = unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*slot.as_ptr()).word).cast::<AtomicU64>()) };
        let in_flight = self.in_flight().reclaim_interval(self.reclaim_interval);
        SlotWord { word, in_flight, _region: Arc::clone(&self.region.inner) }
    }

    /// The counters, kept in the slot (host-wide totals).
    pub fn counters(&self) -> Counters {
        let slot = self.region.slot(self.index);
        // SAFETY: in bounds; the block is plain atomics, valid for any bytes, and the mapping
        // lives as long as the owner handed over.
        unsafe {
            let block = NonNull::new_unchecked(std::ptr::addr_of_mut!((*slot.as_ptr()).counters));
            Counters::in_place(block, Arc::clone(&self.region.inner) as Arc<dyn Any + Send + Sync>)
        }
    }

    /// The rate policies' window in the slot, for
    /// [`CircuitBreaker::with_shared_window`]: every process attached to the slot counts its
    /// calls into it.
    pub fn window(&self) -> SlotWindow {
        let slot = self.region.slot(self.index);
        // SAFETY: in bounds (see `SharedRegion::slot`); the window is plain atomics, valid for
        // any bytes, at an offset aligned for it.
        let window = unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*slot.as_ptr()).window).cast::<Window>()) };
        SlotWindow { window, _region: Arc::clone(&self.region.inner) }
    }

    /// The breaker's calls in flight, counted for every process of the host together in the
    /// slot: see [`SlotInFlight`] and the [module docs](in_flight) for how places of a killed
    /// process come back.
    ///
    /// ```
    /// use cb_core::{Config, RegionOptions, SharedRegion};
    /// # let dir = std::env::temp_dir().join(format!("cb-doc-inflight-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let region = SharedRegion::open(&RegionOptions::new().path(dir.join("region")))?;
    /// let in_flight = region.attach("quotes", &Config::default())?.in_flight();
    /// let again = region.attach("quotes", &Config::default())?.in_flight(); // the same count
    /// assert!(in_flight.try_enter(2));
    /// assert!(again.try_enter(2));
    /// assert!(!in_flight.try_enter(2)); // full: two calls in flight
    /// assert_eq!(again.in_flight(), 2);
    /// again.leave();
    /// in_flight.leave();
    /// assert_eq!(in_flight.in_flight(), 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cb_core::RegionError>(())
    /// ```
    pub fn in_flight(&self) -> SlotInFlight {
        let slot = self.region.slot(self.index);
        // SAFETY: in bounds (see `SharedRegion::slot`); the table is plain atomics, valid for
        // any bytes, at an offset aligned for it, inside slot `index` of this mapping.
        unsafe {
            let table = NonNull::new_unchecked(std::ptr::addr_of_mut!((*slot.as_ptr()).in_flight).cast::<InFlightRows>());
            SlotInFlight::new(table, self.index, Arc::clone(&self.region.inner))
        }
    }

    /// When the slot already existed with another configuration: the one it was last attached
    /// with (this attach recorded ours instead). Each process applies its own; see the
    /// [module docs](self#configuration).
    pub fn config_mismatch(&self) -> Option<&Config> {
        self.mismatch.as_ref()
    }

    /// When the word in the slot was not one any transition could write: what was repaired.
    pub fn repaired(&self) -> Option<&str> {
        self.repaired.as_deref()
    }

    /// The slot's index in the region.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// The rate policies' window in a shared-memory slot ([`SharedSlot::window`]): plain atomics
/// every process attached to the slot counts into. Tags in its buckets carry the breaker's
/// generation, so a value left by any process is read only while it belongs to the current
/// CLOSED period, and bucket counts saturate rather than wrap: whatever bytes another process
/// left, the window can only under- or over-count calls, never misread the word.
pub struct SlotWindow {
    window: NonNull<Window>,
    _region: Arc<Mapping>,
}

// SAFETY: the window is atomics in a mapping that `_region` keeps alive; it is only accessed
// atomically.
unsafe impl Send for SlotWindow {}
// SAFETY: as above.
unsafe impl Sync for SlotWindow {}

impl core::ops::Deref for SlotWindow {
    type Target = Window;

    #[inline(always)]
    fn deref(&self) -> &Window {
        // SAFETY: see the Send/Sync argument: valid for as long as `self` lives.
        unsafe { self.window.as_ref() }
    }
}

impl fmt::Debug for SlotWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotWindow").finish_non_exhaustive()
    }
}

/// A breaker word in a shared-memory slot: a [`Store`] every process attached to the slot
/// reads and writes.
pub struct SlotWord {
    word: NonNull<AtomicU64>,
    /// The calls in flight of the slot, host-wide (see [`SlotInFlight`]).
    in_flight: SlotInFlight,
    _region: Arc<Mapping>,
}

// SAFETY: the word is an AtomicU64 in a mapping that `_region` keeps alive; it is only accessed
// atomically.
unsafe impl Send for SlotWord {}
// SAFETY: as above.
unsafe impl Sync for SlotWord {}

impl SlotWord {
    #[inline(always)]
    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: see the Send/Sync argument: valid for as long as `self` lives.
        unsafe { self.word.as_ref() }
    }
}

impl Store for SlotWord {
    #[inline(always)]
    fn load(&self) -> Snapshot {
        Snapshot::from_bits(self.atomic().load(Ordering::Acquire))
    }

    /// The slot's own count: the limit holds for every process of the host together.
    #[inline(always)]
    fn shared_in_flight(&self) -> Option<&dyn crate::InFlight> {
        Some(&self.in_flight)
    }

    #[inline(always)]
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        self.atomic()
            .compare_exchange_weak(current.bits(), next.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Snapshot::from_bits)
    }
}

impl fmt::Debug for SlotWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SlotWord").field(&self.load()).finish()
    }
}
