/*
 * tests/unit/neuron/test_model_prefix.c — saved prefixes (model_prefix_*) on the CPU, with the
 * tiny llama and qwen3_5 checkpoints of tests/fixtures (attention only; attention plus Gated
 * DeltaNet layers).
 *
 * For several prefix lengths L: a sequence that restores the state saved after L prompt tokens
 * and reads the rest must give bit for bit the logits of a cold sequence that read the same
 * tokens in the same two pieces — whether the restoring sequence was fresh, held other tokens,
 * or was the saving sequence itself after it went on with other tokens — and its last prompt
 * row must match HF's golden logits. Also: the prefix's bytes follow the cache layout, the CPU
 * granule is 1, the KV block counters are zero on the CPU, and bad saves and restores are
 * refused with a message.
 */
#include "model.h"
#include "model_file.h"

#include "model_fixture.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    char dir[1024];
    int32_t *prompt; /* the golden prefill tokens, then the decode tokens */
    int64_t n_prompt, n_decode, vocab;
    float *golden_last; /* HF's logits after the whole prefill [vocab] */
    struct model_file *mf;
    struct model *m;
};

static void fixture_load(struct fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    const char *src = getenv("CORTEX_SOURCE_DIR");
    snprintf(f->dir, sizeof f->dir, "%s/tests/fixtures/%s", src ? src : ".", name);
    char path[1200];
    snprintf(path, sizeof path, "%s/golden.json", f->dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    ck_assert_msg(j != NULL, "%s: %s", path, jerr.text);
    json_t *pre = json_object_get(j, "prefill_tokens"), *dec = json_object_get(j, "decode_tokens");
    f->n_prompt = (int64_t)json_array_size(pre);
    f->n_decode = (int64_t)json_array_size(dec);
    ck_assert_int_ge(f->n_decode, 4);
    f->prompt = malloc(sizeof(int32_t) * (size_t)(f->n_prompt + f->n_decode));
    for (int64_t i = 0; i < f->n_prompt; i++)
        f->prompt[i] = (int32_t)json_integer_value(json_array_get(pre, (size_t)i));
    for (int64_t i = 0; i < f->n_decode; i++)
        f->prompt[f->n_prompt + i] = (int32_t)json_integer_value(json_array_get(dec, (size_t)i));
    f->vocab = json_integer_value(json_object_get(j, "vocab_size"));
    json_decref(j);

    snprintf(path, sizeof path, "%s/prefill_logits.bin", f->dir);
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    f->golden_last = malloc(sizeof(float) * (size_t)f->vocab);
    ck_assert_int_eq(
            fseek(fp, (long)(sizeof(float) * (size_t)((f->n_prompt - 1) * f->vocab)), SEEK_SET), 0);
    ck_assert_int_eq(fread(f->golden_last, sizeof(float), (size_t)f->vocab, fp), (size_t)f->vocab);
    fclose(fp);

    char err[512];
    ck_assert_msg(model_file_open(f->dir, &f->mf, err, sizeof err) == 0, "%s", err);
    struct model_options opt = {.threads = 2, .max_context = 128};
    ck_assert_msg(model_create(f->mf, &opt, &f->m, err, sizeof err) == 0, "%s", err);
}

static void fixture_free(struct fixture *f)
{
    model_destroy(f->m);
    model_file_close(f->mf);
    free(f->prompt);
    free(f->golden_last);
}

/* Appends tokens[0 .. n) to s; logits (may be NULL) gets the last row. */
static void feed(struct fixture *f, struct model_seq *s, const int32_t *tokens, int64_t n,
                 float *logits)
{
    char err[512];
    float *tmp = logits ? logits : malloc(sizeof(float) * (size_t)f->vocab);
    int rc = model_forward(f->m, &s, &tokens, &n, 1, MODEL_LOGITS_LAST, tmp, err, sizeof err);
    ck_assert_msg(rc == 0, "model_forward: %s", err);
    if (!logits)
        free(tmp);
}

/* Reads the rest of the prompt from s (holding the first L tokens) and one decode token, and
 * compares both logits rows with the cold run's bit for bit. */
static void check_rest(struct fixture *f, struct model_seq *s, int64_t L, const float *cold_last,
                       const float *cold_next, const char *what)
{
    size_t row = sizeof(float) * (size_t)f->vocab;
    float *got = malloc(row);
    ck_assert_int_eq(model_seq_length(s), L);
    feed(f, s, f->prompt + L, f->n_prompt - L, got);
    ck_assert_msg(memcmp(got, cold_last, row) == 0, "%s L=%lld: prompt logits differ (%.3g)", what,
                  (long long)L, fixture_rel_err(got, cold_last, f->vocab));
    ck_assert_msg(fixture_rel_err(got, f->golden_last, f->vocab) <= 1e-3, "%s L=%lld: off HF's",
                  what, (long long)L);
    feed(f, s, f->prompt + f->n_prompt, 1, got);
    ck_assert_msg(memcmp(got, cold_next, row) == 0, "%s L=%lld: decode logits differ", what,
                  (long long)L);
    free(got);
}

static const char *const fixtures[] = {"llama", "qwen3_5"};

/* _i indexes fixtures */
START_TEST(test_restore_equals_cold)
{
    struct fixture f;
    fixture_load(&f, fixtures[_i]);
    const struct model_config *c = model_config(f.m);
    ck_assert_int_eq(model_prefix_granule(f.m), 1);
    size_t row = sizeof(float) * (size_t)f.vocab;
    float *cold_last = malloc(row), *cold_next = malloc(row);
    int64_t lengths[] = {1, 3, f.n_prompt / 2, f.n_prompt - 1};
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        int64_t L = lengths[k];
        char err[512];
        /* cold: the same tokens in the same two pieces */
        struct model_seq *cold = model_seq_create(f.m);
        feed(&f, cold, f.prompt, L, NULL);
        feed(&f, cold, f.prompt + L, f.n_prompt - L, cold_last);
        feed(&f, cold, f.prompt + f.n_prompt, 1, cold_next);
        model_seq_destroy(cold);

        struct model_seq *saver = model_seq_create(f.m);
        feed(&f, saver, f.prompt, L, NULL);
        ck_assert_uint_eq(model_prefix_save_bytes(saver), fixture_state_bytes(c, L));
        struct model_prefix *p = model_prefix_save(saver, err, sizeof err);
        ck_assert_msg(p != NULL, "save: %s", err);
        ck_assert_int_eq(model_prefix_length(p), L);
        ck_assert_uint_eq(model_prefix_bytes(p), fixture_state_bytes(c, L));
        /* the saver goes on with other tokens: the prefix must not change with it */
        feed(&f, saver, f.prompt + f.n_prompt + 1, 3, NULL);

        struct model_seq *fresh = model_seq_create(f.m);
        ck_assert_msg(model_prefix_restore(fresh, p, err, sizeof err) == 0, "%s", err);
        check_rest(&f, fresh, L, cold_last, cold_next, "fresh sequence");

        struct model_seq *busy = model_seq_create(f.m);
        feed(&f, busy, f.prompt + 5, 7, NULL);
        ck_assert_msg(model_prefix_restore(busy, p, err, sizeof err) == 0, "%s", err);
        check_rest(&f, busy, L, cold_last, cold_next, "sequence that held other tokens");

        ck_assert_msg(model_prefix_restore(saver, p, err, sizeof err) == 0, "%s", err);
        check_rest(&f, saver, L, cold_last, cold_next, "the saving sequence");

        /* once more into the first one: restoring is repeatable */
        ck_assert_msg(model_prefix_restore(fresh, p, err, sizeof err) == 0, "%s", err);
        check_rest(&f, fresh, L, cold_last, cold_next, "restored twice");

        model_prefix_destroy(p);
        model_seq_destroy(saver);
        model_seq_destroy(fresh);
        model_seq_destroy(busy);
    }
    free(cold_last);
    free(cold_next);
    fixture_free(&f);
}
END_TEST

