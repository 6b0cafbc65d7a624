//! Int8 cached SSM states (Quamba2 §3.1, Quamba1): the state a scan keeps between calls is the
//! whole memory of a sequence during decode, read and written once per token and layer, and at
//! f32 it is most of a decode step's traffic beyond the weights (mamba2-2.7b: 2.6 MB per layer
//! and sequence, against ~21 MB of W4A8 weights per layer, shared by the batch). This pass gives
//! every A8 layer's scan an int8 state ([`ir::StateQuant`]); W4A16 layers and W4AX's A16 layers
//! keep theirs in f32, as in the method. It runs where compile options ask for it
//! (`--int8-states`): on an H200 the int8 state made batch-1 decode 1-4 % slower (its step
//! dequantizes and requantizes on the critical path) and batch-16 decode 6-24 % faster, so f32
//! states stay the default.
//!
//! Scales come from the final states the calibration windows leave (the state a prefill hands to
//! decode), on the float program, as the method's observers see them:
//! - Mamba2 whose x has sort-and-cluster groups: one scale per (x's group — SSD group, head group,
//!   dim group — and state index n), the group's absmax over all windows / 127. A state row is
//!   x's channel (head · head_dim + p), so it shares x's group.
//! - Otherwise (Mamba1, Mamba2 under the Quamba1 recipe): one scale for the layer, the mean over
//!   windows of the 0.9995 quantile of |state| / 127 (Quamba1's percentile rule).

use std::collections::HashMap;

use ir::{DType, Op, StateQuant, ValueId};

use super::blocks::blocks;
use super::clip_outliers::SSM_INPUT_QUANTILE;
use super::quantize_activations::absmax_scale;
use super::{Pass, PassContext, ScaleRule};
use crate::calibrate::{abs_quantile, final_states};
use crate::program::Program;
use crate::CompileError;

/// Gives the scans of A8 layers an int8 state.
pub struct QuantizeStates;

/// How one scan's state scales are gathered.
enum Rule {
    /// Per (group, n): the running absmax, `[groups][d_state]`.
    Grouped { group_of: Vec<usize>, d_state: usize, absmax: Vec<f32> },
    /// Per tensor: the sum over windows of the quantile.
    Percentile { sum: f64 },
}

impl Pass for QuantizeStates {
    fn name(&self) -> &'static str {
        "quantize_states"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        let mut rules: Vec<(usize, ValueId, Rule)> = Vec::new();
        for b in blocks(&program.graph)?.into_iter().filter(|b| !cx.a16_layers.contains(&b.layer)) {
            let rule = match (&program.graph.node(b.ssm).op, cx.scale_rules.get(&b.x)) {
                (Op::Ssd { d_state, .. }, Some(ScaleRule::Grouped { group_of })) => {
                    let groups = group_of.iter().copied().max().map_or(1, |m| m + 1);
                    Rule::Grouped { group_of: group_of.clone(), d_state: *d_state, absmax: vec![0.0; groups * d_state] }
                }
                _ => Rule::Percentile { sum: 0.0 },
            };
            rules.push((b.layer, b.ssm, rule));
        }
        if rules.is_empty() {
            return Ok(());
        }
        let scans: Vec<ValueId> = rules.iter().map(|(_, v, _)| *v).collect();
        let index: HashMap<ValueId, usize> = scans.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        final_states(program, &cx.calib, &scans, &mut |v, state| observe(&mut rules[index[&v]].2, state), cx.progress, "calibrating states")?;
        let windows = cx.calib.windows.len().max(1) as f64;
        for (layer, scan, rule) in rules {
            let name = format!("backbone.layers.{layer}.ssm.state.scale");
            let quant = match rule {
                Rule::Grouped { group_of, d_state, absmax } => {
                    let groups = absmax.len() / d_state;
                    let scales = absmax.iter().map(|a| absmax_scale(*a)).collect();
                    let scale = program.add_weight(name, DType::F32, vec![groups, d_state], scales);
                    let map = group_of.iter().map(|g| *g as f32).collect();
                    let group = program.add_weight(format!("backbone.layers.{layer}.ssm.state.group"), DType::I32, vec![group_of.len()], map);
                    StateQuant { scale, group: Some(group) }
                }
                Rule::Percentile { sum } => {
                    let scale = program.add_weight(name, DType::F32, vec![1, 1], vec![absmax_scale((sum / windows) as f32)]);
                    StateQuant { scale, group: None }
                }
            };
            match &mut program.graph.node_mut(scan).op {
                Op::Ssd { state, .. } | Op::SelectiveScan { state, .. } => *state = Some(quant),
                other => return Err(CompileError::Calibration(format!("{scan} is a `{}`, not a scan", other.name()))),
            }
        }
        Ok(())
    }
}

fn observe(rule: &mut Rule, state: &[f32]) {
    match rule {
        Rule::Grouped { group_of, d_state, absmax } => {
            for (row, g) in state.chunks_exact(*d_state).zip(group_of.iter()) {
                for (a, h) in absmax[g * *d_state..][..*d_state].iter_mut().zip(row) {
                    *a = a.max(h.abs());
                }
            }
        }
        Rule::Percentile { sum } => *sum += abs_quantile(state, SSM_INPUT_QUANTILE) as f64,
    }
}
