//! The prefill's Mamba1 selective scan with channels across SIMD lanes.
//!
//! The decode step ([`super::scan::selective_scan_channels`]) puts a channel's states across the
//! lanes: with Mamba1's 16 states that is two AVX2 vectors per channel, and y = C·h ends in a
//! horizontal sum per channel, which made the per-token scan the larger half of a quantized mamba1
//! prefill. Here a block of [`LANES`] channels runs through the whole sequence with its state
//! transposed to `[d_state][LANES]`: every operation is lane-wise (no horizontal sum), B[n] and C[n]
//! are broadcasts, and with AVX-512 the 16 state vectors of a block stay in registers for all the
//! tokens.
//!
//! Each lane does the decode step's operations in the decode step's order (the same fastmath
//! exp and softplus, `(Δ·B)·x`, and C·h in [`super::dot`]'s eight partial sums and their final
//! tree), so a prefill gives bit-for-bit the values of feeding its tokens one by one.

use super::StepRow;

/// Channels per block: one AVX-512 vector, two AVX2 ones.
pub const LANES: usize = 16;

/// Partial sums of [`super::dot`].
const PARTIALS: usize = 8;

/// One block's inputs for the whole sequence: row t of x, dt, B, C is token t's.
pub struct LaneBlock<'a> {
    /// First channel of the block.
    pub first: usize,
    /// Channels in the block (≤ [`LANES`]; the lanes past it compute on zeros and are dropped).
    pub width: usize,
    /// Tokens.
    pub seq: usize,
    /// `rows(t)` gives token t's operands.
    pub rows: &'a dyn Fn(usize) -> StepRow<'a>,
}

/// Runs `block` through its sequence: `a` = −exp(A_log) `[d_inner, d_state]`, `d` `[d_inner]`,
/// `state` the block's `[width, d_state]` rows (updated), `y` `[seq, width]`.
pub fn scan_block(block: &LaneBlock, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above), the one requirement of calling a
            // function compiled with `#[target_feature(enable = "avx512f")]`.
            unsafe { scan_block_avx512(block, a, d, state, y) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above), as the attribute requires.
            unsafe { scan_block_avx2(block, a, d, state, y) };
            return;
        }
    }
    scan_block_body(block, a, d, state, y)
}

/// [`scan_block`] compiled for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scan_block_avx512(block: &LaneBlock, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    scan_block_body(block, a, d, state, y)
}

/// [`scan_block`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_block_avx2(block: &LaneBlock, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    scan_block_body(block, a, d, state, y)
}

type Lanes = [f32; LANES];

/// Copies `src` into the first lanes of a zeroed vector (a whole block without a library call).
#[inline(always)]
fn lanes_of(src: &[f32]) -> Lanes {
    if let Ok(whole) = <&Lanes>::try_from(src) {
        return *whole;
    }
    let mut v = [0.0; LANES];
    for (lane, value) in v.iter_mut().zip(src) {
        *lane = *value;
    }
    v
}

/// h ← exp(Δ·A)·h + (Δ·B)·x, lane-wise.
#[inline(always)]
fn state_update(h: &Lanes, a: &Lanes, delta: &Lanes, x: &Lanes, b: f32) -> Lanes {
    let mut next = [0.0f32; LANES];
    for l in 0..LANES {
        next[l] = super::fastmath::exp(delta[l] * a[l]) * h[l] + delta[l] * b * x[l];
    }
    next
}

/// sum += c·h, lane-wise.
#[inline(always)]
fn accumulate(sum: &mut Lanes, c: f32, h: &Lanes) {
    for l in 0..LANES {
        sum[l] += c * h[l];
    }
}

