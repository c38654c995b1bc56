/*
 * kernels/cuda_matvec_quant.cu — matrix-vector products that dequantise GGUF weight blocks on
 * the fly (F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), for cuda_matvec() (see cuda_matvec.h).
 *
 * Blocks are read exactly as GGUF stores them (neuron/dtype.c is the scalar reference and its
 * comments explain the packings). The blocks (18-210 bytes, most only 2-byte aligned) rule out
 * direct 16-byte loads, so every type goes through shared memory:
 *
 *  - Loading: a warp owns MVQ_ROWS consecutive rows and walks them in steps of 512 weights
 *    (2-16 whole blocks). For each step it copies the 16-byte-aligned cover of each row's bytes
 *    into its own shared buffer with cp.async (consecutive lanes, consecutive 16-byte chunks:
 *    fully coalesced, no registers held), several steps ahead of the one it computes. The
 *    cover over-reads at most 15 bytes on each side, never past the 16-byte granule of a valid
 *    byte, so never into an unmapped page.
 *  - Decoding: each lane takes 16 weights of the step: its quants come from shared memory
 *    (unaligned words put together with funnel shifts), each becomes an exact fp32 integer
 *    (the quant byte placed in the mantissa of 2^23, 2^23 subtracted: a permute and an add),
 *    and the block's scales stay factored out: the 16 weights are 1-4 runs of consecutive
 *    weights, each with one scale d and (Q4_1, Q4_K, Q5_K) one offset m, so their share of
 *    the dot product is d * sum(q x) + m * sum(x). The offsets' sum(x) is shared by the rows.
 *  - The activations of those 16 weights are loaded once per token (16-byte loads where
 *    aligned) and used for every row of the warp; each lane keeps one partial sum per row and
 *    token, and the warp sums them with shuffles at the end.
 *
 * Two layouts of a lane's 16 weights, each the faster one measured for its types (H200,
 * kernels/README.md): the quantised types take 16 weights of one block (mvq_kernel: one or
 * two scales per lane and step), F16 takes four runs of 4 spread so that 8 consecutive lanes
 * read 128 consecutive bytes of x (mvq_f16_kernel: x read coalesced, 1.8x faster for F16;
 * the same layout made the quantised types 1.5x slower, each run needing its own block's
 * scales). The factored scales round differently from dtype_dequant_row() (which forms
 * d * q - m per weight): the results agree to fp32 rounding of the partial sums, well inside
 * the tests' bounds.
 */
#include "cuda_check.cuh"
#include "cuda_matvec_internal.h"
#include "cuda_util.cuh"

#define MVQ_WARPS   4 /* warps per block, each independent (own rows, own buffers) */
#define MVQ_THREADS (32 * MVQ_WARPS)
#define MVQ_ROWS    2 /* rows per warp: each activation loaded serves this many rows */

struct mvq_group {
    const uint8_t *w[CUDA_MATVEC_MAX_GROUP];
    void *y[CUDA_MATVEC_MAX_GROUP];
    int64_t rows[CUDA_MATVEC_MAX_GROUP], y_stride[CUDA_MATVEC_MAX_GROUP];
    int64_t warp_end[CUDA_MATVEC_MAX_GROUP]; /* running count of warps up to matrix i */
    bool y_bf16[CUDA_MATVEC_MAX_GROUP], accumulate[CUDA_MATVEC_MAX_GROUP];
    int n, batch;
    int64_t cols, row_bytes, units; /* units: blocks per row (quantised types) */
    const void *x;
    int64_t x_stride;
    bool x_vec; /* x and its rows are 16-byte aligned: vector loads of activations */
};

/* ---- shared-memory reads and exact small integers as fp32 -------------------------------- */

/* The little-endian word at byte p of a shared buffer, any alignment (the buffer has 4 spare
 * bytes past its data). */
__device__ __forceinline__ uint32_t mvq_sw(const uint8_t *s, int p)
{
    const uint32_t *a = (const uint32_t *)(s + (p & ~3));
    return __funnelshift_r(a[0], a[1], 8 * (p & 3));
}

__device__ __forceinline__ float mvq_sf16(const uint8_t *s, int p)
{
    return __half2float(__ushort_as_half((unsigned short)(mvq_sw(s, p) & 0xffffu)));
}

