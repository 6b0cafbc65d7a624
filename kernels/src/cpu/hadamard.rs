//! CLIF of the orthonormal Walsh–Hadamard transform of rows (`runtime::hadamard::hadamard_row`),
//! specialised to the row width.
//!
//! A row of `width = 2ᵏ·m` (m odd) is `m` blocks of `n = 2ᵏ` values, each transformed by the
//! unnormalised fast transform and then multiplied by `1/√n` (computed as the reference does,
//! `1.0 / (n as f32).sqrt()`, and embedded as a constant).
//!
//! # Bit-identical to the reference, in fewer passes
//!
//! Every butterfly is `(a, b) ↦ (a + b, a − b)` on the same operands as the reference's, so
//! every value is the same however the butterflies are scheduled; only the dataflow matters.
//! That leaves the schedule free:
//!
//! - the first two stages (distances 1 and 2) run inside each `f32x4` with lane shuffles
//!   (cranelift shuffles `i8x16`, hence the bitcasts): `[q0,q0,q2,q2] ± [q1,q1,q3,q3]` gives
//!   `a, c` and `b, d`; interleaving them gives `[a,b,a,b]` and `[c,d,c,d]`, whose sum and
//!   difference hold the four outputs (one `pshufd` pair, `punpck{l,h}dq`, one `shufps` on x86-64);
//! - the later stages pair whole vectors. Up to three of them run per pass over the block on
//!   eight vectors held in registers (a radix-8 pass), so a 1024-value block takes three passes
//!   through memory instead of the reference's nine; the first pass also does the in-vector
//!   stages and the last one the normalisation.
//!
//! Blocks of one or two values (odd widths, or twice odd) run on scalars.
//!
//! # Signature
//!
//! `fn(x: *const f32, out: *mut f32, rows: i64)`, both `[rows, width]`. It may run in place
//! (`out == x`): each pass reads a group of values before writing the same ones, and the groups
//! of a pass are disjoint. Partially overlapping buffers are not allowed.

use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{types, ConstantData, Endianness, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;

use super::function::build_function;
use super::rows::{for_each_lane_group, for_each_row, load, store};
use super::qlinear::counted_loop;
use super::quantize::mem;
use super::KernelError;

/// The shape a Hadamard kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HadamardSpec {
    /// Values per row (blocks of its largest power-of-two factor).
    pub width: usize,
}

impl HadamardSpec {
    /// The symbol the kernel is defined under.
    pub fn symbol(&self) -> String {
        format!("hadamard_w{}", self.width)
    }

    /// Values per Walsh–Hadamard block: the largest power of two dividing `width`.
    pub fn block(&self) -> usize {
        1 << self.width.trailing_zeros()
    }
}

/// Most whole-vector stages per pass: eight vectors and their temporaries fit the 16 vector
/// registers of x86-64 without AVX-512 (aarch64 has 32).
const MAX_STAGES_PER_PASS: usize = 3;

/// Builds the kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_hadamard(spec: &HadamardSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    if spec.width == 0 || spec.width > i32::MAX as usize / 8 {
        return Err(KernelError::Unsupported(format!("{spec:?}")));
    }
    let (width, block) = (spec.width, spec.block());
    let norm = 1.0f32 / (block as f32).sqrt();
    Ok(build_function(target, spec.symbol(), &[types::I64; 3], |b, p| {
        let (x, out, rows) = (p[0], p[1], p[2]);
        let norm = b.ins().f32const(Ieee32::with_float(norm));
        let norm_vec = b.ins().splat(types::F32X4, norm);
        for_each_row(b, rows, &[(x, width * 4), (out, width * 4)], &mut |b, row| {
            let (x_row, out_row) = (row[0], row[1]);
            match block {
                1 => scale_only(b, x_row, out_row, width, norm, norm_vec),
                2 => pairs(b, x_row, out_row, width, norm),
                _ => {
                    let start = b.ins().iconst(types::I64, 0);
                    let end = b.ins().iconst(types::I64, (width * 4) as i64);
                    counted_loop(b, start, end, (block * 4) as i64, &mut |b, block_byte| {
                        let (x_block, out_block) = (b.ins().iadd(x_row, block_byte), b.ins().iadd(out_row, block_byte));
                        transform_block(b, x_block, out_block, block, norm_vec);
                    });
                }
            }
        });
    }))
}

/// Blocks of one value: `out = x · 1/√1`, the reference's multiplication included.
fn scale_only(b: &mut FunctionBuilder, x: Value, out: Value, len: usize, norm: Value, norm_vec: Value) {
    for_each_lane_group(b, len, &mut |b, ty, index, lane| {
        let v = load(b, ty, x, index, lane);
        let v = b.ins().fmul(v, if ty.is_vector() { norm_vec } else { norm });
        store(b, v, out, index, lane);
    });
}

