//! Weight quantizers (Quamba2 method §3.6): round-to-nearest ([`quantize_rtn`]) and GPTQ
//! ([`quantize_gptq`], arXiv 2210.17323).
//!
//! Pure numeric functions with no graph knowledge. A weight matrix is `f32`, row-major
//! `[out, in]` (PyTorch `nn.Linear` layout: `y = x·Wᵀ`).
//!
//! # Grids
//!
//! Both quantizers share the same symmetric, zero-point-free grids:
//!
//! | bits | scale per group `g` of one output row | integer value |
//! |---|---|---|
//! | 4 | `s = max|W_g| · 2/15` | `q = clamp(round(w/s), -8, 7)` |
//! | 8 | `s = max|W_g| / 127` | `q = clamp(round(w/s), -128, 127)` |
//!
//! The 4-bit form is the spec's `clamp(round(w/s) + 8, 0, 15) - 8`, stored signed; the positive
//! side clips at `7·s ≈ 0.933·max` exactly as the reference does. The scale has a tiny floor
//! ([`SCALE_FLOOR`]) so an all-zero group gets `q = 0` instead of NaN.
//!
//! **Rounding is round-half-to-even** ([`f32::round_ties_even`], like `torch.round`), and the
//! division `w/s` is done in `f32`, so RTN is bit-reproducible against a float32 reference.
//!
//! Groups run along `in`: group `k` of row `r` covers columns `[k·group, (k+1)·group)`, and
//! `scales` is `[out, in/group]` row-major. [`group_size`] gives the rule the method uses.

pub mod gptq;
pub mod rtn;

pub use gptq::quantize_gptq;
pub use rtn::quantize_rtn;

/// Smallest scale a group may get. Only reached by (near-)all-zero groups; every `|w| ≤ max`
/// then quantizes to 0 (or to a value still within `s/2`).
pub const SCALE_FLOOR: f32 = 1e-8;

/// A quantized weight: integer values (stored exactly in `f32` lanes, in `[-8, 7]` for 4-bit or
/// `[-128, 127]` for 8-bit), row-major `[out, in]`, and scales `[out, in/group]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// 4 or 8.
    pub bits: u8,
    /// Number of consecutive input columns sharing one scale (`in` = per output channel).
    pub group: usize,
    /// Integer values, `[out, in]` row-major.
    pub q: Vec<f32>,
    /// Scales, `[out, in/group]` row-major.
    pub scales: Vec<f32>,
}

impl QuantizedWeight {
    /// The dequantized weight `q·s`, `[out, in]` row-major (`out = q.len() / in_dim`).
    ///
    /// # Panics
    /// If `in_dim` is inconsistent with `q`, `group` or `scales`.
    pub fn dequantize(&self, in_dim: usize) -> Vec<f32> {
        assert!(
            in_dim > 0 && self.q.len().is_multiple_of(in_dim),
            "q has {} values, not a multiple of in={in_dim}",
            self.q.len()
        );
        assert!(
            self.group > 0 && in_dim.is_multiple_of(self.group),
            "group {} does not divide in={in_dim}",
            self.group
        );
        let out_dim = self.q.len() / in_dim;
        let ng = in_dim / self.group;
        assert_eq!(
            self.scales.len(),
            out_dim * ng,
            "scales must be [out, in/group]"
        );
        let mut w = Vec::with_capacity(self.q.len());
        for r in 0..out_dim {
            for c in 0..in_dim {
                w.push(self.q[r * in_dim + c] * self.scales[r * ng + c / self.group]);
            }
        }
        w
    }

    /// Number of output rows given `in_dim`.
    pub fn out_dim(&self, in_dim: usize) -> usize {
        self.q.len() / in_dim
    }
}

/// Group size rule: 4-bit uses groups of 128 along `in` when `in > 128` and `in % 128 == 0`,
/// otherwise one group per output channel (`group = in`); 8-bit is always per output channel.
pub fn group_size(bits: u8, in_dim: usize) -> usize {
    if bits == 4 && in_dim > 128 && in_dim.is_multiple_of(128) {
        128
    } else {
        in_dim
    }
}

/// `(qmin, qmax)` of the signed integer grid.
pub(crate) fn grid(bits: u8) -> (f32, f32) {
    match bits {
        4 => (-8.0, 7.0),
        8 => (-128.0, 127.0),
        _ => panic!("unsupported weight bit width {bits} (4 or 8)"),
    }
}

