// Microbenchmark of the one-row int8-activation decode product (`quamba::gemv`) at Mamba2-2.7B's
// in_proj and out_proj shapes (int4 weights, groups of 128), against variants of its warp layout
// and L2 prefetch, and against a kernel that only streams the same weight bytes (the floor for a
// kernel of that size, launch and ramp included). Every case runs as a CUDA graph of dependent
// launches cycling through 8 weight copies (more than L2 holds), with and without programmatic
// dependent launch, so a launch's time is what it adds to a chain of kernels, as in a decode step.
//   nvcc -O3 -std=c++17 -arch=sm_90 -o gemv_micro bench/gemv_micro.cu && ./gemv_micro
// (bench/gemv_micro.sh does that on the device.)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "../kernels/cuda/quamba.cuh"

#define CHECK(x)                                                                        \
    do {                                                                                \
        cudaError_t e = (x);                                                            \
        if (e != cudaSuccess) {                                                         \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static const int COPIES = 8, CHAIN = 64, REPLAYS = 20;

template <int KIND, int K, int N, int G, int WN, int WK, int DEPTH>
__global__ void __launch_bounds__(WN* WK * 32) current(const void* A, int lda, const uint4* W, const float* scales, float act_scale,
                                                      const float* bias, const float* resid, int ldr, float* out, int ldo, int M) {
    quamba::gemv<KIND, K, N, G, WN, WK, DEPTH>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M);
}

// The weights only: every lane reads its 16-byte words grid-stride, U loads in flight.
template <int U>
__global__ void stream_only(const uint4* w, i64 n16, u32* sink) {
    quamba::pdl_enter();
    u32 acc = 0;
    i64 stride = (i64)gridDim.x * blockDim.x;
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (U - 1) * stride < n16; i += U * stride) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = w[i + u * stride];
#pragma unroll
        for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) acc ^= w[i].x;
    if (acc == 0x9e3779b9u) sink[0] = acc;
}

__global__ void empty_kernel() { quamba::pdl_enter(); }

__global__ void fill(u32* p, i64 n, u32 seed) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        u32 x = (u32)i * 2654435761u ^ seed;
        x ^= x >> 13;
        x *= 0x5bd1e995u;
        x ^= x >> 15;
        p[i] = x;
    }
}

