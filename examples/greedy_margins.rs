//! How close each greedy step of a model is to a tie, on the CPU executor: per step the top two
//! tokens and their logit gap as a share of the largest |logit|. A GPU run whose greedy tokens
//! differ from the CPU's at a step with a gap smaller than the model's int8 flip envelope (`quambac
//! cuda check`) may be a rounding flip, not a bug. bench/RESULTS.md (sixteenth session) reads the
//! 2-layer mamba2-2.7b W8A8 divergence with it.
//!
//! ```sh
//! cargo run --release --bin quambac -- synth --like mamba2-2.7b --layers 2 --vocab 8192 -o m27c8
//! cargo run --release --bin quambac -- compile m27c8 --target h100-w8a8 --no-gptq --calib-samples 2 --calib-len 64 -o m27c8.qmb
//! cargo run --release --example greedy_margins -- m27c8.qmb 1
//! ```

use std::path::PathBuf;

use runtime::KernelBackend;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), prompt_len) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: greedy_margins MODEL [PROMPT_TOKENS (default 1)] [STEPS (default 9)]");
        std::process::exit(2);
    };
    let prompt_len: usize = prompt_len.map_or(Ok(1), |s| s.parse()).map_err(|e| anyhow::anyhow!("PROMPT_TOKENS: {e}"))?;
    let steps: usize = args.next().map_or(Ok(9), |s| s.parse()).map_err(|e| anyhow::anyhow!("STEPS: {e}"))?;
    let model = compiler::model::FpModel::open_with(&path, KernelBackend::Reference)?;
    // The prompt `quambac cuda check` uses for its greedy comparison at --seq PROMPT_TOKENS.
    let prompt = compiler::sensitivity::sample_tokens(&model, prompt_len.max(1))?;
    let mut state = model.executor.new_state(1);
    let mut logits = model.executor.forward(&mut state, &prompt)?;
    println!("| step | token | logit | runner-up | logit | gap / max|logit| |");
    println!("|---|---|---|---|---|---|");
    for step in 0..steps {
        let row = logits.row(0, logits.seq - 1);
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let top = row.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let (first, second) = (order[0], order[1]);
        println!("| {step} | {first} | {:.5} | {second} | {:.5} | {:.2e} |", row[first], row[second], (row[first] - row[second]) / top);
        logits = model.executor.forward(&mut state, &[first as i64])?;
    }
    Ok(())
}
