//! The FP32 CPU executor: interprets a verified graph op by op over whole sequences.
//!
//! One graph serves prefill and decode: `causal_conv1d`, `selective_scan` and `ssd` read and
//! update a per-sequence [`State`], so feeding a prompt in one call or token by token gives the
//! same logits (to a few f32 roundings: see below). Work inside each op is spread over the rayon
//! thread pool.
//!
//! A call with one token per sequence (decode) runs on the decode plan of `step/` instead: the
//! same ops on buffers kept between steps, small ops on the calling thread, products and scan /
//! SSD steps shared by a team of spinning threads (`team.rs`), with vectorisable exponentials
//! (`fastmath.rs`); `quambac bench --profile` times each op on both.

pub(crate) mod conv;
pub(crate) mod fastmath;
pub mod linear;
pub(crate) mod norm;
pub mod profile;
pub mod qgemm_avx512;
pub mod quant;
pub(crate) mod scan;
pub(crate) mod scan_lanes;
pub(crate) mod ssd;
pub(crate) mod state_quant;
mod step;
mod team;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use ir::{Activation, Graph, Op, ValueId, VerifiedGraph};

use crate::jit::{HostJit, JitQLinear, JitQuantize, StepKernels};
use crate::{RuntimeError, WeightData, Weights};

pub use linear::dot;
pub use profile::OpProfile;

/// One sequence's operands of a recurrent step: x, dt (before softplus), B and C. For the scan,
/// x and dt are `[d_inner]` and B, C `[d_state]`; for the SSD, x is `[heads · head_dim]`, dt
/// `[heads]` and B, C `[groups · d_state]`.
pub(crate) struct StepRow<'a> {
    /// x.
    pub x: &'a [f32],
    /// dt (before softplus).
    pub dt: &'a [f32],
    /// B.
    pub b: &'a [f32],
    /// C.
    pub c: &'a [f32],
}

