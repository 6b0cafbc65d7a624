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
//!
//! Products that a GPU runs with f16 activations in an int8 configuration (weight-only int8 /
//! int4 products such as Mamba1's dt_proj, float products) differ from the reference by more
//! than a last bit: each activation is rounded to f16 (up to 2⁻¹¹ of it). Their scales (or
//! weights) move by k·2⁻¹³ in the same runs, a quarter of an f16 rounding per k: on mamba1-small
//! W4A8 a quarter alone moves the logits as far as the GPU's differ (bench/RESULTS.md).

use ir::{Op, WeightId};
use runtime::{Executor, KernelBackend, RuntimeError, WeightData};

/// One perturbation's effect on the logits.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct UlpEffect {
    /// k: each int8-activation product's scale was multiplied by 1 ± k·2⁻²³ (the other
    /// products' scales or weights by 1 ± k·2⁻¹³).
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

/// The relative change of a scale per rounding of its product's arithmetic: one f32 rounding for
/// an int8-activation product's group scales, a quarter of an f16 rounding for the scales of a
/// weight-only product or the weights of a float product.
pub const F32_ROUNDING: f32 = f32::EPSILON;
pub const F16_QUARTER_ROUNDING: f32 = 1.0 / 8192.0;

/// The weight a product's perturbation scales, with its change per rounding.
fn perturbed_by(op: &Op) -> Option<(WeightId, f32)> {
    match op {
        Op::QLinear { scales, act_scale: Some(_), .. } => Some((*scales, F32_ROUNDING)),
        Op::QLinear { scales, act_scale: None, .. } => Some((*scales, F16_QUARTER_ROUNDING)),
        Op::Linear { weight, .. } => Some((*weight, F16_QUARTER_ROUNDING)),
        _ => None,
    }
}

/// What [`envelope`] perturbs in `graph`, by weight: nothing for a graph without int8-activation
/// products (nothing to flip); otherwise every product's scales (or float weights) that no other
/// op reads.
pub fn perturbed_weights(graph: &ir::Graph) -> Vec<(WeightId, f32)> {
    let values = graph.values();
    if !values.iter().any(|v| matches!(graph.node(*v).op, Op::QLinear { act_scale: Some(_), .. })) {
        return Vec::new();
    }
    let mut targets: Vec<(WeightId, f32)> = values.iter().filter_map(|v| perturbed_by(&graph.node(*v).op)).collect();
    targets.sort_by_key(|t| t.0);
    targets.dedup_by_key(|t| t.0);
    targets.retain(|(w, _)| values.iter().all(|v| !graph.node(*v).op.weights().contains(w) || perturbed_by(&graph.node(*v).op).is_some_and(|t| t.0 == *w)));
    targets
}

/// Runs `tokens` (`batch` sequences of equal length) through `exec` on the integer reference as
/// is and under each of [`ROUNDINGS`]; `reference` is the unperturbed run's logits if the caller
/// has them. Empty for a graph without int8-activation products (nothing to flip).
pub fn envelope(exec: &Executor, tokens: &[i64], batch: usize, reference: Option<&[f32]>) -> Result<Vec<UlpEffect>, RuntimeError> {
    let scales = perturbed_weights(exec.verified_graph());
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
    let mut effects = Vec::with_capacity(ROUNDINGS.len());
    for k in ROUNDINGS {
        let logits = run(&perturbed(exec, &scales, k)?)?;
        effects.push(compare(reference, &logits, tokens.len(), k));
    }
    Ok(effects)
}

/// The tokens `quambac cuda check` compares on: the first `count` ids of the embedded sample text
/// if the model has a tokenizer and the text is long enough, else a fixed pseudo-random sequence.
pub fn sample_tokens(model: &crate::model::FpModel, count: usize) -> Result<Vec<i64>, RuntimeError> {
    if let Some(tok) = &model.tokenizer {
        let ids = tok.encode(include_str!("../../assets/text/sample.txt"))?;
        if ids.len() >= count {
            return Ok(ids[..count].to_vec());
        }
    }
    Ok(crate::synth::pseudo_random_tokens(count, model.config.vocab_size))
}

