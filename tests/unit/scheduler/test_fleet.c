/*
 * tests/unit/scheduler/test_fleet.c — the fleet snapshot and the fenced writes against a real,
 * migrated PostgreSQL.
 *
 * Covers: fleet_read turns settings, nodes (liveness by the database clock), devices, models
 * (memory need from the nodes' scans, files, recent failures), live placements (devices in rank
 * order, requests in flight from heartbeats) and open demand into the plan's snapshot; each
 * action kind writes what it should, with a scheduler.<action> event carrying epoch, holder,
 * reason and cause; refused writes leave the connection usable; and a plan computed from a
 * real snapshot and applied moves the database the way the policies say. Exits 77 (skipped)
 * when CORTEX_TEST_PG is unset.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "log.h"
#include "plan.h"
#include "xalloc.h"

#include "scheduler/sched_test_db.h"

#define GIB ((int64_t)1 << 30)

static struct sched_test_db tdb;
static db_t *db;
static int64_t epoch;

static void setup(void)
{
    ck_assert(sched_test_db_create(&tdb));
    db = sched_test_connect(tdb.conninfo);
    char *e = sched_test_value(db, "SELECT cortex.lease_acquire('fleet-test', '1 hour')");
    epoch = strtoll(e, NULL, 10);
    free(e);
}

static void teardown(void)
{
    db_destroy(db);
    db = NULL;
    sched_test_db_drop(&tdb);
}

static struct fleet *read_fleet(void)
{
    struct fleet *f = NULL;
    char *err = NULL;
    ck_assert_msg(fleet_read(db, &f, &err) == 0, "fleet_read: %s", err ? err : "?");
    return f;
}

static int64_t value_i64(const char *sql)
{
    char *v = sched_test_value(db, sql);
    ck_assert_ptr_nonnull(v);
    int64_t x = strtoll(v, NULL, 10);
    free(v);
    return x;
}

/* n1: CPU host (16 GiB) holding m-a; n2: two 24 GiB GPUs, busy, holding m-a and m-b; n3: dead.
 * m-c is added by hand (no files). m-a is ready on n1; m-b requested on n2 and failed lately on
 * n1; m-c is demanded. */
static void seed(void)
{
    sched_test_sql(db, "SELECT cortex.set_setting('eviction_strategy', 'priority')");
    sched_test_sql(db, "SELECT cortex.set_setting('max_load_attempts', '5')");
    sched_test_sql(db, "SELECT cortex.set_setting('device_memory_reserve_mib', '512')");
    sched_test_sql(db, "SELECT cortex.set_setting('evict_in_flight', 'true')");
    sched_test_sql(db, "SELECT cortex.node_register('n1', 'http://127.0.0.1:9001', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":17179869184}]')");
    sched_test_sql(db, "SELECT cortex.node_register('n2', 'http://127.0.0.1:9002', "
                       "'[{\"ordinal\":1,\"memory_total_bytes\":25769803776},"
                       "  {\"ordinal\":0,\"memory_total_bytes\":25769803776}]')");
    sched_test_sql(db, "SELECT cortex.node_register('n3', 'http://127.0.0.1:9003', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":17179869184}]')");
    sched_test_sql(db, "SELECT cortex.node_heartbeat(id, '[{\"ordinal\":0,"
                       "\"memory_used_bytes\":1000,\"memory_free_bytes\":2000}]', 2, 1) "
                       "FROM cortex.nodes WHERE name = 'n2'");
    sched_test_sql(db, "SELECT cortex.node_models_sync(id, '[{\"name\":\"m-a\",\"format\":\"gguf\","
                       "\"size_bytes\":4294967296,\"memory_bytes\":6442450944}]') "
                       "FROM cortex.nodes WHERE name IN ('n1', 'n3')");
    sched_test_sql(db, "SELECT cortex.node_models_sync(id, '[{\"name\":\"m-a\",\"format\":\"gguf\","
                       "\"size_bytes\":4294967296,\"memory_bytes\":5368709120},"
                       "{\"name\":\"m-b\",\"format\":\"gguf\",\"size_bytes\":1000}]') "
                       "FROM cortex.nodes WHERE name = 'n2'");
    sched_test_sql(db, "SELECT cortex.set_tensor_parallel('m-b', 2)");
    sched_test_sql(db, "SELECT cortex.add_model('m-c', tensor_parallel => 2, priority => 3, "
                       "memory_bytes => 123456)");
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT cortex.placement_create(%lld, m.id, n.id, ARRAY(SELECT g.id FROM cortex.gpus "
             "g WHERE g.node_id = n.id), 6442450944) FROM cortex.models m, cortex.nodes n "
             "WHERE m.name = 'm-a' AND n.name IN ('n1', 'n3')",
             (long long)epoch);
    sched_test_sql(db, sql);
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'loading') FROM cortex.placements");
    sched_test_sql(db, "SELECT cortex.placement_transition(id, 'ready') FROM cortex.placements");
    sched_test_sql(db, "SELECT cortex.placements_touch(array_agg(id)) FROM cortex.placements");
    /* m-b: a recent failure on n1, and now requested on n2 (devices in rank order 1, 0). */
    snprintf(sql, sizeof sql,
             "SELECT cortex.placement_transition(cortex.placement_create(%lld, m.id, n.id, "
             "ARRAY(SELECT g.id FROM cortex.gpus g WHERE g.node_id = n.id)), 'failed', 'boom') "
             "FROM cortex.models m, cortex.nodes n WHERE m.name = 'm-b' AND n.name = 'n1'",
             (long long)epoch);
    sched_test_sql(db, sql);
    snprintf(sql, sizeof sql,
             "SELECT cortex.placement_create(%lld, m.id, n.id, ARRAY(SELECT g.id FROM cortex.gpus "
             "g WHERE g.node_id = n.id ORDER BY g.ordinal DESC), 1000) FROM cortex.models m, "
             "cortex.nodes n WHERE m.name = 'm-b' AND n.name = 'n2'",
             (long long)epoch);
    sched_test_sql(db, sql);
    sched_test_sql(db, "SELECT cortex.demand_load('m-c', 'gw1')");
    sched_test_sql(db, "UPDATE cortex.nodes SET last_heartbeat_at = now() - interval '1 hour' "
                       "WHERE name = 'n3'");
}

