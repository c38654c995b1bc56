/*
 * tests/unit/neuron/test_report.c — the neuron's PostgreSQL reporter (neuron/report.c) against a
 * real, migrated database, with a real registry loading SmolLM2 (CORTEX_SMOLLM2_GGUF) and the
 * tiny llama fixture (whose load fails: it has no tokenizer).
 *
 * Needs CORTEX_TEST_PG (a server where this role may create databases) and
 * CORTEX_SMOLLM2_GGUF; exits 77 without either. A scratch database is created and migrated with
 * ops/migrate once, and dropped at the end; each test registers its own node.
 *
 * Checks: registration (endpoint, the CPU device with the budget), node_models from the scan,
 * heartbeats on the database clock with memory per device and the period taken from the
 * settings table (or from the flag, which wins); placement transitions requested -> loading ->
 * ready -> unloading -> gone with complete progress, and -> failed with the load's error; loads
 * refused at once (unknown model, over budget) fail their placements with the reason; after its
 * backend is terminated the reporter reconnects, re-reads heartbeat_interval and reports what
 * changed meanwhile without registering again; a node marked down unloads and registers anew.
 * Waits poll the database (or the reporter's period) with a deadline.
 */
#include "report.h"

#include "xalloc.h"

#include <check.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUDGET   ((uint64_t)8 << 30)
#define WAIT_SEC 60

static const char *test_pg, *gguf;
static char db_name[64];
static char *conninfo; /* the scratch database */
static PGconn *adm;    /* per test (each test runs in its own process) */
static char *models_dir;

static const char *source_dir(void)
{
    const char *s = getenv("CORTEX_SOURCE_DIR");
    return s ? s : ".";
}

/* A conninfo value in single quotes, with ' and \ escaped. The caller frees. */
static char *conn_quote(const char *v)
{
    size_t n = strlen(v);
    char *out = xmalloc(2 * n + 3), *p = out;
    *p++ = '\'';
    for (; *v; v++) {
        if (*v == '\'' || *v == '\\')
            *p++ = '\\';
        *p++ = *v;
    }
    *p++ = '\'';
    *p = '\0';
    return out;
}

/* The first value of query's first row (NULL when no row or SQL NULL); the caller frees. */
static char *sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sql(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *q = NULL;
    ck_assert_int_ge(vasprintf(&q, fmt, ap), 0);
    va_end(ap);
    PGresult *res = PQexec(adm, q);
    ExecStatusType st = PQresultStatus(res);
    ck_assert_msg(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", q,
                  PQresultErrorMessage(res));
    char *v = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    free(q);
    return v;
}

