//! Quamba2 sort-and-cluster of the SSM input x (Mamba2 only), with the offline weight
//! rearrangement that keeps the model's function unchanged.
//!
//! Per layer, from calibration statistics of x (the conv output after SiLU, split to `d_inner`):
//!
//! 1. `s[c]` = per channel, the max over calibration windows of the mean over tokens of |x|.
//! 2. Inside every SSD group (B/C group) each head's channels are sorted ascending by `s`; the
//!    group's heads are clustered into `m` head groups by Ward agglomerative clustering of their
//!    L2-normalised sorted statistic vectors, and reordered so each cluster is contiguous.
//! 3. Inside every head cluster the sorted channel positions are cut into `n` contiguous dim
//!    groups shared by the cluster's heads.
//! 4. The weights around x are permuted (in_proj z/x/dt rows, conv x channels, A_log, D,
//!    dt_bias, gated-norm weight, out_proj columns) so the block computes the same function with
//!    x, y, z and the gated-norm output in the new channel order.
//! 5. x gets a [`ScaleRule::Grouped`] rule: one scale per (SSD group, head group, dim group).
//!
//! **Dim groups.** The reference runs k-means over the sorted positions (features: the cluster's
//! heads' normalised sorted statistics, initial centres at 0, hd/4, hd/2, 3hd/4) and asserts that
//! the labels come out monotonic. Here the same objective — the sum of squared distances of each
//! position's feature vector to its group mean — is minimised *exactly over contiguous ranges* by
//! dynamic programming (1-D k-means restricted to segments). The result is contiguous by
//! construction (no monotonicity assertion can fail), is the global optimum of that restricted
//! problem rather than a local one, and is deterministic (ties go to the earliest cut).
//!
//! **Ordering and ties.** Ward merges the pair of clusters with the smallest merge cost
//! |A||B|/(|A|+|B|)·‖μ_A − μ_B‖², ties going to the pair whose smallest members come first.
//! Head clusters are laid out by mean statistic ascending (ties: smallest head first); heads
//! inside a cluster keep their original order; channels inside a head are sorted ascending by
//! statistic (ties: original order).
//!
//! **Invariance.** Heads only move inside their SSD group, so every head keeps its B/C group; the
//! gated RMSNorm normalises contiguous slices of `d_inner` that are unions of SSD-group slices
//! (checked), so each slice keeps its set of channels. The pass must run before an online
//! Hadamard is put in front of out_proj (it would see permuted channels); it refuses otherwise.
//! Mamba1 graphs are left untouched.

use std::collections::{HashMap, HashSet};

use ir::{Family, Graph, Op, ValueId, WeightId};

use super::blocks::{blocks, Block};
use super::{Pass, PassContext, ScaleRule};
use crate::calibrate::{calibrate, Request};
use crate::program::Program;
use crate::CompileError;

/// The sort-and-cluster pass (Quamba2 §4.1 + §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortClusterHeads {
    /// Head groups per SSD group (the paper's m; 4). Capped at the heads per SSD group.
    pub head_groups: usize,
    /// Dim groups per head group (the paper's n; 4). Capped at head_dim.
    pub dim_groups: usize,
}

impl Default for SortClusterHeads {
    fn default() -> Self {
        SortClusterHeads { head_groups: 4, dim_groups: 4 }
    }
}

/// The result of sorting and clustering one layer's x channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadClustering {
    /// New channel `i` takes old channel `channel_perm[i]` (length heads·head_dim).
    pub channel_perm: Vec<usize>,
    /// New head `j` is old head `head_perm[j]` (length heads).
    pub head_perm: Vec<usize>,
    /// Quantization group of every channel in the new order:
    /// `(ssd_group · m + head_group) · n + dim_group`, so `groups·m·n` distinct values.
    pub group_of: Vec<usize>,
    /// Heads in each head group, `[groups][m]`; the head groups of an SSD group are contiguous
    /// in the new head order.
    pub head_group_sizes: Vec<Vec<usize>>,
    /// Channels (sorted positions) in each dim group, `[groups][m][n]`; contiguous inside every
    /// head of that head group and summing to head_dim.
    pub dim_group_sizes: Vec<Vec<Vec<usize>>>,
    /// The effective number of head groups per SSD group (m capped at heads per group).
    pub head_groups: usize,
    /// The effective number of dim groups (n capped at head_dim).
    pub dim_groups: usize,
}

