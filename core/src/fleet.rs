//! Breakers shared by every host of a fleet through Redis (feature `redis`).
//!
//! Redis holds each breaker's word under `<prefix><name>`; every host keeps a local mirror of it.
//! The hot paths read the mirror and never touch the network: a CLOSED success, an OPEN
//! rejection, any admission in CLOSED. Every write of the word — counting a failure, a trip, a
//! probe admission, a close, a reset, a force-open — is one compare-and-set in Redis by a tiny
//! Lua script (read the word, compare it with what the host last saw, write the new one,
//! publish it), so two hosts can never both make the same transition and the half-open probe
//! limit holds fleet-wide. The transition logic is the same pure functions as everywhere else;
//! only where the word is compared and written changes.
//!
//! ```no_run
//! use cb_core::{Config, RedisFleet, RedisOptions, State};
//! let fleet = RedisFleet::open(RedisOptions::new("redis://127.0.0.1:6379/0"))?;
//! let breaker = fleet.breaker("payments", Config::default().failure_threshold(3))?;
//! for _ in 0..3 {
//!     let _ = breaker.call(|| Err::<(), _>("timeout"));
//! }
//! assert_eq!(breaker.state(), State::Open); // on every host attached to "payments"
//! # Ok::<(), cb_core::RedisError>(())
//! ```
//!
//! # What touches Redis
//!
//! | operation | Redis |
//! |---|---|
//! | admission in CLOSED or DISABLED, rejection while OPEN or FORCED_OPEN, a success in CLOSED with no failure pending, state reads | none (the mirror) |
//! | a failure in CLOSED, a success that clears pending failures, probe admission and outcomes, `reset`/`force_open`/`disable` | one `EVALSHA` each (one more per lost race, as in any CAS loop) |
//! | attaching a breaker | a `GET` of its word and a `SET ... GET` of its configuration |
//! | in the background | one pattern subscription per fleet handle, and one `MGET` of every attached word per refresh interval |
//!
//! # How stale a host can be
//!
//! A word written by another host reaches this host's mirror through the subscription (on
//! loopback, well under a millisecond; see BENCHMARKS.md) and, should a message be lost, by the
//! periodic refresh ([`RedisOptions::refresh`], 1 s by default). A decision made on a stale
//! mirror is safe: a write from a stale word loses its compare-and-set and is retried on the
//! current one; only a rejection or an admission in CLOSED can be up to that staleness late.
//!
//! # Clock
//!
//! Hosts share no monotonic clock, so words in Redis hold wall-clock milliseconds since the Unix
//! epoch ([`crate::WallClock`]). Hosts must agree on the time to within
//! [`crate::CLOCK_SKEW_TICKS`] (1 s; NTP keeps hosts within milliseconds): a host ahead by `d`
//! sees a recovery timeout end `d` early. A stamp more than that ahead of a host's clock reads
//! as elapsed, so neither a host far ahead nor a clock set back can keep a breaker open.
//!
//! # Faults
//!
//! No Redis error reaches a caller. Each remote operation has a deadline ([`RedisOptions::timeout`],
//! 50 ms by default, connecting included). When one fails, the fleet handle goes local: every
//! breaker keeps working on its mirror alone (its own failures trip it, its own probes recover it)
//! and no call waits on Redis; the event is reported once per outage
//! ([`RedisFleet::on_event`]). A background thread reconnects and, once Redis answers, resyncs
//! every breaker: it adopts the word Redis holds, writes its own where Redis has none (restarted
//! empty, or the key expired), and repairs a value that is not a word. A wrong password or a
//! missing ACL permission is not an outage but a configuration error, returned by
//! [`RedisFleet::open`] and [`RedisFleet::attach`].
//!
//! # Configuration
//!
//! As with the shared-memory store, each host applies its own [`Config`] to the shared word, and
//! the last host to attach records its configuration under `<prefix><name>:config`; attaching
//! with another reports it ([`RedisSlot::config_mismatch`]).

use core::fmt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use redis::{ConnectionLike, ErrorKind};

use crate::clock::forks;
use crate::{CircuitBreaker, Config, ConfigError, Counters, Snapshot, Store, WallClock};

/// The compare-and-set every write of a word goes through. A missing key (Redis restarted
/// empty, or the key expired) is taken to hold what the caller last saw, so the first host to
/// write after a loss re-seeds it.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = ARGV[1] end
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('PUBLISH', KEYS[1], ARGV[2])
  return {1, ARGV[2]}
