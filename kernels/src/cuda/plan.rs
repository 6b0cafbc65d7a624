//! The CUDA kernel plan: what the runtime needs to run a verified graph on a GPU, as data.
//!
//! The plan is the contract between the generator (this crate, no CUDA needed) and the runtime's
//! CUDA backend (cudarc): the generated source, how each weight is laid out on the device, the
//! activation buffers with their lifetimes already folded into shared slots, the recurrent state
//! buffers, and the launches in order with their arguments named symbolically. The runtime only
//! resolves names to device pointers and grid sizes to the call's row count.

use serde::{Deserialize, Serialize};

/// A complete plan for one graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CudaPlan {
    /// The CUDA C++ source: the kernel library followed by the generated entry points.
    pub source: String,
    /// How each graph weight (by weight-table index) goes to the device.
    pub weights: Vec<WeightUpload>,
    /// Activation buffers, each mapped onto a slot.
    pub buffers: Vec<Buffer>,
    /// Device slots: bytes per row of the largest buffer sharing each.
    pub slots: Vec<Slot>,
    /// Recurrent state buffers: bytes per sequence (f32 values, or int8 where a scan keeps its
    /// state in int8); all-zero bytes are the empty state in both forms.
    pub states: Vec<usize>,
    /// Kernel launches in execution order.
    pub launches: Vec<Launch>,
    /// The buffer holding the logits and its row width (the padded vocabulary).
    pub logits: BufferId,
    /// Rows of the head (the padded vocabulary).
    pub vocab: usize,
}

/// Index into [`CudaPlan::buffers`].
pub type BufferId = usize;

/// How one weight is stored on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightUpload {
    /// Not read by any kernel.
    Unused,
    /// f32 values, zero-padded to `len` values.
    F32 {
        /// Values after padding.
        len: usize,
    },
    /// i32 values (integers held as f32 in the weight data), `len` of them.
    I32 {
        /// Values.
        len: usize,
    },
    /// An int8 state's scales (`[groups, columns]`, ir::StateQuant) as `[group][scales,
    /// inverses][columns]`, the inverses 1 / s in f32; with `lanes` > 0, each group's columns in
    /// the lane-major order of `quamba::StateRow` (position sub · columns / lanes + i holds
    /// column i · lanes + sub).
    StateScales {
        /// Rows of the table.
        groups: usize,
        /// Scales per group (1 or d_state).
        columns: usize,
        /// Threads sharing a state row in a lane-major layout; 0: natural order.
        lanes: usize,
    },
    /// A `[n, k]` matrix in a tensor-core layout (see [`crate::cuda::pack`]).
    Packed {
        /// The layout kind (0 f16, 1 int4 for f16 mma, 2 int8, 3 int4 for int8 mma).
        kind: u8,
        /// Rows.
        n: usize,
        /// Columns.
        k: usize,
    },
}

/// One activation buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    /// Bytes per row (a row is one token of one sequence).
    pub row_bytes: usize,
    /// The slot it lives in.
    pub slot: usize,
    /// Whether it holds int8 (else f32); int8 and f32 buffers never share a slot, so stale bytes
    /// read past a row's end are always finite floats or integers.
    pub int8: bool,
}

/// A device allocation shared by buffers with disjoint lifetimes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Bytes per row.
    pub row_bytes: usize,
}

/// The grid of a launch as a function of the call's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grid {
    /// One block per row.
    Rows,
    /// One block per sequence.
    Sequences,
    /// One thread per (row, column) of `width` columns.
    Elements {
        /// Columns.
        width: usize,
    },
    /// `per_position` threads for every `chunk` positions (rounded up) of each sequence.
    Chunks {
        /// Threads per chunk of positions.
        per_position: usize,
        /// Positions per chunk.
        chunk: usize,
    },
    /// `per_sequence` threads for each sequence.
    PerSequence {
        /// Threads per sequence.
        per_sequence: usize,
    },
    /// A matrix product: `n_blocks` column blocks times row blocks of `rows_per_block`.
    Gemm {
        /// Blocks along the output columns.
        n_blocks: usize,
        /// Rows per block.
        rows_per_block: usize,
    },
    /// `segments` blocks per row.
    RowSegments {
        /// Blocks per row.
        segments: usize,
    },
    /// As many blocks as the GPU holds at once, `per_sm` on each of its SMs, but no more than
    /// `units` (a one-row product streaming its tiles: `quamba::gemv_stream`), times the rows.
    Resident {
        /// Work units to spread over the blocks (the product's 8-column tiles).
        units: usize,
        /// Blocks per SM.
        per_sm: usize,
    },
}

