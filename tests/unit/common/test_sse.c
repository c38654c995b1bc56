/*
 * tests/unit/common/test_sse.c — common/sse, the server-sent events parser.
 *
 * Expected events are written out by hand from the WHATWG event-stream rules. Every stream is
 * also fed in every two-piece split and byte by byte, which must not change the result.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "xalloc.h"

#include "common/test_util.h"

/* Events rendered as "type|id|data" lines, one per event, for easy comparison. */
struct seen {
    char text[4096];
    int count;
    int stop_after; /* > 0: stop after this many events */
};

static int record(const sse_event_t *ev, void *ud)
{
    struct seen *s = ud;
    size_t used = strlen(s->text);
    char data[1024];
    /* Show NULs as \0 so they are visible in the rendering. */
    size_t o = 0;
    for (size_t i = 0; i < ev->data_len && o + 3 < sizeof data; i++) {
        if (ev->data[i] == '\0') {
            data[o++] = '\\';
            data[o++] = '0';
        } else {
            data[o++] = ev->data[i];
        }
    }
    data[o] = '\0';
    ck_assert_int_eq(ev->data[ev->data_len], '\0'); /* NUL-terminated */
    snprintf(s->text + used, sizeof s->text - used, "%s|%s|%s\n", ev->event, ev->id, data);
    s->count++;
    return s->stop_after > 0 && s->count >= s->stop_after;
}

static void parse_whole(const char *in, size_t len, struct seen *s)
{
    sse_parser_t *p = sse_parser_create(0);
    memset(s, 0, sizeof *s);
    ck_assert_int_eq(sse_parser_feed(p, in, len, record, s), SSE_OK);
    sse_parser_destroy(p);
}

/* Checks in -> expect fed whole, in every two-piece split and byte by byte. */
static void check_stream(const char *in, size_t len, const char *expect)
{
    struct seen s;
    parse_whole(in, len, &s);
    ck_assert_str_eq(s.text, expect);

    for (size_t cut = 0; cut <= len; cut++) {
        sse_parser_t *p = sse_parser_create(0);
        memset(&s, 0, sizeof s);
        ck_assert_int_eq(sse_parser_feed(p, in, cut, record, &s), SSE_OK);
        ck_assert_int_eq(sse_parser_feed(p, in + cut, len - cut, record, &s), SSE_OK);
        ck_assert_msg(strcmp(s.text, expect) == 0, "split at %zu: got\n%s", cut, s.text);
        sse_parser_destroy(p);
    }

    sse_parser_t *p = sse_parser_create(0);
    memset(&s, 0, sizeof s);
    for (size_t i = 0; i < len; i++)
        ck_assert_int_eq(sse_parser_feed(p, in + i, 1, record, &s), SSE_OK);
    ck_assert_msg(strcmp(s.text, expect) == 0, "byte by byte: got\n%s", s.text);
    sse_parser_destroy(p);
}

#define CHECK(in, expect) check_stream(in, sizeof(in) - 1, expect)

START_TEST(test_basic_fields)
{
    CHECK("event: a\ndata: 1\n\n", "a||1\n");
    CHECK("data: x\n\n", "message||x\n");
    CHECK("data: x\ndata: y\n\n", "message||x\ny\n");
    CHECK("data:nospace\n\n", "message||nospace\n");
    CHECK("data:  two\n\n", "message|| two\n");
    CHECK("data\n\n", "message||\n");           /* a data line without colon: empty data */
    CHECK("data:\ndata:\n\n", "message||\n\n"); /* two empty data lines: one "\n" */
    CHECK("data: [DONE]\n\n", "message||[DONE]\n");
}
END_TEST

START_TEST(test_comments_and_unknown)
{
    CHECK(": keep-alive\n\n", "");
    CHECK(": c1\ndata: z\n: c2\n\n", "message||z\n");
    CHECK("event: ping\n\n", ""); /* no data: not dispatched, and the type does not leak */
    CHECK("event: ping\n\ndata: after\n\n", "message||after\n");
    CHECK("retry: 1000\nfoo: bar\ndata: v\n\n", "message||v\n");
    CHECK("Data: no\n\n", ""); /* field names are case-sensitive */
}
END_TEST

START_TEST(test_line_ends)
{
    CHECK("data: a\r\n\r\n", "message||a\n");
    CHECK("data: a\r\rdata: b\r\r", "message||a\nmessage||b\n");
    CHECK("data: a\r\ndata: b\n\r\n", "message||a\nb\n");
    CHECK("event: e\rdata: 1\r\n\n", "e||1\n");
    /* CR then LF is one line end, CR then CR two: */
    CHECK("data: a\r\n\rdata: b\n\n", "message||a\nmessage||b\n");
}
END_TEST

