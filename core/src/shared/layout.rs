//! The bytes of a region file: the header, the slots, the constants and hashes that describe
//! them, and the configuration a slot records. Nothing here touches a file.

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::in_flight::{InFlightRows, IN_FLIGHT_ROWS};
use crate::metrics::CounterBlock;
use crate::window::Window;
use crate::{Config, SlidingWindow, STRIPES};

/// The first bytes of every region file.
pub(super) const MAGIC: [u8; 8] = *b"CBREGION";
/// Bumped whenever the meaning of any byte changes; a region of another version is replaced.
pub(super) const LAYOUT_VERSION: u32 = 6;
/// The header occupies the first page; slots start after it.
pub(super) const HEADER_SIZE: usize = 4096;
/// The longest breaker name a slot holds, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The capacity of a region unless [`RegionOptions::capacity`](super::RegionOptions::capacity) says otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The most slots a region may have.
pub const MAX_CAPACITY: usize = 1 << 20;
/// The ready mark, written last when a region is created: a file without it was never finished.
pub(super) const READY: u32 = 0x5EAD_C0DE;
/// A slot nobody has claimed (all-zero, as a fresh file is).
pub(super) const SLOT_EMPTY: u32 = 0;
/// A claimed slot; written last when a slot is claimed.
pub(super) const SLOT_READY: u32 = 0x510C_0001;
/// The clock words are stamped with: `CLOCK_MONOTONIC` milliseconds.
pub(super) const CLOCK_MONOTONIC_MS: u32 = 1;

/// The header's fields, read as one plain copy and checked before anything else is used.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct HeaderFields {
    pub(super) magic: [u8; 8],
    pub(super) layout_version: u32,
    pub(super) header_size: u32,
    pub(super) slot_size: u32,
    pub(super) capacity: u32,
    pub(super) layout_hash: u64,
    pub(super) boot_id: [u8; 40],
    pub(super) clock: u32,
    pub(super) _reserved: u32,
    pub(super) created_unix_ms: u64,
    /// `CLOCK_MONOTONIC` ms at `created_unix_ms`: every process converts ticks to wall-clock
    /// time by this one anchor, so their reports agree.
    pub(super) created_tick: u64,
    /// FNV-1a of every field above.
    pub(super) checksum: u64,
}

#[repr(C)]
pub(super) struct Header {
    pub(super) fields: HeaderFields,
    pub(super) ready: AtomicU32,
}

/// The part of a slot read and written only under the file lock.
#[repr(C)]
pub(super) struct SlotMeta {
    pub(super) state: AtomicU32,
    pub(super) name_len: u32,
    pub(super) name_hash: u64,
    /// [`fingerprint`] of `config`.
    pub(super) fingerprint: u64,
    /// The configuration of the last process that attached, in [`config_words`] order.
    pub(super) config: ConfigWords,
    pub(super) name: [u8; MAX_NAME_LEN],
}

#[repr(C)]
pub(super) struct Slot {
    pub(super) meta: CachePadded<SlotMeta>,
    pub(super) word: CachePadded<AtomicU64>,
    pub(super) counters: CounterBlock,
    /// The rate policies' window (all-zero: empty), shared like the word.
    pub(super) window: CachePadded<Window>,
    /// The calls in flight, a row for each process holding places (see `super::in_flight`).
    pub(super) in_flight: CachePadded<InFlightRows>,
}

pub(super) const SLOT_SIZE: usize = size_of::<Slot>();

