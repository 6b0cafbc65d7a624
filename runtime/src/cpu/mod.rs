//! The FP32 CPU executor: interprets a verified graph op by op over whole sequences.
//!
//! One graph serves prefill and decode: `causal_conv1d`, `selective_scan` and `ssd` read and
//! update a per-sequence [`State`], so feeding a prompt in one call or token by token gives the
//! same logits. Work inside each op is spread over the rayon thread pool.

mod conv;
mod linear;
mod norm;
mod scan;
mod ssd;

use std::collections::HashMap;

use ir::{Activation, Graph, Op, ValueId, VerifiedGraph};

use crate::{RuntimeError, Weights};

pub use linear::dot;

/// softplus with PyTorch's default threshold: linear above 20, where ln(1+eˣ) = x in f32.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// x·σ(x).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
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
}

/// A step of the precomputed schedule.
struct Step {
    value: ValueId,
    inputs: Vec<usize>,
    /// Slots whose last use is this step; freed afterwards.
    frees: Vec<usize>,
}

/// Executes a verified graph on the CPU in f32.
pub struct Executor {
    graph: VerifiedGraph,
    weights: Weights,
    schedule: Vec<Step>,
    output_slot: usize,
    vocab: usize,
}

/// A `[batch, seq, width]` activation.
struct Act {
    width: usize,
    data: Vec<f32>,
}

impl Executor {
    /// Prepares `graph` for execution with `weights` (one entry per declared weight).
    pub fn new(graph: VerifiedGraph, weights: Weights) -> Result<Executor, RuntimeError> {
        weights.check_against(&graph)?;
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
        Ok(Executor { graph, weights, schedule, output_slot, vocab })
    }

    /// The graph being executed.
    pub fn graph(&self) -> &Graph {
        &self.graph
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
        let batch = state.batch;
        if batch == 0 || tokens.is_empty() || tokens.len() % batch != 0 {
            return Err(RuntimeError::Input(format!("{} tokens cannot be split into {batch} equal non-empty sequences", tokens.len())));
        }
        let seq = tokens.len() / batch;
        let mut slots: Vec<Option<Act>> = (0..self.schedule.len()).map(|_| None).collect();
        for (index, step) in self.schedule.iter().enumerate() {
            let inputs: Vec<&Act> = step.inputs.iter().map(|&s| slots[s].as_ref().expect("operands are computed before use")).collect();
            let node = self.graph.node(step.value);
            let width = node.ty.width().unwrap_or(0);
            let data = self.run_op(&node.op, &inputs, tokens, batch, seq, width, state.buffers.get_mut(&step.value))?;
            slots[index] = Some(Act { width, data });
            for &f in &step.frees {
                slots[f] = None;
            }
        }
        state.position += seq;
        let out = slots[self.output_slot].take().expect("the output slot is never freed");
        Ok(Logits { batch, seq, vocab: out.width, data: out.data })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_op(
        &self,
        op: &Op,
        inputs: &[&Act],
        tokens: &[i64],
        batch: usize,
        seq: usize,
        width: usize,
        state: Option<&mut Vec<f32>>,
    ) -> Result<Vec<f32>, RuntimeError> {
        let w = |id: ir::WeightId| self.weights.get(id).values.as_slice();
        let rows = batch * seq;
        let missing_state = || RuntimeError::Input("state does not belong to this executor".into());
        Ok(match op {
            Op::Tokens => Vec::new(),
            Op::Embedding { table } => {
                let rows_in_table = self.weights.get(*table).shape[0];
                let mut out = Vec::with_capacity(rows * width);
                for &t in tokens {
                    if t < 0 || t as usize >= rows_in_table {
                        return Err(RuntimeError::Input(format!("token id {t} is outside the vocabulary (0..{rows_in_table})")));
                    }
                    out.extend_from_slice(&w(*table)[t as usize * width..][..width]);
                }
                out
            }
            Op::RmsNorm { weight, eps } => norm::rms_norm(&inputs[0].data, width, weight.map(w), *eps),
            Op::Linear { weight, bias } => linear::linear(&inputs[0].data, rows, inputs[0].width, w(*weight), width, bias.map(w)),
            Op::LmHead { weight } => linear::linear(&inputs[0].data, rows, inputs[0].width, w(*weight), width, None),
            Op::CausalConv1d { weight, bias } => {
                let kernel = self.weights.get(*weight).shape[2];
                let st = state.ok_or_else(missing_state)?;
                conv::causal_conv1d(&inputs[0].data, batch, seq, width, w(*weight), kernel, bias.map(w), st)
            }
            Op::Split { start, end } => {
                let src = inputs[0];
                let mut out = Vec::with_capacity(rows * (end - start));
                for row in src.data.chunks_exact(src.width) {
                    out.extend_from_slice(&row[*start..*end]);
                }
                out
            }
            Op::Activation { kind } => {
                let f = match kind {
                    Activation::Silu => silu,
                    Activation::Softplus => softplus,
                };
                inputs[0].data.iter().map(|v| f(*v)).collect()
            }
            Op::Mul => inputs[0].data.iter().zip(&inputs[1].data).map(|(a, b)| a * b).collect(),
            Op::Add => inputs[0].data.iter().zip(&inputs[1].data).map(|(a, b)| a + b).collect(),
            Op::SelectiveScan { a_log, d } => {
                let d_state = inputs[2].width;
                let st = state.ok_or_else(missing_state)?;
                scan::selective_scan(&inputs[0].data, &inputs[1].data, &inputs[2].data, &inputs[3].data, batch, seq, width, d_state, w(*a_log), w(*d), st)
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max } => {
                let shape = ssd::SsdShape { seq, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                let st = state.ok_or_else(missing_state)?;
                ssd::ssd(&inputs[0].data, &inputs[1].data, &inputs[2].data, &inputs[3].data, shape, &params, st)
            }
            Op::GatedRmsNorm { weight, groups, eps } => norm::gated_rms_norm(&inputs[0].data, &inputs[1].data, width, w(*weight), *groups, *eps),
        })
    }
}