/// Sorts and clusters the channels of x from their statistics (steps 2–3 of the pass).
///
/// `stats` is `[heads, head_dim]` row-major (heads = `stats.len() / head_dim`); head `h` belongs
/// to SSD group `h / (heads / groups)`. `head_groups` (m) and `dim_groups` (n) are capped at the
/// heads per group and at head_dim, and raised to at least 1.
///
/// # Panics
/// If `head_dim` or `groups` is 0, `stats.len()` is not a multiple of `head_dim`, or the number of
/// heads is not a multiple of `groups`.
pub fn head_clusters(stats: &[f32], head_dim: usize, groups: usize, head_groups: usize, dim_groups: usize) -> HeadClustering {
    assert!(head_dim > 0 && groups > 0, "head_dim and groups must be positive");
    assert!(stats.len().is_multiple_of(head_dim), "{} statistics are not a whole number of {head_dim}-channel heads", stats.len());
    let heads = stats.len() / head_dim;
    assert!(heads.is_multiple_of(groups) && heads > 0, "{heads} heads do not split into {groups} SSD groups");
    let per_group = heads / groups;
    let m = head_groups.clamp(1, per_group);
    let n = dim_groups.clamp(1, head_dim);

    // Per head: the ascending channel order, the sorted stats and their L2-normalised copy.
    let head_stats = |h: usize| &stats[h * head_dim..(h + 1) * head_dim];
    let order: Vec<Vec<usize>> = (0..heads)
        .map(|h| {
            let s = head_stats(h);
            let mut idx: Vec<usize> = (0..head_dim).collect();
            idx.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
            idx
        })
        .collect();
    let normalised: Vec<Vec<f64>> = (0..heads)
        .map(|h| {
            let s = head_stats(h);
            let v: Vec<f64> = order[h].iter().map(|&c| finite(s[c])).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter().map(|x| x / norm).collect()
            } else {
                v
            }
        })
        .collect();

    let mut head_perm = Vec::with_capacity(heads);
    let mut channel_perm = Vec::with_capacity(heads * head_dim);
    let mut group_of = Vec::with_capacity(heads * head_dim);
    let mut head_group_sizes = Vec::with_capacity(groups);
    let mut dim_group_sizes = Vec::with_capacity(groups);
    for g in 0..groups {
        let members: Vec<usize> = (g * per_group..(g + 1) * per_group).collect();
        let points: Vec<&[f64]> = members.iter().map(|&h| normalised[h].as_slice()).collect();
        let mut clusters: Vec<Vec<usize>> = ward(&points, m).into_iter().map(|c| c.into_iter().map(|i| members[i]).collect()).collect();
        // Clusters by mean statistic ascending; `ward` returns them by smallest member, so the
        // stable sort breaks ties by smallest head.
        let mean = |c: &Vec<usize>| c.iter().flat_map(|&h| head_stats(h).iter().map(|&x| finite(x))).sum::<f64>() / (c.len() * head_dim) as f64;
        clusters.sort_by(|a, b| mean(a).total_cmp(&mean(b)));
        let mut sizes_g = Vec::with_capacity(m);
        let mut dims_g = Vec::with_capacity(m);
        for (k, cluster) in clusters.iter().enumerate() {
            let features: Vec<&[f64]> = cluster.iter().map(|&h| normalised[h].as_slice()).collect();
            let sizes = contiguous_segments(&features, head_dim, n);
            let mut label = Vec::with_capacity(head_dim);
            for (d, len) in sizes.iter().enumerate() {
                label.resize(label.len() + len, (g * m + k) * n + d);
            }
            for &h in cluster {
                head_perm.push(h);
                channel_perm.extend(order[h].iter().map(|&c| h * head_dim + c));
                group_of.extend_from_slice(&label);
            }
            sizes_g.push(cluster.len());
            dims_g.push(sizes);
        }
        head_group_sizes.push(sizes_g);
        dim_group_sizes.push(dims_g);
    }
    HeadClustering { channel_perm, head_perm, group_of, head_group_sizes, dim_group_sizes, head_groups: m, dim_groups: n }
}

