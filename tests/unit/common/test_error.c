/*
 * tests/unit/common/test_error.c — the error-code table and the error bodies of both dialects
 * (common/error.h). Expected values come from shared/API.md, not from the table.
 */
#include <check.h>
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#include "common/test_util.h"

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++) {
        if (s && strcmp(s, *list) == 0)
            return true;
    }
    return false;
}

/* The Anthropic error type that API.md assigns to each status. */
static const char *anthropic_type_for_status(int status)
{
    switch (status) {
    case 400:
    case 405:
    case 409:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 500:
    case 502:
    case 503:
        return "api_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    }
    return NULL;
}

START_TEST(test_every_row_complete_and_consistent)
{
    static const char *const openai_types[] = {"invalid_request_error",
                                               "authentication_error",
                                               "permission_error",
                                               "not_found_error",
                                               "rate_limit_error",
                                               "server_error",
                                               NULL};
    for (int i = ERR_NONE + 1; i < ERR_CODE_COUNT; i++) {
        const struct error_info *info = error_info((enum err_code)i);
        ck_assert_int_eq(info->code, i);
        ck_assert_ptr_nonnull(info->name);
        ck_assert_uint_gt(strlen(info->name), 0);
        for (const char *p = info->name; *p; p++)
            ck_assert_msg(islower((unsigned char)*p) || *p == '_', "name %s", info->name);
        ck_assert_msg(info->http_status >= 400 && info->http_status <= 599, "%s", info->name);
        ck_assert_msg(in_list(info->openai_type, openai_types), "%s", info->name);
        const char *anth = anthropic_type_for_status(info->anthropic_status);
        ck_assert_msg(anth != NULL, "%s: anthropic status %d", info->name, info->anthropic_status);
        ck_assert_msg(info->anthropic_type && strcmp(info->anthropic_type, anth) == 0,
                      "%s: anthropic type %s for status %d", info->name, info->anthropic_type,
                      info->anthropic_status);
        ck_assert_msg(info->message && info->message[0], "%s", info->name);
        /* Server-side failures are server errors in both dialects. */
        if (info->http_status >= 500)
            ck_assert_str_eq(info->openai_type, "server_error");
        else
            ck_assert_int_eq(info->anthropic_status, info->http_status);
        /* Retry-After exactly where a retry can help (429, 503). */
        ck_assert_int_eq(info->retry_after, info->http_status == 429 || info->http_status == 503);
        ck_assert_int_eq(error_http_status(info->code, ERROR_DIALECT_OPENAI), info->http_status);
        ck_assert_int_eq(error_http_status(info->code, ERROR_DIALECT_ANTHROPIC),
                         info->anthropic_status);
        /* Names are unique and round-trip. */
        enum err_code back = ERR_NONE;
        ck_assert_int_eq(error_code_parse(info->name, &back), 0);
        ck_assert_int_eq(back, i);
        ck_assert_str_eq(error_code_name((enum err_code)i), info->name);
    }
}
END_TEST

START_TEST(test_rows_required_by_the_api)
{
    static const struct {
        enum err_code code;
        int status, anthropic_status;
        const char *openai_code, *anthropic_type;
    } cases[] = {
            {ERR_INVALID_REQUEST, 400, 400, NULL, "invalid_request_error"},
            {ERR_INVALID_JSON, 400, 400, NULL, "invalid_request_error"},
            {ERR_PROMPT_TOO_LONG, 400, 400, "context_length_exceeded", "invalid_request_error"},
            {ERR_UNAUTHORIZED, 401, 401, "invalid_api_key", "authentication_error"},
            {ERR_PERMISSION, 403, 403, NULL, "permission_error"},
            {ERR_MODEL_NOT_FOUND, 404, 404, "model_not_found", "not_found_error"},
            {ERR_METHOD_NOT_ALLOWED, 405, 405, NULL, "invalid_request_error"},
            {ERR_CONFLICT, 409, 409, "conflict", "invalid_request_error"},
            {ERR_BODY_TOO_LARGE, 413, 413, "request_too_large", "request_too_large"},
            {ERR_RATE_LIMITED, 429, 429, "rate_limit_exceeded", "rate_limit_error"},
            {ERR_INTERNAL, 500, 500, NULL, "api_error"},
            {ERR_UPSTREAM, 502, 502, NULL, "api_error"},
            {ERR_UNAVAILABLE, 503, 503, "service_unavailable", "api_error"},
            {ERR_MODEL_LOADING, 503, 529, "model_loading", "overloaded_error"},
            {ERR_OVERLOADED, 503, 529, "overloaded", "overloaded_error"},
            {ERR_TIMEOUT, 504, 504, "timeout", "timeout_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct error_info *info = error_info(cases[i].code);
        ck_assert_int_eq(info->http_status, cases[i].status);
        ck_assert_int_eq(info->anthropic_status, cases[i].anthropic_status);
        ck_assert_pstr_eq(info->openai_code, cases[i].openai_code);
        ck_assert_str_eq(info->anthropic_type, cases[i].anthropic_type);
    }
    /* Claude Code compacts its context only when it reads this phrase. */
    ck_assert_ptr_nonnull(strstr(error_info(ERR_PROMPT_TOO_LONG)->message, "prompt is too long"));
}
END_TEST

START_TEST(test_unknown_codes_and_names)
{
    ck_assert_int_eq(error_info((enum err_code)999)->code, ERR_INTERNAL);
    ck_assert_int_eq(error_info((enum err_code) - 1)->code, ERR_INTERNAL);
    ck_assert_str_eq(error_code_name((enum err_code)ERR_CODE_COUNT), "internal");
    enum err_code c = ERR_TIMEOUT;
    ck_assert_int_eq(error_code_parse("no_such_error", &c), -1);
    ck_assert_int_eq(error_code_parse("", &c), -1);
    ck_assert_int_eq(c, ERR_TIMEOUT);
    ck_assert_int_eq(error_code_parse("none", &c), 0);
    ck_assert_int_eq(c, ERR_NONE);
}
END_TEST

static void assert_json_eq(json_t *got, const char *expected)
{
    json_error_t jerr;
    json_t *want = json_loads(expected, 0, &jerr);
    ck_assert_msg(want != NULL, "bad expected JSON: %s", jerr.text);
    char *got_text = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_msg(json_equal(got, want), "got %s, want %s", got_text, expected);
    free(got_text);
    json_decref(want);
}

START_TEST(test_openai_bodies)
{
    json_t *b = error_body_openai(ERR_MODEL_NOT_FOUND, "The model 'x' does not exist.", "model");
    assert_json_eq(b, "{\"error\":{\"message\":\"The model 'x' does not exist.\","
                      "\"type\":\"not_found_error\",\"param\":\"model\","
                      "\"code\":\"model_not_found\"}}");
    json_decref(b);
    b = error_body_openai(ERR_INVALID_JSON, NULL, NULL);
    assert_json_eq(b, "{\"error\":{\"message\":\"The request body is not valid JSON.\","
                      "\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
    json_decref(b);
    b = error_body_openai(ERR_RATE_LIMITED, NULL, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(b, "error"), "code")),
                     "rate_limit_exceeded");
    json_decref(b);
}
END_TEST

START_TEST(test_anthropic_bodies)
{
    json_t *b = error_body_anthropic(ERR_OVERLOADED, "busy", "req_123");
    assert_json_eq(b, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                      "\"message\":\"busy\"},\"request_id\":\"req_123\"}");
    json_decref(b);
    b = error_body_anthropic(ERR_BODY_TOO_LARGE, NULL, NULL);
    assert_json_eq(b, "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\","
                      "\"message\":\"The request body is too large.\"}}");
    json_decref(b);
}
END_TEST

START_TEST(test_bodies_survive_invalid_utf8)
{
    json_t *b = error_body_openai(ERR_MODEL_NOT_FOUND, "model '\xff' not found", "\xc3");
    json_t *err = json_object_get(b, "error");
    ck_assert_str_eq(json_string_value(json_object_get(err, "message")),
                     "model '\xEF\xBF\xBD' not found");
    ck_assert_str_eq(json_string_value(json_object_get(err, "param")), "\xEF\xBF\xBD");
    json_decref(b);
    b = error_body_anthropic(ERR_NOT_FOUND, "bad \x80", "req_\xfe");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(b, "error"), "message")),
                     "bad \xEF\xBF\xBD");
    ck_assert_str_eq(json_string_value(json_object_get(b, "request_id")), "req_\xEF\xBF\xBD");
    json_decref(b);
}
END_TEST

