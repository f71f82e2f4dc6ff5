//! Property test: random sequences of admissions, outcomes, drops, manual commands, state reads
//! and clock advances give the same decisions and states on the atomic breaker as on a plain
//! sequential model written from the rules, not from the word. With `max_concurrent_calls`,
//! the model also counts the calls in flight: an admission past the limit is rejected as full,
//! and every outcome or drop (stale or not) gives a place back.

use std::time::Duration;

use cb_core::{CircuitBreaker, Clock, Config, ManualClock, NoMetrics, Outcome, Permit, State};
use proptest::prelude::*;

/// The rules, as a reader of the README would write them down.
#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    Closed { failures: u64 },
    Open { since: u64 },
    HalfOpen { in_flight: u64, successes: u64, last_admit: u64 },
    Forced,
    Disabled,
}

struct Model {
    state: M,
    /// Bumped on every change of state (and every command): outcomes from earlier ones are stale.
    epoch: u64,
    failure_threshold: u64,
    success_threshold: u64,
    max_calls: u64,
    recovery: u64,
    probe_timeout: u64,
    /// `max_concurrent_calls`, and the calls admitted and not yet reported or dropped.
    limit: Option<u64>,
    in_flight: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct ModelPermit {
    epoch: u64,
}

#[derive(Debug, PartialEq)]
enum Decision {
    Admitted { probe: bool },
    Rejected { state: State, retry_after: Option<Duration> },
    /// Admitted by the state, refused by the limit.
    Full { state: State },
}

impl Model {
    fn go(&mut self, state: M) {
        self.state = state;
        self.epoch += 1;
    }

    /// OPEN whose timeout elapsed is HALF_OPEN with nothing in flight.
    fn settle(&mut self, now: u64) {
        if let M::Open { since } = self.state {
            if now.saturating_sub(since) >= self.recovery {
                self.go(M::HalfOpen { in_flight: 0, successes: 0, last_admit: now });
            }
        }
    }

    fn visible(&mut self, now: u64) -> State {
        self.settle(now);
        match self.state {
            M::Closed { .. } => State::Closed,
            M::Open { .. } => State::Open,
            M::HalfOpen { .. } => State::HalfOpen,
            M::Forced => State::ForcedOpen,
            M::Disabled => State::Disabled,
        }
    }

    /// The documented leak rule: a full round whose last admission is a probe timeout old,
    /// judged in 1024 ms units (never early, at most two units late).
    fn expired(&self, last_admit: u64, now: u64) -> bool {
        let units = self.probe_timeout.div_ceil(1024) + 1;
        (now / 1024).saturating_sub(last_admit / 1024) >= units
    }

    /// The rules of the state, then the limit: a call the state admits takes a place, or, when
    /// there is none, gives back what the state gave it (a probe slot) and is rejected as full.
    fn admit(&mut self, now: u64) -> (Decision, Option<ModelPermit>) {
        let (decision, permit) = self.admit_by_state(now);
        let Some(permit) = permit else { return (decision, None) };
        if self.limit.is_some_and(|max| self.in_flight >= max) {
            let state = self.visible(now);
            self.record_outcome(permit, Outcome::Ignored, now);
            return (Decision::Full { state }, None);
        }
        if self.limit.is_some() {
            self.in_flight += 1; // without a limit nothing is counted
        }
        (decision, Some(permit))
    }

    fn admit_by_state(&mut self, now: u64) -> (Decision, Option<ModelPermit>) {
        self.settle(now);
        match self.state {
            M::Closed { .. } | M::Disabled => {
                (Decision::Admitted { probe: false }, Some(ModelPermit { epoch: self.epoch }))
            }
            M::Forced => (Decision::Rejected { state: State::ForcedOpen, retry_after: None }, None),
            M::Open { since } => {
                let left = self.recovery - now.saturating_sub(since);
                (
                    Decision::Rejected { state: State::Open, retry_after: Some(Duration::from_millis(left)) },
                    None,
                )
            }
            M::HalfOpen { in_flight, successes, last_admit } => {
                if in_flight < self.max_calls {
                    self.state = M::HalfOpen { in_flight: in_flight + 1, successes, last_admit: now };
                } else if self.expired(last_admit, now) {
                    self.go(M::HalfOpen { in_flight: 1, successes: 0, last_admit: now });
                } else {
                    return (
                        Decision::Rejected { state: State::HalfOpen, retry_after: Some(Duration::ZERO) },
                        None,
                    );
                }
                (Decision::Admitted { probe: true }, Some(ModelPermit { epoch: self.epoch }))
            }
        }
    }

    /// An outcome (or a drop): the place comes back whatever the state makes of it.
    fn record(&mut self, permit: ModelPermit, outcome: Outcome, now: u64) {
        if self.limit.is_some() {
            self.in_flight -= 1;
        }
        self.record_outcome(permit, outcome, now);
    }

