//! `quambac cuda`: run a model on the GPU — check it against the CPU executor, or time it.
//!
//! A checkpoint directory runs as our FP16 baseline (f16 weights, f32 activations between
//! kernels); an artifact runs its quantized graph. The CPU side of `check` is the FP32 executor
//! for a directory and the integer reference executor for an artifact.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use runtime::cuda::{CudaExecutor, MemoryReport};

/// Arguments of `quambac cuda`.
#[derive(clap::Args, Debug)]
pub struct CudaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Logits and greedy tokens on the GPU vs the CPU executor; fails beyond the tolerance.
    ///
    /// Example: quambac cuda check model.qmb --json
    Check(CheckArgs),
    /// Time to first token, time per output token at several batch sizes, GPU memory.
    ///
    /// Example: quambac cuda bench synth-2.7b --prompt-len 1024 --batches 1,16 --json
    Bench(BenchArgs),
    /// Write the model's generated CUDA source and, where NVRTC is available, its PTX.
    ///
    /// Example: quambac cuda source model.qmb -o kernels.cu --arch sm_87
    Source(SourceArgs),
    /// Kernels of SASS listings (`cuobjdump -sass` or `nvdisasm -c` of a cubin) that use a
    /// global load before their dependency wait; fails when there is any.
    ///
    /// Example: cuobjdump -sass plan.cubin > plan.sass && quambac cuda sass plan.sass
    Sass(SassArgs),
    /// Where a decode step's time goes, launch by launch, from the blocks' own clocks.
    ///
    /// Example: quambac cuda trace model.qmb --steps 4 --svg step.svg
    Trace(super::cuda_trace::TraceArgs),
}

#[derive(clap::Args, Debug)]
struct SourceArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Where to write the CUDA source; the PTX goes beside it with the extension .ptx.
    #[arg(short, long)]
    output: PathBuf,
    /// Also compile to PTX for this architecture with NVRTC (sm_90 H100, sm_87 Orin, sm_86 A5000).
    #[arg(long)]
    arch: Option<String>,
}

#[derive(clap::Args, Debug)]
struct SassArgs {
    /// SASS listings, one or more.
    #[arg(required = true)]
    listings: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Sequences in the logits comparison.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Positions per sequence.
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Greedy tokens to compare.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Largest allowed max|Δlogit| / max|logit| (default: 1e-2 for a checkpoint's FP16 run,
    /// 5e-2 for an artifact, whose int8 roundings may flip where the CPU rounded the other way).
    /// Without this flag, an artifact with int8 activations also passes when its differences look
    /// like int8 flips: within twice its own flip envelope (how far its CPU logits move when every
    /// int8 product's output moves by 1-4 f32 roundings, and that of every product the GPU runs
    /// with f16 activations by 1-4 quarters of an f16 rounding, `compiler::sensitivity`, measured
    /// on the same tokens) in largest and mean change, with the argmax agreeing nearly as often.
    #[arg(long)]
    tolerance: Option<f32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Checkpoint directory or .qmb artifact.
    model: Option<PathBuf>,
    /// Prompt length for time to first token.
    #[arg(long, default_value_t = 1024)]
    prompt_len: usize,
    /// Batch sizes for time per output token.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batches: Vec<usize>,
    /// Decode steps timed per batch size.
    #[arg(long, default_value_t = 128)]
    decode_tokens: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also print the time of every kernel of one decode step and of one prefill (no graph).
    #[arg(long)]
    profile: bool,
    /// A name for the configuration in the output (default: the model's kind).
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CudaArgs) -> anyhow::Result<()> {
    match a.action {
        Action::Check(c) => check(c),
        Action::Bench(b) => bench(b),
        Action::Source(s) => source(s),
        Action::Sass(s) => sass(s),
        Action::Trace(t) => super::cuda_trace::trace(t),
    }
}

fn source(a: SourceArgs) -> anyhow::Result<()> {
    let dir = super::model_dir(a.model);
    let model = open_reference(&dir)?;
    let plan = kernels::cuda::plan(model.executor.verified_graph()).context("planning the CUDA kernels")?;
    std::fs::write(&a.output, &plan.source).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("{}: {} launches, {} entry points", a.output.display(), plan.launches.len(), plan.generated_source().matches("extern \"C\"").count());
    if let Some(arch) = a.arch {
        let arch: &'static str = match arch.as_str() {
            "sm_80" => "sm_80",
            "sm_86" => "sm_86",
            "sm_87" => "sm_87",
            "sm_89" => "sm_89",
            "sm_90" => "sm_90",
            other => bail!("unknown architecture {other}: expected sm_80, sm_86, sm_87, sm_89 or sm_90"),
        };
        let ptx = runtime::cuda::compile_ptx(&plan.source, arch)?;
        let path = a.output.with_extension("ptx");
        std::fs::write(&path, ptx).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{}: PTX for {arch}", path.display());
    }
    Ok(())
}