#[inline(always)]
fn scan_block_body(block: &LaneBlock, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
    let (first, width) = (block.first, block.width);
    let d_state = state.len() / width;
    // Transposed A and state of the block: [d_state][LANES].
    let mut a_t = vec![[0.0f32; LANES]; d_state];
    let mut h = vec![[0.0f32; LANES]; d_state];
    for c in 0..width {
        for n in 0..d_state {
            a_t[n][c] = a[(first + c) * d_state + n];
            h[n][c] = state[c * d_state + n];
        }
    }
    let d_lanes = lanes_of(&d[first..first + width]);
    // States summed in the eight partial sums, and the rest left to right (super::dot).
    let in_partials = d_state / PARTIALS * PARTIALS;
    for (t, y_t) in y.chunks_exact_mut(width).enumerate().take(block.seq) {
        let r = (block.rows)(t);
        let x = lanes_of(&r.x[first..first + width]);
        let dt = lanes_of(&r.dt[first..first + width]);
        let mut delta = [0.0f32; LANES];
        for l in 0..LANES {
            delta[l] = super::fastmath::softplus(dt[l]);
        }
        let mut partial = [[0.0f32; LANES]; PARTIALS];
        let (h_partials, h_tail) = h.split_at_mut(in_partials);
        for (j, (h_j, a_j)) in h_partials.chunks_exact_mut(PARTIALS).zip(a_t.chunks_exact(PARTIALS)).enumerate() {
            for (k, sum) in partial.iter_mut().enumerate() {
                let n = j * PARTIALS + k;
                h_j[k] = state_update(&h_j[k], &a_j[k], &delta, &x, r.b[n]);
                accumulate(sum, r.c[n], &h_j[k]);
            }
        }
        let mut tail = [0.0f32; LANES];
        for (i, (h_n, a_n)) in h_tail.iter_mut().zip(&a_t[in_partials..]).enumerate() {
            let n = in_partials + i;
            *h_n = state_update(h_n, a_n, &delta, &x, r.b[n]);
            accumulate(&mut tail, r.c[n], h_n);
        }
        let mut out = [0.0f32; LANES];
        for l in 0..LANES {
            let p = |k: usize| partial[k][l];
            out[l] = (p(0) + p(4)) + (p(1) + p(5)) + (p(2) + p(6)) + (p(3) + p(7)) + tail[l] + d_lanes[l] * x[l];
        }
        match <&mut Lanes>::try_from(&mut *y_t) {
            Ok(whole) => *whole = out,
            Err(_) => y_t.copy_from_slice(&out[..width]),
        }
    }
    for c in 0..width {
        for n in 0..d_state {
            state[c * d_state + n] = h[n][c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::scan::selective_scan_channels;

    /// Deterministic values in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    struct Case {
        x: Vec<f32>,
        dt: Vec<f32>,
        b: Vec<f32>,
        c: Vec<f32>,
        a: Vec<f32>,
        d: Vec<f32>,
        state: Vec<f32>,
    }

    fn case(seq: usize, d_inner: usize, d_state: usize) -> Case {
        Case {
            x: noise(seq * d_inner, 1),
            dt: noise(seq * d_inner, 2).iter().map(|v| v * 4.0 - 1.0).collect(),
            b: noise(seq * d_state, 3),
            c: noise(seq * d_state, 4),
            a: noise(d_inner * d_state, 5).iter().map(|v| -(v * 2.0).exp()).collect(),
            d: noise(d_inner, 6),
            state: noise(d_inner * d_state, 7),
        }
    }

    /// Lanes over a sequence == the decode step token by token, bit for bit, at odd widths and
    /// state sizes (partial blocks, states outside the eight partial sums).
    #[test]
    fn blocks_match_the_decode_step_bit_for_bit() {
        for (seq, d_inner, d_state) in [(7, 37, 16), (5, 16, 3), (9, 50, 21), (3, 64, 8)] {
            let k = case(seq, d_inner, d_state);
            let rows = |t: usize| StepRow::of_sequence([&k.x, &k.dt, &k.b, &k.c], t, [d_inner, d_inner, d_state]);
            let mut step_state = k.state.clone();
            let mut step_y = vec![0.0f32; seq * d_inner];
            for t in 0..seq {
                selective_scan_channels(&rows(t), 0..d_inner, &k.a, &k.d, &mut step_state, &mut step_y[t * d_inner..][..d_inner]);
            }
            let mut lane_state = k.state.clone();
            let mut lane_y = vec![0.0f32; seq * d_inner];
            for first in (0..d_inner).step_by(LANES) {
                let width = LANES.min(d_inner - first);
                let mut y = vec![0.0f32; seq * width];
                scan_block(&LaneBlock { first, width, seq, rows: &rows }, &k.a, &k.d, &mut lane_state[first * d_state..][..width * d_state], &mut y);
                for t in 0..seq {
                    lane_y[t * d_inner + first..][..width].copy_from_slice(&y[t * width..][..width]);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&lane_y), bits(&step_y), "y at {seq}x{d_inner}x{d_state}");
            assert_eq!(bits(&lane_state), bits(&step_state), "state at {seq}x{d_inner}x{d_state}");
        }
    }

    /// Times both on one thread at mamba1-small's shape (`cargo test --release -- --ignored time_`).
    #[test]
    #[ignore]
    fn time_lanes_against_the_step_loop() {
        let (seq, d_inner, d_state) = (512, 1536, 16);
        let k = case(seq, d_inner, d_state);
        let rows = |t: usize| StepRow::of_sequence([&k.x, &k.dt, &k.b, &k.c], t, [d_inner, d_inner, d_state]);
        for _ in 0..3 {
            let mut state = k.state.clone();
            let mut y = vec![0.0f32; d_inner];
            let start = std::time::Instant::now();
            for t in 0..seq {
                selective_scan_channels(&rows(t), 0..d_inner, &k.a, &k.d, &mut state, &mut y);
            }
            let step = start.elapsed();
            let mut state = k.state.clone();
            let mut y = vec![0.0f32; seq * LANES];
            let start = std::time::Instant::now();
            for first in (0..d_inner).step_by(LANES) {
                scan_block(&LaneBlock { first, width: LANES, seq, rows: &rows }, &k.a, &k.d, &mut state[first * d_state..][..LANES * d_state], &mut y);
            }
            eprintln!("step loop {:?}, lanes {:?}", step, start.elapsed());
        }
    }
}
