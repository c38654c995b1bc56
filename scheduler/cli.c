/*
 * scheduler/cli.c — cortex: the operator's command line, a thin wrapper over the SQL admin
 * functions and views (docs/admin.md, docs/scheduler.md).
 *
 *   cortex [--db CONNINFO] [--json] COMMAND [ARGS]
 *     status                      nodes with device memory bars, models with state and load
 *                                 progress, recent events
 *     models                      the catalogue with state, replicas and policy
 *     pin MODEL | unpin MODEL     cortex.pin_model / unpin_model
 *     load MODEL [NODE]           cortex.request_load (also resets failed loads)
 *     unload MODEL [NODE]         cortex.request_unload
 *     drain NODE | undrain NODE   cortex.drain_node / undrain_node
 *     keys list | keys create NAME [--rpm N] [--tpm N] [--expires INTERVAL]
 *          | keys limits ID [--rpm N] [--tpm N] | keys revoke ID|PREFIX
 *     events [N]                  the latest N events (default 20)
 *     migrate [--dry-run|--status] runs ops/migrate on the database
 *
 * --db defaults to $CORTEX_PG, then the libpq environment. --json prints JSON (built by
 * PostgreSQL itself: json_agg of the view rows) for scripts. Every value travels as a query
 * parameter. `migrate` executes the ops/migrate script (the one implementation of the
 * migration rules), found through $CORTEX_SQL_DIR (its parent's ops/migrate, with --dir) or by
 * walking up from this binary's folder to a folder holding ops/migrate and sql/.
 * Exit status: 0 done, 1 failed (the database's message is printed), 2 usage.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <unistd.h>

#include "buf.h"
#include "db.h"
#include "plan.h"
#include "xalloc.h"

#define CLI_USAGE 2

struct cli {
    db_t *db;
    const char *conninfo;
    bool json;
};

static void cli_usage(FILE *to)
{
    fputs("usage: cortex [--db CONNINFO] [--json] COMMAND [ARGS]\n"
          "  status                        nodes, device memory, models, recent events\n"
          "  models                        the catalogue with state, replicas and policy\n"
          "  pin MODEL | unpin MODEL       keep a model loaded and never evict it, or stop\n"
          "  load MODEL [NODE]             ask for a model to be loaded (resets failed loads)\n"
          "  unload MODEL [NODE]           ask for a model to be unloaded\n"
          "  drain NODE | undrain NODE     move models off a node and place nothing there\n"
          "  keys list\n"
          "  keys create NAME [--rpm N] [--tpm N] [--expires INTERVAL]\n"
          "  keys limits ID [--rpm N] [--tpm N]   (a limit left out: unlimited)\n"
          "  keys revoke ID|PREFIX\n"
          "  events [N]                    the latest N events (default 20)\n"
          "  migrate [--dry-run|--status]  apply the schema migrations (ops/migrate)\n"
          "--db defaults to $CORTEX_PG, then the libpq environment (PGHOST, ...).\n",
          to);
}

static bool cli_connect(struct cli *c)
{
    char *err = NULL;
    db_options_t opts = {.application_name = "cortex-cli", .connect_timeout_s = 5};
    c->db = db_create(c->conninfo, &opts, &err);
    if (c->db == NULL) {
        fprintf(stderr, "cortex: %s\n", err ? err : "bad connection string");
        free(err);
        return false;
    }
    if (db_ensure(c->db) < 0) {
        fprintf(stderr, "cortex: cannot connect: %s\n", db_last_error(c->db));
        return false;
    }
    return true;
}

/* Prints the database's message for people: without the "ERROR:  " severity and without the
 * CONTEXT lines (which name internal functions), keeping DETAIL and HINT. */
static void cli_print_error(const char *msg)
{
    if (strncmp(msg, "ERROR:  ", 8) == 0)
        msg += 8;
    const char *context = strstr(msg, "\nCONTEXT:");
    int len = context ? (int)(context - msg) : (int)strlen(msg);
    fprintf(stderr, "cortex: %.*s\n", len, msg);
}

/* Runs a query; on failure prints the database's message (with detail and hint). */
static PGresult *cli_query(struct cli *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = db_exec_params(c->db, sql, n, params);
    if (r == NULL)
        cli_print_error(db_last_error(c->db));
    return r;
}

