//! `examples/c/generate.c` built with gcc against libquamba and run on the embedded model
//! compiled to an artifact: its output must be exactly what the Rust runtime API generates for
//! the same two-turn conversation, and a bad path must fail with the path in the message.

use std::path::{Path, PathBuf};
use std::process::Command;

use compiler::compile::{compile, CompileOptions};
use compiler::target::Target;
use runtime::model::Model;
use runtime::sampling::{Sampler, SamplingConfig};

/// The embedded mamba2-tiny compiled for cpu-w8a8 on a little calibration text.
fn compile_tiny(out: &Path) {
    let dir = compiler::model::default_model_dir();
    let ckpt = compiler::checkpoint::load_checkpoint(&dir).unwrap();
    let tok_path = ckpt.tokenizer_path().unwrap();
    let tokenizer = runtime::tokenizer::Tokenizer::from_file(&tok_path).unwrap();
    let calib_text = std::fs::read_to_string(dir.join("../text/calib.txt")).unwrap();
    let opts = CompileOptions { calib_samples: 2, calib_len: 64, gptq: false, ..CompileOptions::new("cpu-w8a8".parse::<Target>().unwrap(), calib_text[..20_000].to_string(), "calib.txt") };
    let program = compile(&ckpt, &tokenizer, &opts).unwrap();
    let json = std::fs::read_to_string(&tok_path).unwrap();
    compiler::artifact::write(out, &program, opts.target, opts.method, Some(json)).unwrap();
}

/// The directory holding libquamba.so next to this test binary (`target/<profile>/`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let found = [deps, deps.parent().unwrap()].into_iter().find(|d| d.join("libquamba.so").is_file()).map(Path::to_path_buf);
    found.unwrap_or_else(|| panic!("libquamba.so not found next to {}", exe.display()))
}

fn gcc_available() -> bool {
    Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// What the C example prints for one reply, produced through the Rust API.
fn expected_reply(model: &Model, state: &mut runtime::State, prompt: &str) -> String {
    let mut sampler = Sampler::new(SamplingConfig::default());
    let reply = model.generate(state, prompt, 24, &mut sampler, |_| true).unwrap();
    format!("{prompt}{}\n[{} tokens, {} bytes]\n", reply.text, reply.token_ids.len(), reply.text.len())
}

#[cfg(target_os = "linux")]
#[test]
fn the_c_example_generates_what_the_rust_api_generates() {
    if !gcc_available() {
        eprintln!("skipping: no gcc");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("tiny.qmb");
    compile_tiny(&artifact);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = library_dir();
    let exe = dir.path().join("generate");
    let built = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join("examples/c/generate.c"))
        .arg("-I")
        .arg(root.join("capi/include"))
        .arg("-L")
        .arg(&lib)
        .args(["-lquamba", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(built.status.success(), "gcc: {}", String::from_utf8_lossy(&built.stderr));

    let run = |args: &[&str]| Command::new(&exe).args(args).env("LD_LIBRARY_PATH", &lib).output().unwrap();
    let out = run(&[artifact.to_str().unwrap(), "ROMEO:", " JULIET:"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let model = Model::open(&artifact).unwrap();
    let mut state = model.new_state();
    let first = expected_reply(&model, &mut state, "ROMEO:");
    let second = expected_reply(&model, &mut state, " JULIET:");
    assert_eq!(stdout, format!("{first}{second}"));
    // The second reply continued the conversation: from a fresh state it differs.
    assert_ne!(second, expected_reply(&model, &mut model.new_state(), " JULIET:"));

    let missing = dir.path().join("missing.qmb");
    let out = run(&[missing.to_str().unwrap(), "ROMEO:"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing.qmb") && stderr.contains("No such file"), "{stderr}");
}
