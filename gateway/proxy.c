/*
 * gateway/proxy.c — requests carried to neurons on worker threads, answers carried back in the
 * client's dialect (see proxy.h).
 *
 * Thread protocol of a job: proxy_start (server thread) defers the request with proxy_on_gone
 * and starts the job's thread; from then on the job belongs to that thread, except `cancel`,
 * which proxy_on_gone (server thread) fires when the client goes away — http_client_cancel is
 * made for exactly that. The job is freed by its thread after the reply is given or the stream
 * is closed, after which the server never calls proxy_on_gone again (see http_request.h).
 */
#include "proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"
#include "buf.h"
#include "error.h"
#include "http_client.h"
#include "http_stream.h"
#include "jsonutil.h"
#include "log.h"
#include "openai.h"
#include "sse.h"
#include "timing.h"
#include "xalloc.h"

/* Largest error body kept from a neuron, and largest buffered answer. */
#define PROXY_ERROR_BODY_MAX (64 * 1024)
#define PROXY_ANSWER_MAX     (256 * 1024 * 1024)
/* How long a write waits for a client that does not read before it counts as gone. */
#define PROXY_WRITE_WAIT_MS 30000

struct proxy {
    struct proxy_settings s;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* in_flight reached 0 */
    unsigned in_flight;  /* under mu */
};

struct proxy_job {
    struct proxy *proxy;
    http_request_t *req;
    struct log_ctx log;
    enum proxy_kind kind;
    bool anthropic; /* the client's dialect */
    bool stream, include_usage;
    char *client_model;
    char *served_model;
    char *body; /* the neuron request, JSON text */
    size_t body_len;
    http_client_cancel_t *cancel;

    /* one attempt's streaming state */
    long status;           /* the neuron's HTTP status, 0 before headers */
    struct buf error_body; /* a non-200 answer's body (bounded) */
    sse_parser_t *parser;
    bool event_seen; /* the last piece of data completed an event */

    /* the client's stream, once started */
    http_stream_t *out;
    struct anthropic_stream *astream;
    struct buf pending;     /* bytes to write to the client */
    bool done;              /* the client's stream ended (success or error event) */
    bool client_gone;       /* a write found the client gone or not reading */
    uint64_t last_write_ms; /* monotonic */
};

struct proxy *proxy_create(const struct proxy_settings *settings)
{
    struct proxy *p = xcalloc(1, sizeof *p);
    p->s = *settings;
    if (p->s.connect_timeout_ms <= 0)
        p->s.connect_timeout_ms = 5000;
    if (p->s.idle_timeout_ms <= 0)
        p->s.idle_timeout_ms = 300000;
    if (p->s.max_attempts <= 0)
        p->s.max_attempts = 3;
    if (p->s.ping_interval_ms <= 0)
        p->s.ping_interval_ms = 10000;
    if (p->s.max_in_flight == 0)
        p->s.max_in_flight = 10000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->idle, NULL);
    return p;
}

