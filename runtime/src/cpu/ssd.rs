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
//! linear in the sequence length. The three sums of a chunk are matrix products on the `gemm`
//! crate (on the head's own thread: heads are the parallel tasks), which made mamba2-small's
//! prefill SSD about 2.6× faster than the scalar loops it replaced (`bench/RESULTS.md`); they
//! sum in gemm's order, so values moved by a few f32 roundings. C_i·B_j depends on the group, not
//! the head, so it is computed once per group and chunk. [`ssd_step`] is the decode form.

use rayon::prelude::*;

use super::linear::{matmul_serial, Strided};
use super::softplus;
use super::StepRow;
use crate::jit::JitSsdStep;

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
    // The model's chunk, like the GPU's SSD: shorter chunks (any length gives the same function
    // to f32 roundings) ran 1.4-1.7x faster here (32 against 128 on mamba2-small), but rounded
    // differently from the GPU, whose prefill then no longer matched this executor bit for bit.
    let s = SsdShape { chunk: s.chunk.max(1), ..s };
    let width = s.heads * s.head_dim;
    let gn = s.groups * s.d_state;
    let heads_per_group = s.heads / s.groups;
    let chunk = s.chunk;
    // C_i·B_j within each chunk, once per group: every head of the group reads it. Row (bi, g, t)
    // holds j − chunk start for t's chunk (entries past t are computed and never read).
    let batch = state.len() / (s.heads * s.head_dim * s.d_state).max(1);
    let mut cb = vec![0.0f32; batch * s.groups * s.seq * chunk];
    cb.par_chunks_mut((s.seq * chunk).max(1)).enumerate().for_each(|(bg, table)| {
        let (bi, g) = (bg / s.groups, bg % s.groups);
        for start in (0..s.seq).step_by(chunk) {
            let q = chunk.min(s.seq - start);
            let first = (bi * s.seq + start) * gn + g * s.d_state;
            let cs = Strided { data: &c[first..], row: gn, col: 1 };
            let bs_t = Strided { data: &b[first..], row: 1, col: gn };
            matmul_serial(q, q, s.d_state, &mut table[start * chunk..], chunk, None, cs, bs_t);
        }
    });
    let results: Vec<Vec<f32>> = state
        .par_chunks_mut(s.head_dim * s.d_state)
        .enumerate()
        .map(|(task, st)| {
            let (bi, h) = (task / s.heads, task % s.heads);
            let g = h / heads_per_group;
            let a = -p.a_log[h].exp();
            let delta: Vec<f32> = (0..s.seq).map(|t| softplus(dt[(bi * s.seq + t) * s.heads + h] + p.dt_bias[h]).clamp(p.dt_limit.0, p.dt_limit.1)).collect();
            let head = Head { x, b, c, cb: &cb, bi, h, g, a, d: p.d[h], width, gn, shape: s };
            let mut y = vec![0.0f32; s.seq * s.head_dim];
            let mut scratch = ChunkScratch { cum: vec![0.0; chunk], mix: vec![0.0; chunk * chunk], xw: vec![0.0; chunk * s.head_dim] };
            for start in (0..s.seq).step_by(chunk) {
                let q = chunk.min(s.seq - start);
                head.chunk_step(start, q, &delta, st, &mut y, &mut scratch);
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

/// Decays below e^this (8.8·10⁻²⁷, far under an f32 ulp of anything they are added to) are
/// taken as 0: a long chunk's products otherwise fill with subnormal numbers, which every
/// multiply-add then handles slowly (mamba2-small's prefill SSD ran several times slower).
const NEGLIGIBLE_DECAY: f32 = -60.0;

/// e^x, or 0 below [`NEGLIGIBLE_DECAY`].
fn decay_or_zero(x: f32) -> f32 {
    if x < NEGLIGIBLE_DECAY {
        0.0
    } else {
        x.exp()
    }
}

/// One head of one sequence: where its operands live.
struct Head<'a> {
    x: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
    cb: &'a [f32],
    bi: usize,
    h: usize,
    g: usize,
    a: f32,
    d: f32,
    width: usize,
    gn: usize,
    shape: SsdShape,
}

/// A head's buffers for one chunk, reused across its chunks.
struct ChunkScratch {
    /// Cumulative Δ·A within the chunk.
    cum: Vec<f32>,
    /// `[q, q]`: (C_i·B_j) · exp(s_i − s_j) · Δ_j for j ≤ i, else 0.
    mix: Vec<f32>,
    /// `[q, head_dim]`: x_j · exp(s_last − s_j) · Δ_j.
    xw: Vec<f32>,
}

impl Head<'_> {
    /// Chunk `[start, start + q)`: writes its outputs into `y` (`[seq, head_dim]`) and advances
    /// `st` (`[head_dim, d_state]`). The three sums are matrix products on the calling thread
    /// (`gemm`, in its own summation order): the carried-in state C·Sᵀ, the masked within-chunk
    /// mix·X, and the state update (X·w)ᵀ·B.
    fn chunk_step(&self, start: usize, q: usize, delta: &[f32], st: &mut [f32], y: &mut [f32], scratch: &mut ChunkScratch) {
        let s = self.shape;
        let (p_dim, n_dim) = (s.head_dim, s.d_state);
        let row0 = self.bi * s.seq + start;
        let xs = Strided { data: &self.x[row0 * self.width + self.h * p_dim..], row: self.width, col: 1 };
        let bc_first = row0 * self.gn + self.g * n_dim;
        let cum = &mut scratch.cum[..q];
        let mut run = 0.0f32;
        for (i, c) in cum.iter_mut().enumerate() {
            run += delta[start + i] * self.a;
            *c = run;
        }
        let ys = &mut y[start * p_dim..(start + q) * p_dim];
        // Carried-in state, exp(s_i) · C_i · S, plus the skip connection D·x_i.
        matmul_serial(q, p_dim, n_dim, ys, p_dim, None, Strided { data: &self.c[bc_first..], row: self.gn, col: 1 }, Strided { data: st, row: 1, col: n_dim });
        for (i, yi) in ys.chunks_exact_mut(p_dim).enumerate() {
            let decay = decay_or_zero(cum[i]);
            let xi = &xs.data[i * self.width..][..p_dim];
            for (out, xv) in yi.iter_mut().zip(xi) {
                *out = decay * *out + self.d * xv;
            }
        }
        // Within the chunk: Σ_{j≤i} (C_i·B_j) · exp(s_i − s_j) · Δ_j · x_j.
        let mix = &mut scratch.mix[..q * q];
        let chunk = s.chunk;
        for (i, row) in mix.chunks_exact_mut(q).enumerate() {
            let cb_i = &self.cb[((self.bi * s.groups + self.g) * s.seq + start + i) * chunk..][..q];
            let (lower, upper) = row.split_at_mut(i + 1);
            for (j, m) in lower.iter_mut().enumerate() {
                let gap = cum[i] - cum[j];
                *m = if gap < NEGLIGIBLE_DECAY { 0.0 } else { cb_i[j] * super::fastmath::exp(gap) * delta[start + j] };
            }
            upper.fill(0.0);
        }
        matmul_serial(q, p_dim, q, ys, p_dim, Some(1.0), Strided { data: mix, row: q, col: 1 }, xs);
        // Advance the state to the end of the chunk: S ← exp(s_last) · S + (X·w)ᵀ · B.
        let last = cum[q - 1];
        let xw = &mut scratch.xw[..q * p_dim];
        for (j, row) in xw.chunks_exact_mut(p_dim).enumerate() {
            let w = decay_or_zero(last - cum[j]) * delta[start + j];
            for (dst, xv) in row.iter_mut().zip(&xs.data[j * self.width..][..p_dim]) {
                *dst = w * xv;
            }
        }
        matmul_serial(p_dim, n_dim, q, st, n_dim, Some(decay_or_zero(last)), Strided { data: xw, row: 1, col: p_dim }, Strided { data: &self.b[bc_first..], row: self.gn, col: 1 });
    }
}

/// Partial sums of a decode step's C·S.
const PARTIALS: usize = 16;

/// One state row's step: returns C·S of the row as it was, and updates it to
/// `S·decay + wx·B`. C·S is summed in [`PARTIALS`] partial sums (element e into partial
/// e mod 16: one AVX-512 vector, or the four f32x4 of the generated kernel), then totalled by
/// [`partials_total`], as `kernels::cpu::vmath::dot_total_16` does.
#[inline(always)]
fn row_step(srow: &mut [f32], cs: &[f32], bs: &[f32], decay: f32, wx: f32) -> f32 {
    let mut partial = [0.0f32; PARTIALS];
    for (k, ((sv, cv), bv)) in srow.iter_mut().zip(cs).zip(bs).enumerate() {
        partial[k % PARTIALS] += *sv * cv;
        *sv = *sv * decay + wx * bv;
    }
    partials_total(&partial)
}

/// [`row_step`] on 512-bit vectors (the same operations lane by lane, so the same bits).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_step_avx512(srow: &mut [f32], cs: &[f32], bs: &[f32], decay: f32, wx: f32) -> f32 {
    use std::arch::x86_64::*;
    let len = srow.len().min(cs.len()).min(bs.len());
    let whole = len / PARTIALS * PARTIALS;
    let (decay_v, wx_v) = (_mm512_set1_ps(decay), _mm512_set1_ps(wx));
    let mut acc = _mm512_setzero_ps();
    for j in (0..whole).step_by(PARTIALS) {
        // SAFETY: j + 16 ≤ whole ≤ the length of all three slices, so the 16-value loads and
        // store stay inside them (unaligned loads and stores are allowed).
        unsafe {
            let s = _mm512_loadu_ps(srow.as_ptr().add(j));
            let c = _mm512_loadu_ps(cs.as_ptr().add(j));
            let b = _mm512_loadu_ps(bs.as_ptr().add(j));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(s, c));
            _mm512_storeu_ps(srow.as_mut_ptr().add(j), _mm512_add_ps(_mm512_mul_ps(s, decay_v), _mm512_mul_ps(wx_v, b)));
        }
    }
    let mut partial = [0.0f32; PARTIALS];
    // SAFETY: `partial` holds 16 f32.
    unsafe { _mm512_storeu_ps(partial.as_mut_ptr(), acc) };
    finish_row(partial, &mut srow[whole..len], &cs[whole..len], &bs[whole..len], decay, wx)
}

