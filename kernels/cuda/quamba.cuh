// quamba CUDA kernel library.
//
// Device templates that the generator (kernels/src/cuda/codegen.rs) instantiates with a model's
// dimensions as compile-time constants, behind one `extern "C"` entry point per kernel of the plan.
// Self-contained on purpose: NVRTC compiles it with no CUDA headers, so halves are handled as raw
// 16-bit patterns through PTX conversions and the tensor cores through `mma.sync`.
//
// Numerics follow the CPU integer reference executor (runtime/src/cpu): quantization divides,
// rounds half to even and saturates to [-128, 127]; int8 x int8 products are summed exactly per
// weight group in int32 and scaled once per group.

typedef long long i64;
typedef unsigned int u32;
typedef signed char i8;
typedef unsigned short f16bits;

#define QDEV __device__ __forceinline__

// A device-side timeline of the step (`quambac cuda trace`), compiled in only where the source is
// built with QUAMBA_TRACE defined to the events it holds: every block of every generated entry
// point records when it began, when its dependency wait returned, when what it reads first had
// landed (a product's weights in shared memory, a row kernel's row, a scan's step inputs staged;
// 0 where not marked), when its sums were done (a product's dot products, a row kernel's
// reduction, a scan's state update and output; 0 where not marked) and when it ended
// (%globaltimer, ns), and which entry point it ran (its index in the generated source); the host
// assigns the events to the step's launches. Without QUAMBA_TRACE the hooks are empty and the
// kernels are the same instructions.
#ifdef QUAMBA_TRACE
struct QuambaTraceEvent {
    unsigned long long begin, waited, landed, summed, end;
    unsigned entry, block;
};
extern "C" {
__device__ QuambaTraceEvent quamba_trace_events[QUAMBA_TRACE];
__device__ unsigned quamba_trace_count;
}
QDEV unsigned long long quamba_global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
    return t;
}
// The block's begin and wait-return times, kept by thread 0, and its latest warp's landed and
// summed marks.
QDEV unsigned long long* quamba_trace_times() {
    __shared__ unsigned long long times[4];
    return times;
}
QDEV void quamba_trace_begin() {
    if (threadIdx.x == 0) {
        quamba_trace_times()[0] = quamba_global_ns();
        quamba_trace_times()[1] = 0;
        quamba_trace_times()[2] = 0;
        quamba_trace_times()[3] = 0;
    }
    __syncthreads();
}
// Called by every warp at mark `slot` (2: what it reads first has landed, after an instruction
// that uses it: a shared-memory store of a loaded value, a barrier wait; 3: its sums are done):
// the block keeps the latest warp's.
QDEV void quamba_trace_mark(int slot) {
    if ((threadIdx.x & 31) == 0) atomicMax(&quamba_trace_times()[slot], quamba_global_ns());
}
QDEV void quamba_trace_waited() {
    if (threadIdx.x == 0) quamba_trace_times()[1] = quamba_global_ns();
}
// Every thread of the block reaches the end of its entry point (the templates only return).
QDEV void quamba_trace_end(unsigned entry) {
    __syncthreads();
    if (threadIdx.x == 0) {
        // Read before the slot's atomic, whose round trip to L2 is the trace's, not the block's.
        const unsigned long long end = quamba_global_ns();
        const unsigned i = atomicAdd(&quamba_trace_count, 1u);
        if (i < QUAMBA_TRACE)
            quamba_trace_events[i] = {quamba_trace_times()[0], quamba_trace_times()[1], quamba_trace_times()[2], quamba_trace_times()[3], end, entry, blockIdx.x + blockIdx.y * gridDim.x};
    }
}
#define QUAMBA_TRACE_BEGIN quamba_trace_begin()
#define QUAMBA_TRACE_LANDED quamba_trace_mark(2)
#define QUAMBA_TRACE_SUMMED quamba_trace_mark(3)
#define QUAMBA_TRACE_END(entry) quamba_trace_end(entry)
#else
#define QUAMBA_TRACE_BEGIN
#define QUAMBA_TRACE_LANDED
#define QUAMBA_TRACE_SUMMED
#define QUAMBA_TRACE_END(entry)
#endif

namespace quamba {

// An f32 operand: a row-major view (a split is a column offset plus the parent's row stride),
// optionally fake-quantized on load (a quantize -> dequantize pair folded into its consumer).
struct Opnd {
    const float* p;
    int stride;
    const float* scale;  // null: no fake quantization
    int scale_vec;       // 1: one scale per column; 0: one per tensor
};

QDEV float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
QDEV float silu_f(float x) { return x / (1.f + expf(-x)); }
// 2^x by the hardware's approximation alone (relative error about 2^-22, results below 2^-126
// flushed to zero): a scan's decay exp(Δ·A) as 2^(Δ·A·log2 e) in two instructions, where expf
// took eight and exp2f four.
QDEV float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
QDEV i8 quantize_one(float x, float s) {
    float q = rintf(x / s);
    q = fminf(fmaxf(q, -128.f), 127.f);
    return (i8)(int)q;
}
QDEV float fake_quant(float x, float s) { return (float)quantize_one(x, s) * s; }
// `quantize_one(x, s)` bit for bit, given inv_s = 1 / s: x · inv_s lies within 2^-13 of the
// rounded quotient x / s wherever |x / s| < 256 (two roundings of 2^-24 each, and 1/s's), and
// beyond that both saturate, so their nearest integers differ only near a half-integer, where
// the quotient is taken as `quantize_one` takes it. The division is a dozen instructions and a
// branch; where every block of a product quantizes the same row (its norm prologue) they were
// most of that prologue's issue time.
QDEV i8 quantize_with_inverse(float x, float s, float inv_s) {
    const float y = x * inv_s;
    float q = rintf(y);
    if (fabsf(y - q) > 0.49975586f) q = rintf(x / s);  // 0.5 - 2^-12
    q = fminf(fmaxf(q, -128.f), 127.f);
    return (i8)(int)q;
}

QDEV float ld(const Opnd& o, i64 row, int col) {
    float v = o.p[row * o.stride + col];
    if (o.scale) v = fake_quant(v, o.scale[o.scale_vec ? col : 0]);
    return v;
}

// The fake-quantization scale `ld` reads for column `col` of `o` (0 where it has none), for
// loading before a kernel's dependency wait: scales never change, and a decode step reads each
// once per layer, long after L2 dropped it, so one loaded after the wait is a round trip to
// DRAM on the step's critical path. `ld_with` is `ld` given that scale.
QDEV float ld_scale(const Opnd& o, int col) { return o.scale ? o.scale[o.scale_vec ? col : 0] : 0.f; }
// `ld_with`'s conversion of a value loaded (or copied) raw, so that a kernel can request every
// input of a step before converting the first (one L2 round trip instead of one per operand).
QDEV float fq_raw(const Opnd& o, float raw, float scale) { return o.scale ? fake_quant(raw, scale) : raw; }
QDEV float ld_with(const Opnd& o, i64 row, int col, float scale) { return fq_raw(o, o.p[row * o.stride + col], scale); }
// `fq_raw` given `inv` = 1 / `scale` (`quantize_with_inverse`: the same value without a division
// per element; a prefill scan converts every input it stages, and its divisions were a third
// of the quantized scans' time).
QDEV float fq_raw_inv(const Opnd& o, float raw, float scale, float inv) { return o.scale ? (float)quantize_with_inverse(raw, scale, inv) * scale : raw; }
QDEV float inverse_of(float scale) { return scale != 0.f ? 1.f / scale : 0.f; }

QDEV float h2f(f16bits h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
// Two floats as an f16x2 register: `lo` in the low half (the lower-indexed element).
QDEV u32 pack_half2(float lo, float hi) {
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

QDEV float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
QDEV float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(t);
}

// Programmatic dependent launch (sm_90 and later). Every kernel first waits until the kernel
// before it in the stream has completed and its writes are visible, then lets the next kernel's
// blocks be scheduled: the next launch's setup, and a product's weight loads (weights are never
// written), overlap this kernel instead of following it. Since each kernel waits before touching
// any activation or state, and a kernel completes only after its own wait returned, every read
// and write still happens in stream order. On older GPUs the runtime launches without the
// attribute and these compile to nothing.
QDEV void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#ifdef QUAMBA_TRACE
    quamba_trace_waited();
#endif
}
QDEV void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The prologue of every entry point that has nothing to load before its inputs are ready.
QDEV void pdl_enter() {
    pdl_wait();
    pdl_launch_dependents();
}
QDEV void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
// This block's share of `bytes` (16-byte aligned, a multiple of 16) from `p` brought into L2:
// weights a later launch reads, asked for while DRAM is otherwise idle (`ahead.rs`). One bulk
// prefetch by the block's first thread (one `prefetch.global.L2` per 128-byte line from every
// thread made 16-layer steps 3-9 % slower: bench/RESULTS.md, twenty-first session). Nothing
// where p is null, and nothing before sm_90 (no launch overlaps another there, and Orin's and
// the A5000's L2 are smaller than a layer's in_proj).
QDEV void l2_ahead(const void* p, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int blocks = gridDim.x * gridDim.y, block = blockIdx.y * gridDim.x + blockIdx.x;
    const int share = ((bytes / 16 + blocks - 1) / blocks) * 16, from = block * share;
    if (p && threadIdx.x == 0 && from < bytes) {
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"((const char*)p + from), "r"(min(share, bytes - from)) : "memory");
    }
#endif
}
// A recurrent state read before the wait, from L2 (never a line an SM's L1 kept from an earlier
// kernel). The state's last writer ran its step one decode step earlier (a scan's state: the
// same layer's scan; a conv state: the product or conv launch that ran the same layer's conv
// step), several kernels back in the stream: it has completed before this kernel can be
// scheduled, since the kernel just before this one only lets it be scheduled after its own wait.
QDEV float ld_state(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

// A cached state's quantization (ir::StateQuant): round(x * inverse) to nearest even, saturated
// to int8 (NaN gives 0), in one conversion.
QDEV u32 quantize_state(float x, float inverse) {
    u32 q;
    asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(q) : "f"(x * inverse));
    return q & 0xffu;
}

// A scan's recurrent state row: N values of one (sequence, channel), of which a thread holds
// PER = N / LANES, value i at i * LANES + sub, or where LANE_MAJOR at sub * PER + i (together,
// so that it loads and stores them as words and its scales as float4). SQ = 0: f32 values.
// Otherwise int8 (the method's cached state, ir::StateQuant): value = q * scale, with SQ = 1
// scale per group or SQ = N (one per group and state index); the group is the channel's entry of
// the group map where GROUPED (0 otherwise). The plan uploads the table as
// [group][scales, inverses][SQ], SF floats in all (`WeightUpload::StateScales`), scales in the
// values' order. Value i is state n = i * LANES + sub to the SSD: its int8 rows are LANE_MAJOR,
// laid out by lanes (every kernel that touches one splits it over the same LANES) with their
// tables in the same order. Mamba1's prefill kernel takes a LANE_MAJOR row's value i as state
// sub * PER + i instead (its B and C then float4 loads too), so that its row lies as the step's.
//
// `request` issues the loads before the dependency wait and uses none of them (no branch either:
// ptxas once moved a value loaded there into a uniform register ahead of one): an f32 row
// straight into the caller's state registers (through `ld_state`'s L2 path), an int8 row's bytes
// and its group. `prefetch_scales` puts a grouped table into L2 meanwhile. `scales` (right after
// the wait) loads a per-group scale and inverse; `values` (after the wait) makes the f32
// state, loading per-state-index scales there; `store` writes it back, loading their inverses.
// Held through the step, 16 per-state scales per thread took the SSD step from 64 to 76-100
// registers, and its blocks no longer fit beside in_proj's: some started only once in_proj ended.
template <int N, int LANES, int SQ, int SF, bool GROUPED, bool LANE_MAJOR, int THREADS> struct StateRow {
    static const int PER = N / LANES;
    static const bool VEC = SQ != 0 && (LANE_MAJOR || LANES == 1) && PER % 4 == 0;
    static const bool VEC_SCALES = SQ == N && VEC;
    // int8 words, or one int8 per register (none for an f32 row: it goes straight to the state)
    static const int RAW = SQ == 0 ? 1 : (VEC ? PER / 4 : PER);
    u32 raw[RAW];
    float sc, inv;  // where SQ == 1
    int group;

    static QDEV int byte_of(int sub, int i) { return LANE_MAJOR ? sub * PER + i : i * LANES + sub; }
    // Offset of state i's scale in the table (its inverse is SQ further).
    QDEV int scale_at(int sub, int i) const { return (GROUPED ? group * 2 * SQ : 0) + (SQ == 1 ? 0 : byte_of(sub, i)); }

    QDEV void request(const void* state, i64 row, int channel, int sub, const int* group_map, float* s) {
        static_assert(SQ == 0 || SQ == 1 || SQ == N, "one scale per group, or one per group and state index");
        if constexpr (SQ == 0) {
            const float* st = (const float*)state + row * N;
#pragma unroll
            for (int i = 0; i < PER; i++) s[i] = ld_state(st + byte_of(sub, i));
        } else {
            const unsigned char* st = (const unsigned char*)state + row * N;
#pragma unroll
            for (int j = 0; j < RAW; j++) {
                if constexpr (VEC) asm volatile("ld.global.cg.b32 %0, [%1];" : "=r"(raw[j]) : "l"(st + byte_of(sub, 4 * j)));
                else asm volatile("ld.global.cg.u8 %0, [%1];" : "=r"(raw[j]) : "l"(st + byte_of(sub, j)));
            }
            if constexpr (GROUPED) group = group_map[channel];
        }
    }

    // Before the wait, by every thread: a grouped scale table into L2 (its lines spread over the
    // block's threads), so that `scales` and `values` find it there.
    QDEV void prefetch_scales(const float* table) const {
        if constexpr (SQ != 0 && GROUPED) {
            const int LINES = (SF + 31) / 32;
#pragma unroll
            for (int k = 0; k < (LINES + THREADS - 1) / THREADS; k++) {
                const int l = threadIdx.x + k * THREADS;
                if (l < LINES) prefetch_l2(table + l * 32);
            }
        }
    }

    QDEV void scales(int sub, const float* table) {
        if constexpr (SQ == 1) {
            sc = table[scale_at(sub, 0)];
            inv = table[scale_at(sub, 0) + 1];
        }
    }

    // The q of state i (i8 in the low byte of a register or of a word).
    QDEV int q_of(int i) const {
        const u32 v = VEC ? raw[i / 4] >> (8 * (i % 4)) : raw[i];
        return (int)(signed char)(v & 0xffu);
    }

    // Four consecutive table entries of this thread from `at` (float4 where its scales are).
    QDEV void four(const float* table, int at, int sub, int i, float* out) const {
        if constexpr (VEC_SCALES) {
            const float4 v = *(const float4*)(table + at + scale_at(sub, i));
            out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) out[k] = SQ == 1 ? (at == 0 ? sc : inv) : (i + k < PER ? table[at + scale_at(sub, i + k)] : 0.f);
        }
    }

    QDEV void values(float* s, int sub, const float* table) const {
        if constexpr (SQ != 0) {
#pragma unroll
            for (int i = 0; i < PER; i += 4) {
                float f[4];
                four(table, 0, sub, i, f);
#pragma unroll
                for (int k = 0; k < 4 && i + k < PER; k++) s[i + k] = (float)q_of(i + k) * f[k];
            }
        }
    }

    QDEV void store(void* state, i64 row, int sub, const float* s, const float* table) const {
        if constexpr (SQ == 0) {
            float* st = (float*)state + row * N;
#pragma unroll
            for (int i = 0; i < PER; i++) st[byte_of(sub, i)] = s[i];
        } else {
            unsigned char* st = (unsigned char*)state + row * N;
#pragma unroll
            for (int i = 0; i < PER; i += 4) {
                float r[4];
                four(table, SQ, sub, i, r);
                if constexpr (VEC) {
                    u32 word = 0;
#pragma unroll
                    for (int k = 0; k < 4; k++) word |= quantize_state(s[i + k], r[k]) << (8 * k);
                    *(u32*)(st + byte_of(sub, i)) = word;
                } else {
#pragma unroll
                    for (int k = 0; k < 4 && i + k < PER; k++) st[byte_of(sub, i + k)] = (unsigned char)quantize_state(s[i + k], r[k]);
                }
            }
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Packed weight layouts for mma.sync. A weight [N, K] is cut into tiles of 8 rows (one mma's n)
// and chunks of CH k; chunk (nt, c) is 32 lanes x 16 bytes, lane = 4*g + t holding exactly the B
// fragments that lane needs for the chunk's k-steps, so a warp loads a chunk with one coalesced
// 16-byte load per lane. K is zero-padded to a whole chunk and N to a whole tile.
//   kind 0: f16 weights, m16n8k16, CH 32  (2 k-steps: words {b0,b1,b0,b1})
//   kind 1: int4 weights for f16 mma, CH 128 (8 k-steps; word j holds k-steps 2j and 2j+1 as
//           nibbles {b0 lo, b1 lo, b0' lo, b1' lo, b0 hi, b1 hi, b0' hi, b1' hi})
//   kind 2: int8 weights, m16n8k32, CH 64 (2 k-steps: words {b0,b1,b0,b1})
//   kind 3: int4 weights for int8 mma, CH 128 (4 k-steps; word j: low nibbles b0, high b1)
template <int KIND> struct Layout;
template <> struct Layout<0> { static const int CH = 32, KSTEP = 16; };
template <> struct Layout<1> { static const int CH = 128, KSTEP = 16; };
template <> struct Layout<2> { static const int CH = 64, KSTEP = 32; };
template <> struct Layout<3> { static const int CH = 128, KSTEP = 32; };

// The byte offset of element (n, k) of a packed weight with KC chunks per tile, and for int4
// which nibble (0 low, 1 high); for kind 0 the offset is of a 16-bit half.
template <int KIND> QDEV i64 packed_offset(int n, int k, int KC, int* nibble) {
    int nt = n >> 3, g = n & 7;
    const int CH = Layout<KIND>::CH;
    int c = k / CH, kk = k % CH;
    i64 base = ((i64)nt * KC + c) * 32;
    if (KIND == 0) {
        int ks = kk >> 4, r = kk & 15, half = r >> 3, t = (r & 7) >> 1, e = r & 1;
        return ((base + g * 4 + t) * 8) + (ks * 2 + half) * 2 + e;  // in halves
    } else if (KIND == 1) {
        int ks = kk >> 4, j = ks >> 1, odd = ks & 1, r = kk & 15, half = r >> 3, t = (r & 7) >> 1, e = r & 1;
        int nib = odd * 2 + half + e * 4;
        *nibble = nib & 1;
        return (base + g * 4 + t) * 16 + j * 4 + (nib >> 1);
    } else if (KIND == 2) {
        int ks = kk >> 5, r = kk & 31, half = r >> 4, t = (r & 15) >> 2, b = r & 3;
        return (base + g * 4 + t) * 16 + (ks * 2 + half) * 4 + b;
    } else {
        int j = kk >> 5, r = kk & 31, half = r >> 4, t = (r & 15) >> 2, b = r & 3;
        *nibble = half;
        return (base + g * 4 + t) * 16 + j * 4 + b;
    }
}

// The integer (or f16 value) of element (n, k).
template <int KIND> QDEV float packed_at(const void* w, int n, int k, int KC) {
    int nibble = 0;
    i64 off = packed_offset<KIND>(n, k, KC, &nibble);
    if (KIND == 0) return h2f(((const f16bits*)w)[off]);
    if (KIND == 2) return (float)((const i8*)w)[off];
    int byte = ((const unsigned char*)w)[off];
    int v = nibble ? (byte >> 4) : (byte & 15);
    return (float)(v >= 8 ? v - 16 : v);
}

// Sign-extends the low nibble of each byte of `w` to a full byte.
QDEV u32 sext_nibbles(u32 w) {
    u32 lo = w & 0x0F0F0F0Fu;
    return lo | ((lo & 0x08080808u) * 0x1Eu);
}

// Two int4 nibbles (bits 4s and 4s+16 of `w`) as an f16x2 of their integer values.
QDEV u32 nibbles_to_half2(u32 w, int s) {
    u32 x = (((w >> (4 * s)) & 0x000F000Fu) ^ 0x00080008u) | 0x64006400u;  // 1024 + (v + 8)
    u32 d;
    asm("sub.f16x2 %0, %1, %2;" : "=r"(d) : "r"(x), "r"(0x64086408u));     // - 1032
    return d;
}

// The eight int4 nibbles of `w` as four f16x2 of their integer values, h[s] = nibbles_to_half2(w,
// s), in nine instructions instead of eleven: nibbles at bits 4-7 of a 16-bit half are used in
// place, as 1024 + 16 (v + 8), and scaled back by one fused multiply-add (exact: every value is a
// small integer); the upper byte of each half is shifted down once for both of its nibbles.
QDEV void nibbles_to_half2x4(u32 w, u32* h) {
    const u32 up = w >> 8;
    const u32 lo0 = ((w & 0x000F000Fu) ^ 0x00080008u) | 0x64006400u;   // 1024 + (v + 8)
    const u32 hi0 = ((w & 0x00F000F0u) ^ 0x00800080u) | 0x64006400u;   // 1024 + 16 (v + 8)
    const u32 lo1 = ((up & 0x000F000Fu) ^ 0x00080008u) | 0x64006400u;
    const u32 hi1 = ((up & 0x00F000F0u) ^ 0x00800080u) | 0x64006400u;
    asm("sub.f16x2 %0, %1, %2;" : "=r"(h[0]) : "r"(lo0), "r"(0x64086408u));                     // - 1032
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(h[1]) : "r"(hi0), "r"(0x2C002C00u), "r"(0xD480D480u));  // / 16 - 72
    asm("sub.f16x2 %0, %1, %2;" : "=r"(h[2]) : "r"(lo1), "r"(0x64086408u));
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(h[3]) : "r"(hi1), "r"(0x2C002C00u), "r"(0xD480D480u));
}

QDEV void mma_s8(int* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
QDEV void mma_f16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// The same products into sums that start from zero: the accumulator's registers are only written.
QDEV void mma_s8_from_zero(int* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}
QDEV void mma_f16_from_zero(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
        : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(0.f));
}

// The B fragments of k-step `s` (within a chunk) from a lane's 16-byte chunk slice.
template <int KIND> QDEV void b_frag(const uint4& v, int s, u32& b0, u32& b1) {
    u32 w[4] = {v.x, v.y, v.z, v.w};
    if (KIND == 0 || KIND == 2) {
        b0 = w[2 * s];
        b1 = w[2 * s + 1];
    } else if (KIND == 3) {
        b0 = sext_nibbles(w[s]);
        b1 = sext_nibbles(w[s] >> 4);
    } else {
        u32 word = w[s >> 1];
        int o = (s & 1) * 2;
        b0 = nibbles_to_half2(word, o);
        b1 = nibbles_to_half2(word, o + 1);
    }
}

// The A fragments of rows m0+g and m0+g+8 at k-offset kb (one k-step).
template <int KIND, bool VEC> QDEV void a_frag(const void* A, int lda, int M, int m0, int kb, int K, u32* a) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int r0 = m0 + g, r1 = m0 + g + 8;
    if (KIND >= 2) {
        const i8* X = (const i8*)A;
        a[0] = r0 < M ? *(const u32*)(X + (i64)r0 * lda + kb + t * 4) : 0u;
        a[1] = r1 < M ? *(const u32*)(X + (i64)r1 * lda + kb + t * 4) : 0u;
        a[2] = r0 < M ? *(const u32*)(X + (i64)r0 * lda + kb + 16 + t * 4) : 0u;
        a[3] = r1 < M ? *(const u32*)(X + (i64)r1 * lda + kb + 16 + t * 4) : 0u;
    } else {
        const float* X = (const float*)A;
        int k0 = kb + t * 2, k1 = kb + 8 + t * 2;
        float v[8];
        if (VEC) {
            // Pairs at or past K read the view's neighbours: zero them so no stray value
            // (an f16 overflow, say) can meet a zero weight as inf * 0.
            if (k0 >= K) { r0 = M; r1 = M; }
            float2 p;
            p = r0 < M ? *(const float2*)(X + (i64)r0 * lda + k0) : make_float2(0.f, 0.f); v[0] = p.x; v[1] = p.y;
            p = r1 < M ? *(const float2*)(X + (i64)r1 * lda + k0) : make_float2(0.f, 0.f); v[2] = p.x; v[3] = p.y;
            if (k1 >= K) { r0 = M; r1 = M; }
            p = r0 < M ? *(const float2*)(X + (i64)r0 * lda + k1) : make_float2(0.f, 0.f); v[4] = p.x; v[5] = p.y;
            p = r1 < M ? *(const float2*)(X + (i64)r1 * lda + k1) : make_float2(0.f, 0.f); v[6] = p.x; v[7] = p.y;
        } else {
            // Unaligned views: element by element, zero beyond K (a view's neighbours are not ours).
            int ks[4] = {k0, k0, k1, k1};
            int rs[4] = {r0, r1, r0, r1};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                bool ok = rs[i] < M;
                v[2 * i] = ok && ks[i] < K ? X[(i64)rs[i] * lda + ks[i]] : 0.f;
                v[2 * i + 1] = ok && ks[i] + 1 < K ? X[(i64)rs[i] * lda + ks[i] + 1] : 0.f;
            }
        }
        a[0] = pack_half2(v[0], v[1]);
        a[1] = pack_half2(v[2], v[3]);
        a[2] = pack_half2(v[4], v[5]);
        a[3] = pack_half2(v[6], v[7]);
    }
}

