//! Runs one small transaction of the `overhead` bench a given number of times, for instruction
//! counts: run it under `valgrind --tool=callgrind` with two counts and divide the difference
//! of the totals by the difference of the counts (start-up and warm-up cancel out).
//!
//! `cargo build --release -p stm-benches --example txcount`, then
//! `valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/txcount ROW N`
//! with `ROW` one of `read_only_1`, `read_write_1`, `read10_write1`, `read10`, and
//! `read_only_1_explicit`, `read10_explicit` (the same through `atomically_read`).

use std::hint::black_box;
use stm_core::{TVar, atomically, atomically_read};

fn main() {
    let mut args = std::env::args().skip(1);
    let row = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let src: Vec<TVar<u64>> = (0..10u64).map(TVar::new).collect();
    let dst = TVar::new(0u64);
    let mut out = 0u64;
    // Each row is one call site, warmed up by 1000 transactions of its own.
    let mut run = |f: &mut dyn FnMut() -> u64| {
        for _ in 0..1000 + n {
            out = out.wrapping_add(f());
        }
    };
    match row.as_str() {
        "read_only_1" => run(&mut || atomically(|tx| tx.read(black_box(&dst)))),
        "read_write_1" => {
            run(&mut || atomically(|tx| tx.modify(black_box(&dst), |x| x.wrapping_add(1))))
        }
        "read10_write1" => run(&mut || {
            atomically(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(tx.read(v)?);
                }
                tx.write(&dst, sum)?;
                Ok(sum)
            })
        }),
        "read10" => run(&mut || {
            atomically(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(tx.read(v)?);
                }
                Ok(sum)
            })
        }),
        "read_only_1_explicit" => run(&mut || atomically_read(|tx| tx.read(black_box(&dst)))),
        "read10_explicit" => run(&mut || {
            atomically_read(|tx| {
                let mut sum = 0u64;
                for v in black_box(&src) {
                    sum = sum.wrapping_add(tx.read(v)?);
                }
                Ok(sum)
            })
        }),
        _ => {
            eprintln!(
                "usage: txcount read_only_1|read_write_1|read10_write1|read10|read_only_1_explicit|read10_explicit N"
            );
            std::process::exit(2);
        }
    }
    println!("{row} {n} {out}");
}
