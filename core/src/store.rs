//! Where a breaker's word lives: the seam between the transitions and the storage.
//!
//! The CAS loop of [`crate::CircuitBreaker`] needs two things of its word: read it, and replace
//! it if it is still what was read. [`Store`] is exactly that. [`LocalWord`] keeps the word in
//! this process (the default); a slot of a shared-memory region (`SharedRegion`, feature
//! `shared-memory`) keeps it where every process on the host reads and writes it. The
//! transitions, the loop and the announcements are the same code for every store.

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicU64, Ordering};
use crate::Snapshot;

/// Storage for one breaker word, read and replaced atomically.
///
/// Implementations must make [`Store::compare_exchange`] a single atomic step: the word is
/// replaced only if it still equals `current`, and every reader sees either the old or the new
/// word. `Acquire` on reads and `AcqRel` on successful writes is enough; the breaker keeps
/// nothing else that has to be ordered with the word.
///
/// ```
/// use cb_core::{LocalWord, Snapshot, Store};
/// let word = LocalWord::default();
/// let fresh = word.load();
/// assert_eq!(word.compare_exchange(fresh, Snapshot::open(1, 5)), Ok(()));
/// // A second writer that read the old word loses and learns the current one.
/// assert_eq!(word.compare_exchange(fresh, Snapshot::closed(1, 1)), Err(Snapshot::open(1, 5)));
/// ```
pub trait Store: Send + Sync {
    /// The word now.
    fn load(&self) -> Snapshot;

    /// Writes `next` if the word is still `current`; otherwise returns the word as it is (which
    /// may, spuriously, equal `current`: the caller retries).
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot>;

    /// The count of calls in flight for `Config::max_concurrent_calls`, when this store keeps
    /// one that every breaker on it shares (a shared-memory slot counts for every process of
    /// the host). `None`, the default, makes the breaker count in its own [`LocalInFlight`].
    ///
    /// ```
    /// use cb_core::{CircuitBreaker, Config, Counters, DefaultClock, InFlight, LocalInFlight, LocalWord, Snapshot, Store};
    ///
    /// /// A word in this process whose count of calls in flight is shared with other breakers.
    /// struct Pooled<'a> { word: LocalWord, pool: &'a LocalInFlight }
    /// impl Store for Pooled<'_> {
    ///     fn load(&self) -> Snapshot { self.word.load() }
    ///     fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
    ///         self.word.compare_exchange(current, next)
    ///     }
    ///     fn shared_in_flight(&self) -> Option<&dyn InFlight> { Some(self.pool) }
    /// }
    ///
    /// let pool = LocalInFlight::new();
    /// let config = Config::default().max_concurrent_calls(1);
    /// let make = || CircuitBreaker::with_store(config, DefaultClock::default(), Counters::default(), Pooled { word: LocalWord::default(), pool: &pool });
    /// let (a, b) = (make()?, make()?);
    /// let held = a.admit().unwrap();
    /// assert!(b.admit().unwrap_err().is_full()); // one place for both
    /// assert_eq!(LocalWord::default().shared_in_flight().map(|c| c.in_flight()), None);
    /// drop(held);
    /// assert!(b.admit().is_ok());
    /// # Ok::<(), cb_core::ConfigError>(())
    /// ```
    ///
    /// [`LocalInFlight`]: crate::LocalInFlight
    #[inline(always)]
    fn shared_in_flight(&self) -> Option<&dyn crate::InFlight> {
        None
    }
}

/// The word in this process, on a cache line of its own. The default store.
///
/// ```
/// use cb_core::{LocalWord, State, Store};
/// assert_eq!(LocalWord::default().load().stored_state(), State::Closed);
/// ```
#[derive(Debug, Default)]
pub struct LocalWord {
    word: CachePadded<AtomicU64>,
}

impl LocalWord {
    /// A store holding `initial`.
    ///
    /// ```
    /// use cb_core::{LocalWord, Snapshot, Store};
    /// assert_eq!(LocalWord::new(Snapshot::forced_open(2)).load(), Snapshot::forced_open(2));
    /// ```
    pub fn new(initial: Snapshot) -> Self {
        LocalWord { word: CachePadded::new(AtomicU64::new(initial.bits())) }
    }
}

impl Store for LocalWord {
    #[inline(always)]
    fn load(&self) -> Snapshot {
        Snapshot::from_bits(self.word.load(Ordering::Acquire))
    }

    #[inline(always)]
    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        self.word
            .compare_exchange_weak(current.bits(), next.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Snapshot::from_bits)
    }
}
