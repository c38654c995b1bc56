/*
 * common/http_client.c — HTTP requests over libcurl, buffered or streamed.
 *
 * Each call drives one easy handle through a multi handle, so that the wait for data is a
 * curl_multi_poll that another thread can interrupt (curl_multi_wakeup, used by
 * http_client_cancel_fire) and that wakes up for the idle timeout. Buffered requests are
 * streaming requests whose data callback appends to the body.
 *
 * The easy and multi handles belong to the calling thread and are kept for its next call (freed
 * when the thread exits): the multi handle's connection cache then keeps connections to the
 * servers a thread talks to alive, so a thread that makes many calls (a gateway worker) does not
 * pay a TCP connect, a socketpair and handle set-up per request. libcurl checks a cached
 * connection before reusing it and reconnects when the server closed it. Connections are never
 * shared between threads (libcurl does not support that).
 */
#include "http_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "timing.h"
#include "xalloc.h"

#define HTTP_CLIENT_DEFAULT_CONNECT_MS 10000L
#define HTTP_CLIENT_DEFAULT_MAX_BODY   ((size_t)64 << 20)
/* The longest single wait for data: libcurl shortens it for its own timers, the idle timeout
 * and cancellation wake it up, so it only bounds the damage of a missed wake-up. */
#define HTTP_CLIENT_MAX_WAIT_MS 60000

struct http_client_cancel {
    atomic_bool fired;
    pthread_mutex_t mu; /* guards multi */
    CURLM *multi;       /* the transfer using this cancel, to wake it up */
};

/* The state of one transfer, shared by the libcurl callbacks. */
struct http_client_xfer {
    const http_client_request_t *req;
    http_client_response_t *resp;
    http_client_headers_fn on_headers;
    http_client_data_fn on_data;
    void *ud;
    bool buffered;
    bool headers_done;
    bool aborted; /* a callback asked to stop */
    bool too_large;
    uint64_t last_byte_ms; /* monotonic */
};

static pthread_once_t http_client_once = PTHREAD_ONCE_INIT;
static pthread_key_t http_client_handles_key;

/* A thread's kept handles (see the file comment). */
struct http_client_handles {
    CURLM *multi;
    CURL *easy;
};

static void http_client_handles_free(void *ud)
{
    struct http_client_handles *h = ud;
    curl_easy_cleanup(h->easy);
    curl_multi_cleanup(h->multi);
    free(h);
}

static void http_client_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_key_create(&http_client_handles_key, http_client_handles_free) != 0)
        abort(); /* only fails when the process is out of keys: a build error, not input */
}

/* The calling thread's handles, created on first use; NULL members when libcurl failed. */
static struct http_client_handles *http_client_handles(void)
{
    struct http_client_handles *h = pthread_getspecific(http_client_handles_key);
    if (!h) {
        h = xcalloc(1, sizeof *h);
        pthread_setspecific(http_client_handles_key, h);
    }
    if (!h->multi)
        h->multi = curl_multi_init();
    if (!h->easy)
        h->easy = curl_easy_init();
    return h;
}

void http_client_global_init(void)
{
    pthread_once(&http_client_once, http_client_init_once);
}

/* ---- cancel ----------------------------------------------------------------------------- */

http_client_cancel_t *http_client_cancel_create(void)
{
    http_client_cancel_t *c = xcalloc(1, sizeof *c);
    atomic_init(&c->fired, false);
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void http_client_cancel_destroy(http_client_cancel_t *cancel)
{
    if (cancel == NULL)
        return;
    pthread_mutex_destroy(&cancel->mu);
    free(cancel);
}

void http_client_cancel_fire(http_client_cancel_t *cancel)
{
    atomic_store(&cancel->fired, true);
    pthread_mutex_lock(&cancel->mu);
    if (cancel->multi)
        curl_multi_wakeup(cancel->multi);
    pthread_mutex_unlock(&cancel->mu);
}

bool http_client_cancel_fired(const http_client_cancel_t *cancel)
{
    return atomic_load(&cancel->fired);
}

static void http_client_cancel_attach(http_client_cancel_t *cancel, CURLM *multi)
{
    if (cancel == NULL)
        return;
    pthread_mutex_lock(&cancel->mu);
    cancel->multi = multi;
    pthread_mutex_unlock(&cancel->mu);
}

/* ---- response --------------------------------------------------------------------------- */

static void http_client_headers_clear(http_client_response_t *resp)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->headers);
    resp->headers = NULL;
    resp->n_headers = 0;
}

void http_client_response_free(http_client_response_t *resp)
{
    if (resp == NULL)
        return;
    http_client_headers_clear(resp);
    free(resp->body);
    memset(resp, 0, sizeof *resp);
}

