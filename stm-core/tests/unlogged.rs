//! Read-only attempts without a read set (`docs/design.md`, "Read-only attempts without a read
//! set"): a call site of `atomically` starts unlogged until it needs a read set; then it runs
//! again with one, and keeps one until 64 of its transactions have committed without writing.
//!
//! No test in this binary installs an event sink (with one, every attempt keeps a read set), and
//! the tests run one at a time (`serial`): words of different threads may share a versioned lock,
//! and a commit of another test on a lock that an unlogged attempt reads after its first read
//! would stop it once more. So the number of times a body runs is deterministic wherever the test
//! itself runs no other thread that writes what the body reads.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use stm_core::{
    Event, EventKind, EventSink, TBox, TVar, TxError, atomically, atomically_read, set_event_sink,
    stats, try_atomically,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call site: reads `v`, and writes `v + 1` when `write`. Returns how many times the body
/// ran.
fn step(v: &TVar<u64>, write: bool) -> usize {
    let runs = Cell::new(0);
    atomically(|tx| {
        runs.set(runs.get() + 1);
        let x = tx.read(v)?;
        if write {
            tx.write(v, x + 1)?;
        }
        Ok(())
    });
    runs.get()
}

#[test]
fn a_site_that_writes_on_its_second_call_runs_again_with_a_read_set() {
    let _serial = serial();
    let v = TVar::new(0u64);
    let before = stats();
    // First call, read-only: unlogged, once.
    assert_eq!(step(&v, false), 1);
    // Second call writes: the unlogged attempt stops at the write, the body runs again logged.
    assert_eq!(step(&v, true), 2);
    assert_eq!(v.load(), 1);
    // The site is remembered: the next write runs once.
    assert_eq!(step(&v, true), 1);
    assert_eq!(v.load(), 2);
    // Read-only calls keep the read set for a while (no rerun)...
    for _ in 0..10 {
        assert_eq!(step(&v, false), 1);
    }
    assert_eq!(step(&v, true), 1);
    // ...and after 64 read-only commits the site is unlogged again: a write pays one rerun.
    for _ in 0..100 {
        assert_eq!(step(&v, false), 1);
    }
    assert_eq!(step(&v, true), 2);
    assert_eq!(v.load(), 4);
    let d = stats().since(&before);
    // Global counters (other tests run beside this one): lower bounds only.
    assert!(d.unlogged_reruns >= 2, "{d:?}");
    assert!(d.read_only_commits >= 111, "{d:?}");
    assert!(d.commits >= 115, "{d:?}");
}

#[test]
fn a_body_that_ignores_a_refused_write_still_commits_it_on_the_rerun() {
    let _serial = serial();
    let v = TVar::new(0u64);
    let runs = Cell::new(0);
    atomically(|tx| {
        runs.set(runs.get() + 1);
        let r = tx.write(&v, 5);
        // Only the first, unlogged attempt has the write refused.
        assert_eq!(r.is_err(), runs.get() == 1);
        Ok(())
    });
    assert_eq!(runs.get(), 2);
    assert_eq!(v.load(), 5);
}

#[test]
fn modify_from_an_unlogged_site() {
    let _serial = serial();
    let v = TVar::new(41u64);
    let runs = Cell::new(0);
    let n = atomically(|tx| {
        runs.set(runs.get() + 1);
        tx.modify(&v, |x| x + 1)
    });
    assert_eq!((n, v.load(), runs.get()), (42, 42, 2));
}

#[test]
fn retry_from_an_unlogged_site_waits_on_what_it_read() {
    let _serial = serial();
    let flag = TVar::new(0u64);
    let runs = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                match tx.read(&flag)? {
                    0 => tx.retry(),
                    x => Ok(x),
                }
            })
        });
        // The first attempt is unlogged: its `retry` reruns the body with a read set; that
        // attempt (the second run) reads 0 again and waits. Write only after it started.
        while runs.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        atomically(|tx| tx.write(&flag, 7));
        assert_eq!(waiter.join().unwrap(), 7);
    });
    // Unlogged, logged (waits), woken.
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn or_else_runs_unlogged_until_something_needs_the_read_set() {
    let _serial = serial();
    let (a, b) = (TVar::new(0u32), TVar::new(5u32));
    // The first branch retries, the second reads: no read set needed, one run.
    let runs = Cell::new(0);
    let got = atomically(|tx| {
        runs.set(runs.get() + 1);
        tx.or_else(
            |tx| match tx.read(&a)? {
                0 => tx.retry(),
                x => Ok(x),
            },
            |tx| tx.read(&b),
        )
    });
    assert_eq!((got, runs.get()), (5, 1));
    // The second branch writes: one rerun, then the same choice with a read set.
    let runs = Cell::new(0);
    let took_from_b = atomically(|tx| {
        runs.set(runs.get() + 1);
        tx.or_else(
            |tx| {
                let x = tx.read(&a)?;
                if x == 0 {
                    return tx.retry();
                }
                tx.write(&a, x - 1)?;
                Ok(false)
            },
            |tx| {
                tx.modify(&b, |y| y - 1)?;
                Ok(true)
            },
        )
    });
    assert!(took_from_b);
    assert_eq!((a.load(), b.load(), runs.get()), (0, 4, 2));
}

