/*
 * kernels/cuda_gdn_chunked.cu — the chunked Gated DeltaNet prefill (see cuda_gdn_chunked.h).
 *
 * Per value head, a chunk of C = 64 tokens with cumulative log-decay Gamma_r, incoming state
 * S0 [Dk x Dv], normalised K, Q (rows = tokens) and beta:
 *   A    = strictly lower part of diag(beta) (K K^T) o exp(Gamma_r - Gamma_s)
 *   V'   = diag(beta) (V - diag(exp Gamma) K S0)
 *   Vnew = (I + A)^-1 V'                          (forward substitution)
 *   O    = diag(exp Gamma) Q S0 + [(Q K^T) o M] Vnew,  M_rs = exp(Gamma_r - Gamma_s), s <= r
 *   S    = exp(Gamma_C) S0 + (diag(exp(Gamma_C - Gamma)) K)^T Vnew
 * This is QWEN35.md's W/U form with T = (I + A)^-1 applied once to V' = U - W S0 rather than
 * to K and V separately. Every exponent is a difference Gamma_r - Gamma_s with s <= r (or
 * Gamma_C - Gamma_r), so it is <= 0 and nothing overflows.
 *
 * The columns of S and V evolve independently (each is its own delta rule with the same k,
 * beta and g), so a block owns GC_VS = 32 value columns of one head of one sequence and walks
 * its chunks in order; the block recomputes the chunk's A and Q K^T (cheap, shared by nothing
 * else it could wait on). Grid: (Dv / 32, value heads, sequences): 192 blocks for one
 * sequence of the 27B shape. Everything of a chunk lives in shared memory (131 KB, one block
 * per SM): Q^T and K^T (token index fastest, so 4 tokens are one float4), the state slice, V'
 * / Vnew, A and P^T = ((Q K^T) o M)^T. The products run on the CUDA cores in fp32 with 4 x 4
 * or 4 x 2 register tiles; the forward substitution gives each warp 4 columns and each column
 * 8 lanes that split the sum over earlier rows. The L2 norms and q_scale are folded into the
 * products as per-row factors instead of rescaling the tiles.
 *
 * Variant 2 (the default for k_dim 128) keeps the next chunk's q, k, v, g and beta in
 * registers, loaded right after this chunk's inputs went to shared memory, so the global
 * loads run under the chunk's arithmetic instead of before it (1.5x on the 27B shape). What
 * is left is fp32 arithmetic on the CUDA cores; the next step is tensor cores (mma in tf32 or
 * bf16 with an fp32 state) for the K K^T, Q K^T, Q S, K S and K^T Vnew products.
 */
#include "cuda_check.cuh"
#include "cuda_gdn_chunked.h"
#include "cuda_util.cuh"

#define GC_C       CUDA_GDN_CHUNK
#define GC_DK      CUDA_GDN_CHUNKED_MAX_K_DIM
#define GC_VS      32  /* value columns per block */
#define GC_THREADS 256 /* 8 warps */
#define GC_LD      68  /* row length of Q^T, K^T, P^T: 64 tokens + 4, keeps float4 alignment */
#define GC_VLD     36  /* row length of V': lanes of a column group hit distinct banks */
#define GC_ALD     65  /* row length of A */
/* The variant cuda_gdn_chunked() uses: 2 (prefetch) where k_dim is 128, from bench_gdn. */
#define GC_DEFAULT_VARIANT 2

struct gc_smem {
    float qt[GC_DK][GC_LD]; /* qt[i][r] = q of token r, element i (raw) */
    float kt[GC_DK][GC_LD];
    float st[GC_DK][GC_VS]; /* state slice */
    float vn[GC_C][GC_VLD]; /* V', then Vnew */
    float am[GC_C][GC_ALD]; /* A */
    float pt[GC_C][GC_LD];  /* pt[s][r] = P_rs */
    float gam[GC_C];        /* Gamma_r (padding rows repeat the last one) */
    float egam[GC_C];       /* exp(Gamma_r) */
    float dec[GC_C];        /* exp(Gamma_C - Gamma_r) */
    float bet[GC_C];
    float qf[GC_C], kf[GC_C]; /* per-row factors: norm and scale */
};

