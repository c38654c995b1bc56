/*
 * tests/unit/neuron/test_forward.c — the forward pass against HF transformers' golden logits.
 *
 * For each checkpoint in tests/fixtures/ (made by make_fixtures.py): a multi-token prefill
 * (logits of every position) and then token-by-token decode must match HF within 1e-3 relative
 * error (max |diff| / max |HF logit| per row). Beyond HF's own two paths, the same golden rows
 * check that a prefill split into pieces, several sequences in one batch, and both kernel sets
 * (portable and AVX2) give the same answers. Bad requests are refused with a message. The
 * bytes a sequence reports for its state follow the cache layout (K and V rows of every
 * attention layer for the positions allocated, conv and recurrent state of every GDN layer).
 */
#include "cpu_ops.h"
#include "model.h"
#include "model_file.h"

#include "model_fixture.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REL_TOL 1e-3

struct golden {
    char dir[1024];
    int32_t *prefill, *decode;
    int64_t n_prefill, n_decode, vocab;
    float *prefill_logits; /* [n_prefill][vocab] */
    float *decode_logits;  /* [n_decode][vocab] */
};

static const char *source_dir(void)
{
    const char *s = getenv("CORTEX_SOURCE_DIR");
    return s ? s : ".";
}

static int32_t *json_ids(json_t *arr, int64_t *n)
{
    *n = (int64_t)json_array_size(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n ? *n : 1));
    for (int64_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static float *read_floats(const char *dir, const char *file, int64_t n)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    float *v = malloc(sizeof(float) * (size_t)n);
    ck_assert_int_eq(fread(v, sizeof(float), (size_t)n, f), (size_t)n);
    fclose(f);
    return v;
}

static void golden_load(struct golden *g, const char *name)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->dir, sizeof(g->dir), "%s/tests/fixtures/%s", source_dir(), name);
    char path[1200];
    snprintf(path, sizeof(path), "%s/golden.json", g->dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    ck_assert_msg(j != NULL, "%s: %s", path, jerr.text);
    g->prefill = json_ids(json_object_get(j, "prefill_tokens"), &g->n_prefill);
    g->decode = json_ids(json_object_get(j, "decode_tokens"), &g->n_decode);
    g->vocab = json_integer_value(json_object_get(j, "vocab_size"));
    ck_assert_int_gt(g->n_prefill, 0);
    ck_assert_int_gt(g->n_decode, 0);
    g->prefill_logits = read_floats(g->dir, "prefill_logits.bin", g->n_prefill * g->vocab);
    g->decode_logits = read_floats(g->dir, "decode_logits.bin", g->n_decode * g->vocab);
    json_decref(j);
}

static void golden_free(struct golden *g)
{
    free(g->prefill);
    free(g->decode);
    free(g->prefill_logits);
    free(g->decode_logits);
}

static double worst;  /* largest error seen by the current test, printed at its end */
static int n_checked; /* rows compared by the current test */

static void check_row(const struct golden *g, const float *got, const float *want, const char *what,
                      int64_t row)
{
    double e = fixture_rel_err(got, want, g->vocab);
    worst = fmax(worst, e);
    n_checked++;
    ck_assert_msg(e <= REL_TOL, "%s (%s) %s row %lld: relative error %.3g > %.0e", g->dir,
                  cpu_ops_isa_name(cpu_ops_isa()), what, (long long)row, e, REL_TOL);
}

struct loaded {
    struct model_file *mf;
    struct model *m;
};

static void load_model(struct loaded *ld, const struct golden *g, int threads)
{
    char err[512];
    int rc = model_file_open(g->dir, &ld->mf, err, sizeof(err));
    ck_assert_msg(rc == 0, "model_file_open: %s", err);
    struct model_options opt = {.threads = threads, .max_context = 128};
    rc = model_create(ld->mf, &opt, &ld->m, err, sizeof(err));
    ck_assert_msg(rc == 0, "model_create: %s", err);
    ck_assert_int_eq(model_config(ld->m)->vocab_size, g->vocab);
}

static void unload_model(struct loaded *ld)
{
    if (n_checked > 0)
        printf("%s %s: largest relative error %.2e over %d rows\n", ld->mf->path,
               cpu_ops_isa_name(cpu_ops_isa()), worst, n_checked);
    model_destroy(ld->m);
    model_file_close(ld->mf);
}

