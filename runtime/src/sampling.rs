//! Choosing the next token from logits: greedy, or temperature + nucleus (top-p) sampling with a
//! seeded generator so runs are reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability mass reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler for `config`.
    pub fn new(config: SamplingConfig) -> Sampler {
        Sampler { config, rng: StdRng::seed_from_u64(config.seed) }
    }

    /// The next token among the first `allowed` logits (the rest are vocabulary padding).
    pub fn sample(&mut self, logits: &[f32], allowed: usize) -> i64 {
        let logits = &logits[..allowed.min(logits.len())];
        if self.config.temperature <= 0.0 {
            return argmax(logits) as i64;
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(usize, f32)> =
            logits.iter().enumerate().map(|(i, l)| (i, ((l - max) / self.config.temperature).exp())).collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            kept += p.1 / total;
            if kept >= self.config.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        let mass: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.gen::<f32>() * mass;
        for (i, p) in &probs {
            r -= p;
            if r <= 0.0 {
                return *i as i64;
            }
        }
        probs.last().map_or(0, |p| p.0 as i64)
    }
}

/// Index of the largest value (the first one on ties, like `torch.argmax`).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}
