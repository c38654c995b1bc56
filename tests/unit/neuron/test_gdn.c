/*
 * tests/unit/neuron/test_gdn.c — Gated DeltaNet: chunked and recurrent against a naive per-token
 * reference written in matrix form (S_t = alpha (I - beta k k^T) S_{t-1} + beta k v^T, in
 * double), across chunk boundaries and with state handed from one call (and one path) to the
 * next; the conv, gates and norms against their formulas.
 */
#include "cpu_ops.h"
#include "gdn.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

static float rng_f(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(uint32_t)(rng_state >> 16) / 2147483648.0f - 1.0f;
}

enum { T = 150, DK = 16, DV = 24 };

struct case_data {
    float q[T][DK], k[T][DK], v[T][DV], g[T], beta[T];
    float S0[DK][DV];
    double ref_out[T][DV];
    double ref_S[DK][DV];
};

static void make_case(struct case_data *c, uint64_t seed)
{
    rng_seed(seed);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < DK; i++) {
            c->q[t][i] = rng_f();
            c->k[t][i] = rng_f();
        }
        for (int j = 0; j < DV; j++)
            c->v[t][j] = 2.0f * rng_f();
        /* mostly mild decay, sometimes strong, so both long memory and e^Gamma near 0 occur */
        c->g[t] = t % 17 == 0 ? -8.0f * (rng_f() + 1.0f) : -0.1f * (rng_f() + 1.0f);
        c->beta[t] = 0.5f * (rng_f() + 1.0f);
    }
    gdn_l2norm(&c->q[0][0], T, DK, 1.0f / sqrtf(DK));
    gdn_l2norm(&c->k[0][0], T, DK, 1.0f);
    for (int i = 0; i < DK; i++)
        for (int j = 0; j < DV; j++)
            c->S0[i][j] = 0.3f * rng_f();

    /* naive reference */
    double S[DK][DV], N[DK][DV];
    for (int i = 0; i < DK; i++)
        for (int j = 0; j < DV; j++)
            S[i][j] = c->S0[i][j];
    for (int t = 0; t < T; t++) {
        double a = exp((double)c->g[t]), b = c->beta[t];
        for (int i = 0; i < DK; i++)
            for (int j = 0; j < DV; j++) {
                double kkS = 0.0; /* (k k^T S)[i][j] */
                for (int l = 0; l < DK; l++)
                    kkS += (double)c->k[t][i] * c->k[t][l] * S[l][j];
                N[i][j] = a * (S[i][j] - b * kkS) + b * c->k[t][i] * c->v[t][j];
            }
        memcpy(S, N, sizeof(S));
        for (int j = 0; j < DV; j++) {
            double o = 0.0;
            for (int i = 0; i < DK; i++)
                o += S[i][j] * c->q[t][i];
            c->ref_out[t][j] = o;
        }
    }
    memcpy(c->ref_S, S, sizeof(S));
}

static struct gdn_head head_of(struct case_data *c, int64_t t0, int64_t n, float *out, float *state)
{
    struct gdn_head h = {.n_tok = n,
                         .k_dim = DK,
                         .v_dim = DV,
                         .q = c->q[t0],
                         .k = c->k[t0],
                         .qk_stride = DK,
                         .v = c->v[t0],
                         .v_stride = DV,
                         .g = c->g + t0,
                         .beta = c->beta + t0,
                         .gb_stride = 1,
                         .out = out + t0 * DV,
                         .out_stride = DV,
                         .state = state};
    return h;
}

static void check_against_ref(struct case_data *c, const float *out, const float *state,
                              const char *what)
{
    for (int t = 0; t < T; t++)
        for (int j = 0; j < DV; j++)
            ck_assert_msg(fabs(out[t * DV + j] - c->ref_out[t][j]) < 2e-5,
                          "%s: out[%d][%d] %g vs %g", what, t, j, out[t * DV + j],
                          c->ref_out[t][j]);
    for (int i = 0; i < DK; i++)
        for (int j = 0; j < DV; j++)
            ck_assert_msg(fabs(state[i * DV + j] - c->ref_S[i][j]) < 2e-5, "%s: S[%d][%d] %g vs %g",
                          what, i, j, state[i * DV + j], c->ref_S[i][j]);
}

static struct case_data cdata;

