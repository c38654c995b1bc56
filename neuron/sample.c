/*
 * neuron/sample.c — token sampling: penalties, temperature, top-k, top-p, min-p, logprobs.
 *
 * See sample.h for the order of operations and the guarantees. Each draw computes the weight
 * e^((logit - max) / temperature) of every token once, into scratch, with a vectorised exp of its
 * own (sample_exp); truncation then works on candidates (logit, id) ranked by one strict total
 * order, sample_better(): higher logit first, then lower id, and looks weights up by id. Every
 * sum runs in a fixed order, so a seeded draw is the same on every run.
 */
#include "sample.h"

#include "rng.h"
#include "sample_internal.h"
#include "xalloc.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Token -> count, open addressing with linear probing; keys are ids >= 0, -1 marks a free
 * slot. Deletion shifts the following run back, so no tombstones accumulate while a sliding
 * repetition window adds and removes tokens forever. */
struct token_counts {
    int32_t *key;
    int32_t *count;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

struct sampler {
    struct sample_params p;
    struct rng rng;
    uint64_t seed;
    struct token_counts output; /* generated tokens, for presence/frequency penalties */
    struct token_counts window; /* tokens in the repetition window */
    int32_t *ring;              /* the window's tokens, oldest at ring_head, when last_n > 0 */
    size_t ring_len, ring_head;
    float *w;                      /* scratch: a weight per vocabulary entry */
    struct sample_candidate *cand; /* scratch: candidates, as many */
    size_t scratch_cap;
};

/* ---- token counts ------------------------------------------------------------------------- */

static size_t token_counts_home(const struct token_counts *c, int32_t key)
{
    return ((uint32_t)key * 0x9e3779b1u) & (c->cap - 1);
}

static void token_counts_grow(struct token_counts *c)
{
    struct token_counts old = *c;
    c->cap = old.cap ? old.cap * 2 : 64;
    c->key = xmalloc(c->cap * sizeof(*c->key));
    c->count = xmalloc(c->cap * sizeof(*c->count));
    memset(c->key, 0xff, c->cap * sizeof(*c->key)); /* every slot -1 */
    for (size_t i = 0; i < old.cap; i++) {
        if (old.key[i] < 0)
            continue;
        size_t j = token_counts_home(c, old.key[i]);
        while (c->key[j] >= 0)
            j = (j + 1) & (c->cap - 1);
        c->key[j] = old.key[i];
        c->count[j] = old.count[i];
    }
    free(old.key);
    free(old.count);
}

/* Returns the slot holding key, or the free slot where it would go. */
static size_t token_counts_slot(const struct token_counts *c, int32_t key)
{
    size_t i = token_counts_home(c, key);
    while (c->key[i] >= 0 && c->key[i] != key)
        i = (i + 1) & (c->cap - 1);
    return i;
}

static void token_counts_add(struct token_counts *c, int32_t key)
{
    if (2 * (c->n + 1) > c->cap)
        token_counts_grow(c);
    size_t i = token_counts_slot(c, key);
    if (c->key[i] < 0) {
        c->key[i] = key;
        c->count[i] = 0;
        c->n++;
    }
    c->count[i]++;
}

/* Takes one occurrence of key away; the key must be present. */
static void token_counts_drop(struct token_counts *c, int32_t key)
{
    size_t mask = c->cap - 1;
    size_t i = token_counts_slot(c, key);
    assert(c->key[i] == key);
    if (--c->count[i] > 0)
        return;
    c->n--;
    /* Backward-shift deletion: move later members of the probe run into the hole unless their
     * home lies cyclically in (hole, j], where they must stay to remain reachable. */
    for (size_t j = (i + 1) & mask; c->key[j] >= 0; j = (j + 1) & mask) {
        size_t h = token_counts_home(c, c->key[j]);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        c->key[i] = c->key[j];
        c->count[i] = c->count[j];
        i = j;
    }
    c->key[i] = -1;
}

static void token_counts_free(struct token_counts *c)
{
    free(c->key);
    free(c->count);
}

/* ---- parameters and lifetime -------------------------------------------------------------- */

void sample_params_init(struct sample_params *p)
{
    *p = (struct sample_params){
            .temperature = 1.0f,
            .top_k = 0,
            .top_p = 1.0f,
            .min_p = 0.0f,
            .presence_penalty = 0.0f,
            .frequency_penalty = 0.0f,
            .repetition_penalty = 1.0f,
            .penalty_last_n = 64,
    };
}

int sample_params_validate(const struct sample_params *p, char *err, size_t errlen)
{
    const char *msg = NULL;
    if (!(isfinite(p->temperature) && p->temperature >= 0.0f))
        msg = "temperature must be a finite number >= 0";
    else if (p->top_k < 0)
        msg = "top_k must be >= 0";
    else if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        msg = "top_p must be between 0 and 1";
    else if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        msg = "min_p must be between 0 and 1";
    else if (!isfinite(p->presence_penalty))
        msg = "presence_penalty must be finite";
    else if (!isfinite(p->frequency_penalty))
        msg = "frequency_penalty must be finite";
    else if (!(isfinite(p->repetition_penalty) && p->repetition_penalty > 0.0f))
        msg = "repetition_penalty must be a finite number > 0";
    else if (p->penalty_last_n < -1)
        msg = "penalty_last_n must be -1 (all tokens), 0 (none) or a window length";
    else if (p->n_logprobs < 0 || p->n_logprobs > SAMPLE_MAX_LOGPROBS)
        msg = "n_logprobs must be between 0 and 20";
    if (!msg)
        return 0;
    if (errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

struct sampler *sampler_create(const struct sample_params *p)
{
    char err[128];
    int valid = sample_params_validate(p, err, sizeof(err));
    assert(valid == 0 && "sampler_create: parameters not validated");
    (void)valid;

    struct sampler *s = xcalloc(1, sizeof(*s));
    s->p = *p;
    if (p->has_seed) {
        s->seed = p->seed;
        rng_seed(&s->rng, p->seed);
    } else {
        s->seed = rng_seed_entropy(&s->rng);
    }
    if (p->penalty_last_n > 0 && p->repetition_penalty != 1.0f)
        s->ring = xmalloc((size_t)p->penalty_last_n * sizeof(*s->ring));
    return s;
}

void sampler_destroy(struct sampler *s)
{
    if (!s)
        return;
    token_counts_free(&s->output);
    token_counts_free(&s->window);
    free(s->ring);
    free(s->w);
    free(s->cand);
    free(s);
}

uint64_t sampler_seed(const struct sampler *s)
{
    return s->seed;
}

/* ---- penalties ---------------------------------------------------------------------------- */

static void sampler_window_push(struct sampler *s, int32_t token)
{
    if (s->p.repetition_penalty == 1.0f || s->p.penalty_last_n == 0)
        return;
    token_counts_add(&s->window, token);
    if (s->p.penalty_last_n < 0)
        return;
    size_t n = (size_t)s->p.penalty_last_n;
    if (s->ring_len < n) {
        s->ring[(s->ring_head + s->ring_len++) % n] = token;
        return;
    }
    token_counts_drop(&s->window, s->ring[s->ring_head]);
    s->ring[s->ring_head] = token;
    s->ring_head = (s->ring_head + 1) % n;
}

void sampler_accept_prompt(struct sampler *s, const int32_t *tokens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= 0)
            sampler_window_push(s, tokens[i]);
}

void sampler_accept(struct sampler *s, int32_t token)
{
    if (token < 0)
        return;
    sampler_window_push(s, token);
    if (s->p.presence_penalty != 0.0f || s->p.frequency_penalty != 0.0f)
        token_counts_add(&s->output, token);
}

void sampler_apply_penalties(const struct sampler *s, float *logits, int n_vocab)
{
    const struct token_counts *w = &s->window;
    float rp = s->p.repetition_penalty;
    for (size_t i = 0; i < w->cap; i++) {
        int32_t t = w->key[i];
        if (t < 0 || t >= n_vocab)
            continue;
        logits[t] = logits[t] > 0.0f ? logits[t] / rp : logits[t] * rp;
    }
    const struct token_counts *o = &s->output;
    for (size_t i = 0; i < o->cap; i++) {
        int32_t t = o->key[i];
        if (t < 0 || t >= n_vocab)
            continue;
        logits[t] -= (float)o->count[i] * s->p.frequency_penalty + s->p.presence_penalty;
    }
}

/* ---- weights ------------------------------------------------------------------------------ */

/* w[i] = e^((logits[i] - max) / temp), 0 for masked and non-finite logits. The fixed blocks of
 * 8 let GCC vectorise at -O2, whose cost model rejects loops that would need a scalar tail. */
static void sample_weights(const float *restrict logits, float *restrict w, size_t n, float max,
                           float temp)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t j = 0; j < 8; j++)
            w[i + j] = sample_exp((logits[i + j] - max) / temp);
    for (; i < n; i++)
        w[i] = sample_exp((logits[i] - max) / temp);
}

