/*
 * tests/unit/gateway/test_anthropic.c — the Anthropic translation (gateway/anthropic.h):
 * requests, responses and streams checked against hand-written cases in
 * tests/unit/gateway/cases/anthropic_*.json (written from shared/API.md and the Anthropic SDK's
 * types and stream accumulator), plus the stream rules of API.md checked on every case and on
 * random chunk sequences.
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "anthropic.h"
#include "buf.h"
#include "jsonutil.h"
#include "sse.h"

#include "common/test_util.h"
#include "gateway/case_util.h"

START_TEST(test_request_cases)
{
    json_t *cases = case_util_load("anthropic_request.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const json_t *o = json_object_get(c, "options");
        struct anthropic_options opt = {
                .max_tokens_cap = json_integer_value(json_object_get(o, "max_tokens_cap")),
                .count_tokens = json_is_true(json_object_get(o, "count_tokens")),
        };
        struct error err = ERROR_INIT;
        json_t *out = NULL;
        int rc = anthropic_request_to_openai(json_object_get(c, "input"), &opt, &out, &err);
        if (!case_util_check_error(c, rc, &err))
            case_util_assert_match(case_util_name(c), json_object_get(c, "expect"), out);
        else
            ck_assert_ptr_null(out);
        json_decref(out);
        error_clear(&err);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_request_null_options_and_input_untouched)
{
    json_t *req = json_pack("{s:s, s:i, s:[{s:s, s:s}]}", "model", "m", "max_tokens", 1000000,
                            "messages", "role", "user", "content", "Hi");
    json_t *copy = json_deep_copy(req);
    json_t *out = NULL;
    struct error err = ERROR_INIT;
    ck_assert_int_eq(anthropic_request_to_openai(req, NULL, &out, &err), 0);
    /* No cap configured: the client's value stands. */
    ck_assert_int_eq(json_integer_value(json_object_get(out, "max_tokens")), 1000000);
    ck_assert(json_equal(req, copy));
    json_decref(out);
    json_decref(copy);
    json_decref(req);
}
END_TEST

START_TEST(test_response_cases)
{
    json_t *cases = case_util_load("anthropic_response.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        struct error err = ERROR_INIT;
        json_t *out = NULL;
        int rc = anthropic_response_from_openai(
                json_object_get(c, "input"), json_string_value(json_object_get(c, "id")),
                json_string_value(json_object_get(c, "model")), &out, &err);
        if (!case_util_check_error(c, rc, &err))
            case_util_assert_match(case_util_name(c), json_object_get(c, "expect"), out);
        json_decref(out);
        error_clear(&err);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_tool_ids)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
            {"call_abc123", "toolu_abc123"},
            {"toolu_01ABC-x_y", "toolu_01ABC-x_y"},
            {"abc", "toolu_abc"},
            {"call_a.b:c d", "toolu_a_b_c_d"},
            {"toolu_a/b", "toolu_a_b"},
            {"call_", "toolu_call_"},
            {"toolu_", "toolu__"},
            {"\xc3\xa9", "toolu___"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[ANTHROPIC_TOOL_ID_SIZE];
        ck_assert_str_eq(anthropic_tool_id(cases[i].in, id), cases[i].out);
    }
    /* Deterministic: the same upstream id gives the same id again. */
    char a[ANTHROPIC_TOOL_ID_SIZE], b[ANTHROPIC_TOOL_ID_SIZE];
    ck_assert_str_eq(anthropic_tool_id("call_x", a), anthropic_tool_id("call_x", b));
    /* Absent ids are random, of the documented form, and differ. */
    anthropic_tool_id(NULL, a);
    anthropic_tool_id("", b);
    ck_assert(case_util_match_re("^toolu_[0-9A-Za-z]{24}$", a));
    ck_assert(strncmp(b, "toolu_", 6) == 0 && strlen(b) == 6 + 24);
    ck_assert_str_ne(a, b);
    /* Long ids are cut to fit, still of the allowed characters. */
    char longid[400];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    anthropic_tool_id(longid, a);
    ck_assert_uint_eq(strlen(a), ANTHROPIC_TOOL_ID_SIZE - 1);
    ck_assert(strncmp(a, "toolu_xxx", 9) == 0);
}
END_TEST

