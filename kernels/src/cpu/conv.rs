//! CLIF of the depthwise causal conv1d over a rolling state, for decode (one token per sequence)
//! and prefill (a block of one sequence's time steps), with the SiLU that follows it optionally
//! fused in.
//!
//! `out[t, c] = bias[c] + Σ_k taps[k, c] · ext[t + k, c]`, where `ext` is the state (the last
//! `kernel − 1` inputs, oldest first) followed by the new inputs. The taps are tap-major
//! (`[kernel, channels]`, what `runtime::cpu::conv::tap_major` builds), so every operation is a
//! contiguous `f32x4` over channels; the last `channels % 4` channels go one at a time through
//! the same operations.
//!
//! # Bit-identical to `runtime::cpu::conv`
//!
//! Cranelift neither fuses a multiplication and an addition into an FMA nor reassociates, so
//! each output is the reference's chain of operations in its order: the accumulator starts from
//! the bias, or from `+0.0` (not from the first product: `0.0 + (−0.0)` is `+0.0`), and adds
//! `taps[k] · input` for `k = 0, 1, …`. The SiLU is `x / (1 + e^(−x))` with
//! `runtime::cpu::fastmath::exp` emitted operation by operation ([`super::vmath`]): its clamp as two
//! compare-and-selects, so a NaN passes through as it does through Rust's `f32::clamp` (they
//! lower to `maxps` / `minps` with the operand order that keeps that); the add-and-subtract
//! rounding; the 2ⁿ scale built from the shifted sum's bits with wrapping integer operations.
//!
//! # Speed
//!
//! The prefill kernel keeps each output block in a register across the taps and reads the inputs
//! in place (the Rust kernel adds every tap into the output row in memory, after copying the
//! state and the inputs into one buffer): about five times faster on one thread. The decode step
//! is about as fast as LLVM's code of the Rust kernel: the SiLU's dozen constants do not fit
//! the sixteen vector registers beside the loop's values, and cranelift reloads them from its
//! constant pool at every use where LLVM keeps most of them in registers.
//!
//! # Signatures
//!
//! Step: `fn(x: *const f32, taps: *const f32, bias: *const f32, state: *mut f32, out: *mut f32, batch: i64)`
//! with `x`, `out` `[batch, channels]` and `state` `[batch, kernel − 1, channels]`, rolled in
//! place (the oldest row drops out, `x` becomes the newest).
//!
//! Sequence: `fn(x: *const f32, taps: *const f32, bias: *const f32, state: *const f32, out: *mut f32, begin: i64, end: i64)`
//! for one sequence, `x` `[seq, channels]` and `state` `[kernel − 1, channels]`: writes time
//! steps `begin ≤ t < end` to `out` rows `t − begin` (`out` is the block's `[end − begin, channels]`),
//! reading `x` rows before `end` and the state rows that time steps before `kernel − 1` reach
//! back to. It leaves the state alone: every block of time steps reads the old state, so blocks
//! can run in parallel, and rolling it (to the last `kernel − 1` rows of `ext`, copies only) is
//! the caller's once all have run.
//!
//! `bias` is not read when the spec has none (it may be null).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, MemFlagsData, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;

use super::function::build_function;
use super::qlinear::counted_loop;
use super::vmath::Lanes;
use super::KernelError;

/// Widest conv generated: Mamba's is 4; the step kernel keeps every state row of a block live.
pub const MAX_KERNEL: usize = 8;

/// `f32x4` blocks per iteration of the channel loop: half the loop overhead of one (one and four
/// measured no faster on the step kernel with the SiLU, whose constants spill either way).
const VECTORS_PER_ITERATION: usize = 2;

/// The dimensions a conv kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Channels (the row width).
    pub channels: usize,
    /// Taps per channel, the state holding `kernel − 1` rows.
    pub kernel: usize,
    /// Whether the accumulator starts from a per-channel bias (else from `+0.0`).
    pub bias: bool,
    /// Whether x·σ(x) is applied to each output.
    pub silu: bool,
}

impl ConvSpec {
    /// The symbol of the decode (step) kernel.
    pub fn step_symbol(&self) -> String {
        format!("conv1d_step_{}", self.suffix())
    }

    /// The symbol of the prefill (sequence) kernel.
    pub fn sequence_symbol(&self) -> String {
        format!("conv1d_seq_{}", self.suffix())
    }

    fn suffix(&self) -> String {
        format!("c{}_k{}{}{}", self.channels, self.kernel, if self.bias { "_bias" } else { "" }, if self.silu { "_silu" } else { "" })
    }

