//! What one fleet handle shares between its breakers and its watcher: the mirrors, the
//! connections, and every round trip to Redis, each within a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use redis::{ConnectionLike, ErrorKind};

use super::scripts::{Cas, Found, Scripts, SYNC_BATCH};
use super::{FleetEvent, RedisError, RedisOptions};
use crate::clock::forks;
use crate::Snapshot;

pub(super) type EventHook = Arc<dyn Fn(&FleetEvent) + Send + Sync>;

/// One breaker's local copy of the fleet word.
pub(super) struct Mirror {
    pub(super) word: CachePadded<AtomicU64>,
    pub(super) name: String,
    /// `<prefix>word:<name>`, also its channel.
    pub(super) key: String,
}

impl Mirror {
    #[inline(always)]
    pub(super) fn load(&self) -> Snapshot {
        Snapshot::from_bits(self.word.load(Ordering::Acquire))
    }

    pub(super) fn set(&self, word: Snapshot) {
        self.word.store(word.bits(), Ordering::Release);
    }

    pub(super) fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        self.word
            .compare_exchange(current.bits(), next.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Snapshot::from_bits)
    }
}

/// The keys of a breaker: a type tag before the name, so that no name makes one key equal
/// another (`<prefix>word:a:config` is a word, `<prefix>config:a` a configuration).
pub(super) fn word_key(prefix: &str, name: &str) -> String {
    format!("{prefix}word:{name}")
}

pub(super) fn config_key(prefix: &str, name: &str) -> String {
    format!("{prefix}config:{name}")
}

/// The instant by which one operation (every round trip of it, connecting included) is over.
#[derive(Clone, Copy)]
pub(super) struct Deadline(Instant);

impl Deadline {
    pub(super) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }

    /// What is left, or a timeout error once nothing is.
    pub(super) fn left(self) -> redis::RedisResult<Duration> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the operation's deadline passed").into());
        }
        Ok(left)
    }
}

pub(super) struct Fleet {
    pub(super) options: RedisOptions,
    pub(super) client: redis::Client,
    pub(super) scripts: Scripts,
    /// Idle connections; a caller takes one (or connects) and returns it if it still works.
    idle: Mutex<Vec<redis::Connection>>,
    pub(super) connected: AtomicBool,
    outage_began: Mutex<Option<Instant>>,
    /// Whether a refusal (credentials, permission, database) was reported since Redis last
    /// answered: reported once, not per retry.
    refusal_reported: AtomicBool,
    pub(super) mirrors: Mutex<HashMap<String, Weak<Mirror>>>,
    pub(super) hook: Mutex<Option<EventHook>>,
    /// The process's fork count when the watcher was started in it (see `crate::clock::forks`).
    pub(super) forks: AtomicU64,
    pub(super) outages: AtomicU64,
}

/// Redis refused this user, or the URL names a database it does not have: a configuration
/// error, never an outage.
pub(super) fn is_refusal(e: &redis::RedisError) -> bool {
    matches!(e.kind(), ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig)
        || e.code().is_some_and(|c| c == "NOPERM" || c == "WRONGPASS" || c == "NOAUTH")
        // A command a script may not run: Redis 7 says so with a plain ERR.
        || (e.code() == Some("ERR") && e.to_string().contains("The user executing the script can't"))
        || is_bad_database(e)
}

/// `redis://host/99` where Redis has fewer databases.
pub(super) fn is_bad_database(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR") && e.to_string().contains("DB index")
}

impl Fleet {
    pub(super) fn new(options: RedisOptions, client: redis::Client) -> Fleet {
        Fleet {
            scripts: Scripts::new(),
            client,
            idle: Mutex::new(Vec::new()),
            connected: AtomicBool::new(false),
            outage_began: Mutex::new(None),
            refusal_reported: AtomicBool::new(false),
            mirrors: Mutex::new(HashMap::new()),
            hook: Mutex::new(None),
            forks: AtomicU64::new(forks()),
            outages: AtomicU64::new(0),
            options,
        }
    }

