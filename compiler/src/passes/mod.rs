//! The pass manager and the passes. Each pass is one file with one job; [`pipeline`] lists them in
//! order. After every pass the manager verifies the graph and checks the weight store against it,
//! and with `--emit-ir DIR` writes the IR text after each pass (`DIR/NN-name.qir`).
//!
//! Passes that only analyse (choose scales, permutations, per-layer precisions) leave their
//! decisions in the [`PassContext`]; passes that rewrite read them. That keeps each decision a
//! value that tests can look at.

pub mod blocks;
pub mod sort_cluster_heads;
pub mod choose_activation_bits;
pub mod clip_outliers;
pub mod quantize_activations;
pub mod quantize_states;
pub mod quantize_weights;
pub mod state_group_scales;
pub mod fold_norms;
pub mod rotate_hadamard;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ir::ValueId;

use crate::calibrate::CalibrationSet;
use crate::program::Program;
use crate::target::{Method, Target};
use crate::CompileError;

/// How the scale of one quantized activation is derived from calibration statistics.
#[derive(Clone, Debug, PartialEq)]
pub enum ScaleRule {
    /// One scale: absmax / 127.
    AbsMax,
    /// One scale: the mean over calibration windows of the given quantile of |x|, / 127
    /// (Quamba1's outlier suppression).
    Percentile(f32),
    /// One scale per group of channels: `group_of[c]` names channel c's group; each group's
    /// scale is its absmax / 127 (sort-and-cluster groups, per-state-group B/C).
    Grouped {
        /// Group index of every channel.
        group_of: Vec<usize>,
    },
}

/// What the passes share: the target, the calibration data, and decisions made so far.
pub struct PassContext {
    /// The compilation target.
    pub target: Target,
    /// The recipe.
    pub method: Method,
    /// Calibration windows (token ids).
    pub calib: CalibrationSet,
    /// Validation windows for sensitivity measurements (W4AX).
    pub valid: Option<CalibrationSet>,
    /// Scale rules chosen for activations (by clip_outliers, sort_cluster_heads, state_group_scales).
    pub scale_rules: HashMap<ValueId, ScaleRule>,
    /// Layers that keep 16-bit activations (W4A16 everywhere, or W4AX's choice).
    pub a16_layers: BTreeSet<usize>,
    /// Use GPTQ (instead of round-to-nearest) for 4-bit weights.
    pub gptq: bool,
    /// Show progress bars.
    pub progress: bool,
}

/// One compiler pass.
pub trait Pass {
    /// The pass's name, as used by `--emit-ir` file names.
    fn name(&self) -> &'static str;
    /// Runs the pass.
    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError>;
}

/// Runs `passes` in order, verifying after each one, optionally writing the IR after each.
pub fn run_passes(program: &mut Program, passes: &[&dyn Pass], cx: &mut PassContext, emit_ir: Option<&Path>) -> Result<(), CompileError> {
    if let Some(dir) = emit_ir {
        std::fs::create_dir_all(dir).map_err(|e| CompileError::Io { path: dir.to_path_buf(), source: e })?;
        write_ir(dir, 0, "lowered", program)?;
    }
    for (i, pass) in passes.iter().enumerate() {
        let start = std::time::Instant::now();
        pass.run(program, cx)?;
        ir::verify(&program.graph).map_err(|e| CompileError::PassBrokeIr { pass: pass.name(), errors: e })?;
        program.weights.check_against(&program.graph)?;
        if cx.progress {
            // Where a long compile goes (an 8B model takes minutes).
            eprintln!("  {:<24} {:>7.1} s", pass.name(), start.elapsed().as_secs_f64());
        }
        if let Some(dir) = emit_ir {
            write_ir(dir, i + 1, pass.name(), program)?;
        }
    }
    Ok(())
}

fn write_ir(dir: &Path, index: usize, name: &str, program: &Program) -> Result<(), CompileError> {
    let path: PathBuf = dir.join(format!("{index:02}-{name}.qir"));
    std::fs::write(&path, program.graph.to_string()).map_err(|e| CompileError::Io { path, source: e })
}
