/*
 * neuron/jinja_eval.c — renders a parsed template: statements, expressions and scoping.
 *
 * Scoping follows jinja2: a for loop gives each iteration a fresh frame (so `set` inside a loop
 * neither leaks out nor survives to the next iteration), a macro call gets a frame whose parent is
 * the frame the macro was defined in (names resolve at call time), and `if` adds no frame.
 * Name lookup walks the frames, then the render context, then the global functions.
 * Every evaluation step and loop iteration counts against max_steps; nesting against max_depth;
 * every buffer against max_output, so a hostile template stops with JINJA_ERROR_LIMIT.
 */
#include "jinja_internal.h"
#include "xalloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FLOW_NORMAL = 0, FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

int jctx_fail(struct jctx *cx, enum jinja_error_kind kind, int line, int col, const char *fmt, ...)
{
    va_list ap;
    if (cx->err->kind != JINJA_ERROR_NONE)
        return -1;
    cx->err->kind = kind;
    cx->err->line = line;
    cx->err->column = col;
    va_start(ap, fmt);
    vsnprintf(cx->err->message, sizeof cx->err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- frames -------------------------------------------------------------------------------- */
static const struct jval *frame_lookup(const struct jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (!strcmp(f->names[i], name))
                return &f->vals[i];
    return NULL;
}

/* Binds name in f itself; v is stolen. */
static void frame_set(struct jframe *f, const char *name, struct jval v)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            jval_drop(&f->vals[i]);
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap;
        f->names = xgrow(f->names, &cap, f->n + 1, sizeof *f->names);
        f->vals = xgrow(f->vals, &f->cap, f->n + 1, sizeof *f->vals);
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static void frame_clear(struct jframe *f)
{
    for (size_t i = 0; i < f->n; i++)
        jval_drop(&f->vals[i]);
    free(f->names);
    free(f->vals);
    f->names = NULL;
    f->vals = NULL;
    f->n = f->cap = 0;
}

static int step(struct jctx *cx, int line, int col)
{
    if (++cx->steps > cx->tmpl->opt.max_steps)
        return jctx_fail(cx, JINJA_ERROR_LIMIT, line, col,
                         "template exceeded its evaluation budget (%llu steps)",
                         (unsigned long long)cx->tmpl->opt.max_steps);
    return 0;
}

static int enter(struct jctx *cx, int line, int col)
{
    if (++cx->depth > cx->tmpl->opt.max_depth) {
        cx->depth--;
        return jctx_fail(cx, JINJA_ERROR_LIMIT, line, col, "template recursion too deep");
    }
    return 0;
}

static int check_size(struct jctx *cx, size_t n, int line, int col)
{
    if (n > cx->tmpl->opt.max_output)
        return jctx_fail(cx, JINJA_ERROR_LIMIT, line, col, "template output exceeds %zu bytes",
                         cx->tmpl->opt.max_output);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------- */
const struct jval *jargs_get(const struct jargs *a, size_t pos, const char *name)
{
    if (pos < a->npos)
        return &a->pos[pos];
    for (size_t i = 0; name && i < a->nkw; i++)
        if (!strcmp(a->kwn[i], name))
            return &a->kwv[i];
    return NULL;
}

static void jargs_free(struct jargs *a)
{
    for (size_t i = 0; i < a->npos; i++)
        jval_drop(&a->pos[i]);
    for (size_t i = 0; i < a->nkw; i++)
        jval_drop(&a->kwv[i]);
    free(a->pos);
    free(a->kwv);
    free(a->kwn);
    memset(a, 0, sizeof *a);
}

static int fail_undefined(struct jctx *cx, const struct jval *v, int line, int col)
{
    if (v->json && json_is_string(v->json))
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "%s", json_string_value(v->json));
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "value is undefined");
}

int jinja_eval_to_list(struct jctx *cx, const struct jval *v, int line, int col, json_t **out)
{
    if (v->kind == JV_UNDEF) {
        *out = json_array();
        return 0;
    }
    if (v->kind == JV_JSON) {
        if (json_is_array(v->json)) {
            *out = json_incref(v->json);
            return 0;
        }
        if (json_is_object(v->json)) {
            const char *k;
            json_t *x;
            *out = json_array();
            json_object_foreach(v->json, k, x) json_array_append_new(*out, json_string(k));
            return 0;
        }
        if (json_is_string(v->json)) {
            const char *s = json_string_value(v->json);
            size_t n = json_string_length(v->json), pos = 0;
            *out = json_array();
            while (pos < n) {
                size_t start = pos;
                jinja_utf8_next(s, n, &pos);
                json_array_append_new(*out, json_stringn_nocheck(s + start, pos - start));
            }
            return 0;
        }
    }
    if (v->kind == JV_OBJ && v->obj->kind == JOBJ_LOOP) {
        *out = json_incref(v->obj->json);
        return 0;
    }
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "'%s' object is not iterable",
                     jval_type_name(v));
}

