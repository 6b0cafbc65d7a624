//! Reading `config.json` in either layout into one [`ModelConfig`].

use std::path::Path;

use ir::Family;
use serde_json::{Map, Value};

use super::CheckpointError;

/// How the checkpoint directory is organised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// transformers: `config.json` + `model.safetensors` (or an index of shards).
    Transformers,
    /// state-spaces / mamba_ssm: `config.json` with `ssm_cfg` + `pytorch_model.bin`.
    StateSpaces,
}

/// Everything about a model's architecture that lowering and shape checks need.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// Mamba1 or Mamba2.
    pub family: Family,
    /// Which layout the directory uses.
    pub layout: Layout,
    /// Residual stream width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Vocabulary size named by the config (the tokenizer's range).
    pub vocab_size: usize,
    /// Rows of the embedding table (vocab rounded up to `pad_vocab_size_multiple`).
    pub padded_vocab: usize,
    /// SSM state size N.
    pub d_state: usize,
    /// Causal conv kernel length.
    pub d_conv: usize,
    /// Mixer inner width (expand · d_model unless the config says otherwise).
    pub d_inner: usize,
    /// Mamba1: rank of the Δ projection.
    pub dt_rank: usize,
    /// Mamba2: channels per head.
    pub head_dim: usize,
    /// Mamba2: number of heads (d_inner / head_dim).
    pub n_heads: usize,
    /// Mamba2: number of B/C groups.
    pub n_groups: usize,
    /// Mamba2: chunk length of the SSD algorithm.
    pub chunk_size: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Whether the lm head is the embedding matrix.
    pub tied: bool,
    /// Whether in_proj / out_proj have biases.
    pub use_bias: bool,
    /// Whether conv1d has a bias.
    pub use_conv_bias: bool,
    /// Mamba2: Δ is clamped to this range after softplus.
    #[serde(with = "float_pair")]
    pub dt_limit: (f32, f32),
}

/// JSON has no infinity: store each bound as a number, or as the string "inf" / "-inf".
mod float_pair {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bound {
        Number(f32),
        Text(String),
    }

    fn to_bound(x: f32) -> Bound {
        if x.is_finite() {
            Bound::Number(x)
        } else {
            Bound::Text(if x > 0.0 { "inf" } else { "-inf" }.into())
        }
    }

    fn from_bound<E: serde::de::Error>(b: Bound) -> Result<f32, E> {
        match b {
            Bound::Number(x) => Ok(x),
            Bound::Text(t) => t.parse().map_err(|_| E::custom(format!("`{t}` is not a number"))),
        }
    }

