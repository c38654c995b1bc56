/*
 * tests/kernels/test_cuda_sample.c — cuda_argmax() and cuda_sample() against a host twin of the
 * same algorithm in double precision: Qwen-size (248320) and Qwen3-size (151936) vocabularies,
 * bf16 logits full of ties, NaN and infinities, rows shorter than top_k; greedy, top-k, top-p
 * over the kept set and over the whole row, the exact whole-row draw, the 1024-candidate limit;
 * the generator's advance; and the refusal of bad arguments. Where the double-precision running
 * sum lies within rounding of a boundary, both neighbouring tokens are accepted.
 */
#include "cuda_sample.h"
#include "ktest.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_TOL 1e-4 /* relative slack of a boundary between float and double sums */

static const float *sort_x; /* qsort has no context argument */

/* Best first: finite before non-finite, higher value, then lower id. */
static int sample_rank_cmp(const void *pa, const void *pb)
{
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    float xa = sort_x[a], xb = sort_x[b];
    int fa = isfinite(xa), fb = isfinite(xb);
    if (fa != fb)
        return fb - fa;
    if (fa && xa != xb)
        return xa > xb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static uint64_t sample_mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static int32_t ref_argmax(const float *x, int64_t n)
{
    int32_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]) && (best < 0 || x[i] > x[best]))
            best = (int32_t)i;
    return best < 0 ? 0 : best;
}

/* Whether token tok is an acceptable draw for row x under p with uniform u; *truncated gets
 * the flag the kernel must report. */
static int ref_sample_ok(const float *x, int64_t n, const struct cuda_sample_row *p, double u,
                         int32_t tok, int *truncated)
{
    *truncated = 0;
    if (!(p->temperature > 0.0f) || p->top_k == 1 || !(p->top_p > 0.0f))
        return tok == ref_argmax(x, n);
    int32_t best = ref_argmax(x, n);
    double mx = isfinite(x[best]) ? x[best] : 0.0, inv_t = 1.0 / p->temperature;
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += isfinite(x[i]) ? exp((x[i] - mx) * inv_t) : 0.0;
    if (p->top_k <= 0 && p->top_p >= 1.0f) {
        double target = u * total, run = 0.0, tol = SAMPLE_TOL * total;
        if (tok < 0 || tok >= n || !isfinite(x[tok]))
            return 0;
        for (int64_t i = 0; i < tok; i++)
            run += isfinite(x[i]) ? exp((x[i] - mx) * inv_t) : 0.0;
        double after = run + exp((x[tok] - mx) * inv_t);
        return run - tol <= target && target < after + tol;
    }
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)i;
    sort_x = x;
    qsort(ids, (size_t)n, sizeof(int32_t), sample_rank_cmp);
    int64_t k = p->top_k > 0 && p->top_k < CUDA_SAMPLE_MAX_K ? p->top_k : CUDA_SAMPLE_MAX_K;
    k = k < n ? k : n;
    *truncated = p->top_k > CUDA_SAMPLE_MAX_K && n > CUDA_SAMPLE_MAX_K;
    double *cum = xmalloc(sizeof(double) * (size_t)k);
    double run = 0.0;
    for (int64_t r = 0; r < k; r++) {
        float v = x[ids[r]];
        run += isfinite(v) ? exp((v - mx) * inv_t) : 0.0;
        cum[r] = run;
    }
    /* the kept prefix lengths within rounding of the top-p boundary */
    int64_t keep_lo = k, keep_hi = k;
    if (p->top_p < 1.0f) {
        double base = p->top_k > 0 ? cum[k - 1] : total, target = p->top_p * base;
        double tol = SAMPLE_TOL * base;
        keep_lo = -1;
        for (int64_t r = 0; r < k; r++)
            if (cum[r] >= target - tol) {
                keep_lo = r + 1;
                break;
            }
        keep_hi = keep_lo;
        while (keep_hi < k && cum[keep_hi - 1] < target + tol)
            keep_hi++;
        if (keep_lo < 0) { /* the 1024 best do not reach top_p of the row */
            keep_lo = keep_hi = k;
            *truncated = k < n;
        } else if (p->top_k <= 0 && cum[k - 1] < target + tol && k < n) {
            *truncated = -1; /* either flag is right at the boundary */
        }
    }
    int ok = 0;
    for (int64_t nk = keep_lo; nk <= keep_hi && !ok; nk++) {
        double target = u * cum[nk - 1], tol = SAMPLE_TOL * cum[nk - 1];
        for (int64_t r = 0; r < nk && !ok; r++) {
            double before = r ? cum[r - 1] : 0.0;
            if (ids[r] == tok && before - tol <= target && target < cum[r] + tol &&
                (cum[r] > before || cum[nk - 1] == 0.0))
                ok = 1;
        }
    }
    free(ids), free(cum);
    return ok;
}

