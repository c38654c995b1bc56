/*
 * kernels/cuda_attention_tc.cu — prefill attention on the tensor cores, flash-attention style
 * (see cuda_attention.h for the contract, cuda_attention_internal.h for the hand-off).
 *
 * A block of 4 warps owns 64 consecutive query rows of one head (16 per warp) and walks the
 * causal context in tiles of 64 positions (32 at head_dim 256, see tc_block_n). Q (rounded to
 * bf16), one K tile and one V tile live in shared memory, rows padded by 16 bytes so the 8 row
 * addresses of an ldmatrix land in different banks. Per tile a warp computes S = Q K^T with mma.sync m16n8k16 (bf16 in, fp32
 * out), masks the positions past each row's own, updates the online softmax in fp32 (running
 * max and sum per row, base-2 exponentials with the scale folded in), rounds P to bf16 straight
 * from the S registers into the A operand of O += P V (V read transposed by ldmatrix.trans),
 * and rescales O in registers. The loads overlap the arithmetic with cp.async: V(j) is in
 * flight during S(j) and K(j+1) during the softmax and P V(j); positions past the context are
 * zero-filled so no stale value reaches a product.
 *
 * Blocks are launched heaviest first (the last query rows see the longest context) with the
 * heads of a block row side by side, so the heads that share a KV head read it while it is in
 * L2.
 */
#include "cuda_attention_internal.h"
#include "cuda_check.cuh"
#include "cuda_util.cuh"

#include <math.h>

#define TC_WARPS   4
#define TC_THREADS (TC_WARPS * 32)
#define TC_BM      64 /* query rows per block, 16 per warp */

struct attn_tc_args {
    const void *q;
    const __nv_bfloat16 *k, *v;
    void *out;
    const int32_t *table; /* paged cache: the sequence's block table, or NULL */
    int block_size;
    int64_t q_stride, kv_stride, out_stride, n_q, pos0;
    int group;
    float scale_log2; /* scale * log2(e): scores go straight into exp2 */
    bool q_bf16, q_vec, out_bf16, out_vec;
};

