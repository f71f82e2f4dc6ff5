//! The region file: opening without following links, the ownership checks, reading and
//! checking the header, creating a complete region and putting it in place, and the lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

/// Opens an existing file without following a symbolic link (ELOOP if the path is one), and
/// without waiting: O_NONBLOCK makes opening a FIFO someone put at the path return at once (it
/// is then refused as not a regular file), and changes nothing for a regular file.
pub(super) fn open_existing(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path)
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
    // A file of ours at the region path (the ownership checks passed) too short to hold even
    // the magic was cut short.
    if read < MAGIC.len() {
        return stale(format!("the file is truncated ({len} bytes)"));
    }
    // SAFETY: `raw` holds size_of::<Header>() initialised bytes (zeroes past what was read) and
    // HeaderFields is plain data valid for any bytes; read_unaligned makes no alignment
    // assumption.
    let h: HeaderFields = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    if h.magic != MAGIC {
        let flipped: u32 = h.magic.iter().zip(MAGIC).map(|(a, b)| (a ^ b).count_ones()).sum();
        let restored = HeaderFields { magic: MAGIC, ..h };
        let damaged = flipped <= MAX_MAGIC_BITS_FLIPPED || (read == raw.len() && h.checksum == header_checksum(&restored));
        if !damaged {
            return Err(Unusable::NotOurs);
        }
        return stale(format!("its magic is damaged ({flipped} bits differ from {:?})", String::from_utf8_lossy(&MAGIC)));
    }
    if read < raw.len() {
        return stale(format!("the file is truncated ({len} bytes)"));
    }
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
    if let Some(why) = impossible_creation(&h) {
        return stale(why);
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

/// At most this many bits of the magic may differ for a file to be a damaged region of ours
/// rather than another kind of file: a few flipped bits, not another format (`CBREGION` against
/// any other text differs in dozens).
const MAX_MAGIC_BITS_FLIPPED: u32 = 4;

/// 2020-01-01T00:00:00Z in Unix milliseconds: no region was made before it.
const EARLIEST_CREATION_UNIX_MS: u64 = 1_577_836_800_000;

/// Why the header's creation stamps cannot be true (made before 2020 or more than a day ahead of
/// the wall clock, or later than now on this boot's clock), if they cannot: reports anchored on
/// them would show nonsense times.
fn impossible_creation(h: &HeaderFields) -> Option<String> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let latest = now_ms.saturating_add(86_400_000);
    if !(EARLIEST_CREATION_UNIX_MS..=latest).contains(&h.created_unix_ms) {
        return Some(format!("its creation time ({} ms after 1970) is impossible", h.created_unix_ms));
    }
    let now_tick = MonotonicClock.now();
    if h.created_tick > now_tick {
        return Some(format!("it was made at tick {} of this boot's clock, which reads {now_tick} now", h.created_tick));
    }
    None
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

/// Builds a complete region in a temporary file next to `path`, then puts it in place: linked
/// (failing if a file appeared there meanwhile) when creating, or renamed over `replace`.
///
/// The temporary is an unnamed `O_TMPFILE` where the file system supports it, so a process killed
/// while building it leaves nothing behind; elsewhere a hidden `.<name>.<pid>.<nanos>.tmp` that
/// [`remove_stale_temporaries`] removes once its process is gone.
pub(super) fn create_new(options: &RegionOptions, replace: Option<&Path>) -> Result<(), RegionError> {
    let path = &options.path;
    if let Some(file) = open_unnamed(path, options.mode) {
        match fill(&file, options).and_then(|()| link_unnamed(&file, path, replace)) {
            Err(RegionError::Io { operation: "link", .. }) => {} // no way to name it: use a named one
            done => return done,
        }
    }
    let temp = temporary_name(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(options.mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(|e| io_error(path, "create", e))?;
    let result = fill(&file, options).and_then(|()| put_in_place(&temp, path, replace));
    let _ = fs::remove_file(&temp);
    result
}

/// `.<name>.<pid>.<nanos>.tmp` next to `path`: hidden, and naming the process that made it.
fn temporary_name(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        "{}{}.{}.tmp",
        temporary_prefix(path),
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    ))
}

/// What every temporary of `path` starts with, before the pid.
fn temporary_prefix(path: &Path) -> String {
    format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("region"))
}

