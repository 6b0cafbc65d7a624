//! The online Walsh–Hadamard transform on its generated kernel (`kernels::cpu::hadamard`),
//! bit-identical to [`crate::hadamard::hadamard_row`]: one row per call on the calling thread
//! (decode), blocks of rows across the rayon pool (prefill).

use kernels::cpu::{build_hadamard, HadamardSpec, KernelError};

use super::norm::check_rows;
use super::HostJit;
use crate::RuntimeError;

/// The generated kernel's ABI; see `kernels::cpu::hadamard`.
type HadamardFn = unsafe extern "C" fn(*const f32, *mut f32, i64);

/// Rows per prefill task (the reference's split).
const ROWS_PER_TASK: usize = 16;

/// `x · H / √n` per block of each row (see [`crate::hadamard`]).
pub struct JitHadamard {
    spec: HadamardSpec,
    /// Entry address; valid while `_jit` lives.
    address: usize,
    /// Keeps the executable memory `address` points into alive.
    _jit: HostJit,
}

impl JitHadamard {
    /// The kernel for rows of `width`.
    pub fn new(jit: &HostJit, width: usize) -> Result<JitHadamard, KernelError> {
        let spec = HadamardSpec { width };
        let address = jit.lock().kernel(&spec.symbol(), |target| build_hadamard(&spec, target))?;
        Ok(JitHadamard { spec, address, _jit: jit.clone() })
    }

    /// Transforms `x` (`[rows, width]`), blocks of rows across threads.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        let width = self.spec.width;
        check_rows(x.len(), x.len(), width)?;
        let mut out = vec![0.0f32; x.len()];
        super::by_blocks(x, &mut out, ROWS_PER_TASK * width, |x, o| self.run(Some(x), o));
        Ok(out)
    }

    /// Transforms `x` (`[rows, width]`) into `out` (same length) on this thread.
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), RuntimeError> {
        check_rows(x.len(), out.len(), self.spec.width)?;
        self.run(Some(x), out);
        Ok(())
    }

    /// Transforms `rows` (`[rows, width]`) in place on this thread.
    pub fn forward_in_place(&self, rows: &mut [f32]) -> Result<(), RuntimeError> {
        check_rows(rows.len(), rows.len(), self.spec.width)?;
        self.run(None, rows);
        Ok(())
    }

    /// Runs the kernel from `x` (`None`: in place) into `out`.
    fn run(&self, x: Option<&[f32]>, out: &mut [f32]) {
        let width = self.spec.width;
        // What the SAFETY argument below rests on (the public callers checked it already).
        assert!(out.len().is_multiple_of(width) && x.is_none_or(|x| x.len() == out.len()), "hadamard buffers do not match");
        let out_at = out.as_mut_ptr();
        let x_at = x.map_or(out_at.cast_const(), <[f32]>::as_ptr);
        // SAFETY: `address` is the entry of a function that `CpuJit::kernel` finalized for
        // `spec` (its symbol names the width), in the host's default C calling convention with
        // this signature (kernels::cpu::hadamard documents it); `_jit` keeps its memory alive.
        let kernel = unsafe { std::mem::transmute::<usize, HadamardFn>(self.address) };
        // SAFETY: the kernel reads `out.len()` values at `x_at` and writes as many at `out_at`
        // (asserted above): `x_at` is either a slice of that length, which `out`, a mutable
        // borrow, cannot overlap, or `out`'s own address (the kernel may run in place). It keeps
        // no pointer after returning.
        unsafe { kernel(x_at, out_at, (out.len() / width) as i64) }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::hadamard::{block_size, hadamard_row, hadamard_rows};

    #[test]
    fn is_bit_identical_to_the_reference() {
        let jit = HostJit::new().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        // Blocks of 1, 2, 4 … 4096 values; several blocks per row where the width is not a power
        // of two (768 = 3 · 256, 1536 = 3 · 512); 4096 takes four passes (3 + 3 + 3 + 1 stages).
        for width in [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 40, 64, 96, 128, 192, 256, 512, 768, 1024, 1536, 2048, 4096] {
            let kernel = JitHadamard::new(&jit, width).unwrap();
            for rows in [1, 3, 40] {
                let x: Vec<f32> = (0..rows * width).map(|i| rng.gen_range(-4.0f32..4.0) * if i % 5 == 0 { 100.0 } else { 1.0 }).collect();
                let mut want = x.clone();
                want.chunks_exact_mut(width).for_each(hadamard_row);
                let what = format!("width {width} (blocks of {}) rows {rows}", block_size(width));
                let check = |got: &[f32]| {
                    let first = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
                    assert_eq!(first, None, "{what}: first difference at {first:?}");
                };
                check(&kernel.forward(&x).unwrap());
                let mut reference = x.clone();
                hadamard_rows(&mut reference, width);
                check(&reference);
                let mut out = vec![0.0f32; x.len() + 1];
                kernel.forward_into(&x, &mut out[1..]).unwrap();
                check(&out[1..]);
                out[1..].copy_from_slice(&x);
                kernel.forward_in_place(&mut out[1..]).unwrap();
                check(&out[1..]);
            }
        }
    }

    #[test]
    fn mismatched_buffers_are_input_errors() {
        let kernel = JitHadamard::new(&HostJit::new().unwrap(), 8).unwrap();
        assert!(matches!(kernel.forward(&[0.0; 12]), Err(RuntimeError::Input(_))));
        assert!(matches!(kernel.forward_into(&[0.0; 8], &mut [0.0; 16]), Err(RuntimeError::Input(_))));
        assert!(matches!(JitHadamard::new(&HostJit::new().unwrap(), 0), Err(KernelError::Unsupported(_))));
    }
}
