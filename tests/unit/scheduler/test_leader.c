/*
 * tests/unit/scheduler/test_leader.c — leader election against a real PostgreSQL.
 *
 * Covers: two schedulers stepping at the same moment, round after round: exactly one leads and
 * the lease row names it; a stalled leader whose lease expired cannot write (its fenced write
 * fails with FLEET_STALE and changes nothing) and steps down; a renewal after a takeover is
 * refused; a killed leader (its session
 * terminated) is replaced within one lease; resigning hands over at once; leadership is not
 * trusted locally after the lease ran out. Exits 77 (skipped) when CORTEX_TEST_PG is unset.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "leader.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include "scheduler/sched_test_db.h"

static struct sched_test_db tdb;

static void setup(void)
{
    ck_assert(sched_test_db_create(&tdb));
}

static void teardown(void)
{
    sched_test_db_drop(&tdb);
}

static leader_t *new_leader(const char *holder)
{
    char *err = NULL;
    leader_t *l = leader_create(tdb.conninfo, holder, &err);
    ck_assert_msg(l != NULL, "leader_create: %s", err ? err : "?");
    return l;
}

struct racer {
    leader_t *l;
    pthread_barrier_t *barrier;
    int rounds;
    enum leader_role *roles; /* [round] */
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < r->rounds; i++) {
        pthread_barrier_wait(r->barrier);
        r->roles[i] = leader_step(r->l, 10000);
        pthread_barrier_wait(r->barrier);
    }
    return NULL;
}

START_TEST(test_two_leaders_race)
{
    enum { ROUNDS = 20 };
    leader_t *a = new_leader("sched-a"), *b = new_leader("sched-b");
    enum leader_role ra[ROUNDS], rb[ROUNDS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    struct racer x = {a, &barrier, ROUNDS, ra}, y = {b, &barrier, ROUNDS, rb};
    pthread_t tx, ty;
    pthread_create(&tx, NULL, racer_main, &x);
    pthread_create(&ty, NULL, racer_main, &y);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    pthread_barrier_destroy(&barrier);

    for (int i = 0; i < ROUNDS; i++) {
        ck_assert_msg((ra[i] == LEADER_ROLE_LEADER) + (rb[i] == LEADER_ROLE_LEADER) == 1,
                      "round %d: a %d, b %d", i, ra[i], rb[i]);
        ck_assert_int_eq(ra[i], ra[0]); /* no flapping */
    }
    leader_t *winner = ra[0] == LEADER_ROLE_LEADER ? a : b;
    leader_t *loser = winner == a ? b : a;
    ck_assert(leader_valid(winner));
    ck_assert(!leader_valid(loser));
    ck_assert_int_eq(leader_epoch(loser), 0);
    ck_assert(leader_has_lock(winner) != leader_has_lock(loser));

    db_t *db = sched_test_connect(tdb.conninfo);
    char want[64];
    snprintf(want, sizeof want, "%lld|%s", (long long)leader_epoch(winner),
             winner == a ? "sched-a" : "sched-b");
    sched_test_expect(db, "SELECT epoch || '|' || holder FROM cortex.scheduler_lease", want);
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind = 'lease.acquired'", "1");
    db_destroy(db);
    leader_destroy(a);
    leader_destroy(b);
}
END_TEST

/* One model, one CPU node, one open demand: something for a leader to write. */
static void seed_fleet(db_t *db)
{
    sched_test_sql(db, "SELECT cortex.add_model('lt-model', memory_bytes => 1000)");
    sched_test_sql(db, "SELECT cortex.node_register('lt-node', 'http://127.0.0.1:9', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":100000}]')");
    sched_test_sql(db, "SELECT cortex.demand_load('lt-model', 'test')");
}

