//! CLIF of the decode (one activation row) quantized linear layer, four output features at a time.
//!
//! Same result as [`super::qlinear`] (`out[o] = act_scale · Σ_g scales[o, g] · Σ_{k∈g} x[k]·w[o, k]
//! + bias[o]`, bit-identical to `runtime::cpu::quant::qlinear_i8`), laid out for one row:
//!
//! - a *tile* of four output features shares every activation load, and keeps two accumulators
//!   per feature so the dot-product chains are short;
//! - the per-group epilogue runs on the four features at once: three `iadd_pairwise` (`phaddd`)
//!   reduce the four accumulators to one `i32x4` of dots, then one subtraction, conversion,
//!   multiplication and addition per group instead of four scalar ones (the tied head's 32-wide
//!   groups made that epilogue a third of the general kernel's time). Each lane repeats the
//!   reference's scalar operations in its order, so vectorising across features changes no bit;
//! - 4-bit weights are not re-centred: the nibbles `n = w + 8` are the *unsigned* operand and the
//!   activations the signed one (`Σ x·n = Σ x·w + 8·Σ x`), and the caller passes `8 · Σ_{k∈g} x[k]`
//!   per group as the correction (one row: computed once for all features). The high nibbles are
//!   not even shifted down: `byte & 0xF0 = 16·n`, so their accumulator holds 16× its dot, a
//!   multiple of 16 that an arithmetic shift divides exactly. Unpacking 32 weights is two masks. 8-bit weights keep the general kernel's form (activations offset to
//!   unsigned, corrections `128 · Σ_{k∈g} w[o, k]` per feature and group).
//!
//! Tables are tiled for vector loads: `scales` and the 8-bit `corrections` are `[tiles, groups, 4]`.
//! Only whole tiles are computed: the caller runs the last `out_dim % 4` features on the general
//! kernel.
//!
//! Signature: `fn(x, w_packed, corrections, scales_tiled, bias, out, tile_begin, tile_end, act_scale)`,
//! writing `out[4 · (t − tile_begin) + j] = y[4t + j]` for `tile_begin ≤ t < tile_end`, `j < 4`.
//! `x` is the row as `x + 128` (8-bit weights) or as its int8 bytes (4-bit weights).

use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};

use super::qlinear::{counted_loop, dot_accumulate, for_each_unrolled_block, DotOrder, QLinearSpec};
use super::function::build_function;
use super::KernelError;

/// Output features per tile.
pub const TILE: usize = 4;

/// Whether `spec` has a decode kernel: 8-bit groups must fill whole 16-lane vectors.
pub fn qgemv_supported(spec: &QLinearSpec) -> bool {
    spec.check().is_ok() && (spec.weight_bits == 4 || spec.group.is_multiple_of(16))
}

/// The symbol the decode kernel of `spec` is defined under.
pub fn qgemv_symbol(spec: &QLinearSpec) -> String {
    format!("qgemv_w{}a8_k{}_g{}", spec.weight_bits, spec.in_dim, spec.group)
}

fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Builds the decode kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_qgemv(spec: &QLinearSpec, target: TargetFrontendConfig, order: DotOrder) -> Result<Function, KernelError> {
    if !qgemv_supported(spec) {
        return Err(KernelError::Unsupported(format!("no decode kernel for {spec:?}")));
    }
    Ok(build_function(target, qgemv_symbol(spec), &[types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::F32], |b, p| {
    let (x, w, corrections, scales, bias, out, tile_begin, tile_end, act_scale) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
    let act_scale = b.ins().splat(types::F32X4, act_scale);
    // The two nibble masks of packed 4-bit weights (unused by 8-bit kernels, which load weights as they are).
    let nibble_masks = (spec.weight_bits == 4).then(|| {
        [0x0F, 0xF0u8 as i8 as i64].map(|m| {
            let m = b.ins().iconst(types::I8, m);
            b.ins().splat(types::I8X16, m)
        })
    });
    let groups = spec.groups() as i64;
    let row_bytes = spec.row_bytes() as i64;
    let group_bytes = (spec.group * spec.row_bytes() / spec.in_dim) as i64;
    counted_loop(b, tile_begin, tile_end, 1, &mut |b, t| {
        let w_tile = {
            let off = b.ins().imul_imm_s(t, TILE as i64 * row_bytes);
            b.ins().iadd(w, off)
        };
        // Byte offset of (t, g = 0, lane 0) in the [tiles, groups, 4] tables.
        let table_tile = b.ins().imul_imm_s(t, groups * TILE as i64 * 4);
        let neg_zero = b.ins().f32const(Ieee32::with_float(-0.0));
        let neg_zero = b.ins().splat(types::F32X4, neg_zero);
        let sum = b.declare_var(types::F32X4);
        b.def_var(sum, neg_zero);
        let g_start = b.ins().iconst(types::I64, 0);
        let g_end = b.ins().iconst(types::I64, groups);
        counted_loop(b, g_start, g_end, 1, &mut |b, g| {
            let w_off = b.ins().imul_imm_s(g, group_bytes);
            let w_group = b.ins().iadd(w_tile, w_off);
            let x_off = b.ins().imul_imm_s(g, spec.group as i64);
            let x_group = b.ins().iadd(x, x_off);
            let dots = emit_tile_dots(b, spec, order, w_group, x_group, row_bytes, nibble_masks);
            let corr = if spec.weight_bits == 8 {
                let off = b.ins().imul_imm_s(g, TILE as i64 * 4);
                let off = b.ins().iadd(table_tile, off);
                let at = b.ins().iadd(corrections, off);
                b.ins().load(types::I32X4, mem(), at, 0)
            } else {
                let off = b.ins().imul_imm_s(g, 4);
                let at = b.ins().iadd(corrections, off);
                let c = b.ins().load(types::I32, mem(), at, 0);
                b.ins().splat(types::I32X4, c)
            };
            let exact = b.ins().isub(dots, corr);
            let as_float = b.ins().fcvt_from_sint(types::F32X4, exact);
            let scale_off = b.ins().imul_imm_s(g, TILE as i64 * 4);
            let scale_off = b.ins().iadd(table_tile, scale_off);
            let scale_at = b.ins().iadd(scales, scale_off);
            let scale = b.ins().load(types::F32X4, mem(), scale_at, 0);
            let term = b.ins().fmul(scale, as_float);
            let old = b.use_var(sum);
            let new = b.ins().fadd(old, term);
            b.def_var(sum, new);
        });
        let total = b.use_var(sum);
        let scaled = b.ins().fmul(total, act_scale);
        let bias_off = b.ins().imul_imm_s(t, TILE as i64 * 4);
        let bias_at = b.ins().iadd(bias, bias_off);
        let bias_v = b.ins().load(types::F32X4, mem(), bias_at, 0);
        let y = b.ins().fadd(scaled, bias_v);
        let column = b.ins().isub(t, tile_begin);
        let out_off = b.ins().imul_imm_s(column, TILE as i64 * 4);
        let out_at = b.ins().iadd(out, out_off);
        b.ins().store(mem(), y, out_at, 0);
    });
    }))
}

