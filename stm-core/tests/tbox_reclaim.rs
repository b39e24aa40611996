//! `TBox` reclamation: every value ever installed is freed exactly once. Run under valgrind by
//! `.ci/run` (memcheck: no errors, nothing definitely lost); the drop counts below check the
//! same thing without valgrind.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use stm_core::{TBox, TxError, atomically, inevitably, try_atomically};

/// Counts live instances, so leaks and double frees show up as a wrong count.
struct Tracked {
    live: Arc<AtomicUsize>,
    payload: Vec<u64>,
}

impl Tracked {
    fn new(live: &Arc<AtomicUsize>, n: u64) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked {
            live: live.clone(),
            payload: (0..n % 8).collect(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tests of this file count live values after driving the epoch, which a test running
/// beside them (pinned) would hold back: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drives the epoch until deferred destructions have run.
fn collect() {
    for _ in 0..256 {
        crossbeam_epoch::pin().flush();
    }
}

#[test]
fn replaced_values_are_reclaimed() {
    let _serial = serial();
    let live = Arc::new(AtomicUsize::new(0));
    {
        let b = Arc::new(TBox::new(Tracked::new(&live, 0)));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (b, live) = (b.clone(), live.clone());
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        atomically(|tx| {
                            let n = tx.read_box(&b)?.payload.len() as u64;
                            tx.write_box(&b, Tracked::new(&live, n + i + t))?;
                            // Overwrite within the same attempt: the first value is garbage.
                            tx.write_box(&b, Tracked::new(&live, n + i))
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Aborted, cancelled and panicking attempts free their pending values too.
        let r: Result<(), ()> = try_atomically(|tx| {
            tx.write_box(&b, Tracked::new(&live, 1))?;
            Err(TxError::User(()))
        });
        assert!(r.is_err());
        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inevitably(|tx| {
                tx.write_box(&b, Tracked::new(&live, 2)).unwrap();
                panic!("dropped");
            })
        }));
        assert!(p.is_err());
        inevitably(|tx| tx.write_box(&b, Tracked::new(&live, 3)).unwrap());
    }
    collect();
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "values leaked or freed twice"
    );
}

#[test]
fn into_inner_and_drop_free_the_current_value() {
    let _serial = serial();
    let live = Arc::new(AtomicUsize::new(0));
    let b = TBox::new(Tracked::new(&live, 5));
    atomically(|tx| tx.write_box(&b, Tracked::new(&live, 6)));
    let v = b.into_inner();
    assert_eq!(v.payload.len(), 6);
    drop(v);
    let c = TBox::new(Tracked::new(&live, 7));
    drop(c);
    collect();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// Values freed by the runtime (rolled back or superseded) may hold `TVar`s that the attempt
/// wrote; their `Drop` must not disturb the write set being torn down (more than 32 writes, so
/// the write set's hash index is in use too).
#[test]
fn freed_values_holding_written_tvars_leave_the_runtime_consistent() {
    let _serial = serial();
    use stm_core::TVar;
    struct Node {
        next: TVar<u64>,
        _t: Tracked,
    }
    let live = Arc::new(AtomicUsize::new(0));
    let boxes: Vec<TBox<Node>> = (0..40)
        .map(|i| {
            TBox::new(Node {
                next: TVar::new(i),
                _t: Tracked::new(&live, i),
            })
        })
        .collect();
    for cancel in [true, false] {
        let r: Result<(), ()> = try_atomically(|tx| {
            for (i, b) in boxes.iter().enumerate() {
                tx.write_box(
                    b,
                    Node {
                        next: TVar::new(0),
                        _t: Tracked::new(&live, i as u64),
                    },
                )?;
            }
            for b in &boxes {
                let n = tx.read_box(b)?;
                tx.write(&n.next, 5)?;
                // Supersede the pending value: the first one (with its written TVar) is garbage.
                tx.write_box(
                    b,
                    Node {
                        next: TVar::new(9),
                        _t: Tracked::new(&live, 1),
                    },
                )?;
            }
            if cancel {
                Err(TxError::User(()))
            } else {
                Ok(())
            }
        });
        assert_eq!(r.is_err(), cancel);
    }
    for b in &boxes {
        assert_eq!(b.with(|n| n.next.load()), 9);
    }
    drop(boxes);
    collect();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// A value whose `Drop` runs a transaction may be freed by the runtime after a commit, a
/// cancellation or an abort: the nested-looking transaction runs on its own.
#[test]
fn a_freed_value_may_run_a_transaction_in_its_drop() {
    let _serial = serial();
    use stm_core::TVar;
    static DROPS: TVar<u64> = TVar::new(0);
    struct Noisy;
    impl Drop for Noisy {
        fn drop(&mut self) {
            atomically(|tx| tx.modify(&DROPS, |d| d + 1).map(drop));
        }
    }
    let b = TBox::new(Noisy);
    let before = DROPS.load();
    // Superseded within the attempt, then committed: the superseded value is freed by the runtime.
    atomically(|tx| {
        tx.write_box(&b, Noisy)?;
        tx.write_box(&b, Noisy)
    });
    // Cancelled: the pending value is freed by the runtime.
    let r: Result<(), ()> = try_atomically(|tx| {
        tx.write_box(&b, Noisy)?;
        Err(TxError::User(()))
    });
    assert!(r.is_err());
    assert!(DROPS.load() >= before + 2);
    drop(b);
    collect();
}

/// A retrying attempt frees its pending values before it sleeps; a value whose `Drop` runs a
/// transaction is freed there too, and that transaction runs on its own (it used to panic as
/// nested, because the waiting attempt still counted as running).
#[test]
fn a_value_freed_before_a_retry_sleep_may_run_a_transaction_in_its_drop() {
    let _serial = serial();
    use stm_core::TVar;
    static RETRY_DROPS: TVar<u64> = TVar::new(0);
    static GO: TVar<bool> = TVar::new(false);
    struct Noisy;
    impl Drop for Noisy {
        fn drop(&mut self) {
            atomically(|tx| tx.modify(&RETRY_DROPS, |d| d + 1).map(drop));
        }
    }
    let b = Arc::new(TBox::new(Noisy));
    let before = RETRY_DROPS.load();
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || {
        atomically(|tx| {
            tx.write_box(&b2, Noisy)?;
            if !tx.read(&GO)? {
                return tx.retry();
            }
            Ok(())
        });
    });
    // The first attempt's pending value is freed before the waiter sleeps: wait for its drop
    // (or for the waiter to have died), then let it go.
    while RETRY_DROPS.load() == before && !waiter.is_finished() {
        std::thread::yield_now();
    }
    atomically(|tx| tx.write(&GO, true));
    waiter.join().expect("the waiter panicked");
    assert!(RETRY_DROPS.load() > before);
    drop(b);
    collect();
}

/// Replaced values are freed by the epoch collector, which runs inside any `pin()`, including
/// the one a transaction makes before it touches a `TBox`. A value whose `Drop` runs a
/// transaction must then wait until that transaction has ended (it used to panic as nested,
/// and the panic inside the collector aborted the process).
#[test]
fn values_collected_inside_a_transaction_may_run_transactions_in_their_drop() {
    let _serial = serial();
    use stm_core::TVar;
    static COLLECTED: TVar<u64> = TVar::new(0);
    struct Noisy;
    impl Drop for Noisy {
        fn drop(&mut self) {
            atomically(|tx| tx.modify(&COLLECTED, |d| d + 1).map(drop));
        }
    }
    let b = TBox::new(Noisy);
    let before = COLLECTED.load();
    for _ in 0..5_000 {
        atomically(|tx| tx.write_box(&b, Noisy));
    }
    drop(b);
    collect();
    // Every replaced value and the last one were dropped, each running its transaction.
    assert!(COLLECTED.load() >= before + 5_000);
}

/// The after-commit actions of an attempt that does not commit are dropped, not run; their
/// captures' `Drop` may run a transaction (it used to panic as nested, dropped inside the
/// ending attempt).
#[test]
fn dropped_after_commit_actions_may_run_transactions_in_their_drop() {
    let _serial = serial();
    use stm_core::TVar;
    static ACTION_DROPS: TVar<u64> = TVar::new(0);
    struct Noisy;
    impl Drop for Noisy {
        fn drop(&mut self) {
            atomically(|tx| tx.modify(&ACTION_DROPS, |d| d + 1).map(drop));
        }
    }
    let before = ACTION_DROPS.load();
    let r: Result<(), ()> = try_atomically(|tx| {
        let n = Noisy;
        tx.after_commit(move || drop(n));
        Err(TxError::User(()))
    });
    assert!(r.is_err());
    assert_eq!(ACTION_DROPS.load(), before + 1);
}

/// Values that the collector queued because it ran inside a transaction (here: inside a body
/// that pins the epoch itself) are freed when that transaction ends, even when it touched no
/// `TBox` (they used to wait for a later `TBox` transaction, or for thread exit).
#[test]
fn values_collected_inside_a_plain_transaction_are_freed_when_it_ends() {
    let _serial = serial();
    use stm_core::TVar;
    let live = Arc::new(AtomicUsize::new(0));
    let b = TBox::new(Tracked::new(&live, 0));
    for i in 0..2_000u64 {
        atomically(|tx| tx.write_box(&b, Tracked::new(&live, i)));
    }
    let plain = TVar::new(0u64);
    for _ in 0..50 {
        atomically(|tx| {
            // Collection runs inside these pins, while the transaction is running.
            for _ in 0..8 {
                crossbeam_epoch::pin().flush();
            }
            tx.modify(&plain, |x| x + 1).map(drop)
        });
    }
    collect();
    assert_eq!(
        live.load(Ordering::SeqCst),
        1,
        "retired values still queued"
    );
    drop(b);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// `or_else` undoing a branch frees what the branch installed and restores (without freeing)
/// what it replaced; keeping a branch frees what it replaced; a panic inside a branch frees
/// both. Each value exactly once.
#[test]
fn or_else_branches_free_each_value_once() {
    let _serial = serial();
    let live = Arc::new(AtomicUsize::new(0));
    {
        let b = TBox::new(Tracked::new(&live, 0));
        let c = TBox::new(Tracked::new(&live, 0));
        // Undone branch, then the second branch overwrites the restored value.
        atomically(|tx| {
            tx.write_box(&b, Tracked::new(&live, 1))?;
            tx.or_else(
                |tx| {
                    tx.write_box(&b, Tracked::new(&live, 2))?;
                    tx.write_box(&c, Tracked::new(&live, 3))?;
                    assert_eq!(tx.read_box(&b)?.payload.len(), 2);
                    tx.retry()
                },
                |tx| {
                    assert_eq!(tx.read_box(&b)?.payload.len(), 1);
                    assert_eq!(tx.read_box(&c)?.payload.len(), 0);
                    tx.write_box(&b, Tracked::new(&live, 4))
                },
            )
        });
        // Kept branch over a value written before it.
        atomically(|tx| {
            tx.write_box(&c, Tracked::new(&live, 5))?;
            tx.or_else(
                |tx| tx.write_box(&c, Tracked::new(&live, 6)),
                |_| unreachable!(),
            )
        });
        // A panic inside a branch, with an undo record outstanding.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            atomically(|tx| {
                tx.write_box(&b, Tracked::new(&live, 7))?;
                tx.or_else(
                    |tx| {
                        tx.write_box(&b, Tracked::new(&live, 7))?;
                        panic!("in the branch");
                    },
                    |_| Ok(()),
                )
            })
        }));
        assert!(r.is_err());
        collect();
        atomically(|tx| {
            assert_eq!(tx.read_box(&b)?.payload.len(), 4);
            assert_eq!(tx.read_box(&c)?.payload.len(), 6);
            Ok(())
        });
        collect();
        assert_eq!(live.load(Ordering::SeqCst), 2);
    }
    collect();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// A panic out of an `or_else` branch that the body catches ends the branch there: its writes
