//! Reading the machine code ptxas made of the generated kernels (a SASS listing from nvdisasm
//! or cuobjdump): which kernels use a global load before their dependency wait.
//!
//! A kernel requests loads before `griddepcontrol.wait` (SASS `ACQBULK`) so that they are in
//! flight while the previous kernel finishes. An instruction that reads a loaded register before
//! the wait (a spill store of it, arithmetic, a move to a uniform register) stalls the warp until
//! the load returns, so the wait returns a memory round trip late wherever the block started
//! after its predecessor had ended. ptxas decides where those reads go, so neither the source nor
//! the PTX shows them. The tests read NVRTC's build (`tests/cuda_sass.rs`); `quambac cuda sass`
//! reads a listing made elsewhere (the device's own ptxas, `bench/gpu_sass.sh`).

use std::collections::HashMap;

/// Each function of a SASS listing with its instructions in address order: nvdisasm's
/// (`.text.NAME:`) or cuobjdump's (`Function : NAME`), then `/*0000*/ OPCODE operands ;` lines.
pub fn functions(listing: &str) -> Vec<(String, Vec<String>)> {
    let mut functions: Vec<(String, Vec<String>)> = Vec::new();
    for line in listing.lines() {
        let line = line.trim();
        let named = line.strip_prefix(".text.").and_then(|l| l.strip_suffix(':')).or_else(|| line.strip_prefix("Function : "));
        if let Some(name) = named {
            functions.push((name.trim().to_string(), Vec::new()));
        } else if let (Some(rest), Some((_, instructions))) = (line.strip_prefix("/*"), functions.last_mut()) {
            if let Some((_, text)) = rest.split_once("*/") {
                // An instruction ends at its `;` (cuobjdump prints its encoding after it,
                // `/* 0x… */`) or at nvdisasm's annotation before that (`(*"SpillRefill"*)`).
                let text = text.split([';', '(']).next().unwrap_or(text).trim();
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
pub fn early_uses(instructions: &[String]) -> Vec<String> {
    let mut pending: HashMap<u32, &str> = HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_of_a_pending_load_before_the_wait_is_found() {
        let listing = ".text.gemv_8:\n        /*0840*/                   LDG.E.STRONG.GPU R41, desc[UR6][R6.64+0x5400] ;\n        /*0850*/                   LDG.E.STRONG.GPU R3, desc[UR6][R6.64] ;\n        /*0860*/               @P1 LDG.E R2, desc[UR6][R12.64] ;\n        /*0870*/                   IMAD.MOV.U32 R41, RZ, RZ, RZ ;\n        /*0880*/                   FADD R7, R41, 1 ;\n        /*0910*/                   STL [R1], R3 (*\"SpillRefill\"*) ;\n        /*0930*/                   ACQBULK ;\n        /*0940*/                   FADD R5, R2, R3 ;\n.text.clean:\n        /*0000*/                   LDG.E.64 R4, desc[UR6][R2.64] ;\n        /*0010*/                   ACQBULK ;\n        /*0020*/                   DADD R6, R4, R4 ;\n";
        let functions = functions(listing);
        assert_eq!(functions.iter().map(|(n, i)| (n.as_str(), i.len())).collect::<Vec<_>>(), [("gemv_8", 8), ("clean", 3)]);
        // R41 was overwritten before its use; R3's spill store waits for its load; after the wait,
        // anything goes.
        assert_eq!(early_uses(&functions[0].1), ["`STL [R1], R3` reads R3 of `LDG.E.STRONG.GPU R3, desc[UR6][R6.64]`"]);
        assert!(early_uses(&functions[1].1).is_empty());
        // cuobjdump's form of the same: its header, and each instruction's encoding after it.
        let cuobjdump = "\t\tFunction : gemv_8\n        /*0850*/                   LDG.E.STRONG.GPU R3, desc[UR6][R6.64] ;  /* 0x0000000606037981 */\n                                                                         /* 0x000ea8000c1ef900 */\n        /*0910*/                   STL [R1], R3 ;  /* 0x0000000301007387 */\n        /*0930*/                   ACQBULK ;  /* 0x000000000000782e */\n";
        let listed = super::functions(cuobjdump);
        assert_eq!(listed.iter().map(|(n, i)| (n.as_str(), i.len())).collect::<Vec<_>>(), [("gemv_8", 3)]);
        assert_eq!(early_uses(&listed[0].1), ["`STL [R1], R3` reads R3 of `LDG.E.STRONG.GPU R3, desc[UR6][R6.64]`"]);
        assert_eq!(registers("desc[UR6][R12.64+0x4]"), [12, 13]);
        assert_eq!(registers("UR12"), Vec::<u32>::new());
    }
}
