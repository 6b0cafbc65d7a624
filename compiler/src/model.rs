//! Opening a model to run: a checkpoint directory (loaded, lowered, verified, executed in FP32)
//! or a compiled `.qmb` artifact (executed by the integer reference executor).

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

/// A model ready to execute on the CPU.
pub struct FpModel {
    /// The architecture.
    pub config: ModelConfig,
    /// The executor over the verified graph.
    pub executor: Executor,
    /// The tokenizer, if the directory has `tokenizer.json` or the artifact embeds one.
    pub tokenizer: Option<Tokenizer>,
    /// What was opened, for messages: "checkpoint (f32)" or the artifact's target.
    pub kind: String,
    /// A GPU artifact's kernels compiled ahead of time.
    pub cuda: Option<crate::artifact::CudaCode>,
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
    /// The artifact could not be opened.
    #[error(transparent)]
    Artifact(#[from] crate::CompileError),
}

impl FpModel {
    /// Opens a checkpoint directory (either layout) or, when `path` is a file, a `.qmb` artifact.
    pub fn open(path: &Path) -> Result<FpModel, OpenError> {
        FpModel::open_with(path, runtime::KernelBackend::Jit)
    }

    /// [`FpModel::open`], choosing what runs the integer ops of an artifact on the CPU.
    pub fn open_with(path: &Path, backend: runtime::KernelBackend) -> Result<FpModel, OpenError> {
        if path.is_file() {
            let art = crate::artifact::open_with(path, None, backend)?;
            return Ok(FpModel { config: art.info.config, executor: art.executor, tokenizer: art.tokenizer, kind: format!("artifact {}", art.target), cuda: art.info.cuda });
        }
        let ckpt = load_checkpoint(path)?;
        let (graph, weights) = lower(&ckpt)?;
        let executor = Executor::new(VerifiedGraph::new(graph)?, weights)?;
        let tokenizer = ckpt.tokenizer_path().map(|p| Tokenizer::from_file(&p)).transpose()?;
        Ok(FpModel { config: ckpt.config, executor, tokenizer, kind: "checkpoint (f32)".into(), cuda: None })
    }
}
