//! Breakers shared through a real `redis-server`, which these tests start on free loopback
//! ports in temporary directories (and stop, kill, freeze and restart). Several fleet handles in
//! one process stand for several hosts: each has its own mirrors and connections.
#![cfg(all(unix, feature = "redis"))]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cb_core::{
    CircuitBreaker, Config, Counters, FleetEvent, RedisError, RedisFleet, RedisOptions, RedisWord, State, Transition,
    WallClock,
};

/// A `redis-server` of the test's own, killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("cb-redis-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server { child: None, port: free_port(), dir, extra: extra.iter().map(|s| s.to_string()).collect() };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return;
                    }
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Killed and started again on the same port, empty.
    fn restart_empty(&mut self) {
        self.kill();
        self.launch();
    }

    fn command(&self, args: &[&str]) -> redis::Value {
        let mut c = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    assert_eq!(outages(&events), 1);
    // The local breaker still trips on this host's failures.
    let _ = breaker.call(|| Err::<(), _>("down"));
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), State::Open);
    // Restarted empty: the host resyncs and re-seeds Redis with its word.
    server.restart_empty();
    eventually("the handle reconnects", Duration::from_secs(5), || fleet.is_connected());
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, FleetEvent::Recovered { .. })));
    let seeded = server.command(&["GET", "circuit_breaker:faults"]);
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
    server.command(&["SET", "circuit_breaker:garbage", "not a word"]);
    let _ = breaker.call(|| Err::<(), _>("down")); // the write finds the garbage, repairs, retries
    assert_eq!(breaker.state(), State::Open);
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, FleetEvent::Repaired { found, .. } if found == "not a word")));
    let stored = server.command(&["GET", "circuit_breaker:garbage"]);
    let redis::Value::BulkString(bytes) = stored else { panic!("{stored:?}") };
    assert_eq!(String::from_utf8(bytes).unwrap().parse::<u64>().unwrap(), breaker.snapshot().bits());
    // Garbage written while nobody writes is repaired by the refresh.
    server.command(&["SET", "circuit_breaker:garbage", "{\"json\": true}"]);
    eventually("the refresh repairs it", Duration::from_secs(3), || {
        matches!(server.command(&["GET", "circuit_breaker:garbage"]), redis::Value::BulkString(b) if String::from_utf8_lossy(&b).parse::<u64>().is_ok())
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