fn finite(x: f32) -> f64 {
    if x.is_finite() {
        x as f64
    } else {
        0.0
    }
}

/// Ward agglomerative clustering of `points` (equal-length vectors) into `k` clusters
/// (1 ≤ k ≤ points). Returns the clusters as sorted member lists, ordered by smallest member.
fn ward(points: &[&[f64]], k: usize) -> Vec<Vec<usize>> {
    // (members, centroid); kept ordered by smallest member: merging the later cluster of a pair
    // into the earlier one preserves that order.
    let mut clusters: Vec<(Vec<usize>, Vec<f64>)> = points.iter().enumerate().map(|(i, p)| (vec![i], p.to_vec())).collect();
    while clusters.len() > k.max(1) {
        let mut best = (f64::INFINITY, 0, 1);
        for a in 0..clusters.len() {
            for b in a + 1..clusters.len() {
                let (na, nb) = (clusters[a].0.len() as f64, clusters[b].0.len() as f64);
                let d2: f64 = clusters[a].1.iter().zip(&clusters[b].1).map(|(x, y)| (x - y) * (x - y)).sum();
                let cost = na * nb / (na + nb) * d2;
                if cost < best.0 {
                    best = (cost, a, b);
                }
            }
        }
        let (_, a, b) = best;
        let (members_b, centroid_b) = clusters.remove(b);
        let (members_a, centroid_a) = &mut clusters[a];
        let (na, nb) = (members_a.len() as f64, members_b.len() as f64);
        for (ca, cb) in centroid_a.iter_mut().zip(&centroid_b) {
            *ca = (na * *ca + nb * cb) / (na + nb);
        }
        members_a.extend(members_b);
        members_a.sort_unstable();
    }
    clusters.into_iter().map(|(m, _)| m).collect()
}

/// Cuts positions `0..len` into `n` non-empty contiguous ranges minimising the total squared
/// distance of each position's feature vector (`features[j][p]` over the cluster's heads j) to
/// its range's mean. Exact dynamic programming; ties go to the earliest cut. Returns range lengths.
fn contiguous_segments(features: &[&[f64]], len: usize, n: usize) -> Vec<usize> {
    let n = n.clamp(1, len.max(1));
    if len == 0 {
        return vec![0; n];
    }
    // Prefix sums of the feature vectors and of their squared norms.
    let dims = features.len();
    let mut sum = vec![0.0f64; (len + 1) * dims];
    let mut sq = vec![0.0f64; len + 1];
    for p in 0..len {
        let mut s2 = 0.0;
        for j in 0..dims {
            let v = features[j][p];
            sum[(p + 1) * dims + j] = sum[p * dims + j] + v;
            s2 += v * v;
        }
        sq[p + 1] = sq[p] + s2;
    }
    let cost = |a: usize, b: usize| -> f64 {
        let cnt = (b - a) as f64;
        let mut norm2 = 0.0;
        for j in 0..dims {
            let s = sum[b * dims + j] - sum[a * dims + j];
            norm2 += s * s;
        }
        ((sq[b] - sq[a]) - norm2 / cnt).max(0.0)
    };
    // seg[a][b]: the cost of the range a..b (b > a).
    let seg: Vec<Vec<f64>> = (0..=len).map(|a| (0..=len).map(|b| if b > a { cost(a, b) } else { 0.0 }).collect()).collect();
    // dp[j][p]: best cost of p positions in j ranges; cut[j][p]: start of the last range.
    let mut dp = vec![vec![f64::INFINITY; len + 1]; n + 1];
    let mut cut = vec![vec![0usize; len + 1]; n + 1];
    dp[0][0] = 0.0;
    for j in 1..=n {
        for p in j..=len {
            for s in j - 1..p {
                let c = dp[j - 1][s] + seg[s][p];
                if c < dp[j][p] {
                    dp[j][p] = c;
                    cut[j][p] = s;
                }
            }
        }
    }
    let mut sizes = vec![0; n];
    let mut p = len;
    for j in (1..=n).rev() {
        let s = cut[j][p];
        sizes[j - 1] = p - s;
        p = s;
    }
    sizes
}

