//! With the `tracing` feature, every transition is one event with name, from, to and reason.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use cb_core::{CircuitBreaker, Config, ManualClock, NoMetrics};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

type Captured = Arc<Mutex<Vec<(Level, BTreeMap<String, String>)>>>;

/// Records every event's level and fields.
struct Capture(Captured);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        fields.insert("target".into(), event.metadata().target().into());
        self.0.lock().unwrap().push((*event.metadata().level(), fields));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_transition_emits_one_event() {
    let captured: Captured = Arc::default();
    let clock = ManualClock::new(0);
    let breaker = CircuitBreaker::with_parts(
        Config::default().failure_threshold(2).recovery_timeout(std::time::Duration::from_secs(1)),
        &clock,
        NoMetrics,
    )
    .unwrap()
    .named("quotes");
    tracing::subscriber::with_default(Capture(Arc::clone(&captured)), || {
        let _ = breaker.call(|| Err::<(), _>(()));
        let _ = breaker.call(|| Err::<(), _>(()));
        let _ = breaker.call(|| Ok::<_, ()>(())); // rejected: no event
        clock.advance(std::time::Duration::from_secs(1));
        let _ = breaker.call(|| Ok::<_, ()>(()));
    });
    let events = captured.lock().unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|(level, f)| (*level, f["name"].as_str(), f["from"].as_str(), f["to"].as_str(), f["reason"].as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (Level::WARN, "quotes", "CLOSED", "OPEN", "2 consecutive failures"),
            (Level::INFO, "quotes", "OPEN", "HALF_OPEN", "recovery timeout elapsed"),
            (Level::INFO, "quotes", "HALF_OPEN", "CLOSED", "recovery successful"),
        ]
    );
    assert!(events.iter().all(|(_, f)| f["target"] == "cb_core"));
}
