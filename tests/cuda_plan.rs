//! The CUDA plan of the embedded mamba2-tiny, FP and quantized: the generated source is pinned
//! (insta), and the buffer plan is checked to never hand a live buffer's slot to another.

mod common;

use std::collections::HashMap;

use common::cuda_plans::{mamba1_plan_of, mamba2_split_plan_of, plan_of_checkpoint};
use kernels::cuda::{Arg, CudaPlan, WeightUpload};

fn plan_of(target: Option<&str>) -> CudaPlan {
    plan_of_checkpoint(&compiler::model::default_model_dir(), target)
}

/// The source of entry point `name` in `p`, up to its closing brace.
fn entry_source(p: &CudaPlan, name: &str) -> String {
    let at = p.source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("{name} in the source"));
    p.source[at..].split("\n}\n").next().unwrap().to_string()
}

/// `p`'s source compiles with NVRTC for `arch` ("{what} {arch}" in messages), every kernel a
/// launch may run is in the PTX, and nothing spills to local memory. False where no NVRTC loads
/// (an error where QUAMBA_REQUIRE_NVRTC is set).
fn assert_plan_compiles(p: &CudaPlan, arch: &'static str, what: &str) -> bool {
    if !runtime::cuda::nvrtc_available() {
        assert!(std::env::var("QUAMBA_REQUIRE_NVRTC").is_err(), "QUAMBA_REQUIRE_NVRTC is set but libnvrtc cannot be loaded");
        return false;
    }
    let ptx = runtime::cuda::compile_ptx(&p.source, arch).unwrap_or_else(|e| panic!("{what} {arch}: {e}"));
    for k in p.launches.iter().flat_map(|l| l.kernels()) {
        assert!(ptx.contains(&format!(".entry {}(", k.name)), "{what} {arch}: {} missing from the PTX", k.name);
    }
    assert!(!ptx.contains("ld.local") && !ptx.contains("st.local"), "{what} {arch}: a kernel spills to local memory");
    true
}

/// Walks the launches in order: every buffer a launch reads must still own its slot (no later
/// buffer was placed there in between), and buffers of one slot share its dtype.
fn assert_slots_sound(p: &CudaPlan) {
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for (i, launch) in p.launches.iter().enumerate() {
        let bufs: Vec<usize> = launch
            .args
            .iter()
            .filter_map(|a| match a {
                Arg::Buffer { buffer, .. } | Arg::RowsInput { buffer, .. } => Some(*buffer),
                Arg::Operand(o) if o.stride > 0 => Some(o.buffer),
                Arg::ConvStep(Some(step)) => Some(step.out),
                _ => None,
            })
            .chain(launch.args.iter().filter_map(|a| match a {
                Arg::ConvStep(Some(step)) => step.quantized.as_ref().map(|q| q.buffer),
                _ => None,
            }))
            .collect();
        // The output is the last buffer argument of every generated entry point except products,
        // whose output precedes `ldo` and `M`; find writes as the buffers seen for the first time.
        for b in &bufs {
            let slot = p.buffers[*b].slot;
            match owner.get(&slot) {
                Some(o) if o == b => {}
                _ => {
                    // First sight of this buffer: it must be written here, not read.
                    assert!(!owner.values().any(|x| x == b), "launch {i} ({}) reads buffer {b} after its slot was reused", launch.value);
                    owner.insert(slot, *b);
                }
            }
        }
    }
    for b in &p.buffers {
        if b.slot != usize::MAX {
            let same: Vec<bool> = p.buffers.iter().filter(|x| x.slot == b.slot).map(|x| x.int8).collect();
            assert!(same.iter().all(|x| *x == b.int8), "slot {} mixes int8 and f32 buffers", b.slot);
        }
    }
}

#[test]
fn fp16_plan_is_pinned_and_sound() {
    let p = plan_of(None);
    assert_slots_sound(&p);
    assert!(p.launches.last().unwrap().head, "the last launch computes the logits");
    assert!(p.weights.iter().any(|w| matches!(w, WeightUpload::Packed { kind: 0, .. })), "FP weights go to the f16 layout");
    insta::assert_snapshot!("mamba2_tiny_fp16_launches", p.describe());
    insta::assert_snapshot!("mamba2_tiny_fp16_source", p.generated_source());
}

#[test]
fn quantized_plans_are_pinned_and_sound() {
    for (target, kinds) in [("h100-w8a8", vec![2u8]), ("h100-w4a8", vec![3]), ("h100-w4a16", vec![1])] {
        let p = plan_of(Some(target));
        assert_slots_sound(&p);
        for k in kinds {
            assert!(p.weights.iter().any(|w| matches!(w, WeightUpload::Packed { kind, .. } if *kind == k)), "{target} uses layout {k}");
        }
        // Per layer: norm+quantize, in_proj, conv, ssd, gated-norm+hadamard+quantize, out_proj+residual.
        let per_layer = p.launches.iter().filter(|l| l.kernel.name.starts_with("ssd")).count();
        assert_eq!(per_layer, 4, "{target}: one SSD launch per layer");
        // A one-row in_proj runs each layer's conv step (its GEMV's epilogue writes the conv's
        // output and state), so a decode step has no conv launch.
        for (i, conv) in p.launches.iter().enumerate().filter(|(_, l)| l.kernel.name.starts_with("conv_")) {
            assert!(conv.skip_one_row, "{target}: {}", conv.value);
            let Some(Arg::Buffer { buffer: out, .. }) = conv.args.get(4) else { panic!("{target}: a conv launch writes its output 5th") };
            let steps: Vec<usize> = p.launches.iter().enumerate().filter(|(_, l)| l.args.iter().any(|a| matches!(a, Arg::ConvStep(Some(s)) if s.out == *out))).map(|(j, _)| j).collect();
            assert_eq!(steps.len(), 1, "{target}: one product runs {}'s step", conv.value);
            assert!(steps[0] < i && p.launches[steps[0]].kernel.name.starts_with("gemv_"), "{target}: the GEMV before it");
        }
        // A one-row in_proj runs the layer's input norm before it too (then quantize, or for
        // W4A16's f32 activations the f16 conversion).
        let folded_norms: Vec<usize> = (0..p.launches.len()).filter(|i| p.launches[*i].skip_one_row && p.launches[*i].kernel.name.starts_with("rows_")).collect();
        assert_eq!(folded_norms.len(), per_layer, "{target}: one folded norm per layer");
        for i in folded_norms {
            assert_norm_folded(&p, i);
        }
        insta::assert_snapshot!(format!("mamba2_tiny_{target}_launches"), p.describe());
        insta::assert_snapshot!(format!("mamba2_tiny_{target}_source"), p.generated_source());
    }
}