// A decode product's activations staged in shared memory, once per block: the block's rows of A
// as int8 (kinds 2, 3) or f16 (kinds 0, 1) over K padded to whole chunks, rows SROW bytes apart
// (a chunk multiple plus 16 bytes, so the eight rows a warp's fragment reads start four banks
// apart). Read from global memory at every k-step instead, each mma waited on an L2 round trip.
// The rows go in passes of up to PER words per thread (about one row at decode widths), every
// load of a pass issued before its first store, so a pass costs one round trip and few registers.
template <int KIND, bool VEC, int K, int KP, int SROW, int THREADS>
QDEV void stage_a(const void* A, int lda, int m_base, int rows, unsigned char* stage) {
    const int WORDS = KP * (KIND >= 2 ? 1 : 2) / 4;  // 4-byte shared words per row
    const int PER = (WORDS + THREADS - 1) / THREADS < 8 ? (WORDS + THREADS - 1) / THREADS : 8;
    const int PASS = PER * THREADS;
    // Whole-word loads when every row starts on a word (int8) or pair (f32, VEC) boundary.
    const bool aligned = KIND >= 2 ? K % 4 == 0 && lda % 4 == 0 && ((unsigned long long)A & 3) == 0 : VEC && K % 2 == 0;
    const int total = rows * WORDS;
    for (int base = 0; base < total; base += PASS) {
        u32 v[PER];
#pragma unroll
        for (int it = 0; it < PER; it++) {
            int idx = base + it * THREADS + (int)threadIdx.x;
            int r = idx / WORDS, w = idx % WORDS;
            u32 word = 0;
            if (idx < total) {
                if (KIND >= 2) {
                    const i8* x = (const i8*)A + (i64)(m_base + r) * lda;
                    if (aligned) {
                        if (w * 4 < K) word = *(const u32*)(x + w * 4);
                    } else {
#pragma unroll
                        for (int b = 0; b < 4; b++)
                            if (w * 4 + b < K) word |= (u32)(unsigned char)x[w * 4 + b] << (8 * b);
                    }
                } else {
                    const float* x = (const float*)A + (i64)(m_base + r) * lda;
                    int k = w * 2;
                    if (aligned) {
                        if (k < K) {
                            float2 p = *(const float2*)(x + k);
                            word = pack_half2(p.x, p.y);
                        }
                    } else {
                        word = pack_half2(k < K ? x[k] : 0.f, k + 1 < K ? x[k + 1] : 0.f);
                    }
                }
            }
            v[it] = word;
        }
#pragma unroll
        for (int it = 0; it < PER; it++) {
            int idx = base + it * THREADS + (int)threadIdx.x;
            if (idx < total) *(u32*)(stage + (idx / WORDS) * SROW + (idx % WORDS) * 4) = v[it];
        }
    }
}

// a_frag from staged activations: local rows g and g+8 of tile `i` (rows past `rows` are zero).
template <int KIND, int SROW> QDEV void a_frag_staged(const unsigned char* stage, int rows, int m0, int kb, u32* a) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int r0 = m0 + g, r1 = m0 + g + 8;
    const unsigned char* p0 = stage + r0 * SROW;
    const unsigned char* p1 = stage + r1 * SROW;
    if (KIND >= 2) {
        a[0] = r0 < rows ? *(const u32*)(p0 + kb + t * 4) : 0u;
        a[1] = r1 < rows ? *(const u32*)(p1 + kb + t * 4) : 0u;
        a[2] = r0 < rows ? *(const u32*)(p0 + kb + 16 + t * 4) : 0u;
        a[3] = r1 < rows ? *(const u32*)(p1 + kb + 16 + t * 4) : 0u;
    } else {
        int k0 = (kb + t * 2) * 2, k1 = (kb + 8 + t * 2) * 2;
        a[0] = r0 < rows ? *(const u32*)(p0 + k0) : 0u;
        a[1] = r1 < rows ? *(const u32*)(p1 + k0) : 0u;
        a[2] = r0 < rows ? *(const u32*)(p0 + k1) : 0u;
        a[3] = r1 < rows ? *(const u32*)(p1 + k1) : 0u;
    }
}

// The output row and column of accumulator element e (0-3) of mma tile (i, j), for lane (g, t).
QDEV int frag_row(int m_base, int i, int g, int e) { return m_base + 16 * i + g + (e >= 2 ? 8 : 0); }
QDEV int frag_col(int nt_base, int j, int t, int e) { return (nt_base + j) * 8 + t * 2 + (e & 1); }

// out[m, n] = act_scale * sum_g scale[n, g] * sum_{k in g} A[m, k] W[n, k] + bias[n] (+ resid[m, n]).
//
// A block is WN x WK warps; each warp owns MT x NT mma tiles (16 MT rows, 8 NT columns) over
// 1/WK of the k-chunks, and the WK partial sums meet in shared memory. Decode (few rows) uses
// WK > 1 so that enough warps stream the weights; prefill uses WN > 1 and MT > 1 for reuse.
// Partial sums are kept per weight group (int32 for int8 activations, exact) and folded into
// the f32 accumulator with the group's scale when the group ends.
//
// STAGE > 0 (decode): a block with at most STAGE rows stages them in shared memory (`stage_a`),
// and its k-split warps load the bias and residual of their outputs right after the wait, so
// neither the k-steps nor the epilogue wait on an L2 round trip of their own.
template <int KIND, int K, int N, int GROUP, int MT, int NT, int WN, int WK, int DEPTH, bool VEC, int STAGE>
QDEV void gemm(const void* A, int lda, const uint4* W, const float* scales, float act_scale, const float* bias,
               const float* resid, int ldr, float* out, int ldo, int M) {
    typedef Layout<KIND> L;
    const int KC = (K + L::CH - 1) / L::CH;
    const int STEPS = L::CH / L::KSTEP;
    const int NG = (K + GROUP - 1) / GROUP;
    const bool INT = KIND >= 2;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int wn = warp % WN, wk = warp / WN;
    int g = lane >> 2, t = lane & 3;
    int m_base = blockIdx.y * (16 * MT);
    int nt_base = (blockIdx.x * WN + wn) * NT;  // first 8-row tile of this warp
    float acc[MT][NT][4];
    int pi[MT][NT][4];
    float pf[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { acc[i][j][e] = 0.f; pi[i][j][e] = 0; pf[i][j][e] = 0.f; }

    int c_begin = (KC * wk) / WK, c_end = (KC * (wk + 1)) / WK;
    int cur_group = -1;
    const int N_TILES = (N + 7) / 8;
    // The scales of the current group, loaded when the group starts (not when it is folded in,
    // where the load's latency would stall the warp once per group).
    float gs[NT][2];
    auto load_scales = [&](int grp) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int n0 = (nt_base + j) * 8 + t * 2;
            bool ok = scales && nt_base + j < N_TILES;
            gs[j][0] = ok ? scales[(i64)n0 * NG + grp] : 1.f;
            gs[j][1] = ok ? scales[(i64)(n0 + 1) * NG + grp] : 1.f;
        }
    };
    auto flush = [&]() {
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float s0 = gs[j][0], s1 = gs[j][1];
#pragma unroll
            for (int i = 0; i < MT; i++) {
                if (INT) {
                    acc[i][j][0] += s0 * (float)pi[i][j][0]; acc[i][j][1] += s1 * (float)pi[i][j][1];
                    acc[i][j][2] += s0 * (float)pi[i][j][2]; acc[i][j][3] += s1 * (float)pi[i][j][3];
                } else {
                    acc[i][j][0] += s0 * pf[i][j][0]; acc[i][j][1] += s1 * pf[i][j][1];
                    acc[i][j][2] += s0 * pf[i][j][2]; acc[i][j][3] += s1 * pf[i][j][3];
                }
#pragma unroll
                for (int e = 0; e < 4; e++) { pi[i][j][e] = 0; pf[i][j][e] = 0.f; }
            }
        }
    };
    if (c_begin < c_end) {
        cur_group = (c_begin * L::CH) / GROUP;
        load_scales(cur_group);
    }
    // Weights stream through a ring of DEPTH chunks per warp: chunk c + DEPTH is requested when
    // chunk c is consumed, so DEPTH loads are in flight per lane (a decode step has few rows and
    // is bound by how many weight bytes are in flight). The first DEPTH chunks are requested, and
    // the next few prefetched into L2, before waiting for the previous kernel.
    auto load_chunk = [&](int c, uint4* w) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int nt = nt_base + j;
            w[j] = nt < N_TILES && c < c_end ? W[((i64)nt * KC + c) * 32 + lane] : make_uint4(0, 0, 0, 0);
        }
    };
    uint4 ring[DEPTH][NT];
#pragma unroll
    for (int d = 0; d < DEPTH; d++) load_chunk(c_begin + d, ring[d]);
#pragma unroll
    for (int j = 0; j < NT; j++) {
        int nt = nt_base + j;
        if (nt < N_TILES && (lane & 7) == 0)
            for (int c = c_begin + DEPTH; c < c_end && c < c_begin + DEPTH + 4; c++) prefetch_l2(&W[((i64)nt * KC + c) * 32 + lane]);
    }
    pdl_enter();
    const int KP = KC * L::CH;
    const int SROW = KP * (KIND >= 2 ? 1 : 2) + 16;
    __shared__ __align__(16) unsigned char stage[STAGE > 0 ? STAGE * SROW : 16];
    const int rows_here = min(M - m_base, 16 * MT);
    const bool staged = STAGE > 0 && rows_here <= STAGE;
    // Bias and residual of this warp's outputs, loaded early (decode: only warp wk == 0 writes).
    float early_bias[STAGE > 0 ? MT : 1][STAGE > 0 ? NT : 1][4], early_resid[STAGE > 0 ? MT : 1][STAGE > 0 ? NT : 1][4];
    if constexpr (STAGE > 0) {
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int m = frag_row(m_base, i, g, e), n = frag_col(nt_base, j, t, e);
                    bool mine = wk == 0 && m < M && n < N;
                    early_bias[i][j][e] = mine && bias ? bias[n] : 0.f;
                    early_resid[i][j][e] = mine && resid ? resid[(i64)m * ldr + n] : 0.f;
                }
        if (staged) {
            stage_a<KIND, VEC, K, KP, SROW, WN * WK * 32>(A, lda, m_base, rows_here, stage);
            __syncthreads();
        }
    }
    for (int c0 = c_begin; c0 < c_end; c0 += DEPTH) {
#pragma unroll
        for (int d = 0; d < DEPTH; d++) {
            const int c = c0 + d;
            if (c >= c_end) break;
            uint4 wv[NT];
#pragma unroll
            for (int j = 0; j < NT; j++) wv[j] = ring[d][j];
            if (c + DEPTH < c_end) load_chunk(c + DEPTH, ring[d]);
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                int kb = c * L::CH + s * L::KSTEP;
                int grp = kb / GROUP;
                if (grp != cur_group) {
                    flush();
                    cur_group = grp;
                    load_scales(grp);
                }
                u32 a[MT][4];
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    if constexpr (STAGE > 0) {
                        if (staged) a_frag_staged<KIND, SROW>(stage, rows_here, 16 * i, kb, a[i]);
                        else a_frag<KIND, VEC>(A, lda, M, m_base + 16 * i, kb, K, a[i]);
                    } else {
                        a_frag<KIND, VEC>(A, lda, M, m_base + 16 * i, kb, K, a[i]);
                    }
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    u32 b0, b1;
                    b_frag<KIND>(wv[j], s, b0, b1);
#pragma unroll
                    for (int i = 0; i < MT; i++) {
                        if (INT) mma_s8(pi[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                        else mma_f16(pf[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                    }
                }
            }
        }
    }
    if (cur_group >= 0) flush();

    if (WK > 1) {
        // Partial sums of the k-split warps meet in shared memory, in a fixed order.
        extern __shared__ float red[];
        const int PER = MT * NT * 4;
        float* mine = red + ((wk * WN + wn) * 32 + lane) * PER;
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) mine[(i * NT + j) * 4 + e] = acc[i][j][e];
        __syncthreads();
        if (wk != 0) return;
        for (int w = 1; w < WK; w++) {
            const float* other = red + ((w * WN + wn) * 32 + lane) * PER;
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[i][j][e] += other[(i * NT + j) * 4 + e];
        }
    }
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int m = frag_row(m_base, i, g, e), n = frag_col(nt_base, j, t, e);
                if (m < M && n < N) {
                    float v;
                    if constexpr (STAGE > 0) {
                        v = acc[i][j][e] * act_scale + early_bias[i][j][e];
                        if (resid) v = early_resid[i][j][e] + v;
                    } else {
                        v = acc[i][j][e] * act_scale + (bias ? bias[n] : 0.f);
                        if (resid) v = resid[(i64)m * ldr + n] + v;
                    }
                    out[(i64)m * ldo + n] = v;
                }
            }
}

// ---------------------------------------------------------------------------------------------
// The causal conv's decode step on one channel, applied by the one-row product that computes the
// conv's input (Mamba's in_proj) to each conv column as it stores it, so that a decode step has
// no conv launch. The same operations in the same order as `causal_conv1d` at one position.
struct ConvStep {
    const float* weight;  // [C][KW]
    const float* bias;    // [C], or null
    float* state;         // [sequences][KW - 1][C]
    float* out;           // [rows][C]
    const float* scale;   // the conv input's fake quantization, or null
    int scale_vec;        // 1: one scale per channel
    i8* q_out;            // [rows][q_stride]: the output also quantized (as `quantize_rows`), or null
    const float* q_scale;
    int q_vec;            // 1: one scale per channel
    int q_stride;
};
// One conv column's operands: its state (the last KW - 1 inputs), taps, bias and scales. `gemv`
// loads them before its dependency wait, so that its epilogue waits on no global load (on
// mamba-2.8b / mamba2-2.7b W4A8, 3.8-4.2 % off a decode step): the weights and scales never
// change, and the state's last writer, the conv step one decode step earlier, has completed
// (see `ld_state`). `gemv_stream` does the same where its epilogue runs once, one column per
// thread.
template <int KW> struct ConvColumn {
    float hist[KW], w[KW], bias, in_scale, q_scale;
};
// BEFORE_WAIT: loaded before the dependency wait, the state through `ld_state`.
template <int C, int KW, bool BEFORE_WAIT> QDEV ConvColumn<KW> conv_column_load(const ConvStep& cs, int c, i64 b) {
    ConvColumn<KW> p;
    const float* st = cs.state + b * (KW - 1) * C;
#pragma unroll
    for (int k = 0; k < KW - 1; k++) p.hist[k] = BEFORE_WAIT ? ld_state(st + k * C + c) : st[k * C + c];
#pragma unroll
    for (int k = 0; k < KW; k++) p.w[k] = cs.weight[c * KW + k];
    p.bias = cs.bias ? cs.bias[c] : 0.f;
    p.in_scale = cs.scale ? cs.scale[cs.scale_vec ? c : 0] : 0.f;
    p.q_scale = cs.q_out ? cs.q_scale[cs.q_vec ? c : 0] : 0.f;
    return p;
}
// The conv's decode step on column c given its new input v: the output (and its quantize),
// and the state shifted by one.
template <int C, int KW, bool SILU> QDEV void conv_column_step(const ConvStep& cs, ConvColumn<KW> p, int c, float v, i64 b) {
    float* st = cs.state + b * (KW - 1) * C;
    p.hist[KW - 1] = cs.scale ? fake_quant(v, p.in_scale) : v;
    float acc = p.bias;
#pragma unroll
    for (int k = 0; k < KW; k++) acc += p.w[k] * p.hist[k];
    const float y = SILU ? silu_f(acc) : acc;
    cs.out[b * C + c] = y;
    if (cs.q_out) cs.q_out[b * cs.q_stride + c] = quantize_one(y, p.q_scale);
#pragma unroll
    for (int k = 0; k < KW - 1; k++) st[k * C + c] = p.hist[k + 1];
}
template <int C, int KW, bool SILU> QDEV void conv_step_column(const ConvStep& cs, int c, float v, i64 b) {
    conv_column_step<C, KW, SILU>(cs, conv_column_load<C, KW, false>(cs, c, b), c, v, b);
}