/// Scale of a group whose largest magnitude is `max_abs` (§3.6), floored at [`SCALE_FLOOR`].
#[inline]
pub(crate) fn group_scale(max_abs: f32, bits: u8) -> f32 {
    let s = match bits {
        4 => max_abs * 2.0 / 15.0,
        8 => max_abs / 127.0,
        _ => panic!("unsupported weight bit width {bits} (4 or 8)"),
    };
    if s.is_finite() {
        s.max(SCALE_FLOOR)
    } else {
        s
    }
}

/// The integer value of `w` on the grid of scale `s`: `clamp(round_ties_even(w/s), qmin, qmax)`.
///
/// Clamping first gives the same integer (rounding is monotonic and the bounds are integers),
/// and within ±2²² adding and subtracting 1.5·2²³ rounds half to even exactly, in two
/// instructions instead of a `rintf` call per weight (a tenth of a compile's time). A zero may
/// come out as +0 where `round_ties_even` gives −0: the same integer.
#[inline]
pub(crate) fn quantize_value(w: f32, s: f32, qmin: f32, qmax: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2²³
    debug_assert!(qmin >= -4_194_304.0 && qmax <= 4_194_304.0);
    let v = (w / s).clamp(qmin, qmax);
    (v + ROUNDER) - ROUNDER
}

