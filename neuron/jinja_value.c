/*
 * neuron/jinja_value.c — the value model of the Jinja interpreter and Python's rules for it.
 *
 * Template values are jansson values (what the context and literals hold), "undefined", or a few
 * interpreter objects (namespace, loop, macro, functions). Printing follows Python: str() of a
 * list or dict is its repr() with single-quoted strings, floats print in their shortest
 * round-tripping form, json.dumps() spacing and escaping match Python's json module.
 */
#include "jinja_internal.h"
#include "xalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ------------------------------------------------------------------------------- */
void jbuf_add(struct jbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t need = b->len + n + 1;
        b->p = xgrow(b->p, &b->cap, need < 64 ? 64 : need, 1);
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jbuf_adds(struct jbuf *b, const char *s)
{
    jbuf_add(b, s, strlen(s));
}

void jbuf_addc(struct jbuf *b, char c)
{
    jbuf_add(b, &c, 1);
}

void jbuf_free(struct jbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */
uint32_t jinja_utf8_next(const char *s, size_t n, size_t *pos)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = *pos;
    uint32_t c = u[i];
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra <= 0 || i + (size_t)extra >= n) {
        *pos = i + 1;
        return c;
    }
    uint32_t cp = c & (0x3Fu >> extra);
    for (int k = 1; k <= extra; k++) {
        if ((u[i + k] & 0xC0) != 0x80) {
            *pos = i + 1;
            return c;
        }
        cp = (cp << 6) | (u[i + k] & 0x3F);
    }
    *pos = i + 1 + (size_t)extra;
    return cp;
}

size_t jinja_utf8_len(const char *s, size_t n)
{
    size_t pos = 0, count = 0;
    while (pos < n) {
        jinja_utf8_next(s, n, &pos);
        count++;
    }
    return count;
}

void jinja_utf8_put(struct jbuf *b, uint32_t cp)
{
    char t[4];
    if (cp < 0x80) {
        t[0] = (char)cp;
        jbuf_add(b, t, 1);
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        jbuf_add(b, t, 2);
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        jbuf_add(b, t, 3);
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        jbuf_add(b, t, 4);
    }
}

/* str.isspace() */
bool jinja_is_py_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* ---- values -------------------------------------------------------------------------------- */
struct jval jval_undef(const char *hint)
{
    struct jval v = {JV_UNDEF, hint ? json_string(hint) : NULL, NULL};
    return v;
}

struct jval jval_json(json_t *steal)
{
    struct jval v = {JV_JSON, steal, NULL};
    return v;
}

struct jval jval_obj(struct jobj *steal)
{
    struct jval v = {JV_OBJ, NULL, steal};
    return v;
}

struct jval jval_str(const char *s, size_t n)
{
    return jval_json(json_stringn_nocheck(s ? s : "", n));
}

struct jval jval_copy(const struct jval *v)
{
    struct jval c = *v;
    json_incref(c.json);
    if (c.obj)
        c.obj->refs++;
    return c;
}

void jval_drop(struct jval *v)
{
    json_decref(v->json);
    jobj_release(v->obj);
    v->kind = JV_UNDEF;
    v->json = NULL;
    v->obj = NULL;
}

struct jobj *jobj_new(enum jobj_kind kind)
{
    struct jobj *o = xcalloc(1, sizeof *o);
    o->refs = 1;
    o->kind = kind;
    return o;
}

void jobj_release(struct jobj *o)
{
    if (!o || --o->refs > 0)
        return;
    json_decref(o->json);
    free(o);
}

const char *jval_type_name(const struct jval *v)
{
    if (v->kind == JV_UNDEF)
        return "Undefined";
    if (v->kind == JV_OBJ) {
        switch (v->obj->kind) {
        case JOBJ_NAMESPACE:
            return "Namespace";
        case JOBJ_LOOP:
            return "LoopContext";
        case JOBJ_MACRO:
            return "Macro";
        default:
            return "function";
        }
    }
    switch (json_typeof(v->json)) {
    case JSON_OBJECT:
        return "dict";
    case JSON_ARRAY:
        return "list";
    case JSON_STRING:
        return "str";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    default:
        return "NoneType";
    }
}

