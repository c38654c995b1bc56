/*
 * kernels/cuda_matvec.cu — bf16 matrix-vector products for decode (see cuda_matvec.h).
 *
 * At batch 1..8 the product is a stream over W: 2 bytes per weight against 2 flops per weight
 * and token, so the only goal is to read W at the memory's speed. Each warp owns R consecutive
 * rows; every lane loads 16 bytes (8 weights) of each row per step, U steps at once, so R * U
 * independent 16-byte loads are in flight per thread before the first multiply. Weight loads
 * are `ld.global.nc.L1::no_allocate`: W is read once and must not evict x from L1, which every
 * warp re-reads (x is at most 8 x cols elements, so it lives in L1/L2). The warp sums its lanes
 * with shuffles and lane 0 stores. The output type and the residual add are run-time flags:
 * they touch one value per row and token, and keeping them out of the template halves the
 * number of kernels.
 *
 * A group of products sharing x is one grid: warps are numbered across the matrices and each
 * finds its matrix from the running warp counts. With the launch overlap (cuda_launch.cuh),
 * each block lets the next kernel launch at once, the first prefetch_blocks blocks ask for
 * their whole rows in L2, and every warp issues its first weight loads; then it waits for the
 * previous kernel to finish (its writes visible) and only then reads x and writes y. Without
 * the overlap the wait returns at once and nothing is prefetched.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_matvec.h"
#include "cuda_matvec_internal.h"
#include "cuda_util.cuh"

#include <stdlib.h>
#include <string.h>

#define MATVEC_THREADS 128 /* 4 warps per block */

/* The fast kernels' configurations. rNuM: the FMA kernel, N rows per warp, M 16-byte steps in
 * flight per row. t16uM: the tensor-core kernel, 16 rows per warp, M 64-byte steps per row. */
enum matvec_variant {
    MATVEC_AUTO,
    MATVEC_R1U4,
    MATVEC_R2U2,
    MATVEC_R2U4,
    MATVEC_R4U2,
    MATVEC_R4U4,
    MATVEC_T16U2,
    MATVEC_T16U4,
    MATVEC_T16U8,
    MATVEC_VARIANTS_END
};
#define MATVEC_VARIANTS ((int)MATVEC_VARIANTS_END - 1)
static const char *const matvec_variant_names[MATVEC_VARIANTS_END] = {
        "auto", "r1u4", "r2u2", "r2u4", "r4u2", "r4u4", "t16u2", "t16u4", "t16u8"};

/* The default configuration per batch size (index = batch), from bench_matvec's whole-model
 * runs on an H100 and an H200 (kernels/README.md), and at batch 1 from neuron-bench's decode
 * step on an H100 (2026-11-26): one row per warp with 4 loads in flight beat two rows with 2
 * (27B shape 18.52 vs 18.69 ms; its TP-2 rank shape 9.98 vs 10.33 ms), the half-height
 * matrices of a rank gaining most from twice the warps. The tensor-core configurations lose at
 * every batch as they stand (16 rows per warp leave too few warps to keep the memory busy) and
 * are kept for benchmarks only. */
static const enum matvec_variant matvec_default_variant[CUDA_MATVEC_MAX_BATCH + 1] = {
        MATVEC_AUTO, MATVEC_R1U4, MATVEC_R2U2, MATVEC_R4U2, MATVEC_R4U2,
        MATVEC_R4U4, MATVEC_R4U4, MATVEC_R4U4, MATVEC_R4U4};

struct matvec_group {
    const __nv_bfloat16 *w[CUDA_MATVEC_MAX_GROUP];
    void *y[CUDA_MATVEC_MAX_GROUP];
    int64_t rows[CUDA_MATVEC_MAX_GROUP], y_stride[CUDA_MATVEC_MAX_GROUP];
    int64_t warp_end[CUDA_MATVEC_MAX_GROUP]; /* running count of warps up to matrix i */
    bool y_bf16[CUDA_MATVEC_MAX_GROUP], accumulate[CUDA_MATVEC_MAX_GROUP];
    int n;
    int64_t cols;
    const void *x;
    int64_t x_stride;
    int64_t prefetch_blocks; /* blocks [0, prefetch_blocks) prefetch their rows into L2 */
};

