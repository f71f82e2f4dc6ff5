//! Where a Python breaker's word lives: in this process, in a slot of a shared-memory region
//! that every process of the host attaches, or in Redis for every host of a fleet. One
//! concrete type for all, so the binding has one breaker type and every method is the same
//! code; the store is decided by one predictable branch per access.

use cb_core::{Clock, CoarseClock, LocalWord, Outcome, RedisWord, SlotWord, Snapshot, State, Store, WallClock};

/// The word of one Python breaker.
pub(crate) enum PyStore {
    /// In this process only.
    Local(LocalWord),
    /// In a shared-memory slot: host-wide.
    Shared(SlotWord),
    /// In Redis, read through this host's mirror: fleet-wide.
    Redis(RedisWord),
}

impl PyStore {
    /// Whether the word lives in Redis (writes may wait on the network).
    #[inline(always)]
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, PyStore::Redis(_))
    }

    /// Whether `admit` may write the word in Redis: only when a probe may be admitted.
    /// Admission in CLOSED and rejection while OPEN read the mirror. (For the asyncio paths,
    /// which ask before admitting; the call path asks the core instead:
    /// `admit_without_writing`.)
    pub(crate) fn admission_is_remote(&self, inner: &Inner) -> bool {
        match self {
            PyStore::Redis(word) => word.is_connected() && inner.state() == State::HalfOpen,
            _ => false,
        }
    }

    /// Whether recording `outcome` may write the word in Redis: anything but a success (or an
    /// ignored call) in CLOSED with no failure pending, or any outcome while forced open or
    /// disabled.
    #[inline(always)]
    pub(crate) fn record_is_remote(&self, outcome: Outcome) -> bool {
        let PyStore::Redis(word) = self else { return false };
        if !word.is_connected() {
            return false;
        }
        let snapshot = word.load();
        match snapshot.stored_state() {
            State::Closed => outcome == Outcome::Failure || snapshot.failures() > 0,
            State::ForcedOpen | State::Disabled => false,
            _ => true,
        }
    }

    /// The Redis word, if the breaker is fleet-wide.
    pub(crate) fn redis(&self) -> Option<&RedisWord> {
        match self {
            PyStore::Redis(word) => Some(word),
            _ => None,
        }
    }
}

impl Store for PyStore {
    #[inline(always)]
    fn load(&self) -> Snapshot {
        match self {
            PyStore::Local(word) => word.load(),
            PyStore::Shared(word) => word.load(),
            PyStore::Redis(word) => word.load(),
        }
    }

    #[inline(always)]
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        match self {
            PyStore::Local(word) => word.compare_exchange(current, next),
            PyStore::Shared(word) => word.compare_exchange(current, next),
            PyStore::Redis(word) => word.compare_exchange(current, next),
        }
    }

    /// A slot counts calls in flight host-wide; in this process and in Redis the breaker
    /// counts them itself (a Redis round trip per call would cost more than the limit saves).
    #[inline(always)]
    fn shared_in_flight(&self) -> Option<&dyn cb_core::InFlight> {
        match self {
            PyStore::Shared(word) => word.shared_in_flight(),
            PyStore::Local(_) | PyStore::Redis(_) => None,
        }
    }
}

/// Where a Python breaker's time comes from: the host's coarse monotonic clock, or — for words
/// in Redis, read by hosts that share no monotonic clock — wall-clock milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PyClock {
    Monotonic(CoarseClock),
    Wall(WallClock),
}

impl Clock for PyClock {
    #[inline(always)]
    fn now(&self) -> u64 {
        match self {
            PyClock::Monotonic(clock) => clock.now(),
            PyClock::Wall(clock) => clock.now(),
        }
    }
}

/// The core breaker every Python breaker wraps.
pub(crate) type Inner = cb_core::CircuitBreaker<PyClock, cb_core::Counters, PyStore>;
