/*
 * kernels/cuda_attention.cu — decode and prefill attention (see cuda_attention.h).
 *
 * Both kernels give a warp one (query, position) score at a time: lane l holds elements
 * l, l + 32, ... of the head (conflict-free shared-memory reads, coalesced global ones), the dot
 * product is a warp sum, and each query keeps an online softmax (running max m, sum l and the
 * rescaled accumulator) in registers.
 *
 * Decode is a stream over the cache, so the grid covers (context piece, KV head, sequence): a
 * block serves every query head of its KV group (up to 8) so each K/V element is read once, and
 * each of its 4 warps takes every 4th position of the piece. The warps merge their partials
 * (m, l, acc) in shared memory and the block writes one per head; a second kernel merges the
 * pieces that hold positions (not every piece of max_len), in a fixed order. At a small batch
 * and short context the pieces are short (down to 16 positions): that step is latency-bound,
 * so more blocks with fewer dependent steps each finish sooner.
 *
 * Prefill tiles 16 query rows of one head per block (4 per warp) and walks the causal context
 * in tiles of 16 positions staged as fp32 in shared memory. It uses no tensor cores: the
 * fallback for what the tensor-core kernel (cuda_attention_tc.cu) cannot run (f32 caches,
 * misaligned ones, GPUs before sm_80), correct for every shape the engine meets.
 */
#include "cuda_attention.h"
#include "cuda_attention_internal.h"
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_util.cuh"

#include <math.h>

#define ATTN_WARPS     4
#define ATTN_MAX_GROUP 8  /* query heads a decode block serves */
#define ATTN_ROWS      4  /* prefill query rows per warp */
#define ATTN_TILE      16 /* prefill positions per shared-memory tile */

static __device__ __forceinline__ float attn_load(const void *p, int64_t i, bool bf16)
{
    return bf16 ? cuda_to_f32(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

static __device__ __forceinline__ void attn_store(void *p, int64_t i, float v, bool bf16)
{
    if (bf16)
        cuda_from_f32((__nv_bfloat16 *)p + i, v);
    else
        ((float *)p)[i] = v;
}

/* The query heads one decode block serves: the largest divisor of the group size up to 8. */
static int attn_block_heads(int group)
{
    int gb = group < ATTN_MAX_GROUP ? group : ATTN_MAX_GROUP;
    while (group % gb)
        gb--;
    return gb;
}

struct attn_decode_args {
    const void *q, *k, *v;
    void *out;
    float *work;
    const int32_t *lens, *slots, *table;
    int64_t q_stride, kv_stride, seq_stride, out_stride, max_len, table_stride;
    int block_size;
    int n_heads, group, block_heads, n_splits;
    float scale;
    bool q_bf16, out_bf16;
};

template <typename TKV, int DL> __global__ void attn_decode_kernel(struct attn_decode_args a)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    const int hd = DL * 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int seq = blockIdx.z, per_kv = a.group / a.block_heads, heads = a.block_heads;
    const int kvh = blockIdx.y / per_kv, h0 = kvh * a.group + (blockIdx.y % per_kv) * heads;
    int64_t len = a.lens[seq];
    int64_t chunk = (a.max_len + a.n_splits - 1) / a.n_splits;
    int64_t start = (int64_t)blockIdx.x * chunk, end = min(start + chunk, len);
    if (start >= len)
        return; /* nothing here: the merge reads only the pieces that hold positions */

    float q[ATTN_MAX_GROUP][DL], acc[ATTN_MAX_GROUP][DL], m[ATTN_MAX_GROUP], l[ATTN_MAX_GROUP];
#pragma unroll
    for (int j = 0; j < ATTN_MAX_GROUP; j++) {
        m[j] = -INFINITY, l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < DL; i++) {
            acc[j][i] = 0.0f;
            q[j][i] = j < heads
                              ? attn_load(a.q,
                                          seq * a.q_stride + (int64_t)(h0 + j) * hd + lane + 32 * i,
                                          a.q_bf16) *
                                        a.scale
                              : 0.0f;
        }
    }
    const int64_t slot = a.slots ? (int64_t)a.slots[seq] : (int64_t)seq;
    const int32_t *table = a.table ? a.table + slot * a.table_stride : NULL;
    const int64_t base = table ? 0 : slot * a.seq_stride;
    const TKV *kb = (const TKV *)a.k + base + (int64_t)kvh * hd + lane;
    const TKV *vb = (const TKV *)a.v + base + (int64_t)kvh * hd + lane;
    /* the next position's row is looked up while this one's scores are computed */
    int64_t row = start + warp < end ? cuda_kv_row(table, a.block_size, start + warp) : 0;
    for (int64_t p = start + warp; p < end; p += ATTN_WARPS) {
        float kk[DL], vv[DL];
        const int64_t at = row * a.kv_stride;
#pragma unroll
        for (int i = 0; i < DL; i++) {
            kk[i] = cuda_to_f32(kb[at + 32 * i]);
            vv[i] = cuda_to_f32(vb[at + 32 * i]);
        }
        row = p + ATTN_WARPS < end ? cuda_kv_row(table, a.block_size, p + ATTN_WARPS) : 0;
#pragma unroll
        for (int j = 0; j < ATTN_MAX_GROUP; j++) {
            if (j >= heads)
                break;
            float sc = 0.0f;
#pragma unroll
            for (int i = 0; i < DL; i++)
                sc += q[j][i] * kk[i];
            sc = cuda_warp_sum(sc);
            float mn = fmaxf(m[j], sc), c = expf(m[j] - mn), e = expf(sc - mn);
            l[j] = l[j] * c + e;
#pragma unroll
            for (int i = 0; i < DL; i++)
                acc[j][i] = acc[j][i] * c + e * vv[i];
            m[j] = mn;
        }
    }

    /* the block's four warps merge in shared memory: one partial per (piece, head) */
    __shared__ float s_m[ATTN_WARPS][ATTN_MAX_GROUP], s_l[ATTN_WARPS][ATTN_MAX_GROUP];
    __shared__ float s_acc[ATTN_WARPS][ATTN_MAX_GROUP][DL * 32];
#pragma unroll
    for (int j = 0; j < ATTN_MAX_GROUP; j++) {
        if (j >= heads)
            break;
        if (lane == 0)
            s_m[warp][j] = m[j], s_l[warp][j] = l[j];
#pragma unroll
        for (int i = 0; i < DL; i++)
            s_acc[warp][j][lane + 32 * i] = acc[j][i];
    }
    __syncthreads();
    for (int j = warp; j < heads; j += ATTN_WARPS) {
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++)
            mx = fmaxf(mx, s_m[w][j]);
        float c[ATTN_WARPS], sum = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) {
            c[w] = s_m[w][j] == -INFINITY ? 0.0f : expf(s_m[w][j] - mx);
            sum += s_l[w][j] * c[w];
        }
        float *out =
                a.work + ((int64_t)(seq * a.n_heads + h0 + j) * a.n_splits + blockIdx.x) * (hd + 2);
        if (lane == 0)
            out[0] = mx, out[1] = sum;
