//! A structural view of a float Mamba graph: for each layer, the values passes care about.
//! It reads the shape `lower` produces (and tolerates an online `hadamard` before out_proj), so
//! passes find in_proj, the SSM operands or out_proj by name instead of re-walking the graph.

use ir::{Graph, Op, ValueId};

use crate::CompileError;

/// The values of one Mamba block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Layer index.
    pub layer: usize,
    /// Residual stream entering the block.
    pub residual_in: ValueId,
    /// The block's RMSNorm.
    pub norm: ValueId,
    /// in_proj (linear).
    pub in_proj: ValueId,
    /// The depthwise conv.
    pub conv: ValueId,
    /// SiLU after the conv (the conv output the SSM reads).
    pub conv_act: ValueId,
    /// SSM operand x.
    pub x: ValueId,
    /// SSM operand dt (Mamba2: a split of in_proj; Mamba1: dt_proj's output).
    pub dt: ValueId,
    /// SSM operand B.
    pub b: ValueId,
    /// SSM operand C.
    pub c: ValueId,
    /// The scan (`ssd` or `selective_scan`).
    pub ssm: ValueId,
    /// The gate z (a split of in_proj).
    pub z: ValueId,
    /// Mamba2: the gated RMSNorm; Mamba1: the product y·silu(z).
    pub gate: ValueId,
    /// Online Hadamard before out_proj, if the rotation pass inserted one.
    pub online_hadamard: Option<ValueId>,
    /// out_proj (linear).
    pub out_proj: ValueId,
    /// Residual add leaving the block.
    pub residual_out: ValueId,
    /// Mamba1: x_proj.
    pub x_proj: Option<ValueId>,
    /// Mamba1: dt_proj.
    pub dt_proj: Option<ValueId>,
}

/// The final norm, the head and the embedding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The token embedding.
    pub embedding: ValueId,
    /// The final RMSNorm.
    pub norm_f: ValueId,
    /// The lm head.
    pub lm_head: ValueId,
}

fn unexpected(what: &str, v: ValueId, g: &Graph) -> CompileError {
    CompileError::Structure(format!("expected {what} at {v}, found `{}`", g.node(v).op.name()))
}

/// Operand `slot` of `v`, looking through `dequantize(quantize(·))` pairs that activation
/// quantization inserts, so the view works on quantized graphs too.
fn input(g: &Graph, v: ValueId, slot: usize) -> ValueId {
    let mut x = g.inputs(v)[slot];
    while matches!(g.node(x).op, Op::Dequantize { .. } | Op::Quantize { .. }) {
        x = g.inputs(x)[0];
    }
    x
}

/// The operand of `v` if `v` is an online `hadamard` (a tied head's final norm is wrapped in two).
fn past_hadamard(g: &Graph, v: ValueId) -> ValueId {
    if matches!(g.node(v).op, Op::Hadamard) {
        input(g, v, 0)
    } else {
        v
    }
}

/// Finds the embedding, final norm and head.
pub fn ends(g: &Graph) -> Result<Ends, CompileError> {
    let values = g.values();
    let embedding = *values
        .iter()
        .find(|v| matches!(g.node(**v).op, Op::Embedding { .. } | Op::QEmbedding { .. }))
        .ok_or_else(|| CompileError::Structure("no embedding".into()))?;
    let lm_head = *g.outputs().first().ok_or_else(|| CompileError::Structure("no output".into()))?;
    let norm_f = past_hadamard(g, input(g, lm_head, 0));
    if !matches!(g.node(norm_f).op, Op::RmsNorm { .. }) {
        return Err(unexpected("the final rms_norm", norm_f, g));
    }
    Ok(Ends { embedding, norm_f, lm_head })
}

/// Every block, in layer order.
pub fn blocks(g: &Graph) -> Result<Vec<Block>, CompileError> {
    let ends = ends(g)?;
    let last_residual = past_hadamard(g, input(g, ends.norm_f, 0));
    let mut residual = ends.embedding;
    let mut out = Vec::new();
    while residual != last_residual {
        let add = g
            .users(residual)
            .into_iter()
            .find(|u| matches!(g.node(*u).op, Op::Add) && input(g, *u, 0) == residual)
            .ok_or_else(|| CompileError::Structure(format!("no residual add consumes {residual}")))?;
        out.push(block(g, out.len(), residual, add)?);
        residual = add;
    }
    Ok(out)
}

fn block(g: &Graph, layer: usize, residual_in: ValueId, residual_out: ValueId) -> Result<Block, CompileError> {
    let out_proj = input(g, residual_out, 1);
    if !matches!(g.node(out_proj).op, Op::Linear { .. }) {
        return Err(unexpected("out_proj (linear)", out_proj, g));
    }
    let mut gate = input(g, out_proj, 0);
    let mut online_hadamard = None;
    if matches!(g.node(gate).op, Op::Hadamard) {
        online_hadamard = Some(gate);
        gate = input(g, gate, 0);
    }
    let (ssm, z) = match g.node(gate).op {
        Op::GatedRmsNorm { .. } => (input(g, gate, 0), input(g, gate, 1)),
        Op::Mul => {
            let silu_z = input(g, gate, 1);
            (input(g, gate, 0), input(g, silu_z, 0))
        }
        _ => return Err(unexpected("the gate (gated_rms_norm or mul)", gate, g)),
    };
    if !matches!(g.node(ssm).op, Op::Ssd { .. } | Op::SelectiveScan { .. }) {
        return Err(unexpected("the scan", ssm, g));
    }
    let (x, dt, b, c) = (input(g, ssm, 0), input(g, ssm, 1), input(g, ssm, 2), input(g, ssm, 3));
    let in_proj = input(g, z, 0);
    let norm = input(g, in_proj, 0);
    let (conv_act, x_proj, dt_proj) = match g.node(ssm).op {
        Op::Ssd { .. } => (input(g, x, 0), None, None),
        _ => (x, Some(input(g, b, 0)), Some(dt)),
    };
    let conv = input(g, conv_act, 0);
    if !matches!(g.node(conv).op, Op::CausalConv1d { .. }) {
        return Err(unexpected("causal_conv1d", conv, g));
    }
    Ok(Block { layer, residual_in, norm, in_proj, conv, conv_act, x, dt, b, c, ssm, z, gate, online_hadamard, out_proj, residual_out, x_proj, dt_proj })
}
