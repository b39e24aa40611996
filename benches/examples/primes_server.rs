//! The article's benchmark server: `GET /N` answers the primes up to N as JSON.
//!
//! ```text
//! cargo run --release -p stm-benches --example primes_server -- --workers 2
//! cargo run --release -p stm-benches --example primes_server -- --serial
//! curl http://127.0.0.1:8888/100 ; curl http://127.0.0.1:8888/stats
//! ```
//!
//! Stops cleanly on SIGINT (Ctrl-C). With `STM_LOG=path` the STM mode records the conflict log.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use stm_benches::primes::{ServerConfig, ServerMode, start};

/// The primes server of "Tornado without a GIL on PyPy STM", on the STM event loop.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: SocketAddr,
    /// Workers of the STM loop (default: one per available core).
    #[arg(long, conflicts_with = "serial")]
    workers: Option<usize>,
    /// A plain single-threaded loop without any STM (the baseline).
    #[arg(long)]
    serial: bool,
}

fn main() -> ExitCode {
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
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    // ctrlc runs this on its own thread, not in signal context: sending on a channel is fine.
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    }) {
        eprintln!("error: cannot install the SIGINT handler: {e}");
        return ExitCode::FAILURE;
    }
    let server = match start(ServerConfig {
        addr: args.addr,
        mode,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the server on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "primes server ({mode:?}) listening on http://{}",
        server.local_addr()
    );
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
