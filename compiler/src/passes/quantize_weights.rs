//! Weight quantization: every `linear` and the `lm_head` become `qlinear`, the embedding becomes
//! `qembedding`. 4-bit weights use groups of 128 input channels (per channel when the layer is
//! narrower) and GPTQ when enabled; 8-bit weights are per output channel, round-to-nearest.
//! Mamba1's x_proj is always round-to-nearest and its dt_proj always 8-bit, as in Quamba.
//!
//! A linear whose operand is `dequantize(quantize(x))` with one per-tensor scale reads the int8
//! value directly (`act_scale` set): the integer kernel path. Otherwise it reads f32 (A16).

use std::collections::HashMap;

use ir::{DType, Op, ValueId, WeightId};

use super::blocks::blocks;
use super::{Pass, PassContext};
use crate::calibrate::{calibrate, Request};
use crate::program::Program;
use crate::quant::{group_size, quantize_gptq, quantize_rtn, QuantizedWeight};
use crate::CompileError;

/// GPTQ dampening, as a fraction of the mean Hessian diagonal.
const PERCDAMP: f64 = 0.01;

/// The pass.
pub struct QuantizeWeights;

/// How one weight is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Plan {
    bits: u8,
    gptq: bool,
    /// The weight is the vocabulary table (embedding and/or head): finer 4-bit groups.
    table: bool,
}

/// 4-bit group size of vocabulary tables. Every token's logit and embedding depends on its own
/// row alone, so rows get finer groups than the 128 of the block linears: measured on
/// mamba2-tiny W4A16, per-row (128) groups cost +4.9% perplexity.
const TABLE_GROUP: usize = 32;

impl Pass for QuantizeWeights {
    fn name(&self) -> &'static str {
        "quantize_weights"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        let bits = cx.target.precision.weight_bits();
        let layers = blocks(&program.graph)?;
        let rtn_only: Vec<ValueId> = layers.iter().filter_map(|b| b.x_proj).collect();
        let always_8bit: Vec<ValueId> = layers.iter().filter_map(|b| b.dt_proj).collect();
        let linears: Vec<ValueId> = program.graph.values().into_iter().filter(|v| matches!(program.graph.node(*v).op, Op::Linear { .. } | Op::LmHead { .. })).collect();
        // Heads are vocabulary tables (finer groups); a tied one is quantized once, for both uses.
        let heads: Vec<ValueId> = linears.iter().copied().filter(|v| matches!(program.graph.node(*v).op, Op::LmHead { .. })).collect();
        let plan_of = |v: &ValueId| {
            let b = if always_8bit.contains(v) { 8 } else { bits };
            let table = heads.contains(v);
            Plan { bits: b, gptq: cx.gptq && b == 4 && !rtn_only.contains(v) && !always_8bit.contains(v), table }
        };

        // GPTQ needs XᵀX of each such linear's (already fake-quantized) input.
        let requests: HashMap<ValueId, Request> = linears
            .iter()
            .filter(|v| plan_of(v).gptq)
            .map(|v| (program.graph.inputs(*v)[0], Request { percentile: None, hessian: true }))
            .collect();
        let hessians = if requests.is_empty() { HashMap::new() } else { calibrate(program, &cx.calib, &requests, cx.progress, "collecting GPTQ Hessians")? };

        let bar = if cx.progress { indicatif::ProgressBar::new(linears.len() as u64 + 1) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} quantizing weights [{bar:40}] {pos}/{len}  {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        let mut done: HashMap<(WeightId, Plan), (WeightId, WeightId, usize)> = HashMap::new();
        for v in linears {
            let plan = plan_of(&v);
            let (weight, bias) = match program.graph.node(v).op {
                Op::Linear { weight, bias } => (weight, bias),
                Op::LmHead { weight } => (weight, None),
                _ => unreachable!("filtered to linear and lm_head above"),
            };
            bar.set_message(program.graph.weight(weight).name.clone());
            let input = program.graph.inputs(v)[0];
            let hessian = hessians.get(&input).and_then(|s| s.hessian.as_deref().map(|h| (h, s.rows)));
            let (qw, scales, group) = quantized(program, &mut done, weight, plan, hessian)?;
            let (operand, act_scale) = int8_operand(program, input);
            let q = program.graph.add(Op::QLinear { weight: qw, scales, bias, group, act_scale }, &[operand])?;
            program.graph.replace_uses(v, q);
            program.graph.remove(v);
            bar.inc(1);
        }
        for v in program.graph.values() {
            if let Op::Embedding { table } = program.graph.node(v).op {
                // A tied table was already quantized for the head (GPTQ fits the logits, which
                // matter more than the embedding rows): reuse it.
                let reuse = done.iter().find(|((w, p), _)| *w == table && p.bits == bits).map(|(_, hit)| *hit);
                let (qt, scales, group) = match reuse {
                    Some(hit) => hit,
                    None => quantized(program, &mut done, table, Plan { bits, gptq: false, table: true }, None)?,
                };
                let tokens = program.graph.inputs(v)[0];
                let q = program.graph.add(Op::QEmbedding { table: qt, scales, group }, &[tokens])?;
                program.graph.replace_uses(v, q);
                program.graph.remove(v);
            }
        }
        bar.finish_and_clear();
        program.graph.remove_dead();
        store_float_parameters_in_f16(program);
        let map = program.graph.compact_weights();
        program.weights.compact(&map);
        Ok(())
    }
}