impl Grid {
    /// Blocks along x on a GPU of `sms` SMs.
    pub fn resident_blocks(units: usize, per_sm: usize, sms: usize) -> usize {
        units.min(sms.max(1) * per_sm.max(1)).max(1)
    }
}

/// A kernel entry point with its launch shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// The `extern "C"` name in the source.
    pub name: String,
    /// The grid rule.
    pub grid: Grid,
    /// Threads per block.
    pub block: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
}

/// One launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The kernel used when the call has at most [`SMALL_ROWS`] rows (decode).
    pub kernel: Kernel,
    /// The kernel used instead of `kernel` for 2 to [`SMALL_ROWS`] rows (batched decode), if
    /// different.
    pub batched: Option<Kernel>,
    /// The kernel used for more rows (prefill), if different.
    pub large: Option<Kernel>,
    /// A second launch that follows `large` (prefill only), with its own arguments.
    pub then_large: Option<(Kernel, Vec<Arg>)>,
    /// Arguments in the entry point's parameter order.
    pub args: Vec<Arg>,
    /// Whether calls of one row leave this launch out: the product before it does its work
    /// then (a conv step run by `quamba::gemv`, [`Arg::ConvStep`], with the quantize of its
    /// output; a row norm, [`Arg::RowNorm`], by the product after it).
    pub skip_one_row: bool,
    /// Whether this launch computes the logits (it may then run on the last position only).
    pub head: bool,
    /// The graph value it computes, in the IR text form's numbering (for error messages).
    pub value: String,
}

impl Launch {
    /// Every kernel this launch may run: the decode ones, the prefill one, and the prefill's
    /// second launch.
    pub fn kernels(&self) -> impl Iterator<Item = &Kernel> {
        std::iter::once(&self.kernel).chain(self.batched.as_ref()).chain(self.large.as_ref()).chain(self.then_large.as_ref().map(|t| &t.0))
    }

    /// The kernel that runs a call of `rows` rows.
    pub fn kernel_for(&self, rows: usize) -> &Kernel {
        match rows {
            0 | 1 => &self.kernel,
            r if r <= SMALL_ROWS => self.batched.as_ref().unwrap_or(&self.kernel),
            _ => self.large.as_ref().unwrap_or(&self.kernel),
        }
    }
}

/// Calls with at most this many rows use a launch's decode kernel.
pub const SMALL_ROWS: usize = 16;

/// A kernel argument, resolved by the runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arg {
    /// Device pointer into a buffer, `offset` bytes into each row's start (column offset).
    Buffer {
        /// The buffer.
        buffer: BufferId,
        /// Byte offset.
        offset: usize,
    },
    /// A product's input rows: a device pointer into a buffer like [`Arg::Buffer`]; when the call
    /// computes the last position only, it moves to row `seq - 1` of each sequence (the row
    /// stride is then an [`Arg::Stride`] spanning whole sequences).
    RowsInput {
        /// The buffer.
        buffer: BufferId,
        /// Byte offset.
        offset: usize,
        /// Bytes per row of the view.
        row_bytes: usize,
    },
    /// Device pointer to a weight.
    Weight(usize),
    /// Device pointer to a state buffer.
    State(usize),
    /// A null pointer.
    Null,
    /// The token ids of the call (i64).
    Tokens,
    /// The next-token buffer of on-device greedy decoding (i64 per sequence).
    NextTokens,
    /// The token history of on-device greedy decoding (i64 [steps, batch]).
    History,
    /// The step counter of on-device greedy decoding (i32).
    Step,
    /// An i32 constant.
    I32(i32),
    /// An f32 constant.
    F32(f32),
    /// The row count of the call (`batch · seq`; `batch` for a head launch on the last position).
    Rows,
    /// Sequences in the call.
    Batch,
    /// Positions per sequence in the call.
    Seq,
    /// A row stride in elements (`stride · seq` for a head launch on the last position).
    Stride(i32),
    /// An f32 operand view, optionally fake-quantized on load (`quamba::Opnd`).
    Operand(Operand),
    /// The conv step a one-row product applies to its conv columns (`quamba::ConvStep`; all
    /// null where it applies none).
    ConvStep(Option<ConvStep>),
    /// The RMS norm → quantize a one-row product runs on its input row itself
    /// (`quamba::RowNorm`; all null where it runs none).
    RowNorm(Option<RowNorm>),
    /// Device pointer to the start of a weight's tail that this launch pulls into L2 for a
    /// later launch (`quamba::l2_ahead`; null where none).
    WeightTail(Option<WeightTail>),
    /// That tail's length in bytes (0 where none).
    WeightTailBytes(Option<WeightTail>),
}

