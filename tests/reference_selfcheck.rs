//! Checks of the test-only reference implementation (`tests/common/reference_mamba.rs`) against
//! itself and against the transformers outputs stored beside the shared models.

mod common;

use std::path::{Path, PathBuf};

use common::random_checkpoint::{write_random_mamba1, write_random_mamba2};
use common::reference_mamba::{gated_rmsnorm, read_safetensors_f32, rel_err, RefFamily, RefModel};

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reference_selfcheck").join(name)
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<i64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..vocab as i64)).collect()
}

fn l2(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Sequence path == token-by-token path (bit for bit), a split prefill continues exactly, the
/// quadratic form agrees to rounding, and the logits are finite, nontrivial and position-dependent.
fn check_self_consistency(model: &RefModel, toks: &[i64]) {
    let vocab = model.config.vocab;
    let seq = model.logits(toks);
    assert_eq!(seq.len(), toks.len() * vocab);
    assert!(seq.iter().all(|v| v.is_finite()), "non-finite logits");
    let rms = l2(&seq) / (seq.len() as f64).sqrt();
    assert!(rms > 1e-3 && rms < 1e3, "logit RMS {rms} is not sane");

    let stepwise = model.logits_stepwise(toks);
    assert!(seq == stepwise, "sequence vs step-by-step differ: rel err {:.3e}", rel_err(&stepwise, &seq));

    // Prefill a prefix, then decode the rest from the carried state.
    let split = toks.len() / 3;
    let mut state = model.new_state();
    let mut split_logits = model.prefill(&mut state, &toks[..split]);
    assert_eq!(state.pos, split);
    for &t in &toks[split..] {
        split_logits.extend(model.step(&mut state, t));
    }
    assert!(seq == split_logits, "split prefill + decode differs from the sequence path");

    let quad = model.logits_quadratic(toks);
    let e = rel_err(&quad, &seq);
    eprintln!("{:?}: quadratic vs recurrent scan rel err {e:.2e}", model.config.family);
    assert!(e < 1e-6, "quadratic vs recurrent rel err {e:.3e}");

    // The state actually carries information: the same token at the same position gives
    // different logits after a different history.
    let mut other = toks.to_vec();
    other[0] = (other[0] + 1) % vocab as i64;
    let alt = model.logits(&other);
    let last = (toks.len() - 1) * vocab..toks.len() * vocab;
    let e = rel_err(&alt[last.clone()], &seq[last]);
    assert!(e > 1e-6, "changing the first token did not change the last logits (rel {e:.2e})");
}

/// Raises every dt bias by 2 (dt ≈ 0.007 .. 0.6 instead of 0.001 .. 0.1), so that the decay
/// exp(dt·A) differs clearly from 1 and long-range terms of the scan matter.
fn with_larger_dt(model: &RefModel) -> RefModel {
    let mut m = model.clone();
    for (name, (_, data)) in m.weights.iter_mut() {
        if name.ends_with("mixer.dt_bias") || name.ends_with("mixer.dt_proj.bias") {
            data.iter_mut().for_each(|v| *v += 2.0);
        }
    }
    m
}

#[test]
fn mamba2_ngroups4_sequence_equals_stepwise() {
    let dir = scratch("m2_g4");
    // d_inner 128, 8 heads of 16, 4 groups (2 heads per group), untied head.
    write_random_mamba2(&dir, 64, 2, 101, 16, 16, 4, 2, 4, 8, false, 7);
    let model = RefModel::from_dir(&dir);
    assert_eq!(model.config.family, RefFamily::Mamba2);
    assert_eq!((model.config.nheads(), model.config.ngroups), (8, 4));
    assert_eq!(model.config.dt_limit, (0.0, f32::INFINITY));
    assert!(!model.config.tied);
    check_self_consistency(&model, &tokens(21, 101, 1));
    check_self_consistency(&with_larger_dt(&model), &tokens(21, 101, 1));
}

#[test]
fn mamba2_ngroups1_tied_sequence_equals_stepwise() {
    let dir = scratch("m2_g1");
    write_random_mamba2(&dir, 32, 2, 64, 8, 8, 1, 2, 3, 4, true, 8);
    let model = RefModel::from_dir(&dir);
    assert!(model.config.tied && model.config.d_conv == 3);
    check_self_consistency(&model, &tokens(13, 64, 2));
}

#[test]
fn mamba1_odd_dt_rank_sequence_equals_stepwise() {
    let dir = scratch("m1_r5");
    write_random_mamba1(&dir, 48, 2, 77, 8, 5, 2, 4, true, 9);
    let model = RefModel::from_dir(&dir);
    assert_eq!(model.config.family, RefFamily::Mamba1);
    assert_eq!(model.config.dt_rank, 5);
    check_self_consistency(&model, &tokens(17, 77, 3));
    check_self_consistency(&with_larger_dt(&model), &tokens(17, 77, 3));
}

#[test]
fn mamba1_untied_sequence_equals_stepwise() {
    let dir = scratch("m1_untied");
    write_random_mamba1(&dir, 32, 3, 50, 4, 3, 2, 2, false, 10);
    let model = RefModel::from_dir(&dir);
    assert!(!model.config.tied);
    check_self_consistency(&model, &tokens(9, 50, 4));
}

#[test]
fn random_checkpoints_are_deterministic_and_realistic() {
    let (a, b, c) = (scratch("det_a"), scratch("det_b"), scratch("det_c"));
    write_random_mamba2(&a, 32, 1, 40, 8, 8, 2, 2, 4, 16, true, 123);
    write_random_mamba2(&b, 32, 1, 40, 8, 8, 2, 2, 4, 16, true, 123);
    write_random_mamba2(&c, 32, 1, 40, 8, 8, 2, 2, 4, 16, true, 124);
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(read(&a), read(&b), "same seed, different files");
    assert_ne!(read(&a), read(&c), "different seeds, same files");

    let w = read_safetensors_f32(&read(&a));
    let get = |n: &str| &w[n].1;
    let dt_bias = get("backbone.layers.0.mixer.dt_bias");
    for &b in dt_bias {
        let dt = (b as f64).exp().ln_1p();
        assert!((1e-3 * 0.999..=1e-1 * 1.001).contains(&dt), "softplus(dt_bias) = {dt}");
    }
    for &a in get("backbone.layers.0.mixer.A_log") {
        assert!((0.0..=16f32.ln()).contains(&a));
    }
    let nw = get("backbone.layers.0.mixer.norm.weight");
    assert!(nw.iter().all(|&v| (0.9..=1.1).contains(&v)) && nw.iter().any(|&v| v != 1.0));
    let emb = get("backbone.embeddings.weight");
    let std = l2(emb) / (emb.len() as f64).sqrt();
    assert!((0.02..=0.1).contains(&std), "embedding std {std}");

    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "mamba2");
    assert_eq!(cfg["n_groups"], 2);
    assert_eq!(cfg["num_heads"], 8);
    assert_eq!(cfg["time_step_limit"][1]["__float__"], "Infinity");
}

