//! The closed set of operations a Mamba graph is made of, with their attributes and typing rules.
//!
//! Every op produces exactly one value. Ops whose value depends on earlier tokens
//! (`causal_conv1d`, `selective_scan`, `ssd`) carry recurrent state in the executor; the IR itself
//! is stateless, so one graph describes both prefill over a sequence and a one-token decode step.

use crate::graph::{WeightDecl, WeightId};
use crate::types::{DType, Dim, TensorType};

/// Pointwise activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// x·σ(x).
    Silu,
    /// ln(1 + eˣ).
    Softplus,
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Softplus => "softplus",
        }
    }
}

/// An IR operation. The enum is closed: passes and backends match on it exhaustively.
// Fields are described in each variant's doc; one line per field would repeat it.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The graph input: token ids, `i64[B, L]`.
    Tokens,
    /// Row gather from `table` (`[vocab, d_model]`).
    Embedding { table: WeightId },
    /// Root-mean-square normalisation over the last axis, optionally scaled by `weight`.
    RmsNorm { weight: Option<WeightId>, eps: f32 },
    /// `x · weightᵀ + bias` with `weight` stored `[out, in]` as in PyTorch.
    Linear { weight: WeightId, bias: Option<WeightId> },
    /// Depthwise causal convolution along the sequence, `weight` `[channels, 1, kernel]`.
    CausalConv1d { weight: WeightId, bias: Option<WeightId> },
    /// The channel range `start..end` of the last axis.
    Split { start: usize, end: usize },
    /// A pointwise activation.
    Activation { kind: Activation },
    /// Elementwise product of two values of one type.
    Mul,
    /// Elementwise sum of two values of one type (the residual add).
    Add,
    /// Mamba1 selective scan. Operands: x `[B,L,d_inner]`, dt `[B,L,d_inner]` (before softplus),
    /// B `[B,L,d_state]`, C `[B,L,d_state]`. `a_log` is `[d_inner, d_state]`, `d` is `[d_inner]`.
    /// Computes h ← exp(Δ·A)·h + Δ·B·x, y = C·h + D·x with Δ = softplus(dt), A = −exp(a_log).
    /// `state`: the state kept between calls is int8 (see [`StateQuant`]).
    SelectiveScan { a_log: WeightId, d: WeightId, state: Option<StateQuant> },
    /// Mamba2 state-space duality (SSD) scan. Operands: x `[B,L,heads·head_dim]`, dt `[B,L,heads]`
    /// (before bias and softplus), B and C `[B,L,groups·d_state]`. Per head h:
    /// Δ = clamp(softplus(dt + dt_bias), dt_min, dt_max), state ← exp(Δ·A)·state + Δ·x⊗B, y = state·C + D·x.
    /// `chunk` is the chunk length of the blocked prefill algorithm; it does not change the result.
    /// `state`: the state kept between calls is int8 (see [`StateQuant`]).
    Ssd {
        a_log: WeightId,
        d: WeightId,
        dt_bias: WeightId,
        heads: usize,
        head_dim: usize,
        groups: usize,
        d_state: usize,
        chunk: usize,
        dt_min: f32,
        dt_max: f32,
        state: Option<StateQuant>,
    },
    /// mamba_ssm's gated RMSNorm ("norm after gate"): y·silu(z), RMS-normalised within each of
    /// `groups` equal slices of the channels, times `weight`. Operands: y, z.
    GatedRmsNorm { weight: WeightId, groups: usize, eps: f32 },
    /// The output projection to vocabulary logits, `weight` `[vocab, d_model]` (the embedding table
    /// when the head is tied).
    LmHead { weight: WeightId },
    /// The orthonormal Walsh–Hadamard transform of the last axis, applied online: x·H/√n. For a
    /// width n that is not a power of two, H is block-diagonal: Walsh–Hadamard blocks of the
    /// largest power of two dividing n (still orthonormal, so a folded inverse keeps the function).
    Hadamard,
    /// Static symmetric int8 quantization: q = clamp(round_half_even(x / scale[c]), −128, 127),
    /// `scale` f32 `[width]` (per channel) or `[1]` (per tensor). f32 → i8.
    Quantize { scale: WeightId },
    /// x = q · scale[c], `scale` as for `quantize`. i8 → f32.
    Dequantize { scale: WeightId },
    /// Linear layer with quantized weights: `weight` i8 or i4 `[out, in]` holding integers,
    /// `scales` f32 `[out, in/group]`. With `act_scale` the operand is i8 and products are exact
    /// integers per group: out = act_scale · Σ_g scales[o,g] · Σ_{k∈g} x[k]·w[o,k] (+ bias). Without
    /// it the operand is f32 and out = Σ_k x[k] · w[o,k] · scales[o, k/group] (+ bias).
    QLinear { weight: WeightId, scales: WeightId, bias: Option<WeightId>, group: usize, act_scale: Option<f32> },
    /// Embedding from a quantized table: `table` i8 or i4 `[vocab, d]`, `scales` f32 `[vocab, d/group]`.
    QEmbedding { table: WeightId, scales: WeightId, group: usize },
}

