//! `STM_LOG` recording by the event loop: on with the `log` feature (the default), ignored
//! without it. Its own test binary, holding one test, because it changes the environment.

use std::sync::Arc;
use std::time::Duration;

use stm_core::TVar;
use stm_loop::{EventLoop, ScriptedSource};

#[test]
fn stm_log_is_recorded_only_with_the_log_feature() {
    let path = std::env::temp_dir().join(format!("stm-loop-log-{}.stmlog", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // SAFETY: this test binary has only this test, so no other thread reads or writes the
    // environment while it runs.
    unsafe { std::env::set_var("STM_LOG", &path) };
    let n = Arc::new(TVar::new(0u64));
    {
        let mut ev = EventLoop::with_state(ScriptedSource::new(), n.clone()).workers(1);
        for _ in 0..10 {
            ev.add_callback(|tx, n| tx.modify(n, |x| x + 1).map(drop));
        }
        let t = ev.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(t.callbacks.commits, 10);
        // Dropping the last loop finishes the log.
    }
    assert_eq!(n.load(), 10);
    if cfg!(feature = "log") {
        let r = stm_log::report::Report::from_path(&path).expect("the loop wrote the log");
        assert_eq!(r.commits, 10);
        assert!(r.complete);
        std::fs::remove_file(&path).unwrap();
    } else {
        assert!(
            !path.exists(),
            "without the `log` feature STM_LOG is ignored"
        );
    }
}