START_TEST(test_stalled_leader_cannot_write)
{
    db_t *db = sched_test_connect(tdb.conninfo);
    seed_fleet(db);
    leader_t *a = new_leader("sched-a"), *b = new_leader("sched-b");
    ck_assert_int_eq(leader_step(a, 10000), LEADER_ROLE_LEADER);
    ck_assert_int_eq(leader_step(b, 10000), LEADER_ROLE_STANDBY);
    int64_t stale = leader_epoch(a);

    /* a stalls (SIGSTOP): it stops renewing and its lease runs out. */
    sched_test_sql(db, "UPDATE cortex.scheduler_lease "
                       "SET expires_at = clock_timestamp() - interval '1 second'");
    ck_assert_int_eq(leader_step(b, 10000), LEADER_ROLE_LEADER);
    ck_assert_int_eq(leader_epoch(b), stale + 1);

    /* a resumes and acts on what it planned before it stopped. */
    struct fleet *f = NULL;
    char *err = NULL;
    ck_assert_msg(fleet_read(db, &f, &err) == 0, "fleet_read: %s", err);
    ck_assert_uint_eq(f->n_demands, 1);
    struct plan_action resolve = {.kind = PLAN_ACTION_RESOLVE,
                                  .cause = PLAN_CAUSE_DEMAND,
                                  .demand_id = f->demands[0].id,
                                  .model_id = f->demands[0].model_id,
                                  .resolution = PLAN_RESOLUTION_SATISFIED,
                                  .reason = "planned before the stall"};
    struct plan_action load = {.kind = PLAN_ACTION_LOAD,
                               .cause = PLAN_CAUSE_DEMAND,
                               .model_id = f->models[0].id,
                               .node_id = f->nodes[0].id,
                               .n_devices = 1,
                               .device_ids = {f->nodes[0].devices[0].id},
                               .memory_bytes = 1000,
                               .reason = "planned before the stall"};
    struct plan_action mark = {.kind = PLAN_ACTION_MARK_DEAD,
                               .cause = PLAN_CAUSE_NODE_DEAD,
                               .node_id = f->nodes[0].id,
                               .reason = "planned before the stall"};
    int64_t pid = 99;
    ck_assert_int_eq(fleet_apply(db, stale, f, &resolve, NULL, &err), FLEET_STALE);
    ck_assert_ptr_nonnull(strstr(err, "stale scheduler epoch"));
    ck_assert_int_eq(fleet_apply(db, stale, f, &load, &pid, NULL), FLEET_STALE);
    ck_assert_int_eq(pid, 0);
    ck_assert_int_eq(fleet_apply(db, stale, f, &mark, NULL, NULL), FLEET_STALE);
    ck_assert_int_eq(
            fleet_record_event(db, stale, "scheduler.wait", "stale", NULL, NULL, NULL, 0, 0, NULL),
            FLEET_STALE);
    sched_test_expect(db, "SELECT state FROM cortex.demand", "open");
    sched_test_expect(db, "SELECT count(*) FROM cortex.placements", "0");
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind LIKE 'scheduler.%'", "0");
    /* The connection is usable after the refused transactions. */
    sched_test_expect(db, "SELECT 1", "1");

    /* a stands by (the scheduler calls leader_lost on FLEET_STALE) and cannot take the lease
     * back; b's writes go through. */
    ck_assert(leader_valid(a)); /* by its own clock a still leads: only the epoch fences it */
    leader_lost(a);
    ck_assert(!leader_valid(a));
    ck_assert_int_eq(leader_step(a, 10000), LEADER_ROLE_STANDBY);
    ck_assert_int_eq(fleet_apply(db, leader_epoch(b), f, &resolve, NULL, NULL), FLEET_OK);
    sched_test_expect(db, "SELECT state FROM cortex.demand", "satisfied");
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)leader_epoch(b));
    sched_test_expect(db, "SELECT epoch FROM cortex.events WHERE kind = 'scheduler.resolve'", want);
    sched_test_expect(db, "SELECT actor FROM cortex.events WHERE kind = 'scheduler.resolve'",
                      "sched-b");
    free(err);
    fleet_destroy(f);
    leader_destroy(a);
    leader_destroy(b);
    db_destroy(db);
}
END_TEST

START_TEST(test_renewal_refused_after_takeover)
{
    const int64_t lease = 3000;
    leader_t *a = new_leader("sched-a");
    uint64_t start = timing_now_ms();
    ck_assert_int_eq(leader_step(a, lease), LEADER_ROLE_LEADER);
    /* Someone else took over (as after a stall); a learns it when its renewal falls due. */
    db_t *db = sched_test_connect(tdb.conninfo);
    sched_test_sql(db, "UPDATE cortex.scheduler_lease SET holder = 'sched-b', epoch = epoch + 1");
    ck_assert_int_eq(leader_step(a, lease), LEADER_ROLE_LEADER); /* renewal not due yet */
    uint64_t due = start + (uint64_t)lease / 3 + 50;
    while (timing_now_ms() < due)
        timing_sleep_ms(due - timing_now_ms());
    ck_assert_int_eq(leader_step(a, lease), LEADER_ROLE_STANDBY);
    ck_assert_int_eq(leader_epoch(a), 0);
    ck_assert(!leader_valid(a));
    sched_test_expect(db, "SELECT holder FROM cortex.scheduler_lease", "sched-b");
    db_destroy(db);
    leader_destroy(a);
}
END_TEST

