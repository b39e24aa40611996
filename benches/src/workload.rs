//! Running a workload on N threads for a fixed number of operations each.

use crate::rng::Rng;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Runs `op` `ops` times on each of `threads` threads (each with its own [`Rng`], seeded from
/// `seed` and the thread index) and returns the wall time from the common start to the end of
/// the last thread. `op` receives the thread index and its generator.
///
/// A panic in `op` is propagated to the caller once every thread has stopped.
pub fn run_threads<F>(threads: usize, ops: u64, seed: u64, op: F) -> Duration
where
    F: Fn(usize, &mut Rng) + Sync,
{
    let threads = threads.max(1);
    let start = Barrier::new(threads);
    // Each thread times itself from the common start: the spawning thread may be descheduled
    // after the barrier (threads >= cores), so it cannot take the start time for them.
    let spans: Vec<std::thread::Result<(Instant, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, op) = (&start, &op);
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9));
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..ops {
                        op(t, &mut rng);
                    }
                    (t0, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for span in spans {
        match span {
            Ok((a, b)) => {
                first = Some(first.map_or(a, |f| f.min(a)));
                last = Some(last.map_or(b, |l| l.max(b)));
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    }
}

/// Operations per second for `ops` operations done in `elapsed`.
pub fn per_second(ops: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { ops as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn every_thread_runs_every_op() {
        let n = AtomicU64::new(0);
        run_threads(3, 100, 7, |_, _| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 300);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
    }
}
