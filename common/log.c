/*
 * common/log.c — one-line logfmt events with a level threshold (see log.h).
 *
 * Each event is built in a private buffer and then written with one write(2) loop under
 * log_write_lock: the lock keeps lines from threads whole even when a write is partial.
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "timing.h"
#include "xalloc.h"

atomic_int log_threshold = LOG_LEVEL_INFO;

static atomic_int log_fd = 2;
static char *log_component;
static pthread_mutex_t log_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_level_names[] = {
        [LOG_LEVEL_TRACE] = "trace", [LOG_LEVEL_DEBUG] = "debug", [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_WARN] = "warn",   [LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_OFF] = "off",
};

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_threshold, (int)level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

int log_level_parse(const char *text, enum log_level *out)
{
    for (int i = LOG_LEVEL_TRACE; i <= LOG_LEVEL_OFF; i++) {
        if (strcasecmp(text, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < LOG_LEVEL_TRACE || level > LOG_LEVEL_OFF)
        return "unknown";
    return log_level_names[level];
}

void log_set_component(const char *component)
{
    free(log_component);
    log_component = component ? xstrdup(component) : NULL;
}

void log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

/* Appends " key=value", quoting the value when it is empty or holds anything but plain
 * printable ASCII, so a field can never run into the next one. */
static void log_append_field(struct buf *b, const char *key, const char *value)
{
    bool bare = value[0] != '\0';
    for (const char *p = value; *p && bare; p++) {
        unsigned char c = (unsigned char)*p;
        bare = c > 0x20 && c < 0x7f && c != '"' && c != '=' && c != '\\';
    }
    buf_appendf(b, " %s=", key);
    if (bare)
        buf_append_str(b, value);
    else
        buf_append_json_string(b, value, strlen(value));
}

static void log_write_all(int fd, const char *p, size_t n)
{
    pthread_mutex_lock(&log_write_lock);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* nowhere left to report a failing log */
        }
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&log_write_lock);
}

void log_vemit(enum log_level level, const struct log_ctx *ctx, const char *fmt, va_list ap)
{
    int saved_errno = errno; /* callers often log right before reading errno */
    char ts[TIMING_RFC3339_SIZE];
    struct buf msg = BUF_INIT;
    struct buf line = BUF_INIT;

    buf_vappendf(&msg, fmt, ap);
    bool truncated = msg.len > LOG_MSG_MAX;
    buf_truncate(&msg, LOG_MSG_MAX);

    buf_appendf(&line, "ts=%s level=%s pid=%ld", timing_format_rfc3339(timing_wall_ms(), true, ts),
                log_level_name(level), (long)getpid());
    if (log_component)
        log_append_field(&line, "component", log_component);
    if (ctx && ctx->request_id)
        log_append_field(&line, "request", ctx->request_id);
    if (ctx && ctx->node)
        log_append_field(&line, "node", ctx->node);
    if (ctx && ctx->model)
        log_append_field(&line, "model", ctx->model);
    buf_append_str(&line, " msg=");
    buf_append_json_string(&line, msg.data, msg.len);
    if (truncated)
        buf_append_str(&line, " truncated=true");
    buf_append_char(&line, '\n');

    log_write_all(atomic_load(&log_fd), line.data, line.len);
    buf_free(&line);
    buf_free(&msg);
    errno = saved_errno;
}

void log_emit(enum log_level level, const struct log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vemit(level, ctx, fmt, ap);
    va_end(ap);
}
