/*
 * neuron/cuda_model.c — the forward pass on one NVIDIA GPU (see cuda_model.h).
 *
 * Data flow of cuda_model_forward(): token ids, positions and slots go to the GPU in one copy
 * -> embedding rows (x, fp32 [n, H]) -> per layer: RMSNorm + products (fp32 out; one
 * norm-fused launch for up to 3 rows, else the norm to bf16 then the products; the norms'
 * weights are folded into the matrices at upload) -> attention (q/k norms, RoPE and KV store
 * into the paged bf16 cache in one pass, attention, output gate to bf16) or Gated DeltaNet
 * (conv, then gates + recurrence + gated norm to bf16: one fused kernel at decode, chunked
 * for long prompts) -> out projection accumulated into x -> RMSNorm + gate/up + SiLU-mul to
 * bf16 (one launch for small batches) -> down accumulated into x -> final norm of the rows
 * whose logits are wanted -> lm_head -> fp32 logits -> host.
 * The residual stream stays fp32; every product reads bf16 activations and bf16 weights and
 * accumulates in fp32, which is what lets the same buffers feed both the matrix-vector kernel
 * (small batches) and cuBLAS (larger ones).
 *
 * Tensor parallelism (cuda_model.h): every rank is a struct cuda_model of its own whose cfg
 * holds its share of the heads, the intermediate size and the lm_head rows, so the pass above
 * runs unchanged on each; the row-parallel products write their partial sums into the residual
 * stream and cm_allreduce() sums them across the ranks: the peer-memory kernel
 * (kernels/cuda_allreduce) up to CM_AR_MAX_BYTES, NCCL above. A forward call's ranks meet once
 * before they queue GPU work (cm_tp_agree) and, when a rank fails after that, abort the
 * collectives instead of waiting for it (cm_tp_wait, cm_tp_fail).
 *
 * Paged KV cache (cuda_model.h): each attention layer's k_cache / v_cache is a pool of blocks
 * of kv_block positions; block ids are the same in every layer, so one host-side free list and
 * one block table ([slots][table_cap] int32, copied to the GPU when it changed, before the
 * step's kernels) serve them all. A forward call first gives each sequence the blocks its new
 * length needs (cm_seq_blocks); decode graphs capture the table's device pointer, which moves
 * only when the table grows (graphs are dropped then, as when the pools move).
 * Blocks carry reference counts (block_refs): a table row holding a block is one reference, a
 * saved prefix another; a block goes back to the free list when its count reaches 0. A saved
 * prefix (cm_prefix) is the list of its blocks plus a device copy of the slot's GDN state;
 * restoring it writes the blocks into a slot's row (marking the table dirty, so the next call
 * uploads it before any kernel or graph reads it) and copies the state back. Prefixes are
 * block-aligned, so a restored sequence's next token lands in a fresh block of its own and a
 * shared block is never written.
 *
 * Shapes as in model_internal.h: H hidden, hd head dim, Nq / Nkv heads, Nk / Nv linear key /
 * value heads, Dk / Dv their dims, I intermediate, Kc conv kernel, n rows of the batch.
 */
#include "cuda_model.h"

#include "cpu_ops.h"
#include "cuda_allreduce.h"
#include "cuda_attention.h"
#include "cuda_attn_prep.h"
#include "cuda_device.h"
#include "cuda_elementwise.h"
#include "cuda_embed.h"
#include "cuda_gemm.h"
#include "cuda_gdn_chunked.h"
#include "cuda_gdn_conv.h"
#include "cuda_gdn_decode.h"
#include "cuda_gdn_gated_norm.h"
#include "cuda_gdn_gates.h"
#include "cuda_gdn_recurrent.h"
#include "cuda_matvec.h"
#include "cuda_matvec_rms.h"
#include "cuda_random.h"
#include "cuda_rmsnorm.h"
#include "cuda_silu_mul.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef CORTEX_HAVE_NCCL
#include <nccl.h>
#endif

#define CM_STAGE_BYTES   (16u << 20) /* each of the two pinned upload buffers */
#define CM_MAX_GRAPH     256         /* decode batch sizes that get a graph */
#define CM_MAX_MARKS     8192        /* profiling events per forward */
#define CM_FIRST_CONTEXT 256         /* positions a fresh block table covers */
#define CM_KV_BLOCK      32          /* positions per KV cache block (options.kv_block 0) */
#define CM_FIRST_BLOCKS  64          /* blocks of a fresh growable pool */
/* Rows up to which products use the matrix-vector kernel rather than cuBLASLt (cuda_gemm.h:
 * the grouped kernel wins up to 3 tokens on an H100, cuBLASLt from 4 on). */
#define CM_MATVEC_MAX_ROWS CUDA_GEMM_MATVEC_MAX_N
/* Prompts from this many tokens take the chunked GDN prefill when they run alone (one sequence
 * of the call, or the only long one); shorter ones, and batches of equal-length prompts, the
 * token-by-token kernel (cuda_gdn_chunked.h: chunked 0.58 vs 0.99 ms for 1 x 512 tokens, but
 * 3.46 vs 2.94 ms for 8 x 512 run together). */
#define CM_GDN_CHUNKED_MIN_TOKENS CUDA_GDN_CHUNK
/* Decode batches up to this many sequences take the fused GDN step (cuda_gdn_decode: a block
 * per value head); larger ones the separate gates / recurrence / gated norm, whose four blocks
 * per head keep more loads in flight (neuron-bench, 27B shape, H200: GDN per step 0.70 vs
 * 0.88 ms at batch 1, 1.55 vs 1.53 at 8, 5.38 vs 4.05 at 32). */
#define CM_GDN_FUSED_MAX_SEQS 8
/* Tensor parallelism: all-reduces up to this size take the one-shot peer-memory kernel, larger
 * ones NCCL. A decode step's message is batch x hidden fp32 (20 KB per sequence at hidden
 * 5120): NCCL's ~11 us per call is latency, not bandwidth (docs/BENCHMARKS.md), and the
 * one-shot kernel reads the peers' whole partials, which stops paying for prefill-sized ones. */
#define CM_AR_MAX_BYTES (1u << 20)
/* A tensor-parallel step still running after this long counts as a failed rank. */
#define CM_TP_STEP_LIMIT_S 600.0
/* After a rank's failure, how long a rank's stream may take to finish by itself before the
 * rank counts as stuck in a collective and aborts its communicator. */
#define CM_TP_DRAIN_S 2.0
/* How long cm_tp_abort_all waits for the communicators' aborts before leaving the ones still
 * aborting behind (their threads detached, their resources leaked). */
#define CM_TP_ABORT_S 5.0

/* Where a rank is in a forward call under tensor parallelism (cm_tp_agree). */
enum cm_tp_stage {
    CM_TP_PREPARING, /* host work only: a failure here is reported at the agreement */
    CM_TP_REFUSED,   /* a rank failed before queueing: nothing queued anywhere */
    CM_TP_QUEUED,    /* GPU work is being queued: a failure now strands the peers */
    CM_TP_ABORTED,   /* this rank took part in aborting the group (cm_tp_fail) */
};

/* What the ranks of a tensor-parallel model share; rank 0's destroy frees it. */
struct cm_tp_group {
    pthread_barrier_t agree;        /* the ranks meet before queueing a call's GPU work */
    int prep_rc[CUDA_MODEL_MAX_TP]; /* each rank's word at the agreement */
    int failed;                     /* atomic: a rank failed after queueing: abort */
    struct cuda_allreduce *ar;      /* the peer-memory all-reduce, or NULL (NCCL only) */
    struct cuda_model **ranks;      /* rank 0's array */
};

/* A bf16 weight matrix [rows, cols] on the GPU, rows contiguous (nn.Linear's [out, in]). */
struct cm_mat {
    void *w;
    int64_t rows, cols;
};

struct cm_layer {
    enum layer_kind kind;
    float *attn_norm, *ffn_norm; /* [H] */
    /* attention */
    struct cm_mat wq, wk, wv, wo; /* [Nq*hd (*2 gated), H], [Nkv*hd, H] x2, [H, Nq*hd] */
    float *bq, *bk, *bv, *bo;     /* biases or NULL */
    float *q_norm, *k_norm;       /* [hd] or NULL */
    /* Gated DeltaNet */
    struct cm_mat qkv, z, b, a, out; /* [conv, H], [Nv*Dv, H], [Nv, H] x2, [H, Nv*Dv] */
    float *conv_w;                   /* [conv][Kc] */
    float *neg_a, *dt_bias;          /* [Nv] */
    float *lin_norm;                 /* [Dv] */
    /* MLP */
    struct cm_mat gate, up, down; /* [I, H] x2, [H, I] */
    /* KV block pool and GDN slot pool of this layer */
    void *k_cache, *v_cache; /* bf16 [blocks][kv_block][Nkv*hp] */
    float *conv_state;       /* [slots][(Kc-1) * conv] */
    float *ssm_state;        /* [slots][Nv][Dk][Dv] */
};

/* Scratch buffers on the GPU, sized for rows_cap rows (contents undefined between calls). */
enum cm_buf {
    CM_X,     /* f32 [n, H] residual stream */
    CM_XN,    /* bf16 [n, H] normed input of a block */
    CM_QF,    /* f32 [n, q rows] q projection (with gate) */
    CM_K,     /* f32 [n, Nkv*hd] */
    CM_V,     /* f32 [n, Nkv*hd] */
    CM_QP,    /* f32 [n, Nq*hp] normed, rotated q, heads zero-padded to head_pad (hp) */
    CM_ATT,   /* f32 [n, Nq*hp] attention output */
    CM_ATTB,  /* bf16 [n, Nq*hd] gated attention output */
    CM_G,     /* f32 [n, I] */
    CM_U,     /* f32 [n, I] */
    CM_GU,    /* bf16 [n, I] */
    CM_QKV,   /* f32 [n, conv] */
    CM_CONV,  /* f32 [n, conv] conv output (prefill) */
    CM_Z,     /* f32 [n, Nv*Dv] */
    CM_B,     /* f32 [n, Nv] */
    CM_A,     /* f32 [n, Nv] */
    CM_GG,    /* f32 [n, Nv] log decay */
    CM_BETA,  /* f32 [n, Nv] */
    CM_CORE,  /* f32 [n, Nv*Dv] (unfused path) */
    CM_COREB, /* bf16 [n, Nv*Dv] */
    CM_XO,    /* bf16 [n, H] final-normed rows */
    CM_INTS,  /* int32 [5][n]: ids, positions, row slots, sequence slots, lengths */
    CM_BUF_COUNT
};

/* A saved prefix: references to the KV blocks of its first length positions and a copy of the
 * GDN state after them. */
struct cm_prefix {
    bool used;
    int64_t length;
    int64_t n_blocks;
    int32_t *blocks; /* host [n_blocks] */
    float *state;    /* device: each GDN layer's conv state then recurrent state, in order */
    size_t state_bytes;
};

struct cuda_model {
    char name[256];
    struct model_config cfg; /* this rank's share of the heads, I and the lm_head rows */
    int device;
    /* Tensor parallelism: rank of tp; full is the whole model's configuration (cfg holds the
     * rank's heads, intermediate rows and vocab_size = its lm_head rows, from vocab_off). The
     * rank-0 model is the caller's handle; ranks[] (rank 0 only) holds all tp of them. */
    int tp, rank;
    struct model_config full;
    int64_t vocab_off;
    struct cuda_model **ranks;
#ifdef CORTEX_HAVE_NCCL
    ncclComm_t comm; /* NULL once aborted */
#endif
    struct cm_tp_group *grp;     /* tp > 1 */
    enum cm_tp_stage tp_stage;   /* of the call in progress */
    enum cuda_model_fault fault; /* injected by a test */
    int head_pad; /* head_dim rounded up to a size the attention kernels take (zero pad) */
    int64_t max_context;
    bool no_graphs, no_fusion;
    cudaStream_t stream;
    struct cuda_gemm_ctx *gemm; /* cuBLASLt products on stream */
    char errbuf[512];

    /* weights */
    void *embed;           /* bf16 [V, H] */
    struct cm_mat lm_head; /* the embedding when tied */
    float *final_norm;     /* [H] */
    float *inv_freq;       /* [rotary_dim / 2] */
    struct cm_layer *layers;
    void **allocs; /* every weight allocation, freed by destroy */
    size_t n_allocs;
    uint64_t weight_bytes;
    uint64_t seed; /* random models: the next tensor's seed */
    bool random;
    const struct model_file *mf; /* during create only */

    /* upload staging */
    void *stage[2];
    cudaEvent_t stage_done[2];
    float *row_tmp;

    /* Slot pool: a slot is a sequence; its GDN state sits at its index in each layer's
     * conv/ssm arrays, its KV positions in blocks of the attention layers' shared block pool,
     * found through its row of the block table (the same block id in every attention layer). */
    int slots_cap;
    int64_t ctx_cap; /* positions a block-table row covers: table_cap * kv_block */
    bool *slot_used;
    int kv_block;         /* positions per block */
    int64_t table_cap;    /* blocks per table row */
    int32_t *table;       /* host [slots_cap][table_cap]: block of each slot's i-th block */
    int32_t *table_dev;   /* its device copy, read by the attention kernels */
    bool table_dirty;     /* table changed since the last copy */
    int64_t *slot_blocks; /* [slots_cap] blocks each slot holds */
    int64_t blocks_cap;   /* blocks in each attention layer's pool */
    int32_t *free_blocks; /* [blocks_cap] stack of free block ids (lowest on top) */
    int64_t n_free;
    int32_t *block_refs;   /* [blocks_cap] table rows and prefixes holding each block */
    int64_t blocks_shared; /* blocks with more than one reference */
    bool blocks_fixed;     /* reserved at load (options.cache_bytes): never grows */
    uint64_t block_allocs; /* blocks handed out since load */

    /* Saved prefixes (cuda_model_prefix_save): handles index this table, the same on every
     * rank; each rank keeps its own snapshot of its share of the GDN state. */
    struct cm_prefix *prefixes;
    int prefixes_cap;

    /* scratch */
    void *buf[CM_BUF_COUNT];
    int64_t rows_cap;
    int32_t *ints_host; /* pinned mirror of CM_INTS */
    void *attn_work;
    size_t attn_work_bytes;
    float *logits; /* f32 [logits_cap, V]: only the rows whose logits are wanted */
    int64_t logits_cap;

    /* decode graphs, by batch size */
    cudaGraphExec_t graphs[CM_MAX_GRAPH + 1];

    /* profiling */
    bool profiling;
    cudaEvent_t marks[CM_MAX_MARKS + 1];
    enum cuda_model_op mark_op[CM_MAX_MARKS];
    int n_marks;
    double prof_ms[CUDA_MODEL_OP_COUNT];
};

/* ---- errors ------------------------------------------------------------------------------ */

static int cm_fail(struct cuda_model *g, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static int cm_fail(struct cuda_model *g, const char *fmt, ...)
{
    int n = snprintf(g->errbuf, sizeof(g->errbuf), "%s: ", g->name);
    if (n < 0 || (size_t)n >= sizeof(g->errbuf))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->errbuf + n, sizeof(g->errbuf) - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A CUDA runtime call's status: 0, or -1 with the call named in the model's error. */
static int cm_cuda(struct cuda_model *g, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    return cm_fail(g, "%s: %s", what, cudaGetErrorString(e));
}

/* A kernel entry point's status (reason in cuda_last_error()). */
static int cm_kernel(struct cuda_model *g, int rc, const char *what)
{
    if (rc == 0)
        return 0;
    return cm_fail(g, "%s: %s", what, cuda_last_error());
}

/* Copies the model's last error into the caller's buffer; returns -1. */
static int cm_report(const struct cuda_model *g, char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", g->errbuf);
    return -1;
}

#define CM_TRY(expr)                                                                               \
    do {                                                                                           \
        if ((expr) != 0)                                                                           \
            return -1;                                                                             \
    } while (0)

/* ---- profiling --------------------------------------------------------------------------- */

static void cm_mark(struct cuda_model *g, enum cuda_model_op op)
{
    if (!g->profiling || g->n_marks >= CM_MAX_MARKS)
        return;
    if (!g->marks[g->n_marks] && cudaEventCreate(&g->marks[g->n_marks]) != cudaSuccess)
        return;
    cudaEventRecord(g->marks[g->n_marks], g->stream);
    g->mark_op[g->n_marks++] = op;
}

/* Ends the forward's marks (the stream has been synchronised) and adds their times. */
static void cm_marks_collect(struct cuda_model *g)
{
    if (!g->profiling || g->n_marks == 0)
        return;
    int last = g->n_marks;
    if (!g->marks[last] && cudaEventCreate(&g->marks[last]) != cudaSuccess) {
        g->n_marks = 0;
        return;
    }
    cudaEventRecord(g->marks[last], g->stream);
    cudaEventSynchronize(g->marks[last]);
    for (int i = 0; i < last; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, g->marks[i], g->marks[i + 1]) == cudaSuccess)
            g->prof_ms[g->mark_op[i]] += ms;
    }
    g->n_marks = 0;
}

