/*
 * tests/unit/neuron/test_prefix_cache.c — the index of saved prompt prefixes, with plain
 * counted values instead of model states.
 *
 * Checks: the chained hash depends on every earlier span and on order; the longest saved prefix
 * wins, capped by max_len; colliding hashes (a one-bit mask) never return another prompt's
 * entry; LRU eviction within the byte budget (hits refresh an entry); refused insertions leave
 * the value with the caller; values growing past the budget are trimmed; every value is freed
 * exactly once.
 */
#include "prefix_cache.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

struct value {
    int id;
    uint64_t bytes;
};

static int freed[64]; /* times each value id was freed */

static void value_free(void *v)
{
    struct value *x = v;
    freed[x->id]++;
    free(x);
}

static uint64_t value_bytes(const void *v)
{
    return ((const struct value *)v)->bytes;
}

static struct value *value_new(int id, uint64_t bytes)
{
    struct value *v = malloc(sizeof *v);
    v->id = id;
    v->bytes = bytes;
    return v;
}

static struct prefix_cache *make(uint64_t budget, int64_t interval, uint64_t mask)
{
    memset(freed, 0, sizeof freed);
    struct prefix_cache_options o = {.budget_bytes = budget,
                                     .interval = interval,
                                     .free_value = value_free,
                                     .value_bytes = value_bytes,
                                     .hash_mask = mask};
    return prefix_cache_create(&o);
}

/* id of the value lookup returns, or -1; *len gets the length */
static int lookup_id(struct prefix_cache *pc, const int32_t *t, int64_t n, int64_t max_len,
                     int64_t *len)
{
    struct value *v = prefix_cache_lookup(pc, t, n, max_len, len);
    return v ? v->id : -1;
}

START_TEST(test_hash_chain)
{
    int32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t b[8] = {9, 2, 3, 4, 5, 6, 7, 8}; /* first span differs, second equal */
    int32_t c[4] = {2, 1, 3, 4};             /* a's first span reordered */
    uint64_t ha1 = prefix_cache_hash_span(0, a, 4);
    uint64_t ha2 = prefix_cache_hash_span(ha1, a + 4, 4);
    uint64_t hb1 = prefix_cache_hash_span(0, b, 4);
    uint64_t hb2 = prefix_cache_hash_span(hb1, b + 4, 4);
    ck_assert_uint_ne(ha1, hb1);
    ck_assert_uint_ne(ha2, hb2); /* the equal second spans hash apart through the chain */
    ck_assert_uint_ne(ha1, prefix_cache_hash_span(0, c, 4));
    ck_assert_uint_eq(ha2, prefix_cache_hash_span(prefix_cache_hash_span(0, a, 4), a + 4, 4));
    ck_assert_uint_ne(ha2, prefix_cache_hash_span(0, a + 4, 4));
}
END_TEST

START_TEST(test_longest_match_and_cap)
{
    struct prefix_cache *pc = make(1 << 20, 4, 0);
    int32_t t[16];
    for (int i = 0; i < 16; i++)
        t[i] = 100 + i;
    ck_assert_int_eq(prefix_cache_insert(pc, t, 4, value_new(1, 10)), 0);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 8, value_new(2, 10)), 0);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 12, value_new(3, 10)), 0);
    int64_t len;
    /* the whole prompt is saved up to 12: a prompt of 13 tokens may use all 12 */
    ck_assert_int_eq(lookup_id(pc, t, 13, 12, &len), 3);
    ck_assert_int_eq(len, 12);
    /* a prompt of exactly 12 tokens must keep one to read (max_len = n - 1) */
    ck_assert_int_eq(lookup_id(pc, t, 12, 11, &len), 2);
    ck_assert_int_eq(len, 8);
    /* diverging at token 10: the 8-token entry is the longest that matches */
    int32_t u[16];
    memcpy(u, t, sizeof u);
    u[10] = 7;
    ck_assert_int_eq(lookup_id(pc, u, 16, 15, &len), 2);
    ck_assert_int_eq(len, 8);
    /* diverging at token 0: nothing */
    u[0] = 7;
    ck_assert_int_eq(lookup_id(pc, u, 16, 15, &len), -1);
    ck_assert_int_eq(len, 0);
    /* shorter than one span */
    ck_assert_int_eq(lookup_id(pc, t, 3, 2, &len), -1);
    struct prefix_cache_stats s;
    prefix_cache_stats(pc, &s);
    ck_assert_uint_eq(s.lookups, 5);
    ck_assert_uint_eq(s.hits, 3);
    ck_assert_uint_eq(s.hit_tokens, 12 + 8 + 8);
    ck_assert_uint_eq(s.entries, 3);
    ck_assert_uint_eq(s.bytes, 3 * 10 + (4 + 8 + 12) * sizeof(int32_t));
    prefix_cache_destroy(pc);
    ck_assert_int_eq(freed[1] + freed[2] + freed[3], 3);
}
END_TEST