/* Byte k of w (0..255) minus bias, exactly: the byte becomes the low mantissa bits of 2^23. */
template <int K> __device__ __forceinline__ float mvq_byte_f(uint32_t w, float bias)
{
    return __int_as_float((int)__byte_perm(w, 0x4b000000u, 0x7540 + K)) - (8388608.0f + bias);
}

/* Four bytes of w as q[0..3]. */
__device__ __forceinline__ void mvq_bytes4(uint32_t w, float bias, float *q)
{
    q[0] = mvq_byte_f<0>(w, bias);
    q[1] = mvq_byte_f<1>(w, bias);
    q[2] = mvq_byte_f<2>(w, bias);
    q[3] = mvq_byte_f<3>(w, bias);
}

/* ---- the quantised types: pieces of 16 weights, RUNS runs of 16 / RUNS consecutive ones ----
 * BE / BB: elements and bytes of a block. PPB: pieces per block. STAGES: steps in flight + 1.
 * col(pp, j): first element of run j of piece pp, from the block's start. decode(): the
 * piece's 16 weights without scales (exact integers), and each run's scale d and offset m,
 * from the block at byte p of the shared buffer s. */
template <enum dtype T> struct mvq_type;

template <> struct mvq_type<DTYPE_Q8_0> {
    static const int BE = 32, BB = 34, PPB = 2, RUNS = 1, STAGES = 4;
    static const bool MIN = false;
    static __device__ __forceinline__ int col(int pp, int)
    {
        return 16 * pp;
    }
    static __device__ __forceinline__ void decode(const uint8_t *s, int p, int pp, float (&q)[16],
                                                  float *d, float *)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) /* int8 as unsigned: flip the sign bit, subtract 128 */
            mvq_bytes4(mvq_sw(s, p + 2 + 16 * pp + 4 * i) ^ 0x80808080u, 128.0f, q + 4 * i);
        d[0] = mvq_sf16(s, p);
    }
};

/* Q4_0 / Q4_1: byte j holds element j (low nibble) and j + 16 (high); a piece is 8 bytes. */
template <enum dtype T> struct mvq_type_q4 {
    static const int BE = 32, BB = T == DTYPE_Q4_0 ? 18 : 20, PPB = 2, RUNS = 2, STAGES = 4;
    static const bool MIN = T == DTYPE_Q4_1;
    static __device__ __forceinline__ int col(int pp, int j)
    {
        return 8 * pp + 16 * j;
    }
    static __device__ __forceinline__ void decode(const uint8_t *s, int p, int pp, float (&q)[16],
                                                  float *d, float *m)
    {
        const int qs = T == DTYPE_Q4_0 ? 2 : 4;
        const float bias = T == DTYPE_Q4_0 ? 8.0f : 0.0f;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint32_t w = mvq_sw(s, p + qs + 8 * pp + 4 * i);
            mvq_bytes4(w & 0x0f0f0f0fu, bias, q + 4 * i);
            mvq_bytes4((w >> 4) & 0x0f0f0f0fu, bias, q + 8 + 4 * i);
        }
        d[0] = d[1] = mvq_sf16(s, p);
        if (MIN)
            m[0] = m[1] = mvq_sf16(s, p + 2);
    }
};
template <> struct mvq_type<DTYPE_Q4_0> : mvq_type_q4<DTYPE_Q4_0> {
};
template <> struct mvq_type<DTYPE_Q4_1> : mvq_type_q4<DTYPE_Q4_1> {
};

/* Q4_K / Q5_K: 64 elements per 32 quant bytes (low nibbles: sub-block 2j, high: 2j + 1); a
 * piece is 8 of those bytes, so its runs are 8 weights of each of the two sub-blocks. */
