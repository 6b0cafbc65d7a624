//! The `.qmb` artifact: write → read round trips exactly, i4 packing, alignment, every way a file
//! can be wrong (magic, version, checksum, truncation, target, crafted headers), and atomic writes.

use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ir::{DType, Family, Graph, Op, WeightDecl, WeightId};
use rand::{Rng, SeedableRng};
use runtime::artifact::{
    describe, file_size, read_artifact, read_artifact_bytes, read_header, write_artifact, ArtifactError, ArtifactHeader, ArtifactMeta, ALIGN, FORMAT_VERSION,
    MAGIC,
};
use runtime::{WeightData, Weights};

fn meta(target: &str) -> ArtifactMeta {
    ArtifactMeta {
        compiler_version: "0.1.0-test".into(),
        target: target.into(),
        model_config_json: r#"{"d_model":8,"n_layer":1}"#.into(),
        kernel_plan: vec!["qembedding_i4".into(), "rms_norm".into(), "qlinear_i8_f32".into(), "qlinear_i4_f32".into(), "lm_head_f32".into()],
    }
}

/// A small graph with f32, f16, bf16, i8, i4 (one of odd length), i32 and i64 weights, and data for it.
fn model() -> (Graph, Weights) {
    let mut g = Graph::new(Family::Mamba2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut weights = Weights::new();
    let mut w = |g: &mut Graph, name: &str, dtype: DType, shape: &[usize], values: Vec<f32>| {
        assert_eq!(values.len(), shape.iter().product::<usize>());
        weights.push(WeightData::new(shape.to_vec(), values));
        g.add_weight(WeightDecl { name: name.into(), dtype, shape: shape.to_vec() })
    };
    let ints = |rng: &mut rand::rngs::StdRng, n: usize, lo: i32, hi: i32| (0..n).map(|_| rng.gen_range(lo..=hi) as f32).collect::<Vec<_>>();
    let floats = |rng: &mut rand::rngs::StdRng, n: usize| (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect::<Vec<_>>();

    let v = ints(&mut rng, 16 * 8, -8, 7);
    let emb = w(&mut g, "backbone.embeddings.weight", DType::I4, &[16, 8], v);
    let v = floats(&mut rng, 16 * 2);
    let emb_scales = w(&mut g, "backbone.embeddings.scales", DType::F32, &[16, 2], v);
    let v = floats(&mut rng, 8).into_iter().map(|x| f16::from_f32(x).to_f32()).collect();
    let norm = w(&mut g, "norm.weight", DType::F16, &[8], v);
    let v = ints(&mut rng, 12 * 8, -128, 127);
    let proj = w(&mut g, "in_proj.weight", DType::I8, &[12, 8], v);
    let v = floats(&mut rng, 12 * 2);
    let proj_scales = w(&mut g, "in_proj.scales", DType::F32, &[12, 2], v);
    let v = floats(&mut rng, 12).into_iter().map(|x| bf16::from_f32(x).to_f32()).collect();
    let proj_bias = w(&mut g, "in_proj.bias", DType::BF16, &[12], v);
    let v = ints(&mut rng, 7 * 5, -8, 7);
    let down = w(&mut g, "down.weight", DType::I4, &[7, 5], v); // 35 values: odd
    let v = floats(&mut rng, 7);
    let down_scales = w(&mut g, "down.scales", DType::F32, &[7, 1], v);
    let mut v = floats(&mut rng, 16 * 7);
    // Values a careless encoder loses: NaN, infinities, negative zero, a subnormal.
    v[..5].copy_from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40]);
    let head = w(&mut g, "lm_head.weight", DType::F32, &[16, 7], v);
    // Declared but unused integer tables, to cover the i32 / i64 encodings.
    w(&mut g, "positions", DType::I32, &[3], vec![-2_147_483_648.0, 0.0, 16_777_216.0]);
    w(&mut g, "ids", DType::I64, &[2], vec![-9_223_372_036_854_775_808.0, 50_280.0]);

    let t = g.add(Op::Tokens, &[]).unwrap();
    let e = g.add(Op::QEmbedding { table: emb, scales: emb_scales, group: 4 }, &[t]).unwrap();
    let n = g.add(Op::RmsNorm { weight: Some(norm), eps: 1e-5 }, &[e]).unwrap();
    let p = g.add(Op::QLinear { weight: proj, scales: proj_scales, bias: Some(proj_bias), group: 4, act_scale: None }, &[n]).unwrap();
    let s = g.add(Op::Split { start: 0, end: 5 }, &[p]).unwrap();
    let d = g.add(Op::QLinear { weight: down, scales: down_scales, bias: None, group: 5, act_scale: None }, &[s]).unwrap();
    let logits = g.add(Op::LmHead { weight: head }, &[d]).unwrap();
    g.add_output(logits);
    (g, weights)
}

