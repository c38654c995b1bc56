/*
 * neuron/tool_call.c — the <tool_call> parser; the one-shot parse is the streaming parser fed once.
 *
 * The stream is a two-state machine. Outside a block it looks for "<tool_call>", emitting the text
 * before it but holding back (a) a tail that could be the start of the tag and (b) a trailing run
 * of whitespace, which is dropped if a tag follows and emitted if more text does. Inside a block
 * it accumulates until "</tool_call>", then decodes the body (JSON or Qwen3.5 XML) into a call,
 * or gives the whole block back as text when the body does not decode.
 */
#include "tool_call.h"
#include "xalloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char OPEN_TAG[] = "<tool_call>";
static const char CLOSE_TAG[] = "</tool_call>";
#define OPEN_LEN  (sizeof OPEN_TAG - 1)
#define CLOSE_LEN (sizeof CLOSE_TAG - 1)

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (n == 0)
        return;
    b->p = xgrow(b->p, &b->cap, b->len + n + 1, 1);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sbuf_consume(struct sbuf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    if (b->p)
        b->p[b->len] = '\0';
}

struct tool_call_stream {
    const json_t *tools;
    bool inside;
    bool skip_ws; /* just after </tool_call>: drop leading whitespace */
    bool finished;
    size_t n_calls;      /* calls produced so far */
    struct sbuf pending; /* unprocessed text (outside: a possible partial tag; inside: the body) */
    struct sbuf held_ws; /* whitespace that may precede a tag */
};

void tool_call_output_free(struct tool_call_output *out)
{
    if (!out)
        return;
    for (size_t i = 0; i < out->n_calls; i++) {
        free(out->calls[i].name);
        free(out->calls[i].arguments);
    }
    free(out->calls);
    free(out->content);
    memset(out, 0, sizeof *out);
}

static void out_text(struct tool_call_output *out, const char *s, size_t n)
{
    if (n == 0)
        return;
    out->content = xrealloc(out->content, out->content_len + n + 1);
    memcpy(out->content + out->content_len, s, n);
    out->content_len += n;
    out->content[out->content_len] = '\0';
}

static void out_call(struct tool_call_output *out, const char *name, json_t *args)
{
    out->calls = xrealloc(out->calls, (out->n_calls + 1) * sizeof *out->calls);
    char *text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    out->calls[out->n_calls].name = xstrdup(name);
    out->calls[out->n_calls].arguments = xstrdup(text ? text : "{}");
    free(text);
    out->n_calls++;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* ---- block decoding ------------------------------------------------------------------------ */
static const char *schema_type(const json_t *tools, const char *fn, const char *param)
{
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        json_t *f = json_object_get(tool, "function");
        if (!f)
            f = tool;
        if (!json_is_string(json_object_get(f, "name")) ||
            strcmp(json_string_value(json_object_get(f, "name")), fn) != 0)
            continue;
        json_t *p = json_object_get(json_object_get(json_object_get(f, "parameters"), "properties"),
                                    param);
        json_t *type = json_object_get(p, "type");
        if (json_is_array(type))
            type = json_array_get(type, 0);
        return json_string_value(type);
    }
    return NULL;
}

static json_t *typed_value(const char *v, size_t n, const char *type)
{
    if (!type || !strcmp(type, "string"))
        return json_stringn(v, n);
    char *s = xstrndup(v, n), *end;
    json_t *r = NULL;
    if (!strcmp(type, "integer")) {
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (n > 0 && *end == '\0' && errno == 0)
            r = json_integer(x);
    } else if (!strcmp(type, "number")) {
        double d = strtod(s, &end);
        if (n > 0 && *end == '\0')
            r = strchr(s, '.') || strchr(s, 'e') || strchr(s, 'E') ? json_real(d)
                                                                   : typed_value(v, n, "integer");
    } else if (!strcmp(type, "boolean")) {
        if (!strcasecmp(s, "true"))
            r = json_true();
        else if (!strcasecmp(s, "false"))
            r = json_false();
    } else {
        r = json_loadb(v, n, JSON_DECODE_ANY, NULL);
    }
    free(s);
    return r ? r : json_stringn(v, n);
}

