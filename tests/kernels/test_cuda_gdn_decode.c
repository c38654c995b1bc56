/*
 * tests/kernels/test_cuda_gdn_decode.c — the fused GDN decode step (cuda_gdn_decode) against its
 * CPU twin, the unfused pieces of neuron/gdn.c in the layer's order: gdn_gates, gdn_l2norm of q
 * and k, gdn_head_recurrent (one token) and gdn_gated_norm. Shapes: the 27B layer (16 key / 48
 * value heads of 128), several sequences at slots of a larger pool (some slots untouched, which
 * must keep their state), odd head sizes, one value head per key head, f32 and bf16 outputs.
 * Checks both the outputs and the states left behind.
 */
#include "cuda_gdn_decode.h"
#include "gdn.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(n) (sizeof(float) * (size_t)(n))

struct dec_case {
    int n_seqs, pool; /* pool > 0: sequences live at shuffled slots of a pool this size */
    int nk, nv, dk, dv;
    enum dtype yt;
};

static void dec_run(const struct dec_case *c)
{
    int n = c->n_seqs, slots_n = c->pool ? c->pool : n;
    int64_t qks = 2 * (int64_t)c->nk * c->dk + (int64_t)c->nv * c->dv + 3; /* the conv's row */
    int64_t vs = (int64_t)c->nv * c->dv, zs = vs + 1, ys = vs + 2, abs_ = 2 * c->nv + 1;
    int64_t head = (int64_t)c->dk * c->dv, ss = c->nv * head + 5;
    float q_scale = 1.0f / sqrtf((float)c->dk), eps = 1e-6f;
    float *qkv = ktest_random((size_t)(n * qks), -1.0f, 1.0f);
    float *z = ktest_random((size_t)(n * zs), -4.0f, 4.0f);
    float *ab = ktest_random((size_t)(n * abs_), -6.0f, 6.0f); /* [b | a] per row */
    float *neg_a = xmalloc(F(c->nv));
    float *dt_bias = ktest_random((size_t)c->nv, -1.0f, 1.0f);
    float *nw = ktest_random((size_t)c->dv, 0.2f, 1.8f);
    for (int h = 0; h < c->nv; h++)
        neg_a[h] = -expf(ktest_uniform(-3.0f, 1.0f));
    float *st = ktest_random((size_t)(slots_n * ss), -0.5f, 0.5f);
    int32_t *slots = xmalloc(sizeof(int32_t) * (size_t)n);
    for (int s = 0; s < n; s++)
        slots[s] = c->pool ? (int32_t)((s * 5 + 2) % c->pool) : s; /* pool coprime with 5 */
    float *dqkv = ktest_dev_upload(qkv, F(n * qks)), *dz = ktest_dev_upload(z, F(n * zs));
    float *dab = ktest_dev_upload(ab, F(n * abs_)), *dna = ktest_dev_upload(neg_a, F(c->nv));
    float *ddt = ktest_dev_upload(dt_bias, F(c->nv)), *dnw = ktest_dev_upload(nw, F(c->dv));
    float *dst = ktest_dev_upload(st, F(slots_n * ss));
    int32_t *dslots = c->pool ? ktest_dev_upload(slots, sizeof(int32_t) * (size_t)n) : NULL;
    size_t ye = c->yt == DTYPE_F32 ? 4 : 2;
    void *dy = ktest_dev_alloc(ye * (size_t)(n * ys));
    int64_t koff = (int64_t)c->nk * c->dk, voff = 2 * koff;
    struct cuda_gdn_decode a = {.n_seqs = n,
                                .n_k_heads = c->nk,
                                .n_v_heads = c->nv,
                                .k_dim = c->dk,
                                .v_dim = c->dv,
                                .q = dqkv,
                                .k = dqkv + koff,
                                .qk_stride = qks,
                                .v = dqkv + voff,
                                .v_stride = qks,
                                .a = dab + c->nv,
                                .b = dab,
                                .ab_stride = abs_,
                                .neg_a = dna,
                                .dt_bias = ddt,
                                .z = dz,
                                .z_stride = zs,
                                .norm_w = dnw,
                                .eps = eps,
                                .q_scale = q_scale,
                                .y_type = c->yt,
                                .y = dy,
                                .y_stride = ys,
                                .state = dst,
                                .state_stride = ss,
                                .slots = dslots};
    int rc = cuda_gdn_decode(&a, NULL);
    float *gy = ktest_download_f32(dy, (size_t)(n * ys), c->yt == DTYPE_BF16);
    float *gst = ktest_download_f32(dst, (size_t)(slots_n * ss), 0);

    /* the twin, piece by piece */
    float *ry = xmalloc(F(n * vs)), *gyc = xmalloc(F(n * vs));
    float *g = xmalloc(F(c->nv)), *beta = xmalloc(F(c->nv));
    for (int s = 0; s < n; s++) {
        float *row = qkv + s * qks;
        gdn_gates(ab + s * abs_ + c->nv, ab + s * abs_, neg_a, dt_bias, c->nv, g, beta);
        gdn_l2norm(row, c->nk, c->dk, q_scale);
        gdn_l2norm(row + koff, c->nk, c->dk, 1.0f);
        for (int h = 0; h < c->nv; h++) {
            int kh = h / (c->nv / c->nk);
            float *o = ry + s * vs + (int64_t)h * c->dv;
            struct gdn_head gh = {.n_tok = 1,
                                  .k_dim = c->dk,
                                  .v_dim = c->dv,
                                  .q = row + (int64_t)kh * c->dk,
                                  .k = row + koff + (int64_t)kh * c->dk,
                                  .qk_stride = qks,
                                  .v = row + voff + (int64_t)h * c->dv,
                                  .v_stride = qks,
                                  .g = g + h,
                                  .beta = beta + h,
                                  .gb_stride = c->nv,
                                  .out = o,
                                  .out_stride = vs,
                                  .state = st + (int64_t)slots[s] * ss + h * head};
            gdn_head_recurrent(&gh);
            gdn_gated_norm(o, z + s * zs + (int64_t)h * c->dv, nw, c->dv, eps);
        }
        memcpy(gyc + s * vs, gy + s * ys, F(vs));
    }
    char shape[96];
    snprintf(shape, sizeof shape, "seqs=%d%s heads=%d/%d dk=%d dv=%d ->%s", n,
             c->pool ? " pooled" : "", c->nk, c->nv, c->dk, c->dv,
             c->yt == DTYPE_F32 ? "f32" : "bf16");
    ktest_check("gdn_decode out", shape, rc, gyc, ry, (size_t)(n * vs),
                c->yt == DTYPE_F32 ? 1e-4 : KTEST_BOUND_BF16);
    /* every slot, touched or not, and the padding between slots */
    ktest_check("gdn_decode state", shape, rc, gst, st, (size_t)(slots_n * ss), 1e-4);
    free(qkv), free(z), free(ab), free(neg_a), free(dt_bias), free(nw), free(st), free(slots);
    free(gy), free(gst), free(ry), free(gyc), free(g), free(beta);
    ktest_dev_free(dqkv), ktest_dev_free(dz), ktest_dev_free(dab), ktest_dev_free(dna);
    ktest_dev_free(ddt), ktest_dev_free(dnw), ktest_dev_free(dst), ktest_dev_free(dy);
    if (dslots)
        ktest_dev_free(dslots);
}