/// A graph that only declares weights (plus the token input it must have).
fn table_graph(decls: &[(&str, DType, Vec<usize>, Vec<f32>)]) -> (Graph, Weights) {
    let mut g = Graph::new(Family::Mamba1);
    let mut weights = Weights::new();
    for (name, dtype, shape, values) in decls {
        g.add_weight(WeightDecl { name: name.to_string(), dtype: *dtype, shape: shape.clone() });
        weights.push(WeightData::new(shape.clone(), values.clone()));
    }
    let t = g.add(Op::Tokens, &[]).unwrap();
    g.add_output(t);
    (g, weights)
}

fn assert_same_weights(graph: &Graph, a: &Weights, b: &Weights) {
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        let (x, y) = (a.get(WeightId::new(i)), b.get(WeightId::new(i)));
        assert_eq!(x.shape, y.shape, "weight {i}");
        let name = &graph.weights()[i].name;
        let (xv, yv) = (x.floats(), y.floats());
        assert_eq!(xv.len(), yv.len(), "{name}");
        for (k, (p, q)) in xv.iter().zip(yv.iter()).enumerate() {
            // Bitwise, except that integer dtypes have no negative zero.
            let same = p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()) || (graph.weights()[i].dtype != DType::F32 && p == q);
            assert!(same, "{name}[{k}]: wrote {p:?}, read {q:?}");
        }
    }
}

/// Names of leftover temporary files in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
        .collect()
}

fn header_span(bytes: &[u8]) -> (usize, usize) {
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    (20, 20 + len)
}

fn decode_header(bytes: &[u8]) -> ArtifactHeader {
    let (start, end) = header_span(bytes);
    let (h, used): (ArtifactHeader, usize) = bincode::serde::decode_from_slice(&bytes[start..end], bincode::config::legacy()).unwrap();
    assert_eq!(used, end - start);
    h
}

fn fix_checksum(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Re-encodes the header after `f` edits it (keeping its length, so the blobs stay where they
/// are) and recomputes the checksum: a crafted file that passes the checksum.
fn craft(bytes: &[u8], f: impl FnOnce(&mut ArtifactHeader)) -> Vec<u8> {
    let mut h = decode_header(bytes);
    f(&mut h);
    let enc = bincode::serde::encode_to_vec(&h, bincode::config::legacy()).unwrap();
    let (start, end) = header_span(bytes);
    assert_eq!(enc.len(), end - start, "craft must keep the header length");
    let mut out = bytes.to_vec();
    out[start..end].copy_from_slice(&enc);
    fix_checksum(&mut out);
    out
}

fn written_model(dir: &Path) -> (PathBuf, Graph, Weights, Vec<u8>) {
    let (g, w) = model();
    let path = dir.join("model.qmb");
    let n = write_artifact(&path, &meta("orin-w4a8"), &g, &w).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(n, bytes.len() as u64);
    (path, g, w, bytes)
}

#[test]
fn round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, g, w, bytes) = written_model(dir.path());
    ir::verify(&g).unwrap();
    assert_eq!(&bytes[..8], &MAGIC);

    let a = read_artifact(&path, Some("orin-w4a8")).unwrap();
    assert_eq!(a.graph.to_string(), g.to_string());
    assert_eq!(a.header.graph_text, g.to_string());
    ir::verify(&a.graph).unwrap();
    assert_same_weights(&g, &w, &a.weights);
    a.weights.check_against(&a.graph).unwrap();

    let m = meta("orin-w4a8");
    assert_eq!(a.header.format_version, FORMAT_VERSION);
    assert_eq!(a.header.compiler_version, m.compiler_version);
    assert_eq!(a.header.target, m.target);
    assert_eq!(a.header.family, "mamba2");
    assert_eq!(a.header.model_config_json, m.model_config_json);
    assert_eq!(a.header.kernel_plan, m.kernel_plan);
    let dtypes: Vec<&str> = a.header.weights.iter().map(|b| b.dtype.as_str()).collect();
    assert_eq!(dtypes, ["i4", "f32", "f16", "i8", "f32", "bf16", "i4", "f32", "f32", "i32", "i64"]);
    assert_eq!(a.header.weights[6].bytes, 18, "35 i4 values pack into 18 bytes");
    assert_eq!(read_header(&path).unwrap(), a.header);
    assert_eq!(file_size(&a.header), bytes.len() as u64);
    // No expected target: any target is accepted.
    read_artifact(&path, None).unwrap();
    // Writing the same inputs again gives the same bytes.
    let again = dir.path().join("again.qmb");
    write_artifact(&again, &m, &g, &w).unwrap();
    assert_eq!(fs::read(&again).unwrap(), bytes);
}

