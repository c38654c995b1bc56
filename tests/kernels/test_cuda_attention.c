/*
 * tests/kernels/test_cuda_attention.c — cuda_attention_decode() and cuda_attention_prefill()
 * against cpu_attention(): the 27B shape (24/4 heads of 256) at contexts up to 8k, batches of
 * sequences with different lengths (1 and 0 included), plain multi-head and groups larger than
 * a decode block serves, more context pieces than positions, padded strides, prefill from
 * position 0 and continuing a cache, f32 and bf16 queries, caches and outputs; prefill through
 * each kernel (CUDA cores, tensor cores) forced in turn, the tensor-core one at odd query counts
 * (1, 7, 63, 65, 300), continuing after up to 1000 cached positions, GQA ratios 1, 4 and 6 and
 * head_dim 32-256; and the refusal of bad arguments.
 */
#include "cpu_ops.h"
#include "cuda_attention.h"
#include "ktest.h"
#include "threadpool.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Outputs average many products: f32 results carry the summation-order error of a long
 * softmax, so the f32 bound is that of the chained GDN products. */
#define ATTN_BOUND_F32 1e-4

/* The CPU twin's threads (the long prefill references). */
static struct threadpool *attn_pool;

struct attn_types {
    enum dtype q, kv, out;
};

static const char *attn_type_name(enum dtype t)
{
    return t == DTYPE_BF16 ? "bf16" : "f32";
}

/* A device copy of n floats as type t. */
static void *attn_upload(const float *x, size_t n, enum dtype t)
{
    if (t == DTYPE_F32)
        return ktest_dev_upload(x, sizeof(float) * n);
    uint16_t *b = ktest_to_bf16(x, n);
    void *d = ktest_dev_upload(b, sizeof(uint16_t) * n);
    free(b);
    return d;
}

/* n random floats in [lo, hi), rounded to bf16 when t is BF16 (what the GPU will read). */
static float *attn_random(size_t n, float lo, float hi, enum dtype t)
{
    float *x = ktest_random(n, lo, hi);
    if (t == DTYPE_BF16)
        ktest_round_bf16(x, n);
    return x;
}

struct decode_case {
    int n_seqs, n_heads, n_kv_heads, head_dim;
    int32_t lens[6];
    int pad; /* extra elements in every stride */
    int n_splits;
};

static void decode_run(const struct decode_case *c, struct attn_types t)
{
    int hd = c->head_dim, row = c->n_heads * hd;
    int64_t kv_stride = (int64_t)c->n_kv_heads * hd + c->pad, max_len = 0;
    for (int s = 0; s < c->n_seqs; s++)
        max_len = c->lens[s] > max_len ? c->lens[s] : max_len;
    int64_t cap = max_len + 3, seq_stride = cap * kv_stride;
    int64_t q_stride = row + c->pad, out_stride = row + 2 * c->pad;
    size_t nq = (size_t)(c->n_seqs * q_stride), nkv = (size_t)(c->n_seqs * seq_stride);
    float *q = attn_random(nq, -2.0f, 2.0f, t.q);
    float *k = attn_random(nkv, -1.0f, 1.0f, t.kv), *v = attn_random(nkv, -1.0f, 1.0f, t.kv);
    float scale = 1.0f / sqrtf((float)hd);
    float *ref = xcalloc((size_t)(c->n_seqs * row), sizeof(float));
    for (int s = 0; s < c->n_seqs; s++) {
        if (c->lens[s] == 0)
            continue;
        struct cpu_attention a = {.q = q + s * q_stride,
                                  .k = k + s * seq_stride,
                                  .v = v + s * seq_stride,
                                  .kv_stride = kv_stride,
                                  .out = ref + s * row,
                                  .n_q = 1,
                                  .pos0 = c->lens[s] - 1,
                                  .n_heads = c->n_heads,
                                  .n_kv_heads = c->n_kv_heads,
                                  .head_dim = hd,
                                  .scale = scale};
        cpu_attention(NULL, &a);
    }
    void *dq = attn_upload(q, nq, t.q), *dk = attn_upload(k, nkv, t.kv);
    void *dv = attn_upload(v, nkv, t.kv);
    void *dlens = ktest_dev_upload(c->lens, sizeof(int32_t) * (size_t)c->n_seqs);
    size_t oe = t.out == DTYPE_F32 ? 4 : 2;
    void *dout = ktest_dev_alloc(oe * (size_t)(c->n_seqs * out_stride));
    int splits = c->n_splits ? c->n_splits
                             : cuda_attention_decode_splits(c->n_seqs, c->n_heads, c->n_kv_heads,
                                                            max_len);
    void *work =
            ktest_dev_alloc(cuda_attention_decode_work_bytes(c->n_seqs, c->n_heads, hd, splits));
    struct cuda_attention_decode a = {.q_type = t.q,
                                      .kv_type = t.kv,
                                      .out_type = t.out,
                                      .q = dq,
                                      .q_stride = q_stride,
                                      .k = dk,
                                      .v = dv,
                                      .kv_stride = kv_stride,
                                      .seq_stride = seq_stride,
                                      .lens = dlens,
                                      .max_len = max_len,
                                      .out = dout,
                                      .out_stride = out_stride,
                                      .n_seqs = c->n_seqs,
                                      .n_heads = c->n_heads,
                                      .n_kv_heads = c->n_kv_heads,
                                      .head_dim = hd,
                                      .scale = scale,
                                      .n_splits = c->n_splits,
                                      .work = work};
    int rc = cuda_attention_decode(&a, NULL);
    float *all = ktest_download_f32(dout, (size_t)(c->n_seqs * out_stride), t.out == DTYPE_BF16);
    float *got = xmalloc(sizeof(float) * (size_t)(c->n_seqs * row));
    for (int s = 0; s < c->n_seqs; s++)
        memcpy(got + s * row, all + s * out_stride, sizeof(float) * (size_t)row);
    char shape[128];
    int n = snprintf(
            shape, sizeof shape, "%s/%s/%s %d/%d hd=%d splits=%d lens=", attn_type_name(t.q),
            attn_type_name(t.kv), attn_type_name(t.out), c->n_heads, c->n_kv_heads, hd, splits);
    for (int s = 0; s < c->n_seqs && n < (int)sizeof shape - 8; s++)
        n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%d", s ? "," : "", c->lens[s]);
    ktest_check("attn_decode", shape, rc, got, ref, (size_t)(c->n_seqs * row),
                t.out == DTYPE_F32 ? ATTN_BOUND_F32 : KTEST_BOUND_BF16);
    free(q), free(k), free(v), free(ref), free(all), free(got);
    ktest_dev_free(dq), ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dlens);
    ktest_dev_free(dout), ktest_dev_free(work);
}