bool jval_truthy(const struct jval *v)
{
    if (v->kind == JV_UNDEF)
        return false;
    if (v->kind == JV_OBJ)
        return true;
    switch (json_typeof(v->json)) {
    case JSON_OBJECT:
        return json_object_size(v->json) > 0;
    case JSON_ARRAY:
        return json_array_size(v->json) > 0;
    case JSON_STRING:
        return json_string_length(v->json) > 0;
    case JSON_INTEGER:
        return json_integer_value(v->json) != 0;
    case JSON_REAL:
        return json_real_value(v->json) != 0.0;
    case JSON_TRUE:
        return true;
    default:
        return false;
    }
}

/* Python repr(float): the shortest digits that read back to the same double, in fixed notation
 * for decimal exponents -4..15 and scientific notation otherwise. */
void jinja_value_float_repr(double d, struct jbuf *b)
{
    char digits[40], out[64];
    if (isnan(d)) {
        jbuf_adds(b, "nan");
        return;
    }
    if (isinf(d)) {
        jbuf_adds(b, d < 0 ? "-inf" : "inf");
        return;
    }
    if (d == 0) {
        jbuf_adds(b, signbit(d) ? "-0.0" : "0.0");
        return;
    }
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(digits, sizeof digits, "%.*e", prec - 1, d);
        if (strtod(digits, NULL) == d)
            break;
    }
    /* digits is [-]D[.DDD]e[+-]XX */
    const char *p = digits;
    bool neg = *p == '-';
    if (neg)
        p++;
    char mant[24];
    size_t nm = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nm + 1 < sizeof mant)
            mant[nm++] = *p;
    mant[nm] = '\0';
    while (nm > 1 && mant[nm - 1] == '0')
        mant[--nm] = '\0';
    int exp = atoi(p + 1);
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int k = 0; k < -exp - 1; k++)
                out[o++] = '0';
            memcpy(out + o, mant, nm);
            o += nm;
        } else {
            for (int k = 0; k <= exp; k++)
                out[o++] = (size_t)k < nm ? mant[k] : '0';
            out[o++] = '.';
            if ((size_t)exp + 1 < nm) {
                memcpy(out + o, mant + exp + 1, nm - (size_t)exp - 1);
                o += nm - (size_t)exp - 1;
            } else {
                out[o++] = '0';
            }
        }
        out[o] = '\0';
    } else {
        out[o++] = mant[0];
        if (nm > 1) {
            out[o++] = '.';
            memcpy(out + o, mant + 1, nm - 1);
            o += nm - 1;
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    jbuf_adds(b, out);
}

/* Code points Python's str.isprintable() rejects (other than ASCII controls), approximately:
 * C1 controls, format characters and separators other than the plain space. */
static bool repr_escapes(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0xA0) || cp == 0xAD || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
           (cp >= 0x205F && cp <= 0x2064) || cp == 0x3000 || cp == 0xFEFF ||
           (cp >= 0xE000 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB);
}

static void repr_string(const char *s, size_t n, struct jbuf *b)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    char t[16];
    jbuf_addc(b, q);
    size_t pos = 0;
    while (pos < n) {
        size_t start = pos;
        uint32_t cp = jinja_utf8_next(s, n, &pos);
        if (cp == (uint32_t)q || cp == '\\') {
            jbuf_addc(b, '\\');
            jbuf_addc(b, (char)cp);
        } else if (cp == '\n') {
            jbuf_adds(b, "\\n");
        } else if (cp == '\r') {
            jbuf_adds(b, "\\r");
        } else if (cp == '\t') {
            jbuf_adds(b, "\\t");
        } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0xFF && repr_escapes(cp))) {
            snprintf(t, sizeof t, "\\x%02x", cp);
            jbuf_adds(b, t);
        } else if (repr_escapes(cp)) {
            snprintf(t, sizeof t, "\\u%04x", cp);
            jbuf_adds(b, t);
        } else {
            jbuf_add(b, s + start, pos - start);
        }
    }
    jbuf_addc(b, q);
}

