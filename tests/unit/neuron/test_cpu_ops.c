/*
 * tests/unit/neuron/test_cpu_ops.c — the CPU kernels against straightforward scalar references.
 *
 * Every weight type, odd sizes, single tokens and token tiles with remainders, a thread pool and
 * none; each test runs once per kernel set the CPU supports (portable always, AVX2 where
 * present). Quantised weights are random blocks with sane scales; the reference dequantises
 * them with dtype_dequant_row() and multiplies in double with the activations rounded the way
 * the kernels document (16-bit, unit absmax / 16256, round to nearest even), so the integer
 * paths are checked to float rounding; the exact product must also lie within the rounding's
 * error bound.
 */
#include "cpu_ops.h"
#include "cpu_ops_internal.h"
#include "dtype.h"
#include "threadpool.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* uniform in [-1, 1) */
static float rng_f(void)
{
    return (float)rng_u32() / 2147483648.0f - 1.0f;
}

static const enum cpu_isa isas[] = {CPU_ISA_PORTABLE, CPU_ISA_AVX2};

/* Selects isa for the test; false when this CPU cannot run it. */
static bool use_isa(int i)
{
    if (!cpu_ops_isa_supported(isas[i]))
        return false;
    ck_assert_int_eq(cpu_ops_set_isa(isas[i]), 0);
    return true;
}

/* Random weights of type t: floats converted, or random blocks whose scales are overwritten with
 * moderate values (random bits there would give infinities). */
static void *make_weights(enum dtype t, int64_t rows, int64_t cols)
{
    size_t rb = dtype_row_bytes(t, (size_t)cols);
    uint8_t *w = malloc(rb * (size_t)rows);
    for (size_t i = 0; i < rb * (size_t)rows; i++)
        w[i] = (uint8_t)rng_u32();
    size_t nblk = rb * (size_t)rows / dtype_block_bytes(t);
    for (size_t b = 0; b < nblk; b++) {
        uint8_t *blk = w + b * dtype_block_bytes(t);
        uint16_t h;
        switch (t) {
        case DTYPE_F32: {
            float f = rng_f();
            memcpy(blk, &f, 4);
            break;
        }
        case DTYPE_F16:
            h = dtype_f32_to_f16(rng_f());
            memcpy(blk, &h, 2);
            break;
        case DTYPE_BF16:
            h = dtype_f32_to_bf16(rng_f());
            memcpy(blk, &h, 2);
            break;
        case DTYPE_Q8_0:
        case DTYPE_Q4_0:
            h = dtype_f32_to_f16(0.01f + 0.05f * (rng_f() + 1.0f));
            memcpy(blk, &h, 2);
            break;
        case DTYPE_Q4_1:
        case DTYPE_Q4_K:
        case DTYPE_Q5_K:
            h = dtype_f32_to_f16(0.01f + 0.05f * (rng_f() + 1.0f));
            memcpy(blk, &h, 2);
            h = dtype_f32_to_f16(0.1f * rng_f());
            memcpy(blk + 2, &h, 2);
            break;
        case DTYPE_Q6_K:
            h = dtype_f32_to_f16(0.001f + 0.005f * (rng_f() + 1.0f));
            memcpy(blk + 208, &h, 2);
            break;
        default:
            break;
        }
    }
    return w;
}

/* The activation row as the kernels see it: exact for float weights, otherwise 16-bit integers
 * with one unit per block of 32 / 256 (absmax / 16256), rounded to nearest even. Also returns
 * the bound on |x - effective x| per element in err (0 for floats). */
