/*
 * tests/unit/neuron/test_jinja.c — the Jinja interpreter on small templates.
 *
 * Expected strings are written by hand from jinja2's documented behaviour (with the Hugging Face
 * chat-template settings: trim_blocks, lstrip_blocks, tojson = json.dumps with ensure_ascii off).
 * Also: error kinds and positions, the resource bounds, and a fuzz-style run over random
 * mutations of the real chat templates, which must never crash (run under ASan/UBSan).
 */
#include "jinja.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct render_case {
    const char *tmpl;
    const char *ctx; /* JSON object text or NULL */
    const char *want;
};

static const struct render_case cases[] = {
        /* output, literals, arithmetic */
        {"Hello {{ name }}!", "{\"name\": \"W\"}", "Hello W!"},
        {"{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 1 / 4 }}", NULL,
         "7 3 -4 -2 1024 0.25"},
        {"{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }}", NULL,
         "a1NoneTrue ababab [1, 2]"},
        {"{{ 1e16 }} {{ 1.0 }} {{ 0.0001 }} {{ 0.00001 }} {{ 0.1 + 0.2 }}", NULL,
         "1e+16 1.0 0.0001 1e-05 0.30000000000000004"},
        {"{{ {'a': 'it\\'s', 'b': [1.5, none, true]} }}", NULL,
         "{'a': \"it's\", 'b': [1.5, None, True]}"},
        {"{{ 10 - 3 - 2 }} {{ 2 ** 3 ** 2 }} {{ (1 + 2) * 3 }}", NULL, "5 64 9"},
        /* undefined */
        {"[{{ x }}]{{ x is defined }}{{ x|default('d') }}{{ ''|default('e', true) }}", NULL,
         "[]Falsede"},
        {"{{ 'a' in x }} {{ x|length }} {% for i in x %}no{% endfor %}", NULL, "False 0 "},
        /* whitespace control */
        {"  {% if true %}\n  x\n  {% endif %}\n  y  \n", NULL, "  x\n  y  "},
        {"a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc"},
        {"{{- ' x ' -}}\n {# c #}\n  {#- c2 -#}  y\n", NULL, " x y"},
        {"{%+ if true %}\n  z{% endif +%}\nw", NULL, "  z\nw"},
        {"line\n{% for i in [1, 2] %}\n  item {{ i }}\n{% endfor %}\nend\n", NULL,
         "line\n  item 1\n  item 2\nend"},
        {"{% raw %}{{ kept }}{% endraw %}", NULL, "{{ kept }}"},
        /* loops */
        {"{% for m in ms %}{{ loop.index }}/{{ loop.length }}{{ loop.first }}{{ loop.last }};"
         "{% endfor %}",
         "{\"ms\": [1, 2]}", "1/2TrueFalse;2/2FalseTrue;"},
        {"{% for m in ms %}{{ loop.previtem|default('-') }}{{ loop.nextitem|default('-') }} "
         "{% endfor %}",
         "{\"ms\": [\"a\", \"b\", \"c\"]}", "-b ac b- "},
        {"{% for m in ms if m != 2 %}{{ m }}{{ loop.index }}{% else %}E{% endfor %}",
         "{\"ms\": [1, 2, 3]}", "1132"},
        {"{% for m in [] %}x{% else %}empty{% endfor %}", NULL, "empty"},
        {"{% for k, v in d|items %}{{ k }}={{ v }},{% endfor %}", "{\"d\": {\"x\": 1, \"y\": [2]}}",
         "x=1,y=[2],"},
        {"{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}"
         "{% break %}{% endif %}{{ i }}{% endfor %}",
         NULL, "023"},
        {"{% set x = 5 %}{% for i in range(2) %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
         NULL, "50515"},
        /* namespace, macros, set blocks */
        {"{% set ns = namespace(a=1) %}{% for i in range(4) %}{% set ns.a = ns.a + i %}"
         "{% endfor %}{{ ns.a }}",
         NULL, "7"},
        {"{% macro m(a, b='B', c=none) %}[{{ a }}|{{ b }}|{{ c }}]{% endmacro %}{{ m(1) }}"
         "{{ m(1, 2) }}{{ m(1, c=3) }}",
         NULL, "[1|B|None][1|2|None][1|B|3]"},
        {"{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}", NULL, "2"},
        {"{% macro outer() %}<{{ caller('v') }}>{% endmacro %}{% call(a) outer() %}got {{ a }}"
         "{% endcall %}",
         NULL, "<got v>"},
        {"{% set b %} x {{ 1 }} {% endset %}[{{ b }}]", NULL, "[ x 1 ]"},
        {"{% set a, b = [1, 2] %}{{ b }}{{ a }}", NULL, "21"},
        {"{% set a = 1 %}{% with a = 2, b = a %}{{ a }}{{ b }}{% set c = 3 %}{% endwith %}{{ a }}"
         "{{ c is defined }}",
         NULL, "211False"},
        {"{% generation %}{{ 'kept' }}{% endgeneration %}", NULL, "kept"},
        /* access and slicing */
        {"{{ s[1:3] }} {{ s[::-1] }} {{ s[-2:] }} {{ s[1] }} {{ s[:-1] }}",
         "{\"s\": \"h\xc3\xa9llo\"}", "\xc3\xa9l oll\xc3\xa9h lo \xc3\xa9 h\xc3\xa9ll"},
        {"{{ m.role }} {{ m['role'] }} {{ ms.0 }} {{ ms[-1] }} {{ m['items'] }}",
         "{\"m\": {\"role\": \"user\", \"items\": 5}, \"ms\": [4, 5]}", "user user 4 5 5"},
        {"{{ d.get('a') }} {{ d.get('z', 'no') }} {{ d.keys()|list }} {{ d.z is defined }}",
         "{\"d\": {\"a\": 1}}", "1 no ['a'] False"},
        /* filters */
        {"{{ x|tojson }}", "{\"x\": {\"a\": [1, 2.5, null, true, \"\xc3\xa9\\n\\\"\"]}}",
         "{\"a\": [1, 2.5, null, true, \"\xc3\xa9\\n\\\"\"]}"},
        {"{{ x|tojson(indent=2) }}", "{\"x\": {\"a\": [1], \"b\": {}}}",
         "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}"},
        {"{{ '\xc3\xa9'|tojson(ensure_ascii=true) }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
         NULL, "\"\\u00e9\" {\"a\": 2, \"b\": 1}"},
        {"{{ ' a b '|trim }}|{{ 'xyx'|trim('x') }}|{{ 'Ab'|upper }}{{ 'Ab'|lower }}"
         "|{{ 'hello world'|title }}|{{ 'hI'|capitalize }}",
         NULL, "a b|y|ABab|Hello World|Hi"},
        /* straße été -> STRASSE ÉTÉ; ÉCOLE МИР -> école мир; école мир -> École Мир */
        {"{{ 'stra\u00dfe \u00e9t\u00e9'|upper }} {{ '\u00c9COLE \u041c\u0418\u0420'|lower }} "
         "{{ '\u00e9cole \u043c\u0438\u0440'|title }}",
         NULL,
         "STRASSE \xc3\x89T\xc3\x89 \xc3\xa9"
         "cole \xd0\xbc\xd0\xb8\xd1\x80 \xc3\x89"
         "cole "
         "\xd0\x9c\xd0\xb8\xd1\x80"},
        {"{{ 'a b'|replace(' ', '_') }} {{ [1, 'a', none]|join('-') }} {{ 'abc'|length }}", NULL,
         "a_b 1-a-None 3"},
        {"{{ ms|selectattr('r', 'equalto', 'u')|map(attribute='c')|join(',') }} "
         "{{ ms|rejectattr('r', 'eq', 'u')|list|length }} {{ ms|map(attribute='r')|list }}",
         "{\"ms\": [{\"r\": \"u\", \"c\": 1}, {\"r\": \"a\", \"c\": 2}, {\"r\": \"u\", \"c\": 3}]}",
         "1,3 1 ['u', 'a', 'u']"},
        {"{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ [1, 2, 2]|unique|list }} "
         "{{ [1, 2]|sum }} {{ [1, 5, 3]|max }} {{ [1, 5, 3]|min }}",
         NULL, "[1, 2, 3] ['A', 'b', 'c'] [1, 2] 3 5 1"},
        {"{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}", NULL,
         "a\n  b\n\n  c|  a\n  b"},
        {"{{ '42'|int }} {{ '3.7'|int }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }}", NULL,
         "42 3 0 3 2.5"},
        {"{{ [1, 2]|first }}{{ [1, 2]|last }}{{ 'abc'|first }} {{ 'abc'|list }} {{ 'ab'|reverse }}",
         NULL, "12a ['a', 'b', 'c'] ba"},
        {"{% for k, v in {'b': 2, 'a': 1}|dictsort %}{{ k }}{{ v }}{% endfor %}", NULL, "a1b2"},
        /* str methods */
        {"{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a-b-c'.rsplit('-', 1) }}", NULL,
         "['a', 'b', 'c'] ['a', 'b', '', 'c'] ['a-b', 'c']"},
        {"{{ '  x  '.strip() }}|{{ '\\n\\nhi\\n'.lstrip('\\n') }}|{{ 'xhix'.rstrip('x') }}", NULL,
         "x|hi\n|xhi"},
        {"{{ 'abc'.startswith('a') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'abc'.replace('b', 'X') "
         "}}"
         " {{ 'abc'.find('c') }} {{ ', '.join(['a', 'b']) }}",
         NULL, "True True aXc 2 a, b"},
        /* tests and logic */
        {"{{ none is none }} {{ 1 is number }} {{ true is integer }} {{ 1.0 is float }} "
         "{{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} "
         "{{ 9 is divisibleby 3 }} {{ x is sequence }}",
         NULL, "True True False True True True True True True True"},
        {"{{ true and 'x' }} {{ false or 'y' }} {{ 0 or none }} {{ not 0 }} {{ not x is defined }}",
         NULL, "x y None True True"},
        {"{{ 'a' if false }}|{{ 'b' if true else 'c' }}|{{ 1 if 0 else 2 if 0 else 3 }}", NULL,
         "|b|3"},
        {"{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} "
         "{{ [1, 2] < [1, 3] }} {{ 'q' not in 'xyz' }} {{ 'a' in {'a': 1} }}",
         NULL, "True False True True True True True True"},
        {"{% if a %}A{% elif b %}B{% else %}C{% endif %}", "{\"b\": 1}", "B"},
        {"{{ strftime_now('%Y-%m-%d') }}", NULL, "2023-11-14"},
};

