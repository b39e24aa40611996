//! The event loop over the scripted source: callbacks, timers, handler batches, stop, panics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stm_core::TVar;
use stm_loop::{EventLoop, Readiness, ScriptedSource};

fn ready(token: usize) -> Readiness {
    Readiness {
        token,
        readable: true,
        ..Default::default()
    }
}

/// A state of one word, for the tests that need no more.
fn word() -> Arc<TVar<u64>> {
    Arc::new(TVar::new(0))
}

#[test]
fn callbacks_run_as_one_batch_per_turn() {
    let n = word();
    let mut ev = EventLoop::with_state(ScriptedSource::new(), n.clone()).workers(2);
    assert_eq!(ev.queue().worker_count(), 2);
    assert!(Arc::ptr_eq(ev.state(), &n));
    for _ in 0..10 {
        ev.add_callback(|tx, n| tx.modify(n, |x| x + 1).map(drop));
    }
    let t = ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(t.callbacks.commits, 10);
    assert_eq!(n.load(), 10);
    // Nothing left: the next turn runs no callback.
    let t = ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(t.callbacks.tasks, 0);
}

#[test]
fn a_callback_added_by_a_callback_runs_next_turn_and_the_poll_does_not_wait() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let mut ev = EventLoop::with_workers(source, 1);
    let h = ev.handle();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    ev.add_callback(move |tx, _| {
        let (h, o) = (h.clone(), o.clone());
        tx.after_commit(move || {
            o.lock().unwrap().push("first");
            let o = o.clone();
            h.add_callback(move |tx, _| {
                let o = o.clone();
                tx.after_commit(move || o.lock().unwrap().push("second"));
                Ok(())
            });
        });
        Ok(())
    });
    let t1 = ev.run_once(None).unwrap();
    assert_eq!(t1.callbacks.commits, 1);
    assert_eq!(*order.lock().unwrap(), ["first"]);
    // A callback is pending, so the first poll must not block.
    assert_eq!(script.timeouts()[0], Some(Duration::ZERO));
    // No callback pending after it, so bound the poll of this turn.
    let t2 = ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(t2.callbacks.commits, 1);
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
}

