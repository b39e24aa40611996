//! `atomically_async` / `try_atomically_async` (feature `async`): a `retry` is awaited, never
//! blocks a thread, and is woken by the commit that changes a word it read.
//!
//! Bounded: every test runs a fixed number of operations, and every wait that could hang on a
//! lost wake-up is under a generous `tokio::time::timeout`, so a lost wake-up fails the test
//! instead of hanging CI.
#![cfg(not(loom))]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use stm_core::collections::TBoundedQueue;
use stm_core::{
    TVar, TxError, atomically, atomically_async, inevitably, stats, try_atomically_async,
};

/// How long any single test may wait for wake-ups before it counts as lost (CI is slow; a
/// passing run takes well under a second).
const LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// A waker that counts its wake-ups; `Arc::strong_count` tells how many clones exist.
#[derive(Default)]
struct CountingWaker {
    woken: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    std::pin::Pin::new(f).poll(&mut Context::from_waker(waker))
}

#[test]
fn ready_at_once_without_retry() {
    let v = TVar::new(1u64);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let mut f = pin!(atomically_async(|tx| tx.modify(&v, |x| x + 1)));
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(&w)),
        Poll::Ready(2)
    );
    assert_eq!(v.load(), 2);
    assert_eq!(Arc::strong_count(&waker), 2, "no waker kept");
}

#[test]
fn retry_is_pending_until_a_read_word_changes() {
    let flag = TVar::new(0u64);
    let other = TVar::new(0u64);
    let runs = AtomicUsize::new(0);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let mut f = try_atomically_async(|tx| {
        runs.fetch_add(1, Ordering::SeqCst);
        let v = tx.read(&flag)?;
        if v == 0 {
            return Ok(tx.retry()?);
        }
        Ok::<u64, TxError<()>>(v)
    });
    assert!(poll_once(&mut f, &w).is_pending());
    // The first attempt may run without a read set (an inferred read-only one) and stop at the
    // `retry`, which needs one: then the body runs again at once, with a read set.
    let first = runs.load(Ordering::SeqCst);
    assert!((1..=2).contains(&first), "{first} runs");
    // The registration holds one clone of the waker.
    assert_eq!(Arc::strong_count(&waker), 3);
    // A poll with nothing changed neither reruns the body nor wakes.
    assert!(poll_once(&mut f, &w).is_pending());
    assert_eq!(runs.load(Ordering::SeqCst), first);
    // A commit that writes another word does not wake it (unless the words share an orec,
    // which this test does not rule out: then the poll below just waits on).
    atomically(|tx| tx.write(&other, 1));
    assert!(poll_once(&mut f, &w).is_pending());
    assert_eq!(runs.load(Ordering::SeqCst), first);
    // The commit that writes the flag wakes it, and the next poll completes.
    let before = waker.woken.load(Ordering::SeqCst);
    atomically(|tx| tx.write(&flag, 9));
    assert_eq!(waker.woken.load(Ordering::SeqCst), before + 1);
    assert_eq!(poll_once(&mut f, &w), Poll::Ready(Ok(9)));
    assert_eq!(runs.load(Ordering::SeqCst), first + 1);
    drop(f);
    assert_eq!(
        Arc::strong_count(&waker),
        2,
        "no waker kept after completion"
    );
}

#[test]
fn dropping_a_waiting_future_leaves_no_waker_behind() {
    let flag = TVar::new(0u64);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    for _ in 0..100 {
        let f = atomically_async(|tx| {
            let v = tx.read(&flag)?;
            if v == 0 { tx.retry() } else { Ok(v) }
        });
        let mut f = pin!(f);
        assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    }
    // Each dropped future took its registration with it.
    assert_eq!(Arc::strong_count(&waker), 2);
    // A commit to the word now finds no waker to wake.
    atomically(|tx| tx.write(&flag, 1));
    assert_eq!(waker.woken.load(Ordering::SeqCst), 0);
}

