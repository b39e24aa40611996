//! `primes-bench`: the article's table, one command away.
//!
//! Starts the primes server in-process (`stm_benches::primes`) in each mode in turn — serial (a
//! plain loop, no STM), then the STM event loop with 1, 2, ... workers up to the number of
//! cores — drives each with the crate's load generator (C keep-alive connections for T
//! seconds, like `siege -c 50 -t 20s http://localhost:8888/10000`), prints requests per second
//! beside the serial figure, latency p50/p99 and failed requests, then the most expensive
//! conflicts from the STM runs' conflict log (`stm-log report`).
//!
//! ```text
//! cargo run --release -p stm-benches --bin primes-bench
//! cargo run --release -p stm-benches --bin primes-bench -- --modes serial,1,2 --duration 10s --json
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use stm_benches::loadgen::{self, Limit, LoadConfig, LoadReport, parse_duration};
use stm_benches::primes::{ServerConfig, ServerMode};

/// Reproduces the article's table: the primes server, serial and with 1..N STM workers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Concurrent keep-alive connections (siege's -c).
    #[arg(short, long, default_value_t = 50)]
    connections: usize,
    /// Measured time per mode (siege's -t); default: about a minute for the whole run.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Measure a fixed number of requests per mode instead of a duration.
    #[arg(short = 'r', long)]
    requests: Option<u64>,
    /// Unmeasured warm-up load before each mode's measurement.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// The N of `GET /N` (primes up to N).
    #[arg(short, long, default_value_t = 10_000)]
    n: u32,
    /// Modes to run, comma separated: `serial`, or a worker count (`1`, `2`, `stm4`).
    /// Default: serial, then 1 to the number of cores.
    #[arg(short, long, value_delimiter = ',', value_parser = parse_mode)]
    modes: Option<Vec<ServerMode>>,
    /// How many conflicts of the log to show.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Do not record the conflict log (the STM runs then carry no event-sink cost).
    #[arg(long)]
    no_log: bool,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_mode(s: &str) -> Result<ServerMode, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "serial" {
        return Ok(ServerMode::Serial);
    }
    let digits = t.strip_prefix("stm").unwrap_or(&t);
    match digits.parse::<usize>() {
        Ok(w) if w >= 1 => Ok(ServerMode::Stm { workers: w }),
        _ => Err(format!(
            "{s:?} is not a mode: use `serial` or a worker count such as 2 or stm2"
        )),
    }
}

fn mode_name(m: ServerMode) -> String {
    match m {
        ServerMode::Serial => "serial".into(),
        ServerMode::Stm { workers: 1 } => "STM, 1 worker".into(),
        ServerMode::Stm { workers } => format!("STM, {workers} workers"),
    }
}

