/*
 * gateway/snapshot.c — the catalogue and placement snapshot read from PostgreSQL, demand and
 * cold-start holds (see snapshot.h).
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

enum snapshot_kind { SNAPSHOT_KIND_MODEL, SNAPSHOT_KIND_ALIAS, SNAPSHOT_KIND_PATTERN };

struct snapshot_name {
    char *name; /* for a pattern: the prefix before '*' */
    char *model;
    enum snapshot_kind kind;
};

/* Models held now, with their counts (a short list: only models being cold-started). */
struct snapshot_holds {
    char *model;
    unsigned n;
    struct snapshot_holds *next;
};

struct snapshot {
    struct snapshot_config cfg; /* strings owned */
    db_t *db;                   /* the reader thread's */
    db_t *side;                 /* demand calls, under side_mu */
    pthread_mutex_t side_mu;

    pthread_mutex_t mu;
    pthread_cond_t changed; /* a read completed, or stopping */
    struct snapshot_name *names;
    size_t n_names;
    struct snapshot_holds *holds;
    unsigned holding;
    bool stopping, poked;
    uint64_t reads;

    _Atomic uint64_t read_ms; /* monotonic time of the last complete read; 0: none */
    int wake[2];              /* pipe: poke / stop the reader */
    pthread_t thread;
    bool started;
};

static void snapshot_names_free(struct snapshot_name *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i].name);
        free(names[i].model);
    }
    free(names);
}

/* Reads both views; 0 when the snapshot was replaced, -1 on a database error (logged). */
static int snapshot_read(struct snapshot *s)
{
    int rc = -1;
    PGresult *routes = NULL, *cat = NULL;
    struct snapshot_name *names = NULL;
    const char **urls = NULL, **models = NULL;
    routes = db_exec_params(s->db,
                            "SELECT model, endpoint FROM cortex.routes WHERE liveness <> 'dead' "
                            "ORDER BY draining, placement_id",
                            0, NULL);
    if (!routes)
        goto out;
    cat = db_exec_params(s->db, "SELECT name, kind, model FROM cortex.catalogue", 0, NULL);
    if (!cat)
        goto out;
    size_t n_routes = (size_t)PQntuples(routes);
    urls = xcalloc(n_routes + 1, sizeof *urls);
    models = xcalloc(n_routes + 1, sizeof *models);
    for (size_t i = 0; i < n_routes; i++) {
        models[i] = PQgetvalue(routes, (int)i, 0);
        urls[i] = PQgetvalue(routes, (int)i, 1);
    }
    size_t n_names = (size_t)PQntuples(cat);
    names = xcalloc(n_names + 1, sizeof *names);
    for (size_t i = 0; i < n_names; i++) {
        const char *kind = PQgetvalue(cat, (int)i, 1);
        const char *name = PQgetvalue(cat, (int)i, 0);
        names[i].kind = strcmp(kind, "pattern") == 0 ? SNAPSHOT_KIND_PATTERN
                        : strcmp(kind, "alias") == 0 ? SNAPSHOT_KIND_ALIAS
                                                     : SNAPSHOT_KIND_MODEL;
        size_t len = strlen(name);
        if (names[i].kind == SNAPSHOT_KIND_PATTERN && len > 0 && name[len - 1] == '*')
            len--;
        names[i].name = xstrndup(name, len);
        names[i].model = xstrdup(PQgetvalue(cat, (int)i, 2));
    }
    if (upstream_pool_sync(s->cfg.pool, urls, models, n_routes) < 0)
        LOG_WARN("more than %d neuron endpoints: some placements are not routed", UPSTREAM_MAX);
    pthread_mutex_lock(&s->mu);
    struct snapshot_name *old = s->names;
    size_t n_old = s->n_names;
    s->names = names;
    s->n_names = n_names;
    names = NULL;
    s->reads++;
    atomic_store(&s->read_ms, timing_now_ms());
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->mu);
    snapshot_names_free(old, n_old);
    LOG_DEBUG("snapshot: %zu ready placements, %zu catalogue names", n_routes, n_names);
    rc = 0;
out:
    if (rc < 0)
        LOG_WARN("snapshot read failed (serving from the last one): %s", db_last_error(s->db));
    PQclear(routes);
    PQclear(cat);
    free(urls);
    free(models);
    return rc;
}

static void snapshot_on_notify(const char *channel, const char *payload, int pid, void *ud)
{
    (void)pid;
    bool *dirty = ud;
    *dirty = true;
    LOG_TRACE("snapshot: NOTIFY %s %s", channel, payload);
}

