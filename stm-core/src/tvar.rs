//! [`TVar`]: one transactional word; [`TBox`]: a transactional pointer to any value.

use crate::runtime::{FLAGS, LOCKED, PINNED, owner_of, runtime};
use crate::sync::{AtomicU64, Ordering, Spin};
use crate::word::{self, Word};
use core::fmt;
use core::marker::PhantomData;

/// A transactional variable: one 64-bit word holding a [`Word`] value.
///
/// Read and write it inside [`atomically`](crate::atomically) through [`Tx`](crate::Tx); outside,
/// [`TVar::load`] reads a consistent value. `TVar::new` is `const`, so statics work, and
/// `size_of::<TVar<T>>() == 8`, so arrays of `TVar` are dense.
///
/// ```
/// use stm_core::{TVar, atomically};
/// static HITS: TVar<u64> = TVar::new(0);
/// atomically(|tx| tx.modify(&HITS, |h| h + 1));
/// assert!(HITS.load() >= 1);
/// assert_eq!(std::mem::size_of::<TVar<u64>>(), 8);
/// ```
///
/// A transaction's redo log keeps the address of each `TVar` it writes until the commit stores
/// into it, so [`Tx::write`](crate::Tx::write) borrows the variable for the whole attempt: the
/// borrow checker refuses to move, drop or reallocate it (or its container) before then. Shared
/// variables live outside the body (a local, a `static`, an [`Arc`](std::sync::Arc) that the
/// transaction [holds](crate::Tx::hold)); see [`Tx`](crate::Tx).
#[repr(transparent)]
pub struct TVar<T: Word> {
    pub(crate) word: AtomicU64,
    _marker: PhantomData<T>,
}

// SAFETY: the value is a `Word` (`Send + Sync + Copy`), stored in an atomic; all access goes
// through atomic operations.
unsafe impl<T: Word> Sync for TVar<T> {}
// SAFETY: as above.
unsafe impl<T: Word> Send for TVar<T> {}

impl<T: Word> TVar<T> {
    /// A new variable holding `value`. A `const fn`, so it can initialise a `static`.
    ///
    /// ```
    /// use stm_core::TVar;
    /// static NEXT_ID: TVar<u64> = TVar::new(1);
    /// let local = TVar::new((0u32, 0u32)); // any `Word`: here a pair of `u32`s
    /// assert_eq!((NEXT_ID.load(), local.load()), (1, (0, 0)));
    /// ```
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        TVar {
            word: AtomicU64::new(word::to_bits(value)),
            _marker: PhantomData,
        }
    }

    /// A new variable holding `value` (not `const` under loom).
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        TVar {
            word: AtomicU64::new(word::to_bits(value)),
            _marker: PhantomData,
        }
    }

    /// Under loom only, for the models: whether this variable and `other` share a versioned
    /// lock (a hash collision in the lock table, which has 16 entries under loom).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn shares_lock_with<U: Word>(&self, other: &TVar<U>) -> bool {
        let rt = runtime();
        let (a, _) = rt.orec(&self.word as *const AtomicU64 as usize);
        let (b, _) = rt.orec(&other.word as *const AtomicU64 as usize);
        core::ptr::eq(a, b)
    }

    /// Reads the current committed value, outside any transaction (an atomic snapshot: never a
    /// value that a commit in progress has only half written).
    ///
    /// ```
    /// use stm_core::{TVar, atomically};
    /// let v = TVar::new(1u32);
    /// atomically(|tx| tx.write(&v, 2));
    /// assert_eq!(v.load(), 2);
    /// ```
    pub fn load(&self) -> T {
        let bits = load_word(&self.word);
        // SAFETY: the word only ever holds bits produced by `to_bits::<T>` (`new` and commits).
        unsafe { word::from_bits(bits) }
    }

    /// Consumes the variable, returning its value.
    ///
    /// ```
    /// let v = stm_core::TVar::new('a');
    /// assert_eq!(v.into_inner(), 'a');
    /// ```
    pub fn into_inner(self) -> T {
        // Relaxed: `self` is owned, so no transaction holds it (a write borrows it until the
        // commit) and nobody else accesses the word.
        let bits = self.word.load(Ordering::Relaxed);
        // SAFETY: same bits argument as `load`.
        unsafe { word::from_bits(bits) }
    }

    /// A mutable reference to the value: `&mut self` proves no transaction can touch it.
    ///
    /// ```
    /// let mut v = stm_core::TVar::new(1i32);
    /// *v.get_mut() += 1; // no transaction: nobody else can see `v` now
    /// assert_eq!(v.load(), 2);
    /// ```
    #[cfg(not(loom))]
    pub fn get_mut(&mut self) -> &mut T {
        let p = self.word.get_mut() as *mut u64 as *mut T;
        // SAFETY: `T` is at most 8 bytes with alignment at most 8 (Word contract), and the word
        // stores `T`'s bytes at its start (see `word::to_bits`), so `p` points to a valid `T`;
        // `&mut self` makes the access exclusive for the returned lifetime.
        unsafe { &mut *p }
    }
}

impl<T: Word + Default> Default for TVar<T> {
    fn default() -> Self {
        TVar::new(T::default())
    }
}

impl<T: Word + fmt::Debug> fmt::Debug for TVar<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TVar").field(&self.load()).finish()
    }
}

