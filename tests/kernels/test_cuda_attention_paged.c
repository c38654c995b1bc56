/*
 * tests/kernels/test_cuda_attention_paged.c — decode and prefill attention over a paged KV
 * cache (cuda_attention.h, block_table set) against cpu_attention() on each sequence's
 * contiguous cache: the blocks of every sequence are a shuffle of one pool's, the pool's
 * unused blocks hold large values (a read through a wrong table entry shows), the table rows
 * are picked through a slot array in another order than the sequences. Decode at the 27B shape
 * (24/4 heads of 256) with lengths 0..1000 and a small GQA shape; prefill through the CUDA-core
 * and the tensor-core kernel, from position 0 and continuing a cache, block sizes 16, 32 and 7.
 */
#include "cpu_ops.h"
#include "cuda_attention.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POISON 50.0f /* what unused pool rows hold */

/* A pool of n_blocks blocks of bs rows of kv_stride floats, every row POISON. */
static float *pool_new(int64_t n_blocks, int bs, int64_t kv_stride)
{
    size_t n = (size_t)(n_blocks * bs * kv_stride);
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = POISON;
    return p;
}

/* ids 0 .. n-1 in random order. */
static int32_t *shuffled(int64_t n)
{
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = ktest_below(i + 1);
        int32_t t = ids[i];
        ids[i] = ids[j], ids[j] = t;
    }
    return ids;
}

/* Copies positions 0 .. len-1 of a contiguous cache into the pool through table. */
static void pool_scatter(float *pool, const float *x, int64_t len, const int32_t *table, int bs,
                         int64_t kv_stride)
{
    for (int64_t p = 0; p < len; p++)
        memcpy(pool + ((int64_t)table[p / bs] * bs + p % bs) * kv_stride, x + p * kv_stride,
               sizeof(float) * (size_t)kv_stride);
}

static void *upload_bf16(const float *x, size_t n)
{
    uint16_t *b = ktest_to_bf16(x, n);
    void *d = ktest_dev_upload(b, sizeof(uint16_t) * n);
    free(b);
    return d;
}

struct paged_decode_case {
    int n_seqs, n_heads, n_kv_heads, head_dim, bs;
    int32_t lens[5];
};

