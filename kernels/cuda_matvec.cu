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
 */
#include "cuda_check.cuh"
#include "cuda_matvec.h"
#include "cuda_util.cuh"

#define MATVEC_THREADS 128 /* 4 warps per block */

/* The fast kernel's configurations: rows per warp and 16-byte steps in flight per row. */
static const struct {
    int rows, unroll;
    const char *name;
} matvec_variants[] = {
        {0, 0, "auto"}, {1, 4, "r1u4"}, {1, 8, "r1u8"}, {2, 2, "r2u2"},
        {2, 4, "r2u4"}, {4, 2, "r4u2"}, {4, 4, "r4u4"},
};
#define MATVEC_VARIANTS ((int)(sizeof matvec_variants / sizeof matvec_variants[0]) - 1)

/* The default configuration per batch size (index = batch). */
static const int matvec_default_variant[CUDA_MATVEC_MAX_BATCH + 1] = {0, 4, 4, 5, 5, 5, 5, 5, 5};

__device__ __forceinline__ uint4 matvec_load_stream(const uint4 *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
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

template <int B, int R, int U, typename TX>
__global__ void __launch_bounds__(MATVEC_THREADS)
        matvec_fast_kernel(const __nv_bfloat16 *w, int64_t rows, int64_t cols, const TX *x,
                           int64_t xs, void *y, int64_t ys, bool y_bf16, bool accumulate)
{
    int64_t row0 = ((int64_t)blockIdx.x * (MATVEC_THREADS / 32) + threadIdx.x / 32) * R;
    int lane = threadIdx.x % 32;
    if (row0 >= rows)
        return;
    int64_t c8 = cols / 8;
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) /* rows past the end re-read the last one; never stored */
        wr[r] = (const uint4 *)(w + min(row0 + r, rows - 1) * cols);
    float acc[B][R];
#pragma unroll
    for (int b = 0; b < B; b++)
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[b][r] = 0.0f;
    for (int64_t c = lane; c < c8; c += 32 * U) {
        uint4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = c + 32 * u < c8 ? matvec_load_stream(wr[r] + c + 32 * u)
                                           : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (c + 32 * u >= c8)
                break;
#pragma unroll
            for (int b = 0; b < B; b++) {
                float xv[8];
                matvec_load_x8(x + b * xs + (c + 32 * u) * 8, xv);
#pragma unroll
                for (int r = 0; r < R; r++)
                    acc[b][r] = matvec_dot8(wv[u][r], xv, acc[b][r]);
            }
        }
    }
#pragma unroll
    for (int b = 0; b < B; b++)
#pragma unroll
        for (int r = 0; r < R; r++) {
            float s = cuda_warp_sum(acc[b][r]);
            if (lane == 0 && row0 + r < rows)
                matvec_store(y, b * ys + row0 + r, s, y_bf16, accumulate);
        }
}

/* Any shape and alignment: a warp per row, one weight per lane and step. */
template <int B, typename TX>
__global__ void __launch_bounds__(MATVEC_THREADS)
        matvec_any_kernel(const __nv_bfloat16 *w, int64_t rows, int64_t cols, const TX *x,
                          int64_t xs, void *y, int64_t ys, bool y_bf16, bool accumulate)
{
    int64_t row = (int64_t)blockIdx.x * (MATVEC_THREADS / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    const __nv_bfloat16 *wr = w + row * cols;
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++)
        acc[b] = 0.0f;
    for (int64_t c = lane; c < cols; c += 32) {
        float wv = __bfloat162float(wr[c]);
#pragma unroll
        for (int b = 0; b < B; b++)
            acc[b] = fmaf(wv, cuda_to_f32(x[b * xs + c]), acc[b]);
    }
#pragma unroll
    for (int b = 0; b < B; b++) {
        float s = cuda_warp_sum(acc[b]);
        if (lane == 0)
            matvec_store(y, b * ys + row, s, y_bf16, accumulate);
    }
}

template <int B, int R, int U, typename TX>
static void matvec_fast_launch(const struct cuda_matvec *m, cudaStream_t stream)
{
    int64_t warps = (m->rows + R - 1) / R;
    matvec_fast_kernel<B, R, U, TX>
            <<<cuda_blocks(warps, MATVEC_THREADS / 32), MATVEC_THREADS, 0, stream>>>(
                    (const __nv_bfloat16 *)m->w, m->rows, m->cols, (const TX *)m->x, m->x_stride,
                    m->y, m->y_stride, m->y_type == DTYPE_BF16, m->accumulate);
}

