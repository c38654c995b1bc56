/*
 * neuron/openai_api.h — the OpenAI-dialect inference endpoints of the neuron:
 * POST /v1/chat/completions, POST /v1/completions and POST /tokenize.
 *
 * Contract: each handler runs on an HTTP server thread. It parses and checks the body (bad
 * input: 400 in OpenAI form with the parameter named; 404 when the model is not loaded; 503 +
 * Retry-After while it loads or when its queue is full), renders the chat template (with
 * tools), tokenises, checks the context ("prompt is too long: N tokens > M maximum") and hands a
 * job to the model's batcher; the answer is then produced by the batcher's callbacks: one JSON
 * reply, or a server-sent-events stream (role chunk, content and tool-call deltas, a finish
 * chunk, a usage chunk when stream_options.include_usage, then [DONE]). The last JSON object of
 * every answer carries "usage" and "timings" (queue wait, prompt tokens and ms, decode speed;
 * docs/neuron.md). A client that disconnects cancels its generation at the next step.
 *
 * Streams send their headers and first chunk as soon as the job is queued, before the prompt is
 * read; the response header X-Prompt-Tokens carries the prompt's token count (chat template and
 * tools included) so a gateway can report it before the first token (Anthropic message_start).
 * The finish chunk / choice carries vLLM's "stop_reason": the matched stop string, else null.
 *
 * The handlers share one struct openai_api (registry and metrics, borrowed; both must outlive
 * every request, i.e. stop the HTTP server before destroying them).
 */
#ifndef CORTEX_NEURON_OPENAI_API_H
#define CORTEX_NEURON_OPENAI_API_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "http_request.h"
#include "metrics.h"
#include "registry.h"

struct oai_request;

/*
 * Keep-alives: every open stream is on `streams` (under mu); a ticker thread writes
 * ": keep-alive" to each one that has sent nothing for ping_ms (queued, or a long prefill), so
 * gateways and clients see a live answer. Lock order: mu, then a request's own lock (only
 * try-locked by the ticker, so a busy stream is simply skipped).
 */
struct openai_api {
    struct registry *registry; /* borrowed */
    struct metrics *metrics;   /* borrowed */
    int64_t ping_ms;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    struct oai_request *streams; /* under mu */
    bool stopping;               /* under mu */
    bool ticker_started;
    pthread_t ticker;
};

/* Fills api and starts its keep-alive thread (ping_ms <= 0: 5 s). Stop it with
 * openai_api_shutdown once no request can still run (after the server and the registry). */
void openai_api_init(struct openai_api *api, struct registry *registry, struct metrics *metrics,
                     int64_t ping_ms);
/* Stops the keep-alive thread and releases api's resources; idempotent on a zeroed struct. */
void openai_api_shutdown(struct openai_api *api);

void openai_api_chat_completions(http_request_t *req, struct openai_api *api);
void openai_api_completions(http_request_t *req, struct openai_api *api);
/* {"model", "messages" (and "tools") | "prompt"} -> {"model","count","ids","max_context"}:
 * the tokens the same request would have as a prompt, e.g. for Anthropic count_tokens. */
void openai_api_tokenize(http_request_t *req, struct openai_api *api);

#endif
