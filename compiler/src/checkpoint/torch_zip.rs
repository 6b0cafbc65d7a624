//! placeholder: being written
use super::{CheckpointError, RawTensor};
/// placeholder
pub fn read_torch_zip(path: &std::path::Path) -> Result<Vec<(String, RawTensor)>, CheckpointError> {
    Err(CheckpointError::Format { path: path.to_path_buf(), detail: "not implemented yet".into() })
}
