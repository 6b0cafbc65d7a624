//! Prefill products of int8 activations with int8 or int4 weights on 512-bit AVX-512 VNNI.
//!
//! Why this is not a cranelift kernel: cranelift's x86-64 backend emits 128-bit vectors only, so
//! its `vpdpbusd` does 16 multiply-adds per instruction, the same as the f32 GEMM of our FP32
//! path does with 512-bit FMAs. A prefill is bound by those instructions, so on an AVX-512 host
//! the generated kernels cannot make a quantized prefill faster than the FP32 one (measured: the
//! products took as long in W4A8 as in FP32, `bench/RESULTS.md`). Here the same dot-product
//! instruction works on 512 bits: 64 multiply-adds each. Hosts without AVX-512 VNNI (and aarch64,
//! whose vectors are 128 bits wide anyway) keep the generated kernels; decode keeps them too.
//!
//! Layout, built once at load: output features in blocks of 16 (the last one zero-padded), and
//! per block the weights as `[k / 4][16 features][4 inputs]` bytes (int8), or for int4 as
//! `[k / 8][16 features][4 inputs]` bytes whose low nibbles hold inputs `8j..8j+4` and high
//! nibbles `8j+4..8j+8`, each offset by 8. One `vpdpbusd` then multiplies four inputs of one
//! activation row (broadcast to every lane) with those four inputs of 16 features.
//!
//! Exactness: activations go in offset to unsigned (`x + 128`, the instruction's operand order)
//! and `128 · Σ_{k∈g} w[o, k]` is subtracted per group, so each group's sum is the exact integer
//! the reference computes; the float epilogue repeats `runtime::cpu::quant::qlinear_i8`'s
//! operations in its order (groups summed from −0.0, each `scale · sum`, then `· act_scale + bias`,
//! never fused), so the result is bit-identical to it (tested below).

use rayon::prelude::*;

/// Output features per block: one 512-bit vector of i32 / f32.
const LANES: usize = 16;
/// Activation rows per register tile.
const TILE_ROWS: usize = 6;
/// Rows per parallel task: a task streams every weight block once past its rows.
const ROWS_PER_TASK: usize = 48;

/// One layer packed for [`WideQGemm::forward`].
pub struct WideQGemm {
    in_dim: usize,
    out_dim: usize,
    group: usize,
    weight_bits: u8,
    /// `[blocks, bytes per block]`, see the module comment.
    weights: Vec<u8>,
    /// `[blocks, groups, 16]`: `128 · Σ_{k∈g} w[o, k]`.
    corrections: Vec<i32>,
    /// `[blocks, groups, 16]`.
    scales: Vec<f32>,
    /// `[blocks · 16]`.
    bias: Vec<f32>,
    act_scale: f32,
}

impl WideQGemm {
    /// Whether layers should use these kernels: the CPU runs them and `QUAMBA_CPU_AVX512_GEMM=0`
    /// (to measure without them) is not set. Asked when a model loads.
    pub fn host_supports() -> bool {
        Self::cpu_runs_it() && std::env::var("QUAMBA_CPU_AVX512_GEMM").map_or(true, |v| v != "0")
    }

