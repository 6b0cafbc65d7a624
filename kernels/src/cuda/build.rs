//! Turns a verified graph into a [`CudaPlan`]: fusion decisions, generated entry points, buffers.
//!
//! Fusions, all local and all exact rewrites of what the CPU executor computes:
//! - `split` is a view (column offset + parent stride), never a copy;
//! - `quantize → dequantize` is a fake-quantizing load in the consumer (no int8 round trip);
//! - chains of row ops (`rms_norm`, `gated_rms_norm`, `hadamard`, ending in a `quantize` that only
//!   feeds quantized linears) run in one block per row with the row in shared memory;
//! - `causal_conv1d → silu` is one kernel; `x · silu(z)` is one kernel, or the first stage of the
//!   row chain that is its only user;
//! - a linear whose only user is a residual `add` adds the residual in its epilogue;
//! - at one row (batch-1 decode): a conv's step runs in the GEMV computing its input, with the
//!   quantize of its output (Mamba1's x_proj input), and Mamba1's dt_proj runs in the scan
//!   (the same tensor-core products, in the same order, as its own decode kernel); the SSD step
//!   gates its output for the split gated norm chain after it and sums its squares per block,
//!   so that the chain only adds up those sums (the same operations per element).
//!
//! Everything else is one kernel per op. Every kernel is instantiated with the model's
//! dimensions as template constants in a generated `extern "C"` entry point.

use std::collections::{BTreeMap, HashMap, HashSet};

use ir::{Activation, DType, Graph, Op, StateQuant, ValueId, VerifiedGraph, WeightId};

use super::codegen::{self, GemmShape, StateForm};
use super::plan::*;
use super::PlanError;

/// Where a value lives on the device.
#[derive(Clone, Debug)]
enum Repr {
    Tokens,
    F32(View),
    /// Stored int8 rows; `source` is the f32 view it quantized, when that view is still readable.
    I8 { buffer: BufferId, stride: usize, source: Option<View> },
    /// A quantize consumed only through dequantize: nothing is stored.
    VirtualQuantize { source: View, scale: usize, per_column: bool },
    /// An activation folded into its only user (a `mul`).
    DeferredSilu(View),
    /// `a · silu(z)` folded into the row chain that is its only user (Mamba1's gate before the
    /// Hadamard transform): the chain loads `a` and multiplies by `silu(z)` as it does.
    DeferredGate { a: View, z: View },
}

#[derive(Clone, Debug)]
struct View {
    buffer: BufferId,
    col: usize,
    stride: usize,
    fq: Option<(usize, bool)>,
}

impl View {
    fn to_operand(&self) -> Operand {
        Operand { buffer: self.buffer, col: self.col, stride: self.stride, scale: self.fq.map(|f| f.0), scale_per_column: self.fq.is_some_and(|f| f.1) }
    }

    fn operand(&self) -> Arg {
        Arg::Operand(self.to_operand())
    }
}

struct Builder<'g> {
    g: &'g Graph,
    name: HashMap<ValueId, usize>,
    repr: HashMap<ValueId, Repr>,
    fused: HashSet<ValueId>,
    buffers: Vec<(usize, bool)>,
    launches: Vec<Launch>,
    /// Entry-point source by name, in first-use order.
    entries: BTreeMap<usize, (String, String)>,
    entry_by_body: HashMap<String, String>,
    weights: Vec<WeightUpload>,
    gemm_kind: HashMap<WeightId, u8>,
    states: Vec<usize>,
    /// The product launch writing each product output buffer, for epilogues added later.
    products: HashMap<BufferId, ProductSite>,
    /// The one-row product launch that runs the conv step writing each conv output buffer.
    conv_steps: HashMap<BufferId, usize>,
    /// RMS norm → quantize row kernels by their int8 output buffer, for the product after one to
    /// run in its one-row kernel.
    norm_rows: HashMap<BufferId, NormRows>,
    /// SSD launches by their output buffer, for the gated norm chain after one to have its
    /// one-row step gate its output.
    ssd_steps: HashMap<BufferId, SsdStep>,
    /// Product launches whose one-row blocks each hold all their weight tiles (a bulk one-row
    /// product that does not stream): those that start late fetch theirs late (`ahead.rs`).
    tile_holders: HashSet<usize>,
}

/// An SSD launch as planned.
struct SsdStep {
    launch: usize,
    value: ValueId,
    /// The one-row step's entry point when it gates its output ([`codegen::ssd`] gated).
    gated_entry: String,
    /// Its blocks per row (the partial sums of squares it writes per row), and output columns
    /// per block.
    parts: usize,
    rows_per_block: usize,
}

/// An RMS norm → quantize row kernel (and nothing else) as planned.
struct NormRows {
    launch: usize,
    /// The quantize's value.
    value: ValueId,
    x: View,
    weight: Option<WeightId>,
    eps: f32,
    /// The quantize's scale; none for a chain that stores the normed row in f32.
    scale: Option<WeightId>,
    per_column: bool,
}

/// Where a product was planned: what a later op needs to fold itself into its one-row kernel.
struct ProductSite {
    launch: usize,
    shape: GemmShape,
    one_row: Option<codegen::GemvConfig>,
    residual: bool,
    /// The graph value it computes.
    value: ValueId,
    /// An f16 product's input as its producer left it (possibly fake-quantized), and the launch
    /// that materialized it plainly for the product, if one did.
    float_input: Option<(View, Option<usize>)>,
    /// The norm its one-row kernel runs on its input row.
    norm: Option<codegen::NormPrologue>,
}

