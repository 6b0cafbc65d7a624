//! The machine code of the generated kernels at the real models' shapes (sm_90 SASS, built by
//! NVRTC and read with nvdisasm): no kernel uses a global load before its dependency wait,
//! Mamba1's prefill scan runs a window of steps as one basic block, and the int4 tiled prefill
//! product's k-loop stays lean.
//!
//! A kernel requests loads before `griddepcontrol.wait` (SASS `ACQBULK`) so that they are in
//! flight while the previous kernel finishes. An instruction that reads a loaded register before
//! the wait (a spill store of it, arithmetic, a move to a uniform register) stalls the warp until
//! the load returns, so the wait returns a memory round trip late wherever the block started
//! after its predecessor had ended. ptxas decides where those reads go, so neither the source
//! nor the PTX shows them; two such stalls were found by hand in the SASS (Mamba1's decode step,
//! 1.8 % of a mamba-2.8b step; in_proj's conv state: bench/RESULTS.md, fifteenth and sixteenth
//! sessions). The analysis is `kernels::cuda::sass`, which `quambac cuda sass` also runs on a listing
//! built elsewhere (the device's own ptxas, `bench/gpu_sass.sh`). Needs libnvrtc and nvdisasm (`QUAMBA_NVDISASM`, else on the PATH); skipped
//! elsewhere unless QUAMBA_REQUIRE_NVDISASM=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cuda_plans::{plan_of_checkpoint, plan_with_int8_states, random_checkpoint_dir};
use compiler::synth::{synthesize, Like};

/// Where nvdisasm is, if it runs.
fn nvdisasm() -> Option<PathBuf> {
    let path = std::env::var_os("QUAMBA_NVDISASM").map_or_else(|| PathBuf::from("nvdisasm"), PathBuf::from);
    Command::new(&path).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| path)
}

/// nvdisasm where it and libnvrtc run; None (the test skipped) elsewhere, unless
/// QUAMBA_REQUIRE_NVDISASM is set.
fn nvdisasm_with_nvrtc() -> Option<PathBuf> {
    let tool = nvdisasm().filter(|_| runtime::cuda::nvrtc_available());
    if tool.is_none() {
        assert!(std::env::var("QUAMBA_REQUIRE_NVDISASM").is_err(), "QUAMBA_REQUIRE_NVDISASM is set but nvdisasm or libnvrtc cannot be run");
        eprintln!("skipped: no nvdisasm or libnvrtc on this machine");
    }
    tool
}

/// The plan's source for a one-layer random checkpoint shaped like `like` (vocabulary 8192),
/// compiled for `target`, with int8 SSM states where `int8_states`.
fn real_shape_source(like: Like, target: &str, int8_states: bool) -> String {
    let dir = random_checkpoint_dir();
    synthesize(like, dir.path(), 7, Some(1), Some(8192)).unwrap();
    if int8_states {
        plan_with_int8_states(dir.path(), target).source
    } else {
        plan_of_checkpoint(dir.path(), Some(target)).source
    }
}

/// nvdisasm's listing of `image`, written to a file in `dir`.
fn disassemble(tool: &Path, image: &[u8], dir: &Path) -> String {
    let path = dir.join("plan.cubin");
    std::fs::write(&path, image).unwrap();
    let out = Command::new(tool).arg("-c").arg(&path).output().unwrap();
    assert!(out.status.success(), "nvdisasm: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn no_kernel_uses_a_load_before_its_wait_at_real_shapes() {
    let Some(tool) = nvdisasm_with_nvrtc() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let models = [
        (Like::Mamba2_2_7b, "h100-w4a8", false),
        (Like::Mamba2_8b, "h100-w4a8", false),
        (Like::Mamba2_8bNvidia, "h100-w4a8", false),
        (Like::Mamba2_2_7b, "h100-w8a8", false),
        (Like::Mamba2_2_7b, "h100-w4a8", true),
        (Like::Mamba2_8b, "h100-w4a8", true),
    ];
    for (like, target, int8_states) in models {
        let what = format!("{like:?} {target}{}", if int8_states { " int8 states" } else { "" });
        let source = real_shape_source(like, target, int8_states);
        let cubin = runtime::cuda::compile_cubin(&source, "sm_90").unwrap_or_else(|e| panic!("{what}: {e}"));
        let functions = kernels::cuda::sass::functions(&disassemble(&tool, &cubin.image, scratch.path()));
        let waiting = functions.iter().filter(|(_, i)| i.iter().any(|t| t.starts_with("ACQBULK"))).count();
        assert!(waiting * 2 > functions.len(), "{what}: most kernels wait ({waiting} of {})", functions.len());
        let early: Vec<String> = functions.iter().flat_map(|(name, instructions)| kernels::cuda::sass::early_uses(instructions).into_iter().map(move |u| format!("{name}: {u}"))).collect();
        assert!(early.is_empty(), "{what}: loads used before the wait:\n{}", early.join("\n"));
    }
}

/// One line of an nvdisasm listing that matters here: a label (`.L_x_12:`), or an instruction's
/// opcode (its guard skipped) and text.
enum ListingLine<'a> {
    Label(&'a str),
    Instruction { opcode: &'a str, text: &'a str },
}

fn listing_lines(listing: &str) -> impl Iterator<Item = ListingLine<'_>> {
    listing.lines().map(str::trim).filter_map(|line| {
        if line.starts_with(".L_") {
            Some(ListingLine::Label(line.trim_end_matches(':')))
        } else {
            let (_, text) = line.strip_prefix("/*")?.split_once("*/")?;
            let text = text.trim();
            Some(ListingLine::Instruction { opcode: text.split_whitespace().find(|w| !w.starts_with('@')).unwrap_or(""), text })
        }
    })
}

