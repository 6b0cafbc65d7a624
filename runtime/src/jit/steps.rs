//! The generated float kernels of a graph's non-product ops (scan / SSD / conv steps, norms,
//! the Hadamard transform), by node. An op without one (its shape unsupported, or the reference
//! backend) runs the Rust kernels of [`crate::cpu`], which stay the oracle.

use std::collections::HashMap;

use ir::{Graph, Op, ValueId};

use super::{HostJit, JitGatedRmsNorm, JitHadamard, JitRmsNorm};
use crate::weights::Weights;

/// Generated kernels of an executor's non-product ops.
#[derive(Default)]
pub struct StepKernels {
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
    /// Kernels for every op of `graph` (in `order`) that has one on this host.
    pub fn new(graph: &Graph, order: &[ValueId], weights: &Weights, jit: &HostJit) -> StepKernels {
        let mut kernels = StepKernels::default();
        kernels.add_norms(graph, order, weights, jit);
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
        self.norm.len() + self.gated_norm.len() + self.hadamard.len()
    }

    /// Whether no op does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