    pub fn serialize<S: Serializer>(v: &(f32, f32), s: S) -> Result<S::Ok, S::Error> {
        (to_bound(v.0), to_bound(v.1)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(f32, f32), D::Error> {
        let (a, b) = <(Bound, Bound)>::deserialize(d)?;
        Ok((from_bound(a)?, from_bound(b)?))
    }
}

impl ModelConfig {
    /// Mamba2: channels entering the conv (x, B and C).
    pub fn conv_dim(&self) -> usize {
        match self.family {
            Family::Mamba1 => self.d_inner,
            Family::Mamba2 => self.d_inner + 2 * self.n_groups * self.d_state,
        }
    }

    /// Output width of in_proj.
    pub fn in_proj_dim(&self) -> usize {
        match self.family {
            Family::Mamba1 => 2 * self.d_inner,
            Family::Mamba2 => self.d_inner + self.conv_dim() + self.n_heads,
        }
    }

    /// Reads `dir/config.json`; `layout` says which key set to expect.
    pub fn read(dir: &Path, layout: Layout) -> Result<ModelConfig, CheckpointError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::Config { path: path.clone(), detail: format!("not valid JSON: {e}") })?;
        let obj = json
            .as_object()
            .ok_or_else(|| CheckpointError::Config { path: path.clone(), detail: "expected a JSON object".into() })?;
        let fields = Fields { path: &path, obj };
        let cfg = match layout {
            Layout::Transformers => from_transformers(&fields)?,
            Layout::StateSpaces => from_state_spaces(&fields)?,
        };
        cfg.check(&path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), CheckpointError> {
        let bad = |detail: String| Err(CheckpointError::Config { path: path.to_path_buf(), detail });
        for (name, v) in [("d_model", self.d_model), ("n_layer", self.n_layer), ("vocab_size", self.vocab_size), ("d_state", self.d_state), ("d_conv", self.d_conv), ("d_inner", self.d_inner)] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.family == Family::Mamba1 && self.dt_rank == 0 {
            return bad("dt_rank must be positive".into());
        }
        if self.family == Family::Mamba2 {
            if self.head_dim == 0 || !self.d_inner.is_multiple_of(self.head_dim) {
                return bad(format!("d_inner {} is not a multiple of head_dim {}", self.d_inner, self.head_dim));
            }
            if self.n_groups == 0 || !self.n_heads.is_multiple_of(self.n_groups) {
                return bad(format!("num_heads {} is not a multiple of n_groups {}", self.n_heads, self.n_groups));
            }
            if self.n_heads * self.head_dim != self.d_inner {
                return bad(format!("num_heads {} × head_dim {} ≠ d_inner {}", self.n_heads, self.head_dim, self.d_inner));
            }
            if self.chunk_size == 0 {
                return bad("chunk_size must be positive".into());
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("norm epsilon {} must be a positive number", self.eps));
        }
        Ok(())
    }
}

/// Typed access to config fields, with errors naming the file and the key.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, detail: String) -> CheckpointError {
        CheckpointError::Config { path: self.path.to_path_buf(), detail }
    }
    fn usize_in(&self, obj: &Map<String, Value>, key: &str) -> Result<Option<usize>, CheckpointError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(format!("`{key}` must be a non-negative integer, got {v}"))),
        }
    }
    fn usize(&self, key: &str) -> Result<Option<usize>, CheckpointError> {
        self.usize_in(self.obj, key)
    }
    fn required(&self, key: &str) -> Result<usize, CheckpointError> {
        self.usize(key)?.ok_or_else(|| self.err(format!("missing required field `{key}`")))
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }
    fn float(&self, key: &str, default: f32) -> Result<f32, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => json_float(v).ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }
    /// `time_step_rank` / `dt_rank`: an integer or "auto" (= ⌈d_model / 16⌉).
    fn rank(&self, obj: &Map<String, Value>, key: &str, d_model: usize) -> Result<usize, CheckpointError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(d_model.div_ceil(16)),
            Some(Value::String(s)) if s == "auto" => Ok(d_model.div_ceil(16)),
            Some(_) => self.usize_in(obj, key).map(|n| n.unwrap_or(0)),
        }
    }
    fn dt_limit(&self, v: Option<&Value>) -> Result<(f32, f32), CheckpointError> {
        match v {
            None | Some(Value::Null) => Ok((0.0, f32::INFINITY)),
            Some(Value::Array(a)) if a.len() == 2 => match (json_float(&a[0]), json_float(&a[1])) {
                (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                _ => Err(self.err(format!("time step limit must be [low, high], got {}", Value::Array(a.clone())))),
            },
            Some(other) => Err(self.err(format!("time step limit must be [low, high], got {other}"))),
        }
    }
}

/// A JSON number, or PyTorch's `{"__float__": "Infinity"}` encoding of non-finite floats.
fn json_float(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as f32),
        Value::Object(o) => match o.get("__float__")?.as_str()? {
            "Infinity" | "inf" => Some(f32::INFINITY),
            "-Infinity" | "-inf" => Some(f32::NEG_INFINITY),
            _ => None,
        },
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => Some(f32::INFINITY),
            _ => s.parse().ok(),
        },
        _ => None,
    }
}

fn from_transformers(f: &Fields) -> Result<ModelConfig, CheckpointError> {
    let model_type = f.obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let family = match model_type {
        "mamba" => Family::Mamba1,
        "mamba2" => Family::Mamba2,
        other => return Err(f.err(format!("unknown model_type `{other}` (expected \"mamba\" or \"mamba2\")"))),
    };
    let d_model = f.required("hidden_size")?;
    let expand = f.usize("expand")?.unwrap_or(2);
    let d_inner = match family {
        Family::Mamba1 => f.usize("intermediate_size")?.unwrap_or(expand * d_model),
        Family::Mamba2 => expand * d_model,
    };
    let head_dim = f.usize("head_dim")?.unwrap_or(64);
    let vocab_size = f.required("vocab_size")?;
    Ok(ModelConfig {
        family,
        layout: Layout::Transformers,
        d_model,
        n_layer: f.required("num_hidden_layers")?,
        vocab_size,
        padded_vocab: vocab_size,
        d_state: f.usize("state_size")?.unwrap_or(if family == Family::Mamba1 { 16 } else { 128 }),
        d_conv: f.usize("conv_kernel")?.unwrap_or(4),
        d_inner,
        dt_rank: if family == Family::Mamba1 { f.rank(f.obj, "time_step_rank", d_model)? } else { 0 },
        head_dim: if family == Family::Mamba2 { head_dim } else { 0 },
        n_heads: if family == Family::Mamba2 { f.usize("num_heads")?.unwrap_or(d_inner / head_dim.max(1)) } else { 0 },
        n_groups: if family == Family::Mamba2 { f.usize("n_groups")?.unwrap_or(1) } else { 0 },
        chunk_size: if family == Family::Mamba2 { f.usize("chunk_size")?.unwrap_or(256) } else { 0 },
        eps: f.float("layer_norm_epsilon", 1e-5)?,
        tied: f.bool("tie_word_embeddings", true)?,
        use_bias: f.bool("use_bias", false)?,
        use_conv_bias: f.bool("use_conv_bias", true)?,
        dt_limit: f.dt_limit(f.obj.get("time_step_limit"))?,
    })
}

