//! The Quamba2 pipeline end to end on the embedded mamba2-tiny: compile, write and reopen an
//! artifact, run it on the integer reference executor.

use std::path::Path;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::program::Program;
use compiler::target::{Method, Target};
use runtime::tokenizer::Tokenizer;

fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn compiled(target: &str, method: Method) -> Program {
    let dir = compiler::model::default_model_dir();
    let ckpt = load_checkpoint(&dir).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let opts = CompileOptions { method, calib_samples: 8, calib_len: 256, ..CompileOptions::new(target.parse::<Target>().unwrap(), std::fs::read_to_string(assets().join("text/calib.txt")).unwrap(), "calib.txt") };
    compile(&ckpt, &tok, &opts).unwrap()
}

/// Perplexity over the first 8 windows of 256 tokens of the repository's test-text sample.
fn sample_ppl(exec: &runtime::Executor) -> f64 {
    let tok = Tokenizer::from_file(&compiler::model::default_model_dir().join("tokenizer.json")).unwrap();
    let ids = tok.encode(&std::fs::read_to_string(assets().join("text/sample.txt")).unwrap()).unwrap();
    let windows: Vec<&[i64]> = ids.chunks_exact(256).take(8).collect();
    let s = runtime::perplexity::score_windows(exec, &windows).unwrap();
    s.perplexity()
}

fn fp_ppl() -> f64 {
    let dir = compiler::model::default_model_dir();
    sample_ppl(&Program::from_checkpoint(&load_checkpoint(&dir).unwrap()).unwrap().executor().unwrap())
}

