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
    // Two sequences of 64 tokens, as `quambac cuda check` uses.
    let tokens = compiler::sensitivity::sample_tokens(&model, 128)?;
    let effects = compiler::sensitivity::envelope(&model.executor, &tokens, 2, None)?;
    println!("{}: {} int8 flips measured over {} rows", path.display(), model.kind, tokens.len());
    println!("| k (int8 products' scales × 1 ± k·2⁻²³, f16-activation products' × 1 ± k·2⁻¹³) | max |Δ logit| / max |logit| | mean |Δ logit| | argmax agreement |");
    println!("|---|---|---|---|");
    for e in &effects {
        println!("| {} | {:.2e} | {:.2e} | {}/{} |", e.roundings, e.relative, e.mean_abs, e.argmax_agree, e.rows);
    }
    Ok(())
}
