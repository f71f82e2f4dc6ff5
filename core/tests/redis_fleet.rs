//! Breakers shared through a real `redis-server`, which these tests start on free loopback
//! ports in temporary directories (and stop, kill, freeze and restart). Several fleet handles in
//! one process stand for several hosts: each has its own mirrors and connections.
#![cfg(all(unix, feature = "redis"))]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cb_core::{
    CircuitBreaker, Config, Counters, FleetEvent, RedisError, RedisFleet, RedisOptions, RedisWord, State, Transition,
    Snapshot, WallClock,
};

mod redis_server;
use redis_server::{free_port, Server};

/// The key of a breaker's word (and its channel).
fn word_key(name: &str) -> String {
    format!("circuit_breaker:word:{name}")
}

/// The key of the last attacher's configuration of a breaker.
fn config_key(name: &str) -> String {
    format!("circuit_breaker:config:{name}")
}

fn host(server: &Server) -> RedisFleet {
    RedisFleet::open(RedisOptions::new(server.url()).refresh(Duration::from_millis(200))).unwrap()
}

fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        thread::sleep(Duration::from_millis(2));
    }
}

type Heard = Arc<Mutex<Vec<Transition>>>;

fn listened(fleet: &RedisFleet, name: &str, config: Config) -> (CircuitBreaker<WallClock, Counters, RedisWord>, Heard) {
    let heard: Heard = Arc::default();
    let log = Arc::clone(&heard);
    let word = fleet.attach(name, &config).unwrap().into_word();
    let breaker = CircuitBreaker::with_store(config, WallClock, Counters::default(), word)
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push(*t));
    (breaker, heard)
}

#[test]
fn hosts_share_state_and_manual_control() {
    let server = Server::start(&[]);
    let (a, b) = (host(&server), host(&server));
    let config = Config::default().failure_threshold(2).recovery_timeout(Duration::from_secs(600));
    let on_a = a.breaker("shared", config).unwrap();
    let on_b = b.breaker("shared", config).unwrap();
    let _ = on_a.call(|| Err::<(), _>("down"));
    let _ = on_b.call(|| Err::<(), _>("down")); // the second consecutive failure, fleet-wide
    assert_eq!(on_b.state(), State::Open);
    eventually("host A sees the trip", Duration::from_secs(2), || on_a.admit().is_err());
    on_a.reset();
    eventually("host B sees the reset", Duration::from_secs(2), || on_b.state() == State::Closed);
    on_b.force_open();
    eventually("host A sees the force-open", Duration::from_secs(2), || on_a.state() == State::ForcedOpen);
    // A new host attaching later starts from the fleet's word, not from a fresh breaker.
    let late = host(&server).breaker("shared", config).unwrap();
    assert_eq!(late.state(), State::ForcedOpen);
    assert_eq!(on_a.metrics().totals().failures, 1, "counters are this host's own");
}

#[test]
fn racing_hosts_make_exactly_one_trip() {
    let server = Server::start(&[]);
    for round in 0..3 {
        let name = format!("race{round}");
        let config = Config::default().failure_threshold(10).recovery_timeout(Duration::from_secs(600));
        let hosts: Vec<_> = (0..4).map(|_| listened(&host(&server), &name, config)).collect();
        let start = Barrier::new(hosts.len());
        thread::scope(|s| {
            for (breaker, _) in &hosts {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    for _ in 0..30 {
                        let _ = breaker.call(|| Err::<(), _>("down"));
                    }
                });
            }
        });
        let opens: usize = hosts.iter().map(|(_, heard)| heard.lock().unwrap().iter().filter(|t| t.to == State::Open).count()).sum();
        assert_eq!(opens, 1, "round {round}: OPEN announced {opens} times across hosts");
        let failures: u64 = hosts.iter().map(|(b, _)| b.metrics().totals().failures).sum();
        assert!(failures >= 10);
    }
}

