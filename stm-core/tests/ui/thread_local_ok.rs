// Twin of thread_local_fail.rs: run the transaction inside `with`, or keep an `Arc` in the
// thread-local and `hold` a clone.
use std::sync::Arc;
use stm_core::{TVar, atomically};

thread_local! {
    static HITS: TVar<u64> = const { TVar::new(0) };
    static SHARED: Arc<TVar<u64>> = Arc::new(TVar::new(0));
}

fn main() {
    HITS.with(|h| atomically(|tx| tx.modify(h, |n| n + 1)));
    assert_eq!(HITS.with(TVar::load), 1);
    atomically(|tx| {
        let s = tx.hold(SHARED.with(Arc::clone));
        tx.modify(s, |n| n + 1)
    });
    assert_eq!(SHARED.with(|s| s.load()), 1);
}