START_TEST(test_refusals)
{
    struct fixture f, other;
    fixture_load(&f, "llama");
    fixture_load(&other, "llama");
    char err[512] = "";
    struct model_seq *s = model_seq_create(f.m);
    ck_assert_ptr_null(model_prefix_save(s, err, sizeof err));
    ck_assert_msg(strstr(err, "0 tokens") != NULL, "%s", err);
    feed(&f, s, f.prompt, 4, NULL);
    struct model_prefix *p = model_prefix_save(s, err, sizeof err);
    ck_assert_ptr_nonnull(p);
    struct model_seq *foreign = model_seq_create(other.m);
    err[0] = '\0';
    ck_assert_int_eq(model_prefix_restore(foreign, p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "another model") != NULL, "%s", err);
    ck_assert_int_eq(model_seq_length(foreign), 0);
    struct model_cache_stats cs;
    memset(&cs, 0xff, sizeof cs);
    model_cache_stats(f.m, &cs);
    ck_assert_int_eq(cs.blocks, 0);
    ck_assert_int_eq(cs.blocks_free, 0);
    ck_assert_uint_eq(cs.block_allocs, 0);
    ck_assert_int_eq(cs.block_size, 0);
    model_prefix_destroy(p);
    model_prefix_destroy(NULL);
    model_seq_destroy(s);
    model_seq_destroy(foreign);
    fixture_free(&other);
    fixture_free(&f);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("model_prefix");
    TCase *tc = tcase_create("fixtures");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_restore_equals_cold, 0,
                        (int)(sizeof fixtures / sizeof fixtures[0]));
    tcase_add_test(tc, test_refusals);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
