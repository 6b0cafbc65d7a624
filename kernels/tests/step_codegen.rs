//! Golden CLIF of the generated selective-scan and SSD steps (refresh with `cargo insta review`), and their
//! lowering for both target architectures (compiled, not run: CI has no aarch64 machine).

use std::str::FromStr;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::{self, CallConv, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use kernels::cpu::{build_selective_scan_step, ScanSpec};
use target_lexicon::Triple;

fn sysv_64() -> TargetFrontendConfig {
    TargetFrontendConfig { default_call_conv: CallConv::SystemV, pointer_width: target_lexicon::PointerWidth::U64, page_size_align_log2: 12 }
}

#[test]
fn selective_scan_step_clif() {
    let func = build_selective_scan_step(&ScanSpec { d_state: 8 }, sysv_64()).unwrap();
    insta::assert_snapshot!("selective_scan_step_n8", func.display().to_string());
}

#[test]
fn selective_scan_step_lowers_for_x86_64_and_aarch64() {
    for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").unwrap();
        let isa = isa::lookup(Triple::from_str(triple).unwrap()).unwrap().finish(settings::Flags::new(flags)).unwrap();
        let func = build_selective_scan_step(&ScanSpec { d_state: 16 }, isa.frontend_config()).unwrap();
        let mut ctx = cranelift_codegen::Context::for_function(func);
        ctx.set_disasm(true);
        let code = ctx.compile(&*isa, &mut ControlPlane::default()).unwrap_or_else(|e| panic!("{triple}: {e:?}")).vcode.clone().unwrap();
        // Sixteen exponentials per channel, four lanes each: the multiplies are vector ones.
        let vector_multiplies = if triple.starts_with("x86") { code.matches("mulps").count() } else { code.matches("fmul v").count() };
        assert!(vector_multiplies >= 4 * 4 * 8, "{triple}: {vector_multiplies} vector multiplies\n{code}");
    }
}

#[test]
fn unsupported_state_sizes_are_refused() {
    for d_state in [0, 4, 12, 264] {
        assert!(build_selective_scan_step(&ScanSpec { d_state }, sysv_64()).is_err(), "d_state {d_state}");
    }
}

#[test]
fn ssd_step_clif() {
    let func = kernels::cpu::build_ssd_step(&kernels::cpu::SsdStepSpec { head_dim: 3, d_state: 8, heads_per_group: 2 }, sysv_64()).unwrap();
    insta::assert_snapshot!("ssd_step_p3_n8_hg2", func.display().to_string());
}

#[test]
fn ssd_step_lowers_for_x86_64_and_aarch64() {
    for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").unwrap();
        let isa = isa::lookup(Triple::from_str(triple).unwrap()).unwrap().finish(settings::Flags::new(flags)).unwrap();
        let spec = kernels::cpu::SsdStepSpec { head_dim: 64, d_state: 128, heads_per_group: 24 };
        let func = kernels::cpu::build_ssd_step(&spec, isa.frontend_config()).unwrap();
        let mut ctx = cranelift_codegen::Context::for_function(func);
        ctx.set_disasm(true);
        let code = ctx.compile(&*isa, &mut ControlPlane::default()).unwrap_or_else(|e| panic!("{triple}: {e:?}")).vcode.clone().unwrap();
        // A state row of 128 is 32 vectors, each multiplied by C, by the decay and B by Δ·x.
        let vector_multiplies = if triple.starts_with("x86") { code.matches("mulps").count() } else { code.matches("fmul v").count() };
        assert!(vector_multiplies >= 3 * 32, "{triple}: {vector_multiplies} vector multiplies\n{code}");
    }
}