/// A Mamba1 decode step at one row runs six launches per layer with int8 activations: the input
/// norm (W4A8: run by in_proj's bulk GEMV instead), in_proj (with the conv step and the conv
/// output's quantize), x_proj, the scan (with dt_proj's product), the gate → Hadamard → quantize
/// chain, out_proj. W4A16 runs five, as W4A8 (its chain stores f32, and its bulk in_proj runs
/// the input norm and the conv step); FP16 seven (no one-row GEMV). Every launch a one-row call leaves out has its work done by exactly one other
/// launch: a conv or quantize by the GEMV before it, the input norm by the GEMV after it, dt_proj
/// (and its input's materialization) by the scan after it.
#[test]
fn mamba1_one_row_launches_fold_into_their_neighbours() {
    for (target, per_layer) in [(Some("h100-w4a8"), 5), (Some("h100-w8a8"), 6), (Some("h100-w4a16"), 5), (None, 7)] {
        let p = mamba1_plan_of(target);
        assert_slots_sound(&p);
        let entry = |name: &str| entry_source(&p, name);
        let layer = p.launches.iter().position(|l| l.kernel.name.starts_with("rows_")).unwrap();
        let head = p.launches.iter().position(|l| l.head).unwrap();
        let one_row: Vec<&str> = p.launches[layer..head].iter().filter(|l| !l.skip_one_row).map(|l| l.kernel.name.as_str()).collect();
        // The layer, then the final norm (the launch before the head).
        assert_eq!(one_row.len(), per_layer + 1, "{target:?}: one-row launches {one_row:?}");
        for (i, l) in p.launches.iter().enumerate().filter(|(_, l)| l.skip_one_row) {
            let Some(Arg::Buffer { buffer: out, .. }) = l.args.iter().rev().find(|a| matches!(a, Arg::Buffer { .. })) else { panic!("{}: an output", l.value) };
            let name = &l.kernel.name;
            let by_conv_step = |q: bool| {
                p.launches[..i].iter().filter(|g| g.args.iter().any(|a| matches!(a, Arg::ConvStep(Some(s)) if if q { s.quantized.as_ref().is_some_and(|x| x.buffer == *out) } else { s.out == *out }))).count()
            };
            if name.starts_with("conv_") {
                assert_eq!(by_conv_step(false), 1, "{target:?}: {}", l.value);
            } else if name.starts_with("quantize_") {
                assert_eq!(by_conv_step(true), 1, "{target:?}: {}", l.value);
            } else if name.starts_with("rows_") {
                assert_norm_folded(&p, i);
            } else {
                // dt_proj's product or the materialization of its input: the next scan launch
                // computes it at one row, from that input.
                assert!(name.starts_with("gemm_") || name.starts_with("ew_"), "{target:?}: {name} skipped");
                let scan = p.launches[i + 1..].iter().find(|s| s.kernel.name.starts_with("scan_")).expect("a scan after it");
                assert!(entry(&scan.kernel.name).contains("quamba::selective_step_dt<"), "{target:?}: {}", scan.kernel.name);
                assert!(scan.batched.is_some() && scan.large.is_some(), "more rows run the plain scan");
            }
        }
        // The gate joins the Hadamard chain wherever there is one, which splits by Hadamard block.
        if target.is_some_and(|t| t != "h100-w4a16") {
            assert!(p.source.contains("quamba::hadamard_quantize<384, 128, 128, true>("), "{target:?}: the gate in the split Hadamard chain");
            assert!(!p.source.contains("quamba::elementwise<384, 4>"), "{target:?}: no gate launch");
        }
        if target == Some("h100-w4a8") {
            insta::assert_snapshot!("mamba1_random_h100-w4a8_launches", p.describe());
            insta::assert_snapshot!("mamba1_random_h100-w4a8_source", p.generated_source());
        }
    }
}

/// At one row, the SSD step of a Mamba2 layer whose gated norm chain splits by Hadamard block
/// gates its own output for that chain and sums its squares per block
/// (`quamba::ssd_scan<…, true>`), and the chain then only adds up those sums
/// (`quamba::pregated_hadamard_quantize`): the SSD passes the chain's operands (its `x`, the SSD's
/// own output, and its gate `z`, each with the chain's fake quantization) and writes the partial sums into a
/// buffer of its twelve blocks per row, which the chain reads in `w1`. Calls of more rows keep
/// the plain step and the split chain (a three-block cluster on sm_90). The chain quantizes for
/// the int8-activation configs and stores f32 for W4A16. Everything compiles for every target
/// GPU without spills, and the generated source is pinned.
#[test]
fn mamba2_one_row_ssd_gates_for_its_split_chain() {
    if std::env::var("QUAMBA_CUDA_GATE_IN_SSD").is_ok() || std::env::var("QUAMBA_CUDA_ROW_SPLIT").is_ok() || std::env::var("QUAMBA_CUDA_CLUSTER").is_ok() {
        return; // the knobs override the rule
    }
    for target in ["h100-w4a8", "h100-w8a8", "h100-w4a16"] {
        let p = mamba2_split_plan_of(target);
        assert_slots_sound(&p);
        let entry = |name: &str| entry_source(&p, name);
        let ssd_at = p.launches.iter().position(|l| l.kernel.name.starts_with("ssd_")).expect("an SSD launch");
        let ssd = &p.launches[ssd_at];
        // W4A16 keeps an f32 state; the int8-activation configs an int8 one.
        let (state, output) = if target == "h100-w4a16" { ("0, 0, false", "out_f, 384") } else { ("32, 1024, true", "out_q, q_stride") };
        assert!(entry(&ssd.kernel.name).contains(&format!("quamba::ssd_scan<12, 32, 1, 32, 2, 32, {state}, true>(")), "{target}: the one-row step gates: {}", entry(&ssd.kernel.name));
        let plain = ssd.batched.as_ref().expect("more rows run the plain step");
        assert!(entry(&plain.name).contains(&format!("quamba::ssd_scan<12, 32, 1, 32, 2, 32, {state}>(")), "{target}: {}", entry(&plain.name));
        // A prefill runs its own kernel: with an int8 state `ssd_scan`'s, which requests each TB
        // steps' inputs ahead; with an f32 state `ssd_prefill` (W4A16's B and C are not
        // quantized: nothing runs before it).
        let prefill = ssd.large.as_ref().expect("a prefill kernel");
        if target == "h100-w4a16" {
            assert!(entry(&prefill.name).contains("quamba::ssd_prefill<12, 32, 1, 32, 4, 4>("), "{target}: {}", entry(&prefill.name));
            assert!(ssd.then_large.is_none(), "{target}: nothing after the prefill kernel");
        } else {
            assert!(entry(&prefill.name).contains(&format!("quamba::ssd_scan<12, 32, 1, 32, 2, 32, {state}, false, true>(")), "{target}: {}", entry(&prefill.name));
        }
        let n = ssd.args.len();
        let (Arg::Operand(chain_x), Arg::Operand(chain_z)) = (&ssd.args[n - 3], &ssd.args[n - 2]) else { panic!("{target}: the SSD takes the chain's operands") };
        let Arg::Buffer { buffer: partials, .. } = ssd.args[n - 1] else { panic!("{target}: the SSD writes partial sums") };
        assert_eq!(p.buffers[partials].row_bytes, 12 * 4, "{target}: one sum per SSD block of a row");
        let Some(Arg::Buffer { buffer: ssd_out, .. }) = ssd.args.get(12) else { panic!("{target}: the SSD's output") };
        assert_eq!(chain_x.buffer, *ssd_out, "{target}: the chain's input is the SSD's output");
        let rows = p.launches[ssd_at + 1..].iter().find(|l| l.kernel.name.starts_with("rows_")).expect("the chain after the SSD");
        assert!(entry(&rows.kernel.name).contains(&format!("quamba::pregated_hadamard_quantize<384, 1, 128, 128, 12>(x, w1, k, 1e-5f, {output},")), "{target}: {}", entry(&rows.kernel.name));
        assert_eq!(rows.args[3], Arg::Buffer { buffer: partials, offset: 0 }, "{target}: the chain reads the partial sums in w1");
        assert_eq!(rows.args[0], Arg::Operand(chain_x.clone()), "{target}: the chain's x");
        assert_eq!(rows.args[1], Arg::Operand(chain_z.clone()), "{target}: the chain's z");
        let split = rows.batched.as_ref().expect("more rows run the split chain");
        assert!(entry(&split.name).contains(&format!("quamba::gated_hadamard_quantize<384, 1, 128, 128, 3>(x, z, k, 1e-5f, {output},")), "{target}: {}", entry(&split.name));
        assert_eq!(rows.kernel.grid, split.grid, "{target}: one block per Hadamard block either way");
        // A prefill's rows run one block each, which reads its row once.
        let whole = rows.large.as_ref().expect("a prefill chain");
        assert_eq!(whole.grid, kernels::cuda::Grid::Rows, "{target}: one block per row");
        let body = entry(&whole.name);
        assert!(body.contains("quamba::row_gated_norm<384, 1,") && body.contains("quamba::row_hadamard<384,"), "{target}: {body}");
        for arch in ["sm_90", "sm_87", "sm_86"] {
            assert_plan_compiles(&p, arch, target);
        }
        if target == "h100-w4a8" {
            insta::assert_snapshot!("mamba2_split_random_h100-w4a8_launches", p.describe());
            insta::assert_snapshot!("mamba2_split_random_h100-w4a8_source", p.generated_source());
        }
    }
}

