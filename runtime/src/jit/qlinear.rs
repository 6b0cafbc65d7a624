//! A quantized linear layer on its generated kernel: weights packed once, rows or output columns
//! split across the rayon pool.

use rayon::prelude::*;

use kernels::cpu::{pack_qlinear_weights, KernelError, PackedQLinear, QLinearCode, QLinearSpec};

use super::HostJit;
use crate::RuntimeError;

/// The generated kernel's ABI; see `kernels::cpu::qlinear`.
type QLinearFn = unsafe extern "C" fn(*const u8, *const u8, *const i32, *const f32, *const f32, *mut f32, i64, i64, i64, i64, f32);

/// Below this many rows (decode), the output features of each row are split across threads;
/// from it on (prefill), tiles of rows are.
const ROW_SPLIT_MIN_ROWS: usize = 8;
/// Rows per prefill task: their activations stay in L1/L2 while every weight row streams past.
const ROWS_PER_TASK: usize = 16;
/// Fewest output features per decode task.
const MIN_COLUMNS_PER_TASK: usize = 32;
/// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more
/// than it saves (small mamba1 projections, x_proj / dt_proj, at decode).
const MIN_PARALLEL_MACS: usize = 1 << 18;

/// `out = act_scale · (x · Wᵀ per scaled group) + bias` on int8 activations.
pub struct JitQLinear {
    code: QLinearCode,
    packed: PackedQLinear,
    /// `[out_dim, groups]`.
    scales: Vec<f32>,
    /// `[out_dim]` (zeros when the layer has none: the reference adds 0.0 too).
    bias: Vec<f32>,
    act_scale: f32,
    /// Keeps the executable memory `code` points into alive.
    _jit: HostJit,
}

impl JitQLinear {
    /// Generates (or reuses) the kernel for `spec` and packs `weights` (`[out_dim, in_dim]` integers).
    pub fn new(jit: &HostJit, spec: QLinearSpec, weights: &[i8], out_dim: usize, scales: &[f32], bias: Option<&[f32]>, act_scale: f32) -> Result<JitQLinear, KernelError> {
        let packed = pack_qlinear_weights(&spec, weights, out_dim)?;
        if scales.len() != out_dim * spec.groups() || bias.is_some_and(|b| b.len() != out_dim) {
            return Err(KernelError::Unsupported(format!("scales/bias do not match {out_dim} outputs of {spec:?}")));
        }
        let code = jit.lock().qlinear(spec)?;
        let bias = bias.map_or_else(|| vec![0.0; out_dim], <[f32]>::to_vec);
        Ok(JitQLinear { code, packed, scales: scales.to_vec(), bias, act_scale, _jit: jit.clone() })
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.packed.out_dim
    }

    /// `x` is `[rows, in_dim]`; returns `[rows, out_dim]`.
    pub fn forward(&self, x: &[i8], rows: usize) -> Result<Vec<f32>, RuntimeError> {
        let (in_dim, out_dim) = (self.code.spec.in_dim, self.out_dim());
        if x.len() != rows * in_dim {
            return Err(RuntimeError::Input(format!("qlinear input has {} values, expected {rows}×{in_dim}", x.len())));
        }
        // The kernel multiplies unsigned activations (see kernels::cpu::pack): x + 128.
        let x_unsigned: Vec<u8> = x.iter().map(|v| *v as u8 ^ 0x80).collect();
        let mut out = vec![0.0f32; rows * out_dim];
        if rows * in_dim * out_dim < MIN_PARALLEL_MACS {
            self.run(&x_unsigned, rows, 0..out_dim, &mut out, out_dim);
        } else if rows < ROW_SPLIT_MIN_ROWS {
            let tasks = rayon::current_num_threads() * 4;
            let columns = out_dim.div_ceil(tasks).max(MIN_COLUMNS_PER_TASK);
            for (x_row, out_row) in x_unsigned.chunks_exact(in_dim).zip(out.chunks_exact_mut(out_dim)) {
                out_row.par_chunks_mut(columns).enumerate().for_each(|(task, dst)| {
                    let first = task * columns;
                    self.run(x_row, 1, first..first + dst.len(), dst, out_dim);
                });
            }
        } else {
            out.par_chunks_mut(ROWS_PER_TASK * out_dim).zip(x_unsigned.par_chunks(ROWS_PER_TASK * in_dim)).for_each(|(dst, xs)| {
                self.run(xs, xs.len() / in_dim, 0..out_dim, dst, out_dim);
            });
        }
        Ok(out)
    }

    /// Writes `out[m · out_stride + (o − columns.start)]` for `m < rows`, `o ∈ columns`.
    fn run(&self, x_unsigned: &[u8], rows: usize, columns: std::ops::Range<usize>, out: &mut [f32], out_stride: usize) {
        let spec = &self.code.spec;
        let width = columns.len();
        // These checks are what the SAFETY argument below rests on; they are cheap next to the call.
        assert!(x_unsigned.len() >= rows * spec.in_dim, "activation rows out of bounds");
        assert!(columns.end <= self.out_dim(), "output features out of bounds");
        assert!(rows == 0 || width == 0 || out.len() >= (rows - 1) * out_stride + width, "output buffer too short");
        assert!(self.packed.weights.len() == self.out_dim() * spec.row_bytes());
        assert!(self.packed.corrections.len() == self.out_dim() * spec.groups() && self.scales.len() == self.packed.corrections.len());
        assert!(self.bias.len() == self.out_dim());
        // SAFETY: `code.address` is the entry of a function that `CpuJit::qlinear` finalized for
        // exactly `code.spec`, with the host's default C calling convention and this signature
        // (kernels::cpu::qlinear documents it); its executable memory is kept alive by `_jit`.
        let kernel: QLinearFn = unsafe { std::mem::transmute::<usize, QLinearFn>(self.code.address) };
        // SAFETY: the kernel reads x[m·in_dim + k] for m < rows, k < in_dim; packed weight rows,
        // corrections and scales [o, ..] and bias[o] for o in `columns`; and writes
        // out[m·out_stride + (o − start)]. The asserts above bound each of these by its slice's
        // length. `out` is borrowed mutably, so no other thread reads or writes it meanwhile; the
        // kernel keeps no pointer after returning.
        unsafe {
            kernel(
                x_unsigned.as_ptr(),
                self.packed.weights.as_ptr(),
                self.packed.corrections.as_ptr(),
                self.scales.as_ptr(),
                self.bias.as_ptr(),
                out.as_mut_ptr(),
                rows as i64,
                columns.start as i64,
                columns.end as i64,
                out_stride as i64,
                self.act_scale,
            )
        }
    }
}
