//! Mamba1 selective scan, sequential in time (O(L)), parallel over blocks of channels.
//!
//! Per channel d and state n: Δ = softplus(dt), h ← exp(Δ·A[d,n])·h + Δ·B[n]·x[d],
//! y[d] = Σₙ C[n]·h[n] + D[d]·x[d], with A = −exp(A_log).

use rayon::prelude::*;

use super::softplus;

/// Channels per parallel task.
const CHANNELS_PER_TASK: usize = 32;

/// Shapes: x, dt `[batch, seq, d_inner]`; b, c `[batch, seq, d_state]`; a_log `[d_inner, d_state]`;
/// d `[d_inner]`; state `[batch, d_inner, d_state]` updated in place. Returns y `[batch, seq, d_inner]`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    x: &[f32],
    dt: &[f32],
    b: &[f32],
    c: &[f32],
    batch: usize,
    seq: usize,
    d_inner: usize,
    d_state: usize,
    a_log: &[f32],
    d: &[f32],
    state: &mut [f32],
) -> Vec<f32> {
    let a: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect();
    let blocks = d_inner.div_ceil(CHANNELS_PER_TASK);
    // Each task owns `CHANNELS_PER_TASK` channels of one sequence: its slice of the state is
    // contiguous, and it returns its outputs as a [seq, width] block to scatter afterwards.
    let results: Vec<(usize, usize, usize, Vec<f32>)> = state
        .par_chunks_mut(CHANNELS_PER_TASK * d_state)
        .enumerate()
        .map(|(task, h)| {
            let (bi, blk) = (task / blocks, task % blocks);
            let d0 = blk * CHANNELS_PER_TASK;
            let width = h.len() / d_state;
            let mut y = vec![0.0f32; seq * width];
            for t in 0..seq {
                let row = (bi * seq + t) * d_inner;
                let bt = &b[(bi * seq + t) * d_state..][..d_state];
                let ct = &c[(bi * seq + t) * d_state..][..d_state];
                for j in 0..width {
                    let ch = d0 + j;
                    let delta = softplus(dt[row + ch]);
                    let xv = x[row + ch];
                    let hs = &mut h[j * d_state..(j + 1) * d_state];
                    let ar = &a[ch * d_state..(ch + 1) * d_state];
                    let mut acc = 0.0f32;
                    for n in 0..d_state {
                        hs[n] = (delta * ar[n]).exp() * hs[n] + delta * bt[n] * xv;
                        acc += ct[n] * hs[n];
                    }
                    y[t * width + j] = acc + d[ch] * xv;
                }
            }
            (bi, d0, width, y)
        })
        .collect();
    let mut out = vec![0.0f32; batch * seq * d_inner];
    for (bi, d0, width, y) in results {
        for t in 0..seq {
            out[(bi * seq + t) * d_inner + d0..][..width].copy_from_slice(&y[t * width..(t + 1) * width]);
        }
    }
    out
}

/// One decode step (one token per sequence) of [`selective_scan`] into `y`, with `a` = −exp(a_log)
/// computed once at load: the same operations in the same order, so the same values.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_step(x: &[f32], dt: &[f32], b: &[f32], c: &[f32], batch: usize, d_inner: usize, d_state: usize, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    for bi in 0..batch {
        let row = bi * d_inner;
        let bt = &b[bi * d_state..][..d_state];
        let ct = &c[bi * d_state..][..d_state];
        let h = &mut state[bi * d_inner * d_state..][..d_inner * d_state];
        for (ch, hs) in h.chunks_exact_mut(d_state).enumerate() {
            let delta = softplus(dt[row + ch]);
            let xv = x[row + ch];
            let ar = &a[ch * d_state..(ch + 1) * d_state];
            let mut acc = 0.0f32;
            for n in 0..d_state {
                hs[n] = (delta * ar[n]).exp() * hs[n] + delta * bt[n] * xv;
                acc += ct[n] * hs[n];
            }
            y[row + ch] = acc + d[ch] * xv;
        }
    }
}