/// A prefill's SSD with an f32 state runs `quamba::ssd_prefill`. Where B and C are
/// fake-quantized (W4A8, W8A8), `quamba::fake_quantize_bc` runs first, with the same arguments,
/// and quantizes them in place once for every head (the scan then reads them as stored); FP16's
/// and W4A16's run the scan alone.
#[test]
fn ssd_prefill_quantizes_b_and_c_once() {
    if std::env::var("QUAMBA_CUDA_SSD_PREFILL_ROWS").is_ok() {
        return; // the knob overrides the rule
    }
    // (head_dim, d_state): four rows a warp and four warps where whole lanes and 16-row blocks
    // fit; the older kernel elsewhere.
    use kernels::cuda::codegen::ssd_prefill_rows;
    assert_eq!(ssd_prefill_rows(64, 128), Some((4, 4)), "mamba2-2.7b and mamba2-8b");
    assert_eq!(ssd_prefill_rows(64, 64), Some((4, 4)), "mamba2-small");
    assert_eq!(ssd_prefill_rows(32, 32), Some((4, 4)), "mamba2-tiny");
    assert_eq!(ssd_prefill_rows(24, 128), None, "rows that do not fill a block");
    assert_eq!(ssd_prefill_rows(64, 16), None, "fewer states than lanes");
    for (target, quantized) in [(None, false), (Some("h100-w4a8"), true), (Some("h100-w8a8"), true), (Some("h100-w4a16"), false)] {
        let p = plan_of(target);
        let ssd = p.launches.iter().find(|l| l.kernel.name.starts_with("ssd_")).expect("an SSD launch");
        let large = ssd.large.as_ref().expect("a prefill kernel");
        let scan = match &ssd.then_large {
            Some((scan, args)) => {
                assert!(quantized, "{target:?}: a kernel before the scan");
                assert!(entry_source(&p, &large.name).contains("quamba::fake_quantize_bc<32>(b, c, "), "{target:?}: {}", entry_source(&p, &large.name));
                assert_eq!(args[..4], ssd.args[..4], "{target:?}: the same operands");
                assert!(matches!((&args[2], &args[3]), (Arg::Operand(b), Arg::Operand(c)) if b.scale.is_some() && c.scale.is_some()), "{target:?}: B and C quantized");
                scan
            }
            None => {
                assert!(!quantized, "{target:?}: B and C are quantized first");
                large
            }
        };
        // The embedded model's 8 heads of 32 rows, 32 states each: four rows a warp, four warps.
        assert!(entry_source(&p, &scan.name).contains("quamba::ssd_prefill<8, 32, 1, 32, 4, 4>("), "{target:?}: {}", entry_source(&p, &scan.name));
    }
}

/// Launch `rows` (skipped at one row) is an RMS norm → quantize whose int8 output only the next
/// launch reads, a one-row GEMV that runs the same norm on the same row (its `quamba::RowNorm`)
/// with the row kernel's thread count.
fn assert_norm_folded(p: &CudaPlan, rows: usize) {
    let norm = &p.launches[rows];
    let product = &p.launches[rows + 1];
    // A row kernel writes its int8 output 9th, or its f32 one 8th.
    let out = match (norm.args.get(7), norm.args.get(8)) {
        (_, Some(Arg::Buffer { buffer, .. })) | (Some(Arg::Buffer { buffer, .. }), _) => *buffer,
        _ => panic!("{}: a row kernel writes its output 9th (int8) or 8th (f32)", norm.value),
    };
    let readers: Vec<&str> = p.launches.iter().filter(|l| l.args.iter().any(|a| matches!(a, Arg::RowsInput { buffer, .. } if *buffer == out))).map(|l| l.value.as_str()).collect();
    assert_eq!(readers, [product.value.as_str()], "{}: only the product reads the norm's output", norm.value);
    let Some(Arg::RowNorm(Some(folded))) = product.args.last() else { panic!("{}: the product after {} runs its norm", product.value, norm.value) };
    assert_eq!(Some(&Arg::Operand(folded.x.clone())), norm.args.first(), "{}: the norm's row", product.value);
    assert!(product.kernel.name.starts_with("gemv_") && !product.skip_one_row, "{}: a one-row GEMV", product.value);
    let body = entry_source(p, &product.kernel.name);
    let threads = norm.kernel.block;
    assert!(body.contains(&format!(", {threads}, {}, {}>(", folded.weight.is_some(), folded.per_column)), "{}: plays the row kernel's {threads} threads: {body}", product.value);
}

/// Programmatic dependent launch lets a kernel start before its predecessor finishes; that is
/// only sound because every entry point waits (`quamba::pdl_enter`) before it reads an
/// activation or writes anything. Products do it inside `quamba::gemm`, after requesting weights
/// (a one-row product with a conv step also loads its conv columns' operands first: weights, and
/// a state whose last writer has completed, see `quamba::ld_state`).
#[test]
fn every_entry_point_waits_for_its_predecessor() {
    let plans = [plan_of(None), plan_of(Some("h100-w8a8")), plan_of(Some("h100-w4a8")), plan_of(Some("h100-w4a16"))];
    for p in &plans {
        let entries: Vec<&str> = p.source.split("extern \"C\" __global__").skip(1).collect();
        assert!(entries.len() >= p.launches.len().min(8), "entry points found in the source");
        for e in entries {
            let body = &e[e.find('{').expect("an entry has a body")..];
            let first = body[1..].trim_start();
            // The timeline hook first (empty unless built with QUAMBA_TRACE: it only reads a clock).
            let first = first.strip_prefix("QUAMBA_TRACE_BEGIN;").map_or(first, str::trim_start);
            // A split row chain first loads its constants (`quamba::segment_consts`: weights and
            // scales, which never change), then waits.
            let first = match first.strip_prefix("const auto k = quamba::") {
                Some(consts) if consts.starts_with("split_consts<") || consts.starts_with("segment_consts<") => {
                    let rest = consts[consts.find(";\n").expect("one statement") + 1..].trim_start();
                    rest.strip_prefix("const float qscale0 = qvec ? 0.f : qscale[0];").map_or(rest, str::trim_start)
                }
                _ => first,
            };
            let waits = ["quamba::pdl_enter();", "quamba::gemm<", "quamba::gemm_tiled<", "quamba::gemv<", "quamba::gemv_stream<", "quamba::ssd_scan<", "quamba::ssd_prefill<", "quamba::fake_quantize_bc<", "quamba::selective_scan<"]
                .iter()
                .any(|w| first.starts_with(w));
            assert!(waits, "an entry point does not start by waiting for its predecessor:\n{}", &e[..e.len().min(300)]);
        }
    }
    // The templates that wait themselves (after requesting weights, or a scan's own state) touch
    // activations and outputs only after the wait.
    let library = kernels::cuda::codegen::LIBRARY;
    let templates: [(&str, &[&str]); 9] = [
        ("QDEV void gemm(", &["stage_a<", "a_frag<KIND, VEC>(A", "resid[", "out[(i64)m * ldo + n] ="]),
        ("QDEV void gemm_tiled(", &["load_slab(", "resid[", "out[(i64)m * ldo + n] ="]),
        ("QDEV void gemv(", &["stage_row<", "norm_quantize_permuted<", "norm_half_permuted<", "resid[", "out[(i64)m * ldo + n] = v", "conv_column_step<"]),
        ("QDEV void gemv_stream(", &["stage_row<", "bias[n]", "resid[", "store_column<", "conv_column_step<", "out[(i64)m * ldo + own_n] = v"]),
        ("QDEV void ssd_scan(", &["Bm.p[", "x.p[", "dt.p[", "chain_z.p[", "fetch(0)", "cached.values(", "out[", "cached.store(state", "partials["]),
        ("QDEV void ssd_prefill(", &["request(0, 0)", "out[", "rows[r].store(state"]),
        ("QDEV void fake_quantize_bc(", &["*p ="]),
        ("QDEV void selective_scan(", &["Bm.p[", "x.p[", "dt.p[", "fetch(0)", "cached.values(", "out[", "cached.store(state"]),
        ("QDEV void selective_step_dt(", &["copy_f32(&sB", "x.p[d]", "copy_f32(&sA", "cached.values(", "out[", "cached.store(state"]),
    ];
    for (signature, touches) in templates {
        let start = library.find(signature).expect(signature);
        let rest = &library[start + 1..];
        let end = ["\nQDEV ", "\ntemplate"].iter().filter_map(|next| rest.find(next)).min().map_or(library.len(), |e| start + 1 + e);
        let body = &library[start..end];
        let wait = body.find("pdl_enter();").unwrap_or_else(|| panic!("{signature} waits"));
        if signature.starts_with("QDEV void gemv") {
            // Their conv columns' operands (a state whose last writer completed, see `ld_state`)
            // are loaded before, so that the epilogue waits on no load.
            assert!(body.find("conv_column_load<").is_some_and(|at| at < wait), "{signature} loads its conv columns before waiting");
        }
        for touch in touches {
            assert!(body.find(touch).unwrap_or_else(|| panic!("{signature}: {touch}")) > wait, "{signature} touches `{touch}` before waiting");
        }
        if signature.contains("ssd_scan(") || signature.contains("selective_") {
            // Their state (f32 or int8, see `StateRow`) is requested before: its last writer,
            // the same layer's scan one step earlier, has completed.
            assert!(body.find("cached.request(").is_some_and(|at| at < wait), "{signature} requests its state before waiting");
        }
        if signature.contains("ssd_prefill(") {
            // Its f32 state before.
            assert!(body.find("rows[r].request(").is_some_and(|at| at < wait), "{signature} requests its state before waiting");
        }
        if signature.contains("ssd_scan(") || signature.contains("selective_step_dt(") {
            // The decode steps' inputs' scales (constants) are loaded before, so that no load
            // after the wait goes to DRAM.
            assert!(body.find("ld_scale(").is_some_and(|at| at < wait), "{signature} loads its inputs' scales before waiting");
        }
    }
    // What a row chain loads before its wait is constants only: no operand's values.
    let start = library.find("QDEV SegmentConsts<E> segment_consts(").expect("segment_consts");
    let body = &library[start..start + library[start..].find("\n}\n").expect("its end")];
    assert!(!body.contains("ld(") && !body.contains("ld_with(") && !body.contains(".p["), "segment_consts reads an operand:\n{body}");
}

