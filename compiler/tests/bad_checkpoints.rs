//! Checkpoints that are wrong in the ways users meet give an error naming the file or tensor and
//! the problem; sharded checkpoints load like single files.

use std::collections::BTreeMap;
use std::path::Path;

use compiler::checkpoint::{load_checkpoint, CheckpointError, RawTensor};
use safetensors::tensor::TensorView;

fn embedded() -> std::path::PathBuf {
    compiler::model::default_model_dir()
}

/// A temp copy of the embedded model whose tensors and config were passed through `edit`.
fn edited(edit_tensors: impl FnOnce(&mut BTreeMap<String, RawTensor>), edit_config: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: BTreeMap<String, RawTensor> =
        compiler::checkpoint::safetensors_file::read_safetensors(&embedded().join("model.safetensors")).unwrap().into_iter().collect();
    edit_tensors(&mut tensors);
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(embedded().join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, RawTensor>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, t)| {
            let dtype = match t.dtype {
                ir::DType::F32 => safetensors::Dtype::F32,
                ir::DType::F16 => safetensors::Dtype::F16,
                ir::DType::BF16 => safetensors::Dtype::BF16,
                other => panic!("test writes no {other}"),
            };
            (n.clone(), TensorView::new(dtype, t.shape.clone(), &t.data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load_checkpoint(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let d = edited(|t| drop(t.remove("backbone.layers.2.mixer.D")), |_| {});
    let e = load_err(d.path());
    assert!(e.contains("missing tensor `backbone.layers.2.mixer.D`"), "{e}");
}

#[test]
fn extra_tensor_is_named() {
    let d = edited(
        |t| {
            let x = t["backbone.norm_f.weight"].clone();
            t.insert("backbone.layers.9.mixer.D".into(), x);
        },
        |_| {},
    );
    let e = load_err(d.path());
    assert!(e.contains("unexpected tensor `backbone.layers.9.mixer.D`"), "{e}");
}

#[test]
fn wrong_shape_names_expected_and_found() {
    let d = edited(
        |t| {
            let x = t.get_mut("backbone.layers.0.mixer.out_proj.weight").unwrap();
            x.shape = vec![256, 128];
        },
        |_| {},
    );
    let e = load_err(d.path());
    assert!(e.contains("`backbone.layers.0.mixer.out_proj.weight` has shape [256, 128], expected [128, 256]"), "{e}");
}

#[test]
fn non_finite_weights_are_refused() {
    let d = edited(
        |t| {
            let x = t.get_mut("backbone.layers.1.mixer.dt_bias").unwrap();
            x.data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
            x.data[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
        },
        |_| {},
    );
    let e = load_err(d.path());
    assert!(e.contains("`backbone.layers.1.mixer.dt_bias` contains 2 non-finite values"), "{e}");
}

#[test]
fn config_problems_are_named() {
    type ConfigEdit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(ConfigEdit, &str)> = vec![
        (Box::new(|c| c["model_type"] = "mamba3".into()), "unknown model_type `mamba3`"),
        (Box::new(|c| drop(c.as_object_mut().unwrap().remove("hidden_size"))), "missing required field `hidden_size`"),
        (Box::new(|c| c["num_heads"] = 7.into()), "num_heads 7"),
        (Box::new(|c| c["state_size"] = "big".into()), "`state_size` must be a non-negative integer"),
        (Box::new(|c| c["n_groups"] = 3.into()), "not a multiple of n_groups 3"),
    ];
    for (edit, want) in cases {
        let d = edited(|_| {}, edit);
        let e = load_err(d.path());
        assert!(e.contains(want), "wanted `{want}`, got `{e}`");
        assert!(e.contains("config.json"), "{e}");
    }
}

#[test]
fn truncated_safetensors_and_missing_files_are_reported() {
    let d = edited(|_| {}, |_| {});
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");

    std::fs::remove_file(&path).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("no weights found"), "{e}");

    let e = load_err(&d.path().join("nope"));
    assert!(e.contains("not a checkpoint directory"), "{e}");
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let single = load_checkpoint(&embedded()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in single.tensors.iter().enumerate() {
        let (shard, file) = if i % 2 == 0 { (&mut a, "model-00001-of-00002.safetensors") } else { (&mut b, "model-00002-of-00002.safetensors") };
        shard.insert(name.clone(), t.clone());
        map.insert(name.clone(), file.into());
    }
    write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &a);
    write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &b);
    std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    std::fs::copy(embedded().join("config.json"), dir.path().join("config.json")).unwrap();
    let sharded = load_checkpoint(dir.path()).unwrap();
    assert_eq!(sharded.tensors, single.tensors);

    // A shard listed in the index but absent is reported by name.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn untied_head_is_loaded_and_used() {
    // Untie with a head that differs from the embedding: the loader must keep it.
    let d = edited(
        |t| {
            let mut head = t["backbone.embeddings.weight"].clone();
            head.data.iter_mut().step_by(4).for_each(|b| *b ^= 1);
            t.insert("lm_head.weight".into(), head);
        },
        |c| c["tie_word_embeddings"] = false.into(),
    );
    let ckpt = load_checkpoint(d.path()).unwrap();
    assert!(!ckpt.config.tied);
    let (graph, _) = compiler::lower::lower(&ckpt).unwrap();
    assert!(graph.to_string().contains("\"lm_head.weight\""));
}

#[test]
fn errors_are_typed() {
    let d = edited(|t| drop(t.remove("backbone.norm_f.weight")), |_| {});
    assert!(matches!(load_checkpoint(d.path()), Err(CheckpointError::MissingTensor { .. })));
}