/* The next chunk's inputs held in registers (prefetching variant, k_dim == GC_DK): thread t
 * owns element i = t % 128 of rows t / 128 + 2 j of q and k, (row, column) pairs of v as in
 * step 3, and g / beta of row t (t < 64). */
struct gc_next {
    float q[GC_C * GC_DK / GC_THREADS], k[GC_C * GC_DK / GC_THREADS];
    float v[4][2];
    float g, beta;
};

__device__ __forceinline__ void gc_fetch(const struct cuda_gdn_recurrent &p, int64_t row0, int L,
                                         int kh, int h, int j0, struct gc_next &n)
{
    const int tid = threadIdx.x, i = tid % GC_DK, rb = tid / GC_DK;
#pragma unroll
    for (int j = 0; j < GC_C * GC_DK / GC_THREADS; j++) {
        int r = rb + (GC_THREADS / GC_DK) * j;
        int64_t off = (row0 + r) * p.qk_stride + (int64_t)kh * GC_DK + i;
        n.q[j] = r < L ? p.q[off] : 0.0f;
        n.k[j] = r < L ? p.k[off] : 0.0f;
    }
    const int r0 = 4 * (tid / 16), cc0 = 2 * (tid % 16);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 2; b++) {
            int r = r0 + a, col = j0 + cc0 + b;
            n.v[a][b] = r < L && col < p.v_dim
                                ? p.v[(row0 + r) * p.v_stride + (int64_t)h * p.v_dim + col]
                                : 0.0f;
        }
    bool in = tid < L;
    n.g = in ? p.g[(row0 + tid) * p.gb_stride + h] : 0.0f;
    n.beta = in ? p.beta[(row0 + tid) * p.gb_stride + h] : 0.0f;
}

/* PF: prefetch the next chunk's q, k, v, g and beta into registers while this chunk computes
 * (k_dim == GC_DK only); without it each chunk waits for its loads. */
