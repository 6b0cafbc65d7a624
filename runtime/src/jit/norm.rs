//! RMSNorm and mamba2's gated RMSNorm on their generated kernels (`kernels::cpu::norm`),
//! bit-identical to [`crate::cpu::norm`]: one row per call on the calling thread (decode), blocks
//! of rows across the rayon pool (prefill). An RMSNorm whose only reader is an int8 quantize also
//! gets the kernel that writes the quantized bytes directly, which the decode plan fuses the pair
//! onto.

use rayon::prelude::*;

use kernels::cpu::{build_gated_rms_norm, build_rms_norm, GatedRmsNormSpec, KernelError, NormOutput, RmsNormSpec};

use super::HostJit;
use crate::RuntimeError;

/// The RMSNorm kernels' ABI; see `kernels::cpu::norm`.
type RmsNormFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut u8, i64);
/// The gated RMSNorm kernel's ABI; see `kernels::cpu::norm`.
type GatedRmsNormFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64);

/// Rows per prefill task (the reference's split).
const ROWS_PER_TASK: usize = 16;

/// A finalized kernel and the spec it was built for.
#[derive(Clone, Copy)]
struct Code<S> {
    spec: S,
    /// Entry address; valid while the `HostJit` that compiled it lives.
    address: usize,
}

/// `x / sqrt(mean(x²) + ε) · weight` over rows, optionally quantized to int8.
pub struct JitRmsNorm {
    code: Code<RmsNormSpec>,
    /// The same norm writing `quantize(·, scales)`, and those scales (`[width]` or `[1]`).
    quantized: Option<(Code<RmsNormSpec>, Vec<f32>)>,
    /// `[width]`, or empty when the norm has no weight.
    weight: Vec<f32>,
    /// Keeps the executable memory the codes point into alive.
    jit: HostJit,
}

impl JitRmsNorm {
    /// The kernel for rows of `width` with an optional `weight` (`[width]`).
    pub fn new(jit: &HostJit, width: usize, weight: Option<&[f32]>, eps: f32) -> Result<JitRmsNorm, KernelError> {
        if weight.is_some_and(|w| w.len() != width) {
            return Err(KernelError::Unsupported(format!("a weight of {} values for rows of {width}", weight.map_or(0, <[f32]>::len))));
        }
        let spec = RmsNormSpec { width, weighted: weight.is_some(), eps_bits: eps.to_bits(), output: NormOutput::F32 };
        let code = compile(jit, spec)?;
        Ok(JitRmsNorm { code, quantized: None, weight: weight.map(<[f32]>::to_vec).unwrap_or_default(), jit: jit.clone() })
    }

    /// Adds the kernel that quantizes the normalised rows with `scales` (`[width]` or `[1]`), as
    /// the following `quantize` op does.
    pub fn add_quantize(&mut self, scales: &[f32]) -> Result<(), KernelError> {
        let width = self.code.spec.width;
        let per_channel = match scales.len() {
            1 if width != 1 => false,
            n if n == width => true,
            n => return Err(KernelError::Unsupported(format!("{n} scales for rows of {width}"))),
        };
        let code = compile(&self.jit, RmsNormSpec { output: NormOutput::I8 { per_channel }, ..self.code.spec })?;
        self.quantized = Some((code, scales.to_vec()));
        Ok(())
    }

    /// Whether [`JitRmsNorm::forward_quantized_into`] is available.
    pub fn quantizes(&self) -> bool {
        self.quantized.is_some()
    }

