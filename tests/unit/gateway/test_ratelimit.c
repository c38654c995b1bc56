/*
 * tests/unit/gateway/test_ratelimit.c — gateway/ratelimit against a real PostgreSQL: three
 * limiters on one database stand for three gateways. A key's requests per minute are admitted
 * exactly up to the limit in total; a large limit costs far fewer round trips than requests;
 * a key past its limit is refused without a round trip per request; an unused slice goes back
 * when the key goes quiet; tokens charged on one
 * gateway stop the key on another, including one that never saw the key; unlimited keys never
 * touch the database; with PostgreSQL unreachable each limiter enforces the limit alone. Exits
 * 77 (skipped) when CORTEX_TEST_PG is unset.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "ratelimit.h"
#include "timing.h"
#include "xalloc.h"

#include "scheduler/sched_test_db.h"

static struct sched_test_db tdb;
static db_t *db;

static void setup(void)
{
    ck_assert(sched_test_db_create(&tdb));
    db = sched_test_connect(tdb.conninfo);
}

static void teardown(void)
{
    db_destroy(db);
    db = NULL;
    sched_test_db_drop(&tdb);
}

static struct ratelimit *limiter(const char *conninfo)
{
    char *err = NULL;
    struct ratelimit_config cfg = {.conninfo = conninfo, .sync_ms = 50};
    struct ratelimit *rl = ratelimit_create(&cfg, &err);
    ck_assert_msg(rl != NULL, "ratelimit_create: %s", err ? err : "?");
    return rl;
}

/* A new key with these limits ("NULL" = unlimited); returns its id. */
static int64_t new_key(const char *rpm, const char *tpm)
{
    char *sql = xasprintf("SELECT id FROM cortex.create_api_key('t', %s, %s)", rpm, tpm);
    char *v = sched_test_value(db, sql);
    int64_t id = strtoll(v, NULL, 10);
    free(v);
    free(sql);
    return id;
}

/* Waits until at least need_s seconds of the database's minute are left, so what follows
 * happens within one window. */
static void fresh_minute(int need_s)
{
    char *v = sched_test_value(db, "SELECT extract(second FROM clock_timestamp())::float8");
    double sec = strtod(v, NULL);
    free(v);
    if (60 - sec < need_s)
        timing_sleep_ms((uint64_t)((60 - sec) * 1000) + 200);
}

static int64_t db_int(const char *fmt, int64_t id)
{
    char *sql = xasprintf(fmt, (long long)id);
    char *v = sched_test_value(db, sql);
    int64_t n = v ? strtoll(v, NULL, 10) : -1;
    free(v);
    free(sql);
    return n;
}

START_TEST(test_requests_shared_by_three_gateways)
{
    struct ratelimit *gw[3] = {limiter(tdb.conninfo), limiter(tdb.conninfo), limiter(tdb.conninfo)};
    int64_t key = new_key("30", "NULL");
    fresh_minute(10);
    int admitted = 0, refused = 0;
    for (int i = 0; i < 90; i++) {
        int after = -1;
        enum ratelimit_result r = ratelimit_admit(gw[i % 3], key, 30, 0, &after);
        if (r == RATELIMIT_OK) {
            admitted++;
            ck_assert_int_eq(after, 0);
        } else {
            ck_assert_int_eq(r, RATELIMIT_REQUESTS);
            ck_assert_msg(after >= 1 && after <= 60, "Retry-After %d", after);
            refused++;
        }
    }
    ck_assert_int_eq(admitted, 30);
    ck_assert_int_eq(refused, 60);
    ck_assert_int_eq(
            db_int("SELECT requests FROM cortex.rate_windows WHERE api_key_id = %lld", key), 30);
    /* Past the limit, refusals are local: far fewer calls than the 60 refusals. */
    struct ratelimit_stats st[3];
    uint64_t calls = 0, refusals = 0;
    for (int g = 0; g < 3; g++) {
        ratelimit_get_stats(gw[g], &st[g]);
        calls += st[g].db_calls;
        refusals += st[g].refused_requests;
    }
    ck_assert_uint_eq(refusals, 60);
    ck_assert_msg(calls < 45, "%llu database calls for 90 admissions", (unsigned long long)calls);
    for (int g = 0; g < 3; g++)
        ratelimit_destroy(gw[g]);
}
END_TEST

START_TEST(test_large_limit_few_round_trips)
{
    struct ratelimit *gw[3] = {limiter(tdb.conninfo), limiter(tdb.conninfo), limiter(tdb.conninfo)};
    int64_t key = new_key("100000", "NULL");
    fresh_minute(10);
    for (int i = 0; i < 3000; i++) {
        int after;
        ck_assert_int_eq(ratelimit_admit(gw[i % 3], key, 100000, 0, &after), RATELIMIT_OK);
    }
    uint64_t calls = 0;
    for (int g = 0; g < 3; g++) {
        struct ratelimit_stats st;
        ratelimit_get_stats(gw[g], &st);
        calls += st.db_calls;
    }
    ck_assert_msg(calls <= 6, "%llu database calls for 3000 admissions", (unsigned long long)calls);
    for (int g = 0; g < 3; g++)
        ratelimit_destroy(gw[g]);
}
END_TEST

