//! The shared-memory store with real processes: children of this test binary (re-run with
//! `CB_SHM_ROLE` set, entering through `child_entry`) hammer one slot, trip it, probe it and are
//! killed; and every way a region file can be foreign, insecure, stale or corrupt.
#![cfg(all(unix, feature = "shared-memory"))]

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cb_core::{
    CachedClock, CircuitBreaker, Clock, Config, Outcome, RegionError, RegionOptions, SharedRegion, State,
    Transition,
};

/// A fresh directory for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cb-shm-{tag}-{}-{}", std::process::id(), nanos()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

fn open(path: &Path) -> SharedRegion {
    SharedRegion::open(&RegionOptions::new().path(path)).unwrap()
}

/// Atomics that several processes can update: a small mapped file.
struct Scratch {
    map: memmap2::MmapRaw,
}

impl Scratch {
    fn new(path: &Path) -> Self {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
        file.set_len(4096).unwrap();
        Scratch { map: memmap2::MmapRaw::map_raw(&file).unwrap() }
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < 512);
        // SAFETY: the mapping is 4096 bytes, page-aligned, so every 8-byte slot is in bounds and
        // aligned; other processes only touch it atomically.
        unsafe { &*self.map.as_mut_ptr().cast::<AtomicU64>().add(i) }
    }
}

fn spawn_child(role: &str, env: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads", "1"])
        .env("CB_SHM_ROLE", role)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The `RESULT <value>` markers a child printed, once it has exited successfully (libtest may
/// print its own `test child_entry ... ` before them on the same line).
fn results(child: Child) -> Vec<u64> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, v)| v))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn n_env(name: &str) -> u64 {
    env(name).parse().unwrap()
}

fn config_from_env() -> Config {
    let n = n_env;
    Config::default()
        .failure_threshold(n("CB_THRESHOLD"))
        .recovery_timeout(Duration::from_millis(n("CB_RECOVERY_MS")))
        .half_open_max_calls(n("CB_MAX_CALLS"))
        .probe_timeout(Duration::from_millis(n("CB_PROBE_MS")))
}

/// The children's `main`: does nothing unless this binary was started by `spawn_child`.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("CB_SHM_ROLE") else { return };
    let region = open(Path::new(&env("CB_REGION")));
    let threads: usize = env("CB_THREADS").parse().unwrap();
    let calls: u64 = env("CB_CALLS").parse().unwrap();
    let go = PathBuf::from(env("CB_GO"));
    match role.as_str() {
        // Failures only, never reaching the threshold: the word itself counts them, so a lost
        // update anywhere shows.
        "fail" => {
            let breaker = Arc::new(region.breaker("failing", config_from_env()).unwrap());
            wait_for(&go);
            run_threads(threads, |_| {
                for _ in 0..calls {
                    let _ = breaker.call(|| Err::<(), _>(()));
                }
            });
        }
        // Alternating successes and failures below the threshold: counts only.
        "count" => {
            let breaker = Arc::new(region.breaker("counted", config_from_env()).unwrap());
            wait_for(&go);
            run_threads(threads, |_| {
                for i in 0..calls {
                    let _ = breaker.call(|| if i % 2 == 0 { Ok(()) } else { Err(()) });
                }
            });
        }
        // Everyone fails at once: report how many OPEN transitions this process announced.
        "trip" => {
            let opened = Arc::new(AtomicU64::new(0));
            let seen = Arc::clone(&opened);
            let slot = region.attach("tripped", &config_from_env()).unwrap();
            let breaker = Arc::new(
                CircuitBreaker::with_store(config_from_env(), cb_core::DefaultClock::default(), slot.counters(), slot.word())
                    .unwrap()
                    .on_transition(move |t: &Transition| {
                        if t.to == State::Open {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }),
            );
            wait_for(&go);
            run_threads(threads, |_| {
                for _ in 0..calls {
                    let _ = breaker.call(|| Err::<(), _>(()));
                }
            });
            println!("RESULT {}", opened.load(Ordering::Relaxed));
        }
        // HALF_OPEN for good (probes report Ignored): every thread runs `calls` probes, racing
        // the others for each freed slot, and the scratch file tracks how many run at once.
        "probe" => {
            let scratch = Scratch::new(Path::new(&env("CB_SCRATCH")));
            let breaker = Arc::new(region.breaker("probed", config_from_env()).unwrap());
            wait_for(&go);
            let admitted = AtomicU64::new(0);
            let deadline = Instant::now() + Duration::from_secs(60);
            run_threads(threads, |_| {
                let mut mine = 0;
                while mine < calls && Instant::now() < deadline {
                    let Ok(permit) = breaker.admit() else { continue };
                    mine += 1;
                    assert!(permit.is_probe());
                    admitted.fetch_add(1, Ordering::Relaxed);
                    let running = scratch.at(0).fetch_add(1, Ordering::SeqCst) + 1;
                    scratch.at(1).fetch_max(running, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(50));
                    scratch.at(0).fetch_sub(1, Ordering::SeqCst);
                    permit.ignore();
                }
            });
            println!("RESULT {}", admitted.load(Ordering::Relaxed));
        }
        // Take the one probe slot and hang until killed.
        "hold-probe" => {
            let breaker = region.breaker("held", config_from_env()).unwrap();
            let permit = breaker.admit().expect("the probe slot is free");
            assert!(permit.is_probe());
            println!("PROBING");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
            drop(permit);
        }
        // Attach, say so, wait while the parent cuts the file short, then keep calling: no
        // SIGBUS ends us; the region reports itself lost and the breaker goes on privately.
        "survive-truncation" => {
            let breaker = region.breaker("cut", config_from_env()).unwrap();
            breaker.force_open();
            println!("ATTACHED");
            std::io::stdout().flush().unwrap();
            wait_for(&go);
            assert!(!region.is_lost(), "nothing has touched the mapping since the cut");
            let mut admitted = 0;
            for _ in 0..calls {
                if breaker.call(|| Ok::<_, ()>(())).is_ok() {
                    admitted += 1;
                }
            }
            assert!(region.is_lost() && region.is_replaced());
            assert_eq!(breaker.metrics().totals().successes, calls, "counted on the private copy");
            // The private copy is a working breaker: it trips on this process's failures alone.
            for _ in 0..n_env("CB_THRESHOLD") {
                let _ = breaker.call(|| Err::<(), _>(()));
            }
            assert_eq!(breaker.state(), State::Open);
            assert!(region.attach("another", &config_from_env()).is_ok(), "the private copy takes new names too");
            println!("RESULT {admitted}");
        }
        // A SIGBUS that is not in a region still ends the process, with SIGBUS.
        "foreign-sigbus" => {
            let _breaker = region.breaker("bystander", config_from_env()).unwrap();
            let path = PathBuf::from(env("CB_SCRATCH"));
            let scratch = Scratch::new(&path);
            OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
            println!("TOUCHING");
            std::io::stdout().flush().unwrap();
            scratch.at(0).fetch_add(1, Ordering::SeqCst);
            println!("SURVIVED");
        }
        // Calls in flight under a host-wide limit of 8: every thread takes and gives back
        // places; the scratch file tracks how many run at once across processes.
        "in-flight" => {
            let scratch = Scratch::new(Path::new(&env("CB_SCRATCH")));
            let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
            wait_for(&go);
            let admitted = AtomicU64::new(0);
            run_threads(threads, |_| hammer_limit(&limit, &scratch, calls, &admitted));
            println!("RESULT {}", admitted.load(Ordering::Relaxed));
        }
        // Take `calls` places and hold them until killed.
        "hold-places" => {
            let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
            for _ in 0..calls {
                assert!(limit.try_enter(LIMIT), "room for the child's places");
            }
            say("HOLDING");
            std::thread::sleep(Duration::from_secs(600));
        }
        // Take `calls` places, then fork a child that never touches the limit and sleeps (it
        // inherits our descriptors); hold them until killed.
        "hold-and-fork" => {
            let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
            for _ in 0..calls {
                assert!(limit.try_enter(LIMIT), "room for the child's places");
            }
            // SAFETY: the child only sleeps and leaves with _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::thread::sleep(Duration::from_secs(600));
                // SAFETY: ends the forked child without the harness.
                unsafe { libc::_exit(0) };
            }
            say(&format!("FORKED {pid}"));
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown role {other}"),
    }
}

