//! The decode step: one token per sequence through a plan made once, when the executor is built.
//!
//! The general interpreter ([`super::Executor::forward_observed`]) allocates every value and
//! spreads every op over the rayon pool, which suits a 512-token prefill. A decode step moves a
//! few thousand numbers per op, so there the overheads were most of the step. The plan:
//! - gives every value a buffer, shared with values whose lifetimes do not overlap and kept from
//!   step to step (no allocation per op once the first step has run);
//! - runs the small ops (norms, the conv / scan / SSD steps, elementwise, quantize) on the
//!   calling thread and shares only the large products with the step's [`super::team`];
//! - fuses a quantize whose only reader is a dequantize into one fake-quantize pass, and a conv
//!   whose only reader is a SiLU into the conv step.
//!
//! Every value is computed with the interpreter's operations in its order (so the integer
//! reference and the generated kernels still agree bit for bit), except the SSD step's two dot
//! products over the state, summed in eight partial sums ([`super::ssd::ssd_step`]).

use std::collections::HashMap;
use std::time::Instant;

use ir::{Activation, Op, ValueId};

use super::profile::OpProfile;
use super::team::{Board, BoardInput, ChunkRunner};
use super::{conv, norm, quant, scan, ssd, Executor, Logits, State};
use crate::RuntimeError;

/// Fewest multiply-adds per chunk of a shared product: below it a chunk costs more to hand over
/// than to compute (mamba1's x_proj, 64 × 1024, stays on the calling thread).
const MIN_MACS_PER_CHUNK: usize = 1 << 16;
/// Most chunks per product and thread: enough to balance two threads when one is interrupted.
const CHUNKS_PER_THREAD: usize = 4;

/// Where a value lives during a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buf {
    /// No data (the token input).
    None,
    F32(usize),
    I8(usize),
}

/// An op fused into the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fused {
    None,
    /// quantize → dequantize with the same scale: x ↦ round(x / s)·s.
    Dequantize,
    /// causal_conv1d → silu.
    Silu,
}

/// One op of the plan.
struct PlanOp {
    /// The node that runs (the first of a fused pair).
    value: ValueId,
    inputs: Vec<Buf>,
    out: Buf,
    fused: Fused,
    /// Multiply-adds of a product (0 for other ops): decides how many chunks it is shared in.
    macs: usize,
    label: &'static str,
}

/// The decode plan of a graph.
pub(super) struct StepPlan {
    ops: Vec<PlanOp>,
    /// Width of each f32 / i8 buffer (per sequence).
    f32_widths: Vec<usize>,
    i8_widths: Vec<usize>,
    output: usize,
    /// Conv weights in tap-major order, and −exp(a_log) of each selective scan, by node.
    taps: HashMap<ValueId, Vec<f32>>,
    scan_a: HashMap<ValueId, Vec<f32>>,
    /// Whether every op is safe to run beside spinning helpers (none forks onto the rayon pool,
    /// where a thread waiting inside a fork could pick up a helper and never return to publish).
    team_safe: bool,
}

/// Buffers of a step, kept between steps.
pub(super) struct Scratch {
    batch: usize,
    f32s: Vec<Vec<f32>>,
    i8s: Vec<Vec<i8>>,
    board: Board,
}

impl StepPlan {
    /// A plan that runs nothing (before [`StepPlan::new`]).
    pub fn empty() -> StepPlan {
        StepPlan { ops: Vec::new(), f32_widths: Vec::new(), i8_widths: Vec::new(), output: usize::MAX, taps: HashMap::new(), scan_a: HashMap::new(), team_safe: false }
    }

