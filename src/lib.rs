//! Umbrella crate: re-exports the workspace crates for the top-level `tests/` and `examples/`.
pub use compiler;
pub use ir;
pub use runtime;