/// A reference executor of `exec`'s graph whose `targets` (weight, change per rounding) are
/// multiplied by 1 ± k·(change per rounding), the sign drawn per element.
pub fn perturbed(exec: &Executor, targets: &[(WeightId, f32)], k: f32) -> Result<Executor, RuntimeError> {
    let mut weights = exec.weights().clone();
    for &(w, per_rounding) in targets {
        let data = weights.get(w);
        let values: Vec<f32> = data.floats().iter().enumerate().map(|(i, s)| s * (1.0 + k * per_rounding * sign(w.index(), i, k))).collect();
        weights.set(w, WeightData::new(data.shape.clone(), values));
    }
    Executor::with_kernel_backend(exec.verified_graph().clone(), weights, KernelBackend::Reference)
}

/// How far `logits` are from `reference` (`rows` rows of equal width): largest |Δ| over
/// `reference`'s largest |logit|, mean |Δ|, and rows whose argmax agrees.
pub fn compare(reference: &[f32], logits: &[f32], rows: usize, roundings: f32) -> UlpEffect {
    let max_ref = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let vocab = reference.len() / rows.max(1);
    let mean_abs = reference.iter().zip(logits).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / logits.len().max(1) as f64;
    let argmax_agree = (0..rows)
        .filter(|r| {
            let span = r * vocab..(r + 1) * vocab;
            logits.len() >= span.end && runtime::sampling::argmax(&reference[span.clone()]) == runtime::sampling::argmax(&logits[span])
        })
        .count();
    UlpEffect { roundings, relative: max_abs_diff(reference, logits) / max_ref, mean_abs, argmax_agree, rows }
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
        // Every product of this Mamba2 artifact has int8 activations: last-bit changes only.
        assert!(perturbed_weights(exec.verified_graph()).iter().all(|(_, per)| *per == F32_ROUNDING));
    }

    /// Mamba1's dt_proj is a weight-only int8 product even in the int8 configurations (a GPU runs
    /// it with f16 activations): its scales move by quarters of an f16 rounding, the int8
    /// products' by f32 roundings, and nothing another op reads moves. Needs ../shared.
    #[test]
    fn weight_only_products_move_by_f16_roundings() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mamba1-tiny-ss");
        if !dir.exists() {
            eprintln!("skipped: ../shared is not present");
            return;
        }
        let ckpt = crate::checkpoint::load_checkpoint(&dir).unwrap();
        let tok = runtime::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let calib = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/text/calib.txt")).unwrap();
        let opts = crate::compile::CompileOptions { calib_samples: 2, calib_len: 64, gptq: false, ..crate::compile::CompileOptions::new("cpu-w8a8".parse().unwrap(), calib, "calib.txt") };
        let graph = ir::VerifiedGraph::new(crate::compile::compile(&ckpt, &tok, &opts).unwrap().graph).unwrap();
        let targets = perturbed_weights(&graph);
        let mut weight_only = 0;
        for v in graph.values() {
            match graph.node(v).op {
                Op::QLinear { scales, act_scale, .. } => {
                    let per = if act_scale.is_some() { F32_ROUNDING } else { F16_QUARTER_ROUNDING };
                    weight_only += act_scale.is_none() as usize;
                    // A tied head's scales, which the embedding lookup reads too, stay.
                    let shared = graph.values().into_iter().any(|u| matches!(graph.node(u).op, Op::QEmbedding { .. }) && graph.node(u).op.weights().contains(&scales));
                    assert_eq!(targets.contains(&(scales, per)), !shared, "{v:?}'s scales");
                }
                ref op => assert!(targets.iter().all(|(w, _)| !op.weights().contains(w)) || matches!(op, Op::Linear { .. }), "{} reads a perturbed weight", op.name()),
            }
        }
        assert!(weight_only > 0, "mamba1's dt_proj is weight-only");
    }
}