void proxy_destroy(struct proxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->in_flight > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

unsigned proxy_in_flight(const struct proxy *p)
{
    struct proxy *mp = (struct proxy *)p; /* the lock is not part of the value */
    pthread_mutex_lock(&mp->mu);
    unsigned n = mp->in_flight;
    pthread_mutex_unlock(&mp->mu);
    return n;
}

void proxy_reply_error(http_request_t *req, bool anthropic, const struct error *e)
{
    enum error_dialect d = anthropic ? ERROR_DIALECT_ANTHROPIC : ERROR_DIALECT_OPENAI;
    const char *id = http_request_id(req);
    if (anthropic)
        http_request_add_reply_header(req, "request-id", id);
    if (error_info(e->code)->retry_after)
        http_request_add_reply_header(req, "Retry-After", "2");
    json_t *body = error_body(d, e, id);
    http_request_reply_json(req, error_http_status(e->code, d), body);
    json_decref(body);
}

/* ---- client side -------------------------------------------------------------------------- */

/* Writes job->pending to the client stream; false when the client is gone (or not reading). */
static bool proxy_flush(struct proxy_job *job)
{
    if (job->pending.len == 0 || job->client_gone)
        return !job->client_gone;
    for (;;) {
        http_stream_result_t r = http_stream_write(job->out, job->pending.data, job->pending.len);
        if (r == HTTP_STREAM_OK)
            break;
        if (r == HTTP_STREAM_FULL &&
            http_stream_wait_writable(job->out, PROXY_WRITE_WAIT_MS) == HTTP_STREAM_OK)
            continue;
        job->client_gone = true;
        http_client_cancel_fire(job->cancel);
        break;
    }
    buf_reset(&job->pending);
    job->last_write_ms = timing_now_ms();
    return !job->client_gone;
}

/* Starts the client's event stream (status 200). */
static void proxy_start_stream(struct proxy_job *job)
{
    if (job->anthropic)
        http_request_add_reply_header(job->req, "request-id", http_request_id(job->req));
    job->out = http_stream_start(job->req, 200, "text/event-stream", NULL, NULL);
    if (!job->out) { /* answered already: cannot happen for a deferred request */
        job->client_gone = true;
        return;
    }
    if (job->anthropic) {
        job->astream = anthropic_stream_create(NULL, job->client_model);
        anthropic_stream_start(job->astream, 0, &job->pending);
    }
    proxy_flush(job);
}

/* Ends the client's stream with an in-band error event (if it has not ended yet). */
static void proxy_stream_fail(struct proxy_job *job, const struct error *e)
{
    if (job->done)
        return;
    if (job->anthropic)
        anthropic_stream_fail(job->astream, e, &job->pending);
    else
        openai_sse_error(&job->pending, e);
    job->done = true;
    proxy_flush(job);
}

/* ---- neuron side -------------------------------------------------------------------------- */

/* One OpenAI chunk on its way to an OpenAI client: passed through, except a usage-only chunk
 * the client did not ask for; an error chunk ends the stream. */
static void proxy_openai_event(struct proxy_job *job, const char *data, size_t len)
{
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        openai_sse_done(&job->pending);
        job->done = true;
        return;
    }
    json_t *chunk = json_loadb(data, len, 0, NULL);
    if (!chunk) {
        struct error e = ERROR_INIT;
        error_set(&e, ERR_UPSTREAM, NULL, "the model server sent a stream event that is not JSON");
        openai_sse_error(&job->pending, &e);
        job->done = true;
        error_clear(&e);
        return;
    }
    const json_t *error = json_object_get(chunk, "error");
    const json_t *choices = json_object_get(chunk, "choices");
    if (error && !json_is_null(error)) {
        struct error e = ERROR_INIT;
        openai_error_from_upstream(0, chunk, &e);
        openai_sse_error(&job->pending, &e);
        job->done = true;
        error_clear(&e);
    } else if (!(json_is_array(choices) && json_array_size(choices) == 0 &&
                 json_object_get(chunk, "usage") && !job->include_usage)) {
        buf_append_str(&job->pending, "data: ");
        buf_append(&job->pending, data, len);
        buf_append_str(&job->pending, "\n\n");
    }
    json_decref(chunk);
}

static int proxy_on_event(const sse_event_t *ev, void *ud)
{
    struct proxy_job *job = ud;
    job->event_seen = true;
    if (job->done)
        return 1;
    if (job->anthropic) {
        if (anthropic_stream_feed_data(job->astream, ev->data, ev->data_len, &job->pending, NULL) !=
            0)
            job->done = true;
    } else {
        proxy_openai_event(job, ev->data, ev->data_len);
    }
    return job->done ? 1 : 0;
}

static int proxy_on_headers(const http_client_response_t *resp, void *ud)
{
    struct proxy_job *job = ud;
    job->status = resp->status;
    if (resp->status == 200 && !job->out)
        proxy_start_stream(job);
    return job->client_gone ? 1 : 0;
}

