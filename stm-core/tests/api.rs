//! Single-threaded tests of every public item and every documented error.
// Real threads and the full API: not built under loom (see `tests/loom.rs` for the models).
#![cfg(not(loom))]

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use stm_core::{
    Abort, AbortCause, ConflictKind, Event, EventKind, EventSink, TBox, TVar, TxError, Word,
    atomically, inevitably, set_event_sink, stats, try_atomically,
};

#[test]
fn tvar_basics() {
    static S: TVar<u64> = TVar::new(7);
    assert_eq!(S.load(), 7);
    let mut v = TVar::new(-3i32);
    assert_eq!(v.load(), -3);
    *v.get_mut() += 10;
    assert_eq!(v.load(), 7);
    assert_eq!(format!("{v:?}"), "TVar(7)");
    assert_eq!(v.into_inner(), 7);
    assert_eq!(TVar::<f64>::default().load(), 0.0);
    assert_eq!(std::mem::size_of::<TVar<u8>>(), 8);
    assert_eq!(std::mem::size_of::<TVar<f64>>(), 8);
}

#[test]
fn every_word_type_round_trips_through_a_transaction() {
    fn check<T: Word + PartialEq + std::fmt::Debug>(a: T, b: T) {
        let v = TVar::new(a);
        assert_eq!(atomically(|tx| tx.read(&v)), a);
        atomically(|tx| tx.write(&v, b));
        assert_eq!(v.load(), b);
    }
    check(1u8, 255u8);
    check(1u16, u16::MAX);
    check(1u32, u32::MAX);
    check(1u64, u64::MAX);
    check(-1i8, i8::MIN);
    check(-1i16, i16::MIN);
    check(-1i32, i32::MIN);
    check(-1i64, i64::MIN);
    check(1usize, usize::MAX);
    check(-1isize, isize::MIN);
    check(1.5f32, -0.25f32);
    check(1.5f64, f64::MAX);
    check(false, true);
    check('a', '€');
}

#[test]
fn read_your_own_writes_and_modify() {
    let v = TVar::new(1u32);
    let r = atomically(|tx| {
        tx.write(&v, 5)?;
        let a = tx.read(&v)?;
        let b = tx.modify(&v, |x| x * 2)?;
        Ok((a, b, tx.read(&v)?))
    });
    assert_eq!(r, (5, 10, 10));
    assert_eq!(v.load(), 10);
}

#[test]
fn large_write_sets_stay_correct() {
    let vars: Vec<TVar<u64>> = (0..200).map(TVar::new).collect();
    atomically(|tx| {
        for v in &vars {
            tx.modify(v, |x| x + 1000)?;
        }
        for (i, v) in vars.iter().enumerate() {
            assert_eq!(tx.read(v)?, i as u64 + 1000);
        }
        Ok(())
    });
    for (i, v) in vars.iter().enumerate() {
        assert_eq!(v.load(), i as u64 + 1000);
    }
}

#[test]
fn after_commit_runs_once_after_commit_only() {
    let v = TVar::new(0u8);
    let ran = Rc::new(Cell::new(0));
    let r2 = ran.clone();
    atomically(|tx| {
        let r3 = r2.clone();
        tx.after_commit(move || r3.set(r3.get() + 1));
        tx.write(&v, 1)
    });
    assert_eq!(ran.get(), 1);
    // A cancelled transaction runs none of its actions.
    let r4 = ran.clone();
    let res: Result<(), ()> = try_atomically(|tx| {
        let r5 = r4.clone();
        tx.after_commit(move || r5.set(r5.get() + 100));
        Err(TxError::User(()))
    });
    assert!(res.is_err());
    assert_eq!(ran.get(), 1);
}

#[test]
fn after_commit_may_start_a_new_transaction() {
    let v = Arc::new(TVar::new(0u32));
    let v2 = v.clone();
    atomically(|tx| {
        let v3 = v2.clone();
        tx.after_commit(move || atomically(|tx| tx.modify(&v3, |x| x + 10).map(drop)));
        tx.modify(&v2, |x| x + 1).map(drop)
    });
    assert_eq!(v.load(), 11);
}

#[test]
fn try_atomically_rolls_back_user_errors() {
    let v = TVar::new(10i32);
    let r: Result<i32, String> = try_atomically(|tx| {
        tx.write(&v, 99)?;
        Err(TxError::User("no".to_string()))
    });
    assert_eq!(r, Err("no".to_string()));
    assert_eq!(v.load(), 10);
    let ok: Result<i32, String> = try_atomically(|tx| Ok(tx.read(&v)? + 1));
    assert_eq!(ok, Ok(11));
    assert_eq!(
        format!("{}", TxError::<String>::User("boom".into())),
        "boom"
    );
}

#[test]
fn inevitable_transactions() {
    let v = TVar::new(1u64);
    let n = inevitably(|tx| {
        assert!(tx.is_inevitable());
        let x = tx.read(&v).unwrap();
        tx.write(&v, x + 1).unwrap();
        tx.read(&v).unwrap()
    });
    assert_eq!(n, 2);
    assert_eq!(v.load(), 2);
    let r = atomically(|tx| {
        let x = tx.read(&v)?;
        assert!(!tx.is_inevitable());
        tx.become_inevitable()?;
        assert!(tx.is_inevitable());
        tx.write(&v, x * 10)?;
        tx.read(&v)
    });
    assert_eq!(r, 20);
    assert_eq!(v.load(), 20);
}