void cuda_model_profile(struct cuda_model *g, bool on)
{
    /* every rank runs without graphs; rank 0's times are read (its all-reduce marks include
     * the wait for the slowest rank) */
    for (int r = 0; r < g->tp; r++) {
        struct cuda_model *m = g->ranks ? g->ranks[r] : g;
        m->profiling = on;
        m->n_marks = 0;
        memset(m->prof_ms, 0, sizeof(m->prof_ms));
    }
}

void cuda_model_profile_read(struct cuda_model *g, double ms[CUDA_MODEL_OP_COUNT])
{
    memcpy(ms, g->prof_ms, sizeof(g->prof_ms));
    memset(g->prof_ms, 0, sizeof(g->prof_ms));
}

const char *cuda_model_op_name(enum cuda_model_op op)
{
    static const char *const names[CUDA_MODEL_OP_COUNT] = {"matmul", "attention", "gdn", "other",
                                                           "allreduce"};
    return (unsigned)op < CUDA_MODEL_OP_COUNT ? names[op] : "?";
}

/* ---- weights ----------------------------------------------------------------------------- */

static int cm_alloc_weight(struct cuda_model *g, size_t bytes, void **out)
{
    CM_TRY(cm_cuda(g, cudaMalloc(out, bytes ? bytes : 1), "cudaMalloc (weights)"));
    g->allocs = xrealloc(g->allocs, (g->n_allocs + 1) * sizeof(void *));
    g->allocs[g->n_allocs++] = *out;
    g->weight_bytes += bytes;
    return 0;
}

/* GGUF qwen35 files store the value heads tiled (model_file.h): stored head p is HF head
 * (p % Nk) * r + p / Nk. The GPU kernels read key head h / r (HF's grouping), so the upload
 * puts value heads back in HF order. A cm_perm names the span of a tensor's rows, columns or
 * elements that holds the value heads: heads groups of grp units from unit off. */
struct cm_perm {
    int64_t off, grp;
    int heads, k_heads;
};

/* An RMSNorm's weight folded into the columns of a matrix that reads the norm's output:
 * W[r][c] * (add + w[c]), add 1 for the zero-centred form. File weights are scaled on the host
 * before their one rounding to bf16 (host); random ones on the GPU after the fill (dev). */
struct cm_fold {
    const float *host, *dev;
    float add;
};

/* A rank's share of a tensor dimension under tensor parallelism: local index i is global index
 * off[k] + (i - the lengths of the segments before k) of the segment k it falls in. One segment
 * for contiguous shares (heads, intermediate rows, vocabulary rows, row-parallel columns); three
 * for GDN's in_proj_qkv and conv (the rank's q, k and v channels). NULL: the whole dimension. */
struct cm_slice {
    int n;
    int64_t off[3], len[3];
};

static int64_t cm_slice_src(const struct cm_slice *s, int64_t i)
{
    if (!s)
        return i;
    for (int k = 0; k < s->n; k++) {
        if (i < s->len[k])
            return s->off[k] + i;
        i -= s->len[k];
    }
    return -1; /* past the share: callers never ask */
}

static int64_t cm_slice_len(const struct cm_slice *s, int64_t whole)
{
    if (!s)
        return whole;
    int64_t n = 0;
    for (int k = 0; k < s->n; k++)
        n += s->len[k];
    return n;
}

/* This rank's equal contiguous share of a dimension of total units (callers pass whole heads'
 * rows, so a share never splits a head): NULL without tensor parallelism, else filled into *s. */
static const struct cm_slice *cm_part(const struct cuda_model *g, struct cm_slice *s, int64_t total)
{
    if (g->tp <= 1)
        return NULL;
    int64_t share = total / g->tp;
    *s = (struct cm_slice){.n = 1, .off = {share * g->rank}, .len = {share}};
    return s;
}

/* The stored unit that HF-ordered unit i comes from (p NULL: i itself). */
static int64_t cm_perm_src(const struct cm_perm *p, int64_t i)
{
    if (!p || i < p->off || i >= p->off + p->heads * p->grp)
        return i;
    int64_t u = i - p->off, h = u / p->grp, r = p->heads / p->k_heads;
    /* HF head h = kh * r + j is stored as head j * Nk + kh */
    return p->off + ((h % r) * p->k_heads + h / r) * p->grp + u % p->grp;
}

/* Where a tensor's rows and columns come from: the rank's share (rs, cs: rows / columns of
 * the HF-ordered tensor, NULL for all), then the stored order (rowp, colp: GGUF value heads,
 * NULL for HF order), and the norm weight folded into the columns (fold, NULL for none). */
struct cm_src {
    const struct cm_slice *rs, *cs;
    const struct cm_perm *rowp, *colp;
    const struct cm_fold *fold;
};

/* Converts local rows [r0, r0 + nr) of the share src->rs x src->cs of tensor t ([rows, t_cols],
 * any dtype) to bf16 at dst ([nr, cols]). */
static void cm_rows_to_bf16(struct cuda_model *g, const struct model_tensor *t, int64_t t_cols,
                            int64_t cols, int64_t r0, int64_t nr, uint16_t *dst,
                            const struct cm_src *src)
{
    size_t row_bytes = dtype_row_bytes(t->type, (size_t)t_cols);
    const char *data = (const char *)t->data;
    if (t->type == DTYPE_BF16 && !src->rowp && !src->colp && !src->fold && !src->cs &&
        (!src->rs || src->rs->n == 1)) {
        memcpy(dst, data + (size_t)cm_slice_src(src->rs, r0) * row_bytes, row_bytes * (size_t)nr);
        return;
    }
    for (int64_t r = 0; r < nr; r++) {
        const char *row =
                data + (size_t)cm_perm_src(src->rowp, cm_slice_src(src->rs, r0 + r)) * row_bytes;
        uint16_t *out = dst + r * cols;
        dtype_dequant_row(t->type, row, g->row_tmp, (size_t)t_cols);
        for (int64_t i = 0; i < cols; i++) {
            int64_t gi = cm_slice_src(src->cs, i);
            float v = g->row_tmp[cm_perm_src(src->colp, gi)];
            const struct cm_fold *fold = src->fold;
            out[i] = dtype_f32_to_bf16(fold ? v * (fold->add + fold->host[gi]) : v);
        }
    }
}

/* Uploads tensor t as bf16 through the two pinned staging buffers: while chunk k copies,
 * chunk k + 1 is converted into the other buffer. */
static int cm_upload_bf16(struct cuda_model *g, const struct model_tensor *t, int64_t t_cols,
                          int64_t rows, int64_t cols, const struct cm_src *src, void *dev)
{
    size_t row_out = (size_t)cols * 2;
    int64_t chunk = (int64_t)(CM_STAGE_BYTES / row_out);
    if (chunk < 1)
        return cm_fail(g, "tensor %s: rows of %lld elements exceed the staging buffer", t->name,
                       (long long)cols);
    g->row_tmp = xrealloc(g->row_tmp, sizeof(float) * (size_t)t_cols);
    int k = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk, k ^= 1) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        CM_TRY(cm_cuda(g, cudaEventSynchronize(g->stage_done[k]), "cudaEventSynchronize"));
        cm_rows_to_bf16(g, t, t_cols, cols, r0, nr, g->stage[k], src);
        CM_TRY(cm_cuda(g,
                       cudaMemcpyAsync((char *)dev + (size_t)r0 * row_out, g->stage[k],
                                       (size_t)nr * row_out, cudaMemcpyHostToDevice, g->stream),
                       "cudaMemcpyAsync (weights)"));
        CM_TRY(cm_cuda(g, cudaEventRecord(g->stage_done[k], g->stream), "cudaEventRecord"));
    }
    return 0;
}

/* A random matrix's share: the whole [rows, cols] drawn from the tensor's seed into a
 * temporary buffer (so every rank's share equals the same rows and columns of the one-GPU
 * model), then the rank's rows (segments of src->rs) and columns (one segment) copied out. */
static int cm_random_share(struct cuda_model *g, const char *name, int64_t rows, int64_t cols,
                           const struct cm_src *src, struct cm_mat *out)
{
    void *whole = NULL;
    uint64_t seed = g->seed++;
    CM_TRY(cm_cuda(g, cudaMalloc(&whole, (size_t)(rows * cols) * 2), "cudaMalloc (random)"));
    int rc = cm_kernel(g,
                       cuda_random_fill(DTYPE_BF16, whole, rows * cols, seed,
                                        1.0f / sqrtf((float)cols), g->stream),
                       name);
    int64_t c0 = cm_slice_src(src->cs, 0), r_local = 0;
    const struct cm_slice all = {.n = 1, .off = {0}, .len = {rows}};
    const struct cm_slice *rs = src->rs ? src->rs : &all;
    for (int k = 0; rc == 0 && k < rs->n; k++) {
        rc = cm_cuda(g,
                     cudaMemcpy2DAsync((char *)out->w + (size_t)(r_local * out->cols) * 2,
                                       (size_t)out->cols * 2,
                                       (const char *)whole + (size_t)(rs->off[k] * cols + c0) * 2,
                                       (size_t)cols * 2, (size_t)out->cols * 2, (size_t)rs->len[k],
                                       cudaMemcpyDeviceToDevice, g->stream),
                     "cudaMemcpy2D (random share)");
        r_local += rs->len[k];
    }
    if (rc == 0)
        rc = cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
    cudaFree(whole);
    return rc;
}

/* Binds matrix name (stored [rows, cols]) as bf16 on the GPU, the share and order src says
 * (cm_src): from the file, or random. */
