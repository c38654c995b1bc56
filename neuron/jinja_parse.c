/*
 * neuron/jinja_parse.c — recursive-descent parser from Jinja tokens to the statement tree.
 *
 * The expression grammar and its precedence follow jinja2's parser: conditional expression, or,
 * and, not, comparisons (chained), + -, ~, * / // %, **, unary - +, then postfix access and calls,
 * then filters and tests (so `a + b|f` filters b only, and `not x is none` negates the test).
 * Nodes live in the template's arena, so an error anywhere needs no unwinding.
 */
#include "jinja_internal.h"
#include "xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const struct jtok *t;
    size_t n, i;
    struct jinja_template *tmpl;
    struct jinja_error *err;
    int depth;
};

/* ---- arena --------------------------------------------------------------------------------- */
static void *arena_track(struct jarena *a, void *p)
{
    a->ptrs = xgrow(a->ptrs, &a->cap, a->n + 1, sizeof *a->ptrs);
    a->ptrs[a->n++] = p;
    return p;
}

static void *arena_alloc(struct parser *P, size_t size)
{
    return arena_track(&P->tmpl->arena, xcalloc(1, size));
}

static char *arena_strndup(struct parser *P, const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return arena_track(&P->tmpl->arena, d);
}

/* Appends item to the arena-owned array *arr of *n elements. Capacity is the next power of two
 * of the count, so an array is reallocated (and its arena slot updated) only log(n) times. */
static void arena_push(struct parser *P, void **arr, size_t *n, const void *item, size_t elsize)
{
    struct jarena *a = &P->tmpl->arena;
    size_t count = *n;
    if (count == 0 || (count & (count - 1)) == 0) {
        void *old = *arr;
        void *nw = xrealloc(old, (count ? count * 2 : 1) * elsize);
        if (old) {
            for (size_t k = a->n; k-- > 0;)
                if (a->ptrs[k] == old) {
                    a->ptrs[k] = nw;
                    break;
                }
        } else {
            arena_track(a, nw);
        }
        *arr = nw;
    }
    memcpy((char *)*arr + count * elsize, item, elsize);
    *n = count + 1;
}

static json_t *arena_json(struct parser *P, json_t *j)
{
    struct jarena *a = &P->tmpl->arena;
    a->jsons = xgrow(a->jsons, &a->capj, a->nj + 1, sizeof *a->jsons);
    a->jsons[a->nj++] = j;
    return j;
}

void jinja_parse_free_arena(struct jarena *a)
{
    for (size_t k = 0; k < a->n; k++)
        free(a->ptrs[k]);
    for (size_t k = 0; k < a->nj; k++)
        json_decref(a->jsons[k]);
    free(a->ptrs);
    free(a->jsons);
    memset(a, 0, sizeof *a);
}

/* ---- token helpers ------------------------------------------------------------------------- */
static const struct jtok *cur(const struct parser *P)
{
    return &P->t[P->i];
}

static const struct jtok *peek(const struct parser *P, size_t k)
{
    size_t j = P->i + k;
    return &P->t[j < P->n ? j : P->n - 1];
}

static void advance(struct parser *P)
{
    if (P->i + 1 < P->n)
        P->i++;
}

static bool is_op(const struct jtok *t, const char *op)
{
    return t->kind == JTOK_OP && strcmp(t->text, op) == 0;
}

static bool is_name(const struct jtok *t, const char *name)
{
    return t->kind == JTOK_NAME && strcmp(t->text, name) == 0;
}

static const char *tok_desc(const struct jtok *t)
{
    switch (t->kind) {
    case JTOK_EOF:
        return "end of template";
    case JTOK_DATA:
        return "template data";
    case JTOK_VAR_BEGIN:
        return "'{{'";
    case JTOK_VAR_END:
        return "'}}'";
    case JTOK_BLOCK_BEGIN:
        return "'{%'";
    case JTOK_BLOCK_END:
        return "'%}'";
    case JTOK_STRING:
        return "string";
    case JTOK_INT:
        return "integer";
    case JTOK_FLOAT:
        return "float";
    default:
        return t->text;
    }
}