#[test]
fn panics_roll_back_and_release() {
    let a = TVar::new(1i64);
    let b = TVar::new(2i64);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&a, 100)?;
            tx.write(&b, 200)?;
            if tx.read(&a)? == 100 {
                panic!("body panics");
            }
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert_eq!((a.load(), b.load()), (1, 2));
    // Nothing is held: another transaction, and an inevitable one, go through.
    atomically(|tx| tx.modify(&a, |x| x + 1).map(drop));
    let r = catch_unwind(AssertUnwindSafe(|| {
        inevitably(|tx| {
            tx.write(&b, 7).unwrap();
            panic!("inevitable body panics");
        })
    }));
    assert!(r.is_err());
    assert_eq!(b.load(), 2);
    inevitably(|tx| tx.write(&b, 3).unwrap());
    assert_eq!((a.load(), b.load()), (2, 3));
}

#[test]
fn nested_transactions_panic_with_a_clear_message() {
    let v = TVar::new(0u8);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.write(&v, 1)?;
            atomically(|tx2| tx2.write(&v, 2));
            Ok(())
        })
    }));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("nested"), "{msg}");
    assert_eq!(v.load(), 0);
    // The thread is usable afterwards.
    atomically(|tx| tx.write(&v, 3));
    assert_eq!(v.load(), 3);
}

#[test]
fn retry_with_nothing_read_panics() {
    let r = catch_unwind(|| atomically(|tx| tx.retry::<()>()));
    assert!(r.is_err());
}

#[test]
fn retry_in_an_inevitable_transaction_panics() {
    let v = TVar::new(0u8);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.read(&v)?;
            tx.become_inevitable()?;
            tx.retry::<()>()
        })
    }));
    assert!(r.is_err());
    // The token was given back.
    inevitably(|tx| tx.write(&v, 1).unwrap());
    assert_eq!(v.load(), 1);
}

#[test]
fn tbox_read_write_and_accessors() {
    let b = TBox::new(String::from("a"));
    atomically(|tx| {
        let s = tx.read_box(&b)?.clone();
        tx.write_box(&b, s + "b")?;
        assert_eq!(tx.read_box(&b)?, "ab");
        tx.write_box(&b, String::from("abc"))?; // supersedes the pending value
        Ok(())
    });
    assert_eq!(b.load(), "abc");
    assert_eq!(b.with(|s| s.len()), 3);
    assert_eq!(format!("{b:?}"), "TBox(\"abc\")");
    let mut b = b;
    b.get_mut().push('d');
    assert_eq!(b.into_inner(), "abcd");
    assert_eq!(TBox::<Vec<u8>>::default().load(), Vec::<u8>::new());
}

#[test]
fn abort_is_an_error_type() {
    fn err<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let v = TVar::new(0u8);
    // Obtain a real Abort: a retry's error value.
    let mut seen: Option<Abort> = None;
    let _ = try_atomically(|tx| {
        tx.read(&v)?;
        let a = tx.retry::<()>().unwrap_err();
        seen = Some(a);
        Err::<(), _>(TxError::User(()))
    });
    let a = seen.unwrap();
    err(&a);
    assert_eq!(a.cause(), AbortCause::Retry);
    assert!(a.to_string().contains("waiting"));
    assert!(format!("{a:?}").contains("Retry"));
    assert_eq!(ConflictKind::WriteRead.to_string(), "WRITE_READ");
    assert_eq!(ConflictKind::WriteWrite.name(), "WRITE_WRITE");
    assert_eq!(ConflictKind::Inevitable.name(), "INEVITABLE");
}

#[test]
fn stats_count_commits() {
    let before = stats();
    let v = TVar::new(0u8);
    atomically(|tx| tx.write(&v, 1));
    atomically(|tx| tx.read(&v));
    inevitably(|tx| tx.read(&v).unwrap());
    let d = stats().since(&before);
    assert!(d.commits >= 3, "{d:?}");
    assert!(d.read_only_commits >= 1, "{d:?}");
    assert!(d.inevitable_runs >= 1, "{d:?}");
    assert!(d.abort_rate() >= 0.0 && d.abort_rate() <= 1.0);
}

/// Serialises the tests that install the (global) event sink.
static SINK_TESTS: Mutex<()> = Mutex::new(());

/// Collects the events of one thread (other tests run on other threads meanwhile).
struct Collect(u64, Mutex<Vec<Event>>);
impl EventSink for Collect {
    fn event(&self, e: &Event) {
        if e.thread == self.0 {
            self.1.lock().unwrap().push(*e);
        }
    }
}

