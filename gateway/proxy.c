/*
 * gateway/proxy.c — requests carried to neurons on worker threads, answers carried back in the
 * client's dialect (see proxy.h).
 *
 * Thread protocol of a job: proxy_start (server thread) defers the request with proxy_on_gone
 * and starts the job's thread; from then on the job belongs to that thread, except `cancel`,
 * which proxy_on_gone (server thread) fires when the client goes away — http_client_cancel is
 * made for exactly that. The job is freed by its thread after the reply is given or the stream
 * is closed, after which the server never calls proxy_on_gone again (see http_request.h).
 *
 * Keep-alives: while a client stream is open, its job is on the proxy's `streams` list (under
 * proxy mu). The ticker thread walks that list and writes a ping to every stream that has been
 * quiet for ping_interval_ms. Writes to a client stream happen under the job's out_mu (the
 * worker's and the ticker's); the ticker only try-locks it, so a worker blocked on a slow client
 * never blocks the ticker. Lock order: proxy mu, then a job's out_mu; the worker never takes
 * proxy mu while holding out_mu. A job leaves the list before its stream is closed.
 */
#include "proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "accounting.h"
#include "anthropic.h"
#include "buf.h"
#include "error.h"
#include "http_client.h"
#include "http_stream.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "openai.h"
#include "ratelimit.h"
#include "snapshot.h"
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
    pthread_cond_t idle;       /* in_flight reached 0 */
    pthread_cond_t tick;       /* wakes the ticker early (stopping) */
    unsigned in_flight;        /* under mu */
    struct proxy_job *streams; /* jobs with an open client stream, under mu */
    bool stopping;             /* under mu */
    pthread_t ticker;
    bool ticker_started;
    /* Worker threads outlive their request and wait a while for the next one, so a busy gateway
     * does not create a thread per request. proxy_start hands a job to an idle worker through
     * `queue` (under mu), reserving it by decrementing idle_workers; a worker that waited
     * PROXY_WORKER_IDLE_MS for nothing exits. */
    pthread_cond_t work;         /* a job was queued, or stopping */
    pthread_cond_t workers_gone; /* workers reached 0 */
    struct proxy_job *queue;     /* jobs handed to idle workers, under mu */
    unsigned idle_workers;       /* workers waiting and not reserved, under mu */
    unsigned workers;            /* worker threads alive, under mu */
};

/* How long an idle worker thread waits for another request before it exits. */
#define PROXY_WORKER_IDLE_MS 30000

struct proxy_job {
    struct proxy *proxy;
    http_request_t *req;
    char request_id[129]; /* a copy: the summary is logged after the request is released */
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

    struct proxy_job *queue_next; /* on proxy->queue, under proxy mu */

    /* the client's stream, once started */
    pthread_mutex_t out_mu;        /* guards writes to out, last_write_ms, quiet */
    struct proxy_job *prev, *next; /* on proxy->streams, under proxy mu */
    bool listed;                   /* under proxy mu */
    bool quiet;                    /* the stream has ended: no more pings */
    http_stream_t *out;
    struct anthropic_stream *astream;
    struct buf pending;     /* bytes to write to the client */
    bool done;              /* the client's stream ended (success or error event) */
    bool ended_ok;          /* ... with its normal end ([DONE] / message_stop) */
    bool closed;            /* the client's stream is closed already: the rest of the neuron's
                               answer is only read to keep its connection reusable */
    bool client_gone;       /* a write found the client gone or not reading */
    uint64_t last_write_ms; /* monotonic */

    /* for the summary line */
    uint64_t start_ms, first_ms; /* monotonic: start; first event from the neuron */
    int reply_status;            /* what the client got */
    char upstream[256];          /* the neuron tried last */
    int attempts;
    bool cold_start;
    int64_t api_key_id;
    int64_t rpm, tpm;      /* the key's limits; 0: unlimited */
    int retry_after_s;     /* Retry-After of the error answered; 0: the table's default */
    int64_t start_wall_us; /* receive time for the request row */
    uint64_t held_ms;      /* time held for a cold start */
    bool have_usage;
    int64_t tokens_in, tokens_out;
};

