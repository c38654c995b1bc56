/*
 * tests/unit/scheduler/test_cli.c — the cortex command line, run as a user runs it, against a
 * real, migrated PostgreSQL.
 *
 * The binary is found next to this test's build folder (../scheduler/cortex). Covers: every
 * command's effect in the database and its output (text and --json, the JSON parsed), database
 * errors shown without internal context and with exit status 1, usage errors with 2, names
 * that look like SQL staying data, and migrate finding ops/migrate. Exits 77 (skipped) when
 * CORTEX_TEST_PG is unset or the binary was not built.
 */
#include <check.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "xalloc.h"

#include "scheduler/sched_test_db.h"

static struct sched_test_db tdb;
static db_t *db;
static char cli_path[PATH_MAX];

static void setup(void)
{
    ck_assert(sched_test_db_create(&tdb));
    db = sched_test_connect(tdb.conninfo);
}

static void teardown(void)
{
    db_destroy(db);
    sched_test_db_drop(&tdb);
}

/* Runs cortex --db <scratch> args...; returns the exit status, stdout and stderr (caller
 * frees). extra_env: one "NAME=value" added to the environment, or NULL. */
static int run_cli(const char *const *args, char **out, char **err, const char *extra_env)
{
    char *argv[16];
    int n = 0;
    argv[n++] = cli_path;
    argv[n++] = "--db";
    argv[n++] = tdb.conninfo;
    for (int i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    size_t n_env = 0;
    while (environ[n_env] != NULL)
        n_env++;
    char **envp = xcalloc(n_env + 2, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        if (strncmp(environ[i], "CORTEX_SQL_DIR=", 15) != 0)
            envp[k++] = environ[i];
    }
    if (extra_env != NULL)
        envp[k++] = (char *)extra_env;
    envp[k] = NULL;

    int po[2], pe[2];
    ck_assert_int_eq(pipe(po), 0);
    ck_assert_int_eq(pipe(pe), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addclose(&fa, po[0]);
    posix_spawn_file_actions_addclose(&fa, pe[0]);
    pid_t pid;
    ck_assert_int_eq(posix_spawn(&pid, cli_path, &fa, NULL, argv, envp), 0);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(po[1]);
    close(pe[1]);
    struct buf bo = BUF_INIT, be = BUF_INIT;
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds > 0) {
        ck_assert_int_gt(poll(fds, 2, 30000), 0);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            char chunk[4096];
            ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            buf_append(i == 0 ? &bo : &be, chunk, (size_t)got);
        }
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    *out = buf_steal(&bo, NULL);
    *err = buf_steal(&be, NULL);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

#define RUN(out, err, ...) run_cli((const char *const[]){__VA_ARGS__, NULL}, out, err, NULL)

static void seed(void)
{
    sched_test_sql(db, "SELECT cortex.node_register('cli-n1', 'http://127.0.0.1:9', "
                       "'[{\"kind\":\"cpu\",\"ordinal\":0,\"memory_total_bytes\":17179869184}]')");
    sched_test_sql(db, "SELECT cortex.add_model('cli-m', memory_bytes => 4294967296)");
    sched_test_sql(db, "SELECT cortex.add_model('cli-other', memory_bytes => 1073741824)");
}

START_TEST(test_actions)
{
    seed();
    char *out, *err;
    ck_assert_int_eq(RUN(&out, &err, "pin", "cli-m"), 0);
    ck_assert_str_eq(out, "pinned\n");
    free(out), free(err);
    sched_test_expect(db, "SELECT pinned FROM cortex.models WHERE name = 'cli-m'", "t");

    ck_assert_int_eq(RUN(&out, &err, "--json", "load", "cli-other", "cli-n1"), 0);
    json_t *doc = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert(json_is_true(json_object_get(doc, "ok")));
    char *demand = sched_test_value(db, "SELECT id FROM cortex.demand");
    ck_assert_str_eq(json_string_value(json_object_get(doc, "result")), demand);
    free(demand);
    json_decref(doc);
    free(out), free(err);
    sched_test_expect(db,
                      "SELECT d.kind || '|' || n.name || '|' || d.source FROM cortex.demand d "
                      "JOIN cortex.nodes n ON n.id = d.node_id",
                      "load|cli-n1|operator:postgres");

    /* Refused by the database: exit 1, the message and hint, no internal context. */
    ck_assert_int_eq(RUN(&out, &err, "unload", "cli-m"), 1);
    ck_assert_str_eq(out, "");
    ck_assert_ptr_nonnull(strstr(err, "cortex: model \"cli-m\" is pinned\nHINT:"));
    ck_assert_ptr_null(strstr(err, "CONTEXT"));
    ck_assert_ptr_null(strstr(err, "ERROR:"));
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "unpin", "cli-m"), 0);
    free(out), free(err);
    sched_test_expect(db, "SELECT pinned FROM cortex.models WHERE name = 'cli-m'", "f");
    ck_assert_int_eq(RUN(&out, &err, "drain", "cli-n1"), 0);
    ck_assert_str_eq(out, "draining\n");
    free(out), free(err);
    sched_test_expect(db, "SELECT draining FROM cortex.nodes", "t");
    ck_assert_int_eq(RUN(&out, &err, "undrain", "cli-n1"), 0);
    free(out), free(err);
    sched_test_expect(db, "SELECT draining FROM cortex.nodes", "f");

    /* A name that looks like SQL stays a value. */
    ck_assert_int_eq(RUN(&out, &err, "pin", "x'); DROP TABLE cortex.models; --"), 1);
    ck_assert_ptr_nonnull(strstr(err, "invalid model name"));
    free(out), free(err);
    sched_test_expect(db, "SELECT count(*) FROM cortex.models", "2");

    ck_assert_int_eq(RUN(&out, &err, "bogus"), 2);
    ck_assert_ptr_nonnull(strstr(err, "usage: cortex"));
    free(out), free(err);
    ck_assert_int_eq(RUN(&out, &err, "pin"), 2);
    free(out), free(err);
}
END_TEST

