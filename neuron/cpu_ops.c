/*
 * neuron/cpu_ops.c — kernel selection, the portable C kernels and the parallel matrix product
 * driver of the CPU backend (see cpu_ops.h; the AVX2 kernels live in cpu_ops_avx2.c).
 */
#include "cpu_ops.h"

#include "cpu_ops_internal.h"
#include "xalloc.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- activation quantisation (see cpu_ops_internal.h) ----------------------------------- */

static float cpu_absmax(const float *x, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* Rounds n values to multiples of d (16-bit results). */
static void portable_act_quant(const float *x, float d, int16_t *q, int n)
{
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++)
        q[i] = (int16_t)nearbyintf(x[i] * id);
}

static void portable_quant_act32(const float *x, struct cpu_act32 *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        y[b].d = cpu_absmax(x, 32) / CPU_ACT_UNIT;
        portable_act_quant(x, y[b].d, y[b].q, 32);
        float sum = 0.0f;
        for (int i = 0; i < 32; i++)
            sum += x[i];
        y[b].sum = sum;
    }
}

static void portable_quant_act256(const float *x, struct cpu_act256 *y, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, x += 256) {
        y[b].d = cpu_absmax(x, 256) / CPU_ACT_UNIT;
        portable_act_quant(x, y[b].d, y[b].q, 256);
        for (int g = 0; g < 16; g++) {
            float sum = 0.0f;
            for (int i = 16 * g; i < 16 * g + 16; i++)
                sum += x[i];
            y[b].bsum[g] = sum;
        }
    }
}

/* ---- portable dot kernels: one weight row against ntok activation rows -------------------- */

