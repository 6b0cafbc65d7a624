//! `quambac synth`: a random-weight checkpoint at a real model's shapes, for timing.

use std::path::PathBuf;

use anyhow::Context;
use compiler::synth::{synthesize, Like};

/// Arguments of `quambac synth`.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Whose shapes to copy.
    #[arg(long, value_enum)]
    like: Like,
    /// Output directory (transformers layout: config.json + model.safetensors).
    #[arg(short, long)]
    output: PathBuf,
    /// Seed of the random values.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of layers instead of the model's own (same per-layer shapes; for quick profiling).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    layers: Option<u64>,
    /// Vocabulary size instead of the model's own (so that a few layers are not mostly head);
    /// at least 8192, the ids of the tokenizer written beside the weights (calibration text).
    #[arg(long, value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    vocab: Option<u64>,
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let params = synthesize(a.like, &a.output, a.seed, a.layers.map(|l| l as usize), a.vocab.map(|v| v as usize)).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("{}: {:.2} B random parameters (f16) in {:.1} s — for timing only, never for quality", a.output.display(), params as f64 / 1e9, start.elapsed().as_secs_f64());
    Ok(())
}
