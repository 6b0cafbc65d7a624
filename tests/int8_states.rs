//! Int8 cached SSM states (the `quantize_states` pass, `ir::StateQuant`, `--int8-states`): A8
//! layers keep each scan's state in int8 between calls, with Quamba2's per-(group, state index)
//! scales on Mamba2 and a per-tensor percentile scale on Mamba1; within a call nothing changes.

mod common;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::program::Program;
use compiler::target::Target;
use ir::{Op, StateQuant, ValueId};
use runtime::tokenizer::Tokenizer;

fn calib_text() -> String {
    std::fs::read_to_string(compiler::model::default_model_dir().join("../text/calib.txt")).unwrap()
}

fn compiled(dir: &std::path::Path, target: &str, int8_states: bool) -> Program {
    let ckpt = load_checkpoint(dir).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let opts = CompileOptions { calib_samples: 4, calib_len: 128, gptq: false, int8_states, ..CompileOptions::new(target.parse::<Target>().unwrap(), calib_text(), "calib.txt") };
    compile(&ckpt, &tok, &opts).unwrap()
}

fn tiny(target: &str, int8_states: bool) -> Program {
    compiled(&compiler::model::default_model_dir(), target, int8_states)
}

fn random_mamba1(target: &str) -> Program {
    let dir = common::cuda_plans::random_checkpoint_dir();
    common::random_checkpoint::write_random_mamba1(dir.path(), 48, 2, 8192, 16, 5, 2, 4, true, 7);
    compiled(dir.path(), target, true)
}

/// The scans of `program` with their int8 state rule, if any.
fn scans(program: &Program) -> Vec<(ValueId, Option<StateQuant>)> {
    let g = &program.graph;
    g.values()
        .into_iter()
        .filter_map(|v| match &g.node(v).op {
            Op::Ssd { state, .. } | Op::SelectiveScan { state, .. } => Some((v, *state)),
            _ => None,
        })
        .collect()
}

fn tokens(n: usize, batch: usize) -> Vec<i64> {
    (0..n * batch).map(|i| ((i * 7919 + 13) % 4000) as i64).collect()
}

/// Every state value of every int8-state scan is q · s for an integer q in [−128, 127] and its
/// channel's scale s.
fn assert_on_int8_grid(program: &Program, state: &runtime::State) {
    for (v, quant) in scans(program) {
        let Some(StateQuant { scale, group }) = quant else { continue };
        let scales = program.values(scale);
        let columns = program.graph.weight(scale).shape[1];
        let groups: Option<&[f32]> = group.map(|g| program.values(g));
        // Rows are [sequence][channel]; a map gives each channel's group.
        let buffer = state.buffer(v).unwrap();
        let d_state = match program.graph.node(v).op {
            Op::Ssd { d_state, .. } => d_state,
            Op::SelectiveScan { a_log, .. } => program.graph.weight(a_log).shape[1],
            _ => unreachable!("a scan"),
        };
        for (i, h) in buffer.iter().enumerate() {
            let (row, n) = (i / d_state, i % d_state);
            let g = groups.map_or(0, |m| m[row % m.len()] as usize);
            let s = scales[g * columns + if columns == 1 { 0 } else { n }];
            let q = h / s;
            assert!((q - q.round()).abs() < 1e-3 && (-128.0..=127.0).contains(&q.round()), "{v}: state {i} = {h} is not an int8 multiple of {s}");
        }
    }
}

#[test]
fn mamba2_a8_states_are_int8_with_per_group_and_state_scales() {
    let program = tiny("cpu-w8a8", true);
    let scans = scans(&program);
    assert_eq!(scans.len(), program.config.n_layer);
    for (v, quant) in &scans {
        let StateQuant { scale, group } = quant.unwrap_or_else(|| panic!("{v} keeps an f32 state"));
        let Op::Ssd { heads, head_dim, d_state, .. } = program.graph.node(*v).op else { panic!("an ssd") };
        // Sort-and-cluster's groups (one SSD group × 4 head groups × 4 dim groups), × d_state.
        assert_eq!(program.graph.weight(scale).shape, [16, d_state]);
        let map = program.values(group.expect("a group map"));
        assert_eq!(map.len(), heads * head_dim);
        let used: std::collections::BTreeSet<usize> = map.iter().map(|g| *g as usize).collect();
        assert_eq!(used, (0..16).collect(), "every group has channels");
        // A state row is x's channel, so it is grouped as x is quantized: channels of one group
        // share x's scale.
        let x = program.graph.inputs(*v)[0];
        let x_scale = match program.graph.node(x).op {
            Op::Dequantize { scale } => program.values(scale).to_vec(),
            ref other => panic!("x is fake-quantized, got {}", other.name()),
        };
        for c in 0..map.len() {
            for c2 in 0..map.len() {
                if map[c] == map[c2] {
                    assert_eq!(x_scale[c], x_scale[c2], "channels {c} and {c2} share state group {}", map[c]);
                }
            }
        }
        assert!(program.values(scale).iter().all(|s| s.is_finite() && *s > 0.0));
    }
    let exec = program.executor().unwrap();
    let mut state = exec.new_state(2);
    exec.forward(&mut state, &tokens(9, 2)).unwrap();
    assert_on_int8_grid(&program, &state);
    exec.forward(&mut state, &tokens(1, 2)).unwrap();
    assert_on_int8_grid(&program, &state);
}

