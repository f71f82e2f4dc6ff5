//! Why a region could not be opened or a breaker not attached.

use core::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::layout::MAX_NAME_LEN;
use crate::ConfigError;

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
    /// and [`RegionOptions::allow_foreign`](super::RegionOptions::allow_foreign) was not given: it is left alone.
    Insecure {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process held the file's lock for longer than
    /// [`RegionOptions::lock_timeout`](super::RegionOptions::lock_timeout) (our own operations
    /// hold it for microseconds): a process stuck while holding it, or someone who can open the
    /// file holding it on purpose.
    LockTimeout {
        /// The region file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
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
        /// The option, as named in [`RegionOptions`](super::RegionOptions).
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
            RegionError::LockTimeout { path, waited } => write!(
                f,
                "shared memory region {}: its lock has been held by another process for more than \
                 {waited:.1?}; a process holding it is stuck, or someone who can open the file holds \
                 it (find them with `fuser -v` or `lsof`)",
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
