//! How far a quantized model's logits move under last-bit changes: the envelope within which two
//! correct executors of the same integer graph can disagree.
//!
//! Static int8 activation quantization is a step function. Two executors that sum in different
//! orders, or round exp / rsqrt differently (the CPU integer reference and the GPU), agree to
//! about one f32 rounding before each quantizer, and where a value lies next to a rounding
//! boundary that last bit flips an int8 value, which then travels through the rest of the model.
//! How far such flips move the logits is a property of the model, not of the executors, so it is
//! measured here on the reference alone: every group scale of every int8-activation product is
//! multiplied by 1 ± k·2⁻²³, the sign drawn per scale (an output change of about k roundings, up
//! or down per output feature, as an executor's differences are), and the logits compared.

use ir::Op;
use runtime::{Executor, KernelBackend, RuntimeError, WeightData};

/// One perturbation's effect on the logits.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct UlpEffect {
    /// k: each scale was multiplied by 1 ± k·2⁻²³.
    pub roundings: f32,
    /// Largest |Δ logit| over the largest |logit| of the unperturbed run.
    pub relative: f32,
    /// Mean |Δ logit|.
    pub mean_abs: f64,
    /// Rows whose argmax did not change, of `rows`.
    pub argmax_agree: usize,
    /// Rows compared.
    pub rows: usize,
}

/// The perturbations [`envelope`] applies: 1, 2 and 4 roundings.
pub const ROUNDINGS: [f32; 3] = [1.0, 2.0, 4.0];

/// Runs `tokens` (`batch` sequences of equal length) through `exec` on the integer reference as
/// is and under each of [`ROUNDINGS`]; `reference` is the unperturbed run's logits if the caller
/// has them. Empty for a graph without int8-activation products (nothing to flip).
pub fn envelope(exec: &Executor, tokens: &[i64], batch: usize, reference: Option<&[f32]>) -> Result<Vec<UlpEffect>, RuntimeError> {
    let graph = exec.verified_graph();
    let scales: Vec<_> = graph
        .values()
        .into_iter()
        .filter_map(|v| match graph.node(v).op {
            Op::QLinear { scales, act_scale: Some(_), .. } => Some(scales),
            _ => None,
        })
        .collect();
    if scales.is_empty() || tokens.is_empty() {
        return Ok(Vec::new());
    }
    let run = |e: &Executor| e.forward(&mut e.new_state(batch), tokens).map(|l| l.data);
    let owned;
    let reference = match reference {
        Some(r) => r,
        None => {
            owned = run(exec)?;
            &owned
        }
    };
    let max_ref = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let rows = tokens.len();
    let vocab = reference.len() / rows;
    let mut effects = Vec::with_capacity(ROUNDINGS.len());
    for k in ROUNDINGS {
        let mut weights = exec.weights().clone();
        for &w in &scales {
            let data = weights.get(w);
            let values: Vec<f32> = data.floats().iter().enumerate().map(|(i, s)| s * (1.0 + k * f32::EPSILON * sign(w.index(), i, k))).collect();
            weights.set(w, WeightData::new(data.shape.clone(), values));
        }
        let perturbed = Executor::with_kernel_backend(graph.clone(), weights, KernelBackend::Reference)?;
        let logits = run(&perturbed)?;
        let max_diff = reference.iter().zip(&logits).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let mean_abs = reference.iter().zip(&logits).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / logits.len() as f64;
        let argmax_agree = (0..rows)
            .filter(|r| {
                let span = r * vocab..(r + 1) * vocab;
                runtime::sampling::argmax(&reference[span.clone()]) == runtime::sampling::argmax(&logits[span])
            })
            .count();
        effects.push(UlpEffect { roundings: k, relative: max_diff / max_ref, mean_abs, argmax_agree, rows });
    }
    Ok(effects)
}

/// A fixed pseudo-random ±1 per (weight, element, perturbation), so runs are reproducible.
fn sign(weight: usize, element: usize, roundings: f32) -> f32 {
    let mut h = (weight as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (element as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ (roundings.to_bits() as u64);
    h ^= h >> 31;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^= h >> 32;
    if h & 1 == 0 { 1.0 } else { -1.0 }
}

/// The largest relative change over `effects` (0 for none).
pub fn widest(effects: &[UlpEffect]) -> f32 {
    effects.iter().fold(0f32, |m, e| m.max(e.relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float model has no int8 quantizer to flip: nothing to measure. The W8A8 artifact of
    /// the embedded model does, and a perturbation of a few roundings must move its logits by
    /// far less than a real error would (the measure is only useful if it stays small), yet the
    /// runs must really differ from the reference in the last bits somewhere (else the
    /// perturbation was not applied).
    #[test]
    fn envelope_is_empty_for_float_models_and_small_for_quantized_ones() {
        let fp = crate::model::FpModel::open_with(&crate::model::default_model_dir(), KernelBackend::Reference).unwrap();
        let tokens: Vec<i64> = (0..24).map(|i| (i * 131 + 7) % 8192).collect();
        assert!(envelope(&fp.executor, &tokens, 2, None).unwrap().is_empty());

        let ckpt = crate::checkpoint::load_checkpoint(&crate::model::default_model_dir()).unwrap();
        let tok = runtime::tokenizer::Tokenizer::from_file(&crate::model::default_model_dir().join("tokenizer.json")).unwrap();
        let calib = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/text/calib.txt")).unwrap();
        let opts = crate::compile::CompileOptions { calib_samples: 4, calib_len: 128, gptq: false, ..crate::compile::CompileOptions::new("cpu-w8a8".parse().unwrap(), calib, "calib.txt") };
        let program = crate::compile::compile(&ckpt, &tok, &opts).unwrap();
        let exec = Executor::with_kernel_backend(ir::VerifiedGraph::new(program.graph.clone()).unwrap(), program.weights.clone(), KernelBackend::Reference).unwrap();
        let effects = envelope(&exec, &tokens, 2, None).unwrap();
        assert_eq!(effects.len(), ROUNDINGS.len());
        assert!(widest(&effects) < 5e-2, "a few roundings moved the tiny model's logits by {}", widest(&effects));
        assert!(effects.iter().any(|e| e.mean_abs > 0.0), "the perturbation changed nothing");
        assert!(effects.iter().all(|e| e.rows == tokens.len()));
    }
}