/// [`row_step`] on 256-bit vectors: partials 0-7 and 8-15 in two registers (the same operations
/// lane by lane, so the same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_step_avx2(srow: &mut [f32], cs: &[f32], bs: &[f32], decay: f32, wx: f32) -> f32 {
    use std::arch::x86_64::*;
    let len = srow.len().min(cs.len()).min(bs.len());
    let whole = len / PARTIALS * PARTIALS;
    let (decay_v, wx_v) = (_mm256_set1_ps(decay), _mm256_set1_ps(wx));
    let mut acc = [_mm256_setzero_ps(); 2];
    for j in (0..whole).step_by(PARTIALS) {
        for (half, acc) in acc.iter_mut().enumerate() {
            let at = j + 8 * half;
            // SAFETY: at + 8 ≤ whole ≤ the length of all three slices, so the 8-value loads and
            // store stay inside them (unaligned loads and stores are allowed).
            unsafe {
                let s = _mm256_loadu_ps(srow.as_ptr().add(at));
                let c = _mm256_loadu_ps(cs.as_ptr().add(at));
                let b = _mm256_loadu_ps(bs.as_ptr().add(at));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(s, c));
                _mm256_storeu_ps(srow.as_mut_ptr().add(at), _mm256_add_ps(_mm256_mul_ps(s, decay_v), _mm256_mul_ps(wx_v, b)));
            }
        }
    }
    let mut partial = [0.0f32; PARTIALS];
    // SAFETY: `partial` holds 16 f32: two stores of 8.
    unsafe {
        _mm256_storeu_ps(partial.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(partial.as_mut_ptr().add(8), acc[1]);
    }
    finish_row(partial, &mut srow[whole..len], &cs[whole..len], &bs[whole..len], decay, wx)
}