/// The generated source (mamba2-tiny, and a random Mamba1) compiles with NVRTC for the H100
/// (sm_90), Jetson Orin (sm_87) and A5000 (sm_86), every planned entry point is in the PTX, and no
/// kernel spills to local memory.
/// Needs libnvrtc (CI installs it from PyPI, `.ci/run`); elsewhere it is skipped unless
/// QUAMBA_REQUIRE_NVRTC=1.
#[test]
fn generated_source_compiles_for_every_target_gpu() {
    let plans = [plan_of(None), plan_of(Some("orin-w4a8")), plan_of(Some("a5000-w8a8")), plan_of(Some("h100-w4a16")), mamba1_plan_of(Some("h100-w4a8")), mamba1_plan_of(Some("a5000-w4a16"))];
    for (i, (p, arch)) in plans.iter().zip(["sm_90", "sm_87", "sm_86", "sm_90", "sm_90", "sm_86"]).enumerate() {
        if !assert_plan_compiles(p, arch, &format!("plan {i}")) {
            eprintln!("skipped: no libnvrtc on this machine");
            return;
        }
    }
}

/// Every generated entry point records its own index in the timeline (`quambac cuda trace`), the
/// host finds every launched kernel by that index, and without QUAMBA_TRACE the hooks are empty:
/// the PTX has no timer reads. With it, the source compiles for the H100 and every entry point
/// records its events.
#[test]
fn timeline_hooks_name_every_entry_point_and_cost_nothing_when_off() {
    use kernels::cuda::codegen::entry_names;
    let p = plan_of(Some("h100-w4a8"));
    let names = entry_names(p.generated_source());
    assert_eq!(names.last().map(String::as_str), Some("quamba_argmax"));
    for (i, name) in names.iter().enumerate() {
        let at = p.source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("{name} in the source"));
        let end = p.source[at..].find(&format!("QUAMBA_TRACE_END({i});")).map(|e| at + e);
        let next_entry = p.source[at + 1..].find("extern \"C\"").map_or(p.source.len(), |e| at + 1 + e);
        assert!(end.is_some_and(|e| e < next_entry), "{name} records index {i}");
    }
    for k in p.launches.iter().flat_map(|l| l.kernels()) {
        assert!(names.contains(&k.name), "{} is a traced entry point", k.name);
    }
    // Every thread reaches QUAMBA_TRACE_END, which synchronizes the block: the entry points
    // themselves never return early (the templates they call may; control comes back).
    for p in [&p, &plan_of(None), &mamba1_plan_of(Some("h100-w4a8"))] {
        assert!(!p.generated_source().contains("return"), "an entry point returns before its trace hook");
    }
    if !runtime::cuda::nvrtc_available() {
        assert!(std::env::var("QUAMBA_REQUIRE_NVRTC").is_err(), "QUAMBA_REQUIRE_NVRTC is set but libnvrtc cannot be loaded");
        return;
    }
    let plain = runtime::cuda::compile_ptx(&p.source, "sm_90").expect("plain source");
    assert!(!plain.contains("globaltimer") && !plain.contains("quamba_trace_events"));
    let traced = runtime::cuda::compile_ptx(&runtime::cuda::traced_source(&p.source, 4096), "sm_90").expect("traced source");
    assert!(traced.contains(".global .align 8 .b8 quamba_trace_events[196608];"), "4096 events of 48 bytes");
    for name in &names {
        let body = traced.split(&format!(".entry {name}(")).nth(1).unwrap_or_else(|| panic!("{name} in the traced PTX"));
        let body = &body[..body.find(".entry ").unwrap_or(body.len())];
        assert!(body.contains("%globaltimer") && body.contains("quamba_trace_events"), "{name} records its block's events");
    }
}

/// Which out_proj input chains split over blocks: whole Hadamard blocks of at most 1024
/// elements, at least two per row, each inside one norm group.
#[test]
fn gated_hadamard_chains_split_by_hadamard_block() {
    use kernels::cuda::codegen::hadamard_segments;
    if std::env::var("QUAMBA_CUDA_ROW_SPLIT").is_ok() {
        return; // the knob overrides the rule
    }
    assert_eq!(hadamard_segments(5120, 1), Some(5), "mamba2-2.7b: 5 blocks of 1024");
    assert_eq!(hadamard_segments(1536, 1), Some(3), "mamba2-130m: 3 blocks of 512");
    assert_eq!(hadamard_segments(5120, 5), Some(5), "groups of 1024 hold one block each");
    assert_eq!(hadamard_segments(5120, 10), None, "a 1024 block would straddle two groups of 512");
    assert_eq!(hadamard_segments(1024, 1), None, "one block per row: nothing to split");
    assert_eq!(hadamard_segments(8192, 8), None, "a block of 8192 is wider than a CUDA block");
    assert_eq!(hadamard_segments(40, 1), None, "blocks of 8 are too small to pay");
}

