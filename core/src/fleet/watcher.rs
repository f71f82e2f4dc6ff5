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
use super::FleetEvent;

/// The longest the thread sleeps before it notices that the handle is gone.
const TICK: Duration = Duration::from_millis(100);

/// Hinted words are read back at most once per this interval: the first hint after a quiet
/// spell is read back at once, and a flood of them (forged or not) costs one bounded read per
/// interval, whatever its rate.
const COALESCE: Duration = Duration::from_millis(2);

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
    let mut next_read = Instant::now();
    let mut last_refresh = Instant::now();
    let mut waiting = Duration::ZERO;
    loop {
        let wait = if hinted.is_empty() { TICK } else { next_read.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)) };
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
        if let Some(mirror) = message.and_then(|m| fleet.mirror(m.get_channel_name())) {
            hinted.entry(mirror.key.clone()).or_insert(mirror);
        }
        let now = Instant::now();
        if !hinted.is_empty() && now >= next_read {
            let mirrors: Vec<Arc<Mirror>> = hinted.drain().map(|(_, m)| m).collect();
            fleet.sync(&mirrors)?;
            next_read = now + COALESCE;
        }
        if last_refresh.elapsed() >= fleet.options.refresh {
            fleet.resync()?;
            last_refresh = Instant::now();
        }
    }
}