/* ---- attribute and item access ----------------------------------------------------------- */
static int loop_attr(const struct jobj *o, const char *name, struct jval *out)
{
    size_t i = o->index, n = o->length;
    if (!strcmp(name, "index"))
        *out = jval_json(json_integer((json_int_t)i + 1));
    else if (!strcmp(name, "index0"))
        *out = jval_json(json_integer((json_int_t)i));
    else if (!strcmp(name, "revindex"))
        *out = jval_json(json_integer((json_int_t)(n - i)));
    else if (!strcmp(name, "revindex0"))
        *out = jval_json(json_integer((json_int_t)(n - i - 1)));
    else if (!strcmp(name, "first"))
        *out = jval_json(json_boolean(i == 0));
    else if (!strcmp(name, "last"))
        *out = jval_json(json_boolean(i + 1 == n));
    else if (!strcmp(name, "length"))
        *out = jval_json(json_integer((json_int_t)n));
    else if (!strcmp(name, "depth"))
        *out = jval_json(json_integer(1));
    else if (!strcmp(name, "depth0"))
        *out = jval_json(json_integer(0));
    else if (!strcmp(name, "previtem"))
        *out = i > 0 ? jval_json(json_incref(json_array_get(o->json, i - 1)))
                     : jval_undef("there is no previous item");
    else if (!strcmp(name, "nextitem"))
        *out = i + 1 < n ? jval_json(json_incref(json_array_get(o->json, i + 1)))
                         : jval_undef("there is no next item");
    else if (!strcmp(name, "cycle")) {
        struct jobj *m = jobj_new(JOBJ_METHOD);
        m->json = json_integer((json_int_t)i);
        m->name = "cycle";
        *out = jval_obj(m);
    } else
        *out = jval_undef("'LoopContext object' has no such attribute");
    return 0;
}

static void missing_attr(const struct jval *obj, const char *name, struct jval *out)
{
    char msg[256];
    snprintf(msg, sizeof msg, "'%s object' has no attribute '%s'", jval_type_name(obj), name);
    *out = jval_undef(msg);
}

int jinja_eval_getattr(struct jctx *cx, const struct jval *obj, const char *name, int line, int col,
                       struct jval *out)
{
    if (obj->kind == JV_UNDEF)
        return fail_undefined(cx, obj, line, col);
    if (obj->kind == JV_OBJ) {
        if (obj->obj->kind == JOBJ_LOOP)
            return loop_attr(obj->obj, name, out);
        if (obj->obj->kind == JOBJ_NAMESPACE) {
            json_t *v = json_object_get(obj->obj->json, name);
            if (v)
                *out = jval_json(json_incref(v));
            else
                missing_attr(obj, name, out);
            return 0;
        }
        missing_attr(obj, name, out);
        return 0;
    }
    if (jinja_builtin_method(obj->json, name, out))
        return 0;
    if (json_is_object(obj->json)) {
        json_t *v = json_object_get(obj->json, name);
        if (v) {
            *out = jval_json(json_incref(v));
            return 0;
        }
    }
    missing_attr(obj, name, out);
    return 0;
}

static bool index_of(const struct jval *key, size_t len, size_t *idx)
{
    long long i;
    if (key->kind != JV_JSON)
        return false;
    if (json_is_integer(key->json))
        i = json_integer_value(key->json);
    else if (json_is_boolean(key->json))
        i = json_is_true(key->json);
    else
        return false;
    if (i < 0)
        i += (long long)len;
    if (i < 0 || (unsigned long long)i >= len)
        return false;
    *idx = (size_t)i;
    return true;
}

/* Byte offset of code point index cp in s (n bytes); n when past the end. */
static size_t utf8_offset(const char *s, size_t n, size_t cp)
{
    size_t pos = 0;
    while (cp-- > 0 && pos < n)
        jinja_utf8_next(s, n, &pos);
    return pos;
}

int jinja_eval_getitem(struct jctx *cx, const struct jval *obj, const struct jval *key, int line,
                       int col, struct jval *out)
{
    size_t idx;
    if (obj->kind == JV_UNDEF)
        return fail_undefined(cx, obj, line, col);
    if (obj->kind == JV_JSON) {
        json_t *j = obj->json;
        if (json_is_object(j) && key->kind == JV_JSON && json_is_string(key->json)) {
            json_t *v = json_object_get(j, json_string_value(key->json));
            if (v) {
                *out = jval_json(json_incref(v));
                return 0;
            }
        } else if (json_is_array(j) && index_of(key, json_array_size(j), &idx)) {
            *out = jval_json(json_incref(json_array_get(j, idx)));
            return 0;
        } else if (json_is_string(j)) {
            const char *s = json_string_value(j);
            size_t n = json_string_length(j);
            if (index_of(key, jinja_utf8_len(s, n), &idx)) {
                size_t a = utf8_offset(s, n, idx), b = a;
                jinja_utf8_next(s, n, &b);
                *out = jval_str(s + a, b - a);
                return 0;
            }
        }
    }
    if (key->kind == JV_JSON && json_is_string(key->json))
        return jinja_eval_getattr(cx, obj, json_string_value(key->json), line, col, out);
    *out = jval_undef("item not found");
    return 0;
}

/* Python slice bounds for a sequence of length n. */
static int slice_bounds(struct jctx *cx, const struct jval *parts, size_t n, long long *start,
                        long long *stop, long long *stepv, int line, int col)
{
    long long v[3];
    bool given[3];
    for (int k = 0; k < 3; k++) {
        const struct jval *p = &parts[k];
        given[k] = !(p->kind == JV_UNDEF || (p->kind == JV_JSON && json_is_null(p->json)));
        if (!given[k])
            continue;
        if (p->kind != JV_JSON || !(json_is_integer(p->json) || json_is_boolean(p->json)))
            return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col,
                             "slice indices must be integers or None");
        v[k] = json_is_integer(p->json) ? json_integer_value(p->json) : json_is_true(p->json);
    }
    long long len = (long long)n;
    *stepv = given[2] ? v[2] : 1;
    if (*stepv == 0)
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "slice step cannot be zero");
    if (*stepv > 0) {
        *start = given[0] ? v[0] : 0;
        *stop = given[1] ? v[1] : len;
        if (*start < 0)
            *start = *start + len < 0 ? 0 : *start + len;
        if (*start > len)
            *start = len;
        if (*stop < 0)
            *stop = *stop + len < 0 ? 0 : *stop + len;
        if (*stop > len)
            *stop = len;
    } else {
        *start = given[0] ? v[0] : len - 1;
        *stop = given[1] ? v[1] : -1 - len;
        if (*start < 0)
            *start = *start + len < 0 ? -1 : *start + len;
        if (*start >= len)
            *start = len - 1;
        if (*stop < 0)
            *stop = *stop + len < 0 ? -1 : *stop + len;
        if (*stop >= len)
            *stop = len - 1;
    }
    return 0;
}

