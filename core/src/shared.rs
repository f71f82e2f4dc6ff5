//! Breakers shared by every process of a host, through one memory-mapped file.
//!
//! A [`SharedRegion`] is a file (under `/dev/shm` by default) holding a header and a fixed
//! number of named slots. A slot holds one breaker's word, its counters and the window of its
//! rate policies ([`crate::window`]), as plain atomics; a
//! breaker made from a slot ([`SharedRegion::breaker`]) runs the same CAS loop and transitions
//! as an in-process one, on the word in the slot. Every process that attaches the same name
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
//!                 meta     name, hash, the last attacher's configuration (under the file lock)
//!                 word     the breaker word, alone on its cache line
//!                 counters striped totals, last failure / last change stamps
//!                 window   the rate policies' buckets (host-wide rates; empty without a policy)
//! ```
//!
//! Nothing read from the file is trusted: [`SharedRegion::open`] checks every header field
//! against what this build writes and the file's size against the header before any offset is
//! used, and every slot index is checked against the capacity. A file that is not a region
//! (another magic), a symlink, a file owned by another user or writable by others is refused
//! and left alone. A region of ours that is stale (an earlier boot, another layout version,
//! truncated, a bad checksum, never finished) is replaced: a complete new file is renamed over
//! it, so processes still mapping the old one keep a valid mapping, and
//! [`SharedRegion::recreated`] says why (one log line for whoever reports it). A breaker word
//! that no transition could have written is repaired to CLOSED on attach
//! ([`SharedSlot::repaired`]); counters are only reported, and their sums saturate.
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
//! kernel releases it if the holder dies); nothing else ever locks, and no lock is held while a
//! call runs. A slot is claimed in one step under that lock. A process killed at any point
//! leaves every word valid (each write is one atomic compare-and-swap) and a probe slot it held
//! is recovered after the probe timeout ([`Config::probe_timeout`]).

use core::fmt;
use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;
use memmap2::MmapRaw;

use crate::metrics::CounterBlock;
use crate::window::Window;
use crate::word::{Limits, MAX_HALF_OPEN_CALLS, MAX_SUCCESS_THRESHOLD};
use crate::{
    CircuitBreaker, Clock, Command, Config, ConfigError, Counters, DefaultClock, MonotonicClock, Snapshot,
    Store, WallAnchor, STRIPES,
};

/// The first bytes of every region file.
const MAGIC: [u8; 8] = *b"CBREGION";
/// Bumped whenever the meaning of any byte changes; a region of another version is replaced.
const LAYOUT_VERSION: u32 = 3;
/// The header occupies the first page; slots start after it.
const HEADER_SIZE: usize = 4096;
/// The longest breaker name a slot holds, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The capacity of a region unless [`RegionOptions::capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The most slots a region may have.
pub const MAX_CAPACITY: usize = 1 << 20;
/// The ready mark, written last when a region is created: a file without it was never finished.
const READY: u32 = 0x5EAD_C0DE;
/// A slot nobody has claimed (all-zero, as a fresh file is).
const SLOT_EMPTY: u32 = 0;
/// A claimed slot; written last when a slot is claimed.
const SLOT_READY: u32 = 0x510C_0001;
/// The clock words are stamped with: `CLOCK_MONOTONIC` milliseconds.
const CLOCK_MONOTONIC_MS: u32 = 1;

/// The header's fields, read as one plain copy and checked before anything else is used.
#[repr(C)]
#[derive(Clone, Copy)]
struct HeaderFields {
    magic: [u8; 8],
    layout_version: u32,
    header_size: u32,
    slot_size: u32,
    capacity: u32,
    layout_hash: u64,
    boot_id: [u8; 40],
    clock: u32,
    _reserved: u32,
    created_unix_ms: u64,
    /// `CLOCK_MONOTONIC` ms at `created_unix_ms`: every process converts ticks to wall-clock
    /// time by this one anchor, so their reports agree.
    created_tick: u64,
    /// FNV-1a of every field above.
    checksum: u64,
}

#[repr(C)]
struct Header {
    fields: HeaderFields,
    ready: AtomicU32,
}

/// The part of a slot read and written only under the file lock.
#[repr(C)]
struct SlotMeta {
    state: AtomicU32,
    name_len: u32,
    name_hash: u64,
    /// [`fingerprint`] of `config`.
    fingerprint: u64,
    /// The configuration of the last process that attached, in [`config_words`] order.
    config: [u64; 5],
    name: [u8; MAX_NAME_LEN],
}