// The same product with each block's weights and scales fetched by the bulk-copy engine into
// shared memory (one `cp.async.bulk` per tile and one per tile's scales, completing on one
// mbarrier per tile), issued by one thread before the dependency wait: every byte of the
// product is requested at launch, with no registers held for loads in flight.
QDEV u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
QDEV void mbar_init(unsigned long long* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)) : "memory");
}
QDEV void mbar_expect(unsigned long long* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
QDEV void bulk_to_shared(void* dst, const void* src, u32 bytes, unsigned long long* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
QDEV void mbar_wait(unsigned long long* bar, u32 parity) {
    asm volatile(
        "{\n .reg .pred done;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n @!done bra WAIT;\n}\n" ::"r"(
            smem_u32(bar)),
        "r"(parity)
        : "memory");
}

template <int K, int N, int G, int WN, int WK>
constexpr int bulk_smem() {
    return WN * ((K + 127) / 128) * 512 + WN * 8 * ((K + G - 1) / G) * 4 + ((K + 127) / 128) * 128;
}

template <int K, int N, int G, int WN, int WK>
__global__ void __launch_bounds__(WN* WK * 32) gemv_bulk(const void* A, int lda, const uint4* W, const float* scales, float act_scale,
                                                        const float* bias, const float* resid, int ldr, float* out, int ldo, int M) {
    static_assert(G == 128, "one group per chunk");
    constexpr int CH = 128, KC = (K + CH - 1) / CH, KP = KC * CH, NG = (K + G - 1) / G, N_TILES = (N + 7) / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    uint4* sw = (uint4*)smem;
    float* ss = (float*)(smem + WN * KC * 512);
    u32* stage = (u32*)(smem + WN * KC * 512 + WN * 8 * NG * 4);
    __shared__ __align__(8) unsigned long long bars[WN];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int wn = warp % WN, wk = warp / WN;
    int g = lane >> 2, t = lane & 3;
    int nt = blockIdx.x * WN + wn;
    int m = blockIdx.y;
    if (threadIdx.x == 0) {
        for (int i = 0; i < WN; i++) mbar_init(&bars[i]);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        for (int i = 0; i < WN; i++) {
            int tile = blockIdx.x * WN + i;
            if (tile >= N_TILES) break;
            mbar_expect(&bars[i], KC * 512 + 8 * NG * 4);
            bulk_to_shared(sw + i * KC * 32, W + (i64)tile * KC * 32, KC * 512, &bars[i]);
            bulk_to_shared(ss + i * 8 * NG, scales + (i64)tile * 8 * NG, 8 * NG * 4, &bars[i]);
        }
    }
    quamba::pdl_enter();
    bool tile_ok = nt < N_TILES;
    int n = nt * 8 + g;
    float early_bias = 0.f, early_resid = 0.f;
    if (wk == 0 && t == 0 && tile_ok && n < N) {
        early_bias = bias ? bias[n] : 0.f;
        early_resid = resid ? resid[(i64)m * ldr + n] : 0.f;
    }
    quamba::stage_permuted<CH, K, KP, WN * WK * 32>((const i8*)A + (i64)m * lda, stage);
    __syncthreads();
    float acc = 0.f;
    if (tile_ok) {
        mbar_wait(&bars[wn], 0);
        int c_begin = (KC * wk) / WK, c_end = (KC * (wk + 1)) / WK;
        const uint4* wt = sw + wn * KC * 32 + lane;
        const float* srow = ss + wn * 8 * NG + g * NG;
        for (int c = c_begin; c < c_end; c++) {
            uint4 wv = wt[c * 32];
            u32 w[4] = {wv.x, wv.y, wv.z, wv.w};
            const u32* ap = stage + c * (CH / 4) + t * (CH / 16);
            u32 a[CH / 16];
#pragma unroll
            for (int i = 0; i < CH / 64; i++) {
                uint4 v = *(const uint4*)(ap + 4 * i);
                a[4 * i] = v.x; a[4 * i + 1] = v.y; a[4 * i + 2] = v.z; a[4 * i + 3] = v.w;
            }
            int part = 0;
#pragma unroll
            for (int s = 0; s < 4; s++) {
                part = quamba::dp4a_s8((w[s] << 4) & 0xF0F0F0F0u, a[2 * s], part);
                part = quamba::dp4a_s8(w[s] & 0xF0F0F0F0u, a[2 * s + 1], part);
            }
            part += __shfl_xor_sync(0xffffffffu, part, 1);
            part += __shfl_xor_sync(0xffffffffu, part, 2);
            acc += srow[c] * (float)(part >> 4);
        }
    }
    if (WK > 1) {
        __shared__ float red[WK][WN][8];
        if (t == 0) red[wk][wn][g] = acc;
        __syncthreads();
        if (wk != 0) return;
        acc = red[0][wn][g];
#pragma unroll
        for (int s = 1; s < WK; s++) acc += red[s][wn][g];
    }
    if (t == 0 && tile_ok && n < N) {
        float v = acc * act_scale + early_bias;
        if (resid) v = early_resid + v;
        out[(i64)m * ldo + n] = v;
    }
}

template <typename... P, typename... Q>
static void launch(void (*kernel)(P...), dim3 grid, dim3 block, bool pdl, cudaStream_t s, Q... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    CHECK(cudaLaunchKernelEx(&cfg, kernel, ((P)args)...));
}

// Microseconds per launch of `body(copy)` in a graph of CHAIN launches.
template <typename F>
static double time_chain(cudaStream_t s, F body) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < CHAIN; i++) body(i % COPIES);
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaStreamSynchronize(s));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a, s));
    for (int r = 0; r < REPLAYS; r++) CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    return ms * 1000.0 / (REPLAYS * CHAIN);
}

struct Shape {
    const char* name;
    int k, n;
    bool resid;
    uint4* w;       // COPIES packed weights
    float* scales;  // COPIES
    i64 w16, nscales;
    i8* a;
    float* r;
    float* out;
    float* ref;
};

