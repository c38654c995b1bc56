/*
 * tests/kernels/test_cuda_attn_prep.c — the fused attention input pass (cuda_attn_prep) against
 * its CPU twins: cpu_rmsnorm per q/k head (plain and zero-centred, or none), cpu_rope (NeoX
 * and interleaved pairs, partial rotary), then the zero padding and the bf16 cast of keys and
 * values. Shapes: qwen3_5 27B's gated q projection (heads of 256, rotary 64), a llama layer
 * (heads of 128, full rotary, no norms), the tiny fixtures' heads of 16 padded to 32, odd sizes;
 * rows at random distinct (slot, position) pairs of a pool, contiguous per slot or paged (each
 * slot a row of a block table of shuffled blocks, block sizes 16 and 5). Checks the queries
 * with their pad columns and every written cache row.
 */
#include "cpu_ops.h"
#include "cuda_attn_prep.h"
#include "dtype.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(n) (sizeof(float) * (size_t)(n))

struct prep_case {
    int64_t rows;
    int nq, nkv, hd, hp, rot;
    int gated, norm, zero_centred, neox;
    int block; /* > 0: a paged cache of blocks of this many positions */
};

static void prep_run(const struct prep_case *c)
{
    int64_t rows = c->rows, qhs = c->gated ? 2 * c->hd : c->hd;
    int64_t qs = c->nq * qhs + 3, ks = (int64_t)c->nkv * c->hd + 1, vs = ks + 2;
    int64_t qos = (int64_t)c->nq * c->hp + 4, kvd = (int64_t)c->nkv * c->hp;
    int slots_n = 3, ctx = (int)rows + 5;
    int64_t slot_stride = ctx * kvd + 7;
    float eps = 1e-6f;
    float *q = ktest_random((size_t)(rows * qs), -2.0f, 2.0f);
    float *k = ktest_random((size_t)(rows * ks), -2.0f, 2.0f);
    float *v = ktest_random((size_t)(rows * vs), -2.0f, 2.0f);
    float *qn = ktest_random((size_t)c->hd, c->zero_centred ? -0.4f : 0.5f,
                             c->zero_centred ? 0.4f : 1.5f);
    float *kn = ktest_random((size_t)c->hd, c->zero_centred ? -0.4f : 0.5f,
                             c->zero_centred ? 0.4f : 1.5f);
    float *inv = xmalloc(F(c->rot / 2 + 1));
    cpu_rope_inv_freq(inv, c->rot, 1e7f);
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)rows);
    int32_t *slot = xmalloc(sizeof(int32_t) * (size_t)rows);
    /* distinct (slot, position) pairs: the jump is larger than any two rows' r / slots_n
     * differ by, and keeps positions below ctx */
    int64_t jump = ctx - rows / slots_n - 1;
    for (int64_t r = 0; r < rows; r++) {
        slot[r] = (int32_t)(r % slots_n);
        pos[r] = (int32_t)(r / slots_n + (ktest_below(2) ? jump : 0));
    }
    float *dq = ktest_dev_upload(q, F(rows * qs)), *dk = ktest_dev_upload(k, F(rows * ks));
    float *dv = ktest_dev_upload(v, F(rows * vs));
    float *dqn = ktest_dev_upload(qn, F(c->hd)), *dkn = ktest_dev_upload(kn, F(c->hd));
    float *dinv = ktest_dev_upload(inv, F(c->rot / 2 + 1));
    int32_t *dpos = ktest_dev_upload(pos, sizeof(int32_t) * (size_t)rows);
    int32_t *dslot = ktest_dev_upload(slot, sizeof(int32_t) * (size_t)rows);
    float *dqo = ktest_dev_alloc(F(rows * qos));
    /* paged: every slot's blocks are a shuffle of the pool's, two spare blocks never used */
    int64_t tcap = c->block ? (ctx + c->block - 1) / c->block : 0;
    int64_t n_blocks = slots_n * tcap + 2;
    int32_t *table = xmalloc(sizeof(int32_t) * (size_t)(n_blocks + 1));
    for (int64_t i = 0; i < n_blocks; i++)
        table[i] = (int32_t)i;
    for (int64_t i = n_blocks - 1; i > 0; i--) {
        int64_t j = ktest_below(i + 1);
        int32_t t = table[i];
        table[i] = table[j], table[j] = t;
    }
    int32_t *dtable = ktest_dev_upload(table, sizeof(int32_t) * (size_t)(n_blocks + 1));
    if (c->block)
        slot_stride = 0;
    size_t cache_elems =
            c->block ? (size_t)(n_blocks * c->block * kvd) : (size_t)(slots_n * slot_stride);
    size_t cache_bytes = 2 * cache_elems;
    void *dkc = ktest_dev_alloc(cache_bytes), *dvc = ktest_dev_alloc(cache_bytes);
    struct cuda_attn_prep a = {.rows = rows,
                               .n_heads = c->nq,
                               .n_kv_heads = c->nkv,
                               .head_dim = c->hd,
                               .head_pad = c->hp,
                               .q = dq,
                               .q_stride = qs,
                               .q_head_stride = qhs,
                               .k = dk,
                               .v = dv,
                               .k_stride = ks,
                               .v_stride = vs,
                               .q_norm = c->norm ? dqn : NULL,
                               .k_norm = c->norm ? dkn : NULL,
                               .eps = eps,
                               .zero_centred = c->zero_centred,
                               .rot_dim = c->rot,
                               .neox = c->neox,
                               .inv_freq = dinv,
                               .pos = dpos,
                               .q_out = dqo,
                               .q_out_stride = qos,
                               .k_cache = dkc,
                               .v_cache = dvc,
                               .slot_stride = slot_stride,
                               .slot = dslot,
                               .block_table = c->block ? dtable : NULL,
                               .table_stride = tcap,
                               .block_size = c->block};
    int rc = cuda_attn_prep(&a, NULL);
    float *gq = ktest_download_f32(dqo, (size_t)(rows * qos), 0);
    float *gk = ktest_download_f32(dkc, cache_elems, 1);
    float *gv = ktest_download_f32(dvc, cache_elems, 1);

    /* the twins on contiguous heads, then the layout of the outputs */
    int64_t qrow = (int64_t)c->nq * c->hp;
    float *rq = xcalloc((size_t)(rows * qrow), sizeof(float)), *gqc = xmalloc(F(rows * qrow));
    float *rk = xcalloc((size_t)(rows * kvd), sizeof(float)), *gkc = xmalloc(F(rows * kvd));
    float *rv = xcalloc((size_t)(rows * kvd), sizeof(float)), *gvc = xmalloc(F(rows * kvd));
    float *qh = xmalloc(F((int64_t)c->nq * c->hd)), *kh = xmalloc(F((int64_t)c->nkv * c->hd));
    for (int64_t r = 0; r < rows; r++) {
        for (int h = 0; h < c->nq; h++) {
            float *x = qh + (int64_t)h * c->hd;
            memcpy(x, q + r * qs + h * qhs, F(c->hd));
            if (c->norm)
                cpu_rmsnorm(x, x, qn, c->hd, eps, c->zero_centred);
        }
        for (int h = 0; h < c->nkv; h++) {
            float *x = kh + (int64_t)h * c->hd;
            memcpy(x, k + r * ks + (int64_t)h * c->hd, F(c->hd));
            if (c->norm)
                cpu_rmsnorm(x, x, kn, c->hd, eps, c->zero_centred);
        }
        if (c->rot) {
            cpu_rope(qh, c->nq, c->hd, c->rot, inv, pos[r], c->neox);
            cpu_rope(kh, c->nkv, c->hd, c->rot, inv, pos[r], c->neox);
        }
        for (int h = 0; h < c->nq; h++)
            memcpy(rq + r * qrow + (int64_t)h * c->hp, qh + (int64_t)h * c->hd, F(c->hd));
        for (int h = 0; h < c->nkv; h++) {
            memcpy(rk + r * kvd + (int64_t)h * c->hp, kh + (int64_t)h * c->hd, F(c->hd));
            memcpy(rv + r * kvd + (int64_t)h * c->hp, v + r * vs + (int64_t)h * c->hd, F(c->hd));
        }
        memcpy(gqc + r * qrow, gq + r * qos, F(qrow));
        int64_t at = c->block ? ((int64_t)table[slot[r] * tcap + pos[r] / c->block] * c->block +
                                 pos[r] % c->block) *
                                        kvd
                              : slot[r] * slot_stride + pos[r] * kvd;
        memcpy(gkc + r * kvd, gk + at, F(kvd));
        memcpy(gvc + r * kvd, gv + at, F(kvd));
    }
    ktest_round_bf16(rk, (size_t)(rows * kvd));
    ktest_round_bf16(rv, (size_t)(rows * kvd));
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%lld heads=%d/%d hd=%d pad=%d rot=%d%s%s%s%s%s",
             (long long)rows, c->nq, c->nkv, c->hd, c->hp, c->rot, c->gated ? " gated" : "",
             c->norm ? (c->zero_centred ? " norm(1+w)" : " norm") : "", c->neox ? " neox" : "",
             c->rot ? "" : " no-rope", c->block ? " paged" : "");
    ktest_check("attn_prep q", shape, rc, gqc, rq, (size_t)(rows * qrow), KTEST_BOUND_F32);
    ktest_check("attn_prep k cache", shape, rc, gkc, rk, (size_t)(rows * kvd), KTEST_BOUND_BF16);
    ktest_check("attn_prep v cache", shape, rc, gvc, rv, (size_t)(rows * kvd), KTEST_BOUND_BF16);
    free(q), free(k), free(v), free(qn), free(kn), free(inv), free(pos), free(slot), free(gq);
    free(gk), free(gv), free(rq), free(gqc), free(rk), free(gkc), free(rv), free(gvc), free(qh);
    free(kh), free(table);
    ktest_dev_free(dtable);
    ktest_dev_free(dq), ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dqn);
    ktest_dev_free(dkn), ktest_dev_free(dinv), ktest_dev_free(dpos), ktest_dev_free(dslot);
    ktest_dev_free(dqo), ktest_dev_free(dkc), ktest_dev_free(dvc);
}

