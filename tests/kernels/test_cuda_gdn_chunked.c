/*
 * tests/kernels/test_cuda_gdn_chunked.c — cuda_gdn_chunked (the chunked Gated DeltaNet prefill)
 * against the CPU twin of the per-token recurrence, gdn_l2norm + gdn_head_recurrent: lengths 1,
 * 63, 64, 65, 200 and 1000 (no chunk, a partial one, exactly one, one plus a token, several
 * with a partial tail), the 27B shape (16 key heads, 48 value heads of 128), Nv = 2 Nk
 * grouping, odd head sizes (value widths that are not a multiple of the block's 32 columns,
 * small k_dim), several sequences with padded strides, weak decay (the state carries across
 * many chunks) and strong decay, without the L2 norm; outputs and the states left behind are
 * both checked, and bad arguments must be refused. Heads of k_dim 128 run through both kernel
 * variants (plain loads, and the next chunk prefetched into registers).
 */
#include "cuda_gdn_chunked.h"
#include "gdn.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(n) (sizeof(float) * (size_t)(n))

struct chunk_case {
    int n_seqs;
    int64_t n_tok;
    int nk, nv, dk, dv;
    int l2norm;
    float g_min; /* g is uniform in [g_min, 0] */
};

/* variant: as cuda_gdn_chunked_variant() (1 plain loads, 2 prefetching, for k_dim 128) */
static void chunk_run(const struct chunk_case *c, int variant)
{
    int64_t rows = c->n_seqs * c->n_tok, qks = (int64_t)c->nk * c->dk + 3;
    int64_t vs = (int64_t)c->nv * c->dv + 1, os = (int64_t)c->nv * c->dv + 2;
    int64_t gbs = c->nv + 1;
    int64_t head = (int64_t)c->dk * c->dv, ss = c->nv * head + 7;
    float q_scale = 1.0f / sqrtf((float)c->dk);
    float *q = ktest_random((size_t)(rows * qks), -1.0f, 1.0f);
    /* without the L2 norm, small keys keep I - beta k k^T contracting, as normalised ones do */
    float kr = c->l2norm ? 1.0f : 0.2f;
    float *k = ktest_random((size_t)(rows * qks), -kr, kr);
    float *v = ktest_random((size_t)(rows * vs), -1.0f, 1.0f);
    float *g = ktest_random((size_t)(rows * gbs), c->g_min, 0.0f);
    float *beta = ktest_random((size_t)(rows * gbs), 0.0f, 1.0f);
    float *st = ktest_random((size_t)(c->n_seqs * ss), -0.5f, 0.5f);
    float *dq = ktest_dev_upload(q, F(rows * qks)), *dk = ktest_dev_upload(k, F(rows * qks));
    float *dv = ktest_dev_upload(v, F(rows * vs)), *dg = ktest_dev_upload(g, F(rows * gbs));
    float *db = ktest_dev_upload(beta, F(rows * gbs));
    float *dst = ktest_dev_upload(st, F(c->n_seqs * ss));
    float *dout = ktest_dev_alloc(F(rows * os));
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
                                   .gb_stride = gbs,
                                   .out = dout,
                                   .out_stride = os,
                                   .state = dst,
                                   .state_stride = ss,
                                   .l2norm = c->l2norm,
                                   .q_scale = q_scale};
    int rc = cuda_gdn_chunked_variant(&a, variant, NULL);
    float *gout = ktest_download_f32(dout, (size_t)(rows * os), 0);
    float *gst = ktest_download_f32(dst, (size_t)(c->n_seqs * ss), 0);

    for (int64_t r = 0; r < rows; r++) {
        if (c->l2norm) {
            gdn_l2norm(q + r * qks, c->nk, c->dk, q_scale);
            gdn_l2norm(k + r * qks, c->nk, c->dk, 1.0f);
        } else {
            for (int64_t i = 0; i < (int64_t)c->nk * c->dk; i++)
                q[r * qks + i] *= q_scale;
        }
    }
    /* the reference writes only the heads' elements: the padding columns compare as 0 */
    float *rout = xcalloc((size_t)(rows * os), sizeof(float));
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
                                  .g = g + r0 * gbs + h,
                                  .beta = beta + r0 * gbs + h,
                                  .gb_stride = gbs,
                                  .out = rout + r0 * os + (int64_t)h * c->dv,
                                  .out_stride = os,
                                  .state = st + s * ss + h * head};
            gdn_head_recurrent(&gh);
        }
    /* compare only what the kernel owns: the padding after each row / state stays poisoned */
    size_t nout = (size_t)(rows * c->nv * c->dv), nst = (size_t)(c->n_seqs * c->nv * head);
    float *go = xmalloc(F(nout)), *ro = xmalloc(F(nout)), *gs = xmalloc(F(nst)),
          *rs = xmalloc(F(nst));
    for (int64_t r = 0; r < rows; r++) {
        memcpy(go + r * c->nv * c->dv, gout + r * os, F(c->nv * c->dv));
        memcpy(ro + r * c->nv * c->dv, rout + r * os, F(c->nv * c->dv));
    }
    for (int s = 0; s < c->n_seqs; s++) {
        memcpy(gs + s * c->nv * head, gst + s * ss, F(c->nv * head));
        memcpy(rs + s * c->nv * head, st + s * ss, F(c->nv * head));
    }
    char shape[112];
    snprintf(shape, sizeof shape, "v%d seqs=%d tok=%lld heads=%d/%d dk=%d dv=%d g>=%g%s", variant,
             c->n_seqs, (long long)c->n_tok, c->nk, c->nv, c->dk, c->dv, (double)c->g_min,
             c->l2norm ? "" : " no-l2");
    ktest_check("gdn_chunked out", shape, rc, go, ro, nout, 1e-4);
    ktest_check("gdn_chunked state", shape, rc, gs, rs, nst, 1e-4);
    free(q), free(k), free(v), free(g), free(beta), free(st), free(gout), free(gst), free(rout);
    free(go), free(ro), free(gs), free(rs);
    ktest_dev_free(dq), ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dg);
    ktest_dev_free(db), ktest_dev_free(dst), ktest_dev_free(dout);
}