#[test]
fn the_event_hook_sees_attempts_commits_and_inevitable_runs() {
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let sink = Arc::new(Collect(stm_core::thread_id(), Mutex::new(Vec::new())));
    set_event_sink(Some(sink.clone()));
    assert!(stm_core::event_sink_installed());
    let v = TVar::new(0u8);
    atomically(|tx| tx.write(&v, 1));
    inevitably(|tx| tx.write(&v, 2).unwrap());
    set_event_sink(None);
    let events = sink.1.lock().unwrap().clone();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert!(
        matches!(kinds[0], EventKind::Start { inevitable: false }),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| matches!(
        k,
        EventKind::Commit {
            read_only: false,
            ..
        }
    )));
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::InevitableBegin))
    );
    assert!(kinds.iter().any(|k| matches!(k, EventKind::InevitableEnd)));
    assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
}

/// Commit durations and abort losses are the differences of the events' own timestamps, and a
/// timestamp converts to an `Instant` and back unchanged.
#[test]
fn event_durations_are_differences_of_event_times() {
    use stm_core::{Timestamp, TxError};
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let sink = Arc::new(Collect(stm_core::thread_id(), Mutex::new(Vec::new())));
    set_event_sink(Some(sink.clone()));
    let v = TVar::new(0u64);
    for i in 0..100 {
        atomically(|tx| tx.modify(&v, |x| x + 1));
        let _ = try_atomically(|tx| {
            tx.write(&v, i)?;
            Err::<(), _>(TxError::User(()))
        });
    }
    set_event_sink(None);
    let events = sink.1.lock().unwrap().clone();
    let mut start: Option<Timestamp> = None;
    let (mut commits, mut cancels) = (0, 0);
    for e in &events {
        match e.kind {
            EventKind::Start { .. } => start = Some(e.time),
            EventKind::Commit { duration, .. } => {
                assert_eq!(duration, e.time - start.take().unwrap(), "{e:?}");
                commits += 1;
            }
            EventKind::Abort { lost, .. } => {
                assert_eq!(lost, e.time - start.take().unwrap(), "{e:?}");
                cancels += 1;
            }
            _ => {}
        }
        assert_eq!(Timestamp::from_instant(e.time.to_instant()), e.time);
    }
    assert_eq!((commits, cancels), (100, 100));
    assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
    let (a, b) = (Timestamp::now(), Timestamp::now());
    assert!(a <= b && b - a == b.saturating_duration_since(a));
    assert_eq!(a + (b - a), b);
    assert!(Timestamp::ORIGIN.to_instant() == Timestamp::origin());
}

/// A sink that asks for sampled timing: a quiet thread times about one attempt in `sample` (and
/// every attempt for a while after an install or a conflict); the others deliver only
/// `UntimedCommit` / `UntimedAbort`. Every attempt is still accounted for.
struct Sampled(Mutex<Vec<Event>>);
impl EventSink for Sampled {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap().push(*e);
    }
    fn timing(&self) -> stm_core::Timing {
        stm_core::Timing {
            sample: 4,
            after_conflict: 8,
        }
    }
}

#[test]
fn sampled_timing_times_a_share_of_quiet_attempts_and_every_attempt_after_a_conflict() {
    use std::sync::Barrier;
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let sink = Arc::new(Sampled(Mutex::new(Vec::new())));
    set_event_sink(Some(sink.clone()));
    let v = TVar::new(0u64);
    let (read, committed) = (Barrier::new(2), Barrier::new(2));
    let me = std::thread::scope(|s| {
        s.spawn(|| {
            read.wait();
            atomically(|tx| tx.modify(&v, |x| x + 1));
            committed.wait();
        });
        s.spawn(|| {
            // Quiet: 2000 conflict-free transactions.
            let w = TVar::new(0u64);
            for _ in 0..2000 {
                atomically(|tx| tx.modify(&w, |x| x + 1));
            }
            // Then one conflict: the other thread commits `v` between this attempt's read and
            // its commit, which must abort.
            let mut first = true;
            atomically(|tx| {
                let x = tx.read(&v)?;
                if std::mem::take(&mut first) {
                    read.wait();
                    committed.wait();
                }
                tx.write(&v, x + 1)
            });
            for _ in 0..100 {
                atomically(|tx| tx.modify(&w, |x| x + 1));
            }
            stm_core::thread_id()
        })
        .join()
        .unwrap()
    });
    set_event_sink(None);
    assert_eq!(v.load(), 2);
    let events: Vec<Event> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.thread == me)
        .copied()
        .collect();
    let count = |f: &dyn Fn(&EventKind) -> bool| events.iter().filter(|e| f(&e.kind)).count();
    let starts = count(&|k| matches!(k, EventKind::Start { .. }));
    let timed_ends = count(&|k| matches!(k, EventKind::Commit { .. } | EventKind::Abort { .. }));
    let untimed_commits = count(&|k| matches!(k, EventKind::UntimedCommit { .. }));
    let commits = count(&|k| matches!(k, EventKind::Commit { .. })) + untimed_commits;
    // Every attempt ends once; a timed one also starts once.
    assert_eq!(starts, timed_ends, "{events:?}");
    assert_eq!(commits, 2101);
    // The first 8 attempts, about a quarter of the quiet ones after them, the 8 after the
    // conflict: about 540 in all, with a standard deviation of about 11.
    assert!((350..=700).contains(&starts), "{starts} timed attempts");
    // An untimed commit reads no clock.
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.kind, EventKind::UntimedCommit { .. })
                || e.time == stm_core::Timestamp::ORIGIN)
    );
    // The first 8 attempts are timed: Start, Commit, 8 times.
    assert!(
        events[..16]
            .chunks(2)
            .all(|p| matches!(p[0].kind, EventKind::Start { .. })
                && matches!(p[1].kind, EventKind::Commit { .. })),
        "{:?}",
        &events[..16]
    );
    // The conflict: an abort (timed or not), then 8 timed attempts in a row.
    let at = events
        .iter()
        .position(|e| {
            matches!(
                e.kind,
                EventKind::Abort {
                    cause: AbortCause::Conflict(_),
                    ..
                } | EventKind::UntimedAbort {
                    cause: AbortCause::Conflict(_),
                    ..
                }
            )
        })
        .expect("the conflict abort");
    let after = &events[at + 1..at + 17];
    assert!(
        after
            .chunks(2)
            .all(|p| matches!(p[0].kind, EventKind::Start { .. })
                && matches!(p[1].kind, EventKind::Commit { .. })),
        "{after:?}"
    );
    // The timestamps of the timed events never go backwards.
    let times: Vec<_> = events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::UntimedCommit { .. }))
        .map(|e| e.time)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

