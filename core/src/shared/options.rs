//! Where and how to open a region.

use std::path::{Path, PathBuf};

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
