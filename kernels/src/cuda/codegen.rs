//! CUDA source generation: one `extern "C"` entry point per distinct kernel of a plan, each
//! instantiating a `quamba.cuh` template with the model's dimensions as constants (so loops over
//! widths, heads and states unroll and index arithmetic folds). `ENTRY` is replaced by the name.
//! Every entry point starts with `quamba::pdl_enter()` (products: after their first weight
//! loads, inside `quamba::gemm` / `quamba::gemv`; scans: after loading their own recurrent state
//! and their operands' scales, inside `quamba::ssd_scan` / `quamba::selective_scan`; split row
//! chains: after loading their constants, `quamba::SegmentConsts`), which programmatic dependent
//! launch relies on.

use super::plan::Grid;

/// Where the generated entry points begin in a plan's source.
pub const GENERATED_MARKER: &str = "\n// ---- generated for this model ----\n";

/// The hand-written kernel library the entry points instantiate.
pub const LIBRARY: &str = include_str!("../../cuda/quamba.cuh");

/// The full source: library, then the generated entry points, then the greedy-decoding argmax.
pub fn source(entries: &[String], vocab: usize) -> String {
    let mut s = String::with_capacity(LIBRARY.len() + entries.len() * 400);
    s.push_str(LIBRARY);
    s.push_str(GENERATED_MARKER);
    s.push_str(&generated(entries, vocab));
    s
}

/// Threads per block of the greedy argmax entry point (`quamba_argmax`), which the runtime
/// launches with.
pub const ARGMAX_THREADS: u32 = 1024;

/// The generated part alone (what the snapshot tests pin).
pub fn generated(entries: &[String], vocab: usize) -> String {
    let argmax = format!(
        "extern \"C\" __global__ void __launch_bounds__({ARGMAX_THREADS}) quamba_argmax(const float* logits, int row_step, int row_off, i64* next, i64* history, int* step, int batch) {{\n    quamba::pdl_enter();\n    quamba::argmax_rows<{vocab}>(logits, row_step, row_off, next, history, step, batch);\n}}\n"
    );
    let mut s = String::new();
    for (i, e) in entries.iter().chain(std::iter::once(&argmax)).enumerate() {
        s.push_str(&traced(e, i));
        if i < entries.len() {
            s.push('\n');
        }
    }
    s
}

/// An entry point with the timeline hooks of `quambac cuda trace` (`QUAMBA_TRACE_BEGIN` /
/// `QUAMBA_TRACE_END`, empty unless the source is built with QUAMBA_TRACE) around its body;
/// `index` is the entry's position in the generated source, by which the host knows its events.
fn traced(entry: &str, index: usize) -> String {
    match (entry.find("{\n"), entry.rfind('}')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}\n    QUAMBA_TRACE_BEGIN;{}    QUAMBA_TRACE_END({index});\n{}", &entry[..=open], &entry[open + 1..close], &entry[close..])
        }
        _ => entry.to_string(),
    }
}

/// The names of the entry points in `generated` (a plan's [`CudaPlan::generated_source`]), in
/// source order: the index `QUAMBA_TRACE_END` records.
///
/// [`CudaPlan::generated_source`]: super::CudaPlan::generated_source
pub fn entry_names(generated: &str) -> Vec<String> {
    generated
        .split("extern \"C\" __global__ void")
        .skip(1)
        .filter_map(|e| {
            // Before the name: preprocessor lines and `__attribute__(…)` qualifiers
            // (`__launch_bounds__(N)`, `__cluster_dims__(x, y, z)` behind an #if).
            let head: String = e[..e.find('{')?].lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join(" ");
            let mut rest = head.trim_start();
            while rest.starts_with("__") {
                let open = rest.find('(')?;
                let close = open + rest[open..].find(')')?;
                rest = rest[close + 1..].trim_start();
            }
            Some(rest.split('(').next()?.trim().to_string())
        })
        .collect()
}

/// `entry` (which starts with `quamba::pdl_enter()`) letting the next launch start only when
/// its blocks exit, not as soon as their dependency wait returns: `QUAMBA_CUDA_ROW_TRIGGER=exit`
/// for the row kernels, to measure whether the next product's weight fetch, which otherwise runs
/// beside them, is what makes a one-block row kernel take 4 µs after its wait (the eleventh
/// session's timeline).
pub fn trigger_at_exit(entry: &str) -> String {
    entry.replacen("quamba::pdl_enter();", "quamba::pdl_wait();", 1)
}

/// A literal for an f32 constant.
fn lit(x: f32) -> String {
    format!("{x:?}f")
}

pub fn embed(kind: u8, width: usize, group: usize) -> String {
    format!(
        "extern \"C\" __global__ void __launch_bounds__(128) ENTRY(const i64* tokens, const void* table, const float* scales, float* out) {{\n    quamba::pdl_enter();\n    quamba::embed_packed<{kind}, {width}, {group}>(tokens, table, scales, out, blockIdx.x);\n}}\n"
    )
}

pub fn elementwise(width: usize, op: u8) -> String {
    let what = ["silu", "softplus", "mul", "add", "mul_silu", "copy"][op as usize];
    format!(
        "// {what}\nextern \"C\" __global__ void __launch_bounds__(256) ENTRY(quamba::Opnd a, quamba::Opnd b, float* out, int rows) {{\n    quamba::pdl_enter();\n    quamba::elementwise<{width}, {op}>(a, b, out, rows);\n}}\n"
    )
}

pub fn quantize(width: usize) -> String {
    format!(
        "extern \"C\" __global__ void __launch_bounds__(256) ENTRY(quamba::Opnd a, const float* scale, int scale_vec, i8* out, int stride, int rows) {{\n    quamba::pdl_enter();\n    quamba::quantize_rows<{width}>(a, scale, scale_vec, out, stride, rows);\n}}\n"
    )
}

pub fn dequantize(width: usize) -> String {
    format!(
        "extern \"C\" __global__ void __launch_bounds__(256) ENTRY(const i8* q, int stride, const float* scale, int scale_vec, float* out, int rows) {{\n    quamba::pdl_enter();\n    quamba::dequantize_rows<{width}>(q, stride, scale, scale_vec, out, rows);\n}}\n"
    )
}

/// Positions per thread of the sequence conv kernel.
pub const CONV_CHUNK: usize = 64;

pub fn conv(channels: usize, taps: usize, silu: bool, update: bool) -> String {
    format!(
        "extern \"C\" __global__ void __launch_bounds__(128) ENTRY(quamba::Opnd x, const float* weight, const float* bias, float* state, float* out, int batch, int seq) {{\n    quamba::pdl_enter();\n    quamba::causal_conv1d<{channels}, {taps}, {CONV_CHUNK}, {silu}, {update}>(x, weight, bias, state, out, batch, seq);\n}}\n"
    )
}

pub fn conv_state(channels: usize, taps: usize) -> String {
    format!(
        "extern \"C\" __global__ void __launch_bounds__(128) ENTRY(quamba::Opnd x, float* state, int batch, int seq) {{\n    quamba::pdl_enter();\n    quamba::conv_state<{channels}, {taps}>(x, state, batch, seq);\n}}\n"
    )
}

/// How a scan keeps its state between calls (`quamba::StateRow`): f32, or int8 with
/// `columns` scales per group (1, or d_state: one per state index) in a table of
/// `scale_floats` floats, each channel's group read from a group map where `grouped`
/// (ir::StateQuant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateForm {
    /// 0: f32 state; otherwise the scale table's columns.
    pub columns: usize,
    /// The scale table's length (0 for an f32 state).
    pub scale_floats: usize,
    /// Whether a group map names each channel's row of the table.
    pub grouped: bool,
}

impl StateForm {
    /// An f32 state.
    pub const F32: StateForm = StateForm { columns: 0, scale_floats: 0, grouped: false };

    /// Bytes of one state value.
    pub fn value_bytes(self) -> usize {
        if self.columns == 0 {
            4
        } else {
            1
        }
    }
}

/// The parameters of every Mamba1 scan entry point: the scan's own, then dt_proj's product
/// (input, weight, scales, activation scale, bias), which only [`selective_step_dt`] reads, so
/// that a launch passes one argument list to its one-row and its other kernels.
const SCAN_PARAMS: &str = "quamba::Opnd x, quamba::Opnd dt, quamba::Opnd b, quamba::Opnd c, const float* a_log, const float* d, void* state, const float* state_scale, const int* state_group, float* out, int batch, int seq, const void* ahead, int ahead_bytes, quamba::Opnd dt_in, const void* dt_w, const float* dt_scales, float dt_act, const float* dt_bias";

/// A Mamba1 selective scan entry point; `ahead`: the prefill's own kernel, which requests each TB
/// steps' inputs while the TB before run (`AHEAD` in `quamba::selective_scan`).
pub fn selective_scan(d_inner: usize, d_state: usize, lanes: usize, channels_per_block: usize, state: StateForm, ahead: bool) -> String {
    let threads = lanes * channels_per_block;
    let StateForm { columns, scale_floats, grouped } = state;
    let ahead = if ahead { format!(", true, {}", scan_prefill_window()) } else { String::new() };
    format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) ENTRY({SCAN_PARAMS}) {{\n    quamba::selective_scan<{d_inner}, {d_state}, {lanes}, {channels_per_block}, {columns}, {scale_floats}, {grouped}{ahead}>(x, dt, b, c, a_log, d, state, state_scale, state_group, out, batch, seq, ahead, ahead_bytes);\n}}\n"
    )
}

