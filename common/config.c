/*
 * common/config.c — settings tables: defaults, environment, flags, bounds, --help (see
 * config.h).
 *
 * Every value, whatever its source (table default, environment, flag, config_set), goes through
 * config_store(), so a default is checked exactly like user input and one message format
 * covers every failure.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "timing.h"
#include "xalloc.h"

union config_value {
    const char *s; /* borrowed from the text being parsed */
    int64_t i;     /* INT, DURATION (ms), SIZE (bytes) */
    double d;
    bool b;
};

static const struct config_type_desc {
    const char *placeholder; /* in --help: --name=PLACEHOLDER */
    const char *expected;    /* in errors: "'x' is not <expected>" */
} config_types[] = {
        [CONFIG_TYPE_STRING] = {"STRING", "a string"},
        [CONFIG_TYPE_INT] = {"INT", "an integer"},
        [CONFIG_TYPE_DOUBLE] = {"NUMBER", "a number"},
        [CONFIG_TYPE_BOOL] = {"BOOL", "a boolean (true/false, yes/no, on/off, 1/0)"},
        [CONFIG_TYPE_DURATION] = {"DURATION", "a duration (e.g. 250ms, 5s, 2m, 1h)"},
        [CONFIG_TYPE_SIZE] = {"SIZE", "a size (e.g. 512KiB, 32MB, 1GiB)"},
};

static const struct config_size_unit {
    const char *suffix;
    int64_t bytes;
} config_size_units[] = {
        {"", 1},
        {"b", 1},
        {"kb", 1000},
        {"mb", 1000 * 1000},
        {"gb", 1000 * 1000 * 1000},
        {"tb", 1000LL * 1000 * 1000 * 1000},
        {"kib", 1024},
        {"mib", 1024 * 1024},
        {"gib", 1024 * 1024 * 1024},
        {"tib", 1024LL * 1024 * 1024 * 1024},
};

int config_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int config_parse_size(const char *text, int64_t *out)
{
    const char *p = text;
    while (isblank((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    int64_t n = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, *p - '0', &n))
            return -1;
    }
    while (isblank((unsigned char)*p))
        p++;
    size_t len = strlen(p);
    while (len > 0 && isblank((unsigned char)p[len - 1]))
        len--;
    for (size_t i = 0; i < sizeof config_size_units / sizeof config_size_units[0]; i++) {
        const struct config_size_unit *u = &config_size_units[i];
        if (strlen(u->suffix) == len && strncasecmp(p, u->suffix, len) == 0) {
            int64_t bytes;
            if (__builtin_mul_overflow(n, u->bytes, &bytes))
                return -1;
            *out = bytes;
            return 0;
        }
    }
    return -1;
}