static void portable_dot_f32(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                             float *out, size_t os)
{
    const float *wr = w;
    for (int t = 0; t < ntok; t++) {
        const float *xr = (const float *)((const char *)x + t * xs);
        float acc[4] = {0};
        int64_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int k = 0; k < 4; k++)
                acc[k] += wr[i + k] * xr[i + k];
        for (; i < n; i++)
            acc[0] += wr[i] * xr[i];
        out[t * os] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

static void portable_dot_f16(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                             float *out, size_t os)
{
    const uint16_t *wr = w;
    float acc[CPU_TILE] = {0};
    for (int64_t i = 0; i < n; i++) {
        float wv = dtype_f16_to_f32(wr[i]);
        for (int t = 0; t < ntok; t++)
            acc[t] += wv * ((const float *)((const char *)x + t * xs))[i];
    }
    for (int t = 0; t < ntok; t++)
        out[t * os] = acc[t];
}

static void portable_dot_bf16(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const uint16_t *wr = w;
    float acc[CPU_TILE] = {0};
    for (int64_t i = 0; i < n; i++) {
        float wv = dtype_bf16_to_f32(wr[i]);
        for (int t = 0; t < ntok; t++)
            acc[t] += wv * ((const float *)((const char *)x + t * xs))[i];
    }
    for (int t = 0; t < ntok; t++)
        out[t * os] = acc[t];
}

#define ACT32(x, xs, t)  ((const struct cpu_act32 *)((const char *)(x) + (size_t)(t) * (xs)))
#define ACT256(x, xs, t) ((const struct cpu_act256 *)((const char *)(x) + (size_t)(t) * (xs)))

static void portable_dot_q8_0(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const struct cpu_block_q8_0 *wb = w;
    for (int t = 0; t < ntok; t++) {
        const struct cpu_act32 *xb = ACT32(x, xs, t);
        float acc = 0.0f;
        for (int64_t b = 0; b < n / 32; b++) {
            int sum = 0;
            for (int i = 0; i < 32; i++)
                sum += wb[b].qs[i] * xb[b].q[i];
            acc += dtype_f16_to_f32(wb[b].d) * xb[b].d * (float)sum;
        }
        out[t * os] = acc;
    }
}

/* Q4_0 and Q4_1 share the nibble dot: sum over q * Q with q in [0, 15]. */
static int portable_nibble_dot(const uint8_t *qs, const struct cpu_act32 *xb)
{
    int sum = 0;
    for (int i = 0; i < 16; i++)
        sum += (qs[i] & 0xF) * xb->q[i] + (qs[i] >> 4) * xb->q[i + 16];
    return sum;
}

static void portable_dot_q4_0(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const struct cpu_block_q4_0 *wb = w;
    for (int t = 0; t < ntok; t++) {
        const struct cpu_act32 *xb = ACT32(x, xs, t);
        float acc = 0.0f;
        for (int64_t b = 0; b < n / 32; b++) {
            float d = dtype_f16_to_f32(wb[b].d);
            /* (q - 8) * d * x: the -8 multiplies the exact sum of x */
            acc += d * (xb[b].d * (float)portable_nibble_dot(wb[b].qs, &xb[b]) - 8.0f * xb[b].sum);
        }
        out[t * os] = acc;
    }
}

static void portable_dot_q4_1(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const struct cpu_block_q4_1 *wb = w;
    for (int t = 0; t < ntok; t++) {
        const struct cpu_act32 *xb = ACT32(x, xs, t);
        float acc = 0.0f;
        for (int64_t b = 0; b < n / 32; b++) {
            float d = dtype_f16_to_f32(wb[b].d), m = dtype_f16_to_f32(wb[b].m);
            acc += d * xb[b].d * (float)portable_nibble_dot(wb[b].qs, &xb[b]) + m * xb[b].sum;
        }
        out[t * os] = acc;
    }
}

/* Q4_K / Q5_K: value = d * sc * q - dmin * m per 32-element sub-block; the min part only needs
 * the activation's per-16 sums. */
static void portable_dot_q45_k(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                               float *out, size_t os, bool five)
{
    size_t bsize = five ? sizeof(struct cpu_block_q5_k) : sizeof(struct cpu_block_q4_k);
    for (int t = 0; t < ntok; t++) {
        const struct cpu_act256 *xb = ACT256(x, xs, t);
        float acc = 0.0f;
        for (int64_t b = 0; b < n / 256; b++) {
            const char *blk = (const char *)w + (size_t)b * bsize;
            const struct cpu_block_q4_k *w4 = (const void *)blk;
            const struct cpu_block_q5_k *w5 = (const void *)blk;
            const uint8_t *scales = five ? w5->scales : w4->scales;
            const uint8_t *qs = five ? w5->qs : w4->qs;
            float d = dtype_f16_to_f32(five ? w5->d : w4->d);
            float dmin = dtype_f16_to_f32(five ? w5->dmin : w4->dmin);
            int64_t sumi = 0;
            float summ = 0.0f;
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                cpu_kquant_scale_min(j, scales, &sc, &m);
                int s = 0;
                for (int l = 0; l < 32; l++) {
                    int q = (j & 1) ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0xF;
                    if (five)
                        q |= ((w5->qh[l] >> j) & 1) << 4;
                    s += q * xb[b].q[32 * j + l];
                }
                sumi += (int64_t)sc * s;
                summ += (float)m * (xb[b].bsum[2 * j] + xb[b].bsum[2 * j + 1]);
            }
            acc += d * xb[b].d * (float)sumi - dmin * summ;
        }
        out[t * os] = acc;
    }
}

static void portable_dot_q4_k(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    portable_dot_q45_k(w, x, xs, ntok, n, out, os, false);
}

static void portable_dot_q5_k(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    portable_dot_q45_k(w, x, xs, ntok, n, out, os, true);
}