static int do_slice(struct jctx *cx, const struct jval *obj, const struct jval *parts, int line,
                    int col, struct jval *out)
{
    long long a, b, st;
    if (obj->kind == JV_UNDEF)
        return fail_undefined(cx, obj, line, col);
    if (obj->kind == JV_JSON && json_is_array(obj->json)) {
        json_t *arr = obj->json, *res = json_array();
        if (slice_bounds(cx, parts, json_array_size(arr), &a, &b, &st, line, col) != 0) {
            json_decref(res);
            return -1;
        }
        for (long long i = a; st > 0 ? i < b : i > b; i += st)
            json_array_append(res, json_array_get(arr, (size_t)i));
        *out = jval_json(res);
        return 0;
    }
    if (obj->kind == JV_JSON && json_is_string(obj->json)) {
        const char *s = json_string_value(obj->json);
        size_t n = json_string_length(obj->json), ncp = jinja_utf8_len(s, n), pos = 0;
        if (slice_bounds(cx, parts, ncp, &a, &b, &st, line, col) != 0)
            return -1;
        size_t *offs = xmalloc((ncp + 1) * sizeof *offs);
        for (size_t i = 0; i < ncp; i++) {
            offs[i] = pos;
            jinja_utf8_next(s, n, &pos);
        }
        offs[ncp] = n;
        struct jbuf r = {0};
        for (long long i = a; st > 0 ? i < b : i > b; i += st)
            jbuf_add(&r, s + offs[i], offs[i + 1] - offs[i]);
        free(offs);
        *out = jval_str(r.p, r.len);
        jbuf_free(&r);
        return 0;
    }
    *out = jval_undef("object cannot be sliced");
    return 0;
}

/* ---- operators ----------------------------------------------------------------------------- */
static bool as_number(const struct jval *v, long long *i, double *d, bool *is_int)
{
    if (v->kind != JV_JSON)
        return false;
    if (json_is_integer(v->json) || json_is_boolean(v->json)) {
        *i = json_is_integer(v->json) ? json_integer_value(v->json) : json_is_true(v->json);
        *d = (double)*i;
        *is_int = true;
        return true;
    }
    if (json_is_real(v->json)) {
        *d = json_real_value(v->json);
        *is_int = false;
        return true;
    }
    return false;
}

static int real_result(struct jctx *cx, double d, int line, int col, struct jval *out)
{
    json_t *j = json_real(d);
    if (!j)
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "float result out of range");
    *out = jval_json(j);
    return 0;
}

static int repeat(struct jctx *cx, const struct jval *seq, long long times, int line, int col,
                  struct jval *out)
{
    if (times < 0)
        times = 0;
    if (json_is_string(seq->json)) {
        size_t n = json_string_length(seq->json);
        if (n && (unsigned long long)times > cx->tmpl->opt.max_output / n)
            return check_size(cx, cx->tmpl->opt.max_output + 1, line, col);
        struct jbuf b = {0};
        for (long long k = 0; k < times; k++)
            jbuf_add(&b, json_string_value(seq->json), n);
        *out = jval_str(b.p, b.len);
        jbuf_free(&b);
        return 0;
    }
    size_t n = json_array_size(seq->json);
    if (n && (unsigned long long)times > cx->tmpl->opt.max_output / n)
        return check_size(cx, cx->tmpl->opt.max_output + 1, line, col);
    json_t *r = json_array();
    for (long long k = 0; k < times; k++)
        json_array_extend(r, seq->json);
    *out = jval_json(r);
    return 0;
}