static void *snapshot_thread(void *arg)
{
    struct snapshot *s = arg;
    uint64_t generation = 0;
    uint64_t next_read = 0; /* monotonic ms; 0: now */
    bool dirty = true;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stop = s->stopping;
        if (s->poked)
            dirty = true;
        s->poked = false;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        if (db_ensure(s->db) == 0) {
            if (db_generation(s->db) != generation) {
                generation = db_generation(s->db);
                dirty = true; /* a notification may have been missed while disconnected */
            }
            if (db_consume_notifications(s->db, snapshot_on_notify, &dirty) < 0)
                continue; /* lost: reconnect */
            uint64_t now = timing_now_ms();
            if (dirty || now >= next_read) {
                dirty = false;
                if (snapshot_read(s) < 0 && db_last_error_kind(s->db) == DB_ERROR_CONNECTION)
                    dirty = true;
                next_read = timing_now_ms() + (uint64_t)s->cfg.poll_ms;
            }
        }
        struct pollfd fds[2] = {{.fd = s->wake[0], .events = POLLIN},
                                {.fd = db_socket(s->db), .events = POLLIN}};
        uint64_t now = timing_now_ms();
        int timeout = 250; /* reconnect attempts are paced by db_ensure's own backoff */
        if (db_is_connected(s->db) && next_read > now && next_read - now < 250)
            timeout = (int)(next_read - now);
        if (poll(fds, fds[1].fd >= 0 ? 2 : 1, timeout) > 0 && (fds[0].revents & POLLIN)) {
            char drain[64];
            while (read(s->wake[0], drain, sizeof drain) > 0)
                ;
        }
    }
    return NULL;
}

static void snapshot_wake(struct snapshot *s)
{
    char c = 1;
    ssize_t w = write(s->wake[1], &c, 1);
    (void)w; /* a full pipe already wakes the thread */
}

struct snapshot *snapshot_create(const struct snapshot_config *cfg, char **errmsg)
{
    *errmsg = NULL;
    struct snapshot *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->cfg.conninfo = xstrdup(cfg->conninfo ? cfg->conninfo : "");
    s->cfg.source = xstrdup(cfg->source && cfg->source[0] ? cfg->source : "gateway");
    if (s->cfg.poll_ms <= 0)
        s->cfg.poll_ms = 5000;
    if (s->cfg.max_holds == 0)
        s->cfg.max_holds = 1000;
    if (s->cfg.max_holds_model == 0)
        s->cfg.max_holds_model = 100;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->side_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->changed, &ca);
    pthread_condattr_destroy(&ca);
    db_options_t opts = {.application_name = "cortex-gateway",
                         .connect_timeout_s = 3,
                         .statement_timeout_ms = 5000,
                         .keepalives = true,
                         .backoff_max_ms = 2000};
    s->db = db_create(s->cfg.conninfo, &opts, errmsg);
    if (!s->db)
        goto fail;
    s->side = db_create(s->cfg.conninfo, &opts, errmsg);
    if (!s->side)
        goto fail;
    if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        *errmsg = xasprintf("pipe: %s", strerror(errno));
        goto fail;
    }
    if (db_listen(s->db, "cortex_placement") < 0 || db_listen(s->db, "cortex_catalogue") < 0 ||
        db_listen(s->db, "cortex_node") < 0) {
        *errmsg = xstrdup("cannot register the LISTEN channels");
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, snapshot_thread, s) != 0) {
        *errmsg = xstrdup("cannot start the snapshot thread");
        goto fail;
    }
    s->started = true;
    return s;
fail:
    snapshot_destroy(s);
    return NULL;
}

void snapshot_destroy(struct snapshot *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->mu);
        snapshot_wake(s);
        pthread_join(s->thread, NULL);
    }
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    db_destroy(s->db);
    db_destroy(s->side);
    snapshot_names_free(s->names, s->n_names);
    while (s->holds) {
        struct snapshot_holds *h = s->holds;
        s->holds = h->next;
        free(h->model);
        free(h);
    }
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->side_mu);
    free((char *)s->cfg.conninfo);
    free((char *)s->cfg.source);
    free(s);
}

/* An absolute CLOCK_MONOTONIC time ms from now. */
static struct timespec snapshot_deadline(int64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000;
    if (t.tv_nsec >= 1000000000) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000;
    }
    return t;
}

