/*
 * neuron/cuda_model.h — the model on an NVIDIA GPU: the CUDA backend behind model.h.
 *
 * Contract: cuda_model_create() uploads every weight of an opened model_file (Llama family or
 * qwen3_5, any type the CPU backend reads) to one GPU as bf16 matrices and fp32 vectors. GGUF
 * block types are dequantised on the host a chunk of rows at a time into pinned staging buffers
 * whose copies overlap the next chunk's conversion, so host memory never holds a second copy
 * of the model. cuda_model_create_random() builds the same structure from a configuration
 * alone, with random weights generated on the GPU (benchmarks). The model_file must outlive
 * the model only during cuda_model_create(): nothing on the host points into it afterwards.
 *
 * Sequences live in slots: each slot owns, on the GPU, the fp32 conv and recurrent state per
 * Gated DeltaNet layer and a row of the block table. The attention layers' bf16 KV caches are
 * paged: one pool of blocks of kv_block positions (the same block id in every attention layer),
 * a free list, and per slot a table of the blocks that hold its positions 0, kv_block, ... in
 * any order. A forward call takes blocks from the free list as its sequences grow; releasing
 * or resetting a slot puts its blocks back, so many short sequences and a few long ones share
 * the memory. With options.cache_bytes the pool is reserved once at load and never grows (a
 * forward call that needs more blocks than are free fails: the cache is full); without, it
 * doubles when it runs dry. The slot pool grows on demand (in slots and in the positions a
 * table row covers, up to max_context), so a batch of sequences is any set of slots; the
 * kernels find each sequence's state through a device array of slot numbers, and its KV
 * positions through the device copy of the block table. Sequence lengths are the caller's
 * (model.c keeps them in struct model_seq).
 *
 * Prefix caching: a block is held by reference (each table row that lists it, each saved prefix
 * that lists it) and returns to the free list when the last reference goes. Saving a prefix
 * keeps a slot's first length (block-aligned) positions: references to their blocks, no copy,
 * plus a device copy of the slot's GDN conv and recurrent state (fp32, every linear
 * layer; 0 bytes for attention-only models). cuda_model_prefix_restore() points another slot's
 * table row at those blocks and copies the state back, so the slot continues as if it had read
 * the prefix itself; its next positions take fresh blocks, so shared blocks are never written
 * and any number of slots may restore one prefix at once. A restore marks the device copy of
 * the table stale: the next forward call uploads it before the kernels and graphs that read
 * it (graphs keep working: no pointer moves). Blocks held only by prefixes count as used: with
 * a reserved pool (cache_bytes), a forward call that finds too few free blocks fails as before
 * ("the KV cache is full"), and it is the caller's job to release prefixes (least recently
 * used first) and retry; a growable pool grows instead. Tensor parallelism: every rank does the
 * same bookkeeping (the same block ids and prefix handles), each keeping a snapshot of its own
 * share of the GDN state.
 *
 * cuda_model_forward() runs a batch as model_forward() does (model.h): all rows go through each
 * weight matrix together — the bf16 matrix-vector kernels for 1-3 rows (where they beat
 * cuBLASLt; the block's RMSNorm and the MLP's SwiGLU fused in), cuBLASLt (kernels/cuda_gemm)
 * above — while attention and the GDN recurrence run per sequence on its slot. A batch
 * of single tokens (a decode step) runs the whole model as one CUDA graph, captured once per
 * batch size and replayed with the step's token ids, positions and slots read from device
 * memory (graphs are recaptured after the pool or the scratch buffers move).
 * Tensor parallelism (options tp > 1, built with NCCL): the model spans devices[0 .. tp) of
 * one host as tp ranks, one NCCL communicator among them. Column-parallel q/k/v, gate/up and
 * GDN in_proj_qkv/z/b/a, row-parallel o_proj, down_proj and GDN out_proj each followed by one
 * fp32 all-reduce of the residual stream; attention split by KV heads (GQA groups whole), GDN
 * by key heads with their value heads (conv, gates, recurrence, gated norm stay local), the
 * lm_head by vocabulary rows (each rank copies its logits columns to the host), the embedding
 * replicated. Each rank uploads only its share. Every call runs all ranks at once, ranks 1..
 * on threads of their own; each rank captures its own decode graphs, all-reduces included.
 * All-reduces of up to 1 MiB (a decode step's [batch, hidden] fp32 up to batch 51 at hidden
 * 5120) take a one-shot kernel over NVLink peer memory (kernels/cuda_allreduce.h: one launch,
 * each rank reads the others' partials and adds them in rank order, so the ranks stay
 * bit-identical), larger ones (prefill) NCCL; without peer access between the GPUs, or with
 * options.no_custom_allreduce, every all-reduce is NCCL's.
 * tp must divide the KV heads, the linear key and value heads and the intermediate size.
 * Failures under tensor parallelism: the ranks agree before they queue a call's GPU work, so
 * a rank that fails before that (an allocation, a full KV pool) fails the call on every rank
 * with its message, nothing is queued, and the model stays usable. A rank that fails after
 * (a launch error, a GPU fault) leaves its peers waiting in a collective: they notice while
 * they wait for their streams, every rank then aborts (ncclCommAbort on its communicator and
 * the peer-memory kernels released), the call fails, and the model is broken: later calls
 * fail at once and the model can only be destroyed. A step that runs longer than 10 minutes
 * is treated as such a failure. NCCL_RUNTIME_CONNECT is set to 0 (all NCCL connections at
 * create) unless the environment sets it, so no NCCL call blocks on a peer's host thread.
 * Not covered: a rank whose host thread blocks in a kernel launch (a long prefill's launch
 * queue full) while its peers already failed. Logits are copied to the host only after that
 * wait: a copy to pageable memory blocks until the stream drains, so a rank sitting in it would
 * never notice a failed peer (it hung that way with NCCL for every all-reduce, where nothing
 * else releases the waiting collective).
 * Thread safety: one call at a time per model; the calling thread's current device is set to
 * the model's (first) GPU by every entry point.
 * Errors: -1 with a message in err naming the model and the failing CUDA call or argument.
 */
