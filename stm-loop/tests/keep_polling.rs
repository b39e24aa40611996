//! `EventLoop::run` keeps polling while handlers run (unordered mode): a handler that blocks
//! holds one worker, not the loop; a token's handler never runs twice at once; ordered mode
//! keeps its batches. Every wait is bounded (generous bounds); no test measures speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stm_core::TVar;
use stm_loop::{EventLoop, Readiness, ScriptedSource, TransactionQueue};

/// How long any expected event may take before the test fails (never reached when it passes).
const BOUND: Duration = Duration::from_secs(30);

#[derive(Default)]
struct App {
    slow: TVar<u64>,
    fast: TVar<u64>,
    other: TVar<u64>,
}

fn ready(token: usize) -> Readiness {
    Readiness {
        token,
        readable: true,
        ..Default::default()
    }
}

fn expect(events: &Receiver<&'static str>, what: &str) {
    match events.recv_timeout(BOUND) {
        Ok(got) => assert_eq!(got, what),
        Err(e) => panic!("waiting for {what:?}: {e}"),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs the loop on a thread of its own; the thread returns the loop when `run` has returned.
fn spawn_run(mut ev: EventLoop<ScriptedSource, App>) -> JoinHandle<EventLoop<ScriptedSource, App>> {
    std::thread::spawn(move || {
        ev.run().unwrap();
        ev
    })
}

/// Token 1's handler: the first run says "slow started" and blocks until released (once); every
/// run writes `slow` and says "slow done" after its commit. Counts the runs going on at once.
fn set_slow_handler(
    ev: &EventLoop<ScriptedSource, App>,
    events: &Sender<&'static str>,
    release: Receiver<()>,
    active: &Arc<AtomicUsize>,
    most: &Arc<AtomicUsize>,
    seen: &Arc<Mutex<Vec<Readiness>>>,
) {
    let (events, active, most, seen) = (events.clone(), active.clone(), most.clone(), seen.clone());
    let mut released = false; // outside the STM: a rerun does not wait again
    ev.set_handler(1, move |tx, app, r| {
        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        let _running = Running(&active);
        if !released {
            events.send("slow started").unwrap();
            release
                .recv_timeout(BOUND)
                .expect("the test never released the handler");
            released = true;
        }
        tx.modify(&app.slow, |n| n + 1)?;
        let (events, seen) = (events.clone(), seen.clone());
        tx.after_commit(move || {
            seen.lock().unwrap().push(r);
            events.send("slow done").unwrap();
        });
        Ok(())
    });
}

/// Decrements the count of running handlers when the attempt ends, however it ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Token 2's handler: writes `fast`, says "fast done" after its commit.
fn set_fast_handler(ev: &EventLoop<ScriptedSource, App>, events: &Sender<&'static str>) {
    let events = events.clone();
    ev.set_handler(2, move |tx, app, _| {
        tx.modify(&app.fast, |n| n + 1)?;
        let events = events.clone();
        tx.after_commit(move || events.send("fast done").unwrap());
        Ok(())
    });
}

#[test]
fn a_blocked_handler_holds_up_no_other_token_callback_or_timer() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(2);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    set_slow_handler(&ev, &events_tx, release_rx, &active, &most, &seen);
    set_fast_handler(&ev, &events_tx);
    let looping = spawn_run(ev);

    script.push(vec![ready(1)]);
    expect(&events, "slow started");
    // Token 1's handler now blocks one of the two workers until released.
    script.push(vec![ready(2)]);
    expect(&events, "fast done");
    let e = events_tx.clone();
    h.add_callback(move |tx, app| {
        tx.modify(&app.other, |n| n + 1)?;
        let e = e.clone();
        tx.after_commit(move || e.send("callback done").unwrap());
        Ok(())
    });
    expect(&events, "callback done");
    let e = events_tx.clone();
    h.call_later(Duration::from_millis(1), move |tx, app| {
        tx.modify(&app.other, |n| n + 10)?;
        let e = e.clone();
        tx.after_commit(move || e.send("timer done").unwrap());
        Ok(())
    });
    expect(&events, "timer done");
    // All of that committed while the first handler was still blocked.
    assert_eq!(
        (app.slow.load(), app.fast.load(), app.other.load()),
        (0, 1, 11)
    );
    assert_eq!(active.load(Ordering::SeqCst), 1);

    release.send(()).unwrap();
    expect(&events, "slow done");
    h.stop();
    looping.join().unwrap();
    assert_eq!(app.slow.load(), 1);
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

#[test]
fn readiness_arriving_while_the_handler_runs_is_merged_and_delivered_after_it() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(2);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    set_slow_handler(&ev, &events_tx, release_rx, &active, &most, &seen);
    set_fast_handler(&ev, &events_tx);
    let looping = spawn_run(ev);

    script.push(vec![ready(1)]);
    expect(&events, "slow started");
    // Token 1 becomes ready twice more while its handler runs, with a free worker waiting.
    let writable = Readiness {
        token: 1,
        writable: true,
        ..Default::default()
    };
    let hup = Readiness {
        token: 1,
        hup: true,
        ..Default::default()
    };
    script.push(vec![writable]);
    script.push(vec![hup]);
    // The scripted source hands out batches in order: once token 2's handler has run, both
    // records for token 1 have been polled.
    script.push(vec![ready(2)]);
    expect(&events, "fast done");
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(active.load(Ordering::SeqCst), 1);

    release.send(()).unwrap();
    expect(&events, "slow done");
    // The two records, merged into one run after the first has finished.
    expect(&events, "slow done");
    h.stop();
    looping.join().unwrap();
    let merged = Readiness {
        token: 1,
        writable: true,
        hup: true,
        ..Default::default()
    };
    assert_eq!(*seen.lock().unwrap(), [ready(1), merged]);
    assert_eq!(app.slow.load(), 2);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "token 1's handler ran twice at once"
    );
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn ordered_mode_still_runs_each_turn_as_a_batch() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let queue = TransactionQueue::with_state(app.clone())
        .workers(2)
        .ordered(true);
    let ev = EventLoop::with_queue(source, queue);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    set_slow_handler(&ev, &events_tx, release_rx, &active, &most, &seen);
    set_fast_handler(&ev, &events_tx);
    let looping = spawn_run(ev);

    script.push(vec![ready(1)]);
    expect(&events, "slow started");
    script.push(vec![ready(2)]);
    // The batch holds the loop: the second batch is not even polled while the first handler
    // blocks (always true when ordered mode batches; the pause only gives a loop that did not
    // a chance to show it).
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(script.queued(), 1);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(app.fast.load(), 0);

    release.send(()).unwrap();
    expect(&events, "slow done");
    expect(&events, "fast done");
    h.stop();
    looping.join().unwrap();
    assert_eq!((app.slow.load(), app.fast.load()), (1, 1));
}

