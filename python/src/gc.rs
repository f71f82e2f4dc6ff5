//! Cycle-collector support for the Python objects a breaker holds for its whole life.
//!
//! A breaker holds callables given at construction (`fallback`, `failure_predicate`, `exclude`
//! predicates). They never change while anyone can use the breaker, so the call path reads them
//! with no lock; but one of them may refer back to the breaker (a bound method of a subclass,
//! a closure), and CPython's bound methods have no `tp_clear` of their own, so such a cycle is
//! only broken if the breaker lets go of its side. [`GcCell`] is that: a plain read for
//! everyone, and a take for `tp_clear` only.

use std::cell::UnsafeCell;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

/// A value read without a lock for the owner's life and taken only by its `__clear__`.
pub(crate) struct GcCell<T>(UnsafeCell<T>);

// SAFETY: the value is only ever read through `&T` (Py<T> and Vec<Py<T>> are Sync), except by
// `take`, whose contract is that no other reference to the owner is in use (see `take`).
unsafe impl<T: Send + Sync> Sync for GcCell<T> {}

impl<T: Default> GcCell<T> {
    pub(crate) fn new(value: T) -> Self {
        GcCell(UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the only writer is `take`, which runs when nothing else can reach the owner,
        // so no `&T` handed out here is alive then.
        unsafe { &*self.0.get() }
    }

    /// Takes the value out, leaving the default (no callable) behind.
    ///
    /// # Safety
    ///
    /// Only from the owner's `__clear__` (`tp_clear`): CPython calls it on objects the cycle
    /// collector found unreachable (after their finalizers ran and none resurrected them), so no
    /// thread holds a reference to the owner, let alone a borrow of this value. The caller drops
    /// the value it gets only after it let go of any lock.
    pub(crate) unsafe fn take(&self) -> T {
        // SAFETY: exclusive by the contract above.
        unsafe { std::mem::take(&mut *self.0.get()) }
    }
}

/// Visits every object in `objects` (for `__traverse__`).
pub(crate) fn visit_all<'a, T: 'a>(visit: &PyVisit<'_>, objects: impl IntoIterator<Item = &'a Py<T>>) -> Result<(), PyTraverseError> {
    for object in objects {
        visit.call(object)?;
    }
    Ok(())
}
