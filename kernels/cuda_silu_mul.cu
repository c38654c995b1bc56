/*
 * kernels/cuda_silu_mul.cu — silu(gate) * up (see cuda_silu_mul.h). One thread per element; a
 * decode step's MLP activation is a few tens of KB, so launch count matters more than width.
 */
#include "cuda_check.cuh"
#include "cuda_silu_mul.h"
#include "cuda_util.cuh"

template <typename TI, typename TO>
__global__ void silu_mul_kernel(const TI *gate, const TI *up, int64_t is, TO *out, int64_t os,
                                int64_t rows, int64_t n)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= rows * n)
        return;
    int64_t r = id / n, i = id % n;
    float g = cuda_to_f32(gate[r * is + i]), u = cuda_to_f32(up[r * is + i]);
    cuda_from_f32(out + r * os + i, cuda_silu(g) * u);
}

template <typename TI, typename TO>
static int silu_mul_launch(const struct cuda_silu_mul *a, cudaStream_t stream)
{
    silu_mul_kernel<TI, TO><<<cuda_blocks(a->rows * a->n, 256), 256, 0, stream>>>(
            (const TI *)a->gate, (const TI *)a->up, a->in_stride, (TO *)a->out, a->out_stride,
            a->rows, a->n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_silu_mul(const struct cuda_silu_mul *a, cudaStream_t stream)
{
    if ((a->in_type != DTYPE_F32 && a->in_type != DTYPE_BF16) ||
        (a->out_type != DTYPE_F32 && a->out_type != DTYPE_BF16) || a->n < 1 || a->rows < 0 ||
        (a->rows > 1 && (a->in_stride < a->n || a->out_stride < a->n)) || !a->gate || !a->up ||
        !a->out)
        return cuda_fail_args("cuda_silu_mul", "types f32/bf16, n >= 1, strides >= n");
    if (a->rows == 0)
        return 0;
    if (a->in_type == DTYPE_F32)
        return a->out_type == DTYPE_F32 ? silu_mul_launch<float, float>(a, stream)
                                        : silu_mul_launch<float, __nv_bfloat16>(a, stream);
    return a->out_type == DTYPE_F32 ? silu_mul_launch<__nv_bfloat16, float>(a, stream)
                                    : silu_mul_launch<__nv_bfloat16, __nv_bfloat16>(a, stream);
}