static long long sql_int(const char *query)
{
    char *v = sql("%s", query);
    ck_assert_msg(v != NULL, "%s gave no value", query);
    long long n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls query until its value equals want (want NULL: until it has a value); returns it. */
static char *wait_value(const char *query, const char *want)
{
    double deadline = now_s() + WAIT_SEC;
    for (;;) {
        char *v = sql("%s", query);
        if (v && (!want || strcmp(v, want) == 0))
            return v;
        ck_assert_msg(now_s() < deadline, "timed out waiting for %s = %s (last %s)", query,
                      want ? want : "(any value)", v ? v : "NULL");
        free(v);
        pause_ms(50);
    }
}

static void wait_equal(const char *query, const char *want)
{
    free(wait_value(query, want));
}

static void wait_period(struct report *rep, int64_t want)
{
    double deadline = now_s() + WAIT_SEC;
    while (report_heartbeat_period_ms(rep) != want) {
        ck_assert_msg(now_s() < deadline, "heartbeat period %lld ms, expected %lld",
                      (long long)report_heartbeat_period_ms(rep), (long long)want);
        pause_ms(20);
    }
}

/* ---- the scratch database (created once, in the parent process) ------------------------- */

static void db_setup(void)
{
    PGconn *c = PQconnectdb(test_pg);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    snprintf(db_name, sizeof db_name, "cortex_report_test_%d", (int)getpid());
    char *q = xasprintf("CREATE DATABASE %s", db_name);
    PGresult *res = PQexec(c, q);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
    PQclear(res);
    free(q);
    char *host = conn_quote(PQhost(c)), *user = conn_quote(PQuser(c));
    conninfo = xasprintf("host=%s port=%s user=%s dbname=%s connect_timeout=5", host, PQport(c),
                         user, db_name);
    free(host);
    free(user);
    PQfinish(c);

    char *migrate = xasprintf("%s/ops/migrate", source_dir());
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execl(migrate, migrate, conninfo, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (status %d)", migrate,
                  status);
    free(migrate);
}

static void db_teardown(void)
{
    PGconn *c = PQconnectdb(test_pg);
    if (PQstatus(c) == CONNECTION_OK) {
        char *q = xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        PQclear(PQexec(c, q));
        free(q);
    }
    PQfinish(c);
    free(conninfo);
}

/* ---- per test ---------------------------------------------------------------------------- */

static void setup(void)
{
    adm = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(adm) == CONNECTION_OK, "%s", PQerrorMessage(adm));
    PQclear(PQexec(adm, "SET client_min_messages = warning"));
    models_dir = xstrdup("/tmp/cortex-report-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(models_dir));
    char *link = xasprintf("%s/smollm2.gguf", models_dir);
    ck_assert_int_eq(symlink(gguf, link), 0);
    free(link);
    char *tiny = xasprintf("%s/tests/fixtures/llama", source_dir());
    link = xasprintf("%s/tiny-llama", models_dir);
    ck_assert_int_eq(symlink(tiny, link), 0);
    free(tiny);
    free(link);
}

static void teardown(void)
{
    char *a = xasprintf("%s/smollm2.gguf", models_dir), *b = xasprintf("%s/tiny-llama", models_dir);
    unlink(a);
    unlink(b);
    rmdir(models_dir);
    free(a);
    free(b);
    free(models_dir);
    PQfinish(adm);
}

static struct registry *make_registry(uint64_t budget)
{
    struct registry_options o = {
            .models_dir = models_dir,
            .threads = 1,
            .ctx = 256,
            .max_batch = 2,
            .queue_depth = 2,
            .memory_budget = budget,
    };
    return registry_create(&o);
}

static struct report *make_report(struct registry *r, const char *node, int64_t heartbeat_ms)
{
    struct report_options o = {
            .conninfo = conninfo,
            .node = node,
            .endpoint = "http://127.0.0.1:1",
            .heartbeat_ms = heartbeat_ms,
    };
    char err[512];
    struct report *rep = report_create(&o, r, err, sizeof err);
    ck_assert_msg(rep != NULL, "%s", err);
    registry_set_observer(r, report_observe, rep);
    return rep;
}

static void stop(struct registry *r, struct report *rep)
{
    registry_shutdown(r);
    report_destroy(rep);
    registry_set_observer(r, NULL, NULL);
    registry_destroy(r);
}

/* The estimate GET /models shows for a file on disk. */
static uint64_t estimate_of(struct registry *r, const char *name)
{
    json_t *doc = registry_describe(r);
    size_t i;
    json_t *f;
    uint64_t est = 0;
    json_array_foreach(json_object_get(doc, "available"), i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "name")), name) == 0)
            est = (uint64_t)json_integer_value(json_object_get(f, "estimated_memory_bytes"));
    }
    json_decref(doc);
    ck_assert_uint_gt(est, 0);
    return est;
}

static long long node_id(const char *node)
{
    char *q = xasprintf("SELECT id FROM cortex.nodes WHERE name = '%s'", node);
    char *v = wait_value(q, NULL);
    long long id = strtoll(v, NULL, 10);
    free(v);
    free(q);
    return id;
}

/* Waits until the node's heartbeat stamp moves past its current value; returns the new one. */
static char *next_heartbeat(long long node)
{
    char *before = sql("SELECT last_heartbeat_at FROM cortex.nodes WHERE id = %lld", node);
    ck_assert_ptr_nonnull(before);
    char *q = xasprintf("SELECT last_heartbeat_at > '%s' FROM cortex.nodes WHERE id = %lld", before,
                        node);
    wait_equal(q, "t");
    free(q);
    free(before);
    return sql("SELECT last_heartbeat_at FROM cortex.nodes WHERE id = %lld", node);
}

