//! Test-support crate for the lenet workspace: it owns the cross-crate
//! golden tests in `tests/` and the criterion benchmarks in `benches/`.
