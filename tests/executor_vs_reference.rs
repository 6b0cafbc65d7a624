//! The optimised executor (chunked SSD, blocked GEMMs, batched prefill) against the plain
//! token-by-token reference in `common/reference_mamba.rs`, on random checkpoints whose shapes the
//! shared models do not cover: Mamba2 with ngroups = 4 and a chunk boundary inside the sequence,
//! Mamba1 with an unusual dt_rank and an untied head.

mod common;

use common::random_checkpoint::{write_random_mamba1, write_random_mamba2};
use common::reference_mamba::{rel_err, RefModel};
use compiler::model::FpModel;

fn check(dir: &std::path::Path, len: usize) {
    let reference = RefModel::from_dir(dir);
    let model = FpModel::open(dir).unwrap();
    let exec = &model.executor;
    let tokens: Vec<i64> = (0..len as i64).map(|i| (i * 131 + 7) % 256).collect();
    let want = reference.logits(&tokens);

    let prefill = exec.forward(&mut exec.new_state(1), &tokens).unwrap();
    let e = rel_err(&prefill.data, &want);
    eprintln!("{}: prefill relative error {e:.2e}", dir.display());
    assert!(e < 1e-5, "prefill differs from the sequential reference by {e:.3e}");

    // Half the sequence as a prompt, the rest one token at a time.
    let mut state = exec.new_state(1);
    let half = len / 2;
    let mut got = exec.forward(&mut state, &tokens[..half]).unwrap().data;
    for t in &tokens[half..] {
        got.extend(exec.forward(&mut state, &[*t]).unwrap().data);
    }
    let e = rel_err(&got, &want);
    assert!(e < 1e-5, "prefill + decode differs from the sequential reference by {e:.3e}");
}

#[test]
fn mamba2_with_four_groups_matches_the_sequential_reference() {
    let dir = tempfile::tempdir().unwrap();
    // 8 heads in 4 groups of B/C, chunk 16 over 70 tokens: 5 chunks, the last one partial.
    write_random_mamba2(dir.path(), 64, 2, 256, 16, 16, 4, 2, 4, 16, false, 11);
    check(dir.path(), 70);
}

#[test]
fn mamba2_with_two_groups_and_kernel_three_matches() {
    let dir = tempfile::tempdir().unwrap();
    write_random_mamba2(dir.path(), 48, 2, 256, 8, 12, 2, 2, 3, 32, true, 5);
    check(dir.path(), 45);
}

#[test]
fn mamba1_with_unusual_dt_rank_matches_the_sequential_reference() {
    let dir = tempfile::tempdir().unwrap();
    write_random_mamba1(dir.path(), 48, 3, 256, 12, 5, 2, 4, false, 3);
    check(dir.path(), 40);
}
