//! The decode plan (one token per sequence, `runtime/src/cpu/step/`) against the general
//! interpreter on the same states, at shapes where the plan splits products and scan / SSD steps
//! between threads (odd widths, several groups, batch 2): the split must not change a bit
//! (1 thread vs 3 threads), and the plan must stay within 1e-5 (relative) of the interpreter, whose
//! exponentials and SSD sums it computes differently (`runtime/src/cpu/fastmath.rs`, `ssd_step`).

mod common;

use common::random_checkpoint::{write_random_mamba1, write_random_mamba2};
use common::reference_mamba::rel_err;
use compiler::model::FpModel;

/// Logits of a prompt, then `steps` decode steps of every sequence, on the plan or not.
fn decode(exec: &runtime::Executor, batch: usize, steps: usize, plan: bool) -> Vec<f32> {
    let mut state = exec.new_state(batch);
    let prompt: Vec<i64> = (0..batch as i64 * 7).map(|i| (i * 37 + 3) % 200).collect();
    let mut all = exec.forward(&mut state, &prompt).unwrap().data;
    for s in 0..steps as i64 {
        let tokens: Vec<i64> = (0..batch as i64).map(|b| (s * 13 + b * 101 + 5) % 200).collect();
        all.extend(exec.forward_profiled(&mut state, &tokens, plan, None).unwrap().data);
    }
    all
}

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn check(dir: &std::path::Path) {
    let model = FpModel::open(dir).unwrap();
    let exec = &model.executor;
    for batch in [1, 2] {
        let serial = on_threads(1, || decode(exec, batch, 6, true));
        let split = on_threads(3, || decode(exec, batch, 6, true));
        let first_diff = serial.iter().zip(&split).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_diff, None, "batch {batch}: 1 vs 3 threads differ");
        let general = on_threads(3, || decode(exec, batch, 6, false));
        let e = rel_err(&split, &general);
        assert!(e < 1e-5, "batch {batch}: plan vs interpreter relative error {e:.2e}");
    }
}

#[test]
fn mamba2_decode_plan_splits_without_changing_values() {
    let dir = tempfile::tempdir().unwrap();
    // d_inner 560 (14 heads of 40), 2 groups, d_state 128: in_proj (1646 outputs, not a multiple
    // of 4), out_proj and the SSD step are split in chunks.
    write_random_mamba2(dir.path(), 280, 2, 256, 128, 40, 2, 2, 4, 16, false, 21);
    check(dir.path());
}

#[test]
fn mamba1_decode_plan_splits_without_changing_values() {
    let dir = tempfile::tempdir().unwrap();
    // d_inner 362, d_state 16: in_proj and the scan step are split; x_proj stays on one thread.
    write_random_mamba1(dir.path(), 181, 2, 256, 16, 7, 2, 4, true, 22);
    check(dir.path());
}
