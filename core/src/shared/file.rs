//! The region file: opening without following links, the ownership checks, reading and
//! checking the header, creating a complete region and putting it in place, and the lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

use super::error::RegionError;
use super::layout::{
    header_checksum, Header, HeaderFields, CLOCK_MONOTONIC_MS, HEADER_SIZE, LAYOUT_HASH, LAYOUT_VERSION, MAGIC,
    MAX_CAPACITY, READY, SLOT_SIZE,
};
use super::options::RegionOptions;
use crate::{Clock, MonotonicClock, WallAnchor};

pub(super) enum Unusable {
    /// Not a region (another magic): never touched.
    NotOurs,
    /// A region of ours that cannot be used, and why: replaced.
    Stale(String),
}

pub(super) fn io_error(path: &Path, operation: &'static str, source: io::Error) -> RegionError {
    RegionError::Io { path: path.to_owned(), operation, source }
}

/// Opens an existing file without following a symbolic link (ELOOP if the path is one).
pub(super) fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

pub(super) fn same_file(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

pub(super) fn check_ownership(path: &Path, meta: &fs::Metadata, allow_foreign: bool) -> Result<(), RegionError> {
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
pub(super) fn inspect(file: &File, len: u64) -> Result<(usize, WallAnchor), Unusable> {
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

pub(super) fn read_at(file: &File, buf: &mut [u8]) -> usize {
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


/// Identifies this boot: the kernel's boot id on Linux, else the boot time to the minute.
pub(super) fn boot_id() -> [u8; 40] {
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
pub(super) fn create_new(options: &RegionOptions, replace: Option<&Path>) -> Result<(), RegionError> {
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

pub(super) fn map(file: &File, path: &Path) -> Result<MmapRaw, RegionError> {
    MmapRaw::map_raw(file).map_err(|e| io_error(path, "map", e))
}

/// An exclusive `flock` on a file, released on drop (and by the kernel if the process dies).
/// Holds the descriptor, not the file, so the file can move (into a [`Mapping`](super::Mapping))
/// while locked; every lock is dropped before its file.
pub(super) struct FileLock(std::os::fd::RawFd);

impl FileLock {
    /// Takes the lock, waiting at most `timeout`. Anyone who can open the file may hold its lock
    /// (`flock` needs no write permission), so the wait is bounded: a holder that keeps it longer
    /// than any of our operations would (microseconds) gets [`RegionError::LockTimeout`], never a
    /// hang.
    pub(super) fn exclusive(file: &File, path: &Path, timeout: Duration) -> Result<Self, RegionError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            // SAFETY: a valid open file descriptor; LOCK_NB makes the call return at once.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock(file.as_raw_fd()));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {}
                _ => return Err(io_error(path, "lock", e)),
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(RegionError::LockTimeout { path: path.to_owned(), waited });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: the descriptor this value locked; its file outlives the lock (see the type).
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}
