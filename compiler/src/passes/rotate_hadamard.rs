//! `rotate_hadamard`: Quamba2's Walsh–Hadamard rotations (spec §1 step 2b/2d/4, §2, §4.4).
//!
//! T is the transform of [`runtime::hadamard`]: orthonormal and symmetric, so T = Tᵀ = T⁻¹. Every
//! rewrite below inserts T on one side of a value and T⁻¹ = T on the other, so the model computes
//! the same function; what changes is the basis quantized tensors live in, where Hadamard mixing
//! spreads channel outliers over many channels.
//!
//! **Residual rotation** (`residual: true`, QuaRot-style, offline only). The whole residual stream
//! is carried in the rotated basis r' = r·T:
//! - embedding table rows: e ↦ e·T, so the stream starts rotated;
//! - every linear reading a normed residual (each block's `in_proj`, the `lm_head`): W' = W·T,
//!   i.e. each weight row is transformed; then x'·W'ᵀ = x·T·T·Wᵀ = x·Wᵀ;
//! - every linear writing into the residual (each `out_proj`): W' = T·W (each column of W is
//!   transformed) and b' = b·T, so its output arrives rotated: (y·Wᵀ + b)·T.
//!
//! In between sit RMSNorms, which must be weightless: n(x·T) = n(x)·T since T preserves ‖x‖ (and
//! so the mean square the norm divides by). Run [`super::fold_norms::FoldNorms`] first; a norm on
//! the residual that still has a weight is a [`CompileError::Structure`] — with one exception: a
//! head tied to the embedding table stays tied, because untying stores a second vocab × d table
//! (a third of a small model's 4-bit artifact). Its final norm keeps its weight and is wrapped in
//! two online transforms: hadamard → rms_norm(weight) → hadamard → lm_head(E·T). The first brings
//! the stream back to the original basis for the weighted norm; the second pairs with the rotated
//! table: (h·T)·(E·T)ᵀ = h·Eᵀ. Two d_model-wide transforms per token cost next to nothing.
//!
//! **Online transform** (`online: true`, Quamba2's one online Hadamard per block). A `hadamard`
//! node is inserted between the block's gate output (Mamba2: gated RMSNorm; Mamba1: y·silu(z)) and
//! `out_proj`, and its inverse is folded into `out_proj`'s input side: W' = W·T (rows of length
//! d_inner transformed). The out_proj input, which 8-bit activation quantization reads, is then
//! the rotated y·T with its outliers spread. With both parts on, out_proj holds T·W·T (spec §4.4).
//!
//! **Widths that are not a power of two** (768 = 3·256, 1536, 2560 = 5·512, ...): T is
//! block-diagonal, one H_{2ᵏ}/√2ᵏ block per run of 2ᵏ consecutive channels, 2ᵏ the largest power
//! of two dividing the width (see [`runtime::hadamard::block_size`]). It is still orthonormal and
//! symmetric, so every identity above holds exactly, and the online `hadamard` op executes the same
//! block-diagonal transform the weights were folded with. It mixes less than the reference's Paley
//! H₁₂ / H₄₀ Kronecker factors (outliers are spread within each block only).
//!
//! Every weight the pass rewrites is retyped f32 (see [`super::fold_norms`]); integer
//! (already quantized) weights are refused with [`CompileError::Structure`].

use std::collections::BTreeSet;

use ir::{Op, ValueId, WeightId};
use runtime::hadamard::{hadamard_columns, hadamard_rows};

use super::blocks::{blocks, ends};
use super::fold_norms::{is_float, private_weight, set_f32_values};
use super::{Pass, PassContext};
use crate::program::Program;
use crate::CompileError;

/// Rotates the residual stream and/or inserts the online Hadamard before each out_proj.
pub struct RotateHadamard {
    /// Rotate the residual stream (embedding, in_proj, out_proj outputs, lm_head), offline.
    pub residual: bool,
    /// Insert one online `hadamard` before every out_proj and fold its inverse into out_proj.
    pub online: bool,
}

impl Pass for RotateHadamard {
    fn name(&self) -> &'static str {
        "rotate_hadamard"
    }

    fn run(&self, program: &mut Program, _cx: &mut PassContext) -> Result<(), CompileError> {
        if self.residual {
            rotate_residual(program)?;
        }
        if self.online {
            insert_online(program)?;
        }
        Ok(())
    }
}

fn structure(msg: String) -> CompileError {
    CompileError::Structure(format!("rotate_hadamard: {msg}"))
}

