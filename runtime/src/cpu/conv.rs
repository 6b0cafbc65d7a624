//! Depthwise causal conv1d over the sequence, continuing from a per-sequence state that holds the
//! last `kernel − 1` inputs (oldest first), so prefill and one-token decode share one code path.

use rayon::prelude::*;

/// A depthwise conv's parameters: `weight` `[channels, kernel]` and an optional bias `[channels]`.
#[derive(Clone, Copy)]
pub struct ConvTaps<'a> {
    pub weight: &'a [f32],
    pub kernel: usize,
    pub bias: Option<&'a [f32]>,
}

/// `x` is `[batch, seq, channels]`; `state` `[batch, kernel−1, channels]` (updated in place).
/// Returns `[batch, seq, channels]`.
pub fn causal_conv1d(x: &[f32], batch: usize, seq: usize, channels: usize, taps: ConvTaps, state: &mut [f32]) -> Vec<f32> {
    let ConvTaps { weight, kernel, bias } = taps;
    let hist = kernel - 1;
    // Tap-major weights make the inner loop over channels contiguous.
    let taps: Vec<f32> = (0..kernel).flat_map(|k| (0..channels).map(move |c| (c, k))).map(|(c, k)| weight[c * kernel + k]).collect();
    let mut out = vec![0.0f32; batch * seq * channels];
    out.par_chunks_mut(seq * channels).zip(state.par_chunks_mut(hist * channels)).enumerate().for_each(|(b, (out_b, state_b))| {
        // Inputs of this sequence with the history in front: row r is time r − hist.
        let mut ext = Vec::with_capacity((hist + seq) * channels);
        ext.extend_from_slice(state_b);
        ext.extend_from_slice(&x[b * seq * channels..(b + 1) * seq * channels]);
        for t in 0..seq {
            let dst = &mut out_b[t * channels..(t + 1) * channels];
            match bias {
                Some(bias) => dst.copy_from_slice(bias),
                None => dst.fill(0.0),
            }
            for k in 0..kernel {
                let src = &ext[(t + k) * channels..(t + k + 1) * channels];
                let tap = &taps[k * channels..(k + 1) * channels];
                for ((d, s), w) in dst.iter_mut().zip(src).zip(tap) {
                    *d += w * s;
                }
            }
        }
        state_b.copy_from_slice(&ext[seq * channels..]);
    });
    out
}

/// `weight` `[channels, kernel]` as `[kernel, channels]`, what [`causal_conv1d_step`] reads.
pub fn tap_major(weight: &[f32], channels: usize, kernel: usize) -> Vec<f32> {
    (0..kernel).flat_map(|k| (0..channels).map(move |c| weight[c * kernel + k])).collect()
}

/// One decode step of [`causal_conv1d`] (the same operations, so the same values) into `out`
/// (`[batch, channels]`), with tap-major weights; `silu` applies x·σ(x) to the result (the
/// activation that follows the conv in every Mamba block, fused; [`super::fastmath::silu`]).
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_step(x: &[f32], batch: usize, channels: usize, taps: &[f32], kernel: usize, bias: Option<&[f32]>, state: &mut [f32], out: &mut [f32], silu: bool) {
    let hist = kernel - 1;
    for b in 0..batch {
        let x_b = &x[b * channels..][..channels];
        let out_b = &mut out[b * channels..][..channels];
        let state_b = &mut state[b * hist * channels..][..hist * channels];
        match bias {
            Some(bias) => out_b.copy_from_slice(bias),
            None => out_b.fill(0.0),
        }
        for k in 0..kernel {
            let src = if k < hist { &state_b[k * channels..][..channels] } else { x_b };
            for ((d, s), w) in out_b.iter_mut().zip(src).zip(&taps[k * channels..][..channels]) {
                *d += w * s;
            }
        }
        if hist > 0 {
            state_b.copy_within(channels.., 0);
            state_b[(hist - 1) * channels..].copy_from_slice(x_b);
        }
        if silu {
            out_b.iter_mut().for_each(|v| *v = super::fastmath::silu(*v));
        }
    }
}