static void effective_x(enum dtype t, const float *x, double *xe, double *err, int64_t n)
{
    int64_t blk = 1;
    if (t == DTYPE_Q8_0 || t == DTYPE_Q4_0 || t == DTYPE_Q4_1)
        blk = 32;
    else if (t == DTYPE_Q4_K || t == DTYPE_Q5_K || t == DTYPE_Q6_K)
        blk = 256;
    if (blk == 1) {
        for (int64_t i = 0; i < n; i++) {
            xe[i] = x[i];
            err[i] = 0.0;
        }
        return;
    }
    for (int64_t b = 0; b < n; b += blk) {
        float amax = 0.0f;
        for (int64_t i = b; i < b + blk; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 16256.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int64_t i = b; i < b + blk; i++) {
            float q = nearbyintf(x[i] * id);
            ck_assert(fabsf(q) <= 16256.0f);
            xe[i] = (double)d * q;
            err[i] = 0.5 * d * 1.0001;
        }
    }
}

/* Checks y = x W^T for one weight type against the double-precision reference. */
static void check_matmul(enum dtype t, int64_t rows, int64_t cols, int64_t n_tok,
                         struct threadpool *tp)
{
    void *w = make_weights(t, rows, cols);
    struct cpu_matrix m = cpu_matrix_make(t, rows, cols, w);
    float *x = malloc(sizeof(float) * (size_t)(n_tok * cols));
    for (int64_t i = 0; i < n_tok * cols; i++)
        x[i] = rng_f() * (1.0f + (float)(i % 7)); /* uneven magnitudes across blocks */
    float *y = malloc(sizeof(float) * (size_t)(n_tok * rows));
    for (int64_t i = 0; i < n_tok * rows; i++)
        y[i] = NAN; /* poisoned: every output must be written */
    cpu_matmul(tp, &m, x, n_tok, y);

    float *wrow = malloc(sizeof(float) * (size_t)cols);
    double *xe = malloc(sizeof(double) * (size_t)cols);
    double *xerr = malloc(sizeof(double) * (size_t)cols);
    for (int64_t tk = 0; tk < n_tok; tk++) {
        effective_x(t, x + tk * cols, xe, xerr, cols);
        for (int64_t r = 0; r < rows; r++) {
            dtype_dequant_row(t, (const char *)w + (size_t)r * m.row_bytes, wrow, (size_t)cols);
            double ref = 0.0, mag = 0.0, exact = 0.0, bound = 0.0;
            for (int64_t i = 0; i < cols; i++) {
                ref += wrow[i] * xe[i];
                mag += fabs(wrow[i] * xe[i]);
                exact += (double)wrow[i] * x[tk * cols + i];
                bound += fabs(wrow[i]) * xerr[i];
            }
            double got = y[tk * rows + r];
            /* the activation rounding stays within its bound of the exact product */
            ck_assert_msg(fabs(got - exact) <= bound + 2e-5 * mag + 1e-6,
                          "%s %s row %lld tok %lld: %.7g is %.3g from the exact %.7g, bound %.3g",
                          cpu_ops_isa_name(cpu_ops_isa()), dtype_name(t), (long long)r,
                          (long long)tk, got, fabs(got - exact), exact, bound);
            /* Where every weight multiplies the rounded activation (no offsets or minimums,
             * which the kernels multiply with exact sums of x), the result is that product. */
            bool plain = t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16 || t == DTYPE_Q8_0 ||
                         t == DTYPE_Q6_K;
            ck_assert_msg(!plain || fabs(got - ref) <= 2e-5 * mag + 1e-6,
                          "%s %s rows %lld cols %lld tok %lld/%lld row %lld: got %.7g want %.7g",
                          cpu_ops_isa_name(cpu_ops_isa()), dtype_name(t), (long long)rows,
                          (long long)cols, (long long)tk, (long long)n_tok, (long long)r, got, ref);
        }
    }
    free(wrow);
    free(xe);
    free(xerr);
    free(x);
    free(y);
    free(w);
}