template <enum dtype T> struct mvq_type_k4 {
    static const int BE = 256, BB = T == DTYPE_Q4_K ? 144 : 176, PPB = 16, RUNS = 2, STAGES = 4;
    static const bool MIN = true;
    static __device__ __forceinline__ int col(int pp, int j)
    {
        return 64 * (pp >> 2) + 32 * j + 8 * (pp & 3);
    }
    /* 6-bit scale and min of sub-block j from the 12 bytes at byte sc of s */
    static __device__ __forceinline__ void scale_min(const uint8_t *s, int sc, int j, int *d,
                                                     int *m)
    {
        if (j < 4) {
            *d = s[sc + j] & 63;
            *m = s[sc + j + 4] & 63;
        } else {
            *d = (s[sc + j + 4] & 0x0f) | ((s[sc + j - 4] >> 6) << 4);
            *m = (s[sc + j + 4] >> 4) | ((s[sc + j] >> 6) << 4);
        }
    }
    static __device__ __forceinline__ void decode(const uint8_t *s, int p, int pp, float (&q)[16],
                                                  float *d, float *m)
    {
        int j = pp >> 2, l0 = 8 * (pp & 3);
        const int qs = T == DTYPE_Q4_K ? 16 : 48;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint32_t w = mvq_sw(s, p + qs + 32 * j + l0 + 4 * i);
            uint32_t lo = w & 0x0f0f0f0fu, hi = (w >> 4) & 0x0f0f0f0fu;
            if (T == DTYPE_Q5_K) { /* the fifth bits: bit 2j (low) and 2j + 1 (high) of qh */
                uint32_t h = mvq_sw(s, p + 16 + l0 + 4 * i);
                lo |= ((h >> (2 * j)) & 0x01010101u) << 4;
                hi |= ((h >> (2 * j + 1)) & 0x01010101u) << 4;
            }
            mvq_bytes4(lo, 0.0f, q + 4 * i);
            mvq_bytes4(hi, 0.0f, q + 8 + 4 * i);
        }
        uint32_t dd = mvq_sw(s, p);
        float dm = __half2float(__ushort_as_half((unsigned short)(dd & 0xffffu)));
        float mm = __half2float(__ushort_as_half((unsigned short)(dd >> 16)));
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int sc, mn;
            scale_min(s, p + 4, 2 * j + r, &sc, &mn);
            d[r] = dm * (float)sc;
            m[r] = -(mm * (float)mn);
        }
    }
};
template <> struct mvq_type<DTYPE_Q4_K> : mvq_type_k4<DTYPE_Q4_K> {
};
template <> struct mvq_type<DTYPE_Q5_K> : mvq_type_k4<DTYPE_Q5_K> {
};

/* Q6_K: per half h of 128 elements, element 32k + l takes a nibble of ql[64h + l (+ 32)] and
 * two bits of qh[32h + l]; a piece is l0..l0 + 3 of one half, four runs of 4 (k = 0..3), each
 * run in one 16-element scale group. */
template <> struct mvq_type<DTYPE_Q6_K> {
    static const int BE = 256, BB = 210, PPB = 16, RUNS = 4, STAGES = 4;
    static const bool MIN = false;
    static __device__ __forceinline__ int col(int pp, int k)
    {
        return 128 * (pp >> 3) + 32 * k + 4 * (pp & 7);
    }
    static __device__ __forceinline__ void decode(const uint8_t *s, int p, int pp, float (&q)[16],
                                                  float *d, float *)
    {
        int h = pp >> 3, l0 = 4 * (pp & 7);
        uint32_t a = mvq_sw(s, p + 64 * h + l0), b = mvq_sw(s, p + 64 * h + 32 + l0);
        uint32_t c = mvq_sw(s, p + 128 + 32 * h + l0);
        mvq_bytes4((a & 0x0f0f0f0fu) | ((c << 4) & 0x30303030u), 32.0f, q);
        mvq_bytes4((b & 0x0f0f0f0fu) | ((c << 2) & 0x30303030u), 32.0f, q + 4);
        mvq_bytes4(((a >> 4) & 0x0f0f0f0fu) | (c & 0x30303030u), 32.0f, q + 8);
        mvq_bytes4(((b >> 4) & 0x0f0f0f0fu) | ((c >> 2) & 0x30303030u), 32.0f, q + 12);
        float dd = mvq_sf16(s, p + 208);
#pragma unroll
        for (int k = 0; k < 4; k++)
            d[k] = dd * (float)(int8_t)s[p + 192 + 8 * h + (l0 >> 4) + 2 * k];
    }
};

/* F16 for mvq_f16_kernel: a step is 16 units of 32 weights (64 bytes); lane l takes runs of 4
 * at 128 r + 4 l (r = 0..3), so for each run the lanes read 512 consecutive bytes of x.
 * STAGES: steps in flight + 1 (6 KB per warp in flight; 34 KB of shared memory per block). */