/// Reads a word consistently outside transactions: the seqlock pattern on its orec.
pub(crate) fn load_word(word: &AtomicU64) -> u64 {
    let rt = runtime();
    let (orec, _) = rt.orec(word as *const AtomicU64 as usize);
    let mut spin = Spin::new();
    loop {
        // The orec loads (SeqCst for the first, through `Spin::load`; Acquire for the second) and
        // the word load (Acquire) pair with a committer's Release stores of the word and of the
        // orec (see `tx/mod.rs`).
        let o1 = spin.load(orec);
        if o1 & LOCKED != 0 {
            if o1 & PINNED != 0 && owner_of(o1) == crate::tx::thread_id() {
                // Held by this thread's own inevitable transaction, which cannot let go while
                // we wait: its writes are still in its redo log, so the word holds the last
                // committed value. Acquire: as below.
                return word.load(Ordering::Acquire);
            }
            if o1 & PINNED != 0 {
                rt.wait_orec_change(orec, o1);
            } else {
                spin.spin_on(orec, o1);
            }
            continue;
        }
        let v = word.load(Ordering::Acquire);
        let o2 = orec.load(Ordering::Acquire);
        if (o1 ^ o2) & !FLAGS == 0 {
            return v;
        }
    }
}

/// A transactional box: any `T: Send + Sync + 'static` behind one pointer word.
///
/// A write installs a new allocation; after the commit the replaced one is retired through
/// crossbeam-epoch and freed once no transaction can still see it. Reading gives `&T` valid for
/// the rest of the transaction.
///
/// ```
/// use stm_core::{TBox, atomically};
/// let names = TBox::new(vec!["a".to_string()]);
/// atomically(|tx| {
///     let mut v = tx.read_box(&names)?.clone();
///     v.push("b".into());
///     tx.write_box(&names, v)
/// });
/// assert_eq!(names.load(), vec!["a", "b"]);
/// ```
#[cfg(not(loom))]
pub struct TBox<T: Send + Sync + 'static> {
    pub(crate) word: AtomicU64,
    _owns: PhantomData<Box<T>>,
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static> TBox<T> {
    /// A new box holding `value` (any `Send + Sync + 'static` type; one allocation).
    ///
    /// ```
    /// let names = stm_core::TBox::new(vec!["a".to_string()]);
    /// assert_eq!(names.load(), ["a"]);
    /// ```
    pub fn new(value: T) -> Self {
        TBox {
            word: AtomicU64::new(Box::into_raw(Box::new(value)) as usize as u64),
            _owns: PhantomData,
        }
    }

    /// Calls `f` with the current committed value, outside any transaction (no clone: `f`
    /// borrows it for its call).
    ///
    /// ```
    /// let names = stm_core::TBox::new(vec!["a".to_string(), "b".to_string()]);
    /// assert_eq!(names.with(|v| v.len()), 2);
    /// ```
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        // `f` borrows the value only for its call, so it cannot hand its `TVar`s to a
        // transaction's `write` (that needs a borrow for the whole attempt).
        let _guard = crossbeam_epoch::pin();
        let p = load_word(&self.word) as usize as *const T;
        // SAFETY: the word always holds a live allocation made by `Box::into_raw` (new or a
        // commit); a replaced one is retired through the epoch and cannot be freed while
        // `_guard`, pinned before the load, is alive.
        f(unsafe { &*p })
    }

    /// A clone of the current committed value, outside any transaction.
    ///
    /// ```
    /// use stm_core::{TBox, atomically};
    /// let greeting = TBox::new(String::from("hi"));
    /// atomically(|tx| tx.write_box(&greeting, String::from("hello")));
    /// assert_eq!(greeting.load(), "hello");
    /// ```
    pub fn load(&self) -> T
    where
        T: Clone,
    {
        self.with(T::clone)
    }

    /// A mutable reference: `&mut self` proves no transaction can touch it.
    ///
    /// ```
    /// let mut names = stm_core::TBox::new(Vec::<String>::new());
    /// names.get_mut().push("a".into()); // in place, no new allocation for the box
    /// assert_eq!(names.load(), ["a"]);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: the word holds a live, uniquely owned `Box<T>` allocation; `&mut self` excludes
        // every other access.
        unsafe { &mut *(*self.word.get_mut() as usize as *mut T) }
    }

    /// Consumes the box, returning its value.
    ///
    /// ```
    /// let b = stm_core::TBox::new(String::from("mine"));
    /// let s: String = b.into_inner();
    /// assert_eq!(s, "mine");
    /// ```
    pub fn into_inner(self) -> T {
        let mut me = core::mem::ManuallyDrop::new(self);
        // SAFETY: owned, live allocation from `Box::into_raw`; ManuallyDrop stops `Drop` from
        // freeing it a second time.
        *unsafe { Box::from_raw(*me.word.get_mut() as usize as *mut T) }
    }
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static> Drop for TBox<T> {
    fn drop(&mut self) {
        // SAFETY: the word holds a live allocation from `Box::into_raw`, owned by this box;
        // transactions reading or writing it borrow the box until their attempt has ended,
        // which `&mut self` excludes. Replaced values were retired to the epoch separately.
        drop(unsafe { Box::from_raw(*self.word.get_mut() as usize as *mut T) });
    }
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static + fmt::Debug> fmt::Debug for TBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with(|v| f.debug_tuple("TBox").field(v).finish())
    }
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static + Default> Default for TBox<T> {
    fn default() -> Self {
        TBox::new(T::default())
    }
}