/// dt_proj's product as the scan's Δ: its weight layout kind, its input width (the dt rank), its
/// scale group, and the k-slices of the decode kernel it replaces (whose order of additions the
/// scan repeats, so that Δ is the same to the bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtProduct {
    pub kind: u8,
    pub k: usize,
    pub group: usize,
    pub wk: usize,
}

impl DtProduct {
    /// Shared memory a block of `channels_per_block` channels copies the product's tiles into.
    pub fn tile_bytes(&self, channels_per_block: usize) -> usize {
        channels_per_block / 8 * self.k.div_ceil(crate::cuda::pack::chunk(self.kind)) * 512
    }
}

/// Thousandths of the next layer's in_proj weight that each scan launch pulls into L2 for it
/// (`ahead.rs`): `QUAMBA_CUDA_L2_AHEAD` (0 to 1000; 0: none; default 700).
pub fn l2_ahead_per_mille() -> u16 {
    super::knobs::single("QUAMBA_CUDA_L2_AHEAD").map_or(L2_AHEAD_PER_MILLE, |v| v.min(1000) as u16)
}

/// The default of [`l2_ahead_per_mille`].
pub const L2_AHEAD_PER_MILLE: u16 = 700;

/// Whether one-row Mamba1 scans compute dt_proj's product themselves ([`selective_step_dt`]);
/// `QUAMBA_CUDA_DT_IN_SCAN=0` keeps dt_proj's own launch (to measure both side by side).
pub fn dt_in_scan() -> bool {
    super::knobs::on("QUAMBA_CUDA_DT_IN_SCAN")
}

/// Channels per block and threads per channel of the one-row scan with dt_proj
/// ([`selective_step_dt`]): 32 channels (four 8-row tiles of dt_proj, one per warp) of four
/// threads each (four states each at d_state 16), so that each warp runs one tile's products and
/// each thread a quarter of a channel's step, and mamba-2.8b's 5120 channels spread over 160
/// blocks rather than 40. `QUAMBA_CUDA_DT_STEP_SHAPE=CHANNELSxLANES` sets both (a tuning aid).
/// `None` where no such shape divides the width.
pub fn dt_step_shape(width: usize, d_state: usize) -> Option<(usize, usize)> {
    let (channels, lanes) = super::knobs::pair("QUAMBA_CUDA_DT_STEP_SHAPE", 'x').unwrap_or((32, 4));
    let lanes = if lanes.is_power_of_two() && lanes <= 32 && d_state.is_multiple_of(lanes) { lanes } else { 1 };
    // Whole 8-row tiles, whole warps, and a divisor of the width.
    let channels = (1..=channels / 8).rev().map(|t| 8 * t).find(|c| width.is_multiple_of(*c) && (c * lanes).is_multiple_of(32))?;
    Some((channels, lanes))
}

/// Largest shared-memory copy of dt_proj's tiles a one-row scan makes (mamba-2.8b: 40 KB).
pub const DT_TILES_MAX_BYTES: usize = 40 * 1024;

/// The one-row Mamba1 scan that computes Δ from dt_proj's input itself (`quamba::selective_step_dt`).
pub fn selective_step_dt(d_inner: usize, d_state: usize, lanes: usize, channels_per_block: usize, state: StateForm, dt: DtProduct) -> String {
    let threads = lanes * channels_per_block;
    let DtProduct { kind, k, group, wk } = dt;
    let StateForm { columns, scale_floats, grouped } = state;
    format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) ENTRY({SCAN_PARAMS}) {{\n    quamba::selective_step_dt<{d_inner}, {d_state}, {lanes}, {channels_per_block}, {columns}, {scale_floats}, {grouped}, {kind}, {k}, {group}, {wk}>(x, dt, b, c, a_log, d, state, state_scale, state_group, out, ahead, ahead_bytes, dt_in, dt_w, dt_scales, dt_act, dt_bias);\n}}\n"
    )
}

/// The SSD scan's block, `lanes` threads per state row (d_state / lanes states each) times the
/// head's rows per block: `default`, or `QUAMBA_CUDA_SSD_SHAPE=LANESxROWS` where that divides
/// d_state and head_dim (to measure side by side).
pub fn ssd_shape(head_dim: usize, d_state: usize, default: (usize, usize)) -> (usize, usize) {
    super::knobs::pair("QUAMBA_CUDA_SSD_SHAPE", 'x').filter(|&shape| ssd_shape_fits(head_dim, d_state, shape)).unwrap_or(default)
}

/// Whether an SSD block of `lanes` (a power of two up to a warp) per state row and `rows` rows
/// divides d_state and head_dim within 1024 threads.
fn ssd_shape_fits(head_dim: usize, d_state: usize, (lanes, rows): (usize, usize)) -> bool {
    lanes.is_power_of_two() && lanes <= 32 && d_state.is_multiple_of(lanes) && head_dim.is_multiple_of(rows) && lanes * rows <= 1024
}

/// The block of `ssd_scan`'s prefill kernel (an int8 state's, or any where
/// [`ssd_prefill_rows`] gives none): `decode` (the [`ssd_shape`]; on 4 layers of mamba2-2.7b, W4A8,
/// 1024-token TTFT on an H200, its 8 x 32 took 3.988 ms against 4.869 with 16 x 32, 5.218 with
/// 16 x 16, 5.215 with 32 x 8 and 5.431 with 4 x 64), or `QUAMBA_CUDA_SSD_PREFILL_SHAPE=LANESxROWS`
/// where that divides d_state and head_dim and, with an int8 state (whose rows are laid out by
/// lanes), keeps the decode kernel's lanes.
pub fn ssd_prefill_shape(head_dim: usize, d_state: usize, decode: (usize, usize), f32_state: bool) -> (usize, usize) {
    super::knobs::pair("QUAMBA_CUDA_SSD_PREFILL_SHAPE", 'x')
        .filter(|&shape| ssd_shape_fits(head_dim, d_state, shape) && (f32_state || shape.0 == decode.0))
        .unwrap_or(decode)
}

/// The prefill selective scan's block (Mamba1): 32 channels of 4 lanes each where they divide
/// d_inner and d_state (the decode kernel's 128 channels of one lane give mamba-2.8b 40 blocks of
/// four warps; on 4 layers of it, W4A8, 1024-token TTFT on an H200: 4.418 → 4.075 ms, against
/// 4.170 with 64 x 2, 4.536 with 32 x 1 and 4.441 with 16 x 8), else `decode`; or
/// `QUAMBA_CUDA_SCAN_PREFILL_SHAPE=CHANNELSxLANES` where that divides them. With whole-window
/// steps (twenty-fifth session) 32 x 4 took 2.876 ms, 16 x 8 2.902, 8 x 8 2.838, 16 x 4 2.924,
/// 32 x 2 3.190 and 32 x 8 3.047 (FP16: 3.907 against 3.923 with 8 x 8 and more with the others).
/// A shape also keeps the kernel's windows (B and C, Δ and x: 8 bytes a step, a state and a
/// channel) within 48 KB of static shared memory.
pub fn scan_prefill_shape(d_inner: usize, d_state: usize, decode: (usize, usize)) -> (usize, usize) {
    let window = scan_prefill_window();
    let fits = |(c, l): (usize, usize)| {
        l.is_power_of_two() && l <= 32 && d_state.is_multiple_of(l) && d_inner.is_multiple_of(c) && c * l <= 1024 && (c * l).is_multiple_of(d_state) && 8 * window * (c + d_state) <= 48 * 1024
    };
    super::knobs::pair("QUAMBA_CUDA_SCAN_PREFILL_SHAPE", 'x').filter(|&shape| fits(shape)).or(Some((32, 4)).filter(|&shape| fits(shape))).unwrap_or(decode)
}

/// The steps of a window of the prefill selective scan (`WINDOW` in `quamba::selective_scan`):
/// the inputs of the next window are requested while this one runs. 8, or
/// `QUAMBA_CUDA_SCAN_PREFILL_WINDOW=16|32`. Longer windows did not pay on an H200 (4 layers of
/// mamba-2.8b, W4A8, 1024-token TTFT: 2.764 ms at 8, 2.811 at 16, 3.101 at 32; FP16 3.947, 3.956,
/// 4.227): the window's loads were not what held it, and at 32 its 165 registers were.
pub fn scan_prefill_window() -> usize {
    super::knobs::single("QUAMBA_CUDA_SCAN_PREFILL_WINDOW").filter(|w| matches!(w, 8 | 16 | 32)).unwrap_or(8)
}

/// Which SSD scan entry point [`ssd`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsdEntry {
    /// Decode steps and calls of a few rows.
    Plain,
    /// The one-row step that also gates its output for the gated norm chain after it and sums its
    /// squares ([`pregated_hadamard_quantize`]).
    Gated,
    /// The prefill's own kernel, which requests each TB steps' inputs ahead (`AHEAD` in
    /// `quamba::ssd_scan`).
    Prefill,
}

