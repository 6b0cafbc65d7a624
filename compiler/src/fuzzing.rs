//! What each fuzz target in `fuzz/` does with its input, as plain functions, so that the test
//! suite can replay crash inputs outside libFuzzer (`compiler/tests/fuzz_regressions.rs` runs every file
//! under `fuzz/regressions/` and `fuzz/seeds/` through them).
//!
//! Each function feeds untrusted bytes to a loader and, when the loader accepts them, goes on
//! as far as a user's command would (lower, verify, build the executor, run a few tokens): an
//! `Err` anywhere is the expected outcome, a panic, abort or hang is a bug. Each returns whether
//! the input made it all the way through (the seeds must).

use std::path::{Path, PathBuf};

use ir::VerifiedGraph;
use runtime::Executor;

/// The restricted unpickler on a `data.pkl`.
pub fn pickle(data: &[u8]) -> bool {
    crate::checkpoint::pickle::read_state_dict(data, Path::new("fuzz/data.pkl")).is_ok()
}

/// The `pytorch_model.bin` reader (zip archive, unpickler, storages and strided views) on a
/// file holding `data`.
pub fn torch_zip(data: &[u8]) -> bool {
    let path = scratch_dir().join("pytorch_model.bin");
    std::fs::write(&path, data).is_ok() && crate::checkpoint::torch_zip::read_torch_zip(&path).is_ok()
}

/// Splits a checkpoint input: a little-endian `u16` length `n`, `n` bytes of `config.json`,
/// then `model.safetensors`. `None` when the input is too short to hold the length.
pub fn split_checkpoint_input(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u16::from_le_bytes(data.get(..2)?.try_into().ok()?) as usize;
    let rest = &data[2..];
    Some(rest.split_at(n.min(rest.len())))
}

/// The transformers checkpoint loader (config + safetensors) on files written from `data`,
/// then lowering and a short forward pass of whatever loads.
pub fn checkpoint(data: &[u8]) -> bool {
    let Some((config, safetensors)) = split_checkpoint_input(data) else { return false };
    let dir = scratch_dir();
    // A write failure is the fuzzing machine's problem, not an input's: skip the input.
    if std::fs::write(dir.join("config.json"), config).is_err() || std::fs::write(dir.join("model.safetensors"), safetensors).is_err() {
        return false;
    }
    let Ok(ckpt) = crate::checkpoint::load_checkpoint(&dir) else { return false };
    let Ok((graph, weights)) = crate::lower::lower(&ckpt) else { return false };
    run_a_few_tokens(graph, weights)
}

/// The artifact reader on `data` with its trailing CRC-32 recomputed (otherwise almost every
/// mutation stops at the checksum), then the executor on whatever loads.
pub fn artifact(data: &[u8]) -> bool {
    let mut bytes = data.to_vec();
    if bytes.len() >= 4 {
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(art) = runtime::artifact::read_artifact_bytes(&bytes, Path::new("fuzz.qmb"), None) else { return false };
    run_a_few_tokens(art.graph, art.weights)
}

/// Verifies the graph, builds the executor and runs three tokens: prefill, then one decode step.
fn run_a_few_tokens(graph: ir::Graph, weights: runtime::Weights) -> bool {
    let Ok(graph) = VerifiedGraph::new(graph) else { return false };
    let Ok(exec) = Executor::new(graph, weights) else { return false };
    let vocab = exec.vocab().max(1) as i64;
    let mut state = exec.new_state(1);
    exec.forward(&mut state, &[0, 1 % vocab]).is_ok() && exec.forward(&mut state, &[2 % vocab]).is_ok()
}

/// The directory the file-based targets write their inputs to: one per thread (tests replay
/// inputs on several), reused across inputs; the caller removes it when done.
pub fn scratch_dir() -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let dir = std::env::temp_dir().join(format!("quamba-fuzz-{}-{thread}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
