//! CLIF of the RMSNorms of a Mamba block, specialised to the row width: the plain RMSNorm
//! (optionally weighted, optionally quantized to int8 in the same pass) and mamba_ssm's gated,
//! grouped RMSNorm (`norm_before_gate = False`).
//!
//! # Bit-identical to the Rust kernels
//!
//! Each value goes through the operations of `runtime::cpu::norm` (and, for the gate,
//! `runtime::cpu::fastmath::silu`) in their order and precision; cranelift never contracts a
//! multiplication and an addition into an FMA, so the results are bit-identical:
//!
//! - the sum of squares is *sequential*, `((−0 + x₀²) + x₁²) + …`, as Rust's `Iterator::sum` of
//!   f32 folds it (from −0.0, which changes no sum of squares). It is one chain of dependent
//!   additions, so its latency bounds the kernel; the squares are the only part that vectorises;
//! - then `mean = sum / n` (a true division by `n` as f32), `inv = 1 / sqrt(mean + ε)` (`sqrt`
//!   then `fdiv`: an approximate reciprocal square root would round differently), `v · inv`, and
//!   `· weight` as a second multiplication (not `v · (inv · weight)`);
//! - the quantized form divides that value by its scale exactly as `super::quantize` does
//!   (`quantize_16` / `quantize_one` are shared with it);
//! - the gate `y · silu(z)`, `silu(z) = z / (1 + exp(−z))`, evaluates the Cephes exponential of
//!   `fastmath::exp` step by step: clamp, the add-and-subtract rounding, the two-part ln 2, the
//!   degree-5 polynomial in Horner form, and 2ⁿ built from the rounded sum's bits. The gated
//!   values are stored, then squared and summed per group; the second pass multiplies them by
//!   the group's `inv` and then by the weight, which is what the reference's two loops compute.
//!
//! Rows are `f32x4` vectors (four per loop step) with a scalar tail, so any width works. The sequential sum keeps the plain
//! RMSNorm at the speed of its chain of additions: what it saves is the separate quantize pass.
//!
//! # Signatures
//!
//! - RMSNorm ([`build_rms_norm`]): `fn(x: *const f32, weight: *const f32, scales: *const f32,
//!   out: *mut u8, rows: i64)` over `rows` rows of `width`. `weight` (`[width]`) is read only by a
//!   weighted kernel, `scales` (`[width]` or `[1]`) only by a quantizing one. `out` receives f32
//!   values (`[rows, width]`) or int8 ones (`[rows, width]` bytes). An f32 kernel may run in place
//!   (`out == x`): every value of a row is read before it is written, and no earlier one is
//!   read after.
//! - Gated RMSNorm ([`build_gated_rms_norm`]): `fn(y: *const f32, z: *const f32,
//!   weight: *const f32, out: *mut f32, rows: i64)`, all `[rows, width]` but `weight` `[width]`;
//!   `out` holds the gated values between the passes, so it must not overlap `y` or `z`.

use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{types, Function, InstBuilder, StackSlotData, StackSlotKind, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};

use super::function::build_function;
use super::qlinear::counted_loop;
use super::quantize::{mem, quantize_row};
use super::rows::{for_each_lane_group, for_each_row, load, store};
use super::vmath::Lanes;
use super::KernelError;

/// What an RMSNorm kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormOutput {
    /// The normalised f32 values.
    F32,
    /// Their static int8 quantization (a following `quantize` fused in): one scale per channel,
    /// or one for the whole tensor.
    I8 {
        /// `scales` has `width` values (else 1).
        per_channel: bool,
    },
}

/// The shape and constants an RMSNorm kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RmsNormSpec {
    /// Values per row.
    pub width: usize,
    /// Whether the normalised row is multiplied by a weight.
    pub weighted: bool,
    /// ε as its bits (`f32::to_bits`), so that the spec is hashable.
    pub eps_bits: u32,
    /// f32 or int8 output.
    pub output: NormOutput,
}

impl RmsNormSpec {
    /// The symbol the kernel is defined under (it names every field).
    pub fn symbol(&self) -> String {
        let output = match self.output {
            NormOutput::F32 => "f32",
            NormOutput::I8 { per_channel: true } => "i8_per_channel",
            NormOutput::I8 { per_channel: false } => "i8_per_tensor",
        };
        format!("rms_norm_w{}_{}_eps{:08x}_{output}", self.width, if self.weighted { "weighted" } else { "plain" }, self.eps_bits)
    }
}

