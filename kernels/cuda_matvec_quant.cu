/*
 * kernels/cuda_matvec_quant.cu — matrix-vector products that dequantise GGUF weight blocks on
 * the fly (F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), for cuda_matvec() (see cuda_matvec.h).
 *
 * Blocks are read exactly as GGUF stores them (neuron/dtype.c is the scalar reference and its
 * comments explain the packings). The unit of work is 32 consecutive weights of a row: a whole
 * block of the 32-element types, one sub-block of the 256-element K types (each K sub-block has
 * its own scale and min), 32 elements of F16. A warp owns one row; lane l takes units l,
 * l + 32, ... (so a warp reads 32 neighbouring units, a contiguous stretch of the row),
 * decodes its 32 weights into registers, multiplies them with the batch's activations and the
 * warp sums with shuffles. Dequantisation follows the CPU's arithmetic (scale * sub-scale
 * first, then * q, minus dmin * min), so the weights match the twin's up to fp32 contraction.
 * This is the first, correct version, and it is slow: bench_matvec --quant on an H100 (copy
 * 2997 GB/s) reads 140-260 GB/s of quantised weights at batch 1 (5-9%) and less at batch 8.
 * The layout is the cause: a lane owns a whole 32-element unit, so the 32 lanes of a load
 * instruction hit 32 different cache lines (x at a 128-byte stride, blocks at 18-210 bytes)
 * and the x traffic grows with the batch. The next version gives a unit to 8 lanes of 4
 * consecutive elements each (coalesced x and block reads, scales broadcast) and several rows
 * to a warp, as the bf16 kernel does.
 */
#include "cuda_check.cuh"
#include "cuda_matvec_internal.h"
#include "cuda_util.cuh"

#define MVQ_THREADS 128

struct mvq_group {
    const uint8_t *w[CUDA_MATVEC_MAX_GROUP];
    void *y[CUDA_MATVEC_MAX_GROUP];
    int64_t rows[CUDA_MATVEC_MAX_GROUP], y_stride[CUDA_MATVEC_MAX_GROUP];
    int64_t warp_end[CUDA_MATVEC_MAX_GROUP];
    bool y_bf16[CUDA_MATVEC_MAX_GROUP], accumulate[CUDA_MATVEC_MAX_GROUP];
    int n, batch;
    int64_t cols, row_bytes;
    const void *x;
    int64_t x_stride;
};

/* Block geometry per type: elements and bytes of one block. */
template <enum dtype T> struct mvq_block;
template <> struct mvq_block<DTYPE_F16> {
    static const int elems = 32, bytes = 64; /* a unit, not a GGUF block */
};
template <> struct mvq_block<DTYPE_Q8_0> {
    static const int elems = 32, bytes = 34;
};
template <> struct mvq_block<DTYPE_Q4_0> {
    static const int elems = 32, bytes = 18;
};
template <> struct mvq_block<DTYPE_Q4_1> {
    static const int elems = 32, bytes = 20;
};
template <> struct mvq_block<DTYPE_Q4_K> {
    static const int elems = 256, bytes = 144;
};
template <> struct mvq_block<DTYPE_Q5_K> {
    static const int elems = 256, bytes = 176;
};
template <> struct mvq_block<DTYPE_Q6_K> {
    static const int elems = 256, bytes = 210;
};

__device__ __forceinline__ float mvq_f16(const uint8_t *p)
{
    unsigned short h = (unsigned short)(__ldg(p) | (__ldg(p + 1) << 8));
    return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ uint8_t mvq_u8(const uint8_t *p)
{
    return __ldg(p);
}

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j from the 12 packed bytes at q. */
__device__ __forceinline__ void mvq_k4_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = mvq_u8(q + j) & 63;
        *m = mvq_u8(q + j + 4) & 63;
    } else {
        *sc = (mvq_u8(q + j + 4) & 0x0f) | ((mvq_u8(q + j - 4) >> 6) << 4);
        *m = (mvq_u8(q + j + 4) >> 4) | ((mvq_u8(q + j) >> 6) << 4);
    }
}