/// The int8 value a linear can read instead of its f32 operand: `x` when the operand is
/// `dequantize(x)` of a `quantize` with one scale for all channels.
fn int8_operand(program: &Program, input: ValueId) -> (ValueId, Option<f32>) {
    let g = &program.graph;
    if let Op::Dequantize { scale } = g.node(input).op {
        let q = g.inputs(input)[0];
        let s = program.values(scale);
        if matches!(g.node(q).op, Op::Quantize { .. }) && s.iter().all(|v| *v == s[0]) {
            return (q, Some(s[0]));
        }
    }
    (input, None)
}

/// Quantizes `weight` once per plan (a tied table serves the embedding and the head).
fn quantized(
    program: &mut Program,
    done: &mut HashMap<(WeightId, Plan), (WeightId, WeightId, usize)>,
    weight: WeightId,
    plan: Plan,
    hessian: Option<(&[f64], usize)>,
) -> Result<(WeightId, WeightId, usize), CompileError> {
    if let Some(hit) = done.get(&(weight, plan)) {
        return Ok(*hit);
    }
    let decl = program.graph.weight(weight).clone();
    let (out_dim, in_dim) = (decl.shape[0], decl.shape[1]);
    let group = if plan.table && plan.bits == 4 && in_dim % TABLE_GROUP == 0 { TABLE_GROUP } else { group_size(plan.bits, in_dim) };
    let values = program.values(weight);
    let q: QuantizedWeight = match (plan.gptq, hessian) {
        (true, Some((h, rows))) => quantize_gptq(values, out_dim, in_dim, plan.bits, group, h, rows, PERCDAMP)
            .map_err(|e| CompileError::Calibration(format!("GPTQ on `{}`: {e}", decl.name)))?,
        _ => quantize_rtn(values, out_dim, in_dim, plan.bits, group),
    };
    let dtype = if plan.bits == 4 { DType::I4 } else { DType::I8 };
    let qw = program.add_weight(format!("{}.q{}", decl.name, plan.bits), dtype, decl.shape.clone(), q.q);
    // Scales are stored in f16, as the kernels read them; rounding them after quantizing moves
    // each dequantized value by at most 2⁻¹¹ of itself.
    let scales_f16: Vec<f32> = q.scales.iter().map(|s| half::f16::from_f32(*s).to_f32()).collect();
    let scales = program.add_weight(format!("{}.scales", decl.name), DType::F16, vec![out_dim, in_dim / group], scales_f16);
    done.insert((weight, plan), (qw, scales, group));
    Ok((qw, scales, group))
}

/// The float parameters that remain (conv weights and biases, norm weights, A_log, D, dt_bias)
/// are stored in f16, as a 16-bit deployment keeps them (Quamba2 §3.2); their values are rounded
/// to f16 here so the executor computes with exactly what the artifact stores. Activation and
/// state scales stay f32: the kernels multiply by them in f32.
fn store_float_parameters_in_f16(program: &mut Program) {
    let mut targets: Vec<WeightId> = Vec::new();
    for v in program.graph.values() {
        let op = &program.graph.node(v).op;
        let state_scale = match op {
            Op::Quantize { .. } | Op::Dequantize { .. } => continue,
            Op::Ssd { state: Some(q), .. } | Op::SelectiveScan { state: Some(q), .. } => Some(q.scale),
            _ => None,
        };
        targets.extend(op.weights().into_iter().filter(|w| program.graph.weight(*w).dtype == DType::F32 && Some(*w) != state_scale));
    }
    targets.sort();
    targets.dedup();
    for w in targets {
        let rounded: Vec<f32> = program.values(w).iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
        if rounded.iter().all(|v| v.is_finite()) {
            program.set_values(w, rounded);
            program.graph.weight_mut(w).dtype = DType::F16;
        }
    }
}
