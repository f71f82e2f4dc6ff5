//! Breakers shared by every host of a fleet through Redis (feature `redis`).
//!
//! Redis holds each breaker's word under `<prefix>word:<name>`; every host keeps a local mirror
//! of it. The hot paths read the mirror and never touch the network: a CLOSED success, an OPEN
//! rejection, any admission in CLOSED. Every write of the word — counting a failure, a trip, a
//! probe admission, a close, a reset, a force-open — is one compare-and-set in Redis by a tiny
//! Lua script (read the word, compare it with what the host last saw, write the new one,
//! publish a hint that it changed), so two hosts can never both make the same transition and
//! the half-open probe limit holds fleet-wide. The transition logic is the same pure functions
//! as everywhere else; only where the word is compared and written changes.
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
//! # Keys
//!
//! | key | holds |
//! |---|---|
//! | `<prefix>word:<name>` | the breaker's word: 1 to 20 decimal digits, expiring [`RedisOptions::ttl`] after the last write; also the channel its changes are published on |
//! | `<prefix>config:<name>` | the configuration of the last host to attach, described (at most 1 KB of it is ever read) |
//!
//! The type tag before the name keeps every purpose in its own namespace: no breaker name makes
//! one key equal another (`svc:config`'s word is `<prefix>word:svc:config`, `svc`'s
//! configuration `<prefix>config:svc`). Earlier versions kept the word under `<prefix><name>`:
//! hosts on that layout and hosts on this one do not share breakers.
//!
//! # What touches Redis
//!
//! | operation | Redis |
//! |---|---|
//! | admission in CLOSED or DISABLED, rejection while OPEN or FORCED_OPEN, a success in CLOSED with no failure pending, state reads | none (the mirror) |
//! | a failure in CLOSED, a success that clears pending failures, probe admission and outcomes, `reset`/`force_open`/`disable` | one `EVALSHA` each (one more per lost race, as in any CAS loop) |
//! | attaching a breaker | one `EVALSHA` (read the word, swap the configuration record) |
//! | in the background | one pattern subscription per fleet handle, one `EVALSHA` reading back the words hinted by messages (none for a message carrying the word the mirror holds, such as this host's own writes), one reading every attached word per refresh interval |
//!
//! # What Redis may hold, and who may publish
//!
//! Nothing read from Redis is trusted. Every script checks a key's `TYPE` and `STRLEN` before
//! reading it, so no reply carries more than 64 bytes of a value that is not a word (1 KB of a
//! configuration), however large; a value of another type, or a string that is not a word, is
//! overwritten with this host's word (a write over it counts as one) and reported with the
//! breaker's name ([`FleetEvent::Repaired`]); it affects that breaker alone.
//!
//! A published message is only a hint: the watcher reads the hinted words back from Redis and
//! sets the mirrors to what Redis holds, never to a message's payload. A client that may only
//! `PUBLISH` can make hosts re-read words, never change a breaker's state; and since reads
//! back that find nothing new are limited (a burst of 64, then one a millisecond per handle,
//! the hints that arrive meanwhile read back together in one bounded read), a flood of forged
//! messages costs each host at most that, while a real change is still read back at once.
//!
//! # How stale a host can be
//!
//! A word written by another host reaches this host's mirror through its hint and one read back
//! (on loopback, well under a millisecond; see BENCHMARKS.md) and, should a message be lost, by
//! the periodic refresh ([`RedisOptions::refresh`], 1 s by default). A decision made on a stale
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
//! No Redis error reaches a caller. Each remote operation has one deadline
//! ([`RedisOptions::timeout`], 50 ms by default) for all its round trips, connecting included.
//! When one fails, the fleet handle goes local: every breaker keeps working on its mirror alone
//! (its own failures trip it, its own probes recover it) and no call waits on Redis; the event
//! is reported once per outage ([`RedisFleet::on_event`]). A background thread reconnects and,
//! once Redis answers, resyncs every breaker: it adopts the word Redis holds, writes its own
//! where Redis has none (restarted empty, or the key expired), and repairs a value that is not
//! a word.
//!
//! A wrong password, a missing ACL permission (the `PSUBSCRIBE` included) or a database the
//! server does not have is not an outage but a configuration error: [`RedisFleet::open`] and
//! [`RedisFleet::attach`] return it when Redis answers, and a refusal met later (Redis came
//! back with a password, an ACL changed) is reported once as [`FleetEvent::Denied`], the
//! handle staying local until it is fixed.
//!
//! # Configuration
//!
//! As with the shared-memory store, each host applies its own [`Config`] to the shared word, and
//! the last host to attach records its configuration under `<prefix>config:<name>`; attaching
//! with another reports it ([`RedisSlot::config_mismatch`]).