static void alloc(Shape& s) {
    int kc = (s.k + 127) / 128, tiles = (s.n + 7) / 8;
    s.w16 = (i64)tiles * kc * 32;
    s.nscales = (i64)s.n * ((s.k + 127) / 128);
    CHECK(cudaMalloc(&s.w, s.w16 * 16 * COPIES));
    CHECK(cudaMalloc(&s.scales, s.nscales * 4 * COPIES));
    CHECK(cudaMalloc(&s.a, s.k));
    CHECK(cudaMalloc(&s.r, s.n * 4));
    CHECK(cudaMalloc(&s.out, s.n * 4));
    CHECK(cudaMalloc(&s.ref, s.n * 4));
    fill<<<1024, 256>>>((u32*)s.w, s.w16 * 4 * COPIES, 1);
    fill<<<64, 256>>>((u32*)s.a, s.k / 4, 2);
    std::vector<float> sc(s.nscales * COPIES), r(s.n);
    for (size_t i = 0; i < sc.size(); i++) sc[i] = 1e-3f * (1 + (i * 7919) % 13);
    for (int i = 0; i < s.n; i++) r[i] = 0.01f * (i % 17);
    CHECK(cudaMemcpy(s.scales, sc.data(), sc.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(s.r, r.data(), r.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaDeviceSynchronize());
}

static double max_rel_diff(const Shape& s) {
    std::vector<float> a(s.n), b(s.n);
    CHECK(cudaMemcpy(a.data(), s.out, s.n * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(b.data(), s.ref, s.n * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (int i = 0; i < s.n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

template <int K, int N, int WN, int WK, int DEPTH>
static void gemv_case(Shape& s, cudaStream_t st, const char* label, bool reference) {
    const int tiles = (N + 7) / 8;
    dim3 grid((tiles + WN - 1) / WN, 1), block(WN * WK * 32);
    auto kernel = current<3, K, N, 128, WN, WK, DEPTH>;
    float* out = reference ? s.ref : s.out;
    launch(kernel, grid, block, false, st, (const void*)s.a, K, (const uint4*)s.w, (const float*)s.scales, 0.01f,
           (const float*)nullptr, (const float*)(s.resid ? s.r : nullptr), N, out, N, 1);
    CHECK(cudaStreamSynchronize(st));
    double diff = reference ? 0.0 : max_rel_diff(s);
    double t[2];
    for (int pdl = 0; pdl < 2; pdl++)
        t[pdl] = time_chain(st, [&](int c) {
            launch(kernel, grid, block, pdl == 1, st, (const void*)s.a, K, (const uint4*)(s.w + c * s.w16),
                   (const float*)(s.scales + c * s.nscales), 0.01f, (const float*)nullptr,
                   (const float*)(s.resid ? s.r : nullptr), N, s.out, N, 1);
        });
    double mb = (s.w16 * 16 + s.nscales * 4) / 1e6;
    printf("| %s | gemv %s | %dx%d warps, ring %d | %d blocks | %.2f | %.2f | %.2f TB/s | %.1e |\n", s.name, label, WN, WK,
           DEPTH, grid.x, t[0], t[1], mb / t[1], diff);
}

template <int K, int N, int WN, int WK>
static void bulk_case(Shape& s, cudaStream_t st) {
    const int tiles = (N + 7) / 8;
    dim3 grid((tiles + WN - 1) / WN, 1), block(WN * WK * 32);
    auto kernel = gemv_bulk<K, N, 128, WN, WK>;
    constexpr int bytes = bulk_smem<K, N, 128, WN, WK>();
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    cudaLaunchConfig_t cfg = {};
    double t[2];
    auto go = [&](int c, bool pdl) {
        cfg.gridDim = grid;
        cfg.blockDim = block;
        cfg.dynamicSmemBytes = bytes;
        cfg.stream = st;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr;
        cfg.numAttrs = pdl ? 1 : 0;
        CHECK(cudaLaunchKernelEx(&cfg, kernel, (const void*)s.a, K, (const uint4*)(s.w + c * s.w16),
                                 (const float*)(s.scales + c * s.nscales), 0.01f, (const float*)nullptr,
                                 (const float*)(s.resid ? s.r : nullptr), N, s.out, N, 1));
    };
    go(0, false);
    CHECK(cudaStreamSynchronize(st));
    double diff = max_rel_diff(s);
    for (int pdl = 0; pdl < 2; pdl++) t[pdl] = time_chain(st, [&](int c) { go(c, pdl == 1); });
    double mb = (s.w16 * 16 + s.nscales * 4) / 1e6;
    printf("| %s | gemv bulk | %dx%d warps, %d KB smem | %d blocks | %.2f | %.2f | %.2f TB/s | %.1e |\n", s.name, WN, WK,
           bytes / 1024, grid.x, t[0], t[1], mb / t[1], diff);
}

template <int U>
static void stream_case(Shape& s, cudaStream_t st, int blocks, int threads, u32* sink) {
    double t[2];
    for (int pdl = 0; pdl < 2; pdl++)
        t[pdl] = time_chain(st, [&](int c) {
            launch(stream_only<U>, dim3(blocks), dim3(threads), pdl == 1, st, (const uint4*)(s.w + c * s.w16), s.w16, sink);
        });
    double mb = (s.w16 * 16) / 1e6;
    printf("| %s | weights only | %d loads in flight | %d x %d | %.2f | %.2f | %.2f TB/s | |\n", s.name, U, blocks, threads, t[0],
           t[1], mb / t[1]);
}

int main() {
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    int sms = p.multiProcessorCount;
    printf("# %s, %d SMs, L2 %d MB; %d weight copies, graphs of %d dependent launches\n\n", p.name, sms, p.l2CacheSize >> 20,
           COPIES, CHAIN);
    printf("| shape | kernel | layout | grid | µs / launch | with PDL | weights at (PDL) | max rel diff |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    cudaStream_t st;
    CHECK(cudaStreamCreate(&st));
    u32* sink;
    CHECK(cudaMalloc(&sink, 4));
    {
        double t[2];
        for (int pdl = 0; pdl < 2; pdl++)
            t[pdl] = time_chain(st, [&](int) { launch(empty_kernel, dim3(sms), dim3(128), pdl == 1, st); });
        printf("| - | empty | | %d x 128 | %.2f | %.2f | | |\n", sms, t[0], t[1]);
    }

    Shape in{"in_proj 2560x10576", 2560, 10576, false};
    alloc(in);
    gemv_case<2560, 10576, 4, 2, 4>(in, st, "(plan)", true);
    gemv_case<2560, 10576, 4, 2, 4>(in, st, "(plan)", false);
    gemv_case<2560, 10576, 4, 2, 10>(in, st, "", false);
    gemv_case<2560, 10576, 2, 4, 5>(in, st, "", false);
    gemv_case<2560, 10576, 1, 5, 4>(in, st, "", false);
    gemv_case<2560, 10576, 2, 5, 4>(in, st, "", false);
    gemv_case<2560, 10576, 1, 10, 2>(in, st, "", false);
    gemv_case<2560, 10576, 8, 1, 8>(in, st, "", false);
    gemv_case<2560, 10576, 4, 1, 8>(in, st, "", false);
    gemv_case<2560, 10576, 1, 20, 1>(in, st, "", false);
    bulk_case<2560, 10576, 4, 2>(in, st);
    bulk_case<2560, 10576, 2, 2>(in, st);
    bulk_case<2560, 10576, 2, 4>(in, st);
    bulk_case<2560, 10576, 1, 4>(in, st);
    bulk_case<2560, 10576, 8, 1>(in, st);
    bulk_case<2560, 10576, 4, 1>(in, st);
    bulk_case<2560, 10576, 8, 2>(in, st);
    for (int b : {sms, 2 * sms, 4 * sms}) {
        stream_case<4>(in, st, b, 256, sink);
        stream_case<8>(in, st, b, 256, sink);
    }

    Shape out{"out_proj 5120x2560", 5120, 2560, true};
    alloc(out);
    gemv_case<5120, 2560, 1, 7, 4>(out, st, "(plan)", true);
    gemv_case<5120, 2560, 1, 7, 4>(out, st, "(plan)", false);
    gemv_case<5120, 2560, 1, 8, 5>(out, st, "", false);
    gemv_case<5120, 2560, 1, 10, 4>(out, st, "", false);
    gemv_case<5120, 2560, 1, 20, 2>(out, st, "", false);
    gemv_case<5120, 2560, 2, 10, 4>(out, st, "", false);
    gemv_case<5120, 2560, 1, 5, 8>(out, st, "", false);
    gemv_case<5120, 2560, 1, 32, 2>(out, st, "", false);
    bulk_case<5120, 2560, 1, 7>(out, st);
    bulk_case<5120, 2560, 1, 4>(out, st);
    bulk_case<5120, 2560, 1, 8>(out, st);
    bulk_case<5120, 2560, 1, 10>(out, st);
    bulk_case<5120, 2560, 2, 4>(out, st);
    bulk_case<5120, 2560, 1, 16>(out, st);
    for (int b : {sms, 2 * sms, 4 * sms}) {
        stream_case<4>(out, st, b, 256, sink);
        stream_case<8>(out, st, b, 256, sink);
    }
    return 0;
}
