/*
 * neuron/report.c — the database reporter thread (see report.h for the contract).
 *
 * Protocol: `mu` guards `dirty`, `stopping` and the queue of refused placements; `period_ms` is
 * atomic (report_heartbeat_period_ms reads it); everything else belongs to the reporter
 * thread. Each pass takes a snapshot of the registry (registry_foreach), compares it with what
 * was last reported for each placement and sends the missing transitions. A placement whose
 * reported state is uncertain (a statement failed with the connection, or the database refused
 * a transition) is re-read from cortex.placements before the next transition is chosen, so
 * the reporter never guesses a path the state machine would refuse.
 */
#include "report.h"

#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPORT_RETRY_MS 500 /* wake-up period while the database is unreachable */

enum report_state {
    REPORT_STATE_REQUESTED,
    REPORT_STATE_LOADING,
    REPORT_STATE_READY,
    REPORT_STATE_UNLOADING,
    REPORT_STATE_GONE,
    REPORT_STATE_FAILED,
    REPORT_STATE_NONE, /* no legal next step */
};

static const char *const report_state_names[] = {"requested", "loading", "ready",
                                                 "unloading", "gone",    "failed"};

struct report_placement {
    int64_t id;
    enum report_state reported;
    bool known;        /* reported matches the database as far as we know */
    uint64_t progress; /* bytes_done last reported */
    bool seen;         /* present in the current snapshot */
};

/* A placement whose load the registry refused at once: to be marked failed. */
struct report_refusal {
    int64_t id;
    char *reason;
};

/* One placement as the current snapshot shows it. */
struct report_snap {
    int64_t id;
    enum report_state target;
    uint64_t bytes_read, bytes_total;
    char *error;
};

struct report {
    struct report_options opt;
    char *node, *endpoint;
    struct registry *registry;
    db_t *db;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool dirty, stopping;
    struct report_refusal *refused; /* guarded by mu */
    size_t n_refused, cap_refused;
    atomic_int_fast64_t period_ms; /* heartbeat period in use */

    /* reporter thread only */
    int64_t node_id;
    uint64_t db_generation; /* connection generation the state was last synced on */
    uint64_t scan_generation;
    uint64_t next_heartbeat_ms;
    bool outage_logged;
    struct report_placement *pl;
    size_t n_pl, cap_pl;
};

/* The next state to report on the way from `from` to `to`, along legal transitions only. */
static enum report_state report_next_state(enum report_state from, enum report_state to)
{
    if (from == to || from == REPORT_STATE_GONE || from == REPORT_STATE_FAILED)
        return REPORT_STATE_NONE;
    switch (to) {
    case REPORT_STATE_FAILED:
        return REPORT_STATE_FAILED;
    case REPORT_STATE_GONE:
        if (from == REPORT_STATE_REQUESTED || from == REPORT_STATE_UNLOADING)
            return REPORT_STATE_GONE;
        return REPORT_STATE_UNLOADING;
    case REPORT_STATE_UNLOADING:
        return from == REPORT_STATE_REQUESTED ? REPORT_STATE_LOADING : REPORT_STATE_UNLOADING;
    case REPORT_STATE_READY:
        if (from == REPORT_STATE_REQUESTED)
            return REPORT_STATE_LOADING;
        return from == REPORT_STATE_LOADING ? REPORT_STATE_READY : REPORT_STATE_NONE;
    case REPORT_STATE_LOADING:
        return from == REPORT_STATE_REQUESTED ? REPORT_STATE_LOADING : REPORT_STATE_NONE;
    default:
        return REPORT_STATE_NONE;
    }
}

static enum report_state report_state_of(enum registry_state s)
{
    switch (s) {
    case REGISTRY_STATE_LOADING:
        return REPORT_STATE_LOADING;
    case REGISTRY_STATE_READY:
        return REPORT_STATE_READY;
    case REGISTRY_STATE_UNLOADING:
        return REPORT_STATE_UNLOADING;
    case REGISTRY_STATE_FAILED:
        return REPORT_STATE_FAILED;
    case REGISTRY_STATE_GONE:
        break;
    }
    return REPORT_STATE_GONE;
}

