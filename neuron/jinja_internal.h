/*
 * neuron/jinja_internal.h — private types shared by the parts of the Jinja interpreter.
 *
 * Data flow: jinja_lex.c turns the source into tokens (applying whitespace control), jinja_parse.c
 * builds the tree of statements and expressions, jinja_eval.c walks the tree, jinja_value.c holds
 * the value model (jansson values plus undefined and a few interpreter objects) with Python's
 * str()/repr()/json.dumps()/==/< rules, and jinja_builtin.c the filters, tests, global functions
 * and str/dict methods. Nothing here is visible outside these files.
 */
#ifndef CORTEX_NEURON_JINJA_INTERNAL_H
#define CORTEX_NEURON_JINJA_INTERNAL_H

#include "jinja.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINJA_MUST_CHECK __attribute__((warn_unused_result))

/* ---- growable byte buffer --------------------------------------------------------------- */
struct jbuf {
    char *p;
    size_t len, cap;
};
void jbuf_add(struct jbuf *b, const char *s, size_t n);
void jbuf_adds(struct jbuf *b, const char *s);
void jbuf_addc(struct jbuf *b, char c);
void jbuf_free(struct jbuf *b);

/* ---- tokens ------------------------------------------------------------------------------ */
enum jtok_kind {
    JTOK_EOF,
    JTOK_DATA,        /* template text, already whitespace-controlled */
    JTOK_VAR_BEGIN,   /* {{ */
    JTOK_VAR_END,     /* }} */
    JTOK_BLOCK_BEGIN, /* {% */
    JTOK_BLOCK_END,   /* %} */
    JTOK_NAME,
    JTOK_STRING, /* text holds the decoded literal */
    JTOK_INT,
    JTOK_FLOAT,
    JTOK_OP, /* text holds the operator */
};

struct jtok {
    enum jtok_kind kind;
    int line, col;
    char *text; /* owned; NUL-terminated, len bytes (strings may hold NUL) */
    size_t len;
    int64_t ival;
    double fval;
};

/* Tokenises the whole source. On success *toks (ends with JTOK_EOF) is owned by the caller and
 * freed with jinja_lex_free(). */
int jinja_lex_source(const char *src, size_t len, const struct jinja_options *opt,
                     struct jtok **toks, size_t *ntoks, struct jinja_error *err) JINJA_MUST_CHECK;
void jinja_lex_free(struct jtok *toks, size_t n);

/* ---- syntax tree ------------------------------------------------------------------------- */
enum jexpr_kind {
    JE_LITERAL, /* lit */
    JE_NAME,    /* name */
    JE_LIST,    /* args */
    JE_DICT,    /* args: key, value, key, value ... */
    JE_GETATTR, /* a.name */
    JE_GETITEM, /* a[b] */
    JE_SLICE,   /* a[args[0]:args[1]:args[2]], entries may be NULL */
    JE_CALL,    /* a(args; kw[i] names keyword arguments) */
    JE_FILTER,  /* a | name(args) */
    JE_TEST,    /* a is [not] name(args); op = 1 when negated */
    JE_UNARY,   /* op a: '-', '+' */
    JE_NOT,     /* not a */
    JE_BINARY,  /* a op b: + - * / // % ** ~ */
    JE_AND,
    JE_OR,
    JE_COMPARE, /* args[0] ops[0] args[1] ops[1] args[2] ... */
    JE_COND,    /* a if b else c (c may be NULL) */
};

enum jop {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_CONCAT,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN,
};

struct jexpr {
    enum jexpr_kind kind;
    int line, col;
    int op;
    char *name;
    json_t *lit;
    struct jexpr *a, *b, *c;
    struct jexpr **args;
    char **kw; /* NULL, or nargs entries, NULL for positional arguments */
    size_t nargs;
    int *ops;
};