/// An SSD scan entry point. Every one takes the gated chain's operands and the partial sums'
/// buffer (`chain_x`, `chain_z`, `partials`; only a gated one reads them), so that a launch
/// passes one argument list to its one-row and its other kernels.
pub fn ssd(heads: usize, head_dim: usize, groups: usize, d_state: usize, (lanes, rows_per_block): (usize, usize), state: StateForm, entry: SsdEntry) -> String {
    let threads = lanes * rows_per_block;
    let StateForm { columns, scale_floats, grouped } = state;
    // An int8 state's step asks for the blocks per SM that the f32 step's 64 registers give: at
    // the 76-80 ptxas chose otherwise, mamba2-2.7b's step blocks no longer all fit beside
    // in_proj's, and a fifth of them started only once in_proj ended.
    // (Not the prefill kernel's: at 64 registers its inputs requested ahead spilled.)
    let bounds = if columns > 0 && entry != SsdEntry::Prefill { format!("{threads}, {}", (65536 / (threads * 64)).max(1)) } else { threads.to_string() };
    let (flag, chain) = match entry {
        SsdEntry::Gated => (", true", ", chain_x, chain_z, partials"),
        SsdEntry::Prefill => (", false, true", ""),
        SsdEntry::Plain => ("", ""),
    };
    format!(
        "extern \"C\" __global__ void __launch_bounds__({bounds}) ENTRY({SSD_PARAMS}) {{\n    quamba::ssd_scan<{heads}, {head_dim}, {groups}, {d_state}, {lanes}, {rows_per_block}, {columns}, {scale_floats}, {grouped}{flag}>(x, dt, b, c, a_log, d, dt_bias, dt_min, dt_max, state, state_scale, state_group, out, batch, seq, ahead, ahead_bytes{chain});\n}}\n"
    )
}

/// The parameters of every SSD scan entry point (one argument list for a launch's kernels).
const SSD_PARAMS: &str = "quamba::Opnd x, quamba::Opnd dt, quamba::Opnd b, quamba::Opnd c, const float* a_log, const float* d, const float* dt_bias, float dt_min, float dt_max, void* state, const float* state_scale, const int* state_group, float* out, int batch, int seq, const void* ahead, int ahead_bytes, quamba::Opnd chain_x, quamba::Opnd chain_z, float* partials";

/// The prefill SSD kernel of an f32 state (`quamba::ssd_prefill`: a warp holds `rows` state rows,
/// a block `warps` warps): 4 x 4 where d_state is a multiple of 32 and head_dim of 16; or
/// `QUAMBA_CUDA_SSD_PREFILL_ROWS=ROWSxWARPS` (ROWS 1, 2 or 4) where that divides them;
/// `QUAMBA_CUDA_SSD_PREFILL_ROWS=0` keeps `ssd_scan`'s prefill kernel (to measure side by side).
pub fn ssd_prefill_rows(head_dim: usize, d_state: usize) -> Option<(usize, usize)> {
    let fits = |(rows, warps): (usize, usize)| {
        matches!(rows, 1 | 2 | 4) && (1..=8).contains(&warps) && d_state.is_multiple_of(32) && head_dim.is_multiple_of(rows * warps) && (rows * warps).is_multiple_of(4)
    };
    if super::knobs::single("QUAMBA_CUDA_SSD_PREFILL_ROWS") == Some(0) {
        return None;
    }
    super::knobs::pair("QUAMBA_CUDA_SSD_PREFILL_ROWS", 'x').filter(|&shape| fits(shape)).or(Some((4, 4)).filter(|&shape| fits(shape)))
}

/// The prefill SSD entry point of an f32 state ([`ssd_prefill_rows`]); its parameters are every
/// SSD entry point's.
/// Where B or C is quantized, [`ssd_bc_quantize`] must run before it (it reads them as stored).
pub fn ssd_prefill(heads: usize, head_dim: usize, groups: usize, d_state: usize, (rows, warps): (usize, usize)) -> String {
    let threads = 32 * warps;
    // Blocks of 64 threads ask for 6 an SM (at most 168 registers: ptxas took 222 for 4 x 2,
    // hoisting a window's shared-memory loads, and spilled at 128), so that mamba2-2.7b's 640
    // fit an H100's or H200's SMs at once; the default 4 x 4 asks for 3 (it takes 122).
    let min_blocks = (384 / threads).max(1);
    format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}, {min_blocks}) ENTRY({SSD_PARAMS}) {{\n    quamba::ssd_prefill<{heads}, {head_dim}, {groups}, {d_state}, {rows}, {warps}>(x, dt, b, c, a_log, d, dt_bias, dt_min, dt_max, state, out, batch, seq, ahead, ahead_bytes);\n}}\n"
    )
}

/// The SSD prefill's first kernel where B or C is fake-quantized: both, in place, once
/// (`quamba::fake_quantize_bc`), 256 threads a block, one a value.
pub fn ssd_bc_quantize(groups: usize, d_state: usize) -> String {
    let width = groups * d_state;
    format!("extern \"C\" __global__ void __launch_bounds__(256) ENTRY({SSD_PARAMS}) {{\n    quamba::fake_quantize_bc<{width}>(b, c, (long long)batch * seq);\n}}\n")
}

/// Whether a one-row SSD step gates its own output for the split gated norm chain after it
/// ([`ssd`] gated, [`pregated_hadamard_quantize`]); `QUAMBA_CUDA_GATE_IN_SSD=0` keeps the chain
/// gating and summing the row itself (to measure side by side).
pub fn gate_in_ssd() -> bool {
    super::knobs::on("QUAMBA_CUDA_GATE_IN_SSD")
}

pub fn stage_rms_norm(width: usize, weight_index: usize, has_weight: bool, eps: f32) -> String {
    let w = if has_weight { format!("w{weight_index}") } else { "nullptr".into() };
    format!("quamba::row_rms_norm<{width}, T>(row, {w}, {}, scratch);", lit(eps))
}

pub fn stage_gated_norm(width: usize, groups: usize, weight_index: usize, eps: f32) -> String {
    format!("quamba::row_gated_norm<{width}, {groups}, T>(row, z, r, w{weight_index}, {}, scratch);", lit(eps))
}

/// Mamba1's gate `x · silu(z)` on the loaded row.
pub fn stage_gate(width: usize) -> String {
    format!("quamba::row_gate<{width}, T>(row, z, r);")
}

pub fn stage_hadamard(width: usize) -> String {
    format!("quamba::row_hadamard<{width}, T>(row);")
}

pub fn stage_quantize(width: usize) -> String {
    format!("quamba::row_quantize<{width}, T>(row, qscale, qvec, qscale0, out_q, q_stride, r);")
}

pub fn stage_store(width: usize) -> String {
    format!("quamba::row_store<{width}, T>(row, out_f, r);")
}

/// The parameters of every row-kernel entry point ([`row_chain`], [`gated_hadamard_quantize`]):
/// the plan passes a row chain's arguments without knowing which form it became.
const ROW_PARAMS: &str = "quamba::Opnd x, quamba::Opnd z, const float* w0, const float* w1, const float* w2, const float* qscale, int qvec, float* out_f, i8* out_q, int q_stride";

/// Threads of a row kernel: enough that each thread holds a few values.
pub fn row_threads(width: usize) -> usize {
    match width {
        w if w >= 4096 => 1024,
        w if w >= 1024 => 512,
        _ => 256,
    }
}

/// One block per row: load, the stages in order, store.
pub fn row_chain(width: usize, stages: &[String]) -> String {
    let threads = row_threads(width);
    let padded = width.div_ceil(32) * 32; // see quamba::sw
    let mut s = format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) ENTRY({ROW_PARAMS}) {{\n    quamba::pdl_enter();\n    constexpr int T = {threads};\n    __shared__ float row[{padded}];\n    __shared__ float scratch[32];\n    const i64 r = blockIdx.x;\n    const float qscale0 = qscale ? qscale[0] : 0.f;\n    quamba::row_load<{width}, T>(row, x, r);\n"
    );
    for st in stages {
        s.push_str("    ");
        s.push_str(st);
        s.push('\n');
    }
    s.push_str("}\n");
    s
}

/// The most warps per block and chunks in flight per warp of the decode products of `kind`
/// called with up to `rows` rows (see [`GemmConfig::decode`]: about three chunks per warp within
/// these caps), or `QUAMBA_CUDA_DECODE=WARPS,DEPTH` for every kind (a tuning aid; the plan, hence
/// the source hash, changes with it).
fn decode_limits(kind: u8, rows: usize) -> (usize, usize) {
    let measured = match kind {
        0 => (16, 1),
        1 if rows == 1 => (20, 1),
        _ => (8, 4),
    };
    super::knobs::pair("QUAMBA_CUDA_DECODE", ',').map_or(measured, |(w, d)| (w.clamp(1, 32), d.clamp(1, 8)))
}

/// 8-column tiles per warp of a decode product of `kind` for calls of up to `rows` rows (see
/// [`GemmConfig::decode`]), or `QUAMBA_CUDA_DECODE_NT=N` (1, 2 or 4) for every kind and row count
/// (a tuning aid; the plan, hence the source hash, changes with it).
fn decode_tiles(kind: u8, rows: usize) -> usize {
    match std::env::var("QUAMBA_CUDA_DECODE_NT").ok().as_deref() {
        Some("1") => 1,
        Some("2") => 2,
        Some("4") => 4,
        _ if kind == 0 => 4,
        _ if kind >= 2 && rows > 1 => 2,
        _ => 1,
    }
}