static enum report_state report_state_parse(const char *s)
{
    for (int i = 0; i < REPORT_STATE_NONE; i++)
        if (strcmp(report_state_names[i], s) == 0)
            return (enum report_state)i;
    return REPORT_STATE_NONE;
}

/* After a failed statement: -1 when the connection is the problem (the pass stops), 0 when the
 * server refused this statement only (logged; the pass goes on). */
static int report_failed(struct report *rep, const char *what)
{
    if (db_last_error_kind(rep->db) == DB_ERROR_CONNECTION) {
        if (!rep->outage_logged)
            LOG_WARN("database: %s: connection lost (%s); serving on, will retry", what,
                     db_last_error(rep->db));
        rep->outage_logged = true;
        for (size_t i = 0; i < rep->n_pl; i++)
            rep->pl[i].known = false;
        return -1;
    }
    LOG_WARN("database: %s failed: %s (SQLSTATE %s)", what, db_last_error(rep->db),
             db_last_sqlstate(rep->db));
    return 0;
}

/* The registry's devices as node_register wants them (with_usage false: identity and total
 * memory) or as node_heartbeat wants them (with_usage: memory used and free). */
static json_t *report_devices(const struct report *rep, bool with_usage)
{
    size_t n = registry_device_count(rep->registry);
    struct registry_device_usage *use = xcalloc(n ? n : 1, sizeof *use);
    n = registry_get_devices(rep->registry, use, n);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct device *d = use[i].device;
        json_t *o =
                json_pack("{s:s, s:i}", "kind", device_kind_name(d->kind), "ordinal", d->ordinal);
        if (with_usage) {
            json_object_set_new(o, "memory_used_bytes", json_integer((json_int_t)use[i].used));
            json_object_set_new(o, "memory_free_bytes", json_integer((json_int_t)use[i].free));
        } else {
            json_object_set_new(o, "name", json_string(d->name));
            json_object_set_new(o, "memory_total_bytes", json_integer((json_int_t)d->memory_total));
            if (d->kind == DEVICE_KIND_CUDA) {
                json_object_set_new(o, "uuid", json_string(d->uuid));
                json_object_set_new(o, "compute_capability", json_string(d->compute_capability));
            }
        }
        json_array_append_new(list, o);
    }
    free(use);
    return list;
}

/* Reads heartbeat_interval unless the flag fixed the period. A failure keeps the period in
 * use: -1 when the connection is the problem (the pass stops), else 0. */
static int report_read_period(struct report *rep)
{
    if (rep->opt.heartbeat_ms > 0)
        return 0;
    char *ms = NULL;
    int rc = db_query_value(rep->db,
                            "SELECT (extract(epoch FROM cortex.setting_interval("
                            "'heartbeat_interval')) * 1000)::bigint",
                            0, NULL, &ms);
    if (rc != 1 || !ms) {
        free(ms);
        return report_failed(rep, "reading heartbeat_interval");
    }
    int64_t v = strtoll(ms, NULL, 10);
    free(ms);
    if (v < REPORT_MIN_HEARTBEAT_MS)
        v = REPORT_MIN_HEARTBEAT_MS;
    if (atomic_exchange(&rep->period_ms, v) != v)
        LOG_INFO("database: heartbeat every %lld ms (setting heartbeat_interval)", (long long)v);
    return 0;
}

static int report_register(struct report *rep)
{
    json_t *devices = report_devices(rep, false);
    char *devices_text = json_dumps(devices, JSON_COMPACT);
    json_decref(devices);
    const char *params[] = {rep->node, rep->endpoint, devices_text, "cortex-neuron 0.1.0"};
    char *id = NULL;
    int rc = db_query_value(rep->db, "SELECT cortex.node_register($1, $2, $3::jsonb, $4)", 4,
                            params, &id);
    free(devices_text);
    if (rc != 1 || !id) {
        free(id);
        report_failed(rep, "node_register");
        return -1;
    }
    rep->node_id = strtoll(id, NULL, 10);
    free(id);
    rep->n_pl = 0; /* registering voided every placement of this node */
    LOG_INFO("database: registered node %s as id %lld", rep->node, (long long)rep->node_id);
    return 0;
}

