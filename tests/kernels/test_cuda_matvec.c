/*
 * tests/kernels/test_cuda_matvec.c — cuda_matvec() against cpu_matmul() with bf16 weights: every
 * batch 1..8, f32 and bf16 activations and outputs, the residual add, shapes from 1 x 8 to the
 * 27B model's 17408 x 5120, columns that are not a multiple of the 256-element warp step (fast
 * path tails) or of 8 (slow path), misaligned weights and strided activations, and every fixed
 * kernel configuration with the launch overlap on and off; groups of products sharing x with
 * mixed output types; a chain of products, each reading the previous one's output, launched
 * back to back with the overlap (eagerly and as a CUDA graph), which fails if a product reads
 * its input before the previous kernel finished; and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_matvec.h"
#include "ktest.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <math.h>
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
    int no_overlap;
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
    int rc = c->variant || c->no_overlap
                     ? cuda_matvec_tuned(&m, 1, c->variant, !c->no_overlap, NULL)
                     : cuda_matvec(&m, NULL);
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
    snprintf(shape, sizeof shape, "%lldx%lld b=%d %s->%s%s%s%s %s%s", (long long)c->rows,
             (long long)c->cols, c->batch, c->xt == DTYPE_F32 ? "f32" : "bf16",
             c->yt == DTYPE_F32 ? "f32" : "bf16", c->accumulate ? " +=" : "",
             c->x_pad || c->y_pad ? " strided" : "", c->w_offset ? " w+1" : "",
             cuda_matvec_variant_name(c->variant), c->no_overlap ? " no-pdl" : "");
    ktest_check("matvec", shape, rc, got, ref, (size_t)(c->batch * c->rows),
                c->yt == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
    free(w), free(x), free(y0), free(wpad), free(xb), free(all), free(xc), free(ref), free(got);
    ktest_dev_free(dw), ktest_dev_free(dx), ktest_dev_free(dy);
}

/* n products sharing x as one launch; product i has its own rows, output type and residual
 * add; misalign puts product 1's weights off the 16-byte grid (the whole group goes slow). */
static void mv_group_run(int n, const int64_t *rows, int64_t cols, int batch, enum dtype xt,
                         int misalign, int variant)
{
    struct cuda_matvec m[CUDA_MATVEC_MAX_GROUP];
    uint16_t *w[CUDA_MATVEC_MAX_GROUP], *dw[CUDA_MATVEC_MAX_GROUP];
    float *y0[CUDA_MATVEC_MAX_GROUP];
    void *dy[CUDA_MATVEC_MAX_GROUP];
    float *x = ktest_random((size_t)(batch * cols), -1.0f, 1.0f);
    if (xt == DTYPE_BF16)
        ktest_round_bf16(x, (size_t)(batch * cols));
    uint16_t *xb = xt == DTYPE_BF16 ? ktest_to_bf16(x, (size_t)(batch * cols)) : NULL;
    void *dx = ktest_dev_upload(xb ? (void *)xb : (void *)x,
                                (xt == DTYPE_F32 ? 4 : 2) * (size_t)(batch * cols));
    for (int i = 0; i < n; i++) {
        size_t nw = (size_t)(rows[i] * cols);
        float *wf = ktest_random(nw, -1.0f, 1.0f);
        w[i] = ktest_to_bf16(wf, nw);
        free(wf);
        int off = misalign && i == 1;
        uint16_t *wpad = xmalloc(sizeof(uint16_t) * (nw + 1));
        memcpy(wpad + off, w[i], sizeof(uint16_t) * nw);
        dw[i] = ktest_dev_upload(wpad, sizeof(uint16_t) * (nw + 1));
        free(wpad);
        enum dtype yt = i % 2 ? DTYPE_BF16 : DTYPE_F32;
        int acc = i % 3 == 2;
        y0[i] = ktest_random((size_t)(batch * rows[i]), -2.0f, 2.0f);
        if (yt == DTYPE_BF16)
            ktest_round_bf16(y0[i], (size_t)(batch * rows[i]));
        size_t ye = yt == DTYPE_F32 ? 4 : 2, ny = (size_t)(batch * rows[i]);
        if (acc) {
            uint16_t *yb = yt == DTYPE_BF16 ? ktest_to_bf16(y0[i], ny) : NULL;
            dy[i] = ktest_dev_upload(yb ? (void *)yb : (void *)y0[i], ye * ny);
            free(yb);
        } else {
            dy[i] = ktest_dev_alloc(ye * ny);
        }
        m[i] = (struct cuda_matvec){.w_type = DTYPE_BF16,
                                    .w = dw[i] + off,
                                    .rows = rows[i],
                                    .cols = cols,
                                    .x_type = xt,
                                    .x = dx,
                                    .x_stride = cols,
                                    .y_type = yt,
                                    .y = dy[i],
                                    .y_stride = rows[i],
                                    .batch = batch,
                                    .accumulate = acc};
    }
    int rc = variant ? cuda_matvec_tuned(m, n, variant, true, NULL) : cuda_matvec_group(m, n, NULL);
    for (int i = 0; i < n; i++) {
        size_t ny = (size_t)(batch * rows[i]);
        float *got = ktest_download_f32(dy[i], ny, m[i].y_type == DTYPE_BF16);
        float *ref = xmalloc(sizeof(float) * ny);
        struct cpu_matrix cm = cpu_matrix_make(DTYPE_BF16, rows[i], cols, w[i]);
        cpu_matmul(NULL, &cm, x, batch, ref);
        if (m[i].accumulate)
            for (size_t j = 0; j < ny; j++)
                ref[j] += y0[i][j];
        char shape[96];
        snprintf(shape, sizeof shape, "%d of %d: %lldx%lld b=%d %s->%s%s%s %s", i + 1, n,
                 (long long)rows[i], (long long)cols, batch, xt == DTYPE_F32 ? "f32" : "bf16",
                 m[i].y_type == DTYPE_F32 ? "f32" : "bf16", m[i].accumulate ? " +=" : "",
                 misalign ? " w+1" : "", cuda_matvec_variant_name(variant));
        ktest_check("matvec group", shape, rc, got, ref, ny,
                    m[i].y_type == DTYPE_F32 ? KTEST_BOUND_F32 : KTEST_BOUND_BF16);
        free(got), free(ref), free(w[i]), free(y0[i]);
        ktest_dev_free(dw[i]), ktest_dev_free(dy[i]);
    }
    free(x), free(xb);
    ktest_dev_free(dx);
}