/* With the overlap, lanes 0..rows_per_warp - 1 of a prefetching block's warps ask for their
 * rows in L2 (rows past the end name the last one again). */
__device__ __forceinline__ void matvec_prefetch(const struct matvec_group &g, int m, int64_t row0,
                                                int rows_per_warp, int lane)
{
    if ((int64_t)blockIdx.x < g.prefetch_blocks && lane < rows_per_warp)
        cuda_prefetch_l2(g.w[m] + min(row0 + lane, g.rows[m] - 1) * g.cols, (uint32_t)(g.cols * 2));
}

__device__ __forceinline__ uint4 matvec_load_stream(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* bf16 halves of a 32-bit word as fp32 (a bf16 is the top half of an fp32). */
__device__ __forceinline__ float bf16_lo(uint32_t w)
{
    return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(uint32_t w)
{
    return __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ void matvec_load_x8(const float *x, float (&o)[8])
{
    float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)x + 1);
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
}
__device__ __forceinline__ void matvec_load_x8(const __nv_bfloat16 *x, float (&o)[8])
{
    uint4 u = __ldg((const uint4 *)x);
    o[0] = bf16_lo(u.x), o[1] = bf16_hi(u.x), o[2] = bf16_lo(u.y), o[3] = bf16_hi(u.y);
    o[4] = bf16_lo(u.z), o[5] = bf16_hi(u.z), o[6] = bf16_lo(u.w), o[7] = bf16_hi(u.w);
}

__device__ __forceinline__ float matvec_dot8(uint4 w, const float (&x)[8], float acc)
{
    acc = fmaf(bf16_lo(w.x), x[0], acc);
    acc = fmaf(bf16_hi(w.x), x[1], acc);
    acc = fmaf(bf16_lo(w.y), x[2], acc);
    acc = fmaf(bf16_hi(w.y), x[3], acc);
    acc = fmaf(bf16_lo(w.z), x[4], acc);
    acc = fmaf(bf16_hi(w.z), x[5], acc);
    acc = fmaf(bf16_lo(w.w), x[6], acc);
    acc = fmaf(bf16_hi(w.w), x[7], acc);
    return acc;
}

/* Stores one result: y = v, or y += v with accumulate; bf16 when y_bf16. */
__device__ __forceinline__ void matvec_store(void *y, int64_t i, float v, bool y_bf16,
                                             bool accumulate)
{
    if (y_bf16) {
        __nv_bfloat16 *p = (__nv_bfloat16 *)y + i;
        *p = __float2bfloat16_rn(accumulate ? __bfloat162float(*p) + v : v);
    } else {
        float *p = (float *)y + i;
        *p = accumulate ? *p + v : v;
    }
}

/* The matrix of global warp gw, and the warp's index inside it. */
__device__ __forceinline__ int matvec_find(const struct matvec_group &g, int64_t gw, int64_t *wi)
{
    int m = 0;
    while (m + 1 < g.n && gw >= g.warp_end[m])
        m++;
    *wi = gw - (m ? g.warp_end[m - 1] : 0);
    return m;
}

template <int B, int R, int U, typename TX>
__global__ void __launch_bounds__(MATVEC_THREADS) matvec_fast_kernel(const struct matvec_group g)
{
    cuda_pdl_trigger();
    int64_t gw = (int64_t)blockIdx.x * (MATVEC_THREADS / 32) + threadIdx.x / 32, wi;
    int lane = threadIdx.x % 32;
    if (gw >= g.warp_end[g.n - 1]) {
        cuda_pdl_wait();
        return;
    }
    int m = matvec_find(g, gw, &wi);
    int64_t rows = g.rows[m], row0 = wi * R, c8 = g.cols / 8;
    matvec_prefetch(g, m, row0, R, lane);
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) /* rows past the end re-read the last one; never stored */
        wr[r] = (const uint4 *)(g.w[m] + min(row0 + r, rows - 1) * g.cols);
    const TX *x = (const TX *)g.x;
    float acc[B][R];
#pragma unroll
    for (int b = 0; b < B; b++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[b][r] = 0.0f;
    uint4 wv[U][R];
    int64_t c = lane;
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++)
            wv[u][r] = c + 32 * u < c8 ? matvec_load_stream(wr[r] + c + 32 * u)
                                       : make_uint4(0, 0, 0, 0);
    cuda_pdl_wait(); /* x is the previous kernel's output */
    while (c < c8) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (c + 32 * u >= c8)
                break;
#pragma unroll
            for (int b = 0; b < B; b++) {
                float xv[8];
                matvec_load_x8(x + b * g.x_stride + (c + 32 * u) * 8, xv);
#pragma unroll
                for (int r = 0; r < R; r++)
                    acc[b][r] = matvec_dot8(wv[u][r], xv, acc[b][r]);
            }
        }
        c += 32 * U;
        if (c >= c8)
            break;
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = c + 32 * u < c8 ? matvec_load_stream(wr[r] + c + 32 * u)
                                           : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int b = 0; b < B; b++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float s = cuda_warp_sum(acc[b][r]);
            if (lane == 0 && row0 + r < rows)
                matvec_store(g.y[m], b * g.y_stride[m] + row0 + r, s, g.y_bf16[m], g.accumulate[m]);
        }
}

