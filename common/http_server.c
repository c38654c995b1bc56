/*
 * common/http_server.c — the libmicrohttpd daemon, routing, body buffering, dispatch, the
 * hang-up watcher and shutdown.
 *
 * Per request, libmicrohttpd calls: the URI callback (creates the request object, which it
 * then hands back to every later callback), the access handler once when the headers are in,
 * once per body piece, and once more when the body is complete (we dispatch then, and again
 * after each resume), and finally the completion callback. See http_server_internal.h for how
 * the request object is shared with producer threads.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "http_server_internal.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#define HTTP_DEFAULT_MAX_BODY       (32u << 20)
#define HTTP_DEFAULT_MAX_CONN       10000u
#define HTTP_DEFAULT_HEADER_TIMEOUT 10u
#define HTTP_DEFAULT_IDLE_TIMEOUT   300u
#define HTTP_DEFAULT_STREAM_QUEUE   (1u << 20)
#define HTTP_DEFAULT_CONN_MEMORY    (64u << 10)
#define HTTP_LISTEN_BACKLOG         1024

/* libmicrohttpd's own messages (with log_library_messages), one log line each. */
static void http_server_mhd_log(void *cls, const char *fmt, va_list ap)
{
    if (!log_enabled(LOG_LEVEL_WARN))
        return;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    LOG_WARN("libmicrohttpd: %s", line);
}

/* ---- routing ---------------------------------------------------------------------------- */

static bool http_server_pattern_valid(const char *p)
{
    if (p == NULL || p[0] != '/')
        return false;
    const char *star = strchr(p, '*');
    if (star == NULL)
        return true;
    /* '*' only as the last character, right after a '/' */
    return star[1] == '\0' && star > p && star[-1] == '/';
}

/* Whether path matches the route's pattern; *rest gets the wildcard part (or NULL). */
static bool http_server_route_match(const http_route_t *r, const char *path, const char **rest)
{
    size_t n = strlen(r->pattern);
    *rest = NULL;
    if (r->pattern[n - 1] == '*') {
        if (strncmp(path, r->pattern, n - 1) != 0 || path[n - 1] == '\0')
            return false;
        *rest = path + n - 1;
        return true;
    }
    return strcmp(path, r->pattern) == 0;
}

static void http_server_allow_add(char *allow, size_t size, const char *method)
{
    /* Entries are ", "-separated; compare whole entries. */
    size_t mlen = strlen(method);
    for (const char *p = allow; *p;) {
        const char *end = strstr(p, ", ");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == mlen && strncmp(p, method, mlen) == 0)
            return;
        p += len + (end ? 2 : 0);
    }
    size_t used = strlen(allow);
    snprintf(allow + used, size - used, "%s%s", used ? ", " : "", method);
}

static void http_server_dispatch(struct http_server *s, struct http_request *req)
{
    const http_route_t *hit = NULL, *head_hit = NULL;
    const char *hit_rest = NULL, *head_rest = NULL;
    char allow[256] = "";
    bool is_head = strcmp(req->method, "HEAD") == 0;

    for (size_t i = 0; i < s->n_routes; i++) {
        const http_route_t *r = &s->routes[i];
        const char *rest;
        if (!http_server_route_match(r, req->path, &rest))
            continue;
        http_server_allow_add(allow, sizeof allow, r->method);
        if (strcmp(r->method, "GET") == 0)
            http_server_allow_add(allow, sizeof allow, "HEAD");
        if (hit == NULL && strcmp(r->method, req->method) == 0)
            hit = r, hit_rest = rest;
        if (head_hit == NULL && is_head && strcmp(r->method, "GET") == 0)
            head_hit = r, head_rest = rest;
    }
    if (hit == NULL && head_hit != NULL)
        hit = head_hit, hit_rest = head_rest;

    if (hit != NULL) {
        req->wildcard = hit_rest ? xstrdup(hit_rest) : NULL;
        hit->handler(req, s->ud);
    } else if (allow[0] != '\0') {
        http_request_add_reply_header(req, "Allow", allow);
        char *msg = xasprintf("method %s is not allowed here; allowed: %s", req->method, allow);
        http_request_reply_error(req, ERR_METHOD_NOT_ALLOWED, msg);
        free(msg);
    } else {
        http_request_reply_error(req, ERR_NOT_FOUND, "no such path");
    }
}

