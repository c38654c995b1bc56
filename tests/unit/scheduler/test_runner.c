/*
 * tests/unit/scheduler/test_runner.c — the scheduler's loop against a real PostgreSQL and fake
 * neurons on 127.0.0.1 (the neuron's part in the database is played by the test, as the real
 * neuron reports its placements itself).
 *
 * Covers: demand -> load sent to the node that fits, with its devices -> the neuron reports
 * ready -> the demand is satisfied, and nothing is sent twice; a neuron that refuses every load:
 * each attempt fails its placement with the neuron's reason, after max_load_attempts the demand
 * fails with that reason and nothing more is sent, until new demand asks again; a neuron
 * answering 500 is retried before the placement fails; two runners: exactly one acts; waits are
 * recorded once; a new leader tells the neuron about a requested placement its predecessor
 * created; the very first lease already lasts the lease_duration setting. Exits 77 (skipped)
 * when CORTEX_TEST_PG is unset.
 */
#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "runner.h"
#include "timing.h"
#include "xalloc.h"

#include "scheduler/fake_neuron.h"
#include "scheduler/sched_test_db.h"

static struct sched_test_db tdb;
static db_t *db;
static struct fake_neuron fn;
static struct metrics *metrics;

static void setup(void)
{
    ck_assert(sched_test_db_create(&tdb));
    db = sched_test_connect(tdb.conninfo);
    fake_neuron_start(&fn);
    metrics = metrics_create();
}

static void teardown(void)
{
    fake_neuron_stop(&fn);
    metrics_destroy(metrics);
    db_destroy(db);
    sched_test_db_drop(&tdb);
}

static runner_t *new_runner(const char *holder)
{
    struct runner_options opt = {
            .conninfo = tdb.conninfo,
            .holder = holder,
            .tick_ms = 60000, /* cycles are driven by the test */
            .lease_ms = 10000,
            .dispatch = {
                    .workers = 2, .timeout_ms = 3000, .attempts = 2, .backoff_initial_ms = 10}};
    char *err = NULL;
    runner_t *r = runner_create(&opt, metrics, &err);
    ck_assert_msg(r != NULL, "runner_create: %s", err ? err : "?");
    return r;
}

/* A node served by the fake neuron, with a CPU budget, holding the given model files. */
static void add_node(const char *name, const char *budget, const char *models_json)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT cortex.node_register('%s', '%s', '[{\"kind\":\"cpu\",\"ordinal\":0,"
             "\"memory_total_bytes\":%s}]')",
             name, fn.endpoint, budget);
    sched_test_sql(db, sql);
    snprintf(sql, sizeof sql,
             "SELECT cortex.node_models_sync(id, '%s') FROM cortex.nodes WHERE name = '%s'",
             models_json, name);
    sched_test_sql(db, sql);
}

/* Waits (bounded) until the runner's dispatcher has an answer, then lets the runner take it. */
static void settle(runner_t *r)
{
    struct pollfd p = {.fd = dispatch_fd(runner_dispatch(r)), .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 10000) == 1, "no answer from the neuron within 10 s");
    ck_assert_uint_gt(runner_handle_results(r), 0);
}

static char *value(const char *sql)
{
    return sched_test_value(db, sql);
}