template <int B, typename TX>
static void matvec_launch_batch(const struct cuda_matvec *m, int variant, bool fast,
                                cudaStream_t stream)
{
    if (!fast) {
        matvec_any_kernel<B, TX>
                <<<cuda_blocks(m->rows, MATVEC_THREADS / 32), MATVEC_THREADS, 0, stream>>>(
                        (const __nv_bfloat16 *)m->w, m->rows, m->cols, (const TX *)m->x,
                        m->x_stride, m->y, m->y_stride, m->y_type == DTYPE_BF16, m->accumulate);
        return;
    }
    switch (variant) {
    case 1:
        return matvec_fast_launch<B, 1, 4, TX>(m, stream);
    case 2:
        return matvec_fast_launch<B, 1, 8, TX>(m, stream);
    case 3:
        return matvec_fast_launch<B, 2, 2, TX>(m, stream);
    case 4:
        return matvec_fast_launch<B, 2, 4, TX>(m, stream);
    case 5:
        return matvec_fast_launch<B, 4, 2, TX>(m, stream);
    default:
        return matvec_fast_launch<B, 4, 4, TX>(m, stream);
    }
}

template <typename TX>
static void matvec_launch(const struct cuda_matvec *m, int variant, bool fast, cudaStream_t stream)
{
    switch (m->batch) {
    case 1:
        return matvec_launch_batch<1, TX>(m, variant, fast, stream);
    case 2:
        return matvec_launch_batch<2, TX>(m, variant, fast, stream);
    case 3:
        return matvec_launch_batch<3, TX>(m, variant, fast, stream);
    case 4:
        return matvec_launch_batch<4, TX>(m, variant, fast, stream);
    case 5:
        return matvec_launch_batch<5, TX>(m, variant, fast, stream);
    case 6:
        return matvec_launch_batch<6, TX>(m, variant, fast, stream);
    case 7:
        return matvec_launch_batch<7, TX>(m, variant, fast, stream);
    default:
        return matvec_launch_batch<8, TX>(m, variant, fast, stream);
    }
}

static bool matvec_aligned(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

extern "C" int cuda_matvec_variant(const struct cuda_matvec *m, int variant, cudaStream_t stream)
{
    bool types_ok = m->w_type == DTYPE_BF16 &&
                    (m->x_type == DTYPE_F32 || m->x_type == DTYPE_BF16) &&
                    (m->y_type == DTYPE_F32 || m->y_type == DTYPE_BF16);
    if (!types_ok || m->rows < 1 || m->cols < 1 || m->batch < 1 ||
        m->batch > CUDA_MATVEC_MAX_BATCH ||
        (m->batch > 1 && (m->x_stride < m->cols || m->y_stride < m->rows)) || !m->w || !m->x ||
        !m->y || variant < 0 || variant > MATVEC_VARIANTS)
        return cuda_fail_args("cuda_matvec", "bf16 weights, f32/bf16 x and y, batch 1..8, "
                                             "x_stride >= cols, y_stride >= rows");
    if (variant == 0)
        variant = matvec_default_variant[m->batch];
    size_t xe = m->x_type == DTYPE_F32 ? 4 : 2;
    bool fast = m->cols % 8 == 0 && matvec_aligned(m->w) && matvec_aligned(m->x) &&
                (m->batch == 1 || (m->x_stride * xe) % 16 == 0);
    if (m->x_type == DTYPE_F32)
        matvec_launch<float>(m, variant, fast, stream);
    else
        matvec_launch<__nv_bfloat16>(m, variant, fast, stream);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_matvec(const struct cuda_matvec *m, cudaStream_t stream)
{
    return cuda_matvec_variant(m, 0, stream);
}

extern "C" int cuda_matvec_variant_count(void)
{
    return MATVEC_VARIANTS;
}

extern "C" const char *cuda_matvec_variant_name(int variant)
{
    return variant >= 0 && variant <= MATVEC_VARIANTS ? matvec_variants[variant].name : NULL;
}