/* --json: the rows of a query as one JSON array, built by PostgreSQL. */
static int cli_print_json_rows(struct cli *c, const char *query, int n, const char *const *params)
{
    struct buf sql = BUF_INIT;
    buf_appendf(&sql, "SELECT coalesce(json_agg(t), '[]'::json) FROM (%s) t", query);
    PGresult *r = cli_query(c, buf_cstr(&sql), n, params);
    buf_free(&sql);
    if (r == NULL)
        return 1;
    printf("%s\n", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* Prints a result as an aligned table with a header, like psql. */
static void cli_print_table(const PGresult *r)
{
    int rows = PQntuples(r), cols = PQnfields(r);
    size_t *w = xcalloc((size_t)(cols ? cols : 1), sizeof *w);
    for (int j = 0; j < cols; j++) {
        w[j] = strlen(PQfname(r, j));
        for (int i = 0; i < rows; i++) {
            size_t len = strlen(PQgetvalue(r, i, j));
            if (len > w[j])
                w[j] = len;
        }
    }
    for (int j = 0; j < cols; j++)
        printf("%s%-*s", j ? "  " : "", (int)w[j], PQfname(r, j));
    putchar('\n');
    for (int j = 0; j < cols; j++) {
        printf("%s", j ? "  " : "");
        for (size_t k = 0; k < w[j]; k++)
            putchar('-');
    }
    putchar('\n');
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++)
            printf("%s%-*s", j ? "  " : "", (int)w[j], PQgetvalue(r, i, j));
        putchar('\n');
    }
    if (rows == 0)
        printf("(none)\n");
    free(w);
}

static int cli_table(struct cli *c, const char *query, int n, const char *const *params)
{
    if (c->json)
        return cli_print_json_rows(c, query, n, params);
    PGresult *r = cli_query(c, query, n, params);
    if (r == NULL)
        return 1;
    cli_print_table(r);
    PQclear(r);
    return 0;
}

/* ---- status ---------------------------------------------------------------------------- */

/* The status queries give structured rows (arrays, numbers, nested placements) so that
 * --json hands scripts data rather than text; the terminal rendering below formats them. */
static const char SQL_STATUS_NODES[] =
        "SELECT node, liveness, draining,"
        " round(extract(epoch FROM now() - last_heartbeat_at)::numeric, 1) AS heartbeat_age_s,"
        " queue_depth, active_sequences, ready_models AS ready, loading_models AS loading,"
        " down_reason FROM cortex.fleet_status ORDER BY node";
static const char SQL_STATUS_DEVICES[] =
        "SELECT node, device, memory_total_bytes, reserved_bytes, memory_used_bytes,"
        " memory_free_bytes, models FROM cortex.device_status ORDER BY node, device";
/* state: ready (a replica serves), loading, waiting (open demand the scheduler cannot serve
 * yet; waiting_reason is its latest scheduler.wait event), failed (max_load_attempts reached),
 * or not loaded. */
static const char SQL_STATUS_MODELS[] =
        "SELECT m.model,"
        " CASE WHEN m.ready_replicas > 0 THEN 'ready' WHEN m.loading_replicas > 0 THEN 'loading'"
        "      WHEN m.load_failures >= cortex.setting_int('max_load_attempts') THEN 'failed'"
        "      WHEN m.open_demand > 0 THEN 'waiting' ELSE 'not loaded' END AS state,"
        " m.pinned, m.priority, m.min_replicas, m.ready_replicas, m.loading_replicas,"
        " m.load_failures, m.last_load_error, m.open_demand,"
        " CASE WHEN m.open_demand > 0 AND m.ready_replicas = 0 AND m.loading_replicas = 0 THEN"
        "   (SELECT e.reason FROM cortex.events e WHERE e.model = m.model"
        "     AND e.kind = 'scheduler.wait' AND e.at > now() - interval '1 day'"
        "     ORDER BY e.at DESC, e.id DESC LIMIT 1) END AS waiting_reason,"
        " m.memory_bytes,"
        " coalesce((SELECT json_agg(json_build_object('placement_id', p.placement_id,"
        "   'node', p.node, 'state', p.state, 'devices', p.devices,"
        "   'progress_pct', p.progress_pct) ORDER BY p.placement_id)"
        "   FROM cortex.placement_status p"
        "  WHERE p.model = m.model AND p.state NOT IN ('gone', 'failed')), '[]') AS placements"
        " FROM cortex.model_status m WHERE m.enabled ORDER BY m.model";