impl<'a> StepRow<'a> {
    /// Sequence `bi`'s rows of the `[batch, ·]` operands `[x, dt, b, c]`, whose rows are
    /// `widths` = `[x, dt, B and C]` wide.
    pub(crate) fn of_sequence([x, dt, b, c]: [&'a [f32]; 4], bi: usize, [x_width, dt_width, bc_width]: [usize; 3]) -> StepRow<'a> {
        StepRow { x: &x[bi * x_width..][..x_width], dt: &dt[bi * dt_width..][..dt_width], b: &b[bi * bc_width..][..bc_width], c: &c[bi * bc_width..][..bc_width] }
    }
}

/// softplus with PyTorch's default threshold: linear above 20, where ln(1+eˣ) = x in f32.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Logits for every position: `[batch, seq, vocab]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Vocabulary rows of the head.
    pub vocab: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Logits {
    /// The logits of sequence `b` at position `t`.
    pub fn row(&self, b: usize, t: usize) -> &[f32] {
        &self.data[(b * self.seq + t) * self.vocab..][..self.vocab]
    }
}

/// Recurrent state of a batch of sequences: conv histories and SSM states, one buffer per
/// stateful node. A fresh state means "no tokens seen yet".
#[derive(Clone, Debug)]
pub struct State {
    batch: usize,
    buffers: HashMap<ValueId, Vec<f32>>,
    /// Tokens consumed so far per sequence.
    pub position: usize,
}

impl State {
    /// Number of sequences this state holds.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The recurrent state of stateful node `v` (`[batch][..]`: a scan's `[channel][d_state]`
    /// per sequence, a conv's `[kernel − 1][channel]`), if the graph has that node.
    pub fn buffer(&self, v: ValueId) -> Option<&[f32]> {
        self.buffers.get(&v).map(Vec::as_slice)
    }
}

/// A step of the precomputed schedule.
struct Step {
    value: ValueId,
    inputs: Vec<usize>,
    /// Slots whose last use is this step; freed afterwards.
    frees: Vec<usize>,
}

/// What runs the integer ops: int8-activation `qlinear` layers and `quantize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelBackend {
    /// Native kernels generated for this CPU at load ([`crate::jit`]); an op whose shape has no
    /// generated kernel uses the reference. The integer weights' f32 copies are dropped once packed.
    Jit,
    /// Like [`KernelBackend::Jit`], and every op with a generated kernel runs on it even where the
    /// Rust loop of the same values times faster (the selective scan and SSD steps are chosen by
    /// a timing at load otherwise): for tests of the generated kernels inside whole models.
    JitEverywhere,
    /// The integer reference kernels of [`quant`] (the oracle).
    Reference,
}

/// Executes a verified graph on the CPU in f32.
pub struct Executor {
    graph: VerifiedGraph,
    weights: Weights,
    /// Integer weights of the int8-activation linears without a generated kernel, as f32
    /// integers, for the reference prefill product (an exact f32 GEMM; decode reads the weights'
    /// own i8 values).
    int_weights_f32: HashMap<ir::WeightId, Vec<f32>>,
    /// Weight-only quantized linears (f32 operand) see their weights dequantized once.
    dequantized: HashMap<ir::WeightId, Vec<f32>>,
    /// Generated kernels of the int8-activation linears, by node.
    jit_qlinear: HashMap<ValueId, JitQLinear>,
    /// Generated kernels of the activation quantizations, by node.
    jit_quantize: HashMap<ValueId, JitQuantize>,
    /// Generated kernels of the other ops (scan, SSD and conv steps, norms, Hadamard).
    jit_steps: StepKernels,
    /// Quantizations whose only user dequantizes them with the same scale (the SSM inputs'
    /// fake quantization): they produce the dequantized f32 values directly, in one pass, and
    /// those dequantizations (`fake_quant_users`) take them over as they are.
    fake_quant: HashSet<ValueId>,
    fake_quant_users: HashSet<ValueId>,
    schedule: Vec<Step>,
    output_slot: usize,
    vocab: usize,
    /// The decode plan (one token per sequence), see [`step`].
    step: step::StepPlan,
    /// The decode plan's buffers, kept between steps (a concurrent caller makes its own).
    scratch: Mutex<Option<step::Scratch>>,
    /// Scans whose state is kept in int8 between calls.
    int8_states: Vec<state_quant::CachedStateQuant>,
}

/// A `[batch, seq, width]` activation: f32, or i8 after a `quantize`.
struct Act {
    width: usize,
    data: Vec<f32>,
    ints: Vec<i8>,
}

/// What an op produced.
enum Out {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

impl Executor {
    /// Prepares `graph` for execution with `weights` (one entry per declared weight), quantized
    /// linears and quantizations on kernels generated for the host where it supports them.
    pub fn new(graph: VerifiedGraph, weights: Weights) -> Result<Executor, RuntimeError> {
        Executor::with_kernel_backend(graph, weights, KernelBackend::Jit)
    }