/// The values of a row past its last whole 16 (element k of the remainder into partial k), then
/// the total of the partial sums.
#[inline(always)]
fn finish_row(mut partial: [f32; PARTIALS], srow: &mut [f32], cs: &[f32], bs: &[f32], decay: f32, wx: f32) -> f32 {
    for (k, ((sv, cv), bv)) in srow.iter_mut().zip(cs).zip(bs).enumerate() {
        partial[k] += *sv * cv;
        *sv = *sv * decay + wx * bv;
    }
    partials_total(&partial)
}

/// `(p[l] + p[8 + l]) + (p[4 + l] + p[12 + l])` for l < 4, those four left to right, `+ 0.0`.
#[inline(always)]
fn partials_total(p: &[f32; PARTIALS]) -> f32 {
    let quad = |l: usize| (p[l] + p[8 + l]) + (p[4 + l] + p[12 + l]);
    quad(0) + quad(1) + quad(2) + quad(3) + 0.0
}

/// One decode step (one token per sequence) of [`ssd`], writing y into `y`.
///
/// The same operations as a chunk of one token, in one pass over each head's state, except the
/// two dot products over `d_state`: C·B, which [`super::dot`] sums in eight partial sums, and the
/// state row · C in sixteen, instead of left to right: vectorisable, and within a few f32
/// roundings of the chunked form (tested against it in `tests::the_step_matches_a_chunk_of_one`).
#[allow(clippy::too_many_arguments)]
pub fn ssd_step(x: &[f32], dt: &[f32], b: &[f32], c: &[f32], batch: usize, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32], kernel: Option<&JitSsdStep>) {
    let width = s.heads * s.head_dim;
    let gn = s.groups * s.d_state;
    let per_head = s.head_dim * s.d_state;
    for bi in 0..batch {
        let rows = StepRow::of_sequence([x, dt, b, c], bi, [width, s.heads, gn]);
        step_heads(kernel, &rows, 0..s.heads, s, p, &mut state[bi * s.heads * per_head..][..s.heads * per_head], &mut y[bi * width..][..width]);
    }
}

