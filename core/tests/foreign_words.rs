//! A word read from shared memory may hold any 64 bits. Property: from every word, the
//! transitions neither panic nor wedge the breaker — once the recovery and probe timeouts have
//! passed, a call is admitted, unless the word says FORCED_OPEN (which only `reset` ends, by
//! design) — and a `reset` always brings back a well-formed CLOSED word.

use std::sync::Arc;
use std::time::Duration;

use cb_core::{
    CircuitBreaker, Command, Config, LocalWord, ManualClock, NoMetrics, Outcome, Snapshot, State, CLOCK_SKEW_TICKS,
};
use proptest::prelude::*;

fn config() -> impl Strategy<Value = Config> {
    (1u64..=10, 0u64..=5_000, 1u64..=5, 1u64..=5, 1u64..=5_000).prop_map(|(f, r, s, h, p)| {
        Config::default()
            .failure_threshold(f)
            .recovery_timeout(Duration::from_millis(r))
            .success_threshold(s)
            .half_open_max_calls(h)
            .probe_timeout(Duration::from_millis(p))
    })
}

/// Any word, with extra weight on the interesting tags and payloads near the edges.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..8, any::<u16>(), any::<u64>()).prop_map(|(tag, gen, payload)| (tag << 61) | (u64::from(gen & 0x7fff) << 46) | (payload & ((1 << 46) - 1))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_word_lets_calls_through_once_the_timeouts_have_passed(
        bits in word(),
        config in config(),
        now in 0u64..(1 << 40),
        outcomes in proptest::collection::vec(0u8..3, 0..8),
    ) {
        let clock = Arc::new(ManualClock::new(now));
        let breaker = CircuitBreaker::with_store(config, Arc::clone(&clock), NoMetrics, LocalWord::new(Snapshot::from_bits(bits))).unwrap();
        let limits = config.limits().unwrap();
        // Whatever the word, reading it and using it must not panic.
        let _ = breaker.state();
        for outcome in &outcomes {
            if let Ok(permit) = breaker.admit() {
                permit.record(match outcome { 0 => Outcome::Success, 1 => Outcome::Failure, _ => Outcome::Ignored });
            }
        }
        let forced = breaker.snapshot().stored_state() == State::ForcedOpen;
        // Past every timeout a word can make a caller wait for, plus the stamp's truncation and
        // the skew a stamp may be ahead by.
        let wait = config.recovery_timeout + config.probe_timeout + Duration::from_millis(3 * 1_024 + CLOCK_SKEW_TICKS);
        clock.advance(wait);
        let admitted = breaker.admit();
        prop_assert!(admitted.is_ok() || forced, "{:?} still rejects: {:?}", Snapshot::from_bits(bits), admitted.err());
        drop(admitted);
        breaker.reset();
        let reset = breaker.snapshot();
        prop_assert_eq!(reset.stored_state(), State::Closed);
        prop_assert!(reset.is_well_formed(clock_now(&clock), &limits));
        prop_assert!(breaker.admit().is_ok());
    }

    #[test]
    fn pure_transitions_accept_every_word(bits in word(), config in config(), now in any::<u64>()) {
        let limits = config.limits().unwrap();
        let s = Snapshot::from_bits(bits);
        let now = now & ((1 << 46) - 1);
        let admitted = s.admit(|| now, &limits);
        let _ = s.settle(now, &limits);
        let _ = s.state_at(now, &limits);
        let _ = s.is_well_formed(now, &limits);
        if let Some(ticket) = admitted.result.ticket() {
            for outcome in [Outcome::Success, Outcome::Failure, Outcome::Ignored] {
                let _ = s.record(&ticket, outcome, || now, &limits);
            }
        }
        for command in [Command::Reset, Command::ForceOpen, Command::Disable] {
            let next = s.command(command).next.unwrap();
            prop_assert!(next.is_well_formed(now, &limits));
            prop_assert_ne!(next.generation(), s.generation());
        }
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    cb_core::Clock::now(clock)
}