    /// Whether this CPU has AVX-512 F, BW and VNNI (cached by the standard library; cheap).
    fn cpu_runs_it() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Packs `w` (`[out_dim, in_dim]` integers; within −8..=7 when `weight_bits` is 4) with its
    /// `scales` (`[out_dim, in_dim / group]`). None when the shape has no kernel here: `group`
    /// must be a multiple of 4 (of 32 for int4, the packing of the other kernels), and
    /// [`WideQGemm::host_supports`] must hold.
    #[allow(clippy::too_many_arguments)]
    pub fn new(w: &[i8], out_dim: usize, in_dim: usize, group: usize, weight_bits: u8, scales: &[f32], bias: Option<&[f32]>, act_scale: f32) -> Option<WideQGemm> {
        if !Self::host_supports() {
            return None;
        }
        let shape_ok = out_dim > 0 && in_dim > 0 && group > 0 && in_dim.is_multiple_of(group) && in_dim <= 1 << 16;
        let bits_ok = match weight_bits {
            8 => group.is_multiple_of(4),
            4 => group.is_multiple_of(32) && w.iter().all(|v| (-8..=7).contains(v)),
            _ => false,
        };
        if !shape_ok || !bits_ok || w.len() != out_dim * in_dim || scales.len() != out_dim * (in_dim / group) || bias.is_some_and(|b| b.len() != out_dim) {
            return None;
        }
        let blocks = out_dim.div_ceil(LANES);
        let groups = in_dim / group;
        let at = |o: usize, k: usize| if o < out_dim { w[o * in_dim + k] } else { 0 };
        let mut weights = Vec::with_capacity(blocks * LANES * in_dim);
        let mut corrections = Vec::with_capacity(blocks * groups * LANES);
        let mut tiled_scales = Vec::with_capacity(blocks * groups * LANES);
        for b in 0..blocks {
            let o0 = b * LANES;
            match weight_bits {
                8 => {
                    for kq in 0..in_dim / 4 {
                        for o in o0..o0 + LANES {
                            weights.extend((0..4).map(|j| at(o, 4 * kq + j) as u8));
                        }
                    }
                }
                _ => {
                    for ko in 0..in_dim / 8 {
                        for o in o0..o0 + LANES {
                            weights.extend((0..4).map(|j| ((at(o, 8 * ko + j) + 8) as u8) | ((at(o, 8 * ko + 4 + j) + 8) as u8) << 4));
                        }
                    }
                }
            }
            for g in 0..groups {
                for o in o0..o0 + LANES {
                    corrections.push(128 * (g * group..(g + 1) * group).map(|k| at(o, k) as i32).sum::<i32>());
                    tiled_scales.push(if o < out_dim { scales[o * groups + g] } else { 0.0 });
                }
            }
        }
        let mut padded_bias = vec![0.0f32; blocks * LANES];
        if let Some(b) = bias {
            padded_bias[..out_dim].copy_from_slice(b);
        }
        Some(WideQGemm { in_dim, out_dim, group, weight_bits, weights, corrections, scales: tiled_scales, bias: padded_bias, act_scale })
    }

    /// `x` is `[rows, in_dim]` int8; writes `out` `[rows, out_dim]` (a layer exists only on a
    /// CPU that runs it: [`WideQGemm::new`] checks).
    pub fn forward(&self, x: &[i8], rows: usize, out: &mut [f32]) {
        assert!(x.len() == rows * self.in_dim && out.len() == rows * self.out_dim, "qgemm buffers do not match the layer");
        assert!(Self::cpu_runs_it(), "AVX-512 VNNI product called on a CPU without it");
        let unsigned: Vec<u8> = x.iter().map(|v| *v as u8 ^ 0x80).collect();
        out.par_chunks_mut(ROWS_PER_TASK * self.out_dim).zip(unsigned.par_chunks(ROWS_PER_TASK * self.in_dim)).for_each(|(dst, xs)| {
            let task_rows = xs.len() / self.in_dim;
            for block in 0..self.out_dim.div_ceil(LANES) {
                let mut m = 0;
                while m < task_rows {
                    let tile = TILE_ROWS.min(task_rows - m);
                    self.tile(&xs[m * self.in_dim..(m + tile) * self.in_dim], tile, block, &mut dst[m * self.out_dim..]);
                    m += tile;
                }
            }
        });
    }

