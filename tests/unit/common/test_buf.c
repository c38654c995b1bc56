/*
 * tests/unit/common/test_buf.c — growable buffer and JSON string escaping (common/buf.h).
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#include "common/test_util.h"

START_TEST(test_empty_buffer)
{
    struct buf b = BUF_INIT;
    ck_assert_ptr_null(b.data);
    ck_assert_str_eq(buf_cstr(&b), "");
    size_t len = 99;
    char *s = buf_steal(&b, &len);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    free(s);
    buf_free(&b);
    buf_free(NULL);
}
END_TEST

START_TEST(test_append_and_grow)
{
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "abc");
    buf_append_char(&b, '-');
    buf_append(&b, "xyz!", 3);
    ck_assert_str_eq(buf_cstr(&b), "abc-xyz");
    ck_assert_uint_eq(b.len, 7);
    for (int i = 0; i < 1000; i++)
        buf_appendf(&b, "%d,", i);
    ck_assert_uint_eq(b.len, strlen(b.data));
    ck_assert(strncmp(b.data, "abc-xyz0,1,2,", 13) == 0);
    ck_assert(strcmp(b.data + b.len - 4, "999,") == 0);
    buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

START_TEST(test_appendf_long_and_exact_fit)
{
    struct buf b = BUF_INIT;
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    buf_appendf(&b, "<%s>", big);
    ck_assert_uint_eq(b.len, sizeof big + 1);
    ck_assert_int_eq(b.data[0], '<');
    ck_assert_int_eq(b.data[b.len - 1], '>');
    ck_assert_int_eq(b.data[b.len], '\0');
    /* Fill to exactly the capacity boundary, then append formatted text across it. */
    buf_reset(&b);
    size_t cap = b.cap;
    for (size_t i = 0; i + 1 < cap; i++)
        buf_append_char(&b, 'a');
    ck_assert_uint_eq(b.cap, cap);
    buf_appendf(&b, "%s", "0123456789");
    ck_assert_uint_eq(b.len, cap - 1 + 10);
    ck_assert_str_eq(b.data + cap - 1, "0123456789");
    buf_appendf(&b, "%s", "");
    ck_assert_uint_eq(b.len, cap - 1 + 10);
    buf_free(&b);
}
END_TEST

START_TEST(test_reset_truncate_reserve)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "hello world");
    size_t cap = b.cap;
    buf_truncate(&b, 5);
    ck_assert_str_eq(buf_cstr(&b), "hello");
    buf_truncate(&b, 50);
    ck_assert_str_eq(buf_cstr(&b), "hello");
    buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(buf_cstr(&b), "");
    ck_assert_uint_eq(b.cap, cap);
    buf_reserve(&b, 10000);
    ck_assert_uint_ge(b.cap, 10001);
    char *before = b.data;
    for (int i = 0; i < 10000; i++)
        buf_append_char(&b, 'x');
    ck_assert_ptr_eq(b.data, before); /* reserved: no reallocation */
    buf_free(&b);
}
END_TEST

START_TEST(test_binary_and_steal)
{
    struct buf b = BUF_INIT;
    buf_append(&b, "a\0b", 3);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_mem_eq(b.data, "a\0b\0", 4);
    size_t len = 0;
    char *p = buf_steal(&b, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(p, "a\0b", 3);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    free(p);
    buf_append_str(&b, "reuse");
    ck_assert_str_eq(buf_cstr(&b), "reuse");
    buf_free(&b);
}
END_TEST

static char *json_escape(const char *s, size_t n)
{
    struct buf b = BUF_INIT;
    buf_append_json_string(&b, s, n);
    return buf_steal(&b, NULL);
}

START_TEST(test_json_string_escapes)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
            {"", 0, "\"\""},
            {"plain", 5, "\"plain\""},
            {"say \"hi\"", 8, "\"say \\\"hi\\\"\""},
            {"a\\b", 3, "\"a\\\\b\""},
            {"l1\nl2\r\t", 7, "\"l1\\nl2\\r\\t\""},
            {"\b\f", 2, "\"\\b\\f\""},
            {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
            {"nul\0x", 5, "\"nul\\u0000x\""},
            {"del\x7f", 4, "\"del\x7f\""},
            {"/", 1, "\"/\""},
            {"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80", 15,
             "\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = json_escape(cases[i].in, cases[i].n);
        ck_assert_str_eq(got, cases[i].out);
        free(got);
    }
}
END_TEST

#define FFFD "\xEF\xBF\xBD"

START_TEST(test_json_string_replaces_invalid_utf8)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
            {"\xff", "\"" FFFD "\""},
            {"a\x80z", "\"a" FFFD "z\""},
            {"\xe2\x98", "\"" FFFD FFFD "\""},                   /* truncated 3-byte sequence */
            {"\xc0\xaf", "\"" FFFD FFFD "\""},                   /* overlong '/' */
            {"\xe0\x80\xaf", "\"" FFFD FFFD FFFD "\""},          /* overlong, 3 bytes */
            {"\xed\xa0\x80", "\"" FFFD FFFD FFFD "\""},          /* UTF-16 surrogate */
            {"\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""}, /* above U+10FFFF */
            {"\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""},        /* U+10FFFF itself is fine */
            {"\xc3", "\"" FFFD "\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = json_escape(cases[i].in, strlen(cases[i].in));
        ck_assert_str_eq(got, cases[i].out);
        free(got);
    }
}
END_TEST

/* Whatever the bytes, the output must be a JSON string that jansson accepts; valid input must
 * come back unchanged. */
START_TEST(test_json_string_always_parses)
{
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        char in[32];
        size_t n = (size_t)(round % 32);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = (char)(seed >> 16);
        }
        char *out = json_escape(in, n);
        json_error_t jerr;
        json_t *j = json_loads(out, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        ck_assert_msg(j != NULL, "round %d: %s", round, jerr.text);
        ck_assert(json_is_string(j));
        json_t *direct = json_stringn(in, n);
        if (direct) /* input was valid UTF-8 */
            ck_assert(json_equal(j, direct));
        json_decref(direct);
        json_decref(j);
        free(out);
    }
}
END_TEST

START_TEST(test_append_utf8)
{
    struct buf b = BUF_INIT;
    buf_append_utf8(&b, "ok \xc3\xa9 \xff!", 8);
    ck_assert_str_eq(buf_cstr(&b), "ok \xc3\xa9 " FFFD "!");
    buf_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_empty_buffer);
    tcase_add_test(tc, test_append_and_grow);
    tcase_add_test(tc, test_appendf_long_and_exact_fit);
    tcase_add_test(tc, test_reset_truncate_reserve);
    tcase_add_test(tc, test_binary_and_steal);
    tcase_add_test(tc, test_json_string_escapes);
    tcase_add_test(tc, test_json_string_replaces_invalid_utf8);
    tcase_add_test(tc, test_json_string_always_parses);
    tcase_add_test(tc, test_append_utf8);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
