//! CLIF of the Mamba1 selective-scan step (one token) over a block of channels, specialised to
//! the state size.
//!
//! Per channel d and state n: Δ = softplus(dt[d]), h[d,n] ← exp(Δ·A[d,n])·h[d,n] + (Δ·B[n])·x[d],
//! y[d] = C·h[d] + D[d]·x[d] — the operations of `runtime::cpu::scan::selective_scan_channels`
//! in its order, so the result is bit-identical to it: the states of a channel are `f32x4`
//! lanes; the softplus of four channels' dt is one vector ([`super::vmath`]); C·h is summed like
//! `runtime::cpu::linear::dot` (eight partial sums, lanes of two vectors, then left to right).
//!
//! Where it runs: the runtime times it against the Rust loop once per shape at load
//! (`runtime::jit::generated_is_faster`). On x86-64 with AVX2 the Rust loop, compiled for eight
//! lanes, wins (26.8 against 46.3 µs per 1024 × 16 step); where both are four lanes wide
//! (aarch64's NEON, x86-64 without AVX2) this kernel, with the state size a constant and its
//! loop unrolled, can.
//!
//! Signature: `fn(x, dt, b, c, a, d: *const f32, state: *mut f32, y: *mut f32, groups: i64)`:
//! `groups` blocks of four channels; `x`, `dt`, `d`, `y` point at the first channel's value,
//! `a` and `state` at its row of `d_state` values, `b` and `c` at the token's rows.

use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;

use super::function::build_function;
use super::qlinear::counted_loop;
use super::vmath;
use super::KernelError;

/// Channels per step of the kernel's loop (the lanes of one softplus).
pub const SCAN_CHANNEL_BLOCK: usize = 4;

/// The dimensions a selective-scan step kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanSpec {
    /// States per channel (a multiple of 8, the partial sums of C·h).
    pub d_state: usize,
}

impl ScanSpec {
    /// The symbol the kernel is defined under.
    pub fn symbol(&self) -> String {
        format!("selective_scan_step_n{}", self.d_state)
    }
}

fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Builds the kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_selective_scan_step(spec: &ScanSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    if spec.d_state == 0 || !spec.d_state.is_multiple_of(8) || spec.d_state > 256 {
        return Err(KernelError::Unsupported(format!("selective scan with d_state {} (a multiple of 8 up to 256 is)", spec.d_state)));
    }
    let vectors = spec.d_state / 4;
    let row_bytes = (spec.d_state * 4) as i64;
    Ok(build_function(target, spec.symbol(), &[types::I64; 9], |b, p| {
        let (x, dt, bp, cp, a, d, state, y, groups) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
        let k = vmath::Lanes::VECTOR;
        let zero = b.ins().iconst(types::I64, 0);
        counted_loop(b, zero, groups, 1, &mut |b, g| {
            let first = b.ins().imul_imm_s(g, SCAN_CHANNEL_BLOCK as i64);
            let at = |b: &mut cranelift_frontend::FunctionBuilder, base: Value, bytes: i64| {
                let off = b.ins().imul_imm_s(first, bytes);
                b.ins().iadd(base, off)
            };
            let dt_at = at(b, dt, 4);
            let dts = b.ins().load(types::F32X4, mem(), dt_at, 0);
            let deltas = k.softplus(b, dts);
            let (x_at, d_at, y_at) = (at(b, x, 4), at(b, d, 4), at(b, y, 4));
            let (a_at, state_at) = (at(b, a, row_bytes), at(b, state, row_bytes));
            for j in 0..SCAN_CHANNEL_BLOCK as u8 {
                let delta = b.ins().extractlane(deltas, j);
                let delta_v = b.ins().splat(types::F32X4, delta);
                let xv = b.ins().load(types::F32, mem(), x_at, 4 * j as i32);
                let xv_v = b.ins().splat(types::F32X4, xv);
                let row = j as i32 * row_bytes as i32;
                // Partial sums of C·h: lanes 0-3 and 4-7 of `dot`'s eight accumulators.
                let zeros = k.f32(b, 0.0);
                let mut sums = [zeros, zeros];
                for k_vec in 0..vectors {
                    let off = 16 * k_vec as i32;
                    let a_k = b.ins().load(types::F32X4, mem(), a_at, row + off);
                    let delta_a = b.ins().fmul(delta_v, a_k);
                    let decay = k.exp(b, delta_a);
                    let h_k = b.ins().load(types::F32X4, mem(), state_at, row + off);
                    let b_k = b.ins().load(types::F32X4, mem(), bp, off);
                    let c_k = b.ins().load(types::F32X4, mem(), cp, off);
                    let kept = b.ins().fmul(decay, h_k);
                    let delta_b = b.ins().fmul(delta_v, b_k);
                    let input = b.ins().fmul(delta_b, xv_v);
                    let h_new = b.ins().fadd(kept, input);
                    b.ins().store(mem(), h_new, state_at, row + off);
                    let product = b.ins().fmul(c_k, h_new);
                    sums[k_vec % 2] = b.ins().fadd(sums[k_vec % 2], product);
                }
                let total = vmath::dot_total(b, sums);
                let d_j = b.ins().load(types::F32, mem(), d_at, 4 * j as i32);
                let skip = b.ins().fmul(d_j, xv);
                let out = b.ins().fadd(total, skip);
                b.ins().store(mem(), out, y_at, 4 * j as i32);
            }
        });
    }))
}
