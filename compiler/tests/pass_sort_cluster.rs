//! Sort-and-cluster of the Mamba2 SSM input: the clustering is well formed, and the offline
//! weight rearrangement leaves the model's function (logits) and graph structure unchanged.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use compiler::calibrate::CalibrationSet;
use compiler::checkpoint::{load_checkpoint, Layout, ModelConfig};
use compiler::passes::blocks::blocks;
use compiler::passes::sort_cluster_heads::{head_clusters, HeadClustering, SortClusterHeads};
use compiler::passes::{Pass, PassContext, ScaleRule};
use compiler::program::Program;
use compiler::target::{Device, Method, Precision, Target};
use runtime::tokenizer::Tokenizer;
use safetensors::tensor::TensorView;

/// A small deterministic PRNG (splitmix64), so the tests need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-a, a).
    fn sym(&mut self, a: f32) -> f32 {
        (2.0 * self.uniform() - 1.0) * a
    }
}

fn context(calib: CalibrationSet) -> PassContext {
    PassContext {
        target: Target { device: Device::Cpu, precision: Precision::W4A8 },
        method: Method::Quamba2,
        calib,
        valid: None,
        scale_rules: HashMap::new(),
        a16_layers: BTreeSet::new(),
        gptq: false,
        progress: false,
    }
}

