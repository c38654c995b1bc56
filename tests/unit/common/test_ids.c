/*
 * tests/unit/common/test_ids.c — id prefixes, length, alphabet, uniqueness and spread
 * (common/ids.h).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"

#include "common/test_util.h"

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

START_TEST(test_prefixes_and_shape)
{
    static const struct {
        enum ids_kind kind;
        const char *prefix;
    } cases[] = {
            {IDS_KIND_REQUEST, "req_"},     {IDS_KIND_CHAT_COMPLETION, "chatcmpl-"},
            {IDS_KIND_COMPLETION, "cmpl-"}, {IDS_KIND_MESSAGE, "msg_"},
            {IDS_KIND_TOOL_USE, "toolu_"},  {IDS_KIND_TOOL_CALL, "call_"},
    };
    ck_assert_uint_eq(sizeof cases / sizeof cases[0], IDS_KIND_COUNT);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char id[IDS_SIZE];
        size_t plen = strlen(cases[i].prefix);
        ck_assert_str_eq(ids_kind_prefix(cases[i].kind), cases[i].prefix);
        ck_assert_ptr_eq(ids_new(cases[i].kind, id), id);
        ck_assert_uint_eq(strlen(id), plen + IDS_RANDOM_CHARS);
        ck_assert_int_eq(strncmp(id, cases[i].prefix, plen), 0);
        ck_assert_uint_eq(strspn(id + plen, base62), IDS_RANDOM_CHARS);
    }
    ck_assert_str_eq(ids_kind_prefix(IDS_KIND_COUNT), "");
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_request_ids_unique)
{
    enum { N = 20000 };
    char **ids = malloc(N * sizeof *ids);
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(IDS_SIZE);
        ids_new(IDS_KIND_REQUEST, ids[i]);
    }
    qsort(ids, N, sizeof *ids, cmp_str);
    for (int i = 1; i < N; i++)
        ck_assert_str_ne(ids[i - 1], ids[i]);
    for (int i = 0; i < N; i++)
        free(ids[i]);
    free(ids);
}
END_TEST

/* Every base62 character appears, none far from its expected share (bias from a modulo would
 * over-represent the first characters by about 25%). */
START_TEST(test_base62_spread)
{
    enum { PER_CHAR = 2000, N = 62 * PER_CHAR };
    char *s = malloc(N + 1);
    ids_random_base62(s, N);
    ck_assert_uint_eq(strlen(s), N);
    int counts[256] = {0};
    for (int i = 0; i < N; i++)
        counts[(unsigned char)s[i]]++;
    for (int c = 0; c < 256; c++) {
        if (strchr(base62, c) && c != 0) {
            /* sd ~ 44; +-440 is ten sigma and still below the 25% a modulo bias adds */
            ck_assert_msg(counts[c] > PER_CHAR - 440 && counts[c] < PER_CHAR + 440,
                          "'%c' seen %d times", c, counts[c]);
        } else {
            ck_assert_int_eq(counts[c], 0);
        }
    }
    free(s);
}
END_TEST

START_TEST(test_hex_tokens)
{
    char out[2 * 64 + 1];
    ids_random_hex(out, 0);
    ck_assert_str_eq(out, "");
    ids_random_hex(out, 64);
    ck_assert_uint_eq(strlen(out), 128);
    ck_assert_uint_eq(strspn(out, "0123456789abcdef"), 128);
    char other[2 * 64 + 1];
    ids_random_hex(other, 64);
    ck_assert_str_ne(out, other);
    /* Buffer exactly 2n+1: nothing written past it (ASan checks the heap copy). */
    char *exact = malloc(2 * 3 + 1);
    ids_random_hex(exact, 3);
    ck_assert_uint_eq(strlen(exact), 6);
    free(exact);
}
END_TEST

START_TEST(test_random_bytes)
{
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    ids_random_bytes(a, sizeof a);
    ids_random_bytes(b, sizeof b);
    ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
    static const unsigned char zero[64];
    ck_assert_int_ne(memcmp(a, zero, sizeof a), 0);
    ids_random_bytes(a, 0);
    /* A large request (getrandom may return it in pieces). */
    size_t n = 1 << 20;
    unsigned char *big = calloc(1, n);
    ids_random_bytes(big, n);
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++)
        zeros += big[i] == 0;
    ck_assert_uint_lt(zeros, n / 128); /* expected n/256 */
    free(big);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ids");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_prefixes_and_shape);
    tcase_add_test(tc, test_request_ids_unique);
    tcase_add_test(tc, test_base62_spread);
    tcase_add_test(tc, test_hex_tokens);
    tcase_add_test(tc, test_random_bytes);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