fn relative(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    diff / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn a_call_computes_the_same_with_int8_states_and_later_calls_move_less_than_quantization() {
    let (int8, f32_states) = (tiny("cpu-w4a8", true), tiny("cpu-w4a8", false));
    assert!(scans(&f32_states).iter().all(|(_, q)| q.is_none()));
    let fp = Program::from_checkpoint(&load_checkpoint(&compiler::model::default_model_dir()).unwrap()).unwrap();
    let (a, b, f) = (int8.executor().unwrap(), f32_states.executor().unwrap(), fp.executor().unwrap());
    let (mut sa, mut sb, mut sf) = (a.new_state(2), b.new_state(2), f.new_state(2));
    let prompt = tokens(24, 2);
    // Within a call the state stays f32: the same logits to the bit.
    assert_eq!(a.forward(&mut sa, &prompt).unwrap(), b.forward(&mut sb, &prompt).unwrap());
    f.forward(&mut sf, &prompt).unwrap();
    // The next calls start from the int8 state: they move, by less than W4A8 itself moves the
    // logits away from the float model's.
    let (mut by_states, mut by_quantization) = (0.0f64, 0.0f64);
    for step in 0..16 {
        let t: Vec<i64> = tokens(1, 2).iter().map(|x| (x + step) % 4000).collect();
        let (la, lb, lf) = (a.forward(&mut sa, &t).unwrap(), b.forward(&mut sb, &t).unwrap(), f.forward(&mut sf, &t).unwrap());
        let moved = relative(&la.data, &lb.data);
        assert!(moved > 0.0, "step {step}: the int8 state changed nothing");
        by_states += moved;
        by_quantization += relative(&lb.data, &lf.data);
    }
    eprintln!("mean relative logit change over 16 decode steps: int8 states {:.4}, W4A8 vs FP32 {:.4}", by_states / 16.0, by_quantization / 16.0);
    assert!(by_states < 0.5 * by_quantization, "int8 states moved decode logits by {by_states:.4} in all, W4A8 by {by_quantization:.4}");
}

#[test]
fn mamba1_a8_states_have_one_percentile_scale() {
    let program = random_mamba1("cpu-w8a8");
    for (v, quant) in scans(&program) {
        let StateQuant { scale, group } = quant.unwrap_or_else(|| panic!("{v} keeps an f32 state"));
        assert_eq!(program.graph.weight(scale).shape, [1, 1]);
        assert!(group.is_none());
    }
    let exec = program.executor().unwrap();
    let mut state = exec.new_state(1);
    exec.forward(&mut state, &tokens(7, 1)).unwrap();
    assert_on_int8_grid(&program, &state);
}

#[test]
fn only_a8_layers_keep_int8_states() {
    assert!(scans(&tiny("cpu-w4a16", true)).iter().all(|(_, q)| q.is_none()), "W4A16 keeps f32 states");
    let w4ax = tiny("cpu-w4ax", true);
    let text = w4ax.graph.to_string();
    let quantized = scans(&w4ax).iter().filter(|(_, q)| q.is_some()).count();
    let a16 = scans(&w4ax).len() - quantized;
    assert!(quantized > 0 && a16 > 0, "W4AX mixes int8 and f32 states:\n{text}");
}

#[test]
fn a_group_map_naming_a_missing_scale_row_is_refused() {
    let mut program = tiny("cpu-w8a8", true);
    let (_, quant) = scans(&program)[0];
    let group = quant.unwrap().group.unwrap();
    let mut map = program.values(group).to_vec();
    map[3] = 16.0;
    program.set_values(group, map);
    let err = program.executor().err().expect("refused").to_string();
    assert!(err.contains(&format!("state group map {group}")) && err.contains("16") && err.contains("16-row state scale"), "{err}");
}

#[test]
fn scoring_in_calls_matches_one_call_where_states_stay_f32() {
    let program = tiny("cpu-w8a8", false);
    let exec = program.executor().unwrap();
    let ids = tokens(64, 2);
    let windows: Vec<&[i64]> = ids.chunks_exact(64).collect();
    let whole = runtime::perplexity::score_windows(&exec, &windows).unwrap();
    assert_eq!(runtime::perplexity::score_windows_in_calls(&exec, &windows, 64).unwrap(), whole);
    let in_calls = runtime::perplexity::score_windows_in_calls(&exec, &windows, 5).unwrap();
    assert_eq!(in_calls.count, whole.count);
    assert!((in_calls.perplexity() / whole.perplexity() - 1.0).abs() < 1e-4, "{} vs {}", in_calls.perplexity(), whole.perplexity());
}