static const struct plan_model *model_named(const struct fleet *f, const char *name)
{
    for (size_t i = 0; i < f->n_models; i++) {
        if (strcmp(f->models[i].name, name) == 0)
            return &f->models[i];
    }
    ck_abort_msg("no model %s in the snapshot", name);
    return NULL;
}

static const struct plan_node *node_named(const struct fleet *f, const char *name)
{
    for (size_t i = 0; i < f->n_nodes; i++) {
        if (strcmp(f->nodes[i].name, name) == 0)
            return &f->nodes[i];
    }
    ck_abort_msg("no node %s in the snapshot", name);
    return NULL;
}

static const struct plan_placement *placement_of(const struct fleet *f, const char *model,
                                                 const char *node)
{
    int64_t m = model_named(f, model)->id, n = node_named(f, node)->id;
    for (size_t i = 0; i < f->n_placements; i++) {
        if (f->placements[i].model_id == m && f->placements[i].node_id == n)
            return &f->placements[i];
    }
    ck_abort_msg("no placement of %s on %s", model, node);
    return NULL;
}

START_TEST(test_read_snapshot)
{
    seed();
    struct fleet *f = read_fleet();
    const struct fleet_settings *s = &f->settings;
    ck_assert_int_eq(s->plan.eviction, PLAN_EVICTION_PRIORITY);
    ck_assert_int_eq(s->plan.max_load_attempts, 5);
    ck_assert_int_eq(s->plan.defrag_after_cycles, 30);
    ck_assert_int_eq(s->plan.device_reserve_bytes, 512 * ((int64_t)1 << 20));
    ck_assert_int_eq(s->plan.load_timeout_ms, 15 * 60 * 1000);
    ck_assert_int_eq(s->plan.demand_ttl_ms, 10 * 60 * 1000);
    ck_assert(s->plan.evict_in_flight);
    ck_assert(s->plan.require_files);
    ck_assert_int_eq(s->tick_ms, 2000);
    ck_assert_int_eq(s->lease_ms, 10000);
    ck_assert_int_eq(s->heartbeat_interval_ms, 5000);
    ck_assert_int_eq(s->heartbeat_grace_ms, 15000);

    ck_assert_uint_eq(f->n_nodes, 3);
    const struct plan_node *n1 = node_named(f, "n1"), *n2 = node_named(f, "n2");
    const struct plan_node *n3 = node_named(f, "n3");
    const struct fleet_node_info *info = NULL;
    ck_assert_ptr_eq(fleet_find_node(f, n2->id, &info), n2);
    ck_assert_str_eq(info->endpoint, "http://127.0.0.1:9002");
    ck_assert_str_eq(info->liveness, "alive");
    ck_assert_int_eq(info->queue_depth, 2);
    ck_assert_int_eq(info->active_sequences, 1);
    ck_assert_int_eq(n1->state, PLAN_NODE_ALIVE);
    ck_assert_int_eq(n3->state, PLAN_NODE_DEAD);
    ck_assert_uint_eq(n1->n_devices, 1);
    ck_assert(n1->devices[0].cpu);
    ck_assert_int_eq(n1->devices[0].total_bytes, 16 * GIB);
    ck_assert_uint_eq(n2->n_devices, 2);
    ck_assert(!n2->devices[0].cpu);
    ck_assert_int_eq(n2->devices[0].ordinal, 0);
    ck_assert_int_eq(n2->devices[1].ordinal, 1);
    ck_assert_int_eq(n2->devices[1].total_bytes, 24 * GIB);
    size_t n2_index = (size_t)(n2 - f->nodes);
    ck_assert_int_eq(f->device_info[n2_index][0].used_bytes, 1000);
    ck_assert_int_eq(f->device_info[n2_index][0].free_bytes, 2000);
    ck_assert_int_eq(f->device_info[n2_index][1].used_bytes, -1);

    ck_assert_uint_eq(f->n_models, 3);
    const struct plan_model *ma = model_named(f, "m-a"), *mb = model_named(f, "m-b");
    const struct plan_model *mc = model_named(f, "m-c");
    ck_assert_int_eq(ma->memory_bytes, 6 * GIB); /* the largest node estimate */
    ck_assert_uint_eq(ma->n_file_nodes, 3);
    ck_assert_int_eq(mb->memory_bytes, 1000); /* no estimate: the file size */
    ck_assert_uint_eq(mb->n_failed_nodes, 1);
    ck_assert_int_eq(mb->failed_node_ids[0], n1->id);
    ck_assert_int_eq(mb->load_failures, 1);
    ck_assert_str_eq(mb->last_load_error, "boom");
    ck_assert_int_eq(mc->memory_bytes, 123456);
    ck_assert_int_eq(mc->tensor_parallel, 2);
    ck_assert_int_eq(mc->priority, 3);
    ck_assert_uint_eq(mc->n_file_nodes, 0);
    ck_assert_int_eq(mc->idle_ttl_ms, 30 * 60 * 1000);
    ck_assert_ptr_eq(fleet_find_model(f, mc->id), mc);

    ck_assert_uint_eq(f->n_placements, 3);
    const struct plan_placement *pa = placement_of(f, "m-a", "n1");
    ck_assert_int_eq(pa->state, PLAN_PLACEMENT_READY);
    ck_assert_int_eq(pa->memory_bytes, 6 * GIB);
    ck_assert_uint_eq(pa->n_devices, 1);
    ck_assert_int_eq(pa->device_ids[0], n1->devices[0].id);
    ck_assert_int_eq(pa->in_flight, 0); /* n1 reported nothing running */
    ck_assert_int_ge(pa->idle_ms, 0);
    ck_assert_int_lt(pa->idle_ms, 60000);
    ck_assert_int_eq(pa->replaces_id, 0);
    const struct plan_placement *pb = placement_of(f, "m-b", "n2");
    ck_assert_int_eq(pb->state, PLAN_PLACEMENT_REQUESTED);
    ck_assert_int_eq(pb->in_flight, -1); /* n2 is busy: unknown which model */
    ck_assert_uint_eq(pb->n_devices, 2);
    ck_assert_int_eq(pb->device_ids[0], n2->devices[1].id); /* rank order */
    ck_assert_int_eq(pb->device_ids[1], n2->devices[0].id);
    ck_assert_ptr_eq(fleet_find_placement(f, pb->id), pb);

    ck_assert_uint_eq(f->n_demands, 1);
    ck_assert_int_eq(f->demands[0].model_id, mc->id);
    ck_assert_int_eq(f->demands[0].kind, PLAN_DEMAND_LOAD);
    ck_assert_int_eq(f->demands[0].node_id, 0);
    ck_assert(!f->demands[0].after_failure);
    ck_assert_int_lt(f->demands[0].wanted_ago_ms, 60000);

    ck_assert_ptr_eq(f->snapshot.nodes, f->nodes);
    ck_assert_uint_eq(f->snapshot.n_placements, 3);
    fleet_destroy(f);
    fleet_destroy(NULL);
}
END_TEST

