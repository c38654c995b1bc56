/*
 * tests/kernels/test_cuda_rmsnorm.c — cuda_rmsnorm() against cpu_rmsnorm(): plain and
 * zero-centred, every f32/bf16 input/output pair, warp-sized and block-sized rows, odd lengths, strided rows,
 * no weights, in place; and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_rmsnorm.h"
#include "ktest.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rms_case {
    int64_t rows;
    int n, pad; /* row stride = n + pad */
    int no_weight, in_place;
};

static void rms_run(const struct rms_case *c, enum dtype xt, enum dtype yt, bool zc)
{
    int64_t stride = c->n + c->pad, total = c->rows * stride;
    float *x = ktest_random((size_t)total, -3.0f, 3.0f);
    float *w = ktest_random((size_t)c->n, -0.7f, 0.7f);
    if (xt == DTYPE_BF16)
        ktest_round_bf16(x, (size_t)total);
    size_t xe = xt == DTYPE_F32 ? 4 : 2, ye = yt == DTYPE_F32 ? 4 : 2;
    void *hx = x;
    uint16_t *xb = NULL;
    if (xt == DTYPE_BF16)
        hx = xb = ktest_to_bf16(x, (size_t)total);
    void *dx = ktest_dev_upload(hx, xe * (size_t)total);
    void *dy = c->in_place ? dx : ktest_dev_alloc(ye * (size_t)total);
    float *dw = c->no_weight ? NULL : ktest_dev_upload(w, sizeof(float) * (size_t)c->n);
    struct cuda_rmsnorm a = {.x_type = xt,
                             .y_type = yt,
                             .x = dx,
                             .x_stride = stride,
                             .y = dy,
                             .y_stride = stride,
                             .w = dw,
                             .rows = c->rows,
                             .n = c->n,
                             .eps = 1e-6f,
                             .zero_centred = zc};
    int rc = cuda_rmsnorm(&a, NULL);
    float *got = ktest_download_f32(dy, (size_t)total, yt == DTYPE_BF16);
    float *ref = xmalloc(sizeof(float) * (size_t)total);
    /* compare the rows only: the padding between rows is not the kernel's */
    float *g = xmalloc(sizeof(float) * (size_t)(c->rows * c->n));
    for (int64_t r = 0; r < c->rows; r++) {
        cpu_rmsnorm(ref + r * c->n, x + r * stride, c->no_weight ? NULL : w, c->n, 1e-6f, zc);
        memcpy(g + r * c->n, got + r * stride, sizeof(float) * (size_t)c->n);
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s->%s%s rows=%lld n=%d pad=%d%s%s",
             xt == DTYPE_F32 ? "f32" : "bf16", yt == DTYPE_F32 ? "f32" : "bf16", zc ? " zc" : "",
             (long long)c->rows, c->n, c->pad, c->no_weight ? " now" : "",
             c->in_place ? " inplace" : "");
    ktest_check("rmsnorm", shape, rc, g, ref, (size_t)(c->rows * c->n),
                yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(x), free(w), free(xb), free(got), free(ref), free(g);
    if (!c->in_place)
        ktest_dev_free(dy);
    ktest_dev_free(dx);
    if (dw)
        ktest_dev_free(dw);
}

int main(void)
{
    ktest_init("test_cuda_rmsnorm");
    const struct rms_case cases[] = {
            {1, 5120, 0, 0, 0},  {7, 4099, 0, 0, 0}, {33, 128, 0, 0, 0}, {5, 1025, 0, 0, 0},
            {3, 1, 0, 0, 0},     {64, 256, 0, 0, 0}, {2, 1024, 0, 0, 0}, {9, 17, 0, 0, 0},
            {6, 256, 256, 0, 0}, {4, 96, 5, 1, 0},   {3, 2000, 0, 1, 0},
    };
    const enum dtype types[2] = {DTYPE_F32, DTYPE_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int xt = 0; xt < 2; xt++)
            for (int yt = 0; yt < 2; yt++)
                for (int zc = 0; zc < 2; zc++)
                    rms_run(&cases[i], types[xt], types[yt], zc);
    const struct rms_case in_place[] = {{5, 128, 0, 0, 1}, {3, 3000, 7, 0, 1}};
    for (int i = 0; i < 2; i++)
        for (int t = 0; t < 2; t++)
            rms_run(&in_place[i], types[t], types[t], true);

    struct cuda_rmsnorm bad = {.x_type = DTYPE_Q4_0,
                               .y_type = DTYPE_F32,
                               .x = (void *)16,
                               .x_stride = 8,
                               .y = (void *)16,
                               .y_stride = 8,
                               .rows = 1,
                               .n = 8};
    ktest_check_rejected("rmsnorm", "q4_0 input", cuda_rmsnorm(&bad, NULL));
    bad.x_type = DTYPE_F32;
    bad.x_stride = 4;
    ktest_check_rejected("rmsnorm", "x_stride < n", cuda_rmsnorm(&bad, NULL));
    return ktest_finish();
}
