//! CLIF of the Mamba2 SSD decode step over a range of heads of one sequence, specialised to the
//! head size, state size and heads per group.
//!
//! Per head h (group g) and row i of its state: y[i] = decay·(C·S[i]) + D·x[i], then
//! y[i] += w·x[i], then S[i] ← S[i]·decay + (Δ·x[i])·B — the operations of
//! `runtime::cpu::ssd::ssd_step_heads` in its order (C·S in sixteen partial sums, the lanes of four
//! vectors, totalled by [`vmath::dot_total_16`]), so the result is bit-identical.
//! The per-head scalars (decay = e^(Δ·A), Δ, w = (C·B)·Δ, D) use libm's exp and log1p, so the
//! caller computes them, as the Rust step does, and passes them in.
//!
//! One pass per state row: each `f32x4` of the row is loaded once, multiplied into C·S and
//! updated.
//!
//! Signature: `fn(x, b, c: *const f32, head_scalars: *const f32, state: *mut f32, y: *mut f32,
//! first_head: i64, end_head: i64)`: `x`, `b`, `c` point at the sequence's rows, `head_scalars`
//! at four values per head of the whole row (decay, Δ, w, D), `state` at the first head's
//! `[head_dim, d_state]` block and `y` at its first output.

use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData};
use cranelift_codegen::isa::TargetFrontendConfig;

use super::function::build_function;
use super::qlinear::counted_loop;
use super::vmath;
use super::KernelError;

/// The dimensions an SSD step kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SsdStepSpec {
    /// Rows of a head's state (and outputs of the head).
    pub head_dim: usize,
    /// Columns of a head's state (a multiple of 8, the partial sums of C·S).
    pub d_state: usize,
    /// Heads sharing one group's B and C.
    pub heads_per_group: usize,
}

impl SsdStepSpec {
    /// The symbol the kernel is defined under.
    pub fn symbol(&self) -> String {
        format!("ssd_step_p{}_n{}_hg{}", self.head_dim, self.d_state, self.heads_per_group)
    }
}

fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Builds the kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_ssd_step(spec: &SsdStepSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    let SsdStepSpec { head_dim, d_state, heads_per_group } = *spec;
    if head_dim == 0 || heads_per_group == 0 || d_state == 0 || !d_state.is_multiple_of(8) || d_state > 1024 || head_dim > 1 << 16 {
        return Err(KernelError::Unsupported(format!("SSD step {spec:?} (d_state a multiple of 8 up to 1024 is)")));
    }
    let vectors = d_state / 4;
    let row_bytes = (d_state * 4) as i64;
    Ok(build_function(target, spec.symbol(), &[types::I64; 8], |b, p| {
        let (x, bp, cp, scalars, state, y, first, end) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
        let k = vmath::Lanes::VECTOR;
        counted_loop(b, first, end, 1, &mut |b, h| {
            let local = b.ins().isub(h, first);
            let group = b.ins().udiv_imm_u(h, heads_per_group as i64);
            let group_off = b.ins().imul_imm_s(group, row_bytes);
            let (bs, cs) = (b.ins().iadd(bp, group_off), b.ins().iadd(cp, group_off));
            let scalar_at = {
                let off = b.ins().imul_imm_s(h, 16);
                b.ins().iadd(scalars, off)
            };
            let [decay, delta, w, d] = [0, 4, 8, 12].map(|o| b.ins().load(types::F32, mem(), scalar_at, o));
            let decay_v = b.ins().splat(types::F32X4, decay);
            let x_head = {
                let off = b.ins().imul_imm_s(h, (head_dim * 4) as i64);
                b.ins().iadd(x, off)
            };
            let state_head = {
                let off = b.ins().imul_imm_s(local, head_dim as i64 * row_bytes);
                b.ins().iadd(state, off)
            };
            let y_head = {
                let off = b.ins().imul_imm_s(local, (head_dim * 4) as i64);
                b.ins().iadd(y, off)
            };
            let zero = b.ins().iconst(types::I64, 0);
            let rows = b.ins().iconst(types::I64, head_dim as i64);
            counted_loop(b, zero, rows, 1, &mut |b, i| {
                let x_off = b.ins().imul_imm_s(i, 4);
                let x_at = b.ins().iadd(x_head, x_off);
                let xv = b.ins().load(types::F32, mem(), x_at, 0);
                let wx = b.ins().fmul(delta, xv);
                let wx_v = b.ins().splat(types::F32X4, wx);
                let row_off = b.ins().imul_imm_s(i, row_bytes);
                let row = b.ins().iadd(state_head, row_off);
                let zeros = k.f32(b, 0.0);
                let mut sums = [zeros; 4];
                for v in 0..vectors {
                    let off = 16 * v as i32;
                    let s_v = b.ins().load(types::F32X4, mem(), row, off);
                    let c_v = b.ins().load(types::F32X4, mem(), cs, off);
                    let b_v = b.ins().load(types::F32X4, mem(), bs, off);
                    let product = b.ins().fmul(s_v, c_v);
                    sums[v % 4] = b.ins().fadd(sums[v % 4], product);
                    let kept = b.ins().fmul(s_v, decay_v);
                    let input = b.ins().fmul(wx_v, b_v);
                    let s_new = b.ins().fadd(kept, input);
                    b.ins().store(mem(), s_new, row, off);
                }
                let dot = vmath::dot_total_16(b, sums);
                let decayed = b.ins().fmul(decay, dot);
                let skip = b.ins().fmul(d, xv);
                let out = b.ins().fadd(decayed, skip);
                let direct = b.ins().fmul(w, xv);
                let out = b.ins().fadd(out, direct);
                let y_at = b.ins().iadd(y_head, x_off);
                b.ins().store(mem(), out, y_at, 0);
            });
        });
    }))
}