    /// Normalises `x` (`[rows, width]`), blocks of rows across threads.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        let width = self.code.spec.width;
        check_rows(x.len(), x.len(), width)?;
        let mut out = vec![0.0f32; x.len()];
        super::by_blocks(x, &mut out, ROWS_PER_TASK * width, |x, o| self.run_f32(x, o));
        Ok(out)
    }

    /// Normalises `x` (`[rows, width]`) into `out` (same length) on this thread.
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        check_rows(x.len(), out.len(), self.code.spec.width)?;
        self.run_f32(x, out);
        Ok(())
    }

    /// Normalises `rows` (`[rows, width]`) in place on this thread.
    pub fn forward_in_place(&self, rows: &mut [f32]) -> Result<(), RuntimeError> {
        check_rows(rows.len(), rows.len(), self.code.spec.width)?;
        self.call(self.code, &[], None, Dest::F32(rows));
        Ok(())
    }

    /// Normalises and quantizes `x` (`[rows, width]`) into `out` (same length) on this thread:
    /// the bytes the norm and then the quantize would give.
    pub fn forward_quantized_into(&self, x: &[f32], out: &mut [i8]) -> Result<(), RuntimeError> {
        let Some((code, scales)) = &self.quantized else {
            return Err(RuntimeError::Internal("this norm has no quantizing kernel".into()));
        };
        check_rows(x.len(), out.len(), code.spec.width)?;
        self.call(*code, scales, Some(x), Dest::I8(out));
        Ok(())
    }

    fn run_f32(&self, x: &[f32], out: &mut [f32]) {
        self.call(self.code, &[], Some(x), Dest::F32(out));
    }

    /// Runs `code` from `x` (`None`: in place) into `out`, quantizing with `scales` when `code`
    /// writes int8.
    fn call(&self, code: Code<RmsNormSpec>, scales: &[f32], x: Option<&[f32]>, out: Dest) {
        let spec = code.spec;
        let (len, out_at, in_place_at) = match out {
            Dest::F32(out) => {
                let len = out.len();
                let at = out.as_mut_ptr();
                (len, at.cast::<u8>(), Some(at.cast_const()))
            }
            Dest::I8(out) => (out.len(), out.as_mut_ptr().cast::<u8>(), None),
        };
        // These checks are what the SAFETY argument below rests on (the public callers checked
        // the lengths already).
        let scale_count = match spec.output {
            NormOutput::F32 => 0,
            NormOutput::I8 { per_channel: true } => spec.width,
            NormOutput::I8 { per_channel: false } => 1,
        };
        assert!(len.is_multiple_of(spec.width) && x.is_none_or(|x| x.len() == len), "norm buffers do not match");
        assert_eq!(matches!(spec.output, NormOutput::F32), in_place_at.is_some(), "the output type does not match the kernel");
        assert_eq!(self.weight.len(), if spec.weighted { spec.width } else { 0 }, "the weight does not match the kernel");
        assert_eq!(scales.len(), scale_count, "the scales do not match the kernel");
        let Some(x_at) = x.map(<[f32]>::as_ptr).or(in_place_at) else {
            panic!("an int8 output cannot be computed in place");
        };
        // SAFETY: `code.address` is the entry of a function that `CpuJit::kernel` finalized for
        // `code.spec` (its symbol names every field), in the host's default C calling convention
        // with this signature (kernels::cpu::norm documents it); `self.jit` keeps its memory alive.
        let kernel = unsafe { std::mem::transmute::<usize, RmsNormFn>(code.address) };
        // SAFETY: the kernel reads `len` values at `x_at`, `weight[..width]` when weighted and
        // `scales` when it quantizes (asserted above), and writes `len` values of its output type
        // at `out_at` (the slice `out`, of that type: asserted). `x_at` is either a slice of `len`
        // values, which `out`, a mutable borrow, cannot overlap, or `out`'s own address for an f32
        // kernel, which may run in place. It keeps no pointer after returning.
        unsafe { kernel(x_at, self.weight.as_ptr(), scales.as_ptr(), out_at, (len / spec.width) as i64) }
    }
}

/// Where a norm writes.
enum Dest<'a> {
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
}

/// mamba2's gated RMSNorm: `g = y · silu(z)`, each of `groups` slices of a row normalised by its
/// own RMS, then `· weight`.
pub struct JitGatedRmsNorm {
    code: Code<GatedRmsNormSpec>,
    /// `[width]`.
    weight: Vec<f32>,
    /// Keeps the executable memory `code` points into alive.
    _jit: HostJit,
}

impl JitGatedRmsNorm {
    /// The kernel for rows of `width` in `groups` slices, with `weight` (`[width]`).
    pub fn new(jit: &HostJit, width: usize, weight: &[f32], groups: usize, eps: f32) -> Result<JitGatedRmsNorm, KernelError> {
        if weight.len() != width {
            return Err(KernelError::Unsupported(format!("a weight of {} values for rows of {width}", weight.len())));
        }
        let spec = GatedRmsNormSpec { width, groups, eps_bits: eps.to_bits() };
        let code = compile_gated(jit, spec)?;
        Ok(JitGatedRmsNorm { code, weight: weight.to_vec(), _jit: jit.clone() })
    }

    /// The gated norm of `y` with gate `z` (both `[rows, width]`), blocks of rows across threads.
    pub fn forward(&self, y: &[f32], z: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        let width = self.code.spec.width;
        check_rows(y.len(), z.len(), width)?;
        let mut out = vec![0.0f32; y.len()];
        let block = ROWS_PER_TASK * width;
        if y.len() <= block {
            self.run(y, z, &mut out);
        } else {
            out.par_chunks_mut(block).zip(y.par_chunks(block)).zip(z.par_chunks(block)).for_each(|((o, y), z)| self.run(y, z, o));
        }
        Ok(out)
    }

