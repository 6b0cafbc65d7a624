//! Calibration: run the float program over token windows and collect, for requested values, the
//! statistics the passes need: absmax (per tensor and per channel), a mean per-window quantile of
//! |x|, the per-channel max over windows of mean |x| (the sort-and-cluster statistic), and XᵀX
//! of linear inputs (GPTQ's Hessian).

use std::collections::HashMap;

use indicatif::{ProgressBar, ProgressStyle};
use ir::ValueId;
use runtime::tokenizer::Tokenizer;

use crate::program::Program;
use crate::CompileError;

/// Token windows to calibrate (or validate) on.
#[derive(Clone, Debug, Default)]
pub struct CalibrationSet {
    /// Equal-length windows of token ids.
    pub windows: Vec<Vec<i64>>,
}

impl CalibrationSet {
    /// Up to `samples` non-overlapping windows of `len` tokens from `text`.
    pub fn from_text(tokenizer: &Tokenizer, text: &str, samples: usize, len: usize, source: &str) -> Result<CalibrationSet, CompileError> {
        let ids = tokenizer.encode(text)?;
        let windows: Vec<Vec<i64>> = ids.chunks_exact(len.max(2)).take(samples).map(|w| w.to_vec()).collect();
        if windows.is_empty() {
            return Err(CompileError::Calibration(format!("{source}: {} tokens is less than one {len}-token calibration window", ids.len())));
        }
        Ok(CalibrationSet { windows })
    }
}

/// What to record for one value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Record the quantile `q` of |x| per window (averaged over windows).
    pub percentile: Option<f32>,
    /// Record XᵀX (for a linear's input).
    pub hessian: bool,
}

/// Statistics of one value over the calibration set.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// max |x| over everything.
    pub absmax: f32,
    /// max |x| per channel.
    pub channel_absmax: Vec<f32>,
    /// Per channel, the max over windows of the mean over tokens of |x|.
    pub channel_meanabs_max: Vec<f32>,
    /// Mean over windows of the requested quantile of |x|.
    pub percentile: Option<f32>,
    /// Σ xᵀx over all tokens, `[width, width]` row-major, if requested.
    pub hessian: Option<Vec<f64>>,
    /// Tokens seen.
    pub rows: usize,
}

