/*
 * tests/unit/common/test_http_client.c — common/http_client against common/http_server on
 * 127.0.0.1.
 *
 * Covers: status, body and headers of buffered requests; non-2xx statuses; the whole-request
 * timeout; refused and timed-out connects; the body size cap; streaming delivered piece by
 * piece (parsed with common/sse); aborting from the data callback; cancelling from another
 * thread while idle; the idle timeout; a thread's connection kept for its next call, and a
 * fresh one when the server closed it. All of it again on shared loops (http_client_set_loops),
 * plus what the loops are for: held transfers cost no descriptors beyond their sockets, and a
 * slow reader pauses its transfer without losing data.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "http_server.h"
#include "sse.h"
#include "timing.h"
#include "xalloc.h"

#include "common/test_util.h"

#define WAIT_MS 10000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    http_stream_t *stream;
    int n_streams;
    http_request_t *hanging;
    int n_hanging;
    int n_held, held_gone;
    int gone;
} shared = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void shared_signal(int *counter)
{
    pthread_mutex_lock(&shared.mu);
    (*counter)++;
    pthread_cond_broadcast(&shared.cond);
    pthread_mutex_unlock(&shared.mu);
}

static void shared_wait(const int *counter, int want)
{
    test_util_wait_count(&shared.mu, &shared.cond, counter, want, WAIT_MS);
}

/* ---- the server ------------------------------------------------------------------------- */

static void on_gone(void *ud)
{
    shared_signal(&shared.gone);
}

static void h_hello(http_request_t *req, void *ud)
{
    http_request_add_reply_header(req, "X-Foo", "bar");
    http_request_reply_text(req, 200, "hello");
}

static void h_echo(http_request_t *req, void *ud)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *sent = http_request_header(req, "X-Send");
    http_request_add_reply_header(req, "X-Method", http_request_method(req));
    http_request_add_reply_header(req, "X-Got", sent ? sent : "(none)");
    http_request_add_reply_header(req, "X-Expect", http_request_header(req, "Expect") ? "y" : "n");
    http_request_reply(req, 201, "application/octet-stream", body, len);
}

static void h_status(http_request_t *req, void *ud)
{
    json_t *j = json_pack("{s:i}", "status", atoi(http_request_wildcard(req)));
    http_request_reply_json(req, atoi(http_request_wildcard(req)), j);
    json_decref(j);
}

static void h_hang(http_request_t *req, void *ud)
{
    http_request_defer(req, on_gone, NULL);
    pthread_mutex_lock(&shared.mu);
    shared.hanging = req;
    pthread_mutex_unlock(&shared.mu);
    shared_signal(&shared.n_hanging);
}

static void on_held_gone(void *ud)
{
    http_request_reply_text(ud, 503, "gone"); /* releases the request */
    shared_signal(&shared.held_gone);
}

/* Never answered: the request is released when the client goes away. */
static void h_held(http_request_t *req, void *ud)
{
    http_request_defer(req, on_held_gone, req);
    shared_signal(&shared.n_held);
}

static void h_sse(http_request_t *req, void *ud)
{
    http_stream_t *st = http_stream_start(req, 200, "text/event-stream", on_gone, NULL);
    pthread_mutex_lock(&shared.mu);
    shared.stream = st;
    pthread_mutex_unlock(&shared.mu);
    shared_signal(&shared.n_streams);
}

static void h_big(http_request_t *req, void *ud)
{
    size_t n = 2u << 20;
    char *b = xmalloc(n);
    memset(b, 'z', n);
    http_request_reply(req, 200, "application/octet-stream", b, n);
    free(b);
}

static const http_route_t routes[] = {
        {"GET", "/hello", h_hello},     {"POST", "/echo", h_echo}, {"PUT", "/echo", h_echo},
        {"GET", "/status/*", h_status}, {"GET", "/hang", h_hang},  {"GET", "/sse", h_sse},
        {"GET", "/big", h_big},         {"GET", "/held", h_held},
};

static http_server_t *server;
static char base[64];

