/*
 * tests/kernels/test_cuda_matvec_rms.c — the norm-fused decode products (cuda_matvec_rms)
 * against their CPU twin: the RMS scale of each x row (cpu_rmsnorm without a weight) and the
 * product with the same bf16 weights (in double), then with swiglu cpu_silu_mul's formula.
 * Shapes: the 27B GDN group (qkv/z/b/a over 5120) and the MLP's gate/up (17408 x 5120) at
 * batch 1-4, odd row counts (the last warp's second row past the end), a single row, strided
 * x rows and outputs; bad arguments refused.
 */
#include "cuda_matvec_rms.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(n) (sizeof(float) * (size_t)(n))

static void rms_run(int n, const int64_t *rows, int64_t cols, int batch, int swiglu, int64_t pad)
{
    int64_t xs = cols + pad;
    float eps = 1e-6f;
    float *x = ktest_random((size_t)(batch * xs), -3.0f, 3.0f);
    float *dx = ktest_dev_upload(x, F(batch * xs));
    struct cuda_matvec_rms a = {.n = n,
                                .cols = cols,
                                .x = dx,
                                .x_stride = xs,
                                .batch = batch,
                                .eps = eps,
                                .swiglu = swiglu};
    float *w[CUDA_MATVEC_RMS_MAX_GROUP];
    void *dw[CUDA_MATVEC_RMS_MAX_GROUP];
    float *dy[CUDA_MATVEC_RMS_MAX_GROUP] = {0};
    float sc = 1.0f / sqrtf((float)cols);
    for (int m = 0; m < n; m++) {
        w[m] = ktest_random((size_t)(rows[m] * cols), -sc * 1.7f, sc * 1.7f);
        ktest_round_bf16(w[m], (size_t)(rows[m] * cols));
        uint16_t *wb = ktest_to_bf16(w[m], (size_t)(rows[m] * cols));
        dw[m] = ktest_dev_upload(wb, 2 * (size_t)(rows[m] * cols));
        free(wb);
        a.w[m] = dw[m];
        a.rows[m] = rows[m];
        a.y_stride[m] = rows[m] + pad;
        if (!swiglu) {
            dy[m] = ktest_dev_alloc(F(batch * a.y_stride[m]));
            a.y[m] = dy[m];
        }
    }
    void *dout = NULL;
    if (swiglu) {
        a.out_stride = rows[0] + pad;
        dout = ktest_dev_alloc(2 * (size_t)(batch * a.out_stride));
        a.out = dout;
    }
    int rc = cuda_matvec_rms(&a, NULL);
    double *s = xmalloc(sizeof(double) * (size_t)batch);
    for (int b = 0; b < batch; b++) {
        double ss = 0.0;
        for (int64_t c = 0; c < cols; c++)
            ss += (double)x[b * xs + c] * x[b * xs + c];
        s[b] = 1.0 / sqrt(ss / (double)cols + eps);
    }
    char shape[96];
    snprintf(shape, sizeof shape, "n=%d rows=%lld.. cols=%lld batch=%d%s%s", n, (long long)rows[0],
             (long long)cols, batch, swiglu ? " swiglu" : "", pad ? " strided" : "");
    /* y_m[b][r] = s_b * W_m[r] . x_b in double */
    float *ref[CUDA_MATVEC_RMS_MAX_GROUP];
    for (int m = 0; m < n; m++) {
        ref[m] = xmalloc(F(batch * rows[m]));
        for (int b = 0; b < batch; b++)
            for (int64_t r = 0; r < rows[m]; r++) {
                double acc = 0.0;
                for (int64_t c = 0; c < cols; c++)
                    acc += (double)w[m][r * cols + c] * x[b * xs + c];
                ref[m][b * rows[m] + r] = (float)(s[b] * acc);
            }
    }
    if (swiglu) {
        int64_t R = rows[0];
        float *got = ktest_download_f32(dout, (size_t)(batch * a.out_stride), 1);
        float *gc = xmalloc(F(batch * R)), *rs = xmalloc(F(batch * R));
        for (int b = 0; b < batch; b++)
            for (int64_t r = 0; r < R; r++) {
                double g = ref[0][b * R + r], u = ref[1][b * R + r];
                rs[b * R + r] = (float)(g / (1.0 + exp(-g)) * u);
                gc[b * R + r] = got[b * a.out_stride + r];
            }
        ktest_check("matvec_rms swiglu", shape, rc, gc, rs, (size_t)(batch * R), KTEST_BOUND_BF16);
        free(got), free(gc), free(rs);
    } else {
        for (int m = 0; m < n; m++) {
            float *got = ktest_download_f32(dy[m], (size_t)(batch * a.y_stride[m]), 0);
            float *gc = xmalloc(F(batch * rows[m]));
            for (int b = 0; b < batch; b++)
                memcpy(gc + b * rows[m], got + b * a.y_stride[m], F(rows[m]));
            char op[48];
            snprintf(op, sizeof op, "matvec_rms product %d", m);
            ktest_check(op, shape, rc, gc, ref[m], (size_t)(batch * rows[m]), 1e-4);
            free(got), free(gc);
        }
    }
    for (int m = 0; m < n; m++) {
        free(w[m]), free(ref[m]);
        ktest_dev_free(dw[m]);
        if (dy[m])
            ktest_dev_free(dy[m]);
    }
    if (dout)
        ktest_dev_free(dout);
    free(x), free(s);
    ktest_dev_free(dx);
}

int main(void)
{
    ktest_init("test_cuda_matvec_rms");
    const int64_t gdn[4] = {10240, 6144, 48, 48}, mlp[2] = {17408, 17408};
    const int64_t odd[3] = {7, 1, 33}, small[2] = {33, 33}, one[1] = {1};
    rms_run(4, gdn, 5120, 1, 0, 0); /* 27B GDN inputs, decode */
    rms_run(4, gdn, 5120, 3, 0, 4);
    rms_run(2, mlp, 5120, 1, 1, 0); /* 27B gate/up with the SwiGLU */
    rms_run(2, mlp, 5120, 2, 1, 8);
    rms_run(3, odd, 40, 4, 0, 4);
    rms_run(2, small, 64, 3, 1, 0);
    rms_run(1, one, 8, 1, 0, 0);
    struct cuda_matvec_rms bad = {.n = 1,
                                  .w = {(void *)16},
                                  .rows = {4},
                                  .y = {(void *)16},
                                  .y_stride = {4},
                                  .cols = 12,
                                  .x = (void *)16,
                                  .x_stride = 12,
                                  .batch = 1};
    ktest_check_rejected("matvec_rms", "cols 12", cuda_matvec_rms(&bad, NULL));
    bad.cols = 16, bad.x_stride = 16, bad.batch = 5;
    ktest_check_rejected("matvec_rms", "batch 5", cuda_matvec_rms(&bad, NULL));
    bad.batch = 1, bad.swiglu = true;
    ktest_check_rejected("matvec_rms", "swiglu with one product", cuda_matvec_rms(&bad, NULL));
    return ktest_finish();
}
