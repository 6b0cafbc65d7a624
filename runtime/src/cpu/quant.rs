//! Integer reference kernels: static int8 quantization and quantized linear layers, computed
//! exactly as the GPU and generated CPU kernels must (these are their oracle).

use rayon::prelude::*;

/// A per-tensor (`[1]`) scale repeated over `width` channels, or the per-channel one as is.
pub fn channel_scales(scale: &[f32], width: usize) -> std::borrow::Cow<'_, [f32]> {
    if scale.len() == 1 && width != 1 {
        std::borrow::Cow::Owned(vec![scale[0]; width])
    } else {
        std::borrow::Cow::Borrowed(scale)
    }
}

/// `out[i] = f(x[i], scale of i's channel)` over rows of `width`, with a per-tensor (`[1]`) or
/// per-channel (`[width]`) scale; written as plain zips so that it vectorises.
pub(crate) fn per_channel<X: Copy, Y>(scale: &[f32], width: usize, x: &[X], out: &mut [Y], f: impl Fn(X, f32) -> Y) {
    for (o, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
        if let [s] = scale {
            for (o, x) in o.iter_mut().zip(x) {
                *o = f(*x, *s);
            }
        } else {
            for ((o, x), s) in o.iter_mut().zip(x).zip(scale) {
                *o = f(*x, *s);
            }
        }
    }
}

/// [`per_channel`] rewriting `data` in place.
pub(crate) fn per_channel_in_place(scale: &[f32], width: usize, data: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for row in data.chunks_exact_mut(width.max(1)) {
        if let [s] = scale {
            row.iter_mut().for_each(|v| *v = f(*v, *s));
        } else {
            row.iter_mut().zip(scale).for_each(|(v, s)| *v = f(*v, *s));
        }
    }
}

/// q = clamp(round_half_even(x / scale[c]), −128, 127) over rows of `scale.len()` channels.
pub fn quantize(x: &[f32], scale: &[f32]) -> Vec<i8> {
    let width = scale.len();
    let mut out = vec![0i8; x.len()];
    out.par_chunks_mut(width * 64).zip(x.par_chunks(width * 64)).for_each(|(o, x)| {
        for (row_o, row_x) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
            for ((q, v), s) in row_o.iter_mut().zip(row_x).zip(scale) {
                *q = quantize_one(*v, *s);
            }
        }
    });
    out
}

/// One value: divide, round half to even, saturate.
///
/// Rounds by adding and subtracting 1.5·2²³ (in [2²³, 2²⁴) f32 holds only integers, so the sum
/// rounds to nearest, ties to even, exactly like `round_ties_even`), after bounding the quotient
/// to ±2²² where that holds: the same result as `(x / scale).round_ties_even().clamp(..) as i8`
/// for every input (NaN → 0), but a loop over it vectorises, where `round_ties_even` is a libm
/// call on baseline x86-64.
pub fn quantize_one(x: f32, scale: f32) -> i8 {
    quantize_value(x, scale) as i8
}

