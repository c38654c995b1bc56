/*
 * scheduler/fleet.c — the fleet snapshot read from PostgreSQL, and the leader's fenced writes.
 *
 * Reading: five queries (settings, nodes, devices, models, placements, demand) inside one
 * REPEATABLE READ READ ONLY transaction. Ages are computed by the database (now() minus a
 * database-stamped time, in milliseconds), so no clock of this host is ever compared with the
 * database's. Integer arrays come back as PostgreSQL array text ("{1,2}") and are parsed here.
 *
 * Writing: BEGIN; SELECT cortex.lease_check($epoch); the action's function; the event; COMMIT.
 * lease_check holds the lease row FOR SHARE until COMMIT, so no successor can take over between
 * the check and the commit. Any failure rolls the whole action back.
 */
#include "fleet.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "buf.h"
#include "jsonutil.h"
#include "log.h"
#include "xalloc.h"

#define MIB ((int64_t)1 << 20)

/* ---- reading ---------------------------------------------------------------------------- */

static const char SQL_SETTINGS[] =
        "SELECT cortex.setting('eviction_strategy'), cortex.setting_int('defrag_after_cycles'),"
        " cortex.setting_int('max_load_attempts'), cortex.setting_int('device_memory_reserve_mib'),"
        " (extract(epoch FROM cortex.setting_interval('load_timeout')) * 1000)::bigint,"
        " (extract(epoch FROM cortex.setting_interval('demand_ttl')) * 1000)::bigint,"
        " cortex.setting_bool('evict_in_flight'),"
        " (extract(epoch FROM cortex.setting_interval('scheduler_tick')) * 1000)::bigint,"
        " (extract(epoch FROM cortex.setting_interval('lease_duration')) * 1000)::bigint,"
        " (extract(epoch FROM cortex.setting_interval('heartbeat_interval')) * 1000)::bigint,"
        " (extract(epoch FROM cortex.setting_interval('heartbeat_grace')) * 1000)::bigint";

static const char SQL_TIMING[] =
        "SELECT (extract(epoch FROM cortex.setting_interval('scheduler_tick')) * 1000)::bigint,"
        " (extract(epoch FROM cortex.setting_interval('lease_duration')) * 1000)::bigint";

static const char SQL_NODES[] = "SELECT n.id, n.name, n.endpoint, n.draining,"
                                " CASE WHEN n.marked_down_at IS NOT NULL THEN 'down'"
                                "      ELSE cortex.node_liveness(n.last_heartbeat_at) END,"
                                " n.queue_depth, n.active_sequences"
                                " FROM cortex.nodes n ORDER BY n.id";

static const char SQL_DEVICES[] = "SELECT g.node_id, g.id, g.kind, g.ordinal, g.memory_total_bytes,"
                                  " g.memory_used_bytes, g.memory_free_bytes"
                                  " FROM cortex.gpus g ORDER BY g.node_id, g.kind DESC, g.ordinal";

/* Memory need: the operator's figure, else the nodes' largest estimate, else the file size
 * (weights only: an underestimate the neuron's own budget check will catch). Nodes where a
 * load failed within demand_ttl (not because the node died or restarted) are tried last. */
static const char SQL_MODELS[] =
        "SELECT m.id, m.name,"
        " COALESCE(m.memory_bytes, (SELECT max(nm.memory_bytes) FROM cortex.node_models nm"
        "                            WHERE nm.name = m.name),"
        "          (SELECT max(nm.size_bytes) FROM cortex.node_models nm WHERE nm.name = m.name"
        "             AND nm.size_bytes > 0), m.size_bytes, 0),"
        " m.tensor_parallel, m.priority, m.pinned, m.min_replicas, m.max_replicas,"
        " (extract(epoch FROM COALESCE(m.idle_ttl, cortex.setting_interval('idle_ttl')))"
        "  * 1000)::bigint,"
        " m.load_failures, m.last_load_error,"
        " ARRAY(SELECT nm.node_id FROM cortex.node_models nm WHERE nm.name = m.name"
        "       ORDER BY nm.node_id),"
        " ARRAY(SELECT DISTINCT p.node_id FROM cortex.placements p"
        "        WHERE p.model_id = m.id AND p.state = 'failed'"
        "          AND p.ended_at > now() - cortex.setting_interval('demand_ttl')"
        "          AND p.reason NOT LIKE 'node down:%' AND p.reason NOT LIKE 'node restarted%'"
        "        ORDER BY p.node_id)"
        " FROM cortex.models m WHERE m.enabled ORDER BY m.id";