static const char SQL_STATUS_EVENTS[] =
        "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS') AS at, kind, coalesce(model, '') AS model,"
        " coalesce(node, '') AS node, coalesce(reason, '') AS reason"
        " FROM cortex.recent_events LIMIT $1::integer";
/* Column numbers of the queries above, for the terminal rendering. */
enum { NODE_NAME, NODE_LIVENESS, NODE_DRAINING, NODE_AGE, NODE_QUEUE, NODE_ACTIVE, NODE_DOWN = 8 };
enum { DEV_NODE, DEV_NAME, DEV_TOTAL, DEV_RESERVED, DEV_USED, DEV_FREE, DEV_MODELS };
enum {
    MODEL_NAME,
    MODEL_STATE,
    MODEL_PINNED,
    MODEL_PRIORITY,
    MODEL_MIN,
    MODEL_FAILURES = 7,
    MODEL_ERROR,
    MODEL_DEMAND,
    MODEL_WAITING,
    MODEL_MEMORY,
    MODEL_PLACEMENTS
};

/* "[#######.......]" of width w: part's share of total. */
static void cli_bar(int64_t part, int64_t total, int w)
{
    int filled = total > 0 ? (int)((double)part * w / (double)total + 0.5) : 0;
    if (filled > w)
        filled = w;
    if (filled < 0)
        filled = 0;
    putchar('[');
    for (int i = 0; i < w; i++)
        putchar(i < filled ? '#' : '.');
    putchar(']');
}

static int64_t cli_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* The widest value of a column (at least min). */
static int cli_width(const PGresult *r, int col, int min)
{
    int w = min;
    for (int i = 0; i < PQntuples(r); i++) {
        int len = (int)strlen(PQgetvalue(r, i, col));
        if (len > w)
            w = len;
    }
    return w;
}

/* Prints a PostgreSQL text array ("{a,b}", names quoted when they need it) as "a, b". */
static void cli_print_array(const char *v)
{
    bool quoted = false, in_item = false;
    size_t items = 0;
    for (const char *c = v + (v[0] == '{'); *c; c++) {
        if (!quoted && (*c == '}' || *c == ',')) {
            in_item = false;
            continue;
        }
        if (!in_item && items++ > 0)
            fputs(", ", stdout);
        in_item = true;
        if (*c == '"') {
            quoted = !quoted;
            continue;
        }
        if (quoted && *c == '\\' && c[1])
            c++;
        putchar(*c);
    }
}

static void cli_status_nodes(const PGresult *nodes, const PGresult *devs)
{
    char a[32], b[32], u[32];
    printf("NODES\n");
    if (PQntuples(nodes) == 0)
        printf("  (none registered)\n");
    int w = cli_width(nodes, NODE_NAME, 4);
    for (int i = 0; i < PQntuples(nodes); i++) {
        const char *name = PQgetvalue(nodes, i, NODE_NAME);
        char state[32];
        snprintf(state, sizeof state, "%s%s", PQgetvalue(nodes, i, NODE_LIVENESS),
                 PQgetvalue(nodes, i, NODE_DRAINING)[0] == 't' ? ", draining" : "");
        printf("  %-*s  %-15s  ", w, name, state);
        if (PQgetisnull(nodes, i, NODE_AGE))
            printf("no heartbeat yet");
        else
            printf("heartbeat %ss ago", PQgetvalue(nodes, i, NODE_AGE));
        printf("  queue %s  active %s\n", PQgetvalue(nodes, i, NODE_QUEUE),
               PQgetvalue(nodes, i, NODE_ACTIVE));
        if (!PQgetisnull(nodes, i, NODE_DOWN))
            printf("  %*s  down: %s\n", w, "", PQgetvalue(nodes, i, NODE_DOWN));
        for (int k = 0; k < PQntuples(devs); k++) {
            if (strcmp(PQgetvalue(devs, k, DEV_NODE), name) != 0)
                continue;
            int64_t total = cli_i64(devs, k, DEV_TOTAL), reserved = cli_i64(devs, k, DEV_RESERVED);
            int64_t used = cli_i64(devs, k, DEV_USED);
            printf("  %*s  %-8s ", w, "", PQgetvalue(devs, k, DEV_NAME));
            cli_bar(reserved, total, 24);
            printf(" %s of %s reserved", plan_format_bytes(reserved, a, sizeof a),
                   plan_format_bytes(total, b, sizeof b));
            if (used >= 0)
                printf(", %s in use", plan_format_bytes(used, u, sizeof u));
            const char *models = PQgetvalue(devs, k, DEV_MODELS);
            if (strcmp(models, "{}") != 0) {
                fputs("  (", stdout);
                cli_print_array(models);
                putchar(')');
            }
            putchar('\n');
        }
    }
}