#[repr(C)]
struct Slot {
    meta: CachePadded<SlotMeta>,
    word: CachePadded<AtomicU64>,
    counters: CounterBlock,
    /// The rate policies' window (all-zero: empty), shared like the word.
    window: CachePadded<Window>,
}

const SLOT_SIZE: usize = size_of::<Slot>();

/// A hash of everything this build assumes about the bytes of a slot, so that builds that would
/// read each other's slots differently never share a region.
const LAYOUT_HASH: u64 = {
    let shape = [
        size_of::<Slot>(),
        align_of::<Slot>(),
        offset_of!(Slot, word),
        offset_of!(Slot, counters),
        size_of::<CounterBlock>(),
        offset_of!(Slot, window),
        size_of::<Window>(),
        size_of::<SlotMeta>(),
        offset_of!(SlotMeta, name),
        STRIPES,
        MAX_NAME_LEN,
        size_of::<Header>(),
    ];
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < shape.len() {
        hash = fnv1a_step(hash, &(shape[i] as u64).to_le_bytes());
        i += 1;
    }
    hash
};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

const fn fnv1a_step(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_step(FNV_OFFSET, bytes)
}

/// A [`Config`] as the numbers a slot records (durations in milliseconds, rounded up; a
/// failure threshold of 0, which no valid config has, for `consecutive_failures` off).
fn config_words(config: &Config) -> [u64; 5] {
    let ms = |d: std::time::Duration| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    [
        if config.consecutive_failures { config.failure_threshold } else { 0 },
        ms(config.recovery_timeout),
        config.success_threshold,
        config.half_open_max_calls,
        ms(config.probe_timeout),
    ]
}

fn fingerprint(words: &[u64; 5]) -> u64 {
    words.iter().fold(FNV_OFFSET, |h, w| fnv1a_step(h, &w.to_le_bytes()))
}

fn config_from_words(words: [u64; 5]) -> Config {
    let ms = std::time::Duration::from_millis;
    Config::default()
        .failure_threshold(words[0].max(1))
        .consecutive_failures(words[0] != 0)
        .recovery_timeout(ms(words[1]))
        .success_threshold(words[2])
        .half_open_max_calls(words[3])
        .probe_timeout(ms(words[4]))
}

/// Why a region could not be opened or a breaker not attached.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegionError {
    /// The operating system refused an operation on the file.
    Io {
        /// The region file.
        path: PathBuf,
        /// What was being done (`"open"`, `"lock"`, `"map"`, ...).
        operation: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The file exists but is not a region (another magic): it is left alone.
    NotARegion {
        /// The file.
        path: PathBuf,
    },
    /// The file is a symlink, not a regular file, owned by another user or writable by others,
    /// and [`RegionOptions::allow_foreign`] was not given: it is left alone.
    Insecure {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Every slot holds a breaker already.
    Full {
        /// The region file.
        path: PathBuf,
        /// Its number of slots.
        capacity: usize,
    },
    /// A breaker name that a slot cannot hold (empty, or longer than [`MAX_NAME_LEN`] bytes).
    BadName {
        /// The name's length in bytes.
        len: usize,
    },
    /// An option out of range.
    BadOption {
        /// The option, as named in [`RegionOptions`].
        option: &'static str,
        /// What is allowed.
        allowed: String,
    },
    /// The breaker's configuration is out of range.
    Config(ConfigError),
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::Io { path, operation, source } => {
                write!(f, "shared memory region {}: {operation} failed: {source}", path.display())
            }
            RegionError::NotARegion { path } => write!(
                f,
                "{} exists and is not a circuit breaker region; refusing to use or overwrite it \
                 (choose another path)",
                path.display()
            ),
            RegionError::Insecure { path, reason } => write!(
                f,
                "refusing shared memory region {}: {reason} (allow it explicitly only if every \
                 user who can write it is trusted)",
                path.display()
            ),
            RegionError::Full { path, capacity } => write!(
                f,
                "shared memory region {} is full: all {capacity} slots hold breakers; use a region \
                 with a larger capacity at another path (RegionOptions::capacity, or \
                 CIRCUIT_BREAKER_SHARED_MEMORY_CAPACITY in Python), or delete the file when no \
                 process uses it",
                path.display()
            ),
            RegionError::BadName { len } => write!(
                f,
                "a breaker shared through memory needs a name of 1 to {MAX_NAME_LEN} bytes, got {len} bytes"
            ),
            RegionError::BadOption { option, allowed } => write!(f, "{option} must be {allowed}"),
            RegionError::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::Io { source, .. } => Some(source),
            RegionError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for RegionError {
    fn from(e: ConfigError) -> Self {
        RegionError::Config(e)
    }
}

/// Where and how to open a region. Every option has a default.
///
/// | option | default | meaning |
/// |---|---|---|
/// | `path` | [`RegionOptions::default_path`] | the file |
/// | `capacity` | [`DEFAULT_CAPACITY`] | slots when the file is created (1 ..= [`MAX_CAPACITY`]); an existing region keeps its own |
/// | `mode` | `0o600` | permissions when the file is created (`0o660` to share with a group) |
/// | `allow_foreign` | `false` | use a file owned by another user or writable by others |
///
/// ```
/// use cb_core::RegionOptions;
/// let options = RegionOptions::new().capacity(64).mode(0o660);
/// assert_eq!(options.get_capacity(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct RegionOptions {
    path: PathBuf,
    capacity: usize,
    mode: u32,
    allow_foreign: bool,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            path: RegionOptions::default_path(),
            capacity: DEFAULT_CAPACITY,
            mode: 0o600,
            allow_foreign: false,
        }
    }
}

