/*
 * tests/unit/common/test_http_server.c — common/http_server, http_request and http_stream on a
 * real server bound to 127.0.0.1, driven by libcurl (and a raw socket where curl would hide
 * what is being checked).
 *
 * Covers: routing (exact, wildcard, 404, 405 + Allow, HEAD), query string and headers, body
 * buffering and the 413 limit (announced and chunked), request ids, extra reply headers, a
 * handler that forgets to answer, deferred replies from another thread, streams delivered
 * chunk by chunk, client disconnects seen by the producer (streams and deferred requests),
 * backpressure, 200 concurrent streams, and shutdown with open streams.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "timing.h"
#include "xalloc.h"

#include "common/test_util.h"

#define MAX_BODY     (1u << 20)
#define WAIT_MS      10000 /* deadline for anything that should happen "at once" */
#define MANY_STREAMS 200

/* ---- what the handlers share with the test body ----------------------------------------- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    http_stream_t *streams[MANY_STREAMS];
    int n_streams;
    http_request_t *deferred[8];
    int n_deferred;
    int gone;
} shared = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void shared_reset(void)
{
    pthread_mutex_lock(&shared.mu);
    shared.n_streams = shared.n_deferred = shared.gone = 0;
    pthread_mutex_unlock(&shared.mu);
}

/* Waits until *counter >= want (under shared.mu); fails the test after WAIT_MS. */
static void shared_wait(const int *counter, int want)
{
    test_util_wait_count(&shared.mu, &shared.cond, counter, want, WAIT_MS);
}

static void on_gone(void *ud)
{
    pthread_mutex_lock(&shared.mu);
    shared.gone++;
    pthread_cond_broadcast(&shared.cond);
    pthread_mutex_unlock(&shared.mu);
}

/* ---- handlers --------------------------------------------------------------------------- */

static void h_models(http_request_t *req, void *ud)
{
    json_t *j = json_pack("{s:s, s:[]}", "object", "list", "data");
    http_request_reply_json(req, 200, j);
    json_decref(j);
}

static void h_model(http_request_t *req, void *ud)
{
    json_t *j = json_pack("{s:s}", "id", http_request_wildcard(req));
    http_request_reply_json(req, 200, j);
    json_decref(j);
}

static void h_echo(http_request_t *req, void *ud)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *q = http_request_query_param(req, "q");
    const char *flag = http_request_query_param(req, "flag");
    const char *xt = http_request_header(req, "x-TEST");
    json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:s#, s:s, s:s}", "method",
                          http_request_method(req), "path", http_request_path(req), "query",
                          http_request_query(req), "q", q ? json_string(q) : json_null(), "flag",
                          flag ? json_string(flag) : json_null(), "x_test",
                          xt ? json_string(xt) : json_null(), "body_len", (json_int_t)len,
                          "body_head", body, len < 32 ? len : (size_t)32, "id",
                          http_request_id(req), "client", http_request_client_addr(req));
    http_request_reply_json(req, 200, j); /* a NULL j would answer "null": the test fails */
    json_decref(j);
}

static void h_retry(http_request_t *req, void *ud)
{
    http_request_add_reply_header(req, "Retry-After", "7");
    http_request_add_reply_header(req, "Bad\r\nHeader", "x"); /* refused, not sent */
    http_request_reply_text(req, 503, "busy");
}

static void h_noanswer(http_request_t *req, void *ud)
{
}

static void h_deferred(http_request_t *req, void *ud)
{
    http_request_defer(req, on_gone, NULL);
    pthread_mutex_lock(&shared.mu);
    shared.deferred[shared.n_deferred++] = req;
    pthread_cond_broadcast(&shared.cond);
    pthread_mutex_unlock(&shared.mu);
}

static void h_stream(http_request_t *req, void *ud)
{
    http_stream_t *st = http_stream_start(req, 200, "text/event-stream", on_gone, NULL);
    if (st == NULL)
        return; /* the test waiting for this stream fails at its deadline */
    pthread_mutex_lock(&shared.mu);
    shared.streams[shared.n_streams++] = st;
    pthread_cond_broadcast(&shared.cond);
    pthread_mutex_unlock(&shared.mu);
}

static const http_route_t routes[] = {
        {"GET", "/v1/models", h_models},  {"GET", "/v1/models/*", h_model},
        {"POST", "/echo", h_echo},        {"GET", "/retry", h_retry},
        {"GET", "/noanswer", h_noanswer}, {"GET", "/deferred", h_deferred},
        {"GET", "/stream", h_stream},
};

