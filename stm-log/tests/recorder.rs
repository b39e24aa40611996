//! The recorder end to end: crafted events through a `Recorder`, and real threads whose
//! conflicts are forced at known source lines through the installed sink.

use std::panic::Location;
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex, mpsc};
use std::time::Duration;
use stm_core::{
    Conflict, ConflictKind, Event, EventKind, EventSink, TVar, atomically, inevitably, thread_id,
};
use stm_log::report::Report;
use stm_log::{LogGuard, LogReader, Record, Recorder};

/// Tests that install the global sink run one at a time.
static SINK: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SINK.lock().unwrap_or_else(|p| p.into_inner())
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stm-log-rec-{}-{name}", std::process::id()))
}

fn records(path: &Path) -> Vec<Record> {
    LogReader::open(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const THIS_FILE: &str = file!();

/// The line of this file that holds `snippet` (exactly one line must).
fn line_of(snippet: &str) -> u32 {
    let hits: Vec<usize> = include_str!("recorder.rs")
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(snippet) && !l.contains("line_of(") && !l.contains("contains("))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{snippet:?} on lines {hits:?}");
    hits[0] as u32
}

#[test]
fn crafted_events_come_back_in_order_with_interned_locations() {
    let path = temp("crafted.log");
    let rec = Recorder::create(&path).unwrap();
    let t0 = rec.start();
    let here: &'static Location<'static> = Location::caller();
    let there: &'static Location<'static> = Location::caller();
    let conflict = Conflict {
        kind: ConflictKind::WriteWrite,
        this: Some(here),
        other: Some(there),
        other_thread: Some(9),
    };
    let at = |ns| t0 + Duration::from_nanos(ns);
    // Enough events to fill the 64 KiB per-thread ring several times over.
    const N: u64 = 20_000;
    for i in 0..N {
        rec.event(&Event {
            thread: 5,
            time: at(10 * i),
            kind: if i % 2 == 0 {
                EventKind::Start { inevitable: false }
            } else {
                EventKind::Abort {
                    cause: stm_core::AbortCause::Conflict(ConflictKind::WriteWrite),
                    conflict: Some(conflict),
                    lost: Duration::from_nanos(7),
                }
            },
        });
    }
    // Another thread's events, through the same recorder.
    std::thread::scope(|s| {
        s.spawn(|| {
            rec.event(&Event {
                thread: 6,
                time: at(3),
                kind: EventKind::InevitableBegin,
            });
            rec.event(&Event {
                thread: 6,
                time: at(4),
                kind: EventKind::InevitableEnd,
            });
        });
    });
    rec.flush().unwrap();
    rec.close().unwrap();
    rec.close().unwrap(); // idempotent

    let recs = records(&path);
    let locs: Vec<&Record> = recs
        .iter()
        .filter(|r| matches!(r, Record::Location { .. }))
        .collect();
    assert_eq!(locs.len(), 2, "each location once: {locs:?}");
    assert!(matches!(
        locs[0],
        Record::Location { id: 0, file, line, .. } if file == THIS_FILE && *line == here.line()
    ));
    let mine: Vec<&Record> = recs
        .iter()
        .filter(|r| {
            matches!(
                r,
                Record::Start { thread: 5, .. } | Record::Abort { thread: 5, .. }
            )
        })
        .collect();
    assert_eq!(mine.len() as u64, N);
    for (i, r) in mine.iter().enumerate() {
        assert_eq!(r.time(), Some(10 * i as u64), "thread order and time base");
        if let Record::Abort {
            conflict: Some(c),
            lost,
            ..
        } = r
        {
            assert_eq!(
                (c.this, c.other, c.other_thread, *lost),
                (Some(0), Some(1), Some(9), 7)
            );
        }
    }
    let other: Vec<&Record> = recs
        .iter()
        .filter(|r| {
            matches!(
                r,
                Record::InevitableBegin { thread: 6, .. } | Record::InevitableEnd { thread: 6, .. }
            )
        })
        .collect();
    assert_eq!(other.len(), 2);
    assert!(matches!(recs.last(), Some(Record::End { .. })));
    std::fs::remove_file(&path).unwrap();
}

/// Thread A reads, thread B commits a write to the same word, A writes and tries to commit:
/// exactly one WRITE_READ abort, naming A's read and B's write.
#[test]
fn forced_write_read_conflict_names_both_lines() {
    let _g = serial();
    let path = temp("forced-wr.log");
    let guard = LogGuard::create(&path).unwrap();
    assert!(stm_core::event_sink_installed());
    let x = TVar::new(0u64);
    let (go, done) = (Barrier::new(2), Barrier::new(2));
    let (tx_b, rx_b) = mpsc::channel();
    let a_id = std::sync::atomic::AtomicU64::new(0);
    let read_line = line_of("let v = tx.read(&x)?;");
    let write_line = line_of("atomically(|tx| tx.write(&x, 100));");
    {
        let mut first = true;
        std::thread::scope(|s| {
            s.spawn(|| {
                a_id.store(thread_id(), std::sync::atomic::Ordering::Relaxed);
                atomically(|tx| {
                    let v = tx.read(&x)?;
                    if first {
                        first = false;
                        go.wait(); // let B commit now
                        done.wait();
                    }
                    tx.write(&x, v + 1)
                });
            });
            s.spawn(|| {
                tx_b.send(thread_id()).unwrap();
                go.wait();
                atomically(|tx| tx.write(&x, 100));
                done.wait();
            });
        });
    }
    let b = rx_b.recv().unwrap();
    assert_eq!(x.load(), 101);
    guard.finish().unwrap();
    assert!(!stm_core::event_sink_installed());

    let r = Report::from_path(&path).unwrap();
    assert!(r.complete && r.damage.is_none());
    assert_eq!(r.commits, 2);
    assert_eq!(r.aborts, 1);
    assert_eq!(r.aborts_by_kind, [0, 1, 0]);
    assert_eq!(r.conflicts.len(), 1);
    let g = &r.conflicts[0];
    assert_eq!(g.kind, ConflictKind::WriteRead);
    assert_eq!((g.aborts, g.pauses), (1, 0));
    assert!(g.lost_ns > 0);
    assert_eq!(g.lost_ns, r.lost_ns);
    let this = g.this.as_ref().unwrap();
    let other = g.other.as_ref().unwrap();
    assert_eq!((this.file.as_str(), this.line), (THIS_FILE, read_line));
    assert_eq!((other.file.as_str(), other.line), (THIS_FILE, write_line));
    // The abort record names B as the other thread.
    let abort_other = records(&path).into_iter().find_map(|r| match r {
        Record::Abort {
            conflict: Some(c), ..
        } => Some(c.other_thread),
        _ => None,
    });
    // B, or unknown: stm-core (as of this writing) names the aborting thread itself when the
    // read word is also in its write set, which the recorder drops as meaningless.
    let a = a_id.load(std::sync::atomic::Ordering::Relaxed);
    let abort_other = abort_other.expect("an abort record");
    assert_ne!(
        abort_other,
        Some(a),
        "a thread does not conflict with itself"
    );
    assert!(
        abort_other.is_none() || abort_other == Some(b),
        "{abort_other:?}"
    );
    // And the text report shows the block with both source lines: the file name is relative to
    // the workspace root, a parent of the recording's working directory (the crate's folder).
    let text = r.render_text(10, None);
    assert!(text.contains("(1x WRITE_READ)"), "{text}");
    assert!(text.contains("let v = tx.read(&x)?;"), "{text}");
    assert!(
        text.contains("atomically(|tx| tx.write(&x, 100));"),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// A runs inevitably and holds a word B wants to read: B pauses (INEVITABLE) until A commits.
/// A waits until B's pause start is in the log, so the pause surely happens.
#[test]
fn forced_inevitable_pause_is_charged_as_paused() {
    let _g = serial();
    let path = temp("forced-pause.log");
    let guard = LogGuard::create(&path).unwrap();
    let y = TVar::new(0u64);
    let go = Barrier::new(2);
    let (tx_b, rx_b) = mpsc::channel();
    let read_line = line_of("atomically(|tx| tx.read(y));");
    std::thread::scope(|s| {
        let (guard, path, y, go) = (&guard, &path, &y, &go);
        s.spawn(move || {
            inevitably(|tx| {
                tx.write(y, 1).unwrap();
                go.wait();
                let b: u64 = rx_b.recv().unwrap();
                // Bounded wait for B's pause start to reach the log.
                for _ in 0..20_000 {
                    guard.flush().unwrap();
                    let paused = LogReader::open(path)
                        .unwrap()
                        .any(|r| matches!(r, Ok(Record::PauseStart { thread, .. }) if thread == b));
                    if paused {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                panic!("B never paused");
            });
        });
        s.spawn(|| {
            tx_b.send(thread_id()).unwrap();
            go.wait();
            let v = atomically(|tx| tx.read(y));
            assert_eq!(v, 1);
        });
    });
    guard.finish().unwrap();

    let recs = records(&path);
    let recorded: u64 = recs
        .iter()
        .filter_map(|r| match r {
            Record::PauseEnd { paused, .. } => Some(*paused),
            _ => None,
        })
        .sum();
    let r = Report::from_path(&path).unwrap();
    assert!(r.paused_ns > 0);
    assert_eq!(r.paused_ns, recorded);
    let g = r
        .conflicts
        .iter()
        .find(|g| g.kind == ConflictKind::Inevitable)
        .expect("an INEVITABLE group");
    assert_eq!(g.paused_ns, recorded);
    assert!(g.pauses >= 1);
    let this = g.this.as_ref().unwrap();
    assert_eq!((this.file.as_str(), this.line), (THIS_FILE, read_line));
    assert_eq!(r.inevitable_runs, 1);
    // B started waiting while A held the token.
    let began = recs.iter().find_map(|r| match r {
        Record::InevitableBegin { time, .. } => Some(*time),
        _ => None,
    });
    let paused_at = recs.iter().find_map(|r| match r {
        Record::PauseStart { time, .. } => Some(*time),
        _ => None,
    });
    assert!(began.unwrap() <= paused_at.unwrap());
    let text = r.render_text(10, None);
    assert!(!text.contains("0.000s paused (1x INEVITABLE)"), "{text}");
    std::fs::remove_file(&path).unwrap();
}

/// Two threads increment one counter: bounded operation counts, real contention (how much
/// depends on the machine). Every conflict must name the read or the write of the increment.
#[test]
fn contended_counter_conflicts_point_at_the_increment() {
    let _g = serial();
    let path = temp("counter.log");
    let guard = LogGuard::create(&path).unwrap();
    let c = TVar::new(0u64);
    const PER_THREAD: u64 = 3_000;
    let read_line = line_of("let v = tx.read(&c)?;");
    let write_line = line_of("tx.write(&c, v + 1)");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    atomically(|tx| {
                        let v = tx.read(&c)?;
                        tx.write(&c, v + 1)
                    });
                }
            });
        }
    });
    guard.finish().unwrap();
    assert_eq!(c.load(), 2 * PER_THREAD);
    let r = Report::from_path(&path).unwrap();
    assert_eq!(r.commits, 2 * PER_THREAD);
    assert_eq!(r.threads.len(), 2);
    assert_eq!(
        r.attempts,
        r.commits + r.aborts + r.retries + r.cancels + r.panics
    );
    assert_eq!(
        r.lost_ns,
        r.conflicts.iter().map(|g| g.lost_ns).sum::<u64>()
    );
    assert_eq!(
        r.paused_ns,
        r.conflicts.iter().map(|g| g.paused_ns).sum::<u64>()
    );
    for g in &r.conflicts {
        for l in [&g.this, &g.other].into_iter().flatten() {
            assert_eq!(l.file, THIS_FILE);
            assert!(
                l.line == read_line || l.line == write_line,
                "{l} is not the increment ({read_line}/{write_line})"
            );
        }
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn guard_uninstalls_on_drop_and_reports_create_errors() {
    let _g = serial();
    let path = temp("drop.log");
    {
        let _guard = LogGuard::create(&path).unwrap();
        assert!(stm_core::event_sink_installed());
        let v = TVar::new(1u8);
        atomically(|tx| tx.write(&v, 2));
    }
    assert!(!stm_core::event_sink_installed());
    let r = Report::from_path(&path).unwrap();
    assert!(r.complete);
    assert_eq!(r.commits, 1);
    std::fs::remove_file(&path).unwrap();

    let e = LogGuard::create("/nonexistent-dir/x/stm.log").unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir/x/stm.log"), "{e}");
    assert!(!stm_core::event_sink_installed());
}

/// Several threads record at once while the flusher drains: nothing is lost, nothing is
/// reordered within a thread, and every attempt is a start followed by its end.
#[test]
fn concurrent_threads_lose_nothing_and_keep_their_order() {
    let _g = serial();
    let path = temp("concurrent.log");
    let guard = LogGuard::create(&path).unwrap();
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 5_000;
    let own: Vec<TVar<u64>> = (0..THREADS).map(|_| TVar::new(0)).collect();
    let shared = TVar::new(0u64);
    std::thread::scope(|s| {
        for v in &own {
            let shared = &shared;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    atomically(|tx| {
                        tx.modify(v, |x| x + 1)?;
                        if i % 16 == 0 {
                            tx.modify(shared, |x| x + 1)?;
                        }
                        Ok(())
                    });
                }
            });
        }
    });
    guard.finish().unwrap();
    let recs = records(&path);
    let r = Report::from_records(&recs);
    assert_eq!(r.commits, THREADS as u64 * PER_THREAD);
    assert_eq!(r.threads.len(), THREADS);
    for t in &r.threads {
        assert_eq!(t.commits, PER_THREAD);
    }
    assert_eq!(r.attempts, r.commits + r.aborts);
    // Per thread: times never go back, and starts and ends alternate.
    let mut last: std::collections::HashMap<u64, (u64, bool)> = Default::default();
    for rec in &recs {
        let (thread, starts) = match rec {
            Record::Start { thread, .. } => (*thread, true),
            Record::Commit { thread, .. } | Record::Abort { thread, .. } => (*thread, false),
            _ => continue,
        };
        let time = rec.time().unwrap();
        let (prev_time, open) = last.get(&thread).copied().unwrap_or((0, false));
        assert!(time >= prev_time, "thread {thread}: time went back");
        assert_ne!(
            open, starts,
            "thread {thread}: start and end must alternate"
        );
        last.insert(thread, (time, starts));
    }
    assert!(last.values().all(|&(_, open)| !open), "every attempt ended");
    std::fs::remove_file(&path).unwrap();
}

