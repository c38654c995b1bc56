/*
 * tests/unit/common/test_db.c — common/db against a real PostgreSQL (CORTEX_TEST_PG).
 *
 * Covers: connect, parameters staying data, errors with SQLSTATE, server notices in the debug
 * log, statement timeout, multi-host failover with target_session_attrs, reconnect after
 * pg_terminate_backend (generation and re-LISTEN), the reconnect backoff against a dead port,
 * LISTEN/NOTIFY with payload.
 * Exits 77 (skipped) when CORTEX_TEST_PG is unset.
 */
#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include "common/test_util.h"

static const char *test_pg;

static db_t *connect_ok(const char *conninfo, const db_options_t *opts)
{
    char *err = NULL;
    db_t *db = db_create(conninfo, opts, &err);
    ck_assert_msg(db != NULL, "db_create: %s", err ? err : "?");
    ck_assert_msg(db_ensure(db) == 0, "db_ensure: %s", db_last_error(db));
    return db;
}

/* Quotes a conninfo value: 'value' with \ and ' escaped. The caller frees. */
static char *conn_quote(const char *v)
{
    char *out = xmalloc(2 * strlen(v) + 3), *p = out;
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

START_TEST(test_connect_and_query)
{
    db_options_t opts = {.application_name = "cortex-test-db", .keepalives = true};
    db_t *db = connect_ok(test_pg, &opts);
    ck_assert(db_is_connected(db));
    ck_assert_uint_eq(db_generation(db), 1);
    ck_assert_uint_eq(db_connect_attempts(db), 1);
    ck_assert_int_gt(db_backend_pid(db), 0);

    char *v = NULL;
    const char *params[] = {"20", "22"};
    ck_assert_int_eq(db_query_value(db, "SELECT $1::int + $2::int", 2, params, &v), 1);
    ck_assert_str_eq(v, "42");
    free(v);
    ck_assert_int_eq(db_query_value(db, "SELECT current_setting('application_name')", 0, NULL, &v),
                     1);
    ck_assert_str_eq(v, "cortex-test-db");
    free(v);
    /* A second db_ensure on a healthy connection neither reconnects nor counts an attempt. */
    ck_assert_int_eq(db_ensure(db), 0);
    ck_assert_uint_eq(db_generation(db), 1);
    ck_assert_uint_eq(db_connect_attempts(db), 1);
    db_destroy(db);

    /* The user's connection string wins over our defaults. */
    char *conninfo = xasprintf("%s application_name=from_user_string", test_pg);
    db = connect_ok(conninfo, &opts);
    ck_assert_int_eq(db_query_value(db, "SELECT current_setting('application_name')", 0, NULL, &v),
                     1);
    ck_assert_str_eq(v, "from_user_string");
    free(v);
    free(conninfo);
    db_destroy(db);
}
END_TEST

START_TEST(test_not_connected_and_bad_conninfo)
{
    char *err = NULL;
    ck_assert_ptr_null(db_create("host=localhost port", NULL, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "invalid PostgreSQL connection string"));
    free(err);

    db_t *db = db_create(test_pg, NULL, &err);
    ck_assert_ptr_nonnull(db);
    ck_assert(!db_is_connected(db));
    ck_assert_int_eq(db_socket(db), -1);
    PGresult *res = db_exec_params(db, "SELECT 1", 0, NULL);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_CONNECTION);
    ck_assert_str_eq(db_last_sqlstate(db), "");
    db_destroy(db);
    db_destroy(NULL);
}
END_TEST

