//! `quambac eval`: perplexity by the method of `../shared/README.md`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use runtime::perplexity::{score_windows_in_calls, windows, NllSum};

/// Arguments of `quambac eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// The text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Feed each window in calls of N tokens that continue the state (default: the whole
    /// window in one call). Scores change only where the model stores its state between calls
    /// in int8 (A8 targets): N = 1 scores what token-by-token decoding computes.
    #[arg(long)]
    call_tokens: Option<usize>,
    /// Score only the first N windows.
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if a.window < 2 {
        bail!("--window must be at least 2 tokens, got {}", a.window);
    }
    if a.call_tokens == Some(0) {
        bail!("--call-tokens must be at least 1");
    }
    let dir = super::model_dir(a.model);
    let model = super::open(&dir)?;
    let tok = model.tokenizer.as_ref().with_context(|| format!("{} has no tokenizer.json", dir.display()))?;
    let bytes = std::fs::read(&a.text).with_context(|| format!("reading {}", a.text.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 (byte {})", a.text.display(), e.utf8_error().valid_up_to()))?;
    let ids = tok.encode(&text)?;
    let mut all: Vec<&[i64]> = windows(&ids, a.window).collect();
    if let Some(n) = a.limit {
        all.truncate(n);
    }
    if all.is_empty() {
        bail!("{}: {} tokens is less than one {}-token window", a.text.display(), ids.len(), a.window);
    }
    let bar = ProgressBar::new(all.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} eval [{bar:40}] {pos}/{len} windows  {per_sec}  eta {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let mut total = NllSum::default();
    for batch in all.chunks(a.batch.max(1)) {
        let s = score_windows_in_calls(&model.executor, batch, a.call_tokens.unwrap_or(a.window))?;
        total.nll += s.nll;
        total.count += s.count;
        bar.inc(batch.len() as u64);
        bar.set_message(format!("ppl {:.4}", total.perplexity()));
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": dir.display().to_string(), "text": a.text.display().to_string(), "window": a.window,
                "call_tokens": a.call_tokens.unwrap_or(a.window), "windows": all.len(), "tokens_scored": total.count, "perplexity": total.perplexity(), "seconds": secs
            })
        );
    } else {
        println!("perplexity {:.4} over {} tokens ({} windows of {}) in {:.1}s", total.perplexity(), total.count, all.len(), a.window, secs);
    }
    Ok(())
}