/// Grouped gated norm: each of the `ngroups` slices is normalised by its own RMS.
#[test]
fn gated_norm_normalises_each_group_separately() {
    // y·silu(z) with z large enough that silu(z) ≈ z: use z = 30 (silu(30) = 30 to 1e-12).
    let z = vec![30.0f32; 8];
    let y: Vec<f32> = vec![1.0, -1.0, 1.0, -1.0, 3.0, 3.0, -3.0, 3.0];
    let w: Vec<f32> = vec![1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5];
    let eps = 1e-5f32;
    let g2 = gated_rmsnorm(&y, &z, &w, 2, eps);
    let g1 = gated_rmsnorm(&y, &z, &w, 1, eps);
    // Group RMS: slice 0 = 30, slice 1 = 90; whole = sqrt((900·4 + 8100·4)/8) = sqrt(4500).
    let s = |rms: f64| 30.0 / (rms * rms + eps as f64).sqrt();
    let expect2: Vec<f64> = (0..8).map(|i| y[i] as f64 * w[i] as f64 * if i < 4 { s(30.0) } else { s(90.0) }).collect();
    let expect1: Vec<f64> = (0..8).map(|i| y[i] as f64 * w[i] as f64 * s(4500f64.sqrt())).collect();
    for i in 0..8 {
        assert!((g2[i] as f64 - expect2[i]).abs() < 1e-5, "ngroups=2 [{i}]: {} vs {}", g2[i], expect2[i]);
        assert!((g1[i] as f64 - expect1[i]).abs() < 1e-5, "ngroups=1 [{i}]: {} vs {}", g1[i], expect1[i]);
    }

    // Random input with slices of different scale: ngroups=4 differs from ngroups=1, and each
    // group of the ngroups=4 output (divided by the weight) has unit RMS.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let n = 64;
    let y: Vec<f32> = (0..n).map(|i| rng.gen_range(-1.0f32..1.0) * (1 + i / 16) as f32).collect();
    let z: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    let w: Vec<f32> = (0..n).map(|_| rng.gen_range(0.9f32..1.1)).collect();
    let g4 = gated_rmsnorm(&y, &z, &w, 4, eps);
    let g1 = gated_rmsnorm(&y, &z, &w, 1, eps);
    let e = rel_err(&g4, &g1);
    assert!(e > 0.1, "ngroups=4 and ngroups=1 normalisation agree too well ({e:.3e})");
    for grp in 0..4 {
        let ms: f64 = (grp * 16..(grp + 1) * 16).map(|i| (g4[i] as f64 / w[i] as f64).powi(2)).sum::<f64>() / 16.0;
        assert!((ms - 1.0).abs() < 1e-3, "group {grp}: mean square {ms}");
    }
    let ms1: f64 = (0..n).map(|i| (g1[i] as f64 / w[i] as f64).powi(2)).sum::<f64>() / n as f64;
    assert!((ms1 - 1.0).abs() < 1e-3);
}

