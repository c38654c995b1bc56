/*
 * kernels/cuda_gdn_conv.cu — Gated DeltaNet causal conv1d (see cuda_gdn_conv.h).
 *
 * Decode (one token per sequence) is one kernel, a thread per (sequence, channel) that reads
 * the state, writes the output and shifts the state. A sequence of tokens takes two kernels on
 * the same stream: a thread per (token, channel) for the outputs, which all read the old state,
 * then a thread per (sequence, channel) that writes the new one; splitting them is what keeps
 * the readers of the old state from racing its writer.
 */
#include "cuda_check.cuh"
#include "cuda_launch.cuh"
#include "cuda_gdn_conv.h"
#include "cuda_util.cuh"

#define GDN_CONV_MAX_KERNEL 8

/* The state slot of sequence s: slots[s] when given, else s. */
__device__ __forceinline__ int64_t gdn_conv_slot(const struct cuda_gdn_conv &a, int s)
{
    return a.slots ? (int64_t)a.slots[s] : (int64_t)s;
}

__global__ void gdn_conv_step_kernel(struct cuda_gdn_conv a)
{
    cuda_pdl_trigger();
    cuda_pdl_wait();
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (int64_t)a.n_seqs * a.channels)
        return;
    int s = (int)(id / a.channels), c = (int)(id % a.channels), hist = a.kernel - 1;
    float *st = a.state + gdn_conv_slot(a, s) * a.state_stride + c;
    const float *wc = a.w + (int64_t)c * a.kernel;
    float in = a.x[s * a.x_stride + c];
    float acc = 0.0f, prev[GDN_CONV_MAX_KERNEL];
#pragma unroll
    for (int j = 0; j < GDN_CONV_MAX_KERNEL - 1; j++)
        if (j < hist) {
            prev[j] = st[(int64_t)j * a.channels];
            acc += wc[j] * prev[j];
        }
    acc += wc[hist] * in;
#pragma unroll
    for (int j = 0; j < GDN_CONV_MAX_KERNEL - 1; j++)
        if (j < hist)
            st[(int64_t)j * a.channels] = j + 1 < hist ? prev[j + 1] : in;
    a.y[s * a.y_stride + c] = cuda_silu(acc);
}

/* Element r of sequence s's window: the state for r < kernel - 1, else input r - (kernel - 1). */
__device__ __forceinline__ float gdn_conv_window(const struct cuda_gdn_conv &a, int s, int c,
                                                 int64_t r)
{
    int hist = a.kernel - 1;
    return r < hist ? a.state[gdn_conv_slot(a, s) * a.state_stride + r * a.channels + c]
                    : a.x[(s * a.n_tok + r - hist) * a.x_stride + c];
}

__global__ void gdn_conv_seq_kernel(struct cuda_gdn_conv a)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t per_seq = a.n_tok * a.channels;
    if (id >= a.n_seqs * per_seq)
        return;
    int s = (int)(id / per_seq);
    int64_t t = id % per_seq / a.channels;
    int c = (int)(id % a.channels);
    const float *wc = a.w + (int64_t)c * a.kernel;
    float acc = 0.0f;
    for (int j = 0; j < a.kernel; j++)
        acc += wc[j] * gdn_conv_window(a, s, c, t + j);
    a.y[(s * a.n_tok + t) * a.y_stride + c] = cuda_silu(acc);
}

__global__ void gdn_conv_state_kernel(struct cuda_gdn_conv a)
{
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (int64_t)a.n_seqs * a.channels)
        return;
    int s = (int)(id / a.channels), c = (int)(id % a.channels), hist = a.kernel - 1;
    float keep[GDN_CONV_MAX_KERNEL];
#pragma unroll
    for (int j = 0; j < GDN_CONV_MAX_KERNEL - 1; j++)
        if (j < hist)
            keep[j] = gdn_conv_window(a, s, c, a.n_tok + j);
#pragma unroll
    for (int j = 0; j < GDN_CONV_MAX_KERNEL - 1; j++)
        if (j < hist)
            a.state[gdn_conv_slot(a, s) * a.state_stride + (int64_t)j * a.channels + c] = keep[j];
}

extern "C" int cuda_gdn_conv(const struct cuda_gdn_conv *a, cudaStream_t stream)
{
    int hist = a->kernel - 1;
    bool rows_ok =
            a->n_tok * a->n_seqs <= 1 || (a->x_stride >= a->channels && a->y_stride >= a->channels);
    if (a->channels < 1 || a->kernel < 2 || a->kernel > GDN_CONV_MAX_KERNEL || a->n_seqs < 0 ||
        a->n_tok < 0 || !rows_ok ||
        ((a->n_seqs > 1 || a->slots) && a->state_stride < (int64_t)hist * a->channels) || !a->x ||
        !a->y || !a->state || !a->w)
        return cuda_fail_args("cuda_gdn_conv", "channels >= 1, kernel 2..8, strides >= channels, "
                                               "state_stride >= (kernel - 1) * channels");
    int64_t per_seq = (int64_t)a->n_seqs * a->channels;
    if (per_seq == 0 || a->n_tok == 0)
        return 0;
    if (a->n_tok == 1) {
        CUDA_TRY(cuda_launch(gdn_conv_step_kernel, cuda_blocks(per_seq, 256), 256, 0, stream, *a));
    } else {
        gdn_conv_seq_kernel<<<cuda_blocks(per_seq * a->n_tok, 256), 256, 0, stream>>>(*a);
        CUDA_TRY(cudaGetLastError());
        gdn_conv_state_kernel<<<cuda_blocks(per_seq, 256), 256, 0, stream>>>(*a);
    }
    CUDA_TRY(cudaGetLastError());
    return 0;
}
