//! Native CPU kernels generated when a model loads (`kernels::cpu`, cranelift) and the calls into
//! them. This is the runtime's only FFI: each `unsafe` block states what makes it sound.
//!
//! Quantized linear layers (`qlinear` with int8 activations) and activation quantization run here; the integer reference
//! kernels in [`crate::cpu::quant`] stay the oracle they are tested against (bit-identical). So do
//! the RMSNorms (one fused with the int8 quantize that reads it) and the Hadamard transform
//! (`norm`, `hadamard`), against the Rust kernels of `crate::cpu::norm` and [`crate::hadamard`].

mod hadamard;
mod norm;
mod qlinear;
mod quantize;
mod steps;

use std::sync::{Arc, Mutex};

use kernels::cpu::{CpuJit, KernelError};

pub use hadamard::JitHadamard;
pub use norm::{JitGatedRmsNorm, JitRmsNorm};
pub use qlinear::{GemvRow, JitQLinear};
pub use quantize::JitQuantize;
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