/// A transaction that meets the inevitable transaction's word pauses: `PauseStart`, then
/// `PauseEnd` whose `paused` is exactly the difference of the two events' times, both naming the
/// inevitable thread.
#[test]
fn pauses_are_the_differences_of_their_event_times() {
    use std::sync::atomic::AtomicBool;
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());

    /// Collects one thread's pause events (other tests run beside this one), and says when its
    /// first pause started.
    struct Pauses(u64, Mutex<Vec<Event>>, AtomicBool);
    impl EventSink for Pauses {
        fn event(&self, e: &Event) {
            if e.thread != self.0 {
                return;
            }
            if let EventKind::PauseStart { .. } | EventKind::PauseEnd { .. } = e.kind {
                self.1.lock().unwrap().push(*e);
                self.2.store(true, Ordering::SeqCst);
            }
        }
    }
    let me = stm_core::thread_id();
    let sink = Arc::new(Pauses(me, Mutex::new(Vec::new()), AtomicBool::new(false)));
    set_event_sink(Some(sink.clone()));
    let v = Arc::new(TVar::new(0u64));
    let (v2, sink2) = (v.clone(), sink.clone());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        inevitably(|tx| {
            tx.write(&*v2, 1).unwrap(); // locks the word until this commits
            locked_tx.send(stm_core::thread_id()).unwrap();
            // Hold it until the reader has paused on it.
            while !sink2.2.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        });
    });
    let holder_id = locked_rx.recv().unwrap();
    let seen = atomically(|tx| tx.read(&*v));
    holder.join().unwrap();
    set_event_sink(None);
    assert_eq!(seen, 1, "the reader waited for the inevitable commit");
    let events: Vec<Event> = sink.1.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    match (events[0].kind, events[1].kind) {
        (
            EventKind::PauseStart { conflict: c0 },
            EventKind::PauseEnd {
                conflict: c1,
                paused,
            },
        ) => {
            assert_eq!(paused, events[1].time - events[0].time);
            assert_eq!(c0.kind, ConflictKind::Inevitable);
            assert_eq!(
                (c0.other_thread, c1.other_thread),
                (Some(holder_id), Some(holder_id))
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A commit that finds a word it writes pinned by the inevitable transaction unlocks, pauses
/// until the inevitable one is done, and then commits all its writes.
#[test]
fn a_commit_pauses_on_a_word_the_inevitable_transaction_pinned() {
    use std::sync::atomic::AtomicBool;
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());

    /// Says when one thread (other tests run beside this one) first paused.
    struct Paused(u64, AtomicBool);
    impl EventSink for Paused {
        fn event(&self, e: &Event) {
            if e.thread == self.0
                && let EventKind::PauseStart { .. } = e.kind
            {
                self.1.store(true, Ordering::SeqCst);
            }
        }
    }
    let sink = Arc::new(Paused(stm_core::thread_id(), AtomicBool::new(false)));
    set_event_sink(Some(sink.clone()));
    let (pinned, other) = (TVar::new(0u64), TVar::new(0u64));
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            inevitably(|tx| {
                tx.read(&pinned).unwrap(); // pins the word: nobody may commit a write to it
                ready_tx.send(()).unwrap();
                // Hold it until the committer has paused on it.
                while !sink.1.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
            });
        });
        ready_rx.recv().unwrap();
        atomically(|tx| {
            tx.write(&other, 7)?;
            tx.write(&pinned, 5) // the commit pauses on this one
        });
    });
    set_event_sink(None);
    assert!(sink.1.load(Ordering::SeqCst));
    assert_eq!((pinned.load(), other.load()), (5, 7));
}

#[test]
fn configure_rejects_bad_values() {
    use stm_core::{Config, ConfigError, configure};
    assert_eq!(
        configure(Config::new().lock_table_bits(2)),
        Err(ConfigError::OutOfRange)
    );
    assert_eq!(
        configure(Config::new().abort_limit(0)),
        Err(ConfigError::OutOfRange)
    );
    let v = TVar::new(0u8);
    atomically(|tx| tx.write(&v, 1)); // the runtime is running now
    assert_eq!(configure(Config::new()), Err(ConfigError::AlreadyStarted));
    assert!(ConfigError::AlreadyStarted.to_string().contains("already"));
}

