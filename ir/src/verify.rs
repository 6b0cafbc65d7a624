//! The verifier. Every pass ends with it and every backend takes only a [`VerifiedGraph`].
//!
//! Checks, all reported together rather than stopping at the first:
//! 1. the graph is acyclic;
//! 2. exactly one `tokens` node exists;
//! 3. each node has as many operands as its op takes;
//! 4. every weight an op names is declared;
//! 5. each node's declared type equals the type its op infers from the operands (which also checks
//!    every weight's shape against the op);
//! 6. the graph has at least one output, and every node contributes to some output.

use std::collections::HashSet;
use std::fmt;

use crate::graph::{Graph, ValueId};
use crate::op::Op;

/// One verifier finding, attached to the value it concerns when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The offending value (raw id), if the error concerns one.
    pub value: Option<ValueId>,
    /// What is wrong.
    pub message: String,
}

/// Every finding of one verifier run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match e.value {
                Some(v) => write!(f, "{v}: {}", e.message)?,
                None => f.write_str(&e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for VerifyErrors {}

/// Runs every check; `Ok` means the graph is well formed.
pub fn verify(graph: &Graph) -> Result<(), VerifyErrors> {
    let mut errors = Vec::new();
    let mut report = |value: Option<ValueId>, message: String| errors.push(VerifyError { value, message });

    if graph.topo_order().is_none() {
        report(None, "the graph has a cycle".into());
    }
    let values = graph.values();
    let tokens = values.iter().filter(|v| matches!(graph.node(**v).op, Op::Tokens)).count();
    if tokens != 1 {
        report(None, format!("expected exactly one `tokens` node, found {tokens}"));
    }
    for &v in &values {
        let node = graph.node(v);
        let inputs = graph.inputs(v);
        if inputs.len() != node.op.arity() {
            report(Some(v), format!("`{}` takes {} operands, has {}", node.op.name(), node.op.arity(), inputs.len()));
            continue;
        }
        if let Some(w) = node.op.weights().into_iter().find(|w| w.index() >= graph.weights().len()) {
            report(Some(v), format!("names undeclared weight {w}"));
            continue;
        }
        let types: Vec<_> = inputs.iter().map(|i| &graph.node(*i).ty).collect();
        match node.op.infer(&types, graph.weights()) {
            Ok(ty) if ty != node.ty => report(Some(v), format!("declared type {} but `{}` produces {ty}", node.ty, node.op.name())),
            Ok(_) => {}
            Err(e) => report(Some(v), e),
        }
    }
    if graph.outputs().is_empty() {
        report(None, "the graph has no outputs".into());
    }
    let mut live: HashSet<ValueId> = HashSet::new();
    let mut stack: Vec<ValueId> = graph.outputs().iter().copied().filter(|v| graph.contains(*v)).collect();
    for o in graph.outputs() {
        if !graph.contains(*o) {
            report(Some(*o), "output names a removed value".into());
        }
    }
    while let Some(v) = stack.pop() {
        if live.insert(v) {
            stack.extend(graph.inputs(v));
        }
    }
    for &v in &values {
        if !live.contains(&v) {
            report(Some(v), format!("dead `{}`: it contributes to no output", graph.node(v).op.name()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errors))
    }
}

/// A graph that passed [`verify`]. Backends accept only this type, so unverified IR cannot reach them.
#[derive(Clone, Debug)]
pub struct VerifiedGraph(Graph);

impl VerifiedGraph {
    /// Verifies `graph`, returning it wrapped on success.
    pub fn new(graph: Graph) -> Result<VerifiedGraph, VerifyErrors> {
        verify(&graph)?;
        Ok(VerifiedGraph(graph))
    }

    /// The graph, for editing; it must be verified again to get back a `VerifiedGraph`.
    pub fn into_inner(self) -> Graph {
        self.0
    }
}

impl std::ops::Deref for VerifiedGraph {
    type Target = Graph;
    fn deref(&self) -> &Graph {
        &self.0
    }
}
