//! A known conflict: two threads increment one counter, in rounds. In each round both threads
//! read the counter, wait for each other, then write it back incremented and commit: both cannot
//! commit with the value they read, so every round costs at least one abort, and every abort
//! names the two lines marked below. Writes the log (to `STM_LOG`, or `known_conflict.log` in the
//! temporary directory) and prints its report.
//!
//! ```text
//! cargo run --release -p stm-log --example known_conflict
//! ```

use std::path::PathBuf;
use std::sync::Barrier;
use stm_core::{TVar, atomically};
use stm_log::{LogGuard, report::Report};

static COUNTER: TVar<u64> = TVar::new(0);
const THREADS: usize = 2;
const ROUNDS: u64 = 2_000;

fn increment(both_read: &Barrier) {
    let mut first_attempt = true;
    atomically(|tx| {
        let x = tx.read(&COUNTER)?; // <- the read that gets invalidated
        if std::mem::take(&mut first_attempt) {
            both_read.wait(); // the other thread has read the same value by now
        }
        tx.write(&COUNTER, x + 1) // <- the write that invalidates it
    });
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var_os("STM_LOG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("known_conflict.log"));
    let guard = LogGuard::create(&path)?;
    let both_read = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    increment(&both_read);
                }
            });
        }
    });
    guard.finish()?;
    assert_eq!(COUNTER.load(), THREADS as u64 * ROUNDS);
    println!("log written to {}\n", path.display());
    let report = Report::from_path(&path)?;
    assert_eq!(report.commits, THREADS as u64 * ROUNDS);
    assert!(report.aborts >= ROUNDS, "at least one abort per round");
    print!("{}", report.render_text(5, None));
    Ok(())
}