#[test]
fn retry_blocks_until_a_read_word_changes() {
    let flag = Arc::new(TVar::new(false));
    let woke = Arc::new(AtomicUsize::new(0));
    let (f2, w2) = (flag.clone(), woke.clone());
    let h = std::thread::spawn(move || {
        let v = atomically(|tx| if tx.read(&*f2)? { Ok(42) } else { tx.retry() });
        w2.fetch_add(1, Ordering::SeqCst);
        v
    });
    atomically(|tx| tx.write(&*flag, true));
    assert_eq!(h.join().unwrap(), 42);
    assert_eq!(woke.load(Ordering::SeqCst), 1);
}

#[test]
fn load_of_a_word_the_inevitable_body_wrote_does_not_deadlock() {
    let v = TVar::new(1u32);
    let seen = inevitably(|tx| {
        tx.write(&v, 2).unwrap();
        // Outside the transaction's view: the last committed value.
        v.load()
    });
    assert_eq!(seen, 1);
    assert_eq!(v.load(), 2);
}

#[test]
fn after_commit_actions_of_a_failed_attempt_never_run_later() {
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            let r3 = r2.clone();
            tx.after_commit(move || r3.set(true));
            tx.retry::<()>() // read nothing: panics
        })
    }));
    assert!(r.is_err());
    let v = TVar::new(0u8);
    atomically(|tx| tx.write(&v, 1));
    assert!(!ran.get(), "a stale after-commit action ran");
}

