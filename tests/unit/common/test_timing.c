/*
 * tests/unit/common/test_timing.c — clocks, RFC 3339 formatting and durations (common/timing.h).
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "timing.h"

#include "common/test_util.h"

START_TEST(test_monotonic_advances_across_sleep)
{
    uint64_t t0 = timing_now_ns();
    uint64_t m0 = timing_now_ms();
    timing_sleep_ms(20);
    uint64_t t1 = timing_now_ns();
    uint64_t m1 = timing_now_ms();
    ck_assert_uint_ge(t1 - t0, 20 * 1000000ull);
    ck_assert_uint_ge(m1 - m0, 19); /* ms truncation may eat one tick */
    ck_assert_uint_ge(m1, m0);
}
END_TEST

START_TEST(test_wall_clock_is_plausible)
{
    int64_t ms = timing_wall_ms();
    int64_t s = timing_wall_s();
    ck_assert_int_gt(ms, 1577836800000LL); /* after 2020-01-01 */
    ck_assert_int_lt(ms, 4102444800000LL); /* before 2100-01-01 */
    ck_assert_int_le(ms / 1000 - s, 1);
    ck_assert_int_ge(ms / 1000 - s, -1);
}
END_TEST

START_TEST(test_rfc3339_known_instants)
{
    static const struct {
        int64_t ms;
        const char *with_ms, *without_ms;
    } cases[] = {
            {0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z"},
            {1795638265123LL, "2026-11-25T20:24:25.123Z", "2026-11-25T20:24:25Z"},
            {951782400000LL, "2000-02-29T00:00:00.000Z", "2000-02-29T00:00:00Z"},
            {4102444799999LL, "2099-12-31T23:59:59.999Z", "2099-12-31T23:59:59Z"},
            {-1, "1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[TIMING_RFC3339_SIZE];
        ck_assert_str_eq(timing_format_rfc3339(cases[i].ms, true, out), cases[i].with_ms);
        ck_assert_str_eq(timing_format_rfc3339(cases[i].ms, false, out), cases[i].without_ms);
    }
}
END_TEST

START_TEST(test_parse_duration_valid)
{
    static const struct {
        const char *text;
        int64_t ms;
    } cases[] = {
            {"250ms", 250},
            {"5s", 5000},
            {"2m", 120000},
            {"1h", 3600000},
            {"1d", 86400000},
            {"1500", 1500},
            {"0", 0},
            {" 7s ", 7000},
            {"0ms", 0},
            {"90s", 90000},
            {"\t3m", 180000},
            {"100000d", 8640000000000LL},
            {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = -42;
        ck_assert_msg(timing_parse_duration_ms(cases[i].text, &ms) == 0, "'%s' rejected",
                      cases[i].text);
        ck_assert_int_eq(ms, cases[i].ms);
    }
}
END_TEST

START_TEST(test_parse_duration_invalid)
{
    static const char *const bad[] = {
            "",
            "   ",
            "s",
            "-5s",
            "+5s",
            "1.5s",
            "5x",
            "5 s",
            "5sec",
            "5S",
            "ms5",
            "5ms5",
            "9223372036854775808",
            "9223372036854775807s",
            "99999999999999999999ms",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = -42;
        ck_assert_msg(timing_parse_duration_ms(bad[i], &ms) == -1, "'%s' accepted", bad[i]);
        ck_assert_int_eq(ms, -42);
    }
}
END_TEST

START_TEST(test_format_duration)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
            {0, "0ms"},       {250, "250ms"},    {1000, "1s"},    {1500, "1500ms"},
            {90000, "90s"},   {120000, "2m"},    {3600000, "1h"}, {5400000, "90m"},
            {86400000, "1d"}, {172800000, "2d"}, {-5000, "-5s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[TIMING_DURATION_SIZE];
        ck_assert_str_eq(timing_format_duration_ms(cases[i].ms, out), cases[i].text);
    }
}
END_TEST

START_TEST(test_duration_round_trip)
{
    static const int64_t values[] = {0, 1, 999, 1000, 61000, 3599999, 3600000, 86400001, INT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char out[TIMING_DURATION_SIZE];
        int64_t back = -1;
        ck_assert_int_eq(timing_parse_duration_ms(timing_format_duration_ms(values[i], out), &back),
                         0);
        ck_assert_int_eq(back, values[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timing");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_monotonic_advances_across_sleep);
    tcase_add_test(tc, test_wall_clock_is_plausible);
    tcase_add_test(tc, test_rfc3339_known_instants);
    tcase_add_test(tc, test_parse_duration_valid);
    tcase_add_test(tc, test_parse_duration_invalid);
    tcase_add_test(tc, test_format_duration);
    tcase_add_test(tc, test_duration_round_trip);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