/// Blocks of two values: `(a + b, a − b) · 1/√2`.
fn pairs(b: &mut FunctionBuilder, x: Value, out: Value, len: usize, norm: Value) {
    let start = b.ins().iconst(types::I64, 0);
    let end = b.ins().iconst(types::I64, (len * 4) as i64);
    counted_loop(b, start, end, 8, &mut |b, byte| {
        let (x_at, out_at) = (b.ins().iadd(x, byte), b.ins().iadd(out, byte));
        let (first, second) = (b.ins().load(types::F32, mem(), x_at, 0), b.ins().load(types::F32, mem(), x_at, 4));
        let (sum, difference) = (b.ins().fadd(first, second), b.ins().fsub(first, second));
        let (sum, difference) = (b.ins().fmul(sum, norm), b.ins().fmul(difference, norm));
        b.ins().store(mem(), sum, out_at, 0);
        b.ins().store(mem(), difference, out_at, 4);
    });
}

/// One block of `n ≥ 4` values from `x` into `out`: passes of up to [`MAX_STAGES_PER_PASS`]
/// whole-vector stages, the first with the in-vector stages, the last with the normalisation.
fn transform_block(b: &mut FunctionBuilder, x: Value, out: Value, n: usize, norm: Value) {
    let vectors = n / 4;
    let stages = vectors.trailing_zeros() as usize;
    let mut first_stage = 0;
    loop {
        let count = (stages - first_stage).min(MAX_STAGES_PER_PASS);
        let last = first_stage + count == stages;
        // A group is `radix` vectors `distance` apart; a pass covers the block with groups.
        let (radix, distance) = (1usize << count, 1usize << first_stage);
        let source = if first_stage == 0 { x } else { out };
        let pass = &mut |b: &mut FunctionBuilder, at: Value| {
            let (src, dst) = (b.ins().iadd(source, at), b.ins().iadd(out, at));
            let mut v: Vec<Value> = (0..radix).map(|j| b.ins().load(types::F32X4, mem(), src, (16 * j * distance) as i32)).collect();
            if first_stage == 0 {
                for v in v.iter_mut() {
                    *v = in_vector_stages(b, *v);
                }
            }
            for stage in 0..count {
                let h = 1 << stage;
                for j in (0..radix).filter(|j| j & h == 0) {
                    let (lo, hi) = (v[j], v[j + h]);
                    v[j] = b.ins().fadd(lo, hi);
                    v[j + h] = b.ins().fsub(lo, hi);
                }
            }
            for (j, v) in v.into_iter().enumerate() {
                let v = if last { b.ins().fmul(v, norm) } else { v };
                b.ins().store(mem(), v, dst, (16 * j * distance) as i32);
            }
        };
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, (vectors * 16) as i64);
        counted_loop(b, start, end, (radix * distance * 16) as i64, &mut |b, group_byte| {
            if distance == 1 {
                pass(b, group_byte);
            } else {
                let inner_start = b.ins().iconst(types::I64, 0);
                let inner_end = b.ins().iconst(types::I64, (distance * 16) as i64);
                counted_loop(b, inner_start, inner_end, 16, &mut |b, vector_byte| {
                    let at = b.ins().iadd(group_byte, vector_byte);
                    pass(b, at);
                });
            }
        });
        first_stage += count;
        if last {
            break;
        }
    }
}

/// The stages of distance 1 and 2 within one vector `[q0, q1, q2, q3]` (see the module doc):
/// `a = q0+q1, b = q0−q1, c = q2+q3, d = q2−q3`, then `[a+c, b+d, a−c, b−d]`.
fn in_vector_stages(b: &mut FunctionBuilder, q: Value) -> Value {
    let first = shuffle(b, q, q, [0, 0, 2, 2]);
    let second = shuffle(b, q, q, [1, 1, 3, 3]);
    let sums = b.ins().fadd(first, second); // [a, a, c, c]
    let differences = b.ins().fsub(first, second); // [b, b, d, d]
    let low = shuffle(b, sums, differences, [0, 4, 1, 5]); // [a, b, a, b]
    let high = shuffle(b, sums, differences, [2, 6, 3, 7]); // [c, d, c, d]
    let sums = b.ins().fadd(low, high);
    let differences = b.ins().fsub(low, high);
    shuffle(b, sums, differences, [0, 1, 6, 7])
}

/// The `f32x4` of lanes `lanes` of the eight lanes of `x` then `y`.
fn shuffle(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let bytes: Vec<u8> = lanes.iter().flat_map(|l| (0..4).map(move |k| 4 * l + k)).collect();
    let mask = b.func.dfg.immediates.push(ConstantData::from(bytes));
    let x_bytes = b.ins().bitcast(types::I8X16, little, x);
    let (x, y) = (x_bytes, if y == x { x_bytes } else { b.ins().bitcast(types::I8X16, little, y) });
    let shuffled = b.ins().shuffle(x, y, mask);
    b.ins().bitcast(types::F32X4, little, shuffled)
}
