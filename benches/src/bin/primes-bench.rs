//! `primes-bench`: the article's table, one command away.
//!
//! Starts the primes server in-process (`stm_benches::primes`) in each mode in turn — serial (a
//! plain loop, no STM), then the STM event loop with 1, 2, ... workers up to the number of
//! cores — drives each with the crate's load generator (C keep-alive connections for T
//! seconds, like `siege -c 50 -t 20s http://localhost:8888/10000`), prints requests per second
//! beside the serial figure, latency p50/p99 and failed requests, then the most expensive
//! conflicts from the STM runs' conflict log (`stm-log report`).
//!
//! Then one more measurement, "short requests beside one long one": on the STM server with 2
//! workers (or the most workers run), short requests (`GET /10`, one connection, one request
//! at a time) on an idle server, then while another client keeps one long request
//! (`GET /100000`) in flight all the time; their p50/p99 side by side, and the ratio. The loop
//! keeps polling while handlers run, so the short requests keep their latency.
//!
//! ```text
//! cargo run --release -p stm-benches --bin primes-bench
//! cargo run --release -p stm-benches --bin primes-bench -- --modes serial,1,2 --duration 10s --json
//! cargo run --release -p stm-benches --bin primes-bench -- --keep-log primes.stmlog
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Keep the conflict log of the STM runs at PATH (for `stm-log timeline`); by default it
    /// is a temporary file, deleted after the report.
    #[arg(long, value_name = "PATH", conflicts_with = "no_log")]
    keep_log: Option<PathBuf>,
    /// The N of the long request of the "short requests beside one long one" measurement
    /// (0: skip that measurement).
    #[arg(long, default_value_t = 100_000)]
    long_n: u32,
    /// Measured time of each half (idle, beside the long request) of that measurement;
    /// default: 3 s, or `--duration` when shorter.
    #[arg(long, value_parser = parse_duration)]
    beside_duration: Option<Duration>,
}

/// The short request of the "beside one long one" measurement.
const SHORT_PATH: &str = "/10";

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

