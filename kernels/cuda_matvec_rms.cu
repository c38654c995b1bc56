/*
 * kernels/cuda_matvec_rms.cu — norm-fused decode products (see cuda_matvec_rms.h).
 *
 * A warp owns two output rows: rows 2w and 2w + 1 of one product of the group, or with swiglu
 * row w of the gate and row w of the up matrix. Each lane streams 16 bytes (8 bf16) of each
 * row per step with MR_U steps in flight (ld.global.nc.L1::no_allocate, so W does not evict x
 * from L1), multiplies them with the matching 8 fp32 values of x (read through L1: every warp
 * reads all of x) and adds x^2 to the row's sum of squares on the side. Shuffles sum the lanes;
 * lane 0 scales by 1 / rms and stores. With the launch overlap (cuda_launch.cuh) the first
 * prefetch_blocks blocks ask for their rows in L2 before waiting for the kernel ahead, which
 * writes x. (One row per warp with twice the loads in flight measured slower at batch 1 on an
 * H100: 10.30 vs 9.95 ms for the TP-2 rank shape's step.)
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_matvec_rms.h"
#include "cuda_util.cuh"

#define MR_THREADS 128 /* 4 warps per block */
#define MR_U       4   /* weight loads in flight per row */

struct mr_args {
    struct cuda_matvec_rms a;
    int64_t warp_end[CUDA_MATVEC_RMS_MAX_GROUP]; /* cumulative warps per product */
    int64_t prefetch_blocks;                     /* these first blocks prefetch their rows */
};