#[test]
fn timers_fire_in_deadline_order_and_bound_the_poll() {
    let source = ScriptedSource::new();
    let script = source.handle();
    // One worker: timers that become due in the same turn (a slow machine) run in deadline
    // order within their batch, so the recorded order is deterministic.
    let mut ev = EventLoop::with_workers(source, 1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    // Deadlines fixed from `start` (not `call_later`'s "now"), so a slow machine cannot
    // reorder them between the calls.
    for (name, delay_ms) in [("a", 40u64), ("b", 10), ("c", 25)] {
        let order = order.clone();
        ev.call_at(start + Duration::from_millis(delay_ms), move |tx, _| {
            let order = order.clone();
            tx.after_commit(move || order.lock().unwrap().push((name, start.elapsed())));
            Ok(())
        });
    }
    let o = order.clone();
    ev.call_at(
        start - Duration::from_millis(1).min(start.elapsed()),
        move |tx, _| {
            let o = o.clone();
            tx.after_commit(move || o.lock().unwrap().push(("past", Duration::ZERO)));
            Ok(())
        },
    );
    let cancelled = ev.call_later(Duration::from_millis(5), |_, _| {
        panic!("cancelled timer ran")
    });
    assert!(ev.handle().cancel_timer(cancelled));
    assert!(!ev.handle().cancel_timer(cancelled));
    // Bounded: at most 200 turns (each waits for the next timer, so a handful suffice).
    for _ in 0..200 {
        if order.lock().unwrap().len() == 4 {
            break;
        }
        // Bounded wait: after the last timer nothing would ever wake the poll.
        ev.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    let fired = order.lock().unwrap().clone();
    let names: Vec<_> = fired.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["past", "b", "c", "a"]);
    for (name, at) in &fired {
        let due = match *name {
            "a" => 40,
            "b" => 10,
            "c" => 25,
            _ => 0,
        };
        assert!(
            *at >= Duration::from_millis(due),
            "{name} fired early at {at:?}"
        );
    }
    // The first poll waited at most until "b" was due, and none longer than asked.
    let timeouts = script.timeouts();
    assert!(
        timeouts[0].unwrap() <= Duration::from_millis(10),
        "{timeouts:?}"
    );
    assert!(
        timeouts
            .iter()
            .all(|t| t.unwrap() <= Duration::from_millis(50))
    );
}

#[test]
fn handlers_of_all_ready_tokens_run_as_one_batch() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let total = word();
    let mut ev = EventLoop::with_state(source, total.clone()).workers(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    for token in 0..100usize {
        let seen = seen.clone();
        ev.set_handler(token, move |tx, total, r| {
            tx.modify(total, |t| t + 1)?;
            let seen = seen.clone();
            tx.after_commit(move || seen.lock().unwrap().push(r));
            Ok(())
        });
    }
    assert_eq!(ev.handle().handlers(), 100);
    let mut batch: Vec<Readiness> = (0..100).map(ready).collect();
    // A second record for token 7 (writable): merged into one run with both flags.
    batch.push(Readiness {
        token: 7,
        writable: true,
        ..Default::default()
    });
    // A token with no handler is ignored.
    batch.push(ready(1000));
    script.push(batch);
    let t = ev.run_once(None).unwrap();
    assert_eq!(t.events, 102);
    assert_eq!(t.handlers.tasks, 100);
    assert_eq!(t.handlers.commits, 100);
    assert_eq!(total.load(), 100);
    let seen = seen.lock().unwrap();
    let r7 = seen.iter().find(|r| r.token == 7).unwrap();
    assert!(r7.readable && r7.writable && !r7.hup);
    let mut tokens: Vec<_> = seen.iter().map(|r| r.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (0..100).collect::<Vec<_>>());
}

#[test]
fn handler_state_persists_and_handlers_can_be_removed() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let calls = word();
    let mut ev = EventLoop::with_state(source, calls.clone()).workers(1);
    let mut own = 0u64; // closure state, outside the STM
    ev.set_handler(5, move |tx, calls, _| {
        // Counted once the write is accepted: a body may run more than once per call (the
        // worker's first write comes from an attempt without a read set, which runs again).
        tx.write(calls, own + 1)?;
        own += 1;
        Ok(())
    });
    for _ in 0..3 {
        script.push(vec![ready(5)]);
        ev.run_once(None).unwrap();
    }
    assert_eq!(calls.load(), 3);
    assert!(ev.handle().remove_handler(5));
    assert!(!ev.handle().remove_handler(5));
    script.push(vec![ready(5)]);
    let t = ev.run_once(None).unwrap();
    assert_eq!((t.events, t.handlers.tasks), (1, 0));
}

#[test]
fn stop_from_another_thread_and_from_a_callback() {
    let mut ev = EventLoop::with_workers(ScriptedSource::new(), 2);
    let h = ev.handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        h.stop();
    });
    ev.run().unwrap(); // blocks in poll until the stop wakes it
    stopper.join().unwrap();
    assert!(!ev.handle().is_stopping(), "run clears the stop request");

    let h = ev.handle();
    let turns_before = ev.turns();
    ev.add_callback(move |tx, _| {
        let h = h.clone();
        tx.after_commit(move || h.stop());
        Ok(())
    });
    // Returns once the callback's commit has asked for the stop (a turn or two: the turns of
    // `run` do not wait for the callback, so a stale wake may end the first one before it ran).
    ev.run().unwrap();
    assert!(ev.turns() > turns_before);
    assert!(!ev.handle().is_stopping());
}

