/*
 * tests/kernels/test_cuda_embed.c — cuda_embed() against dtype_dequant_row() of each token's row:
 * f32, f16 and bf16 tables, f32 and bf16 outputs, odd widths, repeated ids, and ids outside the
 * vocabulary (a zero row); and the refusal of bad arguments.
 */
#include "cuda_embed.h"
#include "dtype.h"
#include "ktest.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void embed_run(int64_t vocab, int64_t dim, int64_t n_tok, int64_t pad, enum dtype tt,
                      enum dtype ot)
{
    size_t te = dtype_block_bytes(tt), oe = ot == DTYPE_F32 ? 4 : 2;
    size_t n = (size_t)(vocab * dim);
    float *f = ktest_random(n, -1.0f, 1.0f);
    void *table = xmalloc(te * n);
    for (size_t i = 0; i < n; i++) {
        if (tt == DTYPE_F32)
            ((float *)table)[i] = f[i];
        else if (tt == DTYPE_F16)
            ((uint16_t *)table)[i] = dtype_f32_to_f16(f[i]);
        else
            ((uint16_t *)table)[i] = dtype_f32_to_bf16(f[i]);
    }
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)n_tok);
    for (int64_t t = 0; t < n_tok; t++)
        ids[t] = (int32_t)ktest_below(vocab);
    if (n_tok > 2) {
        ids[1] = ids[0];                 /* repeated id */
        ids[n_tok - 1] = (int32_t)vocab; /* out of range: zeros */
        ids[n_tok - 2] = -1;
    }
    int64_t os = dim + pad;
    void *dt = ktest_dev_upload(table, te * n);
    int32_t *did = ktest_dev_upload(ids, sizeof(int32_t) * (size_t)n_tok);
    void *dout = ktest_dev_alloc(oe * (size_t)(n_tok * os));
    struct cuda_embed a = {.table_type = tt,
                           .table = dt,
                           .vocab = vocab,
                           .dim = dim,
                           .ids = did,
                           .n_tok = n_tok,
                           .out_type = ot,
                           .out = dout,
                           .out_stride = os};
    int rc = cuda_embed(&a, NULL);
    float *all = ktest_download_f32(dout, (size_t)(n_tok * os), ot == DTYPE_BF16);
    float *got = xmalloc(sizeof(float) * (size_t)(n_tok * dim));
    float *ref = xcalloc((size_t)(n_tok * dim), sizeof(float));
    for (int64_t t = 0; t < n_tok; t++) {
        memcpy(got + t * dim, all + t * os, sizeof(float) * (size_t)dim);
        if (ids[t] >= 0 && ids[t] < vocab)
            dtype_dequant_row(tt, (const char *)table + te * (size_t)(ids[t] * dim), ref + t * dim,
                              (size_t)dim);
    }
    if (ot == DTYPE_BF16)
        ktest_round_bf16(ref, (size_t)(n_tok * dim)); /* a gather is exact up to the output type */
    char shape[96];
    snprintf(shape, sizeof shape, "%s->%s vocab=%lld dim=%lld tok=%lld pad=%lld", dtype_name(tt),
             dtype_name(ot), (long long)vocab, (long long)dim, (long long)n_tok, (long long)pad);
    ktest_check("embed", shape, rc, got, ref, (size_t)(n_tok * dim), 0.0);
    free(f), free(table), free(ids), free(all), free(got), free(ref);
    ktest_dev_free(dt), ktest_dev_free(did), ktest_dev_free(dout);
}

int main(void)
{
    ktest_init("test_cuda_embed");
    const enum dtype tables[3] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
    const enum dtype outs[2] = {DTYPE_F32, DTYPE_BF16};
    for (int t = 0; t < 3; t++)
        for (int o = 0; o < 2; o++) {
            embed_run(1000, 64, 9, 0, tables[t], outs[o]);
            embed_run(257, 1027, 5, 3, tables[t], outs[o]);
            embed_run(50, 5120, 1, 0, tables[t], outs[o]);
        }
    struct cuda_embed bad = {.table_type = DTYPE_Q8_0,
                             .table = (void *)16,
                             .vocab = 4,
                             .dim = 32,
                             .ids = (void *)16,
                             .n_tok = 1,
                             .out_type = DTYPE_F32,
                             .out = (void *)16,
                             .out_stride = 32};
    ktest_check_rejected("embed", "q8_0 table", cuda_embed(&bad, NULL));
    return ktest_finish();
}