struct mvq_f16 {
    static const int BE = 32, BB = 64, NB = 16, STAGES = 4;
    static const bool MIN = false;
    static __device__ __forceinline__ int col(int l, int r)
    {
        return 128 * r + 4 * l;
    }
    static __device__ __forceinline__ void decode(const uint8_t *s, int p, int l, float (&q)[16],
                                                  float *d, float *)
    {
#pragma unroll
        for (int r = 0; r < 4; r++) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                uint32_t w = mvq_sw(s, p + 2 * col(l, r) + 4 * i);
                q[4 * r + 2 * i] = __half2float(__ushort_as_half((unsigned short)(w & 0xffffu)));
                q[4 * r + 2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
            }
            d[r] = 1.0f;
        }
    }
};

/* ---- loads ------------------------------------------------------------------------------- */

__device__ __forceinline__ void mvq_cp16(uint8_t *dst, const uint8_t *src)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}

__device__ __forceinline__ void mvq_cp_commit(void)
{
    asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N> __device__ __forceinline__ void mvq_cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* n bytes at src (n > 0) into buf, as the 16-byte chunks that cover them; the data starts at
 * buf + (src & 15). */
__device__ __forceinline__ void mvq_stage(uint8_t *buf, const uint8_t *src, int n, int lane)
{
    const uint8_t *a = (const uint8_t *)((uintptr_t)src & ~(uintptr_t)15);
    int chunks = (int)((src + n - a + 15) >> 4);
    for (int i = lane; i < chunks; i += 32)
        mvq_cp16(buf + 16 * i, a + 16 * i);
}

/* Four activations at x (fp32 or bf16) as fp32; vec: x is 16-byte (f32) / 8-byte (bf16)
 * aligned. */
__device__ __forceinline__ void mvq_x4(const float *x, bool vec, float *o)
{
    if (vec) {
        float4 v = __ldg((const float4 *)x);
        o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
            o[i] = __ldg(x + i);
    }
}
__device__ __forceinline__ void mvq_x4(const __nv_bfloat16 *x, bool vec, float *o)
{
    if (vec) {
        uint2 v = __ldg((const uint2 *)x);
        o[0] = __uint_as_float(v.x << 16), o[1] = __uint_as_float(v.x & 0xffff0000u);
        o[2] = __uint_as_float(v.y << 16), o[3] = __uint_as_float(v.y & 0xffff0000u);
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
            o[i] = __bfloat162float(x[i]);
    }
}

__device__ __forceinline__ void mvq_store(void *y, int64_t i, float v, bool y_bf16, bool accumulate)
{
    if (y_bf16) {
        __nv_bfloat16 *p = (__nv_bfloat16 *)y + i;
        *p = __float2bfloat16_rn(accumulate ? __bfloat162float(*p) + v : v);
    } else {
        float *p = (float *)y + i;
        *p = accumulate ? *p + v : v;
    }
}

/* ---- the kernels ------------------------------------------------------------------------- */

/* The matrix m and first row row0 of global warp gw, and the addresses of its MVQ_ROWS rows
 * (rows past the end re-read the last one; mvq_finish never stores them). false past the last
 * matrix's warps. */
__device__ __forceinline__ bool mvq_warp_rows(const struct mvq_group &g, int64_t gw, int *m,
                                              int64_t *row0, const uint8_t *wr[MVQ_ROWS])
{
    if (gw >= g.warp_end[g.n - 1])
        return false;
    int k = 0;
    while (k + 1 < g.n && gw >= g.warp_end[k])
        k++;
    *m = k;
    *row0 = (gw - (k ? g.warp_end[k - 1] : 0)) * MVQ_ROWS;
#pragma unroll
    for (int r = 0; r < MVQ_ROWS; r++)
        wr[r] = g.w[k] + min(*row0 + r, g.rows[k] - 1) * g.row_bytes;
    return true;
}

/* Starts the copies of step k (STEP bytes of each row) into one stage's row buffers, then
 * commits a group: one per step, empty past the last step, so that waiting for all but the
 * newest STAGES - 1 groups always means "step k has landed". */
template <int BUF>
__device__ __forceinline__ void mvq_stage_rows(uint8_t (*stage)[BUF],
                                               const uint8_t *const wr[MVQ_ROWS], int64_t k,
                                               int step, int64_t steps, int64_t row_bytes, int lane)
{
    if (k < steps)
#pragma unroll
        for (int r = 0; r < MVQ_ROWS; r++)
            mvq_stage(stage[r], wr[r] + k * step, (int)min((int64_t)step, row_bytes - k * step),
                      lane);
    mvq_cp_commit();
}

/* Sums each token's and row's partial sums over the warp; lane 0 stores the rows that exist. */
__device__ __forceinline__ void mvq_finish(const struct mvq_group &g,
                                           float (&acc)[CUDA_MATVEC_MAX_BATCH][MVQ_ROWS], int m,
                                           int64_t row0, int lane)
{
#pragma unroll
    for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++) {
        if (b >= g.batch)
            break;
#pragma unroll
        for (int r = 0; r < MVQ_ROWS; r++) {
            float s = cuda_warp_sum(acc[b][r]);
            if (lane == 0 && row0 + r < g.rows[m])
                mvq_store(g.y[m], b * g.y_stride[m] + row0 + r, s, g.y_bf16[m], g.accumulate[m]);
        }
    }
}