/* h_{i+1} = W_i h_i for steps square products of size dim, each launched right after the
 * previous one on one stream (with the overlap), eagerly or captured and replayed as a graph. */
static void mv_chain_run(int steps, int64_t dim, int batch, int as_graph, int variant)
{
    size_t nw = (size_t)(dim * dim), nh = (size_t)(batch * dim);
    uint16_t **w = xmalloc(sizeof(uint16_t *) * (size_t)steps);
    void **dw = xmalloc(sizeof(void *) * (size_t)steps);
    for (int i = 0; i < steps; i++) {
        /* entries of +-1/sqrt(dim) keep the activations near 1 over many steps */
        float *wf = ktest_random(nw, -1.7f / sqrtf((float)dim), 1.7f / sqrtf((float)dim));
        w[i] = ktest_to_bf16(wf, nw);
        free(wf);
        dw[i] = ktest_dev_upload(w[i], sizeof(uint16_t) * nw);
    }
    float *h = ktest_random(nh, -1.0f, 1.0f);
    float *dh[2] = {ktest_dev_upload(h, sizeof(float) * nh), ktest_dev_alloc(sizeof(float) * nh)};
    cudaStream_t st;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    int rc = cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) == cudaSuccess ? 0 : -1;
    if (as_graph && rc == 0 &&
        cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        rc = -1;
    for (int i = 0; i < steps && rc == 0; i++) {
        struct cuda_matvec m = {.w_type = DTYPE_BF16,
                                .w = dw[i],
                                .rows = dim,
                                .cols = dim,
                                .x_type = DTYPE_F32,
                                .x = dh[i % 2],
                                .x_stride = dim,
                                .y_type = DTYPE_F32,
                                .y = dh[(i + 1) % 2],
                                .y_stride = dim,
                                .batch = batch};
        rc = cuda_matvec_tuned(&m, 1, variant, true, st);
    }
    if (as_graph && rc == 0)
        rc = cudaStreamEndCapture(st, &graph) == cudaSuccess &&
                             cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess &&
                             cudaGraphLaunch(exec, st) == cudaSuccess
                     ? 0
                     : -1;
    if (rc == 0 && cudaStreamSynchronize(st) != cudaSuccess)
        rc = -1;
    float *got = ktest_download_f32(dh[steps % 2], nh, 0);
    float *next = xmalloc(sizeof(float) * nh);
    for (int i = 0; i < steps; i++) {
        struct cpu_matrix cm = cpu_matrix_make(DTYPE_BF16, dim, dim, w[i]);
        cpu_matmul(NULL, &cm, h, batch, next);
        memcpy(h, next, sizeof(float) * nh);
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%d x %lldx%lld b=%d %s", steps, (long long)dim, (long long)dim,
             batch, as_graph ? "graph" : "eager");
    ktest_check("matvec chain", shape, rc, got, h, nh, 1e-4);
    for (int i = 0; i < steps; i++) {
        free(w[i]);
        ktest_dev_free(dw[i]);
    }
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    cudaStreamDestroy(st);
    free(w), free(dw), free(h), free(got), free(next);
    ktest_dev_free(dh[0]), ktest_dev_free(dh[1]);
}