START_TEST(test_matmul_every_type)
{
    if (!use_isa(_i))
        return;
    struct threadpool *tp = threadpool_create(3);
    rng_seed(1 + (uint64_t)_i);
    for (int t = 0; t < DTYPE_COUNT; t++) {
        int64_t blk = (int64_t)dtype_block_elems((enum dtype)t);
        /* odd column counts for the float types, several blocks otherwise */
        int64_t cols_list[3] = {blk == 1 ? 67 : blk, blk == 1 ? 8 : 3 * blk,
                                blk == 1 ? 203 : 5 * blk};
        int64_t tok_list[4] = {1, 3, 4, 9};
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 4; k++)
                check_matmul((enum dtype)t, 37, cols_list[c], tok_list[k], k % 2 ? tp : NULL);
    }
    threadpool_destroy(tp);
}
END_TEST

/* The AVX2 and portable kernels agree with each other closely (both run where possible). */
START_TEST(test_isas_agree)
{
    if (!cpu_ops_isa_supported(CPU_ISA_AVX2))
        return;
    rng_seed(99);
    for (int t = 0; t < DTYPE_COUNT; t++) {
        int64_t blk = (int64_t)dtype_block_elems((enum dtype)t);
        int64_t rows = 19, cols = blk == 1 ? 131 : 2 * blk, n_tok = 6;
        void *w = make_weights((enum dtype)t, rows, cols);
        struct cpu_matrix m = cpu_matrix_make((enum dtype)t, rows, cols, w);
        float *x = malloc(sizeof(float) * (size_t)(n_tok * cols));
        for (int64_t i = 0; i < n_tok * cols; i++)
            x[i] = rng_f();
        float y[2][6 * 19];
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(cpu_ops_set_isa(isas[i]), 0);
            cpu_matmul(NULL, &m, x, n_tok, y[i]);
        }
        for (int i = 0; i < rows * n_tok; i++)
            ck_assert_msg(fabsf(y[0][i] - y[1][i]) <= 1e-4f * (1.0f + fabsf(y[0][i])),
                          "%s [%d]: portable %g avx2 %g", dtype_name((enum dtype)t), i, y[0][i],
                          y[1][i]);
        free(x);
        free(w);
    }
}
END_TEST

/* Saturated blocks (every quant at its largest magnitude, largest scales) against activations at
 * full scale: the integer sums must not overflow. */
START_TEST(test_matmul_extremes)
{
    if (!use_isa(_i))
        return;
    for (int t = DTYPE_Q8_0; t < DTYPE_COUNT; t++) {
        for (int variant = 0; variant < 2; variant++) {
            int64_t cols = 512;
            size_t rb = dtype_row_bytes((enum dtype)t, (size_t)cols);
            uint8_t *w = malloc(rb);
            /* variant 0: all bits set; variant 1: all zero (Q6_K: q - 32 = -32) */
            memset(w, variant ? 0x00 : 0xFF, rb);
            size_t bb = dtype_block_bytes((enum dtype)t);
            for (size_t off = 0; off < rb; off += bb) {
                uint16_t one = dtype_f32_to_f16(1.0f);
                if (t == DTYPE_Q6_K) {
                    memset(w + off + 192, 0x80, 16); /* scales -128 */
                    memcpy(w + off + 208, &one, 2);
                } else {
                    memcpy(w + off, &one, 2);
                    if (t != DTYPE_Q8_0 && t != DTYPE_Q4_0)
                        memcpy(w + off + 2, &one, 2); /* min / dmin */
                }
            }
            struct cpu_matrix m = cpu_matrix_make((enum dtype)t, 1, cols, w);
            float x[512], y, wrow[512];
            for (int sign = -1; sign <= 1; sign += 2) {
                for (int i = 0; i < 512; i++)
                    x[i] = 1000.0f * (float)sign;
                cpu_matmul(NULL, &m, x, 1, &y);
                dtype_dequant_row((enum dtype)t, w, wrow, 512);
                double ref = 0.0, mag = 0.0;
                for (int i = 0; i < 512; i++) {
                    ref += (double)wrow[i] * x[i];
                    mag += fabs((double)wrow[i] * x[i]);
                }
                ck_assert_msg(fabs(y - ref) <= 1e-4 * mag + 1e-3,
                              "%s %s variant %d sign %d: %g vs %g", cpu_ops_isa_name(isas[_i]),
                              dtype_name((enum dtype)t), variant, sign, y, ref);
            }
            free(w);
        }
    }
}
END_TEST

