//! Model checks of the lock / validate / commit protocol and of the inevitable hand-over.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p stm-core --release --test loom`
//!
//! Under loom every atomic, mutex and condition variable of the protocol comes from loom
//! (`src/sync.rs`), the runtime is created afresh for each explored execution, and the lock
//! table has 16 entries (so distinct words may share a lock, which the models also cover).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use stm_core::{TVar, atomically, inevitably};

/// Two read-modify-write transactions on one word: no lost update, in every interleaving.
#[test]
fn concurrent_increments_are_not_lost() {
    loom::model(|| {
        let v = Arc::new(TVar::new(0u64));
        let v2 = v.clone();
        let t = thread::spawn(move || {
            atomically(|tx| tx.modify(&*v2, |x| x + 1).map(drop));
        });
        atomically(|tx| tx.modify(&*v, |x| x + 1).map(drop));
        t.join().unwrap();
        assert_eq!(v.load(), 2);
    });
}

/// Two words at a fixed place relative to the 16-entry lock table of the loom build: aligned to
/// 2048 bytes, so that the first word always uses lock 0 and the second lock 1, whatever the heap hands out (the
/// lock index depends on address bits 3 to 10 only).
#[repr(C, align(2048))]
struct Pair(TVar<i64>, TVar<i64>);

/// A transfer between two words beside a reader of both: the reader never sees a half-done
/// transfer (opacity), inside its transaction, in any interleaving.
///
/// The reader runs on a spawned thread, and the two words sit in a `Pair`. On the model's main
/// thread, the reader made loom 0.7.3 explore one interleaving only (`LOOM_LOG=info`: "Completed
/// in 1 iterations"); spawned, with each word in an `Arc` of its own, the model was not
/// deterministic ("Reached unexpected exploration state"): the words' heap addresses, and so
/// which of the 16 versioned locks they use and whether they share one, changed between
/// executions.
#[test]
fn readers_never_see_half_a_commit() {
    loom::model(|| {
        let p = Arc::new(Pair(TVar::new(10), TVar::new(0)));
        let (p2, p3) = (p.clone(), p.clone());
        let t = thread::spawn(move || {
            let (a, b) = (&p2.0, &p2.1);
            atomically(|tx| {
                let x = tx.read(a)?;
                tx.write(a, x - 3)?;
                let y = tx.read(b)?;
                tx.write(b, y + 3)
            });
        });
        let r = thread::spawn(move || {
            atomically(|tx| {
                let x = tx.read(&p3.0)?;
                let y = tx.read(&p3.1)?;
                assert_eq!(x + y, 10, "inconsistent snapshot");
                Ok(x + y)
            })
        });
        assert_eq!(r.join().unwrap(), 10);
        t.join().unwrap();
        assert_eq!((p.0.load(), p.1.load()), (7, 3));
    });
}

/// An unlogged reader (its call site never writes, so it keeps no read set) beside two transfers
/// committed one after the other: when it reads a word newer than its snapshot after its first
/// read it stops and runs again with a read set, and no attempt ever sees a state between two
/// commits. Covers the unlogged read, its extension before its first read, its stop for a newer
/// word and the logged rerun that extends. Making the unlogged read accept a word newer than
/// its snapshot fails it ("inconsistent snapshot"). A `Pair` and a spawned reader, as in
/// `readers_never_see_half_a_commit`. (`concurrent_increments_are_not_lost` covers the other
/// stop: both sites start unlogged and stop at their first write.)
#[test]
fn unlogged_reader_never_sees_half_a_commit() {
    loom::model(|| {
        let p = Arc::new(Pair(TVar::new(10), TVar::new(0)));
        let (p2, p3) = (p.clone(), p.clone());
        let t = thread::spawn(move || {
            let (a, b) = (&p2.0, &p2.1);
            for _ in 0..2 {
                atomically(|tx| {
                    let x = tx.read(a)?;
                    tx.write(a, x - 3)?;
                    let y = tx.read(b)?;
                    tx.write(b, y + 3)
                });
            }
        });
        let r = thread::spawn(move || {
            atomically(|tx| {
                let y = tx.read(&p3.1)?;
                let x = tx.read(&p3.0)?;
                assert_eq!(x + y, 10, "inconsistent snapshot");
                Ok((x, y))
            })
        });
        let (x, y) = r.join().unwrap();
        assert!(y == 0 || y == 3 || y == 6, "{y}");
        assert_eq!(x + y, 10);
        t.join().unwrap();
        assert_eq!((p.0.load(), p.1.load()), (4, 6));
    });
}