static int config_parse_int(const char *text, int64_t *out)
{
    if (!isdigit((unsigned char)text[0]) && text[0] != '-' && text[0] != '+')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int config_parse_double(const char *text, double *out)
{
    if (!isdigit((unsigned char)text[0]) && text[0] != '-' && text[0] != '+' && text[0] != '.')
        return -1;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int config_value_parse(enum config_type type, const char *text, union config_value *v)
{
    switch (type) {
    case CONFIG_TYPE_STRING:
        v->s = text;
        return 0;
    case CONFIG_TYPE_INT:
        return config_parse_int(text, &v->i);
    case CONFIG_TYPE_DOUBLE:
        return config_parse_double(text, &v->d);
    case CONFIG_TYPE_BOOL:
        return config_parse_bool(text, &v->b);
    case CONFIG_TYPE_DURATION:
        return timing_parse_duration_ms(text, &v->i);
    case CONFIG_TYPE_SIZE:
        return config_parse_size(text, &v->i);
    }
    return -1;
}

static bool config_type_is_numeric(enum config_type type)
{
    return type == CONFIG_TYPE_INT || type == CONFIG_TYPE_DOUBLE || type == CONFIG_TYPE_DURATION ||
           type == CONFIG_TYPE_SIZE;
}

/* Compares a with b of the same numeric type: <0, 0, >0. */
static int config_value_cmp(enum config_type type, const union config_value *a,
                            const union config_value *b)
{
    if (type == CONFIG_TYPE_DOUBLE)
        return (a->d > b->d) - (a->d < b->d);
    return (a->i > b->i) - (a->i < b->i);
}

/* Writes the allowed range of e as "1..65535", ">= 1" or "<= 100"; "" when unbounded. */
static void config_format_range(const struct config_entry *e, char *out, size_t size)
{
    if (e->min && e->max)
        snprintf(out, size, "%s..%s", e->min, e->max);
    else if (e->min)
        snprintf(out, size, ">= %s", e->min);
    else if (e->max)
        snprintf(out, size, "<= %s", e->max);
    else
        snprintf(out, size, "%s", "");
}

/* Bounds were validated by config_table_check(), so they parse. */
static bool config_in_bounds(const struct config_entry *e, const union config_value *v)
{
    union config_value bound;
    if (e->min && config_value_parse(e->type, e->min, &bound) == 0 &&
        config_value_cmp(e->type, v, &bound) < 0)
        return false;
    if (e->max && config_value_parse(e->type, e->max, &bound) == 0 &&
        config_value_cmp(e->type, v, &bound) > 0)
        return false;
    return true;
}

/* Parses text, checks it and stores it in e's target. source names where the text came from
 * ("--port", "CORTEX_GATEWAY_PORT", "default"). Returns 0, or -1 with err set. */
static int config_store(const struct config_entry *e, const char *text, const char *source,
                        char *err, size_t err_size)
{
    union config_value v;
    if (config_value_parse(e->type, text, &v) != 0) {
        snprintf(err, err_size, "setting '%s' (from %s): '%.80s' is not %s", e->name, source, text,
                 config_types[e->type].expected);
        return -1;
    }
    if (config_type_is_numeric(e->type) && !config_in_bounds(e, &v)) {
        char range[128];
        config_format_range(e, range, sizeof range);
        snprintf(err, err_size, "setting '%s' (from %s): '%.80s' is out of range (allowed: %s)",
                 e->name, source, text, range);
        return -1;
    }
    switch (e->type) {
    case CONFIG_TYPE_STRING: {
        char **target = e->target;
        char *copy = xstrdup(v.s);
        free(*target);
        *target = copy;
        break;
    }
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_DURATION:
    case CONFIG_TYPE_SIZE:
        *(int64_t *)e->target = v.i;
        break;
    case CONFIG_TYPE_DOUBLE:
        *(double *)e->target = v.d;
        break;
    case CONFIG_TYPE_BOOL:
        *(bool *)e->target = v.b;
        break;
    }
    return 0;
}

static const struct config_entry *config_find_n(const struct config_entry *table, size_t n,
                                                const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return &table[i];
    }
    return NULL;
}

const struct config_entry *config_find(const struct config_entry *table, size_t n, const char *name)
{
    return config_find_n(table, n, name, strlen(name));
}

/* Catches mistakes in a process's table at its first start rather than in production. */
static int config_table_check(const struct config_entry *table, size_t n, char *err,
                              size_t err_size)
{
    for (size_t i = 0; i < n; i++) {
        const struct config_entry *e = &table[i];
        const char *problem = NULL;
        union config_value lo, hi, def;
        if (!e->name || !e->name[0] || strcmp(e->name, "help") == 0)
            problem = "bad name";
        else if ((unsigned)e->type > CONFIG_TYPE_SIZE)
            problem = "bad type";
        else if (!e->target)
            problem = "no target";
        else if (!e->help)
            problem = "no help text";
        else if (config_find(table, i, e->name))
            problem = "duplicate name";
        else if (!e->def && e->type != CONFIG_TYPE_STRING)
            problem = "no default";
        else if (e->def && config_value_parse(e->type, e->def, &def) != 0)
            problem = "default does not parse";
        else if ((e->min || e->max) && !config_type_is_numeric(e->type))
            problem = "bounds on a non-numeric type";
        else if (e->min && config_value_parse(e->type, e->min, &lo) != 0)
            problem = "min does not parse";
        else if (e->max && config_value_parse(e->type, e->max, &hi) != 0)
            problem = "max does not parse";
        else if (e->min && e->max && config_value_cmp(e->type, &lo, &hi) > 0)
            problem = "min > max";
        else if (e->def && config_type_is_numeric(e->type) && !config_in_bounds(e, &def))
            problem = "default out of range";
        if (problem) {
            snprintf(err, err_size, "config table: entry %zu ('%s'): %s", i,
                     e->name ? e->name : "(null)", problem);
            return -1;
        }
    }
    return 0;
}

static const char *config_env_get(char *const *envp, const char *name)
{
    if (!envp)
        return getenv(name);
    size_t len = strlen(name);
    for (char *const *p = envp; *p; p++) {
        if (strncmp(*p, name, len) == 0 && (*p)[len] == '=')
            return *p + len + 1;
    }
    return NULL;
}

/* Applies argv[1..argc) in order. */
static int config_parse_flags(const struct config_entry *table, size_t n, int argc,
                              char *const *argv, char *err, size_t err_size)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            snprintf(err, err_size, "unexpected argument '%.80s' (settings are --name=value)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct config_entry *e = config_find_n(table, n, name, len);
        const char *value;
        if (!e && !eq && strncmp(name, "no-", 3) == 0) {
            e = config_find(table, n, name + 3);
            if (e && e->type != CONFIG_TYPE_BOOL)
                e = NULL;
            value = "false";
        } else if (!e) {
            value = NULL;
        } else if (eq) {
            value = eq + 1;
        } else if (e->type == CONFIG_TYPE_BOOL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, err_size, "option '--%s' needs a value", e->name);
            return -1;
        }
        if (!e) {
            snprintf(err, err_size, "unknown option '--%.*s' (see --help)", (int)len, name);
            return -1;
        }
        char source[128];
        snprintf(source, sizeof source, "--%s", e->name);
        if (config_store(e, value, source, err, err_size) != 0)
            return -1;
    }
    return 0;
}