static void server_up(void)
{
    http_server_config_t cfg = {.routes = routes, .n_routes = sizeof routes / sizeof *routes};
    server = test_util_server_start(&cfg);
    snprintf(base, sizeof base, "http://127.0.0.1:%u", http_server_port(server));
    pthread_mutex_lock(&shared.mu);
    shared.stream = NULL;
    shared.hanging = NULL;
    shared.n_streams = shared.n_hanging = shared.gone = shared.n_held = shared.held_gone = 0;
    pthread_mutex_unlock(&shared.mu);
}

static void server_down(void)
{
    http_server_destroy(server);
    server = NULL;
}

static char *url(const char *path)
{
    return xasprintf("%s%s", base, path);
}

/* ---- buffered requests ------------------------------------------------------------------ */

START_TEST(test_request_basic)
{
    char *u = url("/hello");
    http_client_request_t rq = {.url = u, .timeout_ms = 10000};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_int_eq(resp.status, 200);
    ck_assert_str_eq(resp.body, "hello");
    ck_assert_uint_eq(resp.body_len, 5);
    ck_assert_str_eq(http_client_response_header(&resp, "x-foo"), "bar");
    ck_assert_str_eq(http_client_response_header(&resp, "Content-Type"),
                     "text/plain; charset=utf-8");
    ck_assert_ptr_null(http_client_response_header(&resp, "X-Absent"));
    ck_assert_str_eq(resp.error, "");
    http_client_response_free(&resp);
    free(u);

    /* POST with a binary body and headers; PUT through the method field. */
    u = url("/echo");
    static const char body[] = "a\0b\r\nc";
    const char *headers[] = {"X-Send: value 1", "Content-Type: application/x-test", NULL};
    rq = (http_client_request_t){
            .url = u, .headers = headers, .body = body, .body_len = sizeof body - 1};
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_int_eq(resp.status, 201);
    ck_assert_uint_eq(resp.body_len, sizeof body - 1);
    ck_assert_int_eq(memcmp(resp.body, body, sizeof body - 1), 0);
    ck_assert_str_eq(http_client_response_header(&resp, "X-Method"), "POST");
    ck_assert_str_eq(http_client_response_header(&resp, "X-Got"), "value 1");
    ck_assert_str_eq(http_client_response_header(&resp, "X-Expect"), "n");
    http_client_response_free(&resp);

    rq.method = "PUT";
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_str_eq(http_client_response_header(&resp, "X-Method"), "PUT");
    http_client_response_free(&resp);
    free(u);

    /* An error status is still a response. */
    u = url("/status/503");
    rq = (http_client_request_t){.url = u};
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_int_eq(resp.status, 503);
    ck_assert_str_eq(resp.body, "{\"status\":503}");
    http_client_response_free(&resp);
    free(u);

    /* HEAD: headers, no body. */
    u = url("/hello");
    rq = (http_client_request_t){.url = u, .method = "HEAD"};
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_int_eq(resp.status, 200);
    ck_assert_uint_eq(resp.body_len, 0);
    ck_assert_str_eq(http_client_response_header(&resp, "Content-Length"), "5");
    http_client_response_free(&resp);
    free(u);
    http_client_response_free(NULL);
}
END_TEST

START_TEST(test_request_timeout)
{
    char *u = url("/hang");
    http_client_request_t rq = {.url = u, .timeout_ms = 300};
    http_client_response_t resp;
    uint64_t t0 = timing_now_ms();
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_ERR_TIMEOUT);
    ck_assert_uint_lt(timing_now_ms() - t0, 5000);
    ck_assert_int_eq(resp.status, 0);
    ck_assert_ptr_null(resp.body);
    ck_assert_msg(strstr(resp.error, "timed out") != NULL, "%s", resp.error);
    http_client_response_free(&resp);
    /* The server saw the client leave. */
    shared_wait(&shared.gone, 1);
    http_request_reply_text(shared.hanging, 200, "late");
    free(u);
}
END_TEST

