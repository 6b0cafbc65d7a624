//! Golden CLIF of the generated selective-scan and SSD steps (refresh with `cargo insta review`),
//! and their lowering for both target architectures (compiled, not run: CI has no aarch64 machine).

mod common;

use common::{isa_for, lower, sysv_64};
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetFrontendConfig;
use kernels::cpu::{build_selective_scan_step, build_ssd_step, ScanSpec, SsdStepSpec};

/// How many vector multiplies `build` makes once lowered, for x86-64 and for aarch64.
fn vector_multiplies(build: impl Fn(TargetFrontendConfig) -> Function) -> Vec<(&'static str, usize)> {
    ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]
        .into_iter()
        .map(|triple| {
            let isa = isa_for(triple, &[]);
            let code = lower(&isa, triple, build(isa.frontend_config()));
            (triple, if triple.starts_with("x86") { code.matches("mulps").count() } else { code.matches("fmul v").count() })
        })
        .collect()
}

#[test]
fn selective_scan_step_clif() {
    let func = build_selective_scan_step(&ScanSpec { d_state: 8 }, sysv_64()).unwrap();
    insta::assert_snapshot!("selective_scan_step_n8", func.display().to_string());
}

#[test]
fn selective_scan_step_lowers_for_x86_64_and_aarch64() {
    // Sixteen exponentials per channel, four channels a step, four lanes each: vector multiplies.
    for (triple, n) in vector_multiplies(|cfg| build_selective_scan_step(&ScanSpec { d_state: 16 }, cfg).unwrap()) {
        assert!(n >= 4 * 4 * 8, "{triple}: {n} vector multiplies");
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
    let func = build_ssd_step(&SsdStepSpec { head_dim: 3, d_state: 8, heads_per_group: 2 }, sysv_64()).unwrap();
    insta::assert_snapshot!("ssd_step_p3_n8_hg2", func.display().to_string());
}

#[test]
fn ssd_step_lowers_for_x86_64_and_aarch64() {
    // A state row of 128 is 32 vectors, each multiplied by C, by the decay, and B by Δ·x.
    for (triple, n) in vector_multiplies(|cfg| build_ssd_step(&SsdStepSpec { head_dim: 64, d_state: 128, heads_per_group: 24 }, cfg).unwrap()) {
        assert!(n >= 3 * 32, "{triple}: {n} vector multiplies");
    }
}