START_TEST(test_error_set_and_clear)
{
    struct error e = ERROR_INIT;
    ck_assert_int_eq(e.code, ERR_NONE);
    error_set(&e, ERR_INVALID_REQUEST, "max_tokens", "'%s' must be at least %d", "max_tokens", 1);
    ck_assert_int_eq(e.code, ERR_INVALID_REQUEST);
    ck_assert_str_eq(e.param, "max_tokens");
    ck_assert_str_eq(error_message(&e), "'max_tokens' must be at least 1");
    /* Replacing with text taken from the error itself must not read freed memory. */
    error_set(&e, ERR_UNSUPPORTED, e.param, "%s: unsupported", e.message);
    ck_assert_str_eq(e.param, "max_tokens");
    ck_assert_str_eq(e.message, "'max_tokens' must be at least 1: unsupported");
    error_set(&e, ERR_TIMEOUT, NULL, NULL);
    ck_assert_ptr_null(e.param);
    ck_assert_ptr_null(e.message);
    ck_assert_str_eq(error_message(&e), "The request timed out.");

    json_t *b = error_body(ERROR_DIALECT_ANTHROPIC, &e, "req_9");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(b, "error"), "type")),
                     "timeout_error");
    json_decref(b);
    error_set(&e, ERR_INVALID_REQUEST, "n", "only n=1");
    b = error_body(ERROR_DIALECT_OPENAI, &e, "req_9");
    assert_json_eq(b, "{\"error\":{\"message\":\"only n=1\",\"type\":\"invalid_request_error\","
                      "\"param\":\"n\",\"code\":null}}");
    json_decref(b);

    error_clear(&e);
    ck_assert_int_eq(e.code, ERR_NONE);
    ck_assert_ptr_null(e.message);
    error_clear(&e);
    error_clear(NULL);
    error_set(NULL, ERR_INTERNAL, "x", "ignored %d", 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_every_row_complete_and_consistent);
    tcase_add_test(tc, test_rows_required_by_the_api);
    tcase_add_test(tc, test_unknown_codes_and_names);
    tcase_add_test(tc, test_openai_bodies);
    tcase_add_test(tc, test_anthropic_bodies);
    tcase_add_test(tc, test_bodies_survive_invalid_utf8);
    tcase_add_test(tc, test_error_set_and_clear);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
