//! stm-log: placeholder crate doc, replaced by the real crate.