    /// Whether this shape has a generated kernel.
    pub fn check(&self) -> Result<(), KernelError> {
        // Every byte offset into the taps and the state (`k · channels · 4`) is a 32-bit immediate.
        // A width-1 conv has no state, and the Rust prefill kernel (the oracle) does not run it.
        let offsets_fit = self.channels.checked_mul(4 * MAX_KERNEL).is_some_and(|n| n <= i32::MAX as usize);
        if self.channels == 0 || !(2..=MAX_KERNEL).contains(&self.kernel) || !offsets_fit {
            return Err(KernelError::Unsupported(format!("conv {self:?}: channels must be 1..{}, kernel 2..={MAX_KERNEL}", i32::MAX as usize / (4 * MAX_KERNEL))));
        }
        Ok(())
    }

    fn row_bytes(&self) -> i64 {
        (self.channels * 4) as i64
    }

    /// Byte offset of row `k` of a `[rows, channels]` table.
    fn row_offset(&self, k: usize) -> i32 {
        (k * self.channels * 4) as i32
    }
}

/// Loads and stores of buffers the runtime has bounds-checked: they cannot trap.
fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Builds the decode kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_conv_step(spec: &ConvSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    spec.check()?;
    let spec = *spec;
    let hist = spec.kernel - 1;
    Ok(build_function(target, spec.step_symbol(), &[types::I64; 6], |b, p| {
        let (x, taps, bias, state, out, batch) = (p[0], p[1], p[2], p[3], p[4], p[5]);
        let zero = b.ins().iconst(types::I64, 0);
        counted_loop(b, zero, batch, 1, &mut |b, seq_index| {
            let row = b.ins().imul_imm_s(seq_index, spec.row_bytes());
            let state_row = b.ins().imul_imm_s(seq_index, spec.row_bytes() * hist as i64);
            channel_loop(b, spec.channels, &[row, state_row], &mut |b, &ChannelBlock { vector, channel, rows, imm }| {
                let l = if vector { Lanes::VECTOR } else { Lanes::SCALAR };
                let (x_at, out_at) = (b.ins().iadd(x, rows[0]), b.ins().iadd(out, rows[0]));
                let (state_at, taps_at) = (b.ins().iadd(state, rows[1]), b.ins().iadd(taps, channel));
                // Every load of the rows comes before the stores that roll them.
                let mut inputs: Vec<Value> = (0..hist).map(|k| b.ins().load(l.0, mem(), state_at, imm + spec.row_offset(k))).collect();
                inputs.push(b.ins().load(l.0, mem(), x_at, imm));
                let mut acc = initial_accumulator(b, l, &spec, bias, channel, imm);
                for (k, input) in inputs.iter().enumerate() {
                    let tap = b.ins().load(l.0, mem(), taps_at, imm + spec.row_offset(k));
                    let product = b.ins().fmul(tap, *input);
                    acc = b.ins().fadd(acc, product);
                }
                for (k, newer) in inputs[1..].iter().enumerate() {
                    b.ins().store(mem(), *newer, state_at, imm + spec.row_offset(k));
                }
                if spec.silu {
                    acc = l.silu(b, acc);
                }
                b.ins().store(mem(), acc, out_at, imm);
            });
        });
    }))
}

/// Builds the prefill kernel's CLIF (deterministic: the golden files snapshot it).
pub fn build_conv_sequence(spec: &ConvSpec, target: TargetFrontendConfig) -> Result<Function, KernelError> {
    spec.check()?;
    let spec = *spec;
    let hist = spec.kernel - 1;
    Ok(build_function(target, spec.sequence_symbol(), &[types::I64; 7], |b, p| {
        let (x, taps, bias, state, out, begin, end) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
        let first_full = b.ins().iconst(types::I64, hist as i64);
        // Time steps before `hist` reach back into the state: tap k reads state row t + k while
        // that is a state row, else input row t + k − hist, a choice made per time step.
        let head_end = b.ins().smin(end, first_full);
        counted_loop(b, begin, head_end, 1, &mut |b, t| {
            let bases: Vec<(Value, i32)> = (0..spec.kernel)
                .map(|k| {
                    let ext_row = b.ins().iadd_imm_s(t, k as i64);
                    let in_state = b.ins().icmp_imm_s(IntCC::SignedLessThan, ext_row, hist as i64);
                    let from_state = b.ins().iadd_imm_s(state, spec.row_offset(k) as i64);
                    let from_x = b.ins().iadd_imm_s(x, spec.row_offset(k) as i64 - spec.row_offset(hist) as i64);
                    (b.ins().select(in_state, from_state, from_x), 0)
                })
                .collect();
            emit_sequence_step(b, &spec, &bases, [taps, bias, out], begin, t);
        });
        // From `hist` on, every tap reads an input row: tap k is row t + k − hist, the base
        // address `x` and a constant offset.
        let full_begin = b.ins().smax(begin, first_full);
        counted_loop(b, full_begin, end, 1, &mut |b, t| {
            let bases: Vec<(Value, i32)> = (0..spec.kernel).map(|k| (x, spec.row_offset(k) - spec.row_offset(hist))).collect();
            emit_sequence_step(b, &spec, &bases, [taps, bias, out], begin, t);
        });
    }))
}

