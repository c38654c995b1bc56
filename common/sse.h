/*
 * common/sse.h — an incremental parser of server-sent events (text/event-stream).
 *
 * Contract: feed the body of an event stream in pieces of any size — boundaries may fall
 * anywhere, even between the CR and LF of a line end — and receive each complete event through
 * a callback. Follows the WHATWG event-stream rules: lines end with CRLF, LF or CR; a leading
 * UTF-8 BOM is skipped; lines starting with ':' are comments (ignored); "field: value" loses
 * one space after the colon; "data" lines are joined with "\n"; "event" names the event
 * ("message" when absent); "id" sets the last event id (kept across events); unknown fields and
 * "retry" are ignored; a blank line dispatches the event, unless it had no data line. Bytes
 * after the last blank line are an incomplete event and are never dispatched.
 *
 * Memory is bounded: an event (its current line plus its data) larger than max_event_bytes
 * makes sse_parser_feed fail with SSE_TOO_LARGE.
 */
#ifndef CORTEX_SSE_H
#define CORTEX_SSE_H

#include <stddef.h>

typedef struct sse_parser sse_parser_t;

/* One event; every pointer is valid only during the callback. */
typedef struct sse_event {
    const char *event; /* the event type: "message" unless an event: field named it */
    const char *data;  /* the data, NUL-terminated (may contain NULs: use data_len) */
    size_t data_len;
    const char *id; /* the last event id seen in the stream, "" if none */
} sse_event_t;

/* Return 0 to go on, non-zero to stop (sse_parser_feed then returns SSE_STOPPED). */
typedef int (*sse_event_fn)(const sse_event_t *ev, void *ud);

enum {
    SSE_OK = 0,
    SSE_STOPPED = 1,    /* the callback asked to stop; the rest of the piece is dropped */
    SSE_TOO_LARGE = -1, /* an event outgrew max_event_bytes; the parser is unusable */
};

/* max_event_bytes 0 = 16 MiB. Destroy with sse_parser_destroy. */
sse_parser_t *sse_parser_create(size_t max_event_bytes);
void sse_parser_destroy(sse_parser_t *p); /* accepts NULL */
/* Parses len bytes, calling fn for each event completed by them. Returns SSE_OK, SSE_STOPPED
 * or SSE_TOO_LARGE. */
int sse_parser_feed(sse_parser_t *p, const char *bytes, size_t len, sse_event_fn fn, void *ud)
        __attribute__((warn_unused_result));

#endif