START_TEST(test_keys)
{
    char *out, *err;
    ck_assert_int_eq(RUN(&out, &err, "keys", "create", "ci bot", "--rpm", "60"), 0);
    const char *shown = strstr(out, "secret (shown only now): ");
    ck_assert_ptr_nonnull(shown);
    shown += strlen("secret (shown only now): ");
    char secret[128];
    snprintf(secret, sizeof secret, "%.*s", (int)strcspn(shown, "\n"), shown);
    ck_assert_uint_eq(strlen(secret), 67);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT name || '|' || requests_per_minute FROM "
             "cortex.api_key_lookup('%s')",
             secret);
    sched_test_expect(db, sql, "ci bot|60");
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "--json", "keys", "list"), 0);
    json_t *keys = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(keys);
    ck_assert_uint_eq(json_array_size(keys), 1);
    json_t *k = json_array_get(keys, 0);
    ck_assert_str_eq(json_string_value(json_object_get(k, "name")), "ci bot");
    ck_assert_int_eq(json_integer_value(json_object_get(k, "rpm")), 60);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%s", json_string_value(json_object_get(k, "prefix")));
    ck_assert_int_eq(strncmp(prefix, secret, 11), 0);
    ck_assert_ptr_null(strstr(out, secret)); /* the secret is never listed */
    json_decref(keys);
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "keys", "revoke", prefix), 0);
    ck_assert_str_eq(out, "revoked\n");
    free(out), free(err);
    sched_test_expect(db, sql, "NULL"); /* the secret no longer works */
    ck_assert_int_eq(RUN(&out, &err, "keys", "revoke", "1"), 1);
    ck_assert_ptr_nonnull(strstr(err, "already revoked"));
    free(out), free(err);
    ck_assert_int_eq(RUN(&out, &err, "--json", "keys", "create", "other", "--expires", "1 day"), 0);
    keys = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(keys);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(keys, 0), "id")), 2);
    json_decref(keys);
    free(out), free(err);
    ck_assert_int_eq(RUN(&out, &err, "keys", "create", "x", "--rpm"), 2);
    free(out), free(err);
}
END_TEST

