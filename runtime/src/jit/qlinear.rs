//! A quantized linear layer on its generated kernel: weights packed once, rows or output columns
//! split across the rayon pool.

use rayon::prelude::*;

use kernels::cpu::qgemv::TILE;
use kernels::cpu::{pack_qlinear_weights, qgemv_supported, KernelError, PackedQLinear, QGemvCode, QLinearCode, QLinearSpec};

use super::HostJit;
use crate::cpu::qgemm_avx512::WideQGemm;
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

/// The decode kernel's ABI; see `kernels::cpu::qgemv`.
type QGemvFn = unsafe extern "C" fn(*const u8, *const u8, *const i32, *const f32, *const f32, *mut f32, i64, i64, f32);

/// `out = act_scale · (x · Wᵀ per scaled group) + bias` on int8 activations.
pub struct JitQLinear {
    code: QLinearCode,
    /// The one-row kernel and its tiled tables, where the shape has one.
    gemv: Option<Gemv>,
    /// Prefill on 512-bit AVX-512 VNNI where the CPU has it (see `cpu::qgemm_avx512`).
    wide: Option<WideQGemm>,
    packed: PackedQLinear,
    /// `[out_dim, groups]`.
    scales: Vec<f32>,
    /// `[out_dim]` (zeros when the layer has none: the reference adds 0.0 too).
    bias: Vec<f32>,
    act_scale: f32,
    /// Keeps the executable memory `code` points into alive.
    _jit: HostJit,
}

/// The decode kernel of a layer with its tables in `[tiles, groups, 4]` order.
struct Gemv {
    code: QGemvCode,
    scales: Vec<f32>,
    /// 8-bit weights: `128 · Σ_{k∈g} w[o, k]`, tiled; empty for 4-bit (the row brings its own).
    corrections: Vec<i32>,
}

/// One activation row in the forms the kernels read, reused from call to call.
#[derive(Default)]
pub struct GemvRow {
    /// `x + 128` (8-bit weights, and the general kernel's remainder) or the int8 bytes (4-bit).
    bytes: Vec<u8>,
    /// `x + 128`, for the general kernel (features past the last whole tile) when `bytes` is not.
    unsigned: Vec<u8>,
    /// 4-bit weights: `8 · Σ_{k∈g} x[k]` per group.
    corrections: Vec<i32>,
}

/// `[out_dim, groups]` → `[tiles, groups, TILE]` for the whole tiles.
fn tile_table<T: Copy>(table: &[T], out_dim: usize, groups: usize) -> Vec<T> {
    let tiles = out_dim / TILE;
    let mut tiled = Vec::with_capacity(tiles * groups * TILE);
    for t in 0..tiles {
        for g in 0..groups {
            tiled.extend((0..TILE).map(|j| table[(t * TILE + j) * groups + g]));
        }
    }
    tiled
}

impl JitQLinear {
    /// Generates (or reuses) the kernel for `spec` and packs `weights` (`[out_dim, in_dim]` integers).
    pub fn new(jit: &HostJit, spec: QLinearSpec, weights: &[i8], out_dim: usize, scales: &[f32], bias: Option<&[f32]>, act_scale: f32) -> Result<JitQLinear, KernelError> {
        let packed = pack_qlinear_weights(&spec, weights, out_dim)?;
        if scales.len() != out_dim * spec.groups() || bias.is_some_and(|b| b.len() != out_dim) {
            return Err(KernelError::Unsupported(format!("scales/bias do not match {out_dim} outputs of {spec:?}")));
        }
        let code = jit.lock().qlinear(spec)?;
        let gemv = if qgemv_supported(&spec) {
            let tiled_corrections = if spec.weight_bits == 8 { tile_table(&packed.corrections, out_dim, spec.groups()) } else { Vec::new() };
            Some(Gemv { code: jit.lock().qgemv(spec)?, scales: tile_table(scales, out_dim, spec.groups()), corrections: tiled_corrections })
        } else {
            None
        };
        let wide = WideQGemm::new(weights, out_dim, spec.in_dim, spec.group, spec.weight_bits, scales, bias, act_scale);
        let bias = bias.map_or_else(|| vec![0.0; out_dim], <[f32]>::to_vec);
        Ok(JitQLinear { code, gemv, wide, packed, scales: scales.to_vec(), bias, act_scale, _jit: jit.clone() })
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.code.spec.in_dim
    }

    /// Fills `row` from one activation row `x` (`in_dim` values) for [`JitQLinear::gemv_into`].
    pub fn prepare_row(&self, x: &[i8], row: &mut GemvRow) -> Result<(), RuntimeError> {
        let spec = &self.code.spec;
        if x.len() != spec.in_dim {
            return Err(RuntimeError::Input(format!("qlinear input has {} values, expected {}", x.len(), spec.in_dim)));
        }
        let to_unsigned = |dst: &mut Vec<u8>| {
            dst.clear();
            dst.extend(x.iter().map(|v| *v as u8 ^ 0x80));
        };
        row.corrections.clear();
        row.unsigned.clear();
        if spec.weight_bits == 4 && self.gemv.is_some() {
            row.bytes.clear();
            row.bytes.extend(x.iter().map(|v| *v as u8));
            row.corrections.extend(x.chunks_exact(spec.group).map(|g| 8 * g.iter().map(|v| *v as i32).sum::<i32>()));
            if !self.out_dim().is_multiple_of(TILE) {
                to_unsigned(&mut row.unsigned);
            }
        } else {
            to_unsigned(&mut row.bytes);
        }
        Ok(())
    }

