//! Mamba2 SSD, blocked by chunks (the "state-space duality" algorithm of arXiv 2405.21060 §6).
//!
//! For one head, with Δₜ = clamp(softplus(dtₜ + dt_bias)), aₜ = Δₜ·A and, inside a chunk,
//! cumulative sums sᵢ = Σ_{j≤i} aⱼ:
//!
//! ```text
//! y_i = Σ_{j≤i} (C_i·B_j) · exp(s_i − s_j) · Δ_j · x_j      (within the chunk: a masked matmul)
//!     + exp(s_i) · C_i · S                                  (state carried in from earlier chunks)
//!     + D · x_i
//! S  ← exp(s_last) · S + Σ_j exp(s_last − s_j) · Δ_j · x_j ⊗ B_j
//! ```
//!
//! Every exponent is ≤ 0 (A < 0, Δ ≥ 0), so nothing overflows. The work is O(L·chunk) per head:
//! linear in the sequence length. C_i·B_j depends on the group, not the head, so it is computed
//! once per group and chunk (the same sums as per head, so the same values). [`ssd_step`] is the
//! decode form.

use rayon::prelude::*;

use super::StepRow;

use super::softplus;

/// Static description of one SSD op.
#[derive(Clone, Copy, Debug)]
pub struct SsdShape {
    /// Tokens per sequence in this call.
    pub seq: usize,
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// B/C groups.
    pub groups: usize,
    /// State size per group.
    pub d_state: usize,
    /// Chunk length.
    pub chunk: usize,
}

/// Per-head parameters.
pub struct SsdParams<'a> {
    /// `[heads]`.
    pub a_log: &'a [f32],
    /// `[heads]`.
    pub d: &'a [f32],
    /// `[heads]`.
    pub dt_bias: &'a [f32],
    /// Δ is clamped to this range.
    pub dt_limit: (f32, f32),
}

/// x `[batch, seq, heads·head_dim]`, dt `[batch, seq, heads]`, b and c `[batch, seq, groups·d_state]`,
/// state `[batch, heads, head_dim, d_state]` (updated). Returns y like x.
pub fn ssd(x: &[f32], dt: &[f32], b: &[f32], c: &[f32], s: SsdShape, p: &SsdParams, state: &mut [f32]) -> Vec<f32> {
    let width = s.heads * s.head_dim;
    let gn = s.groups * s.d_state;
    let heads_per_group = s.heads / s.groups;
    // C_i·B_j for j ≤ i within each chunk, once per group: every head of the group reads it.
    // Row (bi, g, t) holds j − chunk start for t's chunk.
    let batch = state.len() / (s.heads * s.head_dim * s.d_state).max(1);
    let mut cb = vec![0.0f32; batch * s.groups * s.seq * s.chunk];
    cb.par_chunks_mut(s.chunk.max(1)).enumerate().for_each(|(r, row)| {
        let (bg, t) = (r / s.seq.max(1), r % s.seq.max(1));
        let (bi, g) = (bg / s.groups, bg % s.groups);
        let start = t / s.chunk * s.chunk;
        let ci = &c[(bi * s.seq + t) * gn + g * s.d_state..][..s.d_state];
        for (j, v) in row.iter_mut().enumerate().take(t - start + 1) {
            // Summed left to right, as before this table existed (the calibration reads these values).
            *v = ci.iter().zip(&b[(bi * s.seq + start + j) * gn + g * s.d_state..][..s.d_state]).map(|(c, b)| c * b).sum::<f32>();
        }
    });
    let results: Vec<Vec<f32>> = state
        .par_chunks_mut(s.head_dim * s.d_state)
        .enumerate()
        .map(|(task, st)| {
            let (bi, h) = (task / s.heads, task % s.heads);
            let g = h / heads_per_group;
            let a = -p.a_log[h].exp();
            let row = |t: usize| bi * s.seq + t;
            let delta: Vec<f32> =
                (0..s.seq).map(|t| softplus(dt[row(t) * s.heads + h] + p.dt_bias[h]).clamp(p.dt_limit.0, p.dt_limit.1)).collect();
            let xs = |t: usize| &x[row(t) * width + h * s.head_dim..][..s.head_dim];
            let bs = |t: usize| &b[row(t) * gn + g * s.d_state..][..s.d_state];
            let cs = |t: usize| &c[row(t) * gn + g * s.d_state..][..s.d_state];
            let cbs = |t: usize| &cb[((bi * s.groups + g) * s.seq + t) * s.chunk..][..s.chunk];
            let mut y = vec![0.0f32; s.seq * s.head_dim];
            let mut start = 0;
            while start < s.seq {
                let q = s.chunk.min(s.seq - start);
                chunk_step(start, q, a, p.d[h], &delta, &xs, &bs, &cs, &cbs, s.head_dim, s.d_state, st, &mut y);
                start += q;
            }
            y
        })
        .collect();
    let mut out = vec![0.0f32; x.len()];
    for (task, y) in results.iter().enumerate() {
        let (bi, h) = (task / s.heads, task % s.heads);
        for t in 0..s.seq {
            out[(bi * s.seq + t) * width + h * s.head_dim..][..s.head_dim].copy_from_slice(&y[t * s.head_dim..(t + 1) * s.head_dim]);
        }
    }
    out
}

