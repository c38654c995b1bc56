/*
 * common/db.c — one PostgreSQL connection with reconnect, backoff and parameterised queries.
 *
 * The user's conninfo reaches libpq untouched as the expanded "dbname" of PQconnectdbParams;
 * our defaults (keepalives, connect_timeout, fallback_application_name) are placed before it in
 * the keyword array, and libpq lets later entries override earlier ones, so the user's string
 * always wins. Settings that are not connection parameters (statement_timeout) are applied with
 * a parameterised set_config() after each connect, together with the re-LISTENs.
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#define DB_DEFAULT_CONNECT_TIMEOUT_S 5
#define DB_DEFAULT_BACKOFF_INITIAL   100
#define DB_DEFAULT_BACKOFF_MAX       10000
#define DB_CHANNEL_MAX               63 /* NAMEDATALEN - 1 */

struct db {
    char *conninfo;
    db_options_t opts; /* application_name points into app_name below */
    char *app_name;
    PGconn *conn; /* NULL when never connected or after a failure/reset */

    uint64_t generation;
    uint64_t attempts;
    unsigned failures;        /* consecutive failed attempts; drives the backoff */
    uint64_t next_attempt_ms; /* monotonic time before which db_ensure does not try */
    char *last_connect_error; /* why the last attempt failed; quoted while backing off */

    char *fatal; /* a FATAL message the server sent outside a query: the session is over */

    char **channels; /* LISTEN registrations, re-issued after every reconnect */
    size_t n_channels, cap_channels;

    db_error_kind_t err_kind;
    char *err_msg;
    char sqlstate[6];
};

/* Records an error; msg is copied without libpq's trailing newlines. */
static void db_set_error(db_t *db, db_error_kind_t kind, const char *sqlstate, const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    free(db->err_msg);
    db->err_msg = xstrndup(msg, n);
    db->err_kind = kind;
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", sqlstate ? sqlstate : "");
}

static void db_clear_error(db_t *db)
{
    free(db->err_msg);
    db->err_msg = NULL;
    db->err_kind = DB_ERROR_NONE;
    db->sqlstate[0] = '\0';
}

static void db_disconnect(db_t *db)
{
    PQfinish(db->conn);
    db->conn = NULL;
    free(db->fatal);
    db->fatal = NULL;
}

/* libpq hands every server notice here instead of printing it to stderr: NOTICEs and WARNINGs
 * from statements, and the FATAL a backend sends before it exits (pg_terminate_backend,
 * shutdown). A FATAL one ends the session, and its text is the best explanation of the loss,
 * so it is kept for the error that follows. All of them go to the log at debug level. */
static void db_on_notice(void *arg, const char *message)
{
    db_t *db = arg;
    if (strncmp(message, "FATAL:", 6) == 0 && db->fatal == NULL)
        db->fatal = xstrdup(message);
    size_t len = strlen(message);
    while (len > 0 && message[len - 1] == '\n') /* libpq ends each notice with a newline */
        len--;
    LOG_DEBUG("postgres: %.*s", (int)len, message);
}

/* A conninfo that libpq will expand (rather than take as a bare database name) is checked for
 * syntax up front, so a typo fails at start-up instead of on every reconnect. */
static int db_check_conninfo(const char *conninfo, char **errmsg)
{
    bool expands = strchr(conninfo, '=') != NULL || strncmp(conninfo, "postgres://", 11) == 0 ||
                   strncmp(conninfo, "postgresql://", 13) == 0;
    if (!expands)
        return 0;
    char *err = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &err);
    if (parsed == NULL) {
        *errmsg =
                xasprintf("invalid PostgreSQL connection string: %s", err ? err : "out of memory");
        PQfreemem(err);
        return -1;
    }
    PQconninfoFree(parsed);
    return 0;
}

db_t *db_create(const char *conninfo, const db_options_t *opts, char **errmsg)
{
    *errmsg = NULL;
    if (conninfo == NULL)
        conninfo = "";
    if (db_check_conninfo(conninfo, errmsg) < 0)
        return NULL;

    db_t *db = xcalloc(1, sizeof *db);
    db->conninfo = xstrdup(conninfo);
    if (opts)
        db->opts = *opts;
    if (db->opts.application_name)
        db->app_name = xstrdup(db->opts.application_name);
    db->opts.application_name = db->app_name;
    if (db->opts.connect_timeout_s <= 0)
        db->opts.connect_timeout_s = DB_DEFAULT_CONNECT_TIMEOUT_S;
    if (db->opts.backoff_initial_ms <= 0)
        db->opts.backoff_initial_ms = DB_DEFAULT_BACKOFF_INITIAL;
    if (db->opts.backoff_max_ms <= 0)
        db->opts.backoff_max_ms = DB_DEFAULT_BACKOFF_MAX;
    if (db->opts.backoff_max_ms < db->opts.backoff_initial_ms)
        db->opts.backoff_max_ms = db->opts.backoff_initial_ms;
    return db;
}

