//! The article's benchmark server: `GET /N` answers the primes up to N as JSON.
//!
//! ```text
//! cargo run --release -p stm-benches --example primes_server -- --workers 2
//! cargo run --release -p stm-benches --example primes_server -- --serial --addr localhost:8080
//! curl http://127.0.0.1:8888/100 ; curl http://127.0.0.1:8888/stats
//! ```
//!
//! Flags:
//!
//! - `--addr HOST:PORT` (default `127.0.0.1:8888`): an IP address or a host name such as
//!   `localhost`, resolved; the first resolved address that can be bound is used. Port 0 picks
//!   a free port (the startup line says which).
//! - `--workers N` (STM mode, default one per core) or `--serial` (the plain baseline).
//! - `--header-timeout 10s`: a client that has not sent a complete request head within this
//!   time (from its connection, or from the first bytes of a later request) is disconnected.
//! - `--idle-timeout 60s`: a connection with no bytes moving for this long between requests
//!   (or while a response waits for a client that does not read) is closed.
//!
//! Once listening it prints one line on stdout, e.g.
//! `primes_server listening on 127.0.0.1:8888 (stm, 2 workers)`. Warnings (such as running out
//! of file descriptors, when the server backs off and accepts again once some are free) go to
//! stderr through a `tracing` subscriber (`info` level and above).
//!
//! Stops cleanly on SIGINT (Ctrl-C) and SIGTERM: open connections are closed and, with
//! `STM_LOG=path`, the STM mode's conflict log is finished before the process exits.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use stm_benches::loadgen::parse_duration;
use stm_benches::primes::{ServerConfig, ServerMode, Timeouts, start_with};

/// The primes server of "Tornado without a GIL on PyPy STM", on the STM event loop.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on, `IP:PORT` or `HOST:PORT` (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Workers of the STM loop (default: one per available core).
    #[arg(long, conflicts_with = "serial")]
    workers: Option<usize>,
    /// A plain single-threaded loop without any STM (the baseline).
    #[arg(long)]
    serial: bool,
    /// Time a client has to send a complete request head (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time a connection may stay idle between requests (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
}

fn main() -> ExitCode {
    // Warnings of the server (accept back-off, ...) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mode = if args.serial {
        ServerMode::Serial
    } else {
        match args.workers {
            Some(0) => {
                eprintln!("error: --workers must be at least 1");
                return ExitCode::from(2);
            }
            Some(workers) => ServerMode::Stm { workers },
            None => ServerConfig::default().mode,
        }
    };
    if args.header_timeout.is_zero() || args.idle_timeout.is_zero() {
        eprintln!("error: --header-timeout and --idle-timeout must be positive");
        return ExitCode::from(2);
    }
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // ctrlc (feature `termination`: SIGINT, SIGTERM and SIGHUP) runs this on its own thread,
    // not in signal context: sending on a channel is fine.
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    }) {
        eprintln!("error: cannot install the SIGINT/SIGTERM handler: {e}");
        return ExitCode::FAILURE;
    }
    let timeouts = Timeouts {
        header: args.header_timeout,
        idle: args.idle_timeout,
    };
    let server = match stm_benches::start_on_first_address(&args.addr, |a| {
        start_with(ServerConfig { addr: a, mode }, timeouts)
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let how = match mode {
        ServerMode::Serial => "serial".to_string(),
        ServerMode::Stm { workers: 1 } => "stm, 1 worker".to_string(),
        ServerMode::Stm { workers } => format!("stm, {workers} workers"),
    };
    println!("primes_server listening on {} ({how})", server.local_addr());
    let _ = stop_rx.recv();
    println!("stopping");
    match server.stop() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the server stopped with an error: {e}");
            ExitCode::FAILURE
        }
    }
}