#pragma unroll
        for (int i = 0; i < DL; i++) {
            float v = 0.0f;
#pragma unroll
            for (int w = 0; w < ATTN_WARPS; w++)
                v += s_acc[w][j][lane + 32 * i] * c[w];
            out[2 + lane + 32 * i] = v;
        }
    }
}

/* One block per (head, sequence), one thread per element of the head: merges the pieces that
 * hold positions in piece order, so the result does not depend on scheduling. */
__global__ void attn_decode_merge_kernel(struct attn_decode_args a, int hd)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    const int h = blockIdx.x, seq = blockIdx.y, d = threadIdx.x;
    int64_t len = a.lens[seq], chunk = (a.max_len + a.n_splits - 1) / a.n_splits;
    const int parts = (int)min((int64_t)a.n_splits, (len + chunk - 1) / chunk);
    const float *w = a.work + (int64_t)(seq * a.n_heads + h) * a.n_splits * (hd + 2);
    float mx = -INFINITY;
#pragma unroll 4
    for (int p = 0; p < parts; p++)
        mx = fmaxf(mx, w[(int64_t)p * (hd + 2)]);
    float sum = 0.0f, acc = 0.0f;
#pragma unroll 4
    for (int p = 0; p < parts; p++) {
        const float *wp = w + (int64_t)p * (hd + 2);
        float m = wp[0], c = m == -INFINITY ? 0.0f : expf(m - mx);
        sum += wp[1] * c;
        acc += wp[2 + d] * c;
    }
    attn_store(a.out, seq * a.out_stride + (int64_t)h * hd + d, sum > 0.0f ? acc / sum : 0.0f,
               a.out_bf16);
}

static bool attn_type_ok(enum dtype t)
{
    return t == DTYPE_F32 || t == DTYPE_BF16;
}