// ---------------------------------------------------------------------------------------------
// Decode products with int8 activations at one row per block (batch-1 decode), on dp4a.
//
// At one row `mma.sync` computes 16 rows of which 15 are padding, every k-step waits on its own
// activation loads, and a block's few chunks per warp leave its prologue and reduction as long as
// its streaming. Here every lane does useful work on the same packed weights: lane (g, t) of a
// chunk holds row g's weights at k offsets {32j + 4t .. +3} (low nibbles of word j, or int8 word
// 2j) and {32j + 16 + 4t .. +3} (high nibbles, or word 2j + 1), so it needs the activation words
// p = 4i + t of the chunk, i.e. those with p % 4 == t. The block stages its row once in shared
// memory with each chunk's words permuted to (p % 4) * (CH / 16) + p / 4, where a lane reads its
// CH / 4 bytes for a chunk with one or two 16-byte loads. A warp computes one 8-row tile's chunks
// of its k-slice (WK warps split k, WN tiles per block). The weights are requested before the
// dependency wait, so that they stream while the previous kernel finishes: with BULK, the block's
// whole tiles and their scales, into shared memory through the bulk-copy engine (one request per
// tile; bench/gemv_micro.cu, H200, in a chain of launches: mamba2-2.7b's in_proj 6.2 -> 4.4 us,
// out_proj 3.8 -> 2.8 us, faster than a kernel that only reads the same bytes into registers);
// otherwise each warp's ring of DEPTH chunks with their group scales, plus an L2 prefetch of the
// rest of its slice.
//
// Exactness: int4 nibbles are used in place as 16 v (low: word << 4, high: word, each masked to
// the high nibbles of its bytes), so dp4a sums 16 times the exact group sum, which an arithmetic
// shift undoes. A group's int32 sum gathers the four t-lanes of its row by shuffles and is scaled
// once per k-slice (a group that spans slices, such as a per-channel one, is scaled in each, as
// in `gemm`); k-slices meet in shared memory in slice order.
//
// CONV_C > 0: output columns [CONV_LO, CONV_LO + CONV_C) are also the input of a causal conv of
// CONV_KW taps (then SiLU if CONV_SILU), whose decode step `conv` runs on each as it is stored.
QDEV int dp4a_s8(u32 a, u32 b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// The SPC scales of chunk c's groups (chunks of CH, groups of GROUP over K) from a row's scales
// (all 1 unless `present`): the one-row sums' (`GroupDot`, `HalfDot`).
template <int CH, int K, int GROUP, int SPC> QDEV void chunk_scales(const float* row, bool present, int c, float* sc) {
    const int NG = (K + GROUP - 1) / GROUP;
#pragma unroll
    for (int q = 0; q < SPC; q++) sc[q] = present ? row[min((c * CH + q * GROUP) / GROUP, NG - 1)] : 1.f;
}

// One lane's share of an 8-row tile's sum over chunks of int8 activations staged by
// `stage_permuted`: each group's exact int32 sum (its four t-lanes gathered by shuffles, int4
// nibbles used in place as 16 v and shifted back) scaled once by the group's scale, the groups
// added in k order. `chunk` takes chunk c's weights `w` (this lane's 16 bytes) and the chunk's
// group scales `sc` (`scales`); `total` closes the last group.
template <int KIND, int K, int GROUP> struct GroupDot {
    // Enumerators, not static members: they are never objects the PTX would have to hold.
    enum : int {
        CH = Layout<KIND>::CH,
        NG = (K + GROUP - 1) / GROUP,
        SEGS = CH / 32,                                           // 32-k segments per chunk
        WHOLE = GROUP % CH == 0 || NG == 1,                       // a chunk lies in one group
        SPC = WHOLE ? 1 : CH / GROUP,                             // scales per chunk
        A_WORDS = CH / 16,                                        // a lane's activation words per chunk
    };
    int part = 0, cur = -1;
    float acc = 0.f, cur_scale = 1.f;
    QDEV void flush() {
        int v = part;
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (KIND == 3) v >>= 4;
        acc += cur_scale * (float)v;
        part = 0;
    }
    // This lane's activation words of chunk c.
    static QDEV void load(const u32* stage, int c, int t, u32* a) {
        const u32* ap = stage + c * (CH / 4) + t * (CH / 16);
#pragma unroll
        for (int i = 0; i < CH / 64; i++) {
            uint4 v = *(const uint4*)(ap + 4 * i);
            a[4 * i] = v.x; a[4 * i + 1] = v.y; a[4 * i + 2] = v.z; a[4 * i + 3] = v.w;
        }
    }
    static QDEV void scales(const float* row, bool present, int c, float* sc) { chunk_scales<CH, K, GROUP, SPC>(row, present, c, sc); }
    QDEV void chunk(const u32* stage, int c, int t, const u32* w, const float* sc) {
        u32 a[CH / 16];
        load(stage, c, t, a);
        chunk(a, c, w, sc);
    }
    // Chunk c with its activation words `a` already loaded (`load`).
    QDEV void chunk(const u32* a, int c, const u32* w, const float* sc) {
#pragma unroll
        for (int s = 0; s < SEGS; s++) {
            if (s == 0 || !WHOLE) {
                int grp = min((c * CH + s * 32) / GROUP, NG - 1);
                if (grp != cur) {
                    if (cur >= 0) flush();
                    cur = grp;
                    cur_scale = sc[WHOLE ? 0 : (s * 32) / GROUP];
                }
            }
            part = segment(w, a, s, part);
        }
    }
    // `part` plus segment s of a chunk: this lane's weights `w` (int4 nibbles used in place as
    // 16 v, or int8 words) against its activation words `a`.
    static QDEV int segment(const u32* w, const u32* a, int s, int part) {
        if (KIND == 3) {
            part = dp4a_s8((w[s] << 4) & 0xF0F0F0F0u, a[2 * s], part);
            return dp4a_s8(w[s] & 0xF0F0F0F0u, a[2 * s + 1], part);
        }
        part = dp4a_s8(w[2 * s], a[2 * s], part);
        return dp4a_s8(w[2 * s + 1], a[2 * s + 1], part);
    }
    QDEV float total() {
        if (cur >= 0) flush();
        return acc;
    }
};

// `GroupDot` for two tiles at once, where each chunk lies in one group: a chunk's activation
// words are loaded once for both tiles (a warp's shared-memory reads per tile-chunk go from
// three 16-byte loads to two), and each group's two sums meet in two shuffles instead of four:
// the first exchange hands each lane's other tile's part to its partner (t ^ 1), so that even
// lanes gather tile 0 and odd lanes tile 1, the second adds across t ^ 2. The int32 group sums
// are the same as `GroupDot`'s (integer sums, any order), scaled and added in the same order,
// so each column's result is the same bit for bit. After `total`, lane (g, t) holds column g of
// tile t & 1.
template <int KIND, int K, int GROUP> struct PairDot {
    enum : int {
        CH = Layout<KIND>::CH,
        NG = (K + GROUP - 1) / GROUP,
        SEGS = CH / 32,
    };
    static_assert(GROUP % CH == 0 || NG == 1, "PairDot: each chunk must lie in one group");
    int p0 = 0, p1 = 0, cur = -1;
    float acc = 0.f, cur_scale = 1.f;
    QDEV void flush(int t) {
        const bool odd = t & 1;
        int v = (odd ? p1 : p0) + __shfl_xor_sync(0xffffffffu, odd ? p0 : p1, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (KIND == 3) v >>= 4;
        acc += cur_scale * (float)v;
        p0 = p1 = 0;
    }
    // Chunk c of both tiles (`w0`, `w1`: this lane's 16 bytes of each); `srow` the scales of the
    // column this lane gathers (tile t & 1's column g), or null for none.
    QDEV void chunk(const u32* stage, int c, int t, const u32* w0, const u32* w1, const float* srow) {
        const int grp = min((c * CH) / GROUP, NG - 1);
        if (grp != cur) {
            if (cur >= 0) flush(t);
            cur = grp;
            cur_scale = srow ? srow[grp] : 1.f;
        }
        u32 a[CH / 16];
        GroupDot<KIND, K, GROUP>::load(stage, c, t, a);
#pragma unroll
        for (int s = 0; s < SEGS; s++) {
            p0 = GroupDot<KIND, K, GROUP>::segment(w0, a, s, p0);
            p1 = GroupDot<KIND, K, GROUP>::segment(w1, a, s, p1);
        }
    }
    QDEV float total(int t) {
        if (cur >= 0) flush(t);
        return acc;
    }
};

// Where word w of a row (bytes 4w .. 4w + 3) goes in a chunk-permuted stage (see above).
template <int CH> QDEV int permuted_word(int w) {
    const int c = w / (CH / 4), p = w % (CH / 4);
    return c * (CH / 4) + (p % 4) * (CH / 16) + p / 4;
}

// Row `x` (K int8, zero-padded to KP) into `stage` as 4-byte words, chunk-permuted as above, in
// passes of up to 8 words per thread with every load of a pass issued before its first store.
template <int CH, int K, int KP, int THREADS> QDEV void stage_permuted(const i8* x, u32* stage) {
    const int WORDS = KP / 4;
    const int PER = (WORDS + THREADS - 1) / THREADS < 8 ? (WORDS + THREADS - 1) / THREADS : 8;
    const int PASS = PER * THREADS;
    const bool aligned = ((unsigned long long)x & 3) == 0;
    for (int base = 0; base < WORDS; base += PASS) {
        u32 v[PER];
#pragma unroll
        for (int it = 0; it < PER; it++) {
            int w = base + it * THREADS + (int)threadIdx.x, k = 4 * w;
            u32 word = 0;
            if (w < WORDS) {
                if (aligned && k + 3 < K) {
                    word = *(const u32*)(x + k);
                } else {
#pragma unroll
                    for (int b = 0; b < 4; b++)
                        if (k + b < K) word |= (u32)(unsigned char)x[k + b] << (8 * b);
                }
            }
            v[it] = word;
        }
#pragma unroll
        for (int it = 0; it < PER; it++) {
            int w = base + it * THREADS + (int)threadIdx.x;
            if (w < WORDS) stage[permuted_word<CH>(w)] = v[it];
        }
    }
}

// One-row sums of int4 weights against f16 activations (W4A16; kind 1), on the tensor cores
// with the weights as the A operand: lane (g, t) holds row g's nibbles at k offsets
// {16s + 2t, +1, +8, +9} of k-step s, which is the m16n8k16 A fragment of rows g (one tile) and
// g + 8 (a second tile, or zeros), and the activations, the same in every column of B, make each
// column of the result the row's dot product: every lane ends with its row g of both tiles, and
// no shuffles are needed. A sum in f32 FMAs would cost about four instructions per weight
// (unpack, convert, offset, FMA); here unpacking two weights takes about two (a mask and an
// f16x2 subtract or multiply-add, `nibbles_to_half2x4`) and the sums run on the tensor pipe.
// Products are exact and sum in f32 within a group (as in `gemm`'s f16 products), even and odd
// k-steps in two chains of MMAs, scaled once per group; k-slices meet in shared memory in slice
// order, as `gemv`'s int8 sums do. Measured on an H200, 16-layer W4A16 TPOT at batch 1 against
// the tensor-core decode kernel it replaces: mamba2-2.7b 0.632 -> 0.469 ms, mamba-2.8b 0.653 ->
// 0.488, 8-layer mamba2-8b 0.843 -> 0.481 (`bench/RESULTS.md`, twenty-second session).
//
// The row is staged as f16 by `stage_half_permuted`: for each chunk, lane t's sixteen words
// (k-step s's pairs {2t, 2t + 1} and {2t + 8, 2t + 9}, s = 0..7) lie together as four 16-byte
// units, unit i at place i ^ (t / 2), so that the four t-lanes' loads of unit i hit different
// banks (lanes t and t + 2 would otherwise be 128 bytes apart) without padding the row.
template <int K, int GROUP> struct HalfDot {
    enum : int {
        CH = Layout<1>::CH,
        NG = (K + GROUP - 1) / GROUP,
        STEPS = CH / 16,
        WHOLE = GROUP % CH == 0 || NG == 1,
        SPC = WHOLE ? 1 : CH / GROUP,
        LANE_WORDS = 16,
        CHUNK_WORDS = 4 * LANE_WORDS,
        A_WORDS = 2 * STEPS,                                      // a lane's activation words per chunk
        STAGE_WORDS = (K + CH - 1) / CH * CHUNK_WORDS,            // shared words of a staged row
    };
    static_assert(WHOLE || GROUP % 16 == 0, "HalfDot: groups of whole k-steps");
    // The current group's sums, even k-steps in p and odd ones in q: two chains of dependent
    // products instead of one.
    float p[4] = {0.f, 0.f, 0.f, 0.f}, q[4] = {0.f, 0.f, 0.f, 0.f};
    int cur = -1;
    float acc0 = 0.f, acc1 = 0.f, s0 = 1.f, s1 = 1.f;
    static QDEV void load(const u32* stage, int c, int t, u32* a) {
        const u32* ap = stage + c * CHUNK_WORDS + t * LANE_WORDS;
#pragma unroll
        for (int i = 0; i < A_WORDS / 4; i++) {
            uint4 v = *(const uint4*)(ap + 4 * (i ^ (t >> 1)));
            a[4 * i] = v.x; a[4 * i + 1] = v.y; a[4 * i + 2] = v.z; a[4 * i + 3] = v.w;
        }
    }
    static QDEV void scales(const float* row, bool present, int c, float* sc) { chunk_scales<CH, K, GROUP, SPC>(row, present, c, sc); }
    // The stage word of f16 pair p (k = 2p, 2p + 1): chunk p / 64, k-step (p % 64) / 8, lane
    // t = p % 4, low or high pair p % 8 / 4, so word j = 2 k-step + that of lane t's sixteen, in
    // unit (j / 4) ^ (t / 2).
    static QDEV int place(int p) {
        const int c = p / 64, q = p % 64, t = q % 4, j = 2 * (q / 8) + (q % 8) / 4;
        return c * CHUNK_WORDS + t * LANE_WORDS + 4 * ((j / 4) ^ (t >> 1)) + j % 4;
    }
    QDEV void flush() {
        acc0 += s0 * (p[0] + q[0]);
        acc1 += s1 * (p[2] + q[2]);
        p[0] = p[1] = p[2] = p[3] = 0.f;
        q[0] = q[1] = q[2] = q[3] = 0.f;
    }
    // Chunk c of one tile (`w0`) or two (`w1` too, with PAIR), against activation words `a`;
    // `sc0` / `sc1` the chunk's group scales of each tile's row g.
    template <bool PAIR> QDEV void chunk2(const u32* a, int c, const u32* w0, const u32* w1, const float* sc0, const float* sc1) {
        u32 h0[4], h1[4] = {0u, 0u, 0u, 0u};
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            if (s == 0 || (!WHOLE && (s * 16) % GROUP == 0)) {
                const int grp = min((c * CH + s * 16) / GROUP, NG - 1);
                if (grp != cur) {
                    if (cur >= 0) flush();
                    cur = grp;
                    s0 = sc0[WHOLE ? 0 : (s * 16) / GROUP];
                    s1 = PAIR ? sc1[WHOLE ? 0 : (s * 16) / GROUP] : 1.f;
                }
            }
            // Word s / 2 holds k-steps s and s + 1 (nibbles 0, 1 and 2, 3 of each half).
            if (s % 2 == 0) {
                nibbles_to_half2x4(w0[s >> 1], h0);
                if (PAIR) nibbles_to_half2x4(w1[s >> 1], h1);
            }
            const int o = (s & 1) * 2;
            mma_f16(s % 2 ? q : p, h0[o], h1[o], h0[o + 1], h1[o + 1], a[2 * s], a[2 * s + 1]);
        }
    }
    // `GroupDot`'s interface, one tile.
    QDEV void chunk(const u32* a, int c, const u32* w, const float* sc) { chunk2<false>(a, c, w, w, sc, sc); }
    QDEV void chunk(const u32* stage, int c, int t, const u32* w, const float* sc) {
        u32 a[A_WORDS];
        load(stage, c, t, a);
        chunk(a, c, w, sc);
    }
    QDEV float total() {
        if (cur >= 0) flush();
        return acc0;
    }
    // Both tiles' sums of row g, after the last chunk.
    QDEV void totals(float& t0, float& t1) {
        if (cur >= 0) flush();
        t0 = acc0;
        t1 = acc1;
    }
};

// Row `x` (K floats, zero-padded to KP) into `stage` as f16 pairs in `HalfDot`'s layout, in
// passes of up to 8 pairs per thread with every load of a pass issued before its first store.
template <int K, int KP, int THREADS> QDEV void stage_half_permuted(const float* x, u32* stage) {
    typedef HalfDot<K, K> D;
    const int PAIRS = KP / 2;
    const int PER = (PAIRS + THREADS - 1) / THREADS < 8 ? (PAIRS + THREADS - 1) / THREADS : 8;
    const int PASS = PER * THREADS;
    const bool aligned = K % 2 == 0 && ((unsigned long long)x & 7) == 0;
    for (int base = 0; base < PAIRS; base += PASS) {
        u32 v[PER];
#pragma unroll
        for (int it = 0; it < PER; it++) {
            const int p = base + it * THREADS + (int)threadIdx.x, k = 2 * p;
            u32 word = 0;
            if (p < PAIRS && k < K) {
                if (aligned) {
                    const float2 f = *(const float2*)(x + k);
                    word = pack_half2(f.x, f.y);
                } else {
                    word = pack_half2(x[k], k + 1 < K ? x[k + 1] : 0.f);
                }
            }
            v[it] = word;
        }
#pragma unroll
        for (int it = 0; it < PER; it++) {
            const int p = base + it * THREADS + (int)threadIdx.x;
            if (p < PAIRS) stage[D::place(p)] = v[it];
        }
    }
}

// The dot product `gemv` / `gemv_stream` use for weights of KIND, and how they stage the row:
// int8 words for int8 activations, f16 pairs for f32 ones (kind 1).
template <int KIND, int K, int GROUP> struct RowDot { typedef GroupDot<KIND, K, GROUP> type; };
template <int K, int GROUP> struct RowDot<1, K, GROUP> { typedef HalfDot<K, GROUP> type; };
template <int KIND, int K, int KP, int THREADS> QDEV void stage_row(const void* A, int lda, i64 m, u32* stage) {
    if constexpr (KIND == 1) {
        stage_half_permuted<K, KP, THREADS>((const float*)A + m * lda, stage);
    } else {
        stage_permuted<Layout<KIND>::CH, K, KP, THREADS>((const i8*)A + m * lda, stage);
    }
}
// Shared words of a staged row of K for KIND.
template <int KIND, int K> struct StageWords { enum : int { value = (K + Layout<KIND>::CH - 1) / Layout<KIND>::CH * Layout<KIND>::CH / 4 }; };
template <int K> struct StageWords<1, K> { enum : int { value = HalfDot<K, K>::STAGE_WORDS }; };

// The RMS norm -> quantize row kernel before a one-row product (a layer's first norm before
// in_proj), run by every block of that product on its own copy of the row instead of by a
// launch of its own: `x` is the row before the norm, `weight` the norm's weight (or null; the
// plan passes it only where NORM_W), `q_scale` the quantize's scale (per column where NORM_QVEC).
// Each block loads the row (K floats from L2) after its dependency wait, in place of the int8 row
// it would otherwise stage, and writes the quantized row straight into its permuted stage.
struct RowNorm {
    Opnd x;
    const float* weight;
    const float* q_scale;
    int q_vec;
};
// The row kernel's arithmetic exactly (`row_load`, `row_rms_norm`, `block_sum`, `row_quantize`
// with RT threads): thread i of RT sums the squares of elements i, i + RT, ... in that order,
// warps of 32 such sums meet by the same shuffle tree, and the RT / 32 warp sums by the same last
// warp_sum. This block's THREADS threads each play RT / THREADS of those threads (same lanes,
// warps THREADS / 32 apart), so the row's int8 values are the row kernel's bit for bit. Bytes go
// into `stage_permuted`'s layout.
//
// Every block of the product repeats this for the whole row (two to three blocks per SM), so its
// issue time is what counts: where K is a multiple of RT no element is past K, a byte's place in
// the stage is its thread's place plus a constant (shifting an element by whole chunks shifts
// its place by as much), and the quantize multiplies by the scale's inverse
// (`quantize_with_inverse`).
// The row's elements this thread plays (x[j][e] = element threadIdx.x + j THREADS + e RT, zero
// past K) and the norm's 1 / rms, by the row kernel's arithmetic (see `norm_quantize_permuted`).
template <int K, int RT, int THREADS, int V, int E>
QDEV float norm_row_inverse(const RowNorm& nm, float eps, i64 m, float (&x)[V][E], float* scratch) {
    static_assert(RT % THREADS == 0 && RT <= 1024, "norm prologue: the row kernel's threads must be a multiple of the product's");
    static_assert(V == RT / THREADS && E == (K + RT - 1) / RT, "norm prologue: the row kernel's elements per thread");
    constexpr bool FULL = K % RT == 0;                            // no element past K
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < V; j++)
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int i = (int)threadIdx.x + j * THREADS + e * RT;
            x[j][e] = FULL || i < K ? ld(nm.x, m, i) : 0.f;
        }
#pragma unroll
    for (int j = 0; j < V; j++) {
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int i = (int)threadIdx.x + j * THREADS + e * RT;
            if (FULL || i < K) s += x[j][e] * x[j][e];
        }
        s = warp_sum(s);
        if (lane == 0) scratch[warp + j * (THREADS / 32)] = s;
    }
    __syncthreads();
    const float total = warp_sum(lane < RT / 32 ? scratch[lane] : 0.f);
    return rsqrtf(total / (float)K + eps);
}

template <int K, int KP, int CH, int RT, int THREADS, bool NORM_W, bool NORM_QVEC>
QDEV void norm_quantize_permuted(const RowNorm& nm, float eps, float q_scale0, float q_inv0, i64 m, u32* stage, float* scratch) {
    static_assert(K % 4 == 0, "norm prologue: whole words of k");
    const int V = RT / THREADS, E = (K + RT - 1) / RT;
    constexpr bool FULL = K % RT == 0;                            // no element past K
    constexpr bool SHIFTS = THREADS % CH == 0 && RT % CH == 0;    // places move with whole chunks
    float x[V][E];
    const float inv = norm_row_inverse<K, RT, THREADS>(nm, eps, m, x, scratch);
    i8* bytes = (i8*)stage;
    const unsigned tid = threadIdx.x;
    const unsigned place = 4u * (unsigned)permuted_word<CH>((int)(tid / 4u)) + tid % 4u;
#pragma unroll
    for (int j = 0; j < V; j++)
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int off = j * THREADS + e * RT;
            const int i = (int)tid + off;
            if (FULL || i < K) {
                const float w = NORM_W ? nm.weight[i] : 1.f;
                const float v = x[j][e] * inv * w;
                const unsigned at = SHIFTS ? place + (unsigned)off : 4u * (unsigned)permuted_word<CH>(i / 4) + (unsigned)(i % 4);
                bytes[at] = NORM_QVEC ? quantize_one(v, nm.q_scale[i]) : quantize_with_inverse(v, q_scale0, q_inv0);
            }
        }
    // Words past K (K is a multiple of 4, so no word straddles it) are the zero padding.
    for (int w = K / 4 + (int)threadIdx.x; w < KP / 4; w += THREADS) stage[permuted_word<CH>(w)] = 0u;
}

// The RMS norm row kernel before a one-row product of f32 activations (W4A16: load, norm, store),
// run by every block of that product as `norm_quantize_permuted` runs the int8 one: the same
// arithmetic as the row kernel, each normed element converted to f16 into `stage_half_permuted`'s
// layout, so that the stage, and the product, are those of the row kernel's output bit for bit.
template <int K, int KP, int RT, int THREADS, bool NORM_W>
QDEV void norm_half_permuted(const RowNorm& nm, float eps, i64 m, u32* stage, float* scratch) {
    typedef HalfDot<K, K> D;
    static_assert(K % 2 == 0, "norm prologue: whole f16 pairs of k");
    const int V = RT / THREADS, E = (K + RT - 1) / RT;
    constexpr bool FULL = K % RT == 0;
    float x[V][E];
    const float inv = norm_row_inverse<K, RT, THREADS>(nm, eps, m, x, scratch);
    unsigned short* halves = (unsigned short*)stage;
#pragma unroll
    for (int j = 0; j < V; j++)
#pragma unroll
        for (int e = 0; e < E; e++) {
            const int i = (int)threadIdx.x + j * THREADS + e * RT;
            if (FULL || i < K) {
                const float w = NORM_W ? nm.weight[i] : 1.f;
                halves[2 * D::place(i / 2) + (i & 1)] = (unsigned short)(pack_half2(x[j][e] * inv * w, 0.f) & 0xFFFFu);
            }
        }
    // Pairs past K (K is even, so no pair straddles it) are the zero padding.
    for (int p = K / 2 + (int)threadIdx.x; p < KP / 2; p += THREADS) stage[D::place(p)] = 0u;
}

