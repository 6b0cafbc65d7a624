//! Per-state-group quantization of B and C (Quamba2 §4.1): Mamba2's SSD shares B and C across
//! the heads of one of `ngroups` groups, and groups differ in range, so each group of
//! `d_state` channels gets its own scale. With ngroups = 1 this is a per-tensor scale.

use ir::Op;

use super::{blocks::blocks, Pass, PassContext, ScaleRule};
use crate::program::Program;
use crate::CompileError;

/// Gives B and C of every Mamba2 block one scale per SSD group.
pub struct StateGroupScales;

impl Pass for StateGroupScales {
    fn name(&self) -> &'static str {
        "state_group_scales"
    }

    fn run(&self, program: &mut Program, cx: &mut PassContext) -> Result<(), CompileError> {
        for block in blocks(&program.graph)? {
            let Op::Ssd { groups, d_state, .. } = program.graph.node(block.ssm).op else { continue };
            let group_of: Vec<usize> = (0..groups * d_state).map(|c| c / d_state).collect();
            cx.scale_rules.insert(block.b, ScaleRule::Grouped { group_of: group_of.clone() });
            cx.scale_rules.insert(block.c, ScaleRule::Grouped { group_of });
        }
        Ok(())
    }
}
