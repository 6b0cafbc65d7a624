//! Why the method works on a given model, measured: the per-channel ranges of the activations
//! 8-bit quantization reads (the SSM input x and the out_proj input) before and after Quamba2's
//! float rewrites, and how far each layer's output drifts once quantized, for Quamba2 and for
//! naive per-tensor quantization. `quambac inspect --plot` draws these numbers.

use std::collections::HashMap;

use ir::{Op, ValueId};
use runtime::tokenizer::Tokenizer;

use crate::calibrate::{calibrate, CalibrationSet, Request};
use crate::checkpoint::Checkpoint;
use crate::compile::{compile, transform_float, CompileOptions};
use crate::passes::blocks::{blocks, Block};
use crate::program::Program;
use crate::target::Method;
use crate::CompileError;

/// One activation's per-channel max |x| over the calibration windows, in the float model and
/// after the float rewrites (in the order each program stores the channels), with the range
/// int8 quantization gives each channel (127 × its scale), naive and Quamba2.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChannelRanges {
    /// The float checkpoint.
    pub before: Vec<f32>,
    /// After the float rewrites.
    pub after: Vec<f32>,
    /// Naive quantization's int8 range per channel (`None` when the target keeps it in 16 bits).
    pub int8_range_naive: Option<Vec<f32>>,
    /// Quamba2's int8 range per channel, in the rewritten channel order.
    pub int8_range_quamba2: Option<Vec<f32>>,
}

/// The activations of one layer that 8-bit quantization reads.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerRanges {
    /// Layer index.
    pub layer: usize,
    /// SSM input x (Mamba2: heads sorted and clustered by the rewrites).
    pub ssm_input: ChannelRanges,
    /// out_proj input (after the rewrites: behind the online Hadamard transform).
    pub out_proj_input: ChannelRanges,
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
    let (float_blocks, rewritten_blocks) = (blocks(&float.graph)?, blocks(&rewritten.graph)?);
    let mut ranges = Vec::new();
    for (layer, ((x_b, o_b), (x_a, o_a))) in before.into_iter().zip(after).enumerate() {
        let (fb, rb) = (&float_blocks[layer], &rewritten_blocks[layer]);
        ranges.push(LayerRanges {
            layer,
            ssm_input: ChannelRanges { before: x_b, after: x_a, int8_range_naive: int8_range(&naive, fb.x), int8_range_quamba2: int8_range(&quamba2, rb.x) },
            out_proj_input: ChannelRanges {
                before: o_b,
                after: o_a,
                int8_range_naive: int8_range(&naive, out_proj_input(fb)),
                int8_range_quamba2: int8_range(&quamba2, out_proj_input(rb)),
            },
        });
    }
    let q2_err = layer_errors(&rewritten, &quamba2, &calib)?;
    let naive_err = layer_errors(&float, &naive, &calib)?;
    let errors = q2_err.into_iter().zip(naive_err).enumerate().map(|(layer, (quamba2, naive))| LayerError { layer, quamba2, naive }).collect();
    Ok(Diagnosis { target: opts.target.to_string(), windows: calib.windows.len(), window_len: opts.calib_len, ranges, errors })
}

/// The value out_proj reads: the online Hadamard's output when the rotation inserted one.
fn out_proj_input(b: &Block) -> ValueId {
    b.online_hadamard.unwrap_or(b.gate)
}

/// 127 × the scale of the `quantize` that reads `v` in `quantized`, per channel: `v` is the id
/// of the value in the float program the quantizing passes started from (they keep ids). `None`
/// when nothing quantizes `v` (16-bit activations).
fn int8_range(quantized: &Program, v: ValueId) -> Option<Vec<f32>> {
    let g = &quantized.graph;
    if !g.contains(v) {
        return None;
    }
    let width = g.node(v).ty.width()?;
    g.users(v).into_iter().find_map(|u| match g.node(u).op {
        Op::Quantize { scale } => {
            let scales = quantized.values(scale);
            match scales.len() {
                1 => Some(vec![127.0 * scales[0]; width]),
                n if n == width => Some(scales.iter().map(|s| 127.0 * s).collect()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// Per-channel max |x| of (the SSM input, the out_proj input) of one layer.
type LayerMaxima = (Vec<f32>, Vec<f32>);

/// Per layer, the per-channel max |x| of the SSM input and of the out_proj input.
fn channel_ranges(program: &Program, calib: &CalibrationSet) -> Result<Vec<LayerMaxima>, CompileError> {
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
