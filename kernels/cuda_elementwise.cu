/*
 * kernels/cuda_elementwise.cu — bias add, gated store and KV store (see cuda_elementwise.h).
 *
 * One thread per element over a 2-D grid (x: elements of a row, y: rows, folded into x when
 * there are more rows than a grid's y may hold): these are memory-bound one-pass operations
 * whose traffic is small next to the weight stream of the products around them.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_elementwise.h"
#include "cuda_util.cuh"

#include <cuda_bf16.h>

#define EW_THREADS 256

__global__ void add_bias_kernel(float *y, int64_t ys, const float *bias, int64_t rows, int64_t n)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= rows * n)
        return;
    int64_t r = id / n, i = id % n;
    y[r * ys + i] += bias[i];
}

extern "C" int cuda_add_bias(float *y, int64_t y_stride, const float *bias, int64_t rows, int64_t n,
                             cudaStream_t stream)
{
    if (!y || !bias || rows < 0 || n < 1 || (rows > 1 && y_stride < n))
        return cuda_fail_args("cuda_add_bias", "y and bias set, n >= 1, y_stride >= n");
    if (rows == 0)
        return 0;
    add_bias_kernel<<<cuda_blocks(rows * n, EW_THREADS), EW_THREADS, 0, stream>>>(y, y_stride, bias,
                                                                                  rows, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

template <typename TO> __global__ void gate_store_kernel(struct cuda_gate_store a)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= a.rows * a.n)
        return;
    int64_t r = id / a.n, i = id % a.n;
    float v = a.x[r * a.x_stride + i];
    if (a.gate) {
        float g = a.gate[r * a.gate_stride + i];
        v *= 1.0f / (1.0f + expf(-g));
    }
    cuda_from_f32((TO *)a.out + r * a.out_stride + i, v);
}

extern "C" int cuda_gate_store(const struct cuda_gate_store *a, cudaStream_t stream)
{
    bool multi = a->rows > 1;
    if (!a->x || !a->out || a->rows < 0 || a->n < 1 ||
        (a->out_type != DTYPE_F32 && a->out_type != DTYPE_BF16) ||
        (multi &&
         (a->x_stride < a->n || a->out_stride < a->n || (a->gate && a->gate_stride < a->n))))
        return cuda_fail_args("cuda_gate_store", "x and out set, out f32/bf16, strides >= n");
    if (a->rows == 0)
        return 0;
    unsigned blocks = cuda_blocks(a->rows * a->n, EW_THREADS);
    if (a->out_type == DTYPE_BF16)
        CUDA_TRY(cuda_launch(gate_store_kernel<__nv_bfloat16>, blocks, EW_THREADS, 0, stream, *a));
    else
        CUDA_TRY(cuda_launch(gate_store_kernel<float>, blocks, EW_THREADS, 0, stream, *a));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

__global__ void kv_store_kernel(struct cuda_kv_store a)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= a.rows * a.kv_dim)
        return;
    int64_t r = id / a.kv_dim, i = id % a.kv_dim;
    int64_t slot = a.slot[r];
    int64_t dst = a.block_table ? cuda_kv_row(a.block_table + slot * a.table_stride, a.block_size,
                                              a.pos[r]) *
                                                  a.kv_dim +
                                          i
                                : slot * a.slot_stride + (int64_t)a.pos[r] * a.kv_dim + i;
    ((__nv_bfloat16 *)a.k_cache)[dst] = __float2bfloat16(a.k[r * a.k_stride + i]);
    ((__nv_bfloat16 *)a.v_cache)[dst] = __float2bfloat16(a.v[r * a.v_stride + i]);
}

extern "C" int cuda_kv_store(const struct cuda_kv_store *a, cudaStream_t stream)
{
    if (!a->k || !a->v || !a->k_cache || !a->v_cache || !a->pos || !a->slot || a->rows < 0 ||
        a->kv_dim < 1 || (!a->block_table && a->slot_stride < a->kv_dim) ||
        (a->block_table && (a->block_size < 1 || a->table_stride < 1)) ||
        (a->rows > 1 && (a->k_stride < a->kv_dim || a->v_stride < a->kv_dim)))
        return cuda_fail_args("cuda_kv_store", "every pointer set, kv_dim >= 1, strides >= kv_dim");
    if (a->rows == 0)
        return 0;
    kv_store_kernel<<<cuda_blocks(a->rows * a->kv_dim, EW_THREADS), EW_THREADS, 0, stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

__global__ void scale_cols_kernel(__nv_bfloat16 *w, int64_t rows, int64_t cols, const float *scale,
                                  float add)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= rows * cols)
        return;
    w[id] = __float2bfloat16_rn(__bfloat162float(w[id]) * (add + scale[id % cols]));
}

extern "C" int cuda_scale_cols(void *w, int64_t rows, int64_t cols, const float *scale, float add,
                               cudaStream_t stream)
{
    if (!w || !scale || rows < 0 || cols < 1)
        return cuda_fail_args("cuda_scale_cols", "w and scale set, cols >= 1");
    if (rows == 0)
        return 0;
    scale_cols_kernel<<<cuda_blocks(rows * cols, EW_THREADS), EW_THREADS, 0, stream>>>(
            (__nv_bfloat16 *)w, rows, cols, scale, add);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
