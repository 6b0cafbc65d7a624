//! The text form round-trips, the parser rejects malformed input with a line number, and the
//! verifier reports every problem it checks for.

use ir::{parse, verify, Activation, DType, Dim, Family, Graph, Op, TensorType, WeightDecl};

/// A two-layer-ish Mamba2-shaped graph small enough to read.
fn small_graph() -> Graph {
    let mut g = Graph::new(Family::Mamba2);
    let w = |g: &mut Graph, name: &str, shape: &[usize]| g.add_weight(WeightDecl { name: name.into(), dtype: DType::F32, shape: shape.to_vec() });
    let table = w(&mut g, "emb", &[16, 8]);
    let norm = w(&mut g, "norm", &[8]);
    let proj = w(&mut g, "in_proj", &[4 + 8 + 8 + 2, 8]);
    let conv = w(&mut g, "conv", &[8 + 8, 1, 4]);
    let a_log = w(&mut g, "a_log", &[2]);
    let d = w(&mut g, "d", &[2]);
    let dt_bias = w(&mut g, "dt_bias", &[2]);
    let gnorm = w(&mut g, "gnorm", &[4]);
    let out = w(&mut g, "out_proj", &[8, 4]);
    let t = g.add(Op::Tokens, &[]).unwrap();
    let e = g.add(Op::Embedding { table }, &[t]).unwrap();
    let n = g.add(Op::RmsNorm { weight: Some(norm), eps: 1e-5 }, &[e]).unwrap();
    let p = g.add(Op::Linear { weight: proj, bias: None }, &[n]).unwrap();
    let z = g.add(Op::Split { start: 0, end: 4 }, &[p]).unwrap();
    let xbc = g.add(Op::Split { start: 4, end: 20 }, &[p]).unwrap();
    let dt = g.add(Op::Split { start: 20, end: 22 }, &[p]).unwrap();
    let c = g.add(Op::CausalConv1d { weight: conv, bias: None }, &[xbc]).unwrap();
    let c = g.add(Op::Activation { kind: Activation::Silu }, &[c]).unwrap();
    let x = g.add(Op::Split { start: 0, end: 4 }, &[c]).unwrap();
    let b = g.add(Op::Split { start: 4, end: 10 }, &[c]).unwrap();
    let cc = g.add(Op::Split { start: 10, end: 16 }, &[c]).unwrap();
    let ssd = Op::Ssd { a_log, d, dt_bias, heads: 2, head_dim: 2, groups: 2, d_state: 3, chunk: 4, dt_min: 0.0, dt_max: f32::INFINITY, state: None };
    let y = g.add(ssd, &[x, dt, b, cc]).unwrap();
    let y = g.add(Op::GatedRmsNorm { weight: gnorm, groups: 2, eps: 1e-5 }, &[y, z]).unwrap();
    let o = g.add(Op::Linear { weight: out, bias: None }, &[y]).unwrap();
    let r = g.add(Op::Add, &[e, o]).unwrap();
    let logits = g.add(Op::LmHead { weight: table }, &[r]).unwrap();
    g.add_output(logits);
    g
}

#[test]
fn print_parse_round_trip() {
    let g = small_graph();
    verify(&g).unwrap();
    let text = g.to_string();
    let back = parse(&text).unwrap();
    verify(&back).unwrap();
    assert_eq!(back.to_string(), text);
    insta::assert_snapshot!(text);
}

#[test]
fn printing_renumbers_densely_after_removal() {
    let mut g = small_graph();
    // Route the residual around the mixer, then delete the now-dead mixer nodes.
    let values = g.values();
    let add = *values.iter().find(|v| matches!(g.node(**v).op, Op::Add)).unwrap();
    let emb = g.inputs(add)[0];
    g.replace_uses(add, emb);
    g.remove(add);
    loop {
        let dead: Vec<_> = g.values().into_iter().filter(|v| g.users(*v).is_empty() && !g.outputs().contains(v)).collect();
        if dead.is_empty() {
            break;
        }
        dead.into_iter().for_each(|v| g.remove(v));
    }
    verify(&g).unwrap();
    let text = g.to_string();
    assert!(text.contains("%2 = lm_head %1"), "{text}");
    assert_eq!(parse(&text).unwrap().to_string(), text);
}