/* Acts on the request's answer on the server thread: queue a reply or a stream, or suspend a
 * deferred request until its answer comes. */
static enum MHD_Result http_server_answer(struct http_request *req, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&req->mu);
    if (req->queued) {
        pthread_mutex_unlock(&req->mu);
        return MHD_YES;
    }
    if (req->answer == HTTP_ANSWER_NONE) {
        pthread_mutex_unlock(&req->mu);
        HTTP_REQUEST_LOG(LOG_LEVEL_ERROR, req, "http: handler for %s %s returned without answering",
                         req->method, req->path);
        http_request_reply_error(req, ERR_INTERNAL, NULL);
        pthread_mutex_lock(&req->mu);
    }
    if (req->answer == HTTP_ANSWER_DEFERRED) {
        enum MHD_Result rc = MHD_YES;
        if (req->client_gone)
            rc = MHD_NO; /* nobody to answer: close */
        else
            http_request_suspend_locked(req);
        pthread_mutex_unlock(&req->mu);
        return rc;
    }
    struct MHD_Response *resp = http_request_build_response_locked(req);
    int status = req->status;
    req->queued = true;
    pthread_mutex_unlock(&req->mu);
    if (resp == NULL)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result http_server_reject_body(struct http_server *s, struct http_request *req,
                                               struct MHD_Connection *conn)
{
    char msg[96];
    snprintf(msg, sizeof msg, "request body exceeds %zu bytes", s->max_body);
    http_request_reply_error(req, ERR_BODY_TOO_LARGE, msg);
    return http_server_answer(req, conn);
}

/* ---- libmicrohttpd callbacks ------------------------------------------------------------ */

static void *http_server_uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *s = cls;
    struct http_request *req = http_request_new(s, conn);
    const char *q = uri ? strchr(uri, '?') : NULL;
    req->query = xstrdup(q ? q + 1 : "");
    pthread_mutex_lock(&s->mu);
    req->serial = ++s->next_serial;
    req->next = s->live;
    if (s->live)
        s->live->prev = req;
    s->live = req;
    bool stopping = atomic_load(&s->stopping);
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        pthread_mutex_lock(&req->mu);
        req->client_gone = true;
        pthread_mutex_unlock(&req->mu);
    }
    return req;
}

/* ---- header deadline -------------------------------------------------------------------- */

/* Takes c off the waiting list; under mu. */
static void http_server_unwait(struct http_server *s, struct http_conn *c)
{
    if (!c->waiting)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->waiting = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->waiting_tail = c->prev;
    c->prev = c->next = NULL;
    c->waiting = false;
}

static void http_server_conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                                enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct http_conn *c = xcalloc(1, sizeof *c);
        c->fd = ci ? ci->connect_fd : -1;
        c->deadline_ms = timing_now_ms() + s->header_deadline_ms;
        pthread_mutex_lock(&s->mu);
        if (c->fd >= 0) { /* deadlines only grow along the list: append */
            c->prev = s->waiting_tail;
            if (s->waiting_tail)
                s->waiting_tail->next = c;
            else
                s->waiting = c;
            s->waiting_tail = c;
            c->waiting = true;
        }
        pthread_mutex_unlock(&s->mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        struct http_conn *c = *socket_context;
        pthread_mutex_lock(&s->mu);
        http_server_unwait(s, c);
        pthread_mutex_unlock(&s->mu);
        free(c);
        *socket_context = NULL;
    }
}

/* The first request of conn has its headers: its header deadline no longer applies. */
static void http_server_headers_in(struct http_server *s, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct http_conn *c = ci ? ci->socket_context : NULL;
    if (!c)
        return;
    pthread_mutex_lock(&s->mu);
    http_server_unwait(s, c);
    pthread_mutex_unlock(&s->mu);
}

/* Drops the connections whose header deadline has passed (slow clients). shutdown() makes
 * libmicrohttpd see the end of the connection and close it on its own thread; the fd cannot
 * have been reused, since the connection is still on the list (see struct http_conn). */
