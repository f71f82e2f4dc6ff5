//! Two processes sharing one breaker through shared memory.
//!
//! ```text
//! cargo run -p cb_core --features shared-memory --example shared_memory
//! ```
//!
//! The first process trips the breaker `"inventory"` in a region file, then starts a second
//! process (this same program, with `--second`) that attaches the same name: it finds the
//! breaker OPEN and is rejected without calling anything, sees the first process's failures
//! in the counters, and resets it, which the first process then sees.

use std::process::Command;
use std::time::Duration;

use cb_core::{CallError, Config, RegionOptions, SharedRegion, State};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let second = args.next().as_deref() == Some("--second");
    let path = match args.next() {
        Some(path) => path.into(),
        None => std::env::temp_dir().join(format!("cb-example-{}", std::process::id())),
    };
    let region = SharedRegion::open(&RegionOptions::new().path(&path))?;
    let config = Config::default().failure_threshold(3).recovery_timeout(Duration::from_secs(30));
    let breaker = region.breaker("inventory", config)?;
    let pid = std::process::id();

    if second {
        println!("[{pid}] attached: {:?}, {} failures counted so far", breaker.state(), breaker.metrics().totals().failures);
        match breaker.call(|| -> Result<(), std::io::Error> { unreachable!("an OPEN breaker runs nothing") }) {
            Err(CallError::Rejected(r)) => println!("[{pid}] rejected: {r}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        breaker.reset();
        println!("[{pid}] reset it for every process");
        return Ok(());
    }

    for attempt in 1..=3 {
        let result = breaker.call(|| Err::<(), _>(std::io::Error::other("connection refused")));
        println!("[{pid}] call {attempt}: {}", result.unwrap_err());
    }
    assert_eq!(breaker.state(), State::Open);
    let status = Command::new(std::env::current_exe()?).arg("--second").arg(&path).status()?;
    assert!(status.success());
    assert_eq!(breaker.state(), State::Closed, "the other process's reset reached this one");
    println!("[{pid}] after the other process's reset: {:?}", breaker.state());
    std::fs::remove_file(&path)?;
    Ok(())
}
