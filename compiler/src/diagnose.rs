//! Why the method works on a given model, measured: the per-channel ranges of the activations
//! 8-bit quantization reads (the SSM input x and the out_proj input) before and after Quamba2's
//! float rewrites, and how far each layer's output drifts once quantized, for Quamba2 and for
//! naive per-tensor quantization. `quambac inspect --plot` draws these numbers.

use std::collections::HashMap;

use ir::ValueId;
use runtime::tokenizer::Tokenizer;

use crate::calibrate::{calibrate, CalibrationSet, Request};
use crate::checkpoint::Checkpoint;
use crate::compile::{compile, transform_float, CompileOptions};
use crate::passes::blocks::{blocks, Block};
use crate::program::Program;
use crate::target::Method;
use crate::CompileError;

/// Per-channel max |activation| of one layer, in the order each program stores the channels.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerRanges {
    /// Layer index.
    pub layer: usize,
    /// SSM input x of the float checkpoint.
    pub ssm_input_before: Vec<f32>,
    /// SSM input x after the float rewrites (Mamba2: heads sorted and clustered).
    pub ssm_input_after: Vec<f32>,
    /// out_proj input of the float checkpoint.
    pub out_proj_input_before: Vec<f32>,
    /// out_proj input after the float rewrites (behind the online Hadamard transform).
    pub out_proj_input_after: Vec<f32>,
}

/// Relative error ‖q − f‖² / ‖f‖² of each layer's output (the residual stream leaving the block;
/// it accumulates the error of every earlier layer), quantized vs float.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerError {
    /// Layer index.
    pub layer: usize,
    /// The Quamba2 recipe, against the float model in the same (rotated) basis.
    pub quamba2: f64,
    /// Naive per-tensor min-max quantization with round-to-nearest weights.
    pub naive: f64,
}

/// Everything `inspect --plot` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Diagnosis {
    /// The compilation target the errors are measured for.
    pub target: String,
    /// Calibration windows used (also the windows the errors are measured on).
    pub windows: usize,
    /// Tokens per window.
    pub window_len: usize,
    /// Per-layer channel ranges.
    pub ranges: Vec<LayerRanges>,
    /// Per-layer output error.
    pub errors: Vec<LayerError>,
}

/// Measures `ckpt` under `opts` (its `method` is ignored: both Quamba2 and naive are compiled).
pub fn diagnose(ckpt: &Checkpoint, tokenizer: &Tokenizer, opts: &CompileOptions) -> Result<Diagnosis, CompileError> {
    let calib = CalibrationSet::from_text(tokenizer, &opts.calib_text, opts.calib_samples, opts.calib_len, &opts.calib_source)?;
    let with = |method| CompileOptions { method, emit_ir: None, ..opts.clone() };
    let float = Program::from_checkpoint(ckpt)?;
    let rewritten = transform_float(ckpt, tokenizer, &with(Method::Quamba2))?;
    let quamba2 = compile(ckpt, tokenizer, &with(Method::Quamba2))?;
    let naive = compile(ckpt, tokenizer, &with(Method::Naive))?;

    let before = channel_ranges(&float, &calib)?;
    let after = channel_ranges(&rewritten, &calib)?;
    let ranges = before
        .into_iter()
        .zip(after)
        .enumerate()
        .map(|(layer, ((x_b, o_b), (x_a, o_a)))| LayerRanges { layer, ssm_input_before: x_b, ssm_input_after: x_a, out_proj_input_before: o_b, out_proj_input_after: o_a })
        .collect();
    let q2_err = layer_errors(&rewritten, &quamba2, &calib)?;
    let naive_err = layer_errors(&float, &naive, &calib)?;
    let errors = q2_err.into_iter().zip(naive_err).enumerate().map(|(layer, (quamba2, naive))| LayerError { layer, quamba2, naive }).collect();
    Ok(Diagnosis { target: opts.target.to_string(), windows: calib.windows.len(), window_len: opts.calib_len, ranges, errors })
}

/// The value out_proj reads: the online Hadamard's output when the rotation inserted one.
fn out_proj_input(b: &Block) -> ValueId {
    b.online_hadamard.unwrap_or(b.gate)
}

/// Per layer, the per-channel max |x| of the SSM input and of the out_proj input.
fn channel_ranges(program: &Program, calib: &CalibrationSet) -> Result<Vec<(Vec<f32>, Vec<f32>)>, CompileError> {
    let layers = blocks(&program.graph)?;
    let requests: HashMap<ValueId, Request> = layers.iter().flat_map(|b| [(b.x, Request::default()), (out_proj_input(b), Request::default())]).collect();
    let mut stats = calibrate(program, calib, &requests, false, "ranges")?;
    let mut take = |v: ValueId| stats.remove(&v).map(|s| s.channel_absmax).ok_or_else(|| CompileError::Structure(format!("calibration never saw {v}")));
    layers.iter().map(|b| Ok((take(b.x)?, take(out_proj_input(b))?))).collect()
}

/// Per layer, ‖q − f‖² / ‖f‖² of the block outputs of `quantized` against `reference` over
/// `calib`, where `quantized` is `reference` after the quantizing passes.
///
/// The block view needs float linears, so the outputs are located in `reference`; the
/// quantizing passes rewire operands but keep the residual adds' ids (the graph's ids are
/// stable), which is checked here rather than assumed.
fn layer_errors(reference: &Program, quantized: &Program, calib: &CalibrationSet) -> Result<Vec<f64>, CompileError> {
    let outputs: Vec<ValueId> = blocks(&reference.graph)?.iter().map(|b| b.residual_out).collect();
    for &v in &outputs {
        let kept = quantized.graph.contains(v) && quantized.graph.node(v).op.name() == reference.graph.node(v).op.name();
        if !kept {
            return Err(CompileError::Structure(format!("the quantized graph no longer has the block output {v}")));
        }
    }
    let (ref_exec, q_exec) = (reference.executor()?, quantized.executor()?);
    let mut err = vec![0.0f64; outputs.len()];
    let mut norm = vec![0.0f64; outputs.len()];
    for window in &calib.windows {
        let ref_values = observe(&ref_exec, window, &outputs)?;
        let q_values = observe(&q_exec, window, &outputs)?;
        for (layer, (f, q)) in ref_values.iter().zip(&q_values).enumerate() {
            for (a, b) in f.iter().zip(q) {
                err[layer] += f64::from(b - a).powi(2);
                norm[layer] += f64::from(*a).powi(2);
            }
        }
    }
    Ok(err.iter().zip(&norm).map(|(e, n)| if *n > 0.0 { e / n } else { 0.0 }).collect())
}

/// The data of `values` (in that order) when `exec` runs `window` from a fresh state.
fn observe(exec: &runtime::Executor, window: &[i64], values: &[ValueId]) -> Result<Vec<Vec<f32>>, CompileError> {
    let mut seen: HashMap<ValueId, Vec<f32>> = HashMap::new();
    let mut state = exec.new_state(1);
    exec.forward_observed(&mut state, window, &mut |v, data, _| {
        if values.contains(&v) {
            seen.insert(v, data.to_vec());
        }
    })?;
    values.iter().map(|v| seen.remove(v).ok_or_else(|| CompileError::Structure(format!("the executor never produced {v} in f32")))).collect()
}
