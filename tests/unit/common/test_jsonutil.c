/*
 * tests/unit/common/test_jsonutil.c — typed member access, client-facing messages, parsing and
 * compact output (common/jsonutil.h).
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

#include "common/test_util.h"

static json_t *request;

static void setup(void)
{
    static const char text[] =
            "{\"model\":\"qwen\",\"max_tokens\":100,\"max_real\":100.0,\"half\":1.5,"
            "\"huge\":1e300,\"temperature\":0.7,\"stream\":true,\"stop\":null,"
            "\"messages\":[{\"role\":\"user\"}],\"metadata\":{\"user_id\":\"u\"},"
            "\"neg\":-9223372036854775808,\"zero\":0}";
    json_error_t jerr;
    request = json_loads(text, 0, &jerr);
    ck_assert_ptr_nonnull(request);
}

static void teardown(void)
{
    json_decref(request);
}

/* Asserts that err holds an invalid-request error with this message and param, then clears it. */
static void assert_error(struct error *err, const char *message, const char *param)
{
    ck_assert_int_eq(err->code, ERR_INVALID_REQUEST);
    ck_assert_str_eq(error_message(err), message);
    ck_assert_pstr_eq(err->param, param);
    error_clear(err);
}

START_TEST(test_get_string)
{
    struct error err = ERROR_INIT;
    const char *s = "preset";
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "model", JSONUTIL_REQUIRED, &s, &err), 1);
    ck_assert_str_eq(s, "qwen");
    s = "preset";
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "user", JSONUTIL_OPTIONAL, &s, &err), 0);
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "stop", JSONUTIL_OPTIONAL, &s, &err), 0);
    ck_assert_str_eq(s, "preset");
    ck_assert_int_eq(err.code, ERR_NONE);
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "user", JSONUTIL_REQUIRED, &s, &err), -1);
    assert_error(&err, "'user' is required", "user");
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "stop", JSONUTIL_REQUIRED, &s, &err), -1);
    assert_error(&err, "'stop' is required", "stop");
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "max_tokens", JSONUTIL_OPTIONAL, &s, &err),
                     -1);
    assert_error(&err, "'max_tokens' must be a string", "max_tokens");
    ck_assert_str_eq(s, "preset");
}
END_TEST

START_TEST(test_get_int)
{
    struct error err = ERROR_INIT;
    int64_t v = -7;
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "max_tokens", JSONUTIL_REQUIRED, &v, &err), 1);
    ck_assert_int_eq(v, 100);
    v = -7;
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "max_real", JSONUTIL_REQUIRED, &v, &err), 1);
    ck_assert_int_eq(v, 100);
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "neg", JSONUTIL_REQUIRED, &v, &err), 1);
    ck_assert_int_eq(v, INT64_MIN);
    v = -7;
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "seed", JSONUTIL_OPTIONAL, &v, &err), 0);
    ck_assert_int_eq(v, -7);
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "half", JSONUTIL_OPTIONAL, &v, &err), -1);
    assert_error(&err, "'half' must be an integer", "half");
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "huge", JSONUTIL_OPTIONAL, &v, &err), -1);
    assert_error(&err, "'huge' must be an integer", "huge");
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "model", JSONUTIL_OPTIONAL, &v, &err), -1);
    assert_error(&err, "'model' must be an integer", "model");
    ck_assert_int_eq(jsonutil_get_int(request, NULL, "stream", JSONUTIL_OPTIONAL, &v, &err), -1);
    assert_error(&err, "'stream' must be an integer", "stream");
    ck_assert_int_eq(v, -7);
}
END_TEST

START_TEST(test_get_int_range)
{
    struct error err = ERROR_INIT;
    int64_t v = 0;
    ck_assert_int_eq(jsonutil_get_int_range(request, NULL, "max_tokens", JSONUTIL_REQUIRED, 1, 100,
                                            &v, &err),
                     1);
    ck_assert_int_eq(v, 100);
    v = 0;
    ck_assert_int_eq(
            jsonutil_get_int_range(request, NULL, "max_tokens", JSONUTIL_REQUIRED, 1, 99, &v, &err),
            -1);
    assert_error(&err, "'max_tokens' must be an integer between 1 and 99", "max_tokens");
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(jsonutil_get_int_range(request, NULL, "zero", JSONUTIL_OPTIONAL, 1, INT64_MAX,
                                            &v, &err),
                     -1);
    assert_error(&err, "'zero' must be an integer >= 1", "zero");
    ck_assert_int_eq(jsonutil_get_int_range(request, NULL, "max_tokens", JSONUTIL_OPTIONAL,
                                            INT64_MIN, 10, &v, &err),
                     -1);
    assert_error(&err, "'max_tokens' must be an integer <= 10", "max_tokens");
    ck_assert_int_eq(
            jsonutil_get_int_range(request, NULL, "absent", JSONUTIL_OPTIONAL, 1, 2, &v, &err), 0);
    ck_assert_int_eq(
            jsonutil_get_int_range(request, NULL, "half", JSONUTIL_OPTIONAL, 1, 2, &v, &err), -1);
    assert_error(&err, "'half' must be an integer", "half");
}
END_TEST