/* ---- stream checks ----------------------------------------------------------------------- */

struct collected {
    json_t *events; /* [{"event": name, "data": parsed}] */
};

static int collect_event(const sse_event_t *ev, void *ud)
{
    struct collected *c = ud;
    json_error_t jerr;
    json_t *data = json_loadb(ev->data, ev->data_len, 0, &jerr);
    ck_assert_msg(data != NULL, "event %s: data is not JSON: %s", ev->event, ev->data);
    json_array_append_new(c->events, json_pack("{s:s, s:o}", "event", ev->event, "data", data));
    return 0;
}

/* Parses the SSE text the translator wrote, checking the wire form API.md fixes: every event
 * is "event: <name>\ndata: <one line of JSON>\n\n". */
static json_t *parse_events(const struct buf *out)
{
    const char *p = buf_cstr(out), *end = p + out->len;
    while (p < end) {
        ck_assert_msg(strncmp(p, "event: ", 7) == 0, "event line expected at: %.60s", p);
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        ck_assert_ptr_nonnull(nl);
        ck_assert_msg(strncmp(nl + 1, "data: ", 6) == 0, "data line expected at: %.60s", nl + 1);
        const char *nl2 = memchr(nl + 1, '\n', (size_t)(end - nl - 1));
        ck_assert_ptr_nonnull(nl2);
        ck_assert_msg(nl2 + 1 < end && nl2[1] == '\n', "blank line expected after %.60s", nl + 1);
        p = nl2 + 2;
    }
    struct collected c = {json_array()};
    sse_parser_t *parser = sse_parser_create(0);
    ck_assert_int_eq(sse_parser_feed(parser, buf_cstr(out), out->len, collect_event, &c), SSE_OK);
    sse_parser_destroy(parser);
    return c.events;
}

/*
 * Checks the Anthropic stream rules of shared/API.md on a parsed event list: message_start
 * first; ping anywhere; blocks numbered 0, 1, … in order, one open at a time, each delta inside
 * its open block and of the block's kind; message_delta with no block open, then message_stop
 * last; or an error event last; stop_reason tool_use only when a tool_use block was sent; every
 * data's type is its event's name. The concatenated input_json of each tool_use block parses.
 */