__attribute__((format(printf, 3, 4))) static int fail_at(struct parser *P, const struct jtok *t,
                                                         const char *fmt, ...)
{
    va_list ap;
    if (P->err->kind != JINJA_ERROR_NONE)
        return -1;
    P->err->kind = JINJA_ERROR_SYNTAX;
    P->err->line = t->line;
    P->err->column = t->col;
    va_start(ap, fmt);
    vsnprintf(P->err->message, sizeof P->err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int expect_op(struct parser *P, const char *op)
{
    if (!is_op(cur(P), op))
        return fail_at(P, cur(P), "expected '%s', got %s", op, tok_desc(cur(P)));
    advance(P);
    return 0;
}

static int expect_kind(struct parser *P, enum jtok_kind kind, const char *what)
{
    if (cur(P)->kind != kind)
        return fail_at(P, cur(P), "expected %s, got %s", what, tok_desc(cur(P)));
    advance(P);
    return 0;
}

static int enter(struct parser *P)
{
    if (++P->depth > P->tmpl->opt.max_depth) {
        P->err->kind = JINJA_ERROR_NONE;
        fail_at(P, cur(P), "template nested too deeply");
        P->err->kind = JINJA_ERROR_LIMIT;
        return -1;
    }
    return 0;
}

static struct jexpr *node(struct parser *P, enum jexpr_kind kind, const struct jtok *at)
{
    struct jexpr *e = arena_alloc(P, sizeof *e);
    e->kind = kind;
    e->line = at->line;
    e->col = at->col;
    return e;
}

static void add_arg(struct parser *P, struct jexpr *e, struct jexpr *arg, const char *kw)
{
    size_t n = e->nargs;
    if (kw || e->kw) {
        /* keyword names are kept in a parallel array created on first use */
        if (!e->kw) {
            size_t k = 0;
            for (size_t j = 0; j < n; j++) {
                char *none = NULL;
                arena_push(P, (void **)&e->kw, &k, &none, sizeof none);
            }
        }
        size_t k = n;
        char *name = kw ? arena_strndup(P, kw, strlen(kw)) : NULL;
        arena_push(P, (void **)&e->kw, &k, &name, sizeof name);
    }
    arena_push(P, (void **)&e->args, &e->nargs, &arg, sizeof arg);
}

/* ---- expressions --------------------------------------------------------------------------- */
static struct jexpr *parse_expression(struct parser *P, bool with_condexpr);
static struct jexpr *parse_unary(struct parser *P, bool with_filter);
static struct jexpr *parse_tuple(struct parser *P, bool with_condexpr, bool explicit_parens);

static int parse_call_args(struct parser *P, struct jexpr *e)
{
    if (expect_op(P, "(") != 0)
        return -1;
    while (!is_op(cur(P), ")")) {
        if (e->nargs > 0 && expect_op(P, ",") != 0)
            return -1;
        if (is_op(cur(P), ")"))
            break;
        const char *kw = NULL;
        if (cur(P)->kind == JTOK_NAME && is_op(peek(P, 1), "=")) {
            kw = cur(P)->text;
            advance(P);
            advance(P);
        } else if (is_op(cur(P), "*") || is_op(cur(P), "**")) {
            return fail_at(P, cur(P), "*args and **kwargs are not supported");
        } else if (e->kw) {
            for (size_t k = 0; k < e->nargs; k++)
                if (e->kw[k])
                    return fail_at(P, cur(P), "positional argument after keyword argument");
        }
        struct jexpr *arg = parse_expression(P, true);
        if (!arg)
            return -1;
        add_arg(P, e, arg, kw);
    }
    advance(P);
    return 0;
}

static struct jexpr *parse_primary(struct parser *P)
{
    const struct jtok *t = cur(P);
    struct jexpr *e;
    if (enter(P) != 0)
        return NULL;
    switch (t->kind) {
    case JTOK_NAME:
        advance(P);
        if (!strcmp(t->text, "true") || !strcmp(t->text, "True") || !strcmp(t->text, "false") ||
            !strcmp(t->text, "False")) {
            e = node(P, JE_LITERAL, t);
            e->lit = arena_json(P, json_boolean(t->text[0] == 't' || t->text[0] == 'T'));
        } else if (!strcmp(t->text, "none") || !strcmp(t->text, "None")) {
            e = node(P, JE_LITERAL, t);
            e->lit = arena_json(P, json_null());
        } else {
            e = node(P, JE_NAME, t);
            e->name = arena_strndup(P, t->text, t->len);
        }
        break;
    case JTOK_STRING: {
        struct jbuf b = {0};
        while (cur(P)->kind == JTOK_STRING) {
            jbuf_add(&b, cur(P)->text, cur(P)->len);
            advance(P);
        }
        e = node(P, JE_LITERAL, t);
        e->lit = arena_json(P, json_stringn_nocheck(b.p ? b.p : "", b.len));
        jbuf_free(&b);
        break;
    }
    case JTOK_INT:
        advance(P);
        e = node(P, JE_LITERAL, t);
        e->lit = arena_json(P, json_integer(t->ival));
        break;
    case JTOK_FLOAT:
        advance(P);
        e = node(P, JE_LITERAL, t);
        e->lit = arena_json(P, json_real(t->fval));
        if (!e->lit) {
            fail_at(P, t, "float literal out of range");
            e = NULL;
        }
        break;
    case JTOK_OP:
        if (is_op(t, "(")) {
            advance(P);
            e = parse_tuple(P, true, true);
            if (e && expect_op(P, ")") != 0)
                e = NULL;
        } else if (is_op(t, "[")) {
            advance(P);
            e = node(P, JE_LIST, t);
            while (e && !is_op(cur(P), "]")) {
                if (e->nargs > 0 && expect_op(P, ",") != 0) {
                    e = NULL;
                    break;
                }
                if (is_op(cur(P), "]"))
                    break;
                struct jexpr *item = parse_expression(P, true);
                if (!item)
                    e = NULL;
                else
                    add_arg(P, e, item, NULL);
            }
            if (e)
                advance(P);
        } else if (is_op(t, "{")) {
            advance(P);
            e = node(P, JE_DICT, t);
            while (e && !is_op(cur(P), "}")) {
                if (e->nargs > 0 && expect_op(P, ",") != 0) {
                    e = NULL;
                    break;
                }
                if (is_op(cur(P), "}"))
                    break;
                struct jexpr *k = parse_expression(P, true);
                if (!k || expect_op(P, ":") != 0) {
                    e = NULL;
                    break;
                }
                struct jexpr *v = parse_expression(P, true);
                if (!v) {
                    e = NULL;
                    break;
                }
                add_arg(P, e, k, NULL);
                add_arg(P, e, v, NULL);
            }
            if (e)
                advance(P);
        } else {
            fail_at(P, t, "unexpected %s", tok_desc(t));
            e = NULL;
        }
        break;
    default:
        fail_at(P, t, "unexpected %s", tok_desc(t));
        e = NULL;
    }
    P->depth--;
    return e;
}

static struct jexpr *parse_subscript_part(struct parser *P, bool *is_slice)
{
    (void)is_slice;
    if (is_op(cur(P), ":") || is_op(cur(P), "]"))
        return NULL;
    return parse_expression(P, true);
}

static struct jexpr *parse_subscript(struct parser *P, struct jexpr *obj)
{
    const struct jtok *t = cur(P);
    advance(P); /* [ */
    struct jexpr *parts[3] = {NULL, NULL, NULL};
    bool is_slice = false;
    int k = 0;
    for (;;) {
        if (!is_op(cur(P), ":") && !is_op(cur(P), "]")) {
            parts[k] = parse_subscript_part(P, &is_slice);
            if (!parts[k])
                return NULL;
        }
        if (is_op(cur(P), ":") && k < 2) {
            is_slice = true;
            k++;
            advance(P);
            continue;
        }
        break;
    }
    if (expect_op(P, "]") != 0)
        return NULL;
    if (!is_slice) {
        if (!parts[0]) {
            fail_at(P, t, "expected an index");
            return NULL;
        }
        struct jexpr *e = node(P, JE_GETITEM, t);
        e->a = obj;
        e->b = parts[0];
        return e;
    }
    struct jexpr *e = node(P, JE_SLICE, t);
    e->a = obj;
    for (int j = 0; j < 3; j++)
        add_arg(P, e, parts[j], NULL);
    return e;
}

static struct jexpr *parse_postfix(struct parser *P, struct jexpr *e)
{
    while (e) {
        const struct jtok *t = cur(P);
        if (is_op(t, ".")) {
            advance(P);
            const struct jtok *a = cur(P);
            if (a->kind == JTOK_NAME) {
                struct jexpr *g = node(P, JE_GETATTR, t);
                g->a = e;
                g->name = arena_strndup(P, a->text, a->len);
                e = g;
            } else if (a->kind == JTOK_INT) {
                struct jexpr *g = node(P, JE_GETITEM, t);
                g->a = e;
                g->b = node(P, JE_LITERAL, a);
                g->b->lit = arena_json(P, json_integer(a->ival));
                e = g;
            } else {
                fail_at(P, a, "expected an attribute name, got %s", tok_desc(a));
                return NULL;
            }
            advance(P);
        } else if (is_op(t, "[")) {
            e = parse_subscript(P, e);
        } else if (is_op(t, "(")) {
            struct jexpr *c = node(P, JE_CALL, t);
            c->a = e;
            c->line = e->line; /* errors in a call point at what is called */
            c->col = e->col;
            if (parse_call_args(P, c) != 0)
                return NULL;
            e = c;
        } else {
            break;
        }
    }
    return e;
}

static char *parse_dotted_name(struct parser *P)
{
    if (cur(P)->kind != JTOK_NAME) {
        fail_at(P, cur(P), "expected a name, got %s", tok_desc(cur(P)));
        return NULL;
    }
    struct jbuf b = {0};
    jbuf_add(&b, cur(P)->text, cur(P)->len);
    advance(P);
    while (is_op(cur(P), ".") && peek(P, 1)->kind == JTOK_NAME) {
        jbuf_addc(&b, '.');
        advance(P);
        jbuf_add(&b, cur(P)->text, cur(P)->len);
        advance(P);
    }
    char *s = arena_strndup(P, b.p, b.len);
    jbuf_free(&b);
    return s;
}

static struct jexpr *parse_filter_expr(struct parser *P, struct jexpr *e)
{
    while (e) {
        const struct jtok *t = cur(P);
        if (is_op(t, "|")) {
            advance(P);
            struct jexpr *f = node(P, JE_FILTER, t);
            f->a = e;
            if (!(f->name = parse_dotted_name(P)))
                return NULL;
            if (is_op(cur(P), "(") && parse_call_args(P, f) != 0)
                return NULL;
            e = f;
        } else if (is_name(t, "is")) {
            advance(P);
            struct jexpr *f = node(P, JE_TEST, t);
            f->a = e;
            if (is_name(cur(P), "not")) {
                f->op = 1;
                advance(P);
            }
            if (!(f->name = parse_dotted_name(P)))
                return NULL;
            const struct jtok *c = cur(P);
            if (is_op(c, "(")) {
                if (parse_call_args(P, f) != 0)
                    return NULL;
            } else if ((c->kind == JTOK_NAME || c->kind == JTOK_STRING || c->kind == JTOK_INT ||
                        c->kind == JTOK_FLOAT || is_op(c, "[") || is_op(c, "{")) &&
                       !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
                if (is_name(c, "is")) {
                    fail_at(P, c, "cannot chain multiple tests with 'is'");
                    return NULL;
                }
                struct jexpr *arg = parse_postfix(P, parse_primary(P));
                if (!arg)
                    return NULL;
                add_arg(P, f, arg, NULL);
            }
            e = f;
        } else if (is_op(t, "(")) {
            struct jexpr *c = node(P, JE_CALL, t);
            c->a = e;
            if (parse_call_args(P, c) != 0)
                return NULL;
            e = c;
        } else {
            break;
        }
    }
    return e;
}

static struct jexpr *parse_unary(struct parser *P, bool with_filter)
{
    const struct jtok *t = cur(P);
    struct jexpr *e;
    if (enter(P) != 0)
        return NULL;
    if (is_op(t, "-") || is_op(t, "+")) {
        advance(P);
        struct jexpr *operand = parse_unary(P, false);
        e = NULL;
        if (operand) {
            e = node(P, JE_UNARY, t);
            e->op = t->text[0] == '-' ? JOP_SUB : JOP_ADD;
            e->a = operand;
        }
    } else {
        e = parse_primary(P);
    }
    e = parse_postfix(P, e);
    if (with_filter)
        e = parse_filter_expr(P, e);
    P->depth--;
    return e;
}

static struct jexpr *binary(struct parser *P, const struct jtok *t, int op, struct jexpr *a,
                            struct jexpr *b)
{
    if (!a || !b)
        return NULL;
    struct jexpr *e = node(P, JE_BINARY, t);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static struct jexpr *parse_pow(struct parser *P)
{
    struct jexpr *e = parse_unary(P, true);
    while (e && is_op(cur(P), "**")) {
        const struct jtok *t = cur(P);
        advance(P);
        e = binary(P, t, JOP_POW, e, parse_unary(P, true));
    }
    return e;
}

static struct jexpr *parse_math2(struct parser *P)
{
    struct jexpr *e = parse_pow(P);
    for (;;) {
        const struct jtok *t = cur(P);
        int op = is_op(t, "*")    ? JOP_MUL
                 : is_op(t, "/")  ? JOP_DIV
                 : is_op(t, "//") ? JOP_FLOORDIV
                 : is_op(t, "%")  ? JOP_MOD
                                  : 0;
        if (!e || !op)
            return e;
        advance(P);
        e = binary(P, t, op, e, parse_pow(P));
    }
}

static struct jexpr *parse_concat(struct parser *P)
{
    struct jexpr *e = parse_math2(P);
    while (e && is_op(cur(P), "~")) {
        const struct jtok *t = cur(P);
        advance(P);
        e = binary(P, t, JOP_CONCAT, e, parse_math2(P));
    }
    return e;
}

static struct jexpr *parse_math1(struct parser *P)
{
    struct jexpr *e = parse_concat(P);
    for (;;) {
        const struct jtok *t = cur(P);
        int op = is_op(t, "+") ? JOP_ADD : is_op(t, "-") ? JOP_SUB : 0;
        if (!e || !op)
            return e;
        advance(P);
        e = binary(P, t, op, e, parse_concat(P));
    }
}

static struct jexpr *parse_compare(struct parser *P)
{
    const struct jtok *start = cur(P);
    struct jexpr *first = parse_math1(P);
    struct jexpr *e = NULL;
    if (!first)
        return NULL;
    for (;;) {
        const struct jtok *t = cur(P);
        int op = is_op(t, "==")     ? JOP_EQ
                 : is_op(t, "!=")   ? JOP_NE
                 : is_op(t, "<")    ? JOP_LT
                 : is_op(t, "<=")   ? JOP_LE
                 : is_op(t, ">")    ? JOP_GT
                 : is_op(t, ">=")   ? JOP_GE
                 : is_name(t, "in") ? JOP_IN
                                    : 0;
        if (!op && is_name(t, "not") && is_name(peek(P, 1), "in")) {
            op = JOP_NOTIN;
            advance(P);
        }
        if (!op)
            break;
        advance(P);
        struct jexpr *rhs = parse_math1(P);
        if (!rhs)
            return NULL;
        if (!e) {
            e = node(P, JE_COMPARE, start);
            add_arg(P, e, first, NULL);
        }
        add_arg(P, e, rhs, NULL);
        size_t nops = e->nargs - 2;
        arena_push(P, (void **)&e->ops, &nops, &op, sizeof op);
    }
    return e ? e : first;
}

static struct jexpr *parse_not(struct parser *P)
{
    const struct jtok *t = cur(P);
    if (is_name(t, "not")) {
        if (enter(P) != 0)
            return NULL;
        advance(P);
        struct jexpr *a = parse_not(P);
        P->depth--;
        if (!a)
            return NULL;
        struct jexpr *e = node(P, JE_NOT, t);
        e->a = a;
        return e;
    }
    return parse_compare(P);
}

/* A left-associative chain of a keyword operator ("and", "or") over operands parsed by next. */
static struct jexpr *parse_keyword_chain(struct parser *P, const char *keyword,
                                         enum jexpr_kind kind,
                                         struct jexpr *(*next)(struct parser *))
{
    struct jexpr *e = next(P);
    while (e && is_name(cur(P), keyword)) {
        const struct jtok *t = cur(P);
        advance(P);
        struct jexpr *b = next(P);
        if (!b)
            return NULL;
        struct jexpr *n = node(P, kind, t);
        n->a = e;
        n->b = b;
        e = n;
    }
    return e;
}

static struct jexpr *parse_and(struct parser *P)
{
    return parse_keyword_chain(P, "and", JE_AND, parse_not);
}

static struct jexpr *parse_or(struct parser *P)
{
    return parse_keyword_chain(P, "or", JE_OR, parse_and);
}

static struct jexpr *parse_condexpr(struct parser *P)
{
    struct jexpr *e = parse_or(P);
    while (e && is_name(cur(P), "if")) {
        const struct jtok *t = cur(P);
        advance(P);
        struct jexpr *cond = parse_or(P);
        if (!cond)
            return NULL;
        struct jexpr *alt = NULL;
        if (is_name(cur(P), "else")) {
            advance(P);
            if (enter(P) != 0)
                return NULL;
            alt = parse_condexpr(P);
            P->depth--;
            if (!alt)
                return NULL;
        }
        struct jexpr *n = node(P, JE_COND, t);
        n->a = e;
        n->b = cond;
        n->c = alt;
        e = n;
    }
    return e;
}

static struct jexpr *parse_expression(struct parser *P, bool with_condexpr)
{
    if (enter(P) != 0)
        return NULL;
    struct jexpr *e = with_condexpr ? parse_condexpr(P) : parse_or(P);
    P->depth--;
    return e;
}

/* An expression, or several separated by commas (a tuple, kept as a list). */
static struct jexpr *parse_tuple(struct parser *P, bool with_condexpr, bool explicit_parens)
{
    const struct jtok *t = cur(P);
    if (explicit_parens && is_op(t, ")"))
        return node(P, JE_LIST, t);
    struct jexpr *first = parse_expression(P, with_condexpr);
    if (!first || !is_op(cur(P), ","))
        return first;
    struct jexpr *e = node(P, JE_LIST, t);
    add_arg(P, e, first, NULL);
    while (is_op(cur(P), ",")) {
        advance(P);
        if (is_op(cur(P), ")") || cur(P)->kind == JTOK_VAR_END || cur(P)->kind == JTOK_BLOCK_END ||
            is_name(cur(P), "if"))
            break;
        struct jexpr *item = parse_expression(P, with_condexpr);
        if (!item)
            return NULL;
        add_arg(P, e, item, NULL);
    }
    return e;
}

/* ---- statements ---------------------------------------------------------------------------- */
static int parse_body(struct parser *P, const char *const *ends, struct jbody *body,
                      const char **which);

static struct jstmt *stmt(struct parser *P, enum jstmt_kind kind, const struct jtok *at)
{
    struct jstmt *s = arena_alloc(P, sizeof *s);
    s->kind = kind;
    s->line = at->line;
    s->col = at->col;
    return s;
}

static void body_add(struct parser *P, struct jbody *b, struct jstmt *s)
{
    arena_push(P, (void **)&b->v, &b->n, &s, sizeof s);
}

static void add_name(struct parser *P, struct jstmt *s, const char *name)
{
    char *copy = arena_strndup(P, name, strlen(name));
    arena_push(P, (void **)&s->names, &s->nnames, &copy, sizeof copy);
}

/* Names separated by commas (optionally in parentheses): for targets and set unpacking. */
static int parse_targets(struct parser *P, struct jstmt *s)
{
    bool paren = is_op(cur(P), "(");
    if (paren)
        advance(P);
    do {
        if (s->nnames > 0)
            advance(P); /* , */
        if (cur(P)->kind != JTOK_NAME)
            return fail_at(P, cur(P), "expected a variable name, got %s", tok_desc(cur(P)));
        add_name(P, s, cur(P)->text);
        advance(P);
    } while (is_op(cur(P), ","));
    if (paren)
        return expect_op(P, ")");
    return 0;
}

static int expect_end(struct parser *P)
{
    return expect_kind(P, JTOK_BLOCK_END, "'%}'");
}

static int parse_if(struct parser *P, struct jstmt *s)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *which;
    if (!(s->expr = parse_tuple(P, true, false)) || expect_end(P) != 0)
        return -1;
    if (parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    if (!strcmp(which, "elif")) {
        struct jstmt *e = stmt(P, JS_IF, cur(P));
        body_add(P, &s->else_body, e);
        return parse_if(P, e);
    }
    if (!strcmp(which, "else")) {
        static const char *const end_only[] = {"endif", NULL};
        if (expect_end(P) != 0 || parse_body(P, end_only, &s->else_body, &which) != 0)
            return -1;
    }
    return expect_end(P);
}

static int parse_for(struct parser *P, struct jstmt *s)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const end_only[] = {"endfor", NULL};
    const char *which;
    if (parse_targets(P, s) != 0)
        return -1;
    if (!is_name(cur(P), "in"))
        return fail_at(P, cur(P), "expected 'in', got %s", tok_desc(cur(P)));
    advance(P);
    if (!(s->expr = parse_tuple(P, false, false)))
        return -1;
    if (is_name(cur(P), "if")) {
        advance(P);
        if (!(s->cond = parse_expression(P, true)))
            return -1;
    }
    if (is_name(cur(P), "recursive"))
        return fail_at(P, cur(P), "recursive loops are not supported");
    if (expect_end(P) != 0 || parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    if (!strcmp(which, "else") &&
        (expect_end(P) != 0 || parse_body(P, end_only, &s->else_body, &which) != 0))
        return -1;
    return expect_end(P);
}

static int parse_set(struct parser *P, struct jstmt *s)
{
    if (cur(P)->kind != JTOK_NAME)
        return fail_at(P, cur(P), "expected a variable name, got %s", tok_desc(cur(P)));
    if (is_op(peek(P, 1), ".")) {
        add_name(P, s, cur(P)->text);
        advance(P);
        advance(P);
        if (cur(P)->kind != JTOK_NAME)
            return fail_at(P, cur(P), "expected an attribute name, got %s", tok_desc(cur(P)));
        s->attr = arena_strndup(P, cur(P)->text, cur(P)->len);
        advance(P);
    } else if (parse_targets(P, s) != 0) {
        return -1;
    }
    if (is_op(cur(P), "=")) {
        advance(P);
        if (!(s->expr = parse_tuple(P, true, false)))
            return -1;
        return expect_end(P);
    }
    if (s->nnames != 1 || s->attr)
        return fail_at(P, cur(P), "expected '=', got %s", tok_desc(cur(P)));
    if (is_op(cur(P), "|"))
        return fail_at(P, cur(P), "filtered block set is not supported");
    static const char *const ends[] = {"endset", NULL};
    const char *which;
    s->kind = JS_SET_BLOCK;
    if (expect_end(P) != 0 || parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    return expect_end(P);
}

/* `(a, b=default, ...)` for macros and call blocks; names go after any already in s->names. */
static int parse_signature(struct parser *P, struct jstmt *s)
{
    if (expect_op(P, "(") != 0)
        return -1;
    struct jexpr *none = NULL;
    size_t nd = 0;
    for (size_t k = 0; k < s->nnames; k++)
        arena_push(P, (void **)&s->defaults, &nd, &none, sizeof none);
    size_t first = s->nnames;
    while (!is_op(cur(P), ")")) {
        if (s->nnames > first && expect_op(P, ",") != 0)
            return -1;
        if (is_op(cur(P), ")"))
            break;
        if (cur(P)->kind != JTOK_NAME)
            return fail_at(P, cur(P), "expected a parameter name, got %s", tok_desc(cur(P)));
        add_name(P, s, cur(P)->text);
        advance(P);
        struct jexpr *def = NULL;
        if (is_op(cur(P), "=")) {
            advance(P);
            if (!(def = parse_expression(P, true)))
                return -1;
        } else if (nd > first && s->defaults[nd - 1]) {
            return fail_at(P, cur(P), "non-default parameter follows default parameter");
        }
        arena_push(P, (void **)&s->defaults, &nd, &def, sizeof def);
    }
    advance(P);
    return 0;
}

static int parse_macro(struct parser *P, struct jstmt *s)
{
    static const char *const ends[] = {"endmacro", NULL};
    const char *which;
    if (cur(P)->kind != JTOK_NAME)
        return fail_at(P, cur(P), "expected a macro name, got %s", tok_desc(cur(P)));
    add_name(P, s, cur(P)->text);
    advance(P);
    if (parse_signature(P, s) != 0 || expect_end(P) != 0)
        return -1;
    if (parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    if (cur(P)->kind == JTOK_NAME)
        advance(P); /* {% endmacro name %} */
    return expect_end(P);
}

static int parse_call(struct parser *P, struct jstmt *s)
{
    static const char *const ends[] = {"endcall", NULL};
    const char *which;
    add_name(P, s, "caller");
    if (is_op(cur(P), "(")) {
        if (parse_signature(P, s) != 0)
            return -1;
    } else {
        struct jexpr *none = NULL;
        size_t nd = 0;
        arena_push(P, (void **)&s->defaults, &nd, &none, sizeof none);
    }
    const struct jtok *t = cur(P);
    if (!(s->expr = parse_expression(P, true)))
        return -1;
    if (s->expr->kind != JE_CALL)
        return fail_at(P, t, "expected a call after 'call'");
    if (expect_end(P) != 0 || parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    return expect_end(P);
}

/* {% with a = x, b = y %} ... {% endwith %} */
static int parse_with(struct parser *P, struct jstmt *s)
{
    static const char *const ends[] = {"endwith", NULL};
    const char *which;
    size_t nd = 0;
    while (cur(P)->kind != JTOK_BLOCK_END) {
        if (s->nnames > 0 && expect_op(P, ",") != 0)
            return -1;
        if (cur(P)->kind != JTOK_NAME)
            return fail_at(P, cur(P), "expected a variable name, got %s", tok_desc(cur(P)));
        add_name(P, s, cur(P)->text);
        advance(P);
        if (expect_op(P, "=") != 0)
            return -1;
        struct jexpr *v = parse_expression(P, true);
        if (!v)
            return -1;
        arena_push(P, (void **)&s->defaults, &nd, &v, sizeof v);
    }
    if (expect_end(P) != 0 || parse_body(P, ends, &s->body, &which) != 0)
        return -1;
    return expect_end(P);
}

/* Statements until one of ends (NULL-terminated; NULL ends means the end of the template). On
 * reaching an end tag, consumes "{%" and its name, stores the name in *which and returns 0. */
static int parse_body(struct parser *P, const char *const *ends, struct jbody *body,
                      const char **which)
{
    if (enter(P) != 0)
        return -1;
    for (;;) {
        const struct jtok *t = cur(P);
        if (t->kind == JTOK_EOF) {
            P->depth--;
            if (ends) {
                char want[128] = "";
                for (size_t k = 0; ends[k]; k++)
                    snprintf(want + strlen(want), sizeof want - strlen(want), "%s'%s'",
                             k ? " or " : "", ends[k]);
                return fail_at(P, t, "unexpected end of template, expected %s", want);
            }
            return 0;
        }
        if (t->kind == JTOK_DATA) {
            struct jstmt *s = stmt(P, JS_TEXT, t);
            s->text = arena_strndup(P, t->text, t->len);
            s->text_len = t->len;
            body_add(P, body, s);
            advance(P);
            continue;
        }
        if (t->kind == JTOK_VAR_BEGIN) {
            advance(P);
            struct jstmt *s = stmt(P, JS_PRINT, t);
            if (!(s->expr = parse_tuple(P, true, false)) ||
                expect_kind(P, JTOK_VAR_END, "'}}'") != 0)
                return -1;
            body_add(P, body, s);
            continue;
        }
        if (t->kind != JTOK_BLOCK_BEGIN)
            return fail_at(P, t, "unexpected %s", tok_desc(t));
        const struct jtok *kw = peek(P, 1);
        if (kw->kind != JTOK_NAME)
            return fail_at(P, kw, "expected a tag name, got %s", tok_desc(kw));
        for (size_t k = 0; ends && ends[k]; k++)
            if (!strcmp(kw->text, ends[k])) {
                advance(P);
                advance(P);
                *which = ends[k];
                P->depth--;
                return 0;
            }
        advance(P);
        advance(P);
        struct jstmt *s;
        int rc;
        if (!strcmp(kw->text, "if")) {
            s = stmt(P, JS_IF, kw);
            rc = parse_if(P, s);
        } else if (!strcmp(kw->text, "for")) {
            s = stmt(P, JS_FOR, kw);
            rc = parse_for(P, s);
        } else if (!strcmp(kw->text, "set")) {
            s = stmt(P, JS_SET, kw);
            rc = parse_set(P, s);
        } else if (!strcmp(kw->text, "macro")) {
            s = stmt(P, JS_MACRO, kw);
            rc = parse_macro(P, s);
        } else if (!strcmp(kw->text, "call")) {
            s = stmt(P, JS_CALL, kw);
            rc = parse_call(P, s);
        } else if (!strcmp(kw->text, "break") || !strcmp(kw->text, "continue")) {
            s = stmt(P, kw->text[0] == 'b' ? JS_BREAK : JS_CONTINUE, kw);
            rc = expect_end(P);
        } else if (!strcmp(kw->text, "with")) {
            s = stmt(P, JS_WITH, kw);
            rc = parse_with(P, s);
        } else if (!strcmp(kw->text, "generation")) {
            static const char *const gen_end[] = {"endgeneration", NULL};
            const char *w;
            s = stmt(P, JS_BLOCK, kw);
            rc = expect_end(P) != 0 || parse_body(P, gen_end, &s->body, &w) != 0 ||
                                 expect_end(P) != 0
                         ? -1
                         : 0;
        } else {
            return fail_at(P, kw, "unknown or unexpected tag '%s'", kw->text);
        }
        if (rc != 0)
            return -1;
        body_add(P, body, s);
    }
}

int jinja_parse_template(const struct jtok *toks, size_t ntoks, struct jinja_template *tmpl,
                         struct jinja_error *err)
{
    struct parser P = {.t = toks, .n = ntoks, .tmpl = tmpl, .err = err};
    const char *which = NULL;
    return parse_body(&P, NULL, &tmpl->root, &which);
}
