//! How far a quantized model's logits move under last-bit changes: the envelope within which two
//! correct executors of the same integer graph can disagree.
//!
//! Static int8 activation quantization is a step function. Two executors that sum in different
//! orders, or round exp / rsqrt differently (the CPU integer reference and the GPU), agree to
//! about one f32 rounding before each quantizer, and where a value lies next to a rounding
//! boundary that last bit flips an int8 value, which then travels through the rest of the model.
//! How far such flips move the logits is a property of the model, not of the executors, so it is
//! measured here on the reference alone: every group scale of every int8-activation product is
//! multiplied by 1 ± k·2⁻²³, the sign drawn per scale (each weight group's share of an output
//! moves by about k roundings, up or down, as an executor's differences do), and the logits
//! compared. Scales that something else reads too (a tied table's, which the embedding lookup
//! also uses, identically on every executor) are left alone.

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
    let int8_product = |op: &Op| matches!(op, Op::QLinear { act_scale: Some(_), .. });
    let mut scales: Vec<_> = graph
        .values()
        .into_iter()
        .filter_map(|v| match graph.node(v).op {
            Op::QLinear { scales, act_scale: Some(_), .. } => Some(scales),
            _ => None,
        })
        .collect();
    scales.sort();
    scales.dedup();
    scales.retain(|w| graph.values().into_iter().all(|v| int8_product(&graph.node(v).op) || !graph.node(v).op.weights().contains(w)));
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
        let max_diff = max_abs_diff(reference, &logits);
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

/// max |a − b| over two equally long vectors, NaN counted as infinite (`f32::max` would drop it)
/// and a length mismatch too.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() { f32::INFINITY } else { m.max(d) }
    })
}

/// The widest effect of a set of perturbations: the largest relative and mean changes and the
/// lowest argmax agreement.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Envelope {
    /// Largest `relative` (0 for none).
    pub relative: f32,
    /// Largest `mean_abs`.
    pub mean_abs: f64,
    /// Lowest argmax agreement as a fraction (1 for none).
    pub argmax_agreement: f64,
}

/// The envelope of `effects` (all zero changes and full agreement for none).
pub fn widest(effects: &[UlpEffect]) -> Envelope {
    effects.iter().fold(Envelope { argmax_agreement: 1.0, ..Envelope::default() }, |e, x| Envelope {
        relative: e.relative.max(x.relative),
        mean_abs: e.mean_abs.max(x.mean_abs),
        argmax_agreement: e.argmax_agreement.min(x.argmax_agree as f64 / x.rows.max(1) as f64),
    })
}

impl Envelope {
    /// Whether another executor's differences (largest relative, mean |Δ|, argmax agreement) look
    /// like int8 flips: within twice the envelope's largest and mean changes, and agreeing on the
    /// argmax nearly as often (5 points of slack). A real error that stays under twice the largest
    /// flip would have to also keep the mean change and the argmax this close.
    pub fn covers(&self, relative: f32, mean_abs: f64, argmax_agreement: f64) -> bool {
        self.relative > 0.0 && relative <= 2.0 * self.relative && mean_abs <= 2.0 * self.mean_abs && argmax_agreement >= self.argmax_agreement - 0.05
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_count_nan_and_length_mismatches_as_infinite() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[f32::NAN, 2.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0]), f32::INFINITY);
    }

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
        let env = widest(&effects);
        assert!(env.relative < 5e-2, "a few roundings moved the tiny model's logits by {}", env.relative);
        assert!(env.covers(env.relative, env.mean_abs, env.argmax_agreement), "an envelope covers its own widest effect");
        assert!(!env.covers(3.0 * env.relative, env.mean_abs, 1.0), "nor three times it");
        assert!(!Envelope { argmax_agreement: 1.0, ..Envelope::default() }.covers(0.0, 0.0, 1.0), "an empty envelope covers nothing");
        assert!(effects.iter().any(|e| e.mean_abs > 0.0), "the perturbation changed nothing");
        assert!(effects.iter().all(|e| e.rows == tokens.len()));
    }
}