/* Logits shaped like a model's: a broad body and a few strong candidates. */
static float *sample_logits(int64_t rows, int64_t n, enum dtype t, int specials)
{
    float *x = xmalloc(sizeof(float) * (size_t)(rows * n));
    for (int64_t i = 0; i < rows * n; i++)
        x[i] = 2.0f * (ktest_uniform(-1, 1) + ktest_uniform(-1, 1) + ktest_uniform(-1, 1));
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < 8; j++)
            x[r * n + ktest_below(n)] = ktest_uniform(8.0f, 14.0f);
    if (specials)
        for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < 6; j++) {
                const float bad[3] = {NAN, INFINITY, -INFINITY};
                x[r * n + ktest_below(n)] = bad[j % 3];
            }
    if (t == DTYPE_BF16)
        ktest_round_bf16(x, (size_t)(rows * n));
    return x;
}

static void *sample_upload(const float *x, size_t n, enum dtype t)
{
    if (t == DTYPE_F32)
        return ktest_dev_upload(x, sizeof(float) * n);
    uint16_t *b = ktest_to_bf16(x, n);
    void *d = ktest_dev_upload(b, sizeof(uint16_t) * n);
    free(b);
    return d;
}

static void argmax_run(int64_t rows, int64_t n, enum dtype t, int specials)
{
    int64_t stride = n + 5;
    float *x = sample_logits(rows, stride, t, specials);
    if (rows > 1) /* a tied best: the lower id must win */
        x[1 * stride + n / 3] = x[1 * stride + n - 1] = 20.0f;
    if (rows > 2) /* no finite logit */
        for (int64_t i = 0; i < n; i++)
            x[2 * stride + i] = -INFINITY;
    void *dx = sample_upload(x, (size_t)(rows * stride), t);
    int32_t *dout = ktest_dev_alloc(sizeof(int32_t) * (size_t)rows);
    struct cuda_argmax a = {
            .type = t, .logits = dx, .stride = stride, .rows = rows, .n = n, .out = dout};
    int rc = cuda_argmax(&a, NULL);
    int32_t *tok = xmalloc(sizeof(int32_t) * (size_t)rows);
    ktest_download(tok, dout, sizeof(int32_t) * (size_t)rows);
    float *got = xmalloc(sizeof(float) * (size_t)rows),
          *ref = xmalloc(sizeof(float) * (size_t)rows);
    for (int64_t r = 0; r < rows; r++)
        got[r] = (float)tok[r], ref[r] = (float)ref_argmax(x + r * stride, n);
    char shape[96];
    snprintf(shape, sizeof shape, "%s rows=%lld n=%lld%s", t == DTYPE_F32 ? "f32" : "bf16",
             (long long)rows, (long long)n, specials ? " nan/inf" : "");
    ktest_check("argmax", shape, rc, got, ref, (size_t)rows, 0.0);
    free(x), free(tok), free(got), free(ref);
    ktest_dev_free(dx), ktest_dev_free(dout);
}

