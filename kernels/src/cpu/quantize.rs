//! CLIF of static int8 quantization: `q[m, c] = clamp(round_half_even(x[m, c] / scale[c]), −128, 127)`
//! over rows of `width` channels, with one scale per channel or one for the whole tensor.
//!
//! Sixteen values per step: four `f32x4` divisions (a true division, as the reference does, not a
//! multiplication by the reciprocal, which rounds differently), `nearest` (ties to even),
//! saturating conversion to i32 (NaN → 0, like Rust's `as`), and two saturating narrowings to i8.
//! The last `width % 16` channels of a row go one at a time through the same operations. The
//! result is bit-identical to `runtime::cpu::quant::quantize`.
//!
//! Signature: `fn(x: *const f32, scales: *const f32, out: *mut i8, rows: i64)`.

use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;

use super::qlinear::counted_loop;
use super::rows::{for_each_row, load, LaneBodyValue};
use super::function::build_function;
use super::KernelError;

/// The dimensions a quantize kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantizeSpec {
    /// Channels per row.
    pub width: usize,
    /// One scale per channel (`scales` has `width` values) or one for all (`scales` has 1).
    pub per_channel: bool,
}

impl QuantizeSpec {
    /// The symbol the kernel is defined under.
    pub fn symbol(&self) -> String {
        format!("quantize_i8_w{}_{}", self.width, if self.per_channel { "per_channel" } else { "per_tensor" })
    }
}

pub(super) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Builds the kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_quantize(spec: &QuantizeSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    if spec.width == 0 || spec.width > i32::MAX as usize / 4 {
        return Err(KernelError::Unsupported(format!("{spec:?}")));
    }
    Ok(build_function(target, spec.symbol(), &[types::I64; 4], |b, p| {
        let (x, scales, out, rows) = (p[0], p[1], p[2], p[3]);
        let tensor_scale = (!spec.per_channel).then(|| b.ins().load(types::F32, mem(), scales, 0));
        for_each_row(b, rows, &[(x, spec.width * 4), (out, spec.width)], &mut |b, row| {
            let x_row = row[0];
            quantize_row(b, spec.width, scales, tensor_scale, row[1], &mut |b, ty, index, lane| load(b, ty, x_row, index, lane));
        });
    }))
}

/// `out[i] = quantize(value(i), scale of i)` for `len` values: sixteen per loop step through
/// [`quantize_16`], the last `len % 16` through [`quantize_one`]. `value(b, ty, index, lane)`
/// emits the `ty` (F32X4 or F32) at element `index + lane` (`index` the loop's element index,
/// none in the tail); `scales` has `len` values unless `tensor_scale` (one for all) is given.
pub(super) fn quantize_row(b: &mut FunctionBuilder, len: usize, scales: Value, tensor_scale: Option<Value>, out: Value, value: &mut LaneBodyValue) {
    let tensor_scale_vec = tensor_scale.map(|s| b.ins().splat(types::F32X4, s));
    let vector_end = len / 16 * 16;
    if vector_end > 0 {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, vector_end as i64);
        counted_loop(b, start, end, 16, &mut |b, c| {
            let bytes = quantize_16(b, &mut |b, i| {
                let lane = 4 * i as usize;
                let v = value(b, types::F32X4, Some(c), lane);
                let s = tensor_scale_vec.unwrap_or_else(|| load(b, types::F32X4, scales, Some(c), lane));
                (v, s)
            });
            let out_at = b.ins().iadd(out, c);
            b.ins().store(mem(), bytes, out_at, 0);
        });
    }
    for c in vector_end..len {
        let v = value(b, types::F32, None, c);
        let s = tensor_scale.unwrap_or_else(|| load(b, types::F32, scales, None, c));
        let q = quantize_one(b, v, s);
        b.ins().istore8(mem(), q, out, c as i32);
    }
}

/// The int8 quantization of sixteen values as one `i8x16`: `group(b, i)` emits the `i`-th four
/// values and their scales (two `f32x4`), which are divided, rounded half to even, converted
/// with saturation and narrowed twice (saturating), in that order. Fused kernels (a norm followed
/// by a quantize) emit their quantization through this, so it stays the one definition.
pub(super) fn quantize_16(b: &mut FunctionBuilder, group: &mut dyn FnMut(&mut FunctionBuilder, i32) -> (Value, Value)) -> Value {
    let ints: Vec<Value> = (0..4)
        .map(|i| {
            let (v, s) = group(b, i);
            let q = b.ins().fdiv(v, s);
            let r = b.ins().nearest(q);
            b.ins().fcvt_to_sint_sat(types::I32X4, r)
        })
        .collect();
    let low = b.ins().snarrow(ints[0], ints[1]);
    let high = b.ins().snarrow(ints[2], ints[3]);
    b.ins().snarrow(low, high)
}

/// The int8 quantization of one f32 `v` by scale `s`, as an i32 in −128..=127 (for `istore8`):
/// the scalar form of [`quantize_16`], for the channels after the last group of sixteen.
pub(super) fn quantize_one(b: &mut FunctionBuilder, v: Value, s: Value) -> Value {
    let q = b.ins().fdiv(v, s);
    let r = b.ins().nearest(q);
    let i = b.ins().fcvt_to_sint_sat(types::I32, r);
    let lo = b.ins().iconst(types::I32, -128);
    let hi = b.ins().iconst(types::I32, 127);
    let i = b.ins().smax(i, lo);
    b.ins().smin(i, hi)
}
