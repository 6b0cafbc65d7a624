//! `QUAMBA_CUDA_L2_AHEAD_LINES=1` (a measurement aid: the scans ask for the next in_proj's L2
//! tail one 128-byte line per thread instead of one bulk prefetch per block) through the knob
//! itself. A test binary of its own, since the test sets the knob for its whole process.

mod common;

use common::cuda_plans::{mamba1_plan_of, mamba2_split_plan_of, plan_of_checkpoint};
use kernels::cuda::CudaPlan;

fn plans() -> [CudaPlan; 3] {
    [plan_of_checkpoint(&compiler::model::default_model_dir(), Some("h100-w4a8")), mamba1_plan_of(Some("h100-w4a16")), mamba2_split_plan_of("h100-w4a8")]
}

/// The knob changes only the scans' template arguments, and its source compiles for sm_90
/// without spilling, with scan entries that prefetch line by line.
#[test]
fn the_line_by_line_l2_tail_compiles() {
    let default = plans();
    std::env::set_var("QUAMBA_CUDA_L2_AHEAD_LINES", "1");
    let lines = plans();
    std::env::remove_var("QUAMBA_CUDA_L2_AHEAD_LINES");
    for (off, on) in default.iter().zip(&lines) {
        let changed: Vec<(&str, &str)> = off.source.lines().zip(on.source.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(off.source.lines().count(), on.source.lines().count());
        assert!(!changed.is_empty(), "the knob changes the source");
        for (a, b) in &changed {
            // The argument follows the defaulted ones before it: an ungated SSD's GATED too.
            let added = if a.contains("quamba::ssd_scan<") && !a.contains("chain_x, chain_z, partials);") { ", false, true" } else { ", true" };
            let expected = a.replacen(">(x, dt,", &format!("{added}>(x, dt,"), 1);
            assert!((a.contains("quamba::ssd_scan<") || a.contains("quamba::selective_step_dt<")) && *b == expected, "only a scan's template arguments change:\n{a}\n{b}");
        }
    }
    if !runtime::cuda::nvrtc_available() {
        assert!(std::env::var("QUAMBA_REQUIRE_NVRTC").is_err(), "QUAMBA_REQUIRE_NVRTC is set but libnvrtc cannot be loaded");
        return;
    }
    for p in &lines {
        let ptx = runtime::cuda::compile_ptx(&p.source, "sm_90").expect("sm_90");
        assert!(!ptx.contains("ld.local") && !ptx.contains("st.local"), "no spills");
        let asking = ptx.split(".entry ").filter(|e| (e.starts_with("ssd_") || e.starts_with("scan_")) && e.contains("prefetch.global.L2")).count();
        assert!(asking > 0, "a scan entry prefetches line by line");
    }
}
