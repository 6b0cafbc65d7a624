//! Opening a checkpoint directory as a ready-to-run FP32 model: load, lower, verify, and build the
//! CPU executor, plus the tokenizer that sits beside the weights.

use std::path::{Path, PathBuf};

use ir::VerifiedGraph;
use runtime::tokenizer::Tokenizer;
use runtime::Executor;

use crate::checkpoint::{load_checkpoint, ModelConfig};
use crate::lower::lower;

/// The model the repository ships, used when no model is named.
pub fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/mamba2-tiny")
}

/// A checkpoint ready to execute in f32 on the CPU.
pub struct FpModel {
    /// The architecture.
    pub config: ModelConfig,
    /// The executor over the verified graph.
    pub executor: Executor,
    /// The tokenizer, if the directory has `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
}

/// Why a model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Loading or lowering failed.
    #[error(transparent)]
    Lower(#[from] crate::lower::LowerError),
    /// Loading failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The lowered graph failed verification (a compiler bug).
    #[error("the lowered graph is invalid: {0}")]
    Verify(#[from] ir::VerifyErrors),
    /// The runtime refused the graph or the tokenizer.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}

impl FpModel {
    /// Loads `dir` (either layout) and prepares it for execution.
    pub fn open(dir: &Path) -> Result<FpModel, OpenError> {
        let ckpt = load_checkpoint(dir)?;
        let (graph, weights) = lower(&ckpt)?;
        let executor = Executor::new(VerifiedGraph::new(graph)?, weights)?;
        let tokenizer = ckpt.tokenizer_path().map(|p| Tokenizer::from_file(&p)).transpose()?;
        Ok(FpModel { config: ckpt.config, executor, tokenizer })
    }
}