fn run_threads(threads: usize, work: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let work = &work;
            s.spawn(move || work(t));
        }
    });
}

struct Fleet {
    dir: TempDir,
    region: PathBuf,
    go: PathBuf,
}

impl Fleet {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let region = dir.path("region");
        let go = dir.path("go");
        Fleet { dir, region, go }
    }

    fn spawn(&self, role: &str, processes: usize, threads: usize, calls: u64, config: [(&str, u64); 4]) -> Vec<Child> {
        let mut env = vec![
            ("CB_REGION", self.region.display().to_string()),
            ("CB_GO", self.go.display().to_string()),
            ("CB_SCRATCH", self.dir.path("scratch").display().to_string()),
            ("CB_THREADS", threads.to_string()),
            ("CB_CALLS", calls.to_string()),
        ];
        env.extend(config.iter().map(|(k, v)| (*k, v.to_string())));
        (0..processes).map(|_| spawn_child(role, &env)).collect()
    }

    fn go(&self) {
        fs::write(&self.go, b"go").unwrap();
    }
}

fn config_env(threshold: u64, recovery_ms: u64, max_calls: u64, probe_ms: u64) -> [(&'static str, u64); 4] {
    [("CB_THRESHOLD", threshold), ("CB_RECOVERY_MS", recovery_ms), ("CB_MAX_CALLS", max_calls), ("CB_PROBE_MS", probe_ms)]
}

#[test]
fn processes_hammering_one_slot_keep_exact_counts() {
    let fleet = Fleet::new("count");
    let (processes, threads, calls) = (4, 2, 20_000u64);
    let children = fleet.spawn("count", processes, threads, calls, config_env(u64::from(u32::MAX), 60_000, 1, 60_000));
    fleet.go();
    children.into_iter().for_each(|c| drop(results(c)));
    let region = open(&fleet.region);
    let breaker = region.breaker("counted", Config::default()).unwrap();
    let totals = breaker.metrics().totals();
    let each = processes as u64 * threads as u64 * calls / 2;
    assert_eq!((totals.successes, totals.failures, totals.rejections), (each, each, 0));
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn concurrent_failures_across_processes_lose_no_update_of_the_word() {
    let fleet = Fleet::new("fail");
    let (processes, threads, calls) = (4, 2, 20_000u64);
    let children = fleet.spawn("fail", processes, threads, calls, config_env(u64::from(u32::MAX), 60_000, 1, 60_000));
    fleet.go();
    children.into_iter().for_each(|c| drop(results(c)));
    let breaker = open(&fleet.region).breaker("failing", Config::default()).unwrap();
    let all = processes as u64 * threads as u64 * calls;
    assert_eq!(breaker.snapshot().failures(), all, "consecutive failures counted in the shared word");
    assert_eq!(breaker.metrics().totals().failures, all);
}

#[test]
fn concurrent_failures_across_processes_open_exactly_once() {
    for round in 0..3 {
        let fleet = Fleet::new(&format!("trip{round}"));
        let (processes, threads, calls) = (4, 2, 200u64);
        let children = fleet.spawn("trip", processes, threads, calls, config_env(50, 600_000, 1, 60_000));
        fleet.go();
        let opened: u64 = children.into_iter().map(|c| results(c).iter().sum::<u64>()).sum();
        assert_eq!(opened, 1, "OPEN announced {opened} times across processes");
        let breaker = open(&fleet.region).breaker("tripped", Config::default().failure_threshold(50)).unwrap();
        let totals = breaker.metrics().totals();
        assert_eq!(totals.opened, 1);
        assert_eq!(totals.failures + totals.rejections, processes as u64 * threads as u64 * calls);
        assert!(totals.failures >= 50);
        assert_eq!(breaker.state(), State::Open);
    }
}

#[test]
fn half_open_probe_limit_is_exact_across_processes() {
    const MAX_CALLS: u64 = 3;
    let fleet = Fleet::new("probe");
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::ZERO).half_open_max_calls(MAX_CALLS);
    // Trip it before the children start: with a zero recovery timeout it is HALF_OPEN at once.
    let region = open(&fleet.region);
    let breaker = region.breaker("probed", config).unwrap();
    breaker.admit().unwrap().failure();
    let scratch = Scratch::new(&fleet.dir.path("scratch"));
    let (processes, threads, probes) = (4, 2, 300);
    let children = fleet.spawn("probe", processes, threads, probes, config_env(1, 0, MAX_CALLS, 60_000));
    fleet.go();
    let admitted: u64 = children.into_iter().map(|c| results(c).iter().sum::<u64>()).sum();
    let peak = scratch.at(1).load(Ordering::SeqCst);
    assert_eq!(peak, MAX_CALLS, "at most {MAX_CALLS} probes may run at once; {admitted} admitted in all");
    assert_eq!(admitted, processes as u64 * threads as u64 * probes, "every thread ran its probes");
    assert_eq!(breaker.snapshot().in_flight(), 0);
}

#[test]
fn a_killed_prober_frees_its_slot_after_the_probe_timeout() {
    let fleet = Fleet::new("kill");
    let probe_ms = 1_000;
    let config = Config::default()
        .failure_threshold(1)
        .recovery_timeout(Duration::ZERO)
        .probe_timeout(Duration::from_millis(probe_ms));
    let region = open(&fleet.region);
    let breaker = region.breaker("held", config).unwrap();
    breaker.admit().unwrap().failure();
    let mut child = fleet.spawn("hold-probe", 1, 1, 1, config_env(1, 0, 1, probe_ms)).pop().unwrap();
    wait_line(&mut child, "PROBING");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(breaker.admit().unwrap_err().state(), State::HalfOpen, "the dead child's probe holds the slot");
    let admitted = loop {
        if let Ok(permit) = breaker.admit() {
            break permit;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "the slot was never recovered");
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = killed.elapsed();
    assert!(admitted.is_probe());
    // Never early; checked in 1.024 s units, so up to about two units late.
    assert!(waited >= Duration::from_millis(probe_ms) - Duration::from_millis(50), "recovered after only {waited:?}");
    assert!(waited < Duration::from_millis(probe_ms + 3_000), "recovered only after {waited:?}");
    assert_eq!(admitted.record(Outcome::Success).unwrap().to, State::Closed);
}

#[test]
fn a_forked_child_shares_the_breaker_and_its_cached_clock_keeps_ticking() {
    let dir = TempDir::new("fork");
    let region = open(&dir.path("region"));
    let clock = CachedClock::start(Duration::from_millis(1));
    let slot = region.attach("forked", &Config::default().failure_threshold(1)).unwrap();
    let breaker = CircuitBreaker::with_store(Config::default().failure_threshold(1), clock.clone(), slot.counters(), slot.word()).unwrap();
    // SAFETY: the child only runs Rust code that is fine after fork (the allocator and thread
    // creation work in a forked child with glibc) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let before = clock.now();
        std::thread::sleep(Duration::from_millis(50));
        let moved = clock.now() > before + 20;
        std::thread::sleep(Duration::from_millis(20));
        let still_moving = clock.now() > before + 50;
        let _ = breaker.call(|| Err::<(), _>(()));
        let code = if moved && still_moving && breaker.state() == State::Open { 0 } else { 1 };
        // SAFETY: ends the child without running the parent's test harness teardown.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child's clock froze or its failure was not shared: {status}");
    assert_eq!(breaker.state(), State::Open, "the child's failure opened the parent's breaker");
}

// ----- one process: the region file -----

#[test]
fn attaching_never_resets_and_every_mapping_sees_one_state() {
    let dir = TempDir::new("attach");
    let config = Config::default().failure_threshold(2).recovery_timeout(Duration::from_secs(600));
    let a = open(&dir.path("region")).breaker("quotes", config).unwrap();
    let _ = a.call(|| Err::<(), _>(()));
    let _ = a.call(|| Err::<(), _>(()));
    assert_eq!(a.state(), State::Open);
    let b = open(&dir.path("region")).breaker("quotes", config).unwrap();
    assert_eq!(b.state(), State::Open, "attaching must not reset the word");
    assert_eq!(b.metrics().totals().failures, 2);
    assert!(b.admit().is_err());
    b.reset();
    assert_eq!(a.state(), State::Closed, "a reset anywhere closes it everywhere");
    b.force_open();
    assert_eq!(a.admit().unwrap_err().state(), State::ForcedOpen);
    let other = open(&dir.path("region")).breaker("other", config).unwrap();
    assert_eq!(other.state(), State::Closed, "names have slots of their own");
    assert_eq!(open(&dir.path("region")).names().unwrap().len(), 2);
    let elsewhere = open(&dir.path("elsewhere")).breaker("quotes", config).unwrap();
    assert_eq!(elsewhere.state(), State::Closed, "another file is another region");
}

#[test]
fn a_new_region_is_private_to_its_user_unless_a_mode_is_given() {
    let dir = TempDir::new("mode");
    open(&dir.path("private"));
    assert_eq!(fs::metadata(dir.path("private")).unwrap().permissions().mode() & 0o777, 0o600);
    SharedRegion::open(&RegionOptions::new().path(dir.path("group")).mode(0o660)).unwrap();
    assert_eq!(fs::metadata(dir.path("group")).unwrap().permissions().mode() & 0o777, 0o660);
    for mode in [0o400, 0o1600, 0o200] {
        let err = SharedRegion::open(&RegionOptions::new().path(dir.path("bad")).mode(mode)).unwrap_err();
        assert!(matches!(err, RegionError::BadOption { option: "mode", .. }), "{err}");
    }
    for capacity in [0, cb_core::shared::MAX_CAPACITY + 1] {
        let err = SharedRegion::open(&RegionOptions::new().path(dir.path("bad")).capacity(capacity)).unwrap_err();
        assert!(err.to_string().starts_with("capacity must be in 1..="), "{err}");
    }
    assert!(!dir.path("bad").exists());
}

#[test]
fn foreign_and_insecure_files_are_refused_and_left_alone() {
    let dir = TempDir::new("foreign");
    let path = dir.path("notes.txt");
    fs::write(&path, b"my precious notes").unwrap();
    let err = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_err();
    assert!(matches!(err, RegionError::NotARegion { .. }), "{err}");
    assert!(err.to_string().contains("not a circuit breaker region"));
    assert_eq!(fs::read(&path).unwrap(), b"my precious notes");

    let real = dir.path("real");
    open(&real);
    let link = dir.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = SharedRegion::open(&RegionOptions::new().path(&link)).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");

    fs::set_permissions(&real, fs::Permissions::from_mode(0o666)).unwrap();
    let err = SharedRegion::open(&RegionOptions::new().path(&real)).unwrap_err();
    assert!(matches!(err, RegionError::Insecure { .. }) && err.to_string().contains("writable by every user"), "{err}");
    SharedRegion::open(&RegionOptions::new().path(&real).allow_foreign(true)).expect("allowed explicitly");

    let dir_path = dir.path("a-directory");
    fs::create_dir(&dir_path).unwrap();
    assert!(SharedRegion::open(&RegionOptions::new().path(&dir_path)).is_err());

    // A FIFO nobody writes to: refused at once, not waited on.
    let fifo = dir.path("fifo");
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let err = SharedRegion::open(&RegionOptions::new().path(&fifo)).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// Whether this process may give files away (root; CI runs as root); says why a test stops if not.
fn can_give_files_away() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("needs root to give a file to another user; CI runs as root");
    }
    root
}

/// Gives `path` to uid/gid 65534 (nobody), as if another local user had made it.
fn give_to_nobody(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chown of a file the test made, through a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c_path.as_ptr(), 65_534, 65_534) }, 0);
}

