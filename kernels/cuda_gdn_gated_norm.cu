/*
 * kernels/cuda_gdn_gated_norm.cu — gated RMSNorm (see cuda_gdn_gated_norm.h). Head rows are
 * short (Dv = 128), so a warp takes a row, four rows per block; longer rows get a block each.
 */
#include "cuda_check.cuh"
#include "cuda_gdn_gated_norm.h"
#include "cuda_util.cuh"

template <typename TY, int TPR> __global__ void gdn_gated_norm_kernel(struct cuda_gdn_gated_norm p)
{
    int64_t row = TPR == 32 ? (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32
                            : (int64_t)blockIdx.x;
    int t = TPR == 32 ? threadIdx.x % 32 : threadIdx.x;
    bool live = row < p.rows;
    const float *o = p.o + (live ? row : 0) * p.o_stride;
    float ss = 0.0f;
    if (live)
        for (int i = t; i < p.dim; i += TPR)
            ss += o[i] * o[i];
    ss = cuda_row_sum<TPR>(ss);
    if (!live)
        return;
    float r = 1.0f / sqrtf(ss / (float)p.dim + p.eps);
    const float *z = p.z + row * p.z_stride;
    TY *y = (TY *)p.y + row * p.y_stride;
    for (int i = t; i < p.dim; i += TPR)
        cuda_from_f32(y + i, p.w[i] * (o[i] * r) * cuda_silu(z[i]));
}

template <typename TY>
static int gdn_gated_norm_launch(const struct cuda_gdn_gated_norm *a, cudaStream_t stream)
{
    if (a->dim <= 1024)
        gdn_gated_norm_kernel<TY, 32><<<cuda_blocks(a->rows, 4), 128, 0, stream>>>(*a);
    else
        gdn_gated_norm_kernel<TY, 256><<<(unsigned)a->rows, 256, 0, stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_gdn_gated_norm(const struct cuda_gdn_gated_norm *a, cudaStream_t stream)
{
    if ((a->y_type != DTYPE_F32 && a->y_type != DTYPE_BF16) || a->dim < 1 || a->rows < 0 ||
        (a->rows > 1 && (a->o_stride < a->dim || a->z_stride < a->dim || a->y_stride < a->dim)) ||
        !(a->eps >= 0.0f) || !a->o || !a->z || !a->w || !a->y)
        return cuda_fail_args("cuda_gdn_gated_norm", "y f32/bf16, dim >= 1, strides >= dim");
    if (a->rows == 0)
        return 0;
    return a->y_type == DTYPE_F32 ? gdn_gated_norm_launch<float>(a, stream)
                                  : gdn_gated_norm_launch<__nv_bfloat16>(a, stream);
}
