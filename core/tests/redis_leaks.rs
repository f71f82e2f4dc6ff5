//! A fleet handle nobody uses any more leaves nothing behind: no thread, no descriptor, no
//! Redis client. Alone in its own test binary, so that no other test's threads or sockets come
//! and go while it counts this process's.
#![cfg(all(target_os = "linux", feature = "redis"))]

use std::thread;
use std::time::{Duration, Instant};

use cb_core::{Config, RedisFleet, RedisOptions};

mod redis_server;
use redis_server::Server;

fn entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Clients connected to the server, counting the one that asks.
fn clients(server: &Server) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut server.connection()).unwrap();
    list.lines().count()
}

#[test]
fn dropped_fleets_end_their_thread_and_close_their_connections() {
    let server = Server::start(&[]);
    // Warm up whatever the first connection initialises once per process.
    drop(RedisFleet::open(RedisOptions::new(server.url()).prefix("warm:")).unwrap());
    thread::sleep(Duration::from_millis(500));
    let (threads, fds) = (entries("/proc/self/task"), entries("/proc/self/fd"));
    assert_eq!(clients(&server), 1, "only the CLIENT LIST connection");
    let fleets: Vec<_> = (0..20)
        .map(|i| {
            let fleet = RedisFleet::open(RedisOptions::new(server.url()).prefix(format!("leak{i}:"))).unwrap();
            let breaker = fleet.breaker("svc", Config::default().failure_threshold(1)).unwrap();
            let _ = breaker.call(|| Err::<(), _>("down"));
            (fleet, breaker)
        })
        .collect();
    assert!(entries("/proc/self/task") >= threads + 20, "one watcher each");
    // A cache of weak handles keeps none of them open.
    let cached: Vec<_> = fleets.iter().map(|(fleet, _)| fleet.downgrade()).collect();
    assert!(cached.iter().all(|weak| weak.upgrade().is_some()));
    drop(fleets);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now = (entries("/proc/self/task"), entries("/proc/self/fd"), clients(&server));
        if now == (threads, fds, 1) && cached.iter().all(|weak| weak.upgrade().is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "(threads, fds, Redis clients) = {now:?}, expected {:?}", (threads, fds, 1));
        thread::sleep(Duration::from_millis(10));
    }
}