START_TEST(test_status_models_events)
{
    seed();
    sched_test_sql(db, "SELECT cortex.placement_transition(cortex.placement_create("
                       "cortex.lease_acquire('cli-test'), cortex.resolve_model('cli-m'), n.id, "
                       "ARRAY[g.id], 4294967296), 'loading') FROM cortex.nodes n JOIN cortex.gpus "
                       "g ON g.node_id = n.id");
    sched_test_sql(db, "SELECT cortex.placement_progress(id, 50, 100) FROM cortex.placements");
    /* cli-other is demanded and the scheduler said why it waits */
    sched_test_sql(db, "SELECT cortex.demand_load('cli-other', 'cli-test')");
    sched_test_sql(db, "SELECT cortex.record_event('scheduler.wait', 'no room for cli-other: "
                       "busy', model => 'cli-other')");
    char *out, *err;
    ck_assert_int_eq(RUN(&out, &err, "status"), 0);
    const char *want[] = {"NODES\n",
                          "  cli-n1  alive            heartbeat 0.",
                          "s ago  queue 0  active 0\n",
                          "          cpu:0    [######..................] "
                          "4.0 GiB of 16.0 GiB reserved  (cli-m)\n",
                          "MODELS\n",
                          "  cli-m      loading     loading on cli-n1 50.0% [########........]"
                          "  (needs 4.0 GiB)\n",
                          "  cli-other  waiting     (needs 1.0 GiB, demanded)\n"
                          "             waiting: no room for cli-other: busy\n",
                          "RECENT EVENTS\n",
                          "placement.loading"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]) != NULL, "status lacks \"%s\":\n%s", want[i], out);
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "--json", "status"), 0);
    json_t *doc = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(doc, "nodes"), 0), "node")),
                     "cli-n1");
    ck_assert_int_eq(json_integer_value(json_object_get(
                             json_array_get(json_object_get(doc, "devices"), 0), "reserved_bytes")),
                     4294967296);
    ck_assert_uint_eq(json_array_size(json_object_get(doc, "models")), 2);
    /* structured for scripts: arrays and numbers, not rendered text */
    json_t *n0 = json_array_get(json_object_get(doc, "nodes"), 0);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(n0, "loading"), 0)), "cli-m");
    ck_assert(json_is_number(json_object_get(n0, "heartbeat_age_s")));
    json_t *m0 = json_array_get(json_object_get(doc, "models"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(m0, "state")), "loading");
    json_t *p0 = json_array_get(json_object_get(m0, "placements"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(p0, "node")), "cli-n1");
    ck_assert_str_eq(json_string_value(json_object_get(p0, "state")), "loading");
    ck_assert(json_number_value(json_object_get(p0, "progress_pct")) == 50.0);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p0, "devices"), 0)), "cpu:0");
    json_t *m1 = json_array_get(json_object_get(doc, "models"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(m1, "state")), "waiting");
    ck_assert_str_eq(json_string_value(json_object_get(m1, "waiting_reason")),
                     "no room for cli-other: busy");
    ck_assert_uint_gt(json_array_size(json_object_get(doc, "events")), 0);
    json_decref(doc);
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "models"), 0);
    ck_assert_ptr_nonnull(strstr(out, "model "));
    ck_assert_ptr_nonnull(strstr(out, "loading"));
    ck_assert_ptr_nonnull(strstr(out, "waiting"));
    free(out), free(err);
    ck_assert_int_eq(RUN(&out, &err, "--json", "models"), 0);
    doc = json_loads(out, 0, NULL);
    ck_assert_uint_eq(json_array_size(doc), 2);
    json_decref(doc);
    free(out), free(err);

    ck_assert_int_eq(RUN(&out, &err, "--json", "events", "2"), 0);
    doc = json_loads(out, 0, NULL);
    ck_assert_uint_eq(json_array_size(doc), 2);
    json_decref(doc);
    free(out), free(err);
}
END_TEST

START_TEST(test_migrate)
{
    char *src = sched_test_source_dir();
    char *env = xasprintf("CORTEX_SQL_DIR=%s/sql", src);
    char *out, *err;
    ck_assert_int_eq(run_cli((const char *const[]){"migrate", "--status", NULL}, &out, &err, env),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "; 0 pending"));
    free(out), free(err);
    ck_assert_int_eq(run_cli((const char *const[]){"migrate", NULL}, &out, &err, env), 0);
    ck_assert_ptr_nonnull(strstr(out, "nothing to apply"));
    free(out), free(err);
    ck_assert_int_eq(run_cli((const char *const[]){"migrate", "--bogus", NULL}, &out, &err, env),
                     2);
    free(out), free(err);
    free(env);
    free(src);
}
END_TEST

int main(void)
{
    if (getenv("CORTEX_TEST_PG") == NULL || getenv("CORTEX_TEST_PG")[0] == '\0') {
        printf("CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 77;
    self[n] = '\0';
    snprintf(cli_path, sizeof cli_path, "%s/../scheduler/cortex", dirname(self));
    if (access(cli_path, X_OK) != 0) {
        printf("%s was not built: skipping\n", cli_path);
        return 77;
    }
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_keys);
    tcase_add_test(tc, test_status_models_events);
    tcase_add_test(tc, test_migrate);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