/// Hadamard blocks per row when a gated norm -> Hadamard -> quantize chain of `width` with
/// `groups` norm groups can run as [`gated_hadamard_quantize`]: at least two blocks of at most
/// 1024 elements, each within one norm group. `QUAMBA_CUDA_ROW_SPLIT=0` keeps one block per row
/// (to measure the split side by side).
pub fn hadamard_segments(width: usize, groups: usize) -> Option<usize> {
    let block = width & width.wrapping_neg();
    let splits = (32..=1024).contains(&block) && width / block >= 2 && groups > 0 && width.is_multiple_of(groups) && (width / groups).is_multiple_of(block);
    let allowed = super::knobs::on("QUAMBA_CUDA_ROW_SPLIT");
    (splits && allowed).then_some(width / block)
}

/// What a split row chain ([`gated_hadamard_quantize`] and the kernels like it) ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainOutput {
    /// Quantized to int8 (`out_q`, `q_stride`, the quantize's scale in `qscale`).
    Quantized,
    /// Stored in f32 (`out_f`, rows `width` apart): W4A16, whose products take f32 rows. Its
    /// out_proj input chain then splits as W4A8's does instead of running one block per row;
    /// measured on an H200, 16-layer W4A16 TPOT at batch 1: mamba2-2.7b 0.4417 → 0.3654 ms,
    /// mamba-2.8b 0.4559 → 0.4091, 8-layer mamba2-8b 0.4841 → 0.4436 (`bench/RESULTS.md`,
    /// twenty-second session).
    Stored,
}

impl ChainOutput {
    /// The chain's `split_consts` / `segment_consts` flag (whether it loads quantize scales), and
    /// its output and row stride arguments.
    fn parts(self, width: usize) -> (&'static str, String) {
        match self {
            ChainOutput::Quantized => ("", "out_q, q_stride".to_string()),
            ChainOutput::Stored => (", false", format!("out_f, {width}")),
        }
    }
}

/// The gated norm -> Hadamard -> quantize (or store) chain as one block per (row, Hadamard
/// block); the parameters are those of [`row_chain`]'s entry points, so a launch passes the same
/// arguments.
///
/// A norm group of 2 to 8 blocks is, on sm_90, a cluster whose blocks add their own sums of
/// squares through each other's shared memory, instead of each block gating and summing the
/// whole group itself (earlier GPUs). Measured on an H200, 16-layer mamba2-2.7b W4A8 (whose
/// 5120-wide row is one group of five blocks), TPOT batch 1 / 16 side by side: 0.3555 / 1.1610
/// ms without clusters, 0.3304 / 1.1311 with (`bench/RESULTS.md`, thirteenth session).
/// `QUAMBA_CUDA_CLUSTER=0` keeps every block summing its group (to measure side by side).
pub fn gated_hadamard_quantize(width: usize, groups: usize, eps: f32, output: ChainOutput) -> String {
    let (quantized, out) = output.parts(width);
    let block = width & width.wrapping_neg();
    let padded = block.div_ceil(32) * 32;
    let group_blocks = width / groups / block;
    let cluster = if (2..=8).contains(&group_blocks) && clusters_allowed() { group_blocks } else { 1 };
    let dims = if cluster > 1 { format!("\n#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n__cluster_dims__({cluster}, 1, 1)\n#endif\n") } else { " ".to_string() };
    format!(
        "extern \"C\" __global__ void{dims}__launch_bounds__({block}) ENTRY({ROW_PARAMS}) {{\n    const auto k = quamba::split_consts<{width}, {block}, {block}{quantized}>(x, z, w0, qscale, qvec);\n    quamba::pdl_enter();\n    __shared__ float buf[{padded}];\n    __shared__ float scratch[32];\n    quamba::gated_hadamard_quantize<{width}, {groups}, {block}, {block}, {cluster}>(x, z, k, {}, {out}, buf, scratch);\n}}\n",
        lit(eps)
    )
}

/// [`gated_hadamard_quantize`] at one row after an SSD step that gated its output and summed its
/// squares in `parts` partial sums per row ([`ssd`] gated); the parameters are those of
/// [`row_chain`]'s entry points, with the partial sums in `w1` (which the split chain does not
/// read), so a launch passes the same arguments to both.
pub fn pregated_hadamard_quantize(width: usize, groups: usize, parts: usize, eps: f32, output: ChainOutput) -> String {
    let (quantized, out) = output.parts(width);
    let block = width & width.wrapping_neg();
    let padded = block.div_ceil(32) * 32;
    format!(
        "extern \"C\" __global__ void __launch_bounds__({block}) ENTRY({ROW_PARAMS}) {{\n    const auto k = quamba::split_consts<{width}, {block}, {block}{quantized}>(x, z, w0, qscale, qvec);\n    quamba::pdl_enter();\n    __shared__ float buf[{padded}];\n    __shared__ float scratch[32];\n    quamba::pregated_hadamard_quantize<{width}, {groups}, {block}, {block}, {parts}>(x, w1, k, {}, {out}, buf, scratch);\n}}\n",
        lit(eps)
    )
}

/// Whether row chains may run over thread-block clusters (`QUAMBA_CUDA_CLUSTER`, default on).
fn clusters_allowed() -> bool {
    super::knobs::on("QUAMBA_CUDA_CLUSTER")
}

/// The [gate ->] Hadamard -> quantize chain (Mamba1's out_proj input) as one block per (row,
/// Hadamard block of `width / segments`); the parameters are those of [`row_chain`]'s entry
/// points, so a launch passes the same arguments.
pub fn hadamard_quantize(width: usize, segments: usize, gate: bool, output: ChainOutput) -> String {
    let (quantized, out) = output.parts(width);
    let block = width / segments;
    let padded = block.div_ceil(32) * 32;
    format!(
        "extern \"C\" __global__ void __launch_bounds__({block}) ENTRY({ROW_PARAMS}) {{\n    const auto k = quamba::split_consts<{width}, {block}, {block}{quantized}>(x, z, nullptr, qscale, qvec);\n    quamba::pdl_enter();\n    __shared__ float buf[{padded}];\n    quamba::hadamard_quantize<{width}, {block}, {block}, {gate}>(x, z, k, {out}, buf);\n}}\n"
    )
}

/// Blocks per row (a cluster) when a gated norm -> Hadamard -> quantize chain of `width` with
/// `groups` norm groups can run as [`cluster_gated_hadamard_quantize`]: the row is one Hadamard
/// block of 2048 to 8192 elements, with one norm group per 1024 (mamba2-8b: 8192 in 8 groups),
/// which [`hadamard_segments`] leaves to one block per row. `QUAMBA_CUDA_CLUSTER=0` keeps that
/// (to measure side by side).
pub fn cluster_segments(width: usize, groups: usize) -> Option<usize> {
    let one_block = width.is_power_of_two() && (2048..=8192).contains(&width);
    (one_block && groups * 1024 == width && clusters_allowed()).then_some(width / 1024)
}

/// The gated norm -> Hadamard -> quantize chain of a one-Hadamard-block row over a cluster of
/// `width / 1024` blocks (sm_90; earlier GPUs run it in the cluster's first block); the
/// parameters are those of [`row_chain`]'s entry points, so a launch passes the same arguments.
pub fn cluster_gated_hadamard_quantize(width: usize, eps: f32, output: ChainOutput) -> String {
    let (quantized, out) = output.parts(width);
    let scale0 = if output == ChainOutput::Quantized { "qvec ? 0.f : qscale[0]" } else { "0.f" };
    let cluster = width / 1024;
    format!(
        "extern \"C\" __global__ void\n#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n__cluster_dims__({cluster}, 1, 1)\n#endif\n__launch_bounds__(1024) ENTRY({ROW_PARAMS}) {{\n    const auto k = quamba::segment_consts<1, 1024{quantized}>(x, z, w0, qscale, qvec, (int)quamba::cluster_rank() * 1024);\n    const float qscale0 = {scale0};\n    quamba::pdl_enter();\n    quamba::cluster_gated_hadamard_quantize<{width}, {cluster}>(x, z, k, w0, {}, qscale, qvec, qscale0, {out});\n}}\n",
        lit(eps)
    )
}

/// The shape of a matrix product.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub kind: u8,
    pub k: usize,
    pub n: usize,
    pub group: usize,
    pub vec: bool,
}

/// Warp tiling of a matrix product (see `quamba::gemm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmConfig {
    pub mt: usize,
    pub nt: usize,
    pub wn: usize,
    pub wk: usize,
    /// Weight chunks each warp has in flight.
    pub depth: usize,
    /// Up to how many rows of activations a block stages in shared memory (0: none).
    pub stage: usize,
}

