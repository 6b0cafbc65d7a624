//! Round-to-nearest (absmax) weight quantization on the §3.6 grids.

use rayon::prelude::*;

use super::{check_args, grid, group_scale, quantize_value, QuantizedWeight};

/// Quantizes `w` (`[out, in]` row-major) by round-to-nearest: every group of `group` consecutive
/// input columns of one output row gets scale `s = max|W_g|·2/15` (4-bit) or `max|W_g|/127`
/// (8-bit), and `q = clamp(round_ties_even(w/s), qmin, qmax)`. See the [module docs](super).
///
/// Parallel over output rows.
///
/// # Panics
/// If `bits` is not 4 or 8, `w.len() != out·in`, or `group` does not divide `in`.
pub fn quantize_rtn(
    w: &[f32],
    out_dim: usize,
    in_dim: usize,
    bits: u8,
    group: usize,
) -> QuantizedWeight {
    if let Err(e) = check_args(w.len(), out_dim, in_dim, bits, group) {
        panic!("quantize_rtn: {e}");
    }
    let (qmin, qmax) = grid(bits);
    let ng = in_dim / group;
    let mut q = vec![0.0f32; out_dim * in_dim];
    let mut scales = vec![0.0f32; out_dim * ng];
    q.par_chunks_mut(in_dim)
        .zip(scales.par_chunks_mut(ng))
        .zip(w.par_chunks(in_dim))
        .with_min_len(8)
        .for_each(|((qrow, srow), wrow)| {
            for ((qg, s_out), wg) in qrow
                .chunks_mut(group)
                .zip(srow.iter_mut())
                .zip(wrow.chunks(group))
            {
                let max_abs = wg.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let s = group_scale(max_abs, bits);
                *s_out = s;
                for (qv, &wv) in qg.iter_mut().zip(wg) {
                    *qv = quantize_value(wv, s, qmin, qmax);
                }
            }
        });
    QuantizedWeight {
        bits,
        group,
        q,
        scales,
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::super::testutil::{random_weight, Rng};
    use super::super::{group_size, SCALE_FLOOR};
    use super::*;

    #[test]
    fn round_trips_exact_grid_values_4bit() {
        // A group pinned to scale s by one element at -7.5·s (s = 7.5·s·2/15 exactly for power-of-two
        // s); every other element is on the grid, -7..=7 times s, and must come back exactly. The
        // pinning element is a tie and rounds to the even -8 (the bottom of the signed grid).
        let (out_dim, in_dim, group) = (3, 32, 16);
        let mut w = Vec::new();
        let base = [0.25f32, 1.0, 0.5, 2.0, 0.125, 4.0];
        for r in 0..out_dim {
            for g in 0..in_dim / group {
                let s = base[r * 2 + g];
                for k in 0..group {
                    let v = if k == 0 { -7.5 } else { k as f32 - 8.0 };
                    w.push(v * s);
                }
            }
        }
        let qw = quantize_rtn(&w, out_dim, in_dim, 4, group);
        assert_eq!(qw.scales, base.to_vec());
        let dq = qw.dequantize(in_dim);
        for (i, (&a, &b)) in w.iter().zip(&dq).enumerate() {
            if i % group == 0 {
                assert_eq!(qw.q[i], -8.0);
            } else {
                assert_eq!(qw.q[i], (i % group) as f32 - 8.0);
                assert_eq!(a, b, "element {i} did not round-trip");
            }
        }
    }

    #[test]
    fn round_trips_exact_grid_values_8bit() {
        let (out_dim, in_dim) = (2, 255);
        let scales = [0.5f32, 0.0078125];
        let mut w = Vec::new();
        for s in scales {
            for k in 0..in_dim {
                w.push((k as f32 - 127.0) * s);
            }
        }
        let qw = quantize_rtn(&w, out_dim, in_dim, 8, in_dim);
        assert_eq!(qw.scales, scales.to_vec());
        assert_eq!(qw.dequantize(in_dim), w);
        assert!(qw
            .q
            .iter()
            .all(|&v| v.fract() == 0.0 && (-127.0..=127.0).contains(&v)));
    }

    #[test]
    fn range_and_error_bound() {
        let mut rng = Rng::new(7);
        for &(bits, in_dim) in &[(4u8, 256usize), (4, 96), (8, 256), (8, 100)] {
            let out_dim = 33;
            let mut w = random_weight(&mut rng, out_dim, in_dim);
            w[5] = 3.75; // an outlier: 4-bit s = 0.5, 7.5 → 8 → clipped to 7
            w[in_dim + 1] = -1.875; // 4-bit s = 0.25 exactly, -7.5 is a tie → -8
            let group = group_size(bits, in_dim);
            let qw = quantize_rtn(&w, out_dim, in_dim, bits, group);
            assert_eq!(qw.group, group);
            assert_eq!(qw.scales.len(), out_dim * (in_dim / group));
            let (lo, hi) = if bits == 4 {
                (-8.0, 7.0)
            } else {
                (-128.0, 127.0)
            };
            assert!(qw.q.iter().all(|&v| v.fract() == 0.0 && v >= lo && v <= hi));
            let dq = qw.dequantize(in_dim);
            let ng = in_dim / group;
            for r in 0..out_dim {
                for c in 0..in_dim {
                    let s = qw.scales[r * ng + c / group];
                    let e = (w[r * in_dim + c] - dq[r * in_dim + c]).abs();
                    assert!(
                        e <= s * 0.5 * (1.0 + 1e-5),
                        "bits {bits}: |err| {e} > s/2 = {}",
                        s / 2.0
                    );
                }
            }
            // The row/group maximum maps to the top of the grid (7 for 4-bit after clipping 7.5, 127 for 8-bit).
            let top = if bits == 4 { 7.0 } else { 127.0 };
            assert_eq!(qw.q[5], top);
            // -max/s = -7.5 is a tie and rounds to the even -8, which the 4-bit grid keeps.
            assert_eq!(qw.q[in_dim + 1], if bits == 4 { -8.0 } else { -127.0 });
        }
    }

    #[test]
    fn zero_groups_and_columns() {
        let (out_dim, in_dim) = (2, 256);
        let mut w = vec![0.0f32; out_dim * in_dim];
        for c in 128..256 {
            w[c] = (c as f32 - 200.0) * 0.01;
        }
        let qw = quantize_rtn(&w, out_dim, in_dim, 4, 128);
        assert_eq!(qw.scales[0], SCALE_FLOOR);
        assert_eq!(qw.scales[2], SCALE_FLOOR);
        assert_eq!(qw.scales[3], SCALE_FLOOR);
        assert!(qw.q.iter().all(|v| v.is_finite()));
        assert!(qw.q[..128].iter().all(|&v| v == 0.0));
        assert!(qw.q[256..].iter().all(|&v| v == 0.0));
        let dq = qw.dequantize(in_dim);
        assert!(dq[..128].iter().chain(&dq[256..]).all(|&v| v == 0.0));
    }
}
