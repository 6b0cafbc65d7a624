//! Random-weight checkpoints in the transformers layout (`config.json` + f32 `model.safetensors`),
//! with magnitudes like a freshly initialised mamba_ssm model so the forward pass stays
//! numerically sane:
//!
//! * embeddings ~ N(0, 0.05²); an untied `lm_head.weight` likewise;
//! * projections (in/out/x/dt_proj, conv1d) ~ U(−1/√fan_in, 1/√fan_in), conv bias likewise;
//! * `A_log = ln(U(1, 16))`; `D ~ U(0.9, 1.1)`;
//! * dt biases = softplus⁻¹(dt) with dt log-uniform in [1e-3, 1e-1];
//! * norm weights ~ U(0.9, 1.1) (deliberately not 1, so weight handling is exercised).
//!
//! The same arguments and seed always give the same files.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

/// Accumulates named tensors drawn from one seeded generator.
struct Gen {
    rng: StdRng,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen { rng: StdRng::seed_from_u64(seed), tensors: Vec::new() }
    }

    fn push(&mut self, name: String, shape: Vec<usize>, mut draw: impl FnMut(&mut StdRng) -> f32) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| draw(&mut self.rng)).collect();
        self.tensors.push((name, shape, data));
    }

    /// N(0, std²) via Box–Muller.
    fn normal(&mut self, name: String, shape: Vec<usize>, std: f64) {
        self.push(name, shape, |rng| {
            let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
            let u2: f64 = rng.gen::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        });
    }

    fn uniform(&mut self, name: String, shape: Vec<usize>, lo: f64, hi: f64) {
        self.push(name, shape, |rng| rng.gen_range(lo..hi) as f32);
    }

    /// U(−1/√fan_in, 1/√fan_in), PyTorch's default for Linear / Conv1d.
    fn fan_in(&mut self, name: String, shape: Vec<usize>, fan_in: usize) {
        let b = 1.0 / (fan_in as f64).sqrt();
        self.uniform(name, shape, -b, b);
    }

    /// `ln(U(1, 16))`.
    fn a_log(&mut self, name: String, shape: Vec<usize>) {
        self.push(name, shape, |rng| rng.gen_range(1.0f64..16.0).ln() as f32);
    }

    /// softplus⁻¹(dt), dt log-uniform in [1e-3, 1e-1].
    fn dt_bias(&mut self, name: String, shape: Vec<usize>) {
        self.push(name, shape, |rng| {
            let dt = rng.gen_range(1e-3f64.ln()..1e-1f64.ln()).exp();
            (dt + (-(-dt).exp_m1()).ln()) as f32
        });
    }

    fn around_one(&mut self, name: String, shape: Vec<usize>) {
        self.uniform(name, shape, 0.9, 1.1);
    }

    fn write(self, path: &Path) {
        let bytes: Vec<Vec<u8>> =
            self.tensors.iter().map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), b).unwrap()))
            .collect();
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::tensor::serialize_to_file(views, Some(meta), path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn write_config(dir: &Path, config: &serde_json::Value) {
    let text = serde_json::to_string_pretty(config).unwrap();
    std::fs::write(dir.join("config.json"), text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
}

/// Writes a random Mamba2 checkpoint (`model_type: "mamba2"`) into `dir` (created if needed).
#[allow(clippy::too_many_arguments)]
pub fn write_random_mamba2(
    dir: &Path,
    d_model: usize,
    n_layer: usize,
    vocab: usize,
    d_state: usize,
    head_dim: usize,
    ngroups: usize,
    expand: usize,
    d_conv: usize,
    chunk_size: usize,
    tied: bool,
    seed: u64,
) {
    let d_inner = expand * d_model;
    assert!(d_inner.is_multiple_of(head_dim), "d_inner {d_inner} is not a multiple of head_dim {head_dim}");
    let nheads = d_inner / head_dim;
    assert!(nheads.is_multiple_of(ngroups), "nheads {nheads} is not a multiple of ngroups {ngroups}");
    let conv_dim = d_inner + 2 * ngroups * d_state;
    let in_dim = d_inner + conv_dim + nheads;
    std::fs::create_dir_all(dir).unwrap();

    let mut g = Gen::new(seed);
    g.normal("backbone.embeddings.weight".into(), vec![vocab, d_model], 0.05);
    for l in 0..n_layer {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        g.around_one(p("norm.weight"), vec![d_model]);
        g.fan_in(p("mixer.in_proj.weight"), vec![in_dim, d_model], d_model);
        g.fan_in(p("mixer.conv1d.weight"), vec![conv_dim, 1, d_conv], d_conv);
        g.fan_in(p("mixer.conv1d.bias"), vec![conv_dim], d_conv);
        g.dt_bias(p("mixer.dt_bias"), vec![nheads]);
        g.a_log(p("mixer.A_log"), vec![nheads]);
        g.around_one(p("mixer.D"), vec![nheads]);
        g.around_one(p("mixer.norm.weight"), vec![d_inner]);
        g.fan_in(p("mixer.out_proj.weight"), vec![d_model, d_inner], d_inner);
    }
    g.around_one("backbone.norm_f.weight".into(), vec![d_model]);
    if !tied {
        g.normal("lm_head.weight".into(), vec![vocab, d_model], 0.05);
    }
    g.write(&dir.join("model.safetensors"));

    write_config(
        dir,
        &json!({
            "architectures": ["Mamba2ForCausalLM"],
            "model_type": "mamba2",
            "bos_token_id": 0,
            "eos_token_id": 0,
            "pad_token_id": 1,
            "hidden_size": d_model,
            "num_hidden_layers": n_layer,
            "vocab_size": vocab,
            "state_size": d_state,
            "conv_kernel": d_conv,
            "expand": expand,
            "head_dim": head_dim,
            "num_heads": nheads,
            "n_groups": ngroups,
            "chunk_size": chunk_size,
            "hidden_act": "silu",
            "initializer_range": 0.1,
            "layer_norm_epsilon": 1e-5,
            "rescale_prenorm_residual": false,
            "residual_in_fp32": true,
            "tie_word_embeddings": tied,
            "time_step_floor": 0.0001,
            "time_step_limit": [0.0, {"__float__": "Infinity"}],
            "time_step_max": 0.1,
            "time_step_min": 0.001,
            "time_step_rank": d_model.div_ceil(16),
            "use_bias": false,
            "use_cache": true,
            "use_conv_bias": true,
            "dtype": "float32",
        }),
    );
}

/// Writes a random Mamba1 checkpoint (`model_type: "mamba"`) into `dir` (created if needed).
#[allow(clippy::too_many_arguments)]
pub fn write_random_mamba1(
    dir: &Path,
    d_model: usize,
    n_layer: usize,
    vocab: usize,
    d_state: usize,
    dt_rank: usize,
    expand: usize,
    d_conv: usize,
    tied: bool,
    seed: u64,
) {
    let d_inner = expand * d_model;
    std::fs::create_dir_all(dir).unwrap();

    let mut g = Gen::new(seed);
    g.normal("backbone.embeddings.weight".into(), vec![vocab, d_model], 0.05);
    for l in 0..n_layer {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        g.around_one(p("norm.weight"), vec![d_model]);
        g.fan_in(p("mixer.in_proj.weight"), vec![2 * d_inner, d_model], d_model);
        g.fan_in(p("mixer.conv1d.weight"), vec![d_inner, 1, d_conv], d_conv);
        g.fan_in(p("mixer.conv1d.bias"), vec![d_inner], d_conv);
        g.fan_in(p("mixer.x_proj.weight"), vec![dt_rank + 2 * d_state, d_inner], d_inner);
        g.fan_in(p("mixer.dt_proj.weight"), vec![d_inner, dt_rank], dt_rank);
        g.dt_bias(p("mixer.dt_proj.bias"), vec![d_inner]);
        g.a_log(p("mixer.A_log"), vec![d_inner, d_state]);
        g.around_one(p("mixer.D"), vec![d_inner]);
        g.fan_in(p("mixer.out_proj.weight"), vec![d_model, d_inner], d_inner);
    }
    g.around_one("backbone.norm_f.weight".into(), vec![d_model]);
    if !tied {
        g.normal("lm_head.weight".into(), vec![vocab, d_model], 0.05);
    }
    g.write(&dir.join("model.safetensors"));

    write_config(
        dir,
        &json!({
            "architectures": ["MambaForCausalLM"],
            "model_type": "mamba",
            "bos_token_id": 0,
            "eos_token_id": 0,
            "pad_token_id": 1,
            "hidden_size": d_model,
            "num_hidden_layers": n_layer,
            "vocab_size": vocab,
            "state_size": d_state,
            "conv_kernel": d_conv,
            "expand": expand,
            "intermediate_size": d_inner,
            "time_step_rank": dt_rank,
            "hidden_act": "silu",
            "initializer_range": 0.1,
            "layer_norm_epsilon": 1e-5,
            "rescale_prenorm_residual": false,
            "residual_in_fp32": true,
            "tie_word_embeddings": tied,
            "time_step_floor": 0.0001,
            "time_step_init_scheme": "random",
            "time_step_max": 0.1,
            "time_step_min": 0.001,
            "time_step_scale": 1.0,
            "use_bias": false,
            "use_cache": true,
            "use_conv_bias": true,
            "dtype": "float32",
        }),
    );
}
