/*
 * kernels/cuda_gdn_recurrent.cu — the Gated DeltaNet recurrence (see cuda_gdn_recurrent.h).
 *
 * Decode reads and writes each head's state once (64 KiB at 128 x 128): that traffic is the
 * cost, so the state stays in registers across all tokens of the call. A block of 4 warps owns
 * 32 columns of one head's state; lane = column (coalesced 128-byte rows), warp w holds rows
 * w, w + 4, ... in MAXR registers. Both S^T k and S^T q are per-column sums over rows: each warp
 * sums its rows, then the four partial sums meet in shared memory. q and k of the token sit in
 * shared memory (every lane of a warp reads the same element: a broadcast), and each warp
 * computes their norms itself rather than waiting on a block-wide reduction.
 */
#include "cuda_check.cuh"
#include "cuda_gdn_recurrent.h"
#include "cuda_util.cuh"

#define GDN_WARPS 4

template <int MAXR>
__global__ void __launch_bounds__(GDN_WARPS * 32) gdn_recurrent_kernel(struct cuda_gdn_recurrent p)
{
    __shared__ float qs[CUDA_GDN_MAX_K_DIM], ks[CUDA_GDN_MAX_K_DIM];
    __shared__ float part_u[GDN_WARPS][32], part_o[GDN_WARPS][32];
    int h = blockIdx.y, s = blockIdx.z;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int dk = p.k_dim, dv = p.v_dim;
    int j = blockIdx.x * 32 + lane;
    bool jv = j < dv;
    int kh = h / (p.n_v_heads / p.n_k_heads);
    float *S = p.state + (p.slots ? (int64_t)p.slots[s] : (int64_t)s) * p.state_stride +
               (int64_t)h * dk * dv;
    float st[MAXR];
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = warp + GDN_WARPS * r;
        st[r] = i < dk && jv ? S[(int64_t)i * dv + j] : 0.0f;
    }
    for (int64_t t = 0; t < p.n_tok; t++) {
        int64_t row = s * p.n_tok + t;
        const float *q = p.q + row * p.qk_stride + (int64_t)kh * dk;
        const float *k = p.k + row * p.qk_stride + (int64_t)kh * dk;
        for (int i = threadIdx.x; i < dk; i += GDN_WARPS * 32) {
            qs[i] = q[i];
            ks[i] = k[i];
        }
        __syncthreads();
        float rq = p.q_scale, rk = 1.0f;
        if (p.l2norm) {
            float sq = 0.0f, sk = 0.0f;
            for (int i = lane; i < dk; i += 32) {
                sq += qs[i] * qs[i];
                sk += ks[i] * ks[i];
            }
            rq = p.q_scale / sqrtf(cuda_warp_sum(sq) + 1e-6f);
            rk = 1.0f / sqrtf(cuda_warp_sum(sk) + 1e-6f);
        }
        float alpha = expf(p.g[row * p.gb_stride + h]), beta = p.beta[row * p.gb_stride + h];
        float u = 0.0f;
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
            int i = warp + GDN_WARPS * r;
            if (i < dk)
                u += st[r] * (ks[i] * rk);
        }
        part_u[warp][lane] = u;
        __syncthreads();
        u = 0.0f;
#pragma unroll
        for (int w = 0; w < GDN_WARPS; w++)
            u += part_u[w][lane];
        float v = jv ? p.v[row * p.v_stride + (int64_t)h * dv + j] : 0.0f;
        float delta = beta * (v - alpha * u);
        float o = 0.0f;
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
            int i = warp + GDN_WARPS * r;
            if (i < dk) {
                st[r] = alpha * st[r] + (ks[i] * rk) * delta;
                o += st[r] * (qs[i] * rq);
            }
        }
        part_o[warp][lane] = o;
        __syncthreads();
        if (warp == 0 && jv) {
            o = 0.0f;
#pragma unroll
            for (int w = 0; w < GDN_WARPS; w++)
                o += part_o[w][lane];
            p.out[row * p.out_stride + (int64_t)h * dv + j] = o;
        }
        /* The next token's writes to qs/ks/part_u come after the barrier above, which every
         * reader of this token's values has passed; part_o is rewritten two barriers later. */
    }
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = warp + GDN_WARPS * r;
        if (i < dk && jv)
            S[(int64_t)i * dv + j] = st[r];
    }
}

template <int MAXR>
static int gdn_recurrent_launch(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
{
    dim3 grid((unsigned)((a->v_dim + 31) / 32), (unsigned)a->n_v_heads, (unsigned)a->n_seqs);
    gdn_recurrent_kernel<MAXR><<<grid, GDN_WARPS * 32, 0, stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_gdn_recurrent(const struct cuda_gdn_recurrent *a, cudaStream_t stream)
{
    int64_t qk_row = (int64_t)a->n_k_heads * a->k_dim, v_row = (int64_t)a->n_v_heads * a->v_dim;
    bool rows_ok =
            a->n_tok * a->n_seqs <= 1 || (a->qk_stride >= qk_row && a->v_stride >= v_row &&
                                          a->out_stride >= v_row && a->gb_stride >= a->n_v_heads);
    if (a->n_seqs < 0 || a->n_seqs > 65535 || a->n_tok < 0 || a->n_k_heads < 1 ||
        a->n_v_heads < 1 || a->n_v_heads > 65535 || a->n_v_heads % a->n_k_heads != 0 ||
        a->k_dim < 1 || a->k_dim > CUDA_GDN_MAX_K_DIM || a->v_dim < 1 || !rows_ok ||
        ((a->n_seqs > 1 || a->slots) && a->state_stride < v_row * a->k_dim) || !a->q || !a->k ||
        !a->v || !a->g || !a->beta || !a->out || !a->state)
        return cuda_fail_args("cuda_gdn_recurrent",
                              "k_dim 1..256, n_v_heads a multiple of n_k_heads, strides that "
                              "hold a row, state_stride >= n_v_heads * k_dim * v_dim");
    if (a->n_seqs == 0 || a->n_tok == 0)
        return 0;
    int rows_per_warp = (a->k_dim + GDN_WARPS - 1) / GDN_WARPS;
    if (rows_per_warp <= 8)
        return gdn_recurrent_launch<8>(a, stream);
    if (rows_per_warp <= 16)
        return gdn_recurrent_launch<16>(a, stream);
    if (rows_per_warp <= 32)
        return gdn_recurrent_launch<32>(a, stream);
    return gdn_recurrent_launch<64>(a, stream);
}