/// Without any flush call, the background flusher moves recorded events to the file.
#[test]
fn background_flusher_writes_without_being_asked() {
    let path = temp("background.log");
    let rec = Recorder::create(&path).unwrap();
    let t = rec.start();
    for i in 0..10u64 {
        rec.event(&Event {
            thread: 77,
            time: t + Duration::from_nanos(i),
            kind: EventKind::Start { inevitable: false },
        });
    }
    // The flusher runs every 50 ms: poll the file, a bounded number of times.
    let mut seen = 0;
    for _ in 0..400 {
        seen = LogReader::open(&path)
            .unwrap()
            .filter(|r| matches!(r, Ok(Record::Start { thread: 77, .. })))
            .count();
        assert!(seen <= 10);
        if seen == 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen, 10, "the flusher did not write the events");
    rec.close().unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// A thread without conflicts: its first 1024 attempts are timed, then about one in 64; every
/// attempt is still counted, and the untimed commits are estimated.
#[test]
fn quiet_threads_time_a_sample_and_count_every_attempt() {
    let _g = serial();
    let path = temp("sampled.log");
    let guard = LogGuard::create(&path).unwrap();
    const N: u64 = 6_000;
    let me = std::thread::scope(|s| {
        s.spawn(|| {
            let v = TVar::new(0u64);
            for _ in 0..N {
                atomically(|tx| tx.modify(&v, |x| x + 1));
            }
            thread_id()
        })
        .join()
        .unwrap()
    });
    guard.finish().unwrap();
    let r = Report::from_path(&path).unwrap();
    let t = r.threads.iter().find(|t| t.thread == me).unwrap();
    assert_eq!((t.attempts, t.commits, t.aborts), (N, N, 0));
    let quiet = N - Recorder::TIMING.after_conflict as u64;
    // About 63 in 64 of the quiet attempts are untimed (expected 4898, standard deviation
    // about 8).
    assert!(
        (quiet * 9 / 10..quiet).contains(&t.untimed_commits),
        "{} untimed of {quiet}",
        t.untimed_commits
    );
    assert!(t.committed_estimated_ns > t.committed_ns, "{t:?}");
    let recs = records(&path);
    let starts = recs
        .iter()
        .filter(|r| matches!(r, Record::Start { thread, .. } if *thread == me))
        .count() as u64;
    let untimed = recs
        .iter()
        .filter(|r| matches!(r, Record::UntimedCommit { thread, .. } if *thread == me))
        .count() as u64;
    assert_eq!((starts + untimed, untimed), (N, t.untimed_commits));
    // The first records of the thread: 1024 timed attempts in a row.
    let first: Vec<&Record> = recs
        .iter()
        .filter(|r| {
            matches!(r, Record::Start { thread, .. } | Record::Commit { thread, .. } | Record::UntimedCommit { thread, .. } if *thread == me)
        })
        .take(2048)
        .collect();
    assert!(
        first
            .iter()
            .all(|r| !matches!(r, Record::UntimedCommit { .. })),
        "the first 1024 attempts are timed"
    );
    // The log starts with the process record: where the recording ran.
    assert!(matches!(
        recs.first(),
        Some(Record::Process { cwd, exe }) if *cwd == std::env::current_dir().unwrap()
            && *exe == std::env::current_exe().unwrap()
    ));
    std::fs::remove_file(&path).unwrap();
}

/// The two untimed events through a `Recorder`: they come back as their records, the abort's
/// locations interned.
#[test]
fn untimed_events_come_back_as_their_records() {
    let path = temp("untimed.log");
    let rec = Recorder::create(&path).unwrap();
    let here: &'static Location<'static> = Location::caller();
    rec.event(&Event {
        thread: 3,
        time: stm_core::Timestamp::ORIGIN,
        kind: EventKind::UntimedCommit { read_only: true },
    });
    rec.event(&Event {
        thread: 3,
        time: rec.start() + Duration::from_nanos(500),
        kind: EventKind::UntimedAbort {
            cause: stm_core::AbortCause::Conflict(ConflictKind::WriteRead),
            conflict: Some(Conflict {
                kind: ConflictKind::WriteRead,
                this: Some(here),
                other: None,
                other_thread: Some(3), // itself: dropped
            }),
        },
    });
    rec.close().unwrap();
    let recs: Vec<Record> = records(&path)
        .into_iter()
        .filter(|r| !matches!(r, Record::Process { .. } | Record::End { .. }))
        .collect();
    // A location goes to the file when it is first met, ahead of the ring's records.
    assert_eq!(
        recs,
        vec![
            Record::Location {
                id: 0,
                file: THIS_FILE.into(),
                line: here.line(),
                column: here.column(),
            },
            Record::UntimedCommit {
                thread: 3,
                read_only: true
            },
            Record::UntimedAbort {
                thread: 3,
                time: 500,
                reason: stm_log::AbortReason::Conflict(ConflictKind::WriteRead),
                conflict: Some(stm_log::ConflictSides {
                    kind: ConflictKind::WriteRead,
                    this: Some(0),
                    other: None,
                    other_thread: None,
                }),
            },
        ]
    );
    std::fs::remove_file(&path).unwrap();
}