/* Two fp32 as a bf16 pair (the lower index in the low half), rounded to nearest. */
__device__ __forceinline__ uint32_t matvec_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* acc (16 x 8, fp32) += A (16 x 16, bf16, row) * B (16 x 8, bf16, col). */
__device__ __forceinline__ void matvec_mma(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                           uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One 16-byte chunk of row a and of row b (weights) against the same 8 columns of x: two
 * m16n8k16 steps. The dot product does not care which k is which as long as A and B agree, so
 * the chunk's words are dealt to the fragment slots as they lie: step s takes words 2s (logical
 * k = 2t, 2t+1 of thread t) and 2s+1 (k = 2t+8, 2t+9), from both rows and from x. An fp32 x is
 * split into bf16 hi + lo (16 significant bits, error <= 2^-17) and multiplied twice. */
__device__ __forceinline__ void matvec_mma_chunk(float (&acc)[4], uint4 wa, uint4 wb,
                                                 const float (&x)[8], bool split)
{
    uint32_t hi[4], lo[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        hi[i] = matvec_pack_bf16(x[2 * i], x[2 * i + 1]);
        if (split)
            lo[i] = matvec_pack_bf16(x[2 * i] - bf16_lo(hi[i]), x[2 * i + 1] - bf16_hi(hi[i]));
    }
    matvec_mma(acc, wa.x, wb.x, wa.y, wb.y, hi[0], hi[1]);
    matvec_mma(acc, wa.z, wb.z, wa.w, wb.w, hi[2], hi[3]);
    if (split) {
        matvec_mma(acc, wa.x, wb.x, wa.y, wb.y, lo[0], lo[1]);
        matvec_mma(acc, wa.z, wb.z, wa.w, wb.w, lo[2], lo[3]);
    }
}

/* Tensor-core products: a warp owns 16 rows and the batch is the mma's n = 8 (tokens past the
 * batch are zero columns). Lane (g = lane / 4, t = lane % 4) streams rows g and g + 8; the four
 * lanes of a group read U consecutive 64-byte blocks of their rows per step. Each lane ends
 * holding finished sums (rows g and g + 8, tokens 2t and 2t + 1): no cross-lane reduction. */
