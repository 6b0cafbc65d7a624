//! `fold_norms` and `rotate_hadamard`: both keep the model's function (logits agree to 1e-5
//! relative error on real models), their IR is pinned by snapshots, and the online Hadamard
//! flattens the per-channel range of the out_proj input.

use std::path::{Path, PathBuf};

use compiler::calibrate::CalibrationSet;
use compiler::checkpoint::load_checkpoint;
use compiler::passes::blocks::{blocks, ends};
use compiler::passes::fold_norms::FoldNorms;
use compiler::passes::rotate_hadamard::RotateHadamard;
use compiler::passes::{run_passes, Pass, PassContext};
use compiler::program::Program;
use compiler::target::{Device, Method, Precision, Target};
use compiler::CompileError;
use ir::Op;
use runtime::tokenizer::Tokenizer;

const BATCH: usize = 2;
const SEQ: usize = 32;
const TOLERANCE: f64 = 1e-5;

fn context() -> PassContext {
    PassContext {
        target: Target { device: Device::Cpu, precision: Precision::W4A8 },
        method: Method::Quamba2,
        calib: CalibrationSet::default(),
        valid: None,
        scale_rules: Default::default(),
        a16_layers: Default::default(),
        gptq: false,
        progress: false,
    }
}

fn shared_model(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models").join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping {name}: ../shared is not present");
        None
    }
}

fn load(dir: &Path) -> Result<Program, CompileError> {
    Program::from_checkpoint(&load_checkpoint(dir)?)
}

fn run(program: &mut Program, pass: &dyn Pass) -> Result<(), CompileError> {
    run_passes(program, &[pass], &mut context(), None)
}

