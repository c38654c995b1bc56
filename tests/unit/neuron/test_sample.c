/*
 * tests/unit/neuron/test_sample.c — token sampling (neuron/sample.c) and its generator (rng.c).
 *
 * Every expectation is computed here from the definitions (in double precision where numbers
 * are compared), on constructed distributions whose truncation sets are known exactly. Random
 * inputs come from fixed seeds, so each statistical check is deterministic and cannot flake.
 */
#include "rng.h"
#include "sample.h"
#include "sample_internal.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static struct sampler *make_sampler(const struct sample_params *p)
{
    char err[128];
    ck_assert_msg(sample_params_validate(p, err, sizeof(err)) == 0, "%s", err);
    return sampler_create(p);
}

static struct sample_params seeded_params(uint64_t seed)
{
    struct sample_params p;
    sample_params_init(&p);
    p.seed = seed;
    p.has_seed = true;
    return p;
}

static void random_logits(struct rng *r, float *logits, int n, float scale)
{
    for (int i = 0; i < n; i++)
        logits[i] = (float)((rng_next_double(r) * 2.0 - 1.0) * scale);
}

/* Samples once from a copy of logits (sampling overwrites its input with penalised logits). */
static int32_t sample_copy(struct sampler *s, const float *logits, int n, struct sample_result *out)
{
    float *tmp = malloc((size_t)n * sizeof(*tmp));
    memcpy(tmp, logits, (size_t)n * sizeof(*tmp));
    int32_t t = sampler_sample(s, tmp, n, out);
    free(tmp);
    if (t >= 0)
        ck_assert_int_eq(t, out->token);
    return t;
}

/* Token ids ordered by probability, highest first, ties by id: the reference ranking. */
static const double *g_rank_keys;
static int rank_cmp(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    if (g_rank_keys[a] != g_rank_keys[b])
        return g_rank_keys[a] > g_rank_keys[b] ? -1 : 1;
    return a < b ? -1 : 1;
}

static int *ranking(const double *keys, int n)
{
    int *order = malloc((size_t)n * sizeof(*order));
    for (int i = 0; i < n; i++)
        order[i] = i;
    g_rank_keys = keys;
    qsort(order, (size_t)n, sizeof(*order), rank_cmp);
    return order;
}

/* Fisher-Yates with the test's own generator: places constructed probabilities at random ids. */
static void shuffle(struct rng *r, double *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next_u64(r) % (uint64_t)(i + 1));
        double t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* ---- parameters and generator ------------------------------------------------------------- */

START_TEST(test_params_validate)
{
    struct sample_params p;
    char err[128];
    sample_params_init(&p);
    ck_assert_int_eq(sample_params_validate(&p, err, sizeof(err)), 0);

    /* Each case spoils one field; the message must name it. */
    const char *fields[] = {
            "temperature",        "top_k",          "top_p",     "min_p", "presence_penalty",
            "repetition_penalty", "penalty_last_n", "n_logprobs"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        sample_params_init(&p);
        switch (i) {
        case 0:
            p.temperature = -0.5f;
            break;
        case 1:
            p.top_k = -1;
            break;
        case 2:
            p.top_p = 1.5f;
            break;
        case 3:
            p.min_p = NAN;
            break;
        case 4:
            p.presence_penalty = INFINITY;
            break;
        case 5:
            p.repetition_penalty = 0.0f;
            break;
        case 6:
            p.penalty_last_n = -2;
            break;
        case 7:
            p.n_logprobs = SAMPLE_MAX_LOGPROBS + 1;
            break;
        }
        err[0] = '\0';
        ck_assert_int_eq(sample_params_validate(&p, err, sizeof(err)), -1);
        ck_assert_msg(strstr(err, fields[i]) != NULL, "'%s' lacks '%s'", err, fields[i]);
    }
}
END_TEST

START_TEST(test_rng_reproducible)
{
    struct rng a, b, c;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_next_u64(&a);
        ck_assert_uint_eq(x, rng_next_u64(&b));
        differ += x != rng_next_u64(&c);
    }
    ck_assert_int_gt(differ, 990);
    /* Reference values of xoshiro256** after splitmix64 seeding: fixes the stream across
     * machines and releases, so recorded seeds stay replayable. */
    struct rng z;
    rng_seed(&z, 0);
    ck_assert_uint_eq(z.s[0], 0xe220a8397b1dcdafULL); /* splitmix64(0), first output */
    for (int i = 0; i < 100000; i++) {
        double d = rng_next_double(&z);
        ck_assert(d >= 0.0 && d < 1.0);
    }
}
END_TEST

/* ---- building blocks (sample_internal.h) -------------------------------------------------- */