START_TEST(test_demand_loads_and_is_satisfied)
{
    add_node("small", "8589934592",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":4294967296}]");
    add_node("big", "34359738368",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":4294967296}]");
    sched_test_sql(db, "SELECT cortex.demand_load('m1', 'gw-test')");
    runner_t *r = new_runner("runner-a");
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert(runner_is_leader(r));
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 1, 10000);
    /* the placement id comes from the database: only its presence is checked */
    ck_assert_msg(
            strncmp(fn.bodies[0], "{\"model\":\"m1\",\"devices\":[0],\"placement_id\":", 43) == 0,
            "%s", fn.bodies[0]);
    settle(r);
    sched_test_expect(db,
                      "SELECT n.name || '|' || p.state FROM cortex.placements p JOIN cortex.nodes "
                      "n ON n.id = p.node_id",
                      "small|requested"); /* best fit */

    /* Nothing new while the neuron loads: no duplicate load. */
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 1);

    /* The neuron reports into the database; the next cycle satisfies the demand. */
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'loading') FROM cortex.placements");
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'ready') FROM cortex.placements");
    ck_assert_int_eq(runner_cycle(r), 0);
    sched_test_expect(db, "SELECT state FROM cortex.demand", "satisfied");
    char *epoch = value("SELECT epoch FROM cortex.scheduler_lease");
    char want[64];
    snprintf(want, sizeof want, "%s|%s", epoch, epoch);
    sched_test_expect(db,
                      "SELECT string_agg(DISTINCT epoch::text, '|') || '|' || "
                      "min(epoch) FROM cortex.events WHERE kind IN ('scheduler.load', "
                      "'scheduler.resolve')",
                      want);
    free(epoch);
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 1);
    ck_assert_uint_eq(runner_cycles(r), 4);

    char *text = metrics_render(metrics);
    ck_assert_ptr_nonnull(strstr(text, "cortex_scheduler_leader 1\n"));
    ck_assert_ptr_nonnull(
            strstr(text, "cortex_scheduler_decisions_total{action=\"load\",cause=\"demand\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "cortex_fleet_placements{state=\"ready\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "cortex_fleet_models{state=\"ready\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "cortex_fleet_nodes{liveness=\"alive\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "cortex_fleet_device_memory_bytes{node=\"small\","
                                       "device=\"cpu:0\",kind=\"reserved\"} 4294967296\n"));
    free(text);
    runner_destroy(r);
    sched_test_expect(db, "SELECT expires_at <= clock_timestamp() FROM cortex.scheduler_lease",
                      "t"); /* resigned */
}
END_TEST

/* Runs cycles until the demand is no longer open (bounded), letting answers arrive. */
static int cycles_until_resolved(runner_t *r, int max)
{
    int n = 0;
    for (; n < max; n++) {
        ck_assert_int_eq(runner_cycle(r), 0);
        char *state = value("SELECT state FROM cortex.demand ORDER BY id DESC LIMIT 1");
        bool open = strcmp(state, "open") == 0;
        free(state);
        if (!open)
            break;
        settle(r);
    }
    return n;
}

START_TEST(test_refused_loads_fail_the_demand)
{
    fn.load_status = 409;
    fn.load_answer = "{\"error\":{\"message\":\"the memory budget cannot hold m1\"}}";
    add_node("n1", "17179869184",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":4294967296}]");
    sched_test_sql(db, "SELECT cortex.demand_load('m1', 'gw-test')");
    runner_t *r = new_runner("runner-a");
    ck_assert_int_lt(cycles_until_resolved(r, 10), 10);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 3); /* max_load_attempts, one each */
    sched_test_expect(db,
                      "SELECT count(*) || '|' || min(reason) || '|' || max(reason) FROM "
                      "cortex.placements WHERE state = 'failed'",
                      "3|neuron refused to load (HTTP 409): the memory budget cannot hold m1|"
                      "neuron refused to load (HTTP 409): the memory budget cannot hold m1");
    sched_test_expect(db, "SELECT state || '|' || reason FROM cortex.demand",
                      "failed|3 failed loads (max_load_attempts 3): neuron refused to load "
                      "(HTTP 409): the memory budget cannot hold m1");
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind = 'scheduler.load_failed'",
                      "3");
    /* Not retried... */
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 3);
    /* ... until new demand asks again. */
    sched_test_sql(db, "SELECT cortex.demand_load('m1', 'gw-test')");
    ck_assert_int_eq(runner_cycle(r), 0);
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 4, 10000);
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind = 'scheduler.retry'", "1");
    runner_destroy(r);
}
END_TEST

START_TEST(test_server_errors_retried_then_failed)
{
    fn.fail_first = 1000;
    add_node("n1", "17179869184",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":4294967296}]");
    sched_test_sql(db, "SELECT cortex.set_setting('max_load_attempts', '1')");
    sched_test_sql(db, "SELECT cortex.demand_load('m1', 'gw-test')");
    runner_t *r = new_runner("runner-a");
    ck_assert_int_lt(cycles_until_resolved(r, 5), 5);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 2); /* --neuron-attempts 2 */
    char *reason = value("SELECT reason FROM cortex.placements");
    ck_assert_ptr_nonnull(strstr(reason, "neuron failed to load (HTTP 500)"));
    ck_assert_ptr_nonnull(strstr(reason, "(after 2 attempts)"));
    free(reason);
    sched_test_expect(db, "SELECT state FROM cortex.demand", "failed");
    runner_destroy(r);
}
END_TEST

