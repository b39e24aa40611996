// A future of `atomically_async` that borrows a local TVar cannot be handed to a spawner that
// needs `'static` (every executor's `spawn`): the task could outlive the variable and the
// commit would store into freed stack memory.
use std::future::Future;
use stm_core::{TVar, atomically_async};

fn spawn<F: Future + Send + 'static>(f: F) {
    drop(f);
}

fn main() {
    let counter = TVar::new(0u64);
    spawn(atomically_async(|tx| tx.modify(&counter, |c| c + 1)));
}
