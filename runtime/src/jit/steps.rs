//! The generated float kernels of a graph's non-product ops (scan / SSD / conv steps, norms,
//! the Hadamard transform), by node. An op without one (its shape unsupported, or the reference
//! backend) runs the Rust kernels of [`crate::cpu`], which stay the oracle.

use std::collections::HashMap;

use ir::{Graph, Op, ValueId};

use super::{HostJit, JitConv, JitGatedRmsNorm, JitHadamard, JitRmsNorm, JitSelectiveScan, JitSsdStep};
use crate::cpu::ssd::SsdShape;
use crate::weights::Weights;

/// Generated kernels of an executor's non-product ops.
#[derive(Default)]
pub struct StepKernels {
    /// The causal conv1d nodes (decode step and prefill).
    pub conv: HashMap<ValueId, JitConv>,
    /// Mamba1 selective scans.
    pub scan: HashMap<ValueId, JitSelectiveScan>,
    /// Mamba2 SSD decode steps.
    pub ssd: HashMap<ValueId, JitSsdStep>,
    /// RMSNorms, by node. One whose only reader is a quantize also gets the kernel that writes
    /// that quantize's int8 result, which the decode plan fuses the pair onto (unless the
    /// quantize is itself fused with a dequantize).
    pub norm: HashMap<ValueId, JitRmsNorm>,
    /// Gated RMSNorms, by node.
    pub gated_norm: HashMap<ValueId, JitGatedRmsNorm>,
    /// Hadamard transforms, by node.
    pub hadamard: HashMap<ValueId, JitHadamard>,
}

impl StepKernels {
    /// Kernels for every op of `graph` (in `order`) that has one on this host; `everywhere` keeps
    /// the scan and SSD steps' kernels even where the Rust loops time faster.
    pub fn new(graph: &Graph, order: &[ValueId], weights: &Weights, jit: &HostJit, everywhere: bool) -> StepKernels {
        let mut kernels = StepKernels { conv: conv_kernels(graph, order, weights, jit), ..StepKernels::default() };
        kernels.add_norms(graph, order, weights, jit);
        // Per shape: whether the generated scan / SSD step beats the Rust one here (timed once).
        let mut scan_wins: HashMap<(usize, usize), bool> = HashMap::new();
        let mut ssd_wins: HashMap<(usize, usize, usize, usize), bool> = HashMap::new();
        for v in order {
            if let Op::Ssd { heads, head_dim, groups, d_state, chunk, .. } = graph.node(*v).op {
                let shape = SsdShape { seq: 1, heads, head_dim, groups, d_state, chunk };
                if let Ok(kernel) = JitSsdStep::new(jit, shape) {
                    if everywhere || *ssd_wins.entry((heads, head_dim, groups, d_state)).or_insert_with(|| kernel.faster_than_rust(shape)) {
                        kernels.ssd.insert(*v, kernel);
                    }
                }
            }
            if let Op::SelectiveScan { a_log, .. } = graph.node(*v).op {
                let shape = &graph.weight(a_log).shape;
                // An unsupported shape keeps the Rust kernel.
                if let Ok(kernel) = JitSelectiveScan::new(jit, shape[0], shape[1]) {
                    if everywhere || *scan_wins.entry((shape[0], shape[1])).or_insert_with(|| kernel.faster_than_rust(shape[0])) {
                        kernels.scan.insert(*v, kernel);
                    }
                }
            }
        }
        kernels
    }

    /// The norm and Hadamard kernels; an unsupported shape keeps the Rust kernel for that node.
    fn add_norms(&mut self, graph: &Graph, order: &[ValueId], weights: &Weights, jit: &HostJit) {
        let w = |id: ir::WeightId| weights.get(id).values.as_slice();
        for &v in order {
            let node = graph.node(v);
            let width = node.ty.width().unwrap_or(0);
            match node.op {
                Op::RmsNorm { weight, eps } => {
                    let Ok(mut kernel) = JitRmsNorm::new(jit, width, weight.map(w), eps) else { continue };
                    if let Some(scale) = only_reader_quantizes(graph, v) {
                        // Unsupported scales leave the norm and the quantize separate.
                        let _ = kernel.add_quantize(w(scale));
                    }
                    self.norm.insert(v, kernel);
                }
                Op::GatedRmsNorm { weight, groups, eps } => {
                    if let Ok(kernel) = JitGatedRmsNorm::new(jit, width, w(weight), groups, eps) {
                        self.gated_norm.insert(v, kernel);
                    }
                }
                Op::Hadamard => {
                    if let Ok(kernel) = JitHadamard::new(jit, width) {
                        self.hadamard.insert(v, kernel);
                    }
                }
                _ => {}
            }
        }
    }

    /// How many ops run on these kernels.
    pub fn len(&self) -> usize {
        self.conv.len() + self.scan.len() + self.ssd.len() + self.norm.len() + self.gated_norm.len() + self.hadamard.len()
    }

    /// Whether no op does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A kernel for every conv whose shape has one; the others stay on the Rust kernel.
fn conv_kernels(graph: &Graph, order: &[ValueId], weights: &Weights, jit: &HostJit) -> HashMap<ValueId, JitConv> {
    let mut kernels = HashMap::new();
    for v in order {
        let Op::CausalConv1d { weight, bias } = graph.node(*v).op else { continue };
        // `[channels, 1, kernel]`, as the verifier checked.
        let shape = &graph.weight(weight).shape;
        let (Some(&channels), Some(&kernel)) = (shape.first(), shape.last()) else { continue };
        if let Ok(conv) = JitConv::new(jit, &weights.get(weight).values, channels, kernel, bias.map(|b| weights.get(b).values.as_slice())) {
            kernels.insert(*v, conv);
        }
    }
    kernels
}

/// The scale of the quantize that is `v`'s only reader, if it is one (and `v` no graph output).
fn only_reader_quantizes(graph: &Graph, v: ValueId) -> Option<ir::WeightId> {
    match graph.users(v)[..] {
        [u] if !graph.outputs().contains(&v) => match graph.node(u).op {
            Op::Quantize { scale } => Some(scale),
            _ => None,
        },
        _ => None,
    }
}
