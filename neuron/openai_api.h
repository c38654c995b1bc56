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
 * The handlers share one struct openai_api (registry and metrics, borrowed; both must outlive
 * every request, i.e. stop the HTTP server before destroying them).
 */
#ifndef CORTEX_NEURON_OPENAI_API_H
#define CORTEX_NEURON_OPENAI_API_H

#include "http_request.h"
#include "metrics.h"
#include "registry.h"

struct openai_api {
    struct registry *registry;
    struct metrics *metrics;
};

void openai_api_chat_completions(http_request_t *req, struct openai_api *api);
void openai_api_completions(http_request_t *req, struct openai_api *api);
/* {"model", "messages" (and "tools") | "prompt"} -> {"model","count","ids","max_context"}:
 * the tokens the same request would have as a prompt, e.g. for Anthropic count_tokens. */
void openai_api_tokenize(http_request_t *req, struct openai_api *api);

#endif
