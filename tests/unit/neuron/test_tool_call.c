/*
 * tests/unit/neuron/test_tool_call.c — parsing <tool_call> blocks out of model output.
 *
 * Expected calls and content are written by hand from the formats the Qwen/Hermes templates
 * teach the models (see tests/chat_templates/templates). The streaming parser is checked to give
 * the same result as the one-shot parser for every way of cutting the text into two or three
 * chunks and for random chunkings, and never to show a piece of a tool-call tag.
 */
#include "tool_call.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const char *content_of(const struct tool_call_output *o)
{
    return o->content ? o->content : "";
}

START_TEST(test_plain_text_unchanged)
{
    struct tool_call_output o = {0};
    const char *t = "Hello <b>world</b> <tool and <tool_cal but no call.  \n";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_str_eq(content_of(&o), t);
    ck_assert_uint_eq(o.n_calls, 0);
    tool_call_output_free(&o);
}
END_TEST

START_TEST(test_hermes_json_calls)
{
    struct tool_call_output o = {0};
    const char *t = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                    "{\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n"
                    "{\"name\": \"search\", \"arguments\": {\"q\": \"caf\\u00e9 \\\"x\\\"\", "
                    "\"n\": [1, 2.5, null, true]}}\n</tool_call>";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_str_eq(content_of(&o), "Let me check.");
    ck_assert_uint_eq(o.n_calls, 2);
    ck_assert_str_eq(o.calls[0].name, "get_weather");
    ck_assert_str_eq(o.calls[0].arguments, "{\"city\":\"Paris\",\"unit\":\"celsius\"}");
    ck_assert_str_eq(o.calls[1].name, "search");
    ck_assert_str_eq(o.calls[1].arguments,
                     "{\"q\":\"caf\xc3\xa9 \\\"x\\\"\",\"n\":[1,2.5,null,true]}");
    tool_call_output_free(&o);
}
END_TEST

START_TEST(test_json_variants)
{
    struct tool_call_output o = {0};
    /* arguments as a JSON string, "parameters" instead of "arguments", no arguments at all */
    const char *t = "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>"
                    "<tool_call>{\"name\": \"b\", \"parameters\": {\"y\": \"z\"}}</tool_call>"
                    "<tool_call>{\"name\": \"c\"}</tool_call>";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_ptr_null(o.content);
    ck_assert_uint_eq(o.n_calls, 3);
    ck_assert_str_eq(o.calls[0].arguments, "{\"x\":1}");
    ck_assert_str_eq(o.calls[1].name, "b");
    ck_assert_str_eq(o.calls[1].arguments, "{\"y\":\"z\"}");
    ck_assert_str_eq(o.calls[2].arguments, "{}");
    tool_call_output_free(&o);
}
END_TEST

START_TEST(test_qwen35_xml_calls)
{
    json_t *tools = json_loads(
            "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{"
            "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{"
            "\"type\":\"integer\"},\"zip\":{\"type\":\"string\"},\"opts\":{\"type\":\"object\"},"
            "\"exact\":{\"type\":\"boolean\"},\"score\":{\"type\":\"number\"}}}}}]",
            0, NULL);
    struct tool_call_output o = {0};
    const char *t = "I will look it up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\n"
                    "New York\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=zip>\n"
                    "01234\n</parameter>\n<parameter=opts>\n{\"a\": [1]}\n</parameter>\n"
                    "<parameter=exact>\nTrue\n</parameter>\n<parameter=score>\n0.5\n</parameter>\n"
                    "<parameter=note>\nline one\nline two\n</parameter>\n</function>\n</tool_call>";
    tool_call_parse(t, strlen(t), tools, &o);
    ck_assert_str_eq(content_of(&o), "I will look it up.");
    ck_assert_uint_eq(o.n_calls, 1);
    ck_assert_str_eq(o.calls[0].name, "get_weather");
    ck_assert_str_eq(o.calls[0].arguments,
                     "{\"city\":\"New York\",\"days\":3,\"zip\":\"01234\",\"opts\":{\"a\":[1]},"
                     "\"exact\":true,\"score\":0.5,\"note\":\"line one\\nline two\"}");
    tool_call_output_free(&o);
    /* without the tool list every value is a string */
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_uint_eq(o.n_calls, 1);
    ck_assert_str_eq(o.calls[0].arguments,
                     "{\"city\":\"New York\",\"days\":\"3\",\"zip\":\"01234\",\"opts\":"
                     "\"{\\\"a\\\": [1]}\",\"exact\":\"True\",\"score\":\"0.5\",\"note\":"
                     "\"line one\\nline two\"}");
    tool_call_output_free(&o);
    json_decref(tools);
}
END_TEST

START_TEST(test_invalid_block_stays_text)
{
    struct tool_call_output o = {0};
    const char *t = "A <tool_call>{not json}</tool_call> B";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_str_eq(content_of(&o), t);
    ck_assert_uint_eq(o.n_calls, 0);
    tool_call_output_free(&o);
}
END_TEST

START_TEST(test_unterminated_block)
{
    struct tool_call_output o = {0};
    const char *t = "x\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_str_eq(content_of(&o), "x");
    ck_assert_uint_eq(o.n_calls, 1);
    ck_assert_str_eq(o.calls[0].name, "f");
    tool_call_output_free(&o);
    const char *u = "y <tool_call>{\"name\": \"f\", \"argu";
    tool_call_parse(u, strlen(u), NULL, &o);
    ck_assert_str_eq(content_of(&o), u);
    ck_assert_uint_eq(o.n_calls, 0);
    tool_call_output_free(&o);
}
END_TEST