START_TEST(test_get_number)
{
    struct error err = ERROR_INIT;
    double d = -1;
    ck_assert_int_eq(jsonutil_get_number(request, NULL, "temperature", JSONUTIL_OPTIONAL, &d, &err),
                     1);
    ck_assert_double_eq(d, 0.7);
    ck_assert_int_eq(jsonutil_get_number(request, NULL, "max_tokens", JSONUTIL_OPTIONAL, &d, &err),
                     1);
    ck_assert_double_eq(d, 100.0);
    ck_assert_int_eq(jsonutil_get_number(request, NULL, "model", JSONUTIL_OPTIONAL, &d, &err), -1);
    assert_error(&err, "'model' must be a number", "model");
    ck_assert_int_eq(jsonutil_get_number_range(request, NULL, "temperature", JSONUTIL_OPTIONAL, 0,
                                               2, &d, &err),
                     1);
    ck_assert_int_eq(jsonutil_get_number_range(request, NULL, "max_tokens", JSONUTIL_OPTIONAL, 0, 2,
                                               &d, &err),
                     -1);
    assert_error(&err, "'max_tokens' must be a number between 0 and 2", "max_tokens");
    ck_assert_int_eq(jsonutil_get_number_range(request, NULL, "temperature", JSONUTIL_OPTIONAL,
                                               0.75, 1, &d, &err),
                     -1);
    assert_error(&err, "'temperature' must be a number between 0.75 and 1", "temperature");
}
END_TEST

START_TEST(test_get_bool_object_array)
{
    struct error err = ERROR_INIT;
    bool b = false;
    json_t *j = NULL;
    ck_assert_int_eq(jsonutil_get_bool(request, NULL, "stream", JSONUTIL_OPTIONAL, &b, &err), 1);
    ck_assert(b);
    ck_assert_int_eq(jsonutil_get_bool(request, NULL, "zero", JSONUTIL_OPTIONAL, &b, &err), -1);
    assert_error(&err, "'zero' must be a boolean", "zero");
    ck_assert_int_eq(jsonutil_get_object(request, NULL, "metadata", JSONUTIL_OPTIONAL, &j, &err),
                     1);
    ck_assert_ptr_eq(j, json_object_get(request, "metadata"));
    ck_assert_int_eq(jsonutil_get_object(request, NULL, "messages", JSONUTIL_OPTIONAL, &j, &err),
                     -1);
    assert_error(&err, "'messages' must be an object", "messages");
    ck_assert_int_eq(jsonutil_get_array(request, NULL, "messages", JSONUTIL_REQUIRED, &j, &err), 1);
    ck_assert_uint_eq(json_array_size(j), 1);
    ck_assert_int_eq(jsonutil_get_array(request, NULL, "metadata", JSONUTIL_REQUIRED, &j, &err),
                     -1);
    assert_error(&err, "'metadata' must be an array", "metadata");
    ck_assert_int_eq(jsonutil_get_array(request, NULL, "tools", JSONUTIL_REQUIRED, &j, &err), -1);
    assert_error(&err, "'tools' is required", "tools");
}
END_TEST

START_TEST(test_nested_paths)
{
    struct error err = ERROR_INIT;
    json_t *msg = json_array_get(json_object_get(request, "messages"), 0);
    const char *s = NULL;
    ck_assert_int_eq(jsonutil_get_string(msg, "messages[0]", "role", JSONUTIL_REQUIRED, &s, &err),
                     1);
    ck_assert_str_eq(s, "user");
    ck_assert_int_eq(
            jsonutil_get_string(msg, "messages[0]", "content", JSONUTIL_REQUIRED, &s, &err), -1);
    assert_error(&err, "'messages[0].content' is required", "messages[0].content");
    int64_t v;
    ck_assert_int_eq(jsonutil_get_int(msg, "messages[0]", "role", JSONUTIL_REQUIRED, &v, &err), -1);
    assert_error(&err, "'messages[0].role' must be an integer", "messages[0].role");
}
END_TEST