/// Short requests beside one long one: the same short load on an idle STM server, then while
/// another client keeps one long request in flight.
#[derive(Debug, Serialize)]
struct Beside {
    workers: usize,
    short_path: &'static str,
    long_path: String,
    /// Connections of the short load (each one request at a time).
    connections: usize,
    /// The short load on the idle server.
    idle: LoadReport,
    /// The short load while the long request runs.
    beside: LoadReport,
    /// Long requests answered during the `beside` half (the client re-issues it at once).
    long_answered: u64,
    /// Mean time of one long request, in microseconds.
    long_mean_us: Option<u64>,
    /// `beside` over `idle` p50 and p99.
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
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
    /// Short requests beside one long one (absent when no STM mode with 2 workers or more ran,
    /// or with `--long-n 0`).
    beside_long: Option<Beside>,
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
    // The "beside one long one" measurement: the STM mode with 2 workers, else the most.
    let beside_workers = stm_workers(&modes).filter(|_| args.long_n > 0);
    let beside_duration = args.beside_duration.unwrap_or_else(|| {
        args.duration
            .unwrap_or(BESIDE_DURATION)
            .min(BESIDE_DURATION)
    });
    if args.long_n > stm_benches::primes::MAX_N {
        return Err(format!(
            "--long-n {} is over the server's limit, {}",
            args.long_n,
            stm_benches::primes::MAX_N
        ));
    }
    if beside_workers.is_some() && beside_duration.is_zero() {
        return Err("--beside-duration must be positive".into());
    }
    let beside_total = if beside_workers.is_some() {
        beside_duration * 2 + BESIDE_SETTLE
    } else {
        Duration::ZERO
    };
    // About a minute in all: the warm-ups and the "beside" measurement come out of it, 3 s per
    // mode at the least.
    let duration = args.duration.unwrap_or_else(|| {
        let per_mode = Duration::from_secs(60).saturating_sub(beside_total) / modes.len() as u32;
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

    let total = (duration + args.warmup) * modes.len() as u32 + beside_total;
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

    let log_path = args.keep_log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("primes-bench-{}.stmlog", std::process::id()))
    });
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
            if args.keep_log.is_none() {
                let _ = std::fs::remove_file(&log_path);
            }
            Some(r?)
        }
        None => None,
    };
    // After the log is finished: the short load's many small transactions would crowd the
    // report of the table's runs, and the measurement should not pay for the recorder.
    let beside = match beside_workers {
        Some(workers) => {
            bar.set_message(format!("short requests beside /{}", args.long_n));
            let b = measure_beside(workers, args.long_n, beside_duration, args.requests)?;
            if args.requests.is_none() {
                bar.set_position(done_ms + beside_total.as_millis() as u64);
            }
            Some(b)
        }
        None => None,
    };
    bar.finish_and_clear();
    let source_root = workspace_root();

    if args.json {
        let out = Output {
            connections: args.connections,
            duration_s: args.requests.is_none().then_some(duration.as_secs_f64()),
            requests: args.requests,
            n: args.n,
            cores,
            rows,
            beside_long: beside,
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
    print!("{}", legend(&rows));
    if let Some(b) = &beside {
        print!("{}", beside_table(b, beside_duration, args.requests));
    }
    match report {
        Some(r) => {
            println!(
                "\nConflict log of the STM runs (stm-log report, top {}):\n",
                args.top
            );
            print!("{}", r.render_text(args.top, source_root.as_deref()));
            if r.conflicts.is_empty() {
                println!(
                    "\nNo conflicts: {} transactions, {} commits, {} aborts in {} attempts, \
                     nothing was rolled back. What each thread did, and when: `stm-log timeline`.",
                    r.transactions, r.commits, r.aborts, r.attempts
                );
            }
            match &args.keep_log {
                Some(p) => println!(
                    "\nThe log is kept in {0}:\n  cargo run -p stm-log --features cli -- report {0}\n  \
                     cargo run -p stm-log --features cli -- timeline {0} -o timeline.svg",
                    p.display()
                ),
                None => println!(
                    "\n(the log was a temporary file; `--keep-log PATH` keeps it for \
                     `stm-log report PATH` and `stm-log timeline PATH -o timeline.svg`)"
                ),
            }
        }
        None if args.no_log => println!("\n(conflict log not recorded: --no-log)"),
        None => println!("\n(no STM mode ran: no conflict log)"),
    }
    Ok(())
}

/// Each half of the "beside one long one" measurement, at most (default).
const BESIDE_DURATION: Duration = Duration::from_secs(3);
/// Time given to the long request to start before the short load, and to the last one to end.
const BESIDE_SETTLE: Duration = Duration::from_millis(200);

/// The STM worker count for the "beside" measurement: 2 if run, else the most run (None when
/// no STM mode with 2 workers or more ran: with one worker, the long request holds it).
fn stm_workers(modes: &[ServerMode]) -> Option<usize> {
    let workers = modes.iter().filter_map(|m| match m {
        ServerMode::Stm { workers } if *workers >= 2 => Some(*workers),
        _ => None,
    });
    if workers.clone().any(|w| w == 2) {
        Some(2)
    } else {
        workers.max()
    }
}

/// Short requests on an idle STM server, then beside one long request kept in flight.
fn measure_beside(
    workers: usize,
    long_n: u32,
    duration: Duration,
    requests: Option<u64>,
) -> Result<Beside, String> {
    let server = stm_benches::primes::start(ServerConfig {
        addr: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        mode: ServerMode::Stm { workers },
    })
    .map_err(|e| format!("cannot start the beside-long server: {e}"))?;
    let addr = server.local_addr();
    // One connection, one request at a time: the latency of a request, not of a queue.
    let connections = 1;
    let limit = match requests {
        Some(n) => Limit::Requests(n),
        None => Limit::Duration(duration),
    };
    let short = LoadConfig::new(addr, SHORT_PATH)
        .connections(connections)
        .limit(limit);
    // A short warm-up, then the idle half.
    loadgen::run(&short.clone().limit(Limit::Requests(100)), None)
        .map_err(|e| format!("beside-long warm-up: {e}"))?;
    let idle = loadgen::run(&short, None).map_err(|e| format!("beside-long, idle: {e}"))?;

    let long_path = format!("/{long_n}");
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let (beside, long) = std::thread::scope(|s| {
        let long = s.spawn(|| long_client(addr, &long_path, &stop, &answered));
        std::thread::sleep(BESIDE_SETTLE);
        let beside = loadgen::run(&short, None);
        // Relaxed: the flag is only looked at; the join orders the rest.
        stop.store(true, Ordering::Relaxed);
        let long = long
            .join()
            .unwrap_or_else(|_| Err("the long-request client panicked".into()));
        (beside, long)
    });
    let beside = beside.map_err(|e| format!("beside-long: {e}"))?;
    let long_total = long?;
    server
        .stop()
        .map_err(|e| format!("the beside-long server failed: {e}"))?;
    let long_answered = answered.load(Ordering::Relaxed);
    let ratio = |b: Duration, i: Duration| {
        (!i.is_zero() && !b.is_zero()).then(|| b.as_secs_f64() / i.as_secs_f64())
    };
    Ok(Beside {
        workers,
        short_path: SHORT_PATH,
        long_path,
        connections,
        p50_ratio: ratio(beside.latency.p50, idle.latency.p50),
        p99_ratio: ratio(beside.latency.p99, idle.latency.p99),
        long_answered,
        long_mean_us: (long_answered > 0)
            .then(|| (long_total.as_micros() / u128::from(long_answered)) as u64),
        idle,
        beside,
    })
}

/// Keeps one `GET path` in flight on one keep-alive connection until `stop` (the request in
/// flight then is still read). Returns the time spent in answered requests.
fn long_client(
    addr: std::net::SocketAddr,
    path: &str,
    stop: &AtomicBool,
    answered: &AtomicU64,
) -> Result<Duration, String> {
    use std::io::{Read as _, Write as _};
    let err = |e: std::io::Error| format!("long-request client: {e}");
    let mut s = std::net::TcpStream::connect(addr).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(err)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut total = Duration::ZERO;
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        s.write_all(request.as_bytes()).map_err(err)?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
                if resp.code != Some(200) {
                    return Err(format!("long-request client: status {:?}", resp.code));
                }
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .ok_or("long-request client: no Content-Length")?;
                if buf.len() >= head + len {
                    buf.drain(..head + len);
                    break;
                }
            }
            let mut chunk = [0u8; 65536];
            match s.read(&mut chunk).map_err(err)? {
                0 => return Err("long-request client: the server closed the connection".into()),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        total += t0.elapsed();
        answered.fetch_add(1, Ordering::Relaxed);
    }
    Ok(total)
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

/// What the table's columns mean, under it.
fn legend(rows: &[Row]) -> String {
    let mut o = String::from(
        "\nreq/s: answered requests per second; x serial: over the serial row; p50/p99: latency \
         of a request (send to whole answer)\nclient CPU: the load generator's own CPU time \
         (its threads, in this process) in % of one core: the cost of measuring, on the \
         server's machine\n",
    );
    let above: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!((r.workers, r.ratio_to_serial), (Some(w), Some(x)) if x > w as f64))
        .collect();
    if !above.is_empty() {
        let named: Vec<String> = above
            .iter()
            .map(|r| format!("{} {:.2}x", r.mode, r.ratio_to_serial.unwrap_or(0.0)))
            .collect();
        let _ = writeln!(
            o,
            "x serial can exceed the worker count (here: {}): the STM server polls on a thread \
             of its own beside its N workers (N+1 threads), the serial server polls, reads, \
             computes and writes on its one thread; and a run varies from the next (repeat it)",
            named.join("; ")
        );
    }
    o
}

