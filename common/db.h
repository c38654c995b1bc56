/*
 * common/db.h — one PostgreSQL connection with reconnect, backoff and parameterised queries.
 *
 * Contract: a db_t owns one libpq connection (PGconn) and everything needed to re-make it. It is
 * not thread-safe: one thread uses a db_t at a time (give each thread that talks to Postgres its
 * own db_t, as libpq itself requires).
 *
 * - The connection string is any libpq conninfo ("host=a,b port=1,2 target_session_attrs=
 *   read-write ...") or URI ("postgresql://..."). Multi-host failover is libpq's own: hosts are
 *   tried in order, connect_timeout applies to each. Options from db_options_t that are
 *   connection parameters (keepalives, connect_timeout, application name) are defaults: a value
 *   in the user's string wins. statement_timeout_ms, when set, is applied with set_config()
 *   after each connect and so overrides an "options=-c statement_timeout=..." in the string.
 * - db_create never connects. db_ensure connects or reconnects, but never more often than a
 *   jittered exponential backoff allows (initial 100 ms doubling to 10 s, each delay +-25%), so a
 *   loop calling it while Postgres is down does not hammer the server. The first attempt after
 *   a healthy connection drops is immediate.
 * - Every successful (re)connect increments the generation (db_generation). Anything that lives
 *   in a session — LISTEN registrations, session advisory locks, prepared statements, SET — is
 *   lost with the connection. Channels registered with db_listen are re-LISTENed automatically;
 *   callers compare the generation to know when to re-read state (a NOTIFY may have been missed)
 *   and re-take advisory locks.
 * - Only parameterised queries: every statement goes through the extended query protocol
 *   (PQexecParams), which also refuses several statements in one string. Untrusted text travels
 *   only as a parameter value, never inside the SQL text. There is no raw-exec helper.
 * - Errors: functions fail with -1 (or NULL) and record the reason: db_last_error (message),
 *   db_last_sqlstate (five-character SQLSTATE or ""), db_last_error_kind (a server-side
 *   statement error vs no usable connection).
 * - Server notices (NOTICE, WARNING, and the FATAL sent before a backend exits) never reach
 *   stderr: they go to common/log at debug level, "postgres: <message>".
 */
#ifndef CORTEX_DB_H
#define CORTEX_DB_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

typedef struct db db_t;

/* Zero-initialise, then set what you need; zero means "the default" for every field. */
typedef struct db_options {
    const char *application_name; /* shown in pg_stat_activity (libpq fallback_application_name) */
    int connect_timeout_s;        /* per host; default 5 */
    int statement_timeout_ms;     /* session statement_timeout; 0 leaves the server's setting */
    bool keepalives;              /* TCP keepalives (idle 30 s, interval 10 s, 3 probes) and a
                                     30 s TCP user timeout, so a dead peer is noticed */
    int backoff_initial_ms;       /* first reconnect delay after a failure; default 100 */
    int backoff_max_ms;           /* cap of the doubling delay; default 10000 */
} db_options_t;

typedef enum db_error_kind {
    DB_ERROR_NONE = 0,
    DB_ERROR_QUERY,      /* the server rejected the statement (SQLSTATE set); the connection is
                            still usable */
    DB_ERROR_CONNECTION, /* no usable connection: never made, lost, or backing off; call
                            db_ensure. The statement may or may not have run. */
    DB_ERROR_USAGE,      /* bad argument (e.g. an invalid channel name); nothing was sent */
} db_error_kind_t;

/* Called once per notification: channel and payload are valid only during the call. */
typedef void (*db_notify_fn)(const char *channel, const char *payload, int backend_pid, void *ud);

/* Validates conninfo (syntax only) and stores it with a copy of opts (NULL = all defaults). Does
 * not connect. Returns NULL on a malformed conninfo with *errmsg set (the caller frees it).
 * Destroy with db_destroy. */
db_t *db_create(const char *conninfo, const db_options_t *opts, char **errmsg)
        __attribute__((warn_unused_result));
/* Closes the connection and frees everything; accepts NULL. */
void db_destroy(db_t *db);

/* Makes sure the connection is up: returns 0 when it is usable, reconnecting if needed and
 * allowed by the backoff; -1 with a DB_ERROR_CONNECTION error otherwise (including "backing
 * off", which returns at once without touching the network). Blocks for at most the connect
 * timeout per host when it does try. */
int db_ensure(db_t *db) __attribute__((warn_unused_result));
/* Whether the last known state of the connection is good (no network round trip). */
bool db_is_connected(const db_t *db);
/* Drops the connection (e.g. after an error that leaves the session in an unknown state); the
 * next db_ensure reconnects at once. */
void db_reset(db_t *db);
/* Number of successful connects so far (0 before the first); see the contract above. */
uint64_t db_generation(const db_t *db);
/* Number of connection attempts so far (for metrics and tests). */
uint64_t db_connect_attempts(const db_t *db);
/* The backend process id of the current connection, or 0 when not connected. */
int db_backend_pid(const db_t *db);

/* Runs one statement with nparams text parameters ($1..$n; values[i] == NULL is SQL NULL).
 * Returns the result (PGRES_TUPLES_OK or PGRES_COMMAND_OK; the caller PQclear()s it), or NULL
 * on failure with the error recorded. Does not reconnect: call db_ensure first. */
PGresult *db_exec_params(db_t *db, const char *sql, int nparams, const char *const *values)
        __attribute__((warn_unused_result));
/* Runs a statement expected to return at most one value. Returns 1 when a row came back (*out =
 * a copy of its first column, NULL for SQL NULL; the caller frees it), 0 when no row came back
 * (*out = NULL), -1 on failure (*out = NULL). */
int db_query_value(db_t *db, const char *sql, int nparams, const char *const *values, char **out)
        __attribute__((warn_unused_result));
/* Runs a statement for its effect. Returns 0 and, when rows != NULL, the number of rows it
 * affected (INSERT/UPDATE/DELETE/SELECT), or -1 on failure. */
int db_exec_command(db_t *db, const char *sql, int nparams, const char *const *values,
                    uint64_t *rows) __attribute__((warn_unused_result));

/* The last failure: message (never NULL; "" when none), SQLSTATE ("" when the failure had none,
 * e.g. a refused connection) and kind. Valid until the next call on db. */
const char *db_last_error(const db_t *db);
const char *db_last_sqlstate(const db_t *db);
db_error_kind_t db_last_error_kind(const db_t *db);

/* Registers a LISTEN channel: a plain lower-case identifier ([a-z_][a-z0-9_]*, at most 63
 * bytes), so it is always a constant of the program, never client text. When connected, LISTENs
 * at once and returns that statement's result; when not, returns 0 and the LISTEN happens on the
 * next successful db_ensure (as it does after every reconnect). -1 with DB_ERROR_USAGE for an
 * invalid name. */
int db_listen(db_t *db, const char *channel) __attribute__((warn_unused_result));
/* The connection's socket for poll()/epoll (readable when notifications may have arrived), or
 * -1 when not connected. The descriptor changes on reconnect: re-read it after db_ensure. */
int db_socket(const db_t *db);
/* Reads what has arrived on the socket without blocking and calls fn for each pending
 * notification. Returns the number delivered (>= 0) or -1 when the connection is lost (then
 * db_ensure, re-read state). */
int db_consume_notifications(db_t *db, db_notify_fn fn, void *ud)
        __attribute__((warn_unused_result));

#endif
