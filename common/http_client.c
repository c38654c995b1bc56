/*
 * common/http_client.c — HTTP requests over libcurl, buffered or streamed.
 *
 * Each call drives one easy handle through a multi handle, so that the wait for data is a
 * curl_multi_poll that another thread can interrupt (curl_multi_wakeup, used by
 * http_client_cancel_fire) and that wakes up for the idle timeout. Buffered requests are
 * streaming requests whose data callback appends to the body.
 *
 * Two ways to drive it. By default the calling thread drives its own multi handle (below). With
 * http_client_set_loops the transfers of all threads run on a few loop threads, one multi handle
 * each, and the calling thread waits on its transfer's mailbox and runs its callbacks from
 * there: libcurl 7.88 gives every multi handle a socketpair for curl_multi_wakeup, so a process
 * holding thousands of transfers on their own threads would spend two descriptors per transfer
 * on it; with the loops it spends four per loop (that socketpair, an epoll set, an eventfd). A
 * loop drives its multi with curl_multi_socket_action over epoll, so each wake-up costs the
 * sockets that are ready, not every transfer it holds; its connection cache keeps the
 * connections of all its callers.
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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
    pthread_mutex_t mu;            /* guards multi, loop */
    CURLM *multi;                  /* the transfer using this cancel, to wake it up */
    struct http_client_loop *loop; /* ... or the loop it runs on */
};

/* How many bytes a loop hands to a caller that has not taken them yet before it pauses the
 * transfer (the caller's callbacks may block, e.g. on a slow client). */
#define HTTP_CLIENT_MAIL_MAX ((size_t)1 << 20)

struct http_client_loop;

/* A transfer's mailbox between a loop thread and the calling thread (the protocol is at
 * struct http_client_loop). Everything is under mu. */
struct http_client_mail {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* the loop put something here */
    bool headers;        /* the final headers are in resp, not yet given to on_headers */
    char *data;          /* body bytes not yet given to on_data */
    size_t len, cap;
    bool paused; /* the loop paused the transfer because data is full */
    bool resume; /* caller -> loop: data was taken, continue */
    bool abort;  /* caller -> loop: a callback asked to stop */
    bool done;   /* the loop is done with the transfer; code and idle are set */
    bool idle;
    CURLcode code;
};

/* The state of one transfer, shared by the libcurl callbacks. */
struct http_client_xfer {
    const http_client_request_t *req;
    CURL *easy;
    struct http_client_mail *mail;                      /* NULL: driven by the calling thread */
    struct http_client_xfer *prev_active, *next_active; /* on a loop's incoming / active list */
    struct http_client_loop *loop;                      /* the loop carrying it, or NULL */
    struct http_client_xfer *next_wake;                 /* on loop->to_wake (loop thread only) */
    bool wake_pending;                                  /* on loop->to_wake (loop thread only) */
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
    if (h->multi)
        curl_multi_cleanup(h->multi);
    free(h);
}

static void http_client_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_key_create(&http_client_handles_key, http_client_handles_free) != 0)
        abort(); /* only fails when the process is out of keys: a build error, not input */
}

/* The calling thread's handles, created on first use (the multi only when want_multi); NULL
 * members when libcurl failed. */
static struct http_client_handles *http_client_handles(bool want_multi)
{
    struct http_client_handles *h = pthread_getspecific(http_client_handles_key);
    if (!h) {
        h = xcalloc(1, sizeof *h);
        pthread_setspecific(http_client_handles_key, h);
    }
    if (!h->multi && want_multi)
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

static void http_client_loop_poke(struct http_client_loop *loop);

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
    if (cancel->loop)
        http_client_loop_poke(cancel->loop);
    else if (cancel->multi)
        curl_multi_wakeup(cancel->multi);
    pthread_mutex_unlock(&cancel->mu);
}

bool http_client_cancel_fired(const http_client_cancel_t *cancel)
{
    return atomic_load(&cancel->fired);
}

static void http_client_cancel_attach(http_client_cancel_t *cancel, CURLM *multi,
                                      struct http_client_loop *loop)
{
    if (cancel == NULL)
        return;
    pthread_mutex_lock(&cancel->mu);
    cancel->multi = multi;
    cancel->loop = loop;
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

/* Mail for a caller is not signalled from inside libcurl's callbacks but once per loop
 * iteration (http_client_loop_wake_callers): a socket read that decodes into many pieces (a
 * chunked SSE answer: one per event) then costs the caller one wake-up, not one per piece. */
static void http_client_loop_note(struct http_client_xfer *x);

/* Hands status and headers to on_headers once, for the final (non-1xx) response. */
static bool http_client_deliver_headers(struct http_client_xfer *x)
{
    if (x->headers_done)
        return true;
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200)
        return true; /* 1xx: the real response follows */
    x->headers_done = true;
    x->resp->status = status;
    if (x->mail && x->on_headers) { /* the caller runs on_headers */
        pthread_mutex_lock(&x->mail->mu);
        x->mail->headers = true;
        pthread_mutex_unlock(&x->mail->mu);
        http_client_loop_note(x);
        return true;
    }
    if (x->on_headers && x->on_headers(x->resp, x->ud) != 0) {
        x->aborted = true;
        return false;
    }
    return true;
}