enum jstmt_kind {
    JS_TEXT,      /* text, text_len */
    JS_PRINT,     /* {{ expr }} */
    JS_IF,        /* expr, body, else_body */
    JS_FOR,       /* names (targets), expr (iterable), cond (filter), body, else_body */
    JS_SET,       /* names[0] (and attr for ns.attr) or several names (unpacking), expr */
    JS_SET_BLOCK, /* names[0], body */
    JS_MACRO,     /* names[0] = macro name, params = names[1..], defaults, body */
    JS_CALL,      /* expr (the call), names/defaults (caller params), body (caller body) */
    JS_BREAK,
    JS_CONTINUE,
    JS_BLOCK, /* body rendered in place (generation) */
    JS_WITH,  /* names = defaults (values), body in a new frame */
};

struct jstmt;
struct jbody {
    struct jstmt **v;
    size_t n;
};

struct jstmt {
    enum jstmt_kind kind;
    int line, col;
    char *text;
    size_t text_len;
    struct jexpr *expr, *cond;
    char **names;
    size_t nnames;
    char *attr;
    struct jexpr **defaults; /* nnames entries: macro/call defaults (entry 0 unused), with values */
    struct jbody body, else_body;
};

/* Every node, string and array of a parsed template is recorded here and freed at once. */
struct jarena {
    void **ptrs;
    size_t n, cap;
    json_t **jsons;
    size_t nj, capj;
};

struct jinja_template {
    struct jinja_options opt;
    struct jbody root;
    struct jarena arena;
};

/* Builds tmpl->root from the tokens; allocations go to tmpl->arena (freed by the caller with
 * jinja_parse_free_arena() whatever the outcome). */
int jinja_parse_template(const struct jtok *toks, size_t ntoks, struct jinja_template *tmpl,
                         struct jinja_error *err) JINJA_MUST_CHECK;
void jinja_parse_free_arena(struct jarena *a);

/* ---- values ------------------------------------------------------------------------------ */
enum jval_kind {
    JV_UNDEF, /* json: NULL or a string naming what was missing (for messages) */
    JV_JSON,  /* json: owned reference */
    JV_OBJ,   /* obj: owned reference */
};

enum jobj_kind {
    JOBJ_NAMESPACE, /* json: object of attributes */
    JOBJ_LOOP,      /* json: items; index, length */
    JOBJ_MACRO,     /* stmt, frame */
    JOBJ_FUNC,      /* func: a global function */
    JOBJ_METHOD,    /* json: receiver; name: method; func: method id */
};

struct jframe;

struct jobj {
    int refs;
    enum jobj_kind kind;
    json_t *json;
    const struct jstmt *stmt;
    struct jframe *frame;
    const char *name;
    int func;
    size_t index, length;
    const struct jbody *caller; /* JOBJ_MACRO made by {% call %}: the caller body */
};

struct jval {
    enum jval_kind kind;
    json_t *json;
    struct jobj *obj;
};

struct jval jval_undef(const char *hint);
struct jval jval_json(json_t *steal); /* steal may not be NULL */
struct jval jval_obj(struct jobj *steal);
struct jval jval_str(const char *s, size_t n);
struct jval jval_copy(const struct jval *v); /* a new reference */
void jval_drop(struct jval *v);              /* releases and resets to undefined */

static inline bool jval_is_undef(const struct jval *v)
{
    return v->kind == JV_UNDEF;
}
static inline bool jval_is_str(const struct jval *v)
{
    return v->kind == JV_JSON && json_is_string(v->json);
}

struct jobj *jobj_new(enum jobj_kind kind);
void jobj_release(struct jobj *o);

/* Python's type name of a value, for messages. */
const char *jval_type_name(const struct jval *v);
bool jval_truthy(const struct jval *v);
/* Appends Python's str(v); undefined appends nothing. */
void jval_write_str(const struct jval *v, struct jbuf *b);
void jinja_value_repr(const json_t *j, struct jbuf *b);
void jinja_value_float_repr(double d, struct jbuf *b);
/* Python json.dumps: indent NULL for none; item_sep/key_sep NULL for the defaults. Returns -1 for
 * non-finite numbers (Python would print NaN, which no JSON reader accepts). */
