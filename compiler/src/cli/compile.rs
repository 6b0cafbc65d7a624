//! `quambac compile`: quantize a checkpoint for a target and write a `.qmb` artifact.

use std::path::PathBuf;

use anyhow::{bail, Context};
use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::target::{Method, Target};
use runtime::tokenizer::Tokenizer;

/// Arguments of `quambac compile`.
#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// Checkpoint directory (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// DEVICE-PRECISION: cpu|orin|a5000|h100 - w8a8|w4a8|w4a16|w4ax.
    #[arg(long, default_value = "cpu-w4a8")]
    target: Target,
    /// Output artifact.
    #[arg(long, short, default_value = "model.qmb")]
    output: PathBuf,
    /// Calibration text (default: the repository's sample of the training corpus).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = 32)]
    calib_samples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512)]
    calib_len: usize,
    /// Validation text for W4AX's per-layer sensitivity (default: calibration text past the windows used).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Recipe.
    #[arg(long, value_enum, default_value_t = Method::Quamba2)]
    method: Method,
    /// Round-to-nearest instead of GPTQ for 4-bit weights.
    #[arg(long)]
    no_gptq: bool,
    /// Keep A8 layers' SSM states in int8 between calls, as the Quamba2 method does: 4× less
    /// state memory and faster large-batch decode, slightly slower batch-1 decode on an H200
    /// (default: f32 states).
    #[arg(long)]
    int8_states: bool,
    /// Write the IR text after each pass into this directory.
    #[arg(long)]
    emit_ir: Option<PathBuf>,
}

/// Reads a text file, keeping only about `max_bytes` (cut at a line end): calibration needs a
/// few hundred thousand tokens, not a whole corpus.
fn read_text(path: &std::path::Path, max_bytes: usize) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to()))?;
    if text.len() <= max_bytes {
        return Ok(text);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(end, |i| i + 1);
    Ok(text[..end].to_string())
}

pub fn run(a: CompileArgs) -> anyhow::Result<()> {
    if a.calib_samples == 0 || a.calib_len < 2 {
        bail!("--calib-samples must be positive and --calib-len at least 2");
    }
    let dir = super::model_dir(a.model);
    let ckpt = load_checkpoint(&dir).with_context(|| format!("loading model {}", dir.display()))?;
    let tok_path = ckpt.tokenizer_path().with_context(|| format!("{} has no tokenizer.json (needed to tokenize calibration text)", dir.display()))?;
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let calib_path = a.calib.unwrap_or_else(super::default_calibration_text);
    // About 8 bytes per token is generous for English BPE text; 16 extra windows feed W4AX.
    let budget = (a.calib_samples + 16) * a.calib_len * 8;
    let calib_text = read_text(&calib_path, budget)?;
    let valid_text = a.valid.as_deref().map(|p| read_text(p, 8 * a.calib_len * 8)).transpose()?;
    let opts = CompileOptions {
        target: a.target,
        method: a.method,
        calib_text,
        calib_source: calib_path.display().to_string(),
        calib_samples: a.calib_samples,
        calib_len: a.calib_len,
        valid_text,
        gptq: !a.no_gptq,
        int8_states: a.int8_states,
        emit_ir: a.emit_ir,
        progress: true,
    };
    let start = std::time::Instant::now();
    let program = compile(&ckpt, &tokenizer, &opts).with_context(|| format!("compiling {} for {}", dir.display(), a.target))?;
    let tokenizer_json = std::fs::read_to_string(&tok_path).with_context(|| format!("reading {}", tok_path.display()))?;
    let bytes = compiler::artifact::write(&a.output, &program, a.target, a.method, Some(tokenizer_json))
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({:.2} MB, {} {} via {:?}) in {:.1}s",
        a.output.display(),
        bytes as f64 / 1e6,
        program.config.family.name(),
        a.target,
        a.method,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
