//! Where a Python breaker's word lives: in this process, or in a slot of a shared-memory
//! region that every process of the host attaches. One concrete type for both, so the binding
//! has one breaker type and every method is the same code; the store is decided by one
//! predictable branch per access.

use cb_core::{LocalWord, SlotWord, Snapshot, Store};

/// The word of one Python breaker.
pub(crate) enum PyStore {
    /// In this process only.
    Local(LocalWord),
    /// In a shared-memory slot: host-wide.
    Shared(SlotWord),
}

impl Store for PyStore {
    #[inline(always)]
    fn load(&self) -> Snapshot {
        match self {
            PyStore::Local(word) => word.load(),
            PyStore::Shared(word) => word.load(),
        }
    }

    #[inline(always)]
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        match self {
            PyStore::Local(word) => word.compare_exchange(current, next),
            PyStore::Shared(word) => word.compare_exchange(current, next),
        }
    }
}

/// The core breaker every Python breaker wraps.
pub(crate) type Inner = cb_core::CircuitBreaker<cb_core::DefaultClock, cb_core::Counters, PyStore>;
