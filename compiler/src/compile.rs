//! The compile driver: checkpoint → lowered program → recipe passes → quantized program.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use runtime::tokenizer::Tokenizer;

use crate::calibrate::CalibrationSet;
use crate::checkpoint::Checkpoint;
use crate::passes::{run_passes, Pass, PassContext};
use crate::pipeline;
use crate::program::Program;
use crate::target::{Method, Precision, Target};
use crate::CompileError;

/// Everything `quambac compile` can be told.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Device and precision.
    pub target: Target,
    /// Recipe.
    pub method: Method,
    /// Calibration text and where it came from (for messages).
    pub calib_text: String,
    /// Name of the calibration source.
    pub calib_source: String,
    /// Calibration windows.
    pub calib_samples: usize,
    /// Tokens per calibration window.
    pub calib_len: usize,
    /// Validation text for W4AX's sensitivity measurement (default: calibration text after the
    /// calibration windows).
    pub valid_text: Option<String>,
    /// GPTQ for 4-bit weights (Quamba2 only).
    pub gptq: bool,
    /// Keep A8 layers' scan states in int8 between calls, as the method does (the
    /// `quantize_states` pass). Off by default: on an H200 it made batch-1 decode 1-4 % slower
    /// for 4× less state memory and 6-24 % faster batch-16 decode (`bench/RESULTS.md`).
    pub int8_states: bool,
    /// Write the IR after each pass here.
    pub emit_ir: Option<PathBuf>,
    /// Progress bars.
    pub progress: bool,
}

impl CompileOptions {
    /// `quambac compile`'s defaults for `target`, calibrating on `calib_text` (named `source` in
    /// messages): Quamba2, 32 windows of 512 tokens, GPTQ, f32 states, no progress bars. Change fields with
    /// struct update syntax.
    pub fn new(target: Target, calib_text: String, source: &str) -> CompileOptions {
        CompileOptions {
            target,
            method: Method::Quamba2,
            calib_text,
            calib_source: source.to_string(),
            calib_samples: 32,
            calib_len: 512,
            valid_text: None,
            gptq: true,
            int8_states: false,
            emit_ir: None,
            progress: false,
        }
    }
}

/// Runs the recipe's passes over the lowered checkpoint.
pub fn compile(ckpt: &Checkpoint, tokenizer: &Tokenizer, opts: &CompileOptions) -> Result<Program, CompileError> {
    run_recipe(ckpt, tokenizer, opts, |_| true)
}

/// Runs only the recipe's float rewrites, the passes before the first quantizing one
/// ([`pipeline::is_quantizing`]): the program computes the same function as the checkpoint, in
/// the basis and channel order the quantizers will see.
pub fn transform_float(ckpt: &Checkpoint, tokenizer: &Tokenizer, opts: &CompileOptions) -> Result<Program, CompileError> {
    let mut quantizing_seen = false;
    run_recipe(ckpt, tokenizer, opts, |pass| {
        quantizing_seen |= pipeline::is_quantizing(pass);
        !quantizing_seen
    })
}

/// Runs the recipe's passes for which `keep` is true, in order.
fn run_recipe(ckpt: &Checkpoint, tokenizer: &Tokenizer, opts: &CompileOptions, mut keep: impl FnMut(&dyn Pass) -> bool) -> Result<Program, CompileError> {
    let mut program = Program::from_checkpoint(ckpt)?;
    let calib = CalibrationSet::from_text(tokenizer, &opts.calib_text, opts.calib_samples, opts.calib_len, &opts.calib_source)?;
    let valid = match &opts.valid_text {
        Some(text) => Some(CalibrationSet::from_text(tokenizer, text, 8, opts.calib_len, "validation text")?),
        None => held_out(tokenizer, &opts.calib_text, opts.calib_samples, opts.calib_len)?,
    };
    let n_layer = program.config.n_layer;
    let mut cx = PassContext {
        target: opts.target,
        method: opts.method,
        calib,
        valid,
        scale_rules: HashMap::new(),
        a16_layers: if opts.target.precision == Precision::W4A16 { (0..n_layer).collect() } else { BTreeSet::new() },
        gptq: opts.gptq && opts.method == Method::Quamba2,
        progress: opts.progress,
    };
    let passes = pipeline::passes(opts.method, opts.target.precision, program.config.family, opts.int8_states);
    let refs: Vec<&dyn Pass> = passes.iter().map(|p| p.as_ref()).filter(|p| keep(*p)).collect();
    run_passes(&mut program, &refs, &mut cx, opts.emit_ir.as_deref())?;
    Ok(program)
}

/// Up to 8 windows of the calibration text that come after the calibration windows.
fn held_out(tokenizer: &Tokenizer, text: &str, skip: usize, len: usize) -> Result<Option<CalibrationSet>, CompileError> {
    let ids = tokenizer.encode(text)?;
    let windows: Vec<Vec<i64>> = ids.chunks_exact(len.max(2)).skip(skip).take(8).map(|w| w.to_vec()).collect();
    Ok((!windows.is_empty()).then_some(CalibrationSet { windows }))
}