/// Where the channels of x live in one Mamba2 block's weights.
#[derive(Clone, Debug)]
struct Layout {
    heads: usize,
    head_dim: usize,
    groups: usize,
    in_proj: (WeightId, Option<WeightId>),
    /// in_proj output rows of z, of x (channel 0), of dt (head 0).
    z_row: usize,
    x_row: usize,
    dt_row: usize,
    conv: (WeightId, Option<WeightId>),
    /// conv channel of x channel 0.
    conv_x: usize,
    a_log: WeightId,
    d: WeightId,
    dt_bias: WeightId,
    norm: WeightId,
    out_proj: WeightId,
}

fn structure(layer: usize, msg: impl std::fmt::Display) -> CompileError {
    CompileError::Structure(format!("sort_cluster_heads, layer {layer}: {msg}"))
}

fn split_range(g: &Graph, v: ValueId) -> Option<(usize, usize)> {
    match g.node(v).op {
        Op::Split { start, end } => Some((start, end)),
        _ => None,
    }
}

/// Reads and checks a block: every value whose channel order the pass changes must be used only
/// where the rearrangement compensates for it.
fn layout(g: &Graph, b: &Block) -> Result<Layout, CompileError> {
    let err = |m: String| structure(b.layer, m);
    if let Some(h) = b.online_hadamard {
        return Err(err(format!("an online hadamard ({h}) already sits before out_proj; sort-and-cluster must run before the rotation pass")));
    }
    let Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, .. } = g.node(b.ssm).op else {
        return Err(err(format!("{} is `{}`, not ssd", b.ssm, g.node(b.ssm).op.name())));
    };
    let di = heads * head_dim;
    let Op::GatedRmsNorm { weight: norm, groups: norm_groups, .. } = g.node(b.gate).op else {
        return Err(err(format!("the gate {} is `{}`, not gated_rms_norm", b.gate, g.node(b.gate).op.name())));
    };
    if norm_groups == 0 || groups % norm_groups != 0 {
        return Err(err(format!("gated_rms_norm has {norm_groups} groups, which do not align with the {groups} SSD groups")));
    }
    let Op::Linear { weight: in_w, bias: in_b } = g.node(b.in_proj).op else {
        return Err(err(format!("in_proj {} is not a float linear", b.in_proj)));
    };
    let Op::Linear { weight: out_w, .. } = g.node(b.out_proj).op else {
        return Err(err(format!("out_proj {} is not a float linear", b.out_proj)));
    };
    let Op::CausalConv1d { weight: conv_w, bias: conv_b } = g.node(b.conv).op else {
        return Err(err(format!("{} is not causal_conv1d", b.conv)));
    };
    if !matches!(g.node(b.conv_act).op, Op::Activation { .. }) {
        return Err(err(format!("the conv output {} is `{}`, not a pointwise activation", b.conv_act, g.node(b.conv_act).op.name())));
    }
    let xbc = g.inputs(b.conv)[0];
    let ranged = |v: ValueId, parent: ValueId, width: usize, what: &str| -> Result<usize, CompileError> {
        match split_range(g, v) {
            Some((s, e)) if g.inputs(v)[0] == parent && e - s == width => Ok(s),
            _ => Err(err(format!("{what} {v} is not a {width}-channel split of {parent}"))),
        }
    };
    let z_row = ranged(b.z, b.in_proj, di, "z")?;
    let dt_row = ranged(b.dt, b.in_proj, heads, "dt")?;
    let (xbc_start, xbc_end) = split_range(g, xbc).filter(|_| g.inputs(xbc)[0] == b.in_proj).ok_or_else(|| err(format!("the conv input {xbc} is not a split of in_proj")))?;
    let conv_x = ranged(b.x, b.conv_act, di, "x")?;
    if conv_x + di > xbc_end - xbc_start {
        return Err(err("x lies outside the conv channels".into()));
    }
    let x_row = xbc_start + conv_x;

    // Users: in_proj's permuted rows are read only by z, the conv input and dt; the conv's x
    // channels only by x; z, x, dt, y and the gate output only by their one known consumer.
    let overlaps = |(s, e): (usize, usize), (a, len): (usize, usize)| s < a + len && a < e;
    for u in g.users(b.in_proj) {
        if u == b.z || u == xbc || u == b.dt {
            continue;
        }
        let r = split_range(g, u).ok_or_else(|| err(format!("in_proj is read by `{}` ({u}), which would see permuted rows", g.node(u).op.name())))?;
        if [(z_row, di), (x_row, di), (dt_row, heads)].iter().any(|p| overlaps(r, *p)) {
            return Err(err(format!("split {u} of in_proj overlaps permuted rows")));
        }
    }
    for u in g.users(b.conv_act) {
        if u == b.x {
            continue;
        }
        let r = split_range(g, u).ok_or_else(|| err(format!("the conv output is read by `{}` ({u}), which would see permuted channels", g.node(u).op.name())))?;
        if overlaps(r, (conv_x, di)) {
            return Err(err(format!("split {u} of the conv output overlaps x")));
        }
    }
    for (v, user, what) in [(xbc, b.conv, "the conv input"), (b.conv, b.conv_act, "the conv"), (b.z, b.gate, "z"), (b.x, b.ssm, "x"), (b.dt, b.ssm, "dt"), (b.ssm, b.gate, "the ssd output"), (b.gate, b.out_proj, "the gated norm output")] {
        if g.users(v) != [user] || g.outputs().contains(&v) {
            return Err(err(format!("{what} {v} has uses other than {user}")));
        }
    }
    Ok(Layout { heads, head_dim, groups, in_proj: (in_w, in_b), z_row, x_row, dt_row, conv: (conv_w, conv_b), conv_x, a_log, d, dt_bias, norm, out_proj: out_w })
}

