//! Why an attempt stopped: [`Abort`], [`TxResult`], [`TxError`] and the conflict kinds.

use core::fmt;

/// The three kinds of conflict, named as stmgc's contention model (and the conflict log) names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// Two transactions wrote the same word (or words sharing a versioned lock); one aborts.
    WriteWrite,
    /// A commit changed a word that a running transaction had read; the reader aborts.
    WriteRead,
    /// A transaction had to wait for, or abort because of, the inevitable transaction.
    Inevitable,
}

impl ConflictKind {
    /// The name the conflict log prints: `WRITE_WRITE`, `WRITE_READ` or `INEVITABLE`.
    pub const fn name(self) -> &'static str {
        match self {
            ConflictKind::WriteWrite => "WRITE_WRITE",
            ConflictKind::WriteRead => "WRITE_READ",
            ConflictKind::Inevitable => "INEVITABLE",
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an attempt ended without committing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortCause {
    /// A conflict with another transaction.
    Conflict(ConflictKind),
    /// The body called [`Tx::retry`](crate::Tx::retry): wait for a read word to change.
    Retry,
    /// The body gave up with a user error ([`try_atomically`](crate::try_atomically)).
    Cancel,
    /// The body panicked.
    Panic,
    /// The attempt ran without a read set (an inferred read-only attempt, see
    /// [`atomically`](crate::atomically)) and reached something that needs one: a write,
    /// [`Tx::retry`](crate::Tx::retry) that must wait, [`Tx::become_inevitable`](crate::Tx::become_inevitable),
    /// or a read of a word newer than its snapshot. The runtime runs the body again at once.
    /// Not a conflict; an event sink never sees it (while one is installed, every attempt keeps
    /// a read set).
    NeedsReadSet,
}

/// The error that ends a doomed attempt; the runtime catches it and runs the body again.
///
/// It is opaque on purpose: a body only propagates it with `?`. It implements the usual error
/// traits so that it composes with other error types.
///
/// ```
/// use stm_core::{Abort, TVar, atomically};
/// fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
/// is_error::<Abort>();
/// let v = TVar::new(1u32);
/// assert_eq!(atomically(|tx| tx.read(&v)), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    pub(crate) cause: AbortCause,
}

impl Abort {
    pub(crate) const fn conflict(kind: ConflictKind) -> Self {
        Abort {
            cause: AbortCause::Conflict(kind),
        }
    }

    /// What ended the attempt.
    pub fn cause(&self) -> AbortCause {
        self.cause
    }
}

impl fmt::Debug for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Abort").field("cause", &self.cause).finish()
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            AbortCause::Conflict(k) => write!(f, "transaction aborted by a {k} conflict"),
            AbortCause::Retry => f.write_str("transaction is waiting for a read word to change"),
            AbortCause::Cancel => f.write_str("transaction cancelled by its body"),
            AbortCause::Panic => f.write_str("transaction body panicked"),
            AbortCause::NeedsReadSet => {
                f.write_str("transaction ran without a read set and needs one: it runs again")
            }
        }
    }
}

impl std::error::Error for Abort {}

/// The result of every transactional operation: `Err` means "this attempt is doomed, leave with `?`".
pub type TxResult<T> = Result<T, Abort>;

/// The error type of a [`try_atomically`](crate::try_atomically) body: a conflict (retried by the
/// runtime) or the user's own error (rolls the attempt back and is returned to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError<E> {
    /// The attempt conflicted: `?` on a transactional operation produces this.
    Abort(Abort),
    /// Give up: discard every write of the attempt and return `E`.
    User(E),
}

impl<E> From<Abort> for TxError<E> {
    fn from(a: Abort) -> Self {
        TxError::Abort(a)
    }
}

impl<E: fmt::Display> fmt::Display for TxError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxError::Abort(a) => a.fmt(f),
            TxError::User(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TxError<E> {}
