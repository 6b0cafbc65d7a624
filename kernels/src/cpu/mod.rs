//! CPU kernels generated with cranelift, specialised to a model's dimensions.
//!
//! # Generated when the runtime loads an artifact (JIT), not shipped in it
//!
//! The artifact stays machine-independent: the same `.qmb` runs on x86-64 (CI, desktops) and
//! aarch64 (Orin, Raspberry Pi), and on each the code is generated for the CPU actually present
//! (`cranelift_native` enables AVX-512 VNNI / AVX-VNNI on x86-64 and DotProd / I8MM on aarch64
//! when the host has them, which an ahead-of-time artifact would have to guess). Generating a
//! kernel takes a few milliseconds at most (runtime/tests/jit_qlinear.rs generates, runs and checks
//! 17 kernels in about 0.1 s), and a model has only a handful of distinct shapes. Shipping machine code would also make loading an artifact equivalent to running
//! arbitrary code from it; with a JIT the artifact holds only data.
//!
//! # What is here
//!
//! - [`qlinear`]: the CLIF of the quantized linear layer (int8 and int4 weights × int8
//!   activations), one function for decode (GEMV) and prefill (GEMM, four rows per weight load);
//! - [`qgemv`]: the same layer for one activation row (decode), four output features per tile
//!   with a vectorised epilogue;
//! - [`quantize`]: static int8 quantization of f32 activations (per tensor or per channel);
//! - [`conv`]: the causal depthwise conv1d over its rolling state (decode step, prefill blocks),
//!   with the SiLU that follows it optionally fused in;
//! - [`norm`]: the RMSNorm (optionally writing the following int8 quantization directly) and the
//!   gated, grouped RMSNorm of mamba2, bit-identical to the Rust kernels `runtime::cpu::norm`;
//! - [`hadamard`]: the online Walsh–Hadamard transform, bit-identical to `runtime::hadamard`;
//! - [`scan`] and [`ssd`]: the Mamba1 selective-scan step and the Mamba2 SSD decode step;
//! - [`vmath`]: exp, ln, softplus and SiLU as the Rust kernels compute them, for the above;
//! - [`pack`]: the weight layout those functions read, built once at load;
//! - [`jit`]: compiles CLIF for the host and hands back code addresses. Calling them is the
//!   runtime's business (`runtime::jit`), the only place with `unsafe`.
//!
//! The integer reference executor (`runtime::cpu::quant`) and the Rust float kernels of
//! `runtime::cpu` are the oracle: every generated kernel is tested to be bit-identical to them.
//!
//! # Where these are not used
//!
//! On an x86-64 host with AVX-512 VNNI, prefill products (many rows) run on a 512-bit kernel
//! written with Rust intrinsics (`runtime::cpu::qgemm_avx512`), also bit-identical to the oracle:
//! cranelift's x86-64 backend emits 128-bit vectors only, whose `vpdpbusd` does as many
//! multiply-adds per instruction as the FP32 path's 512-bit FMA, so a quantized prefill could not
//! beat the FP32 one on these kernels. Decode (bound by reading weights) and every other host
//! keep the generated kernels.
//!
//! The selective-scan and SSD steps run on their generated kernel only where it times faster
//! than the Rust loop at load (`runtime::jit::generated_is_faster`): the Rust loops are compiled
//! for AVX2's eight lanes where the CPU has them, and on such hosts they win. A prefill's scan then
//! runs the Rust lane-wise blocks (`runtime::cpu::scan_lanes`, 16 lanes with AVX-512), and a
//! prefill's SSD is always the chunked matrix-product form on the `gemm` crate: a generated
//! token-by-token recurrence would do as many multiply-adds with 4-lane vectors and no register
//! blocking.
//!
//! Every kernel here is also run as aarch64 code under qemu-aarch64 and checked bit for bit against
//! its x86-64 build (`tests/aarch64_replay.rs`).

pub mod conv;
mod function;
pub mod hadamard;
pub mod jit;
pub mod norm;
pub mod pack;
pub mod qgemv;
pub mod qlinear;
pub mod quantize;
mod rows;
pub mod scan;
pub mod ssd;
mod vmath;

pub use conv::{build_conv_sequence, build_conv_step, ConvSpec};
pub use hadamard::{build_hadamard, HadamardSpec};
pub use jit::{CpuJit, QGemvCode, QLinearCode, QuantizeCode};
pub use norm::{build_gated_rms_norm, build_rms_norm, GatedRmsNormSpec, NormOutput, RmsNormSpec};
pub use pack::{pack_qlinear_weights, PackedQLinear};
pub use qgemv::{build_qgemv, qgemv_supported};
pub use qlinear::{build_qlinear, DotOrder, QLinearSpec};
pub use quantize::{build_quantize, QuantizeSpec};
pub use scan::{build_selective_scan_step, ScanSpec, SCAN_CHANNEL_BLOCK};
pub use ssd::{build_ssd_step, SsdStepSpec};

/// Errors of the CPU code generator.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The shape has no generated kernel (a limit: the caller falls back to the reference).
    #[error("unsupported kernel shape: {0}")]
    Unsupported(String),
    /// The host ISA could not be set up (a limit of the machine).
    #[error("host ISA: {0}")]
    Isa(String),
    /// Cranelift rejected or failed to compile a function (a bug in the generator).
    #[error("codegen: {0}")]
    Codegen(String),
}