static http_server_t *start_server_threads(size_t stream_max_queued, unsigned threads)
{
    http_server_config_t cfg = {.threads = threads,
                                .routes = routes,
                                .n_routes = sizeof routes / sizeof routes[0],
                                .max_body_bytes = MAX_BODY,
                                .stream_max_queued = stream_max_queued};
    http_server_t *s = test_util_server_start(&cfg);
    shared_reset();
    return s;
}

static http_server_t *start_server(size_t stream_max_queued)
{
    return start_server_threads(stream_max_queued, 1);
}

/* ---- a small libcurl client ------------------------------------------------------------- */

struct fetch {
    /* in */
    const char *method;
    char url[256];
    const char *body;
    size_t body_len;
    bool chunked;
    const char *header; /* one extra "Name: value" or NULL */
    long timeout_ms;
    int abort_after_events; /* > 0: drop the connection after this many "\n\n" events */
    /* out */
    CURLcode rc;
    long status;
    char *data;
    size_t len;
    char *headers;
    size_t headers_len;
    int events; /* complete "\n\n"-terminated events seen; under shared.mu */
    size_t upload_pos;
};

static size_t fetch_on_data(char *p, size_t size, size_t n, void *ud)
{
    struct fetch *f = ud;
    f->data = xrealloc(f->data, f->len + n + 1);
    memcpy(f->data + f->len, p, n);
    f->len += n;
    f->data[f->len] = '\0';
    int events = 0;
    for (const char *e = f->data; (e = strstr(e, "\n\n")) != NULL; e += 2)
        events++;
    pthread_mutex_lock(&shared.mu);
    f->events = events;
    pthread_cond_broadcast(&shared.cond);
    pthread_mutex_unlock(&shared.mu);
    if (f->abort_after_events > 0 && events >= f->abort_after_events)
        return 0; /* makes libcurl fail the transfer and close the connection */
    return n;
}

static size_t fetch_on_header(char *p, size_t size, size_t n, void *ud)
{
    struct fetch *f = ud;
    f->headers = xrealloc(f->headers, f->headers_len + n + 1);
    memcpy(f->headers + f->headers_len, p, n);
    f->headers_len += n;
    f->headers[f->headers_len] = '\0';
    return n;
}

static size_t fetch_on_upload(char *p, size_t size, size_t n, void *ud)
{
    struct fetch *f = ud;
    size_t left = f->body_len - f->upload_pos;
    size_t take = left < size * n ? left : size * n;
    memset(p, 'u', take);
    f->upload_pos += take;
    return take;
}

static void fetch_init(struct fetch *f, http_server_t *s, const char *method, const char *path)
{
    memset(f, 0, sizeof *f);
    f->method = method;
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u%s", http_server_port(s), path);
}

static void *fetch_run(void *arg)
{
    struct fetch *f = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    curl_easy_setopt(c, CURLOPT_URL, f->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fetch_on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, fetch_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, f->timeout_ms ? f->timeout_ms : 30000L);
    if (strcmp(f->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(f->method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, f->method);
    if (f->chunked) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, fetch_on_upload);
        curl_easy_setopt(c, CURLOPT_READDATA, f);
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
        hl = curl_slist_append(hl, "Expect:");
    } else if (f->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, f->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)f->body_len);
    }
    if (f->header)
        hl = curl_slist_append(hl, f->header);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    f->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &f->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    return NULL;
}

/* Runs f on a new thread, which the caller joins. */
static pthread_t fetch_in_background(struct fetch *f)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fetch_run, f), 0);
    return t;
}

static void fetch_free(struct fetch *f)
{
    free(f->data);
    free(f->headers);
}

/* The value of a response header (first match, case-insensitive) in a static buffer, or NULL. */
static const char *fetch_header(const struct fetch *f, const char *name)
{
    static char value[256];
    size_t nlen = strlen(name);
    for (const char *line = f->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(value, sizeof value, "%.*s", (int)(len - (size_t)(v - line)), v);
            return value;
        }
        line = eol ? eol + 2 : NULL;
    }
    return NULL;
}

/* The status of a plain request with a fresh client, for checks that need nothing else. */
static long fetch_status(http_server_t *s, const char *method, const char *path)
{
    struct fetch f;
    fetch_init(&f, s, method, path);
    fetch_run(&f);
    fetch_free(&f);
    return f.status;
}