static const char SQL_PLACEMENTS[] =
        "SELECT p.id, p.model_id, p.node_id, p.state, COALESCE(p.memory_bytes, 0),"
        " (extract(epoch FROM now() - p.state_changed_at) * 1000)::bigint,"
        " (extract(epoch FROM now() - COALESCE(p.last_used_at, p.ready_at, p.state_changed_at))"
        "  * 1000)::bigint,"
        " COALESCE(p.replaces_id, 0),"
        " ARRAY(SELECT pg.gpu_id FROM cortex.placement_gpus pg WHERE pg.placement_id = p.id"
        "       ORDER BY pg.rank)"
        " FROM cortex.placements p"
        " WHERE p.state IN ('requested', 'loading', 'ready', 'unloading') ORDER BY p.id";

static const char SQL_DEMANDS[] =
        "SELECT d.id, d.model_id, d.kind, COALESCE(d.node_id, 0),"
        " (extract(epoch FROM now() - d.last_wanted_at) * 1000)::bigint,"
        " m.last_load_error_at IS NOT NULL AND d.created_at > m.last_load_error_at"
        " FROM cortex.demand d JOIN cortex.models m ON m.id = d.model_id"
        " WHERE d.state = 'open' ORDER BY d.id";

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static const char *col_str(struct arena *a, const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : arena_strdup(a, PQgetvalue(r, row, col));
}

/* Parses a PostgreSQL integer array ("{1,2,3}", "{}") into an arena array. */
static int64_t *col_i64_array(struct arena *a, const PGresult *r, int row, int col, size_t *n)
{
    const char *s = PQgetisnull(r, row, col) ? "{}" : PQgetvalue(r, row, col);
    size_t count = 0;
    for (const char *c = s; *c; c++)
        count += *c == ',';
    count += strlen(s) > 2 ? 1 : 0;
    int64_t *out = arena_calloc(a, count ? count : 1, sizeof *out);
    *n = 0;
    const char *c = s;
    while (*c && *n < count) {
        while (*c && (*c < '0' || *c > '9') && *c != '-')
            c++;
        if (!*c)
            break;
        char *end;
        out[(*n)++] = strtoll(c, &end, 10);
        c = end;
    }
    return out;
}

static PGresult *fleet_query(db_t *db, const char *sql)
{
    return db_exec_params(db, sql, 0, NULL);
}

/* Ends a failed transaction: keeps the failure's message and SQLSTATE, then rolls back (or
 * drops the connection when even that fails, so the next user starts from a clean session). */
static void fleet_abort(db_t *db, char **errmsg, char sqlstate[6])
{
    if (errmsg != NULL) {
        free(*errmsg);
        *errmsg = xstrdup(db_last_error(db));
    }
    if (sqlstate != NULL)
        snprintf(sqlstate, 6, "%s", db_last_sqlstate(db));
    if (db_is_connected(db) && db_exec_command(db, "ROLLBACK", 0, NULL, NULL) < 0)
        db_reset(db);
}

static int fleet_read_settings(db_t *db, struct fleet *f)
{
    PGresult *r = fleet_query(db, SQL_SETTINGS);
    if (r == NULL)
        return -1;
    struct fleet_settings *s = &f->settings;
    if (plan_eviction_parse(PQgetvalue(r, 0, 0), &s->plan.eviction) < 0) {
        LOG_WARN("unknown eviction_strategy '%s': using lru", PQgetvalue(r, 0, 0));
        s->plan.eviction = PLAN_EVICTION_LRU;
    }
    s->plan.defrag_after_cycles = (int)col_i64(r, 0, 1);
    s->plan.max_load_attempts = (int)col_i64(r, 0, 2);
    s->plan.device_reserve_bytes = col_i64(r, 0, 3) * MIB;
    s->plan.load_timeout_ms = col_i64(r, 0, 4);
    s->plan.demand_ttl_ms = col_i64(r, 0, 5);
    s->plan.evict_in_flight = col_bool(r, 0, 6);
    s->plan.require_files = true;
    s->tick_ms = col_i64(r, 0, 7);
    s->lease_ms = col_i64(r, 0, 8);
    s->heartbeat_interval_ms = col_i64(r, 0, 9);
    s->heartbeat_grace_ms = col_i64(r, 0, 10);
    PQclear(r);
    return 0;
}

