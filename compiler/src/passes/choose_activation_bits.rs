//! W4AX: decide per layer whether activations are 8-bit or stay 16-bit, by measured sensitivity.
//!
//! For each layer alone, its activations are fake-quantized to int8 (all others left in float)
//! and the perplexity on validation windows is measured; the layers whose quantization costs the
//! most keep 16-bit activations. `fraction_a16` of the layers (rounded, at least one when there
//! are two or more layers) stay 16-bit: the paper's Mamba2-8B W4AX keeps 14 of 56 (25%).

use std::collections::BTreeSet;

use super::quantize_activations::{calibrate_points, insert_fake_quant, quant_points};
use super::{Pass, PassContext};
use crate::program::Program;
use crate::CompileError;

/// The pass.
pub struct ChooseActivationBits {
    /// Share of layers that keep 16-bit activations.
    pub fraction_a16: f32,
}

/// Perplexity of `program` on `windows`.
pub fn perplexity(program: &Program, windows: &[Vec<i64>]) -> Result<f64, CompileError> {
    let exec = program.executor()?;
    let mut total = runtime::perplexity::NllSum::default();
    for chunk in windows.chunks(4) {
        let batch: Vec<&[i64]> = chunk.iter().map(|w| w.as_slice()).collect();
        let s = runtime::perplexity::score_windows(&exec, &batch)?;
        total.nll += s.nll;
        total.count += s.count;
    }
    Ok(total.perplexity())
}

impl Pass for ChooseActivationBits {
    fn name(&self) -> &'static str {
        "choose_activation_bits"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        let n = program.config.n_layer;
        let valid = cx.valid.as_ref().unwrap_or(&cx.calib).windows.clone();
        let points = quant_points(program, cx)?;
        let stats = calibrate_points(program, &points, cx)?;
        let base = perplexity(program, &valid)?;
        let bar = if cx.progress { indicatif::ProgressBar::new(n as u64) } else { indicatif::ProgressBar::hidden() };
        let mut cost = Vec::with_capacity(n);
        for layer in 0..n {
            let mut trial = program.clone();
            let others: BTreeSet<usize> = (0..n).filter(|l| *l != layer).collect();
            insert_fake_quant(&mut trial, &points, &stats, &others, n + 1)?;
            cost.push((perplexity(&trial, &valid)? - base, layer));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let keep = ((n as f32 * self.fraction_a16).round() as usize).max(usize::from(n >= 2)).min(n);
        cost.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        cx.a16_layers = cost.iter().take(keep).map(|(_, l)| *l).collect();
        if cx.progress {
            eprintln!("W4AX: float ppl {base:.3}; per-layer int8 cost {:?}; 16-bit layers {:?}", cost.iter().map(|(c, l)| format!("L{l}:{c:+.3}")).collect::<Vec<_>>(), cx.a16_layers);
        }
        Ok(())
    }
}
