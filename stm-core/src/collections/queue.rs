//! [`TQueue`] (unbounded: a list of segments of cells) and [`TBoundedQueue`] (a ring of cells).
//!
//! # Why the two ends do not conflict
//!
//! **`TQueue`** numbers its elements: `tail` is the index of the next push, `head` of the next
//! pop, and element `i` lives in cell `i - base` of the segment whose `base <= i < base + SEG`.
//! Segments are linked through `next`; `front.seg` is the segment of `head`, `back.seg` the
//! segment of `tail`:
//!
//! ```text
//! front (index, seg) ──> [base 0: cells 0..32] ──next──> [base 32: cells 0..32] <── back (index, seg)
//! ```
//!
//! `push` reads `back.index` and `back.seg`, writes cell `tail - base` (or, when the segment is
//! full, its `next` and `back.seg`, with the element in the new segment's first cell) and
//! `back.index`. `try_pop` reads `front.index`, `front.seg` and cell `head - base` (or, at the end
//! of a segment, its `next`, and then writes `front.seg`), and writes `front.index`. A pop does
//! not clear its cell: cells are used once, and a segment is freed when both ends have left it.
//! The words a producer touches (`back.*`, cell `tail`, and `next` of the last segment) and those a
//! consumer touches (`front.*`, cell `head`, `next` of the first segment once finished) are
//! disjoint unless `head == tail`, which is exactly when the queue is empty: then the consumer,
//! having read the vacant cell (or the missing `next`), returns `None` (`try_pop`) or blocks
//! (`pop` retries), and the producer's write of that very word is what wakes it.
//!
//! **`TBoundedQueue`** is a ring of `capacity` cells with two counters: a producer reads `tail`
//! and cell `tail % capacity`, and finds the queue full when that cell is still occupied; a
//! consumer reads `head` and cell `head % capacity`, and finds it empty when that cell is
//! vacant. The cells are occupied exactly from `head` to `tail`, so the two ends touch the same
//! cell only when `tail == head` (empty) or `tail == head + capacity` (full). Neither end reads
//! the other's counter, so `len` (which reads both) is the only operation that couples them.
//!
//! Producers conflict with each other (they all append at `tail`), as consumers do at `head`:
//! a FIFO has one end each.

use crate::{TBox, TVar, Tx, TxResult};
use crossbeam_utils::CachePadded;
use std::sync::Arc;

/// Cells per segment of a [`TQueue`].
const SEG: usize = 32;

struct Segment<T: Send + Sync + 'static> {
    /// The index of the element in `cells[0]`.
    base: u64,
    /// Written once each, by the push of their index; never cleared.
    cells: Box<[TBox<Option<T>>]>,
    next: TBox<Option<Arc<Segment<T>>>>,
}

impl<T: Send + Sync + 'static> Segment<T> {
    fn new(base: u64, first: Option<T>) -> Self {
        let mut first = Some(first);
        Segment {
            base,
            cells: (0..SEG)
                .map(|_| TBox::new(first.take().flatten()))
                .collect(),
            next: TBox::new(None),
        }
    }
}

impl<T: Send + Sync + 'static> Drop for Segment<T> {
    fn drop(&mut self) {
        // Unlink iteratively: dropping a long list recursively would overflow the stack.
        let mut next = self.next.get_mut().take();
        while let Some(n) = next {
            match Arc::try_unwrap(n) {
                Ok(mut seg) => next = seg.next.get_mut().take(),
                Err(_) => break, // still referenced elsewhere: its owner unlinks it later
            }
        }
    }
}

/// One end of a [`TQueue`]: the index of its next element and that element's segment.
struct End<T: Send + Sync + 'static> {
    index: TVar<u64>,
    seg: TBox<Arc<Segment<T>>>,
}