#[test]
fn parser_reports_line_and_problem() {
    let cases = [
        ("", "empty input"),
        ("quamba-ir 9 mamba2\nreturn", "version 9"),
        ("quamba-ir 1 mamba3\nreturn", "unknown family"),
        ("quamba-ir 1 mamba2\n%0 = tokens : i64[B, L]\n%1 = frobnicate %0 : f32[B, L, 4]\nreturn %1", "unknown op `frobnicate`"),
        ("quamba-ir 1 mamba2\n%0 = tokens : i64[B, L]\n%1 = embedding %7 table=@0 : f32[B, L, 4]\nreturn %1", "unknown value `%7`"),
        ("quamba-ir 1 mamba2\n%0 = tokens : i64[B, L]\n%1 = split %0 start=0 : f32[B, L, 4]\nreturn %1", "needs attribute `end`"),
        ("quamba-ir 1 mamba2\n%0 = tokens : i64[B, L]\n%1 = add %0 %0 color=3 : f32[B, L, 4]\nreturn %1", "no attribute `color`"),
        ("quamba-ir 1 mamba2\n%0 = tokens : q7[B, L]\nreturn %0", "unknown dtype `q7`"),
        ("quamba-ir 1 mamba2\nweight @1 \"w\" f32[2]\nreturn", "numbered in order"),
        // Found by fuzzing (fuzz/regressions/artifact/): a multi-byte character or nothing where
        // the opening quote belongs used to panic on a string slice.
        ("quamba-ir 1 mamba2\nweight @0 \u{6dd}w\" f32[2]\nreturn", "must be quoted"),
        ("quamba-ir 1 mamba2\nweight @0 \nreturn", "expected `weight @N"),
        ("quamba-ir 1 mamba2\nweight @0 \"w f32[2]\nreturn", "must be quoted"),
        ("quamba-ir 1 mamba2\n%0 = tokens : i64[B, L]", "missing `return`"),
    ];
    for (text, want) in cases {
        let err = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}")).to_string();
        assert!(err.contains(want), "for {text:?}: got `{err}`, wanted `{want}`");
        assert!(err.starts_with("line "), "{err}");
    }
}

#[test]
fn verifier_reports_every_problem() {
    let mut g = small_graph();
    // A wrong declared type, a dead node and an undeclared weight, all at once.
    let values = g.values();
    let lin = *values.iter().find(|v| matches!(g.node(**v).op, Op::Linear { .. })).unwrap();
    g.node_mut(lin).ty = TensorType { dtype: DType::F32, dims: vec![Dim::Batch, Dim::Seq, Dim::Fixed(99)] };
    let t = *values.iter().find(|v| matches!(g.node(**v).op, Op::Tokens)).unwrap();
    g.add_typed(Op::Embedding { table: ir::WeightId::new(77) }, TensorType::sequence(DType::F32, 8), &[t]);
    let errs = verify(&g).unwrap_err();
    let text = errs.to_string();
    assert!(text.contains("declared type f32[B, L, 99]"), "{text}");
    assert!(text.contains("undeclared weight @77"), "{text}");
    assert!(text.contains("dead `embedding`"), "{text}");
    assert!(errs.0.len() >= 3);
}