int config_parse(const struct config_entry *table, size_t n, int argc, char *const *argv,
                 char *const *envp, char *err, size_t err_size)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CONFIG_PARSE_HELP;
    }
    if (config_table_check(table, n, err, err_size) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct config_entry *e = &table[i];
        if (e->def) {
            if (config_store(e, e->def, "default", err, err_size) != 0)
                return -1;
        } else {
            config_free(e, 1); /* a string without default starts unset */
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct config_entry *e = &table[i];
        const char *value = e->env ? config_env_get(envp, e->env) : NULL;
        if (value && value[0] && config_store(e, value, e->env, err, err_size) != 0)
            return -1;
    }
    return config_parse_flags(table, n, argc, argv, err, err_size);
}

int config_set(const struct config_entry *table, size_t n, const char *name, const char *value,
               char *err, size_t err_size)
{
    const struct config_entry *e = config_find(table, n, name);
    if (!e) {
        snprintf(err, err_size, "unknown setting '%.80s'", name);
        return -1;
    }
    return config_store(e, value, "config_set", err, err_size);
}

char *config_help(const char *prog, const char *summary, const struct config_entry *table, size_t n)
{
    struct buf b = BUF_INIT;
    buf_appendf(&b, "Usage: %s [--name=value]...\n", prog);
    if (summary)
        buf_appendf(&b, "%s\n", summary);
    buf_append_str(&b, "\nSettings (flags override environment variables, which override "
                       "defaults):\n");
    for (size_t i = 0; i < n; i++) {
        const struct config_entry *e = &table[i];
        const char *ph =
                (unsigned)e->type <= CONFIG_TYPE_SIZE ? config_types[e->type].placeholder : "?";
        if (e->type == CONFIG_TYPE_BOOL)
            buf_appendf(&b, "  --%s[=%s], --no-%s", e->name, ph, e->name);
        else
            buf_appendf(&b, "  --%s=%s", e->name, ph);
        if (e->unit)
            buf_appendf(&b, " (%s)", e->unit);
        buf_appendf(&b, "\n        %s\n       ", e->help ? e->help : "");
        const char *sep = " ";
        if (e->env) {
            buf_appendf(&b, "%senv %s", sep, e->env);
            sep = ", ";
        }
        buf_appendf(&b, "%sdefault %s", sep, e->def ? e->def : "(unset)");
        char range[128];
        config_format_range(e, range, sizeof range);
        if (range[0])
            buf_appendf(&b, ", range %s", range);
        if (e->reloadable)
            buf_append_str(&b, ", reloadable");
        buf_append_char(&b, '\n');
    }
    buf_append_str(&b, "  -h, --help\n        show this help and exit\n");
    return buf_steal(&b, NULL);
}

void config_free(const struct config_entry *table, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].type == CONFIG_TYPE_STRING && table[i].target) {
            char **target = table[i].target;
            free(*target);
            *target = NULL;
        }
    }
}