/// The split chain compiles at the real models' widths for every target GPU, without spills.
#[test]
fn split_gated_hadamard_kernel_compiles() {
    use kernels::cuda::codegen;
    let entries: Vec<String> = [(5120, 1), (1536, 1), (5120, 5), (1280, 1)].iter().map(|(w, g)| codegen::gated_hadamard_quantize(*w, *g, 1e-5, codegen::ChainOutput::Quantized)).collect();
    assert_entries_compile_without_spills(&entries, "split");
    // The same chains storing f32 (W4A16), and Mamba1's gate → Hadamard chain and the one-row
    // chain after a gating SSD step both ways, at mamba-2.8b's and mamba2-2.7b's widths.
    let stored: Vec<String> = [(5120, 1), (1536, 1), (5120, 5)]
        .iter()
        .map(|(w, g)| codegen::gated_hadamard_quantize(*w, *g, 1e-5, codegen::ChainOutput::Stored))
        .chain([codegen::ChainOutput::Quantized, codegen::ChainOutput::Stored].into_iter().flat_map(|out| [codegen::hadamard_quantize(5120, 5, true, out), codegen::pregated_hadamard_quantize(5120, 1, 160, 1e-5, out)]))
        .collect();
    for entry in &stored[..3] {
        assert!(entry.contains(", false>(x, z, w0, qscale, qvec)") && entry.contains("(x, z, k, 1e-5f, out_f, "), "f32 chains read no quantize scale and store out_f: {entry}");
    }
    assert_entries_compile_without_spills(&stored, "split");
    if std::env::var("QUAMBA_CUDA_CLUSTER").is_ok() {
        return; // the knob overrides the rule
    }
    // A norm group of several blocks is a cluster on sm_90 (mamba2-2.7b: one group of five
    // blocks; mamba2-130m: three); a group of one block needs none.
    for (entry, cluster) in entries.iter().zip([Some(5), Some(3), None, Some(5)]) {
        match cluster {
            Some(c) => assert!(entry.contains(&format!("__cluster_dims__({c}, 1, 1)")) && entry.contains(&format!(", {c}>(x, z, k,")), "{entry}"),
            None => assert!(!entry.contains("__cluster_dims__") && entry.contains(", 1>(x, z, k,"), "{entry}"),
        }
    }
    if runtime::cuda::nvrtc_available() {
        let source = codegen::source(&[entries[0].replace("ENTRY", "split_0")], 64);
        let ptx = runtime::cuda::compile_ptx(&source, "sm_90").expect("sm_90");
        assert!(ptx.contains(".reqnctapercluster 5") || ptx.contains(".explicitcluster"), "sm_90: no cluster");
        assert!(ptx.contains("mapa.shared::cluster") && ptx.contains("barrier.cluster.wait"), "sm_90: no distributed shared memory sum");
    }
}

/// The entry points that ptxas's report (`runtime::cuda::Cubin::ptxas_log`) says spill registers.
fn spilling_entries(report: &str) -> Vec<String> {
    let mut entry = "";
    let mut spilling = Vec::new();
    for line in report.lines() {
        if let Some((_, name)) = line.split_once("Function properties for ") {
            entry = name.trim();
        } else if let Some((before, _)) = line.split_once(" bytes spill stores") {
            let stores = before.rsplit([' ', ',']).next().and_then(|n| n.parse::<usize>().ok());
            if stores != Some(0) {
                let properties = line.trim_start_matches("ptxas").trim_start_matches([' ', '.']);
                spilling.push(format!("{entry} ({properties})"));
            }
        }
    }
    spilling
}

#[test]
fn ptxas_spill_reports_are_read() {
    let report = "ptxas info    : Compiling entry function 'gemv_0' for 'sm_90'\nptxas info    : Function properties for gemv_0\nptxas         .     8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\nptxas info    : Function properties for gemv_1\nptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n";
    assert_eq!(spilling_entries(report), vec!["gemv_0 (8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads)".to_string()]);
}