/* The quantised types: lane l takes piece l % PPB of block l / PPB of the step. */
template <enum dtype T, typename TX>
__global__ void __launch_bounds__(MVQ_THREADS) mvq_kernel(const struct mvq_group g)
{
    typedef mvq_type<T> P;
    const int NB = 32 / P::PPB, STEP = NB * P::BB, L = 16 / P::RUNS;
    const int BUF = (STEP + 48) & ~15; /* cover (<= STEP + 30) + the funnel's spare word */
    __shared__ __align__(16) uint8_t smem[MVQ_WARPS][P::STAGES][MVQ_ROWS][BUF];

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int m;
    int64_t row0;
    const uint8_t *wr[MVQ_ROWS];
    if (!mvq_warp_rows(g, (int64_t)blockIdx.x * MVQ_WARPS + warp, &m, &row0, wr))
        return;
    int64_t steps = (g.row_bytes + STEP - 1) / STEP;

    /* Partial sums per token and row; step k's bytes go to stage k % STAGES (mvq_stage_rows). */
    float acc[CUDA_MATVEC_MAX_BATCH][MVQ_ROWS];
#pragma unroll
    for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++)
#pragma unroll
        for (int r = 0; r < MVQ_ROWS; r++)
            acc[b][r] = 0.0f;

#pragma unroll
    for (int k = 0; k < P::STAGES - 1; k++)
        mvq_stage_rows<BUF>(smem[warp][k], wr, k, STEP, steps, g.row_bytes, lane);
    int pp = lane % P::PPB;
    for (int64_t k = 0; k < steps; k++) {
        int64_t kn = k + P::STAGES - 1;
        mvq_stage_rows<BUF>(smem[warp][kn % P::STAGES], wr, kn, STEP, steps, g.row_bytes, lane);
        mvq_cp_wait<P::STAGES - 1>();
        __syncwarp();

        int64_t unit = k * NB + lane / P::PPB;
        if (unit < g.units) {
            float q[MVQ_ROWS][16], d[MVQ_ROWS][4], mn[MVQ_ROWS][4];
#pragma unroll
            for (int r = 0; r < MVQ_ROWS; r++) {
                const uint8_t *s = smem[warp][k % P::STAGES][r];
                int p = (int)(((uintptr_t)(wr[r] + k * STEP)) & 15) + (lane / P::PPB) * P::BB;
                P::decode(s, p, pp, q[r], d[r], mn[r]);
            }
            int64_t c0 = unit * P::BE;
#pragma unroll
            for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++) {
                if (b >= g.batch)
                    break;
                const TX *xb = (const TX *)g.x + b * g.x_stride + c0;
                float xv[16];
#pragma unroll
                for (int j = 0; j < P::RUNS; j++)
#pragma unroll
                    for (int i = 0; i < L; i += 4)
                        mvq_x4(xb + P::col(pp, j) + i, g.x_vec, xv + j * L + i);
                float sx[4];
                if (P::MIN)
#pragma unroll
                    for (int j = 0; j < P::RUNS; j++) {
                        sx[j] = 0.0f;
#pragma unroll
                        for (int i = 0; i < L; i++)
                            sx[j] += xv[j * L + i];
                    }
#pragma unroll
                for (int r = 0; r < MVQ_ROWS; r++)
#pragma unroll
                    for (int j = 0; j < P::RUNS; j++) {
                        float s = 0.0f;
#pragma unroll
                        for (int i = 0; i < L; i++)
                            s = fmaf(q[r][j * L + i], xv[j * L + i], s);
                        acc[b][r] = fmaf(d[r][j], s, acc[b][r]);
                        if (P::MIN)
                            acc[b][r] = fmaf(mn[r][j], sx[j], acc[b][r]);
                    }
            }
        }
        __syncwarp(); /* the next step's copies overwrite this stage */
    }
    mvq_finish(g, acc, m, row0, lane);
}

