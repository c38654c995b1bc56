/*
 * neuron/jinja.c — the public entry points of the Jinja interpreter (see jinja.h).
 *
 * Parsing is lexing (jinja_lex.c) then building the tree (jinja_parse.c); rendering walks the tree
 * (jinja_eval.c) into a buffer that becomes the caller's string.
 */
#include "jinja.h"
#include "jinja_internal.h"
#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

void jinja_options_init_hf(struct jinja_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->trim_blocks = true;
    opt->lstrip_blocks = true;
    opt->keep_trailing_newline = false;
    opt->max_output = 16u << 20;
    opt->max_steps = 20u * 1000 * 1000;
    opt->max_depth = 200;
}

int jinja_template_parse(const char *source, size_t len, const struct jinja_options *opt,
                         struct jinja_template **out, struct jinja_error *err)
{
    struct jinja_template *t = xcalloc(1, sizeof *t);
    struct jtok *toks = NULL;
    size_t ntoks = 0;
    memset(err, 0, sizeof *err);
    *out = NULL;
    if (opt)
        t->opt = *opt;
    else
        jinja_options_init_hf(&t->opt);
    if (jinja_lex_source(source, len, &t->opt, &toks, &ntoks, err) != 0)
        goto fail;
    if (jinja_parse_template(toks, ntoks, t, err) != 0)
        goto fail;
    jinja_lex_free(toks, ntoks);
    *out = t;
    return 0;
fail:
    if (err->kind == JINJA_ERROR_NONE)
        err->kind = JINJA_ERROR_SYNTAX;
    jinja_lex_free(toks, ntoks);
    jinja_template_destroy(t);
    return -1;
}

void jinja_template_destroy(struct jinja_template *tmpl)
{
    if (!tmpl)
        return;
    jinja_parse_free_arena(&tmpl->arena);
    free(tmpl);
}

int jinja_template_render(const struct jinja_template *tmpl, const json_t *context, char **out,
                          size_t *out_len, struct jinja_error *err)
{
    struct jbuf b = {0};
    memset(err, 0, sizeof *err);
    *out = NULL;
    if (context && !json_is_object(context)) {
        err->kind = JINJA_ERROR_RUNTIME;
        strcpy(err->message, "the render context must be a JSON object");
        return -1;
    }
    if (jinja_eval_render(tmpl, context, &b, err) != 0) {
        if (err->kind == JINJA_ERROR_NONE)
            err->kind = JINJA_ERROR_RUNTIME;
        jbuf_free(&b);
        return -1;
    }
    jbuf_add(&b, "", 0);
    *out = b.p;
    if (out_len)
        *out_len = b.len;
    return 0;
}