/// The step of `heads` of one sequence on the generated `kernel` where there is one (the same
/// values), else on [`ssd_step_heads`].
pub fn step_heads(kernel: Option<&JitSsdStep>, rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    match kernel {
        Some(kernel) => kernel.heads(rows, heads, s, p, state, y),
        None => ssd_step_heads(rows, heads, s, p, state, y),
    }
}

/// The step of `heads` of one sequence (`rows`: its x, dt, B and C); `state` holds those heads'
/// `[head_dim, d_state]` states, `y` their outputs. Runs its state rows on 512-bit vectors where
/// the CPU has AVX-512 (one vector of the sixteen partial sums), else the AVX2 build of the loop
/// (the same operations, so the same values).
pub fn ssd_step_heads(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above), the one requirement of calling a
        // function compiled with `#[target_feature(enable = "avx512f")]`.
        unsafe { ssd_step_heads_avx512(rows, heads, s, p, state, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above), the one requirement of calling a function
        // compiled with `#[target_feature(enable = "avx2")]`.
        unsafe { ssd_step_heads_avx2(rows, heads, s, p, state, y) };
        return;
    }
    ssd_step_heads_body(rows, heads, s, p, state, y, row_step)
}

/// [`ssd_step_heads`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ssd_step_heads_avx2(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    // SAFETY (each call): this function runs only where the CPU has AVX2.
    ssd_step_heads_body(rows, heads, s, p, state, y, |srow, cs, bs, decay, wx| unsafe { row_step_avx2(srow, cs, bs, decay, wx) })
}

/// [`ssd_step_heads`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn ssd_step_heads_avx512(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
    // SAFETY (each call): this function runs only where the CPU has AVX-512F.
    ssd_step_heads_body(rows, heads, s, p, state, y, |srow, cs, bs, decay, wx| unsafe { row_step_avx512(srow, cs, bs, decay, wx) })
}