static json_t *fetch_json(const struct fetch *f)
{
    json_error_t e;
    json_t *j = json_loadb(f->data ? f->data : "", f->len, JSON_ALLOW_NUL, &e);
    ck_assert_msg(j != NULL, "bad JSON (%s): %.*s", e.text, (int)f->len, f->data ? f->data : "");
    return j;
}

/* A server-made request id: "req_" and 24 characters of [0-9A-Za-z]. */
static bool is_request_id(const char *s)
{
    static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    return s != NULL && strlen(s) == 28 && strncmp(s, "req_", 4) == 0 &&
           strspn(s + 4, base62) == 24;
}

/* Checks that text is an OpenAI-dialect error body and nothing more:
 * {"error":{"message":<non-empty>,"type":type,"param":null,"code":code or null}}. */
static void assert_error_body(const char *text, size_t len, const char *type, const char *code)
{
    json_error_t e;
    json_t *j = json_loadb(text ? text : "", len, 0, &e);
    ck_assert_msg(j != NULL, "bad JSON (%s): %.*s", e.text, (int)len, text ? text : "");
    ck_assert_msg(json_object_size(j) == 1, "%.*s", (int)len, text);
    json_t *err = json_object_get(j, "error");
    ck_assert_msg(json_is_object(err) && json_object_size(err) == 4, "%.*s", (int)len, text);
    ck_assert(json_string_length(json_object_get(err, "message")) > 0);
    ck_assert_str_eq(json_string_value(json_object_get(err, "type")), type);
    ck_assert(json_is_null(json_object_get(err, "param")));
    if (code)
        ck_assert_str_eq(json_string_value(json_object_get(err, "code")), code);
    else
        ck_assert(json_is_null(json_object_get(err, "code")));
    json_decref(j);
}

