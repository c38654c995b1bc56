/*
 * neuron/jinja_builtin.c — Jinja filters, tests, global functions and Python str/dict methods.
 *
 * Each behaves as in jinja2 3.1 with Hugging Face's chat-template environment: tojson is
 * json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) with those
 * positional parameters, raise_exception() raises a template error, strftime_now() formats the
 * render time. Only what chat templates plausibly use is here; an unknown filter or test is a
 * runtime error naming it, as in jinja2.
 */
#include "jinja_internal.h"
#include "xalloc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAIL(cx, a, ...) jctx_fail((cx), JINJA_ERROR_RUNTIME, (a)->line, (a)->col, __VA_ARGS__)

/* ---- small helpers ------------------------------------------------------------------------- */
static bool arg_given(const struct jval *v)
{
    return v && !(v->kind == JV_UNDEF || (v->kind == JV_JSON && json_is_null(v->json)));
}

static bool arg_bool(const struct jval *v, bool def)
{
    return v ? jval_truthy(v) : def;
}

static int arg_int(struct jctx *cx, const struct jargs *a, const struct jval *v, long long def,
                   long long *out)
{
    *out = def;
    if (!arg_given(v))
        return 0;
    if (v->kind == JV_JSON && json_is_integer(v->json))
        *out = json_integer_value(v->json);
    else if (v->kind == JV_JSON && json_is_boolean(v->json))
        *out = json_is_true(v->json);
    else
        return FAIL(cx, a, "expected an integer argument, got '%s'", jval_type_name(v));
    return 0;
}

/* A string argument (borrowed) or NULL with an error. */
static const char *arg_str(struct jctx *cx, const struct jargs *a, const struct jval *v,
                           const char *what, size_t *len)
{
    if (!v || !jval_is_str(v)) {
        FAIL(cx, a, "%s must be a string, got '%s'", what, v ? jval_type_name(v) : "nothing");
        return NULL;
    }
    *len = json_string_length(v->json);
    return json_string_value(v->json);
}

static char *to_str(const struct jval *v, size_t *len)
{
    struct jbuf b = {0};
    jval_write_str(v, &b);
    jbuf_add(&b, "", 0);
    *len = b.len;
    return b.p;
}

static struct jval str_result(struct jbuf *b)
{
    struct jval v = jval_str(b->p, b->len);
    jbuf_free(b);
    return v;
}

static bool in_set(uint32_t cp, const char *set, size_t n)
{
    size_t pos = 0;
    while (pos < n)
        if (jinja_utf8_next(set, n, &pos) == cp)
            return true;
    return false;
}

/* Python str.strip/lstrip/rstrip; chars NULL strips whitespace. */
static struct jval strip_chars(const char *s, size_t n, const char *chars, size_t nchars, bool left,
                               bool right)
{
    size_t a = 0, b = n, pos;
    if (left)
        while (a < b) {
            pos = a;
            uint32_t cp = jinja_utf8_next(s, n, &pos);
            if (chars ? !in_set(cp, chars, nchars) : !jinja_is_py_space(cp))
                break;
            a = pos;
        }
    if (right)
        while (b > a) {
            size_t start = b - 1;
            while (start > a && ((unsigned char)s[start] & 0xC0) == 0x80)
                start--;
            pos = start;
            uint32_t cp = jinja_utf8_next(s, n, &pos);
            if (pos != b || (chars ? !in_set(cp, chars, nchars) : !jinja_is_py_space(cp)))
                break;
            b = start;
        }
    return jval_str(s + a, b - a);
}

static bool ascii_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

enum casing { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE };

/* Simple case mappings of the scripts chat text mostly uses: ASCII, Latin-1, Latin Extended-A,
 * Greek and Cyrillic. Other code points are left alone (Python maps all of Unicode). */
static uint32_t cp_upper(uint32_t c)
{
    if (c >= 'a' && c <= 'z')
        return c - 32;
    if (c < 0x80)
        return c;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7))
        return c - 32;
    if (c == 0xFF)
        return 0x178;
    if (c == 0xB5)
        return 0x39C;
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c & ~1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return (c & 1u) ? c : c - 1;
    if (c == 0x131)
        return 'I';
    if (c == 0x17F)
        return 'S';
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2)
        return c - 32;
    if (c == 0x3C2)
        return 0x3A3;
    if (c == 0x3AC)
        return 0x386;
    if (c >= 0x3AD && c <= 0x3AF)
        return c - 37;
    if (c == 0x3CC)
        return 0x38C;
    if (c == 0x3CD || c == 0x3CE)
        return c - 63;
    if (c >= 0x430 && c <= 0x44F)
        return c - 32;
    if (c >= 0x450 && c <= 0x45F)
        return c - 80;
    return c;
}

static uint32_t cp_lower(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c < 0x80)
        return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 32;
    if (c == 0x178)
        return 0xFF;
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c | 1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return (c & 1u) ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2)
        return c + 32;
    if (c == 0x386)
        return 0x3AC;
    if (c >= 0x388 && c <= 0x38A)
        return c + 37;
    if (c == 0x38C)
        return 0x3CC;
    if (c == 0x38E || c == 0x38F)
        return c + 63;
    if (c >= 0x410 && c <= 0x42F)
        return c + 32;
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    return c;
}

static bool cp_cased(uint32_t c)
{
    return cp_upper(c) != c || cp_lower(c) != c || c == 0xDF;
}

/* Appends the upper (or, for title case, the title) form; German sharp s expands as in Python. */
static void put_upper(struct jbuf *b, uint32_t c, bool title)
{
    if (c == 0xDF)
        jbuf_adds(b, title ? "Ss" : "SS");
    else
        jinja_utf8_put(b, cp_upper(c));
}

static void put_lower(struct jbuf *b, uint32_t c)
{
    if (c == 0x130)
        jbuf_adds(b, "i\xcc\x87"); /* i + combining dot above, as Python lowers U+0130 */
    else
        jinja_utf8_put(b, cp_lower(c));
}

static struct jval change_case(const char *s, size_t n, enum casing how)
{
    struct jbuf b = {0};
    bool prev_cased = false;
    size_t pos = 0, start;
    while (pos < n) {
        start = pos;
        uint32_t c = jinja_utf8_next(s, n, &pos);
        if (c >= 0x80 && pos - start == 1) {
            jbuf_add(&b, s + start, 1); /* an invalid byte stays as it was */
            continue;
        }
        switch (how) {
        case CASE_UPPER:
            put_upper(&b, c, false);
            break;
        case CASE_LOWER:
            put_lower(&b, c);
            break;
        case CASE_TITLE:
            if (prev_cased)
                put_lower(&b, c);
            else
                put_upper(&b, c, true);
            prev_cased = cp_cased(c);
            break;
        case CASE_CAPITALIZE:
            if (start == 0)
                put_upper(&b, c, true);
            else
                put_lower(&b, c);
            break;
        }
    }
    jbuf_add(&b, "", 0);
    return str_result(&b);
}

/* jinja2's title filter (not str.title): words start after whitespace or one of -({[< and get
 * their first character upper-cased and the rest lower-cased. */
static struct jval title_filter(const char *s, size_t n)
{
    struct jbuf b = {0};
    bool at_start = true;
    size_t pos = 0;
    while (pos < n) {
        size_t start = pos;
        uint32_t c = jinja_utf8_next(s, n, &pos);
        bool sep = jinja_is_py_space(c) || (c < 0x80 && strchr("-({[<", (int)c) != NULL);
        if (sep || (c >= 0x80 && pos - start == 1))
            jbuf_add(&b, s + start, pos - start);
        else if (at_start)
            put_upper(&b, c, true);
        else
            put_lower(&b, c);
        at_start = sep;
    }
    jbuf_add(&b, "", 0);
    return str_result(&b);
}

