/*
 * kernels/cuda_rmsnorm.cu — RMSNorm (see cuda_rmsnorm.h).
 *
 * A row belongs to a warp when it is short (head norms, n <= 1024; four rows per block) and to
 * a whole block of 256 threads otherwise (hidden-size norms). Two passes over the row: the sum
 * of squares, then the scaled store; the second pass re-reads x from L1/L2, which is cheaper
 * than holding rows of any length in registers.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_rmsnorm.h"
#include "cuda_util.cuh"

template <typename TX, typename TY, int TPR>
__global__ void rmsnorm_kernel(const TX *x, int64_t xs, TY *y, int64_t ys, const float *w,
                               int64_t rows, int n, float eps, bool zero_centred)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int64_t row = TPR == 32 ? (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32
                            : (int64_t)blockIdx.x;
    int t = TPR == 32 ? threadIdx.x % 32 : threadIdx.x;
    bool live = row < rows; /* block-wide groups must all reach cuda_row_sum */
    const TX *xr = x + (live ? row : 0) * xs;
    float ss = 0.0f;
    if (live)
        for (int i = t; i < n; i += TPR) {
            float v = cuda_to_f32(xr[i]);
            ss += v * v;
        }
    ss = cuda_row_sum<TPR>(ss);
    if (!live)
        return;
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    TY *yr = y + row * ys;
    for (int i = t; i < n; i += TPR) {
        float g = w ? (zero_centred ? 1.0f + w[i] : w[i]) : 1.0f;
        cuda_from_f32(yr + i, cuda_to_f32(xr[i]) * scale * g);
    }
}

template <typename TX, typename TY>
static int rmsnorm_launch(const struct cuda_rmsnorm *a, cudaStream_t stream)
{
    const TX *x = (const TX *)a->x;
    TY *y = (TY *)a->y;
    if (a->n <= 1024)
        CUDA_TRY(cuda_launch(rmsnorm_kernel<TX, TY, 32>, cuda_blocks(a->rows, 4), 128, 0, stream, x,
                             a->x_stride, y, a->y_stride, a->w, a->rows, a->n, a->eps,
                             a->zero_centred));
    else
        CUDA_TRY(cuda_launch(rmsnorm_kernel<TX, TY, 256>, (unsigned)a->rows, 256, 0, stream, x,
                             a->x_stride, y, a->y_stride, a->w, a->rows, a->n, a->eps,
                             a->zero_centred));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_rmsnorm(const struct cuda_rmsnorm *a, cudaStream_t stream)
{
    bool types_ok = (a->x_type == DTYPE_F32 || a->x_type == DTYPE_BF16) &&
                    (a->y_type == DTYPE_F32 || a->y_type == DTYPE_BF16);
    if (!types_ok || a->n < 1 || a->rows < 0 || a->x_stride < a->n || a->y_stride < a->n ||
        !(a->eps >= 0.0f) || !a->x || !a->y)
        return cuda_fail_args("cuda_rmsnorm", "types must be f32/bf16, n >= 1, strides >= n");
    if (a->rows == 0)
        return 0;
    if (a->x_type == DTYPE_F32 && a->y_type == DTYPE_F32)
        return rmsnorm_launch<float, float>(a, stream);
    if (a->x_type == DTYPE_F32)
        return rmsnorm_launch<float, __nv_bfloat16>(a, stream);
    if (a->y_type == DTYPE_F32)
        return rmsnorm_launch<__nv_bfloat16, float>(a, stream);
    return rmsnorm_launch<__nv_bfloat16, __nv_bfloat16>(a, stream);
}