/* A requested placement of model on the node's one device. */
static long long make_placement(long long node, const char *model)
{
    long long epoch = sql_int("SELECT cortex.lease_acquire('report-test')");
    char *q = xasprintf("SELECT id FROM cortex.models WHERE name = '%s'", model);
    char *mid = wait_value(q, NULL);
    free(q);
    char *gpu = sql("SELECT id FROM cortex.gpus WHERE node_id = %lld", node);
    ck_assert_ptr_nonnull(gpu);
    char *pid = sql("SELECT cortex.placement_create(%lld, %s, %lld, ARRAY[%s]::bigint[])", epoch,
                    mid, node, gpu);
    long long id = strtoll(pid, NULL, 10);
    free(mid);
    free(gpu);
    free(pid);
    return id;
}

static void wait_state(long long placement, const char *state)
{
    char *q = xasprintf("SELECT state FROM cortex.placements WHERE id = %lld", placement);
    wait_equal(q, state);
    free(q);
}

static void load_ok(struct registry *r, const char *model, long long placement)
{
    struct error err = ERROR_INIT;
    ck_assert_msg(registry_load(r, model, NULL, placement, &err) == 0, "%s", error_message(&err));
}

/* ---- tests ------------------------------------------------------------------------------- */

START_TEST(test_register_sync_and_heartbeat)
{
    free(sql("SELECT cortex.set_setting('heartbeat_interval', '1 second')"));
    struct registry *r = make_registry(BUDGET);
    struct report *rep = make_report(r, "node-a", 0);
    long long node = node_id("node-a");
    char *v = sql("SELECT endpoint FROM cortex.nodes WHERE id = %lld", node);
    ck_assert_str_eq(v, "http://127.0.0.1:1");
    free(v);
    v = sql("SELECT string_agg(kind || ':' || ordinal || ':' || name || ':' || memory_total_bytes, "
            "' ') FROM cortex.gpus WHERE node_id = %lld",
            node);
    char want[128];
    snprintf(want, sizeof want, "cpu:0:cpu:%llu", (unsigned long long)BUDGET);
    ck_assert_str_eq(v, want);
    free(v);

    /* the scan, with the estimates the registry computed for each file */
    char *q = xasprintf("SELECT string_agg(name || ':' || format || ':' || architecture || ':' || "
                        "memory_bytes, ' ' ORDER BY name) FROM cortex.node_models WHERE node_id "
                        "= %lld",
                        node);
    char *scan = xasprintf("smollm2:gguf:llama:%llu tiny-llama:hf:llama:%llu",
                           (unsigned long long)estimate_of(r, "smollm2"),
                           (unsigned long long)estimate_of(r, "tiny-llama"));
    wait_equal(q, scan);
    free(q);
    free(scan);

    /* the period comes from the settings table; heartbeats follow it on the database clock */
    wait_period(rep, 1000);
    char *t1 = next_heartbeat(node);
    char *t2 = next_heartbeat(node);
    double gap = strtod(
            v = sql("SELECT extract(epoch FROM '%s'::timestamptz - '%s'::timestamptz)", t2, t1),
            NULL);
    free(v);
    ck_assert_msg(gap >= 0.9 && gap < 10, "heartbeats %.3f s apart with a 1 s period", gap);
    free(t1);
    free(t2);
    v = sql("SELECT memory_used_bytes || ':' || memory_free_bytes FROM cortex.gpus WHERE node_id = "
            "%lld",
            node);
    snprintf(want, sizeof want, "0:%llu", (unsigned long long)BUDGET);
    ck_assert_str_eq(v, want);
    free(v);
    v = sql("SELECT node_clock_at IS NOT NULL AND marked_down_at IS NULL FROM cortex.nodes WHERE "
            "id = %lld",
            node);
    ck_assert_str_eq(v, "t");
    free(v);

    /* the flag wins over the setting */
    struct registry *r2 = make_registry(BUDGET);
    struct report *rep2 = make_report(r2, "node-b", 300);
    free(next_heartbeat(node_id("node-b")));
    ck_assert_int_eq(report_heartbeat_period_ms(rep2), 300);
    stop(r2, rep2);

    /* a new value is read when the reporter re-syncs after losing its connection */
    free(sql("SELECT cortex.set_setting('heartbeat_interval', '2 seconds')"));
    long long incarnation = sql_int("SELECT incarnation FROM cortex.nodes WHERE name = 'node-a'");
    ck_assert_int_eq(report_heartbeat_period_ms(rep), 1000);
    free(sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
             "'cortex-neuron' AND datname = current_database()"));
    wait_period(rep, 2000);
    free(next_heartbeat(node));
    ck_assert_int_eq(sql_int("SELECT incarnation FROM cortex.nodes WHERE name = 'node-a'"),
                     incarnation);
    stop(r, rep);
    free(sql("SELECT cortex.reset_setting('heartbeat_interval')"));
}
END_TEST