#[test]
fn the_half_open_probe_limit_holds_across_hosts() {
    const LIMIT: u64 = 2;
    let server = Server::start(&[]);
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO).half_open_max_calls(LIMIT);
    let hosts: Vec<_> = (0..4).map(|_| host(&server).breaker("probes", config).unwrap()).collect();
    let _ = hosts[0].call(|| Err::<(), _>("down"));
    // The trip reaches the other hosts' mirrors by subscription; until then they may still admit
    // as CLOSED (the documented staleness), which is not what this test is about.
    let deadline = Instant::now() + Duration::from_secs(2);
    while hosts.iter().any(|b| b.state() == State::Closed) {
        assert!(Instant::now() < deadline, "the trip never reached every host");
        thread::sleep(Duration::from_millis(1));
    }
    let (running, peak, probes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    thread::scope(|s| {
        for breaker in &hosts {
            let (running, peak, probes) = (&running, &peak, &probes);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_millis(800);
                while Instant::now() < deadline {
                    let Ok(permit) = breaker.admit() else { continue };
                    assert!(permit.is_probe());
                    probes.fetch_add(1, Ordering::SeqCst);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                    running.fetch_sub(1, Ordering::SeqCst);
                    permit.ignore(); // stays HALF_OPEN: every probe races for a freed slot
                }
            });
        }
    });
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT, "probes at once across hosts");
    assert!(probes.load(Ordering::SeqCst) > 20);
}

#[test]
fn killed_restarted_and_frozen_redis_never_fail_a_call() {
    let mut server = Server::start(&[]);
    let fleet = RedisFleet::open(RedisOptions::new(server.url()).timeout(Duration::from_millis(50)).refresh(Duration::from_millis(100))).unwrap();
    let events: Arc<Mutex<Vec<FleetEvent>>> = Arc::default();
    let log = Arc::clone(&events);
    fleet.on_event(move |e| log.lock().unwrap().push(e.clone()));
    let config = Config::default().failure_threshold(3).recovery_timeout(Duration::from_secs(600));
    let breaker = fleet.breaker("faults", config).unwrap();
    let slowest = |calls: usize, fail: bool| {
        let mut worst = Duration::ZERO;
        for _ in 0..calls {
            let started = Instant::now();
            let _ = breaker.call(|| if fail { Err("down") } else { Ok(()) });
            worst = worst.max(started.elapsed());
        }
        worst
    };
    assert!(fleet.is_connected());
    // Killed: calls go on, locally; one outage event, whatever the number of calls.
    server.kill();
    let worst = slowest(200, false);
    assert!(worst < Duration::from_millis(200), "a call waited {worst:?}");
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert!(!fleet.is_connected());
    let outages = |events: &Mutex<Vec<FleetEvent>>| events.lock().unwrap().iter().filter(|e| matches!(e, FleetEvent::Outage { .. })).count();
    assert_eq!(outages(&events), 1, "{:?}", events.lock().unwrap());
    // The local breaker still trips on this host's failures.
    let _ = breaker.call(|| Err::<(), _>("down"));
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), State::Open);
    // Restarted empty: the host resyncs and re-seeds Redis with its word.
    server.restart_empty();
    eventually("the handle reconnects", Duration::from_secs(5), || fleet.is_connected());
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, FleetEvent::Recovered { .. })));
    let seeded = server.command(&["GET", &word_key("faults")]);
    assert!(matches!(seeded, redis::Value::BulkString(_)), "the word was written back: {seeded:?}");
    assert_eq!(host(&server).breaker("faults", config).unwrap().state(), State::Open, "another host sees it");
    // Frozen (SIGSTOP) for 2 s: no call waits beyond the deadline; one more outage.
    breaker.reset();
    server.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let mut worst = Duration::ZERO;
    while frozen.elapsed() < Duration::from_secs(2) {
        worst = worst.max(slowest(10, true));
        breaker.reset();
    }
    server.signal(libc::SIGCONT);
    assert!(worst < Duration::from_millis(200), "a call waited {worst:?} on a frozen Redis");
    assert_eq!(outages(&events), 2);
    eventually("the handle reconnects after SIGCONT", Duration::from_secs(5), || fleet.is_connected());
}