    /// Plans `exec`'s graph (`order`: its topological order).
    pub fn new(exec: &Executor, order: &[ValueId]) -> StepPlan {
        let graph = &exec.graph;
        let readers = |v: ValueId| graph.values().into_iter().filter(move |u| graph.inputs(*u).contains(&v));
        let only_reader = |v: ValueId| {
            let mut r = readers(v);
            match (r.next(), r.next()) {
                (Some(u), None) if !graph.outputs().contains(&v) => Some(u),
                _ => None,
            }
        };
        let mut absorbed: HashMap<ValueId, ValueId> = HashMap::new(); // fused second node → first
        let mut fused: HashMap<ValueId, Fused> = HashMap::new();
        for v in order {
            let Some(u) = only_reader(*v) else { continue };
            match (&graph.node(*v).op, &graph.node(u).op) {
                (Op::Quantize { scale: a }, Op::Dequantize { scale: b }) if a == b => {
                    fused.insert(*v, Fused::Dequantize);
                    absorbed.insert(u, *v);
                }
                (Op::CausalConv1d { .. }, Op::Activation { kind: Activation::Silu }) => {
                    fused.insert(*v, Fused::Silu);
                    absorbed.insert(u, *v);
                }
                _ => {}
            }
        }
        // The node whose buffer holds each value's data.
        let holder = |v: ValueId| -> ValueId {
            match absorbed.get(&v) {
                Some(first) => *first,
                None => v,
            }
        };
        let runs: Vec<ValueId> = order.iter().copied().filter(|v| !absorbed.contains_key(v)).collect();
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (i, v) in runs.iter().enumerate() {
            let second = fused.get(v).and_then(|_| readers(*v).next());
            for u in std::iter::once(*v).chain(second) {
                for x in graph.inputs(u) {
                    let h = holder(x);
                    if h != *v {
                        last_use.insert(h, i);
                    }
                }
            }
        }
        let output = holder(graph.outputs()[0]);
        let (mut f32_widths, mut i8_widths) = (Vec::new(), Vec::new());
        let (mut free_f32, mut free_i8): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        let mut buf_of: HashMap<ValueId, Buf> = HashMap::new();
        let mut ops = Vec::new();
        let mut team_safe = true;
        for (i, v) in runs.iter().enumerate() {
            let node = graph.node(*v);
            let f = fused.get(v).copied().unwrap_or(Fused::None);
            let width = node.ty.width().unwrap_or(0);
            let is_i8 = matches!(node.op, Op::Quantize { .. }) && f == Fused::None;
            let take = |widths: &mut Vec<usize>, free: &mut Vec<usize>| match free.iter().position(|b| widths[*b] == width) {
                Some(p) => free.swap_remove(p),
                None => {
                    widths.push(width);
                    widths.len() - 1
                }
            };
            let out = match node.op {
                Op::Tokens => Buf::None,
                _ if is_i8 => Buf::I8(take(&mut i8_widths, &mut free_i8)),
                _ => Buf::F32(take(&mut f32_widths, &mut free_f32)),
            };
            buf_of.insert(*v, out);
            let inputs: Vec<Buf> = graph.inputs(*v).iter().map(|x| buf_of[&holder(*x)]).collect();
            let (macs, label) = match node.op {
                Op::QLinear { .. } | Op::Linear { .. } | Op::LmHead { .. } => (width * graph.node(graph.inputs(*v)[0]).ty.width().unwrap_or(0), node.op.name()),
                _ => (
                    0,
                    match f {
                        Fused::Dequantize => "quantize+dequantize",
                        Fused::Silu => "causal_conv1d+silu",
                        Fused::None => node.op.name(),
                    },
                ),
            };
            if let Op::QLinear { act_scale: Some(_), .. } = node.op {
                team_safe &= exec.jit_qlinear.contains_key(v);
            }
            ops.push(PlanOp { value: *v, inputs, out, fused: f, macs, label });
            // Release the buffers whose last reader this op was (after choosing its output, so
            // an op never writes into its own operand).
            for x in graph.inputs(*v).iter().chain(fused.get(v).and_then(|_| readers(*v).next()).map(|u| graph.inputs(u)).unwrap_or_default().iter()) {
                let h = holder(*x);
                if h != output && last_use.get(&h) == Some(&i) {
                    match buf_of[&h] {
                        Buf::F32(b) if !free_f32.contains(&b) => free_f32.push(b),
                        Buf::I8(b) if !free_i8.contains(&b) => free_i8.push(b),
                        _ => {}
                    }
                }
            }
        }
        let output = match buf_of[&output] {
            Buf::F32(b) => b,
            _ => usize::MAX,
        };
        let mut taps = HashMap::new();
        let mut scan_a = HashMap::new();
        for v in &runs {
            match graph.node(*v).op {
                Op::CausalConv1d { weight, .. } => {
                    let shape = &graph.weight(weight).shape;
                    taps.insert(*v, conv::tap_major(&exec.weights.get(weight).values, shape[0], shape[2]));
                }
                Op::SelectiveScan { a_log, .. } => {
                    scan_a.insert(*v, exec.weights.get(a_log).values.iter().map(|v| -v.exp()).collect());
                }
                _ => {}
            }
        }
        StepPlan { ops, f32_widths, i8_widths, output, taps, scan_a, team_safe }
    }

    /// Whether this plan can run the graph (one f32 output).
    pub fn usable(&self) -> bool {
        self.output != usize::MAX
    }

    /// Buffers for `batch` sequences.
    pub fn scratch(&self, batch: usize) -> Scratch {
        let threads = rayon::current_num_threads();
        Scratch {
            batch,
            f32s: self.f32_widths.iter().map(|w| vec![0.0; w * batch]).collect(),
            i8s: self.i8_widths.iter().map(|w| vec![0; w * batch]).collect(),
            board: Board::new(threads * CHUNKS_PER_THREAD),
        }
    }
}