/// An unbounded transactional FIFO queue; producers and consumers do not conflict with each
/// other while it is not empty.
///
/// [`pop`](TQueue::pop) blocks while the queue is empty (it calls [`Tx::retry`], so the
/// transaction sleeps until a `push` commits); [`try_pop`](TQueue::try_pop) returns `None`
/// instead. Producers conflict with producers, and consumers with consumers (each end is one
/// index); a producer and a consumer touch disjoint words unless the queue is empty (see the
/// `collections::queue` source for the argument). Elements live in segments of 32 cells;
/// `pop` returns a clone of the element and leaves the cell as it is, so up to a segment's worth
/// of popped elements stay allocated until both ends have left their segment. Queue `Arc`s for
/// large or non-`Clone` values.
///
/// ```
/// use stm_core::{atomically, collections::TQueue};
/// use std::sync::Arc;
///
/// let q = Arc::new(TQueue::new());
/// let consumer = {
///     let q = q.clone();
///     std::thread::spawn(move || (0..100).map(|_| atomically(|tx| q.pop(tx))).sum::<u64>())
/// };
/// for i in 0..100u64 {
///     atomically(|tx| q.push(tx, i));
/// }
/// assert_eq!(consumer.join().unwrap(), 4950);
/// assert_eq!(atomically(|tx| q.try_pop(tx)), None);
/// ```
pub struct TQueue<T: Send + Sync + 'static> {
    front: CachePadded<End<T>>,
    back: CachePadded<End<T>>,
}

impl<T: Clone + Send + Sync + 'static> TQueue<T> {
    /// An empty queue.
    ///
    /// ```
    /// let q: stm_core::collections::TQueue<u8> = stm_core::collections::TQueue::new();
    /// assert!(stm_core::atomically(|tx| q.is_empty(tx)));
    /// ```
    pub fn new() -> Self {
        let seg = Arc::new(Segment::new(0, None));
        TQueue {
            front: CachePadded::new(End {
                index: TVar::new(0),
                seg: TBox::new(seg.clone()),
            }),
            back: CachePadded::new(End {
                index: TVar::new(0),
                seg: TBox::new(seg),
            }),
        }
    }

    /// Appends `value` at the back. Touches only the back of the queue.
    ///
    /// ```
    /// let q = stm_core::collections::TQueue::new();
    /// stm_core::atomically(|tx| { q.push(tx, 1)?; q.push(tx, 2) });
    /// assert_eq!(stm_core::atomically(|tx| q.pop(tx)), 1);
    /// ```
    #[track_caller]
    pub fn push<'t>(&'t self, tx: &Tx<'t, '_>, value: T) -> TxResult<()> {
        let t = tx.read(&self.back.index)?;
        let seg = tx.read_box(&self.back.seg)?;
        let offset = (t - seg.base) as usize;
        if offset < SEG {
            tx.write_box(&seg.cells[offset], Some(value))?;
        } else {
            // The last segment is full: start the next one with `value` in its first cell.
            let new = Arc::new(Segment::new(t, Some(value)));
            tx.write_box(&seg.next, Some(new.clone()))?;
            tx.write_box(&self.back.seg, new)?;
        }
        tx.write(&self.back.index, t + 1)
    }

    /// The front element's cell and index, moving `front.seg` past a finished segment (a
    /// write, only when `advance`); `None` when the queue is empty.
    #[track_caller]
    fn front_cell<'a>(&'a self, tx: &Tx<'a, '_>, advance: bool) -> TxResult<Option<(u64, &'a T)>> {
        let h = tx.read(&self.front.index)?;
        let mut seg = tx.read_box(&self.front.seg)?;
        let mut offset = (h - seg.base) as usize;
        if offset == SEG {
            let Some(next) = tx.read_box(&seg.next)? else {
                return Ok(None);
            };
            if advance {
                tx.write_box(&self.front.seg, next.clone())?;
            }
            seg = next;
            offset = 0;
        }
        Ok(tx.read_box(&seg.cells[offset])?.as_ref().map(|v| (h, v)))
    }

    /// Removes and returns the front element, or `None` when the queue is empty. Touches only
    /// the front of the queue (and, when it is empty, the word a `push` writes).
    ///
    /// ```
    /// let q = stm_core::collections::TQueue::new();
    /// assert_eq!(stm_core::atomically(|tx| q.try_pop(tx)), None);
    /// stm_core::atomically(|tx| q.push(tx, 'a'));
    /// assert_eq!(stm_core::atomically(|tx| q.try_pop(tx)), Some('a'));
    /// ```
    #[track_caller]
    pub fn try_pop<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<Option<T>> {
        let Some((h, v)) = self.front_cell(tx, true)? else {
            return Ok(None);
        };
        let v = v.clone();
        tx.write(&self.front.index, h + 1)?;
        Ok(Some(v))
    }

    /// Removes and returns the front element, blocking while the queue is empty: the
    /// transaction [`retry`](Tx::retry)s, sleeping until a `push` commits, then runs again.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let q = Arc::new(stm_core::collections::TQueue::new());
    /// let q2 = q.clone();
    /// let t = std::thread::spawn(move || stm_core::atomically(|tx| q2.pop(tx)));
    /// stm_core::atomically(|tx| q.push(tx, 42));
    /// assert_eq!(t.join().unwrap(), 42);
    /// ```
    #[track_caller]
    pub fn pop<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<T> {
        match self.try_pop(tx)? {
            Some(v) => Ok(v),
            None => tx.retry(),
        }
    }

    /// A clone of the front element, without removing it. Reads only the front.
    ///
    /// ```
    /// let q = stm_core::collections::TQueue::new();
    /// stm_core::atomically(|tx| q.push(tx, 5));
    /// assert_eq!(stm_core::atomically(|tx| q.peek(tx)), Some(5));
    /// assert_eq!(stm_core::atomically(|tx| q.len(tx)), 1);
    /// ```
    #[track_caller]
    pub fn peek<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<Option<T>> {
        Ok(self.front_cell(tx, false)?.map(|(_, v)| v.clone()))
    }

    /// Whether the queue is empty. Reads only the front.
    ///
    /// ```
    /// let q: stm_core::collections::TQueue<u8> = stm_core::collections::TQueue::new();
    /// assert!(stm_core::atomically(|tx| q.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn is_empty<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<bool> {
        Ok(self.front_cell(tx, false)?.is_none())
    }

    /// The number of elements. Reads both ends, so it conflicts with producers and consumers.
    ///
    /// ```
    /// let q = stm_core::collections::TQueue::new();
    /// stm_core::atomically(|tx| { q.push(tx, 1)?; q.push(tx, 2) });
    /// assert_eq!(stm_core::atomically(|tx| q.len(tx)), 2);
    /// ```
    #[track_caller]
    pub fn len<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<usize> {
        let h = tx.read(&self.front.index)?;
        let t = tx.read(&self.back.index)?;
        Ok((t - h) as usize)
    }
}