    /// Writes output features `columns` of the row `row` holds into `out[.. columns.len()]`.
    /// `columns.start` must be a multiple of 4 (the kernel's tile) unless the layer has no decode
    /// kernel; features past the last whole tile run on the general kernel.
    pub fn gemv_into(&self, row: &GemvRow, columns: std::ops::Range<usize>, out: &mut [f32]) {
        let Some(gemv) = &self.gemv else {
            self.run(&row.bytes, 1, columns.clone(), out, columns.len());
            return;
        };
        let spec = &self.code.spec;
        let tiles = self.out_dim() / TILE;
        assert!(columns.start.is_multiple_of(TILE) && columns.end <= self.out_dim() && out.len() >= columns.len(), "decode columns out of bounds");
        let (tile_begin, tile_end) = (columns.start / TILE, (columns.end / TILE).min(tiles));
        if tile_end > tile_begin {
            // These checks are what the SAFETY argument below rests on.
            assert!(row.bytes.len() == spec.in_dim, "row prepared for another layer");
            assert!(self.packed.weights.len() >= tiles * TILE * spec.row_bytes());
            assert!(gemv.scales.len() == tiles * spec.groups() * TILE && self.bias.len() >= tiles * TILE);
            if spec.weight_bits == 8 {
                assert!(gemv.corrections.len() == gemv.scales.len());
            } else {
                assert!(row.corrections.len() == spec.groups(), "row prepared for another layer");
            }
            let corrections = if spec.weight_bits == 8 { gemv.corrections.as_ptr() } else { row.corrections.as_ptr() };
            // SAFETY: `gemv.code.address` is the entry of a function that `CpuJit::qgemv`
            // finalized for exactly `spec`, with the host's default C calling convention and this
            // signature (kernels::cpu::qgemv documents it); `_jit` keeps its memory alive.
            let kernel: QGemvFn = unsafe { std::mem::transmute::<usize, QGemvFn>(gemv.code.address) };
            // SAFETY: for tiles t in tile_begin..tile_end (< tiles) the kernel reads x[..in_dim],
            // weight rows 4t..4t+4, scales and 8-bit corrections [t, .., ..], the row's group
            // corrections [..groups] and bias[4t..4t+4], and writes out[..4·(tile_end − tile_begin)]
            // ≤ columns.len() ≤ out.len(); the asserts above bound each by its slice's length.
            // `out` is borrowed mutably; the kernel keeps no pointer after returning.
            unsafe {
                kernel(
                    row.bytes.as_ptr(),
                    self.packed.weights.as_ptr(),
                    corrections,
                    gemv.scales.as_ptr(),
                    self.bias.as_ptr(),
                    out.as_mut_ptr(),
                    tile_begin as i64,
                    tile_end as i64,
                    self.act_scale,
                )
            }
        }
        let done = tile_end.max(tile_begin) * TILE;
        if columns.end > done {
            let unsigned = if row.unsigned.is_empty() { &row.bytes } else { &row.unsigned };
            let first = done - columns.start;
            self.run(unsigned, 1, done..columns.end, &mut out[first..], columns.len());
        }
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
        let mut out = vec![0.0f32; rows * out_dim];
        if rows < ROW_SPLIT_MIN_ROWS {
            let parallel = rows * in_dim * out_dim >= MIN_PARALLEL_MACS;
            let tasks = rayon::current_num_threads() * 4;
            let columns = out_dim.div_ceil(tasks).max(MIN_COLUMNS_PER_TASK).next_multiple_of(TILE);
            let mut prepared = GemvRow::default();
            for (x_row, out_row) in x.chunks_exact(in_dim).zip(out.chunks_exact_mut(out_dim)) {
                self.prepare_row(x_row, &mut prepared)?;
                if parallel {
                    out_row.par_chunks_mut(columns).enumerate().for_each(|(task, dst)| {
                        let first = task * columns;
                        self.gemv_into(&prepared, first..first + dst.len(), dst);
                    });
                } else {
                    self.gemv_into(&prepared, 0..out_dim, out_row);
                }
            }
        } else if let Some(wide) = &self.wide {
            wide.forward(x, rows, &mut out);
        } else if self.gemv.is_some() {
            // Prefill on the one-row kernel too, row after row within each task: its tiles and
            // vector epilogue beat the general kernel's four-row weight reuse while a layer's
            // weights stay in L2 (mamba2-small W4A8 prefill +15 % here).
            out.par_chunks_mut(ROWS_PER_TASK * out_dim).zip(x.par_chunks(ROWS_PER_TASK * in_dim)).try_for_each(|(dst, xs)| -> Result<(), RuntimeError> {
                let mut prepared = GemvRow::default();
                for (x_row, out_row) in xs.chunks_exact(in_dim).zip(dst.chunks_exact_mut(out_dim)) {
                    self.prepare_row(x_row, &mut prepared)?;
                    self.gemv_into(&prepared, 0..out_dim, out_row);
                }
                Ok(())
            })?;
        } else {
            // The general kernel multiplies unsigned activations (see kernels::cpu::pack): x + 128.
            let x_unsigned: Vec<u8> = x.iter().map(|v| *v as u8 ^ 0x80).collect();
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