static void expect_event(const char *kind, const char *want_reason, const char *want_cause)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT epoch || '|' || actor || '|' || reason || '|' || (detail->>'cause') "
             "FROM cortex.events WHERE kind = '%s' ORDER BY id DESC LIMIT 1",
             kind);
    char *full = xasprintf("%lld|fleet-test|%s|%s", (long long)epoch, want_reason, want_cause);
    sched_test_expect(db, sql, full);
    free(full);
}

START_TEST(test_apply_each_action)
{
    seed();
    struct fleet *f = read_fleet();
    const struct plan_node *n1 = node_named(f, "n1"), *n2 = node_named(f, "n2");
    const struct plan_model *ma = model_named(f, "m-a"), *mc = model_named(f, "m-c");
    int64_t demand = f->demands[0].id;
    char *err = NULL;

    /* LOAD m-c over both GPUs of n2, devices in rank order 0, 1. */
    struct plan_action load = {.kind = PLAN_ACTION_LOAD,
                               .cause = PLAN_CAUSE_DEMAND,
                               .model_id = mc->id,
                               .node_id = n2->id,
                               .demand_id = demand,
                               .n_devices = 2,
                               .device_ids = {n2->devices[0].id, n2->devices[1].id},
                               .device_ordinals = {0, 1},
                               .memory_bytes = 123456,
                               .reason = "load for the test"};
    int64_t pid = 0;
    ck_assert_int_eq(fleet_apply(db, epoch, f, &load, &pid, &err), FLEET_OK);
    ck_assert_int_gt(pid, 0);
    char sql[512], want[128];
    snprintf(sql, sizeof sql,
             "SELECT state || '|' || memory_bytes || '|' || epoch FROM cortex.placements "
             "WHERE id = %lld",
             (long long)pid);
    snprintf(want, sizeof want, "requested|123456|%lld", (long long)epoch);
    sched_test_expect(db, sql, want);
    snprintf(sql, sizeof sql,
             "SELECT string_agg(g.ordinal::text, ',' ORDER BY pg.rank) FROM cortex.placement_gpus "
             "pg JOIN cortex.gpus g ON g.id = pg.gpu_id WHERE pg.placement_id = %lld",
             (long long)pid);
    sched_test_expect(db, sql, "0,1");
    expect_event("scheduler.load", "load for the test", "demand");
    snprintf(sql, sizeof sql,
             "SELECT model || '|' || node || '|' || placement_id || '|' || demand_id || '|' || "
             "(detail->'devices')::text || '|' || (detail->>'memory_bytes') FROM cortex.events "
             "WHERE kind = 'scheduler.load'");
    snprintf(want, sizeof want, "m-c|n2|%lld|%lld|[0, 1]|123456", (long long)pid,
             (long long)demand);
    sched_test_expect(db, sql, want);

    /* UNLOAD the ready m-a on n1. */
    const struct plan_placement *pa = placement_of(f, "m-a", "n1");
    struct plan_action unload = {.kind = PLAN_ACTION_UNLOAD,
                                 .cause = PLAN_CAUSE_IDLE,
                                 .placement_id = pa->id,
                                 .model_id = ma->id,
                                 .node_id = n1->id,
                                 .reason = "idle for the test"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &unload, &pid, &err), FLEET_OK);
    ck_assert_int_eq(pid, 0);
    snprintf(sql, sizeof sql,
             "SELECT state || '|' || reason FROM cortex.placements WHERE id = %lld",
             (long long)pa->id);
    sched_test_expect(db, sql, "unloading|idle for the test");
    expect_event("scheduler.unload", "idle for the test", "idle");

    /* Unloading it again is refused (the state moved on); the connection stays usable. */
    ck_assert_int_eq(fleet_apply(db, epoch, f, &unload, NULL, &err), FLEET_OK); /* same state */
    unload.kind = PLAN_ACTION_FAIL;
    unload.cause = PLAN_CAUSE_TIMEOUT;
    unload.reason = "unload timed out";
    ck_assert_int_eq(fleet_apply(db, epoch, f, &unload, NULL, &err), FLEET_OK);
    sched_test_expect(db, sql, "failed|unload timed out");
    unload.kind = PLAN_ACTION_UNLOAD;
    ck_assert_int_eq(fleet_apply(db, epoch, f, &unload, NULL, &err), FLEET_REJECTED);
    ck_assert_ptr_nonnull(strstr(err, "illegal placement transition failed -> unloading"));
    sched_test_expect(db, "SELECT 1", "1");

    /* FAIL the requested m-b: counts as a load failure. */
    const struct plan_placement *pb = placement_of(f, "m-b", "n2");
    struct plan_action fail = {.kind = PLAN_ACTION_FAIL,
                               .cause = PLAN_CAUSE_TIMEOUT,
                               .placement_id = pb->id,
                               .reason = "load timed out"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &fail, NULL, &err), FLEET_OK);
    sched_test_expect(db, "SELECT load_failures FROM cortex.models WHERE name = 'm-b'", "2");

    /* RESOLVE the demand with the new placement; RETRY; WAIT. */
    struct plan_action resolve = {.kind = PLAN_ACTION_RESOLVE,
                                  .cause = PLAN_CAUSE_DEMAND,
                                  .demand_id = demand,
                                  .model_id = mc->id,
                                  .placement_id = value_i64("SELECT max(id) FROM cortex.placements "
                                                            "WHERE state = 'requested'"),
                                  .resolution = PLAN_RESOLUTION_SATISFIED,
                                  .reason = "ready for the test"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &resolve, NULL, &err), FLEET_OK);
    sched_test_expect(db, "SELECT state || '|' || reason FROM cortex.demand",
                      "satisfied|ready for the test");
    expect_event("scheduler.resolve", "ready for the test", "demand");
    struct plan_action retry = {.kind = PLAN_ACTION_RETRY,
                                .cause = PLAN_CAUSE_DEMAND,
                                .model_id = model_named(f, "m-b")->id,
                                .reason = "asked again"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &retry, NULL, &err), FLEET_OK);
    sched_test_expect(db, "SELECT load_failures FROM cortex.models WHERE name = 'm-b'", "0");
    struct plan_action wait = {.kind = PLAN_ACTION_WAIT,
                               .cause = PLAN_CAUSE_EVICT,
                               .model_id = mc->id,
                               .reason = "waiting for the test"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &wait, NULL, &err), FLEET_OK);
    expect_event("scheduler.wait", "waiting for the test", "evict");

    /* MARK_DEAD: n3 goes down, its m-a placement (used just now) gets failover demand. */
    struct plan_action mark = {.kind = PLAN_ACTION_MARK_DEAD,
                               .cause = PLAN_CAUSE_NODE_DEAD,
                               .node_id = node_named(f, "n3")->id,
                               .reason = "n3 went silent"};
    ck_assert_int_eq(fleet_apply(db, epoch, f, &mark, NULL, &err), FLEET_OK);
    sched_test_expect(db, "SELECT marked_down_at IS NOT NULL FROM cortex.nodes WHERE name = 'n3'",
                      "t");
    sched_test_expect(db,
                      "SELECT p.state FROM cortex.placements p JOIN cortex.nodes n "
                      "ON n.id = p.node_id WHERE n.name = 'n3'",
                      "failed");
    sched_test_expect(db,
                      "SELECT m.name FROM cortex.demand d JOIN cortex.models m ON m.id = "
                      "d.model_id WHERE d.state = 'open' AND d.source = 'scheduler:failover'",
                      "m-a");
    sched_test_expect(db,
                      "SELECT (detail->>'failover_demand') || '|' || node FROM cortex.events "
                      "WHERE kind = 'scheduler.mark_dead'",
                      "1|n3");

    /* The executor's outcomes and plain events. */
    int64_t requested = value_i64("SELECT max(id) FROM cortex.placements WHERE state = "
                                  "'requested'");
    ck_assert_int_eq(fleet_end_placement(db, epoch, requested, "failed", "neuron refused: 409",
                                         "scheduler.load_failed", "m-c", "n2", &err),
                     FLEET_OK);
    snprintf(sql, sizeof sql,
             "SELECT state || '|' || reason FROM cortex.placements WHERE id = %lld",
             (long long)requested);
    sched_test_expect(db, sql, "failed|neuron refused: 409");
    sched_test_expect(db, "SELECT load_failures FROM cortex.models WHERE name = 'm-c'", "1");
    sched_test_expect(db,
                      "SELECT placement_id || '|' || model FROM cortex.events WHERE kind = "
                      "'scheduler.load_failed'",
                      (snprintf(want, sizeof want, "%lld|m-c", (long long)requested), want));
    ck_assert_int_eq(fleet_record_event(db, epoch, "scheduler.note", "a note", "{\"x\": 1}", "m-a",
                                        "n1", 0, 0, &err),
                     FLEET_OK);
    sched_test_expect(db,
                      "SELECT (detail->>'x') || '|' || epoch FROM cortex.events WHERE kind = "
                      "'scheduler.note'",
                      (snprintf(want, sizeof want, "1|%lld", (long long)epoch), want));
    free(err);
    fleet_destroy(f);
}
END_TEST