#[test]
fn become_inevitable_from_an_unlogged_site() {
    let _serial = serial();
    let v = TVar::new(3u64);
    let runs = Cell::new(0);
    let (x, inev) = atomically(|tx| {
        runs.set(runs.get() + 1);
        let x = tx.read(&v)?;
        tx.become_inevitable()?;
        Ok((x, tx.is_inevitable()))
    });
    assert_eq!((x, inev, runs.get()), (3, true, 2));
}

#[test]
fn after_commit_of_an_unlogged_attempt_runs_once() {
    let _serial = serial();
    let v = TVar::new(1u64);
    let ran = Arc::new(AtomicUsize::new(0));
    let runs = Cell::new(0);
    let r = ran.clone();
    atomically(|tx| {
        runs.set(runs.get() + 1);
        let r = r.clone();
        tx.after_commit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        tx.read(&v)
    });
    assert_eq!((ran.load(Ordering::SeqCst), runs.get()), (1, 1));
    // An action of an attempt stopped by a write is dropped; the rerun's runs once.
    let runs = Cell::new(0);
    let r = ran.clone();
    atomically(|tx| {
        runs.set(runs.get() + 1);
        let r = r.clone();
        tx.after_commit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        tx.modify(&v, |x| x + 1)
    });
    assert_eq!((ran.load(Ordering::SeqCst), runs.get()), (2, 2));
}

#[test]
fn try_atomically_user_error_from_an_unlogged_attempt() {
    let _serial = serial();
    let v = TVar::new(2u64);
    let r: Result<u64, &str> = try_atomically(|tx| {
        if tx.read(&v)? < 10 {
            return Err(TxError::User("too small"));
        }
        Ok(0)
    });
    assert_eq!(r, Err("too small"));
}

#[test]
fn a_panic_in_an_unlogged_attempt_propagates_and_leaves_nothing() {
    let _serial = serial();
    let v = TVar::new(1u64);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            let x = tx.read(&v)?;
            if x == 1 {
                panic!("boom");
            }
            Ok(x)
        })
    }));
    assert!(r.is_err());
    // A panic after a refused write: the rerun (logged) writes, then panics; nothing lands.
    let runs = Cell::new(0);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            runs.set(runs.get() + 1);
            let _ = tx.write(&v, 9);
            if runs.get() == 2 {
                panic!("boom after the write");
            }
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert_eq!((v.load(), runs.get()), (1, 2));
    // The thread runs transactions normally afterwards.
    assert_eq!(atomically(|tx| tx.modify(&v, |x| x + 1)), 2);
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_refused_tbox_write_frees_its_value() {
    let _serial = serial();
    let old = Arc::new(AtomicUsize::new(0));
    let new = Arc::new(AtomicUsize::new(0));
    let b = TBox::new(Counted(old.clone()));
    let runs = Cell::new(0);
    atomically(|tx| {
        runs.set(runs.get() + 1);
        tx.write_box(&b, Counted(new.clone()))
    });
    // Two values built: the refused one is freed when its attempt ends, the other is in the box.
    assert_eq!((runs.get(), new.load(Ordering::SeqCst)), (2, 1));
    assert!(Arc::ptr_eq(&b.with(|c| c.0.clone()), &new));
    drop(b);
    assert_eq!(new.load(Ordering::SeqCst), 2);
}

