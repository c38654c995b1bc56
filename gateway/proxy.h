/*
 * gateway/proxy.h — one client request carried to a neuron and its answer carried back, in
 * the client's dialect.
 *
 * Contract: the route handler checks and translates the request body, then hands the request
 * to proxy_start, which defers it and runs the exchange on a worker thread (the libcurl calls
 * block), so the server thread returns at once. Worker threads are kept for later requests
 * while they are busy enough (an idle one exits after 30 s), which also keeps their
 * connections to the neurons open (http_client.h). The worker:
 *   - picks a neuron from the upstream pool (upstream.h) for the served model and sends the
 *     OpenAI-dialect body (streaming requests always ask the neuron for usage);
 *   - before anything reached the client, retries another neuron on a connect failure or a
 *     503, within max_attempts, and turns any other failure into a real status with an error
 *     body in the client's dialect (Retry-After where the error table says so);
 *   - streams: the 200 and the event-stream headers go out when the neuron answers 200
 *     (Anthropic: with message_start and a ping); OpenAI chunks are passed through as they
 *     come (a usage-only chunk the client did not ask for is dropped), Anthropic streams are
 *     built by the stream translator (anthropic.h); a keep-alive (": keep-alive" / ping) goes
 *     out when the neuron sends only comments for ping_interval_ms. After the first byte
 *     nothing is replayed: a failure becomes one in-band error event, then the stream ends
 *     (never a [DONE] or message_stop after a failure);
 *   - non-streamed answers are passed through (OpenAI) or translated (Anthropic message);
 *     count_tokens sends the translated chat request to the neuron's POST /tokenize (the prompt
 *     as the chat template renders it, tools included) and answers {"input_tokens": count};
 *   - when the client goes away, the neuron request is aborted at once.
 * Every outcome is reported back to the pool (ok / failed / neutral) for ejection.
 *
 * A struct proxy is shared by all requests; proxy_destroy waits for the running ones, which
 * end quickly once the server is destroyed first (destroying the server tells every deferred
 * request and stream that the client is gone).
 */
#ifndef CORTEX_GATEWAY_PROXY_H
#define CORTEX_GATEWAY_PROXY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "http_request.h"
#include "upstream.h"

struct snapshot;
struct accounting;
struct ratelimit;
struct metrics;

enum proxy_kind {
    PROXY_KIND_CHAT,         /* OpenAI POST /v1/chat/completions */
    PROXY_KIND_COMPLETION,   /* OpenAI POST /v1/completions */
    PROXY_KIND_EMBEDDING,    /* OpenAI POST /v1/embeddings */
    PROXY_KIND_MESSAGES,     /* Anthropic POST /v1/messages */
    PROXY_KIND_COUNT_TOKENS, /* Anthropic POST /v1/messages/count_tokens */
};

struct proxy_settings {
    struct upstream_pool *pool; /* borrowed; outlives the proxy */
    int64_t connect_timeout_ms; /* default 5000 */
    int64_t idle_timeout_ms;    /* nothing from the neuron for this long ends a request;
                                   default 300000 */
    int max_attempts;           /* neurons tried before the first byte; default 3 */
    int64_t ping_interval_ms;   /* default 10000 */
    unsigned max_in_flight;     /* concurrent proxied requests; beyond: 529 / 503; default 10000 */
    struct snapshot *snapshot;  /* borrowed; NULL: static upstreams, no cold starts. When set, a
                                   model without a ready placement is a cold start: demand is
                                   recorded, the request held (a stream starts at once and gets
                                   keep-alives) until the model is ready or hold_timeout_ms
                                   passes (then ERR_MODEL_LOADING: 503 / 529 + Retry-After). */
    int64_t hold_timeout_ms;    /* default 120000 */
    struct accounting *accounting; /* borrowed; NULL: no request rows. When set, every request
                                      started here ends with one row (accounting.h). */
    struct ratelimit *ratelimit;   /* borrowed; NULL: no per-key limits. When set, a request of
                                      a key with limits is admitted by ratelimit_admit on the
                                      worker thread first (refused: 429 rate_limited with
                                      Retry-After, the seconds until the key's minute ends),
                                      and its tokens are charged when it ends. count_tokens
                                      requests are not limited. */
    struct metrics *metrics;       /* borrowed; NULL: none. Every request started here is
                                      observed when it ends (metrics.h). */
};

struct proxy;

/* settings is copied. Never NULL; destroy with proxy_destroy. */
struct proxy *proxy_create(const struct proxy_settings *settings);
/* Waits until every started request has finished, then frees. Accepts NULL. */
void proxy_destroy(struct proxy *p);

/* What one request needs. Strings are copied; body is consumed (always, also on failure). */
struct proxy_call {
    enum proxy_kind kind;
    json_t *body;             /* the OpenAI-dialect body for the neuron ("model" = served model) */
    const char *client_model; /* the name the client asked for (reported in Anthropic answers) */
    bool stream;              /* the client asked for a stream */
    bool include_usage;       /* OpenAI: the client asked for the usage chunk */
    int64_t api_key_id;       /* for the request row; 0: none */
    int64_t rpm, tpm;         /* the key's limits (keys.h); 0: unlimited */
};

/* Answers req (from its handler) through a worker thread; see the contract. When no worker can
 * be started (too many in flight, or thread creation failed) the request is answered at once
 * with ERR_OVERLOADED in its dialect. */
void proxy_start(struct proxy *p, http_request_t *req, struct proxy_call *call);

/* Requests being proxied now. */
unsigned proxy_in_flight(const struct proxy *p);

/* Answers req at once with the error e in dialect (status from the error table, Retry-After
 * where it belongs, request-id for Anthropic). For handlers' own errors too. */
void proxy_reply_error(http_request_t *req, bool anthropic, const struct error *e);
/* The same with the Retry-After value given (seconds, >= 1) where the code wants one. */
void proxy_reply_error_after(http_request_t *req, bool anthropic, const struct error *e,
                             int retry_after_s);

#endif
