//! Surviving a region file cut short under its mappings.
//!
//! Touching a page of a file mapping that lies beyond the file's end raises `SIGBUS`, whose
//! default action ends the process. Anyone who can write a region file (its owner, a group
//! member with `mode(0o660)`, root) can `truncate` it, so without this module one `truncate -s
//! 100` would end every process of the host using the region.
//!
//! Every region mapping is registered here ([`protect`]) in a fixed table read only with
//! atomics. A process-wide `SIGBUS` handler looks the fault address up; inside a registered
//! mapping, it maps anonymous zeroed memory over that whole mapping, in place (one `mmap` with
//! `MAP_FIXED`, a plain system call) and marks it lost. The faulting access is then retried on
//! the new memory and succeeds, and the breakers of that mapping continue on this process's
//! private copy, as if they had just been claimed (CLOSED, counters at zero), until someone
//! opens the region again. [`Protected::is_lost`] says it happened.
//!
//! A fault anywhere else goes to the handler that was installed before ours (Rust's own stack
//! overflow handler, Python's `faulthandler`, ...), or, if there was none, ends the process as
//! it would have without us. Our handler is installed again by the next [`protect`] if someone
//! replaced it. Only Linux (and Android) is protected; elsewhere [`protect`] registers nothing.

#![cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]

use std::sync::atomic::{fence, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The most mappings one process protects at once.
pub(super) const MAX_MAPPINGS: usize = 1024;

/// An entry's mapping is in place.
const MAPPED: u8 = 0;
/// The handler is replacing the mapping (another thread faulting meanwhile retries).
const REPLACING: u8 = 1;
/// The mapping was replaced by private memory.
const LOST: u8 = 2;
/// The replacement failed: the fault is fatal, as it was before.
const FAILED: u8 = 3;

/// One registered mapping. `seq` is odd while `start`/`len` are being written (a seqlock: the
/// handler never sees a half-written range).
struct Entry {
    seq: AtomicUsize,
    /// The first byte of the mapping; 0 when the entry is free.
    start: AtomicUsize,
    /// Its length in bytes, rounded up to whole pages.
    len: AtomicUsize,
    state: AtomicU8,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialise TABLE
const FREE: Entry = Entry { seq: AtomicUsize::new(0), start: AtomicUsize::new(0), len: AtomicUsize::new(0), state: AtomicU8::new(MAPPED) };

static TABLE: [Entry; MAX_MAPPINGS] = [FREE; MAX_MAPPINGS];

/// Serialises every writer of `TABLE` and of the previous action (never taken by the handler).
static WRITERS: Mutex<()> = Mutex::new(());

/// The `SIGBUS` action installed before ours: its `sa_sigaction` and `sa_flags`. Two copies, so a
/// re-installation never rewrites the copy a running handler may be reading; `CURRENT` names the
/// one in force.
struct Previous {
    action: AtomicUsize,
    flags: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // used only to initialise PREVIOUS
const DEFAULT_ACTION: Previous = Previous { action: AtomicUsize::new(libc::SIG_DFL), flags: AtomicUsize::new(0) };
static PREVIOUS: [Previous; 2] = [DEFAULT_ACTION; 2];
static CURRENT: AtomicUsize = AtomicUsize::new(0);

/// A mapping registered with the handler; unregistered when dropped, which must happen before
/// the mapping is unmapped.
#[derive(Debug)]
pub(super) struct Protected {
    index: Option<usize>,
}

impl Protected {
    /// Whether a `SIGBUS` in this mapping made the handler replace it with private memory.
    pub(super) fn is_lost(&self) -> bool {
        self.index.is_some_and(|i| TABLE[i].state.load(Ordering::Acquire) == LOST)
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        let Some(i) = self.index else { return };
        let _writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
        let entry = &TABLE[i];
        entry.seq.fetch_add(1, Ordering::AcqRel);
        entry.start.store(0, Ordering::Release);
        entry.len.store(0, Ordering::Release);
        entry.state.store(MAPPED, Ordering::Release);
        entry.seq.fetch_add(1, Ordering::Release);
    }
}

/// Registers the mapping of `len` bytes at `start` (page-aligned) with the `SIGBUS` handler,
/// installing the handler first if it is not in place. `None` when all [`MAX_MAPPINGS`] entries
/// are taken.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn protect(start: *mut u8, len: usize) -> Option<Protected> {
    let _writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    install();
    let page = page_size();
    let len = len.div_ceil(page) * page;
    let (i, entry) = TABLE.iter().enumerate().find(|(_, e)| e.start.load(Ordering::Acquire) == 0)?;
    entry.seq.fetch_add(1, Ordering::AcqRel);
    entry.state.store(MAPPED, Ordering::Release);
    entry.len.store(len, Ordering::Release);
    entry.start.store(start as usize, Ordering::Release);
    entry.seq.fetch_add(1, Ordering::Release);
    Some(Protected { index: Some(i) })
}

/// Elsewhere: nothing is registered, and a truncated region ends the process.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn protect(_start: *mut u8, _len: usize) -> Option<Protected> {
    Some(Protected { index: None })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
}

/// Installs `on_sigbus` unless it is in place, remembering the action it replaces. Called with
/// `WRITERS` held.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn install() {
    // SAFETY: a zeroed sigaction is valid, and sigaction with a null new action only reads the
    // current one into it.
    let current = unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) != 0 {
            return;
        }
        current
    };
    let ours = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    if current.sa_sigaction == ours {
        return;
    }
    // Publish the action we replace before ours can run: into the copy not in force, then flip.
    let next = 1 - CURRENT.load(Ordering::Acquire);
    PREVIOUS[next].action.store(current.sa_sigaction, Ordering::Release);
    PREVIOUS[next].flags.store(current.sa_flags as usize, Ordering::Release);
    CURRENT.store(next, Ordering::Release);
    // SAFETY: a zeroed sigaction is valid; we fill in the handler, an empty mask and the flags.
    // `on_sigbus` has the SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ours;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// The `SIGBUS` handler. Uses only atomics and raw system calls (`mmap`, `sigaction`, `raise`):