#[test]
fn a_region_owned_by_another_user_is_refused() {
    if !can_give_files_away() {
        return;
    }
    let dir = TempDir::new("owner");
    let path = dir.path("region");
    open(&path);
    give_to_nobody(&path);
    let err = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    SharedRegion::open(&RegionOptions::new().path(&path).allow_foreign(true)).expect("allowed explicitly");
}

/// Offsets of header fields this test rewrites (see `HeaderFields` in core/src/shared.rs).
const VERSION_AT: u64 = 8;
const BOOT_ID_AT: u64 = 32;
const CHECKSUM_AT: u64 = 96;
const READY_AT: u64 = 104;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Rewrites bytes of the header; `fix_checksum` recomputes the checksum as a writer would.
fn patch(path: &Path, at: u64, bytes: &[u8], fix_checksum: bool) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    file.write_at(bytes, at).unwrap();
    if fix_checksum {
        let mut fields = [0u8; CHECKSUM_AT as usize];
        file.read_exact_at(&mut fields, 0).unwrap();
        file.write_at(&fnv1a(&[&fields[..], &[0u8; 8]].concat()).to_ne_bytes(), CHECKSUM_AT).unwrap();
    }
}

#[test]
fn stale_regions_of_ours_are_replaced_with_a_reason() {
    let cases: [(&str, Spoil, &str); 7] = [
        ("version", |p| patch(p, VERSION_AT, &99u32.to_ne_bytes(), true), "layout version 99"),
        ("reboot", |p| patch(p, BOOT_ID_AT, b"00000000-0000-0000-0000-000000000000", true), "before the last reboot"),
        ("checksum", |p| patch(p, BOOT_ID_AT, b"x", false), "checksum"),
        ("unfinished", |p| patch(p, READY_AT, &0u32.to_ne_bytes(), false), "never finished"),
        ("truncated", |p| OpenOptions::new().write(true).open(p).unwrap().set_len(5_000).unwrap(), "5000 bytes"),
        ("short", |p| OpenOptions::new().write(true).open(p).unwrap().set_len(40).unwrap(), "truncated"),
        ("empty", |p| OpenOptions::new().write(true).open(p).unwrap().set_len(0).unwrap(), "empty"),
    ];
    for (what, spoil, reason) in cases {
        let dir = TempDir::new(what);
        let path = dir.path("region");
        let old = open(&path);
        let old_breaker = old.breaker("kept", Config::default().failure_threshold(1)).unwrap();
        old_breaker.force_open();
        spoil(&path);
        let new = open(&path);
        let recreated = new.recreated().unwrap_or_else(|| panic!("{what}: not replaced"));
        assert!(recreated.contains(reason), "{what}: {recreated}");
        let fresh = new.breaker("kept", Config::default()).unwrap();
        assert_eq!(fresh.state(), State::Closed, "{what}: the new region starts clean");
        assert_eq!(open(&path).recreated(), None, "{what}: the replacement is valid");
        // A process still mapping the old file keeps a valid mapping (state intact); if the old
        // file itself was cut short under it, its breakers go on alone on private memory.
        match what {
            "truncated" => {
                let _ = old_breaker.state(); // no SIGBUS ends us; the slot may lie in the page left
            }
            "short" | "empty" => {
                assert_eq!(old_breaker.state(), State::Closed, "{what}: a private copy, fresh");
                assert!(old.is_lost(), "{what}");
            }
            _ => {
                assert_eq!(old_breaker.state(), State::ForcedOpen, "{what}");
                assert!(!old.is_lost() && old.is_replaced(), "{what}");
            }
        }
    }
}