/// [`quantize_one`] as the f32 it converts (an integer in −128..=127; NaN gives 0): what a
/// quantize → dequantize pair multiplies by the scale, without a float → int → float round trip.
pub fn quantize_value(x: f32, scale: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    const BOUND: f32 = 4_194_304.0;
    let q = (x / scale).clamp(-BOUND, BOUND);
    let r = ((q + ROUND) - ROUND).clamp(-128.0, 127.0);
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

/// x = q · scale[c].
pub fn dequantize(q: &[i8], scale: &[f32]) -> Vec<f32> {
    let width = scale.len();
    let mut out = vec![0.0f32; q.len()];
    // Blocks of rows across threads (a prefill's SSM inputs); one block for a decode row.
    let block = (width * 64).max(1);
    out.par_chunks_mut(block).zip(q.par_chunks(block)).for_each(|(out, q)| {
        for (row_o, row_q) in out.chunks_exact_mut(width).zip(q.chunks_exact(width)) {
            for ((o, q), s) in row_o.iter_mut().zip(row_q).zip(scale) {
                *o = *q as f32 * s;
            }
        }
    });
    out
}

/// Exact integer dot product of two int8 slices.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| *x as i32 * *y as i32).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += (x[k] as i16 * y[k] as i16) as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// W·A8 linear: `x` i8 `[rows, in_dim]` with per-tensor `act_scale`; `w` i8 integers `[out_dim, in_dim]`
/// (int4 weights are stored in i8 lanes); `scales` `[out_dim, in_dim / group]`.
/// out[m, o] = act_scale · Σ_g scales[o, g] · Σ_{k∈g} x[m, k]·w[o, k] (+ bias[o]).
#[allow(clippy::too_many_arguments)]
pub fn qlinear_i8(x: &[i8], rows: usize, in_dim: usize, w: &[i8], out_dim: usize, scales: &[f32], group: usize, act_scale: f32, bias: Option<&[f32]>) -> Vec<f32> {
    let groups = in_dim / group;
    let feature = |m: usize, o: usize| -> f32 {
        let xm = &x[m * in_dim..(m + 1) * in_dim];
        let wo = &w[o * in_dim..(o + 1) * in_dim];
        let so = &scales[o * groups..(o + 1) * groups];
        let acc: f32 = (0..groups).map(|g| so[g] * dot_i8(&xm[g * group..(g + 1) * group], &wo[g * group..(g + 1) * group]) as f32).sum();
        acc * act_scale + bias.map_or(0.0, |b| b[o])
    };
    let mut out = vec![0.0f32; rows * out_dim];
    if rows >= 8 {
        out.par_chunks_mut(out_dim).enumerate().for_each(|(m, dst)| dst.iter_mut().enumerate().for_each(|(o, d)| *d = feature(m, o)));
    } else {
        // Few rows (decode): split the output features across threads instead.
        for (m, dst) in out.chunks_exact_mut(out_dim).enumerate() {
            dst.par_chunks_mut(64).enumerate().for_each(|(blk, d)| d.iter_mut().enumerate().for_each(|(j, v)| *v = feature(m, blk * 64 + j)));
        }
    }
    out
}

/// Longest reduction whose integer partial sums stay exact in f32: |x·w| ≤ 2¹⁴ per product, so
/// 1024 of them stay within 2²⁴, where f32 represents every integer.
const EXACT_F32_K: usize = 1024;

/// [`qlinear_i8`] computed through the f32 GEMM on integer-valued operands, bit-identical to it:
/// each block of at most 1024 products is an exact integer in f32 whatever the summation order,
/// blocks are summed as integers, and groups are combined in the same order and precision.
/// `w_ints` holds the weight integers as f32.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_i8_gemm(x: &[i8], rows: usize, in_dim: usize, w_ints: &[f32], out_dim: usize, scales: &[f32], group: usize, act_scale: f32, bias: Option<&[f32]>) -> Vec<f32> {
    let groups = in_dim / group;
    let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
    let mut out = vec![0.0f32; rows * out_dim];
    // `part` holds one group's exact integer products; `acc` sums the blocks of a wider group.
    let mut part = vec![0.0f32; rows * out_dim];
    let mut acc = vec![0i64; if group > EXACT_F32_K { rows * out_dim } else { 0 }];
    for g in 0..groups {
        let g0 = g * group;
        if group <= EXACT_F32_K {
            super::linear::matmul_nt_strided(&xf[g0..], in_dim, &w_ints[g0..], in_dim, rows, out_dim, group, &mut part);
        } else {
            acc.fill(0);
            for k0 in (0..group).step_by(EXACT_F32_K) {
                let k = EXACT_F32_K.min(group - k0);
                super::linear::matmul_nt_strided(&xf[g0 + k0..], in_dim, &w_ints[g0 + k0..], in_dim, rows, out_dim, k, &mut part);
                acc.iter_mut().zip(&part).for_each(|(a, p)| *a += *p as i64);
            }
            part.iter_mut().zip(&acc).for_each(|(p, a)| *p = *a as i32 as f32);
        }
        out.par_chunks_mut(out_dim).zip(part.par_chunks(out_dim)).for_each(|(o, p)| {
            for (j, (dst, v)) in o.iter_mut().zip(p).enumerate() {
                *dst += scales[j * groups + g] * v;
            }
        });
    }
    out.par_chunks_mut(out_dim).for_each(|o| {
        for (j, dst) in o.iter_mut().enumerate() {
            *dst = *dst * act_scale + bias.map_or(0.0, |b| b[j]);
        }
    });
    out
}

/// The f32 matrix w[o, k] · scales[o, k / group] of a quantized weight.
pub fn dequantize_weight(w: &[f32], scales: &[f32], in_dim: usize, group: usize) -> Vec<f32> {
    let groups = in_dim / group;
    w.iter().enumerate().map(|(i, q)| q * scales[(i / in_dim) * groups + (i % in_dim) / group]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn gemm_path_is_bit_identical_to_the_integer_dot() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (rows, in_dim, out_dim, group, wmax) in [(9, 256, 33, 128, 7), (16, 96, 20, 96, 127), (5, 2304, 7, 2304, 127), (12, 512, 64, 32, 8)] {
            let x: Vec<i8> = (0..rows * in_dim).map(|_| rng.gen_range(-128..=127)).collect();
            let w: Vec<i8> = (0..out_dim * in_dim).map(|_| rng.gen_range(-wmax..=wmax.min(127)) as i8).collect();
            let wf: Vec<f32> = w.iter().map(|v| *v as f32).collect();
            let scales: Vec<f32> = (0..out_dim * in_dim / group).map(|_| rng.gen_range(1e-4..1e-2)).collect();
            let bias: Vec<f32> = (0..out_dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let a = qlinear_i8(&x, rows, in_dim, &w, out_dim, &scales, group, 0.013, Some(&bias));
            let b = qlinear_i8_gemm(&x, rows, in_dim, &wf, out_dim, &scales, group, 0.013, Some(&bias));
            assert_eq!(a, b, "rows {rows} in {in_dim} out {out_dim} group {group}");
        }
    }

    #[test]
    fn quantize_one_matches_round_ties_even_everywhere() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let special = [0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, -129.0, 4194303.5, 4194304.5, 8388607.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e-40];
        let randoms = (0..200_000).map(|i| if i % 2 == 0 { rng.gen_range(-300.0f32..300.0) } else { (rng.gen_range(-600i32..600) as f32) * 0.5 });
        for x in special.into_iter().chain(randoms) {
            for scale in [1.0f32, 0.37, 3.0e-3, 1e-30] {
                let want = (x / scale).round_ties_even().clamp(-128.0, 127.0) as i8;
                assert_eq!(quantize_one(x, scale), want, "x {x} scale {scale}");
                assert_eq!(quantize_value(x, scale), want as f32, "x {x} scale {scale}");
            }
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let q = quantize(&[0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0], &[1.0; 6]);
        assert_eq!(q, vec![0, 2, 2, 0, 127, -128]);
        assert_eq!(dequantize(&q, &[0.5; 6]), vec![0.0, 1.0, 1.0, 0.0, 63.5, -64.0]);
    }
}