#ifndef CORTEX_NEURON_CUDA_MODEL_H
#define CORTEX_NEURON_CUDA_MODEL_H

#include "model.h"
#include "model_file.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cuda_model;

#define CUDA_MODEL_MAX_TP 8

struct cuda_model_options {
    int device; /* CUDA ordinal (tp <= 1) */
    int tp;     /* tensor-parallel degree; > 1: the model spans devices[0 .. tp) */
    int devices[CUDA_MODEL_MAX_TP];
    int64_t max_context;      /* tokens per sequence; < 1: the model's own (4096 when unknown) */
    bool no_graphs;           /* run decode steps launch by launch (tests compare both) */
    bool no_fusion;           /* separate norm and SwiGLU launches around the products of small
                            batches instead of cuda_matvec_rms (benchmarks compare both) */
    int kv_block;             /* positions per KV cache block; < 1: 32 */
    uint64_t cache_bytes;     /* > 0: the KV block pool reserved at load, all ranks together */
    bool no_custom_allreduce; /* tp > 1: every all-reduce through NCCL (benchmarks compare) */
};

/* Uploads mf's weights to the GPU. On success *out is the caller's, freed with
 * cuda_model_destroy(); mf may be closed afterwards. */
int cuda_model_create(const struct model_file *mf, const struct cuda_model_options *opt,
                      struct cuda_model **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* A model of configuration cfg with random weights drawn on the GPU from seed (matrices uniform
 * in +-1/sqrt(cols), norms near their identity, stable GDN decays). name labels messages. */
int cuda_model_create_random(const struct model_config *cfg, const char *name, uint64_t seed,
                             const struct cuda_model_options *opt, struct cuda_model **out,
                             char *err, size_t errlen) __attribute__((warn_unused_result));
/* Frees the model and its slots; accepts NULL. */
void cuda_model_destroy(struct cuda_model *g);

int64_t cuda_model_max_context(const struct cuda_model *g);
/* Bytes of weights on the GPUs (all ranks). */
uint64_t cuda_model_weight_bytes(const struct cuda_model *g);
/* The tensor-parallel degree (1: one GPU). */
int cuda_model_tp(const struct cuda_model *g);
/* How small all-reduces run: "peer" (the peer-memory kernel, NCCL above 1 MiB), "nccl", or
 * "none" (one GPU). */
const char *cuda_model_allreduce_name(const struct cuda_model *g);

/* Tests of the failure path only: rank's next forward call fails where f says, as a failed
 * allocation (before the call's GPU work is queued) or a failed launch (at its first
 * all-reduce, with the peers' work already queued) would. -1 for a rank outside the model. */
enum cuda_model_fault {
    CUDA_MODEL_FAULT_NONE,
    CUDA_MODEL_FAULT_PREPARE,
    CUDA_MODEL_FAULT_COLLECTIVE,
};
int cuda_model_inject_fault(struct cuda_model *g, int rank, enum cuda_model_fault f)
        __attribute__((warn_unused_result));
/* Bytes slot's state occupies now: its GDN state plus the KV blocks it holds, shared ones
 * included (all ranks). */
uint64_t cuda_model_slot_bytes(const struct cuda_model *g, int slot);

/* The KV block pool (rank 0's; every rank holds the same block ids). */
struct cuda_model_cache_stats {
    int block_size;        /* positions per block */
    int64_t blocks;        /* blocks in the pool */
    int64_t blocks_free;   /* on the free list */
    uint64_t block_allocs; /* blocks handed out since load (a reused block counts again) */
    uint64_t block_bytes;  /* one block over every attention layer and rank */
    int64_t blocks_shared; /* blocks with more than one reference (slots and prefixes) */
};
void cuda_model_cache_stats(const struct cuda_model *g, struct cuda_model_cache_stats *out);

/* A free slot with zeroed state and no KV blocks into *slot (the pool grows when all are
 * taken). */
int cuda_model_slot_acquire(struct cuda_model *g, int *slot, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* Returns a slot to the pool and drops its references to its KV blocks; ignores -1. */
void cuda_model_slot_release(struct cuda_model *g, int slot);
/* Zeroes the slot's GDN state and drops its references to its KV blocks (the sequence starts
 * over). */
int cuda_model_slot_reset(struct cuda_model *g, int slot, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* Makes room for at least n_slots slots of positions cached positions each, KV blocks
 * included unless the pool was reserved at load (benchmarks reserve up front; forward calls
 * grow the pools themselves). */
int cuda_model_reserve(struct cuda_model *g, int n_slots, int64_t positions, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* Positions per KV block: the granule at which saved prefixes share memory. */
int cuda_model_kv_block(const struct cuda_model *g);
/* Saves the first length tokens of the sequence in slot as a prefix: references to the KV
 * blocks of positions [0, length) (no copy) and a device copy of its GDN conv and recurrent
 * state. length must equal the slot's current length (the caller's n_past; checked as far as
 * the blocks the slot holds allow) and be a multiple of cuda_model_kv_block(). *prefix receives
 * a handle >= 0, freed with cuda_model_prefix_release(). -1 with a message (and *prefix -1)
 * when out of GPU memory or when the arguments are wrong; nothing is kept then. */
int cuda_model_prefix_save(struct cuda_model *g, int slot, int64_t length, int *prefix, char *err,
                           size_t errlen) __attribute__((warn_unused_result));
/* Makes the acquired slot (its previous tokens dropped, as by a reset) hold the prefix: its
 * block-table row points at the prefix's blocks (references taken) and its GDN state is a copy
 * of the snapshot. The caller then treats the sequence as holding the prefix's length tokens.
 * -1 with a message for an unknown prefix or slot, or a failed copy (then reset the slot
 * before using it again). */
int cuda_model_prefix_restore(struct cuda_model *g, int prefix, int slot, char *err, size_t errlen)
        __attribute__((warn_unused_result));
/* Drops the prefix's references and frees its snapshot; blocks no slot references go back to
 * the free list, while slots that restored it keep theirs and stay correct. Ignores -1 and
 * unknown handles. */
void cuda_model_prefix_release(struct cuda_model *g, int prefix);
/* Bytes the prefix keeps alive (all ranks): its GDN snapshot plus the KV blocks only it
 * references; 0 for an unknown handle. */
uint64_t cuda_model_prefix_bytes(const struct cuda_model *g, int prefix);

/* Appends tokens[i][0 .. n_tokens[i]) to the sequence in slots[i], which holds n_past[i]
 * tokens, for n_seqs distinct slots, and writes fp32 logits (vocab floats per row, rows as
 * `which` says) to the host array logits; logits NULL leaves them on the GPU (benchmarks).
 * Arguments are checked by model_forward(); this checks only the context limit. */
int cuda_model_forward(struct cuda_model *g, const int *slots, const int64_t *n_past,
                       const int32_t *const *tokens, const int64_t *n_tokens, int n_seqs,
                       enum model_logits which, float *logits, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Kernel classes of the profiling pass (neuron-bench). */
enum cuda_model_op {
    CUDA_MODEL_OP_MATMUL,    /* matrix products, lm_head included */
    CUDA_MODEL_OP_ATTENTION, /* q/k norms, RoPE, KV store, attention, output gate */
    CUDA_MODEL_OP_GDN,       /* conv, gates, recurrence, gated norm */
    CUDA_MODEL_OP_OTHER,     /* embedding, RMSNorms, SiLU-mul, biases */
    CUDA_MODEL_OP_COMM,      /* tensor-parallel all-reduces (with the wait for the other ranks) */
    CUDA_MODEL_OP_COUNT
};
/* Profiling on: forward calls run without graphs and time each kernel class with CUDA events
 * (adds an event per launch); ms[] receives the sums since profiling was switched on and
 * resets them. Off: graphs again. */
void cuda_model_profile(struct cuda_model *g, bool on);
void cuda_model_profile_read(struct cuda_model *g, double ms[CUDA_MODEL_OP_COUNT]);
/* "matmul", "attention", "gdn", "other", "allreduce". */
const char *cuda_model_op_name(enum cuda_model_op op);

#endif