    /// Rows `x` (`tile` ≤ 6 rows of unsigned activations) × output block `block`, into `out`
    /// (row stride `out_dim`, starting at the tile's first row).
    fn tile(&self, x: &[u8], tile: usize, block: usize, out: &mut [f32]) {
        let groups = self.in_dim / self.group;
        let block_bytes = self.in_dim * LANES / if self.weight_bits == 8 { 1 } else { 2 };
        // These checks are what the SAFETY argument below rests on.
        assert!((1..=TILE_ROWS).contains(&tile) && x.len() == tile * self.in_dim);
        assert!(self.weights.len() >= (block + 1) * block_bytes);
        assert!(self.corrections.len() >= (block + 1) * groups * LANES && self.scales.len() == self.corrections.len());
        assert!(self.bias.len() >= (block + 1) * LANES);
        let width = LANES.min(self.out_dim - block * LANES);
        assert!(out.len() >= (tile - 1) * self.out_dim + block * LANES + width);
        #[cfg(target_arch = "x86_64")]
        {
            let args = TileArgs {
                x: x.as_ptr(),
                in_dim: self.in_dim,
                weights: self.weights[block * block_bytes..].as_ptr(),
                corrections: self.corrections[block * groups * LANES..].as_ptr(),
                scales: self.scales[block * groups * LANES..].as_ptr(),
                bias: self.bias[block * LANES..].as_ptr(),
                act_scale: self.act_scale,
                groups,
                group: self.group,
                out: out[block * LANES..].as_mut_ptr(),
                out_stride: self.out_dim,
                width,
            };
            // SAFETY: `forward` asserted that the CPU has AVX-512 F, BW and VNNI, all that the
            // `target_feature` function needs. It reads x[r·in_dim + k] (r < rows, k < in_dim),
            // block_bytes bytes of weights, groups·16 corrections and scales, 16 biases, and
            // writes out[r·out_stride + j] for j < width: the asserts above bound each by its
            // slice. `out` is borrowed mutably for the call; nothing keeps a pointer after it.
            unsafe {
                match (self.weight_bits == 4, tile) {
                    (false, 1) => tile_avx512::<false, 1>(&args),
                    (false, 2) => tile_avx512::<false, 2>(&args),
                    (false, 3) => tile_avx512::<false, 3>(&args),
                    (false, 4) => tile_avx512::<false, 4>(&args),
                    (false, 5) => tile_avx512::<false, 5>(&args),
                    (false, _) => tile_avx512::<false, TILE_ROWS>(&args),
                    (true, 1) => tile_avx512::<true, 1>(&args),
                    (true, 2) => tile_avx512::<true, 2>(&args),
                    (true, 3) => tile_avx512::<true, 3>(&args),
                    (true, 4) => tile_avx512::<true, 4>(&args),
                    (true, 5) => tile_avx512::<true, 5>(&args),
                    (true, _) => tile_avx512::<true, TILE_ROWS>(&args),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (width, out);
            unreachable!("host_supports() is false off x86-64")
        }
    }
}

/// The pointers and sizes of one register tile.
#[cfg(target_arch = "x86_64")]
struct TileArgs {
    x: *const u8,
    in_dim: usize,
    weights: *const u8,
    corrections: *const i32,
    scales: *const f32,
    bias: *const f32,
    act_scale: f32,
    groups: usize,
    group: usize,
    out: *mut f32,
    out_stride: usize,
    width: usize,
}

/// One tile: ROWS (≤ 6) rows × 16 output features, every group, then the epilogue. ROWS is a
/// constant so that the accumulators live in registers.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and every pointer of `a` must cover what the
/// layout needs for ROWS rows (see [`WideQGemm::tile`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_avx512<const INT4: bool, const ROWS: usize>(a: &TileArgs) {
    use std::arch::x86_64::*;
    let mut fsum = [_mm512_set1_ps(-0.0); ROWS];
    let low_nibbles = _mm512_set1_epi8(0x0F);
    let eight = _mm512_set1_epi8(8);
    // SAFETY (whole body): the caller guarantees the pointers; each offset below stays within
    // x[rows · in_dim], the block's weights, groups · 16 tables and `width` outputs per row.
    unsafe {
        for g in 0..a.groups {
            let mut acc = [_mm512_setzero_si512(); ROWS];
            let k_begin = g * a.group;
            if INT4 {
                for k in (k_begin..k_begin + a.group).step_by(8) {
                    let packed = _mm512_loadu_si512(a.weights.add(k / 8 * 64) as *const _);
                    let lo = _mm512_sub_epi8(_mm512_and_si512(packed, low_nibbles), eight);
                    let hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(packed), low_nibbles), eight);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let xr = a.x.add(r * a.in_dim + k);
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32((xr as *const i32).read_unaligned()), lo);
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32((xr.add(4) as *const i32).read_unaligned()), hi);
                    }
                }
            } else {
                for k in (k_begin..k_begin + a.group).step_by(4) {
                    let w = _mm512_loadu_si512(a.weights.add(k * LANES) as *const _);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let xr = a.x.add(r * a.in_dim + k);
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32((xr as *const i32).read_unaligned()), w);
                    }
                }
            }
            let correction = _mm512_loadu_si512(a.corrections.add(g * LANES) as *const _);
            let scale = _mm512_loadu_ps(a.scales.add(g * LANES));
            for r in 0..ROWS {
                let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r], correction));
                fsum[r] = _mm512_add_ps(fsum[r], _mm512_mul_ps(scale, exact));
            }
        }
        let act_scale = _mm512_set1_ps(a.act_scale);
        let bias = _mm512_loadu_ps(a.bias);
        let mask: __mmask16 = if a.width >= LANES { 0xFFFF } else { (1u16 << a.width) - 1 };
        for (r, sum) in fsum.iter().enumerate() {
            let y = _mm512_add_ps(_mm512_mul_ps(*sum, act_scale), bias);
            _mm512_mask_storeu_ps(a.out.add(r * a.out_stride), mask, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::qlinear_i8;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    /// Bit-identical to the integer reference at odd and even shapes, both weight widths, with
    /// and without bias, including rows and features that leave partial tiles and blocks.
    #[test]
    fn matches_the_integer_reference_bit_for_bit() {
        if !WideQGemm::host_supports() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let mut seed = 7u64;
        for &(rows, out_dim, in_dim, group, bits) in &[
            (1, 16, 32, 32, 8u8),
            (7, 17, 64, 4, 8),
            (13, 40, 160, 32, 8),
            (64, 100, 256, 128, 4),
            (50, 33, 96, 32, 4),
            (6, 48, 768, 768, 4),
            (49, 8, 128, 64, 8),
        ] {
            for with_bias in [false, true] {
                let lo = if bits == 4 { -8 } else { -128 };
                let span = if bits == 4 { 16 } else { 256 };
                let w: Vec<i8> = (0..out_dim * in_dim).map(|_| (lo + (lcg(&mut seed) % span) as i32) as i8).collect();
                let x: Vec<i8> = (0..rows * in_dim).map(|_| (lcg(&mut seed) % 256) as u8 as i8).collect();
                let scales: Vec<f32> = (0..out_dim * (in_dim / group)).map(|_| (lcg(&mut seed) % 1000) as f32 * 1e-5 + 1e-6).collect();
                let bias: Vec<f32> = (0..out_dim).map(|_| (lcg(&mut seed) % 2000) as f32 * 1e-3 - 1.0).collect();
                let bias = with_bias.then_some(bias.as_slice());
                let expected = qlinear_i8(&x, rows, in_dim, &w, out_dim, &scales, group, 0.0173, bias);
                let layer = WideQGemm::new(&w, out_dim, in_dim, group, bits, &scales, bias, 0.0173).expect("supported shape");
                let mut got = vec![f32::NAN; rows * out_dim];
                layer.forward(&x, rows, &mut got);
                let same = expected.iter().zip(&got).all(|(e, g)| e.to_bits() == g.to_bits());
                assert!(same, "rows {rows} out {out_dim} in {in_dim} group {group} bits {bits} bias {with_bias}: first difference at {:?}", expected.iter().zip(&got).position(|(e, g)| e.to_bits() != g.to_bits()));
            }
        }
    }

    #[test]
    fn shapes_without_a_kernel_are_refused() {
        let w = vec![0i8; 4 * 64];
        assert!(WideQGemm::new(&w, 4, 64, 6, 8, &[1.0; 4 * 64 / 6 + 1], None, 1.0).is_none(), "group must divide in_dim");
        assert!(WideQGemm::new(&w, 4, 64, 16, 4, &[1.0; 16], None, 1.0).is_none(), "int4 groups are multiples of 32");
        assert!(WideQGemm::new(&[9i8; 64], 1, 64, 32, 4, &[1.0; 2], None, 1.0).is_none(), "int4 values beyond −8..=7");
    }
}