/// Rotates the residual stream: embedding rows, readers' rows, writers' columns and biases.
fn rotate_residual(program: &mut Program) -> Result<(), CompileError> {
    let g = &program.graph;
    let ends = ends(g)?;
    let blocks = blocks(g)?;
    let residuals: BTreeSet<ValueId> = std::iter::once(ends.embedding).chain(blocks.iter().map(|b| b.residual_out)).collect();

    let table = match g.node(ends.embedding).op {
        Op::Embedding { table } if is_float(g.weight(table).dtype) => table,
        ref other => return Err(structure(format!("expected a float embedding at {}, found `{}`", ends.embedding, other.name()))),
    };
    let tied_head = matches!(g.node(ends.lm_head).op, Op::LmHead { weight } if weight == table);
    // Check every use of the stream first, so a refused graph is left untouched.
    let mut readers = BTreeSet::new();
    for &r in &residuals {
        if g.outputs().contains(&r) {
            return Err(structure(format!("residual value {r} is a graph output")));
        }
        for user in g.users(r) {
            if residuals.contains(&user) {
                continue; // the next residual add
            }
            match g.node(user).op {
                Op::RmsNorm { .. } if tied_head && user == ends.norm_f => continue,
                Op::RmsNorm { weight: None, .. } => {}
                Op::RmsNorm { weight: Some(w), .. } => {
                    return Err(structure(format!(
                        "rms_norm {user} still has weight {w} (\"{}\"): run fold_norms before rotating the residual stream, \
                         a weighted RMSNorm does not commute with the rotation",
                        g.weight(w).name
                    )))
                }
                ref other => {
                    return Err(structure(format!("residual value {r} is read by `{}` at {user}, expected rms_norm or the residual add", other.name())))
                }
            }
            if g.outputs().contains(&user) {
                return Err(structure(format!("normed residual {user} is a graph output")));
            }
            for reader in g.users(user) {
                match g.node(reader).op {
                    Op::Linear { weight, .. } | Op::LmHead { weight } if is_float(g.weight(weight).dtype) => {
                        readers.insert(reader);
                    }
                    ref other => {
                        return Err(structure(format!("normed residual {user} is read by `{}` at {reader}, expected a float linear or lm_head", other.name())))
                    }
                }
            }
        }
    }
    for b in &blocks {
        let out_proj = b.out_proj;
        if g.users(out_proj) != [b.residual_out] {
            return Err(structure(format!("out_proj {out_proj} of layer {} has users other than the residual add", b.layer)));
        }
        if let Op::Linear { weight, bias } = g.node(out_proj).op {
            let float_bias = bias.iter().all(|b| is_float(g.weight(*b).dtype));
            if !is_float(g.weight(weight).dtype) || !float_bias {
                return Err(structure(format!("out_proj {out_proj} of layer {} is not a float linear", b.layer)));
            }
        }
    }
    // The table may also be the head: tied (kept, see the module doc) or untied below.
    let is_head = |v: &ValueId| *v == ends.lm_head && tied_head;
    if let Some(v) = g.values().into_iter().find(|v| *v != ends.embedding && !readers.contains(v) && !is_head(v) && g.node(*v).op.weights().contains(&table)) {
        return Err(structure(format!("embedding table {table} is also read by `{}` at {v}", g.node(v).op.name())));
    }

    // Readers: W' = W·T (each row). Untie first, so a tied head and the table rotate separately.
    for &reader in &readers {
        let w = private_weight(program, reader)?;
        transform_rows(program, w)?;
    }
    // The embedding: e' = e·T (the table is private to it now).
    transform_rows(program, table)?;
    if tied_head {
        let stream = program.graph.inputs(ends.norm_f)[0];
        let back = program.graph.add(Op::Hadamard, &[stream])?;
        program.graph.set_input(ends.norm_f, 0, back);
        let forward = program.graph.add(Op::Hadamard, &[ends.norm_f])?;
        program.graph.set_input(ends.lm_head, 0, forward);
    }
    // Writers: W' = T·W (each column), b' = b·T.
    for b in &blocks {
        let w = private_weight(program, b.out_proj)?;
        transform_columns(program, w)?;
        if let Op::Linear { bias: Some(bias), .. } = program.graph.node(b.out_proj).op {
            let bias = private_bias(program, b.out_proj, bias);
            transform_rows(program, bias)?;
        }
    }
    Ok(())
}

