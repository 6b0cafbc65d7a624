//! Golden CLIF of the generated causal-conv1d kernels (refresh with `cargo insta review`), and
//! that they lower for both target architectures whatever the host (nothing runs here; the
//! runtime's tests run them against the Rust kernels).

mod common;

use common::{isa_for, sysv_64};
use cranelift_codegen::isa::OwnedTargetIsa;

use cranelift_codegen::ir::Function;
use kernels::cpu::{build_conv_sequence, build_conv_step, ConvSpec, KernelError};

/// 15 channels: one looped pair of vectors, one leftover vector and a three-channel scalar tail.
const ODD: ConvSpec = ConvSpec { channels: 15, kernel: 4, bias: true, silu: true };

#[test]
fn step_kernel_clif_with_bias_silu_and_a_scalar_tail() {
    let func = build_conv_step(&ODD, sysv_64()).unwrap();
    insta::assert_snapshot!("conv1d_step_c15_k4_bias_silu", func.display().to_string());
}

#[test]
fn sequence_kernel_clif_with_bias_and_a_scalar_tail() {
    let func = build_conv_sequence(&ConvSpec { silu: false, ..ODD }, sysv_64()).unwrap();
    insta::assert_snapshot!("conv1d_seq_c15_k4_bias", func.display().to_string());
}

#[test]
fn unsupported_shapes_are_typed_errors() {
    for spec in [ConvSpec { channels: 0, ..ODD }, ConvSpec { kernel: 1, ..ODD }, ConvSpec { kernel: 9, ..ODD }, ConvSpec { channels: usize::MAX / 2, ..ODD }] {
        assert!(matches!(build_conv_step(&spec, sysv_64()), Err(KernelError::Unsupported(_))), "{spec:?}");
        assert!(matches!(build_conv_sequence(&spec, sysv_64()), Err(KernelError::Unsupported(_))), "{spec:?}");
    }
}


/// Every variant (bias or not, SiLU or not, step and sequence) at shapes with and without vector
/// blocks and scalar tails, lowered for `isa`, as (name, VCode text).
fn lower_all(isa: &OwnedTargetIsa) -> Vec<(String, String)> {
    let cfg = isa.frontend_config();
    let mut funcs: Vec<(String, Function)> = Vec::new();
    for channels in [1, 3, 8, 15, 1792] {
        for kernel in [2, 4] {
            for bias in [false, true] {
                for silu in [false, true] {
                    let spec = ConvSpec { channels, kernel, bias, silu };
                    funcs.push((spec.step_symbol(), build_conv_step(&spec, cfg).unwrap()));
                    funcs.push((spec.sequence_symbol(), build_conv_sequence(&spec, cfg).unwrap()));
                }
            }
        }
    }
    common::lower_each(isa, funcs)
}

#[test]
fn x86_64_kernels_lower_on_the_baseline_isa() {
    for (name, code) in lower_all(&isa_for("x86_64-unknown-linux-gnu", &[])) {
        assert!(!code.contains("call "), "{name} calls out (a libcall would change the rounding): {code}");
        // The clamp's compare-and-selects, written in the operand order of `minps` / `maxps`
        // (which keep a NaN operand as Rust's clamp does), become those instructions.
        if name.contains("_silu") && name.contains("c8_") {
            assert!(code.contains("minps") && code.contains("maxps"), "{name}: {code}");
        }
    }
}

#[test]
fn aarch64_kernels_lower() {
    for (name, code) in lower_all(&isa_for("aarch64-unknown-linux-gnu", &[])) {
        assert!(!code.contains("bl "), "{name} calls out: {code}");
        assert!(!code.contains("fmla") && !code.contains("fmadd"), "{name}: a multiply-add was fused, which rounds once instead of twice: {code}");
    }
}
