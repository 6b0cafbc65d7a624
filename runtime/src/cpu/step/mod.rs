//! The decode step: one token per sequence through a plan made once, when the executor is built.
//!
//! The general interpreter ([`super::Executor::forward_observed`]) allocates every value and
//! spreads every op over the rayon pool, which suits a 512-token prefill. A decode step moves a
//! few thousand numbers per op, so there the overheads were most of the step. The plan:
//! - gives every value a buffer, shared with values whose lifetimes do not overlap and kept from
//!   step to step (no allocation per op once the first step has run);
//! - runs the small ops (norms, the conv / scan / SSD steps, elementwise, quantize) on the
//!   calling thread and shares only the large products with the step's [`super::team`];
//! - fuses a quantize whose only reader is a dequantize into one fake-quantize pass, a conv
//!   whose only reader is a SiLU into the conv step, and an RMSNorm whose only reader is a
//!   quantize into one generated kernel that writes the int8 row;
//! - runs the norms and the Hadamard transform on their generated kernels (`crate::jit`) where
//!   the executor has them.
//!
//! Every value is computed with the interpreter's operations in its order (so the integer
//! reference and the generated kernels still agree bit for bit), except the SSD step's two dot
//! products over the state, summed in eight partial sums ([`super::ssd::ssd_step`]).

mod chunks;
mod plan;

use std::time::Instant;

use ir::{Activation, Op, ValueId};

use super::profile::OpProfile;
use super::team::Board;
use super::{conv, norm, quant, scan, ssd, Executor, Logits, State};
use crate::RuntimeError;
use chunks::{chunk_columns, stateful_chunk, Runner, EXP_COST, MIN_STATE_COST_PER_CHUNK};
use plan::{Buf, Fused, PlanOp, MIN_MACS_PER_CHUNK};
pub(super) use plan::{Scratch, StepPlan};