/// Builds the plan of `graph`.
pub fn plan(graph: &VerifiedGraph) -> Result<CudaPlan, PlanError> {
    super::knobs::check()?;
    let g: &Graph = graph;
    let order = g.topo_order().ok_or_else(|| PlanError::Unsupported("the graph has a cycle".into()))?;
    let name = order.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    let mut b = Builder {
        g,
        name,
        repr: HashMap::new(),
        fused: HashSet::new(),
        buffers: Vec::new(),
        launches: Vec::new(),
        entries: BTreeMap::new(),
        entry_by_body: HashMap::new(),
        weights: vec![WeightUpload::Unused; g.weights().len()],
        gemm_kind: HashMap::new(),
        states: Vec::new(),
        products: HashMap::new(),
        conv_steps: HashMap::new(),
        norm_rows: HashMap::new(),
        ssd_steps: HashMap::new(),
        tile_holders: HashSet::new(),
    };
    b.choose_gemm_layouts(&order)?;
    for v in &order {
        if !b.fused.contains(v) && !b.repr.contains_key(v) {
            b.lower(*v)?;
        }
    }
    super::ahead::weights_ahead(&mut b.launches, codegen::l2_ahead_per_mille(), |launch| b.tile_holders.contains(&launch));
    let outputs = g.outputs();
    let [out] = outputs else { return Err(PlanError::Unsupported(format!("the CUDA backend runs graphs with one output, this one has {}", outputs.len()))) };
    let vocab = g.node(*out).ty.width().unwrap_or(0);
    let logits = match b.repr.get(out) {
        Some(Repr::F32(v)) if v.col == 0 && v.stride == vocab && v.fq.is_none() => v.buffer,
        _ => return Err(PlanError::Unsupported("the graph output is not a plain f32 buffer".into())),
    };
    let (buffers, slots) = assign_slots(&b.buffers, &b.launches, logits);
    // An epilogue folded in later replaces a product's kernel, whose entry no launch runs now.
    let launched: HashSet<&str> = b.launches.iter().flat_map(|l| l.kernels()).map(|k| k.name.as_str()).collect();
    let entries: Vec<String> = b.entries.into_values().filter(|(name, _)| launched.contains(name.as_str())).map(|(_, src)| src).collect();
    let source = codegen::source(&entries, vocab);
    Ok(CudaPlan { source, weights: b.weights, buffers, slots, states: b.states, launches: b.launches, logits, vocab })
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

impl Builder<'_> {
    fn unsupported<T>(&self, v: ValueId, what: &str) -> Result<T, PlanError> {
        Err(PlanError::Unsupported(format!("%{} ({}): {what}", self.name[&v], self.g.node(v).op.name())))
    }

    fn width(&self, v: ValueId) -> usize {
        self.g.node(v).ty.width().unwrap_or(0)
    }

    /// Layout of every matrix a tensor-core product reads, decided before any lookup uses it.
    fn choose_gemm_layouts(&mut self, order: &[ValueId]) -> Result<(), PlanError> {
        for v in order {
            let (weight, kind) = match &self.g.node(*v).op {
                Op::Linear { weight, .. } | Op::LmHead { weight } => (*weight, 0u8),
                Op::QLinear { weight, act_scale, .. } => {
                    let kind = match (self.g.weight(*weight).dtype, act_scale) {
                        (DType::I8, Some(_)) => 2,
                        (DType::I4, Some(_)) => 3,
                        (DType::I4, None) => 1,
                        // int8 weight-only (Mamba1's dt_proj): its integers are exact in f16.
                        (DType::I8, None) => 0,
                        (dtype, _) => return self.unsupported(*v, &format!("no kernel for {} weights with these activations", dtype.name())),
                    };
                    (*weight, kind)
                }
                _ => continue,
            };
            if let Some(previous) = self.gemm_kind.insert(weight, kind) {
                if previous != kind {
                    return self.unsupported(*v, "a weight is read by products of two different layouts");
                }
            }
            let shape = &self.g.weight(weight).shape;
            self.weights[weight.index()] = WeightUpload::Packed { kind, n: shape[0], k: shape[1] };
        }
        Ok(())
    }

    fn use_f32(&mut self, w: WeightId, len: usize) -> Arg {
        let len = len.max(self.g.weight(w).shape.iter().product());
        match &mut self.weights[w.index()] {
            WeightUpload::F32 { len: l } => *l = (*l).max(len),
            slot => *slot = WeightUpload::F32 { len },
        }
        Arg::Weight(w.index())
    }

    /// A scan's state form and its scale table and group map arguments (null for an f32 state);
    /// `lane_major`: the lanes of a kernel that keeps each thread's states together.
    fn state_form(&mut self, quant: Option<StateQuant>, lane_major: Option<usize>) -> (StateForm, [Arg; 2]) {
        let Some(StateQuant { scale, group }) = quant else { return (StateForm::F32, [Arg::Null, Arg::Null]) };
        let (groups, columns) = (self.g.weight(scale).shape[0], self.g.weight(scale).shape[1]);
        let form = StateForm { columns, scale_floats: groups * columns * 2, grouped: group.is_some() };
        let lanes = if columns > 1 { lane_major.unwrap_or(0) } else { 0 };
        self.weights[scale.index()] = WeightUpload::StateScales { groups, columns, lanes };
        let group_arg = match group {
            Some(g) => {
                self.weights[g.index()] = WeightUpload::I32 { len: self.g.weight(g).shape.iter().product() };
                Arg::Weight(g.index())
            }
            None => Arg::Null,
        };
        (form, [Arg::Weight(scale.index()), group_arg])
    }

    fn opt_f32(&mut self, w: Option<WeightId>) -> Arg {
        match w {
            Some(w) => self.use_f32(w, 0),
            None => Arg::Null,
        }
    }

    fn new_buffer(&mut self, row_bytes: usize, int8: bool) -> BufferId {
        self.buffers.push((row_bytes, int8));
        self.buffers.len() - 1
    }

    fn f32_out(&mut self, v: ValueId) -> View {
        let w = self.width(v);
        View { buffer: self.new_buffer(w * 4, false), col: 0, stride: w, fq: None }
    }

    /// The entry point named for `body`, created on first use.
    fn entry(&mut self, prefix: &str, body: String) -> String {
        let body = if prefix == "rows" && std::env::var("QUAMBA_CUDA_ROW_TRIGGER").is_ok_and(|v| v == "exit") { codegen::trigger_at_exit(&body) } else { body };
        if let Some(name) = self.entry_by_body.get(&body) {
            return name.clone();
        }
        let name = format!("{prefix}_{}", self.entries.len());
        let src = body.replace("ENTRY", &name);
        self.entries.insert(self.entries.len(), (name.clone(), src));
        self.entry_by_body.insert(body, name.clone());
        name
    }

    fn push(&mut self, v: ValueId, kernel: Kernel, large: Option<Kernel>, args: Vec<Arg>) {
        let head = self.g.outputs().contains(&v);
        self.launches.push(Launch { kernel, batched: None, large, then_large: None, args, skip_one_row: false, head, value: format!("%{}", self.name[&v]) });
    }

    /// The f32 view of `v`, materializing a fake-quantized or deferred value if `plain` is required.
    fn view(&mut self, v: ValueId) -> Result<View, PlanError> {
        match self.repr.get(&v).cloned() {
            Some(Repr::F32(view)) => Ok(view),
            Some(Repr::DeferredSilu(src)) => {
                let out = self.f32_out(v);
                self.elementwise(v, 0, &src, None, &out);
                self.repr.insert(v, Repr::F32(out.clone()));
                Ok(out)
            }
            Some(Repr::DeferredGate { a, z }) => {
                let out = self.f32_out(v);
                self.elementwise(v, 4, &a, Some(&z), &out);
                self.repr.insert(v, Repr::F32(out.clone()));
                Ok(out)
            }
            _ => self.unsupported(v, "expected an f32 value here"),
        }
    }

    fn plain_view(&mut self, v: ValueId) -> Result<View, PlanError> {
        let view = self.view(v)?;
        if view.fq.is_none() {
            return Ok(view);
        }
        let out = View { buffer: self.new_buffer(self.width(v) * 4, false), col: 0, stride: self.width(v), fq: None };
        self.elementwise(v, 5, &view, None, &out);
        Ok(out)
    }

    fn elementwise(&mut self, v: ValueId, op: u8, a: &View, b: Option<&View>, out: &View) {
        let w = self.width(v);
        let name = self.entry("ew", codegen::elementwise(w, op));
        let b_arg = b.map_or_else(Arg::absent_operand, View::operand);
        let kernel = Kernel { name, grid: Grid::Elements { width: w }, block: 256, shared_bytes: 0 };
        self.push(v, kernel, None, vec![a.operand(), b_arg, Arg::Buffer { buffer: out.buffer, offset: 0 }, Arg::Rows]);
    }

    fn lower(&mut self, v: ValueId) -> Result<(), PlanError> {
        let node = self.g.node(v).clone();
        let inputs = self.g.inputs(v);
        let users = self.g.users(v);
        let width = self.width(v);
        match node.op {
            Op::Tokens => {
                self.repr.insert(v, Repr::Tokens);
            }
            Op::Embedding { table } | Op::QEmbedding { table, .. } => {
                let (scales, group) = match node.op {
                    Op::QEmbedding { scales, group, .. } => (Some(scales), group),
                    _ => (None, width),
                };
                let decl = self.g.weight(table);
                let kind = match self.gemm_kind.get(&table) {
                    Some(k) => *k,
                    None => match decl.dtype {
                        DType::I8 => 2,
                        DType::I4 => 3,
                        _ => 0,
                    },
                };
                let shape = decl.shape.clone();
                self.weights[table.index()] = WeightUpload::Packed { kind, n: shape[0], k: shape[1] };
                let scales = self.opt_f32(scales);
                let out = self.f32_out(v);
                let name = self.entry("embed", codegen::embed(kind, width, group));
                let kernel = Kernel { name, grid: Grid::Rows, block: 128, shared_bytes: 0 };
                self.push(v, kernel, None, vec![Arg::Tokens, Arg::Weight(table.index()), scales, Arg::Buffer { buffer: out.buffer, offset: 0 }]);
                self.repr.insert(v, Repr::F32(out));
            }
            Op::RmsNorm { .. } | Op::GatedRmsNorm { .. } | Op::Hadamard => self.row_chain(v)?,
            Op::Quantize { scale } => {
                let per_column = self.g.weight(scale).shape.iter().product::<usize>() > 1;
                let scale_arg = self.use_f32(scale, 0);
                let source = self.view(inputs[0])?;
                if users.iter().all(|u| matches!(self.g.node(*u).op, Op::Dequantize { .. })) {
                    if source.fq.is_some() {
                        return self.unsupported(v, "quantizing an already fake-quantized value");
                    }
                    self.repr.insert(v, Repr::VirtualQuantize { source, scale: scale.index(), per_column });
                    return Ok(());
                }
                let stride = round_up(width, 16);
                let buffer = self.new_buffer(stride, true);
                let name = self.entry("quantize", codegen::quantize(width));
                let kernel = Kernel { name, grid: Grid::Elements { width }, block: 256, shared_bytes: 0 };
                let args = vec![source.operand(), scale_arg, Arg::I32(per_column as i32), Arg::Buffer { buffer, offset: 0 }, Arg::I32(stride as i32), Arg::Rows];
                self.push(v, kernel, None, args);
                // The output of a conv whose decode step a one-row product runs is quantized by
                // that product too, as it stores each channel.
                if let Some(&product) = self.conv_steps.get(&source.buffer).filter(|_| source.fq.is_none() && source.col == 0 && source.stride == width) {
                    let quantize = ConvQuantize { buffer, stride, scale: scale.index(), per_column };
                    if let Some(Arg::ConvStep(Some(step))) = self.launches[product].args.iter_mut().find(|a| matches!(a, Arg::ConvStep(Some(_)))) {
                        if step.quantized.is_none() {
                            step.quantized = Some(quantize);
                            self.launches.last_mut().expect("just pushed").skip_one_row = true;
                        }
                    }
                }
                let source = source.fq.is_none().then_some(source);
                self.repr.insert(v, Repr::I8 { buffer, stride, source });
            }
            Op::Dequantize { scale } => {
                let per_column = self.g.weight(scale).shape.iter().product::<usize>() > 1;
                match self.repr.get(&inputs[0]).cloned() {
                    Some(Repr::VirtualQuantize { source, scale, per_column }) => {
                        self.repr.insert(v, Repr::F32(View { fq: Some((scale, per_column)), ..source }));
                    }
                    // Dequantizing stored int8 is a fake-quantizing read of what was quantized.
                    Some(Repr::I8 { source: Some(source), .. }) => {
                        self.use_f32(scale, 0);
                        self.repr.insert(v, Repr::F32(View { fq: Some((scale.index(), per_column)), ..source }));
                    }
                    Some(Repr::I8 { buffer, stride, source: None }) => {
                        let scale_arg = self.use_f32(scale, 0);
                        let out = self.f32_out(v);
                        let name = self.entry("dequantize", codegen::dequantize(width));
                        let kernel = Kernel { name, grid: Grid::Elements { width }, block: 256, shared_bytes: 0 };
                        let args = vec![Arg::Buffer { buffer, offset: 0 }, Arg::I32(stride as i32), scale_arg, Arg::I32(per_column as i32), Arg::Buffer { buffer: out.buffer, offset: 0 }, Arg::Rows];
                        self.push(v, kernel, None, args);
                        self.repr.insert(v, Repr::F32(out));
                    }
                    _ => return self.unsupported(v, "dequantize of a value that is not int8"),
                }
            }
            Op::Split { start, .. } => {
                let view = self.view(inputs[0])?;
                if view.fq.is_some_and(|f| f.1) {
                    let plain = self.plain_view(inputs[0])?;
                    self.repr.insert(v, Repr::F32(View { col: plain.col + start, ..plain }));
                } else {
                    self.repr.insert(v, Repr::F32(View { col: view.col + start, ..view }));
                }
            }
            Op::CausalConv1d { weight, bias } => {
                let x = self.view(inputs[0])?;
                let kw = self.g.weight(weight).shape[2];
                let silu_user = match users.as_slice() {
                    [u] if matches!(self.g.node(*u).op, Op::Activation { kind: Activation::Silu }) => Some(*u),
                    _ => None,
                };
                let result = silu_user.unwrap_or(v);
                let w_arg = self.use_f32(weight, 0);
                let b_arg = self.opt_f32(bias);
                self.states.push((kw - 1) * width * 4);
                let state = self.states.len() - 1;
                let out = self.f32_out(v);
                let silu = silu_user.is_some();
                let step_name = self.entry("conv", codegen::conv(width, kw, silu, true));
                let seq_name = self.entry("conv", codegen::conv(width, kw, silu, false));
                let state_name = self.entry("conv_state", codegen::conv_state(width, kw));
                let grid = Grid::Chunks { per_position: width, chunk: codegen::CONV_CHUNK };
                let small = Kernel { name: step_name, grid: grid.clone(), block: 128, shared_bytes: 0 };
                let large = Kernel { name: seq_name, grid, block: 128, shared_bytes: 0 };
                let then = Kernel { name: state_name, grid: Grid::PerSequence { per_sequence: width }, block: 128, shared_bytes: 0 };
                let args = vec![x.operand(), w_arg, b_arg.clone(), Arg::State(state), Arg::Buffer { buffer: out.buffer, offset: 0 }, Arg::Batch, Arg::Seq];
                let then_args = vec![x.operand(), Arg::State(state), Arg::Batch, Arg::Seq];
                let folded = self.fold_conv_step(&x, width, kw, silu, ConvStep {
                    weight: weight.index(),
                    bias: bias.map(|b| b.index()),
                    state,
                    out: out.buffer,
                    scale: x.fq.map(|f| f.0),
                    scale_per_column: x.fq.is_some_and(|f| f.1),
                    quantized: None,
                });
                self.push(result, small, Some(large), args);
                let conv = self.launches.last_mut().expect("just pushed");
                conv.then_large = Some((then, then_args));
                conv.skip_one_row = folded;
                if let Some(u) = silu_user {
                    self.fused.insert(v);
                    self.repr.insert(u, Repr::F32(out));
                } else {
                    self.repr.insert(v, Repr::F32(out));
                }
            }
            Op::Activation { kind } => {
                let x = self.view(inputs[0])?;
                let gate_of_mul = kind == Activation::Silu && users.len() == 1 && matches!(self.g.node(users[0]).op, Op::Mul);
                if gate_of_mul {
                    self.repr.insert(v, Repr::DeferredSilu(x));
                    return Ok(());
                }
                let out = self.f32_out(v);
                self.elementwise(v, if kind == Activation::Silu { 0 } else { 1 }, &x, None, &out);
                self.repr.insert(v, Repr::F32(out));
            }
            Op::Mul | Op::Add => {
                let deferred = |b: &Self, x: ValueId| match b.repr.get(&x) {
                    Some(Repr::DeferredSilu(z)) => Some(z.clone()),
                    _ => None,
                };
                // A gate whose only user starts a row chain that has no z of its own joins it.
                let gated_chain = matches!(node.op, Op::Mul)
                    && !self.g.outputs().contains(&v)
                    && matches!(users.as_slice(), [u] if matches!(self.g.node(*u).op, Op::Hadamard | Op::RmsNorm { .. }));
                if gated_chain {
                    let gate = match (deferred(self, inputs[1]), deferred(self, inputs[0])) {
                        (Some(z), _) => Some((inputs[0], z)),
                        (None, Some(z)) => Some((inputs[1], z)),
                        _ => None,
                    };
                    if let Some((a, z)) = gate {
                        let a = self.view(a)?;
                        self.repr.insert(v, Repr::DeferredGate { a, z });
                        return Ok(());
                    }
                }
                let out = self.f32_out(v);
                if matches!(node.op, Op::Mul) {
                    if let Some(z) = deferred(self, inputs[1]) {
                        let a = self.view(inputs[0])?;
                        self.elementwise(v, 4, &a, Some(&z), &out);
                    } else if let Some(z) = deferred(self, inputs[0]) {
                        let a = self.view(inputs[1])?;
                        self.elementwise(v, 4, &a, Some(&z), &out);
                    } else {
                        let (a, bv) = (self.view(inputs[0])?, self.view(inputs[1])?);
                        self.elementwise(v, 2, &a, Some(&bv), &out);
                    }
                } else {
                    let (a, bv) = (self.view(inputs[0])?, self.view(inputs[1])?);
                    self.elementwise(v, 3, &a, Some(&bv), &out);
                }
                self.repr.insert(v, Repr::F32(out));
            }
            Op::Linear { weight, bias } => self.gemm(v, weight, None, bias, None, 1.0)?,
            Op::LmHead { weight } => self.gemm(v, weight, None, None, None, 1.0)?,
            Op::QLinear { weight, scales, bias, group, act_scale } => self.gemm(v, weight, Some(scales), bias, Some(group), act_scale.unwrap_or(1.0))?,
            Op::SelectiveScan { a_log, d, state: quant } => {
                let (x, dt, bm, cm) = (self.view(inputs[0])?, self.view(inputs[1])?, self.view(inputs[2])?, self.view(inputs[3])?);
                let n = self.width(inputs[2]);
                let lanes = scan_lanes(n);
                // Natural order (state n at n, its scales too): the decode kernels read the row
                // so, and the prefill kernel's LANE_MAJOR threads take value i as state
                // sub · PER + i, which lies there as well.
                let (form, [scale_arg, group_arg]) = self.state_form(quant, None);
                self.states.push(width * n * form.value_bytes());
                let state = self.states.len() - 1;
                let (a_arg, d_arg) = (self.use_f32(a_log, 0), self.use_f32(d, 0));
                let out = self.f32_out(v);
                let channels_per_block = largest_divisor_at_most(width, 128 / lanes);
                let name = self.entry("scan", codegen::selective_scan(width, n, lanes, channels_per_block, form, false));
                let kernel = Kernel { name, grid: Grid::PerSequence { per_sequence: width * lanes }, block: (channels_per_block * lanes) as u32, shared_bytes: 0 };
                let prefill = {
                    let (channels, lanes) = codegen::scan_prefill_shape(width, n, (channels_per_block, lanes));
                    let name = self.entry("scan", codegen::selective_scan(width, n, lanes, channels, form, true));
                    Kernel { name, grid: Grid::PerSequence { per_sequence: width * lanes }, block: (channels * lanes) as u32, shared_bytes: 0 }
                };
                let mut args =
                    vec![x.operand(), dt.operand(), bm.operand(), cm.operand(), a_arg, d_arg, Arg::State(state), scale_arg, group_arg, Arg::Buffer { buffer: out.buffer, offset: 0 }, Arg::Batch, Arg::Seq, Arg::WeightTail(None), Arg::WeightTailBytes(None)];
                let step_shape = codegen::dt_step_shape(width, n);
                match step_shape.and_then(|(channels, _)| self.fold_dt_product(v, inputs[1], &dt, channels)) {
                    Some((dt_kind, product_args)) => {
                        let (step_channels, step_lanes) = step_shape.expect("folded with a shape");
                        // One row: the scan computes Δ itself; more rows: dt_proj, then the scan.
                        args.extend(product_args);
                        let name = self.entry("scan", codegen::selective_step_dt(width, n, step_lanes, step_channels, form, dt_kind));
                        let one_row = Kernel { name, grid: Grid::PerSequence { per_sequence: width * step_lanes }, block: (step_channels * step_lanes) as u32, shared_bytes: 0 };
                        self.push(v, one_row, Some(prefill), args);
                        self.launches.last_mut().expect("just pushed").batched = Some(kernel);
                    }
                    None => {
                        args.extend([Arg::absent_operand(), Arg::Null, Arg::Null, Arg::F32(1.0), Arg::Null]);
                        self.push(v, kernel, Some(prefill), args);
                    }
                }
                self.repr.insert(v, Repr::F32(out));
            }
            Op::Ssd { a_log, d, dt_bias, heads, head_dim, groups, d_state, dt_min, dt_max, state: quant, .. } => {
                let (x, dt, bm, cm) = (self.view(inputs[0])?, self.view(inputs[1])?, self.view(inputs[2])?, self.view(inputs[3])?);
                let lanes = scan_lanes(d_state);
                let (lanes, rows_per_block) = codegen::ssd_shape(head_dim, d_state, (lanes, largest_divisor_at_most(head_dim, 256 / lanes)));
                let (form, [scale_arg, group_arg]) = self.state_form(quant, Some(lanes));
                self.states.push(heads * head_dim * d_state * form.value_bytes());
                let state = self.states.len() - 1;
                let (a_arg, d_arg, bias_arg) = (self.use_f32(a_log, 0), self.use_f32(d, 0), self.use_f32(dt_bias, 0));
                let out = self.f32_out(v);
                let name = self.entry("ssd", codegen::ssd(heads, head_dim, groups, d_state, (lanes, rows_per_block), form, codegen::SsdEntry::Plain));
                let kernel = Kernel { name, grid: Grid::PerSequence { per_sequence: heads * head_dim * lanes }, block: (rows_per_block * lanes) as u32, shared_bytes: 0 };
                let bc_quantized = bm.fq.is_some() || cm.fq.is_some();
                let (prefill, scan_after) = self.ssd_prefill_kernels((heads, head_dim, groups, d_state), (lanes, rows_per_block), form, bc_quantized);
                let args = vec![
                    x.operand(),
                    dt.operand(),
                    bm.operand(),
                    cm.operand(),
                    a_arg,
                    d_arg,
                    bias_arg,
                    Arg::F32(dt_min),
                    Arg::F32(dt_max),
                    Arg::State(state),
                    scale_arg,
                    group_arg,
                    Arg::Buffer { buffer: out.buffer, offset: 0 },
                    Arg::Batch,
                    Arg::Seq,
                    Arg::WeightTail(None),
                    Arg::WeightTailBytes(None),
                    Arg::absent_operand(),
                    Arg::absent_operand(),
                    Arg::Null,
                ];
                let then_large = scan_after.map(|scan| (scan, args.clone()));
                self.push(v, kernel, Some(prefill), args);
                self.launches.last_mut().expect("just pushed").then_large = then_large;
                let gated_entry = codegen::ssd(heads, head_dim, groups, d_state, (lanes, rows_per_block), form, codegen::SsdEntry::Gated);
                let step = SsdStep { launch: self.launches.len() - 1, value: v, gated_entry, parts: heads * head_dim / rows_per_block, rows_per_block };
                self.ssd_steps.insert(out.buffer, step);
                self.repr.insert(v, Repr::F32(out));
            }
        }
        Ok(())
    }

    /// A prefill's SSD kernels for (heads, head_dim, groups, d_state): with an f32 state
    /// `quamba::ssd_prefill`, which reads B and C as stored, so where they are quantized
    /// `quamba::fake_quantize_bc` runs first and the scan second (the launch's `then_large`, with
    /// the same arguments); with an int8 state, whose rows are laid out by the decode kernel's
    /// `lanes`, `quamba::ssd_scan`'s own prefill kernel.
    fn ssd_prefill_kernels(&mut self, (heads, head_dim, groups, d_state): (usize, usize, usize, usize), (lanes, rows_per_block): (usize, usize), form: StateForm, bc_quantized: bool) -> (Kernel, Option<Kernel>) {
        match codegen::ssd_prefill_rows(head_dim, d_state).filter(|_| form.columns == 0) {
            Some((rows, warps)) => {
                let name = self.entry("ssd", codegen::ssd_prefill(heads, head_dim, groups, d_state, (rows, warps)));
                let scan = Kernel { name, grid: Grid::PerSequence { per_sequence: heads * head_dim / rows * 32 }, block: (32 * warps) as u32, shared_bytes: 0 };
                if !bc_quantized {
                    return (scan, None);
                }
                let name = self.entry("ssd_bc", codegen::ssd_bc_quantize(groups, d_state));
                (Kernel { name, grid: Grid::Elements { width: 2 * groups * d_state }, block: 256, shared_bytes: 0 }, Some(scan))
            }
            None => {
                let (lanes, rows) = codegen::ssd_prefill_shape(head_dim, d_state, (lanes, rows_per_block), form.columns == 0);
                let name = self.entry("ssd", codegen::ssd(heads, head_dim, groups, d_state, (lanes, rows), form, codegen::SsdEntry::Prefill));
                (Kernel { name, grid: Grid::PerSequence { per_sequence: heads * head_dim * lanes }, block: (rows * lanes) as u32, shared_bytes: 0 }, None)
            }
        }
    }

    /// A chain of row ops starting at `start`, extended while each value has a single row-op
    /// user, ending in a quantize when that quantize only feeds integer products.
    fn row_chain(&mut self, start: ValueId) -> Result<(), PlanError> {
        let width = self.width(start);
        let inputs = self.g.inputs(start);
        let mut z = None;
        let mut stages: Vec<String> = Vec::new();
        let x = match self.repr.get(&inputs[0]).cloned() {
            Some(Repr::DeferredGate { a, z: gate }) if !matches!(self.g.node(start).op, Op::GatedRmsNorm { .. }) => {
                z = Some(gate);
                stages.push(codegen::stage_gate(width));
                a
            }
            _ => self.view(inputs[0])?,
        };
        let mut weights: Vec<Arg> = Vec::new();
        let mut quantize = None;
        let mut split = None;
        let mut norm = None;
        let mut cur = start;
        loop {
            let node = self.g.node(cur).clone();
            match node.op {
                Op::RmsNorm { weight, eps } => {
                    norm = Some((weight, eps));
                    stages.push(codegen::stage_rms_norm(width, weights.len(), weight.is_some(), eps));
                    let w = self.opt_f32(weight);
                    weights.push(w);
                }
                Op::GatedRmsNorm { weight, groups, eps } => {
                    // Gated norm -> Hadamard -> quantize (or store), and nothing else, may split
                    // over blocks.
                    let next_is_hadamard = matches!(self.g.users(cur).as_slice(), [u] if matches!(self.g.node(*u).op, Op::Hadamard));
                    if stages.is_empty() && next_is_hadamard {
                        split = codegen::hadamard_segments(width, groups)
                            .map(|segments| (groups, eps, segments, false))
                            .or_else(|| codegen::cluster_segments(width, groups).map(|segments| (groups, eps, segments, true)));
                    }
                    z = Some(self.view(self.g.inputs(cur)[1])?);
                    stages.push(codegen::stage_gated_norm(width, groups, weights.len(), eps));
                    let w = self.use_f32(weight, 0);
                    weights.push(w);
                }
                Op::Hadamard => stages.push(codegen::stage_hadamard(width)),
                Op::Quantize { scale } => {
                    quantize = Some(scale);
                    break;
                }
                _ => unreachable!("only row ops enter a chain"),
            }
            let users = self.g.users(cur);
            let [next] = users.as_slice() else { break };
            let extend = match self.g.node(*next).op {
                Op::Hadamard => true,
                Op::RmsNorm { .. } => weights.len() < 3,
                Op::Quantize { .. } => self.g.users(*next).iter().all(|u| matches!(self.g.node(*u).op, Op::QLinear { act_scale: Some(_), .. })),
                _ => false,
            };
            if !extend || self.g.outputs().contains(&cur) {
                break;
            }
            self.fused.insert(cur);
            cur = *next;
        }
        while weights.len() < 3 {
            weights.push(Arg::Null);
        }
        let mut args = vec![x.operand(), z.as_ref().map_or_else(Arg::absent_operand, View::operand)];
        args.extend(weights);
        // The row's output for a product that may run this chain (see below): its quantize scale
        // (none where it stores f32), whether that scale is per column, and the buffer.
        let row_output;
        match quantize {
            Some(scale) => {
                let per_column = self.g.weight(scale).shape.iter().product::<usize>() > 1;
                let stride = round_up(width, 16);
                let buffer = self.new_buffer(stride, true);
                stages.push(codegen::stage_quantize(width));
                let scale_arg = self.use_f32(scale, 0);
                args.extend([scale_arg, Arg::I32(per_column as i32), Arg::Null, Arg::Buffer { buffer, offset: 0 }, Arg::I32(stride as i32)]);
                self.repr.insert(cur, Repr::I8 { buffer, stride, source: None });
                row_output = (Some(scale), per_column, buffer);
            }
            None => {
                let out = self.f32_out(cur);
                stages.push(codegen::stage_store(width));
                args.extend([Arg::Null, Arg::I32(0), Arg::Buffer { buffer: out.buffer, offset: 0 }, Arg::Null, Arg::I32(0)]);
                row_output = (None, false, out.buffer);
                self.repr.insert(cur, Repr::F32(out));
            }
        }
        // [gate →] Hadamard → quantize (or store) needs no whole-row step: one block per Hadamard
        // block.
        let gated = z.is_some();
        let output = if quantize.is_some() { codegen::ChainOutput::Quantized } else { codegen::ChainOutput::Stored };
        let hadamard_only = matches!(self.g.node(start).op, Op::Hadamard) && stages.len() == 2 + gated as usize;
        if let Some(segments) = codegen::hadamard_segments(width, 1).filter(|_| hadamard_only) {
            let name = self.entry("rows", codegen::hadamard_quantize(width, segments, gated, output));
            let kernel = Kernel { name, grid: Grid::RowSegments { segments }, block: (width / segments) as u32, shared_bytes: 0 };
            self.push(cur, kernel, None, args);
            return Ok(());
        }
        // A chain split over a row's blocks (each block sums the whole row's squares itself)
        // serves a few rows; a prefill's rows run one block each, which reads each row once:
        // on 4 layers of mamba2-2.7b, W4A8, the split chain took 98 µs a layer of a 1024-token
        // prefill.
        let whole_rows = |b: &mut Self| {
            let name = b.entry("rows", codegen::row_chain(width, &stages));
            Kernel { name, grid: Grid::Rows, block: codegen::row_threads(width) as u32, shared_bytes: 0 }
        };
        let (kernel, large) = match split {
            Some((_, eps, segments, true)) if stages.len() == 3 => {
                let name = self.entry("rows", codegen::cluster_gated_hadamard_quantize(width, eps, output));
                (Kernel { name, grid: Grid::RowSegments { segments }, block: 1024, shared_bytes: 0 }, Some(whole_rows(self)))
            }
            Some((groups, eps, segments, false)) if stages.len() == 3 => {
                let name = self.entry("rows", codegen::gated_hadamard_quantize(width, groups, eps, output));
                let split = Kernel { name, grid: Grid::RowSegments { segments }, block: (width / segments) as u32, shared_bytes: 0 };
                let large = whole_rows(self);
                if let Some(one_row) = self.gate_in_ssd(start, &x, z.as_ref(), width, groups, eps, output, &split, &mut args) {
                    self.push(cur, one_row, Some(large), args);
                    self.launches.last_mut().expect("just pushed").batched = Some(split);
                    return Ok(());
                }
                (split, Some(large))
            }
            _ => (whole_rows(self), None),
        };
        self.push(cur, kernel, large, args);
        // Load, RMS norm, then quantize or store: a product after it may run it itself (see
        // `gemm`).
        if let (Some((weight, eps)), (scale, per_column, buffer), None, 2) = (norm, row_output, z.as_ref(), stages.len()) {
            let rows = NormRows { launch: self.launches.len() - 1, value: cur, x: x.clone(), weight, eps, scale, per_column };
            self.norm_rows.insert(buffer, rows);
        }
        Ok(())
    }

    /// Has the one-row SSD step whose output `x` is the input of the split gated norm chain
    /// starting at `gated_norm` (gate `z`) gate that output and sum its squares itself, where only
    /// the chain reads it: the step stores g = fq(y) · silu(fq(z)) and its blocks' sums of g² in
    /// a new buffer, which `args` (the chain's) then passes in `w1`. Returns the chain's one-row
    /// kernel, which reads those ([`codegen::pregated_hadamard_quantize`]); `split` stays the
    /// kernel of more rows.
    #[allow(clippy::too_many_arguments)]
    fn gate_in_ssd(&mut self, gated_norm: ValueId, x: &View, z: Option<&View>, width: usize, groups: usize, eps: f32, output: codegen::ChainOutput, split: &Kernel, args: &mut [Arg]) -> Option<Kernel> {
        let z = z?;
        let site = self.ssd_steps.get(&x.buffer)?;
        let input = self.g.inputs(gated_norm)[0];
        let fits = codegen::gate_in_ssd()
            && x.col == 0
            && x.stride == width
            && site.parts.is_multiple_of(groups)
            && (width / groups).is_multiple_of(site.rows_per_block)
            && self.only_feeds(site.value, input, gated_norm);
        if !fits {
            return None;
        }
        let (launch, parts, gated_entry) = (site.launch, site.parts, site.gated_entry.clone());
        self.ssd_steps.remove(&x.buffer);
        let partials = self.new_buffer(parts * 4, false);
        let gated = self.entry("ssd", gated_entry);
        let ssd = &mut self.launches[launch];
        let plain = ssd.kernel.clone();
        ssd.kernel = Kernel { name: gated, ..plain.clone() };
        ssd.batched = Some(plain.clone());
        ssd.large = Some(ssd.large.take().unwrap_or(plain));
        let n = ssd.args.len();
        ssd.args[n - 3] = x.operand();
        ssd.args[n - 2] = z.operand();
        ssd.args[n - 1] = Arg::Buffer { buffer: partials, offset: 0 };
        args[3] = Arg::Buffer { buffer: partials, offset: 0 };
        let name = self.entry("rows", codegen::pregated_hadamard_quantize(width, groups, parts, eps, output));
        Some(Kernel { name, ..split.clone() })
    }

    /// Folds a conv's decode step into the one-row kernel of the product that computes its input
    /// `x` (consecutive columns of the product's own output, no residual added), so that a
    /// one-row call runs no conv launch; returns whether it did. Where the product has no
    /// one-row GEMV, the conv runs on its own.
    fn fold_conv_step(&mut self, x: &View, channels: usize, taps: usize, silu: bool, step: ConvStep) -> bool {
        let Some(site) = self.products.get(&x.buffer) else { return false };
        let Some(one_row) = site.one_row else { return false };
        if site.residual || x.stride != site.shape.n || x.col + channels > site.shape.n {
            return false;
        }
        let (launch, shape, norm) = (site.launch, site.shape, site.norm);
        let epilogue = codegen::ConvEpilogue { first_column: x.col, channels, taps, silu };
        let name = self.entry("gemv", codegen::gemv(&shape, &one_row, Some(epilogue), norm));
        let product = &mut self.launches[launch];
        let Some(slot) = product.args.iter_mut().find(|a| matches!(a, Arg::ConvStep(None))) else { return false };
        let out = step.out;
        *slot = Arg::ConvStep(Some(step));
        product.kernel.name = name;
        self.products.remove(&x.buffer);
        self.conv_steps.insert(out, launch);
        true
    }

    /// Folds dt_proj's product into a Mamba1 scan's one-row kernel when the scan's Δ input `dt`
    /// (value `dt_value`, read through `dt`) is an f16 product's output that only the scan reads
    /// (through a fake quantization at most): that product's launch, and the one materializing
    /// its input, are then left out of one-row calls. Returns the product's shape and the scan's
    /// extra arguments (its input, weight, scales, activation scale, bias).
    fn fold_dt_product(&mut self, scan: ValueId, dt_value: ValueId, dt: &View, channels_per_block: usize) -> Option<(codegen::DtProduct, Vec<Arg>)> {
        if !codegen::dt_in_scan() {
            return None;
        }
        let site = self.products.get(&dt.buffer)?;
        let (given, materialized) = site.float_input.clone()?;
        let shape = site.shape;
        let wk = codegen::GemmConfig::decode(shape.kind, shape.k, 1).wk;
        let dt_kind = codegen::DtProduct { kind: shape.kind, k: shape.k, group: shape.group, wk };
        let fits = shape.kind <= 1 && dt.col == 0 && dt.stride == shape.n && !site.residual && channels_per_block.is_multiple_of(8) && dt_kind.tile_bytes(channels_per_block) <= codegen::DT_TILES_MAX_BYTES;
        if !fits || !self.only_feeds(site.value, dt_value, scan) {
            return None;
        }
        let launch = site.launch;
        let product = &mut self.launches[launch];
        product.skip_one_row = true;
        let product_args = vec![given.operand(), product.args[2].clone(), product.args[3].clone(), product.args[4].clone(), product.args[5].clone()];
        if let Some(m) = materialized {
            self.launches[m].skip_one_row = true;
        }
        self.products.remove(&dt.buffer);
        Some((dt_kind, product_args))
    }

    /// Whether `v` reaches `consumer` only through `via` (itself, or a quantize → dequantize
    /// chain ending in it) and nothing else reads it.
    fn only_feeds(&self, v: ValueId, via: ValueId, consumer: ValueId) -> bool {
        if self.g.outputs().contains(&v) {
            return false;
        }
        match self.g.users(v).as_slice() {
            [u] if *u == consumer => v == via,
            [u] if matches!(self.g.node(*u).op, Op::Quantize { .. } | Op::Dequantize { .. }) => self.only_feeds(*u, via, consumer),
            _ => false,
        }
    }

    /// The tensor-core product entry point for `shape` tiled as `cfg`, with its launch shape.
    fn gemm_kernel(&mut self, shape: &GemmShape, cfg: &codegen::GemmConfig) -> Kernel {
        let name = self.entry("gemm", codegen::gemm(shape, cfg));
        Kernel { name, grid: cfg.grid(shape.n), block: cfg.threads(), shared_bytes: cfg.shared_bytes() }
    }

    fn gemm(&mut self, v: ValueId, weight: WeightId, scales: Option<WeightId>, bias: Option<WeightId>, group: Option<usize>, act_scale: f32) -> Result<(), PlanError> {
        let kind = self.gemm_kind[&weight];
        let shape = self.g.weight(weight).shape.clone();
        let (n, k) = (shape[0], shape[1]);
        let group = group.unwrap_or(k);
        let input = self.g.inputs(v)[0];
        let mut float_input = None;
        let mut int8_input = None;
        let (a_arg, lda, vec) = if kind >= 2 {
            match self.repr.get(&input) {
                Some(Repr::I8 { buffer, stride, .. }) => {
                    int8_input = Some(*buffer);
                    (Arg::RowsInput { buffer: *buffer, offset: 0, row_bytes: *stride }, *stride, true)
                }
                _ => return self.unsupported(v, "an integer product needs an int8 input"),
            }
        } else {
            let given = self.view(input)?;
            let before = self.launches.len();
            let view = self.plain_view(input)?;
            float_input = Some((given, (self.launches.len() > before).then_some(before)));
            (Arg::RowsInput { buffer: view.buffer, offset: view.col * 4, row_bytes: view.stride * 4 }, view.stride, view.col % 2 == 0 && view.stride % 2 == 0)
        };
        let n_pad = round_up(n, 8);
        let scales_arg = match scales {
            Some(s) => self.use_f32(s, n_pad * k.div_ceil(group)),
            None => Arg::Null,
        };
        let bias_arg = self.opt_f32(bias);
        // A residual add that is this product's only user joins the epilogue.
        let users = self.g.users(v);
        let mut result = v;
        let mut resid = (Arg::Null, 0usize);
        if let [add] = users.as_slice() {
            if matches!(self.g.node(*add).op, Op::Add) && !self.g.outputs().contains(&v) {
                let ins = self.g.inputs(*add);
                let other = if ins[0] == v { ins[1] } else { ins[0] };
                if other != v {
                    if let Some(Repr::F32(r)) = self.repr.get(&other) {
                        if r.fq.is_none() {
                            resid = (Arg::Buffer { buffer: r.buffer, offset: r.col * 4 }, r.stride);
                            result = *add;
                        }
                    }
                }
            }
        }
        let out = View { buffer: self.new_buffer(n * 4, false), col: 0, stride: n, fq: None };
        let shape = GemmShape { kind, k, n, group, vec };
        let decode = codegen::GemmConfig::decode(kind, k, 1);
        let batched = codegen::GemmConfig::decode(kind, k, SMALL_ROWS);
        let prefill = codegen::GemmConfig::PREFILL;
        // One-row calls of int8-activation products run the dp4a GEMV; calls of more rows keep
        // the tensor-core decode kernel.
        let one_row = codegen::GemvConfig::decode(&shape);
        // The RMS norm → quantize before it, where only this product reads its output and the
        // one-row kernel can play its threads: run by the one-row kernel's blocks, and its own
        // launch left out of one-row calls (a launch, its hand-over and its one-block chain of
        // round trips off the decode step's critical path).
        // A product of f32 activations takes an RMS norm → store chain's whole row, as it is.
        let whole_f32_row = float_input.as_ref().and_then(|(given, materialized)| (materialized.is_none() && given.col == 0 && given.stride == k && given.fq.is_none()).then_some(given.buffer));
        let folded = one_row.zip(int8_input.or(whole_f32_row)).and_then(|(c, buffer)| {
            let rows = self.norm_rows.get(&buffer).filter(|rows| self.only_feeds(rows.value, rows.value, v))?;
            codegen::NormPrologue::for_product(k, &c, rows.weight.is_some(), rows.per_column, rows.eps).map(|p| (p, buffer))
        });
        let (norm, norm_arg) = match folded.and_then(|(p, buffer)| Some((p, self.norm_rows.remove(&buffer)?))) {
            Some((prologue, rows)) => {
                self.launches[rows.launch].skip_one_row = true;
                let weight = rows.weight.map(|w| {
                    self.use_f32(w, 0);
                    w.index()
                });
                let scale = rows.scale.map(|s| {
                    self.use_f32(s, 0);
                    s.index()
                });
                (Some(prologue), Arg::RowNorm(Some(RowNorm { x: rows.x.to_operand(), weight, scale, per_column: rows.per_column })))
            }
            None => (None, Arg::RowNorm(None)),
        };
        let (small, batched) = match one_row {
            Some(one_row) => {
                let name = self.entry("gemv", codegen::gemv(&shape, &one_row, None, norm));
                let small = Kernel { name, grid: one_row.grid(n), block: one_row.threads(), shared_bytes: one_row.shared_bytes() };
                (small, Some(self.gemm_kernel(&shape, &batched)))
            }
            None => {
                let small = self.gemm_kernel(&shape, &decode);
                let batched = (batched != decode).then(|| self.gemm_kernel(&shape, &batched));
                (small, batched)
            }
        };
        let large = match codegen::TiledConfig::prefill(kind, n) {
            Some(tiled) => {
                let name = self.entry("gemm", codegen::gemm_tiled(&shape, &tiled));
                Kernel { name, grid: tiled.grid(n), block: tiled.threads(), shared_bytes: 0 }
            }
            None => self.gemm_kernel(&shape, &prefill),
        };
        let args = vec![
            a_arg,
            Arg::Stride(lda as i32),
            Arg::Weight(weight.index()),
            scales_arg,
            Arg::F32(act_scale),
            bias_arg,
            resid.0,
            Arg::I32(resid.1 as i32),
            Arg::Buffer { buffer: out.buffer, offset: 0 },
            Arg::I32(n as i32),
            Arg::Rows,
            Arg::ConvStep(None),
            norm_arg,
        ];
        self.push(result, small, Some(large), args);
        if let Some(last) = self.launches.last_mut() {
            last.batched = batched;
        }
        if one_row.is_some_and(|c| c.bulk.is_some() && c.stream.is_none()) {
            self.tile_holders.insert(self.launches.len() - 1);
        }
        self.products.insert(out.buffer, ProductSite { launch: self.launches.len() - 1, shape, one_row, residual: result != v, value: v, float_input, norm });
        if result != v {
            self.fused.insert(v);
        }
        self.repr.insert(result, Repr::F32(out));
        Ok(())
    }
}

