/*
 * gateway/openai.h — the OpenAI dialect: client requests checked and normalised into the form
 * the neurons take, and failures reported by a neuron turned back into error codes.
 *
 * Contract: pure functions over jansson values; no I/O, no globals, any thread. Inputs are
 * borrowed and never modified; every json_t handed out is a new reference the caller
 * json_decref()s. Bad client input comes back as -1 with a struct error: ERR_INVALID_REQUEST
 * (missing, mistyped or out-of-range member) or ERR_UNSUPPORTED (valid OpenAI but not served
 * here, such as n > 1), with param naming the member ("messages[2].tool_calls[0].function").
 *
 * Normalised chat request (what a neuron receives; shared/API.md, "OpenAI dialect"):
 *   - every system and developer message is merged, in order, into one leading system message
 *     (texts joined with a blank line; chat templates accept a system message only first);
 *   - messages keep only the members a template reads: role, content (string, parts or null),
 *     tool_calls (type "function", arguments as JSON text; an object is dumped), tool_call_id,
 *     reasoning_content, name; image_url given as a bare string becomes {"url": …};
 *   - max_completion_tokens is preferred over max_tokens and sent as max_tokens, lowered to the
 *     configured cap;
 *   - stop is always an array; stream_options only travels with stream true;
 *   - known sampling members are range-checked and kept (temperature, top_p, seed,
 *     presence_penalty, frequency_penalty, logprobs, top_logprobs) with the engine extras
 *     top_k, min_p and repetition_penalty; tools, tool_choice, parallel_tool_calls and
 *     response_format are checked and copied; n other than 1 is refused; user and unknown
 *     members are dropped.
 */
#ifndef CORTEX_GATEWAY_OPENAI_H
#define CORTEX_GATEWAY_OPENAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

#define OPENAI_WUR __attribute__((warn_unused_result))

/* Zero-initialise; zero means the default. */
struct openai_options {
    int64_t max_tokens_cap; /* max_tokens above it is lowered to it; 0: none */
};

/* Checks and normalises a /v1/chat/completions body (see the contract). opt may be NULL.
 * Returns 0 with *out a new object, or -1 with err set and *out NULL. */
int openai_chat_request_normalize(const json_t *req, const struct openai_options *opt, json_t **out,
                                  struct error *err) OPENAI_WUR;

/*
 * Checks and normalises a /v1/completions body: prompt is a string, one-element array of a
 * string, token ids or one array of token ids (several prompts: ERR_UNSUPPORTED); max_tokens
 * defaults to 16 as in OpenAI's API; echo, logprobs (0-5), suffix (only null), best_of (only
 * 1), n (only 1) and the chat sampling members are checked. Same returns as the chat form.
 */
int openai_completion_request_normalize(const json_t *req, const struct openai_options *opt,
                                        json_t **out, struct error *err) OPENAI_WUR;

/*
 * Checks and normalises a /v1/embeddings body: model; input a non-empty string, array of
 * strings, token ids or arrays of token ids; encoding_format "float" (default) or "base64";
 * dimensions (positive) kept. Returns 0 with *out a new object, or -1 with err set.
 */
int openai_embedding_request_normalize(const json_t *req, json_t **out,
                                       struct error *err) OPENAI_WUR;

/*
 * Turns an error answer from a neuron (status 0 for an error chunk inside a stream; body may
 * be NULL or any JSON: {"error":{"message","type","code"}}, {"error":"text"}) into err: the
 * code by error.code when it names one (context_length_exceeded, model_not_found,
 * model_loading, rate_limit_exceeded), else by status (400 invalid request, 404 unavailable
 * here, 413, 429 overloaded, 503 unavailable, 504 timeout, anything else ERR_UPSTREAM), else by
 * error.type; the message is the neuron's. A prompt-too-long message always starts with
 * "prompt is too long" (Claude Code compacts its context on that text).
 */
void openai_error_from_upstream(long status, const json_t *body, struct error *err);

/* Appends one OpenAI stream event "data: <json>\n\n" to out. */
void openai_sse_data(struct buf *out, const json_t *data);
/* Appends the in-band error event of a failed stream: "data: {"error":{…}}\n\n". */
void openai_sse_error(struct buf *out, const struct error *e);
/* Appends the end of a successful stream: "data: [DONE]\n\n". */
void openai_sse_done(struct buf *out);
/* Appends a keep-alive comment ": keep-alive\n\n". */
void openai_sse_keepalive(struct buf *out);

#endif