/// Sizes a new, unseen region file and writes its header, the ready mark last.
fn fill(file: &File, options: &RegionOptions) -> Result<(), RegionError> {
    use std::os::unix::fs::FileExt;
    let path = &options.path;
    // The umask may have taken bits from the mode asked for.
    file.set_permissions(fs::Permissions::from_mode(options.mode)).map_err(|e| io_error(path, "chmod", e))?;
    let len = HEADER_SIZE + options.capacity * SLOT_SIZE;
    file.set_len(len as u64).map_err(|e| io_error(path, "resize", e))?;
    let created_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let fields = HeaderFields::new(options.capacity as u32, boot_id(), created_unix_ms, MonotonicClock.now());
    file.write_all_at(fields.as_bytes(), 0).map_err(|e| io_error(path, "write", e))?;
    file.write_all_at(&READY.to_ne_bytes(), offset_of!(Header, ready) as u64).map_err(|e| io_error(path, "write", e))
}

/// Links or renames the named temporary `temp` into place.
fn put_in_place(temp: &Path, path: &Path, replace: Option<&Path>) -> Result<(), RegionError> {
    match replace {
        Some(target) => fs::rename(temp, target).map_err(|e| io_error(path, "replace", e)),
        None => fs::hard_link(temp, path).map_err(|e| io_error(path, "create", e)),
    }
}

/// An unnamed file (`O_TMPFILE`) in `path`'s directory, if the system and file system make one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_unnamed(path: &Path, mode: u32) -> Option<File> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    OpenOptions::new().read(true).write(true).mode(mode).custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC).open(dir).ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_unnamed(_path: &Path, _mode: u32) -> Option<File> {
    None
}

/// Gives the unnamed `file` the name `path` (failing if it exists), or renames it over
/// `replace` (through a named temporary: only a name can be renamed). An error with operation
/// `"link"` means the file could not be named at all.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn link_unnamed(file: &File, path: &Path, replace: Option<&Path>) -> Result<(), RegionError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let name = match replace {
        Some(_) => temporary_name(path),
        None => path.to_owned(),
    };
    let c_name = CString::new(name.as_os_str().as_bytes()).map_err(|e| io_error(path, "create", io::Error::other(e)))?;
    let proc_fd = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default();
    // SAFETY: both paths are NUL-terminated strings that outlive the calls, and the descriptor is
    // open. The first call names the file through /proc; the second (where /proc is missing)
    // by its descriptor.
    let linked = unsafe {
        libc::linkat(libc::AT_FDCWD, proc_fd.as_ptr(), libc::AT_FDCWD, c_name.as_ptr(), libc::AT_SYMLINK_FOLLOW) == 0
            || (io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                && libc::linkat(file.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, c_name.as_ptr(), libc::AT_EMPTY_PATH) == 0)
    };
    if !linked {
        let e = io::Error::last_os_error();
        return Err(match e.kind() {
            io::ErrorKind::AlreadyExists => io_error(path, "create", e),
            _ => io_error(path, "link", e),
        });
    }
    let Some(target) = replace else { return Ok(()) };
    let result = put_in_place(&name, path, Some(target));
    let _ = fs::remove_file(&name);
    result
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn link_unnamed(_file: &File, path: &Path, _replace: Option<&Path>) -> Result<(), RegionError> {
    Err(io_error(path, "link", io::Error::from(io::ErrorKind::Unsupported)))
}

/// How old a named temporary must be before it is taken for stale: creating a region takes
/// milliseconds, and a process in another pid namespace may look dead to us.
const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(60);

/// Removes the named temporaries of `path` (`.<name>.<pid>.<nanos>.tmp`) that a process killed
/// while creating a region left behind: ours (same owner, regular files), at least
/// [`STALE_TEMPORARY_AGE`] old, whose process is gone. Best effort: errors are ignored.
pub(super) fn remove_stale_temporaries(path: &Path) {
    let Some(dir) = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d }) else { return };
    let prefix = temporary_prefix(path);
    let Ok(entries) = fs::read_dir(dir) else { return };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix.as_str())).and_then(|rest| {
            let (pid, rest) = rest.split_once('.')?;
            let nanos = rest.strip_suffix(".tmp")?;
            nanos.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            pid.parse::<libc::pid_t>().ok().filter(|p| *p > 0)
        }) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
        let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= STALE_TEMPORARY_AGE);
        if meta.file_type().is_file() && meta.uid() == uid && old && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether a process `pid` exists (it may belong to another user).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) }
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