static const char *op_symbol(int op)
{
    static const char *const names[] = {"",   "+",  "-", "*",  "/", "//", "%",  "**",    "~",
                                        "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    return op > 0 && op < (int)(sizeof names / sizeof *names) ? names[op] : "?";
}

static int binary_op(struct jctx *cx, int op, const struct jval *a, const struct jval *b, int line,
                     int col, struct jval *out)
{
    long long ia, ib, r;
    double da, db;
    bool inta, intb;
    if (op == JOP_CONCAT) {
        struct jbuf s = {0};
        jval_write_str(a, &s);
        jval_write_str(b, &s);
        int rc = check_size(cx, s.len, line, col);
        if (rc == 0)
            *out = jval_str(s.p, s.len);
        jbuf_free(&s);
        return rc;
    }
    if (a->kind == JV_UNDEF)
        return fail_undefined(cx, a, line, col);
    if (b->kind == JV_UNDEF)
        return fail_undefined(cx, b, line, col);
    if (as_number(a, &ia, &da, &inta) && as_number(b, &ib, &db, &intb)) {
        bool ints = inta && intb;
        switch (op) {
        case JOP_ADD:
            if (!ints)
                return real_result(cx, da + db, line, col, out);
            if (__builtin_add_overflow(ia, ib, &r))
                goto overflow;
            *out = jval_json(json_integer(r));
            return 0;
        case JOP_SUB:
            if (!ints)
                return real_result(cx, da - db, line, col, out);
            if (__builtin_sub_overflow(ia, ib, &r))
                goto overflow;
            *out = jval_json(json_integer(r));
            return 0;
        case JOP_MUL:
            if (!ints)
                return real_result(cx, da * db, line, col, out);
            if (__builtin_mul_overflow(ia, ib, &r))
                goto overflow;
            *out = jval_json(json_integer(r));
            return 0;
        case JOP_DIV:
            if (db == 0)
                goto divzero;
            return real_result(cx, da / db, line, col, out);
        case JOP_FLOORDIV:
        case JOP_MOD:
            if (ints) {
                if (ib == 0)
                    goto divzero;
                if (ia == INT64_MIN && ib == -1)
                    goto overflow;
                long long q = ia / ib, m = ia % ib;
                if (m != 0 && ((m < 0) != (ib < 0))) {
                    q--;
                    m += ib;
                }
                *out = jval_json(json_integer(op == JOP_MOD ? m : q));
                return 0;
            }
            if (db == 0)
                goto divzero;
            if (op == JOP_FLOORDIV)
                return real_result(cx, floor(da / db), line, col, out);
            double m = fmod(da, db);
            if (m != 0 && ((m < 0) != (db < 0)))
                m += db;
            return real_result(cx, m, line, col, out);
        case JOP_POW:
            if (ints && ib >= 0) {
                long long acc = 1, base = ia, e = ib;
                while (e > 0) {
                    if ((e & 1) && __builtin_mul_overflow(acc, base, &acc))
                        goto overflow;
                    e >>= 1;
                    if (e > 0 && __builtin_mul_overflow(base, base, &base))
                        goto overflow;
                }
                *out = jval_json(json_integer(acc));
                return 0;
            }
            if (da == 0 && db < 0)
                goto divzero;
            return real_result(cx, pow(da, db), line, col, out);
        default:
            break;
        }
    }
    if (a->kind == JV_JSON && b->kind == JV_JSON) {
        json_t *x = a->json, *y = b->json;
        if (op == JOP_ADD && json_is_string(x) && json_is_string(y)) {
            size_t nx = json_string_length(x), ny = json_string_length(y);
            if (check_size(cx, nx + ny, line, col) != 0)
                return -1;
            char *s = xmalloc(nx + ny + 1);
            memcpy(s, json_string_value(x), nx);
            memcpy(s + nx, json_string_value(y), ny);
            *out = jval_str(s, nx + ny);
            free(s);
            return 0;
        }
        if (op == JOP_ADD && json_is_array(x) && json_is_array(y)) {
            json_t *joined = json_copy(x);
            json_array_extend(joined, y);
            *out = jval_json(joined);
            return 0;
        }
        if (op == JOP_MUL && (json_is_string(x) || json_is_array(x)) &&
            (json_is_integer(y) || json_is_boolean(y)))
            return repeat(cx, a, json_is_integer(y) ? json_integer_value(y) : json_is_true(y), line,
                          col, out);
        if (op == JOP_MUL && (json_is_string(y) || json_is_array(y)) &&
            (json_is_integer(x) || json_is_boolean(x)))
            return repeat(cx, b, json_is_integer(x) ? json_integer_value(x) : json_is_true(x), line,
                          col, out);
    }
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col,
                     "unsupported operand type(s) for %s: '%s' and '%s'", op_symbol(op),
                     jval_type_name(a), jval_type_name(b));
overflow:
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "integer overflow in '%s'", op_symbol(op));
divzero:
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "division by zero");
}

static int contains(struct jctx *cx, const struct jval *item, const struct jval *seq, int line,
                    int col, bool *out)
{
    *out = false;
    if (seq->kind == JV_UNDEF)
        return 0;
    if (seq->kind == JV_JSON) {
        json_t *s = seq->json;
        if (json_is_string(s)) {
            if (!jval_is_str(item))
                return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col,
                                 "'in <string>' requires string as left operand, not %s",
                                 jval_type_name(item));
            size_t n = json_string_length(item->json);
            *out = n == 0 || memmem(json_string_value(s), json_string_length(s),
                                    json_string_value(item->json), n) != NULL;
            return 0;
        }
        if (json_is_array(s)) {
            for (size_t i = 0; i < json_array_size(s); i++) {
                struct jval e = {JV_JSON, json_array_get(s, i), NULL};
                if (jval_equal(item, &e)) {
                    *out = true;
                    break;
                }
            }
            return 0;
        }
        if (json_is_object(s)) {
            *out = jval_is_str(item) && json_object_get(s, json_string_value(item->json));
            return 0;
        }
    }
    if (seq->kind == JV_OBJ && seq->obj->kind == JOBJ_LOOP) {
        struct jval list = {JV_JSON, seq->obj->json, NULL};
        return contains(cx, item, &list, line, col, out);
    }
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "argument of type '%s' is not iterable",
                     jval_type_name(seq));
}