static void decode_run(const struct paged_decode_case *c)
{
    int hd = c->head_dim, row = c->n_heads * hd, bs = c->bs, n = c->n_seqs;
    int64_t kv_stride = (int64_t)c->n_kv_heads * hd, max_len = 1;
    for (int s = 0; s < n; s++)
        max_len = c->lens[s] > max_len ? c->lens[s] : max_len;
    int64_t tcap = (max_len + bs - 1) / bs, used = 0;
    for (int s = 0; s < n; s++)
        used += (c->lens[s] + bs - 1) / bs;
    int64_t n_blocks = used + 3; /* spares stay poisoned */
    int32_t *ids = shuffled(n_blocks);
    /* the sequences' table rows in reverse order, one row more than sequences */
    int rows_n = n + 1;
    int32_t *table = xmalloc(sizeof(int32_t) * (size_t)(rows_n * tcap));
    for (int64_t i = 0; i < rows_n * tcap; i++)
        table[i] = -1;
    int32_t slots[5];
    float *pool_k = pool_new(n_blocks, bs, kv_stride), *pool_v = pool_new(n_blocks, bs, kv_stride);
    float *q = ktest_random((size_t)(n * row), -2.0f, 2.0f);
    float *ref = xcalloc((size_t)(n * row), sizeof(float));
    float scale = 1.0f / sqrtf((float)hd);
    int64_t next = 0;
    for (int s = 0; s < n; s++) {
        slots[s] = n - s;
        int32_t *t = table + slots[s] * tcap;
        int64_t len = c->lens[s];
        for (int64_t b = 0; b < (len + bs - 1) / bs; b++)
            t[b] = ids[next++];
        float *k = ktest_random((size_t)((len ? len : 1) * kv_stride), -1.0f, 1.0f);
        float *v = ktest_random((size_t)((len ? len : 1) * kv_stride), -1.0f, 1.0f);
        ktest_round_bf16(k, (size_t)(len * kv_stride));
        ktest_round_bf16(v, (size_t)(len * kv_stride));
        pool_scatter(pool_k, k, len, t, bs, kv_stride);
        pool_scatter(pool_v, v, len, t, bs, kv_stride);
        if (len > 0) {
            struct cpu_attention a = {.q = q + s * row,
                                      .k = k,
                                      .v = v,
                                      .kv_stride = kv_stride,
                                      .out = ref + s * row,
                                      .n_q = 1,
                                      .pos0 = len - 1,
                                      .n_heads = c->n_heads,
                                      .n_kv_heads = c->n_kv_heads,
                                      .head_dim = hd,
                                      .scale = scale};
            cpu_attention(NULL, &a);
        }
        free(k), free(v);
    }
    size_t pool_n = (size_t)(n_blocks * bs * kv_stride);
    void *dk = upload_bf16(pool_k, pool_n), *dv = upload_bf16(pool_v, pool_n);
    void *dq = ktest_dev_upload(q, sizeof(float) * (size_t)(n * row));
    void *dlens = ktest_dev_upload(c->lens, sizeof(int32_t) * (size_t)n);
    void *dslots = ktest_dev_upload(slots, sizeof(int32_t) * (size_t)n);
    void *dtable = ktest_dev_upload(table, sizeof(int32_t) * (size_t)(rows_n * tcap));
    void *dout = ktest_dev_alloc(sizeof(float) * (size_t)(n * row));
    ktest_dev_poison(dout, sizeof(float) * (size_t)(n * row));
    int splits = cuda_attention_decode_splits(n, c->n_heads, c->n_kv_heads, tcap * bs);
    void *work = ktest_dev_alloc(cuda_attention_decode_work_bytes(n, c->n_heads, hd, splits));
    struct cuda_attention_decode a = {.q_type = DTYPE_F32,
                                      .kv_type = DTYPE_BF16,
                                      .out_type = DTYPE_F32,
                                      .q = dq,
                                      .q_stride = row,
                                      .k = dk,
                                      .v = dv,
                                      .kv_stride = kv_stride,
                                      .lens = dlens,
                                      .max_len = tcap * bs,
                                      .out = dout,
                                      .out_stride = row,
                                      .n_seqs = n,
                                      .n_heads = c->n_heads,
                                      .n_kv_heads = c->n_kv_heads,
                                      .head_dim = hd,
                                      .scale = scale,
                                      .n_splits = splits,
                                      .work = work,
                                      .slots = dslots,
                                      .block_table = dtable,
                                      .table_stride = tcap,
                                      .block_size = bs};
    int rc = cuda_attention_decode(&a, NULL);
    float *got = ktest_download_f32(dout, (size_t)(n * row), 0);
    char shape[128];
    int w = snprintf(shape, sizeof shape, "%d/%d hd=%d block=%d lens=", c->n_heads, c->n_kv_heads,
                     hd, bs);
    for (int s = 0; s < n && w < (int)sizeof shape - 8; s++)
        w += snprintf(shape + w, sizeof shape - (size_t)w, "%s%d", s ? "," : "", c->lens[s]);
    ktest_check("attn_decode paged", shape, rc, got, ref, (size_t)(n * row), 1e-4);
    /* a table that does not cover max_len is refused */
    a.table_stride = tcap - 1;
    if (tcap > 1)
        ktest_check_rejected("attn_decode paged", "table shorter than max_len",
                             cuda_attention_decode(&a, NULL));
    free(ids), free(table), free(pool_k), free(pool_v), free(q), free(ref), free(got);
    ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dq), ktest_dev_free(dlens);
    ktest_dev_free(dslots), ktest_dev_free(dtable), ktest_dev_free(dout), ktest_dev_free(work);
}

struct paged_prefill_case {
    int64_t n_q, pos0;
    int n_heads, n_kv_heads, head_dim, bs;
};

