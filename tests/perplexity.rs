//! Test-split perplexity of the FP32 path against the fp32 value recorded in each shared model's
//! TRAINING.json (tolerance 0.05%). The tiny models run in the default suite; the small ones take
//! minutes on two cores and run with `cargo test --release --test perplexity -- --ignored`.

use std::path::{Path, PathBuf};

use compiler::model::FpModel;
use runtime::perplexity::{score_windows, windows, NllSum};

fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    dir.is_dir().then_some(dir).or_else(|| {
        eprintln!("skipping: ../shared is not present");
        None
    })
}

fn check_perplexity(name: &str) {
    let Some(shared) = shared() else { return };
    let dir = shared.join("models").join(name);
    let training: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("TRAINING.json")).unwrap()).unwrap();
    let expected = training["perplexity_fp32"]["test"].as_f64().unwrap();
    let model = FpModel::open(&dir).unwrap();
    let text = std::fs::read_to_string(shared.join("corpus/test.txt")).unwrap();
    let ids = model.tokenizer.as_ref().unwrap().encode(&text).unwrap();
    let all: Vec<&[i64]> = windows(&ids, 512).collect();
    let mut total = NllSum::default();
    for batch in all.chunks(4) {
        let s = score_windows(&model.executor, batch).unwrap();
        total.nll += s.nll;
        total.count += s.count;
    }
    let ppl = total.perplexity();
    let rel = (ppl - expected).abs() / expected;
    eprintln!("{name}: perplexity {ppl:.4} over {} tokens, TRAINING.json {expected}, relative difference {rel:.2e}", total.count);
    // TRAINING.json counts the tokens of the full windows (each window's first is context only).
    if let Some(n) = training["perplexity_tokens"]["test"].as_u64() {
        assert_eq!((all.len() * 512) as u64, n, "{name}: windowed token count differs from TRAINING.json");
    }
    assert!(rel < 5e-4, "{name}: perplexity {ppl} differs from {expected} by {:.4}%", rel * 100.0);
}

#[test]
fn mamba2_tiny_test_perplexity() {
    check_perplexity("mamba2-tiny");
}

#[test]
fn mamba1_tiny_ss_test_perplexity() {
    check_perplexity("mamba1-tiny-ss");
}

#[test]
#[ignore = "minutes on 2 cores: run with --ignored"]
fn mamba1_small_test_perplexity() {
    check_perplexity("mamba1-small");
}

#[test]
#[ignore = "minutes on 2 cores: run with --ignored"]
fn mamba2_small_test_perplexity() {
    check_perplexity("mamba2-small");
}