#[test]
fn artifact_round_trip_computes_the_same_logits() {
    let program = compiled("cpu-w4a8", Method::Quamba2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.qmb");
    compiler::artifact::write(&path, &program, "cpu-w4a8".parse().unwrap(), Method::Quamba2, None).unwrap();
    let loaded = compiler::artifact::open(&path, Some("cpu-w4a8")).unwrap();
    let tokens: Vec<i64> = (0..48).map(|i| (i * 37 + 5) % 8192).collect();
    let a = program.executor().unwrap().forward(&mut program.executor().unwrap().new_state(2), &tokens).unwrap();
    let exec = &loaded.executor;
    let b = exec.forward(&mut exec.new_state(2), &tokens).unwrap();
    assert_eq!(a.data, b.data, "the artifact must hold exactly the compiled program");

    let wrong = compiler::artifact::open(&path, Some("orin-w8a8")).err().unwrap().to_string();
    assert!(wrong.contains("compiled for cpu-w4a8, not orin-w8a8"), "{wrong}");
}

#[test]
fn quantized_decode_matches_prefill() {
    // With f32 states between calls (the default), so that one call and one call per token
    // compute the same function (int8 states: tests/int8_states.rs).
    let dir = compiler::model::default_model_dir();
    let ckpt = load_checkpoint(&dir).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let calib = std::fs::read_to_string(assets().join("text/calib.txt")).unwrap();
    let opts = CompileOptions { calib_samples: 8, calib_len: 256, ..CompileOptions::new("cpu-w8a8".parse::<Target>().unwrap(), calib, "calib.txt") };
    let exec = compile(&ckpt, &tok, &opts).unwrap().executor().unwrap();
    let tokens: Vec<i64> = (0..24).map(|i| (i * 911 + 3) % 8192).collect();
    let full = exec.forward(&mut exec.new_state(1), &tokens).unwrap();
    // The float parts (chunked SSD vs the one-token step) differ in the last bits, which can move
    // a value across an int8 rounding boundary now and then: one level changes the logits by a
    // few tenths of a percent. Bound the worst position and the typical one.
    let mut state = exec.new_state(1);
    let mut errors = Vec::new();
    for (t, tok) in tokens.iter().enumerate() {
        let step = exec.forward(&mut state, &[*tok]).unwrap();
        let (a, b) = (step.row(0, 0), full.row(0, t));
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f32 = b.iter().map(|y| y * y).sum();
        errors.push((num / den).sqrt());
    }
    errors.sort_by(f32::total_cmp);
    let (median, worst) = (errors[errors.len() / 2], errors[errors.len() - 1]);
    assert!(median < 1e-3 && worst < 1e-2, "decode vs prefill: median {median:.2e}, worst {worst:.2e}");
}

#[test]
fn quamba2_w8a8_stays_within_one_percent_of_fp() {
    let fp = fp_ppl();
    let q = sample_ppl(&compiled("cpu-w8a8", Method::Quamba2).executor().unwrap());
    eprintln!("FP {fp:.3}, Quamba2 W8A8 {q:.3}");
    assert!(q < fp * 1.01, "W8A8 perplexity {q} is more than 1% above FP {fp}");
}

#[test]
fn quamba2_w4a8_beats_naive_and_stays_within_five_percent() {
    let fp = fp_ppl();
    let q2 = sample_ppl(&compiled("cpu-w4a8", Method::Quamba2).executor().unwrap());
    let naive = sample_ppl(&compiled("cpu-w4a8", Method::Naive).executor().unwrap());
    eprintln!("FP {fp:.3}, Quamba2 W4A8 {q2:.3}, naive W4A8 {naive:.3}");
    assert!(q2 < naive, "Quamba2 {q2} is not better than naive {naive}");
    assert!(q2 < fp * 1.05, "W4A8 perplexity {q2} is more than 5% above FP {fp}");
}

#[test]
fn w4_programs_use_integer_kernels_and_four_bit_weights() {
    let program = compiled("cpu-w4a8", Method::Quamba2);
    let text = program.graph.to_string();
    assert!(text.contains("qembedding"), "embedding is quantized");
    let float_linears = program.graph.values().into_iter().filter(|v| matches!(program.graph.node(*v).op, ir::Op::Linear { .. } | ir::Op::LmHead { .. } | ir::Op::Embedding { .. })).count();
    assert_eq!(float_linears, 0, "every linear, the head and the embedding are quantized");
    assert!(text.contains("act_scale="), "some linears read int8 activations");
    assert!(program.graph.weights().iter().any(|w| w.dtype == ir::DType::I4));
    let w16 = compiled("cpu-w4a16", Method::Quamba2).graph.to_string();
    assert!(!w16.contains("quantize") && !w16.contains("act_scale="), "W4A16 keeps activations in float");
}

/// The IR after each pass of the W8A8 Quamba2 recipe, as `--emit-ir` writes it: pinned so any
/// change to what a pass emits shows up in review. (The float rewrites have their own
/// before/after snapshots in the compiler's pass tests.)
#[test]
fn emitted_ir_after_each_pass_is_pinned() {
    let dir = compiler::model::default_model_dir();
    let ckpt = load_checkpoint(&dir).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = CompileOptions {
        target: "cpu-w8a8".parse().unwrap(),
        method: Method::Quamba2,
        calib_text: std::fs::read_to_string(assets().join("text/calib.txt")).unwrap(),
        calib_source: "calib.txt".into(),
        calib_samples: 2,
        calib_len: 128,
        valid_text: None,
        gptq: true,
        int8_states: true,
        emit_ir: Some(out.path().to_path_buf()),
        progress: false,
    };
    compile(&ckpt, &tok, &opts).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        ["00-lowered.qir", "01-fold_norms.qir", "02-sort_cluster_heads.qir", "03-rotate_hadamard.qir", "04-state_group_scales.qir", "05-quantize_states.qir", "06-quantize_activations.qir", "07-quantize_weights.qir"]
    );
    for (path, name) in files.iter().zip(&names) {
        let text = std::fs::read_to_string(path).unwrap();
        ir::verify(&ir::parse(&text).unwrap()).unwrap();
        if name.starts_with("05") || name.starts_with("06") || name.starts_with("07") {
            insta::assert_snapshot!(name.clone(), text);
        }
    }
}
