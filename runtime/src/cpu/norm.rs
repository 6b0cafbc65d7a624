//! RMSNorm and mamba_ssm's gated, grouped RMSNorm, row by row.

use rayon::prelude::*;

/// Rows per parallel task for the row-wise ops.
const ROWS_PER_TASK: usize = 16;

/// `x / sqrt(mean(x²) + eps) · weight` over each row of `width` values.
pub fn rms_norm(x: &[f32], width: usize, weight: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let mut out = x.to_vec();
    out.par_chunks_mut(width * ROWS_PER_TASK).for_each(|block| {
        for row in block.chunks_exact_mut(width) {
            rms_norm_in_place(row, weight, eps);
        }
    });
    out
}

/// [`rms_norm`] of one row, in place (the decode step's form; same operations).
pub fn rms_norm_in_place(row: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    normalise(row, eps);
    if let Some(w) = weight {
        for (v, w) in row.iter_mut().zip(w) {
            *v *= w;
        }
    }
}

fn normalise(row: &mut [f32], eps: f32) {
    let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// mamba_ssm's RMSNormGated with `norm_before_gate = False`: `g = y · silu(z)`, then each of
/// `groups` contiguous slices of a row is normalised by its own RMS, then scaled by `weight`.
/// The gate is the vectorisable [`super::fastmath::silu`], as in the decode step.
pub fn gated_rms_norm(y: &[f32], z: &[f32], width: usize, weight: &[f32], groups: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; y.len()];
    let block = width * ROWS_PER_TASK;
    out.par_chunks_mut(block).zip(y.par_chunks(block)).zip(z.par_chunks(block)).for_each(|((out, y), z)| {
        for ((o, y), z) in out.chunks_exact_mut(width).zip(y.chunks_exact(width)).zip(z.chunks_exact(width)) {
            gated_rms_norm_row(y, z, o, weight, groups, eps);
        }
    });
    out
}

/// [`gated_rms_norm`] of one row into `out` (the decode step's form).
pub fn gated_rms_norm_row(y: &[f32], z: &[f32], out: &mut [f32], weight: &[f32], groups: usize, eps: f32) {
    for ((o, y), z) in out.iter_mut().zip(y).zip(z) {
        *o = y * super::fastmath::silu(*z);
    }
    normalise_groups(out, weight, groups, eps);
}

fn normalise_groups(row: &mut [f32], weight: &[f32], groups: usize, eps: f32) {
    let group = row.len() / groups;
    for slice in row.chunks_exact_mut(group) {
        normalise(slice, eps);
    }
    for (v, w) in row.iter_mut().zip(weight) {
        *v *= w;
    }
}