static void http_server_drop_slow(struct http_server *s)
{
    uint64_t now = timing_now_ms();
    pthread_mutex_lock(&s->mu);
    while (s->waiting && s->waiting->deadline_ms <= now) {
        struct http_conn *c = s->waiting;
        http_server_unwait(s, c);
        shutdown(c->fd, SHUT_RDWR);
        s->slow_dropped++;
    }
    pthread_mutex_unlock(&s->mu);
}

uint64_t http_server_slow_dropped(const http_server_t *server)
{
    struct http_server *s = (struct http_server *)server; /* the lock is not part of the value */
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->slow_dropped;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static enum MHD_Result http_server_access_cb(void *cls, struct MHD_Connection *conn,
                                             const char *url, const char *method,
                                             const char *version, const char *upload_data,
                                             size_t *upload_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (req == NULL)
        return MHD_NO; /* the URI callback always runs first */

    if (!req->headers_seen) {
        req->headers_seen = true;
        http_server_headers_in(s, conn);
        http_request_start(req, method, url);
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->idle_timeout_s);
        if (atomic_load(&s->stopping)) {
            http_request_reply_error(req, ERR_UNAVAILABLE, "server is shutting down");
            return http_server_answer(req, conn);
        }
        const char *cl = http_request_header(req, "Content-Length");
        if (cl != NULL) {
            char *end;
            errno = 0;
            unsigned long long announced = strtoull(cl, &end, 10);
            if (errno == ERANGE || (*end == '\0' && announced > s->max_body)) {
                req->body_rejected = true;
                return http_server_reject_body(s, req, conn);
            }
        }
        return MHD_YES;
    }

    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (!req->body_rejected && req->body_len + n > s->max_body) {
            /* libmicrohttpd cannot answer in the middle of a body: drop what we have, keep
             * counting, answer 413 at the end — or close if the client sends far too much. */
            req->body_rejected = true;
            free(req->body);
            req->body = NULL;
            req->body_cap = 0;
        }
        if (req->body_rejected) {
            req->body_len += n;
            return req->body_len > 2 * s->max_body ? MHD_NO : MHD_YES;
        }
        req->body = xgrow(req->body, &req->body_cap, req->body_len + n + 1, 1);
        memcpy(req->body + req->body_len, upload_data, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }

    if (!req->dispatched) {
        req->dispatched = true;
        if (http_request_client_gone(req))
            return MHD_NO;
        if (req->body_rejected) {
            req->body_len = 0;
            return http_server_reject_body(s, req, conn);
        }
        http_server_dispatch(s, req);
    }
    return http_server_answer(req, conn);
}

static void http_server_completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                                     enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (req == NULL)
        return;
    *con_cls = NULL;

    pthread_mutex_lock(&req->mu);
    if (req->watched)
        http_server_watch_del(s, req);
    req->completed = true;
    req->suspended = false;
    req->conn = NULL;
    bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK &&
              (req->answer == HTTP_ANSWER_REPLY ||
               (req->answer == HTTP_ANSWER_STREAM && req->stream_closed));
    if (ok)
        pthread_cond_broadcast(&req->cond);
    else
        http_request_set_gone_locked(req);
    pthread_mutex_unlock(&req->mu);

    pthread_mutex_lock(&s->mu);
    if (req->prev)
        req->prev->next = req->next;
    else
        s->live = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    pthread_mutex_unlock(&s->mu);
    http_request_unref(req); /* libmicrohttpd's reference */
}

/* ---- hang-up watcher -------------------------------------------------------------------- */

void http_server_watch_add(struct http_server *server, struct http_request *req)
{
    if (req->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = req->serial};
    if (epoll_ctl(server->watch_fd, EPOLL_CTL_ADD, req->fd, &ev) == 0)
        req->watched = true;
    else
        HTTP_REQUEST_LOG(LOG_LEVEL_WARN, req, "http: cannot watch the connection for hang-ups: %s",
                         strerror(errno));
}