/// `BATCH` sequences of `len` real tokens (the shipped Shakespeare sample).
fn text_tokens(len: usize) -> Vec<i64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tokenizer = Tokenizer::from_file(&root.join("assets/mamba2-tiny/tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(root.join("assets/text/sample.txt")).unwrap();
    let ids = tokenizer.encode(&text[..20_000]).unwrap();
    assert!(ids.len() >= 1000 + BATCH * len);
    // Two windows from different places, so the batch rows differ.
    [ids[..len].to_vec(), ids[1000..1000 + len].to_vec()].concat()
}

fn logits(program: &Program, tokens: &[i64]) -> Vec<f32> {
    let exec = program.executor().unwrap();
    let mut state = exec.new_state(BATCH);
    exec.forward(&mut state, tokens).unwrap().data
}

/// ‖a − b‖ / ‖b‖, accumulated in f64.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// Runs fold → rotate (and the two halves of rotate on their own) and checks the logits.
fn check_invariance(name: &str, original: &Program) {
    let tokens = text_tokens(SEQ);
    let reference = logits(original, &tokens);

    let mut folded = original.clone();
    run(&mut folded, &FoldNorms).unwrap();
    let fold_err = relative_error(&logits(&folded, &tokens), &reference);

    let mut results = vec![("fold_norms", fold_err)];
    for (label, residual, online) in
        [("fold+rotate{residual,online}", true, true), ("fold+rotate{residual}", true, false), ("fold+rotate{online}", false, true)]
    {
        let mut rotated = folded.clone();
        run(&mut rotated, &RotateHadamard { residual, online }).unwrap();
        results.push((label, relative_error(&logits(&rotated, &tokens), &reference)));
    }
    for (label, err) in &results {
        eprintln!("{name}: {label}: relative logit error {err:.3e}");
    }
    for (label, err) in results {
        assert!(err <= TOLERANCE, "{name}: {label} changed the logits: relative error {err:.3e}");
    }
}

#[test]
fn mamba2_tiny_keeps_its_function() {
    check_invariance("mamba2-tiny", &load(&compiler::model::default_model_dir()).unwrap());
}

#[test]
fn mamba1_tiny_state_spaces_keeps_its_function() {
    let Some(dir) = shared_model("mamba1-tiny-ss") else { return };
    match load(&dir) {
        Ok(program) => check_invariance("mamba1-tiny-ss", &program),
        Err(e) => eprintln!("skipping mamba1-tiny-ss: it does not load yet: {e}"),
    }
}

#[test]
fn mamba1_small_keeps_its_function() {
    let Some(dir) = shared_model("mamba1-small") else { return };
    check_invariance("mamba1-small", &load(&dir).unwrap());
}

#[test]
fn mamba2_small_keeps_its_function() {
    let Some(dir) = shared_model("mamba2-small") else { return };
    check_invariance("mamba2-small", &load(&dir).unwrap());
}

#[test]
fn fold_norms_keeps_a_tied_head_tied_and_the_embedding_unchanged() {
    let original = load(&compiler::model::default_model_dir()).unwrap();
    let mut folded = original.clone();
    run(&mut folded, &FoldNorms).unwrap();
    let g = &folded.graph;
    let e = ends(g).unwrap();
    let (Op::Embedding { table }, Op::LmHead { weight: head }) = (&g.node(e.embedding).op, &g.node(e.lm_head).op) else {
        panic!("unexpected ends");
    };
    assert_eq!(table, head, "a tied head stays tied (untying would store a second vocab×d table)");
    assert_eq!(folded.values(*table), original.values(*table), "the embedding table must not change");
    for v in g.values() {
        if let Op::RmsNorm { weight, .. } = g.node(v).op {
            // Only the final norm in front of the tied head keeps its weight.
            assert_eq!(weight.is_some(), v == e.norm_f, "rms_norm {v}");
        }
    }
}

#[test]
fn rotation_keeps_a_tied_head_tied_between_two_online_transforms() {
    let mut program = load(&compiler::model::default_model_dir()).unwrap();
    run(&mut program, &FoldNorms).unwrap();
    run(&mut program, &RotateHadamard { residual: true, online: false }).unwrap();
    let g = &program.graph;
    let e = ends(g).unwrap();
    let head_in = g.inputs(e.lm_head)[0];
    assert!(matches!(g.node(head_in).op, Op::Hadamard), "the head reads a hadamard");
    assert_eq!(g.inputs(head_in)[0], e.norm_f);
    assert!(matches!(g.node(g.inputs(e.norm_f)[0]).op, Op::Hadamard), "the final norm reads a hadamard");
}

#[test]
fn rotation_requires_folded_norms() {
    let mut program = load(&compiler::model::default_model_dir()).unwrap();
    let err = run(&mut program, &RotateHadamard { residual: true, online: false }).unwrap_err();
    assert!(matches!(err, CompileError::Structure(_)), "{err}");
    assert!(err.to_string().contains("run fold_norms"), "{err}");
    // The online transform alone does not touch the residual stream, so it needs no folding.
    run(&mut program, &RotateHadamard { residual: false, online: true }).unwrap();
    let again = run(&mut program, &RotateHadamard { residual: false, online: true }).unwrap_err();
    assert!(again.to_string().contains("already has an online hadamard"), "{again}");
}

#[test]
fn mamba2_tiny_ir_after_fold_norms() {
    let mut program = load(&compiler::model::default_model_dir()).unwrap();
    run(&mut program, &FoldNorms).unwrap();
    insta::assert_snapshot!(program.graph.to_string());
}

#[test]
fn mamba2_tiny_ir_after_rotate_hadamard() {
    let mut program = load(&compiler::model::default_model_dir()).unwrap();
    run(&mut program, &FoldNorms).unwrap();
    run(&mut program, &RotateHadamard { residual: true, online: true }).unwrap();
    insta::assert_snapshot!(program.graph.to_string());
}

/// Per-channel absmax of each block's out_proj input, over `tokens`.
fn out_proj_input_absmax(program: &Program, tokens: &[i64]) -> Vec<Vec<f32>> {
    let layers = blocks(&program.graph).unwrap();
    let inputs: Vec<_> = layers.iter().map(|b| program.graph.inputs(b.out_proj)[0]).collect();
    let mut absmax: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
    let exec = program.executor().unwrap();
    let mut state = exec.new_state(BATCH);
    exec.forward_observed(&mut state, tokens, &mut |v, data, width| {
        if let Some(layer) = inputs.iter().position(|i| *i == v) {
            let m = &mut absmax[layer];
            m.resize(width, 0.0);
            for row in data.chunks_exact(width) {
                m.iter_mut().zip(row).for_each(|(m, x)| *m = m.max(x.abs()));
            }
        }
    })
    .unwrap();
    absmax
}

/// max / mean of a per-channel absmax vector: 1 for a perfectly flat profile.
fn peak_to_mean(absmax: &[f32]) -> f32 {
    let max = absmax.iter().fold(0.0f32, |a, b| a.max(*b));
    max / (absmax.iter().sum::<f32>() / absmax.len() as f32)
}

fn check_flatter(name: &str, original: &Program) {
    let tokens = text_tokens(128);
    let mut rotated = original.clone();
    run(&mut rotated, &FoldNorms).unwrap();
    run(&mut rotated, &RotateHadamard { residual: true, online: true }).unwrap();
    let before = out_proj_input_absmax(original, &tokens);
    let after = out_proj_input_absmax(&rotated, &tokens);
    for (layer, (b, a)) in before.iter().zip(&after).enumerate() {
        let (b, a) = (peak_to_mean(b), peak_to_mean(a));
        eprintln!("{name} layer {layer}: out_proj input per-channel absmax max/mean {b:.2} → {a:.2}");
        assert!(a < b, "{name} layer {layer}: the online hadamard did not flatten the out_proj input ({b} → {a})");
    }
}

#[test]
fn online_hadamard_flattens_the_out_proj_input() {
    check_flatter("mamba2-tiny", &load(&compiler::model::default_model_dir()).unwrap());
    if let Some(dir) = shared_model("mamba1-small") {
        check_flatter("mamba1-small", &load(&dir).unwrap());
    }
}