/// no allocation, no lock, nothing that could be interrupted half-way in this thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a handler installed with SA_SIGINFO; for
    // SIGBUS, si_addr is the union member it fills in.
    let (address, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    // A signal sent by a process (si_code <= 0) is not a fault in our memory, whatever its
    // si_addr bytes hold.
    if code > 0 {
        for entry in TABLE.iter() {
            let Some((start, len)) = read_range(entry) else { continue };
            if address < start || address - start >= len {
                continue;
            }
            match entry.state.compare_exchange(MAPPED, REPLACING, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: [start, start + len) is one whole mapping of ours (registered page-
                    // aligned and page-rounded, unregistered before it is unmapped), so MAP_FIXED
                    // replaces only our own pages; every byte pattern is valid for the atomics
                    // that live there, and zeroes are a fresh slot. mmap is a system call that
                    // takes no user-space lock: safe in a signal handler.
                    let replaced = unsafe {
                        libc::mmap(
                            start as *mut libc::c_void,
                            len,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        )
                    };
                    if replaced != libc::MAP_FAILED {
                        entry.state.store(LOST, Ordering::Release);
                        return; // the access is retried on the new memory
                    }
                    entry.state.store(FAILED, Ordering::Release);
                }
                // Another thread is replacing it, or has: retrying the access either faults
                // again (and comes back here) or succeeds.
                Err(REPLACING | LOST) => return,
                Err(_) => {}
            }
            break;
        }
    }
    // SAFETY: forwards the signal with the arguments we were given (see `chain`).
    unsafe { chain(signal, info, context, code) }
}

/// The range of an entry, read consistently, if it holds a mapping.
fn read_range(entry: &Entry) -> Option<(usize, usize)> {
    let before = entry.seq.load(Ordering::Acquire);
    if before % 2 == 1 {
        return None;
    }
    let start = entry.start.load(Ordering::Acquire);
    let len = entry.len.load(Ordering::Acquire);
    fence(Ordering::Acquire);
    (start != 0 && entry.seq.load(Ordering::Relaxed) == before).then_some((start, len))
}

/// Hands a signal that is not ours to the action installed before ours; with none (`SIG_DFL`),
/// restores the default and lets the signal end the process, as it would have without us.
///
/// # Safety
/// Only from `on_sigbus`, with the arguments the kernel passed it.
#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void, code: libc::c_int) {
    let previous = &PREVIOUS[CURRENT.load(Ordering::Acquire) & 1];
    let action = previous.action.load(Ordering::Acquire);
    let flags = previous.flags.load(Ordering::Acquire) as libc::c_int;
    if action == libc::SIG_IGN && code <= 0 {
        return; // a signal sent by a process, which was ignored before us
    }
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction with SIG_DFL is the default action; sigaction and raise are
        // async-signal-safe. A fault is retried when we return and now ends the process with
        // SIGBUS; a signal sent by a process is raised again (delivered when we return).
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut default.sa_mask);
            libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            if code <= 0 {
                libc::raise(signal);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so `action` is a function
        // of this signature, called as the kernel would have called it.
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(action) };
        handler(signal, info, context);
    } else {
        // SAFETY: without SA_SIGINFO, `action` is a plain `void (*)(int)` handler.
        let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
        handler(signal);
    }
}