static bool starts(const char *s, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - s) >= n && memcmp(s, lit, n) == 0;
}

static const char *skip_ws(const char *s, const char *end)
{
    while (s < end && is_ws(*s))
        s++;
    return s;
}

/* <function=NAME> (<parameter=P>value</parameter>)* </function> */
static bool decode_xml(const char *s, const char *end, const json_t *tools,
                       struct tool_call_output *out)
{
    s = skip_ws(s, end);
    if (!starts(s, end, "<function="))
        return false;
    s += strlen("<function=");
    const char *gt = memchr(s, '>', (size_t)(end - s));
    if (!gt || gt == s)
        return false;
    char *name = xstrndup(s, (size_t)(gt - s));
    json_t *args = json_object();
    s = gt + 1;
    for (;;) {
        s = skip_ws(s, end);
        if (starts(s, end, "</function>")) {
            s = skip_ws(s + strlen("</function>"), end);
            if (s != end)
                break;
            out_call(out, name, args);
            free(name);
            json_decref(args);
            return true;
        }
        if (!starts(s, end, "<parameter="))
            break;
        s += strlen("<parameter=");
        gt = memchr(s, '>', (size_t)(end - s));
        if (!gt || gt == s)
            break;
        char *param = xstrndup(s, (size_t)(gt - s));
        const char *v = gt + 1, *ve = memmem(v, (size_t)(end - v), "</parameter>", 12);
        if (!ve) {
            free(param);
            break;
        }
        s = ve + 12;
        if (v < ve && *v == '\n')
            v++;
        if (ve > v && ve[-1] == '\n')
            ve--;
        const json_t *list = json_is_array(tools) ? tools : NULL;
        json_object_set_new(
                args, param,
                typed_value(v, (size_t)(ve - v), list ? schema_type(list, name, param) : NULL));
        free(param);
    }
    free(name);
    json_decref(args);
    return false;
}

/* {"name": ..., "arguments": {...}} */
static bool decode_json(const char *s, const char *end, struct tool_call_output *out)
{
    json_t *j = json_loadb(s, (size_t)(end - s), 0, NULL);
    json_t *name = json_object_get(j, "name");
    json_t *args = json_object_get(j, "arguments");
    bool ok = false;
    if (!args)
        args = json_object_get(j, "parameters");
    if (json_is_string(name) && json_string_length(name) > 0) {
        if (!args || json_is_null(args)) {
            json_t *empty = json_object();
            out_call(out, json_string_value(name), empty);
            json_decref(empty);
            ok = true;
        } else if (json_is_object(args)) {
            out_call(out, json_string_value(name), args);
            ok = true;
        } else if (json_is_string(args)) {
            json_t *inner = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
            if (json_is_object(inner)) {
                out_call(out, json_string_value(name), inner);
                ok = true;
            }
            json_decref(inner);
        }
    }
    json_decref(j);
    return ok;
}

static bool decode_block(const struct tool_call_stream *s, const char *body, size_t n,
                         struct tool_call_output *out)
{
    const char *b = skip_ws(body, body + n), *e = body + n;
    while (e > b && is_ws(e[-1]))
        e--;
    if (b < e && *b == '{')
        return decode_json(b, e, out);
    return decode_xml(b, e, s->tools, out);
}

/* ---- streaming ----------------------------------------------------------------------------- */
struct tool_call_stream *tool_call_stream_create(const json_t *tools)
{
    struct tool_call_stream *s = xcalloc(1, sizeof *s);
    s->tools = tools;
    return s;
}

void tool_call_stream_destroy(struct tool_call_stream *s)
{
    if (!s)
        return;
    free(s->pending.p);
    free(s->held_ws.p);
    free(s);
}