static size_t http_client_on_header(char *line, size_t size, size_t n, void *ud)
{
    struct http_client_xfer *x = ud;
    http_client_response_t *resp = x->resp;
    x->last_byte_ms = timing_now_ms();
    if (x->mail && x->headers_done)
        return n; /* trailers: resp->headers is the caller's now */
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        http_client_headers_clear(resp); /* a new response (after a 1xx) starts */
        return n;
    }
    size_t len = n;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len == 0)
        return http_client_deliver_headers(x) ? n : 0;
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

/* A loop thread's on_data for a caller's stream: into the mailbox (see the protocol). */
static size_t http_client_post_data(struct http_client_xfer *x, const char *data, size_t n)
{
    struct http_client_mail *m = x->mail;
    size_t rc = n;
    pthread_mutex_lock(&m->mu);
    if (m->abort) {
        rc = 0;
    } else if (m->len >= HTTP_CLIENT_MAIL_MAX) {
        m->paused = true;
        rc = CURL_WRITEFUNC_PAUSE; /* libcurl keeps the piece and hands it again on resume */
    } else {
        if (m->len + n > m->cap) {
            m->cap = m->len + n > 2 * m->cap ? m->len + n : 2 * m->cap;
            m->data = xrealloc(m->data, m->cap);
        }
        memcpy(m->data + m->len, data, n);
        m->len += n;
    }
    pthread_mutex_unlock(&m->mu);
    if (rc == n)
        http_client_loop_note(x);
    return rc;
}

static size_t http_client_on_data(char *data, size_t size, size_t n, void *ud)
{
    struct http_client_xfer *x = ud;
    x->last_byte_ms = timing_now_ms();
    if (!http_client_deliver_headers(x))
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
    if (x->mail)
        return http_client_post_data(x, data, n);
    if (x->on_data(data, n, x->ud) != 0) {
        x->aborted = true;
        return 0;
    }
    return n;
}

/* ---- shared transfer loops ---------------------------------------------------------------- */

/* See http_client_set_loops. The loop thread owns its multi and the transfers on `active`; it
 * runs libcurl's callbacks, which hand headers and data to the calling thread through the
 * transfer's mailbox (struct http_client_mail). Protocol: a caller puts its transfer on
 * `incoming` (under mu) and wakes the loop (evfd); the loop adds it, and when libcurl is done with it
 * (or it is cancelled, aborted or idle) removes it and sets mail.done, after which it never
 * touches the transfer again. Requests from the caller to the loop (abort, resume a paused
 * transfer) and cancellations set the transfer's flag, then `check` (under mu), then wake the
 * loop: the loop then looks at every active transfer's flags. */
struct http_client_loop {
    pthread_mutex_t mu;
    struct http_client_xfer *incoming; /* under mu */
    bool check;                        /* under mu */
    CURLM *multi;
    int epfd, evfd;   /* the loop's epoll set, and the eventfd in it that wakes the loop */
    atomic_uint load; /* transfers submitted and not yet done: the least loaded loop is chosen */
    uint64_t timer_at_ms;             /* loop thread only: libcurl's timer (UINT64_MAX: none) */
    struct http_client_xfer *active;  /* loop thread only */
    struct http_client_xfer *to_wake; /* loop thread only: callers with new mail to wake */
    uint64_t next_idle_check_ms;      /* loop thread only: no idle transfer before this */
};

static atomic_int http_client_loops_wanted;
static pthread_once_t http_client_loops_once = PTHREAD_ONCE_INIT;
static struct http_client_loop *http_client_loops; /* NULL: every thread has its own multi */
static int http_client_n_loops;

void http_client_set_loops(int n_loops)
{
    atomic_store(&http_client_loops_wanted, n_loops > 0 ? n_loops : 0);
}

static void http_client_loop_note(struct http_client_xfer *x)
{
    if (x->wake_pending)
        return;
    x->wake_pending = true;
    x->next_wake = x->loop->to_wake;
    x->loop->to_wake = x;
}