    /// The gated norm of `y` with gate `z` into `out` (all `[rows, width]`) on this thread.
    pub fn forward_into(&self, y: &[f32], z: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        let width = self.code.spec.width;
        check_rows(y.len(), z.len(), width)?;
        check_rows(y.len(), out.len(), width)?;
        self.run(y, z, out);
        Ok(())
    }

    fn run(&self, y: &[f32], z: &[f32], out: &mut [f32]) {
        let width = self.code.spec.width;
        // These checks are what the SAFETY argument below rests on.
        assert!(y.len() == z.len() && y.len() == out.len() && y.len().is_multiple_of(width), "gated norm buffers do not match");
        assert_eq!(self.weight.len(), width);
        // SAFETY: `code.address` is the entry of a function that `CpuJit::kernel` finalized for
        // `code.spec`, in the host's default C calling convention with this signature
        // (kernels::cpu::norm documents it); `_jit` keeps its memory alive.
        let kernel = unsafe { std::mem::transmute::<usize, GatedRmsNormFn>(self.code.address) };
        // SAFETY: the kernel reads `rows · width` values of `y` and `z` and `width` of `weight`,
        // and writes `rows · width` into `out` (and reads them back): the asserts bound these by
        // the slices' lengths, and `out`, a mutable borrow, overlaps neither input. It keeps no
        // pointer after returning.
        unsafe { kernel(y.as_ptr(), z.as_ptr(), self.weight.as_ptr(), out.as_mut_ptr(), (y.len() / width) as i64) }
    }
}

fn compile(jit: &HostJit, spec: RmsNormSpec) -> Result<Code<RmsNormSpec>, KernelError> {
    let address = jit.lock().kernel(&spec.symbol(), |target| build_rms_norm(&spec, target))?;
    Ok(Code { spec, address })
}

fn compile_gated(jit: &HostJit, spec: GatedRmsNormSpec) -> Result<Code<GatedRmsNormSpec>, KernelError> {
    let address = jit.lock().kernel(&spec.symbol(), |target| build_gated_rms_norm(&spec, target))?;
    Ok(Code { spec, address })
}