START_TEST(test_connect_errors)
{
    int port;
    int fd = test_util_refusing_port(&port);
    char *u = xasprintf("http://127.0.0.1:%d/x", port);
    http_client_request_t rq = {.url = u, .timeout_ms = 5000};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_ERR_CONNECT);
    ck_assert_int_eq(resp.status, 0);
    ck_assert_msg(strncmp(resp.error, "connection refused", 18) == 0, "%s", resp.error);
    http_client_response_free(&resp);
    free(u);
    close(fd);

    /* A listener whose accept queue is full drops new SYNs: the connect times out, which is
     * still "never reached the server". */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    socklen_t len = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int rc = connect(fillers[i], (struct sockaddr *)&sa, sizeof sa);
        ck_assert(rc == 0 || errno == EINPROGRESS);
    }
    u = xasprintf("http://127.0.0.1:%d/x", ntohs(sa.sin_port));
    rq = (http_client_request_t){.url = u, .connect_timeout_ms = 300, .timeout_ms = 5000};
    uint64_t t0 = timing_now_ms();
    http_client_result_t rc = http_client_request(&rq, &resp);
    ck_assert_msg(rc == HTTP_CLIENT_ERR_CONNECT, "rc %d: %s", rc, resp.error);
    ck_assert_uint_lt(timing_now_ms() - t0, 4000);
    ck_assert_msg(strncmp(resp.error, "connect timed out", 17) == 0, "%s", resp.error);
    http_client_response_free(&resp);
    free(u);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);

    /* Not a URL libcurl can use. */
    rq = (http_client_request_t){.url = "notaprotocol://x"};
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_ERR_OTHER);
    ck_assert_str_ne(resp.error, "");
    http_client_response_free(&resp);
}
END_TEST

START_TEST(test_body_cap)
{
    char *u = url("/big");
    http_client_request_t rq = {.url = u, .max_body_bytes = 1u << 20};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_ERR_TOO_LARGE);
    ck_assert_ptr_null(resp.body);
    http_client_response_free(&resp);
    rq.max_body_bytes = 0; /* default 64 MiB */
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK);
    ck_assert_uint_eq(resp.body_len, 2u << 20);
    http_client_response_free(&resp);
    free(u);
}
END_TEST

/* ---- streaming -------------------------------------------------------------------------- */

struct reader {
    http_client_request_t rq;
    int stop_after_events; /* > 0: the data callback aborts after this many events */
    /* results */
    http_client_result_t rc;
    http_client_response_t resp;
    long header_status;
    char content_type[64];
    bool data_before_headers;
    int headers; /* under shared.mu */
    int events;  /* under shared.mu */
    char text[4096];
    sse_parser_t *sse;
};

static int reader_on_headers(const http_client_response_t *resp, void *ud)
{
    struct reader *r = ud;
    r->header_status = resp->status;
    const char *ct = http_client_response_header(resp, "Content-Type");
    snprintf(r->content_type, sizeof r->content_type, "%s", ct ? ct : "");
    shared_signal(&r->headers);
    return 0;
}

static int reader_on_event(const sse_event_t *ev, void *ud)
{
    struct reader *r = ud;
    size_t used = strlen(r->text);
    snprintf(r->text + used, sizeof r->text - used, "%s:%s;", ev->event, ev->data);
    shared_signal(&r->events);
    return r->stop_after_events > 0 && r->events >= r->stop_after_events;
}

static int reader_on_data(const char *data, size_t len, void *ud)
{
    struct reader *r = ud;
    if (r->headers == 0)
        r->data_before_headers = true;
    return sse_parser_feed(r->sse, data, len, reader_on_event, r) == SSE_OK ? 0 : 1;
}

static void *reader_run(void *arg)
{
    struct reader *r = arg;
    r->sse = sse_parser_create(0);
    r->rc = http_client_stream(&r->rq, reader_on_headers, reader_on_data, r, &r->resp);
    sse_parser_destroy(r->sse);
    return NULL;
}

