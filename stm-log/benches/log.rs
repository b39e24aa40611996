//! Benchmarks of the conflict log.
//!
//! - `conflict_free_tx`: one thread, a transaction that reads and writes one private `TVar`
//!   (never a conflict): with no recorder installed, with the recorder writing to `/dev/null`
//!   (the cost on the transaction's thread: clock reads, encoding, the per-thread ring, with the
//!   file writes on the background flusher), and with the recorder writing a real file in the
//!   temporary directory. Target: recorder on at most 1.25x the time with no recorder.
//! - `report_10m`: `Report::from_path` on a synthetic 10-million-record log (4 threads; per
//!   transaction a start and a commit, every 8th attempt aborted by one of 6 conflict groups,
//!   every 32nd with a pause). Target: under 5 s.
//!
//! Run: `cargo bench -p stm-log --bench log`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stm_core::{ConflictKind, TVar, atomically};
use stm_log::{AbortReason, ConflictSides, LogGuard, LogWriter, Record, Report};

fn conflict_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("conflict_free_tx");
    g.measurement_time(Duration::from_secs(3));
    let v = TVar::new(0u64);
    let tx = || atomically(|tx| tx.modify(&v, |x| x.wrapping_add(1)));
    g.bench_function("no_recorder", |b| b.iter(|| black_box(tx())));
    {
        let guard = LogGuard::create("/dev/null").expect("recorder on /dev/null");
        g.bench_function("recorder_dev_null", |b| b.iter(|| black_box(tx())));
        guard.finish().expect("finish");
    }
    {
        let path = std::env::temp_dir().join(format!("stm-log-bench-{}.log", std::process::id()));
        let guard = LogGuard::create(&path).expect("recorder on a file");
        g.bench_function("recorder_file", |b| b.iter(|| black_box(tx())));
        guard.finish().expect("finish");
        let _ = std::fs::remove_file(&path);
    }
    g.bench_function("no_recorder_again", |b| b.iter(|| black_box(tx())));
    g.finish();
}

/// Writes a synthetic log of about `n` records to `path` (the same generator as the
/// `synth_log` example).
pub fn synth(path: &Path, n: u64) {
    let f = std::fs::File::create(path).expect("create");
    let mut w = LogWriter::new(BufWriter::with_capacity(1 << 20, f), 0).expect("header");
    for id in 0..6u32 {
        w.write(&Record::Location {
            id,
            file: format!("src/worker_{id}.rs"),
            line: 10 + id,
            column: 5,
        })
        .expect("write");
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
        })
        .expect("write");
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
            })
            .expect("write");
            w.write(&Record::PauseEnd {
                thread,
                time: time + 60,
                conflict: sides,
                paused: 50,
            })
            .expect("write");
            written += 2;
        }
        if i % 8 == 3 {
            w.write(&Record::Abort {
                thread,
                time: time + 100,
                reason: AbortReason::Conflict(sides.kind),
                conflict: Some(sides),
                lost: 100,
            })
            .expect("write");
        } else {
            w.write(&Record::Commit {
                thread,
                time: time + 100,
                read_only: i % 3 == 0,
                duration: 100,
            })
            .expect("write");
        }
        written += 1;
        i += 1;
    }
    w.write(&Record::End { time: time + 1_000 }).expect("write");
    w.flush().expect("flush");
}

fn report_10m(c: &mut Criterion) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("stm-log-10m-{}.log", std::process::id()));
    synth(&path, 10_000_000);
    let mut g = c.benchmark_group("report_10m");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("report_from_path", |b| {
        b.iter(|| {
            let r = Report::from_path(&path).expect("report");
            assert!(r.records >= 10_000_000);
            black_box(r)
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

// The macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, conflict_free, report_10m);
}
criterion_main!(group::benches);