static bool attn_head_dim_ok(int hd)
{
    return hd == 32 || hd == 64 || hd == 128 || hd == 256;
}

extern "C" int cuda_attention_decode_splits(int n_seqs, int n_heads, int n_kv_heads,
                                            int64_t max_len)
{
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        sms = 132;
    if (n_seqs < 1 || n_kv_heads < 1 || n_heads < n_kv_heads || max_len < 1)
        return 1;
    int64_t blocks = (int64_t)n_seqs * (n_heads / attn_block_heads(n_heads / n_kv_heads));
    /* about 8 blocks per multiprocessor, pieces of 64 positions or more (16 per warp) - but
     * down to 16 positions while that still leaves under two blocks per multiprocessor: a
     * short context at a small batch is latency-bound, so shorter pieces finish sooner, and
     * more blocks than that only lengthen the merge (H100, bench/configs, rank shape) */
    int64_t want = ((int64_t)sms * 8 + blocks - 1) / blocks;
    int64_t wave = ((int64_t)sms * 2 + blocks - 1) / blocks;
    int64_t coarse = (max_len + 63) / 64, fine = (max_len + 15) / 16;
    int64_t most = coarse > wave ? coarse : wave < fine ? wave : fine;
    int64_t s = want < most ? want : most;
    return (int)(s < 1 ? 1 : s > 1024 ? 1024 : s);
}

extern "C" size_t cuda_attention_decode_work_bytes(int n_seqs, int n_heads, int head_dim,
                                                   int n_splits)
{
    return sizeof(float) * (size_t)n_seqs * (size_t)n_heads * (size_t)n_splits *
           (size_t)(head_dim + 2);
}

template <typename TKV>
static int attn_decode_launch(const struct attn_decode_args &a, int hd, int n_kv, int n_seqs,
                              cudaStream_t stream)
{
    dim3 grid((unsigned)a.n_splits, (unsigned)(n_kv * (a.group / a.block_heads)), (unsigned)n_seqs);
    cudaError_t err;
    switch (hd) {
    case 32:
        err = cuda_launch(attn_decode_kernel<TKV, 1>, grid, 32 * ATTN_WARPS, 0, stream, a);
        break;
    case 64:
        err = cuda_launch(attn_decode_kernel<TKV, 2>, grid, 32 * ATTN_WARPS, 0, stream, a);
        break;
    case 128:
        err = cuda_launch(attn_decode_kernel<TKV, 4>, grid, 32 * ATTN_WARPS, 0, stream, a);
        break;
    default:
        err = cuda_launch(attn_decode_kernel<TKV, 8>, grid, 32 * ATTN_WARPS, 0, stream, a);
        break;
    }
    CUDA_TRY(err);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cuda_launch(attn_decode_merge_kernel, dim3((unsigned)a.n_heads, (unsigned)n_seqs),
                         (unsigned)hd, 0, stream, a, hd));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_attention_decode(const struct cuda_attention_decode *a, cudaStream_t stream)
{
    int row = a->n_heads * a->head_dim, kv_row = a->n_kv_heads * a->head_dim;
    if (!attn_type_ok(a->q_type) || !attn_type_ok(a->kv_type) || !attn_type_ok(a->out_type) ||
        !attn_head_dim_ok(a->head_dim) || a->n_kv_heads < 1 || a->n_heads < a->n_kv_heads ||
        a->n_heads % a->n_kv_heads || a->n_seqs < 0 || a->n_seqs > 65535 || a->max_len < 0 ||
        a->n_splits < 0 || a->n_splits > 65535 || a->kv_stride < kv_row ||
        (a->n_seqs > 1 && (a->q_stride < row || a->out_stride < row)) || !a->q || !a->k || !a->v ||
        !a->lens || !a->out || !a->work ||
        (a->block_table && (a->block_size < 1 || a->table_stride * a->block_size < a->max_len)))
        return cuda_fail_args("cuda_attention_decode",
                              "types f32/bf16, head_dim 32/64/128/256, n_kv_heads divides "
                              "n_heads, strides cover a row, every pointer set, a block table "
                              "covering max_len");
    if (a->n_seqs == 0)
        return 0;
    struct attn_decode_args d;
    d.q = a->q, d.k = a->k, d.v = a->v, d.out = a->out, d.work = (float *)a->work;
    d.lens = a->lens, d.slots = a->slots, d.q_stride = a->q_stride, d.kv_stride = a->kv_stride;
    d.seq_stride = a->seq_stride, d.out_stride = a->out_stride;
    d.table = a->block_table, d.table_stride = a->table_stride, d.block_size = a->block_size;
    d.max_len = a->max_len > 0 ? a->max_len : 1;
    d.n_heads = a->n_heads, d.group = a->n_heads / a->n_kv_heads;
    d.block_heads = attn_block_heads(d.group);
    d.n_splits = a->n_splits ? a->n_splits
                             : cuda_attention_decode_splits(a->n_seqs, a->n_heads, a->n_kv_heads,
                                                            d.max_len);
    d.scale = a->scale, d.q_bf16 = a->q_type == DTYPE_BF16, d.out_bf16 = a->out_type == DTYPE_BF16;
    if (a->kv_type == DTYPE_BF16)
        return attn_decode_launch<__nv_bfloat16>(d, a->head_dim, a->n_kv_heads, a->n_seqs, stream);
    return attn_decode_launch<float>(d, a->head_dim, a->n_kv_heads, a->n_seqs, stream);
}