    /// Runs `op` on a connection by `deadline`; a connection that failed is dropped.
    pub(super) fn with_connection<T>(
        &self,
        deadline: Deadline,
        op: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.client.get_connection_with_timeout(deadline.left()?)?,
        };
        let left = deadline.left()?;
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        let result = op(&mut conn);
        if result.is_ok() && conn.is_open() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
        result
    }

    pub(super) fn deadline(&self) -> Deadline {
        Deadline::after(self.options.timeout)
    }

    fn ttl_ms(&self) -> u64 {
        self.options.ttl.as_millis() as u64
    }

    pub(super) fn cas(&self, key: &str, current: Snapshot, next: Snapshot) -> redis::RedisResult<Cas> {
        let reply = self.with_connection(self.deadline(), |c| {
            self.scripts.cas.key(key).arg(current.bits().to_string()).arg(next.bits().to_string()).arg(self.ttl_ms()).invoke(c)
        })?;
        Cas::from_reply(reply)
    }

    /// Runs the write script once, as a write would (every command it may run, the `PUBLISH`
    /// included), on `<prefix>word:`: no breaker has the empty name, and the probe's word (0,
    /// a fresh breaker's) expires within a second.
    pub(super) fn probe(&self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        let key = word_key(&self.options.prefix, "");
        self.scripts.cas.key(key).arg("0").arg("0").arg(1000).invoke::<(i64, Vec<u8>)>(c).map(drop)
    }

    /// Attaches a mirror: reads its word (repairing a bad one) and swaps the configuration
    /// record; returns what the record held (at most 1 KB of it).
    pub(super) fn attach(&self, mirror: &Mirror, config_key: &str, ours: &str) -> redis::RedisResult<Option<String>> {
        let (code, value, theirs): (i64, Vec<u8>, Option<Vec<u8>>) = self.with_connection(self.deadline(), |c| {
            self.scripts.attach.key(&mirror.key).key(config_key).arg(self.ttl_ms()).arg(mirror.load().bits().to_string()).arg(ours).invoke(c)
        })?;
        let _ = self.apply(mirror, Found::from_reply((code, value))?);
        Ok(theirs.map(|t| String::from_utf8_lossy(&t[..t.len().min(1024)]).into_owned()))
    }

    /// Reads `mirrors` back from Redis in batches, each within a deadline of its own: adopts
    /// the words there, writes this host's where a key is missing, repairs values that are not
    /// words. Returns how many mirrors changed.
    pub(super) fn sync(&self, mirrors: &[Arc<Mirror>]) -> redis::RedisResult<usize> {
        let mut changed = 0;
        for batch in mirrors.chunks(SYNC_BATCH) {
            let found: Vec<(i64, Vec<u8>)> = self.with_connection(self.deadline(), |c| {
                let mut invocation = self.scripts.sync.prepare_invoke();
                invocation.arg(self.ttl_ms()).arg("seed");
                for mirror in batch {
                    invocation.key(&mirror.key).arg(mirror.load().bits().to_string());
                }
                invocation.invoke(c)
            })?;
            if found.len() != batch.len() {
                return Err((ErrorKind::TypeError, "a circuit breaker script answered for the wrong number of keys").into());
            }
            for (mirror, found) in batch.iter().zip(found) {
                changed += usize::from(self.apply(mirror, Found::from_reply(found)?));
            }
        }
        Ok(changed)
    }

    /// Sets a mirror to what Redis held; whether that changed it.
    fn apply(&self, mirror: &Mirror, found: Found) -> bool {
        match found {
            Found::Word(word) => mirror.word.swap(word.bits(), Ordering::AcqRel) != word.bits(),
            Found::Missing => false,
            Found::Repaired(found) => {
                self.tell(&FleetEvent::Repaired { name: mirror.name.clone(), found });
                false
            }
        }
    }

    /// Re-reads every mirror (see [`Fleet::sync`]); with none, checks that Redis answers.
    pub(super) fn resync(&self) -> redis::RedisResult<()> {
        let mirrors = self.live_mirrors();
        if mirrors.is_empty() {
            return self.with_connection(self.deadline(), |c| redis::cmd("PING").query::<String>(c).map(drop));
        }
        self.sync(&mirrors).map(drop)
    }

    pub(super) fn live_mirrors(&self) -> Vec<Arc<Mirror>> {
        let mirrors = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        mirrors.values().filter_map(Weak::upgrade).collect()
    }

    /// The attached mirror whose key is `key`, if any.
    pub(super) fn mirror(&self, key: &str) -> Option<Arc<Mirror>> {
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner()).get(key).and_then(Weak::upgrade)
    }

    pub(super) fn refused(&self, e: &redis::RedisError) -> RedisError {
        if is_bad_database(e) {
            return RedisError::Url { url: self.options.redacted_url(), reason: e.to_string() };
        }
        RedisError::Denied { url: self.options.redacted_url(), reason: e.to_string() }
    }

    /// Starts riding out a failure on the mirrors: an outage is reported once per outage, a
    /// refusal (credentials, permission, database) once until Redis answers again.
    pub(super) fn go_local(&self, e: &redis::RedisError) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut began = self.outage_began.lock().unwrap_or_else(|e| e.into_inner());
        let first = began.is_none();
        if first {
            *began = Some(Instant::now());
        }
        drop(began);
        if is_refusal(e) {
            if !self.refusal_reported.swap(true, Ordering::AcqRel) {
                self.tell(&FleetEvent::Denied { reason: self.refused(e).to_string() });
            }
        } else if first {
            self.outages.fetch_add(1, Ordering::Relaxed);
            self.tell(&FleetEvent::Outage { reason: e.to_string() });
        }
        // Last, so that whoever sees the handle local also sees the event reported.
        self.connected.store(false, Ordering::Release);
    }

    /// Redis answers again (and every mirror was resynced): shared from now on.
    pub(super) fn reconnected(&self) {
        self.refusal_reported.store(false, Ordering::Release);
        if self.connected.swap(true, Ordering::AcqRel) {
            return;
        }
        let began = self.outage_began.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(began) = began {
            self.tell(&FleetEvent::Recovered { after: began.elapsed() });
        }
    }

    pub(super) fn tell(&self, event: &FleetEvent) {
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(event);
        }
    }

    /// In a child made by `fork()`: the connections are the parent's and there is no watcher.
    pub(super) fn after_fork(self: &Arc<Self>) {
        let now = forks();
        let seen = self.forks.load(Ordering::Acquire);
        if seen != now && self.forks.compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // Dropping the parent's connections only closes this process's copies of them.
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            super::watcher::spawn(self);
        }
    }
}