/// Rows `offset..offset+perm.len()` of a row-major matrix with rows of `row` values: new row
/// `offset+i` takes old row `offset+perm[i]`.
fn permute_rows(values: &mut [f32], row: usize, offset: usize, perm: &[usize]) {
    let old: Vec<f32> = values[offset * row..(offset + perm.len()) * row].to_vec();
    for (i, &p) in perm.iter().enumerate() {
        values[(offset + i) * row..(offset + i + 1) * row].copy_from_slice(&old[p * row..(p + 1) * row]);
    }
}

fn rows_of(program: &Program, w: WeightId) -> (usize, usize) {
    let shape = &program.graph.weight(w).shape;
    let rows = shape.first().copied().unwrap_or(1);
    (rows, shape.iter().skip(1).product())
}

/// Permutes one block's weights so that x, z, the SSD output and the gated-norm output come in
/// the order `channel_perm` (new channel i = old channel `channel_perm[i]`) with heads in the
/// order `head_perm`, leaving the block's function unchanged. The permutations must be
/// bijective, keep every head inside its SSD group, and move whole heads
/// (`channel_perm[i] / head_dim == head_perm[i / head_dim]`).
pub fn rearrange(program: &mut Program, block: &Block, channel_perm: &[usize], head_perm: &[usize]) -> Result<(), CompileError> {
    let l = layout(&program.graph, block)?;
    check_permutations(&l, block.layer, channel_perm, head_perm)?;
    apply(program, &l, block.layer, channel_perm, head_perm)
}

fn check_permutations(l: &Layout, layer: usize, perm: &[usize], hperm: &[usize]) -> Result<(), CompileError> {
    let di = l.heads * l.head_dim;
    let bijective = |p: &[usize], n: usize| {
        let mut seen = vec![false; n];
        p.len() == n && p.iter().all(|&i| i < n && !std::mem::replace(&mut seen[i], true))
    };
    if !bijective(perm, di) || !bijective(hperm, l.heads) {
        return Err(structure(layer, "channel or head permutation is not a bijection of the right length"));
    }
    let per_group = l.heads / l.groups;
    if hperm.iter().enumerate().any(|(j, &h)| j / per_group != h / per_group) {
        return Err(structure(layer, "a head would leave its SSD group"));
    }
    if perm.iter().enumerate().any(|(i, &c)| c / l.head_dim != hperm[i / l.head_dim]) {
        return Err(structure(layer, "the channel permutation does not move whole heads as the head permutation says"));
    }
    Ok(())
}