// A block's weight tiles (TILE_BYTES each, consecutive in W) and their scales (SCALE_FLOATS
// each, consecutive; none when `scales` is null) copied into shared memory, all requested at
// once and before the dependency wait (weights are never written), with no registers held for
// bytes in flight. On sm_90 one thread hands each tile, and its scales, to the bulk-copy engine,
// which completes the tile's mbarrier; a warp waits for its own tile only (`tiles_wait`).
// Earlier GPUs have no bulk copies: every thread issues 16-byte `cp.async` copies, and the block
// waits for all of them before its barrier (`tiles_landed`).
QDEV u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
// Four 8x8 tiles of 16-bit elements (a 16-row int8 A fragment of m16n8k32: rows 0-7 and 8-15 of
// bytes 0-15, then of bytes 16-31) from shared memory; lane l gives the address of row l % 16,
// at byte 16 (l / 16).
QDEV void ldmatrix_x4(const void* p, u32* a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
// One float copied from global to shared memory without passing through a register (cp.async,
// sm_80 and later; a load and a store before), so that a thread can request many before it waits
// for any; `copies_landed` waits for this thread's copies.
QDEV void copy_f32(float* dst, const float* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
#else
    *dst = *src;
#endif
}
QDEV void copies_landed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
// The copies this thread issued since the last commit, as one group (`cp_async_wait`).
QDEV void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Until at most PENDING of this thread's latest commit groups are still in flight.
template <int PENDING> QDEV void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
#endif
}
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// An mbarrier that one arrival (the thread that issues a tile's copies) plus the copies' bytes
// complete; `bars_visible` publishes initialized barriers to the copy engine and the block.
QDEV void bar_init(unsigned long long* bar) { asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory"); }
QDEV void bars_visible() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// `tiles` tiles from `tile` on (TILE_BYTES each, consecutive in W) and their SCALE_FLOATS scales
// each (none when `scales` is null) into `sw` / `ss` through the bulk-copy engine, completing
// `bar`'s current phase.
template <int TILE_BYTES, int SCALE_FLOATS>
QDEV void bulk_tile(uint4* sw, float* ss, const uint4* W, const float* scales, int tile, unsigned long long* bar, int tiles = 1) {
    u32 b = smem_addr(bar), tx = tiles * (TILE_BYTES + (scales ? SCALE_FLOATS * 4 : 0));
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(tx) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(sw)),
                 "l"(W + (i64)tile * (TILE_BYTES / 16)), "r"(tiles * TILE_BYTES), "r"(b)
                 : "memory");
    if (scales)
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(ss)),
                     "l"(scales + (i64)tile * SCALE_FLOATS), "r"(tiles * SCALE_FLOATS * 4), "r"(b)
                     : "memory");
}
// Until `bar`'s phase of this parity has completed.
QDEV void bar_wait(unsigned long long* bar, u32 parity) {
    asm volatile(
        "{\n .reg .pred landed;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 landed, [%0], %1;\n @!landed bra WAIT;\n}\n" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && __CUDA_ARCH__ < 900
// Tiles [first, first + count) and their scales into `sw` / `ss` by 16-byte `cp.async` copies
// spread over the block's threads (GPUs without the bulk-copy engine); committed by the caller.
template <int TILE_BYTES, int SCALE_FLOATS>
QDEV void async_tiles(uint4* sw, float* ss, const uint4* W, const float* scales, int first, int count) {
    const char* wsrc = (const char*)(W + (i64)first * (TILE_BYTES / 16));
    for (int off = 16 * threadIdx.x; off < count * TILE_BYTES; off += 16 * blockDim.x)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr((char*)sw + off)), "l"(wsrc + off) : "memory");
    if (scales) {
        const char* ssrc = (const char*)(scales + (i64)first * SCALE_FLOATS);
        for (int off = 16 * threadIdx.x; off < count * SCALE_FLOATS * 4; off += 16 * blockDim.x)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr((char*)ss + off)), "l"(ssrc + off) : "memory");
    }
}
#endif
template <int WN, int TILE_BYTES, int SCALE_FLOATS>
QDEV void tiles_fetch(uint4* sw, float* ss, const uint4* W, const float* scales, int first, int count, unsigned long long* bars) {
    static_assert(TILE_BYTES % 16 == 0 && SCALE_FLOATS % 4 == 0, "bulk copies move 16-byte units");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x != 0) return;
    for (int i = 0; i < WN; i++) bar_init(&bars[i]);
    bars_visible();
    for (int i = 0; i < count; i++) bulk_tile<TILE_BYTES, SCALE_FLOATS>(sw + i * (TILE_BYTES / 16), ss + i * SCALE_FLOATS, W, scales, first + i, &bars[i]);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    async_tiles<TILE_BYTES, SCALE_FLOATS>(sw, ss, W, scales, first, count);
    cp_async_commit();
#endif
}
// Before the block's barrier: on GPUs without bulk copies, this thread's copies have landed.
QDEV void tiles_landed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    copies_landed();
#endif
}
// After the block's barrier: on sm_90, tile `i`'s bytes have landed.
QDEV void tiles_wait(unsigned long long* bars, int i) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    bar_wait(&bars[i], 0);
#endif
}

// ---------------------------------------------------------------------------------------------
// Products of many rows (prefill, and batched calls past SMALL_ROWS rows).
//
// 16 bytes copied from global to shared memory without passing through registers, the bytes
// past `bytes` (0 to 16) zero-filled; `src` must be 16-byte aligned where `bytes` > 0.
QDEV void copy16_zfill(void* dst, const void* src, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes) : "memory");
#else
    for (int b = 0; b < 16; b++) ((unsigned char*)dst)[b] = b < bytes ? ((const unsigned char*)src)[b] : 0;
#endif
}

