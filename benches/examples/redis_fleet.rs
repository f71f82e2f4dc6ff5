//! The Redis store's figures for BENCHMARKS.md, against a redis-server of its own on loopback:
//!
//! - propagation: from a trip committed on one host to the first rejection on another (two
//!   fleet handles in one process, each with its own mirror and subscription), p50/p99/max;
//! - Redis commands per protected call at 0 % and 100 % failure (`INFO commandstats`).
//!
//! ```text
//! cargo run --release -p benches --example redis_fleet
//! ```

use std::time::{Duration, Instant};

use cb_core::{Config, RedisFleet, RedisOptions, State};

/// Commands Redis ran (those a script runs count too; the INFO calls themselves are left
/// out), and how many of them were round trips from a client (all but a script's).
fn commands(admin: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    // cmdstat_get:calls=3,usec=...
    let count = |l: &str| l.split("calls=").nth(1).and_then(|c| c.split(',').next()).and_then(|c| c.parse::<u64>().ok());
    let stats: Vec<(&str, u64)> = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| Some((l.split(':').next()?, count(l)?)))
        .collect();
    let all = stats.iter().map(|(_, n)| n).sum();
    // The hosts run these only inside their scripts (every key is read with TYPE and STRLEN
    // first), so what is left are the round trips.
    let inside = stats
        .iter()
        .filter(|(c, _)| {
            matches!(*c, "cmdstat_type" | "cmdstat_strlen" | "cmdstat_get" | "cmdstat_getrange" | "cmdstat_set" | "cmdstat_publish")
        })
        .map(|(_, n)| n)
        .sum::<u64>();
    (all, all - inside)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let Some(server) = benches::RedisServer::start() else { std::process::exit(1) };
    let options = || RedisOptions::new(server.url()).prefix("bench:");
    let (a, b) = (RedisFleet::open(options()).unwrap(), RedisFleet::open(options()).unwrap());
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(3600));
    let (on_a, on_b) = (a.breaker("propagation", config).unwrap(), b.breaker("propagation", config).unwrap());

    // A write that misses the 50 ms deadline (a stall of this shared VM) is decided on host A's
    // mirror alone, and the resync after it adopts Redis's word: that trip never reaches B.
    // Such a round is redone after 2 s, counted and reported, not waited for forever.
    const GIVE_UP: Duration = Duration::from_secs(2);
    let until = |deadline: Instant, mut done: Box<dyn FnMut() -> bool + '_>| {
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    };
    let (mut from_call, mut from_commit, mut redone) = (Vec::new(), Vec::new(), 0);
    while from_call.len() < 1_000 {
        on_a.reset();
        if !until(Instant::now() + GIVE_UP, Box::new(|| on_b.state() == State::Closed)) {
            redone += 1;
            continue;
        }
        let started = Instant::now();
        let _ = on_a.call(|| Err::<(), ()>(())); // the trip, committed in Redis when this returns
        let committed = Instant::now();
        if !until(committed + GIVE_UP, Box::new(|| on_b.call(|| Ok::<(), ()>(())).is_err())) {
            redone += 1;
            continue;
        }
        from_call.push(started.elapsed());
        from_commit.push(committed.elapsed());
    }
    println!("### Redis store: a trip on one host until another host rejects (loopback, 1000 trips)\n");
    println!("| measured from | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (what, took) in [("the failing call's start", &mut from_call), ("its return (trip committed)", &mut from_commit)] {
        took.sort();
        println!(
            "| {what} | {:.0} µs | {:.0} µs | {:.0} µs |",
            percentile(took, 0.5).as_secs_f64() * 1e6,
            percentile(took, 0.99).as_secs_f64() * 1e6,
            took[took.len() - 1].as_secs_f64() * 1e6
        );
    }
    if redone > 0 {
        println!("\n({redone} rounds redone: a write missed its deadline, and B never saw that round's change.)");
    }
    println!();

    let mut admin = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let calls = 10_000u64;
    println!("### Redis store: commands per protected call ({calls} calls, one host)\n");
    println!("| calls | round trips | per call | commands run (those inside scripts too) |");
    println!("|---|---:|---:|---:|");
    let closed = a.breaker("commands-ok", Config::default()).unwrap();
    let before = commands(&mut admin);
    for _ in 0..calls {
        let _ = closed.call(|| Ok::<(), ()>(()));
    }
    let after = commands(&mut admin);
    let (n, trips) = (after.0 - before.0, after.1 - before.1);
    println!("| 0 % failing | {trips} | {:.4} | {n} |", trips as f64 / calls as f64);
    let failing = a.breaker("commands-fail", Config::default().failure_threshold(5).recovery_timeout(Duration::from_secs(3600))).unwrap();
    let before = commands(&mut admin);
    for _ in 0..calls {
        let _ = failing.call(|| Err::<(), ()>(()));
    }
    let after = commands(&mut admin);
    let (n, trips) = (after.0 - before.0, after.1 - before.1);
    println!("| 100 % failing (threshold 5) | {trips} | {:.4} | {n} |", trips as f64 / calls as f64);
    println!("\n(The background refresh — one read-back script per handle per second — is counted too.)");
}
