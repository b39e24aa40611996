//! Benchmarks of the conflict log.
//!
//! - `conflict_free_tx`: one thread, a transaction that reads and writes one private `TVar`
//!   (never a conflict): with no recorder installed; with a sink that does nothing and times
//!   every attempt (stm-core's own cost of such a sink: it reads the event clock when an attempt
//!   starts and ends, and calls the sink twice); with a sink that does nothing and asks for the
//!   recorder's sampled timing (`Recorder::TIMING`: on this quiet thread about one attempt in 64
//!   is timed, the others cost one call and no clock read); with the recorder writing to
//!   `/dev/null` (its clock reads, encoding, the per-thread ring and its drains, without the
//!   kernel's copy of the bytes), and with the recorder writing a real file in the temporary
//!   directory (the thread drains its own ring when full, so that copy is on the transaction's
//!   thread too). Target (issue #13): recorder on at most 1.5x the time with no recorder.
//! - `report_10m`: `Report::from_path` on a synthetic 10-million-record log (4 threads; per
//!   transaction a start and a commit, every 8th attempt aborted by one of 6 conflict groups,
//!   every 32nd with a pause). Target: under 5 s.
//!
//! - `instant_vs_timestamp`: one `Instant::now()` and one `stm_core::Timestamp::now()` (the event
//!   clock, which stm-core reads twice per timed attempt), for scale.
//! - `recorder_start_and_commit_events`: the recorder alone, the two events of a timed
//!   transaction; `recorder_untimed_commit_event`: the one event of an untimed one.
//!
//! Run: `cargo bench -p stm-log --bench log` (a filter such as `-- conflict_free` runs one group).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;
use stm_core::{TVar, atomically};
use stm_log::{LogGuard, Report};

// The generator of the `synth_log` example (its `main` is unused here).
#[allow(dead_code)]
#[path = "../examples/synth_log.rs"]
mod synth_log;
use synth_log::synth;

/// A sink that does nothing: isolates stm-core's own cost of having a sink.
struct NoopSink;

impl stm_core::EventSink for NoopSink {
    fn event(&self, e: &stm_core::Event) {
        black_box(e);
    }
}

/// A sink that does nothing, with the recorder's sampled timing.
struct NoopSampledSink;

impl stm_core::EventSink for NoopSampledSink {
    fn event(&self, e: &stm_core::Event) {
        black_box(e);
    }

    fn timing(&self) -> stm_core::Timing {
        stm_log::Recorder::TIMING
    }
}

/// The cost of one monotonic clock read, and of one read of the event clock, which stm-core pays
/// twice per transaction when a sink is installed.
fn clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("instant_vs_timestamp");
    g.bench_function("instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("timestamp_now", |b| {
        b.iter(|| black_box(stm_core::Timestamp::now()))
    });
    g.finish();
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
    let untimed = Event {
        thread: 1,
        time: stm_core::Timestamp::ORIGIN,
        kind: EventKind::UntimedCommit { read_only: false },
    };
    c.bench_function("recorder_untimed_commit_event", |b| {
        b.iter(|| rec.event(black_box(&untimed)))
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
        stm_core::set_event_sink(Some(std::sync::Arc::new(NoopSampledSink)));
        g.bench_function("noop_sampled_sink", |b| b.iter(|| black_box(tx())));
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

fn report_10m(c: &mut Criterion) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("stm-log-10m-{}.log", std::process::id()));
    synth(&path, 10_000_000).expect("write the synthetic log");
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