/* Signals every caller that got mail since the last call (see http_client_loop_note). */
static void http_client_loop_wake_callers(struct http_client_loop *loop)
{
    while (loop->to_wake) {
        struct http_client_xfer *x = loop->to_wake;
        loop->to_wake = x->next_wake;
        x->wake_pending = false;
        pthread_mutex_lock(&x->mail->mu);
        pthread_cond_signal(&x->mail->cond);
        pthread_mutex_unlock(&x->mail->mu);
    }
}

/* The loop thread has handed the transfer back: wakes its caller. The last touch of x (which
 * is why pending wake-ups go out first: x may be freed as soon as mail.done is set). */
static void http_client_loop_finish(struct http_client_loop *loop, struct http_client_xfer *x,
                                    CURLcode code, bool idle)
{
    http_client_loop_wake_callers(loop);
    if (x->prev_active)
        x->prev_active->next_active = x->next_active;
    else
        loop->active = x->next_active;
    if (x->next_active)
        x->next_active->prev_active = x->prev_active;
    curl_multi_remove_handle(loop->multi, x->easy);
    atomic_fetch_sub(&loop->load, 1);
    struct http_client_mail *m = x->mail;
    pthread_mutex_lock(&m->mu);
    m->code = code;
    m->idle = idle;
    m->done = true;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

static void http_client_loop_take_incoming(struct http_client_loop *loop, uint64_t now)
{
    pthread_mutex_lock(&loop->mu);
    struct http_client_xfer *in = loop->incoming;
    loop->incoming = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (in) {
        struct http_client_xfer *x = in;
        in = x->next_active;
        x->prev_active = NULL;
        x->next_active = loop->active;
        if (loop->active)
            loop->active->prev_active = x;
        loop->active = x;
        x->last_byte_ms = now;
        if (x->req->idle_timeout_ms > 0 &&
            now + (uint64_t)x->req->idle_timeout_ms < loop->next_idle_check_ms)
            loop->next_idle_check_ms = now + (uint64_t)x->req->idle_timeout_ms;
        if (curl_multi_add_handle(loop->multi, x->easy) != CURLM_OK)
            http_client_loop_finish(loop, x, CURLE_FAILED_INIT, false);
        else if (x->req->cancel && http_client_cancel_fired(x->req->cancel))
            http_client_loop_finish(loop, x, CURLE_ABORTED_BY_CALLBACK, false);
    }
}

/* Acts on the flags of every active transfer (see the protocol). */
static void http_client_loop_check(struct http_client_loop *loop)
{
    struct http_client_xfer *next;
    for (struct http_client_xfer *x = loop->active; x; x = next) {
        next = x->next_active;
        struct http_client_mail *m = x->mail;
        pthread_mutex_lock(&m->mu);
        bool stop = m->abort, resume = m->resume;
        m->resume = false;
        pthread_mutex_unlock(&m->mu);
        if (stop || (x->req->cancel && http_client_cancel_fired(x->req->cancel)))
            http_client_loop_finish(loop, x, CURLE_ABORTED_BY_CALLBACK, false);
        else if (resume)
            curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may run the write callback at once */
    }
}

/* Ends the transfers silent for their idle timeout; returns when the next one could be. */
static uint64_t http_client_loop_idle(struct http_client_loop *loop, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    struct http_client_xfer *nx;
    for (struct http_client_xfer *x = loop->active; x; x = nx) {
        nx = x->next_active;
        if (x->req->idle_timeout_ms <= 0)
            continue;
        uint64_t deadline = x->last_byte_ms + (uint64_t)x->req->idle_timeout_ms;
        if (deadline <= now)
            http_client_loop_finish(loop, x, CURLE_OPERATION_TIMEDOUT, true);
        else if (deadline < next)
            next = deadline;
    }
    return next;
}

/* CURLMOPT_SOCKETFUNCTION: the loop's epoll set follows the sockets libcurl wants watched. */
static int http_client_loop_socket(CURL *easy, curl_socket_t s, int what, void *ud, void *sockp)
{
    struct http_client_loop *loop = ud;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s, NULL); /* may be closed already: ignore */
        return 0;
    }
    struct epoll_event ev = {.data.fd = s};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT)
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants to be called with CURL_SOCKET_TIMEOUT. */
static int http_client_loop_timer(CURLM *multi, long timeout_ms, void *ud)
{
    struct http_client_loop *loop = ud;
    loop->timer_at_ms = timeout_ms < 0 ? UINT64_MAX : timing_now_ms() + (uint64_t)timeout_ms;
    return 0;
}