#[test]
fn a_value_that_is_not_a_word_is_repaired() {
    let server = Server::start(&[]);
    let fleet = host(&server);
    let events: Arc<Mutex<Vec<FleetEvent>>> = Arc::default();
    let log = Arc::clone(&events);
    fleet.on_event(move |e| log.lock().unwrap().push(e.clone()));
    let breaker = fleet.breaker("garbage", Config::default().failure_threshold(1)).unwrap();
    server.command(&["SET", &word_key("garbage"), "not a word"]);
    let _ = breaker.call(|| Err::<(), _>("down")); // the write finds the garbage, repairs, retries
    assert_eq!(breaker.state(), State::Open);
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, FleetEvent::Repaired { found, .. } if found == "not a word")));
    let stored = server.command(&["GET", &word_key("garbage")]);
    let redis::Value::BulkString(bytes) = stored else { panic!("{stored:?}") };
    assert_eq!(String::from_utf8(bytes).unwrap().parse::<u64>().unwrap(), breaker.snapshot().bits());
    // Garbage written while nobody writes is repaired by the refresh.
    server.command(&["SET", &word_key("garbage"), "{\"json\": true}"]);
    eventually("the refresh repairs it", Duration::from_secs(3), || {
        matches!(server.command(&["GET", &word_key("garbage")]), redis::Value::BulkString(b) if String::from_utf8_lossy(&b).parse::<u64>().is_ok())
    });
}

#[test]
fn a_wrong_password_or_missing_permission_is_a_clear_error() {
    let server = Server::start(&[]);
    server.command(&["ACL", "SETUSER", "reader", "on", ">pw", "~*", "+get", "+ping", "+mget"]);
    server.command(&["ACL", "SETUSER", "writer", "on", ">pw", "~circuit_breaker:*", "&*", "+@all"]);
    let port = server.port;
    let err = RedisFleet::open(RedisOptions::new(format!("redis://writer:nope@127.0.0.1:{port}/0"))).unwrap_err();
    assert!(matches!(err, RedisError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("redis://writer:***@127.0.0.1"), "the password is redacted: {err}");
    let err = RedisFleet::open(RedisOptions::new(format!("redis://reader:pw@127.0.0.1:{port}/0"))).unwrap_err();
    assert!(matches!(err, RedisError::Denied { .. }) && err.to_string().contains("EVALSHA"), "{err}");
    let fleet = RedisFleet::open(RedisOptions::new(format!("redis://writer:pw@127.0.0.1:{port}/0"))).unwrap();
    let breaker = fleet.breaker("acl", Config::default().failure_threshold(1)).unwrap();
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), State::Open);
    assert!(fleet.is_connected());
    for (bad, what) in [("http://x", "scheme"), ("redis://", "host")] {
        let err = RedisFleet::open(RedisOptions::new(bad)).unwrap_err();
        assert!(matches!(err, RedisError::Url { .. }), "{what}: {err}");
    }
    let err = RedisFleet::open(RedisOptions::new(server.url()).timeout(Duration::ZERO)).unwrap_err();
    assert_eq!(err.to_string(), "timeout must be between 1 ms and 10 s");
    let err = fleet.attach("", &Config::default()).unwrap_err();
    assert!(matches!(err, RedisError::BadName { len: 0 }));
}

#[test]
fn an_unreachable_redis_at_startup_is_an_outage_not_an_error() {
    let port = free_port();
    let fleet = RedisFleet::open(RedisOptions::new(format!("redis://127.0.0.1:{port}/0"))).unwrap();
    assert!(!fleet.is_connected());
    let breaker = fleet.breaker("offline", Config::default().failure_threshold(1)).unwrap();
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), State::Open, "works locally until Redis appears");
    assert_eq!(fleet.outages(), 1);
}

#[test]
fn configuration_differences_are_reported() {
    let server = Server::start(&[]);
    let patient = Config::default().failure_threshold(5);
    let eager = Config::default().failure_threshold(2);
    assert!(host(&server).attach("cfg", &patient).unwrap().config_mismatch().is_none());
    let second = host(&server).attach("cfg", &eager).unwrap();
    assert!(second.config_mismatch().unwrap().contains("failure_threshold=5"));
    assert!(host(&server).attach("cfg", &eager).unwrap().config_mismatch().is_none());
}

