/*
 * common/config.h — one declarative table of settings per process, filled from defaults, the
 * environment and command-line flags, and documented by a generated --help.
 *
 * Contract: a process describes every setting once, in a static table:
 *
 *     static struct gateway_config cfg;
 *     static const struct config_entry gateway_settings[] = {
 *         {.name = "listen", .env = "CORTEX_GATEWAY_LISTEN", .type = CONFIG_TYPE_STRING,
 *          .def = "0.0.0.0:8080", .help = "address to listen on", .target = &cfg.listen},
 *         {.name = "max-body", .env = "CORTEX_GATEWAY_MAX_BODY", .type = CONFIG_TYPE_SIZE,
 *          .def = "32MiB", .min = "1KiB", .max = "1GiB", .help = "largest request body",
 *          .target = &cfg.max_body},
 *     };
 *
 * and config_parse() fills the targets: first every default, then every environment variable
 * that is set and not empty, then the flags (--name=value, --name value; for booleans also
 * --name and --no-name). Later sources override earlier ones. Values are checked against the
 * type and the bounds; the first bad value, unknown flag or stray argument stops parsing with a
 * message that names the setting, where the value came from, the value and what is allowed.
 *
 * Types and their targets:
 *   CONFIG_TYPE_STRING    char **   owned by the config (xstrdup); release with config_free()
 *   CONFIG_TYPE_INT       int64_t * decimal integer
 *   CONFIG_TYPE_DOUBLE    double *  finite decimal number
 *   CONFIG_TYPE_BOOL      bool *    true/false, yes/no, on/off, 1/0 (any case)
 *   CONFIG_TYPE_DURATION  int64_t * milliseconds; "250ms", "5s", "2m", "1h", "1d" (timing.h)
 *   CONFIG_TYPE_SIZE      int64_t * bytes; "512", "64KiB", "32MB", "1GiB" (KB = 1000, KiB = 1024)
 * Defaults and bounds are written as text in the same syntax. Parsing is not thread-safe: run it
 * at start-up, or serialise config_set() calls made at run time with readers of the targets.
 */
#ifndef CORTEX_CONFIG_H
#define CORTEX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_type {
    CONFIG_TYPE_STRING,
    CONFIG_TYPE_INT,
    CONFIG_TYPE_DOUBLE,
    CONFIG_TYPE_BOOL,
    CONFIG_TYPE_DURATION,
    CONFIG_TYPE_SIZE,
};

struct config_entry {
    const char *name;      /* flag name without "--", e.g. "listen" */
    const char *env;       /* environment variable, e.g. "CORTEX_GATEWAY_LISTEN"; NULL: none */
    enum config_type type; /* decides the type of *target */
    const char *def;       /* default, as text; NULL only for strings (the target stays NULL) */
    const char *min;       /* inclusive lower bound as text, numeric types only; NULL: none */
    const char *max;       /* inclusive upper bound as text, numeric types only; NULL: none */
    const char *unit;      /* unit of INT and DOUBLE values for --help ("tokens"); NULL: none */
    bool reloadable;       /* may change while the process runs (documentation for --help and
                              for callers of config_set) */
    const char *help;      /* one line for --help */
    void *target;          /* where the value goes; see the type list above */
};

/* Size of an error buffer that holds any message config_parse() writes. */
#define CONFIG_ERR_SIZE 512

/* config_parse() result when -h or --help is among the arguments. */
#define CONFIG_PARSE_HELP 1

/*
 * Fills every target of table[0..n) from defaults, then envp (a NULL-terminated "NAME=value"
 * array; NULL reads the process environment), then argv[1..argc). Returns 0 on success,
 * CONFIG_PARSE_HELP when help was asked for (nothing else is checked; print config_help() and
 * exit 0), or -1 with a message in err[0..err_size) for a bad value, an unknown flag, a stray
 * argument or a malformed table. Targets already written keep their values on failure; release
 * strings with config_free() either way.
 */
int config_parse(const struct config_entry *table, size_t n, int argc, char *const *argv,
                 char *const *envp, char *err, size_t err_size) __attribute__((warn_unused_result));

/*
 * Parses, checks and stores one value for the setting called name, as if it had come from a
 * flag (used to apply changes at run time; check entry->reloadable first). Returns 0, or -1
 * with a message in err and the target unchanged.
 */
int config_set(const struct config_entry *table, size_t n, const char *name, const char *value,
               char *err, size_t err_size) __attribute__((warn_unused_result));

/* The entry called name, or NULL. */
const struct config_entry *config_find(const struct config_entry *table, size_t n,
                                       const char *name);

/*
 * The --help text: "Usage: prog [--name=value]...", the summary line, then every setting with
 * its flag, value type, unit, environment variable, default, range, reloadability and help.
 * The caller frees the result with free().
 */
char *config_help(const char *prog, const char *summary, const struct config_entry *table,
                  size_t n);

/* Frees the strings config_parse()/config_set() stored in STRING targets and NULLs them. */
void config_free(const struct config_entry *table, size_t n);

/* The value syntaxes, for settings that arrive by other routes (e.g. a settings table). Each
 * returns 0 and sets *out, or -1 and leaves it untouched. */
int config_parse_bool(const char *text, bool *out) __attribute__((warn_unused_result));
int config_parse_size(const char *text, int64_t *out) __attribute__((warn_unused_result));

#endif
