//! `fold_norms`: moves the scale of every weighted RMSNorm into the linear layers that read it.
//!
//! RMSNorm computes `n(x)·w` with `n(x) = x / rms(x)` and a per-channel weight `w`. When every
//! user of the norm is a linear map `y = n(x)·w·Wᵀ`, the weight can live in the linear instead:
//! `W'[o, k] = W[o, k]·w[k]`, and the norm keeps only `n(x)` (`weight: None`). The function is
//! unchanged.
//!
//! Why (Quamba2 §2, spec §1 step 2a/2c): a weightless RMSNorm commutes with any orthonormal
//! transform T, `n(x·T) = n(x)·T`, because T preserves the norm of x. A per-channel `w` does not
//! commute with T. Folding the block norms into `in_proj` and `norm_f` into the head is what lets
//! [`super::rotate_hadamard::RotateHadamard`] rotate the whole residual stream with a Walsh–Hadamard
//! matrix and undo the rotation inside the weights.
//!
//! Folded here: each `rms_norm` with a weight whose users are all `linear` (block in_proj) or
//! `lm_head` (after `norm_f`) nodes with float weights. A norm with any other user is left as is.
//! A rewritten weight is retyped f32 (its values are no longer exact in a checkpoint's f16/bf16).
//! A consumer weight that some other node also reads — the head tied to the embedding table — is
//! first copied into a private weight (`lm_head.weight` for the head), so the embedding keeps its
//! values.

use ir::{DType, Op, ValueId, WeightId};

use super::{Pass, PassContext};
use crate::program::Program;
use crate::CompileError;

/// Folds RMSNorm weights into the linears / head that consume the normed value.
pub struct FoldNorms;

impl Pass for FoldNorms {
    fn name(&self) -> &'static str {
        "fold_norms"
    }

    fn run(&self, program: &mut Program, _cx: &mut PassContext) -> Result<(), CompileError> {
        for norm in program.graph.values() {
            let (norm_weight, eps) = match program.graph.node(norm).op {
                Op::RmsNorm { weight: Some(w), eps } => (w, eps),
                _ => continue,
            };
            let users = program.graph.users(norm);
            // A head tied to the embedding keeps its norm weight: folding would untie it and
            // store a second vocab×d table; rotate_hadamard keeps such a head tied instead.
            if users.iter().any(|u| is_tied_head(program, *u)) {
                continue;
            }
            let foldable = !users.is_empty()
                && users.iter().all(|u| match program.graph.node(*u).op {
                    Op::Linear { weight, .. } | Op::LmHead { weight } => is_float(program.graph.weight(weight).dtype),
                    _ => false,
                });
            if !foldable {
                continue;
            }
            let scale = program.values(norm_weight).to_vec();
            for user in users {
                let weight = private_weight(program, user)?;
                let shape = program.graph.weight(weight).shape.clone();
                let cols = match shape.as_slice() {
                    [_, cols] if *cols == scale.len() => *cols,
                    other => {
                        return Err(CompileError::Structure(format!("fold_norms: {user} weight {weight} has shape {other:?}, expected [out, {}]", scale.len())))
                    }
                };
                let mut w = program.take_values(weight);
                for row in w.chunks_exact_mut(cols) {
                    row.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s);
                }
                set_f32_values(program, weight, w);
            }
            program.graph.node_mut(norm).op = Op::RmsNorm { weight: None, eps };
        }
        Ok(())
    }
}

/// The weight of `user` (a `linear` or `lm_head`), made private to it: if any other node reads
/// Whether `v` is an lm_head that reads the embedding table.
pub(crate) fn is_tied_head(program: &Program, v: ValueId) -> bool {
    let g = &program.graph;
    let Op::LmHead { weight } = g.node(v).op else { return false };
    g.values().into_iter().any(|e| matches!(g.node(e).op, Op::Embedding { table } if table == weight))
}

/// the same weight (a head tied to the embedding table), the data is copied into a new weight —
/// named `lm_head.weight` for the head, `<name>.untied` otherwise — and `user` is pointed at the
/// copy, so in-place edits of the returned weight change no other node.
pub(crate) fn private_weight(program: &mut Program, user: ValueId) -> Result<WeightId, CompileError> {
    let weight = match program.graph.node(user).op {
        Op::Linear { weight, .. } | Op::LmHead { weight } => weight,
        ref other => return Err(CompileError::Structure(format!("expected a linear or lm_head at {user}, found `{}`", other.name()))),
    };
    let shared = program.graph.values().into_iter().any(|v| v != user && program.graph.node(v).op.weights().contains(&weight));
    if !shared {
        return Ok(weight);
    }
    let decl = program.graph.weight(weight).clone();
    let name = match program.graph.node(user).op {
        Op::LmHead { .. } => "lm_head.weight".to_string(),
        _ => format!("{}.untied", decl.name),
    };
    let data = program.values(weight).to_vec();
    let copy = program.add_weight(name, decl.dtype, decl.shape, data);
    match &mut program.graph.node_mut(user).op {
        Op::Linear { weight, .. } | Op::LmHead { weight } => *weight = copy,
        _ => unreachable!("checked above"),
    }
    Ok(copy)
}

/// Whether `dtype` holds real numbers (a float weight a pass may rewrite), not integer codes.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Replaces a weight's values with computed ones and retypes it f32: a folded or rotated weight
/// is no longer exactly representable in the checkpoint's f16 / bf16, and the declared dtype must
/// describe the data (artifacts store values in it exactly).
pub(crate) fn set_f32_values(program: &mut Program, weight: WeightId, values: Vec<f32>) {
    program.graph.weight_mut(weight).dtype = DType::F32;
    program.set_values(weight, values);
}