__device__ __forceinline__ uint4 mr_load_stream(const uint4 *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ float mr_lo(uint32_t w)
{
    return __uint_as_float(w << 16);
}
__device__ __forceinline__ float mr_hi(uint32_t w)
{
    return __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ float mr_dot8(uint4 w, const float4 &a, const float4 &b, float acc)
{
    acc = fmaf(mr_lo(w.x), a.x, acc);
    acc = fmaf(mr_hi(w.x), a.y, acc);
    acc = fmaf(mr_lo(w.y), a.z, acc);
    acc = fmaf(mr_hi(w.y), a.w, acc);
    acc = fmaf(mr_lo(w.z), b.x, acc);
    acc = fmaf(mr_hi(w.z), b.y, acc);
    acc = fmaf(mr_lo(w.w), b.z, acc);
    acc = fmaf(mr_hi(w.w), b.w, acc);
    return acc;
}

template <int B, bool SWIGLU> __global__ void __launch_bounds__(MR_THREADS) mr_kernel(mr_args p)
{
    cuda_pdl_trigger();
    const struct cuda_matvec_rms &a = p.a;
    int64_t gw = (int64_t)blockIdx.x * (MR_THREADS / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    int n = SWIGLU ? 1 : a.n;
    if (gw >= p.warp_end[n - 1]) {
        cuda_pdl_wait();
        return;
    }
    int m = 0;
    while (m + 1 < n && gw >= p.warp_end[m])
        m++;
    int64_t wi = gw - (m ? p.warp_end[m - 1] : 0);
    int64_t rows = a.rows[m], c8 = a.cols / 8;
    /* the two rows this warp owns (a row past the end re-reads the last one; never stored) */
    int64_t r0 = SWIGLU ? wi : 2 * wi, r1 = SWIGLU ? wi : min(2 * wi + 1, rows - 1);
    const uint4 *w0 = (const uint4 *)((const __nv_bfloat16 *)a.w[m] + r0 * a.cols);
    const uint4 *w1 = (const uint4 *)((const __nv_bfloat16 *)a.w[SWIGLU ? 1 : m] + r1 * a.cols);
    if ((int64_t)blockIdx.x < p.prefetch_blocks && lane < 2)
        cuda_prefetch_l2(lane ? (const void *)w1 : (const void *)w0, (uint32_t)(a.cols * 2));
    cuda_pdl_wait(); /* x is the previous kernel's output */
    float acc0[B], acc1[B], ss[B];
#pragma unroll
    for (int b = 0; b < B; b++)
        acc0[b] = acc1[b] = ss[b] = 0.0f;
    uint4 wv0[MR_U], wv1[MR_U];
    for (int64_t c = lane; c < c8; c += 32 * MR_U) {
#pragma unroll
        for (int u = 0; u < MR_U; u++) {
            bool in = c + 32 * u < c8;
            wv0[u] = in ? mr_load_stream(w0 + c + 32 * u) : make_uint4(0, 0, 0, 0);
            wv1[u] = in ? mr_load_stream(w1 + c + 32 * u) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < MR_U; u++) {
            if (c + 32 * u >= c8)
                break;
#pragma unroll
            for (int b = 0; b < B; b++) {
                const float4 *xp = (const float4 *)(a.x + b * a.x_stride + (c + 32 * u) * 8);
                float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
                acc0[b] = mr_dot8(wv0[u], x0, x1, acc0[b]);
                acc1[b] = mr_dot8(wv1[u], x0, x1, acc1[b]);
                ss[b] = fmaf(x0.x, x0.x, ss[b]);
                ss[b] = fmaf(x0.y, x0.y, ss[b]);
                ss[b] = fmaf(x0.z, x0.z, ss[b]);
                ss[b] = fmaf(x0.w, x0.w, ss[b]);
                ss[b] = fmaf(x1.x, x1.x, ss[b]);
                ss[b] = fmaf(x1.y, x1.y, ss[b]);
                ss[b] = fmaf(x1.z, x1.z, ss[b]);
                ss[b] = fmaf(x1.w, x1.w, ss[b]);
            }
        }
    }
#pragma unroll
    for (int b = 0; b < B; b++) {
        float g = cuda_warp_sum(acc0[b]), u = cuda_warp_sum(acc1[b]);
        float s = 1.0f / sqrtf(cuda_warp_sum(ss[b]) / (float)a.cols + a.eps);
        if (lane != 0)
            continue;
        if (SWIGLU) {
            __nv_bfloat16 *o = (__nv_bfloat16 *)a.out + b * a.out_stride + r0;
            *o = __float2bfloat16_rn(cuda_silu(s * g) * (s * u));
        } else {
            float *y = a.y[m] + b * a.y_stride[m];
            y[r0] = s * g;
            if (2 * wi + 1 < rows)
                y[r1] = s * u;
        }
    }
}

template <int B>
static cudaError_t mr_launch(const mr_args &p, unsigned blocks, cudaStream_t stream)
{
    if (p.a.swiglu)
        return cuda_launch(mr_kernel<B, true>, blocks, MR_THREADS, 0, stream, p);
    return cuda_launch(mr_kernel<B, false>, blocks, MR_THREADS, 0, stream, p);
}

extern "C" bool cuda_matvec_rms_fits(int64_t cols, int64_t x_stride, int batch)
{
    return cols >= 8 && cols % 8 == 0 && (batch <= 1 || x_stride % 4 == 0) && batch >= 1 &&
           batch <= CUDA_MATVEC_RMS_MAX_BATCH;
}

extern "C" int cuda_matvec_rms(const struct cuda_matvec_rms *a, cudaStream_t stream)
{
    bool ok = a->n >= 1 && a->n <= CUDA_MATVEC_RMS_MAX_GROUP && (!a->swiglu || a->n == 2) &&
              cuda_matvec_rms_fits(a->cols, a->x_stride, a->batch) && a->x_stride >= a->cols &&
              ((uintptr_t)a->x % 16) == 0 && !(a->eps < 0.0f) &&
              (!a->swiglu || (a->out && a->rows[0] == a->rows[1] &&
                              (a->batch <= 1 || a->out_stride >= a->rows[0])));
    mr_args p;
    p.a = *a;
    int64_t warps = 0;
    for (int m = 0; ok && m < a->n; m++) {
        ok = a->w[m] && ((uintptr_t)a->w[m] % 16) == 0 && a->rows[m] >= 1 &&
             (a->swiglu || (a->y[m] && (a->batch <= 1 || a->y_stride[m] >= a->rows[m])));
        if (a->swiglu) {
            warps = a->rows[0];
            p.warp_end[0] = warps;
        } else {
            warps += (a->rows[m] + 1) / 2;
            p.warp_end[m] = warps;
        }
    }
    if (!ok)
        return cuda_fail_args("cuda_matvec_rms",
                              "1..4 bf16 products (2 of equal rows with swiglu), cols a multiple "
                              "of 8, 16-byte aligned W and x, batch 1..4, strides that hold a row");
    unsigned blocks = cuda_blocks(warps, MR_THREADS / 32);
    /* a warp reads two rows (gate and up with swiglu) */
    p.prefetch_blocks = cuda_prefetch_blocks((MR_THREADS / 32) * 2 * a->cols * 2);
    cudaError_t err;
    switch (a->batch) {
    case 1:
        err = mr_launch<1>(p, blocks, stream);
        break;
    case 2:
        err = mr_launch<2>(p, blocks, stream);
        break;
    case 3:
        err = mr_launch<3>(p, blocks, stream);
        break;
    default:
        err = mr_launch<4>(p, blocks, stream);
        break;
    }
    CUDA_TRY(err);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