void db_destroy(db_t *db)
{
    if (db == NULL)
        return;
    db_disconnect(db);
    for (size_t i = 0; i < db->n_channels; i++)
        free(db->channels[i]);
    free(db->channels);
    free(db->conninfo);
    free(db->app_name);
    free(db->last_connect_error);
    free(db->err_msg);
    free(db);
}

bool db_is_connected(const db_t *db)
{
    return db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK && db->fatal == NULL;
}

void db_reset(db_t *db)
{
    db_disconnect(db);
    db->failures = 0;
    db->next_attempt_ms = 0;
}

uint64_t db_generation(const db_t *db)
{
    return db->generation;
}

uint64_t db_connect_attempts(const db_t *db)
{
    return db->attempts;
}

int db_backend_pid(const db_t *db)
{
    return db_is_connected(db) ? PQbackendPID(db->conn) : 0;
}

/* The core of every statement: extended protocol, text parameters, text results. */
static PGresult *db_exec_raw(db_t *db, const char *sql, int nparams, const char *const *values)
{
    db_clear_error(db);
    if (!db_is_connected(db)) {
        db_set_error(db, DB_ERROR_CONNECTION, NULL, "not connected to PostgreSQL");
        return NULL;
    }
    PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;

    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (msg[0] == '\0')
        msg = PQerrorMessage(db->conn);
    if (msg[0] == '\0')
        msg = "unexpected result status";
    if (db->fatal)
        msg = db->fatal; /* why the server ended the session beats "closed unexpectedly" */
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    db_error_kind_t kind = db_is_connected(db) ? DB_ERROR_QUERY : DB_ERROR_CONNECTION;
    db_set_error(db, kind, state, msg);
    PQclear(res);
    return NULL;
}

/* LISTEN takes no parameters, so the channel is spliced in: it has been validated as a plain
 * identifier and is quoted as one as well. */
static int db_listen_now(db_t *db, const char *channel)
{
    char *quoted = PQescapeIdentifier(db->conn, channel, strlen(channel));
    if (quoted == NULL) {
        db_set_error(db, DB_ERROR_CONNECTION, NULL, PQerrorMessage(db->conn));
        return -1;
    }
    char *sql = xasprintf("LISTEN %s", quoted);
    PQfreemem(quoted);
    PGresult *res = db_exec_raw(db, sql, 0, NULL);
    free(sql);
    if (res == NULL)
        return -1;
    PQclear(res);
    return 0;
}

/* Session state every connection needs: statement timeout and LISTENs. */
static int db_setup_session(db_t *db)
{
    if (db->opts.statement_timeout_ms > 0) {
        char ms[32];
        snprintf(ms, sizeof ms, "%d", db->opts.statement_timeout_ms);
        const char *params[] = {ms};
        PGresult *res = db_exec_raw(
                db, "SELECT pg_catalog.set_config('statement_timeout', $1, false)", 1, params);
        if (res == NULL)
            return -1;
        PQclear(res);
    }
    for (size_t i = 0; i < db->n_channels; i++) {
        if (db_listen_now(db, db->channels[i]) < 0)
            return -1;
    }
    return 0;
}

static void db_schedule_retry(db_t *db, uint64_t now)
{
    int64_t delay = db->opts.backoff_initial_ms;
    for (unsigned i = 0; i < db->failures && delay < db->opts.backoff_max_ms; i++)
        delay *= 2;
    if (delay > db->opts.backoff_max_ms)
        delay = db->opts.backoff_max_ms;
    /* +-25%: spread reconnects of many processes after a shared outage. */
    int64_t span = delay / 2;
    if (span > 0) {
        uint64_t r;
        ids_random_bytes(&r, sizeof r);
        delay = delay - delay / 4 + (int64_t)(r % (uint64_t)(span + 1));
    }
    db->failures++;
    db->next_attempt_ms = now + (uint64_t)delay;
}

/* One connection attempt; on failure the reason is in db->last_connect_error. */
static int db_connect_once(db_t *db)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", db->opts.connect_timeout_s);
    const char *keys[16], *vals[16];
    int n = 0;
    keys[n] = "connect_timeout", vals[n++] = timeout;
    if (db->app_name)
        keys[n] = "fallback_application_name", vals[n++] = db->app_name;
    if (db->opts.keepalives) {
        keys[n] = "keepalives", vals[n++] = "1";
        keys[n] = "keepalives_idle", vals[n++] = "30";
        keys[n] = "keepalives_interval", vals[n++] = "10";
        keys[n] = "keepalives_count", vals[n++] = "3";
        keys[n] = "tcp_user_timeout", vals[n++] = "30000";
    }
    keys[n] = "dbname", vals[n++] = db->conninfo; /* last: its fields override ours */
    keys[n] = NULL, vals[n] = NULL;

    db->attempts++;
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (db->conn != NULL)
        PQsetNoticeProcessor(db->conn, db_on_notice, db);
    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        const char *msg = db->conn ? PQerrorMessage(db->conn) : "out of memory";
        free(db->last_connect_error);
        db->last_connect_error = xstrdup(msg);
        goto fail;
    }
    if (db_setup_session(db) < 0) {
        free(db->last_connect_error);
        db->last_connect_error = xasprintf("session setup failed: %s", db->err_msg);
        goto fail;
    }
    return 0;
