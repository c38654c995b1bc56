/*
 * neuron/generate.c — the generation loop: prompt chunks and decode steps, sampling, text
 * (see generate.h for the contract).
 */
#include "generate.h"

#include "buf.h"
#include "prefix_cache.h"
#include "stop.h"
#include "timing.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct generation {
    struct engine *e;
    struct model_seq *seq; /* freed as soon as the generation finishes */
    int32_t *prompt;
    size_t n_prompt, n_fed;  /* prompt tokens, and how many the model has read */
    size_t n_cached;         /* of which came from a saved prefix */
    struct prefix_cache *pc; /* borrowed; NULL: no prefix caching */
    int32_t *tokens;         /* sampled tokens; the last one is the next the model reads */
    size_t n_tokens, cap_tokens;
    int64_t max_tokens;
    bool ignore_eos;

    struct sampler *sampler;
    struct stop_matcher *stop; /* NULL without stop strings */
    bool stopped_by_string;
    int stop_index; /* the matched stop string, or -1 */
    struct tokenizer_stream *detok;
    struct tool_call_stream *tool_stream; /* NULL without tools */
    bool sample_logprobs;

    enum gen_finish finish;
    bool saw_calls;

    /* output since the last clear */
    struct buf text;
    struct tool_call *calls;
    size_t n_calls, cap_calls;
    struct gen_logprob *logprobs;
    size_t n_logprobs, cap_logprobs;

    /* timing */
    uint64_t t_first_pass, t_prompt_done;
    double prompt_ms, decode_ms;
};

void gen_params_init(struct gen_params *p)
{
    memset(p, 0, sizeof *p);
    sample_params_init(&p->sample);
}

const char *gen_finish_name(enum gen_finish f)
{
    switch (f) {
    case GEN_FINISH_STOP:
        return "stop";
    case GEN_FINISH_LENGTH:
        return "length";
    case GEN_FINISH_TOOL_CALLS:
        return "tool_calls";
    case GEN_FINISH_CANCELLED:
        return "cancelled";
    case GEN_FINISH_NONE:
        break;
    }
    return NULL;
}

int generation_create(struct engine *e, const int32_t *prompt, size_t n_prompt,
                      const struct gen_params *p, struct generation **out, char *err, size_t errlen)
{
    *out = NULL;
    int64_t ctx = model_max_context(e->model);
    if (n_prompt == 0) {
        snprintf(err, errlen, "the prompt is empty");
        return -1;
    }
    if ((int64_t)n_prompt >= ctx) {
        snprintf(err, errlen,
                 "prompt is too long: %zu tokens, and the context holds %lld tokens "
                 "(prompt plus answer)",
                 n_prompt, (long long)ctx);
        return -1;
    }
    if (sample_params_validate(&p->sample, err, errlen) != 0)
        return -1;
    int32_t vocab = tokenizer_vocab_size(e->tok);
    for (size_t i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= model_config(e->model)->vocab_size) {
            snprintf(err, errlen, "prompt token %zu has id %d, outside the vocabulary (%d)", i,
                     prompt[i], vocab);
            return -1;
        }
    }
    struct model_seq *seq = model_seq_create(e->model);
    if (!seq) {
        snprintf(err, errlen, "no room for another sequence on %s", model_device(e->model));
        return -1;
    }
    struct generation *g = xcalloc(1, sizeof *g);
    g->e = e;
    g->seq = seq;
    g->prompt = xmalloc(n_prompt * sizeof *g->prompt);
    memcpy(g->prompt, prompt, n_prompt * sizeof *g->prompt);
    g->n_prompt = n_prompt;
    g->max_tokens = p->max_tokens;
    g->ignore_eos = p->ignore_eos;
    g->sampler = sampler_create(&p->sample);
    sampler_accept_prompt(g->sampler, prompt, n_prompt);
    g->sample_logprobs = p->sample.logprobs;
    g->stop_index = -1;
    if (p->n_stops)
        g->stop = stop_matcher_create(p->stops, p->n_stops);
    g->detok = tokenizer_stream_create(e->tok, 0);
    if (p->tools)
        g->tool_stream = tool_call_stream_create(p->tools);
    buf_init(&g->text);
    *out = g;
    return 0;
}

