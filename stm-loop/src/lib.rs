//! stm-loop: placeholder crate doc, replaced by the real crate.