#[inline(always)]
fn ssd_step_heads_body(rows: &StepRow, heads: std::ops::Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32], row: impl Fn(&mut [f32], &[f32], &[f32], f32, f32) -> f32) {
    let StepRow { x, b, c, .. } = *rows;
    let heads_per_group = s.heads / s.groups;
    let per_head = s.head_dim * s.d_state;
    for ((h, st), ys) in heads.zip(state.chunks_exact_mut(per_head)).zip(y.chunks_exact_mut(s.head_dim)) {
        let g = h / heads_per_group;
        let HeadScalars { decay, delta, w, d } = head_scalars(rows, h, s, p);
        let xs = &x[h * s.head_dim..][..s.head_dim];
        let bs = &b[g * s.d_state..][..s.d_state];
        let cs = &c[g * s.d_state..][..s.d_state];
        for ((srow, out), xv) in st.chunks_exact_mut(s.d_state).zip(ys.iter_mut()).zip(xs) {
            let dot = row(srow, cs, bs, decay, delta * xv);
            *out = decay * dot + d * xv;
            *out += w * xv;
        }
    }
}

/// The scalars of head `h`'s step: decay = e^(Δ·A), Δ, w = (C·B)·Δ and D.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct HeadScalars {
    pub decay: f32,
    pub delta: f32,
    pub w: f32,
    pub d: f32,
}

