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

static const char SQL_STATUS_NODES[] =
        "SELECT node, liveness, draining, heartbeat_age::text AS heartbeat_age, queue_depth,"
        " active_sequences, array_to_string(ready_models, ', ') AS ready,"
        " array_to_string(loading_models, ', ') AS loading, down_reason"
        " FROM cortex.fleet_status ORDER BY node";
static const char SQL_STATUS_DEVICES[] =
        "SELECT node, device, memory_total_bytes, reserved_bytes, memory_used_bytes,"
        " array_to_string(models, ', ') AS models"
        " FROM cortex.device_status ORDER BY node, device";
static const char SQL_STATUS_MODELS[] =
        "SELECT m.model, m.pinned, m.priority, m.ready_replicas, m.loading_replicas,"
        " m.load_failures, m.last_load_error, m.open_demand, m.memory_bytes,"
        " coalesce((SELECT string_agg(p.state || ' on ' || p.node ||"
        "   CASE WHEN p.state = 'loading' AND p.progress_pct IS NOT NULL"
        "        THEN ' ' || p.progress_pct || '%' ELSE '' END, ', ' ORDER BY p.placement_id)"
        "   FROM cortex.placement_status p"
        "  WHERE p.model = m.model AND p.state NOT IN ('gone', 'failed')), '') AS placements"
        " FROM cortex.model_status m WHERE m.enabled ORDER BY m.model";
static const char SQL_STATUS_EVENTS[] =
        "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS') AS at, kind, coalesce(model, '') AS model,"
        " coalesce(node, '') AS node, coalesce(reason, '') AS reason"
        " FROM cortex.recent_events LIMIT $1::integer";

/* "[#######.......]" of width w: reserved share of total. */
static void cli_bar(int64_t part, int64_t total, int w)
{
    int filled = total > 0 ? (int)((double)part * w / (double)total + 0.5) : 0;
    if (filled > w)
        filled = w;
    putchar('[');
    for (int i = 0; i < w; i++)
        putchar(i < filled ? '#' : '.');
    putchar(']');
}

static int64_t cli_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : strtoll(PQgetvalue(r, row, col), NULL, 10);
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
    PGresult *nodes = cli_query(c, SQL_STATUS_NODES, 0, NULL);
    PGresult *devs = nodes ? cli_query(c, SQL_STATUS_DEVICES, 0, NULL) : NULL;
    PGresult *models = devs ? cli_query(c, SQL_STATUS_MODELS, 0, NULL) : NULL;
    PGresult *events = models ? cli_query(c, SQL_STATUS_EVENTS, 1, limit) : NULL;
    int status = 1;
    if (events == NULL)
        goto out;
    char a[32], b[32], u[32];
    printf("NODES\n");
    if (PQntuples(nodes) == 0)
        printf("  (none registered)\n");
    for (int i = 0; i < PQntuples(nodes); i++) {
        const char *name = PQgetvalue(nodes, i, 0);
        printf("  %-20s %-5s%s  heartbeat %s ago  queue %s  active %s\n", name,
               PQgetvalue(nodes, i, 1), PQgetvalue(nodes, i, 2)[0] == 't' ? " draining" : "",
               PQgetisnull(nodes, i, 3) ? "never" : PQgetvalue(nodes, i, 3),
               PQgetvalue(nodes, i, 4), PQgetvalue(nodes, i, 5));
        if (!PQgetisnull(nodes, i, 8))
            printf("    down: %s\n", PQgetvalue(nodes, i, 8));
        for (int k = 0; k < PQntuples(devs); k++) {
            if (strcmp(PQgetvalue(devs, k, 0), name) != 0)
                continue;
            int64_t total = cli_i64(devs, k, 2), reserved = cli_i64(devs, k, 3);
            int64_t used = cli_i64(devs, k, 4);
            printf("    %-7s ", PQgetvalue(devs, k, 1));
            cli_bar(reserved, total, 24);
            printf(" %s of %s reserved", plan_format_bytes(reserved, a, sizeof a),
                   plan_format_bytes(total, b, sizeof b));
            if (used >= 0)
                printf(", %s in use", plan_format_bytes(used, u, sizeof u));
            if (PQgetvalue(devs, k, 5)[0])
                printf("  (%s)", PQgetvalue(devs, k, 5));
            putchar('\n');
        }
    }
    printf("\nMODELS\n");
    if (PQntuples(models) == 0)
        printf("  (catalogue empty)\n");
    for (int i = 0; i < PQntuples(models); i++) {
        const char *placements = PQgetvalue(models, i, 9);
        int64_t mem = cli_i64(models, i, 8);
        printf("  %-28s %-24s", PQgetvalue(models, i, 0),
               placements[0] ? placements : "not loaded");
        if (mem > 0)
            printf(" needs %s", plan_format_bytes(mem, a, sizeof a));
        if (PQgetvalue(models, i, 1)[0] == 't')
            printf(", pinned");
        if (strcmp(PQgetvalue(models, i, 2), "0") != 0)
            printf(", priority %s", PQgetvalue(models, i, 2));
        if (strcmp(PQgetvalue(models, i, 7), "0") != 0)
            printf(", demanded");
        if (strcmp(PQgetvalue(models, i, 5), "0") != 0)
            printf(", %s failed load(s): %s", PQgetvalue(models, i, 5), PQgetvalue(models, i, 6));
        putchar('\n');
    }
    printf("\nRECENT EVENTS\n");
    if (PQntuples(events) == 0)
        printf("  (none in the last 24 hours)\n");
    for (int i = PQntuples(events) - 1; i >= 0; i--)
        printf("  %s  %-22s %-16s %-10s %s\n", PQgetvalue(events, i, 0), PQgetvalue(events, i, 1),
               PQgetvalue(events, i, 2), PQgetvalue(events, i, 3), PQgetvalue(events, i, 4));
    status = 0;
out:
    PQclear(nodes);
    PQclear(devs);
    PQclear(models);
    PQclear(events);
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