impl<T: Clone + Send + Sync + 'static> Default for TQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A transactional FIFO queue of fixed capacity; producers and consumers do not conflict with
/// each other while it is neither empty nor full.
///
/// [`push`](TBoundedQueue::push) blocks (retries) while the queue is full and
/// [`pop`](TBoundedQueue::pop) while it is empty; [`try_push`](TBoundedQueue::try_push) and
/// [`try_pop`](TBoundedQueue::try_pop) return instead. The queue is a ring of cells with a
/// `head` and a `tail` counter; neither end reads the other's counter, so the two ends touch the
/// same word only when the queue is empty or full (see the `collections::queue` source).
/// Elements are returned by clone.
///
/// ```
/// use stm_core::{atomically, collections::TBoundedQueue};
/// use std::sync::Arc;
///
/// let q = Arc::new(TBoundedQueue::with_capacity(4));
/// let producer = {
///     let q = q.clone();
///     std::thread::spawn(move || {
///         for i in 0..100u32 {
///             atomically(|tx| q.push(tx, i)); // blocks while 4 are waiting
///         }
///     })
/// };
/// let got: Vec<u32> = (0..100).map(|_| atomically(|tx| q.pop(tx))).collect();
/// producer.join().unwrap();
/// assert_eq!(got, (0..100).collect::<Vec<_>>());
/// ```
pub struct TBoundedQueue<T: Send + Sync + 'static> {
    cells: Box<[CachePadded<TBox<Option<T>>>]>,
    head: CachePadded<TVar<u64>>,
    tail: CachePadded<TVar<u64>>,
}

