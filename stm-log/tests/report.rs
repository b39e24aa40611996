//! The report's numbers against a synthetic record stream whose costs are known exactly.

use std::path::PathBuf;
use stm_core::ConflictKind::{Inevitable, WriteRead, WriteWrite};
use stm_log::report::{Location, Report};
use stm_log::{AbortReason, ConflictSides, LogWriter, Record};

fn loc(id: u32, file: &str, line: u32, column: u32) -> Record {
    Record::Location {
        id,
        file: file.into(),
        line,
        column,
    }
}

fn sides(kind: stm_core::ConflictKind, this: Option<u32>, other: Option<u32>) -> ConflictSides {
    ConflictSides {
        kind,
        this,
        other,
        other_thread: None,
    }
}

fn abort(thread: u64, time: u64, c: ConflictSides, lost: u64) -> Record {
    Record::Abort {
        thread,
        time,
        reason: AbortReason::Conflict(c.kind),
        conflict: Some(c),
        lost,
    }
}

fn start(thread: u64, time: u64) -> Record {
    Record::Start {
        thread,
        time,
        inevitable: false,
    }
}

/// Three threads; every cost below is charged by hand in the comments.
fn stream() -> Vec<Record> {
    let wr = sides(WriteRead, Some(0), Some(1));
    let inev = sides(Inevitable, Some(2), None);
    let ww = sides(WriteWrite, Some(1), Some(0));
    vec![
        loc(0, "src/a.rs", 10, 5),
        loc(1, "src/b.rs", 20, 9),
        loc(2, "src/c.rs", 3, 1),
        // thread 2: an inevitable transaction, 0..900, token held 10..905
        start(2, 0),
        Record::InevitableBegin {
            thread: 2,
            time: 10,
        },
        // thread 1: attempt 100..400 killed by WRITE_READ (a vs b): 300 lost
        start(1, 100),
        abort(1, 400, wr, 300),
        // thread 1: attempt 500..1000 pauses 550..850 on the inevitable one (300 paused, to
        // INEVITABLE c), then dies of WRITE_READ (a vs b): its whole 500 lost
        start(1, 500),
        Record::PauseStart {
            thread: 1,
            time: 550,
            conflict: inev,
        },
        Record::PauseEnd {
            thread: 1,
            time: 850,
            conflict: inev,
            paused: 300,
        },
        Record::Commit {
            thread: 2,
            time: 900,
            read_only: false,
            duration: 900,
        },
        Record::InevitableEnd {
            thread: 2,
            time: 905,
        },
        abort(1, 1000, wr, 500),
        // thread 2: 1000..1050 killed by WRITE_WRITE (b vs a): 50 lost
        start(2, 1000),
        abort(2, 1050, ww, 50),
        // thread 1 commits 1100..1200
        start(1, 1100),
        Record::Commit {
            thread: 1,
            time: 1200,
            read_only: true,
            duration: 100,
        },
        // thread 2: pauses on WRITE_WRITE (b vs a) from 1150; the log ends at 1300 before the
        // pause does: 150 paused
        start(2, 1100),
        Record::PauseStart {
            thread: 2,
            time: 1150,
            conflict: ww,
        },
        // thread 3: a retry, 1200..1300: not a conflict
        start(3, 1200),
        Record::Abort {
            thread: 3,
            time: 1300,
            reason: AbortReason::Retry,
            conflict: None,
            lost: 100,
        },
    ]
}

fn l(file: &str, line: u32, column: u32) -> Option<Location> {
    Some(Location {
        file: file.into(),
        line,
        column,
        source: None,
    })
}

