//! Lowering real checkpoints: the IR text is pinned by snapshots, verifies, and round-trips
//! through the parser.

use std::path::Path;

use compiler::checkpoint::load_checkpoint;
use compiler::lower::lower;

fn lowered_text(dir: &Path) -> String {
    let ckpt = load_checkpoint(dir).unwrap();
    let (graph, weights) = lower(&ckpt).unwrap();
    ir::verify(&graph).unwrap();
    weights.check_against(&graph).unwrap();
    let text = graph.to_string();
    let reparsed = ir::parse(&text).unwrap();
    ir::verify(&reparsed).unwrap();
    assert_eq!(reparsed.to_string(), text, "print → parse → print is not stable");
    text
}

#[test]
fn mamba2_tiny_lowers_to_pinned_ir() {
    insta::assert_snapshot!(lowered_text(&compiler::model::default_model_dir()));
}

#[test]
fn mamba1_state_spaces_lowers_to_pinned_ir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/mamba1-tiny-ss");
    if !dir.is_dir() {
        eprintln!("skipping: ../shared is not present");
        return;
    }
    insta::assert_snapshot!(lowered_text(&dir));
}