/* Pings every client stream that has been quiet for ping_interval_ms (see the protocol). */
static void *proxy_ticker(void *arg)
{
    struct proxy *p = arg;
    int64_t interval = p->s.ping_interval_ms;
    int64_t step = interval / 4 > 50 ? interval / 4 : 50;
    struct buf anthropic_ping = BUF_INIT, openai_ping = BUF_INIT;
    anthropic_sse_ping(&anthropic_ping);
    openai_sse_keepalive(&openai_ping);
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += step / 1000;
        until.tv_nsec += (step % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->tick, &p->mu, &until);
        uint64_t now = timing_now_ms();
        for (struct proxy_job *job = p->streams; job && !p->stopping; job = job->next) {
            if (pthread_mutex_trylock(&job->out_mu) != 0)
                continue; /* the worker is writing: the stream is not quiet */
            if (!job->quiet && !job->client_gone &&
                now - job->last_write_ms >= (uint64_t)interval) {
                const struct buf *ping = job->anthropic ? &anthropic_ping : &openai_ping;
                if (http_stream_write(job->out, ping->data, ping->len) == HTTP_STREAM_OK)
                    job->last_write_ms = now;
            }
            pthread_mutex_unlock(&job->out_mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    buf_free(&anthropic_ping);
    buf_free(&openai_ping);
    return NULL;
}

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
    if (p->s.hold_timeout_ms <= 0)
        p->s.hold_timeout_ms = 120000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->idle, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->tick, &ca);
    pthread_cond_init(&p->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&p->workers_gone, NULL);
    p->ticker_started = pthread_create(&p->ticker, NULL, proxy_ticker, p) == 0;
    if (!p->ticker_started)
        LOG_ERROR("cannot start the keep-alive thread: streams get no pings");
    return p;
}

void proxy_destroy(struct proxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->in_flight > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->tick);
    pthread_cond_broadcast(&p->work);
    while (p->workers > 0) /* idle workers leave at once; they touch p until they do */
        pthread_cond_wait(&p->workers_gone, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (p->ticker_started)
        pthread_join(p->ticker, NULL);
    pthread_cond_destroy(&p->workers_gone);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->tick);
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
    proxy_reply_error_after(req, anthropic, e, 2);
}

void proxy_reply_error_after(http_request_t *req, bool anthropic, const struct error *e,
                             int retry_after_s)
{
    enum error_dialect d = anthropic ? ERROR_DIALECT_ANTHROPIC : ERROR_DIALECT_OPENAI;
    const char *id = http_request_id(req);
    if (anthropic)
        http_request_add_reply_header(req, "request-id", id);
    if (error_info(e->code)->retry_after) {
        char after[16];
        snprintf(after, sizeof after, "%d", retry_after_s > 0 ? retry_after_s : 2);
        http_request_add_reply_header(req, "Retry-After", after);
    }
    json_t *body = error_body(d, e, id);
    http_request_reply_json(req, error_http_status(e->code, d), body);
    json_decref(body);
}

/* Answers the job's request with e (before anything was sent). */
static void proxy_stream_fail(struct proxy_job *job, const struct error *e);

static void proxy_job_error(struct proxy_job *job, const struct error *e)
{
    if (job->out) { /* a held stream has started already: the error goes in band */
        proxy_stream_fail(job, e);
        return;
    }
    job->reply_status = error_http_status(e->code, job->anthropic ? ERROR_DIALECT_ANTHROPIC
                                                                  : ERROR_DIALECT_OPENAI);
    proxy_reply_error_after(job->req, job->anthropic, e, job->retry_after_s);
}

/* Records the token counts of an OpenAI usage object. */
static void proxy_job_usage(struct proxy_job *job, const json_t *usage)
{
    const json_t *in = json_object_get(usage, "prompt_tokens");
    const json_t *out = json_object_get(usage, "completion_tokens");
    if (!json_is_integer(in) || !json_is_integer(out))
        return;
    job->have_usage = true;
    job->tokens_in = (int64_t)json_integer_value(in);
    job->tokens_out = (int64_t)json_integer_value(out);
}

/* ---- client side -------------------------------------------------------------------------- */

