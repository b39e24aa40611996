//! Tokio tasks sharing state through the STM instead of `Arc<Mutex<_>>`: producers put jobs on
//! a bounded queue, consumers take them, and both sides *await* `retry` (queue full / empty)
//! instead of blocking a worker thread. The guide's "Async" section walks through it.
//!
//! `cargo run -p stm-core --example async_jobs`

use std::sync::Arc;
use stm_core::collections::TBoundedQueue;
use stm_core::{TVar, atomically_async};

struct Shared {
    jobs: TBoundedQueue<u64>,
    done: TVar<u64>,
    sum: TVar<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let shared = Arc::new(Shared {
        jobs: TBoundedQueue::with_capacity(8),
        done: TVar::new(0),
        sum: TVar::new(0),
    });
    // Four consumers: each awaits a job (`pop` retries while the queue is empty), then records
    // the result in the same transaction.
    for _ in 0..4 {
        let st = shared.clone();
        tokio::spawn(async move {
            loop {
                atomically_async(|tx| {
                    let n = st.jobs.pop(tx)?;
                    tx.modify(&st.sum, |s| s + n * n)?;
                    tx.modify(&st.done, |d| d + 1)
                })
                .await;
            }
        });
    }
    // Two producers: `push` retries while the queue is full, so they wait for the consumers.
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let st = shared.clone();
            tokio::spawn(async move {
                for i in (p..1000).step_by(2) {
                    atomically_async(|tx| st.jobs.push(tx, i)).await;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    // Wait, without blocking a thread, until every job is done.
    let sum = atomically_async(|tx| {
        if tx.read(&shared.done)? < 1000 {
            return tx.retry();
        }
        tx.read(&shared.sum)
    })
    .await;
    println!("1000 jobs done, sum of squares {sum}");
    assert_eq!(sum, (0..1000u64).map(|n| n * n).sum::<u64>());
}
