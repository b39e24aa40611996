//! Queue overhead: the time of a `TransactionQueue` run of 10,000 empty tasks (issue target:
//! under 2 ms), and of tiny one-task runs (what an event-loop turn pays per batch).
//!
//! Workload: for each worker count, 10 warm-up runs, then 101 timed runs of 10,000 tasks whose
//! body is `Ok(())`; reports the median and the 10th/90th percentiles of `run()` alone and of
//! `add` x 10,000 + `run()`. Then 10,001 runs of one empty task, median per run. Then 10,001
//! event-loop turns over the scripted source, each with one ready token whose handler
//! increments a `TVar` (push the batch, `run_once`), median per turn.
//!
//! ```text
//! cargo run --release -p stm-loop --example queue_overhead
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use stm_core::TVar;
use stm_loop::{EventLoop, Readiness, ScriptedSource, TransactionQueue};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    const TASKS: usize = 10_000;
    const RUNS: usize = 101;
    println!("tasks per run: {TASKS}; timed runs: {RUNS}");
    for workers in [1, 2] {
        // The state is the `TVar` that the loop's handler increments at the end.
        let n = Arc::new(TVar::new(0u64));
        let mut q = TransactionQueue::with_state(n.clone()).workers(workers);
        let mut run_only = Vec::with_capacity(RUNS);
        let mut add_run = Vec::with_capacity(RUNS);
        for i in 0..RUNS + 10 {
            let t0 = Instant::now();
            for _ in 0..TASKS {
                q.add(|_, _| Ok(()));
            }
            let t1 = Instant::now();
            let s = q.run();
            let t2 = Instant::now();
            assert_eq!(s.commits, TASKS as u64);
            if i >= 10 {
                run_only.push(t2 - t1);
                add_run.push(t2 - t0);
            }
        }
        println!(
            "workers={workers}: run() median {:?} (p10 {:?}, p90 {:?}); add+run median {:?}",
            pct(&mut run_only, 0.5),
            pct(&mut run_only, 0.1),
            pct(&mut run_only, 0.9),
            pct(&mut add_run, 0.5),
        );
        let mut single = Vec::with_capacity(10_001);
        for _ in 0..10_001 {
            q.add(|_, _| Ok(()));
            let t = Instant::now();
            q.run();
            single.push(t.elapsed());
        }
        println!(
            "workers={workers}: one-task run median {:?} (p90 {:?})",
            pct(&mut single, 0.5),
            pct(&mut single, 0.9)
        );
        let source = ScriptedSource::new();
        let script = source.handle();
        let mut ev = EventLoop::with_queue(source, q);
        ev.set_handler(1, |tx, n, _| tx.modify(n, |x| x + 1).map(drop));
        let mut turns = Vec::with_capacity(10_001);
        for _ in 0..10_001 {
            let t = Instant::now();
            script.push(vec![Readiness {
                token: 1,
                readable: true,
                ..Default::default()
            }]);
            ev.run_once(None)
                .expect("the scripted source does not fail");
            turns.push(t.elapsed());
        }
        assert_eq!(n.load(), 10_001);
        println!(
            "workers={workers}: loop turn with one ready handler median {:?} (p90 {:?})",
            pct(&mut turns, 0.5),
            pct(&mut turns, 0.9)
        );
    }
}