impl GemmConfig {
    /// Few rows: one 16-row tile; the block's warps split k for 8 columns, about three chunks
    /// each, so that each warp waits on few dependent loads (a decode step is latency-bound).
    /// Measured on an H200 (bench/RESULTS.md): packed 4/8-bit weights do best with 8 warps and
    /// every chunk of a warp requested at once (up to 4); f16 weights with 16 warps and one chunk
    /// ahead, since a deeper ring's registers cost f16 blocks their occupancy. Int4 weights with f16
    /// activations (W4A16) at one row also do best with one chunk ahead, up to 20 warps (16-layer
    /// TPOT side by side: mamba2-2.7b 0.7095 → 0.6356 ms, mamba-2.8b 0.8123 → 0.6579; at 16 rows a
    /// sweep measured it 13 % slower at the 2.7B shape, so calls of more rows keep the packed
    /// rule; since the twenty-second session W4A16's one-row calls run `quamba::gemv`, and this
    /// rule only where `QUAMBA_CUDA_GEMV=0`). Each warp covers one 8-column tile, except: int8-activation products called with more than one row cover
    /// two (an activation fragment then serves both; 16-layer W4A8, batch 16: −8 % at the 2.7B
    /// shape, −10 % at the 2.8B one, but +10 % at batch 1, hence a kernel of its own), and f16
    /// weights four (FP16 at the 2.7B shape: batch 1 −5 %, batch 16 −19 %; at the 2.8B shape
    /// batch 16 −16 % but batch 1 +6 %, the uniform carveout moving 58 → 27 % with it). W4A16
    /// measured 1-2 % slower with two. Capping the tiles to keep 128 blocks per product was
    /// tried and is worse at the 2.7B shape (+7 % at batch 1) without fixing the 2.8B one.
    pub fn decode(kind: u8, k: usize, rows: usize) -> GemmConfig {
        let (max_warps, max_depth) = decode_limits(kind, rows);
        let chunks = k.div_ceil(crate::cuda::pack::chunk(kind));
        let wk = chunks.div_ceil(3).clamp(1, max_warps);
        let stage = stage_rows(kind, chunks * crate::cuda::pack::chunk(kind));
        GemmConfig { mt: 1, nt: decode_tiles(kind, rows), wn: 1, wk, depth: chunks.div_ceil(wk).clamp(1, max_depth), stage }
    }
    /// Many rows: 64×64 blocks, each warp 64 rows × 16 columns, one chunk ahead.
    pub const PREFILL: GemmConfig = GemmConfig { mt: 4, nt: 2, wn: 4, wk: 1, depth: 1, stage: 0 };

    pub fn threads(&self) -> u32 {
        (self.wn * self.wk * 32) as u32
    }

    pub fn shared_bytes(&self) -> u32 {
        if self.wk > 1 {
            (self.wk * self.wn * 32 * self.mt * self.nt * 4 * 4) as u32
        } else {
            0
        }
    }

    pub fn grid(&self, n: usize) -> Grid {
        Grid::Gemm { n_blocks: n.div_ceil(8).div_ceil(self.wn * self.nt), rows_per_block: 16 * self.mt }
    }
}

/// Every product entry point's parameters: the operands of `quamba::gemm` / `quamba::gemv`, then
/// the conv step a one-row product may apply to its output (`quamba::ConvStep`,
/// [`crate::cuda::plan::Arg::ConvStep`]; only a [`gemv`] with a [`ConvEpilogue`] reads it), and
/// the row norm it may run on its input (`quamba::RowNorm`, [`crate::cuda::plan::Arg::RowNorm`];
/// only a [`gemv`] with a [`NormPrologue`] reads it).
const PRODUCT_PARAMS: &str = "const void* A, int lda, const uint4* W, const float* scales, float act_scale, const float* bias, const float* resid, int ldr, float* out, int ldo, int M, quamba::ConvStep conv, quamba::RowNorm norm";

pub fn gemm(s: &GemmShape, c: &GemmConfig) -> String {
    let threads = c.threads();
    format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) ENTRY({PRODUCT_PARAMS}) {{\n    quamba::gemm<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M);\n}}\n",
        s.kind, s.k, s.n, s.group, c.mt, c.nt, c.wn, c.wk, c.depth, s.vec, c.stage
    )
}

/// Tiling of a product of many rows (`quamba::gemm_tiled`): blocks of `wn` warps, each warp
/// `16 mt` rows by `nt` 8-column tiles, activations staged in shared memory `sk` columns at a
/// time with `stages` slabs in flight, weights through each warp's ring of `depth` chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledConfig {
    pub mt: usize,
    pub nt: usize,
    pub wn: usize,
    pub depth: usize,
    pub sk: usize,
    pub stages: usize,
}

impl TiledConfig {
    /// The layout of a product of many rows with `kind` weights and `n` columns: blocks of four
    /// warps, each warp 32 rows by 32 columns for f16 mma; for int8 64 rows by 32 columns, or by
    /// 16 where the product has fewer than 4096 columns; 32 rows by 8 columns below 512
    /// (Mamba1's x_proj), so that a prompt of a thousand rows still spreads over a few waves of
    /// blocks. A slab is one f16 k-chunk (32 columns of f32) or an int8 chunk, four in flight;
    /// rings of two chunks, or four where a chunk is only two k-steps (f16 and int8 weights). `QUAMBA_CUDA_TILED=0` keeps
    /// [`GemmConfig::PREFILL`] on `quamba::gemm` instead (its activations read from global memory
    /// at every k-step), and `QUAMBA_CUDA_TILED=MTxNTxWNxSTAGES` sets those four for every
    /// product (a tuning aid).
    pub fn prefill(kind: u8, n: usize) -> Option<TiledConfig> {
        let chunk = crate::cuda::pack::chunk(kind);
        let sk = if kind >= 2 { chunk } else { 32 };
        let depth = if chunk / crate::cuda::pack::k_step(kind) <= 2 { 4 } else { 2 };
        let (mt, nt) = match n {
            _ if n < 512 => (2, 1),
            // f16 mma: 32-row warps (more blocks, fewer registers); on 4-layer mamba2-2.7b
            // (1024-token TTFT, H200) FP16 4.973 → 4.661 ms, W4A16 5.487 → 4.923; W4A8 3.988
            // → 3.979, so int8 keeps 64.
            _ if kind < 2 => (2, 4),
            _ if n >= 4096 => (4, 4),
            _ => (4, 2),
        };
        let default = TiledConfig { mt, nt, wn: 4, depth, sk, stages: 4 };
        if !super::knobs::on("QUAMBA_CUDA_TILED") {
            return None;
        }
        Some(match super::knobs::set_numbers("QUAMBA_CUDA_TILED", &['x']).as_deref() {
            Some([mt, nt, wn, stages]) => TiledConfig { mt: *mt, nt: *nt, wn: *wn, stages: (*stages).max(2), ..default },
            _ => default,
        })
    }

    pub fn threads(&self) -> u32 {
        (self.wn * 32) as u32
    }

    pub fn grid(&self, n: usize) -> Grid {
        Grid::Gemm { n_blocks: n.div_ceil(8).div_ceil(self.wn * self.nt), rows_per_block: 16 * self.mt }
    }
}

pub fn gemm_tiled(s: &GemmShape, c: &TiledConfig) -> String {
    let threads = c.threads();
    format!(
        "extern \"C\" __global__ void __launch_bounds__({threads}) ENTRY({PRODUCT_PARAMS}) {{\n    quamba::gemm_tiled<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M);\n}}\n",
        s.kind, s.k, s.n, s.group, c.mt, c.nt, c.wn, c.depth, c.sk, c.stages
    )
}

/// Warp layout of a one-row decode product with int8 activations (`quamba::gemv`): `wk` warps
/// split k for each of `wn` 8-column tiles per block, each streaming its chunks through a ring
/// of `depth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemvConfig {
    pub wn: usize,
    pub wk: usize,
    pub depth: usize,
    /// Bytes of one 8-column tile's weights and of its scales, when the block's tiles come into
    /// shared memory through bulk copies (`quamba::tiles_fetch`) instead of each warp's ring.
    pub bulk: Option<BulkTiles>,
    /// With `bulk`: the tiles stream through a ring of stages in blocks that stay resident
    /// (`quamba::gemv_stream`; `wn` is 1) instead of each block holding its tiles at once.
    pub stream: Option<StreamStages>,
    /// Tiles each warp sums (1, or 2 with `bulk` where each chunk lies in one group: the warp
    /// loads a chunk's activations once for both, `quamba::PairDot`); a block holds `wn * tw`.
    pub tw: usize,
}

/// A streaming one-row product's ring (see [`GemvConfig::stream`]): tiles in flight per block,
/// and blocks per SM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStages {
    pub stages: usize,
    pub per_sm: usize,
    /// Tiles per stage.
    pub tps: usize,
}

/// The shared-memory footprint of a bulk-fetched one-row product block (see [`GemvConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkTiles {
    pub tile_bytes: usize,
    pub scale_bytes: usize,
}

impl BulkTiles {
    /// One 8-column tile of `shape` (`chunks` chunks of k) and its scales.
    fn of(shape: &GemmShape, chunks: usize) -> BulkTiles {
        BulkTiles { tile_bytes: chunks * 512, scale_bytes: 8 * shape.k.div_ceil(shape.group) * 4 }
    }

    /// Shared memory per tile: its weights and scales.
    pub fn bytes(&self) -> usize {
        self.tile_bytes + self.scale_bytes
    }
}