// out[m, n] as `gemm` computes it, for many rows: a block of WN warps covers 16 MT rows and
// 8 NT WN columns, each warp all the block's rows and NT 8-column tiles. The block's rows of A
// come into shared memory by `cp.async`, SK columns (a slab) at a time, STAGES slabs in flight,
// once for all its warps (as int8, or as the f32 they are; each warp converts its fragments to
// f16). Weights stream through each warp's ring of DEPTH chunks as in `gemm`. A staged row is
// padded by 32 bytes (f32) or 16 (int8), so that the eight rows a fragment load reads start on
// different banks. The sums are `gemm`'s at WK = 1 bit for bit. Under Nsight Compute (2-layer
// mamba-2.8b W4A8, H200) its in_proj had executed twelve instructions per mma, at 1.9 warps per
// scheduler; what removes most of them, and what keeps its barriers off the critical path:
// - Which rows and 16-byte units a thread copies into a slab is worked out once: a slab then
//   costs a thread one address and one copy per unit (the copy loop's index arithmetic had been
//   a fifth of the instructions).
// - int8 fragments come from shared memory by `ldmatrix`, one instruction for a 16-row tile.
// - int4 weights for int8 mma (kind 3) are used as 16 times their value: a nibble moved to the
//   top of its byte is that, as a signed byte, in one or two instructions instead of a sign
//   extension's five. The group's scale is taken as a sixteenth of it (a power of two: exact),
//   so that scale times sum is the same product.
// - Where every chunk holds whole weight groups, a group's first mma starts from zero: no
//   registers to clear after each group is folded into the f32 sums.
// - A slab's barrier comes at the previous slab's last k-step, once its fragments are loaded,
//   not at the slab's first: the last mma of a chunk, its groups' folds and the next chunk's
//   first mma then run without a barrier between them. On 4-layer models (1024-token TTFT,
//   H200) this was the difference between slower and faster than before the other changes:
//   mamba-2.8b W4A8 2.75 -> 2.64 ms (2.89 with the barrier at the first step), W4A16 3.91 ->
//   3.14, FP16 3.90 -> 3.75, mamba2-2.7b W4A8 2.81 -> 2.63.
template <int KIND, int K, int N, int GROUP, int MT, int NT, int WN, int DEPTH, int SK, int STAGES>
QDEV void gemm_tiled(const void* A, int lda, const uint4* W, const float* scales, float act_scale, const float* bias,
                     const float* resid, int ldr, float* out, int ldo, int M) {
    typedef Layout<KIND> L;
    constexpr int KC = (K + L::CH - 1) / L::CH;
    constexpr int STEPS = L::CH / L::KSTEP;
    constexpr int NG = (K + GROUP - 1) / GROUP;
    constexpr bool INT = KIND >= 2;
    // One weight group over all of k (f16 weights, per-channel scales): the mma sums are the
    // accumulator until the epilogue scales them once.
    constexpr bool ONE_GROUP = GROUP >= K;
    // Every group starts at the same k-steps of every chunk.
    constexpr bool FIXED_GROUPS = !ONE_GROUP && L::CH % GROUP == 0 && GROUP % L::KSTEP == 0;
    constexpr int GROUP_STEPS = FIXED_GROUPS ? GROUP / L::KSTEP : 1;
    constexpr float SCALE_UNIT = KIND == 3 ? 0.0625f : 1.f;  // int4 nibbles used as 16 times their value
    constexpr int THREADS = WN * 32, BM = 16 * MT;
    constexpr int ES = INT ? 1 : 4;  // bytes of one staged activation
    constexpr int ROW_BYTES = SK * ES, PITCH = ROW_BYTES + (INT ? 16 : 32), UNITS = ROW_BYTES / 16;
    constexpr int SLABS = KC * L::CH / SK;
    static_assert(L::CH % SK == 0 && SK % L::KSTEP == 0 && ROW_BYTES % 16 == 0, "a chunk holds whole slabs of whole k-steps");
    // A thread copies the same units of every slab: THREADS / UNITS rows apart.
    constexpr bool REGULAR_COPIES = THREADS % UNITS == 0 && (BM * UNITS) % THREADS == 0;
    constexpr int ROW_STEP = THREADS / UNITS, COPIES = (BM * UNITS) / THREADS;
    constexpr bool WHOLE_K = K == KC * L::CH;  // no slab holds columns past k
    __shared__ __align__(16) unsigned char stage[STAGES * BM * PITCH];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int m_base = blockIdx.y * BM;
    const int nt_base = (blockIdx.x * WN + warp) * NT;
    const int N_TILES = (N + 7) / 8;

    // A warp's tiles past the last one read the last one's weights: their columns are never stored.
    int tile_at[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) tile_at[j] = min(nt_base + j, N_TILES - 1) * KC * 32 + lane;
    auto load_chunk = [&](int c, uint4* w) {
        if (c < KC) {
#pragma unroll
            for (int j = 0; j < NT; j++) w[j] = W[tile_at[j] + c * 32];
        }
    };
    uint4 ring[DEPTH][NT];
#pragma unroll
    for (int d = 0; d < DEPTH; d++) load_chunk(d, ring[d]);
    pdl_enter();

    // Whole 16-byte copies where every staged unit starts on 16 bytes; otherwise (a view at an
    // odd column) byte by byte, synchronously.
    const bool aligned = ((unsigned long long)A & 15) == 0 && ((i64)lda * ES) % 16 == 0;
    const int copy_row = threadIdx.x / UNITS, copy_col = (threadIdx.x % UNITS) * 16;
    const unsigned char* copy_src = (const unsigned char*)A + (i64)(m_base + copy_row) * lda * ES + copy_col;
    const i64 copy_src_step = (i64)ROW_STEP * lda * ES;
    // Bytes of the 16-byte unit at column k of a row (those past k or past M are zero-filled).
    auto unit_bytes = [&](bool row, int k) { return row ? min(max(K - k, 0), 16 / ES) * ES : 0; };
    auto load_slab = [&](int j) {
        if (j < SLABS) {
            unsigned char* dst = stage + (j % STAGES) * (BM * PITCH);
            const int k0 = j * SK;
            if (REGULAR_COPIES && aligned) {
#pragma unroll
                for (int q = 0; q < COPIES; q++) {
                    const bool row = m_base + copy_row + q * ROW_STEP < M;
                    const int bytes = WHOLE_K ? (row ? 16 : 0) : unit_bytes(row, k0 + copy_col / ES);
                    const unsigned char* src = copy_src + q * copy_src_step + (i64)k0 * ES;
                    copy16_zfill(dst + (copy_row + q * ROW_STEP) * PITCH + copy_col, bytes ? src : (const unsigned char*)A, bytes);
                }
            } else {
                for (int u = threadIdx.x; u < BM * UNITS; u += THREADS) {
                    const int r = u / UNITS, cb = (u % UNITS) * 16;
                    const int m = m_base + r, k = k0 + cb / ES;
                    const int bytes = unit_bytes(m < M, k);
                    const unsigned char* src = (const unsigned char*)A + ((i64)(bytes ? m : 0) * lda + (bytes ? k : 0)) * ES;
                    unsigned char* d = dst + r * PITCH + cb;
                    if (aligned) {
                        copy16_zfill(d, src, bytes);
                    } else {
#pragma unroll
                        for (int b = 0; b < 16; b++) d[b] = b < bytes ? src[b] : 0;
                    }
                }
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int j = 0; j < STAGES - 1; j++) load_slab(j);

    float acc[MT][NT][4];
    int pi[MT][NT][4];
    float pf[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { acc[i][j][e] = 0.f; pi[i][j][e] = 0; pf[i][j][e] = 0.f; }
    float gs[NT][2];
    auto load_scale = [&](int grp, int j) {
        const int n0 = (nt_base + j) * 8 + t * 2;
        const bool ok = scales && nt_base + j < N_TILES;
        gs[j][0] = ok ? scales[(i64)n0 * NG + grp] * SCALE_UNIT : SCALE_UNIT;
        gs[j][1] = ok ? scales[(i64)(n0 + 1) * NG + grp] * SCALE_UNIT : SCALE_UNIT;
    };
    auto load_scales = [&](int grp) {
#pragma unroll
        for (int j = 0; j < NT; j++) load_scale(grp, j);
    };
    // Sums of the group that ended into the f32 accumulator, with that group's scales.
    auto fold = [&](int i, int j) {
#pragma unroll
        for (int e = 0; e < 4; e++) acc[i][j][e] += gs[j][e & 1] * (INT ? (float)pi[i][j][e] : pf[i][j][e]);
    };
    auto flush = [&]() {
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < MT; i++) {
                fold(i, j);
#pragma unroll
                for (int e = 0; e < 4; e++) { pi[i][j][e] = 0; pf[i][j][e] = 0.f; }
            }
    };
    int cur_group = 0;
    load_scales(0);

    const unsigned char* slab = stage;
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    load_slab(STAGES - 1);
    const int ldsm_offset = (lane & 15) * PITCH + (lane >> 4) * 16;  // this lane's row of an `ldmatrix` tile
    u32 halves[NT][4];  // kind 1: both k-steps of a weight word, unpacked at the even one
    for (int c0 = 0; c0 < KC; c0 += DEPTH) {
#pragma unroll
        for (int d = 0; d < DEPTH; d++) {
            const int c = c0 + d;
            if (c >= KC) break;
            uint4 wv[NT];
#pragma unroll
            for (int j = 0; j < NT; j++) wv[j] = ring[d][j];
            load_chunk(c + DEPTH, ring[d]);
#pragma unroll
            for (int s = 0; s < STEPS; s++) {
                const int kb = c * L::CH + s * L::KSTEP;
                constexpr int SLAB_STEPS = SK / L::KSTEP;
                if (s % SLAB_STEPS == 0) slab = stage + (kb / SK % STAGES) * (BM * PITCH);
                const bool group_start = FIXED_GROUPS && s % GROUP_STEPS == 0;
                const bool group_end = FIXED_GROUPS && s % GROUP_STEPS == GROUP_STEPS - 1;
                if constexpr (!ONE_GROUP && !FIXED_GROUPS) {
                    const int grp = kb / GROUP;
                    if (grp != cur_group) {
                        flush();
                        cur_group = grp;
                        load_scales(grp);
                    }
                }
                const int kl = (s % SLAB_STEPS) * L::KSTEP;
                u32 a[MT][4];
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    if constexpr (INT) {
                        ldmatrix_x4(slab + 16 * i * PITCH + kl + ldsm_offset, a[i]);
                    } else {
                        const unsigned char* r0 = slab + (16 * i + g) * PITCH;
                        const unsigned char* r1 = r0 + 8 * PITCH;
                        const float2 v0 = *(const float2*)(r0 + (kl + 2 * t) * 4), v1 = *(const float2*)(r1 + (kl + 2 * t) * 4);
                        const float2 v2 = *(const float2*)(r0 + (kl + 8 + 2 * t) * 4), v3 = *(const float2*)(r1 + (kl + 8 + 2 * t) * 4);
                        a[i][0] = pack_half2(v0.x, v0.y);
                        a[i][1] = pack_half2(v1.x, v1.y);
                        a[i][2] = pack_half2(v2.x, v2.y);
                        a[i][3] = pack_half2(v3.x, v3.y);
                    }
                }
                // The slab's last fragments are in registers: every warp past this barrier is
                // done with the slab, which the copies after it refill; the next slab has landed.
                if (s % SLAB_STEPS == SLAB_STEPS - 1) {
                    cp_async_wait<STAGES - 2>();
                    __syncthreads();
                    load_slab(kb / SK + STAGES);
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    u32 b0, b1;
                    if constexpr (KIND == 1) {
                        if (s % 2 == 0) {
                            const u32 w[4] = {wv[j].x, wv[j].y, wv[j].z, wv[j].w};
                            nibbles_to_half2x4(w[s >> 1], halves[j]);
                        }
                        b0 = halves[j][(s & 1) * 2];
                        b1 = halves[j][(s & 1) * 2 + 1];
                    } else if constexpr (KIND == 3) {
                        const u32 w[4] = {wv[j].x, wv[j].y, wv[j].z, wv[j].w};
                        b0 = (w[s] << 4) & 0xF0F0F0F0u;
                        b1 = w[s] & 0xF0F0F0F0u;
                    } else {
                        b_frag<KIND>(wv[j], s, b0, b1);
                    }
#pragma unroll
                    for (int i = 0; i < MT; i++) {
                        if (group_start) {
                            if constexpr (INT) mma_s8_from_zero(pi[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                            else mma_f16_from_zero(pf[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                        } else {
                            if constexpr (INT) mma_s8(pi[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                            else mma_f16(pf[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
                        }
                    }
                }
                if (group_end) {
#pragma unroll
                    for (int j = 0; j < NT; j++) {
#pragma unroll
                        for (int i = 0; i < MT; i++) fold(i, j);
                        load_scale(min(kb / GROUP + 1, NG - 1), j);
                    }
                }
            }
        }
    }
    if constexpr (!FIXED_GROUPS) flush();
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = frag_row(m_base, i, g, e), n = frag_col(nt_base, j, t, e);
                if (m < M && n < N) {
                    float v = acc[i][j][e] * act_scale + (bias ? bias[n] : 0.f);
                    if (resid) v = resid[(i64)m * ldr + n] + v;
                    out[(i64)m * ldo + n] = v;
                }
            }
}

// Column n of row m of a one-row product's output; a conv input column also runs its conv step.
template <int CONV_LO, int CONV_C, int CONV_KW, bool CONV_SILU>
QDEV void store_column(float v, float* out, int ldo, int m, int n, const ConvStep& conv) {
    out[(i64)m * ldo + n] = v;
    if (CONV_C > 0 && n >= CONV_LO && n < CONV_LO + CONV_C) conv_step_column<(CONV_C > 0 ? CONV_C : 1), CONV_KW, CONV_SILU>(conv, n - CONV_LO, v, m);
}

// Same contract as `gemm` (out = act_scale * sum_g scale * group sum + bias (+ resid)), row
// blockIdx.y, tiles blockIdx.x * WN + (warp % WN). GROUP is a multiple of the chunk (or the whole
// row: one group), or a multiple of 32 dividing the chunk; the generator checks.
//
// BULK (1): the block's tiles and their scales come into dynamic shared memory through
// `tiles_fetch` (WN tiles of KC chunks, then WN x 8 rows of NG scales) instead of each warp's
// register ring and L2 prefetch; the arithmetic, and so the result, is the same. BULK = 2: each
// warp sums two adjacent tiles of its k-slice (`PairDot`; the block holds 2 WN tiles), reading a
// chunk's activations once for both, where the ring of shared-memory reads bounded the sums;
// lanes t = 0 and 1 store the two tiles' columns. The same result again, bit for bit.
//
// NORM_T > 0: the row is `norm`'s (the RMS norm -> quantize row kernel of NORM_T threads that
// would otherwise run before this product, or for KIND 1 the RMS norm -> store one; `A` is not
// read), normed and quantized, or converted to f16, by every block (`norm_quantize_permuted`,
// `norm_half_permuted`).
//
// KIND 1 (int4 weights, f32 activations): the row is staged as f16 and summed by `HalfDot`;
// BULK = 2 sums two tiles per warp as one m16n8k16 product, and every lane holds both tiles'
// sums of its row, so lanes t = 0 and 1 store them as with `PairDot`.
template <int KIND, int K, int N, int GROUP, int WN, int WK, int DEPTH, int BULK, int CONV_LO = 0, int CONV_C = 0, int CONV_KW = 1, bool CONV_SILU = false,
          int NORM_T = 0, bool NORM_W = false, bool NORM_QVEC = false>
QDEV void gemv(const void* A, int lda, const uint4* W, const float* scales, float act_scale, const float* bias,
               const float* resid, int ldr, float* out, int ldo, int M, const ConvStep& conv = ConvStep{}, const RowNorm& norm = RowNorm{}, float norm_eps = 0.f) {
    static_assert(KIND >= 1 && KIND <= 3, "gemv: int4 or int8 weights");
    typedef typename RowDot<KIND, K, GROUP>::type Dot;
    typedef Layout<KIND> L;
    const int CH = L::CH;
    const int KC = (K + CH - 1) / CH;
    const int KP = KC * CH;
    const int NG = (K + GROUP - 1) / GROUP;
    const int SPC = Dot::SPC;                          // scales per chunk
    const int N_TILES = (N + 7) / 8;
    // BULK = 2: each warp sums two tiles (`PairDot`, or `HalfDot`'s pair), and lane t < 2 stores
    // tile t's column.
    constexpr int TW = BULK > 1 ? 2 : 1;
    static_assert(BULK >= 0 && BULK <= 2, "gemv: BULK is 0 (ring), 1 or 2 (tiles per warp)");
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int wn = warp % WN, wk = warp / WN;
    int g = lane >> 2, t = lane & 3;
    const int warp_tile = (blockIdx.x * WN + wn) * TW;   // the warp's first tile
    int nt = warp_tile + (t & (TW - 1));               // the tile whose column this lane stores
    int m = blockIdx.y;
    if (m >= M) return;                                // block-uniform
    bool tile_ok = nt < N_TILES;                       // warp-uniform where TW = 1
    int n = nt * 8 + g;
    int c_begin = (KC * wk) / WK, c_end = (KC * (wk + 1)) / WK;
    const uint4* wt = W + (i64)nt * KC * 32 + lane;
    const float* srow = scales && tile_ok ? scales + (i64)n * NG : nullptr;

    extern __shared__ __align__(128) unsigned char tiles[];
    __shared__ __align__(8) unsigned long long tile_bars[BULK ? WN * TW : 1];
    uint4 ring[BULK ? 1 : DEPTH];
    float ring_scale[BULK ? 1 : DEPTH][SPC];
    auto request = [&](int c, int d) {
        bool ok = tile_ok && c < c_end;
        ring[d] = ok ? wt[(i64)c * 32] : make_uint4(0, 0, 0, 0);
        Dot::scales(srow, ok && srow, c, ring_scale[d]);
    };
    if constexpr (BULK) {
        int first = blockIdx.x * WN * TW;
        tiles_fetch<WN * TW, KC * 512, 8 * NG>((uint4*)tiles, (float*)(tiles + WN * TW * KC * 512), W, scales, first, min(WN * TW, N_TILES - first), tile_bars);
    } else {
#pragma unroll
        for (int d = 0; d < DEPTH; d++) request(c_begin + d, d);
        if (tile_ok) {
            // The slice's chunks past the ring are contiguous: 4 lines of 128 bytes each.
            const char* rest = (const char*)(W + ((i64)nt * KC + c_begin + DEPTH) * 32);
            for (int line = lane; line < (c_end - c_begin - DEPTH) * 4; line += 32) prefetch_l2(rest + line * 128);
        }
    }
    const int CONV_W = CONV_C > 0 ? CONV_C : 1;
    const bool conv_column = CONV_C > 0 && wk == 0 && t < TW && tile_ok && n >= CONV_LO && n < CONV_LO + CONV_C;
    // Value-initialized: left undefined on the other lanes, the struct was partly spilled to the
    // stack before the wait (mamba2-2.7b's in_proj at ptxas's own register choice, sm_90), and
    // that store waited for the state's load, delaying the warp's wait by a memory round trip.
    ConvColumn<CONV_KW> conv_pre{};
    if (conv_column) conv_pre = conv_column_load<CONV_W, CONV_KW, true>(conv, n - CONV_LO, m);
    const float norm_q_scale0 = NORM_T > 0 && KIND >= 2 && !NORM_QVEC ? norm.q_scale[0] : 0.f;
    pdl_enter();
    // After the wait: used before it, the scale's load would hold the wait back by its round trip.
    const float norm_q_inv0 = NORM_T > 0 && KIND >= 2 && !NORM_QVEC ? 1.f / norm_q_scale0 : 0.f;
    float early_bias = 0.f, early_resid = 0.f;
    if (wk == 0 && t < TW && tile_ok && n < N) {
        early_bias = bias ? bias[n] : 0.f;
        early_resid = resid ? resid[(i64)m * ldr + n] : 0.f;
    }
    __shared__ __align__(16) u32 stage[StageWords<KIND, K>::value];
    if constexpr (NORM_T > 0) {
        __shared__ float norm_scratch[32];
        if constexpr (KIND == 1) norm_half_permuted<K, KP, NORM_T, WN * WK * 32, NORM_W>(norm, norm_eps, m, stage, norm_scratch);
        else norm_quantize_permuted<K, KP, CH, NORM_T, WN * WK * 32, NORM_W, NORM_QVEC>(norm, norm_eps, norm_q_scale0, norm_q_inv0, m, stage, norm_scratch);
    } else {
        stage_row<KIND, K, KP, WN * WK * 32>(A, lda, m, stage);
    }
    if constexpr (BULK) tiles_landed();
    __syncthreads();

    Dot dot;
    float pair_acc = 0.f;
    if constexpr (BULK == 1) {
        if (tile_ok) {
            tiles_wait(tile_bars, wn);
            QUAMBA_TRACE_LANDED;
            const uint4* tw = (const uint4*)tiles + wn * KC * 32 + lane;
            const float* ts = (const float*)(tiles + WN * KC * 512) + (wn * 8 + g) * NG;
            for (int c = c_begin; c < c_end; c++) {
                uint4 v = tw[c * 32];
                u32 w[4] = {v.x, v.y, v.z, v.w};
                float sc[SPC];
                dot.scales(ts, scales, c, sc);
                dot.chunk(stage, c, t, w, sc);
            }
        }
    } else if constexpr (BULK == 2) {
        if (warp_tile < N_TILES) {                     // warp-uniform
            const bool second = warp_tile + 1 < N_TILES;
            tiles_wait(tile_bars, wn * TW);
            if (second) tiles_wait(tile_bars, wn * TW + 1);
            QUAMBA_TRACE_LANDED;
            // A missing second tile is never fetched: the first one's bytes stand in for it,
            // and its column is never stored.
            const uint4* tw0 = (const uint4*)tiles + wn * TW * KC * 32 + lane;
            const uint4* tw1 = second ? tw0 + KC * 32 : tw0;
            if constexpr (KIND == 1) {
                // Every lane sums row g of both tiles.
                const float* ts0 = (const float*)(tiles + WN * TW * KC * 512) + (wn * TW * 8 + g) * NG;
                const float* ts1 = second ? ts0 + 8 * NG : ts0;
                for (int c = c_begin; c < c_end; c++) {
                    uint4 v0 = tw0[c * 32], v1 = tw1[c * 32];
                    u32 w0[4] = {v0.x, v0.y, v0.z, v0.w}, w1[4] = {v1.x, v1.y, v1.z, v1.w};
                    float sc0[SPC], sc1[SPC];
                    Dot::scales(ts0, scales, c, sc0);
                    Dot::scales(ts1, scales, c, sc1);
                    u32 a[Dot::A_WORDS];
                    Dot::load(stage, c, t, a);
                    dot.template chunk2<true>(a, c, w0, w1, sc0, sc1);
                }
                float t0, t1;
                dot.totals(t0, t1);
                pair_acc = (t & 1) ? t1 : t0;
            } else {
                const float* ts = scales ? (const float*)(tiles + WN * TW * KC * 512) + ((wn * TW + (second ? (t & 1) : 0)) * 8 + g) * NG : nullptr;
                PairDot<KIND, K, GROUP> pair;
                for (int c = c_begin; c < c_end; c++) {
                    uint4 v0 = tw0[c * 32], v1 = tw1[c * 32];
                    u32 w0[4] = {v0.x, v0.y, v0.z, v0.w}, w1[4] = {v1.x, v1.y, v1.z, v1.w};
                    pair.chunk(stage, c, t, w0, w1, ts);
                }
                pair_acc = pair.total(t);
            }
        }
    } else {
        for (int c0 = c_begin; c0 < c_end; c0 += DEPTH) {
#pragma unroll
            for (int d = 0; d < DEPTH; d++) {
                const int c = c0 + d;
                if (c >= c_end) break;
                u32 w[4] = {ring[d].x, ring[d].y, ring[d].z, ring[d].w};
                float sc[SPC];
#pragma unroll
                for (int q = 0; q < SPC; q++) sc[q] = ring_scale[d][q];
                if (c + DEPTH < c_end) request(c + DEPTH, d);
                dot.chunk(stage, c, t, w, sc);
            }
        }
    }
    float acc = BULK == 2 ? pair_acc : dot.total();

    if (WK > 1) {
        __shared__ float red[WK][WN * TW][8];
        const int slot = wn * TW + (t & (TW - 1));
        if (t < TW) red[wk][slot][g] = acc;
        __syncthreads();
        if (wk != 0) return;
        acc = red[0][slot][g];
#pragma unroll
        for (int s = 1; s < WK; s++) acc += red[s][slot][g];
    }
    QUAMBA_TRACE_SUMMED;
    if (t < TW && tile_ok && n < N) {
        float v = acc * act_scale + early_bias;
        if (resid) v = early_resid + v;
        out[(i64)m * ldo + n] = v;
        if (conv_column) conv_column_step<CONV_W, CONV_KW, CONV_SILU>(conv, conv_pre, n - CONV_LO, v, m);
    }
}

// A one-row product whose weights stream through shared memory, for products whose tiles one
// wave of `gemv`'s bulk blocks cannot hold at once (there, a block computes only after its whole
// tiles have landed, and later waves start from scratch). The grid is what the GPU holds at
// once (the runtime sizes it by the card's SMs: `Grid::Resident`), and block b takes the tiles
// [b N_TILES / grid, (b + 1) N_TILES / grid), TPS consecutive tiles per stage of a ring of
// STAGES in dynamic shared memory: the first STAGES are requested before the dependency wait,
// and each later one as soon as every warp is done with the stage it reuses. Each of the WK
// warps sums one k-slice of every tile of a stage, loading each chunk's activations once for
// the stage's tiles; the slices meet in shared memory in slice order, as `gemv`'s do with
// WN = 1 (the same WK gives the same result). Sums wait in shared memory, RES tiles at most,
// for an epilogue (bias, residual, store, conv step) run by all threads at once, so that its
// global loads never stall the stream. Where that epilogue runs once with thread i on the
// block's column i (at most RES tiles, no more columns than threads: every plan's shapes), each
// thread loads its column's bias and conv operands before the dependency wait, as `gemv` does.
template <int KIND, int K, int N, int GROUP, int WK, int TPS, int STAGES, int CONV_LO = 0, int CONV_C = 0, int CONV_KW = 1, bool CONV_SILU = false>
QDEV void gemv_stream(const void* A, int lda, const uint4* W, const float* scales, float act_scale, const float* bias,
                      const float* resid, int ldr, float* out, int ldo, int M, const ConvStep& conv = ConvStep{}) {
    static_assert(KIND >= 1 && KIND <= 3, "gemv_stream: int4 or int8 weights");
    static_assert(STAGES >= 1 && STAGES <= 8, "gemv_stream: 1 to 8 stages");
    typedef typename RowDot<KIND, K, GROUP>::type Dot;
    const int CH = Layout<KIND>::CH;
    const int KC = (K + CH - 1) / CH;
    const int KP = KC * CH;
    const int NG = (K + GROUP - 1) / GROUP;
    const int N_TILES = (N + 7) / 8;
    const int TILE_BYTES = KC * 512, SCALE_FLOATS = 8 * NG;
    const int RES = TPS * ((32 + TPS - 1) / TPS);      // tiles of sums held for the epilogue
    int lane = threadIdx.x & 31, wk = threadIdx.x >> 5;
    int g = lane >> 2, t = lane & 3;
    int m = blockIdx.y;
    if (m >= M) return;                                // block-uniform
    const int first = (int)((i64)N_TILES * blockIdx.x / gridDim.x);
    const int count = (int)((i64)N_TILES * (blockIdx.x + 1) / gridDim.x) - first;
    const int stages = (count + TPS - 1) / TPS;
    int c_begin = (KC * wk) / WK, c_end = (KC * (wk + 1)) / WK;

    extern __shared__ __align__(128) unsigned char tiles[];
    uint4* sw = (uint4*)tiles;
    float* ss = (float*)(tiles + STAGES * TPS * TILE_BYTES);
    __shared__ __align__(8) unsigned long long bars[STAGES];
    // Stage j's tiles into ring slot j % STAGES (sm_90: by thread 0 alone).
    auto fetch = [&](int j) {
        const int slot = j % STAGES, here = min(TPS, count - j * TPS);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        bulk_tile<TILE_BYTES, SCALE_FLOATS>(sw + slot * TPS * (TILE_BYTES / 16), ss + slot * TPS * SCALE_FLOATS, W, scales, first + j * TPS, &bars[slot], here);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        async_tiles<TILE_BYTES, SCALE_FLOATS>(sw + slot * TPS * (TILE_BYTES / 16), ss + slot * TPS * SCALE_FLOATS, W, scales, first + j * TPS, here);
#endif
    };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) bar_init(&bars[s]);
        bars_visible();
        for (int j = 0; j < min(STAGES, stages); j++) fetch(j);
    }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // One commit group per stage, empty or not, so that the wait below counts stages.
    for (int j = 0; j < STAGES; j++) {
        if (j < stages) fetch(j);
        cp_async_commit();
    }
#endif
    const int CONV_W = CONV_C > 0 ? CONV_C : 1;
    const bool one_epilogue = count <= RES && count * 8 <= WK * 32;
    const int own_n = first * 8 + threadIdx.x;         // this thread's column in that epilogue
    const bool own_column = one_epilogue && (int)threadIdx.x < count * 8 && own_n < N;
    const bool conv_column = CONV_C > 0 && own_column && own_n >= CONV_LO && own_n < CONV_LO + CONV_C;
    const float own_bias = own_column && bias ? bias[own_n] : 0.f;
    ConvColumn<CONV_KW> conv_pre{};                    // value-initialized, as in `gemv`
    if (conv_column) conv_pre = conv_column_load<CONV_W, CONV_KW, true>(conv, own_n - CONV_LO, m);
    pdl_enter();
    __shared__ __align__(16) u32 stage[StageWords<KIND, K>::value];
    stage_row<KIND, K, KP, WK * 32>(A, lda, m, stage);
    __syncthreads();

    __shared__ float red[2][WK][TPS][8];               // two, so that one barrier per stage suffices
    __shared__ float res[RES][8];
    for (int j = 0; j < stages; j++) {
        const int slot = j % STAGES, here = min(TPS, count - j * TPS);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        bar_wait(&bars[slot], (j / STAGES) & 1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        cp_async_wait<STAGES - 1>();
        __syncthreads();
#endif
        if (j == stages - 1) QUAMBA_TRACE_LANDED;
        const uint4* tw = sw + slot * TPS * (TILE_BYTES / 16) + lane;
        const float* ts = ss + slot * TPS * SCALE_FLOATS + g * NG;
        Dot dot[TPS];
        for (int c = c_begin; c < c_end; c++) {
            u32 a[Dot::A_WORDS];
            Dot::load(stage, c, t, a);
#pragma unroll
            for (int q = 0; q < TPS; q++) {
                if (q < here) {
                    uint4 v = tw[(q * KC + c) * 32];
                    u32 w[4] = {v.x, v.y, v.z, v.w};
                    float sc[Dot::SPC];
                    Dot::scales(ts + q * SCALE_FLOATS, scales, c, sc);
                    dot[q].chunk(a, c, w, sc);
                }
            }
        }
#pragma unroll
        for (int q = 0; q < TPS; q++) {
            float acc = dot[q].total();
            if (t == 0) red[j & 1][wk][q][g] = acc;
        }
        __syncthreads();
        // Every warp is done with the slot: refill it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        if (threadIdx.x == 0 && j + STAGES < stages) fetch(j + STAGES);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        if (j + STAGES < stages) fetch(j + STAGES);
        cp_async_commit();
#endif
        if (wk == 0) {
            for (int i = lane; i < here * 8; i += 32) {
                float v = red[j & 1][0][i / 8][i % 8];
#pragma unroll
                for (int s = 1; s < WK; s++) v += red[j & 1][s][i / 8][i % 8];
                res[(j * TPS) % RES + i / 8][i % 8] = v;
            }
        }
        const int done = j * TPS + here;               // tiles summed so far
        if (done % RES == 0 || done == count) {
            __syncthreads();
            if (done == count) QUAMBA_TRACE_SUMMED;
            const int from = (done - 1) / RES * RES;
            if (one_epilogue) {
                if (own_column) {
                    float v = res[threadIdx.x / 8][threadIdx.x % 8] * act_scale + own_bias;
                    if (resid) v = resid[(i64)m * ldr + own_n] + v;
                    out[(i64)m * ldo + own_n] = v;
                    if (conv_column) conv_column_step<CONV_W, CONV_KW, CONV_SILU>(conv, conv_pre, own_n - CONV_LO, v, m);
                }
                continue;
            }
            for (int i = threadIdx.x; i < (done - from) * 8; i += WK * 32) {
                const int n = (first + from) * 8 + i;
                if (n < N) {
                    float v = res[i / 8][i % 8] * act_scale + (bias ? bias[n] : 0.f);
                    if (resid) v = resid[(i64)m * ldr + n] + v;
                    store_column<CONV_LO, CONV_C, CONV_KW, CONV_SILU>(v, out, ldo, m, n, conv);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Row kernels: one block per row, the row staged in shared memory through a chain of stages.
//
// T is the block size: every loop below has a compile-time trip count and unrolls, so a
// thread's global loads are all in flight at once (a decode step runs one block per row, where
// serial load latency would dominate). Element-wise stages give element i to thread i % T in
// every stage, so a thread only reads what it wrote itself and needs no barrier; a stage that
// reads other threads' elements (a reduction, the Hadamard transform) synchronizes first.
//
// The row is stored swizzled: element i at sw(i), its low five bits XORed with bits 5-9, so that
// a warp reading 32 elements 32 apart (the Hadamard transform's transposed pass) hits 32
// different banks, as does one reading 32 consecutive elements. The buffer holds W rounded up
// to 32, within which sw is a bijection.
QDEV int sw(int i) { return i ^ ((i >> 5) & 31); }

template <int W, int T> QDEV void row_load(float* row, const Opnd& x, i64 r) {
#pragma unroll
    for (int i = threadIdx.x; i < W; i += T) row[sw(i)] = ld(x, r, i);
    QUAMBA_TRACE_LANDED;
}

// Mamba1's gate, as `elementwise` OP 4 computes it: x · silu(z). Each thread touches the
// elements it loaded (as row_load), so no barrier.
template <int W, int T> QDEV void row_gate(float* row, const Opnd& z, i64 r) {
#pragma unroll
    for (int i = threadIdx.x; i < W; i += T) row[sw(i)] = row[sw(i)] * silu_f(ld(z, r, i));
}

// Plain RMSNorm of the whole row, optionally times a weight (loaded before the reduction, so
// its latency overlaps it).
template <int W, int T> QDEV void row_rms_norm(float* row, const float* weight, float eps, float* scratch) {
    const int E = (W + T - 1) / T;
    float w[E];
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < E; e++) {
        int i = threadIdx.x + e * T;
        w[e] = weight && i < W ? weight[i] : 1.f;
        if (i < W) s += row[sw(i)] * row[sw(i)];
    }
    float inv = rsqrtf(block_sum(s, scratch) / (float)W + eps);
    QUAMBA_TRACE_SUMMED;
#pragma unroll
    for (int e = 0; e < E; e++) {
        int i = threadIdx.x + e * T;
        if (i < W) row[sw(i)] = row[sw(i)] * inv * w[e];
    }
}

// mamba_ssm's gated norm: y * silu(z), normalised per group of W / G, times the weight. The
// gate and the weight are loaded together, before any barrier.
template <int W, int G, int T> QDEV void row_gated_norm(float* row, const Opnd& z, i64 r, const float* weight, float eps, float* scratch) {
    const int E = (W + T - 1) / T, GS = W / G;
    float w[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
        int i = threadIdx.x + e * T;
        if (i < W) {
            w[e] = weight[i];
            row[sw(i)] = row[sw(i)] * silu_f(ld(z, r, i));
        }
    }
    if constexpr (GS % T == 0) {
        // Each of a thread's elements lies in group (e * T) / GS, and the thread keeps its own
        // elements. The G sums of squares are reduced together, each along `block_sum`'s tree
        // (lanes, then the warps' partial sums in one warp), so the results are block_sum's, with
        // two barriers for all groups instead of two per group.
        __shared__ float partial[G][32];
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (T + 31) >> 5;
        float s[G];
#pragma unroll
        for (int grp = 0; grp < G; grp++) {
            s[grp] = 0.f;
#pragma unroll
            for (int e = 0; e < E; e++)
                if ((e * T) / GS == grp) s[grp] += row[sw(threadIdx.x + e * T)] * row[sw(threadIdx.x + e * T)];
            s[grp] = warp_sum(s[grp]);
        }
        __syncthreads();
        if (lane == 0) {
#pragma unroll
            for (int grp = 0; grp < G; grp++) partial[grp][warp] = s[grp];
        }
        __syncthreads();
#pragma unroll
        for (int grp = 0; grp < G; grp++) {
            float inv = rsqrtf(warp_sum(lane < warps ? partial[grp][lane] : 0.f) / (float)GS + eps);
#pragma unroll
            for (int e = 0; e < E; e++)
                if ((e * T) / GS == grp) row[sw(threadIdx.x + e * T)] = row[sw(threadIdx.x + e * T)] * inv * w[e];
        }
    } else {
        __syncthreads();
        for (int grp = 0; grp < G; grp++) {
            float s = 0.f;
#pragma unroll
            for (int i = threadIdx.x; i < GS; i += T) s += row[sw(grp * GS + i)] * row[sw(grp * GS + i)];
            float inv = rsqrtf(block_sum(s, scratch) / (float)GS + eps);
#pragma unroll
            for (int i = threadIdx.x; i < GS; i += T) row[sw(grp * GS + i)] = row[sw(grp * GS + i)] * inv;
        }
        __syncthreads();
#pragma unroll
        for (int e = 0; e < E; e++) {
            int i = threadIdx.x + e * T;
            if (i < W) row[sw(i)] *= w[e];
        }
    }
}

// The butterflies of a thread's own E elements v[j] in stages h = 1, 2, .. < SPAN: v[j] and
// v[j + h] for each j without bit h, in that order (the transform stages whose partners one
// thread holds).
template <int E, int SPAN> QDEV void own_butterflies(float* v) {
#pragma unroll
    for (int h = 1; h < SPAN; h <<= 1)
#pragma unroll
        for (int j = 0; j < E; j++)
            if (!(j & h)) {
                float a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
}

// Orthonormal block-diagonal Walsh-Hadamard transform: blocks of the largest power of two
// dividing W, each scaled by 1/sqrt(block).
//
// When T divides W, thread t holds elements j*T + t. The butterflies of element bits at or above
// log2(T) pair a thread's own elements; those of bits 0-4 pair lanes of a warp (shuffles); those
// of the warp bits run after one pass through shared memory that swaps the warp bits of the
// element index into the lane bits, and a second pass puts the row back in order: two barriers
// instead of one per stage. Otherwise, one barrier per stage over the shared row.
//
// NORM: the transform size whose 1/sqrt scales the result, when the row is one part of a larger
// transform (`cluster_gated_hadamard_quantize`); 0: the block's own.
template <int W, int T, int NORM = 0> QDEV void row_hadamard(float* row) {
    const int B = W & (-W);
    const float norm = rsqrtf((float)(NORM ? NORM : B));
    static_assert((T & (T - 1)) == 0, "row kernels run a power-of-two block");
    if constexpr (W % T == 0 && T >= 32) {
        const int E = W / T, LOG_T = T == 32 ? 5 : T == 64 ? 6 : T == 128 ? 7 : T == 256 ? 8 : T == 512 ? 9 : 10;
        const int WB = LOG_T - 5;  // warp bits of the element index
        const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
        float v[E];
#pragma unroll
        for (int j = 0; j < E; j++) v[j] = row[sw(j * T + t)];
        // Bits >= log2(T): a thread's own elements j and j ^ (h / T), within one block.
        own_butterflies<E, (B > T ? B / T : 1)>(v);
        // Bits 0-4: lanes.
#pragma unroll
        for (int h = 1; h < 32 && h < B; h <<= 1)
#pragma unroll
            for (int j = 0; j < E; j++) {
                float o = __shfl_xor_sync(0xffffffffu, v[j], h);
                v[j] = (lane & h) ? o - v[j] : v[j] + o;
            }
        if (WB > 0 && B > 32) {
            // Thread (warp, lane) takes element (hi = lane mod 2^WB, lo = lane / 2^WB + warp * 2^(5-WB)),
            // so element bit 5 + k is lane bit k.
            const int idx = ((lane & ((1 << WB) - 1)) << 5) | (lane >> WB) | (warp << (5 - WB));
#pragma unroll
            for (int j = 0; j < E; j++) row[sw(j * T + t)] = v[j];
            __syncthreads();
#pragma unroll
            for (int j = 0; j < E; j++) v[j] = row[sw(j * T + idx)];
#pragma unroll
            for (int k = 0; k < WB; k++) {
                if ((32 << k) >= B) break;
#pragma unroll
                for (int j = 0; j < E; j++) {
                    float o = __shfl_xor_sync(0xffffffffu, v[j], 1 << k);
                    v[j] = (lane & (1 << k)) ? o - v[j] : v[j] + o;
                }
            }
            __syncthreads();
#pragma unroll
            for (int j = 0; j < E; j++) row[sw(j * T + idx)] = v[j] * norm;
            __syncthreads();
        } else {
#pragma unroll
            for (int j = 0; j < E; j++) row[sw(j * T + t)] = v[j] * norm;
        }
    } else {
        __syncthreads();
#pragma unroll
        for (int h = 1; h < B; h <<= 1) {
#pragma unroll
            for (int i = threadIdx.x; i < W / 2; i += T) {
                int blk = i / (B / 2), j = i % (B / 2);
                int lo = blk * B + (j / h) * 2 * h + (j % h);
                float a = row[sw(lo)], b = row[sw(lo + h)];
                row[sw(lo)] = a + b;
                row[sw(lo + h)] = a - b;
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = threadIdx.x; i < W; i += T) row[sw(i)] *= norm;
        __syncthreads();
    }
}

// Thread-block clusters (sm_90): this block's rank, barriers over the cluster, and loads and
// stores of another block's shared memory; on earlier GPUs they compile to nothing.
QDEV u32 cluster_rank() {
    u32 r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
#endif
    return r;
}
QDEV void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
// `cluster_sync` in two halves, so that a block works between announcing it is done with the
// others' shared memory and waiting until they are done with its own.
QDEV void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}
QDEV void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
// The address of `p` (this block's shared memory) in the shared memory of cluster block `rank`.
QDEV u32 cluster_addr(const float* p, u32 rank) {
    u32 a = smem_addr(p);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mapa.shared::cluster.u32 %0, %0, %1;" : "+r"(a) : "r"(rank));
#endif
    return a;
}
QDEV float cluster_ld(u32 a) {
    float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(a) : "memory");
#endif
    return v;
}
QDEV void cluster_st(u32 a, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(a), "f"(v) : "memory");
#endif
}

// A row chain's constants for this thread's elements base + j T + t (j < E): the norm weight
// (1 where none), the fake-quantization scales of x and z (see `ld_scale`) and the output's
// quantization scale (none unless QUANTIZED: a chain that stores f32), loaded before the
// dependency wait by the entry point (`segment_consts`).
template <int E> struct SegmentConsts {
    float w[E], sx[E], sz[E], sq[E];
};
template <int E, int T, bool QUANTIZED = true>
QDEV SegmentConsts<E> segment_consts(const Opnd& x, const Opnd& z, const float* weight, const float* scale, int scale_vec, int base) {
    SegmentConsts<E> k;
#pragma unroll
    for (int j = 0; j < E; j++) {
        const int i = base + j * T + (int)threadIdx.x;
        k.w[j] = weight ? weight[i] : 1.f;
        k.sx[j] = ld_scale(x, i);
        k.sz[j] = ld_scale(z, i);
        k.sq[j] = QUANTIZED ? scale[scale_vec ? i : 0] : 0.f;
    }
    return k;
}
// The constants of a chain split into one block per B elements of a row (`gated_hadamard_quantize`,
// `hadamard_quantize`).
template <int W, int B, int T, bool QUANTIZED = true>
QDEV SegmentConsts<B / T> split_consts(const Opnd& x, const Opnd& z, const float* weight, const float* scale, int scale_vec) {
    return segment_consts<B / T, T, QUANTIZED>(x, z, weight, scale, scale_vec, (int)(blockIdx.x % (W / B)) * B);
}

// What a split row chain stores of its result v: quantized with scale `sq` into an int8 output,
// or v as it is into an f32 one (W4A16, whose products take f32 rows; the chains then run the
// same arithmetic up to this store). The chains below take either output.
template <typename OUT> QDEV OUT chain_value(float v, float sq) {
    if constexpr (sizeof(OUT) == 1) return quantize_one(v, sq);
    else return v;
}

// The end of a split gated norm chain on a block's own B elements in `buf` (element j T + t of
// this thread): times the norm's `inv` and weight, the Hadamard transform, then quantized (or
// stored, `chain_value`) into row r of `out` from column `base`.
template <int B, int T, typename OUT>
QDEV void norm_transform_quantize(float* buf, float inv, const SegmentConsts<B / T>& k, OUT* out, int stride, i64 r, int base) {
    const int E = B / T, t = threadIdx.x;
#pragma unroll
    for (int j = 0; j < E; j++) buf[sw(j * T + t)] = buf[sw(j * T + t)] * inv * k.w[j];
    row_hadamard<B, T>(buf);
#pragma unroll
    for (int j = 0; j < E; j++) out[r * stride + base + j * T + t] = chain_value<OUT>(buf[sw(j * T + t)], k.sq[j]);
}

// A Mamba2 layer's out_proj input chain (gated norm, Hadamard transform, quantize) split over
// W / B blocks per row, one per Hadamard block of B elements, so that several SMs share a row
// instead of one doing it all. Each block keeps its own B elements (in `buf`, B floats rounded
// up to 32), and transforms and quantizes only those. Same operations, in the same order per
// element, as row_gated_norm -> row_hadamard -> row_quantize; only the sum of squares is reduced
// in another order.
//
// The norm group's sum of squares: with CL > 1 (sm_90; CL = GS / B, the group's blocks form a
// cluster), each block sums its own elements and reads the group's CL partial sums from the
// cluster's shared memory in rank order, so every block of the group has the same sum. Without
// clusters every block of the group reads and gates the whole group itself, so no block waits
// for another, but each then computes CL times the elements (on mamba2-2.7b, whose 5120-wide
// row is one group of five blocks, that gating and fake quantization made the chain's
// reduction take 4.2 us after its wait).
template <int W, int G, int B, int T, int CL = 1, typename OUT>
QDEV void gated_hadamard_quantize(const Opnd& x, const Opnd& z, const SegmentConsts<B / T>& k, float eps, OUT* out, int stride, float* buf, float* scratch) {
    const int GS = W / G, SEGS = W / B, E = B / T, EG = GS / T;
    static_assert(B % T == 0 && GS % B == 0 && W % B == 0, "segments of whole Hadamard blocks within one norm group");
    static_assert(CL == 1 || CL == GS / B, "a cluster is one norm group's blocks");
    const i64 r = blockIdx.x / SEGS;
    const int seg = blockIdx.x % SEGS, base = seg * B, off = base % GS, gbase = base - off, t = threadIdx.x;
    float inv;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (CL > 1) {
        __shared__ float own_sum;
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < E; j++) {
            const int i = base + j * T + t;
            float g = ld_with(x, r, i, k.sx[j]) * silu_f(ld_with(z, r, i, k.sz[j]));
            s += g * g;
            buf[sw(j * T + t)] = g;
        }
        s = block_sum(s, scratch);
        if (t == 0) own_sum = s;
        cluster_sync();
        // Rank c of the cluster is the group's c-th block (blocks of a row are consecutive and
        // a cluster is CL consecutive blocks).
        float total = 0.f;
#pragma unroll
        for (int c = 0; c < CL; c++) total += cluster_ld(cluster_addr(&own_sum, c));
        cluster_arrive();
        inv = rsqrtf(total / (float)GS + eps);
    } else
#endif
    {
        float s = 0.f;
#pragma unroll
        for (int e = 0; e < EG; e++) {
            const int i = gbase + e * T + t;
            const bool own = e * T >= off && e * T < off + B;
            // Own elements with the scales loaded before the wait; the group's others (only
            // without clusters) with their own.
            float sx = 0.f, sz = 0.f;
#pragma unroll
            for (int j = 0; j < E; j++)
                if (e * T - off == j * T) sx = k.sx[j], sz = k.sz[j];
            float g = own ? ld_with(x, r, i, sx) * silu_f(ld_with(z, r, i, sz)) : ld(x, r, i) * silu_f(ld(z, r, i));
            s += g * g;
            if (own) buf[sw(e * T - off + t)] = g;
        }
        inv = rsqrtf(block_sum(s, scratch) / (float)GS + eps);
    }
    QUAMBA_TRACE_SUMMED;
    norm_transform_quantize<B, T>(buf, inv, k, out, stride, r, base);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // No block leaves while another may still read its `own_sum`.
    if constexpr (CL > 1) cluster_wait();
#endif
}

// `gated_hadamard_quantize` at one row after an SSD step that gated its output itself
// (`ssd_scan`, GATED): `x` holds g = fq(y) · silu(fq(z)) (read as stored: its fake quantization
// is done), and `partials` the sums of g² of the step's PARTS blocks per row, PARTS / G per norm
// group, which every block of a group adds up in the same order, so that all get the same sum.
// From there the same operations per element, in the same order, as `gated_hadamard_quantize`.
template <int W, int G, int B, int T, int PARTS, typename OUT>
QDEV void pregated_hadamard_quantize(const Opnd& x, const float* partials, const SegmentConsts<B / T>& k, float eps, OUT* out, int stride, float* buf, float* scratch) {
    const int GS = W / G, SEGS = W / B, E = B / T, GP = PARTS / G;
    static_assert(B % T == 0 && GS % B == 0 && W % B == 0 && PARTS % G == 0, "segments of whole Hadamard blocks within one norm group");
    const i64 r = blockIdx.x / SEGS;
    const int seg = blockIdx.x % SEGS, base = seg * B, grp = base / GS, t = threadIdx.x;
    float p = 0.f;
    for (int i = t; i < GP; i += T) p += partials[r * PARTS + grp * GP + i];
#pragma unroll
    for (int j = 0; j < E; j++) buf[sw(j * T + t)] = x.p[r * x.stride + base + j * T + t];
    QUAMBA_TRACE_LANDED;
    const float inv = rsqrtf(block_sum(p, scratch) / (float)GS + eps);
    QUAMBA_TRACE_SUMMED;
    norm_transform_quantize<B, T>(buf, inv, k, out, stride, r, base);
}

// Mamba1's out_proj input chain ([gate →] Hadamard → quantize) split over W / B blocks per row,
// one per Hadamard block of B elements: no step needs the whole row, so each block loads only its
// own elements. Same operations, in the same order per element, as row_load → row_gate →
// row_hadamard → row_quantize on the whole row, so the result is the same.
template <int W, int B, int T, bool GATE, typename OUT>
QDEV void hadamard_quantize(const Opnd& x, const Opnd& z, const SegmentConsts<B / T>& k, OUT* out, int stride, float* buf) {
    const int SEGS = W / B, E = B / T;
    static_assert(B % T == 0 && W % B == 0, "segments of whole Hadamard blocks");
    const i64 r = blockIdx.x / SEGS;
    const int base = (blockIdx.x % SEGS) * B, t = threadIdx.x;
#pragma unroll
    for (int j = 0; j < E; j++) {
        const int i = base + j * T + t;
        float v = ld_with(x, r, i, k.sx[j]);
        if (GATE) v = v * silu_f(ld_with(z, r, i, k.sz[j]));
        buf[sw(j * T + t)] = v;
    }
    QUAMBA_TRACE_LANDED;
    row_hadamard<B, T>(buf);
    QUAMBA_TRACE_SUMMED;
#pragma unroll
    for (int j = 0; j < E; j++) out[r * stride + base + j * T + t] = chain_value<OUT>(buf[sw(j * T + t)], k.sq[j]);
}

template <int W, int T> QDEV void row_store(const float* row, float* out, i64 r) {
#pragma unroll
    for (int i = threadIdx.x; i < W; i += T) out[r * W + i] = row[sw(i)];
}

// `scale0` is scale[0], loaded when the kernel starts (a per-tensor scale would otherwise cost
// one more dependent load at the end of the chain).
template <int W, int T> QDEV void row_quantize(const float* row, const float* scale, int scale_vec, float scale0, i8* out, int stride, i64 r) {
#pragma unroll
    for (int i = threadIdx.x; i < W; i += T) out[r * stride + i] = quantize_one(row[sw(i)], scale_vec ? scale[i] : scale0);
}

// The gated norm -> Hadamard -> quantize chain of a row that is one Hadamard block of W = CL x
// 1024 elements (mamba2-8b: 8192), with one norm group per 1024 (G = CL), over a cluster of CL
// blocks of 1024 threads (sm_90) instead of one block: block c of the cluster (its rank) owns
// elements [1024 c, 1024 c + 1024), one per thread, and its norm group. The transform's stages
// of element bits 10 and up pair elements of different blocks: after a cluster barrier, the
// first 1024 / CL threads of each block take 1024 / CL positions each, read the CL elements at
// a position from every block's shared memory, run those stages and write them back; after a
// second barrier each block runs the stages of bits 0-9 on its own elements, then quantizes.
// Same operations, in the same order per element, as one block running row_gated_norm ->
// row_hadamard -> row_quantize on the row with 1024 threads (which is what GPUs before sm_90
// run: the first block of each row does it all, the others return), so the result is the same.
template <int W, int CL, typename OUT>
QDEV void cluster_gated_hadamard_quantize(const Opnd& x, const Opnd& z, const SegmentConsts<1>& k, const float* weight, float eps, const float* scale,
                                          int scale_vec, float scale0, OUT* out, int stride) {
    static_assert(W == CL * 1024 && CL >= 2 && CL <= 8 && (CL & (CL - 1)) == 0, "a cluster of 2-8 blocks of 1024 elements");
    const int T = 1024;
    const i64 r = blockIdx.x / CL;
    const int t = threadIdx.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    __shared__ float buf[T];
    __shared__ float scratch[32];
    const u32 c = cluster_rank();
    const int i = c * T + t;
    float g = ld_with(x, r, i, k.sx[0]) * silu_f(ld_with(z, r, i, k.sz[0]));
    const float w = k.w[0];
    float inv = rsqrtf(block_sum(g * g, scratch) / (float)T + eps);
    QUAMBA_TRACE_SUMMED;
    buf[sw(t)] = g * inv * w;
    cluster_sync();
    if (t < T / CL) {
        const int p = c * (T / CL) + t;
        float v[CL];
#pragma unroll
        for (int j = 0; j < CL; j++) v[j] = cluster_ld(cluster_addr(&buf[sw(p)], j));
        own_butterflies<CL, CL>(v);
#pragma unroll
        for (int j = 0; j < CL; j++) cluster_st(cluster_addr(&buf[sw(p)], j), v[j]);
    }
    cluster_sync();
    row_hadamard<T, T, W>(buf);
    out[r * stride + i] = chain_value<OUT>(buf[sw(t)], k.sq[0]);
#else
    __shared__ float row[W];
    __shared__ float scratch[32];
    if (blockIdx.x % CL != 0) return;
    row_load<W, T>(row, x, r);
    row_gated_norm<W, CL, T>(row, z, r, weight, eps, scratch);
    row_hadamard<W, T>(row);
    if constexpr (sizeof(OUT) == 1) row_quantize<W, T>(row, scale, scale_vec, scale0, out, stride, r);
    else row_store<W, T>(row, out, r);
#endif
}

// ---------------------------------------------------------------------------------------------
// Embedding lookups: one block per row; tokens were range-checked by the host or come from argmax.

template <int D> QDEV void embed_f32(const i64* tokens, const float* table, float* out, i64 r) {
    i64 tok = tokens[r];
    for (int i = threadIdx.x; i < D; i += blockDim.x) out[r * D + i] = table[tok * D + i];
}

template <int KIND, int D, int GROUP> QDEV void embed_packed(const i64* tokens, const void* table, const float* scales, float* out, i64 r) {
    const int KC = (D + Layout<KIND>::CH - 1) / Layout<KIND>::CH;
    const int NG = (D + GROUP - 1) / GROUP;
    int tok = (int)tokens[r];
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = packed_at<KIND>(table, tok, i, KC);
        out[r * D + i] = scales ? v * scales[(i64)tok * NG + i / GROUP] : v;
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise kernels over [rows, W].

template <int W, int OP> QDEV void elementwise(Opnd a, Opnd b, float* out, i64 rows) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * W) return;
    i64 r = i / W;
    int c = (int)(i % W);
    float x = ld(a, r, c), v;
    if (OP == 0) v = silu_f(x);
    else if (OP == 1) v = softplus_f(x);
    else if (OP == 2) v = x * ld(b, r, c);
    else if (OP == 3) v = x + ld(b, r, c);
    else if (OP == 4) v = x * silu_f(ld(b, r, c));  // Mamba1's gate
    else v = x;                                     // OP 5: materialize a fake-quantized view
    out[i] = v;
}

template <int W> QDEV void quantize_rows(Opnd a, const float* scale, int scale_vec, i8* out, int stride, i64 rows) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * W) return;
    i64 r = i / W;
    int c = (int)(i % W);
    out[r * stride + c] = quantize_one(ld(a, r, c), scale[scale_vec ? c : 0]);
}

template <int W> QDEV void dequantize_rows(const i8* q, int stride, const float* scale, int scale_vec, float* out, i64 rows) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * W) return;
    i64 r = i / W;
    int c = (int)(i % W);
    out[i] = (float)q[r * stride + c] * scale[scale_vec ? c : 0];
}

// ---------------------------------------------------------------------------------------------
// Depthwise causal conv1d (+ optional SiLU). One thread per (sequence, channel, chunk of CT
// positions), so prefill is parallel in time as well; each chunk reads its KW-1 inputs of history
// from the sequence or, for the first chunk, from the state (the last KW-1 inputs, oldest first).
// With UPDATE the kernel also writes the new state; that is only race-free when each sequence
// is one chunk (decode), so prefill calls conv_state afterwards instead.

template <int C, int KW, int CT, bool SILU, bool UPDATE>
QDEV void causal_conv1d(Opnd x, const float* weight, const float* bias, float* state, float* out, int batch, int seq) {
    i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    int chunks = (seq + CT - 1) / CT;
    if (idx >= (i64)batch * C * chunks) return;
    int c = (int)(idx % C);
    int chunk = (int)((idx / C) % chunks);
    int b = (int)(idx / ((i64)C * chunks));
    int t0 = chunk * CT;
    float w[KW], hist[KW];
#pragma unroll
    for (int k = 0; k < KW; k++) w[k] = weight[c * KW + k];
    float* st = state + (i64)b * (KW - 1) * C;
    // The column's scale once, and every input of TB steps requested before the first is
    // converted: a conversion branches, and a load after a branch that used an earlier load's
    // value waited for that value, so that a quantized input's loads went one round trip at a
    // time (W4A8's prefill conv: 41 µs a layer against FP16's 18).
    const float xs = ld_scale(x, c), xinv = inverse_of(xs);
    const float* xcol = x.p + (i64)b * seq * x.stride + c;
#pragma unroll
    for (int k = 0; k < KW - 1; k++) {
        int t = t0 - (KW - 1) + k;  // position of history slot k
        hist[k] = t >= 0 ? xcol[(i64)t * x.stride] : st[(KW - 1 + t) * C + c];
    }
#pragma unroll
    for (int k = 0; k < KW - 1; k++) hist[k] = t0 - (KW - 1) + k >= 0 ? fq_raw_inv(x, hist[k], xs, xinv) : hist[k];
    float bv = bias ? bias[c] : 0.f;
    int t_end = min(seq, t0 + CT);
    const int TB = 8;  // inputs of TB steps are loaded before use, so their latencies overlap
    for (int tb = t0; tb < t_end; tb += TB) {
        float xin[TB];
#pragma unroll
        for (int j = 0; j < TB; j++) xin[j] = tb + j < t_end ? xcol[(i64)(tb + j) * x.stride] : 0.f;
#pragma unroll
        for (int j = 0; j < TB; j++) xin[j] = fq_raw_inv(x, xin[j], xs, xinv);
#pragma unroll
        for (int j = 0; j < TB; j++) {
            if (tb + j >= t_end) break;
            hist[KW - 1] = xin[j];
            float acc = bv;
#pragma unroll
            for (int k = 0; k < KW; k++) acc += w[k] * hist[k];
            out[((i64)b * seq + tb + j) * C + c] = SILU ? silu_f(acc) : acc;
#pragma unroll
            for (int k = 0; k < KW - 1; k++) hist[k] = hist[k + 1];
        }
    }
    if (UPDATE && chunks == 1) {
#pragma unroll
        for (int k = 0; k < KW - 1; k++) st[k * C + c] = hist[k];
    }
}

// The conv state after a prefill: the last KW-1 inputs of [old state ++ sequence].
template <int C, int KW> QDEV void conv_state(Opnd x, float* state, int batch, int seq) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= batch * C) return;
    int b = idx / C, c = idx % C;
    float* st = state + (i64)b * (KW - 1) * C;
    float next[KW - 1];
#pragma unroll
    for (int k = 0; k < KW - 1; k++) {
        int t = seq + k - (KW - 1);  // position in the sequence; negative: still in the old state
        next[k] = t >= 0 ? ld(x, (i64)b * seq + t, c) : st[(KW - 1 + t) * C + c];
    }
#pragma unroll
    for (int k = 0; k < KW - 1; k++) st[k * C + c] = next[k];
}

// ---------------------------------------------------------------------------------------------
// Mamba2 SSD as a recurrence. A block holds PB state rows (p) of one (sequence, head), LANES
// threads per row with N / LANES states each (state n = i * LANES + lane, so shared-memory reads
// are consecutive across lanes). Every TB steps the block stages Δ, x and the group's B and C in
// shared memory, fake-quantizing each element once for the whole block rather than once per
// thread. State layout as on the CPU: [batch][head][p][n].
//
// A decode step (seq == 1) takes its own short path: its inputs are all requested before any is
// converted, and no window loop runs, so that the code after the dependency wait is one short
// straight line.
//
// GATED (one row: a decode step at batch 1): the step also runs the elementwise start of the
// gated norm chain after it (`pregated_hadamard_quantize`), whose input is this output: it stores
// g = fq(y) · silu(fq(z)) (y and z as the chain loads them: `chain_x`, this output with the
// chain's fake quantization, and `chain_z`) in place of y, and block b's sum of g² in
// `partials[b]`, so that the chain's few blocks only add up partial sums instead of loading,
// gating and summing the whole row.

// One state row's update by one input step, on this thread's PER states (n = i * LANES + sub):
// each decays and takes Δ·x·B; returns C·state summed over the row's LANES threads.
template <int PER, int LANES>
QDEV float ssd_row_update(float* s, float decay, float dx, const float* sB, const float* sC, int sub) {
    float y = 0.f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        s[i] = decay * s[i] + dx * sB[i * LANES + sub];
        y += sC[i * LANES + sub] * s[i];
    }
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, LANES);
    return y;
}

