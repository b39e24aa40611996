//! TransactionQueue semantics: exactly once, ordered = serial, tasks adding tasks, panics,
//! many small runs, the shared state. Every test is bounded by operation counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stm_core::{TBox, TVar, Tx, TxResult};
use stm_loop::{Spawner, TransactionQueue};

/// A state of one word, for the tests that need no more.
fn word() -> Arc<TVar<u64>> {
    Arc::new(TVar::new(0))
}

#[test]
fn every_task_runs_exactly_once() {
    struct Marks {
        /// A committed-side count per task.
        each: Vec<TVar<u32>>,
        hot: TVar<u64>,
    }
    for workers in [1, 2, 4] {
        let n = 2_000usize;
        // A committed-side count per task (transactional) and an after-commit count.
        let marks = Arc::new(Marks {
            each: (0..n).map(|_| TVar::new(0)).collect(),
            hot: TVar::new(0),
        });
        let after: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let mut q = TransactionQueue::with_state(marks.clone()).workers(workers);
        for i in 0..n {
            let after = after.clone();
            q.add(move |tx, marks| {
                tx.modify(&marks.each[i], |m| m + 1)?;
                tx.modify(&marks.hot, |h| h + 1)?; // a real conflict between every pair of tasks
                let after = after.clone();
                tx.after_commit(move || {
                    after[i].fetch_add(1, Ordering::Relaxed);
                });
                Ok(())
            });
        }
        let stats = q.run();
        assert_eq!(stats.tasks, n as u64);
        assert_eq!(stats.commits, n as u64);
        assert_eq!(stats.panics, 0);
        assert_eq!(marks.hot.load(), n as u64);
        for (i, mark) in marks.each.iter().enumerate() {
            assert_eq!(mark.load(), 1, "task {i} committed {} times", mark.load());
            assert_eq!(after[i].load(Ordering::Relaxed), 1);
        }
        assert_eq!(q.pending(), 0);
    }
}

#[test]
fn workers_persist_and_queue_is_reusable() {
    let mut q = TransactionQueue::with_workers(2);
    assert_eq!(q.worker_count(), 2);
    let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    for _ in 0..50 {
        for _ in 0..64 {
            let threads = threads.clone();
            q.add(move |tx, _| {
                let threads = threads.clone();
                tx.after_commit(move || {
                    threads.lock().unwrap().insert(std::thread::current().id());
                });
                Ok(())
            });
        }
        assert_eq!(q.run().commits, 64);
    }
    // The caller plus at most one helper, however many runs: threads are kept, not respawned.
    assert!(threads.lock().unwrap().len() <= 2);
}

/// The ordered outcome must equal the serial loop: each task appends its id to a shared log
/// and mixes it into a non-commutative hash.
#[test]
fn ordered_mode_equals_the_serial_order() {
    struct Trace {
        hash: TVar<u64>,
        log: TBox<Vec<u64>>,
    }
    for workers in [1, 2, 3] {
        let n = 500u64;
        let trace = Arc::new(Trace {
            hash: TVar::new(17),
            log: TBox::new(Vec::new()),
        });
        let mut q = TransactionQueue::with_state(trace.clone())
            .workers(workers)
            .ordered(true);
        assert!(q.is_ordered());
        for i in 0..n {
            q.add(move |tx, Trace { hash, log }| {
                // Some private work first, so bodies overlap.
                let mut x = i;
                for _ in 0..200 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                tx.modify(hash, |h| h.wrapping_mul(31).wrapping_add(i))?;
                let mut l = tx.read_box(log)?.clone();
                l.push(i);
                tx.write_box(log, l)?;
                Ok(())
            });
        }
        q.run();
        let mut expect = 17u64;
        for i in 0..n {
            expect = expect.wrapping_mul(31).wrapping_add(i);
        }
        assert_eq!(trace.hash.load(), expect, "workers = {workers}");
        assert_eq!(trace.log.load(), (0..n).collect::<Vec<_>>());
    }
}

#[test]
fn ordered_after_commit_actions_run_in_add_order() {
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut q = TransactionQueue::with_workers(2).ordered(true);
    for i in 0..300u32 {
        let order = order.clone();
        q.add(move |tx, _| {
            let order = order.clone();
            tx.after_commit(move || order.lock().unwrap().push(i));
            Ok(())
        });
    }
    q.run();
    assert_eq!(*order.lock().unwrap(), (0..300).collect::<Vec<_>>());
}