static void prefill_run(const struct paged_prefill_case *c, enum cuda_attention_impl impl)
{
    int hd = c->head_dim, row = c->n_heads * hd, bs = c->bs;
    int64_t kv_stride = (int64_t)c->n_kv_heads * hd, n_ctx = c->pos0 + c->n_q;
    int64_t nb = (n_ctx + bs - 1) / bs, n_blocks = nb + 4;
    int32_t *table = shuffled(n_blocks); /* the first nb entries are the sequence's */
    float *k = ktest_random((size_t)(n_ctx * kv_stride), -1.0f, 1.0f);
    float *v = ktest_random((size_t)(n_ctx * kv_stride), -1.0f, 1.0f);
    ktest_round_bf16(k, (size_t)(n_ctx * kv_stride));
    ktest_round_bf16(v, (size_t)(n_ctx * kv_stride));
    float *q = ktest_random((size_t)(c->n_q * row), -2.0f, 2.0f);
    float *ref = xmalloc(sizeof(float) * (size_t)(c->n_q * row));
    float scale = 1.0f / sqrtf((float)hd);
    struct cpu_attention ca = {.q = q,
                               .k = k,
                               .v = v,
                               .kv_stride = kv_stride,
                               .out = ref,
                               .n_q = c->n_q,
                               .pos0 = c->pos0,
                               .n_heads = c->n_heads,
                               .n_kv_heads = c->n_kv_heads,
                               .head_dim = hd,
                               .scale = scale};
    cpu_attention(NULL, &ca);
    float *pool_k = pool_new(n_blocks, bs, kv_stride), *pool_v = pool_new(n_blocks, bs, kv_stride);
    pool_scatter(pool_k, k, n_ctx, table, bs, kv_stride);
    pool_scatter(pool_v, v, n_ctx, table, bs, kv_stride);
    size_t pool_n = (size_t)(n_blocks * bs * kv_stride);
    void *dk = upload_bf16(pool_k, pool_n), *dv = upload_bf16(pool_v, pool_n);
    void *dq = ktest_dev_upload(q, sizeof(float) * (size_t)(c->n_q * row));
    void *dtable = ktest_dev_upload(table, sizeof(int32_t) * (size_t)n_blocks);
    void *dout = ktest_dev_alloc(sizeof(float) * (size_t)(c->n_q * row));
    ktest_dev_poison(dout, sizeof(float) * (size_t)(c->n_q * row));
    struct cuda_attention_prefill a = {.q_type = DTYPE_F32,
                                       .kv_type = DTYPE_BF16,
                                       .out_type = DTYPE_F32,
                                       .q = dq,
                                       .q_stride = row,
                                       .k = dk,
                                       .v = dv,
                                       .kv_stride = kv_stride,
                                       .out = dout,
                                       .out_stride = row,
                                       .n_q = c->n_q,
                                       .pos0 = c->pos0,
                                       .n_heads = c->n_heads,
                                       .n_kv_heads = c->n_kv_heads,
                                       .head_dim = hd,
                                       .scale = scale,
                                       .impl = impl,
                                       .block_table = dtable,
                                       .block_size = bs};
    int rc = cuda_attention_prefill(&a, NULL);
    float *got = ktest_download_f32(dout, (size_t)(c->n_q * row), 0);
    char shape[128];
    snprintf(shape, sizeof shape, "%s n_q=%lld pos0=%lld %d/%d hd=%d block=%d",
             impl == CUDA_ATTENTION_IMPL_TENSOR ? "tensor" : "tiled", (long long)c->n_q,
             (long long)c->pos0, c->n_heads, c->n_kv_heads, hd, bs);
    /* the tensor cores round queries and softmax weights to bf16 */
    ktest_check("attn_prefill paged", shape, rc, got, ref, (size_t)(c->n_q * row),
                impl == CUDA_ATTENTION_IMPL_TENSOR ? KTEST_BOUND_BF16 : 1e-4);
    free(table), free(k), free(v), free(q), free(ref), free(pool_k), free(pool_v), free(got);
    ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dq), ktest_dev_free(dtable);
    ktest_dev_free(dout);
}

int main(void)
{
    ktest_init("test_cuda_attention_paged");
    const struct paged_decode_case dc[] = {
            {5, 24, 4, 256, 32, {1000, 1, 0, 33, 517}}, /* 27B shape */
            {4, 8, 2, 64, 16, {17, 16, 200, 3}},
            {3, 4, 4, 128, 7, {50, 6, 7}},
    };
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++)
        decode_run(&dc[i]);
    const struct paged_prefill_case pc[] = {
            {300, 0, 24, 4, 256, 32},  /* 27B shape prompt */
            {65, 400, 24, 4, 256, 16}, /* a chunk continuing a cache */
            {63, 10, 8, 2, 64, 7},     /* a block size that cuts tiles anywhere */
            {1, 99, 4, 4, 128, 16},
    };
    for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
        prefill_run(&pc[i], CUDA_ATTENTION_IMPL_TILED);
        prefill_run(&pc[i], CUDA_ATTENTION_IMPL_TENSOR);
    }
    return ktest_finish();
}
