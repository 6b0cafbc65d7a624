// Microbenchmark of the one-row int8-activation decode product (`quamba::gemv`) at Mamba2-2.7B's
// in_proj and out_proj shapes (int4 weights, groups of 128): warp layouts, with each warp's
// register ring or with the block's tiles fetched into shared memory in bulk, against a kernel
// that only streams the same weight bytes (the floor for a kernel of that size, launch and ramp
// included). Every case runs as a CUDA graph of dependent
// launches cycling through 8 weight copies (more than L2 holds), with and without programmatic
// dependent launch, so a launch's time is what it adds to a chain of kernels, as in a decode step.
//   nvcc -O3 -std=c++17 -arch=sm_90 -o gemv_micro bench/gemv_micro.cu && ./gemv_micro
// (bench/gemv_micro.sh does that on the device.)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "../kernels/cuda/quamba.cuh"

#include "cuda_check.h"

static const int COPIES = 8, CHAIN = 64, REPLAYS = 20;

template <int KIND, int K, int N, int G, int WN, int WK, int DEPTH, bool BULK>
__global__ void __launch_bounds__(WN* WK * 32) product(const void* A, int lda, const uint4* W, const float* scales, float act_scale,
                                                      const float* bias, const float* resid, int ldr, float* out, int ldo, int M) {
    quamba::gemv<KIND, K, N, G, WN, WK, DEPTH, BULK>(A, lda, W, scales, act_scale, bias, resid, ldr, out, ldo, M);
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

template <typename... P, typename... Q>
static void launch(void (*kernel)(P...), dim3 grid, dim3 block, int smem, bool pdl, cudaStream_t s, Q... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
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

// The product at one layout, ring (BULK false: DEPTH chunks per warp) or bulk (the block's tiles
// in shared memory); `reference` writes the output the other cases are compared with.
template <int K, int N, int WN, int WK, int DEPTH, bool BULK>
static void gemv_case(Shape& s, cudaStream_t st, const char* label, bool reference = false) {
    const int tiles = (N + 7) / 8, chunks = (K + 127) / 128;
    dim3 grid((tiles + WN - 1) / WN, 1), block(WN * WK * 32);
    auto kernel = product<3, K, N, 128, WN, WK, DEPTH, BULK>;
    const int smem = BULK ? WN * (chunks * 512 + 8 * chunks * 4) : 0;
    if (smem > 48 * 1024) CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    auto go = [&](int c, bool pdl, float* out) {
        launch(kernel, grid, block, smem, pdl, st, (const void*)s.a, K, (const uint4*)(s.w + c * s.w16),
               (const float*)(s.scales + c * s.nscales), 0.01f, (const float*)nullptr, (const float*)(s.resid ? s.r : nullptr), N,
               out, N, 1);
    };
    go(0, false, reference ? s.ref : s.out);
    CHECK(cudaStreamSynchronize(st));
    double diff = reference ? 0.0 : max_rel_diff(s);
    double t[2];
    for (int pdl = 0; pdl < 2; pdl++) t[pdl] = time_chain(st, [&](int c) { go(c, pdl == 1, s.out); });
    double mb = (s.w16 * 16 + s.nscales * 4) / 1e6;
    char layout[64];
    if (BULK) snprintf(layout, sizeof layout, "%dx%d warps, %d KB shared", WN, WK, smem / 1024);
    else snprintf(layout, sizeof layout, "%dx%d warps, ring %d", WN, WK, DEPTH);
    printf("| %s | gemv %s%s | %s | %d blocks | %.2f | %.2f | %.2f TB/s | %.1e |\n", s.name, BULK ? "bulk " : "ring ", label, layout,
           grid.x, t[0], t[1], mb / t[1], diff);
}

template <int U>
static void stream_case(Shape& s, cudaStream_t st, int blocks, int threads, u32* sink) {
    double t[2];
    for (int pdl = 0; pdl < 2; pdl++)
        t[pdl] = time_chain(st, [&](int c) {
            launch(stream_only<U>, dim3(blocks), dim3(threads), 0, pdl == 1, st, (const uint4*)(s.w + c * s.w16), s.w16, sink);
        });
    double mb = (s.w16 * 16) / 1e6;
    printf("| %s | weights only | %d loads in flight | %d x %d | %.2f | %.2f | %.2f TB/s | |\n", s.name, U, blocks, threads, t[0],
           t[1], mb / t[1]);
}

// The weights-only kernel with 1, 2 and 4 blocks of 256 threads per SM, 4 and 8 loads in flight.
static void stream_cases(Shape& s, cudaStream_t st, int sms, u32* sink) {
    for (int b : {sms, 2 * sms, 4 * sms}) {
        stream_case<4>(s, st, b, 256, sink);
        stream_case<8>(s, st, b, 256, sink);
    }
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
            t[pdl] = time_chain(st, [&](int) { launch(empty_kernel, dim3(sms), dim3(128), 0, pdl == 1, st); });
        printf("| - | empty | | %d x 128 | %.2f | %.2f | | |\n", sms, t[0], t[1]);
    }

    Shape in{"in_proj 2560x10576", 2560, 10576, false};
    alloc(in);
    gemv_case<2560, 10576, 4, 2, 4, false>(in, st, "(plan)", true);
    gemv_case<2560, 10576, 4, 2, 4, false>(in, st, "(plan)");
    gemv_case<2560, 10576, 4, 2, 10, false>(in, st, "");
    gemv_case<2560, 10576, 2, 4, 5, false>(in, st, "");
    gemv_case<2560, 10576, 1, 5, 4, false>(in, st, "");
    gemv_case<2560, 10576, 2, 5, 4, false>(in, st, "");
    gemv_case<2560, 10576, 1, 10, 2, false>(in, st, "");
    gemv_case<2560, 10576, 8, 1, 8, false>(in, st, "");
    gemv_case<2560, 10576, 4, 1, 8, false>(in, st, "");
    gemv_case<2560, 10576, 1, 20, 1, false>(in, st, "");
    gemv_case<2560, 10576, 4, 2, 1, true>(in, st, "");
    gemv_case<2560, 10576, 2, 2, 1, true>(in, st, "");
    gemv_case<2560, 10576, 2, 4, 1, true>(in, st, "");
    gemv_case<2560, 10576, 1, 4, 1, true>(in, st, "");
    gemv_case<2560, 10576, 8, 1, 1, true>(in, st, "");
    gemv_case<2560, 10576, 4, 1, 1, true>(in, st, "");
    gemv_case<2560, 10576, 8, 2, 1, true>(in, st, "");
    stream_cases(in, st, sms, sink);

    Shape out{"out_proj 5120x2560", 5120, 2560, true};
    alloc(out);
    gemv_case<5120, 2560, 1, 7, 4, false>(out, st, "(plan)", true);
    gemv_case<5120, 2560, 1, 7, 4, false>(out, st, "(plan)");
    gemv_case<5120, 2560, 1, 8, 5, false>(out, st, "");
    gemv_case<5120, 2560, 1, 10, 4, false>(out, st, "");
    gemv_case<5120, 2560, 1, 20, 2, false>(out, st, "");
    gemv_case<5120, 2560, 2, 10, 4, false>(out, st, "");
    gemv_case<5120, 2560, 1, 5, 8, false>(out, st, "");
    gemv_case<5120, 2560, 1, 32, 2, false>(out, st, "");
    gemv_case<5120, 2560, 1, 7, 1, true>(out, st, "");
    gemv_case<5120, 2560, 1, 4, 1, true>(out, st, "");
    gemv_case<5120, 2560, 1, 8, 1, true>(out, st, "");
    gemv_case<5120, 2560, 1, 10, 1, true>(out, st, "");
    gemv_case<5120, 2560, 2, 4, 1, true>(out, st, "");
    gemv_case<5120, 2560, 1, 16, 1, true>(out, st, "");
    stream_cases(out, st, sms, sink);
    return 0;
}