#[test]
fn woken_by_an_inevitable_commit() {
    let flag = TVar::new(0u64);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let f = atomically_async(|tx| {
        let v = tx.read(&flag)?;
        if v == 0 { tx.retry() } else { Ok(v) }
    });
    let mut f = pin!(f);
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    inevitably(|tx| tx.write(&flag, 4).unwrap());
    assert_eq!(waker.woken.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(&w)),
        Poll::Ready(4)
    );
}

#[test]
fn user_error_and_panic_leave_nothing() {
    let v = TVar::new(5u64);
    let w = Waker::noop();
    let mut f = try_atomically_async(|tx| {
        tx.write(&v, 100)?;
        Err::<(), _>(TxError::User("no"))
    });
    assert_eq!(poll_once(&mut f, w), Poll::Ready(Err("no")));
    assert_eq!(v.load(), 5);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut f = try_atomically_async(|tx| -> Result<(), TxError<()>> {
            tx.write(&v, 7)?;
            panic!("body panics");
        });
        let _ = poll_once(&mut f, w);
    }));
    assert!(r.is_err());
    assert_eq!(v.load(), 5);
    // The lock was released: a writer commits.
    atomically(|tx| tx.write(&v, 6));
    assert_eq!(v.load(), 6);
}

#[test]
fn or_else_takes_the_second_branch_and_waits_on_both() {
    let a = TVar::new(0u64);
    let b = TVar::new(0u64);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let f = atomically_async(|tx| {
        tx.or_else(
            |tx| {
                let x = tx.read(&a)?;
                if x == 0 { tx.retry() } else { Ok(("a", x)) }
            },
            |tx| {
                let y = tx.read(&b)?;
                if y == 0 { tx.retry() } else { Ok(("b", y)) }
            },
        )
    });
    let mut f = pin!(f);
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    atomically(|tx| tx.write(&b, 3));
    assert!(waker.woken.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(&w)),
        Poll::Ready(("b", 3))
    );
}

/// The future is `Send` when its body is, so it can be spawned on a multi-thread runtime.
#[test]
fn the_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let v = TVar::new(0u64);
    let f = atomically_async(|tx| tx.read(&v));
    assert_send(&f);
}