static void generation_prefix_free(void *value)
{
    model_prefix_destroy(value);
}

static uint64_t generation_prefix_bytes(const void *value)
{
    return model_prefix_bytes(value);
}

struct prefix_cache *generation_prefix_cache_create(struct engine *e, uint64_t budget_bytes,
                                                    int64_t interval)
{
    if (budget_bytes == 0)
        return NULL;
    int64_t granule = model_prefix_granule(e->model);
    if (interval < granule)
        interval = granule;
    interval = (interval + granule - 1) / granule * granule;
    struct prefix_cache_options o = {
            .budget_bytes = budget_bytes,
            .interval = interval,
            .free_value = generation_prefix_free,
            .value_bytes = generation_prefix_bytes,
    };
    return prefix_cache_create(&o);
}

int64_t generation_use_prefix_cache(struct generation *g, struct prefix_cache *pc, char *err,
                                    size_t errlen)
{
    g->pc = pc;
    if (!pc || g->n_fed > 0 || g->finish != GEN_FINISH_NONE)
        return 0;
    int64_t length;
    const struct model_prefix *p = prefix_cache_lookup(pc, g->prompt, (int64_t)g->n_prompt,
                                                       (int64_t)g->n_prompt - 1, &length);
    if (!p)
        return 0;
    if (model_prefix_restore(g->seq, p, err, errlen) != 0) {
        model_seq_reset(g->seq);
        return -1;
    }
    g->n_fed = g->n_cached = (size_t)length;
    return length;
}

static void generation_clear_calls(struct generation *g)
{
    for (size_t i = 0; i < g->n_calls; i++) {
        free(g->calls[i].name);
        free(g->calls[i].arguments);
    }
    g->n_calls = 0;
}

void generation_destroy(struct generation *g)
{
    if (!g)
        return;
    model_seq_destroy(g->seq);
    free(g->prompt);
    free(g->tokens);
    sampler_destroy(g->sampler);
    stop_matcher_destroy(g->stop);
    tokenizer_stream_destroy(g->detok);
    tool_call_stream_destroy(g->tool_stream);
    buf_free(&g->text);
    generation_clear_calls(g);
    free(g->calls);
    free(g->logprobs);
    free(g);
}

/* Appends visible text to the output, through the tool-call parser when tools were offered. */
static void generation_emit(struct generation *g, const char *text, size_t len, bool last)
{
    if (!g->tool_stream) {
        buf_append(&g->text, text, len);
        return;
    }
    struct tool_call_output o = {0};
    if (len)
        tool_call_stream_feed(g->tool_stream, text, len, &o);
    if (last)
        tool_call_stream_finish(g->tool_stream, &o);
    if (o.content_len)
        buf_append(&g->text, o.content, o.content_len);
    for (size_t i = 0; i < o.n_calls; i++) {
        g->calls = xgrow(g->calls, &g->cap_calls, g->n_calls + 1, sizeof *g->calls);
        g->calls[g->n_calls++] = o.calls[i];
        o.calls[i].name = o.calls[i].arguments = NULL; /* moved */
        g->saw_calls = true;
    }
    tool_call_output_free(&o);
}

/* Passes newly decoded text through the stop strings. */
static void generation_text(struct generation *g, const char *text, size_t len)
{
    if (!g->stop) {
        generation_emit(g, text, len, false);
        return;
    }
    struct stop_result r;
    stop_matcher_feed(g->stop, text, len, &r);
    generation_emit(g, r.text, r.len, false);
    if (r.stop >= 0) {
        g->stopped_by_string = true;
        g->stop_index = r.stop;
    }
}