static int report_sync_models(struct report *rep)
{
    uint64_t gen = registry_scan_generation(rep->registry);
    json_t *doc = registry_describe(rep->registry);
    json_t *list = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "available"), i, f)
    {
        json_array_append_new(
                list, json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "name",
                                json_object_get(f, "name"), "format", json_object_get(f, "format"),
                                "architecture", json_object_get(f, "architecture"), "size_bytes",
                                json_object_get(f, "size_bytes"), "memory_bytes",
                                json_object_get(f, "estimated_memory_bytes"), "context_length",
                                json_object_get(f, "context_tokens"), "path",
                                json_object_get(f, "path")));
    }
    json_decref(doc);
    char *text = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    char node_id[32];
    snprintf(node_id, sizeof node_id, "%lld", (long long)rep->node_id);
    const char *params[] = {node_id, text};
    int rc = db_exec_command(rep->db, "SELECT cortex.node_models_sync($1::bigint, $2::jsonb)", 2,
                             params, NULL);
    free(text);
    if (rc != 0)
        return report_failed(rep, "node_models_sync");
    rep->scan_generation = gen;
    return 0;
}

/* Returns 1 when the node is known and alive, 0 when it must register again, -1 on failure. */
static int report_heartbeat(struct report *rep)
{
    struct registry_totals t;
    registry_get_totals(rep->registry, &t);
    json_t *devices = report_devices(rep, true);
    char *devices_text = json_dumps(devices, JSON_COMPACT);
    json_decref(devices);
    char node_id[32], queue[32], active[32], clock_text[TIMING_RFC3339_SIZE];
    snprintf(node_id, sizeof node_id, "%lld", (long long)rep->node_id);
    snprintf(queue, sizeof queue, "%d", t.queued_requests);
    snprintf(active, sizeof active, "%d", t.active_sequences);
    timing_format_rfc3339(timing_wall_ms(), true, clock_text);
    const char *params[] = {node_id, devices_text, queue, active, clock_text};
    char *ok = NULL;
    int rc = db_query_value(rep->db,
                            "SELECT cortex.node_heartbeat($1::bigint, $2::jsonb, $3::integer, "
                            "$4::integer, $5::timestamptz)",
                            5, params, &ok);
    free(devices_text);
    if (rc != 1 || !ok) {
        free(ok);
        report_failed(rep, "node_heartbeat");
        return -1;
    }
    bool alive = ok[0] == 't';
    free(ok);
    return alive ? 1 : 0;
}

static struct report_placement *report_placement_get(struct report *rep, int64_t id)
{
    for (size_t i = 0; i < rep->n_pl; i++)
        if (rep->pl[i].id == id)
            return &rep->pl[i];
    rep->pl = xgrow(rep->pl, &rep->cap_pl, rep->n_pl + 1, sizeof *rep->pl);
    struct report_placement *p = &rep->pl[rep->n_pl++];
    memset(p, 0, sizeof *p);
    p->id = id;
    p->reported = REPORT_STATE_REQUESTED;
    p->known = false;
    return p;
}

/* Re-reads a placement's state. Returns 0, or -1 when the pass must stop. A placement the
 * database no longer has is marked gone. */
static int report_placement_refresh(struct report *rep, struct report_placement *p)
{
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)p->id);
    const char *params[] = {id};
    char *state = NULL;
    int rc = db_query_value(rep->db, "SELECT state FROM cortex.placements WHERE id = $1::bigint", 1,
                            params, &state);
    if (rc < 0)
        return report_failed(rep, "placement state") < 0 ? -1 : 0;
    p->reported = rc == 1 && state ? report_state_parse(state) : REPORT_STATE_GONE;
    if (p->reported == REPORT_STATE_NONE)
        p->reported = REPORT_STATE_GONE;
    p->known = true;
    free(state);
    return 0;
}