#[test]
fn stop_returns_only_after_the_running_handlers_have_finished() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(2);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    set_slow_handler(&ev, &events_tx, release_rx, &active, &most, &seen);
    let a = app.clone();
    let looping = std::thread::spawn(move || {
        let mut ev = ev;
        ev.run().unwrap();
        // What `run` left behind when it returned.
        (a.slow.load(), seen.lock().unwrap().len())
    });
    script.push(vec![ready(1)]);
    expect(&events, "slow started");
    h.stop();
    // A loop that returned without waiting would do so now (this pause only gives it time).
    std::thread::sleep(Duration::from_millis(20));
    release.send(()).unwrap();
    assert_eq!(looping.join().unwrap(), (1, 1));
}

#[test]
fn a_panicking_handler_frees_its_worker_and_its_token() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(1);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    ev.set_handler(1, move |_, _, _| {
        r.fetch_add(1, Ordering::SeqCst);
        panic!("handler 1 is broken")
    });
    set_fast_handler(&ev, &events_tx);
    let looping = spawn_run(ev);
    // One at a time, so the two records are not merged into one run.
    script.push(vec![ready(1)]);
    wait_until("the first run", || runs.load(Ordering::SeqCst) == 1);
    script.push(vec![ready(1)]);
    wait_until("the second run", || runs.load(Ordering::SeqCst) == 2);
    // The only worker serves the next token after the panics.
    script.push(vec![ready(2)]);
    expect(&events, "fast done");
    h.stop();
    looping.join().unwrap();
    assert_eq!(app.fast.load(), 1);
}

#[test]
fn a_replaced_handler_whose_drop_panics_frees_its_worker() {
    /// Panics when dropped: the handler's last clone is dropped by the worker that ran it.
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("a handler's capture panics in Drop");
        }
    }
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(1);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let started = events_tx.clone();
    let guard = PanicOnDrop;
    ev.set_handler(1, move |_, _, _| {
        let _keep = &guard;
        let _ = started.send("old started");
        let _ = release_rx.lock().unwrap().recv_timeout(BOUND);
        Ok(())
    });
    set_fast_handler(&ev, &events_tx);
    let looping = spawn_run(ev);
    script.push(vec![ready(1)]);
    expect(&events, "old started");
    // Replaced while it runs: the running job now holds the old handler's last clone.
    h.set_handler(1, |_, _, _| Ok(()));
    release.send(()).unwrap();
    // The only worker survives the panicking Drop and serves the next token.
    script.push(vec![ready(2)]);
    expect(&events, "fast done");
    h.stop();
    looping.join().unwrap();
    assert_eq!(app.fast.load(), 1);
}

#[test]
fn a_handler_set_after_its_first_readiness_was_polled_still_gets_it() {
    // The pattern of an accept handler: in an after-commit action, register the new socket with
    // the source, then set its handler. The loop keeps polling meanwhile, so the socket's first
    // (edge-triggered: only) event can arrive before the handler exists; it must not be lost.
    let source = ScriptedSource::new();
    let script = source.handle();
    let app = Arc::new(App::default());
    let ev = EventLoop::with_state(source, app.clone()).workers(2);
    let h = ev.handle();
    let (events_tx, events) = mpsc::channel();
    let (sc, lh, e) = (script.clone(), h.clone(), events_tx.clone());
    ev.set_handler(1, move |tx, _, _| {
        let (script, h, e) = (sc.clone(), lh.clone(), e.clone());
        tx.after_commit(move || {
            // "Register": the new token is ready at once, and the loop polls it ...
            script.push(vec![ready(5)]);
            wait_until("the loop polled token 5", || script.queued() == 0);
            // Let the loop reach the point where it finds no handler for token 5 (were it
            // slower, the handler would simply be there in time: the test cannot fail
            // spuriously, only miss the race).
            std::thread::sleep(Duration::from_millis(50));
            // ... before its handler is set.
            let e2 = e.clone();
            h.set_handler(5, move |tx, app, r| {
                assert!(r.readable);
                tx.modify(&app.fast, |n| n + 1)?;
                let e2 = e2.clone();
                tx.after_commit(move || e2.send("token 5 served").unwrap());
                Ok(())
            });
            e.send("accepted").unwrap();
        });
        Ok(())
    });
    let looping = spawn_run(ev);
    script.push(vec![ready(1)]);
    expect(&events, "accepted");
    expect(&events, "token 5 served");
    h.stop();
    looping.join().unwrap();
    assert_eq!(app.fast.load(), 1);
}