/// One chunk `[start, start + q)` of one head: writes its outputs into `y` and advances `st`.
#[allow(clippy::too_many_arguments)]
fn chunk_step<'a>(
    start: usize,
    q: usize,
    a: f32,
    d: f32,
    delta: &[f32],
    xs: &impl Fn(usize) -> &'a [f32],
    bs: &impl Fn(usize) -> &'a [f32],
    cs: &impl Fn(usize) -> &'a [f32],
    cbs: &impl Fn(usize) -> &'a [f32],
    head_dim: usize,
    d_state: usize,
    st: &mut [f32],
    y: &mut [f32],
) {
    let mut cum = vec![0.0f32; q];
    let mut run = 0.0f32;
    for i in 0..q {
        run += delta[start + i] * a;
        cum[i] = run;
    }
    for i in 0..q {
        let t = start + i;
        let (xi, ci) = (xs(t), cs(t));
        let yi = &mut y[t * head_dim..(t + 1) * head_dim];
        // Carried-in state: exp(s_i) · C_i · S, plus the skip connection D·x_i.
        let decay = cum[i].exp();
        for (pi, out) in yi.iter_mut().enumerate() {
            let srow = &st[pi * d_state..(pi + 1) * d_state];
            *out = decay * srow.iter().zip(ci).map(|(s, c)| s * c).sum::<f32>() + d * xi[pi];
        }
        // Within the chunk: Σ_{j≤i} (C_i·B_j) · exp(s_i − s_j) · Δ_j · x_j.
        let cb_i = cbs(t);
        for j in 0..=i {
            let w = cb_i[j] * (cum[i] - cum[j]).exp() * delta[start + j];
            for (out, xv) in yi.iter_mut().zip(xs(start + j)) {
                *out += w * xv;
            }
        }
    }
    // Advance the state to the end of the chunk.
    let last = cum[q - 1];
    let carry = last.exp();
    st.iter_mut().for_each(|v| *v *= carry);
    for j in 0..q {
        let w = (last - cum[j]).exp() * delta[start + j];
        let (xj, bj) = (xs(start + j), bs(start + j));
        for (pi, srow) in st.chunks_exact_mut(d_state).enumerate() {
            let wx = w * xj[pi];
            for (s, bv) in srow.iter_mut().zip(bj) {
                *s += wx * bv;
            }
        }
    }
}

