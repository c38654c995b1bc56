/*
 * neuron/gdn.h — Gated DeltaNet (the linear-attention layers of qwen3_5) on the CPU.
 *
 * Contract: the math of QWEN35.md steps 3-9, in fp32, one piece per function so the layer code
 * (qwen35.c) reads as the spec does and so future CUDA kernels have a CPU twin to be tested
 * against. The recurrent state of one value head is S [k_dim][v_dim], row-major fp32, owned by
 * the caller (one per value head per sequence). gdn_head_chunked() and gdn_head_recurrent()
 * compute the same thing: the first in chunks of GDN_CHUNK tokens with matrix products inside a
 * chunk (prefill), the second token by token (decode). No function keeps memory after it
 * returns.
 */
#ifndef CORTEX_NEURON_GDN_H
#define CORTEX_NEURON_GDN_H

#include <stdint.h>

#define GDN_CHUNK 64

/* Depthwise causal conv1d over time, then SiLU, in place.
 *   x      [n_tok] rows of channels floats, x_stride floats apart (the q,k,v projections)
 *   state  [kernel - 1][channels]: the inputs of the kernel - 1 previous tokens, oldest first;
 *          updated to the last kernel - 1 inputs (zeros for a fresh sequence)
 *   w      [channels][kernel] (the checkpoint's conv1d.weight [channels, 1, kernel]) */
void gdn_conv(float *x, int64_t n_tok, int64_t x_stride, int channels, float *state, const float *w,
              int kernel);

/* L2-normalises each of n_heads vectors of dim floats, then multiplies by scale:
 * x <- x * rsqrt(sum(x^2) + 1e-6) * scale. */
void gdn_l2norm(float *x, int n_heads, int dim, float scale);

/* Per value head h: beta[h] = sigmoid(b[h]); g[h] = neg_a[h] * softplus(a[h] + dt_bias[h]),
 * where neg_a = -exp(A_log). g is the log of the state decay (<= 0). */
void gdn_gates(const float *a, const float *b, const float *neg_a, const float *dt_bias,
               int n_v_heads, float *g, float *beta);

/* Gated RMSNorm of one head's output, in place: o <- w * o / sqrt(mean(o^2) + eps) * silu(z). */
void gdn_gated_norm(float *o, const float *z, const float *w, int dim, float eps);

/* One value head over n_tok tokens. Token t reads q + t * qk_stride, k + t * qk_stride (k_dim
 * floats, normalised, q already scaled), v + t * v_stride (v_dim), g[t * gb_stride],
 * beta[t * gb_stride], and writes v_dim floats at out + t * out_stride. state is read and left
 * holding the state after the last token. */
struct gdn_head {
    int64_t n_tok;
    int k_dim, v_dim;
    const float *q, *k;
    int64_t qk_stride;
    const float *v;
    int64_t v_stride;
    const float *g, *beta;
    int64_t gb_stride;
    float *out;
    int64_t out_stride;
    float *state;
};

/* Token by token: S <- exp(g) S; delta = beta (v - S^T k); S <- S + k delta^T; o = S^T q. */
void gdn_head_recurrent(const struct gdn_head *h);
/* The same result in chunks of chunk tokens (GDN_CHUNK for prefill): within a chunk the delta
 * rule's updates are solved as one triangular system (QWEN35.md "Chunked prefill"); only the
 * state passes from chunk to chunk. */
void gdn_head_chunked(const struct gdn_head *h, int chunk);

#endif