impl GemvConfig {
    /// The layout for a product of `shape`, or `None` where `quamba::gemv` does not apply (f16
    /// weights, a weight group that straddles its 32-column segments, or a row too wide to stage
    /// in shared memory) or `QUAMBA_CUDA_GEMV=0` turns it off. Int4 weights with f32 activations
    /// (W4A16) sum on the tensor cores (`quamba::HalfDot`) and take the int8 kinds' layouts.
    ///
    /// Each warp streams about 16 chunks (a slice long enough that its prologue, staging and
    /// reduction are a small part of its time), but k is split finer where the product has few
    /// tiles, so that about 2048 warps stream at once (about 16 per SM of an H100; 8192 for
    /// int4 weights left on the ring, below). Blocks hold
    /// about 8 warps. The ring holds 4 chunks, or 2 where a chunk carries several group scales
    /// (groups of 32 or 64: the tied head), so that it costs about 20 registers: the rest of a
    /// slice is prefetched into L2, and a deeper ring only costs occupancy. Measured on an H200,
    /// TPOT at batch 1 side by side against the tensor-core decode kernel (`QUAMBA_CUDA_GEMV=0`),
    /// 16-layer mamba2-2.7b W4A8 and 4-layer mamba2-8b W4A8 (whose tied head is most of its
    /// weights), warps x ring x chunks per warp for every product:
    ///
    /// | | mma kernel | 8x2x16 | 8x3x16 | 8x4x16 | 8x8x16 | 4x4x16 | 16x4x16 | 8x4x8 | 8x4x24 |
    /// |---|---|---|---|---|---|---|---|---|---|
    /// | 2.7B, 16 layers | 0.493 | 0.463 | 0.463 | **0.460** | 0.505 | 0.464 | 0.471 | 0.475 | 0.460 |
    /// | 8B, 4 layers | 0.647 | **0.545** | 0.572 | 0.578 | 0.863 | 0.589 | 0.661 | 0.663 | 0.578 |
    ///
    /// `QUAMBA_CUDA_GEMV=WARPSxDEPTHxCHUNKS` (or comma-separated) sets the three for every
    /// product (a tuning aid; the plan, hence the source hash, changes with it).
    ///
    /// Where a block's tiles and their scales fit in [`GEMV_MAX_BULK_BYTES`] (halving the tiles
    /// per block until they do), the block fetches them into shared memory in bulk instead of
    /// the ring (`quamba::tiles_fetch`), with the same warp layout; `QUAMBA_CUDA_GEMV_BULK=0`
    /// keeps the ring. Side by side on an H200, 16-layer W4A8, TPOT batch 1 / 16 (ms), ring vs
    /// bulk (with the carveout that leaves room for three in_proj blocks per SM): mamba2-2.7b
    /// 0.4448 / 1.2327 vs 0.4117 / 1.2355, mamba-2.8b 0.5600 / 1.315 vs 0.5385 / 1.330. Only
    /// where one wave holds the product's blocks (below); `QUAMBA_CUDA_GEMV_BULK_BLOCKS=N` sets
    /// that limit instead.
    ///
    /// Where one wave does not hold them and a chunk is one group, the tiles stream through
    /// resident blocks instead ([`stream_layout`], `quamba::gemv_stream`). Side by side on an
    /// H200, 8-layer mamba2-8b W4A8 TPOT batch 1 / 16: ring 0.3600 / 0.9445 ms, its in_proj
    /// streamed 0.3374 / 0.9643. `QUAMBA_CUDA_GEMV_STREAM=0` keeps the ring there, `=all`
    /// streams every product that two stages fit (a tuning aid).
    pub fn decode(shape: &GemmShape) -> Option<GemvConfig> {
        let ch = crate::cuda::pack::chunk(shape.kind);
        let whole = shape.group.is_multiple_of(ch) || shape.group >= shape.k;
        let splits_chunk = shape.group.is_multiple_of(32) && ch.is_multiple_of(shape.group);
        let gemv_knob = std::env::var("QUAMBA_CUDA_GEMV").ok();
        if gemv_knob.as_deref() == Some("0") {
            return None;
        }
        let (warps, depth, chunks_per_warp) = super::knobs::triple("QUAMBA_CUDA_GEMV", &[',', 'x']).map_or((8, if whole { 4 } else { 2 }, 16), |(w, d, c)| (w.clamp(1, 32), d.clamp(1, 16), c.max(1)));
        let chunks = shape.k.div_ceil(ch);
        if shape.kind == F16_WEIGHTS || !(whole || splits_chunk) || staged_row_bytes(shape.kind, chunks) > GEMV_MAX_K {
            return None;
        }
        let tiles = shape.n.div_ceil(8);
        let wk = chunks.div_ceil(chunks_per_warp).max(GEMV_WARPS.div_ceil(tiles)).clamp(1, chunks.min(32));
        let mut wn = (warps / wk).max(1);
        while wn > 1 && tiles.div_ceil(wn) < GEMV_MIN_BLOCKS {
            wn /= 2;
        }
        if let Some((wn, wk, tw)) = shape_knob(shape) {
            // Two tiles per warp: the block holds wn * 2 tiles, in bulk.
            let paired = whole && tw == 2;
            let wk = wk.clamp(1, chunks.min(32));
            let (block_tiles, bulk) = bulk_layout(shape, chunks, tiles, wn.max(1) * if paired { 2 } else { 1 }, wk);
            let tw = if paired && bulk.is_some() && block_tiles % 2 == 0 { 2 } else { 1 };
            return Some(GemvConfig { wn: block_tiles / tw, wk, depth: chunks.div_ceil(wk).clamp(1, depth), bulk, stream: None, tw });
        }
        let stream_knob = std::env::var("QUAMBA_CUDA_GEMV_STREAM").ok();
        let (wn, bulk) = bulk_layout(shape, chunks, tiles, wn, wk);
        // A chunk of several groups (the heads' groups of 32) costs several shuffles per chunk,
        // and the few warps of a streaming block then leave the product bound by them: measured
        // on an H200, a 16-layer mamba2-2.7b W4A8 whose head streamed took 0.4197 ms against
        // 0.4122 with the head on the ring.
        let streams = match stream_knob.as_deref() {
            Some("all") => true,
            Some("0") => false,
            _ => bulk.is_none() && whole,
        };
        if let Some((wk, tile, stream)) = streams.then(|| stream_layout(shape, chunks, tiles)).flatten() {
            return Some(GemvConfig { wn: 1, wk, depth: 1, bulk: Some(tile), stream: Some(stream), tw: 1 });
        }
        let (wn, wk) = if bulk.is_none() && whole && shape.kind == INT4_WEIGHTS && gemv_knob.is_none() {
            // Left on the ring with whole-group chunks of int4 weights (mamba2-8b W4A8's out_proj:
            // 512 tiles of 64 chunks): nothing of it is fetched ahead of its wait but the ring's
            // first chunks, so its loads in flight after the wait are all it has; k is split
            // finer, toward GEMV_RING_WARPS warps (not measured with int8 weights). Measured on
            // an H200, 8-layer mamba2-8b W4A8, TPOT batch 1 / 16 ms: 4 k-slices of 16 chunks
            // (2048 warps) 0.3289 / 0.970, 16 of 4 (8192 warps, one 512-thread block per tile)
            // 0.3189 / 0.971 (`bench/gpu-results/stream-shapes-run15.md`).
            let wk = wk.max(GEMV_RING_WARPS.div_ceil(tiles)).clamp(1, chunks.min(32));
            ((warps / wk).max(1), wk)
        } else {
            (wn, wk)
        };
        let config = GemvConfig { wn, wk, depth: chunks.div_ceil(wk).clamp(1, depth), bulk, stream: None, tw: 1 };
        // Bulk blocks of an even number of warp rows whose chunks each lie in one group sum two tiles per
        // warp over twice the k-slices: the same tiles and warps per block, each chunk's
        // activations read from shared memory once for two tiles. Measured on an H200, 16-layer
        // W4A8 TPOT at batch 1 (ms, two rounds, `bench/device-calls/run22/h3.sh`): mamba2-2.7b
        // 0.3011 / 0.3010 → 0.2889 / 0.2889 and mamba-2.8b 0.3065 / 0.3067 → 0.2973 / 0.2975 with
        // in_proj paired (4 rows × 2 slices → 2 × 4); pairing out_proj too, whose blocks have
        // one row (so they would halve), cost 2.7B what in_proj gained. The results are the same
        // bit for bit (`quamba::PairDot`). `QUAMBA_CUDA_GEMV_TW=1` keeps one tile per warp, `=2`
        // pairs every bulk product where it applies.
        let paired = match super::knobs::single("QUAMBA_CUDA_GEMV_TW") {
            Some(1) => false,
            Some(_) => true,
            None => config.wn >= 2 && config.wn.is_multiple_of(2),
        };
        Some(if whole && paired { config.paired(chunks) } else { config })
    }

    /// The same tiles per block summed two per warp ([`GemvConfig::tw`]), with the k-slices
    /// doubled so that the block keeps its warps: half the tiles per warp row where there are
    /// several, else two tiles per block (half the blocks). Unchanged where the block's tiles
    /// would no longer fit its shared memory or k has too few chunks to split.
    fn paired(self, chunks: usize) -> GemvConfig {
        let Some(tile) = self.bulk.filter(|_| self.stream.is_none() && self.tw == 1) else { return self };
        let wk = self.wk * 2;
        let wn = (self.wn / 2).max(1);
        if wk > chunks.min(32) || wn * 2 * tile.bytes() > max_bulk_bytes() {
            return self;
        }
        GemvConfig { wn, wk, depth: chunks.div_ceil(wk).clamp(1, self.depth), tw: 2, ..self }
    }