static enum plan_node_state liveness_state(const char *liveness)
{
    if (strcmp(liveness, "alive") == 0)
        return PLAN_NODE_ALIVE;
    if (strcmp(liveness, "late") == 0)
        return PLAN_NODE_LATE;
    if (strcmp(liveness, "dead") == 0)
        return PLAN_NODE_DEAD;
    return PLAN_NODE_DOWN;
}

static int fleet_read_nodes(db_t *db, struct fleet *f)
{
    PGresult *r = fleet_query(db, SQL_NODES);
    if (r == NULL)
        return -1;
    int n = PQntuples(r);
    f->nodes = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->nodes);
    f->node_info = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->node_info);
    f->device_info = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->device_info);
    for (int i = 0; i < n; i++) {
        struct plan_node *node = &f->nodes[i];
        struct fleet_node_info *info = &f->node_info[i];
        node->id = col_i64(r, i, 0);
        node->name = col_str(f->arena, r, i, 1);
        info->endpoint = col_str(f->arena, r, i, 2);
        node->draining = col_bool(r, i, 3);
        info->liveness = col_str(f->arena, r, i, 4);
        node->state = liveness_state(info->liveness);
        info->queue_depth = (int)col_i64(r, i, 5);
        info->active_sequences = (int)col_i64(r, i, 6);
    }
    f->n_nodes = (size_t)n;
    PQclear(r);

    r = fleet_query(db, SQL_DEVICES);
    if (r == NULL)
        return -1;
    int rows = PQntuples(r);
    /* Rows come ordered by node: count each node's devices, then fill. */
    size_t *counts = xcalloc(f->n_nodes ? f->n_nodes : 1, sizeof *counts);
    for (int pass = 0; pass < 2; pass++) {
        size_t ni = 0;
        for (int i = 0; i < rows; i++) {
            int64_t node_id = col_i64(r, i, 0);
            while (ni < f->n_nodes && f->nodes[ni].id < node_id)
                ni++;
            if (ni == f->n_nodes || f->nodes[ni].id != node_id)
                continue;
            if (pass == 0) {
                counts[ni]++;
                continue;
            }
            struct plan_node *node = &f->nodes[ni];
            struct plan_device *d = (struct plan_device *)&node->devices[node->n_devices];
            struct fleet_device_info *di = &f->device_info[ni][node->n_devices];
            node->n_devices++;
            d->id = col_i64(r, i, 1);
            d->cpu = strcmp(PQgetvalue(r, i, 2), "cpu") == 0;
            d->ordinal = (int)col_i64(r, i, 3);
            d->total_bytes = col_i64(r, i, 4);
            di->used_bytes = PQgetisnull(r, i, 5) ? -1 : col_i64(r, i, 5);
            di->free_bytes = PQgetisnull(r, i, 6) ? -1 : col_i64(r, i, 6);
        }
        if (pass == 0) {
            for (size_t k = 0; k < f->n_nodes; k++) {
                f->nodes[k].devices = arena_calloc(f->arena, counts[k] ? counts[k] : 1,
                                                   sizeof(struct plan_device));
                f->device_info[k] = arena_calloc(f->arena, counts[k] ? counts[k] : 1,
                                                 sizeof(struct fleet_device_info));
            }
        }
    }
    free(counts);
    PQclear(r);
    return 0;
}