fn sass(a: SassArgs) -> anyhow::Result<()> {
    let mut early = 0;
    for path in &a.listings {
        let listing = std::fs::read_to_string(path).with_context(|| format!("reading the SASS listing {}", path.display()))?;
        let functions = kernels::cuda::sass::functions(&listing);
        if functions.is_empty() {
            bail!("{}: no functions found: expected the output of `cuobjdump -sass` or `nvdisasm -c`", path.display());
        }
        let before = early;
        for (name, instructions) in &functions {
            for use_ in kernels::cuda::sass::early_uses(instructions) {
                println!("{}: {name}: {use_}", path.display());
                early += 1;
            }
        }
        if early == before {
            println!("{}: no load used before a wait ({} kernels)", path.display(), functions.len());
        }
    }
    if early > 0 {
        bail!("{early} instructions use a load before their kernel's dependency wait");
    }
    Ok(())
}

/// The model with every weight's data kept (the reference integer backend), which the GPU
/// uploads from and checks against.
pub(super) fn open_reference(dir: &std::path::Path) -> anyhow::Result<compiler::model::FpModel> {
    compiler::model::FpModel::open_with(dir, runtime::KernelBackend::Reference).with_context(|| format!("loading model {}", dir.display()))
}

/// The model on the GPU; with `trace_events`, its kernels built with the timeline hooks holding
/// that many events (compiled here, not taken from the artifact).
pub(super) fn open_gpu(model: &compiler::model::FpModel, max_batch: usize, max_rows: usize, max_steps: usize, trace_events: Option<usize>) -> anyhow::Result<CudaExecutor> {
    let exec = &model.executor;
    let mut plan = kernels::cuda::plan(exec.verified_graph()).context("planning the CUDA kernels")?;
    if let Some(events) = trace_events {
        plan.source = runtime::cuda::traced_source(&plan.source, events);
    }
    let ahead = model.cuda.as_ref().map(|c| (c.arch.as_str(), c.source_hash, c.ptx.as_str()));
    CudaExecutor::new(exec.verified_graph(), exec.weights(), plan, ahead, max_batch, max_rows, max_steps).context("loading the model on the GPU")
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.seq == 0 {
        bail!("--batch and --seq must be positive");
    }
    let dir = super::model_dir(a.model);
    let model = open_reference(&dir)?;
    let quantized = dir.is_file();
    let tolerance = a.tolerance.unwrap_or(if quantized { 5e-2 } else { 1e-2 });
    let tokens = compiler::sensitivity::sample_tokens(&model, a.batch * a.seq)?;
    let mut gpu = open_gpu(&model, a.batch.max(1), a.batch * a.seq, a.steps + 1, None)?;

    let cpu_logits = model.executor.forward(&mut model.executor.new_state(a.batch), &tokens)?;
    let gpu_logits = gpu.forward(&tokens, a.batch, false)?;
    let max_ref = cpu_logits.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = compiler::sensitivity::max_abs_diff(&cpu_logits.data, &gpu_logits.data);
    let rows = a.batch * a.seq;
    let diff = compiler::sensitivity::compare(&cpu_logits.data, &gpu_logits.data, rows, 0.0);
    let (rel, mean_diff, argmax_agree) = (diff.relative, diff.mean_abs, diff.argmax_agree);

    // Greedy generation: CPU token by token vs the GPU's prefill + graph-replayed decode.
    let prompt = &tokens[..a.seq.min(16)];
    let mut state = model.executor.new_state(1);
    let mut logits = model.executor.forward(&mut state, prompt)?;
    let mut cpu_tokens = Vec::with_capacity(a.steps + 1);
    let mut cpu_rows = Vec::with_capacity(a.steps + 1);
    for _ in 0..=a.steps {
        let row = logits.row(0, logits.seq - 1).to_vec();
        let next = runtime::sampling::argmax(&row) as i64;
        cpu_tokens.push(next);
        cpu_rows.push(row);
        logits = model.executor.forward(&mut state, &[next])?;
    }
    let gpu_tokens = gpu.generate_greedy(prompt, 1, a.steps)?;
    let agree_prefix = cpu_tokens.iter().zip(&gpu_tokens).take_while(|(x, y)| x == y).count();
    let divergence_margin = divergence_margin(&cpu_rows, &cpu_tokens, &gpu_tokens);

    // What last-bit differences alone do to this model's logits (nothing for float graphs); an
    // explicit --tolerance is the whole rule.
    let envelope = match a.tolerance {
        Some(_) => compiler::sensitivity::Envelope::default(),
        None => compiler::sensitivity::widest(&compiler::sensitivity::envelope(&model.executor, &tokens, a.batch, Some(&cpu_logits.data))?),
    };
    let flips = envelope.relative;
    let like_flips = envelope.covers(rel, mean_diff, argmax_agree as f64 / rows as f64);
    let passed = rel <= tolerance || like_flips;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": dir.display().to_string(), "kind": model.kind, "device": gpu.device_name(),
                "max_abs_logit": max_ref, "max_abs_diff": max_diff, "mean_abs_diff": mean_diff, "relative": rel,
                "tolerance": tolerance, "flip_envelope": envelope, "within_flip_envelope": like_flips, "argmax_agreement": argmax_agree as f64 / rows as f64,
                "greedy_tokens": cpu_tokens.len(), "greedy_matching_prefix": agree_prefix, "greedy_divergence_margin": divergence_margin, "passed": passed})
        );
    } else {
        println!(
            "{} [{}] on {}: max|Δ| {max_diff:.3e} of max|logit| {max_ref:.3} (rel {rel:.2e}, tol {tolerance:.0e}, int8 flip envelope {flips:.1e}{}), mean|Δ| {mean_diff:.2e}, argmax agree {argmax_agree}/{rows}, greedy {agree_prefix}/{} identical{}",
            dir.display(),
            model.kind,
            gpu.device_name(),
            if like_flips && rel > tolerance { ": like int8 flips" } else { "" },
            cpu_tokens.len(),
            divergence_margin.map_or(String::new(), |m| format!(" (then the GPU's token, scored {m:.1e} of max|logit| below the CPU's)"))
        );
    }
    if !passed {
        bail!("GPU logits differ from the CPU executor by {rel:.2e} of the logit range: above the tolerance {tolerance:.0e}, and not like int8 flips (envelope {flips:.1e}: within twice its largest and mean change, argmax agreement within 5 points)");
    }
    Ok(())
}

