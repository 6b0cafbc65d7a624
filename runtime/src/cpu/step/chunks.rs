//! How the team splits an op of the decode plan: chunk ranges, and the code that runs one chunk
//! of a product or of a scan / SSD step on any thread.

use ir::Op;

use super::super::team::{BoardInput, ChunkRunner};
use super::super::{scan, ssd, Executor, StepRow};

/// Output features `[start, end)` of chunk `chunk` of `chunks` over `out_dim` features, on
/// boundaries that are multiples of the generated kernels' 4-feature tile.
pub(super) fn chunk_columns(out_dim: usize, chunks: usize, chunk: usize) -> std::ops::Range<usize> {
    chunk_range(out_dim, chunks, chunk, 4)
}

/// Chunk `chunk` of `chunks` over `n` units, on multiples of `align`.
pub(super) fn chunk_range(n: usize, chunks: usize, chunk: usize, align: usize) -> std::ops::Range<usize> {
    let blocks = n.div_ceil(align);
    let at = |c: usize| ((blocks * c / chunks) * align).min(n);
    at(chunk)..at(chunk + 1)
}

/// Cost units (state values, an exponential counting [`EXP_COST`]) per chunk of a scan / SSD step.
pub(super) const MIN_STATE_COST_PER_CHUNK: usize = 1 << 13;
/// A selective-scan state value costs an exponential; an SSD one a few multiply-adds.
pub(super) const EXP_COST: usize = 8;

/// The units (channels of a scan, heads of an SSD) of chunk `chunk`, and each unit's state size
/// and output width.
pub(super) fn stateful_chunk(node: &ir::Node, graph: &ir::Graph, chunks: usize, chunk: usize) -> (std::ops::Range<usize>, usize, usize) {
    match node.op {
        Op::Ssd { heads, head_dim, d_state, .. } => (chunk_range(heads, chunks, chunk, 1), head_dim * d_state, head_dim),
        Op::SelectiveScan { a_log, .. } => {
            let shape = &graph.weight(a_log).shape;
            (chunk_range(shape[0], chunks, chunk, 4), shape[1], 1)
        }
        _ => (0..0, 0, 0),
    }
}

/// Computes chunks of the plan's products, on any thread of the team.
pub(super) struct Runner<'a> {
    pub exec: &'a Executor,
    pub batch: usize,
}

impl ChunkRunner for Runner<'_> {
    fn run_chunk(&self, op: usize, chunk: usize, chunks: usize, input: &BoardInput, out: &mut Vec<f32>) {
        let exec = self.exec;
        let plan_op = &exec.step.ops[op];
        let node = exec.graph.node(plan_op.value);
        let out_dim = node.ty.width().unwrap_or(0);
        let cols = chunk_columns(out_dim, chunks, chunk);
        out.clear();
        out.resize(self.batch * cols.len(), 0.0);
        let w = |id: ir::WeightId| exec.weights.get(id).values.as_slice();
        if let Some(kernel) = exec.jit_qlinear.get(&plan_op.value) {
            for (row, dst) in input.rows.iter().zip(out.chunks_exact_mut(cols.len().max(1))) {
                kernel.gemv_into(row, cols.clone(), dst);
            }
            return;
        }
        if let (Op::SelectiveScan { .. } | Op::Ssd { .. }, Some(shared)) = (&node.op, &input.state) {
            let (units, unit_state, unit_width) = stateful_chunk(node, &exec.graph, chunks, chunk);
            let (n_units, row_state) = match node.op {
                Op::Ssd { heads, .. } => (heads, heads * unit_state),
                _ => (out_dim, out_dim * unit_state),
            };
            out.resize(self.batch * units.len() * unit_width, 0.0);
            let operands: [&[f32]; 4] = std::array::from_fn(|i| input.operands[i].as_slice());
            for (bi, y) in out.chunks_exact_mut((units.len() * unit_width).max(1)).enumerate() {
                let range = bi * row_state + units.start * unit_state..bi * row_state + units.end * unit_state;
                // SAFETY: chunk indices are claimed once per job, and chunk `chunk`'s ranges (these
                // units of each sequence's state) are disjoint from every other chunk's.
                let st = unsafe { shared.range(range) };
                match &node.op {
                    Op::SelectiveScan { d, .. } => {
                        let d_state = unit_state;
                        let row = StepRow::of_sequence(operands, bi, [n_units, n_units, d_state]);
                        scan::step_channels(exec.jit_steps.scan.get(&plan_op.value), &row, units.clone(), &exec.step.scan_a[&plan_op.value], w(*d), st, y);
                    }
                    Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max, .. } => {
                        let shape = ssd::SsdShape { seq: 1, heads: *heads, head_dim: *head_dim, groups: *groups, d_state: *d_state, chunk: *chunk };
                        let params = ssd::SsdParams { a_log: w(*a_log), d: w(*d), dt_bias: w(*dt_bias), dt_limit: (*dt_min, *dt_max) };
                        let rows = StepRow::of_sequence(operands, bi, [heads * head_dim, *heads, groups * d_state]);
                        ssd::step_heads(exec.jit_steps.ssd.get(&plan_op.value), &rows, units.clone(), shape, &params, st, y);
                    }
                    _ => {}
                }
            }
            return;
        }
        let (weight, bias): (&[f32], Option<&[f32]>) = match node.op {
            Op::Linear { weight, bias } => (w(weight), bias.map(w)),
            Op::LmHead { weight } => (w(weight), None),
            Op::QLinear { weight, bias, act_scale: None, .. } => (&exec.dequantized[&weight], bias.map(w)),
            _ => return,
        };
        let in_dim = input.data.len() / self.batch.max(1);
        for (x, dst) in input.data.chunks_exact(in_dim.max(1)).zip(out.chunks_exact_mut(cols.len().max(1))) {
            for (o, d) in cols.clone().zip(dst.iter_mut()) {
                *d = super::super::dot(&weight[o * in_dim..(o + 1) * in_dim], x);
                if let Some(b) = bias {
                    *d += b[o];
                }
            }
        }
    }
}