static struct jval str_replace(const char *s, size_t n, const char *old, size_t nold,
                               const char *nw, size_t nnew, long long count)
{
    struct jbuf b = {0};
    size_t i = 0;
    long long done = 0;
    if (nold == 0) {
        size_t pos = 0;
        while (count < 0 || done < count) {
            jbuf_add(&b, nw, nnew);
            done++;
            if (pos >= n)
                break;
            size_t start = pos;
            jinja_utf8_next(s, n, &pos);
            jbuf_add(&b, s + start, pos - start);
        }
        jbuf_add(&b, s + pos, n - pos);
        return str_result(&b);
    }
    while (i < n && (count < 0 || done < count)) {
        const char *m = memmem(s + i, n - i, old, nold);
        if (!m)
            break;
        size_t at = (size_t)(m - s);
        jbuf_add(&b, s + i, at - i);
        jbuf_add(&b, nw, nnew);
        i = at + nold;
        done++;
    }
    jbuf_add(&b, s + i, n - i);
    return str_result(&b);
}

/* Python str.split / rsplit. sep NULL splits on whitespace runs. */
static json_t *str_split(const char *s, size_t n, const char *sep, size_t nsep, long long maxsplit,
                         bool from_right)
{
    json_t *out = json_array();
    if (!sep) {
        /* whitespace split: collect words, then honour maxsplit from the proper side */
        size_t pos = 0;
        json_t *words = json_array();
        size_t *starts = NULL, nstarts = 0, cap = 0;
        while (pos < n) {
            size_t p = pos;
            uint32_t cp = jinja_utf8_next(s, n, &p);
            if (jinja_is_py_space(cp)) {
                pos = p;
                continue;
            }
            size_t start = pos;
            while (pos < n) {
                p = pos;
                cp = jinja_utf8_next(s, n, &p);
                if (jinja_is_py_space(cp))
                    break;
                pos = p;
            }
            starts = xgrow(starts, &cap, nstarts + 1, sizeof *starts);
            starts[nstarts++] = start;
            json_array_append_new(words, json_stringn_nocheck(s + start, pos - start));
        }
        size_t nw = json_array_size(words);
        if (maxsplit < 0 || nw <= (size_t)maxsplit) {
            json_decref(out);
            free(starts);
            return words;
        }
        /* the unsplit remainder keeps its whitespace on the far side, as in Python */
        if (!from_right) {
            for (size_t k = 0; k < (size_t)maxsplit; k++)
                json_array_append(out, json_array_get(words, k));
            json_array_append_new(out,
                                  json_stringn_nocheck(s + starts[maxsplit], n - starts[maxsplit]));
        } else {
            size_t first = nw - (size_t)maxsplit;
            size_t end = starts[first - 1] + json_string_length(json_array_get(words, first - 1));
            json_array_append_new(out, json_stringn_nocheck(s, end));
            for (size_t k = first; k < nw; k++)
                json_array_append(out, json_array_get(words, k));
        }
        json_decref(words);
        free(starts);
        return out;
    }
    if (!from_right) {
        size_t i = 0;
        long long done = 0;
        for (;;) {
            const char *m =
                    (maxsplit < 0 || done < maxsplit) ? memmem(s + i, n - i, sep, nsep) : NULL;
            if (!m) {
                json_array_append_new(out, json_stringn_nocheck(s + i, n - i));
                return out;
            }
            json_array_append_new(out, json_stringn_nocheck(s + i, (size_t)(m - s) - i));
            i = (size_t)(m - s) + nsep;
            done++;
        }
    }
    size_t end = n;
    long long done = 0;
    json_t *rev = json_array();
    for (;;) {
        size_t found = (size_t)-1;
        if ((maxsplit < 0 || done < maxsplit) && end >= nsep)
            for (size_t k = end - nsep + 1; k-- > 0;)
                if (memcmp(s + k, sep, nsep) == 0) {
                    found = k;
                    break;
                }
        if (found == (size_t)-1) {
            json_array_insert_new(rev, 0, json_stringn_nocheck(s, end));
            break;
        }
        json_array_insert_new(rev, 0, json_stringn_nocheck(s + found + nsep, end - found - nsep));
        end = found;
        done++;
    }
    json_decref(out);
    return rev;
}

/* str.splitlines() */
static json_t *str_splitlines(const char *s, size_t n)
{
    json_t *out = json_array();
    size_t pos = 0, start = 0;
    while (pos < n) {
        size_t p = pos;
        uint32_t cp = jinja_utf8_next(s, n, &p);
        bool brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C ||
                   cp == 0x1D || cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (brk) {
            json_array_append_new(out, json_stringn_nocheck(s + start, pos - start));
            if (cp == '\r' && p < n && s[p] == '\n')
                p++;
            start = p;
        }
        pos = p;
    }
    if (start < n)
        json_array_append_new(out, json_stringn_nocheck(s + start, n - start));
    return out;
}

static bool prefix_match(const char *s, size_t n, const json_t *p, bool suffix)
{
    size_t np = json_string_length(p);
    if (np > n)
        return false;
    return memcmp(suffix ? s + n - np : s, json_string_value(p), np) == 0;
}

/* ---- attribute getters (for map, selectattr, sort, ...) ------------------------------------ */
/* jinja2's make_attrgetter: dotted path, integer parts index sequences. */
static int attr_path(struct jctx *cx, const struct jval *item, const char *path, int line, int col,
                     struct jval *out)
{
    struct jval cur = jval_copy(item);
    const char *p = path;
    while (true) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char part[256];
        if (len >= sizeof part)
            len = sizeof part - 1;
        memcpy(part, p, len);
        part[len] = '\0';
        struct jval key, next;
        char *end;
        long long iv = strtoll(part, &end, 10);
        if (len > 0 && *end == '\0')
            key = jval_json(json_integer(iv));
        else
            key = jval_str(part, len);
        int rc = jinja_eval_getitem(cx, &cur, &key, line, col, &next);
        jval_drop(&key);
        jval_drop(&cur);
        if (rc != 0)
            return -1;
        cur = next;
        if (!dot)
            break;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */
static bool is_json(const struct jval *v, json_type t)
{
    return v->kind == JV_JSON && json_typeof(v->json) == t;
}

static bool is_callable(const struct jval *v)
{
    return v->kind == JV_OBJ &&
           (v->obj->kind == JOBJ_MACRO || v->obj->kind == JOBJ_FUNC || v->obj->kind == JOBJ_METHOD);
}

static int test_compare(struct jctx *cx, const struct jargs *args, const struct jval *in,
                        const struct jval *other, int op, bool *out)
{
    int c;
    if (in->kind != JV_JSON || other->kind != JV_JSON ||
        jinja_value_compare(in->json, other->json, &c) != 0)
        return FAIL(cx, args, "'%s' and '%s' cannot be compared", jval_type_name(in),
                    jval_type_name(other));
    *out = op == JOP_LT ? c < 0 : op == JOP_LE ? c <= 0 : op == JOP_GT ? c > 0 : c >= 0;
    return 0;
}

static bool filter_exists(const char *name);

static int compare_test_op(const char *name)
{
    static const struct {
        const char *name;
        int op;
    } ops[] = {{"lt", JOP_LT}, {"lessthan", JOP_LT}, {"<", JOP_LT},           {"le", JOP_LE},
               {"<=", JOP_LE}, {"gt", JOP_GT},       {"greaterthan", JOP_GT}, {">", JOP_GT},
               {"ge", JOP_GE}, {">=", JOP_GE}};
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++)
        if (!strcmp(ops[k].name, name))
            return ops[k].op;
    return 0;
}

