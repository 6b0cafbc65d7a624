//! What users read from `quambac`: help with examples for every command, JSON that parses with
//! the documented keys, and the `inspect --plot` pictures.

use std::process::Command;

fn quambac(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quambac")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = quambac(args);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn every_command_has_help_with_examples() {
    let (ok, top, _) = quambac(&["--help"]);
    assert!(ok && top.contains("Examples:"), "{top}");
    for command in ["compile", "run", "eval", "inspect", "bench"] {
        let (ok, help, err) = quambac(&[command, "--help"]);
        assert!(ok, "{command} --help: {err}");
        assert!(help.contains("Examples:") && help.contains(&format!("quambac {command}")), "{command} --help has no example:\n{help}");
        assert!(top.contains(command), "top-level help does not list {command}");
    }
}

#[test]
fn inspect_and_bench_print_json() {
    let info = json(&["inspect", "--json"]);
    assert_eq!(info["config"]["family"], "Mamba2");
    assert_eq!(info["parameters"], 1_486_816);
    let bench = json(&["bench", "--json", "--prompt-len", "16", "--decode-tokens", "4", "--repeats", "1"]);
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(bench[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {bench}");
    }
}

#[test]
fn inspect_plot_draws_why_the_method_works() {
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let info = json(&["inspect", "--json", "--plot", plots.to_str().unwrap(), "--plot-samples", "2"]);
    let files: Vec<&str> = info["plots"]["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files.len(), 3, "{info}");
    let titles = ["SSM input x", "out_proj input", "relative error of each layer"];
    let legends = ["Quamba2 int8 range", "naive int8 range", "Quamba2"];
    for ((file, title), legend) in files.iter().zip(titles).zip(legends) {
        let svg = std::fs::read_to_string(file).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{file} is not a complete SVG");
        assert!(svg.contains(title) && svg.contains("mamba2-tiny"), "{file} lacks its title");
        assert!(svg.contains(legend), "{file} lacks `{legend}`");
    }
    let errors = info["plots"]["layer_error"].as_array().unwrap();
    assert_eq!(errors.len(), 4);
    let mean = |key: &str| errors.iter().map(|e| e[key].as_f64().unwrap()).sum::<f64>() / errors.len() as f64;
    // The point of the pictures: Quamba2 keeps each layer closer to the float model than naive
    // per-tensor quantization does (on this model about 0.02 against 0.03).
    assert!(mean("quamba2") > 0.0 && mean("quamba2") < mean("naive"), "{errors:?}");

    // An artifact has no float model to compare with.
    let artifact = dir.path().join("tiny.qmb");
    let (ok, _, err) = quambac(&["compile", "--target", "cpu-w8a8", "--calib-samples", "1", "--calib-len", "64", "-o", artifact.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = quambac(&["inspect", artifact.to_str().unwrap(), "--plot", plots.to_str().unwrap()]);
    assert!(!ok && err.contains("tiny.qmb") && err.contains("--plot needs a checkpoint directory"), "{err}");
}
