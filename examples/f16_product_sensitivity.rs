//! How far a quantized model's logits move when only its weight-only products (those a GPU runs
//! with f16 activations in an int8 configuration: Mamba1's dt_proj) move by a fraction of an f16
//! rounding: their scales × 1 ± k·2⁻¹¹ for k = ¼, ½, 1, a sign per scale. This is how the flip
//! envelope's f16 part (`compiler::sensitivity`) was sized; bench/RESULTS.md compares it with the
//! GPU's differences on mamba1-small W4A8.
//!
//! ```sh
//! cargo run --release --bin quambac -- compile ../shared/models/mamba1-small --target h100-w4a8 -o m1-w4a8.qmb
//! cargo run --release --example f16_product_sensitivity -- m1-w4a8.qmb
//! ```

use std::path::PathBuf;

use ir::Op;
use runtime::{Executor, KernelBackend, WeightData};

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: f16_product_sensitivity MODEL.qmb");
        std::process::exit(2);
    };
    let model = compiler::model::FpModel::open_with(&path, KernelBackend::Reference)?;
    // Two sequences of 64 tokens, as `quambac cuda check` uses.
    let tokens = compiler::sensitivity::sample_tokens(&model, 128)?;
    let exec = &model.executor;
    let graph = exec.verified_graph();
    let run = |e: &Executor| e.forward(&mut e.new_state(2), &tokens).map(|l| l.data);
    let reference = run(exec)?;
    let rows = tokens.len();
    let mut scales: Vec<_> = graph
        .values()
        .into_iter()
        .filter_map(|v| match graph.node(v).op {
            Op::QLinear { scales, act_scale: None, .. } => Some(scales),
            _ => None,
        })
        .collect();
    scales.sort();
    scales.dedup();
    println!("{}: {} weight-only products, {rows} rows", path.display(), scales.len());
    println!("| their scales × | max |Δ logit| / max |logit| | mean |Δ logit| | argmax agreement |");
    println!("|---|---|---|---|");
    for k in [0.25f32, 0.5, 1.0] {
        let mut weights = exec.weights().clone();
        for &w in &scales {
            let data = weights.get(w);
            let values: Vec<f32> = data.floats().iter().enumerate().map(|(i, s)| s * (1.0 + k * (2f32).powi(-11) * sign(w.index(), i))).collect();
            weights.set(w, WeightData::new(data.shape.clone(), values));
        }
        let logits = run(&Executor::with_kernel_backend(graph.clone(), weights, KernelBackend::Reference)?)?;
        let e = compiler::sensitivity::compare(&reference, &logits, rows, k);
        println!("| 1 ± {k}·2⁻¹¹ | {:.2e} | {:.3} | {}/{rows} |", e.relative, e.mean_abs, e.argmax_agree);
    }
    Ok(())
}

/// A fixed pseudo-random ±1 per (weight, element).
fn sign(weight: usize, element: usize) -> f32 {
    let h = ((element as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (weight as u64 + 7).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) >> 40;
    if h & 1 == 0 { 1.0 } else { -1.0 }
}