static void generation_end(struct generation *g, enum gen_finish why)
{
    if (g->finish != GEN_FINISH_NONE)
        return;
    if (!g->stopped_by_string) {
        const char *text;
        size_t len;
        tokenizer_stream_flush(g->detok, &text, &len);
        if (len)
            generation_text(g, text, len);
        if (g->stop && !g->stopped_by_string) {
            struct stop_result r;
            stop_matcher_flush(g->stop, &r);
            generation_emit(g, r.text, r.len, false);
        }
    }
    generation_emit(g, "", 0, true);
    if (why == GEN_FINISH_STOP && g->saw_calls)
        why = GEN_FINISH_TOOL_CALLS;
    g->finish = why;
    model_seq_destroy(g->seq);
    g->seq = NULL;
}

void generation_cancel(struct generation *g)
{
    generation_end(g, GEN_FINISH_CANCELLED);
}

/* Chooses the next token from this generation's logits row and turns it into output. */
static void generation_sample(struct generation *g, float *logits, int n_vocab)
{
    struct sample_result r;
    int32_t tok = sampler_sample(g->sampler, logits, n_vocab, &r);
    sampler_accept(g->sampler, tok);
    g->tokens = xgrow(g->tokens, &g->cap_tokens, g->n_tokens + 1, sizeof *g->tokens);
    g->tokens[g->n_tokens++] = tok;
    if (g->sample_logprobs) {
        g->logprobs = xgrow(g->logprobs, &g->cap_logprobs, g->n_logprobs + 1, sizeof *g->logprobs);
        g->logprobs[g->n_logprobs++].r = r;
    }
    if (!g->ignore_eos && tokenizer_is_eog(g->e->tok, tok)) {
        generation_end(g, GEN_FINISH_STOP);
        return;
    }
    const char *text;
    size_t len;
    if (tokenizer_stream_push(g->detok, tok, &text, &len) == 0 && len)
        generation_text(g, text, len);
    if (g->stopped_by_string) {
        generation_end(g, GEN_FINISH_STOP);
        return;
    }
    bool full = model_seq_length(g->seq) + 1 >= model_max_context(g->e->model);
    if ((g->max_tokens > 0 && (int64_t)g->n_tokens >= g->max_tokens) || full)
        generation_end(g, GEN_FINISH_LENGTH);
}

/* Saves the state of a generation that has just read its prompt up to a multiple of the
 * interval, unless that prefix is saved already. Failures only cost the saving. */
static void generation_snapshot(struct generation *g)
{
    if (!g->pc || g->n_fed % (size_t)prefix_cache_interval(g->pc) != 0 ||
        !prefix_cache_fits(g->pc, model_prefix_save_bytes(g->seq), (int64_t)g->n_fed) ||
        prefix_cache_contains(g->pc, g->prompt, (int64_t)g->n_fed))
        return;
    char err[256];
    struct model_prefix *p = model_prefix_save(g->seq, err, sizeof err);
    if (p && prefix_cache_insert(g->pc, g->prompt, (int64_t)g->n_fed, p) != 0)
        model_prefix_destroy(p);
}

/* On a GPU whose KV blocks run short, saved prefixes give back the blocks they pin before the
 * pass needs them (at most one block per chunk of block-size tokens, plus one partly filled). */
static void generation_make_room(struct engine *e, struct generation *const *active,
                                 const int64_t *counts, int k)
{
    struct prefix_cache *pc = NULL;
    for (int i = 0; i < k && !pc; i++)
        pc = active[i]->pc;
    if (!pc)
        return;
    struct model *m = e->model;
    struct model_cache_stats cs;
    model_cache_stats(m, &cs);
    if (cs.blocks == 0 || cs.block_size < 1)
        return;
    int64_t need = 0;
    for (int i = 0; i < k; i++)
        need += counts[i] / cs.block_size + 1;
    while (cs.blocks_free < need && prefix_cache_evict_lru(pc))
        model_cache_stats(m, &cs);
}

