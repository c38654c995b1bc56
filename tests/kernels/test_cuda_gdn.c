/*
 * tests/kernels/test_cuda_gdn.c — the Gated DeltaNet kernels against their CPU twins in
 * neuron/gdn.c: cuda_gdn_conv (decode step over several sequences, in place; sequences of 2..70
 * tokens, shorter and longer than the kernel's history; odd channel counts and kernel sizes)
 * against gdn_conv; cuda_gdn_gates against gdn_gates (softplus on both sides of its threshold);
 * cuda_gdn_recurrent against gdn_l2norm + gdn_head_recurrent (the 27B decode shape, grouped
 * heads, several sequences, multi-token runs, odd head sizes, without the L2 norm), checking
 * both the outputs and the states left behind; cuda_gdn_gated_norm against gdn_gated_norm.
 */
#include "cuda_gdn_conv.h"
#include "cuda_gdn_gated_norm.h"
#include "cuda_gdn_gates.h"
#include "cuda_gdn_recurrent.h"
#include "gdn.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(n) (sizeof(float) * (size_t)(n))

/* ---- conv ------------------------------------------------------------------------------- */

static void conv_run(int n_seqs, int64_t n_tok, int channels, int kernel, int64_t pad, int in_place)
{
    int hist = kernel - 1;
    int64_t xs = channels + pad, rows = n_seqs * n_tok, ss = (int64_t)hist * channels + pad;
    float *x = ktest_random((size_t)(rows * xs), -2.0f, 2.0f);
    float *w = ktest_random((size_t)channels * kernel, -1.0f, 1.0f);
    float *st = ktest_random((size_t)(n_seqs * ss), -2.0f, 2.0f);
    float *dx = ktest_dev_upload(x, F(rows * xs));
    float *dy = in_place ? dx : ktest_dev_alloc(F(rows * xs));
    float *dw = ktest_dev_upload(w, F((int64_t)channels * kernel));
    float *dst = ktest_dev_upload(st, F(n_seqs * ss));
    struct cuda_gdn_conv a = {.x = dx,
                              .x_stride = xs,
                              .y = dy,
                              .y_stride = xs,
                              .state = dst,
                              .state_stride = ss,
                              .w = dw,
                              .channels = channels,
                              .kernel = kernel,
                              .n_seqs = n_seqs,
                              .n_tok = n_tok};
    int rc = cuda_gdn_conv(&a, NULL);
    float *gy = ktest_download_f32(dy, (size_t)(rows * xs), 0);
    float *gst = ktest_download_f32(dst, (size_t)(n_seqs * ss), 0);
    /* the twin works in place on one sequence with a contiguous state */
    float *ry = xmalloc(F(rows * channels)), *gyc = xmalloc(F(rows * channels));
    float *rst = xmalloc(F((int64_t)n_seqs * hist * channels));
    float *gstc = xmalloc(F((int64_t)n_seqs * hist * channels));
    float *xseq = xmalloc(F(n_tok * xs));
    for (int s = 0; s < n_seqs; s++) {
        memcpy(xseq, x + s * n_tok * xs, F(n_tok * xs));
        float *rs = rst + (int64_t)s * hist * channels;
        memcpy(rs, st + s * ss, F((int64_t)hist * channels));
        memcpy(gstc + (int64_t)s * hist * channels, gst + s * ss, F((int64_t)hist * channels));
        gdn_conv(xseq, n_tok, xs, channels, rs, w, kernel);
        for (int64_t t = 0; t < n_tok; t++) {
            memcpy(ry + (s * n_tok + t) * channels, xseq + t * xs, F(channels));
            memcpy(gyc + (s * n_tok + t) * channels, gy + (s * n_tok + t) * xs, F(channels));
        }
    }
    char shape[96];
    snprintf(shape, sizeof shape, "seqs=%d tok=%lld ch=%d k=%d%s%s", n_seqs, (long long)n_tok,
             channels, kernel, pad ? " strided" : "", in_place ? " inplace" : "");
    ktest_check("gdn_conv out", shape, rc, gyc, ry, (size_t)(rows * channels), KTEST_BOUND_F32);
    ktest_check("gdn_conv state", shape, rc, gstc, rst, (size_t)n_seqs * hist * channels,
                KTEST_BOUND_F32);
    free(x), free(w), free(st), free(gy), free(gst), free(ry), free(gyc), free(rst), free(gstc);
    free(xseq);
    if (!in_place)
        ktest_dev_free(dy);
    ktest_dev_free(dx), ktest_dev_free(dw), ktest_dev_free(dst);
}

