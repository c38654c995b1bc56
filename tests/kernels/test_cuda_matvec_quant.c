/*
 * tests/kernels/test_cuda_matvec_quant.c — cuda_matvec() with GGUF weight blocks (F16, Q8_0,
 * Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) against the CPU twin dtype_dequant_row() followed by a double
 * precision dot product. Every case draws valid random blocks (random f16 scales and mins in a
 * model's range, random quants and packed 6-bit sub-block scales), covers batches 1..8, f32 and
 * bf16 activations and outputs, the residual add, strided activations, a row count that is
 * not a multiple of the block's warps, one super-block rows and the 27B width (5120 = 20
 * super-blocks), F16 rows whose length is not a multiple of 32, weights off the 16-byte grid
 * (staged into shared memory at a 2-byte offset), a group of two products, and
 * the refusal of a row length that is not a whole number of blocks.
 */
#include "cuda_matvec.h"
#include "dtype.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = dtype_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

/* rows x cols weights of type t as GGUF blocks: random bytes, then valid scales written over
 * the fields that hold f16 values. */
static uint8_t *quant_random(enum dtype t, int64_t rows, int64_t cols, size_t *bytes)
{
    size_t rb = dtype_row_bytes(t, (size_t)cols), bb = dtype_block_bytes(t);
    *bytes = rb * (size_t)rows;
    uint8_t *w = xmalloc(*bytes);
    for (size_t i = 0; i < *bytes; i++)
        w[i] = (uint8_t)ktest_below(256);
    if (t == DTYPE_F16) {
        for (size_t i = 0; i < *bytes / 2; i++)
            put_f16(w + 2 * i, ktest_uniform(-1.0f, 1.0f));
        return w;
    }
    for (size_t b = 0; b < *bytes / bb; b++) {
        uint8_t *p = w + b * bb;
        switch (t) {
        case DTYPE_Q8_0:
        case DTYPE_Q4_0:
            put_f16(p, ktest_uniform(-0.05f, 0.05f));
            break;
        case DTYPE_Q4_1:
            put_f16(p, ktest_uniform(0.001f, 0.05f));
            put_f16(p + 2, ktest_uniform(-0.4f, 0.0f));
            break;
        case DTYPE_Q4_K:
        case DTYPE_Q5_K:
            put_f16(p, ktest_uniform(0.0005f, 0.003f));
            put_f16(p + 2, ktest_uniform(0.0005f, 0.003f));
            break;
        case DTYPE_Q6_K:
            put_f16(p + 208, ktest_uniform(0.0001f, 0.002f));
            break;
        default:
            break;
        }
    }
    return w;
}

struct mq_case {
    enum dtype wt;
    int64_t rows, cols;
    int batch;
    enum dtype xt, yt;
    int accumulate;
    int64_t x_pad;
    int w_offset; /* the blocks start this many bytes into their buffer (off the 16-byte grid) */
};

