/*
 * common/http_server_internal.h — what http_server.c, http_request.c and http_stream.c share.
 *
 * Not for use outside those three files.
 *
 * Protocol of struct http_request (one per HTTP request, "the exchange"):
 * - Reference counted (refs). References: libmicrohttpd's, from the URI callback to the
 *   completion callback; the deferred owner's, from http_request_defer to the reply; the
 *   stream owner's, from http_stream_start to http_stream_close (a deferred request's reference
 *   passes to its stream); the streaming response's, from queueing to the response's free
 *   callback; short-lived ones taken by the hang-up watcher and at shutdown. The last release
 *   frees it.
 * - Fields above `mu` are written only on the server thread before the handler runs and are
 *   read-only afterwards, except prev/next (the server's list, guarded by server->mu). Fields
 *   below `mu` are guarded by it.
 * - conn is valid while !completed. The connection is suspended by us (suspended == true) only
 *   from a libmicrohttpd callback on its thread, and only while !client_gone; it is resumed
 *   exactly once per suspension, under mu, by whoever first has a reason (new data, a reply,
 *   close, a hang-up, shutdown). libmicrohttpd never completes a suspended connection, so
 *   "suspended" implies conn is valid. Lock order: request mu, then libmicrohttpd's locks;
 *   server mu and a request's mu are never held together.
 */
#ifndef CORTEX_HTTP_SERVER_INTERNAL_H
#define CORTEX_HTTP_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <microhttpd.h>

#include "error.h"
#include "http_server.h"
#include "log.h"

struct http_pair {
    char *name;
    char *value;
};

struct http_pairs {
    struct http_pair *v;
    size_t n, cap;
};

struct http_stream {
    struct http_request *req;
};

enum http_answer {
    HTTP_ANSWER_NONE,     /* nothing decided yet */
    HTTP_ANSWER_DEFERRED, /* the handler promised an answer later */
    HTTP_ANSWER_REPLY,    /* a complete reply is stored */
    HTTP_ANSWER_STREAM,   /* a streaming answer has started */
};

struct http_request {
    struct http_server *server;
    uint64_t serial; /* identifies the request to the hang-up watcher */
    struct MHD_Connection *conn;
    int fd;
    char *method, *path, *query, *wildcard;
    char request_id[129]; /* a sane client X-Request-Id (<= 128) or an ids_new() id */
    char client_addr[64];
    struct http_pairs headers, args;
    char *body;
    size_t body_len, body_cap;
    bool headers_seen, dispatched, body_rejected;
    struct http_request *prev, *next; /* the server's live list, under server->mu */

    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* stream space freed, gone, on_gone finished */
    enum http_answer answer;
    bool queued;      /* a response has been handed to libmicrohttpd */
    bool suspended;   /* we suspended conn; see the protocol above */
    bool watched;     /* fd is in the hang-up watcher's epoll set */
    bool completed;   /* libmicrohttpd's completion callback ran; conn is invalid */
    bool client_gone; /* see "gone" in http_request.h */
    int status;
    char *content_type;
    char *reply_body;
    size_t reply_len;
    struct http_pairs reply_headers;
    /* streaming */
    struct http_stream stream;
    char *fifo; /* queued unsent bytes: fifo[fifo_head .. fifo_head + fifo_len) */
    size_t fifo_head, fifo_len, fifo_cap, fifo_max;
    bool stream_closed;
    /* on_gone */
    http_gone_fn on_gone;
    void *on_gone_ud;
    bool gone_notified, gone_running;
    pthread_t gone_thread;
};

/* A connection of the server: on the server's `waiting` list (under its mu) until its first
 * request's headers are complete, so the watcher can drop it at its header deadline. Made by
 * the connection notification (STARTED), freed by it (CLOSED), which runs before
 * libmicrohttpd closes the socket: an fd found on the list under mu is still this
 * connection's. */
struct http_conn {
    int fd;
    uint64_t deadline_ms; /* monotonic */
    bool waiting;         /* on the list */
    struct http_conn *prev, *next;
};

struct http_server {
    struct MHD_Daemon *daemon;
    http_route_t *routes;
    size_t n_routes;
    void *ud;
    size_t max_body;
    size_t stream_max_queued;
    unsigned idle_timeout_s;
    uint16_t port;

    pthread_mutex_t mu; /* guards live, next_serial, stopping, waiting, slow_dropped */
    struct http_request *live;
    struct http_conn *waiting; /* connections before their first headers, oldest first */
    struct http_conn *waiting_tail;
    uint64_t header_deadline_ms;
    uint64_t slow_dropped;
    uint64_t next_serial;
    atomic_bool stopping;

    int watch_fd; /* epoll set of suspended connections' sockets (EPOLLRDHUP) */
    int wake_fd;  /* eventfd that stops the watcher */
    pthread_t watcher;
    bool watcher_started;
};

/* Logs an event about one request at level, naming it (request=…). The context, like the
 * arguments, is only evaluated when the level is enabled. */
#define HTTP_REQUEST_LOG(level, req, ...)                                                          \
    LOG_AT((level), &(const struct log_ctx){.request_id = (req)->request_id}, __VA_ARGS__)

/* Starts/stops watching a suspended connection's socket for a hang-up. */
void http_server_watch_add(struct http_server *server, struct http_request *req);
void http_server_watch_del(struct http_server *server, struct http_request *req);

struct http_request *http_request_new(struct http_server *server, struct MHD_Connection *conn);
/* Fills method, path, header and argument copies, request id, client address (first call of
 * the access handler, when the headers are complete). */
void http_request_start(struct http_request *req, const char *method, const char *url);
void http_request_ref(struct http_request *req);
void http_request_unref(struct http_request *req);
/* The following are called with req->mu held. */
void http_request_resume_locked(struct http_request *req);
void http_request_suspend_locked(struct http_request *req);
/* Marks the client gone, wakes waiters and runs on_gone once (mu is released while it runs). */
void http_request_set_gone_locked(struct http_request *req);
/* Drops on_gone, waiting for a running call to finish (unless it is the caller's own). */
void http_request_clear_gone_locked(struct http_request *req);
/* Adds a reply header (already validated). */
void http_request_add_reply_header_locked(struct http_request *req, const char *name,
                                          const char *value);
/* A reply header added so far, case-insensitive; NULL when absent. */
const char *http_request_reply_header_locked(const struct http_request *req, const char *name);
/* Builds the libmicrohttpd response for the stored answer (REPLY or STREAM). */
struct MHD_Response *http_request_build_response_locked(struct http_request *req);
/* Answers on the server's own behalf (no route, wrong method, body too large, ...): the status
 * and the OpenAI-dialect body {"error":{"message","type","param","code"}} of code, from the one
 * table in error.h, plus Retry-After where the table asks for it. message NULL means the
 * table's default. */
void http_request_reply_error(struct http_request *req, enum err_code code, const char *message);

/* The content reader and its free callback of streaming responses (http_stream.c). */
ssize_t http_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void http_stream_response_free(void *cls);

#endif