    pub fn threads(&self) -> u32 {
        (self.wn * self.wk * 32) as u32
    }

    /// Dynamic shared memory per block: the bulk-fetched tiles and their scales (a streaming
    /// block's stages).
    pub fn shared_bytes(&self) -> u32 {
        let tiles = self.stream.map_or(self.wn * self.tw, |s| s.stages * s.tps);
        self.bulk.map_or(0, |b| (tiles * b.bytes()) as u32)
    }

    /// The blocks per SM of an H100 / H200 that a one-wave layout (bulk-fetched or streamed)
    /// places, where that leaves a block's threads 64 registers each; `None` for the register
    /// ring, whose grid may take several waves.
    pub fn blocks_per_sm(&self, n: usize) -> Option<usize> {
        let per_sm = match self.grid(n) {
            Grid::Resident { per_sm, .. } => per_sm,
            Grid::Gemm { n_blocks, .. } if self.bulk.is_some() => n_blocks.div_ceil(ONE_WAVE_SMS),
            _ => return None,
        };
        let register_room = 65536 / (self.threads() as usize * 64);
        (per_sm <= register_room).then_some(per_sm.max(1))
    }

    pub fn grid(&self, n: usize) -> Grid {
        match self.stream {
            Some(s) => Grid::Resident { units: n.div_ceil(8), per_sm: s.per_sm },
            None => Grid::Gemm { n_blocks: n.div_ceil(8).div_ceil(self.wn * self.tw), rows_per_block: 1 },
        }
    }
}

/// Warps, stage and ring of a one-row product whose tiles stream through shared memory
/// ([`GemvConfig::stream`]), or `None` where two of its stages do not fit in a block.
///
/// Two blocks per SM of eight warps each (int4 weights: three, where each block's share of the
/// capped carveout holds two stages); each warp a k-slice of every tile of a stage, one tile per
/// stage; as many stages as the block's share holds (at most [`STREAM_MAX_STAGES`], no more
/// than a block has stages on an H100, and within what one block may hold on every target GPU:
/// [`STREAM_MAX_BLOCK_BYTES`]). A block's work after its dependency wait is a chain of stages
/// (wait for the stage, sum it, barrier, refill); int4 weights cost twice the unpacking and
/// products per byte of a stage, and there more blocks per SM, each with a shorter ring, ran
/// more of those chains at once. Measured on an H200 (`bench/gpu-results/stream-shapes-run15.md`),
/// TPOT batch 1 / 16 ms: 8-layer mamba2-8b W4A8 (its in_proj streams), two blocks per SM
/// 0.3289 / 0.970 (three stages each), three 0.3160 / 0.981 (two), one 0.3832 / 0.957; sixteen
/// warps instead of eight 0.3284 / 0.970 (two per SM) and 0.3622 / 0.955 (three). 16-layer
/// mamba2-2.7b W8A8 (in_proj and head stream, int8 weights): two per SM 0.4258 / 1.185, three
/// 0.4351 / 1.184.
/// `QUAMBA_CUDA_GEMV_STREAM_SHAPE=PER_SMxTPSxWARPS` sets blocks per SM, tiles per stage and
/// warps per block (a tuning aid).
fn stream_layout(shape: &GemmShape, chunks: usize, tiles: usize) -> Option<(usize, BulkTiles, StreamStages)> {
    if let Some((p, t, w)) = super::knobs::triple("QUAMBA_CUDA_GEMV_STREAM_SHAPE", &['x']) {
        return stream_stages(shape, chunks, tiles, (p.clamp(1, 8), t.clamp(1, 8), w.clamp(1, 32)));
    }
    // The most blocks per SM whose shares hold two stages; where none do, two blocks per SM (the
    // last tried) may still hold a block's every tile in one.
    let per_sm: &[usize] = if shape.kind == INT4_WEIGHTS { &[3, 2] } else { &[2] };
    let mut layout = None;
    for &p in per_sm {
        layout = stream_stages(shape, chunks, tiles, (p, STREAM_TILES_PER_STAGE, STREAM_WARPS));
        if layout.as_ref().is_some_and(|l| l.2.stages >= 2) {
            break;
        }
    }
    layout
}

/// [`stream_layout`] with `per_sm` blocks per SM of `warps` warps and `tps` tiles per stage.
fn stream_stages(shape: &GemmShape, chunks: usize, tiles: usize, (per_sm, tps, warps): (usize, usize, usize)) -> Option<(usize, BulkTiles, StreamStages)> {
    let tile = BulkTiles::of(shape, chunks);
    let per_tile = tile.bytes();
    let wk = warps.min(chunks);
    // Static shared memory beside the stages: the staged row, the k-slices' two sums per column,
    // the sums awaiting the epilogue, the barriers; and what the driver reserves per block.
    let fixed = staged_row_bytes(shape.kind, chunks) + 2 * wk * tps * 8 * 4 + tps * 32usize.div_ceil(tps) * 8 * 4 + 8 * STREAM_MAX_STAGES;
    let budget = (ONE_WAVE_SHARED / per_sm).min(STREAM_MAX_BLOCK_BYTES + 1024).checked_sub(fixed + 1024)?;
    let per_block = tiles.div_ceil(ONE_WAVE_SMS * per_sm).div_ceil(tps);
    let stages = (budget / (tps * per_tile)).min(STREAM_MAX_STAGES).min(per_block);
    (stages >= 2 || (stages >= 1 && stages == per_block)).then_some((wk, tile, StreamStages { stages, per_sm, tps }))
}

/// The warp rows, k-slices and tiles per warp `QUAMBA_CUDA_GEMV_AT=KxN:ROWSxSLICES[xTW][;…]`
/// sets for the one-row products of `k` inputs and `n` outputs (a tuning aid: one product's
/// layout, where `QUAMBA_CUDA_GEMV` sets every product's; TW 2 sums two tiles per warp).
fn shape_knob(shape: &GemmShape) -> Option<(usize, usize, usize)> {
    let value = std::env::var("QUAMBA_CUDA_GEMV_AT").ok()?;
    value.split(';').find_map(|entry| {
        let (at, layout) = entry.trim().split_once(':')?;
        let (k, n) = at.split_once('x')?;
        let numbers: Vec<usize> = layout.split('x').map(|p| p.trim().parse().ok()).collect::<Option<_>>()?;
        let at_shape = k.trim().parse::<usize>().ok()? == shape.k && n.trim().parse::<usize>().ok()? == shape.n;
        match numbers.as_slice() {
            [wn, wk] if at_shape => Some((*wn, *wk, 1)),
            [wn, wk, tw] if at_shape => Some((*wn, *wk, *tw)),
            _ => None,
        }
    })
}

/// The most dynamic shared memory a bulk-fetched block takes: [`GEMV_MAX_BULK_BYTES`], or
/// `QUAMBA_CUDA_GEMV_BULK_KB` KiB (a tuning aid; past 48 KiB the runtime opts the kernel in).
fn max_bulk_bytes() -> usize {
    super::knobs::single("QUAMBA_CUDA_GEMV_BULK_KB").map_or(GEMV_MAX_BULK_BYTES, |kb| kb * 1024)
}

/// Whether a one-row product's blocks fetch their tiles in bulk, and then how many tiles a block
/// holds (the ring's `wn`, halved until the tiles fit in [`GEMV_MAX_BULK_BYTES`]).
///
/// A bulk block computes only once its whole tiles have landed: where the product's blocks do
/// not all fit on the GPU at once, later waves wait for their bytes from scratch, while the ring
/// streams. Measured on an H200, W4A8 TPOT batch 1 (ms), bulk everywhere / ring everywhere /
/// bulk where one wave holds the blocks: 16-layer mamba2-2.7b 0.4155 / 0.4490 / 0.4162 (its head
/// goes to the ring), 8-layer mamba2-8b 0.3975 / 0.3593 / — (every 8B product, out_proj's 512
/// blocks of 35 KB included, takes two waves or more).
fn bulk_layout(shape: &GemmShape, chunks: usize, tiles: usize, ring_wn: usize, wk: usize) -> (usize, Option<BulkTiles>) {
    let tile = BulkTiles::of(shape, chunks);
    let per_tile = tile.bytes();
    let max_bytes = max_bulk_bytes();
    if !super::knobs::on("QUAMBA_CUDA_GEMV_BULK") || per_tile > max_bytes {
        return (ring_wn, None);
    }
    let mut wn = ring_wn;
    while wn > 1 && wn * per_tile > max_bytes {
        wn /= 2;
    }
    // Per block beside the tiles: the staged row, the k-slices' sums, the barriers, and what the
    // driver reserves.
    let other_bytes = staged_row_bytes(shape.kind, chunks) + wk * wn * 8 * 4 + 64 + 1024;
    let one_wave = ONE_WAVE_SMS * (ONE_WAVE_SHARED / (wn * per_tile + other_bytes));
    let max_blocks = std::env::var("QUAMBA_CUDA_GEMV_BULK_BLOCKS").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(one_wave);
    if tiles.div_ceil(wn) > max_blocks {
        return (ring_wn, None);
    }
    (wn, Some(tile))
}

