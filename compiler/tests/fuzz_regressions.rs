//! Every input the fuzzers found a crash with (`fuzz/regressions/<target>/`) is replayed through
//! the same function the fuzz target calls and must not panic; every seed (`fuzz/seeds/<target>/`)
//! must load all the way, so the fuzzers start from valid inputs.

use std::path::{Path, PathBuf};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.sort();
    files
}

type Target = fn(&[u8]) -> bool;
const TARGETS: [(&str, Target); 4] = [
    ("pickle", compiler::fuzzing::pickle),
    ("torch_zip", compiler::fuzzing::torch_zip),
    ("checkpoint", compiler::fuzzing::checkpoint),
    ("artifact", compiler::fuzzing::artifact),
];

/// Removes the scratch directory `compiler::fuzzing` made for this thread.
fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(compiler::fuzzing::scratch_dir());
}

#[test]
fn crash_inputs_found_by_fuzzing_are_handled() {
    let mut replayed = 0;
    for (target, run) in TARGETS {
        for path in files(&format!("regressions/{target}")) {
            // A panic fails the test and names the file through the panic message below.
            eprintln!("replaying {}", path.display());
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "fuzz/regressions/ is empty or missing");
    remove_scratch_dir();
}

#[test]
fn fuzz_seeds_are_valid_inputs() {
    for (target, run) in TARGETS {
        let seeds = files(&format!("seeds/{target}"));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for path in seeds {
            assert!(run(&std::fs::read(&path).unwrap()), "{} does not load: a stale seed (regenerate it)", path.display());
        }
    }
    remove_scratch_dir();
}
