//! The machine code of the generated kernels at the real models' shapes (sm_90 SASS, built by
//! NVRTC and read with nvdisasm): no kernel uses a global load before its dependency wait.
//!
//! A kernel requests loads before `griddepcontrol.wait` (SASS `ACQBULK`) so that they are in
//! flight while the previous kernel finishes. An instruction that reads a loaded register before
//! the wait (a spill store of it, arithmetic, a move to a uniform register) stalls the warp until
//! the load returns, so the wait returns a memory round trip late wherever the block started
//! after its predecessor had ended. ptxas decides where those reads go, so neither the source
//! nor the PTX shows them; two such stalls were found by hand in the SASS (Mamba1's decode step,
//! 1.8 % of a mamba-2.8b step; in_proj's conv state: bench/RESULTS.md, fifteenth and sixteenth
//! sessions). `bench/sass_prewait.py` is the same check for a cubin built elsewhere (the device's
//! own ptxas). Needs libnvrtc and nvdisasm (`QUAMBA_NVDISASM`, else on the PATH); skipped
//! elsewhere unless QUAMBA_REQUIRE_NVDISASM=1.

use std::path::{Path, PathBuf};
use std::process::Command;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::synth::{synthesize, Like};
use compiler::target::Target;
use runtime::tokenizer::Tokenizer;

/// Where nvdisasm is, if it runs.
fn nvdisasm() -> Option<PathBuf> {
    let path = std::env::var_os("QUAMBA_NVDISASM").map_or_else(|| PathBuf::from("nvdisasm"), PathBuf::from);
    Command::new(&path).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| path)
}

/// Each function of nvdisasm's listing (`.text.NAME:` then `/*0000*/ OPCODE operands ;` lines)
/// with its instructions in address order.
fn sass_functions(listing: &str) -> Vec<(String, Vec<String>)> {
    let mut functions: Vec<(String, Vec<String>)> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix(".text.").and_then(|l| l.strip_suffix(':')) {
            functions.push((name.to_string(), Vec::new()));
        } else if let (Some(rest), Some((_, instructions))) = (line.strip_prefix("/*"), functions.last_mut()) {
            if let Some((_, text)) = rest.split_once("*/") {
                // nvdisasm may annotate an instruction (`(*"SpillRefill"*)`) after its `;`.
                let text = text.split("(*").next().unwrap_or(text).trim().trim_end_matches(';').trim();
                if !text.is_empty() {
                    instructions.push(text.to_string());
                }
            }
        }
    }
    functions
}