#[cfg(feature = "redis-tls")]
#[test]
fn rediss_urls_speak_tls() {
    /// Removes the certificate's directory however the test ends.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(std::env::temp_dir().join(format!("cb-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let tls_port = free_port();
    let server = Server::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    // A self-signed certificate: `#insecure` skips its verification (rustls).
    let fleet = RedisFleet::open(RedisOptions::new(format!("rediss://127.0.0.1:{tls_port}/0#insecure"))).unwrap();
    assert!(fleet.is_connected());
    let breaker = fleet.breaker("tls", Config::default().failure_threshold(1)).unwrap();
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(host(&server).breaker("tls", Config::default()).unwrap().state(), State::Open);
}

/// Every event a fleet handle reports, from now on.
fn recorded(fleet: &RedisFleet) -> Arc<Mutex<Vec<FleetEvent>>> {
    let events: Arc<Mutex<Vec<FleetEvent>>> = Arc::default();
    let log = Arc::clone(&events);
    fleet.on_event(move |e| log.lock().unwrap().push(e.clone()));
    events
}

fn repaired(events: &Mutex<Vec<FleetEvent>>, breaker: &str) -> bool {
    events.lock().unwrap().iter().any(|e| matches!(e, FleetEvent::Repaired { name, .. } if name == breaker))
}

/// Whether the key holds a string that is a breaker word.
fn holds_a_word(server: &Server, key: &str) -> bool {
    let mut c = server.connection();
    let kind: String = redis::cmd("TYPE").arg(key).query(&mut c).unwrap();
    let len: u64 = redis::cmd("STRLEN").arg(key).query(&mut c).unwrap_or(u64::MAX);
    kind == "string" && len <= 20 && {
        let text: String = redis::cmd("GET").arg(key).query(&mut c).unwrap();
        text.parse::<u64>().is_ok()
    }
}

#[test]
fn published_words_are_hints_never_state() {
    let server = Server::start(&[]);
    let (a, b) = (host(&server), host(&server));
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(600));
    let on_a = a.breaker("hint", config).unwrap();
    let on_b = b.breaker("hint", config).unwrap();
    let forging = AtomicBool::new(true);
    /// Stops the forger however the scope ends (a failed assertion included).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    thread::scope(|s| {
        let _stop = Stop(&forging);
        // A client that may PUBLISH but not write the keys floods the breaker's channel with the
        // words that would reject every call (FORCED_OPEN) or admit every call (DISABLED).
        s.spawn(|| {
            let mut c = server.connection();
            let forged = [Snapshot::forced_open(7).bits(), Snapshot::disabled(7).bits()];
            while forging.load(Ordering::Relaxed) {
                for word in forged {
                    let _: i64 = redis::cmd("PUBLISH").arg(word_key("hint")).arg(word.to_string()).query(&mut c).unwrap();
                }
            }
        });
        // Redis holds CLOSED: no call is rejected.
        let until = Instant::now() + Duration::from_millis(800);
        let (mut calls, mut rejected) = (0, 0);
        while Instant::now() < until {
            calls += 1;
            if on_a.call(|| Ok::<(), &str>(())).is_err() {
                rejected += 1;
            }
        }
        assert_eq!(rejected, 0, "{rejected} of {calls} calls rejected by forged words while Redis held CLOSED");
        // A real trip on another host still reaches this one quickly, flood or not.
        let _ = on_b.call(|| Err::<(), _>("down"));
        let tripped = Instant::now();
        eventually("host A sees the real trip", Duration::from_millis(500), || on_a.admit().is_err());
        let seen_after = tripped.elapsed();
        // Redis holds OPEN: no call is admitted.
        let until = Instant::now() + Duration::from_millis(800);
        let mut admitted = 0;
        while Instant::now() < until {
            if !matches!(on_a.call(|| Err::<(), _>("down")), Err(e) if e.is_rejected()) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 0, "calls admitted by forged words while Redis held OPEN");
        assert!(seen_after < Duration::from_millis(200), "the trip took {seen_after:?} to propagate");
    });
    assert!(a.is_connected() && b.is_connected());
}

