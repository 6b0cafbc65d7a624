//! Building the decode plan: fusions, buffer assignment with reuse, per-op precomputed data.

use std::collections::HashMap;

use ir::{Activation, Op, ValueId};

use super::super::team::Board;
use super::super::{conv, Executor};

/// Fewest multiply-adds per chunk of a shared product: below it a chunk costs more to hand over
/// than to compute (mamba1's x_proj, 64 × 1024, stays on the calling thread).
pub(super) const MIN_MACS_PER_CHUNK: usize = 1 << 16;
/// Cost of an f32 multiply-add in [`MIN_MACS_PER_CHUNK`] units (an int8 one costs 1).
const F32_MAC_COST: usize = 4;
/// Most chunks per product and thread: enough to balance two threads when one is interrupted.
pub(super) const CHUNKS_PER_THREAD: usize = 4;

/// Where a value lives during a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Buf {
    /// No data (the token input).
    None,
    F32(usize),
    I8(usize),
}

/// An op fused into the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fused {
    None,
    /// quantize → dequantize with the same scale: x ↦ round(x / s)·s.
    Dequantize,
    /// causal_conv1d → silu.
    Silu,
    /// rms_norm → quantize (its only reader), on the generated kernel that writes the int8
    /// bytes directly: the pair's output is the quantize's.
    Quantize,
}

/// One op of the plan.
pub(super) struct PlanOp {
    /// The node that runs (the first of a fused pair).
    pub(super) value: ValueId,
    pub(super) inputs: Vec<Buf>,
    pub(super) out: Buf,
    pub(super) fused: Fused,
    /// Cost of a product in int8 multiply-adds (0 for other ops): decides how many chunks it is
    /// shared in.
    pub(super) macs: usize,
    pub(super) label: &'static str,
}

/// The decode plan of a graph.
pub(in crate::cpu) struct StepPlan {
    pub(super) ops: Vec<PlanOp>,
    /// Width of each f32 / i8 buffer (per sequence).
    pub(super) f32_widths: Vec<usize>,
    pub(super) i8_widths: Vec<usize>,
    pub(super) output: usize,
    /// Conv weights in tap-major order, and −exp(a_log) of each selective scan, by node.
    pub(super) taps: HashMap<ValueId, Vec<f32>>,
    pub(super) scan_a: HashMap<ValueId, Vec<f32>>,
    /// Whether every op is safe to run beside spinning helpers (none forks onto the rayon pool,
    /// where a thread waiting inside a fork could pick up a helper and never return to publish).
    pub(super) team_safe: bool,
}

/// Buffers of a step, kept between steps.
pub(in crate::cpu) struct Scratch {
    pub(super) batch: usize,
    pub(super) f32s: Vec<Vec<f32>>,
    pub(super) i8s: Vec<Vec<i8>>,
    pub(super) board: Board,
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
        // A quantize → dequantize pair of the same scale (what the pair fuses into).
        let fake_quant = |q: ValueId| match graph.node(q).op {
            Op::Quantize { scale } => only_reader(q).is_some_and(|d| matches!(graph.node(d).op, Op::Dequantize { scale: s } if s == scale)),
            _ => false,
        };
        for v in order {
            // A node fused into the one before it cannot start a fusion of its own.
            if absorbed.contains_key(v) {
                continue;
            }
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
                // Only where the norm's kernel quantizes (the Rust kernels would need the f32
                // row in a buffer anyway), and where the int8 values are read as such (a
                // quantize → dequantize pair fuses into one f32 pass instead).
                (Op::RmsNorm { .. }, Op::Quantize { .. }) if exec.jit_steps.norm.get(v).is_some_and(|k| k.quantizes()) && !fake_quant(u) => {
                    fused.insert(*v, Fused::Quantize);
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
            let is_i8 = (matches!(node.op, Op::Quantize { .. }) && f == Fused::None) || f == Fused::Quantize;
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
                Op::QLinear { .. } | Op::Linear { .. } | Op::LmHead { .. } => {
                    let macs = width * graph.node(graph.inputs(*v)[0]).ty.width().unwrap_or(0);
                    // An f32 product reads four bytes of weight per multiply-add and runs on
                    // `dot`, not a generated int8 kernel: count it as several (mamba1's dt_proj,
                    // 1024 × 32, then is worth sharing).
                    let int8 = matches!(node.op, Op::QLinear { act_scale: Some(_), .. });
                    (if int8 { macs } else { macs * F32_MAC_COST }, node.op.name())
                }
                _ => (
                    0,
                    match f {
                        Fused::Dequantize => "quantize+dequantize",
                        Fused::Silu => "causal_conv1d+silu",
                        Fused::Quantize => "rms_norm+quantize",
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
                // A generated kernel holds its own tap-major copy.
                Op::CausalConv1d { weight, .. } if !exec.jit_steps.conv.contains_key(v) => {
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