START_TEST(test_crlf_split_is_one_line_end)
{
    /* "\r" ends one piece and "\n" starts the next: if they counted as two line ends the blank
     * line would dispatch "a" on its own. */
    sse_parser_t *p = sse_parser_create(0);
    struct seen s;
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(sse_parser_feed(p, "data: a\r", 8, record, &s), SSE_OK);
    ck_assert_int_eq(sse_parser_feed(p, "\ndata: b\r", 9, record, &s), SSE_OK);
    ck_assert_int_eq(s.count, 0);
    ck_assert_int_eq(sse_parser_feed(p, "\n\r", 2, record, &s), SSE_OK);
    ck_assert_str_eq(s.text, "message||a\nb\n");
    ck_assert_int_eq(sse_parser_feed(p, "\n", 1, record, &s), SSE_OK); /* CRLF's LF: nothing */
    ck_assert_int_eq(s.count, 1);
    sse_parser_destroy(p);
}
END_TEST

START_TEST(test_ids_bom_and_incomplete)
{
    CHECK("id: 7\ndata: x\n\ndata: y\n\n", "message|7|x\nmessage|7|y\n");
    CHECK("id: 7\ndata: x\n\nid\ndata: y\n\n", "message|7|x\nmessage||y\n");
    CHECK("\xEF\xBB\xBF"
          "data: bom\n\n",
          "message||bom\n");
    CHECK("data: done\n\ndata: never dispatched\n", "message||done\n");
    CHECK("data: a\0b\n\n", "message||a\\0b\n");
}
END_TEST

START_TEST(test_anthropic_stream)
{
    CHECK("event: message_start\n"
          "data: {\"type\":\"message_start\"}\n\n"
          "event: ping\n"
          "data: {\"type\": \"ping\"}\n\n"
          "event: content_block_delta\r\n"
          "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\\n\"}}\r\n\r\n"
          "event: message_stop\n"
          "data: {\"type\":\"message_stop\"}\n\n",
          "message_start||{\"type\":\"message_start\"}\n"
          "ping||{\"type\": \"ping\"}\n"
          "content_block_delta||{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\\n\"}}\n"
          "message_stop||{\"type\":\"message_stop\"}\n");
}
END_TEST

START_TEST(test_stop_and_limits)
{
    sse_parser_t *p = sse_parser_create(0);
    struct seen s;
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    const char *in = "data: 1\n\ndata: 2\n\n";
    ck_assert_int_eq(sse_parser_feed(p, in, strlen(in), record, &s), SSE_STOPPED);
    ck_assert_int_eq(s.count, 1);
    sse_parser_destroy(p);

    /* A line that never ends cannot grow past the limit... */
    p = sse_parser_create(64);
    memset(&s, 0, sizeof s);
    char big[100];
    memset(big, 'x', sizeof big);
    ck_assert_int_eq(sse_parser_feed(p, "data: ", 6, record, &s), SSE_OK);
    ck_assert_int_eq(sse_parser_feed(p, big, sizeof big, record, &s), SSE_TOO_LARGE);
    ck_assert_int_eq(sse_parser_feed(p, "\n\n", 2, record, &s), SSE_TOO_LARGE);
    sse_parser_destroy(p);

    /* ...nor can many data lines of one event. */
    p = sse_parser_create(64);
    int rc = SSE_OK;
    for (int i = 0; i < 20 && rc == SSE_OK; i++)
        rc = sse_parser_feed(p, "data: 0123456789\n", 17, record, &s);
    ck_assert_int_eq(rc, SSE_TOO_LARGE);
    sse_parser_destroy(p);

    /* Events below the limit pass however many there are. */
    p = sse_parser_create(64);
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(sse_parser_feed(p, "data: 0123456789\n\n", 18, record, &s), SSE_OK);
    ck_assert_int_eq(s.count, 100);
    sse_parser_destroy(p);
    sse_parser_destroy(NULL);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("sse");
    TCase *tc = tcase_create("sse");
    tcase_add_test(tc, test_basic_fields);
    tcase_add_test(tc, test_comments_and_unknown);
    tcase_add_test(tc, test_line_ends);
    tcase_add_test(tc, test_crlf_split_is_one_line_end);
    tcase_add_test(tc, test_ids_bom_and_incomplete);
    tcase_add_test(tc, test_anthropic_stream);
    tcase_add_test(tc, test_stop_and_limits);
    suite_add_tcase(suite, tc);
    return test_util_run_suite(suite);
}