START_TEST(test_matmul_multi)
{
    if (!use_isa(_i))
        return;
    rng_seed(7);
    struct threadpool *tp = threadpool_create(2);
    enum dtype types[3] = {DTYPE_Q4_1, DTYPE_F16, DTYPE_Q6_K};
    int64_t rows[3] = {33, 5, 64}, cols = 256, n_tok = 5;
    void *w[3];
    struct cpu_matrix m[3];
    const struct cpu_matrix *mp[3];
    float *y[3], *ys[3];
    float *x = malloc(sizeof(float) * (size_t)(n_tok * cols));
    for (int64_t i = 0; i < n_tok * cols; i++)
        x[i] = rng_f();
    for (int i = 0; i < 3; i++) {
        w[i] = make_weights(types[i], rows[i], cols);
        m[i] = cpu_matrix_make(types[i], rows[i], cols, w[i]);
        mp[i] = &m[i];
        y[i] = malloc(sizeof(float) * (size_t)(rows[i] * n_tok));
        ys[i] = malloc(sizeof(float) * (size_t)(rows[i] * n_tok));
        cpu_matmul(NULL, &m[i], x, n_tok, ys[i]);
    }
    cpu_matmul_multi(tp, 3, mp, x, n_tok, y);
    for (int i = 0; i < 3; i++) {
        for (int64_t j = 0; j < rows[i] * n_tok; j++)
            ck_assert_float_eq_tol(y[i][j], ys[i][j], 1e-5f * (1.0f + fabsf(ys[i][j])));
        free(w[i]);
        free(y[i]);
        free(ys[i]);
    }
    free(x);
    threadpool_destroy(tp);
}
END_TEST

START_TEST(test_dot_axpy)
{
    if (!use_isa(_i))
        return;
    rng_seed(3);
    float a[203], b[203], y[203], y0[203];
    for (int i = 0; i < 203; i++) {
        a[i] = rng_f();
        b[i] = rng_f();
        y[i] = y0[i] = rng_f();
    }
    for (int n = 0; n <= 203; n += 29) {
        double ref = 0.0;
        for (int i = 0; i < n; i++)
            ref += (double)a[i] * b[i];
        ck_assert_double_eq_tol(cpu_dot_f32(a, b, n), ref, 1e-5);
    }
    cpu_axpy_f32(y, 0.75f, a, 203);
    for (int i = 0; i < 203; i++)
        ck_assert_float_eq_tol(y[i], y0[i] + 0.75f * a[i], 1e-6f);
}
END_TEST

START_TEST(test_dot_rows_weighted_rows)
{
    if (!use_isa(_i))
        return;
    rng_seed(4);
    enum { ROWS = 21, STRIDE = 50 };
    static float q[48], rows[ROWS * STRIDE], w[ROWS], out[ROWS + 1], o[49];
    for (int i = 0; i < 48; i++)
        q[i] = rng_f();
    for (int i = 0; i < ROWS * STRIDE; i++)
        rows[i] = rng_f();
    for (int i = 0; i < ROWS; i++)
        w[i] = rng_f();
    int dims[] = {48, 40, 8, 13, 33};
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        int dim = dims[di];
        for (int n = 0; n <= ROWS; n += 5) {
            out[n] = 12345.0f; /* the row past the end stays untouched */
            cpu_dot_rows(out, q, rows, STRIDE, n, dim, 0.5f);
            for (int p = 0; p < n; p++) {
                double ref = 0.0;
                for (int i = 0; i < dim; i++)
                    ref += (double)q[i] * rows[p * STRIDE + i];
                ck_assert_double_eq_tol(out[p], 0.5 * ref, 1e-5);
            }
            ck_assert_float_eq(out[n], 12345.0f);
            o[dim] = 12345.0f;
            cpu_weighted_rows(o, w, rows, STRIDE, n, dim);
            for (int i = 0; i < dim; i++) {
                double ref = 0.0;
                for (int p = 0; p < n; p++)
                    ref += (double)w[p] * rows[p * STRIDE + i];
                ck_assert_double_eq_tol(o[i], ref, 1e-5);
            }
            ck_assert_float_eq(o[dim], 12345.0f);
        }
    }
}
END_TEST