/// Serial FIFO semantics with added tasks: a task's additions go to the end of the order.
#[test]
fn ordered_mode_with_added_tasks_equals_the_fifo_loop() {
    type Log = TBox<Vec<u32>>;
    fn add_node(q: &Spawner<Log>, id: u32) {
        q.add_with(move |tx, log, s| node(tx, log, s, id));
    }
    fn node<'t>(tx: &mut Tx<'t, '_>, log: &'t Log, s: &Spawner<Log>, id: u32) -> TxResult<()> {
        let mut l = tx.read_box(log)?.clone();
        l.push(id);
        tx.write_box(log, l)?;
        if id < 100 {
            add_node(s, id * 2 + 100);
            add_node(s, id * 2 + 101);
        }
        Ok(())
    }
    // The serial FIFO loop, by hand.
    let mut expect = Vec::new();
    let mut fifo: std::collections::VecDeque<u32> = (0..10).collect();
    while let Some(id) = fifo.pop_front() {
        expect.push(id);
        if id < 100 {
            fifo.push_back(id * 2 + 100);
            fifo.push_back(id * 2 + 101);
        }
    }
    for workers in [1, 2] {
        let mut q = TransactionQueue::with_state(Arc::new(TBox::new(Vec::new())))
            .workers(workers)
            .ordered(true);
        for id in 0..10 {
            q.add_with(move |tx, log, s| node(tx, log, s, id));
        }
        let stats = q.run();
        assert_eq!(stats.tasks, expect.len() as u64);
        assert_eq!(q.state().load(), expect, "workers = {workers}");
    }
}

#[test]
fn tasks_adding_tasks_run_in_the_same_run() {
    let count = word();
    let mut q = TransactionQueue::with_state(count.clone()).workers(2);
    // One root; each task below depth 10 adds two children: 2^11 - 1 tasks.
    fn tree(s: &Spawner<TVar<u64>>, depth: u32) {
        s.add_with(move |tx, count, s| {
            tx.modify(count, |c| c + 1)?;
            if depth < 10 {
                tree(s, depth + 1);
                tree(s, depth + 1);
            }
            Ok(())
        });
    }
    q.add_with(|tx, count, s| {
        tx.modify(count, |c| c + 1)?;
        tree(s, 1);
        tree(s, 1);
        Ok(())
    });
    let stats = q.run();
    assert_eq!(count.load(), (1 << 11) - 1);
    assert_eq!(stats.tasks, (1 << 11) - 1);
    assert_eq!(stats.commits, stats.tasks);
}

/// Additions of an attempt that aborts are dropped with it: each committed task adds exactly
/// one child, however often it ran. (The children write a variable of their own, an `Arc`
/// they captured, through `Tx::hold`.)
#[test]
fn additions_of_aborted_attempts_are_dropped() {
    let hot = word();
    let children = word();
    let mut q = TransactionQueue::with_state(hot.clone()).workers(2);
    for _ in 0..400 {
        let children = children.clone();
        q.add_with(move |tx, hot, s| {
            let h = tx.read(hot)?;
            std::hint::black_box((0..100).sum::<u64>());
            tx.write(hot, h + 1)?;
            let children = children.clone();
            s.add(move |tx, _| {
                let children = tx.hold(children.clone());
                tx.modify(children, |c| c + 1).map(drop)
            });
            Ok(())
        });
    }
    let stats = q.run();
    assert_eq!(hot.load(), 400);
    assert_eq!(children.load(), 400);
    assert_eq!(stats.tasks, 800);
}

#[test]
fn a_panicking_task_does_not_stop_the_others() {
    for (workers, ordered) in [(1, false), (2, false), (2, true)] {
        let done = word();
        let mut q = TransactionQueue::with_state(done.clone())
            .workers(workers)
            .ordered(ordered);
        for i in 0..100u64 {
            q.add(move |tx, done| {
                if i == 37 || i == 80 {
                    panic!("task {i} failed");
                }
                tx.modify(done, |d| d + 1)?;
                Ok(())
            });
        }
        let err = q.try_run().expect_err("two tasks panicked");
        assert_eq!(done.load(), 98);
        assert_eq!(err.stats().panics, 2);
        assert_eq!(err.stats().commits, 98);
        let msg = err.message().unwrap().to_string();
        assert!(msg == "task 37 failed" || msg == "task 80 failed", "{msg}");
        assert!(err.to_string().contains("2 of 100 tasks panicked"));

        // The queue is still usable, and `run` re-raises.
        q.add(|tx, done| tx.modify(done, |x| x + 1).map(drop));
        assert_eq!(q.run().commits, 1);
        assert_eq!(done.load(), 99);
        q.add(|_, _| panic!("again"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.run()));
        let payload = r.expect_err("run re-raises the panic");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"again"));
        assert_eq!(q.last_stats().panics, 1);
        q.add(|_, _| Ok(()));
        assert_eq!(q.run().commits, 1);
    }
}

#[test]
fn a_panicking_task_discards_its_writes() {
    let v = word();
    let mut q = TransactionQueue::with_state(v.clone()).workers(2);
    q.add(|tx, v| {
        tx.write(v, 99)?;
        panic!("after the write");
    });
    assert!(q.try_run().is_err());
    assert_eq!(v.load(), 0);
}

#[test]
fn thousands_of_empty_and_tiny_runs() {
    let v = word();
    let mut q = TransactionQueue::with_state(v.clone()).workers(2);
    for _ in 0..3_000 {
        assert_eq!(q.run().tasks, 0);
    }
    for i in 0..3_000u64 {
        let k = i % 3 + 1;
        for _ in 0..k {
            q.add(|tx, v| tx.modify(v, |x| x + 1).map(drop));
        }
        assert_eq!(q.run().commits, k);
    }
    assert_eq!(v.load(), 6_000);
}

