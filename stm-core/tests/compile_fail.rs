//! Compile-fail suite for the branded transaction lifetime (issue #11): every program in
//! `tests/ui/*_fail.rs` would reach undefined behaviour if it compiled, and must be refused by
//! the borrow checker; each has a twin in `tests/ui/*_ok.rs` that does the same thing the right
//! way and must compile and run. Two cases are about the `Word` bound instead (issue #15): the
//! message that points at `TBox`, and a padded tuple refused. `tests/ui/README.md` lists them.
//!
//! Regenerate the expected errors with
//! `TRYBUILD=overwrite cargo test -p stm-core --test compile_fail`, then read them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*_fail.rs");
    t.pass("tests/ui/*_ok.rs");
}