static void forward_ok(struct model *m, struct model_seq *const *seqs, const int32_t *const *tokens,
                       const int64_t *n, int n_seqs, enum model_logits which, float *logits)
{
    char err[512];
    int rc = model_forward(m, seqs, tokens, n, n_seqs, which, logits, err, sizeof(err));
    ck_assert_msg(rc == 0, "model_forward: %s", err);
}

static const char *const fixtures[] = {"llama", "qwen2", "qwen3", "qwen3_5"};
static const enum cpu_isa isas[] = {CPU_ISA_PORTABLE, CPU_ISA_AVX2};

/* _i = fixture * 2 + kernel set */
static bool setup_case(int i, struct golden *g)
{
    worst = 0.0;
    if (!cpu_ops_isa_supported(isas[i % 2]))
        return false;
    ck_assert_int_eq(cpu_ops_set_isa(isas[i % 2]), 0);
    golden_load(g, fixtures[i / 2]);
    return true;
}

/* HF's two paths: prefill (every position) then decode through the cache. */
START_TEST(test_prefill_then_decode)
{
    struct golden g;
    if (!setup_case(_i, &g))
        return;
    struct loaded ld;
    load_model(&ld, &g, 2);
    struct model_seq *s = model_seq_create(ld.m);
    float *logits = malloc(sizeof(float) * (size_t)(g.n_prefill * g.vocab));

    const int32_t *toks = g.prefill;
    forward_ok(ld.m, &s, &toks, &g.n_prefill, 1, MODEL_LOGITS_ALL, logits);
    for (int64_t r = 0; r < g.n_prefill; r++)
        check_row(&g, logits + r * g.vocab, g.prefill_logits + r * g.vocab, "prefill", r);
    ck_assert_int_eq(model_seq_length(s), g.n_prefill);

    for (int64_t t = 0; t < g.n_decode; t++) {
        const int32_t *one = g.decode + t;
        int64_t n1 = 1;
        forward_ok(ld.m, &s, &one, &n1, 1, MODEL_LOGITS_LAST, logits);
        check_row(&g, logits, g.decode_logits + t * g.vocab, "decode", t);
    }
    ck_assert_int_eq(model_seq_length(s), g.n_prefill + g.n_decode);

    /* reset and again, last logits only: state must really be cleared */
    model_seq_reset(s);
    forward_ok(ld.m, &s, &toks, &g.n_prefill, 1, MODEL_LOGITS_LAST, logits);
    check_row(&g, logits, g.prefill_logits + (g.n_prefill - 1) * g.vocab, "after reset", 0);

    free(logits);
    model_seq_destroy(s);
    unload_model(&ld);
    golden_free(&g);
}
END_TEST

/* The prefill in uneven pieces (the second starts mid-sequence with state and cache from the
 * first), with one thread. */
START_TEST(test_prefill_in_pieces)
{
    struct golden g;
    if (!setup_case(_i, &g))
        return;
    struct loaded ld;
    load_model(&ld, &g, 1);
    struct model_seq *s = model_seq_create(ld.m);
    float *logits = malloc(sizeof(float) * (size_t)(g.n_prefill * g.vocab));
    int64_t cut[3] = {0, g.n_prefill / 3, g.n_prefill - 1};
    for (int p = 0; p < 3; p++) {
        int64_t end = p + 1 < 3 ? cut[p + 1] : g.n_prefill;
        int64_t n = end - cut[p];
        const int32_t *toks = g.prefill + cut[p];
        forward_ok(ld.m, &s, &toks, &n, 1, MODEL_LOGITS_ALL, logits);
        for (int64_t r = 0; r < n; r++)
            check_row(&g, logits + r * g.vocab, g.prefill_logits + (cut[p] + r) * g.vocab,
                      "piecewise prefill", cut[p] + r);
    }
    free(logits);
    model_seq_destroy(s);
    unload_model(&ld);
    golden_free(&g);
}
END_TEST

/* Three sequences in one batch at different points: A prefills everything, B only a prefix,
 * C only the first token; then steps where A decodes while B and C continue their prompts. */
