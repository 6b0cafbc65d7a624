//! CLIF of the quantized linear layer: `out[m, o] = act_scale · Σ_g scales[o, g] · Σ_{k∈g} x[m, k]·w[o, k]
//! + bias[o]`, with int8 activations and int8 or int4 weights, specialised to `in_dim` and `group`.
//!
//! One function serves decode (one row: a GEMV) and prefill (many rows: a GEMM). For each output
//! feature `o` it loads each block of weights once and multiplies it with four activation rows, so
//! prefill reads the weights a quarter as often; leftover rows go one at a time.
//!
//! The integer dot product is written as the exact widening tree
//! `iadd(iadd_pairwise(iadd_pairwise(swiden lo), iadd_pairwise(swiden hi)), acc)` over
//! `lo/hi = imul(swiden w, uwiden x)`, which cranelift folds into one `vpdpbusd` (x86-64 AVX-VNNI or
//! AVX-512 VNNI) or `usdot` (aarch64 I8MM), and lowers lane by lane elsewhere: the same exact i32
//! result everywhere. Activations therefore come offset to unsigned (`x + 128`) and the packed
//! corrections (see [`super::pack`]) take the offset back out. The float epilogue repeats the
//! reference's operations in its order (groups summed left to right from −0.0, then `· act_scale
//! + bias`, never fused), so the result is bit-identical to `runtime::cpu::quant::qlinear_i8`.
//!
//! Signature (all pointers to host memory, `rows`/`o_*` counts):
//! `fn(x_u8, w_packed, corrections, scales, bias, out, rows, o_begin, o_end, out_stride, act_scale)`,
//! writing `out[m · out_stride + (o − o_begin)]` for `m < rows`, `o_begin ≤ o < o_end`.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;

use super::function::build_function;
use super::KernelError;

/// Activation rows computed per weight load.
pub const ROW_BLOCK: usize = 4;

/// Largest reduction whose u8·s8 partial sums stay exact in i32 (255 · 128 · k < 2³¹).
pub const MAX_IN_DIM: usize = 1 << 16;

/// The dimensions a quantized linear kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QLinearSpec {
    /// Input features (the reduction length).
    pub in_dim: usize,
    /// Inputs sharing one weight scale; divides `in_dim`.
    pub group: usize,
    /// 8, or 4 (then `group` is a multiple of 32, the packing block).
    pub weight_bits: u8,
}

impl QLinearSpec {
    /// Rejects shapes this generator has no kernel for.
    pub fn check(&self) -> Result<(), KernelError> {
        let ok_dims = self.in_dim > 0 && self.in_dim <= MAX_IN_DIM && self.group > 0 && self.in_dim.is_multiple_of(self.group);
        let ok_bits = match self.weight_bits {
            8 => true,
            4 => self.group.is_multiple_of(32),
            _ => false,
        };
        if ok_dims && ok_bits {
            Ok(())
        } else {
            Err(KernelError::Unsupported(format!("{self:?}")))
        }
    }

    /// Bytes of one packed weight row.
    pub fn row_bytes(&self) -> usize {
        if self.weight_bits == 8 {
            self.in_dim
        } else {
            self.in_dim / 2
        }
    }

    /// Groups per weight row.
    pub fn groups(&self) -> usize {
        self.in_dim / self.group
    }

    /// The symbol the kernel is defined under.
    pub fn symbol(&self) -> String {
        format!("qlinear_w{}a8_k{}_g{}", self.weight_bits, self.in_dim, self.group)
    }
}

/// Builds the kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_qlinear(spec: &QLinearSpec, target: TargetFrontendConfig, order: DotOrder) -> Result<Function, KernelError> {
    spec.check()?;
    Ok(build_function(target, spec.symbol(), &[types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::I64, types::F32], |b, p| {
    let args = Args { x: p[0], w: p[1], corrections: p[2], scales: p[3], bias: p[4], out: p[5], rows: p[6], o_begin: p[7], out_stride: p[9], act_scale: p[10] };
    let o_end = p[8];
    counted_loop(b, args.o_begin, o_end, 1, &mut |b, o| {
        let last_block_start = b.ins().iadd_imm_s(args.rows, 1 - ROW_BLOCK as i64);
        let zero = b.ins().iconst(types::I64, 0);
        let m = counted_loop(b, zero, last_block_start, ROW_BLOCK as i64, &mut |b, m| emit_rows(b, spec, order, &args, o, m, ROW_BLOCK));
        counted_loop(b, m, args.rows, 1, &mut |b, m| emit_rows(b, spec, order, &args, o, m, 1));
    });
    }))
}