// The value a row's output element stores (by its sub 0 thread): y + D·x, or where GATED the
// gated g = fq(y + D·x) · silu(z), whose square it adds to `gsq`.
template <bool GATED> QDEV float ssd_output(float y, float D, float xv, const Opnd& chain_x, float sy, float zv, float& gsq) {
    float v = y + D * xv;
    if constexpr (GATED) {
        // As `ld_with(chain_x, ...) * silu_f(ld_with(chain_z, ...))` would load it.
        if (chain_x.scale) v = fake_quant(v, sy);
        v = v * silu_f(zv);
        gsq += v * v;
    }
    return v;
}

// Δ = clamp(softplus(dt + bias)), as both paths compute it.
QDEV float ssd_delta(float dt_q, float bias, float dt_min, float dt_max) { return fminf(fmaxf(softplus_f(dt_q + bias), dt_min), dt_max); }

template <int H, int P, int G, int N, int LANES, int PB, int SQ, int SF, bool SG, bool GATED = false, bool AHEAD = false>
QDEV void ssd_scan(Opnd x, Opnd dt, Opnd Bm, Opnd Cm, const float* a_log, const float* dvec, const float* dt_bias,
                   float dt_min, float dt_max, void* state, const float* state_scale, const int* state_group, float* out, int batch, int seq,
                   const void* ahead, int ahead_bytes, const Opnd& chain_x = Opnd{}, const Opnd& chain_z = Opnd{}, float* partials = nullptr) {
    const int PER = N / LANES, TB = 8, BPH = P / PB, T = LANES * PB;  // T: blockDim.x
    __shared__ float sB[TB][N], sC[TB][N], sX[TB][PB], sDelta[TB], sDecay[TB];
    int blk = blockIdx.x;
    int pb = blk % BPH, h = (blk / BPH) % H, b = blk / (BPH * H);
    if (b >= batch) return;
    int pl = threadIdx.x / LANES, sub = threadIdx.x % LANES, p = pb * PB + pl;
    int grp = h / (H / G);
    float A = -expf(a_log[h]), D = dvec[h], bias = dt_bias[h];
    const i64 row = ((i64)b * H + h) * P + p;
    StateRow<N, LANES, SQ, SF, SG, SQ != 0, LANES * PB> cached;
    float s[PER];
    // The state, the parameters and the scales of the inputs this thread stages (its first
    // element of each: every one where blockDim is a multiple of N and PB, as in every plan) are
    // requested before waiting for the previous kernel (see `ld_state`, `ld_scale`); the step's
    // inputs after.
    cached.request(state, row, h * P + p, sub, state_group, s);
    cached.prefetch_scales(state_scale);
    const int n0 = threadIdx.x % N, q0 = threadIdx.x % PB;
    const float sb0 = ld_scale(Bm, grp * N + n0), sc0 = ld_scale(Cm, grp * N + n0), sx0 = ld_scale(x, h * P + pb * PB + q0), sdt = ld_scale(dt, h);
    // GATED: this thread's output column's scales (the chain's x and z).
    const float sy = GATED ? ld_scale(chain_x, h * P + p) : 0.f, sz = GATED ? ld_scale(chain_z, h * P + p) : 0.f;
    pdl_enter();
    cached.scales(sub, state_scale);
    cached.values(s, sub, state_scale);
    l2_ahead(ahead, ahead_bytes);
    float gsq = 0.f;
    // The prefill loops' steps of the TB staged at t0.
    auto run_steps = [&](int t0) {
#pragma unroll
        for (int j = 0; j < TB; j++) {
            if (t0 + j >= seq) break;
            const float xv = sX[j][pl];
            const float y = ssd_row_update<PER, LANES>(s, sDecay[j], sDelta[j] * xv, sB[j], sC[j], sub);
            if (sub == 0) out[((i64)b * seq + t0 + j) * (H * P) + h * P + p] = y + D * xv;
        }
    };
    if (GATED || seq == 1) {
        // The decode step. Every input this thread stages, and the gate's z, is requested before
        // any is converted: a conversion's division branches, and a load issued after a branch
        // that used an earlier load's value waits for that value first.
        const int t = threadIdx.x, BC = (N + T - 1) / T;
        float b_raw[BC], c_raw[BC];
#pragma unroll
        for (int k = 0; k < BC; k++) {
            const int n = t + k * T;
            if (n < N) {
                b_raw[k] = Bm.p[(i64)b * Bm.stride + grp * N + n];
                c_raw[k] = Cm.p[(i64)b * Cm.stride + grp * N + n];
            }
        }
        const float x_raw = t < PB ? x.p[(i64)b * x.stride + h * P + pb * PB + t] : 0.f;
        const float dt_raw = t == 0 ? dt.p[(i64)b * dt.stride + h] : 0.f;
        const float z_raw = GATED && sub == 0 ? chain_z.p[(i64)b * chain_z.stride + h * P + p] : 0.f;
#pragma unroll
        for (int k = 0; k < BC; k++) {
            const int n = t + k * T;
            if (n < N) {
                sB[0][n] = fq_raw(Bm, b_raw[k], n == n0 ? sb0 : ld_scale(Bm, grp * N + n));
                sC[0][n] = fq_raw(Cm, c_raw[k], n == n0 ? sc0 : ld_scale(Cm, grp * N + n));
            }
        }
        if (t < PB) sX[0][t] = fq_raw(x, x_raw, sx0);
        if (t == 0) {
            const float delta = ssd_delta(fq_raw(dt, dt_raw, sdt), bias, dt_min, dt_max);
            sDelta[0] = delta;
            sDecay[0] = expf(delta * A);
        }
        const float zv = GATED && sub == 0 ? fq_raw(chain_z, z_raw, sz) : 0.f;
        __syncthreads();
        QUAMBA_TRACE_LANDED;
        const float xv = sX[0][pl];
        const float y = ssd_row_update<PER, LANES>(s, sDecay[0], sDelta[0] * xv, sB[0], sC[0], sub);
        if (sub == 0) out[(i64)b * (H * P) + h * P + p] = ssd_output<GATED>(y, D, xv, chain_x, sy, zv, gsq);
        QUAMBA_TRACE_SUMMED;
    } else if constexpr (AHEAD) {
        // The prefill's own kernel: the inputs of TB steps at a time go through shared memory,
        // and the next TB steps' inputs are requested before this TB's steps run, so that their
        // round trip overlaps the steps instead of preceding them. Each thread stages the same
        // columns at every TB (blockDim is a multiple of N and PB in every plan; other columns
        // take their own scale) and converts them with its columns' inverse scales (a division
        // per input was a third of the quantized prefill's time). Its registers (95 against 62)
        // would cost the decode kernel occupancy, which keeps the loop below for calls of a few
        // rows.
        constexpr int BCR = (TB * N + T - 1) / T, XR = (TB * PB + T - 1) / T;
        const float ib0 = inverse_of(sb0), ic0 = inverse_of(sc0), ix0 = inverse_of(sx0), idt = inverse_of(sdt);
        float rb[BCR], rc[BCR], rx[XR], rdt = 0.f;
        auto fetch = [&](int t0) {
            const int steps = min(TB, seq - t0);
#pragma unroll
            for (int k = 0; k < BCR; k++) {
                const int i = threadIdx.x + k * T, j = i / N, n = i % N;
                if (j < steps) {
                    const i64 r = (i64)b * seq + t0 + j;
                    rb[k] = Bm.p[r * Bm.stride + grp * N + n];
                    rc[k] = Cm.p[r * Cm.stride + grp * N + n];
                }
            }
#pragma unroll
            for (int k = 0; k < XR; k++) {
                const int i = threadIdx.x + k * T, j = i / PB, q = i % PB;
                if (j < steps) rx[k] = x.p[((i64)b * seq + t0 + j) * x.stride + h * P + pb * PB + q];
            }
            if (threadIdx.x < steps) rdt = dt.p[((i64)b * seq + t0 + threadIdx.x) * dt.stride + h];
        };
        fetch(0);
        for (int t0 = 0; t0 < seq; t0 += TB) {
            const int steps = min(TB, seq - t0);
#pragma unroll
            for (int k = 0; k < BCR; k++) {
                const int i = threadIdx.x + k * T, j = i / N, n = i % N;
                if (j < steps) {
                    const bool first = n == n0;
                    sB[j][n] = first ? fq_raw_inv(Bm, rb[k], sb0, ib0) : fq_raw(Bm, rb[k], ld_scale(Bm, grp * N + n));
                    sC[j][n] = first ? fq_raw_inv(Cm, rc[k], sc0, ic0) : fq_raw(Cm, rc[k], ld_scale(Cm, grp * N + n));
                }
            }
#pragma unroll
            for (int k = 0; k < XR; k++) {
                const int i = threadIdx.x + k * T, j = i / PB, q = i % PB;
                if (j < steps) sX[j][q] = q == q0 ? fq_raw_inv(x, rx[k], sx0, ix0) : fq_raw(x, rx[k], ld_scale(x, h * P + pb * PB + q));
            }
            if (threadIdx.x < steps) {
                const float delta = ssd_delta(fq_raw_inv(dt, rdt, sdt, idt), bias, dt_min, dt_max);
                sDelta[threadIdx.x] = delta;
                sDecay[threadIdx.x] = expf(delta * A);
            }
            __syncthreads();
            QUAMBA_TRACE_LANDED;
            if (t0 + TB < seq) fetch(t0 + TB);
            run_steps(t0);
            QUAMBA_TRACE_SUMMED;
            __syncthreads();
        }
    } else {
        // (Strides of blockDim.x, not the constant T: with T ptxas unrolled these loops and the
        // kernel took 80 registers instead of 48.)
        for (int t0 = 0; t0 < seq; t0 += TB) {
            const int steps = min(TB, seq - t0);
            for (int i = threadIdx.x; i < steps * N; i += blockDim.x) {
                int j = i / N, n = i % N;
                i64 r = (i64)b * seq + t0 + j;
                const bool first = n == n0;
                sB[j][n] = ld_with(Bm, r, grp * N + n, first ? sb0 : ld_scale(Bm, grp * N + n));
                sC[j][n] = ld_with(Cm, r, grp * N + n, first ? sc0 : ld_scale(Cm, grp * N + n));
            }
            for (int i = threadIdx.x; i < steps * PB; i += blockDim.x) {
                int j = i / PB, q = i % PB;
                sX[j][q] = ld_with(x, (i64)b * seq + t0 + j, h * P + pb * PB + q, q == q0 ? sx0 : ld_scale(x, h * P + pb * PB + q));
            }
            if (threadIdx.x < steps) {
                int j = threadIdx.x;
                float delta = ssd_delta(ld_with(dt, (i64)b * seq + t0 + j, h, sdt), bias, dt_min, dt_max);
                sDelta[j] = delta;
                sDecay[j] = expf(delta * A);
            }
            __syncthreads();
            QUAMBA_TRACE_LANDED;
            run_steps(t0);
            QUAMBA_TRACE_SUMMED;
            __syncthreads();
        }
    }
    cached.store(state, row, sub, s, state_scale);
    if constexpr (GATED) {
        __shared__ float scratch[32];
        gsq = block_sum(gsq, scratch);
        if (threadIdx.x == 0) partials[(i64)b * (H * (P / PB)) + h * (P / PB) + pb] = gsq;
    }
}

