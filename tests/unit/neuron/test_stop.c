/*
 * tests/unit/neuron/test_stop.c — stop strings over streamed text (neuron/stop.c).
 *
 * Hand-written cases for the contract's corners, then a randomised comparison against a
 * brute-force reading of the definition (first stop to complete wins; at equal ends the longest)
 * over every way of splitting the text, which also checks that nothing is held back needlessly.
 */
#include "rng.h"
#include "stop.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* Feeds pieces in turn (then flushes unless a stop matched) and collects the output. Returns
 * the stop index or -1; out receives the emitted text, NUL-terminated. */
static int run_pieces(const char *const *stops, size_t n_stops, const char *const *pieces,
                      size_t n_pieces, char *out, size_t out_size)
{
    struct stop_matcher *m = stop_matcher_create(stops, n_stops);
    size_t len = 0;
    int stop = -1;
    struct stop_result r;
    for (size_t i = 0; i < n_pieces && stop < 0; i++) {
        stop_matcher_feed(m, pieces[i], strlen(pieces[i]), &r);
        ck_assert(r.text != NULL);
        ck_assert(len + r.len < out_size);
        memcpy(out + len, r.text, r.len);
        len += r.len;
        stop = r.stop;
    }
    stop_matcher_flush(m, &r);
    ck_assert_int_eq(r.stop, stop);
    if (stop >= 0)
        ck_assert_uint_eq(r.len, 0);
    memcpy(out + len, r.text, r.len);
    len += r.len;
    out[len] = '\0';
    stop_matcher_destroy(m);
    return stop;
}