#[test]
fn slots_validate_names_and_a_full_region_says_how_to_grow() {
    let dir = TempDir::new("full");
    let region = SharedRegion::open(&RegionOptions::new().path(dir.path("region")).capacity(3)).unwrap();
    assert!(matches!(region.attach("", &Config::default()), Err(RegionError::BadName { len: 0 })));
    let long = "x".repeat(cb_core::shared::MAX_NAME_LEN + 1);
    let err = region.attach(&long, &Config::default()).unwrap_err();
    assert!(err.to_string().contains("1 to 200 bytes"), "{err}");
    region.attach(&"y".repeat(cb_core::shared::MAX_NAME_LEN), &Config::default()).unwrap();
    let err = region.attach("bad", &Config::default().failure_threshold(0)).unwrap_err();
    assert_eq!(err.to_string(), "failure_threshold must be in 1..=4294967295, got 0");
    for name in ["a", "b"] {
        region.attach(name, &Config::default()).unwrap();
    }
    let err = region.attach("c", &Config::default()).unwrap_err();
    assert!(matches!(err, RegionError::Full { capacity: 3, .. }));
    assert!(err.to_string().contains("all 3 slots hold breakers") && err.to_string().contains("larger capacity"), "{err}");
    assert_eq!(region.attach("a", &Config::default()).unwrap().index(), region.attach("a", &Config::default()).unwrap().index());
    let reopened = SharedRegion::open(&RegionOptions::new().path(dir.path("region")).capacity(50)).unwrap();
    assert_eq!(reopened.capacity(), 3, "an existing region keeps its capacity");
}

#[test]
fn differently_configured_processes_each_apply_their_own_settings() {
    let dir = TempDir::new("mismatch");
    let region = open(&dir.path("region"));
    let patient = Config::default().failure_threshold(5);
    let eager = Config::default().failure_threshold(2);
    let first = region.attach("api", &patient).unwrap();
    assert!(first.config_mismatch().is_none());
    let second = region.attach("api", &eager).unwrap();
    assert_eq!(second.config_mismatch().map(|c| c.failure_threshold), Some(5));
    assert!(region.attach("api", &eager).unwrap().config_mismatch().is_none(), "the last attach is recorded");
    // The consecutive count switched off is a difference too (the rates alone trip there).
    let rates_only = eager.consecutive_failures(false).failure_rate_threshold(0.5);
    let third = region.attach("api", &rates_only).unwrap();
    assert_eq!(third.config_mismatch().map(|c| (c.failure_threshold, c.consecutive_failures)), Some((2, true)));
    let back = region.attach("api", &eager).unwrap();
    assert_eq!(back.config_mismatch().map(|c| c.consecutive_failures), Some(false));
    let slow = CircuitBreaker::with_store(patient, cb_core::DefaultClock::default(), first.counters(), first.word()).unwrap();
    let fast = CircuitBreaker::with_store(eager, cb_core::DefaultClock::default(), second.counters(), second.word()).unwrap();
    let _ = slow.call(|| Err::<(), _>(()));
    assert_eq!(slow.state(), State::Closed);
    let _ = fast.call(|| Err::<(), _>(()));
    assert_eq!(slow.state(), State::Open, "the eager process tripped the shared word at 2 failures");
}

/// Where some bytes sit in the file, for the corruption tests (a word written through a
/// breaker is found by its value).
fn find(path: &Path, needle: &[u8]) -> u64 {
    let bytes = fs::read(path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("bytes not found");
    at as u64
}

#[test]
fn a_garbage_word_is_repaired_and_garbage_counters_only_saturate() {
    let dir = TempDir::new("garbage");
    let path = dir.path("region");
    let region = open(&path);
    let config = Config::default().failure_threshold(3).recovery_timeout(Duration::from_secs(600));
    let breaker = region.breaker("victim", config).unwrap();
    breaker.force_open();
    let word_at = find(&path, &breaker.snapshot().bits().to_ne_bytes());
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // An unknown state tag: no transition writes one.
    file.write_at(&(7u64 << 61 | 12_345).to_ne_bytes(), word_at).unwrap();
    let slot = region.attach("victim", &config).unwrap();
    assert!(slot.repaired().unwrap().contains("malformed"), "{:?}", slot.repaired());
    assert_eq!(breaker.state(), State::Closed);
    // OPEN stamped a day ahead of this boot's clock: read as due for a probe at once.
    file.write_at(&cb_core::Snapshot::open(1, cb_core::MonotonicClock.now() + 86_400_000).bits().to_ne_bytes(), word_at).unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.admit().unwrap().is_probe());
    // Counters full of 0xff: totals saturate instead of overflowing.
    breaker.reset();
    let _ = breaker.call(|| Err::<(), _>(()));
    // The counters follow the word's cache line: 16 stripes of one line each.
    let counters_at = word_at + 128;
    file.write_at(&[0xff; 16 * 128], counters_at).unwrap();
    let totals = breaker.metrics().totals();
    assert_eq!(totals.successes, u64::MAX);
    assert_eq!(totals.failures, u64::MAX);
    assert_eq!(totals.requests(), u64::MAX, "a sum of saturated counters saturates too");
    let _ = breaker.call(|| Ok::<_, ()>(()));
}

#[test]
fn a_damaged_slot_is_passed_over() {
    let dir = TempDir::new("damaged");
    let path = dir.path("region");
    let region = SharedRegion::open(&RegionOptions::new().path(&path).capacity(4)).unwrap();
    let first = region.attach("first", &Config::default()).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let slot_size = (fs::metadata(&path).unwrap().len() - 4096) / 4;
    let state_at = 4096 + first.index() as u64 * slot_size;
    file.write_at(&0xdead_beefu32.to_ne_bytes(), state_at).unwrap();
    let again = region.attach("first", &Config::default()).unwrap();
    assert_ne!(again.index(), first.index(), "a slot with an unknown state is never reused");
    assert_eq!(region.names().unwrap(), vec!["first".to_string()]);
}

