//! The listener of a breaker's transitions, told in the order the transitions happened.

use std::collections::VecDeque;

use crate::loom::Ordering;
use crate::Transition;

pub(crate) type Listener = Box<dyn Fn(&Transition) + Send + Sync>;

/// The listener, and what keeps its calls in the order the transitions happened.
///
/// A transition's compare-and-swap and its place in `pending` are taken together, under
/// `pending`'s lock, so the queue is in the order of the swaps. Then one thread at a time (the
/// one that sets `telling`) tells the listener everything queued; a thread that finds another
/// already telling leaves its transition to it. The lock is held only around a swap and a queue
/// operation, never while the listener runs, and only for swaps that make a transition: the
/// hot paths never take it.
pub(crate) struct Announcer {
    listener: Listener,
    pending: crate::loom::Mutex<VecDeque<Transition>>,
    telling: crate::loom::AtomicBool,
}

impl Announcer {
    pub(crate) fn new(listener: Listener) -> Self {
        Announcer { listener, pending: crate::loom::Mutex::new(VecDeque::new()), telling: crate::loom::AtomicBool::new(false) }
    }

    pub(crate) fn pending(&self) -> impl core::ops::DerefMut<Target = VecDeque<Transition>> + '_ {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the listener every queued transition, in order, unless another thread is at it.
    pub(crate) fn tell(&self) {
        /// Lets go of `telling` even if the listener panics, so the next transition is told.
        struct LetGo<'a>(&'a crate::loom::AtomicBool);
        impl Drop for LetGo<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        loop {
            // compare_exchange rather than swap: the same here, and loom models swap on a
            // bool with invalid histories (tokio-rs/loom#254, #389).
            if self.telling.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return; // the thread telling now tells ours too
            }
            {
                let _let_go = LetGo(&self.telling);
                loop {
                    let next = self.pending().pop_front();
                    match next {
                        Some(transition) => (self.listener)(&transition),
                        None => break,
                    }
                }
            }
            // One queued after our last look, while we still held `telling`, is ours to tell.
            if self.pending().is_empty() {
                return;
            }
        }
    }
}