#[test]
fn no_name_makes_one_key_collide_with_another() {
    let server = Server::start(&[]);
    let config = Config::default().failure_threshold(2);
    let forced = host(&server).breaker("svc:config", config).unwrap();
    forced.force_open();
    // `svc`'s configuration record must not land on the word of `svc:config`.
    let svc = host(&server).attach("svc", &config).unwrap();
    assert_eq!(svc.config_mismatch(), None, "a false mismatch: another breaker's word read as a configuration");
    assert_eq!(host(&server).breaker("svc:config", config).unwrap().state(), State::ForcedOpen, "the forced state is kept");
    assert_eq!(host(&server).breaker("svc", config).unwrap().state(), State::Closed);
    assert!(holds_a_word(&server, &word_key("svc:config")));
    assert!(matches!(server.command(&["GET", &config_key("svc")]), redis::Value::BulkString(b) if String::from_utf8_lossy(&b).contains("failure_threshold=2")));
}

#[test]
fn a_key_of_another_type_harms_only_its_breaker_and_is_repaired() {
    let server = Server::start(&[]);
    let fleet = host(&server);
    let events = recorded(&fleet);
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(600));
    let a = fleet.breaker("a", config).unwrap();
    let b = fleet.breaker("b", config.failure_threshold(1_000)).unwrap();
    for poison in [&["RPUSH", "LIST", "x", "y"][..], &["HSET", "HASH", "field", "value"][..]] {
        events.lock().unwrap().clear();
        server.command(&["DEL", &word_key("a")]);
        let mut command = vec![poison[0].to_string(), word_key("a")];
        command.extend(poison[2..].iter().map(|s| s.to_string()));
        server.command(&command.iter().map(String::as_str).collect::<Vec<_>>());
        // `b` keeps writing through Redis while the refresh meets `a`'s key.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let _ = b.call(|| Err::<(), _>("down"));
            let _ = b.call(|| Ok::<(), &str>(()));
        }
        assert!(fleet.is_connected(), "{}: one bad key took the whole handle local", poison[1]);
        assert_eq!(fleet.outages(), 0, "{}: reported as an outage", poison[1]);
        // `a`'s next write meets the key (if the refresh has not repaired it yet) and repairs it.
        let _ = a.call(|| Err::<(), _>("down"));
        assert_eq!(a.state(), State::Open, "{}", poison[1]);
        assert!(fleet.is_connected() && fleet.outages() == 0, "{}", poison[1]);
        assert!(holds_a_word(&server, &word_key("a")), "{}: not repaired", poison[1]);
        assert!(repaired(&events, "a"), "{}: no Repaired event naming `a`: {:?}", poison[1], events.lock().unwrap());
        assert_eq!(host(&server).breaker("a", config).unwrap().state(), State::Open, "{}: the repaired word is shared", poison[1]);
        a.reset();
    }
}

#[test]
fn a_huge_value_never_stretches_a_call_past_the_deadline() {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let server = Server::start(&[]);
    let fleet = RedisFleet::open(RedisOptions::new(server.url()).timeout(TIMEOUT).refresh(Duration::from_millis(200))).unwrap();
    let events = recorded(&fleet);
    let config = Config::default().failure_threshold(1_000);
    let big = fleet.breaker("big", config).unwrap();
    let huge = vec![b'7'; 50 << 20];
    let mut c = server.connection();
    let _: () = redis::cmd("SET").arg(word_key("big")).arg(&huge).query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg(config_key("late")).arg(&huge).query(&mut c).unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let _ = big.call(|| if i % 2 == 0 { Err("down") } else { Ok(()) });
        worst = worst.max(started.elapsed());
    }
    let started = Instant::now();
    let late = fleet.attach("late", &config).unwrap();
    let attach_took = started.elapsed();
    assert!(worst < TIMEOUT + Duration::from_millis(30), "a call took {worst:?} against a {TIMEOUT:?} timeout");
    assert!(attach_took < TIMEOUT + Duration::from_millis(30), "attaching took {attach_took:?}");
    assert!(late.config_mismatch().is_some_and(|theirs| theirs.len() <= 1024), "the configuration read is bounded");
    eventually("the huge word is repaired", Duration::from_secs(3), || holds_a_word(&server, &word_key("big")));
    assert!(repaired(&events, "big"), "{:?}", events.lock().unwrap());
    assert_eq!(fleet.outages(), 0, "{:?}", events.lock().unwrap());
}