/// A scan whose recurrent state is kept in int8 between calls (Quamba2's cached SSM state): at the
/// end of every call each state element h of channel c and state index n is stored as
/// q = clamp(round_half_even(h · r), −128, 127) with r = 1 / s rounded to f32 (a multiply where
/// every token's every state would otherwise take a division) and s = `scale`[group(c), n]
/// (n → 0 where `scale` has one column); NaN gives 0. The next call starts from q · s. Within a call (a prefill) the
/// state stays f32. `scale` is f32 `[groups, d_state]` or `[groups, 1]`; `group` is i32
/// `[channels]` (a state row's group; every row is group 0 without it). Channels are Mamba1's
/// d_inner or Mamba2's heads · head_dim; rows are stored `[channel][n]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateQuant {
    /// The scales, `[groups, d_state]` or `[groups, 1]`.
    pub scale: WeightId,
    /// Each channel's row of `scale`, i32 `[channels]`; absent: row 0 for every channel.
    pub group: Option<WeightId>,
}

/// An attribute value as it appears in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A weight reference, `@3`.
    Weight(WeightId),
    /// An unsigned integer.
    Int(usize),
    /// A float.
    Float(f32),
    /// A bare word.
    Word(String),
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attr::Weight(w) => write!(f, "{w}"),
            Attr::Int(n) => write!(f, "{n}"),
            Attr::Float(x) => write!(f, "{x:?}"),
            Attr::Word(s) => f.write_str(s),
        }
    }
}

/// Reads named attributes for [`Op::from_parts`], reporting the first missing or mistyped one.
struct AttrReader<'a> {
    op: &'a str,
    attrs: &'a [(String, Attr)],
}