const char *http_client_response_header(const http_client_response_t *resp, const char *name)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    }
    return NULL;
}

/* ---- libcurl callbacks ------------------------------------------------------------------ */

/* Hands status and headers to on_headers once, for the final (non-1xx) response. */
static bool http_client_deliver_headers(struct http_client_xfer *x, CURL *easy)
{
    if (x->headers_done)
        return true;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return true; /* 1xx: the real response follows */
    x->headers_done = true;
    x->resp->status = status;
    if (x->on_headers && x->on_headers(x->resp, x->ud) != 0) {
        x->aborted = true;
        return false;
    }
    return true;
}

struct http_client_cb {
    struct http_client_xfer *x;
    CURL *easy;
};

static size_t http_client_on_header(char *line, size_t size, size_t n, void *ud)
{
    struct http_client_cb *cb = ud;
    struct http_client_xfer *x = cb->x;
    http_client_response_t *resp = x->resp;
    x->last_byte_ms = timing_now_ms();
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        http_client_headers_clear(resp); /* a new response (after a 1xx) starts */
        return n;
    }
    size_t len = n;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len == 0)
        return http_client_deliver_headers(x, cb->easy) ? n : 0;
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return n;
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    resp->headers = xrealloc(resp->headers, (resp->n_headers + 1) * sizeof *resp->headers);
    resp->headers[resp->n_headers].name = xstrndup(line, (size_t)(colon - line));
    resp->headers[resp->n_headers].value = xstrndup(v, (size_t)(end - v));
    resp->n_headers++;
    return n;
}

static size_t http_client_on_data(char *data, size_t size, size_t n, void *ud)
{
    struct http_client_cb *cb = ud;
    struct http_client_xfer *x = cb->x;
    x->last_byte_ms = timing_now_ms();
    if (!http_client_deliver_headers(x, cb->easy))
        return 0;
    if (x->buffered) {
        http_client_response_t *resp = x->resp;
        size_t max = x->req->max_body_bytes ? x->req->max_body_bytes : HTTP_CLIENT_DEFAULT_MAX_BODY;
        if (resp->body_len + n > max) {
            x->too_large = true;
            return 0;
        }
        resp->body = xrealloc(resp->body, resp->body_len + n + 1);
        memcpy(resp->body + resp->body_len, data, n);
        resp->body_len += n;
        resp->body[resp->body_len] = '\0';
        return n;
    }
    if (x->on_data(data, n, x->ud) != 0) {
        x->aborted = true;
        return 0;
    }
    return n;
}

/* ---- the transfer ----------------------------------------------------------------------- */

/* Sets easy (the thread's, in its reset state) up for req. */
static CURL *http_client_easy(CURL *easy, const http_client_request_t *req,
                              struct http_client_cb *cb, struct curl_slist **hl, char *errbuf)
{
    if (easy == NULL)
        return NULL;
    curl_easy_setopt(easy, CURLOPT_URL, req->url);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms > 0 ? req->connect_timeout_ms
                                                 : HTTP_CLIENT_DEFAULT_CONNECT_MS);
    if (req->timeout_ms > 0)
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, http_client_on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, cb);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_client_on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, cb);

    const char *method = req->method ? req->method : (req->body ? "POST" : "GET");
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else {
        if (req->body) {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        }
        if (strcmp(method, req->body ? "POST" : "GET") != 0)
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
    }
    bool has_expect = false;
    for (const char *const *h = req->headers; h && *h; h++) {
        *hl = curl_slist_append(*hl, *h);
        has_expect = has_expect || strncasecmp(*h, "Expect:", 7) == 0;
    }
    if (!has_expect) /* no 100-continue round trip before the body */
        *hl = curl_slist_append(*hl, "Expect:");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, *hl);
    return easy;
}

static http_client_result_t http_client_classify(CURL *easy, CURLcode code, char *errbuf,
                                                 http_client_response_t *resp)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(code);
    curl_off_t connect_us = 0;
    long os_errno = 0;
    switch (code) {
    case CURLE_OK:
        return HTTP_CLIENT_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        snprintf(resp->error, sizeof resp->error, "cannot resolve host: %s", why);
        return HTTP_CLIENT_ERR_CONNECT;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
        snprintf(resp->error, sizeof resp->error, "%s: %s",
                 os_errno == ECONNREFUSED ? "connection refused" : "connect failed", why);
        return HTTP_CLIENT_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        if (connect_us == 0) {
            snprintf(resp->error, sizeof resp->error, "connect timed out: %s", why);
            return HTTP_CLIENT_ERR_CONNECT;
        }
        snprintf(resp->error, sizeof resp->error, "timed out: %s", why);
        return HTTP_CLIENT_ERR_TIMEOUT;
    default:
        snprintf(resp->error, sizeof resp->error, "transfer failed: %s", why);
        return HTTP_CLIENT_ERR_OTHER;
    }
}