/// The kernel's parameters as SSA values of the entry block.
struct Args {
    x: Value,
    w: Value,
    corrections: Value,
    scales: Value,
    bias: Value,
    out: Value,
    rows: Value,
    o_begin: Value,
    out_stride: Value,
    act_scale: Value,
}

/// Loads from buffers the runtime has bounds-checked: they cannot trap.
fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Runs `body` over a weight group's `vectors` 16-byte weight vectors, `unroll` per call: once,
/// inline, when that is the whole group, else in a counted loop. `body` gets the weights' address
/// and the byte offset of the matching activations (`None`: the group's start).
pub(super) fn for_each_unrolled_block(
    b: &mut FunctionBuilder,
    vectors: usize,
    unroll: usize,
    inputs_per_vector: usize,
    w_group: Value,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value, Option<Value>),
) {
    if vectors == unroll {
        if vectors > 0 {
            body(b, w_group, None);
        }
    } else {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, (vectors * 16) as i64);
        counted_loop(b, start, end, (unroll * 16) as i64, &mut |b, w_byte| {
            let w_at = b.ins().iadd(w_group, w_byte);
            let x_byte = b.ins().imul_imm_s(w_byte, (inputs_per_vector / 16) as i64);
            body(b, w_at, Some(x_byte));
        });
    }
}

/// `for i in (start..end).step_by(step) { body(i) }` (signed compare); returns `i` at exit.
pub(super) fn counted_loop(b: &mut FunctionBuilder, start: Value, end: Value, step: i64, body: &mut dyn FnMut(&mut FunctionBuilder, Value)) -> Value {
    let header = b.create_block();
    let body_block = b.create_block();
    let exit = b.create_block();
    let i = b.append_block_param(header, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, end);
    b.ins().brif(more, body_block, &[], exit, &[]);
    b.switch_to_block(body_block);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(exit);
    i
}

/// The operand order in which the int8 dot-product tree is written. The products are the same
/// either way, but each backend folds the tree into one instruction only in its own order:
/// x86-64's `vpdpbusd` rule matches imul(signed, unsigned), aarch64's `usdot` rule
/// imul(unsigned, signed) (cranelift's lowering rules; `tests/cross_isa.rs` checks both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DotOrder {
    /// imul(signed weights, unsigned activations): x86-64 (and anything else).
    SignedFirst,
    /// imul(unsigned activations, signed weights): aarch64.
    UnsignedFirst,
}

impl DotOrder {
    /// The order that `isa`'s lowering folds into a dot-product instruction.
    pub fn for_isa(isa: &dyn cranelift_codegen::isa::TargetIsa) -> DotOrder {
        if isa.triple().architecture.to_string().starts_with("aarch64") {
            DotOrder::UnsignedFirst
        } else {
            DotOrder::SignedFirst
        }
    }
}

/// `acc + Σ w·x` over 16 lanes, 4 products per i32 lane: w signed, x unsigned (see the module doc).
pub(super) fn dot_accumulate(b: &mut FunctionBuilder, order: DotOrder, w: Value, x: Value, acc: Value) -> Value {
    let mul = |b: &mut FunctionBuilder, w: Value, x: Value| match order {
        DotOrder::SignedFirst => b.ins().imul(w, x),
        DotOrder::UnsignedFirst => b.ins().imul(x, w),
    };
    let w_lo = b.ins().swiden_low(w);
    let x_lo = b.ins().uwiden_low(x);
    let lo = mul(b, w_lo, x_lo);
    let w_hi = b.ins().swiden_high(w);
    let x_hi = b.ins().uwiden_high(x);
    let hi = mul(b, w_hi, x_hi);
    let lo_lo = b.ins().swiden_low(lo);
    let lo_hi = b.ins().swiden_high(lo);
    let lo_sum = b.ins().iadd_pairwise(lo_lo, lo_hi);
    let hi_lo = b.ins().swiden_low(hi);
    let hi_hi = b.ins().swiden_high(hi);
    let hi_sum = b.ins().iadd_pairwise(hi_lo, hi_hi);
    let sum = b.ins().iadd_pairwise(lo_sum, hi_sum);
    b.ins().iadd(sum, acc)
}

