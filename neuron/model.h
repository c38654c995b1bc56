/*
 * neuron/model.h — a model ready to run on the CPU or on a GPU, and the state of the sequences
 * it runs.
 *
 * Contract: model_create() binds the weights of an opened struct model_file (Llama family or
 * qwen3_5) and checks every tensor's presence and shape. On the CPU (the default device) the
 * weights are used in place, without copying (only norm weights, biases and other small vectors
 * become fp32 copies), and a thread pool starts; the model_file must outlive the model. On a
 * GPU (options.device "cuda:N", builds with CUDA only) the weights are uploaded to that GPU as
 * bf16 (neuron/cuda_model.h) and sequence state lives there too; the results are the same up
 * to bf16 rounding.
 * A struct model_seq is one sequence's state: the KV cache of each attention layer (fp32 on the
 * CPU, bf16 on a GPU; grown on demand up to max_context) and the conv and recurrent state of
 * each Gated DeltaNet layer.
 * model_forward() appends tokens to one or more sequences in one pass: the tokens of all
 * sequences go through each weight matrix together (so weights are read once per step for a
 * whole batch of decoding sequences), while attention and the GDN recurrence run per sequence
 * on its own state. A prefill is many tokens of one sequence; a decode step is one token of each
 * of several sequences; mixing is allowed.
 * Thread safety: one model_forward() at a time per model (it owns the pool and scratch
 * buffers); sequences belong to the model that created them.
 */
#ifndef CORTEX_NEURON_MODEL_H
#define CORTEX_NEURON_MODEL_H

#include "model_file.h"

#include <stddef.h>
#include <stdint.h>

struct model;
struct model_seq;

struct model_options {
    int threads;             /* threads for the pool, the caller included; < 1: all online CPUs */
    int64_t max_context;     /* tokens per sequence; < 1: the model's own max_context */
    const char *device;      /* NULL or "cpu": the CPU; "cuda:N": CUDA device N; "cuda:N,M,...":
                            tensor parallelism over those devices (CUDA builds with NCCL) */
    uint64_t kv_cache_bytes; /* > 0, on a GPU: the paged KV cache's pool, reserved at load
                                (cuda_model.h); 0: it grows on demand. The CPU ignores it. */
};

enum model_logits {
    MODEL_LOGITS_LAST, /* one row per sequence: its last token's logits */
    MODEL_LOGITS_ALL,  /* one row per token, sequences in order */
};

/* Binds mf's weights. On success *out is the caller's, freed with model_destroy(); on failure
 * returns -1 with a message naming the model file and the tensor or setting at fault (or the
 * device: unknown, absent in this build, out of memory). */
int model_create(const struct model_file *mf, const struct model_options *opt, struct model **out,
                 char *err, size_t errlen) __attribute__((warn_unused_result));
/* Frees the model (not the model_file); accepts NULL. Its sequences must be destroyed first. */
void model_destroy(struct model *m);
const struct model_config *model_config(const struct model *m);
/* Tokens per sequence this model accepts. */
int64_t model_max_context(const struct model *m);
/* Threads of the model's pool (1 on a GPU). */
int model_threads(const struct model *m);
/* The device the model runs on: "cpu", "cuda:N" or "cuda:N,M,...". */
const char *model_device(const struct model *m);
/* Bytes of weights the model holds on its GPU (0 on the CPU, where they stay mapped). */
uint64_t model_device_weight_bytes(const struct model *m);

/* A new, empty sequence of m; freed with model_seq_destroy() (accepts NULL). NULL only on a GPU
 * whose memory cannot hold another sequence's state. */
struct model_seq *model_seq_create(struct model *m);
void model_seq_destroy(struct model_seq *s);
/* Forgets every token (keeps the memory). */
void model_seq_reset(struct model_seq *s);
/* Tokens the sequence holds. */
int64_t model_seq_length(const struct model_seq *s);
/* Bytes the sequence's state occupies now: its KV caches as allocated (they grow on demand) plus
 * its Gated DeltaNet conv and recurrent state. */
uint64_t model_seq_memory_bytes(const struct model_seq *s);

/* Appends tokens[i][0 .. n_tokens[i]) to seqs[i] for each of n_seqs distinct sequences and
 * writes logits (vocab_size floats per row, rows as `which` says; the caller provides room).
 * Returns 0, or -1 with a message when a sequence would exceed max_context, a token id is out of
 * range, a count is not positive or a sequence appears twice; nothing changes then. */
int model_forward(struct model *m, struct model_seq *const *seqs, const int32_t *const *tokens,
                  const int64_t *n_tokens, int n_seqs, enum model_logits which, float *logits,
                  char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- saved prefixes (prefix caching) -----------------------------------------------------
 * A struct model_prefix is the state of a sequence after its first `length` tokens, kept apart
 * from any sequence so that later sequences whose prompts start with the same tokens can begin
 * from it instead of recomputing them. On the CPU it is a copy of the K and V rows [0, length)
 * of every attention layer and of every Gated DeltaNet layer's conv and recurrent state; on a
 * GPU the sequence's KV blocks are shared (reference counted, never written again) and only the
 * GDN state is copied (cuda_model.h). A prefix belongs to the model of the sequence it was saved
 * from and must be destroyed before that model; it is independent of the sequence afterwards.
 * Same threading rule as model_forward(): the caller serialises these calls with the passes. */
struct model_prefix;

/* Positions at which saved prefixes can be cut: the GPU's KV block size, 1 on the CPU. */
int model_prefix_granule(const struct model *m);
/* Saves s's current state (all model_seq_length(s) > 0 tokens, a multiple of the granule).
 * NULL with a message on failure (empty sequence, unaligned length, GPU out of memory). The
 * caller frees the prefix with model_prefix_destroy(). */
struct model_prefix *model_prefix_save(struct model_seq *s, char *err, size_t errlen);
/* s becomes the prefix's state (any previous tokens dropped); its length is the prefix's.
 * -1 with a message when p belongs to another model or the GPU refuses (s is then reset). */
int model_prefix_restore(struct model_seq *s, const struct model_prefix *p, char *err,
                         size_t errlen) __attribute__((warn_unused_result));
int64_t model_prefix_length(const struct model_prefix *p);
/* Bytes model_prefix_save(s) would copy now (CPU), so that callers can skip a save their budget
 * cannot hold before paying for it; 0 on a GPU, where saving shares the KV blocks. */
uint64_t model_prefix_save_bytes(const struct model_seq *s);
/* Bytes the prefix keeps alive (CPU: its copies; GPU: its GDN snapshot plus the KV blocks only
 * it references, which changes as sequences sharing its blocks come and go). */
uint64_t model_prefix_bytes(const struct model_prefix *p);
/* Frees the prefix (on a GPU, drops its block references); accepts NULL. */
void model_prefix_destroy(struct model_prefix *p);

/* The GPU's paged KV cache, for /metrics; all zero on the CPU. */
struct model_cache_stats {
    int block_size;        /* positions per block */
    int64_t blocks;        /* blocks in the pool */
    int64_t blocks_free;   /* on the free list */
    uint64_t block_allocs; /* blocks handed out since load */
    uint64_t block_bytes;  /* one block over every attention layer (and rank) */
};
void model_cache_stats(const struct model *m, struct model_cache_stats *out);

#endif