#[test]
fn empty_weight_table_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (g, w) = table_graph(&[]);
    let path = dir.path().join("empty.qmb");
    let n = write_artifact(&path, &meta("cpu-f32"), &g, &w).unwrap();
    let a = read_artifact(&path, Some("cpu-f32")).unwrap();
    assert_eq!(a.graph.to_string(), g.to_string());
    assert!(a.weights.is_empty());
    assert_eq!(n % ALIGN, 4, "padding to the data start, then the checksum");
    assert_eq!(file_size(&a.header), n);
}

#[test]
fn i4_packing_round_trips_every_value_and_odd_counts() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=33usize {
        let values: Vec<f32> = (0..n).map(|i| (i % 16) as f32 - 8.0).collect();
        let (g, w) = table_graph(&[("q", DType::I4, vec![n], values.clone())]);
        let path = dir.path().join(format!("i4-{n}.qmb"));
        write_artifact(&path, &meta("t"), &g, &w).unwrap();
        let bytes = fs::read(&path).unwrap();
        let a = read_artifact(&path, None).unwrap();
        let read = a.weights.get(WeightId::new(0));
        assert!(read.values.is_empty(), "an i4 weight is held as integers");
        assert_eq!(read.floats().as_ref(), values.as_slice(), "n = {n}");
        let b = &a.header.weights[0];
        assert_eq!(b.bytes as usize, n.div_ceil(2));
        let blob = &bytes[b.offset as usize..(b.offset + b.bytes) as usize];
        // Low nibble = even index, two's complement: -8 → 0x8, -7 → 0x9.
        assert_eq!(blob[0] & 0x0f, 0x8);
        if n >= 2 {
            assert_eq!(blob[0], 0x98);
        }
        if n % 2 == 1 {
            assert_eq!(blob[blob.len() - 1] >> 4, 0, "the unused high nibble is zero");
        }
    }
    // Every byte value: all (even, odd) pairs of -8..7.
    let values: Vec<f32> = (-8..8).flat_map(|hi| (-8..8).flat_map(move |lo| [lo as f32, hi as f32])).collect();
    let (g, w) = table_graph(&[("all", DType::I4, vec![16, 32], values.clone())]);
    let path = dir.path().join("all.qmb");
    write_artifact(&path, &meta("t"), &g, &w).unwrap();
    let bytes = fs::read(&path).unwrap();
    let a = read_artifact(&path, None).unwrap();
    assert_eq!(a.weights.get(WeightId::new(0)).floats().as_ref(), values.as_slice());
    let b = &a.header.weights[0];
    let blob = &bytes[b.offset as usize..(b.offset + b.bytes) as usize];
    let mut seen: Vec<u8> = blob.to_vec();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 256);
}

#[test]
fn a_nonzero_pad_nibble_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (g, w) = table_graph(&[("q", DType::I4, vec![3], vec![1.0, 2.0, 3.0])]);
    let path = dir.path().join("q.qmb");
    write_artifact(&path, &meta("t"), &g, &w).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let b = &read_header(&path).unwrap().weights[0];
    bytes[(b.offset + 1) as usize] |= 0x50;
    fix_checksum(&mut bytes);
    let err = read_artifact_bytes(&bytes, &path, None).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("high nibble"), "{err}");
}

#[test]
fn every_blob_is_64_byte_aligned_in_order_and_in_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _, bytes) = written_model(dir.path());
    let h = decode_header(&bytes);
    let (_, header_end) = header_span(&bytes);
    let mut prev_end = header_end as u64;
    for b in &h.weights {
        assert_eq!(b.offset % 64, 0, "{} at {}", b.name, b.offset);
        assert!(b.offset >= prev_end, "{} overlaps", b.name);
        assert!(b.offset - prev_end < 64, "{} leaves a gap", b.name);
        prev_end = b.offset + b.bytes;
    }
    assert_eq!(prev_end + 4, bytes.len() as u64, "the checksum follows the last blob");
    // The padding is zeros.
    assert!(bytes[header_end..h.weights[0].offset as usize].iter().all(|b| *b == 0));
}