static int compare_op(struct jctx *cx, int op, const struct jval *a, const struct jval *b, int line,
                      int col, bool *out)
{
    int c;
    switch (op) {
    case JOP_EQ:
        *out = jval_equal(a, b);
        return 0;
    case JOP_NE:
        *out = !jval_equal(a, b);
        return 0;
    case JOP_IN:
        return contains(cx, a, b, line, col, out);
    case JOP_NOTIN:
        if (contains(cx, a, b, line, col, out) != 0)
            return -1;
        *out = !*out;
        return 0;
    default:
        break;
    }
    if (a->kind == JV_UNDEF)
        return fail_undefined(cx, a, line, col);
    if (b->kind == JV_UNDEF)
        return fail_undefined(cx, b, line, col);
    if (a->kind != JV_JSON || b->kind != JV_JSON || jinja_value_compare(a->json, b->json, &c) != 0)
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col,
                         "'%s' not supported between instances of '%s' and '%s'", op_symbol(op),
                         jval_type_name(a), jval_type_name(b));
    *out = op == JOP_LT ? c < 0 : op == JOP_LE ? c <= 0 : op == JOP_GT ? c > 0 : c >= 0;
    return 0;
}

/* ---- expressions --------------------------------------------------------------------------- */
static int eval(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out);
static int exec_body(struct jctx *cx, struct jframe *f, const struct jbody *b, struct jbuf *out);

static int eval_args(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jargs *a)
{
    memset(a, 0, sizeof *a);
    a->line = e->line;
    a->col = e->col;
    if (e->nargs == 0)
        return 0;
    a->pos = xcalloc(e->nargs, sizeof *a->pos);
    a->kwv = xcalloc(e->nargs, sizeof *a->kwv);
    a->kwn = xcalloc(e->nargs, sizeof *a->kwn);
    for (size_t i = 0; i < e->nargs; i++) {
        struct jval v;
        if (eval(cx, f, e->args[i], &v) != 0) {
            jargs_free(a);
            return -1;
        }
        if (e->kw && e->kw[i]) {
            a->kwn[a->nkw] = e->kw[i];
            a->kwv[a->nkw++] = v;
        } else {
            a->pos[a->npos++] = v;
        }
    }
    return 0;
}

static int call_value(struct jctx *cx, const struct jval *fn, const struct jargs *args, int line,
                      int col, struct jval *out)
{
    if (fn->kind == JV_UNDEF)
        return fail_undefined(cx, fn, line, col);
    if (fn->kind == JV_OBJ) {
        switch (fn->obj->kind) {
        case JOBJ_MACRO:
            return jinja_eval_call_macro(cx, fn->obj, args, out);
        case JOBJ_FUNC:
            return jinja_builtin_call_func(cx, fn->obj->func, args, out);
        case JOBJ_METHOD:
            return jinja_builtin_call_method(cx, fn->obj, args, out);
        default:
            break;
        }
    }
    return jctx_fail(cx, JINJA_ERROR_RUNTIME, line, col, "'%s' object is not callable",
                     jval_type_name(fn));
}

static int eval_name(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out)
{
    const struct jval *v = frame_lookup(f, e->name);
    if (v) {
        *out = jval_copy(v);
        return 0;
    }
    json_t *j = cx->context ? json_object_get(cx->context, e->name) : NULL;
    if (j) {
        *out = jval_json(json_incref(j));
        return 0;
    }
    *out = jinja_builtin_global(e->name);
    if (out->kind == JV_UNDEF) {
        char msg[256];
        snprintf(msg, sizeof msg, "'%s' is undefined", e->name);
        *out = jval_undef(msg);
    }
    return 0;
}

static int eval_list(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < e->nargs; i++) {
        struct jval v;
        if (eval(cx, f, e->args[i], &v) != 0) {
            json_decref(arr);
            return -1;
        }
        if (v.kind == JV_OBJ) {
            jval_drop(&v);
            json_decref(arr);
            return jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col,
                             "this value cannot be stored in a list");
        }
        if (v.kind == JV_JSON)
            json_array_append_new(arr, v.json);
        else
            json_array_append_new(arr, json_null()); /* undefined; its hint is dropped */
        if (v.kind != JV_JSON)
            jval_drop(&v);
    }
    *out = jval_json(arr);
    return 0;
}

static int eval_dict(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out)
{
    json_t *obj = json_object();
    for (size_t i = 0; i + 1 < e->nargs; i += 2) {
        struct jval k, v;
        if (eval(cx, f, e->args[i], &k) != 0)
            goto fail;
        if (!jval_is_str(&k)) {
            jval_drop(&k);
            jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col, "dict keys must be strings");
            goto fail;
        }
        if (eval(cx, f, e->args[i + 1], &v) != 0) {
            jval_drop(&k);
            goto fail;
        }
        if (v.kind == JV_OBJ) {
            jval_drop(&k);
            jval_drop(&v);
            jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col,
                      "this value cannot be stored in a dict");
            goto fail;
        }
        json_object_setn_new_nocheck(obj, json_string_value(k.json), json_string_length(k.json),
                                     v.kind == JV_JSON ? json_incref(v.json) : json_null());
        jval_drop(&v);
        jval_drop(&k);
    }
    *out = jval_json(obj);
    return 0;
fail:
    json_decref(obj);
    return -1;
}

static int eval_call(struct jctx *cx, struct jframe *f, const struct jexpr *e,
                     const struct jval *caller, struct jval *out)
{
    struct jval fn;
    struct jargs args;
    int rc = -1;
    if (eval(cx, f, e->a, &fn) != 0)
        return -1;
    if (eval_args(cx, f, e, &args) != 0) {
        jval_drop(&fn);
        return -1;
    }
    if (caller) {
        args.kwv = xrealloc(args.kwv, (args.nkw + 1) * sizeof *args.kwv);
        args.kwn = xrealloc(args.kwn, (args.nkw + 1) * sizeof *args.kwn);
        args.kwn[args.nkw] = "caller";
        args.kwv[args.nkw++] = jval_copy(caller);
    }
    rc = call_value(cx, &fn, &args, e->line, e->col, out);
    jargs_free(&args);
    jval_drop(&fn);
    return rc;
}