START_TEST(test_parameters_stay_data)
{
    db_t *db = connect_ok(test_pg, NULL);
    uint64_t rows = 99;
    ck_assert_int_eq(db_exec_command(db, "CREATE TEMP TABLE victim (v text)", 0, NULL, &rows), 0);

    const char *evil = "x'); DROP TABLE victim; SELECT ('";
    const char *p1[] = {evil};
    ck_assert_int_eq(db_exec_command(db, "INSERT INTO victim (v) VALUES ($1)", 1, p1, &rows), 0);
    ck_assert_uint_eq(rows, 1);
    char *v = NULL;
    ck_assert_int_eq(db_query_value(db, "SELECT v FROM victim", 0, NULL, &v), 1);
    ck_assert_str_eq(v, evil);
    free(v);

    /* NULL parameter is SQL NULL; "no row" differs from "a NULL value". */
    const char *pnull[] = {NULL};
    ck_assert_int_eq(db_query_value(db, "SELECT $1::text IS NULL", 1, pnull, &v), 1);
    ck_assert_str_eq(v, "t");
    free(v);
    ck_assert_int_eq(db_query_value(db, "SELECT $1::text", 1, pnull, &v), 1);
    ck_assert_ptr_null(v);
    const char *pnone[] = {"nothing"};
    ck_assert_int_eq(db_query_value(db, "SELECT v FROM victim WHERE v = $1", 1, pnone, &v), 0);
    ck_assert_ptr_null(v);

    /* The extended protocol refuses a second statement smuggled into the text. */
    ck_assert_ptr_null(db_exec_params(db, "SELECT 1; DROP TABLE victim", 0, NULL));
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_QUERY);
    ck_assert_str_eq(db_last_sqlstate(db), "42601");

    PGresult *res = db_exec_params(db, "SELECT count(*) FROM victim", 0, NULL);
    ck_assert_ptr_nonnull(res);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    ck_assert_int_eq(db_exec_command(db, "UPDATE victim SET v = v || 'x'", 0, NULL, &rows), 0);
    ck_assert_uint_eq(rows, 1);
    db_destroy(db);
}
END_TEST

START_TEST(test_errors_carry_sqlstate)
{
    db_t *db = connect_ok(test_pg, NULL);
    ck_assert_int_eq(db_exec_command(db, "CREATE TEMP TABLE u (k text PRIMARY KEY)", 0, NULL, NULL),
                     0);
    const char *k[] = {"a"};
    ck_assert_int_eq(db_exec_command(db, "INSERT INTO u VALUES ($1)", 1, k, NULL), 0);
    ck_assert_int_eq(db_exec_command(db, "INSERT INTO u VALUES ($1)", 1, k, NULL), -1);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_QUERY);
    ck_assert_str_eq(db_last_sqlstate(db), "23505");
    ck_assert_ptr_nonnull(strstr(db_last_error(db), "duplicate key"));

    ck_assert_int_eq(db_exec_command(db,
                                     "DO $$ BEGIN RAISE EXCEPTION 'custom failure' "
                                     "USING ERRCODE = 'CX001'; END $$",
                                     0, NULL, NULL),
                     -1);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_QUERY);
    ck_assert_str_eq(db_last_sqlstate(db), "CX001");
    ck_assert_ptr_nonnull(strstr(db_last_error(db), "custom failure"));

    char *v = NULL;
    ck_assert_int_eq(db_query_value(db, "SELECT 1/0", 0, NULL, &v), -1);
    ck_assert_str_eq(db_last_sqlstate(db), "22012");
    /* Still usable, and a success clears the error. */
    ck_assert_int_eq(db_query_value(db, "SELECT 'ok'", 0, NULL, &v), 1);
    ck_assert_str_eq(v, "ok");
    free(v);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_NONE);
    ck_assert_str_eq(db_last_error(db), "");
    db_destroy(db);
}
END_TEST

START_TEST(test_notices_are_logged_at_debug)
{
    db_t *db = connect_ok(test_pg, NULL);
    FILE *capture = test_util_log_capture_start();
    log_set_level(LOG_LEVEL_DEBUG);
    ck_assert_int_eq(db_exec_command(db,
                                     "DO $$ BEGIN RAISE NOTICE 'first notice'; "
                                     "RAISE WARNING 'second notice'; END $$",
                                     0, NULL, NULL),
                     0);
    log_set_level(LOG_LEVEL_INFO);
    ck_assert_int_eq(
            db_exec_command(db, "DO $$ BEGIN RAISE NOTICE 'hidden notice'; END $$", 0, NULL, NULL),
            0);
    char *out = test_util_log_capture_end(capture);
    ck_assert_msg(strstr(out, "level=debug") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "msg=\"postgres: NOTICE:  first notice\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "msg=\"postgres: WARNING:  second notice\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "hidden notice") == NULL, "%s", out);
    free(out);
    db_destroy(db);
}
END_TEST

START_TEST(test_statement_timeout)
{
    db_options_t opts = {.statement_timeout_ms = 200};
    db_t *db = connect_ok(test_pg, &opts);
    char *v = NULL;
    ck_assert_int_eq(db_query_value(db, "SHOW statement_timeout", 0, NULL, &v), 1);
    ck_assert_str_eq(v, "200ms");
    free(v);
    uint64_t t0 = timing_now_ms();
    ck_assert_int_eq(db_query_value(db, "SELECT pg_sleep(30)", 0, NULL, &v), -1);
    ck_assert_uint_lt(timing_now_ms() - t0, 20000); /* cancelled long before the sleep would end */
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_QUERY);
    ck_assert_str_eq(db_last_sqlstate(db), "57014");
    ck_assert(db_is_connected(db));
    ck_assert_int_eq(db_query_value(db, "SELECT 1", 0, NULL, &v), 1);
    free(v);
    db_destroy(db);
}
END_TEST