void jinja_value_repr(const json_t *j, struct jbuf *b)
{
    char t[32];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        bool first = true;
        jbuf_addc(b, '{');
        json_object_foreach((json_t *)j, k, v)
        {
            if (!first)
                jbuf_adds(b, ", ");
            first = false;
            repr_string(k, strlen(k), b);
            jbuf_adds(b, ": ");
            jinja_value_repr(v, b);
        }
        jbuf_addc(b, '}');
        break;
    }
    case JSON_ARRAY:
        jbuf_addc(b, '[');
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i)
                jbuf_adds(b, ", ");
            jinja_value_repr(json_array_get(j, i), b);
        }
        jbuf_addc(b, ']');
        break;
    case JSON_STRING:
        repr_string(json_string_value(j), json_string_length(j), b);
        break;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(j));
        jbuf_adds(b, t);
        break;
    case JSON_REAL:
        jinja_value_float_repr(json_real_value(j), b);
        break;
    case JSON_TRUE:
        jbuf_adds(b, "True");
        break;
    case JSON_FALSE:
        jbuf_adds(b, "False");
        break;
    default:
        jbuf_adds(b, "None");
    }
}

void jval_write_str(const struct jval *v, struct jbuf *b)
{
    if (v->kind == JV_UNDEF)
        return;
    if (v->kind == JV_OBJ) {
        switch (v->obj->kind) {
        case JOBJ_NAMESPACE:
            jbuf_adds(b, "<Namespace ");
            jinja_value_repr(v->obj->json, b);
            jbuf_addc(b, '>');
            break;
        case JOBJ_LOOP: {
            char t[64];
            snprintf(t, sizeof t, "<LoopContext %zu/%zu>", v->obj->index + 1, v->obj->length);
            jbuf_adds(b, t);
            break;
        }
        case JOBJ_MACRO:
            jbuf_adds(b, "<Macro>");
            break;
        default:
            jbuf_adds(b, "<function>");
        }
        return;
    }
    if (json_is_string(v->json))
        jbuf_add(b, json_string_value(v->json), json_string_length(v->json));
    else
        jinja_value_repr(v->json, b);
}

/* ---- json.dumps ------------------------------------------------------------------------------ */
static void dumps_string(const char *s, size_t n, bool ensure_ascii, struct jbuf *b)
{
    char t[16];
    jbuf_addc(b, '"');
    size_t pos = 0;
    while (pos < n) {
        size_t start = pos;
        uint32_t cp = jinja_utf8_next(s, n, &pos);
        switch (cp) {
        case '"':
            jbuf_adds(b, "\\\"");
            continue;
        case '\\':
            jbuf_adds(b, "\\\\");
            continue;
        case '\n':
            jbuf_adds(b, "\\n");
            continue;
        case '\r':
            jbuf_adds(b, "\\r");
            continue;
        case '\t':
            jbuf_adds(b, "\\t");
            continue;
        case '\b':
            jbuf_adds(b, "\\b");
            continue;
        case '\f':
            jbuf_adds(b, "\\f");
            continue;
        default:
            break;
        }
        if (cp < 0x20 || (ensure_ascii && cp > 0x7E && cp != 0x7F)) {
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                snprintf(t, sizeof t, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                snprintf(t, sizeof t, "\\u%04x", cp);
            }
            jbuf_adds(b, t);
        } else {
            jbuf_add(b, s + start, pos - start);
        }
    }
    jbuf_addc(b, '"');
}

struct dumps_opts {
    const char *indent, *item_sep, *key_sep;
    bool sort_keys, ensure_ascii;
};

