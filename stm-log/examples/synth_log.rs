//! Writes a synthetic conflict log, for measuring the report on big logs.
//!
//! ```text
//! cargo run --release -p stm-log --example synth_log -- /tmp/big.log 10000000
//! cargo build --release -p stm-log --features cli
//! time target/release/stm-log report /tmp/big.log > /dev/null
//! ```
//!
//! The workload: 4 threads; per transaction a start and a commit record (every third commit
//! read-only); every 8th attempt aborted instead, by one of 6 conflict groups (all three kinds,
//! between 6 source locations); every 32nd attempt pauses first. Times advance by 250 ns per
//! attempt.

use std::io::BufWriter;
use std::path::Path;
use stm_core::ConflictKind;
use stm_log::{AbortReason, ConflictSides, LogWriter, Record};

/// Writes a synthetic log of about `n` records to `path` (also used by `benches/log.rs`).
pub(crate) fn synth(path: &Path, n: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    let mut w = LogWriter::new(BufWriter::with_capacity(1 << 20, f), 0)?;
    for id in 0..6u32 {
        w.write(&Record::Location {
            id,
            file: format!("src/worker_{id}.rs"),
            line: 10 + id,
            column: 5,
        })?;
    }
    let kinds = [
        ConflictKind::WriteRead,
        ConflictKind::WriteWrite,
        ConflictKind::Inevitable,
    ];
    let (mut written, mut i, mut time) = (6u64, 0u64, 1_000u64);
    while written < n {
        let thread = 1 + i % 4;
        time += 250;
        w.write(&Record::Start {
            thread,
            time,
            inevitable: false,
        })?;
        written += 1;
        let g = (i / 8 % 6) as u32;
        let sides = ConflictSides {
            kind: kinds[g as usize % 3],
            this: Some(g),
            other: Some((g + 1) % 6),
            other_thread: Some(1 + (thread % 4)),
        };
        if i % 32 == 5 {
            w.write(&Record::PauseStart {
                thread,
                time: time + 10,
                conflict: sides,
            })?;
            w.write(&Record::PauseEnd {
                thread,
                time: time + 60,
                conflict: sides,
                paused: 50,
            })?;
            written += 2;
        }
        if i % 8 == 3 {
            w.write(&Record::Abort {
                thread,
                time: time + 100,
                reason: AbortReason::Conflict(sides.kind),
                conflict: Some(sides),
                lost: 100,
            })?;
        } else {
            w.write(&Record::Commit {
                thread,
                time: time + 100,
                read_only: i % 3 == 0,
                duration: 100,
            })?;
        }
        written += 1;
        i += 1;
    }
    w.write(&Record::End { time: time + 1_000 })?;
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: synth_log PATH [RECORDS (default 10000000)]")?;
    let n: u64 = match args.next() {
        Some(s) => s.parse().map_err(|e| format!("RECORDS: {e}"))?,
        None => 10_000_000,
    };
    synth(Path::new(&path), n)?;
    println!("wrote {path}: {n} records (plus the end record)");
    Ok(())
}