/* ---- prefill ----------------------------------------------------------------------------- */

struct attn_prefill_args {
    const void *q, *k, *v;
    void *out;
    const int32_t *table;
    int block_size;
    int64_t q_stride, kv_stride, out_stride, n_q, pos0;
    int group;
    float scale;
    bool q_bf16, out_bf16;
};

template <typename TKV, int DL> __global__ void attn_prefill_kernel(struct attn_prefill_args a)
{
    const int hd = DL * 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = blockIdx.y, kvh = h / a.group;
    const int64_t row0 = (int64_t)blockIdx.x * ATTN_WARPS * ATTN_ROWS;
    __shared__ float ks[ATTN_TILE][DL * 32], vs[ATTN_TILE][DL * 32];

    float q[ATTN_ROWS][DL], acc[ATTN_ROWS][DL], m[ATTN_ROWS], l[ATTN_ROWS];
    int64_t last[ATTN_ROWS]; /* the last position row j sees; -1 for rows past the end */
#pragma unroll
    for (int j = 0; j < ATTN_ROWS; j++) {
        int64_t r = row0 + warp * ATTN_ROWS + j;
        last[j] = r < a.n_q ? a.pos0 + r : -1;
        m[j] = -INFINITY, l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < DL; i++) {
            acc[j][i] = 0.0f;
            q[j][i] = r < a.n_q ? attn_load(a.q, r * a.q_stride + (int64_t)h * hd + lane + 32 * i,
                                            a.q_bf16) *
                                          a.scale
                                : 0.0f;
        }
    }
    int64_t rows_end = min(row0 + ATTN_WARPS * ATTN_ROWS, a.n_q);
    int64_t n_ctx = a.pos0 + rows_end;
    const TKV *kb = (const TKV *)a.k + (int64_t)kvh * hd;
    const TKV *vb = (const TKV *)a.v + (int64_t)kvh * hd;
    for (int64_t t0 = 0; t0 < n_ctx; t0 += ATTN_TILE) {
        __syncthreads(); /* the previous tile's readers are done */
        for (int e = threadIdx.x; e < ATTN_TILE * hd; e += blockDim.x) {
            int pp = e / hd, d = e % hd;
            int64_t p = t0 + pp;
            int64_t at = p < n_ctx ? cuda_kv_row(a.table, a.block_size, p) * a.kv_stride + d : 0;
            ks[pp][d] = p < n_ctx ? cuda_to_f32(kb[at]) : 0.0f;
            vs[pp][d] = p < n_ctx ? cuda_to_f32(vb[at]) : 0.0f;
        }
        __syncthreads();
        int n_tile = (int)min((int64_t)ATTN_TILE, n_ctx - t0);
        for (int pp = 0; pp < n_tile; pp++) {
            int64_t p = t0 + pp;
            float kk[DL], vv[DL];
#pragma unroll
            for (int i = 0; i < DL; i++)
                kk[i] = ks[pp][lane + 32 * i], vv[i] = vs[pp][lane + 32 * i];
#pragma unroll
            for (int j = 0; j < ATTN_ROWS; j++) {
                if (p > last[j]) /* the same for the whole warp */
                    continue;
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < DL; i++)
                    s += q[j][i] * kk[i];
                s = cuda_warp_sum(s);
                float mn = fmaxf(m[j], s), c = expf(m[j] - mn), e = expf(s - mn);
                l[j] = l[j] * c + e;
#pragma unroll
                for (int i = 0; i < DL; i++)
                    acc[j][i] = acc[j][i] * c + e * vv[i];
                m[j] = mn;
            }
        }
    }