START_TEST(test_stream_incremental)
{
    struct reader r = {0};
    char *u = url("/sse");
    r.rq = (http_client_request_t){.url = u, .idle_timeout_ms = 20000};
    pthread_t t;
    pthread_create(&t, NULL, reader_run, &r);
    shared_wait(&shared.n_streams, 1);
    shared_wait(&r.headers, 1); /* status and headers arrive before any event */
    ck_assert_int_eq(r.header_status, 200);
    ck_assert_str_eq(r.content_type, "text/event-stream");

    /* Lock-step: each event is sent only after the previous one reached the client's callback,
     * and split oddly across writes. */
    http_stream_t *st = shared.stream;
    for (int k = 0; k < 10; k++) {
        char ev[64];
        int n = snprintf(ev, sizeof ev, "event: tick\r\ndata: %d\r\n\r\n", k);
        ck_assert_int_eq(http_stream_write(st, ev, 7), HTTP_STREAM_OK);
        ck_assert_int_eq(http_stream_write(st, ev + 7, (size_t)n - 7), HTTP_STREAM_OK);
        shared_wait(&r.events, k + 1);
    }
    http_stream_close(st);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.rc, HTTP_CLIENT_OK);
    ck_assert_int_eq(r.resp.status, 200);
    ck_assert_ptr_null(r.resp.body);
    ck_assert(!r.data_before_headers);
    ck_assert_str_eq(r.text, "tick:0;tick:1;tick:2;tick:3;tick:4;tick:5;tick:6;tick:7;tick:8;"
                             "tick:9;");
    ck_assert_int_eq(shared.gone, 0);
    http_client_response_free(&r.resp);
    free(u);
}
END_TEST

START_TEST(test_stream_abort_from_callback)
{
    struct reader r = {0};
    char *u = url("/sse");
    r.rq = (http_client_request_t){.url = u};
    r.stop_after_events = 1;
    pthread_t t;
    pthread_create(&t, NULL, reader_run, &r);
    shared_wait(&shared.n_streams, 1);
    ck_assert_int_eq(http_stream_write(shared.stream, "data: 1\n\n", 9), HTTP_STREAM_OK);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.rc, HTTP_CLIENT_ERR_ABORTED);
    ck_assert_str_eq(r.text, "message:1;");
    ck_assert_int_eq(r.resp.status, 200);
    shared_wait(&shared.gone, 1); /* the server's producer learns of it */
    http_stream_close(shared.stream);
    http_client_response_free(&r.resp);
    free(u);
}
END_TEST

START_TEST(test_stream_cancel_from_other_thread)
{
    struct reader r = {0};
    char *u = url("/sse");
    http_client_cancel_t *cancel = http_client_cancel_create();
    r.rq = (http_client_request_t){.url = u, .cancel = cancel};
    pthread_t t;
    pthread_create(&t, NULL, reader_run, &r);
    shared_wait(&r.headers, 1);
    /* Nothing is being sent: the client sits in its wait, which the cancel interrupts (libcurl's
     * own timers would also end the wait eventually, so the bound is loose). */
    ck_assert(!http_client_cancel_fired(cancel));
    uint64_t t0 = timing_now_ms();
    http_client_cancel_fire(cancel);
    http_client_cancel_fire(cancel); /* idempotent */
    pthread_join(t, NULL);
    ck_assert_uint_lt(timing_now_ms() - t0, 5000);
    ck_assert_int_eq(r.rc, HTTP_CLIENT_ERR_ABORTED);
    ck_assert_str_eq(r.resp.error, "cancelled");
    shared_wait(&shared.gone, 1);
    http_stream_close(shared.stream);
    http_client_response_free(&r.resp);

    /* A cancel fired before the start aborts at once, before connecting. */
    struct reader r2 = {0};
    r2.rq = (http_client_request_t){.url = u, .cancel = cancel};
    reader_run(&r2);
    ck_assert_int_eq(r2.rc, HTTP_CLIENT_ERR_ABORTED);
    ck_assert_int_eq(r2.headers, 0);
    http_client_response_free(&r2.resp);
    http_client_cancel_destroy(cancel);
    http_client_cancel_destroy(NULL);
    free(u);
}
END_TEST

