//! Static int8 activation quantization: calibrate the float program once, then put a
//! `quantize → dequantize` pair on every activation the int8 kernels consume, with scales from the
//! rule each value was given (absmax by default; percentile, or per-group scales from earlier
//! passes). `quantize_weights` later turns `dequantize → linear` into an integer `qlinear` that
//! reads the int8 value directly; the scan, conv and norm kernels dequantize on load, which the
//! pair expresses exactly.
//!
//! Quantized points per block (A8 layers only): the in_proj input, the conv input (per segment
//! x | B | C under Quamba recipes), the SSM inputs x, B, C, dt and the gate z, the out_proj input;
//! Mamba1 adds the x_proj output (dt_low, B, C share one scale, as in Quamba1). The lm_head input
//! is quantized unless every layer keeps 16-bit activations.

use std::collections::{BTreeSet, HashMap};

use ir::{Op, ValueId};

use super::blocks::{blocks, ends};
use super::{Pass, PassContext, ScaleRule};
use crate::calibrate::{calibrate, Request, Stats};
use crate::program::Program;
use crate::target::Method;
use crate::CompileError;

/// Scales below this are raised to it, so an all-zero channel cannot give a zero scale.
const MIN_ABSMAX: f32 = 1e-5;

/// The symmetric int8 scale of a range `absmax` (raised to [`MIN_ABSMAX`] first).
pub(super) fn absmax_scale(absmax: f32) -> f32 {
    absmax.max(MIN_ABSMAX) / 127.0
}

/// One activation to quantize.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantPoint {
    /// The block, or None for the lm_head input.
    pub layer: Option<usize>,
    /// The float value.
    pub value: ValueId,
    /// How its scale is chosen.
    pub rule: ScaleRule,
    /// A short role name used in weight names (`in_proj.input`, `ssm.x`, ...).
    pub role: &'static str,
}

/// Every point the recipe quantizes, with its rule (earlier passes' rules take precedence).
pub fn quant_points(program: &Program, cx: &PassContext) -> Result<Vec<QuantPoint>, CompileError> {
    let g = &program.graph;
    let mut points = Vec::new();
    // A rule an earlier pass chose for a value wins over the recipe's default.
    let rule = |v: ValueId, default: ScaleRule| cx.scale_rules.get(&v).cloned().unwrap_or(default);
    for b in blocks(g)? {
        let l = Some(b.layer);
        let mut push = |value: ValueId, default: ScaleRule, role: &'static str| points.push(QuantPoint { layer: l, value, rule: rule(value, default), role });
        push(g.inputs(b.in_proj)[0], ScaleRule::AbsMax, "in_proj.input");
        let conv_rule = match (&g.node(b.ssm).op, cx.method) {
            (Op::Ssd { heads, head_dim, groups, d_state, .. }, Method::Quamba1 | Method::Quamba2) => {
                let (x, bc) = (heads * head_dim, groups * d_state);
                ScaleRule::Grouped { group_of: (0..x + 2 * bc).map(|c| if c < x { 0 } else if c < x + bc { 1 } else { 2 }).collect() }
            }
            _ => ScaleRule::AbsMax,
        };
        push(g.inputs(b.conv)[0], conv_rule, "conv.input");
        push(b.x, ScaleRule::AbsMax, "ssm.x");
        match b.x_proj {
            // Mamba1: dt_low, B and C come out of x_proj together and share its output scale.
            Some(x_proj) => push(x_proj, ScaleRule::AbsMax, "x_proj.output"),
            None => {
                push(b.b, ScaleRule::AbsMax, "ssm.b");
                push(b.c, ScaleRule::AbsMax, "ssm.c");
            }
        }
        push(b.dt, ScaleRule::AbsMax, "ssm.dt");
        push(b.z, ScaleRule::AbsMax, "gate.z");
        push(g.inputs(b.out_proj)[0], ScaleRule::AbsMax, "out_proj.input");
    }
    let head_in = g.inputs(ends(g)?.lm_head)[0];
    points.push(QuantPoint { layer: None, value: head_in, rule: rule(head_in, ScaleRule::AbsMax), role: "lm_head.input" });
    Ok(points)
}

/// Calibrates every point in one run over the calibration set.
pub fn calibrate_points(program: &Program, points: &[QuantPoint], cx: &PassContext) -> Result<HashMap<ValueId, Stats>, CompileError> {
    let requests: HashMap<ValueId, Request> = points
        .iter()
        .map(|p| (p.value, Request { percentile: if let ScaleRule::Percentile(q) = p.rule { Some(q) } else { None }, hessian: false }))
        .collect();
    calibrate(program, &cx.calib, &requests, cx.progress, "calibrating activations")
}

/// The scales of a point: one value (`[1]`) for per-tensor rules, one per channel for grouped ones.
pub fn scales_for(rule: &ScaleRule, stats: &Stats) -> Vec<f32> {
    match rule {
        ScaleRule::AbsMax => vec![absmax_scale(stats.absmax)],
        ScaleRule::Percentile(_) => vec![absmax_scale(stats.percentile.unwrap_or(stats.absmax))],
        ScaleRule::Grouped { group_of } => {
            let groups = group_of.iter().copied().max().map_or(0, |m| m + 1);
            let mut absmax = vec![0.0f32; groups];
            for (c, g) in group_of.iter().enumerate() {
                absmax[*g] = absmax[*g].max(stats.channel_absmax[c]);
            }
            group_of.iter().map(|g| absmax_scale(absmax[*g])).collect()
        }
    }
}

/// Inserts `quantize → dequantize` on the points of the layers not in `a16_layers` (the lm_head
/// input counts as quantized unless all layers are A16).
pub fn insert_fake_quant(program: &mut Program, points: &[QuantPoint], stats: &HashMap<ValueId, Stats>, a16_layers: &BTreeSet<usize>, n_layer: usize) -> Result<(), CompileError> {
    for p in points {
        let quantized = match p.layer {
            Some(l) => !a16_layers.contains(&l),
            None => a16_layers.len() < n_layer,
        };
        if !quantized {
            continue;
        }
        let s = stats.get(&p.value).ok_or_else(|| CompileError::Calibration(format!("no statistics were recorded for {}", p.value)))?;
        let name = match p.layer {
            Some(l) => format!("backbone.layers.{l}.{}.scale", p.role),
            None => format!("{}.scale", p.role),
        };
        let scale = program.add_scale(name, scales_for(&p.rule, s));
        let users = program.graph.users(p.value);
        let q = program.graph.add(Op::Quantize { scale }, &[p.value])?;
        let dq = program.graph.add(Op::Dequantize { scale }, &[q])?;
        for user in users {
            for (slot, input) in program.graph.inputs(user).into_iter().enumerate() {
                if input == p.value {
                    program.graph.set_input(user, slot, dq);
                }
            }
        }
    }
    Ok(())
}

/// The pass: calibrate, then quantize the activations of every A8 layer.
pub struct QuantizeActivations;

impl Pass for QuantizeActivations {
    fn name(&self) -> &'static str {
        "quantize_activations"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        let points = quant_points(program, cx)?;
        let stats = calibrate_points(program, &points, cx)?;
        let n_layer = program.config.n_layer;
        insert_fake_quant(program, &points, &stats, &cx.a16_layers, n_layer)
    }
}