START_TEST(test_exact_cut)
{
    const char *stops[] = {"END"};
    const char *pieces[] = {"Hello END world"};
    char out[64];
    ck_assert_int_eq(run_pieces(stops, 1, pieces, 1, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "Hello ");
}
END_TEST

START_TEST(test_spanning_feeds)
{
    const char *stops[] = {"</answer>"};
    struct stop_matcher *m = stop_matcher_create(stops, 1);
    struct stop_result r;
    stop_matcher_feed(m, "The sum is 4</", 14, &r);
    ck_assert_int_eq(r.stop, -1);
    ck_assert_uint_eq(r.len, 12); /* "</" might start the stop string: held */
    ck_assert(memcmp(r.text, "The sum is 4", 12) == 0);
    stop_matcher_feed(m, "ans", 3, &r);
    ck_assert_int_eq(r.stop, -1);
    ck_assert_uint_eq(r.len, 0);
    stop_matcher_feed(m, "wer> and more", 13, &r);
    ck_assert_int_eq(r.stop, 0);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_str_eq(stop_matcher_string(m, 0), "</answer>");
    ck_assert_ptr_null(stop_matcher_string(m, 1));
    /* Stopped for good. */
    stop_matcher_feed(m, "x", 1, &r);
    ck_assert_int_eq(r.stop, 0);
    ck_assert_uint_eq(r.len, 0);
    stop_matcher_destroy(m);

    /* A false start is released as soon as it stops matching. */
    m = stop_matcher_create(stops, 1);
    stop_matcher_feed(m, "a </ans", 7, &r);
    ck_assert_uint_eq(r.len, 2);
    stop_matcher_feed(m, "i", 1, &r);
    ck_assert_int_eq(r.stop, -1);
    ck_assert_uint_eq(r.len, 6);
    ck_assert(memcmp(r.text, "</ansi", 6) == 0);
    stop_matcher_destroy(m);
}
END_TEST

START_TEST(test_flush_releases_held)
{
    const char *stops[] = {"STOP", "\n\n"};
    struct stop_matcher *m = stop_matcher_create(stops, 2);
    struct stop_result r;
    stop_matcher_feed(m, "line\n", 5, &r);
    ck_assert_uint_eq(r.len, 4); /* "\n" may begin "\n\n" */
    stop_matcher_feed(m, "ST", 2, &r);
    ck_assert_uint_eq(r.len, 1); /* "\n" is released, "ST" may begin "STOP" */
    ck_assert(r.text[0] == '\n');
    stop_matcher_feed(m, "O", 1, &r);
    ck_assert_uint_eq(r.len, 0);
    stop_matcher_flush(m, &r);
    ck_assert_int_eq(r.stop, -1);
    ck_assert_uint_eq(r.len, 3);
    ck_assert(memcmp(r.text, "STO", 3) == 0);
    stop_matcher_destroy(m);
}
END_TEST

START_TEST(test_overlapping_stops)
{
    char out[64];
    const char *abc[] = {"abc"};
    const char *split[] = {"a", "b", "c"};

    const char *ab_bc[] = {"ab", "bc"};
    ck_assert_int_eq(run_pieces(ab_bc, 2, abc, 1, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
    const char *bc_ab[] = {"bc", "ab"};
    ck_assert_int_eq(run_pieces(bc_ab, 2, abc, 1, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "");

    /* "b" completes before "abc", however the text is split. */
    const char *abc_b[] = {"abc", "b"};
    const char *xabc[] = {"xabc"};
    ck_assert_int_eq(run_pieces(abc_b, 2, xabc, 1, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "xa");
    ck_assert_int_eq(run_pieces(abc_b, 2, split, 3, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "a");

    /* At the same end the longer stop wins, so none of it is emitted. */
    const char *c_abc[] = {"c", "bc", "abc"};
    ck_assert_int_eq(run_pieces(c_abc, 3, abc, 1, out, sizeof(out)), 2);
    ck_assert_str_eq(out, "");

    /* A stop that is a prefix of another: the short one completes first. */
    const char *nested[] = {"aaa", "aa"};
    const char *aaaa[] = {"xa", "a", "a", "a"};
    ck_assert_int_eq(run_pieces(nested, 2, aaaa, 4, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "x");
}
END_TEST

START_TEST(test_stop_at_start)
{
    const char *stops[] = {"<|im_end|>"};
    char out[64];
    const char *one[] = {"<|im_end|>tail"};
    ck_assert_int_eq(run_pieces(stops, 1, one, 1, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
    const char *many[] = {"<|", "im_", "end", "|>"};
    ck_assert_int_eq(run_pieces(stops, 1, many, 4, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_no_stops_and_empty)
{
    char out[64];
    const char *pieces[] = {"plain ", "", "text"};
    ck_assert_int_eq(run_pieces(NULL, 0, pieces, 3, out, sizeof(out)), -1);
    ck_assert_str_eq(out, "plain text");
    /* An empty stop string never matches but keeps its index for the others. */
    const char *stops[] = {"", "xt"};
    ck_assert_int_eq(run_pieces(stops, 2, pieces, 3, out, sizeof(out)), 1);
    ck_assert_str_eq(out, "plain te");
}
END_TEST

START_TEST(test_utf8)
{
    /* "é" is C3 A9, "€" is E2 82 AC, "😀" is F0 9F 98 80. */
    struct stop_matcher *m = stop_matcher_create(NULL, 0);
    struct stop_result r;
    stop_matcher_feed(m, "caf\xc3", 4, &r);
    ck_assert_uint_eq(r.len, 3); /* the lead byte waits for its continuation */
    stop_matcher_feed(m, "\xa9 \xe2\x82", 4, &r);
    ck_assert_uint_eq(r.len, 3);
    ck_assert(memcmp(r.text, "\xc3\xa9 ", 3) == 0);
    stop_matcher_feed(m, "\xac\xf0\x9f\x98", 4, &r);
    ck_assert_uint_eq(r.len, 3);
    stop_matcher_feed(m, "\x80", 1, &r);
    ck_assert_uint_eq(r.len, 4);
    ck_assert(memcmp(r.text, "\xf0\x9f\x98\x80", 4) == 0);
    /* Stray continuation bytes are passed on rather than held; flush releases a cut-off
     * character. */
    stop_matcher_feed(m, "\x80\x80", 2, &r);
    ck_assert_uint_eq(r.len, 2);
    stop_matcher_feed(m, "\xe2\x82", 2, &r);
    ck_assert_uint_eq(r.len, 0);
    stop_matcher_flush(m, &r);
    ck_assert_uint_eq(r.len, 2);
    stop_matcher_destroy(m);

    /* A multi-byte stop string arriving byte by byte. */
    const char *stops[] = {"\xe2\x82\xac!"};
    char out[64];
    const char *pieces[] = {"5 \xe2", "\x82", "\xac", "! rest"};
    ck_assert_int_eq(run_pieces(stops, 1, pieces, 4, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "5 ");
}
END_TEST

/* ---- against the definition --------------------------------------------------------------- */

/* The output the contract prescribes for text under stops; returns the stop index or -1. */
static int reference_cut(const char *const *stops, size_t n_stops, const char *text, size_t *cut)
{
    size_t len = strlen(text);
    for (size_t end = 1; end <= len; end++) {
        int best = -1;
        size_t best_len = 0;
        for (size_t i = 0; i < n_stops; i++) {
            size_t l = strlen(stops[i]);
            if (l == 0 || l > end || l <= best_len || memcmp(text + end - l, stops[i], l) != 0)
                continue;
            best = (int)i;
            best_len = l;
        }
        if (best >= 0) {
            *cut = end - best_len;
            return best;
        }
    }
    *cut = len;
    return -1;
}

/* The longest tail of text[0..len) that is a proper prefix of a stop (what must be held). */
static size_t reference_hold(const char *const *stops, size_t n_stops, const char *text, size_t len)
{
    size_t best = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t l = strlen(stops[i]);
        for (size_t k = 1; k < l && k <= len; k++)
            if (k > best && memcmp(text + len - k, stops[i], k) == 0)
                best = k;
    }
    return best;
}

START_TEST(test_random_against_reference)
{
    struct rng r;
    rng_seed(&r, 2024);
    const char alphabet[] = "abc";
    for (int round = 0; round < 3000; round++) {
        char stop_buf[4][6];
        const char *stops[4];
        size_t n_stops = 1 + rng_next_u64(&r) % 4;
        for (size_t i = 0; i < n_stops; i++) {
            size_t l = 1 + rng_next_u64(&r) % 5;
            for (size_t k = 0; k < l; k++)
                stop_buf[i][k] = alphabet[rng_next_u64(&r) % 3];
            stop_buf[i][l] = '\0';
            stops[i] = stop_buf[i];
        }
        char text[41];
        size_t len = rng_next_u64(&r) % 41;
        for (size_t k = 0; k < len; k++)
            text[k] = alphabet[rng_next_u64(&r) % 3];
        text[len] = '\0';
        size_t want_cut;
        int want_stop = reference_cut(stops, n_stops, text, &want_cut);

        struct stop_matcher *m = stop_matcher_create(stops, n_stops);
        char out[64];
        size_t out_len = 0, pos = 0;
        int stop = -1;
        struct stop_result res;
        while (pos < len && stop < 0) {
            size_t piece = 1 + rng_next_u64(&r) % (round % 2 ? 3 : 12);
            if (piece > len - pos)
                piece = len - pos;
            stop_matcher_feed(m, text + pos, piece, &res);
            pos += piece;
            memcpy(out + out_len, res.text, res.len);
            out_len += res.len;
            stop = res.stop;
            if (stop < 0) {
                /* Held back: exactly the tail that could still begin a stop string. */
                size_t hold = reference_hold(stops, n_stops, text, pos);
                ck_assert_uint_eq(out_len, pos - hold);
            }
        }
        stop_matcher_flush(m, &res);
        memcpy(out + out_len, res.text, res.len);
        out_len += res.len;
        stop_matcher_destroy(m);

        ck_assert_msg(stop == want_stop, "round %d text '%s': stop %d, want %d", round, text, stop,
                      want_stop);
        ck_assert_uint_eq(out_len, want_cut);
        ck_assert(memcmp(out, text, out_len) == 0);
    }
}
END_TEST

static Suite *stop_suite(void)
{
    Suite *s = suite_create("stop");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_exact_cut);
    tcase_add_test(tc, test_spanning_feeds);
    tcase_add_test(tc, test_flush_releases_held);
    tcase_add_test(tc, test_overlapping_stops);
    tcase_add_test(tc, test_stop_at_start);
    tcase_add_test(tc, test_no_stops_and_empty);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_random_against_reference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(stop_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
