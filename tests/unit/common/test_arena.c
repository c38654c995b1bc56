/*
 * tests/unit/common/test_arena.c — per-request bump allocator (common/arena.h). Runs under
 * ASan, which catches any allocation that overlaps its block's end.
 */
#include <check.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#include "common/test_util.h"

START_TEST(test_alignment_and_no_overlap)
{
    struct arena *a = arena_create(256);
    enum { N = 500 };
    unsigned char *ptrs[N];
    size_t sizes[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = (size_t)(i * 7 % 53);
        ptrs[i] = arena_alloc(a, sizes[i]);
        ck_assert_ptr_nonnull(ptrs[i]);
        ck_assert_uint_eq((uintptr_t)ptrs[i] % alignof(max_align_t), 0);
        memset(ptrs[i], i & 0xff, sizes[i]);
    }
    for (int i = 0; i < N; i++) {
        for (size_t j = 0; j < sizes[i]; j++)
            ck_assert_int_eq(ptrs[i][j], i & 0xff);
    }
    arena_destroy(a);
}
END_TEST

START_TEST(test_large_allocations_keep_small_ones_flowing)
{
    struct arena *a = arena_create(1024);
    char *small1 = arena_strdup(a, "first");
    char *big = arena_alloc(a, 100000);
    memset(big, 'B', 100000);
    char *small2 = arena_strdup(a, "second");
    char *big2 = arena_alloc(a, 5000);
    memset(big2, 'C', 5000);
    ck_assert_str_eq(small1, "first");
    ck_assert_str_eq(small2, "second");
    ck_assert_int_eq(big[99999], 'B');
    ck_assert_int_eq(big2[0], 'C');
    /* The small allocations share the first block: the big ones did not displace it. */
    ck_assert((uintptr_t)small1 < (uintptr_t)small2);
    ck_assert_uint_lt((uintptr_t)small2 - (uintptr_t)small1, 1024);
    ck_assert_uint_ge(arena_bytes_used(a), 105000 + 12);
    arena_destroy(a);
}
END_TEST

START_TEST(test_string_helpers)
{
    struct arena *a = arena_create(0);
    ck_assert_str_eq(arena_strdup(a, ""), "");
    ck_assert_str_eq(arena_strdup(a, "model"), "model");
    ck_assert_str_eq(arena_strndup(a, "abcdef", 3), "abc");
    ck_assert_str_eq(arena_strndup(a, "ab", 10), "ab");
    ck_assert_str_eq(arena_printf(a, "%s-%d-%.2f", "x", 42, 1.5), "x-42-1.50");
    char long_text[20000];
    memset(long_text, 'L', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    char *p = arena_printf(a, "<%s>", long_text);
    ck_assert_uint_eq(strlen(p), sizeof long_text + 1);
    ck_assert_int_eq(p[0], '<');
    ck_assert_int_eq(p[sizeof long_text], '>');
    const unsigned char bin[4] = {0, 1, 2, 0};
    unsigned char *q = arena_memdup(a, bin, sizeof bin);
    ck_assert_mem_eq(q, bin, sizeof bin);
    arena_memdup(a, NULL, 0);
    arena_destroy(a);
}
END_TEST

START_TEST(test_calloc_zeroes)
{
    struct arena *a = arena_create(128);
    for (int round = 0; round < 50; round++) {
        /* Dirty fresh memory first so zeros cannot be an accident of a new block. */
        unsigned char *dirty = arena_alloc(a, 64);
        memset(dirty, 0xAA, 64);
        uint32_t *z = arena_calloc(a, 10, sizeof *z);
        for (int i = 0; i < 10; i++)
            ck_assert_uint_eq(z[i], 0);
    }
    arena_destroy(a);
}
END_TEST

START_TEST(test_reset_reuses_memory)
{
    struct arena *a = arena_create(4096);
    char *first = arena_alloc(a, 16);
    for (int i = 0; i < 100; i++)
        arena_alloc(a, 300);
    arena_alloc(a, 1 << 20);
    ck_assert_uint_gt(arena_bytes_used(a), 1 << 20);
    arena_reset(a);
    ck_assert_uint_eq(arena_bytes_used(a), 0);
    char *again = arena_alloc(a, 16);
    ck_assert_ptr_eq(again, first); /* the first block is kept and reused from its start */
    strcpy(again, "after reset");
    ck_assert_str_eq(arena_strdup(a, again), "after reset");
    /* A big allocation while only the first block exists, then reset: the first survives. */
    arena_reset(a);
    arena_alloc(a, 1 << 16);
    arena_reset(a);
    ck_assert_ptr_eq(arena_alloc(a, 8), first);
    arena_destroy(a);
}
END_TEST

START_TEST(test_destroy_null_and_zero_sizes)
{
    arena_destroy(NULL);
    struct arena *a = arena_create(0);
    void *p = arena_alloc(a, 0);
    void *q = arena_alloc(a, 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_ne(p, q);
    ck_assert_ptr_nonnull(arena_calloc(a, 0, 8));
    arena_destroy(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_alignment_and_no_overlap);
    tcase_add_test(tc, test_large_allocations_keep_small_ones_flowing);
    tcase_add_test(tc, test_string_helpers);
    tcase_add_test(tc, test_calloc_zeroes);
    tcase_add_test(tc, test_reset_reuses_memory);
    tcase_add_test(tc, test_destroy_null_and_zero_sizes);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