START_TEST(test_stream_idle_timeout)
{
    struct reader r = {0};
    char *u = url("/sse");
    r.rq = (http_client_request_t){.url = u, .idle_timeout_ms = 300};
    pthread_t t;
    pthread_create(&t, NULL, reader_run, &r);
    shared_wait(&shared.n_streams, 1);
    ck_assert_int_eq(http_stream_write(shared.stream, "data: only\n\n", 12), HTTP_STREAM_OK);
    shared_wait(&r.events, 1);
    uint64_t t0 = timing_now_ms();
    pthread_join(t, NULL); /* then silence */
    ck_assert_int_eq(r.rc, HTTP_CLIENT_ERR_IDLE);
    ck_assert_uint_lt(timing_now_ms() - t0, 5000);
    ck_assert_str_eq(r.text, "message:only;");
    ck_assert_ptr_nonnull(strstr(r.resp.error, "nothing received"));
    shared_wait(&shared.gone, 1);
    http_stream_close(shared.stream);
    http_client_response_free(&r.resp);
    free(u);
}
END_TEST

/* A bare HTTP/1.1 server on one thread: answers keep-alive requests on each connection it
 * accepts, closing a connection after `per_conn` answers, and counts accepted connections. */
struct keepalive_server {
    int lfd, port, per_conn, answers_wanted;
    int accepted;
};

static void *keepalive_server_run(void *arg)
{
    struct keepalive_server *ks = arg;
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    int answered = 0;
    while (answered < ks->answers_wanted) {
        int fd = accept(ks->lfd, NULL, NULL);
        if (fd < 0)
            break;
        ks->accepted++;
        char buf[4096];
        size_t have = 0;
        for (int n = 0; n < ks->per_conn && answered < ks->answers_wanted;) {
            char *end = memmem(buf, have, "\r\n\r\n", 4);
            if (end) { /* GET requests: no body */
                size_t used = (size_t)(end - buf) + 4;
                memmove(buf, buf + used, have - used);
                have -= used;
                ck_assert_int_eq(write(fd, answer, sizeof answer - 1), (int)sizeof answer - 1);
                n++;
                answered++;
                continue;
            }
            ssize_t r = read(fd, buf + have, sizeof buf - have);
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        close(fd);
    }
    return NULL;
}

START_TEST(test_connection_kept_per_thread)
{
    struct keepalive_server ks = {.per_conn = 2, .answers_wanted = 3};
    ks.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(ks.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(ks.lfd, 8), 0);
    socklen_t len = sizeof sa;
    getsockname(ks.lfd, (struct sockaddr *)&sa, &len);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, keepalive_server_run, &ks), 0);
    char *u = xasprintf("http://127.0.0.1:%d/x", ntohs(sa.sin_port));
    for (int i = 0; i < 3; i++) {
        http_client_request_t rq = {.url = u, .timeout_ms = 5000};
        http_client_response_t resp;
        http_client_result_t rc = http_client_request(&rq, &resp);
        ck_assert_msg(rc == HTTP_CLIENT_OK, "request %d: %s", i, resp.error);
        ck_assert_int_eq(resp.status, 200);
        ck_assert_str_eq(resp.body, "ok");
        http_client_response_free(&resp);
    }
    pthread_join(t, NULL);
    /* Two answers on the first connection, then the server closed it: a second one. */
    ck_assert_int_eq(ks.accepted, 2);
    close(ks.lfd);
    free(u);
}
END_TEST

/* ---- shared loops ------------------------------------------------------------------------ */