#[test]
fn i4_artifact_is_about_8x_smaller_than_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (256, 256);
    let ints: Vec<f32> = (0..rows * cols).map(|i| ((i * 7) % 16) as f32 - 8.0).collect();
    let mut sizes = Vec::new();
    for dtype in [DType::F32, DType::I4] {
        let (g, w) = table_graph(&[("w", dtype, vec![rows, cols], ints.clone())]);
        let path = dir.path().join(format!("{dtype}.qmb"));
        sizes.push(write_artifact(&path, &meta("t"), &g, &w).unwrap() as f64);
        assert_eq!(read_artifact(&path, None).unwrap().weights.get(WeightId::new(0)).floats().as_ref(), ints.as_slice());
    }
    let ratio = sizes[0] / sizes[1];
    assert!((7.5..=8.0).contains(&ratio), "f32 {} bytes / i4 {} bytes = {ratio}", sizes[0], sizes[1]);
}

#[test]
fn a_flipped_byte_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let h = decode_header(&bytes);
    let (hs, he) = header_span(&bytes);
    // In a blob, in the header, in the header length, in the padding, in the checksum itself.
    for at in [h.weights[3].offset as usize + 5, (hs + he) / 2, 13, he + 1, bytes.len() - 2] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let err = read_artifact_bytes(&bad, &path, None).unwrap_err();
        assert!(matches!(err, ArtifactError::Checksum { .. }), "byte {at}: {err}");
        let text = err.to_string();
        assert!(text.contains("checksum mismatch: the file is corrupt or truncated"), "{text}");
        assert!(text.contains("model.qmb"), "{text}");
    }
    // Through the file, too.
    let mut bad = bytes.clone();
    bad[h.weights[0].offset as usize] ^= 1;
    fs::write(&path, &bad).unwrap();
    assert!(matches!(read_artifact(&path, None), Err(ArtifactError::Checksum { .. })));
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    for len in 0..bytes.len() {
        let err = read_artifact_bytes(&bytes[..len], &path, None).err().unwrap_or_else(|| panic!("accepted {len} of {} bytes", bytes.len()));
        match (len, &err) {
            (0..=7, ArtifactError::NotAnArtifact { .. }) => {}
            (8..=23, ArtifactError::Corrupt { .. }) => {}
            (24.., ArtifactError::Checksum { .. }) => {}
            _ => panic!("{len} bytes: unexpected {err}"),
        }
    }
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(read_artifact(&path, None), Err(ArtifactError::Checksum { .. })));
}

#[test]
fn wrong_magic_is_not_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    fs::write(&path, &bad).unwrap();
    let err = read_artifact(&path, None).unwrap_err();
    assert!(matches!(err, ArtifactError::NotAnArtifact { .. }), "{err}");
    assert!(err.to_string().contains("not a quamba artifact"), "{err}");
    assert_eq!(err.path(), path);
    // A text file, and an empty one.
    fs::write(&path, "quamba-ir 1 mamba2\nreturn\n").unwrap();
    assert!(matches!(read_artifact(&path, None), Err(ArtifactError::NotAnArtifact { .. })));
    fs::write(&path, "").unwrap();
    assert!(matches!(read_artifact(&path, None), Err(ArtifactError::NotAnArtifact { .. })));
    // A missing file is an I/O error naming it.
    let missing = dir.path().join("missing.qmb");
    let err = read_artifact(&missing, None).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.qmb"), "{err}");
}

#[test]
fn another_format_version_is_reported_before_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let mut bad = bytes.clone();
    bad[8..12].copy_from_slice(&2u32.to_le_bytes()); // checksum left stale on purpose
    fs::write(&path, &bad).unwrap();
    let err = read_artifact(&path, None).unwrap_err();
    assert!(matches!(err, ArtifactError::Version { found: 2, .. }), "{err}");
    assert!(err.to_string().contains("format version 2, this runtime reads 1 — recompile with this quambac"), "{err}");
    assert!(matches!(read_header(&path), Err(ArtifactError::Version { .. })));
}

#[test]
fn wrong_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, _) = written_model(dir.path());
    let err = read_artifact(&path, Some("cpu-f32")).unwrap_err();
    assert!(matches!(err, ArtifactError::Target { .. }), "{err}");
    assert!(err.to_string().contains("compiled for orin-w4a8, not cpu-f32"), "{err}");
}

