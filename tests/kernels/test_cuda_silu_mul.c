/*
 * tests/kernels/test_cuda_silu_mul.c — cuda_silu_mul() against cpu_silu_mul(): a fused gate|up
 * projection output, separate arrays, odd lengths, every f32/bf16 input/output pair, in place;
 * and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_silu_mul.h"
#include "ktest.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct silu_case {
    int64_t rows, n;
    int fused; /* gate|up in one row of 2n (else gate and up are separate arrays) */
    int in_place;
};

static void silu_run(const struct silu_case *c, enum dtype it, enum dtype ot)
{
    int64_t is = c->fused ? 2 * c->n : c->n, total = c->rows * is;
    float *in = ktest_random((size_t)total, -8.0f, 8.0f);
    float *up2 = c->fused ? NULL : ktest_random((size_t)total, -2.0f, 2.0f);
    if (it == DTYPE_BF16) {
        ktest_round_bf16(in, (size_t)total);
        if (up2)
            ktest_round_bf16(up2, (size_t)total);
    }
    size_t ie = it == DTYPE_F32 ? 4 : 2, oe = ot == DTYPE_F32 ? 4 : 2;
    uint16_t *inb = it == DTYPE_BF16 ? ktest_to_bf16(in, (size_t)total) : NULL;
    uint16_t *upb = it == DTYPE_BF16 && up2 ? ktest_to_bf16(up2, (size_t)total) : NULL;
    char *dgate = ktest_dev_upload(inb ? (void *)inb : (void *)in, ie * (size_t)total);
    char *dup = up2 ? ktest_dev_upload(upb ? (void *)upb : (void *)up2, ie * (size_t)total)
                    : dgate + ie * (size_t)c->n;
    int64_t os = c->in_place ? is : c->n;
    void *dout = c->in_place ? (void *)dgate : ktest_dev_alloc(oe * (size_t)(c->rows * os));
    struct cuda_silu_mul a = {.in_type = it,
                              .out_type = ot,
                              .gate = dgate,
                              .up = dup,
                              .in_stride = is,
                              .out = dout,
                              .out_stride = os,
                              .rows = c->rows,
                              .n = c->n};
    int rc = cuda_silu_mul(&a, NULL);
    float *got_all = ktest_download_f32(dout, (size_t)(c->rows * os), ot == DTYPE_BF16);
    float *got = xmalloc(sizeof(float) * (size_t)(c->rows * c->n));
    float *ref = xmalloc(sizeof(float) * (size_t)(c->rows * c->n));
    for (int64_t r = 0; r < c->rows; r++) {
        memcpy(ref + r * c->n, in + r * is, sizeof(float) * (size_t)c->n);
        const float *u = c->fused ? in + r * is + c->n : up2 + r * is;
        cpu_silu_mul(ref + r * c->n, u, c->n);
        memcpy(got + r * c->n, got_all + r * os, sizeof(float) * (size_t)c->n);
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s->%s rows=%lld n=%lld%s%s", it == DTYPE_F32 ? "f32" : "bf16",
             ot == DTYPE_F32 ? "f32" : "bf16", (long long)c->rows, (long long)c->n,
             c->fused ? " fused" : "", c->in_place ? " inplace" : "");
    ktest_check("silu_mul", shape, rc, got, ref, (size_t)(c->rows * c->n),
                ot == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(in), free(up2), free(inb), free(upb), free(got_all), free(got), free(ref);
    if (!c->in_place)
        ktest_dev_free(dout);
    ktest_dev_free(dgate);
    if (up2)
        ktest_dev_free(dup);
}

int main(void)
{
    ktest_init("test_cuda_silu_mul");
    const struct silu_case cases[] = {
            {1, 17408, 1, 0}, {3, 1007, 1, 0}, {8, 1, 0, 0}, {5, 3584, 0, 0}, {2, 33, 0, 0},
    };
    const enum dtype types[2] = {DTYPE_F32, DTYPE_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int it = 0; it < 2; it++)
            for (int ot = 0; ot < 2; ot++)
                silu_run(&cases[i], types[it], types[ot]);
    const struct silu_case in_place = {4, 999, 1, 1};
    silu_run(&in_place, DTYPE_F32, DTYPE_F32);
    silu_run(&in_place, DTYPE_BF16, DTYPE_BF16);
    struct cuda_silu_mul bad = {.in_type = DTYPE_F32,
                                .out_type = DTYPE_F16,
                                .gate = (void *)16,
                                .up = (void *)16,
                                .in_stride = 8,
                                .out = (void *)16,
                                .out_stride = 8,
                                .rows = 1,
                                .n = 8};
    ktest_check_rejected("silu_mul", "f16 output", cuda_silu_mul(&bad, NULL));
    return ktest_finish();
}