static http_client_result_t http_client_run(struct http_client_xfer *x)
{
    const http_client_request_t *req = x->req;
    http_client_response_t *resp = x->resp;
    memset(resp, 0, sizeof *resp);
    http_client_global_init();

    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hl = NULL;
    struct http_client_cb cb = {.x = x};
    CURLM *multi = NULL;
    http_client_result_t rc;
    bool idle = false;
    CURLcode code = CURLE_OK;

    if (req->url == NULL) {
        snprintf(resp->error, sizeof resp->error, "no URL");
        return HTTP_CLIENT_ERR_OTHER;
    }
    struct http_client_handles *handles = http_client_handles();
    cb.easy = http_client_easy(handles->easy, req, &cb, &hl, errbuf);
    multi = handles->multi;
    if (cb.easy == NULL || multi == NULL || curl_multi_add_handle(multi, cb.easy) != CURLM_OK) {
        snprintf(resp->error, sizeof resp->error, "libcurl initialisation failed");
        rc = HTTP_CLIENT_ERR_OTHER;
        goto out;
    }
    http_client_cancel_attach(req->cancel, multi);

    x->last_byte_ms = timing_now_ms();
    for (;;) {
        if (req->cancel && http_client_cancel_fired(req->cancel))
            break;
        int running = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc != CURLM_OK) {
            snprintf(resp->error, sizeof resp->error, "libcurl: %s", curl_multi_strerror(mc));
            rc = HTTP_CLIENT_ERR_OTHER;
            goto out;
        }
        if (running == 0)
            break;
        int wait = HTTP_CLIENT_MAX_WAIT_MS;
        if (req->idle_timeout_ms > 0) {
            int64_t silent_ms = (int64_t)(timing_now_ms() - x->last_byte_ms);
            int64_t left = req->idle_timeout_ms - silent_ms;
            if (left <= 0) {
                idle = true;
                break;
            }
            if (left < wait)
                wait = (int)left;
        }
        curl_multi_poll(multi, NULL, 0, wait, NULL);
    }

    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == cb.easy)
            code = msg->data.result;
    }
    if (req->cancel && http_client_cancel_fired(req->cancel)) {
        snprintf(resp->error, sizeof resp->error, "cancelled");
        rc = HTTP_CLIENT_ERR_ABORTED;
    } else if (x->aborted) {
        snprintf(resp->error, sizeof resp->error, "aborted by the receiver");
        rc = HTTP_CLIENT_ERR_ABORTED;
    } else if (x->too_large) {
        snprintf(resp->error, sizeof resp->error, "response body over %zu bytes",
                 req->max_body_bytes ? req->max_body_bytes : HTTP_CLIENT_DEFAULT_MAX_BODY);
        rc = HTTP_CLIENT_ERR_TOO_LARGE;
    } else if (idle) {
        snprintf(resp->error, sizeof resp->error, "nothing received for %ld ms",
                 req->idle_timeout_ms);
        rc = HTTP_CLIENT_ERR_IDLE;
    } else {
        rc = http_client_classify(cb.easy, code, errbuf, resp);
        if (rc == HTTP_CLIENT_OK && !x->headers_done)
            curl_easy_getinfo(cb.easy, CURLINFO_RESPONSE_CODE, &resp->status);
    }
out:
    http_client_cancel_attach(req->cancel, NULL);
    if (multi && cb.easy)
        curl_multi_remove_handle(multi, cb.easy); /* both kept for the thread's next call */
    if (cb.easy)
        curl_easy_reset(cb.easy); /* drops the pointers to this call's stack and header list */
    curl_slist_free_all(hl);
    if (rc != HTTP_CLIENT_OK) {
        free(resp->body);
        resp->body = NULL;
        resp->body_len = 0;
    } else if (x->buffered && resp->body == NULL) {
        resp->body = xstrdup("");
    }
    return rc;
}

http_client_result_t http_client_request(const http_client_request_t *req,
                                         http_client_response_t *resp)
{
    struct http_client_xfer x = {.req = req, .resp = resp, .buffered = true};
    return http_client_run(&x);
}

http_client_result_t http_client_stream(const http_client_request_t *req,
                                        http_client_headers_fn on_headers,
                                        http_client_data_fn on_data, void *ud,
                                        http_client_response_t *resp)
{
    struct http_client_xfer x = {
            .req = req, .resp = resp, .on_headers = on_headers, .on_data = on_data, .ud = ud};
    return http_client_run(&x);
}