/// Computes `out[m + r, o]` for `r < rows` (a compile-time count).
fn emit_rows(b: &mut FunctionBuilder, spec: &QLinearSpec, order: DotOrder, a: &Args, o: Value, m: Value, rows: usize) {
    let groups = spec.groups() as i64;
    let row_bytes = spec.row_bytes() as i64;
    let w_row = {
        let off = b.ins().imul_imm_s(o, row_bytes);
        b.ins().iadd(a.w, off)
    };
    // Index of (o, g = 0) in the [out_dim, groups] tables.
    let group_base = b.ins().imul_imm_s(o, groups);
    let x_rows: Vec<Value> = (0..rows)
        .map(|r| {
            let row = b.ins().iadd_imm_s(m, r as i64);
            let off = b.ins().imul_imm_s(row, spec.in_dim as i64);
            b.ins().iadd(a.x, off)
        })
        .collect();
    let neg_zero = b.ins().f32const(Ieee32::with_float(-0.0));
    let sums: Vec<_> = (0..rows)
        .map(|_| {
            let v = b.declare_var(types::F32);
            b.def_var(v, neg_zero);
            v
        })
        .collect();
    let g_start = b.ins().iconst(types::I64, 0);
    let g_end = b.ins().iconst(types::I64, groups);
    counted_loop(b, g_start, g_end, 1, &mut |b, g| {
        let dots = emit_group_dots(b, spec, order, w_row, &x_rows, g);
        let table_index = b.ins().iadd(group_base, g);
        let table_off = b.ins().imul_imm_s(table_index, 4);
        let corr_addr = b.ins().iadd(a.corrections, table_off);
        let correction = b.ins().load(types::I32, mem(), corr_addr, 0);
        let scale_addr = b.ins().iadd(a.scales, table_off);
        let scale = b.ins().load(types::F32, mem(), scale_addr, 0);
        for (dot, sum) in dots.into_iter().zip(&sums) {
            let exact = b.ins().isub(dot, correction);
            let as_float = b.ins().fcvt_from_sint(types::F32, exact);
            let term = b.ins().fmul(scale, as_float);
            let old = b.use_var(*sum);
            let new = b.ins().fadd(old, term);
            b.def_var(*sum, new);
        }
    });
    let bias_off = b.ins().imul_imm_s(o, 4);
    let bias_addr = b.ins().iadd(a.bias, bias_off);
    let bias = b.ins().load(types::F32, mem(), bias_addr, 0);
    let column = b.ins().isub(o, a.o_begin);
    for (r, sum) in sums.iter().enumerate() {
        let total = b.use_var(*sum);
        let scaled = b.ins().fmul(total, a.act_scale);
        let y = b.ins().fadd(scaled, bias);
        let row = b.ins().iadd_imm_s(m, r as i64);
        let row_start = b.ins().imul(row, a.out_stride);
        let index = b.ins().iadd(row_start, column);
        let off = b.ins().imul_imm_s(index, 4);
        let addr = b.ins().iadd(a.out, off);
        b.ins().store(mem(), y, addr, 0);
    }
}

/// Most weight vectors loaded per inner-loop iteration: the loop body is unrolled this far, with
/// constant address offsets, and alternates two accumulators per row to hide the dot latency.
const MAX_UNROLL: usize = 8;

