//! Loading real Mamba checkpoints in the two layouts users have:
//!
//! - transformers: `config.json` + `model.safetensors`, or shards listed in
//!   `model.safetensors.index.json`;
//! - state-spaces (mamba_ssm): `config.json` with `ssm_cfg` + `pytorch_model.bin`, a PyTorch zip
//!   archive read by a restricted unpickler that never runs or imports anything the file names.
//!
//! Every tensor is checked against the shapes the config implies; a mismatch names the tensor,
//! the expected and the found shape.

pub mod config;
pub mod load;
pub mod pickle;
pub mod safetensors_file;
pub mod torch_zip;

use std::path::PathBuf;

use ir::DType;

pub use config::{Layout, ModelConfig};
pub use load::{load_checkpoint, Checkpoint};

/// A tensor as read from a file: dtype, shape and contiguous row-major little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Stored element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size_bytes()` bytes, row-major, little-endian.
    pub data: Vec<u8>,
}

impl RawTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values widened to f32 (exact for f16 and bf16). Integer tensors are refused.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(self.f32_values()?.collect())
    }

    /// How many values are NaN or infinite, counted without materialising an f32 copy.
    pub fn count_non_finite(&self) -> Option<usize> {
        Some(self.f32_values()?.filter(|v| !v.is_finite()).count())
    }

    /// The values, decoded lazily from the stored bytes; None for integer tensors.
    fn f32_values(&self) -> Option<Box<dyn Iterator<Item = f32> + '_>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 => Box::new(d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            DType::F16 => Box::new(d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::BF16 => Box::new(d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            DType::I64 | DType::I32 | DType::I8 | DType::I4 => return None,
        })
    }
}

/// Why a checkpoint could not be loaded. Every variant names the file or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a well-formed checkpoint of its kind (truncated, corrupt, inconsistent).
    #[error("{path}: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A pickle names a global outside the allow-list; it was refused, never imported or run.
    #[error("{path}: refused pickle global `{module}.{name}`: only PyTorch tensor-rebuild functions and storage types are allowed")]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// The module the pickle asked for.
        module: String,
        /// The attribute the pickle asked for.
        name: String,
    },
    /// `config.json` is missing a field, has a bad value, or describes an unknown model.
    #[error("{path}: {detail}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tensor the config requires is absent.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// The expected tensor name.
        name: String,
    },
    /// The checkpoint holds a tensor the model does not use.
    #[error("{path}: unexpected tensor `{name}` (not part of a {family} model with this config)")]
    UnexpectedTensor {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The model family.
        family: &'static str,
    },
    /// A tensor's shape disagrees with the config.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype we do not load (only f32, f16, bf16 weights are accepted).
    #[error("{path}: tensor `{name}` has dtype {dtype}, which this model cannot use (weights must be f32, f16 or bf16)")]
    DType {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A weight holds NaN or infinity.
    #[error("{path}: tensor `{name}` contains {count} non-finite values (NaN or Inf)")]
    NonFinite {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// How many values are not finite.
        count: usize,
    },
}
