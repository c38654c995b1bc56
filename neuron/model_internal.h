/*
 * neuron/model_internal.h — the model's private structures, shared by model.c (binding,
 * sequences, the forward driver, the attention and MLP blocks) and the per-architecture layer
 * code (llama.c, qwen35.c).
 *
 * Shapes are written beside the fields: H hidden, hd head dim, Nq / Nkv attention heads,
 * Nk / Nv linear key / value heads, Dk / Dv their dims, I intermediate, Kc conv kernel,
 * n rows of the batch (tokens of all sequences). Owned fp32 vectors are freed by model_destroy().
 */
#ifndef CORTEX_NEURON_MODEL_INTERNAL_H
#define CORTEX_NEURON_MODEL_INTERNAL_H

#include "cpu_ops.h"
#include "model.h"
#include "threadpool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct model_layer {
    enum layer_kind kind;
    float *attn_norm; /* [H] input_layernorm */
    float *ffn_norm;  /* [H] post_attention_layernorm */
    /* attention */
    struct cpu_matrix wq;     /* [Nq * hd (* 2 with the output gate), H] */
    struct cpu_matrix wk;     /* [Nkv * hd, H] */
    struct cpu_matrix wv;     /* [Nkv * hd, H] */
    struct cpu_matrix wo;     /* [H, Nq * hd] */
    float *bq, *bk, *bv, *bo; /* biases or NULL */
    float *q_norm, *k_norm;   /* [hd] or NULL */
    /* Gated DeltaNet */
    struct cpu_matrix qkv; /* [2 * Nk * Dk + Nv * Dv, H] */
    struct cpu_matrix z;   /* [Nv * Dv, H] */
    struct cpu_matrix b;   /* [Nv, H] */
    struct cpu_matrix a;   /* [Nv, H] */
    struct cpu_matrix out; /* [H, Nv * Dv] */
    float *conv_w;         /* [conv_dim][Kc] */
    float *neg_a;          /* [Nv] -exp(A_log) */
    float *dt_bias;        /* [Nv] */
    float *lin_norm;       /* [Dv] gated RMSNorm weight (plain) */
    /* MLP */
    struct cpu_matrix gate, up; /* [I, H] */
    struct cpu_matrix down;     /* [H, I] */
};

/* Scratch buffers, grown on demand and kept between calls. */
enum model_buf {
    MODEL_BUF_X,     /* [n, H] residual stream */
    MODEL_BUF_XN,    /* [n, H] normed input of a block */
    MODEL_BUF_OUT,   /* [n, H] block output */
    MODEL_BUF_QFULL, /* [n, Nq * hd * 2] q projection (with gate) */
    MODEL_BUF_Q,     /* [n, Nq * hd] */
    MODEL_BUF_GATE,  /* [n, Nq * hd] */
    MODEL_BUF_K,     /* [n, Nkv * hd] */
    MODEL_BUF_V,     /* [n, Nkv * hd] */
    MODEL_BUF_ATT,   /* [n, Nq * hd] */
    MODEL_BUF_MLP_G, /* [n, I] */
    MODEL_BUF_MLP_U, /* [n, I] */
    MODEL_BUF_QKV,   /* [n, conv_dim] */
    MODEL_BUF_Z,     /* [n, Nv * Dv] */
    MODEL_BUF_B,     /* [n, Nv] */
    MODEL_BUF_A,     /* [n, Nv] */
    MODEL_BUF_G,     /* [n, Nv] */
    MODEL_BUF_BETA,  /* [n, Nv] */
    MODEL_BUF_CORE,  /* [n, Nv * Dv] */
    MODEL_BUF_COUNT
};

struct cuda_model;