#[test]
fn a_big_batch_of_empty_tasks() {
    let mut q = TransactionQueue::with_workers(2);
    for _ in 0..20 {
        for _ in 0..10_000 {
            q.add(|_, _| Ok(()));
        }
        let s = q.run();
        assert_eq!((s.tasks, s.commits, s.panics), (10_000, 10_000, 0));
    }
}

#[test]
fn zero_workers_means_one() {
    let mut q = TransactionQueue::with_workers(0);
    assert_eq!(q.worker_count(), 1);
    q.add(|_, _| Ok(()));
    assert_eq!(q.run().commits, 1);
    let q = TransactionQueue::with_state(word()).workers(0);
    assert_eq!(q.worker_count(), 1);
}

/// `workers(n)` changes the number of workers, also after a run (its helpers are replaced),
/// and keeps the tasks already added and the state.
#[test]
fn workers_can_be_changed_between_runs() {
    let v = word();
    let mut q = TransactionQueue::with_state(v.clone()).workers(3);
    assert_eq!(q.worker_count(), 3);
    for _ in 0..100 {
        q.add(|tx, v| tx.modify(v, |x| x + 1).map(drop));
    }
    assert_eq!(q.run().commits, 100);
    for _ in 0..50 {
        q.add(|tx, v| tx.modify(v, |x| x + 1).map(drop));
    }
    let mut q = q.workers(2).ordered(true);
    assert_eq!((q.worker_count(), q.pending()), (2, 50));
    assert!(Arc::ptr_eq(q.state(), &v));
    assert_eq!(q.run().commits, 50);
    assert_eq!(v.load(), 150);
}

/// The default queue has the default state.
#[test]
fn a_default_queue_has_the_default_state() {
    let mut q: TransactionQueue<TVar<u64>> = TransactionQueue::default();
    assert!(q.worker_count() >= 1);
    q.add(|tx, v| tx.modify(v, |x| x + 7).map(drop));
    q.run();
    assert_eq!(q.state().load(), 7);
}

#[test]
fn conflicts_are_counted_as_aborts() {
    // Two workers hammer one word with tasks that take a while between read and write; some
    // attempt must abort unless the scheduler serialised them all, so only check consistency.
    let hot = word();
    let mut q = TransactionQueue::with_state(hot.clone()).workers(2);
    for _ in 0..1_000 {
        q.add(|tx, hot| {
            let h = tx.read(hot)?;
            std::hint::black_box((0..200u64).sum::<u64>());
            tx.write(hot, h + 1)?;
            Ok(())
        });
    }
    let s = q.run();
    assert_eq!(hot.load(), 1_000);
    assert_eq!(s.commits, 1_000);
    let core = stm_core::stats();
    // The queue counts every attempt that did not commit, stm-core's reruns of attempts that
    // ran without a read set included (a worker's first task writes from an unlogged attempt).
    assert!(core.aborts() + core.unlogged_reruns >= s.aborts);
}

/// With two workers, two tasks of one run are in their bodies at the same time: each waits
/// (bounded by a count of yields, not by time) until it has seen the other arrive.
#[test]
fn two_workers_really_run_in_parallel() {
    let mut q = TransactionQueue::with_workers(2);
    for _ in 0..20 {
        let inside = Arc::new(AtomicU64::new(0));
        let met = Arc::new(AtomicU64::new(0));
        for _ in 0..2 {
            let (inside, met) = (inside.clone(), met.clone());
            q.add(move |_, _| {
                inside.fetch_add(1, Ordering::SeqCst);
                for _ in 0..10_000_000u64 {
                    if inside.load(Ordering::SeqCst) >= 2 {
                        met.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    std::thread::yield_now();
                }
                Ok(())
            });
        }
        q.run();
        assert_eq!(
            met.load(Ordering::SeqCst),
            2,
            "the two tasks never overlapped"
        );
    }
}

/// In ordered mode a body that makes itself inevitable before its turn is rolled back and run
/// again at its turn (holding the token while waiting could deadlock with an earlier task):
/// the run completes and the order is kept.
#[test]
fn ordered_mode_with_inevitable_bodies_keeps_the_order() {
    let log = Arc::new(TBox::new(Vec::<u32>::new()));
    let mut q = TransactionQueue::with_state(log.clone())
        .workers(2)
        .ordered(true);
    for i in 0..200u32 {
        q.add(move |tx, log| {
            if i % 3 == 0 {
                tx.become_inevitable()?;
                assert!(tx.is_inevitable());
            }
            let mut l = tx.read_box(log)?.clone();
            l.push(i);
            tx.write_box(log, l)?;
            Ok(())
        });
    }
    let stats = q.run();
    assert_eq!(stats.commits, 200);
    assert_eq!(log.load(), (0..200).collect::<Vec<_>>());
}