static int eval_inner(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out)
{
    struct jval a = {0}, b = {0};
    int rc = -1;
    bool t;
    switch (e->kind) {
    case JE_LITERAL:
        *out = jval_json(json_incref(e->lit));
        return 0;
    case JE_NAME:
        return eval_name(cx, f, e, out);
    case JE_LIST:
        return eval_list(cx, f, e, out);
    case JE_DICT:
        return eval_dict(cx, f, e, out);
    case JE_GETATTR:
        if (eval(cx, f, e->a, &a) != 0)
            return -1;
        rc = jinja_eval_getattr(cx, &a, e->name, e->line, e->col, out);
        break;
    case JE_GETITEM:
        if (eval(cx, f, e->a, &a) != 0 || eval(cx, f, e->b, &b) != 0)
            break;
        rc = jinja_eval_getitem(cx, &a, &b, e->line, e->col, out);
        break;
    case JE_SLICE: {
        struct jval parts[3] = {{0}, {0}, {0}};
        if (eval(cx, f, e->a, &a) != 0)
            break;
        rc = 0;
        for (int k = 0; k < 3 && rc == 0; k++)
            if (e->args[k])
                rc = eval(cx, f, e->args[k], &parts[k]);
        if (rc == 0)
            rc = do_slice(cx, &a, parts, e->line, e->col, out);
        for (int k = 0; k < 3; k++)
            jval_drop(&parts[k]);
        break;
    }
    case JE_CALL:
        return eval_call(cx, f, e, NULL, out);
    case JE_FILTER:
    case JE_TEST: {
        struct jargs args;
        if (eval(cx, f, e->a, &a) != 0)
            break;
        if (eval_args(cx, f, e, &args) != 0)
            break;
        if (e->kind == JE_FILTER) {
            rc = jinja_builtin_filter(cx, e->name, &a, &args, out);
        } else {
            rc = jinja_builtin_test(cx, e->name, &a, &args, &t);
            if (rc == 0)
                *out = jval_json(json_boolean(e->op ? !t : t));
        }
        jargs_free(&args);
        break;
    }
    case JE_UNARY: {
        long long i;
        double d;
        bool is_int;
        if (eval(cx, f, e->a, &a) != 0)
            break;
        if (!as_number(&a, &i, &d, &is_int)) {
            if (a.kind == JV_UNDEF)
                rc = fail_undefined(cx, &a, e->line, e->col);
            else
                rc = jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col,
                               "bad operand type for unary %s: '%s'", op_symbol(e->op),
                               jval_type_name(&a));
            break;
        }
        rc = 0;
        if (e->op == JOP_ADD)
            *out = is_int ? jval_json(json_integer(i)) : jval_json(json_real(d));
        else if (is_int && i == INT64_MIN)
            rc = jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col, "integer overflow");
        else
            *out = is_int ? jval_json(json_integer(-i)) : jval_json(json_real(-d));
        break;
    }
    case JE_NOT:
        if (eval(cx, f, e->a, &a) != 0)
            break;
        *out = jval_json(json_boolean(!jval_truthy(&a)));
        rc = 0;
        break;
    case JE_AND:
    case JE_OR:
        if (eval(cx, f, e->a, &a) != 0)
            break;
        if (jval_truthy(&a) == (e->kind == JE_OR)) {
            *out = a;
            return 0;
        }
        jval_drop(&a);
        return eval(cx, f, e->b, out);
    case JE_BINARY:
        if (eval(cx, f, e->a, &a) != 0 || eval(cx, f, e->b, &b) != 0)
            break;
        rc = binary_op(cx, e->op, &a, &b, e->line, e->col, out);
        break;
    case JE_COMPARE: {
        if (eval(cx, f, e->args[0], &a) != 0)
            break;
        t = true;
        rc = 0;
        for (size_t k = 1; k < e->nargs && t; k++) {
            if ((rc = eval(cx, f, e->args[k], &b)) != 0)
                break;
            rc = compare_op(cx, e->ops[k - 1], &a, &b, e->line, e->col, &t);
            jval_drop(&a);
            a = b;
            b = (struct jval){0};
            if (rc != 0)
                break;
        }
        if (rc == 0)
            *out = jval_json(json_boolean(t));
        break;
    }
    case JE_COND:
        if (eval(cx, f, e->b, &a) != 0)
            break;
        if (jval_truthy(&a)) {
            jval_drop(&a);
            return eval(cx, f, e->a, out);
        }
        jval_drop(&a);
        if (e->c)
            return eval(cx, f, e->c, out);
        *out = jval_undef("the inline if-expression evaluated to false and no else was given");
        return 0;
    }
    jval_drop(&a);
    jval_drop(&b);
    return rc;
}

static int eval(struct jctx *cx, struct jframe *f, const struct jexpr *e, struct jval *out)
{
    *out = (struct jval){0};
    if (step(cx, e->line, e->col) != 0 || enter(cx, e->line, e->col) != 0)
        return -1;
    int rc = eval_inner(cx, f, e, out);
    cx->depth--;
    if (rc != 0) {
        jval_drop(out);
        if (cx->err->kind == JINJA_ERROR_NONE)
            jctx_fail(cx, JINJA_ERROR_RUNTIME, e->line, e->col, "evaluation failed");
    }
    return rc;
}