/// A hash of everything this build assumes about the bytes of a slot, so that builds that would
/// read each other's slots differently never share a region.
pub(super) const LAYOUT_HASH: u64 = {
    let shape = [
        size_of::<Slot>(),
        align_of::<Slot>(),
        offset_of!(Slot, word),
        offset_of!(Slot, counters),
        size_of::<CounterBlock>(),
        offset_of!(Slot, window),
        size_of::<Window>(),
        offset_of!(Slot, in_flight),
        size_of::<InFlightRows>(),
        IN_FLIGHT_ROWS,
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

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub(super) const fn fnv1a_step(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_step(FNV_OFFSET, bytes)
}

/// How many numbers a slot records of a [`Config`].
pub(super) const CONFIG_WORDS: usize = 11;

/// A [`Config`] as a slot records it: see [`config_words`].
pub(super) type ConfigWords = [u64; CONFIG_WORDS];

/// How [`config_words`] records a [`SlidingWindow::Calls`] window.
const WINDOW_CALLS: u64 = 1;
/// How [`config_words`] records a [`SlidingWindow::Time`] window.
const WINDOW_TIME: u64 = 2;

/// A [`Config`] as the numbers a slot records, in this order: `failure_threshold` (0, which no
/// valid config has, for `consecutive_failures` off), `recovery_timeout`, `success_threshold`,
/// `half_open_max_calls`, `probe_timeout`, then the rate policies: `failure_rate_threshold`
/// and the slow-call rate (as `f64` bits, 0 when off), `slow_call_duration`, `minimum_calls`
/// and the window (its kind and its calls or milliseconds). Durations are milliseconds,
/// rounded up. Without a rate policy the window settings are recorded as 0, since nothing
/// reads them: two configurations differ only where a breaker would behave differently.
pub(super) fn config_words(config: &Config) -> ConfigWords {
    let ms = |d: Duration| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    let rates = config.has_rate_policy();
    let if_rates = |word: u64| if rates { word } else { 0 };
    let (window_kind, window_size) = match config.sliding_window {
        SlidingWindow::Calls(n) => (WINDOW_CALLS, n),
        SlidingWindow::Time(t) => (WINDOW_TIME, ms(t)),
    };
    // With a slow-call duration and no rate, every slow call counts: the rate is 1.0.
    let slow_rate = config.slow_call_duration.map(|_| config.slow_call_rate_threshold.unwrap_or(1.0));
    [
        if config.consecutive_failures { config.failure_threshold } else { 0 },
        ms(config.recovery_timeout),
        config.success_threshold,
        config.half_open_max_calls,
        ms(config.probe_timeout),
        config.failure_rate_threshold.map_or(0, f64::to_bits),
        slow_rate.map_or(0, f64::to_bits),
        config.slow_call_duration.map_or(0, ms),
        if_rates(config.minimum_calls),
        if_rates(window_kind),
        if_rates(window_size),
    ]
}

/// A hash of a slot's configuration words, checked together with them.
pub(super) fn fingerprint(words: &ConfigWords) -> u64 {
    words.iter().fold(FNV_OFFSET, |h, w| fnv1a_step(h, &w.to_le_bytes()))
}

/// The [`Config`] a slot records, for reports ([`Config::describe`]): not validated, since it
/// is only shown, never applied.
pub(super) fn config_from_words(words: ConfigWords) -> Config {
    let ms = Duration::from_millis;
    let rate = |bits: u64| (bits != 0).then(|| f64::from_bits(bits));
    let mut config = Config::default()
        .failure_threshold(words[0].max(1))
        .consecutive_failures(words[0] != 0)
        .recovery_timeout(ms(words[1]))
        .success_threshold(words[2])
        .half_open_max_calls(words[3])
        .probe_timeout(ms(words[4]));
    config.failure_rate_threshold = rate(words[5]);
    config.slow_call_rate_threshold = rate(words[6]);
    config.slow_call_duration = (words[7] != 0).then(|| ms(words[7]));
    if config.has_rate_policy() {
        config.minimum_calls = words[8];
        match words[9] {
            WINDOW_CALLS => config.sliding_window = SlidingWindow::Calls(words[10]),
            WINDOW_TIME => config.sliding_window = SlidingWindow::Time(ms(words[10])),
            _ => {}
        }
    }
    config
}

impl HeaderFields {
    /// The header of a new region of `capacity` slots, made on boot `boot_id` at
    /// `created_unix_ms` (wall clock) = `created_tick` (`CLOCK_MONOTONIC` ms), with its checksum.
    pub(super) fn new(capacity: u32, boot_id: [u8; 40], created_unix_ms: u64, created_tick: u64) -> Self {
        let mut fields = HeaderFields {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            slot_size: SLOT_SIZE as u32,
            capacity,
            layout_hash: LAYOUT_HASH,
            boot_id,
            clock: CLOCK_MONOTONIC_MS,
            _reserved: 0,
            created_unix_ms,
            created_tick,
            checksum: 0,
        };
        fields.checksum = header_checksum(&fields);
        fields
    }

    /// The fields as the bytes the file holds.
    pub(super) fn as_bytes(&self) -> &[u8] {
        // SAFETY: HeaderFields is repr(C) plain data with no padding between its fields (every
        // field is aligned by the one before, and the size is a multiple of the alignment), so
        // viewing it as bytes reads initialised memory, for as long as `self` is borrowed.
        unsafe { std::slice::from_raw_parts(std::ptr::addr_of!(*self).cast::<u8>(), size_of::<HeaderFields>()) }
    }
}

/// The checksum a header carries: FNV-1a of its fields with the checksum itself zeroed.
pub(super) fn header_checksum(h: &HeaderFields) -> u64 {
    fnv1a(HeaderFields { checksum: 0, ..*h }.as_bytes())
}
