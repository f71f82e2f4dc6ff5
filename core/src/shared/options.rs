//! Where and how to open a region.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::RegionError;
use super::layout::{DEFAULT_CAPACITY, MAX_CAPACITY};

/// Where and how to open a region. Every option has a default.
///
/// | option | default | meaning |
/// |---|---|---|
/// | `path` | [`RegionOptions::default_path`] | the file |
/// | `capacity` | [`DEFAULT_CAPACITY`] | slots when the file is created (1 ..= [`MAX_CAPACITY`]); an existing region keeps its own |
/// | `mode` | `0o600` | permissions when the file is created (`0o660` to share with a group) |
/// | `allow_foreign` | `false` | use a file owned by another user or writable by others |
/// | `lock_timeout` | 5 s | the longest wait for the file's lock before [`RegionError::LockTimeout`] |
///
/// ```
/// use cb_core::RegionOptions;
/// let options = RegionOptions::new().capacity(64).mode(0o660);
/// assert_eq!(options.get_capacity(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct RegionOptions {
    pub(super) path: PathBuf,
    pub(super) capacity: usize,
    pub(super) mode: u32,
    pub(super) allow_foreign: bool,
    pub(super) lock_timeout: Duration,
}

/// The default [`RegionOptions::lock_timeout`].
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            path: RegionOptions::default_path(),
            capacity: DEFAULT_CAPACITY,
            mode: 0o600,
            allow_foreign: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl RegionOptions {
    /// The defaults.
    pub fn new() -> Self {
        RegionOptions::default()
    }

    /// The region every process of this user shares unless told otherwise:
    ///
    /// 1. `$XDG_RUNTIME_DIR/circuit_breaker.region` when `XDG_RUNTIME_DIR` names an absolute
    ///    path to a directory owned by this process's effective uid that neither its group nor
    ///    others can write (what systemd's `pam_systemd` makes: `/run/user/<uid>`, mode 0700).
    ///    Nobody else can create a file there, so nobody else can claim the path first.
    /// 2. Otherwise `/dev/shm/circuit_breaker.<uid>` (memory, gone at reboot), or the same name
    ///    in the temporary directory where `/dev/shm` does not exist. Any local user can create
    ///    that name before us, and then every breaker that uses it is refused
    ///    ([`RegionError::Insecure`](super::RegionError::Insecure)) until the file is removed.
    ///
    /// Both live in memory and are gone at reboot. Processes with different environments
    /// choose differently: a systemd service has no `XDG_RUNTIME_DIR` unless its unit gives one
    /// (`RuntimeDirectory=`), a login shell has one; processes that must share breakers across
    /// that line should name one path explicitly ([`RegionOptions::path`], or
    /// `CIRCUIT_BREAKER_SHARED_MEMORY=/path` in Python). One file per user: every process of
    /// the user that uses the default shares breakers by name, so give applications that name
    /// their breakers alike a path each.
    ///
    /// ```
    /// let path = cb_core::RegionOptions::default_path();
    /// let name = path.file_name().unwrap().to_str().unwrap();
    /// assert!(name == "circuit_breaker.region" || name.starts_with("circuit_breaker."));
    /// ```
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| private_dir(d)) {
            return dir.join("circuit_breaker.region");
        }
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

    /// Sets the longest wait for the file's lock (5 s by default). Opening a region and attaching
    /// a breaker take an exclusive `flock` for a few microseconds; anyone who can open the file
    /// can hold it for longer, and then this process gets [`RegionError::LockTimeout`] after
    /// `timeout` instead of waiting for them. Breakers already attached never lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = cb_core::RegionOptions::new().lock_timeout(Duration::from_millis(500));
    /// assert_eq!(options.get_lock_timeout(), Duration::from_millis(500));
    /// ```
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The longest wait for the file's lock.
    pub fn get_lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The file.
    pub fn get_path(&self) -> &Path {
        &self.path
    }

    /// The number of slots a new region gets.
    pub fn get_capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn check(&self) -> Result<(), RegionError> {
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

/// Whether `dir` is an absolute path to a directory (not a symbolic link) that this process's
/// effective uid owns and that neither its group nor others can write.
fn private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    dir.is_absolute()
        && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
}
