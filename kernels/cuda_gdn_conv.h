/*
 * kernels/cuda_gdn_conv.h — the causal depthwise conv1d + SiLU of Gated DeltaNet layers on the
 * GPU (QWEN35.md step 3; CPU twin: gdn_conv()).
 *
 * Contract: n_seqs sequences of n_tok tokens each; row s * n_tok + t (x + row * x_stride, y +
 * row * y_stride) holds token t of sequence s, channels floats (the q,k,v part of the input
 * projection). y = silu(sum_j w[c][j] * window[t + j][c]), where the window is the sequence's
 * state (the inputs of its kernel - 1 previous tokens, oldest first) followed by its inputs.
 * Each sequence's state, [kernel - 1][channels] fp32 at state + s * state_stride (zeros for a
 * fresh sequence), is left holding its last kernel - 1 inputs. w is [channels][kernel] (the
 * checkpoint's conv1d.weight [channels, 1, kernel]); kernel is 2..8. n_tok == 1 is the decode
 * step and allows y == x; with n_tok > 1, y must not overlap x. All pointers are device memory;
 * the work is queued on stream.
 */
#ifndef CORTEX_KERNELS_CUDA_GDN_CONV_H
#define CORTEX_KERNELS_CUDA_GDN_CONV_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_gdn_conv {
    const float *x;
    int64_t x_stride;
    float *y;
    int64_t y_stride;
    float *state;
    int64_t state_stride;
    const float *w;
    int channels, kernel;
    int n_seqs;
    int64_t n_tok;
    const int32_t *slots; /* NULL, or [n_seqs] device array: sequence s keeps its state at
                             state + slots[s] * state_stride (the engine's slot pool) */
};

/* Queues the convolution and the state update; -1 (reason in cuda_last_error()) for bad shapes
 * or a launch error. */
int cuda_gdn_conv(const struct cuda_gdn_conv *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