template <bool PF>
__global__ void __launch_bounds__(GC_THREADS) gdn_chunked_kernel(struct cuda_gdn_recurrent p)
{
    extern __shared__ float4 gc_raw[];
    struct gc_smem &sm = *(struct gc_smem *)gc_raw;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int h = blockIdx.y, s = blockIdx.z, j0 = blockIdx.x * GC_VS;
    const int dk = PF ? GC_DK : p.k_dim, dv = p.v_dim;
    const int kh = h / (p.n_v_heads / p.n_k_heads);
    float *S = p.state + s * p.state_stride + (int64_t)h * dk * dv;

    for (int e = tid; e < GC_DK * GC_VS; e += GC_THREADS) {
        int i = e / GC_VS, c = e % GC_VS;
        sm.st[i][c] = i < dk && j0 + c < dv ? S[(int64_t)i * dv + j0 + c] : 0.0f;
    }
    struct gc_next nx;
    if (PF)
        gc_fetch(p, s * p.n_tok, (int)min((int64_t)GC_C, p.n_tok), kh, h, j0, nx);

    for (int64_t c0 = 0; c0 < p.n_tok; c0 += GC_C) {
        const int L = (int)min((int64_t)GC_C, p.n_tok - c0);
        const int64_t row0 = s * p.n_tok + c0;
        float vcur[4][2];

        /* 1. load q, k (transposed), g, beta; rows past L are zero */
        if (PF) {
            const int i = tid % GC_DK, rb = tid / GC_DK;
#pragma unroll
            for (int j = 0; j < GC_C * GC_DK / GC_THREADS; j++) {
                sm.qt[i][rb + (GC_THREADS / GC_DK) * j] = nx.q[j];
                sm.kt[i][rb + (GC_THREADS / GC_DK) * j] = nx.k[j];
            }
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 2; b++)
                    vcur[a][b] = nx.v[a][b];
            if (tid < GC_C) {
                sm.gam[tid] = nx.g;
                sm.bet[tid] = nx.beta;
            }
            if (c0 + GC_C < p.n_tok) /* in flight while this chunk computes */
                gc_fetch(p, row0 + GC_C, (int)min((int64_t)GC_C, p.n_tok - c0 - GC_C), kh, h, j0,
                         nx);
        } else {
            for (int e = tid; e < GC_C * dk; e += GC_THREADS) {
                int r = e / dk, i = e - r * dk;
                float qv = 0.0f, kv = 0.0f;
                if (r < L) {
                    int64_t off = (row0 + r) * p.qk_stride + (int64_t)kh * dk + i;
                    qv = p.q[off];
                    kv = p.k[off];
                }
                sm.qt[i][r] = qv;
                sm.kt[i][r] = kv;
            }
            if (tid < GC_C) {
                bool in = tid < L;
                sm.gam[tid] = in ? p.g[(row0 + tid) * p.gb_stride + h] : 0.0f;
                sm.bet[tid] = in ? p.beta[(row0 + tid) * p.gb_stride + h] : 0.0f;
            }
        }
        __syncthreads();

        /* per-row factors (every warp 8 rows) and the decay prefix sums (warp 0, after) */
        for (int r = warp; r < GC_C; r += GC_THREADS / 32) {
            float sq = 0.0f, sk = 0.0f;
            for (int i = lane; i < dk; i += 32) {
                sq += sm.qt[i][r] * sm.qt[i][r];
                sk += sm.kt[i][r] * sm.kt[i][r];
            }
            sq = cuda_warp_sum(sq);
            sk = cuda_warp_sum(sk);
            if (lane == 0) {
                sm.qf[r] = p.l2norm ? p.q_scale / sqrtf(sq + 1e-6f) : p.q_scale;
                sm.kf[r] = p.l2norm ? 1.0f / sqrtf(sk + 1e-6f) : 1.0f;
            }
        }
        if (warp == 0) {
            float a = sm.gam[2 * lane], b = sm.gam[2 * lane + 1];
            float pair = a + b, scan = pair;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                float up = __shfl_up_sync(0xffffffffu, scan, o);
                if (lane >= o)
                    scan += up;
            }
            float last = __shfl_sync(0xffffffffu, scan, 31);
            float g0 = scan - pair + a, g1 = scan;
            sm.gam[2 * lane] = g0;
            sm.gam[2 * lane + 1] = g1;
            sm.egam[2 * lane] = expf(g0);
            sm.egam[2 * lane + 1] = expf(g1);
            sm.dec[2 * lane] = expf(last - g0);
            sm.dec[2 * lane + 1] = expf(last - g1);
        }
        __syncthreads();

        /* 2. A and P^T: thread tile rows r0..r0+3 x columns s0..s0+3 */
        {
            const int r0 = 4 * (tid / 16), s0 = 4 * (tid % 16);
            float kk[4][4] = {}, qk[4][4] = {};
            if (s0 <= r0 + 3) {
                for (int i = 0; i < dk; i++) {
                    float4 kr = *(const float4 *)&sm.kt[i][r0];
                    float4 ks = *(const float4 *)&sm.kt[i][s0];
                    float4 qr = *(const float4 *)&sm.qt[i][r0];
                    float krv[4] = {kr.x, kr.y, kr.z, kr.w}, ksv[4] = {ks.x, ks.y, ks.z, ks.w};
                    float qrv[4] = {qr.x, qr.y, qr.z, qr.w};
#pragma unroll
                    for (int a = 0; a < 4; a++)
#pragma unroll
                        for (int b = 0; b < 4; b++) {
                            kk[a][b] = fmaf(krv[a], ksv[b], kk[a][b]);
                            qk[a][b] = fmaf(qrv[a], ksv[b], qk[a][b]);
                        }
                }
            }
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    int r = r0 + a, c = s0 + b;
                    float m = c <= r ? expf(sm.gam[r] - sm.gam[c]) * sm.kf[c] : 0.0f;
                    sm.am[r][c] = c < r ? sm.bet[r] * kk[a][b] * sm.kf[r] * m : 0.0f;
                    sm.pt[c][r] = qk[a][b] * sm.qf[r] * m;
                }
        }

        /* 3. Q S0 (kept for O) and V' = diag(beta) (V - diag(exp Gamma) K S0): tile 4 x 2 */
        const int r0 = 4 * (tid / 16), cc0 = 2 * (tid % 16);
        float qs[4][2] = {}, ks[4][2] = {};
        for (int i = 0; i < dk; i++) {
            float4 qr = *(const float4 *)&sm.qt[i][r0];
            float4 kr = *(const float4 *)&sm.kt[i][r0];
            float2 sv = *(const float2 *)&sm.st[i][cc0];
            float qrv[4] = {qr.x, qr.y, qr.z, qr.w}, krv[4] = {kr.x, kr.y, kr.z, kr.w};
#pragma unroll
            for (int a = 0; a < 4; a++) {
                qs[a][0] = fmaf(qrv[a], sv.x, qs[a][0]);
                qs[a][1] = fmaf(qrv[a], sv.y, qs[a][1]);
                ks[a][0] = fmaf(krv[a], sv.x, ks[a][0]);
                ks[a][1] = fmaf(krv[a], sv.y, ks[a][1]);
            }
        }
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int r = r0 + a;
#pragma unroll
            for (int b = 0; b < 2; b++) {
                int col = j0 + cc0 + b;
                float v = PF                  ? vcur[a][b]
                          : r < L && col < dv ? p.v[(row0 + r) * p.v_stride + (int64_t)h * dv + col]
                                              : 0.0f;
                qs[a][b] *= sm.qf[r] * sm.egam[r];
                sm.vn[r][cc0 + b] = sm.bet[r] * (v - sm.egam[r] * sm.kf[r] * ks[a][b]);
            }
        }
        __syncthreads();

        /* 4. (I + A) Vnew = V', row by row: warp w owns columns 4w..4w+3, 8 lanes per column */
        {
            const int col = 4 * warp + lane / 8, part = lane % 8;
            for (int r = 1; r < L; r++) {
                float acc = 0.0f;
                for (int t = part; t < r; t += 8)
                    acc = fmaf(sm.am[r][t], sm.vn[t][col], acc);
                acc += __shfl_xor_sync(0xffffffffu, acc, 1);
                acc += __shfl_xor_sync(0xffffffffu, acc, 2);
                acc += __shfl_xor_sync(0xffffffffu, acc, 4);
                if (part == 0)
                    sm.vn[r][col] -= acc;
                __syncwarp();
            }
        }
        __syncthreads();

        /* 5a. O = Q S0 part + P Vnew (P is zero above the diagonal and past L) */
        {
            int send = min(r0 + 4, L);
            for (int t = 0; t < send; t++) {
                float4 pr = *(const float4 *)&sm.pt[t][r0];
                float2 vv = *(const float2 *)&sm.vn[t][cc0];
                float prv[4] = {pr.x, pr.y, pr.z, pr.w};
#pragma unroll
                for (int a = 0; a < 4; a++) {
                    qs[a][0] = fmaf(prv[a], vv.x, qs[a][0]);
                    qs[a][1] = fmaf(prv[a], vv.y, qs[a][1]);
                }
            }
#pragma unroll
            for (int a = 0; a < 4; a++) {
                int r = r0 + a;
#pragma unroll
                for (int b = 0; b < 2; b++) {
                    int col = j0 + cc0 + b;
                    if (r < L && col < dv)
                        p.out[(row0 + r) * p.out_stride + (int64_t)h * dv + col] = qs[a][b];
                }
            }
        }
        /* 5b. S = exp(Gamma_C) S0 + (diag(dec) K)^T Vnew: tile rows i0..i0+3 x columns 4 */
        {
            const int i0 = 4 * (tid / 8), c4 = 4 * (tid % 8);
            if (i0 < dk) {
                float acc[4][4] = {};
                for (int t = 0; t < L; t++) {
                    float f = sm.kf[t] * sm.dec[t];
                    float4 vv = *(const float4 *)&sm.vn[t][c4];
                    float vvv[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
                    for (int a = 0; a < 4; a++) {
                        float kv = i0 + a < dk ? sm.kt[i0 + a][t] * f : 0.0f;
#pragma unroll
                        for (int b = 0; b < 4; b++)
                            acc[a][b] = fmaf(kv, vvv[b], acc[a][b]);
                    }
                }
                float eC = sm.egam[GC_C - 1];
#pragma unroll
                for (int a = 0; a < 4; a++)
#pragma unroll
                    for (int b = 0; b < 4; b++)
                        sm.st[i0 + a][c4 + b] = eC * sm.st[i0 + a][c4 + b] + acc[a][b];
            }
        }
        __syncthreads(); /* the next chunk overwrites the tiles read above */
    }

    for (int e = tid; e < GC_DK * GC_VS; e += GC_THREADS) {
        int i = e / GC_VS, c = e % GC_VS;
        if (i < dk && j0 + c < dv)
            S[(int64_t)i * dv + j0 + c] = sm.st[i][c];
    }
}

