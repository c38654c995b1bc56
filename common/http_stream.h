/*
 * common/http_stream.h — a streaming HTTP answer (server-sent events) fed from any thread.
 *
 * Contract: http_stream_start turns a request into a streaming answer (status and headers go
 * out at once, the body is chunked and unbounded) and returns a handle owned by the caller. Any
 * one thread at a time may then write to it; the server sends each chunk as soon as the socket
 * allows (the connection sleeps while nothing is queued, so idle streams cost no CPU). The owner
 * ends the stream with http_stream_close, exactly once, which also frees the handle.
 *
 * Backpressure: at most the server's stream_max_queued bytes wait unsent per stream; a write
 * that would exceed it fails with HTTP_STREAM_FULL (nothing queued) so a slow client never
 * stalls the producer; http_stream_wait_writable blocks until room returns, if you prefer.
 *
 * Disconnects: when the client goes away (see http_request.h, "gone"), writes fail with
 * HTTP_STREAM_GONE and on_gone runs once, also while the stream is idle, so the producer can
 * cancel its work at once. The handle must still be closed.
 */
#ifndef CORTEX_HTTP_STREAM_H
#define CORTEX_HTTP_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "http_request.h"

typedef struct http_stream http_stream_t;

typedef enum http_stream_result {
    HTTP_STREAM_OK = 0,
    HTTP_STREAM_GONE = -1, /* the client is gone or the stream is closed: stop producing */
    HTTP_STREAM_FULL = -2, /* too much unsent data queued: nothing was written; retry later */
} http_stream_result_t;

/* Starts the streaming answer: from the handler, or from any thread after http_request_defer
 * (then on_gone may be NULL to keep the one given to defer). content_type "text/event-stream"
 * also adds Cache-Control: no-cache and X-Accel-Buffering: no unless already added. Returns the
 * handle (close it with http_stream_close), or NULL when the request was already answered. */
http_stream_t *http_stream_start(http_request_t *req, int status, const char *content_type,
                                 http_gone_fn on_gone, void *ud)
        __attribute__((warn_unused_result));
/* Queues a copy of len bytes. A write into an empty queue always fits, whatever its size. */
http_stream_result_t http_stream_write(http_stream_t *stream, const void *data, size_t len)
        __attribute__((warn_unused_result));
/* Blocks until at most half the queue limit is used (HTTP_STREAM_OK), the client is gone
 * (HTTP_STREAM_GONE) or timeout_ms passes (HTTP_STREAM_FULL). */
http_stream_result_t http_stream_wait_writable(http_stream_t *stream, int timeout_ms)
        __attribute__((warn_unused_result));
bool http_stream_client_gone(http_stream_t *stream);
/* The request behind the stream; valid until http_stream_close. */
http_request_t *http_stream_request(http_stream_t *stream);
/* Ends the stream: what is queued is still sent, then the response completes. Waits for a
 * running on_gone to return (unless called from inside it); on_gone is not called afterwards.
 * The handle is invalid after the call. Accepts NULL. */
void http_stream_close(http_stream_t *stream);

#endif
