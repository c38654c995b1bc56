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
 * no route gets 404 (ERR_NOT_FOUND); a path that matches only routes of other methods gets 405
 * (ERR_METHOD_NOT_ALLOWED) with an Allow header. HEAD is answered by the GET route (headers
 * only) unless a HEAD route exists. Such built-in error answers carry the OpenAI-dialect body
 * of their code (error.h; see http_request.h).
 *
 * Limits: bodies over max_body_bytes get 413 (ERR_BODY_TOO_LARGE) — at once when
 * Content-Length announces it, without reading the body. header_timeout_s bounds the silence
 * allowed while a connection's first request arrives, and is also a deadline: a connection
 * whose first request's headers are not complete header_timeout_s after it was accepted is
 * dropped, however slowly it keeps sending (slow-loris guard; checked every 100 ms, counted by
 * http_server_slow_dropped). idle_timeout_s applies after that (between keep-alive requests,
 * and to a client that stops reading an answer). Connections beyond max_connections (in
 * total) or max_connections_per_ip (from one address) are closed as soon as accepted.
 * Headers larger than connection_memory get 431 from libmicrohttpd.
 * Streams and deferred requests waiting for their producer never time out.
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
    void *ud;                        /* passed to every handler */
    size_t max_body_bytes;           /* default 32 MiB */
    unsigned max_connections;        /* default 10000 */
    unsigned max_connections_per_ip; /* default 0: no limit per client address */
    unsigned header_timeout_s;       /* default 10 */
    unsigned idle_timeout_s;         /* default 300 */
    unsigned threads;                /* polling threads; default 1 */
    size_t stream_max_queued;        /* unsent bytes allowed per stream; default 1 MiB */
    size_t connection_memory;        /* libmicrohttpd per-connection buffer (headers + I/O);
                                     default 64 KiB */
    bool log_library_messages;       /* pass libmicrohttpd's own messages to the log (warn) */
} http_server_config_t;

/* Binds and starts. Returns NULL on failure with *errmsg set (the caller frees it): bad listen
 * address, address in use, bad route pattern. Destroy with http_server_destroy. */
http_server_t *http_server_create(const http_server_config_t *cfg, char **errmsg)
        __attribute__((warn_unused_result));
/* The bound TCP port (the real one when the config asked for port 0). */
uint16_t http_server_port(const http_server_t *server);
/* Connections dropped so far for missing their header deadline. */
uint64_t http_server_slow_dropped(const http_server_t *server);
/* Stops accepting, tells every deferred request and open stream that the client is gone
 * (their on_gone runs), closes all connections and joins the server's threads. Handles still
 * held by their owners stay valid until replied/closed. Accepts NULL. */
void http_server_destroy(http_server_t *server);

#endif
