//! How far a quantized model's logits move under the f16 part of the flip envelope alone
//! (`compiler::sensitivity`): the scales of the products a GPU runs with f16 activations in an
//! int8 configuration (Mamba1's dt_proj) × 1 ± k·2⁻¹³ for k = 1, 2, 4, i.e. ¼, ½ and 1 f16
//! rounding, the int8 products untouched. bench/RESULTS.md compares it with the GPU's differences
//! on mamba1-small W4A8.
//!
//! ```sh
//! cargo run --release --bin quambac -- compile ../shared/models/mamba1-small --target h100-w4a8 -o m1-w4a8.qmb
//! cargo run --release --example f16_product_sensitivity -- m1-w4a8.qmb
//! ```

use std::path::PathBuf;

use compiler::sensitivity::{compare, perturbed, perturbed_weights, sample_tokens, F32_ROUNDING, ROUNDINGS};
use runtime::{Executor, KernelBackend};

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: f16_product_sensitivity MODEL.qmb");
        std::process::exit(2);
    };
    let model = compiler::model::FpModel::open_with(&path, KernelBackend::Reference)?;
    // Two sequences of 64 tokens, as `quambac cuda check` uses.
    let tokens = sample_tokens(&model, 128)?;
    let exec = &model.executor;
    let run = |e: &Executor| e.forward(&mut e.new_state(2), &tokens).map(|l| l.data);
    let reference = run(exec)?;
    let targets: Vec<_> = perturbed_weights(exec.verified_graph()).into_iter().filter(|(_, per)| *per != F32_ROUNDING).collect();
    println!("{}: {} weights of f16-activation products, {} rows", path.display(), targets.len(), tokens.len());
    println!("| their scales × | max |Δ logit| / max |logit| | mean |Δ logit| | argmax agreement |");
    println!("|---|---|---|---|");
    for k in ROUNDINGS {
        let e = compare(&reference, &run(&perturbed(exec, &targets, k)?)?, tokens.len(), k);
        println!("| 1 ± {k}·2⁻¹³ | {:.2e} | {:.3} | {}/{} |", e.relative, e.mean_abs, e.argmax_agree, e.rows);
    }
    Ok(())
}
