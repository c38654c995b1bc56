/*
 * common/http_request.c — the request object of http_server: accessors, replies, deferral,
 * and the reference counting and suspend/resume protocol described in http_server_internal.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "error.h"
#include "http_server_internal.h"
#include "xalloc.h"

/* ---- small helpers ---------------------------------------------------------------------- */

static void http_pairs_add(struct http_pairs *p, const char *name, const char *value)
{
    p->v = xgrow(p->v, &p->cap, p->n + 1, sizeof *p->v);
    p->v[p->n].name = xstrdup(name);
    p->v[p->n].value = xstrdup(value ? value : "");
    p->n++;
}

static const char *http_pairs_find(const struct http_pairs *p, const char *name, bool nocase)
{
    for (size_t i = 0; i < p->n; i++) {
        if ((nocase ? strcasecmp(p->v[i].name, name) : strcmp(p->v[i].name, name)) == 0)
            return p->v[i].value;
    }
    return NULL;
}

static void http_pairs_free(struct http_pairs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
    }
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

/* 32 random hex digits. Local until common/ids lands; then switch to it. */
static void http_request_random_id(char out[33])
{
    static _Thread_local uint64_t state;
    static _Thread_local bool seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof state, 0) != (ssize_t)sizeof state)
            state = (uint64_t)(uintptr_t)&state ^ (uint64_t)time(NULL);
        seeded = true;
    }
    for (int half = 0; half < 2; half++) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        snprintf(out + 16 * half, 17, "%016llx", (unsigned long long)z);
    }
}

/* A client-supplied request id is echoed only when it is short and made of safe characters. */
static bool http_request_id_sane(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static bool http_header_text_ok(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") == NULL;
}

/* ---- life cycle ------------------------------------------------------------------------- */

struct http_request *http_request_new(struct http_server *server, struct MHD_Connection *conn)
{
    struct http_request *req = xcalloc(1, sizeof *req);
    req->server = server;
    req->conn = conn;
    req->fd = -1;
    atomic_init(&req->refs, 1);
    pthread_mutex_init(&req->mu, NULL);
    pthread_cond_init(&req->cond, NULL);
    req->stream.req = req;
    req->fifo_max = server->stream_max_queued;
    return req;
}

void http_request_ref(struct http_request *req)
{
    atomic_fetch_add(&req->refs, 1);
}

void http_request_unref(struct http_request *req)
{
    if (req == NULL || atomic_fetch_sub(&req->refs, 1) != 1)
        return;
    free(req->method);
    free(req->path);
    free(req->query);
    free(req->wildcard);
    http_pairs_free(&req->headers);
    http_pairs_free(&req->args);
    free(req->body);
    free(req->content_type);
    free(req->reply_body);
    http_pairs_free(&req->reply_headers);
    free(req->fifo);
    pthread_cond_destroy(&req->cond);
    pthread_mutex_destroy(&req->mu);
    free(req);
}

static enum MHD_Result http_request_copy_pair(void *cls, enum MHD_ValueKind kind, const char *key,
                                              const char *value)
{
    http_pairs_add(cls, key, value);
    return MHD_YES;
}

void http_request_start(struct http_request *req, const char *method, const char *url)
{
    req->method = xstrdup(method);
    req->path = xstrdup(url);
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, http_request_copy_pair, &req->headers);
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, http_request_copy_pair, &req->args);

    const char *id = http_pairs_find(&req->headers, "X-Request-Id", true);
    if (id && http_request_id_sane(id))
        snprintf(req->request_id, sizeof req->request_id, "%s", id);
    else
        http_request_random_id(req->request_id);

    const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->client_addr,
                      sizeof req->client_addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->client_addr,
                      sizeof req->client_addr);
    }
    ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    req->fd = ci ? ci->connect_fd : -1;
}

/* ---- suspend / resume / gone (mu held) -------------------------------------------------- */

void http_request_suspend_locked(struct http_request *req)
{
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    http_server_watch_add(req->server, req);
}

void http_request_resume_locked(struct http_request *req)
{
    if (!req->suspended)
        return;
    if (req->watched)
        http_server_watch_del(req->server, req);
    req->suspended = false;
    MHD_resume_connection(req->conn);
}

void http_request_set_gone_locked(struct http_request *req)
{
    req->client_gone = true;
    pthread_cond_broadcast(&req->cond);
    if (req->on_gone == NULL || req->gone_notified)
        return;
    http_gone_fn fn = req->on_gone;
    void *ud = req->on_gone_ud;
    req->gone_notified = true;
    req->gone_running = true;
    req->gone_thread = pthread_self();
    pthread_mutex_unlock(&req->mu);
    fn(ud);
    pthread_mutex_lock(&req->mu);
    req->gone_running = false;
    pthread_cond_broadcast(&req->cond);
}

void http_request_clear_gone_locked(struct http_request *req)
{
    req->on_gone = NULL;
    req->on_gone_ud = NULL;
    while (req->gone_running && !pthread_equal(req->gone_thread, pthread_self()))
        pthread_cond_wait(&req->cond, &req->mu);
}

/* ---- accessors -------------------------------------------------------------------------- */

const char *http_request_method(const http_request_t *req)
{
    return req->method;
}

const char *http_request_path(const http_request_t *req)
{
    return req->path;
}

const char *http_request_wildcard(const http_request_t *req)
{
    return req->wildcard;
}