/* Emits outside text t[0..n): whitespace at its end is held, not emitted. */
static void emit_outside(struct tool_call_stream *s, const char *t, size_t n,
                         struct tool_call_output *out)
{
    if (s->skip_ws) {
        while (n > 0 && is_ws(*t)) {
            t++;
            n--;
        }
        if (n == 0)
            return;
        s->skip_ws = false;
    }
    size_t body = n;
    while (body > 0 && is_ws(t[body - 1]))
        body--;
    if (body > 0) {
        out_text(out, s->held_ws.p, s->held_ws.len);
        s->held_ws.len = 0;
        out_text(out, t, body);
    }
    sbuf_add(&s->held_ws, t + body, n - body);
}

/* Length of the longest suffix of t[0..n) that is a proper prefix of the open tag. */
static size_t partial_tag(const char *t, size_t n)
{
    size_t k = n < OPEN_LEN - 1 ? n : OPEN_LEN - 1;
    for (; k > 0; k--)
        if (memcmp(t + n - k, OPEN_TAG, k) == 0)
            return k;
    return 0;
}

static void close_block(struct tool_call_stream *s, const char *body, size_t n, bool closed,
                        struct tool_call_output *out)
{
    size_t before = out->n_calls;
    if (decode_block(s, body, n, out)) {
        s->n_calls += out->n_calls - before;
        s->held_ws.len = 0;
        s->skip_ws = true;
        return;
    }
    /* not a call: the block is text after all */
    out_text(out, s->held_ws.p, s->held_ws.len);
    s->held_ws.len = 0;
    out_text(out, OPEN_TAG, OPEN_LEN);
    out_text(out, body, n);
    if (closed)
        out_text(out, CLOSE_TAG, CLOSE_LEN);
}

static void process(struct tool_call_stream *s, struct tool_call_output *out)
{
    for (;;) {
        struct sbuf *p = &s->pending;
        if (!s->inside) {
            const char *m = p->len ? memmem(p->p, p->len, OPEN_TAG, OPEN_LEN) : NULL;
            if (!m) {
                size_t hold = partial_tag(p->p, p->len);
                emit_outside(s, p->p, p->len - hold, out);
                sbuf_consume(p, p->len - hold);
                return;
            }
            size_t at = (size_t)(m - p->p);
            emit_outside(s, p->p, at, out);
            sbuf_consume(p, at + OPEN_LEN);
            s->inside = true;
            s->skip_ws = false;
        } else {
            const char *m = p->len ? memmem(p->p, p->len, CLOSE_TAG, CLOSE_LEN) : NULL;
            if (!m)
                return;
            size_t at = (size_t)(m - p->p);
            s->inside = false;
            close_block(s, p->p, at, true, out);
            sbuf_consume(p, at + CLOSE_LEN);
        }
    }
}

void tool_call_stream_feed(struct tool_call_stream *s, const char *chunk, size_t len,
                           struct tool_call_output *out)
{
    if (s->finished || len == 0)
        return;
    sbuf_add(&s->pending, chunk, len);
    process(s, out);
}

void tool_call_stream_finish(struct tool_call_stream *s, struct tool_call_output *out)
{
    if (s->finished)
        return;
    s->finished = true;
    if (s->inside) {
        s->inside = false;
        close_block(s, s->pending.p, s->pending.len, false, out);
    } else {
        /* a held partial tag is plain text after all */
        emit_outside(s, s->pending.p, s->pending.len, out);
    }
    if (s->n_calls == 0)
        out_text(out, s->held_ws.p, s->held_ws.len);
    s->held_ws.len = 0;
    s->pending.len = 0;
}

void tool_call_parse(const char *text, size_t len, const json_t *tools,
                     struct tool_call_output *out)
{
    struct tool_call_stream *s = tool_call_stream_create(tools);
    tool_call_stream_feed(s, text, len, out);
    tool_call_stream_finish(s, out);
    tool_call_stream_destroy(s);
}