static int cm_matrix_src(struct cuda_model *g, const char *name, int64_t rows, int64_t cols,
                         const struct cm_src *src, struct cm_mat *out)
{
    const struct cm_fold *fold = src->fold;
    out->rows = cm_slice_len(src->rs, rows), out->cols = cm_slice_len(src->cs, cols);
    if (g->random) {
        CM_TRY(cm_alloc_weight(g, (size_t)(out->rows * out->cols) * 2, &out->w));
        if (src->rs || src->cs) {
            CM_TRY(cm_random_share(g, name, rows, cols, src, out));
        } else {
            float scale = 1.0f / sqrtf((float)cols);
            CM_TRY(cm_kernel(
                    g,
                    cuda_random_fill(DTYPE_BF16, out->w, rows * cols, g->seed++, scale, g->stream),
                    name));
        }
        if (!fold)
            return 0;
        /* folds scale the columns of column-parallel matrices: never a column share */
        return cm_kernel(
                g, cuda_scale_cols(out->w, out->rows, out->cols, fold->dev, fold->add, g->stream),
                "cuda_scale_cols");
    }
    const struct model_tensor *t = model_file_tensor(g->mf, name);
    if (!t)
        return cm_fail(g, "tensor %s is missing", name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return cm_fail(g, "tensor %s has shape [%lld, %lld] (%d dims), expected [%lld, %lld]", name,
                       (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), t->ndim,
                       (long long)rows, (long long)cols);
    if ((unsigned)t->type >= DTYPE_COUNT || cols % (int64_t)dtype_block_elems(t->type) != 0)
        return cm_fail(g, "tensor %s: type %s with %lld columns is not supported", name,
                       dtype_name(t->type) ? dtype_name(t->type) : "?", (long long)cols);
    CM_TRY(cm_alloc_weight(g, (size_t)(out->rows * out->cols) * 2, &out->w));
    return cm_upload_bf16(g, t, cols, out->rows, out->cols, src, out->w);
}

static int cm_matrix(struct cuda_model *g, const char *name, int64_t rows, int64_t cols,
                     struct cm_mat *out)
{
    const struct cm_src src = {0};
    return cm_matrix_src(g, name, rows, cols, &src, out);
}

enum cm_vec_kind {
    CM_VEC_NORM,  /* a norm weight: random ones sit near the identity scale */
    CM_VEC_PLAIN, /* biases, conv weights, dt_bias */
    CM_VEC_NEG_A, /* linear_attn.A_log: stored as -exp(A_log) */
};

/* Binds vector name of n elements as fp32 on the GPU, element i from the file's element
 * cm_perm_src(perm, i) (perm may be NULL); with share, only the elements it names (the
 * rank's). Absent and optional: *out NULL. With host_out, the host copy of all n is handed to
 * the caller, who frees it (else freed here). */
static int cm_vector_perm(struct cuda_model *g, const char *name, int64_t n, bool optional,
                          enum cm_vec_kind kind, const struct cm_perm *perm,
                          const struct cm_slice *share, float **out, float **host_out)
{
    *out = NULL;
    float *host = NULL;
    int rc = -1;
    if (g->random) {
        if (optional)
            return 0;
        host = xmalloc(sizeof(float) * (size_t)n);
        uint64_t s = g->seed++ * 0x9E3779B97F4A7C15ull + 1;
        for (int64_t i = 0; i < n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            float u = (float)(s >> 40) / (float)(1u << 24) - 0.5f; /* [-0.5, 0.5) */
            if (kind == CM_VEC_NORM)
                host[i] = 0.2f * u + (g->cfg.norm_zero_centred ? 0.0f : 1.0f);
            else if (kind == CM_VEC_NEG_A)
                host[i] = -expf(u);
            else
                host[i] = u;
        }
    } else {
        const struct model_tensor *t = model_file_tensor(g->mf, name);
        if (!t) {
            if (optional)
                return 0;
            return cm_fail(g, "tensor %s is missing", name);
        }
        int64_t elems = 1;
        for (int i = 0; i < t->ndim; i++)
            elems *= t->shape[i];
        if (elems != n)
            return cm_fail(g, "tensor %s has %lld elements, expected %lld", name, (long long)elems,
                           (long long)n);
        if (t->type != DTYPE_F32 && t->type != DTYPE_F16 && t->type != DTYPE_BF16)
            return cm_fail(g, "tensor %s: type %s is not supported for a vector", name,
                           dtype_name(t->type) ? dtype_name(t->type) : "?");
        host = xmalloc(sizeof(float) * (size_t)n);
        dtype_dequant_row(t->type, t->data, host, (size_t)n);
        /* GGUF stores -exp(A_log) already; HF stores A_log */
        if (kind == CM_VEC_NEG_A && !t->gguf_layout)
            for (int64_t i = 0; i < n; i++)
                host[i] = -expf(host[i]);
        if (perm) {
            float *stored = host;
            host = xmalloc(sizeof(float) * (size_t)n);
            for (int64_t i = 0; i < n; i++)
                host[i] = stored[cm_perm_src(perm, i)];
            free(stored);
        }
    }
    void *dev = NULL;
    int64_t n_local = cm_slice_len(share, n);
    float *mine = host;
    if (share) {
        mine = xmalloc(sizeof(float) * (size_t)n_local);
        for (int64_t i = 0; i < n_local; i++)
            mine[i] = host[cm_slice_src(share, i)];
    }
    if (cm_alloc_weight(g, sizeof(float) * (size_t)n_local, &dev) ||
        cm_cuda(g, cudaMemcpy(dev, mine, sizeof(float) * (size_t)n_local, cudaMemcpyHostToDevice),
                "cudaMemcpy (vector)")) {
        if (mine != host)
            free(mine);
        goto out;
    }
    if (mine != host)
        free(mine);
    *out = dev;
    rc = 0;
    if (host_out) {
        *host_out = host;
        host = NULL;
    }
out:
    free(host);
    return rc;
}

static int cm_vector(struct cuda_model *g, const char *name, int64_t n, bool optional,
                     enum cm_vec_kind kind, float **out)
{
    return cm_vector_perm(g, name, n, optional, kind, NULL, NULL, out, NULL);
}

/* A vector split like the rows of the matrix it belongs to (share NULL: whole). */
static int cm_vector_share(struct cuda_model *g, const char *name, int64_t n, bool optional,
                           enum cm_vec_kind kind, const struct cm_slice *share, float **out)
{
    return cm_vector_perm(g, name, n, optional, kind, NULL, share, out, NULL);
}

#define CM_NAME(buf, l, suffix) snprintf(buf, sizeof(buf), "model.layers.%d.%s", l, suffix)

/* Tensor parallelism splits attention by KV heads: a rank owns n_kv_heads / tp of them and
 * their query heads (GQA groups stay whole), i.e. equal contiguous row shares of q/k/v (the
 * gated q keeps each head's [query | gate] rows together) and the matching columns of o_proj.
 * o_proj's bias is added by rank 0 alone (the partial sums are all-reduced). */
static int cm_bind_attention(struct cuda_model *g, int l, const struct cm_fold *fold)
{
    const struct model_config *c = &g->full;
    struct cm_layer *ly = &g->layers[l];
    int64_t H = c->hidden, hd = c->head_dim;
    int64_t q_rows = (int64_t)c->n_heads * hd * (c->attn_output_gate ? 2 : 1);
    int64_t kv_rows = (int64_t)c->n_kv_heads * hd;
    struct cm_slice sq, skv, so;
    const struct cm_slice *pq = cm_part(g, &sq, q_rows), *pkv = cm_part(g, &skv, kv_rows);
    const struct cm_slice *po = cm_part(g, &so, (int64_t)c->n_heads * hd);
    const struct cm_src q_src = {.rs = pq, .fold = fold}, kv_src = {.rs = pkv, .fold = fold};
    const struct cm_src o_src = {.cs = po};
    char n[160];
    CM_NAME(n, l, "self_attn.q_proj.weight");
    CM_TRY(cm_matrix_src(g, n, q_rows, H, &q_src, &ly->wq));
    CM_NAME(n, l, "self_attn.k_proj.weight");
    CM_TRY(cm_matrix_src(g, n, kv_rows, H, &kv_src, &ly->wk));
    CM_NAME(n, l, "self_attn.v_proj.weight");
    CM_TRY(cm_matrix_src(g, n, kv_rows, H, &kv_src, &ly->wv));
    CM_NAME(n, l, "self_attn.o_proj.weight");
    CM_TRY(cm_matrix_src(g, n, H, (int64_t)c->n_heads * hd, &o_src, &ly->wo));
    CM_NAME(n, l, "self_attn.q_proj.bias");
    CM_TRY(cm_vector_share(g, n, q_rows, !c->attn_qkv_bias, CM_VEC_PLAIN, pq, &ly->bq));
    CM_NAME(n, l, "self_attn.k_proj.bias");
    CM_TRY(cm_vector_share(g, n, kv_rows, !c->attn_qkv_bias, CM_VEC_PLAIN, pkv, &ly->bk));
    CM_NAME(n, l, "self_attn.v_proj.bias");
    CM_TRY(cm_vector_share(g, n, kv_rows, !c->attn_qkv_bias, CM_VEC_PLAIN, pkv, &ly->bv));
    CM_NAME(n, l, "self_attn.o_proj.bias");
    CM_TRY(cm_vector(g, n, H, true, CM_VEC_PLAIN, &ly->bo));
    if (g->rank > 0)
        ly->bo = NULL; /* still bound above: the random models' seeds stay in step */
    CM_NAME(n, l, "self_attn.q_norm.weight");
    CM_TRY(cm_vector(g, n, hd, !c->attn_qk_norm, CM_VEC_NORM, &ly->q_norm));
    CM_NAME(n, l, "self_attn.k_norm.weight");
    return cm_vector(g, n, hd, !c->attn_qk_norm, CM_VEC_NORM, &ly->k_norm);
}

/* Tensor parallelism splits GDN by key heads: a rank owns lin_k_heads / tp key heads and the
 * value heads that read them (consecutive groups of r), so its in_proj_qkv rows are its q, k
 * and v channels (three segments, also of the conv weights), its z/b/a rows, A_log and dt_bias
 * contiguous shares, and its out_proj columns its value heads': conv, gates, recurrence and
 * gated norm stay on the rank. */
static int cm_bind_gdn(struct cuda_model *g, int l, const struct cm_fold *fold)
{
    const struct model_config *c = &g->full;
    struct cm_layer *ly = &g->layers[l];
    int64_t H = c->hidden, Nv = c->lin_v_heads, vdim = Nv * c->lin_v_dim;
    int64_t conv = 2 * (int64_t)c->lin_k_heads * c->lin_k_dim + vdim;
    char n[160];
    if (c->lin_k_heads < 1 || c->lin_v_heads % c->lin_k_heads != 0 || c->lin_k_dim < 1 ||
        c->lin_k_dim > CUDA_GDN_MAX_K_DIM || c->lin_v_dim < 1 || c->lin_conv_kernel < 2)
        return cm_fail(g,
                       "linear attention configuration not supported on the GPU (key heads "
                       "%d, value heads %d, dims %d/%d, conv kernel %d)",
                       c->lin_k_heads, c->lin_v_heads, c->lin_k_dim, c->lin_v_dim,
                       c->lin_conv_kernel);
    int64_t qk = 2 * (int64_t)c->lin_k_heads * c->lin_k_dim, Kc = c->lin_conv_kernel;
    bool tiled = false; /* GGUF value heads in tiled order: reordered on upload */
    if (!g->random) {
        CM_NAME(n, l, "linear_attn.in_proj_qkv.weight");
        const struct model_tensor *t = model_file_tensor(g->mf, n);
        tiled = t && t->gguf_layout && c->lin_v_heads != c->lin_k_heads;
    }
    int Nk = c->lin_k_heads, Dk = c->lin_k_dim, Dv = c->lin_v_dim;
    const struct cm_perm p_qkv = {qk, Dv, (int)Nv, Nk}, p_head = {0, Dv, (int)Nv, Nk};
    const struct cm_perm p_one = {0, 1, (int)Nv, Nk}, p_conv = {qk * Kc, Dv * Kc, (int)Nv, Nk};
    /* the rank's shares: q, k, v channels (rows of qkv, conv channels), value heads */
    struct cm_slice s_qkv, s_conv, s_vd, s_nv;
    const struct cm_slice *p_vd = cm_part(g, &s_vd, vdim), *p_nv = cm_part(g, &s_nv, Nv);
    const struct cm_slice *ps_qkv = NULL, *ps_conv = NULL;
    if (g->tp > 1) {
        int64_t kd = (int64_t)Nk * Dk / g->tp, vd = vdim / g->tp;
        s_qkv = (struct cm_slice){
                .n = 3,
                .off = {kd * g->rank, (int64_t)Nk * Dk + kd * g->rank, qk + vd * g->rank},
                .len = {kd, kd, vd}};
        s_conv = s_qkv;
        for (int k = 0; k < 3; k++)
            s_conv.off[k] *= Kc, s_conv.len[k] *= Kc;
        ps_qkv = &s_qkv, ps_conv = &s_conv;
    }
#define CM_TILED(p) (tiled ? &(p) : NULL)
    const struct cm_src src_qkv = {.rs = ps_qkv, .rowp = CM_TILED(p_qkv), .fold = fold};
    const struct cm_src src_z = {.rs = p_vd, .rowp = CM_TILED(p_head), .fold = fold};
    const struct cm_src src_ba = {.rs = p_nv, .rowp = CM_TILED(p_one), .fold = fold};
    const struct cm_src src_out = {.cs = p_vd, .colp = CM_TILED(p_head)};
    CM_NAME(n, l, "linear_attn.in_proj_qkv.weight");
    CM_TRY(cm_matrix_src(g, n, conv, H, &src_qkv, &ly->qkv));
    CM_NAME(n, l, "linear_attn.in_proj_z.weight");
    CM_TRY(cm_matrix_src(g, n, vdim, H, &src_z, &ly->z));
    CM_NAME(n, l, "linear_attn.in_proj_b.weight");
    CM_TRY(cm_matrix_src(g, n, Nv, H, &src_ba, &ly->b));
    CM_NAME(n, l, "linear_attn.in_proj_a.weight");
    CM_TRY(cm_matrix_src(g, n, Nv, H, &src_ba, &ly->a));
    CM_NAME(n, l, "linear_attn.out_proj.weight");
    CM_TRY(cm_matrix_src(g, n, H, vdim, &src_out, &ly->out));
    CM_NAME(n, l, "linear_attn.conv1d.weight");
    CM_TRY(cm_vector_perm(g, n, conv * Kc, false, CM_VEC_PLAIN, CM_TILED(p_conv), ps_conv,
                          &ly->conv_w, NULL));
    CM_NAME(n, l, "linear_attn.dt_bias");
    CM_TRY(cm_vector_perm(g, n, Nv, false, CM_VEC_PLAIN, CM_TILED(p_one), p_nv, &ly->dt_bias,
                          NULL));
    CM_NAME(n, l, "linear_attn.norm.weight");
    CM_TRY(cm_vector(g, n, c->lin_v_dim, false, CM_VEC_NORM, &ly->lin_norm));
    CM_NAME(n, l, "linear_attn.A_log");
    return cm_vector_perm(g, n, Nv, false, CM_VEC_NEG_A, CM_TILED(p_one), p_nv, &ly->neg_a, NULL);
#undef CM_TILED
}

/* The two norms' weights go into the columns of the products that read them, so the forward
 * pass normalises without a weight: W (x_hat * g) = (W diag(g)) x_hat. That is what lets
 * cuda_matvec_rms fuse the norm into the products (its rows need only the scale 1 / rms(x),
 * which every warp computes from the x it reads anyway). The norm vectors stay on the GPU
 * unused, except as the source of the random models' folds. */
static int cm_bind_layer(struct cuda_model *g, int l)
{
    const struct model_config *c = &g->full;
    struct cm_layer *ly = &g->layers[l];
    char n[160];
    float *attn_host = NULL, *ffn_host = NULL;
    float add = c->norm_zero_centred ? 1.0f : 0.0f;
    int rc = -1;
    ly->kind = c->arch == MODEL_ARCH_QWEN3_5 ? c->layer_kinds[l] : LAYER_KIND_ATTENTION;
    CM_NAME(n, l, "input_layernorm.weight");
    if (cm_vector_perm(g, n, c->hidden, false, CM_VEC_NORM, NULL, NULL, &ly->attn_norm, &attn_host))
        goto out;
    CM_NAME(n, l, "post_attention_layernorm.weight");
    if (cm_vector_perm(g, n, c->hidden, false, CM_VEC_NORM, NULL, NULL, &ly->ffn_norm, &ffn_host))
        goto out;
    struct cm_fold fa = {attn_host, ly->attn_norm, add}, ff = {ffn_host, ly->ffn_norm, add};
    if (ly->kind == LAYER_KIND_LINEAR_ATTENTION ? cm_bind_gdn(g, l, &fa)
                                                : cm_bind_attention(g, l, &fa))
        goto out;
    /* MLP under tensor parallelism: a share of the intermediate rows of gate/up, the same
     * columns of down */
    struct cm_slice si;
    const struct cm_slice *pi = cm_part(g, &si, c->intermediate);
    const struct cm_src gu_src = {.rs = pi, .fold = &ff}, down_src = {.cs = pi};
    CM_NAME(n, l, "mlp.gate_proj.weight");
    if (cm_matrix_src(g, n, c->intermediate, c->hidden, &gu_src, &ly->gate))
        goto out;
    CM_NAME(n, l, "mlp.up_proj.weight");
    if (cm_matrix_src(g, n, c->intermediate, c->hidden, &gu_src, &ly->up))
        goto out;
    CM_NAME(n, l, "mlp.down_proj.weight");
    rc = cm_matrix_src(g, n, c->hidden, c->intermediate, &down_src, &ly->down);
out:
    free(attn_host);
    free(ffn_host);
    return rc;
}

/* Under tensor parallelism the embedding is replicated (a step reads only its n rows, so the
 * copy costs memory, not time, and saves an all-reduce) and the lm_head is split by
 * vocabulary rows: each rank writes its columns of the logits straight to the host. */
static int cm_bind_globals(struct cuda_model *g)
{
    const struct model_config *c = &g->full;
    struct cm_mat emb;
    CM_TRY(cm_matrix(g, "model.embed_tokens.weight", c->vocab_size, c->hidden, &emb));
    g->embed = emb.w;
    bool own_head =
            g->random ? !c->tie_embeddings : model_file_tensor(g->mf, "lm_head.weight") != NULL;
    if (!own_head && !c->tie_embeddings)
        return cm_fail(g, "tensor lm_head.weight is missing (embeddings not tied)");
    struct cm_slice sv = {.n = 1, .off = {g->vocab_off}, .len = {g->cfg.vocab_size}};
    const struct cm_src head_src = {.rs = g->tp > 1 ? &sv : NULL};
    if (own_head) {
        CM_TRY(cm_matrix_src(g, "lm_head.weight", c->vocab_size, c->hidden, &head_src,
                             &g->lm_head));
    } else if (g->tp > 1) {
        g->lm_head = (struct cm_mat){.rows = g->cfg.vocab_size, .cols = c->hidden};
        size_t bytes = (size_t)(g->lm_head.rows * c->hidden) * 2;
        CM_TRY(cm_alloc_weight(g, bytes, &g->lm_head.w));
        CM_TRY(cm_cuda(g,
                       cudaMemcpyAsync(g->lm_head.w,
                                       (const char *)emb.w + (size_t)(g->vocab_off * c->hidden) * 2,
                                       bytes, cudaMemcpyDeviceToDevice, g->stream),
                       "cudaMemcpy (tied lm_head share)"));
    } else {
        g->lm_head = emb;
    }
    CM_TRY(cm_vector(g, "model.norm.weight", c->hidden, false, CM_VEC_NORM, &g->final_norm));
    float *inv = xmalloc(sizeof(float) * (size_t)(c->rotary_dim / 2));
    cpu_rope_inv_freq(inv, c->rotary_dim, c->rope_theta); /* the CPU backend's, bit for bit */
    void *dev = NULL;
    int rc = cm_alloc_weight(g, sizeof(float) * (size_t)(c->rotary_dim / 2), &dev);
    if (rc == 0)
        rc = cm_cuda(g,
                     cudaMemcpy(dev, inv, sizeof(float) * (size_t)(c->rotary_dim / 2),
                                cudaMemcpyHostToDevice),
                     "cudaMemcpy (rope)");
    free(inv);
    g->inv_freq = dev;
    return rc;
}

/* ---- create / destroy -------------------------------------------------------------------- */

static int cm_check_config(struct cuda_model *g)
{
    const struct model_config *c = &g->cfg;
    if (c->arch != MODEL_ARCH_LLAMA && c->arch != MODEL_ARCH_QWEN3_5)
        return cm_fail(g, "architecture %s is not supported by the CUDA backend", c->arch_name);
    if (c->n_layers < 1 || c->n_layers > MODEL_MAX_LAYERS || c->hidden < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0 || c->rotary_dim < 2 ||
        c->rotary_dim > c->head_dim || c->vocab_size < 1 || c->head_dim < 2 || c->head_dim > 256)
        return cm_fail(g,
                       "attention configuration not supported on the GPU (heads %d/%d, head "
                       "dim %d (at most 256), rotary dim %d)",
                       c->n_heads, c->n_kv_heads, c->head_dim, c->rotary_dim);
    /* Other head sizes run zero-padded to the next one the kernels take: the zeros add nothing
     * to the scores or the outputs (the tiny test models have heads of 16). */
    g->head_pad = 32;
    while (g->head_pad < c->head_dim)
        g->head_pad *= 2;
    return 0;
}

static uint64_t cm_block_bytes(const struct cuda_model *g);
static int cm_blocks_grow(struct cuda_model *g, int64_t blocks);

static int cm_start(struct cuda_model *g, const struct cuda_model_options *opt)
{
    g->no_graphs = opt && opt->no_graphs;
    g->no_fusion = opt && opt->no_fusion;
    g->max_context = opt && opt->max_context > 0 ? opt->max_context : g->cfg.max_context;
    if (g->max_context < 1)
        g->max_context = 4096;
    g->kv_block = opt && opt->kv_block > 0 ? opt->kv_block : CM_KV_BLOCK;
    CM_TRY(cm_check_config(g));
    CM_TRY(cm_cuda(g, cudaSetDevice(g->device), "cudaSetDevice"));
    CM_TRY(cm_cuda(g, cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking),
                   "cudaStreamCreate"));
    g->gemm = cuda_gemm_ctx_create(g->stream);
    if (!g->gemm)
        return cm_fail(g, "cuda_gemm_ctx_create: %s", cuda_last_error());
    for (int k = 0; k < 2; k++) {
        CM_TRY(cm_cuda(g, cudaMallocHost(&g->stage[k], CM_STAGE_BYTES), "cudaMallocHost"));
        CM_TRY(cm_cuda(g, cudaEventCreateWithFlags(&g->stage_done[k], cudaEventDisableTiming),
                       "cudaEventCreate"));
    }
    g->layers = xcalloc((size_t)g->cfg.n_layers, sizeof(struct cm_layer));
    CM_TRY(cm_bind_globals(g));
    for (int l = 0; l < g->cfg.n_layers; l++)
        CM_TRY(cm_bind_layer(g, l));
    CM_TRY(cm_cuda(g, cudaStreamSynchronize(g->stream), "upload"));
    /* the staging buffers are only for the upload */
    for (int k = 0; k < 2; k++) {
        cudaFreeHost(g->stage[k]);
        g->stage[k] = NULL;
    }
    free(g->row_tmp);
    g->row_tmp = NULL;
    /* the KV block pool reserved once (every rank holds the same block ids, each its share) */
    uint64_t block = cm_block_bytes(g) * (uint64_t)g->tp;
    if (opt && opt->cache_bytes > 0 && block > 0) {
        int64_t blocks = (int64_t)(opt->cache_bytes / block);
        if (blocks < 1)
            return cm_fail(g, "a KV cache of %llu bytes holds no block of %d positions",
                           (unsigned long long)opt->cache_bytes, g->kv_block);
        if (blocks > INT32_MAX)
            blocks = INT32_MAX;
        CM_TRY(cm_blocks_grow(g, blocks));
        g->blocks_fixed = true;
    }
    return 0;
}

