//! Image engine benchmarks (placeholder while the engine lands).
fn main() {}