/* ---- macros -------------------------------------------------------------------------------- */
int jinja_eval_call_macro(struct jctx *cx, const struct jobj *m, const struct jargs *args,
                          struct jval *out)
{
    const struct jstmt *s = m->stmt;
    size_t nparams = s->nnames - 1;
    struct jframe fr = {.parent = m->frame};
    struct jbuf buf = {0};
    int rc = -1;
    if (args->npos > nparams)
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, args->line, args->col,
                         "macro '%s' takes not more than %zu argument(s)", s->names[0], nparams);
    if (enter(cx, args->line, args->col) != 0)
        return -1;
    for (size_t k = 0; k < args->nkw; k++) {
        bool known = !strcmp(args->kwn[k], "caller");
        for (size_t p = 0; p < nparams && !known; p++)
            known = !strcmp(args->kwn[k], s->names[p + 1]);
        if (!known) {
            jctx_fail(cx, JINJA_ERROR_RUNTIME, args->line, args->col,
                      "macro '%s' takes no keyword argument '%s'", s->names[0], args->kwn[k]);
            goto out;
        }
        if (!strcmp(args->kwn[k], "caller"))
            frame_set(&fr, "caller", jval_copy(&args->kwv[k]));
    }
    for (size_t p = 0; p < nparams; p++) {
        const char *name = s->names[p + 1];
        const struct jval *v = p < args->npos ? &args->pos[p] : NULL;
        for (size_t k = 0; !v && k < args->nkw; k++)
            if (!strcmp(args->kwn[k], name))
                v = &args->kwv[k];
        if (v) {
            frame_set(&fr, name, jval_copy(v));
        } else if (s->defaults && s->defaults[p + 1]) {
            struct jval d;
            if (eval(cx, &fr, s->defaults[p + 1], &d) != 0)
                goto out;
            frame_set(&fr, name, d);
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "parameter '%s' was not provided", name);
            frame_set(&fr, name, jval_undef(msg));
        }
    }
    rc = exec_body(cx, &fr, &s->body, &buf);
    if (rc > 0)
        rc = jctx_fail(cx, JINJA_ERROR_RUNTIME, s->line, s->col,
                       "break or continue outside a loop");
    if (rc == 0)
        *out = jval_str(buf.p, buf.len);
out:
    cx->depth--;
    frame_clear(&fr);
    jbuf_free(&buf);
    return rc;
}

/* ---- statements ---------------------------------------------------------------------------- */
static int assign_targets(struct jctx *cx, struct jframe *f, const struct jstmt *s, struct jval *v)
{
    if (s->nnames == 1) {
        frame_set(f, s->names[0], *v);
        *v = (struct jval){0};
        return 0;
    }
    json_t *items;
    if (jinja_eval_to_list(cx, v, s->line, s->col, &items) != 0)
        return -1;
    if (json_array_size(items) != s->nnames) {
        json_decref(items);
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, s->line, s->col,
                         "cannot unpack %zu values into %zu names", json_array_size(items),
                         s->nnames);
    }
    for (size_t k = 0; k < s->nnames; k++)
        frame_set(f, s->names[k], jval_json(json_incref(json_array_get(items, k))));
    json_decref(items);
    return 0;
}

/* Namespace attributes are the only values that live across loop iterations, so they are where
 * a template could build ever deeper lists; deep values would overflow the stack of the recursive
 * JSON code (ours and jansson's), hence the bound. Recursion here stops at the limit. */
#define JINJA_MAX_NESTING 1000

static bool json_too_deep(const json_t *j, int budget)
{
    size_t i;
    const char *k;
    json_t *v;
    if (budget <= 0)
        return true;
    if (json_is_array(j)) {
        json_array_foreach(j, i, v) if (json_too_deep(v, budget - 1)) return true;
    } else if (json_is_object(j)) {
        json_object_foreach((json_t *)j, k, v) if (json_too_deep(v, budget - 1)) return true;
    }
    return false;
}

static int exec_set(struct jctx *cx, struct jframe *f, const struct jstmt *s)
{
    struct jval v;
    if (eval(cx, f, s->expr, &v) != 0)
        return -1;
    if (!s->attr) {
        int rc = assign_targets(cx, f, s, &v);
        jval_drop(&v);
        return rc;
    }
    const struct jval *ns = frame_lookup(f, s->names[0]);
    if (!ns || ns->kind != JV_OBJ || ns->obj->kind != JOBJ_NAMESPACE) {
        jval_drop(&v);
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, s->line, s->col,
                         "cannot assign attribute on non-namespace object");
    }
    if (v.kind == JV_OBJ) {
        jval_drop(&v);
        return jctx_fail(cx, JINJA_ERROR_RUNTIME, s->line, s->col,
                         "this value cannot be stored in a namespace");
    }
    if (v.kind == JV_JSON && json_too_deep(v.json, JINJA_MAX_NESTING)) {
        jval_drop(&v);
        return jctx_fail(cx, JINJA_ERROR_LIMIT, s->line, s->col, "value nested too deeply");
    }
    if (v.kind == JV_UNDEF)
        json_object_del(ns->obj->json, s->attr);
    else
        json_object_set(ns->obj->json, s->attr, v.json);
    jval_drop(&v);
    return 0;
}