/// Checks shapes shared by both quantizers.
pub(crate) fn check_args(
    w_len: usize,
    out_dim: usize,
    in_dim: usize,
    bits: u8,
    group: usize,
) -> Result<(), String> {
    if bits != 4 && bits != 8 {
        return Err(format!("unsupported weight bit width {bits} (4 or 8)"));
    }
    if in_dim == 0 || out_dim == 0 {
        return Err(format!("empty weight [{out_dim}, {in_dim}]"));
    }
    if w_len != out_dim * in_dim {
        return Err(format!(
            "weight has {w_len} values, expected {out_dim}×{in_dim}"
        ));
    }
    if group == 0 || !in_dim.is_multiple_of(group) {
        return Err(format!("group size {group} does not divide in={in_dim}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Deterministic random numbers and reference metrics for the quantizer tests.

    /// SplitMix64 with Box–Muller normals.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in (0, 1).
        pub fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub fn normal(&mut self) -> f64 {
            let (u1, u2) = (self.uniform(), self.uniform());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
        pub fn normals(&mut self, n: usize) -> Vec<f64> {
            (0..n).map(|_| self.normal()).collect()
        }
    }

    /// `X = Z·M` with `Z` `[rows, dim]` standard normal and `M` `[dim, dim]` = I + 0.5·normal/√dim plus a
    /// few heavy "outlier" columns, so the columns of `X` are correlated and unevenly scaled.
    pub fn correlated_x(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f64> {
        let z = rng.normals(rows * dim);
        let mut m = rng.normals(dim * dim);
        for (i, v) in m.iter_mut().enumerate() {
            *v *= 0.5 / (dim as f64).sqrt();
            if i / dim == i % dim {
                *v += 1.0;
            }
        }
        let mut x = vec![0.0; rows * dim];
        for r in 0..rows {
            for k in 0..dim {
                let zk = z[r * dim + k];
                for c in 0..dim {
                    x[r * dim + c] += zk * m[k * dim + c];
                }
            }
        }
        for c in (0..dim).step_by(17) {
            for r in 0..rows {
                x[r * dim + c] *= 4.0;
            }
        }
        x
    }

    /// `XᵀX`, `[dim, dim]`.
    pub fn gram(x: &[f64], rows: usize, dim: usize) -> Vec<f64> {
        use rayon::prelude::*;
        let mut h = vec![0.0; dim * dim];
        h.par_chunks_mut(dim).enumerate().for_each(|(i, hi)| {
            for r in 0..rows {
                let xr = &x[r * dim..(r + 1) * dim];
                let xi = xr[i];
                for (hv, xv) in hi.iter_mut().zip(xr) {
                    *hv += xi * xv;
                }
            }
        });
        h
    }

    /// `‖X·Wᵀ − X·Ŵᵀ‖_F = sqrt(Σ_r d_rᵀ (XᵀX) d_r)` with `d_r = W_r − Ŵ_r`.
    pub fn output_error(w: &[f32], wq: &[f32], xtx: &[f64], out_dim: usize, in_dim: usize) -> f64 {
        use rayon::prelude::*;
        let total: f64 = (0..out_dim)
            .into_par_iter()
            .map(|r| {
                let d: Vec<f64> = (0..in_dim)
                    .map(|c| (w[r * in_dim + c] - wq[r * in_dim + c]) as f64)
                    .collect();
                let mut t = 0.0;
                for i in 0..in_dim {
                    let hi = &xtx[i * in_dim..(i + 1) * in_dim];
                    let s: f64 = hi.iter().zip(&d).map(|(a, b)| a * b).sum();
                    t += d[i] * s;
                }
                t
            })
            .sum();
        total.max(0.0).sqrt()
    }

    pub fn random_weight(rng: &mut Rng, out_dim: usize, in_dim: usize) -> Vec<f32> {
        rng.normals(out_dim * in_dim)
            .into_iter()
            .map(|v| (v * 0.05) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast rounding is `round_ties_even` then clamp, for every tie and near-tie around the
    /// grid and for values far outside it.
    #[test]
    fn quantize_value_rounds_half_to_even_and_clamps() {
        for (qmin, qmax) in [(-8.0f32, 7.0f32), (-128.0, 127.0)] {
            let mut w = -300.0f32;
            while w <= 300.0 {
                for x in [w, f32::from_bits(w.to_bits() + 1), f32::from_bits(w.to_bits().saturating_sub(1))] {
                    let want = x.round_ties_even().clamp(qmin, qmax);
                    assert_eq!(quantize_value(x, 1.0, qmin, qmax), want, "{x}");
                }
                w += 0.25;
            }
            assert_eq!(quantize_value(1e30, 1.0, qmin, qmax), qmax);
            assert_eq!(quantize_value(-1e30, 1.0, qmin, qmax), qmin);
            assert!(quantize_value(f32::NAN, 1.0, qmin, qmax).is_nan());
        }
    }

    #[test]
    fn group_size_rules() {
        assert_eq!(group_size(4, 256), 128);
        assert_eq!(group_size(4, 2048), 128);
        assert_eq!(group_size(4, 128), 128); // in == 128: per channel, which is 128 wide
        assert_eq!(group_size(4, 64), 64);
        assert_eq!(group_size(4, 200), 200); // not a multiple of 128: per channel
        assert_eq!(group_size(4, 384), 128);
        assert_eq!(group_size(8, 256), 256);
        assert_eq!(group_size(8, 4096), 4096);
        assert_eq!(group_size(8, 64), 64);
    }

    #[test]
    fn scales_and_values() {
        assert_eq!(group_scale(7.5, 4), 1.0);
        assert_eq!(group_scale(127.0, 8), 1.0);
        assert_eq!(group_scale(0.0, 4), SCALE_FLOOR);
        // Round half to even.
        assert_eq!(quantize_value(2.5, 1.0, -8.0, 7.0), 2.0);
        assert_eq!(quantize_value(3.5, 1.0, -8.0, 7.0), 4.0);
        assert_eq!(quantize_value(-0.5, 1.0, -8.0, 7.0), 0.0);
        assert_eq!(quantize_value(7.5, 1.0, -8.0, 7.0), 7.0);
        assert_eq!(quantize_value(-9.0, 1.0, -8.0, 7.0), -8.0);
        assert_eq!(quantize_value(200.0, 1.0, -128.0, 127.0), 127.0);
        assert_eq!(quantize_value(0.0, SCALE_FLOOR, -8.0, 7.0), 0.0);
    }

    #[test]
    fn dequantize_layout() {
        let qw = QuantizedWeight {
            bits: 4,
            group: 2,
            q: vec![1.0, -2.0, 3.0, 4.0, 0.0, 7.0, -8.0, 1.0],
            scales: vec![0.5, 2.0, 1.0, 0.25],
        };
        assert_eq!(
            qw.dequantize(4),
            vec![0.5, -1.0, 6.0, 8.0, 0.0, 7.0, -2.0, 0.25]
        );
        assert_eq!(qw.out_dim(4), 2);
    }
}