/// Runs `program` over `set` and returns the statistics of every requested value.
pub fn calibrate(program: &Program, set: &CalibrationSet, requests: &HashMap<ValueId, Request>, progress: bool, label: &str) -> Result<HashMap<ValueId, Stats>, CompileError> {
    let exec = program.executor()?;
    let mut stats: HashMap<ValueId, Stats> = HashMap::new();
    let mut percentile_sums: HashMap<ValueId, f64> = HashMap::new();
    let bar = windows_bar(set, progress, label);
    for window in &set.windows {
        let mut state = exec.new_state(1);
        exec.observe_activations(&mut state, window, &mut |v, data, width| {
            let Some(req) = requests.get(&v) else { return };
            let s = stats.entry(v).or_default();
            observe(s, req, data, width, &mut percentile_sums, v);
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = set.windows.len() as f64;
    for (v, sum) in percentile_sums {
        if let Some(s) = stats.get_mut(&v) {
            s.percentile = Some((sum / n) as f32);
        }
    }
    Ok(stats)
}

/// Runs `program` over `set` and shows `visit` the final state of every scan in `scans` after
/// each window (`[channel][d_state]` of the window's one sequence): the state a prefill hands
/// to decode, which Quamba calibrates the cached state's int8 scales on.
pub fn final_states(program: &Program, set: &CalibrationSet, scans: &[ValueId], visit: &mut dyn FnMut(ValueId, &[f32]), progress: bool, label: &str) -> Result<(), CompileError> {
    let exec = program.executor()?;
    let bar = windows_bar(set, progress, label);
    for window in &set.windows {
        let mut state = exec.new_state(1);
        exec.observe_activations(&mut state, window, &mut |_, _, _| {})?;
        for &v in scans {
            let buffer = state.buffer(v).ok_or_else(|| CompileError::Calibration(format!("{v} is not a scan with a state")))?;
            visit(v, buffer);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// A bar over the windows of `set` (hidden without `progress`), labelled `label`.
fn windows_bar(set: &CalibrationSet, progress: bool, label: &str) -> ProgressBar {
    let bar = if progress { ProgressBar::new(set.windows.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} windows  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message(label.to_string());
    bar
}

/// The quantile `q` of |x| over `data` (the element at rank round((len − 1) · q)); 0 if empty.
pub fn abs_quantile(data: &[f32], q: f32) -> f32 {
    if data.is_empty() {
        return 0.0;
    }
    let mut abs: Vec<f32> = data.iter().map(|x| x.abs()).collect();
    let k = ((abs.len() - 1) as f64 * q as f64).round() as usize;
    let (_, kth, _) = abs.select_nth_unstable_by(k, f32::total_cmp);
    *kth
}

fn observe(s: &mut Stats, req: &Request, data: &[f32], width: usize, percentile_sums: &mut HashMap<ValueId, f64>, v: ValueId) {
    let rows = data.len() / width;
    if s.channel_absmax.is_empty() {
        s.channel_absmax = vec![0.0; width];
        s.channel_meanabs_max = vec![0.0; width];
    }
    let mut meanabs = vec![0.0f64; width];
    for row in data.chunks_exact(width) {
        for (c, x) in row.iter().enumerate() {
            let a = x.abs();
            s.channel_absmax[c] = s.channel_absmax[c].max(a);
            meanabs[c] += a as f64;
        }
    }
    for (m, acc) in s.channel_meanabs_max.iter_mut().zip(&meanabs) {
        *m = m.max((acc / rows as f64) as f32);
    }
    s.absmax = s.channel_absmax.iter().copied().fold(s.absmax, f32::max);
    s.rows += rows;
    if let Some(q) = req.percentile {
        *percentile_sums.entry(v).or_default() += abs_quantile(data, q) as f64;
    }
    if req.hessian {
        // XᵀX through the f32 GEMM (rows of Xᵀ are channels), accumulated in f64 across windows.
        let mut xt = vec![0.0f32; width * rows];
        for (r, row) in data.chunks_exact(width).enumerate() {
            for (c, x) in row.iter().enumerate() {
                xt[c * rows + r] = *x;
            }
        }
        let xtx = runtime::cpu::linear::linear(&xt, width, rows, &xt, width, None);
        let h = s.hessian.get_or_insert_with(|| vec![0.0; width * width]);
        for (a, b) in h.iter_mut().zip(&xtx) {
            *a += *b as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use runtime::KernelBackend;

    /// Calibration's forward without the head shows every activation the full forward shows,
    /// bit for bit, except the logits, and advances the state the same.
    #[test]
    fn observing_without_the_head_shows_the_same_activations() {
        let fp = crate::model::FpModel::open_with(&crate::model::default_model_dir(), KernelBackend::Reference).unwrap();
        let exec = &fp.executor;
        let tokens: Vec<i64> = (0..24).map(|i| (i * 131 + 7) % 8192).collect();
        let collect = |full: bool| {
            let mut seen: HashMap<ir::ValueId, Vec<u32>> = HashMap::new();
            let mut state = exec.new_state(2);
            let mut keep = |v, data: &[f32], _| {
                seen.insert(v, data.iter().map(|x| x.to_bits()).collect());
            };
            if full {
                exec.forward_observed(&mut state, &tokens, &mut keep).unwrap();
            } else {
                exec.observe_activations(&mut state, &tokens, &mut keep).unwrap();
            }
            (seen, state.position)
        };
        let (full, full_position) = collect(true);
        let (partial, partial_position) = collect(false);
        assert_eq!(full_position, partial_position);
        let missing: Vec<_> = full.keys().filter(|v| !partial.contains_key(v)).collect();
        assert_eq!(missing.len(), 1, "only the logits are left out");
        assert!(matches!(exec.verified_graph().node(*missing[0]).op, ir::Op::LmHead { .. }));
        for (v, bits) in &partial {
            assert_eq!(Some(bits), full.get(v), "value {v:?}");
        }
    }
}