/// Compiles generated entry points (named `{prefix}_{i}`) for the H100, Jetson Orin and A5000, and
/// checks that each is in the PTX and nothing spills to local memory, neither in the PTX nor in
/// ptxas's register allocation (a spill store of a value a kernel loads before its dependency wait stalls
/// that wait: mamba-2.8b's in_proj did, at ptxas's own register choice). Needs libnvrtc;
/// elsewhere it is skipped unless QUAMBA_REQUIRE_NVRTC=1.
fn assert_entries_compile_without_spills(entries: &[String], prefix: &str) {
    use kernels::cuda::codegen;
    if !runtime::cuda::nvrtc_available() {
        assert!(std::env::var("QUAMBA_REQUIRE_NVRTC").is_err(), "QUAMBA_REQUIRE_NVRTC is set but libnvrtc cannot be loaded");
        eprintln!("skipped: no libnvrtc on this machine");
        return;
    }
    let named: Vec<String> = entries.iter().enumerate().map(|(i, e)| e.replace("ENTRY", &format!("{prefix}_{i}"))).collect();
    let source = codegen::source(&named, 64);
    for arch in ["sm_90", "sm_87", "sm_86"] {
        let ptx = runtime::cuda::compile_ptx(&source, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for i in 0..named.len() {
            assert!(ptx.contains(&format!(".entry {prefix}_{i}(")), "{arch}: {prefix}_{i} missing");
        }
        assert!(!ptx.contains("ld.local") && !ptx.contains("st.local"), "{arch}: spills to local memory");
        let report = runtime::cuda::compile_cubin(&source, arch).unwrap_or_else(|e| panic!("{arch}: {e}")).ptxas_log;
        assert!(report.contains(&format!("Function properties for {prefix}_0")), "{arch}: no ptxas report");
        let spilling = spilling_entries(&report);
        assert!(spilling.is_empty(), "{arch}: ptxas spills in {spilling:?}");
    }
}

/// The one-row decode product's layout at the real models' shapes: long k-slices where a product
/// has tiles to spare, finer ones where it has few, and no GEMV where the int4 groups straddle
/// its 32-column segments or the weights are f16 (int4 weights with f32 activations, W4A16, take
/// the int8 kinds' layouts). Blocks fetch their tiles into shared
/// memory in bulk where up to 48 KB holds them (fewer tiles per block where that needs it) and
/// one wave of an H100 holds the blocks; elsewhere, where two stages of one tile fit in a
/// block's share of an SM and a chunk is one group, the tiles stream through resident blocks
/// (three per SM for int4 weights where their shares hold two stages, else two). What stays on
/// the ring with int4 weights in whole-group chunks splits k toward 8192 warps.
#[test]
fn gemv_layouts_at_real_shapes() {
    use kernels::cuda::codegen::{GemmShape, GemvConfig, StreamStages};
    use kernels::cuda::Grid;
    if ["QUAMBA_CUDA_GEMV", "QUAMBA_CUDA_GEMV_BULK", "QUAMBA_CUDA_GEMV_STREAM", "QUAMBA_CUDA_GEMV_STREAM_SHAPE", "QUAMBA_CUDA_GEMV_TW", "QUAMBA_CUDA_GEMV_AT", "QUAMBA_CUDA_GEMV_BULK_KB"].iter().any(|k| std::env::var(k).is_ok()) {
        return; // the knobs override the rule
    }
    let config = |kind, k, n, group| GemvConfig::decode(&GemmShape { kind, k, n, group, vec: true });
    let cfg = |kind, k, n, group| config(kind, k, n, group).map(|c| (c.wn, c.wk, c.depth, c.shared_bytes()));
    assert_eq!(cfg(3, 4096, 18560, 128), Some((1, 8, 1, 2 * (16384 + 1024))), "mamba2-8b in_proj: 2320 tiles, too many for one wave of bulk blocks: streamed, two 17 KB stages per block, eight k-slices");
    let in_proj_8b = config(3, 4096, 18560, 128).expect("a GEMV shape");
    assert_eq!(in_proj_8b.stream, Some(StreamStages { stages: 2, per_sm: 3, tps: 1 }));
    assert_eq!(in_proj_8b.grid(18560), Grid::Resident { units: 2320, per_sm: 3 });
    assert_eq!(in_proj_8b.blocks_per_sm(18560), Some(3), "the streamed in_proj tells ptxas its three blocks per SM");
    assert_eq!(config(3, 2560, 10576, 128).and_then(|c| c.blocks_per_sm(10576)), Some(3), "mamba2-2.7b's bulk in_proj: 331 blocks on 132 SMs");
    assert_eq!(config(3, 8192, 4096, 128).and_then(|c| c.blocks_per_sm(4096)), None, "the ring's grid is not one wave");
    assert_eq!(Grid::resident_blocks(2320, 2, 132), 264, "two blocks on each of an H100's SMs");
    assert_eq!(Grid::resident_blocks(2320, 2, 16), 32, "a Jetson Orin's 16 SMs: more tiles per block");
    assert_eq!(Grid::resident_blocks(24, 2, 132), 24, "never more blocks than tiles");
    assert_eq!(cfg(3, 8192, 4096, 128), Some((1, 16, 4, 0)), "mamba2-8b out_proj: 512 tiles of 34 KB, two of which do not fit beside the 8 KB row in a block's share: the ring, k in sixteen");
    assert_eq!(cfg(3, 2560, 10576, 128), Some((2, 4, 4, 4 * (10240 + 640))), "mamba2-2.7b in_proj: 20 chunks in four slices, two tiles per warp, 331 blocks of 45 KB in bulk (3 per SM)");
    let in_proj_27b = config(3, 2560, 10576, 128).expect("a GEMV shape");
    assert_eq!((in_proj_27b.tw, in_proj_27b.threads(), in_proj_27b.grid(10576)), (2, 256, Grid::Gemm { n_blocks: 331, rows_per_block: 1 }), "pairing keeps the block's 4 tiles and 8 warps: two rows of warps of two tiles each");
    assert_eq!(config(3, 2560, 10240, 128).map(|c| (c.wn, c.wk, c.tw)), Some((2, 4, 2)), "mamba-2.8b in_proj: paired the same way");
    assert_eq!(config(3, 5120, 2560, 128).map(|c| c.tw), Some(1), "out_proj's blocks have one row of warps: pairing would halve them, which lost");
    assert_eq!(config(3, 4096, 256000, 32).map(|c| c.tw), Some(1), "groups of 32 split a chunk: one tile per warp");
    assert_eq!(cfg(3, 5120, 2560, 128), Some((1, 7, 4, 20480 + 1280)), "mamba2-2.7b out_proj: 320 tiles, k in seven");
    assert_eq!(cfg(3, 5120, 192, 128), Some((1, 32, 2, 20480 + 1280)), "mamba-2.8b x_proj: 24 tiles, k as fine as allowed");
    assert_eq!(cfg(3, 4096, 256000, 32), Some((4, 2, 2, 0)), "a tied head's groups of 32: a shallower ring, never streamed");
    assert_eq!(cfg(2, 4096, 4096, 4096), Some((1, 8, 1, 2 * (32768 + 32))), "int8 weights, one group per row: 512 tiles, streamed in two stages");
    assert_eq!(config(2, 2560, 10576, 2560).and_then(|c| c.stream), Some(StreamStages { stages: 3, per_sm: 2, tps: 1 }), "mamba2-2.7b W8A8 in_proj: 661 bulk blocks would take two waves");
    assert_eq!(cfg(3, 200, 64, 200), Some((1, 2, 1, 2 * 512 + 32)), "a per-channel group narrower than the padded row: two chunks");
    assert_eq!(cfg(2, 16384, 4096, 16384), Some((1, 16, 4, 0)), "a 128 KB tile keeps the register ring");
    assert_eq!(cfg(2, 8192, 4096, 8192), Some((1, 8, 4, 0)), "mamba2-8b W8A8 out_proj on the ring: k-slices of 16 chunks, not split finer for int8 weights");
    assert_eq!(cfg(3, 192, 64, 96), None, "groups of 96 straddle the 32-column segments");
    assert_eq!(cfg(0, 4096, 4096, 4096), None, "f16 weights (FP16)");
    assert_eq!(cfg(1, 2560, 10576, 128), Some((2, 4, 4, 4 * (10240 + 640))), "W4A16 at the mamba2-2.7b in_proj shape: W4A8's layout, its f16 row (10 KB) still leaving three blocks per SM");
    assert_eq!(config(1, 2560, 10576, 128).map(|c| c.tw), Some(2), "two tiles per warp: one m16n8k16 product sums both");
    assert_eq!(cfg(1, 8192, 4096, 128), Some((1, 4, 4, 0)), "W4A16 mamba2-8b out_proj: the ring (an f16 row of 16 KB), k in four");
    assert_eq!(cfg(3, 64 * 1024, 64, 128), None, "a row too wide for static shared memory");
}

/// The tensor-core decode kernel's layout (tiles per warp, warps, chunks in flight per warp) per
/// weight kind and rows per call: W4A16's one-row calls keep one chunk in flight per warp, as
/// FP16's do (16-layer W4A16 TPOT 10-19 % lower at one row than with in_proj's three and
/// out_proj's four); calls of more rows keep the packed rule (one chunk was 13 % slower at 16
/// rows).
#[test]
fn decode_product_layouts() {
    use kernels::cuda::codegen::GemmConfig;
    if ["QUAMBA_CUDA_DECODE", "QUAMBA_CUDA_DECODE_NT"].iter().any(|k| std::env::var(k).is_ok()) {
        return; // the knobs override the rule
    }
    let layout = |kind, k, rows| {
        let c = GemmConfig::decode(kind, k, rows);
        (c.nt, c.wk, c.depth)
    };
    assert_eq!(layout(1, 2560, 1), (1, 7, 1), "W4A16 in_proj at one row: 20 chunks over 7 warps, one in flight each");
    assert_eq!(layout(1, 5120, 1), (1, 14, 1), "W4A16 out_proj at one row: 40 chunks over 14 warps");
    assert_eq!(layout(1, 2560, 16), (1, 7, 3), "W4A16 at 16 rows: every chunk of a warp in flight");
    assert_eq!(layout(0, 2560, 1), (4, 16, 1), "FP16: 80 chunks of 32 over 16 warps, one in flight, four tiles per warp");
    assert_eq!(layout(3, 2560, 16), (2, 7, 3), "W4A8 at 16 rows: two tiles per warp");
}

/// Products of many rows (prefill) tile by the weights' kind and the product's width: 32-row
/// warps for f16 mma, 64-row ones for int8, narrower warps for narrower products; f16 and int8
/// weights (two k-steps a chunk) keep four chunks in flight, int4 ones two.
#[test]
fn prefill_product_layouts() {
    use kernels::cuda::codegen::TiledConfig;
    if std::env::var("QUAMBA_CUDA_TILED").is_ok() {
        return; // the knob overrides the rule
    }
    let layout = |kind, n| {
        let c = TiledConfig::prefill(kind, n).expect("tiled by default");
        (c.mt, c.nt, c.wn, c.depth, c.sk)
    };
    assert_eq!(layout(0, 10576), (2, 4, 4, 4, 32), "FP16 in_proj");
    assert_eq!(layout(1, 2560), (2, 4, 4, 2, 32), "W4A16 out_proj");
    assert_eq!(layout(3, 10576), (4, 4, 4, 2, 128), "W4A8 in_proj");
    assert_eq!(layout(3, 2560), (4, 2, 4, 2, 128), "W4A8 out_proj: half the columns per warp");
    assert_eq!(layout(2, 2560), (4, 2, 4, 4, 64), "W8A8 out_proj");
    assert_eq!(layout(3, 192), (2, 1, 4, 2, 128), "mamba-2.8b's x_proj: one tile per warp");
    let c = TiledConfig::prefill(3, 10576).expect("tiled");
    assert_eq!(c.grid(10576), kernels::cuda::Grid::Gemm { n_blocks: 83, rows_per_block: 64 }, "1322 tiles in blocks of 16");
}

/// The prefill kernels compile at the real models' shapes for every target GPU without spilling:
/// the tiled products (the int4 ones hold about 236 registers on sm_90) and the scans that request
/// their next steps' inputs ahead.
#[test]
fn prefill_kernels_compile_at_real_shapes() {
    use kernels::cuda::codegen::{self, GemmShape, StateForm, TiledConfig};
    let products = [
        // Each kind's widest tiling (mamba2-2.7b's in_proj; mamba2-8b's), a tied head's groups of
        // 32, mamba-2.8b's x_proj (one tile per warp), rows of odd length.
        (3, 2560, 10576, 128),
        (3, 4096, 18560, 128),
        (3, 5120, 192, 128),
        (3, 2560, 50288, 32),
        (2, 2560, 10576, 2560),
        (1, 2560, 10576, 128),
        (1, 4096, 256000, 32),
        (1, 200, 64, 200),
        (0, 2560, 10576, 2560),
        (0, 5120, 192, 5120),
        (0, 201, 64, 201),
    ];
    let mut entries: Vec<String> = products
        .iter()
        .map(|&(kind, k, n, group)| {
            let shape = GemmShape { kind, k, n, group, vec: k % 2 == 0 };
            codegen::gemm_tiled(&shape, &TiledConfig::prefill(kind, n).expect("tiled"))
        })
        .collect();
    // mamba2-2.7b's and mamba2-8b's SSD prefill (f32 state), mamba-2.8b's selective scan at its
    // prefill shape (f32 and int8 states).
    let rows = codegen::ssd_prefill_rows(64, 128).expect("an f32 state's prefill kernel");
    entries.push(codegen::ssd_prefill(80, 64, 1, 128, rows));
    entries.push(codegen::ssd_prefill(128, 64, 8, 128, rows));
    entries.push(codegen::ssd_bc_quantize(8, 128));
    let (channels, lanes) = codegen::scan_prefill_shape(5120, 16, (128, 1));
    entries.push(codegen::selective_scan(5120, 16, lanes, channels, StateForm::F32, true));
    entries.push(codegen::selective_scan(5120, 16, lanes, channels, StateForm { columns: 16, scale_floats: 32, grouped: false }, true));
    assert_entries_compile_without_spills(&entries, "prefill");
}

/// The one-row decode product compiles at the real models' shapes for every target GPU without
/// spilling its weight ring, with int8 activations and with f32 ones (W4A16, kind 1).
#[test]
fn gemv_kernel_compiles_at_real_shapes() {
    use kernels::cuda::codegen::{self, GemmShape, GemvConfig};
    let shapes = [
        (3, 4096, 18560, 128),
        (3, 8192, 4096, 128),
        (3, 5120, 192, 128),
        (3, 4096, 256000, 32),
        (2, 4096, 4096, 4096),
        (2, 160, 5120, 160),
        (3, 200, 64, 200),
        // W4A16: mamba2-8b's out_proj (the ring), a tied head's groups of 32, mamba2-2.7b's
        // out_proj (bulk), mamba-2.8b's x_proj, a row of odd length.
        (1, 8192, 4096, 128),
        (1, 4096, 256000, 32),
        (1, 5120, 2560, 128),
        (1, 5120, 192, 128),
        (1, 200, 64, 200),
    ];
    // An in_proj (k 2560, groups of 128) with its conv step over `channels` columns from
    // `first_column`, and the input norm before it (whether it has a weight, a per-column scale).
    let in_proj = |kind: u8, n: usize, first_column: usize, channels: usize, (weight, per_column): (bool, bool)| {
        let shape = GemmShape { kind, k: 2560, n, group: 128, vec: true };
        let config = GemvConfig::decode(&shape).expect("a GEMV shape");
        assert_eq!(config.tw, 2, "kind {kind}: in_proj sums two tiles per warp");
        let conv = codegen::ConvEpilogue { first_column, channels, taps: 4, silu: true };
        let norm = codegen::NormPrologue::for_product(2560, &config, weight, per_column, 1e-5);
        assert!(norm.is_some(), "kind {kind}: the bulk in_proj runs its norm");
        codegen::gemv(&shape, &config, Some(conv), norm)
    };
    let entries: Vec<String> = shapes
        .iter()
        .map(|&(kind, k, n, group)| {
            let shape = GemmShape { kind, k, n, group, vec: true };
            codegen::gemv(&shape, &GemvConfig::decode(&shape).expect("a GEMV shape"), None, None)
        })
        .chain(std::iter::once({
            // mamba2-2.7b's in_proj with its conv step: z, then x B C through the conv, then dt.
            let shape = GemmShape { kind: 3, k: 2560, n: 10576, group: 128, vec: true };
            let conv = codegen::ConvEpilogue { first_column: 5120, channels: 5376, taps: 4, silu: true };
            codegen::gemv(&shape, &GemvConfig::decode(&shape).expect("a GEMV shape"), Some(conv), None)
        }))
        .chain([(false, false), (true, true)].map(|norm| {
            // mamba2-2.7b's in_proj with its conv step and the RMS norm -> quantize before it
            // (as planned: no norm weight, one scale; and with both, which the prologue loads).
            in_proj(3, 10576, 5120, 5376, norm)
        }))
        // mamba-2.8b's in_proj with its conv step (x first, then z) and its norm: at ptxas's own
        // register choice it spilled a conv state value loaded before its wait.
        .chain(std::iter::once(in_proj(3, 10240, 0, 5120, (false, false))))
        // W4A16 in_proj at mamba2-2.7b's (conv after z) and mamba-2.8b's (conv first) shapes,
        // with the input RMS norm converting to f16 for the tensor cores.
        .chain([in_proj(1, 10576, 5120, 5376, (false, false)), in_proj(1, 10240, 0, 5120, (true, false))])
        .chain([3, 1].map(|kind| {
            // mamba2-8b's streamed in_proj with its conv step (W4A8, W4A16).
            let shape = GemmShape { kind, k: 4096, n: 18560, group: 128, vec: true };
            let config = GemvConfig::decode(&shape).expect("a GEMV shape");
            assert!(config.stream.is_some(), "kind {kind}: too many tiles for one wave: streamed");
            let conv = codegen::ConvEpilogue { first_column: 8192, channels: 10240, taps: 4, silu: true };
            codegen::gemv(&shape, &config, Some(conv), None)
        }))
        .chain(std::iter::once({
            // A stream of two tiles per stage whose chunks hold four groups each (a head's groups
            // of 32), as `QUAMBA_CUDA_GEMV_STREAM_SHAPE=2x2x8` lays it out.
            let shape = GemmShape { kind: 3, k: 2560, n: 50288, group: 32, vec: true };
            let tile = codegen::BulkTiles { tile_bytes: 20 * 512, scale_bytes: 8 * 80 * 4 };
            let stream = codegen::StreamStages { stages: 2, per_sm: 2, tps: 2 };
            codegen::gemv(&shape, &GemvConfig { wn: 1, wk: 8, depth: 1, bulk: Some(tile), stream: Some(stream), tw: 1 }, None, None)
        }))
        .collect();
    assert_entries_compile_without_spills(&entries, "gemv");
}

/// The cluster form of the gated norm -> Hadamard -> quantize chain (mamba2-8b's 8192-wide rows)
/// is chosen only for one-Hadamard-block rows with a norm group per 1024, compiles for every
/// target GPU without spilling, and on sm_90 declares its cluster.
#[test]
fn cluster_row_chain_at_real_shapes() {
    use kernels::cuda::codegen;
    if std::env::var("QUAMBA_CUDA_CLUSTER").is_ok() || std::env::var("QUAMBA_CUDA_ROW_SPLIT").is_ok() {
        return; // the knobs override the rule
    }
    assert_eq!(codegen::cluster_segments(8192, 8), Some(8), "mamba2-8b: eight blocks of one norm group each");
    assert_eq!(codegen::cluster_segments(4096, 4), Some(4));
    assert_eq!(codegen::cluster_segments(8192, 1), None, "a norm group spanning blocks");
    assert_eq!(codegen::cluster_segments(5120, 5), None, "mamba2-2.7b: five 1024 Hadamard blocks, split without a cluster");
    assert_eq!(codegen::hadamard_segments(5120, 5), Some(5));
    assert_eq!(codegen::cluster_segments(16384, 16), None, "more than eight blocks per cluster");
    let entries = [codegen::cluster_gated_hadamard_quantize(8192, 1e-5, codegen::ChainOutput::Quantized), codegen::cluster_gated_hadamard_quantize(2048, 1e-5, codegen::ChainOutput::Quantized)];
    assert_entries_compile_without_spills(&entries, "rows");
    let stored = codegen::cluster_gated_hadamard_quantize(8192, 1e-5, codegen::ChainOutput::Stored);
    assert!(stored.contains("const float qscale0 = 0.f;") && stored.contains("qscale0, out_f, 8192);"), "W4A16 mamba2-8b: no quantize scale read, f32 rows of 8192: {stored}");
    assert_entries_compile_without_spills(&[stored], "rows");
    // The timeline finds its entry point by name behind the #if'd cluster qualifier.
    let named = [entries[0].replace("ENTRY", "rows_0"), entries[1].replace("ENTRY", "rows_1")];
    assert_eq!(codegen::entry_names(&codegen::generated(&named, 64)), ["rows_0", "rows_1", "quamba_argmax"]);
    if runtime::cuda::nvrtc_available() {
        let source = codegen::source(&[entries[0].replace("ENTRY", "rows_0")], 64);
        let ptx = runtime::cuda::compile_ptx(&source, "sm_90").expect("sm_90");
        assert!(ptx.contains(".reqnctapercluster 8") || ptx.contains(".explicitcluster"), "sm_90: no cluster in\n{}", &ptx[..ptx.len().min(2000)]);
        assert!(ptx.contains("mapa.shared::cluster"), "sm_90: no distributed shared memory");
    }
}

/// `QUAMBA_CUDA_ROW_TRIGGER=exit` (a measurement aid): every row kernel of the plans starts with
/// `quamba::pdl_enter()` (its dependency wait, then the trigger that lets the next launch start),
/// and the rewrite keeps the wait and drops the trigger, so the next launch starts when the row
/// kernel's blocks exit; on sm_90 its PTX then has the wait and no `launch_dependents`.
#[test]
fn row_kernels_can_trigger_at_exit() {
    use kernels::cuda::codegen::{entry_names, trigger_at_exit};
    let plans = [plan_of(Some("h100-w4a8")), plan_of(None), mamba1_plan_of(Some("h100-w4a8"))];
    let mut rows = Vec::new();
    for p in &plans {
        let generated = p.generated_source();
        for (name, body) in entry_names(generated).into_iter().zip(generated.split("extern \"C\" __global__ void").skip(1)) {
            if name.starts_with("rows_") {
                assert_eq!(body.matches("quamba::pdl_enter();").count(), 1, "{name} starts with its wait and trigger");
                rows.push((name, format!("extern \"C\" __global__ void{body}")));
            }
        }
    }
    assert!(rows.len() >= 3, "the plans have row kernels");
    for (name, body) in &rows {
        let at_exit = trigger_at_exit(body);
        assert!(!at_exit.contains("pdl_enter") && at_exit.matches("quamba::pdl_wait();").count() == 1, "{name}: {at_exit}");
    }
    if runtime::cuda::nvrtc_available() {
        let (name, body) = &rows[0];
        let ptx = runtime::cuda::compile_ptx(&kernels::cuda::codegen::source(&[trigger_at_exit(body)], 64), "sm_90").expect("sm_90");
        let entry = ptx.split(&format!(".entry {name}(")).nth(1).expect("the row kernel in the PTX");
        let entry = &entry[..entry.find(".entry ").unwrap_or(entry.len())];
        assert!(entry.contains("griddepcontrol.wait") && !entry.contains("griddepcontrol.launch_dependents"), "{name} waits and never triggers");
    }
}

/// Each scan launch of a quantized plan pulls the tail of the next layer's in_proj weight into
/// L2 (`ahead.rs`), the last layer's none (the product after its out_proj is the head); an
/// FP16 plan's products run no one-row blocks that hold their tiles, so it pulls none.
#[test]
fn scans_pull_the_next_in_proj_weight_into_l2() {
    let tails = |p: &CudaPlan| -> Vec<(String, Option<kernels::cuda::WeightTail>, Option<usize>)> {
        let products: Vec<usize> = (0..p.launches.len()).filter(|&i| p.launches[i].kernels().any(|k| k.name.starts_with("gemv") || k.name.starts_with("gemm"))).collect();
        p.launches
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kernel.name.starts_with("ssd") || l.kernel.name.starts_with("scan"))
            .map(|(at, l)| {
                let tail = l.args.iter().find_map(|a| if let Arg::WeightTail(t) = a { Some(*t) } else { None }).expect("a scan has a weight tail argument");
                let bytes = l.args.iter().find_map(|a| if let Arg::WeightTailBytes(t) = a { Some(*t) } else { None }).expect("and its length");
                assert_eq!(tail, bytes, "{}: one tail", l.kernel.name);
                let second = products.iter().filter(|&&i| i > at).nth(1).filter(|&&i| !p.launches[i].head);
                let weight = second.and_then(|&i| if let Arg::Weight(w) = p.launches[i].args[2] { Some(w) } else { None });
                (l.kernel.name.clone(), tail, weight)
            })
            .collect()
    };
    let quantized = tails(&plan_of(Some("h100-w4a8")));
    assert!(quantized.len() >= 2, "{quantized:?}");
    let (last, firsts) = quantized.split_last().unwrap();
    for (name, tail, next_in_proj) in firsts {
        let tail = tail.unwrap_or_else(|| panic!("{name}: no tail"));
        assert_eq!(Some(tail.weight), *next_in_proj, "{name}");
        assert_eq!(tail.per_mille, kernels::cuda::codegen::L2_AHEAD_PER_MILLE);
    }
    assert_eq!(last.1, None, "the last layer's scan: {last:?}");
    assert!(tails(&plan_of(None)).iter().all(|(_, tail, _)| tail.is_none()), "FP16 pulls nothing");
}

/// Every kernel a launch may run takes exactly the launch's arguments (the driver reads as many
/// as the entry point declares, so a surplus or a shortfall would not fail at launch).
#[test]
fn every_launch_passes_its_kernels_parameters() {
    let plans = [plan_of(None), plan_of(Some("h100-w4a8")), plan_of(Some("h100-w8a8")), plan_of(Some("h100-w4a16")), mamba1_plan_of(Some("h100-w4a8")), mamba2_split_plan_of("h100-w4a8")];
    for p in &plans {
        let params = |name: &str| {
            let at = p.source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("{name} in the source"));
            let list = &p.source[at + name.len() + 2..];
            let list = &list[..list.find(')').expect("a parameter list")];
            list.split(',').filter(|s| !s.trim().is_empty()).count()
        };
        for l in &p.launches {
            for k in std::iter::once(&l.kernel).chain(l.batched.as_ref()).chain(l.large.as_ref()) {
                assert_eq!(params(&k.name), l.args.len(), "{} ({}): parameters against arguments", k.name, l.value);
            }
            if let Some((k, args)) = &l.then_large {
                assert_eq!(params(&k.name), args.len(), "{} ({}): parameters against arguments", k.name, l.value);
            }
        }
    }
}