static void http_client_loop_wake(struct http_client_loop *loop)
{
    uint64_t one = 1;
    if (write(loop->evfd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is full, so a wake-up is pending anyway */
    }
}

/* The loop thread: epoll over the sockets of all its transfers (curl_multi_socket_action), so
 * a wake-up costs what is ready, not what is held. */
static void *http_client_loop_run(void *arg)
{
    struct http_client_loop *loop = arg;
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = timing_now_ms();
        http_client_loop_take_incoming(loop, now);
        pthread_mutex_lock(&loop->mu);
        bool check = loop->check;
        loop->check = false;
        pthread_mutex_unlock(&loop->mu);
        if (check)
            http_client_loop_check(loop);
        http_client_loop_wake_callers(loop); /* mail of resumed transfers */

        now = timing_now_ms();
        uint64_t until = loop->timer_at_ms < loop->next_idle_check_ms ? loop->timer_at_ms
                                                                      : loop->next_idle_check_ms;
        int wait = HTTP_CLIENT_MAX_WAIT_MS;
        if (until <= now)
            wait = 0;
        else if (until - now < (uint64_t)wait)
            wait = (int)(until - now);
        int n = epoll_wait(loop->epfd, evs, (int)(sizeof evs / sizeof *evs), wait);
        int running = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == loop->evfd) {
                uint64_t count;
                if (read(loop->evfd, &count, sizeof count) < 0) {
                    /* EAGAIN: another wake-up took it */
                }
                continue;
            }
            int mask = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP))
                mask |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
            curl_multi_socket_action(loop->multi, evs[i].data.fd, mask, &running);
        }
        now = timing_now_ms();
        if (loop->timer_at_ms <= now) {
            loop->timer_at_ms = UINT64_MAX; /* libcurl sets the next one */
            curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        http_client_loop_wake_callers(loop);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct http_client_xfer *x = NULL;
            CURLcode code = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            http_client_loop_finish(loop, x, code, false);
        }
        now = timing_now_ms();
        if (now >= loop->next_idle_check_ms)
            loop->next_idle_check_ms = http_client_loop_idle(loop, now);
    }
    return NULL;
}

/* Starts the loops http_client_set_loops asked for, once per process. A loop that cannot be
 * made leaves the process on per-thread multis. */
static void http_client_loops_start(void)
{
    int n = atomic_load(&http_client_loops_wanted);
    if (n <= 0)
        return;
    struct http_client_loop *loops = xcalloc((size_t)n, sizeof *loops);
    for (int i = 0; i < n; i++) {
        struct http_client_loop *loop = &loops[i];
        pthread_mutex_init(&loop->mu, NULL);
        atomic_init(&loop->load, 0);
        loop->next_idle_check_ms = UINT64_MAX;
        loop->timer_at_ms = UINT64_MAX;
        loop->multi = curl_multi_init();
        loop->epfd = epoll_create1(EPOLL_CLOEXEC);
        loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = loop->evfd};
        pthread_t t;
        if (loop->multi == NULL || loop->epfd < 0 || loop->evfd < 0 ||
            epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) != 0) {
            fprintf(stderr, "http_client: cannot set transfer loop %d up; using per-thread ones\n",
                    i);
            return; /* the started loops idle on; their memory stays reachable */
        }
        curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, http_client_loop_socket);
        curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
        curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, http_client_loop_timer);
        curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
        if (pthread_create(&t, NULL, http_client_loop_run, loop) != 0) {
            fprintf(stderr, "http_client: cannot start transfer loop %d; using per-thread ones\n",
                    i);
            return;
        }
        pthread_detach(t);
    }
    http_client_n_loops = n;
    http_client_loops = loops;
}

static struct http_client_loop *http_client_loop_pick(void)
{
    pthread_once(&http_client_loops_once, http_client_loops_start);
    if (http_client_loops == NULL)
        return NULL;
    struct http_client_loop *best = &http_client_loops[0];
    for (int i = 1; i < http_client_n_loops; i++) {
        if (atomic_load(&http_client_loops[i].load) < atomic_load(&best->load))
            best = &http_client_loops[i];
    }
    return best;
}

/* Tells x's loop to look at its flags (see the protocol). */
static void http_client_loop_poke(struct http_client_loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    loop->check = true;
    pthread_mutex_unlock(&loop->mu);
    http_client_loop_wake(loop);
}

/* ---- the transfer ----------------------------------------------------------------------- */

/* Sets easy (the thread's, in its reset state) up for req. */
static CURL *http_client_easy(CURL *easy, const http_client_request_t *req,
                              struct http_client_xfer *x, struct curl_slist **hl, char *errbuf)
{
    if (easy == NULL)
        return NULL;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
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
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_client_on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);

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