#pragma unroll
    for (int j = 0; j < ATTN_ROWS; j++) {
        if (last[j] < 0)
            continue;
        int64_t r = row0 + warp * ATTN_ROWS + j;
#pragma unroll
        for (int i = 0; i < DL; i++)
            attn_store(a.out, r * a.out_stride + (int64_t)h * hd + lane + 32 * i, acc[j][i] / l[j],
                       a.out_bf16);
    }
}

template <typename TKV>
static int attn_prefill_launch(const struct attn_prefill_args &a, int hd, int n_heads,
                               cudaStream_t stream)
{
    dim3 grid(cuda_blocks(a.n_q, ATTN_WARPS * ATTN_ROWS), (unsigned)n_heads);
    switch (hd) {
    case 32:
        attn_prefill_kernel<TKV, 1><<<grid, 32 * ATTN_WARPS, 0, stream>>>(a);
        break;
    case 64:
        attn_prefill_kernel<TKV, 2><<<grid, 32 * ATTN_WARPS, 0, stream>>>(a);
        break;
    case 128:
        attn_prefill_kernel<TKV, 4><<<grid, 32 * ATTN_WARPS, 0, stream>>>(a);
        break;
    default:
        attn_prefill_kernel<TKV, 8><<<grid, 32 * ATTN_WARPS, 0, stream>>>(a);
        break;
    }
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_attention_prefill_tensor_ok(const struct cuda_attention_prefill *a)
{
    int dev = 0, major = 0;
    if (a->kv_type != DTYPE_BF16 || (uintptr_t)a->k % 16 || (uintptr_t)a->v % 16 ||
        a->kv_stride % 8 || (a->n_q + 63) / 64 > 65535 || cuda_attention_tc_smem(a->head_dim) == 0)
        return 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
        return 0;
    return major >= 8;
}

extern "C" int cuda_attention_prefill(const struct cuda_attention_prefill *a, cudaStream_t stream)
{
    int row = a->n_heads * a->head_dim, kv_row = a->n_kv_heads * a->head_dim;
    if (!attn_type_ok(a->q_type) || !attn_type_ok(a->kv_type) || !attn_type_ok(a->out_type) ||
        !attn_head_dim_ok(a->head_dim) || a->n_kv_heads < 1 || a->n_heads < a->n_kv_heads ||
        a->n_heads % a->n_kv_heads || a->n_heads > 65535 || a->n_q < 0 || a->pos0 < 0 ||
        a->kv_stride < kv_row || (a->n_q > 1 && (a->q_stride < row || a->out_stride < row)) ||
        !a->q || !a->k || !a->v || !a->out || a->impl < CUDA_ATTENTION_IMPL_AUTO ||
        a->impl > CUDA_ATTENTION_IMPL_TENSOR || (a->block_table && a->block_size < 1))
        return cuda_fail_args("cuda_attention_prefill",
                              "types f32/bf16, head_dim 32/64/128/256, n_kv_heads divides "
                              "n_heads, strides cover a row, every pointer set, a known impl, "
                              "block_size >= 1 with a block table");
    bool tensor = a->impl != CUDA_ATTENTION_IMPL_TILED && cuda_attention_prefill_tensor_ok(a);
    if (a->impl == CUDA_ATTENTION_IMPL_TENSOR && !tensor)
        return cuda_fail_args("cuda_attention_prefill",
                              "the tensor-core kernel needs sm_80+, a bf16 cache with 16-byte "
                              "aligned pointers and kv_stride a multiple of 8");
    if (a->n_q == 0)
        return 0;
    if (tensor)
        return cuda_attention_tc_prefill(a, stream);
    struct attn_prefill_args p;
    p.q = a->q, p.k = a->k, p.v = a->v, p.out = a->out;
    p.table = a->block_table, p.block_size = a->block_size;
    p.q_stride = a->q_stride, p.kv_stride = a->kv_stride, p.out_stride = a->out_stride;
    p.n_q = a->n_q, p.pos0 = a->pos0, p.group = a->n_heads / a->n_kv_heads;
    p.scale = a->scale, p.q_bf16 = a->q_type == DTYPE_BF16, p.out_bf16 = a->out_type == DTYPE_BF16;
    if (a->kv_type == DTYPE_BF16)
        return attn_prefill_launch<__nv_bfloat16>(p, a->head_dim, a->n_heads, stream);
    return attn_prefill_launch<float>(p, a->head_dim, a->n_heads, stream);
}