/* ---- tensor-parallel ranks --------------------------------------------------------------- */

/* One rank's share of a call run by cm_on_ranks(). */
struct cm_job {
    struct cuda_model *g;
    int (*fn)(struct cuda_model *, void *);
    void *arg;
    int rc;
};

static void *cm_job_main(void *p)
{
    struct cm_job *j = p;
    j->rc = cm_cuda(j->g, cudaSetDevice(j->g->device), "cudaSetDevice");
    if (j->rc == 0)
        j->rc = j->fn(j->g, j->arg);
    return NULL;
}

/* Runs fn(rank, arg) on every rank at once: ranks 1.. on threads of their own, rank 0 on the
 * calling thread, each with its device current. One thread per GPU keeps each rank's forward
 * pass the one-GPU code path, graphs included: every rank captures its own graph (thread-local
 * capture) with its NCCL calls in it, and the collectives meet on the GPUs; one host thread
 * driving all streams would have to interleave the ranks layer by layer. The threads live for
 * one call (tens of microseconds against a step of milliseconds). Returns 0, or -1 with the
 * first failing rank's message in g's error. */
static int cm_on_ranks(struct cuda_model *g, int (*fn)(struct cuda_model *, void *), void *arg)
{
    if (g->tp <= 1)
        return fn(g, arg);
    struct cm_job jobs[CUDA_MODEL_MAX_TP];
    pthread_t th[CUDA_MODEL_MAX_TP];
    bool started[CUDA_MODEL_MAX_TP] = {false};
    for (int r = 0; r < g->tp; r++)
        jobs[r] = (struct cm_job){.g = g->ranks[r], .fn = fn, .arg = arg, .rc = -1};
    for (int r = 1; r < g->tp; r++)
        started[r] = pthread_create(&th[r], NULL, cm_job_main, &jobs[r]) == 0;
    cm_job_main(&jobs[0]);
    int rc = 0;
    for (int r = 0; r < g->tp; r++) {
        if (r > 0 && started[r])
            pthread_join(th[r], NULL);
        else if (r > 0)
            cm_fail(jobs[r].g, "pthread_create failed");
        if (jobs[r].rc && rc == 0) {
            rc = -1;
            if (r > 0)
                snprintf(g->errbuf, sizeof(g->errbuf), "rank %d: %.480s", r, jobs[r].g->errbuf);
        }
    }
    return rc;
}

/* This rank's share of the full configuration: heads, intermediate rows, lm_head rows. */
static int cm_rank_config(struct cuda_model *g)
{
    const struct model_config *f = &g->full;
    struct model_config *c = &g->cfg;
    int t = g->tp;
    bool lin = f->arch == MODEL_ARCH_QWEN3_5;
    if (f->n_kv_heads % t != 0 || f->n_heads % t != 0 || f->intermediate % t != 0 ||
        (lin && (f->lin_k_heads % t != 0 || f->lin_v_heads % t != 0)))
        return cm_fail(g,
                       "tensor-parallel degree %d does not divide the heads (%d/%d, linear "
                       "%d/%d) and the intermediate size %lld",
                       t, f->n_heads, f->n_kv_heads, f->lin_k_heads, f->lin_v_heads,
                       (long long)f->intermediate);
    c->n_heads = f->n_heads / t;
    c->n_kv_heads = f->n_kv_heads / t;
    c->intermediate = f->intermediate / t;
    if (lin)
        c->lin_k_heads = f->lin_k_heads / t, c->lin_v_heads = f->lin_v_heads / t;
    int64_t share = (f->vocab_size + t - 1) / t;
    g->vocab_off = share * g->rank;
    c->vocab_size = g->rank == t - 1 ? f->vocab_size - g->vocab_off : share;
    if (c->vocab_size < 1)
        return cm_fail(g, "vocabulary of %lld too small for %d ranks", (long long)f->vocab_size, t);
    return 0;
}

static int cm_start_job(struct cuda_model *g, void *opt)
{
    return cm_start(g, opt);
}

/* The model on one GPU, or on opt->tp GPUs as ranks sharing one NCCL communicator. */
static int cm_create(const struct model_config *cfg, const char *name, const struct model_file *mf,
                     bool random, uint64_t seed, const struct cuda_model_options *opt,
                     struct cuda_model **out, char *err, size_t errlen)
{
    *out = NULL;
    int tp = opt && opt->tp > 1 ? opt->tp : 1;
    struct cuda_model *g = NULL;
    struct cuda_model **ranks = xcalloc((size_t)tp, sizeof(*ranks));
    for (int r = 0; r < tp; r++) {
        struct cuda_model *m = xcalloc(1, sizeof(*m));
        snprintf(m->name, sizeof(m->name), "%s", name);
        m->cfg = m->full = *cfg;
        m->mf = mf;
        m->random = random;
        m->seed = seed; /* every rank draws the same tensors and keeps its share */
        m->tp = tp, m->rank = r;
        m->device = tp > 1 ? opt->devices[r] : opt ? opt->device : 0;
        ranks[r] = m;
    }
    g = ranks[0];
    if (tp > 1) {
        g->ranks = ranks;
        ranks = NULL;
    }
    if (tp > CUDA_MODEL_MAX_TP) {
        cm_fail(g, "tensor-parallel degree %d exceeds %d", tp, CUDA_MODEL_MAX_TP);
        goto fail;
    }
    for (int r = 0; r < tp && tp > 1; r++)
        if (cm_rank_config(g->ranks[r])) {
            snprintf(g->errbuf, sizeof(g->errbuf), "%s", g->ranks[r]->errbuf);
            goto fail;
        }
    if (tp > 1) {
#ifdef CORTEX_HAVE_NCCL
        ncclComm_t comms[CUDA_MODEL_MAX_TP];
        /* Every connection at init (unless the environment says otherwise): NCCL's default
         * connects an algorithm and protocol at its first use, with a handshake between the
         * ranks inside the enqueue call, which then happens during a decode graph's capture and
         * blocks a rank's host thread for good when its peer failed before that collective
         * (cm_tp_wait could not abort it). */
        setenv("NCCL_RUNTIME_CONNECT", "0", 0);
        ncclResult_t nr = ncclCommInitAll(comms, tp, opt->devices);
        if (nr != ncclSuccess) {
            cm_fail(g, "ncclCommInitAll over %d devices: %s", tp, ncclGetErrorString(nr));
            goto fail;
        }
        for (int r = 0; r < tp; r++)
            g->ranks[r]->comm = comms[r];
        struct cm_tp_group *grp = xcalloc(1, sizeof(*grp));
        pthread_barrier_init(&grp->agree, NULL, (unsigned)tp);
        grp->ranks = g->ranks;
        /* without peer access between the GPUs the group is not made: NCCL does it all */
        if (!opt->no_custom_allreduce &&
            cuda_allreduce_create(tp, opt->devices, CM_AR_MAX_BYTES / sizeof(float), &grp->ar))
            grp->ar = NULL;
        for (int r = 0; r < tp; r++)
            g->ranks[r]->grp = grp;
#else
        cm_fail(g, "tensor parallelism needs NCCL, which this build lacks");
        goto fail;
#endif
    }
    if (cm_on_ranks(g, cm_start_job, (void *)opt))
        goto fail;
    for (int r = 0; r < tp; r++)
        (tp > 1 ? g->ranks[r] : g)->mf = NULL;
    free(ranks);
    *out = g;
    return 0;
fail:
    cm_report(g, err, errlen);
    cuda_model_destroy(g);
    free(ranks); /* ranks[0] is g: destroyed above; the others only when tp > 1, by g */
    return -1;
}

int cuda_model_create(const struct model_file *mf, const struct cuda_model_options *opt,
                      struct cuda_model **out, char *err, size_t errlen)
{
    return cm_create(&mf->config, mf->path, mf, false, 0, opt, out, err, errlen);
}

int cuda_model_create_random(const struct model_config *cfg, const char *name, uint64_t seed,
                             const struct cuda_model_options *opt, struct cuda_model **out,
                             char *err, size_t errlen)
{
    return cm_create(cfg, name, NULL, true, seed, opt, out, err, errlen);
}

static void cm_graphs_drop(struct cuda_model *g)
{
    for (int i = 0; i <= CM_MAX_GRAPH; i++)
        if (g->graphs[i]) {
            cudaGraphExecDestroy(g->graphs[i]);
            g->graphs[i] = NULL;
        }
}

void cuda_model_destroy(struct cuda_model *g)
{
    if (!g)
        return;
    if (g->ranks) {
        for (int r = 1; r < g->tp; r++)
            cuda_model_destroy(g->ranks[r]);
        free(g->ranks);
        g->ranks = NULL;
    }
    cudaSetDevice(g->device);
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    cm_graphs_drop(g);
    if (g->layers)
        for (int l = 0; l < g->cfg.n_layers; l++) {
            struct cm_layer *ly = &g->layers[l];
            cudaFree(ly->k_cache);
            cudaFree(ly->v_cache);
            cudaFree(ly->conv_state);
            cudaFree(ly->ssm_state);
        }
    free(g->layers);
    for (size_t i = 0; i < g->n_allocs; i++)
        cudaFree(g->allocs[i]);
    free(g->allocs);
    for (int i = 0; i < CM_BUF_COUNT; i++)
        cudaFree(g->buf[i]);
    cudaFreeHost(g->ints_host);
    cudaFree(g->attn_work);
    cudaFree(g->logits);
    for (int k = 0; k < 2; k++) {
        cudaFreeHost(g->stage[k]);
        if (g->stage_done[k])
            cudaEventDestroy(g->stage_done[k]);
    }
    for (int i = 0; i <= CM_MAX_MARKS; i++)
        if (g->marks[i])
            cudaEventDestroy(g->marks[i]);
    free(g->row_tmp);
    free(g->slot_used);
    free(g->table);
    cudaFree(g->table_dev);
    free(g->slot_blocks);
    free(g->free_blocks);
    free(g->block_refs);
    for (int p = 0; p < g->prefixes_cap; p++) {
        free(g->prefixes[p].blocks);
        cudaFree(g->prefixes[p].state);
    }
    free(g->prefixes);
    cuda_gemm_ctx_destroy(g->gemm);
    if (g->grp && g->rank == 0) { /* the other ranks are gone, their streams idle */
        cuda_allreduce_destroy(g->grp->ar);
        pthread_barrier_destroy(&g->grp->agree);
        free(g->grp);
    }
#ifdef CORTEX_HAVE_NCCL
    if (g->comm)
        ncclCommDestroy(g->comm);
#endif
    if (g->stream)
        cudaStreamDestroy(g->stream);
    free(g);
}

int64_t cuda_model_max_context(const struct cuda_model *g)
{
    return g->max_context;
}

uint64_t cuda_model_weight_bytes(const struct cuda_model *g)
{
    uint64_t bytes = g->weight_bytes;
    for (int r = 1; g->ranks && r < g->tp; r++)
        bytes += g->ranks[r]->weight_bytes;
    return bytes;
}

int cuda_model_tp(const struct cuda_model *g)
{
    return g->tp;
}

const char *cuda_model_allreduce_name(const struct cuda_model *g)
{
    if (g->tp <= 1)
        return "none";
    return g->grp && g->grp->ar ? "peer" : "nccl";
}

int cuda_model_inject_fault(struct cuda_model *g, int rank, enum cuda_model_fault f)
{
    if (rank < 0 || rank >= g->tp)
        return -1;
    (g->ranks ? g->ranks[rank] : g)->fault = f;
    return 0;
}

static int64_t cm_conv_dim(const struct model_config *c)
{
    return 2 * (int64_t)c->lin_k_heads * c->lin_k_dim + (int64_t)c->lin_v_heads * c->lin_v_dim;
}

/* Elements of one slot's state in each pool array. */
static int64_t cm_kv_dim(const struct cuda_model *g)
{
    return (int64_t)g->cfg.n_kv_heads * g->head_pad;
}
static int64_t cm_conv_elems(const struct model_config *c)
{
    return (int64_t)(c->lin_conv_kernel - 1) * cm_conv_dim(c);
}
static int64_t cm_ssm_elems(const struct model_config *c)
{
    return (int64_t)c->lin_v_heads * c->lin_k_dim * c->lin_v_dim;
}

/* Bytes of one KV block over every attention layer (keys and values, bf16). */
static uint64_t cm_block_bytes(const struct cuda_model *g)
{
    uint64_t bytes = 0;
    for (int l = 0; l < g->cfg.n_layers; l++)
        if (g->layers[l].kind == LAYER_KIND_ATTENTION)
            bytes += 2 * 2 * (uint64_t)g->kv_block * (uint64_t)cm_kv_dim(g);
    return bytes;
}

static uint64_t cm_slot_bytes(const struct cuda_model *g, int slot)
{
    uint64_t bytes = 0;
    for (int l = 0; l < g->cfg.n_layers; l++)
        if (g->layers[l].kind == LAYER_KIND_LINEAR_ATTENTION)
            bytes += 4 * (uint64_t)(cm_conv_elems(&g->cfg) + cm_ssm_elems(&g->cfg));
    if (slot >= 0 && slot < g->slots_cap)
        bytes += (uint64_t)g->slot_blocks[slot] * cm_block_bytes(g);
    return bytes;
}

uint64_t cuda_model_slot_bytes(const struct cuda_model *g, int slot)
{
    uint64_t bytes = cm_slot_bytes(g, slot);
    for (int r = 1; g->ranks && r < g->tp; r++)
        bytes += cm_slot_bytes(g->ranks[r], slot);
    return bytes;
}

void cuda_model_cache_stats(const struct cuda_model *g, struct cuda_model_cache_stats *out)
{
    out->block_size = g->kv_block;
    out->blocks = g->blocks_cap;
    out->blocks_free = g->n_free;
    out->block_allocs = g->block_allocs;
    out->blocks_shared = g->blocks_shared;
    out->block_bytes = 0;
    for (int r = 0; r < g->tp; r++)
        out->block_bytes += cm_block_bytes(g->ranks ? g->ranks[r] : g);
}

/* ---- slot pool --------------------------------------------------------------------------- */

/* A new zeroed array of [slots][per] elements of elem bytes holding old's [old_slots][old_per]
 * at the start of each slot's row; frees old. */
static int cm_regrow(struct cuda_model *g, void **p, size_t elem, int old_slots, int64_t old_per,
                     int slots, int64_t per)
{
    void *n = NULL;
    size_t bytes = elem * (size_t)slots * (size_t)per;
    CM_TRY(cm_cuda(g, cudaMalloc(&n, bytes), "cudaMalloc (sequence state)"));
    int rc = cm_cuda(g, cudaMemsetAsync(n, 0, bytes, g->stream), "cudaMemset");
    if (rc == 0 && *p && old_slots > 0 && old_per > 0)
        rc = cm_cuda(g,
                     cudaMemcpy2DAsync(n, elem * (size_t)per, *p, elem * (size_t)old_per,
                                       elem * (size_t)old_per, (size_t)old_slots,
                                       cudaMemcpyDeviceToDevice, g->stream),
                     "cudaMemcpy2D (sequence state)");
    if (rc == 0)
        rc = cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
    if (rc) {
        cudaFree(n);
        return -1;
    }
    cudaFree(*p);
    *p = n;
    return 0;
}

