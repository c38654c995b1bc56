/*
 * tests/unit/neuron/test_generate.c — the generation loop on a real model (SmolLM2-135M-Instruct
 * Q4_1 GGUF, path in CORTEX_SMOLLM2_GGUF; exit 77 without it).
 *
 * Checks: the model answers a factual question through its own chat template; max_tokens ends
 * with "length"; a stop string cuts the greedy answer exactly where the uncut answer has it;
 * streamed text equals the detokenised tokens; generations batched together (with prompt chunks
 * interleaved) produce the same tokens as each run alone; a seed reproduces a sampled answer;
 * an over-long prompt is refused with the numbers. Prefix caching: a first request saves its
 * state at every multiple of the interval; a second one sharing the system prompt restores the
 * longest saved prefix it shares and answers exactly as without the cache; the same prompt
 * again restores all but the last interval's worth (one token is always read).
 */
#include "engine.h"
#include "generate.h"
#include "prefix_cache.h"
#include "xalloc.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct engine *eng;

struct answer {
    char *text;
    int32_t *tokens;
    size_t n_tokens;
    enum gen_finish finish;
};

static void answer_free(struct answer *a)
{
    free(a->text);
    free(a->tokens);
}

static void prompt_ids(const char *system, const char *user, struct tokenizer_ids *ids)
{
    char err[512];
    json_t *msgs = json_array();
    if (system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", system));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    char *text = NULL;
    size_t len = 0;
    ck_assert_msg(engine_render_chat(eng, msgs, NULL, true, NULL, &text, &len, err, sizeof err) ==
                          0,
                  "%s", err);
    ck_assert_msg(engine_tokenize(eng, text, len, true, ids, err, sizeof err) == 0, "%s", err);
    free(text);
    json_decref(msgs);
}

/* Runs generations to completion, n at a time in one batch, collecting each one's text. */
static void run_batch(struct generation **g, int n, int64_t chunk, struct answer *out)
{
    char err[512];
    struct text_acc {
        char *p;
        size_t len, cap;
    } text[8] = {0};
    ck_assert_int_le(n, 8);
    for (;;) {
        int live = 0;
        for (int i = 0; i < n; i++)
            live += generation_finish(g[i]) == GEN_FINISH_NONE;
        if (!live)
            break;
        ck_assert_msg(generation_step(eng, g, n, chunk, err, sizeof err) == 0, "%s", err);
        for (int i = 0; i < n; i++) {
            struct gen_output o;
            generation_output(g[i], &o);
            text[i].p = xgrow(text[i].p, &text[i].cap, text[i].len + o.text_len + 1, 1);
            memcpy(text[i].p + text[i].len, o.text, o.text_len);
            text[i].len += o.text_len;
            text[i].p[text[i].len] = '\0';
            generation_output_clear(g[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        size_t nt;
        const int32_t *t = generation_tokens(g[i], &nt);
        out[i].text = text[i].p ? text[i].p : xstrdup("");
        out[i].tokens = xmalloc((nt ? nt : 1) * sizeof *t);
        memcpy(out[i].tokens, t, nt * sizeof *t);
        out[i].n_tokens = nt;
        out[i].finish = generation_finish(g[i]);
    }
}

static struct answer ask(const char *system, const char *user, const struct gen_params *p)
{
    char err[512];
    struct tokenizer_ids ids = {0};
    prompt_ids(system, user, &ids);
    struct generation *g = NULL;
    ck_assert_msg(generation_create(eng, ids.v, ids.n, p, &g, err, sizeof err) == 0, "%s", err);
    struct answer a;
    run_batch(&g, 1, 0, &a);
    generation_destroy(g);
    free(ids.v);
    return a;
}

static struct gen_params greedy(int64_t max_tokens)
{
    struct gen_params p;
    gen_params_init(&p);
    p.sample.temperature = 0;
    p.max_tokens = max_tokens;
    return p;
}

START_TEST(test_answers_capital_of_france)
{
    struct gen_params p = greedy(40);
    struct answer a = ask("You are a helpful assistant.", "What is the capital of France?", &p);
    ck_assert_msg(strstr(a.text, "Paris") != NULL, "answer without Paris: '%s'", a.text);
    ck_assert_int_eq(a.finish, GEN_FINISH_STOP); /* ended by <|im_end|>, not by length */
    answer_free(&a);
}
END_TEST

START_TEST(test_max_tokens_is_length)
{
    struct gen_params p = greedy(5);
    struct answer a = ask(NULL, "Write a long story about a dragon.", &p);
    ck_assert_int_eq(a.n_tokens, 5);
    ck_assert_int_eq(a.finish, GEN_FINISH_LENGTH);
    ck_assert_str_eq(gen_finish_name(a.finish), "length");
    answer_free(&a);
}
END_TEST

START_TEST(test_stop_string_cuts_exactly)
{
    struct gen_params p = greedy(40);
    struct answer full = ask("You are a helpful assistant.", "What is the capital of France?", &p);
    const char *at = strstr(full.text, "Paris");
    ck_assert_ptr_nonnull(at);
    const char *stops[] = {"Paris", "never-appears"};
    p.stops = stops;
    p.n_stops = 2;
    struct answer cut = ask("You are a helpful assistant.", "What is the capital of France?", &p);
    ck_assert_int_eq(cut.finish, GEN_FINISH_STOP);
    ck_assert_uint_eq(strlen(cut.text), (size_t)(at - full.text));
    ck_assert(strncmp(cut.text, full.text, (size_t)(at - full.text)) == 0);
    answer_free(&full);
    answer_free(&cut);
}
END_TEST

START_TEST(test_streamed_text_equals_decoded_tokens)
{
    struct gen_params p = greedy(24);
    struct answer a = ask(NULL, "List three colours, with emoji.", &p);
    size_t n = a.n_tokens;
    if (n && tokenizer_is_eog(eng->tok, a.tokens[n - 1]))
        n--;
    char *dec = NULL, err[256];
    size_t dlen = 0;
    ck_assert(tokenizer_decode(eng->tok, a.tokens, n, 0, &dec, &dlen, err, sizeof err) == 0);
    ck_assert_str_eq(a.text, dec);
    free(dec);
    answer_free(&a);
}
END_TEST

START_TEST(test_batched_equals_alone)
{
    static const char *const users[] = {
            "What is the capital of France?",
            "Name a prime number larger than ten.",
            "Say hello in Spanish and explain the greeting in a long paragraph about its history.",
    };
    enum { N = 3 };
    struct gen_params p = greedy(16);
    struct answer alone[N], together[N];
    for (int i = 0; i < N; i++)
        alone[i] = ask(NULL, users[i], &p);
    struct generation *g[N];
    struct tokenizer_ids ids[N] = {0};
    char err[256];
    for (int i = 0; i < N; i++) {
        prompt_ids(NULL, users[i], &ids[i]);
        ck_assert(generation_create(eng, ids[i].v, ids[i].n, &p, &g[i], err, sizeof err) == 0);
    }
    run_batch(g, N, 7, together); /* 7-token prompt chunks: prefill interleaves with decode */
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(together[i].n_tokens, alone[i].n_tokens);
        ck_assert_msg(memcmp(together[i].tokens, alone[i].tokens,
                             alone[i].n_tokens * sizeof(int32_t)) == 0,
                      "prompt %d: batched tokens differ from alone ('%s' vs '%s')", i,
                      together[i].text, alone[i].text);
        generation_destroy(g[i]);
        free(ids[i].v);
        answer_free(&alone[i]);
        answer_free(&together[i]);
    }
}
END_TEST

START_TEST(test_seed_reproduces)
{
    struct gen_params p;
    gen_params_init(&p);
    p.sample.temperature = 1.0f;
    p.sample.seed = 1234;
    p.sample.has_seed = true;
    p.max_tokens = 20;
    struct answer a = ask(NULL, "Invent a name for a cat.", &p);
    struct answer b = ask(NULL, "Invent a name for a cat.", &p);
    ck_assert_uint_eq(a.n_tokens, b.n_tokens);
    ck_assert(memcmp(a.tokens, b.tokens, a.n_tokens * sizeof(int32_t)) == 0);
    answer_free(&a);
    answer_free(&b);
}
END_TEST

START_TEST(test_prompt_too_long)
{
    int64_t ctx = model_max_context(eng->model);
    int32_t *ids = xcalloc((size_t)ctx, sizeof *ids);
    for (int64_t i = 0; i < ctx; i++)
        ids[i] = 42;
    struct gen_params p = greedy(4);
    struct generation *g = NULL;
    char err[512] = "";
    ck_assert_int_eq(generation_create(eng, ids, (size_t)ctx, &p, &g, err, sizeof err), -1);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err, "prompt is too long") != NULL, "%s", err);
    char want[64];
    snprintf(want, sizeof want, "%lld tokens", (long long)ctx);
    ck_assert_msg(strstr(err, want) != NULL, "numbers missing: %s", err);
    free(ids);
}
END_TEST

/* A generation of (system, user) that uses pc, run alone to completion; *cached gets the
 * prompt tokens it restored and *n_prompt its prompt length. */
static struct answer ask_cached(struct prefix_cache *pc, const char *system, const char *user,
                                const struct gen_params *p, int64_t *cached, size_t *n_prompt)
{
    char err[512];
    struct tokenizer_ids ids = {0};
    prompt_ids(system, user, &ids);
    struct generation *g = NULL;
    ck_assert_msg(generation_create(eng, ids.v, ids.n, p, &g, err, sizeof err) == 0, "%s", err);
    *cached = generation_use_prefix_cache(g, pc, err, sizeof err);
    ck_assert_msg(*cached >= 0, "%s", err);
    struct answer a;
    run_batch(&g, 1, 0, &a);
    struct gen_stats st;
    generation_stats(g, &st);
    ck_assert_int_eq(st.cached_tokens, *cached);
    ck_assert_int_eq(st.prompt_tokens, (int64_t)ids.n);
    *n_prompt = ids.n;
    generation_destroy(g);
    free(ids.v);
    return a;
}

START_TEST(test_prefix_cache_hit)
{
    enum { IV = 16 };
    static const char sys[] =
            "You are a meticulous assistant for a small bakery. Always answer in one short "
            "sentence, mention the bakery's name, Crumb & Co., and never invent prices. The "
            "bakery opens at seven, closes at six, and sells bread, pastries and cakes.";
    static const char u1[] = "When do you open?";
    static const char u2[] = "Do you sell cakes?";
    ck_assert_ptr_null(generation_prefix_cache_create(eng, 0, IV));
    struct prefix_cache *pc = generation_prefix_cache_create(eng, 64u << 20, IV);
    ck_assert_ptr_nonnull(pc);
    ck_assert_int_eq(prefix_cache_interval(pc), IV);
    struct gen_params p = greedy(12);
    struct answer cold = ask(sys, u2, &p);

    int64_t cached;
    size_t n1, n2;
    struct answer a1 = ask_cached(pc, sys, u1, &p, &cached, &n1);
    ck_assert_int_eq(cached, 0);
    struct prefix_cache_stats st;
    prefix_cache_stats(pc, &st);
    /* whole-prompt chunks were cut at every multiple of the interval, each saved */
    ck_assert_uint_eq(st.entries, n1 / IV);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.hits, 0);

    struct tokenizer_ids i1 = {0}, i2 = {0};
    prompt_ids(sys, u1, &i1);
    prompt_ids(sys, u2, &i2);
    size_t common = 0;
    while (common < i1.n && common < i2.n && i1.v[common] == i2.v[common])
        common++;
    ck_assert_uint_ge(common, 2 * IV);
    struct answer a2 = ask_cached(pc, sys, u2, &p, &cached, &n2);
    ck_assert_int_eq(cached, (int64_t)(common / IV * IV)); /* the longest shared multiple */
    ck_assert_uint_eq(a2.n_tokens, cold.n_tokens);
    ck_assert_msg(memcmp(a2.tokens, cold.tokens, cold.n_tokens * sizeof(int32_t)) == 0,
                  "with a restored prefix: '%s', cold: '%s'", a2.text, cold.text);

    /* the same prompt again: everything saved but at least one token is read */
    struct answer a3 = ask_cached(pc, sys, u2, &p, &cached, &n2);
    ck_assert_int_eq(cached, (int64_t)((n2 - 1) / IV * IV));
    ck_assert_uint_eq(a3.n_tokens, cold.n_tokens);
    ck_assert(memcmp(a3.tokens, cold.tokens, cold.n_tokens * sizeof(int32_t)) == 0);
    prefix_cache_stats(pc, &st);
    ck_assert_uint_eq(st.lookups, 3);
    ck_assert_uint_eq(st.hits, 2);
    ck_assert_uint_eq(st.hit_tokens, common / IV * IV + (n2 - 1) / IV * IV);
    ck_assert_uint_eq(st.evictions, 0);

    free(i1.v);
    free(i2.v);
    answer_free(&cold);
    answer_free(&a1);
    answer_free(&a2);
    answer_free(&a3);
    prefix_cache_destroy(pc);
}
END_TEST

int main(void)
{
    const char *path = getenv("CORTEX_SMOLLM2_GGUF");
    if (!path || !*path) {
        printf("CORTEX_SMOLLM2_GGUF is not set: skipped\n");
        return 77;
    }
    char err[1024];
    struct engine_options eo = {.threads = 2, .max_context = 512};
    if (engine_open(path, &eo, &eng, err, sizeof err) != 0) {
        fprintf(stderr, "engine_open: %s\n", err);
        return 1;
    }
    Suite *s = suite_create("generate");
    TCase *tc = tcase_create("smollm2");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_answers_capital_of_france);
    tcase_add_test(tc, test_max_tokens_is_length);
    tcase_add_test(tc, test_stop_string_cuts_exactly);
    tcase_add_test(tc, test_streamed_text_equals_decoded_tokens);
    tcase_add_test(tc, test_batched_equals_alone);
    tcase_add_test(tc, test_seed_reproduces);
    tcase_add_test(tc, test_prompt_too_long);
    tcase_add_test(tc, test_prefix_cache_hit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    engine_close(eng);
    return failed ? 1 : 0;
}
