//! A bank of accounts moved between by several threads; prints the totals and `stats()`.
//!
//! `cargo run --release -p stm-core --example bank -- [threads] [transfers-per-thread]`

use std::sync::Arc;
use std::time::Instant;
use stm_core::{TVar, atomically, stats};

const ACCOUNTS: usize = 1024;
const START: i64 = 1_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = match args.next().map(|s| s.parse()) {
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return usage(),
    };
    let per_thread: u64 = match args.next().map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(_) => return usage(),
    };
    let accounts: Arc<Vec<TVar<i64>>> = Arc::new((0..ACCOUNTS).map(|_| TVar::new(START)).collect());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let accounts = accounts.clone();
            std::thread::spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ (t as u64 + 1);
                let mut audits = 0;
                for i in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if i % 100 == 99 {
                        let total = atomically(|tx| {
                            accounts.iter().map(|a| tx.read(a)).sum::<Result<i64, _>>()
                        });
                        assert_eq!(total, START * ACCOUNTS as i64);
                        audits += 1;
                        continue;
                    }
                    let from = (x % ACCOUNTS as u64) as usize;
                    let to = ((x >> 20) % ACCOUNTS as u64) as usize;
                    atomically(|tx| {
                        let f = tx.read(&accounts[from])?;
                        tx.write(&accounts[from], f - 1)?;
                        tx.modify(&accounts[to], |v| v + 1)?;
                        Ok(())
                    });
                }
                audits
            })
        })
        .collect();
    let audits: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .sum();
    let elapsed = t0.elapsed();
    let total: i64 = accounts.iter().map(TVar::load).sum();
    let s = stats();
    println!(
        "threads: {threads}, transactions: {}, audits: {audits}",
        threads as u64 * per_thread
    );
    println!("total: {total} (expected {})", START * ACCOUNTS as i64);
    println!(
        "time: {:.3}s, {:.2} M committed tx/s",
        elapsed.as_secs_f64(),
        s.commits as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!("{s:#?}");
    println!("abort rate: {:.4}%", s.abort_rate() * 100.0);
    assert_eq!(total, START * ACCOUNTS as i64);
}

fn usage() {
    eprintln!("usage: bank [threads > 0] [transfers-per-thread]");
    std::process::exit(2);
}