START_TEST(test_exp)
{
    double worst = 0;
    for (int i = 0; i <= 500000; i++) {
        float x = -87.0f * (float)i / 500000.0f;
        double want = exp((double)x);
        double rel = fabs(sample_exp(x) - want) / want;
        worst = rel > worst ? rel : worst;
    }
    ck_assert_msg(worst < 1.5e-7, "relative error %g", worst); /* measured 1e-7 */
    ck_assert(sample_exp(0.0f) == 1.0f);                       /* the best token weighs exactly 1 */
    ck_assert(sample_exp(-0.0f) == 1.0f);
    const float outside[] = {-87.5f, -1000.0f, -INFINITY, INFINITY, NAN, 1e-30f, 1.0f};
    for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++)
        ck_assert_msg(sample_exp(outside[i]) == 0.0f, "e^%g", outside[i]);
}
END_TEST

/* Random candidates with many tied logits, so ties must be broken by id. */
static void random_candidates(struct rng *r, struct sample_candidate *c, size_t n, int levels)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (struct sample_candidate){.v = (float)(rng_next_u64(r) % (uint64_t)levels),
                                         .id = (int32_t)i};
    for (size_t i = n; i > 1; i--) { /* ids in random order */
        size_t j = rng_next_u64(r) % i;
        struct sample_candidate t = c[i - 1];
        c[i - 1] = c[j];
        c[j] = t;
    }
}

/* The reference ranking of the candidates: positions by (logit desc, id asc). */
static int *candidate_ranks(const struct sample_candidate *c, size_t n)
{
    double *keys = malloc(n * sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[c[i].id] = c[i].v;
    int *order = ranking(keys, (int)n);
    int *rank = malloc(n * sizeof(*rank));
    for (size_t k = 0; k < n; k++)
        rank[order[k]] = (int)k;
    free(order);
    free(keys);
    return rank;
}

START_TEST(test_select_and_heap)
{
    struct rng r;
    rng_seed(&r, 131);
    for (int round = 0; round < 400; round++) {
        size_t n = 1 + rng_next_u64(&r) % (round < 200 ? 40 : 3000);
        size_t k = rng_next_u64(&r) % (n + 1);
        struct sample_candidate *c = malloc(n * sizeof(*c));
        random_candidates(&r, c, n, 1 + round % 50);
        int *rank = candidate_ranks(c, n);
        sample_select(c, n, k);
        char *seen = calloc(n, 1);
        for (size_t i = 0; i < n; i++) { /* still a permutation, best k in front */
            ck_assert(!seen[c[i].id]);
            seen[c[i].id] = 1;
            ck_assert_msg((rank[c[i].id] < (int)k) == (i < k), "round %d n %zu k %zu", round, n, k);
        }

        /* The heap over the same tokens, as logits and weights indexed by id. */
        float *logits = malloc(n * sizeof(*logits)), *w = malloc(n * sizeof(*w));
        for (size_t i = 0; i < n; i++) {
            logits[c[i].id] = c[i].v;
            w[c[i].id] = 1.0f;
        }
        size_t kk = k ? k : 1;
        size_t got = sample_top_k_heap(c, logits, w, n, 0.0f, kk);
        ck_assert_uint_eq(got, kk < n ? kk : n);
        memset(seen, 0, n);
        for (size_t i = 0; i < got; i++) {
            ck_assert(rank[c[i].id] < (int)got && !seen[c[i].id]);
            seen[c[i].id] = 1;
        }
        free(logits);
        free(w);
        free(seen);
        free(rank);
        free(c);
    }
}
END_TEST

START_TEST(test_top_p_selection)
{
    /* The nucleus against a full sort, for targets placed between consecutive prefix sums. */
    struct rng r;
    rng_seed(&r, 141);
    for (int round = 0; round < 400; round++) {
        size_t n = 1 + rng_next_u64(&r) % (round < 200 ? 50 : 5000);
        struct sample_candidate *c = malloc(n * sizeof(*c));
        random_candidates(&r, c, n, 1 + round % 30);
        float *w = malloc(n * sizeof(*w));
        for (size_t i = 0; i < n; i++) /* weights need not follow logits for the selection */
            w[c[i].id] = (float)(0.01 + rng_next_double(&r));
        int *rank = candidate_ranks(c, n);
        int32_t *by_rank = malloc(n * sizeof(*by_rank));
        for (size_t i = 0; i < n; i++)
            by_rank[rank[c[i].id]] = c[i].id;
        size_t m = 1 + rng_next_u64(&r) % n;
        double before = 0, at = 0;
        for (size_t k = 0; k < m; k++) {
            before = at;
            at += w[by_rank[k]];
        }
        size_t got = sample_top_p(c, n, w, (before + at) / 2);
        ck_assert_msg(got == m, "round %d: nucleus %zu, want %zu of %zu", round, got, m, n);
        for (size_t i = 0; i < n; i++)
            ck_assert((rank[c[i].id] < (int)m) == (i < m));
        free(by_rank);
        free(rank);
        free(w);
        free(c);
    }
}
END_TEST

START_TEST(test_pick)
{
    struct rng r;
    rng_seed(&r, 151);
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + rng_next_u64(&r) % 3000;
        float *w = malloc(n * sizeof(*w));
        for (size_t i = 0; i < n; i++)
            w[i] = rng_next_u64(&r) % 3 ? 0.0f : (float)rng_next_double(&r);
        double *cum = malloc((n + 1) * sizeof(*cum));
        cum[0] = 0;
        for (size_t i = 0; i < n; i++)
            cum[i + 1] = cum[i] + w[i];
        if (cum[n] == 0) {
            ck_assert_uint_eq(sample_pick(w, n, 0.5), n);
            free(cum);
            free(w);
            continue;
        }
        for (int draw = 0; draw < 20; draw++) {
            double u = rng_next_double(&r);
            size_t got = sample_pick(w, n, u);
            ck_assert(got < n && w[got] > 0.0f);
            double t = u * cum[n];
            /* Away from the edges (rounding), the index whose interval holds u * total. */
            if (t > cum[got] + 1e-9 && t < cum[got + 1] - 1e-9)
                continue;
            ck_assert_msg(fabs(t - cum[got]) < 1e-9 || fabs(t - cum[got + 1]) < 1e-9,
                          "round %d: u %f picked %zu", round, u, got);
        }
        /* The extremes: u = 0 picks the first weighted index, u -> 1 the last. */
        size_t first = 0, last = n - 1;
        while (w[first] == 0.0f)
            first++;
        while (w[last] == 0.0f)
            last--;
        ck_assert_uint_eq(sample_pick(w, n, 0.0), first);
        ck_assert_uint_eq(sample_pick(w, n, 1.0 - 0x1p-53), last);
        free(cum);
        free(w);
    }
}
END_TEST

