/*
 * kernels/cuda_gdn_gates.cu — Gated DeltaNet beta and g (see cuda_gdn_gates.h). One thread per
 * (token, head); the softplus switches to the identity above 20, as the CPU twin (and torch's
 * softplus threshold) do, so large arguments neither overflow nor differ between backends.
 */
#include "cuda_check.cuh"
#include "cuda_gdn_gates.h"
#include "cuda_util.cuh"

__global__ void gdn_gates_kernel(struct cuda_gdn_gates p)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= p.rows * p.n_heads)
        return;
    int64_t r = id / p.n_heads;
    int h = (int)(id % p.n_heads);
    float b = p.b[r * p.b_stride + h], x = p.a[r * p.a_stride + h] + p.dt_bias[h];
    float softplus = x > 20.0f ? x : log1pf(expf(x));
    p.beta[r * p.gb_stride + h] = 1.0f / (1.0f + expf(-b));
    p.g[r * p.gb_stride + h] = p.neg_a[h] * softplus;
}

extern "C" int cuda_gdn_gates(const struct cuda_gdn_gates *a, cudaStream_t stream)
{
    if (a->n_heads < 1 || a->rows < 0 ||
        (a->rows > 1 &&
         (a->a_stride < a->n_heads || a->b_stride < a->n_heads || a->gb_stride < a->n_heads)) ||
        !a->a || !a->b || !a->neg_a || !a->dt_bias || !a->g || !a->beta)
        return cuda_fail_args("cuda_gdn_gates", "n_heads >= 1, strides >= n_heads");
    if (a->rows == 0)
        return 0;
    gdn_gates_kernel<<<cuda_blocks(a->rows * a->n_heads, 256), 256, 0, stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
