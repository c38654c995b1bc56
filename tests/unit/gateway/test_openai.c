/*
 * tests/unit/gateway/test_openai.c — the OpenAI dialect (gateway/openai.h): request
 * normalisation for chat, completions and embeddings, and the mapping of neurons' error
 * answers, checked against hand-written cases in tests/unit/gateway/cases/openai_*.json
 * (written from shared/API.md and the OpenAI API reference), plus the stream event forms.
 */
#include <check.h>
#include <jansson.h>
#include <string.h>

#include "buf.h"
#include "openai.h"

#include "common/test_util.h"
#include "gateway/case_util.h"

static struct openai_options options_of(const json_t *c)
{
    const json_t *o = json_object_get(c, "options");
    struct openai_options opt = {
            .max_tokens_cap = json_integer_value(json_object_get(o, "max_tokens_cap")),
    };
    return opt;
}

START_TEST(test_chat_cases)
{
    json_t *cases = case_util_load("openai_chat_request.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        struct openai_options opt = options_of(c);
        struct error err = ERROR_INIT;
        json_t *input = json_object_get(c, "input");
        json_t *copy = json_deep_copy(input);
        json_t *out = NULL;
        int rc = openai_chat_request_normalize(input, &opt, &out, &err);
        if (!case_util_check_error(c, rc, &err))
            case_util_assert_match(case_util_name(c), json_object_get(c, "expect"), out);
        else
            ck_assert_ptr_null(out);
        ck_assert_msg(json_equal(input, copy), "%s: input modified", case_util_name(c));
        json_decref(copy);
        json_decref(out);
        error_clear(&err);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_completion_and_embedding_cases)
{
    json_t *cases = case_util_load("openai_other_request.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *kind = json_string_value(json_object_get(c, "kind"));
        ck_assert_ptr_nonnull(kind);
        struct openai_options opt = options_of(c);
        struct error err = ERROR_INIT;
        json_t *out = NULL;
        int rc;
        if (strcmp(kind, "completion") == 0)
            rc = openai_completion_request_normalize(json_object_get(c, "input"), &opt, &out, &err);
        else
            rc = openai_embedding_request_normalize(json_object_get(c, "input"), &out, &err);
        if (!case_util_check_error(c, rc, &err))
            case_util_assert_match(case_util_name(c), json_object_get(c, "expect"), out);
        json_decref(out);
        error_clear(&err);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_upstream_error_cases)
{
    json_t *cases = case_util_load("openai_upstream_error.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *name = case_util_name(c);
        struct error err = ERROR_INIT;
        openai_error_from_upstream((long)json_integer_value(json_object_get(c, "status")),
                                   json_object_get(c, "body"), &err);
        const json_t *want = json_object_get(c, "expect");
        ck_assert_msg(strcmp(error_code_name(err.code),
                             json_string_value(json_object_get(want, "code"))) == 0,
                      "%s: code %s", name, error_code_name(err.code));
        ck_assert_msg(strcmp(error_message(&err),
                             json_string_value(json_object_get(want, "message"))) == 0,
                      "%s: message %s", name, error_message(&err));
        error_clear(&err);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_sse_forms)
{
    struct buf out = BUF_INIT;
    json_t *chunk = json_pack("{s:s, s:[]}", "id", "chatcmpl-1", "choices");
    openai_sse_data(&out, chunk);
    openai_sse_keepalive(&out);
    struct error e = ERROR_INIT;
    error_set(&e, ERR_UPSTREAM, NULL, "neuron died");
    openai_sse_error(&out, &e);
    openai_sse_done(&out);
    ck_assert_str_eq(buf_cstr(&out),
                     "data: {\"id\":\"chatcmpl-1\",\"choices\":[]}\n\n"
                     ": keep-alive\n\n"
                     "data: {\"error\":{\"message\":\"neuron died\",\"type\":\"server_error\","
                     "\"param\":null,\"code\":null}}\n\n"
                     "data: [DONE]\n\n");
    error_clear(&e);
    json_decref(chunk);
    buf_free(&out);
}
END_TEST

START_TEST(test_null_options)
{
    json_t *req = json_pack("{s:s, s:i, s:[{s:s, s:s}]}", "model", "m", "max_tokens", 123456,
                            "messages", "role", "user", "content", "x");
    json_t *out = NULL;
    struct error err = ERROR_INIT;
    ck_assert_int_eq(openai_chat_request_normalize(req, NULL, &out, &err), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "max_tokens")), 123456);
    json_decref(out);
    ck_assert_int_eq(openai_chat_request_normalize(json_array_get(NULL, 0), NULL, &out, &err), -1);
    ck_assert_int_eq(err.code, ERR_INVALID_REQUEST);
    error_clear(&err);
    json_decref(req);
}
END_TEST

static Suite *openai_suite(void)
{
    Suite *s = suite_create("openai");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_chat_cases);
    tcase_add_test(tc, test_completion_and_embedding_cases);
    tcase_add_test(tc, test_upstream_error_cases);
    tcase_add_test(tc, test_sse_forms);
    tcase_add_test(tc, test_null_options);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_util_run_suite(openai_suite());
}