START_TEST(test_two_runners_one_acts)
{
    add_node("n1", "17179869184",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":4294967296}]");
    sched_test_sql(db, "SELECT cortex.demand_load('m1', 'gw-test')");
    runner_t *a = new_runner("runner-a"), *b = new_runner("runner-b");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(runner_cycle(a), 0);
        ck_assert_int_eq(runner_cycle(b), 0);
    }
    ck_assert(runner_is_leader(a) != runner_is_leader(b));
    runner_t *leader = runner_is_leader(a) ? a : b, *standby = leader == a ? b : a;
    ck_assert_uint_eq(runner_cycles(standby), 0);
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 1, 10000);
    sched_test_expect(db, "SELECT count(*) FROM cortex.placements", "1");
    sched_test_expect(db,
                      "SELECT count(DISTINCT actor) FROM cortex.events WHERE kind LIKE "
                      "'scheduler.%'",
                      "1");

    /* The leader goes away before the neuron was told again... its successor tells it. */
    sched_test_sql(db, "SELECT 1"); /* (the placement is still requested) */
    runner_destroy(leader);
    ck_assert_int_eq(runner_cycle(standby), 0);
    ck_assert(runner_is_leader(standby));
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 2, 10000);
    /* the placement id comes from the database: only its presence is checked */
    ck_assert_msg(
            strncmp(fn.bodies[1], "{\"model\":\"m1\",\"devices\":[0],\"placement_id\":", 43) == 0,
            "%s", fn.bodies[1]);
    sched_test_expect(db, "SELECT count(*) FROM cortex.placements", "1"); /* the same one */
    runner_destroy(standby);
}
END_TEST

START_TEST(test_waits_recorded_once)
{
    /* m2 cannot fit anywhere while the pinned m1 holds the only node's memory. */
    add_node("n1", "8589934592",
             "[{\"name\":\"m1\",\"format\":\"gguf\",\"size_bytes\":100,\"memory_bytes\":"
             "6442450944},{\"name\":\"m2\",\"format\":\"gguf\",\"size_bytes\":100,"
             "\"memory_bytes\":6442450944}]");
    sched_test_sql(db, "SELECT cortex.pin_model('m1')");
    runner_t *r = new_runner("runner-a");
    ck_assert_int_eq(runner_cycle(r), 0); /* loads the pinned model */
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 1, 10000);
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'loading') FROM cortex.placements");
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'ready') FROM cortex.placements");
    sched_test_sql(db, "SELECT cortex.demand_load('m2', 'gw-test')");
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(runner_cycle(r), 0);
    sched_test_expect(db,
                      "SELECT count(*) || '|' || min(model) FROM cortex.events WHERE kind = "
                      "'scheduler.wait'",
                      "1|m2");
    sched_test_expect(db,
                      "SELECT state FROM cortex.demand WHERE model_id = "
                      "cortex.resolve_model('m2')",
                      "open");
    runner_destroy(r);
}
END_TEST

/* The lease length comes from the lease_duration setting from the very first lease on, when
 * the command line does not fix it (it once took the built-in 10 s for the first lease). */
START_TEST(test_first_lease_uses_the_settings)
{
    sched_test_sql(db, "SELECT cortex.set_setting('lease_duration', '7 seconds')");
    sched_test_sql(db, "SELECT cortex.set_setting('scheduler_tick', '700 milliseconds')");
    struct runner_options opt = {.conninfo = tdb.conninfo,
                                 .holder = "runner-a",
                                 .dispatch = {.workers = 1, .timeout_ms = 3000, .attempts = 1}};
    char *err = NULL;
    runner_t *r = runner_create(&opt, metrics, &err);
    ck_assert_msg(r != NULL, "runner_create: %s", err ? err : "?");
    ck_assert_int_eq(runner_cycle(r), 0);
    ck_assert(runner_is_leader(r));
    sched_test_expect(db,
                      "SELECT epoch || '|' || extract(epoch FROM expires_at - acquired_at)::int"
                      " FROM cortex.scheduler_lease",
                      "1|7");
    sched_test_expect(db,
                      "SELECT extract(epoch FROM (detail->>'expires_at')::timestamptz - at)::int"
                      " FROM cortex.events WHERE kind = 'lease.acquired'",
                      "7");
    runner_destroy(r);
}
END_TEST

int main(void)
{
    if (getenv("CORTEX_TEST_PG") == NULL || getenv("CORTEX_TEST_PG")[0] == '\0') {
        printf("CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    log_set_level(LOG_LEVEL_ERROR);
    Suite *s = suite_create("runner");
    TCase *tc = tcase_create("runner");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_demand_loads_and_is_satisfied);
    tcase_add_test(tc, test_refused_loads_fail_the_demand);
    tcase_add_test(tc, test_server_errors_retried_then_failed);
    tcase_add_test(tc, test_two_runners_one_acts);
    tcase_add_test(tc, test_waits_recorded_once);
    tcase_add_test(tc, test_first_lease_uses_the_settings);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
