//! The graph container: ops in a petgraph `StableGraph`, typed ids, and the weight table.
//!
//! Ids are stable across node removal (StableGraph never reuses an index while the graph lives),
//! so a pass can hold ids while it edits. The text form renumbers values densely when printing.

use std::collections::BTreeSet;
use std::fmt;

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::op::Op;
use crate::types::{DType, TensorType};
use crate::IrError;

/// The value produced by one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(NodeIndex<u32>);

impl ValueId {
    /// The raw index, stable for the graph's lifetime.
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// A weight in the graph's weight table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(u32);

impl WeightId {
    /// Creates an id from a table index.
    pub fn new(index: usize) -> WeightId {
        WeightId(index as u32)
    }
    /// The table index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for WeightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// A weight's declaration: the data lives outside the IR, keyed by [`WeightId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightDecl {
    /// The checkpoint tensor name (or a name a pass gave a derived weight).
    pub name: String,
    /// The dtype the weight is stored in.
    pub dtype: DType,
    /// The weight's shape.
    pub shape: Vec<usize>,
}

/// Which Mamba architecture the graph implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// Mamba (selective scan, arXiv 2312.00752).
    Mamba1,
    /// Mamba-2 (SSD, arXiv 2405.21060).
    Mamba2,
}

impl Family {
    /// The text-form name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mamba1 => "mamba1",
            Family::Mamba2 => "mamba2",
        }
    }
}

/// A node: its op and the type of the value it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// The type of the produced value.
    pub ty: TensorType,
}

/// A Mamba model as a dataflow graph. Edges point from operand to user and carry the operand slot.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The architecture.
    pub family: Family,
    weights: Vec<WeightDecl>,
    nodes: StableGraph<Node, u8>,
    outputs: Vec<ValueId>,
}

impl Graph {
    /// An empty graph of the given family.
    pub fn new(family: Family) -> Graph {
        Graph { family, weights: Vec::new(), nodes: StableGraph::new(), outputs: Vec::new() }
    }

    /// Declares a weight and returns its id.
    pub fn add_weight(&mut self, decl: WeightDecl) -> WeightId {
        self.weights.push(decl);
        WeightId::new(self.weights.len() - 1)
    }

    /// All weight declarations, indexed by [`WeightId::index`].
    pub fn weights(&self) -> &[WeightDecl] {
        &self.weights
    }

    /// One weight's declaration.
    pub fn weight(&self, id: WeightId) -> &WeightDecl {
        &self.weights[id.index()]
    }

    /// Mutable access to a weight's declaration, for passes that reshape or retype a weight.
    pub fn weight_mut(&mut self, id: WeightId) -> &mut WeightDecl {
        &mut self.weights[id.index()]
    }