/* 32 bytes at p as 8 little-endian words: two 16-byte loads when VEC (p 16-byte aligned). */
template <bool VEC> __device__ __forceinline__ void mvq_load32(const uint8_t *p, uint32_t (&o)[8])
{
    if (VEC) {
        uint4 a = __ldg((const uint4 *)p), b = __ldg((const uint4 *)p + 1);
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z,
        o[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            o[i] = (uint32_t)mvq_u8(p + 4 * i) | (uint32_t)mvq_u8(p + 4 * i + 1) << 8 |
                   (uint32_t)mvq_u8(p + 4 * i + 2) << 16 | (uint32_t)mvq_u8(p + 4 * i + 3) << 24;
    }
}

/* Byte l of 32 loaded by mvq_load32. */
__device__ __forceinline__ int mvq_byte(const uint32_t (&o)[8], int l)
{
    return (int)((o[l / 4] >> (8 * (l % 4))) & 0xffu);
}

/* The 32 weights of unit `sub` of the block at b (sub is 0 for the 32-element types). VEC: the
 * block is 16-byte aligned (Q4_K / Q5_K rows of an aligned tensor), so its 32-byte runs of
 * quants are read with 16-byte loads. */
template <enum dtype T, bool VEC>
__device__ __forceinline__ void mvq_decode(const uint8_t *b, int sub, float (&w)[32])
{
    if (T == DTYPE_F16) {
#pragma unroll
        for (int i = 0; i < 32; i++)
            w[i] = mvq_f16(b + 2 * i);
    } else if (T == DTYPE_Q8_0) {
        float d = mvq_f16(b);
#pragma unroll
        for (int i = 0; i < 32; i++)
            w[i] = (float)(int8_t)mvq_u8(b + 2 + i) * d;
    } else if (T == DTYPE_Q4_0) {
        float d = mvq_f16(b);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int q = mvq_u8(b + 2 + j);
            w[j] = (float)((q & 0x0f) - 8) * d;
            w[j + 16] = (float)((q >> 4) - 8) * d;
        }
    } else if (T == DTYPE_Q4_1) {
        float d = mvq_f16(b), m = mvq_f16(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int q = mvq_u8(b + 4 + j);
            w[j] = (float)(q & 0x0f) * d + m;
            w[j + 16] = (float)(q >> 4) * d + m;
        }
    } else if (T == DTYPE_Q4_K || T == DTYPE_Q5_K) {
        float d = mvq_f16(b), dmin = mvq_f16(b + 2);
        int sc, mn;
        mvq_k4_scale_min(sub, b + 4, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        uint32_t qw[8], hw[8];
        mvq_load32<VEC>(b + (T == DTYPE_Q4_K ? 16 : 48) + 32 * (sub / 2), qw);
        if (T == DTYPE_Q5_K)
            mvq_load32<VEC>(b + 16, hw);
        int shift = (sub & 1) * 4;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = (mvq_byte(qw, l) >> shift) & 0x0f;
            if (T == DTYPE_Q5_K)
                v += (mvq_byte(hw, l) >> sub) & 1 ? 16 : 0;
            w[l] = d1 * (float)v - m1;
        }
    } else { /* Q6_K */
        int half = sub / 4, qq = sub % 4;
        const uint8_t *ql = b + 64 * half + (qq & 1) * 32;
        const uint8_t *qh = b + 128 + 32 * half;
        const int8_t *sc = (const int8_t *)(b + 192) + 8 * half + 2 * qq;
        float d = mvq_f16(b + 208);
        int lshift = (qq >> 1) * 4, hshift = 2 * qq;
        float d0 = d * (float)(int8_t)mvq_u8((const uint8_t *)sc);
        float d1 = d * (float)(int8_t)mvq_u8((const uint8_t *)sc + 1);
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = ((mvq_u8(ql + l) >> lshift) & 0x0f) | (((mvq_u8(qh + l) >> hshift) & 3) << 4);
            w[l] = (l < 16 ? d0 : d1) * (float)(v - 32);
        }
    }
}

__device__ __forceinline__ void mvq_store(void *y, int64_t i, float v, bool y_bf16, bool accumulate)
{
    if (y_bf16) {
        __nv_bfloat16 *p = (__nv_bfloat16 *)y + i;
        *p = __float2bfloat16_rn(accumulate ? __bfloat162float(*p) + v : v);
    } else {
        float *p = (float *)y + i;
        *p = accumulate ? *p + v : v;
    }
}

template <enum dtype T, bool VEC, typename TX>
__global__ void __launch_bounds__(MVQ_THREADS) mvq_kernel(const struct mvq_group g)
{
    int64_t gw = (int64_t)blockIdx.x * (MVQ_THREADS / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (gw >= g.warp_end[g.n - 1])
        return;
    int m = 0;
    while (m + 1 < g.n && gw >= g.warp_end[m])
        m++;
    int64_t row = gw - (m ? g.warp_end[m - 1] : 0);
    const uint8_t *wr = g.w[m] + row * g.row_bytes;
    const int per_block = mvq_block<T>::elems / 32;
    int64_t units = (g.cols + 31) / 32;
    float acc[CUDA_MATVEC_MAX_BATCH];
#pragma unroll
    for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++)
        acc[b] = 0.0f;
    for (int64_t u = lane; u < units; u += 32) {
        float w[32];
        int64_t c0 = u * 32;
        int valid = T == DTYPE_F16 ? (int)min((int64_t)32, g.cols - c0) : 32;
        if (T == DTYPE_F16 && valid < 32) {
#pragma unroll
            for (int i = 0; i < 32; i++)
                w[i] = i < valid ? mvq_f16(wr + 2 * (c0 + i)) : 0.0f;
        } else {
            mvq_decode<T, VEC>(wr + (u / per_block) * mvq_block<T>::bytes, (int)(u % per_block), w);
        }
#pragma unroll
        for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++) {
            if (b >= g.batch)
                break;
            const TX *x = (const TX *)g.x + b * g.x_stride + c0;
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 32; i++)
                if (i < valid)
                    s = fmaf(w[i], cuda_to_f32(x[i]), s);
            acc[b] += s;
        }
    }
