//! The orthonormal Walsh–Hadamard transform used for rotations, shared by the compiler (folding
//! into weights) and the executors (the online transform before out_proj).
//!
//! For a width n = 2ᵏ·m with m odd, the transform is block-diagonal: each of the m blocks of 2ᵏ
//! consecutive values gets H_{2ᵏ}/√2ᵏ. It is orthonormal and symmetric, so it is its own inverse,
//! which is what lets a rotation folded into one weight be undone by the next. (Mamba widths such
//! as 768 = 3·256 therefore rotate within blocks of 256; a Paley H₁₂ factor would mix further.)

/// The size of the Walsh–Hadamard blocks for a row of `width` values.
pub fn block_size(width: usize) -> usize {
    if width == 0 {
        1
    } else {
        1 << width.trailing_zeros()
    }
}

/// Transforms one row in place.
pub fn hadamard_row(row: &mut [f32]) {
    let block = block_size(row.len());
    let norm = 1.0 / (block as f32).sqrt();
    for chunk in row.chunks_exact_mut(block) {
        fwht(chunk);
        chunk.iter_mut().for_each(|v| *v *= norm);
    }
}

/// Transforms each `width`-long row of `data` in place.
pub fn hadamard_rows(data: &mut [f32], width: usize) {
    use rayon::prelude::*;
    data.par_chunks_mut(width * 16).for_each(|rows| rows.chunks_exact_mut(width).for_each(hadamard_row));
}

/// Transforms each column of the row-major `[rows, cols]` matrix `data` in place (T·W where
/// [`hadamard_rows`] computes W·T), with the same butterflies in the same order as transforming
/// the transposed matrix's rows, so the values are bit for bit those. Strips of columns are
/// gathered so that a strip's stages run in cache, in parallel.
pub fn hadamard_columns(data: &mut [f32], rows: usize, cols: usize) {
    use rayon::prelude::*;
    const STRIP: usize = 64;
    assert_eq!(data.len(), rows * cols, "hadamard_columns: {} values for {rows} × {cols}", data.len());
    if rows == 0 || cols == 0 {
        return;
    }
    let block = block_size(rows);
    let norm = 1.0 / (block as f32).sqrt();
    let source = &*data;
    let strips: Vec<Vec<f32>> = (0..cols.div_ceil(STRIP))
        .into_par_iter()
        .map(|s| {
            let (c0, w) = (s * STRIP, STRIP.min(cols - s * STRIP));
            let mut strip = vec![0.0f32; rows * w];
            for (r, dst) in strip.chunks_exact_mut(w).enumerate() {
                dst.copy_from_slice(&source[r * cols + c0..r * cols + c0 + w]);
            }
            for blk in strip.chunks_exact_mut(block * w) {
                fwht_strided(blk, w);
                blk.iter_mut().for_each(|v| *v *= norm);
            }
            strip
        })
        .collect();
    for (s, strip) in strips.iter().enumerate() {
        let (c0, w) = (s * STRIP, STRIP.min(cols - s * STRIP));
        for (r, src) in strip.chunks_exact(w).enumerate() {
            data[r * cols + c0..r * cols + c0 + w].copy_from_slice(src);
        }
    }
}

/// [`fwht`] of every column of a row-major `[n, w]` block at once: row i pairs with row i + h.
fn fwht_strided(x: &mut [f32], w: usize) {
    let n = x.len() / w;
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h * w) {
            let (lo, hi) = pair.split_at_mut(h * w);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}

/// Unnormalised fast Walsh–Hadamard transform of a power-of-two-long slice.
///
/// Every butterfly is (a, b) ↦ (a + b, a − b), stage by stage (h = 1, 2, 4, ...); the two halves
/// of each block are separate slices, so the compiler vectorises the stages with h ≥ 4.
fn fwht(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    if n >= 4 {
        // The first two stages (h = 1, 2) together per group of four: the same butterflies in
        // the same order, without the short inner loops that do not vectorise.
        for q in x.chunks_exact_mut(4) {
            let (a, b, c, d) = (q[0] + q[1], q[0] - q[1], q[2] + q[3], q[2] - q[3]);
            q[0] = a + c;
            q[1] = b + d;
            q[2] = a - c;
            q[3] = b - d;
        }
        h = 4;
    }
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns transformed in place are bit for bit the rows of the transposed matrix
    /// transformed, at strip-aligned and ragged widths and at non-power-of-two heights.
    #[test]
    fn columns_match_transposed_rows_bit_for_bit() {
        for (rows, cols) in [(8, 3), (24, 64), (40, 130), (128, 200), (1, 5)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.0137).collect();
            let mut t: Vec<f32> = (0..cols * rows).map(|i| w[(i % rows) * cols + i / rows]).collect();
            hadamard_rows(&mut t, rows);
            let mut got = w.clone();
            hadamard_columns(&mut got, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(got[r * cols + c].to_bits(), t[c * rows + r].to_bits(), "{rows}×{cols} at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn is_orthonormal_and_self_inverse() {
        for width in [1, 2, 8, 12, 24, 128, 768] {
            let x: Vec<f32> = (0..width).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
            let mut y = x.clone();
            hadamard_row(&mut y);
            let n0: f32 = x.iter().map(|v| v * v).sum();
            let n1: f32 = y.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() <= 1e-4 * n0.max(1.0), "width {width}: norm {n0} → {n1}");
            hadamard_row(&mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-5, "width {width}");
            }
        }
    }

    #[test]
    fn matches_the_matrix_definition() {
        // H₄/2 applied to e₁ is the second column of H₄: [1, −1, 1, −1]/2.
        let mut e = vec![0.0, 1.0, 0.0, 0.0];
        hadamard_row(&mut e);
        assert_eq!(e, vec![0.5, -0.5, 0.5, -0.5]);
        assert_eq!(block_size(768), 256);
        assert_eq!(block_size(12), 4);
    }
}