    /// Like [`Executor::new`], choosing what runs the integer ops.
    pub fn with_kernel_backend(graph: VerifiedGraph, mut weights: Weights, backend: KernelBackend) -> Result<Executor, RuntimeError> {
        weights.check_against(&graph)?;
        hold_integers_as_ints(&graph, &mut weights);
        let order = graph.topo_order().ok_or_else(|| RuntimeError::Input("verified graph has a cycle".into()))?;
        let slot: HashMap<ValueId, usize> = order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let outputs = graph.outputs();
        if outputs.len() != 1 {
            return Err(RuntimeError::Input(format!("the CPU executor runs graphs with one output (logits), this one has {}", outputs.len())));
        }
        let output_slot = slot[&outputs[0]];
        let vocab = graph.node(outputs[0]).ty.width().unwrap_or(0);
        let mut last_use = vec![0usize; order.len()];
        let mut schedule: Vec<Step> = order
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let inputs: Vec<usize> = graph.inputs(*v).iter().map(|x| slot[x]).collect();
                for &s in &inputs {
                    last_use[s] = i;
                }
                Step { value: *v, inputs, frees: Vec::new() }
            })
            .collect();
        for (s, &i) in last_use.iter().enumerate() {
            if s != output_slot && i > 0 {
                schedule[i].frees.push(s);
            }
        }
        let (jit_qlinear, jit_quantize, jit_steps) = match backend {
            // No code generator for this host (unknown ISA): every op stays on the reference.
            KernelBackend::Jit | KernelBackend::JitEverywhere => match HostJit::new() {
                Ok(jit) => {
                    let steps = StepKernels::new(&graph, &order, &weights, &jit, backend == KernelBackend::JitEverywhere);
                    let (qlinear, quantize) = jit_kernels(&jit, &graph, &order, &mut weights);
                    (qlinear, quantize, steps)
                }
                Err(_) => Default::default(),
            },
            KernelBackend::Reference => Default::default(),
        };
        let mut int_weights_f32 = HashMap::new();
        let mut dequantized = HashMap::new();
        for v in order.iter().filter(|v| !jit_qlinear.contains_key(v)) {
            match graph.node(*v).op {
                Op::QLinear { weight, scales, group, act_scale: None, .. } => {
                    let in_dim = graph.weight(weight).shape[1];
                    dequantized.entry(weight).or_insert_with(|| quant::dequantize_weight(&weights.get(weight).floats(), &weights.get(scales).values, in_dim, group));
                }
                Op::QLinear { weight, act_scale: Some(_), .. } => {
                    int_weights_f32.entry(weight).or_insert_with(|| weights.get(weight).floats().into_owned());
                }
                _ => {}
            }
        }
        let (fake_quant, fake_quant_users) = fake_quant_pairs(&graph, &order);
        let int8_states = state_quant::CachedStateQuant::of_graph(&graph, &order, &weights)?;
        let mut exec = Executor {
            graph,
            weights,
            int_weights_f32,
            dequantized,
            jit_qlinear,
            jit_quantize,
            jit_steps,
            fake_quant,
            fake_quant_users,
            schedule,
            output_slot,
            vocab,
            step: step::StepPlan::empty(),
            scratch: Mutex::new(None),
            int8_states,
        };
        exec.step = step::StepPlan::new(&exec, &order);
        Ok(exec)
    }

    /// The graph being executed.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The verified graph being executed (what other backends plan from).
    pub fn verified_graph(&self) -> &VerifiedGraph {
        &self.graph
    }

    /// The weight data, as the graph's weight table orders it.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// How many ops run on generated kernels (0 on the reference backend).
    pub fn generated_kernel_count(&self) -> usize {
        self.jit_qlinear.len() + self.jit_quantize.len() + self.jit_steps.len()
    }

    /// Rows of the logits (the head's vocabulary, padding included).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// A fresh state for `batch` sequences.
    pub fn new_state(&self, batch: usize) -> State {
        let mut buffers = HashMap::new();
        for step in &self.schedule {
            let node = self.graph.node(step.value);
            let len = match &node.op {
                Op::CausalConv1d { weight, .. } => {
                    let shape = &self.graph.weight(*weight).shape;
                    shape[0] * (shape[2] - 1)
                }
                Op::SelectiveScan { a_log, .. } => self.graph.weight(*a_log).shape.iter().product(),
                Op::Ssd { heads, head_dim, d_state, .. } => heads * head_dim * d_state,
                _ => continue,
            };
            buffers.insert(step.value, vec![0.0; batch * len]);
        }
        State { batch, buffers, position: 0 }
    }

    /// Runs `tokens` (`[state.batch(), seq]`, row-major) through the model, continuing from
    /// `state`, and returns the logits of every position.
    pub fn forward(&self, state: &mut State, tokens: &[i64]) -> Result<Logits, RuntimeError> {
        // Run the whole call on a pool worker: a parallel op started from a worker runs its first
        // part in place and lets idle workers steal the rest, while one started from outside the
        // pool is injected and waited for — a thread hand-off per op, which dominated decode.
        self.forward_profiled(state, tokens, true, None)
    }

