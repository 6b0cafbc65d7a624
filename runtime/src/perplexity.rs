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
    score_windows_in_calls(exec, batch, window.max(1))
}

/// Like [`score_windows`], feeding each window in calls of `call_tokens` tokens that continue
/// the state (the last call takes what is left): the same scores, except where the model keeps
/// its state between calls in a coarser form than within one (int8 cached states), which is
/// what decoding sees; `call_tokens` = 1 is token-by-token decoding.
pub fn score_windows_in_calls(exec: &Executor, batch: &[&[i64]], call_tokens: usize) -> Result<NllSum, RuntimeError> {
    let window = batch.first().map_or(0, |w| w.len());
    if let Some(w) = batch.iter().find(|w| w.len() != window) {
        return Err(RuntimeError::Input(format!("windows of one batch differ in length: {} and {window}", w.len())));
    }
    let mut state = exec.new_state(batch.len());
    let mut sum = NllSum::default();
    let mut start = 0;
    while start < window {
        let len = call_tokens.max(1).min(window - start);
        let tokens: Vec<i64> = batch.iter().flat_map(|w| w[start..start + len].iter().copied()).collect();
        let logits = exec.forward(&mut state, &tokens)?;
        for (b, w) in batch.iter().enumerate() {
            for t in start..(start + len).min(window - 1) {
                sum.nll += nll(logits.row(b, t - start), w[t + 1] as usize);
                sum.count += 1;
            }
        }
        start += len;
    }
    Ok(sum)
}

/// −log softmax(logits)[target], computed stably in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    lse - logits[target] as f64
}