START_TEST(test_non_object_and_null_err)
{
    json_t *arr = json_array();
    const char *s = NULL;
    struct error err = ERROR_INIT;
    ck_assert_int_eq(jsonutil_get_string(arr, NULL, "model", JSONUTIL_OPTIONAL, &s, &err), 0);
    ck_assert_int_eq(jsonutil_get_string(arr, NULL, "model", JSONUTIL_REQUIRED, &s, &err), -1);
    assert_error(&err, "'model' is required", "model");
    ck_assert_int_eq(jsonutil_get_string(NULL, NULL, "model", JSONUTIL_OPTIONAL, &s, NULL), 0);
    /* err may be NULL: failures are still reported by the return value. */
    ck_assert_int_eq(jsonutil_get_string(request, NULL, "zero", JSONUTIL_OPTIONAL, &s, NULL), -1);
    json_decref(arr);
}
END_TEST

START_TEST(test_parse)
{
    struct error err = ERROR_INIT;
    static const char good[] = "{\"a\":[1,2,{\"b\":null}]}";
    json_t *j = jsonutil_parse(good, strlen(good), &err);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(err.code, ERR_NONE);
    json_decref(j);
    j = jsonutil_parse("42", 2, &err);
    ck_assert_int_eq(json_integer_value(j), 42);
    json_decref(j);
    /* Only len bytes are read: trailing garbage past len is not seen. */
    j = jsonutil_parse("[1]xyz", 3, &err);
    ck_assert_ptr_nonnull(j);
    json_decref(j);

    static const char bad[] = "{\n  \"a\": 1,\n  \"b\": }";
    j = jsonutil_parse(bad, strlen(bad), &err);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(err.code, ERR_INVALID_JSON);
    ck_assert_msg(strncmp(error_message(&err), "invalid JSON at line 3, column ", 31) == 0, "%s",
                  error_message(&err));
    ck_assert_ptr_null(err.param);
    error_clear(&err);

    ck_assert_ptr_null(jsonutil_parse("", 0, &err));
    ck_assert_int_eq(err.code, ERR_INVALID_JSON);
    error_clear(&err);
    ck_assert_ptr_null(jsonutil_parse("\"\xff\"", 3, &err));
    ck_assert_int_eq(err.code, ERR_INVALID_JSON);
    error_clear(&err);
    ck_assert_ptr_null(jsonutil_parse("{} {}", 5, NULL));
}
END_TEST

START_TEST(test_parse_object)
{
    struct error err = ERROR_INIT;
    json_t *j = jsonutil_parse_object("{\"model\":\"m\"}", 13, &err);
    ck_assert(json_is_object(j));
    json_decref(j);
    ck_assert_ptr_null(jsonutil_parse_object("[1,2]", 5, &err));
    ck_assert_int_eq(err.code, ERR_INVALID_REQUEST);
    ck_assert_str_eq(error_message(&err), "the request body must be a JSON object");
    error_clear(&err);
    ck_assert_ptr_null(jsonutil_parse_object("{", 1, &err));
    ck_assert_int_eq(err.code, ERR_INVALID_JSON);
    error_clear(&err);
}
END_TEST

START_TEST(test_dump_compact)
{
    json_t *j = json_pack("{s:i, s:[b, n], s:s, s:{}}", "a", 1, "b", 1, "c", "x\ny\"", "d");
    char *s = jsonutil_dumps(j);
    ck_assert_str_eq(s, "{\"a\":1,\"b\":[true,null],\"c\":\"x\\ny\\\"\",\"d\":{}}");
    free(s);
    struct buf b = BUF_INIT;
    buf_append_str(&b, "data: ");
    jsonutil_dump_buf(&b, j);
    buf_append_str(&b, "\n\n");
    ck_assert_str_eq(buf_cstr(&b),
                     "data: {\"a\":1,\"b\":[true,null],\"c\":\"x\\ny\\\"\",\"d\":{}}\n\n");
    buf_free(&b);
    json_decref(j);
    j = json_string("scalar");
    s = jsonutil_dumps(j);
    ck_assert_str_eq(s, "\"scalar\"");
    free(s);
    json_decref(j);
}
END_TEST

START_TEST(test_string_lossy)
{
    json_t *s = jsonutil_string_lossy("ok \xe2\x98\x83", 6);
    ck_assert_str_eq(json_string_value(s), "ok \xe2\x98\x83");
    json_decref(s);
    s = jsonutil_string_lossy("cut \xe2\x98", 6);
    ck_assert_str_eq(json_string_value(s), "cut \xEF\xBF\xBD\xEF\xBF\xBD");
    json_decref(s);
    s = jsonutil_string_lossy("a\0b", 3);
    ck_assert_uint_eq(json_string_length(s), 3);
    json_decref(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonutil");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_get_string);
    tcase_add_test(tc, test_get_int);
    tcase_add_test(tc, test_get_int_range);
    tcase_add_test(tc, test_get_number);
    tcase_add_test(tc, test_get_bool_object_array);
    tcase_add_test(tc, test_nested_paths);
    tcase_add_test(tc, test_non_object_and_null_err);
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_parse_object);
    tcase_add_test(tc, test_dump_compact);
    tcase_add_test(tc, test_string_lossy);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
