//! `quambac synth`: random checkpoints at real shapes, loadable like the real ones, with the
//! depth and vocabulary overrides that per-layer profiling uses.

use compiler::checkpoint::load_checkpoint;
use compiler::synth::{synthesize, Like};

#[test]
fn synthesized_checkpoint_loads_at_the_requested_depth_and_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let params = synthesize(Like::Mamba2_130m, dir.path(), 3, Some(1), Some(8192)).unwrap();
    let ckpt = load_checkpoint(dir.path()).unwrap();
    assert_eq!(ckpt.config.n_layer, 1);
    assert_eq!(ckpt.config.vocab_size, 8192);
    assert_eq!(ckpt.config.d_model, 768);
    let embedding = ckpt.tensors.iter().find(|(name, _)| name.contains("embed")).expect("an embedding table");
    assert_eq!(embedding.1.shape, vec![8192, 768]);
    let loaded: usize = ckpt.tensors.values().map(|t| t.shape.iter().product::<usize>()).sum();
    assert_eq!(loaded, params, "the parameter count synth reports is what the loader reads");
}