/// One commit writes two words that share a lock (17 variables, 16 locks under loom: two of them
/// do): the commit stores both words before it releases the lock, so a reader that sees one new
/// word sees the other (the write-back runs backwards, releasing each lock after the last of its
/// words: see `State::commit_update`).
#[test]
fn words_sharing_a_lock_are_published_together() {
    loom::model(|| {
        let vars: Arc<Vec<TVar<u64>>> = Arc::new((0..17).map(|_| TVar::new(0)).collect());
        let (i, j) = (0..17)
            .flat_map(|i| (i + 1..17).map(move |j| (i, j)))
            .find(|&(i, j)| vars[i].shares_lock_with(&vars[j]))
            .expect("17 variables on 16 locks");
        let v2 = vars.clone();
        let t = thread::spawn(move || {
            atomically(|tx| {
                tx.write(&v2[i], 1)?;
                tx.write(&v2[j], 1)
            });
        });
        let (x, y) = atomically(|tx| Ok((tx.read(&vars[i])?, tx.read(&vars[j])?)));
        assert_eq!(x, y, "half a commit seen");
        t.join().unwrap();
        assert_eq!((vars[i].load(), vars[j].load()), (1, 1));
    });
}

/// Write skew: each transaction reads the word the other writes, and writes only if what it
/// read is still 0. Serialisable outcomes have at most one of the two words set. With a global
/// clock the clock's RMW ordered the two commits; with per-thread clocks the lock CAS and the
/// validation loads must do it (a SeqCst store-buffering pattern). This model fails if the
/// commit skips validating its reads (checked by hand); it cannot check the ordering itself,
/// because the loom build's lock-waiter signal (a mutex, see `Runtime::orec_written`) already
/// orders the two lock CASes. The ordering is argued in `src/tx/mod.rs` and `docs/design.md`.
///
/// Ignored in CI: in about one run of three, loom 0.7.3 trips its own internal assertion on this
/// model (`assert_ne!(mo_i, mo_j)` in `rt/atomic.rs`, marked "TODO: this sometimes fails" in
/// loom's source), not ours; the outcome varies between runs of the same binary, so it depends
/// on state inside loom. Run it with `--ignored` (it passes whenever loom completes it). The
/// property is checked on real threads by `tests/stress.rs`, `write_skew_never_commits_both_sides`.
#[test]
#[ignore = "loom 0.7.3 trips its internal assert_ne!(mo_i, mo_j) on this model about one run in three; see the doc comment"]
fn write_skew_is_prevented() {
    loom::model(|| {
        let a = Arc::new(TVar::new(0u64));
        let b = Arc::new(TVar::new(0u64));
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            atomically(|tx| {
                if tx.read(&*a2)? == 0 {
                    tx.write(&*b2, 1)?;
                }
                Ok(())
            });
        });
        atomically(|tx| {
            if tx.read(&*b)? == 0 {
                tx.write(&*a, 1)?;
            }
            Ok(())
        });
        t.join().unwrap();
        assert!(
            a.load() + b.load() == 1,
            "write skew: a = {}, b = {}",
            a.load(),
            b.load()
        );
    });
}