impl<T: Clone + Send + Sync + 'static> TBoundedQueue<T> {
    /// An empty queue that holds at most `capacity` elements.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    ///
    /// ```
    /// let q: stm_core::collections::TBoundedQueue<u8> =
    ///     stm_core::collections::TBoundedQueue::with_capacity(8);
    /// assert_eq!(q.capacity(), 8);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "TBoundedQueue capacity must be at least 1");
        TBoundedQueue {
            cells: (0..capacity)
                .map(|_| CachePadded::new(TBox::new(None)))
                .collect(),
            head: CachePadded::new(TVar::new(0)),
            tail: CachePadded::new(TVar::new(0)),
        }
    }

    /// The most elements the queue holds.
    ///
    /// ```
    /// let q: stm_core::collections::TBoundedQueue<()> =
    ///     stm_core::collections::TBoundedQueue::with_capacity(3);
    /// assert_eq!(q.capacity(), 3);
    /// ```
    pub fn capacity(&self) -> usize {
        self.cells.len()
    }

    #[inline]
    fn cell(&self, index: u64) -> &TBox<Option<T>> {
        &self.cells[(index % self.cells.len() as u64) as usize]
    }

    /// Appends `value` unless the queue is full, in which case it is handed back as `Err`.
    ///
    /// ```
    /// let q = stm_core::collections::TBoundedQueue::with_capacity(1);
    /// assert_eq!(stm_core::atomically(|tx| q.try_push(tx, 1)), Ok(()));
    /// assert_eq!(stm_core::atomically(|tx| q.try_push(tx, 2)), Err(2));
    /// ```
    #[track_caller]
    pub fn try_push<'t>(&'t self, tx: &Tx<'t, '_>, value: T) -> TxResult<Result<(), T>> {
        let t = tx.read(&self.tail)?;
        let cell = self.cell(t);
        if tx.read_box(cell)?.is_some() {
            return Ok(Err(value)); // the cell still holds the element `capacity` ahead: full
        }
        tx.write_box(cell, Some(value))?;
        tx.write(&self.tail, t + 1)?;
        Ok(Ok(()))
    }

    /// Appends `value`, blocking (retrying) while the queue is full.
    ///
    /// ```
    /// let q = stm_core::collections::TBoundedQueue::with_capacity(2);
    /// stm_core::atomically(|tx| q.push(tx, "x"));
    /// assert_eq!(stm_core::atomically(|tx| q.pop(tx)), "x");
    /// ```
    #[track_caller]
    pub fn push<'t>(&'t self, tx: &Tx<'t, '_>, value: T) -> TxResult<()> {
        match self.try_push(tx, value)? {
            Ok(()) => Ok(()),
            Err(_) => tx.retry(),
        }
    }

    /// Removes and returns the front element, or `None` when the queue is empty.
    ///
    /// ```
    /// let q = stm_core::collections::TBoundedQueue::with_capacity(2);
    /// assert_eq!(stm_core::atomically(|tx| q.try_pop(tx)), None::<u8>);
    /// ```
    #[track_caller]
    pub fn try_pop<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<Option<T>> {
        let h = tx.read(&self.head)?;
        let cell = self.cell(h);
        let Some(v) = tx.read_box(cell)? else {
            return Ok(None); // the cell at the head is vacant: empty
        };
        let v = v.clone();
        tx.write_box(cell, None)?;
        tx.write(&self.head, h + 1)?;
        Ok(Some(v))
    }

    /// Removes and returns the front element, blocking (retrying) while the queue is empty.
    ///
    /// ```
    /// let q = stm_core::collections::TBoundedQueue::with_capacity(2);
    /// stm_core::atomically(|tx| q.push(tx, 9));
    /// assert_eq!(stm_core::atomically(|tx| q.pop(tx)), 9);
    /// ```
    #[track_caller]
    pub fn pop<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<T> {
        match self.try_pop(tx)? {
            Some(v) => Ok(v),
            None => tx.retry(),
        }
    }

    /// The number of elements. Reads both counters, so it conflicts with both ends.
    ///
    /// ```
    /// let q = stm_core::collections::TBoundedQueue::with_capacity(4);
    /// stm_core::atomically(|tx| { q.push(tx, 1)?; q.push(tx, 2) });
    /// assert_eq!(stm_core::atomically(|tx| q.len(tx)), 2);
    /// ```
    #[track_caller]
    pub fn len<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<usize> {
        let h = tx.read(&self.head)?;
        let t = tx.read(&self.tail)?;
        Ok((t - h) as usize)
    }

    /// Whether the queue is empty. Reads only the front.
    ///
    /// ```
    /// let q: stm_core::collections::TBoundedQueue<u8> =
    ///     stm_core::collections::TBoundedQueue::with_capacity(1);
    /// assert!(stm_core::atomically(|tx| q.is_empty(tx)));
    /// ```
    #[track_caller]
    pub fn is_empty<'t>(&'t self, tx: &Tx<'t, '_>) -> TxResult<bool> {
        let h = tx.read(&self.head)?;
        Ok(tx.read_box(self.cell(h))?.is_none())
    }
}