START_TEST(test_placement_transitions_and_progress)
{
    struct registry *r = make_registry(BUDGET);
    struct report *rep = make_report(r, "node-c", 200);
    long long node = node_id("node-c");
    uint64_t est = estimate_of(r, "smollm2");
    struct stat st;
    ck_assert_int_eq(stat(gguf, &st), 0);

    long long pid = make_placement(node, "smollm2");
    load_ok(r, "smollm2", pid);
    wait_state(pid, "ready");
    char *v = sql("SELECT progress_bytes || ' ' || progress_total_bytes FROM cortex.placements "
                  "WHERE id = %lld",
                  pid);
    char want[128];
    snprintf(want, sizeof want, "%lld %lld", (long long)st.st_size, (long long)st.st_size);
    ck_assert_str_eq(v, want);
    free(v);
    /* the events table records every state the placement went through */
    char *path = xasprintf("SELECT string_agg(kind, ',' ORDER BY id) FROM cortex.events WHERE "
                           "placement_id = %lld",
                           pid);
    v = sql("%s", path);
    ck_assert_str_eq(v, "placement.requested,placement.loading,placement.ready");
    free(v);
    char *q = xasprintf("SELECT memory_used_bytes FROM cortex.gpus WHERE node_id = %lld", node);
    snprintf(want, sizeof want, "%llu", (unsigned long long)est);
    wait_equal(q, want);

    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_unload(r, "smollm2", &err), 0);
    wait_state(pid, "gone");
    v = sql("%s", path);
    ck_assert_str_eq(v, "placement.requested,placement.loading,placement.ready,"
                        "placement.unloading,placement.gone");
    free(v);
    free(path);
    wait_equal(q, "0");
    free(q);

    /* a load that fails after it started: failed, with the engine's error */
    long long bad = make_placement(node, "tiny-llama");
    load_ok(r, "tiny-llama", bad);
    wait_state(bad, "failed");
    v = sql("SELECT reason FROM cortex.placements WHERE id = %lld", bad);
    ck_assert_msg(strstr(v, "tokenizer.json") != NULL, "reason: %s", v);
    free(v);
    v = sql("SELECT last_load_error FROM cortex.models WHERE name = 'tiny-llama'");
    ck_assert_msg(v && strstr(v, "tokenizer.json") != NULL, "last_load_error: %s", v);
    free(v);
    stop(r, rep);
}
END_TEST

