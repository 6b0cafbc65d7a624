//! The depthwise causal conv1d on its generated kernels (`kernels::cpu::conv`): the decode step
//! (one token per sequence, the SiLU fused in or not) and the prefill (blocks of time steps across
//! threads: a conv output depends on inputs only, so blocks are independent, where the Rust
//! kernel's only parallelism is one task per sequence, a single thread for a one-prompt prefill).
//! Bit-identical to [`crate::cpu::conv`], which stays the oracle (tested below).

use rayon::prelude::*;

use kernels::cpu::{build_conv_sequence, build_conv_step, ConvSpec, KernelError};

use super::HostJit;
use crate::RuntimeError;

/// The step kernel's ABI; see `kernels::cpu::conv`.
type StepFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, *mut f32, i64);
/// The sequence kernel's ABI; see `kernels::cpu::conv`.
type SequenceFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *mut f32, i64, i64);

/// Time steps per prefill task: a block's few hundred kilobytes of outputs amortise a task's
/// hand-off, and a 512-token prompt still makes enough tasks to balance the threads.
const STEPS_PER_TASK: usize = 32;

/// Addresses of one shape's kernels, without and with the SiLU.
#[derive(Clone, Copy)]
struct Variants {
    plain: usize,
    silu: usize,
}

impl Variants {
    fn pick(&self, silu: bool) -> usize {
        if silu {
            self.silu
        } else {
            self.plain
        }
    }
}

/// A conv1d node's weights and its kernels.
pub struct JitConv {
    channels: usize,
    kernel: usize,
    /// `[kernel, channels]`.
    taps: Vec<f32>,
    bias: Option<Vec<f32>>,
    step: Variants,
    sequence: Variants,
    /// Keeps the executable memory the addresses point into alive.
    _jit: HostJit,
}

impl JitConv {
    /// The kernels of a conv with `weight` `[channels, kernel]` (the graph's layout) and `bias`
    /// (`[channels]`); `Unsupported` for a shape without generated kernels or weights of the
    /// wrong size.
    pub fn new(jit: &HostJit, weight: &[f32], channels: usize, kernel: usize, bias: Option<&[f32]>) -> Result<JitConv, KernelError> {
        let spec = ConvSpec { channels, kernel, bias: bias.is_some(), silu: false };
        spec.check()?;
        if weight.len() != channels * kernel || bias.is_some_and(|b| b.len() != channels) {
            return Err(KernelError::Unsupported(format!("conv weights of {} and bias of {:?} values for {channels} channels × {kernel} taps", weight.len(), bias.map(<[f32]>::len))));
        }
        let silu = ConvSpec { silu: true, ..spec };
        let mut code = jit.lock();
        let step = Variants { plain: code.kernel(&spec.step_symbol(), |cfg| build_conv_step(&spec, cfg))?, silu: code.kernel(&silu.step_symbol(), |cfg| build_conv_step(&silu, cfg))? };
        let sequence = Variants {
            plain: code.kernel(&spec.sequence_symbol(), |cfg| build_conv_sequence(&spec, cfg))?,
            silu: code.kernel(&silu.sequence_symbol(), |cfg| build_conv_sequence(&silu, cfg))?,
        };
        drop(code);
        let taps = crate::cpu::conv::tap_major(weight, channels, kernel);
        Ok(JitConv { channels, kernel, taps, bias: bias.map(<[f32]>::to_vec), step, sequence, _jit: jit.clone() })
    }