START_TEST(test_paths_match_naive)
{
    static const enum cpu_isa isas[] = {CPU_ISA_PORTABLE, CPU_ISA_AVX2};
    if (!cpu_ops_isa_supported(isas[_i]))
        return;
    ck_assert_int_eq(cpu_ops_set_isa(isas[_i]), 0);
    make_case(&cdata, 5 + (uint64_t)_i);
    static float out[T * DV], state[DK * DV];

    memcpy(state, cdata.S0, sizeof(state));
    struct gdn_head h = head_of(&cdata, 0, T, out, state);
    gdn_head_recurrent(&h);
    check_against_ref(&cdata, out, state, "recurrent");

    int chunks[] = {GDN_CHUNK, 7, 1, T};
    for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
        memset(out, 0xff, sizeof(out)); /* poison */
        memcpy(state, cdata.S0, sizeof(state));
        h = head_of(&cdata, 0, T, out, state);
        gdn_head_chunked(&h, chunks[ci]);
        check_against_ref(&cdata, out, state, "chunked");
    }

    /* prefill in two calls (70 = one full chunk + 6), then decode token by token */
    memset(out, 0xff, sizeof(out));
    memcpy(state, cdata.S0, sizeof(state));
    h = head_of(&cdata, 0, 70, out, state);
    gdn_head_chunked(&h, GDN_CHUNK);
    h = head_of(&cdata, 70, 30, out, state);
    gdn_head_chunked(&h, GDN_CHUNK);
    for (int t = 100; t < T; t++) {
        h = head_of(&cdata, t, 1, out, state);
        gdn_head_recurrent(&h);
    }
    check_against_ref(&cdata, out, state, "prefill pieces + decode");
}
END_TEST

START_TEST(test_conv)
{
    enum { C = 5, K = 4, N = 11 };
    rng_seed(21);
    float w[C * K], x[N][C], y[N][C], state[(K - 1) * C];
    for (int i = 0; i < C * K; i++)
        w[i] = rng_f();
    for (int t = 0; t < N; t++)
        for (int c = 0; c < C; c++)
            x[t][c] = y[t][c] = rng_f();
    memset(state, 0, sizeof(state));
    /* in three pieces, so the state carries the history */
    gdn_conv(y[0], 4, C, C, state, w, K);
    gdn_conv(y[4], 1, C, C, state, w, K);
    gdn_conv(y[5], N - 5, C, C, state, w, K);
    for (int t = 0; t < N; t++)
        for (int c = 0; c < C; c++) {
            double s = 0.0;
            for (int j = 0; j < K; j++) {
                int src = t - (K - 1) + j;
                if (src >= 0)
                    s += (double)w[c * K + j] * x[src][c];
            }
            double want = s / (1.0 + exp(-s));
            ck_assert_msg(fabs(y[t][c] - want) < 1e-6, "t %d c %d: %g vs %g", t, c, y[t][c], want);
        }
    for (int j = 0; j < K - 1; j++)
        for (int c = 0; c < C; c++)
            ck_assert_float_eq(state[j * C + c], x[N - (K - 1) + j][c]);
}
END_TEST

START_TEST(test_gates_and_norms)
{
    float a[3] = {-30.0f, 0.3f, 40.0f}, b[3] = {-2.0f, 0.0f, 3.0f};
    float neg_a[3] = {-0.5f, -2.0f, -0.01f}, dt[3] = {0.1f, -0.4f, 0.2f}, g[3], beta[3];
    gdn_gates(a, b, neg_a, dt, 3, g, beta);
    for (int i = 0; i < 3; i++) {
        double sp = log1p(exp((double)a[i] + dt[i]));
        ck_assert_double_eq_tol(g[i], neg_a[i] * sp, 1e-6 * (1.0 + fabs(neg_a[i] * sp)));
        ck_assert_double_eq_tol(beta[i], 1.0 / (1.0 + exp(-b[i])), 1e-7);
        ck_assert(isfinite(g[i]));
    }

    float o[6] = {1, -2, 3, 0.5f, 0, -1}, z[6] = {0.2f, -1, 2, 5, -3, 0}, w[6] = {1, 2, 3, 4, 5, 6};
    float o2[6];
    memcpy(o2, o, sizeof(o));
    gdn_gated_norm(o2, z, w, 6, 1e-6f);
    double ss = 0.0;
    for (int i = 0; i < 6; i++)
        ss += o[i] * o[i];
    for (int i = 0; i < 6; i++) {
        double want = w[i] * o[i] / sqrt(ss / 6 + 1e-6) * z[i] / (1.0 + exp(-z[i]));
        ck_assert_double_eq_tol(o2[i], want, 1e-5);
    }

    float v[2][3] = {{3, 4, 0}, {0, 0, 0}};
    gdn_l2norm(&v[0][0], 2, 3, 2.0f);
    ck_assert_double_eq_tol(v[0][0], 2.0 * 3 / sqrt(25 + 1e-6), 1e-6);
    ck_assert_double_eq_tol(v[0][1], 2.0 * 4 / sqrt(25 + 1e-6), 1e-6);
    ck_assert_float_eq(v[1][0], 0.0f); /* the epsilon keeps a zero vector finite */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gdn");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_paths_match_naive, 0, 2);
    tcase_add_test(tc, test_conv);
    tcase_add_test(tc, test_gates_and_norms);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
