/*
 * tests/kernels/ktest.c — the kernel-test harness (see ktest.h).
 */
#include "ktest.h"

#include "cuda_device.h"
#include "dtype.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ktest_row {
    char op[48], shape[96];
    double err, max_err;
    int pass;
    char note[160];
};

static const char *ktest_program = "?";
static uint64_t ktest_state;
static struct ktest_row *ktest_rows;
static size_t ktest_n_rows, ktest_cap_rows;

static void ktest_cuda(cudaError_t err, const char *what)
{
    if (err == cudaSuccess)
        return;
    fprintf(stderr, "FAIL %s: %s: %s\n", ktest_program, what, cudaGetErrorString(err));
    exit(1);
}

void ktest_init(const char *program)
{
    ktest_program = program;
    int n = 0;
    if (cuda_device_count(&n) != 0 || n == 0) {
        printf("%s: no CUDA device (%s): skipped\n", program, cuda_last_error());
        exit(77);
    }
    const char *s = getenv("KTEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    ktest_state = seed;
    struct cuda_device_info info;
    if (cuda_device_query(0, &info) != 0) {
        fprintf(stderr, "FAIL %s: %s\n", program, cuda_last_error());
        exit(1);
    }
    printf("%s on %s (sm_%d%d), KTEST_SEED=%llu\n", program, info.name, info.cc_major,
           info.cc_minor, (unsigned long long)seed);
}

static uint64_t ktest_next(void)
{
    uint64_t z = (ktest_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float ktest_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(ktest_next() >> 11) * 0x1.0p-53);
}

int64_t ktest_below(int64_t n)
{
    return (int64_t)(ktest_next() % (uint64_t)n);
}

float *ktest_random(size_t n, float lo, float hi)
{
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        x[i] = ktest_uniform(lo, hi);
    return x;
}

void ktest_round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = dtype_bf16_to_f32(dtype_f32_to_bf16(x[i]));
}

uint16_t *ktest_to_bf16(const float *x, size_t n)
{
    uint16_t *y = xmalloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        y[i] = dtype_f32_to_bf16(x[i]);
    return y;
}

float *ktest_from_bf16(const uint16_t *x, size_t n)
{
    float *y = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        y[i] = dtype_bf16_to_f32(x[i]);
    return y;
}

void *ktest_dev_alloc(size_t bytes)
{
    void *p = NULL;
    ktest_cuda(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    ktest_dev_poison(p, bytes);
    return p;
}

void *ktest_dev_upload(const void *host, size_t bytes)
{
    void *p = NULL;
    ktest_cuda(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    ktest_cuda(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "upload");
    return p;
}

void ktest_dev_poison(void *dev, size_t bytes)
{
    ktest_cuda(cudaMemset(dev, 0xFF, bytes), "poison");
    ktest_cuda(cudaDeviceSynchronize(), "poison");
}

void ktest_download(void *host, const void *dev, size_t bytes)
{
    ktest_cuda(cudaDeviceSynchronize(), "kernel");
    ktest_cuda(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), "download");
}

float *ktest_download_f32(const void *dev, size_t n, int is_bf16)
{
    if (!is_bf16) {
        float *y = xmalloc(sizeof(float) * (n ? n : 1));
        ktest_download(y, dev, sizeof(float) * n);
        return y;
    }
    uint16_t *raw = xmalloc(sizeof(uint16_t) * (n ? n : 1));
    ktest_download(raw, dev, sizeof(uint16_t) * n);
    float *y = ktest_from_bf16(raw, n);
    free(raw);
    return y;
}

void ktest_dev_free(void *dev)
{
    ktest_cuda(cudaFree(dev), "cudaFree");
}

static struct ktest_row *ktest_add_row(const char *op, const char *shape)
{
    if (ktest_n_rows == ktest_cap_rows)
        ktest_rows = xgrow(ktest_rows, &ktest_cap_rows, ktest_n_rows + 1, sizeof *ktest_rows);
    struct ktest_row *r = &ktest_rows[ktest_n_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    return r;
}

int ktest_check(const char *op, const char *shape, int rc, const float *got, const float *ref,
                size_t n, double bound)
{
    struct ktest_row *r = ktest_add_row(op, shape);
    if (rc != 0) {
        snprintf(r->note, sizeof r->note, "returned %d: %s", rc, cuda_last_error());
        return 0;
    }
    /* a failed launch can be sticky: catch it here rather than in the next case */
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
        snprintf(r->note, sizeof r->note, "device error: %s", cudaGetErrorString(err));
        return 0;
    }
    double diff2 = 0.0, ref2 = 0.0, max_diff = 0.0, max_ref = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (bad++ == 0)
                first_bad = i;
            continue;
        }
        double d = (double)got[i] - (double)ref[i];
        diff2 += d * d;
        ref2 += (double)ref[i] * ref[i];
        max_diff = fmax(max_diff, fabs(d));
        max_ref = fmax(max_ref, fabs((double)ref[i]));
    }
    r->err = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    r->max_err = max_ref > 0.0 ? max_diff / max_ref : max_diff;
    if (bad) {
        snprintf(r->note, sizeof r->note, "%zu of %zu elements not finite (first at %zu)", bad, n,
                 first_bad);
        return 0;
    }
    r->pass = r->err <= bound && r->max_err <= 8.0 * bound;
    if (!r->pass)
        snprintf(r->note, sizeof r->note, "bound %.1e", bound);
    return r->pass;
}

int ktest_check_rejected(const char *op, const char *shape, int rc)
{
    struct ktest_row *r = ktest_add_row(op, shape);
    r->pass = rc == -1 && cuda_last_error()[0] != '\0';
    snprintf(r->note, sizeof r->note, "%s",
             r->pass ? "rejected as expected" : "bad arguments were accepted");
    return r->pass;
}

int ktest_finish(void)
{
    size_t failed = 0;
    printf("%-6s %-22s %-44s %9s %9s  %s\n", "result", "op", "case", "rel.err", "max.err", "note");
    for (size_t i = 0; i < ktest_n_rows; i++) {
        struct ktest_row *r = &ktest_rows[i];
        failed += !r->pass;
        printf("%-6s %-22s %-44s %9.2e %9.2e  %s\n", r->pass ? "PASS" : "FAIL", r->op, r->shape,
               r->err, r->max_err, r->note);
    }
    printf("SUMMARY %s: %zu cases, %zu passed, %zu failed\n", ktest_program, ktest_n_rows,
           ktest_n_rows - failed, failed);
    free(ktest_rows);
    return failed || ktest_n_rows == 0 ? 1 : 0;
}
