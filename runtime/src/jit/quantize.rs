//! Static int8 quantization of f32 activations on its generated kernel, row blocks across threads.

use kernels::cpu::{KernelError, QuantizeCode, QuantizeSpec};

use super::HostJit;
use crate::RuntimeError;

/// The generated kernel's ABI; see `kernels::cpu::quantize`.
type QuantizeFn = unsafe extern "C" fn(*const f32, *const f32, *mut i8, i64);

/// Rows per task: below this a call stays on one thread (decode).
const ROWS_PER_TASK: usize = 64;

/// `q = clamp(round_half_even(x / scale), −128, 127)` per channel.
pub struct JitQuantize {
    code: QuantizeCode,
    /// `width` values, or 1 for a per-tensor scale.
    scales: Vec<f32>,
    /// Keeps the executable memory `code` points into alive.
    _jit: HostJit,
}

impl JitQuantize {
    /// The kernel for rows of `width` channels with `scales` (`[width]` or `[1]`).
    pub fn new(jit: &HostJit, width: usize, scales: &[f32]) -> Result<JitQuantize, KernelError> {
        let per_channel = match scales.len() {
            1 if width != 1 => false,
            n if n == width => true,
            n => return Err(KernelError::Unsupported(format!("{n} scales for rows of {width}"))),
        };
        let code = jit.lock().quantize(QuantizeSpec { width, per_channel })?;
        Ok(JitQuantize { code, scales: scales.to_vec(), _jit: jit.clone() })
    }

    /// Quantizes `x` (`[rows, width]`).
    pub fn forward(&self, x: &[f32]) -> Result<Vec<i8>, RuntimeError> {
        let width = self.code.spec.width;
        if !x.len().is_multiple_of(width) {
            return Err(RuntimeError::Input(format!("{} values are not rows of {width}", x.len())));
        }
        let mut out = vec![0i8; x.len()];
        super::by_blocks(x, &mut out, ROWS_PER_TASK * width, |x, q| self.run(x, q));
        Ok(out)
    }

    /// Quantizes `x` (`[rows, width]`) into `out` (same length) on this thread.
    pub fn forward_into(&self, x: &[f32], out: &mut [i8]) -> Result<(), RuntimeError> {
        let width = self.code.spec.width;
        if !x.len().is_multiple_of(width) || out.len() != x.len() {
            return Err(RuntimeError::Input(format!("{} values into {} are not rows of {width}", x.len(), out.len())));
        }
        self.run(x, out);
        Ok(())
    }

    fn run(&self, x: &[f32], out: &mut [i8]) {
        let spec = &self.code.spec;
        let rows = x.len() / spec.width;
        // These checks are what the SAFETY argument below rests on.
        assert!(x.len() == rows * spec.width && out.len() == x.len(), "quantize buffers do not match");
        assert!(self.scales.len() == if spec.per_channel { spec.width } else { 1 });
        // SAFETY: `code.address` is the entry of a function that `CpuJit::quantize` finalized for
        // exactly `code.spec`, with the host's default C calling convention and this signature
        // (kernels::cpu::quantize documents it); its executable memory is kept alive by `_jit`.
        let kernel: QuantizeFn = unsafe { std::mem::transmute::<usize, QuantizeFn>(self.code.address) };
        // SAFETY: the kernel reads x[m·width + c] and scales[c] (or scales[0]) and writes
        // out[m·width + c] for m < rows, c < width; the asserts bound these by the slices'
        // lengths. `out` is borrowed mutably; the kernel keeps no pointer after returning.
        unsafe { kernel(x.as_ptr(), self.scales.as_ptr(), out.as_mut_ptr(), rows as i64) }
    }
}