mod remote;
mod scripts;
mod watcher;

use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use self::remote::{config_key, is_refusal, word_key, Fleet, Mirror};
use self::scripts::Cas;
use crate::{CircuitBreaker, Config, ConfigError, Counters, Snapshot, Store, WallClock};

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
    /// The URL does not parse, names a scheme this build does not support, or names a database
    /// the server does not have (`redis://host/99`: found when Redis answers at open).
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis refused the credentials, or the user lacks a permission the store needs
    /// (`PING`, `EVALSHA`/`EVAL`, `SCRIPT`, and `TYPE`, `STRLEN`, `GET`, `GETRANGE`, `SET`,
    /// `PUBLISH` from the scripts on the prefix's keys and channels, `PSUBSCRIBE` to `<prefix>*`).
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
                 user may run PING, EVALSHA, EVAL, SCRIPT, TYPE, STRLEN, GET, GETRANGE, SET and PUBLISH on the key \
                 prefix and PSUBSCRIBE to it)"
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
        /// What the key held (at most 64 bytes of it, or `<a list>` for a key of another type).
        found: String,
    },
    /// Redis answers but refuses this handle: a wrong or missing password, a missing ACL
    /// permission, a database it does not have. Reported once, until Redis accepts the handle
    /// again; every breaker works on its mirror alone meanwhile, as in an outage.
    ///
    /// ```
    /// use cb_core::FleetEvent;
    /// let log = |event: &FleetEvent| match event {
    ///     FleetEvent::Denied { reason } => format!("fix the Redis configuration: {reason}"),
    ///     other => format!("{other:?}"),
    /// };
    /// assert!(log(&FleetEvent::Denied { reason: "NOAUTH".into() }).starts_with("fix"));
    /// ```
    Denied {
        /// What Redis said, with the URL (password redacted).
        reason: String,
    },
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
    /// Parses the URL, connects and checks the credentials, the permissions (by running the
    /// write script once on `<prefix>word:`, a key no breaker has, and subscribing) and the
    /// database, all within [`RedisOptions::timeout`]. An unreachable
    /// Redis is not an error: the handle starts local and reports the outage once.
    pub fn open(options: RedisOptions) -> Result<RedisFleet, RedisError> {
        options.check()?;
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| RedisError::Url { url: options.redacted_url(), reason: e.to_string() })?;
        let fleet = Arc::new(Fleet::new(options, client));
        let pattern = watcher::pattern(&fleet.options.prefix);
        let deadline = fleet.deadline();
        let checked = fleet
            .with_connection(deadline, |c| {
                redis::cmd("PING").query::<String>(c)?;
                fleet.scripts.load(c)?;
                fleet.probe(c)
            })
            .and_then(|()| {
                // The watcher's subscription, tried now so that a user who may not subscribe is
                // refused here rather than riding out outages forever. On a connection of its
                // own, dropped after: a message may arrive before the PUNSUBSCRIBE is answered.
                let mut c = fleet.client.get_connection_with_timeout(deadline.left()?)?;
                watcher::subscribe(&mut c, &pattern, deadline.left()?)
            });
        match checked {
            Ok(()) => fleet.connected.store(true, Ordering::Release),
            Err(e) if is_refusal(&e) => return Err(fleet.refused(&e)),
            Err(e) => fleet.go_local(&e),
        }
        watcher::spawn(&fleet);
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

    /// A handle that does not keep the store open, for a cache of stores: once every
    /// `RedisFleet` clone and every breaker attached through them are dropped, the background
    /// thread ends, every connection is closed and [`WeakRedisFleet::upgrade`] returns `None`.
    ///
    /// ```
    /// use cb_core::{RedisFleet, RedisOptions};
    /// use std::time::{Duration, Instant};
    /// // Nothing listens on port 1: the handle starts local, which is not an error.
    /// let fleet = RedisFleet::open(RedisOptions::new("redis://127.0.0.1:1/0"))?;
    /// let cached = fleet.downgrade();
    /// assert!(cached.upgrade().is_some_and(|again| again.options().get_prefix() == "circuit_breaker:"));
    /// drop(fleet);
    /// // The background thread may be holding it for a moment; then it is gone.
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// while cached.upgrade().is_some() {
    ///     assert!(Instant::now() < deadline);
    ///     std::thread::sleep(Duration::from_millis(10));
    /// }
    /// # Ok::<(), cb_core::RedisError>(())
    /// ```
    pub fn downgrade(&self) -> WeakRedisFleet {
        WeakRedisFleet { inner: Arc::downgrade(&self.inner) }
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
        let key = word_key(&fleet.options.prefix, name);
        let mirror = {
            let mut mirrors = fleet.mirrors.lock().unwrap_or_else(|e| e.into_inner());
            mirrors.retain(|_, m| m.strong_count() > 0);
            match mirrors.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(Mirror { word: CachePadded::new(AtomicU64::new(0)), name: name.into(), key: key.clone() });
                    mirrors.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        let ours = config.describe();
        let mut mismatch = None;
        if fleet.connected.load(Ordering::Acquire) {
            match fleet.attach(&mirror, &config_key(&fleet.options.prefix, name), &ours) {
                Ok(theirs) => mismatch = theirs.filter(|t| *t != ours),
                Err(e) if is_refusal(&e) => return Err(fleet.refused(&e)),
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

/// A [`RedisFleet`] that does not keep it open ([`RedisFleet::downgrade`]): for a cache of
/// stores that must not outlive their users.
///
/// ```
/// use cb_core::{RedisFleet, RedisOptions, WeakRedisFleet};
/// let fleet = RedisFleet::open(RedisOptions::new("redis://127.0.0.1:1/0"))?;
/// let cache: Vec<WeakRedisFleet> = vec![fleet.downgrade()];
/// let again = cache[0].upgrade().expect("still in use");
/// assert_eq!(again.options().redacted_url(), fleet.options().redacted_url());
/// # Ok::<(), cb_core::RedisError>(())
/// ```
#[derive(Clone)]
pub struct WeakRedisFleet {
    inner: Weak<Fleet>,
}

impl WeakRedisFleet {
    /// The store, if a `RedisFleet` or a breaker still uses it.
    pub fn upgrade(&self) -> Option<RedisFleet> {
        self.inner.upgrade().map(|inner| RedisFleet { inner })
    }
}

impl fmt::Debug for WeakRedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upgrade() {
            Some(fleet) => f.debug_tuple("WeakRedisFleet").field(&fleet).finish(),
            None => f.write_str("WeakRedisFleet(closed)"),
        }
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
            Ok(written @ (Cas::Written | Cas::Repaired(_))) => {
                if let Cas::Repaired(found) = written {
                    fleet.tell(&FleetEvent::Repaired { name: self.mirror.name.clone(), found });
                }
                // A newer word may already have arrived from another host; keep it then.
                let _ = self.mirror.compare_exchange(current, next);
                Ok(())
            }
            Ok(Cas::Lost(actual)) => {
                self.mirror.set(actual);
                Err(actual)
            }
            Err(e) => {
                fleet.go_local(&e);
                self.mirror.compare_exchange(current, next)
            }
        }
    }
}