fn logits(program: &Program, sequences: &[Vec<i64>]) -> Vec<f32> {
    let exec = program.executor().unwrap();
    let mut state = exec.new_state(sequences.len());
    let tokens: Vec<i64> = sequences.iter().flatten().copied().collect();
    exec.forward(&mut state, &tokens).unwrap().data
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// Runs the pass and checks function invariance, the graph text, and the recorded x scale rules.
/// Returns the relative logits error.
fn check_invariance(mut program: Program, calib: CalibrationSet, sequences: &[Vec<i64>], m: usize, n: usize) -> (Program, f64) {
    let before_text = program.graph.to_string();
    let before = logits(&program, sequences);
    let mut cx = context(calib);
    let pass = SortClusterHeads { head_groups: m, dim_groups: n };
    let plans = pass.plan(&program, &cx).unwrap();
    assert_eq!(plans.len(), program.config.n_layer);
    pass.run(&mut program, &mut cx).unwrap();
    ir::verify(&program.graph).unwrap();
    program.weights.check_against(&program.graph).unwrap();
    assert_eq!(program.graph.to_string(), before_text, "the pass must only change weight values");
    let after = logits(&program, sequences);
    let err = relative_error(&after, &before);

    let cfg = &program.config;
    let per_group = cfg.n_heads / cfg.n_groups;
    let distinct = cfg.n_groups * m.min(per_group) * n.min(cfg.head_dim);
    for (block, plan) in blocks(&program.graph).unwrap().iter().zip(&plans) {
        match cx.scale_rules.get(&block.x) {
            Some(ScaleRule::Grouped { group_of }) => {
                assert_eq!(group_of.len(), cfg.d_inner);
                assert_eq!(group_of, &plan.clustering.group_of);
                assert_eq!(group_of.iter().collect::<BTreeSet<_>>().len(), distinct);
            }
            other => panic!("layer {}: x has rule {other:?}", block.layer),
        }
        // The permutation actually reorders something (the calibration stats are not already sorted).
        assert_ne!(plan.clustering.channel_perm, (0..cfg.d_inner).collect::<Vec<_>>());
    }
    (program, err)
}

// ---------------------------------------------------------------------------------------------
// The embedded mamba2-tiny.

fn tiny() -> (Program, Tokenizer) {
    let ckpt = load_checkpoint(&compiler::model::default_model_dir()).unwrap();
    let tok = Tokenizer::from_file(&ckpt.tokenizer_path().unwrap()).unwrap();
    (Program::from_checkpoint(&ckpt).unwrap(), tok)
}

fn asset_text(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/text").join(name)).unwrap()
}

#[test]
fn mamba2_tiny_logits_are_unchanged() {
    let (program, tok) = tiny();
    let lowered_text = program.graph.to_string();
    let calib = CalibrationSet::from_text(&tok, &asset_text("calib.txt"), 4, 256, "calib.txt").unwrap();
    assert_eq!(calib.windows.len(), 4);
    let ids = tok.encode(&asset_text("sample.txt")).unwrap();
    let sequences = vec![ids[..32].to_vec(), ids[1000..1032].to_vec()];
    let (program, err) = check_invariance(program, calib, &sequences, 4, 4);
    eprintln!("mamba2-tiny: relative logits error after sort-and-cluster = {err:e}");
    assert!(err <= 1e-5, "relative logits error {err}");

    // The structure is the lowered IR's; only weight values moved.
    let text = program.graph.to_string();
    assert_eq!(text, lowered_text);
    insta::assert_snapshot!("mamba2_tiny_ir_after_sort_cluster", text);
}

// ---------------------------------------------------------------------------------------------
// A random Mamba2 with four SSD groups (two heads per group, fewer than m = 4).

fn write_random_mamba2(dir: &Path, seed: u64) {
    let config = serde_json::json!({
        "model_type": "mamba2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "state_size": 16,
        "head_dim": 16,
        "expand": 2,
        "n_groups": 4,
        "num_heads": 8,
        "vocab_size": 256,
        "chunk_size": 16,
        "conv_kernel": 4,
        "tie_word_embeddings": true,
        "use_bias": false,
        "use_conv_bias": true,
        "layer_norm_epsilon": 1e-5,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg = ModelConfig::read(dir, Layout::Transformers).unwrap();
    let mut rng = Rng(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, shape) in compiler::checkpoint::load::expected_tensors(&cfg) {
        let count: usize = shape.iter().product();
        let fan_in = *shape.last().unwrap() as f32;
        let values: Vec<f32> = if name.ends_with("A_log") {
            (0..count).map(|h| ((h % 16) as f32 + 1.0).ln()).collect()
        } else if name.ends_with("dt_bias") {
            (0..count).map(|_| -3.0 + rng.sym(1.0)).collect()
        } else if name.ends_with("mixer.D") {
            (0..count).map(|_| 1.0 + rng.sym(0.5)).collect()
        } else if name.ends_with("norm.weight") || name.ends_with("norm_f.weight") {
            (0..count).map(|_| 1.0 + rng.sym(0.1)).collect()
        } else if name.ends_with("conv1d.weight") {
            (0..count).map(|_| rng.sym(0.5)).collect()
        } else if name.ends_with("conv1d.bias") {
            (0..count).map(|_| rng.sym(0.1)).collect()
        } else if name.ends_with("in_proj.weight") {
            // Give the channels of the in_proj rows very different scales, so x has outlier
            // channels and heads of different shapes for the clustering to find.
            let (rows, cols) = (shape[0], shape[1]);
            let mut v = Vec::with_capacity(count);
            for _ in 0..rows {
                let scale = (2.0 * rng.sym(1.0)).exp() / fan_in.sqrt();
                v.extend((0..cols).map(|_| rng.sym(scale * 1.7)));
            }
            v
        } else if name.contains("embeddings") {
            (0..count).map(|_| rng.sym(1.0)).collect()
        } else {
            (0..count).map(|_| rng.sym(1.7 / fan_in.sqrt())).collect()
        };
        tensors.push((name, shape, values));
    }
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> =
        tensors.iter().zip(&bytes).map(|((n, s, _), b)| (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn random_mamba2_with_four_groups_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    write_random_mamba2(dir.path(), 42);
    let ckpt = load_checkpoint(dir.path()).unwrap();
    assert_eq!((ckpt.config.n_heads, ckpt.config.n_groups, ckpt.config.head_dim), (8, 4, 16));
    let program = Program::from_checkpoint(&ckpt).unwrap();
    let mut rng = Rng(7);
    let calib = CalibrationSet { windows: (0..4).map(|_| (0..64).map(|_| (rng.next_u64() % 256) as i64).collect()).collect() };
    let sequences: Vec<Vec<i64>> = (0..2).map(|_| (0..32).map(|_| (rng.next_u64() % 256) as i64).collect()).collect();
    let (program, err) = check_invariance(program, calib.clone(), &sequences, 4, 4);
    eprintln!("random mamba2 (4 groups): relative logits error after sort-and-cluster = {err:e}");
    assert!(err <= 1e-5, "relative logits error {err}");

    // Heads never left their SSD group, and two heads per group cap m at 2.
    let plans = SortClusterHeads { head_groups: 4, dim_groups: 4 }.plan(&program, &context(calib)).unwrap();
    for plan in &plans {
        let c = &plan.clustering;
        assert_eq!(c.head_groups, 2);
        assert!(c.head_perm.iter().enumerate().all(|(j, h)| j / 2 == h / 2), "{:?}", c.head_perm);
    }
}

#[test]
fn mamba2_pass_refuses_an_online_hadamard() {
    let (mut program, _) = tiny();
    let block = blocks(&program.graph).unwrap().remove(0);
    let h = program.graph.add(ir::Op::Hadamard, &[block.gate]).unwrap();
    program.graph.set_input(block.out_proj, 0, h);
    let mut cx = context(CalibrationSet { windows: vec![vec![1, 2, 3, 4]] });
    let err = SortClusterHeads::default().run(&mut program, &mut cx).unwrap_err().to_string();
    assert!(err.contains("hadamard"), "{err}");
}

#[test]
fn mamba1_is_left_alone() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mamba1-tiny-ss");
    if !dir.is_dir() {
        eprintln!("skipping: ../shared is not present");
        return;
    }
    let mut program = Program::from_checkpoint(&load_checkpoint(&dir).unwrap()).unwrap();
    let before = program.clone();
    let mut cx = context(CalibrationSet { windows: vec![vec![1, 2, 3, 4]] });
    SortClusterHeads::default().run(&mut program, &mut cx).unwrap();
    assert!(cx.scale_rules.is_empty());
    assert_eq!(program.graph.to_string(), before.graph.to_string());
    for w in 0..program.graph.weights().len() {
        let id = ir::WeightId::new(w);
        assert_eq!(program.values(id), before.values(id));
    }
}

// ---------------------------------------------------------------------------------------------
// head_clusters on synthetic statistics.

fn is_permutation(p: &[usize], n: usize) -> bool {
    p.len() == n && p.iter().copied().collect::<BTreeSet<_>>() == (0..n).collect()
}

/// Checks every structural property of a clustering of `stats`.
fn check_clustering(c: &HeadClustering, stats: &[f32], head_dim: usize, groups: usize, m: usize, n: usize) {
    let heads = stats.len() / head_dim;
    let per_group = heads / groups;
    let (m, n) = (m.min(per_group), n.min(head_dim));
    assert_eq!((c.head_groups, c.dim_groups), (m, n));
    assert!(is_permutation(&c.channel_perm, stats.len()));
    assert!(is_permutation(&c.head_perm, heads));
    assert_eq!(c.group_of.len(), stats.len());
    for (j, &h) in c.head_perm.iter().enumerate() {
        assert_eq!(j / per_group, h / per_group, "head {h} left its SSD group");
        let new = &c.channel_perm[j * head_dim..(j + 1) * head_dim];
        assert!(new.iter().all(|&ch| ch / head_dim == h), "channels of new head {j} are not old head {h}'s");
        // Sorted ascending by statistic inside the head.
        assert!(new.windows(2).all(|w| stats[w[0]] <= stats[w[1]]), "head {h} is not sorted");
        // Dim groups are contiguous ranges of sorted positions: labels non-decreasing, and
        // one label per (group, head group, dim group).
        let labels = &c.group_of[j * head_dim..(j + 1) * head_dim];
        assert!(labels.windows(2).all(|w| w[0] <= w[1]));
        assert!(labels.iter().all(|&l| l / (m * n) == j / per_group));
    }
    assert_eq!(c.group_of.iter().collect::<BTreeSet<_>>().len(), groups * m * n);
    // Sizes agree with the labels: head groups are contiguous runs of heads sharing one pattern.
    assert_eq!(c.head_group_sizes.len(), groups);
    let mut j = 0;
    for (g, sizes) in c.head_group_sizes.iter().enumerate() {
        assert_eq!(sizes.len(), m);
        assert_eq!(sizes.iter().sum::<usize>(), per_group);
        for (k, &size) in sizes.iter().enumerate() {
            assert!(size > 0);
            let dims = &c.dim_group_sizes[g][k];
            assert_eq!(dims.len(), n);
            assert_eq!(dims.iter().sum::<usize>(), head_dim);
            let mut want = Vec::new();
            for (d, &len) in dims.iter().enumerate() {
                want.resize(want.len() + len, (g * m + k) * n + d);
            }
            for _ in 0..size {
                assert_eq!(&c.group_of[j * head_dim..(j + 1) * head_dim], want.as_slice());
                j += 1;
            }
        }
    }
}

fn random_stats(rng: &mut Rng, heads: usize, head_dim: usize) -> Vec<f32> {
    (0..heads * head_dim).map(|_| (3.0 * rng.sym(1.0)).exp()).collect()
}

#[test]
fn clusterings_are_well_formed() {
    let mut rng = Rng(1);
    for (heads, head_dim, groups, m, n) in [(8, 32, 1, 4, 4), (16, 8, 2, 4, 4), (8, 16, 4, 4, 4), (6, 3, 3, 4, 4), (12, 64, 1, 1, 1), (32, 16, 8, 3, 5)] {
        let stats = random_stats(&mut rng, heads, head_dim);
        let c = head_clusters(&stats, head_dim, groups, m, n);
        check_clustering(&c, &stats, head_dim, groups, m, n);
        // Deterministic.
        assert_eq!(c, head_clusters(&stats, head_dim, groups, m, n));
    }
}

#[test]
fn clustering_separates_two_kinds_of_heads() {
    // Per SSD group, eight heads of two kinds, interleaved: "flat" heads (every channel ≈ 1) and
    // "outlier" heads (most channels ≈ 0.01, a few ≈ 50).
    let (heads, head_dim, groups) = (16, 32, 2);
    let mut rng = Rng(3);
    let outlier_head = |h: usize| h % 2 == 1;
    let mut stats = Vec::new();
    for h in 0..heads {
        for c in 0..head_dim {
            let v = if !outlier_head(h) {
                1.0 + rng.sym(0.05)
            } else if c % 11 == 3 {
                50.0 + rng.sym(5.0)
            } else {
                0.01 + rng.sym(0.002)
            };
            stats.push(v);
        }
    }
    // m = 2: exactly the two kinds; m = 4: no head group mixes them.
    for m in [2, 4] {
        let c = head_clusters(&stats, head_dim, groups, m, 4);
        check_clustering(&c, &stats, head_dim, groups, m, 4);
        let mut start = 0;
        for sizes in &c.head_group_sizes {
            for &size in sizes {
                let kinds: BTreeSet<bool> = c.head_perm[start..start + size].iter().map(|&h| outlier_head(h)).collect();
                assert_eq!(kinds.len(), 1, "m = {m}: head group {:?} mixes kinds", &c.head_perm[start..start + size]);
                start += size;
            }
            if m == 2 {
                assert_eq!(sizes, &vec![4, 4]);
            }
        }
    }
    // Within an outlier head group no dim group mixes the small channels with the outliers
    // (the remaining cuts go where the squared-error objective puts them).
    let c = head_clusters(&stats, head_dim, groups, 2, 4);
    let outliers_per_head = (0..head_dim).filter(|c| c % 11 == 3).count();
    let j = c.head_perm.iter().position(|&h| outlier_head(h)).unwrap();
    let labels = &c.group_of[j * head_dim..(j + 1) * head_dim];
    let first_outlier = head_dim - outliers_per_head;
    assert_ne!(labels[first_outlier - 1], labels[first_outlier], "{labels:?}");
}