end
return {0, cur}
";

/// The longest breaker name, in bytes.
pub const MAX_REDIS_NAME_LEN: usize = 512;

/// Where and how to share breakers through Redis. Every option but the URL has a default.
///
/// | option | default | meaning |
/// |---|---|---|
/// | `url` | — | `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (feature `redis-tls`) |
/// | `prefix` | `circuit_breaker:` | prepended to every key and channel |
/// | `ttl` | 24 h | a word no host writes for this long expires (rewritten from a mirror when seen missing) |
/// | `timeout` | 50 ms | the most one remote operation may take, connecting included (1 ms ..= 10 s) |
/// | `refresh` | 1 s | how often mirrors are re-read in case a published change was missed (10 ms ..= 1 h) |
///
/// ```
/// use cb_core::RedisOptions;
/// use std::time::Duration;
/// let options = RedisOptions::new("redis://127.0.0.1:6379/2").prefix("orders:").timeout(Duration::from_millis(20));
/// assert_eq!(options.get_prefix(), "orders:");
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    url: String,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    refresh: Duration,
}

impl RedisOptions {
    /// Options for `url`, with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "circuit_breaker:".into(),
            ttl: Duration::from_secs(24 * 3600),
            timeout: Duration::from_millis(50),
            refresh: Duration::from_secs(1),
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long a word no host writes lives.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the deadline of one remote operation.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how often the mirrors are re-read.
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// The key prefix.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL with any password replaced by `***`, for messages and logs.
    ///
    /// ```
    /// let options = cb_core::RedisOptions::new("redis://app:s3cret@cache:6379/0");
    /// assert_eq!(options.redacted_url(), "redis://app:***@cache:6379/0");
    /// ```
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    fn check(&self) -> Result<(), RedisError> {
        let bad = |option: &'static str, allowed: &str| {
            Err(RedisError::BadOption { option, allowed: allowed.to_string() })
        };
        if !(Duration::from_millis(1)..=Duration::from_secs(10)).contains(&self.timeout) {
            return bad("timeout", "between 1 ms and 10 s");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&self.refresh) {
            return bad("refresh", "between 10 ms and 1 h");
        }
        if self.ttl < Duration::from_secs(1) || self.ttl.as_millis() > i64::MAX as u128 {
            return bad("ttl", "at least 1 s");
        }
        if self.prefix.len() > 256 {
            return bad("prefix", "at most 256 bytes");
        }
        Ok(())
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("refresh", &self.refresh)
            .finish()
    }
}

