//! The bad input users really hit, through the `quambac` binary: every case must exit non-zero,
//! name the file (or argument) and the problem on stderr, never panic, and lose nothing (an
//! output that cannot be written leaves the previous file byte-identical).
//!
//! The library-level versions of these cases (with typed errors) are in `bad_checkpoints.rs`
//! and `runtime/tests/artifact.rs`; this file checks what reaches the user.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use compiler::checkpoint::RawTensor;
use safetensors::tensor::TensorView;

fn quambac() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quambac"))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `cmd` failed cleanly and that stderr contains every one of `wanted`.
#[track_caller]
fn assert_fails_with(mut cmd: Command, wanted: &[&str]) -> String {
    let out = cmd.output().expect("quambac starts");
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{cmd:?} succeeded, expected an error containing {wanted:?}");
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: a user error exits with 1 (not a signal or a panic's 101): {err}");
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
    for w in wanted {
        assert!(err.contains(w), "{cmd:?}: stderr lacks `{w}`:\n{err}");
    }
    err
}

fn inspect(model: &Path) -> Command {
    let mut c = quambac();
    c.arg("inspect").arg(model);
    c
}

fn embedded() -> PathBuf {
    compiler::model::default_model_dir()
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

fn embedded_tensors() -> BTreeMap<String, RawTensor> {
    compiler::checkpoint::safetensors_file::read_safetensors(&embedded().join("model.safetensors")).unwrap().into_iter().collect()
}

/// A copy of the embedded model (config, tokenizer) with the given tensors.
fn checkpoint_with(tensors: &BTreeMap<String, RawTensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(embedded().join(f), dir.path().join(f)).unwrap();
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype, ir::DType::F32, "the embedded model is stored in f32");
            (n.clone(), TensorView::new(safetensors::Dtype::F32, t.shape.clone(), &t.data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

fn set_first_value(t: &mut RawTensor, v: f32) {
    t.data[..4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn broken_safetensors_are_named() {
    let original = std::fs::read(embedded().join("model.safetensors")).unwrap();
    let truncated = checkpoint_with(&embedded_tensors());
    let path = truncated.path().join("model.safetensors");
    std::fs::write(&path, &original[..original.len() / 3]).unwrap();
    assert_fails_with(inspect(truncated.path()), &["model.safetensors", "not a valid safetensors file"]);

    // A header length far beyond the file.
    let mut corrupt = original.clone();
    corrupt[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &corrupt).unwrap();
    assert_fails_with(inspect(truncated.path()), &["model.safetensors", "not a valid safetensors file"]);

    // Garbage where the JSON header should be.
    let mut garbage = original;
    garbage[8..40].fill(0xff);
    std::fs::write(&path, &garbage).unwrap();
    assert_fails_with(inspect(truncated.path()), &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn wrong_tensors_are_named() {
    type Edit = Box<dyn Fn(&mut BTreeMap<String, RawTensor>)>;
    let cases: Vec<(Edit, Vec<&str>)> = vec![
        (Box::new(|t| drop(t.remove("backbone.layers.1.mixer.D"))), vec!["missing tensor `backbone.layers.1.mixer.D`"]),
        (
            Box::new(|t| {
                let extra = t["backbone.layers.0.mixer.D"].clone();
                t.insert("backbone.layers.0.mixer.surprise".into(), extra);
            }),
            vec!["backbone.layers.0.mixer.surprise"],
        ),
        (
            Box::new(|t| {
                let d = t.get_mut("backbone.layers.0.mixer.D").unwrap();
                d.shape = vec![d.shape[0] / 2, 2];
            }),
            vec!["backbone.layers.0.mixer.D", "shape"],
        ),
        (Box::new(|t| set_first_value(t.get_mut("backbone.layers.0.mixer.in_proj.weight").unwrap(), f32::NAN)), vec!["backbone.layers.0.mixer.in_proj.weight", "non-finite"]),
        (Box::new(|t| set_first_value(t.get_mut("backbone.embeddings.weight").unwrap(), f32::INFINITY)), vec!["backbone.embeddings.weight", "non-finite"]),
    ];
    for (edit, wanted) in cases {
        let mut tensors = embedded_tensors();
        edit(&mut tensors);
        let dir = checkpoint_with(&tensors);
        let mut wanted = wanted.clone();
        let shown = dir.path().display().to_string();
        wanted.push(&shown);
        let err = assert_fails_with(inspect(dir.path()), &wanted);
        // `compile` and `run` load through the same path and must say the same.
        let mut run = quambac();
        run.args(["run", "--prompt", "x"]).arg(dir.path());
        assert_eq!(assert_fails_with(run, &wanted), err);
    }
}

// ---------------------------------------------------------------------------------------------
// pytorch_model.bin (state-spaces layout)
// ---------------------------------------------------------------------------------------------

/// A state-spaces `config.json` for a small Mamba1.
fn state_spaces_config(layer: &str) -> String {
    serde_json::json!({
        "d_model": 64, "n_layer": 2, "vocab_size": 256,
        "ssm_cfg": {"layer": layer, "d_state": 16, "d_conv": 4, "expand": 2},
        "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
        "pad_vocab_size_multiple": 8, "tie_embeddings": true
    })
    .to_string()
}

/// A directory with a state-spaces config and a `pytorch_model.bin` zip holding `pickle`.
fn torch_checkpoint(pickle: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), state_spaces_config("Mamba1")).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(dir.path().join("pytorch_model.bin")).unwrap());
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [("archive/data.pkl", pickle), ("archive/byteorder", b"little"), ("archive/version", b"3\n")] {
        zip.start_file(name, stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    dir
}

/// `os.system(command)` as a protocol-2 pickle: what a malicious checkpoint carries.
fn os_system_pickle(command: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"cos\nsystem\n");
    p.push(b'X');
    p.extend_from_slice(&(command.len() as u32).to_le_bytes());
    p.extend_from_slice(command.as_bytes());
    p.extend_from_slice(&[0x85, b'R', b'.']);
    p
}

#[test]
fn a_pickle_naming_a_global_outside_the_allow_list_is_refused_and_never_run() {
    let witness = tempfile::tempdir().unwrap();
    let pwned = witness.path().join("pwned");
    let dir = torch_checkpoint(&os_system_pickle(&format!("touch {}", pwned.display())));
    assert_fails_with(inspect(dir.path()), &["pytorch_model.bin", "os.system"]);
    assert!(!pwned.exists(), "the pickle's payload ran");
}

#[test]
fn broken_pytorch_model_bin_is_named() {
    // A valid archive whose pickle stops half-way.
    let dir = torch_checkpoint(&os_system_pickle("true")[..8]);
    assert_fails_with(inspect(dir.path()), &["pytorch_model.bin", "pickle", "truncated"]);

    // The archive itself truncated.
    let path = dir.path().join("pytorch_model.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(inspect(dir.path()), &["pytorch_model.bin"]);

    // Not a zip at all (e.g. a legacy pre-1.6 torch.save file or a git-lfs pointer).
    std::fs::write(&path, b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 6074949\n").unwrap();
    assert_fails_with(inspect(dir.path()), &["pytorch_model.bin"]);
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_family_or_ssm_cfg_is_named() {
    let hf = checkpoint_with(&embedded_tensors());
    let config_path = hf.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["model_type"] = "mamba3".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    assert_fails_with(inspect(hf.path()), &["config.json", "unknown model_type `mamba3`"]);

    std::fs::write(&config_path, "{ not json").unwrap();
    assert_fails_with(inspect(hf.path()), &["config.json"]);

    let ss = torch_checkpoint(&os_system_pickle("true"));
    std::fs::write(ss.path().join("config.json"), state_spaces_config("Mamba3")).unwrap();
    assert_fails_with(inspect(ss.path()), &["config.json", "unknown ssm_cfg.layer `Mamba3`"]);
}

// ---------------------------------------------------------------------------------------------
// Calibration text
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_or_tiny_calibration_text_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.qmb");
    for (name, content) in [("empty.txt", ""), ("tiny.txt", "ROMEO: hi")] {
        let calib = dir.path().join(name);
        std::fs::write(&calib, content).unwrap();
        let mut c = quambac();
        c.args(["compile", "--target", "cpu-w8a8", "--calib"]).arg(&calib).arg("-o").arg(&out);
        assert_fails_with(c, &[name, "less than one 512-token calibration window"]);
    }
    let mut c = quambac();
    c.args(["compile", "--calib", "/nonexistent/calib.txt", "-o"]).arg(&out);
    assert_fails_with(c, &["/nonexistent/calib.txt", "No such file"]);
    assert!(!out.exists(), "a failed compile wrote its output");
}

// ---------------------------------------------------------------------------------------------
// Artifacts
// ---------------------------------------------------------------------------------------------

/// A small cpu-w8a8 artifact of the embedded model, compiled once per test binary.
fn artifact() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bad_input-{}.qmb", std::process::id()));
        let out = quambac().args(["compile", "--target", "cpu-w8a8", "--calib-samples", "1", "--calib-len", "64", "-o"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    })
}

/// Rewrites the trailing CRC-32 after an edit, so the edit itself is what the reader meets.
fn fix_checksum(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    bytes[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn broken_artifacts_are_named() {
    let good = artifact();
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, Edit, &str); 6] = [
        ("magic.qmb", |b| b[0] = b'X', "not a quamba artifact"),
        ("version.qmb", |b| b[8..12].copy_from_slice(&7u32.to_le_bytes()), "format version 7"),
        ("flipped.qmb", |b| { let mid = b.len() / 2; b[mid] ^= 0x10 }, "checksum mismatch"),
        ("truncated.qmb", |b| b.truncate(b.len() - 1000), "checksum mismatch"),
        ("empty.qmb", |b| b.clear(), "not a quamba artifact"),
        (
            "target.qmb",
            |b| {
                replace_once(b, b"cpu-w8a8", b"tpu-w8a8");
                fix_checksum(b);
            },
            "compiled for tpu-w8a8",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, edit, problem) in cases {
        let mut bytes = good.to_vec();
        edit(&mut bytes);
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let mut run = quambac();
        run.arg("run").arg(&path).args(["--prompt", "ROMEO:"]);
        assert_fails_with(run, &[name, problem]);
        let mut eval = quambac();
        eval.arg("eval").arg(&path).arg("--text").arg(embedded().join("../text/sample.txt"));
        assert_fails_with(eval, &[name, problem]);
        assert_fails_with(inspect(&path), &[name, problem]);
    }
}

// ---------------------------------------------------------------------------------------------
// Prompts and text
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn a_prompt_that_is_not_utf8_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let mut c = quambac();
    c.args(["run", "--prompt"]).arg(std::ffi::OsStr::from_bytes(b"ROMEO\xff:"));
    assert_fails_with(c, &["--prompt", "not valid UTF-8", "byte 5"]);

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("latin1.txt");
    std::fs::write(&text, b"caf\xe9 au lait").unwrap();
    let mut c = quambac();
    c.arg("eval").arg("--text").arg(&text);
    assert_fails_with(c, &["latin1.txt", "not valid UTF-8", "byte 3"]);
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// `compile -o out` run with a 4 KiB file-size limit (`ulimit -f`), so writing the artifact
/// fails part-way even for root; SIGXFSZ is ignored so the write returns EFBIG instead.
#[cfg(unix)]
fn compile_with_file_size_limit(out: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 4; exec \"$0\" compile --target cpu-w8a8 --calib-samples 1 --calib-len 64 -o \"$1\"")
        .arg(env!("CARGO_BIN_EXE_quambac"))
        .arg(out);
    c
}

#[cfg(unix)]
#[test]
fn an_output_that_cannot_be_written_leaves_the_old_one_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.qmb");
    let old = b"the previous artifact, which must survive".repeat(3);
    std::fs::write(&out, &old).unwrap();
    let err = assert_fails_with(compile_with_file_size_limit(&out), &["model.qmb", "File too large"]);
    assert_eq!(err.matches("File too large").count(), 1, "the cause is repeated: {err}");
    assert_eq!(std::fs::read(&out).unwrap(), old, "the old output changed");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["model.qmb"], "a temporary file was left behind");

    // A directory that does not exist, and a parent that is a file.
    let mut c = quambac();
    c.args(["compile", "--target", "cpu-w8a8", "--calib-samples", "1", "--calib-len", "64", "-o"]).arg(dir.path().join("missing/model.qmb"));
    assert_fails_with(c, &["missing/model.qmb"]);
    let mut c = quambac();
    c.args(["compile", "--target", "cpu-w8a8", "--calib-samples", "1", "--calib-len", "64", "-o"]).arg(out.join("model.qmb"));
    assert_fails_with(c, &["model.qmb/model.qmb"]);
    assert_eq!(std::fs::read(&out).unwrap(), old);
}