static int proxy_on_data(const char *data, size_t len, void *ud)
{
    struct proxy_job *job = ud;
    if (job->status != 200) {
        if (job->error_body.len + len <= PROXY_ERROR_BODY_MAX)
            buf_append(&job->error_body, data, len);
        return 0;
    }
    job->event_seen = false;
    int rc = sse_parser_feed(job->parser, data, len, proxy_on_event, job);
    if (rc == SSE_TOO_LARGE) {
        struct error e = ERROR_INIT;
        error_set(&e, ERR_UPSTREAM, NULL, "the model server sent an oversized stream event");
        proxy_stream_fail(job, &e);
        error_clear(&e);
        return 1;
    }
    /* Only comments (the neuron's keep-alives during a long prefill): keep the client's
     * connection and its proxies alive too. */
    if (!job->event_seen && !job->done &&
        timing_now_ms() - job->last_write_ms >= (uint64_t)job->proxy->s.ping_interval_ms) {
        if (job->anthropic)
            anthropic_sse_ping(&job->pending);
        else
            openai_sse_keepalive(&job->pending);
    }
    if (!proxy_flush(job))
        return 1;
    return job->done ? 1 : 0;
}

/* The error a finished exchange with a non-200 status stands for. */
static void proxy_status_error(struct proxy_job *job, long status, const char *body, size_t len,
                               struct error *e)
{
    json_t *doc = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    openai_error_from_upstream(status, doc, e);
    json_decref(doc);
}

/* The error a transport failure stands for. */
static void proxy_transport_error(http_client_result_t rc, const char *what, struct error *e)
{
    if (rc == HTTP_CLIENT_ERR_IDLE || rc == HTTP_CLIENT_ERR_TIMEOUT)
        error_set(e, ERR_TIMEOUT, NULL, "the model server stopped answering");
    else
        error_set(e, ERR_UPSTREAM, NULL, "the model server failed: %s", what);
}

/* count_tokens: {"input_tokens": prompt_tokens} from a completion's usage. */
static int proxy_count_tokens(const char *body, size_t len, json_t **out, struct error *e)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    const json_t *n = json_object_get(json_object_get(doc, "usage"), "prompt_tokens");
    int rc = -1;
    if (json_is_integer(n)) {
        *out = json_pack("{s:I}", "input_tokens", json_integer_value(n));
        rc = 0;
    } else {
        error_set(e, ERR_UPSTREAM, NULL, "the model server did not report prompt tokens");
    }
    json_decref(doc);
    return rc;
}

/* A 200 buffered answer, replied in the client's dialect. */
static void proxy_reply_ok(struct proxy_job *job, const http_client_response_t *resp)
{
    struct error e = ERROR_INIT;
    json_t *answer = NULL;
    if (job->kind == PROXY_KIND_MESSAGES) {
        json_t *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
        int rc = doc ? anthropic_response_from_openai(doc, NULL, job->client_model, &answer, &e)
                     : -1;
        if (!doc)
            error_set(&e, ERR_UPSTREAM, NULL, "the model server sent an answer that is not JSON");
        json_decref(doc);
        if (rc < 0)
            goto fail;
    } else if (job->kind == PROXY_KIND_COUNT_TOKENS) {
        if (proxy_count_tokens(resp->body, resp->body_len, &answer, &e) < 0)
            goto fail;
    } else {
        http_request_reply(job->req, 200, "application/json", resp->body, resp->body_len);
        return;
    }
    http_request_add_reply_header(job->req, "request-id", http_request_id(job->req));
    http_request_reply_json(job->req, 200, answer);
    json_decref(answer);
    return;
fail:
    LOGC_WARN(&job->log, "bad answer from the model server: %s", error_message(&e));
    proxy_reply_error(job->req, job->anthropic, &e);
    error_clear(&e);
}

/* The path on the neuron for a kind. */
static const char *proxy_path(enum proxy_kind kind)
{
    switch (kind) {
    case PROXY_KIND_COMPLETION:
        return "/v1/completions";
    case PROXY_KIND_EMBEDDING:
        return "/v1/embeddings";
    default:
        return "/v1/chat/completions";
    }
}

/*
 * One attempt on one neuron. Returns true when the request is answered (or the client gone),
 * false to try another neuron (nothing reached the client); *outcome says how the neuron did,
 * *last holds the error to answer with if no other neuron is left.
 */
