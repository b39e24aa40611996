//! The [`Word`] trait: values that fit in one transactional machine word.

use core::mem::{ManuallyDrop, align_of, size_of};

/// A `Copy` value that a [`TVar`](crate::TVar) stores in one 64-bit word.
///
/// A value is stored as its own bytes at the start of a zeroed 8-byte word and read back the same
/// way, so `to_bits` / `from_bits` need no code per type and work in `const` context (which is
/// what makes `TVar::new` a `const fn`).
///
/// # Safety
///
/// Implementing `Word` for `T` promises:
/// - `size_of::<T>() <= 8` and `align_of::<T>() <= 8` (also checked at compile time);
/// - `T` has no padding and no uninitialised bytes, so all its bytes can be read as integers;
/// - any bit pattern produced from a valid `T` is a valid `T` when copied back (true for every
///   `Copy` type without interior pointers to itself);
/// - `T` is `Copy`, so values can be duplicated freely by the redo log.
///
/// ```
/// use stm_core::{TVar, Word, atomically};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point { x: i32, y: i32 }            // 8 bytes, no padding
/// // SAFETY: two i32s, 8 bytes, no padding; every bit pattern is a valid Point.
/// unsafe impl Word for Point {}
///
/// let p = TVar::new(Point { x: 1, y: 2 });
/// atomically(|tx| tx.modify(&p, |p| Point { x: p.y, y: p.x }));
/// assert_eq!(p.load(), Point { x: 2, y: 1 });
/// ```
pub unsafe trait Word: Copy + Send + Sync + 'static {
    /// The word that represents `self`: its bytes at the start of a zeroed `u64`.
    #[inline]
    fn to_bits(self) -> u64 {
        to_bits(self)
    }

    /// The value that `to_bits` turned into `bits`.
    ///
    /// # Safety
    ///
    /// `bits` must have come from [`Word::to_bits`] of a value of this very type.
    #[inline]
    unsafe fn from_bits(bits: u64) -> Self {
        // SAFETY: forwarded contract: `bits` came from `to_bits` of a `Self`.
        unsafe { from_bits(bits) }
    }
}

#[repr(C)]
union Bits<T: Copy> {
    bits: u64,
    value: ManuallyDrop<T>,
}

/// `const` version of [`Word::to_bits`].
#[inline]
pub(crate) const fn to_bits<T: Word>(value: T) -> u64 {
    const {
        assert!(
            size_of::<T>() <= 8 && align_of::<T>() <= 8,
            "a Word must fit in 8 bytes"
        )
    };
    let mut u = Bits::<T> { bits: 0 };
    // Writing a union field overwrites only that field's bytes; the rest stay zero.
    u.value = ManuallyDrop::new(value);
    // SAFETY: all 8 bytes are initialised: the first `size_of::<T>()` by `value` (which has no
    // padding, by the `Word` contract) and the rest by the zero written first.
    unsafe { u.bits }
}

/// `const` version of [`Word::from_bits`].
///
/// # Safety
///
/// `bits` must have come from `to_bits::<T>`.
#[inline]
pub(crate) const unsafe fn from_bits<T: Word>(bits: u64) -> T {
    let u = Bits::<T> { bits };
    // SAFETY: the caller promises the leading bytes are those of a valid `T`.
    unsafe { ManuallyDrop::into_inner(u.value) }
}

macro_rules! impl_word {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive of at most 8 bytes, no padding; bits round-trip exactly.
        unsafe impl Word for $t {}
    )*};
}
impl_word!(
    u8, u16, u32, u64, i8, i16, i32, i64, usize, isize, f32, f64, bool, char
);
// SAFETY: zero-sized, nothing to store.
unsafe impl Word for () {}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Word + PartialEq + core::fmt::Debug>(v: T) {
        // SAFETY: bits come from to_bits of the same type.
        assert_eq!(unsafe { T::from_bits(v.to_bits()) }, v);
    }

    #[test]
    fn round_trips() {
        round_trip(0u8);
        round_trip(u64::MAX);
        round_trip(-1i8);
        round_trip(i64::MIN);
        round_trip(-7isize);
        round_trip(1.5f32);
        round_trip(-0.0f64);
        round_trip(true);
        round_trip('é');
        round_trip(());
    }

    #[test]
    fn small_values_zero_the_rest() {
        assert_eq!(to_bits(true) >> 8, 0);
        assert_eq!(to_bits(-1i8) >> 8, 0);
    }
}