/// are undone and nothing of it reaches the thread's later transactions (it used to stay open:
/// the value it replaced leaked, and a later rollback freed that value with another type's drop
/// function).
#[test]
fn a_caught_panic_in_an_or_else_branch_ends_the_branch() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let _serial = serial();
    let live = Arc::new(AtomicUsize::new(0));
    {
        let b = TBox::new(Tracked::new(&live, 0));
        let s = TBox::new(String::from("x"));
        atomically(|tx| {
            tx.write_box(&b, Tracked::new(&live, 1))?;
            let r = catch_unwind(AssertUnwindSafe(|| {
                tx.or_else(
                    |tx| {
                        tx.write_box(&b, Tracked::new(&live, 2))?;
                        tx.write_box(&b, Tracked::new(&live, 3))?;
                        panic!("caught by the body");
                    },
                    |_| Ok(()),
                )
            }));
            assert!(r.is_err());
            // The branch's writes are gone: the value from before it is back.
            assert_eq!(tx.read_box(&b)?.payload.len(), 1);
            Ok(())
        });
        // The next transaction on this thread starts clean, and its rollback frees only its own.
        let r = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                tx.write_box(&s, String::from("y"))?;
                tx.write_box(&s, String::from("z"))?;
                if tx.read_box(&s)?.len() == 1 {
                    panic!("rolled back");
                }
                Ok(())
            })
        }));
        assert!(r.is_err());
        collect();
        assert_eq!(live.load(Ordering::SeqCst), 1);
        assert_eq!(s.load(), "x");
    }
    collect();
    assert_eq!(live.load(Ordering::SeqCst), 0);
}