/// Inserts `hadamard` between each block's gate and out_proj and folds T into out_proj's rows.
fn insert_online(program: &mut Program) -> Result<(), CompileError> {
    let blocks = blocks(&program.graph)?;
    for b in &blocks {
        if let Some(h) = b.online_hadamard {
            return Err(structure(format!("layer {} already has an online hadamard at {h}", b.layer)));
        }
        if !matches!(program.graph.node(b.out_proj).op, Op::Linear { weight, .. } if is_float(program.graph.weight(weight).dtype)) {
            return Err(structure(format!("out_proj {} of layer {} is not a float linear", b.out_proj, b.layer)));
        }
    }
    for b in &blocks {
        let had = program.graph.add(Op::Hadamard, &[b.gate]).map_err(|e| structure(e.to_string()))?;
        program.graph.set_input(b.out_proj, 0, had);
        let w = private_weight(program, b.out_proj)?;
        transform_rows(program, w)?;
    }
    Ok(())
}

/// Whether a node other than `user` reads `weight`.
fn shared_with_others(program: &Program, user: ValueId, weight: WeightId) -> bool {
    program.graph.values().into_iter().any(|v| v != user && program.graph.node(v).op.weights().contains(&weight))
}

/// The bias of linear `user`, copied into a private weight if another node reads it too.
fn private_bias(program: &mut Program, user: ValueId, bias: WeightId) -> WeightId {
    if !shared_with_others(program, user, bias) {
        return bias;
    }
    let decl = program.graph.weight(bias).clone();
    let data = program.values(bias).to_vec();
    let copy = program.add_weight(format!("{}.untied", decl.name), decl.dtype, decl.shape, data);
    if let Op::Linear { bias, .. } = &mut program.graph.node_mut(user).op {
        *bias = Some(copy);
    }
    copy
}

/// x ↦ x·T for every row (last axis) of `weight`.
fn transform_rows(program: &mut Program, weight: WeightId) -> Result<(), CompileError> {
    let shape = program.graph.weight(weight).shape.clone();
    let width = *shape.last().ok_or_else(|| structure(format!("weight {weight} is a scalar")))?;
    let mut values = program.take_values(weight);
    hadamard_rows(&mut values, width);
    set_f32_values(program, weight, values);
    Ok(())
}

/// W ↦ T·W for a 2-D `[rows, cols]` weight: each column is transformed (rows of Wᵀ).
fn transform_columns(program: &mut Program, weight: WeightId) -> Result<(), CompileError> {
    let (rows, cols) = match program.graph.weight(weight).shape.as_slice() {
        [r, c] => (*r, *c),
        other => return Err(structure(format!("weight {weight} has shape {other:?}, expected 2-D"))),
    };
    let mut values = program.take_values(weight);
    hadamard_columns(&mut values, rows, cols);
    set_f32_values(program, weight, values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::hadamard::hadamard_row;

    /// x·Wᵀ for row-major x `[n, k]` and W `[m, k]`.
    fn matmul_t(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
        x.chunks_exact(k).flat_map(|row| w.chunks_exact(k).map(move |wr| row.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>())).collect()
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * 1.7).collect()
    }

    /// The weight identities the pass relies on, at widths that are not powers of two
    /// (24 = 3·8, 40 = 5·8, 12 = 3·4), where T is block-diagonal.
    #[test]
    fn folded_rotations_cancel_at_non_power_of_two_widths() {
        for (d_model, d_inner) in [(24, 40), (12, 24), (40, 12)] {
            let x = values(3 * d_model, 1); // residual rows
            let y = values(3 * d_inner, 2); // out_proj input rows
            let w_in = values(d_inner * d_model, 3); // [d_inner, d_model]
            let w_out = values(d_model * d_inner, 4); // [d_model, d_inner]
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));

            // Reader: (x·T)·(W·T)ᵀ = x·Wᵀ.
            let mut xr = x.clone();
            hadamard_rows(&mut xr, d_model);
            let mut w_in_r = w_in.clone();
            hadamard_rows(&mut w_in_r, d_model);
            assert!(close(&matmul_t(&xr, &w_in_r, d_model), &matmul_t(&x, &w_in, d_model)), "reader {d_model}");

            // Writer: y·(T·W)ᵀ = (y·Wᵀ)·T.
            let mut want = matmul_t(&y, &w_out, d_inner);
            want.chunks_exact_mut(d_model).for_each(hadamard_row);
            let mut w_out_c = w_out.clone();
            hadamard_columns(&mut w_out_c, d_model, d_inner);
            let got = matmul_t(&y, &w_out_c, d_inner);
            assert!(close(&got, &want), "writer {d_model}×{d_inner}");

            // Online: (y·T)·(W·T)ᵀ = y·Wᵀ.
            let mut yr = y.clone();
            hadamard_rows(&mut yr, d_inner);
            let mut w_out_r = w_out.clone();
            hadamard_rows(&mut w_out_r, d_inner);
            assert!(close(&matmul_t(&yr, &w_out_r, d_inner), &matmul_t(&y, &w_out, d_inner)), "online {d_inner}");
        }
    }
}