#[test]
fn a_user_who_may_not_subscribe_or_publish_is_refused_at_open() {
    let server = Server::start(&[]);
    server.command(&["ACL", "SETUSER", "deaf", "on", ">pw", "~*", "&*", "+@all", "-@pubsub"]);
    let url = format!("redis://deaf:pw@127.0.0.1:{}/0", server.port);
    let err = RedisFleet::open(RedisOptions::new(url)).unwrap_err();
    assert!(matches!(err, RedisError::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("PSUBSCRIBE"), "{err}");
    // A user whose writes would fail (its scripts may not PUBLISH) is refused too, rather than
    // going local at its first write.
    server.command(&["ACL", "SETUSER", "mute", "on", ">pw", "~*", "&*", "+@all", "-publish"]);
    let url = format!("redis://mute:pw@127.0.0.1:{}/0", server.port);
    let err = RedisFleet::open(RedisOptions::new(url)).unwrap_err();
    assert!(matches!(err, RedisError::Denied { .. }), "{err:?}");
}

#[test]
fn a_database_that_does_not_exist_is_an_error_at_open() {
    let server = Server::start(&[]);
    let url = format!("redis://127.0.0.1:{}/99", server.port);
    let err = RedisFleet::open(RedisOptions::new(url)).unwrap_err();
    assert!(matches!(err, RedisError::Url { .. }), "{err:?}");
    assert!(err.to_string().contains("DB index"), "{err}");
}

#[test]
fn a_password_required_after_an_outage_is_reported_as_denied_once() {
    let port = free_port();
    let fleet = RedisFleet::open(RedisOptions::new(format!("redis://127.0.0.1:{port}/0")).refresh(Duration::from_millis(50))).unwrap();
    let events = recorded(&fleet);
    let breaker = fleet.breaker("locked", Config::default().failure_threshold(1)).unwrap();
    assert!(!fleet.is_connected());
    let _server = Server::start_on(port, &["--requirepass", "s3cret"]);
    let denied = |events: &Mutex<Vec<FleetEvent>>| events.lock().unwrap().iter().filter(|e| matches!(e, FleetEvent::Denied { .. })).count();
    eventually("the refusal is reported", Duration::from_secs(5), || denied(&events) > 0);
    thread::sleep(Duration::from_secs(2));
    let seen = events.lock().unwrap().clone();
    assert_eq!(denied(&events), 1, "reported once: {seen:?}");
    assert!(!seen.iter().any(|e| matches!(e, FleetEvent::Outage { .. } | FleetEvent::Recovered { .. })), "no flapping outages: {seen:?}");
    assert!(format!("{seen:?}").contains("NOAUTH"), "names what is wrong: {seen:?}");
    assert!(!fleet.is_connected());
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), State::Open, "still works on its own");
}

/// A small deterministic generator for the hostile client's choices.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A payload or value a hostile client might send: a word of any state, digits that are
    /// not one, random bytes, nothing, or something large.
    fn garbage(&mut self) -> Vec<u8> {
        match self.next() % 6 {
            0 => self.next().to_string().into_bytes(),
            1 => [Snapshot::forced_open(1), Snapshot::disabled(1), Snapshot::closed(1, 0), Snapshot::open(1, 1)][(self.next() % 4) as usize]
                .bits()
                .to_string()
                .into_bytes(),
            2 => b"99999999999999999999999".to_vec(),
            3 => Vec::new(),
            4 => vec![b'9'; 1 << 20],
            _ => {
                let len = (self.next() % 100) as usize;
                self.bytes(len)
            }
        }
    }
}