static void assert_fetch_error(const struct fetch *f, long status, const char *type,
                               const char *code)
{
    ck_assert_int_eq(f->status, status);
    ck_assert_str_eq(fetch_header(f, "Content-Type"), "application/json");
    ck_assert_ptr_nonnull(fetch_header(f, "X-Request-Id"));
    assert_error_body(f->data, f->len, type, code);
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(test_routing)
{
    http_server_t *s = start_server(0);
    struct fetch f;

    fetch_init(&f, s, "GET", "/v1/models");
    fetch_run(&f);
    ck_assert_int_eq(f.rc, CURLE_OK);
    ck_assert_int_eq(f.status, 200);
    ck_assert_str_eq(f.data, "{\"object\":\"list\",\"data\":[]}");
    ck_assert_str_eq(fetch_header(&f, "Content-Type"), "application/json");
    fetch_free(&f);

    fetch_init(&f, s, "GET", "/v1/models/qwen%2Fqwen3-27b?x=1");
    fetch_run(&f);
    ck_assert_int_eq(f.status, 200);
    ck_assert_str_eq(f.data, "{\"id\":\"qwen/qwen3-27b\"}");
    fetch_free(&f);

    const char *missing[] = {"/nope", "/v1/models/", "/v1/modelsx", "/v1"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        fetch_init(&f, s, "GET", missing[i]);
        fetch_run(&f);
        ck_assert_msg(f.status == 404, "%s gave %ld", missing[i], f.status);
        assert_fetch_error(&f, 404, "not_found_error", NULL);
        fetch_free(&f);
    }

    fetch_init(&f, s, "DELETE", "/v1/models");
    fetch_run(&f);
    assert_fetch_error(&f, 405, "invalid_request_error", NULL);
    ck_assert_str_eq(fetch_header(&f, "Allow"), "GET, HEAD");
    fetch_free(&f);

    fetch_init(&f, s, "GET", "/echo");
    fetch_run(&f);
    assert_fetch_error(&f, 405, "invalid_request_error", NULL);
    ck_assert_str_eq(fetch_header(&f, "Allow"), "POST");
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_head)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "HEAD", "/v1/models");
    fetch_run(&f);
    ck_assert_int_eq(f.rc, CURLE_OK);
    ck_assert_int_eq(f.status, 200);
    ck_assert_uint_eq(f.len, 0);
    char expect[16];
    snprintf(expect, sizeof expect, "%zu", strlen("{\"object\":\"list\",\"data\":[]}"));
    ck_assert_str_eq(fetch_header(&f, "Content-Length"), expect);
    fetch_free(&f);

    ck_assert_int_eq(fetch_status(s, "HEAD", "/echo"), 405);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_query_headers_body)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "POST", "/echo?q=a%20b&flag");
    static const char body[] = "hello\0world";
    f.body = body;
    f.body_len = sizeof body - 1;
    f.header = "X-Test: yes";
    fetch_run(&f);
    ck_assert_int_eq(f.status, 200);
    json_t *j = fetch_json(&f);
    ck_assert_str_eq(json_string_value(json_object_get(j, "method")), "POST");
    ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/echo");
    ck_assert_str_eq(json_string_value(json_object_get(j, "query")), "q=a%20b&flag");
    ck_assert_str_eq(json_string_value(json_object_get(j, "q")), "a b");
    ck_assert_str_eq(json_string_value(json_object_get(j, "flag")), "");
    ck_assert_str_eq(json_string_value(json_object_get(j, "x_test")), "yes");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "body_len")), 11);
    ck_assert_int_eq(json_string_length(json_object_get(j, "body_head")), 11);
    ck_assert_int_eq(memcmp(json_string_value(json_object_get(j, "body_head")), body, 11), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "client")), "127.0.0.1");
    json_decref(j);
    fetch_free(&f);

    /* Exactly the limit is accepted. */
    fetch_init(&f, s, "POST", "/echo");
    char *big = xmalloc(MAX_BODY);
    memset(big, 'b', MAX_BODY);
    f.body = big;
    f.body_len = MAX_BODY;
    fetch_run(&f);
    ck_assert_int_eq(f.status, 200);
    j = fetch_json(&f);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "body_len")), MAX_BODY);
    json_decref(j);
    fetch_free(&f);
    free(big);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_request_id)
{
    http_server_t *s = start_server(0);
    struct fetch f, g;
    fetch_init(&f, s, "GET", "/v1/models");
    fetch_run(&f);
    char first[64];
    snprintf(first, sizeof first, "%s", fetch_header(&f, "X-Request-Id"));
    ck_assert_msg(is_request_id(first), "%s", first);
    fetch_init(&g, s, "GET", "/v1/models");
    fetch_run(&g);
    ck_assert(is_request_id(fetch_header(&g, "X-Request-Id")));
    ck_assert_str_ne(fetch_header(&g, "X-Request-Id"), first);
    fetch_free(&f);
    fetch_free(&g);

    /* A sane client id is used throughout: header and handler both see it. */
    fetch_init(&f, s, "POST", "/echo");
    f.header = "X-Request-Id: client-id_1.2:3";
    f.body = "";
    fetch_run(&f);
    ck_assert_str_eq(fetch_header(&f, "X-Request-Id"), "client-id_1.2:3");
    json_t *j = fetch_json(&f);
    ck_assert_str_eq(json_string_value(json_object_get(j, "id")), "client-id_1.2:3");
    json_decref(j);
    fetch_free(&f);

    /* An unsafe one is replaced. */
    fetch_init(&f, s, "GET", "/v1/models");
    f.header = "X-Request-Id: bad id<script>";
    fetch_run(&f);
    ck_assert(is_request_id(fetch_header(&f, "X-Request-Id")));
    fetch_free(&f);

    /* Errors produced by the server carry it too. */
    fetch_init(&f, s, "GET", "/nope");
    f.header = "X-Request-Id: client-id-2";
    fetch_run(&f);
    ck_assert_int_eq(f.status, 404);
    ck_assert_str_eq(fetch_header(&f, "X-Request-Id"), "client-id-2");
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_extra_headers_and_no_answer)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    FILE *capture = test_util_log_capture_start();
    fetch_init(&f, s, "GET", "/retry");
    f.header = "X-Request-Id: retry-1";
    fetch_run(&f);
    ck_assert_int_eq(f.status, 503);
    ck_assert_str_eq(fetch_header(&f, "Retry-After"), "7");
    ck_assert_ptr_null(fetch_header(&f, "Bad"));
    ck_assert_str_eq(f.data, "busy");
    ck_assert_str_eq(fetch_header(&f, "Content-Type"), "text/plain; charset=utf-8");
    fetch_free(&f);

    fetch_init(&f, s, "GET", "/noanswer");
    f.header = "X-Request-Id: noanswer-1";
    fetch_run(&f);
    assert_fetch_error(&f, 500, "server_error", NULL);
    fetch_free(&f);
    http_server_destroy(s);

    /* Both handler mistakes, and nothing else, are logged as errors that name the request. */
    char *log = test_util_log_capture_end(capture);
    ck_assert_msg(strstr(log, "request=retry-1 msg=\"http: refused a reply header") != NULL, "%s",
                  log);
    ck_assert_msg(strstr(log, "request=noanswer-1 msg=\"http: handler for GET /noanswer returned "
                              "without answering\"") != NULL,
                  "%s", log);
    int lines = 0, errors = 0;
    for (const char *p = log; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    for (const char *p = log; (p = strstr(p, " level=error ")) != NULL; p++)
        errors++;
    ck_assert_msg(lines == 2 && errors == 2, "%s", log);
    free(log);
}
END_TEST