/* ---- reproducibility ---------------------------------------------------------------------- */

static void run_sequence(uint64_t seed, int32_t *tokens, int steps, int n_vocab)
{
    struct sample_params p = seeded_params(seed);
    p.temperature = 0.9f;
    p.top_k = 200;
    p.top_p = 0.95f;
    p.min_p = 0.01f;
    p.repetition_penalty = 1.1f;
    p.frequency_penalty = 0.2f;
    p.presence_penalty = 0.1f;
    struct sampler *s = make_sampler(&p);
    struct rng logit_rng;
    rng_seed(&logit_rng, 7); /* the same "model output" for every run */
    float *logits = malloc((size_t)n_vocab * sizeof(*logits));
    int32_t prompt[] = {1, 2, 3, 2, 1};
    sampler_accept_prompt(s, prompt, 5);
    for (int i = 0; i < steps; i++) {
        random_logits(&logit_rng, logits, n_vocab, 4.0f);
        struct sample_result r;
        tokens[i] = sampler_sample(s, logits, n_vocab, &r);
        ck_assert_int_ge(tokens[i], 0);
        sampler_accept(s, tokens[i]);
    }
    free(logits);
    sampler_destroy(s);
}

START_TEST(test_seeded_runs_reproduce)
{
    enum { STEPS = 400, VOCAB = 3000 };
    int32_t a[STEPS], b[STEPS], c[STEPS];
    run_sequence(1234, a, STEPS, VOCAB);
    run_sequence(1234, b, STEPS, VOCAB);
    run_sequence(1235, c, STEPS, VOCAB);
    int differ = 0;
    for (int i = 0; i < STEPS; i++) {
        ck_assert_int_eq(a[i], b[i]);
        differ += a[i] != c[i];
    }
    ck_assert_int_gt(differ, STEPS / 2);

    struct sample_params p = seeded_params(99);
    struct sampler *s = make_sampler(&p);
    ck_assert_uint_eq(sampler_seed(s), 99);
    sampler_destroy(s);
    /* Unseeded samplers draw different seeds. */
    p.has_seed = false;
    struct sampler *u1 = make_sampler(&p), *u2 = make_sampler(&p);
    ck_assert_uint_ne(sampler_seed(u1), sampler_seed(u2));
    sampler_destroy(u1);
    sampler_destroy(u2);
}
END_TEST

/* ---- greedy ------------------------------------------------------------------------------- */

START_TEST(test_greedy)
{
    struct sample_params p = seeded_params(1);
    p.temperature = 0.0f;
    struct sampler *s = make_sampler(&p);
    struct sample_result r;
    float l1[] = {0.5f, 2.0f, -1.0f, 1.99f};
    ck_assert_int_eq(sample_copy(s, l1, 4, &r), 1);
    /* Ties go to the lower id, wherever they are. */
    float l2[] = {-INFINITY, 3.0f, 1.0f, 3.0f, 3.0f};
    ck_assert_int_eq(sample_copy(s, l2, 5, &r), 1);
    float l3[] = {NAN, 1.0f, INFINITY, 2.0f};
    ck_assert_int_eq(sample_copy(s, l3, 4, &r), 3); /* NaN and inf are never chosen */
    sampler_destroy(s);

    /* top_k = 1 and top_p = 0 are greedy too. */
    p = seeded_params(2);
    p.top_k = 1;
    s = make_sampler(&p);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(sample_copy(s, l2, 5, &r), 1);
    sampler_destroy(s);
    p = seeded_params(3);
    p.top_p = 0.0f;
    s = make_sampler(&p);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(sample_copy(s, l2, 5, &r), 1);
    sampler_destroy(s);
}
END_TEST