/// Σ_{k∈g} (x[r, k] + 128) · w[o, k] as i32, for each row pointer in `x_rows`.
fn emit_group_dots(b: &mut FunctionBuilder, spec: &QLinearSpec, order: DotOrder, w_row: Value, x_rows: &[Value], g: Value) -> Vec<Value> {
    let group_w_bytes = (spec.group * spec.row_bytes() / spec.in_dim) as i64;
    let w_group = {
        let off = b.ins().imul_imm_s(g, group_w_bytes);
        b.ins().iadd(w_row, off)
    };
    let x_off = b.ins().imul_imm_s(g, spec.group as i64);
    let x_group: Vec<Value> = x_rows.iter().map(|x| b.ins().iadd(*x, x_off)).collect();
    let zero = b.ins().iconst(types::I32, 0);
    let zero_vec = b.ins().splat(types::I32X4, zero);
    let accs: Vec<[_; 2]> = x_group
        .iter()
        .map(|_| {
            [(); 2].map(|_| {
                let v = b.declare_var(types::I32X4);
                b.def_var(v, zero_vec);
                v
            })
        })
        .collect();
    // Each weight vector (16 bytes) covers 16 int8 or 32 int4 inputs.
    let inputs_per_vector = if spec.weight_bits == 8 { 16 } else { 32 };
    let vectors = spec.group / inputs_per_vector;
    let unroll = (1..=MAX_UNROLL.min(vectors)).rev().find(|u| vectors.is_multiple_of(*u)).unwrap_or(1);
    let body = |b: &mut FunctionBuilder, w_at: Value, x_at: &[Value]| {
        for u in 0..unroll {
            let packed = b.ins().load(types::I8X16, mem(), w_at, 16 * u as i32);
            let weight_vectors = if spec.weight_bits == 8 { vec![packed] } else { unpack_int4(b, packed) };
            for (x, acc) in x_at.iter().zip(&accs) {
                for (half, w) in weight_vectors.iter().enumerate() {
                    let xv = b.ins().load(types::I8X16, mem(), *x, (inputs_per_vector * u + 16 * half) as i32);
                    let which = acc[(u + half) % 2];
                    let old = b.use_var(which);
                    let new = dot_accumulate(b, order, *w, xv, old);
                    b.def_var(which, new);
                }
            }
        }
    };
    for_each_unrolled_block(b, vectors, unroll, inputs_per_vector, w_group, &mut |b, w_at, x_byte| match x_byte {
        None => body(b, w_at, &x_group),
        Some(x_byte) => {
            let x_at: Vec<Value> = x_group.iter().map(|x| b.ins().iadd(*x, x_byte)).collect();
            body(b, w_at, &x_at);
        }
    });
    // 8-bit groups whose length is not a multiple of 16 end with scalar products.
    let tail_start = (vectors * inputs_per_vector) as i32;
    let w_tail: Vec<Value> = (tail_start..spec.group as i32).map(|k| b.ins().sload8(types::I32, mem(), w_group, k)).collect();
    x_group
        .iter()
        .zip(&accs)
        .map(|(x, [acc0, acc1])| {
            let a0 = b.use_var(*acc0);
            let a1 = b.use_var(*acc1);
            let v = b.ins().iadd(a0, a1);
            let mut dot = b.ins().extractlane(v, 0);
            for lane in 1..4 {
                let l = b.ins().extractlane(v, lane);
                dot = b.ins().iadd(dot, l);
            }
            for (k, w) in (tail_start..).zip(&w_tail) {
                let xk = b.ins().uload8(types::I32, mem(), *x, k);
                let prod = b.ins().imul(xk, *w);
                dot = b.ins().iadd(dot, prod);
            }
            dot
        })
        .collect()
}

/// The two i8x16 halves of a packed 32-weight block: low nibbles, then high nibbles, each − 8.
fn unpack_int4(b: &mut FunctionBuilder, packed: Value) -> Vec<Value> {
    let mask = b.ins().iconst(types::I8, 0x0F);
    let mask = b.ins().splat(types::I8X16, mask);
    let eight = b.ins().iconst(types::I8, 8);
    let eight = b.ins().splat(types::I8X16, eight);
    let four = b.ins().iconst(types::I32, 4);
    let low = b.ins().band(packed, mask);
    let high = b.ins().ushr(packed, four);
    vec![b.ins().isub(low, eight), b.ins().isub(high, eight)]
}