/* ---- gates ------------------------------------------------------------------------------ */

static void gates_run(int64_t rows, int heads)
{
    int64_t as = 2 * heads + 3; /* b and a side by side in one row, as a fused projection */
    float *ab = ktest_random((size_t)(rows * as), -30.0f, 30.0f);
    float *neg_a = xmalloc(F(heads));
    float *dt_bias = ktest_random((size_t)heads, -2.0f, 2.0f);
    for (int h = 0; h < heads; h++)
        neg_a[h] = -expf(ktest_uniform(-3.0f, 2.0f));
    float *dab = ktest_dev_upload(ab, F(rows * as));
    float *dna = ktest_dev_upload(neg_a, F(heads)), *ddt = ktest_dev_upload(dt_bias, F(heads));
    float *dg = ktest_dev_alloc(F(rows * heads)), *dbeta = ktest_dev_alloc(F(rows * heads));
    struct cuda_gdn_gates a = {.a = dab + heads,
                               .b = dab,
                               .a_stride = as,
                               .b_stride = as,
                               .neg_a = dna,
                               .dt_bias = ddt,
                               .g = dg,
                               .beta = dbeta,
                               .gb_stride = heads,
                               .rows = rows,
                               .n_heads = heads};
    int rc = cuda_gdn_gates(&a, NULL);
    float *gg = ktest_download_f32(dg, (size_t)(rows * heads), 0);
    float *gb = ktest_download_f32(dbeta, (size_t)(rows * heads), 0);
    float *rg = xmalloc(F(rows * heads)), *rb = xmalloc(F(rows * heads));
    for (int64_t r = 0; r < rows; r++)
        gdn_gates(ab + r * as + heads, ab + r * as, neg_a, dt_bias, heads, rg + r * heads,
                  rb + r * heads);
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%lld heads=%d", (long long)rows, heads);
    ktest_check("gdn_gates g", shape, rc, gg, rg, (size_t)(rows * heads), KTEST_BOUND_F32);
    ktest_check("gdn_gates beta", shape, rc, gb, rb, (size_t)(rows * heads), KTEST_BOUND_F32);
    free(ab), free(neg_a), free(dt_bias), free(gg), free(gb), free(rg), free(rb);
    ktest_dev_free(dab), ktest_dev_free(dna), ktest_dev_free(ddt), ktest_dev_free(dg);
    ktest_dev_free(dbeta);
}

/* ---- recurrent -------------------------------------------------------------------------- */

struct rec_case {
    int n_seqs;
    int64_t n_tok;
    int nk, nv, dk, dv;
    int l2norm;
};