START_TEST(test_low_temperature_is_greedy)
{
    enum { VOCAB = 5000 };
    struct sample_params p = seeded_params(5);
    p.temperature = 1e-3f;
    struct sampler *s = make_sampler(&p);
    struct rng r;
    rng_seed(&r, 11);
    float *logits = malloc(VOCAB * sizeof(*logits));
    for (int step = 0; step < 200; step++) {
        random_logits(&r, logits, VOCAB, 10.0f);
        int best = 0;
        for (int i = 1; i < VOCAB; i++)
            if (logits[i] > logits[best])
                best = i;
        /* Only a runner-up within 0.1 of the best keeps any weight at this temperature. */
        int close = 0;
        for (int i = 0; i < VOCAB; i++)
            close += i != best && logits[best] - logits[i] < 0.1f;
        if (close)
            continue;
        struct sample_result res;
        ck_assert_int_eq(sample_copy(s, logits, VOCAB, &res), best);
    }
    free(logits);
    sampler_destroy(s);
}
END_TEST

START_TEST(test_no_choice)
{
    struct sample_params p = seeded_params(1);
    struct sampler *s = make_sampler(&p);
    struct sample_result r;
    float masked[] = {-INFINITY, -INFINITY, NAN};
    ck_assert_int_eq(sample_copy(s, masked, 3, &r), -1);
    ck_assert_int_eq(sampler_sample(s, masked, 0, &r), -1);
    /* A mask leaves only the unmasked tokens. */
    float some[] = {-INFINITY, 0.0f, -INFINITY, 5.0f, -INFINITY};
    for (int i = 0; i < 200; i++) {
        int32_t t = sample_copy(s, some, 5, &r);
        ck_assert(t == 1 || t == 3);
    }
    sampler_destroy(s);
}
END_TEST

/* ---- truncation --------------------------------------------------------------------------- */

/* Draws n_draws tokens and counts them per id. The parameters carry no penalties, so sampling
 * leaves logits as they are and needs no copy. */
static void draw_counts(const struct sample_params *p, float *logits, int n, int n_draws,
                        int *counts)
{
    ck_assert(p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
              p->frequency_penalty == 0.0f);
    struct sampler *s = make_sampler(p);
    memset(counts, 0, (size_t)n * sizeof(*counts));
    for (int i = 0; i < n_draws; i++) {
        struct sample_result r;
        int32_t t = sampler_sample(s, logits, n, &r);
        ck_assert_int_eq(t, r.token);
        ck_assert(t >= 0 && t < n);
        counts[t]++;
    }
    sampler_destroy(s);
}

START_TEST(test_top_k)
{
    enum { VOCAB = 1000, DRAWS = 4000 };
    struct rng r;
    rng_seed(&r, 21);
    float logits[VOCAB];
    double keys[VOCAB];
    int counts[VOCAB];
    random_logits(&r, logits, VOCAB, 1.0f); /* flat: without top-k the picks would spread */
    for (int i = 0; i < VOCAB; i++)
        keys[i] = logits[i];
    int *order = ranking(keys, VOCAB);
    struct sample_params p = seeded_params(22);
    p.top_k = 3;
    draw_counts(&p, logits, VOCAB, DRAWS, counts);
    int in_set = 0;
    for (int k = 0; k < 3; k++) {
        ck_assert_int_gt(counts[order[k]], DRAWS / 10);
        in_set += counts[order[k]];
    }
    ck_assert_int_eq(in_set, DRAWS);
    free(order);

    /* A tie at the boundary: the lower ids make the cut. */
    float tie[] = {1.0f, 3.0f, 2.0f, 2.0f, 0.5f, 2.0f};
    int tcounts[6];
    p.top_k = 3;
    draw_counts(&p, tie, 6, DRAWS, tcounts);
    ck_assert_int_gt(tcounts[1], 0);
    ck_assert_int_gt(tcounts[2], 0);
    ck_assert_int_gt(tcounts[3], 0);
    ck_assert_int_eq(tcounts[1] + tcounts[2] + tcounts[3], DRAWS);

    /* Large k on a large vocabulary (the selection partitions many times). */
    enum { BIG = 30000, K = 10000 };
    float *big = malloc(BIG * sizeof(*big));
    double *bkeys = malloc(BIG * sizeof(*bkeys));
    int *bcounts = malloc(BIG * sizeof(*bcounts));
    random_logits(&r, big, BIG, 3.0f);
    for (int i = 0; i < BIG; i++)
        bkeys[i] = big[i];
    order = ranking(bkeys, BIG);
    char *allowed = calloc(BIG, 1);
    for (int k = 0; k < K; k++)
        allowed[order[k]] = 1;
    p.top_k = K;
    draw_counts(&p, big, BIG, 2000, bcounts);
    for (int i = 0; i < BIG; i++)
        if (!allowed[i])
            ck_assert_int_eq(bcounts[i], 0);
    free(order);
    free(allowed);
    free(big);
    free(bkeys);
    free(bcounts);
}
END_TEST