/* F16 (rows of any length): lane l takes the runs of mvq_f16. */
template <typename TX>
__global__ void __launch_bounds__(MVQ_THREADS, 4) mvq_f16_kernel(const struct mvq_group g)
{
    typedef mvq_f16 P;
    const int S = P::STAGES, STEP = P::NB * P::BB;
    const int BUF = (STEP + 48) & ~15; /* cover (<= STEP + 30) + the funnel's spare word */
    __shared__ __align__(16) uint8_t smem[MVQ_WARPS][S][MVQ_ROWS][BUF];

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int m;
    int64_t row0;
    const uint8_t *wr[MVQ_ROWS];
    if (!mvq_warp_rows(g, (int64_t)blockIdx.x * MVQ_WARPS + warp, &m, &row0, wr))
        return;
    int64_t steps = (g.row_bytes + STEP - 1) / STEP;

    /* Partial sums per token and row; step k's bytes go to stage k % S (mvq_stage_rows). */
    float acc[CUDA_MATVEC_MAX_BATCH][MVQ_ROWS];
#pragma unroll
    for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++)
#pragma unroll
        for (int r = 0; r < MVQ_ROWS; r++)
            acc[b][r] = 0.0f;

#pragma unroll
    for (int k = 0; k < S - 1; k++)
        mvq_stage_rows<BUF>(smem[warp][k], wr, k, STEP, steps, g.row_bytes, lane);
    for (int64_t k = 0; k < steps; k++) {
        int64_t kn = k + S - 1;
        mvq_stage_rows<BUF>(smem[warp][kn % S], wr, kn, STEP, steps, g.row_bytes, lane);
        mvq_cp_wait<S - 1>();
        __syncwarp();

        float q[MVQ_ROWS][16], d[MVQ_ROWS][4], mn[MVQ_ROWS][4];
#pragma unroll
        for (int r = 0; r < MVQ_ROWS; r++) {
            const uint8_t *s = smem[warp][k % S][r];
            P::decode(s, (int)((uintptr_t)(wr[r] + k * STEP) & 15), lane, q[r], d[r], mn[r]);
        }
        /* runs past the row's end (the last step of a row, F16 rows of any length) count as
         * zeros; what the buffer holds there is stale */
        int64_t c0 = k * (P::NB * P::BE);
        int nv[4];
        bool full = true;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            nv[j] = (int)max((int64_t)0, min((int64_t)4, g.cols - c0 - P::col(lane, j)));
            full = full && nv[j] == 4;
        }
        if (!full)
#pragma unroll
            for (int r = 0; r < MVQ_ROWS; r++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        q[r][4 * j + i] = i < nv[j] ? q[r][4 * j + i] : 0.0f;
                    d[r][j] = nv[j] ? d[r][j] : 0.0f;
                    mn[r][j] = nv[j] ? mn[r][j] : 0.0f;
                }
#pragma unroll
        for (int b = 0; b < CUDA_MATVEC_MAX_BATCH; b++) {
            if (b >= g.batch)
                break;
            const TX *xb = (const TX *)g.x + b * g.x_stride + c0;
            float xv[16];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (full) {
                    mvq_x4(xb + P::col(lane, j), g.x_vec, xv + 4 * j);
                } else {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        xv[4 * j + i] = i < nv[j] ? cuda_to_f32(xb[P::col(lane, j) + i]) : 0.0f;
                }
            }
            float sx[4];
            if (P::MIN)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    sx[j] = (xv[4 * j] + xv[4 * j + 1]) + (xv[4 * j + 2] + xv[4 * j + 3]);