/* Q6_K: value = d * scale[16-group] * (q - 32), q 6 bits split over ql (low 4) and qh (high 2). */
static void portable_dot_q6_k(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const struct cpu_block_q6_k *wb = w;
    for (int t = 0; t < ntok; t++) {
        const struct cpu_act256 *xb = ACT256(x, xs, t);
        float acc = 0.0f;
        for (int64_t b = 0; b < n / 256; b++) {
            int64_t sumi = 0;
            for (int half = 0; half < 2; half++) {
                const uint8_t *ql = wb[b].ql + 64 * half, *qh = wb[b].qh + 32 * half;
                const int8_t *sc = wb[b].scales + 8 * half;
                const int16_t *xq = xb[b].q + 128 * half;
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    sumi += (int64_t)sc[is] * q1 * xq[l] + (int64_t)sc[is + 2] * q2 * xq[l + 32] +
                            (int64_t)sc[is + 4] * q3 * xq[l + 64] +
                            (int64_t)sc[is + 6] * q4 * xq[l + 96];
                }
            }
            acc += dtype_f16_to_f32(wb[b].d) * xb[b].d * (float)sumi;
        }
        out[t * os] = acc;
    }
}

static float portable_dot_f32_vec(const float *a, const float *b, int64_t n)
{
    float acc[4] = {0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            acc[k] += a[i + k] * b[i + k];
    for (; i < n; i++)
        acc[0] += a[i] * b[i];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static void portable_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void portable_dot_rows(float *out, const float *q, const float *rows, int64_t stride,
                              int64_t n_rows, int64_t dim, float scale)
{
    for (int64_t p = 0; p < n_rows; p++)
        out[p] = scale * portable_dot_f32_vec(q, rows + p * stride, dim);
}

static void portable_weighted_rows(float *out, const float *w, const float *rows, int64_t stride,
                                   int64_t n_rows, int64_t dim)
{
    memset(out, 0, sizeof(float) * (size_t)dim);
    for (int64_t p = 0; p < n_rows; p++)
        portable_axpy_f32(out, w[p], rows + p * stride, dim);
}

static const struct cpu_kernels cpu_kernels_portable = {
        .dot =
                {
                        [DTYPE_F32] = portable_dot_f32,
                        [DTYPE_F16] = portable_dot_f16,
                        [DTYPE_BF16] = portable_dot_bf16,
                        [DTYPE_Q8_0] = portable_dot_q8_0,
                        [DTYPE_Q4_0] = portable_dot_q4_0,
                        [DTYPE_Q4_1] = portable_dot_q4_1,
                        [DTYPE_Q4_K] = portable_dot_q4_k,
                        [DTYPE_Q5_K] = portable_dot_q5_k,
                        [DTYPE_Q6_K] = portable_dot_q6_k,
                },
        .quant_act32 = portable_quant_act32,
        .quant_act256 = portable_quant_act256,
        .dot_f32 = portable_dot_f32_vec,
        .axpy_f32 = portable_axpy_f32,
        .dot_rows = portable_dot_rows,
        .weighted_rows = portable_weighted_rows,
};

/* ---- selection --------------------------------------------------------------------------- */

static const struct cpu_kernels *cpu_kern;
static enum cpu_isa cpu_isa_now;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

bool cpu_ops_isa_supported(enum cpu_isa isa)
{
    switch (isa) {
    case CPU_ISA_PORTABLE:
        return true;
    case CPU_ISA_AVX2:
#ifdef CPU_OPS_HAVE_AVX2
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
#else
        return false;
#endif
    }
    return false;
}

static void cpu_ops_init(void)
{
    cpu_kern = &cpu_kernels_portable;
    cpu_isa_now = CPU_ISA_PORTABLE;
#ifdef CPU_OPS_HAVE_AVX2
    if (cpu_ops_isa_supported(CPU_ISA_AVX2)) {
        cpu_kern = &cpu_kernels_avx2;
        cpu_isa_now = CPU_ISA_AVX2;
    }
#endif
}

static const struct cpu_kernels *cpu_kernels_get(void)
{
    pthread_once(&cpu_once, cpu_ops_init);
    return cpu_kern;
}

enum cpu_isa cpu_ops_isa(void)
{
    cpu_kernels_get();
    return cpu_isa_now;
}

const char *cpu_ops_isa_name(enum cpu_isa isa)
{
    switch (isa) {
    case CPU_ISA_PORTABLE:
        return "portable";
    case CPU_ISA_AVX2:
        return "avx2";
    }
    return "unknown";
}

int cpu_ops_set_isa(enum cpu_isa isa)
{
    cpu_kernels_get();
    if (!cpu_ops_isa_supported(isa))
        return -1;
    cpu_isa_now = isa;
#ifdef CPU_OPS_HAVE_AVX2
    cpu_kern = isa == CPU_ISA_AVX2 ? &cpu_kernels_avx2 : &cpu_kernels_portable;
#else
    cpu_kern = &cpu_kernels_portable;
#endif
    return 0;
}

/* ---- matrix products --------------------------------------------------------------------- */

struct cpu_matrix cpu_matrix_make(enum dtype t, int64_t rows, int64_t cols, const void *data)
{
    struct cpu_matrix m = {
            .type = t,
            .rows = rows,
            .cols = cols,
            .row_bytes = dtype_row_bytes(t, (size_t)cols),
            .data = data,
    };
    return m;
}

static enum cpu_act cpu_act_of(enum dtype t)
{
    switch (t) {
    case DTYPE_Q8_0:
    case DTYPE_Q4_0:
    case DTYPE_Q4_1:
        return CPU_ACT_32;
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
    case DTYPE_Q6_K:
        return CPU_ACT_256;
    default:
        return CPU_ACT_F32;
    }
}

/* The activations in each format some matrix of the job needs. */
struct cpu_acts {
    const void *data[3];
    size_t stride[3]; /* bytes per token row */
    void *owned[3];
};

static void cpu_acts_prepare(struct cpu_acts *a, const struct cpu_kernels *k,
                             const struct cpu_matrix *const *w, int n, const float *x,
                             int64_t n_tok)
{
    memset(a, 0, sizeof(*a));
    int64_t cols = w[0]->cols;
    for (int i = 0; i < n; i++) {
        enum cpu_act act = cpu_act_of(w[i]->type);
        if (a->data[act])
            continue;
        if (act == CPU_ACT_F32) {
            a->data[act] = x;
            a->stride[act] = (size_t)cols * sizeof(float);
        } else if (act == CPU_ACT_32) {
            size_t stride = (size_t)(cols / 32) * sizeof(struct cpu_act32);
            char *q = xmalloc(stride * (size_t)n_tok);
            for (int64_t t = 0; t < n_tok; t++)
                k->quant_act32(x + t * cols, (struct cpu_act32 *)(q + t * stride), cols);
            a->data[act] = a->owned[act] = q;
            a->stride[act] = stride;
        } else {
            size_t stride = (size_t)(cols / 256) * sizeof(struct cpu_act256);
            char *q = xmalloc(stride * (size_t)n_tok);
            for (int64_t t = 0; t < n_tok; t++)
                k->quant_act256(x + t * cols, (struct cpu_act256 *)(q + t * stride), cols);
            a->data[act] = a->owned[act] = q;
            a->stride[act] = stride;
        }
    }
}

#define CPU_MATMUL_MAX 8

struct cpu_matmul_job {
    const struct cpu_kernels *k;
    int n;
    const struct cpu_matrix *w[CPU_MATMUL_MAX];
    float *y[CPU_MATMUL_MAX];
    int64_t chunk[CPU_MATMUL_MAX];      /* rows per task of matrix i */
    int task_start[CPU_MATMUL_MAX + 1]; /* first task of matrix i */
    struct cpu_acts acts;
    int64_t n_tok;
};

static void cpu_matmul_task(void *ctx, int task, int thread)
{
    struct cpu_matmul_job *job = ctx;
    int i = 0;
    while (task >= job->task_start[i + 1])
        i++;
    const struct cpu_matrix *w = job->w[i];
    int64_t r0 = (int64_t)(task - job->task_start[i]) * job->chunk[i];
    int64_t r1 = r0 + job->chunk[i] < w->rows ? r0 + job->chunk[i] : w->rows;
    enum cpu_act act = cpu_act_of(w->type);
    const char *x = job->acts.data[act];
    size_t xs = job->acts.stride[act];
    cpu_dot_fn dot = job->k->dot[w->type];
    const char *wdata = w->data;

    /* Token tiles outermost: this task's block of weight rows stays in cache while every tile
     * of tokens passes over it. */
    for (int64_t t0 = 0; t0 < job->n_tok; t0 += CPU_TILE) {
        int nt = job->n_tok - t0 < CPU_TILE ? (int)(job->n_tok - t0) : CPU_TILE;
        for (int64_t r = r0; r < r1; r++)
            dot(wdata + (size_t)r * w->row_bytes, x + (size_t)t0 * xs, xs, nt, w->cols,
                job->y[i] + t0 * w->rows + r, (size_t)w->rows);
    }
}

/* Rows per task: enough tasks to balance the threads, few enough that the hand-out stays
 * cheap, and for many tokens a block small enough to stay in L2 across token tiles. */
static int64_t cpu_matmul_chunk(const struct cpu_matrix *w, int n_threads, int64_t n_tok)
{
    int64_t chunk = (w->rows + 4 * n_threads - 1) / (4 * n_threads);
    if (n_tok > 1) {
        int64_t fit = (int64_t)((128 * 1024) / (w->row_bytes ? w->row_bytes : 1));
        if (chunk > fit)
            chunk = fit;
    }
    if (chunk < 4)
        chunk = 4;
    return chunk;
}

void cpu_matmul_multi(struct threadpool *tp, int n, const struct cpu_matrix *const *w,
                      const float *x, int64_t n_tok, float *const *y)
{
    if (n <= 0 || n_tok <= 0)
        return;
    if (n > CPU_MATMUL_MAX) {
        cpu_matmul_multi(tp, CPU_MATMUL_MAX, w, x, n_tok, y);
        cpu_matmul_multi(tp, n - CPU_MATMUL_MAX, w + CPU_MATMUL_MAX, x, n_tok, y + CPU_MATMUL_MAX);
        return;
    }
    struct cpu_matmul_job job = {.k = cpu_kernels_get(), .n = n, .n_tok = n_tok};
    int n_threads = threadpool_size(tp);
    job.task_start[0] = 0;
    for (int i = 0; i < n; i++) {
        assert(w[i]->cols == w[0]->cols);
        job.w[i] = w[i];
        job.y[i] = y[i];
        job.chunk[i] = cpu_matmul_chunk(w[i], n_threads, n_tok);
        job.task_start[i + 1] =
                job.task_start[i] + (int)((w[i]->rows + job.chunk[i] - 1) / job.chunk[i]);
    }
    cpu_acts_prepare(&job.acts, job.k, w, n, x, n_tok);
    threadpool_run(tp, cpu_matmul_task, &job, job.task_start[n]);
    for (int i = 0; i < 3; i++)
        free(job.acts.owned[i]);
}

void cpu_matmul(struct threadpool *tp, const struct cpu_matrix *w, const float *x, int64_t n_tok,
                float *y)
{
    cpu_matmul_multi(tp, 1, &w, x, n_tok, &y);
}

float cpu_dot_f32(const float *a, const float *b, int64_t n)
{
    return cpu_kernels_get()->dot_f32(a, b, n);
}

void cpu_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    cpu_kernels_get()->axpy_f32(y, a, x, n);
}

void cpu_dot_rows(float *out, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                  int64_t dim, float scale)
{
    cpu_kernels_get()->dot_rows(out, q, rows, stride, n_rows, dim, scale);
}

void cpu_weighted_rows(float *out, const float *w, const float *rows, int64_t stride,
                       int64_t n_rows, int64_t dim)
{
    cpu_kernels_get()->weighted_rows(out, w, rows, stride, n_rows, dim);
}

/* ---- element-wise ops -------------------------------------------------------------------- */

void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps, bool zero_centred)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t i = 0; i < n; i++) {
        float g = w ? (zero_centred ? 1.0f + w[i] : w[i]) : 1.0f;
        y[i] = x[i] * scale * g;
    }
}

