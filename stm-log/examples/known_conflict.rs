//! A known conflict: two threads increment one counter, each in its own transaction, so they
//! fight over the same word. Writes the log (to `STM_LOG`, or `known_conflict.log` in the
//! temporary directory) and prints its report.
//!
//! ```text
//! cargo run -p stm-log --example known_conflict
//! ```
//!
//! The report names the two lines marked below: the read that was invalidated (`WRITE_READ`)
//! and the write that invalidated it.

use std::path::PathBuf;
use stm_core::{TVar, atomically};
use stm_log::{LogGuard, report::Report};

static COUNTER: TVar<u64> = TVar::new(0);
const THREADS: u64 = 2;
const INCREMENTS: u64 = 20_000;
/// Steps of busy work between the read and the write.
const WORK: u64 = 500;

fn increment() {
    atomically(|tx| {
        let x = tx.read(&COUNTER)?; // <- the read that gets invalidated
        // A little work between read and write widens the window, as real code would.
        std::hint::black_box((0..WORK).fold(x, |a, b| a ^ b.rotate_left(3)));
        tx.write(&COUNTER, x + 1) // <- the write that invalidates it
    });
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var_os("STM_LOG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("known_conflict.log"));
    let guard = LogGuard::create(&path)?;
    let start = std::sync::Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                for _ in 0..INCREMENTS {
                    increment();
                }
            });
        }
    });
    guard.finish()?;
    assert_eq!(COUNTER.load(), THREADS * INCREMENTS);
    println!("log written to {}\n", path.display());
    let report = Report::from_path(&path)?;
    print!("{}", report.render_text(5, None));
    Ok(())
}