/// An input error unless `a` and `b` values are the same whole number of rows of `width`.
pub(super) fn check_rows(a: usize, b: usize, width: usize) -> Result<(), RuntimeError> {
    if a != b || !a.is_multiple_of(width) {
        return Err(RuntimeError::Input(format!("{a} and {b} values are not the same rows of {width}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::cpu::{norm, quant};

    fn random(rng: &mut rand::rngs::StdRng, n: usize, range: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-range..range)).collect()
    }

    /// Rows of varied magnitude, one of them all zeros (its RMS is √ε).
    fn activations(rng: &mut rand::rngs::StdRng, rows: usize, width: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(rows * width);
        for r in 0..rows {
            let magnitude = [1.0, 30.0, 1e-3, 0.0][r % 4];
            x.extend(random(rng, width, 1.0).into_iter().map(|v| v * magnitude));
        }
        x
    }

    fn assert_bits(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let first = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first, None, "{what}: first difference at {first:?}: {:?} vs {:?}", first.map(|i| got[i]), first.map(|i| want[i]));
    }

    const WIDTHS: [usize; 11] = [1, 3, 4, 19, 37, 64, 512, 768, 1024, 1536, 2048];

    #[test]
    fn rms_norm_is_bit_identical_to_the_reference() {
        let jit = HostJit::new().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for width in WIDTHS {
            for weighted in [false, true] {
                for eps in [1e-5f32, 1e-6] {
                    let weight = weighted.then(|| random(&mut rng, width, 2.0));
                    let kernel = JitRmsNorm::new(&jit, width, weight.as_deref(), eps).unwrap();
                    for rows in [1, 3, 40] {
                        let x = activations(&mut rng, rows, width);
                        let mut want = x.clone();
                        want.chunks_exact_mut(width).for_each(|row| norm::rms_norm_in_place(row, weight.as_deref(), eps));
                        let what = format!("width {width} weighted {weighted} eps {eps} rows {rows}");
                        assert_bits(&kernel.forward(&x).unwrap(), &want, &what);
                        assert_bits(&kernel.forward(&x).unwrap(), &norm::rms_norm(&x, width, weight.as_deref(), eps), &what);
                        let mut out = vec![0.0; x.len()];
                        kernel.forward_into(&x, &mut out).unwrap();
                        assert_bits(&out, &want, &what);
                        // In place, and at an address that is not 16-byte aligned.
                        let mut shifted = vec![0.0f32; x.len() + 1];
                        shifted[1..].copy_from_slice(&x);
                        kernel.forward_in_place(&mut shifted[1..]).unwrap();
                        assert_bits(&shifted[1..], &want, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn rms_norm_then_quantize_is_the_bytes_of_the_two_ops() {
        let jit = HostJit::new().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for width in WIDTHS {
            for weighted in [false, true] {
                for per_channel in [false, true] {
                    let weight = weighted.then(|| random(&mut rng, width, 2.0));
                    // Scales that put most values well inside the int8 range and saturate some.
                    let scales: Vec<f32> = (0..if per_channel { width } else { 1 }).map(|_| rng.gen_range(0.005..0.05)).collect();
                    let mut kernel = JitRmsNorm::new(&jit, width, weight.as_deref(), 1e-5).unwrap();
                    kernel.add_quantize(&scales).unwrap();
                    assert!(kernel.quantizes());
                    for rows in [1, 3, 20] {
                        let x = activations(&mut rng, rows, width);
                        let normalised = norm::rms_norm(&x, width, weight.as_deref(), 1e-5);
                        let want = quant::quantize(&normalised, &quant::channel_scales(&scales, width));
                        let mut got = vec![0i8; x.len()];
                        let mut shifted = vec![0.0f32; x.len() + 1];
                        shifted[1..].copy_from_slice(&x);
                        kernel.forward_quantized_into(&shifted[1..], &mut got).unwrap();
                        assert_eq!(got, want, "width {width} weighted {weighted} per channel {per_channel} rows {rows}");
                    }
                }
            }
        }
    }

    #[test]
    fn gated_rms_norm_is_bit_identical_to_the_reference() {
        let jit = HostJit::new().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for (width, groups) in [(1, 1), (3, 1), (19, 1), (26, 2), (37, 1), (64, 4), (512, 1), (1024, 1), (1536, 1), (1536, 8), (2048, 8), (3072, 2)] {
            let weight = random(&mut rng, width, 2.0);
            let kernel = JitGatedRmsNorm::new(&jit, width, &weight, groups, 1e-5).unwrap();
            for rows in [1, 3, 40] {
                let y = activations(&mut rng, rows, width);
                // Gates beyond the exponential's clamp (±88) too.
                let z: Vec<f32> = (0..rows * width).map(|i| if i % 97 == 0 { rng.gen_range(-200.0..200.0) } else { rng.gen_range(-12.0..12.0) }).collect();
                let mut want = vec![0.0; y.len()];
                for ((o, y), z) in want.chunks_exact_mut(width).zip(y.chunks_exact(width)).zip(z.chunks_exact(width)) {
                    norm::gated_rms_norm_row(y, z, o, &weight, groups, 1e-5);
                }
                let what = format!("width {width} groups {groups} rows {rows}");
                assert_bits(&kernel.forward(&y, &z).unwrap(), &want, &what);
                assert_bits(&norm::gated_rms_norm(&y, &z, width, &weight, groups, 1e-5), &want, &what);
                let mut out = vec![0.0; y.len() + 1];
                kernel.forward_into(&y, &z, &mut out[1..]).unwrap();
                assert_bits(&out[1..], &want, &what);
            }
        }
    }

    #[test]
    fn mismatched_buffers_are_input_errors_and_bad_shapes_unsupported() {
        let jit = HostJit::new().unwrap();
        let kernel = JitRmsNorm::new(&jit, 8, None, 1e-5).unwrap();
        assert!(matches!(kernel.forward(&[0.0; 12]), Err(RuntimeError::Input(_))));
        assert!(matches!(kernel.forward_into(&[0.0; 8], &mut [0.0; 16]), Err(RuntimeError::Input(_))));
        assert!(kernel.forward_quantized_into(&[0.0; 8], &mut [0; 8]).is_err(), "no quantizing kernel was asked for");
        assert!(matches!(JitRmsNorm::new(&jit, 8, Some(&[1.0; 7]), 1e-5), Err(KernelError::Unsupported(_))));
        assert!(matches!(JitRmsNorm::new(&jit, 8, None, 1e-5).unwrap().add_quantize(&[1.0; 3]), Err(KernelError::Unsupported(_))));
        assert!(matches!(JitGatedRmsNorm::new(&jit, 10, &[1.0; 10], 3, 1e-5), Err(KernelError::Unsupported(_))));
        let gated = JitGatedRmsNorm::new(&jit, 8, &[1.0; 8], 2, 1e-5).unwrap();
        assert!(matches!(gated.forward(&[0.0; 8], &[0.0; 16]), Err(RuntimeError::Input(_))));
    }
}
