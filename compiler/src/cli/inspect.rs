//! `quambac inspect`: what a model is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use compiler::checkpoint::{load_checkpoint, Checkpoint};
use compiler::compile::CompileOptions;
use compiler::diagnose::{diagnose, Diagnosis};
use compiler::target::Target;
use runtime::tokenizer::Tokenizer;
use ir::Family;

/// Arguments of `quambac inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Also print the lowered IR in its text form.
    #[arg(long)]
    ir: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write pictures (SVG) into this directory: per-channel ranges of the SSM input and the
    /// out_proj input before and after the Quamba2 passes, and each layer's output error after
    /// quantization, Quamba2 against naive. Needs a checkpoint directory.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Target whose quantization error --plot measures.
    #[arg(long, default_value = "cpu-w4a8", requires = "plot")]
    plot_target: Target,
    /// Calibration windows (of 256 tokens of the repository's calibration text) for --plot.
    #[arg(long, default_value_t = 8, requires = "plot")]
    plot_samples: usize,
}

/// Tokens per calibration window for `--plot`.
const PLOT_WINDOW: usize = 256;

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(a.model);
    if dir.is_file() {
        if a.plot.is_some() {
            bail!("{}: --plot needs a checkpoint directory (an artifact has no float model to compare with)", dir.display());
        }
        let header = compiler::artifact::read_header(&dir).with_context(|| format!("reading {}", dir.display()))?;
        if a.json {
            println!("{}", serde_json::json!({"path": dir.display().to_string(), "target": header.target, "family": header.family,
                "format_version": header.format_version, "compiler_version": header.compiler_version,
                "bytes": runtime::artifact::file_size(&header), "weight_bytes": header.weights.iter().map(|w| w.bytes).sum::<u64>(), "weights": header.weights.len(), "kernel_plan": header.kernel_plan}));
        } else {
            println!("{}", runtime::artifact::describe(&header));
        }
        if a.ir {
            print!("{}", header.graph_text);
        }
        return Ok(());
    }
    let ckpt = load_checkpoint(&dir).with_context(|| format!("loading model {}", dir.display()))?;
    let c = &ckpt.config;
    let params: usize = ckpt.tensors.values().map(|t| t.numel()).sum();
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for t in ckpt.tensors.values() {
        *dtypes.entry(t.dtype.to_string()).or_default() += t.numel();
    }
    let plots = match &a.plot {
        Some(plot_dir) => Some(plot(&ckpt, &dir, plot_dir, a.plot_target, a.plot_samples)?),
        None => None,
    };
    if a.json {
        let mut out = serde_json::json!({ "path": dir.display().to_string(), "config": c, "parameters": params, "storage_dtypes": dtypes });
        if let Some((diagnosis, files)) = &plots {
            out["plots"] = serde_json::json!({ "files": files, "target": diagnosis.target, "layer_error": diagnosis.errors });
        }
        println!("{out}");
    } else {
        println!("model       {}", dir.display());
        println!("family      {} ({:?} layout)", c.family.name(), c.layout);
        println!("parameters  {params} ({:.2} M)", params as f64 / 1e6);
        let dt: Vec<String> = dtypes.iter().map(|(k, v)| format!("{k} ({v} values)")).collect();
        println!("storage     {}", dt.join(", "));
        println!("d_model     {}   layers {}   d_inner {}   d_state {}   d_conv {}", c.d_model, c.n_layer, c.d_inner, c.d_state, c.d_conv);
        match c.family {
            Family::Mamba1 => println!("dt_rank     {}", c.dt_rank),
            Family::Mamba2 => println!("heads       {} × head_dim {}   groups {}   chunk {}", c.n_heads, c.head_dim, c.n_groups, c.chunk_size),
        }
        println!("vocab       {} (embedding rows {})   head {}", c.vocab_size, c.padded_vocab, if c.tied { "tied to the embedding" } else { "separate lm_head" });
    }
    if let (false, Some((diagnosis, files))) = (a.json, &plots) {
        for e in &diagnosis.errors {
            println!("layer {:<3} relative output error ({})   Quamba2 {:.2e}   naive {:.2e}", e.layer, diagnosis.target, e.quamba2, e.naive);
        }
        for f in files {
            println!("wrote       {}", f.display());
        }
    }
    if a.ir {
        let (graph, _) = compiler::lower::lower(&ckpt)?;
        print!("{graph}");
    }
    Ok(())
}

/// Measures the model as `--plot` describes and draws it into `plot_dir`.
fn plot(ckpt: &Checkpoint, dir: &std::path::Path, plot_dir: &std::path::Path, target: Target, samples: usize) -> anyhow::Result<(Diagnosis, Vec<PathBuf>)> {
    if samples == 0 {
        bail!("--plot-samples must be positive");
    }
    let tok_path = ckpt.tokenizer_path().with_context(|| format!("{} has no tokenizer.json (needed to tokenize calibration text)", dir.display()))?;
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let calib_path = super::default_calibration_text();
    let calib_text = std::fs::read_to_string(&calib_path).with_context(|| format!("reading {}", calib_path.display()))?;
    let opts = CompileOptions { calib_samples: samples, calib_len: PLOT_WINDOW, ..CompileOptions::new(target, calib_text, &calib_path.display().to_string()) };
    let diagnosis = diagnose(ckpt, &tokenizer, &opts).with_context(|| format!("measuring {} for {target}", dir.display()))?;
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let files = super::plot::write_plots(&diagnosis, &name, plot_dir)?;
    Ok((diagnosis, files))
}
