/*
 * tests/kernels/test_cuda_gemm.c — cuda_gemm() (cuBLASLt, bf16) against cpu_matmul(): token
 * counts 1 to 300, shapes from 8 x 16 to the 27B model's 6144 x 5120 and 5120 x 17408, odd
 * rows and columns (unaligned leading dimensions), f32 and bf16 activations (f32 ones are
 * rounded to bf16 by the kernel, so the reference sees the rounded values) and outputs, the
 * residual add, strided activations and outputs, a shape run twice (the cached plan), a
 * context reserved up front, and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_device.h"
#include "cuda_gemm.h"
#include "ktest.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gemm_case {
    int64_t n, rows, cols;
    enum dtype xt, yt;
    int accumulate;
    int64_t x_pad, y_pad;
};

static void gemm_run(struct cuda_gemm_ctx *ctx, const struct gemm_case *c)
{
    size_t nw = (size_t)(c->rows * c->cols);
    int64_t xs = c->cols + c->x_pad, ys = c->rows + c->y_pad;
    float *wf = ktest_random(nw, -1.0f, 1.0f);
    uint16_t *w = ktest_to_bf16(wf, nw);
    free(wf);
    float *x = ktest_random((size_t)(c->n * xs), -1.0f, 1.0f);
    uint16_t *xb = NULL;
    if (c->xt == DTYPE_BF16)
        xb = ktest_to_bf16(x, (size_t)(c->n * xs));
    float *y0 = ktest_random((size_t)(c->n * ys), -4.0f, 4.0f);
    if (c->yt == DTYPE_BF16)
        ktest_round_bf16(y0, (size_t)(c->n * ys));
    size_t xe = c->xt == DTYPE_F32 ? 4 : 2, ye = c->yt == DTYPE_F32 ? 4 : 2;
    void *dw = ktest_dev_upload(w, nw * 2);
    void *dx = ktest_dev_upload(xb ? (void *)xb : (void *)x, xe * (size_t)(c->n * xs));
    void *dy;
    if (c->accumulate) {
        uint16_t *yb = c->yt == DTYPE_BF16 ? ktest_to_bf16(y0, (size_t)(c->n * ys)) : NULL;
        dy = ktest_dev_upload(yb ? (void *)yb : (void *)y0, ye * (size_t)(c->n * ys));
        free(yb);
    } else {
        dy = ktest_dev_alloc(ye * (size_t)(c->n * ys));
    }
    struct cuda_gemm_args a = {.w = dw,
                               .rows = c->rows,
                               .cols = c->cols,
                               .x_type = c->xt,
                               .x = dx,
                               .x_stride = xs,
                               .y_type = c->yt,
                               .y = dy,
                               .y_stride = ys,
                               .n = c->n,
                               .accumulate = c->accumulate};
    int rc = cuda_gemm(ctx, &a);
    float *all = ktest_download_f32(dy, (size_t)(c->n * ys), c->yt == DTYPE_BF16);

    /* reference: the bf16-rounded activations, contiguous, through the CPU twin */
    ktest_round_bf16(x, (size_t)(c->n * xs));
    float *xc = xmalloc(sizeof(float) * (size_t)(c->n * c->cols));
    for (int64_t b = 0; b < c->n; b++)
        memcpy(xc + b * c->cols, x + b * xs, sizeof(float) * (size_t)c->cols);
    float *ref = xmalloc(sizeof(float) * (size_t)(c->n * c->rows));
    struct cpu_matrix cm = cpu_matrix_make(DTYPE_BF16, c->rows, c->cols, w);
    cpu_matmul(NULL, &cm, xc, c->n, ref);
    float *got = xmalloc(sizeof(float) * (size_t)(c->n * c->rows));
    for (int64_t b = 0; b < c->n; b++) {
        memcpy(got + b * c->rows, all + b * ys, sizeof(float) * (size_t)c->rows);
        if (c->accumulate)
            for (int64_t r = 0; r < c->rows; r++)
                ref[b * c->rows + r] += y0[b * ys + r];
    }
    char shape[96];
    snprintf(shape, sizeof shape, "n=%lld %lldx%lld %s->%s%s%s", (long long)c->n,
             (long long)c->rows, (long long)c->cols, c->xt == DTYPE_F32 ? "f32" : "bf16",
             c->yt == DTYPE_F32 ? "f32" : "bf16", c->accumulate ? " +=" : "",
             c->x_pad || c->y_pad ? " strided" : "");
    ktest_check("gemm", shape, rc, got, ref, (size_t)(c->n * c->rows),
                c->yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(w), free(x), free(xb), free(y0), free(all), free(xc), free(ref), free(got);
    ktest_dev_free(dw), ktest_dev_free(dx), ktest_dev_free(dy);
}