impl RegionOptions {
    /// The defaults.
    pub fn new() -> Self {
        RegionOptions::default()
    }

    /// `/dev/shm/circuit_breaker.<uid>` (memory, gone at reboot), or the same name in the
    /// temporary directory where `/dev/shm` does not exist. One file per user: every process of
    /// the user that uses the default shares breakers by name, so give applications that name
    /// their breakers alike a path each.
    ///
    /// ```
    /// let path = cb_core::RegionOptions::default_path();
    /// assert!(path.file_name().unwrap().to_str().unwrap().starts_with("circuit_breaker."));
    /// ```
    pub fn default_path() -> PathBuf {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let name = format!("circuit_breaker.{}", unsafe { libc::geteuid() });
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.join(name)
        } else {
            std::env::temp_dir().join(name)
        }
    }

    /// Sets the file.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the number of slots a new region gets.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the permissions of a new file (`0o600` by default).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Accepts a file owned by another user or writable by others (multi-user setups).
    pub fn allow_foreign(mut self, allow: bool) -> Self {
        self.allow_foreign = allow;
        self
    }

    /// The file.
    pub fn get_path(&self) -> &Path {
        &self.path
    }

    /// The number of slots a new region gets.
    pub fn get_capacity(&self) -> usize {
        self.capacity
    }

    fn check(&self) -> Result<(), RegionError> {
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(RegionError::BadOption { option: "capacity", allowed: format!("in 1..={MAX_CAPACITY}, got {}", self.capacity) });
        }
        if self.mode & !0o777 != 0 || self.mode & 0o600 != 0o600 {
            return Err(RegionError::BadOption {
                option: "mode",
                allowed: format!("permission bits including 0o600 (the owner reads and writes), got {:#o}", self.mode),
            });
        }
        Ok(())
    }
}

