//! The core's states as the documented Python API names them.

use cb_core::State;
use pyo3::prelude::*;

use crate::refs::Refs;

/// The documented API knows three states; FORCED_OPEN reads as OPEN and DISABLED as CLOSED.
pub(crate) fn state_name(state: State) -> &'static str {
    match state {
        State::Open | State::ForcedOpen => "OPEN",
        State::HalfOpen => "HALF_OPEN",
        // CLOSED, DISABLED, and any state a later core adds that admits calls.
        _ => "CLOSED",
    }
}

pub(crate) fn state_member(r: &Refs, state: State) -> &Py<PyAny> {
    match state_name(state) {
        "OPEN" => &r.open,
        "HALF_OPEN" => &r.half_open,
        _ => &r.closed,
    }
}

/// `'normal'`, or the manual mode set by `force_open()` / `disable()`.
pub(crate) fn mode(state: State) -> &'static str {
    match state {
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        _ => "normal",
    }
}
