/*
 * common/log.h — levelled, one-line-per-event logging in logfmt.
 *
 * Contract: every event is exactly one line, written with one write(2) under a process-wide
 * lock, so lines from different threads never interleave:
 *
 *   ts=2026-11-25T20:24:25.123Z level=info pid=4242 component=gateway request=req_… node=n1
 *       model=qwen3.6-27b msg="loaded in 3.2s"
 *
 * (shown wrapped; it is one line). The message is always quoted and escaped (quotes,
 * backslashes, newlines, control characters, invalid UTF-8), so nothing a client sends can
 * forge a line. Context fields are printed bare when safe and quoted otherwise; NULL fields are
 * left out.
 *
 * The LOG_* and LOGC_* macros test the level first and evaluate neither the format arguments nor
 * the context when the level is disabled, so debug logging costs one relaxed atomic load.
 * log_set_component() is meant for start-up (before threads); the level and the output fd can
 * be changed at any time.
 */
#ifndef CORTEX_LOG_H
#define CORTEX_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

enum log_level {
    LOG_LEVEL_TRACE,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_OFF, /* threshold only: disables every event */
};

/* Who an event is about; any field may be NULL. Borrowed for the duration of the call. */
struct log_ctx {
    const char *request_id;
    const char *node;
    const char *model;
};

/* The lowest enabled level. Read by the macros; change it through log_set_level(). */
extern atomic_int log_threshold;

static inline bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

#define LOG_AT(level, ctx, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_emit((level), (ctx), __VA_ARGS__);                                                 \
    } while (0)

#define LOG_TRACE(...)       LOG_AT(LOG_LEVEL_TRACE, NULL, __VA_ARGS__)
#define LOG_DEBUG(...)       LOG_AT(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__)
#define LOG_INFO(...)        LOG_AT(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define LOG_WARN(...)        LOG_AT(LOG_LEVEL_WARN, NULL, __VA_ARGS__)
#define LOG_ERROR(...)       LOG_AT(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)
#define LOGC_TRACE(ctx, ...) LOG_AT(LOG_LEVEL_TRACE, (ctx), __VA_ARGS__)
#define LOGC_DEBUG(ctx, ...) LOG_AT(LOG_LEVEL_DEBUG, (ctx), __VA_ARGS__)
#define LOGC_INFO(ctx, ...)  LOG_AT(LOG_LEVEL_INFO, (ctx), __VA_ARGS__)
#define LOGC_WARN(ctx, ...)  LOG_AT(LOG_LEVEL_WARN, (ctx), __VA_ARGS__)
#define LOGC_ERROR(ctx, ...) LOG_AT(LOG_LEVEL_ERROR, (ctx), __VA_ARGS__)

/* Messages longer than this many bytes are cut and marked with truncated=true. */
#define LOG_MSG_MAX 16384

/* Sets the threshold: events below level are dropped. The default is LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "trace", "debug", "info", "warn" (or "warning"), "error", "off", any case.
 * Returns 0 and sets *out, or -1 for anything else. */
int log_level_parse(const char *text, enum log_level *out) __attribute__((warn_unused_result));
/* "trace" … "off"; "unknown" for a value outside the enum. */
const char *log_level_name(enum log_level level);

/* Names the process in every line (component=…); NULL removes the field. The text is copied. */
void log_set_component(const char *component);

/* Sends lines to fd (default 2, stderr). The caller keeps ownership of fd and must keep it
 * open while it is set. */
void log_set_fd(int fd);

/* Writes one event unconditionally (the macros check the level first); ctx may be NULL. */
void log_emit(enum log_level level, const struct log_ctx *ctx, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void log_vemit(enum log_level level, const struct log_ctx *ctx, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));

#endif