/// The last `per_mille` thousandths of a weight's bytes (see `ahead.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightTail {
    /// The weight.
    pub weight: usize,
    /// Thousandths of its bytes, counted from its end (at most 1000).
    pub per_mille: u16,
}

impl WeightTail {
    /// The tail's byte offset into a weight of `len` bytes, and its length, at most `cap` bytes:
    /// the offset is rounded up or down to 16 bytes (a bulk copy's alignment; allocations start
    /// aligned) and the tail ends where the weight does. Uncapped, it holds at least the
    /// thousandths asked for.
    pub fn range(&self, len: usize, cap: usize) -> (usize, usize) {
        let per_mille = usize::from(self.per_mille.min(1000));
        let asked = (len - len * per_mille / 1000) & !15;
        let offset = asked.max(len.saturating_sub(cap).next_multiple_of(16)).min(len);
        (offset, len - offset)
    }
}

/// The operands of the RMS norm → quantize row kernel (or, before a product of f32 activations,
/// the RMS norm → store one) before a product, which the product's one-row kernel runs in its
/// place (that row kernel's launch is left out of one-row calls).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowNorm {
    /// The row before the norm.
    pub x: Operand,
    /// The norm's weight, if any.
    pub weight: Option<usize>,
    /// The quantize's scale weight; none where the product takes the normed row in f16.
    pub scale: Option<usize>,
    /// Whether that scale is per column.
    pub per_column: bool,
}

/// The operands of a conv's decode step run by the product that computes its input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvStep {
    /// The conv weight (f32 `[channels, taps]`).
    pub weight: usize,
    /// Its bias.
    pub bias: Option<usize>,
    /// The conv state.
    pub state: usize,
    /// The buffer of the conv's output (after SiLU where it follows).
    pub out: BufferId,
    /// The fake-quantization scale of the conv's input, if any.
    pub scale: Option<usize>,
    /// Whether that scale is per channel.
    pub scale_per_column: bool,
    /// The int8 rows the conv's output is also quantized into (Mamba1's x_proj input), which
    /// the product then writes in place of the quantize launch.
    pub quantized: Option<ConvQuantize>,
}

/// The quantize a one-row product applies to the conv output it computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvQuantize {
    /// The int8 buffer.
    pub buffer: BufferId,
    /// Bytes per row of it.
    pub stride: usize,
    /// The scale weight.
    pub scale: usize,
    /// Whether the scale is per channel.
    pub per_column: bool,
}

impl Arg {
    /// An operand a kernel does not read (a null pointer: stride 0).
    pub fn absent_operand() -> Arg {
        Arg::Operand(Operand { buffer: 0, col: 0, stride: 0, scale: None, scale_per_column: false })
    }
}

/// An f32 view of a buffer: rows of `stride` values starting `col` values in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operand {
    /// The buffer.
    pub buffer: BufferId,
    /// First column.
    pub col: usize,
    /// Values per row of the buffer.
    pub stride: usize,
    /// Fake-quantization scale weight, if the view is a quantize → dequantize pair.
    pub scale: Option<usize>,
    /// Whether that scale is per column (else per tensor).
    pub scale_per_column: bool,
}