int jinja_builtin_test(struct jctx *cx, const char *name, const struct jval *in,
                       const struct jargs *args, bool *out)
{
    const struct jval *a0 = jargs_get(args, 0, NULL);
    *out = false;
    if (!strcmp(name, "defined")) {
        *out = in->kind != JV_UNDEF;
    } else if (!strcmp(name, "undefined")) {
        *out = in->kind == JV_UNDEF;
    } else if (!strcmp(name, "none")) {
        *out = is_json(in, JSON_NULL);
    } else if (!strcmp(name, "boolean")) {
        *out = in->kind == JV_JSON && json_is_boolean(in->json);
    } else if (!strcmp(name, "true")) {
        *out = is_json(in, JSON_TRUE);
    } else if (!strcmp(name, "false")) {
        *out = is_json(in, JSON_FALSE);
    } else if (!strcmp(name, "integer")) {
        *out = is_json(in, JSON_INTEGER);
    } else if (!strcmp(name, "float")) {
        *out = is_json(in, JSON_REAL);
    } else if (!strcmp(name, "number")) {
        *out = in->kind == JV_JSON && (json_is_number(in->json) || json_is_boolean(in->json));
    } else if (!strcmp(name, "string")) {
        *out = is_json(in, JSON_STRING);
    } else if (!strcmp(name, "mapping")) {
        *out = is_json(in, JSON_OBJECT);
    } else if (!strcmp(name, "iterable")) {
        *out = in->kind == JV_UNDEF || is_json(in, JSON_STRING) || is_json(in, JSON_ARRAY) ||
               is_json(in, JSON_OBJECT) || (in->kind == JV_OBJ && in->obj->kind == JOBJ_LOOP);
    } else if (!strcmp(name, "sequence")) {
        *out = in->kind == JV_UNDEF || is_json(in, JSON_STRING) || is_json(in, JSON_ARRAY) ||
               is_json(in, JSON_OBJECT);
    } else if (!strcmp(name, "callable")) {
        *out = is_callable(in);
    } else if (!strcmp(name, "escaped")) {
        *out = false;
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (!jval_is_str(in))
            return FAIL(cx, args, "'%s' test needs a string", name);
        const char *s = json_string_value(in->json);
        bool any = false, ok = true;
        for (size_t i = 0; i < json_string_length(in->json); i++)
            if (ascii_alpha(s[i])) {
                any = true;
                if (name[0] == 'l' ? (s[i] >= 'A' && s[i] <= 'Z') : (s[i] >= 'a' && s[i] <= 'z'))
                    ok = false;
            }
        *out = any && ok;
    } else if (!strcmp(name, "even") || !strcmp(name, "odd") || !strcmp(name, "divisibleby")) {
        long long v, d = 2;
        if (arg_int(cx, args, in, 0, &v) != 0)
            return -1;
        if (name[0] == 'd' && arg_int(cx, args, a0, 1, &d) != 0)
            return -1;
        if (d == 0)
            return FAIL(cx, args, "division by zero");
        long long m = v % d;
        *out = name[0] == 'o' ? m != 0 : m == 0;
    } else if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") ||
               !strcmp(name, "sameas")) {
        if (!a0)
            return FAIL(cx, args, "test '%s' needs an argument", name);
        *out = jval_equal(in, a0);
        if (!strcmp(name, "sameas") && *out && in->kind == JV_JSON && a0->kind == JV_JSON &&
            json_typeof(in->json) != json_typeof(a0->json))
            *out = false;
    } else if (!strcmp(name, "ne") || !strcmp(name, "!=")) {
        if (!a0)
            return FAIL(cx, args, "test '%s' needs an argument", name);
        *out = !jval_equal(in, a0);
    } else if (compare_test_op(name) != 0) {
        if (!a0)
            return FAIL(cx, args, "test '%s' needs an argument", name);
        return test_compare(cx, args, in, a0, compare_test_op(name), out);
    } else if (!strcmp(name, "in")) {
        if (!a0)
            return FAIL(cx, args, "test 'in' needs an argument");
        if (a0->kind == JV_JSON && json_is_string(a0->json) && jval_is_str(in)) {
            *out = memmem(json_string_value(a0->json), json_string_length(a0->json),
                          json_string_value(in->json), json_string_length(in->json)) != NULL ||
                   json_string_length(in->json) == 0;
        } else if (a0->kind == JV_JSON && json_is_array(a0->json)) {
            for (size_t i = 0; i < json_array_size(a0->json) && !*out; i++) {
                struct jval e = {JV_JSON, json_array_get(a0->json, i), NULL};
                *out = jval_equal(in, &e);
            }
        } else if (a0->kind == JV_JSON && json_is_object(a0->json)) {
            *out = jval_is_str(in) && json_object_get(a0->json, json_string_value(in->json));
        } else {
            return FAIL(cx, args, "test 'in' needs a container");
        }
    } else if (!strcmp(name, "filter")) {
        *out = jval_is_str(in) && filter_exists(json_string_value(in->json));
    } else {
        return FAIL(cx, args, "no test named '%s'", name);
    }
    return 0;
}

/* ---- sorting (stable merge sort with a fallible comparison) -------------------------------- */
struct sort_ctx {
    struct jctx *cx;
    const struct jargs *args;
    const char *attribute;
    bool case_sensitive;
    int failed;
};

static json_t *sort_key(struct sort_ctx *sc, json_t *item)
{
    json_t *k = item;
    if (sc->attribute) {
        struct jval it = {JV_JSON, item, NULL}, v;
        if (attr_path(sc->cx, &it, sc->attribute, sc->args->line, sc->args->col, &v) != 0) {
            sc->failed = 1;
            return json_null();
        }
        k = v.kind == JV_JSON ? json_incref(v.json) : json_null();
        jval_drop(&v);
    } else {
        json_incref(k);
    }
    if (!sc->case_sensitive && json_is_string(k)) {
        struct jval low = change_case(json_string_value(k), json_string_length(k), CASE_LOWER);
        json_decref(k);
        k = low.json;
    }
    return k;
}

static int sort_cmp(struct sort_ctx *sc, json_t *a, json_t *b)
{
    int c = 0;
    json_t *ka = sort_key(sc, a), *kb = sort_key(sc, b);
    if (!sc->failed && jinja_value_compare(ka, kb, &c) != 0) {
        FAIL(sc->cx, sc->args, "values of these types cannot be ordered");
        sc->failed = 1;
    }
    json_decref(ka);
    json_decref(kb);
    return c;
}