bool snapshot_wait_first(struct snapshot *s, int64_t timeout_ms)
{
    struct timespec until = snapshot_deadline(timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (s->reads == 0 && !s->stopping &&
           pthread_cond_timedwait(&s->changed, &s->mu, &until) == 0)
        ;
    bool ok = s->reads > 0;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void snapshot_poke(struct snapshot *s)
{
    pthread_mutex_lock(&s->mu);
    s->poked = true;
    pthread_mutex_unlock(&s->mu);
    snapshot_wake(s);
}

bool snapshot_resolve(struct snapshot *s, const char *name, char *model, size_t size)
{
    bool found = false;
    size_t best_len = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n_names && !found; i++) {
        const struct snapshot_name *n = &s->names[i];
        if (n->kind != SNAPSHOT_KIND_PATTERN && strcmp(n->name, name) == 0) {
            snprintf(model, size, "%s", n->model);
            found = true;
        }
    }
    for (size_t i = 0; i < s->n_names && !found; i++) {
        const struct snapshot_name *n = &s->names[i];
        size_t len = strlen(n->name);
        if (n->kind == SNAPSHOT_KIND_PATTERN && strncmp(n->name, name, len) == 0 &&
            (best_len == 0 || len > best_len)) {
            snprintf(model, size, "%s", n->model);
            best_len = len;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found || best_len > 0;
}

static int snapshot_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *snapshot_models(struct snapshot *s)
{
    pthread_mutex_lock(&s->mu);
    const char **all = xcalloc(s->n_names + 1, sizeof *all);
    size_t k = 0;
    for (size_t i = 0; i < s->n_names; i++) {
        if (s->names[i].kind != SNAPSHOT_KIND_PATTERN)
            all[k++] = s->names[i].name;
    }
    qsort(all, k, sizeof *all, snapshot_cmp_str);
    json_t *out = json_array();
    for (size_t i = 0; i < k; i++) {
        if (i == 0 || strcmp(all[i], all[i - 1]) != 0)
            json_array_append_new(out, json_string(all[i]));
    }
    pthread_mutex_unlock(&s->mu);
    free(all);
    return out;
}

double snapshot_age_s(const struct snapshot *s)
{
    uint64_t t = atomic_load(&s->read_ms);
    return t ? (double)(timing_now_ms() - t) / 1000.0 : -1.0;
}

uint64_t snapshot_reads(const struct snapshot *s)
{
    struct snapshot *ms = (struct snapshot *)s; /* the lock is not part of the value */
    pthread_mutex_lock(&ms->mu);
    uint64_t n = s->reads;
    pthread_mutex_unlock(&ms->mu);
    return n;
}

unsigned snapshot_holding(struct snapshot *s)
{
    pthread_mutex_lock(&s->mu);
    unsigned n = s->holding;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int snapshot_demand(struct snapshot *s, const char *model)
{
    int rc = -1;
    char *id = NULL;
    pthread_mutex_lock(&s->side_mu);
    if (db_ensure(s->side) == 0) {
        const char *params[] = {model, s->cfg.source};
        if (db_query_value(s->side, "SELECT cortex.demand_load($1, $2)", 2, params, &id) == 1)
            rc = 0;
    }
    if (rc < 0)
        LOG_WARN("cannot record demand for '%s': %s", model, db_last_error(s->side));
    else
        LOG_INFO("demand %s recorded for '%s'", id ? id : "?", model);
    pthread_mutex_unlock(&s->side_mu);
    free(id);
    return rc;
}

/* The hold record of model (created with n = 0 when absent); called with mu held. */
static struct snapshot_holds *snapshot_holds_get(struct snapshot *s, const char *model)
{
    for (struct snapshot_holds *h = s->holds; h; h = h->next) {
        if (strcmp(h->model, model) == 0)
            return h;
    }
    struct snapshot_holds *h = xcalloc(1, sizeof *h);
    h->model = xstrdup(model);
    h->next = s->holds;
    s->holds = h;
    return h;
}

/* Drops the hold record of model when unused; called with mu held. */
static void snapshot_holds_put(struct snapshot *s, struct snapshot_holds *h)
{
    if (--h->n > 0)
        return;
    for (struct snapshot_holds **pp = &s->holds; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    }
    free(h->model);
    free(h);
}

enum snapshot_hold_result snapshot_hold(struct snapshot *s, const char *model, int64_t timeout_ms,
                                        const http_client_cancel_t *cancel)
{
    enum snapshot_hold_result res = SNAPSHOT_HOLD_TIMEOUT;
    uint64_t end = timing_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&s->mu);
    struct snapshot_holds *h = snapshot_holds_get(s, model);
    if (s->holding >= s->cfg.max_holds || h->n >= s->cfg.max_holds_model) {
        h->n++;
        snapshot_holds_put(s, h);
        pthread_mutex_unlock(&s->mu);
        return SNAPSHOT_HOLD_FULL;
    }
    h->n++;
    s->holding++;
    for (;;) {
        if (upstream_pool_has_model(s->cfg.pool, model)) {
            res = SNAPSHOT_HOLD_READY;
            break;
        }
        if (s->stopping || (cancel && http_client_cancel_fired(cancel))) {
            res = SNAPSHOT_HOLD_CANCELLED;
            break;
        }
        uint64_t now = timing_now_ms();
        if (now >= end)
            break;
        /* Wake at least every 200 ms: a cancel fires without signalling this condition. */
        uint64_t left = end - now;
        struct timespec until = snapshot_deadline(left < 200 ? (int64_t)left : 200);
        pthread_cond_timedwait(&s->changed, &s->mu, &until);
    }
    s->holding--;
    snapshot_holds_put(s, h);
    pthread_mutex_unlock(&s->mu);
    return res;
}
