//! # The quamba graph IR
//!
//! A Mamba model is a dataflow graph of [`Op`]s over values of type [`TensorType`]. Activations are
//! `[B, L, width]` with symbolic batch `B` and sequence length `L`, so one graph runs prefill and
//! decode. Weights are declared in a table ([`WeightDecl`], referenced as `@N`) whose data lives
//! outside the IR.
//!
//! - [`op`]: the closed op enum, its attributes and typing rules;
//! - [`graph`]: storage (petgraph `StableGraph`), typed ids [`ValueId`] / [`WeightId`];
//! - [`print`] / [`parse`]: the stable text form and its parser (they round-trip);
//! - [`verify`]: the verifier and [`VerifiedGraph`], the only graph a backend accepts.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod graph;
pub mod op;
pub mod parse;
pub mod print;
pub mod types;
pub mod verify;

pub use graph::{Family, Graph, Node, ValueId, WeightDecl, WeightId};
pub use op::{Activation, Attr, Op, StateQuant};
pub use parse::parse;
pub use types::{DType, Dim, TensorType};
pub use verify::{verify, VerifiedGraph, VerifyError, VerifyErrors};

/// Errors building or parsing IR.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    /// An op was given operands it cannot take (a bug in the caller, or a malformed model).
    #[error("`{op}`: {detail}")]
    Type {
        /// The op's name.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// The text form could not be read.
    #[error("line {line}: {msg}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        msg: String,
    },
}
