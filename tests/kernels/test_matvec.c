/*
 * tests/kernels/test_matvec.c — cuda_matvec() against cpu_matmul() with bf16 weights: every
 * batch 1..8, f32 and bf16 activations and outputs, the residual add, shapes from 1 x 8 to the
 * 27B model's 17408 x 5120, columns that are not a multiple of the 256-element warp step (fast
 * path tails) or of 8 (slow path), misaligned weights and strided activations, and every fixed
 * kernel configuration; and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_matvec.h"
#include "ktest.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mv_case {
    int64_t rows, cols;
    int batch;
    enum dtype xt, yt;
    int accumulate;
    int64_t x_pad, y_pad; /* extra elements between activation / output rows */
    int w_offset;         /* weights start this many elements into their buffer */
    int variant;
};

static void mv_run(const struct mv_case *c)
{
    size_t nw = (size_t)(c->rows * c->cols);
    int64_t xs = c->cols + c->x_pad, ys = c->rows + c->y_pad;
    float *wf = ktest_random(nw, -1.0f, 1.0f);
    uint16_t *w = ktest_to_bf16(wf, nw);
    free(wf);
    float *x = ktest_random((size_t)(c->batch * xs), -1.0f, 1.0f);
    if (c->xt == DTYPE_BF16)
        ktest_round_bf16(x, (size_t)(c->batch * xs));
    float *y0 = ktest_random((size_t)(c->batch * ys), -4.0f, 4.0f);
    if (c->yt == DTYPE_BF16)
        ktest_round_bf16(y0, (size_t)(c->batch * ys));

    /* device copies; the weights may start off the 16-byte grid */
    uint16_t *wpad = xmalloc(sizeof(uint16_t) * (nw + (size_t)c->w_offset));
    memcpy(wpad + c->w_offset, w, sizeof(uint16_t) * nw);
    uint16_t *dw = ktest_dev_upload(wpad, sizeof(uint16_t) * (nw + (size_t)c->w_offset));
    uint16_t *xb = c->xt == DTYPE_BF16 ? ktest_to_bf16(x, (size_t)(c->batch * xs)) : NULL;
    size_t xe = c->xt == DTYPE_F32 ? 4 : 2, ye = c->yt == DTYPE_F32 ? 4 : 2;
    void *dx = ktest_dev_upload(xb ? (void *)xb : (void *)x, xe * (size_t)(c->batch * xs));
    void *dy;
    if (c->accumulate) {
        uint16_t *yb = c->yt == DTYPE_BF16 ? ktest_to_bf16(y0, (size_t)(c->batch * ys)) : NULL;
        dy = ktest_dev_upload(yb ? (void *)yb : (void *)y0, ye * (size_t)(c->batch * ys));
        free(yb);
    } else {
        dy = ktest_dev_alloc(ye * (size_t)(c->batch * ys));
    }
    struct cuda_matvec m = {.w_type = DTYPE_BF16,
                            .w = dw + c->w_offset,
                            .rows = c->rows,
                            .cols = c->cols,
                            .x_type = c->xt,
                            .x = dx,
                            .x_stride = xs,
                            .y_type = c->yt,
                            .y = dy,
                            .y_stride = ys,
                            .batch = c->batch,
                            .accumulate = c->accumulate};
    int rc = cuda_matvec_variant(&m, c->variant, NULL);
    float *all = ktest_download_f32(dy, (size_t)(c->batch * ys), c->yt == DTYPE_BF16);

    /* reference: contiguous activations through the CPU twin */
    float *xc = xmalloc(sizeof(float) * (size_t)(c->batch * c->cols));
    for (int b = 0; b < c->batch; b++)
        memcpy(xc + b * c->cols, x + b * xs, sizeof(float) * (size_t)c->cols);
    float *ref = xmalloc(sizeof(float) * (size_t)(c->batch * c->rows));
    struct cpu_matrix cm = cpu_matrix_make(DTYPE_BF16, c->rows, c->cols, w);
    cpu_matmul(NULL, &cm, xc, c->batch, ref);
    float *got = xmalloc(sizeof(float) * (size_t)(c->batch * c->rows));
    for (int b = 0; b < c->batch; b++) {
        memcpy(got + b * c->rows, all + b * ys, sizeof(float) * (size_t)c->rows);
        if (c->accumulate)
            for (int64_t r = 0; r < c->rows; r++)
                ref[b * c->rows + r] += y0[b * ys + r];
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%lldx%lld b=%d %s->%s%s%s%s %s", (long long)c->rows,
             (long long)c->cols, c->batch, c->xt == DTYPE_F32 ? "f32" : "bf16",
             c->yt == DTYPE_F32 ? "f32" : "bf16", c->accumulate ? " +=" : "",
             c->x_pad || c->y_pad ? " strided" : "", c->w_offset ? " w+1" : "",
             cuda_matvec_variant_name(c->variant));
    ktest_check("matvec", shape, rc, got, ref, (size_t)(c->batch * c->rows),
                c->yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(w), free(x), free(y0), free(wpad), free(xb), free(all), free(xc), free(ref), free(got);
    ktest_dev_free(dw), ktest_dev_free(dx), ktest_dev_free(dy);
}

int main(void)
{
    ktest_init("test_matvec");
    /* every batch and type pair on shapes small enough for the CPU twin */
    const int64_t shapes[][2] = {{1, 8},     {7, 256},    {33, 1000},
                                 {65, 1001}, {129, 2056}, {300, 5120}};
    const enum dtype types[2] = {DTYPE_F32, DTYPE_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int b = 1; b <= CUDA_MATVEC_MAX_BATCH; b++)
            for (int t = 0; t < 4; t++) {
                struct mv_case c = {shapes[s][0],
                                    shapes[s][1],
                                    b,
                                    types[t / 2],
                                    types[t % 2],
                                    (b + t) % 3 == 0,
                                    0,
                                    0,
                                    0,
                                    0};
                mv_run(&c);
            }
    /* the 27B model's shapes (batch 1 and 8) */
    const int64_t big[][2] = {{1024, 5120}, {5120, 6144}, {4096, 17408}};
    for (size_t s = 0; s < sizeof big / sizeof big[0]; s++)
        for (int b = 1; b <= 8; b += 7) {
            struct mv_case c = {big[s][0], big[s][1], b, DTYPE_F32, DTYPE_F32, 0, 0, 0, 0, 0};
            mv_run(&c);
            c.xt = c.yt = DTYPE_BF16;
            c.accumulate = 1;
            mv_run(&c);
        }
    /* every fixed configuration of the fast kernel, including row counts that leave a warp
     * partly past the last row */
    for (int v = 1; v <= cuda_matvec_variant_count(); v++)
        for (int b = 1; b <= 8; b += 3) {
            struct mv_case c = {131, 2056, b, DTYPE_F32, DTYPE_F32, 0, 0, 0, 0, v};
            mv_run(&c);
            struct mv_case d = {4097, 5120, b, DTYPE_BF16, DTYPE_F32, 1, 0, 0, 0, v};
            mv_run(&d);
        }
    /* layouts the fast path must refuse (and the slow path get right) or accept */
    struct mv_case strided = {77, 512, 3, DTYPE_F32, DTYPE_BF16, 0, 8, 5, 0, 0};
    mv_run(&strided);
    struct mv_case odd_stride = {77, 512, 3, DTYPE_F32, DTYPE_F32, 0, 1, 1, 0, 0};
    mv_run(&odd_stride);
    struct mv_case misaligned = {77, 512, 2, DTYPE_BF16, DTYPE_F32, 1, 0, 0, 1, 0};
    mv_run(&misaligned);

    struct cuda_matvec bad = {.w_type = DTYPE_BF16,
                              .w = (void *)16,
                              .rows = 8,
                              .cols = 8,
                              .x_type = DTYPE_F32,
                              .x = (void *)16,
                              .x_stride = 8,
                              .y_type = DTYPE_F32,
                              .y = (void *)16,
                              .y_stride = 8,
                              .batch = 9};
    ktest_check_rejected("matvec", "batch 9", cuda_matvec(&bad, NULL));
    bad.batch = 1;
    bad.w_type = DTYPE_Q4_K;
    ktest_check_rejected("matvec", "q4_k weights", cuda_matvec(&bad, NULL));
    return ktest_finish();
}
