//! Row and lane iteration shared by the kernels that walk rows of f32 values (norms, Hadamard,
//! quantize): loop-carried row pointers, and a row's values as `f32x4` groups then scalars.

use cranelift_codegen::ir::{types, InstBuilder, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

use super::qlinear::counted_loop;
use super::quantize::mem;

/// `base + index · stride` (bytes).
fn offset(b: &mut FunctionBuilder, base: Value, index: Value, stride: usize) -> Value {
    let off = b.ins().imul_imm_s(index, stride as i64);
    b.ins().iadd(base, off)
}

/// Runs `body(b, row)` for `rows` rows, `row[k]` the address of the current row of buffer
/// `buffers[k] = (base, bytes per row)`. The addresses are loop-carried pointers advanced once per
/// row, not `base + m · stride`: cranelift rematerialises the constant stride in every block that
/// uses it, so that product could never be hoisted out of the inner loops.
pub(super) fn for_each_row(b: &mut FunctionBuilder, rows: Value, buffers: &[(Value, usize)], body: &mut dyn FnMut(&mut FunctionBuilder, &[Value])) {
    let pointers: Vec<Variable> = buffers
        .iter()
        .map(|(base, _)| {
            let pointer = b.declare_var(types::I64);
            b.def_var(pointer, *base);
            pointer
        })
        .collect();
    let zero = b.ins().iconst(types::I64, 0);
    counted_loop(b, zero, rows, 1, &mut |b, _| {
        let row: Vec<Value> = pointers.iter().map(|p| b.use_var(*p)).collect();
        body(b, &row);
        for ((pointer, (_, stride)), at) in pointers.iter().zip(buffers).zip(&row) {
            let next = b.ins().iadd_imm_s(*at, *stride as i64);
            b.def_var(*pointer, next);
        }
    });
}

/// Address of f32 element `index + lane` of `base` (`index` a runtime element index, none for 0;
/// `lane` a constant one, folded into the access's immediate offset).
fn element(b: &mut FunctionBuilder, base: Value, index: Option<Value>, lane: usize) -> (Value, i32) {
    let at = match index {
        Some(index) => offset(b, base, index, 4),
        None => base,
    };
    (at, (lane * 4) as i32)
}

/// A `ty` (F32 or F32X4) load of element `index + lane` of `base`.
pub(super) fn load(b: &mut FunctionBuilder, ty: Type, base: Value, index: Option<Value>, lane: usize) -> Value {
    let (at, imm) = element(b, base, index, lane);
    b.ins().load(ty, mem(), at, imm)
}

/// Stores `v` at element `index + lane` of `base`.
pub(super) fn store(b: &mut FunctionBuilder, v: Value, base: Value, index: Option<Value>, lane: usize) {
    let (at, imm) = element(b, base, index, lane);
    b.ins().store(mem(), v, at, imm);
}

/// What [`for_each_lane_group`] emits per vector or scalar: `(builder, F32X4 or F32, runtime
/// element index, constant element offset)`.
pub(super) type LaneBody<'a> = dyn FnMut(&mut FunctionBuilder, Type, Option<Value>, usize) + 'a;

/// Like [`LaneBody`], emitting the value at that element.
pub(super) type LaneBodyValue<'a> = dyn FnMut(&mut FunctionBuilder, Type, Option<Value>, usize) -> Value + 'a;

/// Runs `body(b, ty, index, lane)` over `len` f32 values: on `f32x4` vectors, four per loop
/// iteration (`index` the loop's element index, `lane` 0, 4, 8, 12), then on the remaining whole
/// vectors and the last `len % 4` scalars (`ty` F32) inline (no `index`, `lane` the element).
/// Elements are visited in increasing order, which the sequential sums rely on.
pub(super) fn for_each_lane_group(b: &mut FunctionBuilder, len: usize, body: &mut LaneBody) {
    let unrolled = len / 16 * 16;
    if unrolled > 0 {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, unrolled as i64);
        counted_loop(b, start, end, 16, &mut |b, index| {
            for lane in (0..16).step_by(4) {
                body(b, types::F32X4, Some(index), lane);
            }
        });
    }
    for lane in (unrolled..len / 4 * 4).step_by(4) {
        body(b, types::F32X4, None, lane);
    }
    for lane in len / 4 * 4..len {
        body(b, types::F32, None, lane);
    }
}