START_TEST(test_idle_slice_given_back)
{
    char *err = NULL;
    struct ratelimit_config cfg = {.conninfo = tdb.conninfo, .sync_ms = 50, .give_back_ms = 300};
    struct ratelimit *a = ratelimit_create(&cfg, &err);
    ck_assert_msg(a != NULL, "%s", err ? err : "?");
    int64_t key = new_key("100", "NULL");
    fresh_minute(10);
    int after;
    ck_assert_int_eq(ratelimit_admit(a, key, 100, 0, &after), RATELIMIT_OK);
    /* The lease took a tenth of the budget; nine of them go back once the key is quiet. */
    ck_assert_int_eq(
            db_int("SELECT requests FROM cortex.rate_windows WHERE api_key_id = %lld", key), 10);
    uint64_t deadline = timing_now_ms() + 5000;
    while (db_int("SELECT requests FROM cortex.rate_windows WHERE api_key_id = %lld", key) != 1) {
        ck_assert_msg(timing_now_ms() < deadline, "the unused slice never went back");
        timing_sleep_ms(20);
    }
    /* ...and the next request leases again. */
    ck_assert_int_eq(ratelimit_admit(a, key, 100, 0, &after), RATELIMIT_OK);
    ck_assert_int_eq(
            db_int("SELECT requests FROM cortex.rate_windows WHERE api_key_id = %lld", key), 11);
    ratelimit_destroy(a);
}
END_TEST

START_TEST(test_tokens_stop_the_key_everywhere)
{
    struct ratelimit *a = limiter(tdb.conninfo), *b = limiter(tdb.conninfo);
    int64_t key = new_key("NULL", "100");
    fresh_minute(10);
    int after;
    ck_assert_int_eq(ratelimit_admit(a, key, 0, 100, &after), RATELIMIT_OK);
    ratelimit_charge(a, key, 100, 60);
    ck_assert_int_eq(ratelimit_admit(a, key, 0, 100, &after), RATELIMIT_OK); /* 60 < 100 */
    ratelimit_charge(a, key, 100, 70);
    /* Locally known at once: 130 >= 100. */
    ck_assert_int_eq(ratelimit_admit(a, key, 0, 100, &after), RATELIMIT_TOKENS);
    ck_assert(after >= 1 && after <= 60);
    /* Sent by the sync thread; then a gateway that never saw the key refuses it too. */
    uint64_t deadline = timing_now_ms() + 5000;
    while (db_int("SELECT COALESCE(max(tokens), 0) FROM cortex.rate_windows WHERE api_key_id = "
                  "%lld",
                  key) < 130) {
        ck_assert_msg(timing_now_ms() < deadline, "the charges never reached the database");
        timing_sleep_ms(20);
    }
    ck_assert_int_eq(ratelimit_admit(b, key, 0, 100, &after), RATELIMIT_TOKENS);
    struct ratelimit_stats st;
    ratelimit_get_stats(b, &st);
    ck_assert_uint_eq(st.refused_tokens, 1);
    ratelimit_destroy(a);
    ratelimit_destroy(b);
}
END_TEST

START_TEST(test_unlimited_keys_cost_nothing)
{
    struct ratelimit *a = limiter(tdb.conninfo);
    int64_t key = new_key("NULL", "NULL");
    for (int i = 0; i < 100; i++) {
        int after;
        ck_assert_int_eq(ratelimit_admit(a, key, 0, 0, &after), RATELIMIT_OK);
        ratelimit_charge(a, key, 0, 1000);
    }
    ratelimit_sync(a);
    ratelimit_destroy(a); /* sends whatever is pending */
    ck_assert_int_eq(
            db_int("SELECT count(*) FROM cortex.rate_windows WHERE api_key_id = %lld", key), 0);
}
END_TEST

START_TEST(test_database_away_limits_locally)
{
    /* Nothing listens there: every call fails at once. */
    struct ratelimit *a = limiter("host=127.0.0.1 port=1 dbname=none connect_timeout=1");
    int admitted = 0;
    for (int i = 0; i < 12; i++) {
        int after;
        if (ratelimit_admit(a, 7, 5, 0, &after) == RATELIMIT_OK)
            admitted++;
        else
            ck_assert(after >= 1 && after <= 60);
    }
    ck_assert_int_eq(admitted, 5);
    struct ratelimit_stats st;
    ratelimit_get_stats(a, &st);
    ck_assert_uint_ge(st.db_failures, 1);
    ratelimit_destroy(a);
}
END_TEST

int main(void)
{
    if (getenv("CORTEX_TEST_PG") == NULL || getenv("CORTEX_TEST_PG")[0] == '\0') {
        printf("CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    log_set_level(LOG_LEVEL_ERROR);
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("ratelimit");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_requests_shared_by_three_gateways);
    tcase_add_test(tc, test_large_limit_few_round_trips);
    tcase_add_test(tc, test_idle_slice_given_back);
    tcase_add_test(tc, test_tokens_stop_the_key_everywhere);
    tcase_add_test(tc, test_unlimited_keys_cost_nothing);
    tcase_add_test(tc, test_database_away_limits_locally);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