/* One model's live placements ("ready on n1, loading on n2 40.0%"); a loading one with known
 * progress also gets a bar. */
static void cli_print_placements(const char *json)
{
    json_t *list = json_loads(json, 0, NULL);
    size_t i;
    json_t *p;
    double progress = -1;
    json_array_foreach(list, i, p)
    {
        const char *state = json_string_value(json_object_get(p, "state"));
        const char *node = json_string_value(json_object_get(p, "node"));
        json_t *pct = json_object_get(p, "progress_pct");
        printf("%s%s on %s", i ? ", " : "", state ? state : "?", node ? node : "?");
        if (state != NULL && strcmp(state, "loading") == 0 && json_is_number(pct)) {
            printf(" %.1f%%", json_number_value(pct));
            if (progress < 0)
                progress = json_number_value(pct);
        }
    }
    if (progress >= 0) {
        putchar(' ');
        cli_bar((int64_t)(progress * 10), 1000, 16);
    }
    json_decref(list);
}

static void cli_status_models(const PGresult *models)
{
    char a[32];
    printf("\nMODELS\n");
    if (PQntuples(models) == 0)
        printf("  (catalogue empty)\n");
    int w = cli_width(models, MODEL_NAME, 5);
    for (int i = 0; i < PQntuples(models); i++) {
        const char *state = PQgetvalue(models, i, MODEL_STATE);
        printf("  %-*s  %-10s", w, PQgetvalue(models, i, MODEL_NAME), state);
        const char *placements = PQgetvalue(models, i, MODEL_PLACEMENTS);
        if (strcmp(placements, "[]") != 0) {
            fputs("  ", stdout);
            cli_print_placements(placements);
        }
        struct buf policy = BUF_INIT;
        int64_t mem = cli_i64(models, i, MODEL_MEMORY);
        if (mem > 0)
            buf_appendf(&policy, ", needs %s", plan_format_bytes(mem, a, sizeof a));
        if (PQgetvalue(models, i, MODEL_PINNED)[0] == 't')
            buf_appendf(&policy, ", pinned");
        if (strcmp(PQgetvalue(models, i, MODEL_PRIORITY), "0") != 0)
            buf_appendf(&policy, ", priority %s", PQgetvalue(models, i, MODEL_PRIORITY));
        if (strcmp(PQgetvalue(models, i, MODEL_MIN), "0") != 0)
            buf_appendf(&policy, ", min %s replica(s)", PQgetvalue(models, i, MODEL_MIN));
        if (strcmp(PQgetvalue(models, i, MODEL_DEMAND), "0") != 0 && strcmp(state, "ready") != 0)
            buf_appendf(&policy, ", demanded");
        if (policy.len > 0)
            printf("  (%s)", buf_cstr(&policy) + 2);
        buf_free(&policy);
        putchar('\n');
        if (!PQgetisnull(models, i, MODEL_WAITING))
            printf("  %*s  waiting: %s\n", w, "", PQgetvalue(models, i, MODEL_WAITING));
        if (strcmp(PQgetvalue(models, i, MODEL_FAILURES), "0") != 0)
            printf("  %*s  %s failed load(s): %s\n", w, "", PQgetvalue(models, i, MODEL_FAILURES),
                   PQgetisnull(models, i, MODEL_ERROR) ? "no reason recorded"
                                                       : PQgetvalue(models, i, MODEL_ERROR));
    }
}