/* Sum of w[0..n) in double, over four interleaved accumulators (a fixed order, so the same
 * bits every time, and no single chain of dependent additions). */
static double sample_sum(const float *w, size_t n)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (size_t j = 0; j < 4; j++)
            a[j] += w[i + j];
    for (; i < n; i++)
        a[0] += w[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* Draws an index of w[0..n) with probability w[i] / sum(w); u is uniform in [0, 1). Walks
 * whole blocks by their sums, then the one block that holds the target, so a draw over the full
 * vocabulary costs about one and a half summing passes. */
#define SAMPLE_PICK_BLOCK 512
size_t sample_pick(const float *w, size_t n, double u)
{
    double total = 0.0;
    for (size_t b = 0; b < n; b += SAMPLE_PICK_BLOCK)
        total += sample_sum(w + b, n - b < SAMPLE_PICK_BLOCK ? n - b : SAMPLE_PICK_BLOCK);
    double target = u * total, cum = 0.0;
    size_t last = n; /* the last index with weight seen so far */
    for (size_t b = 0; b < n; b += SAMPLE_PICK_BLOCK) {
        size_t end = n - b < SAMPLE_PICK_BLOCK ? n : b + SAMPLE_PICK_BLOCK;
        double block = sample_sum(w + b, end - b);
        if (cum + block <= target) {
            cum += block;
            for (size_t i = end; i > b && block > 0.0; i--) {
                if (w[i - 1] > 0.0f) {
                    last = i - 1;
                    break;
                }
            }
            continue;
        }
        for (size_t i = b; i < end; i++) {
            if (w[i] <= 0.0f)
                continue;
            last = i;
            cum += w[i];
            if (cum > target)
                return i;
        }
        return last; /* the block's sum and its walk rounded differently */
    }
    return last; /* target rounded up to the total */
}

/* ---- ranking ------------------------------------------------------------------------------ */

static inline bool sample_better(struct sample_candidate a, struct sample_candidate b)
{
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

static int sample_candidate_cmp(const void *pa, const void *pb)
{
    const struct sample_candidate *a = pa, *b = pb;
    if (sample_better(*a, *b))
        return -1;
    return sample_better(*b, *a) ? 1 : 0;
}

static inline void sample_swap(struct sample_candidate *a, struct sample_candidate *b)
{
    struct sample_candidate t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi) (at least 2 entries) around the median of its first, middle and last
 * entries; returns the pivot's final index p: c[lo..p) rank above it, c[p+1..hi) below.
 * Hoare-style scans from both ends; the best of the three, left at lo, stops the downward scan
 * and the pivot, parked at the end, the upward one. */
static size_t sample_partition(struct sample_candidate *c, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (hi - lo == 2) {
        if (sample_better(c[last], c[lo]))
            sample_swap(&c[last], &c[lo]);
        return lo;
    }
    if (sample_better(c[mid], c[lo]))
        sample_swap(&c[mid], &c[lo]);
    if (sample_better(c[last], c[lo]))
        sample_swap(&c[last], &c[lo]);
    if (sample_better(c[last], c[mid]))
        sample_swap(&c[last], &c[mid]);
    sample_swap(&c[mid], &c[last]);
    struct sample_candidate pivot = c[last];
    size_t i = lo, j = last;
    for (;;) {
        while (sample_better(c[i], pivot))
            i++;
        do
            j--;
        while (sample_better(pivot, c[j]));
        if (i >= j)
            break;
        sample_swap(&c[i++], &c[j]);
    }
    sample_swap(&c[i], &c[last]);
    return i;
}

/* A bound on partitioning rounds before falling back to a sort: about 2 log2(n) + 8, far above
 * what median-of-three needs on any ordinary input, so the worst case stays O(n log n). */
static int sample_round_budget(size_t n)
{
    int budget = 8;
    for (; n > 1; n >>= 1)
        budget += 2;
    return budget;
}

/* Rearranges c[0..n) so that its k best candidates come first, in no particular order but the
 * same on every run (quickselect). */
void sample_select(struct sample_candidate *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    int budget = sample_round_budget(n);
    while (k > lo && k < hi && hi - lo > 1) {
        if (budget-- == 0) {
            qsort(c + lo, hi - lo, sizeof(*c), sample_candidate_cmp);
            return;
        }
        size_t p = sample_partition(c, lo, hi);
        if (k <= p)
            hi = p; /* c[p..) are out; the boundary lies in c[lo..p) */
        else
            lo = p + 1; /* c[..p] are in */
    }
}

/* Top-k for small k without gathering the vocabulary: streams the tokens whose weight is
 * positive and >= floor through a heap of the k best (root = the worst of them), so nearly every
 * token costs one comparison with the root. Fills c[0..k) in heap order; returns how many. */
static void sample_heap_sift_down(struct sample_candidate *c, size_t n, size_t i)
{
    for (;;) {
        size_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && sample_better(c[worst], c[l]))
            worst = l;
        if (r < n && sample_better(c[worst], c[r]))
            worst = r;
        if (worst == i)
            return;
        sample_swap(&c[i], &c[worst]);
        i = worst;
    }
}

size_t sample_top_k_heap(struct sample_candidate *c, const float *logits, const float *w,
                         size_t n_vocab, float floor, size_t k)
{
    size_t n = 0;
    for (size_t i = 0; i < n_vocab; i++) {
        struct sample_candidate cand = {.v = logits[i], .id = (int32_t)i};
        if (n == k && !sample_better(cand, c[0]))
            continue;
        if (!(w[i] > 0.0f && w[i] >= floor))
            continue;
        if (n == k) {
            c[0] = cand;
            sample_heap_sift_down(c, n, 0);
            continue;
        }
        size_t j = n++;
        c[j] = cand;
        while (j > 0 && sample_better(c[(j - 1) / 2], c[j])) {
            sample_swap(&c[(j - 1) / 2], &c[j]);
            j = (j - 1) / 2;
        }
    }
    return n;
}

/* Top-p over c[0..n): moves the nucleus, the shortest prefix of the ranking whose weight is
 * >= target, to the front and returns its length. Quickselect on mass instead of a sort: each
 * partition either shows that the entries above the pivot already reach the target (recurse
 * into them) or adds them and the pivot to the nucleus (recurse below), so a nucleus of any size
 * costs linear expected time; the last few entries are sorted and scanned. */
size_t sample_top_p(struct sample_candidate *c, size_t n, const float *w, double target)
{
    size_t lo = 0, hi = n; /* c[0..lo) are in with mass cum; c[hi..n) are out */
    double cum = 0.0;
    int budget = sample_round_budget(n);
    while (hi - lo > 16 && budget-- > 0) {
        size_t p = sample_partition(c, lo, hi);
        double above = 0.0;
        for (size_t i = lo; i < p; i++)
            above += w[c[i].id];
        if (cum + above >= target) {
            hi = p;
        } else {
            cum += above + w[c[p].id];
            if (cum >= target)
                return p + 1;
            lo = p + 1;
        }
    }
    qsort(c + lo, hi - lo, sizeof(*c), sample_candidate_cmp);
    for (size_t i = lo; i < hi; i++) {
        cum += w[c[i].id];
        if (cum >= target)
            return i + 1;
    }
    return hi; /* rounding kept the sum just short: keep everything not ruled out */
}

/* ---- sampling ----------------------------------------------------------------------------- */

static int32_t sample_argmax(const float *logits, int n_vocab)
{
    int32_t best = -1;
    float best_v = 0.0f;
    for (int i = 0; i < n_vocab; i++) {
        float v = logits[i];
        if (isfinite(v) && (best < 0 || v > best_v)) {
            best = i;
            best_v = v;
        }
    }
    return best;
}

static void sampler_reserve(struct sampler *s, size_t n_vocab)
{
    if (s->scratch_cap >= n_vocab)
        return;
    free(s->w);
    free(s->cand);
    s->scratch_cap = n_vocab;
    s->w = xmalloc(n_vocab * sizeof(*s->w));
    s->cand = xmalloc(n_vocab * sizeof(*s->cand));
}

static int32_t sample_stochastic(struct sampler *s, const float *logits, size_t n_vocab, float max)
{
    const struct sample_params *p = &s->p;
    float *w = s->w;
    sample_weights(logits, w, n_vocab, max, p->temperature);
    bool top_k = p->top_k > 0 && (size_t)p->top_k < n_vocab;
    bool top_p = p->top_p<1.0f, min_p = p->min_p> 0.0f;
    if (!top_k && !top_p && !min_p)
        return (int32_t)sample_pick(w, n_vocab, rng_next_double(&s->rng));

    /* Candidates: tokens with weight, a prefix of the ranking since weight grows with the
     * logit. Min-p and top-k both keep prefixes of that ranking, so they commute and min-p can
     * act here, unless top-p must first see the whole mass. Without top-k, top-p can drop most
     * tokens here too: the last token of a nucleus of m weighs at least
     * (Z - cum_{m-1}) / (n - m + 1), the rest divided among tokens no heavier, and that is
     * > Z (1 - top_p) / n since cum_{m-1} < top_p Z; tokens lighter than the bound (halved to
     * absorb rounding) lie outside, and dropping them changes neither the ranking of the others
     * nor the target, which keeps the full mass Z. */
    struct sample_candidate *c = s->cand;
    size_t n = 0, k = top_k ? (size_t)p->top_k : 0;
    float floor = min_p && !top_p ? p->min_p : 0.0f;
    double z = 0.0;
    if (top_p && !top_k) {
        z = sample_sum(w, n_vocab);
        floor = (float)(0.5 * z * (1.0 - (double)p->top_p) / (double)n_vocab);
    }
    if (top_k && k <= SAMPLE_HEAP_MAX_K) {
        n = sample_top_k_heap(c, logits, w, n_vocab, floor, k);
    } else {
        for (size_t i = 0; i < n_vocab; i++)
            if (w[i] > 0.0f && w[i] >= floor)
                c[n++] = (struct sample_candidate){.v = logits[i], .id = (int32_t)i};
        if (top_k && k < n) {
            sample_select(c, n, k);
            n = k;
        }
    }
    if (top_p) {
        if (top_k)
            for (size_t i = 0; i < n; i++)
                z += w[c[i].id];
        n = sample_top_p(c, n, w, (double)p->top_p * z);
        if (min_p) {
            size_t kept = 0;
            for (size_t i = 0; i < n; i++)
                if (w[c[i].id] >= p->min_p)
                    c[kept++] = c[i];
            n = kept;
        }
    }
    assert(n > 0); /* the best token has weight 1 and survives every step */

    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += w[c[i].id];
    double target = rng_next_double(&s->rng) * total, cum = 0.0;
    int32_t last = c[0].id;
    for (size_t i = 0; i < n; i++) {
        cum += w[c[i].id];
        last = c[i].id;
        if (cum > target)
            break;
    }
    return last;
}

/* Log-softmax over the finite logits; fills the chosen token's and the top alternatives'. */
static void sample_logprobs(struct sampler *s, const float *logits, size_t n_vocab, float max,
                            int32_t chosen, struct sample_result *out)
{
    sample_weights(logits, s->w, n_vocab, max, 1.0f);
    double log_z = (double)max + log(sample_sum(s->w, n_vocab));
    out->logprob = (float)((double)logits[chosen] - log_z);

    /* The best n_logprobs, kept sorted by insertion: most logits fail the first comparison. */
    int n_top = 0, want = s->p.n_logprobs;
    struct sample_candidate best[SAMPLE_MAX_LOGPROBS];
    for (size_t i = 0; i < n_vocab && want > 0; i++) {
        struct sample_candidate cand = {.v = logits[i], .id = (int32_t)i};
        if (!isfinite(cand.v))
            continue;
        if (n_top == want && !sample_better(cand, best[n_top - 1]))
            continue;
        int pos = n_top < want ? n_top++ : n_top - 1;
        while (pos > 0 && sample_better(cand, best[pos - 1])) {
            best[pos] = best[pos - 1];
            pos--;
        }
        best[pos] = cand;
    }
    out->n_top = n_top;
    for (int i = 0; i < n_top; i++)
        out->top[i] = (struct sample_logprob){
                .token = best[i].id,
                .logprob = (float)((double)best[i].v - log_z),
        };
}

int32_t sampler_sample(struct sampler *s, float *logits, int n_vocab, struct sample_result *out)
{
    if (n_vocab <= 0)
        return -1;
    sampler_apply_penalties(s, logits, n_vocab);
    int32_t top = sample_argmax(logits, n_vocab);
    if (top < 0)
        return -1;
    float max = logits[top];

    const struct sample_params *p = &s->p;
    bool greedy = p->temperature <= 0.0f || p->top_k == 1 || p->top_p <= 0.0f;
    if (!greedy || p->logprobs)
        sampler_reserve(s, (size_t)n_vocab);
    int32_t token = greedy ? top : sample_stochastic(s, logits, (size_t)n_vocab, max);

    memset(out, 0, sizeof(*out));
    out->token = token;
    if (p->logprobs)
        sample_logprobs(s, logits, (size_t)n_vocab, max, token, out);
    return token;
}