/// Where two greedy generations first differ: how far below its own choice the CPU scored the
/// GPU's token there, as a share of that step's largest |logit| (a near tie shows as a tiny
/// margin). `cpu_rows[i]` are the CPU's logits for token i. None where they never differ.
fn divergence_margin(cpu_rows: &[Vec<f32>], cpu_tokens: &[i64], gpu_tokens: &[i64]) -> Option<f64> {
    let step = cpu_tokens.iter().zip(gpu_tokens).position(|(c, g)| c != g)?;
    let row = cpu_rows.get(step)?;
    let score = |token: i64| usize::try_from(token).ok().and_then(|t| row.get(t).copied());
    let top = row.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    Some(((score(cpu_tokens[step])? - score(gpu_tokens[step])?) / top) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The 16-token prompt per sequence that decode timings start from (any valid ids do).
pub(super) fn short_prompt(batch: usize, vocab: i64) -> Vec<i64> {
    (0..16 * batch as i64).map(|i| (i * 131 + 7) % vocab).collect()
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.prompt_len == 0 || a.decode_tokens == 0 || a.batches.is_empty() {
        bail!("--prompt-len, --decode-tokens and --batches must be positive");
    }
    let dir = super::model_dir(a.model);
    let load_start = Instant::now();
    let model = open_reference(&dir)?;
    let max_batch = *a.batches.iter().max().unwrap_or(&1);
    let max_rows = a.prompt_len.max(16 * max_batch);
    let mut gpu = open_gpu(&model, max_batch, max_rows, a.decode_tokens + 1, None)?;
    let load_s = load_start.elapsed().as_secs_f64();
    let vocab = model.config.vocab_size as i64;
    let prompt = compiler::synth::pseudo_random_tokens(a.prompt_len, model.config.vocab_size);
    let reps = a.repeats.max(1);

    // Time to first token: prefill of the whole prompt and the greedy pick of the first token.
    let mut ttft = Vec::with_capacity(reps);
    for i in 0..reps + 1 {
        gpu.reset()?;
        gpu.synchronize()?;
        let start = gpu.record_event()?;
        gpu.prefill_to_device(&prompt, 1)?;
        let end = gpu.record_event()?;
        end.synchronize()?;
        if i > 0 {
            ttft.push(start.elapsed_ms(&end)? as f64);
        }
    }
    // Time per output token: graph-replayed decode steps after a short prompt.
    let mut tpot = Vec::new();
    for &batch in &a.batches {
        let short = short_prompt(batch, vocab);
        let mut per_token = Vec::with_capacity(reps);
        for i in 0..reps + 1 {
            gpu.reset()?;
            gpu.prefill_to_device(&short, batch)?;
            gpu.decode_steps(batch, 1)?; // captures this batch size's graph on first use
            let start = gpu.record_event()?;
            gpu.decode_steps(batch, a.decode_tokens - 1)?;
            let end = gpu.record_event()?;
            end.synchronize()?;
            if i > 0 {
                per_token.push(start.elapsed_ms(&end)? as f64 / (a.decode_tokens - 1).max(1) as f64);
            }
        }
        tpot.push((batch, median(per_token)));
    }
    if a.profile {
        for (what, tokens, batch) in [("prefill", &prompt[..], 1usize), ("decode", &prompt[..1], 1)] {
            gpu.reset()?;
            let times = gpu.profile(tokens, batch)?;
            let mut by_family: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
            let mut by_kernel: std::collections::BTreeMap<&str, (usize, f64, usize)> = Default::default();
            for t in &times {
                let family = t.kernel.split('_').next().unwrap_or(&t.kernel).to_string();
                let e = by_family.entry(family).or_default();
                e.0 += 1;
                e.1 += t.ms;
                let e = by_kernel.entry(&t.kernel).or_default();
                e.0 += 1;
                e.1 += t.ms;
                e.2 += t.weight_bytes;
            }
            let total: f64 = times.iter().map(|t| t.ms).sum();
            eprintln!("profile {what} ({} tokens): {total:.3} ms in {} launches", tokens.len(), times.len());
            for (k, (n, ms)) in by_family {
                eprintln!("  {k:<10} {n:>4} launches {ms:>9.3} ms ({:.1}%)", 100.0 * ms / total);
            }
            // The costliest kernels, with the weight bytes their launches read per second (a
            // product's bandwidth; each launch alone carries its launch latency too).
            let mut kernels: Vec<_> = by_kernel.into_iter().collect();
            kernels.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            for (k, (n, ms, bytes)) in kernels.into_iter().take(12) {
                let rate = if bytes > 0 { format!(", {:.1} MB of weights per launch at {:.2} TB/s", bytes as f64 / n as f64 / 1e6, bytes as f64 / (ms * 1e-3) / 1e12) } else { String::new() };
                eprintln!("    {k:<10} {n:>4} × {:>8.4} ms{rate}", ms / n as f64);
            }
        }
    }
    let mem = gpu.memory();
    let bandwidth = gpu.copy_bandwidth()?;
    let (floor_ms, state_floor_ms) = decode_floors(mem, max_batch, bandwidth);
    let label = a.label.unwrap_or_else(|| model.kind.clone());
    let ttft_ms = median(ttft);
    if a.json {
        let tpot_json: serde_json::Map<String, serde_json::Value> = tpot.iter().map(|(b, ms)| (b.to_string(), serde_json::json!(ms))).collect();
        println!(
            "{}",
            serde_json::json!({"engine": "quamba-cuda", "label": label, "model": dir.display().to_string(), "kind": model.kind,
                "device": gpu.device_name(), "prompt_len": a.prompt_len, "ttft_ms": ttft_ms, "tpot_ms": tpot_json,
                "weights_bytes": mem.weights, "activation_bytes": mem.activations, "state_bytes": mem.states,
                "gpu_bytes": mem.weights + mem.activations + mem.states, "load_s": load_s,
                "copy_bandwidth_gbs": bandwidth / 1e9, "weight_floor_ms": floor_ms, "state_floor_ms": state_floor_ms,
                "shared_carveout_percent": gpu.shared_carveout()})
        );
    } else {
        let per = tpot.iter().map(|(b, ms)| format!("batch {b}: {ms:.3} ms/token")).collect::<Vec<_>>().join(", ");
        println!(
            "{label} on {}: TTFT({} tokens) {ttft_ms:.2} ms; {per}; weights {:.1} MB, activations {:.1} MB, states {:.1} MB; floor {floor_ms:.3} ms/token at {:.0} GB/s ({state_floor_ms:.3} with one sequence's state read and written)",
            gpu.device_name(),
            a.prompt_len,
            mem.weights as f64 / 1e6,
            mem.activations as f64 / 1e6,
            mem.states as f64 / 1e6,
            bandwidth / 1e9
        );
    }
    Ok(())
}

/// The floors of a batch-1 decode step at `bandwidth` bytes/s (the copy bandwidth, read + write
/// counted), in ms: every weight byte read once (the floor), and that plus one sequence's
/// recurrent state read and written (what a step must move; mamba2-2.7b's f32 SSM state adds a
/// quarter). `mem.states` holds `max_batch` sequences' states.
fn decode_floors(mem: MemoryReport, max_batch: usize, bandwidth: f64) -> (f64, f64) {
    let weights = mem.weights as f64;
    let state_per_sequence = mem.states as f64 / max_batch.max(1) as f64;
    (weights / bandwidth * 1e3, (weights + 2.0 * state_per_sequence) / bandwidth * 1e3)
}

#[cfg(test)]
mod tests {
    use super::{decode_floors, divergence_margin, MemoryReport};

    #[test]
    fn the_state_floor_adds_one_sequences_state_read_and_written() {
        // mamba2-2.7b W4A8 as benched: 1.458 GB of weights, 16 sequences' states of 171.9 MB.
        let mem = MemoryReport { weights: 1_457_657_860, activations: 1, states: 2_750_414_848 };
        let (weights, with_state) = decode_floors(mem, 16, 4.244e12);
        assert!((weights - 0.3435).abs() < 1e-4, "{weights}");
        assert!((with_state - 0.4245).abs() < 1e-4, "{with_state}");
        assert_eq!(decode_floors(MemoryReport { weights: 1000, activations: 0, states: 0 }, 0, 1e6), (1.0, 1.0), "no state, no batch: the weight floor");
    }

    #[test]
    fn a_greedy_divergence_is_scored_by_the_cpus_own_logits() {
        let rows = vec![vec![0.0, 4.0, 1.0], vec![3.9, 4.0, -2.0]];
        // Step 1: the CPU chose token 1 (4.0), the GPU token 0 (3.9): 0.1 of max |logit| 4.
        let margin = divergence_margin(&rows, &[1, 1], &[1, 0]).expect("they differ");
        assert!((margin - 0.025).abs() < 1e-6, "{margin}");
        assert_eq!(divergence_margin(&rows, &[1, 1], &[1, 1]), None, "no divergence");
        assert_eq!(divergence_margin(&rows, &[1, 1], &[1, 7]), None, "a GPU token outside the vocabulary has no score");
    }
}
