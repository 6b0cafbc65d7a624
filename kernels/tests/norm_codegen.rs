//! Golden CLIF of the generated RMSNorm, gated RMSNorm and Hadamard kernels at small odd shapes
//! (refresh with `INSTA_UPDATE=always` and review the diff), and their lowering for both target
//! architectures: what the bit-identity argument of `kernels::cpu::norm` relies on must hold in
//! the machine code too (a true square root and division, no fused multiply-add), and the
//! Hadamard's lane shuffles must stay single shuffles.

mod common;

use common::{isa_for, sysv_64};
use cranelift_codegen::isa::OwnedTargetIsa;

use cranelift_codegen::ir::Function;
use kernels::cpu::{build_gated_rms_norm, build_hadamard, build_rms_norm, GatedRmsNormSpec, HadamardSpec, KernelError, NormOutput, RmsNormSpec};

const EPS: u32 = 0x3727_c5ac; // 1e-5

fn rms(width: usize, weighted: bool, output: NormOutput) -> RmsNormSpec {
    RmsNormSpec { width, weighted, eps_bits: EPS, output }
}

#[test]
fn rms_norm_clif_with_a_scalar_tail() {
    let func = build_rms_norm(&rms(19, false, NormOutput::F32), sysv_64()).unwrap();
    insta::assert_snapshot!("rms_norm_w19_plain_f32", func.display().to_string());
}

#[test]
fn weighted_rms_norm_quantized_per_channel_clif() {
    // Two groups of sixteen in the loop, five channels one at a time.
    let func = build_rms_norm(&rms(37, true, NormOutput::I8 { per_channel: true }), sysv_64()).unwrap();
    insta::assert_snapshot!("rms_norm_w37_weighted_i8_per_channel", func.display().to_string());
}

#[test]
fn gated_rms_norm_clif_with_odd_groups() {
    // Two groups of 13: three vectors and a scalar each.
    let func = build_gated_rms_norm(&GatedRmsNormSpec { width: 26, groups: 2, eps_bits: EPS }, sysv_64()).unwrap();
    insta::assert_snapshot!("gated_rms_norm_w26_g2", func.display().to_string());
}

#[test]
fn hadamard_clif_at_each_block_kind() {
    // Blocks of 4 (in-vector stages only), 64 (a radix-8 pass, then a radix-2 one) and 2 (scalar).
    for width in [12, 192, 6] {
        let func = build_hadamard(&HadamardSpec { width }, sysv_64()).unwrap();
        insta::assert_snapshot!(format!("hadamard_w{width}"), func.display().to_string());
    }
}

#[test]
fn unsupported_shapes_are_refused_with_a_typed_error() {
    let unsupported = |r: Result<Function, KernelError>| matches!(r, Err(KernelError::Unsupported(_)));
    assert!(unsupported(build_rms_norm(&rms(0, false, NormOutput::F32), sysv_64())));
    assert!(unsupported(build_gated_rms_norm(&GatedRmsNormSpec { width: 10, groups: 3, eps_bits: EPS }, sysv_64())));
    assert!(unsupported(build_gated_rms_norm(&GatedRmsNormSpec { width: 10, groups: 0, eps_bits: EPS }, sysv_64())));
    assert!(unsupported(build_hadamard(&HadamardSpec { width: 0 }, sysv_64())));
}

#[test]
fn symbols_name_every_field_of_a_spec() {
    let mut symbols = std::collections::HashSet::new();
    for width in [19, 20] {
        for weighted in [false, true] {
            for output in [NormOutput::F32, NormOutput::I8 { per_channel: false }, NormOutput::I8 { per_channel: true }] {
                for eps_bits in [EPS, 0x3380_0000] {
                    assert!(symbols.insert(RmsNormSpec { width, weighted, eps_bits, output }.symbol()));
                }
            }
        }
        for groups in [1, 2] {
            for eps_bits in [EPS, 0x3380_0000] {
                assert!(symbols.insert(GatedRmsNormSpec { width, groups, eps_bits }.symbol()));
            }
        }
        assert!(symbols.insert(HadamardSpec { width }.symbol()));
    }
}


/// Every kernel kind at odd shapes and at the real ones (mamba1 / mamba2 small), lowered for
/// `isa`, as (name, VCode text).
fn lower_all(isa: &OwnedTargetIsa) -> Vec<(String, String)> {
    let cfg = isa.frontend_config();
    let mut funcs = Vec::new();
    for width in [19, 37, 512, 768] {
        for weighted in [false, true] {
            for output in [NormOutput::F32, NormOutput::I8 { per_channel: false }, NormOutput::I8 { per_channel: true }] {
                let spec = rms(width, weighted, output);
                funcs.push((format!("norm {}", spec.symbol()), build_rms_norm(&spec, cfg).unwrap()));
            }
        }
    }
    for (width, groups) in [(26, 2), (1024, 1), (1536, 1), (1536, 8)] {
        let spec = GatedRmsNormSpec { width, groups, eps_bits: EPS };
        funcs.push((format!("gated {}", spec.symbol()), build_gated_rms_norm(&spec, cfg).unwrap()));
    }
    for width in [5, 6, 12, 192, 512, 768, 1024, 1536] {
        funcs.push((format!("hadamard w{width}"), build_hadamard(&HadamardSpec { width }, cfg).unwrap()));
    }
    common::lower_each(isa, funcs)
}

#[test]
fn x86_64_kernels_lower_with_exact_operations() {
    for features in [&[][..], &["has_sse41", "has_avx", "has_avx2", "has_fma"][..]] {
        for (name, code) in lower_all(&isa_for("x86_64-unknown-linux-gnu", features)) {
            assert!(!code.contains("fmadd") && !code.contains("fnmadd"), "{name} {features:?}: a fused multiply-add changes roundings:\n{code}");
            assert!(!code.contains("rsqrt") && !code.contains("rcp"), "{name} {features:?}: an approximate reciprocal:\n{code}");
            if name.starts_with("norm") || name.starts_with("gated") {
                assert!(code.contains("sqrtps") || code.contains("sqrtss"), "{name} {features:?}: no square root:\n{code}");
            }
            if name.starts_with("hadamard") {
                assert!(!code.contains("pshufb"), "{name} {features:?}: a lane shuffle became a byte table lookup:\n{code}");
            }
        }
    }
}

#[test]
fn aarch64_kernels_lower_with_exact_operations() {
    for (name, code) in lower_all(&isa_for("aarch64-unknown-linux-gnu", &[])) {
        assert!(!code.contains("fmadd") && !code.contains("fmla") && !code.contains("fmls"), "{name}: a fused multiply-add changes roundings:\n{code}");
        assert!(!code.contains("frsqrte") && !code.contains("frecpe"), "{name}: an approximate reciprocal:\n{code}");
        if name.starts_with("norm") || name.starts_with("gated") {
            assert!(code.contains("fsqrt"), "{name}: no square root:\n{code}");
        }
    }
}