template <int B, int U, typename TX>
__global__ void __launch_bounds__(MATVEC_THREADS) matvec_mma_kernel(const struct matvec_group g)
{
    cuda_pdl_trigger();
    int64_t gw = (int64_t)blockIdx.x * (MATVEC_THREADS / 32) + threadIdx.x / 32, wi;
    if (gw >= g.warp_end[g.n - 1]) {
        cuda_pdl_wait();
        return;
    }
    int lane = threadIdx.x % 32, grp = lane / 4, tig = lane % 4;
    int m = matvec_find(g, gw, &wi);
    int64_t rows = g.rows[m], row0 = wi * 16, c8 = g.cols / 8, blocks = (c8 + 3) / 4;
    matvec_prefetch(g, m, row0, 16, lane);
    const uint4 *wa = (const uint4 *)(g.w[m] + min(row0 + grp, rows - 1) * g.cols);
    const uint4 *wb = (const uint4 *)(g.w[m] + min(row0 + grp + 8, rows - 1) * g.cols);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    uint4 va[U], vb[U];
    int64_t k = 0; /* in 64-byte blocks (4 chunks) */
#pragma unroll
    for (int u = 0; u < U; u++) {
        int64_t ck = (k + u) * 4 + tig;
        va[u] = ck < c8 ? matvec_load_stream(wa + ck) : make_uint4(0, 0, 0, 0);
        vb[u] = ck < c8 ? matvec_load_stream(wb + ck) : make_uint4(0, 0, 0, 0);
    }
    cuda_pdl_wait(); /* x is the previous kernel's output */
    const TX *xr = (const TX *)g.x + (grp < B ? grp : 0) * g.x_stride;
    while (k < blocks) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (k + u >= blocks)
                break;
            int64_t ck = (k + u) * 4 + tig;
            float xv[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            if (grp < B && ck < c8)
                matvec_load_x8(xr + ck * 8, xv);
            matvec_mma_chunk(acc, va[u], vb[u], xv, sizeof(TX) == 4);
        }
        k += U;
        if (k >= blocks)
            break;
#pragma unroll
        for (int u = 0; u < U; u++) {
            int64_t ck = (k + u) * 4 + tig;
            va[u] = ck < c8 ? matvec_load_stream(wa + ck) : make_uint4(0, 0, 0, 0);
            vb[u] = ck < c8 ? matvec_load_stream(wb + ck) : make_uint4(0, 0, 0, 0);
        }
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
        int tok = 2 * tig + j;
        if (tok >= B)
            continue;
        if (row0 + grp < rows)
            matvec_store(g.y[m], tok * g.y_stride[m] + row0 + grp, acc[j], g.y_bf16[m],
                         g.accumulate[m]);
        if (row0 + grp + 8 < rows)
            matvec_store(g.y[m], tok * g.y_stride[m] + row0 + grp + 8, acc[2 + j], g.y_bf16[m],
                         g.accumulate[m]);
    }
}

/* Any shape and alignment: a warp per row, one weight per lane and step. */
template <int B, typename TX>
__global__ void __launch_bounds__(MATVEC_THREADS) matvec_any_kernel(const struct matvec_group g)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int64_t gw = (int64_t)blockIdx.x * (MATVEC_THREADS / 32) + threadIdx.x / 32, row;
    int lane = threadIdx.x % 32;
    if (gw >= g.warp_end[g.n - 1])
        return;
    int m = matvec_find(g, gw, &row);
    const __nv_bfloat16 *wr = g.w[m] + row * g.cols;
    const TX *x = (const TX *)g.x;
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = 0.0f;
    for (int64_t c = lane; c < g.cols; c += 32) {
        float wv = __bfloat162float(wr[c]);
#pragma unroll
        for (int b = 0; b < B; b++)
            acc[b] = fmaf(wv, cuda_to_f32(x[b * g.x_stride + c]), acc[b]);
    }
#pragma unroll
    for (int b = 0; b < B; b++) {
        float s = cuda_warp_sum(acc[b]);
        if (lane == 0)
            matvec_store(g.y[m], b * g.y_stride[m] + row, s, g.y_bf16[m], g.accumulate[m]);
    }
}

