//! The `stm-log` command, run as a process: reports, JSON, time lines, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Barrier;
use std::time::{Duration, SystemTime};
use stm_core::{ConflictKind, TVar, atomically};
use stm_log::{AbortReason, ConflictSides, LogGuard, LogWriter, Record};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stm-log-cli-{}-{name}", std::process::id()))
}

fn stm_log(args: &[&str]) -> Output {
    // Run where no `src/main.rs` exists, so that source lines come only from `--source-root`.
    stm_log_in(&std::env::temp_dir(), args)
}

fn stm_log_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stm-log"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run stm-log")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A log with two conflict groups: 3 WRITE_READ aborts of 1 ms each, and one WRITE_WRITE
/// abort of 0.5 ms plus a 2 ms pause on it.
fn log_bytes() -> Vec<u8> {
    let wr = ConflictSides {
        kind: ConflictKind::WriteRead,
        this: Some(0),
        other: Some(1),
        other_thread: Some(2),
    };
    let ww = ConflictSides {
        kind: ConflictKind::WriteWrite,
        this: Some(1),
        other: Some(1),
        other_thread: Some(1),
    };
    let mut w = LogWriter::new(Vec::new(), 0).unwrap();
    let mut recs = vec![
        Record::Location {
            id: 0,
            file: "src/main.rs".into(),
            line: 42,
            column: 17,
        },
        Record::Location {
            id: 1,
            file: "src/main.rs".into(),
            line: 40,
            column: 9,
        },
    ];
    let mut t = 0;
    for _ in 0..3 {
        recs.push(Record::Start {
            thread: 1,
            time: t,
            inevitable: false,
        });
        t += 1_000_000;
        recs.push(Record::Abort {
            thread: 1,
            time: t,
            reason: AbortReason::Conflict(wr.kind),
            conflict: Some(wr),
            lost: 1_000_000,
        });
    }
    recs.push(Record::Start {
        thread: 2,
        time: 0,
        inevitable: false,
    });
    recs.push(Record::PauseStart {
        thread: 2,
        time: 100,
        conflict: ww,
    });
    recs.push(Record::PauseEnd {
        thread: 2,
        time: 2_000_100,
        conflict: ww,
        paused: 2_000_000,
    });
    recs.push(Record::Abort {
        thread: 2,
        time: 2_500_000,
        reason: AbortReason::Conflict(ww.kind),
        conflict: Some(ww),
        lost: 500_000,
    });
    recs.push(Record::Start {
        thread: 2,
        time: 2_600_000,
        inevitable: false,
    });
    recs.push(Record::Commit {
        thread: 2,
        time: 3_000_000,
        read_only: false,
        duration: 400_000,
    });
    recs.push(Record::End { time: 3_100_000 });
    for r in &recs {
        w.write(r).unwrap();
    }
    w.into_inner()
}