/// The sizes of the basic blocks of a listing, counted in `opcode` instructions: a block ends at
/// a label and after a branch, call, exit or convergence instruction.
fn blocks_counting(listing: &str, opcode: &str) -> Vec<usize> {
    let mut blocks = vec![0];
    for line in listing_lines(listing) {
        match line {
            ListingLine::Label(_) => blocks.push(0),
            ListingLine::Instruction { opcode: op, .. } => {
                if op.starts_with(opcode) {
                    *blocks.last_mut().expect("one block at least") += 1;
                }
                if ["BRA", "BRX", "CALL", "RET", "EXIT", "BSSY", "BSYNC", "WARPSYNC"].iter().any(|b| op.starts_with(b)) {
                    blocks.push(0);
                }
            }
        }
    }
    blocks
}

/// mamba-2.8b's prefill scan computes a whole window's decays (8 steps of a thread's states) in
/// one basic block, so that ptxas can overlap a step with the next. With a bound checked at every
/// step, each was a block of its own, a dependent chain of about 800 cycles a step at its 1.2 warps
/// a scheduler (bench/RESULTS.md, twenty-fourth and twenty-fifth sessions).
#[test]
fn mamba1_prefill_scan_runs_a_window_in_one_basic_block() {
    use kernels::cuda::codegen::{self, StateForm};
    let Some(tool) = nvdisasm_with_nvrtc() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let (d_inner, d_state) = (5120, 16);
    let (channels, lanes) = codegen::scan_prefill_shape(d_inner, d_state, (128, 1));
    for state in [StateForm::F32, StateForm { columns: d_state, scale_floats: 2 * d_state, grouped: false }] {
        let entry = codegen::selective_scan(d_inner, d_state, lanes, channels, state, true).replace("ENTRY", "scan_prefill");
        let cubin = runtime::cuda::compile_cubin(&codegen::source(&[entry], 64), "sm_90").unwrap();
        let listing = disassemble(&tool, &cubin.image, scratch.path());
        let decays = blocks_counting(&listing, "MUFU.EX2");
        let window = codegen::scan_prefill_window() * d_state / lanes;
        let nonempty: Vec<usize> = decays.into_iter().filter(|&n| n > 0).collect();
        // The partial window's per-step loop and the softplus keep their own blocks: a listing
        // not split into blocks at all would show one.
        assert!(nonempty.len() > 2, "{state:?}: the listing did not split into basic blocks: {nonempty:?}");
        assert!(nonempty.iter().any(|&n| n >= window), "{state:?}: no basic block holds a window's {window} decays; blocks with any: {nonempty:?}");
    }
}

/// The opcodes of a one-kernel listing's loop with the most `opcode` instructions: the span from
/// a label to a branch back to it.
fn loop_with_most(listing: &str, opcode: &str) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    let mut labels = std::collections::HashMap::new();
    let mut loops = Vec::new();
    for line in listing_lines(listing) {
        match line {
            ListingLine::Label(label) => {
                labels.insert(label, ops.len());
            }
            ListingLine::Instruction { opcode: op, text } => {
                if op.starts_with("BRA") {
                    let target = text.split(['(', ')']).find(|w| w.starts_with(".L_"));
                    if let Some(&start) = target.and_then(|t| labels.get(t)) {
                        loops.push((start, ops.len()));
                    }
                }
                ops.push(op.to_string());
            }
        }
    }
    let count = |span: &[String]| span.iter().filter(|o| o.starts_with(opcode)).count();
    loops.into_iter().map(|(start, end)| ops[start..=end].to_vec()).max_by_key(|span| count(span)).unwrap_or_default()
}

/// The tiled prefill product with int4 weights and int8 activations (mamba-2.8b's in_proj and
/// out_proj shapes) keeps its k-loop lean: int8 fragments by `ldmatrix` (not one shared load per
/// register, about one per mma before), and at most 11 instructions per mma (14 for out_proj's
/// narrower warps). Under Nsight Compute the in_proj had executed 12
/// per mma, its listing's loop 20.9 (slab copies' index arithmetic, sign extensions, cleared
/// sums); now 9.2 (bench/RESULTS.md, twenty-sixth session).
#[test]
fn tiled_int4_product_loop_stays_lean() {
    use kernels::cuda::codegen::{self, GemmShape, TiledConfig};
    let Some(tool) = nvdisasm_with_nvrtc() else { return };
    let scratch = tempfile::tempdir().unwrap();
    for (k, n, most_per_mma) in [(2560, 10240, 11.0), (5120, 2560, 14.0)] {
        let shape = GemmShape { kind: 3, k, n, group: 128, vec: true };
        let entry = codegen::gemm_tiled(&shape, &TiledConfig::prefill(3, n).expect("tiled")).replace("ENTRY", "product");
        let cubin = runtime::cuda::compile_cubin(&codegen::source(&[entry], 64), "sm_90").unwrap();
        let listing = disassemble(&tool, &cubin.image, scratch.path());
        let k_loop = loop_with_most(&listing, "IMMA");
        let count = |name: &str| k_loop.iter().filter(|o| o.split('.').next() == Some(name)).count();
        let mmas = count("IMMA");
        assert!(mmas >= 32, "{k}x{n}: no k-loop of int8 mma found ({mmas} in the largest)");
        // (ptxas puts a few predicated-off `LDS RZ, [RZ]` beside the slab copies.)
        assert!(count("LDSM") > 0 && count("LDS") * 8 < mmas, "{k}x{n}: fragments not loaded by ldmatrix: {} LDSM, {} LDS", count("LDSM"), count("LDS"));
        let per_mma = k_loop.len() as f64 / mmas as f64;
        assert!(per_mma <= most_per_mma, "{k}x{n}: {per_mma:.1} instructions per mma in the k-loop (at most {most_per_mma})");
    }
}