struct matvec_launch {
    int variant; /* enum matvec_variant; MATVEC_AUTO here means the slow kernel */
    bool overlap;
    cudaStream_t stream;
};

/* Fills the per-matrix warp counts for R rows per warp; returns the total. */
static int64_t matvec_plan(struct matvec_group *g, int rows_per_warp)
{
    int64_t total = 0;
    for (int i = 0; i < g->n; i++) {
        total += (g->rows[i] + rows_per_warp - 1) / rows_per_warp;
        g->warp_end[i] = total;
    }
    return total;
}

template <typename K>
static cudaError_t matvec_start(K kernel, struct matvec_group *g, int rows_per_warp,
                                const struct matvec_launch *l)
{
    int64_t warps = matvec_plan(g, rows_per_warp);
    /* the slow kernel (variant AUTO here) reads bf16 weights of any alignment: no prefetch */
    int64_t block_bytes = (int64_t)rows_per_warp * (MATVEC_THREADS / 32) * g->cols * 2;
    g->prefetch_blocks =
            l->overlap && l->variant != MATVEC_AUTO ? cuda_prefetch_blocks(block_bytes) : 0;
    return cuda_launch_as(l->overlap, kernel, cuda_blocks(warps, MATVEC_THREADS / 32),
                          MATVEC_THREADS, 0, l->stream, *g);
}

template <int B, typename TX>
static cudaError_t matvec_launch_batch(struct matvec_group *g, const struct matvec_launch *l)
{
    switch ((enum matvec_variant)l->variant) {
    case MATVEC_AUTO: /* here: the slow kernel */
        return matvec_start(matvec_any_kernel<B, TX>, g, 1, l);
    case MATVEC_R1U4:
        return matvec_start(matvec_fast_kernel<B, 1, 4, TX>, g, 1, l);
    case MATVEC_R2U2:
        return matvec_start(matvec_fast_kernel<B, 2, 2, TX>, g, 2, l);
    case MATVEC_R2U4:
        return matvec_start(matvec_fast_kernel<B, 2, 4, TX>, g, 2, l);
    case MATVEC_R4U2:
        return matvec_start(matvec_fast_kernel<B, 4, 2, TX>, g, 4, l);
    case MATVEC_R4U4:
        return matvec_start(matvec_fast_kernel<B, 4, 4, TX>, g, 4, l);
    case MATVEC_T16U2:
        return matvec_start(matvec_mma_kernel<B, 2, TX>, g, 16, l);
    case MATVEC_T16U4:
        return matvec_start(matvec_mma_kernel<B, 4, TX>, g, 16, l);
    default:
        return matvec_start(matvec_mma_kernel<B, 8, TX>, g, 16, l);
    }
}

template <typename TX>
static cudaError_t matvec_launch_type(struct matvec_group *g, int batch,
                                      const struct matvec_launch *l)
{
    switch (batch) {
    case 1:
        return matvec_launch_batch<1, TX>(g, l);
    case 2:
        return matvec_launch_batch<2, TX>(g, l);
    case 3:
        return matvec_launch_batch<3, TX>(g, l);
    case 4:
        return matvec_launch_batch<4, TX>(g, l);
    case 5:
        return matvec_launch_batch<5, TX>(g, l);
    case 6:
        return matvec_launch_batch<6, TX>(g, l);
    case 7:
        return matvec_launch_batch<7, TX>(g, l);
    default:
        return matvec_launch_batch<8, TX>(g, l);
    }
}