START_TEST(test_rmsnorm)
{
    rng_seed(11);
    float x[77], w[77], y[77];
    for (int i = 0; i < 77; i++) {
        x[i] = 3.0f * rng_f();
        w[i] = rng_f();
    }
    double ss = 0.0;
    for (int i = 0; i < 77; i++)
        ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / 77 + 1e-6);
    cpu_rmsnorm(y, x, w, 77, 1e-6f, false);
    for (int i = 0; i < 77; i++)
        ck_assert_double_eq_tol(y[i], x[i] * r * w[i], 1e-5);
    cpu_rmsnorm(y, x, w, 77, 1e-6f, true);
    for (int i = 0; i < 77; i++)
        ck_assert_double_eq_tol(y[i], x[i] * r * (1.0 + w[i]), 1e-5);
    memcpy(y, x, sizeof(x));
    cpu_rmsnorm(y, y, NULL, 77, 1e-6f, false); /* in place, no weight */
    for (int i = 0; i < 77; i++)
        ck_assert_double_eq_tol(y[i], x[i] * r, 1e-5);
}
END_TEST

/* RoPE written out the way HF does it: cat(-x2, x1) for NeoX, pairwise for interleaved. */
START_TEST(test_rope)
{
    rng_seed(13);
    enum { H = 3, HD = 32 };
    for (int variant = 0; variant < 3; variant++) {
        bool neox = variant != 2;
        int rot = variant == 1 ? 8 : HD; /* partial rotary: 8 of 32 dims */
        float inv[HD / 2];
        cpu_rope_inv_freq(inv, rot, 10000.0f);
        for (int i = 0; i < rot / 2; i++)
            ck_assert_double_eq_tol(inv[i], pow(10000.0, -2.0 * i / rot), 1e-7);
        float x[H * HD], y[H * HD];
        for (int i = 0; i < H * HD; i++)
            x[i] = y[i] = rng_f();
        int64_t pos = 41;
        cpu_rope(y, H, HD, rot, inv, pos, neox);
        for (int h = 0; h < H; h++) {
            const float *xh = x + h * HD;
            const float *yh = y + h * HD;
            for (int d = 0; d < HD; d++) {
                double want;
                if (d >= rot) {
                    want = xh[d];
                } else if (neox) {
                    int i = d % (rot / 2);
                    double ang = (double)pos * inv[i];
                    double rotated = d < rot / 2 ? -xh[d + rot / 2] : xh[d - rot / 2];
                    want = xh[d] * cos(ang) + rotated * sin(ang);
                } else {
                    int i = d / 2;
                    double ang = (double)pos * inv[i];
                    double rotated = d % 2 == 0 ? -xh[d + 1] : xh[d - 1];
                    want = xh[d] * cos(ang) + rotated * sin(ang);
                }
                ck_assert_msg(fabs(yh[d] - want) < 1e-5, "variant %d head %d dim %d: %g vs %g",
                              variant, h, d, yh[d], want);
            }
        }
    }
}
END_TEST