static char *render(const char *tmpl, const char *ctx, struct jinja_error *err)
{
    struct jinja_options opt;
    struct jinja_template *t;
    char *out = NULL;
    jinja_options_init_hf(&opt);
    opt.now = 1700000000; /* 2023-11-14T22:13:20Z */
    if (jinja_template_parse(tmpl, strlen(tmpl), &opt, &t, err) != 0)
        return NULL;
    json_t *c = ctx ? json_loads(ctx, 0, NULL) : NULL;
    ck_assert_msg(!ctx || c, "bad test context %s", ctx);
    if (jinja_template_render(t, c, &out, NULL, err) != 0)
        out = NULL;
    json_decref(c);
    jinja_template_destroy(t);
    return out;
}

START_TEST(test_render_cases)
{
    const struct render_case *c = &cases[_i];
    struct jinja_error err;
    char *out = render(c->tmpl, c->ctx, &err);
    ck_assert_msg(out != NULL, "case %d: %s failed: %d:%d %s", _i, c->tmpl, err.line, err.column,
                  err.message);
    ck_assert_msg(strcmp(out, c->want) == 0, "case %d: %s\n want [%s]\n got  [%s]", _i, c->tmpl,
                  c->want, out);
    free(out);
}
END_TEST

struct error_case {
    const char *tmpl;
    enum jinja_error_kind kind;
    int line, column;
    const char *needle; /* substring of the message */
};

