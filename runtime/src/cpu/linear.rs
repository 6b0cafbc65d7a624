//! Dense f32 matrix products for `linear` and `lm_head`: `out[M, O] = x[M, I] · Wᵀ (+ bias)` with
//! `W` stored `[O, I]`. Many rows go to the `gemm` crate (blocked, SIMD, multithreaded); a few rows
//! (decode) take a GEMV that splits the output rows across threads, since one token's product is
//! bound by reading the weights once.

use rayon::prelude::*;

/// Up to this many rows the GEMV path is used.
const GEMV_MAX_ROWS: usize = 4;
/// Output rows per GEMV task: enough work to amortise scheduling, small enough to balance.
const GEMV_ROWS_PER_TASK: usize = 64;

/// `x` is `[rows, in_dim]`, `weight` `[out_dim, in_dim]`; returns `[rows, out_dim]`.
pub fn linear(x: &[f32], rows: usize, in_dim: usize, weight: &[f32], out_dim: usize, bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert_eq!(x.len(), rows * in_dim);
    debug_assert_eq!(weight.len(), out_dim * in_dim);
    let mut out = vec![0.0f32; rows * out_dim];
    if rows <= GEMV_MAX_ROWS {
        gemv(x, rows, in_dim, weight, out_dim, &mut out);
    } else {
        gemm_rows(x, rows, in_dim, weight, out_dim, &mut out);
    }
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(out_dim) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
    out
}

fn gemv(x: &[f32], rows: usize, in_dim: usize, weight: &[f32], out_dim: usize, out: &mut [f32]) {
    // Work on the transposed result [out_dim, rows] so each task owns a contiguous block.
    let mut t = vec![0.0f32; out_dim * rows];
    t.par_chunks_mut(GEMV_ROWS_PER_TASK * rows).enumerate().for_each(|(task, block)| {
        let first = task * GEMV_ROWS_PER_TASK;
        for (i, dst) in block.chunks_exact_mut(rows).enumerate() {
            let w = &weight[(first + i) * in_dim..(first + i + 1) * in_dim];
            for (r, d) in dst.iter_mut().enumerate() {
                *d = dot(w, &x[r * in_dim..(r + 1) * in_dim]);
            }
        }
    });
    for o in 0..out_dim {
        for r in 0..rows {
            out[r * out_dim + o] = t[o * rows + r];
        }
    }
}

/// Dot product with eight independent accumulators so the compiler can vectorise it (inlined
/// everywhere, so that callers compiled for wider vectors vectorise it for those).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

fn gemm_rows(x: &[f32], rows: usize, in_dim: usize, weight: &[f32], out_dim: usize, out: &mut [f32]) {
    matmul_nt_strided(x, in_dim, weight, in_dim, rows, out_dim, in_dim, out);
}

/// `out[rows, out_dim] = x[:, ..k] · w[:, ..k]ᵀ`, where row r of x starts at `x[r · x_stride]` and
/// row o of w at `w[o · w_stride]` (so a column block of a wider matrix is passed as a sub-slice).
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt_strided(x: &[f32], x_stride: usize, w: &[f32], w_stride: usize, rows: usize, out_dim: usize, k: usize, out: &mut [f32]) {
    assert!(rows == 0 || x.len() >= (rows - 1) * x_stride + k, "x is too short for its shape");
    assert!(out_dim == 0 || w.len() >= (out_dim - 1) * w_stride + k, "w is too short for its shape");
    assert_eq!(out.len(), rows * out_dim, "out has the wrong length");
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above guarantee every element the strides address is inside its
    // buffer: dst is `out` [rows, out_dim] row-major (row stride out_dim, column stride 1); lhs is
    // x [rows, k] with row stride `x_stride` (the last row ends at (rows−1)·x_stride + k ≤ x.len());
    // rhs is Wᵀ [k, out_dim] read from `w` (row stride 1, column stride `w_stride`, last column
    // ends at (out_dim−1)·w_stride + k ≤ w.len()). `out` is borrowed mutably and cannot alias the
    // shared borrows of `x` and `w`. `read_dst` is false, so `out`'s old contents are not read.
    unsafe {
        gemm::gemm(
            rows,
            out_dim,
            k,
            out.as_mut_ptr(),
            1,
            out_dim as isize,
            false,
            x.as_ptr(),
            1,
            x_stride as isize,
            w.as_ptr(),
            w_stride as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A matrix inside a slice: element (i, j) at `data[i · row + j · col]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub row: usize,
    pub col: usize,
}

impl Strided<'_> {
    /// Whether every element of an `rows × cols` matrix lies inside `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row + (cols - 1) * self.col < self.data.len()
    }
}

/// `dst[m, n] = keep · dst + lhs[m, k] · rhs[k, n]` on the calling thread (`keep: None` ignores
/// dst's old contents), dst row-major with row stride `dst_row`. For products inside a task
/// that is already one of many parallel ones (the SSD's per-head chunks).
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial(m: usize, n: usize, k: usize, dst: &mut [f32], dst_row: usize, keep: Option<f32>, lhs: Strided, rhs: Strided) {
    assert!(m == 0 || n == 0 || (m - 1) * dst_row + n <= dst.len(), "dst is too short for its shape");
    assert!(lhs.covers(m, k) && rhs.covers(k, n), "an operand is too short for its shape");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above put every element the strides address inside its slice: dst
    // (i, j) at i·dst_row + j < dst.len(), lhs (i, l) at i·lhs.row + l·lhs.col, rhs (l, j) at
    // l·rhs.row + j·rhs.col. `dst` is borrowed mutably and cannot alias the shared borrows of the
    // operands. With `keep` None, read_dst is false and dst's old contents are not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row as isize,
            keep.is_some(),
            lhs.data.as_ptr(),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr(),
            rhs.col as isize,
            rhs.row as isize,
            keep.unwrap_or(0.0),
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