static void cli_status_events(const PGresult *events)
{
    printf("\nRECENT EVENTS\n");
    if (PQntuples(events) == 0)
        printf("  (none in the last 24 hours)\n");
    int wk = cli_width(events, 1, 4), wm = cli_width(events, 2, 1), wn = cli_width(events, 3, 1);
    for (int i = PQntuples(events) - 1; i >= 0; i--) {
        const char *reason = PQgetvalue(events, i, 4);
        printf("  %s  %-*s  %-*s  %-*s%s%s\n", PQgetvalue(events, i, 0), wk,
               PQgetvalue(events, i, 1), wm, PQgetvalue(events, i, 2), reason[0] ? wn : 0,
               PQgetvalue(events, i, 3), reason[0] ? "  " : "", reason);
    }
}

static int cli_status(struct cli *c)
{
    const char *limit[] = {"10"};
    if (c->json) {
        struct buf sql = BUF_INIT;
        buf_appendf(&sql,
                    "SELECT json_build_object("
                    "'nodes', (SELECT coalesce(json_agg(t), '[]') FROM (%s) t),"
                    "'devices', (SELECT coalesce(json_agg(t), '[]') FROM (%s) t),"
                    "'models', (SELECT coalesce(json_agg(t), '[]') FROM (%s) t),"
                    "'events', (SELECT coalesce(json_agg(t), '[]') FROM (%s) t))",
                    SQL_STATUS_NODES, SQL_STATUS_DEVICES, SQL_STATUS_MODELS, SQL_STATUS_EVENTS);
        PGresult *r = cli_query(c, buf_cstr(&sql), 1, limit);
        buf_free(&sql);
        if (r == NULL)
            return 1;
        printf("%s\n", PQgetvalue(r, 0, 0));
        PQclear(r);
        return 0;
    }
    /* One snapshot, so the sections agree with each other. */
    if (db_exec_command(c->db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL) <
        0) {
        cli_print_error(db_last_error(c->db));
        return 1;
    }
    PGresult *nodes = cli_query(c, SQL_STATUS_NODES, 0, NULL);
    PGresult *devs = nodes ? cli_query(c, SQL_STATUS_DEVICES, 0, NULL) : NULL;
    PGresult *models = devs ? cli_query(c, SQL_STATUS_MODELS, 0, NULL) : NULL;
    PGresult *events = models ? cli_query(c, SQL_STATUS_EVENTS, 1, limit) : NULL;
    int status = 1;
    if (events == NULL)
        goto out;
    cli_status_nodes(nodes, devs);
    cli_status_models(models);
    cli_status_events(events);
    status = 0;
out:
    PQclear(nodes);
    PQclear(devs);
    PQclear(models);
    PQclear(events);
    if (db_exec_command(c->db, "ROLLBACK", 0, NULL, NULL) < 0)
        status = 1;
    return status;
}

/* ---- actions ----------------------------------------------------------------------------- */

/* Runs an admin function and reports it: "<done>" or {"ok": true, "result": value}. */
static int cli_call(struct cli *c, const char *sql, int n, const char *const *params,
                    const char *done)
{
    PGresult *r = cli_query(c, sql, n, params);
    if (r == NULL)
        return 1;
    const char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "";
    if (c->json) {
        struct buf b = BUF_INIT;
        buf_append_str(&b, "{\"ok\":true,\"result\":");
        if (v[0])
            buf_append_json_string(&b, v, strlen(v));
        else
            buf_append_str(&b, "null");
        buf_append_str(&b, "}");
        printf("%s\n", buf_cstr(&b));
        buf_free(&b);
    } else {
        printf(done, v);
        putchar('\n');
    }
    PQclear(r);
    return 0;
}