fail:
    db_disconnect(db);
    return -1;
}

int db_ensure(db_t *db)
{
    if (db_is_connected(db)) {
        db_clear_error(db);
        return 0;
    }
    db_disconnect(db);
    uint64_t now = timing_now_ms();
    if (now < db->next_attempt_ms) {
        char *msg = xasprintf("not connected to PostgreSQL (next attempt in %llu ms): %s",
                              (unsigned long long)(db->next_attempt_ms - now),
                              db->last_connect_error ? db->last_connect_error : "");
        db_set_error(db, DB_ERROR_CONNECTION, NULL, msg);
        free(msg);
        return -1;
    }
    if (db_connect_once(db) < 0) {
        db_schedule_retry(db, timing_now_ms());
        db_set_error(db, DB_ERROR_CONNECTION, NULL, db->last_connect_error);
        return -1;
    }
    db->generation++;
    db->failures = 0;
    db->next_attempt_ms = 0;
    db_clear_error(db);
    return 0;
}

PGresult *db_exec_params(db_t *db, const char *sql, int nparams, const char *const *values)
{
    return db_exec_raw(db, sql, nparams, values);
}

int db_query_value(db_t *db, const char *sql, int nparams, const char *const *values, char **out)
{
    *out = NULL;
    PGresult *res = db_exec_raw(db, sql, nparams, values);
    if (res == NULL)
        return -1;
    int found = 0;
    if (PQntuples(res) > 0 && PQnfields(res) > 0) {
        found = 1;
        if (!PQgetisnull(res, 0, 0))
            *out = xstrdup(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return found;
}

int db_exec_command(db_t *db, const char *sql, int nparams, const char *const *values,
                    uint64_t *rows)
{
    PGresult *res = db_exec_raw(db, sql, nparams, values);
    if (res == NULL)
        return -1;
    if (rows)
        *rows = strtoull(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return 0;
}

const char *db_last_error(const db_t *db)
{
    return db->err_msg ? db->err_msg : "";
}

const char *db_last_sqlstate(const db_t *db)
{
    return db->sqlstate;
}

db_error_kind_t db_last_error_kind(const db_t *db)
{
    return db->err_kind;
}

static bool db_channel_valid(const char *channel)
{
    size_t n = strlen(channel);
    if (n == 0 || n > DB_CHANNEL_MAX)
        return false;
    if (!((channel[0] >= 'a' && channel[0] <= 'z') || channel[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = channel[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

int db_listen(db_t *db, const char *channel)
{
    db_clear_error(db);
    if (channel == NULL || !db_channel_valid(channel)) {
        db_set_error(db, DB_ERROR_USAGE, NULL,
                     "invalid LISTEN channel: use [a-z_][a-z0-9_]*, at most 63 bytes");
        return -1;
    }
    bool known = false;
    for (size_t i = 0; i < db->n_channels; i++)
        known = known || strcmp(db->channels[i], channel) == 0;
    if (!known) {
        db->channels =
                xgrow(db->channels, &db->cap_channels, db->n_channels + 1, sizeof *db->channels);
        db->channels[db->n_channels++] = xstrdup(channel);
    }
    if (!db_is_connected(db))
        return 0;
    return db_listen_now(db, channel);
}

int db_socket(const db_t *db)
{
    return db_is_connected(db) ? PQsocket(db->conn) : -1;
}

int db_consume_notifications(db_t *db, db_notify_fn fn, void *ud)
{
    db_clear_error(db);
    if (!db_is_connected(db)) {
        db_set_error(db, DB_ERROR_CONNECTION, NULL, "not connected to PostgreSQL");
        return -1;
    }
    /* Deliver what was already read even when the read fails: those notifications happened.
     * PQnotifies also parses what was read, which is when a FATAL from the server shows up. */
    bool read_failed = PQconsumeInput(db->conn) == 0;
    char *read_error = read_failed ? xstrdup(PQerrorMessage(db->conn)) : NULL;
    int delivered = 0;
    PGnotify *n;
    while ((n = PQnotifies(db->conn)) != NULL) {
        fn(n->relname, n->extra, n->be_pid, ud);
        PQfreemem(n);
        delivered++;
    }
    if (!read_failed && db->fatal == NULL)
        return delivered;
    db_set_error(db, DB_ERROR_CONNECTION, NULL, db->fatal ? db->fatal : read_error);
    free(read_error);
    db_disconnect(db); /* the session is over, whether or not libpq has seen the EOF yet */
    return -1;
}
