/*
 * neuron/generate.h — PROPOSAL for review, not implemented yet: the generation loop of one
 * sequence, from prompt tokens to streamed text and a finish reason.
 *
 * Contract (proposed): a struct generation owns everything per sequence that is not model
 * state: the sampler (sample.h), the stop matcher (stop.h), the incremental detokeniser state,
 * the token counts and the finish reason. It does not own the KV cache or the batch: the engine's
 * scheduler asks each live generation what to feed next, runs one batched forward pass over all
 * of them, and hands each generation the logits row it asked for. So one scheduler thread drives
 * many generations and continuous batching needs nothing from this module.
 *
 * One step, per sequence, once the prompt is in:
 *   logits --sampler_sample--> token --sampler_accept--> if token is a stop token: finish STOP;
 *   else detokenise --stop_matcher_feed--> text safe to stream | stop string: finish STOP;
 *   if output tokens == max_tokens or the context is full: flush, finish LENGTH.
 * Text reaches the caller through one callback, in order, each piece valid UTF-8 that never
 * contains any part of a matched stop string; the last event is always GENERATE_EVENT_DONE.
 *
 * Finish reasons map to the APIs: STOP -> "stop" / end_turn (or stop_sequence with
 * stop_index), LENGTH -> "length" / max_tokens. "tool_calls" / tool_use is not decided here:
 * the tool-call parser that consumes this text stream (Qwen/Hermes <tool_call> blocks) turns a
 * STOP into it when it found calls, so the tool-call format stays out of this module.
 *
 * Counting: output tokens include a sampled stop token (as usage reports it) but its text is
 * never emitted; max_tokens counts the same tokens.
 *
 * Errors: the step functions return an enum, never abort on bad input; a forward-pass failure
 * is reported by the scheduler through generate_fail(), which emits DONE with ERROR.
 * Threads: a generation is driven by one thread at a time; the callback runs on that thread.
 */
#ifndef CORTEX_NEURON_GENERATE_H
#define CORTEX_NEURON_GENERATE_H

#include "sample.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer; /* tokenizer.h: ids -> bytes, special tokens */

enum generate_finish {
    GENERATE_FINISH_NONE,      /* still running */
    GENERATE_FINISH_STOP,      /* a stop token (EOS, end of turn) or a stop string */
    GENERATE_FINISH_LENGTH,    /* max_tokens reached, or the context is full */
    GENERATE_FINISH_CANCELLED, /* generate_cancel(): the client went away */
    GENERATE_FINISH_ERROR,     /* generate_fail(): the engine could not continue */
};

struct generate_params {
    struct sample_params sample;
    int max_tokens;          /* > 0: most output tokens; 0: until the context is full */
    int n_ctx;               /* context length of the sequence's slot (prompt + output) */
    const char *const *stop; /* user stop strings, copied; n_stop may be 0 */
    size_t n_stop;
    const int32_t *stop_tokens; /* EOS / end-of-turn ids from the model and template, copied */
    size_t n_stop_tokens;
    bool ignore_stop_tokens; /* benchmarks: generate through EOS up to max_tokens */
};

enum generate_event_kind {
    GENERATE_EVENT_TEXT, /* a piece of output text */
    GENERATE_EVENT_DONE, /* the last event of the sequence */
};

struct generate_event {
    enum generate_event_kind kind;
    /* TEXT: bytes to stream (valid UTF-8, ends on a character boundary). */
    const char *text;
    size_t len;
    /* TEXT: the tokens decided since the previous TEXT event, with their log-probabilities when
     * sample.logprobs is on (a token's text may span events: it is attached to the event that
     * completes it). Valid only during the callback. */
    const struct sample_result *tokens;
    size_t n_tokens;
    /* DONE: why it ended, and which stop string (index into params.stop) or stop token hit
     * (-1 when none). */
    enum generate_finish finish;
    int stop_index;
    int32_t stop_token;
    const char *error; /* DONE with ERROR: generate_fail()'s message */
    /* DONE: usage. n_cached is the prompt prefix the scheduler found in its cache. */
    int n_prompt_tokens, n_cached_tokens, n_output_tokens;
};

/* Called for every event; must not call back into the generation except generate_cancel(). */
typedef void (*generate_emit_fn)(void *user, const struct generate_event *ev);

struct generation;

/* Creates a generation for prompt[0..n_prompt) (copied). tok must outlive it. Returns NULL
 * with a message in err when params are invalid (sample_params_validate, max_tokens < 0,
 * prompt longer than n_ctx). The caller frees it with generate_destroy(). */
struct generation *generate_create(const struct generate_params *params,
                                   const struct tokenizer *tok, const int32_t *prompt,
                                   size_t n_prompt, generate_emit_fn emit, void *user, char *err,
                                   size_t errlen);

void generate_destroy(struct generation *g);

/* Tells the generation that its first n_cached prompt tokens are already in the KV cache
 * (prefix reuse), so prefill starts after them. Call before the first generate_next_input(). */
void generate_set_cached(struct generation *g, size_t n_cached);

/* What the scheduler feeds next: points *tokens at up to max of the generation's tokens (a
 * prompt chunk during prefill, the last sampled token during decode), sets *pos to the position
 * of the first, and returns how many (0 once finished). *wants_logits tells whether the last of
 * them needs its logits row handed to generate_step() (the final prompt chunk and every decode
 * token). The tokens stay valid until the next call. */
size_t generate_next_input(struct generation *g, size_t max, const int32_t **tokens, int *pos,
                           bool *wants_logits);

/* Consumes the logits row of the last fed token (n_vocab floats, overwritten by the penalties):
 * samples, detokenises, matches stops, emits events. Returns GENERATE_FINISH_NONE while the
 * sequence goes on, else its finish reason (DONE has been emitted). */
enum generate_finish generate_step(struct generation *g, float *logits, int n_vocab)
        __attribute__((warn_unused_result));

/* Ends the sequence early: emits DONE with CANCELLED (or ERROR with the message for
 * generate_fail) unless it already finished. Safe to call from the callback. */
void generate_cancel(struct generation *g);
void generate_fail(struct generation *g, const char *message);

enum generate_finish generate_finish_reason(const struct generation *g);

#endif