#pragma unroll
    for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++) {
        if (b >= g.batch)
            break;
        float s = cuda_warp_sum(acc[b]);
        if (lane == 0)
            mvq_store(g.y[m], b * g.y_stride[m] + row, s, g.y_bf16[m], g.accumulate[m]);
    }
}

/* 16-byte loads of Q4_K / Q5_K quants when every matrix starts on the 16-byte grid (their
 * blocks, 144 and 176 bytes, keep it); set MVQ_VECTOR_LOADS to 0 to force byte loads. */
#ifndef MVQ_VECTOR_LOADS
#define MVQ_VECTOR_LOADS 1
#endif

template <enum dtype T>
static cudaError_t mvq_launch(const struct mvq_group *g, bool x_f32, cudaStream_t stream)
{
    unsigned blocks = cuda_blocks(g->warp_end[g->n - 1], MVQ_THREADS / 32);
    bool vec = MVQ_VECTOR_LOADS && (T == DTYPE_Q4_K || T == DTYPE_Q5_K);
    for (int i = 0; i < g->n; i++)
        vec = vec && ((uintptr_t)g->w[i] & 15) == 0;
    if (vec && x_f32)
        mvq_kernel<T, true, float><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    else if (vec)
        mvq_kernel<T, true, __nv_bfloat16><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    else if (x_f32)
        mvq_kernel<T, false, float><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    else
        mvq_kernel<T, false, __nv_bfloat16><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    return cudaGetLastError();
}

int cuda_matvec_block_elems(enum dtype t)
{
    switch (t) {
    case DTYPE_F16:
    case DTYPE_BF16:
        return 1;
    case DTYPE_Q8_0:
    case DTYPE_Q4_0:
    case DTYPE_Q4_1:
        return 32;
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
    case DTYPE_Q6_K:
        return 256;
    default:
        return 0;
    }
}

int cuda_matvec_quant_group(const struct cuda_matvec *m, int n, cudaStream_t stream)
{
    struct mvq_group g = {};
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        g.w[i] = (const uint8_t *)m[i].w;
        g.y[i] = m[i].y;
        g.rows[i] = m[i].rows;
        g.y_stride[i] = m[i].y_stride;
        g.y_bf16[i] = m[i].y_type == DTYPE_BF16;
        g.accumulate[i] = m[i].accumulate;
        total += m[i].rows;
        g.warp_end[i] = total;
    }
    g.n = n;
    g.batch = m[0].batch;
    g.cols = m[0].cols;
    g.x = m[0].x;
    g.x_stride = m[0].x_stride;
    bool xf = m[0].x_type == DTYPE_F32;
    cudaError_t err;
    switch (m[0].w_type) {
    case DTYPE_F16:
        g.row_bytes = g.cols * 2;
        err = mvq_launch<DTYPE_F16>(&g, xf, stream);
        break;
    case DTYPE_Q8_0:
        g.row_bytes = g.cols / 32 * 34;
        err = mvq_launch<DTYPE_Q8_0>(&g, xf, stream);
        break;
    case DTYPE_Q4_0:
        g.row_bytes = g.cols / 32 * 18;
        err = mvq_launch<DTYPE_Q4_0>(&g, xf, stream);
        break;
    case DTYPE_Q4_1:
        g.row_bytes = g.cols / 32 * 20;
        err = mvq_launch<DTYPE_Q4_1>(&g, xf, stream);
        break;
    case DTYPE_Q4_K:
        g.row_bytes = g.cols / 256 * 144;
        err = mvq_launch<DTYPE_Q4_K>(&g, xf, stream);
        break;
    case DTYPE_Q5_K:
        g.row_bytes = g.cols / 256 * 176;
        err = mvq_launch<DTYPE_Q5_K>(&g, xf, stream);
        break;
    default:
        g.row_bytes = g.cols / 256 * 210;
        err = mvq_launch<DTYPE_Q6_K>(&g, xf, stream);
        break;
    }
    CUDA_TRY(err);
    return 0;
}