/* Builds "host=127.0.0.1,<real> port=<dead>,<real> user=.. dbname=.. <extra>" from the live
 * parameters of a libpq connection made with CORTEX_TEST_PG. The caller frees. */
static char *multi_host_conninfo(int dead, const char *extra)
{
    PGconn *c = PQconnectdb(test_pg);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    char *host = conn_quote(PQhost(c)), *user = conn_quote(PQuser(c)), *dbn = conn_quote(PQdb(c));
    /* host lists are comma separated: strip the quotes and rebuild around the list. */
    char *hostlist = xasprintf("'127.0.0.1,%.*s'", (int)strlen(host) - 2, host + 1);
    char *s = xasprintf("host=%s port='%d,%s' user=%s dbname=%s connect_timeout=5 %s", hostlist,
                        dead, PQport(c), user, dbn, extra);
    free(host), free(user), free(dbn), free(hostlist);
    PQfinish(c);
    return s;
}

START_TEST(test_multi_host_failover)
{
    int port;
    int fd = test_util_refusing_port(&port);

    char *conninfo = multi_host_conninfo(port, "target_session_attrs=read-write");
    db_t *db = connect_ok(conninfo, NULL);
    char *v = NULL;
    ck_assert_int_eq(db_query_value(db, "SELECT pg_is_in_recovery()", 0, NULL, &v), 1);
    ck_assert_str_eq(v, "f");
    free(v);
    ck_assert_uint_eq(db_connect_attempts(db), 1); /* libpq walked the host list itself */
    db_destroy(db);
    free(conninfo);

    /* The attribute is honoured: no standby exists, so this cannot connect. */
    conninfo = multi_host_conninfo(port, "target_session_attrs=standby");
    char *err = NULL;
    db = db_create(conninfo, NULL, &err);
    ck_assert_ptr_nonnull(db);
    ck_assert_int_eq(db_ensure(db), -1);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_CONNECTION);
    ck_assert_ptr_nonnull(strstr(db_last_error(db), "standby"));
    db_destroy(db);
    free(conninfo);

    /* Only dead hosts: a clear "refused" error. */
    conninfo = xasprintf("host=127.0.0.1,127.0.0.1 port=%d,%d connect_timeout=5", port, port);
    db = db_create(conninfo, NULL, &err);
    ck_assert_ptr_nonnull(db);
    ck_assert_int_eq(db_ensure(db), -1);
    ck_assert_msg(strstr(db_last_error(db), "refused") != NULL, "%s", db_last_error(db));
    db_destroy(db);
    free(conninfo);
    close(fd);
}
END_TEST

struct notes {
    int count;
    char channel[64];
    char payload[256];
    int pid;
};

static void on_notify(const char *channel, const char *payload, int pid, void *ud)
{
    struct notes *n = ud;
    n->count++;
    snprintf(n->channel, sizeof n->channel, "%s", channel);
    snprintf(n->payload, sizeof n->payload, "%s", payload);
    n->pid = pid;
}

/* Waits (poll on the socket, 10 s deadline) until at least one notification arrives. */
static void wait_notification(db_t *db, struct notes *n)
{
    uint64_t deadline = timing_now_ms() + 10000;
    while (n->count == 0 && timing_now_ms() < deadline) {
        struct pollfd pfd = {.fd = db_socket(db), .events = POLLIN};
        ck_assert_int_ge(pfd.fd, 0);
        ck_assert_int_ge(poll(&pfd, 1, 1000), 0);
        ck_assert_int_ge(db_consume_notifications(db, on_notify, n), 0);
    }
    ck_assert_int_ge(n->count, 1);
}

