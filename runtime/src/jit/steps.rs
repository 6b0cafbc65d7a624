//! The generated float kernels of a graph's non-product ops (scan / SSD / conv steps, norms,
//! the Hadamard transform), by node. An op without one (its shape unsupported, or the reference
//! backend) runs the Rust kernels of [`crate::cpu`], which stay the oracle.

use std::collections::HashMap;

use ir::{Graph, Op, ValueId};

use super::{HostJit, JitConv};
use crate::weights::Weights;

/// Generated kernels of an executor's non-product ops.
#[derive(Default)]
pub struct StepKernels {
    /// The causal conv1d nodes (decode step and prefill).
    pub conv: HashMap<ValueId, JitConv>,
}

impl StepKernels {
    /// Kernels for every op of `graph` (in `order`) that has one on this host.
    pub fn new(graph: &Graph, order: &[ValueId], weights: &Weights, jit: &HostJit) -> StepKernels {
        StepKernels { conv: conv_kernels(graph, order, weights, jit) }
    }

    /// How many ops run on these kernels.
    pub fn len(&self) -> usize {
        self.conv.len()
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