/* A raw client socket that has sent request to the server; rcvbuf > 0 shrinks its receive
 * buffer first. The caller closes it. */
static int raw_send(http_server_t *s, const char *request, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(http_server_port(s)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(send(fd, request, strlen(request), 0), (ssize_t)strlen(request));
    return fd;
}

/* Sends raw bytes and returns what comes back until the server closes or WAIT_MS passes. */
static char *raw_exchange(http_server_t *s, const char *request, size_t *got)
{
    int fd = raw_send(s, request, 0);
    char *buf = xcalloc(1, 65536);
    size_t n = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, WAIT_MS) <= 0)
            break;
        ssize_t r = recv(fd, buf + n, 65535 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *got = n;
    return buf;
}

START_TEST(test_body_limit)
{
    http_server_t *s = start_server(0);
    /* Announced too large: 413 at once, while the client has sent no body at all. */
    size_t n;
    char *resp = raw_exchange(s,
                              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n"
                              "Content-Type: application/json\r\n\r\n",
                              &n);
    ck_assert_msg(strncmp(resp, "HTTP/1.1 413", 12) == 0, "%s", resp);
    const char *body = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    body += 4;
    assert_error_body(body, n - (size_t)(body - resp), "invalid_request_error",
                      "request_too_large");
    free(resp);

    /* Chunked, a little too large: read to the end, then 413. */
    struct fetch f;
    fetch_init(&f, s, "POST", "/echo");
    f.chunked = true;
    f.body_len = MAX_BODY + MAX_BODY / 2;
    fetch_run(&f);
    ck_assert_int_eq(f.rc, CURLE_OK);
    assert_fetch_error(&f, 413, "invalid_request_error", "request_too_large");
    fetch_free(&f);

    /* Chunked and far too large: the connection is dropped. */
    fetch_init(&f, s, "POST", "/echo");
    f.chunked = true;
    f.body_len = 8 * MAX_BODY;
    fetch_run(&f);
    ck_assert_int_ne(f.rc, CURLE_OK);
    ck_assert_uint_lt(f.upload_pos, 8 * MAX_BODY);
    fetch_free(&f);

    /* The server still works. */
    ck_assert_int_eq(fetch_status(s, "GET", "/v1/models"), 200);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_deferred_reply)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "GET", "/deferred");
    pthread_t t = fetch_in_background(&f);
    shared_wait(&shared.n_deferred, 1);
    http_request_t *req = shared.deferred[0];
    ck_assert_str_eq(http_request_path(req), "/deferred");
    ck_assert(!http_request_client_gone(req));
    http_request_add_reply_header(req, "request-id", http_request_id(req));
    json_t *j = json_pack("{s:b}", "late", 1);
    http_request_reply_json(req, 202, j); /* from this thread, not the server's */
    json_decref(j);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.rc, CURLE_OK);
    ck_assert_int_eq(f.status, 202);
    ck_assert_str_eq(f.data, "{\"late\":true}");
    ck_assert_str_eq(fetch_header(&f, "request-id"), fetch_header(&f, "X-Request-Id"));
    ck_assert_int_eq(shared.gone, 0);
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_deferred_then_stream)
{
    /* The gateway's pattern: defer, learn the upstream status elsewhere, then stream. */
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "GET", "/deferred");
    pthread_t t = fetch_in_background(&f);
    shared_wait(&shared.n_deferred, 1);
    http_stream_t *st = http_stream_start(shared.deferred[0], 200, "text/event-stream", NULL, NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_null(http_stream_start(shared.deferred[0], 200, "text/plain", NULL, NULL));
    ck_assert_int_eq(http_stream_write(st, "data: first\n\n", 13), HTTP_STREAM_OK);
    shared_wait(&f.events, 1);
    ck_assert_int_eq(http_stream_write(st, "data: second\n\n", 14), HTTP_STREAM_OK);
    http_stream_close(st);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.rc, CURLE_OK);
    ck_assert_int_eq(f.status, 200);
    ck_assert_uint_eq(f.len, 27);
    ck_assert_str_eq(f.data, "data: first\n\ndata: second\n\n");
    ck_assert_int_eq(shared.gone, 0);
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_deferred_client_gone)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "GET", "/deferred");
    f.timeout_ms = 300; /* the client gives up; the server notices although idle */
    pthread_t t = fetch_in_background(&f);
    shared_wait(&shared.n_deferred, 1);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.rc, CURLE_OPERATION_TIMEDOUT);
    shared_wait(&shared.gone, 1);
    ck_assert(http_request_client_gone(shared.deferred[0]));
    http_request_reply_text(shared.deferred[0], 200, "too late"); /* dropped, releases */
    fetch_free(&f);

    /* The server is fine afterwards. */
    ck_assert_int_eq(fetch_status(s, "GET", "/v1/models"), 200);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_stream_incremental)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "GET", "/stream");
    pthread_t t = fetch_in_background(&f);
    shared_wait(&shared.n_streams, 1);
    http_stream_t *st = shared.streams[0];
    ck_assert_str_eq(http_request_path(http_stream_request(st)), "/stream");

    /* Lock-step: event k is written only after the client has received event k-1, so any
     * buffering on the way would stall the test (and fail it at the deadline). */
    char expect[1024] = "";
    for (int k = 0; k < 20; k++) {
        char ev[64];
        snprintf(ev, sizeof ev, "data: {\"k\":%d}\n\n", k);
        strcat(expect, ev);
        ck_assert_int_eq(http_stream_write(st, ev, strlen(ev)), HTTP_STREAM_OK);
        shared_wait(&f.events, k + 1);
    }
    http_stream_close(st);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.rc, CURLE_OK);
    ck_assert_int_eq(f.status, 200);
    ck_assert_str_eq(f.data, expect);
    ck_assert_str_eq(fetch_header(&f, "Content-Type"), "text/event-stream");
    ck_assert_str_eq(fetch_header(&f, "Cache-Control"), "no-cache");
    ck_assert_str_eq(fetch_header(&f, "X-Accel-Buffering"), "no");
    ck_assert(is_request_id(fetch_header(&f, "X-Request-Id")));
    ck_assert_ptr_null(fetch_header(&f, "Content-Length"));
    ck_assert_int_eq(shared.gone, 0); /* a normal end is not "gone" */
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_stream_client_disconnect)
{
    http_server_t *s = start_server(0);
    struct fetch f;
    fetch_init(&f, s, "GET", "/stream");
    f.abort_after_events = 1;
    pthread_t t = fetch_in_background(&f);
    shared_wait(&shared.n_streams, 1);
    http_stream_t *st = shared.streams[0];
    ck_assert_int_eq(http_stream_write(st, "data: 1\n\n", 9), HTTP_STREAM_OK);
    pthread_join(t, NULL);
    ck_assert_int_eq(f.rc, CURLE_WRITE_ERROR); /* the client hung up after one event */

    /* The stream is idle (nothing queued) and still the producer hears of it. */
    shared_wait(&shared.gone, 1);
    ck_assert(http_stream_client_gone(st));
    ck_assert_int_eq(http_stream_write(st, "data: 2\n\n", 9), HTTP_STREAM_GONE);
    ck_assert_int_eq(http_stream_wait_writable(st, 1000), HTTP_STREAM_GONE);
    http_stream_close(st);
    ck_assert_int_eq(shared.gone, 1);
    fetch_free(&f);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_stream_backpressure)
{
    http_server_t *s = start_server(64 << 10);
    /* A client that sends its request and never reads. */
    int fd = raw_send(s, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n", 4096);
    shared_wait(&shared.n_streams, 1);
    http_stream_t *st = shared.streams[0];

    /* One write larger than the limit fits into an empty queue. */
    char *chunk = xmalloc(100 << 10);
    memset(chunk, 'x', 100 << 10);
    ck_assert_int_eq(http_stream_write(st, chunk, 100 << 10), HTTP_STREAM_OK);
    /* Keep writing until the socket buffers and the queue are full and stay full: FULL, and no
     * room coming back within 200 ms (bounded: 256 MiB). */
    http_stream_result_t rc = HTTP_STREAM_OK;
    size_t total = 0;
    while (total < (256u << 20)) {
        rc = http_stream_write(st, chunk, 16 << 10);
        if (rc == HTTP_STREAM_OK)
            total += 16 << 10;
        else if (rc != HTTP_STREAM_FULL || http_stream_wait_writable(st, 200) != HTTP_STREAM_OK)
            break;
    }
    ck_assert_int_eq(rc, HTTP_STREAM_FULL);
    ck_assert_int_eq(http_stream_write(st, chunk, 16 << 10), HTTP_STREAM_FULL);
    close(fd); /* the client goes away with data pending */
    ck_assert_int_eq(http_stream_wait_writable(st, WAIT_MS), HTTP_STREAM_GONE);
    shared_wait(&shared.gone, 1);
    http_stream_close(st);
    free(chunk);
    http_server_destroy(s);
}
END_TEST

/* Runs MANY_STREAMS GET /stream transfers at once on one libcurl multi handle. */
struct many {
    http_server_t *server;
    struct fetch f[MANY_STREAMS];
    int done_ok;
};

static void *many_run(void *arg)
{
    struct many *m = arg;
    CURLM *multi = curl_multi_init();
    CURL *easy[MANY_STREAMS];
    for (int i = 0; i < MANY_STREAMS; i++) {
        fetch_init(&m->f[i], m->server, "GET", "/stream");
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, m->f[i].url);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, fetch_on_data);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &m->f[i]);
        curl_easy_setopt(easy[i], CURLOPT_PRIVATE, &m->f[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        if (running)
            curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK)
            m->done_ok++;
    }
    for (int i = 0; i < MANY_STREAMS; i++) {
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(multi);
    return NULL;
}