/* Writes job->pending to the client stream; false when the client is gone (or not reading). */
static bool proxy_flush(struct proxy_job *job)
{
    if (job->pending.len == 0 || job->client_gone)
        return !job->client_gone;
    pthread_mutex_lock(&job->out_mu);
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
    if (job->done)
        job->quiet = true;
    pthread_mutex_unlock(&job->out_mu);
    return !job->client_gone;
}

/* Takes the job off the ticker's list. */
static void proxy_unlist(struct proxy_job *job)
{
    struct proxy *p = job->proxy;
    pthread_mutex_lock(&p->mu);
    if (job->listed) {
        if (job->prev)
            job->prev->next = job->next;
        else
            p->streams = job->next;
        if (job->next)
            job->next->prev = job->prev;
        job->listed = false;
    }
    pthread_mutex_unlock(&p->mu);
}

/* The client's stream has had its normal end: close it now rather than after the neuron's
 * answer is over. The worker then reads the neuron's answer to its end, so the connection is
 * kept for the next request instead of being cut (a cut connection costs a new connect). */
static void proxy_end_client_stream(struct proxy_job *job)
{
    proxy_unlist(job); /* off the ticker's list before the stream goes */
    pthread_mutex_lock(&job->out_mu);
    http_stream_close(job->out);
    job->closed = true;
    job->quiet = true;
    pthread_mutex_unlock(&job->out_mu);
}

/* The prompt's token count a neuron announces in X-Prompt-Tokens (neuron/openai_api.h), or 0. */
static int64_t proxy_prompt_tokens(const http_client_response_t *resp)
{
    const char *v = resp ? http_client_response_header(resp, "X-Prompt-Tokens") : NULL;
    if (!v)
        return 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    return end != v && *end == '\0' && n > 0 ? (int64_t)n : 0;
}

/* Starts the client's event stream (status 200). resp: the neuron's answer headers; NULL for a
 * request held for a cold start, whose Anthropic message_start waits for the neuron's headers
 * (they carry the prompt's token count for usage.input_tokens): it gets a ping meanwhile. */
static void proxy_start_stream(struct proxy_job *job, const http_client_response_t *resp)
{
    if (job->anthropic)
        http_request_add_reply_header(job->req, "request-id", http_request_id(job->req));
    job->out = http_stream_start(job->req, 200, "text/event-stream", NULL, NULL);
    if (!job->out) { /* answered already: cannot happen for a deferred request */
        job->client_gone = true;
        return;
    }
    job->reply_status = 200;
    if (job->anthropic) {
        job->astream = anthropic_stream_create(NULL, job->client_model);
        if (resp)
            anthropic_stream_start(job->astream, proxy_prompt_tokens(resp), &job->pending);
        else
            anthropic_sse_ping(&job->pending);
    }
    proxy_flush(job);
    struct proxy *p = job->proxy;
    pthread_mutex_lock(&p->mu);
    job->next = p->streams;
    if (p->streams)
        p->streams->prev = job;
    p->streams = job;
    job->listed = true;
    pthread_mutex_unlock(&p->mu);
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
 * the client did not ask for; an error chunk (or one that is not JSON, where it is read) ends
 * the stream. */
static void proxy_openai_event(struct proxy_job *job, const char *data, size_t len)
{
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        openai_sse_done(&job->pending);
        job->done = true;
        job->ended_ok = true;
        return;
    }
    /* Most chunks are content deltas passed through as they are: parsing them would be the
     * largest user-space cost of a stream. Only a chunk that can hold an error or a usage
     * (its text has one of those keys) needs to be read. */
    if (!memmem(data, len, "\"error\"", 7) && !memmem(data, len, "\"usage\"", 7)) {
        buf_append_str(&job->pending, "data: ");
        buf_append(&job->pending, data, len);
        buf_append_str(&job->pending, "\n\n");
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
    proxy_job_usage(job, json_object_get(chunk, "usage"));
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
        int rc = anthropic_stream_feed_data(job->astream, ev->data, ev->data_len, &job->pending,
                                            NULL);
        if (rc != 0) {
            job->done = true;
            job->ended_ok = rc > 0;
        }
    } else {
        proxy_openai_event(job, ev->data, ev->data_len);
    }
    return job->done ? 1 : 0;
}