/// The "short requests beside one long one" table.
fn beside_table(b: &Beside, duration: Duration, requests: Option<u64>) -> String {
    let mut o = String::new();
    let per = match requests {
        Some(n) => format!("{n} requests"),
        None => format!("{:.0}s", duration.as_secs_f64()),
    };
    let _ = writeln!(
        o,
        "\nshort requests beside one long one: STM, {} workers, GET {} on {} connection, {per} each",
        b.workers, b.short_path, b.connections
    );
    let _ = writeln!(
        o,
        "{:<26} {:>10} {:>10} {:>10} {:>8}",
        "", "req/s", "p50", "p99", "failed"
    );
    let _ = writeln!(o, "{}", "-".repeat(68));
    for (name, r) in [
        ("idle server".to_string(), &b.idle),
        (format!("beside GET {}", b.long_path), &b.beside),
    ] {
        let _ = writeln!(
            o,
            "{:<26} {:>10.1} {:>10} {:>10} {:>8}",
            name,
            r.requests_per_second,
            fmt_latency(r.latency.p50),
            fmt_latency(r.latency.p99),
            r.failed()
        );
    }
    let x = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"));
    let _ = writeln!(
        o,
        "{:<26} {:>10} {:>10} {:>10}",
        "beside / idle",
        "",
        x(b.p50_ratio),
        x(b.p99_ratio)
    );
    if b.p50_ratio.is_some_and(|x| x < 1.0) || b.p99_ratio.is_some_and(|x| x < 1.0) {
        let _ = writeln!(
            o,
            "(below 1x: the long request keeps a core busy, and on a machine with few cores \
             that alone can make the short ones faster; see docs/performance.md)"
        );
    }
    let long = b.long_mean_us.map_or_else(
        || "none answered yet".to_string(),
        |us| format!("{} each", fmt_latency(Duration::from_micros(us))),
    );
    let _ = writeln!(
        o,
        "(one GET {} kept in flight by another client all along: {} answered, {long}; a worker \
         stays free for the short ones)",
        b.long_path, b.long_answered
    );
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