/* Grows every attention layer's block pool to blocks blocks (contents kept) and puts the new
 * ids on the free list, lowest on top. */
static int cm_blocks_grow(struct cuda_model *g, int64_t blocks)
{
    if (blocks <= g->blocks_cap)
        return 0;
    int64_t row = (int64_t)g->kv_block * cm_kv_dim(g);
    cm_graphs_drop(g); /* they hold the old pointers */
    for (int l = 0; l < g->cfg.n_layers; l++) {
        struct cm_layer *ly = &g->layers[l];
        if (ly->kind != LAYER_KIND_ATTENTION)
            continue;
        CM_TRY(cm_regrow(g, &ly->k_cache, 2, 1, g->blocks_cap * row, 1, blocks * row));
        CM_TRY(cm_regrow(g, &ly->v_cache, 2, 1, g->blocks_cap * row, 1, blocks * row));
    }
    g->free_blocks = xrealloc(g->free_blocks, sizeof(int32_t) * (size_t)blocks);
    g->block_refs = xrealloc(g->block_refs, sizeof(int32_t) * (size_t)blocks);
    memset(g->block_refs + g->blocks_cap, 0, sizeof(int32_t) * (size_t)(blocks - g->blocks_cap));
    /* the stack's top is its end: new ids go below the free ones already there */
    int64_t added = blocks - g->blocks_cap;
    memmove(g->free_blocks + added, g->free_blocks, sizeof(int32_t) * (size_t)g->n_free);
    for (int64_t i = 0; i < added; i++)
        g->free_blocks[i] = (int32_t)(blocks - 1 - i);
    g->n_free += added;
    g->blocks_cap = blocks;
    return 0;
}

/* Makes room for slots slots (GDN state, table rows) whose table rows cover ctx positions:
 * doubling (so growing a token at a time stays cheap), or exactly (benchmarks that reserve
 * their whole need up front). KV blocks are not part of it (cm_seq_blocks). */
static int cm_pool_grow(struct cuda_model *g, int slots, int64_t ctx, bool exact)
{
    const struct model_config *c = &g->cfg;
    if (slots <= g->slots_cap && ctx <= g->ctx_cap)
        return 0;
    int new_slots = g->slots_cap ? g->slots_cap : 4;
    int64_t new_ctx = g->ctx_cap ? g->ctx_cap : CM_FIRST_CONTEXT;
    if (exact) {
        new_slots = slots > g->slots_cap ? slots : g->slots_cap;
        new_ctx = ctx > g->ctx_cap ? ctx : g->ctx_cap;
        if (new_slots < 1)
            new_slots = 1;
        if (new_ctx < 1)
            new_ctx = CM_FIRST_CONTEXT;
    }
    while (new_slots < slots)
        new_slots *= 2;
    while (new_ctx < ctx)
        new_ctx *= 2;
    if (new_ctx > g->max_context)
        new_ctx = g->max_context;
    int64_t new_tcap = (new_ctx + g->kv_block - 1) / g->kv_block;
    if (new_tcap < g->table_cap)
        new_tcap = g->table_cap;
    cm_graphs_drop(g); /* they hold the old pointers */
    for (int l = 0; l < c->n_layers && new_slots > g->slots_cap; l++) {
        struct cm_layer *ly = &g->layers[l];
        if (ly->kind != LAYER_KIND_LINEAR_ATTENTION)
            continue;
        CM_TRY(cm_regrow(g, (void **)&ly->conv_state, 4, g->slots_cap, cm_conv_elems(c), new_slots,
                         cm_conv_elems(c)));
        CM_TRY(cm_regrow(g, (void **)&ly->ssm_state, 4, g->slots_cap, cm_ssm_elems(c), new_slots,
                         cm_ssm_elems(c)));
    }
    /* the block table: old rows kept, new entries -1 (no block) */
    size_t entries = (size_t)new_slots * (size_t)new_tcap;
    int32_t *t = xmalloc(sizeof(int32_t) * entries);
    for (size_t i = 0; i < entries; i++)
        t[i] = -1;
    for (int s = 0; s < g->slots_cap; s++)
        memcpy(t + (size_t)s * (size_t)new_tcap, g->table + (size_t)s * (size_t)g->table_cap,
               sizeof(int32_t) * (size_t)g->table_cap);
    int32_t *td = NULL;
    if (cm_cuda(g, cudaMalloc((void **)&td, sizeof(int32_t) * entries),
                "cudaMalloc (block table)")) {
        free(t);
        return -1;
    }
    free(g->table);
    cudaFree(g->table_dev);
    g->table = t, g->table_dev = td, g->table_dirty = true;
    g->slot_used = xrealloc(g->slot_used, sizeof(bool) * (size_t)new_slots);
    g->slot_blocks = xrealloc(g->slot_blocks, sizeof(int64_t) * (size_t)new_slots);
    for (int i = g->slots_cap; i < new_slots; i++)
        g->slot_used[i] = false, g->slot_blocks[i] = 0;
    g->slots_cap = new_slots;
    g->table_cap = new_tcap;
    g->ctx_cap = new_tcap * g->kv_block;
    return 0;
}

/* Gives slot blocks for its first positions positions from the free list (the pool doubles
 * when it runs dry, unless reserved at load: then -1, the cache is full). */
static int cm_seq_blocks(struct cuda_model *g, int slot, int64_t positions)
{
    int64_t need = (positions + g->kv_block - 1) / g->kv_block;
    int64_t missing = need - g->slot_blocks[slot];
    if (missing <= 0)
        return 0;
    if (missing > g->n_free) {
        if (g->blocks_fixed)
            return cm_fail(g,
                           "the KV cache is full: %lld more blocks of %d positions wanted, "
                           "%lld of %lld free",
                           (long long)missing, g->kv_block, (long long)g->n_free,
                           (long long)g->blocks_cap);
        int64_t blocks = g->blocks_cap ? g->blocks_cap : CM_FIRST_BLOCKS;
        while (blocks - g->blocks_cap + g->n_free < missing)
            blocks *= 2;
        CM_TRY(cm_blocks_grow(g, blocks));
    }
    int32_t *row = g->table + (size_t)slot * (size_t)g->table_cap;
    for (int64_t i = g->slot_blocks[slot]; i < need; i++) {
        row[i] = g->free_blocks[--g->n_free];
        g->block_refs[row[i]] = 1;
    }
    g->block_allocs += (uint64_t)missing;
    g->slot_blocks[slot] = need;
    g->table_dirty = true;
    return 0;
}

/* One more reference to a block already held (a prefix, or a table row restoring one). */
static void cm_block_ref(struct cuda_model *g, int32_t b)
{
    if (++g->block_refs[b] == 2)
        g->blocks_shared++;
}

/* Drops a reference; the block goes back on the free list when none is left. */
static void cm_block_unref(struct cuda_model *g, int32_t b)
{
    int32_t left = --g->block_refs[b];
    if (left == 1)
        g->blocks_shared--;
    else if (left == 0)
        g->free_blocks[g->n_free++] = b;
}

/* Drops slot's references to its blocks, which go back to the free list when no prefix or
 * other slot holds them (last-allocated first, so a sequence that comes back at once gets the
 * same blocks). */
static void cm_seq_free(struct cuda_model *g, int slot)
{
    if (slot < 0 || slot >= g->slots_cap)
        return;
    int32_t *row = g->table + (size_t)slot * (size_t)g->table_cap;
    for (int64_t i = g->slot_blocks[slot] - 1; i >= 0; i--) {
        cm_block_unref(g, row[i]);
        row[i] = -1;
    }
    if (g->slot_blocks[slot])
        g->table_dirty = true;
    g->slot_blocks[slot] = 0;
}

/* The slot calls run rank by rank: every rank holds the same slots (its share of each
 * sequence's state), and the same calls in the same order keep their pools identical. */
static struct cuda_model *cm_rank(struct cuda_model *g, int r)
{
    return g->ranks ? g->ranks[r] : g;
}

static int cm_reserve(struct cuda_model *g, int n_slots, int64_t positions)
{
    cudaSetDevice(g->device);
    if (positions > g->max_context)
        positions = g->max_context;
    CM_TRY(cm_pool_grow(g, n_slots, positions, true));
    if (g->blocks_fixed)
        return 0;
    return cm_blocks_grow(g, (int64_t)n_slots * ((positions + g->kv_block - 1) / g->kv_block));
}

static int cm_slot_reset(struct cuda_model *g, int slot)
{
    const struct model_config *c = &g->cfg;
    cudaSetDevice(g->device);
    cm_seq_free(g, slot);
    for (int l = 0; l < c->n_layers; l++) {
        struct cm_layer *ly = &g->layers[l];
        if (ly->kind != LAYER_KIND_LINEAR_ATTENTION)
            continue;
        int64_t ce = cm_conv_elems(c), se = cm_ssm_elems(c);
        CM_TRY(cm_cuda(g,
                       cudaMemsetAsync(ly->conv_state + (size_t)slot * (size_t)ce, 0,
                                       sizeof(float) * (size_t)ce, g->stream),
                       "cudaMemset (conv state)"));
        CM_TRY(cm_cuda(g,
                       cudaMemsetAsync(ly->ssm_state + (size_t)slot * (size_t)se, 0,
                                       sizeof(float) * (size_t)se, g->stream),
                       "cudaMemset (recurrent state)"));
    }
    return cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
}

static int cm_slot_acquire(struct cuda_model *g, int *slot)
{
    cudaSetDevice(g->device);
    int s = 0;
    while (s < g->slots_cap && g->slot_used[s])
        s++;
    if (s == g->slots_cap &&
        cm_pool_grow(g, s + 1, g->ctx_cap ? g->ctx_cap : CM_FIRST_CONTEXT, false))
        return -1;
    CM_TRY(cm_slot_reset(g, s));
    g->slot_used[s] = true;
    *slot = s;
    return 0;
}

/* Copies rank r's error into the caller's buffer; -1. */
static int cm_report_rank(struct cuda_model *g, int r, char *err, size_t errlen)
{
    if (r > 0)
        snprintf(g->errbuf, sizeof(g->errbuf), "rank %d: %.480s", r, cm_rank(g, r)->errbuf);
    return cm_report(g, err, errlen);
}

int cuda_model_reserve(struct cuda_model *g, int n_slots, int64_t positions, char *err,
                       size_t errlen)
{
    for (int r = 0; r < g->tp; r++)
        if (cm_reserve(cm_rank(g, r), n_slots, positions))
            return cm_report_rank(g, r, err, errlen);
    cudaSetDevice(g->device);
    return 0;
}

int cuda_model_slot_reset(struct cuda_model *g, int slot, char *err, size_t errlen)
{
    for (int r = 0; r < g->tp; r++)
        if (cm_slot_reset(cm_rank(g, r), slot))
            return cm_report_rank(g, r, err, errlen);
    cudaSetDevice(g->device);
    return 0;
}

int cuda_model_slot_acquire(struct cuda_model *g, int *slot, char *err, size_t errlen)
{
    *slot = -1;
    for (int r = 0; r < g->tp; r++) {
        int s = -1;
        if (cm_slot_acquire(cm_rank(g, r), &s))
            return cm_report_rank(g, r, err, errlen);
        if (r > 0 && s != *slot) {
            cm_fail(g, "ranks disagree on the free slot (%d vs %d)", *slot, s);
            return cm_report(g, err, errlen);
        }
        *slot = s;
    }
    cudaSetDevice(g->device);
    return 0;
}

void cuda_model_slot_release(struct cuda_model *g, int slot)
{
    for (int r = 0; r < g->tp; r++) {
        struct cuda_model *m = cm_rank(g, r);
        if (slot >= 0 && slot < m->slots_cap) {
            m->slot_used[slot] = false;
            cm_seq_free(m, slot);
        }
    }
}

/* ---- saved prefixes ---------------------------------------------------------------------- */

/* Copies slot's GDN state (every linear-attention layer's conv then recurrent state) to or from
 * a prefix snapshot, device to device, and waits for it. */
static int cm_state_copy(struct cuda_model *g, int slot, float *snap, bool to_snap)
{
    const struct model_config *c = &g->cfg;
    int64_t ce = cm_conv_elems(c), se = cm_ssm_elems(c);
    size_t off = 0;
    for (int l = 0; l < c->n_layers; l++) {
        struct cm_layer *ly = &g->layers[l];
        if (ly->kind != LAYER_KIND_LINEAR_ATTENTION)
            continue;
        float *conv = ly->conv_state + (size_t)slot * (size_t)ce;
        float *ssm = ly->ssm_state + (size_t)slot * (size_t)se;
        float *sc = snap + off, *ss = snap + off + (size_t)ce;
        CM_TRY(cm_cuda(g,
                       cudaMemcpyAsync(to_snap ? sc : conv, to_snap ? conv : sc,
                                       sizeof(float) * (size_t)ce, cudaMemcpyDeviceToDevice,
                                       g->stream),
                       "cudaMemcpyAsync (conv state snapshot)"));
        CM_TRY(cm_cuda(g,
                       cudaMemcpyAsync(to_snap ? ss : ssm, to_snap ? ssm : ss,
                                       sizeof(float) * (size_t)se, cudaMemcpyDeviceToDevice,
                                       g->stream),
                       "cudaMemcpyAsync (recurrent state snapshot)"));
        off += (size_t)(ce + se);
    }
    return cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize");
}

/* Bytes of one GDN snapshot (0 for models without linear attention). */
static size_t cm_state_bytes(const struct cuda_model *g)
{
    size_t n = 0;
    for (int l = 0; l < g->cfg.n_layers; l++)
        if (g->layers[l].kind == LAYER_KIND_LINEAR_ATTENTION)
            n += sizeof(float) * (size_t)(cm_conv_elems(&g->cfg) + cm_ssm_elems(&g->cfg));
    return n;
}

static bool cm_slot_valid(const struct cuda_model *g, int slot)
{
    return slot >= 0 && slot < g->slots_cap && g->slot_used[slot];
}

static bool cm_prefix_valid(const struct cuda_model *g, int prefix)
{
    return prefix >= 0 && prefix < g->prefixes_cap && g->prefixes[prefix].used;
}

static int cm_prefix_save(struct cuda_model *g, int slot, int64_t length, int *prefix)
{
    cudaSetDevice(g->device);
    if (!cm_slot_valid(g, slot))
        return cm_fail(g, "prefix save: slot %d is not in use", slot);
    if (length < 1 || length % g->kv_block != 0)
        return cm_fail(g, "prefix save: length %lld is not a positive multiple of the block (%d)",
                       (long long)length, g->kv_block);
    int64_t nb = length / g->kv_block;
    /* a slot holding more than length tokens has more blocks (and a later GDN state) */
    if (g->slot_blocks[slot] != nb)
        return cm_fail(g, "prefix save: slot %d holds %lld blocks, a prefix of %lld tokens %lld",
                       slot, (long long)g->slot_blocks[slot], (long long)length, (long long)nb);
    int p = 0;
    while (p < g->prefixes_cap && g->prefixes[p].used)
        p++;
    if (p == g->prefixes_cap) {
        int cap = g->prefixes_cap ? 2 * g->prefixes_cap : 8;
        g->prefixes = xrealloc(g->prefixes, sizeof(struct cm_prefix) * (size_t)cap);
        memset(g->prefixes + g->prefixes_cap, 0,
               sizeof(struct cm_prefix) * (size_t)(cap - g->prefixes_cap));
        g->prefixes_cap = cap;
    }
    struct cm_prefix *x = &g->prefixes[p];
    x->state_bytes = cm_state_bytes(g);
    x->state = NULL;
    if (x->state_bytes) {
        CM_TRY(cm_cuda(g, cudaMalloc((void **)&x->state, x->state_bytes),
                       "cudaMalloc (prefix GDN snapshot)"));
        if (cm_state_copy(g, slot, x->state, true)) {
            cudaFree(x->state);
            x->state = NULL;
            return -1;
        }
    }
    const int32_t *row = g->table + (size_t)slot * (size_t)g->table_cap;
    x->blocks = xmalloc(sizeof(int32_t) * (size_t)nb);
    for (int64_t i = 0; i < nb; i++) {
        x->blocks[i] = row[i];
        cm_block_ref(g, row[i]);
    }
    x->n_blocks = nb;
    x->length = length;
    x->used = true;
    *prefix = p;
    return 0;
}

