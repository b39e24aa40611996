//! `loadgen`: drive an HTTP/1.1 server with keep-alive connections and report req/s, latency
//! percentiles and errors (like `siege -c 50 -t 20s URL` or `wrk -c 50 -d 20s URL`).
//!
//! ```text
//! cargo run --release -p stm-benches --bin loadgen -- http://127.0.0.1:8888/10000 -c 50 -d 20s
//! ```

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use stm_benches::loadgen::{Limit, LoadConfig, parse_duration, parse_url, run};

/// Keep-alive HTTP/1.1 load generator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The URL to load, `http://host[:port]/path`.
    url: String,
    /// Concurrent keep-alive connections.
    #[arg(short, long, default_value_t = 50)]
    connections: usize,
    /// How long to run (`20s`, `500ms`, `1m`); ignored with `--requests`.
    #[arg(short, long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests instead of after a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Client threads (0: one per 64 connections, at most the number of cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (addr, host, path) = match parse_url(&args.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = LoadConfig::new(addr, &path)
        .connections(args.connections)
        .threads(args.threads)
        .timeout(args.timeout)
        .limit(match args.requests {
            Some(n) => Limit::Requests(n),
            None => Limit::Duration(args.duration),
        });
    cfg.host = host;
    match run(&cfg, None) {
        Ok(r) if args.json => match serde_json::to_string_pretty(&r) {
            Ok(j) => {
                println!("{j}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: cannot write JSON: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(r) => {
            print!("{r}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
