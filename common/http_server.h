/*
 * common/http_server.h — an HTTP/1.1 server over libmicrohttpd with a routing table.
 *
 * Contract: http_server_create binds, starts the server's threads and returns; requests are
 * matched against the routing table and handed to handlers (see http_request.h for the request
 * object and how to answer, http_stream.h for streaming answers).
 *
 * Threads: handlers run on the server's polling thread(s) (one epoll thread, or a pool of
 * `threads`) and must not block: slow answers are deferred or streamed and produced elsewhere.
 * One more thread per server watches idle (suspended) streams and deferred requests for client
 * hang-ups, so "gone" is reported at once instead of at the next write.
 *
 * Routing: routes are tried in order. A pattern is an exact path ("/v1/models") or a prefix
 * ending in "/" followed by '*', which matches any longer path and exposes the rest through
 * http_request_wildcard. The query string never takes part in matching. A path that matches
 * no route gets 404; a path that matches only routes of other methods gets 405 with an Allow
 * header. HEAD is answered by the GET route (headers only) unless a HEAD route exists.
 *
 * Limits: bodies over max_body_bytes get 413 — at once when Content-Length announces it,
 * without reading the body. header_timeout_s bounds the silence allowed while a connection's
 * first request arrives (slow-loris guard); idle_timeout_s applies after that (between
 * keep-alive requests, and to a client that stops reading an answer). Streams and deferred
 * requests waiting for their producer never time out.
 */
#ifndef CORTEX_HTTP_SERVER_H
#define CORTEX_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_request.h"
#include "http_stream.h"

typedef struct http_server http_server_t;

/* Runs on a server thread; ud is http_server_config_t.ud. */
typedef void (*http_handler_fn)(http_request_t *req, void *ud);

typedef struct http_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* exact path, or prefix + '*' */
    http_handler_fn handler;
} http_route_t;

/* Zero-initialise, then set what you need; zero means "the default". */
typedef struct http_server_config {
    const char *listen;         /* "host:port": "0.0.0.0:31313", "127.0.0.1:0" (port 0 picks a
                                   free port: see http_server_port), "[::1]:8080"; required */
    const http_route_t *routes; /* copied */
    size_t n_routes;
    void *ud;                  /* passed to every handler */
    size_t max_body_bytes;     /* default 32 MiB */
    unsigned max_connections;  /* default 10000 */
    unsigned header_timeout_s; /* default 10 */
    unsigned idle_timeout_s;   /* default 300 */
    unsigned threads;          /* polling threads; default 1 */
    size_t stream_max_queued;  /* unsent bytes allowed per stream; default 1 MiB */
    size_t connection_memory;  /* libmicrohttpd per-connection buffer (headers + I/O);
                                     default 64 KiB */
    bool log_library_messages; /* pass libmicrohttpd's own messages to stderr */
    bool openai_errors;        /* the server's own errors (404, 405, 413, ...) in OpenAI form
                                  ({"error":{message,type,param,code}}) instead of Anthropic's */
} http_server_config_t;

/* Binds and starts. Returns NULL on failure with *errmsg set (the caller frees it): bad listen
 * address, address in use, bad route pattern. Destroy with http_server_destroy. */
http_server_t *http_server_create(const http_server_config_t *cfg, char **errmsg)
        __attribute__((warn_unused_result));
/* The bound TCP port (the real one when the config asked for port 0). */
uint16_t http_server_port(const http_server_t *server);
/* Stops accepting, tells every deferred request and open stream that the client is gone
 * (their on_gone runs), closes all connections and joins the server's threads. Handles still
 * held by their owners stay valid until replied/closed. Accepts NULL. */
void http_server_destroy(http_server_t *server);

#endif