START_TEST(test_text_between_and_after_calls)
{
    struct tool_call_output o = {0};
    const char *t = "one  <tool_call>{\"name\":\"f\"}</tool_call>  two <tool_call>{\"name\":\"g\"}"
                    "</tool_call>\n three\n\n";
    tool_call_parse(t, strlen(t), NULL, &o);
    ck_assert_str_eq(content_of(&o), "onetwothree");
    ck_assert_uint_eq(o.n_calls, 2);
    tool_call_output_free(&o);
}
END_TEST

/* Feeds t in the given pieces and checks the result equals the one-shot parse, and that no piece
 * of text returned by a feed contains a fragment of the open tag. */
static void check_chunks(const char *t, const size_t *cuts, size_t ncuts, const json_t *tools)
{
    struct tool_call_output whole = {0}, acc = {0};
    tool_call_parse(t, strlen(t), tools, &whole);
    struct tool_call_stream *s = tool_call_stream_create(tools);
    size_t prev = 0, n = strlen(t);
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : n;
        size_t before = acc.content_len;
        tool_call_stream_feed(s, t + prev, end - prev, &acc);
        if (acc.content_len > before) {
            /* text shown mid-stream never ends with the start of a tag */
            const char *tail = acc.content + acc.content_len;
            for (size_t m = 1; m < 11 && m <= acc.content_len; m++)
                ck_assert_msg(memcmp(tail - m, "<tool_call>", m) != 0 ||
                                      strstr(whole.content ? whole.content : "", "<tool") != NULL,
                              "partial tag shown for %s", t);
        }
        prev = end;
    }
    tool_call_stream_finish(s, &acc);
    tool_call_stream_destroy(s);
    ck_assert_str_eq(content_of(&acc), content_of(&whole));
    ck_assert_uint_eq(acc.n_calls, whole.n_calls);
    for (size_t i = 0; i < whole.n_calls; i++) {
        ck_assert_str_eq(acc.calls[i].name, whole.calls[i].name);
        ck_assert_str_eq(acc.calls[i].arguments, whole.calls[i].arguments);
    }
    tool_call_output_free(&whole);
    tool_call_output_free(&acc);
}

static const char *const stream_texts[] = {
        "Sure.\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>",
        "a <tool_call>\n<function=f>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call> b",
        "no calls here, only <tool and text \n\n",
        "<tool_call>{\"name\":\"f\"}</tool_call>\n\n<tool_call>{\"name\":\"g\"}</tool_call>\n",
        "bad <tool_call>{oops}</tool_call> end <tool_c",
        "x <tool_call>{\"name\": \"f\"}",
};

START_TEST(test_stream_all_two_and_three_way_splits)
{
    const char *t = stream_texts[_i];
    size_t n = strlen(t);
    for (size_t a = 0; a <= n; a++) {
        check_chunks(t, &a, 1, NULL);
        for (size_t b = a; b <= n; b += 3) {
            size_t cuts[2] = {a, b};
            check_chunks(t, cuts, 2, NULL);
        }
    }
}
END_TEST

START_TEST(test_stream_random_chunks)
{
    srand(1234);
    for (int iter = 0; iter < 300; iter++) {
        const char *t = stream_texts[(size_t)iter % (sizeof stream_texts / sizeof *stream_texts)];
        size_t n = strlen(t), cuts[16], nc = 0, pos = 0;
        while (nc < 16) {
            pos += 1 + (size_t)(rand() % 6);
            if (pos >= n)
                break;
            cuts[nc++] = pos;
        }
        check_chunks(t, cuts, nc, NULL);
    }
}
END_TEST

START_TEST(test_stream_holds_back_partial_tag)
{
    struct tool_call_output o = {0};
    struct tool_call_stream *s = tool_call_stream_create(NULL);
    tool_call_stream_feed(s, "Hello <tool_", 12, &o);
    ck_assert_str_eq(content_of(&o), "Hello");
    tool_call_stream_feed(s, "call>{\"name\": \"f\"}</tool_", 25, &o);
    ck_assert_str_eq(content_of(&o), "Hello");
    ck_assert_uint_eq(o.n_calls, 0);
    tool_call_stream_feed(s, "call>", 5, &o);
    ck_assert_uint_eq(o.n_calls, 1);
    tool_call_stream_finish(s, &o);
    ck_assert_str_eq(content_of(&o), "Hello");
    tool_call_stream_destroy(s);
    tool_call_output_free(&o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tool_call");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_plain_text_unchanged);
    tcase_add_test(tc, test_hermes_json_calls);
    tcase_add_test(tc, test_json_variants);
    tcase_add_test(tc, test_qwen35_xml_calls);
    tcase_add_test(tc, test_invalid_block_stays_text);
    tcase_add_test(tc, test_unterminated_block);
    tcase_add_test(tc, test_text_between_and_after_calls);
    tcase_add_loop_test(tc, test_stream_all_two_and_three_way_splits, 0,
                        sizeof stream_texts / sizeof *stream_texts);
    tcase_add_test(tc, test_stream_random_chunks);
    tcase_add_test(tc, test_stream_holds_back_partial_tag);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