static void check_stream_rules(const char *name, const json_t *events)
{
    size_t n = json_array_size(events);
    ck_assert_msg(n >= 1, "%s: no events", name);
    long open = -1, next = 0;
    const char *open_type = NULL;
    bool tool_use_sent = false, saw_delta = false;
    struct buf json_args = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(events, i);
        const char *ev = json_string_value(json_object_get(e, "event"));
        const json_t *d = json_object_get(e, "data");
        const char *type = json_string_value(json_object_get(d, "type"));
        ck_assert_msg(type && strcmp(type, ev) == 0, "%s: event %s carries type %s", name, ev,
                      type);
        if (i == 0) {
            ck_assert_msg(strcmp(ev, "message_start") == 0, "%s: first event is %s", name, ev);
            const json_t *m = json_object_get(d, "message");
            ck_assert(json_array_size(json_object_get(m, "content")) == 0);
            ck_assert(
                    json_is_integer(json_object_get(json_object_get(m, "usage"), "input_tokens")));
            continue;
        }
        ck_assert_msg(strcmp(ev, "message_start") != 0, "%s: second message_start", name);
        if (strcmp(ev, "ping") == 0)
            continue;
        long index = (long)json_integer_value(json_object_get(d, "index"));
        if (strcmp(ev, "content_block_start") == 0) {
            ck_assert_msg(open < 0, "%s: block %ld starts while %ld is open", name, index, open);
            ck_assert_msg(index == next, "%s: block %ld starts, expected %ld", name, index, next);
            open = index;
            next++;
            const json_t *block = json_object_get(d, "content_block");
            open_type = json_string_value(json_object_get(block, "type"));
            ck_assert_ptr_nonnull(open_type);
            if (strcmp(open_type, "tool_use") == 0) {
                tool_use_sent = true;
                const char *id = json_string_value(json_object_get(block, "id"));
                ck_assert(case_util_match_re("^[a-zA-Z0-9_-]+$", id));
                ck_assert(json_is_object(json_object_get(block, "input")));
                buf_reset(&json_args);
            }
        } else if (strcmp(ev, "content_block_delta") == 0) {
            ck_assert_msg(open >= 0 && index == open, "%s: delta for %ld, open %ld", name, index,
                          open);
            const json_t *delta = json_object_get(d, "delta");
            const char *dt = json_string_value(json_object_get(delta, "type"));
            const char *want = strcmp(open_type, "text") == 0       ? "text_delta"
                               : strcmp(open_type, "tool_use") == 0 ? "input_json_delta"
                                                                    : "thinking_delta";
            ck_assert_msg(dt && strcmp(dt, want) == 0, "%s: %s in a %s block", name, dt, open_type);
            if (strcmp(dt, "input_json_delta") == 0)
                buf_append_str(&json_args,
                               json_string_value(json_object_get(delta, "partial_json")));
        } else if (strcmp(ev, "content_block_stop") == 0) {
            ck_assert_msg(open >= 0 && index == open, "%s: stop for %ld, open %ld", name, index,
                          open);
            if (strcmp(open_type, "tool_use") == 0 && json_args.len > 0) {
                json_t *args = json_loadb(json_args.data, json_args.len, 0, NULL);
                ck_assert_msg(json_is_object(args), "%s: tool input %s", name, json_args.data);
                json_decref(args);
            }
            open = -1;
        } else if (strcmp(ev, "message_delta") == 0) {
            ck_assert_msg(open < 0, "%s: message_delta with block %ld open", name, open);
            ck_assert_msg(!saw_delta, "%s: second message_delta", name);
            saw_delta = true;
            const char *stop =
                    json_string_value(json_object_get(json_object_get(d, "delta"), "stop_reason"));
            ck_assert_ptr_nonnull(stop);
            ck_assert_msg(strcmp(stop, "tool_use") != 0 || tool_use_sent,
                          "%s: stop_reason %s, tool_use blocks sent: %d", name, stop,
                          tool_use_sent);
            ck_assert(
                    json_is_integer(json_object_get(json_object_get(d, "usage"), "output_tokens")));
        } else if (strcmp(ev, "message_stop") == 0) {
            ck_assert_msg(saw_delta, "%s: message_stop before message_delta", name);
            ck_assert_msg(i == n - 1, "%s: events after message_stop", name);
        } else if (strcmp(ev, "error") == 0) {
            ck_assert_msg(i == n - 1, "%s: events after error", name);
            const json_t *err = json_object_get(d, "error");
            ck_assert(json_is_string(json_object_get(err, "type")));
            ck_assert(json_is_string(json_object_get(err, "message")));
        } else {
            ck_abort_msg("%s: unknown event %s", name, ev);
        }
    }
    buf_free(&json_args);
}