static void rec_run(const struct rec_case *c)
{
    int64_t rows = c->n_seqs * c->n_tok, qks = (int64_t)c->nk * c->dk + 5;
    int64_t vs = (int64_t)c->nv * c->dv, head = (int64_t)c->dk * c->dv, ss = c->nv * head;
    float q_scale = 1.0f / sqrtf((float)c->dk);
    float *q = ktest_random((size_t)(rows * qks), -1.0f, 1.0f);
    /* without the L2 norm, small keys keep I - beta k k^T contracting, as normalised ones do */
    float kr = c->l2norm ? 1.0f : 0.2f;
    float *k = ktest_random((size_t)(rows * qks), -kr, kr);
    float *v = ktest_random((size_t)(rows * vs), -1.0f, 1.0f);
    float *g = ktest_random((size_t)(rows * c->nv), -2.0f, 0.0f);
    float *beta = ktest_random((size_t)(rows * c->nv), 0.0f, 1.0f);
    float *st = ktest_random((size_t)(c->n_seqs * ss), -0.5f, 0.5f);
    float *dq = ktest_dev_upload(q, F(rows * qks)), *dk = ktest_dev_upload(k, F(rows * qks));
    float *dv = ktest_dev_upload(v, F(rows * vs)), *dg = ktest_dev_upload(g, F(rows * c->nv));
    float *db = ktest_dev_upload(beta, F(rows * c->nv));
    float *dst = ktest_dev_upload(st, F(c->n_seqs * ss));
    float *dout = ktest_dev_alloc(F(rows * vs));
    struct cuda_gdn_recurrent a = {.n_seqs = c->n_seqs,
                                   .n_tok = c->n_tok,
                                   .n_k_heads = c->nk,
                                   .n_v_heads = c->nv,
                                   .k_dim = c->dk,
                                   .v_dim = c->dv,
                                   .q = dq,
                                   .k = dk,
                                   .qk_stride = qks,
                                   .v = dv,
                                   .v_stride = vs,
                                   .g = dg,
                                   .beta = db,
                                   .gb_stride = c->nv,
                                   .out = dout,
                                   .out_stride = vs,
                                   .state = dst,
                                   .state_stride = ss,
                                   .l2norm = c->l2norm,
                                   .q_scale = q_scale};
    int rc = cuda_gdn_recurrent(&a, NULL);
    float *gout = ktest_download_f32(dout, (size_t)(rows * vs), 0);
    float *gst = ktest_download_f32(dst, (size_t)(c->n_seqs * ss), 0);
    /* reference: normalise q and k as the layer does, then the per-head recurrence */
    for (int64_t r = 0; r < rows; r++) {
        if (c->l2norm) {
            gdn_l2norm(q + r * qks, c->nk, c->dk, q_scale);
            gdn_l2norm(k + r * qks, c->nk, c->dk, 1.0f);
        } else {
            for (int64_t i = 0; i < (int64_t)c->nk * c->dk; i++)
                q[r * qks + i] *= q_scale;
        }
    }
    float *rout = xmalloc(F(rows * vs));
    for (int s = 0; s < c->n_seqs; s++)
        for (int h = 0; h < c->nv; h++) {
            int kh = h / (c->nv / c->nk);
            int64_t r0 = s * c->n_tok;
            struct gdn_head gh = {.n_tok = c->n_tok,
                                  .k_dim = c->dk,
                                  .v_dim = c->dv,
                                  .q = q + r0 * qks + (int64_t)kh * c->dk,
                                  .k = k + r0 * qks + (int64_t)kh * c->dk,
                                  .qk_stride = qks,
                                  .v = v + r0 * vs + (int64_t)h * c->dv,
                                  .v_stride = vs,
                                  .g = g + r0 * c->nv + h,
                                  .beta = beta + r0 * c->nv + h,
                                  .gb_stride = c->nv,
                                  .out = rout + r0 * vs + (int64_t)h * c->dv,
                                  .out_stride = vs,
                                  .state = st + s * ss + h * head};
            gdn_head_recurrent(&gh);
        }
    char shape[96];
    snprintf(shape, sizeof shape, "seqs=%d tok=%lld heads=%d/%d dk=%d dv=%d%s", c->n_seqs,
             (long long)c->n_tok, c->nk, c->nv, c->dk, c->dv, c->l2norm ? "" : " no-l2");
    ktest_check("gdn_recurrent out", shape, rc, gout, rout, (size_t)(rows * vs), 1e-4);
    ktest_check("gdn_recurrent state", shape, rc, gst, st, (size_t)(c->n_seqs * ss), 1e-4);
    free(q), free(k), free(v), free(g), free(beta), free(st), free(gout), free(gst), free(rout);
    ktest_dev_free(dq), ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dg);
    ktest_dev_free(db), ktest_dev_free(dst), ktest_dev_free(dout);
}

/* ---- gated norm ------------------------------------------------------------------------- */