static int open_descriptors(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

struct held {
    pthread_t thread;
    http_client_request_t rq;
    http_client_response_t resp;
    http_client_result_t rc;
};

static void *held_run(void *arg)
{
    struct held *h = arg;
    h->rc = http_client_request(&h->rq, &h->resp);
    return NULL;
}

/* Transfers held open at once on shared loops cost their sockets only: libcurl's per-multi
 * socketpair is paid per loop, not per calling thread (which would be 2 more per transfer). */
START_TEST(test_loops_held_transfers_descriptors)
{
    enum { N = 24 };
    char *u = url("/hello"), *held_url = url("/held");
    http_client_request_t rq = {.url = u, .timeout_ms = 10000};
    http_client_response_t resp;
    ck_assert_int_eq(http_client_request(&rq, &resp), HTTP_CLIENT_OK); /* the loops start */
    http_client_response_free(&resp);
    int before = open_descriptors();

    struct held *h = xcalloc(N, sizeof *h);
    for (int i = 0; i < N; i++) {
        h[i].rq = (http_client_request_t){.url = held_url, .cancel = http_client_cancel_create()};
        ck_assert_int_eq(pthread_create(&h[i].thread, NULL, held_run, &h[i]), 0);
    }
    shared_wait(&shared.n_held, N);
    int during = open_descriptors();
    /* Each held transfer: its client socket and the server's socket here, nothing else. */
    ck_assert_msg(during - before <= 2 * N + 2, "%d descriptors for %d held transfers",
                  during - before, N);
    for (int i = 0; i < N; i++)
        http_client_cancel_fire(h[i].rq.cancel);
    for (int i = 0; i < N; i++) {
        pthread_join(h[i].thread, NULL);
        ck_assert_int_eq(h[i].rc, HTTP_CLIENT_ERR_ABORTED);
        http_client_response_free(&h[i].resp);
        http_client_cancel_destroy(h[i].rq.cancel);
    }
    shared_wait(&shared.held_gone, N);
    free(h);
    free(u);
    free(held_url);
}
END_TEST

static int slow_on_data(const char *data, size_t len, void *ud)
{
    size_t *got = ud;
    if (*got == 0)
        usleep(300 * 1000); /* a slow reader: the loop fills the mailbox and pauses meanwhile */
    for (size_t i = 0; i < len; i++) {
        if (data[i] != 'z')
            return 1; /* the transfer then fails, and so does the test */
    }
    *got += len;
    return 0;
}

/* A stream larger than the mailbox, read slowly: paused, resumed, delivered whole. */
START_TEST(test_loops_slow_reader)
{
    char *u = url("/big");
    http_client_request_t rq = {.url = u, .timeout_ms = 20000};
    http_client_response_t resp;
    size_t got = 0;
    ck_assert_int_eq(http_client_stream(&rq, NULL, slow_on_data, &got, &resp), HTTP_CLIENT_OK);
    ck_assert_int_eq(resp.status, 200);
    ck_assert_uint_eq(got, 2u << 20);
    http_client_response_free(&resp);
    free(u);
}
END_TEST

/* The same cases twice: each calling thread on its own multi handle, then on shared loops
 * (Check forks a child per test, and the loops start in the child with its first request). */
static Suite *http_client_suite(const char *name, bool loops)
{
    Suite *suite = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, server_up, server_down);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_request_basic);
    tcase_add_test(tc, test_request_timeout);
    tcase_add_test(tc, test_connect_errors);
    tcase_add_test(tc, test_body_cap);
    tcase_add_test(tc, test_stream_incremental);
    tcase_add_test(tc, test_stream_abort_from_callback);
    tcase_add_test(tc, test_stream_cancel_from_other_thread);
    tcase_add_test(tc, test_stream_idle_timeout);
    tcase_add_test(tc, test_connection_kept_per_thread);
    if (loops) {
        tcase_add_test(tc, test_loops_held_transfers_descriptors);
        tcase_add_test(tc, test_loops_slow_reader);
    }
    suite_add_tcase(suite, tc);
    return suite;
}

int main(void)
{
    int failed = test_util_run_suite(http_client_suite("http_client", false));
    http_client_set_loops(2);
    failed |= test_util_run_suite(http_client_suite("http_client_loops", true));
    return failed;
}