START_TEST(test_batched_sequences)
{
    struct golden g;
    if (!setup_case(_i, &g))
        return;
    struct loaded ld;
    load_model(&ld, &g, 2);
    struct model_seq *s[3];
    for (int i = 0; i < 3; i++)
        s[i] = model_seq_create(ld.m);
    int64_t nb = g.n_prefill / 2;
    float *logits = malloc(sizeof(float) * (size_t)((g.n_prefill + nb + 1) * g.vocab));
    const int32_t *toks[3] = {g.prefill, g.prefill, g.prefill};
    int64_t n[3] = {g.n_prefill, nb, 1};
    forward_ok(ld.m, s, toks, n, 3, MODEL_LOGITS_ALL, logits);
    for (int64_t r = 0; r < g.n_prefill; r++)
        check_row(&g, logits + r * g.vocab, g.prefill_logits + r * g.vocab, "batch A", r);
    for (int64_t r = 0; r < nb; r++)
        check_row(&g, logits + (g.n_prefill + r) * g.vocab, g.prefill_logits + r * g.vocab,
                  "batch B", r);
    check_row(&g, logits + (g.n_prefill + nb) * g.vocab, g.prefill_logits, "batch C", 0);

    for (int64_t t = 0; t < g.n_decode && nb + t < g.n_prefill; t++) {
        const int32_t *step[3] = {g.decode + t, g.prefill + nb + t, g.prefill + 1 + t};
        int64_t ones[3] = {1, 1, 1};
        forward_ok(ld.m, s, step, ones, 3, MODEL_LOGITS_LAST, logits);
        check_row(&g, logits, g.decode_logits + t * g.vocab, "batched decode A", t);
        check_row(&g, logits + g.vocab, g.prefill_logits + (nb + t) * g.vocab, "batched decode B",
                  nb + t);
        check_row(&g, logits + 2 * g.vocab, g.prefill_logits + (1 + t) * g.vocab,
                  "batched decode C", 1 + t);
    }
    free(logits);
    for (int i = 0; i < 3; i++)
        model_seq_destroy(s[i]);
    unload_model(&ld);
    golden_free(&g);
}
END_TEST

/* Each output is computed whole by one thread, so the thread count cannot change any bit. */
START_TEST(test_threads_bitwise_equal)
{
    struct golden g;
    golden_load(&g, fixtures[_i]);
    float *logits[2];
    int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        struct loaded ld;
        load_model(&ld, &g, threads[k]);
        struct model_seq *s = model_seq_create(ld.m);
        logits[k] = malloc(sizeof(float) * (size_t)((g.n_prefill + 1) * g.vocab));
        const int32_t *toks = g.prefill;
        forward_ok(ld.m, &s, &toks, &g.n_prefill, 1, MODEL_LOGITS_ALL, logits[k]);
        const int32_t *one = g.decode;
        int64_t n1 = 1;
        forward_ok(ld.m, &s, &one, &n1, 1, MODEL_LOGITS_LAST, logits[k] + g.n_prefill * g.vocab);
        model_seq_destroy(s);
        unload_model(&ld);
    }
    ck_assert_int_eq(
            memcmp(logits[0], logits[1], sizeof(float) * (size_t)((g.n_prefill + 1) * g.vocab)), 0);
    free(logits[0]);
    free(logits[1]);
    golden_free(&g);
}
END_TEST