#[test]
fn verifier_rejects_wrong_weight_shape_and_missing_tokens() {
    let mut g = small_graph();
    g.weight_mut(ir::WeightId::new(4)).shape = vec![3];
    let text = verify(&g).unwrap_err().to_string();
    assert!(text.contains("ssd a_log weight @4 has shape [3], expected [2]"), "{text}");

    let mut empty = Graph::new(Family::Mamba1);
    let w = empty.add_weight(WeightDecl { name: "e".into(), dtype: DType::F32, shape: vec![4, 2] });
    let x = empty.add_typed(Op::LmHead { weight: w }, TensorType::sequence(DType::F32, 4), &[]);
    empty.add_output(x);
    let text = verify(&empty).unwrap_err().to_string();
    assert!(text.contains("exactly one `tokens`"), "{text}");
    assert!(text.contains("takes 1 operands, has 0"), "{text}");
}

#[test]
fn op_attrs_round_trip_for_every_op() {
    let g = small_graph();
    for v in g.values() {
        let op = &g.node(v).op;
        let attrs: Vec<(String, ir::Attr)> = op.attrs().into_iter().map(|(k, a)| (k.to_string(), a)).collect();
        assert_eq!(&Op::from_parts(op.name(), &attrs).unwrap(), op);
    }
}

/// `small_graph` with its SSD keeping an int8 state: `scale_shape` scales and, if given, a group
/// map of `group_len` i32 entries.
fn int8_state_graph(scale_shape: &[usize], group: Option<(DType, usize)>) -> Graph {
    let mut g = small_graph();
    let scale = g.add_weight(WeightDecl { name: "state.scale".into(), dtype: DType::F32, shape: scale_shape.to_vec() });
    let group = group.map(|(dtype, len)| g.add_weight(WeightDecl { name: "state.group".into(), dtype, shape: vec![len] }));
    let ssd = g.values().into_iter().find(|v| matches!(g.node(*v).op, Op::Ssd { .. })).unwrap();
    if let Op::Ssd { state, .. } = &mut g.node_mut(ssd).op {
        *state = Some(ir::StateQuant { scale, group });
    }
    g
}

#[test]
fn int8_state_round_trips_and_is_checked() {
    // Two groups of state rows, one scale per (group, state index); and a per-tensor scale.
    for g in [int8_state_graph(&[2, 3], Some((DType::I32, 4))), int8_state_graph(&[1, 1], None)] {
        verify(&g).unwrap();
        let text = g.to_string();
        assert!(text.contains("state_scale=@"), "{text}");
        let back = parse(&text).unwrap();
        verify(&back).unwrap();
        assert_eq!(back.to_string(), text);
    }
    let text = int8_state_graph(&[2, 3], Some((DType::I32, 4))).to_string();
    let ssd_line = text.lines().find(|l| l.contains("= ssd")).unwrap();
    insta::assert_snapshot!("int8_state_ssd_line", ssd_line);

    let problem = |g: Graph| verify(&g).unwrap_err().to_string();
    let text = problem(int8_state_graph(&[2, 2], Some((DType::I32, 4))));
    assert!(text.contains("ssd state_scale @9 is f32[2, 2], expected f32[groups, 3] or f32[groups, 1]"), "{text}");
    let text = problem(int8_state_graph(&[2, 3], Some((DType::I32, 5))));
    assert!(text.contains("ssd state_group @10 is i32[5], expected i32[4]"), "{text}");
    let text = problem(int8_state_graph(&[2, 3], Some((DType::F32, 4))));
    assert!(text.contains("expected i32[4]"), "{text}");
    let text = problem(int8_state_graph(&[2, 3], None));
    assert!(text.contains("has 2 groups but no state_group"), "{text}");
    // A group map needs scales.
    let g = small_graph();
    let ssd = g.values().into_iter().find(|v| matches!(g.node(*v).op, Op::Ssd { .. })).unwrap();
    let mut attrs: Vec<(String, ir::Attr)> = g.node(ssd).op.attrs().into_iter().map(|(k, a)| (k.to_string(), a)).collect();
    attrs.push(("state_group".into(), ir::Attr::Weight(ir::WeightId::new(1))));
    let err = Op::from_parts("ssd", &attrs).unwrap_err();
    assert!(err.contains("`ssd` has `state_group` without `state_scale`"), "{err}");
}
