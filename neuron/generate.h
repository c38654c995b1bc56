/*
 * neuron/generate.h — turning a prompt into streamed text: the per-request generation loop.
 *
 * Contract: a struct generation is one request being answered: its sequence state in the model,
 * its sampler, its stop strings, its streaming detokeniser and (when tools were offered) its
 * tool-call parser. generation_step() advances a batch of generations of one engine by one
 * model pass: a generation still reading its prompt contributes its next chunk of prompt tokens
 * (so a long prompt never stalls the others for long), every other unfinished generation
 * contributes its last sampled token; every generation whose prompt is complete then samples its
 * next token. Finished generations in the batch are skipped, so callers may keep them in the
 * array until they have drained their output.
 *
 * Output accumulates in the generation until the caller drains it (generation_output /
 * generation_output_clear): text that is safe to show (never half a UTF-8 character, never the
 * start of a stop string or of a tool-call tag), tool calls whose blocks closed, and the
 * log-probabilities of the tokens produced. When a generation finishes, everything held back is
 * flushed into the output, and generation_finish() tells why.
 *
 * Threads: generation_step() runs the model, so steps of one engine are serialised by the
 * caller; a generation belongs to one thread at a time. The prompt is copied.
 */
#ifndef CORTEX_NEURON_GENERATE_H
#define CORTEX_NEURON_GENERATE_H

#include "engine.h"
#include "sample.h"
#include "tool_call.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gen_params {
    struct sample_params sample;
    int64_t max_tokens;       /* new tokens at most; < 1: until the context is full */
    const char *const *stops; /* stop strings (copied); the output ends before the first match */
    size_t n_stops;
    bool ignore_eos;     /* keep going past end-of-generation tokens (benchmarks) */
    const json_t *tools; /* OpenAI tool list: parse <tool_call> blocks out of the text; borrowed,
                             must outlive the generation. NULL: plain text. */
};

void gen_params_init(struct gen_params *p);

enum gen_finish {
    GEN_FINISH_NONE,       /* still running */
    GEN_FINISH_STOP,       /* end-of-generation token or a stop string */
    GEN_FINISH_LENGTH,     /* max_tokens reached or the context is full */
    GEN_FINISH_TOOL_CALLS, /* stopped, and the answer holds tool calls */
    GEN_FINISH_CANCELLED,  /* generation_cancel() */
};

/* "stop", "length", "tool_calls", "cancelled"; NULL for GEN_FINISH_NONE. */
const char *gen_finish_name(enum gen_finish f);

/* One produced token's log-probabilities (when params.sample.logprobs). */
struct gen_logprob {
    struct sample_result r;
};

/* What a generation produced since its output was last cleared. Owned by the generation. */
struct gen_output {
    const char *text; /* content safe to show; NUL-terminated */
    size_t text_len;
    const struct tool_call *calls; /* closed tool calls */
    size_t n_calls;
    const struct gen_logprob *logprobs;
    size_t n_logprobs;
};

struct gen_stats {
    int64_t prompt_tokens; /* the whole prompt, cached tokens included */
    int64_t cached_tokens; /* prompt tokens restored from a saved prefix, not recomputed */
    int64_t completion_tokens;
    double prompt_ms;      /* wall time of the passes that read the prompt */
    double decode_ms;      /* wall time of the passes after the first sampled token */
    double first_token_ms; /* from the first pass to the first sampled token */
};

struct generation;

/* Starts a generation of prompt[0..n_prompt) on e. Fails (-1, message) when the prompt is empty
 * or does not leave room for one new token in the context, or the parameters are invalid. */
int generation_create(struct engine *e, const int32_t *prompt, size_t n_prompt,
                      const struct gen_params *p, struct generation **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void generation_destroy(struct generation *g);

/* One model pass over the unfinished generations of gens (all of engine e). prefill_chunk caps
 * the prompt tokens a generation contributes per pass (< 1: the whole prompt). Returns 0, or -1
 * with a message when the model pass failed (every generation of the batch is then finished
 * with GEN_FINISH_STOP and the error applies to all of them). */
int generation_step(struct engine *e, struct generation *const *gens, int n, int64_t prefill_chunk,
                    char *err, size_t errlen) __attribute__((warn_unused_result));

struct prefix_cache;

/* Prefix caching (prefix_cache.h): an index for e's model whose values are saved model states
 * (struct model_prefix) within budget_bytes, at every multiple of interval prompt tokens
 * (rounded up to a multiple of model_prefix_granule()). NULL when budget_bytes is 0. The
 * caller frees it with prefix_cache_destroy() before e's model goes, and owns its threading
 * (the same thread as the steps). */
struct prefix_cache *generation_prefix_cache_create(struct engine *e, uint64_t budget_bytes,
                                                    int64_t interval);
/* Call once, before g's first step. Makes g use pc (borrowed; must outlive g; NULL: none):
 * the longest saved prefix of g's prompt of at most n_prompt - 1 tokens (one token is always
 * read, to produce logits) is restored and the prompt is read from there; afterwards, while
 * g reads its prompt, its chunks end at every multiple of the interval and the state there is
 * saved into pc unless that prefix is present. Returns the prompt tokens restored (0: none),
 * or -1 with a message when restoring failed (g then reads its whole prompt; no harm done). */
int64_t generation_use_prefix_cache(struct generation *g, struct prefix_cache *pc, char *err,
                                    size_t errlen) __attribute__((warn_unused_result));

/* Ends a generation at once (e.g. its client went away); its output is flushed. */
void generation_cancel(struct generation *g);

enum gen_finish generation_finish(const struct generation *g);
/* The index in gen_params.stops of the stop string that ended the generation, or -1 (no stop
 * string matched: end-of-generation token, length, cancelled, still running). */
int generation_stop_index(const struct generation *g);
bool generation_prompt_done(const struct generation *g);
void generation_output(const struct generation *g, struct gen_output *out);
void generation_output_clear(struct generation *g);
void generation_stats(const struct generation *g, struct gen_stats *out);
/* Every token sampled so far (prompt excluded). */
const int32_t *generation_tokens(const struct generation *g, size_t *n);
/* Bytes of model state (caches) the generation holds: 0 once it has finished, because its
 * sequence is freed then. */
uint64_t generation_cache_bytes(const struct generation *g);

#endif