START_TEST(test_listen_notify)
{
    db_t *listener = connect_ok(test_pg, NULL);
    db_t *sender = connect_ok(test_pg, NULL);
    char channel[64];
    snprintf(channel, sizeof channel, "cortex_test_%d", (int)getpid());

    ck_assert_int_eq(db_listen(listener, "Bad-Name"), -1);
    ck_assert_int_eq(db_last_error_kind(listener), DB_ERROR_USAGE);
    ck_assert_int_eq(db_listen(listener, "x; drop table y"), -1);
    ck_assert_int_eq(db_listen(listener, ""), -1);
    ck_assert_int_eq(db_listen(listener, "a123456789012345678901234567890123456789012345678901234"
                                         "567890123"),
                     -1); /* 64 bytes */
    ck_assert_int_eq(db_listen(listener, channel), 0);

    struct notes n = {0};
    ck_assert_int_eq(db_consume_notifications(listener, on_notify, &n), 0);
    const char *payload = "model 'x'; ready -- 42";
    const char *params[] = {channel, payload};
    ck_assert_int_eq(db_exec_command(sender, "SELECT pg_notify($1, $2)", 2, params, NULL), 0);
    wait_notification(listener, &n);
    ck_assert_int_eq(n.count, 1);
    ck_assert_str_eq(n.channel, channel);
    ck_assert_str_eq(n.payload, payload);
    ck_assert_int_eq(n.pid, db_backend_pid(sender));
    db_destroy(listener);
    db_destroy(sender);
}
END_TEST

START_TEST(test_reconnect_after_terminate)
{
    db_t *db = connect_ok(test_pg, NULL);
    db_t *killer = connect_ok(test_pg, NULL);
    char channel[64];
    snprintf(channel, sizeof channel, "cortex_reconnect_%d", (int)getpid());
    ck_assert_int_eq(db_listen(db, channel), 0);
    int old_pid = db_backend_pid(db);
    uint64_t gen = db_generation(db);

    char pid[16];
    snprintf(pid, sizeof pid, "%d", old_pid);
    const char *params[] = {pid};
    char *v = NULL;
    /* The timeout argument makes the call wait until the backend has really exited. */
    ck_assert_int_eq(
            db_query_value(killer, "SELECT pg_terminate_backend($1::int, 10000)", 1, params, &v),
            1);
    ck_assert_str_eq(v, "t");
    free(v);

    ck_assert_int_eq(db_query_value(db, "SELECT 1", 0, NULL, &v), -1);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_CONNECTION);
    ck_assert(!db_is_connected(db));
    ck_assert_int_eq(db_backend_pid(db), 0);

    /* First attempt after a drop is immediate. */
    ck_assert_msg(db_ensure(db) == 0, "%s", db_last_error(db));
    ck_assert_uint_eq(db_generation(db), gen + 1);
    ck_assert_int_ne(db_backend_pid(db), old_pid);

    /* The LISTEN was re-issued on the new session. */
    struct notes n = {0};
    const char *np[] = {channel, "after"};
    ck_assert_int_eq(db_exec_command(killer, "SELECT pg_notify($1, $2)", 2, np, NULL), 0);
    wait_notification(db, &n);
    ck_assert_str_eq(n.payload, "after");

    /* A listener waiting in poll() learns of the loss from db_consume_notifications. */
    snprintf(pid, sizeof pid, "%d", db_backend_pid(db));
    ck_assert_int_eq(
            db_query_value(killer, "SELECT pg_terminate_backend($1::int, 10000)", 1, params, &v),
            1);
    free(v);
    struct pollfd pfd = {.fd = db_socket(db), .events = POLLIN};
    ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
    ck_assert_int_eq(db_consume_notifications(db, on_notify, &n), -1);
    ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_CONNECTION);
    ck_assert_msg(strstr(db_last_error(db), "administrator command") != NULL, "%s",
                  db_last_error(db));
    ck_assert(!db_is_connected(db));
    ck_assert_int_eq(db_ensure(db), 0);
    ck_assert_uint_eq(db_generation(db), gen + 2);

    /* db_reset drops the session; the next db_ensure makes a new one at once. */
    db_reset(db);
    ck_assert(!db_is_connected(db));
    ck_assert_int_eq(db_ensure(db), 0);
    ck_assert_uint_eq(db_generation(db), gen + 3);
    db_destroy(db);
    db_destroy(killer);
}
END_TEST