static int cm_prefix_restore(struct cuda_model *g, int prefix, int slot)
{
    cudaSetDevice(g->device);
    if (!cm_prefix_valid(g, prefix))
        return cm_fail(g, "prefix restore: no prefix %d", prefix);
    if (!cm_slot_valid(g, slot))
        return cm_fail(g, "prefix restore: slot %d is not in use", slot);
    const struct cm_prefix *x = &g->prefixes[prefix];
    /* the table only grows, so a row is as wide as the one the prefix came from */
    if (x->n_blocks > g->table_cap)
        return cm_fail(g, "prefix restore: %lld blocks exceed a table row of %lld",
                       (long long)x->n_blocks, (long long)g->table_cap);
    cm_seq_free(g, slot);
    if (x->state)
        CM_TRY(cm_state_copy(g, slot, x->state, false));
    int32_t *row = g->table + (size_t)slot * (size_t)g->table_cap;
    for (int64_t i = 0; i < x->n_blocks; i++) {
        row[i] = x->blocks[i];
        cm_block_ref(g, row[i]);
    }
    g->slot_blocks[slot] = x->n_blocks;
    /* the next forward call uploads the row before its kernels (graphs read it from there) */
    g->table_dirty = true;
    return 0;
}

static void cm_prefix_release(struct cuda_model *g, int prefix)
{
    if (!cm_prefix_valid(g, prefix))
        return;
    cudaSetDevice(g->device);
    struct cm_prefix *x = &g->prefixes[prefix];
    for (int64_t i = 0; i < x->n_blocks; i++)
        cm_block_unref(g, x->blocks[i]);
    free(x->blocks);
    cudaFree(x->state);
    *x = (struct cm_prefix){0};
}

static uint64_t cm_prefix_bytes(const struct cuda_model *g, int prefix)
{
    if (!cm_prefix_valid(g, prefix))
        return 0;
    const struct cm_prefix *x = &g->prefixes[prefix];
    uint64_t bytes = x->state_bytes, block = cm_block_bytes(g);
    for (int64_t i = 0; i < x->n_blocks; i++)
        if (g->block_refs[x->blocks[i]] == 1)
            bytes += block;
    return bytes;
}

int cuda_model_kv_block(const struct cuda_model *g)
{
    return g->kv_block;
}

int cuda_model_prefix_save(struct cuda_model *g, int slot, int64_t length, int *prefix, char *err,
                           size_t errlen)
{
    *prefix = -1;
    for (int r = 0; r < g->tp; r++) {
        int p = -1;
        if (cm_prefix_save(cm_rank(g, r), slot, length, &p)) {
            for (int q = 0; q < r; q++) /* undo the ranks that saved it */
                cm_prefix_release(cm_rank(g, q), *prefix);
            *prefix = -1;
            cm_report_rank(g, r, err, errlen);
            cudaSetDevice(g->device);
            return -1;
        }
        if (r > 0 && p != *prefix) {
            cm_prefix_release(cm_rank(g, r), p);
            for (int q = 0; q < r; q++)
                cm_prefix_release(cm_rank(g, q), *prefix);
            cm_fail(g, "ranks disagree on the prefix handle (%d vs %d)", *prefix, p);
            *prefix = -1;
            cudaSetDevice(g->device);
            return cm_report(g, err, errlen);
        }
        *prefix = p;
    }
    cudaSetDevice(g->device);
    return 0;
}

int cuda_model_prefix_restore(struct cuda_model *g, int prefix, int slot, char *err, size_t errlen)
{
    for (int r = 0; r < g->tp; r++)
        if (cm_prefix_restore(cm_rank(g, r), prefix, slot)) {
            cm_report_rank(g, r, err, errlen);
            cudaSetDevice(g->device);
            return -1;
        }
    cudaSetDevice(g->device);
    return 0;
}

void cuda_model_prefix_release(struct cuda_model *g, int prefix)
{
    for (int r = 0; r < g->tp; r++)
        cm_prefix_release(cm_rank(g, r), prefix);
    cudaSetDevice(g->device);
}

uint64_t cuda_model_prefix_bytes(const struct cuda_model *g, int prefix)
{
    uint64_t bytes = 0;
    for (int r = 0; r < g->tp; r++)
        bytes += cm_prefix_bytes(g->ranks ? g->ranks[r] : g, prefix);
    return bytes;
}

/* ---- scratch ----------------------------------------------------------------------------- */

