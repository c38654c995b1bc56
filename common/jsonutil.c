/*
 * common/jsonutil.c — typed member access with client-facing errors, parsing, compact dumps
 * (see jsonutil.h).
 */
#include "jsonutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* Looks up key; returns 1 with *member set, 0 for an absent/null optional member, -1 (error
 * set) for an absent required one. */
static int jsonutil_lookup(const json_t *obj, const char *path, const char *key,
                           enum jsonutil_need need, json_t **member, struct error *err)
{
    json_t *m = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (m && !json_is_null(m)) {
        *member = m;
        return 1;
    }
    if (need == JSONUTIL_OPTIONAL)
        return 0;
    char *name = path ? xasprintf("%s.%s", path, key) : xstrdup(key);
    error_set(err, ERR_INVALID_REQUEST, name, "'%s' is required", name);
    free(name);
    return -1;
}

/* Sets err to "'<name>' <what>" with param <name>; returns -1. */
static int jsonutil_fail(const char *path, const char *key, const char *what, struct error *err)
{
    char *name = path ? xasprintf("%s.%s", path, key) : xstrdup(key);
    error_set(err, ERR_INVALID_REQUEST, name, "'%s' %s", name, what);
    free(name);
    return -1;
}

int jsonutil_get_string(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, const char **out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (!json_is_string(m))
        return jsonutil_fail(path, key, "must be a string", err);
    *out = json_string_value(m);
    return 1;
}

/* Converts m to an integer when it is one (integral reals included); 0 on success. */
static int jsonutil_as_int(const json_t *m, int64_t *out)
{
    if (json_is_integer(m)) {
        *out = (int64_t)json_integer_value(m);
        return 0;
    }
    if (json_is_real(m)) {
        double d = json_real_value(m);
        /* -2^63 is exact as a double; 2^63 is the first value that does not fit. */
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            *out = (int64_t)d;
            return 0;
        }
    }
    return -1;
}

int jsonutil_get_int(const json_t *obj, const char *path, const char *key, enum jsonutil_need need,
                     int64_t *out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (jsonutil_as_int(m, out) != 0)
        return jsonutil_fail(path, key, "must be an integer", err);
    return 1;
}

int jsonutil_get_int_range(const json_t *obj, const char *path, const char *key,
                           enum jsonutil_need need, int64_t min, int64_t max, int64_t *out,
                           struct error *err)
{
    int64_t v;
    int rc = jsonutil_get_int(obj, path, key, need, &v, err);
    if (rc <= 0)
        return rc;
    if (v < min || v > max) {
        char *what;
        if (max == INT64_MAX)
            what = xasprintf("must be an integer >= %lld", (long long)min);
        else if (min == INT64_MIN)
            what = xasprintf("must be an integer <= %lld", (long long)max);
        else
            what = xasprintf("must be an integer between %lld and %lld", (long long)min,
                             (long long)max);
        jsonutil_fail(path, key, what, err);
        free(what);
        return -1;
    }
    *out = v;
    return 1;
}

int jsonutil_get_number(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, double *out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (!json_is_number(m))
        return jsonutil_fail(path, key, "must be a number", err);
    *out = json_number_value(m);
    return 1;
}

int jsonutil_get_number_range(const json_t *obj, const char *path, const char *key,
                              enum jsonutil_need need, double min, double max, double *out,
                              struct error *err)
{
    double v;
    int rc = jsonutil_get_number(obj, path, key, need, &v, err);
    if (rc <= 0)
        return rc;
    if (!(v >= min && v <= max)) {
        char *what = xasprintf("must be a number between %g and %g", min, max);
        jsonutil_fail(path, key, what, err);
        free(what);
        return -1;
    }
    *out = v;
    return 1;
}

int jsonutil_get_bool(const json_t *obj, const char *path, const char *key, enum jsonutil_need need,
                      bool *out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean(m))
        return jsonutil_fail(path, key, "must be a boolean", err);
    *out = json_is_true(m);
    return 1;
}

int jsonutil_get_object(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, json_t **out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (!json_is_object(m))
        return jsonutil_fail(path, key, "must be an object", err);
    *out = m;
    return 1;
}

int jsonutil_get_array(const json_t *obj, const char *path, const char *key,
                       enum jsonutil_need need, json_t **out, struct error *err)
{
    json_t *m;
    int rc = jsonutil_lookup(obj, path, key, need, &m, err);
    if (rc <= 0)
        return rc;
    if (!json_is_array(m))
        return jsonutil_fail(path, key, "must be an array", err);
    *out = m;
    return 1;
}

json_t *jsonutil_parse(const char *data, size_t len, struct error *err)
{
    json_error_t jerr;
    json_t *json = json_loadb(data, len, JSON_DECODE_ANY, &jerr);
    if (!json)
        error_set(err, ERR_INVALID_JSON, NULL, "invalid JSON at line %d, column %d: %s", jerr.line,
                  jerr.column, jerr.text);
    return json;
}

json_t *jsonutil_parse_object(const char *data, size_t len, struct error *err)
{
    json_t *json = jsonutil_parse(data, len, err);
    if (json && !json_is_object(json)) {
        error_set(err, ERR_INVALID_REQUEST, NULL, "the request body must be a JSON object");
        json_decref(json);
        return NULL;
    }
    return json;
}

static int jsonutil_dump_callback(const char *data, size_t size, void *b)
{
    buf_append(b, data, size);
    return 0;
}

void jsonutil_dump_buf(struct buf *b, const json_t *json)
{
    json_dump_callback(json, jsonutil_dump_callback, b, JSON_COMPACT | JSON_ENCODE_ANY);
}

char *jsonutil_dumps(const json_t *json)
{
    struct buf b = BUF_INIT;
    jsonutil_dump_buf(&b, json);
    return buf_steal(&b, NULL);
}

json_t *jsonutil_string_lossy(const char *text, size_t n)
{
    json_t *s = json_stringn(text, n);
    if (s)
        return s;
    struct buf b = BUF_INIT;
    buf_append_utf8(&b, text, n);
    s = json_stringn(buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}
