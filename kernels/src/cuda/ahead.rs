//! Weights pulled into L2 ahead of the product that reads them (sm_90).
//!
//! At one row, a layer's in_proj has more blocks than fit beside the previous layer's out_proj,
//! whose weight tiles hold the SMs' shared memory until it ends. The blocks that start only then
//! (64–128 of mamba2-2.7b's 331; `bench/RESULTS.md`, twentieth session) load their tiles from
//! DRAM once the chain has reached them. The layer's scan runs two products earlier (out_proj is
//! between), after in_proj's own loads and while DRAM is otherwise idle: right after its wait, its
//! blocks ask for the tail of the next in_proj's weight, where the tiles of those last blocks lie,
//! to be brought into L2, so that those blocks find them there.

use super::plan::{Arg, Launch, WeightTail};

/// Points each scan launch's [`Arg::WeightTail`] / [`Arg::WeightTailBytes`] at the last
/// `per_mille` thousandths of the weight of the second product launch after it (the next layer's
/// in_proj), where that product's one-row blocks each hold all their tiles (`holds_tiles`, by
/// launch index): a streaming product's blocks all start at once, and an f16-activation product
/// (our FP16 and W4A16) runs no such blocks. None where that product computes the logits (the head's
/// weight is too large to stay in L2 beside a layer's) or `per_mille` is 0.
pub(super) fn weights_ahead(launches: &mut [Launch], per_mille: u16, holds_tiles: impl Fn(usize) -> bool) {
    for at in 0..launches.len() {
        let target = (per_mille > 0).then(|| (at + 1..launches.len()).filter(|&i| is_product(&launches[i])).nth(1)).flatten();
        let tail = target.filter(|&i| holds_tiles(i) && !launches[i].head).and_then(|i| match launches[i].args.get(2) {
            Some(Arg::Weight(weight)) => Some(WeightTail { weight: *weight, per_mille }),
            _ => None,
        });
        for arg in &mut launches[at].args {
            match arg {
                Arg::WeightTail(t) | Arg::WeightTailBytes(t) => *t = tail,
                _ => {}
            }
        }
    }
}

/// Whether a launch is a product (`quamba::gemm` / `gemv`: its weight is its third argument).
fn is_product(launch: &Launch) -> bool {
    launch.kernels().any(|k| k.name.starts_with("gemm") || k.name.starts_with("gemv"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::plan::{Grid, Kernel};

    fn launch(name: &str, args: Vec<Arg>, head: bool) -> Launch {
        let kernel = Kernel { name: name.into(), grid: Grid::Rows, block: 32, shared_bytes: 0 };
        Launch { kernel, batched: None, large: None, then_large: None, args, skip_one_row: false, head, value: "%0".into() }
    }

    fn scan() -> Launch {
        launch("ssd_1", vec![Arg::Seq, Arg::WeightTail(None), Arg::WeightTailBytes(None)], false)
    }

    fn product(weight: usize, head: bool) -> Launch {
        launch("gemv_2", vec![Arg::Null, Arg::I32(0), Arg::Weight(weight)], head)
    }

    fn tails(launches: &[Launch]) -> Vec<Option<WeightTail>> {
        launches[0].args[1..].iter().map(|a| if let Arg::WeightTail(t) | Arg::WeightTailBytes(t) = a { *t } else { panic!("{a:?}") }).collect()
    }

    #[test]
    fn a_scan_points_at_the_second_product_after_it() {
        let mut l = vec![scan(), launch("rows_3", vec![], false), product(7, false), product(9, false), product(11, false)];
        weights_ahead(&mut l, 400, |_| true);
        let expected = Some(WeightTail { weight: 9, per_mille: 400 });
        assert_eq!(tails(&l), vec![expected, expected]);
        // Not where that product's blocks do not each hold their tiles.
        weights_ahead(&mut l, 400, |launch| launch != 3);
        assert_eq!(tails(&l), vec![None, None]);
    }

    #[test]
    fn none_for_the_head_nor_at_zero() {
        let mut l = vec![scan(), product(7, false), product(9, true)];
        weights_ahead(&mut l, 400, |_| true);
        assert_eq!(tails(&l), vec![None, None]);
        let mut l = vec![scan(), product(7, false), product(9, false)];
        weights_ahead(&mut l, 0, |_| true);
        assert_eq!(tails(&l), vec![None, None]);
    }

    #[test]
    fn a_tail_is_aligned_and_ends_with_the_weight() {
        for (len, per_mille) in [(13_537_280, 400), (1000, 1000), (4096, 1), (100, 500), (0, 300)] {
            let (offset, bytes) = WeightTail { weight: 0, per_mille }.range(len, usize::MAX);
            assert_eq!(offset % 16, 0);
            assert_eq!(offset + bytes, len);
            assert!(bytes * 1000 >= len * usize::from(per_mille), "{len} {per_mille}: {bytes}");
        }
        assert_eq!(WeightTail { weight: 0, per_mille: 1000 }.range(4096, usize::MAX), (0, 4096));
    }

    #[test]
    fn a_tail_stays_within_its_cap() {
        let tail = WeightTail { weight: 0, per_mille: 700 };
        assert_eq!(tail.range(13_537_280, 8_000_000), (5_537_280, 8_000_000));
        assert_eq!(tail.range(13_537_280, 12_500_000), (4_061_184, 9_476_096));
        // Aligned still, so a little under the cap.
        assert_eq!(tail.range(10_007, 1000), (9008, 999));
        assert_eq!(tail.range(10_000, 0), (10_000, 0));
    }
}