static int fleet_read_models(db_t *db, struct fleet *f)
{
    PGresult *r = fleet_query(db, SQL_MODELS);
    if (r == NULL)
        return -1;
    int n = PQntuples(r);
    f->models = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->models);
    for (int i = 0; i < n; i++) {
        struct plan_model *m = &f->models[i];
        m->id = col_i64(r, i, 0);
        m->name = col_str(f->arena, r, i, 1);
        m->memory_bytes = col_i64(r, i, 2);
        m->tensor_parallel = (int)col_i64(r, i, 3);
        m->priority = (int)col_i64(r, i, 4);
        m->pinned = col_bool(r, i, 5);
        m->min_replicas = (int)col_i64(r, i, 6);
        m->max_replicas = (int)col_i64(r, i, 7);
        m->idle_ttl_ms = col_i64(r, i, 8);
        m->load_failures = (int)col_i64(r, i, 9);
        m->last_load_error = col_str(f->arena, r, i, 10);
        m->file_node_ids = col_i64_array(f->arena, r, i, 11, &m->n_file_nodes);
        m->failed_node_ids = col_i64_array(f->arena, r, i, 12, &m->n_failed_nodes);
    }
    f->n_models = (size_t)n;
    PQclear(r);
    return 0;
}

static enum plan_placement_state placement_state(const char *s)
{
    if (strcmp(s, "requested") == 0)
        return PLAN_PLACEMENT_REQUESTED;
    if (strcmp(s, "loading") == 0)
        return PLAN_PLACEMENT_LOADING;
    if (strcmp(s, "ready") == 0)
        return PLAN_PLACEMENT_READY;
    return PLAN_PLACEMENT_UNLOADING;
}

static int fleet_read_placements(db_t *db, struct fleet *f)
{
    PGresult *r = fleet_query(db, SQL_PLACEMENTS);
    if (r == NULL)
        return -1;
    int n = PQntuples(r);
    f->placements = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->placements);
    for (int i = 0; i < n; i++) {
        struct plan_placement *p = &f->placements[i];
        p->id = col_i64(r, i, 0);
        p->model_id = col_i64(r, i, 1);
        p->node_id = col_i64(r, i, 2);
        p->state = placement_state(PQgetvalue(r, i, 3));
        p->memory_bytes = col_i64(r, i, 4);
        p->in_state_ms = col_i64(r, i, 5);
        p->idle_ms = col_i64(r, i, 6);
        p->replaces_id = col_i64(r, i, 7);
        p->device_ids = col_i64_array(f->arena, r, i, 8, &p->n_devices);
        const struct fleet_node_info *info = NULL;
        p->in_flight = -1;
        if (fleet_find_node(f, p->node_id, &info) != NULL && info->active_sequences == 0 &&
            info->queue_depth == 0)
            p->in_flight = 0;
    }
    f->n_placements = (size_t)n;
    PQclear(r);
    return 0;
}

static int fleet_read_demands(db_t *db, struct fleet *f)
{
    PGresult *r = fleet_query(db, SQL_DEMANDS);
    if (r == NULL)
        return -1;
    int n = PQntuples(r);
    f->demands = arena_calloc(f->arena, (size_t)(n ? n : 1), sizeof *f->demands);
    for (int i = 0; i < n; i++) {
        struct plan_demand *d = &f->demands[i];
        d->id = col_i64(r, i, 0);
        d->model_id = col_i64(r, i, 1);
        d->kind =
                strcmp(PQgetvalue(r, i, 2), "unload") == 0 ? PLAN_DEMAND_UNLOAD : PLAN_DEMAND_LOAD;
        d->node_id = col_i64(r, i, 3);
        d->wanted_ago_ms = col_i64(r, i, 4);
        d->after_failure = col_bool(r, i, 5);
    }
    f->n_demands = (size_t)n;
    PQclear(r);
    return 0;
}

int fleet_read(db_t *db, struct fleet **out, char **errmsg)
{
    *out = NULL;
    *errmsg = NULL;
    struct fleet *f = xcalloc(1, sizeof *f);
    f->arena = arena_create(0);
    bool in_tx = false;
    if (db_exec_command(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL) < 0) {
        *errmsg = xstrdup(db_last_error(db));
        goto fail;
    }
    in_tx = true;
    if (fleet_read_settings(db, f) < 0 || fleet_read_nodes(db, f) < 0 ||
        fleet_read_models(db, f) < 0 || fleet_read_placements(db, f) < 0 ||
        fleet_read_demands(db, f) < 0)
        goto fail;
    if (db_exec_command(db, "COMMIT", 0, NULL, NULL) < 0)
        goto fail;
    f->snapshot = (struct plan_fleet){.nodes = f->nodes,
                                      .n_nodes = f->n_nodes,
                                      .models = f->models,
                                      .n_models = f->n_models,
                                      .placements = f->placements,
                                      .n_placements = f->n_placements,
                                      .demands = f->demands,
                                      .n_demands = f->n_demands};
    *out = f;
    return 0;
fail:
    if (in_tx)
        fleet_abort(db, errmsg, NULL);
    fleet_destroy(f);
    return -1;
}