/// The mapping and the file behind a [`SharedRegion`]; kept alive by every breaker made from it.
struct Mapping {
    map: MmapRaw,
    file: File,
    path: PathBuf,
    capacity: usize,
    recreated: Option<String>,
    anchor: WallAnchor,
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
            let _lock = FileLock::exclusive(&file).map_err(|e| io_error(&path, "lock", e))?;
            // The file may have been replaced while we waited for the lock: use what the path
            // names now.
            if !same_file(&path, &file) {
                continue;
            }
            let meta = file.metadata().map_err(|e| io_error(&path, "stat", e))?;
            check_ownership(&path, &meta, options.allow_foreign)?;
            match inspect(&file, meta.len()) {
                Ok((capacity, anchor)) => {
                    let map = map(&file, &path)?;
                    return Ok(SharedRegion { inner: Arc::new(Mapping { map, file, path, capacity, recreated: None, anchor }) });
                }
                Err(Unusable::NotOurs) => return Err(RegionError::NotARegion { path }),
                Err(Unusable::Stale(reason)) => {
                    // Ours but unusable: build a complete new region and rename it over this one,
                    // while we hold this one's lock so nobody else replaces it at the same time.
                    create_new(options, Some(&path))?;
                    let file = open_existing(&path).map_err(|e| io_error(&path, "open", e))?;
                    let meta = file.metadata().map_err(|e| io_error(&path, "stat", e))?;
                    let (capacity, anchor) =
                        inspect(&file, meta.len()).map_err(|_| RegionError::NotARegion { path: path.clone() })?;
                    let map = map(&file, &path)?;
                    let recreated = Some(format!("replaced a stale region at {}: {reason}", path.display()));
                    return Ok(SharedRegion { inner: Arc::new(Mapping { map, file, path, capacity, recreated, anchor }) });
                }
            }
        }
    }

    /// Opens the region at [`RegionOptions::default_path`].
    pub fn open_default() -> Result<SharedRegion, RegionError> {
        SharedRegion::open(&RegionOptions::default())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the path now names another file (or none): the region was deleted or replaced
    /// (a stale region is replaced by renaming a new file over it). Breakers made from this
    /// region keep working on the old file, apart from processes that open the path anew; open
    /// it again to join them.
    pub fn is_replaced(&self) -> bool {
        !same_file(&self.inner.path, &self.inner.file)
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
        let _lock = FileLock::exclusive(&self.inner.file).map_err(|e| io_error(&self.inner.path, "lock", e))?;
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
                    }
                    meta.state.store(SLOT_READY, Ordering::Release);
                    return Ok(self.finish_attach(index, limits, None));
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
                        return Ok(self.finish_attach(index, limits, mismatch));
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
        let _lock = FileLock::exclusive(&self.inner.file).map_err(|e| io_error(&self.inner.path, "lock", e))?;
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

    fn finish_attach(&self, index: usize, limits: Limits, mismatch: Option<Config>) -> SharedSlot {
        let slot = SharedSlot { region: self.clone(), index, mismatch, repaired: None };
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
}

impl SharedSlot {
    /// The word, as a [`Store`] for [`CircuitBreaker::with_store`].
    pub fn word(&self) -> SlotWord {
        let slot = self.region.slot(self.index);
        // SAFETY: in bounds (see `SharedRegion::slot`); `word` is an AtomicU64 at an offset
        // aligned for it.
        let word = unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*slot.as_ptr()).word).cast::<AtomicU64>()) };
        SlotWord { word, _region: Arc::clone(&self.region.inner) }
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

// ----- the file -----

enum Unusable {
    /// Not a region (another magic): never touched.
    NotOurs,
    /// A region of ours that cannot be used, and why: replaced.
    Stale(String),
}

fn io_error(path: &Path, operation: &'static str, source: io::Error) -> RegionError {
    RegionError::Io { path: path.to_owned(), operation, source }
}

/// Opens an existing file without following a symbolic link (ELOOP if the path is one).
fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

fn same_file(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn check_ownership(path: &Path, meta: &fs::Metadata, allow_foreign: bool) -> Result<(), RegionError> {
    let insecure = |reason: String| Err(RegionError::Insecure { path: path.to_owned(), reason });
    if !meta.file_type().is_file() {
        return insecure("it is not a regular file".into());
    }
    if allow_foreign {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return insecure(format!("it is owned by uid {}, not by this process's uid {uid}", meta.uid()));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return insecure(format!("it is writable by every user (mode {:#o})", meta.permissions().mode() & 0o777));
    }
    Ok(())
}

/// Checks the header and the size of an open region file: its capacity and wall-clock anchor,
/// or why it is unusable.
fn inspect(file: &File, len: u64) -> Result<(usize, WallAnchor), Unusable> {
    let stale = |reason: String| Err(Unusable::Stale(reason));
    if len == 0 {
        return stale("the file is empty".into());
    }
    let mut raw = [0u8; size_of::<Header>()];
    let read = read_at(file, &mut raw);
    if read < MAGIC.len() || raw[..MAGIC.len()] != MAGIC {
        return Err(Unusable::NotOurs);
    }
    if read < raw.len() {
        return stale(format!("the file is truncated ({len} bytes)"));
    }
    // SAFETY: `raw` holds size_of::<Header>() initialised bytes and HeaderFields is plain data
    // valid for any bytes; read_unaligned makes no alignment assumption.
    let h: HeaderFields = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let ready = u32::from_ne_bytes(raw[offset_of!(Header, ready)..][..4].try_into().unwrap_or_default());
    if h.layout_version != LAYOUT_VERSION {
        return stale(format!("layout version {} (this build reads {LAYOUT_VERSION})", h.layout_version));
    }
    if h.checksum != header_checksum(&h) {
        return stale("the header checksum does not match".into());
    }
    if ready != READY {
        return stale("its creation never finished".into());
    }
    if h.header_size as usize != HEADER_SIZE || h.slot_size as usize != SLOT_SIZE || h.layout_hash != LAYOUT_HASH {
        return stale("it was made by a build with another slot layout".into());
    }
    if h.clock != CLOCK_MONOTONIC_MS {
        return stale(format!("its words use clock {} (this build stamps CLOCK_MONOTONIC ms)", h.clock));
    }
    if h.boot_id != boot_id() {
        return stale("it was made before the last reboot (its timestamps mean nothing now)".into());
    }
    let capacity = h.capacity as usize;
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        return stale(format!("capacity {capacity} is out of range"));
    }
    let expected = (HEADER_SIZE + capacity * SLOT_SIZE) as u64;
    if len != expected {
        return stale(format!("the file is {len} bytes, its header says {expected}"));
    }
    Ok((capacity, WallAnchor::new(h.created_unix_ms, h.created_tick)))
}

