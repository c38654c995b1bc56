/*
 * common/http_stream.c — streaming answers: a bounded byte queue per request, filled by the
 * producer's thread and drained by libmicrohttpd's content reader on the server thread.
 *
 * When the queue is empty the reader suspends the connection (returning 0 without suspending
 * would make libmicrohttpd spin); the next write, close, hang-up or shutdown resumes it. See the
 * protocol in http_server_internal.h.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "http_server_internal.h"
#include "xalloc.h"

http_stream_t *http_stream_start(http_request_t *req, int status, const char *content_type,
                                 http_gone_fn on_gone, void *ud)
{
    pthread_mutex_lock(&req->mu);
    if (req->answer != HTTP_ANSWER_NONE && req->answer != HTTP_ANSWER_DEFERRED) {
        pthread_mutex_unlock(&req->mu);
        HTTP_REQUEST_LOG(LOG_LEVEL_ERROR, req, "http: already answered; stream not started");
        return NULL;
    }
    bool deferred = req->answer == HTTP_ANSWER_DEFERRED;
    req->answer = HTTP_ANSWER_STREAM;
    req->status = status;
    free(req->content_type);
    req->content_type = content_type ? xstrdup(content_type) : NULL;
    if (content_type && strncmp(content_type, "text/event-stream", 17) == 0) {
        /* Proxies and browsers must neither cache nor buffer an event stream. */
        if (http_request_reply_header_locked(req, "Cache-Control") == NULL)
            http_request_add_reply_header_locked(req, "Cache-Control", "no-cache");
        if (http_request_reply_header_locked(req, "X-Accel-Buffering") == NULL)
            http_request_add_reply_header_locked(req, "X-Accel-Buffering", "no");
    }
    if (on_gone != NULL && !req->gone_notified) {
        req->on_gone = on_gone;
        req->on_gone_ud = ud;
    }
    if (!deferred)
        http_request_ref(req); /* the stream owner's; a deferred owner's reference passes on */
    http_request_resume_locked(req);
    pthread_mutex_unlock(&req->mu);
    return &req->stream;
}

http_stream_result_t http_stream_write(http_stream_t *stream, const void *data, size_t len)
{
    struct http_request *req = stream->req;
    http_stream_result_t rc = HTTP_STREAM_OK;
    pthread_mutex_lock(&req->mu);
    if (req->stream_closed || req->client_gone || req->completed) {
        rc = HTTP_STREAM_GONE;
        goto out;
    }
    if (len == 0)
        goto out;
    if (req->fifo_len > 0 && req->fifo_len + len > req->fifo_max) {
        rc = HTTP_STREAM_FULL;
        goto out;
    }
    if (req->fifo_head + req->fifo_len + len > req->fifo_cap && req->fifo_head > 0) {
        memmove(req->fifo, req->fifo + req->fifo_head, req->fifo_len);
        req->fifo_head = 0;
    }
    req->fifo = xgrow(req->fifo, &req->fifo_cap, req->fifo_head + req->fifo_len + len, 1);
    memcpy(req->fifo + req->fifo_head + req->fifo_len, data, len);
    req->fifo_len += len;
    http_request_resume_locked(req);
out:
    pthread_mutex_unlock(&req->mu);
    return rc;
}

http_stream_result_t http_stream_wait_writable(http_stream_t *stream, int timeout_ms)
{
    struct http_request *req = stream->req;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    http_stream_result_t rc = HTTP_STREAM_OK;
    pthread_mutex_lock(&req->mu);
    for (;;) {
        if (req->stream_closed || req->client_gone || req->completed) {
            rc = HTTP_STREAM_GONE;
            break;
        }
        if (req->fifo_len <= req->fifo_max / 2)
            break;
        if (pthread_cond_timedwait(&req->cond, &req->mu, &deadline) == ETIMEDOUT) {
            rc = req->fifo_len <= req->fifo_max / 2 ? HTTP_STREAM_OK : HTTP_STREAM_FULL;
            break;
        }
    }
    pthread_mutex_unlock(&req->mu);
    return rc;
}

bool http_stream_client_gone(http_stream_t *stream)
{
    return http_request_client_gone(stream->req);
}

http_request_t *http_stream_request(http_stream_t *stream)
{
    return stream->req;
}

void http_stream_close(http_stream_t *stream)
{
    if (stream == NULL)
        return;
    struct http_request *req = stream->req;
    pthread_mutex_lock(&req->mu);
    if (req->stream_closed) {
        pthread_mutex_unlock(&req->mu);
        HTTP_REQUEST_LOG(LOG_LEVEL_ERROR, req, "http: stream closed twice");
        return;
    }
    req->stream_closed = true;
    http_request_clear_gone_locked(req);
    http_request_resume_locked(req);
    pthread_mutex_unlock(&req->mu);
    http_request_unref(req);
}

ssize_t http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_request *req = cls;
    ssize_t n;
    pthread_mutex_lock(&req->mu);
    if (req->fifo_len > 0) {
        size_t take = req->fifo_len < max ? req->fifo_len : max;
        memcpy(buf, req->fifo + req->fifo_head, take);
        req->fifo_head += take;
        req->fifo_len -= take;
        if (req->fifo_len == 0)
            req->fifo_head = 0;
        pthread_cond_broadcast(&req->cond);
        n = (ssize_t)take;
    } else if (req->stream_closed) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (req->client_gone) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else {
        http_request_suspend_locked(req);
        n = 0;
    }
    pthread_mutex_unlock(&req->mu);
    return n;
}

void http_stream_response_free(void *cls)
{
    http_request_unref(cls);
}