static __device__ __forceinline__ uint32_t tc_smem(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, bypassing L1; valid false writes zeros and reads nothing. */
static __device__ __forceinline__ void tc_cp16(uint32_t dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

static __device__ __forceinline__ void tc_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* Waits until at most n of this thread's committed groups are still in flight. */
template <int N> static __device__ __forceinline__ void tc_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void tc_ldm_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void tc_ldm_x4_trans(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* c += a b for a 16x16 bf16 A (row-major fragment), a 16x8 bf16 B (column fragment b0, b1). */
static __device__ __forceinline__ void tc_mma(float c[4], const uint32_t a[4], uint32_t b0,
                                              uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats as bf16x2 (round to nearest even), lo in the low half: the order mma reads. */
static __device__ __forceinline__ uint32_t tc_pack(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

static __device__ __forceinline__ float tc_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Queues the copy of positions t0 .. t0 + BN - 1 of one KV head into a tile (rows of D + 8
 * elements); positions at or past n_ctx become zeros. A paged cache maps each position to its
 * row through the block table (rows stay 16-byte aligned: kv_stride is a multiple of 8). */
template <int D, int BN>
static __device__ __forceinline__ void tc_load_tile(__nv_bfloat16 *tile, const __nv_bfloat16 *src,
                                                    int64_t t0, int64_t n_ctx, int64_t stride,
                                                    const int32_t *table, int block_size)
{
    constexpr int CH = D / 8, LD = D + 8, N = BN * CH / TC_THREADS;
    /* every row looked up before the first copy is queued: the copies' asm (a memory clobber)
     * would otherwise hold each table read in front of its copy, one at a time */
    int32_t rows[N]; /* pool rows fit: 2^31 rows of a 27B layer would be 4 TB */
#pragma unroll
    for (int i = 0; i < N; i++) {
        int64_t p = t0 + (threadIdx.x + i * TC_THREADS) / CH;
        rows[i] = p < n_ctx ? (int32_t)cuda_kv_row(table, block_size, p) : 0;
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = threadIdx.x + i * TC_THREADS, r = c / CH, cc = c % CH;
        tc_cp16(tc_smem(tile + r * LD + cc * 8), src + (int64_t)rows[i] * stride + cc * 8,
                t0 + r < n_ctx);
    }
}

/* Row r of the block's queries, elements cc*8 .. cc*8+7 of head h, as 8 bf16 (zeros past n_q). */
template <int D>
static __device__ __forceinline__ uint4 tc_load_q8(const struct attn_tc_args &a, int64_t row, int h,
                                                   int cc)
{
    uint4 pk = make_uint4(0, 0, 0, 0);
    if (row >= a.n_q)
        return pk;
    int64_t off = row * a.q_stride + (int64_t)h * D + cc * 8;
    if (a.q_bf16 && a.q_vec)
        return *(const uint4 *)((const __nv_bfloat16 *)a.q + off);
    float f[8];
    if (a.q_vec) {
        float4 x0 = *(const float4 *)((const float *)a.q + off);
        float4 x1 = *(const float4 *)((const float *)a.q + off + 4);
        f[0] = x0.x, f[1] = x0.y, f[2] = x0.z, f[3] = x0.w;
        f[4] = x1.x, f[5] = x1.y, f[6] = x1.z, f[7] = x1.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            f[i] = a.q_bf16 ? cuda_to_f32(((const __nv_bfloat16 *)a.q)[off + i])
                            : ((const float *)a.q)[off + i];
    }
    pk.x = tc_pack(f[0], f[1]), pk.y = tc_pack(f[2], f[3]);
    pk.z = tc_pack(f[4], f[5]), pk.w = tc_pack(f[6], f[7]);
    return pk;
}

/* Two adjacent output elements (columns c, c + 1 of a row starting at off). */
static __device__ __forceinline__ void tc_store2(const struct attn_tc_args &a, int64_t off, float x,
                                                 float y)
{
    if (a.out_bf16) {
        __nv_bfloat16 *o = (__nv_bfloat16 *)a.out + off;
        if (a.out_vec)
            *(__nv_bfloat162 *)o = __floats2bfloat162_rn(x, y);
        else
            o[0] = __float2bfloat16_rn(x), o[1] = __float2bfloat16_rn(y);
    } else {
        float *o = (float *)a.out + off;
        if (a.out_vec)
            *(float2 *)o = make_float2(x, y);
        else
            o[0] = x, o[1] = y;
    }
}

template <int D, int BN>
__global__ void __launch_bounds__(TC_THREADS) attn_tc_kernel(struct attn_tc_args a)
{
    constexpr int LD = D + 8, CH = D / 8, NT = BN / 8, DT = D / 8;
    extern __shared__ uint4 tc_shared[];
    __nv_bfloat16 *qs = (__nv_bfloat16 *)tc_shared;
    __nv_bfloat16 *ks = qs + TC_BM * LD, *vs = ks + BN * LD;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = blockIdx.x, kvh = h / a.group;
    const int64_t m0 = (int64_t)(gridDim.y - 1 - blockIdx.y) * TC_BM;
    const int64_t n_ctx = a.pos0 + a.n_q;
    const int64_t ctx_end = min(a.pos0 + m0 + TC_BM, n_ctx); /* the block's last row sees < this */
    const int n_tiles = (int)((ctx_end + BN - 1) / BN);
    const __nv_bfloat16 *kb = a.k + (int64_t)kvh * D, *vb = a.v + (int64_t)kvh * D;

    for (int c = threadIdx.x; c < TC_BM * CH; c += TC_THREADS) {
        int r = c / CH, cc = c % CH;
        *(uint4 *)(qs + r * LD + cc * 8) = tc_load_q8<D>(a, m0 + r, h, cc);
    }
    tc_load_tile<D, BN>(ks, kb, 0, n_ctx, a.kv_stride, a.table, a.block_size);
    tc_commit();

    /* ldmatrix row addresses of this lane: A from Q (rows 0-15, k halves), B from K (two
     * 8-position n tiles, k halves), B from V transposed (two 8-position k halves, two d tiles) */
    const uint32_t q_addr = tc_smem(qs + (warp * 16 + (lane & 15)) * LD + (lane >> 4) * 8);
    const uint32_t k_addr =
            tc_smem(ks + ((lane & 7) + ((lane >> 4) << 3)) * LD + ((lane >> 3) & 1) * 8);
    const uint32_t v_addr =
            tc_smem(vs + ((lane & 7) + (((lane >> 3) & 1) << 3)) * LD + (lane >> 4) * 8);

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
    const int64_t row_a = m0 + warp * 16 + (lane >> 2); /* this lane's rows: row_a, row_a + 8 */
    const int64_t warp_first = a.pos0 + m0 + warp * 16; /* the warp's smallest last position */

    for (int j = 0; j < n_tiles; j++) {
        const int64_t t0 = (int64_t)j * BN;
        __syncthreads(); /* every warp is done with V(j - 1) */
        tc_load_tile<D, BN>(vs, vb, t0, n_ctx, a.kv_stride, a.table, a.block_size);
        tc_commit();
        tc_wait<1>();    /* K(j) (and Q) have landed for this thread ... */
        __syncthreads(); /* ... and for every thread */

        float s[NT][4];
#pragma unroll
        for (int i = 0; i < NT; i++)
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll 4 /* whole unrolling lets the compiler hoist every fragment: spills at D 256 */
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t qa[4];
            tc_ldm_x4(qa, q_addr + kk * 32);
#pragma unroll
            for (int n2 = 0; n2 < NT / 2; n2++) {
                uint32_t kf[4];
                tc_ldm_x4(kf, k_addr + (n2 * 16 * LD) * 2 + kk * 32);
                tc_mma(s[2 * n2], qa, kf[0], kf[1]);
                tc_mma(s[2 * n2 + 1], qa, kf[2], kf[3]);
            }
        }
#pragma unroll
        for (int i = 0; i < NT; i++) {
            s[i][0] *= a.scale_log2, s[i][1] *= a.scale_log2;
            s[i][2] *= a.scale_log2, s[i][3] *= a.scale_log2;
        }
        __syncthreads(); /* every warp is done with K(j) */
        if (j + 1 < n_tiles)
            tc_load_tile<D, BN>(ks, kb, t0 + BN, n_ctx, a.kv_stride, a.table, a.block_size);
        tc_commit(); /* possibly empty: keeps the group count the waits assume */

        /* mask and online softmax (scores already in log2 units); this lane holds columns
         * 2 (lane & 3) + {0, 1} of each n tile for rows row_a and row_a + 8 */
        if (t0 + BN - 1 > warp_first) {
            int64_t lim = a.pos0 + row_a - t0; /* the last column row_a sees, tile-relative */
#pragma unroll
            for (int i = 0; i < NT; i++) {
                int64_t col = i * 8 + (lane & 3) * 2;
                if (col > lim)
                    s[i][0] = -INFINITY;
                if (col + 1 > lim)
                    s[i][1] = -INFINITY;
                if (col > lim + 8)
                    s[i][2] = -INFINITY;
                if (col + 1 > lim + 8)
                    s[i][3] = -INFINITY;
            }
        }
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            mx_a = fmaxf(mx_a, fmaxf(s[i][0], s[i][1]));
            mx_b = fmaxf(mx_b, fmaxf(s[i][2], s[i][3]));
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        /* every row sees position 0 in tile 0, so the running max is finite from then on */
        float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        float corr_a = tc_exp2(m_a - mn_a), corr_b = tc_exp2(m_b - mn_b);
        m_a = mn_a, m_b = mn_b;
        float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            s[i][0] = tc_exp2(s[i][0] - mn_a);
            s[i][1] = tc_exp2(s[i][1] - mn_a);
            s[i][2] = tc_exp2(s[i][2] - mn_b);
            s[i][3] = tc_exp2(s[i][3] - mn_b);
            sum_a += s[i][0] + s[i][1], sum_b += s[i][2] + s[i][3];
        }
        l_a = l_a * corr_a + sum_a, l_b = l_b * corr_b + sum_b; /* this lane's columns only */
#pragma unroll
        for (int i = 0; i < DT; i++) {
            o[i][0] *= corr_a, o[i][1] *= corr_a;
            o[i][2] *= corr_b, o[i][3] *= corr_b;
        }

        /* P as the A operand of P V: the C layout of two n tiles is the A layout of one k16 */
        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int k2 = 0; k2 < BN / 16; k2++) {
            pa[k2][0] = tc_pack(s[2 * k2][0], s[2 * k2][1]);
            pa[k2][1] = tc_pack(s[2 * k2][2], s[2 * k2][3]);
            pa[k2][2] = tc_pack(s[2 * k2 + 1][0], s[2 * k2 + 1][1]);
            pa[k2][3] = tc_pack(s[2 * k2 + 1][2], s[2 * k2 + 1][3]);
        }

        tc_wait<1>();    /* V(j) has landed for this thread ... */
        __syncthreads(); /* ... and for every thread */
#pragma unroll
        for (int k2 = 0; k2 < BN / 16; k2++) {
#pragma unroll
            for (int d2 = 0; d2 < D / 16; d2++) {
                uint32_t vf[4];
                tc_ldm_x4_trans(vf, v_addr + (k2 * 16 * LD) * 2 + d2 * 32);
                tc_mma(o[2 * d2], pa[k2], vf[0], vf[1]);
                tc_mma(o[2 * d2 + 1], pa[k2], vf[2], vf[3]);
            }
        }
    }
    tc_wait<0>();

    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const int64_t col0 = (int64_t)h * D + (lane & 3) * 2;
    if (row_a < a.n_q) {
        float inv = 1.0f / l_a;
#pragma unroll
        for (int i = 0; i < DT; i++)
            tc_store2(a, row_a * a.out_stride + col0 + i * 8, o[i][0] * inv, o[i][1] * inv);
    }
    if (row_a + 8 < a.n_q) {
        float inv = 1.0f / l_b;
#pragma unroll
        for (int i = 0; i < DT; i++)
            tc_store2(a, (row_a + 8) * a.out_stride + col0 + i * 8, o[i][2] * inv, o[i][3] * inv);
    }
}

/* Context positions per tile: 64, or 32 at head_dim 256, where the O accumulators take half
 * the registers and a 64-wide S spills. */
static constexpr int tc_block_n(int head_dim)
{
    return head_dim == 256 ? 32 : 64;
}

static size_t tc_smem_bytes(int head_dim)
{
    return (size_t)(TC_BM + 2 * tc_block_n(head_dim)) * (size_t)(head_dim + 8) * 2;
}

size_t cuda_attention_tc_smem(int head_dim)
{
    if (head_dim != 32 && head_dim != 64 && head_dim != 128 && head_dim != 256)
        return 0;
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return 0;
    size_t need = tc_smem_bytes(head_dim);
    return need <= (size_t)optin ? need : 0;
}

template <int D>
static int tc_launch(const struct attn_tc_args &p, int n_heads, cudaStream_t stream)
{
    /* raise the block's dynamic shared-memory limit once per device (not a stream operation,
     * so it is also fine while a graph is being captured) */
    static unsigned long long ready;
    size_t smem = tc_smem_bytes(D);
    int dev = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    if (dev >= 64 || !((__atomic_load_n(&ready, __ATOMIC_ACQUIRE) >> dev) & 1)) {
        CUDA_TRY(cudaFuncSetAttribute(attn_tc_kernel<D, tc_block_n(D)>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (dev < 64)
            __atomic_fetch_or(&ready, 1ull << dev, __ATOMIC_RELEASE);
    }
    dim3 grid((unsigned)n_heads, (unsigned)((p.n_q + TC_BM - 1) / TC_BM));
    attn_tc_kernel<D, tc_block_n(D)><<<grid, TC_THREADS, smem, stream>>>(p);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

int cuda_attention_tc_prefill(const struct cuda_attention_prefill *a, cudaStream_t stream)
{
    struct attn_tc_args p;
    p.q = a->q, p.k = (const __nv_bfloat16 *)a->k, p.v = (const __nv_bfloat16 *)a->v;
    p.out = a->out;
    p.table = a->block_table, p.block_size = a->block_size;
    p.q_stride = a->q_stride, p.kv_stride = a->kv_stride, p.out_stride = a->out_stride;
    p.n_q = a->n_q, p.pos0 = a->pos0, p.group = a->n_heads / a->n_kv_heads;
    p.scale_log2 = a->scale * 1.4426950408889634f;
    p.q_bf16 = a->q_type == DTYPE_BF16, p.out_bf16 = a->out_type == DTYPE_BF16;
    /* 16-byte query loads and pair stores where every row keeps the alignment */
    uintptr_t qp = (uintptr_t)a->q, op = (uintptr_t)a->out;
    p.q_vec = qp % 16 == 0 && (a->n_q == 1 || a->q_stride % (p.q_bf16 ? 8 : 4) == 0);
    p.out_vec = op % (p.out_bf16 ? 4 : 8) == 0 && (a->n_q == 1 || a->out_stride % 2 == 0);
    switch (a->head_dim) {
    case 32:
        return tc_launch<32>(p, a->n_heads, stream);
    case 64:
        return tc_launch<64>(p, a->n_heads, stream);
    case 128:
        return tc_launch<128>(p, a->n_heads, stream);
    default:
        return tc_launch<256>(p, a->n_heads, stream);
    }
}