fn read_at(file: &File, buf: &mut [u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    done
}

fn header_checksum(h: &HeaderFields) -> u64 {
    let mut copy = *h;
    copy.checksum = 0;
    // SAFETY: HeaderFields is repr(C) plain data with no padding between its fields (every
    // field is aligned by the one before), so viewing it as bytes reads initialised memory.
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::addr_of!(copy).cast::<u8>(), size_of::<HeaderFields>()) };
    fnv1a(bytes)
}

/// Identifies this boot: the kernel's boot id on Linux, else the boot time to the minute.
fn boot_id() -> [u8; 40] {
    let mut id = [0u8; 40];
    let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_else(|_| {
        let up = MonotonicClock.now() / 1_000;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("boot-at-{}", now.saturating_sub(up) / 60)
    });
    let text = text.trim().as_bytes();
    let n = text.len().min(id.len());
    id[..n].copy_from_slice(&text[..n]);
    id
}

/// Builds a complete region in a temporary file next to `path`, then puts it in place: with
/// `link` (failing if a file appeared there meanwhile) when creating, or `rename` over `replace`.
fn create_new(options: &RegionOptions, replace: Option<&Path>) -> Result<(), RegionError> {
    let path = &options.path;
    let temp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("region"),
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(options.mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(|e| io_error(path, "create", e))?;
    let result = (|| {
        // The umask may have taken bits from the mode asked for.
        file.set_permissions(fs::Permissions::from_mode(options.mode)).map_err(|e| io_error(path, "chmod", e))?;
        let len = HEADER_SIZE + options.capacity * SLOT_SIZE;
        file.set_len(len as u64).map_err(|e| io_error(path, "resize", e))?;
        let map = map(&file, path)?;
        let mut fields = HeaderFields {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            slot_size: SLOT_SIZE as u32,
            capacity: options.capacity as u32,
            layout_hash: LAYOUT_HASH,
            boot_id: boot_id(),
            clock: CLOCK_MONOTONIC_MS,
            _reserved: 0,
            created_unix_ms: 0,
            created_tick: 0,
            checksum: 0,
        };
        fields.created_tick = MonotonicClock.now();
        fields.created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        fields.checksum = header_checksum(&fields);
        let header = map.as_mut_ptr().cast::<Header>();
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page-aligned, and nobody else can
        // see this file before it is linked into place.
        unsafe {
            std::ptr::addr_of_mut!((*header).fields).write(fields);
            (*header).ready.store(READY, Ordering::Release);
        }
        map.flush().map_err(|e| io_error(path, "flush", e))?;
        match replace {
            Some(target) => fs::rename(&temp, target).map_err(|e| io_error(path, "replace", e)),
            None => fs::hard_link(&temp, path).map_err(|e| io_error(path, "create", e)),
        }
    })();
    let _ = fs::remove_file(&temp);
    result
}

fn map(file: &File, path: &Path) -> Result<MmapRaw, RegionError> {
    MmapRaw::map_raw(file).map_err(|e| io_error(path, "map", e))
}

/// An exclusive `flock` on a file, released on drop (and by the kernel if the process dies).
/// Holds the descriptor, not the file, so the file can move (into a [`Mapping`]) while locked;
/// every lock is dropped before its file.
struct FileLock(std::os::fd::RawFd);

impl FileLock {
    fn exclusive(file: &File) -> io::Result<Self> {
        loop {
            // SAFETY: a valid open file descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock(file.as_raw_fd()));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: the descriptor this value locked; its file outlives the lock (see the type).
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}