void http_server_watch_del(struct http_server *server, struct http_request *req)
{
    epoll_ctl(server->watch_fd, EPOLL_CTL_DEL, req->fd, NULL);
    req->watched = false;
}

static void http_server_hangup(struct http_server *s, uint64_t serial)
{
    struct http_request *req = NULL;
    pthread_mutex_lock(&s->mu);
    for (struct http_request *r = s->live; r; r = r->next) {
        if (r->serial == serial) {
            req = r;
            http_request_ref(req);
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (req == NULL)
        return;
    pthread_mutex_lock(&req->mu);
    /* The event may be stale (resumed since): act only on a suspended, still-watched socket
     * that really reports a hang-up now. */
    if (req->suspended && req->watched) {
        struct pollfd p = {.fd = req->fd, .events = POLLRDHUP};
        if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            http_request_resume_locked(req);
            http_request_set_gone_locked(req);
        }
    }
    pthread_mutex_unlock(&req->mu);
    http_request_unref(req);
}

static void *http_server_watch_main(void *arg)
{
    struct http_server *s = arg;
    struct epoll_event ev[64];
    for (;;) {
        /* Woken at least every 100 ms to enforce header deadlines. */
        int n = epoll_wait(s->watch_fd, ev, 64, 100);
        http_server_drop_slow(s);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            LOG_ERROR("http: hang-up watcher stopped: %s", strerror(errno));
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0)
                return NULL; /* wake_fd: shutting down */
            http_server_hangup(s, ev[i].data.u64);
        }
    }
}

/* ---- create / destroy ------------------------------------------------------------------- */

