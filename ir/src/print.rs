//! The canonical text form of a graph.
//!
//! ```text
//! quamba-ir 1 mamba2
//! weight @0 "backbone.embeddings.weight" f32[8192, 128]
//! %0 = tokens : i64[B, L]
//! %1 = embedding %0 table=@0 : f32[B, L, 128]
//! return %1
//! ```
//!
//! Values are printed in a deterministic topological order and renumbered densely, so removing a
//! node in a pass does not renumber every later line of a snapshot.

use std::collections::HashMap;
use std::fmt::{self, Write};

use crate::graph::{Graph, ValueId};

/// The version written on the first line; the parser refuses others.
pub const TEXT_FORMAT_VERSION: u32 = 1;

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "quamba-ir {TEXT_FORMAT_VERSION} {}", self.family.name())?;
        for (i, w) in self.weights().iter().enumerate() {
            let dims: Vec<String> = w.shape.iter().map(|d| d.to_string()).collect();
            writeln!(f, "weight @{i} {:?} {}[{}]", w.name, w.dtype, dims.join(", "))?;
        }
        // A cyclic graph has no topological order: print in id order so the verifier's report
        // can still show it.
        let order = self.topo_order().unwrap_or_else(|| self.values());
        let dense: HashMap<ValueId, usize> = order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let name = |v: &ValueId| dense.get(v).map_or_else(|| format!("%?{}", v.index()), |i| format!("%{i}"));
        for v in &order {
            let node = self.node(*v);
            let mut line = format!("{} = {}", name(v), node.op.name());
            for input in self.inputs(*v) {
                write!(line, " {}", name(&input))?;
            }
            for (key, value) in node.op.attrs() {
                write!(line, " {key}={value}")?;
            }
            writeln!(f, "{line} : {}", node.ty)?;
        }
        let outs: Vec<String> = self.outputs().iter().map(name).collect();
        writeln!(f, "return {}", outs.join(", "))
    }
}