template <bool PF>
static int gdn_chunked_launch(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
{
    size_t smem = sizeof(struct gc_smem);
    CUDA_TRY(cudaFuncSetAttribute(gdn_chunked_kernel<PF>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)((a->v_dim + GC_VS - 1) / GC_VS), (unsigned)a->n_v_heads,
              (unsigned)a->n_seqs);
    gdn_chunked_kernel<PF><<<grid, GC_THREADS, smem, stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_gdn_chunked_variant(const struct cuda_gdn_recurrent *a, int variant,
                                        cudaStream_t stream)
{
    int64_t qk_row = (int64_t)a->n_k_heads * a->k_dim, v_row = (int64_t)a->n_v_heads * a->v_dim;
    bool rows_ok =
            a->n_tok * a->n_seqs <= 1 || (a->qk_stride >= qk_row && a->v_stride >= v_row &&
                                          a->out_stride >= v_row && a->gb_stride >= a->n_v_heads);
    if (a->n_seqs < 0 || a->n_seqs > 65535 || a->n_tok < 0 || a->n_k_heads < 1 ||
        a->n_v_heads < 1 || a->n_v_heads > 65535 || a->n_v_heads % a->n_k_heads != 0 ||
        a->k_dim < 1 || a->k_dim > CUDA_GDN_CHUNKED_MAX_K_DIM || a->v_dim < 1 || !rows_ok ||
        (a->n_seqs > 1 && a->state_stride < v_row * a->k_dim) || !a->q || !a->k || !a->v || !a->g ||
        !a->beta || !a->out || !a->state)
        return cuda_fail_args("cuda_gdn_chunked",
                              "k_dim 1..128, n_v_heads a multiple of n_k_heads, strides that "
                              "hold a row, state_stride >= n_v_heads * k_dim * v_dim");
    if (variant < 0 || variant > 2)
        return cuda_fail_args("cuda_gdn_chunked", "variant 0..2");
    if (a->n_seqs == 0 || a->n_tok == 0)
        return 0;
    if (variant == 0)
        variant = GC_DEFAULT_VARIANT;
    if (variant == 2 && a->k_dim == GC_DK)
        return gdn_chunked_launch<true>(a, stream);
    return gdn_chunked_launch<false>(a, stream);
}

extern "C" int cuda_gdn_chunked(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
{
    return cuda_gdn_chunked_variant(a, 0, stream);
}