static bool proxy_attempt(struct proxy_job *job, const struct upstream_lease *lease,
                          enum upstream_outcome *outcome, struct error *last)
{
    static const char *const headers[] = {"Content-Type: application/json",
                                          "Accept: text/event-stream, application/json", NULL};
    char url[512];
    snprintf(url, sizeof url, "%s%s", lease->url, proxy_path(job->kind));
    http_client_request_t creq = {
            .method = "POST",
            .url = url,
            .headers = headers,
            .body = job->body,
            .body_len = job->body_len,
            .connect_timeout_ms = job->proxy->s.connect_timeout_ms,
            .idle_timeout_ms = job->proxy->s.idle_timeout_ms,
            .max_body_bytes = PROXY_ANSWER_MAX,
            .cancel = job->cancel,
    };
    http_client_response_t resp;
    http_client_result_t rc;
    job->status = 0;
    buf_reset(&job->error_body);
    if (job->stream) {
        sse_parser_destroy(job->parser);
        job->parser = sse_parser_create(0);
        rc = http_client_stream(&creq, proxy_on_headers, proxy_on_data, job, &resp);
    } else {
        rc = http_client_request(&creq, &resp);
    }
    bool answered = true;
    bool gone = job->client_gone || (http_client_cancel_fired(job->cancel) && !job->done);
    /* We stop reading once the client's stream has ended ([DONE], message_stop, an error). */
    if (rc == HTTP_CLIENT_ERR_ABORTED && job->done && !gone)
        rc = HTTP_CLIENT_OK;
    if (gone) {
        *outcome = UPSTREAM_OUTCOME_NEUTRAL;
        LOGC_INFO(&job->log, "client went away; neuron request aborted");
        if (!job->out) { /* a deferred request must still be answered to be released */
            error_set(last, ERR_UNAVAILABLE, NULL, "the client went away");
            proxy_reply_error(job->req, job->anthropic, last);
        }
    } else if (rc == HTTP_CLIENT_ERR_CONNECT) {
        *outcome = UPSTREAM_OUTCOME_FAILED;
        error_set(last, ERR_UNAVAILABLE, NULL, "no model server could be reached");
        LOGC_WARN(&job->log, "upstream %s: %s", lease->url, resp.error);
        answered = false;
    } else if (rc != HTTP_CLIENT_OK) {
        *outcome = UPSTREAM_OUTCOME_FAILED;
        proxy_transport_error(rc, resp.error, last);
        LOGC_WARN(&job->log, "upstream %s: %s", lease->url, resp.error);
        if (job->out)
            proxy_stream_fail(job, last);
        else
            proxy_reply_error(job->req, job->anthropic, last);
    } else if (resp.status == 200) {
        *outcome = UPSTREAM_OUTCOME_OK;
        if (!job->stream) {
            proxy_reply_ok(job, &resp);
        } else if (!job->done) {
            /* The neuron closed the stream without its end. */
            struct error e = ERROR_INIT;
            if (job->anthropic) {
                if (anthropic_stream_end(job->astream, &job->pending, &e) == 0)
                    error_clear(&e);
                job->done = true;
                proxy_flush(job);
            } else {
                error_set(&e, ERR_UPSTREAM, NULL, "the model server ended the stream early");
                proxy_stream_fail(job, &e);
            }
            if (e.code != ERR_NONE)
                LOGC_WARN(&job->log, "stream from %s: %s", lease->url, error_message(&e));
            error_clear(&e);
        }
    } else {
        const char *body = job->stream ? buf_cstr(&job->error_body) : resp.body;
        size_t len = job->stream ? job->error_body.len : resp.body_len;
        proxy_status_error(job, resp.status, body, len, last);
        *outcome = resp.status >= 500 ? UPSTREAM_OUTCOME_FAILED : UPSTREAM_OUTCOME_OK;
        if (resp.status == 503) {
            answered = false; /* busy or not serving it now: another neuron may */
        } else {
            if (resp.status >= 500)
                LOGC_WARN(&job->log, "upstream %s answered %ld: %s", lease->url, resp.status,
                          error_message(last));
            proxy_reply_error(job->req, job->anthropic, last);
        }
    }
    http_client_response_free(&resp);
    return answered;
}

