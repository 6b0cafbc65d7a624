//! `quambac bench`: FP32 CPU prefill and decode throughput of one model.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use runtime::cpu::OpProfile;

/// Arguments of `quambac bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Checkpoint directory or .qmb artifact (default: the embedded mamba2-tiny).
    model: Option<PathBuf>,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// Decode steps to time.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed repetitions of the prefill (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also time every op of the decode steps, on the decode plan and on the general
    /// interpreter (op by op, as prefill runs), and of one prefill; print the breakdowns.
    #[arg(long)]
    profile: bool,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.prompt_len == 0 || a.decode_tokens == 0 {
        bail!("--prompt-len and --decode-tokens must be positive");
    }
    let dir = super::model_dir(a.model);
    let model = super::open(&dir)?;
    let exec = &model.executor;
    let prompt = compiler::synth::pseudo_random_tokens(a.prompt_len, model.config.vocab_size);
    let mut best_prefill = f64::INFINITY;
    for _ in 0..a.repeats.max(1) {
        let mut state = exec.new_state(1);
        let t = Instant::now();
        exec.forward(&mut state, &prompt)?;
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
    }
    let mut state = exec.new_state(1);
    exec.forward(&mut state, &prompt[..16.min(prompt.len())])?;
    let mut token = 1i64;
    exec.forward(&mut state, &[token])?; // warm-up
    let t = Instant::now();
    for _ in 0..a.decode_tokens {
        let logits = exec.forward(&mut state, &[token])?;
        token = runtime::sampling::argmax(logits.row(0, 0)) as i64;
    }
    let decode = t.elapsed().as_secs_f64();
    let profiles = if a.profile { Some([decode_profile(exec, &prompt, a.decode_tokens, false)?, decode_profile(exec, &prompt, a.decode_tokens, true)?]) } else { None };
    let prefill_profile = if a.profile { Some(prefill_profile(exec, &prompt)?) } else { None };
    let prefill_tps = a.prompt_len as f64 / best_prefill;
    let decode_tps = a.decode_tokens as f64 / decode;
    let threads = rayon::current_num_threads();
    let per_step = |p: &OpProfile| -> Vec<serde_json::Value> {
        p.rows().iter().map(|(label, d, n)| serde_json::json!({"op": label, "us_per_step": d.as_secs_f64() * 1e6 / a.decode_tokens as f64, "calls_per_step": *n as f64 / a.decode_tokens as f64})).collect()
    };
    if a.json {
        let mut out = serde_json::json!({"engine": "quamba-fp32", "model": dir.display().to_string(), "threads": threads,
            "prompt_len": a.prompt_len, "decode_tokens": a.decode_tokens,
            "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps});
        if let Some([general, plan]) = &profiles {
            out["decode_profile"] = serde_json::json!({"general": per_step(general), "plan": per_step(plan)});
        }
        if let Some(p) = &prefill_profile {
            out["prefill_profile"] = p.rows().iter().map(|(label, d, n)| serde_json::json!({"op": label, "ms": d.as_secs_f64() * 1e3, "calls": n})).collect();
        }
        println!("{out}");
    } else {
        println!("{}: prefill {prefill_tps:.1} tok/s ({} tokens), decode {decode_tps:.1} tok/s ({} steps), {threads} threads", dir.display(), a.prompt_len, a.decode_tokens);
        if let Some(profiles) = &profiles {
            for (name, p) in ["general interpreter", "decode plan"].iter().zip(profiles) {
                println!("decode step on the {name}: {:.1} us of ops per step", p.total().as_secs_f64() * 1e6 / a.decode_tokens as f64);
                for (label, d, n) in p.rows() {
                    println!("  {label:<22} {:>8.1} us  {:>5.1} calls", d.as_secs_f64() * 1e6 / a.decode_tokens as f64, n as f64 / a.decode_tokens as f64);
                }
            }
        }
        if let Some(p) = &prefill_profile {
            println!("prefill of {} tokens on the general interpreter: {:.1} ms of ops", a.prompt_len, p.total().as_secs_f64() * 1e3);
            for (label, d, n) in p.rows() {
                println!("  {label:<22} {:>8.2} ms  {n:>5} calls", d.as_secs_f64() * 1e3);
            }
        }
    }
    Ok(())
}

/// Per-op wall time over `steps` decode steps after a short prompt, on the decode plan or the
/// general interpreter.
fn decode_profile(exec: &runtime::Executor, prompt: &[i64], steps: usize, plan: bool) -> anyhow::Result<OpProfile> {
    let mut state = exec.new_state(1);
    exec.forward(&mut state, &prompt[..16.min(prompt.len())])?;
    let mut profile = OpProfile::new();
    let mut token = 1i64;
    exec.forward_profiled(&mut state, &[token], plan, None)?; // warm-up
    for _ in 0..steps {
        let logits = exec.forward_profiled(&mut state, &[token], plan, Some(&mut profile))?;
        token = runtime::sampling::argmax(logits.row(0, 0)) as i64;
    }
    Ok(profile)
}

/// Per-op wall time of one prefill of `prompt` (after one untimed prefill to warm up).
fn prefill_profile(exec: &runtime::Executor, prompt: &[i64]) -> anyhow::Result<OpProfile> {
    exec.forward(&mut exec.new_state(1), prompt)?;
    let mut profile = OpProfile::new();
    exec.forward_profiled(&mut exec.new_state(1), prompt, false, Some(&mut profile))?;
    Ok(profile)
}
