/*
 * common/jsonutil.h — jansson helpers for reading requests with clear errors, and for writing
 * compact JSON.
 *
 * Contract: the getters look up obj[key], check its type and report failures as an
 * ERR_INVALID_REQUEST in a struct error whose message a client can act on ("'max_tokens' must
 * be an integer") and whose param names the member. path, when not NULL, prefixes the name for
 * nested members: path "messages[2]" and key "role" report 'messages[2].role'. Every getter
 * returns
 *    1  the member is present and valid; *out is set,
 *    0  an optional member is absent or JSON null; *out is left untouched (preset the default),
 *   -1  a required member is absent, or the member has the wrong type or is out of range; err
 *       is set (when not NULL) and *out is left untouched.
 * Pointers handed out (strings, objects, arrays) are borrowed from obj and live as long as it.
 */
#ifndef CORTEX_JSONUTIL_H
#define CORTEX_JSONUTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

enum jsonutil_need {
    JSONUTIL_OPTIONAL,
    JSONUTIL_REQUIRED,
};

#define JSONUTIL_WUR __attribute__((warn_unused_result))

int jsonutil_get_string(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, const char **out, struct error *err) JSONUTIL_WUR;
/* A JSON integer, or a real with an integral value within int64_t (clients write 100.0). */
int jsonutil_get_int(const json_t *obj, const char *path, const char *key, enum jsonutil_need need,
                     int64_t *out, struct error *err) JSONUTIL_WUR;
/* As jsonutil_get_int, and min <= value <= max. */
int jsonutil_get_int_range(const json_t *obj, const char *path, const char *key,
                           enum jsonutil_need need, int64_t min, int64_t max, int64_t *out,
                           struct error *err) JSONUTIL_WUR;
/* Any JSON number. */
int jsonutil_get_number(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, double *out, struct error *err) JSONUTIL_WUR;
/* As jsonutil_get_number, and min <= value <= max. */
int jsonutil_get_number_range(const json_t *obj, const char *path, const char *key,
                              enum jsonutil_need need, double min, double max, double *out,
                              struct error *err) JSONUTIL_WUR;
int jsonutil_get_bool(const json_t *obj, const char *path, const char *key, enum jsonutil_need need,
                      bool *out, struct error *err) JSONUTIL_WUR;
int jsonutil_get_object(const json_t *obj, const char *path, const char *key,
                        enum jsonutil_need need, json_t **out, struct error *err) JSONUTIL_WUR;
int jsonutil_get_array(const json_t *obj, const char *path, const char *key,
                       enum jsonutil_need need, json_t **out, struct error *err) JSONUTIL_WUR;

/*
 * Parses data[0..len) (any JSON value at the top level). Returns a new reference, or NULL with
 * err set to ERR_INVALID_JSON and a message with line and column ("invalid JSON at line 1,
 * column 9: …").
 */
json_t *jsonutil_parse(const char *data, size_t len, struct error *err) JSONUTIL_WUR;
/* As jsonutil_parse, and the value must be an object (a request body); ERR_INVALID_REQUEST
 * otherwise. */
json_t *jsonutil_parse_object(const char *data, size_t len, struct error *err) JSONUTIL_WUR;

/* Appends json compactly (no spaces, one line, keys in insertion order) to b. */
void jsonutil_dump_buf(struct buf *b, const json_t *json);
/* json compactly as a new string; the caller frees it with free(). */
char *jsonutil_dumps(const json_t *json);

/* A JSON string for n bytes of text that may not be valid UTF-8 (model output, client input):
 * bad sequences become U+FFFD instead of making jansson refuse. New reference. */
json_t *jsonutil_string_lossy(const char *text, size_t n);

#endif