void cpu_rope_inv_freq(float *inv_freq, int rot_dim, float theta)
{
    for (int i = 0; i < rot_dim / 2; i++)
        inv_freq[i] = (float)(1.0 / pow((double)theta, (double)(2 * i) / rot_dim));
}

void cpu_rope(float *x, int n_heads, int head_dim, int rot_dim, const float *inv_freq, int64_t pos,
              bool neox)
{
    int half = rot_dim / 2;
    for (int i = 0; i < half; i++) {
        /* HF computes the angle in fp32; so does this, so long contexts agree too */
        float angle = (float)pos * inv_freq[i];
        float c = cosf(angle), s = sinf(angle);
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)h * head_dim;
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * c - x1 * s;
            xh[b] = x0 * s + x1 * c;
        }
    }
}

void cpu_silu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i]));
}

void cpu_silu_mul(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void cpu_mul_sigmoid(float *x, const float *gate, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-gate[i]));
}

void cpu_softmax(float *x, int64_t n)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

/* ---- attention --------------------------------------------------------------------------- */

struct cpu_attention_job {
    const struct cpu_attention *a;
    int n;
    int *task0; /* [n + 1]: first task of attention i */
    const struct cpu_kernels *k;
    float *scores; /* [threads][longest context] */
    int64_t per_thread;
};

