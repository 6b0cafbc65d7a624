//! Weight data for a graph's weight table: f32 values, or the integers of a quantized weight read
//! from an artifact (one byte each, not four: widening them all to f32 at load made a W8A8
//! model's peak memory as large as the FP32 model's).

use std::borrow::Cow;
use std::sync::Arc;

use ir::{Graph, WeightId};

use crate::RuntimeError;

/// One weight's values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightData {
    /// The shape, as declared in the graph.
    pub shape: Vec<usize>,
    /// `shape.product()` values; empty when the weight is held as [`WeightData::ints`].
    pub values: Vec<f32>,
    /// The values of an integer (i8 / i4) weight read from an artifact, with `values` empty.
    pub ints: Vec<i8>,
}

impl WeightData {
    /// A weight of f32 values.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> WeightData {
        WeightData { shape, values, ints: Vec::new() }
    }

    /// An integer weight held as its integers.
    pub fn integers(shape: Vec<usize>, ints: Vec<i8>) -> WeightData {
        WeightData { shape, values: Vec::new(), ints }
    }

    /// How many values it holds, in either form.
    pub fn count(&self) -> usize {
        if self.ints.is_empty() {
            self.values.len()
        } else {
            self.ints.len()
        }
    }

    /// The values as f32: borrowed, or widened from the integers (a copy: for loading and
    /// packing, not for a hot path).
    pub fn floats(&self) -> Cow<'_, [f32]> {
        if self.ints.is_empty() {
            Cow::Borrowed(&self.values)
        } else {
            Cow::Owned(self.ints.iter().map(|v| f32::from(*v)).collect())
        }
    }

    /// The values of an integer weight as i8: borrowed, or narrowed from f32 integers (a weight
    /// a compiler built in f32).
    pub fn int_values(&self) -> Cow<'_, [i8]> {
        if self.ints.is_empty() {
            Cow::Owned(self.values.iter().map(|v| *v as i8).collect())
        } else {
            Cow::Borrowed(&self.ints)
        }
    }
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

    /// The f32 values of weight `id`, moved out when nothing else shares them (else copied), for
    /// a pass that rewrites them in place and [`Weights::set`]s the result; until then the weight
    /// holds no values. Integer data is widened (a copy).
    pub fn take_values(&mut self, id: WeightId) -> Vec<f32> {
        let slot = &mut self.0[id.index()];
        match Arc::get_mut(slot) {
            Some(data) if data.ints.is_empty() => std::mem::take(&mut data.values),
            _ => slot.floats().into_owned(),
        }
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
            if decl.shape != data.shape || data.count() != decl.shape.iter().product::<usize>() {
                return Err(RuntimeError::Weights(format!(
                    "weight `{}` is declared {:?} but its data has shape {:?} and {} values",
                    decl.name,
                    decl.shape,
                    data.shape,
                    data.count()
                )));
            }
        }
        Ok(())
    }
}
