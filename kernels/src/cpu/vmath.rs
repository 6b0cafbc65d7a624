//! CLIF of `runtime::cpu::fastmath` (exp, ln, softplus, SiLU) on `f32x4` or `f32` values,
//! operation for operation in the Rust code's order, so a generated kernel gives the bit patterns
//! the Rust kernels give: cranelift never fuses a multiply and an add (neither does rustc), and
//! the clamps and branches become compares and selects with the same NaN behaviour (`x < min` is
//! false for NaN, as in `f32::clamp`).
//!
//! Constants are materialised where they are used; cranelift hoists them out of loops. With the
//! dozen the polynomials need, 16 vector registers cannot hold them all, so some are reloaded
//! inside loops anyway (tried: a constants table passed by pointer, and interleaving several
//! exponentials; neither measured faster).

use cranelift_codegen::ir::{condcodes::FloatCC, types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// The lane type the functions work on: `f32x4` or `f32`.
#[derive(Clone, Copy)]
pub(super) struct Lanes(pub Type);

impl Lanes {
    /// Four lanes.
    pub(super) const VECTOR: Lanes = Lanes(types::F32X4);
    /// One lane.
    pub(super) const SCALAR: Lanes = Lanes(types::F32);

    /// `v` in every lane.
    pub(super) fn f32(&self, b: &mut FunctionBuilder, v: f32) -> Value {
        let s = b.ins().f32const(v);
        if self.0.is_vector() {
            b.ins().splat(self.0, s)
        } else {
            s
        }
    }

    fn int_type(&self) -> Type {
        if self.0.is_vector() {
            types::I32X4
        } else {
            types::I32
        }
    }

    fn i32(&self, b: &mut FunctionBuilder, v: i32) -> Value {
        let s = b.ins().iconst(types::I32, v as u32 as i64);
        if self.0.is_vector() {
            b.ins().splat(types::I32X4, s)
        } else {
            s
        }
    }

    fn as_ints(&self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().bitcast(self.int_type(), MemFlagsData::new().with_endianness(Endianness::Little), v)
    }

    fn as_floats(&self, b: &mut FunctionBuilder, v: Value) -> Value {
        b.ins().bitcast(self.0, MemFlagsData::new().with_endianness(Endianness::Little), v)
    }

    /// Where `condition` holds (an `fcmp` of these lanes) `if_true`, else `if_false`.
    fn select(&self, b: &mut FunctionBuilder, condition: Value, if_true: Value, if_false: Value) -> Value {
        if self.0.is_vector() {
            let mask = self.as_floats(b, condition);
            b.ins().bitselect(mask, if_true, if_false)
        } else {
            b.ins().select(condition, if_true, if_false)
        }
    }

    /// `condition` (an `fcmp` of these lanes) as 0 or −1 in each lane, as an integer.
    fn minus_one_where(&self, b: &mut FunctionBuilder, condition: Value) -> Value {
        if self.0.is_vector() {
            condition
        } else {
            let one = b.ins().uextend(types::I32, condition);
            b.ins().ineg(one)
        }
    }

    /// `p = p·r + c` for each coefficient after the first, in order (Horner, unfused); `subtract`
    /// marks coefficients written `p·r − c` in the Rust code.
    fn horner(&self, b: &mut FunctionBuilder, r: Value, coefficients: &[(bool, f32)]) -> Value {
        let mut p = self.f32(b, coefficients[0].1);
        for &(subtract, c) in &coefficients[1..] {
            let pr = b.ins().fmul(p, r);
            let c = self.f32(b, c);
            p = if subtract { b.ins().fsub(pr, c) } else { b.ins().fadd(pr, c) };
        }
        p
    }

    /// e^x (`fastmath::exp`).
    pub(super) fn exp(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let (min, max) = (self.f32(b, -87.336_54), self.f32(b, 88.0));
        let below = b.ins().fcmp(FloatCC::LessThan, x, min);
        let x = self.select(b, below, min, x);
        // `max < x`, not `x > max`: in this operand order (as in the line above) the
        // compare-and-select lowers to one `minps` / `maxps`, which keep a NaN `x` as the clamp does.
        let above = b.ins().fcmp(FloatCC::LessThan, max, x);
        let x = self.select(b, above, max, x);
        let (log2e, round) = (self.f32(b, std::f32::consts::LOG2_E), self.f32(b, 12_582_912.0));
        let scaled = b.ins().fmul(x, log2e);
        let shifted = b.ins().fadd(scaled, round);
        let n = b.ins().fsub(shifted, round);
        let (ln2_hi, ln2_lo) = (self.f32(b, 0.693_359_4), self.f32(b, -2.121_944_4e-4));
        let hi = b.ins().fmul(n, ln2_hi);
        let r = b.ins().fsub(x, hi);
        let lo = b.ins().fmul(n, ln2_lo);
        let r = b.ins().fsub(r, lo);
        let p = self.horner(b, r, &[(false, 1.987_569_1e-4), (false, 1.398_199_9e-3), (false, 8.333_452e-3), (false, 4.166_579_6e-2), (false, 1.666_666_5e-1), (false, 5e-1)]);
        let pr = b.ins().fmul(p, r);
        let prr = b.ins().fmul(pr, r);
        let e_r = b.ins().fadd(prr, r);
        let one = self.f32(b, 1.0);
        let e_r = b.ins().fadd(e_r, one);
        // 2ⁿ from the rounding sum's bits: (bits(shifted) − bits(ROUND) + 127) << 23, wrapping.
        let bits = self.as_ints(b, shifted);
        let offset = self.i32(b, 127 - 12_582_912.0f32.to_bits() as i32);
        let biased = b.ins().iadd(bits, offset);
        let scale_bits = b.ins().ishl_imm_u(biased, 23);
        let scale = self.as_floats(b, scale_bits);
        b.ins().fmul(e_r, scale)
    }

    /// ln(y) for normal positive lanes (`fastmath::ln`).
    pub(super) fn ln(&self, b: &mut FunctionBuilder, y: Value) -> Value {
        let bits = self.as_ints(b, y);
        let exponent = b.ins().ushr_imm_u(bits, 23);
        let byte = self.i32(b, 0xFF);
        let exponent = b.ins().band(exponent, byte);
        let bias = self.i32(b, 126);
        let e = b.ins().isub(exponent, bias);
        let (mantissa_mask, half) = (self.i32(b, 0x807F_FFFFu32 as i32), self.i32(b, 0x3F00_0000));
        let m = b.ins().band(bits, mantissa_mask);
        let m = b.ins().bor(m, half);
        let m = self.as_floats(b, m);
        let sqrt_half = self.f32(b, std::f32::consts::FRAC_1_SQRT_2);
        let small = b.ins().fcmp(FloatCC::LessThan, m, sqrt_half);
        // `e − small as i32`.
        let minus_small = self.minus_one_where(b, small);
        let e = b.ins().iadd(e, minus_small);
        let e = b.ins().fcvt_from_sint(self.0, e);
        let one = self.f32(b, 1.0);
        let twice = b.ins().fadd(m, m);
        let twice_less = b.ins().fsub(twice, one);
        let less = b.ins().fsub(m, one);
        let m = self.select(b, small, twice_less, less);
        let z = b.ins().fmul(m, m);
        let p = self.horner(
            b,
            m,
            &[(false, 7.037_683_6e-2), (true, 1.151_461_1e-1), (false, 1.167_699_9e-1), (true, 1.242_014_1e-1), (false, 1.424_932_3e-1), (true, 1.666_805_8e-1), (false, 2.000_071_4e-1), (true, 2.499_999_4e-1), (false, 3.333_333e-1)],
        );
        let mz = b.ins().fmul(m, z);
        let r = b.ins().fmul(mz, p);
        let lo = self.f32(b, -2.121_944_4e-4);
        let e_lo = b.ins().fmul(lo, e);
        let r = b.ins().fadd(r, e_lo);
        let minus_half = self.f32(b, -0.5);
        let half_z = b.ins().fmul(minus_half, z);
        let r = b.ins().fadd(r, half_z);
        let hi = self.f32(b, 0.693_359_4);
        let e_hi = b.ins().fmul(hi, e);
        let mr = b.ins().fadd(m, r);
        b.ins().fadd(mr, e_hi)
    }

    /// ln(1 + eˣ), linear above 20 (`fastmath::softplus`).
    pub(super) fn softplus(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let u = self.exp(b, x);
        let one = self.f32(b, 1.0);
        let w = b.ins().fadd(one, u);
        let ln_w = self.ln(b, w);
        let w_less = b.ins().fsub(w, one);
        let ratio = b.ins().fdiv(u, w_less);
        let log1p = b.ins().fmul(ln_w, ratio);
        let exact = b.ins().fcmp(FloatCC::Equal, w, one);
        let log1p = self.select(b, exact, u, log1p);
        let twenty = self.f32(b, 20.0);
        let linear = b.ins().fcmp(FloatCC::GreaterThan, x, twenty);
        self.select(b, linear, x, log1p)
    }

    /// x·σ(x) as `x / (1 + e^−x)` (`fastmath::silu`).
    pub(super) fn silu(&self, b: &mut FunctionBuilder, x: Value) -> Value {
        let minus_x = b.ins().fneg(x);
        let e = self.exp(b, minus_x);
        let one = self.f32(b, 1.0);
        let denominator = b.ins().fadd(one, e);
        b.ins().fdiv(x, denominator)
    }
}

/// The total of sixteen partial sums held as the lanes of four `f32x4` (partial `4·v + lane`
/// in vector v): `(s0 + s2) + (s1 + s3)` lane-wise, then [`lanes_then_zero`], as
/// `runtime::cpu::ssd` sums a state row's C·S.
pub(super) fn dot_total_16(b: &mut FunctionBuilder, sums: [Value; 4]) -> Value {
    let low = b.ins().fadd(sums[0], sums[2]);
    let high = b.ins().fadd(sums[1], sums[3]);
    let quads = b.ins().fadd(low, high);
    lanes_then_zero(b, quads)
}

/// The end of `runtime::cpu::linear::dot` over a multiple of 8 values whose eight partial sums
/// are the lanes of `sums[0]` (0-3) and `sums[1]` (4-7): (a0 + a4) + (a1 + a5) + (a2 + a6) +
/// (a3 + a7), left to right, plus its empty scalar tail's 0.0 (−0.0 + 0.0 is +0.0).
pub(super) fn dot_total(b: &mut FunctionBuilder, sums: [Value; 2]) -> Value {
    let pairs = b.ins().fadd(sums[0], sums[1]);
    lanes_then_zero(b, pairs)
}

/// The four lanes of `v` added left to right, then `+ 0.0`.
fn lanes_then_zero(b: &mut FunctionBuilder, v: Value) -> Value {
    let mut total = b.ins().extractlane(v, 0);
    for lane in 1..4u8 {
        let next = b.ins().extractlane(v, lane);
        total = b.ins().fadd(total, next);
    }
    let tail = b.ins().f32const(0.0);
    b.ins().fadd(total, tail)
}