/// The shape and constants a gated RMSNorm kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GatedRmsNormSpec {
    /// Values per row.
    pub width: usize,
    /// Contiguous slices of a row normalised separately (`width / groups` values each).
    pub groups: usize,
    /// ε as its bits (`f32::to_bits`).
    pub eps_bits: u32,
}

impl GatedRmsNormSpec {
    /// The symbol the kernel is defined under (it names every field).
    pub fn symbol(&self) -> String {
        format!("gated_rms_norm_w{}_g{}_eps{:08x}", self.width, self.groups, self.eps_bits)
    }
}

/// Widest row a kernel takes: byte offsets within a row are 32-bit immediates.
const MAX_WIDTH: usize = i32::MAX as usize / 8;

/// Builds the RMSNorm kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_rms_norm(spec: &RmsNormSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    if spec.width == 0 || spec.width > MAX_WIDTH {
        return Err(KernelError::Unsupported(format!("{spec:?}")));
    }
    let width = spec.width;
    let eps = f32::from_bits(spec.eps_bits);
    Ok(build_function(target, spec.symbol(), &[types::I64; 5], |b, p| {
        let (x, weight, scales, out, rows) = (p[0], p[1], p[2], p[3], p[4]);
        let weight = spec.weighted.then_some(weight);
        let tensor_scale = match spec.output {
            NormOutput::I8 { per_channel: false } => Some(b.ins().load(types::F32, mem(), scales, 0)),
            _ => None,
        };
        let out_stride = match spec.output {
            NormOutput::F32 => width * 4,
            NormOutput::I8 { .. } => width,
        };
        for_each_row(b, rows, &[(x, width * 4), (out, out_stride)], &mut |b, row| {
            let (x_row, out_row) = (row[0], row[1]);
            let sum = sum_of_squares(b, x_row, width);
            let inv = inverse_rms(b, sum, width, eps);
            match spec.output {
                NormOutput::F32 => scale_row(b, x_row, out_row, weight, width, inv),
                NormOutput::I8 { .. } => quantize_scaled_row(b, x_row, weight, scales, tensor_scale, out_row, width, inv),
            }
        });
    }))
}

/// Builds the gated RMSNorm kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_gated_rms_norm(spec: &GatedRmsNormSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    if spec.width == 0 || spec.width > MAX_WIDTH || spec.groups == 0 || !spec.width.is_multiple_of(spec.groups) {
        return Err(KernelError::Unsupported(format!("{spec:?}")));
    }
    let (width, group) = (spec.width, spec.width / spec.groups);
    let eps = f32::from_bits(spec.eps_bits);
    Ok(build_function(target, spec.symbol(), &[types::I64; 5], |b, p| {
        let (y, z, weight, out, rows) = (p[0], p[1], p[2], p[3], p[4]);
        let row_bytes = width * 4;
        for_each_row(b, rows, &[(y, row_bytes), (z, row_bytes), (out, row_bytes)], &mut |b, row| {
            let start = b.ins().iconst(types::I64, 0);
            let end = b.ins().iconst(types::I64, row_bytes as i64);
            counted_loop(b, start, end, (group * 4) as i64, &mut |b, group_byte| {
                let weight_at = b.ins().iadd(weight, group_byte);
                let (y_at, z_at, out_at) = (b.ins().iadd(row[0], group_byte), b.ins().iadd(row[1], group_byte), b.ins().iadd(row[2], group_byte));
                let sum = b.declare_var(types::F32);
                let neg_zero = b.ins().f32const(Ieee32::with_float(-0.0));
                b.def_var(sum, neg_zero);
                for_each_lane_group(b, group, &mut |b, ty, index, lane| {
                    let (y, z) = (load(b, ty, y_at, index, lane), load(b, ty, z_at, index, lane));
                    let gate = Lanes(ty).silu(b, z);
                    let gated = b.ins().fmul(y, gate);
                    store(b, gated, out_at, index, lane);
                    let square = b.ins().fmul(gated, gated);
                    add_lanes(b, sum, ty, square);
                });
                let sum = b.use_var(sum);
                let inv = inverse_rms(b, sum, group, eps);
                scale_row(b, out_at, out_at, Some(weight_at), group, inv);
            });
        });
    }))
}