static void cpu_attention_task(void *ctx, int task, int thread)
{
    struct cpu_attention_job *job = ctx;
    int i = 0;
    while (task >= job->task0[i + 1])
        i++;
    const struct cpu_attention *a = &job->a[i];
    task -= job->task0[i];
    int hd = a->head_dim;
    int64_t qi = task / a->n_heads;
    int h = task % a->n_heads;
    int kvh = h / (a->n_heads / a->n_kv_heads);
    int64_t n_ctx = a->pos0 + qi + 1; /* causal: positions 0 .. pos0 + qi */
    float *s = job->scores + (size_t)thread * (size_t)job->per_thread;
    const float *q = a->q + (qi * a->n_heads + h) * hd;
    const float *k = a->k + (size_t)kvh * hd;
    const float *v = a->v + (size_t)kvh * hd;

    job->k->dot_rows(s, q, k, a->kv_stride, n_ctx, hd, a->scale);
    cpu_softmax(s, n_ctx);
    job->k->weighted_rows(a->out + (qi * a->n_heads + h) * hd, s, v, a->kv_stride, n_ctx, hd);
}

void cpu_attention_batch(struct threadpool *tp, const struct cpu_attention *a, int n)
{
    if (n <= 0)
        return;
    struct cpu_attention_job job = {.a = a, .n = n, .k = cpu_kernels_get()};
    job.task0 = xmalloc(sizeof(int) * (size_t)(n + 1));
    job.task0[0] = 0;
    for (int i = 0; i < n; i++) {
        job.task0[i + 1] = job.task0[i] + (int)(a[i].n_q * a[i].n_heads);
        if (a[i].pos0 + a[i].n_q > job.per_thread)
            job.per_thread = a[i].pos0 + a[i].n_q;
    }
    job.scores = xmalloc((size_t)threadpool_size(tp) * (size_t)job.per_thread * sizeof(float));
    threadpool_run(tp, cpu_attention_task, &job, job.task0[n]);
    free(job.scores);
    free(job.task0);
}

void cpu_attention(struct threadpool *tp, const struct cpu_attention *a)
{
    cpu_attention_batch(tp, a, 1);
}