// The SSD prefill's B and C (GN columns each) fake-quantized in place, once for every head that
// reads them: each of `ssd_prefill`'s blocks converting all of its group's B and C (two thousand
// values a window) made W4A8's prefill scan slower than FP16's. Fake-quantizing a fake-quantized
// value returns it unchanged, so every kernel that reads them after, with their scales, reads the
// same values.
template <int GN> QDEV void fake_quantize_bc(Opnd Bm, Opnd Cm, i64 rows) {
    const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_enter();
    if (idx >= rows * 2 * GN) return;
    const i64 r = idx / (2 * GN);
    const int c = (int)(idx % (2 * GN)), col = c % GN;
    auto convert = [&](const Opnd o) {
        float* p = (float*)o.p + r * o.stride + col;
        *p = fq_raw(o, *p, ld_scale(o, col));
    };
    if (c < GN) convert(Bm);
    else convert(Cm);
}

// Sums, over the warp's lanes, each of the V values every lane holds (V a power of two up to 32)
// and returns the sum of value lane >> (5 - log2 V). At each level (lanes O apart) a lane keeps
// half its values and adds the other lane's copies of them: V - 1 shuffles for V sums (a
// butterfly per value takes 5 V), and the sums end up spread over the lanes. (A level per
// template instance: with a loop, NVRTC kept the values in local memory.)
template <int V, int O = 16> QDEV float transpose_sum(float* v, int lane) {
    static_assert(V > 0 && V <= 32 && (V & (V - 1)) == 0, "a power of two up to a warp");
    if constexpr (O == 0) {
        return v[0];
    } else if constexpr (V > 1) {
        const bool upper = lane & O;
#pragma unroll
        for (int k = 0; k < V / 2; k++) {
            const float send = upper ? v[k] : v[k + V / 2], keep = upper ? v[k + V / 2] : v[k];
            v[k] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        return transpose_sum<V / 2, O / 2>(v, lane);
    } else {
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
        return transpose_sum<1, O / 2>(v, lane);
    }
}

// The Mamba2 SSD's prefill with an f32 state. A warp holds R state rows (p) of one (sequence,
// head), each lane N / 32 states of every row (n = i * 32 + lane, the state's layout), W warps a
// block. `ssd_scan`'s prefill kernel gives each row its own LANES threads, which read every B
// and C value from shared memory once per row: shared memory bounded its time (35 wavefronts
// a warp-step). Here a lane reads a value once for R rows, keeps its partial C·state of every
// row and step of a TB window, and the warp sums those once per window (`transpose_sum`: 31
// shuffles for 32 sums, where a butterfly per row and step took 5 each).
// The inputs of TB steps at a time come into shared memory by `cp.async`, 16 bytes a copy where
// every operand allows it, the next window's while this one's steps run (requested into
// registers, as `ssd_scan` does, they and their addresses took the kernel to 251 registers; in
// copies of 4 bytes, their addresses were a third of its instructions). Each thread
// fake-quantizes the x and dt it copied, in place, with inverse scales; B and C come
// fake-quantized (`fake_quantize_bc`) or not quantized.
template <int H, int P, int G, int N, int R, int W>
QDEV void ssd_prefill(Opnd x, Opnd dt, Opnd Bm, Opnd Cm, const float* a_log, const float* dvec, const float* dt_bias, float dt_min, float dt_max,
                      void* state, float* out, int batch, int seq, const void* ahead, int ahead_bytes) {
    constexpr int TB = 8, PER = N / 32, T = 32 * W, PB = R * W, BPH = P / PB;
    static_assert(N % 32 == 0 && P % PB == 0 && PB % 4 == 0, "whole rows, lanes and 16-byte spans");
    static_assert(R * TB <= 32 && 32 % (R * TB) == 0, "a window's sums fit the warp's lanes");
    // Spans of 4 floats: a window's B (and C) is TB rows of N / 4, its x TB rows of PB / 4.
    constexpr int BSPANS = TB * N / 4, XSPANS = TB * PB / 4, BCR = (BSPANS + T - 1) / T;
    static_assert(XSPANS <= T, "one x span a thread");
    // SPREAD: log2 of the lanes that end up holding each sum (32 / (R * TB)).
    constexpr int SPREAD = R * TB == 32 ? 0 : R * TB == 16 ? 1 : 2;
    __shared__ __align__(16) float sB[2][TB][N];
    __shared__ __align__(16) float sC[2][TB][N];
    __shared__ __align__(16) float sX[2][TB][PB];
    __shared__ float sDt[2][TB], sDelta[TB], sDecay[TB];
    const int blk = blockIdx.x, pb = blk % BPH, h = (blk / BPH) % H, b = blk / (BPH * H);
    if (b >= batch) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, row0 = warp * R;
    const int grp = h / (H / G);
    const float A = -expf(a_log[h]), D = dvec[h], bias = dt_bias[h];
    // This warp's rows, each an f32 `StateRow` of 32 lanes (n = i * 32 + lane).
    const i64 row = ((i64)b * H + h) * P + pb * PB + row0;
    StateRow<N, 32, 0, 0, false, false, T> rows[R];
    float s[R][PER];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r].request(state, row + r, 0, lane, nullptr, s[r]);
    // This thread's x span (if any): its step and first column. Their scales are loaded after
    // the wait: before it, ptxas copied a per-tensor scale's one load into four registers, which
    // waits for the load (`tests/cuda_sass.rs`); a round trip once per block of a prefill costs
    // nothing.
    const int xj = threadIdx.x / (PB / 4), xq = threadIdx.x % (PB / 4) * 4;
    const bool has_x = threadIdx.x < XSPANS;
    const float sdt = ld_scale(dt, h);
    pdl_enter();
    l2_ahead(ahead, ahead_bytes);
    float sx[4], ix[4];
#pragma unroll
    for (int c = 0; c < 4; c++) sx[c] = ld_scale(x, h * P + pb * PB + xq + c);
#pragma unroll
    for (int c = 0; c < 4; c++) ix[c] = inverse_of(sx[c]);
    const float idt = inverse_of(sdt);
    const i64 row_base = (i64)b * seq;
    const float* b_col = Bm.p + grp * N;
    const float* c_col = Cm.p + grp * N;
    const float* x_col = x.p + h * P + pb * PB + xq;
    const bool wide = (((unsigned long long)b_col | (unsigned long long)c_col | (unsigned long long)x_col) & 15) == 0 && ((Bm.stride | Cm.stride | x.stride) & 3) == 0;
    auto copy_span = [&](float* dst, const float* src) {
        if (wide) {
            copy16_zfill(dst, src, 16);
        } else {
#pragma unroll
            for (int c = 0; c < 4; c++) copy_f32(dst + c, src + c);
        }
    };
    // Window t0's inputs into buffer `buf`, one commit group (empty past the sequence).
    auto request = [&](int t0, int buf) {
        const int steps = max(0, min(TB, seq - t0));
#pragma unroll
        for (int k = 0; k < BCR; k++) {
            const int e = threadIdx.x + k * T, j = e / (N / 4), n = e % (N / 4) * 4;
            if (e < BSPANS && j < steps) {
                const i64 r = row_base + t0 + j;
                copy_span(&sB[buf][j][n], b_col + r * Bm.stride + n);
                copy_span(&sC[buf][j][n], c_col + r * Cm.stride + n);
            }
        }
        if (has_x && xj < steps) copy_span(&sX[buf][xj][xq], x_col + (row_base + t0 + xj) * x.stride);
        if (threadIdx.x < steps) copy_f32(&sDt[buf][threadIdx.x], dt.p + (row_base + t0 + threadIdx.x) * dt.stride + h);
        cp_async_commit();
    };
    request(0, 0);
    for (int t0 = 0, buf = 0; t0 < seq; t0 += TB, buf ^= 1) {
        const int steps = min(TB, seq - t0);
        request(t0 + TB, buf ^ 1);
        cp_async_wait<1>();
        if (x.scale && has_x && xj < steps) {
#pragma unroll
            for (int c = 0; c < 4; c++) sX[buf][xj][xq + c] = fq_raw_inv(x, sX[buf][xj][xq + c], sx[c], ix[c]);
        }
        if (threadIdx.x < steps) {
            const float delta = ssd_delta(fq_raw_inv(dt, sDt[buf][threadIdx.x], sdt, idt), bias, dt_min, dt_max);
            sDelta[threadIdx.x] = delta;
            sDecay[threadIdx.x] = expf(delta * A);
        }
        __syncthreads();
        QUAMBA_TRACE_LANDED;
        float y[R * TB];
#pragma unroll
        for (int m = 0; m < R * TB; m++) y[m] = 0.f;
#pragma unroll
        for (int j = 0; j < TB; j++) {
            if (j >= steps) break;
            const float delta = sDelta[j], decay = sDecay[j];
            float bv[PER], cv[PER];
#pragma unroll
            for (int i = 0; i < PER; i++) bv[i] = sB[buf][j][i * 32 + lane], cv[i] = sC[buf][j][i * 32 + lane];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float dx = delta * sX[buf][j][row0 + r];
#pragma unroll
                for (int i = 0; i < PER; i++) {
                    s[r][i] = decay * s[r][i] + dx * bv[i];
                    y[r * TB + j] += cv[i] * s[r][i];
                }
            }
        }
        const float sum = transpose_sum<R * TB>(y, lane);
        const int m = lane >> SPREAD, r = m / TB, j = m % TB;
        if ((lane & ((1 << SPREAD) - 1)) == 0 && j < steps)
            out[(row_base + t0 + j) * (H * P) + h * P + pb * PB + row0 + r] = sum + D * sX[buf][j][row0 + r];
        QUAMBA_TRACE_SUMMED;
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < R; r++) rows[r].store(state, row + r, lane, s[r], nullptr);
}