/// Read-only transactions on one thread (unlogged: their site never writes) beside transfers on
/// another: every snapshot, inside the body, keeps the total. Bounded: the reader stops when the
/// writer has done its fixed number of transfers.
#[test]
fn unlogged_readers_never_see_a_transfer_half_done() {
    let _serial = serial();
    const N: usize = 8;
    const TOTAL: u64 = 8_000;
    const TRANSFERS: u64 = 20_000;
    let accounts: Vec<TVar<u64>> = (0..N).map(|_| TVar::new(TOTAL / N as u64)).collect();
    let done = AtomicBool::new(false);
    let before = stats();
    let snapshots = std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for _ in 0..TRANSFERS {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (from, to) = ((x % N as u64) as usize, ((x >> 8) % N as u64) as usize);
                atomically(|tx| {
                    let f = tx.read(&accounts[from])?;
                    let amount = f.min((x >> 32) & 15);
                    tx.write(&accounts[from], f - amount)?;
                    tx.modify(&accounts[to], |t| t + amount)?;
                    Ok(())
                });
            }
            done.store(true, Ordering::SeqCst);
        });
        let reader = s.spawn(|| {
            let mut snapshots = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                // Whole-array sums, and a pair read in the other order.
                let sum =
                    atomically(|tx| accounts.iter().try_fold(0u64, |a, v| Ok(a + tx.read(v)?)));
                assert_eq!(sum, TOTAL, "inconsistent snapshot");
                atomically(|tx| {
                    let mut sum = 0;
                    for v in accounts.iter().rev() {
                        sum += tx.read(v)?;
                    }
                    // Inside the attempt: opacity, not only at the commit.
                    assert_eq!(sum, TOTAL, "inconsistent snapshot inside the body");
                    Ok(())
                });
                // The explicit read-only entry point, the same way.
                let sum = atomically_read(|tx| {
                    let mut sum = 0;
                    for v in &accounts {
                        sum += tx.read(v)?;
                    }
                    assert_eq!(sum, TOTAL, "inconsistent snapshot inside a read-only body");
                    Ok(sum)
                });
                assert_eq!(sum, TOTAL);
                snapshots += 3;
                if finished {
                    return snapshots;
                }
            }
        });
        reader.join().unwrap()
    });
    let d = stats().since(&before);
    assert!(snapshots >= 2);
    assert!(d.read_only_commits >= snapshots, "{d:?}");
    assert_eq!(accounts.iter().map(TVar::load).sum::<u64>(), TOTAL);
}

/// A long read-only transaction among hot writers finishes: after a stop for a newer word and one
/// unlogged rerun it runs with a read set, which can extend.
#[test]
fn a_long_unlogged_reader_finishes_among_writers() {
    let _serial = serial();
    const WORDS: usize = 256;
    let words: Vec<TVar<u64>> = (0..WORDS).map(|_| TVar::new(0)).collect();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) {
                // Each commit adds one to two words: the total stays even.
                atomically(|tx| {
                    tx.modify(&words[i % WORDS], |x| x + 1)?;
                    tx.modify(&words[(i * 7 + 3) % WORDS], |x| x + 1)?;
                    Ok(())
                });
                i += 1;
            }
        });
        for _ in 0..200 {
            let sum: u64 = atomically(|tx| words.iter().try_fold(0u64, |a, v| Ok(a + tx.read(v)?)));
            assert_eq!(sum % 2, 0, "inconsistent snapshot");
        }
        done.store(true, Ordering::SeqCst);
    });
}

/// Collects the events of one thread.
struct Collect(u64, Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn event(&self, e: &Event) {
        if e.thread == self.0 {
            self.1.lock().unwrap().push(*e);
        }
    }
}

#[test]
fn with_an_event_sink_every_attempt_keeps_a_read_set() {
    let _serial = serial();
    // A thread of its own: its table of sites is empty, so without the sink the first call
    // would run twice.
    std::thread::scope(|s| {
        s.spawn(|| {
            let sink = Arc::new(Collect(stm_core::thread_id(), Mutex::new(Vec::new())));
            set_event_sink(Some(sink.clone()));
            let v = TVar::new(0u64);
            let runs = step(&v, true);
            set_event_sink(None);
            assert_eq!((runs, v.load()), (1, 1));
            // One attempt, one commit: no stop reaches the sink.
            let kinds: Vec<_> = sink.1.lock().unwrap().iter().map(|e| e.kind).collect();
            assert!(
                matches!(
                    kinds[..],
                    [
                        EventKind::Start { .. },
                        EventKind::Commit {
                            read_only: false,
                            ..
                        }
                    ]
                ),
                "{kinds:?}"
            );
            // Without the sink, a fresh site that writes stops once again.
            let w = TVar::new(0u64);
            assert_eq!(step_elsewhere(&w), 2);
        });
    });
}

/// Another call site that writes.
fn step_elsewhere(v: &TVar<u64>) -> usize {
    let runs = Cell::new(0);
    atomically(|tx| {
        runs.set(runs.get() + 1);
        tx.modify(v, |x| x + 1)
    });
    runs.get()
}

#[test]
fn atomically_read_runs_once_and_waits_in_retry_with_a_read_set() {
    let _serial = serial();
    let v = TVar::new(5u64);
    let runs = Cell::new(0);
    let x = atomically_read(|tx| {
        runs.set(runs.get() + 1);
        tx.read(&v)
    });
    assert_eq!((x, runs.get()), (5, 1));
    let flag = TVar::new(0u64);
    let runs = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            atomically_read(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                match tx.read(&flag)? {
                    0 => tx.retry(),
                    x => Ok(x),
                }
            })
        });
        // Unlogged first: its `retry` reruns the body with a read set, which waits.
        while runs.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        atomically(|tx| tx.write(&flag, 9));
        assert_eq!(waiter.join().unwrap(), 9);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}