#[test]
fn a_panicking_handler_does_not_stop_the_loop() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let ok = word();
    let mut ev = EventLoop::with_state(source, ok.clone()).workers(2);
    ev.set_handler(1, |_, _, _| panic!("handler 1 is broken"));
    for token in 2..10 {
        ev.set_handler(token, |tx, ok, _| tx.modify(ok, |x| x + 1).map(drop));
    }
    script.push((1..10).map(ready).collect());
    let t = ev.run_once(None).unwrap();
    assert_eq!((t.handlers.panics, t.handlers.commits), (1, 8));
    assert_eq!(ok.load(), 8);
    ev.add_callback(|_, _| panic!("callback broken"));
    let t = ev.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(t.callbacks.panics, 1);
    script.push(vec![ready(2)]);
    assert_eq!(ev.run_once(None).unwrap().handlers.commits, 1);
    assert_eq!(ok.load(), 9);
}

#[test]
fn wake_interrupts_a_blocking_poll() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let mut ev = EventLoop::with_workers(source, 1);
    let h = ev.handle();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        h.wake();
    });
    let t = ev.run_once(None).unwrap(); // would block forever without the wake
    assert_eq!(t.events, 0);
    assert_eq!(script.polls(), 1);
    waker.join().unwrap();
}

#[test]
fn many_turns_with_small_batches() {
    let source = ScriptedSource::new();
    let script = source.handle();
    let total = word();
    let mut ev = EventLoop::with_state(source, total.clone()).workers(2);
    for token in 0..4 {
        ev.set_handler(token, |tx, total, _| tx.modify(total, |t| t + 1).map(drop));
    }
    for i in 0..2_000usize {
        script.push((0..(i % 4 + 1)).map(ready).collect());
        ev.run_once(None).unwrap();
    }
    assert_eq!(total.load(), (0..2_000u64).map(|i| i % 4 + 1).sum::<u64>());
}

#[cfg(feature = "polling")]
#[test]
fn the_polling_backend_drives_the_loop() {
    use std::io::{Read, Write};
    use stm_loop::PollingSource;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    // One socket, one file descriptor: epoll registrations belong to the descriptor, so the
    // handler re-arms through this same one (an `Arc`), not a `try_clone`d duplicate.
    let server = Arc::new(server);
    let source = PollingSource::new().unwrap();
    let poller = source.poller().clone();
    // SAFETY: `server` is deleted from the poller before it is dropped (end of the test).
    unsafe { poller.add(&*server, polling::Event::readable(3)).unwrap() };
    let mut ev = EventLoop::with_workers(source, 2);
    let got = Arc::new(Mutex::new(Vec::new()));
    let (g, s, p) = (got.clone(), server.clone(), poller.clone());
    // Bytes read are kept here, outside the transaction, until a commit hands them on: an
    // attempt that aborted would leave them for the next one.
    let read = Arc::new(Mutex::new(Vec::new()));
    ev.set_handler(3, move |tx, _, r| {
        assert!(r.readable);
        let mut buf = [0u8; 64];
        while let Ok(n) = (&*s).read(&mut buf) {
            if n == 0 {
                break;
            }
            read.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let (g, p, s, read) = (g.clone(), p.clone(), s.clone(), read.clone());
        tx.after_commit(move || {
            g.lock().unwrap().extend(read.lock().unwrap().drain(..));
            // One-shot: re-arm for the next event.
            p.modify(&*s, polling::Event::readable(3)).unwrap();
        });
        Ok(())
    });
    for msg in [&b"hello "[..], b"world"] {
        client.write_all(msg).unwrap();
        let before = got.lock().unwrap().len();
        for _ in 0..100 {
            ev.run_once(Some(Duration::from_secs(5))).unwrap();
            if got.lock().unwrap().len() >= before + msg.len() {
                break;
            }
        }
    }
    assert_eq!(&*got.lock().unwrap(), b"hello world");
    poller.delete(&*server).unwrap();
}