    /// Adds a node, inferring its type from the operands. Fails if the operands don't fit the op.
    pub fn add(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, IrError> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| &self.nodes[v.0].ty).collect();
        let ty = op
            .infer(&types, &self.weights)
            .map_err(|detail| IrError::Type { op: op.name(), detail })?;
        Ok(self.add_typed(op, ty, inputs))
    }

    /// Adds a node with a declared type, unchecked (the parser uses this; the verifier checks it).
    pub fn add_typed(&mut self, op: Op, ty: TensorType, inputs: &[ValueId]) -> ValueId {
        let id = self.nodes.add_node(Node { op, ty });
        for (slot, v) in inputs.iter().enumerate() {
            self.nodes.add_edge(v.0, id, slot as u8);
        }
        ValueId(id)
    }

    /// The node producing `v`.
    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.0]
    }

    /// Mutable access to the node producing `v`.
    pub fn node_mut(&mut self, v: ValueId) -> &mut Node {
        &mut self.nodes[v.0]
    }

    /// Whether `v` names a live node.
    pub fn contains(&self, v: ValueId) -> bool {
        self.nodes.contains_node(v.0)
    }

    /// The operands of `v`, in slot order.
    pub fn inputs(&self, v: ValueId) -> Vec<ValueId> {
        let mut edges: Vec<(u8, ValueId)> = self
            .nodes
            .edges_directed(v.0, Direction::Incoming)
            .map(|e| (*e.weight(), ValueId(e.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// The nodes that use `v`, each once, in id order.
    pub fn users(&self, v: ValueId) -> Vec<ValueId> {
        let set: BTreeSet<ValueId> =
            self.nodes.neighbors_directed(v.0, Direction::Outgoing).map(ValueId).collect();
        set.into_iter().collect()
    }

    /// Makes every use of `old` (operands and graph outputs) use `new` instead.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<_> = self
            .nodes
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (edge, target, slot) in uses {
            self.nodes.remove_edge(edge);
            self.nodes.add_edge(new.0, target, slot);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Replaces operand `slot` of `user` with `new`.
    pub fn set_input(&mut self, user: ValueId, slot: usize, new: ValueId) {
        let edge = self
            .nodes
            .edges_directed(user.0, Direction::Incoming)
            .find(|e| *e.weight() as usize == slot)
            .map(|e| e.id());
        if let Some(edge) = edge {
            self.nodes.remove_edge(edge);
        }
        self.nodes.add_edge(new.0, user.0, slot as u8);
    }

    /// Removes a node; its edges go with it.
    pub fn remove(&mut self, v: ValueId) {
        self.nodes.remove_node(v.0);
    }

    /// Marks `v` as a graph output.
    pub fn add_output(&mut self, v: ValueId) {
        self.outputs.push(v);
    }

    /// The graph outputs.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.node_count() == 0
    }

    /// All live values in id order.
    pub fn values(&self) -> Vec<ValueId> {
        let mut v: Vec<ValueId> = self.nodes.node_indices().map(ValueId).collect();
        v.sort();
        v
    }

    /// A deterministic topological order (Kahn's algorithm, smallest id first among ready nodes),
    /// or `None` if the graph has a cycle.
    pub fn topo_order(&self) -> Option<Vec<ValueId>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut pending: HashMap<ValueId, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for v in self.values() {
            let n = self.nodes.edges_directed(v.0, Direction::Incoming).count();
            if n == 0 {
                ready.push(Reverse(v));
            } else {
                pending.insert(v, n);
            }
        }
        let mut order = Vec::with_capacity(self.len());
        while let Some(Reverse(v)) = ready.pop() {
            order.push(v);
            for e in self.nodes.edges_directed(v.0, Direction::Outgoing) {
                let t = ValueId(e.target());
                let left = pending.get_mut(&t).expect("every user has a pending count");
                *left -= 1;
                if *left == 0 {
                    pending.remove(&t);
                    ready.push(Reverse(t));
                }
            }
        }
        (order.len() == self.len()).then_some(order)
    }

    /// Removes nodes that contribute to no output (repeatedly, until none is left).
    pub fn remove_dead(&mut self) {
        let mut live: BTreeSet<ValueId> = BTreeSet::new();
        let mut stack: Vec<ValueId> = self.outputs.clone();
        while let Some(v) = stack.pop() {
            if live.insert(v) {
                stack.extend(self.inputs(v));
            }
        }
        for v in self.values() {
            if !live.contains(&v) {
                self.remove(v);
            }
        }
    }

    /// Drops weights no node uses and renumbers the rest densely (in their old order).
    /// Returns, for each old id, its new id (None if dropped), so callers can remap their data.
    pub fn compact_weights(&mut self) -> Vec<Option<WeightId>> {
        let used: BTreeSet<WeightId> = self.values().iter().flat_map(|v| self.node(*v).op.weights()).collect();
        let mut map = vec![None; self.weights.len()];
        let mut kept = Vec::new();
        for (i, decl) in self.weights.iter().enumerate() {
            if used.contains(&WeightId::new(i)) {
                map[i] = Some(WeightId::new(kept.len()));
                kept.push(decl.clone());
            }
        }
        self.weights = kept;
        for v in self.values() {
            self.nodes[v.0].op.map_weights(|w| map[w.index()].unwrap_or(w));
        }
        map
    }

    /// The number of parameters (elements over all declared weights that some node uses).
    pub fn parameter_count(&self) -> usize {
        let used: BTreeSet<WeightId> = self.values().iter().flat_map(|v| self.node(*v).op.weights()).collect();
        used.iter().map(|w| self.weight(*w).shape.iter().product::<usize>()).sum()
    }
}