START_TEST(test_refused_loads_fail_their_placements)
{
    struct registry *probe = make_registry(BUDGET);
    uint64_t est = estimate_of(probe, "smollm2");
    registry_destroy(probe);
    struct registry *r = make_registry(est - 1);
    struct report *rep = make_report(r, "node-d", 200);
    long long node = node_id("node-d");

    long long unknown = make_placement(node, "smollm2");
    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_load(r, "no-such-model", NULL, unknown, &err), -1);
    ck_assert_int_eq(err.code, ERR_MODEL_NOT_FOUND);
    error_clear(&err);
    wait_state(unknown, "failed");
    char *v = sql("SELECT reason FROM cortex.placements WHERE id = %lld", unknown);
    ck_assert_str_eq(v, "load refused by the neuron: model 'no-such-model' is not in the models "
                        "directory");
    free(v);

    long long full = make_placement(node, "smollm2");
    ck_assert_int_eq(registry_load(r, "smollm2", NULL, full, &err), -1);
    ck_assert_int_eq(err.code, ERR_CONFLICT);
    error_clear(&err);
    wait_state(full, "failed");
    v = sql("SELECT reason FROM cortex.placements WHERE id = %lld", full);
    ck_assert_msg(strstr(v, "load refused by the neuron: ") == v &&
                          strstr(v, "memory budget of cpu") != NULL,
                  "reason: %s", v);
    free(v);
    stop(r, rep);
}
END_TEST

START_TEST(test_resync_after_backend_terminated)
{
    struct registry *r = make_registry(BUDGET);
    struct report *rep = make_report(r, "node-e", 500);
    long long node = node_id("node-e");
    free(next_heartbeat(node));
    long long incarnation = sql_int("SELECT incarnation FROM cortex.nodes WHERE name = 'node-e'");
    long long pid = make_placement(node, "smollm2");
    long long refused = make_placement(node, "smollm2");
    char *old_backend = sql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                            "'cortex-neuron' AND datname = current_database()");
    ck_assert_ptr_nonnull(old_backend);

    /* the connection dies; what happens next is reported after the reconnect */
    free(sql("SELECT pg_terminate_backend(%s)", old_backend));
    load_ok(r, "smollm2", pid);
    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_load(r, "not-here", NULL, refused, &err), -1);
    error_clear(&err);
    wait_state(pid, "ready");
    wait_state(refused, "failed");
    char *v = sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                  "'cortex-neuron' AND datname = current_database() AND pid <> %s",
                  old_backend);
    ck_assert_str_eq(v, "1"); /* a new connection */
    free(v);
    free(old_backend);
    free(next_heartbeat(node));
    ck_assert_int_eq(sql_int("SELECT incarnation FROM cortex.nodes WHERE name = 'node-e'"),
                     incarnation);

    /* marked down: every model is unloaded and the node registers again (a new incarnation,
     * which voids the old placement) */
    free(sql("UPDATE cortex.nodes SET marked_down_at = now(), down_reason = 'test' WHERE id = %lld",
             node));
    char *q = xasprintf("SELECT incarnation > %lld AND marked_down_at IS NULL FROM cortex.nodes "
                        "WHERE id = %lld",
                        incarnation, node);
    wait_equal(q, "t");
    free(q);
    v = sql("SELECT state || ':' || reason FROM cortex.placements WHERE id = %lld", pid);
    ck_assert_msg(strncmp(v, "failed:", 7) == 0 || strncmp(v, "gone:", 5) == 0, "%s", v);
    free(v);
    double deadline = now_s() + WAIT_SEC;
    for (;;) {
        struct registry_totals t;
        registry_get_totals(r, &t);
        if (t.models_ready + t.models_loading == 0 && t.memory_used == 0)
            break;
        ck_assert_msg(now_s() < deadline, "the model was not unloaded");
        pause_ms(50);
    }
    stop(r, rep);
}
END_TEST

int main(void)
{
    test_pg = getenv("CORTEX_TEST_PG");
    gguf = getenv("CORTEX_SMOLLM2_GGUF");
    if (!test_pg || !test_pg[0]) {
        fprintf(stderr, "CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    if (!gguf || access(gguf, R_OK) != 0) {
        fprintf(stderr, "CORTEX_SMOLLM2_GGUF not set or unreadable: skipping\n");
        return 77;
    }
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("report");
    tcase_add_unchecked_fixture(tc, db_setup, db_teardown);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_register_sync_and_heartbeat);
    tcase_add_test(tc, test_placement_transitions_and_progress);
    tcase_add_test(tc, test_refused_loads_fail_their_placements);
    tcase_add_test(tc, test_resync_after_backend_terminated);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