static int cli_keys(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return CLI_USAGE;
    if (strcmp(argv[0], "list") == 0 && argc == 1)
        return cli_table(c,
                         "SELECT id, name, prefix, requests_per_minute AS rpm,"
                         " tokens_per_minute AS tpm, to_char(created_at, 'YYYY-MM-DD HH24:MI')"
                         " AS created, coalesce(to_char(expires_at, 'YYYY-MM-DD HH24:MI'), '')"
                         " AS expires, coalesce(to_char(revoked_at, 'YYYY-MM-DD HH24:MI'), '')"
                         " AS revoked FROM cortex.api_keys ORDER BY id",
                         0, NULL);
    if (strcmp(argv[0], "create") == 0 && argc >= 2) {
        const char *params[4] = {argv[1], NULL, NULL, NULL};
        for (int i = 2; i < argc; i++) {
            int slot = strcmp(argv[i], "--rpm") == 0       ? 1
                       : strcmp(argv[i], "--tpm") == 0     ? 2
                       : strcmp(argv[i], "--expires") == 0 ? 3
                                                           : 0;
            if (slot == 0 || i + 1 >= argc)
                return CLI_USAGE;
            params[slot] = argv[++i];
        }
        const char *sql = "SELECT id, prefix, secret FROM cortex.create_api_key($1,"
                          " $2::integer, $3::integer, $4::interval)";
        if (c->json)
            return cli_print_json_rows(c, sql, 4, params);
        PGresult *r = cli_query(c, sql, 4, params);
        if (r == NULL)
            return 1;
        printf("created key %s (id %s) for \"%s\"\nsecret (shown only now): %s\n",
               PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0), argv[1], PQgetvalue(r, 0, 2));
        PQclear(r);
        return 0;
    }
    if (strcmp(argv[0], "limits") == 0 && argc >= 2) {
        const char *params[3] = {argv[1], NULL, NULL};
        for (int i = 2; i < argc; i++) {
            int slot = strcmp(argv[i], "--rpm") == 0 ? 1 : strcmp(argv[i], "--tpm") == 0 ? 2 : 0;
            if (slot == 0 || i + 1 >= argc)
                return CLI_USAGE;
            params[slot] = argv[++i];
        }
        return cli_call(c, "SELECT cortex.set_api_key_limits($1::bigint, $2::integer, $3::integer)",
                        3, params, "limits set");
    }
    if (strcmp(argv[0], "revoke") == 0 && argc == 2) {
        const char *params[] = {argv[1]};
        bool numeric = argv[1][0] != '\0' && strspn(argv[1], "0123456789") == strlen(argv[1]);
        return cli_call(c,
                        numeric ? "SELECT cortex.revoke_api_key($1::bigint)"
                                : "SELECT cortex.revoke_api_key($1::text)",
                        1, params, "revoked");
    }
    return CLI_USAGE;
}

/* ---- migrate ----------------------------------------------------------------------------- */

/* The folder holding ops/migrate and sql/: $CORTEX_SQL_DIR's parent, else the first folder
 * above this binary that has both. Caller frees; NULL when none. */
static char *cli_find_root(char **sql_dir)
{
    const char *env = getenv("CORTEX_SQL_DIR");
    if (env != NULL && env[0] != '\0') {
        *sql_dir = xstrdup(env);
        char *copy = xstrdup(env); /* CORTEX_SQL_DIR=/x/sql: the script is /x/ops/migrate */
        char *parent = xstrdup(dirname(copy));
        free(copy);
        return parent;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *dir = xstrdup(dirname(exe));
    for (int up = 0; up < 6; up++) {
        char *script = xasprintf("%s/ops/migrate", dir);
        char *sql = xasprintf("%s/sql", dir);
        bool found = access(script, X_OK) == 0 && access(sql, R_OK) == 0;
        free(script);
        if (found) {
            *sql_dir = sql;
            return dir;
        }
        free(sql);
        char *copy = xstrdup(dir); /* dirname may write into its argument */
        char *parent = xstrdup(dirname(copy));
        free(copy);
        bool top = strcmp(parent, dir) == 0;
        free(dir);
        dir = parent;
        if (top)
            break;
    }
    free(dir);
    return NULL;
}

static int cli_migrate(struct cli *c, int argc, char **argv)
{
    char *sql_dir = NULL;
    char *root = cli_find_root(&sql_dir);
    if (root == NULL) {
        fprintf(stderr, "cortex: cannot find ops/migrate: set CORTEX_SQL_DIR to the sql/ folder "
                        "of a Cortex checkout or installation\n");
        return 1;
    }
    char *script = xasprintf("%s/ops/migrate", root);
    char *args[8];
    int n = 0;
    args[n++] = script;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") != 0 && strcmp(argv[i], "--status") != 0) {
            free(script);
            free(root);
            free(sql_dir);
            return CLI_USAGE;
        }
        if (n < 4)
            args[n++] = argv[i];
    }
    args[n++] = "--dir";
    args[n++] = sql_dir;
    if (c->conninfo[0] != '\0')
        args[n++] = (char *)c->conninfo;
    args[n] = NULL;
    fflush(stdout);
    execv(script, args);
    fprintf(stderr, "cortex: cannot run %s: %s\n", script, strerror(errno));
    free(script);
    free(root);
    free(sql_dir);
    return 1;
}

