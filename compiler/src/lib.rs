//! quambac's library: checkpoint loading, lowering to the IR, and (later) the quantization passes.
//!
//! ```text
//!  checkpoint dir ──load──▶ Checkpoint ──lower──▶ ir::Graph + Weights ──verify──▶ runtime
//!  (safetensors | pytorch_model.bin)                 (passes: issue 3)
//! ```
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod lower;
pub mod model;