int main(void)
{
    ktest_init("test_cuda_gdn_chunked");
    const struct chunk_case cases[] = {
            {1, 1, 2, 4, 128, 128, 1, -2.0f},      /* a single token */
            {1, 63, 2, 4, 128, 128, 1, -2.0f},     /* one partial chunk */
            {1, 64, 2, 4, 128, 128, 1, -2.0f},     /* exactly one chunk */
            {1, 65, 2, 4, 128, 128, 1, -2.0f},     /* a chunk and one token */
            {1, 200, 4, 8, 128, 128, 1, -0.05f},   /* weak decay: state crosses chunks */
            {1, 1000, 2, 4, 128, 128, 1, -0.02f},  /* many chunks, partial tail */
            {1, 1000, 16, 48, 128, 128, 1, -1.0f}, /* the 27B shape */
            {1, 130, 16, 48, 128, 128, 1, -0.1f},  /* the 27B shape, weak decay */
            {3, 70, 2, 6, 64, 48, 1, -0.5f},       /* sequences, odd value width, r = 3 */
            {2, 97, 1, 2, 37, 70, 1, -0.3f},       /* odd k_dim and v_dim */
            {1, 129, 3, 3, 16, 8, 1, -1.0f},       /* tiny heads */
            {1, 150, 2, 2, 64, 64, 0, -0.2f},      /* q and k taken as given */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chunk_run(&cases[i], 1);
        if (cases[i].dk == CUDA_GDN_CHUNKED_MAX_K_DIM)
            chunk_run(&cases[i], 2);
    }

    struct cuda_gdn_recurrent bad = {.n_seqs = 1,
                                     .n_tok = 5,
                                     .n_k_heads = 1,
                                     .n_v_heads = 1,
                                     .k_dim = 256,
                                     .v_dim = 128,
                                     .q = (void *)16,
                                     .k = (void *)16,
                                     .qk_stride = 256,
                                     .v = (void *)16,
                                     .v_stride = 128,
                                     .g = (void *)16,
                                     .beta = (void *)16,
                                     .gb_stride = 1,
                                     .out = (void *)16,
                                     .out_stride = 128,
                                     .state = (void *)16};
    ktest_check_rejected("gdn_chunked", "k_dim 256", cuda_gdn_chunked(&bad, NULL));
    bad.k_dim = 128;
    bad.n_k_heads = 3;
    bad.n_v_heads = 4;
    ktest_check_rejected("gdn_chunked", "4 value heads over 3 key heads",
                         cuda_gdn_chunked(&bad, NULL));
    bad.n_k_heads = 1;
    bad.n_v_heads = 1;
    ktest_check_rejected("gdn_chunked", "variant 3", cuda_gdn_chunked_variant(&bad, 3, NULL));
    return ktest_finish();
}