#[test]
fn hostile_clients_never_slow_a_call_or_break_the_probe_limit() {
    const TIMEOUT: Duration = Duration::from_millis(50);
    const LIMIT: u64 = 2;
    let server = Server::start(&[]);
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO).half_open_max_calls(LIMIT);
    let options = || RedisOptions::new(server.url()).timeout(TIMEOUT).refresh(Duration::from_millis(50));
    let fleets: Vec<RedisFleet> = (0..3).map(|_| RedisFleet::open(options()).unwrap()).collect();
    let hosts: Vec<_> = fleets.iter().map(|f| f.breaker("fuzz", config).unwrap()).collect();
    let _ = hosts[0].call(|| Err::<(), _>("down"));
    // Phase 1: a client that may only PUBLISH sends anything on every channel; phase 2: a client
    // that may write the keys stores anything under them, of any type and size.
    for may_write in [false, true] {
        let hostile = AtomicBool::new(true);
        let (running, peak, probes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let worst = Mutex::new(Duration::ZERO);
        thread::scope(|s| {
            s.spawn(|| {
                let mut c = server.connection();
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
                let keys = [word_key("fuzz"), config_key("fuzz"), word_key("other")];
                while hostile.load(Ordering::Relaxed) {
                    let key = &keys[(rng.next() % 3) as usize];
                    let value = rng.garbage();
                    let mut command = match (may_write, rng.next() % 4) {
                        (false, _) => redis::cmd("PUBLISH"),
                        (true, 0) => redis::cmd("RPUSH"),
                        (true, 1) => redis::cmd("DEL"),
                        (true, _) => redis::cmd("SET"),
                    };
                    command.arg(key);
                    if !may_write || rng.next() % 4 != 1 {
                        command.arg(&value);
                    }
                    // A wrong type for the command is Redis's answer to us, not a failure.
                    let _ = command.query::<redis::Value>(&mut c);
                    thread::sleep(Duration::from_micros(200));
                }
            });
            for breaker in &hosts {
                let (running, peak, probes, worst, hostile) = (&running, &peak, &probes, &worst, &hostile);
                s.spawn(move || {
                    let until = Instant::now() + Duration::from_millis(1500);
                    while Instant::now() < until {
                        let started = Instant::now();
                        if let Ok(permit) = breaker.admit() {
                            if permit.is_probe() {
                                probes.fetch_add(1, Ordering::SeqCst);
                                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                thread::sleep(Duration::from_millis(1));
                                running.fetch_sub(1, Ordering::SeqCst);
                            }
                            // Stays HALF_OPEN: every probe races for a freed slot (a failure
                            // would start a new generation, whose probes may overlap these).
                            permit.ignore();
                        }
                        let took = started.elapsed();
                        let mut worst = worst.lock().unwrap();
                        *worst = (*worst).max(took);
                    }
                    hostile.store(false, Ordering::Relaxed);
                });
            }
        });
        let worst = *worst.lock().unwrap();
        assert!(worst < TIMEOUT + Duration::from_millis(40), "may_write={may_write}: a call took {worst:?}");
        // (A writer may store FORCED_OPEN or DISABLED: then there is nothing to probe.)
        if !may_write {
            assert!(probes.load(Ordering::SeqCst) > 10, "the breaker kept probing");
            assert!(peak.load(Ordering::SeqCst) <= LIMIT, "forged messages let {} probes run at once", peak.load(Ordering::SeqCst));
            assert!(fleets.iter().all(RedisFleet::is_connected));
        }
    }
    // Once the writer stops, the key holds a word again and every host follows it.
    eventually("every host is connected again", Duration::from_secs(5), || fleets.iter().all(RedisFleet::is_connected));
    hosts[0].force_open();
    eventually("the key holds a word", Duration::from_secs(3), || holds_a_word(&server, &word_key("fuzz")));
    eventually("every host follows the fleet's word", Duration::from_secs(3), || hosts.iter().all(|b| b.state() == State::ForcedOpen));
}