fn redact(url: &str) -> String {
    // scheme://user:password@host... -> scheme://user:***@host...
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((auth, host)) = rest.split_once('@') else { return url.to_string() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// Why a fleet handle could not be opened or a breaker not attached. An unreachable Redis is
/// not one of them: that is an outage, which the handle rides out on its mirrors.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL does not parse (or names a scheme this build does not support).
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis refused the credentials, or the user lacks a permission the store needs
    /// (`GET`, `SET`, `MGET`, `EVALSHA`/`EVAL`, `SCRIPT`, `PUBLISH`, `PSUBSCRIBE` on the prefix).
    Denied {
        /// The URL, password redacted.
        url: String,
        /// What Redis said.
        reason: String,
    },
    /// An option out of range.
    BadOption {
        /// The option, as named in [`RedisOptions`].
        option: &'static str,
        /// What is allowed.
        allowed: String,
    },
    /// A breaker name that is empty or longer than [`MAX_REDIS_NAME_LEN`] bytes.
    BadName {
        /// The name's length in bytes.
        len: usize,
    },
    /// The breaker's configuration is out of range.
    Config(ConfigError),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Url { url, reason } => write!(f, "Redis URL {url} is not usable: {reason}"),
            RedisError::Denied { url, reason } => write!(
                f,
                "Redis at {url} refused the circuit breaker store: {reason} (check the password and that the \
                 user may run GET, SET, MGET, EVALSHA, EVAL, SCRIPT, PUBLISH and PSUBSCRIBE on the key prefix)"
            ),
            RedisError::BadOption { option, allowed } => write!(f, "{option} must be {allowed}"),
            RedisError::BadName { len } => write!(
                f,
                "a breaker shared through Redis needs a name of 1 to {MAX_REDIS_NAME_LEN} bytes, got {len} bytes"
            ),
            RedisError::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for RedisError {
    fn from(e: ConfigError) -> Self {
        RedisError::Config(e)
    }
}

/// Something a fleet handle noticed, for a log line: reported once per occurrence, never per
/// call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetEvent {
    /// Redis stopped answering; every breaker of the handle now works on its mirror alone.
    Outage {
        /// What failed.
        reason: String,
    },
    /// Redis answers again; every breaker was resynced from it.
    Recovered {
        /// How long the outage lasted.
        after: Duration,
    },
    /// A key held something that is not a breaker word; it was overwritten with the mirror's.
    Repaired {
        /// The breaker.
        name: String,
        /// What the key held (at most 64 bytes of it).
        found: String,
    },
}

type EventHook = Arc<dyn Fn(&FleetEvent) + Send + Sync>;

/// One breaker's local copy of the fleet word.
struct Mirror {
    word: CachePadded<AtomicU64>,
    name: String,
    key: String,
}

impl Mirror {
    fn load(&self) -> Snapshot {
        Snapshot::from_bits(self.word.load(Ordering::Acquire))
    }

    fn set(&self, word: Snapshot) {
        self.word.store(word.bits(), Ordering::Release);
    }

    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        self.word
            .compare_exchange(current.bits(), next.bits(), Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(Snapshot::from_bits)
    }
}

/// What a remote compare-and-set found.
enum Cas {
    Written,
    Lost(Snapshot),
    /// The key held something that is not a word.
    Garbage(String),
}

struct Fleet {
    options: RedisOptions,
    client: redis::Client,
    script: redis::Script,
    /// Idle connections; a caller takes one (or connects) and returns it if it still works.
    idle: Mutex<Vec<redis::Connection>>,
    connected: AtomicBool,
    outage_began: Mutex<Option<Instant>>,
    mirrors: Mutex<HashMap<String, Weak<Mirror>>>,
    hook: Mutex<Option<EventHook>>,
    /// The process's fork count when the watcher was started in it (see `crate::clock::forks`).
    forks: AtomicU64,
    outages: AtomicU64,
}

/// A connection to Redis shared by the breakers of one process: it holds their mirrors, the
/// connections, and the background thread that keeps the mirrors fresh. Cheap to clone. See
/// the [module docs](self).
#[derive(Clone)]
pub struct RedisFleet {
    inner: Arc<Fleet>,
}

/// A breaker whose word lives in Redis.
pub type RedisBreaker<C = WallClock> = CircuitBreaker<C, Counters, RedisWord>;

impl RedisFleet {
    /// Parses the URL, connects and checks the credentials and permissions. An unreachable
    /// Redis is not an error: the handle starts local and reports the outage once.
    pub fn open(options: RedisOptions) -> Result<RedisFleet, RedisError> {
        options.check()?;
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| RedisError::Url { url: options.redacted_url(), reason: e.to_string() })?;
        let fleet = Arc::new(Fleet {
            script: redis::Script::new(CAS_SCRIPT),
            client,
            idle: Mutex::new(Vec::new()),
            connected: AtomicBool::new(false),
            outage_began: Mutex::new(None),
            mirrors: Mutex::new(HashMap::new()),
            hook: Mutex::new(None),
            forks: AtomicU64::new(forks()),
            outages: AtomicU64::new(0),
            options,
        });
        match fleet.with_connection(|c| {
            redis::cmd("PING").query::<String>(c)?;
            fleet.script.prepare_invoke().load(c)?;
            Ok(())
        }) {
            Ok(()) => fleet.connected.store(true, Ordering::Release),
            Err(e) if is_denied(&e) => return Err(fleet.denied(&e)),
            Err(e) => fleet.go_local(&e),
        }
        spawn_watcher(&fleet);
        Ok(RedisFleet { inner: fleet })
    }

    /// Calls `hook` for every [`FleetEvent`] from now on (replacing any earlier hook); it may
    /// run on the background thread.
    pub fn on_event(&self, hook: impl Fn(&FleetEvent) + Send + Sync + 'static) {
        *self.inner.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Whether Redis answered the last operation (false while riding out an outage locally).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// How many outages this handle has been through.
    pub fn outages(&self) -> u64 {
        self.inner.outages.load(Ordering::Relaxed)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The word of the breaker named `name`, as a [`Store`]: its mirror is filled from Redis
    /// (never reset), and `config` is recorded as the last attacher's.
    pub fn attach(&self, name: &str, config: &Config) -> Result<RedisSlot, RedisError> {
        config.limits()?;
        if name.is_empty() || name.len() > MAX_REDIS_NAME_LEN {
            return Err(RedisError::BadName { len: name.len() });
        }
        let fleet = &self.inner;
        fleet.after_fork();
        let key = format!("{}{}", fleet.options.prefix, name);
        let mirror = {
            let mut mirrors = fleet.mirrors.lock().unwrap_or_else(|e| e.into_inner());
            mirrors.retain(|_, m| m.strong_count() > 0);
            match mirrors.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(Mirror { word: CachePadded::new(AtomicU64::new(0)), name: name.into(), key: key.clone() });
                    mirrors.insert(key.clone(), Arc::downgrade(&m));
                    m
                }
            }
        };
        let ours = config.describe();
        let mut mismatch = None;
        if fleet.connected.load(Ordering::Acquire) {
            let attached = fleet.with_connection(|c| {
                let word: Option<String> = redis::cmd("GET").arg(&key).query(c)?;
                let theirs: Option<String> = redis::cmd("SET")
                    .arg(format!("{key}:config"))
                    .arg(&ours)
                    .arg("PX")
                    .arg(fleet.options.ttl.as_millis() as u64)
                    .arg("GET")
                    .query(c)?;
                Ok((word, theirs))
            });
            match attached {
                Ok((word, theirs)) => {
                    match word.as_deref().map(parse_word) {
                        Some(Some(word)) => mirror.set(word),
                        Some(None) => fleet.repair(&mirror, word.as_deref().unwrap_or_default()),
                        None => {}
                    }
                    mismatch = theirs.filter(|t| *t != ours);
                }
                Err(e) if is_denied(&e) => return Err(fleet.denied(&e)),
                Err(e) => fleet.go_local(&e),
            }
        }
        Ok(RedisSlot { word: RedisWord { mirror, fleet: Arc::clone(fleet) }, mismatch })
    }

    /// A breaker on the word named `name`, with the wall clock and its own (this host's)
    /// counters.
    pub fn breaker(&self, name: &str, config: Config) -> Result<RedisBreaker, RedisError> {
        let slot = self.attach(name, &config)?;
        Ok(CircuitBreaker::with_store(config, WallClock, Counters::default(), slot.into_word())?.named(name))
    }
}