#[test]
fn every_mapping_reports_the_same_wall_clock_times() {
    let dir = TempDir::new("anchor");
    let config = Config::default().failure_threshold(2);
    let stamped = |region: &SharedRegion| {
        let slot = region.attach("timed", &config).unwrap();
        CircuitBreaker::with_store(config, cb_core::DefaultClock::default(), slot.counters().with_times(), slot.word())
            .unwrap()
            .with_wall_anchor(region.wall_anchor())
    };
    let a = stamped(&open(&dir.path("region")));
    let created = a.last_state_change_time().expect("claiming the slot is its first change");
    std::thread::sleep(Duration::from_millis(30));
    let _ = a.call(|| Err::<(), _>(()));
    // Another mapping, made later (its own construction-time reading would differ).
    std::thread::sleep(Duration::from_millis(30));
    let b = stamped(&open(&dir.path("region")));
    assert_eq!(b.last_state_change_time(), Some(created));
    assert_eq!(b.last_failure_time(), a.last_failure_time());
    assert!(a.last_failure_time().unwrap() >= created + Duration::from_millis(25));
    let _ = b.call(|| Err::<(), _>(()));
    assert_eq!(a.last_state_change_time(), b.last_state_change_time());
    assert_ne!(a.last_state_change_time(), Some(created), "the trip is the latest change");
}

#[test]
fn transitions_are_announced_only_by_the_process_that_made_them() {
    let dir = TempDir::new("announce");
    let region = open(&dir.path("region"));
    let config = Config::default().failure_threshold(1).recovery_timeout(Duration::from_secs(600));
    let heard = |log: &Arc<Mutex<Vec<(State, State)>>>| {
        let log = Arc::clone(log);
        move |t: &Transition| log.lock().unwrap().push((t.from, t.to))
    };
    let (log_a, log_b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let slot = region.attach("once", &config).unwrap();
    let a = CircuitBreaker::with_store(config, cb_core::DefaultClock::default(), slot.counters(), slot.word())
        .unwrap()
        .on_transition(heard(&log_a));
    let b = CircuitBreaker::with_store(config, cb_core::DefaultClock::default(), slot.counters(), slot.word())
        .unwrap()
        .on_transition(heard(&log_b));
    let _ = a.call(|| Err::<(), _>(()));
    assert!(b.admit().is_err());
    b.reset();
    assert_eq!(*log_a.lock().unwrap(), [(State::Closed, State::Open)]);
    assert_eq!(*log_b.lock().unwrap(), [(State::Open, State::Closed)]);
    assert_eq!(a.metrics().totals().opened, 1);
}

/// The rate policies' window lives in the slot: calls through two mappings of one region (as
/// two processes would have) are decided together. Neither alone reaches minimum_calls; both
/// together trip it, once.
#[test]
fn the_rate_window_is_shared_by_every_attacher() {
    let dir = TempDir::new("rates");
    let path = dir.path("region");
    let config = Config::default()
        .failure_threshold(1_000)
        .failure_rate_threshold(0.5)
        .minimum_calls(10)
        .sliding_window(cb_core::SlidingWindow::Calls(20));
    let first = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap();
    let second = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap();
    let (a, b) = (first.breaker("rates", config).unwrap(), second.breaker("rates", config).unwrap());
    let mut opened = 0;
    for i in 0..10 {
        let breaker = if i % 2 == 0 { &a } else { &b };
        let ticket = breaker.admit_ticket().unwrap();
        // Alternating success and failure on each side: never two failures in a row anywhere.
        let outcome = if (i / 2) % 2 == 0 { Outcome::Failure } else { Outcome::Success };
        if breaker.record(ticket, outcome).is_some_and(|t| t.to == State::Open) {
            opened += 1;
        }
        if i < 9 {
            assert_eq!(a.state(), State::Closed, "call {i}: below minimum_calls");
        }
    }
    assert_eq!((opened, a.state(), b.state()), (1, State::Open, State::Open));
    // A slot claimed again starts with an empty window.
    let fresh = first.breaker("other", config).unwrap();
    assert_eq!(fresh.window_totals(), Some(cb_core::WindowTotals::default()));
}

/// `flock -x` on a file, held by another process (as another local user could) until dropped.
struct HeldLock(Child);

impl HeldLock {
    fn new(path: &Path) -> Self {
        // Killed and reaped on drop, also if waiting for it to take the lock fails.
        let held = HeldLock(Command::new("flock").args(["--no-fork", "-x"]).arg(path).args(["sleep", "20"]).spawn().expect("the flock command"));
        let file = fs::File::open(path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: a valid descriptor; LOCK_NB never waits.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return held; // the child holds it
            }
            // SAFETY: as above; we took it before the child did: give it back.
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_UN) };
            assert!(Instant::now() < deadline, "flock never took the lock");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_refused_files_lock_is_never_waited_on() {
    let dir = TempDir::new("foreign-lock");
    // Anyone's file, writable by everyone, its lock held by its maker.
    let path = dir.path("everyones");
    open(&path);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let _held = HeldLock::new(&path);
    let start = Instant::now();
    let err = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_err();
    assert!(matches!(err, RegionError::Insecure { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1), "waited {:?} on a refused file's lock", start.elapsed());
}

#[test]
fn a_foreign_owners_lock_is_never_waited_on() {
    if !can_give_files_away() {
        return;
    }
    let dir = TempDir::new("owner-lock");
    let path = dir.path("region");
    fs::write(&path, b"CBREGION").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    give_to_nobody(&path);
    let _held = HeldLock::new(&path);
    let start = Instant::now();
    let err = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1), "waited {:?} on a refused file's lock", start.elapsed());
}

#[test]
fn a_lock_held_too_long_is_a_clear_error_not_a_hang() {
    let dir = TempDir::new("held-lock");
    let path = dir.path("region");
    let options = RegionOptions::new().path(&path).lock_timeout(Duration::from_millis(300));
    let region = SharedRegion::open(&options).unwrap();
    let held = HeldLock::new(&path);
    for what in ["open", "attach", "names"] {
        let start = Instant::now();
        let err = match what {
            "open" => SharedRegion::open(&options).unwrap_err(),
            "attach" => region.attach("late", &Config::default()).unwrap_err(),
            _ => region.names().unwrap_err(),
        };
        let waited = start.elapsed();
        assert!(matches!(err, RegionError::LockTimeout { .. }), "{what}: {err}");
        assert!(err.to_string().contains("held by another process"), "{what}: {err}");
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{what}: waited {waited:?}");
    }
    drop(held);
    region.attach("late", &Config::default()).expect("the lock is free again");
}

/// A child's `main` for the default-path tests: prints the default path it sees, and with
/// `CB_OPEN_DEFAULT` opens the default region (only where the test pointed it at a temporary
/// directory).
#[test]
fn default_path_child() {
    if std::env::var_os("CB_DEFAULT_PATH_CHILD").is_none() {
        return;
    }
    println!("DEFAULT {}", RegionOptions::default_path().display());
    if std::env::var_os("CB_OPEN_DEFAULT").is_some() {
        let region = SharedRegion::open_default().unwrap();
        region.breaker("default", Config::default()).unwrap();
        println!("OPENED {}", region.path().display());
    }
}