struct prefill_case {
    int64_t n_q, pos0;
    int n_heads, n_kv_heads, head_dim, pad;
};

static const char *attn_impl_name(enum cuda_attention_impl impl)
{
    return impl == CUDA_ATTENTION_IMPL_TENSOR  ? "tensor"
           : impl == CUDA_ATTENTION_IMPL_TILED ? "tiled"
                                               : "auto";
}

/* The tensor-core kernel multiplies bf16 operands (queries and softmax weights rounded), so its
 * outputs get the bf16 bound whatever their type (also where AUTO picks it). */
static void prefill_run(const struct prefill_case *c, struct attn_types t,
                        enum cuda_attention_impl impl)
{
    int hd = c->head_dim, row = c->n_heads * hd;
    int64_t kv_stride = (int64_t)c->n_kv_heads * hd + c->pad, n_ctx = c->pos0 + c->n_q;
    int64_t q_stride = row + c->pad, out_stride = row + 3 * c->pad;
    size_t nq = (size_t)(c->n_q * q_stride), nkv = (size_t)(n_ctx * kv_stride);
    float *q = attn_random(nq, -2.0f, 2.0f, t.q);
    float *k = attn_random(nkv, -1.0f, 1.0f, t.kv), *v = attn_random(nkv, -1.0f, 1.0f, t.kv);
    float scale = 1.0f / sqrtf((float)hd);
    /* cpu_attention reads dense query rows */
    float *qd = xmalloc(sizeof(float) * (size_t)(c->n_q * row));
    for (int64_t i = 0; i < c->n_q; i++)
        memcpy(qd + i * row, q + i * q_stride, sizeof(float) * (size_t)row);
    float *ref = xmalloc(sizeof(float) * (size_t)(c->n_q * row));
    struct cpu_attention ca = {.q = qd,
                               .k = k,
                               .v = v,
                               .kv_stride = kv_stride,
                               .out = ref,
                               .n_q = c->n_q,
                               .pos0 = c->pos0,
                               .n_heads = c->n_heads,
                               .n_kv_heads = c->n_kv_heads,
                               .head_dim = hd,
                               .scale = scale};
    cpu_attention(attn_pool, &ca);
    void *dq = attn_upload(q, nq, t.q), *dk = attn_upload(k, nkv, t.kv);
    void *dv = attn_upload(v, nkv, t.kv);
    size_t oe = t.out == DTYPE_F32 ? 4 : 2;
    void *dout = ktest_dev_alloc(oe * (size_t)(c->n_q * out_stride));
    struct cuda_attention_prefill a = {.q_type = t.q,
                                       .kv_type = t.kv,
                                       .out_type = t.out,
                                       .q = dq,
                                       .q_stride = q_stride,
                                       .k = dk,
                                       .v = dv,
                                       .kv_stride = kv_stride,
                                       .out = dout,
                                       .out_stride = out_stride,
                                       .n_q = c->n_q,
                                       .pos0 = c->pos0,
                                       .n_heads = c->n_heads,
                                       .n_kv_heads = c->n_kv_heads,
                                       .head_dim = hd,
                                       .scale = scale,
                                       .impl = impl};
    int tensor = impl == CUDA_ATTENTION_IMPL_TENSOR ||
                 (impl == CUDA_ATTENTION_IMPL_AUTO && cuda_attention_prefill_tensor_ok(&a));
    int rc = cuda_attention_prefill(&a, NULL);
    float *all = ktest_download_f32(dout, (size_t)(c->n_q * out_stride), t.out == DTYPE_BF16);
    float *got = xmalloc(sizeof(float) * (size_t)(c->n_q * row));
    for (int64_t i = 0; i < c->n_q; i++)
        memcpy(got + i * row, all + i * out_stride, sizeof(float) * (size_t)row);
    char shape[128];
    snprintf(shape, sizeof shape, "%s %s/%s/%s %d/%d hd=%d n_q=%lld pos0=%lld pad=%d",
             attn_impl_name(impl), attn_type_name(t.q), attn_type_name(t.kv), attn_type_name(t.out),
             c->n_heads, c->n_kv_heads, hd, (long long)c->n_q, (long long)c->pos0, c->pad);
    ktest_check("attn_prefill", shape, rc, got, ref, (size_t)(c->n_q * row),
                t.out == DTYPE_F32 && !tensor ? ATTN_BOUND_F32 : KTEST_BOUND_BF16);
    free(q), free(k), free(v), free(qd), free(ref), free(all), free(got);
    ktest_dev_free(dq), ktest_dev_free(dk), ktest_dev_free(dv), ktest_dev_free(dout);
}

