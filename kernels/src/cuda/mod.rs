//! The CUDA backend's generator: a verified graph becomes a [`CudaPlan`] — generated CUDA source
//! specialised to the model (dimensions as template constants), device weight layouts, buffers
//! and launches. Needs no CUDA: the runtime compiles the source with NVRTC and runs the plan.

mod ahead;
mod build;
pub mod codegen;
mod knobs;
pub mod pack;
pub mod plan;
pub mod sass;
pub mod state_table;

pub use build::plan;
pub use plan::*;

/// Why a graph has no CUDA plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The graph uses an op or a combination the CUDA backend does not implement.
    #[error("the CUDA backend cannot run this graph: {0}")]
    Unsupported(String),
    /// A tuning knob (`QUAMBA_CUDA_*`) is set to a value it does not take.
    #[error("tuning knob {0}")]
    Knob(String),
}

impl CudaPlan {
    /// The generated part of the source (entry points), without the fixed library.
    pub fn generated_source(&self) -> &str {
        let marker = codegen::GENERATED_MARKER;
        self.source.find(marker).map_or(self.source.as_str(), |i| &self.source[i + marker.len()..])
    }

    /// A stable text listing of the launches, for snapshots and `quambac inspect`.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "slots {} (row bytes {:?}), states {:?}", self.slots.len(), self.slots.iter().map(|x| x.row_bytes).collect::<Vec<_>>(), self.states);
        for l in &self.launches {
            let batched = l.batched.as_ref().map_or(String::new(), |k| format!(" | batched {}", k.name));
            let large = l.large.as_ref().map_or(String::new(), |k| format!(" | {}", k.name));
            let then = l.then_large.as_ref().map_or(String::new(), |(k, _)| format!(" then {}", k.name));
            let one_row = if l.skip_one_row { " (one row: run inside another launch)" } else { "" };
            let _ = writeln!(s, "{:>5} {}{batched}{large}{then}{}{one_row}", l.value, l.kernel.name, if l.head { " (head)" } else { "" });
        }
        s
    }
}