static int report_placement_progress(struct report *rep, struct report_placement *p,
                                     const struct report_snap *s)
{
    if (p->reported != REPORT_STATE_LOADING || s->bytes_read == p->progress ||
        s->bytes_read > s->bytes_total)
        return 0;
    char id[32], done[32], total[32];
    snprintf(id, sizeof id, "%lld", (long long)p->id);
    snprintf(done, sizeof done, "%llu", (unsigned long long)s->bytes_read);
    snprintf(total, sizeof total, "%llu", (unsigned long long)s->bytes_total);
    const char *params[] = {id, done, total};
    if (db_exec_command(rep->db,
                        "SELECT cortex.placement_progress($1::bigint, $2::bigint, $3::bigint)", 3,
                        params, NULL) != 0)
        return report_failed(rep, "placement_progress");
    p->progress = s->bytes_read;
    return 0;
}

/* Sends transitions until p reaches target (or no legal step remains); snap (NULL for a
 * placement whose model is gone) supplies the progress, which is completed before the
 * placement leaves loading. -1: stop the pass. */
static int report_placement_advance(struct report *rep, struct report_placement *p,
                                    enum report_state target, const struct report_snap *snap)
{
    const char *error = snap ? snap->error : NULL;
    if (!p->known && report_placement_refresh(rep, p) != 0)
        return -1;
    for (int guard = 0; guard < 4 && p->known; guard++) {
        enum report_state next = report_next_state(p->reported, target);
        if (next == REPORT_STATE_NONE)
            break;
        if (snap && p->reported == REPORT_STATE_LOADING && report_placement_progress(rep, p, snap))
            return -1;
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)p->id);
        const char *reason = next == REPORT_STATE_FAILED ? (error ? error : "load failed")
                             : next == REPORT_STATE_UNLOADING && target == REPORT_STATE_GONE
                                     ? "unloaded by the neuron"
                                     : NULL;
        const char *params[] = {id, report_state_names[next], reason};
        if (db_exec_command(rep->db, "SELECT cortex.placement_transition($1::bigint, $2, $3)", 3,
                            params, NULL) != 0) {
            p->known = false;
            if (db_last_error_kind(rep->db) == DB_ERROR_CONNECTION)
                return report_failed(rep, "placement_transition") < 0 ? -1 : 0;
            /* Refused: usually the scheduler got there first (it failed or dropped the
             * placement while the load ran), which is no fault worth a warning. */
            char *why = xstrdup(db_last_error(rep->db));
            if (report_placement_refresh(rep, p) != 0) {
                free(why);
                return -1;
            }
            if (p->known &&
                (p->reported == REPORT_STATE_FAILED || p->reported == REPORT_STATE_GONE))
                LOG_INFO("database: placement %lld is already %s there; not reporting %s",
                         (long long)p->id, report_state_names[p->reported],
                         report_state_names[next]);
            else
                LOG_WARN("database: placement_transition %lld -> %s refused: %s", (long long)p->id,
                         report_state_names[next], why);
            free(why);
            break;
        }
        LOG_INFO("database: placement %lld -> %s", (long long)p->id, report_state_names[next]);
        p->reported = next;
    }
    return 0;
}

/* Marks the placements of refused loads failed. A refusal stays queued while the database is
 * unreachable; one the database will not take (the placement is gone, or already past a state
 * that may fail) is logged and dropped. -1: stop the pass. */
static int report_flush_refusals(struct report *rep)
{
    pthread_mutex_lock(&rep->mu);
    struct report_refusal *v = rep->refused;
    size_t n = rep->n_refused, cap = rep->cap_refused;
    rep->refused = NULL;
    rep->n_refused = rep->cap_refused = 0;
    pthread_mutex_unlock(&rep->mu);
    size_t done;
    int rc = 0;
    for (done = 0; done < n; done++) {
        struct report_placement p = {.id = v[done].id, .reported = REPORT_STATE_REQUESTED};
        struct report_snap s = {.id = v[done].id, .error = v[done].reason};
        if (report_placement_advance(rep, &p, REPORT_STATE_FAILED, &s) != 0) {
            rc = -1;
            break;
        }
        free(v[done].reason);
    }
    /* What was not reported goes back, ahead of the refusals queued meanwhile. */
    size_t left = n - done;
    if (left)
        memmove(v, v + done, left * sizeof *v);
    pthread_mutex_lock(&rep->mu);
    for (size_t i = 0; i < rep->n_refused; i++) {
        v = xgrow(v, &cap, left + 1, sizeof *v);
        v[left++] = rep->refused[i];
    }
    free(rep->refused);
    rep->refused = v;
    rep->n_refused = left;
    rep->cap_refused = cap;
    pthread_mutex_unlock(&rep->mu);
    return rc;
}