/* Builds logits whose softmax is exactly prob (up to float rounding), at shuffled ids. */
static void logits_from_probs(const double *prob, int n, float *logits)
{
    for (int i = 0; i < n; i++)
        logits[i] = prob[i] > 0 ? (float)log(prob[i]) : -INFINITY;
}

START_TEST(test_top_p_small)
{
    enum { N = 6, DRAWS = 6000 };
    struct rng r;
    rng_seed(&r, 31);
    double prob[N] = {0.4, 0.25, 0.15, 0.1, 0.05, 0.05};
    shuffle(&r, prob, N);
    float logits[N];
    int counts[N];
    logits_from_probs(prob, N, logits);
    struct sample_params p = seeded_params(32);
    /* {0.4, 0.25} holds 0.65 < 0.75, {0.4, 0.25, 0.15} holds 0.8: the nucleus is three. */
    p.top_p = 0.75f;
    draw_counts(&p, logits, N, DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (prob[i] >= 0.15)
            ck_assert_int_gt(counts[i], DRAWS / 20);
        else
            ck_assert_int_eq(counts[i], 0);
    }
    /* 0.6 is reached by {0.4, 0.25}. */
    p.top_p = 0.6f;
    draw_counts(&p, logits, N, DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (prob[i] >= 0.25)
            ck_assert_int_gt(counts[i], DRAWS / 20);
        else
            ck_assert_int_eq(counts[i], 0);
    }
}
END_TEST

START_TEST(test_top_p_after_top_k)
{
    /* Top-p measures mass over what top-k left: with k = 2 the two best become {0.6, 0.4}, so
     * top_p = 0.45 keeps only the best. Over the full vocabulary (0.3 < 0.45) it keeps two. */
    double prob[] = {0.1, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1};
    float logits[7];
    int counts[7];
    logits_from_probs(prob, 7, logits);
    struct sample_params p = seeded_params(41);
    p.top_k = 2;
    p.top_p = 0.45f;
    draw_counts(&p, logits, 7, 2000, counts);
    ck_assert_int_eq(counts[1], 2000);
    p.top_k = 0;
    draw_counts(&p, logits, 7, 2000, counts);
    ck_assert_int_gt(counts[1], 0);
    ck_assert_int_gt(counts[3], 0);
    ck_assert_int_eq(counts[1] + counts[3], 2000);
}
END_TEST

/* A vocabulary whose nucleus is thousands of tokens, so the mass selection partitions many
 * times; with top_k 0 the light tail exercises the pre-filter, with top_k 3000 (above the heap
 * limit) the quickselect runs first and the mass is measured over what it kept. The nucleus
 * boundary is placed midway between two cumulative masses, and its last token is heavy enough
 * to be drawn. */
static void check_top_p_large(int top_k, uint64_t seed)
{
    enum { VOCAB = 8000, MEDIUM = 4000, DRAWS = 12000, M = 1000 };
    struct rng r;
    rng_seed(&r, seed);
    double *w = malloc(VOCAB * sizeof(*w));
    for (int i = 0; i < VOCAB; i++)
        w[i] = i < MEDIUM ? 1.0 - 1e-5 * i : 1e-7 * (1.0 + rng_next_double(&r));
    shuffle(&r, w, VOCAB);
    double total = 0;
    for (int i = 0; i < VOCAB; i++)
        total += w[i];
    float *logits = malloc(VOCAB * sizeof(*logits));
    double *keys = malloc(VOCAB * sizeof(*keys));
    for (int i = 0; i < VOCAB; i++) {
        logits[i] = (float)log(w[i] / total);
        keys[i] = logits[i]; /* rank by the float logits the sampler sees */
    }
    /* Reference probabilities from the float logits, in double, over the top-k set. */
    int *order = ranking(keys, VOCAB);
    int kept = top_k ? top_k : VOCAB;
    double z = 0;
    for (int k = 0; k < kept; k++)
        z += exp((double)logits[order[k]]);
    double cum_before = 0, cum_at = 0;
    for (int k = 0; k < M; k++) {
        cum_before = cum_at;
        cum_at += exp((double)logits[order[k]]) / z;
    }
    struct sample_params p = seeded_params(seed + 1);
    p.top_k = top_k;
    p.top_p = (float)((cum_before + cum_at) / 2);
    int *counts = malloc(VOCAB * sizeof(*counts));
    draw_counts(&p, logits, VOCAB, DRAWS, counts);
    int drawn_in = 0;
    for (int k = 0; k < VOCAB; k++) {
        if (k < M)
            drawn_in += counts[order[k]];
        else
            ck_assert_msg(counts[order[k]] == 0, "rank %d outside the nucleus drawn", k);
    }
    ck_assert_int_eq(drawn_in, DRAWS);
    ck_assert_int_gt(counts[order[M - 1]], 0); /* the boundary token is inside */
    free(order);
    free(counts);
    free(keys);
    free(logits);
    free(w);
}

START_TEST(test_top_p_large)
{
    check_top_p_large(0, 51);
    check_top_p_large(3000, 53);
}
END_TEST