#[test]
fn totals_and_groups_match_the_hand_count() {
    let r = Report::from_records(&stream());
    assert_eq!(r.records, 21);
    assert_eq!(r.start_ns, 0);
    assert_eq!(r.wall_ns, 1300);
    assert_eq!(r.attempts, 7);
    assert_eq!(r.commits, 2);
    assert_eq!(r.read_only_commits, 1);
    assert_eq!(r.transactions, 2);
    assert_eq!(r.aborts, 3);
    assert_eq!(r.aborts_by_kind, [1, 2, 0]);
    assert_eq!(r.retries, 1);
    assert!((r.abort_rate - 0.5).abs() < 1e-12, "{}", r.abort_rate);
    assert_eq!(r.lost_ns, 850);
    assert_eq!(r.paused_ns, 450);
    assert_eq!(r.committed_ns, 1000);
    assert_eq!(r.other_abort_ns, 100);
    assert_eq!(r.inevitable_runs, 1);
    assert_eq!(r.inevitable_ns, 895);
    assert!(!r.complete);

    let g: Vec<_> = r
        .conflicts
        .iter()
        .map(|g| {
            (
                g.kind,
                g.this.clone(),
                g.other.clone(),
                g.aborts,
                g.pauses,
                g.lost_ns,
                g.paused_ns,
            )
        })
        .collect();
    assert_eq!(
        g,
        vec![
            (
                WriteRead,
                l("src/a.rs", 10, 5),
                l("src/b.rs", 20, 9),
                2,
                0,
                800,
                0
            ),
            (Inevitable, l("src/c.rs", 3, 1), None, 0, 1, 0, 300),
            (
                WriteWrite,
                l("src/b.rs", 20, 9),
                l("src/a.rs", 10, 5),
                1,
                1,
                50,
                150
            ),
        ]
    );
    assert_eq!(r.conflicts[2].count, 2);

    let t: Vec<_> = r
        .threads
        .iter()
        .map(|t| {
            (
                t.thread,
                t.attempts,
                t.commits,
                t.aborts,
                t.lost_ns,
                t.paused_ns,
                t.committed_ns,
            )
        })
        .collect();
    assert_eq!(
        t,
        vec![
            (1, 3, 1, 2, 800, 300, 100),
            (2, 3, 1, 1, 50, 150, 900),
            (3, 1, 0, 0, 0, 0, 0)
        ]
    );
}

#[test]
fn every_pause_is_charged_once_to_its_own_conflict() {
    // Many pauses of two kinds on two threads, interleaved; ends carry their own durations.
    let a = sides(Inevitable, Some(0), None);
    let b = sides(WriteWrite, Some(1), Some(0));
    let mut recs = vec![loc(0, "x.rs", 1, 1), loc(1, "y.rs", 2, 2)];
    let (mut want_a, mut want_b) = (0, 0);
    for i in 0..100u64 {
        let t = i * 1000;
        let (c, th) = if i % 3 == 0 { (a, 1) } else { (b, 2) };
        let d = 10 + i;
        recs.push(Record::PauseStart {
            thread: th,
            time: t,
            conflict: c,
        });
        recs.push(Record::PauseEnd {
            thread: th,
            time: t + d,
            conflict: c,
            paused: d,
        });
        if i % 3 == 0 {
            want_a += d;
        } else {
            want_b += d;
        }
    }
    let r = Report::from_records(&recs);
    let by = |k| r.conflicts.iter().find(|g| g.kind == k).unwrap();
    assert_eq!(by(Inevitable).paused_ns, want_a);
    assert_eq!(by(Inevitable).pauses, 34);
    assert_eq!(by(WriteWrite).paused_ns, want_b);
    assert_eq!(by(WriteWrite).pauses, 66);
    assert_eq!(r.paused_ns, want_a + want_b);
    assert_eq!(r.lost_ns, 0);
    assert!(want_a > 0 && want_b > 0);
}

#[test]
fn equal_locations_under_different_ids_merge() {
    let c0 = sides(WriteRead, Some(0), Some(1));
    let c1 = sides(WriteRead, Some(2), Some(1));
    let recs = vec![
        loc(0, "m.rs", 5, 5),
        loc(1, "n.rs", 6, 6),
        loc(2, "m.rs", 5, 5),
        abort(1, 10, c0, 7),
        abort(1, 20, c1, 8),
        // Unknown location ids are reported, not dropped.
        abort(1, 30, sides(WriteRead, Some(9), None), 1),
    ];
    let r = Report::from_records(&recs);
    assert_eq!(r.conflicts.len(), 2);
    assert_eq!(r.conflicts[0].aborts, 2);
    assert_eq!(r.conflicts[0].lost_ns, 15);
    assert!(
        r.conflicts[1]
            .this
            .as_ref()
            .unwrap()
            .file
            .contains("#9 missing")
    );
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stm-log-report-{}-{name}", std::process::id()))
}