/// One decode step (one token per sequence) of [`ssd`], writing y into `y`.
///
/// The same operations as a chunk of one token, in one pass over each head's state, except the
/// two dot products over `d_state` (C·B and the state row · C), which [`super::dot`] sums in eight
/// partial sums instead of left to right: vectorisable, and within a few f32 roundings of the
/// chunked form (tested against it in `tests::the_step_matches_a_chunk_of_one`).
#[allow(clippy::too_many_arguments)]
pub fn ssd_step(x: &[f32], dt: &[f32], b: &[f32], c: &[f32], batch: usize, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    let width = s.heads * s.head_dim;
    let gn = s.groups * s.d_state;
    let per_head = s.head_dim * s.d_state;
    for bi in 0..batch {
        let rows = StepRow::of_sequence([x, dt, b, c], bi, [width, s.heads, gn]);
        ssd_step_heads(&rows, 0..s.heads, s, p, &mut state[bi * s.heads * per_head..][..s.heads * per_head], &mut y[bi * width..][..width]);
    }
}

/// The step of `heads` of one sequence (`rows`: its x, dt, B and C); `state` holds those heads'
/// `[head_dim, d_state]` states, `y` their outputs. Runs the AVX2 build of the loop where the CPU
/// has it (8 lanes instead of the baseline's 4; the same operations, so the same values).
pub fn ssd_step_heads(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above), the one requirement of calling a function
        // compiled with `#[target_feature(enable = "avx2")]`.
        unsafe { ssd_step_heads_avx2(rows, heads, s, p, state, y) };
        return;
    }
    ssd_step_heads_body(rows, heads, s, p, state, y)
}

/// [`ssd_step_heads`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ssd_step_heads_avx2(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    ssd_step_heads_body(rows, heads, s, p, state, y)
}

#[inline(always)]
fn ssd_step_heads_body(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    let StepRow { x, dt, b, c } = *rows;
    let heads_per_group = s.heads / s.groups;
    let per_head = s.head_dim * s.d_state;
    for ((h, st), ys) in heads.zip(state.chunks_exact_mut(per_head)).zip(y.chunks_exact_mut(s.head_dim)) {
        let g = h / heads_per_group;
        let a = -p.a_log[h].exp();
        let delta = softplus(dt[h] + p.dt_bias[h]).clamp(p.dt_limit.0, p.dt_limit.1);
        let decay = (delta * a).exp();
        let xs = &x[h * s.head_dim..][..s.head_dim];
        let bs = &b[g * s.d_state..][..s.d_state];
        let cs = &c[g * s.d_state..][..s.d_state];
        let w = super::dot(cs, bs) * delta;
        for ((srow, out), xv) in st.chunks_exact_mut(s.d_state).zip(ys.iter_mut()).zip(xs) {
            *out = decay * super::dot(srow, cs) + p.d[h] * xv;
            *out += w * xv;
            let wx = delta * xv;
            for (sv, bv) in srow.iter_mut().zip(bs) {
                *sv = *sv * decay + wx * bv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_step_matches_a_chunk_of_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (batch, heads, head_dim, groups, d_state) in [(1, 4, 8, 2, 16), (2, 3, 5, 1, 7), (1, 16, 64, 1, 64)] {
            let shape = SsdShape { seq: 1, heads, head_dim, groups, d_state, chunk: 4 };
            let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(lo..hi)).collect() };
            let (x, dt, b, c) = (r(batch * heads * head_dim, -1.0, 1.0), r(batch * heads, -2.0, 1.0), r(batch * groups * d_state, -1.0, 1.0), r(batch * groups * d_state, -1.0, 1.0));
            let (a_log, d, dt_bias) = (r(heads, -1.0, 1.0), r(heads, -1.0, 1.0), r(heads, -0.5, 0.5));
            let params = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
            let state0 = r(batch * heads * head_dim * d_state, -1.0, 1.0);
            let mut want_state = state0.clone();
            let want = ssd(&x, &dt, &b, &c, shape, &params, &mut want_state);
            let mut got_state = state0;
            let mut got = vec![0.0; want.len()];
            ssd_step(&x, &dt, &b, &c, batch, shape, &params, &mut got_state, &mut got);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()));
            assert!(close(&got, &want), "y, heads {heads} d_state {d_state}");
            assert!(close(&got_state, &want_state), "state, heads {heads} d_state {d_state}");
        }
    }
}
