//! The FP32 path against the transformers reference outputs stored beside every shared model:
//! full-sequence logits, greedy continuation through the recurrent decode path, and decode-step
//! logits equal to prefill logits. The embedded copy of mamba2-tiny is checked even without
//! `../shared`.

use std::path::{Path, PathBuf};

use compiler::model::FpModel;
use runtime::sampling::argmax;
use safetensors::SafeTensors;

struct Reference {
    input_ids: Vec<i64>,
    input_shape: Vec<usize>,
    logits: Vec<f32>,
    prompt_ids: Vec<i64>,
    greedy_ids: Vec<i64>,
}

fn read_reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors is readable");
    let st = SafeTensors::deserialize(&bytes).expect("reference.safetensors parses");
    let i64s = |name: &str| -> (Vec<i64>, Vec<usize>) {
        let t = st.tensor(name).unwrap();
        (t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(), t.shape().to_vec())
    };
    let logits = st.tensor("logits").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let (input_ids, input_shape) = i64s("input_ids");
    Reference { input_ids, input_shape, logits, prompt_ids: i64s("prompt_ids").0, greedy_ids: i64s("greedy_ids").0 }
}

/// ‖a − b‖₂ / ‖b‖₂.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn shared_model(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models").join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping {name}: ../shared is not present");
        None
    }
}

fn check_model(dir: &Path) {
    let model = FpModel::open(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let exec = &model.executor;
    let r = read_reference(dir);
    let (batch, seq) = (r.input_shape[0], r.input_shape[1]);

    // 1. Full-sequence logits for a batch of two sequences.
    let mut state = exec.new_state(batch);
    let logits = exec.forward(&mut state, &r.input_ids).unwrap();
    assert_eq!(logits.data.len(), r.logits.len(), "logit count");
    for b in 0..batch {
        let n = seq * exec.vocab();
        let e = rel_err(&logits.data[b * n..(b + 1) * n], &r.logits[b * n..(b + 1) * n]);
        eprintln!("{}: sequence {b} logits relative error {e:.2e}", dir.display());
        assert!(e < 1e-4, "{}: sequence {b} logits relative error {e:.3e} ≥ 1e-4", dir.display());
    }

    // 2. Decode step by step: every step's logits equal the prefill logits of that position.
    let mut step_state = exec.new_state(1);
    let first: Vec<i64> = r.input_ids[..seq].to_vec();
    for (t, tok) in first.iter().enumerate() {
        let step = exec.forward(&mut step_state, &[*tok]).unwrap();
        let e = rel_err(step.row(0, 0), logits.row(0, t));
        assert!(e < 1e-4, "{}: decode step {t} differs from prefill by {e:.3e}", dir.display());
    }

    // 3. Greedy continuation through prefill + recurrent decode matches the reference tokens.
    let mut gen_state = exec.new_state(1);
    let mut sampler = runtime::sampling::Sampler::new(Default::default());
    // greedy_ids holds the new tokens only, not the prompt.
    let out = runtime::generate::generate(exec, &mut gen_state, &r.prompt_ids, r.greedy_ids.len(), exec.vocab(), &mut sampler, |_| true).unwrap();
    assert_eq!(out, r.greedy_ids, "{}: greedy tokens differ", dir.display());
}

#[test]
fn embedded_mamba2_tiny_matches_reference() {
    check_model(&compiler::model::default_model_dir());
}

#[test]
fn mamba2_tiny_matches_reference() {
    if let Some(d) = shared_model("mamba2-tiny") {
        check_model(&d);
    }
}

#[test]
fn mamba1_tiny_state_spaces_matches_reference() {
    if let Some(d) = shared_model("mamba1-tiny-ss") {
        check_model(&d);
    }
}

#[test]
fn mamba1_small_f16_matches_reference() {
    if let Some(d) = shared_model("mamba1-small") {
        check_model(&d);
    }
}

#[test]
fn mamba2_small_bf16_matches_reference() {
    if let Some(d) = shared_model("mamba2-small") {
        check_model(&d);
    }
}

#[test]
fn argmax_takes_first_of_ties() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
}