/// 10,000 tasks wait in `retry` at once on a 2-worker runtime while a heartbeat keeps ticking;
/// then producers fill their mailboxes in a scrambled order and every task finishes with its own
/// value. With a blocking `retry`, the first two waiting tasks would take both workers and the
/// heartbeat (and everything else) would stop.
#[test]
fn ten_thousand_waiting_tasks_and_a_heartbeat() {
    const TASKS: usize = 10_000;
    let rt = runtime();
    rt.block_on(async {
        let slots: Arc<Vec<TVar<u64>>> = Arc::new((0..TASKS).map(|_| TVar::new(0)).collect());
        let first_attempts = Arc::new(AtomicUsize::new(0));
        let mut consumers = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let slots = slots.clone();
            let first_attempts = first_attempts.clone();
            consumers.push(tokio::spawn(async move {
                let mut counted = false;
                atomically_async(|tx| {
                    if !counted {
                        counted = true;
                        first_attempts.fetch_add(1, Ordering::SeqCst);
                    }
                    let v = tx.read(&slots[i])?;
                    if v == 0 { tx.retry() } else { Ok(v) }
                })
                .await
            }));
        }
        let beats = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let heart = {
            let (beats, stop) = (beats.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    beats.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // Every consumer has run its first attempt, which retried: all 10,000 wait at once, and
        // the heartbeat ticks meanwhile.
        tokio::time::timeout(LIMIT, async {
            while first_attempts.load(Ordering::SeqCst) < TASKS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let b = beats.load(Ordering::SeqCst);
            while beats.load(Ordering::SeqCst) < b + 10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("consumers never all waited, or the heartbeat stopped");
        assert!(consumers.iter().all(|c| !c.is_finished()));
        // Two producers fill the mailboxes, in a scrambled order.
        let producers: Vec<_> = (0..2usize)
            .map(|p| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    for k in (p..TASKS).step_by(2) {
                        let i = (k * 7919) % TASKS;
                        let s = &slots[i];
                        atomically_async(|tx| tx.write(s, i as u64 + 1)).await;
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        tokio::time::timeout(LIMIT, async {
            for (i, c) in consumers.into_iter().enumerate() {
                assert_eq!(c.await.unwrap(), i as u64 + 1);
            }
        })
        .await
        .expect("a consumer was never woken");
        stop.store(true, Ordering::SeqCst);
        heart.await.unwrap();
    });
}

/// Many tasks wait on the same word; cancelling half of them (aborting their tasks) leaves the
/// other half waiting, and one commit then wakes exactly those.
#[test]
fn cancelled_waiters_go_away_and_the_rest_are_woken() {
    const TASKS: usize = 1_000;
    let rt = runtime();
    rt.block_on(async {
        let gate = Arc::new(TVar::new(0u64));
        let first_attempts = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let gate = gate.clone();
                let first_attempts = first_attempts.clone();
                tokio::spawn(async move {
                    let mut counted = false;
                    atomically_async(|tx| {
                        if !counted {
                            counted = true;
                            first_attempts.fetch_add(1, Ordering::SeqCst);
                        }
                        let g = tx.read(&*gate)?;
                        if g == 0 { tx.retry() } else { Ok(g) }
                    })
                    .await
                })
            })
            .collect();
        tokio::time::timeout(LIMIT, async {
            while first_attempts.load(Ordering::SeqCst) < TASKS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the tasks never all waited");
        let (cancelled, kept): (Vec<_>, Vec<_>) =
            tasks.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        for (_, t) in &cancelled {
            t.abort();
        }
        for (_, t) in cancelled {
            assert!(t.await.unwrap_err().is_cancelled());
        }
        atomically(|tx| tx.write(&*gate, 5));
        tokio::time::timeout(LIMIT, async {
            for (_, t) in kept {
                assert_eq!(t.await.unwrap(), 5);
            }
        })
        .await
        .expect("a kept waiter was never woken");
    });
}

/// A bounded queue between async producers and consumers, both awaiting `retry` (full / empty):
/// every item arrives exactly once. Also counts `stats().retries`, so the waits did happen.
#[test]
fn bounded_queue_producers_and_consumers_await_retry() {
    const ITEMS: u64 = 4_000;
    const CAPACITY: usize = 4;
    let rt = runtime();
    let retries_before = stats().retries;
    let (sum, count) = rt.block_on(async {
        let q: Arc<TBoundedQueue<u64>> = Arc::new(TBoundedQueue::with_capacity(CAPACITY));
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move {
                    for i in (p..ITEMS).step_by(2) {
                        // `push` retries while the queue is full.
                        atomically_async(|tx| q.push(tx, i + 1)).await;
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let (mut sum, mut count) = (0u64, 0u64);
                    loop {
                        // `pop` retries while the queue is empty.
                        let v = atomically_async(|tx| q.pop(tx)).await;
                        if v == 0 {
                            return (sum, count);
                        }
                        sum += v;
                        count += 1;
                    }
                })
            })
            .collect();
        tokio::time::timeout(LIMIT, async {
            for p in producers {
                p.await.unwrap();
            }
            // One stop marker (0) per consumer.
            for _ in 0..3 {
                atomically_async(|tx| q.push(tx, 0)).await;
            }
            let mut total = (0, 0);
            for c in consumers {
                let (s, n) = c.await.unwrap();
                total.0 += s;
                total.1 += n;
            }
            total
        })
        .await
        .expect("a producer or consumer was never woken")
    });
    assert_eq!(count, ITEMS);
    assert_eq!(sum, ITEMS * (ITEMS + 1) / 2);
    assert!(stats().retries > retries_before);
}

/// Two tasks hand a token back and forth through one word, each awaiting its turn: 5,000 round
/// trips, each needing one wake-up that must not be lost.
#[test]
fn ping_pong_never_loses_a_wake_up() {
    const ROUNDS: u64 = 5_000;
    let rt = runtime();
    rt.block_on(async {
        let turn = Arc::new(TVar::new(0u64));
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let turn = turn.clone();
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        atomically_async(|tx| {
                            let t = tx.read(&*turn)?;
                            if t % 2 != me {
                                return tx.retry();
                            }
                            tx.write(&*turn, t + 1)
                        })
                        .await;
                    }
                })
            })
            .collect();
        tokio::time::timeout(LIMIT, async {
            for p in players {
                p.await.unwrap();
            }
        })
        .await
        .expect("a wake-up was lost");
        assert_eq!(turn.load(), 2 * ROUNDS);
    });
}