/// The largest divisor of `n` that is at most `cap` (at least 1).
fn largest_divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.max(1).min(n)).rev().find(|d| n.is_multiple_of(*d)).unwrap_or(1)
}

/// Threads sharing one state row of `n` states: about sixteen states each (fewer lanes means
/// fewer shuffles per step for the output's reduction), a power of two ≤ 32.
fn scan_lanes(n: usize) -> usize {
    let mut lanes = 1;
    while lanes * 2 <= 32 && n.is_multiple_of(lanes * 2) && n / (lanes * 2) >= 16 {
        lanes *= 2;
    }
    lanes
}

/// Maps buffers onto slots: a buffer takes a free slot of its dtype once every launch that
/// reads the slot's previous buffer has run (never the launch that writes it), growing the slot
/// if needed. The logits buffer is never reused.
fn assign_slots(buffers: &[(usize, bool)], launches: &[Launch], logits: BufferId) -> (Vec<Buffer>, Vec<Slot>) {
    let mut first = vec![usize::MAX; buffers.len()];
    let mut last = vec![0usize; buffers.len()];
    for (i, launch) in launches.iter().enumerate() {
        let then_args = launch.then_large.iter().flat_map(|(_, a)| a.iter());
        for arg in launch.args.iter().chain(then_args) {
            let touched: Vec<BufferId> = match arg {
                Arg::Buffer { buffer, .. } | Arg::RowsInput { buffer, .. } => vec![*buffer],
                Arg::ConvStep(Some(step)) => std::iter::once(step.out).chain(step.quantized.as_ref().map(|q| q.buffer)).collect(),
                Arg::RowNorm(Some(norm)) if norm.x.stride > 0 => vec![norm.x.buffer],
                Arg::Operand(o) if o.stride > 0 => vec![o.buffer],
                _ => continue,
            };
            for b in touched {
                first[b] = first[b].min(i);
                last[b] = last[b].max(i);
            }
        }
    }
    last[logits] = usize::MAX;
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_dtype: Vec<bool> = Vec::new();
    let mut busy_until: Vec<usize> = Vec::new();
    let mut out: Vec<Buffer> = buffers.iter().map(|(row_bytes, int8)| Buffer { row_bytes: *row_bytes, slot: usize::MAX, int8: *int8 }).collect();
    let mut by_first: Vec<usize> = (0..buffers.len()).filter(|b| first[*b] != usize::MAX).collect();
    by_first.sort_by_key(|b| (first[*b], *b));
    for b in by_first {
        let (row_bytes, int8) = buffers[b];
        let free = (0..slots.len()).filter(|s| slot_dtype[*s] == int8 && busy_until[*s] < first[b]);
        let pick = free.min_by_key(|s| (slots[*s].row_bytes < row_bytes, slots[*s].row_bytes.abs_diff(row_bytes)));
        let s = match pick {
            Some(s) => s,
            None => {
                slots.push(Slot { row_bytes: 0 });
                slot_dtype.push(int8);
                busy_until.push(0);
                slots.len() - 1
            }
        };
        slots[s].row_bytes = slots[s].row_bytes.max(row_bytes);
        busy_until[s] = last[b];
        out[b].slot = s;
    }
    (out, slots)
}