#pragma unroll
            for (int r = 0; r < MVQ_ROWS; r++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float s = q[r][4 * j] * xv[4 * j];
#pragma unroll
                    for (int i = 1; i < 4; i++)
                        s = fmaf(q[r][4 * j + i], xv[4 * j + i], s);
                    acc[b][r] = fmaf(d[r][j], s, acc[b][r]);
                    if (P::MIN)
                        acc[b][r] = fmaf(mn[r][j], sx[j], acc[b][r]);
                }
        }
        __syncwarp(); /* the next step's copies overwrite this stage */
    }
    mvq_finish(g, acc, m, row0, lane);
}

static cudaError_t mvq_launch_f16(struct mvq_group *g, bool x_f32, cudaStream_t stream)
{
    unsigned blocks = cuda_blocks(g->warp_end[g->n - 1], MVQ_WARPS);
    g->row_bytes = 2 * g->cols; /* rows of any length */
    if (x_f32)
        mvq_f16_kernel<float><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    else
        mvq_f16_kernel<__nv_bfloat16><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    return cudaGetLastError();
}

template <enum dtype T>
static cudaError_t mvq_launch(struct mvq_group *g, bool x_f32, cudaStream_t stream)
{
    typedef mvq_type<T> P;
    unsigned blocks = cuda_blocks(g->warp_end[g->n - 1], MVQ_WARPS);
    g->row_bytes = g->cols / P::BE * P::BB;
    g->units = g->cols / P::BE;
    if (x_f32)
        mvq_kernel<T, float><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    else
        mvq_kernel<T, __nv_bfloat16><<<blocks, MVQ_THREADS, 0, stream>>>(*g);
    return cudaGetLastError();
}

int cuda_matvec_block_elems(enum dtype t)
{
    switch (t) {
    case DTYPE_F16:
    case DTYPE_BF16:
        return 1;
    case DTYPE_Q8_0:
    case DTYPE_Q4_0:
    case DTYPE_Q4_1:
        return 32;
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
    case DTYPE_Q6_K:
        return 256;
    default:
        return 0;
    }
}

int cuda_matvec_quant_group(const struct cuda_matvec *m, int n, cudaStream_t stream)
{
    struct mvq_group g = {};
    int64_t warps = 0;
    for (int i = 0; i < n; i++) {
        g.w[i] = (const uint8_t *)m[i].w;
        g.y[i] = m[i].y;
        g.rows[i] = m[i].rows;
        g.y_stride[i] = m[i].y_stride;
        g.y_bf16[i] = m[i].y_type == DTYPE_BF16;
        g.accumulate[i] = m[i].accumulate;
        warps += (m[i].rows + MVQ_ROWS - 1) / MVQ_ROWS;
        g.warp_end[i] = warps;
    }
    g.n = n;
    g.batch = m[0].batch;
    g.cols = m[0].cols;
    g.x = m[0].x;
    g.x_stride = m[0].x_stride;
    bool xf = m[0].x_type == DTYPE_F32;
    size_t xe = xf ? 4 : 2;
    /* runs start at multiples of 4 elements: 16 bytes (f32) or 8 (bf16) from x's start */
    g.x_vec = ((uintptr_t)g.x & (4 * xe - 1)) == 0 &&
              (g.batch == 1 || ((size_t)g.x_stride * xe) % (4 * xe) == 0);
    cudaError_t err;
    switch (m[0].w_type) {
    case DTYPE_F16:
        err = mvq_launch_f16(&g, xf, stream);
        break;
    case DTYPE_Q8_0:
        err = mvq_launch<DTYPE_Q8_0>(&g, xf, stream);
        break;
    case DTYPE_Q4_0:
        err = mvq_launch<DTYPE_Q4_0>(&g, xf, stream);
        break;
    case DTYPE_Q4_1:
        err = mvq_launch<DTYPE_Q4_1>(&g, xf, stream);
        break;
    case DTYPE_Q4_K:
        err = mvq_launch<DTYPE_Q4_K>(&g, xf, stream);
        break;
    case DTYPE_Q5_K:
        err = mvq_launch<DTYPE_Q5_K>(&g, xf, stream);
        break;
    default:
        err = mvq_launch<DTYPE_Q6_K>(&g, xf, stream);
        break;
    }
    CUDA_TRY(err);
    return 0;
}