/// A thread blocked in the synchronous `retry` and a task awaiting the same word are both woken
/// by one commit.
#[test]
fn blocking_and_async_waiters_on_one_word() {
    let rt = runtime();
    let flag = Arc::new(TVar::new(0u64));
    let blocked = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            atomically(|tx| {
                let v = tx.read(&*flag)?;
                if v == 0 { tx.retry() } else { Ok(v) }
            })
        })
    };
    let task = {
        let flag = flag.clone();
        rt.spawn(async move {
            atomically_async(|tx| {
                let v = tx.read(&*flag)?;
                if v == 0 { tx.retry() } else { Ok(v) }
            })
            .await
        })
    };
    atomically(|tx| tx.write(&*flag, 8));
    assert_eq!(blocked.join().unwrap(), 8);
    let v = rt.block_on(async { tokio::time::timeout(LIMIT, task).await });
    assert_eq!(v.expect("the task was never woken").unwrap(), 8);
}

/// A retry after a large read set that reads some words twice: one registration per distinct
/// lock, woken by a write to any word read, and nothing left behind afterwards.
#[test]
fn large_read_set_with_repeats() {
    let vars: Vec<TVar<u64>> = (0..500).map(|_| TVar::new(0)).collect();
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let f = atomically_async(|tx| {
        let mut sum = 0;
        for v in vars.iter().chain(vars.iter().step_by(7)) {
            sum += tx.read(v)?;
        }
        if sum == 0 { tx.retry() } else { Ok(sum) }
    });
    let mut f = pin!(f);
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    // At most one clone per distinct lock-table entry (500 words, some sharing an entry).
    let clones = Arc::strong_count(&waker) - 2;
    assert!((1..=500).contains(&clones), "{clones} clones");
    atomically(|tx| tx.write(&vars[498], 3)); // read once (498 % 7 != 0)
    assert_eq!(waker.woken.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(&w)),
        Poll::Ready(3)
    );
    assert_eq!(Arc::strong_count(&waker), 2, "no waker kept");
}

/// A panic in a `Drop` that the committer's clean-up runs (here a value kept by `hold`) must not
/// lose the wake-ups of that commit: its wakers are out of the runtime's table already.
#[test]
fn a_panicking_drop_after_the_commit_still_wakes_the_waiters() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop panics");
        }
    }
    let flag = TVar::new(false);
    let waker = Arc::new(CountingWaker::default());
    let w = Waker::from(waker.clone());
    let f = atomically_async(|tx| if tx.read(&flag)? { Ok(()) } else { tx.retry() });
    let mut f = pin!(f);
    assert!(f.as_mut().poll(&mut Context::from_waker(&w)).is_pending());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&flag, true)?;
            tx.hold(Arc::new(PanicOnDrop));
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert!(flag.load(), "the commit happened");
    assert_eq!(
        waker.woken.load(Ordering::SeqCst),
        1,
        "the waiter was woken"
    );
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(&w)),
        Poll::Ready(())
    );
}

/// Polling a `TxFuture` again after it returned `Ready` is refused, as for an `async fn`, rather
/// than running the transaction a second time.
#[test]
#[should_panic(expected = "polled after completion")]
fn polling_after_completion_panics() {
    let v = TVar::new(0u64);
    let f = try_atomically_async(|tx| Ok::<_, TxError<()>>(tx.modify(&v, |x| x + 1)?));
    let mut f = pin!(f);
    let w = Waker::noop();
    assert_eq!(
        f.as_mut().poll(&mut Context::from_waker(w)),
        Poll::Ready(Ok(1))
    );
    let _ = f.as_mut().poll(&mut Context::from_waker(w));
}