/* Demand -> plan -> LOAD applied -> the neuron reports ready -> plan -> RESOLVE satisfied. */
START_TEST(test_plan_round_trip)
{
    sched_test_sql(db, "SELECT cortex.node_register('rt1', 'http://127.0.0.1:9101', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":17179869184}]')");
    sched_test_sql(db, "SELECT cortex.node_register('rt2', 'http://127.0.0.1:9102', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":8589934592}]')");
    sched_test_sql(db, "SELECT cortex.node_models_sync(id, '[{\"name\":\"rt-model\","
                       "\"format\":\"gguf\",\"size_bytes\":1000,\"memory_bytes\":6442450944}]') "
                       "FROM cortex.nodes");
    sched_test_sql(db, "SELECT cortex.demand_load('rt-model', 'gw1')");

    struct fleet *f = read_fleet();
    struct plan p = {0};
    plan_compute(&f->snapshot, &f->settings.plan, 1, &p);
    ck_assert_uint_eq(p.n_actions, 1);
    ck_assert_int_eq(p.actions[0].kind, PLAN_ACTION_LOAD);
    int64_t pid = 0;
    ck_assert_int_eq(fleet_apply(db, epoch, f, &p.actions[0], &pid, NULL), FLEET_OK);
    plan_free(&p);
    fleet_destroy(f);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT n.name || '|' || p.state FROM cortex.placements p JOIN cortex.nodes n "
             "ON n.id = p.node_id WHERE p.id = %lld",
             (long long)pid);
    sched_test_expect(db, sql, "rt2|requested"); /* best fit: 2 GiB left instead of 10 */

    /* Still loading: nothing to do, no duplicate load. */
    f = read_fleet();
    plan_compute(&f->snapshot, &f->settings.plan, 2, &p);
    ck_assert_uint_eq(p.n_actions, 0);
    plan_free(&p);
    fleet_destroy(f);

    /* The neuron reports progress into the database. */
    snprintf(sql, sizeof sql, "SELECT cortex.placement_transition(%lld, 'loading')",
             (long long)pid);
    sched_test_sql(db, sql);
    snprintf(sql, sizeof sql, "SELECT cortex.placement_transition(%lld, 'ready')", (long long)pid);
    sched_test_sql(db, sql);
    f = read_fleet();
    plan_compute(&f->snapshot, &f->settings.plan, 3, &p);
    ck_assert_uint_eq(p.n_actions, 1);
    ck_assert_int_eq(p.actions[0].kind, PLAN_ACTION_RESOLVE);
    ck_assert_int_eq(p.actions[0].placement_id, pid);
    ck_assert_int_eq(fleet_apply(db, epoch, f, &p.actions[0], NULL, NULL), FLEET_OK);
    plan_free(&p);
    fleet_destroy(f);
    snprintf(sql, sizeof sql, "SELECT state || '|' || placement_id FROM cortex.demand");
    char want[64];
    snprintf(want, sizeof want, "satisfied|%lld", (long long)pid);
    sched_test_expect(db, sql, want);
}
END_TEST

START_TEST(test_read_fails_cleanly)
{
    sched_test_sql(db, "ALTER TABLE cortex.demand RENAME TO demand_gone");
    struct fleet *f = (struct fleet *)1;
    char *err = NULL;
    ck_assert_int_eq(fleet_read(db, &f, &err), -1);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "cortex.demand"));
    free(err);
    sched_test_expect(db, "SELECT 1", "1"); /* rolled back: the connection is usable */
    sched_test_sql(db, "ALTER TABLE cortex.demand_gone RENAME TO demand");
}
END_TEST

int main(void)
{
    if (getenv("CORTEX_TEST_PG") == NULL || getenv("CORTEX_TEST_PG")[0] == '\0') {
        printf("CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    log_set_level(LOG_LEVEL_ERROR);
    Suite *s = suite_create("fleet");
    TCase *tc = tcase_create("fleet");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_read_snapshot);
    tcase_add_test(tc, test_apply_each_action);
    tcase_add_test(tc, test_plan_round_trip);
    tcase_add_test(tc, test_read_fails_cleanly);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
