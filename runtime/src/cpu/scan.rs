//! Mamba1 selective scan, sequential in time (O(L)), parallel over blocks of channels.
//!
//! Per channel d and state n: Δ = softplus(dt), h ← exp(Δ·A[d,n])·h + Δ·B[n]·x[d],
//! y[d] = Σₙ C[n]·h[n] + D[d]·x[d], with A = −exp(A_log). A prefill runs the decode step's
//! operations lane-wise over blocks of channels (`scan_lanes.rs`), or runs the generated step
//! kernel once per token: both give a decode's values bit for bit.

use rayon::prelude::*;

use super::{scan_lanes, StepRow};
use crate::jit::JitSelectiveScan;

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
    kernel: Option<&JitSelectiveScan>,
) -> Vec<f32> {
    let a: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect();
    // Each task owns `CHANNELS_PER_TASK` channels of one sequence: its slice of the state is
    // contiguous, and it returns its outputs as a [seq, width] block to scatter afterwards. (Split
    // per sequence first: with d_inner not a multiple of the block, a flat split would put one
    // task across two sequences.)
    // Without a generated step kernel, blocks of channels run through the whole sequence with
    // channels across the lanes (scan_lanes.rs); with one, token by token on it.
    let per_task = if kernel.is_some() { CHANNELS_PER_TASK } else { scan_lanes::LANES };
    let results: Vec<(usize, usize, usize, Vec<f32>)> = state
        .par_chunks_mut(d_inner * d_state)
        .enumerate()
        .flat_map(|(bi, sb)| sb.par_chunks_mut(per_task * d_state).enumerate().map(move |(blk, h)| (bi, blk, h)))
        .map(|(bi, blk, h)| {
            let d0 = blk * per_task;
            let width = h.len() / d_state;
            let mut y = vec![0.0f32; seq * width];
            let rows = |t: usize| StepRow::of_sequence([x, dt, b, c], bi * seq + t, [d_inner, d_inner, d_state]);
            match kernel {
                Some(kernel) => {
                    for (t, y_t) in y.chunks_exact_mut(width).enumerate() {
                        kernel.channels(&rows(t), d0..d0 + width, &a, d, h, y_t);
                    }
                }
                None => scan_lanes::scan_block(&scan_lanes::LaneBlock { first: d0, width, seq, rows: &rows }, &a, d, h, &mut y),
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
/// computed once at load.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_step(x: &[f32], dt: &[f32], b: &[f32], c: &[f32], batch: usize, d_inner: usize, d_state: usize, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32], kernel: Option<&JitSelectiveScan>) {
    for bi in 0..batch {
        let rows = StepRow::of_sequence([x, dt, b, c], bi, [d_inner, d_inner, d_state]);
        step_channels(kernel, &rows, 0..d_inner, a, d, &mut state[bi * d_inner * d_state..][..d_inner * d_state], &mut y[bi * d_inner..][..d_inner]);
    }
}

/// The step of `channels` of one sequence on the generated `kernel` where there is one (the same
/// values), else on [`selective_scan_channels`].
pub fn step_channels(kernel: Option<&JitSelectiveScan>, r: &StepRow, channels: std::ops::Range<usize>, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    match kernel {
        Some(kernel) => kernel.channels(r, channels, a, d, state, y),
        None => selective_scan_channels(r, channels, a, d, state, y),
    }
}

/// The step of `channels` of one sequence: `state` is their `[channels, d_state]` rows, `y` their
/// outputs. The operations of [`selective_scan`], with the vectorisable [`super::fastmath`] exp
/// and softplus (within a few ulp of libm's) and C·h summed in eight partial sums
/// ([`super::dot`]) instead of left to right.
///
/// Runs the AVX2 build of the loop where the CPU has it (8 lanes instead of the baseline's 4; the
/// same operations, so the same values).
pub fn selective_scan_channels(r: &StepRow, channels: std::ops::Range<usize>, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above), the one requirement of calling a function
        // compiled with `#[target_feature(enable = "avx2")]`.
        unsafe { selective_scan_channels_avx2(r, channels, a, d, state, y) };
        return;
    }
    selective_scan_channels_body(r, channels, a, d, state, y)
}

/// [`selective_scan_channels`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn selective_scan_channels_avx2(r: &StepRow, channels: std::ops::Range<usize>, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    selective_scan_channels_body(r, channels, a, d, state, y)
}

#[inline(always)]
fn selective_scan_channels_body(r: &StepRow, channels: std::ops::Range<usize>, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    /// Channels whose Δ are computed together (one vectorised softplus loop).
    const BLOCK: usize = 64;
    let d_state = r.b.len();
    let mut deltas = [0.0f32; BLOCK];
    for (((first, hs), ys), dts) in channels
        .clone()
        .step_by(BLOCK)
        .zip(state.chunks_mut(BLOCK * d_state))
        .zip(y.chunks_mut(BLOCK))
        .zip(r.dt[channels.clone()].chunks(BLOCK))
    {
        for (delta, dt) in deltas.iter_mut().zip(dts) {
            *delta = super::fastmath::softplus(*dt);
        }
        for (j, (hs, out)) in hs.chunks_exact_mut(d_state).zip(ys.iter_mut()).enumerate() {
            let ch = first + j;
            let (delta, xv) = (deltas[j], r.x[ch]);
            let ar = &a[ch * d_state..(ch + 1) * d_state];
            for ((h, a), b) in hs.iter_mut().zip(ar).zip(r.b) {
                *h = super::fastmath::exp(delta * a) * *h + delta * b * xv;
            }
            *out = super::dot(r.c, hs) + d[ch] * xv;
        }
    }
}