fn apply(program: &mut Program, l: &Layout, layer: usize, perm: &[usize], hperm: &[usize]) -> Result<(), CompileError> {
    let di = l.heads * l.head_dim;
    let bad_shape = |what: &str, w: WeightId, p: &Program| structure(layer, format!("{what} {w} has shape {:?}", p.graph.weight(w).shape));

    // in_proj rows (weight [out, in], bias [out]).
    let (in_w, in_b) = l.in_proj;
    let (rows, cols) = rows_of(program, in_w);
    if rows < l.z_row.max(l.x_row) + di || rows < l.dt_row + l.heads {
        return Err(bad_shape("in_proj weight", in_w, program));
    }
    for w in std::iter::once(in_w).chain(in_b) {
        let row = if w == in_w { cols } else { 1 };
        let mut v = program.take_values(w);
        if v.len() != rows * row {
            return Err(bad_shape(if w == in_w { "in_proj weight" } else { "in_proj bias" }, w, program));
        }
        permute_rows(&mut v, row, l.z_row, perm);
        permute_rows(&mut v, row, l.x_row, perm);
        permute_rows(&mut v, row, l.dt_row, hperm);
        program.set_values(w, v);
    }

    // conv channels (weight [C, 1, K], bias [C]).
    let (conv_w, conv_b) = l.conv;
    let (channels, kernel) = rows_of(program, conv_w);
    if channels < l.conv_x + di {
        return Err(bad_shape("conv weight", conv_w, program));
    }
    for w in std::iter::once(conv_w).chain(conv_b) {
        let row = if w == conv_w { kernel } else { 1 };
        let mut v = program.take_values(w);
        if v.len() != channels * row {
            return Err(bad_shape(if w == conv_w { "conv weight" } else { "conv bias" }, w, program));
        }
        permute_rows(&mut v, row, l.conv_x, perm);
        program.set_values(w, v);
    }

    // Per-head parameters (D may also be per channel), and the gated-norm weight (per channel).
    for (w, what, per_channel_ok, per_head_ok) in [(l.a_log, "A_log", false, true), (l.dt_bias, "dt_bias", false, true), (l.d, "D", true, true), (l.norm, "gated norm weight", true, false)] {
        let mut v = program.take_values(w);
        let p = if per_head_ok && v.len() == l.heads {
            hperm
        } else if per_channel_ok && v.len() == di {
            perm
        } else {
            return Err(bad_shape(what, w, program));
        };
        permute_rows(&mut v, 1, 0, p);
        program.set_values(w, v);
    }

    // out_proj input columns (weight [out, d_inner]).
    let (out_rows, in_dim) = rows_of(program, l.out_proj);
    if in_dim != di {
        return Err(bad_shape("out_proj weight", l.out_proj, program));
    }
    let old = program.values(l.out_proj).to_vec();
    let mut v = vec![0.0f32; old.len()];
    for r in 0..out_rows {
        let (src, dst) = (&old[r * di..(r + 1) * di], &mut v[r * di..(r + 1) * di]);
        for (d, &p) in dst.iter_mut().zip(perm) {
            *d = src[p];
        }
    }
    program.set_values(l.out_proj, v);
    Ok(())
}

/// One layer's clustering, as [`SortClusterHeads::plan`] decides it.
#[derive(Clone, Debug)]
pub struct LayerPlan {
    /// The block.
    pub block: Block,
    /// The per-channel statistic of x (old channel order) the clustering used.
    pub stats: Vec<f32>,
    /// The clustering.
    pub clustering: HeadClustering,
}