static int cm_scratch(struct cuda_model *g, int64_t rows)
{
    const struct model_config *c = &g->cfg;
    if (rows <= g->rows_cap)
        return 0;
    int64_t cap = g->rows_cap ? g->rows_cap : 8;
    while (cap < rows)
        cap *= 2;
    int64_t H = c->hidden, hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd;
    int64_t kv = (int64_t)c->n_kv_heads * hd, I = c->intermediate, conv = cm_conv_dim(c);
    int64_t q_pad = (int64_t)c->n_heads * g->head_pad;
    int64_t Nv = c->lin_v_heads, vdim = Nv * c->lin_v_dim;
    size_t bytes[CM_BUF_COUNT] = {
            [CM_X] = 4 * (size_t)H,          [CM_XN] = 2 * (size_t)H,
            [CM_QF] = 4 * 2 * (size_t)q_dim, [CM_K] = 4 * (size_t)kv,
            [CM_V] = 4 * (size_t)kv,         [CM_ATT] = 4 * (size_t)q_pad,
            [CM_QP] = 4 * (size_t)q_pad,     [CM_ATTB] = 2 * (size_t)q_dim,
            [CM_G] = 4 * (size_t)I,          [CM_U] = 4 * (size_t)I,
            [CM_GU] = 2 * (size_t)I,         [CM_QKV] = 4 * (size_t)conv,
            [CM_CONV] = 4 * (size_t)conv,    [CM_Z] = 4 * (size_t)vdim,
            [CM_B] = 4 * (size_t)Nv,         [CM_A] = 4 * (size_t)Nv,
            [CM_GG] = 4 * (size_t)Nv,        [CM_BETA] = 4 * (size_t)Nv,
            [CM_CORE] = 4 * (size_t)vdim,    [CM_COREB] = 2 * (size_t)vdim,
            [CM_XO] = 2 * (size_t)H,         [CM_INTS] = 4 * 5,
    };
    cm_graphs_drop(g);
    CM_TRY(cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize"));
    for (int i = 0; i < CM_BUF_COUNT; i++) {
        cudaFree(g->buf[i]);
        g->buf[i] = NULL;
    }
    cudaFreeHost(g->ints_host);
    g->ints_host = NULL;
    g->rows_cap = 0;
    /* zeroed once, so no buffer ever holds NaN garbage that a bug could leak */
    for (int i = 0; i < CM_BUF_COUNT; i++) {
        size_t b = (bytes[i] ? bytes[i] : 4) * (size_t)cap;
        CM_TRY(cm_cuda(g, cudaMalloc(&g->buf[i], b), "cudaMalloc (scratch)"));
        CM_TRY(cm_cuda(g, cudaMemset(g->buf[i], 0, b), "cudaMemset (scratch)"));
    }
    CM_TRY(cm_cuda(g, cudaMallocHost((void **)&g->ints_host, 4 * 5 * (size_t)cap),
                   "cudaMallocHost"));
    g->rows_cap = cap;
    return 0;
}

/* Room for n_out rows of logits. */
static int cm_logits_room(struct cuda_model *g, int64_t n_out)
{
    if (n_out <= g->logits_cap)
        return 0;
    cm_graphs_drop(g);
    CM_TRY(cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize"));
    cudaFree(g->logits);
    g->logits = NULL;
    g->logits_cap = 0;
    CM_TRY(cm_cuda(g,
                   cudaMalloc((void **)&g->logits,
                              sizeof(float) * (size_t)n_out * (size_t)g->cfg.vocab_size),
                   "cudaMalloc (logits)"));
    g->logits_cap = n_out;
    return 0;
}

/* Attention decode scratch for n_seqs sequences over the pool's cache length. */
static int cm_attn_work(struct cuda_model *g, int n_seqs)
{
    const struct model_config *c = &g->cfg;
    int splits = cuda_attention_decode_splits(n_seqs, c->n_heads, c->n_kv_heads, g->ctx_cap);
    size_t need = cuda_attention_decode_work_bytes(n_seqs, c->n_heads, g->head_pad, splits);
    if (need <= g->attn_work_bytes)
        return 0;
    cm_graphs_drop(g);
    CM_TRY(cm_cuda(g, cudaStreamSynchronize(g->stream), "cudaStreamSynchronize"));
    cudaFree(g->attn_work);
    g->attn_work = NULL;
    g->attn_work_bytes = 0;
    CM_TRY(cm_cuda(g, cudaMalloc(&g->attn_work, need), "cudaMalloc (attention scratch)"));
    g->attn_work_bytes = need;
    return 0;
}

/* ---- the forward pass -------------------------------------------------------------------- */

/* The rows of one forward call (host side) and their device arrays. */
struct cm_batch {
    int n_seqs;
    int64_t n;        /* rows */
    bool decode;      /* every sequence has one token: row i is sequence i */
    const int *slots; /* [n_seqs] host */
    const int64_t *n_past, *n_tokens, *row0;
    int32_t *d_ids, *d_pos, *d_rowslot, *d_seqslot, *d_lens; /* device */
};

/* The products y[i] (+)= W[i] x for matrices sharing the input x (bf16 [n, cols], x_stride
 * apart): one grouped matrix-vector launch for small batches, cuBLASLt (cuda_gemm) per matrix
 * above. This is the one place products are chosen. The activations are already bf16, so
 * cuda_gemm needs no staging buffer, and its first product of a shape asks cuBLASLt's heuristic
 * on the host only: a decode graph may capture it. */
static int cm_matmul(struct cuda_model *g, int n_mats, const struct cm_mat *const *w, const void *x,
                     int64_t x_stride, int64_t n, float *const *y, const int64_t *y_stride,
                     bool accumulate)
{
    cm_mark(g, CUDA_MODEL_OP_MATMUL);
    if (n <= CM_MATVEC_MAX_ROWS) {
        struct cuda_matvec mv[CUDA_MATVEC_MAX_GROUP];
        for (int i = 0; i < n_mats; i++)
            mv[i] = (struct cuda_matvec){
                    .w_type = DTYPE_BF16,
                    .w = w[i]->w,
                    .rows = w[i]->rows,
                    .cols = w[i]->cols,
                    .x_type = DTYPE_BF16,
                    .x = x,
                    .x_stride = x_stride,
                    .y_type = DTYPE_F32,
                    .y = y[i],
                    .y_stride = y_stride[i],
                    .batch = (int)n,
                    .accumulate = accumulate,
            };
        return cm_kernel(g, cuda_matvec_group(mv, n_mats, g->stream), "cuda_matvec_group");
    }
    for (int i = 0; i < n_mats; i++) {
        struct cuda_gemm_args ga = {
                .w = w[i]->w,
                .rows = w[i]->rows,
                .cols = w[i]->cols,
                .x_type = DTYPE_BF16,
                .x = x,
                .x_stride = x_stride,
                .y_type = DTYPE_F32,
                .y = y[i],
                .y_stride = y_stride[i],
                .n = n,
                .accumulate = accumulate,
        };
        CM_TRY(cm_kernel(g, cuda_gemm(g->gemm, &ga), "cuda_gemm"));
    }
    return 0;
}

static int cm_matmul1(struct cuda_model *g, const struct cm_mat *w, const void *x, int64_t x_stride,
                      int64_t n, float *y, int64_t y_stride, bool accumulate)
{
    const struct cm_mat *ws[1] = {w};
    float *ys[1] = {y};
    int64_t ss[1] = {y_stride};
    return cm_matmul(g, 1, ws, x, x_stride, n, ys, ss, accumulate);
}

/* Under tensor parallelism, the sum of the ranks' partial row-parallel products in the
 * residual stream x (CM_X, fp32 [n, H]): rank 0's product accumulated into x, the others'
 * written over it (accumulate = rank 0), so one in-place all-reduce leaves x + sum of partials
 * on every rank, bit-identical across ranks. */
static int cm_allreduce(struct cuda_model *g, int64_t n)
{
    if (g->tp <= 1)
        return 0;
    if (g->fault == CUDA_MODEL_FAULT_COLLECTIVE) {
        g->fault = CUDA_MODEL_FAULT_NONE;
        return cm_fail(g, "injected fault at an all-reduce (test)");
    }
    cm_mark(g, CUDA_MODEL_OP_COMM);
    int64_t elems = n * g->cfg.hidden;
    struct cuda_allreduce *ar = g->grp->ar;
    if (ar && elems <= cuda_allreduce_max_elems(ar))
        return cm_kernel(g, cuda_allreduce_sum(ar, g->rank, g->buf[CM_X], elems, g->stream),
                         "cuda_allreduce_sum");
#ifdef CORTEX_HAVE_NCCL
    ncclResult_t r = ncclAllReduce(g->buf[CM_X], g->buf[CM_X], (size_t)elems, ncclFloat, ncclSum,
                                   g->comm, g->stream);
    if (r != ncclSuccess)
        return cm_fail(g, "ncclAllReduce: %s", ncclGetErrorString(r));
    return 0;
#else
    return cm_fail(g, "tensor parallelism needs NCCL");
#endif
}

/* A row-parallel output projection (o_proj without bias, GDN out_proj, down_proj) into the
 * residual stream, then the ranks' sum. */
static int cm_out_proj(struct cuda_model *g, const struct cm_mat *w, const void *x,
                       int64_t x_stride, int64_t n)
{
    CM_TRY(cm_matmul1(g, w, x, x_stride, n, g->buf[CM_X], g->cfg.hidden, g->rank == 0));
    return cm_allreduce(g, n);
}

/* y (bf16 [rows, H]) = N(x) with weight w. */
static int cm_norm(struct cuda_model *g, const float *x, void *y, const float *w, int64_t rows)
{
    cm_mark(g, CUDA_MODEL_OP_OTHER);
    const struct model_config *c = &g->cfg;
    struct cuda_rmsnorm a = {
            .x_type = DTYPE_F32,
            .y_type = DTYPE_BF16,
            .x = x,
            .x_stride = c->hidden,
            .y = y,
            .y_stride = c->hidden,
            .w = w,
            .rows = rows,
            .n = (int)c->hidden,
            .eps = c->rms_eps,
            .zero_centred = c->norm_zero_centred,
    };
    return cm_kernel(g, cuda_rmsnorm(&a, g->stream), "cuda_rmsnorm");
}

/* The products y[i] = W[i] N(x) of a block's input, x the residual stream (CM_X), whose norm
 * weight is folded into W[i] (cm_bind_layer): small batches in one norm-fused launch
 * (cuda_matvec_rms), larger ones through the weightless norm to bf16 and cm_matmul. */
static int cm_normed_matmul(struct cuda_model *g, int n_mats, const struct cm_mat *const *w,
                            int64_t n, float *const *y, const int64_t *y_stride)
{
    const struct model_config *c = &g->cfg;
    if (!g->no_fusion && n <= CM_MATVEC_MAX_ROWS &&
        cuda_matvec_rms_fits(c->hidden, c->hidden, (int)n)) {
        cm_mark(g, CUDA_MODEL_OP_MATMUL);
        struct cuda_matvec_rms a = {.n = n_mats,
                                    .cols = c->hidden,
                                    .x = g->buf[CM_X],
                                    .x_stride = c->hidden,
                                    .batch = (int)n,
                                    .eps = c->rms_eps};
        for (int i = 0; i < n_mats; i++) {
            a.w[i] = w[i]->w;
            a.rows[i] = w[i]->rows;
            a.y[i] = y[i];
            a.y_stride[i] = y_stride[i];
        }
        return cm_kernel(g, cuda_matvec_rms(&a, g->stream), "cuda_matvec_rms");
    }
    CM_TRY(cm_norm(g, g->buf[CM_X], g->buf[CM_XN], NULL, n));
    return cm_matmul(g, n_mats, w, g->buf[CM_XN], c->hidden, n, y, y_stride, false);
}

static int cm_block_attention(struct cuda_model *g, int l, const struct cm_batch *b)
{
    const struct model_config *c = &g->cfg;
    struct cm_layer *ly = &g->layers[l];
    int64_t n = b->n, hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd;
    int64_t kv = (int64_t)c->n_kv_heads * hd;
    bool gated = c->attn_output_gate;
    float *qf = g->buf[CM_QF], *k = g->buf[CM_K], *v = g->buf[CM_V];
    float *att = g->buf[CM_ATT];
    void *attb = g->buf[CM_ATTB];

    const struct cm_mat *w[3] = {&ly->wq, &ly->wk, &ly->wv};
    float *y[3] = {qf, k, v};
    int64_t ys[3] = {ly->wq.rows, kv, kv};
    CM_TRY(cm_normed_matmul(g, 3, w, n, y, ys));
    cm_mark(g, CUDA_MODEL_OP_OTHER);
    if (ly->bq)
        CM_TRY(cm_kernel(g, cuda_add_bias(qf, ly->wq.rows, ly->bq, n, ly->wq.rows, g->stream),
                         "cuda_add_bias"));
    if (ly->bk)
        CM_TRY(cm_kernel(g, cuda_add_bias(k, kv, ly->bk, n, kv, g->stream), "cuda_add_bias"));
    if (ly->bv)
        CM_TRY(cm_kernel(g, cuda_add_bias(v, kv, ly->bv, n, kv, g->stream), "cuda_add_bias"));

    cm_mark(g, CUDA_MODEL_OP_ATTENTION);
    /* The gated q projection holds, per head, [query hd | gate hd] (QWEN35.md): the query
     * halves are normed and rotated into CM_QP, the gates are read in place below. Heads of a
     * size the attention kernels do not take are zero-padded to head_pad (hp) from here on. */
    int64_t hp = g->head_pad, q_pad = (int64_t)c->n_heads * hp, kv_pad = cm_kv_dim(g);
    bool pad = hp != hd;
    float *qa = g->buf[CM_QP];
    struct cuda_attn_prep ap = {
            .rows = n,
            .n_heads = c->n_heads,
            .n_kv_heads = c->n_kv_heads,
            .head_dim = (int)hd,
            .head_pad = (int)hp,
            .q = qf,
            .q_stride = ly->wq.rows,
            .q_head_stride = gated ? 2 * hd : hd,
            .k = k,
            .v = v,
            .k_stride = kv,
            .v_stride = kv,
            .q_norm = ly->q_norm,
            .k_norm = ly->k_norm,
            .eps = c->rms_eps,
            .zero_centred = c->norm_zero_centred,
            .rot_dim = c->rotary_dim,
            .neox = c->rope_neox,
            .inv_freq = g->inv_freq,
            .pos = b->d_pos,
            .q_out = qa,
            .q_out_stride = q_pad,
            .k_cache = ly->k_cache,
            .v_cache = ly->v_cache,
            .slot = b->d_rowslot,
            .block_table = g->table_dev,
            .table_stride = g->table_cap,
            .block_size = g->kv_block,
    };
    CM_TRY(cm_kernel(g, cuda_attn_prep(&ap, g->stream), "cuda_attn_prep"));

    /* plain heads: attention writes the bf16 input of o_proj itself; gated or padded ones go
     * through fp32 and the gate store below */
    bool direct = !gated && !pad;
    enum dtype out_type = direct ? DTYPE_BF16 : DTYPE_F32;
    void *out = direct ? attb : (void *)att;
    float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < b->n_seqs; i++) {
        bool one = b->decode || b->n_tokens[i] == 1;
        if (b->decode && i > 0)
            break;
        int64_t r0 = b->decode ? 0 : b->row0[i];
        size_t out_off = (size_t)(r0 * q_pad) * (direct ? 2 : 4);
        if (one) {
            struct cuda_attention_decode d = {
                    .q_type = DTYPE_F32,
                    .kv_type = DTYPE_BF16,
                    .out_type = out_type,
                    .q = qa + r0 * q_pad,
                    .q_stride = q_pad,
                    .k = ly->k_cache,
                    .v = ly->v_cache,
                    .kv_stride = kv_pad,
                    .lens = b->d_lens + i,
                    .max_len = g->ctx_cap,
                    .out = (char *)out + out_off,
                    .out_stride = q_pad,
                    .n_seqs = b->decode ? b->n_seqs : 1,
                    .n_heads = c->n_heads,
                    .n_kv_heads = c->n_kv_heads,
                    .head_dim = (int)hp,
                    .scale = scale,
                    .n_splits = 0,
                    .work = g->attn_work,
                    .slots = b->d_seqslot + i,
                    .block_table = g->table_dev,
                    .table_stride = g->table_cap,
                    .block_size = g->kv_block,
            };
            CM_TRY(cm_kernel(g, cuda_attention_decode(&d, g->stream), "cuda_attention_decode"));
        } else {
            struct cuda_attention_prefill p = {
                    .q_type = DTYPE_F32,
                    .kv_type = DTYPE_BF16,
                    .out_type = out_type,
                    .q = qa + r0 * q_pad,
                    .q_stride = q_pad,
                    .k = ly->k_cache,
                    .v = ly->v_cache,
                    .kv_stride = kv_pad,
                    .out = (char *)out + out_off,
                    .out_stride = q_pad,
                    .n_q = b->n_tokens[i],
                    .pos0 = b->n_past[i],
                    .n_heads = c->n_heads,
                    .n_kv_heads = c->n_kv_heads,
                    .head_dim = (int)hp,
                    .scale = scale,
                    .block_table = g->table_dev + (size_t)b->slots[i] * (size_t)g->table_cap,
                    .block_size = g->kv_block,
            };
            CM_TRY(cm_kernel(g, cuda_attention_prefill(&p, g->stream), "cuda_attention_prefill"));
        }
    }
    if (!direct) {
        /* the gated q projection holds each head's gate right after its query */
        struct cuda_gate_store gs = {
                .x = att,
                .x_stride = hp,
                .gate = gated ? qf + hd : NULL,
                .gate_stride = 2 * hd,
                .out_type = DTYPE_BF16,
                .out = attb,
                .out_stride = hd,
                .rows = n * c->n_heads,
                .n = hd,
        };
        CM_TRY(cm_kernel(g, cuda_gate_store(&gs, g->stream), "cuda_gate_store"));
    }
    if (!ly->bo)
        return cm_out_proj(g, &ly->wo, attb, q_dim, n);
    CM_TRY(cm_matmul1(g, &ly->wo, attb, q_dim, n, g->buf[CM_X], c->hidden, g->rank == 0));
    cm_mark(g, CUDA_MODEL_OP_OTHER);
    CM_TRY(cm_kernel(g, cuda_add_bias(g->buf[CM_X], c->hidden, ly->bo, n, c->hidden, g->stream),
                     "cuda_add_bias"));
    return cm_allreduce(g, n);
}

/* The state-dependent part of a GDN prefill (conv, recurrence) for sequences [i0, i0 + cnt)
 * of the batch, which hold equal token counts in consecutive rows. One sequence of
 * CM_GDN_CHUNKED_MIN_TOKENS or more takes the chunked kernel; several take one token-by-token
 * launch over all of them (the recurrence has the blocks to fill the GPU then). */
static int cm_gdn_prefill(struct cuda_model *g, struct cm_layer *ly, const struct cm_batch *b,
                          int i0, int cnt)
{
    const struct model_config *c = &g->cfg;
    int Nk = c->lin_k_heads, Nv = c->lin_v_heads, Dk = c->lin_k_dim, Dv = c->lin_v_dim;
    int64_t conv = cm_conv_dim(c), vdim = (int64_t)Nv * Dv;
    int64_t ce = cm_conv_elems(c), se = cm_ssm_elems(c);
    int64_t r0 = b->row0[i0], n_tok = b->n_tokens[i0];
    bool one = cnt == 1;
    /* one sequence: its slot's state directly (the chunked kernel takes no slot array) */
    size_t slot0 = one ? (size_t)b->slots[i0] : 0;
    const float *qkv = (const float *)g->buf[CM_QKV] + r0 * conv;
    float *cx = (float *)g->buf[CM_CONV] + r0 * conv;
    struct cuda_gdn_conv cv = {
            .x = qkv,
            .x_stride = conv,
            .y = cx,
            .y_stride = conv,
            .state = ly->conv_state + slot0 * (size_t)ce,
            .state_stride = ce,
            .w = ly->conv_w,
            .channels = (int)conv,
            .kernel = c->lin_conv_kernel,
            .n_seqs = cnt,
            .n_tok = n_tok,
            .slots = one ? NULL : b->d_seqslot + i0,
    };
    CM_TRY(cm_kernel(g, cuda_gdn_conv(&cv, g->stream), "cuda_gdn_conv"));
    struct cuda_gdn_recurrent rc = {
            .n_seqs = cnt,
            .n_tok = n_tok,
            .n_k_heads = Nk,
            .n_v_heads = Nv,
            .k_dim = Dk,
            .v_dim = Dv,
            .q = cx,
            .k = cx + (int64_t)Nk * Dk,
            .qk_stride = conv,
            .v = cx + 2 * (int64_t)Nk * Dk,
            .v_stride = conv,
            .g = (const float *)g->buf[CM_GG] + r0 * Nv,
            .beta = (const float *)g->buf[CM_BETA] + r0 * Nv,
            .gb_stride = Nv,
            .out = (float *)g->buf[CM_CORE] + r0 * vdim,
            .out_stride = vdim,
            .state = ly->ssm_state + slot0 * (size_t)se,
            .state_stride = se,
            .l2norm = true,
            .q_scale = 1.0f / sqrtf((float)Dk),
            .slots = one ? NULL : b->d_seqslot + i0,
    };
    if (one && n_tok >= CM_GDN_CHUNKED_MIN_TOKENS && Dk <= CUDA_GDN_CHUNKED_MAX_K_DIM)
        return cm_kernel(g, cuda_gdn_chunked(&rc, g->stream), "cuda_gdn_chunked");
    return cm_kernel(g, cuda_gdn_recurrent(&rc, g->stream), "cuda_gdn_recurrent");
}

static int cm_block_gdn(struct cuda_model *g, int l, const struct cm_batch *b)
{
    const struct model_config *c = &g->cfg;
    struct cm_layer *ly = &g->layers[l];
    int64_t n = b->n;
    int Nk = c->lin_k_heads, Nv = c->lin_v_heads, Dk = c->lin_k_dim, Dv = c->lin_v_dim;
    int64_t conv = cm_conv_dim(c), vdim = (int64_t)Nv * Dv;
    float *qkv = g->buf[CM_QKV], *z = g->buf[CM_Z], *bb = g->buf[CM_B], *aa = g->buf[CM_A];

    const struct cm_mat *w[4] = {&ly->qkv, &ly->z, &ly->b, &ly->a};
    float *y[4] = {qkv, z, bb, aa};
    int64_t ys[4] = {conv, vdim, Nv, Nv};
    CM_TRY(cm_normed_matmul(g, 4, w, n, y, ys));

    cm_mark(g, CUDA_MODEL_OP_GDN);
    if (b->decode && b->n_seqs <= CM_GDN_FUSED_MAX_SEQS && Dk <= CUDA_GDN_DECODE_MAX_DIM &&
        Dv <= CUDA_GDN_DECODE_MAX_DIM) {
        /* decode: the conv in place over all sequences, then one fused kernel for the gates,
         * the recurrence and the gated norm, straight to the out projection's bf16 input */
        struct cuda_gdn_conv cv = {
                .x = qkv,
                .x_stride = conv,
                .y = qkv,
                .y_stride = conv,
                .state = ly->conv_state,
                .state_stride = cm_conv_elems(c),
                .w = ly->conv_w,
                .channels = (int)conv,
                .kernel = c->lin_conv_kernel,
                .n_seqs = b->n_seqs,
                .n_tok = 1,
                .slots = b->d_seqslot,
        };
        CM_TRY(cm_kernel(g, cuda_gdn_conv(&cv, g->stream), "cuda_gdn_conv"));
        struct cuda_gdn_decode dd = {
                .n_seqs = b->n_seqs,
                .n_k_heads = Nk,
                .n_v_heads = Nv,
                .k_dim = Dk,
                .v_dim = Dv,
                .q = qkv,
                .k = qkv + (int64_t)Nk * Dk,
                .qk_stride = conv,
                .v = qkv + 2 * (int64_t)Nk * Dk,
                .v_stride = conv,
                .a = aa,
                .b = bb,
                .ab_stride = Nv,
                .neg_a = ly->neg_a,
                .dt_bias = ly->dt_bias,
                .z = z,
                .z_stride = vdim,
                .norm_w = ly->lin_norm,
                .eps = c->rms_eps,
                .q_scale = 1.0f / sqrtf((float)Dk),
                .y_type = DTYPE_BF16,
                .y = g->buf[CM_COREB],
                .y_stride = vdim,
                .state = ly->ssm_state,
                .state_stride = cm_ssm_elems(c),
                .slots = b->d_seqslot,
        };
        CM_TRY(cm_kernel(g, cuda_gdn_decode(&dd, g->stream), "cuda_gdn_decode"));
        return cm_out_proj(g, &ly->out, g->buf[CM_COREB], vdim, n);
    }
    struct cuda_gdn_gates gt = {
            .a = aa,
            .b = bb,
            .a_stride = Nv,
            .b_stride = Nv,
            .neg_a = ly->neg_a,
            .dt_bias = ly->dt_bias,
            .g = g->buf[CM_GG],
            .beta = g->buf[CM_BETA],
            .gb_stride = Nv,
            .rows = n,
            .n_heads = Nv,
    };
    CM_TRY(cm_kernel(g, cuda_gdn_gates(&gt, g->stream), "cuda_gdn_gates"));
    /* runs of equal-length sequences go together (a long one alone takes the chunked kernel) */
    for (int i = 0, cnt; i < b->n_seqs; i += cnt) {
        cnt = 1;
        while (i + cnt < b->n_seqs && b->n_tokens[i + cnt] == b->n_tokens[i])
            cnt++;
        CM_TRY(cm_gdn_prefill(g, ly, b, i, cnt));
    }
    struct cuda_gdn_gated_norm gn = {
            .o = g->buf[CM_CORE],
            .o_stride = Dv,
            .z = z,
            .z_stride = Dv,
            .w = ly->lin_norm,
            .y_type = DTYPE_BF16,
            .y = g->buf[CM_COREB],
            .y_stride = Dv,
            .rows = n * Nv,
            .dim = Dv,
            .eps = c->rms_eps,
    };
    CM_TRY(cm_kernel(g, cuda_gdn_gated_norm(&gn, g->stream), "cuda_gdn_gated_norm"));
    return cm_out_proj(g, &ly->out, g->buf[CM_COREB], vdim, n);
}

static int cm_block_mlp(struct cuda_model *g, int l, int64_t n)
{
    const struct model_config *c = &g->cfg;
    struct cm_layer *ly = &g->layers[l];
    int64_t I = c->intermediate;
    if (!g->no_fusion && n <= CM_MATVEC_MAX_ROWS &&
        cuda_matvec_rms_fits(c->hidden, c->hidden, (int)n)) {
        /* norm, gate/up and SwiGLU in one launch, straight to down's bf16 input */
        cm_mark(g, CUDA_MODEL_OP_MATMUL);
        struct cuda_matvec_rms a = {.n = 2,
                                    .w = {ly->gate.w, ly->up.w},
                                    .rows = {I, I},
                                    .cols = c->hidden,
                                    .x = g->buf[CM_X],
                                    .x_stride = c->hidden,
                                    .batch = (int)n,
                                    .eps = c->rms_eps,
                                    .swiglu = true,
                                    .out = g->buf[CM_GU],
                                    .out_stride = I};
        CM_TRY(cm_kernel(g, cuda_matvec_rms(&a, g->stream), "cuda_matvec_rms (swiglu)"));
        return cm_out_proj(g, &ly->down, g->buf[CM_GU], I, n);
    }
    const struct cm_mat *w[2] = {&ly->gate, &ly->up};
    float *y[2] = {g->buf[CM_G], g->buf[CM_U]};
    int64_t ys[2] = {I, I};
    CM_TRY(cm_normed_matmul(g, 2, w, n, y, ys));
    cm_mark(g, CUDA_MODEL_OP_OTHER);
    struct cuda_silu_mul sm = {
            .in_type = DTYPE_F32,
            .out_type = DTYPE_BF16,
            .gate = g->buf[CM_G],
            .up = g->buf[CM_U],
            .in_stride = I,
            .out = g->buf[CM_GU],
            .out_stride = I,
            .rows = n,
            .n = I,
    };
    CM_TRY(cm_kernel(g, cuda_silu_mul(&sm, g->stream), "cuda_silu_mul"));
    return cm_out_proj(g, &ly->down, g->buf[CM_GU], I, n);
}

/* Everything between the upload of the ids and the logits on the GPU: the part a decode graph
 * captures. Logits rows: n_out. */
static int cm_run(struct cuda_model *g, const struct cm_batch *b, enum model_logits which,
                  int64_t n_out)
{
    const struct model_config *c = &g->cfg;
    int64_t H = c->hidden;
    float *x = g->buf[CM_X];
    cm_mark(g, CUDA_MODEL_OP_OTHER);
    struct cuda_embed e = {
            .table_type = DTYPE_BF16,
            .table = g->embed,
            .vocab = g->full.vocab_size, /* replicated on every rank */
            .dim = H,
            .ids = b->d_ids,
            .n_tok = b->n,
            .out_type = DTYPE_F32,
            .out = x,
            .out_stride = H,
    };
    CM_TRY(cm_kernel(g, cuda_embed(&e, g->stream), "cuda_embed"));
    for (int l = 0; l < c->n_layers; l++) {
        /* each block normalises its own input (the norms' weights live in the products) */
        if (g->layers[l].kind == LAYER_KIND_LINEAR_ATTENTION)
            CM_TRY(cm_block_gdn(g, l, b));
        else
            CM_TRY(cm_block_attention(g, l, b));
        CM_TRY(cm_block_mlp(g, l, b->n));
    }
    /* final norm of the rows whose logits are wanted */
    char *xo = g->buf[CM_XO];
    if (which == MODEL_LOGITS_ALL || b->decode) {
        CM_TRY(cm_norm(g, x, xo, g->final_norm, n_out));
    } else {
        for (int i = 0; i < b->n_seqs; i++) {
            int64_t src = b->row0[i] + b->n_tokens[i] - 1;
            CM_TRY(cm_norm(g, x + src * H, xo + (size_t)(i * H) * 2, g->final_norm, 1));
        }
    }
    return cm_matmul1(g, &g->lm_head, xo, H, n_out, g->logits, c->vocab_size, false);
}

/* Runs a decode step through the graph for its batch size, capturing it on first use. */
static int cm_run_graph(struct cuda_model *g, const struct cm_batch *b, int64_t n_out)
{
    cudaGraphExec_t *exec = &g->graphs[b->n_seqs];
    if (!*exec) {
        cudaGraph_t graph = NULL;
        CM_TRY(cm_cuda(g, cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal),
                       "cudaStreamBeginCapture"));
        int rc = cm_run(g, b, MODEL_LOGITS_LAST, n_out);
        cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
        if (rc == 0)
            rc = cm_cuda(g, e, "cudaStreamEndCapture");
        if (rc == 0)
            rc = cm_cuda(g, cudaGraphInstantiate(exec, graph, 0), "cudaGraphInstantiate");
        if (graph)
            cudaGraphDestroy(graph);
        if (rc) {
            *exec = NULL;
            return -1;
        }
    }
    return cm_cuda(g, cudaGraphLaunch(*exec, g->stream), "cudaGraphLaunch");
}