struct report_snapshot {
    struct report_snap *v;
    size_t n, cap;
};

static void report_collect(void *ud, const struct registry_model_info *info)
{
    struct report_snapshot *snap = ud;
    if (info->placement_id <= 0)
        return;
    snap->v = xgrow(snap->v, &snap->cap, snap->n + 1, sizeof *snap->v);
    struct report_snap *s = &snap->v[snap->n++];
    s->id = info->placement_id;
    s->target = report_state_of(info->state);
    s->bytes_read = info->bytes_read;
    s->bytes_total = info->bytes_total;
    s->error = info->error ? xstrdup(info->error) : NULL;
}

static int report_sync_placements(struct report *rep)
{
    struct report_snapshot snap = {0};
    registry_foreach(rep->registry, report_collect, &snap);
    int rc = 0;
    for (size_t i = 0; i < rep->n_pl; i++)
        rep->pl[i].seen = false;
    for (size_t i = 0; i < snap.n && rc == 0; i++) {
        struct report_placement *p = report_placement_get(rep, snap.v[i].id);
        p->seen = true;
        rc = report_placement_advance(rep, p, snap.v[i].target, &snap.v[i]);
        if (rc == 0)
            rc = report_placement_progress(rep, p, &snap.v[i]);
    }
    /* Placements whose model is gone from the registry: report them gone, then forget them. */
    size_t kept = 0;
    for (size_t i = 0; i < rep->n_pl; i++) {
        struct report_placement *p = &rep->pl[i];
        if (!p->seen && rc == 0)
            rc = report_placement_advance(rep, p, REPORT_STATE_GONE, NULL);
        bool done = !p->seen && p->known &&
                    (p->reported == REPORT_STATE_GONE || p->reported == REPORT_STATE_FAILED);
        if (!done)
            rep->pl[kept++] = *p;
    }
    rep->n_pl = kept;
    for (size_t i = 0; i < snap.n; i++)
        free(snap.v[i].error);
    free(snap.v);
    return rc;
}

/* One pass: connect, (re)register or re-sync as needed, report placements, heartbeat. */
static void report_pass(struct report *rep)
{
    if (db_ensure(rep->db) != 0) {
        if (!rep->outage_logged)
            LOG_WARN("database unreachable (%s); serving on, will retry", db_last_error(rep->db));
        rep->outage_logged = true;
        return;
    }
    if (rep->outage_logged)
        LOG_INFO("database reachable again; re-syncing");
    rep->outage_logged = false;
    uint64_t gen = db_generation(rep->db);
    bool resync = gen != rep->db_generation;
    if (rep->node_id == 0) {
        if (report_register(rep) != 0)
            return;
        resync = true;
    } else if (resync) {
        int alive = report_heartbeat(rep);
        if (alive < 0)
            return;
        if (alive == 0) {
            LOG_WARN("database: node %s is unknown or marked down; unloading every model and "
                     "registering again",
                     rep->node);
            registry_unload_all(rep->registry);
            if (report_register(rep) != 0)
                return;
        }
        for (size_t i = 0; i < rep->n_pl; i++)
            rep->pl[i].known = false;
    }
    if (resync && report_read_period(rep) != 0)
        return;
    if (resync || registry_scan_generation(rep->registry) != rep->scan_generation) {
        if (report_sync_models(rep) != 0)
            return;
    }
    rep->db_generation = gen;
    if (report_flush_refusals(rep) != 0 || report_sync_placements(rep) != 0)
        return;
    uint64_t now = timing_now_ms();
    if (resync || now >= rep->next_heartbeat_ms) {
        int alive = report_heartbeat(rep);
        if (alive < 0)
            return;
        if (alive == 0) {
            rep->node_id = 0; /* the next pass unloads and registers */
            registry_unload_all(rep->registry);
            return;
        }
        rep->next_heartbeat_ms = now + (uint64_t)atomic_load(&rep->period_ms);
    }
}