/// [`HeadScalars`] of head `h` of one sequence's `rows` (libm's exp and log1p).
#[inline(always)]
pub fn head_scalars(rows: &StepRow, h: usize, s: SsdShape, p: &SsdParams) -> HeadScalars {
    let g = h / (s.heads / s.groups);
    let a = -p.a_log[h].exp();
    let delta = softplus(rows.dt[h] + p.dt_bias[h]).clamp(p.dt_limit.0, p.dt_limit.1);
    let decay = (delta * a).exp();
    let bs = &rows.b[g * s.d_state..][..s.d_state];
    let cs = &rows.c[g * s.d_state..][..s.d_state];
    HeadScalars { decay, delta, w: super::dot(cs, bs) * delta, d: p.d[h] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The chunked products (several chunks, the last one partial, two sequences) against the
    /// recurrence run one step at a time.
    #[test]
    fn chunks_match_the_recurrence() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (batch, seq, chunk, heads, head_dim, groups, d_state) in [(2, 11, 4, 4, 8, 2, 16), (1, 37, 16, 3, 5, 1, 7), (1, 70, 32, 2, 64, 1, 128)] {
            let shape = SsdShape { seq, heads, head_dim, groups, d_state, chunk };
            let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(lo..hi)).collect() };
            let rows = batch * seq;
            let (x, dt, b, c) = (r(rows * heads * head_dim, -1.0, 1.0), r(rows * heads, -2.0, 1.0), r(rows * groups * d_state, -1.0, 1.0), r(rows * groups * d_state, -1.0, 1.0));
            let (a_log, d, dt_bias) = (r(heads, -1.0, 1.0), r(heads, -1.0, 1.0), r(heads, -0.5, 0.5));
            let params = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
            let state0 = r(batch * heads * head_dim * d_state, -1.0, 1.0);
            let mut got_state = state0.clone();
            let got = ssd(&x, &dt, &b, &c, shape, &params, &mut got_state);
            let mut want_state = state0;
            let mut want = vec![0.0f32; got.len()];
            let (width, gn) = (heads * head_dim, groups * d_state);
            let step_shape = SsdShape { seq: 1, ..shape };
            for t in 0..seq {
                let pick = |v: &[f32], w: usize| (0..batch).flat_map(|bi| v[(bi * seq + t) * w..][..w].to_vec()).collect::<Vec<f32>>();
                let mut y = vec![0.0f32; batch * width];
                ssd_step(&pick(&x, width), &pick(&dt, heads), &pick(&b, gn), &pick(&c, gn), batch, step_shape, &params, &mut want_state, &mut y, None);
                for bi in 0..batch {
                    want[(bi * seq + t) * width..][..width].copy_from_slice(&y[bi * width..][..width]);
                }
            }
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
            assert!(close(&got, &want), "y, seq {seq} chunk {chunk}");
            assert!(close(&got_state, &want_state), "state, seq {seq} chunk {chunk}");
        }
    }

    /// Times a mamba2-small-shaped prefill SSD (`cargo test --release -p quamba-runtime --lib -- --ignored time_ssd --nocapture`).
    #[test]
    #[ignore]
    fn time_ssd_prefill() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (seq, heads, head_dim, groups, d_state) = (512, 16, 64, 1, 64);
        let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(lo..hi)).collect() };
        let (x, dt, b, c) = (r(seq * heads * head_dim, -1.0, 1.0), r(seq * heads, -2.0, 1.0), r(seq * groups * d_state, -1.0, 1.0), r(seq * groups * d_state, -1.0, 1.0));
        let (a_log, d, dt_bias) = (r(heads, -1.0, 1.0), r(heads, -1.0, 1.0), r(heads, -0.5, 0.5));
        let params = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
        for chunk in [128; 3] {
            let shape = SsdShape { seq, heads, head_dim, groups, d_state, chunk };
            let mut state = vec![0.0f32; heads * head_dim * d_state];
            let start = std::time::Instant::now();
            for _ in 0..12 {
                std::hint::black_box(ssd(&x, &dt, &b, &c, shape, &params, &mut state));
            }
            eprintln!("chunk {chunk}: {:?} for 12 layers", start.elapsed());
        }
    }

    /// Times one mamba2-small-shaped decode step of the SSD (all 16 heads, state in cache).
    #[test]
    #[ignore]
    fn time_ssd_step() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (heads, head_dim, groups, d_state) = (16, 64, 1, 64);
        let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(lo..hi)).collect() };
        let (x, dt, b, c) = (r(heads * head_dim, -1.0, 1.0), r(heads, -2.0, 1.0), r(groups * d_state, -1.0, 1.0), r(groups * d_state, -1.0, 1.0));
        let (a_log, d, dt_bias) = (r(heads, -1.0, 1.0), r(heads, -1.0, 1.0), r(heads, -0.5, 0.5));
        let params = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
        let shape = SsdShape { seq: 1, heads, head_dim, groups, d_state, chunk: 128 };
        let mut state = r(heads * head_dim * d_state, -1.0, 1.0);
        let mut y = vec![0.0f32; heads * head_dim];
        for _ in 0..3 {
            let start = std::time::Instant::now();
            for _ in 0..1000 {
                ssd_step(&x, &dt, &b, &c, 1, shape, &params, &mut state, &mut y, None);
            }
            eprintln!("ssd step: {:?} per step (state in cache)", start.elapsed() / 1000);
        }
    }

    /// The state-row step gives the same bits on every build: portable, AVX2 and AVX-512
    /// (where the CPU has them), at lengths with and without a remainder past 16.
    #[test]
    fn row_steps_agree_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for len in [16, 64, 128, 24, 7, 1] {
            let mut r = |lo: f32, hi: f32| -> Vec<f32> { (0..len).map(|_| rng.gen_range(lo..hi)).collect() };
            let (row, cs, bs) = (r(-1.0, 1.0), r(-1.0, 1.0), r(-1.0, 1.0));
            let (decay, wx) = (0.93, -0.37);
            let mut want_row = row.clone();
            let want = row_step(&mut want_row, &cs, &bs, decay, wx);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut got_row = row.clone();
                    // SAFETY: the CPU has AVX2 (checked above).
                    let got = unsafe { row_step_avx2(&mut got_row, &cs, &bs, decay, wx) };
                    assert_eq!((got.to_bits(), bits(&got_row)), (want.to_bits(), bits(&want_row)), "AVX2, length {len}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut got_row = row.clone();
                    // SAFETY: the CPU has AVX-512F (checked above).
                    let got = unsafe { row_step_avx512(&mut got_row, &cs, &bs, decay, wx) };
                    assert_eq!((got.to_bits(), bits(&got_row)), (want.to_bits(), bits(&want_row)), "AVX-512, length {len}");
                }
            }
            let plain: f32 = row.iter().zip(&cs).map(|(s, c)| s * c).sum();
            assert!((want - plain).abs() <= 1e-5 * (1.0 + plain.abs()), "length {len}: C·S {want} against {plain}");
        }
    }

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
            ssd_step(&x, &dt, &b, &c, batch, shape, &params, &mut got_state, &mut got, None);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()));
            assert!(close(&got, &want), "y, heads {heads} d_state {d_state}");
            assert!(close(&got_state, &want_state), "state, heads {heads} d_state {d_state}");
        }
    }
}
