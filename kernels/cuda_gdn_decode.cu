/*
 * kernels/cuda_gdn_decode.cu — the fused Gated DeltaNet decode step (see cuda_gdn_decode.h).
 *
 * A block owns one value head of one sequence: groups of 4 warps own 32 state columns each
 * (lane = column, so state rows are 128-byte coalesced loads), warp w of a group holds rows
 * w, w + 4, ... in registers, as in cuda_gdn_recurrent.cu. Owning the whole head is what lets
 * the gated RMSNorm run in the same kernel: the v_dim outputs meet in shared memory once. The
 * gates are two scalars per head, computed by one thread while the others load the state.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_gdn_decode.h"
#include "cuda_util.cuh"

#define GD_GROUP_WARPS 4
#define GD_MAX_GROUPS  (CUDA_GDN_DECODE_MAX_DIM / 32)
#define GD_MAX_WARPS   (GD_GROUP_WARPS * GD_MAX_GROUPS)

template <int MAXR, typename TY>
__global__ void __launch_bounds__(GD_MAX_WARPS * 32) gdn_decode_kernel(struct cuda_gdn_decode p)
{
    __shared__ float qs[CUDA_GDN_DECODE_MAX_DIM], ks[CUDA_GDN_DECODE_MAX_DIM];
    __shared__ float part_u[GD_MAX_WARPS][32], part_o[GD_MAX_WARPS][32];
    __shared__ float red[GD_MAX_GROUPS], gates[2];
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int h = blockIdx.x, s = blockIdx.y;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int grp = warp / GD_GROUP_WARPS, wg = warp % GD_GROUP_WARPS;
    int n_grp = blockDim.x / (32 * GD_GROUP_WARPS);
    int dk = p.k_dim, dv = p.v_dim;
    int j = grp * 32 + lane;
    bool jv = j < dv;
    int kh = h / (p.n_v_heads / p.n_k_heads);
    float *S = p.state + (p.slots ? (int64_t)p.slots[s] : (int64_t)s) * p.state_stride +
               (int64_t)h * dk * dv;
    float st[MAXR];
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = wg + GD_GROUP_WARPS * r;
        st[r] = i < dk && jv ? S[(int64_t)i * dv + j] : 0.0f;
    }
    const float *q = p.q + (int64_t)s * p.qk_stride + (int64_t)kh * dk;
    const float *k = p.k + (int64_t)s * p.qk_stride + (int64_t)kh * dk;
    for (int i = threadIdx.x; i < dk; i += blockDim.x) {
        qs[i] = q[i];
        ks[i] = k[i];
    }
    if (threadIdx.x == 0) {
        float b = p.b[(int64_t)s * p.ab_stride + h];
        float x = p.a[(int64_t)s * p.ab_stride + h] + p.dt_bias[h];
        float softplus = x > 20.0f ? x : log1pf(expf(x));
        gates[0] = expf(p.neg_a[h] * softplus);
        gates[1] = 1.0f / (1.0f + expf(-b));
    }
    float v = jv ? p.v[(int64_t)s * p.v_stride + (int64_t)h * dv + j] : 0.0f;
    float z = jv ? p.z[(int64_t)s * p.z_stride + (int64_t)h * dv + j] : 0.0f;
    __syncthreads();
    float sq = 0.0f, sk = 0.0f;
    for (int i = lane; i < dk; i += 32) {
        sq += qs[i] * qs[i];
        sk += ks[i] * ks[i];
    }
    float rq = p.q_scale / sqrtf(cuda_warp_sum(sq) + 1e-6f);
    float rk = 1.0f / sqrtf(cuda_warp_sum(sk) + 1e-6f);
    float alpha = gates[0], beta = gates[1];
    float u = 0.0f;
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = wg + GD_GROUP_WARPS * r;
        if (i < dk)
            u += st[r] * (ks[i] * rk);
    }
    part_u[warp][lane] = u;
    __syncthreads();
    u = 0.0f;
#pragma unroll
    for (int w = 0; w < GD_GROUP_WARPS; w++)
        u += part_u[grp * GD_GROUP_WARPS + w][lane];
    float delta = beta * (v - alpha * u);
    float o = 0.0f;
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = wg + GD_GROUP_WARPS * r;
        if (i < dk) {
            st[r] = alpha * st[r] + (ks[i] * rk) * delta;
            o += st[r] * (qs[i] * rq);
        }
    }
    part_o[warp][lane] = o;
#pragma unroll
    for (int r = 0; r < MAXR; r++) {
        int i = wg + GD_GROUP_WARPS * r;
        if (i < dk && jv)
            S[(int64_t)i * dv + j] = st[r];
    }
    __syncthreads();
    if (wg == 0) {
        o = 0.0f;
#pragma unroll
        for (int w = 0; w < GD_GROUP_WARPS; w++)
            o += part_o[grp * GD_GROUP_WARPS + w][lane];
        float ss = cuda_warp_sum(jv ? o * o : 0.0f);
        if (lane == 0)
            red[grp] = ss;
    }
    __syncthreads();
    if (wg == 0 && jv) {
        float ss = 0.0f;
        for (int g = 0; g < n_grp; g++)
            ss += red[g];
        float rn = 1.0f / sqrtf(ss / (float)dv + p.eps);
        TY *y = (TY *)p.y + (int64_t)s * p.y_stride + (int64_t)h * dv;
        cuda_from_f32(y + j, p.norm_w[j] * (o * rn) * cuda_silu(z));
    }
}

template <int MAXR>
static int gdn_decode_launch(const struct cuda_gdn_decode *a, cudaStream_t stream)
{
    dim3 grid((unsigned)a->n_v_heads, (unsigned)a->n_seqs);
    int threads = 32 * GD_GROUP_WARPS * ((a->v_dim + 31) / 32);
    if (a->y_type == DTYPE_BF16)
        CUDA_TRY(cuda_launch(gdn_decode_kernel<MAXR, __nv_bfloat16>, grid, threads, 0, stream, *a));
    else
        CUDA_TRY(cuda_launch(gdn_decode_kernel<MAXR, float>, grid, threads, 0, stream, *a));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_gdn_decode(const struct cuda_gdn_decode *a, cudaStream_t stream)
{
    int64_t qk_row = (int64_t)a->n_k_heads * a->k_dim, v_row = (int64_t)a->n_v_heads * a->v_dim;
    bool rows_ok = a->n_seqs <= 1 ||
                   (a->qk_stride >= qk_row && a->v_stride >= v_row && a->z_stride >= v_row &&
                    a->y_stride >= v_row && a->ab_stride >= a->n_v_heads);
    if (a->n_seqs < 0 || a->n_seqs > 65535 || a->n_k_heads < 1 || a->n_v_heads < 1 ||
        a->n_v_heads % a->n_k_heads != 0 || a->k_dim < 1 || a->k_dim > CUDA_GDN_DECODE_MAX_DIM ||
        a->v_dim < 1 || a->v_dim > CUDA_GDN_DECODE_MAX_DIM || !rows_ok ||
        ((a->n_seqs > 1 || a->slots) && a->state_stride < v_row * a->k_dim) ||
        (a->y_type != DTYPE_F32 && a->y_type != DTYPE_BF16) || !(a->eps >= 0.0f) || !a->q ||
        !a->k || !a->v || !a->a || !a->b || !a->neg_a || !a->dt_bias || !a->z || !a->norm_w ||
        !a->y || !a->state)
        return cuda_fail_args("cuda_gdn_decode",
                              "k_dim and v_dim 1..128, n_v_heads a multiple of n_k_heads, "
                              "strides that hold a row, y f32/bf16, state_stride >= n_v_heads * "
                              "k_dim * v_dim");
    if (a->n_seqs == 0)
        return 0;
    int rows_per_warp = (a->k_dim + GD_GROUP_WARPS - 1) / GD_GROUP_WARPS;
    if (rows_per_warp <= 8)
        return gdn_decode_launch<8>(a, stream);
    if (rows_per_warp <= 16)
        return gdn_decode_launch<16>(a, stream);
    return gdn_decode_launch<32>(a, stream);
}