/// Shared-memory bytes of a one-row product's staged row of `chunks` chunks: int8 activations
/// as they are (`quamba::stage_permuted`), f32 ones as f16 (`quamba::stage_half_permuted`).
fn staged_row_bytes(kind: u8, chunks: usize) -> usize {
    if kind == INT4_F16_ACTIVATIONS {
        chunks * crate::cuda::pack::chunk(kind) * 2
    } else {
        chunks * crate::cuda::pack::chunk(kind)
    }
}

/// Warps a one-row product aims to stream with at once.
const GEMV_WARPS: usize = 2048;
/// Warps a one-row product of int4 weights left on the register ring with whole-group chunks
/// aims for ([`GemvConfig::decode`]).
const GEMV_RING_WARPS: usize = 8192;
/// The weight kind of f16 weights (FP16), which has no one-row GEMV.
const F16_WEIGHTS: u8 = 0;
/// The weight kind of int4 weights with f16 activations (W4A16).
const INT4_F16_ACTIVATIONS: u8 = 1;
/// The weight kind of int4 weights with int8 activations (W4A8), whose one-row products take
/// more blocks per SM or k-slices ([`stream_layout`], [`GemvConfig::decode`]).
const INT4_WEIGHTS: u8 = 3;
/// Tiles per stage and warps per block of a streaming one-row product.
const STREAM_TILES_PER_STAGE: usize = 1;
const STREAM_WARPS: usize = 8;
/// The most stages of a streaming product's ring (`quamba::gemv_stream`).
const STREAM_MAX_STAGES: usize = 8;
/// The most shared memory a streaming product's block takes, static and dynamic: what an sm_86
/// GPU (A5000) lets a block opt in to.
const STREAM_MAX_BLOCK_BYTES: usize = 99 * 1024;
/// Fewest blocks worth keeping when grouping tiles into blocks (two per SM of an H100).
const GEMV_MIN_BLOCKS: usize = 264;
/// The widest row (padded k, bytes) `quamba::gemv` stages in static shared memory.
const GEMV_MAX_K: usize = 32 * 1024;
/// The most dynamic shared memory a bulk-fetched one-row product block takes (fewer tiles per
/// block, or the register ring, beyond it): what a kernel may take without opting in, and small
/// enough that three blocks (mamba2-2.7b's in_proj: 331 blocks on 132 SMs) fit in the shared
/// memory of the capped carveout (`runtime/src/cuda/carveout.rs`).
const GEMV_MAX_BULK_BYTES: usize = 48 * 1024;
/// The GPU a bulk product's blocks should fit on at once (the plan does not know the card; an
/// H100 / H200): its SMs, and the shared memory per SM under the capped carveout (65 % of
/// 228 KB; `runtime/src/cuda/carveout.rs`).
const ONE_WAVE_SMS: usize = 132;
const ONE_WAVE_SHARED: usize = 148 * 1024;

/// A causal conv whose decode step a one-row product runs on the output columns it feeds
/// (`quamba::conv_step_column`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvEpilogue {
    /// The product's first output column that is a conv input.
    pub first_column: usize,
    /// Conv channels (consecutive output columns).
    pub channels: usize,
    /// Taps.
    pub taps: usize,
    /// Whether SiLU follows the conv.
    pub silu: bool,
}

/// The RMS norm → quantize row kernel before a one-row product, run by the product's blocks
/// instead (`quamba::norm_quantize_permuted`); before a product of f32 activations (W4A16) the
/// RMS norm → store one, converting to f16 (`quamba::norm_half_permuted`; measured on an H200,
/// 16-layer W4A16 TPOT at batch 1: mamba2-2.7b 0.4676 → 0.4418 ms, mamba-2.8b 0.4889 → 0.4545).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormPrologue {
    /// The threads of the row kernel it replaces, whose arithmetic it reproduces.
    pub row_threads: usize,
    /// Whether the norm has a weight.
    pub weight: bool,
    /// Whether the quantize's scale is per column.
    pub per_column: bool,
    pub eps: f32,
}

impl NormPrologue {
    /// The prologue replacing a [`row_chain`] of `width` (an RMS norm, then a quantize) before a
    /// bulk one-row product `c`, where its threads can play the row kernel's.
    pub fn for_product(width: usize, c: &GemvConfig, weight: bool, per_column: bool, eps: f32) -> Option<NormPrologue> {
        let row_threads = row_threads(width);
        let threads = c.threads() as usize;
        let fits = c.bulk.is_some() && c.stream.is_none() && width.is_multiple_of(4) && row_threads.is_multiple_of(threads);
        fits.then_some(NormPrologue { row_threads, weight, per_column, eps })
    }
}

/// A one-row product's kernel; with `conv`, it also runs that conv's decode step on its output,
/// and with `norm`, the RMS norm → quantize of its input row.
pub fn gemv(s: &GemmShape, c: &GemvConfig, conv: Option<ConvEpilogue>, norm: Option<NormPrologue>) -> String {
    let threads = c.threads();
    // A streamed product, whose grid is what the GPU holds at once, and a product that runs a
    // conv's step (in_proj) tell ptxas the blocks per SM their one-wave layout places
    // (`__launch_bounds__(threads, blocks)`). Left to its own occupancy target, NVRTC 13.5's
    // ptxas gave mamba-2.8b's in_proj 48 registers and spilled a conv state value it loads
    // before the dependency wait, so that the spill store waited on the load; told 3 blocks, it
    // takes 55 registers and spills nothing (nor does the H200 driver's ptxas). Side by side on
    // an H200, 16-layer W4A8 TPOT at batch 1, two rounds each: mamba-2.8b 0.3088 → 0.3065 ms
    // (0.3074 → 0.3059 in another call), mamba2-2.7b and 8-layer mamba2-8b unchanged; asked for
    // 5 blocks: 0.3134 and 0.3069 (the driver's ptxas then spills six values before the wait).
    // Other products keep ptxas's choice (which spills nothing there).
    // `QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS=N` asks the conv product for N instead (0: none).
    let min_blocks = match super::knobs::single("QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS").filter(|_| conv.is_some()) {
        Some(blocks) => Some(blocks).filter(|&b| b > 0),
        None if conv.is_some() || c.stream.is_some() => c.blocks_per_sm(s.n),
        None => None,
    };
    let bounds = match min_blocks {
        Some(blocks) => format!("{threads}, {blocks}"),
        None => threads.to_string(),
    };
    let conv = match (conv, norm) {
        (Some(e), _) => format!(", {}, {}, {}, {}", e.first_column, e.channels, e.taps, e.silu),
        (None, Some(_)) => ", 0, 0, 1, false".to_string(),
        (None, None) => String::new(),
    };
    let (norm_params, norm_args) = match norm {
        Some(n) => (format!(", {}, {}, {}", n.row_threads, n.weight, n.per_column), format!(", norm, {}", lit(n.eps))),
        None => (String::new(), String::new()),
    };
    // The kernel's BULK: false (the ring), true (one tile per warp), or 2 (tiles per warp).
    let bulk_arg = match (c.bulk.is_some(), c.tw) {
        (false, _) => "false".to_string(),
        (true, 1) => "true".to_string(),
        (true, tw) => tw.to_string(),
    };
    if let Some(stream) = c.stream {
        return format!(
            "extern \"C\" __global__ void __launch_bounds__({bounds}) ENTRY({PRODUCT_PARAMS}) {{\n    quamba::gemv_stream<{}, {}, {}, {}, {}, {}, {}{conv}>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M, conv);\n}}\n",
            s.kind, s.k, s.n, s.group, c.wk, stream.tps, stream.stages
        );
    }
    format!(
        "extern \"C\" __global__ void __launch_bounds__({bounds}) ENTRY({PRODUCT_PARAMS}) {{\n    quamba::gemv<{}, {}, {}, {}, {}, {}, {}, {}{conv}{norm_params}>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M, conv{norm_args});\n}}\n",
        s.kind, s.k, s.n, s.group, c.wn, c.wk, c.depth, bulk_arg
    )
}

/// How many rows of activations a decode product stages in shared memory (`quamba::stage_a`):
/// products with f32 activations (kinds 0 and 1: FP16 and W4A16) stage as many f16 rows as fit
/// in 16 KiB (`padded_k` wide plus 16 bytes), at most one tile; a call with more rows reads its
/// activations from global memory. Products with int8 activations stage none: on an H200
/// (16-layer 2.7B/2.8B shapes, side by side, bench/RESULTS.md) staging made FP16 decode 17-18 %
/// faster but W4A8 decode 28-34 % slower. `QUAMBA_CUDA_STAGE_A=0` stages none, `=1` stages
/// every kind (to measure both side by side).
pub fn stage_rows(kind: u8, padded_k: usize) -> usize {
    let all = match std::env::var("QUAMBA_CUDA_STAGE_A").ok().as_deref() {
        Some("0") => return 0,
        Some("1") => true,
        _ => false,
    };
    if kind >= 2 && !all {
        return 0;
    }
    let row_bytes = padded_k * if kind >= 2 { 1 } else { 2 };
    (16384 / (row_bytes + 16)).min(16)
}
