//! Benchmarks of the conflict log.
//!
//! - `conflict_free_tx`: one thread, a transaction that reads and writes one private `TVar`
//!   (never a conflict): with no recorder installed, with a sink that does nothing (stm-core's
//!   own cost of a sink: it reads the clock at every event), with the recorder writing to `/dev/null`
//!   (the cost on the transaction's thread: clock reads, encoding, the per-thread ring, with the
//!   file writes on the background flusher), and with the recorder writing a real file in the
//!   temporary directory. Target: recorder on at most 1.25x the time with no recorder.
//! - `report_10m`: `Report::from_path` on a synthetic 10-million-record log (4 threads; per
//!   transaction a start and a commit, every 8th attempt aborted by one of 6 conflict groups,
//!   every 32nd with a pause). Target: under 5 s.
//!
//! - `instant_now`: one `Instant::now()`, for scale.
//! - `recorder_start_and_commit_events`: the recorder alone, the two events of a transaction.
//!
//! Run: `cargo bench -p stm-log --bench log` (a filter such as `-- conflict_free` runs one group).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stm_core::{ConflictKind, TVar, atomically};
use stm_log::{AbortReason, ConflictSides, LogGuard, LogWriter, Record, Report};

/// A sink that does nothing: isolates stm-core's own cost of having a sink.
struct NoopSink;

impl stm_core::EventSink for NoopSink {
    fn event(&self, e: &stm_core::Event) {
        black_box(e);
    }
}

/// The cost of one monotonic clock read, which stm-core pays several times per transaction
/// when a sink is installed.
fn clock(c: &mut Criterion) {
    c.bench_function("instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
}

/// The recorder alone, without stm-core: one start and one commit event (what every
/// transaction delivers) through `Recorder::event`, to `/dev/null`.
fn recorder_events(c: &mut Criterion) {
    use stm_core::{Event, EventKind, EventSink};
    let rec = stm_log::Recorder::create("/dev/null").expect("recorder");
    let t = rec.start() + Duration::from_millis(1);
    let start = Event {
        thread: 1,
        time: t,
        kind: EventKind::Start { inevitable: false },
    };
    let commit = Event {
        thread: 1,
        time: t + Duration::from_nanos(80),
        kind: EventKind::Commit {
            read_only: false,
            duration: Duration::from_nanos(80),
        },
    };
    c.bench_function("recorder_start_and_commit_events", |b| {
        b.iter(|| {
            rec.event(black_box(&start));
            rec.event(black_box(&commit));
        })
    });
    rec.close().expect("close");
}

fn conflict_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("conflict_free_tx");
    g.measurement_time(Duration::from_secs(3));
    let v = TVar::new(0u64);
    let tx = || atomically(|tx| tx.modify(&v, |x| x.wrapping_add(1)));
    g.bench_function("no_recorder", |b| b.iter(|| black_box(tx())));
    {
        // What stm-core itself does when any sink is installed (clock reads, side table).
        stm_core::set_event_sink(Some(std::sync::Arc::new(NoopSink)));
        g.bench_function("noop_sink", |b| b.iter(|| black_box(tx())));
        stm_core::set_event_sink(None);
    }
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
    criterion_group!(benches, clock, recorder_events, conflict_free, report_10m);
}
criterion_main!(group::benches);
