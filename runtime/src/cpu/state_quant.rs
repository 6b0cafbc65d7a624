//! Int8 cached scan states ([`ir::StateQuant`]): at the end of every call the state of each such
//! scan is rounded to what its int8 form holds, q · s with q = clamp(round_half_even(h · (1/s)),
//! −128, 127), so that the next call starts from exactly what a backend storing the int8 values
//! and their scales reads back. Kept as f32 here: the CPU's state is small next to its weights,
//! and the scans' kernels stay those of the float state.

use ir::{Graph, Op, StateQuant, ValueId};

use super::quant::quantize_value;
use crate::{RuntimeError, Weights};

/// Checks every int8 state rule of `graph` against the weight data (what [`CachedStateQuant::of_graph`]
/// checks), for a backend that reads the scales and group map itself.
pub(crate) fn check(graph: &Graph, weights: &Weights) -> Result<(), RuntimeError> {
    CachedStateQuant::of_graph(graph, &graph.values(), weights).map(|_| ())
}

/// One scan's int8 state rule, resolved to values.
#[derive(Clone, Debug)]
pub(crate) struct CachedStateQuant {
    /// The scan node (its state buffer's key).
    pub value: ValueId,
    /// State values per channel (d_state).
    d_state: usize,
    /// Scales `[groups, columns]`, columns = d_state or 1.
    scale: Vec<f32>,
    /// Their inverses 1 / s, what the quantization multiplies by.
    inverse: Vec<f32>,
    columns: usize,
    /// Each channel's scale row.
    group: Vec<usize>,
}

impl CachedStateQuant {
    /// The rules of every scan in `graph` that keeps an int8 state, checked against the weight
    /// data: finite positive scales, and group indices that name a scale row.
    pub fn of_graph(graph: &Graph, order: &[ValueId], weights: &Weights) -> Result<Vec<CachedStateQuant>, RuntimeError> {
        let mut rules = Vec::new();
        for &v in order {
            let (quant, channels, d_state) = match &graph.node(v).op {
                Op::SelectiveScan { a_log, state: Some(q), .. } => {
                    let shape = &graph.weight(*a_log).shape;
                    (*q, shape[0], shape[1])
                }
                Op::Ssd { heads, head_dim, d_state, state: Some(q), .. } => (*q, heads * head_dim, *d_state),
                _ => continue,
            };
            rules.push(CachedStateQuant::new(graph, weights, v, quant, channels, d_state)?);
        }
        Ok(rules)
    }

    fn new(graph: &Graph, weights: &Weights, value: ValueId, quant: StateQuant, channels: usize, d_state: usize) -> Result<CachedStateQuant, RuntimeError> {
        let scale = weights.get(quant.scale).values.clone();
        let (groups, columns) = (graph.weight(quant.scale).shape[0], graph.weight(quant.scale).shape[1]);
        if let Some(bad) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(RuntimeError::Weights(format!("state scale {} of {value} holds {bad}, expected finite positive scales", quant.scale)));
        }
        let group = match quant.group {
            None => vec![0; channels],
            Some(g) => {
                let values = weights.get(g).floats();
                if let Some(bad) = values.iter().find(|x| !(**x >= 0.0 && (**x as usize) < groups)) {
                    return Err(RuntimeError::Weights(format!("state group map {g} of {value} holds {bad}, expected a row of its {groups}-row state scale")));
                }
                values.iter().map(|x| *x as usize).collect()
            }
        };
        let inverse = scale.iter().map(|s| 1.0 / s).collect();
        Ok(CachedStateQuant { value, d_state, scale, inverse, columns, group })
    }

    /// Rounds a state buffer (`[batch][channel][d_state]`) to its int8 form's values.
    pub fn apply(&self, state: &mut [f32]) {
        let channels = self.group.len();
        for (row_index, row) in state.chunks_exact_mut(self.d_state).enumerate() {
            let g = self.group[row_index % channels];
            let scales = &self.scale[g * self.columns..][..self.columns];
            let inverses = &self.inverse[g * self.columns..][..self.columns];
            for (n, h) in row.iter_mut().enumerate() {
                let c = if self.columns == 1 { 0 } else { n };
                *h = quantize_value(*h * inverses[c], 1.0) * scales[c];
            }
        }
    }
}
