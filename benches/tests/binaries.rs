//! The binaries end to end, each bounded by a request or operation count.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("the binary starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn primes_bench_runs_each_mode_and_reads_its_conflict_log() {
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_primes-bench"),
        &[
            "--modes",
            "serial,1,stm2",
            "--requests",
            "40",
            "--warmup",
            "0s",
            "-c",
            "4",
            "-n",
            "100",
            "--long-n",
            "20000",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["ok"], 40, "{r}");
        assert_eq!(r["errors"].as_object().map(|e| e.len()), Some(0), "{r}");
    }
    assert_eq!(rows[0]["mode"], "serial");
    assert_eq!(rows[0]["ratio_to_serial"], 1.0);
    assert_eq!(rows[2]["workers"], 2);
    assert!(
        v["conflicts"].is_object(),
        "the STM runs' log report is attached"
    );
    // Short requests beside one long one: on the 2-worker server, the same short load idle and
    // beside the long request (request-count mode: 40 each).
    let b = &v["beside_long"];
    assert_eq!(b["workers"], 2, "{b}");
    assert_eq!(b["long_path"], "/20000", "{b}");
    for half in ["idle", "beside"] {
        assert_eq!(b[half]["ok"], 40, "{half}: {b}");
        assert_eq!(
            b[half]["errors"].as_object().map(|e| e.len()),
            Some(0),
            "{b}"
        );
    }
    assert!(b["p99_ratio"].is_number(), "{b}");

    // The table with its legend; no "beside" measurement without 2 workers; the log kept.
    let kept =
        std::env::temp_dir().join(format!("primes-bench-kept-{}.stmlog", std::process::id()));
    let kept_arg = kept.to_string_lossy().into_owned();
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_primes-bench"),
        &[
            "--modes",
            "1",
            "--requests",
            "10",
            "--warmup",
            "0s",
            "-c",
            "2",
            "--top",
            "3",
            "--keep-log",
            &kept_arg,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("STM, 1 worker"), "{out}");
    assert!(out.contains("client CPU: "), "the legend: {out}");
    assert!(!out.contains("short requests beside one long one"), "{out}");
    assert!(out.contains("Conflict log of the STM runs"), "{out}");
    assert!(
        out.contains(&format!("timeline {kept_arg} -o timeline.svg")),
        "{out}"
    );
    let report = stm_log::report::Report::from_path(&kept).expect("the kept log reads");
    assert!(
        report.complete && report.commits > 0,
        "{} commits",
        report.commits
    );
    let _ = std::fs::remove_file(&kept);
}

#[test]
fn primes_bench_rejects_bad_flags() {
    for args in [
        &["--modes", "fast"][..],
        &["--modes", "0"],
        &["--connections", "0", "--requests", "1"],
        &["--requests", "0"],
        &["--duration", "soon"],
        &["--no-log", "--keep-log", "x.stmlog", "--requests", "1"],
        &["--long-n", "1000001", "--requests", "1"],
    ] {
        let (ok, _, err) = run(env!("CARGO_BIN_EXE_primes-bench"), args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            !err.is_empty() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn loadgen_rejects_bad_urls() {
    let (ok, _, err) = run(env!("CARGO_BIN_EXE_loadgen"), &["https://example.invalid/"]);
    assert!(!ok);
    assert!(err.contains("only http://"), "{err}");
}

#[test]
fn scaling_writes_its_chart() {
    let dir = std::env::temp_dir().join(format!("stm-scaling-test-{}", std::process::id()));
    let svg = dir.join("s.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_scaling"),
        &[
            "--threads",
            "2",
            "--ops",
            "2000",
            "--repeats",
            "1",
            "--out",
            &svg_arg,
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let series = v.as_array().expect("series");
    assert_eq!(
        series.len(),
        21,
        "4 structures x (stm, mutex, rwlock, floor) + 3 banks + 2 disjoint"
    );
    let floors = series
        .iter()
        .filter(|s| s["implementation"] == "floor")
        .count();
    assert_eq!(floors, 4, "one floor per structure");
    assert!(
        series
            .iter()
            .all(|s| s["ops_per_second"].as_array().map(Vec::len) == Some(2)
                && s["threads"] == serde_json::json!([1, 2]))
    );
    let text = std::fs::read_to_string(&svg).expect("chart written");
    assert!(text.starts_with("<svg") && text.contains("rbtree stm"));
    assert!(!text.contains("floor"), "floors are in the table only");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scaling_measures_the_chosen_points_and_rejects_zero() {
    let dir = std::env::temp_dir().join(format!("stm-scaling-pts-{}", std::process::id()));
    let svg_arg = dir.join("s.svg").to_string_lossy().into_owned();
    let args = |points: &'static str| {
        [
            "--points",
            points,
            "--ops",
            "500",
            "--repeats",
            "1",
            "--out",
            &svg_arg,
            "--json",
        ]
        .map(String::from)
    };
    let a = args("1,3");
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_scaling"),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert!(
        v.as_array()
            .expect("series")
            .iter()
            .all(|s| s["threads"] == serde_json::json!([1, 3]))
    );
    let a = args("0,2");
    let (ok, _, err) = run(
        env!("CARGO_BIN_EXE_scaling"),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!ok && err.contains("at least 1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn async_bench_alternates_the_two_modes() {
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_async-bench"),
        &[
            "--rounds",
            "2",
            "--requests",
            "40",
            "--warmup",
            "0s",
            "-c",
            "4",
            "-n",
            "100",
            "--capacity",
            "2",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let runs = v["runs"].as_array().expect("runs");
    let modes: Vec<&str> = runs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["stm", "mutex", "mutex", "stm"]);
    for r in runs {
        assert_eq!(r["ok"], 40, "{r}");
        assert_eq!(r["jobs_done"], 40, "{r}");
        assert_eq!(r["errors"].as_object().map(|e| e.len()), Some(0), "{r}");
    }
    assert_eq!(v["requests"], 40);
    assert_eq!(v["medians"].as_array().map(|m| m.len()), Some(2));
    assert!(v["ratio_rps"].is_number(), "{v}");

    // The table names the CPU's cores and prints the ratio row.
    let (ok, out, err) = run(
        env!("CARGO_BIN_EXE_async-bench"),
        &[
            "--rounds",
            "1",
            "--requests",
            "10",
            "--warmup",
            "0s",
            "-c",
            "2",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("stm / mutex"), "{out}");
    assert!(out.contains("CPU: "), "{out}");
}

#[test]
fn async_bench_rejects_bad_flags() {
    for args in [
        &["--rounds", "0"][..],
        &["--requests", "0"],
        &["--connections", "0", "--requests", "1"],
        &["--duration", "soon"],
        &["-n", "1000001", "--requests", "1"],
        &["--workers", "0", "--requests", "1"],
        &["--capacity", "0", "--requests", "1"],
    ] {
        let (ok, _, err) = run(env!("CARGO_BIN_EXE_async-bench"), args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            !err.is_empty() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