int fleet_read_timing(db_t *db, int64_t *tick_ms, int64_t *lease_ms, char **errmsg)
{
    *errmsg = NULL;
    PGresult *r = fleet_query(db, SQL_TIMING);
    if (r == NULL) {
        *errmsg = xstrdup(db_last_error(db));
        return -1;
    }
    *tick_ms = col_i64(r, 0, 0);
    *lease_ms = col_i64(r, 0, 1);
    PQclear(r);
    return 0;
}

void fleet_destroy(struct fleet *f)
{
    if (f == NULL)
        return;
    arena_destroy(f->arena);
    free(f);
}

const struct plan_node *fleet_find_node(const struct fleet *f, int64_t id,
                                        const struct fleet_node_info **info)
{
    for (size_t i = 0; i < f->n_nodes; i++) {
        if (f->nodes[i].id == id) {
            if (info != NULL)
                *info = &f->node_info[i];
            return &f->nodes[i];
        }
    }
    return NULL;
}

const struct plan_model *fleet_find_model(const struct fleet *f, int64_t id)
{
    for (size_t i = 0; i < f->n_models; i++) {
        if (f->models[i].id == id)
            return &f->models[i];
    }
    return NULL;
}

struct plan_placement *fleet_find_placement(const struct fleet *f, int64_t id)
{
    for (size_t i = 0; i < f->n_placements; i++) {
        if (f->placements[i].id == id)
            return &f->placements[i];
    }
    return NULL;
}

/* ---- writing ---------------------------------------------------------------------------- */

static enum fleet_result fleet_classify(db_t *db, const char *sqlstate)
{
    if (strcmp(sqlstate, "CX001") == 0)
        return FLEET_STALE;
    if (strcmp(sqlstate, "CX002") == 0 || strcmp(sqlstate, "55000") == 0 ||
        strcmp(sqlstate, "42704") == 0 || strcmp(sqlstate, "22023") == 0 ||
        strcmp(sqlstate, "23505") == 0)
        return FLEET_REJECTED;
    (void)db;
    return FLEET_ERROR;
}

/* Fails the open transaction: rolls back and classifies the error that ended it. */
static enum fleet_result tx_fail(db_t *db, char **errmsg)
{
    char sqlstate[6] = "";
    char *msg = NULL;
    fleet_abort(db, &msg, sqlstate);
    enum fleet_result res = fleet_classify(db, sqlstate);
    if (res == FLEET_ERROR)
        LOG_WARN("scheduler write failed: %s", msg);
    if (errmsg != NULL) {
        free(*errmsg);
        *errmsg = msg;
    } else {
        free(msg);
    }
    return res;
}

/* BEGIN and lease_check: the transaction goes on only as the leader of epoch. */
static enum fleet_result tx_begin(db_t *db, const char *epoch, char **errmsg)
{
    if (db_exec_command(db, "BEGIN", 0, NULL, NULL) < 0) {
        if (errmsg != NULL) {
            free(*errmsg);
            *errmsg = xstrdup(db_last_error(db));
        }
        return FLEET_ERROR;
    }
    const char *params[] = {epoch};
    if (db_exec_command(db, "SELECT cortex.lease_check($1::bigint)", 1, params, NULL) < 0)
        return tx_fail(db, errmsg);
    return FLEET_OK;
}

static enum fleet_result tx_commit(db_t *db, char **errmsg)
{
    if (db_exec_command(db, "COMMIT", 0, NULL, NULL) < 0)
        return tx_fail(db, errmsg);
    return FLEET_OK;
}

static const char *id_text(int64_t id, char *buf, size_t size)
{
    if (id == 0)
        return NULL;
    snprintf(buf, size, "%" PRId64, id);
    return buf;
}