static int exec_for(struct jctx *cx, struct jframe *f, const struct jstmt *s, struct jbuf *out)
{
    struct jval it;
    json_t *items = NULL, *kept = NULL;
    int rc = -1;
    if (eval(cx, f, s->expr, &it) != 0)
        return -1;
    if (jinja_eval_to_list(cx, &it, s->line, s->col, &items) != 0)
        goto out;
    if (s->cond) {
        kept = json_array();
        for (size_t i = 0; i < json_array_size(items); i++) {
            struct jframe fr = {.parent = f};
            struct jval item = jval_json(json_incref(json_array_get(items, i))), c;
            int r = assign_targets(cx, &fr, s, &item);
            jval_drop(&item);
            if (r == 0)
                r = eval(cx, &fr, s->cond, &c);
            frame_clear(&fr);
            if (r != 0)
                goto out;
            if (jval_truthy(&c))
                json_array_append(kept, json_array_get(items, i));
            jval_drop(&c);
        }
        json_decref(items);
        items = kept;
        kept = NULL;
    }
    size_t n = json_array_size(items);
    struct jobj *loop = jobj_new(JOBJ_LOOP);
    loop->json = json_incref(items);
    loop->length = n;
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct jframe fr = {.parent = f};
        struct jval item = jval_json(json_incref(json_array_get(items, i)));
        if (step(cx, s->line, s->col) != 0) {
            jval_drop(&item);
            rc = -1;
            break;
        }
        loop->index = i;
        loop->refs++;
        frame_set(&fr, "loop", jval_obj(loop));
        rc = assign_targets(cx, &fr, s, &item);
        jval_drop(&item);
        if (rc == 0)
            rc = exec_body(cx, &fr, &s->body, out);
        frame_clear(&fr);
        if (rc == FLOW_CONTINUE)
            rc = 0;
        else if (rc == FLOW_BREAK) {
            rc = 0;
            break;
        }
    }
    jobj_release(loop);
    if (rc == 0 && n == 0)
        rc = exec_body(cx, f, &s->else_body, out);
out:
    json_decref(items);
    json_decref(kept);
    jval_drop(&it);
    return rc;
}

static int exec_stmt(struct jctx *cx, struct jframe *f, const struct jstmt *s, struct jbuf *out)
{
    struct jval v;
    switch (s->kind) {
    case JS_TEXT:
        jbuf_add(out, s->text, s->text_len);
        return 0;
    case JS_PRINT:
        if (eval(cx, f, s->expr, &v) != 0)
            return -1;
        jval_write_str(&v, out);
        jval_drop(&v);
        return 0;
    case JS_IF: {
        if (eval(cx, f, s->expr, &v) != 0)
            return -1;
        bool t = jval_truthy(&v);
        jval_drop(&v);
        return exec_body(cx, f, t ? &s->body : &s->else_body, out);
    }
    case JS_FOR:
        return exec_for(cx, f, s, out);
    case JS_SET:
        return exec_set(cx, f, s);
    case JS_SET_BLOCK: {
        struct jbuf b = {0};
        int rc = exec_body(cx, f, &s->body, &b);
        if (rc == 0)
            frame_set(f, s->names[0], jval_str(b.p, b.len));
        jbuf_free(&b);
        return rc;
    }
    case JS_MACRO: {
        struct jobj *m = jobj_new(JOBJ_MACRO);
        m->stmt = s;
        m->frame = f;
        frame_set(f, s->names[0], jval_obj(m));
        return 0;
    }
    case JS_CALL: {
        struct jobj *m = jobj_new(JOBJ_MACRO);
        struct jval caller = jval_obj(m);
        m->stmt = s;
        m->frame = f;
        int rc = eval_call(cx, f, s->expr, &caller, &v);
        jval_drop(&caller);
        if (rc != 0)
            return -1;
        jval_write_str(&v, out);
        jval_drop(&v);
        return 0;
    }
    case JS_BREAK:
        return FLOW_BREAK;
    case JS_CONTINUE:
        return FLOW_CONTINUE;
    case JS_BLOCK:
        return exec_body(cx, f, &s->body, out);
    case JS_WITH: {
        /* values are evaluated in the enclosing scope, then bound in a new one */
        struct jframe fr = {.parent = f};
        int rc = 0;
        struct jval *vals = xcalloc(s->nnames + 1, sizeof *vals);
        for (size_t k = 0; k < s->nnames && rc == 0; k++)
            rc = eval(cx, f, s->defaults[k], &vals[k]);
        for (size_t k = 0; k < s->nnames; k++) {
            if (rc == 0)
                frame_set(&fr, s->names[k], vals[k]);
            else
                jval_drop(&vals[k]);
        }
        free(vals);
        if (rc == 0)
            rc = exec_body(cx, &fr, &s->body, out);
        frame_clear(&fr);
        return rc;
    }
    }
    return 0;
}

/* Runs statements; returns -1 on error, FLOW_BREAK/FLOW_CONTINUE to unwind to the loop. */
static int exec_body(struct jctx *cx, struct jframe *f, const struct jbody *b, struct jbuf *out)
{
    if (b->n == 0)
        return 0;
    if (enter(cx, b->v[0]->line, b->v[0]->col) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        rc = exec_stmt(cx, f, b->v[i], out);
        if (rc >= 0 && check_size(cx, out->len, b->v[i]->line, b->v[i]->col) != 0)
            rc = -1;
    }
    cx->depth--;
    return rc;
}

int jinja_eval_render(const struct jinja_template *tmpl, const json_t *context, struct jbuf *out,
                      struct jinja_error *err)
{
    struct jframe root = {0};
    struct jctx cx = {.tmpl = tmpl, .context = context, .root = &root, .err = err};
    int rc = exec_body(&cx, &root, &tmpl->root, out);
    if (rc > 0)
        rc = jctx_fail(&cx, JINJA_ERROR_RUNTIME, 0, 0, "break or continue outside a loop");
    frame_clear(&root);
    return rc;
}