static void proxy_finish(struct proxy_job *job)
{
    if (job->out)
        http_stream_close(job->out);
    struct proxy *p = job->proxy;
    http_client_cancel_destroy(job->cancel);
    sse_parser_destroy(job->parser);
    anthropic_stream_destroy(job->astream);
    buf_free(&job->pending);
    buf_free(&job->error_body);
    free(job->client_model);
    free(job->served_model);
    free(job->body);
    free(job);
    pthread_mutex_lock(&p->mu);
    if (--p->in_flight == 0)
        pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
}

static void *proxy_thread(void *arg)
{
    struct proxy_job *job = arg;
    struct proxy *p = job->proxy;
    uint64_t tried = 0;
    struct error last = ERROR_INIT;
    bool answered = false;
    for (int attempt = 0; attempt < p->s.max_attempts && !answered; attempt++) {
        struct upstream_lease lease;
        if (upstream_pool_acquire(p->s.pool, job->served_model, tried, &lease) < 0)
            break;
        tried |= 1ull << lease.index;
        enum upstream_outcome outcome = UPSTREAM_OUTCOME_NEUTRAL;
        answered = proxy_attempt(job, &lease, &outcome, &last);
        upstream_pool_release(p->s.pool, lease.index, outcome);
    }
    if (!answered) {
        if (last.code == ERR_NONE)
            error_set(&last, ERR_UNAVAILABLE, NULL,
                      "no model server is available for '%s' now; retry later", job->client_model);
        proxy_reply_error(job->req, job->anthropic, &last);
    }
    error_clear(&last);
    proxy_finish(job);
    return NULL;
}

static void proxy_on_gone(void *ud)
{
    struct proxy_job *job = ud;
    http_client_cancel_fire(job->cancel);
}

void proxy_start(struct proxy *p, http_request_t *req, struct proxy_call *call)
{
    bool anthropic = call->kind == PROXY_KIND_MESSAGES || call->kind == PROXY_KIND_COUNT_TOKENS;
    pthread_mutex_lock(&p->mu);
    bool admitted = p->in_flight < p->s.max_in_flight;
    if (admitted)
        p->in_flight++;
    pthread_mutex_unlock(&p->mu);
    if (!admitted) {
        json_decref(call->body);
        struct error e = ERROR_INIT;
        error_set(&e, ERR_OVERLOADED, NULL, NULL);
        proxy_reply_error(req, anthropic, &e);
        error_clear(&e);
        return;
    }
    struct proxy_job *job = xcalloc(1, sizeof *job);
    job->proxy = p;
    job->req = req;
    job->kind = call->kind;
    job->anthropic = anthropic;
    job->stream = call->stream && call->kind != PROXY_KIND_COUNT_TOKENS &&
                  call->kind != PROXY_KIND_EMBEDDING;
    job->include_usage = call->include_usage;
    job->client_model = xstrdup(call->client_model ? call->client_model : "");
    const char *served = json_string_value(json_object_get(call->body, "model"));
    job->served_model = xstrdup(served ? served : "");
    if (job->stream) {
        json_object_set_new(call->body, "stream", json_true());
        json_object_set_new(call->body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    job->body = jsonutil_dumps(call->body);
    job->body_len = strlen(job->body);
    json_decref(call->body);
    call->body = NULL;
    job->cancel = http_client_cancel_create();
    job->log = (struct log_ctx){.request_id = http_request_id(req), .model = job->served_model};

    http_request_defer(req, proxy_on_gone, job);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, proxy_thread, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        LOGC_ERROR(&job->log, "cannot start a proxy thread: %s", strerror(rc));
        struct error e = ERROR_INIT;
        error_set(&e, ERR_OVERLOADED, NULL, NULL);
        proxy_reply_error(req, anthropic, &e);
        error_clear(&e);
        proxy_finish(job);
    }
}
