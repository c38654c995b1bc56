/*
 * bench/fake_upstream.c — a fast stand-in for a neuron, for gateway load tests: an epoll
 * HTTP/1.1 server (keep-alive, one event loop per thread on a SO_REUSEPORT socket) that answers
 * the neuron's OpenAI dialect from canned text, so the gateway is the only thing measured.
 *
 *   GET  /v1/models            {"object":"list","data":[{"id":"bench",...}]}
 *   POST /v1/chat/completions  a body with "stream":true gets an SSE answer (role chunk, 8
 *                              content chunks, finish, usage, [DONE]) in one chunked write;
 *                              otherwise one chat.completion JSON (Content-Length). A body
 *                              containing HOLD gets the headers and the role chunk, then a
 *                              ": keep-alive" comment every second until the client hangs up
 *                              (an open stream that costs nothing, for counting streams).
 *
 * Usage: fake_upstream PORT [THREADS]. Runs until killed. Request bodies must carry
 * Content-Length (libcurl and wrk send it). Not a general HTTP server: bench-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define FU_BUF 65536

struct conn {
    int fd;
    char in[FU_BUF];
    size_t in_len;
    char *out; /* unsent bytes (malloc'd), sent when the socket allows */
    size_t out_len, out_off;
    int held;             /* a HOLD stream: pinged every second */
    struct conn *hnext;   /* on the loop's held list */
    struct conn **hpprev; /* the pointer that points at this one */
};

struct loop {
    int port;
    int ep;
    struct conn *held;
};

static char sse_body[4096];
static size_t sse_len;
static char json_body[1024];
static size_t json_len;
static const char models_body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"bench\",\"object\":"
                                  "\"model\",\"created\":1,\"owned_by\":\"bench\"}]}";

/* Appends a chunked-encoding chunk holding s to out. */
static size_t fu_chunk(char *out, const char *s)
{
    return (size_t)sprintf(out, "%zx\r\n%s\r\n", strlen(s), s);
}

static void fu_build_answers(void)
{
    static const char *const words[] = {"Hello",     " from", " the",  " fake",
                                        " upstream", ",",     " fast", "."};
    char line[512];
    size_t n = 0;
    n += (size_t)sprintf(sse_body + n, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                       "X-Prompt-Tokens: 12\r\nTransfer-Encoding: chunked\r\n\r\n");
    snprintf(line, sizeof line,
             "data: {\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,"
             "\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
             "\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    n += fu_chunk(sse_body + n, line);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        snprintf(line, sizeof line,
                 "data: {\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                 "\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                 "\"finish_reason\":null}]}\n\n",
                 words[i]);
        n += fu_chunk(sse_body + n, line);
    }
    snprintf(line, sizeof line,
             "data: {\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,"
             "\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
             "\"stop\",\"stop_reason\":null}]}\n\n");
    n += fu_chunk(sse_body + n, line);
    snprintf(line, sizeof line,
             "data: {\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,"
             "\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
             "\"completion_tokens\":8,\"total_tokens\":20}}\n\n");
    n += fu_chunk(sse_body + n, line);
    n += fu_chunk(sse_body + n, "data: [DONE]\n\n");
    n += (size_t)sprintf(sse_body + n, "0\r\n\r\n");
    sse_len = n;
    const char *doc = "{\"id\":\"chatcmpl-b\",\"object\":\"chat.completion\",\"created\":1,"
                      "\"model\":\"bench\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                      "\"assistant\",\"content\":\"Hello from the fake upstream, fast.\"},"
                      "\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],"
                      "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,"
                      "\"total_tokens\":20}}";
    json_len = (size_t)sprintf(json_body,
                               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Content-Length: %zu\r\n\r\n%s",
                               strlen(doc), doc);
}

static void fu_close(struct loop *l, struct conn *c)
{
    if (c->held) {
        *c->hpprev = c->hnext;
        if (c->hnext)
            c->hnext->hpprev = c->hpprev;
    }
    epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

/* Sends what is pending; returns -1 when the connection failed. */
static int fu_flush(struct loop *l, struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (w <= 0)
            return -1;
        c->out_off += (size_t)w;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

static int fu_send(struct loop *l, struct conn *c, const char *data, size_t len)
{
    c->out = realloc(c->out, c->out_len + len);
    if (!c->out)
        abort();
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return fu_flush(l, c);
}

/* Answers every complete request in c->in; returns -1 to close. */
static int fu_serve(struct loop *l, struct conn *c)
{
    for (;;) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end)
            return c->in_len == sizeof c->in ? -1 : 0;
        size_t head = (size_t)(end - c->in) + 4;
        size_t body = 0;
        for (char *p = c->in; p < end; p++) {
            if ((p == c->in || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
                body = strtoul(p + 15, NULL, 10);
                break;
            }
        }
        if (head + body > sizeof c->in)
            return -1;
        if (c->in_len < head + body)
            return 0;
        const char *b = c->in + head;
        int rc;
        if (strncmp(c->in, "GET /v1/models", 14) == 0) {
            char hdr[160];
            int n = snprintf(hdr, sizeof hdr,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n",
                             sizeof models_body - 1);
            rc = fu_send(l, c, hdr, (size_t)n);
            if (rc == 0)
                rc = fu_send(l, c, models_body, sizeof models_body - 1);
        } else if (memmem(b, body, "HOLD", 4)) {
            const char *start = sse_body;
            const char *first = strstr(sse_body, "\r\n\r\n") + 4;
            const char *second = strstr(first, "\n\n\r\n") + 4; /* after the role chunk */
            rc = fu_send(l, c, start, (size_t)(second - start));
            if (!c->held) {
                c->held = 1;
                c->hnext = l->held;
                if (l->held)
                    l->held->hpprev = &c->hnext;
                c->hpprev = &l->held;
                l->held = c;
            }
        } else if (memmem(b, body, "\"stream\":true", 13)) {
            rc = fu_send(l, c, sse_body, sse_len);
        } else {
            rc = fu_send(l, c, json_body, json_len);
        }
        memmove(c->in, c->in + head + body, c->in_len - head - body);
        c->in_len -= head + body;
        if (rc < 0)
            return -1;
    }
}

static void *fu_loop(void *arg)
{
    struct loop *l = arg;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)l->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4096) != 0) {
        perror("fake_upstream: bind/listen");
        exit(1);
    }
    l->ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(l->ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[256];
    static const char ping[] = "e\r\n: keep-alive\n\n\r\n";
    for (;;) {
        int n = epoll_wait(l->ep, evs, 256, 1000);
        if (n == 0) { /* a quiet second: ping the held streams */
            for (struct conn *c = l->held, *next; c; c = next) {
                next = c->hnext;
                if (fu_send(l, c, ping, sizeof ping - 1) < 0)
                    fu_close(l, c);
            }
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc)
                        abort();
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if ((evs[i].events & EPOLLOUT) && fu_flush(l, c) < 0) {
                fu_close(l, c);
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                fu_close(l, c);
                continue;
            }
            if (r > 0) {
                c->in_len += (size_t)r;
                if (fu_serve(l, c) < 0)
                    fu_close(l, c);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    fu_build_answers();
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (threads < 1)
        threads = 1;
    pthread_t t[64];
    struct loop loops[64] = {{0}};
    for (int i = 0; i < threads && i < 64; i++) {
        loops[i].port = atoi(argv[1]);
        pthread_create(&t[i], NULL, fu_loop, &loops[i]);
    }
    pthread_join(t[0], NULL);
    return 0;
}
