//! `quambac inspect`: what a model is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use compiler::checkpoint::load_checkpoint;
use ir::Family;

/// Arguments of `quambac inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint directory (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Also print the lowered IR in its text form.
    #[arg(long)]
    ir: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(a.model);
    if dir.is_file() {
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
    if a.json {
        println!("{}", serde_json::json!({ "path": dir.display().to_string(), "config": c, "parameters": params, "storage_dtypes": dtypes }));
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
    if a.ir {
        let (graph, _) = compiler::lower::lower(&ckpt)?;
        print!("{graph}");
    }
    Ok(())
}