#[test]
fn crafted_headers_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let end = bytes.len() as u64;
    type Edit = Box<dyn Fn(&mut ArtifactHeader)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("run past the end", Box::new(move |h| h.weights[10].offset = (end - 4).div_ceil(64) * 64)),
        ("run past the end", Box::new(|h| h.weights[10].offset = u64::MAX - 63)),
        ("not a multiple of 64", Box::new(|h| h.weights[2].offset += 1)),
        ("overlaps", Box::new(|h| h.weights[2].offset = h.weights[1].offset)),
        ("overlaps", Box::new(|h| h.weights[0].offset = 0)),
        ("bytes", Box::new(|h| h.weights[0].bytes += 1)),
        ("dtype `i8`", Box::new(|h| h.weights[0].dtype = "i8".into())),
        ("dtype `q7`", Box::new(|h| h.weights[0].dtype = "q7".into())),
        ("shape", Box::new(|h| h.weights[0].shape = vec![8, 16])),
        ("shape", Box::new(|h| h.weights[0].shape = vec![u64::MAX, 2])),
        ("declares weight @0", Box::new(|h| h.weights[0].name = "backbone.embeddings.weighX".into())),
        ("family", Box::new(|h| h.family = "mamba1".into())),
        ("graph text does not parse", Box::new(|h| h.graph_text = h.graph_text.replace("quamba-ir", "quamba-XX"))),
        ("lists", Box::new(|h| {
            // Comment the last declaration out, keeping the text's length.
            let decl = "weight @10 \"ids\" i64[2]\n";
            assert!(h.graph_text.contains(decl));
            h.graph_text = h.graph_text.replace(decl, &format!("{:<w$}\n", ";", w = decl.len() - 1));
        })),
        ("format version", Box::new(|h| h.format_version = 9)),
    ];
    for (want, f) in cases {
        let bad = craft(&bytes, f);
        let err = read_artifact_bytes(&bad, &path, None).unwrap_err();
        assert!(matches!(err, ArtifactError::Corrupt { .. }), "{want}: {err}");
        assert!(err.to_string().contains(want), "wanted `{want}`, got: {err}");
    }
    // A header length beyond the file, and a huge one.
    for len in [bytes.len() as u64, u64::MAX] {
        let mut bad = bytes.clone();
        bad[12..20].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut bad);
        assert!(matches!(read_artifact_bytes(&bad, &path, None), Err(ArtifactError::Corrupt { .. })));
    }
    // Trailing bytes before the checksum.
    let mut bad = bytes[..bytes.len() - 4].to_vec();
    bad.extend_from_slice(&[0; 8]);
    fix_checksum(&mut bad);
    let err = read_artifact_bytes(&bad, &path, None).unwrap_err();
    assert!(err.to_string().contains("belong to nothing"), "{err}");
}

#[test]
fn random_mutations_with_a_valid_checksum_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let (_, header_end) = header_span(&bytes);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut bad = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            // Mostly the prefix and header, where the structure is.
            let at = if rng.gen_bool(0.8) { rng.gen_range(8..header_end) } else { rng.gen_range(0..bytes.len() - 4) };
            bad[at] = rng.gen();
        }
        fix_checksum(&mut bad);
        if read_artifact_bytes(&bad, &path, None).is_ok() {
            accepted += 1; // e.g. a changed weight value or a string byte that still reads
        }
    }
    assert!(accepted < 3000);
}

