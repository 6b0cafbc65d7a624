//! `quambac run`: generation with streaming output.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use runtime::generate::generate;
use runtime::sampling::{Sampler, SamplingConfig};

/// Arguments of `quambac run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// The prompt text (must be valid UTF-8).
    #[arg(long, short)]
    prompt: std::ffi::OsString,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.top_p) || a.top_p == 0.0 {
        bail!("--top-p must be in (0, 1], got {}", a.top_p);
    }
    if !a.temperature.is_finite() || a.temperature < 0.0 {
        bail!("--temperature must be a non-negative number, got {}", a.temperature);
    }
    let prompt_text = super::utf8_arg("--prompt", a.prompt)?;
    let dir = super::model_dir(a.model);
    let model = super::open(&dir)?;
    let tok = model.tokenizer.as_ref().with_context(|| format!("{} has no tokenizer.json", dir.display()))?;
    let prompt = tok.encode(&prompt_text)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let mut sampler = Sampler::new(SamplingConfig { temperature: a.temperature, top_p: a.top_p, seed: a.seed });
    let mut state = model.executor.new_state(1);
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt_text}")?;
    out.flush()?;
    // Decode the growing suffix so multi-byte characters split across tokens print correctly.
    let mut generated: Vec<i64> = Vec::new();
    let mut printed = 0usize;
    let mut io_error = None;
    generate(&model.executor, &mut state, &prompt, a.max_tokens, model.config.vocab_size, &mut sampler, |id| {
        generated.push(id);
        if let Ok(text) = tok.decode(&generated) {
            if text.len() > printed && !text.ends_with('\u{FFFD}') {
                if let Err(e) = write!(out, "{}", &text[printed..]).and_then(|_| out.flush()) {
                    io_error = Some(e);
                    return false;
                }
                printed = text.len();
            }
        }
        true
    })?;
    if let Some(e) = io_error {
        return Err(e).context("writing to stdout");
    }
    writeln!(out)?;
    Ok(())
}
