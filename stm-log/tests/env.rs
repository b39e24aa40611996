//! `init_from_env`. Its own test binary, holding one test, because it changes the environment.

use stm_core::{TVar, atomically};
use stm_log::{init_from_env, report::Report};

#[test]
fn stm_log_variable_switches_the_recorder_on_and_off() {
    let path = std::env::temp_dir().join(format!("stm-log-env-{}.log", std::process::id()));
    // SAFETY: this test binary has only this test, so no other thread reads or writes the
    // environment while it runs.
    unsafe { std::env::remove_var("STM_LOG") };
    assert!(init_from_env().unwrap().is_none());
    assert!(!stm_core::event_sink_installed());
    // SAFETY: as above.
    unsafe { std::env::set_var("STM_LOG", "") };
    assert!(init_from_env().unwrap().is_none());
    // SAFETY: as above.
    unsafe { std::env::set_var("STM_LOG", &path) };
    let guard = init_from_env().unwrap().expect("a guard");
    assert_eq!(guard.path(), path);
    assert!(stm_core::event_sink_installed());
    let v = TVar::new(0u32);
    for _ in 0..10 {
        atomically(|tx| tx.modify(&v, |x| x + 1));
    }
    guard.flush().unwrap();
    drop(guard);
    assert!(!stm_core::event_sink_installed());
    let r = Report::from_path(&path).unwrap();
    assert_eq!(r.commits, 10);
    assert!(r.complete);
    std::fs::remove_file(&path).unwrap();
}