/// The registers named in one operand (`R12`, `R12.64` is R12 and R13).
fn registers(operand: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let mut rest = operand;
    while let Some(at) = rest.find('R') {
        let after = &rest[at + 1..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let word_start = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        if word_start && !digits.is_empty() {
            let r: u32 = digits.parse().unwrap_or(u32::MAX);
            found.push(r);
            if after[digits.len()..].starts_with(".64") {
                found.push(r + 1);
            }
        }
        rest = after;
    }
    found
}

/// Registers a load or a wide result writes from its first destination register.
fn written_width(opcode: &str) -> u32 {
    if opcode.contains(".128") {
        4
    } else if opcode.contains(".64") || opcode.contains(".WIDE") {
        2
    } else {
        1
    }
}

/// The instructions before the function's first `ACQBULK` that read a register whose global
/// load is still pending (nothing has overwritten it since), each with the load.
fn early_uses(instructions: &[String]) -> Vec<String> {
    let mut pending: std::collections::HashMap<u32, &str> = std::collections::HashMap::new();
    let mut found = Vec::new();
    for text in instructions {
        // A guard (`@P0`, `@!UP1`) does not change what the instruction reads or writes.
        let body = match text.split_once(' ') {
            Some((guard, rest)) if guard.starts_with('@') => rest.trim(),
            _ => text.as_str(),
        };
        let (opcode, operands) = body.split_once(' ').unwrap_or((body, ""));
        if opcode.starts_with("ACQBULK") {
            return found;
        }
        let operands: Vec<&str> = operands.split(',').map(str::trim).collect();
        let stores = ["ST", "RED", "ATOM"].iter().any(|s| opcode.starts_with(s));
        let sources = if stores { &operands[..] } else { operands.get(1..).unwrap_or(&[]) };
        for r in sources.iter().flat_map(|o| registers(o)) {
            if let Some(load) = pending.get(&r) {
                found.push(format!("`{text}` reads R{r} of `{load}`"));
            }
        }
        let destination = operands.first().filter(|_| !stores).and_then(|o| o.strip_prefix('R')).and_then(|d| d.parse::<u32>().ok());
        if let Some(first) = destination {
            let width = written_width(opcode);
            for r in first..first + width {
                pending.remove(&r);
            }
            if opcode.starts_with("LDG") || opcode.starts_with("LD.") || opcode == "LD" {
                for r in first..first + width {
                    pending.insert(r, text);
                }
            }
        }
    }
    Vec::new() // no wait: nothing was requested ahead of one
}

#[test]
fn a_spill_of_a_pending_load_before_the_wait_is_found() {
    let listing = ".text.gemv_8:\n        /*0840*/                   LDG.E.STRONG.GPU R41, desc[UR6][R6.64+0x5400] ;\n        /*0850*/                   LDG.E.STRONG.GPU R3, desc[UR6][R6.64] ;\n        /*0860*/               @P1 LDG.E R2, desc[UR6][R12.64] ;\n        /*0870*/                   IMAD.MOV.U32 R41, RZ, RZ, RZ ;\n        /*0880*/                   FADD R7, R41, 1 ;\n        /*0910*/                   STL [R1], R3 ;\n        /*0930*/                   ACQBULK ;\n        /*0940*/                   FADD R5, R2, R3 ;\n.text.clean:\n        /*0000*/                   LDG.E.64 R4, desc[UR6][R2.64] ;\n        /*0010*/                   ACQBULK ;\n        /*0020*/                   DADD R6, R4, R4 ;\n";
    let functions = sass_functions(listing);
    assert_eq!(functions.iter().map(|(n, i)| (n.as_str(), i.len())).collect::<Vec<_>>(), [("gemv_8", 8), ("clean", 3)]);
    // R41 was overwritten before its use; R3's spill store waits for its load; after the wait,
    // anything goes.
    assert_eq!(early_uses(&functions[0].1), ["`STL [R1], R3` reads R3 of `LDG.E.STRONG.GPU R3, desc[UR6][R6.64]`"]);
    assert!(early_uses(&functions[1].1).is_empty());
    assert_eq!(registers("desc[UR6][R12.64+0x4]"), [12, 13]);
    assert_eq!(registers("UR12"), Vec::<u32>::new());
}

/// The plan's source for a one-layer random checkpoint shaped like `like` (vocabulary 8192),
/// compiled for `target` without GPTQ.
fn real_shape_source(like: Like, target: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(compiler::model::default_model_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    synthesize(like, dir.path(), 7, Some(1), Some(8192)).unwrap();
    let ckpt = load_checkpoint(dir.path()).unwrap();
    let tok = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
    let calib = std::fs::read_to_string(compiler::model::default_model_dir().join("../text/calib.txt")).unwrap();
    let opts = CompileOptions { calib_samples: 1, calib_len: 16, gptq: false, ..CompileOptions::new(target.parse::<Target>().unwrap(), calib, "calib.txt") };
    let program = compile(&ckpt, &tok, &opts).unwrap();
    kernels::cuda::plan(program.executor().unwrap().verified_graph()).unwrap().source
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
    let tool = match nvdisasm() {
        Some(tool) if runtime::cuda::nvrtc_available() => tool,
        _ => {
            assert!(std::env::var("QUAMBA_REQUIRE_NVDISASM").is_err(), "QUAMBA_REQUIRE_NVDISASM is set but nvdisasm or libnvrtc cannot be run");
            eprintln!("skipped: no nvdisasm or libnvrtc on this machine");
            return;
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    let models = [(Like::Mamba2_2_7b, "h100-w4a8"), (Like::Mamba2_8b, "h100-w4a8"), (Like::Mamba2_8bNvidia, "h100-w4a8"), (Like::Mamba2_2_7b, "h100-w8a8")];
    for (like, target) in models {
        let source = real_shape_source(like, target);
        let cubin = runtime::cuda::compile_cubin(&source, "sm_90").unwrap_or_else(|e| panic!("{like:?} {target}: {e}"));
        let functions = sass_functions(&disassemble(&tool, &cubin.image, scratch.path()));
        let waiting = functions.iter().filter(|(_, i)| i.iter().any(|t| t.starts_with("ACQBULK"))).count();
        assert!(waiting * 2 > functions.len(), "{like:?} {target}: most kernels wait ({waiting} of {})", functions.len());
        let early: Vec<String> = functions.iter().flat_map(|(name, instructions)| early_uses(instructions).into_iter().map(move |u| format!("{name}: {u}"))).collect();
        assert!(early.is_empty(), "{like:?} {target}: loads used before the wait:\n{}", early.join("\n"));
    }
}
