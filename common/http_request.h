/*
 * common/http_request.h — one HTTP request received by http_server, and how to answer it.
 *
 * Contract: the server builds an http_request_t when a request's headers arrive, buffers the
 * whole body (up to the server's limit) and then calls the route's handler on a server thread.
 * The handler must answer in one of three ways, without blocking:
 *   - reply at once: http_request_reply / _text / _json;
 *   - defer: http_request_defer, then any thread replies later (the request stays valid until
 *     that reply) — for answers that take time (proxying, database work);
 *   - stream: http_stream_start (http_stream.h), then any thread writes chunks.
 * A handler that returns without doing any of these gets a 500 answer.
 *
 * Everything the accessors return (method, path, headers, body, ...) is owned by the request,
 * read-only, and valid while the handler runs and, after defer/stream, until the reply is made
 * or the stream is closed. Header names match case-insensitively; the first of repeated headers
 * is returned.
 *
 * Every answer carries an X-Request-Id header: the client's own X-Request-Id when it is sane
 * (1-128 characters of [A-Za-z0-9._:-]), else a fresh "req_…" id from ids_new() (ids.h).
 *
 * Answers the server gives on its own (no route, wrong method, body too large, a handler that
 * did not answer, shutting down) are error bodies in the OpenAI dialect from the table in
 * error.h (error_body_openai), with that table's status: the server cannot know a route's
 * dialect, and handlers answer their own errors in their client's dialect.
 *
 * "Gone": the client disconnected (or the connection failed, or the server is stopping) before
 * the answer was complete. The owner of a deferred request or a stream learns it through the
 * optional on_gone callback (called at most once, on a server thread: it must be quick and not
 * block, e.g. set a cancel flag) and through http_request_client_gone / http_stream_write.
 * Replying or closing after "gone" is still required (it releases the request) and is harmless.
 */
#ifndef CORTEX_HTTP_REQUEST_H
#define CORTEX_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

typedef struct http_request http_request_t;

/* Told that the client has gone; see the contract above. */
typedef void (*http_gone_fn)(void *ud);

const char *http_request_method(const http_request_t *req); /* "GET", "POST", "HEAD", ... */
/* The percent-decoded path without the query string, e.g. "/v1/models/qwen/qwen3". */
const char *http_request_path(const http_request_t *req);
/* For a wildcard route (pattern "/v1/models/" followed by '*'): the rest of the path after the
 * prefix, never empty; NULL for exact routes. */
const char *http_request_wildcard(const http_request_t *req);
/* The raw query string after '?', not decoded; "" when there is none. */
const char *http_request_query(const http_request_t *req);
/* A decoded query parameter; NULL when absent, "" when present without a value. */
const char *http_request_query_param(const http_request_t *req, const char *name);
/* A request header (case-insensitive name); NULL when absent. */
const char *http_request_header(const http_request_t *req, const char *name);
/* The request body (NUL-terminated for convenience, may contain NULs); *len = its size. */
const char *http_request_body(const http_request_t *req, size_t *len);
const char *http_request_id(const http_request_t *req);
/* The client's IP address as text ("127.0.0.1", "::1"). */
const char *http_request_client_addr(const http_request_t *req);

/* Adds a header to the answer (e.g. Retry-After, request-id); call before replying or
 * starting a stream. Names and values with CR, LF or NUL are refused (and logged). */
void http_request_add_reply_header(http_request_t *req, const char *name, const char *value);

/* Answers with status and body (copied; len bytes; content_type NULL = none). Callable once,
 * from the handler or, after http_request_defer, from any thread. After a deferred reply the
 * request must not be touched again. */
void http_request_reply(http_request_t *req, int status, const char *content_type, const void *body,
                        size_t len);
/* text/plain; charset=utf-8 */
void http_request_reply_text(http_request_t *req, int status, const char *text);
/* application/json, compact; json is not consumed (the caller still owns it). */
void http_request_reply_json(http_request_t *req, int status, const json_t *json);

/* From the handler only: the answer (reply or stream) will come later from any thread.
 * on_gone (may be NULL) is called if the client goes away first; it is not called once the
 * answer has been given (replying waits for a running on_gone to return, unless the reply comes
 * from inside on_gone itself). */
void http_request_defer(http_request_t *req, http_gone_fn on_gone, void *ud);

/* Whether the client has gone (see the contract). */
bool http_request_client_gone(http_request_t *req);

#endif