int main(void)
{
    ktest_init("test_cuda_gemm");
    struct cuda_gemm_ctx *ctx = cuda_gemm_ctx_create(NULL);
    if (!ctx) {
        fprintf(stderr, "cuda_gemm_ctx_create: %s\n", cuda_last_error());
        return 1;
    }
    const struct gemm_case cases[] = {
            {1, 8, 16, DTYPE_BF16, DTYPE_F32, 0, 0, 0},
            {3, 64, 128, DTYPE_F32, DTYPE_F32, 0, 0, 0},
            {17, 37, 45, DTYPE_F32, DTYPE_F32, 0, 0, 0}, /* odd: unaligned leading dims */
            {17, 37, 45, DTYPE_BF16, DTYPE_BF16, 1, 0, 0},
            {32, 1000, 512, DTYPE_BF16, DTYPE_F32, 1, 3, 5}, /* strided, += */
            {32, 1000, 512, DTYPE_BF16, DTYPE_F32, 1, 3, 5}, /* again: the cached plan */
            {64, 513, 256, DTYPE_F32, DTYPE_BF16, 0, 8, 0},
            {300, 96, 200, DTYPE_F32, DTYPE_F32, 1, 0, 2},
            {8, 6144, 5120, DTYPE_F32, DTYPE_F32, 0, 0, 0},     /* 27B in_proj_z, batched decode */
            {32, 5120, 17408, DTYPE_BF16, DTYPE_F32, 1, 0, 0},  /* 27B down_proj + residual */
            {129, 1024, 5120, DTYPE_BF16, DTYPE_BF16, 0, 0, 0}, /* prefill rows, bf16 out */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        gemm_run(ctx, &cases[i]);

    /* a context sized up front takes an f32 product without allocating */
    struct cuda_gemm_ctx *ctx2 = cuda_gemm_ctx_create(NULL);
    int rc = ctx2 ? cuda_gemm_ctx_reserve(ctx2, 40 * 300) : -1;
    ktest_check("gemm reserve", "40 x 300", rc, NULL, NULL, 0, 0.0);
    if (ctx2) {
        const struct gemm_case c = {40, 77, 300, DTYPE_F32, DTYPE_F32, 0, 0, 0};
        gemm_run(ctx2, &c);
    }
    cuda_gemm_ctx_destroy(ctx2);
    cuda_gemm_ctx_destroy(NULL);

    struct cuda_gemm_args bad = {.w = (void *)256,
                                 .rows = 8,
                                 .cols = 16,
                                 .x_type = DTYPE_F16,
                                 .x = (void *)256,
                                 .x_stride = 16,
                                 .y_type = DTYPE_F32,
                                 .y = (void *)256,
                                 .y_stride = 8,
                                 .n = 2};
    ktest_check_rejected("gemm", "f16 activations", cuda_gemm(ctx, &bad));
    bad.x_type = DTYPE_BF16;
    bad.x_stride = 15;
    ktest_check_rejected("gemm", "x_stride < cols", cuda_gemm(ctx, &bad));
    cuda_gemm_ctx_destroy(ctx);
    return ktest_finish();
}