START_TEST(test_min_p)
{
    enum { N = 6, DRAWS = 6000 };
    struct rng r;
    rng_seed(&r, 61);
    double prob[N] = {0.5, 0.2, 0.1, 0.09, 0.06, 0.05};
    shuffle(&r, prob, N);
    float logits[N];
    int counts[N];
    logits_from_probs(prob, N, logits);
    struct sample_params p = seeded_params(62);
    p.min_p = 0.19f; /* keeps p >= 0.095: {0.5, 0.2, 0.1} */
    draw_counts(&p, logits, N, DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (prob[i] >= 0.1)
            ck_assert_int_gt(counts[i], DRAWS / 30);
        else
            ck_assert_int_eq(counts[i], 0);
    }
    /* Temperature first: at T = 0.5 probabilities square (0.25 : 0.04 : 0.01 ...), so min_p 0.1
     * against the best's squared weight keeps only p_i^2 >= 0.025, i.e. {0.5, 0.2}. */
    p.temperature = 0.5f;
    p.min_p = 0.1f;
    draw_counts(&p, logits, N, DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (prob[i] >= 0.2)
            ck_assert_int_gt(counts[i], 0);
        else
            ck_assert_int_eq(counts[i], 0);
    }
    /* With top-p sorting first, min-p cuts the sorted set: top_p 0.85 keeps four, min-p two. */
    p.temperature = 1.0f;
    p.top_p = 0.85f;
    p.min_p = 0.3f;
    draw_counts(&p, logits, N, DRAWS, counts);
    for (int i = 0; i < N; i++) {
        if (prob[i] >= 0.2)
            ck_assert_int_gt(counts[i], 0);
        else
            ck_assert_int_eq(counts[i], 0);
    }
}
END_TEST

START_TEST(test_min_p_large)
{
    /* Min-p with top-k: off, through the heap (k <= 1024) and through quickselect. */
    enum { VOCAB = 50000, DRAWS = 1000 };
    struct rng r;
    rng_seed(&r, 71);
    float *logits = malloc(VOCAB * sizeof(*logits));
    double *keys = malloc(VOCAB * sizeof(*keys));
    random_logits(&r, logits, VOCAB, 8.0f);
    float max = logits[0];
    for (int i = 0; i < VOCAB; i++) {
        max = fmaxf(max, logits[i]);
        keys[i] = logits[i];
    }
    int *order = ranking(keys, VOCAB);
    int *rank = malloc(VOCAB * sizeof(*rank));
    for (int k = 0; k < VOCAB; k++)
        rank[order[k]] = k;
    int *counts = malloc(VOCAB * sizeof(*counts));
    const int top_ks[] = {0, 500, 25000};
    for (int t = 0; t < 3; t++) {
        struct sample_params p = seeded_params(72 + (uint64_t)t);
        p.min_p = 0.05f;
        p.top_k = top_ks[t];
        draw_counts(&p, logits, VOCAB, DRAWS, counts);
        int n_allowed = 0, n_edge = 0, drawn_near_edge = 0;
        for (int i = 0; i < VOCAB; i++) {
            double ratio = exp((double)logits[i] - max);
            bool in_k = top_ks[t] == 0 || rank[i] < top_ks[t];
            if (ratio < 0.0499 || !in_k)
                ck_assert_int_eq(counts[i], 0);
            n_allowed += ratio >= 0.05 && in_k;
            n_edge += ratio >= 0.05 && ratio < 0.07 && in_k;
            drawn_near_edge += ratio < 0.07 && counts[i] > 0;
        }
        ck_assert_int_gt(n_allowed, 400);
        if (n_edge > 0) /* where min-p is the binding cut, tokens just above it are drawn */
            ck_assert_int_gt(drawn_near_edge, 0);
        else
            ck_assert_int_eq(top_ks[t], 500);
    }
    free(counts);
    free(rank);
    free(order);
    free(keys);
    free(logits);
}
END_TEST

/* ---- distribution ------------------------------------------------------------------------- */

