//! The executor: device memory, launches, CUDA-graph decode.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use ir::VerifiedGraph;
use kernels::cuda::codegen::ARGMAX_THREADS;
use kernels::cuda::{pack, Arg, CudaPlan, Grid, Kernel, WeightUpload, SMALL_ROWS};

use super::compile::{arch_name, cached_ptx};
use super::CudaError;
use crate::{Logits, Weights};

/// Shared memory per block (static and dynamic) a kernel may take without opting in.
const DEFAULT_SHARED: u32 = 48 * 1024;

/// `quamba::Opnd` as the kernels see it (same field order, C layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct OperandRepr {
    p: u64,
    stride: i32,
    scale: u64,
    scale_vec: i32,
}

// SAFETY: a plain C struct of integers matching `quamba::Opnd` field for field (pointers as u64,
// the same natural alignment and padding under repr(C)), passed by value as a kernel parameter.
unsafe impl DeviceRepr for OperandRepr {}

/// `quamba::ConvStep` as the kernels see it (same fields, C layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct ConvStepRepr {
    weight: u64,
    bias: u64,
    state: u64,
    out: u64,
    scale: u64,
    scale_vec: i32,
    q_out: u64,
    q_scale: u64,
    q_vec: i32,
    q_stride: i32,
}

// SAFETY: a plain C struct of integers matching `quamba::ConvStep` field for field (five pointers
// as u64, an int, two pointers, two ints: the same offsets and padding under repr(C) as the C
// struct's natural alignment gives), passed by value.
unsafe impl DeviceRepr for ConvStepRepr {}

/// `quamba::RowNorm` as the kernels see it (same fields, C layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RowNormRepr {
    x: OperandRepr,
    weight: u64,
    q_scale: u64,
    q_vec: i32,
}

// SAFETY: a plain C struct of integers matching `quamba::RowNorm` field for field (an operand
// struct, two pointers as u64, an int: the same offsets and padding under repr(C) as the C
// struct's natural alignment gives), passed by value.
unsafe impl DeviceRepr for RowNormRepr {}

/// What [`CudaExecutor::run_with`] calls after queueing each launch: executor, graph value,
/// kernel name, blocks.
type AfterLaunch<'a> = dyn FnMut(&CudaExecutor, &str, &str, usize) -> Result<(), CudaError> + 'a;

/// A captured decode step and the launches it replays (graph value, kernel, blocks), which the
/// timeline of `trace_decode` assigns its events to.
struct CapturedStep {
    graph: CudaGraph,
    launches: Vec<(String, String, usize)>,
}

/// A resolved kernel argument.
enum ArgValue {
    Ptr(u64),
    I32(i32),
    F32(f32),
    Operand(OperandRepr),
    ConvStep(ConvStepRepr),
    RowNorm(RowNormRepr),
}

/// Device memory held by an executor, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Weights in their kernel layouts.
    pub weights: usize,
    /// Activation slots (for the largest call) and the token buffers.
    pub activations: usize,
    /// Recurrent states for the largest batch.
    pub states: usize,
}

/// Runs a CUDA plan on one GPU. Holds the recurrent state of up to `max_batch` sequences.
pub struct CudaExecutor {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: HashMap<String, CudaFunction>,
    plan: CudaPlan,
    /// Owns the weight allocations that `weight_ptrs` point into.
    weight_allocs: Vec<Option<CudaSlice<u8>>>,
    slots: Vec<CudaSlice<u8>>,
    states: Vec<CudaSlice<u8>>,
    tokens: CudaSlice<i64>,
    next_tokens: CudaSlice<i64>,
    history: CudaSlice<i64>,
    step: CudaSlice<i32>,
    max_batch: usize,
    max_rows: usize,
    max_steps: usize,
    /// Tokens in the device history since the last prefill (bounds the history writes).
    recorded: usize,
    table_rows: usize,
    /// The decode step of each batch size, captured on first use.
    graphs: HashMap<usize, CapturedStep>,
    /// Events the kernels' timeline holds, where the source was built with it
    /// (`super::trace::traced_source`).
    trace_events: Option<usize>,
    memory: MemoryReport,
    /// Device addresses of the slots, weights (0: not uploaded) and states, fixed for the
    /// executor's life: resolved once, not per call.
    slot_ptrs: Vec<u64>,
    weight_ptrs: Vec<u64>,
    state_ptrs: Vec<u64>,
    /// Launch with programmatic dependent launch (sm_90 and later; see `quamba::pdl_enter`).
    dependent_launch: bool,
    /// The shared-memory carveout every kernel asks for, in percent (None: the driver's choice).
    carveout: Option<i32>,
    /// The GPU's SMs, which size the grids of kernels that stay resident (`Grid::Resident`).
    sms: usize,
    /// The GPU's L2 cache in bytes (caps the weight tails of `Arg::WeightTail`).
    l2_bytes: usize,
    /// A profiling aid, read once at load: QUAMBA_CUDA_SKIP=rows,gemv_12 leaves out the launches
    /// that would run those kernels or kernel families (see `skipped`; a launch with a prefill
    /// follow-up keeps or drops both), so that a step's time with and without them shows their
    /// in-graph cost (`bench/gpu_ablate.sh`). Results are wrong then.
    skip: Vec<String>,
}