int generation_step(struct engine *e, struct generation *const *gens, int n, int64_t prefill_chunk,
                    char *err, size_t errlen)
{
    struct model_seq **seqs = xmalloc((size_t)(n ? n : 1) * sizeof *seqs);
    const int32_t **toks = xmalloc((size_t)(n ? n : 1) * sizeof *toks);
    int64_t *counts = xmalloc((size_t)(n ? n : 1) * sizeof *counts);
    struct generation **active = xmalloc((size_t)(n ? n : 1) * sizeof *active);
    int k = 0, rc = 0;
    uint64_t t0 = timing_now_ns();
    for (int i = 0; i < n; i++) {
        struct generation *g = gens[i];
        if (g->finish != GEN_FINISH_NONE)
            continue;
        if (g->n_fed < g->n_prompt) {
            size_t left = g->n_prompt - g->n_fed;
            if (prefill_chunk > 0 && (size_t)prefill_chunk < left)
                left = (size_t)prefill_chunk;
            if (g->pc) {
                /* every multiple of the interval ends a chunk, so its state can be saved */
                size_t iv = (size_t)prefix_cache_interval(g->pc);
                size_t next = (g->n_fed / iv + 1) * iv;
                if (g->n_fed + left > next)
                    left = next - g->n_fed;
            }
            toks[k] = g->prompt + g->n_fed;
            counts[k] = (int64_t)left;
            if (!g->t_first_pass)
                g->t_first_pass = t0;
        } else {
            toks[k] = g->tokens + g->n_tokens - 1;
            counts[k] = 1;
        }
        seqs[k] = g->seq;
        active[k++] = g;
    }
    if (k == 0)
        goto out;
    generation_make_room(e, active, counts, k);
    int n_vocab = (int)model_config(e->model)->vocab_size;
    float *logits = xmalloc((size_t)k * (size_t)n_vocab * sizeof *logits);
    if (model_forward(e->model, seqs, toks, counts, k, MODEL_LOGITS_LAST, logits, err, errlen) !=
        0) {
        for (int i = 0; i < k; i++)
            generation_end(active[i], GEN_FINISH_STOP);
        free(logits);
        rc = -1;
        goto out;
    }
    uint64_t t1 = timing_now_ns();
    double pass_ms = (double)(t1 - t0) / 1e6;
    for (int i = 0; i < k; i++) {
        struct generation *g = active[i];
        if (g->n_fed < g->n_prompt) {
            g->n_fed += (size_t)counts[i];
            g->prompt_ms += pass_ms;
            generation_snapshot(g);
            if (g->n_fed < g->n_prompt)
                continue;
            g->t_prompt_done = t1;
        } else {
            g->decode_ms += pass_ms;
        }
        generation_sample(g, logits + (size_t)i * (size_t)n_vocab, n_vocab);
    }
    free(logits);
out:
    free(seqs);
    free(toks);
    free(counts);
    free(active);
    return rc;
}

enum gen_finish generation_finish(const struct generation *g)
{
    return g->finish;
}

int generation_stop_index(const struct generation *g)
{
    return g->stop_index;
}

bool generation_prompt_done(const struct generation *g)
{
    return g->n_fed == g->n_prompt;
}

void generation_output(const struct generation *g, struct gen_output *out)
{
    out->text = g->text.len ? buf_cstr(&g->text) : "";
    out->text_len = g->text.len;
    out->calls = g->calls;
    out->n_calls = g->n_calls;
    out->logprobs = g->logprobs;
    out->n_logprobs = g->n_logprobs;
}

void generation_output_clear(struct generation *g)
{
    buf_reset(&g->text);
    generation_clear_calls(g);
    g->n_logprobs = 0;
}

void generation_stats(const struct generation *g, struct gen_stats *out)
{
    out->prompt_tokens = (int64_t)g->n_prompt;
    out->cached_tokens = (int64_t)g->n_cached;
    out->completion_tokens = (int64_t)g->n_tokens;
    out->prompt_ms = g->prompt_ms;
    out->decode_ms = g->decode_ms;
    out->first_token_ms =
            g->t_prompt_done ? (double)(g->t_prompt_done - g->t_first_pass) / 1e6 : 0.0;
}

uint64_t generation_cache_bytes(const struct generation *g)
{
    return g->seq ? model_seq_memory_bytes(g->seq) : 0;
}

const int32_t *generation_tokens(const struct generation *g, size_t *n)
{
    *n = g->n_tokens;
    return g->tokens;
}