START_TEST(test_killed_leader_hands_over_within_a_lease)
{
    const int64_t lease = 2000;
    leader_t *a = new_leader("sched-a"), *b = new_leader("sched-b");
    ck_assert_int_eq(leader_step(a, lease), LEADER_ROLE_LEADER);
    uint64_t acquired = timing_now_ms();
    ck_assert_int_eq(leader_step(b, lease), LEADER_ROLE_STANDBY);
    ck_assert(leader_has_lock(a));
    ck_assert(!leader_has_lock(b));

    /* The leader process dies: its session ends, and its advisory lock with it. pg_locks spans
     * the whole server, where other test programs' schedulers hold the same key in their own
     * databases: only this database's holder is meant. */
    db_t *db = sched_test_connect(tdb.conninfo);
    sched_test_expect(db,
                      "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = "
                      "'advisory' AND classid = 1668248180 AND objid = 2 AND granted AND "
                      "database = (SELECT oid FROM pg_database WHERE datname = "
                      "current_database())",
                      "1");
    uint64_t deadline = acquired + 3 * (uint64_t)lease;
    while (leader_step(b, lease) != LEADER_ROLE_LEADER && timing_now_ms() < deadline)
        timing_sleep_ms(20); /* pacing the polling loop, bounded by the deadline */
    uint64_t took = timing_now_ms() - acquired;
    ck_assert_int_eq(leader_role(b), LEADER_ROLE_LEADER);
    ck_assert(leader_has_lock(b));
    ck_assert_msg(took <= (uint64_t)lease + 500, "takeover after %llu ms (lease %lld ms)",
                  (unsigned long long)took, (long long)lease);
    ck_assert_int_eq(leader_epoch(b), 2);

    /* The old leader comes back (its connection is re-made) and finds itself superseded. */
    ck_assert_int_eq(leader_step(a, lease), LEADER_ROLE_STANDBY);
    ck_assert(!leader_has_lock(a));
    db_destroy(db);
    leader_destroy(a);
    leader_destroy(b);
}
END_TEST

START_TEST(test_resign_hands_over_at_once)
{
    leader_t *a = new_leader("sched-a"), *b = new_leader("sched-b");
    ck_assert_int_eq(leader_step(a, 60000), LEADER_ROLE_LEADER);
    ck_assert_int_eq(leader_step(b, 60000), LEADER_ROLE_STANDBY);
    leader_resign(a);
    ck_assert_int_eq(leader_role(a), LEADER_ROLE_STANDBY);
    ck_assert_int_eq(leader_step(b, 60000), LEADER_ROLE_LEADER);
    ck_assert_int_eq(leader_epoch(b), 2);
    db_t *db = sched_test_connect(tdb.conninfo);
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind = 'lease.released'", "1");
    db_destroy(db);
    leader_destroy(b); /* resigns too */
    db = sched_test_connect(tdb.conninfo);
    sched_test_expect(db, "SELECT count(*) FROM cortex.events WHERE kind = 'lease.released'", "2");
    sched_test_expect(db, "SELECT expires_at <= clock_timestamp() FROM cortex.scheduler_lease",
                      "t");
    db_destroy(db);
    leader_destroy(a);
}
END_TEST

START_TEST(test_not_trusted_after_the_lease_ran_out)
{
    leader_t *a = new_leader("sched-a");
    ck_assert_int_eq(leader_step(a, 300), LEADER_ROLE_LEADER);
    ck_assert(leader_valid(a));
    uint64_t until = leader_valid_until_ms(a);
    ck_assert_uint_gt(until, timing_now_ms());
    ck_assert_uint_le(until, timing_now_ms() + 300);
    /* Stop stepping (as if stopped) past the local deadline. */
    while (timing_now_ms() <= until)
        timing_sleep_ms(until - timing_now_ms() + 1);
    ck_assert(!leader_valid(a));
    /* Nobody else took it: stepping again leads again (the database may still count the old
     * lease as running for a moment, then the same epoch continues). */
    ck_assert_int_eq(leader_step(a, 10000), LEADER_ROLE_LEADER);
    ck_assert(leader_valid(a));
    ck_assert_int_ge(leader_epoch(a), 1);
    ck_assert_int_le(leader_epoch(a), 2);
    leader_destroy(a);
    leader_destroy(NULL);
}
END_TEST

int main(void)
{
    if (getenv("CORTEX_TEST_PG") == NULL || getenv("CORTEX_TEST_PG")[0] == '\0') {
        printf("CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    log_set_level(LOG_LEVEL_WARN);
    Suite *s = suite_create("leader");
    TCase *tc = tcase_create("leader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_two_leaders_race);
    tcase_add_test(tc, test_stalled_leader_cannot_write);
    tcase_add_test(tc, test_renewal_refused_after_takeover);
    tcase_add_test(tc, test_killed_leader_hands_over_within_a_lease);
    tcase_add_test(tc, test_resign_hands_over_at_once);
    tcase_add_test(tc, test_not_trusted_after_the_lease_ran_out);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
