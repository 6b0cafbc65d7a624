//! Random-weight checkpoints at the shapes of real public models, for timing only.
//!
//! Speed depends on shapes, not on trained values, and the real checkpoints cannot be downloaded
//! here; `quambac synth --like mamba2-2.7b` writes a transformers-layout directory
//! (`config.json` + `model.safetensors`, f16) that every loader and peer reads like the real one.
//! The values are drawn so the network stays numerically tame (small projections, A < 0,
//! Δ in the usual [0.001, 0.1] range, unit norms), never for quality.

use std::path::Path;

use half::f16;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::json;

use crate::checkpoint::load::expected_tensors;
use crate::checkpoint::CheckpointError;

/// A public model whose shapes can be synthesized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Like {
    /// state-spaces/mamba2-2.7b: d_model 2560, 64 layers, d_state 128, head_dim 64.
    #[value(name = "mamba2-2.7b")]
    Mamba2_2_7b,
    /// state-spaces/mamba-2.8b: d_model 2560, 64 layers, d_state 16.
    #[value(name = "mamba-2.8b")]
    Mamba2_8b,
    /// nvidia/mamba2-8b (pure Mamba2): d_model 4096, 56 layers, 8 groups, vocab 256000.
    #[value(name = "mamba2-8b")]
    Mamba2_8bNvidia,
    /// state-spaces/mamba2-130m: d_model 768, 24 layers (quick checks).
    #[value(name = "mamba2-130m")]
    Mamba2_130m,
}

impl Like {
    /// The transformers `config.json` of the shape.
    pub fn config(self) -> serde_json::Value {
        let mamba2 = |hidden: usize, layers: usize, vocab: usize, groups: usize| {
            json!({
                "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": hidden,
                "num_hidden_layers": layers, "vocab_size": vocab, "state_size": 128, "expand": 2,
                "conv_kernel": 4, "head_dim": 64, "num_heads": 2 * hidden / 64, "n_groups": groups,
                "chunk_size": 256, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true, "use_bias": false,
                "use_conv_bias": true, "residual_in_fp32": true, "time_step_limit": [0.0, {"__float__": "Infinity"}],
                "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 0.0001, "dtype": "float16",
                "rms_norm": true, "norm_before_gate": false, "hidden_act": "silu", "pad_token_id": 0,
                "bos_token_id": 0, "eos_token_id": 0
            })
        };
        match self {
            Like::Mamba2_2_7b => mamba2(2560, 64, 50288, 1),
            Like::Mamba2_130m => mamba2(768, 24, 50288, 1),
            Like::Mamba2_8bNvidia => mamba2(4096, 56, 256000, 8),
            Like::Mamba2_8b => json!({
                "architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": 2560,
                "intermediate_size": 5120, "num_hidden_layers": 64, "vocab_size": 50280, "state_size": 16,
                "expand": 2, "conv_kernel": 4, "time_step_rank": 160, "layer_norm_epsilon": 1e-5,
                "tie_word_embeddings": true, "use_bias": false, "use_conv_bias": true, "residual_in_fp32": true,
                "dtype": "float16", "hidden_act": "silu", "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0,
                "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 0.0001, "time_step_scale": 1.0,
                "time_step_init_scheme": "random", "use_mambapy": false
            }),
        }
    }
}

/// Writes a random checkpoint shaped like `like` into `dir` (created if needed); returns the
/// parameter count. `layers` overrides the depth: a shorter stack has the same per-layer kernels
/// and loads in a fraction of the time, which is what per-layer profiling on a leased GPU needs.
/// `vocab` overrides the vocabulary, so that a few layers are not dwarfed by their head (the
/// 8B model's is 0.5 GB in int4).
pub fn synthesize(like: Like, dir: &Path, seed: u64, layers: Option<usize>, vocab: Option<usize>) -> Result<usize, CheckpointError> {
    let io = |e: std::io::Error| CheckpointError::Io { path: dir.to_path_buf(), source: e };
    std::fs::create_dir_all(dir).map_err(io)?;
    let config_path = dir.join("config.json");
    let mut config = like.config();
    if let Some(layers) = layers {
        config["num_hidden_layers"] = json!(layers);
    }
    if let Some(vocab) = vocab {
        config["vocab_size"] = json!(vocab);
    }
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    std::fs::write(&config_path, text).map_err(|e| CheckpointError::Io { path: config_path.clone(), source: e })?;
    // A tokenizer so that calibration text can be encoded: the embedded model's (its 8192 ids are
    // all inside the synthesized vocabulary).
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, include_bytes!("../../assets/mamba2-tiny/tokenizer.json")).map_err(|e| CheckpointError::Io { path: tok_path.clone(), source: e })?;
    let config = crate::checkpoint::ModelConfig::read(dir, crate::checkpoint::Layout::Transformers)?;
    let tensors = expected_tensors(&config);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_par_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let values = init(&name, &shape, seed.wrapping_add(i as u64));
            let bytes: Vec<u8> = values.iter().flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let params = data.iter().map(|(_, s, _)| s.iter().product::<usize>()).sum();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b).expect("shape matches the bytes")))
        .collect();
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| CheckpointError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
    Ok(params)
}

/// A fixed pseudo-random sequence of `count` token ids below `vocab`: a prompt for timing (speed
/// does not depend on the token values, and every engine in the benchmarks, bench/*.py too, uses
/// this same sequence), or a check's tokens for a model without a tokenizer.
pub fn pseudo_random_tokens(count: usize, vocab: usize) -> Vec<i64> {
    (0..count as i64).map(|i| (i * 7919 + 13) % vocab.max(1) as i64).collect()
}

/// Values for one tensor, by its role.
fn init(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let count: usize = shape.iter().product();
    let fan_in = *shape.last().unwrap_or(&1) as f32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let uniform = |rng: &mut rand::rngs::StdRng, bound: f32| rng.gen_range(-bound..bound);
    if name.ends_with("norm.weight") || name.ends_with("norm_f.weight") || name.ends_with(".D") {
        return vec![1.0; count];
    }
    if name.ends_with("A_log") {
        return (0..count).map(|_| rng.gen_range(1.0f32..16.0).ln()).collect();
    }
    if name.ends_with("dt_bias") || name.ends_with("dt_proj.bias") {
        // softplus⁻¹ of a log-uniform Δ in [0.001, 0.1].
        return (0..count)
            .map(|_| {
                let dt = (rng.gen_range(0.001f32.ln()..0.1f32.ln())).exp();
                dt + (-(-dt).exp_m1()).ln()
            })
            .collect();
    }
    if name.ends_with("conv1d.bias") {
        return (0..count).map(|_| uniform(&mut rng, 0.1)).collect();
    }
    if name.contains("embeddings") {
        return (0..count).map(|_| uniform(&mut rng, 0.035)).collect();
    }
    // Projections and conv taps: variance-preserving uniform.
    let bound = (3.0 / fan_in).sqrt() * if name.contains("conv1d") { 1.0 } else { 0.5 };
    (0..count).map(|_| uniform(&mut rng, bound)).collect()
}