impl CudaExecutor {
    /// Uploads `weights` for `plan` (built from `graph`) on GPU 0, compiling the plan's source
    /// unless `ptx` — `(arch, source hash, PTX)` compiled ahead of time — was compiled from this
    /// very source for an architecture this GPU runs (its own, or an older one: PTX is JIT-compiled
    /// forward). Calls may then have up to `max_batch`
    /// sequences and `max_rows` rows (sequences × positions); greedy decoding up to `max_steps`.
    pub fn new(graph: &VerifiedGraph, weights: &Weights, plan: CudaPlan, ptx: Option<(&str, u64, &str)>, max_batch: usize, max_rows: usize, max_steps: usize) -> Result<CudaExecutor, CudaError> {
        weights.check_against(graph).map_err(|e| CudaError::Input(e.to_string()))?;
        // The kernels index int8 states' scale tables by the group maps without bounds checks.
        crate::cpu::state_quant::check(graph, weights).map_err(|e| CudaError::Input(e.to_string()))?;
        // SAFETY: only tries to open the driver library by its candidate names and drops it;
        // cudarc would panic on first use where it is missing.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::Device("the NVIDIA driver library (libcuda.so) was not found".into()));
        }
        let ctx = CudaContext::new(0).map_err(|e| CudaError::Device(format!("no usable CUDA GPU 0 ({e:?})")))?;
        // SAFETY: this executor orders all work on its one stream itself and never shares buffers
        // across streams, so cudarc's per-buffer event tracking is not needed; it would also put
        // event records into captured CUDA graphs.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let (major, minor) = ctx.compute_capability()?;
        // Programmatic dependent launch needs sm_90 and, inside captured graphs, a CUDA 12.3
        // driver; QUAMBA_CUDA_PDL=0 turns it off, to measure what it brings.
        let mut driver_version: std::ffi::c_int = 0;
        // SAFETY: writes one int through a valid pointer; the driver library is loaded (checked above).
        let driver_ok = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) }.result().is_ok() && driver_version >= 12030;
        let dependent_launch = major >= 9 && driver_ok && std::env::var("QUAMBA_CUDA_PDL").map_or(true, |v| v != "0");
        let arch = arch_name(major, minor);
        let own = super::compile::source_hash(&plan.source);
        let ahead = match ptx {
            Some((ahead_arch, hash, p)) if hash == own && ahead_arch <= arch && ahead_arch.len() == arch.len() => Some(p.to_string()),
            _ => None,
        };
        let loaded_ahead = match ahead.map(|p| ctx.load_module(cudarc::nvrtc::Ptx::from_src(p))) {
            Some(Ok(module)) => Some(module),
            // The artifact's PTX came from a newer NVRTC than this driver reads (compiled on a
            // machine with a newer CUDA toolkit): compile the source with the NVRTC here instead.
            Some(Err(e)) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => None,
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let module = match loaded_ahead {
            Some(module) => module,
            None => ctx.load_module(cudarc::nvrtc::Ptx::from_src(cached_ptx(&plan.source, arch)?))?,
        };
        // Each distinct kernel once, with the threads and dynamic shared memory it launches with.
        let mut functions = HashMap::new();
        let mut shapes = vec![("quamba_argmax".to_string(), ARGMAX_THREADS, 0), ("quamba_advance_step".to_string(), 1, 0)];
        for k in plan.launches.iter().flat_map(|l| l.kernels()) {
            if !shapes.iter().any(|(name, ..)| *name == k.name) {
                shapes.push((k.name.clone(), k.block, k.shared_bytes));
            }
        }
        // Each kernel's static shared memory, beside the dynamic part it launches with.
        let mut static_shared = HashMap::new();
        for (name, _, shared) in &shapes {
            let function = module.load_function(name)?;
            // Past 48 KB of shared memory per block, static and dynamic together, a kernel has to
            // opt in to its dynamic part (a streaming one-row product's ring; the plan keeps the
            // total within what every target GPU allows).
            let fixed = function.get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?.max(0) as u32;
            if *shared > 0 && fixed + *shared > DEFAULT_SHARED {
                function
                    .set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, *shared as i32)
                    .map_err(|e| CudaError::Device(format!("kernel {name} needs {shared} bytes of dynamic shared memory per block beside {fixed} static, more than this GPU gives ({e:?})")))?;
            }
            static_shared.insert(name.clone(), fixed);
            functions.insert(name.clone(), function);
        }
        let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        let l2_bytes = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?.max(0) as usize;
        let trace_events = super::trace::capacity(&plan.source);
        // A one-row product (a launch's decode kernel that has a batched one beside it) always
        // runs the same number of blocks.
        let one_row_blocks = |name: &str| {
            plan.launches.iter().filter(|l| l.batched.is_some() && l.kernel.name == name).find_map(|l| match l.kernel.grid {
                Grid::Gemm { n_blocks, rows_per_block: 1 } => Some(n_blocks as u32),
                Grid::Resident { units, per_sm } => Some(Grid::resident_blocks(units, per_sm, sms) as u32),
                _ => None,
            })
        };
        let launched: Vec<_> = shapes
            .iter()
            .map(|(name, block, shared)| super::carveout::Launched {
                function: &functions[name],
                block: *block,
                static_shared: static_shared[name],
                dynamic_shared: *shared,
                blocks: one_row_blocks(name),
            })
            .collect();
        let carveout = super::carveout::apply_uniform(&ctx, &launched)?;
        drop(launched);

        let mut memory = MemoryReport::default();
        let mut device_weights = Vec::with_capacity(plan.weights.len());
        for (i, upload) in plan.weights.iter().enumerate() {
            let data = || weights.get(ir::WeightId::new(i)).floats();
            let bytes: Vec<u8> = match upload {
                WeightUpload::Unused => {
                    device_weights.push(None);
                    continue;
                }
                WeightUpload::F32 { len } => {
                    let mut v: Vec<u8> = data().iter().flat_map(|x| x.to_le_bytes()).collect();
                    v.resize(len * 4, 0);
                    v
                }
                WeightUpload::StateScales { groups, columns, lanes } => kernels::cuda::state_table::layout(&data(), *groups, *columns, *lanes).iter().flat_map(|x| x.to_le_bytes()).collect(),
                WeightUpload::I32 { len } => {
                    let mut v: Vec<u8> = data().iter().flat_map(|x| (*x as i32).to_le_bytes()).collect();
                    v.resize(len * 4, 0);
                    v
                }
                WeightUpload::Packed { kind, n, k } => pack::pack(*kind, &data(), *n, *k),
            };
            memory.weights += bytes.len();
            device_weights.push(Some(stream.clone_htod(&bytes)?));
        }
        // Valid token ids: the rows of the tables embeddings read (none: every id is refused).
        let table_rows = embedding_rows(graph).unwrap_or(0);

        const SLACK: usize = 4096; // products read whole k-chunks past a row's last column
        let mut slots = Vec::with_capacity(plan.slots.len());
        for s in &plan.slots {
            let bytes = max_rows * s.row_bytes + SLACK;
            memory.activations += bytes;
            slots.push(stream.alloc_zeros::<u8>(bytes)?);
        }
        let mut states = Vec::with_capacity(plan.states.len());
        for bytes_per_sequence in &plan.states {
            memory.states += bytes_per_sequence * max_batch;
            states.push(stream.alloc_zeros::<u8>(bytes_per_sequence * max_batch)?);
        }
        let tokens = stream.alloc_zeros::<i64>(max_rows)?;
        let next_tokens = stream.alloc_zeros::<i64>(max_batch)?;
        let history = stream.alloc_zeros::<i64>(max_batch * max_steps.max(1))?;
        let step = stream.alloc_zeros::<i32>(1)?;
        memory.activations += (max_rows + max_batch * (max_steps.max(1) + 1)) * 8;
        stream.synchronize()?;
        let slot_ptrs = slots.iter().map(|x| x.device_ptr(&stream).0).collect();
        let weight_ptrs = device_weights.iter().map(|w| w.as_ref().map_or(0, |w| w.device_ptr(&stream).0)).collect();
        let state_ptrs = states.iter().map(|x| x.device_ptr(&stream).0).collect();
        Ok(CudaExecutor {
            ctx,
            stream,
            module,
            functions,
            plan,
            weight_allocs: device_weights,
            slots,
            states,
            tokens,
            next_tokens,
            history,
            step,
            max_batch,
            max_rows,
            max_steps,
            recorded: 0,
            table_rows,
            graphs: HashMap::new(),
            trace_events,
            memory,
            slot_ptrs,
            weight_ptrs,
            state_ptrs,
            dependent_launch,
            carveout,
            sms,
            l2_bytes,
            skip: std::env::var("QUAMBA_CUDA_SKIP").map(|v| v.split(',').filter(|k| !k.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
        })
    }

    /// The GPU's name.
    pub fn device_name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "unknown GPU".into())
    }

    /// The shared-memory carveout every kernel asks for, in percent of the SM's shared memory
    /// (None: left to the driver per kernel; see `carveout.rs`).
    pub fn shared_carveout(&self) -> Option<i32> {
        self.carveout
    }

    /// Device memory this executor holds.
    pub fn memory(&self) -> MemoryReport {
        self.memory
    }

    /// Rows of the logits (the padded vocabulary).
    pub fn vocab(&self) -> usize {
        self.plan.vocab
    }

    /// Forgets every sequence: zero conv and SSM states.
    pub fn reset(&mut self) -> Result<(), CudaError> {
        for s in &mut self.states {
            self.stream.memset_zeros(s)?;
        }
        Ok(())
    }

    /// Runs `tokens` (`[batch, seq]`) from the current state; returns the logits of every
    /// position, or of the last position of each sequence when `last_only`.
    pub fn forward(&mut self, tokens: &[i64], batch: usize, last_only: bool) -> Result<Logits, CudaError> {
        let seq = self.check_call(tokens, batch)?;
        self.stream.memcpy_htod(tokens, &mut self.tokens)?;
        let tokens_ptr = self.ptr_tokens();
        self.run(batch, seq, last_only, tokens_ptr)?;
        let out_rows = if last_only { batch } else { batch * seq };
        let vocab = self.plan.vocab;
        let mut data = vec![0.0f32; out_rows * vocab];
        let slot = &self.slots[self.plan.buffers[self.plan.logits].slot];
        let view = slot.slice(0..out_rows * vocab * 4);
        let mut bytes = vec![0u8; out_rows * vocab * 4];
        self.stream.memcpy_dtoh(&view, &mut bytes)?;
        self.stream.synchronize()?;
        for (d, b) in data.iter_mut().zip(bytes.chunks_exact(4)) {
            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(Logits { batch, seq: if last_only { 1 } else { seq }, vocab, data })
    }

    /// Greedy generation on the device: prefill `prompt` (`[batch, seq]`), then `steps` decode
    /// steps replayed from a captured CUDA graph. Returns the generated tokens `[steps+1, batch]`
    /// (the first from the prefill's logits). The state is reset first.
    pub fn generate_greedy(&mut self, prompt: &[i64], batch: usize, steps: usize) -> Result<Vec<i64>, CudaError> {
        if steps + 1 > self.max_steps {
            return Err(CudaError::Input(format!("{} tokens asked, this executor records at most {}", steps + 1, self.max_steps)));
        }
        self.reset()?;
        self.prefill_to_device(prompt, batch)?;
        self.decode_steps(batch, steps)?;
        let mut out = vec![0i64; (steps + 1) * batch];
        let view = self.history.slice(0..(steps + 1) * batch);
        self.stream.memcpy_dtoh(&view, &mut out)?;
        self.stream.synchronize()?;
        Ok(out)
    }

    /// Prefills `prompt` and puts each sequence's greedy next token on the device (step 0 of
    /// the history). Does not synchronize.
    pub fn prefill_to_device(&mut self, prompt: &[i64], batch: usize) -> Result<(), CudaError> {
        let seq = self.check_call(prompt, batch)?;
        self.stream.memcpy_htod(prompt, &mut self.tokens)?;
        self.stream.memset_zeros(&mut self.step)?;
        let tokens_ptr = self.ptr_tokens();
        self.run(batch, seq, true, tokens_ptr)?;
        self.argmax(batch)?;
        self.recorded = 1;
        Ok(())
    }

    /// `steps` greedy decode steps of `batch` sequences from the device's next tokens, through
    /// this batch size's captured graph (captured on first use). Does not synchronize.
    pub fn decode_steps(&mut self, batch: usize, steps: usize) -> Result<(), CudaError> {
        if batch == 0 || batch > self.max_batch {
            return Err(CudaError::Input(format!("a decode step of {batch} sequences: this executor holds 1 to {}", self.max_batch)));
        }
        if self.recorded == 0 || self.recorded + steps > self.max_steps {
            return Err(CudaError::Input(format!(
                "{steps} more decode steps after {} recorded tokens exceed this executor's {} (prefill first; reset the history with another prefill)",
                self.recorded, self.max_steps
            )));
        }
        self.recorded += steps;
        if !self.graphs.contains_key(&batch) {
            // Capture records launches without running them: the state is untouched.
            self.stream.begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
            let next = self.ptr(&self.next_tokens);
            let mut issued = Vec::new();
            let captured = self.run_with(batch, 1, true, next, &mut |_, value, kernel, blocks| {
                issued.push((value.to_string(), kernel.to_string(), blocks));
                Ok(())
            });
            issued.push(("argmax".to_string(), "quamba_argmax".to_string(), batch));
            let captured = captured.and_then(|_| self.argmax(batch));
            let graph = self.stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))?;
            captured?;
            let graph = graph.ok_or_else(|| CudaError::Device("stream capture produced no graph".into()))?;
            self.graphs.insert(batch, CapturedStep { graph, launches: issued });
        }
        let graph = &self.graphs[&batch].graph;
        for _ in 0..steps {
            graph.launch()?;
        }
        Ok(())
    }

    /// The device-side timeline of `steps` decode steps of `batch` sequences from the device's
    /// next tokens (prefill first), one list of launch spans per step; the kernels must have been
    /// built with the timeline hooks ([`super::traced_source`]). Like [`Self::decode_steps`], it
    /// advances the state.
    pub fn trace_decode(&mut self, batch: usize, steps: usize) -> Result<Vec<Vec<super::trace::LaunchSpan>>, CudaError> {
        let held = self.trace_events.ok_or_else(|| CudaError::Input("these kernels were built without the timeline hooks (runtime::cuda::traced_source)".into()))?;
        // Captures the graph (which records nothing until replayed); the counter is reset in stream
        // order, after the traced prefill's own events.
        self.decode_steps(batch, 0)?;
        let module = self.module.clone();
        self.stream.memset_zeros(&mut module.get_global("quamba_trace_count", &self.stream)?)?;
        self.decode_steps(batch, steps)?;
        self.stream.synchronize()?;
        let count = self.stream.clone_dtoh(&module.get_global("quamba_trace_count", &self.stream)?)?;
        let recorded = u32::from_le_bytes(count[..4].try_into().map_err(|_| CudaError::Device("the trace counter is not 4 bytes".into()))?) as usize;
        let events = self.stream.clone_dtoh(&module.get_global("quamba_trace_events", &self.stream)?)?;
        let events = super::trace::BlockEvent::parse(&events[..recorded.min(held) * super::trace::BlockEvent::BYTES]);
        let entries: HashMap<String, u32> = kernels::cuda::codegen::entry_names(self.plan.generated_source()).into_iter().enumerate().map(|(i, n)| (n, i as u32)).collect();
        // Every launched kernel is a generated entry point that records: one the names miss
        // would shift every later launch onto another kernel's events.
        let issued: Vec<super::trace::IssuedLaunch> = self.graphs[&batch]
            .launches
            .iter()
            .map(|(value, kernel, blocks)| match entries.get(kernel) {
                Some(entry) => Ok(super::trace::IssuedLaunch { value: value.clone(), kernel: kernel.clone(), entry: Some(*entry), blocks: *blocks }),
                None => Err(CudaError::Device(format!("kernel {kernel} (launched for {value}) is not among the generated entry points the trace knows"))),
            })
            .collect::<Result<_, _>>()?;
        super::trace::assign(&events, recorded, &issued, steps).map_err(|e| CudaError::Input(e.to_string()))
    }

    /// Device-to-device copy bandwidth in bytes per second, counting bytes read and written
    /// (the memory floor of a step that streams the weights once is weight bytes / this).
    pub fn copy_bandwidth(&self) -> Result<f64, CudaError> {
        const BYTES: usize = 1 << 30;
        let src = self.stream.alloc_zeros::<u8>(BYTES)?;
        let mut dst = self.stream.alloc_zeros::<u8>(BYTES)?;
        self.stream.memcpy_dtod(&src, &mut dst)?; // warm-up
        let start = self.record_event()?;
        const REPEATS: usize = 10;
        for _ in 0..REPEATS {
            self.stream.memcpy_dtod(&src, &mut dst)?;
        }
        let end = self.record_event()?;
        end.synchronize()?;
        let seconds = start.elapsed_ms(&end)? as f64 / 1e3;
        Ok((2 * BYTES * REPEATS) as f64 / seconds)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// A timing event recorded now on the executor's stream.
    pub fn record_event(&self) -> Result<cudarc::driver::CudaEvent, CudaError> {
        let e = self.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        e.record(&self.stream)?;
        Ok(e)
    }

    fn check_call(&self, tokens: &[i64], batch: usize) -> Result<usize, CudaError> {
        if batch == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(batch) {
            return Err(CudaError::Input(format!("{} tokens cannot be split into {batch} equal non-empty sequences", tokens.len())));
        }
        if batch > self.max_batch || tokens.len() > self.max_rows {
            return Err(CudaError::Input(format!(
                "a call of {batch} sequences and {} rows exceeds this executor's limits ({} sequences, {} rows)",
                tokens.len(),
                self.max_batch,
                self.max_rows
            )));
        }
        if let Some(t) = tokens.iter().find(|t| **t < 0 || **t as usize >= self.table_rows) {
            return Err(CudaError::Input(format!("token id {t} is outside the vocabulary (0..{})", self.table_rows)));
        }
        Ok(tokens.len() / batch)
    }

    fn ptr<T>(&self, slice: &CudaSlice<T>) -> u64 {
        slice.device_ptr(&self.stream).0
    }

    fn ptr_tokens(&self) -> u64 {
        self.ptr(&self.tokens)
    }

    fn argmax(&mut self, batch: usize) -> Result<(), CudaError> {
        let logits = self.buffer_ptr(self.plan.logits);
        let (next, history, step) = (self.ptr(&self.next_tokens), self.ptr(&self.history), self.ptr(&self.step));
        let args = [ArgValue::Ptr(logits), ArgValue::I32(1), ArgValue::I32(0), ArgValue::Ptr(next), ArgValue::Ptr(history), ArgValue::Ptr(step), ArgValue::I32(batch as i32)];
        let cfg = LaunchConfig { grid_dim: (batch as u32, 1, 1), block_dim: (ARGMAX_THREADS, 1, 1), shared_mem_bytes: 0 };
        self.launch("quamba_argmax", cfg, &args)?;
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        self.launch("quamba_advance_step", cfg, &[ArgValue::Ptr(step)])
    }

    /// Times every launch of one `[batch, seq]` call separately (events between launches, no
    /// graph), in plan order. Advances the state like a call.
    pub fn profile(&mut self, tokens: &[i64], batch: usize) -> Result<Vec<LaunchTime>, CudaError> {
        let seq = self.check_call(tokens, batch)?;
        self.stream.memcpy_htod(tokens, &mut self.tokens)?;
        let tokens_ptr = self.ptr_tokens();
        let mut events = vec![self.record_event()?];
        let mut names = Vec::new();
        self.run_with(batch, seq, true, tokens_ptr, &mut |exec, launch, kernel, _| {
            events.push(exec.record_event()?);
            names.push((launch.to_string(), kernel.to_string()));
            Ok(())
        })?;
        self.stream.synchronize()?;
        // Bytes of the weights a product reads in full (packed weights, scales, bias); other
        // kernels (an embedding reads a few rows of its table) count none.
        let weight_bytes: HashMap<&str, usize> = self
            .plan
            .launches
            .iter()
            .map(|l| (l.value.as_str(), l.args.iter().map(|a| if let Arg::Weight(w) = a { self.weight_allocs[*w].as_ref().map_or(0, |d| d.len()) } else { 0 }).sum()))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for (i, (value, kernel)) in names.into_iter().enumerate() {
            let ms = events[i].elapsed_ms(&events[i + 1])? as f64;
            let product = kernel.starts_with("gemm_") || kernel.starts_with("gemv_");
            let weight_bytes = if product { weight_bytes.get(value.as_str()).copied().unwrap_or(0) } else { 0 };
            out.push(LaunchTime { value, kernel, ms, weight_bytes });
        }
        Ok(out)
    }

    /// Queues every launch of the plan for a `[batch, seq]` call.
    fn run(&self, batch: usize, seq: usize, last_only: bool, tokens: u64) -> Result<(), CudaError> {
        self.run_with(batch, seq, last_only, tokens, &mut |_, _, _, _| Ok(()))
    }

    /// [`Self::run`], calling `after` (executor, value, kernel name, blocks) after queueing each
    /// launch.
    fn run_with(&self, batch: usize, seq: usize, last_only: bool, tokens: u64, after: &mut AfterLaunch<'_>) -> Result<(), CudaError> {
        let rows = batch * seq;
        for launch in &self.plan.launches {
            // On the last position only, the head reads row seq-1 of each sequence: its input
            // pointer moves to that row and its row stride spans a whole sequence.
            let head = launch.head && last_only;
            let call_rows = if head { batch } else { rows };
            let large = call_rows > SMALL_ROWS;
            let kernel: &Kernel = launch.kernel_for(call_rows);
            if self.skip.iter().any(|k| skipped(&kernel.name, k)) || (launch.skip_one_row && call_rows == 1) {
                continue;
            }
            let values = self.resolve(&launch.args, head, seq, batch, call_rows, tokens);
            let cfg = self.config(kernel, call_rows, batch, seq);
            self.launch(&kernel.name, cfg, &values).map_err(|e| CudaError::Device(format!("launching {} for {}: {e}", kernel.name, launch.value)))?;
            after(self, &launch.value, &kernel.name, (cfg.grid_dim.0 * cfg.grid_dim.1) as usize)?;
            if let (true, Some((then, args))) = (large, &launch.then_large) {
                let values = self.resolve(args, false, seq, batch, call_rows, tokens);
                let cfg = self.config(then, call_rows, batch, seq);
                self.launch(&then.name, cfg, &values).map_err(|e| CudaError::Device(format!("launching {} for {}: {e}", then.name, launch.value)))?;
                after(self, &launch.value, &then.name, (cfg.grid_dim.0 * cfg.grid_dim.1) as usize)?;
            }
        }
        Ok(())
    }

    fn config(&self, kernel: &Kernel, rows: usize, batch: usize, seq: usize) -> LaunchConfig {
        let block = kernel.block as usize;
        let grid = match &kernel.grid {
            Grid::Rows => (rows, 1),
            Grid::RowSegments { segments } => (rows * segments, 1),
            Grid::Sequences => (batch, 1),
            Grid::Elements { width } => ((rows * width).div_ceil(block), 1),
            Grid::Chunks { per_position, chunk } => ((batch * per_position * seq.div_ceil(*chunk)).div_ceil(block), 1),
            Grid::PerSequence { per_sequence } => ((batch * per_sequence).div_ceil(block), 1),
            Grid::Gemm { n_blocks, rows_per_block } => (*n_blocks, rows.div_ceil(*rows_per_block)),
            Grid::Resident { units, per_sm } => (Grid::resident_blocks(*units, *per_sm, self.sms), rows),
        };
        LaunchConfig { grid_dim: (grid.0 as u32, grid.1 as u32, 1), block_dim: (kernel.block, 1, 1), shared_mem_bytes: kernel.shared_bytes }
    }

    /// The device address of a buffer (its slot's).
    fn buffer_ptr(&self, buffer: usize) -> u64 {
        self.slot_ptrs[self.plan.buffers[buffer].slot]
    }

    /// Device values of a launch's arguments.
    fn resolve(&self, args: &[Arg], head: bool, seq: usize, batch: usize, rows: usize, tokens: u64) -> Vec<ArgValue> {
        let (weight_ptrs, state_ptrs) = (&self.weight_ptrs, &self.state_ptrs);
        args.iter()
            .map(|arg| match arg {
                Arg::Stride(s) => ArgValue::I32(if head { s * seq as i32 } else { *s }),
                Arg::Buffer { buffer, offset } => ArgValue::Ptr(self.buffer_ptr(*buffer) + *offset as u64),
                // On the last position only, the head reads row seq-1 of each sequence.
                Arg::RowsInput { buffer, offset, row_bytes } => {
                    let last_row = if head { (seq - 1) * row_bytes } else { 0 };
                    ArgValue::Ptr(self.buffer_ptr(*buffer) + (*offset + last_row) as u64)
                }
                Arg::Weight(w) => ArgValue::Ptr(weight_ptrs[*w]),
                Arg::State(s) => ArgValue::Ptr(state_ptrs[*s]),
                Arg::Null => ArgValue::Ptr(0),
                Arg::Tokens => ArgValue::Ptr(tokens),
                Arg::NextTokens => ArgValue::Ptr(self.ptr(&self.next_tokens)),
                Arg::History => ArgValue::Ptr(self.ptr(&self.history)),
                Arg::Step => ArgValue::Ptr(self.ptr(&self.step)),
                Arg::I32(v) => ArgValue::I32(*v),
                Arg::F32(v) => ArgValue::F32(*v),
                Arg::Rows => ArgValue::I32(rows as i32),
                Arg::Batch => ArgValue::I32(batch as i32),
                Arg::Seq => ArgValue::I32(seq as i32),
                Arg::Operand(o) => ArgValue::Operand(self.operand(o)),
                Arg::ConvStep(step) => ArgValue::ConvStep(step.as_ref().map_or(ConvStepRepr::default(), |c| ConvStepRepr {
                    weight: weight_ptrs[c.weight],
                    bias: c.bias.map_or(0, |b| weight_ptrs[b]),
                    state: state_ptrs[c.state],
                    out: self.buffer_ptr(c.out),
                    scale: c.scale.map_or(0, |w| weight_ptrs[w]),
                    scale_vec: c.scale_per_column as i32,
                    q_out: c.quantized.as_ref().map_or(0, |q| self.buffer_ptr(q.buffer)),
                    q_scale: c.quantized.as_ref().map_or(0, |q| weight_ptrs[q.scale]),
                    q_vec: c.quantized.as_ref().is_some_and(|q| q.per_column) as i32,
                    q_stride: c.quantized.as_ref().map_or(0, |q| q.stride as i32),
                })),
                Arg::WeightTail(tail) => ArgValue::Ptr(tail.map_or(0, |t| weight_ptrs[t.weight] + self.weight_tail(&t).0 as u64)),
                Arg::WeightTailBytes(tail) => ArgValue::I32(tail.map_or(0, |t| self.weight_tail(&t).1 as i32)),
                Arg::RowNorm(norm) => ArgValue::RowNorm(norm.as_ref().map_or(RowNormRepr::default(), |n| RowNormRepr {
                    x: self.operand(&n.x),
                    weight: n.weight.map_or(0, |w| weight_ptrs[w]),
                    q_scale: n.scale.map_or(0, |w| weight_ptrs[w]),
                    q_vec: n.per_column as i32,
                })),
            })
            .collect()
    }

    /// A weight tail's byte offset and length in its upload (nothing where the weight has none),
    /// at most a quarter of this GPU's L2, so that the lines pulled in for a later launch leave
    /// the rest of a step's working set there, and within the kernel's int count.
    fn weight_tail(&self, tail: &kernels::cuda::WeightTail) -> (usize, usize) {
        let len = self.weight_allocs[tail.weight].as_ref().map_or(0, |d| d.len());
        tail.range(len, (self.l2_bytes / 4).min(i32::MAX as usize))
    }

    /// The device view of an f32 operand.
    fn operand(&self, o: &kernels::cuda::Operand) -> OperandRepr {
        OperandRepr {
            p: if o.stride == 0 { 0 } else { self.buffer_ptr(o.buffer) + (o.col * 4) as u64 },
            stride: o.stride as i32,
            scale: o.scale.map_or(0, |w| self.weight_ptrs[w]),
            scale_vec: o.scale_per_column as i32,
        }
    }

    fn launch(&self, name: &str, cfg: LaunchConfig, values: &[ArgValue]) -> Result<(), CudaError> {
        let f = self.functions.get(name).ok_or_else(|| CudaError::Device(format!("kernel {name} is not in the module")))?;
        if self.dependent_launch {
            return self.launch_dependent(f, cfg, values);
        }
        let mut builder = self.stream.launch_builder(f);
        for v in values {
            match v {
                ArgValue::Ptr(p) => builder.arg(p),
                ArgValue::I32(x) => builder.arg(x),
                ArgValue::F32(x) => builder.arg(x),
                ArgValue::Operand(o) => builder.arg(o),
                ArgValue::ConvStep(c) => builder.arg(c),
                ArgValue::RowNorm(n) => builder.arg(n),
            };
        }
        // SAFETY: the argument list follows the entry point's parameter list as generated by
        // kernels::cuda::codegen from the same plan (pointers as u64, ints as i32, floats as f32,
        // operands, conv steps and row norms as their C-layout structs). Every pointer is a live allocation of this executor,
        // sized for `max_rows`/`max_batch`, which `check_call` enforces, plus slack for reads
        // past a row's end; grids never exceed the rows of the call.
        unsafe { builder.launch(cfg) }?;
        Ok(())
    }

    /// [`Self::launch`] with the programmatic-stream-serialization attribute: the kernel may start
    /// while its predecessor runs, and waits for it inside (`quamba::pdl_enter`). cudarc's
    /// builder has no launch attributes, hence the driver call.
    fn launch_dependent(&self, f: &CudaFunction, cfg: LaunchConfig, values: &[ArgValue]) -> Result<(), CudaError> {
        use cudarc::driver::sys;
        let mut params: Vec<*mut std::ffi::c_void> = values
            .iter()
            .map(|v| match v {
                ArgValue::Ptr(p) => p as *const u64 as *mut std::ffi::c_void,
                ArgValue::I32(x) => x as *const i32 as *mut std::ffi::c_void,
                ArgValue::F32(x) => x as *const f32 as *mut std::ffi::c_void,
                ArgValue::Operand(o) => o as *const OperandRepr as *mut std::ffi::c_void,
                ArgValue::ConvStep(c) => c as *const ConvStepRepr as *mut std::ffi::c_void,
                ArgValue::RowNorm(n) => n as *const RowNormRepr as *mut std::ffi::c_void,
            })
            .collect();
        // SAFETY: an all-zero launch attribute is a valid C value (id 0, zeroed union); both
        // fields that matter are set right after.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        self.ctx.bind_to_thread()?;
        // SAFETY: `params` holds one pointer per kernel parameter, in the entry point's order, to
        // values of the parameter's C type (see `launch`); they and `attr` outlive the call, which
        // copies them. The function belongs to this executor's module, loaded in `self.ctx`
        // (bound above), and the stream is this context's. The kernels this plan generates all
        // begin with `quamba::pdl_enter` before touching activations or state, which is what
        // makes the early start sound.
        unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }.result()?;
        Ok(())
    }
}