    fn record_outcome(&mut self, permit: ModelPermit, outcome: Outcome, now: u64) {
        if permit.epoch != self.epoch {
            return;
        }
        match (self.state, outcome) {
            (M::Closed { .. }, Outcome::Success) => self.state = M::Closed { failures: 0 },
            (M::Closed { failures }, Outcome::Failure) => {
                if failures + 1 >= self.failure_threshold {
                    self.go(M::Open { since: now });
                } else {
                    self.state = M::Closed { failures: failures + 1 };
                }
            }
            (M::HalfOpen { in_flight, successes, last_admit }, Outcome::Success) => {
                if successes + 1 >= self.success_threshold {
                    self.go(M::Closed { failures: 0 });
                } else {
                    self.state =
                        M::HalfOpen { in_flight: in_flight - 1, successes: successes + 1, last_admit };
                }
            }
            (M::HalfOpen { .. }, Outcome::Failure) => self.go(M::Open { since: now }),
            (M::HalfOpen { in_flight, successes, last_admit }, Outcome::Ignored) => {
                self.state = M::HalfOpen { in_flight: in_flight - 1, successes, last_admit };
            }
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Admit,
    /// Report on the outstanding permit at this index (modulo their number).
    Report(usize, Outcome),
    Drop(usize),
    Advance(u64),
    ReadState,
    Reset,
    ForceOpen,
    Disable,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![Just(Outcome::Success), Just(Outcome::Failure), Just(Outcome::Ignored)];
    prop_oneof![
        6 => Just(Op::Admit),
        6 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Report(i, o)),
        2 => any::<usize>().prop_map(Op::Drop),
        4 => prop_oneof![0..50u64, 0..3_000u64, Just(1_024u64)].prop_map(Op::Advance),
        2 => Just(Op::ReadState),
        1 => Just(Op::Reset),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    let limit = prop_oneof![Just(None), (1..5u64).prop_map(Some)];
    (1..5u64, prop_oneof![Just(0u64), 1..2_000u64], 1..4u64, 1..4u64, 1..4_000u64, limit).prop_map(
        |(failures, recovery, successes, calls, probe, limit)| {
            let config = Config::default()
                .failure_threshold(failures)
                .recovery_timeout(Duration::from_millis(recovery))
                .success_threshold(successes)
                .half_open_max_calls(calls)
                .probe_timeout(Duration::from_millis(probe));
            match limit {
                Some(n) => config.max_concurrent_calls(n),
                None => config,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn atomic_breaker_matches_the_sequential_model(
        config in config(),
        start in 0u64..5_000,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let clock = ManualClock::new(start);
        let breaker = CircuitBreaker::with_parts(config, &clock, NoMetrics).unwrap();
        let mut model = Model {
            state: M::Closed { failures: 0 },
            epoch: 0,
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            max_calls: config.half_open_max_calls,
            recovery: config.recovery_timeout.as_millis() as u64,
            probe_timeout: config.probe_timeout.as_millis() as u64,
            limit: config.max_concurrent_calls,
            in_flight: 0,
        };
        let mut outstanding: Vec<(Permit<'_, &ManualClock, NoMetrics>, ModelPermit)> = Vec::new();
        for op in ops {
            let now = clock.now();
            match op {
                Op::Admit => {
                    let (expected, model_permit) = model.admit(now);
                    let actual = match breaker.admit() {
                        Ok(p) => {
                            let d = Decision::Admitted { probe: p.is_probe() };
                            outstanding.push((p, model_permit.expect("model admitted too")));
                            d
                        }
                        Err(r) if r.is_full() => {
                            prop_assert_eq!((r.limit(), r.retry_after()), (model.limit.map(|n| n as u32), Some(Duration::ZERO)));
                            Decision::Full { state: r.state() }
                        }
                        Err(r) => Decision::Rejected { state: r.state(), retry_after: r.retry_after() },
                    };
                    prop_assert_eq!(actual, expected);
                }
                Op::Report(i, outcome) if !outstanding.is_empty() => {
                    let (permit, model_permit) = outstanding.remove(i % outstanding.len());
                    permit.record(outcome);
                    model.record(model_permit, outcome, now);
                }
                Op::Drop(i) if !outstanding.is_empty() => {
                    let (permit, model_permit) = outstanding.remove(i % outstanding.len());
                    drop(permit);
                    model.record(model_permit, Outcome::Ignored, now);
                }
                Op::Report(..) | Op::Drop(_) => {}
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::ReadState => {}
                Op::Reset => { breaker.reset(); model.go(M::Closed { failures: 0 }); }
                Op::ForceOpen => { breaker.force_open(); model.go(M::Forced); }
                Op::Disable => { breaker.disable(); model.go(M::Disabled); }
            }
            let now = clock.now();
            prop_assert_eq!(breaker.state(), model.visible(now));
            prop_assert_eq!(u64::from(breaker.in_flight()), model.in_flight);
            let s = breaker.snapshot();
            match model.state {
                M::Closed { failures } => prop_assert_eq!(s.failures(), failures),
                M::Open { since } => prop_assert_eq!(s.opened_at(), Some(since)),
                M::HalfOpen { in_flight, successes, .. } => {
                    prop_assert_eq!(s.in_flight(), in_flight);
                    prop_assert_eq!(s.successes(), successes);
                }
                M::Forced | M::Disabled => {}
            }
        }
    }
}