impl Executor {
    /// Runs one token per sequence through the decode plan.
    pub(super) fn step(&self, state: &mut State, tokens: &[i64], scratch: &mut Scratch, mut profile: Option<&mut OpProfile>) -> Result<Logits, RuntimeError> {
        let threads = rayon::current_num_threads();
        let Scratch { batch, f32s, i8s, board } = scratch;
        let runner = Runner { exec: self, batch: *batch };
        board.reset();
        let team = threads > 1 && self.step.team_safe;
        let result = if team {
            rayon::scope(|s| {
                for _ in 1..threads {
                    s.spawn(|_| board.help(&runner));
                }
                let r = self.run_plan(state, tokens, f32s, i8s, board, &runner, profile.as_deref_mut());
                board.finish();
                r
            })
        } else {
            self.run_plan(state, tokens, f32s, i8s, board, &runner, profile)
        };
        result?;
        state.position += 1;
        let batch = *batch;
        Ok(Logits { batch, seq: 1, vocab: self.vocab, data: f32s[self.step.output][..batch * self.vocab].to_vec() })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_plan(
        &self,
        state: &mut State,
        tokens: &[i64],
        f32s: &mut [Vec<f32>],
        i8s: &mut [Vec<i8>],
        board: &Board,
        runner: &Runner,
        mut profile: Option<&mut OpProfile>,
    ) -> Result<(), RuntimeError> {
        let batch = runner.batch;
        let threads = rayon::current_num_threads();
        let missing_state = || RuntimeError::Input("state does not belong to this executor".into());
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        for (index, op) in self.step.ops.iter().enumerate() {
            let start = Instant::now();
            let node = self.graph.node(op.value);
            let width = node.ty.width().unwrap_or(0);
            let f32_in = |k: usize| match op.inputs[k] {
                Buf::F32(b) => b,
                _ => usize::MAX,
            };
            let i8_in = |k: usize| match op.inputs[k] {
                Buf::I8(b) => b,
                _ => usize::MAX,
            };
            match op.out {
                Buf::None => {}
                Buf::I8(o) => {
                    let mut out = std::mem::take(&mut i8s[o]);
                    let x = &f32s[f32_in(0)];
                    let r = match (&node.op, self.jit_quantize.get(&op.value), self.jit_steps.norm.get(&op.value)) {
                        (Op::Quantize { .. }, Some(kernel), _) => kernel.forward_into(x, &mut out),
                        (Op::Quantize { scale }, None, _) => {
                            quant::per_channel(w(*scale), width, x, &mut out, quant::quantize_one);
                            Ok(())
                        }
                        (Op::RmsNorm { .. }, _, Some(kernel)) if op.fused == Fused::Quantize => kernel.forward_quantized_into(x, &mut out),
                        _ => Err(RuntimeError::Internal(format!("the decode plan gave an int8 buffer to {}", node.op.name()))),
                    };
                    i8s[o] = out;
                    r?;
                }
                Buf::F32(o) => {
                    let mut out = std::mem::take(&mut f32s[o]);
                    let r = self.step_f32_op(index, op, node, width, tokens, state, f32s, i8s, &mut out, &f32_in, &i8_in, board, runner, threads, batch);
                    f32s[o] = out;
                    r.map_err(|e| e.unwrap_or_else(missing_state))?;
                }
            }
            if let Some(p) = profile.as_deref_mut() {
                p.add(op.label, start);
            }
        }
        Ok(())
    }

    /// A scan / SSD step of every unit on this thread.
    #[allow(clippy::too_many_arguments)]
    fn stateful_step(&self, value: ValueId, node: &ir::Node, x: &[f32], dt: &[f32], b: &[f32], c: &[f32], batch: usize, width: usize, st: &mut [f32], out: &mut [f32]) {
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        match &node.op {
            Op::SelectiveScan { d, .. } => {
                let d_state = b.len() / batch;
                scan::selective_scan_step(x, dt, b, c, batch, width, d_state, &self.step.scan_a[&value], w(*d), st, out, self.jit_steps.scan.get(&value));
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max, .. } => {
                let shape = ssd::SsdShape { seq: 1, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                ssd::ssd_step(x, dt, b, c, batch, shape, &params, st, out, self.jit_steps.ssd.get(&value));
            }
            _ => {}
        }
    }

    /// One op with an f32 result into `out`; `Err(None)` means a stateful op found no state.
    #[allow(clippy::too_many_arguments)]
    fn step_f32_op(
        &self,
        index: usize,
        op: &PlanOp,
        node: &ir::Node,
        width: usize,
        tokens: &[i64],
        state: &mut State,
        f32s: &[Vec<f32>],
        i8s: &[Vec<i8>],
        out: &mut [f32],
        f32_in: &dyn Fn(usize) -> usize,
        i8_in: &dyn Fn(usize) -> usize,
        board: &Board,
        runner: &Runner,
        threads: usize,
        batch: usize,
    ) -> Result<(), Option<RuntimeError>> {
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        let x = |k: usize| f32s[f32_in(k)].as_slice();
        match &node.op {
            Op::Tokens => {}
            Op::Embedding { .. } | Op::QEmbedding { .. } => {
                for (dst, &t) in out.chunks_exact_mut(width).zip(tokens) {
                    self.embedding_row(&node.op, t, dst).map_err(Some)?;
                }
            }
            Op::RmsNorm { .. } if self.jit_steps.norm.contains_key(&op.value) => self.jit_steps.norm[&op.value].forward_into(x(0), out).map_err(Some)?,
            Op::RmsNorm { weight, eps } => {
                out.copy_from_slice(x(0));
                for row in out.chunks_exact_mut(width) {
                    norm::rms_norm_in_place(row, weight.map(w), *eps);
                }
            }
            Op::Quantize { scale } => {
                // Fused with the dequantize that reads it (the same scale).
                quant::per_channel(w(*scale), width, x(0), out, |v, s| quant::quantize_value(v, s) * s);
            }
            Op::Dequantize { scale } => {
                quant::per_channel(w(*scale), width, &i8s[i8_in(0)], out, |q, s| q as f32 * s);
            }
            Op::QLinear { weight, scales, bias, group, act_scale: Some(s) } if !self.jit_qlinear.contains_key(&op.value) => {
                // Reference integer kernel (no generated one for this layer).
                let in_dim = i8s[i8_in(0)].len() / batch;
                let ints = &self.weights.get(*weight).ints;
                out.copy_from_slice(&quant::qlinear_i8(&i8s[i8_in(0)], batch, in_dim, ints, width, w(*scales), *group, *s, bias.map(w)));
            }
            Op::QLinear { .. } | Op::Linear { .. } | Op::LmHead { .. } => {
                {
                    let mut input = board.input_mut();
                    if let Some(kernel) = self.jit_qlinear.get(&op.value) {
                        let ints = &i8s[i8_in(0)];
                        input.rows.resize_with(batch, Default::default);
                        for (row, x) in input.rows.iter_mut().zip(ints.chunks_exact(kernel.in_dim())) {
                            kernel.prepare_row(x, row).map_err(Some)?;
                        }
                    } else {
                        input.data.clear();
                        input.data.extend_from_slice(x(0));
                    }
                }
                let chunks = if threads > 1 && self.step.team_safe { (op.macs / MIN_MACS_PER_CHUNK).clamp(1, board.max_chunks()) } else { 1 };
                let ok = board.run(runner, index, chunks, |c, part| {
                    let cols = chunk_columns(width, chunks, c);
                    if cols.is_empty() {
                        return;
                    }
                    for (r, src) in part.chunks_exact(cols.len()).enumerate() {
                        out[r * width + cols.start..r * width + cols.end].copy_from_slice(src);
                    }
                });
                if !ok {
                    return Err(Some(RuntimeError::Internal(format!("a worker failed in a {} product", node.op.name()))));
                }
            }
            Op::CausalConv1d { weight, bias } => {
                let st = state.buffers.get_mut(&op.value).ok_or(None)?;
                let silu = op.fused == Fused::Silu;
                match self.jit_steps.conv.get(&op.value) {
                    Some(kernel) => kernel.step(x(0), batch, st, out, silu).map_err(Some)?,
                    None => {
                        let kernel = self.weights.get(*weight).shape[2];
                        conv::causal_conv1d_step(x(0), batch, width, &self.step.taps[&op.value], kernel, bias.map(w), st, out, silu);
                    }
                }
            }
            Op::Split { start, end } => {
                let src_width = x(0).len() / batch;
                for (dst, src) in out.chunks_exact_mut(width).zip(x(0).chunks_exact(src_width)) {
                    dst.copy_from_slice(&src[*start..*end]);
                }
            }
            Op::Activation { kind } => {
                // One loop per function, so each inlines and vectorises.
                match kind {
                    Activation::Silu => out.iter_mut().zip(x(0)).for_each(|(d, v)| *d = super::fastmath::silu(*v)),
                    Activation::Softplus => out.iter_mut().zip(x(0)).for_each(|(d, v)| *d = super::fastmath::softplus(*v)),
                }
            }
            Op::Mul => {
                for ((d, a), b) in out.iter_mut().zip(x(0)).zip(x(1)) {
                    *d = a * b;
                }
            }
            Op::Add => {
                for ((d, a), b) in out.iter_mut().zip(x(0)).zip(x(1)) {
                    *d = a + b;
                }
            }
            Op::SelectiveScan { .. } | Op::Ssd { .. } => {
                let st = state.buffers.get_mut(&op.value).ok_or(None)?;
                let cost = st.len() * if matches!(node.op, Op::SelectiveScan { .. }) { EXP_COST } else { 1 };
                let chunks = if threads > 1 && self.step.team_safe { (cost / MIN_STATE_COST_PER_CHUNK).clamp(1, board.max_chunks()) } else { 1 };
                if chunks == 1 {
                    self.stateful_step(op.value, node, x(0), x(1), x(2), x(3), batch, width, st, out);
                    return Ok(());
                }
                {
                    let mut input = board.input_mut();
                    input.operands.resize_with(4, Vec::new);
                    for (k, dst) in input.operands.iter_mut().enumerate() {
                        dst.clear();
                        dst.extend_from_slice(x(k));
                    }
                }
                let ok = board.run_with_state(runner, index, chunks, st, |c, part| {
                    let (units, _, unit_width) = stateful_chunk(node, &self.graph, chunks, c);
                    let len = units.len() * unit_width;
                    if len == 0 {
                        return;
                    }
                    for (r, src) in part.chunks_exact(len).enumerate() {
                        out[r * width + units.start * unit_width..][..len].copy_from_slice(src);
                    }
                });
                if !ok {
                    return Err(Some(RuntimeError::Internal(format!("a worker failed in the {} step", node.op.name()))));
                }
            }
            Op::GatedRmsNorm { .. } if self.jit_steps.gated_norm.contains_key(&op.value) => self.jit_steps.gated_norm[&op.value].forward_into(x(0), x(1), out).map_err(Some)?,
            Op::GatedRmsNorm { weight, groups, eps } => {
                for ((dst, y), z) in out.chunks_exact_mut(width).zip(x(0).chunks_exact(width)).zip(x(1).chunks_exact(width)) {
                    norm::gated_rms_norm_row(y, z, dst, w(*weight), *groups, *eps);
                }
            }
            Op::Hadamard if self.jit_steps.hadamard.contains_key(&op.value) => self.jit_steps.hadamard[&op.value].forward_into(x(0), out).map_err(Some)?,
            Op::Hadamard => {
                out.copy_from_slice(x(0));
                for row in out.chunks_exact_mut(width) {
                    crate::hadamard::hadamard_row(row);
                }
            }
        }
        Ok(())
    }
}
