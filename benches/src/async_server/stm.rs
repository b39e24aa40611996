//! The STM backend: the shared state is transactional variables and stm-core collections, and
//! every wait (a consumer on an empty queue, a producer on a full one, a handler on its job's
//! result) is a transaction that calls `retry` and is awaited with [`atomically_async`].

use std::collections::BTreeMap;
use std::sync::Arc;

use stm_core::collections::{TBoundedQueue, TCounter, TMap};
use stm_core::{TVar, TxResult, atomically_async};

use super::{Backend, Closed, Stats};

/// The value of a result slot whose job has not finished yet (a prime count never reaches it).
const PENDING: u64 = u64::MAX;

/// A job in the STM queue: what to compute and the transactional slot its result goes to.
#[derive(Clone, Debug)]
pub struct StmJob {
    n: u32,
    slot: Arc<TVar<u64>>,
}

impl StmJob {
    /// The N of `GET /work/N`.
    pub fn n(&self) -> u32 {
        self.n
    }
}

/// A handler's claim on its job's result: the slot the consumer writes.
#[derive(Debug)]
pub struct StmTicket {
    slot: Arc<TVar<u64>>,
}

/// The server's state in transactional variables: request counters ([`TCounter`], sharded, so
/// that handlers on different threads do not conflict), per-route hits (a [`TMap`] of
/// counters), the bounded work queue ([`TBoundedQueue`]) and the flag that closes it.
///
/// Each job carries its own result slot, a `TVar<u64>` shared by the handler and the consumer:
/// the handler awaits a transaction that `retry`s while the slot is empty, and the consumer's
/// commit that fills it (together with the `jobs_done` count, in one transaction) wakes it. So
/// `/stats` never sees a job counted as done whose result is not published, and one mechanism
/// (`retry`) serves all three waits; a `oneshot` filled in `after_commit` would work too, but
/// would be a second mechanism beside the STM (the [`MutexBackend`](super::MutexBackend) uses
/// one, as a user without the STM would).
pub struct StmBackend {
    requests: TCounter,
    hits: TMap<String, Arc<TCounter>>,
    jobs_done: TCounter,
    producer_waits: TCounter,
    queue: TBoundedQueue<StmJob>,
    closed: TVar<bool>,
}

impl std::fmt::Debug for StmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StmBackend")
            .field("capacity", &self.queue.capacity())
            .finish_non_exhaustive()
    }
}

impl StmBackend {
    /// Empty counters and an empty queue of `capacity` jobs.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the server's configuration refuses it before).
    pub fn new(capacity: usize) -> Self {
        StmBackend {
            requests: TCounter::new(),
            hits: TMap::new(),
            jobs_done: TCounter::new(),
            producer_waits: TCounter::new(),
            queue: TBoundedQueue::with_capacity(capacity),
            closed: TVar::new(false),
        }
    }
}

impl Backend for StmBackend {
    type Job = StmJob;
    type Ticket = StmTicket;

    fn name(&self) -> &'static str {
        "stm"
    }

    async fn count_request(&self, route: &'static str) {
        let (requests, hits) = (&self.requests, &self.hits);
        atomically_async(|tx| {
            requests.add(tx, 1)?;
            hits.get_or_insert_with(tx, route, || Arc::new(TCounter::new()))?
                .add(tx, 1)
        })
        .await
    }

    async fn enqueue(&self, n: u32) -> Result<StmTicket, Closed> {
        let slot = Arc::new(TVar::new(PENDING));
        let job = StmJob {
            n,
            slot: slot.clone(),
        };
        let (queue, closed) = (&self.queue, &self.closed);
        // A first attempt that does not wait, so that /stats can count the waits.
        let pushed = atomically_async(|tx| {
            if tx.read(closed)? {
                return Ok(Err(Closed));
            }
            Ok(Ok(queue.try_push(tx, job.clone())?.is_ok()))
        })
        .await?;
        if !pushed {
            let waits = &self.producer_waits;
            atomically_async(|tx| waits.add(tx, 1)).await;
            // `push` retries while the queue is full: the future waits (no thread blocked)
            // until a consumer's pop frees the cell this attempt read, or the queue closes.
            atomically_async(|tx| {
                if tx.read(closed)? {
                    return Ok(Err(Closed));
                }
                queue.push(tx, job.clone())?;
                Ok(Ok(()))
            })
            .await?;
        }
        Ok(StmTicket { slot })
    }

    async fn wait(&self, ticket: StmTicket) -> Option<u64> {
        let slot = &*ticket.slot;
        let count = atomically_async(|tx| match tx.read(slot)? {
            PENDING => tx.retry(),
            count => Ok(count),
        })
        .await;
        Some(count)
    }

    async fn next_job(&self) -> Option<StmJob> {
        let (queue, closed) = (&self.queue, &self.closed);
        // One wait on two conditions: a job, or the queue closed (and drained). The retry
        // registers on both words read, so either change wakes the consumer.
        atomically_async(|tx| match queue.try_pop(tx)? {
            Some(job) => Ok(Some(job)),
            None if tx.read(closed)? => Ok(None),
            None => tx.retry(),
        })
        .await
    }

    async fn complete(&self, job: StmJob, primes: u64) {
        let (slot, done) = (&*job.slot, &self.jobs_done);
        atomically_async(|tx| {
            tx.write(slot, primes)?;
            done.add(tx, 1)
        })
        .await
    }

    async fn close(&self) {
        let closed = &self.closed;
        atomically_async(|tx| tx.write(closed, true)).await
    }

    async fn stats(&self) -> Stats {
        let s = self;
        // One read-only transaction: a consistent snapshot of every counter and the queue.
        atomically_async(|tx| {
            let hits = s
                .hits
                .iter(tx)?
                .map(|(k, v)| Ok((k.clone(), v.get(tx)?.max(0) as u64)))
                .collect::<TxResult<BTreeMap<String, u64>>>()?;
            Ok(Stats {
                mode: "stm",
                requests: s.requests.get(tx)?.max(0) as u64,
                hits,
                jobs_done: s.jobs_done.get(tx)?.max(0) as u64,
                queued: s.queue.len(tx)? as u64,
                producer_waits: s.producer_waits.get(tx)?.max(0) as u64,
            })
        })
        .await
    }
}