fn from_state_spaces(f: &Fields) -> Result<ModelConfig, CheckpointError> {
    let empty = Map::new();
    let ssm = match f.obj.get("ssm_cfg") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(v) => return Err(f.err(format!("`ssm_cfg` must be an object, got {v}"))),
    };
    let family = match ssm.get("layer").and_then(Value::as_str).unwrap_or("Mamba1") {
        "Mamba1" => Family::Mamba1,
        "Mamba2" => Family::Mamba2,
        other => return Err(f.err(format!("unknown ssm_cfg.layer `{other}` (expected \"Mamba1\" or \"Mamba2\")"))),
    };
    if f.usize("d_intermediate")?.unwrap_or(0) != 0 {
        return Err(f.err("d_intermediate > 0 (MLP blocks) is not supported".into()));
    }
    if f.obj.get("attn_layer_idx").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(f.err("attention layers (attn_layer_idx) are not supported".into()));
    }
    if !f.bool("rms_norm", true)? {
        return Err(f.err("rms_norm = false (LayerNorm models) is not supported".into()));
    }
    let known = ["layer", "d_state", "d_conv", "expand", "dt_rank", "headdim", "ngroups", "chunk_size", "bias", "conv_bias", "dt_min", "dt_max", "dt_init_floor", "dt_limit", "dt_scale", "dt_init", "A_init_range", "D_has_hdim", "rmsnorm", "norm_before_gate", "use_fast_path", "d_ssm"];
    if let Some(k) = ssm.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(f.err(format!("unknown ssm_cfg field `{k}`")));
    }
    for (key, unsupported) in [("D_has_hdim", true), ("norm_before_gate", true), ("rmsnorm", false)] {
        if ssm.get(key).and_then(Value::as_bool) == Some(unsupported) {
            return Err(f.err(format!("ssm_cfg.{key} = {unsupported} is not supported")));
        }
    }
    let d_model = f.required("d_model")?;
    let vocab_size = f.required("vocab_size")?;
    let multiple = f.usize("pad_vocab_size_multiple")?.unwrap_or(8).max(1);
    let expand = f.usize_in(ssm, "expand")?.unwrap_or(2);
    let d_inner = f.usize_in(ssm, "d_ssm")?.unwrap_or(expand * d_model);
    let head_dim = f.usize_in(ssm, "headdim")?.unwrap_or(64);
    let ssm_bool = |key: &str, default: bool| ssm.get(key).and_then(Value::as_bool).unwrap_or(default);
    Ok(ModelConfig {
        family,
        layout: Layout::StateSpaces,
        d_model,
        n_layer: f.required("n_layer")?,
        vocab_size,
        padded_vocab: vocab_size.div_ceil(multiple) * multiple,
        d_state: f.usize_in(ssm, "d_state")?.unwrap_or(if family == Family::Mamba1 { 16 } else { 128 }),
        d_conv: f.usize_in(ssm, "d_conv")?.unwrap_or(4),
        d_inner,
        dt_rank: if family == Family::Mamba1 { f.rank(ssm, "dt_rank", d_model)? } else { 0 },
        head_dim: if family == Family::Mamba2 { head_dim } else { 0 },
        n_heads: if family == Family::Mamba2 { d_inner / head_dim.max(1) } else { 0 },
        n_groups: if family == Family::Mamba2 { f.usize_in(ssm, "ngroups")?.unwrap_or(1) } else { 0 },
        chunk_size: if family == Family::Mamba2 { f.usize_in(ssm, "chunk_size")?.unwrap_or(256) } else { 0 },
        eps: f.float("norm_epsilon", 1e-5)?,
        tied: f.bool("tie_embeddings", true)?,
        use_bias: ssm_bool("bias", false),
        use_conv_bias: ssm_bool("conv_bias", true),
        dt_limit: f.dt_limit(ssm.get("dt_limit"))?,
    })
}
