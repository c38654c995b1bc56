/*
 * kernels/cuda_sample.cu — argmax and the seeded truncated draw (see cuda_sample.h).
 *
 * One block of 1024 threads per row. Logits become order-preserving 32-bit keys (0 for NaN and
 * infinities, above 0 for every finite value). The k-th best key is found by a radix select,
 * four passes of 256-bin counts in shared memory, so nothing is sorted but the k <= 1024
 * candidates: they are gathered (ties at the k-th key taken by lowest id, through a block scan
 * in id order), bitonic-sorted best first, weighted, and scanned. Every floating-point sum runs
 * in a fixed order, so a seed gives the same tokens on every run.
 */
#include "cuda_check.cuh"
#include "cuda_sample.h"
#include "cuda_util.cuh"

#include <math.h>

#define SAMPLE_THREADS 1024
#define SAMPLE_GOLDEN  0x9E3779B97F4A7C15ull

static __device__ __forceinline__ float sample_load(const void *row, int64_t i, bool bf16)
{
    return bf16 ? cuda_to_f32(((const __nv_bfloat16 *)row)[i]) : ((const float *)row)[i];
}

/* Order-preserving key of a logit; 0 for values never chosen. */
static __device__ __forceinline__ uint32_t sample_key(float f)
{
    if (!isfinite(f))
        return 0u;
    uint32_t b = __float_as_uint(f);
    return b & 0x80000000u ? ~b : b | 0x80000000u;
}

/* Inclusive scan of v over the block in thread order (exact for integers, a fixed order for
 * floats). Every thread must call it. */
template <typename T> static __device__ T sample_block_scan(T v)
{
    __shared__ T part[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o)
            v += u;
    }
    __syncthreads(); /* an earlier call's readers are done with part[] */
    if (lane == 31)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T w = part[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            T u = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o)
                w += u;
        }
        part[lane] = w;
    }
    __syncthreads();
    return warp ? v + part[warp - 1] : v;
}

/* The best (key, lowest id) of the row: every thread gets the id. */
static __device__ int32_t sample_row_argmax(const void *row, int64_t n, bool bf16)
{
    __shared__ unsigned long long best;
    if (threadIdx.x == 0)
        best = 0ull;
    __syncthreads();
    unsigned long long mine = 0ull;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        /* key high, inverted id low: the max is the best key at the lowest id */
        unsigned long long c = (unsigned long long)sample_key(sample_load(row, i, bf16)) << 32 |
                               (0xFFFFFFFFu - (uint32_t)i);
        mine = c > mine ? c : mine;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        unsigned long long u = __shfl_xor_sync(0xffffffffu, mine, o);
        mine = u > mine ? u : mine;
    }
    if (threadIdx.x % 32 == 0)
        atomicMax(&best, mine);
    __syncthreads();
    unsigned long long b = best;
    return b >> 32 ? (int32_t)(0xFFFFFFFFu - (uint32_t)b) : 0;
}

template <bool BF16>
__global__ void __launch_bounds__(SAMPLE_THREADS)
        argmax_kernel(const void *logits, int64_t stride, int64_t n, int32_t *out)
{
    const void *row = (const char *)logits + blockIdx.x * stride * (BF16 ? 2 : 4);
    int32_t id = sample_row_argmax(row, n, BF16);
    if (threadIdx.x == 0)
        out[blockIdx.x] = id;
}

