//! The pass order of each recipe. Read top to bottom, this is what `quambac compile` does.
//!
//! Quamba2 (arXiv 2503.22879):
//!  1. fold_norms           — RMSNorm weights into the next linear, so rotations commute with norms
//!  2. sort_cluster_heads   — Mamba2, A8: reorder SSM heads/channels into groups with their own scales
//!  3. rotate_hadamard      — rotated residual stream + one online transform before out_proj
//!  4. clip_outliers        — Mamba1, A8: percentile scale for the SSM input
//!  5. state_group_scales   — Mamba2, A8: one B/C scale per SSD group
//!  6. choose_activation_bits — W4AX: which layers keep 16-bit activations
//!  7. quantize_activations — calibrate, insert static int8 quantization
//!  8. quantize_weights     — GPTQ (4-bit) / RTN, integer linears
//!
//! Quamba1: online Hadamard before out_proj, percentile clipping of the SSM input, RTN weights.
//! Naive: per-tensor min-max activations, RTN weights, no transforms.

use ir::Family;

use crate::passes::choose_activation_bits::ChooseActivationBits;
use crate::passes::clip_outliers::ClipOutliers;
use crate::passes::fold_norms::FoldNorms;
use crate::passes::quantize_activations::QuantizeActivations;
use crate::passes::quantize_states::QuantizeStates;
use crate::passes::quantize_weights::QuantizeWeights;
use crate::passes::rotate_hadamard::RotateHadamard;
use crate::passes::sort_cluster_heads::SortClusterHeads;
use crate::passes::state_group_scales::StateGroupScales;
use crate::passes::Pass;
use crate::target::{Method, Precision};

/// Share of layers W4AX keeps at 16-bit activations.
pub const W4AX_A16_FRACTION: f32 = 0.25;

/// Whether `pass` changes what the program computes (a precision choice or quantization). The
/// passes before the first such one are float rewrites that keep the model's function.
pub fn is_quantizing(pass: &dyn Pass) -> bool {
    matches!(pass.name(), "choose_activation_bits" | "quantize_states" | "quantize_activations" | "quantize_weights")
}

/// The passes for a recipe, in order; `int8_states`: A8 layers keep their SSM states in int8
/// (`quantize_states`, Quamba recipes only).
pub fn passes(method: Method, precision: Precision, family: Family, int8_states: bool) -> Vec<Box<dyn Pass>> {
    let a8 = precision.quantizes_activations();
    let mut p: Vec<Box<dyn Pass>> = Vec::new();
    match method {
        Method::Quamba2 => {
            p.push(Box::new(FoldNorms));
            if a8 && family == Family::Mamba2 {
                p.push(Box::new(SortClusterHeads { head_groups: 4, dim_groups: 4 }));
            }
            p.push(Box::new(RotateHadamard { residual: true, online: true }));
            if a8 && family == Family::Mamba1 {
                p.push(Box::new(ClipOutliers));
            }
            if a8 && family == Family::Mamba2 {
                p.push(Box::new(StateGroupScales));
            }
        }
        Method::Quamba1 => {
            p.push(Box::new(RotateHadamard { residual: false, online: true }));
            if a8 {
                p.push(Box::new(ClipOutliers));
            }
        }
        Method::Naive => {}
    }
    if precision == Precision::W4AX {
        p.push(Box::new(ChooseActivationBits { fraction_a16: W4AX_A16_FRACTION }));
    }
    if a8 && int8_states && method != Method::Naive {
        p.push(Box::new(QuantizeStates));
    }
    if a8 {
        p.push(Box::new(QuantizeActivations));
    }
    p.push(Box::new(QuantizeWeights));
    p
}