/// 16-byte weight vectors per feature in one loop body: 2 for 8-bit weights, 1 for 4-bit (two
/// products each). Cranelift issues a body's loads before its arithmetic, so a longer body keeps
/// more vectors live than the 16 XMM registers hold and spills them.
fn unroll(spec: &QLinearSpec) -> usize {
    if spec.weight_bits == 8 {
        2
    } else {
        1
    }
}

/// The four features' exact group dots (before the correction) as one `i32x4`, lane j = feature j.
fn emit_tile_dots(b: &mut FunctionBuilder, spec: &QLinearSpec, order: DotOrder, w_group: Value, x_group: Value, row_bytes: i64, nibble_masks: Option<[Value; 2]>) -> Value {
    let zero = b.ins().iconst(types::I32, 0);
    let zero = b.ins().splat(types::I32X4, zero);
    // Two accumulators per feature: consecutive products alternate between them.
    let accs: Vec<[Variable; 2]> = (0..TILE)
        .map(|_| {
            [(); 2].map(|_| {
                let v = b.declare_var(types::I32X4);
                b.def_var(v, zero);
                v
            })
        })
        .collect();
    let vectors = spec.group * spec.row_bytes() / spec.in_dim / 16;
    let inputs_per_vector = if spec.weight_bits == 8 { 16 } else { 32 };
    let unroll = (1..=unroll(spec).min(vectors)).rev().find(|u| vectors.is_multiple_of(*u)).unwrap_or(1);
    let body = |b: &mut FunctionBuilder, w_at: Value, x_at: Value| {
        for u in 0..unroll {
            let w_off = |j: usize| (j as i64 * row_bytes + 16 * u as i64) as i32;
            let accumulate = |b: &mut FunctionBuilder, var: Variable, signed: Value, unsigned: Value| {
                let old = b.use_var(var);
                let new = dot_accumulate(b, order, signed, unsigned, old);
                b.def_var(var, new);
            };
            if spec.weight_bits == 8 {
                let xv = b.ins().load(types::I8X16, mem(), x_at, 16 * u as i32);
                for (j, acc) in accs.iter().enumerate() {
                    let wv = b.ins().load(types::I8X16, mem(), w_at, w_off(j));
                    accumulate(b, acc[u % 2], wv, xv);
                }
            } else if let Some([low_mask, high_mask]) = nibble_masks {
                let x_low = b.ins().load(types::I8X16, mem(), x_at, 32 * u as i32);
                let x_high = b.ins().load(types::I8X16, mem(), x_at, 32 * u as i32 + 16);
                for (j, acc) in accs.iter().enumerate() {
                    let packed = b.ins().load(types::I8X16, mem(), w_at, w_off(j));
                    let low = b.ins().band(packed, low_mask);
                    let high_times_16 = b.ins().band(packed, high_mask);
                    accumulate(b, acc[0], x_low, low);
                    accumulate(b, acc[1], x_high, high_times_16);
                }
            }
        }
    };
    for_each_unrolled_block(b, vectors, unroll, inputs_per_vector, w_group, &mut |b, w_at, x_byte| {
        let x_at = match x_byte {
            None => x_group,
            Some(x_byte) => b.ins().iadd(x_group, x_byte),
        };
        body(b, w_at, x_at);
    });
    let sums: Vec<Value> = accs
        .iter()
        .map(|[a, c]| {
            let a = b.use_var(*a);
            let c = b.use_var(*c);
            // 4-bit: the second accumulator holds 16 × the high nibbles' dot (exact division).
            let c = if spec.weight_bits == 4 { b.ins().sshr_imm_u(c, 4) } else { c };
            b.ins().iadd(a, c)
        })
        .collect();
    let s01 = b.ins().iadd_pairwise(sums[0], sums[1]);
    let s23 = b.ins().iadd_pairwise(sums[2], sums[3]);
    b.ins().iadd_pairwise(s01, s23)
}
