//! `async-bench`: the async server (`stm_benches::async_server`) with STM state beside its
//! `Mutex` twin, under the crate's load generator.
//!
//! Starts the server in-process in each mode with the same configuration, drives it with C
//! keep-alive connections sending `GET /work/N` (each job goes through the bounded queue to a
//! consumer and back), and repeats that A/B several times, alternating which mode goes first,
//! so that drift of a noisy machine falls on both. Prints a row per run (requests per second,
//! latency p50/p99, failures, and how many submissions found the queue full and waited), the
//! medians per mode, and their ratio STM / Mutex; and the CPU it ran on.
//!
//! ```text
//! cargo run --release -p stm-benches --bin async-bench
//! cargo run --release -p stm-benches --bin async-bench -- --rounds 5 --duration 5s --n 100000
//! cargo run --release -p stm-benches --bin async-bench -- --requests 20000 --json
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use stm_benches::async_server::{MAX_N, Mode, ServerConfig, start};
use stm_benches::loadgen::{self, Limit, LoadConfig, LoadReport, parse_duration};

/// The async server, STM state beside the `Mutex` twin, alternating A/B runs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A/B rounds (each runs both modes once, the first mode alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured time of each run.
    #[arg(short, long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Measure a fixed number of requests per run instead of a duration.
    #[arg(short = 'r', long)]
    requests: Option<u64>,
    /// Unmeasured load before each run's measurement.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent keep-alive connections.
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// The N of `GET /work/N` (primes below N).
    #[arg(short, long, default_value_t = 10_000)]
    n: u32,
    /// Tokio worker threads of the server.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Consumer tasks of the server.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Capacity of the server's work queue.
    #[arg(long, default_value_t = 64)]
    capacity: usize,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One run of one mode.
#[derive(Debug, Serialize)]
struct Run {
    round: usize,
    mode: &'static str,
    #[serde(flatten)]
    load: LoadReport,
    /// Submissions that found the queue full and waited (from the server's final counters).
    producer_waits: u64,
    jobs_done: u64,
}