#[test]
fn invalid_inputs_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.qmb");
    let cases: Vec<(&str, DType, Vec<f32>)> = vec![
        ("is not an integer in [-128, 127]", DType::I8, vec![1.0, 128.0]),
        ("is not an integer in [-8, 7]", DType::I4, vec![0.5, 1.0]),
        ("is not an integer in [-8, 7]", DType::I4, vec![-9.0, 1.0]),
        ("is not an integer in [-8, 7]", DType::I4, vec![f32::NAN, 1.0]),
        ("not exactly representable in f16", DType::F16, vec![0.1, 1.0]),
        ("not exactly representable in bf16", DType::BF16, vec![1.0, 1.001]),
        ("is not an integer", DType::I32, vec![2_147_483_648.0, 0.0]),
        ("is not an integer", DType::I64, vec![1.5, 0.0]),
    ];
    for (want, dtype, values) in cases {
        let (g, w) = table_graph(&[("w", dtype, vec![2], values)]);
        let err = write_artifact(&path, &meta("t"), &g, &w).unwrap_err();
        assert!(matches!(err, ArtifactError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains(want) && err.to_string().contains("`w`"), "wanted `{want}`, got: {err}");
    }
    // Data that does not match the declarations.
    let (g, _) = table_graph(&[("w", DType::F32, vec![2], vec![0.0; 2])]);
    let err = write_artifact(&path, &meta("t"), &g, &Weights::new()).unwrap_err();
    assert!(err.to_string().contains("graph declares 1 weights, 0 were given"), "{err}");
    let mut short = Weights::new();
    short.push(WeightData::new(vec![3], vec![0.0; 3]));
    let err = write_artifact(&path, &meta("t"), &g, &short).unwrap_err();
    assert!(matches!(err, ArtifactError::Invalid { .. }), "{err}");
    // An empty target.
    let (g, w) = table_graph(&[]);
    assert!(matches!(write_artifact(&path, &meta(""), &g, &w), Err(ArtifactError::Invalid { .. })));
    assert!(!path.exists());
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_failed_write_leaves_the_previous_artifact_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (path, g, _, before) = written_model(dir.path());
    // Invalid weights: refused during validation.
    let (g2, mut w2) = model();
    w2.set(WeightId::new(0), WeightData::new(vec![16, 8], vec![9.0; 128]));
    let err = write_artifact(&path, &meta("orin-w4a8"), &g2, &w2).unwrap_err();
    assert!(matches!(err, ArtifactError::Invalid { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(temp_files(dir.path()).is_empty());
    read_artifact(&path, Some("orin-w4a8")).unwrap();
    // A failure after the temporary file was written: the rename onto a non-empty directory fails.
    let blocked = dir.path().join("blocked.qmb");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), "x").unwrap();
    let (_, w) = model();
    let err = write_artifact(&blocked, &meta("orin-w4a8"), &g, &w).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert!(err.to_string().contains("blocked.qmb"), "{err}");
    assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"x");
    assert!(temp_files(dir.path()).is_empty(), "{:?}", temp_files(dir.path()));
    // A successful overwrite replaces it whole.
    let (g3, w3) = table_graph(&[("w", DType::I8, vec![2], vec![1.0, -1.0])]);
    let n = write_artifact(&path, &meta("t"), &g3, &w3).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), n);
    assert_eq!(read_artifact(&path, None).unwrap().graph.to_string(), g3.to_string());
}

#[test]
fn writing_where_no_file_can_be_created_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (g, w) = model();
    // A directory that does not exist.
    let missing = dir.path().join("no/such/dir/model.qmb");
    let err = write_artifact(&missing, &meta("t"), &g, &w).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert!(err.to_string().contains("model.qmb"), "{err}");
    assert!(!dir.path().join("no").exists());
    // A "directory" that is a regular file (fails even for root).
    let file = dir.path().join("plain");
    fs::write(&file, "x").unwrap();
    let err = write_artifact(&file.join("model.qmb"), &meta("t"), &g, &w).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"x");
    // No file name.
    assert!(matches!(write_artifact(Path::new("/"), &meta("t"), &g, &w), Err(ArtifactError::Invalid { .. })));
    // A read-only directory (root ignores the permission bits: then this part cannot be tested).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        let privileged = fs::write(ro.join("probe"), "").is_ok();
        if privileged {
            eprintln!("running with privileges that ignore directory permissions: skipping the read-only directory case");
        } else {
            let err = write_artifact(&ro.join("model.qmb"), &meta("t"), &g, &w).unwrap_err();
            assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
            assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn describe_summarises_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _, bytes) = written_model(dir.path());
    let text = describe(&read_header(&path).unwrap());
    eprintln!("{text}");
    for want in ["orin-w4a8", "mamba2", "format version  1", "quambac 0.1.0-test", "weights         11", "kernel plan     5 kernels"] {
        assert!(text.contains(want), "wanted `{want}` in:\n{text}");
    }
    assert!(text.contains(&format!("({} bytes)", bytes.len())), "{text}");
    // One line per dtype, in the canonical dtype order: f32 (4 weights), f16, bf16, i64, i32, i8, i4 (2 weights, 64 + 18 bytes).
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(rows.len(), 7, "{text}");
    assert!(rows[0].trim_start().starts_with("f32") && rows[0].contains("    4 weights"), "{text}");
    assert!(rows[6].trim_start().starts_with("i4") && rows[6].contains("82 B"), "{text}");
}
