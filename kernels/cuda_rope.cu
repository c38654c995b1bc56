/*
 * kernels/cuda_rope.cu — rotary position embedding (see cuda_rope.h).
 *
 * One thread per rotated pair; the angle is computed in fp32 exactly as the CPU twin does
 * (float(pos) * inv_freq) and cosf/sinf are the accurate versions, so long contexts agree.
 */
#include "cuda_check.cuh"
#include "cuda_rope.h"
#include "cuda_util.cuh"

template <typename T>
__global__ void rope_kernel(T *x, int64_t n_tok, int64_t ts, int n_heads, int hs, int half,
                            const float *inv_freq, const int32_t *pos, bool neox)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t per_tok = (int64_t)n_heads * half;
    if (id >= n_tok * per_tok)
        return;
    int64_t t = id / per_tok;
    int h = (int)(id % per_tok) / half, i = (int)(id % per_tok) % half;
    float angle = (float)pos[t] * inv_freq[i];
    float c = cosf(angle), s = sinf(angle);
    T *xh = x + t * ts + (int64_t)h * hs;
    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float x0 = cuda_to_f32(xh[a]), x1 = cuda_to_f32(xh[b]);
    cuda_from_f32(xh + a, x0 * c - x1 * s);
    cuda_from_f32(xh + b, x0 * s + x1 * c);
}

extern "C" int cuda_rope(const struct cuda_rope *a, cudaStream_t stream)
{
    if ((a->type != DTYPE_F32 && a->type != DTYPE_BF16) || a->rot_dim < 2 || a->rot_dim % 2 ||
        a->rot_dim > a->head_stride || a->n_heads < 1 || a->n_tok < 0 ||
        (a->n_tok > 1 && a->tok_stride < (int64_t)(a->n_heads - 1) * a->head_stride + a->rot_dim) ||
        !a->x || !a->inv_freq || !a->pos)
        return cuda_fail_args("cuda_rope", "type f32/bf16, even rot_dim <= head_stride, tokens "
                                           "that do not overlap");
    int half = a->rot_dim / 2;
    int64_t n = a->n_tok * a->n_heads * half;
    if (n == 0)
        return 0;
    if (a->type == DTYPE_F32)
        rope_kernel<float><<<cuda_blocks(n, 256), 256, 0, stream>>>(
                (float *)a->x, a->n_tok, a->tok_stride, a->n_heads, a->head_stride, half,
                a->inv_freq, a->pos, a->neox);
    else
        rope_kernel<__nv_bfloat16><<<cuda_blocks(n, 256), 256, 0, stream>>>(
                (__nv_bfloat16 *)a->x, a->n_tok, a->tok_stride, a->n_heads, a->head_stride, half,
                a->inv_freq, a->pos, a->neox);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