/// The default path a child process sees with `XDG_RUNTIME_DIR` set to `xdg` (unset: `None`),
/// and the path of the region it opened if `open`.
fn default_path_in_child(xdg: Option<&Path>, open: bool) -> (PathBuf, Option<PathBuf>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", "default_path_child", "--nocapture", "--test-threads", "1"]).env("CB_DEFAULT_PATH_CHILD", "1");
    match xdg {
        Some(dir) => command.env("XDG_RUNTIME_DIR", dir),
        None => command.env_remove("XDG_RUNTIME_DIR"),
    };
    if open {
        command.env("CB_OPEN_DEFAULT", "1");
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = |marker: &str| stdout.lines().find_map(|l| l.split_once(marker).map(|(_, p)| PathBuf::from(p.trim())));
    (after("DEFAULT ").expect("the child printed its default path"), after("OPENED "))
}

#[test]
fn the_default_region_lives_in_a_private_runtime_dir_when_there_is_one() {
    let dir = TempDir::new("xdg");
    let runtime = dir.path("run-user");
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    let expected = runtime.join("circuit_breaker.region");
    let (default, opened) = default_path_in_child(Some(&runtime), true);
    assert_eq!(default, expected);
    assert_eq!(opened.as_deref(), Some(expected.as_path()));
    assert!(expected.exists(), "the default region was made in the runtime dir");

    // SAFETY: geteuid has no preconditions.
    let shm_default = PathBuf::from(format!("/dev/shm/circuit_breaker.{}", unsafe { libc::geteuid() }));
    if !Path::new("/dev/shm").is_dir() {
        return;
    }
    assert_eq!(default_path_in_child(None, false).0, shm_default, "no XDG_RUNTIME_DIR");
    // A directory others can write, a relative path, a symbolic link and a missing directory
    // are not private: the old default.
    let shared = dir.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let link = dir.path("link");
    std::os::unix::fs::symlink(&runtime, &link).unwrap();
    for not_private in [shared.as_path(), Path::new("relative/run"), link.as_path(), dir.path("missing").as_path()] {
        assert_eq!(default_path_in_child(Some(not_private), false).0, shm_default, "{}", not_private.display());
    }
    if can_give_files_away() {
        let theirs = dir.path("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
        give_to_nobody(&theirs);
        assert_eq!(default_path_in_child(Some(&theirs), false).0, shm_default, "another user's directory");
    }
}

/// Issue 21, item 10: `truncate -s 100` on a mapped region used to end every process using it
/// with SIGBUS.
#[test]
fn a_region_cut_short_under_a_process_does_not_kill_it() {
    let fleet = Fleet::new("truncated");
    let calls = 1_000;
    let mut child = fleet.spawn("survive-truncation", 1, 1, calls, config_env(3, 600_000, 1, 60_000)).pop().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ATTACHED") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before attaching");
    }
    OpenOptions::new().write(true).open(&fleet.region).unwrap().set_len(100).unwrap();
    fleet.go();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the child died: {status:?}\n{rest}");
    let admitted: u64 = rest.lines().find_map(|l| l.split_once("RESULT ")).map(|(_, v)| v.trim().parse().unwrap()).unwrap();
    // Its copy starts as a fresh slot (CLOSED), not the FORCED_OPEN it had attached to.
    assert_eq!(admitted, calls);
    // Whoever opens the path next replaces the cut file and shares state again.
    let region = open(&fleet.region);
    assert!(region.recreated().is_some_and(|r| r.contains("truncated")), "{:?}", region.recreated());
}

#[test]
fn a_sigbus_outside_every_region_still_ends_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let fleet = Fleet::new("foreign-sigbus");
    let child = fleet.spawn("foreign-sigbus", 1, 1, 1, config_env(3, 600_000, 1, 60_000)).pop().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TOUCHING") && !stdout.contains("SURVIVED"), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?}", out.status);
}

const CREATED_MS_AT: u64 = 80;
const CREATED_TICK_AT: u64 = 88;

/// Damages a region file in place.
type Spoil = fn(&Path);

/// Spoils a region at a fresh path per case, and checks it is replaced (a clean slot, a valid
/// new file) with a reason that contains `reason`.
fn assert_replaced(cases: &[(&str, Spoil, &str)]) {
    for &(what, spoil, reason) in cases {
        let dir = TempDir::new(what);
        let path = dir.path("region");
        open(&path).breaker("kept", Config::default()).unwrap().force_open();
        spoil(&path);
        let new = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let recreated = new.recreated().unwrap_or_else(|| panic!("{what}: not replaced"));
        assert!(recreated.contains(reason), "{what}: {recreated}");
        assert_eq!(new.breaker("kept", Config::default()).unwrap().state(), State::Closed, "{what}");
        assert_eq!(open(&path).recreated(), None, "{what}: the replacement is valid");
    }
}

/// Issue 21, item 12: a file of ours cut below the magic, or with a damaged magic, is a damaged
/// region (replaced); another magic is still somebody else's file (left alone).
#[test]
fn a_cut_or_damaged_magic_is_replaced_but_another_magic_is_left_alone() {
    assert_replaced(&[
        ("cut-below-magic", |p| OpenOptions::new().write(true).open(p).unwrap().set_len(5).unwrap(), "truncated (5 bytes)"),
        ("one-bit", |p| patch(p, 0, b"B", false), "magic is damaged (1 bits differ"),
        ("magic-overwritten-checksum-intact", |p| patch(p, 0, b"XXXXXXXX", false), "magic is damaged"),
    ]);
    // Another magic, with a checksum that does not fit ours either: not a region, left alone.
    let dir = TempDir::new("other-magic");
    let path = dir.path("region");
    open(&path);
    patch(&path, 0, b"SQLite f", false);
    patch(&path, CHECKSUM_AT, &[0x5a; 8], false);
    let before = fs::read(&path).unwrap();
    let err = SharedRegion::open(&RegionOptions::new().path(&path)).unwrap_err();
    assert!(matches!(err, RegionError::NotARegion { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before, "left alone");
}

/// Issue 21, item 12: a header whose creation stamps cannot be true (reports anchored on them
/// read 1970) is stale.
#[test]
fn a_header_with_impossible_creation_stamps_is_replaced() {
    assert_replaced(&[
        ("created-in-1970", |p| patch(p, CREATED_MS_AT, &0u64.to_ne_bytes(), true), "creation time (0 ms after 1970) is impossible"),
        (
            "created-next-week",
            |p| {
                let next_week = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 7 * 86_400_000;
                patch(p, CREATED_MS_AT, &next_week.to_ne_bytes(), true)
            },
            "is impossible",
        ),
        ("created-after-now", |p| patch(p, CREATED_TICK_AT, &(1u64 << 60).to_ne_bytes(), true), "which reads"),
    ]);
}

/// Issue 21, item 12: `window_calls` against `window_seconds` (or any rate setting) on one name
/// is reported like any other difference.
#[test]
fn a_different_rate_window_is_a_config_mismatch() {
    let dir = TempDir::new("window-mismatch");
    let region = open(&dir.path("region"));
    let by_calls = Config::default().failure_rate_threshold(0.5).minimum_calls(10).sliding_window(cb_core::SlidingWindow::Calls(20));
    let by_time = by_calls.sliding_window(cb_core::SlidingWindow::Time(Duration::from_secs(10)));
    assert!(region.attach("rated", &by_calls).unwrap().config_mismatch().is_none());
    let theirs = *region.attach("rated", &by_time).unwrap().config_mismatch().expect("a window of calls against one of time");
    assert_eq!(theirs.sliding_window, cb_core::SlidingWindow::Calls(20));
    assert!(theirs.describe().ends_with("minimum_calls=10, window_calls=20"), "{}", theirs.describe());
    let slower = by_time.slow_call_duration(Duration::from_millis(250));
    let theirs = *region.attach("rated", &slower).unwrap().config_mismatch().expect("a slow-call policy added");
    assert_eq!((theirs.slow_call_duration, theirs.sliding_window), (None, cb_core::SlidingWindow::Time(Duration::from_secs(10))));
    let rate = slower.failure_rate_threshold(0.25);
    assert_eq!(region.attach("rated", &rate).unwrap().config_mismatch().and_then(|c| c.failure_rate_threshold), Some(0.5));
    let fewer = rate.minimum_calls(5);
    assert_eq!(region.attach("rated", &fewer).unwrap().config_mismatch().map(|c| c.minimum_calls), Some(10));
    assert!(region.attach("rated", &fewer).unwrap().config_mismatch().is_none(), "the same again");
    // Window settings nothing reads (no rate policy) are no difference.
    let plain = Config::default();
    region.attach("plain", &plain).unwrap();
    assert!(region.attach("plain", &plain.minimum_calls(7)).unwrap().config_mismatch().is_none());
}

/// Issue 21, item 12: a process killed while creating a region leaves a hidden temporary; the
/// next open removes those whose process is gone, and creating leaves none.
#[test]
fn creating_leaves_no_temporary_and_stale_ones_of_dead_processes_are_removed() {
    let dir = TempDir::new("temporaries");
    let path = dir.path("region");
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    open(&path);
    assert_eq!(listing(), ["region"]);
    patch(&path, VERSION_AT, &99u32.to_ne_bytes(), true);
    assert!(open(&path).recreated().is_some());
    assert_eq!(listing(), ["region"], "replacing leaves no temporary either");

    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3_600);
    let left = |name: String, modified: std::time::SystemTime| {
        let file = fs::File::create(dir.path(&name)).unwrap();
        file.set_modified(modified).unwrap();
        name
    };
    let stale = left(format!(".region.{dead}.123456.tmp"), an_hour_ago);
    let alive = left(format!(".region.{}.1.tmp", std::process::id()), an_hour_ago);
    let fresh = left(format!(".region.{dead}.7.tmp"), std::time::SystemTime::now());
    let other = left(format!(".elsewhere.{dead}.1.tmp"), an_hour_ago);
    let not_ours = left(format!(".region.{dead}.notes.tmp"), an_hour_ago);
    open(&path);
    let mut expected = vec![alive, fresh, other, not_ours, "region".to_string()];
    expected.sort();
    assert_eq!(listing(), expected, "only {stale} is removed");
}

// ----- calls in flight, host-wide -----

/// The breaker the in-flight tests limit, and its limit.
const LIMITED: &str = "limited";
const LIMIT: u32 = 8;

/// Prints a marker line for the parent and flushes it.
fn say(line: &str) {
    println!("{line}");
    std::io::stdout().flush().unwrap();
}

/// Reads a child's output until a line containing `marker`, and returns that line.
fn wait_line(child: &mut Child, marker: &str) -> String {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child exited before saying {marker}");
    }
    child.stdout = Some(out.into_inner());
    line
}

