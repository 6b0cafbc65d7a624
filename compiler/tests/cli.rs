//! The `quambac` binary as a user meets it: compile, inspect, eval and run an artifact, and
//! clear errors with a non-zero exit for bad input.

use std::process::Command;

fn quambac(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quambac")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn compile_inspect_eval_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.qmb");
    let out_s = out.to_str().unwrap();
    let (ok, _, err) = quambac(&["compile", "--target", "cpu-w8a8", "--calib-samples", "2", "--calib-len", "128", "-o", out_s]);
    assert!(ok, "{err}");
    let (ok, text, err) = quambac(&["inspect", out_s, "--json"]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["target"], "cpu-w8a8");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/text/sample.txt");
    let (ok, text, err) = quambac(&["eval", out_s, "--text", sample, "--limit", "2", "--json"]);
    assert!(ok, "{err}");
    let ppl = serde_json::from_str::<serde_json::Value>(&text).unwrap()["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 1000.0, "{ppl}");
    let (ok, text, err) = quambac(&["run", out_s, "--prompt", "To be, or not", "--max-tokens", "4"]);
    assert!(ok, "{err}");
    assert!(text.starts_with("To be, or not") && text.len() > "To be, or not".len(), "{text}");
}

#[test]
fn bad_input_fails_with_a_message() {
    let (ok, _, err) = quambac(&["compile", "--target", "tpu-w4a8", "-o", "/tmp/x.qmb"]);
    assert!(!ok && err.contains("unknown target `tpu-w4a8`"), "{err}");
    let (ok, _, err) = quambac(&["eval", "/nonexistent/model", "--text", "/nonexistent.txt"]);
    assert!(!ok && err.contains("/nonexistent/model"), "{err}");

    // A file that is not an artifact.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.qmb");
    std::fs::write(&junk, b"hello").unwrap();
    let (ok, _, err) = quambac(&["inspect", junk.to_str().unwrap()]);
    assert!(!ok && err.contains("not a quamba artifact"), "{err}");

    // An output that cannot be written leaves the old file intact.
    let blocked = dir.path().join("as_dir.qmb");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"x").unwrap();
    let (ok, _, err) = quambac(&["compile", "--target", "cpu-w8a8", "--calib-samples", "1", "--calib-len", "64", "-o", blocked.to_str().unwrap()]);
    assert!(!ok, "writing over a directory must fail");
    assert!(err.contains("as_dir.qmb"), "{err}");
    assert_eq!(std::fs::read(blocked.join("keep")).unwrap(), b"x");

    // Too little calibration text.
    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "just a few words").unwrap();
    let (ok, _, err) = quambac(&["compile", "--calib", tiny.to_str().unwrap(), "-o", dir.path().join("t.qmb").to_str().unwrap()]);
    assert!(!ok && err.contains("less than one 512-token calibration window"), "{err}");

    // A prompt file that is not UTF-8 for eval.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, [0xff, 0xfe, 0x00]).unwrap();
    let (ok, _, err) = quambac(&["eval", "--text", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("not valid UTF-8"), "{err}");
}
