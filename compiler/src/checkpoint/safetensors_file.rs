//! Reading safetensors checkpoints: one file, or shards named by `model.safetensors.index.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ir::DType;
use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, RawTensor};

/// The index file transformers writes beside sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";

/// Reads every tensor of one safetensors file, in the file's order.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, RawTensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), detail: format!("not a valid safetensors file: {e}") })?;
    let mut named: Vec<_> = file.tensors();
    named.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
    named
        .into_iter()
        .map(|(name, view)| {
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                Dtype::I64 => DType::I64,
                Dtype::I32 => DType::I32,
                Dtype::I8 => DType::I8,
                other => {
                    return Err(CheckpointError::DType { path: path.to_path_buf(), name, dtype: format!("{other:?}") });
                }
            };
            Ok((name, RawTensor { dtype, shape: view.shape().to_vec(), data: view.data().to_vec() }))
        })
        .collect()
}

/// Reads the shards listed in `index_path` (a `model.safetensors.index.json`), all tensors together.
pub fn read_sharded(index_path: &Path) -> Result<Vec<(String, RawTensor)>, CheckpointError> {
    let text = std::fs::read_to_string(index_path).map_err(|source| CheckpointError::Io { path: index_path.to_path_buf(), source })?;
    let bad = |detail: String| CheckpointError::Format { path: index_path.to_path_buf(), detail };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("missing `weight_map` object".into()))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("shard of `{tensor}` is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!("shard name `{file}` must be a plain file name in the checkpoint directory")));
        }
        shards.insert(dir.join(file));
    }
    let mut all = Vec::new();
    for shard in &shards {
        for (name, t) in read_safetensors(shard)? {
            match map.get(&name).and_then(|f| f.as_str()) {
                Some(f) if dir.join(f) == *shard => all.push((name, t)),
                _ => return Err(CheckpointError::Format { path: shard.clone(), detail: format!("tensor `{name}` is not listed for this shard in {INDEX_FILE}") }),
            }
        }
    }
    let found: BTreeSet<&String> = all.iter().map(|(n, _)| n).collect();
    if let Some(missing) = map.keys().find(|k| !found.contains(k)) {
        return Err(CheckpointError::MissingTensor { path: index_path.to_path_buf(), name: missing.clone() });
    }
    Ok(all)
}

/// The checkpoint files of a transformers-layout directory: the index if present, else the single file.
pub fn transformers_source(dir: &Path) -> Option<PathBuf> {
    [INDEX_FILE, SINGLE_FILE].iter().map(|f| dir.join(f)).find(|p| p.is_file())
}