    /// Channels per row.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One decode step of `batch` sequences: `x` and `out` `[batch, channels]`, `state`
    /// `[batch, kernel − 1, channels]` rolled in place (longer buffers: their first rows),
    /// x·σ(x) applied to the outputs when `silu`. What `cpu::conv::causal_conv1d_step` computes.
    pub fn step(&self, x: &[f32], batch: usize, state: &mut [f32], out: &mut [f32], silu: bool) -> Result<(), RuntimeError> {
        let rows = batch * self.channels;
        let state_len = rows * (self.kernel - 1);
        if x.len() < rows || out.len() < rows || state.len() < state_len {
            return Err(RuntimeError::Input(format!("conv step of {batch} × {} channels: input {}, output {}, state {}", self.channels, x.len(), out.len(), state.len())));
        }
        let (x, out, state) = (&x[..rows], &mut out[..rows], &mut state[..state_len]);
        // These checks are what the SAFETY argument below rests on.
        assert!(x.len() == batch * self.channels && out.len() == x.len() && state.len() == x.len() * (self.kernel - 1));
        assert!(self.taps.len() == self.kernel * self.channels && self.bias.as_ref().is_none_or(|b| b.len() == self.channels));
        let address = self.step.pick(silu);
        // SAFETY: `address` is the entry of a function that `CpuJit::kernel` finalized from
        // `build_conv_step` for this node's channels, kernel width, bias presence and `silu`
        // (the symbol names all four), in the host's default C calling convention with this
        // signature (kernels::cpu::conv documents it); `_jit` keeps its memory alive.
        let kernel: StepFn = unsafe { std::mem::transmute::<usize, StepFn>(address) };
        // SAFETY: for b < batch, c < channels, the kernel reads x[b·C + c], taps[k·C + c]
        // (k < kernel), bias[c] (only with a bias, which then has C values) and
        // state[(b·(kernel − 1) + k)·C + c] (k < kernel − 1), and writes that state element and
        // out[b·C + c]: within the slices, by the asserts. `state` and `out` are borrowed
        // mutably (so they alias nothing else); the kernel keeps no pointer after returning.
        unsafe { kernel(x.as_ptr(), self.taps.as_ptr(), self.bias_ptr(), state.as_mut_ptr(), out.as_mut_ptr(), batch as i64) };
        Ok(())
    }

    /// The conv over `seq` time steps of `batch` sequences: `x` `[batch, seq, channels]`, `state`
    /// `[batch, kernel − 1, channels]` continued and rolled in place; returns `[batch, seq,
    /// channels]`, x·σ(x) applied when `silu`. What `cpu::conv::causal_conv1d` computes (followed
    /// by `fastmath::silu`).
    pub fn sequence(&self, x: &[f32], batch: usize, seq: usize, state: &mut [f32], silu: bool) -> Result<Vec<f32>, RuntimeError> {
        let (channels, hist) = (self.channels, self.kernel - 1);
        if x.len() != batch * seq * channels || state.len() < batch * hist * channels {
            return Err(RuntimeError::Input(format!("conv of {batch} × {seq} steps × {channels} channels: input {}, state {}", x.len(), state.len())));
        }
        let mut out = vec![0.0f32; x.len()];
        if out.is_empty() {
            return Ok(out);
        }
        let state = &mut state[..batch * hist * channels];
        let old_state: &[f32] = state;
        out.par_chunks_mut(seq * channels).zip(x.par_chunks(seq * channels)).zip(old_state.par_chunks(hist * channels)).for_each(|((out_b, x_b), state_b)| {
            out_b.par_chunks_mut(STEPS_PER_TASK * channels).enumerate().for_each(|(block, out_block)| self.run_sequence(x_b, state_b, block * STEPS_PER_TASK, out_block, silu));
        });
        for (state_b, x_b) in state.chunks_exact_mut(hist * channels).zip(x.chunks_exact(seq * channels)) {
            roll_state(state_b, x_b, channels);
        }
        Ok(out)
    }

    /// Time steps `begin..` of one sequence into `out` (`[steps, channels]`) on this thread.
    fn run_sequence(&self, x: &[f32], state: &[f32], begin: usize, out: &mut [f32], silu: bool) {
        let channels = self.channels;
        let end = begin + out.len() / channels;
        // These checks are what the SAFETY argument below rests on.
        assert!(out.len().is_multiple_of(channels) && end * channels <= x.len() && state.len() == (self.kernel - 1) * channels, "conv block does not fit its sequence");
        assert!(self.taps.len() == self.kernel * channels && self.bias.as_ref().is_none_or(|b| b.len() == channels));
        let address = self.sequence.pick(silu);
        // SAFETY: `address` is the entry of a function that `CpuJit::kernel` finalized from
        // `build_conv_sequence` for this node's channels, kernel width, bias presence and `silu`
        // (the symbol names all four), in the host's default C calling convention with this
        // signature (kernels::cpu::conv documents it); `_jit` keeps its memory alive.
        let kernel: SequenceFn = unsafe { std::mem::transmute::<usize, SequenceFn>(address) };
        // SAFETY: for begin ≤ t < end and c < C, the kernel reads x[r·C + c] for r ≤ t,
        // state[r·C + c] for r < kernel − 1, taps[k·C + c] for k < kernel and bias[c] (only
        // with a bias, which then has C values), and writes out[(t − begin)·C + c]: within the
        // slices, by the asserts. It writes nothing else (the state is only read); `out` is
        // borrowed mutably, so no other task writes it; no pointer is kept after returning.
        unsafe { kernel(x.as_ptr(), self.taps.as_ptr(), self.bias_ptr(), state.as_ptr(), out.as_mut_ptr(), begin as i64, end as i64) };
    }

