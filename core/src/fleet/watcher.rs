//! The background thread of a fleet handle. It subscribes to `<prefix>*`, takes every message
//! on a word's channel as a hint that the word changed (never as the word: anyone allowed to
//! `PUBLISH` could send one), and reads the hinted words back from Redis; it re-reads every word
//! each refresh interval, and during an outage reconnects and resyncs.
//!
//! It holds the handle weakly, upgrading only while it applies what it read, so the handle
//! (its connections, then this thread and its subscription) goes away once the last
//! `RedisFleet` and every breaker on it are dropped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::remote::{Fleet, Mirror};
use super::scripts::parse_word;
use super::FleetEvent;

/// The longest the thread sleeps before it notices that the handle is gone.
const TICK: Duration = Duration::from_millis(100);

/// A hint is read back at once unless reads back that taught nothing (the word was already
/// the mirror's: a forged message, or a duplicate) have used up their budget: up to [`BURST`]
/// of them, then one more per this interval. Real changes are read back without delay however
/// many there are; a flood of useless hints (forged or not) costs at most one bounded read per
/// interval, the hints that arrive meanwhile being read back together.
const COALESCE: Duration = Duration::from_millis(1);

/// The useless reads back that may follow each other without waiting.
const BURST: u32 = 64;

/// The budget of useless reads back (a token bucket).
struct Budget {
    reads: u32,
    /// When the last read was earned.
    earned: Instant,
}

impl Budget {
    fn new() -> Budget {
        Budget { reads: BURST, earned: Instant::now() }
    }

    /// Whether a read may be spent now (earning what the time since the last one earned).
    fn available(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.earned).as_micros() / COALESCE.as_micros();
        if earned > 0 {
            self.reads = (u128::from(self.reads) + earned).min(u128::from(BURST)) as u32;
            self.earned = if self.reads == BURST { now } else { self.earned + COALESCE * earned as u32 };
        }
        self.reads > 0
    }

    fn spend(&mut self) {
        self.reads = self.reads.saturating_sub(1);
    }

    /// How long until the next read is earned.
    fn wait(&self, now: Instant) -> Duration {
        (self.earned + COALESCE).saturating_duration_since(now)
    }
}

pub(super) fn spawn(fleet: &Arc<Fleet>) {
    let weak = Arc::downgrade(fleet);
    let generation = fleet.forks.load(Ordering::Acquire);
    let spawned = thread::Builder::new().name("cb-redis-watch".into()).spawn(move || watch(&weak, generation));
    if spawned.is_err() {
        // No thread: the breakers still work, on writes' compare-and-sets and their mirrors.
        fleet.tell(&FleetEvent::Outage { reason: "could not start the background thread".into() });
    }
}

/// The handle, while it exists and this thread is still its watcher (a forked child starts
/// its own).
fn live(weak: &Weak<Fleet>, generation: u64) -> Option<Arc<Fleet>> {
    weak.upgrade().filter(|fleet| fleet.forks.load(Ordering::Acquire) == generation)
}

/// The glob pattern of every channel under the prefix (`PSUBSCRIBE`, as the ACLs the README
/// shows allow it).
pub(super) fn pattern(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('*');
    escaped
}

/// Subscribes `conn` to `pattern`, as a plain command: `PubSub::psubscribe` does not return
/// the server's refusal (`NOPERM`), this does.
pub(super) fn subscribe(conn: &mut redis::Connection, pattern: &str, timeout: Duration) -> redis::RedisResult<()> {
    conn.set_write_timeout(Some(timeout))?;
    conn.set_read_timeout(Some(timeout))?;
    redis::cmd("PSUBSCRIBE").arg(pattern).query::<redis::Value>(conn).map(drop)
}

fn watch(weak: &Weak<Fleet>, generation: u64) {
    let mut retry = Duration::from_millis(50);
    loop {
        let Some(fleet) = live(weak, generation) else { return };
        let (client, timeout, pattern) = (fleet.client.clone(), fleet.options.timeout, pattern(&fleet.options.prefix));
        drop(fleet);
        let subscribed = client.get_connection_with_timeout(timeout).and_then(|mut conn| {
            subscribe(&mut conn, &pattern, timeout)?;
            Ok(conn)
        });
        let failure = match subscribed {
            Ok(mut conn) => {
                let mut pubsub = conn.as_pubsub();
                // Subscribed first, then resynced: whatever was written in between is read back.
                let ready = match live(weak, generation) {
                    Some(fleet) => fleet.resync().map(|()| fleet.reconnected()),
                    None => Ok(()),
                };
                match ready {
                    Ok(()) => {
                        retry = Duration::from_millis(50);
                        listen(weak, generation, &mut pubsub).err()
                    }
                    Err(e) => Some(e),
                }
            }
            Err(e) => Some(e),
        };
        let Some(e) = failure else { continue };
        match live(weak, generation) {
            Some(fleet) => fleet.go_local(&e),
            None => return,
        }
        thread::sleep(retry);
        retry = (retry * 2).min(Duration::from_secs(1));
    }
}

/// Follows hints and refreshes until the subscription fails (an error), the handle is gone or
/// a caller saw an outage (`Ok`: resubscribe and resync).
fn listen(weak: &Weak<Fleet>, generation: u64, pubsub: &mut redis::PubSub<'_>) -> redis::RedisResult<()> {
    let mut hinted: HashMap<String, Arc<Mirror>> = HashMap::new();
    let mut budget = Budget::new();
    let mut last_refresh = Instant::now();
    let mut waiting = Duration::ZERO;
    loop {
        let wait = if hinted.is_empty() { TICK } else { budget.wait(Instant::now()).max(Duration::from_millis(1)) };
        if wait != waiting {
            pubsub.set_read_timeout(Some(wait))?;
            waiting = wait;
        }
        let message = match pubsub.get_message() {
            Ok(message) => Some(message),
            Err(e) if e.is_timeout() => None,
            Err(e) => return Err(e),
        };
        let Some(fleet) = live(weak, generation) else { return Ok(()) };
        if !fleet.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(message) = message {
            if let Some(mirror) = fleet.mirror(message.get_channel_name()) {
                // A hint of the word the mirror holds teaches nothing (this host's own writes
                // come back so): Redis is read only when the mirror may be behind.
                if parse_word(message.get_payload_bytes()) != Some(mirror.load()) {
                    hinted.entry(mirror.key.clone()).or_insert(mirror);
                }
            }
        }
        if !hinted.is_empty() && budget.available(Instant::now()) {
            let mirrors: Vec<Arc<Mirror>> = hinted.drain().map(|(_, m)| m).collect();
            if fleet.sync(&mirrors)? == 0 {
                budget.spend();
            }
        }
        if last_refresh.elapsed() >= fleet.options.refresh {
            fleet.resync()?;
            last_refresh = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_reads_at_once_and_a_flood_once_per_interval() {
        let mut budget = Budget::new();
        let start = budget.earned;
        for _ in 0..BURST {
            assert!(budget.available(start), "a burst is read back without waiting");
            budget.spend();
        }
        assert!(!budget.available(start));
        assert_eq!(budget.wait(start), COALESCE);
        // A flood over one second earns one read per interval, no more.
        let mut reads = 0;
        for us in 0..1_000_000u64 {
            if budget.available(start + Duration::from_micros(us)) {
                budget.spend();
                reads += 1;
            }
        }
        assert_eq!(reads, (Duration::from_secs(1).as_micros() / COALESCE.as_micros()) as u32 - 1);
        // After a quiet spell the whole burst is back.
        let later = start + Duration::from_secs(5);
        assert!(budget.available(later) && budget.reads == BURST);
    }
}
