//! Native CPU kernels generated when a model loads (`kernels::cpu`, cranelift) and the calls into
//! them. This is the runtime's only FFI: each `unsafe` block states what makes it sound.
//!
//! Quantized linear layers (`qlinear` with int8 activations) and activation quantization run here; the integer reference
//! kernels in [`crate::cpu::quant`] stay the oracle they are tested against (bit-identical). So do
//! the causal conv1d ([`JitConv`], against [`crate::cpu::conv`]), the RMSNorms (one fused with the
//! int8 quantize that reads it) and the Hadamard transform (`norm`, `hadamard`, against
//! `crate::cpu::norm` and [`crate::hadamard`]), and the selective-scan and SSD steps (`scan`, `ssd`).

mod conv;
mod hadamard;
mod norm;
mod qlinear;
mod quantize;
mod scan;
mod ssd;
mod steps;

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use kernels::cpu::{CpuJit, KernelError};

pub use conv::JitConv;
pub use hadamard::JitHadamard;
pub use norm::{JitGatedRmsNorm, JitRmsNorm};
pub use qlinear::{GemvRow, JitQLinear};
pub use quantize::JitQuantize;
pub use scan::JitSelectiveScan;
pub use ssd::JitSsdStep;
pub use steps::StepKernels;

/// The host's code generator, shared by every kernel of an executor. Kernels hold an `Arc` to it:
/// their machine code lives in its executable memory, which is never freed while it is alive.
#[derive(Clone)]
pub struct HostJit(Arc<Mutex<CpuJit>>);

impl HostJit {
    /// A code generator for this CPU.
    pub fn new() -> Result<HostJit, KernelError> {
        Ok(HostJit(Arc::new(Mutex::new(CpuJit::for_host()?))))
    }

    /// The target triple code is generated for.
    pub fn triple(&self) -> String {
        self.lock().triple()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CpuJit> {
        // A panic while generating code leaves nothing half-written that later calls could see.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `generated` runs clearly faster than `rust` (two implementations of one step that give
/// the same bits): the best of nine timed calls each, interleaved, with a 5 % margin so that a
/// near tie keeps the Rust kernel. Used once per shape at load, where the better of the two
/// depends on the host (the Rust loops are compiled for AVX2's 8 lanes where the CPU has it, the
/// generated kernels use 4-lane vectors on every host).
pub(crate) fn generated_is_faster(rust: &mut dyn FnMut(), generated: &mut dyn FnMut()) -> bool {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        f();
        start.elapsed()
    };
    let (mut best_rust, mut best_generated) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..9 {
        best_rust = best_rust.min(time(rust));
        best_generated = best_generated.min(time(generated));
    }
    best_generated.as_secs_f64() * 1.05 < best_rust.as_secs_f64()
}

/// Runs `run(x block, out block)` over blocks of `block` values of `x` and `out` (the same
/// length): on the calling thread when there is one block (a decode step, not worth waking the
/// pool for), across the rayon pool otherwise (prefill).
pub(crate) fn by_blocks<T: Send>(x: &[f32], out: &mut [T], block: usize, run: impl Fn(&[f32], &mut [T]) + Sync) {
    let block = block.max(1);
    if x.len() <= block {
        run(x, out);
    } else {
        out.par_chunks_mut(block).zip(x.par_chunks(block)).for_each(|(out, x)| run(x, out));
    }
}
