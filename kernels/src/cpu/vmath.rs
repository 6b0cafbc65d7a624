//! CLIF of `runtime::cpu::fastmath` (exp, ln, softplus) on `f32x4` values, operation for
//! operation in the Rust code's order, so a generated kernel gives the bit patterns the Rust
//! kernels give: cranelift never fuses a multiply and an add (neither does rustc), and the
//! clamps and branches become compares and lane selects with the same NaN behaviour (`x < min`
//! is false for NaN, as in `f32::clamp`).

use cranelift_codegen::ir::{condcodes::FloatCC, types, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// Where constants come from: splatted immediates (cranelift hoists them out of loops).
#[derive(Clone, Copy)]
pub(super) struct Constants;

impl Constants {
    /// `v` in every lane of an `f32x4`.
    pub(super) fn f32(&self, b: &mut FunctionBuilder, v: f32) -> Value {
        let s = b.ins().f32const(v);
        b.ins().splat(types::F32X4, s)
    }

    fn i32(&self, b: &mut FunctionBuilder, v: i32) -> Value {
        let s = b.ins().iconst(types::I32, v as u32 as i64);
        b.ins().splat(types::I32X4, s)
    }
}

fn as_ints(b: &mut FunctionBuilder, v: Value) -> Value {
    b.ins().bitcast(types::I32X4, MemFlagsData::new().with_endianness(Endianness::Little), v)
}

fn as_floats(b: &mut FunctionBuilder, v: Value) -> Value {
    b.ins().bitcast(types::F32X4, MemFlagsData::new().with_endianness(Endianness::Little), v)
}

/// Lanes of `if_true` where `mask` (a compare's all-ones / all-zeros lanes) is set, else `if_false`.
fn select(b: &mut FunctionBuilder, mask: Value, if_true: Value, if_false: Value) -> Value {
    let mask = as_floats(b, mask);
    b.ins().bitselect(mask, if_true, if_false)
}

/// e^x of each value (`fastmath::exp`), the values' operations interleaved step by step: each
/// exponential is a chain of dependent operations (the Horner polynomial), so interleaving
/// several keeps the multiply and add units busy where one chain would wait on latency.
pub(super) fn exp_each(b: &mut FunctionBuilder, k: Constants, xs: &[Value]) -> Vec<Value> {
    let each = |b: &mut FunctionBuilder, vs: &[Value], f: &dyn Fn(&mut FunctionBuilder, Value) -> Value| vs.iter().map(|v| f(b, *v)).collect::<Vec<_>>();
    let pair = |b: &mut FunctionBuilder, us: &[Value], vs: &[Value], f: &dyn Fn(&mut FunctionBuilder, Value, Value) -> Value| us.iter().zip(vs).map(|(u, v)| f(b, *u, *v)).collect::<Vec<_>>();
    // Each use loads its constant (see `CONSTANTS`).
    let with = |b: &mut FunctionBuilder, v: Value, c: f32, op: fn(&mut FunctionBuilder, Value, Value) -> Value| {
        let c = k.f32(b, c);
        op(b, v, c)
    };
    let fmul = |b: &mut FunctionBuilder, x: Value, y: Value| b.ins().fmul(x, y);
    let fadd = |b: &mut FunctionBuilder, x: Value, y: Value| b.ins().fadd(x, y);
    let fsub = |b: &mut FunctionBuilder, x: Value, y: Value| b.ins().fsub(x, y);
    let xs = each(b, xs, &|b, x| {
        let min = k.f32(b, -87.336_54);
        let below = b.ins().fcmp(FloatCC::LessThan, x, min);
        select(b, below, min, x)
    });
    let xs = each(b, &xs, &|b, x| {
        let max = k.f32(b, 88.0);
        let above = b.ins().fcmp(FloatCC::GreaterThan, x, max);
        select(b, above, max, x)
    });
    let scaled = each(b, &xs, &|b, x| with(b, x, std::f32::consts::LOG2_E, fmul));
    let shifted = each(b, &scaled, &|b, v| with(b, v, 12_582_912.0, fadd));
    let n = each(b, &shifted, &|b, v| with(b, v, 12_582_912.0, fsub));
    let hi = each(b, &n, &|b, v| with(b, v, 0.693_359_4, fmul));
    let r = pair(b, &xs, &hi, &|b, x, h| b.ins().fsub(x, h));
    let lo = each(b, &n, &|b, v| with(b, v, -2.121_944_4e-4, fmul));
    let r = pair(b, &r, &lo, &|b, r, l| b.ins().fsub(r, l));
    let coefficients = [1.987_569_1e-4f32, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];
    let mut p = each(b, &r, &|b, r| {
        let first = k.f32(b, coefficients[0]);
        b.ins().fmul(first, r)
    });
    for (i, &c) in coefficients[1..].iter().enumerate() {
        if i > 0 {
            p = pair(b, &p, &r, &|b, p, r| b.ins().fmul(p, r));
        }
        p = each(b, &p, &|b, v| with(b, v, c, fadd));
    }
    let pr = pair(b, &p, &r, &|b, p, r| b.ins().fmul(p, r));
    let prr = pair(b, &pr, &r, &|b, p, r| b.ins().fmul(p, r));
    let e_r = pair(b, &prr, &r, &|b, p, r| b.ins().fadd(p, r));
    let e_r = each(b, &e_r, &|b, v| with(b, v, 1.0, fadd));
    // 2ⁿ from the rounding sum's bits: (bits(shifted) − bits(ROUND) + 127) << 23, wrapping.
    let scale = each(b, &shifted, &|b, v| {
        let bits = as_ints(b, v);
        let offset = k.i32(b, 127 - 12_582_912.0f32.to_bits() as i32);
        let biased = b.ins().iadd(bits, offset);
        let scale_bits = b.ins().ishl_imm_u(biased, 23);
        as_floats(b, scale_bits)
    });
    pair(b, &e_r, &scale, &|b, e, s| b.ins().fmul(e, s))
}

/// e^x (`fastmath::exp`).
pub(super) fn exp(b: &mut FunctionBuilder, k: Constants, x: Value) -> Value {
    exp_each(b, k, &[x])[0]
}

/// ln(y) for normal positive lanes (`fastmath::ln`).
pub(super) fn ln(b: &mut FunctionBuilder, k: Constants, y: Value) -> Value {
    let bits = as_ints(b, y);
    let exponent = b.ins().ushr_imm_u(bits, 23);
    let byte = k.i32(b, 0xFF);
    let exponent = b.ins().band(exponent, byte);
    let bias = k.i32(b, 126);
    let e = b.ins().isub(exponent, bias);
    let (mantissa_mask, half) = (k.i32(b, 0x807F_FFFFu32 as i32), k.i32(b, 0x3F00_0000));
    let m = b.ins().band(bits, mantissa_mask);
    let m = b.ins().bor(m, half);
    let m = as_floats(b, m);
    let sqrt_half = k.f32(b, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrt_half);
    // `e − small as i32`: a set lane of the mask is −1.
    let e = b.ins().iadd(e, small);
    let e = b.ins().fcvt_from_sint(types::F32X4, e);
    let one = k.f32(b, 1.0);
    let twice = b.ins().fadd(m, m);
    let twice_less = b.ins().fsub(twice, one);
    let less = b.ins().fsub(m, one);
    let m = select(b, small, twice_less, less);
    let z = b.ins().fmul(m, m);
    let mut p = k.f32(b, 7.037_683_6e-2);
    for (subtract, c) in [(true, 1.151_461_1e-1f32), (false, 1.167_699_9e-1), (true, 1.242_014_1e-1), (false, 1.424_932_3e-1), (true, 1.666_805_8e-1), (false, 2.000_071_4e-1), (true, 2.499_999_4e-1), (false, 3.333_333e-1)] {
        let pm = b.ins().fmul(p, m);
        let c = k.f32(b, c);
        p = if subtract { b.ins().fsub(pm, c) } else { b.ins().fadd(pm, c) };
    }
    let mz = b.ins().fmul(m, z);
    let r = b.ins().fmul(mz, p);
    let lo = k.f32(b, -2.121_944_4e-4);
    let e_lo = b.ins().fmul(lo, e);
    let r = b.ins().fadd(r, e_lo);
    let minus_half = k.f32(b, -0.5);
    let half_z = b.ins().fmul(minus_half, z);
    let r = b.ins().fadd(r, half_z);
    let hi = k.f32(b, 0.693_359_4);
    let e_hi = b.ins().fmul(hi, e);
    let mr = b.ins().fadd(m, r);
    b.ins().fadd(mr, e_hi)
}

/// ln(1 + eˣ), linear above 20 (`fastmath::softplus`).
pub(super) fn softplus(b: &mut FunctionBuilder, k: Constants, x: Value) -> Value {
    let u = exp(b, k, x);
    let one = k.f32(b, 1.0);
    let w = b.ins().fadd(one, u);
    let ln_w = ln(b, k, w);
    let w_less = b.ins().fsub(w, one);
    let ratio = b.ins().fdiv(u, w_less);
    let log1p = b.ins().fmul(ln_w, ratio);
    let exact = b.ins().fcmp(FloatCC::Equal, w, one);
    let log1p = select(b, exact, u, log1p);
    let twenty = k.f32(b, 20.0);
    let linear = b.ins().fcmp(FloatCC::GreaterThan, x, twenty);
    select(b, linear, x, log1p)
}
