//! CUDA plans of checkpoints, for the tests that read the generated kernels.

use std::path::Path;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::program::Program;
use compiler::target::Target;
use kernels::cuda::{plan, CudaPlan};
use runtime::tokenizer::Tokenizer;

/// The plan of the checkpoint in `dir` (with its `tokenizer.json`): FP where `target` is None,
/// else compiled for it (no GPTQ, two calibration samples of 64 tokens of the embedded text).
pub fn plan_of_checkpoint(dir: &Path, target: Option<&str>) -> CudaPlan {
    plan_with_states(dir, target, false)
}

/// [`plan_of_checkpoint`] with A8 layers keeping their SSM states in int8 (`--int8-states`).
pub fn plan_with_int8_states(dir: &Path, target: &str) -> CudaPlan {
    plan_with_states(dir, Some(target), true)
}

fn plan_with_states(dir: &Path, target: Option<&str>, int8_states: bool) -> CudaPlan {
    let ckpt = load_checkpoint(dir).unwrap();
    let program = match target {
        None => Program::from_checkpoint(&ckpt).unwrap(),
        Some(target) => {
            let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
            let calib = std::fs::read_to_string(compiler::model::default_model_dir().join("../text/calib.txt")).unwrap();
            let opts = CompileOptions { calib_samples: 2, calib_len: 64, gptq: false, int8_states, ..CompileOptions::new(target.parse::<Target>().unwrap(), calib, "calib.txt") };
            compile(&ckpt, &tok, &opts).unwrap()
        }
    };
    plan(program.executor().unwrap().verified_graph()).unwrap()
}

/// A temporary folder for a random checkpoint, with the embedded model's tokenizer.
pub fn random_checkpoint_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(compiler::model::default_model_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    dir
}

/// The plan of a random one-layer Mamba1 compiled for `target`: d_model 192, so that d_inner
/// (384) is three Hadamard blocks of 128, as mamba-2.8b's 5120 is five of 1024; dt rank 12.
/// A random Mamba1's plan; quantized targets keep int8 states, so that its snapshots pin those
/// kernels (the embedded mamba2-tiny's pin the f32 ones).
pub fn mamba1_plan_of(target: Option<&str>) -> CudaPlan {
    let dir = random_checkpoint_dir();
    super::random_checkpoint::write_random_mamba1(dir.path(), 192, 1, 8192, 16, 12, 2, 4, true, 31);
    match target {
        Some(t) if !t.ends_with("w4a16") => plan_with_int8_states(dir.path(), t),
        _ => plan_of_checkpoint(dir.path(), target),
    }
}

/// The plan of a random one-layer Mamba2 compiled for `target`: d_model 192, so that d_inner
/// (384) is three Hadamard blocks of 128 in one norm group, as mamba2-2.7b's 5120 is five of
/// 1024; twelve heads of 32, d_state 32.
pub fn mamba2_split_plan_of(target: &str) -> CudaPlan {
    let dir = random_checkpoint_dir();
    super::random_checkpoint::write_random_mamba2(dir.path(), 192, 1, 8192, 32, 32, 1, 2, 4, 64, true, 37);
    plan_with_int8_states(dir.path(), target)
}
