//! Loading a checkpoint directory: detect the layout, read the config and the tensors, normalise
//! tensor names to the transformers spelling, and check every tensor against the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ir::Family;

use super::config::{Layout, ModelConfig};
use super::{safetensors_file, torch_zip, CheckpointError, RawTensor};

/// The state-spaces weights file.
pub const TORCH_FILE: &str = "pytorch_model.bin";

/// A loaded, shape-checked checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The architecture.
    pub config: ModelConfig,
    /// Tensors by transformers-style name (`backbone.embeddings.weight`, ...).
    pub tensors: BTreeMap<String, RawTensor>,
}

impl Checkpoint {
    /// A tensor widened to f32. The name must be one the shape check guaranteed.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        let t = self.tensors.get(name).ok_or_else(|| CheckpointError::MissingTensor { path: self.dir.clone(), name: name.into() })?;
        t.to_f32().ok_or_else(|| CheckpointError::DType { path: self.dir.clone(), name: name.into(), dtype: t.dtype.to_string() })
    }

    /// The tokenizer file beside the weights, if there is one.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer.json")).filter(|p| p.is_file())
    }
}

/// Loads the checkpoint in `dir`, whichever layout it uses.
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a checkpoint directory (expected config.json and weights inside)"),
        });
    }
    // The config is read before the weights: it is small, and a wrong config is the likelier
    // mistake, so it is reported without first reading (or failing on) gigabytes of tensors.
    let torch_file = dir.join(TORCH_FILE);
    let source = safetensors_file::transformers_source(dir);
    let layout = match &source {
        Some(_) => Layout::Transformers,
        None if torch_file.is_file() => Layout::StateSpaces,
        None => {
            return Err(CheckpointError::Format {
                path: dir.to_path_buf(),
                detail: format!("no weights found: expected {}, {} or {TORCH_FILE}", safetensors_file::SINGLE_FILE, safetensors_file::INDEX_FILE),
            })
        }
    };
    let config = ModelConfig::read(dir, layout)?;
    let raw = match source {
        Some(src) if src.ends_with(safetensors_file::INDEX_FILE) => safetensors_file::read_sharded(&src)?,
        Some(src) => safetensors_file::read_safetensors(&src)?,
        None => torch_zip::read_torch_zip(&torch_file)?,
    };
    let mut tensors = BTreeMap::new();
    for (name, t) in raw {
        let name = normalise_name(&name);
        if tensors.insert(name.clone(), t).is_some() {
            return Err(CheckpointError::Format { path: dir.to_path_buf(), detail: format!("tensor `{name}` appears twice") });
        }
    }
    check_tensors(dir, &config, &mut tensors)?;
    Ok(Checkpoint { dir: dir.to_path_buf(), config, tensors })
}

/// state-spaces names the embedding `backbone.embedding.weight`; transformers `backbone.embeddings.weight`.
fn normalise_name(name: &str) -> String {
    match name {
        "backbone.embedding.weight" => "backbone.embeddings.weight".to_string(),
        other => other.to_string(),
    }
}

/// Every tensor a model with this config has, with its shape.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![("backbone.embeddings.weight".to_string(), vec![cfg.padded_vocab, cfg.d_model])];
    let (d, di, n) = (cfg.d_model, cfg.d_inner, cfg.d_state);
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("backbone.layers.{i}.{s}");
        out.push((p("norm.weight"), vec![d]));
        out.push((p("mixer.in_proj.weight"), vec![cfg.in_proj_dim(), d]));
        if cfg.use_bias {
            out.push((p("mixer.in_proj.bias"), vec![cfg.in_proj_dim()]));
            out.push((p("mixer.out_proj.bias"), vec![d]));
        }
        out.push((p("mixer.conv1d.weight"), vec![cfg.conv_dim(), 1, cfg.d_conv]));
        if cfg.use_conv_bias {
            out.push((p("mixer.conv1d.bias"), vec![cfg.conv_dim()]));
        }
        out.push((p("mixer.out_proj.weight"), vec![d, di]));
        match cfg.family {
            Family::Mamba1 => {
                out.push((p("mixer.x_proj.weight"), vec![cfg.dt_rank + 2 * n, di]));
                out.push((p("mixer.dt_proj.weight"), vec![di, cfg.dt_rank]));
                out.push((p("mixer.dt_proj.bias"), vec![di]));
                out.push((p("mixer.A_log"), vec![di, n]));
                out.push((p("mixer.D"), vec![di]));
            }
            Family::Mamba2 => {
                out.push((p("mixer.dt_bias"), vec![cfg.n_heads]));
                out.push((p("mixer.A_log"), vec![cfg.n_heads]));
                out.push((p("mixer.D"), vec![cfg.n_heads]));
                out.push((p("mixer.norm.weight"), vec![di]));
            }
        }
    }
    out.push(("backbone.norm_f.weight".to_string(), vec![d]));
    if !cfg.tied {
        out.push(("lm_head.weight".to_string(), vec![cfg.padded_vocab, d]));
    }
    out
}

fn check_tensors(dir: &Path, cfg: &ModelConfig, tensors: &mut BTreeMap<String, RawTensor>) -> Result<(), CheckpointError> {
    let expected = expected_tensors(cfg);
    for (name, shape) in &expected {
        let t = tensors.get(name).ok_or_else(|| CheckpointError::MissingTensor { path: dir.to_path_buf(), name: name.clone() })?;
        if &t.shape != shape {
            return Err(CheckpointError::Shape { path: dir.to_path_buf(), name: name.clone(), expected: shape.clone(), found: t.shape.clone() });
        }
        let count = t.count_non_finite().ok_or_else(|| CheckpointError::DType { path: dir.to_path_buf(), name: name.clone(), dtype: t.dtype.to_string() })?;
        if count > 0 {
            return Err(CheckpointError::NonFinite { path: dir.to_path_buf(), name: name.clone(), count });
        }
    }
    // A tied model may still carry a copy of the head (some exporters write it); the embedding wins.
    if cfg.tied {
        tensors.remove("lm_head.weight");
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.iter().any(|(n, _)| n == *k)) {
        return Err(CheckpointError::UnexpectedTensor { path: dir.to_path_buf(), name: extra.clone(), family: cfg.family.name() });
    }
    Ok(())
}