impl Scratch {
    /// Whether these buffers serve `batch` sequences on a pool of `threads`.
    pub fn fits(&self, batch: usize, threads: usize) -> bool {
        self.batch == batch && self.board.max_chunks() == (threads * CHUNKS_PER_THREAD).max(1)
    }
}

/// Output features `[start, end)` of chunk `chunk` of `chunks` over `out_dim` features, on
/// boundaries that are multiples of the generated kernels' 4-feature tile.
fn chunk_columns(out_dim: usize, chunks: usize, chunk: usize) -> std::ops::Range<usize> {
    chunk_range(out_dim, chunks, chunk, 4)
}

/// Chunk `chunk` of `chunks` over `n` units, on multiples of `align`.
fn chunk_range(n: usize, chunks: usize, chunk: usize, align: usize) -> std::ops::Range<usize> {
    let blocks = n.div_ceil(align);
    let at = |c: usize| ((blocks * c / chunks) * align).min(n);
    at(chunk)..at(chunk + 1)
}

/// Cost units (state values, an exponential counting [`EXP_COST`]) per chunk of a scan / SSD step.
const MIN_STATE_COST_PER_CHUNK: usize = 1 << 13;
/// A selective-scan state value costs an exponential; an SSD one a few multiply-adds.
const EXP_COST: usize = 8;

/// The units (channels of a scan, heads of an SSD) of chunk `chunk`, and each unit's state size
/// and output width.
fn stateful_chunk(node: &ir::Node, graph: &ir::Graph, chunks: usize, chunk: usize) -> (std::ops::Range<usize>, usize, usize) {
    match node.op {
        Op::Ssd { heads, head_dim, d_state, .. } => (chunk_range(heads, chunks, chunk, 1), head_dim * d_state, head_dim),
        Op::SelectiveScan { a_log, .. } => {
            let shape = &graph.weight(a_log).shape;
            (chunk_range(shape[0], chunks, chunk, 4), shape[1], 1)
        }
        _ => (0..0, 0, 0),
    }
}

/// `out[i] = f(x[i], scale of i's channel)` over rows of `width`, with a per-tensor (`[1]`) or
/// per-channel (`[width]`) scale; written as plain zips so that it vectorises.
fn per_channel<X: Copy, Y>(scale: &[f32], width: usize, x: &[X], out: &mut [Y], f: impl Fn(X, f32) -> Y) {
    for (o, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        if let [s] = scale {
            for (o, x) in o.iter_mut().zip(x) {
                *o = f(*x, *s);
            }
        } else {
            for ((o, x), s) in o.iter_mut().zip(x).zip(scale) {
                *o = f(*x, *s);
            }
        }
    }
}

/// Computes chunks of the plan's products, on any thread of the team.
struct Runner<'a> {
    exec: &'a Executor,
    batch: usize,
}