/// The medians of one mode's runs.
#[derive(Debug, Serialize, Clone, Copy)]
struct Median {
    mode: &'static str,
    requests_per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

#[derive(Debug, Serialize)]
struct Output {
    cpu: Option<String>,
    cores: usize,
    path: String,
    connections: usize,
    workers: usize,
    consumers: usize,
    capacity: usize,
    /// Measured seconds per run (absent with `--requests`).
    duration_s: Option<f64>,
    /// Measured requests per run (absent without `--requests`).
    requests: Option<u64>,
    runs: Vec<Run>,
    medians: Vec<Median>,
    /// STM over Mutex: requests per second, p50, p99.
    ratio_rps: Option<f64>,
    ratio_p50: Option<f64>,
    ratio_p99: Option<f64>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The CPU's model name, from `/proc/cpuinfo` (None where there is none).
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.is_empty() {
        0.0
    } else if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn real_main() -> Result<(), String> {
    let args = Args::parse();
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if args.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.n > MAX_N {
        return Err(format!(
            "--n {} is over the server's limit, {MAX_N}",
            args.n
        ));
    }
    let path = format!("/work/{}", args.n);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Mode::Stm, Mode::Mutex]
        } else {
            [Mode::Mutex, Mode::Stm]
        };
        for mode in order {
            if !args.json {
                eprint!("\rround {}/{}: {mode}   ", round + 1, args.rounds);
            }
            let cfg = ServerConfig::new(
                "127.0.0.1:0"
                    .parse()
                    .map_err(|e: std::net::AddrParseError| e.to_string())?,
                mode,
            )
            .workers(args.workers)
            .consumers(args.consumers)
            .queue_capacity(args.capacity);
            let server = start(cfg).map_err(|e| format!("cannot start the {mode} server: {e}"))?;
            let load = LoadConfig::new(server.local_addr(), &path).connections(args.connections);
            if !args.warmup.is_zero() {
                loadgen::run(&load.clone().limit(Limit::Duration(args.warmup)), None)
                    .map_err(|e| format!("{mode} warm-up: {e}"))?;
            }
            let limit = match args.requests {
                Some(n) => Limit::Requests(n),
                None => Limit::Duration(args.duration),
            };
            let report =
                loadgen::run(&load.limit(limit), None).map_err(|e| format!("{mode}: {e}"))?;
            let stats = server
                .stop()
                .map_err(|e| format!("the {mode} server failed: {e}"))?;
            runs.push(Run {
                round: round + 1,
                mode: mode.name(),
                load: report,
                producer_waits: stats.producer_waits,
                jobs_done: stats.jobs_done,
            });
        }
    }
    if !args.json {
        eprint!("\r{:30}\r", "");
    }
    let medians: Vec<Median> = [Mode::Stm, Mode::Mutex]
        .into_iter()
        .map(|m| {
            let of = |f: &dyn Fn(&Run) -> f64| {
                median(runs.iter().filter(|r| r.mode == m.name()).map(f).collect())
            };
            Median {
                mode: m.name(),
                requests_per_second: of(&|r| r.load.requests_per_second),
                p50_us: of(&|r| r.load.latency.p50.as_micros() as f64) as u64,
                p99_us: of(&|r| r.load.latency.p99.as_micros() as f64) as u64,
            }
        })
        .collect();
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let (s, m) = (medians[0], medians[1]);
    let out = Output {
        cpu: cpu_model(),
        cores,
        path,
        connections: args.connections,
        workers: args.workers,
        consumers: args.consumers,
        capacity: args.capacity,
        duration_s: args
            .requests
            .is_none()
            .then_some(args.duration.as_secs_f64()),
        requests: args.requests,
        ratio_rps: ratio(s.requests_per_second, m.requests_per_second),
        ratio_p50: ratio(s.p50_us as f64, m.p50_us as f64),
        ratio_p99: ratio(s.p99_us as f64, m.p99_us as f64),
        runs,
        medians,
    };
    if args.json {
        let j = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        println!("{j}");
    } else {
        print!("{}", table(&out));
    }
    Ok(())
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn table(o: &Output) -> String {
    let mut t = String::new();
    let per_run = match (o.requests, o.duration_s) {
        (Some(n), _) => format!("{n} requests"),
        (None, Some(d)) => format!("{d:.1}s"),
        (None, None) => "-".into(),
    };
    let _ = writeln!(
        t,
        "async server, GET {} — {} keep-alive connections; {} tokio workers, {} consumers, \
         queue of {}; {per_run} per run, modes alternating",
        o.path, o.connections, o.workers, o.consumers, o.capacity
    );
    let _ = writeln!(
        t,
        "CPU: {} ({} cores; the load generator runs on the same cores)\n",
        o.cpu.as_deref().unwrap_or("unknown"),
        o.cores
    );
    let _ = writeln!(
        t,
        "{:<8} {:<7} {:>10} {:>10} {:>10} {:>7} {:>15}",
        "round", "mode", "req/s", "p50", "p99", "failed", "producer waits"
    );
    let _ = writeln!(t, "{}", "-".repeat(73));
    for r in &o.runs {
        let _ = writeln!(
            t,
            "{:<8} {:<7} {:>10.0} {:>10} {:>10} {:>7} {:>15}",
            r.round,
            r.mode,
            r.load.requests_per_second,
            fmt_us(r.load.latency.p50.as_micros() as u64),
            fmt_us(r.load.latency.p99.as_micros() as u64),
            r.load.failed(),
            r.producer_waits
        );
        for (kind, n) in &r.load.errors {
            let _ = writeln!(t, "{:<16}   {n} x {kind}", "");
        }
    }
    let _ = writeln!(t, "{}", "-".repeat(73));
    for m in &o.medians {
        let _ = writeln!(
            t,
            "{:<8} {:<7} {:>10.0} {:>10} {:>10}",
            "median",
            m.mode,
            m.requests_per_second,
            fmt_us(m.p50_us),
            fmt_us(m.p99_us)
        );
    }
    let x = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"));
    let _ = writeln!(
        t,
        "{:<16} {:>10} {:>10} {:>10}",
        "stm / mutex",
        x(o.ratio_rps),
        x(o.ratio_p50),
        x(o.ratio_p99)
    );
    let _ = writeln!(
        t,
        "\nreq/s: answered requests per second; p50/p99: latency of a request (send to whole \
         answer); producer waits: submissions that found the queue full and awaited room"
    );
    t
}