START_TEST(test_activations)
{
    rng_seed(17);
    float g[50], u[50], x[50], s[50];
    for (int i = 0; i < 50; i++) {
        g[i] = 8.0f * rng_f();
        u[i] = rng_f();
        x[i] = s[i] = 20.0f * rng_f();
    }
    float g2[50], x2[50];
    memcpy(g2, g, sizeof(g));
    cpu_silu_mul(g2, u, 50);
    for (int i = 0; i < 50; i++)
        ck_assert_double_eq_tol(g2[i], g[i] / (1.0 + exp(-g[i])) * u[i], 1e-5);
    memcpy(g2, g, sizeof(g));
    cpu_silu(g2, 50);
    for (int i = 0; i < 50; i++)
        ck_assert_double_eq_tol(g2[i], g[i] / (1.0 + exp(-g[i])), 1e-5);
    memcpy(x2, u, sizeof(u));
    cpu_mul_sigmoid(x2, g, 50);
    for (int i = 0; i < 50; i++)
        ck_assert_double_eq_tol(x2[i], u[i] / (1.0 + exp(-g[i])), 1e-6);
    cpu_softmax(s, 50);
    double max = -1e30, sum = 0.0;
    for (int i = 0; i < 50; i++)
        max = fmax(max, x[i]);
    for (int i = 0; i < 50; i++)
        sum += exp(x[i] - max);
    for (int i = 0; i < 50; i++)
        ck_assert_double_eq_tol(s[i], exp(x[i] - max) / sum, 1e-6);
}
END_TEST

/* Attention against a naive per-query, per-head loop, with GQA and a cache that already holds
 * earlier positions. */
START_TEST(test_attention)
{
    if (!use_isa(_i))
        return;
    rng_seed(19);
    enum { NH = 6, NKV = 2, HD = 20, POS0 = 5, NQ = 7, CTX = POS0 + NQ };
    static float q[NQ * NH * HD], k[CTX * NKV * HD], v[CTX * NKV * HD], out[NQ * NH * HD];
    for (int i = 0; i < NQ * NH * HD; i++)
        q[i] = rng_f();
    for (int i = 0; i < CTX * NKV * HD; i++) {
        k[i] = rng_f();
        v[i] = rng_f();
    }
    struct threadpool *tp = threadpool_create(2);
    struct cpu_attention a = {.q = q,
                              .k = k,
                              .v = v,
                              .kv_stride = NKV * HD,
                              .out = out,
                              .n_q = NQ,
                              .pos0 = POS0,
                              .n_heads = NH,
                              .n_kv_heads = NKV,
                              .head_dim = HD,
                              .scale = 1.0f / sqrtf(HD)};
    cpu_attention(tp, &a);
    threadpool_destroy(tp);
    for (int qi = 0; qi < NQ; qi++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / NKV);
            int n = POS0 + qi + 1;
            double sc[CTX], max = -1e30, sum = 0.0;
            for (int p = 0; p < n; p++) {
                double d = 0.0;
                for (int j = 0; j < HD; j++)
                    d += (double)q[(qi * NH + h) * HD + j] * k[(p * NKV + kvh) * HD + j];
                sc[p] = d / sqrt(HD);
                max = fmax(max, sc[p]);
            }
            for (int p = 0; p < n; p++) {
                sc[p] = exp(sc[p] - max);
                sum += sc[p];
            }
            for (int j = 0; j < HD; j++) {
                double o = 0.0;
                for (int p = 0; p < n; p++)
                    o += sc[p] / sum * v[(p * NKV + kvh) * HD + j];
                ck_assert_double_eq_tol(out[(qi * NH + h) * HD + j], o, 1e-5);
            }
        }
    }
}
END_TEST

static Suite *cpu_ops_suite(void)
{
    Suite *s = suite_create("cpu_ops");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_matmul_every_type, 0, 2);
    tcase_add_test(tc, test_isas_agree);
    tcase_add_loop_test(tc, test_matmul_extremes, 0, 2);
    tcase_add_loop_test(tc, test_matmul_multi, 0, 2);
    tcase_add_loop_test(tc, test_dot_axpy, 0, 2);
    tcase_add_loop_test(tc, test_dot_rows_weighted_rows, 0, 2);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_activations);
    tcase_add_loop_test(tc, test_attention, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cpu_ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