static void merge_sort(struct sort_ctx *sc, json_t **v, json_t **tmp, size_t n)
{
    if (n < 2 || sc->failed)
        return;
    size_t h = n / 2;
    merge_sort(sc, v, tmp, h);
    merge_sort(sc, v + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = sort_cmp(sc, v[j], v[i]) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int sort_array(struct sort_ctx *sc, json_t *arr, bool reverse, json_t **out)
{
    size_t n = json_array_size(arr);
    json_t **v = xmalloc((n + 1) * sizeof *v), **tmp = xmalloc((n + 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    merge_sort(sc, v, tmp, n);
    *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(*out, v[reverse ? n - 1 - i : i]);
    free(v);
    free(tmp);
    if (sc->failed) {
        json_decref(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* ---- filters ------------------------------------------------------------------------------- */
static int as_list(struct jctx *cx, const struct jargs *a, const struct jval *in, json_t **out)
{
    return jinja_eval_to_list(cx, in, a->line, a->col, out);
}

static int filter_tojson(struct jctx *cx, const struct jval *in, const struct jargs *a,
                         struct jval *out)
{
    const struct jval *ea = jargs_get(a, 0, "ensure_ascii"), *ind = jargs_get(a, 1, "indent");
    const struct jval *seps = jargs_get(a, 2, "separators"), *sk = jargs_get(a, 3, "sort_keys");
    char indent[64], *indent_p = NULL;
    const char *item_sep = NULL, *key_sep = NULL;
    struct jbuf b = {0};
    if (in->kind != JV_JSON)
        return FAIL(cx, a, "Object of type %s is not JSON serializable", jval_type_name(in));
    if (arg_given(ind)) {
        if (jval_is_str(ind)) {
            snprintf(indent, sizeof indent, "%s", json_string_value(ind->json));
        } else {
            long long w;
            if (arg_int(cx, a, ind, 0, &w) != 0)
                return -1;
            if (w > (long long)sizeof indent - 1)
                w = (long long)sizeof indent - 1;
            memset(indent, ' ', w > 0 ? (size_t)w : 0);
            indent[w > 0 ? w : 0] = '\0';
        }
        indent_p = indent;
    }
    if (arg_given(seps)) {
        if (!is_json(seps, JSON_ARRAY) || json_array_size(seps->json) != 2 ||
            !json_is_string(json_array_get(seps->json, 0)) ||
            !json_is_string(json_array_get(seps->json, 1)))
            return FAIL(cx, a, "separators must be a pair of strings");
        item_sep = json_string_value(json_array_get(seps->json, 0));
        key_sep = json_string_value(json_array_get(seps->json, 1));
    }
    if (jinja_value_dumps(in->json, indent_p, item_sep, key_sep, arg_bool(sk, false),
                          arg_bool(ea, false), &b) != 0) {
        jbuf_free(&b);
        return FAIL(cx, a, "Out of range float values are not JSON compliant");
    }
    *out = str_result(&b);
    return 0;
}

static int filter_int(struct jctx *cx, const struct jval *in, const struct jargs *a,
                      struct jval *out, bool want_float)
{
    const struct jval *def = jargs_get(a, 0, "default");
    long long base = 10;
    if (!want_float && arg_int(cx, a, jargs_get(a, 1, "base"), 10, &base) != 0)
        return -1;
    if (in->kind == JV_JSON) {
        json_t *j = in->json;
        if (json_is_integer(j) || json_is_boolean(j)) {
            long long v = json_is_integer(j) ? json_integer_value(j) : json_is_true(j);
            *out = want_float ? jval_json(json_real((double)v)) : jval_json(json_integer(v));
            return 0;
        }
        if (json_is_real(j) && isfinite(json_real_value(j))) {
            double d = json_real_value(j);
            if (want_float) {
                *out = jval_json(json_incref(j));
                return 0;
            }
            if (fabs(d) < 9.2e18) {
                *out = jval_json(json_integer((long long)d));
                return 0;
            }
        }
        if (json_is_string(j)) {
            char *end;
            const char *s = json_string_value(j);
            struct jval st = strip_chars(s, json_string_length(j), NULL, 0, true, true);
            char *clean = xmalloc(json_string_length(st.json) + 1);
            size_t k = 0;
            for (const char *p = json_string_value(st.json); *p; p++)
                if (*p != '_')
                    clean[k++] = *p;
            clean[k] = '\0';
            jval_drop(&st);
            bool ok = false;
            if (!want_float && k > 0) {
                errno = 0;
                long long v = strtoll(clean, &end, (int)base);
                if (*end == '\0' && errno == 0) {
                    *out = jval_json(json_integer(v));
                    ok = true;
                }
            }
            if (!ok && k > 0) {
                double d = strtod(clean, &end);
                if (*end == '\0' && isfinite(d) && (want_float || fabs(d) < 9.2e18)) {
                    *out = want_float ? jval_json(json_real(d))
                                      : jval_json(json_integer((long long)d));
                    ok = true;
                }
            }
            free(clean);
            if (ok)
                return 0;
        }
    }
    if (def)
        *out = jval_copy(def);
    else
        *out = want_float ? jval_json(json_real(0.0)) : jval_json(json_integer(0));
    return 0;
}

static int filter_indent(struct jctx *cx, const struct jval *in, const struct jargs *a,
                         struct jval *out)
{
    const struct jval *w = jargs_get(a, 0, "width");
    bool first = arg_bool(jargs_get(a, 1, "first"), false);
    bool blank = arg_bool(jargs_get(a, 2, "blank"), false);
    char *ind;
    size_t nind, n;
    if (w && jval_is_str(w)) {
        ind = xstrdup(json_string_value(w->json));
    } else {
        long long width;
        if (arg_int(cx, a, w, 4, &width) != 0)
            return -1;
        if (width < 0)
            width = 0;
        if (width > 1024)
            return FAIL(cx, a, "indent width too large");
        ind = xmalloc((size_t)width + 1);
        memset(ind, ' ', (size_t)width);
        ind[width] = '\0';
    }
    nind = strlen(ind);
    char *s = to_str(in, &n);
    struct jbuf text = {0};
    jbuf_add(&text, s, n);
    jbuf_addc(&text, '\n');
    json_t *lines = str_splitlines(text.p, text.len);
    struct jbuf b = {0};
    if (first)
        jbuf_add(&b, ind, nind);
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *l = json_array_get(lines, i);
        if (i > 0) {
            jbuf_addc(&b, '\n');
            if (blank || json_string_length(l) > 0)
                jbuf_add(&b, ind, nind);
        }
        jbuf_add(&b, json_string_value(l), json_string_length(l));
    }
    json_decref(lines);
    jbuf_free(&text);
    free(s);
    free(ind);
    *out = str_result(&b);
    return 0;
}

/* select / reject / selectattr / rejectattr */
static int filter_select(struct jctx *cx, const struct jval *in, const struct jargs *a,
                         struct jval *out, bool by_attr, bool keep)
{
    json_t *items, *res;
    size_t first_test = by_attr ? 1 : 0;
    const char *attr = NULL, *test = NULL;
    size_t len;
    if (by_attr && !(attr = arg_str(cx, a, jargs_get(a, 0, NULL), "attribute name", &len)))
        return -1;
    const struct jval *t = jargs_get(a, first_test, NULL);
    if (t && !(test = arg_str(cx, a, t, "test name", &len)))
        return -1;
    if (as_list(cx, a, in, &items) != 0)
        return -1;
    struct jargs targs = {.line = a->line, .col = a->col};
    if (a->npos > first_test + 1) {
        targs.pos = a->pos + first_test + 1;
        targs.npos = a->npos - first_test - 1;
    }
    res = json_array();
    for (size_t i = 0; i < json_array_size(items); i++) {
        struct jval item = {JV_JSON, json_array_get(items, i), NULL}, v;
        bool r;
        if (attr) {
            if (attr_path(cx, &item, attr, a->line, a->col, &v) != 0)
                goto fail;
        } else {
            v = jval_copy(&item);
        }
        int rc = 0;
        if (test)
            rc = jinja_builtin_test(cx, test, &v, &targs, &r);
        else
            r = jval_truthy(&v);
        jval_drop(&v);
        if (rc != 0)
            goto fail;
        if (r == keep)
            json_array_append(res, item.json);
    }
    json_decref(items);
    *out = jval_json(res);
    return 0;
fail:
    json_decref(items);
    json_decref(res);
    return -1;
}

static int filter_map(struct jctx *cx, const struct jval *in, const struct jargs *a,
                      struct jval *out)
{
    const struct jval *attr = jargs_get(a, (size_t)-1, "attribute");
    const struct jval *def = jargs_get(a, (size_t)-1, "default");
    const char *fname = NULL;
    size_t len;
    json_t *items, *res;
    if (!attr && !(fname = arg_str(cx, a, jargs_get(a, 0, NULL), "filter name", &len)))
        return -1;
    if (attr && !jval_is_str(attr))
        return FAIL(cx, a, "map attribute must be a string");
    if (as_list(cx, a, in, &items) != 0)
        return -1;
    struct jargs fargs = {.line = a->line, .col = a->col};
    if (fname && a->npos > 1) {
        fargs.pos = a->pos + 1;
        fargs.npos = a->npos - 1;
    }
    res = json_array();
    for (size_t i = 0; i < json_array_size(items); i++) {
        struct jval item = {JV_JSON, json_array_get(items, i), NULL}, v;
        int rc;
        if (attr) {
            rc = attr_path(cx, &item, json_string_value(attr->json), a->line, a->col, &v);
            if (rc == 0 && v.kind == JV_UNDEF && def) {
                jval_drop(&v);
                v = jval_copy(def);
            }
        } else {
            rc = jinja_builtin_filter(cx, fname, &item, &fargs, &v);
        }
        if (rc != 0) {
            json_decref(items);
            json_decref(res);
            return -1;
        }
        if (v.kind == JV_OBJ) {
            jval_drop(&v);
            json_decref(items);
            json_decref(res);
            return FAIL(cx, a, "map produced a value that cannot be stored in a list");
        }
        json_array_append_new(res, v.kind == JV_JSON ? json_incref(v.json) : json_null());
        jval_drop(&v);
    }
    json_decref(items);
    *out = jval_json(res);
    return 0;
}

static int filter_join(struct jctx *cx, const struct jval *in, const struct jargs *a,
                       struct jval *out)
{
    const struct jval *d = jargs_get(a, 0, "d"), *attr = jargs_get(a, 1, "attribute");
    json_t *items;
    struct jbuf b = {0};
    if (d && !jval_is_str(d))
        return FAIL(cx, a, "join separator must be a string");
    if (as_list(cx, a, in, &items) != 0)
        return -1;
    for (size_t i = 0; i < json_array_size(items); i++) {
        struct jval item = {JV_JSON, json_array_get(items, i), NULL}, v;
        if (i && d)
            jbuf_add(&b, json_string_value(d->json), json_string_length(d->json));
        if (arg_given(attr) && jval_is_str(attr)) {
            if (attr_path(cx, &item, json_string_value(attr->json), a->line, a->col, &v) != 0) {
                json_decref(items);
                jbuf_free(&b);
                return -1;
            }
            jval_write_str(&v, &b);
            jval_drop(&v);
        } else {
            jval_write_str(&item, &b);
        }
    }
    json_decref(items);
    *out = str_result(&b);
    return 0;
}

static int filter_minmax(struct jctx *cx, const struct jval *in, const struct jargs *a,
                         struct jval *out, bool want_max)
{
    json_t *items, *sorted;
    struct sort_ctx sc = {cx, a, NULL, arg_bool(jargs_get(a, 0, "case_sensitive"), false), 0};
    const struct jval *attr = jargs_get(a, 1, "attribute");
    if (arg_given(attr) && jval_is_str(attr))
        sc.attribute = json_string_value(attr->json);
    if (as_list(cx, a, in, &items) != 0)
        return -1;
    int rc = sort_array(&sc, items, false, &sorted);
    json_decref(items);
    if (rc != 0)
        return -1;
    size_t n = json_array_size(sorted);
    if (n == 0) {
        *out = jval_undef("No aggregated item, sequence was empty.");
    } else if (want_max) {
        /* max() returns the first of equal maxima; the stable sort put it first among them */
        size_t k = n - 1;
        struct sort_ctx sc2 = sc;
        while (k > 0 &&
               sort_cmp(&sc2, json_array_get(sorted, k - 1), json_array_get(sorted, n - 1)) == 0)
            k--;
        *out = jval_json(json_incref(json_array_get(sorted, k)));
    } else {
        *out = jval_json(json_incref(json_array_get(sorted, 0)));
    }
    json_decref(sorted);
    return 0;
}

static const char *const filter_names[] = {
        "abs",    "attr",       "capitalize", "count",     "d",       "default", "dictsort",
        "e",      "escape",     "first",      "float",     "indent",  "int",     "items",
        "join",   "last",       "length",     "list",      "lower",   "map",     "max",
        "min",    "reject",     "rejectattr", "replace",   "reverse", "round",   "safe",
        "select", "selectattr", "sort",       "string",    "sum",     "title",   "tojson",
        "trim",   "unique",     "upper",      "wordcount", NULL};

static bool filter_exists(const char *name)
{
    for (size_t k = 0; filter_names[k]; k++)
        if (!strcmp(filter_names[k], name))
            return true;
    return false;
}

int jinja_builtin_filter(struct jctx *cx, const char *name, const struct jval *in,
                         const struct jargs *a, struct jval *out)
{
    const struct jval *a0 = jargs_get(a, 0, NULL);
    size_t n, len;
    *out = (struct jval){0};
    if (!filter_exists(name))
        return FAIL(cx, a, "no filter named '%s'", name);
    if (!strcmp(name, "tojson"))
        return filter_tojson(cx, in, a, out);
    if (!strcmp(name, "safe")) {
        *out = jval_copy(in);
        return 0;
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct jval *def = jargs_get(a, 0, "default_value");
        bool boolean = arg_bool(jargs_get(a, 1, "boolean"), false);
        bool use = in->kind == JV_UNDEF || (boolean && !jval_truthy(in));
        *out = use ? (def ? jval_copy(def) : jval_str("", 0)) : jval_copy(in);
        return 0;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (in->kind == JV_UNDEF)
            n = 0;
        else if (is_json(in, JSON_STRING))
            n = jinja_utf8_len(json_string_value(in->json), json_string_length(in->json));
        else if (is_json(in, JSON_ARRAY))
            n = json_array_size(in->json);
        else if (is_json(in, JSON_OBJECT))
            n = json_object_size(in->json);
        else if (in->kind == JV_OBJ && in->obj->kind == JOBJ_LOOP)
            n = in->obj->length;
        else
            return FAIL(cx, a, "object of type '%s' has no len()", jval_type_name(in));
        *out = jval_json(json_integer((json_int_t)n));
        return 0;
    }
    if (!strcmp(name, "string")) {
        char *s = to_str(in, &n);
        *out = jval_str(s, n);
        free(s);
        return 0;
    }
    if (!strcmp(name, "trim") || !strcmp(name, "upper") || !strcmp(name, "lower") ||
        !strcmp(name, "capitalize") || !strcmp(name, "title") || !strcmp(name, "replace") ||
        !strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "wordcount")) {
        char *s = to_str(in, &n);
        int rc = 0;
        if (!strcmp(name, "trim")) {
            const struct jval *chars = jargs_get(a, 0, "chars");
            if (arg_given(chars) && !jval_is_str(chars))
                rc = FAIL(cx, a, "trim characters must be a string");
            else if (arg_given(chars))
                *out = strip_chars(s, n, json_string_value(chars->json),
                                   json_string_length(chars->json), true, true);
            else
                *out = strip_chars(s, n, NULL, 0, true, true);
        } else if (!strcmp(name, "upper")) {
            *out = change_case(s, n, CASE_UPPER);
        } else if (!strcmp(name, "lower")) {
            *out = change_case(s, n, CASE_LOWER);
        } else if (!strcmp(name, "capitalize")) {
            *out = change_case(s, n, CASE_CAPITALIZE);
        } else if (!strcmp(name, "title")) {
            *out = title_filter(s, n);
        } else if (!strcmp(name, "wordcount")) {
            json_t *w = str_split(s, n, NULL, 0, -1, false);
            *out = jval_json(json_integer((json_int_t)json_array_size(w)));
            json_decref(w);
        } else if (!strcmp(name, "replace")) {
            size_t nold, nnew;
            long long count;
            const char *old = arg_str(cx, a, jargs_get(a, 0, "old"), "replace pattern", &nold);
            const char *nw =
                    old ? arg_str(cx, a, jargs_get(a, 1, "new"), "replacement", &nnew) : NULL;
            if (!old || !nw || arg_int(cx, a, jargs_get(a, 2, "count"), -1, &count) != 0)
                rc = -1;
            else
                *out = str_replace(s, n, old, nold, nw, nnew, count);
        } else {
            struct jbuf b = {0};
            for (size_t i = 0; i < n; i++) {
                switch (s[i]) {
                case '&':
                    jbuf_adds(&b, "&amp;");
                    break;
                case '<':
                    jbuf_adds(&b, "&lt;");
                    break;
                case '>':
                    jbuf_adds(&b, "&gt;");
                    break;
                case '"':
                    jbuf_adds(&b, "&#34;");
                    break;
                case '\'':
                    jbuf_adds(&b, "&#39;");
                    break;
                default:
                    jbuf_addc(&b, s[i]);
                }
            }
            *out = str_result(&b);
        }
        free(s);
        return rc;
    }
    if (!strcmp(name, "int"))
        return filter_int(cx, in, a, out, false);
    if (!strcmp(name, "float"))
        return filter_int(cx, in, a, out, true);
    if (!strcmp(name, "abs")) {
        if (is_json(in, JSON_INTEGER)) {
            long long v = json_integer_value(in->json);
            if (v == INT64_MIN)
                return FAIL(cx, a, "integer overflow");
            *out = jval_json(json_integer(v < 0 ? -v : v));
        } else if (is_json(in, JSON_REAL)) {
            *out = jval_json(json_real(fabs(json_real_value(in->json))));
        } else if (in->kind == JV_JSON && json_is_boolean(in->json)) {
            *out = jval_json(json_integer(json_is_true(in->json)));
        } else {
            return FAIL(cx, a, "bad operand type for abs(): '%s'", jval_type_name(in));
        }
        return 0;
    }
    if (!strcmp(name, "round")) {
        long long prec;
        const struct jval *method = jargs_get(a, 1, "method");
        if (arg_int(cx, a, jargs_get(a, 0, "precision"), 0, &prec) != 0)
            return -1;
        if (in->kind != JV_JSON || !(json_is_number(in->json) || json_is_boolean(in->json)))
            return FAIL(cx, a, "round needs a number, got '%s'", jval_type_name(in));
        double d = json_is_boolean(in->json) ? json_is_true(in->json) : json_number_value(in->json);
        double scale = pow(10.0, (double)(prec > 300 ? 300 : prec < -300 ? -300 : prec));
        const char *m = method && jval_is_str(method) ? json_string_value(method->json) : "common";
        double r = !strcmp(m, "floor")  ? floor(d * scale) / scale
                   : !strcmp(m, "ceil") ? ceil(d * scale) / scale
                                        : nearbyint(d * scale) / scale;
        if (!strcmp(m, "common") && prec >= 0 && prec <= 300 && isfinite(d)) {
            /* Python's round() rounds the exact binary value half-to-even, as printf does */
            char digits[512];
            snprintf(digits, sizeof digits, "%.*f", (int)prec, d);
            r = strtod(digits, NULL);
        }
        if (is_json(in, JSON_INTEGER) && !strcmp(m, "common"))
            *out = jval_copy(in);
        else
            *out = jval_json(json_real(r));
        return 0;
    }
    if (!strcmp(name, "list")) {
        json_t *l;
        if (as_list(cx, a, in, &l) != 0)
            return -1;
        *out = jval_json(json_copy(l));
        json_decref(l);
        return 0;
    }
    if (!strcmp(name, "items")) {
        if (in->kind == JV_UNDEF) {
            *out = jval_json(json_array());
            return 0;
        }
        if (!is_json(in, JSON_OBJECT))
            return FAIL(cx, a, "Can only get item pairs from a mapping.");
        return jinja_builtin_call_method(
                cx,
                &(struct jobj){.kind = JOBJ_METHOD, .json = in->json, .name = "items", .func = 0},
                a, out);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        json_t *l;
        if (as_list(cx, a, in, &l) != 0)
            return -1;
        n = json_array_size(l);
        if (n == 0)
            *out = jval_undef(name[0] == 'f' ? "No first item, sequence was empty."
                                             : "No last item, sequence was empty.");
        else
            *out = jval_json(json_incref(json_array_get(l, name[0] == 'f' ? 0 : n - 1)));
        json_decref(l);
        return 0;
    }
    if (!strcmp(name, "reverse")) {
        if (jval_is_str(in)) {
            const char *s = json_string_value(in->json);
            n = json_string_length(in->json);
            json_t *chars;
            if (as_list(cx, a, in, &chars) != 0)
                return -1;
            struct jbuf b = {0};
            for (size_t i = json_array_size(chars); i-- > 0;)
                jbuf_add(&b, json_string_value(json_array_get(chars, i)),
                         json_string_length(json_array_get(chars, i)));
            (void)s;
            json_decref(chars);
            *out = str_result(&b);
            return 0;
        }
        json_t *l, *r = json_array();
        if (as_list(cx, a, in, &l) != 0) {
            json_decref(r);
            return -1;
        }
        for (size_t i = json_array_size(l); i-- > 0;)
            json_array_append(r, json_array_get(l, i));
        json_decref(l);
        *out = jval_json(r);
        return 0;
    }
    if (!strcmp(name, "join"))
        return filter_join(cx, in, a, out);
    if (!strcmp(name, "map"))
        return filter_map(cx, in, a, out);
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return filter_select(cx, in, a, out, false, name[0] == 's');
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return filter_select(cx, in, a, out, true, name[0] == 's');
    if (!strcmp(name, "attr")) {
        const char *attr = arg_str(cx, a, a0, "attribute name", &len);
        if (!attr)
            return -1;
        return jinja_eval_getattr(cx, in, attr, a->line, a->col, out);
    }
    if (!strcmp(name, "sort") || !strcmp(name, "unique") || !strcmp(name, "dictsort")) {
        json_t *items, *sorted;
        bool is_sort = !strcmp(name, "sort"), is_dict = !strcmp(name, "dictsort");
        struct sort_ctx sc = {cx, a, NULL, false, 0};
        bool reverse = false;
        const struct jval *attr;
        if (is_sort) {
            reverse = arg_bool(jargs_get(a, 0, "reverse"), false);
            sc.case_sensitive = arg_bool(jargs_get(a, 1, "case_sensitive"), false);
            attr = jargs_get(a, 2, "attribute");
        } else if (is_dict) {
            sc.case_sensitive = arg_bool(jargs_get(a, 0, "case_sensitive"), false);
            const struct jval *by = jargs_get(a, 1, "by");
            reverse = arg_bool(jargs_get(a, 2, "reverse"), false);
            attr = NULL;
            sc.attribute = by && jval_is_str(by) && !strcmp(json_string_value(by->json), "value")
                                   ? "1"
                                   : "0";
        } else {
            sc.case_sensitive = arg_bool(jargs_get(a, 0, "case_sensitive"), false);
            attr = jargs_get(a, 1, "attribute");
        }
        if (arg_given(attr) && jval_is_str(attr))
            sc.attribute = json_string_value(attr->json);
        if (is_dict) {
            if (!is_json(in, JSON_OBJECT))
                return FAIL(cx, a, "dictsort needs a mapping");
            struct jargs none = {.line = a->line, .col = a->col};
            struct jval pairs;
            if (jinja_builtin_call_method(
                        cx, &(struct jobj){.kind = JOBJ_METHOD, .json = in->json, .name = "items"},
                        &none, &pairs) != 0)
                return -1;
            items = json_incref(pairs.json);
            jval_drop(&pairs);
        } else if (as_list(cx, a, in, &items) != 0) {
            return -1;
        }
        if (!strcmp(name, "unique")) {
            json_t *res = json_array(), *seen = json_array();
            for (size_t i = 0; i < json_array_size(items); i++) {
                json_t *it = json_array_get(items, i), *k = sort_key(&sc, it);
                bool dup = false;
                for (size_t j = 0; j < json_array_size(seen) && !dup; j++)
                    dup = jinja_value_json_equal(json_array_get(seen, j), k);
                if (!dup) {
                    json_array_append(seen, k);
                    json_array_append(res, it);
                }
                json_decref(k);
            }
            json_decref(seen);
            json_decref(items);
            if (sc.failed) {
                json_decref(res);
                return -1;
            }
            *out = jval_json(res);
            return 0;
        }
        int rc = sort_array(&sc, items, reverse, &sorted);
        json_decref(items);
        if (rc != 0)
            return -1;
        *out = jval_json(sorted);
        return 0;
    }
    if (!strcmp(name, "sum")) {
        json_t *items;
        const struct jval *attr = jargs_get(a, 0, "attribute"), *start = jargs_get(a, 1, "start");
        long long isum = 0;
        double dsum = 0;
        bool is_real = false;
        if (start && start->kind == JV_JSON && json_is_real(start->json)) {
            is_real = true;
            dsum = json_real_value(start->json);
        } else if (arg_int(cx, a, start, 0, &isum) != 0) {
            return -1;
        }
        if (as_list(cx, a, in, &items) != 0)
            return -1;
        for (size_t i = 0; i < json_array_size(items); i++) {
            struct jval item = {JV_JSON, json_array_get(items, i), NULL}, v;
            if (arg_given(attr) && jval_is_str(attr)) {
                if (attr_path(cx, &item, json_string_value(attr->json), a->line, a->col, &v) != 0) {
                    json_decref(items);
                    return -1;
                }
            } else {
                v = jval_copy(&item);
            }
            bool ok = v.kind == JV_JSON && (json_is_number(v.json) || json_is_boolean(v.json));
            if (ok && json_is_real(v.json)) {
                if (!is_real)
                    dsum = (double)isum;
                is_real = true;
                dsum += json_real_value(v.json);
            } else if (ok) {
                long long x =
                        json_is_integer(v.json) ? json_integer_value(v.json) : json_is_true(v.json);
                if (is_real)
                    dsum += (double)x;
                else if (__builtin_add_overflow(isum, x, &isum))
                    ok = false;
            }
            jval_drop(&v);
            if (!ok) {
                json_decref(items);
                return FAIL(cx, a, "sum needs numbers");
            }
        }
        json_decref(items);
        *out = is_real ? jval_json(json_real(dsum)) : jval_json(json_integer(isum));
        return 0;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max"))
        return filter_minmax(cx, in, a, out, name[1] == 'a');
    if (!strcmp(name, "indent"))
        return filter_indent(cx, in, a, out);
    return FAIL(cx, a, "no filter named '%s'", name);
}

/* ---- global functions ---------------------------------------------------------------------- */
enum { FN_RANGE = 1, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME };

static const struct {
    const char *name;
    int id;
} globals[] = {{"range", FN_RANGE},
               {"namespace", FN_NAMESPACE},
               {"dict", FN_DICT},
               {"raise_exception", FN_RAISE},
               {"strftime_now", FN_STRFTIME}};

struct jval jinja_builtin_global(const char *name)
{
    for (size_t k = 0; k < sizeof globals / sizeof *globals; k++)
        if (!strcmp(globals[k].name, name)) {
            struct jobj *o = jobj_new(JOBJ_FUNC);
            o->func = globals[k].id;
            o->name = globals[k].name;
            return jval_obj(o);
        }
    return jval_undef(NULL);
}

static int kwargs_object(struct jctx *cx, const struct jargs *a, json_t *obj)
{
    for (size_t k = 0; k < a->nkw; k++) {
        if (a->kwv[k].kind == JV_OBJ)
            return FAIL(cx, a, "this value cannot be stored in a namespace or dict");
        if (a->kwv[k].kind == JV_JSON)
            json_object_set(obj, a->kwn[k], a->kwv[k].json);
    }
    return 0;
}

int jinja_builtin_call_func(struct jctx *cx, int func, const struct jargs *a, struct jval *out)
{
    const struct jval *a0 = jargs_get(a, 0, NULL);
    switch (func) {
    case FN_RAISE: {
        size_t n;
        char *msg = a0 ? to_str(a0, &n) : xstrdup("raise_exception() called");
        jctx_fail(cx, JINJA_ERROR_RAISED, a->line, a->col, "%s", msg);
        free(msg);
        return -1;
    }
    case FN_STRFTIME: {
        size_t len;
        const char *fmt = arg_str(cx, a, a0, "strftime_now format", &len);
        if (!fmt)
            return -1;
        time_t now = cx->tmpl->opt.now ? cx->tmpl->opt.now : time(NULL);
        struct tm tm;
        char buf[512];
        localtime_r(&now, &tm);
        size_t n = len < 200 ? strftime(buf, sizeof buf, fmt, &tm) : 0;
        if (len > 0 && n == 0)
            return FAIL(cx, a, "strftime_now format too long");
        *out = jval_str(buf, n);
        return 0;
    }
    case FN_NAMESPACE:
    case FN_DICT: {
        json_t *obj = json_object();
        if (a0) {
            if (!is_json(a0, JSON_OBJECT) || a->npos > 1) {
                json_decref(obj);
                return FAIL(cx, a, "%s() takes a mapping and keyword arguments",
                            func == FN_DICT ? "dict" : "namespace");
            }
            json_object_update(obj, a0->json);
        }
        if (kwargs_object(cx, a, obj) != 0) {
            json_decref(obj);
            return -1;
        }
        if (func == FN_DICT) {
            *out = jval_json(obj);
        } else {
            struct jobj *ns = jobj_new(JOBJ_NAMESPACE);
            ns->json = obj;
            *out = jval_obj(ns);
        }
        return 0;
    }
    case FN_RANGE: {
        long long v[3] = {0, 0, 1}, start, stop, stepv;
        if (a->npos < 1 || a->npos > 3)
            return FAIL(cx, a, "range expected 1 to 3 arguments, got %zu", a->npos);
        for (size_t k = 0; k < a->npos; k++)
            if (arg_int(cx, a, &a->pos[k], 0, &v[k]) != 0)
                return -1;
        if (a->npos == 1) {
            start = 0;
            stop = v[0];
            stepv = 1;
        } else {
            start = v[0];
            stop = v[1];
            stepv = a->npos == 3 ? v[2] : 1;
        }
        if (stepv == 0)
            return FAIL(cx, a, "range() arg 3 must not be zero");
        double count = ((double)stop - (double)start) / (double)stepv;
        if (count > (double)cx->tmpl->opt.max_steps)
            return jctx_fail(cx, JINJA_ERROR_LIMIT, a->line, a->col, "range too large");
        json_t *r = json_array();
        for (long long i = start; stepv > 0 ? i < stop : i > stop; i += stepv) {
            json_array_append_new(r, json_integer(i));
            if (__builtin_add_overflow(i, stepv, &(long long){0}))
                break;
        }
        *out = jval_json(r);
        return 0;
    }
    }
    return FAIL(cx, a, "unknown function");
}

/* ---- methods ------------------------------------------------------------------------------- */
static const char *const str_methods[] = {
        "strip",    "lstrip",  "rstrip",  "split",   "rsplit",     "startswith",
        "endswith", "replace", "upper",   "lower",   "title",      "capitalize",
        "find",     "rfind",   "count",   "join",    "splitlines", "isdigit",
        "isalpha",  "isspace", "isalnum", "islower", "isupper",    NULL};
static const char *const dict_methods[] = {"items", "keys", "values", "get", NULL};

bool jinja_builtin_method(const json_t *recv, const char *name, struct jval *out)
{
    const char *const *table = json_is_string(recv)   ? str_methods
                               : json_is_object(recv) ? dict_methods
                                                      : NULL;
    for (size_t k = 0; table && table[k]; k++)
        if (!strcmp(table[k], name)) {
            struct jobj *m = jobj_new(JOBJ_METHOD);
            m->json = json_incref((json_t *)recv);
            m->name = table[k];
            *out = jval_obj(m);
            return true;
        }
    return false;
}

static int call_dict_method(struct jctx *cx, const struct jobj *m, const struct jargs *a,
                            struct jval *out)
{
    json_t *d = m->json, *v, *r;
    const char *k;
    if (!strcmp(m->name, "get")) {
        const struct jval *key = jargs_get(a, 0, "key"), *def = jargs_get(a, 1, "default");
        json_t *found =
                key && jval_is_str(key) ? json_object_get(d, json_string_value(key->json)) : NULL;
        *out = found ? jval_json(json_incref(found))
               : def ? jval_copy(def)
                     : jval_json(json_null());
        return 0;
    }
    r = json_array();
    json_object_foreach(d, k, v)
    {
        if (!strcmp(m->name, "keys"))
            json_array_append_new(r, json_string(k));
        else if (!strcmp(m->name, "values"))
            json_array_append(r, v);
        else
            json_array_append_new(r, json_pack("[sO]", k, v));
    }
    (void)cx;
    *out = jval_json(r);
    return 0;
}

static bool str_all(const char *s, size_t n, int (*pred)(uint32_t))
{
    size_t pos = 0;
    if (n == 0)
        return false;
    while (pos < n)
        if (!pred(jinja_utf8_next(s, n, &pos)))
            return false;
    return true;
}

static int pred_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}

static int pred_alpha(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

static int pred_alnum(uint32_t c)
{
    return pred_alpha(c) || pred_digit(c);
}

static int pred_space(uint32_t c)
{
    return jinja_is_py_space(c);
}

int jinja_builtin_call_method(struct jctx *cx, const struct jobj *m, const struct jargs *a,
                              struct jval *out)
{
    const char *name = m->name;
    const struct jval *a0 = jargs_get(a, 0, NULL), *a1 = jargs_get(a, 1, NULL);
    size_t len0, len1;
    if (!strcmp(name, "cycle") && json_is_integer(m->json)) {
        if (a->npos == 0)
            return FAIL(cx, a, "no items for cycling given");
        *out = jval_copy(&a->pos[(size_t)json_integer_value(m->json) % a->npos]);
        return 0;
    }
    if (json_is_object(m->json))
        return call_dict_method(cx, m, a, out);
    const char *s = json_string_value(m->json);
    size_t n = json_string_length(m->json);
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        bool left = name[0] != 'r', right = name[0] != 'l';
        if (arg_given(a0)) {
            const char *chars = arg_str(cx, a, a0, "strip characters", &len0);
            if (!chars)
                return -1;
            *out = strip_chars(s, n, chars, len0, left, right);
        } else {
            *out = strip_chars(s, n, NULL, 0, left, right);
        }
        return 0;
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        const struct jval *sep = jargs_get(a, 0, "sep");
        long long maxsplit;
        const char *sp = NULL;
        len0 = 0;
        if (arg_int(cx, a, jargs_get(a, 1, "maxsplit"), -1, &maxsplit) != 0)
            return -1;
        if (arg_given(sep)) {
            if (!(sp = arg_str(cx, a, sep, "separator", &len0)))
                return -1;
            if (len0 == 0)
                return FAIL(cx, a, "empty separator");
        }
        *out = jval_json(str_split(s, n, sp, len0, maxsplit, name[0] == 'r'));
        return 0;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        bool suffix = name[0] == 'e';
        if (a0 && is_json(a0, JSON_ARRAY)) {
            bool r = false;
            for (size_t i = 0; i < json_array_size(a0->json); i++) {
                json_t *p = json_array_get(a0->json, i);
                if (!json_is_string(p))
                    return FAIL(cx, a, "%s arguments must be strings", name);
                r = r || prefix_match(s, n, p, suffix);
            }
            *out = jval_json(json_boolean(r));
            return 0;
        }
        if (!arg_str(cx, a, a0, name, &len0))
            return -1;
        *out = jval_json(json_boolean(prefix_match(s, n, a0->json, suffix)));
        return 0;
    }
    if (!strcmp(name, "replace")) {
        long long count;
        const char *old = arg_str(cx, a, a0, "replace pattern", &len0);
        const char *nw = old ? arg_str(cx, a, a1, "replacement", &len1) : NULL;
        if (!nw || arg_int(cx, a, jargs_get(a, 2, "count"), -1, &count) != 0)
            return -1;
        *out = str_replace(s, n, old, len0, nw, len1, count);
        return 0;
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") ||
        !strcmp(name, "capitalize")) {
        enum casing c = name[0] == 'u'   ? CASE_UPPER
                        : name[0] == 'l' ? CASE_LOWER
                        : name[0] == 't' ? CASE_TITLE
                                         : CASE_CAPITALIZE;
        *out = change_case(s, n, c);
        return 0;
    }
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "count")) {
        const char *sub = arg_str(cx, a, a0, "substring", &len0);
        if (!sub)
            return -1;
        long long r = name[0] == 'c' ? 0 : -1;
        for (size_t i = 0; i + len0 <= n;) {
            if (memcmp(s + i, sub, len0) == 0) {
                if (name[0] == 'c') {
                    r++;
                    i += len0 ? len0 : 1;
                    continue;
                }
                r = (long long)jinja_utf8_len(s, i);
                if (name[0] == 'f')
                    break;
            }
            i++;
        }
        if (name[0] == 'c' && len0 == 0)
            r = (long long)jinja_utf8_len(s, n) + 1;
        *out = jval_json(json_integer(r));
        return 0;
    }
    if (!strcmp(name, "join")) {
        json_t *items;
        struct jbuf b = {0};
        if (!a0)
            return FAIL(cx, a, "join() takes exactly one argument");
        if (as_list(cx, a, a0, &items) != 0)
            return -1;
        for (size_t i = 0; i < json_array_size(items); i++) {
            json_t *it = json_array_get(items, i);
            if (!json_is_string(it)) {
                json_decref(items);
                jbuf_free(&b);
                return FAIL(cx, a, "sequence item %zu: expected str instance", i);
            }
            if (i)
                jbuf_add(&b, s, n);
            jbuf_add(&b, json_string_value(it), json_string_length(it));
        }
        json_decref(items);
        *out = str_result(&b);
        return 0;
    }
    if (!strcmp(name, "splitlines")) {
        *out = jval_json(str_splitlines(s, n));
        return 0;
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isspace") ||
        !strcmp(name, "isalnum")) {
        int (*pred)(uint32_t) = name[2] == 'd'   ? pred_digit
                                : name[2] == 's' ? pred_space
                                : name[4] == 'n' ? pred_alnum
                                                 : pred_alpha;
        *out = jval_json(json_boolean(str_all(s, n, pred)));
        return 0;
    }
    if (!strcmp(name, "islower") || !strcmp(name, "isupper")) {
        struct jargs none = {.line = a->line, .col = a->col};
        bool r;
        if (jinja_builtin_test(cx, name + 2, &(struct jval){JV_JSON, m->json, NULL}, &none, &r) !=
            0)
            return -1;
        *out = jval_json(json_boolean(r));
        return 0;
    }
    return FAIL(cx, a, "unsupported method '%s'", name);
}
