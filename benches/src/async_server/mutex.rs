//! The `Mutex` twin of the STM backend: what a user would write without the STM. The counters
//! sit behind one `std::sync::Mutex` (never held across an `.await`, as tokio's documentation
//! advises for short critical sections), the bounded queue is a `VecDeque` behind another with
//! two [`Notify`]s (not empty, not full), and each job's result comes back on a tokio
//! `oneshot`.

use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};

use super::{Backend, Closed, Stats};

/// A job in the queue: what to compute and where its result goes.
#[derive(Debug)]
pub struct MutexJob {
    n: u32,
    reply: oneshot::Sender<u64>,
}

impl MutexJob {
    /// The N of `GET /work/N`.
    pub fn n(&self) -> u32 {
        self.n
    }
}

/// A handler's claim on its job's result.
#[derive(Debug)]
pub struct MutexTicket {
    reply: oneshot::Receiver<u64>,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    hits: BTreeMap<String, u64>,
    jobs_done: u64,
    producer_waits: u64,
}

struct Queue {
    jobs: VecDeque<MutexJob>,
    closed: bool,
}

/// The server's state behind `Mutex`es, with `Notify`s for the queue's two waits.
pub struct MutexBackend {
    counters: Mutex<Counters>,
    queue: Mutex<Queue>,
    capacity: usize,
    not_empty: Notify,
    not_full: Notify,
}

impl std::fmt::Debug for MutexBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexBackend")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent between statements: a panic elsewhere
    // (which poisons the lock) does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MutexBackend {
    /// Empty counters and an empty queue of `capacity` jobs.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the server's configuration refuses it before).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "the queue capacity must be at least 1");
        MutexBackend {
            counters: Mutex::new(Counters::default()),
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            capacity,
            not_empty: Notify::new(),
            not_full: Notify::new(),
        }
    }
}

impl Backend for MutexBackend {
    type Job = MutexJob;
    type Ticket = MutexTicket;

    fn name(&self) -> &'static str {
        "mutex"
    }

    async fn count_request(&self, route: &'static str) {
        let mut c = lock(&self.counters);
        c.requests += 1;
        // Allocates the key only the first time, as the STM map's `get_or_insert_with` does.
        match c.hits.get_mut(route) {
            Some(h) => *h += 1,
            None => {
                c.hits.insert(route.to_string(), 1);
            }
        }
    }

    async fn enqueue(&self, n: u32) -> Result<MutexTicket, Closed> {
        let (reply, rx) = oneshot::channel();
        let mut job = Some(MutexJob { n, reply });
        let mut counted = false;
        loop {
            // Registered *before* looking at the queue: a pop between the look and the await
            // wakes this waiter instead of being lost (`Notified::enable`).
            let mut space = pin!(self.not_full.notified());
            space.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if q.closed {
                    return Err(Closed);
                }
                if q.jobs.len() < self.capacity {
                    q.jobs.extend(job.take());
                    drop(q);
                    self.not_empty.notify_one();
                    return Ok(MutexTicket { reply: rx });
                }
            }
            if !counted {
                counted = true;
                lock(&self.counters).producer_waits += 1;
            }
            space.await;
        }
    }

    async fn wait(&self, ticket: MutexTicket) -> Option<u64> {
        // `Err`: the job was dropped without an answer (only when the runtime shuts down).
        ticket.reply.await.ok()
    }

    async fn next_job(&self) -> Option<MutexJob> {
        loop {
            let mut work = pin!(self.not_empty.notified());
            work.as_mut().enable();
            {
                let mut q = lock(&self.queue);
                if let Some(job) = q.jobs.pop_front() {
                    drop(q);
                    self.not_full.notify_one();
                    return Some(job);
                }
                if q.closed {
                    return None;
                }
            }
            work.await;
        }
    }

    async fn complete(&self, job: MutexJob, primes: u64) {
        lock(&self.counters).jobs_done += 1;
        // The handler may have gone (its client disconnected): nobody to tell.
        let _ = job.reply.send(primes);
    }

    async fn close(&self) {
        lock(&self.queue).closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
    }

    async fn stats(&self) -> Stats {
        // Only this holds both locks at once (so no order can deadlock): one snapshot.
        let c = lock(&self.counters);
        let q = lock(&self.queue);
        Stats {
            mode: "mutex",
            requests: c.requests,
            hits: c.hits.clone(),
            jobs_done: c.jobs_done,
            queued: q.jobs.len() as u64,
            producer_waits: c.producer_waits,
        }
    }
}