static const struct error_case errors[] = {
        {"{{ raise_exception('No messages provided.') }}", JINJA_ERROR_RAISED, 1, 4,
         "No messages provided."},
        {"ok\n{{ x.y }}", JINJA_ERROR_RUNTIME, 2, 5, "'x' is undefined"},
        {"{{ 'a' + 1 }}", JINJA_ERROR_RUNTIME, 1, 8, "unsupported operand"},
        {"{% if x %}\n  {% for %}", JINJA_ERROR_SYNTAX, 2, 10, "expected a variable name"},
        {"{% if x %}never closed", JINJA_ERROR_SYNTAX, 1, 23, "endif"},
        {"{{ 'unterminated }}", JINJA_ERROR_SYNTAX, 1, 4, "unterminated string"},
        {"{{ x | nosuchfilter }}", JINJA_ERROR_RUNTIME, 1, 6, "nosuchfilter"},
        {"{{ x is nosuchtest }}", JINJA_ERROR_RUNTIME, 1, 6, "nosuchtest"},
        {"{% frobnicate %}", JINJA_ERROR_SYNTAX, 1, 4, "frobnicate"},
        {"{{ 1 // 0 }}", JINJA_ERROR_RUNTIME, 1, 6, "division by zero"},
        {"{{ none|tojson }}{{ x|tojson }}", JINJA_ERROR_RUNTIME, 1, 22, "not JSON serializable"},
        {"{% set n = 5 %}{% set n.a = 1 %}", JINJA_ERROR_RUNTIME, 1, 19, "non-namespace"},
        {"{{ 9223372036854775807 + 1 }}", JINJA_ERROR_RUNTIME, 1, 24, "overflow"},
        {"{{ (1 }}", JINJA_ERROR_SYNTAX, 1, 7, "expected ')'"},
        {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", JINJA_ERROR_RUNTIME, 1, 34, "argument"},
};

START_TEST(test_error_cases)
{
    const struct error_case *c = &errors[_i];
    struct jinja_error err;
    char *out = render(c->tmpl, NULL, &err);
    ck_assert_msg(out == NULL, "case %d: %s rendered [%s]", _i, c->tmpl, out ? out : "");
    ck_assert_msg(err.kind == c->kind, "case %d: kind %d, want %d (%s)", _i, err.kind, c->kind,
                  err.message);
    ck_assert_msg(err.line == c->line && err.column == c->column,
                  "case %d: at %d:%d, want %d:%d (%s)", _i, err.line, err.column, c->line,
                  c->column, err.message);
    ck_assert_msg(strstr(err.message, c->needle) != NULL, "case %d: message [%s] lacks [%s]", _i,
                  err.message, c->needle);
}
END_TEST

START_TEST(test_limits)
{
    struct jinja_options opt;
    struct jinja_template *t;
    struct jinja_error err;
    char *out;
    jinja_options_init_hf(&opt);
    opt.max_steps = 10000;
    opt.max_output = 1000;
    opt.max_depth = 50;
    const char *loop = "{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) %}"
                       "{% endfor %}{% endfor %}{% endfor %}";
    ck_assert_int_eq(jinja_template_parse(loop, strlen(loop), &opt, &t, &err), 0);
    ck_assert_int_eq(jinja_template_render(t, NULL, &out, NULL, &err), -1);
    ck_assert_int_eq(err.kind, JINJA_ERROR_LIMIT);
    jinja_template_destroy(t);

    const char *big = "{{ 'x' * 5000 }}";
    ck_assert_int_eq(jinja_template_parse(big, strlen(big), &opt, &t, &err), 0);
    ck_assert_int_eq(jinja_template_render(t, NULL, &out, NULL, &err), -1);
    ck_assert_int_eq(err.kind, JINJA_ERROR_LIMIT);
    jinja_template_destroy(t);

    const char *recurse = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    ck_assert_int_eq(jinja_template_parse(recurse, strlen(recurse), &opt, &t, &err), 0);
    ck_assert_int_eq(jinja_template_render(t, NULL, &out, NULL, &err), -1);
    ck_assert_int_eq(err.kind, JINJA_ERROR_LIMIT);
    jinja_template_destroy(t);

    /* a namespace attribute cannot grow into a stack-overflowing nest of lists */
    opt.max_steps = 1000000;
    const char *nest = "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = "
                       "[ns.x] %}{% endfor %}{{ ns.x|tojson }}";
    ck_assert_int_eq(jinja_template_parse(nest, strlen(nest), &opt, &t, &err), 0);
    ck_assert_int_eq(jinja_template_render(t, NULL, &out, NULL, &err), -1);
    ck_assert_int_eq(err.kind, JINJA_ERROR_LIMIT);
    jinja_template_destroy(t);

    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{{ ");
    for (int i = 0; i < 500; i++)
        deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 500; i++)
        deep[n++] = ')';
    snprintf(deep + n, sizeof deep - n, " }}");
    ck_assert_int_eq(jinja_template_parse(deep, strlen(deep), &opt, &t, &err), -1);
    ck_assert_int_ne(err.kind, JINJA_ERROR_NONE);
}
END_TEST

/* Random mutations of the real templates (deletions, duplications, random bytes, swaps of
 * template syntax characters) must parse or fail cleanly and render or fail cleanly. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

START_TEST(test_fuzz_mutated_templates)
{
    static const char *const names[] = {"smollm2",  "qwen2.5",  "qwen3",        "qwen3.5",
                                        "llama3.1", "llama3.2", "mistral-nemo", "hermes3"};
    static const char syntax[] = "{}%#-+()[]|.,:'\"\n ~=<>!*/";
    const char *src = getenv("CORTEX_SOURCE_DIR");
    char path[4096];
    const char *ctx_text =
            "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
            "\"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": "
            "[{\"id\": \"abcdefghi\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": "
            "1}}}]}, "
            "{\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"r\"}], "
            "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": "
            "\"d\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": {\"type\": "
            "\"integer\"}}}}}], \"add_generation_prompt\": true, \"bos_token\": \"<s>\"}";
    json_t *ctx = json_loads(ctx_text, 0, NULL);
    struct jinja_options opt;
    jinja_options_init_hf(&opt);
    opt.max_steps = 200000;
    opt.max_output = 1 << 20;
    unsigned seed = 42;
    int parsed = 0, rendered = 0;
    ck_assert_ptr_nonnull(ctx);
    for (size_t m = 0; m < sizeof names / sizeof *names; m++) {
        size_t len;
        snprintf(path, sizeof path, "%s/tests/chat_templates/templates/%s.jinja", src ? src : ".",
                 names[m]);
        char *orig = slurp(path, &len);
        ck_assert_msg(orig != NULL, "cannot read %s", path);
        for (int iter = 0; iter < 250; iter++) {
            char *buf = malloc(len * 2 + 64);
            size_t n = len;
            memcpy(buf, orig, len);
            int edits = 1 + (int)(rand_r(&seed) % 4);
            for (int e = 0; e < edits && n > 0; e++) {
                size_t at = rand_r(&seed) % n;
                switch (rand_r(&seed) % 4) {
                case 0: /* delete a span */ {
                    size_t span = 1 + rand_r(&seed) % 8;
                    if (span > n - at)
                        span = n - at;
                    memmove(buf + at, buf + at + span, n - at - span);
                    n -= span;
                    break;
                }
                case 1: /* replace a byte with a syntax character */
                    buf[at] = syntax[rand_r(&seed) % (sizeof syntax - 1)];
                    break;
                case 2: /* replace a byte with a random byte */
                    buf[at] = (char)(rand_r(&seed) & 0xFF);
                    break;
                default: /* duplicate a span */ {
                    size_t span = 1 + rand_r(&seed) % 16;
                    if (span > n - at)
                        span = n - at;
                    if (n + span <= len * 2 + 32) {
                        memmove(buf + at + span, buf + at, n - at);
                        n += span;
                    }
                }
                }
            }
            struct jinja_template *t;
            struct jinja_error err;
            if (jinja_template_parse(buf, n, &opt, &t, &err) == 0) {
                char *out;
                parsed++;
                if (jinja_template_render(t, ctx, &out, NULL, &err) == 0) {
                    rendered++;
                    free(out);
                } else {
                    ck_assert_int_ne(err.kind, JINJA_ERROR_NONE);
                }
                jinja_template_destroy(t);
            } else {
                ck_assert_int_ne(err.kind, JINJA_ERROR_NONE);
                ck_assert(err.message[0] != '\0');
            }
            free(buf);
        }
        free(orig);
    }
    /* the mutations must exercise both paths, not only the parser's error exits */
    ck_assert_int_gt(parsed, 100);
    ck_assert_int_gt(rendered, 50);
    json_decref(ctx);
}
END_TEST

START_TEST(test_random_bytes)
{
    static const char alphabet[] = "{}%#-+()[]|.,:'\"~=<> \nifordsetmacro";
    unsigned seed = 7;
    char buf[256];
    struct jinja_options opt;
    jinja_options_init_hf(&opt);
    opt.max_steps = 100000;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = rand_r(&seed) % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            unsigned r = rand_r(&seed) % 100;
            buf[i] = r < 40   ? alphabet[rand_r(&seed) % (sizeof alphabet - 1)]
                     : r < 90 ? (char)('a' + rand_r(&seed) % 26)
                              : (char)(rand_r(&seed) & 0xFF);
        }
        struct jinja_template *t;
        struct jinja_error err;
        if (jinja_template_parse(buf, n, &opt, &t, &err) == 0) {
            char *out;
            if (jinja_template_render(t, NULL, &out, NULL, &err) == 0)
                free(out);
            jinja_template_destroy(t);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jinja");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_render_cases, 0, sizeof cases / sizeof *cases);
    tcase_add_loop_test(tc, test_error_cases, 0, sizeof errors / sizeof *errors);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_fuzz_mutated_templates);
    tcase_add_test(tc, test_random_bytes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