START_TEST(test_collisions_verified)
{
    /* mask 0x1: every chained hash is 0 or 1, so different prompts share hashes */
    struct prefix_cache *pc = make(1 << 20, 4, 0x1);
    int32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t b[8] = {11, 12, 13, 14, 15, 16, 17, 18};
    int32_t c[8] = {21, 22, 23, 24, 25, 26, 27, 28};
    int32_t d[8] = {1, 2, 3, 4, 35, 36, 37, 38}; /* shares a's first span */
    ck_assert_int_eq(prefix_cache_insert(pc, a, 8, value_new(1, 1)), 0);
    ck_assert_int_eq(prefix_cache_insert(pc, b, 8, value_new(2, 1)), 0);
    ck_assert_int_eq(prefix_cache_insert(pc, c, 4, value_new(3, 1)), 0);
    ck_assert(prefix_cache_contains(pc, a, 8));
    ck_assert(prefix_cache_contains(pc, b, 8));
    ck_assert(!prefix_cache_contains(pc, a, 4));
    ck_assert(!prefix_cache_contains(pc, d, 8));
    int64_t len;
    ck_assert_int_eq(lookup_id(pc, a, 8, 8, &len), 1);
    ck_assert_int_eq(lookup_id(pc, b, 8, 8, &len), 2);
    ck_assert_int_eq(lookup_id(pc, c, 8, 8, &len), 3);
    ck_assert_int_eq(len, 4);
    ck_assert_int_eq(lookup_id(pc, d, 8, 8, &len), -1);
    /* a fourth colliding entry, a's first span, is what d shares with a */
    ck_assert_int_eq(prefix_cache_insert(pc, a, 4, value_new(4, 1)), 0);
    ck_assert_int_eq(lookup_id(pc, d, 8, 8, &len), 4);
    ck_assert_int_eq(len, 4);
    ck_assert_int_eq(lookup_id(pc, a, 8, 8, &len), 1);
    ck_assert_int_eq(len, 8);
    struct value *dup = value_new(5, 1);
    ck_assert_int_eq(prefix_cache_insert(pc, d, 4, dup), -1); /* d[0..4) is a[0..4) */
    free(dup);
    prefix_cache_destroy(pc);
}
END_TEST