/* Binds and listens on "host:port" / "[v6]:port"; returns the socket or -1 with *errmsg. */
static int http_server_listen(const char *listen_addr, bool *v6, uint16_t *port, char **errmsg)
{
    char host[256] = "", service[16] = "";
    const char *colon;
    if (listen_addr[0] == '[') {
        const char *close = strchr(listen_addr, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - listen_addr - 1) >= sizeof host)
            goto bad;
        memcpy(host, listen_addr + 1, (size_t)(close - listen_addr - 1));
        colon = close + 1;
    } else {
        colon = strrchr(listen_addr, ':');
        if (colon == NULL || (size_t)(colon - listen_addr) >= sizeof host)
            goto bad;
        memcpy(host, listen_addr, (size_t)(colon - listen_addr));
    }
    if (snprintf(service, sizeof service, "%s", colon + 1) >= (int)sizeof service ||
        service[0] == '\0')
        goto bad;

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, service, &hints, &ai);
    if (gai != 0) {
        *errmsg = xasprintf("cannot listen on %s: %s", listen_addr, gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, HTTP_LISTEN_BACKLOG) < 0) {
        *errmsg = xasprintf("cannot listen on %s: %s", listen_addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
bad:
    *errmsg = xasprintf("bad listen address \"%s\" (want host:port or [v6]:port)", listen_addr);
    return -1;
}

static void http_server_free(struct http_server *s)
{
    if (s->watcher_started) {
        uint64_t one = 1;
        if (write(s->wake_fd, &one, sizeof one) != (ssize_t)sizeof one)
            LOG_ERROR("http: cannot wake the hang-up watcher: %s", strerror(errno));
        pthread_join(s->watcher, NULL);
    }
    if (s->watch_fd >= 0)
        close(s->watch_fd);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    for (size_t i = 0; i < s->n_routes; i++) {
        free((char *)s->routes[i].method);
        free((char *)s->routes[i].pattern);
    }
    free(s->routes);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

http_server_t *http_server_create(const http_server_config_t *cfg, char **errmsg)
{
    *errmsg = NULL;
    if (cfg->listen == NULL) {
        *errmsg = xstrdup("http server: no listen address");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const http_route_t *r = &cfg->routes[i];
        if (r->method == NULL || r->method[0] == '\0' || r->handler == NULL ||
            !http_server_pattern_valid(r->pattern)) {
            *errmsg = xasprintf("http server: bad route %zu (%s %s)", i,
                                r->method ? r->method : "?", r->pattern ? r->pattern : "?");
            return NULL;
        }
    }

    struct http_server *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->stopping, false);
    s->watch_fd = s->wake_fd = -1;
    s->ud = cfg->ud;
    s->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : HTTP_DEFAULT_MAX_BODY;
    s->stream_max_queued =
            cfg->stream_max_queued ? cfg->stream_max_queued : HTTP_DEFAULT_STREAM_QUEUE;
    s->idle_timeout_s = cfg->idle_timeout_s ? cfg->idle_timeout_s : HTTP_DEFAULT_IDLE_TIMEOUT;
    s->header_deadline_ms =
            1000ull * (cfg->header_timeout_s ? cfg->header_timeout_s : HTTP_DEFAULT_HEADER_TIMEOUT);
    s->routes = xcalloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *s->routes);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        s->routes[i].method = xstrdup(cfg->routes[i].method);
        s->routes[i].pattern = xstrdup(cfg->routes[i].pattern);
        s->routes[i].handler = cfg->routes[i].handler;
    }
    s->n_routes = cfg->n_routes;

    s->watch_fd = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event wake = {.events = EPOLLIN, .data.u64 = 0};
    if (s->watch_fd < 0 || s->wake_fd < 0 ||
        epoll_ctl(s->watch_fd, EPOLL_CTL_ADD, s->wake_fd, &wake) < 0 ||
        pthread_create(&s->watcher, NULL, http_server_watch_main, s) != 0) {
        *errmsg = xasprintf("http server: cannot start the hang-up watcher: %s", strerror(errno));
        goto fail;
    }
    s->watcher_started = true;

    bool v6 = false;
    int fd = http_server_listen(cfg->listen, &v6, &s->port, errmsg);
    if (fd < 0)
        goto fail;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (v6)
        flags |= MHD_USE_IPv6;
    if (cfg->log_library_messages)
        flags |= MHD_USE_ERROR_LOG;
    unsigned threads = cfg->threads > 1 ? cfg->threads : 1;
    s->daemon = MHD_start_daemon(
            flags, 0, NULL, NULL, http_server_access_cb, s, MHD_OPTION_LISTEN_SOCKET, fd,
            MHD_OPTION_CONNECTION_LIMIT,
            cfg->max_connections ? cfg->max_connections : HTTP_DEFAULT_MAX_CONN,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_connections_per_ip,
            MHD_OPTION_NOTIFY_CONNECTION, http_server_conn_cb, s, MHD_OPTION_CONNECTION_TIMEOUT,
            cfg->header_timeout_s ? cfg->header_timeout_s : HTTP_DEFAULT_HEADER_TIMEOUT,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            cfg->connection_memory ? cfg->connection_memory : (size_t)HTTP_DEFAULT_CONN_MEMORY,
            MHD_OPTION_URI_LOG_CALLBACK, http_server_uri_cb, s, MHD_OPTION_NOTIFY_COMPLETED,
            http_server_completed_cb, s, MHD_OPTION_EXTERNAL_LOGGER, http_server_mhd_log, s,
            MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0, MHD_OPTION_END);
    if (s->daemon == NULL) {
        /* libmicrohttpd closes the listening socket on its failure paths. */
        *errmsg = xasprintf("http server: libmicrohttpd failed to start on %s", cfg->listen);
        goto fail;
    }
    return s;
fail:
    http_server_free(s);
    return NULL;
}

uint16_t http_server_port(const http_server_t *server)
{
    return server->port;
}

void http_server_destroy(http_server_t *s)
{
    if (s == NULL)
        return;
    /* libmicrohttpd must not be stopped while a connection is suspended: mark every live
     * request gone (which also keeps them from suspending again) and resume it first. */
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, true);
    size_t n = 0, cap = 0;
    struct http_request **live = NULL;
    for (struct http_request *r = s->live; r; r = r->next) {
        live = xgrow(live, &cap, n + 1, sizeof *live);
        http_request_ref(r);
        live[n++] = r;
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&live[i]->mu);
        http_request_resume_locked(live[i]);
        http_request_set_gone_locked(live[i]);
        pthread_mutex_unlock(&live[i]->mu);
        http_request_unref(live[i]);
    }
    free(live);
    MHD_stop_daemon(s->daemon);
    http_server_free(s);
}