    fn bias_ptr(&self) -> *const f32 {
        self.bias.as_ref().map_or(std::ptr::null(), |b| b.as_ptr())
    }
}

/// The state after a sequence: the last `kernel − 1` rows of the state followed by `x`, as the
/// Rust kernel takes them from its concatenation (here without building it).
fn roll_state(state: &mut [f32], x: &[f32], channels: usize) {
    let (hist, seq) = (state.len() / channels, x.len() / channels);
    if seq >= hist {
        state.copy_from_slice(&x[(seq - hist) * channels..]);
    } else {
        state.copy_within(seq * channels.., 0);
        state[(hist - seq) * channels..].copy_from_slice(x);
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cpu::{conv, fastmath};

    /// Mostly moderate values, some large enough to reach the exponential's clamp either side,
    /// and signed zeros.
    fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match rng.gen_range(0..20) {
                0 => 0.0,
                1 => -0.0,
                2 => rng.gen_range(-200.0..200.0),
                _ => rng.gen_range(-3.0..3.0),
            })
            .collect()
    }

    fn assert_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}[{i}]: {g} vs {w}");
        }
    }

    const CHANNELS: [usize; 6] = [1, 3, 5, 8, 17, 1792];

    /// One shape the tests cover: the kernel under test and what the Rust kernel needs.
    struct Case<'a> {
        what: String,
        conv: &'a JitConv,
        weight: &'a [f32],
        taps: &'a [f32],
        bias: Option<&'a [f32]>,
        channels: usize,
        kernel: usize,
        silu: bool,
        batch: usize,
    }

    /// Runs `check` on every channel count, kernel width, bias, SiLU and batch the tests cover.
    fn each_case(seed: u64, mut check: impl FnMut(&Case, &mut StdRng)) {
        let jit = HostJit::new().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        for channels in CHANNELS {
            for kernel in [2, 4] {
                for with_bias in [false, true] {
                    let weight = values(&mut rng, channels * kernel);
                    let bias = with_bias.then(|| values(&mut rng, channels));
                    let conv = JitConv::new(&jit, &weight, channels, kernel, bias.as_deref()).unwrap();
                    let taps = conv::tap_major(&weight, channels, kernel);
                    for silu in [false, true] {
                        for batch in [1, 3] {
                            let what = format!("c{channels} k{kernel} bias {with_bias} silu {silu} batch {batch}");
                            let case = Case { what, conv: &conv, weight: &weight, taps: &taps, bias: bias.as_deref(), channels, kernel, silu, batch };
                            check(&case, &mut rng);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn steps_are_bit_identical_to_the_rust_kernel() {
        each_case(7, |c, rng| {
            let mut state = values(rng, c.batch * (c.kernel - 1) * c.channels);
            let mut want_state = state.clone();
            for step in 0..5 {
                let x = values(rng, c.batch * c.channels);
                let mut out = vec![f32::NAN; c.batch * c.channels];
                let mut want = vec![0.0; c.batch * c.channels];
                c.conv.step(&x, c.batch, &mut state, &mut out, c.silu).unwrap();
                conv::causal_conv1d_step(&x, c.batch, c.channels, c.taps, c.kernel, c.bias, &mut want_state, &mut want, c.silu);
                assert_bits(&out, &want, &format!("{} step {step} out", c.what));
                assert_bits(&state, &want_state, &format!("{} step {step} state", c.what));
            }
        });
    }

    #[test]
    fn sequences_are_bit_identical_to_the_rust_kernel() {
        each_case(11, |c, rng| {
            let mut state = values(rng, c.batch * (c.kernel - 1) * c.channels);
            let mut want_state = state.clone();
            // Shorter and longer than the state, one and several blocks (not a multiple of the
            // block), then a decode step from the state left.
            for seq in [1, 2, 3, 5, 2 * STEPS_PER_TASK + 7] {
                if c.channels == 1792 && seq > 5 && c.batch > 1 {
                    continue;
                }
                let x = values(rng, c.batch * seq * c.channels);
                let out = c.conv.sequence(&x, c.batch, seq, &mut state, c.silu).unwrap();
                let mut want = conv::causal_conv1d(&x, c.batch, seq, c.channels, conv::ConvTaps { weight: c.weight, kernel: c.kernel, bias: c.bias }, &mut want_state);
                if c.silu {
                    want.iter_mut().for_each(|v| *v = fastmath::silu(*v));
                }
                assert_bits(&out, &want, &format!("{} seq {seq} out", c.what));
                assert_bits(&state, &want_state, &format!("{} seq {seq} state", c.what));
            }
            let x = values(rng, c.batch * c.channels);
            let (mut out, mut want) = (vec![0.0; c.batch * c.channels], vec![0.0; c.batch * c.channels]);
            c.conv.step(&x, c.batch, &mut state, &mut out, c.silu).unwrap();
            conv::causal_conv1d_step(&x, c.batch, c.channels, c.taps, c.kernel, c.bias, &mut want_state, &mut want, c.silu);
            assert_bits(&out, &want, &format!("{} step after the sequences", c.what));
        });
    }

    #[test]
    fn nan_and_infinity_come_out_where_the_rust_kernel_puts_them() {
        let jit = HostJit::new().unwrap();
        let (channels, kernel) = (6, 4);
        let weight: Vec<f32> = (0..channels * kernel).map(|i| 0.25 * i as f32 - 2.0).collect();
        let conv = JitConv::new(&jit, &weight, channels, kernel, None).unwrap();
        let taps = conv::tap_major(&weight, channels, kernel);
        let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, f32::MIN_POSITIVE];
        for silu in [false, true] {
            let (mut state, mut want_state) = (vec![0.5; (kernel - 1) * channels], vec![0.5; (kernel - 1) * channels]);
            let (mut out, mut want) = (vec![0.0; channels], vec![0.0; channels]);
            conv.step(&x, 1, &mut state, &mut out, silu).unwrap();
            conv::causal_conv1d_step(&x, 1, channels, &taps, kernel, None, &mut want_state, &mut want, silu);
            for (g, w) in out.iter().zip(&want) {
                // A NaN's payload is not specified by either side; that it is a NaN is.
                assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "silu {silu}: {out:?} vs {want:?}");
            }
            assert_bits(&state, &want_state, "state");
        }
    }

    #[test]
    fn mismatched_buffers_and_shapes_are_errors() {
        let jit = HostJit::new().unwrap();
        assert!(matches!(JitConv::new(&jit, &[0.0; 8], 4, 1, None), Err(KernelError::Unsupported(_))));
        assert!(matches!(JitConv::new(&jit, &[0.0; 7], 4, 2, None), Err(KernelError::Unsupported(_))));
        assert!(matches!(JitConv::new(&jit, &[0.0; 8], 4, 2, Some(&[0.0; 3])), Err(KernelError::Unsupported(_))));
        let conv = JitConv::new(&jit, &[0.0; 8], 4, 2, None).unwrap();
        let mut state = vec![0.0; 4];
        assert!(conv.step(&[0.0; 3], 1, &mut state, &mut [0.0; 4], false).is_err());
        assert!(conv.step(&[0.0; 8], 2, &mut state, &mut [0.0; 8], false).is_err());
        assert!(conv.sequence(&[0.0; 12], 1, 2, &mut state, false).is_err());
        assert!(conv.sequence(&[], 1, 0, &mut state, false).unwrap().is_empty());
    }
}
