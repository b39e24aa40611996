//! Benchmarks of the STM runtime (filled in by the benches issue).
