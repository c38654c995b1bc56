/*
 * common/http_client.h — HTTP requests over libcurl: buffered, or streamed chunk by chunk.
 *
 * Contract: every call is blocking on the calling thread (libcurl's global initialisation
 * happens once, thread-safely, on first use). Any number of threads may make calls at the same
 * time. Each thread keeps its libcurl handles, and with them its open connections, for its next
 * call (keep-alive per thread; released when the thread exits). A process that holds many
 * transfers at once asks for shared loops instead (http_client_set_loops): then the transfers
 * run on a few loop threads that keep the connections (keep-alive per loop), while the calls
 * still block their callers and callbacks still run on the calling thread.
 *
 * Results: HTTP_CLIENT_OK means an HTTP response arrived — whatever its status (check
 * resp->status). Anything else is a transport failure, classified so callers can act on it:
 * HTTP_CLIENT_ERR_CONNECT means the request never reached the server (refused, unreachable,
 * unresolvable, connect timeout) and is safe to retry elsewhere; the others may have reached
 * it. resp->error always holds a one-line human-readable reason on failure.
 *
 * Streaming (http_client_stream): on_headers runs once when the status line and headers are
 * in, then on_data for each piece of body as it arrives (piece boundaries are arbitrary: feed
 * them to an sse_parser_t for events). Either callback returns non-zero to abort at once.
 * Another thread aborts through an http_client_cancel_t: the transfer stops within
 * milliseconds, even while it is waiting for data. idle_timeout_ms ends a transfer that
 * receives nothing for that long (counting from the start of the request).
 */
#ifndef CORTEX_HTTP_CLIENT_H
#define CORTEX_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum http_client_result {
    HTTP_CLIENT_OK = 0,
    HTTP_CLIENT_ERR_CONNECT = -1,   /* no connection: the request was not sent */
    HTTP_CLIENT_ERR_TIMEOUT = -2,   /* timeout_ms passed after connecting */
    HTTP_CLIENT_ERR_IDLE = -3,      /* nothing received for idle_timeout_ms */
    HTTP_CLIENT_ERR_ABORTED = -4,   /* a callback returned non-zero, or the cancel fired */
    HTTP_CLIENT_ERR_TOO_LARGE = -5, /* buffered body over max_body_bytes */
    HTTP_CLIENT_ERR_OTHER = -6,     /* any other transport or protocol failure */
} http_client_result_t;

typedef struct http_client_cancel http_client_cancel_t;

/* Zero-initialise, then set what you need. */
typedef struct http_client_request {
    const char *method;         /* default GET, or POST when body is set; HEAD sends no body */
    const char *url;            /* required */
    const char *const *headers; /* NULL-terminated list of "Name: value", or NULL */
    const void *body;           /* request body (not copied; must live through the call) */
    size_t body_len;
    long timeout_ms;              /* the whole exchange; 0 = no limit */
    long connect_timeout_ms;      /* default 10000 */
    long idle_timeout_ms;         /* see the contract; 0 = no limit */
    size_t max_body_bytes;        /* buffered calls only; default 64 MiB */
    http_client_cancel_t *cancel; /* optional; see http_client_cancel_fire */
} http_client_request_t;

typedef struct http_client_header {
    char *name;
    char *value;
} http_client_header_t;

/* Filled by the calls; release its contents with http_client_response_free. */
typedef struct http_client_response {
    long status;                   /* 0 when no response arrived */
    http_client_header_t *headers; /* of the final response (after any 1xx) */
    size_t n_headers;
    char *body; /* buffered calls: the body, NUL-terminated (may contain NULs); else NULL */
    size_t body_len;
    char error[256]; /* "" on success */
} http_client_response_t;

/* Return non-zero to abort the transfer (the call then returns HTTP_CLIENT_ERR_ABORTED). */
typedef int (*http_client_headers_fn)(const http_client_response_t *resp, void *ud);
typedef int (*http_client_data_fn)(const char *data, size_t len, void *ud);

/* Makes the request and buffers the whole response into *resp (always initialised, also on
 * failure; the caller releases it with http_client_response_free). */
http_client_result_t http_client_request(const http_client_request_t *req,
                                         http_client_response_t *resp)
        __attribute__((warn_unused_result));
/* Makes the request and hands the response over as it arrives (resp gets status, headers and
 * error, never a body). on_headers may be NULL. Same release rule for *resp. */
http_client_result_t
http_client_stream(const http_client_request_t *req, http_client_headers_fn on_headers,
                   http_client_data_fn on_data, void *ud, http_client_response_t *resp)
        __attribute__((warn_unused_result));
/* A response header's value (case-insensitive name, first match), or NULL. */
const char *http_client_response_header(const http_client_response_t *resp, const char *name);
/* Frees what the response holds (not resp itself) and zeroes it; accepts NULL. */
void http_client_response_free(http_client_response_t *resp);

/* A cancellation flag another thread can raise. Create/destroy are the owner's; one transfer at
 * a time may use a given cancel. Destroy only after the transfer using it has returned. */
http_client_cancel_t *http_client_cancel_create(void);
void http_client_cancel_destroy(http_client_cancel_t *cancel);
/* Any thread, any time, idempotent: the transfer using it (now or later) ends with
 * HTTP_CLIENT_ERR_ABORTED as soon as possible. Safe to call from an http_stream on_gone. */
void http_client_cancel_fire(http_client_cancel_t *cancel);
bool http_client_cancel_fired(const http_client_cancel_t *cancel);

/* Asks that every transfer of this process run on one of n_loops threads, each driving one
 * libcurl multi handle for all the transfers it carries (n_loops <= 0: each calling thread
 * drives its own, the default). Costs two descriptors per loop instead of two per calling
 * thread (libcurl 7.88 keeps a socketpair per multi handle), and a hand-off per piece of
 * data. Call before the first request: the loops start with it, once per process (so a process
 * that forks before its first request gets its own in each child); later calls change nothing.
 * A body piece the caller has not taken yet holds its transfer paused at 1 MiB. */
void http_client_set_loops(int n_loops);

/* Initialises libcurl once (thread-safe); the calls above do it themselves. */
void http_client_global_init(void);

#endif