START_TEST(test_many_streams)
{
    http_server_t *s = start_server_threads(0, 4); /* a pool of polling threads */
    struct many *m = xcalloc(1, sizeof *m);
    m->server = s;
    pthread_t t;
    pthread_create(&t, NULL, many_run, m);
    shared_wait(&shared.n_streams, MANY_STREAMS);
    /* Each stream's events name the stream's own request id, so crossed wires would show. */
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < MANY_STREAMS; i++) {
            char ev[128];
            int n = snprintf(ev, sizeof ev, "data: %s %d\n\n",
                             http_request_id(http_stream_request(shared.streams[i])), round);
            ck_assert_int_eq(http_stream_write(shared.streams[i], ev, (size_t)n), HTTP_STREAM_OK);
        }
    }
    char ids[MANY_STREAMS][64];
    for (int i = 0; i < MANY_STREAMS; i++) {
        snprintf(ids[i], sizeof ids[i], "%s",
                 http_request_id(http_stream_request(shared.streams[i])));
        http_stream_close(shared.streams[i]);
    }
    pthread_join(t, NULL);
    ck_assert_int_eq(m->done_ok, MANY_STREAMS);
    /* Every client got exactly the five events of one stream, in order. */
    int matched = 0;
    for (int c = 0; c < MANY_STREAMS; c++) {
        for (int i = 0; i < MANY_STREAMS; i++) {
            char expect[512] = "";
            for (int round = 0; round < 5; round++) {
                char ev[128];
                snprintf(ev, sizeof ev, "data: %.63s %d\n\n", ids[i], round);
                strcat(expect, ev);
            }
            if (m->f[c].data && strcmp(m->f[c].data, expect) == 0) {
                matched++;
                break;
            }
        }
    }
    ck_assert_int_eq(matched, MANY_STREAMS);
    ck_assert_int_eq(shared.gone, 0);
    for (int i = 0; i < MANY_STREAMS; i++)
        fetch_free(&m->f[i]);
    free(m);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_shutdown_with_open_streams)
{
    http_server_t *s = start_server(0);
    struct fetch fs, fd;
    fetch_init(&fs, s, "GET", "/stream");
    fetch_init(&fd, s, "GET", "/deferred");
    pthread_t ts = fetch_in_background(&fs), td = fetch_in_background(&fd);
    shared_wait(&shared.n_streams, 1);
    shared_wait(&shared.n_deferred, 1);
    ck_assert_int_eq(http_stream_write(shared.streams[0], "data: a\n\n", 9), HTTP_STREAM_OK);
    shared_wait(&fs.events, 1);

    http_server_destroy(s); /* with a suspended stream and a suspended deferred request */
    ck_assert_int_eq(shared.gone, 2);
    ck_assert_int_eq(http_stream_write(shared.streams[0], "data: b\n\n", 9), HTTP_STREAM_GONE);
    http_stream_close(shared.streams[0]);
    http_request_reply_text(shared.deferred[0], 200, "after shutdown");
    pthread_join(ts, NULL);
    pthread_join(td, NULL);
    ck_assert_int_ne(fs.rc, CURLE_OK); /* the stream was cut, not completed */
    ck_assert_int_ne(fd.rc, CURLE_OK);
    fetch_free(&fs);
    fetch_free(&fd);
}
END_TEST