/// The inevitable transaction beside a normal one on the same word: both increments land, the
/// inevitable body runs once, and the token is handed back.
#[test]
fn inevitable_and_normal_writers_serialize() {
    loom::model(|| {
        let v = Arc::new(TVar::new(0u64));
        let runs = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let (v2, runs2) = (v.clone(), runs.clone());
        let t = thread::spawn(move || {
            inevitably(|tx| {
                runs2.fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
                let x = tx.read(&*v2).unwrap();
                tx.write(&*v2, x + 1).unwrap();
            });
        });
        atomically(|tx| tx.modify(&*v, |x| x + 10).map(drop));
        t.join().unwrap();
        assert_eq!(v.load(), 11);
        assert_eq!(runs.load(loom::sync::atomic::Ordering::SeqCst), 1);
    });
}

/// Two inevitable transactions hand the token over: each runs exactly once, in some order.
#[test]
fn inevitable_token_hand_over() {
    loom::model(|| {
        let v = Arc::new(TVar::new(1u64));
        let v2 = v.clone();
        let t = thread::spawn(move || {
            inevitably(|tx| {
                let x = tx.read(&*v2).unwrap();
                tx.write(&*v2, x * 2).unwrap();
            })
        });
        inevitably(|tx| {
            let x = tx.read(&*v).unwrap();
            tx.write(&*v, x + 3).unwrap();
        });
        t.join().unwrap();
        // (1 * 2) + 3 = 5 or (1 + 3) * 2 = 8: serial orders only.
        let r = v.load();
        assert!(r == 5 || r == 8, "{r}");
    });
}

/// Blocking `retry`: a consumer waits for a flag that a producer sets; the wake-up is never lost.
///
/// Ignored until the orec release became a `swap` under loom (`sync::release_orec`): loom 0.7.3
/// let the committer's release store slip between the read and the write of the consumer's
/// `fetch_or(WAITERS)` (tokio-rs/loom#254), so the consumer later read the stale locked value
/// and waited forever for a lock that had been released.
#[test]
fn retry_wakes_up_when_a_read_word_changes() {
    loom::model(|| {
        let flag = Arc::new(TVar::new(0u64));
        let f2 = flag.clone();
        let t = thread::spawn(move || {
            atomically(|tx| {
                let v = tx.read(&*f2)?;
                if v == 0 { tx.retry() } else { Ok(v) }
            })
        });
        atomically(|tx| tx.write(&*flag, 7));
        assert_eq!(t.join().unwrap(), 7);
    });
}

/// Becoming inevitable in the middle of a transaction beside a normal writer of the same word:
/// the read-modify-write stays atomic either way.
#[test]
fn become_inevitable_keeps_what_was_read() {
    loom::model(|| {
        let v = Arc::new(TVar::new(0u64));
        let v2 = v.clone();
        let t = thread::spawn(move || {
            atomically(|tx| {
                let x = tx.read(&*v2)?;
                tx.become_inevitable()?;
                tx.write(&*v2, x + 1)
            });
        });
        atomically(|tx| tx.modify(&*v, |x| x + 10).map(drop));
        t.join().unwrap();
        assert_eq!(v.load(), 11);
    });
}

/// `atomically_async`'s `retry` against a committer (see `tx/future.rs`): the waiting future
/// registers its waker, then sets `WAITERS` on the orecs it read and checks their versions; the
/// committer locks, writes, releases and wakes. In every interleaving the future completes
/// (loom's `block_on` parks the thread until the waker is called, so a lost wake-up is reported
/// as a deadlock) with the committed value.
#[test]
fn async_retry_is_woken_by_the_commit() {
    loom::model(|| {
        let flag = Arc::new(TVar::new(0u64));
        let f2 = flag.clone();
        let t = thread::spawn(move || {
            loom::future::block_on(async move {
                stm_core::atomically_async(|tx| {
                    let v = tx.read(&*f2)?;
                    if v == 0 { tx.retry() } else { Ok(v) }
                })
                .await
            })
        });
        atomically(|tx| tx.write(&*flag, 7));
        assert_eq!(t.join().unwrap(), 7);
    });
}