static void gnorm_run(int64_t rows, int dim, enum dtype yt)
{
    float *o = ktest_random((size_t)(rows * dim), -3.0f, 3.0f);
    float *z = ktest_random((size_t)(rows * dim), -6.0f, 6.0f);
    float *w = ktest_random((size_t)dim, 0.2f, 1.8f);
    float *dO = ktest_dev_upload(o, F(rows * dim)), *dz = ktest_dev_upload(z, F(rows * dim));
    float *dw = ktest_dev_upload(w, F(dim));
    void *dy = ktest_dev_alloc((yt == DTYPE_F32 ? 4 : 2) * (size_t)(rows * dim));
    struct cuda_gdn_gated_norm a = {.o = dO,
                                    .o_stride = dim,
                                    .z = dz,
                                    .z_stride = dim,
                                    .w = dw,
                                    .y_type = yt,
                                    .y = dy,
                                    .y_stride = dim,
                                    .rows = rows,
                                    .dim = dim,
                                    .eps = 1e-6f};
    int rc = cuda_gdn_gated_norm(&a, NULL);
    float *got = ktest_download_f32(dy, (size_t)(rows * dim), yt == DTYPE_BF16);
    for (int64_t r = 0; r < rows; r++)
        gdn_gated_norm(o + r * dim, z + r * dim, w, dim, 1e-6f);
    char shape[96];
    snprintf(shape, sizeof shape, "->%s rows=%lld dim=%d", yt == DTYPE_F32 ? "f32" : "bf16",
             (long long)rows, dim);
    ktest_check("gdn_gated_norm", shape, rc, got, o, (size_t)(rows * dim),
                yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(o), free(z), free(w), free(got);
    ktest_dev_free(dO), ktest_dev_free(dz), ktest_dev_free(dw), ktest_dev_free(dy);
}

int main(void)
{
    ktest_init("test_cuda_gdn");
    conv_run(1, 1, 10240, 4, 0, 0); /* 27B decode: q,k,v channels */
    conv_run(4, 1, 1000, 4, 7, 1);  /* several sequences, in place, strided */
    conv_run(3, 1, 37, 3, 0, 0);
    conv_run(1, 2, 513, 4, 0, 0);   /* fewer tokens than the history */
    conv_run(1, 3, 64, 4, 0, 0);    /* exactly the history */
    conv_run(2, 70, 1031, 4, 5, 0); /* prefill of two sequences */
    conv_run(1, 9, 17, 2, 0, 0);
    conv_run(1, 5, 33, 8, 0, 0);

    gates_run(1, 48);
    gates_run(7, 5);
    gates_run(64, 32);

    const struct rec_case rec[] = {
            {1, 1, 16, 48, 128, 128, 1}, /* 27B decode */
            {3, 1, 2, 4, 128, 128, 1},   /* batched decode */
            {1, 37, 2, 4, 128, 128, 1},  /* a prefill through the recurrence */
            {2, 5, 3, 6, 32, 48, 1},     /* odd value width, three heads per key head */
            {1, 9, 1, 3, 200, 70, 1},    /* k_dim not a multiple of the warps */
            {1, 3, 1, 1, 256, 33, 1},    /* largest k_dim */
            {2, 4, 1, 2, 7, 5, 1},       /* tiny */
            {1, 6, 2, 2, 64, 64, 0},     /* q and k taken as given */
    };
    for (size_t i = 0; i < sizeof rec / sizeof rec[0]; i++)
        rec_run(&rec[i]);

    gnorm_run(48, 128, DTYPE_F32);
    gnorm_run(48, 128, DTYPE_BF16);
    gnorm_run(35, 37, DTYPE_F32);
    gnorm_run(3, 1500, DTYPE_F32);
    gnorm_run(3, 1500, DTYPE_BF16);

    struct cuda_gdn_recurrent bad = {.n_seqs = 1,
                                     .n_tok = 1,
                                     .n_k_heads = 3,
                                     .n_v_heads = 4,
                                     .k_dim = 128,
                                     .v_dim = 128,
                                     .q = (void *)16,
                                     .k = (void *)16,
                                     .v = (void *)16,
                                     .g = (void *)16,
                                     .beta = (void *)16,
                                     .out = (void *)16,
                                     .state = (void *)16};
    ktest_check_rejected("gdn_recurrent", "4 value heads over 3 key heads",
                         cuda_gdn_recurrent(&bad, NULL));
    bad.n_k_heads = 1;
    bad.k_dim = 257;
    ktest_check_rejected("gdn_recurrent", "k_dim 257", cuda_gdn_recurrent(&bad, NULL));
    struct cuda_gdn_conv badc = {.x = (void *)16,
                                 .y = (void *)16,
                                 .state = (void *)16,
                                 .w = (void *)16,
                                 .channels = 8,
                                 .kernel = 9,
                                 .n_seqs = 1,
                                 .n_tok = 1};
    ktest_check_rejected("gdn_conv", "kernel 9", cuda_gdn_conv(&badc, NULL));
    return ktest_finish();
}
