// The twin of `async_spawn_local_fail`: the task owns the variable (an `Arc`) and the body
// borrows it from the task's async block, so the future is `'static` and `Send`.
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use stm_core::{TVar, atomically_async};

fn spawn<F: Future + Send + 'static>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn main() {
    let counter = Arc::new(TVar::new(0u64));
    let task = {
        let counter = counter.clone();
        async move { atomically_async(|tx| tx.modify(&*counter, |c| c + 1)).await }
    };
    assert_eq!(spawn(task), 1);
    assert_eq!(counter.load(), 1);
}