/// One mode's measurement.
#[derive(Debug, Serialize)]
struct Row {
    mode: String,
    workers: Option<usize>,
    requests_per_second: f64,
    /// Requests per second over the serial mode's (when serial ran).
    ratio_to_serial: Option<f64>,
    #[serde(flatten)]
    load: LoadReport,
    /// The load generator's CPU use in percent of one core.
    client_cpu_percent: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output {
    connections: usize,
    /// Measured seconds per mode (absent with `--requests`).
    duration_s: Option<f64>,
    /// Measured requests per mode (absent without `--requests`).
    requests: Option<u64>,
    n: u32,
    cores: usize,
    rows: Vec<Row>,
    /// `stm-log`'s report of the STM runs as JSON (absent with `--no-log`).
    conflicts: Option<serde_json::Value>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("primes-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let modes = args.modes.clone().unwrap_or_else(|| {
        std::iter::once(ServerMode::Serial)
            .chain((1..=cores).map(|w| ServerMode::Stm { workers: w }))
            .collect()
    });
    if modes.is_empty() {
        return Err("no mode to run".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    // About a minute in all: the warm-ups come out of it, 3 s per mode at the least.
    let duration = args.duration.unwrap_or_else(|| {
        let per_mode = Duration::from_secs(60) / modes.len() as u32;
        per_mode
            .saturating_sub(args.warmup)
            .max(Duration::from_secs(3))
    });
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if args.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    let limit = match args.requests {
        Some(n) => Limit::Requests(n),
        None => Limit::Duration(duration),
    };
    let path = format!("/{}", args.n);

    let total = (duration + args.warmup) * modes.len() as u32;
    // Progress in milliseconds of load (duration mode) or in requests (`--requests`, where the
    // warm-ups are not counted).
    let bar = ProgressBar::new(match args.requests {
        Some(n) => n.saturating_mul(modes.len() as u64),
        None => total.as_millis() as u64,
    });
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .map_err(|e| e.to_string())?,
    );

    let log_path = std::env::temp_dir().join(format!("primes-bench-{}.stmlog", std::process::id()));
    let mut guard = None;
    let mut rows: Vec<Row> = Vec::new();
    let mut serial_rps = None;
    let mut done_ms = 0u64;
    for &mode in &modes {
        if matches!(mode, ServerMode::Stm { .. }) && !args.no_log && guard.is_none() {
            guard = Some(stm_log::LogGuard::create(&log_path).map_err(|e| {
                format!("cannot create the conflict log {}: {e}", log_path.display())
            })?);
        }
        let server = stm_benches::primes::start(ServerConfig {
            addr: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
            mode,
        })
        .map_err(|e| format!("cannot start the {} server: {e}", mode_name(mode)))?;
        let cfg = LoadConfig::new(server.local_addr(), &path).connections(args.connections);
        let name = mode_name(mode);

        if !args.warmup.is_zero() {
            bar.set_message(format!("{name}: warming up"));
            drive(
                &bar,
                done_ms,
                &cfg.clone().limit(Limit::Duration(args.warmup)),
                &name,
                args.requests.is_none(),
            )?;
            if args.requests.is_none() {
                done_ms += args.warmup.as_millis() as u64;
            }
        }
        bar.set_message(format!("{name}: measuring"));
        let report = drive(&bar, done_ms, &cfg.limit(limit), &name, true)?;
        done_ms += match args.requests {
            Some(n) => n,
            None => duration.as_millis() as u64,
        };
        server
            .stop()
            .map_err(|e| format!("the {name} server failed: {e}"))?;

        let rps = report.requests_per_second;
        if mode == ServerMode::Serial && serial_rps.is_none() {
            serial_rps = Some(rps);
        }
        rows.push(Row {
            mode: name,
            workers: match mode {
                ServerMode::Serial => None,
                ServerMode::Stm { workers } => Some(workers),
            },
            requests_per_second: rps,
            ratio_to_serial: None,
            client_cpu_percent: report.cpu_percent(),
            load: report,
        });
    }
    bar.finish_and_clear();
    for r in &mut rows {
        r.ratio_to_serial = serial_rps
            .filter(|&s| s > 0.0)
            .map(|s| r.requests_per_second / s);
    }

    let report = match guard {
        Some(g) => {
            g.finish().map_err(|e| {
                format!("the conflict log {} is incomplete: {e}", log_path.display())
            })?;
            let r = stm_log::report::Report::from_path(&log_path)
                .map_err(|e| format!("cannot read the conflict log {}: {e}", log_path.display()));
            let _ = std::fs::remove_file(&log_path);
            Some(r?)
        }
        None => None,
    };
    let source_root = workspace_root();

    if args.json {
        let out = Output {
            connections: args.connections,
            duration_s: args.requests.is_none().then_some(duration.as_secs_f64()),
            requests: args.requests,
            n: args.n,
            cores,
            rows,
            conflicts: report
                .as_ref()
                .and_then(|r| serde_json::from_str(&r.to_json()).ok()),
        };
        let j = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        println!("{j}");
        return Ok(());
    }

    let per_mode = match args.requests {
        Some(n) => format!("{n} requests"),
        None => format!("{:.0}s", duration.as_secs_f64()),
    };
    println!(
        "primes server, GET /{} — {} keep-alive connections, {per_mode} per mode ({cores} cores)\n",
        args.n, args.connections,
    );
    print!("{}", table(&rows));
    match report {
        Some(r) => {
            println!(
                "\nConflict log of the STM runs (stm-log report, top {}):\n",
                args.top
            );
            print!("{}", r.render_text(args.top, source_root.as_deref()));
        }
        None if args.no_log => println!("\n(conflict log not recorded: --no-log)"),
        None => println!("\n(no STM mode ran: no conflict log)"),
    }
    Ok(())
}

/// Runs one load while advancing the progress bar from `done` (milliseconds of load, or
/// requests when the load is a request count).
fn drive(
    bar: &ProgressBar,
    done_ms: u64,
    cfg: &LoadConfig,
    name: &str,
    advance: bool,
) -> Result<LoadReport, String> {
    let progress = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        let h = s.spawn(|| loadgen::run(cfg, Some(&progress)));
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
            let step = match cfg.limit {
                Limit::Requests(_) => progress.load(Ordering::Relaxed),
                Limit::Duration(_) => start.elapsed().as_millis() as u64,
            };
            if advance {
                bar.set_position(done_ms + step);
            }
            bar.set_message(format!(
                "{name}: {} requests",
                progress.load(Ordering::Relaxed)
            ));
        }
        match h.join() {
            Ok(r) => r.map_err(|e| format!("{name}: {e}")),
            Err(_) => Err(format!("{name}: the load generator panicked")),
        }
    })
}

/// The article's table (Impl., req/s) with the ratio to serial, latency and failures.
fn table(rows: &[Row]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<16} {:>10} {:>9} {:>10} {:>10} {:>8} {:>11}",
        "mode", "req/s", "x serial", "p50", "p99", "failed", "client CPU"
    );
    let _ = writeln!(o, "{}", "-".repeat(80));
    for r in rows {
        let ratio = r
            .ratio_to_serial
            .map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"));
        let cpu = r
            .client_cpu_percent
            .map_or_else(|| "-".to_string(), |c| format!("{c:.1}%"));
        let _ = writeln!(
            o,
            "{:<16} {:>10.1} {:>9} {:>10} {:>10} {:>8} {:>11}",
            r.mode,
            r.requests_per_second,
            ratio,
            fmt_latency(r.load.latency.p50),
            fmt_latency(r.load.latency.p99),
            r.load.failed(),
            cpu
        );
        for (kind, n) in &r.load.errors {
            let _ = writeln!(o, "{:<16}   {n} x {kind}", "");
        }
    }
    o
}

fn fmt_latency(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// The workspace root, so the conflict report can quote source lines (when it still exists:
/// the binary may run elsewhere than where it was built).
fn workspace_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    root.join("Cargo.toml").exists().then_some(root)
}
