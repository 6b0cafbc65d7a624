//! A model being compiled: its graph, the weight data for the graph's table, and its config.
//! Passes edit all three together through the methods here, so the table and the data agree.

use ir::{DType, Graph, VerifiedGraph, WeightDecl, WeightId};
use runtime::{Executor, WeightData, Weights};

use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::CompileError;

/// Graph + weights + config.
#[derive(Clone, Debug)]
pub struct Program {
    /// The architecture the graph came from.
    pub config: ModelConfig,
    /// The graph.
    pub graph: Graph,
    /// Data of every weight in `graph`'s table.
    pub weights: Weights,
}

impl Program {
    /// Lowers a checkpoint.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Program, CompileError> {
        let (graph, weights) = crate::lower::lower(ckpt)?;
        Ok(Program { config: ckpt.config.clone(), graph, weights })
    }

    /// Verifies the graph and builds a CPU executor for it (calibration and tests run it).
    pub fn executor(&self) -> Result<Executor, CompileError> {
        let verified = VerifiedGraph::new(self.graph.clone())?;
        Ok(Executor::new(verified, self.weights.clone())?)
    }

    /// Declares a new weight with its data; `values` holds integers exactly for i8/i4 dtypes.
    pub fn add_weight(&mut self, name: impl Into<String>, dtype: DType, shape: Vec<usize>, values: Vec<f32>) -> WeightId {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let id = self.graph.add_weight(WeightDecl { name: name.into(), dtype, shape: shape.clone() });
        let data_id = self.weights.push(WeightData::new(shape, values));
        debug_assert_eq!(id, data_id);
        id
    }

    /// A weight's values.
    pub fn values(&self, id: WeightId) -> &[f32] {
        &self.weights.get(id).values
    }

    /// A weight's values moved out for rewriting in place (copied only if shared); put them
    /// back with [`Program::set_values`]. Saves a copy of every rewritten weight (an 8B model's
    /// embedding is 4 GB in f32).
    pub fn take_values(&mut self, id: WeightId) -> Vec<f32> {
        self.weights.take_values(id)
    }

    /// Replaces a weight's values (same shape and dtype).
    pub fn set_values(&mut self, id: WeightId, values: Vec<f32>) {
        let shape = self.graph.weight(id).shape.clone();
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        self.weights.set(id, WeightData::new(shape, values));
    }

    /// A per-channel scale vector weight (f32 `[width]`) for quantize/dequantize ops.
    pub fn add_scale(&mut self, name: impl Into<String>, scales: Vec<f32>) -> WeightId {
        let n = scales.len();
        self.add_weight(name, DType::F32, vec![n], scales)
    }
}
