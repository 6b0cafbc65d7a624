//! How far a quantized model's logits move when every product's output moves by a few f32
//! roundings (`compiler::sensitivity`): the envelope within which two correct executors of the
//! same integer graph (the CPU integer reference and the GPU) can disagree. `quambac cuda check`
//! measures the same envelope on its own tokens.
//!
//! ```sh
//! cargo run --release --bin quambac -- compile ../shared/models/mamba1-small --target h100-w8a8 \
//!     --calib-samples 8 --calib-len 256 -o m1-w8a8.qmb
//! cargo run --release --example ulp_sensitivity -- m1-w8a8.qmb
//! ```

use std::path::PathBuf;

use runtime::KernelBackend;

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: ulp_sensitivity MODEL.qmb");
        std::process::exit(2);
    };
    let model = compiler::model::FpModel::open_with(&path, KernelBackend::Reference)?;
    // Two sequences of 64 tokens of the embedded sample text, as `quambac cuda check` uses.
    let tokens: Vec<i64> = match &model.tokenizer {
        Some(tok) => tok.encode(include_str!("../assets/text/sample.txt"))?.into_iter().take(128).collect(),
        None => (0..128).map(|i| (i * 131 + 7) % model.config.vocab_size as i64).collect(),
    };
    let effects = compiler::sensitivity::envelope(&model.executor, &tokens, 2, None)?;
    println!("{}: {} int8 flips measured over {} rows", path.display(), model.kind, tokens.len());
    println!("| scales × | max |Δ logit| / max |logit| | mean |Δ logit| | argmax agreement |");
    println!("|---|---|---|---|");
    for e in &effects {
        println!("| 1 ± {}·2⁻²³ | {:.2e} | {:.2e} | {}/{} |", e.roundings, e.relative, e.mean_abs, e.argmax_agree, e.rows);
    }
    Ok(())
}