    /// Like [`Executor::forward`], adding each op's wall time to `profile`; `step_plan: false`
    /// runs decode steps on the general interpreter too (what `quambac bench --profile` compares).
    pub fn forward_profiled(&self, state: &mut State, tokens: &[i64], step_plan: bool, profile: Option<&mut OpProfile>) -> Result<Logits, RuntimeError> {
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_on_worker(state, tokens, step_plan, profile));
        }
        self.forward_on_worker(state, tokens, step_plan, profile)
    }

    fn forward_on_worker(&self, state: &mut State, tokens: &[i64], step_plan: bool, profile: Option<&mut OpProfile>) -> Result<Logits, RuntimeError> {
        let logits = self.forward_uncached(state, tokens, step_plan, profile)?;
        self.store_int8_states(state);
        Ok(logits)
    }

    /// Rounds the states that the graph keeps in int8 to their int8 values, as the end of every
    /// call does (see [`ir::StateQuant`]).
    fn store_int8_states(&self, state: &mut State) {
        for rule in &self.int8_states {
            if let Some(buffer) = state.buffers.get_mut(&rule.value) {
                rule.apply(buffer);
            }
        }
    }

    fn forward_uncached(&self, state: &mut State, tokens: &[i64], step_plan: bool, profile: Option<&mut OpProfile>) -> Result<Logits, RuntimeError> {
        if step_plan && state.batch > 0 && tokens.len() == state.batch && self.step.usable() {
            // One token per sequence: the decode plan, on buffers kept from the last step.
            let cached = self.scratch.try_lock().ok().and_then(|mut s| s.take()).filter(|s| s.fits(state.batch, rayon::current_num_threads()));
            let mut scratch = cached.unwrap_or_else(|| self.step.scratch(state.batch));
            let logits = self.step(state, tokens, &mut scratch, profile);
            if let Ok(mut slot) = self.scratch.try_lock() {
                *slot = Some(scratch);
            }
            return logits;
        }
        self.forward_inner(state, tokens, &mut |_, _, _| {}, profile, true)
    }

    /// Like [`Executor::forward`], and shows every f32 value to `observe` (value id, data
    /// `[batch·seq, width]`, width) as soon as it is computed: calibration reads activations this way.
    pub fn forward_observed(&self, state: &mut State, tokens: &[i64], observe: &mut dyn FnMut(ValueId, &[f32], usize)) -> Result<Logits, RuntimeError> {
        let logits = self.forward_inner(state, tokens, observe, None, true)?;
        self.store_int8_states(state);
        Ok(logits)
    }

    /// [`Executor::forward_observed`] without the vocabulary projection, whose logits
    /// calibration never reads (an 8B model's head is a seventh of its multiply-adds): every
    /// other value is computed and shown as there, and the state advances the same.
    pub fn observe_activations(&self, state: &mut State, tokens: &[i64], observe: &mut dyn FnMut(ValueId, &[f32], usize)) -> Result<(), RuntimeError> {
        self.forward_inner(state, tokens, observe, None, false)?;
        self.store_int8_states(state);
        Ok(())
    }

    fn forward_inner(&self, state: &mut State, tokens: &[i64], observe: &mut dyn FnMut(ValueId, &[f32], usize), mut profile: Option<&mut OpProfile>, logits: bool) -> Result<Logits, RuntimeError> {
        let batch = state.batch;
        if batch == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(batch) {
            return Err(RuntimeError::Input(format!("{} tokens cannot be split into {batch} equal non-empty sequences", tokens.len())));
        }
        let seq = tokens.len() / batch;
        let mut slots: Vec<Option<Act>> = (0..self.schedule.len()).map(|_| None).collect();
        for (index, step) in self.schedule.iter().enumerate() {
            if self.fake_quant_users.contains(&step.value) {
                // The fake-quantizing op before it already holds the dequantized values.
                let start = std::time::Instant::now();
                let act = slots[step.inputs[0]].take().expect("operands are computed before use");
                if let Some(p) = profile.as_deref_mut() {
                    p.add("quantize+dequantize", start);
                }
                observe(step.value, &act.data, act.width);
                slots[index] = Some(act);
                for &f in &step.frees {
                    slots[f] = None;
                }
                continue;
            }
            let node = self.graph.node(step.value);
            if !logits && matches!(node.op, Op::LmHead { .. }) {
                for &f in &step.frees {
                    slots[f] = None;
                }
                continue;
            }
            let width = node.ty.width().unwrap_or(0);
            let start = std::time::Instant::now();
            let act = match self.in_place_operand(step, &slots, &node.op, width) {
                // An element-wise op on an f32 operand read by nothing later: rewrite its buffer
                // in place (no allocation, no page faults on a fresh one, half the memory traffic).
                Some(first) => {
                    let mut act = slots[first].take().expect("operands are computed before use");
                    let other = step.inputs.get(1).map(|&s| slots[s].as_ref().expect("operands are computed before use"));
                    self.run_in_place(step.value, &node.op, width, &mut act.data, other)?;
                    act
                }
                None => {
                    let inputs: Vec<&Act> = step.inputs.iter().map(|&s| slots[s].as_ref().expect("operands are computed before use")).collect();
                    match self.run_op(step.value, &node.op, &inputs, tokens, batch, seq, width, state.buffers.get_mut(&step.value))? {
                        Out::F32(data) => Act { width, data, ints: Vec::new() },
                        Out::I8(ints) => Act { width, data: Vec::new(), ints },
                    }
                }
            };
            let fake_quant = self.fake_quant.contains(&step.value);
            if let Some(p) = profile.as_deref_mut() {
                p.add(if fake_quant { "quantize+dequantize" } else { node.op.name() }, start);
            }
            if !act.data.is_empty() && !fake_quant {
                observe(step.value, &act.data, width);
            }
            slots[index] = Some(act);
            for &f in &step.frees {
                slots[f] = None;
            }
        }
        state.position += seq;
        if !logits {
            return Ok(Logits { batch, seq, vocab: 0, data: Vec::new() });
        }
        let out = slots[self.output_slot].take().expect("the output slot is never freed");
        Ok(Logits { batch, seq, vocab: out.width, data: out.data })
    }

    /// The slot of `step`'s first operand where [`Executor::run_in_place`] can compute `op` in
    /// it: an element-wise op whose f32 operand nothing reads after this step.
    fn in_place_operand(&self, step: &Step, slots: &[Option<Act>], op: &Op, width: usize) -> Option<usize> {
        let element_wise = match op {
            Op::Activation { .. } | Op::Hadamard | Op::Mul | Op::Add => true,
            Op::Quantize { .. } => self.fake_quant.contains(&step.value),
            _ => false,
        };
        let &first = step.inputs.first()?;
        let last_read = step.frees.contains(&first) && step.inputs.iter().filter(|&&s| s == first).count() == 1;
        let operand_fits = slots[first].as_ref().is_some_and(|a| a.width == width && !a.data.is_empty());
        (element_wise && last_read && operand_fits).then_some(first)
    }

    /// Row `token` of the table of an `Embedding` or `QEmbedding` op (`op`), dequantized for the
    /// latter, into `out` (`width` values); a token outside the table is an input error.
    fn embedding_row(&self, op: &Op, token: i64, out: &mut [f32]) -> Result<(), RuntimeError> {
        let width = out.len();
        let (Op::Embedding { table } | Op::QEmbedding { table, .. }) = op else {
            return Err(RuntimeError::Input(format!("{} is not an embedding", op.name())));
        };
        let data = self.weights.get(*table);
        let rows = data.count() / width.max(1);
        if token < 0 || token as usize >= rows {
            return Err(RuntimeError::Input(format!("token id {token} is outside the vocabulary (0..{rows})")));
        }
        let t = token as usize;
        match op {
            // The verifier makes a quantized table i8 / i4, which the executor holds as integers.
            Op::QEmbedding { scales, group, .. } => {
                let scales = &self.weights.get(*scales).values[t * (width / group)..][..width / group];
                for (k, (dst, q)) in out.iter_mut().zip(&data.ints[t * width..][..width]).enumerate() {
                    *dst = f32::from(*q) * scales[k / group];
                }
            }
            _ => out.copy_from_slice(&data.values[t * width..][..width]),
        }
        Ok(())
    }

    /// [`Executor::run_in_place`] on a copy of the first operand.
    fn run_on_copy(&self, value: ValueId, op: &Op, width: usize, inputs: &[&Act]) -> Result<Vec<f32>, RuntimeError> {
        let mut out = inputs[0].data.clone();
        self.run_in_place(value, op, width, &mut out, inputs.get(1).copied())?;
        Ok(out)
    }

    /// `op` on `data` in place (its first operand, `[rows, width]`; `other` the second one of a
    /// binary op): the values `run_op` gives.
    fn run_in_place(&self, value: ValueId, op: &Op, width: usize, data: &mut [f32], other: Option<&Act>) -> Result<(), RuntimeError> {
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        let block = (width * 16).max(1);
        match op {
            // The vectorisable forms the decode plan uses too (within a few ulp of libm's).
            Op::Activation { kind: Activation::Silu } => data.par_chunks_mut(block).for_each(|c| c.iter_mut().for_each(|v| *v = fastmath::silu(*v))),
            Op::Activation { kind: Activation::Softplus } => data.par_chunks_mut(block).for_each(|c| c.iter_mut().for_each(|v| *v = fastmath::softplus(*v))),
            // The decode plan's fused quantize -> dequantize, over blocks of rows across threads.
            Op::Quantize { scale } => {
                let scale = w(*scale);
                data.par_chunks_mut((width * 64).max(1)).for_each(|rows| quant::per_channel_in_place(scale, width, rows, |v, s| quant::quantize_value(v, s) * s));
            }
            Op::Hadamard => match self.jit_steps.hadamard.get(&value) {
                Some(kernel) => {
                    let rows = (64 * width).max(1);
                    data.par_chunks_mut(rows).try_for_each(|rows| kernel.forward_in_place(rows))?;
                }
                None => data.par_chunks_mut((64 * width).max(1)).for_each(|rows| crate::hadamard::hadamard_rows(rows, width)),
            },
            Op::Mul | Op::Add => {
                let other = other.ok_or_else(|| RuntimeError::Input(format!("{} needs two operands", op.name())))?;
                if other.data.len() != data.len() {
                    return Err(RuntimeError::Input(format!("{} of {} and {} values", op.name(), data.len(), other.data.len())));
                }
                let add = matches!(op, Op::Add);
                data.par_chunks_mut(block).zip(other.data.par_chunks(block)).for_each(|(d, o)| {
                    if add {
                        d.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                    } else {
                        d.iter_mut().zip(o).for_each(|(a, b)| *a *= b);
                    }
                });
            }
            _ => return Err(RuntimeError::Input(format!("{} does not run in place", op.name()))),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_op(
        &self,
        value: ValueId,
        op: &Op,
        inputs: &[&Act],
        tokens: &[i64],
        batch: usize,
        seq: usize,
        width: usize,
        state: Option<&mut Vec<f32>>,
    ) -> Result<Out, RuntimeError> {
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        let rows = batch * seq;
        let missing_state = || RuntimeError::Input("state does not belong to this executor".into());
        Ok(Out::F32(match op {
            Op::Tokens => Vec::new(),
            Op::Embedding { .. } | Op::QEmbedding { .. } => {
                let mut out = vec![0.0f32; tokens.len() * width];
                for (dst, &t) in out.chunks_exact_mut(width.max(1)).zip(tokens) {
                    self.embedding_row(op, t, dst)?;
                }
                out
            }
            Op::Hadamard if self.jit_steps.hadamard.contains_key(&value) => self.jit_steps.hadamard[&value].forward(&inputs[0].data)?,
            // Element-wise ops whose operand is read again later: on a copy.
            Op::Hadamard | Op::Activation { .. } | Op::Mul | Op::Add => self.run_on_copy(value, op, width, inputs)?,
            Op::Quantize { .. } if self.fake_quant.contains(&value) => self.run_on_copy(value, op, width, inputs)?,
            Op::Quantize { .. } if self.jit_quantize.contains_key(&value) => return Ok(Out::I8(self.jit_quantize[&value].forward(&inputs[0].data)?)),
            Op::Quantize { scale } => return Ok(Out::I8(quant::quantize(&inputs[0].data, &quant::channel_scales(w(*scale), width)))),
            Op::Dequantize { scale } => quant::dequantize(&inputs[0].ints, &quant::channel_scales(w(*scale), width)),
            Op::QLinear { .. } if self.jit_qlinear.contains_key(&value) => self.jit_qlinear[&value].forward(&inputs[0].ints, rows)?,
            Op::QLinear { weight, scales, bias, group, act_scale } => match act_scale {
                // Many rows go through the exact-integer f32 GEMM; decode rows through the int8 dot.
                Some(s) if rows > 4 => quant::qlinear_i8_gemm(&inputs[0].ints, rows, inputs[0].width, &self.int_weights_f32[weight], width, w(*scales), *group, *s, bias.map(w)),
                Some(s) => {
                    let ints = &self.weights.get(*weight).ints;
                    quant::qlinear_i8(&inputs[0].ints, rows, inputs[0].width, ints, width, w(*scales), *group, *s, bias.map(w))
                }
                None => linear::linear(&inputs[0].data, rows, inputs[0].width, &self.dequantized[weight], width, bias.map(w)),
            },
            Op::RmsNorm { .. } if self.jit_steps.norm.contains_key(&value) => self.jit_steps.norm[&value].forward(&inputs[0].data)?,
            Op::RmsNorm { weight, eps } => norm::rms_norm(&inputs[0].data, width, weight.map(w), *eps),
            Op::Linear { weight, bias } => linear::linear(&inputs[0].data, rows, inputs[0].width, w(*weight), width, bias.map(w)),
            Op::LmHead { weight } => linear::linear(&inputs[0].data, rows, inputs[0].width, w(*weight), width, None),
            Op::CausalConv1d { .. } if self.jit_steps.conv.contains_key(&value) => {
                let st = state.ok_or_else(missing_state)?;
                self.jit_steps.conv[&value].sequence(&inputs[0].data, batch, seq, st, false)?
            }
            Op::CausalConv1d { weight, bias } => {
                let kernel = self.weights.get(*weight).shape[2];
                let st = state.ok_or_else(missing_state)?;
                conv::causal_conv1d(&inputs[0].data, batch, seq, width, conv::ConvTaps { weight: w(*weight), kernel, bias: bias.map(w) }, st)
            }
            Op::Split { start, end } => {
                let src = inputs[0];
                let part = end - start;
                let mut out = vec![0.0f32; rows * part];
                if part > 0 && src.width > 0 {
                    out.par_chunks_mut(part * 64).zip(src.data.par_chunks(src.width * 64)).for_each(|(dst, rows)| {
                        for (d, row) in dst.chunks_exact_mut(part).zip(rows.chunks_exact(src.width)) {
                            d.copy_from_slice(&row[*start..*end]);
                        }
                    });
                }
                out
            }
            Op::SelectiveScan { a_log, d, .. } => {
                let d_state = inputs[2].width;
                let st = state.ok_or_else(missing_state)?;
                scan::selective_scan(&inputs[0].data, &inputs[1].data, &inputs[2].data, &inputs[3].data, batch, seq, width, d_state, w(*a_log), w(*d), st, self.jit_steps.scan.get(&value))
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max, .. } => {
                let shape = ssd::SsdShape { seq, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                let st = state.ok_or_else(missing_state)?;
                ssd::ssd(&inputs[0].data, &inputs[1].data, &inputs[2].data, &inputs[3].data, shape, &params, st)
            }
            Op::GatedRmsNorm { .. } if self.jit_steps.gated_norm.contains_key(&value) => self.jit_steps.gated_norm[&value].forward(&inputs[0].data, &inputs[1].data)?,
            Op::GatedRmsNorm { weight, groups, eps } => norm::gated_rms_norm(&inputs[0].data, &inputs[1].data, width, w(*weight), *groups, *eps),
        }))
    }
}

/// Generated kernels for the int8-activation linears and the quantizations of `graph` whose
/// shapes have one; drops the f32 copies of weights that nothing else reads (the packed kernel
/// weights replace them).
fn jit_kernels(jit: &HostJit, graph: &Graph, order: &[ValueId], weights: &mut Weights) -> (HashMap<ValueId, JitQLinear>, HashMap<ValueId, JitQuantize>) {
    let mut kernels = HashMap::new();
    let mut quantizers = HashMap::new();
    for v in order {
        if let Op::Quantize { scale } = graph.node(*v).op {
            let width = graph.node(*v).ty.width().unwrap_or(0);
            if let Ok(kernel) = JitQuantize::new(jit, width, &weights.get(scale).values) {
                quantizers.insert(*v, kernel);
            }
        }
    }
    for v in order {
        let Op::QLinear { weight, scales, bias, group, act_scale: Some(act_scale) } = graph.node(*v).op else { continue };
        let decl = graph.weight(weight);
        let weight_bits = if decl.dtype == ir::DType::I4 { 4 } else { 8 };
        let spec = kernels::cpu::QLinearSpec { in_dim: decl.shape[1], group, weight_bits };
        let bias = bias.map(|b| weights.get(b).values.as_slice());
        // An unsupported shape keeps the reference kernel for this layer.
        if let Ok(kernel) = JitQLinear::new(jit, spec, &weights.get(weight).int_values(), decl.shape[0], &weights.get(scales).values, bias, act_scale) {
            kernels.insert(*v, kernel);
        }
    }
    let still_read: HashSet<ir::WeightId> = order
        .iter()
        .flat_map(|v| match graph.node(*v).op {
            Op::QLinear { weight, .. } if kernels.contains_key(v) => graph.node(*v).op.weights().into_iter().filter(|w| *w != weight).collect(),
            ref op => op.weights(),
        })
        .collect();
    for v in kernels.keys() {
        if let Op::QLinear { weight, .. } = graph.node(*v).op {
            if !still_read.contains(&weight) {
                weights.set(weight, WeightData::new(graph.weight(weight).shape.clone(), Vec::new()));
            }
        }
    }
    (kernels, quantizers)
}

/// Integer (i8 / i4) weights given as f32 integers (a graph the compiler built) are held as i8
/// from here on: a quarter of the memory, and what the integer kernels read.
fn hold_integers_as_ints(graph: &Graph, weights: &mut Weights) {
    for (i, decl) in graph.weights().iter().enumerate() {
        let id = ir::WeightId::new(i);
        let data = weights.get(id);
        if decl.dtype.is_quantized() && data.ints.is_empty() && !data.values.is_empty() {
            weights.set(id, WeightData::integers(data.shape.clone(), data.int_values().into_owned()));
        }
    }
}

/// The quantize → dequantize pairs a prefill computes in one pass (see `Executor::fake_quant`):
/// a quantization with exactly one user, a dequantization with the same scale, neither of them
/// a graph output.
fn fake_quant_pairs(graph: &Graph, order: &[ValueId]) -> (HashSet<ValueId>, HashSet<ValueId>) {
    let mut quantizations = HashSet::new();
    let mut users = HashSet::new();
    for &v in order {
        let Op::Dequantize { scale } = graph.node(v).op else { continue };
        let Some(&q) = graph.inputs(v).first() else { continue };
        let same_scale = matches!(graph.node(q).op, Op::Quantize { scale: s } if s == scale);
        if same_scale && graph.users(q) == [v] && !graph.outputs().contains(&q) && !graph.outputs().contains(&v) {
            quantizations.insert(q);
            users.insert(v);
        }
    }
    (quantizations, users)
}