int jinja_value_dumps(const json_t *j, const char *indent, const char *item_sep,
                      const char *key_sep, bool sort_keys, bool ensure_ascii,
                      struct jbuf *b) JINJA_MUST_CHECK;
/* Python ==. */
bool jval_equal(const struct jval *a, const struct jval *b);
bool jinja_value_json_equal(const json_t *a, const json_t *b);
/* Python <-style ordering: *cmp gets -1, 0 or 1; -1 return when the types do not order. */
int jinja_value_compare(const json_t *a, const json_t *b, int *cmp) JINJA_MUST_CHECK;

/* UTF-8 helpers: code point count, decoding (invalid bytes decode as one code point each). */
size_t jinja_utf8_len(const char *s, size_t n);
uint32_t jinja_utf8_next(const char *s, size_t n, size_t *pos);
void jinja_utf8_put(struct jbuf *b, uint32_t cp);
bool jinja_is_py_space(uint32_t cp);

/* ---- evaluation context -------------------------------------------------------------------- */
struct jframe {
    struct jframe *parent;
    const char **names; /* borrowed from the tree or static */
    struct jval *vals;
    size_t n, cap;
};

struct jctx {
    const struct jinja_template *tmpl;
    const json_t *context;
    struct jframe *root;
    struct jinja_error *err;
    uint64_t steps;
    int depth;
};

/* Records the first error (later ones are ignored); returns -1 for `return jctx_fail(...)`. */
int jctx_fail(struct jctx *cx, enum jinja_error_kind kind, int line, int col, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* Arguments of a filter, test, function or method call (borrowed values). */
struct jargs {
    struct jval *pos;
    size_t npos;
    struct jval *kwv;
    const char **kwn;
    size_t nkw;
    int line, col;
};

/* Looks an argument up by position (after skip) or name; NULL when absent. */
const struct jval *jargs_get(const struct jargs *a, size_t pos, const char *name);

int jinja_builtin_filter(struct jctx *cx, const char *name, const struct jval *in,
                         const struct jargs *args, struct jval *out) JINJA_MUST_CHECK;
int jinja_builtin_test(struct jctx *cx, const char *name, const struct jval *in,
                       const struct jargs *args, bool *out) JINJA_MUST_CHECK;
/* Global functions (range, namespace, dict, raise_exception, strftime_now, ...): NULL-free lookup
 * returns a JOBJ_FUNC value or undefined. */
struct jval jinja_builtin_global(const char *name);
int jinja_builtin_call_func(struct jctx *cx, int func, const struct jargs *args,
                            struct jval *out) JINJA_MUST_CHECK;
/* Attribute access on a json value that names a method (str.strip, dict.items, ...): returns true
 * and a bound JOBJ_METHOD value in *out. */
bool jinja_builtin_method(const json_t *recv, const char *name, struct jval *out);
int jinja_builtin_call_method(struct jctx *cx, const struct jobj *m, const struct jargs *args,
                              struct jval *out) JINJA_MUST_CHECK;
/* Attribute or item lookup the way jinja2's environment does it (attribute first for getattr). */
int jinja_eval_getattr(struct jctx *cx, const struct jval *obj, const char *name, int line, int col,
                       struct jval *out) JINJA_MUST_CHECK;
int jinja_eval_getitem(struct jctx *cx, const struct jval *obj, const struct jval *key, int line,
                       int col, struct jval *out) JINJA_MUST_CHECK;
/* Calls a macro value with arguments. */
int jinja_eval_call_macro(struct jctx *cx, const struct jobj *m, const struct jargs *args,
                          struct jval *out) JINJA_MUST_CHECK;
/* Makes a list (json array) out of an iterable value: list, dict keys, string characters,
 * undefined (empty). */
int jinja_eval_to_list(struct jctx *cx, const struct jval *v, int line, int col,
                       json_t **out) JINJA_MUST_CHECK;
int jinja_eval_render(const struct jinja_template *tmpl, const json_t *context, struct jbuf *out,
                      struct jinja_error *err) JINJA_MUST_CHECK;

#endif
