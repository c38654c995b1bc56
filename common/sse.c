/*
 * common/sse.c — an incremental parser of server-sent events.
 *
 * Bytes accumulate into the current line until a line end; complete lines are interpreted at
 * once (data appended, event type and id recorded), and a blank line dispatches. The only state
 * that crosses piece boundaries is the partial line, the event being built, and whether the
 * last byte was a CR (so that an LF at the start of the next piece is not a second line end).
 */
#include "sse.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define SSE_DEFAULT_MAX ((size_t)16 << 20)

struct sse_buf {
    char *p;
    size_t len, cap;
};

struct sse_parser {
    size_t max;
    struct sse_buf line, data, event, id;
    bool after_cr;    /* the previous byte was a CR */
    bool bom_checked; /* the first line has been looked at */
    bool broken;      /* an event outgrew max: refuse further input */
};

static void sse_buf_set(struct sse_buf *b, const char *s, size_t n)
{
    b->p = xgrow(b->p, &b->cap, n + 1, 1);
    memcpy(b->p, s, n);
    b->len = n;
    b->p[n] = '\0';
}

static void sse_buf_append(struct sse_buf *b, const char *s, size_t n)
{
    b->p = xgrow(b->p, &b->cap, b->len + n + 1, 1);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

sse_parser_t *sse_parser_create(size_t max_event_bytes)
{
    sse_parser_t *p = xcalloc(1, sizeof *p);
    p->max = max_event_bytes ? max_event_bytes : SSE_DEFAULT_MAX;
    return p;
}

void sse_parser_destroy(sse_parser_t *p)
{
    if (p == NULL)
        return;
    free(p->line.p);
    free(p->data.p);
    free(p->event.p);
    free(p->id.p);
    free(p);
}

static bool sse_too_large(const sse_parser_t *p, size_t more)
{
    return p->line.len + p->data.len + p->event.len + more > p->max;
}

static int sse_dispatch(sse_parser_t *p, sse_event_fn fn, void *ud)
{
    if (p->data.len == 0) { /* no data line: nothing to dispatch */
        p->event.len = 0;
        return SSE_OK;
    }
    p->data.p[--p->data.len] = '\0'; /* drop the "\n" after the last data line */
    sse_event_t ev = {.event = p->event.len ? p->event.p : "message",
                      .data = p->data.p,
                      .data_len = p->data.len,
                      .id = p->id.len ? p->id.p : ""};
    int stop = fn(&ev, ud);
    p->data.len = 0;
    p->event.len = 0;
    return stop ? SSE_STOPPED : SSE_OK;
}

/* Interprets the complete line in p->line and empties it. */
static int sse_line(sse_parser_t *p, sse_event_fn fn, void *ud)
{
    const char *line = p->line.p ? p->line.p : "";
    size_t n = p->line.len;
    p->line.len = 0; /* the bytes stay readable until the next append */
    if (!p->bom_checked) {
        p->bom_checked = true;
        if (n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
            line += 3, n -= 3;
    }
    if (n == 0)
        return sse_dispatch(p, fn, ud);
    if (line[0] == ':')
        return SSE_OK; /* comment, e.g. ": keep-alive" */

    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t)(colon - line) : n;
    const char *value = colon ? colon + 1 : line + n;
    size_t vlen = (size_t)(line + n - value);
    if (vlen > 0 && value[0] == ' ')
        value++, vlen--;

    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        /* value may point into line.p, which these appends do not touch */
        sse_buf_append(&p->data, value, vlen);
        sse_buf_append(&p->data, "\n", 1);
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        sse_buf_set(&p->event, value, vlen);
    } else if (flen == 2 && memcmp(line, "id", 2) == 0) {
        if (memchr(value, '\0', vlen) == NULL)
            sse_buf_set(&p->id, value, vlen);
    }
    return SSE_OK;
}

int sse_parser_feed(sse_parser_t *p, const char *bytes, size_t len, sse_event_fn fn, void *ud)
{
    if (p->broken)
        return SSE_TOO_LARGE;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        char c = bytes[i];
        if (p->after_cr) {
            p->after_cr = false;
            if (c == '\n') { /* the LF of a CRLF split across pieces */
                start = i + 1;
                continue;
            }
        }
        if (c != '\r' && c != '\n')
            continue;
        if (sse_too_large(p, i - start))
            goto too_large;
        sse_buf_append(&p->line, bytes + start, i - start);
        int rc = sse_line(p, fn, ud);
        if (rc != SSE_OK)
            return rc;
        if (sse_too_large(p, 0))
            goto too_large;
        if (c == '\r') {
            if (i + 1 < len && bytes[i + 1] == '\n')
                i++;
            else if (i + 1 == len)
                p->after_cr = true;
        }
        start = i + 1;
    }
    if (sse_too_large(p, len - start))
        goto too_large;
    sse_buf_append(&p->line, bytes + start, len - start);
    return SSE_OK;
too_large:
    p->broken = true;
    return SSE_TOO_LARGE;
}