static void mq_run(const struct mq_case *c)
{
    size_t bytes;
    uint8_t *w = quant_random(c->wt, c->rows, c->cols, &bytes);
    int64_t xs = c->cols + c->x_pad, ys = c->rows;
    float *x = ktest_random((size_t)(c->batch * xs), -1.0f, 1.0f);
    uint16_t *xb = NULL;
    if (c->xt == DTYPE_BF16) {
        ktest_round_bf16(x, (size_t)(c->batch * xs));
        xb = ktest_to_bf16(x, (size_t)(c->batch * xs));
    }
    float *y0 = ktest_random((size_t)(c->batch * ys), -4.0f, 4.0f);
    if (c->yt == DTYPE_BF16)
        ktest_round_bf16(y0, (size_t)(c->batch * ys));
    size_t xe = c->xt == DTYPE_F32 ? 4 : 2, ye = c->yt == DTYPE_F32 ? 4 : 2;
    uint8_t *wpad = xcalloc(bytes + (size_t)c->w_offset, 1);
    memcpy(wpad + c->w_offset, w, bytes);
    uint8_t *dwpad = ktest_dev_upload(wpad, bytes + (size_t)c->w_offset);
    void *dw = dwpad + c->w_offset;
    free(wpad);
    void *dx = ktest_dev_upload(xb ? (void *)xb : (void *)x, xe * (size_t)(c->batch * xs));
    void *dy;
    if (c->accumulate) {
        uint16_t *yb = c->yt == DTYPE_BF16 ? ktest_to_bf16(y0, (size_t)(c->batch * ys)) : NULL;
        dy = ktest_dev_upload(yb ? (void *)yb : (void *)y0, ye * (size_t)(c->batch * ys));
        free(yb);
    } else {
        dy = ktest_dev_alloc(ye * (size_t)(c->batch * ys));
    }
    struct cuda_matvec m = {.w_type = c->wt,
                            .w = dw,
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
    int rc = cuda_matvec(&m, NULL);
    float *got = ktest_download_f32(dy, (size_t)(c->batch * ys), c->yt == DTYPE_BF16);

    float *row = xmalloc(sizeof(float) * (size_t)c->cols);
    float *ref = xmalloc(sizeof(float) * (size_t)(c->batch * ys));
    size_t rb = dtype_row_bytes(c->wt, (size_t)c->cols);
    for (int64_t r = 0; r < c->rows; r++) {
        dtype_dequant_row(c->wt, w + (size_t)r * rb, row, (size_t)c->cols);
        for (int b = 0; b < c->batch; b++) {
            double s = 0.0;
            for (int64_t i = 0; i < c->cols; i++)
                s += (double)row[i] * x[b * xs + i];
            ref[b * ys + r] = (float)s + (c->accumulate ? y0[b * ys + r] : 0.0f);
        }
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s %lldx%lld b=%d %s->%s%s%s%s", dtype_name(c->wt),
             (long long)c->rows, (long long)c->cols, c->batch, c->xt == DTYPE_F32 ? "f32" : "bf16",
             c->yt == DTYPE_F32 ? "f32" : "bf16", c->accumulate ? " +=" : "",
             c->x_pad ? " strided" : "", c->w_offset ? " w+2" : "");
    ktest_check("matvec_quant", shape, rc, got, ref, (size_t)(c->batch * ys),
                c->yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(w), free(x), free(xb), free(y0), free(got), free(row), free(ref);
    ktest_dev_free(dwpad), ktest_dev_free(dx), ktest_dev_free(dy);
}

/* Two Q4_K products sharing x in one launch, f32 and bf16 outputs. */
static void mq_group_run(void)
{
    const int64_t rows[2] = {300, 77}, cols = 512;
    const int batch = 3;
    float *x = ktest_random((size_t)(batch * cols), -1.0f, 1.0f);
    void *dx = ktest_dev_upload(x, sizeof(float) * (size_t)(batch * cols));
    struct cuda_matvec m[2];
    uint8_t *w[2];
    void *dw[2], *dy[2];
    for (int i = 0; i < 2; i++) {
        size_t bytes;
        w[i] = quant_random(DTYPE_Q4_K, rows[i], cols, &bytes);
        dw[i] = ktest_dev_upload(w[i], bytes);
        dy[i] = ktest_dev_alloc((i ? 2 : 4) * (size_t)(batch * rows[i]));
        m[i] = (struct cuda_matvec){.w_type = DTYPE_Q4_K,
                                    .w = dw[i],
                                    .rows = rows[i],
                                    .cols = cols,
                                    .x_type = DTYPE_F32,
                                    .x = dx,
                                    .x_stride = cols,
                                    .y_type = i ? DTYPE_BF16 : DTYPE_F32,
                                    .y = dy[i],
                                    .y_stride = rows[i],
                                    .batch = batch};
    }
    int rc = cuda_matvec_group(m, 2, NULL);
    float row[512];
    for (int i = 0; i < 2; i++) {
        float *got = ktest_download_f32(dy[i], (size_t)(batch * rows[i]), i);
        float *ref = xmalloc(sizeof(float) * (size_t)(batch * rows[i]));
        size_t rb = dtype_row_bytes(DTYPE_Q4_K, (size_t)cols);
        for (int64_t r = 0; r < rows[i]; r++) {
            dtype_dequant_row(DTYPE_Q4_K, w[i] + (size_t)r * rb, row, (size_t)cols);
            for (int b = 0; b < batch; b++) {
                double s = 0.0;
                for (int64_t k = 0; k < cols; k++)
                    s += (double)row[k] * x[b * cols + k];
                ref[b * rows[i] + r] = (float)s;
            }
        }
        ktest_check("matvec_quant group", i ? "q4_k 77x512 b=3 ->bf16" : "q4_k 300x512 b=3 ->f32",
                    rc, got, ref, (size_t)(batch * rows[i]),
                    i ? KTEST_BOUND_BF16 : KTEST_BOUND_F32);
        free(got), free(ref), free(w[i]);
        ktest_dev_free(dw[i]), ktest_dev_free(dy[i]);
    }
    free(x);
    ktest_dev_free(dx);
}

int main(void)
{
    ktest_init("test_cuda_matvec_quant");
    const enum dtype types[] = {DTYPE_F16,  DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_1,
                                DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        enum dtype wt = types[t];
        int64_t blk = (int64_t)dtype_block_elems(wt) > 32 ? 256 : 32;
        const struct mq_case cases[] = {
                {wt, 37, blk, 1, DTYPE_F32, DTYPE_F32, 0, 0, 0},
                {wt, 1000, 5120, 1, DTYPE_F32, DTYPE_F32, 0, 0, 0}, /* the 27B width */
                {wt, 129, 2 * blk, 2, DTYPE_BF16, DTYPE_F32, 1, 0, 0},
                {wt, 64, 3 * blk, 3, DTYPE_F32, DTYPE_BF16, 0, 5, 0},
                {wt, 200, 5120, 4, DTYPE_BF16, DTYPE_BF16, 1, 0, 0},
                {wt, 33, 4 * blk, 5, DTYPE_F32, DTYPE_F32, 1, 3, 0},
                {wt, 250, 1024, 8, DTYPE_F32, DTYPE_F32, 0, 0, 0},
                {wt, 17, 17 * blk, 7, DTYPE_BF16, DTYPE_F32, 0, 8, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            mq_run(&cases[i]);
    }
    const struct mq_case odd[] = {
            {DTYPE_F16, 19, 45, 2, DTYPE_F32, DTYPE_F32, 0, 0, 0},
            {DTYPE_F16, 5, 7, 8, DTYPE_BF16, DTYPE_F32, 1, 1, 0},
            /* off the 16-byte grid: the K types' byte-load path */
            {DTYPE_Q4_K, 65, 512, 3, DTYPE_F32, DTYPE_F32, 0, 0, 2},
            {DTYPE_Q5_K, 65, 512, 1, DTYPE_BF16, DTYPE_F32, 1, 0, 2},
            {DTYPE_Q6_K, 33, 768, 2, DTYPE_F32, DTYPE_F32, 0, 0, 2},
            {DTYPE_Q8_0, 33, 96, 4, DTYPE_F32, DTYPE_F32, 0, 0, 2},
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        mq_run(&odd[i]);
    mq_group_run();

    struct cuda_matvec bad = {.w_type = DTYPE_Q4_K,
                              .w = (void *)256,
                              .rows = 4,
                              .cols = 300,
                              .x_type = DTYPE_F32,
                              .x = (void *)256,
                              .x_stride = 300,
                              .y_type = DTYPE_F32,
                              .y = (void *)256,
                              .y_stride = 4,
                              .batch = 1};
    ktest_check_rejected("matvec_quant", "q4_k cols 300", cuda_matvec(&bad, NULL));
    bad.w_type = DTYPE_F32;
    bad.cols = 256;
    ktest_check_rejected("matvec_quant", "f32 weights", cuda_matvec(&bad, NULL));
    return ktest_finish();
}
