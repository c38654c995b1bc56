/*
 * neuron/jinja.h — a Jinja-subset template interpreter for models' chat templates.
 *
 * Contract: jinja_template_parse() compiles template text into a tree once; jinja_template_render()
 * renders it against a context (a jansson object whose keys become template variables) any number
 * of times. Values are jansson values plus Jinja's "undefined"; semantics follow Python jinja2 as
 * Hugging Face transformers configures it for chat templates (ImmutableSandboxedEnvironment with
 * trim_blocks and lstrip_blocks, the loopcontrols extension, a tojson that does not escape HTML
 * and keeps non-ASCII text, and the globals raise_exception() and strftime_now()).
 * What is covered: {{ }}, {% %}, {# #} with whitespace control; if/elif/else, for (with else,
 * filters, tuple unpacking and the loop object), set (also block set and namespace attributes),
 * macro and call, break/continue, raw, generation; the expression grammar (literals, lists, dicts,
 * attribute and item access, slices, calls, filters, tests, arithmetic, comparisons, and/or/not,
 * `~`, conditional expressions); the filters, tests and str/dict methods real templates use.
 * Templates are untrusted input: parsing and rendering never crash; nesting depth, the number of
 * evaluation steps and the output size are bounded by the options, and every failure returns -1
 * with a message and the template line and column in struct jinja_error.
 * Known differences from jinja2: integers are 64-bit (overflow is an error), tuples behave as lists
 * (and print as lists), upper()/lower()/title()/capitalize() map Latin, Greek and Cyrillic letters
 * only, and only the filters, tests and methods listed in jinja_builtin.c exist.
 */
#ifndef CORTEX_NEURON_JINJA_H
#define CORTEX_NEURON_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum jinja_error_kind {
    JINJA_ERROR_NONE,
    JINJA_ERROR_SYNTAX,  /* the template text does not parse */
    JINJA_ERROR_RUNTIME, /* an expression failed while rendering (type error, undefined, ...) */
    JINJA_ERROR_RAISED,  /* the template called raise_exception(message) */
    JINJA_ERROR_LIMIT,   /* a bound in jinja_options was exceeded */
};

struct jinja_error {
    enum jinja_error_kind kind;
    int line, column; /* 1-based position in the template; 0 when unknown */
    char message[512];
};

struct jinja_options {
    bool trim_blocks;   /* drop the first newline after a block or comment tag */
    bool lstrip_blocks; /* strip spaces and tabs before a block or comment tag on its line */
    bool keep_trailing_newline; /* keep a single newline at the end of the template */
    size_t max_output;          /* bytes of rendered text */
    uint64_t max_steps;         /* expression evaluations plus loop iterations */
    int max_depth;              /* nesting of expressions, blocks and macro calls */
    time_t now;                 /* the time strftime_now() formats; 0 means the current time */
};

struct jinja_template;

/* Fills *opt with the settings Hugging Face uses for chat templates and generous bounds. */
void jinja_options_init_hf(struct jinja_options *opt);

/* Parses len bytes of UTF-8 template text. On success *out owns the compiled template (free it with
 * jinja_template_destroy()); the source is copied, so the caller may free it. opt may be NULL
 * (HF settings). On failure returns -1 and fills *err (never NULL). */
int jinja_template_parse(const char *source, size_t len, const struct jinja_options *opt,
                         struct jinja_template **out, struct jinja_error *err)
        __attribute__((warn_unused_result));

void jinja_template_destroy(struct jinja_template *tmpl);

/* Renders tmpl with the variables of the object context (borrowed, never modified). On success
 * *out is a NUL-terminated string the caller frees and *out_len its length (out_len may be NULL).
 * On failure returns -1, *out is NULL and *err says what and where. */
int jinja_template_render(const struct jinja_template *tmpl, const json_t *context, char **out,
                          size_t *out_len, struct jinja_error *err)
        __attribute__((warn_unused_result));

#endif