/// A sink that panics loses its events, nothing else: the token is given back.
#[test]
fn a_panicking_event_sink_does_not_break_the_runtime() {
    let _serial = SINK_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    struct Boom;
    impl EventSink for Boom {
        fn event(&self, _: &Event) {
            panic!("sink panics");
        }
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    set_event_sink(Some(Arc::new(Boom)));
    let v = TVar::new(0u8);
    inevitably(|tx| tx.write(&v, 1).unwrap());
    atomically(|tx| tx.modify(&v, |x| x + 1).map(drop));
    set_event_sink(None);
    std::panic::set_hook(prev);
    let other = std::thread::spawn(|| inevitably(|_| 7));
    assert_eq!(other.join().unwrap(), 7);
    assert_eq!(v.load(), 2);
}

#[test]
fn after_commit_actions_of_nested_transactions_in_actions_all_run() {
    // The runtime reuses the action list between commits; an action that runs a transaction
    // with actions of its own must not lose or repeat any of them.
    let v = TVar::new(0u64);
    let log = Rc::new(std::cell::RefCell::new(Vec::new()));
    for round in 0..3u64 {
        let (l1, l2) = (log.clone(), log.clone());
        let vr = &v;
        atomically(|tx| {
            let (l1, l2) = (l1.clone(), l2.clone());
            tx.after_commit(move || l1.borrow_mut().push((round, "outer 1")));
            tx.after_commit(move || {
                let l3 = l2.clone();
                atomically(|tx| {
                    let l4 = l3.clone();
                    tx.after_commit(move || l4.borrow_mut().push((round, "inner")));
                    Ok(())
                });
                l2.borrow_mut().push((round, "outer 2"));
            });
            tx.modify(vr, |x| x + 1).map(drop)
        });
    }
    let expected: Vec<(u64, &str)> = (0..3)
        .flat_map(|r| [(r, "outer 1"), (r, "inner"), (r, "outer 2")])
        .collect();
    assert_eq!(*log.borrow(), expected);
    assert_eq!(v.load(), 3);
}

#[test]
fn or_else_runs_the_second_branch_when_the_first_retries() {
    let (a, b, c) = (TVar::new(0u32), TVar::new(5u32), TVar::new(1u32));
    let ran = Rc::new(Cell::new(Vec::<&str>::new()));
    let r = ran.clone();
    let took = atomically(|tx| {
        // Written before the alternative: overwritten by the undone branch, then restored.
        tx.write(&c, 10)?;
        tx.or_else(
            |tx| {
                tx.write(&c, 20)?;
                tx.write(&a, 99)?;
                let r = r.clone();
                tx.after_commit(move || {
                    let mut v = r.take();
                    v.push("first");
                    r.set(v);
                });
                assert_eq!(tx.read(&c)?, 20);
                if tx.read(&a)? == 99 {
                    return tx.retry();
                }
                Ok("first")
            },
            |tx| {
                // The first branch's writes are gone already.
                assert_eq!(tx.read(&a)?, 0);
                assert_eq!(tx.read(&c)?, 10);
                tx.modify(&b, |y| y - 1)?;
                let r = r.clone();
                tx.after_commit(move || {
                    let mut v = r.take();
                    v.push("second");
                    r.set(v);
                });
                Ok("second")
            },
        )
    });
    assert_eq!(took, "second");
    assert_eq!((a.load(), b.load(), c.load()), (0, 4, 10));
    assert_eq!(ran.take(), vec!["second"]);

    // A first branch that does not retry is the answer; the second never runs.
    let r = atomically(|tx| tx.or_else(|tx| tx.modify(&a, |x| x + 1), |_| unreachable!()));
    assert_eq!((r, a.load()), (1, 1));
}

#[test]
fn or_else_nests_and_undoes_each_level() {
    let v: Vec<TVar<u64>> = (0..40).map(|_| TVar::new(0)).collect();
    let out = atomically(|tx| {
        tx.write(&v[0], 1)?;
        tx.or_else(
            |tx| {
                tx.write(&v[0], 2)?;
                // The inner alternative: its first branch writes enough words to index the
                // write set, then retries; its second keeps one write.
                let inner = tx.or_else(
                    |tx| {
                        for w in &v {
                            tx.write(w, 3)?;
                        }
                        tx.retry::<u64>()
                    },
                    |tx| {
                        assert_eq!(tx.read(&v[0])?, 2);
                        assert_eq!(tx.read(&v[39])?, 0);
                        tx.write(&v[1], 4)?;
                        Ok(4)
                    },
                )?;
                assert_eq!(inner, 4);
                // Then the outer first branch retries: v[0] goes back to 1, v[1] to nothing.
                tx.retry::<u64>()
            },
            |tx| {
                assert_eq!(tx.read(&v[0])?, 1);
                assert_eq!(tx.read(&v[1])?, 0);
                for w in &v[30..] {
                    tx.write(w, 5)?;
                }
                Ok(5)
            },
        )
    });
    assert_eq!(out, 5);
    let got: Vec<u64> = v.iter().map(TVar::load).collect();
    let mut want = vec![0; 40];
    want[0] = 1;
    for w in &mut want[30..] {
        *w = 5;
    }
    assert_eq!(got, want);
}

#[test]
fn or_else_when_both_branches_retry_waits_for_either() {
    let a = Arc::new(TVar::new(0u32));
    let b = Arc::new(TVar::new(0u32));
    let (a2, b2) = (a.clone(), b.clone());
    let waiter = std::thread::spawn(move || {
        atomically(|tx| {
            tx.or_else(
                |tx| match tx.read(&a2)? {
                    0 => tx.retry(),
                    x => Ok(("a", x)),
                },
                |tx| match tx.read(&b2)? {
                    0 => tx.retry(),
                    x => Ok(("b", x)),
                },
            )
        })
    });
    // Only the second branch's word changes: the waiter must wake on it.
    atomically(|tx| tx.write(&b, 7));
    assert_eq!(waiter.join().unwrap(), ("b", 7));
    assert_eq!(a.load(), 0);
}

#[test]
fn or_else_restores_a_word_the_branch_overwrote_many_times() {
    let v = TVar::new(0u64);
    let w = atomically(|tx| {
        tx.write(&v, 1)?;
        tx.or_else(
            |tx| {
                for i in 2..100 {
                    tx.write(&v, i)?;
                }
                // A nested branch that keeps its overwrites, inside the one that is undone.
                tx.or_else(|tx| tx.write(&v, 500), |_| unreachable!())?;
                tx.write(&v, 600)?;
                tx.retry::<u64>()
            },
            |tx| tx.read(&v),
        )
    });
    assert_eq!((w, v.load()), (1, 1));
}

#[test]
fn or_else_in_an_inevitable_transaction_undoes_the_first_branch() {
    let (a, b) = (TVar::new(0u64), TVar::new(0u64));
    let ran = Rc::new(Cell::new(0u32));
    let r = ran.clone();
    let took = inevitably(|tx| {
        assert!(tx.is_inevitable());
        tx.or_else(
            |tx| {
                tx.write(&a, 1)?;
                let r = r.clone();
                tx.after_commit(move || r.set(r.get() + 1));
                tx.retry()
            },
            |tx| {
                assert_eq!(tx.read(&a)?, 0);
                tx.write(&b, 2)?;
                Ok("second")
            },
        )
        .expect("an inevitable transaction is never doomed")
    });
    assert_eq!(took, "second");
    assert_eq!((a.load(), b.load(), ran.get()), (0, 2, 0));
    // The locks the undone branch took stay until the end and are released: a later
    // transaction writes the same word.
    atomically(|tx| tx.write(&a, 3));
    assert_eq!(a.load(), 3);
}

#[test]
fn a_write_outside_the_filter_of_an_indexed_write_set_is_read_back() {
    // 33 writes build the write set's index. The words are consecutive, so the written ones
    // cover 33 of the 64 bits of the write-set filter and `arr[0]`'s bit is not among them: its
    // first write takes the inlined path, and later reads and writes must still find it.
    let arr: Vec<TVar<u64>> = (0..41).map(|_| TVar::new(0)).collect();
    let (read_back, again) = atomically(|tx| {
        for v in &arr[8..] {
            tx.write(v, 1)?;
        }
        tx.write(&arr[0], 7)?;
        let r = tx.read(&arr[0])?;
        tx.write(&arr[0], 8)?;
        Ok((r, tx.read(&arr[0])?))
    });
    assert_eq!((read_back, again), (7, 8));
    assert_eq!(arr[0].load(), 8);
    assert!(arr[1..8].iter().all(|v| v.load() == 0));
    assert!(arr[8..].iter().all(|v| v.load() == 1));
}

/// The registry pattern: the body takes a clone of a counter's `Arc` out of a locked map and
/// lets the lock go; another thread then replaces the entry, dropping the last other `Arc`,
/// before the commit. The transaction holds its clone, so the counter stays alive through the
/// commit and is freed after it (valgrind: no invalid write, nothing lost).
#[test]
fn hold_keeps_a_replaced_registry_entry_alive_until_the_commit() {
    let registry: Mutex<HashMap<&str, Arc<TVar<u64>>>> = Mutex::new(HashMap::new());
    registry
        .lock()
        .unwrap()
        .insert("hits", Arc::new(TVar::new(5)));
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (replaced_tx, replaced_rx) = mpsc::channel::<()>();
    let (seen, others) = std::thread::scope(|s| {
        s.spawn(|| {
            let held_rx = held_rx; // moved in: a `Receiver` is not `Sync`
            held_rx.recv().unwrap();
            let old = registry
                .lock()
                .unwrap()
                .insert("hits", Arc::new(TVar::new(100)))
                .expect("present");
            // This one and the transaction's.
            assert_eq!(Arc::strong_count(&old), 2);
            drop(old);
            replaced_tx.send(()).unwrap();
        });
        // Inevitable: the body runs once, so the hand-shake below happens exactly once.
        inevitably(|tx| {
            let counter = registry.lock().unwrap()["hits"].clone();
            let weak = Arc::downgrade(&counter);
            let counter = tx.hold(counter);
            tx.modify(counter, |n| n + 1).unwrap();
            held_tx.send(()).unwrap();
            replaced_rx.recv().unwrap();
            // The held clone is the last one; the weak reference goes before the commit, so
            // that the allocation is freed with that clone, after the commit.
            let others = weak.strong_count() - 1;
            drop(weak);
            (tx.modify(counter, |n| n + 1).unwrap(), others)
        })
    });
    assert_eq!((seen, others), (7, 0));
    assert_eq!(registry.lock().unwrap()["hits"].load(), 100);
}

/// The same with a normal (not inevitable) transaction, and a value that reports, when it is
/// freed, what its counter holds: the replaced entry is freed after the commit, with the write.
#[test]
fn a_held_registry_entry_replaced_before_the_commit_receives_the_write() {
    struct Counter {
        hits: TVar<u64>,
        freed: mpsc::Sender<u64>,
    }
    impl Drop for Counter {
        fn drop(&mut self) {
            let _ = self.freed.send(*self.hits.get_mut());
        }
    }
    let (freed_tx, freed_rx) = mpsc::channel();
    let counter = |n| {
        Arc::new(Counter {
            hits: TVar::new(n),
            freed: freed_tx.clone(),
        })
    };
    let registry: Mutex<HashMap<&str, Arc<Counter>>> = Mutex::new(HashMap::new());
    registry.lock().unwrap().insert("hits", counter(5));
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (replaced_tx, replaced_rx) = mpsc::channel::<()>();
    let attempts = Cell::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let held_rx = held_rx; // moved in: a `Receiver` is not `Sync`
            held_rx.recv().unwrap();
            let old = registry.lock().unwrap().insert("hits", counter(100));
            drop(old);
            replaced_tx.send(()).unwrap();
        });
        atomically(|tx| {
            let c = tx.hold(registry.lock().unwrap()["hits"].clone());
            tx.modify(&c.hits, |n| n + 1)?;
            // Counted once the write is in the redo log: a first attempt without a read set
            // (an inferred read-only one) stops at the write and runs again, not a conflict.
            attempts.set(attempts.get() + 1);
            if attempts.get() == 1 {
                held_tx.send(()).unwrap();
                replaced_rx.recv().unwrap();
            }
            Ok(())
        });
    });
    // Freed by the end of the transaction, once, after the commit stored into it.
    let old = freed_rx.try_recv().expect("the replaced entry was freed");
    assert!(freed_rx.try_recv().is_err());
    let new = registry.lock().unwrap()["hits"].hits.load();
    // A conflict with a test running beside this one may abort the first attempt; the second
    // then finds the new entry.
    let want = if attempts.get() == 1 {
        (6, 100)
    } else {
        (5, 101)
    };
    assert_eq!((old, new), want);
    drop(registry);
    assert_eq!(freed_rx.try_recv().ok(), Some(want.1));
}