START_TEST(test_bad_requests)
{
    struct golden g;
    golden_load(&g, "llama");
    struct loaded ld;
    load_model(&ld, &g, 1);
    struct model_seq *s = model_seq_create(ld.m), *other = model_seq_create(ld.m);
    float *logits = malloc(sizeof(float) * (size_t)(2 * g.vocab));
    char err[512];
    int32_t bad[1] = {(int32_t)g.vocab};
    const int32_t *toks = bad;
    int64_t n = 1;
    ck_assert_int_eq(
            model_forward(ld.m, &s, &toks, &n, 1, MODEL_LOGITS_LAST, logits, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "outside the vocabulary"));
    ck_assert_int_eq(model_seq_length(s), 0);

    int32_t *many = calloc(200, sizeof(int32_t));
    toks = many;
    n = 200; /* max_context is 128 */
    ck_assert_int_eq(
            model_forward(ld.m, &s, &toks, &n, 1, MODEL_LOGITS_LAST, logits, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "context"));

    struct model_seq *twice[2] = {s, s};
    const int32_t *tt[2] = {g.prefill, g.prefill};
    int64_t nn[2] = {1, 1};
    ck_assert_int_eq(
            model_forward(ld.m, twice, tt, nn, 2, MODEL_LOGITS_LAST, logits, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "twice"));
    nn[0] = 0;
    struct model_seq *pair[2] = {s, other};
    ck_assert_int_eq(
            model_forward(ld.m, pair, tt, nn, 2, MODEL_LOGITS_LAST, logits, err, sizeof(err)), -1);
    ck_assert_int_eq(model_seq_length(s), 0);
    free(many);
    free(logits);
    model_seq_destroy(s);
    model_seq_destroy(other);

    /* devices: a malformed name is refused; "cpu" is the default; a GPU needs a CUDA build
     * (with one, this machine's lack of a GPU is reported instead; tests/kernels runs GPUs) */
    ck_assert_str_eq(model_device(ld.m), "cpu");
    ck_assert_int_eq(model_device_weight_bytes(ld.m), 0);
    struct model *m2 = NULL;
    const char *bad_devices[] = {"gpu",      "cuda:",    "cuda:x",
                                 "cuda:-1",  "CPU",      "cuda:0,",
                                 "cuda:0,0", "cuda:0;1", "cuda:0,1,2,3,4,5,6,7,8"};
    for (size_t i = 0; i < sizeof(bad_devices) / sizeof(bad_devices[0]); i++) {
        struct model_options opt = {.threads = 1, .device = bad_devices[i]};
        ck_assert_int_eq(model_create(ld.mf, &opt, &m2, err, sizeof(err)), -1);
        ck_assert_msg(strstr(err, "unknown device") != NULL, "%s: %s", bad_devices[i], err);
        ck_assert_ptr_null(m2);
    }
#ifndef CORTEX_HAVE_CUDA
    struct model_options gpu = {.threads = 1, .device = "cuda:0"};
    ck_assert_int_eq(model_create(ld.mf, &gpu, &m2, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "no CUDA backend") != NULL, "%s", err);
    struct model_options tp = {.threads = 1, .device = "cuda:0,1"}; /* tensor parallelism */
    ck_assert_int_eq(model_create(ld.mf, &tp, &m2, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "no CUDA backend") != NULL, "%s", err);
#endif
    struct model_options cpu = {.threads = 1, .device = "cpu"};
    ck_assert_int_eq(model_create(ld.mf, &cpu, &m2, err, sizeof(err)), 0);
    ck_assert_str_eq(model_device(m2), "cpu");
    model_destroy(m2);
    unload_model(&ld);
    golden_free(&g);
}
END_TEST

/* _i indexes fixtures */
START_TEST(test_seq_memory_bytes)
{
    struct golden g;
    golden_load(&g, fixtures[_i]);
    struct loaded ld;
    load_model(&ld, &g, 1);
    const struct model_config *c = model_config(ld.m);
    struct model_seq *s = model_seq_create(ld.m);
    ck_assert_uint_eq(model_seq_memory_bytes(s), fixture_state_bytes(c, 0));
    float *logits = malloc(sizeof(float) * (size_t)g.vocab);
    const int32_t *toks = g.prefill;
    int64_t n = 3;
    forward_ok(ld.m, &s, &toks, &n, 1, MODEL_LOGITS_LAST, logits);
    /* caches grow to 256 positions at first, capped at max_context (128 here) */
    uint64_t after = model_seq_memory_bytes(s);
    ck_assert_uint_eq(after, fixture_state_bytes(c, 128));
    ck_assert_uint_gt(after, 0);
    model_seq_reset(s);
    ck_assert_uint_eq(model_seq_memory_bytes(s), after); /* reset keeps the memory */
    free(logits);
    model_seq_destroy(s);
    unload_model(&ld);
    golden_free(&g);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("forward");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 240);
    int n_cases = (int)(sizeof(fixtures) / sizeof(fixtures[0])) * 2;
    tcase_add_loop_test(tc, test_prefill_then_decode, 0, n_cases);
    tcase_add_loop_test(tc, test_prefill_in_pieces, 0, n_cases);
    tcase_add_loop_test(tc, test_batched_sequences, 0, n_cases);
    tcase_add_loop_test(tc, test_threads_bitwise_equal, 0, n_cases / 2);
    tcase_add_test(tc, test_bad_requests);
    tcase_add_loop_test(tc, test_seq_memory_bytes, 0, n_cases / 2);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