#[test]
fn text_and_json_show_the_blocks_with_source_lines() {
    // A source tree holding the files the locations name.
    let root = temp("src-root");
    std::fs::create_dir_all(root.join("src")).unwrap();
    let mut a = String::new();
    for i in 1..=12 {
        a.push_str(&if i == 10 {
            "    let x = tx.read(&COUNTER)?;\n".to_string()
        } else {
            format!("// line {i}\n")
        });
    }
    std::fs::write(root.join("src/a.rs"), a).unwrap();
    let r = Report::from_records(&stream());
    let text = r.render_text(2, Some(&root));
    assert!(text.contains("wall time 0.000001s"), "{text}");
    assert!(text.contains("most expensive conflicts (2 of 3)"), "{text}");
    // A file that is not there says so.
    let block = "0.000001s lost in aborts, 0.000s paused (2x WRITE_READ)\n  src/a.rs:10:5\n      \
                 let x = tx.read(&COUNTER)?;\n  src/b.rs:20:9\n      \
                 (source file not found; --source-root DIR says where to look)\n";
    assert!(text.contains(block), "{text}");
    assert!(
        text.contains(
            "(1x INEVITABLE)\n  src/c.rs:3:1\n      (source file not found; --source-root DIR \
             says where to look)\n  (location unknown)"
        ),
        "{text}"
    );
    assert!(!text.contains("WRITE_WRITE)"), "top 2 only: {text}");

    let mut j = r.clone();
    j.truncate(1);
    j.attach_sources(Some(&root));
    let v: serde_json::Value = serde_json::from_str(&j.to_json()).unwrap();
    assert_eq!(v["commits"], 2);
    assert_eq!(v["lost_ns"], 850);
    assert_eq!(v["paused_ns"], 450);
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(v["conflicts"][0]["kind"], "WRITE_READ");
    assert_eq!(v["conflicts"][0]["lost_ns"], 800);
    assert_eq!(v["conflicts"][0]["this"]["line"], 10);
    assert_eq!(
        v["conflicts"][0]["this"]["source"],
        "    let x = tx.read(&COUNTER)?;"
    );
    assert_eq!(v["threads"][1]["paused_ns"], 150);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_truncated_file_reports_the_records_before_the_damage() {
    let path = temp("truncated.log");
    let recs = stream();
    let mut w = LogWriter::new(Vec::new(), 0).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    let bytes = w.into_inner();
    let whole = Report::from_records(&recs);
    // Cut the last record (the retry abort) in half.
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    let r = Report::from_path(&path).unwrap();
    let d = r.damage.as_ref().expect("damage reported");
    assert!(d.offset.unwrap() > 24);
    assert!(d.message.contains("truncated"), "{}", d.message);
    assert_eq!(r.records, whole.records - 1);
    assert_eq!(r.retries, 0);
    assert_eq!(r.commits, whole.commits);
    assert!(r.render_text(10, None).contains("warning: truncated log"));
    std::fs::remove_file(&path).unwrap();
}

/// Untimed commits (format version 2) count as commits and attempts; their time is estimated
/// from the timed commits of the same thread, or of every thread when it has none.
#[test]
fn untimed_commits_are_counted_and_estimated() {
    let commit = |thread, time, duration| Record::Commit {
        thread,
        time,
        read_only: false,
        duration,
    };
    let untimed = |thread| Record::UntimedCommit {
        thread,
        read_only: true,
    };
    let recs = vec![
        start(1, 0),
        commit(1, 100, 100),
        untimed(1),
        untimed(1),
        start(1, 200),
        commit(1, 500, 300),
        untimed(1),
        untimed(2),
        untimed(2),
    ];
    let r = Report::from_records(&recs);
    assert_eq!(
        (r.commits, r.untimed_commits, r.read_only_commits),
        (7, 5, 5)
    );
    assert_eq!((r.attempts, r.transactions), (7, 7));
    assert_eq!(r.committed_ns, 400);
    // Thread 1: 400 + 3 x 200; thread 2: no timed commit, 2 x 200 (the mean of all).
    assert_eq!(r.committed_estimated_ns, 1_400);
    let t: Vec<_> = r
        .threads
        .iter()
        .map(|t| {
            (
                t.thread,
                t.attempts,
                t.untimed_commits,
                t.committed_ns,
                t.committed_estimated_ns,
            )
        })
        .collect();
    assert_eq!(t, vec![(1, 5, 3, 400, 1_000), (2, 2, 2, 0, 400)]);
    let text = r.render_text(10, None);
    assert!(
        text.contains(
            "in committed attempts ~0.000001s\n  (~: estimated; 5 of 7 commits were not timed"
        ),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["committed_estimated_ns"], 1_400);
    assert_eq!(v["threads"][1]["untimed_commits"], 2);
}