/* The calling thread's side of a transfer on a loop: waits for what the loop posts and runs
 * the callbacks (see the protocol at struct http_client_loop). Returns once the loop is done
 * with the transfer; *code and *idle say how it ended. */
static void http_client_loop_wait(struct http_client_xfer *x, struct http_client_loop *loop,
                                  CURLcode *code, bool *idle)
{
    struct http_client_mail *m = x->mail;
    char *spare = NULL;
    size_t spare_cap = 0;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->done && !m->headers && m->len == 0)
            pthread_cond_wait(&m->cond, &m->mu);
        bool headers = m->headers, done = m->done, resume = m->paused;
        char *got = m->data;
        size_t got_len = m->len, got_cap = m->cap;
        m->headers = m->paused = false;
        m->data = spare; /* swap buffers: the loop fills one while the callbacks read the other */
        m->cap = spare_cap;
        m->len = 0;
        pthread_mutex_unlock(&m->mu);

        bool was_aborted = x->aborted;
        if (headers && !x->aborted && x->on_headers(x->resp, x->ud) != 0)
            x->aborted = true;
        if (got_len > 0 && !x->aborted && x->on_data(got, got_len, x->ud) != 0)
            x->aborted = true;
        spare = got;
        spare_cap = got_cap;
        bool poke = (x->aborted && !was_aborted) || resume;

        pthread_mutex_lock(&m->mu);
        m->abort = m->abort || x->aborted;
        m->resume = m->resume || resume;
        if (done)
            break;
        if (poke) {
            pthread_mutex_unlock(&m->mu);
            http_client_loop_poke(loop);
            pthread_mutex_lock(&m->mu);
        }
    }
    *code = m->code;
    *idle = m->idle;
    free(m->data);
    pthread_mutex_unlock(&m->mu);
    free(spare);
}

static http_client_result_t http_client_run(struct http_client_xfer *x)
{
    const http_client_request_t *req = x->req;
    http_client_response_t *resp = x->resp;
    memset(resp, 0, sizeof *resp);
    http_client_global_init();

    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hl = NULL;
    CURLM *multi = NULL;
    http_client_result_t rc;
    bool idle = false;
    CURLcode code = CURLE_OK;
    struct http_client_mail mail = {.code = CURLE_OK};

    if (req->url == NULL) {
        snprintf(resp->error, sizeof resp->error, "no URL");
        return HTTP_CLIENT_ERR_OTHER;
    }
    struct http_client_loop *loop = http_client_loop_pick();
    struct http_client_handles *handles = http_client_handles(loop == NULL);
    x->easy = http_client_easy(handles->easy, req, x, &hl, errbuf);
    if (loop && x->easy) {
        pthread_mutex_init(&mail.mu, NULL);
        pthread_cond_init(&mail.cond, NULL);
        x->mail = &mail;
        x->loop = loop;
        http_client_cancel_attach(req->cancel, NULL, loop);
        if (req->cancel && http_client_cancel_fired(req->cancel)) {
            code = CURLE_ABORTED_BY_CALLBACK;
        } else {
            atomic_fetch_add(&loop->load, 1);
            pthread_mutex_lock(&loop->mu);
            x->next_active = loop->incoming;
            loop->incoming = x;
            pthread_mutex_unlock(&loop->mu);
            http_client_loop_wake(loop);
            http_client_loop_wait(x, loop, &code, &idle);
        }
        pthread_cond_destroy(&mail.cond);
        pthread_mutex_destroy(&mail.mu);
        goto classify;
    }
    multi = handles->multi;
    if (x->easy == NULL || multi == NULL || curl_multi_add_handle(multi, x->easy) != CURLM_OK) {
        snprintf(resp->error, sizeof resp->error, "libcurl initialisation failed");
        rc = HTTP_CLIENT_ERR_OTHER;
        goto out;
    }
    http_client_cancel_attach(req->cancel, multi, NULL);

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
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == x->easy)
            code = msg->data.result;
    }
classify:
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
    } else if (x->easy == NULL || code == CURLE_FAILED_INIT) {
        snprintf(resp->error, sizeof resp->error, "libcurl initialisation failed");
        rc = HTTP_CLIENT_ERR_OTHER;
    } else {
        rc = http_client_classify(x->easy, code, errbuf, resp);
        if (rc == HTTP_CLIENT_OK && !x->headers_done)
            curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp->status);
    }
out:
    http_client_cancel_attach(req->cancel, NULL, NULL);
    if (multi && x->easy)
        curl_multi_remove_handle(multi, x->easy); /* both kept for the thread's next call */
    if (x->easy)
        curl_easy_reset(x->easy); /* drops the pointers to this call's stack and header list */
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