/// `((−0 + x₀²) + x₁²) + … + x²ₗₑₙ₋₁`, in that order (see the module doc).
fn sum_of_squares(b: &mut FunctionBuilder, base: Value, len: usize) -> Value {
    let sum = b.declare_var(types::F32);
    let neg_zero = b.ins().f32const(Ieee32::with_float(-0.0));
    b.def_var(sum, neg_zero);
    for_each_lane_group(b, len, &mut |b, ty, index, lane| {
        // The squares are lane-wise (the same roundings as one at a time); the additions stay
        // one chain, lane by lane.
        let v = load(b, ty, base, index, lane);
        let square = b.ins().fmul(v, v);
        add_lanes(b, sum, ty, square);
    });
    b.use_var(sum)
}

/// `sum += v`, lane 0 first, for a `ty` (F32 or F32X4) `v`.
fn add_lanes(b: &mut FunctionBuilder, sum: Variable, ty: Type, v: Value) {
    for lane in 0..ty.lane_count() as u8 {
        let s = if ty.is_vector() { b.ins().extractlane(v, lane) } else { v };
        let old = b.use_var(sum);
        let new = b.ins().fadd(old, s);
        b.def_var(sum, new);
    }
}

/// The inverse RMS of a row and its splat.
#[derive(Clone, Copy)]
struct Inverse {
    scalar: Value,
    vector: Value,
}

/// `1 / sqrt(sum / len + ε)`: the reference's division, square root and reciprocal, in every lane
/// of an `f32x4` (lane-wise IEEE operations: the same value as the scalar ones), computed here,
/// once per row or group (see [`compute_here`]).
fn inverse_rms(b: &mut FunctionBuilder, sum: Value, len: usize, eps: f32) -> Inverse {
    let sum = b.ins().splat(types::F32X4, sum);
    let n = Lanes::VECTOR.f32(b, len as f32);
    let mean = b.ins().fdiv(sum, n);
    let eps = Lanes::VECTOR.f32(b, eps);
    let shifted = b.ins().fadd(mean, eps);
    let root = b.ins().sqrt(shifted);
    let one = Lanes::VECTOR.f32(b, 1.0);
    let vector = b.ins().fdiv(one, root);
    compute_here(b, vector);
    Inverse { scalar: b.ins().extractlane(vector, 0), vector }
}

/// Makes cranelift compute `v` at this point rather than inside the loop that follows and uses
/// it. Its optimiser drops every side-effect-free instruction from the layout and re-emits it
/// before its first use, without hoisting it out of loops (not even a `splat` of a parameter, in
/// this version), which would repeat the inverse RMS's two divisions and square root at every
/// step of the scaling loop (they share the divider with its `fdiv`s: a third slower). Storing
/// `v` to a stack slot is a side effect here that needs it, and the later uses share that value.
fn compute_here(b: &mut FunctionBuilder, v: Value) {
    let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 4));
    b.ins().stack_store(types::I64, v, slot, 0);
}

/// `src[i] · inv (· weight[i])` for the `ty` (F32 or F32X4) at element `index + lane`.
fn normalised(b: &mut FunctionBuilder, ty: Type, src: Value, weight: Option<Value>, inv: Inverse, index: Option<Value>, lane: usize) -> Value {
    let v = load(b, ty, src, index, lane);
    let v = b.ins().fmul(v, if ty.is_vector() { inv.vector } else { inv.scalar });
    match weight {
        Some(w) => {
            let w = load(b, ty, w, index, lane);
            b.ins().fmul(v, w)
        }
        None => v,
    }
}

/// `dst[i] = src[i] · inv (· weight[i])` over `len` values (`dst` may be `src`).
fn scale_row(b: &mut FunctionBuilder, src: Value, dst: Value, weight: Option<Value>, len: usize, inv: Inverse) {
    for_each_lane_group(b, len, &mut |b, ty, index, lane| {
        let v = normalised(b, ty, src, weight, inv, index, lane);
        store(b, v, dst, index, lane);
    });
}

/// `out[i] = quantize(x[i] · inv (· weight[i]), scale of i)` over `len` values, through
/// [`super::quantize::quantize_row`] like `super::quantize`.
#[allow(clippy::too_many_arguments)]
fn quantize_scaled_row(b: &mut FunctionBuilder, x: Value, weight: Option<Value>, scales: Value, tensor_scale: Option<Value>, out: Value, len: usize, inv: Inverse) {
    quantize_row(b, len, scales, tensor_scale, out, &mut |b, ty, index, lane| normalised(b, ty, x, weight, inv, index, lane));
}