static void dumps_newline(const struct dumps_opts *o, int level, struct jbuf *b)
{
    jbuf_addc(b, '\n');
    for (int k = 0; k < level; k++)
        jbuf_adds(b, o->indent);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int dumps_value(const json_t *j, const struct dumps_opts *o, int level, struct jbuf *b)
{
    char t[32];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(j), i = 0;
        if (n == 0) {
            jbuf_adds(b, "{}");
            return 0;
        }
        const char **keys = xmalloc(n * sizeof *keys);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) keys[i++] = k;
        if (o->sort_keys)
            qsort(keys, n, sizeof *keys, cmp_str);
        jbuf_addc(b, '{');
        for (i = 0; i < n; i++) {
            if (i)
                jbuf_adds(b, o->item_sep);
            if (o->indent)
                dumps_newline(o, level + 1, b);
            dumps_string(keys[i], strlen(keys[i]), o->ensure_ascii, b);
            jbuf_adds(b, o->key_sep);
            if (dumps_value(json_object_get(j, keys[i]), o, level + 1, b) != 0) {
                free(keys);
                return -1;
            }
        }
        free(keys);
        if (o->indent)
            dumps_newline(o, level, b);
        jbuf_addc(b, '}');
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (n == 0) {
            jbuf_adds(b, "[]");
            return 0;
        }
        jbuf_addc(b, '[');
        for (size_t i = 0; i < n; i++) {
            if (i)
                jbuf_adds(b, o->item_sep);
            if (o->indent)
                dumps_newline(o, level + 1, b);
            if (dumps_value(json_array_get(j, i), o, level + 1, b) != 0)
                return -1;
        }
        if (o->indent)
            dumps_newline(o, level, b);
        jbuf_addc(b, ']');
        return 0;
    }
    case JSON_STRING:
        dumps_string(json_string_value(j), json_string_length(j), o->ensure_ascii, b);
        return 0;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%lld", (long long)json_integer_value(j));
        jbuf_adds(b, t);
        return 0;
    case JSON_REAL:
        if (!isfinite(json_real_value(j)))
            return -1;
        jinja_value_float_repr(json_real_value(j), b);
        return 0;
    case JSON_TRUE:
        jbuf_adds(b, "true");
        return 0;
    case JSON_FALSE:
        jbuf_adds(b, "false");
        return 0;
    default:
        jbuf_adds(b, "null");
        return 0;
    }
}

int jinja_value_dumps(const json_t *j, const char *indent, const char *item_sep,
                      const char *key_sep, bool sort_keys, bool ensure_ascii, struct jbuf *b)
{
    struct dumps_opts o = {indent, item_sep, key_sep, sort_keys, ensure_ascii};
    if (!o.item_sep)
        o.item_sep = indent ? "," : ", ";
    if (!o.key_sep)
        o.key_sep = ": ";
    return dumps_value(j, &o, 0, b);
}

/* ---- comparison ------------------------------------------------------------------------------ */
static bool json_numeric(const json_t *j, double *d, long long *i, bool *is_int)
{
    switch (json_typeof(j)) {
    case JSON_INTEGER:
        *i = json_integer_value(j);
        *d = (double)*i;
        *is_int = true;
        return true;
    case JSON_REAL:
        *d = json_real_value(j);
        *is_int = false;
        return true;
    case JSON_TRUE:
    case JSON_FALSE:
        *i = json_is_true(j);
        *d = (double)*i;
        *is_int = true;
        return true;
    default:
        return false;
    }
}

bool jinja_value_json_equal(const json_t *a, const json_t *b)
{
    double da, db;
    long long ia, ib;
    bool inta, intb;
    if (json_numeric(a, &da, &ia, &inta) && json_numeric(b, &db, &ib, &intb))
        return inta && intb ? ia == ib : da == db;
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jinja_value_json_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return false;
        json_object_foreach((json_t *)a, k, v)
        {
            json_t *w = json_object_get(b, k);
            if (!w || !jinja_value_json_equal(v, w))
                return false;
        }
        return true;
    }
    default:
        return true; /* null == null */
    }
}

bool jval_equal(const struct jval *a, const struct jval *b)
{
    if (a->kind == JV_UNDEF || b->kind == JV_UNDEF)
        return a->kind == b->kind;
    if (a->kind == JV_OBJ || b->kind == JV_OBJ)
        return a->obj == b->obj;
    return jinja_value_json_equal(a->json, b->json);
}

int jinja_value_compare(const json_t *a, const json_t *b, int *cmp)
{
    double da, db;
    long long ia, ib;
    bool inta, intb;
    if (json_numeric(a, &da, &ia, &inta) && json_numeric(b, &db, &ib, &intb)) {
        if (inta && intb)
            *cmp = ia < ib ? -1 : ia > ib;
        else
            *cmp = da < db ? -1 : da > db;
        return 0;
    }
    if (json_is_string(a) && json_is_string(b)) {
        size_t na = json_string_length(a), nb = json_string_length(b);
        int c = memcmp(json_string_value(a), json_string_value(b), na < nb ? na : nb);
        *cmp = c < 0 ? -1 : c > 0 ? 1 : na < nb ? -1 : na > nb;
        return 0;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
            if (jinja_value_json_equal(x, y))
                continue;
            return jinja_value_compare(x, y, cmp);
        }
        *cmp = na < nb ? -1 : na > nb;
        return 0;
    }
    return -1;
}