int main(void)
{
    ktest_init("test_cuda_gdn_decode");
    const struct dec_case cases[] = {
            {1, 0, 16, 48, 128, 128, DTYPE_BF16}, /* 27B decode */
            {1, 0, 16, 48, 128, 128, DTYPE_F32},
            {5, 8, 2, 6, 128, 128, DTYPE_BF16}, /* batched, pooled slots */
            {3, 0, 3, 3, 64, 96, DTYPE_F32},    /* one value head per key head, 3 column groups */
            {2, 7, 1, 3, 37, 70, DTYPE_F32},    /* odd sizes: k_dim not a multiple of the warps */
            {1, 0, 2, 4, 16, 16, DTYPE_F32},    /* the tiny fixture's heads */
            {4, 0, 1, 2, 7, 5, DTYPE_BF16},     /* tiny */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        dec_run(&cases[i]);
    struct cuda_gdn_decode bad = {.n_seqs = 1,
                                  .n_k_heads = 1,
                                  .n_v_heads = 1,
                                  .k_dim = 129,
                                  .v_dim = 128,
                                  .q = (void *)16,
                                  .k = (void *)16,
                                  .v = (void *)16,
                                  .a = (void *)16,
                                  .b = (void *)16,
                                  .neg_a = (void *)16,
                                  .dt_bias = (void *)16,
                                  .z = (void *)16,
                                  .norm_w = (void *)16,
                                  .y_type = DTYPE_F32,
                                  .y = (void *)16,
                                  .state = (void *)16};
    ktest_check_rejected("gdn_decode", "k_dim 129", cuda_gdn_decode(&bad, NULL));
    bad.k_dim = 128;
    bad.n_k_heads = 2;
    bad.n_v_heads = 3;
    ktest_check_rejected("gdn_decode", "3 value heads over 2 key heads",
                         cuda_gdn_decode(&bad, NULL));
    return ktest_finish();
}