impl AttrReader<'_> {
    fn find(&self, key: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn missing(&self, key: &str, what: &str) -> String {
        format!("`{}` needs attribute `{key}` ({what})", self.op)
    }
    fn weight(&self, key: &str) -> Result<WeightId, String> {
        match self.find(key) {
            Some(Attr::Weight(w)) => Ok(*w),
            _ => Err(self.missing(key, "a weight like @3")),
        }
    }
    fn opt_weight(&self, key: &str) -> Result<Option<WeightId>, String> {
        match self.find(key) {
            None => Ok(None),
            Some(Attr::Weight(w)) => Ok(Some(*w)),
            Some(_) => Err(self.missing(key, "a weight like @3")),
        }
    }
    fn int(&self, key: &str) -> Result<usize, String> {
        match self.find(key) {
            Some(Attr::Int(n)) => Ok(*n),
            _ => Err(self.missing(key, "an unsigned integer")),
        }
    }
    fn float(&self, key: &str) -> Result<f32, String> {
        match self.find(key) {
            Some(Attr::Float(x)) => Ok(*x),
            Some(Attr::Int(n)) => Ok(*n as f32),
            _ => Err(self.missing(key, "a number")),
        }
    }
    fn opt_float(&self, key: &str) -> Result<Option<f32>, String> {
        match self.find(key) {
            None => Ok(None),
            Some(_) => self.float(key).map(Some),
        }
    }
    fn state_quant(&self) -> Result<Option<StateQuant>, String> {
        match (self.opt_weight("state_scale")?, self.opt_weight("state_group")?) {
            (Some(scale), group) => Ok(Some(StateQuant { scale, group })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(format!("`{}` has `state_group` without `state_scale`", self.op)),
        }
    }
    fn word(&self, key: &str) -> Result<&str, String> {
        match self.find(key) {
            Some(Attr::Word(s)) => Ok(s),
            _ => Err(self.missing(key, "a word")),
        }
    }
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Tokens => "tokens",
            Op::Embedding { .. } => "embedding",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Linear { .. } => "linear",
            Op::CausalConv1d { .. } => "causal_conv1d",
            Op::Split { .. } => "split",
            Op::Activation { .. } => "activation",
            Op::Mul => "mul",
            Op::Add => "add",
            Op::SelectiveScan { .. } => "selective_scan",
            Op::Ssd { .. } => "ssd",
            Op::GatedRmsNorm { .. } => "gated_rms_norm",
            Op::LmHead { .. } => "lm_head",
            Op::Hadamard => "hadamard",
            Op::Quantize { .. } => "quantize",
            Op::Dequantize { .. } => "dequantize",
            Op::QLinear { .. } => "qlinear",
            Op::QEmbedding { .. } => "qembedding",
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Tokens => 0,
            Op::Embedding { .. }
            | Op::RmsNorm { .. }
            | Op::Linear { .. }
            | Op::CausalConv1d { .. }
            | Op::Split { .. }
            | Op::Activation { .. }
            | Op::LmHead { .. }
            | Op::Hadamard
            | Op::Quantize { .. }
            | Op::Dequantize { .. }
            | Op::QLinear { .. }
            | Op::QEmbedding { .. } => 1,
            Op::Mul | Op::Add | Op::GatedRmsNorm { .. } => 2,
            Op::SelectiveScan { .. } | Op::Ssd { .. } => 4,
        }
    }

    /// Whether the executor keeps per-sequence state for this op between calls.
    pub fn is_stateful(&self) -> bool {
        matches!(self, Op::CausalConv1d { .. } | Op::SelectiveScan { .. } | Op::Ssd { .. })
    }

    /// Every weight the op reads, in attribute order.
    pub fn weights(&self) -> Vec<WeightId> {
        self.attrs()
            .into_iter()
            .filter_map(|(_, a)| match a {
                Attr::Weight(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// Rewrites every weight reference through `f` (used when a weight table is compacted).
    pub fn map_weights(&mut self, mut f: impl FnMut(WeightId) -> WeightId) {
        let attrs: Vec<(String, Attr)> = self
            .attrs()
            .into_iter()
            .map(|(k, a)| (k.to_string(), if let Attr::Weight(w) = a { Attr::Weight(f(w)) } else { a }))
            .collect();
        // Rebuilding from the op's own attributes cannot fail.
        if let Ok(op) = Op::from_parts(self.name(), &attrs) {
            *self = op;
        }
    }

    /// The op's attributes in their canonical text order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut out = Vec::new();
        match self {
            Op::Tokens | Op::Mul | Op::Add | Op::Hadamard => {}
            Op::Quantize { scale } | Op::Dequantize { scale } => out.push(("scale", Attr::Weight(*scale))),
            Op::QLinear { weight, scales, bias, group, act_scale } => {
                out.push(("weight", Attr::Weight(*weight)));
                out.push(("scales", Attr::Weight(*scales)));
                if let Some(b) = bias {
                    out.push(("bias", Attr::Weight(*b)));
                }
                out.push(("group", Attr::Int(*group)));
                if let Some(s) = act_scale {
                    out.push(("act_scale", Attr::Float(*s)));
                }
            }
            Op::QEmbedding { table, scales, group } => {
                out.push(("table", Attr::Weight(*table)));
                out.push(("scales", Attr::Weight(*scales)));
                out.push(("group", Attr::Int(*group)));
            }
            Op::Embedding { table } => out.push(("table", Attr::Weight(*table))),
            Op::RmsNorm { weight, eps } => {
                if let Some(w) = weight {
                    out.push(("weight", Attr::Weight(*w)));
                }
                out.push(("eps", Attr::Float(*eps)));
            }
            Op::Linear { weight, bias } | Op::CausalConv1d { weight, bias } => {
                out.push(("weight", Attr::Weight(*weight)));
                if let Some(b) = bias {
                    out.push(("bias", Attr::Weight(*b)));
                }
            }
            Op::Split { start, end } => {
                out.push(("start", Attr::Int(*start)));
                out.push(("end", Attr::Int(*end)));
            }
            Op::Activation { kind } => out.push(("kind", Attr::Word(kind.name().to_string()))),
            Op::SelectiveScan { a_log, d, state } => {
                out.push(("a_log", Attr::Weight(*a_log)));
                out.push(("d", Attr::Weight(*d)));
                push_state_quant(&mut out, state);
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, dt_min, dt_max, state } => {
                out.push(("a_log", Attr::Weight(*a_log)));
                out.push(("d", Attr::Weight(*d)));
                out.push(("dt_bias", Attr::Weight(*dt_bias)));
                out.push(("heads", Attr::Int(*heads)));
                out.push(("head_dim", Attr::Int(*head_dim)));
                out.push(("groups", Attr::Int(*groups)));
                out.push(("d_state", Attr::Int(*d_state)));
                out.push(("chunk", Attr::Int(*chunk)));
                out.push(("dt_min", Attr::Float(*dt_min)));
                out.push(("dt_max", Attr::Float(*dt_max)));
                push_state_quant(&mut out, state);
            }
            Op::GatedRmsNorm { weight, groups, eps } => {
                out.push(("weight", Attr::Weight(*weight)));
                out.push(("groups", Attr::Int(*groups)));
                out.push(("eps", Attr::Float(*eps)));
            }
            Op::LmHead { weight } => out.push(("weight", Attr::Weight(*weight))),
        }
        out
    }

    /// Rebuilds an op from its text-form name and attributes (the inverse of [`Op::name`] + [`Op::attrs`]).
    pub fn from_parts(name: &str, attrs: &[(String, Attr)]) -> Result<Op, String> {
        let r = AttrReader { op: name, attrs };
        let op = match name {
            "tokens" => Op::Tokens,
            "embedding" => Op::Embedding { table: r.weight("table")? },
            "rms_norm" => Op::RmsNorm { weight: r.opt_weight("weight")?, eps: r.float("eps")? },
            "linear" => Op::Linear { weight: r.weight("weight")?, bias: r.opt_weight("bias")? },
            "causal_conv1d" => Op::CausalConv1d { weight: r.weight("weight")?, bias: r.opt_weight("bias")? },
            "split" => Op::Split { start: r.int("start")?, end: r.int("end")? },
            "activation" => Op::Activation {
                kind: match r.word("kind")? {
                    "silu" => Activation::Silu,
                    "softplus" => Activation::Softplus,
                    other => return Err(format!("unknown activation `{other}` (expected silu or softplus)")),
                },
            },
            "mul" => Op::Mul,
            "add" => Op::Add,
            "selective_scan" => Op::SelectiveScan { a_log: r.weight("a_log")?, d: r.weight("d")?, state: r.state_quant()? },
            "ssd" => Op::Ssd {
                a_log: r.weight("a_log")?,
                d: r.weight("d")?,
                dt_bias: r.weight("dt_bias")?,
                heads: r.int("heads")?,
                head_dim: r.int("head_dim")?,
                groups: r.int("groups")?,
                d_state: r.int("d_state")?,
                chunk: r.int("chunk")?,
                dt_min: r.float("dt_min")?,
                dt_max: r.float("dt_max")?,
                state: r.state_quant()?,
            },
            "gated_rms_norm" => Op::GatedRmsNorm {
                weight: r.weight("weight")?,
                groups: r.int("groups")?,
                eps: r.float("eps")?,
            },
            "lm_head" => Op::LmHead { weight: r.weight("weight")? },
            "hadamard" => Op::Hadamard,
            "quantize" => Op::Quantize { scale: r.weight("scale")? },
            "dequantize" => Op::Dequantize { scale: r.weight("scale")? },
            "qlinear" => Op::QLinear {
                weight: r.weight("weight")?,
                scales: r.weight("scales")?,
                bias: r.opt_weight("bias")?,
                group: r.int("group")?,
                act_scale: r.opt_float("act_scale")?,
            },
            "qembedding" => Op::QEmbedding { table: r.weight("table")?, scales: r.weight("scales")?, group: r.int("group")? },
            other => return Err(format!("unknown op `{other}`")),
        };
        let known: Vec<&str> = op.attrs().iter().map(|(k, _)| *k).collect();
        if let Some((k, _)) = attrs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(format!("`{name}` has no attribute `{k}`"));
        }
        Ok(op)
    }

    /// The type of the op's value given its operands' types, or why the operands don't fit.
    pub fn infer(&self, inputs: &[&TensorType], weights: &[WeightDecl]) -> Result<TensorType, String> {
        if inputs.len() != self.arity() {
            return Err(format!("`{}` takes {} operands, got {}", self.name(), self.arity(), inputs.len()));
        }
        let shape_of = |w: WeightId| -> Result<&[usize], String> {
            weights
                .get(w.index())
                .map(|d| d.shape.as_slice())
                .ok_or_else(|| format!("weight {w} is not declared"))
        };
        let expect_shape = |w: WeightId, want: &[usize], role: &str| -> Result<(), String> {
            let got = shape_of(w)?;
            if got != want {
                return Err(format!("{role} weight {w} has shape {got:?}, expected {want:?}"));
            }
            Ok(())
        };
        let seq_f32 = |i: usize| -> Result<usize, String> {
            let t = inputs[i];
            if t.dtype != DType::F32 || t.dims.len() != 3 || t.dims[0] != Dim::Batch || t.dims[1] != Dim::Seq {
                return Err(format!("operand {i} must be f32[B, L, N], got {t}"));
            }
            t.width().ok_or_else(|| format!("operand {i} has no fixed width: {t}"))
        };
        let seq = |w: usize| TensorType::sequence(DType::F32, w);
        let seq_of = |t: &TensorType, dtype: DType| -> Result<usize, String> {
            if t.dtype != dtype || t.dims.len() != 3 || t.dims[0] != Dim::Batch || t.dims[1] != Dim::Seq {
                return Err(format!("operand must be {dtype}[B, L, N], got {t}"));
            }
            t.width().ok_or_else(|| format!("operand has no fixed width: {t}"))
        };
        match self {
            Op::Tokens => Ok(TensorType { dtype: DType::I64, dims: vec![Dim::Batch, Dim::Seq] }),
            Op::Embedding { table } => {
                let t = inputs[0];
                if t.dtype != DType::I64 || t.dims != [Dim::Batch, Dim::Seq] {
                    return Err(format!("embedding takes token ids i64[B, L], got {t}"));
                }
                match shape_of(*table)? {
                    [_, d] => Ok(seq(*d)),
                    other => Err(format!("embedding table {table} must be [vocab, d_model], got {other:?}")),
                }
            }
            Op::RmsNorm { weight, .. } => {
                let w = seq_f32(0)?;
                if let Some(weight) = weight {
                    expect_shape(*weight, &[w], "rms_norm")?;
                }
                Ok(seq(w))
            }
            Op::Linear { weight, bias } => {
                let w = seq_f32(0)?;
                let out = match shape_of(*weight)? {
                    [o, i] if *i == w => *o,
                    other => return Err(format!("linear weight {weight} has shape {other:?}, expected [out, {w}]")),
                };
                if let Some(b) = bias {
                    expect_shape(*b, &[out], "linear bias")?;
                }
                Ok(seq(out))
            }
            Op::CausalConv1d { weight, bias } => {
                let c = seq_f32(0)?;
                match shape_of(*weight)? {
                    [ch, 1, k] if *ch == c && *k >= 1 => {}
                    other => return Err(format!("conv1d weight {weight} has shape {other:?}, expected [{c}, 1, kernel]")),
                }
                if let Some(b) = bias {
                    expect_shape(*b, &[c], "conv1d bias")?;
                }
                Ok(seq(c))
            }
            Op::Split { start, end } => {
                let w = seq_f32(0)?;
                if start >= end || *end > w {
                    return Err(format!("split {start}..{end} is not a non-empty range within width {w}"));
                }
                Ok(seq(end - start))
            }
            Op::Activation { .. } => Ok(seq(seq_f32(0)?)),
            Op::Mul | Op::Add => {
                let (a, b) = (seq_f32(0)?, seq_f32(1)?);
                if a != b {
                    return Err(format!("`{}` operands differ in width: {a} vs {b}", self.name()));
                }
                Ok(seq(a))
            }
            Op::SelectiveScan { a_log, d, state } => {
                let (x, dt, b, c) = (seq_f32(0)?, seq_f32(1)?, seq_f32(2)?, seq_f32(3)?);
                if dt != x || b != c {
                    return Err(format!("selective_scan needs dt width = x width and B width = C width, got x {x}, dt {dt}, B {b}, C {c}"));
                }
                expect_shape(*a_log, &[x, b], "selective_scan a_log")?;
                expect_shape(*d, &[x], "selective_scan d")?;
                state_quant_shapes(weights, state, x, b, "selective_scan")?;
                Ok(seq(x))
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, chunk, state, .. } => {
                let (x, dt, b, c) = (seq_f32(0)?, seq_f32(1)?, seq_f32(2)?, seq_f32(3)?);
                if *groups == 0 || heads % groups != 0 || *chunk == 0 {
                    return Err(format!("ssd needs heads ({heads}) divisible by groups ({groups}) and chunk > 0"));
                }
                if x != heads * head_dim || dt != *heads || b != groups * d_state || c != b {
                    return Err(format!(
                        "ssd operand widths x {x}, dt {dt}, B {b}, C {c} do not match heads {heads} × head_dim {head_dim}, groups {groups} × d_state {d_state}"
                    ));
                }
                for (w, role) in [(a_log, "ssd a_log"), (d, "ssd d"), (dt_bias, "ssd dt_bias")] {
                    expect_shape(*w, &[*heads], role)?;
                }
                state_quant_shapes(weights, state, x, *d_state, "ssd")?;
                Ok(seq(x))
            }
            Op::GatedRmsNorm { weight, groups, .. } => {
                let (y, z) = (seq_f32(0)?, seq_f32(1)?);
                if y != z || *groups == 0 || y % groups != 0 {
                    return Err(format!("gated_rms_norm needs y and z of one width divisible by groups ({groups}), got {y} and {z}"));
                }
                expect_shape(*weight, &[y], "gated_rms_norm")?;
                Ok(seq(y))
            }
            Op::LmHead { weight } => {
                let w = seq_f32(0)?;
                match shape_of(*weight)? {
                    [v, d] if *d == w => Ok(seq(*v)),
                    other => Err(format!("lm_head weight {weight} has shape {other:?}, expected [vocab, {w}]")),
                }
            }
            Op::Hadamard => Ok(seq(seq_f32(0)?)),
            Op::Quantize { scale } => {
                let w = seq_f32(0)?;
                scale_vector(weights, *scale, w, "quantize")?;
                Ok(TensorType::sequence(DType::I8, w))
            }
            Op::Dequantize { scale } => {
                let w = seq_of(inputs[0], DType::I8)?;
                scale_vector(weights, *scale, w, "dequantize")?;
                Ok(seq(w))
            }
            Op::QLinear { weight, scales, bias, group, act_scale } => {
                let want = if act_scale.is_some() { DType::I8 } else { DType::F32 };
                let w = seq_of(inputs[0], want)?;
                let out = match shape_of(*weight)? {
                    [o, i] if *i == w => *o,
                    other => return Err(format!("qlinear weight {weight} has shape {other:?}, expected [out, {w}]")),
                };
                quantized_table(weights, *weight, *scales, out, w, *group, "qlinear")?;
                if let Some(b) = bias {
                    expect_shape(*b, &[out], "qlinear bias")?;
                }
                Ok(seq(out))
            }
            Op::QEmbedding { table, scales, group } => {
                let t = inputs[0];
                if t.dtype != DType::I64 || t.dims != [Dim::Batch, Dim::Seq] {
                    return Err(format!("qembedding takes token ids i64[B, L], got {t}"));
                }
                let (v, d) = match shape_of(*table)? {
                    [v, d] => (*v, *d),
                    other => return Err(format!("qembedding table {table} must be [vocab, d_model], got {other:?}")),
                };
                quantized_table(weights, *table, *scales, v, d, *group, "qembedding")?;
                Ok(seq(d))
            }
        }
    }
}

fn push_state_quant(out: &mut Vec<(&'static str, Attr)>, state: &Option<StateQuant>) {
    if let Some(StateQuant { scale, group }) = state {
        out.push(("state_scale", Attr::Weight(*scale)));
        if let Some(g) = group {
            out.push(("state_group", Attr::Weight(*g)));
        }
    }
}

/// Checks an int8 state's scales for `channels` state rows of `d_state` values.
fn state_quant_shapes(weights: &[WeightDecl], state: &Option<StateQuant>, channels: usize, d_state: usize, op: &str) -> Result<(), String> {
    let Some(StateQuant { scale, group }) = state else { return Ok(()) };
    let s = weights.get(scale.index()).ok_or_else(|| format!("weight {scale} is not declared"))?;
    let groups = match s.shape.as_slice() {
        [g, n] if s.dtype == DType::F32 && *g >= 1 && (*n == d_state || *n == 1) => *g,
        _ => return Err(format!("{op} state_scale {scale} is {}{:?}, expected f32[groups, {d_state}] or f32[groups, 1]", s.dtype, s.shape)),
    };
    match group {
        Some(g) => {
            let t = weights.get(g.index()).ok_or_else(|| format!("weight {g} is not declared"))?;
            if t.dtype != DType::I32 || t.shape != [channels] {
                return Err(format!("{op} state_group {g} is {}{:?}, expected i32[{channels}]", t.dtype, t.shape));
            }
        }
        None if groups != 1 => return Err(format!("{op} state_scale {scale} has {groups} groups but no state_group says which channel uses which")),
        None => {}
    }
    Ok(())
}

/// Checks a quantized weight table: integer dtype, and scales `[rows, cols / group]`.
fn quantized_table(weights: &[WeightDecl], table: WeightId, scales: WeightId, rows: usize, cols: usize, group: usize, op: &str) -> Result<(), String> {
    let t = weights.get(table.index()).ok_or_else(|| format!("weight {table} is not declared"))?;
    if !t.dtype.is_quantized() {
        return Err(format!("{op} weight {table} must be i8 or i4, is {}", t.dtype));
    }
    if group == 0 || !cols.is_multiple_of(group) {
        return Err(format!("{op} group {group} does not divide the input width {cols}"));
    }
    let s = weights.get(scales.index()).ok_or_else(|| format!("weight {scales} is not declared"))?;
    if s.shape != [rows, cols / group] || !matches!(s.dtype, DType::F32 | DType::F16) {
        return Err(format!("{op} scales {scales} are {}{:?}, expected f32 or f16 [{rows}, {}]", s.dtype, s.shape, cols / group));
    }
    Ok(())
}

/// Checks a quantization scale: f32 `[width]` or `[1]`.
fn scale_vector(weights: &[WeightDecl], scale: WeightId, width: usize, op: &str) -> Result<(), String> {
    let s = weights.get(scale.index()).ok_or_else(|| format!("weight {scale} is not declared"))?;
    if s.dtype != DType::F32 || (s.shape != [width] && s.shape != [1]) {
        return Err(format!("{op} scale {scale} is {}{:?}, expected f32[{width}] or f32[1]", s.dtype, s.shape));
    }
    Ok(())
}