START_TEST(test_lru_eviction)
{
    /* entries of 4 tokens and 100 value bytes: 116 bytes each; room for three */
    struct prefix_cache *pc = make(3 * 116 + 10, 4, 0);
    int32_t t[5][4];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            t[i][j] = i * 10 + j;
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(prefix_cache_insert(pc, t[i], 4, value_new(i, 100)), 0);
    int64_t len;
    ck_assert_int_eq(lookup_id(pc, t[1], 4, 4, &len), 1); /* 1 is now the newest */
    ck_assert_int_eq(prefix_cache_insert(pc, t[4], 4, value_new(4, 100)), 0);
    ck_assert_int_eq(freed[2], 1); /* the least recently used went */
    ck_assert_int_eq(freed[1] + freed[3] + freed[4], 0);
    ck_assert(!prefix_cache_contains(pc, t[2], 4));
    ck_assert(prefix_cache_contains(pc, t[1], 4));
    struct prefix_cache_stats s;
    prefix_cache_stats(pc, &s);
    ck_assert_uint_eq(s.entries, 3);
    ck_assert_uint_eq(s.evictions, 1);
    ck_assert_uint_eq(s.bytes, 3 * 116);
    /* a bigger entry pushes out the two oldest (3, then 1) */
    ck_assert_int_eq(prefix_cache_insert(pc, t[0], 4, value_new(5, 200)), 0);
    ck_assert_int_eq(freed[3], 1);
    ck_assert_int_eq(freed[1], 1);
    ck_assert_int_eq(freed[4], 0);
    ck_assert(prefix_cache_evict_lru(pc));
    ck_assert_int_eq(freed[4], 1);
    ck_assert(prefix_cache_evict_lru(pc));
    ck_assert_int_eq(freed[5], 1);
    ck_assert(!prefix_cache_evict_lru(pc));
    prefix_cache_stats(pc, &s);
    ck_assert_uint_eq(s.entries, 0);
    ck_assert_uint_eq(s.bytes, 0);
    ck_assert_uint_eq(s.evictions, 5);
    prefix_cache_destroy(pc);
}
END_TEST

START_TEST(test_refusals_and_trim)
{
    struct prefix_cache *pc = make(1000, 4, 0);
    int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ck_assert(prefix_cache_fits(pc, 1000 - 8 * sizeof(int32_t), 8));
    ck_assert(!prefix_cache_fits(pc, 1001 - 8 * sizeof(int32_t), 8));
    struct value *v = value_new(1, 10);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 6, v), -1); /* not a multiple of 4 */
    ck_assert_int_eq(prefix_cache_insert(pc, t, 0, v), -1);
    struct value *big = value_new(2, 2000);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 8, big), -1); /* over budget */
    ck_assert_int_eq(freed[2], 0);
    free(big);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 8, v), 0);
    struct value *dup = value_new(3, 10);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 8, dup), -1); /* present already */
    ck_assert_int_eq(freed[3], 0);
    free(dup);
    struct value *w = value_new(4, 10);
    ck_assert_int_eq(prefix_cache_insert(pc, t, 4, w), 0);
    /* the 8-token value grows past the budget (a GPU prefix whose blocks stopped being shared):
     * a trim measures again and drops the least recently used entry until it fits */
    v->bytes = 990;
    prefix_cache_trim(pc);
    ck_assert_int_eq(freed[1], 1);
    ck_assert_int_eq(freed[4], 0);
    struct prefix_cache_stats s;
    prefix_cache_stats(pc, &s);
    ck_assert_uint_eq(s.entries, 1);
    ck_assert_uint_eq(s.bytes, 10 + 4 * sizeof(int32_t));
    prefix_cache_destroy(pc);
    ck_assert_int_eq(freed[4], 1);
    prefix_cache_destroy(NULL);
}
END_TEST

START_TEST(test_many_entries)
{
    /* enough entries to grow the bucket array several times; all found afterwards */
    struct prefix_cache *pc = make(1 << 30, 2, 0);
    static int32_t t[500][2];
    for (int i = 0; i < 500; i++) {
        t[i][0] = i;
        t[i][1] = -i;
        ck_assert_int_eq(prefix_cache_insert(pc, t[i], 2, value_new(i % 64, 1)), 0);
    }
    for (int i = 0; i < 500; i++) {
        int64_t len;
        struct value *v = prefix_cache_lookup(pc, t[i], 2, 2, &len);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->id, i % 64);
        ck_assert_int_eq(len, 2);
    }
    prefix_cache_destroy(pc);
    int total = 0;
    for (int i = 0; i < 64; i++)
        total += freed[i];
    ck_assert_int_eq(total, 500);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prefix_cache");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_hash_chain);
    tcase_add_test(tc, test_longest_match_and_cap);
    tcase_add_test(tc, test_collisions_verified);
    tcase_add_test(tc, test_lru_eviction);
    tcase_add_test(tc, test_refusals_and_trim);
    tcase_add_test(tc, test_many_entries);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