START_TEST(test_stream_cases)
{
    json_t *cases = case_util_load("anthropic_stream.json");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *name = case_util_name(c);
        struct anthropic_stream *s =
                anthropic_stream_create(json_string_value(json_object_get(c, "id")),
                                        json_string_value(json_object_get(c, "model")));
        struct buf out = BUF_INIT;
        int rc = 0;
        size_t j;
        json_t *item;
        json_array_foreach(json_object_get(c, "data"), j, item)
        {
            char *text =
                    json_is_string(item) ? strdup(json_string_value(item)) : jsonutil_dumps(item);
            struct error err = ERROR_INIT;
            int r = anthropic_stream_feed_data(s, text, strlen(text), &out, &err);
            if (rc == 0 && r < 0) /* the failure itself is described */
                ck_assert_int_ne(err.code, ERR_NONE);
            if (rc != 0) /* after the end: the same outcome again, nothing new */
                ck_assert_int_eq(r, rc);
            if (rc == 0)
                rc = r;
            free(text);
            error_clear(&err);
        }
        if (json_is_true(json_object_get(c, "end"))) {
            int r = anthropic_stream_end(s, &out, NULL);
            if (rc == 0)
                rc = r;
        }
        ck_assert_msg(rc == json_integer_value(json_object_get(c, "rc")), "%s: rc %d", name, rc);
        ck_assert(anthropic_stream_done(s));
        json_t *events = parse_events(&out);
        case_util_assert_match(name, json_object_get(c, "expect"), events);
        check_stream_rules(name, events);
        json_decref(events);
        buf_free(&out);
        anthropic_stream_destroy(s);
    }
    json_decref(cases);
}
END_TEST

START_TEST(test_stream_start_once_and_nothing_after_end)
{
    struct anthropic_stream *s = anthropic_stream_create("msg_x", "m");
    struct buf out = BUF_INIT;
    anthropic_stream_start(s, 42, &out);
    anthropic_stream_start(s, 43, &out);
    json_t *events = parse_events(&out);
    ck_assert_uint_eq(json_array_size(events), 2); /* message_start, ping */
    json_t *usage = json_object_get(
            json_object_get(json_object_get(json_array_get(events, 0), "data"), "message"),
            "usage");
    ck_assert_int_eq(json_integer_value(json_object_get(usage, "input_tokens")), 42);
    json_decref(events);

    json_t *chunk = json_pack("{s:[{s:i, s:{s:s}, s:s}], s:{s:i, s:i}}", "choices", "index", 0,
                              "delta", "content", "x", "finish_reason", "stop", "usage",
                              "prompt_tokens", 10, "completion_tokens", 1);
    ck_assert_int_eq(anthropic_stream_feed(s, chunk, &out, NULL), 0);
    ck_assert_int_eq(anthropic_stream_end(s, &out, NULL), 0);
    ck_assert(anthropic_stream_done(s));
    int64_t in = -1, outt = -1, cached = -1;
    anthropic_stream_usage(s, &in, &outt, &cached);
    ck_assert_int_eq(in, 10);
    ck_assert_int_eq(outt, 1);
    ck_assert_int_eq(cached, 0);

    size_t len = out.len;
    struct error e = ERROR_INIT;
    error_set(&e, ERR_TIMEOUT, NULL, NULL);
    anthropic_stream_fail(s, &e, &out);
    ck_assert_int_eq(anthropic_stream_feed(s, chunk, &out, NULL), 0);
    ck_assert_int_eq(anthropic_stream_end(s, &out, NULL), 0);
    ck_assert_int_eq(anthropic_stream_feed_data(s, "[DONE]", 6, &out, NULL), 1);
    ck_assert_uint_eq(out.len, len);
    error_clear(&e);
    json_decref(chunk);
    buf_free(&out);
    anthropic_stream_destroy(s);
    anthropic_stream_destroy(NULL);
}
END_TEST

START_TEST(test_stream_fail_event)
{
    struct anthropic_stream *s = anthropic_stream_create(NULL, "m");
    struct buf out = BUF_INIT;
    struct error e = ERROR_INIT;
    error_set(&e, ERR_OVERLOADED, NULL, "try again");
    anthropic_stream_fail(s, &e, &out);
    ck_assert(anthropic_stream_done(s));
    json_t *events = parse_events(&out);
    ck_assert_uint_eq(json_array_size(events), 1);
    json_t *want = json_pack("{s:s, s:{s:s, s:{s:s, s:s}}}", "event", "error", "data", "type",
                             "error", "error", "type", "overloaded_error", "message", "try again");
    case_util_assert_match("fail", want, json_array_get(events, 0));
    json_decref(want);
    json_decref(events);
    error_clear(&e);
    buf_free(&out);
    anthropic_stream_destroy(s);
}
END_TEST

