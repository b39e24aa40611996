//! The [`Word`] trait: values that fit in one transactional machine word.

use core::mem::{ManuallyDrop, align_of, size_of};
use core::num::NonZero;

/// A `Copy` value that a [`TVar`](crate::TVar) stores in one 64-bit word.
///
/// A value is stored as its own bytes at the start of a zeroed 8-byte word and read back the same
/// way, so `to_bits` / `from_bits` need no code per type and work in `const` context (which is
/// what makes `TVar::new` a `const fn`).
///
/// # Implemented for
///
/// - the integers, `f32`, `f64`, `bool`, `char` and `()`;
/// - `NonZero<T>` and `Option<NonZero<T>>` for every integer `T` (`NonZeroU64`,
///   `Option<NonZeroU32>`, ...): the standard library guarantees that `Option<NonZero<T>>` has
///   the size of `T` and that `None` is all zero bytes, so every byte of every value is
///   initialised;
/// - tuples of 2 to 8 `Word`s whose fields fill the tuple exactly: `(u32, u32)`,
///   `(u16, u16, u16, u16)`, `(u8, u8)`, `(f32, Option<NonZeroU32>)`, `(u32, u16, u8, bool)`,
///   and tuples of your own `Word` types. A tuple with padding, such as `(u8, u32)` (5 bytes of
///   fields in 8), or larger than 8 bytes, such as `(u64, u8)`, is refused when the program is
///   built (a compile-time assertion in `TVar::new`, so `cargo build`, not `cargo check`,
///   reports it): reorder or widen its fields, or use a `#[repr(C)]` struct without padding.
///
/// Not implemented, because the bytes of some values are not all initialised or their layout
/// is not guaranteed:
///
/// - `Option<T>` of other word types: `Option<u32>` is 8 bytes whose `None` leaves the payload
///   uninitialised, and `Option<u64>` does not fit; `Option<bool>` and `Option<char>` store
///   `None` in a niche whose encoding the language does not promise. Use
///   `Option<NonZero<T>>`, a sentinel value, or a `(bool, T)` pair.
/// - references and raw pointers: a pointer turned into bits and back loses its provenance.
///   Put shared values in a [`TBox`](crate::TBox) (or an `Arc` inside one).
/// - anything not `Copy` or larger than 8 bytes (`String`, `Vec`, `u128`, ...): use a
///   [`TBox`](crate::TBox).
///
/// ```
/// use stm_core::{TVar, atomically};
/// use std::num::NonZeroU64;
///
/// let pos = TVar::new((0u32, 0u32));
/// atomically(|tx| tx.modify(&pos, |(x, y)| (x + 1, y + 2)));
/// assert_eq!(pos.load(), (1, 2));
///
/// let owner: TVar<Option<NonZeroU64>> = TVar::new(None);
/// atomically(|tx| tx.write(&owner, NonZeroU64::new(42)));
/// assert_eq!(owner.load().map(NonZeroU64::get), Some(42));
/// ```
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
///
/// Other types are refused, with a pointer to [`TBox`](crate::TBox):
///
/// ```compile_fail,E0277
/// let names = stm_core::TVar::new(String::new());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a `TVar`: it is not a `Word`",
    label = "not a `Word` (a `Copy` value of at most 8 bytes without padding)",
    note = "use `TBox<{Self}>` for a value that is not `Copy` or is larger than 8 bytes: read it with `tx.read_box`, replace it with `tx.write_box`",
    note = "a `Copy` type of at most 8 bytes without padding can implement `Word` (an `unsafe impl`: see its documentation)"
)]
pub unsafe trait Word: Copy + Send + Sync + 'static {
    /// Whether every byte of `Self` belongs to a field that is itself a `Word` without padding:
    /// `false` fails the build (the assertion in this module's `to_bits`). Only the tuple impls compute it; a hand-written
    /// `Word` promises it by its `unsafe impl`.
    #[doc(hidden)]
    const NO_PADDING: bool = true;

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
        );
        assert!(
            T::NO_PADDING,
            "a Word tuple must have no padding: its fields' sizes must add up to its size"
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

macro_rules! impl_word_nonzero {
    ($($t:ty),*) => {$(
        // SAFETY: `NonZero<$t>` has the size, alignment and bytes of `$t` (a primitive of at
        // most 8 bytes, no padding); bits copied from a valid value are non-zero, so valid.
        unsafe impl Word for NonZero<$t> {}
        // SAFETY: the standard library guarantees that `Option<NonZero<$t>>` has the size and
        // alignment of `$t`, that `Some(n)` has the bytes of `n` and `None` is all zero bytes
        // (the "null pointer optimisation" table of `core::option`): every byte is initialised,
        // and every pattern produced (0 or a valid `NonZero`) is a valid `Option` again.
        unsafe impl Word for Option<NonZero<$t>> {}
    )*};
}
impl_word_nonzero!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

macro_rules! impl_word_tuple {
    ($(($($f:ident),+))*) => {$(
        // SAFETY: every field is a `Word`: `Copy`, its bytes all initialised and reproducing a
        // valid value when copied back (the fields' own `unsafe impl`s, and their `NO_PADDING`
        // for nested tuples). A tuple has no validity invariant beyond its fields'. The only
        // bytes that may not belong to a field are padding between or after the fields, and
        // there is none exactly when the fields' sizes add up to the tuple's size (fields never
        // overlap): `NO_PADDING` computes that for this instantiation and `to_bits` (through
        // which every `TVar` value goes, `TVar::new` included) fails the build when it is
        // false, as it does when the tuple is larger than 8 bytes. So a tuple that reaches the
        // runtime meets the whole contract.
        unsafe impl<$($f: Word),+> Word for ($($f,)+) {
            const NO_PADDING: bool =
                $($f::NO_PADDING &&)+ 0 $(+ size_of::<$f>())+ == size_of::<Self>();
        }
    )*};
}
impl_word_tuple! {
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
    (A, B, C, D, E, F, G, H)
}

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
    fn nonzero_and_their_options_round_trip() {
        use core::num::{NonZeroI8, NonZeroU32, NonZeroU64, NonZeroUsize};
        round_trip(NonZeroU64::new(u64::MAX).unwrap());
        round_trip(NonZeroI8::new(-1).unwrap());
        round_trip(NonZeroU64::new(7));
        round_trip(None::<NonZeroU64>);
        round_trip(None::<NonZeroU32>);
        round_trip(NonZeroUsize::new(3));
        // `None` is all zero bytes, `Some(n)` the bytes of `n`.
        assert_eq!(to_bits(None::<NonZeroU64>), 0);
        assert_eq!(to_bits(NonZeroU32::new(0xdead_beef)), 0xdead_beef);
    }

    #[test]
    fn tuples_round_trip() {
        use core::num::NonZeroU32;
        round_trip((u32::MAX, 7u32));
        round_trip((1u16, 2u16, 3u16, u16::MAX));
        round_trip((1u8, 2u8, 3u8, 4u8, 5u8, 6u8, 7u8, 8u8));
        round_trip((true, false));
        round_trip((-1.5f32, NonZeroU32::new(9)));
        round_trip((1u32, 2u16, 3u8, true));
        round_trip(((1u8, 2u8), 3u16, -4i32));
        round_trip(((), u64::MAX));
        round_trip(('x', None::<NonZeroU32>));
    }

    #[test]
    fn padding_is_detected_in_tuples_and_their_fields() {
        // Checked when this test is compiled.
        const { assert!(<(u32, u32) as Word>::NO_PADDING) };
        const { assert!(<(u32, u16, u8, bool) as Word>::NO_PADDING) };
        const { assert!(<((u8, u8), u16) as Word>::NO_PADDING) };
        // 5 bytes of fields in 8.
        const { assert!(!<(u8, u32) as Word>::NO_PADDING) };
        // 3 bytes of fields in 4 (a trailing padding byte).
        const { assert!(!<(u16, u8) as Word>::NO_PADDING) };
        // The outer tuple is exactly filled (4 + 2), but its first field has a padding byte.
        const { assert!(!<((u8, u16), u16) as Word>::NO_PADDING) };
    }

    #[cfg(not(loom))]
    mod prop {
        use super::round_trip;
        use crate::{TVar, atomically};
        use core::num::NonZeroU64;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn tuples_and_options_round_trip(
                a in any::<(u32, u32)>(),
                b in any::<(u16, u16, u16, u16)>(),
                c in any::<(u8, i8, bool, u8, u16)>(),
                d in any::<Option<NonZeroU64>>(),
                e in any::<(i32, char)>(),
            ) {
                round_trip(a);
                round_trip(b);
                round_trip(c);
                round_trip(d);
                round_trip(e);
                // And through a transaction and a commit.
                let v = TVar::new((0u32, 0u32));
                let o: TVar<Option<NonZeroU64>> = TVar::new(None);
                atomically(|tx| {
                    tx.write(&v, a)?;
                    tx.write(&o, d)?;
                    assert_eq!(tx.read(&v)?, a);
                    assert_eq!(tx.read(&o)?, d);
                    Ok(())
                });
                prop_assert_eq!(v.load(), a);
                prop_assert_eq!(o.load(), d);
            }
        }
    }

    #[test]
    fn small_values_zero_the_rest() {
        assert_eq!(to_bits(true) >> 8, 0);
        assert_eq!(to_bits(-1i8) >> 8, 0);
    }
}