static int tx_event(db_t *db, const char *kind, const char *reason, const char *detail,
                    const char *model, const char *node, int64_t placement_id, int64_t demand_id)
{
    char pid[24], did[24];
    const char *params[] = {kind,
                            reason,
                            detail ? detail : "{}",
                            model,
                            node,
                            id_text(placement_id, pid, sizeof pid),
                            id_text(demand_id, did, sizeof did)};
    return db_exec_command(db,
                           "SELECT cortex.record_event($1, $2, $3::jsonb, $4, $5, $6::bigint, "
                           "$7::bigint)",
                           7, params, NULL);
}

/* Runs a statement returning one value inside the transaction; *out gets a copy (or NULL). */
static int tx_value(db_t *db, const char *sql, int n, const char *const *params, char **out)
{
    return db_query_value(db, sql, n, params, out) < 0 ? -1 : 0;
}

/* "{1,2,3}" for a PostgreSQL bigint[] parameter, into b. */
static void id_array(struct buf *b, const int64_t *ids, size_t n)
{
    buf_append_char(b, '{');
    for (size_t i = 0; i < n; i++)
        buf_appendf(b, "%s%" PRId64, i > 0 ? "," : "", ids[i]);
    buf_append_char(b, '}');
}

/* The statement of one action inside its transaction; fills detail with what it did. */
static int apply_action(db_t *db, const char *epoch, const struct plan_action *a, json_t *detail,
                        int64_t *placement_id)
{
    char id1[24], id2[24], id3[24], mem[24];
    char *value = NULL;
    int rc = -1;
    switch (a->kind) {
    case PLAN_ACTION_MARK_DEAD: {
        const char *params[] = {epoch};
        PGresult *r = db_exec_params(db, "SELECT cortex.mark_dead_nodes($1::bigint)", 1, params);
        if (r == NULL)
            goto out;
        json_t *marked = json_array();
        int opened = 0;
        for (int i = 0; i < PQntuples(r) && rc < 0; i++) {
            const char *fparams[] = {epoch, PQgetvalue(r, i, 0)};
            json_array_append_new(marked, json_integer(col_i64(r, i, 0)));
            if (tx_value(db, "SELECT cortex.demand_failover($1::bigint, $2::bigint)", 2, fparams,
                         &value) < 0) {
                rc = -2;
                break;
            }
            opened += value ? atoi(value) : 0;
            free(value);
            value = NULL;
        }
        PQclear(r);
        json_object_set_new(detail, "nodes_marked_down", marked);
        json_object_set_new(detail, "failover_demand", json_integer(opened));
        rc = rc == -2 ? -1 : 0;
        goto out;
    }
    case PLAN_ACTION_LOAD: {
        struct buf gpus = BUF_INIT;
        id_array(&gpus, a->device_ids, a->n_devices);
        snprintf(mem, sizeof mem, "%" PRId64, a->memory_bytes);
        const char *params[] = {
                epoch, id_text(a->replaces_id ? a->replaces_id : a->model_id, id1, sizeof id1),
                id_text(a->node_id, id2, sizeof id2), buf_cstr(&gpus), mem};
        rc = tx_value(db,
                      a->replaces_id ? "SELECT cortex.placement_move($1::bigint, $2::bigint, "
                                       "$3::bigint, $4::bigint[], $5::bigint)"
                                     : "SELECT cortex.placement_create($1::bigint, $2::bigint, "
                                       "$3::bigint, $4::bigint[], $5::bigint)",
                      5, params, &value);
        buf_free(&gpus);
        if (rc == 0 && value != NULL)
            *placement_id = strtoll(value, NULL, 10);
        json_t *ordinals = json_array();
        for (size_t i = 0; i < a->n_devices; i++)
            json_array_append_new(ordinals, json_integer(a->device_ordinals[i]));
        json_object_set_new(detail, "devices", ordinals);
        json_object_set_new(detail, "memory_bytes", json_integer(a->memory_bytes));
        if (a->replaces_id)
            json_object_set_new(detail, "replaces", json_integer(a->replaces_id));
        goto out;
    }
    case PLAN_ACTION_UNLOAD:
    case PLAN_ACTION_FAIL: {
        const char *params[] = {id_text(a->placement_id, id1, sizeof id1),
                                a->kind == PLAN_ACTION_UNLOAD ? "unloading" : "failed", a->reason,
                                epoch};
        rc = tx_value(db, "SELECT cortex.placement_transition($1::bigint, $2, $3, $4::bigint)", 4,
                      params, &value);
        goto out;
    }
    case PLAN_ACTION_RESOLVE: {
        const char *params[] = {epoch, id_text(a->demand_id, id1, sizeof id1),
                                plan_resolution_name(a->resolution), a->reason,
                                id_text(a->placement_id, id3, sizeof id3)};
        rc = tx_value(db,
                      "SELECT cortex.demand_resolve($1::bigint, $2::bigint, $3, $4, $5::bigint)", 5,
                      params, &value);
        json_object_set_new(detail, "resolution", json_string(plan_resolution_name(a->resolution)));
        goto out;
    }
    case PLAN_ACTION_RETRY: {
        const char *params[] = {epoch, id_text(a->model_id, id1, sizeof id1)};
        rc = tx_value(db, "SELECT cortex.model_retry_loads($1::bigint, $2::bigint)", 2, params,
                      &value);
        goto out;
    }
    case PLAN_ACTION_WAIT:
        rc = 0;
        goto out;
    }
out:
    free(value);
    return rc;
}