/// Head h reads B/C of group h / (nheads / ngroups): with B zeroed for all groups but one, only
/// that group's heads accumulate SSM state.
#[test]
fn mamba2_heads_read_their_own_group() {
    let dir = scratch("m2_groupmap");
    let (d_model, d_state, head_dim, ngroups) = (32, 4, 8, 4);
    write_random_mamba2(&dir, d_model, 1, 30, d_state, head_dim, ngroups, 2, 4, 8, true, 11);
    for keep in 0..ngroups {
        let mut model = RefModel::from_dir(&dir);
        let c = model.config.clone();
        let (di, n, nh) = (c.d_inner(), c.d_state, c.nheads());
        // B rows of group g in in_proj: z (di) + x (di) + g·n .. ; in conv: di + g·n ..
        for g in (0..ngroups).filter(|&g| g != keep) {
            let rows = (di + di + g * n)..(di + di + (g + 1) * n);
            let w = &mut model.weights.get_mut("backbone.layers.0.mixer.in_proj.weight").unwrap().1;
            for r in rows {
                w[r * d_model..(r + 1) * d_model].iter_mut().for_each(|v| *v = 0.0);
            }
            // silu(0 + 0) = 0, so B of group g is exactly zero.
            let cb = &mut model.weights.get_mut("backbone.layers.0.mixer.conv1d.bias").unwrap().1;
            cb[di + g * n..di + (g + 1) * n].iter_mut().for_each(|v| *v = 0.0);
        }
        let mut state = model.new_state();
        model.prefill(&mut state, &[3, 1, 4, 1, 5]);
        let per_head = head_dim * n;
        let heads_per_group = nh / ngroups;
        for h in 0..nh {
            let norm: f64 = state.ssm[0][h * per_head..(h + 1) * per_head].iter().map(|v| v * v).sum();
            if h / heads_per_group == keep {
                assert!(norm > 0.0, "keep {keep}: head {h} of the kept group has no state");
            } else {
                assert_eq!(norm, 0.0, "keep {keep}: head {h} of group {} has state", h / heads_per_group);
            }
        }
    }
}

// ------------------------------------------------------------------------- shared models

fn shared_model(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models").join(name);
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!("note: skipping {name}: {} is not present", dir.display());
        None
    }
}

/// Runs the reference on the first `len` tokens of each listed row of reference.safetensors'
/// input_ids and compares with the stored transformers logits.
fn check_against_transformers(name: &str, rows: &[usize], len: usize) {
    let Some(dir) = shared_model(name) else { return };
    let model = RefModel::from_dir(&dir);
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids_t = st.tensor("input_ids").unwrap();
    let seq = ids_t.shape()[1];
    let ids: Vec<i64> = ids_t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    let logits: Vec<f32> =
        st.tensor("logits").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let vocab = model.config.vocab;
    let len = len.min(seq);
    for &row in rows {
        let toks = &ids[row * seq..row * seq + len];
        let ours = model.logits(toks);
        let theirs = &logits[row * seq * vocab..(row * seq + len) * vocab];
        let e = rel_err(&ours, theirs);
        eprintln!("{name}: row {row}, {len} tokens: reference vs transformers logits rel err {e:.3e}");
        assert!(e < 1e-4, "{name} row {row}: rel err {e:.3e} ≥ 1e-4");
    }
}

#[test]
fn mamba2_tiny_matches_transformers() {
    check_against_transformers("mamba2-tiny", &[0, 1], 64);
}

#[test]
fn mamba1_small_f16_matches_transformers() {
    check_against_transformers("mamba1-small", &[0], 64);
}

#[test]
fn mamba2_small_bf16_matches_transformers() {
    check_against_transformers("mamba2-small", &[0], 64);
}