/* ---- main -------------------------------------------------------------------------------- */

static int cli_dispatch(struct cli *c, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "migrate") == 0)
        return cli_migrate(c, argc - 1, argv + 1);
    if (!cli_connect(c))
        return 1;
    const char *p1[] = {argc > 1 ? argv[1] : NULL, argc > 2 ? argv[2] : NULL};
    if (strcmp(cmd, "status") == 0 && argc == 1)
        return cli_status(c);
    if (strcmp(cmd, "models") == 0 && argc == 1)
        return cli_table(c,
                         "SELECT model, CASE WHEN ready_replicas > 0 THEN 'ready'"
                         " WHEN loading_replicas > 0 THEN 'loading'"
                         " WHEN load_failures > 0 THEN 'failed ' || load_failures || 'x'"
                         " WHEN open_demand > 0 THEN 'waiting'"
                         " ELSE 'not loaded' END AS state, ready_replicas AS ready,"
                         " loading_replicas AS loading, pinned, priority, min_replicas AS min,"
                         " max_replicas AS max, idle_ttl::text AS idle_ttl, tensor_parallel AS tp,"
                         " pg_size_pretty(memory_bytes) AS memory,"
                         " array_to_string(files_on, ',') AS files_on,"
                         " array_to_string(aliases, ',') AS aliases,"
                         " coalesce(last_load_error, '') AS last_error"
                         " FROM cortex.model_status WHERE enabled ORDER BY model",
                         0, NULL);
    if ((strcmp(cmd, "pin") == 0 || strcmp(cmd, "unpin") == 0) && argc == 2)
        return cli_call(
                c, cmd[0] == 'p' ? "SELECT cortex.pin_model($1)" : "SELECT cortex.unpin_model($1)",
                1, p1, cmd[0] == 'p' ? "pinned" : "unpinned");
    if (strcmp(cmd, "load") == 0 && (argc == 2 || argc == 3))
        return cli_call(c, "SELECT cortex.request_load($1, $2)", 2, p1,
                        "load requested (demand %s)");
    if (strcmp(cmd, "unload") == 0 && (argc == 2 || argc == 3))
        return cli_call(c, "SELECT cortex.request_unload($1, $2)", 2, p1,
                        "unload requested (demand %s)");
    if ((strcmp(cmd, "drain") == 0 || strcmp(cmd, "undrain") == 0) && argc == 2)
        return cli_call(c,
                        cmd[0] == 'd' ? "SELECT cortex.drain_node($1)"
                                      : "SELECT cortex.undrain_node($1)",
                        1, p1, cmd[0] == 'd' ? "draining" : "no longer draining");
    if (strcmp(cmd, "keys") == 0)
        return cli_keys(c, argc - 1, argv + 1);
    if (strcmp(cmd, "events") == 0 && argc <= 2) {
        const char *limit[] = {argc == 2 ? argv[1] : "20"};
        return cli_table(c,
                         "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS') AS at, kind, actor,"
                         " coalesce(epoch::text, '') AS epoch, coalesce(model, '') AS model,"
                         " coalesce(node, '') AS node, coalesce(reason, '') AS reason"
                         " FROM cortex.recent_events LIMIT $1::integer",
                         1, limit);
    }
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    struct cli c = {.conninfo = getenv("CORTEX_PG") ? getenv("CORTEX_PG") : ""};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            c.json = true;
        } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            c.conninfo = argv[++i];
        } else if (strncmp(argv[i], "--db=", 5) == 0) {
            c.conninfo = argv[i] + 5;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            cli_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "cortex: unknown option %s\n", argv[i]);
            cli_usage(stderr);
            return CLI_USAGE;
        }
    }
    if (i >= argc) {
        cli_usage(stderr);
        return CLI_USAGE;
    }
    int status = cli_dispatch(&c, argc - i, argv + i);
    if (status == CLI_USAGE) {
        fprintf(stderr, "cortex: bad use of '%s'\n", argv[i]);
        cli_usage(stderr);
    }
    db_destroy(c.db);
    return status;
}