/* Calls db_ensure on a db that cannot connect as fast as a busy caller would, for ms
 * milliseconds; every call must fail for want of a connection. Returns the number of calls. */
static long ensure_failing_for(db_t *db, uint64_t ms)
{
    long calls = 0;
    uint64_t t0 = timing_now_ms();
    while (timing_now_ms() - t0 < ms) {
        ck_assert_int_eq(db_ensure(db), -1);
        ck_assert_int_eq(db_last_error_kind(db), DB_ERROR_CONNECTION);
        calls++;
        timing_sleep_ms(1); /* politeness only */
    }
    return calls;
}

START_TEST(test_backoff_limits_attempts)
{
    int port;
    int fd = test_util_refusing_port(&port);
    char *conninfo = xasprintf("host=127.0.0.1 port=%d connect_timeout=2", port);
    char *err = NULL;
    db_t *db = db_create(conninfo, NULL, &err); /* defaults: 100 ms doubling, +-25% */
    ck_assert_ptr_nonnull(db);

    /* For one second: with the backoff, attempts start at 0, >= 75, >= 225, >= 525 and
     * >= 1125 ms: at most 4 fit, and at least 2. */
    long calls = ensure_failing_for(db, 1000);
    uint64_t attempts = db_connect_attempts(db);
    ck_assert_msg(attempts >= 2 && attempts <= 4, "attempts %llu in %ld calls",
                  (unsigned long long)attempts, calls);
    ck_assert_int_gt(calls, 50);
    ck_assert_uint_eq(db_generation(db), 0);

    /* Right after a call (which may have tried), the next one is inside the backoff window: it
     * does not touch the network and its error says so, still carrying the cause. */
    ck_assert_int_eq(db_ensure(db), -1);
    uint64_t before = db_connect_attempts(db);
    ck_assert_int_eq(db_ensure(db), -1);
    ck_assert_uint_eq(db_connect_attempts(db), before);
    ck_assert_msg(strstr(db_last_error(db), "next attempt") != NULL, "%s", db_last_error(db));
    ck_assert_msg(strstr(db_last_error(db), "refused") != NULL, "%s", db_last_error(db));

    /* db_reset lifts the backoff: the next call tries at once. */
    db_reset(db);
    before = db_connect_attempts(db);
    ck_assert_int_eq(db_ensure(db), -1);
    ck_assert_uint_eq(db_connect_attempts(db), before + 1);

    db_destroy(db);
    free(conninfo);
    close(fd);
}
END_TEST

START_TEST(test_backoff_cap)
{
    int port;
    int fd = test_util_refusing_port(&port);
    char *conninfo = xasprintf("host=127.0.0.1 port=%d", port);
    char *err = NULL;
    /* A small cap: delays 20, 40, 40, 40 ... ms (+-25%): in 500 ms between 10 and 27 attempts.
     * Without the cap doubling would allow at most 5. */
    db_options_t opts = {.backoff_initial_ms = 20, .backoff_max_ms = 40};
    db_t *db = db_create(conninfo, &opts, &err);
    ck_assert_ptr_nonnull(db);
    ensure_failing_for(db, 500);
    uint64_t attempts = db_connect_attempts(db);
    ck_assert_msg(attempts >= 8 && attempts <= 27, "attempts %llu", (unsigned long long)attempts);
    db_destroy(db);
    free(conninfo);
    close(fd);
}
END_TEST

int main(void)
{
    test_pg = getenv("CORTEX_TEST_PG");
    if (test_pg == NULL || test_pg[0] == '\0') {
        fprintf(stderr, "CORTEX_TEST_PG is not set: skipping\n");
        return 77;
    }
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("db");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_connect_and_query);
    tcase_add_test(tc, test_not_connected_and_bad_conninfo);
    tcase_add_test(tc, test_parameters_stay_data);
    tcase_add_test(tc, test_errors_carry_sqlstate);
    tcase_add_test(tc, test_notices_are_logged_at_debug);
    tcase_add_test(tc, test_statement_timeout);
    tcase_add_test(tc, test_multi_host_failover);
    tcase_add_test(tc, test_listen_notify);
    tcase_add_test(tc, test_reconnect_after_terminate);
    tcase_add_test(tc, test_backoff_limits_attempts);
    tcase_add_test(tc, test_backoff_cap);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