impl fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleet")
            .field("options", &self.inner.options)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// What [`RedisFleet::attach`] returns: the word, and what the last attacher was configured
/// with if that differs.
#[derive(Debug)]
pub struct RedisSlot {
    word: RedisWord,
    mismatch: Option<String>,
}

impl RedisSlot {
    /// The store for [`CircuitBreaker::with_store`].
    pub fn into_word(self) -> RedisWord {
        self.word
    }

    /// When the last host to attach was configured otherwise: its configuration, described
    /// (this attach recorded ours). Each host applies its own.
    pub fn config_mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }
}

/// A breaker word shared through Redis: reads come from this host's mirror; writes are a
/// compare-and-set in Redis (or on the mirror alone during an outage).
pub struct RedisWord {
    mirror: Arc<Mirror>,
    fleet: Arc<Fleet>,
}

impl RedisWord {
    /// Whether this word is shared right now (false while the fleet handle rides out an outage).
    pub fn is_connected(&self) -> bool {
        self.fleet.connected.load(Ordering::Acquire)
    }
}

impl fmt::Debug for RedisWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisWord").field("key", &self.mirror.key).field("mirror", &self.mirror.load()).finish()
    }
}

impl Store for RedisWord {
    #[inline(always)]
    fn load(&self) -> Snapshot {
        self.mirror.load()
    }

