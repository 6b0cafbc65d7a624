//! Command-line definitions and dispatch.

mod bench;
mod compile;
mod cuda;
mod cuda_trace;
mod eval;
mod inspect;
mod plot;
mod run;
mod synth;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// quambac — compile Mamba checkpoints with the Quamba2 method and run them.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = QUICK_START)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

const QUICK_START: &str = "\
MODEL is a checkpoint directory (transformers safetensors or state-spaces pytorch_model.bin) or a
compiled .qmb artifact; it defaults to the embedded mamba2-tiny.

Examples:
  quambac compile --target cpu-w4a8 -o model.qmb     # quantize the embedded model
  quambac run model.qmb --prompt \"ROMEO:\"            # generate with the artifact
  quambac eval model.qmb --text assets/text/sample.txt --json
  quambac inspect ../shared/models/mamba2-small --plot plots/

Run `quambac help COMMAND` for each command's options and examples.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Quantize a checkpoint with the Quamba2 method and write an artifact.
    ///
    /// Examples:
    ///   quambac compile --target cpu-w4a8 -o model.qmb
    ///   quambac compile ../shared/models/mamba2-small --target orin-w4a8 -o small.qmb
    ///   quambac compile MODEL --target h100-w4ax --calib corpus.txt --calib-samples 64 -o model.qmb
    ///   quambac compile MODEL --method naive --target cpu-w8a8 --emit-ir ir/ -o naive.qmb
    #[command(verbatim_doc_comment)]
    Compile(compile::CompileArgs),
    /// Generate text from a prompt, streaming tokens as they come.
    ///
    /// Examples:
    ///   quambac run model.qmb --prompt "ROMEO:"
    ///   quambac run ../shared/models/mamba1-small --prompt "KING HENRY:" --max-tokens 64
    ///   quambac run model.qmb --prompt "To be" --temperature 0.8 --top-p 0.95 --seed 7
    #[command(verbatim_doc_comment)]
    Run(run::RunArgs),
    /// Perplexity of a text file: 512-token windows, first token of each window is context only.
    ///
    /// Examples:
    ///   quambac eval model.qmb --text assets/text/sample.txt
    ///   quambac eval ../shared/models/mamba2-small --text ../shared/corpus/test.txt --limit 20 --json
    #[command(verbatim_doc_comment)]
    Eval(eval::EvalArgs),
    /// Describe a model: family, dimensions, parameters, storage dtypes (checkpoint) or target, sizes, kernel plan (artifact).
    ///
    /// With --plot, also measure why the method works on this model: per-channel activation
    /// ranges before and after the Quamba2 passes, and each layer's quantization error.
    ///
    /// Examples:
    ///   quambac inspect ../shared/models/mamba1-tiny-ss
    ///   quambac inspect model.qmb --json
    ///   quambac inspect ../shared/models/mamba2-small --plot plots/ --plot-target orin-w4a8
    ///   quambac inspect --ir
    #[command(verbatim_doc_comment)]
    Inspect(inspect::InspectArgs),
    /// Measure prefill and decode speed (tokens/s) of the FP32 CPU executor.
    ///
    /// Examples:
    ///   quambac bench
    ///   quambac --threads 4 bench ../shared/models/mamba2-small --prompt-len 512 --decode-tokens 64 --json
    #[command(verbatim_doc_comment)]
    Bench(bench::BenchArgs),
    /// Run on the GPU: `check` against the CPU executor, `bench` time to first token and per token.
    ///
    /// Example: quambac cuda check model.qmb && quambac cuda bench model.qmb --batches 1,16
    Cuda(cuda::CudaArgs),
    /// Write a random-weight checkpoint at a public model's shapes, for timing only.
    ///
    /// Example: quambac synth --like mamba2-2.7b -o /tmp/mamba2-2.7b
    Synth(synth::SynthArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("configuring the thread pool")?;
    }
    match cli.command {
        Command::Compile(a) => compile::run(a),
        Command::Run(a) => run::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Cuda(a) => cuda::run(a),
        Command::Synth(a) => synth::run(a),
    }
}

/// The model directory named on the command line, or the repository's embedded model.
fn model_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(compiler::model::default_model_dir)
}

/// Opens a model with CLI-level context.
fn open(dir: &std::path::Path) -> anyhow::Result<compiler::model::FpModel> {
    compiler::model::FpModel::open(dir).with_context(|| format!("loading model {}", dir.display()))
}

/// An argument as UTF-8, or an error naming the argument and the first bad byte (clap's own
/// message for a `String` argument names neither).
fn utf8_arg(name: &str, arg: std::ffi::OsString) -> anyhow::Result<String> {
    arg.into_string().map_err(|raw| {
        let bytes = raw.as_encoded_bytes();
        let valid = std::str::from_utf8(bytes).err().map_or(bytes.len(), |e| e.valid_up_to());
        anyhow::anyhow!("{name} is not valid UTF-8 (byte {valid})")
    })
}

/// The repository's sample of the training corpus, the default calibration text.
fn default_calibration_text() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/text/calib.txt")
}