static void attn_rejected(void)
{
    int32_t *lens = (int32_t *)16;
    struct cuda_attention_decode d = {.q_type = DTYPE_F32,
                                      .kv_type = DTYPE_F32,
                                      .out_type = DTYPE_F32,
                                      .q = (void *)16,
                                      .q_stride = 640,
                                      .k = (void *)16,
                                      .v = (void *)16,
                                      .kv_stride = 160,
                                      .lens = lens,
                                      .max_len = 4,
                                      .out = (void *)16,
                                      .out_stride = 640,
                                      .n_seqs = 1,
                                      .n_heads = 8,
                                      .n_kv_heads = 2,
                                      .head_dim = 80,
                                      .scale = 1.0f,
                                      .work = (void *)16};
    ktest_check_rejected("attn_decode", "head_dim 80", cuda_attention_decode(&d, NULL));
    d.head_dim = 64, d.n_kv_heads = 3;
    ktest_check_rejected("attn_decode", "8 heads over 3 kv heads", cuda_attention_decode(&d, NULL));
    struct cuda_attention_prefill p = {.q_type = DTYPE_F16,
                                       .kv_type = DTYPE_F32,
                                       .out_type = DTYPE_F32,
                                       .q = (void *)16,
                                       .q_stride = 512,
                                       .k = (void *)16,
                                       .v = (void *)16,
                                       .kv_stride = 128,
                                       .out = (void *)16,
                                       .out_stride = 512,
                                       .n_q = 4,
                                       .n_heads = 8,
                                       .n_kv_heads = 2,
                                       .head_dim = 64,
                                       .scale = 1.0f};
    ktest_check_rejected("attn_prefill", "f16 queries", cuda_attention_prefill(&p, NULL));
    p.q_type = DTYPE_F32, p.kv_stride = 100;
    ktest_check_rejected("attn_prefill", "kv_stride < kv row", cuda_attention_prefill(&p, NULL));
    p.kv_stride = 128, p.impl = CUDA_ATTENTION_IMPL_TENSOR;
    ktest_check_rejected("attn_prefill", "tensor cores, f32 cache",
                         cuda_attention_prefill(&p, NULL));
    p.kv_type = DTYPE_BF16, p.kv_stride = 132;
    ktest_check_rejected("attn_prefill", "tensor cores, kv_stride 132",
                         cuda_attention_prefill(&p, NULL));
    p.kv_stride = 128, p.k = (void *)18;
    ktest_check_rejected("attn_prefill", "tensor cores, k misaligned",
                         cuda_attention_prefill(&p, NULL));
    p.k = (void *)16, p.impl = (enum cuda_attention_impl)7;
    ktest_check_rejected("attn_prefill", "impl 7", cuda_attention_prefill(&p, NULL));
}