#[test]
fn report_prints_totals_then_blocks() {
    let path = temp("good.log");
    std::fs::write(&path, log_bytes()).unwrap();
    let p = path.to_str().unwrap();
    let o = stm_log(&["report", p]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let pid = std::process::id();
    assert!(
        out.starts_with(&format!(
            "log of process {pid}, recorded from 1970-01-01 00:00:00 UTC (format version 2)\nwall time 0.003100s, 15 records\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("aborts 4 (abort rate 80.0%): 1 WRITE_WRITE, 3 WRITE_READ"),
        "{out}"
    );
    // Most expensive first: WRITE_WRITE costs 0.5 + 2 ms, WRITE_READ 3 ms.
    let wr = out
        .find(
            "0.003000s lost in aborts, 0.000s paused (3x WRITE_READ)\n  src/main.rs:42:17\n      \
             (source file not found; --source-root DIR says where to look)\n  src/main.rs:40:9\n",
        )
        .expect(&out);
    let ww = out
        .find("0.000500s lost in aborts, 0.002000s paused (2x WRITE_WRITE)")
        .expect(&out);
    assert!(wr < ww);
    let o = stm_log(&["report", p, "--top", "1"]);
    assert!(o.status.success());
    assert!(!text(&o.stdout).contains("WRITE_WRITE)"));

    // With the sources at hand, each location gets its line of text; these files were written
    // after the log's recording time (1970), so each line says so.
    let root = temp("root");
    std::fs::create_dir_all(root.join("src")).unwrap();
    let mut src: Vec<String> = (1..=45).map(|i| format!("// {i}")).collect();
    src[39] = "        tx.write(&COUNTER, x + 1)?;".into();
    src[41] = "    let x = tx.read(&COUNTER)?;".into();
    std::fs::write(root.join("src/main.rs"), src.join("\n")).unwrap();
    let o = stm_log(&["report", p, "--source-root", root.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(
        out.contains(
            "(3x WRITE_READ)\n  src/main.rs:42:17\n      let x = tx.read(&COUNTER)?;    \
             (changed since the log was recorded)\n  src/main.rs:40:9\n      \
             tx.write(&COUNTER, x + 1)?;    (changed since the log was recorded)\n"
        ),
        "{out}"
    );
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn report_json_is_the_same_content() {
    let path = temp("json.log");
    std::fs::write(&path, log_bytes()).unwrap();
    let o = stm_log(&["report", path.to_str().unwrap(), "--json", "--top", "1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["aborts"], 4);
    assert_eq!(v["lost_ns"], 3_500_000);
    assert_eq!(v["paused_ns"], 2_000_000);
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(v["conflicts"][0]["kind"], "WRITE_READ");
    assert_eq!(v["conflicts"][0]["this"]["file"], "src/main.rs");
    assert_eq!(v["complete"], true);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn truncated_log_reports_the_prefix_and_the_offset() {
    let path = temp("cut.log");
    let b = log_bytes();
    std::fs::write(&path, &b[..b.len() - 3]).unwrap();
    let o = stm_log(&["report", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert!(
        err.contains("truncated log") && err.contains("byte offset"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let out = text(&o.stdout);
    assert!(out.contains("(3x WRITE_READ)"), "{out}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_input_is_a_clear_error() {
    let foreign = temp("foreign.log");
    std::fs::write(&foreign, b"#!/bin/sh\necho this is not a log\n").unwrap();
    let newer = temp("newer.log");
    let mut b = log_bytes();
    b[8] = 3;
    std::fs::write(&newer, &b).unwrap();
    let missing = temp("missing.log");
    for (file, msg) in [
        (&foreign, "not an stm conflict log"),
        (&newer, "version 3 is not supported"),
        (&missing, "read error"),
    ] {
        for cmd in [
            vec!["report", file.to_str().unwrap()],
            vec!["timeline", file.to_str().unwrap(), "-o", "/dev/null"],
        ] {
            let o = stm_log(&cmd);
            assert_eq!(o.status.code(), Some(1), "{cmd:?}");
            let err = text(&o.stderr);
            assert!(
                err.contains("stm-log: error:") && err.contains(msg),
                "{cmd:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    for args in [
        &["report"][..],
        &["report", "x", "--top", "many"],
        &["frobnicate"],
    ] {
        let o = stm_log(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    std::fs::remove_file(&foreign).unwrap();
    std::fs::remove_file(&newer).unwrap();
}

#[test]
fn timeline_draws_an_svg() {
    let path = temp("tl.log");
    let svg = temp("tl.svg");
    std::fs::write(&path, log_bytes()).unwrap();
    let o = stm_log(&[
        "timeline",
        path.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("2 lanes"));
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(200)]);
    assert!(s.contains("thread 1") && s.contains("thread 2"));
    assert!(s.contains("(3x WRITE_READ)"));
    // The three colours: committed, aborted, paused.
    for colour in ["#2EA043", "#D62728", "#FF9900"] {
        assert!(s.to_uppercase().contains(colour), "{colour} missing");
    }
    // Absurd widths are clamped, not allocated.
    let o = stm_log(&[
        "timeline",
        path.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--width",
        "4000000000",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // At most 64 lanes: the busiest threads.
    let mut w = LogWriter::new(Vec::new(), 0).unwrap();
    for t in 1..=100u64 {
        for i in 0..t {
            w.write(&Record::Start {
                thread: t,
                time: 10 * i,
                inevitable: false,
            })
            .unwrap();
            w.write(&Record::Commit {
                thread: t,
                time: 10 * i + 5,
                read_only: true,
                duration: 5,
            })
            .unwrap();
        }
    }
    std::fs::write(&path, w.into_inner()).unwrap();
    let o = stm_log(&[
        "timeline",
        path.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("64 lanes") && err.contains("36 less busy threads left out"),
        "{err}"
    );
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(
        s.contains("thread 100") && !s.contains("thread 36<"),
        "busiest threads kept"
    );
    // A log without transactions has nothing to draw.
    std::fs::write(&path, &log_bytes()[..24]).unwrap();
    let o = stm_log(&[
        "timeline",
        path.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nothing to draw"));
    let o = stm_log(&["report", path.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("no conflicts"));
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&svg).unwrap();
}

/// The line of this file that holds `snippet` (exactly one line must).
fn line_of(snippet: &str) -> String {
    let hits: Vec<&str> = include_str!("cli.rs")
        .lines()
        .filter(|l| l.contains(snippet) && !l.contains("line_of("))
        .collect();
    assert_eq!(hits.len(), 1, "{snippet:?} on {hits:?}");
    hits[0].trim().to_string()
}

/// A log recorded in this project (by this test process, whose working directory is the
/// package's folder, while the compiler named this file relative to the workspace root), then
/// reported with `/` as the current directory: both lines of the conflict come with their text.
#[test]
fn report_run_from_the_root_directory_shows_the_recorded_lines() {
    let path = temp("recorded.log");
    let guard = LogGuard::create(&path).unwrap();
    let x = TVar::new(0u64);
    let (go, done) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut first = true;
            atomically(|tx| {
                let v = tx.read(&x)?; // cli: the read that is invalidated
                if std::mem::take(&mut first) {
                    go.wait();
                    done.wait();
                }
                tx.write(&x, v + 1)
            });
        });
        s.spawn(|| {
            go.wait();
            atomically(|tx| tx.write(&x, 100)); // cli: the write that invalidates it
            done.wait();
        });
    });
    guard.finish().unwrap();
    assert_eq!(x.load(), 101);
    let read = line_of("// cli: the read that is invalidated");
    let write = line_of("// cli: the write that invalidates it");

    let o = stm_log_in(Path::new("/"), &["report", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("(1x WRITE_READ)"), "{out}");
    assert!(out.contains(&format!("      {read}\n")), "{out}");
    assert!(out.contains(&format!("      {write}\n")), "{out}");
    let cwd = std::env::current_dir().unwrap();
    assert!(
        out.contains(&format!("recorded in {}\n", cwd.display())),
        "{out}"
    );

    let o = stm_log_in(
        Path::new("/"),
        &["report", path.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = &v["conflicts"][0];
    assert_eq!(g["this"]["source"].as_str().unwrap().trim(), read);
    assert_eq!(g["other"]["source"].as_str().unwrap().trim(), write);
    let file = Path::new(g["this"]["source_path"].as_str().unwrap());
    assert!(
        file.is_absolute() && file.ends_with("stm-log/tests/cli.rs"),
        "{file:?}"
    );
    assert!(g["this"].get("source_note").is_none(), "{g}");
    assert_eq!(v["process"]["cwd"], cwd.to_str().unwrap());
    std::fs::remove_file(&path).unwrap();
}

/// A log that names a project directory: a line whose file is unchanged prints plainly, one
/// whose file was modified after the recording prints with a note, and a file that is gone
/// says so, in text and in JSON. Source files are found under a parent of the recording's
/// working directory, from `/`.
#[test]
fn sources_changed_or_gone_since_the_recording_say_so() {
    let proj = temp("proj");
    let _ = std::fs::remove_dir_all(&proj);
    std::fs::create_dir_all(proj.join("src")).unwrap();
    std::fs::create_dir_all(proj.join("crate-dir")).unwrap();
    std::fs::write(proj.join("src/same.rs"), "fn a() {}\n    let same = 1;\n").unwrap();
    std::fs::write(proj.join("src/edited.rs"), "    let edited = 2;\n").unwrap();
    let same_time = std::fs::metadata(proj.join("src/same.rs"))
        .unwrap()
        .modified()
        .unwrap();
    // Recorded a minute after `same.rs` was written; `edited.rs` was modified an hour later.
    let recorded = same_time + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(proj.join("src/edited.rs"))
        .unwrap()
        .set_modified(same_time + Duration::from_secs(3600))
        .unwrap();
    let start_ns = recorded
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut w = LogWriter::new(Vec::new(), start_ns).unwrap();
    let loc = |id, file: &str, line| Record::Location {
        id,
        file: file.into(),
        line,
        column: 5,
    };
    let recs = [
        Record::Process {
            cwd: proj.join("crate-dir"),
            exe: PathBuf::new(),
        },
        loc(0, "src/same.rs", 2),
        loc(1, "src/edited.rs", 1),
        loc(2, "src/gone.rs", 7),
        Record::Start {
            thread: 1,
            time: 0,
            inevitable: false,
        },
        Record::Abort {
            thread: 1,
            time: 100,
            reason: AbortReason::Conflict(ConflictKind::WriteRead),
            conflict: Some(ConflictSides {
                kind: ConflictKind::WriteRead,
                this: Some(0),
                other: Some(1),
                other_thread: Some(2),
            }),
            lost: 100,
        },
        Record::UntimedAbort {
            thread: 1,
            time: 200,
            reason: AbortReason::Conflict(ConflictKind::WriteWrite),
            conflict: Some(ConflictSides {
                kind: ConflictKind::WriteWrite,
                this: Some(2),
                other: None,
                other_thread: None,
            }),
        },
    ];
    for r in &recs {
        w.write(r).unwrap();
    }
    let path = temp("changed.log");
    std::fs::write(&path, w.into_inner()).unwrap();

    let o = stm_log_in(Path::new("/"), &["report", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(
            "(1x WRITE_READ)\n  src/same.rs:2:5\n      let same = 1;\n  src/edited.rs:1:5\n      \
             let edited = 2;    (changed since the log was recorded)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "0.000s lost in aborts (and 1 untimed abort), 0.000s paused (1x WRITE_WRITE)\n  \
             src/gone.rs:7:5\n      (source file not found; --source-root DIR says where to look)\n"
        ),
        "{out}"
    );

    let o = stm_log_in(
        Path::new("/"),
        &["report", path.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let wr = &v["conflicts"][0];
    assert_eq!(wr["this"]["source"], "    let same = 1;");
    assert!(wr["this"].get("source_note").is_none(), "{wr}");
    assert_eq!(
        wr["this"]["source_path"],
        proj.join("src/same.rs").to_str().unwrap()
    );
    assert_eq!(wr["other"]["source"], "    let edited = 2;");
    assert_eq!(
        wr["other"]["source_note"],
        "changed since the log was recorded"
    );
    let ww = &v["conflicts"][1];
    assert_eq!(ww["untimed_aborts"], 1);
    assert!(ww["this"].get("source").is_none(), "{ww}");
    assert!(
        ww["this"]["source_note"]
            .as_str()
            .unwrap()
            .contains("source file not found"),
        "{ww}"
    );
    assert_eq!(v["untimed_aborts"], 1);
    std::fs::remove_dir_all(&proj).unwrap();
    std::fs::remove_file(&path).unwrap();
}