int main(void)
{
    ktest_init("test_cuda_matvec");
    /* every batch and type pair on shapes small enough for the CPU twin */
    const int64_t shapes[][2] = {{1, 8},     {7, 256},    {33, 1000},
                                 {65, 1001}, {129, 2056}, {300, 5120}};
    const enum dtype types[2] = {DTYPE_F32, DTYPE_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int b = 1; b <= CUDA_MATVEC_MAX_BATCH; b++)
            for (int t = 0; t < 4; t++) {
                struct mv_case c = {.rows = shapes[s][0],
                                    .cols = shapes[s][1],
                                    .batch = b,
                                    .xt = types[t / 2],
                                    .yt = types[t % 2],
                                    .accumulate = (b + t) % 3 == 0};
                mv_run(&c);
            }
    /* the 27B model's shapes (batch 1 and 8) */
    const int64_t big[][2] = {{1024, 5120}, {5120, 6144}, {4096, 17408}};
    for (size_t s = 0; s < sizeof big / sizeof big[0]; s++)
        for (int b = 1; b <= 8; b += 7) {
            struct mv_case c = {big[s][0], big[s][1], b, DTYPE_F32, DTYPE_F32, 0, 0, 0, 0, 0, 0};
            mv_run(&c);
            c.xt = c.yt = DTYPE_BF16;
            c.accumulate = 1;
            mv_run(&c);
        }
    /* every fixed configuration of the fast kernel, including row counts that leave a warp
     * partly past the last row */
    for (int v = 1; v <= cuda_matvec_variant_count(); v++)
        for (int b = 1; b <= 8; b += 3) {
            struct mv_case c = {131, 2056, b, DTYPE_F32, DTYPE_F32, 0, 0, 0, 0, v, b == 4};
            mv_run(&c);
            struct mv_case d = {4097, 5120, b, DTYPE_BF16, DTYPE_F32, 1, 0, 0, 0, v, 0};
            mv_run(&d);
        }
    /* layouts the fast path must refuse (and the slow path get right) or accept */
    struct mv_case strided = {77, 512, 3, DTYPE_F32, DTYPE_BF16, 0, 8, 5, 0, 0, 0};
    mv_run(&strided);
    struct mv_case odd_stride = {77, 512, 3, DTYPE_F32, DTYPE_F32, 0, 1, 1, 0, 0, 0};
    mv_run(&odd_stride);
    struct mv_case misaligned = {77, 512, 2, DTYPE_BF16, DTYPE_F32, 1, 0, 0, 1, 0, 0};
    mv_run(&misaligned);

    /* groups: a GDN layer's qkv/z/b/a at reduced width, q/k/v, gate/up, the largest group */
    const int64_t gdn[] = {640, 384, 6, 6}, qkv[] = {96, 33, 33}, mlp[] = {700, 700};
    const int64_t eight[] = {1, 2, 3, 5, 8, 13, 21, 34};
    for (int b = 1; b <= 8; b *= 2) {
        mv_group_run(4, gdn, 320, b, b % 2 ? DTYPE_F32 : DTYPE_BF16, 0, 0);
        mv_group_run(3, qkv, 1000, b, DTYPE_F32, 0, 0);
    }
    mv_group_run(2, mlp, 5120, 1, DTYPE_BF16, 0, 0);
    mv_group_run(8, eight, 264, 3, DTYPE_F32, 0, 0);
    mv_group_run(3, qkv, 512, 2, DTYPE_F32, 1, 0);

    /* the same through each fixed configuration */
    for (int v = 1; v <= cuda_matvec_variant_count(); v++) {
        mv_group_run(4, gdn, 320, 1 + v % 8, DTYPE_F32, 0, v);
        mv_group_run(3, qkv, 1000, 8 - v % 8, DTYPE_BF16, 0, v);
    }

    mv_chain_run(24, 1024, 1, 0, 0);
    mv_chain_run(24, 1024, 1, 1, 0);
    mv_chain_run(12, 2048, 8, 1, 0);
    for (int v = 1; v <= cuda_matvec_variant_count(); v++)
        mv_chain_run(8, 1024, 1 + v % 8, v % 2, v);

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
    bad.w_type = DTYPE_BF16;
    struct cuda_matvec pair[2] = {bad, bad};
    pair[1].cols = 16;
    pair[1].x_stride = 16;
    ktest_check_rejected("matvec group", "different cols", cuda_matvec_group(pair, 2, NULL));
    ktest_check_rejected("matvec group", "9 products", cuda_matvec_group(pair, 9, NULL));
    return ktest_finish();
}
