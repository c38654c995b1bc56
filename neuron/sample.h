/*
 * neuron/sample.h — choosing the next token from a sequence's logits.
 *
 * Contract: one struct sampler per sequence, created from validated struct sample_params. Each
 * call to sampler_sample() turns one row of logits into one token, in this order (the order of
 * Hugging Face's logits processors, which vLLM also follows):
 *
 *   1. penalties, in place on the caller's logits:
 *        repetition (HF / llama.cpp): each distinct token among the last penalty_last_n tokens of
 *          prompt + output has its logit divided by repetition_penalty when > 0, multiplied when
 *          < 0 (once per token, however often it occurs);
 *        presence / frequency (OpenAI): each token generated so far (output only) loses
 *          count * frequency_penalty + presence_penalty;
 *   2. temperature: logits / temperature (temperature 0 = greedy: argmax, steps 3-6 skipped);
 *   3. top-k: keep the k highest logits;
 *   4. top-p: keep the smallest set of highest-probability tokens whose probability mass,
 *      measured over the tokens left by step 3, is >= top_p;
 *   5. min-p: keep tokens whose probability is >= min_p * the highest probability;
 *   6. draw one token in proportion to exp(logit / temperature) among those kept.
 * llama.cpp's default chain differs in one respect: it applies temperature after truncation.
 * Ties are broken by token id (lower id ranks higher) in greedy decoding and in every ranking,
 * so results never depend on sort stability. NaN and infinite logits mark tokens that are never
 * chosen (-inf is the usual mask).
 *
 * Log-probabilities (when params.logprobs) are the log-softmax over the whole vocabulary of the
 * logits after step 1 (penalties) and before temperature and truncation: the model's own
 * distribution, as OpenAI reports it, so greedy decoding reports finite values too.
 *
 * Reproducibility: a seeded sampler fed the same logits makes the same choices on any machine:
 * it has its own generator (rng.h), every ranking is a total order, every sum runs in a fixed
 * order, and the exponential is computed by plain float arithmetic rather than the C library's
 * expf (the build must not contract a*b+c into FMA differently between machines: ISO C mode,
 * as CMake sets it, does not). An unseeded sampler draws its seed from the kernel.
 *
 * Cost for a vocabulary of n: greedy is one pass. Sampling adds one vectorised pass computing
 * every token's weight and, without truncation, a blocked weighted draw (about 1.5 summing
 * passes). Truncation never sorts the vocabulary: top-k is a linear-time selection, top-p a
 * selection on probability mass (linear expected time however large the nucleus), min-p a
 * filter. Logprobs add one weight pass and a bounded insertion list of alternatives. Scratch of
 * 12 bytes per vocabulary entry is allocated on the first call that needs it and kept.
 *
 * Threads: a sampler is used by one thread at a time; different samplers are independent.
 */
#ifndef CORTEX_NEURON_SAMPLE_H
#define CORTEX_NEURON_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAMPLE_MAX_LOGPROBS 20 /* most alternatives OpenAI's top_logprobs allows */

struct sample_params {
    float temperature;        /* >= 0; 0 = greedy */
    int top_k;                /* >= 0; 0 = off */
    float top_p;              /* [0, 1]; 1 = off; 0 keeps only the most likely token */
    float min_p;              /* [0, 1]; 0 = off */
    float presence_penalty;   /* OpenAI semantics, over output tokens; 0 = off */
    float frequency_penalty;  /* OpenAI semantics, over output tokens; 0 = off */
    float repetition_penalty; /* > 0; 1 = off; over the last penalty_last_n prompt+output tokens */
    int penalty_last_n;       /* repetition window: -1 = all tokens, 0 = none */
    uint64_t seed;
    bool has_seed;  /* false: seed from the kernel's entropy */
    bool logprobs;  /* report the chosen token's log-probability */
    int n_logprobs; /* 0..SAMPLE_MAX_LOGPROBS top alternatives to report (needs logprobs) */
};

struct sample_logprob {
    int32_t token;
    float logprob;
};

struct sample_result {
    int32_t token;
    float logprob; /* of token; set when params.logprobs, else 0 */
    int n_top;     /* entries in top: min(n_logprobs, number of tokens with finite logits) */
    struct sample_logprob top[SAMPLE_MAX_LOGPROBS]; /* most likely first; ties by lower id */
};

struct sampler;

/* Fills p with the neutral defaults: temperature 1, no truncation, no penalties,
 * penalty_last_n 64 (llama.cpp's default window), unseeded, no logprobs. */
void sample_params_init(struct sample_params *p);

/* Checks every field's range. Returns 0, or -1 with a message naming the field in err (of
 * errlen bytes, always NUL-terminated when errlen > 0). */
int sample_params_validate(const struct sample_params *p, char *err, size_t errlen)
        __attribute__((warn_unused_result));

/* Creates a sampler for one sequence; p must have passed sample_params_validate() and is
 * copied. The caller frees the result with sampler_destroy(). */
struct sampler *sampler_create(const struct sample_params *p);

void sampler_destroy(struct sampler *s);

/* The seed this sampler's generator started from (drawn from the kernel when unseeded), so it
 * can be logged and a run replayed. */
uint64_t sampler_seed(const struct sampler *s);

/* Records prompt tokens: they enter the repetition-penalty window only (presence and frequency
 * penalties count output tokens). Call once before the first sample. Negative ids are ignored. */
void sampler_accept_prompt(struct sampler *s, const int32_t *tokens, size_t n);

/* Records one generated token (normally the one sampler_sample() chose; the caller may also
 * force a different one). sampler_sample() does not record its choice itself. */
void sampler_accept(struct sampler *s, int32_t token);

/* Step 1 alone: applies the penalties of the tokens accepted so far to logits[0..n_vocab) in
 * place. Ids >= n_vocab are ignored. sampler_sample() calls it; it is exported for tests and
 * for callers that want penalised logits without sampling. */
void sampler_apply_penalties(const struct sampler *s, float *logits, int n_vocab);

/* Chooses the next token from logits[0..n_vocab) (overwritten with the penalised logits) and
 * fills out. Returns the token id, or -1 when n_vocab <= 0 or no logit is finite (out is then
 * untouched). Does not record the token: call sampler_accept(). */
int32_t sampler_sample(struct sampler *s, float *logits, int n_vocab, struct sample_result *out)
        __attribute__((warn_unused_result));

#endif
