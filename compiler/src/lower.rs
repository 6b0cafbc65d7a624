//! Lowering a loaded checkpoint to the IR: one block per layer, in the order the reference
//! implementation (mamba_ssm) computes it. Weights keep their checkpoint names and stored dtypes
//! in the graph's table; their values go to a [`Weights`] store widened to f32.

use std::collections::HashMap;

use ir::{Activation, Family, Graph, IrError, Op, ValueId, WeightDecl, WeightId};
use runtime::{WeightData, Weights};

use crate::checkpoint::{Checkpoint, CheckpointError, ModelConfig};

/// Why lowering failed.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// A tensor could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The graph could not be built (a bug: shapes were checked on load).
    #[error("building the graph: {0}")]
    Ir(#[from] IrError),
}

/// Builds the graph and the weight store for `ckpt`.
pub fn lower(ckpt: &Checkpoint) -> Result<(Graph, Weights), LowerError> {
    let mut b = Builder { ckpt, graph: Graph::new(ckpt.config.family), weights: Weights::new(), ids: HashMap::new() };
    let cfg = &ckpt.config;
    let tokens = b.graph.add(Op::Tokens, &[])?;
    let table = b.weight("backbone.embeddings.weight")?;
    let mut residual = b.graph.add(Op::Embedding { table }, &[tokens])?;
    for layer in 0..cfg.n_layer {
        let p = |s: &str| format!("backbone.layers.{layer}.{s}");
        let norm = b.weight(&p("norm.weight"))?;
        let normed = b.graph.add(Op::RmsNorm { weight: Some(norm), eps: cfg.eps }, &[residual])?;
        let mixed = match cfg.family {
            Family::Mamba1 => b.mamba1_mixer(cfg, layer, normed)?,
            Family::Mamba2 => b.mamba2_mixer(cfg, layer, normed)?,
        };
        residual = b.graph.add(Op::Add, &[residual, mixed])?;
    }
    let norm_f = b.weight("backbone.norm_f.weight")?;
    let last = b.graph.add(Op::RmsNorm { weight: Some(norm_f), eps: cfg.eps }, &[residual])?;
    let head = if cfg.tied { table } else { b.weight("lm_head.weight")? };
    let logits = b.graph.add(Op::LmHead { weight: head }, &[last])?;
    b.graph.add_output(logits);
    Ok((b.graph, b.weights))
}

struct Builder<'a> {
    ckpt: &'a Checkpoint,
    graph: Graph,
    weights: Weights,
    ids: HashMap<String, WeightId>,
}

