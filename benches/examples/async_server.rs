//! The async server of `stm_benches::async_server`: tokio + hyper, handlers sharing state
//! through TVars and stm-core collections (`--mode stm`), or through `Mutex`es (`--mode mutex`).
//!
//! ```text
//! cargo run --release -p stm-benches --example async_server -- --mode stm --workers 2
//! curl http://127.0.0.1:8889/work/100000 ; curl http://127.0.0.1:8889/stats
//! ```
//!
//! Flags: `--addr HOST:PORT` (default `127.0.0.1:8889`; port 0 picks a free port, the startup
//! line says which), `--mode stm|mutex` (default `stm`), `--workers N` (tokio worker threads,
//! default 2), `--consumers N` (tasks computing the jobs, default 2), `--capacity N` (the work
//! queue's capacity, default 64).
//!
//! Once listening it prints one line on stdout, e.g.
//! `async_server listening on 127.0.0.1:8889 (stm, 2 workers, 2 consumers, queue of 64)`.
//! On SIGINT (Ctrl-C) or SIGTERM it stops accepting, finishes the requests in progress, drains
//! the queue, and prints the final counters as JSON.

use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use stm_benches::async_server::{Mode, ServerConfig, start};

/// A tokio + hyper server whose handlers share state through STM (or `Mutex`es).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on, `IP:PORT` or `HOST:PORT` (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8889")]
    addr: String,
    /// Shared state: `stm` (TVars, collections, `atomically_async`) or `mutex`.
    #[arg(long, default_value = "stm")]
    mode: Mode,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Consumer tasks computing the jobs.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Capacity of the work queue (handlers wait for room beyond it).
    #[arg(long, default_value_t = 64)]
    capacity: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = |a| {
        ServerConfig::new(a, args.mode)
            .workers(args.workers)
            .consumers(args.consumers)
            .queue_capacity(args.capacity)
    };
    let server = match stm_benches::start_on_first_address(&args.addr, |a| start(cfg(a))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("async_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "async_server listening on {} ({}, {} workers, {} consumers, queue of {})",
        server.local_addr(),
        args.mode,
        args.workers,
        args.consumers,
        args.capacity
    );
    let (tx, rx) = mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("async_server: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    // Err: the handler's sender is gone, which cannot happen while it is installed; stop.
    let _ = rx.recv();
    match server.stop() {
        Ok(stats) => {
            match serde_json::to_string(&stats) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("async_server: {e}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("async_server: {e}");
            ExitCode::FAILURE
        }
    }
}