/// A process SIGKILLed (and reaped) when dropped, so a failing test leaves none behind.
struct Killed(libc::pid_t);

impl Killed {
    fn now(self) {
        drop(self);
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) and waitpid(2) on a process of ours (a child, or a child's child, which
        // init reaps; waitpid then fails harmlessly).
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// `calls` times: take a place under [`LIMIT`], count it in the scratch file (now running in
/// every process, and the peak), give it back.
fn hammer_limit(limit: &cb_core::SlotInFlight, scratch: &Scratch, calls: u64, admitted: &AtomicU64) {
    for i in 0..calls {
        if !limit.try_enter(LIMIT) {
            continue;
        }
        admitted.fetch_add(1, Ordering::Relaxed);
        let running = scratch.at(0).fetch_add(1, Ordering::SeqCst) + 1;
        scratch.at(1).fetch_max(running, Ordering::SeqCst);
        if i % 64 == 0 {
            std::thread::yield_now();
        }
        scratch.at(0).fetch_sub(1, Ordering::SeqCst);
        limit.leave();
    }
}

/// Spawns a child of `role` holding `places` of [`LIMITED`] in `fleet`'s region, once it says
/// `marker`; the line it said.
fn holder(fleet: &Fleet, role: &str, places: u64, marker: &str) -> (Killed, String) {
    let mut child = fleet.spawn(role, 1, 1, places, config_env(1, 0, 1, 1)).pop().unwrap();
    let line = wait_line(&mut child, marker);
    let pid = child.id() as libc::pid_t;
    std::mem::forget(child); // reaped by `Killed`
    (Killed(pid), line)
}

/// Tries `try_enter` until it admits or `within` has passed: how long it took.
fn enter_within(limit: &cb_core::SlotInFlight, max: u32, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if limit.try_enter(max) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// The offsets of the table's `used` hint and of row 0 (this process's, as the first to claim
/// one in a fresh region): the two words the first admission changes, in that order.
fn table_offsets(path: &Path, limit: &cb_core::SlotInFlight) -> (u64, u64) {
    let words = || fs::read(path).unwrap().chunks(8).map(|w| u64::from_ne_bytes(w.try_into().unwrap())).collect::<Vec<_>>();
    let before = words();
    assert!(limit.try_enter(LIMIT));
    let changed: Vec<u64> = before.iter().zip(words()).enumerate().filter(|(_, (a, b))| *a != b).map(|(i, _)| i as u64 * 8).collect();
    limit.leave();
    assert_eq!(changed.len(), 2, "the first admission changes the hint and the own row");
    (changed[0], changed[1])
}

fn read_word(path: &Path, at: u64) -> u64 {
    let mut bytes = [0u8; 8];
    fs::File::open(path).unwrap().read_exact_at(&mut bytes, at).unwrap();
    u64::from_ne_bytes(bytes)
}

fn write_word(path: &Path, at: u64, value: u64) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(&value.to_ne_bytes(), at).unwrap();
}

/// (a) Threads of this process and of three others hammer one limit of 8: never more than 8
/// calls run at once, and every place comes back.
#[test]
fn the_limit_on_calls_in_flight_holds_across_processes_and_threads() {
    let fleet = Fleet::new("inflight");
    let region = open(&fleet.region);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    let scratch = Scratch::new(&fleet.dir.path("scratch"));
    let calls = 20_000;
    let children = fleet.spawn("in-flight", 3, 3, calls, config_env(1, 0, 1, 1));
    fleet.go();
    let admitted = AtomicU64::new(0);
    run_threads(3, |_| hammer_limit(&limit, &scratch, calls, &admitted));
    let theirs: u64 = children.into_iter().flat_map(results).sum();
    let peak = scratch.at(1).load(Ordering::SeqCst);
    assert!(peak <= u64::from(LIMIT), "{peak} calls ran at once under a limit of {LIMIT}");
    assert!(peak >= 2, "the calls never overlapped ({peak}): the test proves nothing");
    assert!(admitted.load(Ordering::Relaxed) > 0 && theirs > 0, "everyone got places");
    assert_eq!(limit.in_flight(), 0, "every place came back");
    assert_eq!(scratch.at(0).load(Ordering::SeqCst), 0);
}

/// (b) A child SIGKILLed holding 5 places: the parent finds the breaker full, then the first
/// full call after the reclaim interval gives the places back, and all 8 can be taken again.
#[test]
fn places_of_a_killed_process_come_back_on_the_next_full_call() {
    let fleet = Fleet::new("inflight-kill");
    let region = open(&fleet.region);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    let (child, _) = holder(&fleet, "hold-places", 5, "HOLDING");
    assert_eq!(limit.in_flight(), 5);
    for _ in 0..3 {
        assert!(limit.try_enter(LIMIT));
    }
    assert!(!limit.try_enter(LIMIT), "full: 5 in the child and 3 here");
    child.now();
    assert_eq!(limit.in_flight(), 8, "nobody has looked yet: the dead child's places still count");
    let waited = enter_within(&limit, LIMIT, Duration::from_secs(5)).expect("the dead child's places never came back");
    assert!(waited < Duration::from_millis(100 + 400), "came back only after {waited:?} (the reclaim interval is 100 ms)");
    assert_eq!(limit.in_flight(), 4, "only the dead child's places came back");
    for _ in 0..4 {
        assert!(limit.try_enter(LIMIT));
    }
    assert!(!limit.try_enter(LIMIT));
    assert_eq!(limit.in_flight(), LIMIT);
    (0..LIMIT).for_each(|_| limit.leave());
    assert_eq!(limit.in_flight(), 0);
}

/// (b) A live process holding places for a long time never loses them, however often full
/// calls look for dead rows.
#[test]
fn a_live_process_keeps_its_places_however_long_it_holds_them() {
    let fleet = Fleet::new("inflight-live");
    let region = open(&fleet.region);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight().reclaim_interval(Duration::from_millis(1));
    let (_child, _) = holder(&fleet, "hold-places", 5, "HOLDING");
    let until = Instant::now() + Duration::from_millis(700);
    let mut full = 0;
    while Instant::now() < until {
        let taken = (0..4).take_while(|_| limit.try_enter(LIMIT)).count();
        assert_eq!(taken, 3, "the live child's 5 places must keep counting");
        full += 1;
        (0..taken).for_each(|_| limit.leave());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(full > 50, "only {full} full calls looked for dead rows");
    assert_eq!(limit.in_flight(), 5);
}

/// (c) A forked child counts in a row of its own: killing it gives back only its places, and
/// while it lives they are not reclaimed.
#[test]
fn a_forked_child_counts_in_a_row_of_its_own() {
    let dir = TempDir::new("inflight-fork");
    let region = open(&dir.path("region"));
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight().reclaim_interval(Duration::from_millis(1));
    assert!(limit.try_enter(5) && limit.try_enter(5), "the parent's 2 places, in its row");
    let mut pipe = [0; 2];
    // SAFETY: pipe(2) into a two-descriptor array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls the limit (allocation and system calls, fine after fork
    // with glibc), writes to the pipe, sleeps, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let took = (0..3).all(|_| limit.try_enter(5));
        let byte = [u8::from(took)];
        // SAFETY: writes one byte from a live buffer to the pipe's write end.
        unsafe { libc::write(pipe[1], byte.as_ptr().cast(), 1) };
        std::thread::sleep(Duration::from_secs(600));
        // SAFETY: ends the child without the harness.
        unsafe { libc::_exit(0) };
    }
    let child = Killed(pid);
    let mut byte = [0u8];
    // SAFETY: reads one byte into a live buffer from the pipe's read end.
    assert_eq!(unsafe { libc::read(pipe[0], byte.as_mut_ptr().cast(), 1) }, 1);
    // SAFETY: our pipe's descriptors, closed once.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    assert_eq!(byte[0], 1, "the child took 3 places");
    assert_eq!(limit.in_flight(), 5);
    assert!(enter_within(&limit, 5, Duration::from_millis(100)).is_none(), "the live child's places were reclaimed");
    child.now();
    enter_within(&limit, 5, Duration::from_secs(5)).expect("the dead child's places never came back");
    assert_eq!(limit.in_flight(), 3, "the parent's 2 places survive its child, and 1 more");
    (0..3).for_each(|_| limit.leave());
    assert_eq!(limit.in_flight(), 0);
}

/// (c) A process killed while a child it forked lives on (the child inherited its descriptors,
/// but never used the limit): the dead process's places still come back.
#[test]
fn a_forked_child_does_not_keep_its_dead_parents_places() {
    let fleet = Fleet::new("inflight-forked");
    let region = open(&fleet.region);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    // Claim our row first, so that ours is not the dead process's row, zeroed by claiming it.
    assert!(limit.try_enter(LIMIT));
    limit.leave();
    let (parent, line) = holder(&fleet, "hold-and-fork", 4, "FORKED");
    let grandchild = Killed(line.trim().rsplit(' ').next().unwrap().parse().unwrap());
    assert_eq!(limit.in_flight(), 4);
    parent.now();
    enter_within(&limit, 4, Duration::from_secs(5)).expect("the forked child kept its dead parent's row alive");
    assert_eq!(limit.in_flight(), 1);
    limit.leave();
    grandchild.now();
}

/// (d) Garbage in every word of the table (the hint, the stamp, rows nobody owns, the own row)
/// never panics, saturates, and is reclaimed where the owner is dead.
#[test]
fn garbage_in_the_table_never_panics_and_dead_garbage_is_reclaimed() {
    let dir = TempDir::new("inflight-garbage");
    let path = dir.path("region");
    let region = open(&path);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    let (used_at, own_at) = table_offsets(&path, &limit);
    let stamp_at = used_at + 8;
    assert_eq!(stamp_at + 8, own_at, "the hint, the stamp, then the rows");
    let mut seed = u64::from(nanos()) | 1;
    let mut random = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // A hint past the table, a stamp in the future, and two rows that a wrapping sum reads as 0.
    write_word(&path, used_at, u64::MAX);
    write_word(&path, stamp_at, u64::MAX);
    write_word(&path, own_at + 8, u64::MAX);
    write_word(&path, own_at + 16, 1);
    assert_eq!(limit.in_flight(), u32::MAX, "the sum saturates");
    assert!(limit.try_enter(LIMIT), "garbage of nobody's rows is reclaimed by the first full call");
    assert_eq!(limit.in_flight(), 1);
    limit.leave();
    for row in 1..64 {
        write_word(&path, own_at + row * 8, if row % 3 == 0 { u64::MAX } else { random() });
    }
    write_word(&path, stamp_at, 0);
    assert!(limit.try_enter(LIMIT), "random garbage of nobody's rows is reclaimed too");
    assert_eq!(limit.in_flight(), 1);
    assert!((1..64).all(|row| read_word(&path, own_at + row * 8) == 0));
    // Garbage in the own row: admission and leaving neither panic nor wrap below 0.
    write_word(&path, own_at, u64::MAX);
    let _ = limit.try_enter(LIMIT);
    (0..3).for_each(|_| limit.leave());
    let _ = limit.in_flight();
    write_word(&path, own_at, 0);
    assert!(limit.try_enter(LIMIT));
    limit.leave();
    assert_eq!(limit.in_flight(), 0);
}

/// (e) A place is never returned twice: leaving more than was taken (here, after the own row
/// was zeroed under us) stays at 0 and never frees another process's places.
#[test]
fn a_place_is_never_returned_twice() {
    let fleet = Fleet::new("inflight-twice");
    let path = fleet.region.clone();
    let region = open(&path);
    let limit = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    let (_, own_at) = table_offsets(&path, &limit);
    let (_child, _) = holder(&fleet, "hold-places", 3, "HOLDING");
    assert!(limit.try_enter(LIMIT) && limit.try_enter(LIMIT));
    assert_eq!(limit.in_flight(), 5);
    write_word(&path, own_at, 0);
    limit.leave();
    limit.leave();
    assert_eq!(read_word(&path, own_at), 0, "the own row stays at 0");
    assert_eq!(limit.in_flight(), 3, "the child's places still count");
    let again = region.attach(LIMITED, &Config::default()).unwrap().in_flight();
    again.leave();
    assert_eq!(limit.in_flight(), 3, "a second handle on the slot shares the row: nothing below 0 either");
    assert_eq!((0..6).take_while(|_| again.try_enter(LIMIT)).count(), 5);
}