/* a ranks before b: the higher key, then the lower id */
static __device__ __forceinline__ bool sample_before(uint32_t ka, int32_t ia, uint32_t kb,
                                                     int32_t ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

template <bool BF16>
__global__ void __launch_bounds__(SAMPLE_THREADS)
        sample_kernel(const void *logits, int64_t stride, int64_t n, struct cuda_sample_row *params,
                      int32_t *out)
{
    __shared__ uint32_t hist[256], ckey[SAMPLE_THREADS];
    __shared__ int32_t cid[SAMPLE_THREADS];
    __shared__ float cum[SAMPLE_THREADS];
    __shared__ uint32_t sel_prefix, sel_left, n_gt_slot;
    __shared__ int32_t chosen, n_keep;
    __shared__ int truncated;
    const int t = threadIdx.x;
    const void *row = (const char *)logits + blockIdx.x * stride * (BF16 ? 2 : 4);
    struct cuda_sample_row p = params[blockIdx.x];
    uint64_t state = p.rng + SAMPLE_GOLDEN, x = state;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    float u = (float)(x >> 40) * (1.0f / 16777216.0f);

    bool greedy = !(p.temperature > 0.0f) || p.top_k == 1 || !(p.top_p > 0.0f);
    bool whole = !greedy && p.top_k <= 0 && p.top_p >= 1.0f;
    if (t == 0)
        truncated = !greedy && p.top_k > SAMPLE_THREADS && n > SAMPLE_THREADS;
    if (greedy) {
        int32_t id = sample_row_argmax(row, n, BF16);
        if (t == 0)
            out[blockIdx.x] = id, params[blockIdx.x].rng = state, params[blockIdx.x].truncated = 0;
        return;
    }
    int64_t k = p.top_k > 0 && p.top_k < SAMPLE_THREADS ? p.top_k : SAMPLE_THREADS;
    k = k < n ? k : n;
    const int64_t seg = (n + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int64_t s0 = min((int64_t)t * seg, n), s1 = min(s0 + seg, n);
    float mx = 0.0f;

    if (!whole) {
        /* radix select of the k-th best key, 8 bits at a time from the top */
        uint32_t prefix = 0u, mask = 0u, left = (uint32_t)k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = t; b < 256; b += SAMPLE_THREADS)
                hist[b] = 0u;
            __syncthreads();
            for (int64_t i = t; i < n; i += SAMPLE_THREADS) {
                uint32_t key = sample_key(sample_load(row, i, BF16));
                if ((key & mask) == prefix)
                    atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (t == 0) {
                int b = 255;
                while (b > 0 && hist[b] < left)
                    left -= hist[b--];
                sel_prefix = prefix | (uint32_t)b << shift, sel_left = left;
            }
            __syncthreads();
            prefix = sel_prefix, left = sel_left, mask |= 255u << shift;
        }
        /* gather: keys above the k-th anywhere, the first `left` ties in id order */
        uint32_t ties = 0u;
        for (int64_t i = s0; i < s1; i++)
            ties += sample_key(sample_load(row, i, BF16)) == prefix;
        uint32_t rank = sample_block_scan<uint32_t>(ties) - ties;
        if (t == 0)
            n_gt_slot = 0u;
        ckey[t] = 0u, cid[t] = 0x7FFFFFFF;
        __syncthreads();
        uint32_t n_gt = (uint32_t)k - left;
        for (int64_t i = s0; i < s1; i++) {
            uint32_t key = sample_key(sample_load(row, i, BF16));
            if (key > prefix) {
                uint32_t slot = atomicAdd(&n_gt_slot, 1u);
                ckey[slot] = key, cid[slot] = (int32_t)i;
            } else if (key == prefix && rank < left) {
                ckey[n_gt + rank] = key, cid[n_gt + rank] = (int32_t)i;
                rank++;
            } else if (key == prefix) {
                rank++;
            }
        }
        /* bitonic sort of the candidates, best first */
        for (int size = 2; size <= SAMPLE_THREADS; size <<= 1) {
            for (int stride2 = size >> 1; stride2 > 0; stride2 >>= 1) {
                __syncthreads();
                int o = t ^ stride2;
                if (o > t) {
                    bool up = (t & size) == 0;
                    bool swap = up ? sample_before(ckey[o], cid[o], ckey[t], cid[t])
                                   : sample_before(ckey[t], cid[t], ckey[o], cid[o]);
                    if (swap) {
                        uint32_t tk = ckey[t];
                        int32_t ti = cid[t];
                        ckey[t] = ckey[o], cid[t] = cid[o], ckey[o] = tk, cid[o] = ti;
                    }
                }
            }
        }
        __syncthreads();
        mx = ckey[0] ? sample_load(row, cid[0], BF16) : 0.0f;
    } else {
        int32_t best = sample_row_argmax(row, n, BF16);
        float v = sample_load(row, best, BF16);
        mx = isfinite(v) ? v : 0.0f;
    }

    const float inv_t = 1.0f / p.temperature;
    /* the whole row's weight, by segment in id order (the draw over the row, and top-p when
     * top_k is off, need it) */
    float seg_w = 0.0f;
    bool need_row = whole || (p.top_k <= 0 && p.top_p < 1.0f);
    if (need_row)
        for (int64_t i = s0; i < s1; i++) {
            float v = sample_load(row, i, BF16);
            seg_w += isfinite(v) ? expf((v - mx) * inv_t) : 0.0f;
        }
    float seg_cum = sample_block_scan<float>(seg_w);
    cum[t] = seg_cum;
    if (t == 0)
        chosen = 0x7FFFFFFF;
    __syncthreads();
    const float row_total = cum[SAMPLE_THREADS - 1];
    __syncthreads(); /* cum[] is reused below */

    if (whole) {
        float target = u * row_total, before = t ? cum[t - 1] : 0.0f;
        /* the one segment whose share of the running sum holds target walks its tokens */
        bool mine = seg_w > 0.0f && before <= target && target < seg_cum;
        /* rounding can leave target at the very top: the last weighted segment takes it */
        bool top = seg_w > 0.0f && target >= row_total && seg_cum >= row_total;
        if (mine || top) {
            float run = before;
            int32_t pick = -1;
            for (int64_t i = s0; i < s1; i++) {
                float v = sample_load(row, i, BF16);
                float w = isfinite(v) ? expf((v - mx) * inv_t) : 0.0f;
                if (w > 0.0f)
                    pick = (int32_t)i;
                run += w;
                if (mine && run > target && w > 0.0f)
                    break;
            }
            atomicMin(&chosen, pick);
        }
        __syncthreads();
    } else {
        float w = 0.0f;
        if (t < k && ckey[t]) {
            w = expf((sample_load(row, cid[t], BF16) - mx) * inv_t);
        }
        float c = sample_block_scan<float>(w);
        cum[t] = c;
        if (t == 0)
            n_keep = (int32_t)k;
        __syncthreads();
        if (p.top_p < 1.0f) {
            float base = p.top_k > 0 ? cum[k - 1] : row_total;
            float target = p.top_p * base;
            if (t < k && c >= target && (t == 0 || cum[t - 1] < target))
                n_keep = t + 1;
            __syncthreads();
            if (t == 0 && p.top_k <= 0 && cum[k - 1] < target && k < n)
                truncated = 1;
        }
        __syncthreads();
        int32_t nk = n_keep;
        float target = u * cum[nk - 1];
        if (t < nk && (c > target || t == nk - 1) && (t == 0 || cum[t - 1] <= target))
            chosen = cid[t];
        __syncthreads();
        if (t == 0 && (chosen == 0x7FFFFFFF || !(cum[nk - 1] > 0.0f)))
            chosen = cid[0];
        __syncthreads();
    }
    if (t == 0) {
        out[blockIdx.x] = chosen == 0x7FFFFFFF ? 0 : chosen;
        params[blockIdx.x].rng = state;
        params[blockIdx.x].truncated = truncated;
    }
}

static bool sample_args_ok(enum dtype type, const void *logits, int64_t stride, int64_t rows,
                           int64_t n, const void *out)
{
    return (type == DTYPE_F32 || type == DTYPE_BF16) && logits && out && n >= 1 &&
           n <= 0x7FFFFFFE && rows >= 0 && rows <= 0x7FFFFFFF && (rows <= 1 || stride >= n);
}

extern "C" int cuda_argmax(const struct cuda_argmax *a, cudaStream_t stream)
{
    if (!sample_args_ok(a->type, a->logits, a->stride, a->rows, a->n, a->out))
        return cuda_fail_args("cuda_argmax", "types f32/bf16, 1 <= n < 2^31, stride >= n");
    if (a->rows == 0)
        return 0;
    if (a->type == DTYPE_BF16)
        argmax_kernel<true><<<(unsigned)a->rows, SAMPLE_THREADS, 0, stream>>>(a->logits, a->stride,
                                                                              a->n, a->out);
    else
        argmax_kernel<false><<<(unsigned)a->rows, SAMPLE_THREADS, 0, stream>>>(a->logits, a->stride,
                                                                               a->n, a->out);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_sample(const struct cuda_sample *a, cudaStream_t stream)
{
    if (!sample_args_ok(a->type, a->logits, a->stride, a->rows, a->n, a->out) || !a->params)
        return cuda_fail_args("cuda_sample",
                              "types f32/bf16, 1 <= n < 2^31, stride >= n, params set");
    if (a->rows == 0)
        return 0;
    if (a->type == DTYPE_BF16)
        sample_kernel<true><<<(unsigned)a->rows, SAMPLE_THREADS, 0, stream>>>(
                a->logits, a->stride, a->n, a->params, a->out);
    else
        sample_kernel<false><<<(unsigned)a->rows, SAMPLE_THREADS, 0, stream>>>(
                a->logits, a->stride, a->n, a->params, a->out);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
