/*
 * neuron/cpu_ops.h — the CPU backend's numeric kernels: matrix products over every weight type,
 * norms, RoPE, activations, softmax and attention over a KV cache.
 *
 * Contract: activations are fp32; weights stay in their file's type (enum dtype) and are
 * dequantised on the fly inside the dot products. For the block-quantised types the activation
 * rows are first quantised to 16-bit integers (one scale per 32 elements for Q8_0/Q4_0/Q4_1, per
 * 256 for the K-quants), so the inner loops are integer multiply-adds as in llama.cpp, but with
 * about 1/128 of the rounding error of llama.cpp's 8-bit activations (which moves SmolLM2's
 * logits by ~4% and flips its greedy answers); F32, F16 and BF16 weights are multiplied with the
 * fp32 activations directly.
 * Two implementations of each kernel exist: portable C and AVX2/FMA/F16C (x86-64). The best one
 * the CPU supports is chosen on first use (__builtin_cpu_supports); cpu_ops_set_isa() switches
 * for tests. Both give the same results up to float summation order.
 * Matrix products take a thread pool (NULL runs on the caller) and split the rows among its
 * threads; the other kernels are single-threaded and meant to be called per token or per head.
 * No function here allocates memory that outlives the call.
 */
#ifndef CORTEX_NEURON_CPU_OPS_H
#define CORTEX_NEURON_CPU_OPS_H

#include "dtype.h"
#include "threadpool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cpu_isa {
    CPU_ISA_PORTABLE, /* plain C, any CPU */
    CPU_ISA_AVX2,     /* x86-64 with AVX2, FMA and F16C */
};

/* The kernel set in use. */
enum cpu_isa cpu_ops_isa(void);
/* "portable" / "avx2". */
const char *cpu_ops_isa_name(enum cpu_isa isa);
/* Whether this CPU (and this build) can run isa. */
bool cpu_ops_isa_supported(enum cpu_isa isa);
/* Selects the kernel set; returns -1 (and changes nothing) when the CPU lacks it. Not to be
 * called while other threads run kernels. */
int cpu_ops_set_isa(enum cpu_isa isa) __attribute__((warn_unused_result));

/* A weight matrix [rows, cols] of one type, rows contiguous and row_bytes apart. cols must be a
 * multiple of the type's block size. The data is borrowed (usually the model file's mapping). */
struct cpu_matrix {
    enum dtype type;
    int64_t rows, cols;
    size_t row_bytes;
    const void *data;
};

/* Fills a cpu_matrix for contiguous rows of type t. */
struct cpu_matrix cpu_matrix_make(enum dtype t, int64_t rows, int64_t cols, const void *data);

/* y = x W^T: x is [n_tok, w->cols] fp32, y is [n_tok, w->rows] (both row-major, contiguous).
 * Rows of W are split among the pool's threads; n_tok > 1 runs in token tiles so each block of
 * weight rows is read from memory once for many tokens. */
void cpu_matmul(struct threadpool *tp, const struct cpu_matrix *w, const float *x, int64_t n_tok,
                float *y);
/* Several products that share the input x (q/k/v, gate/up) as one parallel job: y[i] = x W_i^T,
 * each [n_tok, w[i]->rows]. All w[i] have the same cols. Saves a thread hand-off per matrix. */
void cpu_matmul_multi(struct threadpool *tp, int n, const struct cpu_matrix *const *w,
                      const float *x, int64_t n_tok, float *const *y);

/* Dot product of two fp32 vectors. */
float cpu_dot_f32(const float *a, const float *b, int64_t n);
/* y += a * x over n floats. */
void cpu_axpy_f32(float *y, float a, const float *x, int64_t n);
/* out[p] = scale * (q . rows[p]) for n_rows rows of dim floats, stride floats apart (attention
 * scores against cached keys). */
void cpu_dot_rows(float *out, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                  int64_t dim, float scale);
/* out = sum over p of w[p] * rows[p] (dim floats, overwritten; rows stride floats apart). */
void cpu_weighted_rows(float *out, const float *w, const float *rows, int64_t stride,
                       int64_t n_rows, int64_t dim);

/* RMSNorm of one row: y = x / sqrt(mean(x^2) + eps) * w, or * (1 + w) when zero_centred
 * (qwen3_5). w may be NULL (no scaling). y may equal x. */
void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps, bool zero_centred);

/* Rotary position embedding, in place, on n_heads heads of head_dim floats laid out one after
 * another, at position pos. Only the first rot_dim dims of each head rotate (partial rotary);
 * inv_freq[i] (rot_dim / 2 values) is the frequency of pair i. neox: pairs (i, i + rot_dim/2)
 * (HF rotate-half); otherwise pairs (2i, 2i + 1) (the interleaved layout of GGUF llama files). */
void cpu_rope(float *x, int n_heads, int head_dim, int rot_dim, const float *inv_freq, int64_t pos,
              bool neox);
/* The inverse frequencies theta^(-2i / rot_dim), i < rot_dim / 2, into inv_freq. */
void cpu_rope_inv_freq(float *inv_freq, int rot_dim, float theta);

/* gate[i] = silu(gate[i]) * up[i]. */
void cpu_silu_mul(float *gate, const float *up, int64_t n);
/* x[i] = silu(x[i]). */
void cpu_silu(float *x, int64_t n);
/* x[i] = x[i] * sigmoid(gate[i]). */
void cpu_mul_sigmoid(float *x, const float *gate, int64_t n);
/* In-place softmax of n values (max-subtracted, fp32). */
void cpu_softmax(float *x, int64_t n);

/* Causal attention of one sequence with grouped-query heads.
 *   q     [n_q, n_heads * head_dim]: queries of positions pos0 .. pos0 + n_q - 1
 *   k, v  the sequence's cache for this layer: position p's keys at k + p * kv_stride, n_kv_heads
 *         heads of head_dim floats, filled for positions 0 .. pos0 + n_q - 1
 *   out   [n_q, n_heads * head_dim]
 * Query head h reads KV head h / (n_heads / n_kv_heads); scores are scaled by scale. Work is
 * split over (query, head) pairs among the pool's threads. */
struct cpu_attention {
    const float *q;
    const float *k, *v;
    int64_t kv_stride; /* floats between consecutive positions in k and v */
    float *out;
    int64_t n_q, pos0;
    int n_heads, n_kv_heads, head_dim;
    float scale;
};
void cpu_attention(struct threadpool *tp, const struct cpu_attention *a);
/* n independent attentions (one per sequence of a batch) as one parallel job. */
void cpu_attention_batch(struct threadpool *tp, const struct cpu_attention *a, int n);

#endif