START_TEST(test_ping_format)
{
    struct buf out = BUF_INIT;
    anthropic_sse_ping(&out);
    ck_assert_str_eq(buf_cstr(&out), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    buf_free(&out);
}
END_TEST

/* Random upstream streams of text, reasoning and tool-call deltas in any order and split: the
 * output always follows the stream rules, and the text and tool arguments arrive whole. */
START_TEST(test_stream_random_sequences)
{
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        struct anthropic_stream *s = anthropic_stream_create("msg_r", "m");
        struct buf out = BUF_INIT, want_text = BUF_INIT;
        int tool = -1;
        int n = 1 + rand_r(&seed) % 12;
        for (int k = 0; k < n; k++) {
            json_t *delta = json_object();
            switch (rand_r(&seed) % 4) {
            case 0:
            case 1: {
                char t[16];
                snprintf(t, sizeof t, "t%d ", k);
                json_object_set_new(delta, "content", json_string(t));
                buf_append_str(&want_text, t);
                break;
            }
            case 2:
                json_object_set_new(delta, "reasoning_content", json_string("r"));
                break;
            case 3:
                tool++;
                json_object_set_new(delta, "tool_calls",
                                    json_pack("[{s:i, s:s, s:{s:s, s:s}}, {s:i, s:{s:s}}]", "index",
                                              tool, "id", "call_q", "function", "name", "f",
                                              "arguments", "{\"a\":", "index", tool, "function",
                                              "arguments", "[1,2]}"));
                break;
            }
            json_t *chunk = json_pack("{s:[{s:i, s:o, s:n}]}", "choices", "index", 0, "delta",
                                      delta, "finish_reason");
            ck_assert_int_eq(anthropic_stream_feed(s, chunk, &out, NULL), 0);
            json_decref(chunk);
        }
        const char *finishes[] = {"stop", "length", "tool_calls"};
        json_t *fin = json_pack("{s:[{s:i, s:{}, s:s}]}", "choices", "index", 0, "delta",
                                "finish_reason", finishes[rand_r(&seed) % 3]);
        ck_assert_int_eq(anthropic_stream_feed(s, fin, &out, NULL), 0);
        ck_assert_int_eq(anthropic_stream_feed_data(s, "[DONE]", 6, &out, NULL), 1);
        json_decref(fin);
        json_t *events = parse_events(&out);
        check_stream_rules("random", events);
        /* The text deltas put together give the text sent. */
        struct buf got = BUF_INIT;
        size_t i;
        json_t *e;
        json_array_foreach(events, i, e)
        {
            json_t *delta = json_object_get(json_object_get(e, "data"), "delta");
            json_t *t = json_object_get(delta, "text");
            if (json_is_string(t) &&
                strcmp(json_string_value(json_object_get(delta, "type")), "text_delta") == 0)
                buf_append_str(&got, json_string_value(t));
        }
        ck_assert_str_eq(buf_cstr(&got), buf_cstr(&want_text));
        buf_free(&got);
        json_decref(events);
        buf_free(&out);
        buf_free(&want_text);
        anthropic_stream_destroy(s);
    }
}
END_TEST

static Suite *anthropic_suite(void)
{
    Suite *s = suite_create("anthropic");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_request_cases);
    tcase_add_test(tc, test_request_null_options_and_input_untouched);
    tcase_add_test(tc, test_response_cases);
    tcase_add_test(tc, test_tool_ids);
    tcase_add_test(tc, test_stream_cases);
    tcase_add_test(tc, test_stream_start_once_and_nothing_after_end);
    tcase_add_test(tc, test_stream_fail_event);
    tcase_add_test(tc, test_ping_format);
    tcase_add_test(tc, test_stream_random_sequences);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_util_run_suite(anthropic_suite());
}