// One step of a Mamba1 channel on this thread's PER states (state n = i * LANES + sub, or
// sub * PER + i where LANE_MAJOR): each decays by exp(Δ·A) and takes Δ·B·x; returns C·state
// summed over the channel's LANES threads.
template <int PER, int LANES, bool LANE_MAJOR = false>
QDEV float channel_step(float* s, const float* A, float delta, const float* B, const float* C, float x, int sub) {
    float y = 0.f;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int n = LANE_MAJOR ? sub * PER + i : i * LANES + sub;
        s[i] = expf(delta * A[i]) * s[i] + delta * B[n] * x;
        y += C[n] * s[i];
    }
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, LANES);
    return y;
}

// PER consecutive floats of shared memory (float4 loads where PER allows).
template <int PER> QDEV void shared_row(const float* p, float* v) {
    if constexpr (PER % 4 == 0) {
#pragma unroll
        for (int i = 0; i < PER; i += 4) {
            const float4 q = *(const float4*)(p + i);
            v[i] = q.x; v[i + 1] = q.y; v[i + 2] = q.z; v[i + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < PER; i++) v[i] = p[i];
    }
}

// TB whole steps of a Mamba1 channel on this thread's PER states n = sub * PER + i (B and C rows
// of N floats a step, in shared memory), unrolled without a bound, so that only the state's own
// multiply-add orders a step after the one before. (With a bound per step, each step was its own
// basic block, a chain of softplus, exponentials, state, sum and shuffles one after the other:
// about 800 cycles a step at 1.2 warps a scheduler.) The channel's LANES threads then sum their
// partial C·state of every step at once (`transpose_sum`, in the order the step's butterfly
// adds), leaving thread sub the y of steps sub·E + e, e < E = TB / LANES, in y[e].
template <int N, int LANES, int TB>
QDEV void channel_window(float* s, const float* A2, const float* delta, const float* xs, const float* sB, const float* sC, int sub, float* y) {
    static_assert(TB >= LANES, "every thread keeps a step's sum");
    constexpr int PER = N / LANES;
#pragma unroll
    for (int j = 0; j < TB; j++) {
        float bv[PER], cv[PER];
        shared_row<PER>(sB + j * N + sub * PER, bv);
        shared_row<PER>(sC + j * N + sub * PER, cv);
        const float dx = delta[j] * xs[j];
        y[j] = 0.f;
#pragma unroll
        for (int i = 0; i < PER; i++) {
            s[i] = exp2_approx(delta[j] * A2[i]) * s[i] + dx * bv[i];
            y[j] += cv[i] * s[i];
        }
    }
    transpose_sum<TB, LANES / 2>(y, sub);
}

// Mamba1 selective scan: a block holds CB channels of one sequence, LANES threads per channel
// with N / LANES states each; the sequence's B and C are staged in shared memory every TB steps
// (fake-quantized once per block). The prefill's kernel (AHEAD) runs whole windows of TB steps
// straight (`channel_window`), its decays by ex2.approx; the decode and few-row kernels keep
// `channel_step` and expf, as measured.
// It leaves its `ahead` tail alone (`l2_ahead`): at 16 rows it gained nothing (mamba-2.8b,
// 16 layers, 1.2420 → 1.2441 ms), and with int8 states its arithmetic had ptxas spill a state
// byte loaded before the wait.
template <int DI, int N, int LANES, int CB, int SQ, int SF, bool SG, bool AHEAD = false, int WINDOW = 8>
QDEV void selective_scan(Opnd x, Opnd dt, Opnd Bm, Opnd Cm, const float* a_log, const float* dvec, void* state, const float* state_scale,
                         const int* state_group, float* out, int batch, int seq, const void* ahead, int ahead_bytes) {
    const int PER = N / LANES, TB = AHEAD ? WINDOW : 8, BPS = DI / CB, T = CB * LANES;  // T: blockDim.x
    __shared__ __align__(16) float sB[TB][N], sC[TB][N];
    int blk = blockIdx.x;
    int cb = blk % BPS, b = blk / BPS;
    if (b >= batch) return;
    int cl = threadIdx.x / LANES, sub = threadIdx.x % LANES, d = cb * CB + cl;
    float A[PER], s[PER];
    const i64 row = (i64)b * DI + d;
    // The prefill's kernel holds a thread's states together (n = sub * PER + i).
    typedef StateRow<N, LANES, SQ, SF, SG, AHEAD, CB * LANES> Row;
    Row cached;
    // The state and the parameters are requested before waiting for the previous kernel (see
    // `ld_state`); the step's inputs after.
#pragma unroll
    for (int i = 0; i < PER; i++) A[i] = -expf(a_log[(i64)d * N + Row::byte_of(sub, i)]);
    cached.request(state, row, d, sub, state_group, s);
    cached.prefetch_scales(state_scale);
    float D = dvec[d];
    if constexpr (AHEAD) {
        // The prefill's own kernel, as `ssd_scan`'s: the next TB steps' inputs are requested
        // before this TB's steps run. Each (step, channel) of dt and x is loaded and converted
        // once a block, by the thread of its column xc (Δ = softplus of dt there too), and
        // passed on through shared memory: converted by each of a channel's LANES threads, they
        // were most of the kernel's instructions. Conversions take inverse scales loaded before
        // the wait (B and C: the same columns at every TB, T being a multiple of N in every
        // plan; other columns take their own scale).
        __shared__ float sDelta[TB][CB], sX[TB][CB];
        constexpr int BCR = (TB * N + T - 1) / T, XR = (TB + LANES - 1) / LANES;
        const int n0 = threadIdx.x % N, xc = threadIdx.x % CB, xj = threadIdx.x / CB, xd = cb * CB + xc;
        const float sb0 = ld_scale(Bm, n0), sc0 = ld_scale(Cm, n0), sdt = ld_scale(dt, xd), sx = ld_scale(x, xd);
        pdl_enter();
        cached.scales(sub, state_scale);
        const float ib0 = inverse_of(sb0), ic0 = inverse_of(sc0), idt = inverse_of(sdt), ix = inverse_of(sx);
        float rb[BCR], rc[BCR], rdt[XR], rx[XR], A2[PER];
#pragma unroll
        for (int i = 0; i < PER; i++) A2[i] = A[i] * 1.44269504f;  // exp(Δ·A) = 2^(Δ·A·log2 e)
        auto fetch = [&](int t0) {
            const int steps = min(TB, seq - t0);
#pragma unroll
            for (int k = 0; k < BCR; k++) {
                const int i = threadIdx.x + k * T, j = i / N, n = i % N;
                if (j < steps) {
                    const i64 r = (i64)b * seq + t0 + j;
                    rb[k] = Bm.p[r * Bm.stride + n];
                    rc[k] = Cm.p[r * Cm.stride + n];
                }
            }
#pragma unroll
            for (int k = 0; k < XR; k++) {
                const int j = xj + k * LANES;
                if (j < steps) {
                    const i64 r = (i64)b * seq + t0 + j;
                    rdt[k] = dt.p[r * dt.stride + xd];
                    rx[k] = x.p[r * x.stride + xd];
                }
            }
        };
        fetch(0);
        for (int t0 = 0; t0 < seq; t0 += TB) {
            const int steps = min(TB, seq - t0);
#pragma unroll
            for (int k = 0; k < BCR; k++) {
                const int i = threadIdx.x + k * T, j = i / N, n = i % N;
                if (j < steps) {
                    sB[j][n] = n == n0 ? fq_raw_inv(Bm, rb[k], sb0, ib0) : fq_raw(Bm, rb[k], ld_scale(Bm, n));
                    sC[j][n] = n == n0 ? fq_raw_inv(Cm, rc[k], sc0, ic0) : fq_raw(Cm, rc[k], ld_scale(Cm, n));
                }
            }
#pragma unroll
            for (int k = 0; k < XR; k++) {
                const int j = xj + k * LANES;
                if (j < steps) {
                    sDelta[j][xc] = softplus_f(fq_raw_inv(dt, rdt[k], sdt, idt));
                    sX[j][xc] = fq_raw_inv(x, rx[k], sx, ix);
                }
            }
            __syncthreads();
            QUAMBA_TRACE_LANDED;
            if (t0 + TB < seq) fetch(t0 + TB);
            if (t0 == 0) cached.values(s, sub, state_scale);
            float delta[TB], xs[TB];
#pragma unroll
            for (int j = 0; j < TB; j++) {
                delta[j] = sDelta[j][cl];
                xs[j] = sX[j][cl];
            }
            if constexpr (TB >= LANES) {
                if (steps == TB) {
                    constexpr int E = TB / LANES;
                    float y[TB];
                    channel_window<N, LANES, TB>(s, A2, delta, xs, &sB[0][0], &sC[0][0], sub, y);
#pragma unroll
                    for (int e = 0; e < E; e++) {
                        const int j = sub * E + e;
                        out[((i64)b * seq + t0 + j) * DI + d] = y[e] + D * sX[j][cl];
                    }
                    QUAMBA_TRACE_SUMMED;
                    __syncthreads();
                    continue;
                }
            }
#pragma unroll
            for (int j = 0; j < TB; j++) {
                if (t0 + j >= seq) break;
                const float y = channel_step<PER, LANES, true>(s, A, delta[j], sB[j], sC[j], xs[j], sub);
                if (sub == 0) out[((i64)b * seq + t0 + j) * DI + d] = y + D * xs[j];
            }
            QUAMBA_TRACE_SUMMED;
            __syncthreads();
        }
        cached.store(state, row, sub, s, state_scale);
        return;
    }
    pdl_enter();
    cached.scales(sub, state_scale);
    for (int t0 = 0; t0 < seq; t0 += TB) {
        const int steps = min(TB, seq - t0);
        for (int i = threadIdx.x; i < steps * N; i += blockDim.x) {
            int j = i / N, n = i % N;
            i64 r = (i64)b * seq + t0 + j;
            sB[j][n] = ld(Bm, r, n);
            sC[j][n] = ld(Cm, r, n);
        }
        float dts[TB], xs[TB];
#pragma unroll
        for (int j = 0; j < TB; j++) {
            i64 r = (i64)b * seq + min(t0 + j, seq - 1);
            dts[j] = ld(dt, r, d);
            xs[j] = ld(x, r, d);
        }
        __syncthreads();
        QUAMBA_TRACE_LANDED;
        if (t0 == 0) cached.values(s, sub, state_scale);
#pragma unroll
        for (int j = 0; j < TB; j++) {
            if (t0 + j >= seq) break;
            const float y = channel_step<PER, LANES>(s, A, softplus_f(dts[j]), sB[j], sC[j], xs[j], sub);
            if (sub == 0) out[((i64)b * seq + t0 + j) * DI + d] = y + D * xs[j];
        }
        QUAMBA_TRACE_SUMMED;
        __syncthreads();
    }
    cached.store(state, row, sub, s, state_scale);
}

// Mamba1's selective scan at one row (batch-1 decode) with dt_proj's product in it, so that the
// step runs no dt_proj launch (nor the one materializing its fake-quantized input). A block's CB
// channels are CB / 8 whole tiles of the packed dt_proj weight (kind 0: f16, kind 1: int4 for f16
// products), contiguous in memory: the block copies them to shared memory (16-byte `cp.async`)
// before waiting for the previous kernel, as it loads its state. Each warp then computes whole
// tiles' Δ with the tensor-core product `gemm` runs for one row (WK: its decode kernel's k-slices),
// slice by slice in the same order: the same mma.sync sequence on the same f16 operands, each
// slice's group sums scaled as they end, the slices added in order, times the activation scale,
// plus the bias; so Δ is bit for bit what the dt_proj launch would have stored. dt's own fake
// quantization follows, then the step as `selective_scan` runs it (`channel_step`).
template <int DI, int N, int LANES, int CB, int SQ, int SF, bool SG, int KIND, int DK, int GROUP, int WK>
QDEV void selective_step_dt(Opnd x, Opnd dt, Opnd Bm, Opnd Cm, const float* a_log, const float* dvec, void* state, const float* state_scale,
                            const int* state_group, float* out, const void* ahead, int ahead_bytes, Opnd dt_in, const void* dt_w, const float* dt_scales,
                            float dt_act, const float* dt_bias) {
    static_assert(KIND == 0 || KIND == 1, "dt_proj with f16 products");
    static_assert(CB % 8 == 0 && DI % CB == 0 && (CB * LANES) % 32 == 0, "a block's channels are whole 8-row tiles");
    typedef Layout<KIND> L;
    const int PER = N / LANES, T = CB * LANES, KC = (DK + L::CH - 1) / L::CH, NG = (DK + GROUP - 1) / GROUP, STEPS = L::CH / L::KSTEP;
    const int TILES = CB / 8, WORDS = TILES * KC * 32;  // the block's tiles, in 16-byte words
    __shared__ uint4 sW[WORDS];
    __shared__ float sB[N], sC[N], sA[KC * L::CH], sDelta[CB], sScale[CB * NG], sBias[CB];
    const int cb = blockIdx.x, t = threadIdx.x;
    const int cl = t / LANES, sub = t % LANES, d = cb * CB + cl;
    const uint4* src = (const uint4*)dt_w + (i64)cb * WORDS;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    for (int i = t; i < WORDS; i += T) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(&sW[i])), "l"(src + i) : "memory");
    asm volatile("cp.async.commit_group;" ::: "memory");
#else
    for (int i = t; i < WORDS; i += T) sW[i] = src[i];
#endif
    // Everything below up to the wait is only requested before it, never used: a value used
    // there (A's exp, a store to shared memory) would hold the wait back until its load landed,
    // and this step starts late, about 1.3 us after in_proj ends (two launches back), so that
    // such a round trip came after x_proj's end (x_proj's end -> the wait: 1.19 us, against
    // 0.6-0.8 for the other launches; `bench/RESULTS.md`, fifteenth session).
    float A[PER], s[PER];
    StateRow<N, LANES, SQ, SF, SG, false, CB * LANES> cached;
#pragma unroll
    for (int i = 0; i < PER; i++) A[i] = a_log[(i64)d * N + i * LANES + sub];
    cached.request(state, d, d, sub, state_group, s);
    cached.prefetch_scales(state_scale);
    const float D = dvec[d], dt_q = dt.scale ? dt.scale[dt.scale_vec ? d : 0] : 0.f;
    // The product's scales and bias are weights too: in shared memory before the first product,
    // so that no dependent global load sits between the tiles' products.
    const int SCALES = (CB * NG + T - 1) / T, BIASES = (CB + T - 1) / T;
    float scale_v[SCALES], bias_v[BIASES];
#pragma unroll
    for (int j = 0; j < SCALES; j++) scale_v[j] = t + j * T < CB * NG && dt_scales ? dt_scales[(i64)cb * CB * NG + t + j * T] : 1.f;
#pragma unroll
    for (int j = 0; j < BIASES; j++) bias_v[j] = t + j * T < CB && dt_bias ? dt_bias[cb * CB + t + j * T] : 0.f;
    // So are the scales of the inputs this thread stages (see `ld_scale`).
    const int KA = (KC * L::CH + T - 1) / T;
    float sa[KA];
#pragma unroll
    for (int j = 0; j < KA; j++) sa[j] = t + j * T < DK ? ld_scale(dt_in, t + j * T) : 0.f;
    const float sb = t < N ? ld_scale(Bm, t) : 0.f, sc = t < N ? ld_scale(Cm, t) : 0.f, sx = ld_scale(x, d);
    pdl_enter();
    cached.scales(sub, state_scale);
#pragma unroll
    for (int i = 0; i < PER; i++) A[i] = -expf(A[i]);
#pragma unroll
    for (int j = 0; j < SCALES; j++)
        if (t + j * T < CB * NG) sScale[t + j * T] = scale_v[j];
#pragma unroll
    for (int j = 0; j < BIASES; j++)
        if (t + j * T < CB) sBias[t + j * T] = bias_v[j];
    // The step's inputs (B, C, dt_proj's input, x) are all requested, raw, before any is
    // converted: converted as they arrived, each waited for its own L2 round trip. Each thread
    // converts what it copied once its copies (and the tiles') have landed.
    for (int i = t; i < N; i += T) { copy_f32(&sB[i], Bm.p + i); copy_f32(&sC[i], Cm.p + i); }
#pragma unroll
    for (int j = 0; j < KA; j++) {
        const int k = t + j * T;
        if (k < DK) copy_f32(&sA[k], dt_in.p + k);
    }
    const float x_raw = x.p[d];
    // Here, not at the end: asked for as the step ends, 16-layer mamba-2.8b W4A8 TPOT went from
    // 0.2696 to 0.2795 ms instead of to 0.2662 (H200; a block's bulk prefetch seems to hold its
    // exit back). Not with int8 states: wherever it stood, its arithmetic had ptxas spill a state
    // byte loaded before the wait (mamba-2.8b's shape, NVRTC 13.5), and the spill's store waited
    // for that load.
    if constexpr (SQ == 0) l2_ahead(ahead, ahead_bytes);
    copies_landed();
    for (int i = t; i < N; i += T) { sB[i] = fq_raw(Bm, sB[i], i == t ? sb : ld_scale(Bm, i)); sC[i] = fq_raw(Cm, sC[i], i == t ? sc : ld_scale(Cm, i)); }
#pragma unroll
    for (int j = 0; j < KA; j++) {
        const int k = t + j * T;
        if (k < KC * L::CH) sA[k] = k < DK ? fq_raw(dt_in, sA[k], sa[j]) : 0.f;
    }
    const float xs = fq_raw(x, x_raw, sx);
    __syncthreads();
    const int lane = t & 31, g = lane >> 2, tq = lane & 3;
    for (int tile = t >> 5; tile < TILES; tile += T / 32) {
        const int n0 = tile * 8 + 2 * tq;  // this lane's two output channels, within the block
        float total[2] = {0.f, 0.f};
#pragma unroll
        for (int w = 0; w < WK; w++) {
            const int c_begin = (KC * w) / WK, c_end = (KC * (w + 1)) / WK;
            float acc[2] = {0.f, 0.f}, pf[4] = {0.f, 0.f, 0.f, 0.f}, gs[2] = {1.f, 1.f};
            int cur = -1;
#pragma unroll
            for (int c = c_begin; c < c_end; c++) {
                const uint4 wv = sW[(tile * KC + c) * 32 + lane];
#pragma unroll
                for (int ks = 0; ks < STEPS; ks++) {
                    const int kb = c * L::CH + ks * L::KSTEP, grp = kb / GROUP;
                    if (grp != cur) {
                        if (cur >= 0) { acc[0] += gs[0] * pf[0]; acc[1] += gs[1] * pf[1]; }
                        pf[0] = pf[1] = pf[2] = pf[3] = 0.f;
                        cur = grp;
                        gs[0] = sScale[n0 * NG + grp];
                        gs[1] = sScale[(n0 + 1) * NG + grp];
                    }
                    u32 b0, b1;
                    b_frag<KIND>(wv, ks, b0, b1);
                    const u32 a0 = g == 0 ? pack_half2(sA[kb + 2 * tq], sA[kb + 2 * tq + 1]) : 0u;
                    const u32 a2 = g == 0 ? pack_half2(sA[kb + 8 + 2 * tq], sA[kb + 9 + 2 * tq]) : 0u;
                    mma_f16(pf, a0, 0u, a2, 0u, b0, b1);
                }
            }
            if (cur >= 0) { acc[0] += gs[0] * pf[0]; acc[1] += gs[1] * pf[1]; }
            if (w == 0) { total[0] = acc[0]; total[1] = acc[1]; }
            else { total[0] += acc[0]; total[1] += acc[1]; }
        }
        if (g == 0) {
            sDelta[n0] = total[0] * dt_act + sBias[n0];
            sDelta[n0 + 1] = total[1] * dt_act + sBias[n0 + 1];
        }
    }
    __syncthreads();
    float v = sDelta[cl];
    if (dt.scale) v = fake_quant(v, dt_q);
    cached.values(s, sub, state_scale);
    const float y = channel_step<PER, LANES>(s, A, softplus_f(v), sB, sC, xs, sub);
    if (sub == 0) out[d] = y + D * xs;
    cached.store(state, d, sub, s, state_scale);
}

// ---------------------------------------------------------------------------------------------
// Greedy decoding on the device: the argmax of row r*row_step + row_off of the logits becomes
// the next input token of sequence r; the step's tokens are also appended to `history`.
template <int V> QDEV void argmax_rows(const float* logits, int row_step, int row_off, i64* next, i64* history, int* step, int batch) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    int r = blockIdx.x;
    const float* row = logits + ((i64)r * row_step + row_off) * V;
    float bv = -3.4e38f;
    int bi = 0;
#pragma unroll 8
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = row[i];
        if (v > bv) { bv = v; bi = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_v[warp] = bv; best_i[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) { bv = best_v[w]; bi = best_i[w]; }
        next[r] = bi;
        if (history) history[(i64)(*step) * batch + r] = bi;
    }
}

}  // namespace quamba

// Advances the step counter of on-device greedy decoding (one thread; after every argmax).
extern "C" __global__ void quamba_advance_step(int* step) {
    quamba::pdl_enter();
    *step += 1;
}