enum fleet_result fleet_apply(db_t *db, int64_t epoch, const struct fleet *f,
                              const struct plan_action *a, int64_t *placement_id, char **errmsg)
{
    int64_t new_id = 0;
    char epoch_s[24];
    snprintf(epoch_s, sizeof epoch_s, "%" PRId64, epoch);
    if (placement_id != NULL)
        *placement_id = 0;
    enum fleet_result res = tx_begin(db, epoch_s, errmsg);
    if (res != FLEET_OK)
        return res;
    json_t *detail = json_pack("{s:s}", "cause", plan_cause_name(a->cause));
    if (apply_action(db, epoch_s, a, detail, &new_id) < 0) {
        json_decref(detail);
        return tx_fail(db, errmsg);
    }
    const struct plan_model *m = fleet_find_model(f, a->model_id);
    const struct plan_node *n = fleet_find_node(f, a->node_id, NULL);
    char *detail_s = jsonutil_dumps(detail);
    json_decref(detail);
    char kind[64];
    snprintf(kind, sizeof kind, "scheduler.%s", plan_action_kind_name(a->kind));
    int rc = tx_event(db, kind, a->reason, detail_s, m ? m->name : NULL, n ? n->name : NULL,
                      a->kind == PLAN_ACTION_LOAD ? new_id : a->placement_id, a->demand_id);
    free(detail_s);
    if (rc < 0)
        return tx_fail(db, errmsg);
    res = tx_commit(db, errmsg);
    if (res == FLEET_OK && placement_id != NULL)
        *placement_id = new_id;
    return res;
}

enum fleet_result fleet_end_placement(db_t *db, int64_t epoch, int64_t placement_id,
                                      const char *state, const char *reason, const char *event,
                                      const char *model, const char *node, char **errmsg)
{
    char epoch_s[24], pid[24];
    snprintf(epoch_s, sizeof epoch_s, "%" PRId64, epoch);
    enum fleet_result res = tx_begin(db, epoch_s, errmsg);
    if (res != FLEET_OK)
        return res;
    const char *params[] = {id_text(placement_id, pid, sizeof pid), state, reason, epoch_s};
    char *changed = NULL;
    if (db_query_value(db, "SELECT cortex.placement_transition($1::bigint, $2, $3, $4::bigint)", 4,
                       params, &changed) < 0)
        return tx_fail(db, errmsg);
    free(changed);
    if (tx_event(db, event, reason, NULL, model, node, placement_id, 0) < 0)
        return tx_fail(db, errmsg);
    return tx_commit(db, errmsg);
}

enum fleet_result fleet_record_event(db_t *db, int64_t epoch, const char *kind, const char *reason,
                                     const char *detail_json, const char *model, const char *node,
                                     int64_t placement_id, int64_t demand_id, char **errmsg)
{
    char epoch_s[24];
    snprintf(epoch_s, sizeof epoch_s, "%" PRId64, epoch);
    enum fleet_result res = tx_begin(db, epoch_s, errmsg);
    if (res != FLEET_OK)
        return res;
    if (tx_event(db, kind, reason, detail_json, model, node, placement_id, demand_id) < 0)
        return tx_fail(db, errmsg);
    return tx_commit(db, errmsg);
}