int main(void)
{
    ktest_init("test_cuda_attn_prep");
    const struct prep_case cases[] = {
            {1, 24, 4, 256, 256, 64, 1, 1, 1, 1, 0},   /* qwen3_5 27B decode */
            {37, 24, 4, 256, 256, 64, 1, 1, 1, 1, 0},  /* its prefill */
            {5, 32, 8, 128, 128, 128, 0, 0, 0, 1, 0},  /* llama, full rotary, no norms */
            {6, 32, 8, 128, 128, 128, 0, 1, 0, 0, 0},  /* interleaved pairs, plain norm */
            {9, 4, 2, 16, 32, 16, 1, 1, 1, 1, 0},      /* tiny fixtures: heads of 16 padded to 32 */
            {4, 6, 3, 40, 64, 10, 0, 1, 0, 1, 0},      /* odd head, partial rotary */
            {3, 3, 1, 200, 256, 0, 0, 1, 1, 0, 0},     /* no RoPE, padded */
            {37, 24, 4, 256, 256, 64, 1, 1, 1, 1, 16}, /* 27B prefill into a paged cache */
            {9, 4, 2, 16, 32, 16, 1, 1, 1, 1, 5},      /* tiny heads, odd block size */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        prep_run(&cases[i]);
    struct cuda_attn_prep bad = {.rows = 1,
                                 .n_heads = 1,
                                 .n_kv_heads = 1,
                                 .head_dim = 128,
                                 .head_pad = 512,
                                 .q = (void *)16,
                                 .q_head_stride = 128,
                                 .k = (void *)16,
                                 .v = (void *)16,
                                 .rot_dim = 64,
                                 .inv_freq = (void *)16,
                                 .pos = (void *)16,
                                 .q_out = (void *)16,
                                 .k_cache = (void *)16,
                                 .v_cache = (void *)16,
                                 .slot = (void *)16};
    ktest_check_rejected("attn_prep", "head_pad 512", cuda_attn_prep(&bad, NULL));
    bad.head_pad = 128;
    bad.rot_dim = 63;
    ktest_check_rejected("attn_prep", "odd rot_dim", cuda_attn_prep(&bad, NULL));
    return ktest_finish();
}