static void *report_main(void *arg)
{
    struct report *rep = arg;
    for (;;) {
        report_pass(rep);
        pthread_mutex_lock(&rep->mu);
        uint64_t wait_ms =
                db_is_connected(rep->db) ? (uint64_t)atomic_load(&rep->period_ms) : REPORT_RETRY_MS;
        uint64_t now = timing_now_ms();
        if (db_is_connected(rep->db) && rep->next_heartbeat_ms > now)
            wait_ms = rep->next_heartbeat_ms - now;
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)(wait_ms / 1000);
        deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (!rep->dirty && !rep->stopping) {
            if (pthread_cond_timedwait(&rep->cond, &rep->mu, &deadline) == ETIMEDOUT)
                break;
        }
        bool stopping = rep->stopping;
        rep->dirty = false;
        pthread_mutex_unlock(&rep->mu);
        if (stopping) {
            report_pass(rep); /* a last chance to report the final transitions */
            break;
        }
    }
    return NULL;
}

struct report *report_create(const struct report_options *opt, struct registry *r, char *err,
                             size_t errlen)
{
    db_options_t dbo = {
            .application_name = "cortex-neuron",
            .connect_timeout_s = 3,
            .statement_timeout_ms = 10000,
            .keepalives = true,
            .backoff_max_ms = 5000,
    };
    char *msg = NULL;
    db_t *db = db_create(opt->conninfo, &dbo, &msg);
    if (!db) {
        snprintf(err, errlen, "--db: %s", msg ? msg : "invalid connection string");
        free(msg);
        return NULL;
    }
    struct report *rep = xcalloc(1, sizeof *rep);
    rep->opt = *opt;
    rep->node = xstrdup(opt->node);
    rep->endpoint = xstrdup(opt->endpoint);
    rep->opt.node = rep->node;
    rep->opt.endpoint = rep->endpoint;
    rep->opt.conninfo = NULL;
    if (rep->opt.heartbeat_ms > 0 && rep->opt.heartbeat_ms < REPORT_MIN_HEARTBEAT_MS)
        rep->opt.heartbeat_ms = REPORT_MIN_HEARTBEAT_MS;
    atomic_init(&rep->period_ms,
                rep->opt.heartbeat_ms > 0 ? rep->opt.heartbeat_ms : REPORT_DEFAULT_HEARTBEAT_MS);
    rep->registry = r;
    rep->db = db;
    pthread_mutex_init(&rep->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rep->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&rep->thread, NULL, report_main, rep) != 0) {
        LOG_ERROR("cannot start the database reporter thread");
        abort();
    }
    return rep;
}

void report_notify(struct report *rep)
{
    pthread_mutex_lock(&rep->mu);
    rep->dirty = true;
    pthread_cond_signal(&rep->cond);
    pthread_mutex_unlock(&rep->mu);
}

void report_observe(void *ud, const struct registry_event *ev)
{
    struct report *rep = ud;
    if (ev->refused && ev->placement_id > 0) {
        pthread_mutex_lock(&rep->mu);
        rep->refused =
                xgrow(rep->refused, &rep->cap_refused, rep->n_refused + 1, sizeof *rep->refused);
        rep->refused[rep->n_refused++] = (struct report_refusal){
                .id = ev->placement_id,
                .reason = xasprintf("load refused by the neuron: %s",
                                    ev->error ? ev->error : "no reason given"),
        };
        pthread_mutex_unlock(&rep->mu);
    }
    report_notify(rep);
}

int64_t report_heartbeat_period_ms(struct report *rep)
{
    return atomic_load(&rep->period_ms);
}

void report_destroy(struct report *rep)
{
    if (!rep)
        return;
    pthread_mutex_lock(&rep->mu);
    rep->stopping = true;
    pthread_cond_signal(&rep->cond);
    pthread_mutex_unlock(&rep->mu);
    pthread_join(rep->thread, NULL);
    db_destroy(rep->db);
    pthread_mutex_destroy(&rep->mu);
    pthread_cond_destroy(&rep->cond);
    for (size_t i = 0; i < rep->n_refused; i++)
        free(rep->refused[i].reason);
    free(rep->refused);
    free(rep->pl);
    free(rep->node);
    free(rep->endpoint);
    free(rep);
}