impl Builder<'_> {
    /// Declares checkpoint tensor `name` (once) and returns its id.
    fn weight(&mut self, name: &str) -> Result<WeightId, LowerError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        let raw = &self.ckpt.tensors[name];
        let id = self.graph.add_weight(WeightDecl { name: name.to_string(), dtype: raw.dtype, shape: raw.shape.clone() });
        self.weights.push(WeightData::new(raw.shape.clone(), self.ckpt.f32(name)?));
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    fn opt_weight(&mut self, name: &str, present: bool) -> Result<Option<WeightId>, LowerError> {
        present.then(|| self.weight(name)).transpose()
    }

    fn split(&mut self, v: ValueId, start: usize, len: usize) -> Result<ValueId, LowerError> {
        Ok(self.graph.add(Op::Split { start, end: start + len }, &[v])?)
    }

    fn silu(&mut self, v: ValueId) -> Result<ValueId, LowerError> {
        Ok(self.graph.add(Op::Activation { kind: Activation::Silu }, &[v])?)
    }

    fn linear(&mut self, prefix: &str, v: ValueId, bias: bool) -> Result<ValueId, LowerError> {
        let weight = self.weight(&format!("{prefix}.weight"))?;
        let bias = self.opt_weight(&format!("{prefix}.bias"), bias)?;
        Ok(self.graph.add(Op::Linear { weight, bias }, &[v])?)
    }

    fn conv(&mut self, prefix: &str, v: ValueId, bias: bool) -> Result<ValueId, LowerError> {
        let weight = self.weight(&format!("{prefix}.conv1d.weight"))?;
        let bias = self.opt_weight(&format!("{prefix}.conv1d.bias"), bias)?;
        let conv = self.graph.add(Op::CausalConv1d { weight, bias }, &[v])?;
        self.silu(conv)
    }

    /// in_proj → (x, z); x → conv → silu → x_proj → (dt, B, C); dt_proj; scan; y·silu(z); out_proj.
    fn mamba1_mixer(&mut self, cfg: &ModelConfig, layer: usize, input: ValueId) -> Result<ValueId, LowerError> {
        let m = format!("backbone.layers.{layer}.mixer");
        let (di, n, r) = (cfg.d_inner, cfg.d_state, cfg.dt_rank);
        let xz = self.linear(&format!("{m}.in_proj"), input, cfg.use_bias)?;
        let x = self.split(xz, 0, di)?;
        let z = self.split(xz, di, di)?;
        let x = self.conv(&m, x, cfg.use_conv_bias)?;
        let dbc = self.linear(&format!("{m}.x_proj"), x, false)?;
        let dt_low = self.split(dbc, 0, r)?;
        let b = self.split(dbc, r, n)?;
        let c = self.split(dbc, r + n, n)?;
        let dt = self.linear(&format!("{m}.dt_proj"), dt_low, true)?;
        let a_log = self.weight(&format!("{m}.A_log"))?;
        let d = self.weight(&format!("{m}.D"))?;
        let y = self.graph.add(Op::SelectiveScan { a_log, d, state: None }, &[x, dt, b, c])?;
        let gate = self.silu(z)?;
        let gated = self.graph.add(Op::Mul, &[y, gate])?;
        self.linear(&format!("{m}.out_proj"), gated, cfg.use_bias)
    }

    /// in_proj → (z, xBC, dt); xBC → conv → silu → (x, B, C); SSD; gated RMSNorm with z; out_proj.
    fn mamba2_mixer(&mut self, cfg: &ModelConfig, layer: usize, input: ValueId) -> Result<ValueId, LowerError> {
        let m = format!("backbone.layers.{layer}.mixer");
        let (di, gn) = (cfg.d_inner, cfg.n_groups * cfg.d_state);
        let proj = self.linear(&format!("{m}.in_proj"), input, cfg.use_bias)?;
        let z = self.split(proj, 0, di)?;
        let xbc = self.split(proj, di, cfg.conv_dim())?;
        let dt = self.split(proj, di + cfg.conv_dim(), cfg.n_heads)?;
        let xbc = self.conv(&m, xbc, cfg.use_conv_bias)?;
        let x = self.split(xbc, 0, di)?;
        let b = self.split(xbc, di, gn)?;
        let c = self.split(xbc, di + gn, gn)?;
        let ssd = Op::Ssd {
            a_log: self.weight(&format!("{m}.A_log"))?,
            d: self.weight(&format!("{m}.D"))?,
            dt_bias: self.weight(&format!("{m}.dt_bias"))?,
            heads: cfg.n_heads,
            head_dim: cfg.head_dim,
            groups: cfg.n_groups,
            d_state: cfg.d_state,
            chunk: cfg.chunk_size,
            dt_min: cfg.dt_limit.0,
            dt_max: cfg.dt_limit.1,
            state: None,
        };
        let y = self.graph.add(ssd, &[x, dt, b, c])?;
        let weight = self.weight(&format!("{m}.norm.weight"))?;
        let normed = self.graph.add(Op::GatedRmsNorm { weight, groups: cfg.n_groups, eps: cfg.eps }, &[y, z])?;
        self.linear(&format!("{m}.out_proj"), normed, cfg.use_bias)
    }
}
