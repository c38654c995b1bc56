/*
 * tests/unit/gateway/case_util.h — table-driven tests over data files: loading the cases of
 * tests/unit/gateway/cases/<file>.json, matching JSON against hand-written expectations, and
 * checking error outcomes.
 *
 * A case file is a JSON array of objects, each with a "name" and whatever its test reads.
 * Expectations are matched exactly (json_equal semantics: same keys, same values, integers and
 * reals distinct), except that an expected string "$re:<POSIX extended regex>" matches any
 * string it matches (for random ids such as "toolu_…").
 *
 * Header-only (static inline): every test is one executable built from one .c file.
 */
#ifndef CORTEX_TEST_CASE_UTIL_H
#define CORTEX_TEST_CASE_UTIL_H

#include <check.h>
#include <jansson.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Loads tests/unit/gateway/cases/<file> (found through CORTEX_SOURCE_DIR, set by ctest, or the
 * current directory's tests/); fails the test when it is missing or not an array. */
static inline json_t *case_util_load(const char *file)
{
    const char *root = getenv("CORTEX_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/unit/gateway/cases/%s", root ? root : ".", file);
    json_error_t jerr;
    json_t *cases = json_load_file(path, 0, &jerr);
    ck_assert_msg(cases != NULL, "%s: %s (line %d)", path, jerr.text, jerr.line);
    ck_assert_msg(json_is_array(cases) && json_array_size(cases) > 0, "%s: not a case list", path);
    return cases;
}

static inline const char *case_util_name(const json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    return name ? name : "(unnamed)";
}

/* Whether text (NULL never matches) matches the POSIX extended regex pattern. */
static inline bool case_util_match_re(const char *pattern, const char *text)
{
    if (!text)
        return false;
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* Whether actual matches expected (see the header comment). */
static inline bool case_util_match(const json_t *expected, const json_t *actual)
{
    if (json_is_string(expected) && strncmp(json_string_value(expected), "$re:", 4) == 0) {
        return case_util_match_re(json_string_value(expected) + 4, json_string_value(actual));
    }
    if (json_is_object(expected)) {
        if (!json_is_object(actual) || json_object_size(expected) != json_object_size(actual))
            return false;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)expected, key, value)
        {
            if (!case_util_match(value, json_object_get(actual, key)))
                return false;
        }
        return true;
    }
    if (json_is_array(expected)) {
        if (!json_is_array(actual) || json_array_size(expected) != json_array_size(actual))
            return false;
        for (size_t i = 0; i < json_array_size(expected); i++) {
            if (!case_util_match(json_array_get(expected, i), json_array_get(actual, i)))
                return false;
        }
        return true;
    }
    return json_equal(expected, actual);
}

/* Fails the test, naming the case, when actual does not match expected. */
static inline void case_util_assert_match(const char *name, const json_t *expected,
                                          const json_t *actual)
{
    if (case_util_match(expected, actual))
        return;
    char *e = json_dumps(expected, JSON_INDENT(1) | JSON_ENCODE_ANY);
    char *a = actual ? json_dumps(actual, JSON_INDENT(1) | JSON_ENCODE_ANY) : strdup("(none)");
    ck_abort_msg("case '%s':\nexpected %s\n     got %s", name, e, a);
    free(e);
    free(a);
}

/*
 * Checks the outcome of a call that returned rc and filled err, against the case's "error"
 * member ({"code": "<error_code_name>", "param": "<member>" or null, "message": optional
 * substring}). Returns true when the case expects an error (and it matched).
 */
static inline bool case_util_check_error(const json_t *c, int rc, const struct error *err)
{
    const json_t *want = json_object_get(c, "error");
    const char *name = case_util_name(c);
    if (!want) {
        ck_assert_msg(rc == 0, "case '%s': unexpected error %s: %s (param %s)", name,
                      error_code_name(err->code), error_message(err),
                      err->param ? err->param : "-");
        return false;
    }
    ck_assert_msg(rc < 0, "case '%s': expected an error, got success", name);
    const char *code = json_string_value(json_object_get(want, "code"));
    ck_assert_msg(code && strcmp(code, error_code_name(err->code)) == 0,
                  "case '%s': expected code %s, got %s (%s)", name, code,
                  error_code_name(err->code), error_message(err));
    const json_t *param = json_object_get(want, "param");
    if (param) {
        if (json_is_null(param))
            ck_assert_msg(err->param == NULL, "case '%s': expected no param, got %s", name,
                          err->param);
        else
            ck_assert_msg(err->param && strcmp(err->param, json_string_value(param)) == 0,
                          "case '%s': expected param %s, got %s", name, json_string_value(param),
                          err->param ? err->param : "(none)");
    }
    const char *message = json_string_value(json_object_get(want, "message"));
    if (message)
        ck_assert_msg(strstr(error_message(err), message) != NULL,
                      "case '%s': message '%s' lacks '%s'", name, error_message(err), message);
    return true;
}

#endif