/* The automatic choice: the tensor cores exactly where they can run. */
static void attn_auto_choice(void)
{
    struct cuda_attention_prefill p = {.q_type = DTYPE_F32,
                                       .kv_type = DTYPE_BF16,
                                       .out_type = DTYPE_F32,
                                       .q = (void *)256,
                                       .q_stride = 6144,
                                       .k = (void *)256,
                                       .v = (void *)512,
                                       .kv_stride = 1024,
                                       .out = (void *)256,
                                       .out_stride = 6144,
                                       .n_q = 4096,
                                       .n_heads = 24,
                                       .n_kv_heads = 4,
                                       .head_dim = 256,
                                       .scale = 0.0625f};
    int ok = cuda_attention_prefill_tensor_ok(&p);
    p.kv_type = DTYPE_F32;
    int f32 = cuda_attention_prefill_tensor_ok(&p);
    p.kv_type = DTYPE_BF16, p.head_dim = 80;
    int hd80 = cuda_attention_prefill_tensor_ok(&p);
    float got = ok && !f32 && !hd80 ? 1.0f : 0.0f, want = 1.0f;
    ktest_check("attn_prefill", "tensor_ok: 27B shape yes, f32 cache no, hd 80 no", 0, &got, &want,
                1, KTEST_BOUND_F32);
}

int main(void)
{
    ktest_init("test_cuda_attention");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    attn_pool = threadpool_create(cpus > 16 ? 16 : (int)cpus);
    const struct attn_types types[] = {
            {DTYPE_F32, DTYPE_F32, DTYPE_F32},
            {DTYPE_BF16, DTYPE_BF16, DTYPE_BF16},
            {DTYPE_F32, DTYPE_BF16, DTYPE_F32},
            {DTYPE_BF16, DTYPE_F32, DTYPE_BF16},
    };
    const struct decode_case dec[] = {
            {1, 24, 4, 256, {8192}, 0, 0},
            {1, 24, 4, 256, {1}, 0, 0},
            {3, 8, 2, 256, {1000, 1, 333}, 8, 0},
            {5, 16, 16, 128, {777, 5, 0, 64, 129}, 0, 0},
            {2, 32, 2, 64, {77, 4097}, 4, 0},
            {1, 6, 3, 32, {5}, 0, 7},
            {6, 24, 4, 256, {1024, 2000, 3, 1023, 1025, 64}, 0, 3},
    };
    for (size_t i = 0; i < sizeof dec / sizeof dec[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            decode_run(&dec[i], types[t]);
    const struct prefill_case pre[] = {
            {512, 0, 24, 4, 256, 0}, {37, 100, 8, 2, 256, 8}, {1, 0, 4, 4, 64, 0},
            {129, 3, 12, 4, 128, 0}, {17, 0, 6, 3, 32, 2},    {300, 0, 16, 2, 64, 0},
    };
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
            prefill_run(&pre[i], types[t], CUDA_ATTENTION_IMPL_TILED);
    /* tensor cores: a bf16 cache; queries f32 (rounded by the kernel) or bf16 */
    const struct attn_types tc_types[] = {
            {DTYPE_BF16, DTYPE_BF16, DTYPE_BF16},
            {DTYPE_F32, DTYPE_BF16, DTYPE_F32},
            {DTYPE_F32, DTYPE_BF16, DTYPE_BF16},
            {DTYPE_BF16, DTYPE_BF16, DTYPE_F32},
    };
    const struct prefill_case tc[] = {
            {1, 0, 4, 4, 64, 0},        {7, 0, 24, 4, 256, 0},    {63, 5, 8, 8, 128, 8},
            {64, 0, 24, 4, 256, 0},     {65, 130, 12, 2, 128, 0}, {300, 0, 16, 4, 64, 8},
            {300, 1000, 24, 4, 256, 0}, {512, 0, 24, 4, 256, 0},  {37, 100, 6, 1, 32, 8},
            {129, 64, 24, 4, 256, 8},   {1, 777, 24, 4, 256, 0},  {200, 0, 12, 2, 256, 0},
    };
    for (size_t i = 0; i < sizeof tc / sizeof tc[0]; i++)
        for (size_t t = 0; t < sizeof tc_types / sizeof tc_types[0]; t++)
            prefill_run(&tc[i], tc_types[t], CUDA_ATTENTION_IMPL_TENSOR);
    /* the automatic choice computes the same function (the engine's types: f32 q, bf16 cache) */
    prefill_run(&tc[6], tc_types[1], CUDA_ATTENTION_IMPL_AUTO);
    prefill_run(&pre[1], types[0], CUDA_ATTENTION_IMPL_AUTO);
    attn_rejected();
    attn_auto_choice();
    threadpool_destroy(attn_pool);
    return ktest_finish();
}