/// Time step `t` of the sequence kernel: tap k's input row is at `bases[k].0 + t · row bytes +
/// bases[k].1`.
fn emit_sequence_step(b: &mut FunctionBuilder, spec: &ConvSpec, bases: &[(Value, i32)], [taps, bias, out]: [Value; 3], begin: Value, t: Value) {
    let row = b.ins().imul_imm_s(t, spec.row_bytes());
    let out_index = b.ins().isub(t, begin);
    let out_row = b.ins().imul_imm_s(out_index, spec.row_bytes());
    channel_loop(b, spec.channels, &[row, out_row], &mut |b, &ChannelBlock { vector, channel, rows, imm }| {
        let l = if vector { Lanes::VECTOR } else { Lanes::SCALAR };
        let taps_at = b.ins().iadd(taps, channel);
        let mut acc = initial_accumulator(b, l, spec, bias, channel, imm);
        for (k, (base, offset)) in bases.iter().enumerate() {
            let source_at = b.ins().iadd(*base, rows[0]);
            let input = b.ins().load(l.0, mem(), source_at, imm + offset);
            let tap = b.ins().load(l.0, mem(), taps_at, imm + spec.row_offset(k));
            let product = b.ins().fmul(tap, input);
            acc = b.ins().fadd(acc, product);
        }
        if spec.silu {
            acc = l.silu(b, acc);
        }
        let out_at = b.ins().iadd(out, rows[1]);
        b.ins().store(mem(), acc, out_at, imm);
    });
}

/// The bias at the channel block, or `+0.0`: where the reference's accumulator starts.
fn initial_accumulator(b: &mut FunctionBuilder, l: Lanes, spec: &ConvSpec, bias: Value, channel: Value, imm: i32) -> Value {
    if spec.bias {
        let bias_at = b.ins().iadd(bias, channel);
        b.ins().load(l.0, mem(), bias_at, imm)
    } else {
        l.f32(b, 0.0)
    }
}

/// Where a block of channels is, for the code that computes it.
struct ChannelBlock<'a> {
    /// An `f32x4` block, else one channel.
    vector: bool,
    /// The block's byte offset in channel-indexed tables is `channel + imm`...
    channel: Value,
    /// ... and `rows[r] + imm` in row `rows_start[r]` of a row-major buffer.
    rows: &'a [Value],
    imm: i32,
}

/// Calls `body` for every block of channels: `f32x4` blocks, `VECTORS_PER_ITERATION` per loop
/// iteration and the leftover ones inline, then the last `channels % 4` channels one at a time.
///
/// In the loop, `channel` and `rows` are induction variables, so every address is a base, an
/// induction variable and a constant: cranelift rematerializes constants where they are used,
/// which keeps anything computed from them (a row's address from the outer loop's counter)
/// inside the innermost loop, recomputed for every block.
fn channel_loop(b: &mut FunctionBuilder, channels: usize, rows_start: &[Value], body: &mut dyn FnMut(&mut FunctionBuilder, &ChannelBlock)) {
    let vectors = channels / 4;
    let looped = vectors / VECTORS_PER_ITERATION * VECTORS_PER_ITERATION;
    let step = (VECTORS_PER_ITERATION * 16) as i64;
    let zero = b.ins().iconst(types::I64, 0);
    if looped > 0 {
        let header = b.create_block();
        let body_block = b.create_block();
        let exit = b.create_block();
        let channel = b.append_block_param(header, types::I64);
        let rows: Vec<Value> = rows_start.iter().map(|_| b.append_block_param(header, types::I64)).collect();
        let args: Vec<_> = std::iter::once(zero).chain(rows_start.iter().copied()).map(Into::into).collect();
        b.ins().jump(header, &args);
        b.switch_to_block(header);
        let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, channel, looped as i64 * 16);
        b.ins().brif(more, body_block, &[], exit, &[]);
        b.switch_to_block(body_block);
        for v in 0..VECTORS_PER_ITERATION {
            body(b, &ChannelBlock { vector: true, channel, rows: &rows, imm: (v * 16) as i32 });
        }
        let next: Vec<_> = std::iter::once(channel).chain(rows.iter().copied()).map(|i| b.ins().iadd_imm_s(i, step).into()).collect();
        b.ins().jump(header, &next);
        b.switch_to_block(exit);
    }
    for v in looped..vectors {
        body(b, &ChannelBlock { vector: true, channel: zero, rows: rows_start, imm: (v * 16) as i32 });
    }
    for c in vectors * 4..channels {
        body(b, &ChannelBlock { vector: false, channel: zero, rows: rows_start, imm: (c * 4) as i32 });
    }
}