static int proxy_on_headers(const http_client_response_t *resp, void *ud)
{
    struct proxy_job *job = ud;
    job->status = resp->status;
    if (resp->status == 200 && !job->out) {
        proxy_start_stream(job, resp);
    } else if (resp->status == 200 && job->astream) { /* held: message_start now */
        anthropic_stream_start(job->astream, proxy_prompt_tokens(resp), &job->pending);
        proxy_flush(job);
    }
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
    if (job->closed)
        return 0; /* draining after the end (see proxy_end_client_stream) */
    job->event_seen = false;
    int rc = sse_parser_feed(job->parser, data, len, proxy_on_event, job);
    if (rc == SSE_TOO_LARGE) {
        struct error e = ERROR_INIT;
        error_set(&e, ERR_UPSTREAM, NULL, "the model server sent an oversized stream event");
        proxy_stream_fail(job, &e);
        error_clear(&e);
        return 1;
    }
    if (job->event_seen && job->first_ms == 0)
        job->first_ms = timing_now_ms();
    if (!proxy_flush(job))
        return 1;
    if (job->done && job->ended_ok) {
        proxy_end_client_stream(job);
        return 0;
    }
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

/* count_tokens: {"input_tokens": N} from the neuron's POST /tokenize answer {"count": N, …}. */
static int proxy_count_tokens(const json_t *doc, json_t **out, struct error *e)
{
    const json_t *n = json_object_get(doc, "count");
    if (!json_is_integer(n)) {
        error_set(e, ERR_UPSTREAM, NULL, "the model server did not count the prompt tokens");
        return -1;
    }
    *out = json_pack("{s:I}", "input_tokens", json_integer_value(n));
    return 0;
}

/* A 200 buffered answer, replied in the client's dialect. */
static void proxy_reply_ok(struct proxy_job *job, const http_client_response_t *resp)
{
    struct error e = ERROR_INIT;
    json_t *answer = NULL;
    json_t *doc = json_loadb(resp->body, resp->body_len, 0, NULL);
    proxy_job_usage(job, json_object_get(doc, "usage"));
    if (job->kind == PROXY_KIND_MESSAGES || job->kind == PROXY_KIND_COUNT_TOKENS) {
        int rc = -1;
        if (!doc)
            error_set(&e, ERR_UPSTREAM, NULL, "the model server sent an answer that is not JSON");
        else if (job->kind == PROXY_KIND_MESSAGES)
            rc = anthropic_response_from_openai(doc, NULL, job->client_model, &answer, &e);
        else
            rc = proxy_count_tokens(doc, &answer, &e);
        if (rc < 0)
            goto fail;
        http_request_add_reply_header(job->req, "request-id", http_request_id(job->req));
        http_request_reply_json(job->req, 200, answer);
    } else {
        http_request_reply(job->req, 200, "application/json", resp->body, resp->body_len);
    }
    job->reply_status = 200;
    json_decref(answer);
    json_decref(doc);
    return;
fail:
    LOGC_WARN(&job->log, "bad answer from the model server: %s", error_message(&e));
    proxy_job_error(job, &e);
    error_clear(&e);
    json_decref(doc);
}

/* The path on the neuron for a kind. */
static const char *proxy_path(enum proxy_kind kind)
{
    switch (kind) {
    case PROXY_KIND_COMPLETION:
        return "/v1/completions";
    case PROXY_KIND_EMBEDDING:
        return "/v1/embeddings";
    case PROXY_KIND_COUNT_TOKENS:
        return "/tokenize";
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
    /* We stop reading once the client's stream has ended with an error; after its normal end
     * ([DONE], message_stop) we read the rest, and a failure there no longer concerns it. */
    if ((rc == HTTP_CLIENT_ERR_ABORTED || job->ended_ok) && job->done && !gone)
        rc = HTTP_CLIENT_OK;
    if (gone) {
        pthread_mutex_lock(&job->out_mu);
        job->client_gone = true; /* also tells the ticker */
        pthread_mutex_unlock(&job->out_mu);
        *outcome = UPSTREAM_OUTCOME_NEUTRAL;
        LOGC_INFO(&job->log, "client went away; neuron request aborted");
        if (!job->out) { /* a deferred request must still be answered to be released */
            error_set(last, ERR_UNAVAILABLE, NULL, "the client went away");
            proxy_job_error(job, last);
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
            proxy_job_error(job, last);
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
            proxy_job_error(job, last);
        }
    }
    http_client_response_free(&resp);
    return answered;
}

static const char *proxy_kind_name(enum proxy_kind kind)
{
    switch (kind) {
    case PROXY_KIND_CHAT:
        return "chat";
    case PROXY_KIND_COMPLETION:
        return "completion";
    case PROXY_KIND_EMBEDDING:
        return "embedding";
    case PROXY_KIND_MESSAGES:
        return "messages";
    case PROXY_KIND_COUNT_TOKENS:
        return "count_tokens";
    }
    return "?";
}

/* One line per request: what the accounting row will hold. */
static void proxy_log_summary(struct proxy_job *job)
{
    if (job->astream) {
        int64_t in, out, cached;
        anthropic_stream_usage(job->astream, &in, &out, &cached);
        if (in + cached + out > 0) {
            job->have_usage = true;
            job->tokens_in = in + cached;
            job->tokens_out = out;
        }
    }
    uint64_t now = timing_now_ms();
    long long ttft = job->first_ms ? (long long)(job->first_ms - job->start_ms) : -1;
    int status = job->reply_status ? job->reply_status : 500;
    if (job->proxy->s.metrics) {
        struct metrics_request mr = {
                .model = job->served_model,
                .anthropic = job->anthropic,
                .status = status,
                .proxied = job->attempts > 0 || job->cold_start, /* not: refused by a limit */
                .duration_s = (double)(now - job->start_ms) / 1000.0,
                .ttft_s = ttft >= 0 ? (double)ttft / 1000.0 : -1,
                .tokens_in = job->have_usage ? job->tokens_in : 0,
                .tokens_out = job->have_usage ? job->tokens_out : 0,
        };
        metrics_observe_request(job->proxy->s.metrics, &mr);
    }
    if (job->proxy->s.ratelimit && job->have_usage && job->kind != PROXY_KIND_COUNT_TOKENS)
        ratelimit_charge(job->proxy->s.ratelimit, job->api_key_id, job->tpm,
                         job->tokens_in + job->tokens_out);
    if (job->proxy->s.accounting) {
        static const char *const endpoints[] = {
                [PROXY_KIND_CHAT] = "chat",
                [PROXY_KIND_COMPLETION] = "completions",
                [PROXY_KIND_EMBEDDING] = "embeddings",
                [PROXY_KIND_MESSAGES] = "messages",
                [PROXY_KIND_COUNT_TOKENS] = "count_tokens",
        };
        double decode_tps = -1;
        if (job->have_usage && job->first_ms && now > job->first_ms && job->tokens_out > 1)
            decode_tps = (double)(job->tokens_out - 1) * 1000.0 / (double)(now - job->first_ms);
        struct accounting_row row = {
                .request_id = job->request_id,
                .created_us = job->start_wall_us,
                .api_key_id = job->api_key_id,
                .anthropic = job->anthropic,
                .endpoint = endpoints[job->kind],
                .requested_model = job->client_model,
                .served_model = job->served_model,
                .node = job->upstream,
                .stream = job->stream,
                .status = status,
                .cancelled = job->client_gone,
                .cold_start = job->cold_start,
                .tokens_in = job->have_usage ? job->tokens_in : 0,
                .tokens_out = job->have_usage ? job->tokens_out : 0,
                .queue_wait_ms = (double)job->held_ms,
                .ttft_ms = (double)ttft,
                .total_ms = (double)(now - job->start_ms),
                .decode_tps = decode_tps,
        };
        accounting_submit(job->proxy->s.accounting, &row);
    }
    LOGC_INFO(&job->log,
              "request done: dialect=%s kind=%s client_model=%s upstream=%s status=%d stream=%d "
              "cancelled=%d cold_start=%d held_ms=%llu attempts=%d ttft_ms=%lld duration_ms=%llu "
              "tokens_in=%lld "
              "tokens_out=%lld",
              job->anthropic ? "anthropic" : "openai", proxy_kind_name(job->kind),
              job->client_model, job->upstream[0] ? job->upstream : "-", job->reply_status,
              job->stream, job->client_gone, job->cold_start, (unsigned long long)job->held_ms,
              job->attempts, ttft, (unsigned long long)(now - job->start_ms),
              job->have_usage ? (long long)job->tokens_in : -1LL,
              job->have_usage ? (long long)job->tokens_out : -1LL);
}

static void proxy_finish(struct proxy_job *job)
{
    struct proxy *p = job->proxy;
    proxy_log_summary(job);
    proxy_unlist(job); /* off the ticker's list before the stream goes */
    if (job->out && !job->closed)
        http_stream_close(job->out);
    http_client_cancel_destroy(job->cancel);
    sse_parser_destroy(job->parser);
    anthropic_stream_destroy(job->astream);
    buf_free(&job->pending);
    buf_free(&job->error_body);
    free(job->client_model);
    free(job->served_model);
    free(job->body);
    pthread_mutex_destroy(&job->out_mu);
    free(job);
    pthread_mutex_lock(&p->mu);
    if (--p->in_flight == 0)
        pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
}

/* A model in the catalogue without a ready placement: records demand and holds the request
 * until a placement is ready. Returns false when the request may go on (ready), true when it
 * has been answered (timeout, full, client gone). */
static bool proxy_cold_start(struct proxy_job *job, struct error *last)
{
    struct proxy *p = job->proxy;
    job->cold_start = true;
    LOGC_INFO(&job->log, "cold start: '%s' has no ready placement; holding the request",
              job->served_model);
    if (snapshot_demand(p->s.snapshot, job->served_model) < 0)
        LOGC_WARN(&job->log, "demand not recorded; waiting for the next placement anyway");
    if (job->stream)
        proxy_start_stream(job, NULL); /* keep-alives flow while the model loads */
    uint64_t t0 = timing_now_ms();
    enum snapshot_hold_result r =
            snapshot_hold(p->s.snapshot, job->served_model, p->s.hold_timeout_ms, job->cancel);
    job->held_ms = timing_now_ms() - t0;
    switch (r) {
    case SNAPSHOT_HOLD_READY:
        return false;
    case SNAPSHOT_HOLD_CANCELLED:
        pthread_mutex_lock(&job->out_mu);
        job->client_gone = true;
        pthread_mutex_unlock(&job->out_mu);
        error_set(last, ERR_UNAVAILABLE, NULL, "the client went away");
        break;
    case SNAPSHOT_HOLD_FULL:
        error_set(last, ERR_OVERLOADED, NULL, "too many requests are waiting for models to load");
        break;
    case SNAPSHOT_HOLD_TIMEOUT:
        error_set(last, ERR_MODEL_LOADING, NULL, "the model '%s' is loading; retry in a moment",
                  job->client_model);
        break;
    }
    proxy_job_error(job, last);
    return true;
}

static void proxy_run(struct proxy_job *job)
{
    struct proxy *p = job->proxy;
    uint64_t tried = 0;
    struct error last = ERROR_INIT;
    bool answered = false;
    if (p->s.ratelimit && job->kind != PROXY_KIND_COUNT_TOKENS) {
        int after = 0;
        enum ratelimit_result r =
                ratelimit_admit(p->s.ratelimit, job->api_key_id, job->rpm, job->tpm, &after);
        if (r != RATELIMIT_OK) {
            error_set(&last, ERR_RATE_LIMITED, NULL,
                      "rate limit of this API key reached (%s per minute); retry in %d s",
                      r == RATELIMIT_TOKENS ? "tokens" : "requests", after);
            job->retry_after_s = after;
            proxy_job_error(job, &last);
            answered = true;
        }
    }
    if (!answered && p->s.snapshot && !upstream_pool_has_model(p->s.pool, job->served_model))
        answered = proxy_cold_start(job, &last);
    for (int attempt = 0; attempt < p->s.max_attempts && !answered; attempt++) {
        struct upstream_lease lease;
        if (upstream_pool_acquire(p->s.pool, job->served_model, tried, &lease) < 0)
            break;
        tried |= 1ull << lease.index;
        job->attempts++;
        snprintf(job->upstream, sizeof job->upstream, "%s", lease.url);
        enum upstream_outcome outcome = UPSTREAM_OUTCOME_NEUTRAL;
        answered = proxy_attempt(job, &lease, &outcome, &last);
        upstream_pool_release(p->s.pool, lease.index, outcome);
    }
    if (!answered) {
        if (last.code == ERR_NONE && p->s.snapshot)
            error_set(&last, ERR_MODEL_LOADING, NULL,
                      "the model '%s' has no ready replica now; retry in a moment",
                      job->client_model);
        if (last.code == ERR_NONE)
            error_set(&last, ERR_UNAVAILABLE, NULL,
                      "no model server is available for '%s' now; retry later", job->client_model);
        proxy_job_error(job, &last);
    }
    error_clear(&last);
    proxy_finish(job);
}

/* A worker thread: runs its first job, then the jobs handed to it while it waits idle (see
 * struct proxy), and exits after PROXY_WORKER_IDLE_MS without one or when the proxy stops. */
static void *proxy_worker(void *arg)
{
    struct proxy_job *job = arg;
    struct proxy *p = job->proxy;
    for (;;) {
        proxy_run(job);
        job = NULL;
        pthread_mutex_lock(&p->mu);
        if (!p->stopping) {
            p->idle_workers++;
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += PROXY_WORKER_IDLE_MS / 1000;
            int rc = 0;
            while (!p->queue && !p->stopping && rc == 0)
                rc = pthread_cond_timedwait(&p->work, &p->mu, &until);
            if (p->queue) { /* reserved for us by proxy_start (idle_workers already counted) */
                job = p->queue;
                p->queue = job->queue_next;
            } else {
                p->idle_workers--;
            }
        }
        if (!job) {
            if (--p->workers == 0)
                pthread_cond_broadcast(&p->workers_gone);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pthread_mutex_unlock(&p->mu);
    }
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
        struct error e = ERROR_INIT;
        error_set(&e, ERR_OVERLOADED, NULL, NULL);
        proxy_reply_error(req, anthropic, &e);
        if (p->s.metrics) {
            struct metrics_request mr = {
                    .model = json_string_value(json_object_get(call->body, "model")),
                    .anthropic = anthropic,
                    .status = error_http_status(e.code, anthropic ? ERROR_DIALECT_ANTHROPIC
                                                                  : ERROR_DIALECT_OPENAI),
            };
            metrics_observe_request(p->s.metrics, &mr);
        }
        json_decref(call->body);
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
    snprintf(job->request_id, sizeof job->request_id, "%s", http_request_id(req));
    job->log = (struct log_ctx){.request_id = job->request_id, .model = job->served_model};
    job->start_ms = timing_now_ms();
    job->api_key_id = call->api_key_id;
    job->rpm = call->rpm;
    job->tpm = call->tpm;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    job->start_wall_us = (int64_t)wall.tv_sec * 1000000 + wall.tv_nsec / 1000;
    pthread_mutex_init(&job->out_mu, NULL);

    http_request_defer(req, proxy_on_gone, job);
    pthread_mutex_lock(&p->mu);
    if (p->idle_workers > 0) { /* hand it to a waiting worker */
        p->idle_workers--;
        struct proxy_job **tail = &p->queue;
        while (*tail)
            tail = &(*tail)->queue_next;
        *tail = job;
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->workers++;
    pthread_mutex_unlock(&p->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, proxy_worker, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&p->mu);
        if (--p->workers == 0)
            pthread_cond_broadcast(&p->workers_gone);
        pthread_mutex_unlock(&p->mu);
        LOGC_ERROR(&job->log, "cannot start a proxy thread: %s", strerror(rc));
        struct error e = ERROR_INIT;
        error_set(&e, ERR_OVERLOADED, NULL, NULL);
        proxy_reply_error(req, anthropic, &e);
        error_clear(&e);
        proxy_finish(job);
    }
}