impl ChunkRunner for Runner<'_> {
    fn run_chunk(&self, op: usize, chunk: usize, chunks: usize, input: &BoardInput, out: &mut Vec<f32>) {
        let exec = self.exec;
        let plan_op = &exec.step.ops[op];
        let node = exec.graph.node(plan_op.value);
        let out_dim = node.ty.width().unwrap_or(0);
        let cols = chunk_columns(out_dim, chunks, chunk);
        out.clear();
        out.resize(self.batch * cols.len(), 0.0);
        let w = |id: ir::WeightId| exec.weights.get(id).values.as_slice();
        if let Some(kernel) = exec.jit_qlinear.get(&plan_op.value) {
            for (row, dst) in input.rows.iter().zip(out.chunks_exact_mut(cols.len().max(1))) {
                kernel.gemv_into(row, cols.clone(), dst);
            }
            return;
        }
        if let (Op::SelectiveScan { .. } | Op::Ssd { .. }, Some(shared)) = (&node.op, &input.state) {
            let (units, unit_state, unit_width) = stateful_chunk(node, &exec.graph, chunks, chunk);
            let (n_units, row_state) = match node.op {
                Op::Ssd { heads, .. } => (heads, heads * unit_state),
                _ => (out_dim, out_dim * unit_state),
            };
            out.resize(self.batch * units.len() * unit_width, 0.0);
            let ops = &input.operands;
            for (bi, y) in out.chunks_exact_mut((units.len() * unit_width).max(1)).enumerate() {
                let range = bi * row_state + units.start * unit_state..bi * row_state + units.end * unit_state;
                // SAFETY: chunk indices are claimed once per job, and chunk `chunk`'s ranges (these
                // units of each sequence's state) are disjoint from every other chunk's.
                let st = unsafe { shared.range(range) };
                match &node.op {
                    Op::SelectiveScan { d, .. } => {
                        let d_state = unit_state;
                        let row = scan::StepRow { x: &ops[0][bi * n_units..][..n_units], dt: &ops[1][bi * n_units..][..n_units], b: &ops[2][bi * d_state..][..d_state], c: &ops[3][bi * d_state..][..d_state] };
                        scan::selective_scan_channels(&row, units.clone(), &exec.step.scan_a[&plan_op.value], w(*d), st, y);
                    }
                    Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max } => {
                        let shape = ssd::SsdShape { seq: 1, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                        let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                        let (width, gn) = (heads * head_dim, groups * d_state);
                        let rows = [&ops[0][bi * width..][..width], &ops[1][bi * heads..][..*heads], &ops[2][bi * gn..][..gn], &ops[3][bi * gn..][..gn]];
                        ssd::ssd_step_heads(rows, units.clone(), shape, &params, st, y);
                    }
                    _ => {}
                }
            }
            return;
        }
        let (weight, bias): (&[f32], Option<&[f32]>) = match node.op {
            Op::Linear { weight, bias } => (w(weight), bias.map(w)),
            Op::LmHead { weight } => (w(weight), None),
            Op::QLinear { weight, bias, act_scale: None, .. } => (&exec.dequantized[&weight], bias.map(w)),
            _ => return,
        };
        let in_dim = input.data.len() / self.batch.max(1);
        for (x, dst) in input.data.chunks_exact(in_dim.max(1)).zip(out.chunks_exact_mut(cols.len().max(1))) {
            for (o, d) in cols.clone().zip(dst.iter_mut()) {
                *d = super::dot(&weight[o * in_dim..(o + 1) * in_dim], x);
                if let Some(b) = bias {
                    *d += b[o];
                }
            }
        }
    }
}

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
                    let Op::Quantize { scale } = node.op else {
                        return Err(RuntimeError::Internal(format!("the decode plan gave an int8 buffer to {}", node.op.name())));
                    };
                    let mut out = std::mem::take(&mut i8s[o]);
                    let x = &f32s[f32_in(0)];
                    match self.jit_quantize.get(&op.value) {
                        Some(kernel) => kernel.forward_into(x, &mut out)?,
                        None => per_channel(w(scale), width, x, &mut out, quant::quantize_one),
                    }
                    i8s[o] = out;
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
                scan::selective_scan_step(x, dt, b, c, batch, width, d_state, &self.step.scan_a[&value], w(*d), st, out);
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max } => {
                let shape = ssd::SsdShape { seq: 1, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                ssd::ssd_step(x, dt, b, c, batch, shape, &params, st, out);
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
            Op::Embedding { table } | Op::QEmbedding { table, .. } => {
                let table = w(*table);
                let in_table = table.len() / width.max(1);
                for (dst, &t) in out.chunks_exact_mut(width).zip(tokens) {
                    if t < 0 || t as usize >= in_table {
                        return Err(Some(RuntimeError::Input(format!("token id {t} is outside the vocabulary (0..{in_table})"))));
                    }
                    let src = &table[t as usize * width..][..width];
                    match node.op {
                        Op::QEmbedding { scales, group, .. } => {
                            let per_row = width / group;
                            let scales = &w(scales)[t as usize * per_row..][..per_row];
                            for (k, (d, q)) in dst.iter_mut().zip(src).enumerate() {
                                *d = q * scales[k / group];
                            }
                        }
                        _ => dst.copy_from_slice(src),
                    }
                }
            }
            Op::RmsNorm { weight, eps } => {
                out.copy_from_slice(x(0));
                for row in out.chunks_exact_mut(width) {
                    norm::rms_norm_in_place(row, weight.map(w), *eps);
                }
            }
            Op::Quantize { scale } => {
                // Fused with the dequantize that reads it (the same scale).
                per_channel(w(*scale), width, x(0), out, |v, s| quant::quantize_value(v, s) * s);
            }
            Op::Dequantize { scale } => {
                per_channel(w(*scale), width, &i8s[i8_in(0)], out, |q, s| q as f32 * s);
            }
            Op::QLinear { weight, scales, bias, group, act_scale: Some(s) } if !self.jit_qlinear.contains_key(&op.value) => {
                // Reference integer kernel (no generated one for this layer).
                let in_dim = i8s[i8_in(0)].len() / batch;
                let ints = &self.int_weights[weight];
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
                let kernel = self.weights.get(*weight).shape[2];
                let st = state.buffers.get_mut(&op.value).ok_or(None)?;
                conv::causal_conv1d_step(x(0), batch, width, &self.step.taps[&op.value], kernel, bias.map(w), st, out, op.fused == Fused::Silu);
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
            Op::GatedRmsNorm { weight, groups, eps } => {
                for ((dst, y), z) in out.chunks_exact_mut(width).zip(x(0).chunks_exact(width)).zip(x(1).chunks_exact(width)) {
                    norm::gated_rms_norm_row(y, z, dst, w(*weight), *groups, *eps);
                }
            }
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