impl SortClusterHeads {
    /// Calibrates x of every block once and clusters each layer, without changing the program.
    /// Mamba1 programs give no plans.
    pub fn plan(&self, program: &Program, cx: &PassContext) -> Result<Vec<LayerPlan>, CompileError> {
        if program.graph.family != Family::Mamba2 {
            return Ok(Vec::new());
        }
        let blocks = blocks(&program.graph)?;
        let layouts: Vec<Layout> = blocks.iter().map(|b| layout(&program.graph, b)).collect::<Result<_, _>>()?;
        // Each layer's weights are rewritten once; a weight shared between layers would be permuted twice.
        let mut seen = HashSet::new();
        for (b, l) in blocks.iter().zip(&layouts) {
            let ids = [Some(l.in_proj.0), l.in_proj.1, Some(l.conv.0), l.conv.1, Some(l.a_log), Some(l.d), Some(l.dt_bias), Some(l.norm), Some(l.out_proj)];
            for w in ids.into_iter().flatten() {
                if !seen.insert(w) {
                    return Err(structure(b.layer, format!("weight {w} is shared with another layer or role")));
                }
            }
        }
        if cx.calib.windows.is_empty() {
            return Err(CompileError::Calibration("sort_cluster_heads needs at least one calibration window".into()));
        }
        let requests: HashMap<ValueId, Request> = blocks.iter().map(|b| (b.x, Request::default())).collect();
        let mut stats = calibrate(program, &cx.calib, &requests, cx.progress, "sort-and-cluster statistics")?;
        blocks
            .into_iter()
            .zip(layouts)
            .map(|(block, l)| {
                let s = stats.remove(&block.x).map(|s| s.channel_meanabs_max).unwrap_or_default();
                if s.len() != l.heads * l.head_dim {
                    return Err(CompileError::Calibration(format!("layer {}: x was not observed ({} channel statistics)", block.layer, s.len())));
                }
                let clustering = head_clusters(&s, l.head_dim, l.groups, self.head_groups, self.dim_groups);
                Ok(LayerPlan { block, stats: s, clustering })
            })
            .collect()
    }
}

impl Pass for SortClusterHeads {
    fn name(&self) -> &'static str {
        "sort_cluster_heads"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        for plan in self.plan(program, cx)? {
            let c = plan.clustering;
            rearrange(program, &plan.block, &c.channel_perm, &c.head_perm)?;
            cx.scale_rules.insert(plan.block.x, ScaleRule::Grouped { group_of: c.group_of });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(features: &[&[f64]], len: usize, n: usize) -> f64 {
        // Every way to choose n-1 cuts among len-1 gaps.
        fn rec(features: &[&[f64]], start: usize, len: usize, left: usize, acc: f64, best: &mut f64) {
            if left == 1 {
                *best = best.min(acc + sse(features, start, len));
                return;
            }
            for end in start + 1..=len - (left - 1) {
                rec(features, end, len, left - 1, acc + sse(features, start, end), best);
            }
        }
        let mut best = f64::INFINITY;
        rec(features, 0, len, n, 0.0, &mut best);
        best
    }

    fn sse(features: &[&[f64]], a: usize, b: usize) -> f64 {
        features
            .iter()
            .map(|f| {
                let mean = f[a..b].iter().sum::<f64>() / (b - a) as f64;
                f[a..b].iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn segmentation_is_optimal() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for len in [4usize, 7, 10] {
            let a: Vec<f64> = (0..len).map(|_| rnd()).collect();
            let b: Vec<f64> = (0..len).map(|_| rnd()).collect();
            let features = [a.as_slice(), b.as_slice()];
            for n in 1..=4.min(len) {
                let sizes = contiguous_segments(&features, len, n);
                assert_eq!(sizes.iter().sum::<usize>(), len);
                assert!(sizes.iter().all(|&s| s > 0));
                let mut start = 0;
                let got: f64 = sizes
                    .iter()
                    .map(|s| {
                        let c = sse(&features, start, start + s);
                        start += s;
                        c
                    })
                    .sum();
                let want = brute_force(&features, len, n);
                assert!((got - want).abs() < 1e-9, "len {len} n {n}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn ward_merges_nearest_first() {
        let pts: Vec<Vec<f64>> = vec![vec![0.0], vec![10.0], vec![0.1], vec![10.2], vec![5.0]];
        let refs: Vec<&[f64]> = pts.iter().map(|p| p.as_slice()).collect();
        assert_eq!(ward(&refs, 3), vec![vec![0, 2], vec![1, 3], vec![4]]);
        assert_eq!(ward(&refs, 5).len(), 5);
        assert_eq!(ward(&refs, 1), vec![vec![0, 1, 2, 3, 4]]);
    }
}
