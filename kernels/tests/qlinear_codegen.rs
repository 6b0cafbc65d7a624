//! Golden CLIF of the generated quantized-linear kernels (refresh with `cargo insta review`), and
//! what the host backend makes of the dot-product tree.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types;
use cranelift_codegen::settings::{self, Configurable};
use kernels::cpu::{build_qlinear, DotOrder, QLinearSpec};

mod common;

use common::sysv_64;

#[test]
fn int8_kernel_clif_with_a_scalar_tail() {
    let func = build_qlinear(&QLinearSpec { in_dim: 40, group: 20, weight_bits: 8 }, sysv_64(), DotOrder::SignedFirst).unwrap();
    insta::assert_snapshot!("qlinear_w8a8_k40_g20", func.display().to_string());
}

#[test]
fn int4_kernel_clif() {
    let func = build_qlinear(&QLinearSpec { in_dim: 64, group: 32, weight_bits: 4 }, sysv_64(), DotOrder::SignedFirst).unwrap();
    insta::assert_snapshot!("qlinear_w4a8_k64_g32", func.display().to_string());
}

/// Host machine code of a kernel, as cranelift's disassembly text.
fn host_disassembly(spec: QLinearSpec) -> String {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    let isa = cranelift_native::builder().unwrap().finish(settings::Flags::new(flags)).unwrap();
    let mut ctx = cranelift_codegen::Context::for_function(build_qlinear(&spec, isa.frontend_config(), DotOrder::for_isa(&*isa)).unwrap());
    ctx.set_disasm(true);
    let compiled = ctx.compile(&*isa, &mut ControlPlane::default()).unwrap();
    compiled.vcode.clone().unwrap()
}

#[test]
fn the_dot_product_becomes_one_instruction_where_the_host_has_one() {
    let spec = QLinearSpec { in_dim: 512, group: 128, weight_bits: 4 };
    let asm = host_disassembly(spec);
    assert!(asm.contains("ret"), "{asm}");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avxvnni") || (std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl")) {
        // A group of 128 is 4 packed vectors (unrolled) × 2 halves, in the 4-row and the 1-row body.
        assert_eq!(asm.matches("vpdpbusd").count(), 4 * 2 * (4 + 1), "{asm}");
    }
    let f = build_qlinear(&spec, sysv_64(), DotOrder::SignedFirst).unwrap();
    assert_eq!(f.dfg.value_type(f.dfg.block_params(f.layout.entry_block().unwrap())[10]), types::F32);
}

#[test]
fn quantize_kernel_clif_with_a_scalar_tail() {
    let func = kernels::cpu::build_quantize(&kernels::cpu::QuantizeSpec { width: 19, per_channel: true }, sysv_64()).unwrap();
    insta::assert_snapshot!("quantize_i8_w19_per_channel", func.display().to_string());
}

#[test]
fn decode_kernel_clif() {
    let int4 = kernels::cpu::build_qgemv(&QLinearSpec { in_dim: 64, group: 32, weight_bits: 4 }, sysv_64(), DotOrder::SignedFirst).unwrap();
    insta::assert_snapshot!("qgemv_w4a8_k64_g32", int4.display().to_string());
    let int8 = kernels::cpu::build_qgemv(&QLinearSpec { in_dim: 64, group: 32, weight_bits: 8 }, sysv_64(), DotOrder::SignedFirst).unwrap();
    insta::assert_snapshot!("qgemv_w8a8_k64_g32", int8.display().to_string());
    assert!(kernels::cpu::build_qgemv(&QLinearSpec { in_dim: 40, group: 20, weight_bits: 8 }, sysv_64(), DotOrder::SignedFirst).is_err(), "8-bit groups must fill 16-lane vectors");
}

#[test]
fn the_decode_kernel_uses_the_dot_product_instruction() {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    let isa = cranelift_native::builder().unwrap().finish(settings::Flags::new(flags)).unwrap();
    let spec = QLinearSpec { in_dim: 512, group: 128, weight_bits: 4 };
    let mut ctx = cranelift_codegen::Context::for_function(kernels::cpu::build_qgemv(&spec, isa.frontend_config(), DotOrder::for_isa(&*isa)).unwrap());
    ctx.set_disasm(true);
    let asm = ctx.compile(&*isa, &mut ControlPlane::default()).unwrap().vcode.clone().unwrap();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avxvnni") || (std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl")) {
        // One 32-input block per loop body: 4 features × 2 halves.
        assert_eq!(asm.matches("vpdpbusd").count(), 4 * 2, "{asm}");
        assert_eq!(asm.matches("vphaddd").count(), 3, "{asm}");
        assert!(!asm.contains("psrlw"), "the high nibbles are masked, not shifted: {asm}");
    }
    assert!(asm.contains("ret"), "{asm}");
}
