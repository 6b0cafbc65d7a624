//! Outlier suppression for the SSM input (Quamba1, arXiv 2410.13229): the scale of the selective
//! scan's input x is set by a high percentile of |x| instead of its maximum, so a handful of
//! outlier activations do not stretch the int8 grid for everything else. Values beyond the
//! percentile saturate. Used for Mamba1 (both Quamba recipes) and for Mamba2 under Quamba1.

use super::{blocks::blocks, Pass, PassContext, ScaleRule};
use crate::program::Program;
use crate::CompileError;

/// The quantile of |x| that sets the scale (Quamba1 uses 99.95%).
pub const SSM_INPUT_QUANTILE: f32 = 0.9995;

/// Chooses percentile scaling for every block's SSM input x (unless a rule was already chosen).
pub struct ClipOutliers;

impl Pass for ClipOutliers {
    fn name(&self) -> &'static str {
        "clip_outliers"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        for block in blocks(&program.graph)? {
            cx.scale_rules.entry(block.x).or_insert(ScaleRule::Percentile(SSM_INPUT_QUANTILE));
        }
        Ok(())
    }
}