/// One launch timed on its own by [`CudaExecutor::profile`].
#[derive(Clone, Debug)]
pub struct LaunchTime {
    /// The graph value it computes (IR text numbering).
    pub value: String,
    /// The kernel that ran.
    pub kernel: String,
    /// Milliseconds between the events around it.
    pub ms: f64,
    /// Bytes of the weights it reads in full: a product's packed weights, scales and bias (0 for
    /// other kernels).
    pub weight_bytes: usize,
}

/// Whether QUAMBA_CUDA_SKIP entry `pattern` leaves out kernel `name`: the name itself
/// (`gemv_12`, not `gemv_120`) or its family, the name without its number (`conv`: every
/// `conv_N`, not `conv_state_N`).
fn skipped(name: &str, pattern: &str) -> bool {
    name == pattern || name.rsplit_once('_').is_some_and(|(family, _)| family == pattern)
}

/// Rows of the tables embeddings read (the valid token ids).
fn embedding_rows(graph: &VerifiedGraph) -> Option<usize> {
    graph
        .values()
        .into_iter()
        .filter_map(|v| match graph.node(v).op {
            ir::Op::Embedding { table } | ir::Op::QEmbedding { table, .. } => Some(graph.weight(table).shape[0]),
            _ => None,
        })
        .min()
}

impl std::fmt::Debug for CudaExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutor").field("launches", &self.plan.launches.len()).field("memory", &self.memory).field("max_batch", &self.max_batch).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::skipped;

    #[test]
    fn skip_patterns_name_a_kernel_or_a_family() {
        assert!(skipped("gemv_12", "gemv"));
        assert!(skipped("gemv_12", "gemv_12"));
        assert!(!skipped("gemv_120", "gemv_12"), "a kernel's name is not a prefix of another's");
        assert!(!skipped("gemm_3", "gemv"));
        assert!(!skipped("rows_1", "row"), "a family is a whole name part");
        assert!(!skipped("conv_state_7", "conv"), "and the whole name but its number");
        assert!(skipped("conv_state_7", "conv_state"));
    }
}