    fn compare_exchange(&self, current: Snapshot, next: Snapshot) -> Result<(), Snapshot> {
        let fleet = &self.fleet;
        fleet.after_fork();
        if !fleet.connected.load(Ordering::Acquire) {
            return self.mirror.compare_exchange(current, next);
        }
        match fleet.cas(&self.mirror.key, current, next) {
            Ok(Cas::Written) => {
                // A newer word may already have arrived from another host; keep it then.
                let _ = self.mirror.compare_exchange(current, next);
                Ok(())
            }
            Ok(Cas::Lost(actual)) => {
                self.mirror.set(actual);
                Err(actual)
            }
            Ok(Cas::Garbage(found)) => {
                fleet.repair(&self.mirror, &found);
                Err(self.mirror.load())
            }
            Err(e) => {
                fleet.go_local(&e);
                self.mirror.compare_exchange(current, next)
            }
        }
    }
}

fn parse_word(text: &str) -> Option<Snapshot> {
    text.parse::<u64>().ok().map(Snapshot::from_bits)
}

fn is_denied(e: &redis::RedisError) -> bool {
    matches!(e.kind(), ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig)
        || e.code().is_some_and(|c| c == "NOPERM" || c == "WRONGPASS" || c == "NOAUTH")
}

impl Fleet {
    /// Runs `op` on a connection, within the deadline; a connection that failed is dropped.
    fn with_connection<T>(&self, op: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        let started = Instant::now();
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.client.get_connection_with_timeout(self.options.timeout)?,
        };
        let left = self.options.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        let result = op(&mut conn);
        if result.is_ok() && conn.is_open() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
        result
    }

    fn cas(&self, key: &str, current: Snapshot, next: Snapshot) -> redis::RedisResult<Cas> {
        let ttl = self.options.ttl.as_millis() as u64;
        let (written, word): (i64, String) = self.with_connection(|c| {
            self.script.key(key).arg(current.bits().to_string()).arg(next.bits().to_string()).arg(ttl).invoke(c)
        })?;
        Ok(match (written, parse_word(&word)) {
            (1, _) => Cas::Written,
            (_, Some(actual)) => Cas::Lost(actual),
            (_, None) => Cas::Garbage(word),
        })
    }

    /// Overwrites a value that is not a word with the mirror's (only if it is still that value).
    fn repair(&self, mirror: &Mirror, found: &str) {
        let ours = mirror.load().bits().to_string();
        let ttl = self.options.ttl.as_millis() as u64;
        let repaired = self.with_connection(|c| self.script.key(&mirror.key).arg(found).arg(&ours).arg(ttl).invoke::<(i64, String)>(c));
        match repaired {
            Ok(_) => self.tell(&FleetEvent::Repaired {
                name: mirror.name.clone(),
                found: found.chars().take(64).collect(),
            }),
            Err(e) => self.go_local(&e),
        }
    }

    fn denied(&self, e: &redis::RedisError) -> RedisError {
        RedisError::Denied { url: self.options.redacted_url(), reason: e.to_string() }
    }

    /// Starts riding out an outage on the mirrors; reported once per outage.
    fn go_local(&self, e: &redis::RedisError) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.connected.store(false, Ordering::Release);
        let mut began = self.outage_began.lock().unwrap_or_else(|e| e.into_inner());
        if began.is_none() {
            *began = Some(Instant::now());
            drop(began);
            self.outages.fetch_add(1, Ordering::Relaxed);
            self.tell(&FleetEvent::Outage { reason: e.to_string() });
        }
    }

    fn tell(&self, event: &FleetEvent) {
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(hook) = hook {
            hook(event);
        }
    }

    fn live_mirrors(&self) -> Vec<Arc<Mirror>> {
        let mirrors = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        mirrors.values().filter_map(Weak::upgrade).collect()
    }

    /// Re-reads every mirror from Redis: adopts the words there, writes ours where a key is
    /// missing, repairs values that are not words.
    fn resync(&self) -> redis::RedisResult<()> {
        let mirrors = self.live_mirrors();
        if mirrors.is_empty() {
            return self.with_connection(|c| redis::cmd("PING").query::<String>(c).map(drop));
        }
        let keys: Vec<&str> = mirrors.iter().map(|m| m.key.as_str()).collect();
        let words: Vec<Option<String>> = self.with_connection(|c| redis::cmd("MGET").arg(&keys).query(c))?;
        let ttl = self.options.ttl.as_millis() as u64;
        for (mirror, word) in mirrors.iter().zip(words) {
            match word {
                Some(text) => match parse_word(&text) {
                    Some(word) => mirror.set(word),
                    None => self.repair(mirror, &text),
                },
                None => {
                    // Lost (restarted empty) or expired: this host's word seeds it, unless
                    // another host got there first.
                    let ours = mirror.load().bits().to_string();
                    let seeded: bool = self.with_connection(|c| {
                        redis::cmd("SET").arg(&mirror.key).arg(&ours).arg("NX").arg("PX").arg(ttl).query::<Option<String>>(c).map(|r| r.is_some())
                    })?;
                    if !seeded {
                        let now: Option<String> = self.with_connection(|c| redis::cmd("GET").arg(&mirror.key).query(c))?;
                        if let Some(word) = now.as_deref().and_then(parse_word) {
                            mirror.set(word);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// In a child made by `fork()`: the connections are the parent's and there is no watcher.
    fn after_fork(self: &Arc<Self>) {
        let now = forks();
        let seen = self.forks.load(Ordering::Acquire);
        if seen != now && self.forks.compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // Dropping the parent's connections only closes this process's copies of them.
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            spawn_watcher(self);
        }
    }
}

/// The background thread of a fleet handle: applies published words to the mirrors, re-reads
/// them every refresh interval, and during an outage reconnects and resyncs. It holds the
/// handle weakly and ends when the handle is gone.
fn spawn_watcher(fleet: &Arc<Fleet>) {
    let weak = Arc::downgrade(fleet);
    let started = fleet.forks.load(Ordering::Acquire);
    let spawned = thread::Builder::new().name("cb-redis-watch".into()).spawn(move || watch(&weak, started));
    if spawned.is_err() {
        // No thread: the breakers still work, on writes' compare-and-sets and their mirrors.
        fleet.tell(&FleetEvent::Outage { reason: "could not start the background thread".into() });
    }
}

fn watch(weak: &Weak<Fleet>, generation: u64) {
    const TICK: Duration = Duration::from_millis(100);
    let mut last_refresh = Instant::now();
    let mut retry = Duration::from_millis(50);
    loop {
        let Some(fleet) = weak.upgrade() else { return };
        if fleet.forks.load(Ordering::Acquire) != generation {
            return; // a forked child started its own watcher
        }
        if !fleet.connected.load(Ordering::Acquire) {
            match fleet.resync() {
                Ok(()) => {
                    let began = fleet.outage_began.lock().unwrap_or_else(|e| e.into_inner()).take();
                    fleet.connected.store(true, Ordering::Release);
                    fleet.tell(&FleetEvent::Recovered { after: began.map_or(Duration::ZERO, |b| b.elapsed()) });
                    retry = Duration::from_millis(50);
                    last_refresh = Instant::now();
                }
                Err(_) => {
                    drop(fleet);
                    thread::sleep(retry);
                    retry = (retry * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let subscribed = subscribe_and_listen(&fleet, weak, generation, &mut last_refresh, TICK);
        if let Err(e) = subscribed {
            fleet.go_local(&e);
        }
    }
}

/// Listens to published words until the connection fails or the handle is gone, refreshing every
/// interval.
fn subscribe_and_listen(
    fleet: &Arc<Fleet>,
    weak: &Weak<Fleet>,
    generation: u64,
    last_refresh: &mut Instant,
    tick: Duration,
) -> redis::RedisResult<()> {
    let mut conn = fleet.client.get_connection_with_timeout(fleet.options.timeout)?;
    conn.set_write_timeout(Some(fleet.options.timeout))?;
    conn.set_read_timeout(Some(tick))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.psubscribe(format!("{}*", glob_escape(&fleet.options.prefix)))?;
    // Whatever was published before the subscription took effect is picked up here.
    fleet.resync()?;
    loop {
        match pubsub.get_message() {
            Ok(message) => {
                let channel = message.get_channel_name();
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some(word) = parse_word(&payload) {
                    let mirrors = fleet.mirrors.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(mirror) = mirrors.get(channel).and_then(Weak::upgrade) {
                        mirror.set(word);
                    }
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
        if weak.strong_count() <= 1 || fleet.forks.load(Ordering::Acquire) != generation {
            return Ok(()); // only the watcher holds it: the handle is gone
        }
        if !fleet.connected.load(Ordering::Acquire) {
            return Ok(()); // a caller saw an outage: reconnect and resync
        }
        if last_refresh.elapsed() >= fleet.options.refresh {
            fleet.resync()?;
            *last_refresh = Instant::now();
        }
    }
}

fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