struct model {
    const struct model_file *mf;
    struct cuda_model *gpu; /* the CUDA backend when the model runs on a GPU; then only mf,
                               cfg and max_context below are used */
    char device[64];        /* "cpu", "cuda:N" or "cuda:N,M,..." */
    struct model_config cfg;
    struct threadpool *tp;
    int64_t max_context;
    const struct model_tensor *embed; /* [V, H], rows dequantised on lookup */
    struct cpu_matrix lm_head;        /* [V, H] (the embedding when tied) */
    float *final_norm;                /* [H] */
    float *inv_freq;                  /* [rotary_dim / 2] */
    bool gdn_tiled; /* GGUF qwen35: value head p reads key head p % Nk (else p / r) */
    struct model_layer *layers;
    void **owned; /* aligned copies of unaligned matrices */
    size_t n_owned;
    float *buf[MODEL_BUF_COUNT];
    size_t buf_cap[MODEL_BUF_COUNT];
};

struct model_seq_layer {
    float *k, *v; /* [cap][Nkv * hd] attention cache */
    float *conv;  /* [Kc - 1][conv_dim] GDN conv inputs */
    float *ssm;   /* [Nv][Dk][Dv] GDN recurrent state */
};

struct model_seq {
    struct model *m;
    int gpu_slot;   /* the sequence's slot in the GPU model's pool; -1 on the CPU */
    int64_t n_past; /* tokens held */
    int64_t cap;    /* positions the KV caches have room for */
    struct model_seq_layer *layers;
};

/* The rows of one forward call: sequence i owns rows row0[i] .. row0[i] + n_tokens[i] - 1 and
 * its new tokens sit at positions seqs[i]->n_past + j. */
struct model_batch {
    int n_seqs;
    struct model_seq *const *seqs;
    const int64_t *n_tokens;
    const int64_t *row0;
    int64_t n_rows;
};

/* The canonical name of layer l's tensor suffix into the char array buf. */
#define LAYER_NAME(buf, l, suffix) snprintf(buf, sizeof(buf), "model.layers.%d.%s", l, suffix)

/* Writes "<model file>: <message>" into err; returns -1. */
int model_fail(const struct model *m, char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* A scratch buffer of at least n floats (contents undefined). */
float *model_buf(struct model *m, enum model_buf which, size_t n);
/* Looks up a matrix [rows, cols] by name; -1 with a message when absent, of another shape or of
 * an unsupported type. Unaligned data is copied (owned by m). */
int model_bind_matrix(struct model *m, const char *name, int64_t rows, int64_t cols,
                      struct cpu_matrix *out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* Looks up a vector of n elements (any shape with n elements) and returns an fp32 copy owned by
 * the caller. Absent: NULL and 0 when optional, else -1 with a message. */
int model_bind_vector(struct model *m, const char *name, int64_t n, bool optional, float **out,
                      char *err, size_t errlen) __attribute__((warn_unused_result));
/* RMSNorm of n rows of H floats with weight w, as the model's norms are (zero-centred or not). */
void model_norm_rows(const struct model *m, float *y, const float *x, const float *w,
                     int64_t n_rows);

/* Binds the attention weights of layer l (shared by llama and qwen3_5). */
int model_bind_attention(struct model *m, int l, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* Binds the MLP weights of layer l. */
int model_bind_mlp(struct model *m, int l, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* out = attention(xn) for every row of the batch, through each sequence's KV cache (written at
 * the new positions): q/k/v projections (+ biases), optional q/k norms and output gate, RoPE,
 * causal GQA, o projection. */
void model_block_attention(struct model *m, int l, const struct model_batch *b, const float *xn,
                           float *out);
/* out = down(silu(gate xn) * up xn) for n_rows rows. */
void model_block_mlp(struct model *m, int l, int64_t n_rows, const float *xn, float *out);

/* Per architecture: bind layer l's weights, and run layer l on the residual stream x [n, H]. */
int llama_bind_layer(struct model *m, int l, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void llama_forward_layer(struct model *m, int l, const struct model_batch *b, float *x);
int qwen35_bind_layer(struct model *m, int l, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void qwen35_forward_layer(struct model *m, int l, const struct model_batch *b, float *x);

#endif
