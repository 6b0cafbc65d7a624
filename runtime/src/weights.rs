//! Weight data for a graph's weight table, held in f32 for the FP32 executor.

use std::sync::Arc;

use ir::{Graph, WeightId};

use crate::RuntimeError;

/// One weight's values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightData {
    /// The shape, as declared in the graph.
    pub shape: Vec<usize>,
    /// `shape.product()` values.
    pub values: Vec<f32>,
}

/// The data of every weight in a graph's table, indexed by [`WeightId`]. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Weights(Vec<Arc<WeightData>>);

impl Weights {
    /// Empty.
    pub fn new() -> Weights {
        Weights(Vec::new())
    }

    /// Appends the data for the next weight id; returns that id.
    pub fn push(&mut self, data: WeightData) -> WeightId {
        self.0.push(Arc::new(data));
        WeightId::new(self.0.len() - 1)
    }

    /// The data of weight `id`.
    pub fn get(&self, id: WeightId) -> &WeightData {
        &self.0[id.index()]
    }

    /// Replaces the data of weight `id` (for passes that rewrite weights).
    pub fn set(&mut self, id: WeightId, data: WeightData) {
        self.0[id.index()] = Arc::new(data);
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the weights that `map` (old id → new id, from `Graph::compact_weights`) keeps, renumbered.
    pub fn compact(&mut self, map: &[Option<WeightId>]) {
        let old = std::mem::take(&mut self.0);
        self.0 = old.into_iter().zip(map).filter(|(_, m)| m.is_some()).map(|(w, _)| w).collect();
    }

    /// Checks that there is data for every declared weight, of the declared shape.
    pub fn check_against(&self, graph: &Graph) -> Result<(), RuntimeError> {
        if self.0.len() != graph.weights().len() {
            return Err(RuntimeError::Weights(format!("graph declares {} weights, {} were given", graph.weights().len(), self.0.len())));
        }
        for (decl, data) in graph.weights().iter().zip(&self.0) {
            if decl.shape != data.shape || data.values.len() != decl.shape.iter().product::<usize>() {
                return Err(RuntimeError::Weights(format!(
                    "weight `{}` is declared {:?} but its data has shape {:?} and {} values",
                    decl.name,
                    decl.shape,
                    data.shape,
                    data.values.len()
                )));
            }
        }
        Ok(())
    }
}
