//! Perplexity by the project's method: tokenize the whole text, cut it into non-overlapping windows
//! of `window` tokens (a tail that does not fill a window is dropped), score tokens 2..window of
//! each window (the first is context only), ppl = exp(mean NLL).

use crate::{Executor, RuntimeError};

/// Running totals of an evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllSum {
    /// Σ −log p(token), accumulated in f64.
    pub nll: f64,
    /// Tokens scored.
    pub count: usize,
}

impl NllSum {
    /// exp(mean NLL).
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.count.max(1) as f64).exp()
    }
}

/// The windows of `ids`: `ids.len() / window` full windows.
pub fn windows(ids: &[i64], window: usize) -> impl Iterator<Item = &[i64]> {
    ids.chunks_exact(window.max(2))
}

/// Scores a batch of windows (all of length `window`) in one forward pass.
pub fn score_windows(exec: &Executor, batch: &[&[i64]]) -> Result<NllSum, RuntimeError> {
    let window = batch.first().map_or(0, |w| w.len());
    let tokens: Vec<i64> = batch.iter().flat_map(|w| w.iter().copied()).collect();
    let mut state = exec.new_state(batch.len());
    let logits = exec.forward(&mut state, &tokens)?;
    let mut sum = NllSum::default();
    for (b, w) in batch.iter().enumerate() {
        for t in 0..window - 1 {
            sum.nll += nll(logits.row(b, t), w[t + 1] as usize);
            sum.count += 1;
        }
    }
    Ok(sum)
}

/// −log softmax(logits)[target], computed stably in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    lse - logits[target] as f64
}