static bool matvec_aligned(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

static bool matvec_one_ok(const struct cuda_matvec *m)
{
    int be = cuda_matvec_block_elems(m->w_type);
    return be > 0 && m->cols % be == 0 && (m->x_type == DTYPE_F32 || m->x_type == DTYPE_BF16) &&
           (m->y_type == DTYPE_F32 || m->y_type == DTYPE_BF16) && m->rows >= 1 && m->cols >= 1 &&
           m->batch >= 1 && m->batch <= CUDA_MATVEC_MAX_BATCH &&
           (m->batch == 1 || (m->x_stride >= m->cols && m->y_stride >= m->rows)) && m->w && m->x &&
           m->y;
}

extern "C" int cuda_matvec_tuned(const struct cuda_matvec *m, int n, int variant, bool overlap,
                                 cudaStream_t stream)
{
    if (n < 1 || n > CUDA_MATVEC_MAX_GROUP || variant < 0 || variant > MATVEC_VARIANTS)
        return cuda_fail_args("cuda_matvec", "1..8 products, a known variant");
    struct matvec_group g = {};
    bool fast = true;
    for (int i = 0; i < n; i++) {
        if (!matvec_one_ok(&m[i]) ||
            (i > 0 && (m[i].x != m[0].x || m[i].x_type != m[0].x_type || m[i].cols != m[0].cols ||
                       m[i].w_type != m[0].w_type || m[i].batch != m[0].batch ||
                       (m[0].batch > 1 && m[i].x_stride != m[0].x_stride))))
            return cuda_fail_args("cuda_matvec",
                                  "bf16/f16/q8_0/q4_0/q4_1/q4_k/q5_k/q6_k weights with cols a "
                                  "multiple of the block, f32/bf16 x and y, batch 1..8, "
                                  "x_stride >= cols, y_stride >= rows, one x and w_type for a "
                                  "group");
        if (m[0].w_type != DTYPE_BF16)
            continue; /* the dequantising kernels take the group below */
        g.w[i] = (const __nv_bfloat16 *)m[i].w;
        g.y[i] = m[i].y;
        g.rows[i] = m[i].rows;
        g.y_stride[i] = m[i].y_stride;
        g.y_bf16[i] = m[i].y_type == DTYPE_BF16;
        g.accumulate[i] = m[i].accumulate;
        fast = fast && matvec_aligned(m[i].w);
    }
    if (m[0].w_type != DTYPE_BF16)
        return cuda_matvec_quant_group(m, n, stream);
    g.n = n;
    g.cols = m[0].cols;
    g.x = m[0].x;
    g.x_stride = m[0].x_stride;
    size_t xe = m[0].x_type == DTYPE_F32 ? 4 : 2;
    fast = fast && m[0].cols % 8 == 0 && matvec_aligned(m[0].x) &&
           (m[0].batch == 1 || (m[0].x_stride * xe) % 16 == 0);
    struct matvec_launch l = {.variant = !fast     ? 0
                                         : variant ? variant
                                                   : matvec_default_variant[m[0].batch],
                              .overlap = overlap && cuda_overlap_on(),
                              .stream = stream};
    cudaError_t err = m[0].x_type == DTYPE_F32
                              ? matvec_launch_type<float>(&g, m[0].batch, &l)
                              : matvec_launch_type<__nv_bfloat16>(&g, m[0].batch, &l);
    CUDA_TRY(err);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* CORTEX_MATVEC_VARIANT=name (benchmarks): that configuration instead of the default one for
 * every batch; read once. */
static int matvec_env_variant(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v >= 0)
        return v;
    const char *e = getenv("CORTEX_MATVEC_VARIANT");
    v = 0;
    for (int i = 1; e && i <= MATVEC_VARIANTS; i++)
        if (strcmp(e, matvec_variant_names[i]) == 0)
            v = i;
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    return v;
}

extern "C" int cuda_matvec_group(const struct cuda_matvec *m, int n, cudaStream_t stream)
{
    return cuda_matvec_tuned(m, n, matvec_env_variant(), cuda_overlap_on(), stream);
}

extern "C" int cuda_matvec(const struct cuda_matvec *m, cudaStream_t stream)
{
    return cuda_matvec_group(m, 1, stream);
}

extern "C" int cuda_matvec_variant_count(void)
{
    return MATVEC_VARIANTS;
}

extern "C" const char *cuda_matvec_variant_name(int variant)
{
    return variant >= 0 && variant <= MATVEC_VARIANTS ? matvec_variant_names[variant] : NULL;
}