/* Pearson's chi-square of observed counts against expected probabilities. */
static double chi_square(const int *counts, const double *prob, int n, int draws)
{
    double chi = 0;
    for (int i = 0; i < n; i++) {
        if (prob[i] == 0) {
            ck_assert_int_eq(counts[i], 0);
            continue;
        }
        double e = prob[i] * draws;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

START_TEST(test_distribution_matches_softmax)
{
    enum { N = 10, DRAWS = 200000 };
    float logits[N] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f, 1.5f, 0.25f};
    int counts[N];
    double prob[N], z = 0;

    /* Temperature 1, no truncation: the softmax. 9 degrees of freedom; the chi-square
     * exceeds 40 with probability ~1e-5, and a biased sampler lands in the thousands. */
    for (int i = 0; i < N; i++)
        z += exp(logits[i]);
    for (int i = 0; i < N; i++)
        prob[i] = exp(logits[i]) / z;
    struct sample_params p = seeded_params(81);
    draw_counts(&p, logits, N, DRAWS, counts);
    double chi = chi_square(counts, prob, N, DRAWS);
    ck_assert_msg(chi < 40.0, "chi-square %.1f", chi);

    /* Temperature 0.7 and top-k 5: the softmax of logits / 0.7 over the five best. */
    z = 0;
    for (int i = 0; i < N; i++)
        prob[i] = logits[i] >= 1.0f ? exp(logits[i] / 0.7) : 0;
    for (int i = 0; i < N; i++)
        z += prob[i];
    for (int i = 0; i < N; i++)
        prob[i] /= z;
    p = seeded_params(82);
    p.temperature = 0.7f;
    p.top_k = 5;
    draw_counts(&p, logits, N, DRAWS, counts);
    chi = chi_square(counts, prob, N, DRAWS);
    ck_assert_msg(chi < 35.0, "chi-square %.1f (4 dof)", chi);
}
END_TEST

/* ---- penalties ---------------------------------------------------------------------------- */

START_TEST(test_penalties_formula)
{
    enum { N = 12 };
    struct sample_params p = seeded_params(91);
    p.repetition_penalty = 1.3f;
    p.penalty_last_n = -1;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    struct sampler *s = make_sampler(&p);
    int32_t prompt[] = {5, 5, 7, 0};
    int32_t output[] = {7, 9, 9, 9, 2, 40}; /* 40 is beyond the vocabulary: ignored */
    sampler_accept_prompt(s, prompt, 4);
    for (int i = 0; i < 6; i++)
        sampler_accept(s, output[i]);

    float logits[N] = {2.0f, -1.0f, -0.5f, 0.3f, 1.0f, 3.0f, -2.0f, 0.0f, 1.5f, 4.0f, -3.0f, 0.7f};
    float orig[N];
    memcpy(orig, logits, sizeof(orig));
    sampler_apply_penalties(s, logits, N);
    /* Window (prompt + output): {0, 2, 5, 7, 9}; output counts: 7:1, 9:3, 2:1. */
    const int in_window[N] = {1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0};
    const int out_count[N] = {0, 0, 1, 0, 0, 0, 0, 1, 0, 3, 0, 0};
    for (int i = 0; i < N; i++) {
        double want = orig[i];
        if (in_window[i])
            want = want > 0 ? want / 1.3 : want * 1.3;
        if (out_count[i])
            want -= out_count[i] * 0.25 + 0.5;
        ck_assert_msg(fabs(logits[i] - want) < 1e-6, "token %d: %f, want %f", i, logits[i], want);
    }
    /* Sampling applies the same penalties to its input. */
    float again[N];
    memcpy(again, orig, sizeof(again));
    struct sample_result r;
    ck_assert_int_ge(sampler_sample(s, again, N, &r), 0);
    ck_assert(memcmp(again, logits, sizeof(again)) == 0);
    sampler_destroy(s);

    /* Penalties steer greedy decoding away from a repeated token. */
    p = seeded_params(92);
    p.temperature = 0.0f;
    p.frequency_penalty = 1.0f;
    s = make_sampler(&p);
    float two[] = {2.5f, 1.0f};
    int32_t seq[4];
    for (int i = 0; i < 4; i++) {
        seq[i] = sample_copy(s, two, 2, &r);
        sampler_accept(s, seq[i]);
    }
    /* 2.5 -> 1.5 -> 0.5 (< 1.0: token 1) -> token 1 at 0.0, token 0 at 0.5. */
    ck_assert_int_eq(seq[0], 0);
    ck_assert_int_eq(seq[1], 0);
    ck_assert_int_eq(seq[2], 1);
    ck_assert_int_eq(seq[3], 0);
    sampler_destroy(s);
}
END_TEST

/* The repetition window slides: compare against a recount of the last n tokens at every step
 * (exercises deletion from the sampler's token table). */
START_TEST(test_penalty_window_slides)
{
    enum { N = 50, WINDOW = 17, STEPS = 5000 };
    struct sample_params p = seeded_params(101);
    p.repetition_penalty = 2.0f;
    p.penalty_last_n = WINDOW;
    struct sampler *s = make_sampler(&p);
    struct rng r;
    rng_seed(&r, 102);
    int32_t *hist = malloc(STEPS * sizeof(*hist));
    float logits[N], orig[N];
    for (int i = 0; i < N; i++)
        orig[i] = (float)i - 20.5f; /* both signs, never zero */
    for (int step = 0; step < STEPS; step++) {
        /* Skewed draws so tokens repeat inside the window. */
        int32_t t = (int32_t)(rng_next_u64(&r) % (step % 3 ? 8 : N));
        hist[step] = t;
        if (step % 2)
            sampler_accept(s, t);
        else
            sampler_accept_prompt(s, &t, 1);
        memcpy(logits, orig, sizeof(orig));
        sampler_apply_penalties(s, logits, N);
        char seen[N] = {0};
        for (int k = step; k >= 0 && k > step - WINDOW; k--)
            seen[hist[k]] = 1;
        for (int i = 0; i < N; i++) {
            float want = seen[i] ? (orig[i] > 0 ? orig[i] / 2.0f : orig[i] * 2.0f) : orig[i];
            ck_assert_msg(logits[i] == want, "step %d token %d: %f, want %f", step, i, logits[i],
                          want);
        }
    }
    free(hist);
    sampler_destroy(s);
}
END_TEST

/* ---- logprobs ----------------------------------------------------------------------------- */

START_TEST(test_logprobs)
{
    enum { VOCAB = 2000 };
    struct rng r;
    rng_seed(&r, 111);
    float *logits = malloc(VOCAB * sizeof(*logits));
    double *lp = malloc(VOCAB * sizeof(*lp));
    const float temps[] = {0.0f, 1.0f, 0.5f};
    for (int round = 0; round < 3; round++) {
        struct sample_params p = seeded_params(112 + (uint64_t)round);
        p.temperature = temps[round];
        p.top_p = round == 2 ? 0.9f : 1.0f;
        p.logprobs = true;
        p.n_logprobs = SAMPLE_MAX_LOGPROBS;
        struct sampler *s = make_sampler(&p);
        for (int step = 0; step < 20; step++) {
            random_logits(&r, logits, VOCAB, 6.0f);
            logits[step] = logits[step + 1]; /* a tie, so the order of equals is checked */
            logits[VOCAB - 1] = -INFINITY;   /* masked: never an alternative */
            double max = -INFINITY, z = 0;
            for (int i = 0; i < VOCAB - 1; i++)
                max = fmax(max, logits[i]);
            for (int i = 0; i < VOCAB - 1; i++)
                z += exp((double)logits[i] - max);
            for (int i = 0; i < VOCAB - 1; i++)
                lp[i] = (double)logits[i] - max - log(z);
            lp[VOCAB - 1] = -INFINITY;
            int *order = ranking(lp, VOCAB);

            struct sample_result res;
            int32_t t = sample_copy(s, logits, VOCAB, &res);
            ck_assert_msg(fabs(res.logprob - lp[t]) < 1e-5, "chosen %d: %f vs %f", t, res.logprob,
                          lp[t]);
            ck_assert_int_eq(res.n_top, SAMPLE_MAX_LOGPROBS);
            for (int k = 0; k < res.n_top; k++) {
                ck_assert_int_eq(res.top[k].token, order[k]);
                ck_assert(fabs(res.top[k].logprob - lp[order[k]]) < 1e-5);
            }
            free(order);
        }
        sampler_destroy(s);
    }

    /* Fewer finite logits than requested alternatives; logprobs off leaves zeroes. */
    struct sample_params p = seeded_params(120);
    p.logprobs = true;
    p.n_logprobs = 5;
    struct sampler *s = make_sampler(&p);
    float few[] = {-INFINITY, 0.0f, -INFINITY, 0.0f};
    struct sample_result res;
    int32_t t = sample_copy(s, few, 4, &res);
    ck_assert(t == 1 || t == 3);
    ck_assert_int_eq(res.n_top, 2);
    ck_assert_int_eq(res.top[0].token, 1);
    ck_assert_int_eq(res.top[1].token, 3);
    ck_assert(fabs(res.logprob - log(0.5)) < 1e-6);
    sampler_destroy(s);
    p.logprobs = false;
    s = make_sampler(&p);
    t = sample_copy(s, few, 4, &res);
    ck_assert(t == 1 || t == 3);
    ck_assert_int_eq(res.n_top, 0);
    ck_assert(res.logprob == 0.0f);
    sampler_destroy(s);
    free(lp);
    free(logits);
}
END_TEST

static Suite *sample_suite(void)
{
    Suite *s = suite_create("sample");
    TCase *tc = tcase_create("basics");
    tcase_add_test(tc, test_params_validate);
    tcase_add_test(tc, test_rng_reproducible);
    tcase_add_test(tc, test_seeded_runs_reproduce);
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_low_temperature_is_greedy);
    tcase_add_test(tc, test_no_choice);
    suite_add_tcase(s, tc);
    tc = tcase_create("parts");
    tcase_add_test(tc, test_exp);
    tcase_add_test(tc, test_select_and_heap);
    tcase_add_test(tc, test_top_p_selection);
    tcase_add_test(tc, test_pick);
    suite_add_tcase(s, tc);
    tc = tcase_create("top_k");
    tcase_add_test(tc, test_top_k);
    suite_add_tcase(s, tc);
    tc = tcase_create("top_p");
    tcase_add_test(tc, test_top_p_small);
    tcase_add_test(tc, test_top_p_after_top_k);
    tcase_add_test(tc, test_top_p_large);
    suite_add_tcase(s, tc);
    tc = tcase_create("min_p");
    tcase_add_test(tc, test_min_p);
    tcase_add_test(tc, test_min_p_large);
    suite_add_tcase(s, tc);
    tc = tcase_create("distribution");
    tcase_add_test(tc, test_distribution_matches_softmax);
    suite_add_tcase(s, tc);
    tc = tcase_create("penalties");
    tcase_add_test(tc, test_penalties_formula);
    tcase_add_test(tc, test_penalty_window_slides);
    suite_add_tcase(s, tc);
    tc = tcase_create("logprobs");
    tcase_add_test(tc, test_logprobs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sample_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