static void sample_run(int64_t n, enum dtype t, int specials, const struct cuda_sample_row *set,
                       int n_set, int repeats, const char *what)
{
    int64_t rows = (int64_t)n_set * repeats, stride = n + 3;
    float *x = sample_logits(rows, stride, t, specials);
    struct cuda_sample_row *p = xmalloc(sizeof *p * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        p[r] = set[r % n_set];
        p[r].rng = (uint64_t)ktest_below(1 << 30) * 0x100000001ull + (uint64_t)r;
        p[r].truncated = 7;
    }
    void *dx = sample_upload(x, (size_t)(rows * stride), t);
    void *dp = ktest_dev_upload(p, sizeof *p * (size_t)rows);
    int32_t *dout = ktest_dev_alloc(sizeof(int32_t) * (size_t)rows);
    struct cuda_sample a = {.type = t,
                            .logits = dx,
                            .stride = stride,
                            .rows = rows,
                            .n = n,
                            .params = dp,
                            .out = dout};
    int rc = cuda_sample(&a, NULL);
    int32_t *tok = xmalloc(sizeof(int32_t) * (size_t)rows);
    struct cuda_sample_row *after = xmalloc(sizeof *after * (size_t)rows);
    ktest_download(tok, dout, sizeof(int32_t) * (size_t)rows);
    ktest_download(after, dp, sizeof *after * (size_t)rows);
    float *got = xmalloc(sizeof(float) * (size_t)rows * 3);
    float *ref = xmalloc(sizeof(float) * (size_t)rows * 3);
    for (int64_t r = 0; r < rows; r++) {
        uint64_t state = p[r].rng + 0x9E3779B97F4A7C15ull;
        double u = (double)(sample_mix(state) >> 40) * (1.0 / 16777216.0);
        int trunc = 0;
        int ok = ref_sample_ok(x + r * stride, n, &p[r], u, tok[r], &trunc);
        if (!ok)
            printf("  row %lld: token %d not a valid draw (T=%g k=%d p=%g u=%.7f)\n", (long long)r,
                   tok[r], p[r].temperature, p[r].top_k, p[r].top_p, u);
        got[r] = (float)ok, ref[r] = 1.0f;
        got[rows + r] = (float)(after[r].rng == state), ref[rows + r] = 1.0f;
        got[2 * rows + r] = (float)after[r].truncated;
        ref[2 * rows + r] = trunc < 0 ? got[2 * rows + r] : (float)trunc;
    }
    char shape[96];
    snprintf(shape, sizeof shape, "%s n=%lld rows=%lld %s%s", t == DTYPE_F32 ? "f32" : "bf16",
             (long long)n, (long long)rows, what, specials ? " nan/inf" : "");
    ktest_check("sample", shape, rc, got, ref, (size_t)rows * 3, 0.0);
    free(x), free(p), free(tok), free(after), free(got), free(ref);
    ktest_dev_free(dx), ktest_dev_free(dp), ktest_dev_free(dout);
}

int main(void)
{
    ktest_init("test_cuda_sample");
    argmax_run(1, 248320, DTYPE_F32, 0);
    argmax_run(8, 151936, DTYPE_BF16, 0);
    argmax_run(3, 1001, DTYPE_F32, 1);
    argmax_run(4, 1, DTYPE_BF16, 0);
    argmax_run(5, 7, DTYPE_F32, 1);

    /* temperature, top_p, top_k */
    const struct cuda_sample_row mixed[] = {
            {0.7f, 0.9f, 50, 0, 0},   {1.0f, 0.95f, 0, 0, 0}, {1.3f, 1.0f, 0, 0, 0},
            {1.0f, 1.0f, 1024, 0, 0}, {0.5f, 1.0f, 5, 0, 0},  {0.0f, 1.0f, 0, 0, 0},
            {1.0f, 0.5f, 40, 0, 0},   {2.0f, 0.8f, 0, 0, 0},
    };
    int nm = (int)(sizeof mixed / sizeof mixed[0]);
    sample_run(248320, DTYPE_F32, 0, mixed, nm, 3, "mixed");
    sample_run(151936, DTYPE_BF16, 0, mixed, nm, 3, "mixed");
    sample_run(1000, DTYPE_F32, 1, mixed, nm, 4, "mixed");
    sample_run(7, DTYPE_BF16, 1, mixed, nm, 4, "mixed");
    sample_run(1, DTYPE_F32, 0, mixed, nm, 1, "mixed");
    const struct cuda_sample_row wide[] = {
            {1.0f, 1.0f, 2000, 0, 0}, /* more than the candidate limit: truncated */
            {5.0f, 0.99f, 0, 0, 0},   /* a flat distribution: the nucleus passes 1024 */
            {1.0f, 1.0f, 1023, 0, 0},
    };
    sample_run(5003, DTYPE_F32, 0, wide, 3, 4, "wide");
    sample_run(200000, DTYPE_BF16, 0, wide, 3, 2, "wide");

    struct cuda_argmax bad = {.type = DTYPE_F16,
                              .logits = (void *)16,
                              .stride = 8,
                              .rows = 1,
                              .n = 8,
                              .out = (void *)16};
    ktest_check_rejected("argmax", "f16 logits", cuda_argmax(&bad, NULL));
    struct cuda_sample sbad = {.type = DTYPE_F32,
                               .logits = (void *)16,
                               .stride = 4,
                               .rows = 2,
                               .n = 8,
                               .params = (void *)16,
                               .out = (void *)16};
    ktest_check_rejected("sample", "stride < n", cuda_sample(&sbad, NULL));
    sbad.stride = 8, sbad.params = NULL;
    ktest_check_rejected("sample", "no params", cuda_sample(&sbad, NULL));
    return ktest_finish();
}