/* ---- tensor-parallel agreement and failure ------------------------------------------------ */

/* The ranks' meeting before a call's GPU work is queued: rc is this rank's word (0 ready, -1
 * failed, its reason in its error). Returns 0 when every rank is ready; else -1, a peer's
 * reason in this rank's error, and no rank queues anything. Every rank of a forward call
 * passes here exactly once (cm_forward_job makes a rank that failed earlier come). */
static int cm_tp_agree(struct cuda_model *g, int rc)
{
    if (g->fault == CUDA_MODEL_FAULT_PREPARE) {
        g->fault = CUDA_MODEL_FAULT_NONE;
        rc = cm_fail(g, "injected fault before the step was queued (test)");
    }
    if (g->tp <= 1)
        return rc;
    struct cm_tp_group *grp = g->grp;
    grp->prep_rc[g->rank] = rc;
    g->tp_stage = CM_TP_REFUSED;
    pthread_barrier_wait(&grp->agree); /* also orders the failing rank's error text */
    for (int r = 0; r < g->tp; r++)
        if (grp->prep_rc[r]) {
            if (rc == 0)
                snprintf(g->errbuf, sizeof(g->errbuf), "rank %d: %.480s", r, grp->ranks[r]->errbuf);
            /* only the table and id uploads may be queued: let them finish before the next
             * call rewrites their pinned source */
            cudaStreamSynchronize(g->stream);
            return -1;
        }
    g->tp_stage = CM_TP_QUEUED;
    return 0;
}

static double cm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* True when the stream went idle (or reports an error) within limit_s seconds. */
static bool cm_stream_idle_within(cudaStream_t s, double limit_s)
{
    double t0 = cm_now();
    while (cudaStreamQuery(s) == cudaErrorNotReady)
        if (cm_now() - t0 > limit_s)
            return false;
    return true;
}

/* A rank failed after queueing work (this one, or a peer that raised the group's flag). The
 * peer-memory kernels are released through the group's abort flag. The failing rank's own
 * queued collectives all have partners (its peers queued at least as far), so its stream
 * drains by itself; a rank still waiting after CM_TP_DRAIN_S is stuck in an NCCL collective
 * whose partner never comes and aborts its own communicator (never another rank's: that rank's
 * thread may be queueing work on it, and a peer's kernels may still read its buffers).
 * cuda_model_forward() aborts the remaining communicators once every rank's thread is done.
 * The model is broken from here on. Once per rank and call. */
static void cm_tp_fail(struct cuda_model *g)
{
    if (g->tp_stage == CM_TP_ABORTED)
        return;
    g->tp_stage = CM_TP_ABORTED;
    __atomic_store_n(&g->grp->failed, 1, __ATOMIC_RELEASE);
    cuda_allreduce_abort(g->grp->ar);
    bool drained = cm_stream_idle_within(g->stream, CM_TP_DRAIN_S);
#ifdef CORTEX_HAVE_NCCL
    if (!drained && g->comm) {
        ncclCommAbort(g->comm);
        g->comm = NULL;
    }
#else
    (void)drained;
#endif
    cudaStreamSynchronize(g->stream);
}

#ifdef CORTEX_HAVE_NCCL
struct cm_abort_job {
    ncclComm_t comm;
    int device, done; /* done: atomic */
};

static void *cm_abort_main(void *p)
{
    struct cm_abort_job *j = p;
    cudaSetDevice(j->device);
    ncclCommAbort(j->comm);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}
#endif

/* After a failed call of a broken group, every rank's thread done and its stream idle: the
 * communicators still standing are aborted (ncclCommDestroy would wait for the others), and
 * the decode graphs leaked rather than destroyed (NCCL releases a captured collective's plan
 * through its communicator, which is gone). The aborts run at once, one thread each, and an
 * abort that has not returned within CM_TP_ABORT_S is left behind: with NCCL for every
 * all-reduce, after one rank aborted its communicator with a collective in flight, aborting
 * the idle peer's was seen to block for good (NCCL 2.28, 2 x H200); a leaked communicator
 * costs memory, a hung forward call the whole neuron. */
static void cm_tp_abort_all(struct cuda_model *g)
{
#ifdef CORTEX_HAVE_NCCL
    struct cm_abort_job *jobs[CUDA_MODEL_MAX_TP] = {NULL};
    pthread_t th[CUDA_MODEL_MAX_TP];
    bool started[CUDA_MODEL_MAX_TP] = {false};
    for (int r = 0; r < g->tp; r++) {
        struct cuda_model *m = g->ranks[r];
        if (!m->comm)
            continue;
        jobs[r] = xcalloc(1, sizeof(*jobs[r]));
        *jobs[r] = (struct cm_abort_job){.comm = m->comm, .device = m->device};
        m->comm = NULL;
        started[r] = pthread_create(&th[r], NULL, cm_abort_main, jobs[r]) == 0;
        if (!started[r]) {
            cm_abort_main(jobs[r]);
            free(jobs[r]);
        }
    }
    double t0 = cm_now();
    for (int r = 0; r < g->tp; r++) {
        if (!started[r])
            continue;
        while (!__atomic_load_n(&jobs[r]->done, __ATOMIC_ACQUIRE) &&
               cm_now() - t0 < CM_TP_ABORT_S) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (__atomic_load_n(&jobs[r]->done, __ATOMIC_ACQUIRE)) {
            pthread_join(th[r], NULL);
            free(jobs[r]);
        } else {
            fprintf(stderr,
                    "cuda_model: %s: rank %d's NCCL communicator did not abort within %.0f s; "
                    "left behind\n",
                    g->name, r, CM_TP_ABORT_S);
            pthread_detach(th[r]); /* the job stays allocated: the thread still uses it */
        }
    }
#endif
    for (int r = 0; r < g->tp; r++)
        memset(g->ranks[r]->graphs, 0, sizeof(g->ranks[r]->graphs));
    cudaSetDevice(g->device);
}

/* The end of a forward call: waits for this rank's stream like cudaStreamSynchronize, but
 * under tensor parallelism gives up (and aborts the collectives) when a peer has failed, the
 * stream reports an error, or the step outlives CM_TP_STEP_LIMIT_S. */
static int cm_tp_wait(struct cuda_model *g)
{
    if (g->tp <= 1)
        return cm_cuda(g, cudaStreamSynchronize(g->stream), "forward");
    double t0 = cm_now();
    for (unsigned it = 1;; it++) {
        cudaError_t e = cudaStreamQuery(g->stream);
        if (e == cudaSuccess)
            return 0;
        if (e != cudaErrorNotReady) {
            cm_cuda(g, e, "forward");
            cm_tp_fail(g);
            return -1;
        }
        if (__atomic_load_n(&g->grp->failed, __ATOMIC_ACQUIRE)) {
            cm_tp_fail(g);
            return cm_fail(g, "another rank failed during the step: collectives aborted");
        }
        if (it % 1024 == 0 && cm_now() - t0 > CM_TP_STEP_LIMIT_S) {
            cm_fail(g, "step still running after %.0f s: collectives aborted", CM_TP_STEP_LIMIT_S);
            cm_tp_fail(g);
            return -1;
        }
    }
}

static int cm_forward(struct cuda_model *g, const int *slots, const int64_t *n_past,
                      const int32_t *const *tokens, const int64_t *n_tokens, int n_seqs,
                      enum model_logits which, float *logits, int64_t *row0)
{
    const struct model_config *c = &g->cfg;
    int64_t n = 0, need = 0;
    bool decode = true;
    for (int i = 0; i < n_seqs; i++) {
        if (n_past[i] + n_tokens[i] > g->max_context)
            return cm_fail(g, "sequence %d would hold %lld tokens, more than the context of %lld",
                           i, (long long)(n_past[i] + n_tokens[i]), (long long)g->max_context);
        row0[i] = n;
        n += n_tokens[i];
        decode = decode && n_tokens[i] == 1;
        if (n_past[i] + n_tokens[i] > need)
            need = n_past[i] + n_tokens[i];
    }
    int64_t n_out = which == MODEL_LOGITS_ALL ? n : n_seqs;
    CM_TRY(cm_pool_grow(g, 0, need, false));
    for (int i = 0; i < n_seqs; i++)
        CM_TRY(cm_seq_blocks(g, slots[i], n_past[i] + n_tokens[i]));
    if (g->table_dirty) {
        CM_TRY(cm_cuda(
                g,
                cudaMemcpyAsync(g->table_dev, g->table,
                                sizeof(int32_t) * (size_t)g->slots_cap * (size_t)g->table_cap,
                                cudaMemcpyHostToDevice, g->stream),
                "cudaMemcpyAsync (block table)"));
        g->table_dirty = false;
    }
    CM_TRY(cm_scratch(g, n));
    CM_TRY(cm_logits_room(g, n_out));
    CM_TRY(cm_attn_work(g, decode ? n_seqs : 1));

    /* ids, positions, row slots, sequence slots and lengths in one copy */
    int64_t cap = g->rows_cap;
    int32_t *h = g->ints_host;
    for (int i = 0; i < n_seqs; i++) {
        for (int64_t j = 0; j < n_tokens[i]; j++) {
            h[row0[i] + j] = tokens[i][j];
            h[cap + row0[i] + j] = (int32_t)(n_past[i] + j);
            h[2 * cap + row0[i] + j] = slots[i];
        }
        h[3 * cap + i] = slots[i];
        h[4 * cap + i] = (int32_t)(n_past[i] + n_tokens[i]);
    }
    int32_t *d = g->buf[CM_INTS];
    CM_TRY(cm_cuda(g,
                   cudaMemcpyAsync(d, h, sizeof(int32_t) * 5 * (size_t)cap, cudaMemcpyHostToDevice,
                                   g->stream),
                   "cudaMemcpyAsync (ids)"));
    struct cm_batch b = {
            .n_seqs = n_seqs,
            .n = n,
            .decode = decode,
            .slots = slots,
            .n_past = n_past,
            .n_tokens = n_tokens,
            .row0 = row0,
            .d_ids = d,
            .d_pos = d + cap,
            .d_rowslot = d + 2 * cap,
            .d_seqslot = d + 3 * cap,
            .d_lens = d + 4 * cap,
    };
    CM_TRY(cm_tp_agree(g, 0));
    if (decode && !g->no_graphs && !g->profiling && n_seqs <= CM_MAX_GRAPH)
        CM_TRY(cm_run_graph(g, &b, n_out));
    else
        CM_TRY(cm_run(g, &b, which, n_out));
    /* the step first, then the logits: a copy to pageable memory blocks the host until the
     * stream drains, and a rank blocked there could not notice a failed peer (cm_tp_wait) */
    CM_TRY(cm_tp_wait(g));
    if (logits && g->tp <= 1)
        CM_TRY(cm_cuda(g,
                       cudaMemcpyAsync(logits, g->logits,
                                       sizeof(float) * (size_t)(n_out * c->vocab_size),
                                       cudaMemcpyDeviceToHost, g->stream),
                       "cudaMemcpyAsync (logits)"));
    if (logits && g->tp > 1) /* this rank's vocabulary columns of every row */
        CM_TRY(cm_cuda(g,
                       cudaMemcpy2DAsync(logits + g->vocab_off,
                                         sizeof(float) * (size_t)g->full.vocab_size, g->logits,
                                         sizeof(float) * (size_t)c->vocab_size,
                                         sizeof(float) * (size_t)c->vocab_size, (size_t)n_out,
                                         cudaMemcpyDeviceToHost, g->stream),
                       "cudaMemcpy2DAsync (logits)"));
    if (logits)
        CM_TRY(cm_cuda(g, cudaStreamSynchronize(g->stream), "logits"));
    cm_marks_collect(g);
    return 0;
}

/* A forward call's arguments, shared by the ranks (each keeps its own row offsets). */
struct cm_fwd {
    const int *slots;
    const int64_t *n_past;
    const int32_t *const *tokens;
    const int64_t *n_tokens;
    int n_seqs;
    enum model_logits which;
    float *logits;
};

static int cm_forward_job(struct cuda_model *g, void *arg)
{
    const struct cm_fwd *f = arg;
    int64_t *row0 = xmalloc(sizeof(int64_t) * (size_t)f->n_seqs);
    g->tp_stage = CM_TP_PREPARING;
    int rc = cm_forward(g, f->slots, f->n_past, f->tokens, f->n_tokens, f->n_seqs, f->which,
                        f->logits, row0);
    if (rc && g->tp > 1 && g->tp_stage == CM_TP_PREPARING)
        (void)cm_tp_agree(g, -1); /* the peers wait there for this rank's word */
    else if (rc && g->tp > 1 && g->tp_stage == CM_TP_QUEUED)
        cm_tp_fail(g);
    free(row0);
    g->n_marks = 0;
    return rc;
}

int cuda_model_forward(struct cuda_model *g, const int *slots, const int64_t *n_past,
                       const int32_t *const *tokens, const int64_t *n_tokens, int n_seqs,
                       enum model_logits which, float *logits, char *err, size_t errlen)
{
    if (n_seqs < 1) {
        cm_fail(g, "no sequence to run");
        return cm_report(g, err, errlen);
    }
    if (g->grp && __atomic_load_n(&g->grp->failed, __ATOMIC_ACQUIRE)) {
        cm_fail(g, "a rank failed in an earlier call and the collectives were aborted: the "
                   "model can only be destroyed");
        return cm_report(g, err, errlen);
    }
    cudaSetDevice(g->device);
    struct cm_fwd f = {slots, n_past, tokens, n_tokens, n_seqs, which, logits};
    if (cm_on_ranks(g, cm_forward_job, &f)) {
        if (g->grp && __atomic_load_n(&g->grp->failed, __ATOMIC_ACQUIRE))
            cm_tp_abort_all(g);
        return cm_report(g, err, errlen);
    }
    return 0;
}
