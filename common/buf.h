/*
 * common/buf.h — a growable byte buffer for building output (HTTP bodies, SSE events, log lines).
 *
 * Contract: a struct buf owns its storage, grown with xrealloc (so appends never fail). While
 * data is non-NULL it is kept NUL-terminated, so buf_cstr() is always a valid C string, even for
 * binary contents (which may hold NULs of their own; use len). Any append may move data: never
 * keep a pointer into the buffer across an append. Not thread-safe; one owner at a time.
 *
 *     struct buf b = BUF_INIT;
 *     buf_appendf(&b, "data: %s\n\n", json);
 *     send(fd, b.data, b.len, 0);
 *     buf_free(&b);
 */
#ifndef CORTEX_BUF_H
#define CORTEX_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append; then NUL-terminated at data[len] */
    size_t len; /* bytes in use, excluding the terminating NUL */
    size_t cap; /* bytes allocated */
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Makes b an empty buffer that owns nothing (same as = BUF_INIT). */
void buf_init(struct buf *b);
/* Releases b's storage and leaves it empty and reusable; accepts NULL. */
void buf_free(struct buf *b);
/* Empties b but keeps its storage for reuse. */
void buf_reset(struct buf *b);
/* Shortens b to len bytes (no-op when len >= b->len). */
void buf_truncate(struct buf *b, size_t len);
/* Makes room for at least extra more bytes (plus the NUL) without further reallocation. */
void buf_reserve(struct buf *b, size_t extra);

void buf_append(struct buf *b, const void *data, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_append_char(struct buf *b, char c);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vappendf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Appends s[0..n) as a JSON string literal, quotes included. Quote, backslash and control
 * characters are escaped; bytes that are not well-formed UTF-8 are replaced by U+FFFD, so the
 * result is always valid JSON whatever the input (token text can split a multi-byte character).
 */
void buf_append_json_string(struct buf *b, const char *s, size_t n);

/* Appends s[0..n) with every byte sequence that is not well-formed UTF-8 replaced by U+FFFD,
 * so the result can go into a JSON string (jansson rejects invalid UTF-8). */
void buf_append_utf8(struct buf *b, const char *s, size_t n);

/* The contents as a C string; "" for a buffer that never allocated. Valid until the next
 * append, reset or free. */
const char *buf_cstr(const struct buf *b);

/*
 * Hands the storage to the caller, who frees it with free(); never NULL (an empty buffer yields
 * a fresh ""). *len_out (optional) receives the length. b is left empty and reusable.
 */
char *buf_steal(struct buf *b, size_t *len_out);

#endif
