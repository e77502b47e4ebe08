//! Criterion benchmarks
#![forbid(unsafe_code)]