/// `hold` of an `Arc<TBox<_>>`: its value is read and written through the lent reference; when
/// the body took the last `Arc` out of a shared slot, the box and the value the commit
/// installed are freed after the commit, each value once (valgrind checks the frees).
#[test]
fn hold_of_a_tbox_whose_value_is_written() {
    let shared = Arc::new(TBox::new(vec![1u64]));
    atomically(|tx| {
        let b = tx.hold(shared.clone());
        let mut v = tx.read_box(b)?.clone();
        v.push(2);
        tx.write_box(b, v)?;
        assert_eq!(tx.read_box(b)?, &[1, 2]);
        Ok(())
    });
    assert_eq!(shared.load(), vec![1, 2]);
    assert_eq!(Arc::strong_count(&shared), 1);

    /// Logs its id when dropped.
    struct Logged(u64, Arc<Mutex<Vec<u64>>>);
    impl Drop for Logged {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let count = |id| log.lock().unwrap().iter().filter(|&&i| i == id).count();
    let slot = Mutex::new(Some(Arc::new(TBox::new(Logged(1, log.clone())))));
    let seen = inevitably(|tx| {
        let b = tx.hold(slot.lock().unwrap().take().expect("runs once"));
        let n = tx.read_box(b).unwrap().0;
        tx.write_box(b, Logged(n + 1, log.clone())).unwrap();
        tx.read_box(b).unwrap().0
    });
    assert_eq!(seen, 2);
    assert!(slot.lock().unwrap().is_none());
    // The box went with the held clone, after the commit: the value it held then is freed.
    assert_eq!(count(2), 1);
    // The replaced one is retired through the epoch: freed once, when no pin can see it.
    for _ in 0..64 {
        crossbeam_epoch::pin().flush();
    }
    assert!(count(1) <= 1);
}

/// What a transaction holds is dropped when the attempt ends, whatever the ending: a commit, a
/// cancel, an abort and rerun, a retry, a panic, and within an attempt it outlives an undone
/// `or_else` branch. Unsized values can be held too.
#[test]
fn held_clones_are_dropped_when_the_attempt_ends() {
    let held = Arc::new(TVar::new(0u64));

    // Commit; the clone is alive during the attempt.
    let during = atomically(|tx| {
        let c = tx.hold(held.clone());
        tx.modify(c, |n| n + 1)?;
        Ok(Arc::strong_count(&held))
    });
    assert_eq!((during, held.load(), Arc::strong_count(&held)), (2, 1, 1));

    // Unsized.
    let vars: Arc<[TVar<u64>]> = (0..3).map(TVar::new).collect();
    atomically(|tx| {
        for v in tx.hold(vars.clone()) {
            tx.modify(v, |n| n + 10)?;
        }
        Ok(())
    });
    let got: Vec<u64> = vars.iter().map(TVar::load).collect();
    assert_eq!((got, Arc::strong_count(&vars)), (vec![10, 11, 12], 1));

    // Cancelled.
    let r: Result<(), &str> = try_atomically(|tx| {
        let c = tx.hold(held.clone());
        tx.write(c, 99)?;
        Err(TxError::User("cancel"))
    });
    assert_eq!(r, Err("cancel"));
    assert_eq!((held.load(), Arc::strong_count(&held)), (1, 1));

    // Aborted and rerun: another thread changes a word the first attempt read, so that its
    // `become_inevitable` fails and the body runs again. Each attempt holds its own clone, and
    // the first one's is gone when the second runs.
    let other = TVar::new(0u64);
    let mut counts = Vec::new();
    atomically(|tx| {
        let c = tx.hold(held.clone());
        counts.push(Arc::strong_count(&held));
        tx.read(&other)?;
        if counts.len() == 1 {
            std::thread::scope(|s| {
                s.spawn(|| atomically(|tx| tx.write(&other, 1)));
            });
        }
        tx.become_inevitable()?;
        tx.modify(c, |n| n + 1).map(drop)
    });
    // (More attempts only if a test running beside this one conflicts with it.)
    assert!(
        counts.len() >= 2 && counts.iter().all(|&n| n == 2),
        "{counts:?}"
    );
    assert_eq!((held.load(), Arc::strong_count(&held)), (2, 1));

    // Retry: the waiting attempt's clone is dropped, and the woken one holds a fresh one.
    let flag = TVar::new(false);
    let (waiting_tx, waiting_rx) = mpsc::channel::<()>();
    let counts = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut counts = Vec::new();
            atomically(|tx| {
                let c = tx.hold(held.clone());
                counts.push(Arc::strong_count(&held));
                if !tx.read(&flag)? {
                    waiting_tx.send(()).unwrap();
                    return tx.retry();
                }
                tx.modify(c, |n| n + 1).map(drop)
            });
            counts
        });
        waiting_rx.recv().unwrap();
        atomically(|tx| tx.write(&flag, true));
        waiter.join().unwrap()
    });
    assert!(
        counts.len() >= 2 && counts.iter().all(|&n| n == 2),
        "{counts:?}"
    );
    assert_eq!((held.load(), Arc::strong_count(&held)), (3, 1));

    // Panic.
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            let c = tx.hold(held.clone());
            tx.write(c, 99)?;
            if tx.read(c)? == 99 {
                panic!("the body panics");
            }
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert_eq!((held.load(), Arc::strong_count(&held)), (3, 1));

    // Held in an `or_else` branch that is undone: the branch's write goes, the clone stays for
    // the rest of the attempt, so the reference it lent may still be written.
    let (took, during) = atomically(|tx| {
        let lent = Cell::new(None);
        tx.or_else(
            |tx| {
                let c = tx.hold(held.clone());
                tx.write(c, 99)?;
                lent.set(Some(c));
                tx.retry()
            },
            |tx| {
                let c = lent.get().expect("set by the first branch");
                assert_eq!(tx.read(c)?, 3);
                tx.write(c, 4)?;
                Ok(("second", Arc::strong_count(&held)))
            },
        )
    });
    assert_eq!((took, during), ("second", 2));
    assert_eq!((held.load(), Arc::strong_count(&held)), (4, 1));
}