/* Whether the server closed fd within wait_ms (recv sees the end or an error). */
static bool raw_closed_within(int fd, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return false;
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

START_TEST(test_header_deadline)
{
    http_server_config_t cfg = {
            .routes = routes, .n_routes = sizeof routes / sizeof routes[0], .header_timeout_s = 1};
    http_server_t *s = test_util_server_start(&cfg);
    shared_reset();
    /* A client that trickles its headers, one byte every 100 ms, is never quiet for the
     * inactivity timeout, yet is dropped at the deadline. */
    int fd = raw_send(s, "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ", 0);
    uint64_t t0 = timing_now_ms();
    bool closed = false;
    for (int i = 0; i < 40 && !closed; i++) {
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1)
            closed = true;
        else
            closed = raw_closed_within(fd, 100);
    }
    uint64_t took = timing_now_ms() - t0;
    close(fd);
    ck_assert_msg(closed, "the slow client was not dropped");
    ck_assert_msg(took >= 800 && took <= 2500, "dropped after %llu ms", (unsigned long long)took);
    ck_assert_uint_eq(http_server_slow_dropped(s), 1);
    /* A client that sends its headers in time keeps its connection past the deadline. */
    fd = raw_send(s, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    ck_assert_int_gt(n, 12);
    buf[n] = '\0';
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
    ck_assert(!raw_closed_within(fd, 1500));
    close(fd);
    ck_assert_uint_eq(http_server_slow_dropped(s), 1);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_connections_per_address)
{
    http_server_config_t cfg = {.routes = routes,
                                .n_routes = sizeof routes / sizeof routes[0],
                                .max_connections_per_ip = 2};
    http_server_t *s = test_util_server_start(&cfg);
    shared_reset();
    int a = raw_send(s, "GET", 0), b = raw_send(s, "GET", 0);
    ck_assert(!raw_closed_within(a, 200));
    int c = socket(AF_INET, SOCK_STREAM, 0); /* connected only: a send could meet EPIPE */
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(http_server_port(s)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_msg(raw_closed_within(c, 2000), "a third connection from one address was kept");
    close(c);
    close(a);
    close(b);
    http_server_destroy(s);
}
END_TEST

START_TEST(test_create_errors)
{
    http_server_t *s = start_server(0);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", http_server_port(s));
    http_server_config_t cfg = {.listen = listen};
    char *err = NULL;
    ck_assert_ptr_null(http_server_create(&cfg, &err));
    ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
    free(err);

    cfg.listen = "127.0.0.1";
    ck_assert_ptr_null(http_server_create(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err, "bad listen address"));
    free(err);

    http_route_t bad[] = {{"GET", "/a*b", h_models}};
    cfg.listen = "127.0.0.1:0";
    cfg.routes = bad;
    cfg.n_routes = 1;
    ck_assert_ptr_null(http_server_create(&cfg, &err));
    ck_assert_ptr_nonnull(strstr(err, "bad route"));
    free(err);
    http_server_destroy(s);
    http_server_destroy(NULL);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *suite = suite_create("http_server");
    TCase *tc = tcase_create("http_server");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_routing);
    tcase_add_test(tc, test_head);
    tcase_add_test(tc, test_query_headers_body);
    tcase_add_test(tc, test_request_id);
    tcase_add_test(tc, test_extra_headers_and_no_answer);
    tcase_add_test(tc, test_body_limit);
    tcase_add_test(tc, test_deferred_reply);
    tcase_add_test(tc, test_deferred_then_stream);
    tcase_add_test(tc, test_deferred_client_gone);
    tcase_add_test(tc, test_stream_incremental);
    tcase_add_test(tc, test_stream_client_disconnect);
    tcase_add_test(tc, test_stream_backpressure);
    tcase_add_test(tc, test_many_streams);
    tcase_add_test(tc, test_shutdown_with_open_streams);
    tcase_add_test(tc, test_header_deadline);
    tcase_add_test(tc, test_connections_per_address);
    tcase_add_test(tc, test_create_errors);
    suite_add_tcase(suite, tc);
    int rc = test_util_run_suite(suite);
    curl_global_cleanup();
    return rc;
}
