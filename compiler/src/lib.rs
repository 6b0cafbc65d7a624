//! quambac's library: checkpoint loading, lowering to the IR, the Quamba2 passes, and artifacts.
//!
//! ```text
//!  checkpoint dir ─load─▶ Checkpoint ─lower─▶ Program (ir::Graph + Weights)
//!     (safetensors | pytorch_model.bin)            │
//!                                  passes (pipeline.rs, verified after each)
//!                                                  ▼
//!                       quantized Program ─write─▶ model.qmb ─▶ runtime
//! ```
#![forbid(unsafe_code)]

pub mod artifact;
pub mod calibrate;
pub mod checkpoint;
pub mod compile;
pub mod diagnose;
pub mod fuzzing;
pub mod lower;
pub mod model;
pub mod passes;
pub mod pipeline;
pub mod program;
pub mod quant;
pub mod sensitivity;
pub mod synth;
pub mod target;

use std::path::PathBuf;

/// Compilation errors.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Loading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// Lowering failed.
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
    /// Building a node failed (a pass bug: operand types did not fit).
    #[error("building the graph: {0}")]
    Ir(#[from] ir::IrError),
    /// A graph failed verification.
    #[error("invalid graph: {0}")]
    Verify(#[from] ir::VerifyErrors),
    /// A pass left the graph invalid (a compiler bug).
    #[error("pass `{pass}` produced invalid IR: {errors}")]
    PassBrokeIr {
        /// The pass.
        pass: &'static str,
        /// What the verifier found.
        errors: ir::VerifyErrors,
    },
    /// The runtime refused the program.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The graph does not have the structure a pass expects.
    #[error("unexpected graph structure: {0}")]
    Structure(String),
    /// Calibration could not run (e.g. too little text).
    #[error("calibration: {0}")]
    Calibration(String),
    /// An artifact could not be written or read.
    #[error(transparent)]
    Artifact(runtime::artifact::ArtifactError),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