const char *http_request_query(const http_request_t *req)
{
    return req->query ? req->query : "";
}

const char *http_request_query_param(const http_request_t *req, const char *name)
{
    return http_pairs_find(&req->args, name, false);
}

const char *http_request_header(const http_request_t *req, const char *name)
{
    return http_pairs_find(&req->headers, name, true);
}

const char *http_request_body(const http_request_t *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

const char *http_request_id(const http_request_t *req)
{
    return req->request_id;
}

const char *http_request_client_addr(const http_request_t *req)
{
    return req->client_addr;
}

bool http_request_client_gone(http_request_t *req)
{
    pthread_mutex_lock(&req->mu);
    bool gone = req->client_gone;
    pthread_mutex_unlock(&req->mu);
    return gone;
}

/* ---- answering -------------------------------------------------------------------------- */

void http_request_add_reply_header(http_request_t *req, const char *name, const char *value)
{
    if (!http_header_text_ok(name) || !http_header_text_ok(value) || name[0] == '\0' ||
        strchr(name, ':') != NULL) {
        http_server_warn("http: refused a reply header with an empty name, ':', CR or LF");
        return;
    }
    pthread_mutex_lock(&req->mu);
    http_request_add_reply_header_locked(req, name, value);
    pthread_mutex_unlock(&req->mu);
}

void http_request_add_reply_header_locked(struct http_request *req, const char *name,
                                          const char *value)
{
    http_pairs_add(&req->reply_headers, name, value);
}

const char *http_request_reply_header_locked(const struct http_request *req, const char *name)
{
    return http_pairs_find(&req->reply_headers, name, true);
}

void http_request_reply(http_request_t *req, int status, const char *content_type, const void *body,
                        size_t len)
{
    pthread_mutex_lock(&req->mu);
    if (req->answer != HTTP_ANSWER_NONE && req->answer != HTTP_ANSWER_DEFERRED) {
        pthread_mutex_unlock(&req->mu);
        http_server_warn("http: request %s answered twice; second answer dropped", req->request_id);
        return;
    }
    bool deferred = req->answer == HTTP_ANSWER_DEFERRED;
    req->answer = HTTP_ANSWER_REPLY;
    req->status = status;
    free(req->content_type);
    req->content_type = content_type ? xstrdup(content_type) : NULL;
    req->reply_body = xmalloc(len + 1);
    if (len > 0)
        memcpy(req->reply_body, body, len);
    req->reply_len = len;
    http_request_clear_gone_locked(req);
    http_request_resume_locked(req);
    pthread_mutex_unlock(&req->mu);
    if (deferred)
        http_request_unref(req);
}

void http_request_reply_text(http_request_t *req, int status, const char *text)
{
    http_request_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

void http_request_reply_json(http_request_t *req, int status, const json_t *json)
{
    char *text = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        http_request_reply_error(req, 500, "api_error", "could not encode the response");
        return;
    }
    http_request_reply(req, status, "application/json", text, strlen(text));
    free(text);
}

/* The error code behind one of the server's own error statuses (OpenAI form). */
static enum err_code http_request_status_code(int status)
{
    switch (status) {
    case 404:
        return ERR_NOT_FOUND;
    case 405:
        return ERR_METHOD_NOT_ALLOWED;
    case 413:
        return ERR_BODY_TOO_LARGE;
    case 503:
        return ERR_OVERLOADED;
    default:
        return ERR_INTERNAL;
    }
}

void http_request_reply_error(struct http_request *req, int status, const char *type,
                              const char *message)
{
    if (req->server->openai_errors) {
        json_t *oai = error_body_openai(http_request_status_code(status), message, NULL);
        http_request_reply_json(req, status, oai);
        json_decref(oai);
        return;
    }
    json_t *body = json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type", type,
                             "message", message, "request_id", req->request_id);
    http_request_reply_json(req, status, body);
    json_decref(body);
}

void http_request_defer(http_request_t *req, http_gone_fn on_gone, void *ud)
{
    pthread_mutex_lock(&req->mu);
    if (req->answer != HTTP_ANSWER_NONE) {
        pthread_mutex_unlock(&req->mu);
        http_server_warn("http: request %s deferred after it was answered", req->request_id);
        return;
    }
    req->answer = HTTP_ANSWER_DEFERRED;
    req->on_gone = on_gone;
    req->on_gone_ud = ud;
    http_request_ref(req); /* the deferred owner's, released by the reply or its stream */
    pthread_mutex_unlock(&req->mu);
}

struct MHD_Response *http_request_build_response_locked(struct http_request *req)
{
    struct MHD_Response *resp;
    if (req->answer == HTTP_ANSWER_STREAM) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, http_stream_read, req,
                                                 http_stream_response_free);
        if (resp == NULL)
            return NULL;
        http_request_ref(req); /* the response's, released by http_stream_response_free */
    } else {
        resp = MHD_create_response_from_buffer(req->reply_len, req->reply_body,
                                               MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            return NULL;
        req->reply_body = NULL; /* libmicrohttpd frees it with the response */
    }
    if (req->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    for (size_t i = 0; i < req->reply_headers.n; i++) {
        if (MHD_add_response_header(resp, req->reply_headers.v[i].name,
                                    req->reply_headers.v[i].value) != MHD_YES)
            http_server_warn("http: libmicrohttpd refused reply header %s",
                             req->reply_headers.v[i].name);
    }
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    return resp;
}
