/*
 * kernels/cuda_attn_prep.cu — q/k norms, RoPE, padding and KV store in one pass (see
 * cuda_attn_prep.h).
 *
 * A warp owns one head of one row (query heads first, then key heads, then value heads): the
 * head sits in a per-warp shared-memory row so the RoPE pairs, which lie in different lanes,
 * meet after a __syncwarp. The angle is float(pos) * inv_freq with the accurate cosf/sinf, and
 * the norm multiplies x * scale * weight in that order, as cuda_rmsnorm and cuda_rope do.
 */
#include "cuda_attn_prep.h"
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_util.cuh"

#define AP_WARPS 4

__global__ void __launch_bounds__(AP_WARPS * 32) attn_prep_kernel(struct cuda_attn_prep p)
{
    __shared__ float buf[AP_WARPS][CUDA_ATTN_PREP_MAX_HEAD];
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int units = p.n_heads + 2 * p.n_kv_heads;
    int64_t id = (int64_t)blockIdx.x * AP_WARPS + warp;
    if (id >= p.rows * units)
        return;
    int64_t r = id / units;
    int u = (int)(id % units);
    int hd = p.head_dim, hp = p.head_pad;
    const float *src, *w;
    int kind; /* 0 query, 1 key, 2 value */
    int h;
    if (u < p.n_heads) {
        kind = 0, h = u;
        src = p.q + r * p.q_stride + (int64_t)h * p.q_head_stride;
        w = p.q_norm;
    } else if (u < p.n_heads + p.n_kv_heads) {
        kind = 1, h = u - p.n_heads;
        src = p.k + r * p.k_stride + (int64_t)h * hd;
        w = p.k_norm;
    } else {
        kind = 2, h = u - p.n_heads - p.n_kv_heads;
        src = p.v + r * p.v_stride + (int64_t)h * hd;
        w = NULL;
    }
    float *x = buf[warp];
    float ss = 0.0f;
    for (int i = lane; i < hp; i += 32) {
        float e = i < hd ? src[i] : 0.0f;
        x[i] = e;
        ss += e * e;
    }
    if (kind != 2 && w) {
        float scale = 1.0f / sqrtf(cuda_warp_sum(ss) / (float)hd + p.eps);
        for (int i = lane; i < hd; i += 32)
            x[i] = x[i] * scale * (p.zero_centred ? 1.0f + w[i] : w[i]);
    }
    int32_t pos = p.pos[r];
    if (kind != 2 && p.rot_dim > 0) {
        __syncwarp();
        int half = p.rot_dim / 2;
        for (int i = lane; i < half; i += 32) {
            float angle = (float)pos * p.inv_freq[i];
            float c = cosf(angle), s = sinf(angle);
            int a = p.neox ? i : 2 * i, b = p.neox ? i + half : 2 * i + 1;
            float x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
    __syncwarp();
    if (kind == 0) {
        float *dst = p.q_out + r * p.q_out_stride + (int64_t)h * hp;
        for (int i = lane; i < hp; i += 32)
            dst[i] = x[i];
    } else {
        __nv_bfloat16 *cache = (__nv_bfloat16 *)(kind == 1 ? p.k_cache : p.v_cache);
        int64_t slot = p.slot[r], row_elems = (int64_t)p.n_kv_heads * hp;
        __nv_bfloat16 *dst = p.block_table
                                     ? cache + cuda_kv_row(p.block_table + slot * p.table_stride,
                                                           p.block_size, pos) *
                                                       row_elems
                                     : cache + slot * p.slot_stride + (int64_t)pos * row_elems;
        dst += (int64_t)h * hp;
        for (int i = lane; i < hp; i += 32)
            dst[i] = __float2bfloat16_rn(x[i]);
    }
}

extern "C" int cuda_attn_prep(const struct cuda_attn_prep *a, cudaStream_t stream)
{
    int hd = a->head_dim;
    bool rows_ok =
            a->rows <= 1 || (a->q_stride >= (int64_t)(a->n_heads - 1) * a->q_head_stride + hd &&
                             a->k_stride >= (int64_t)a->n_kv_heads * hd &&
                             a->v_stride >= (int64_t)a->n_kv_heads * hd &&
                             a->q_out_stride >= (int64_t)a->n_heads * a->head_pad);
    if (a->rows < 0 || a->n_heads < 1 || a->n_kv_heads < 1 || hd < 1 || a->head_pad < hd ||
        a->head_pad > CUDA_ATTN_PREP_MAX_HEAD || a->q_head_stride < hd || a->rot_dim < 0 ||
        a->rot_dim % 2 || a->rot_dim > hd || !rows_ok || !(a->eps >= 0.0f) || !a->q || !a->k ||
        !a->v || (a->rot_dim > 0 && !a->inv_freq) || !a->pos || !a->q_out || !a->k_cache ||
        !a->v_cache || !a->slot || (a->block_table && (a->block_size < 1 || a->table_stride < 1)))
        return cuda_fail_args("cuda_attn_prep",
                              "head_dim <= head_pad <= 256, q_head_stride >= head_dim, even "
                              "rot_dim <= head_dim, strides that hold a row, a block table with "
                              "block_size >= 1");
    int64_t warps = a->rows * (a->n_heads + 2 * a->n_kv_heads);
    if (warps == 0)
        return 0;
    CUDA_TRY(cuda_launch(attn_prep_kernel, cuda_blocks(warps, AP_WARPS), AP_WARPS * 32, 0, stream,
                         *a));
    CUDA_TRY(cudaGetLastError());
    return 0;
}
