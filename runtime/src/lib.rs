//! # quamba runtime
//!
//! Executes a verified quamba graph. Today: the FP32 CPU executor ([`cpu::Executor`]), which is the
//! numerical oracle for every faster backend, plus tokenization, sampling, generation and
//! perplexity evaluation on top of it.

pub mod artifact;
pub mod cpu;
pub mod cuda;
pub mod generate;
pub mod hadamard;
pub mod model;
pub mod jit;
pub mod perplexity;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use cpu::{Executor, Logits, KernelBackend, State};
pub use weights::{WeightData, Weights};

/// Runtime errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Weight data does not match the graph's declarations (a caller bug or a corrupt artifact).
    #[error("weights: {0}")]
    Weights(String),
    /// The inputs of a call are inconsistent (token count vs batch, token ids out of range...).
    #[error("input: {0}")]
    Input(String),
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A thread pool could not be built.
    #[error("thread pool: {0}")]
    Threads(String),
    /// A worker thread failed inside a computation (a bug: the outputs of that call are lost).
    #[error("internal: {0}")]
    Internal(String),
}
