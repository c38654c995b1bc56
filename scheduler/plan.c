/*
 * scheduler/plan.c — the scheduler's decisions, as a pure function of a fleet snapshot.
 *
 * plan_compute copies the snapshot into a working fleet (per-device reserved and leaving
 * memory, per-model live replica counts) and walks the policies in order (see plan.h). Every
 * decision updates the working fleet at once — a planned load reserves its devices, an unload
 * marks its placement as leaving — so that later decisions of the same plan see them: two
 * models never get the same free memory, and memory being freed is never handed out before
 * it is free. Placements are referred to by index into the working array, which grows as
 * loads are planned, so no pointer into it is kept across an insertion.
 */
#include "plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

#define NONE SIZE_MAX
/* Upper bound on device groups tried per node, so a huge node cannot stall a plan. */
#define PLAN_MAX_GROUPS 100000

struct wdev {
    const struct plan_device *d;
    size_t node;
    int64_t cap;     /* memory the scheduler may hand out */
    int64_t used;    /* reserved by live placements, planned ones included */
    int64_t leaving; /* of used: held by placements on their way out */
};

struct wnode {
    const struct plan_node *n;
    size_t dev0, ndev; /* its devices: devs[dev0 .. dev0 + ndev) */
    bool gpu;          /* has CUDA devices (else: CPU budget, one device per placement) */
};

struct wpl {
    const struct plan_placement *p; /* NULL for a load planned by this plan */
    int64_t id;                     /* 0 for a planned load */
    size_t model;                   /* NONE: not in the catalogue (accounted, never acted on) */
    size_t node;
    enum plan_placement_state state;
    size_t devs[PLAN_MAX_DEVICES];
    size_t ndev;
    int64_t memory; /* over all devices */
    int64_t share;  /* per device */
    int64_t idle_ms, in_state_ms;
    int in_flight;
    int64_t replaces_id;
    bool gone, leaving;
};

struct wmodel {
    const struct plan_model *m;
    int live;      /* requested, loading or ready placements that are not leaving */
    bool demanded; /* open load demand */
    int failures;  /* load failures, as this plan sees them */
    bool retried;  /* a RETRY was planned */
};

enum want_kind {
    WANT_REPLICAS,
    WANT_DEMAND,
    WANT_DRAIN,
};

struct want {
    enum want_kind kind;
    size_t model;
    int64_t demand_id;
    size_t only_node; /* NONE: anywhere */
    size_t moving;    /* WANT_DRAIN: the placement to move */
};

struct work {
    const struct plan_fleet *f;
    const struct plan_settings *s;
    struct plan *out;
    bool defrag_allowed;
    struct wnode *nodes;
    size_t n_nodes;
    struct wdev *devs;
    size_t n_devs;
    struct wmodel *models;
    size_t n_models;
    struct wpl *pls;
    size_t n_pls, cap_pls;
    struct want *wants;
    size_t n_wants, cap_wants;
};

enum fit {
    FIT_NOW,           /* free memory now */
    FIT_AFTER_LEAVING, /* once the placements on their way out are gone */
    FIT_EMPTY,         /* on empty devices: could it ever fit? */
};

struct slot {
    size_t node;
    size_t devs[PLAN_MAX_DEVICES];
    size_t ndev;
    int64_t share;
    int64_t leftover; /* free memory left on the group afterwards (best fit: smallest) */
    int rank;         /* node preference: lower is better */
};

/* ---- names and formatting ---------------------------------------------------------------- */

const char *plan_action_kind_name(enum plan_action_kind kind)
{
    switch (kind) {
    case PLAN_ACTION_MARK_DEAD:
        return "mark_dead";
    case PLAN_ACTION_LOAD:
        return "load";
    case PLAN_ACTION_UNLOAD:
        return "unload";
    case PLAN_ACTION_FAIL:
        return "fail";
    case PLAN_ACTION_RESOLVE:
        return "resolve";
    case PLAN_ACTION_RETRY:
        return "retry";
    case PLAN_ACTION_WAIT:
        return "wait";
    }
    return "unknown";
}

const char *plan_cause_name(enum plan_cause cause)
{
    switch (cause) {
    case PLAN_CAUSE_NODE_DEAD:
        return "node_dead";
    case PLAN_CAUSE_TIMEOUT:
        return "timeout";
    case PLAN_CAUSE_DEMAND:
        return "demand";
    case PLAN_CAUSE_REPLICAS:
        return "replicas";
    case PLAN_CAUSE_EVICT:
        return "evict";
    case PLAN_CAUSE_IDLE:
        return "idle";
    case PLAN_CAUSE_DRAIN:
        return "drain";
    case PLAN_CAUSE_DEFRAG:
        return "defrag";
    case PLAN_CAUSE_MOVED:
        return "moved";
    case PLAN_CAUSE_FAILURES:
        return "failures";
    }
    return "unknown";
}

const char *plan_resolution_name(enum plan_resolution resolution)
{
    switch (resolution) {
    case PLAN_RESOLUTION_SATISFIED:
        return "satisfied";
    case PLAN_RESOLUTION_FAILED:
        return "failed";
    case PLAN_RESOLUTION_EXPIRED:
        return "expired";
    case PLAN_RESOLUTION_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

int plan_eviction_parse(const char *text, enum plan_eviction *out)
{
    if (text == NULL)
        return -1;
    if (strcmp(text, "lru") == 0) {
        *out = PLAN_EVICTION_LRU;
        return 0;
    }
    if (strcmp(text, "priority") == 0) {
        *out = PLAN_EVICTION_PRIORITY;
        return 0;
    }
    return -1;
}

char *plan_format_bytes(int64_t n, char *out, size_t size)
{
    double v = (double)n;
    if (n >= (int64_t)1 << 30)
        snprintf(out, size, "%.1f GiB", v / (double)(1 << 30));
    else if (n >= (int64_t)1 << 20)
        snprintf(out, size, "%.1f MiB", v / (double)(1 << 20));
    else if (n >= 1024)
        snprintf(out, size, "%.1f KiB", v / 1024.0);
    else
        snprintf(out, size, "%lld B", (long long)n);
    return out;
}

/* A rounded duration for reasons: "12s", "16m40s", "2h05m". */
static char *plan_format_duration(int64_t ms, char *out, size_t size)
{
    int64_t s = ms / 1000;
    if (s < 60)
        snprintf(out, size, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, size, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else
        snprintf(out, size, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    return out;
}

/* ---- actions ---------------------------------------------------------------------------- */

static struct plan_action *plan_push(struct work *w, enum plan_action_kind kind,
                                     enum plan_cause cause, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Appends an action with a formatted reason; the other fields are zero. */
static struct plan_action *plan_push(struct work *w, enum plan_action_kind kind,
                                     enum plan_cause cause, const char *fmt, ...)
{
    struct plan *p = w->out;
    p->actions = xgrow(p->actions, &p->cap_actions, p->n_actions + 1, sizeof *p->actions);
    struct plan_action *a = &p->actions[p->n_actions++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->cause = cause;
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&b, fmt, ap);
    va_end(ap);
    a->reason = buf_steal(&b, NULL);
    return a;
}

void plan_free(struct plan *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_actions; i++)
        free(p->actions[i].reason);
    free(p->actions);
    memset(p, 0, sizeof *p);
}

/* ---- the working fleet ------------------------------------------------------------------ */

static const char *model_name(const struct work *w, size_t m)
{
    return m == NONE ? "?" : w->models[m].m->name;
}

static const char *node_name(const struct work *w, size_t n)
{
    return w->nodes[n].n->name;
}

static size_t work_find_node(const struct work *w, int64_t id)
{
    for (size_t i = 0; i < w->n_nodes; i++) {
        if (w->nodes[i].n->id == id)
            return i;
    }
    return NONE;
}

static size_t work_find_model(const struct work *w, int64_t id)
{
    for (size_t i = 0; i < w->n_models; i++) {
        if (w->models[i].m->id == id)
            return i;
    }
    return NONE;
}

static size_t work_find_placement(const struct work *w, int64_t id)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        if (w->pls[i].id == id && id != 0 && !w->pls[i].gone)
            return i;
    }
    return NONE;
}

static bool node_usable(const struct work *w, size_t n)
{
    return w->nodes[n].n->state == PLAN_NODE_ALIVE && !w->nodes[n].n->draining;
}

static bool ids_contain(const int64_t *ids, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == id)
            return true;
    }
    return false;
}

static bool node_holds_files(const struct work *w, size_t n, size_t m)
{
    const struct plan_model *pm = w->models[m].m;
    return ids_contain(pm->file_node_ids, pm->n_file_nodes, w->nodes[n].n->id);
}

static bool node_failed_model(const struct work *w, size_t n, size_t m)
{
    const struct plan_model *pm = w->models[m].m;
    return ids_contain(pm->failed_node_ids, pm->n_failed_nodes, w->nodes[n].n->id);
}

static void dev_label(const struct work *w, size_t d, struct buf *b)
{
    buf_appendf(b, "%s:%d", w->devs[d].d->cpu ? "cpu" : "cuda", w->devs[d].d->ordinal);
}

/* "n1 [cuda:0,cuda:1]" into b. */
static void group_label(const struct work *w, size_t node, const size_t *devs, size_t n,
                        struct buf *b)
{
    buf_appendf(b, "%s [", node_name(w, node));
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            buf_append_char(b, ',');
        dev_label(w, devs[i], b);
    }
    buf_append_char(b, ']');
}

/* Marks placement i as on its way out: its memory will be free once it is gone. */
static void pl_leave(struct work *w, size_t i)
{
    struct wpl *p = &w->pls[i];
    if (p->gone || p->leaving)
        return;
    p->leaving = true;
    for (size_t k = 0; k < p->ndev; k++)
        w->devs[p->devs[k]].leaving += p->share;
    if (p->model != NONE)
        w->models[p->model].live--;
}

/* Placement i is over (failed, node lost): its memory is free at once. */
static void pl_gone(struct work *w, size_t i)
{
    struct wpl *p = &w->pls[i];
    if (p->gone)
        return;
    for (size_t k = 0; k < p->ndev; k++) {
        w->devs[p->devs[k]].used -= p->share;
        if (p->leaving)
            w->devs[p->devs[k]].leaving -= p->share;
    }
    if (!p->leaving && p->model != NONE)
        w->models[p->model].live--;
    p->gone = true;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return b <= 0 ? a : (a + b - 1) / b;
}

/* Adds a placement planned by this plan (state requested) on slot s; returns its index. */
static size_t pl_add(struct work *w, size_t model, const struct slot *s, int64_t memory,
                     int64_t replaces_id)
{
    w->pls = xgrow(w->pls, &w->cap_pls, w->n_pls + 1, sizeof *w->pls);
    size_t i = w->n_pls++;
    struct wpl *p = &w->pls[i];
    memset(p, 0, sizeof *p);
    p->model = model;
    p->node = s->node;
    p->state = PLAN_PLACEMENT_REQUESTED;
    memcpy(p->devs, s->devs, s->ndev * sizeof s->devs[0]);
    p->ndev = s->ndev;
    p->memory = memory;
    p->share = s->share;
    p->replaces_id = replaces_id;
    for (size_t k = 0; k < p->ndev; k++)
        w->devs[p->devs[k]].used += p->share;
    w->models[model].live++;
    return i;
}

static void work_build(struct work *w)
{
    const struct plan_fleet *f = w->f;
    size_t total_devs = 0;
    for (size_t i = 0; i < f->n_nodes; i++)
        total_devs += f->nodes[i].n_devices;
    w->nodes = xcalloc(f->n_nodes ? f->n_nodes : 1, sizeof *w->nodes);
    w->devs = xcalloc(total_devs ? total_devs : 1, sizeof *w->devs);
    for (size_t i = 0; i < f->n_nodes; i++) {
        struct wnode *n = &w->nodes[w->n_nodes++];
        n->n = &f->nodes[i];
        n->dev0 = w->n_devs;
        for (size_t k = 0; k < n->n->n_devices; k++) {
            struct wdev *d = &w->devs[w->n_devs++];
            d->d = &n->n->devices[k];
            d->node = i;
            d->cap = d->d->total_bytes - (d->d->cpu ? 0 : w->s->device_reserve_bytes);
            if (d->cap < 0)
                d->cap = 0;
            n->gpu = n->gpu || !d->d->cpu;
        }
        n->ndev = w->n_devs - n->dev0;
    }

    w->models = xcalloc(f->n_models ? f->n_models : 1, sizeof *w->models);
    for (size_t i = 0; i < f->n_models; i++) {
        w->models[i].m = &f->models[i];
        w->models[i].failures = f->models[i].load_failures;
    }
    w->n_models = f->n_models;

    for (size_t i = 0; i < f->n_demands; i++) {
        size_t m = work_find_model(w, f->demands[i].model_id);
        if (m != NONE && f->demands[i].kind == PLAN_DEMAND_LOAD)
            w->models[m].demanded = true;
    }

    for (size_t i = 0; i < f->n_placements; i++) {
        const struct plan_placement *src = &f->placements[i];
        size_t node = work_find_node(w, src->node_id);
        if (node == NONE || w->nodes[node].n->state == PLAN_NODE_DOWN || src->n_devices == 0 ||
            src->n_devices > PLAN_MAX_DEVICES)
            continue;
        struct wpl p = {.p = src,
                        .id = src->id,
                        .model = work_find_model(w, src->model_id),
                        .node = node,
                        .state = src->state,
                        .idle_ms = src->idle_ms,
                        .in_state_ms = src->in_state_ms,
                        .in_flight = src->in_flight,
                        .replaces_id = src->replaces_id};
        bool devices_ok = true;
        for (size_t k = 0; k < src->n_devices && devices_ok; k++) {
            const struct wnode *n = &w->nodes[node];
            size_t found = NONE;
            for (size_t d = n->dev0; d < n->dev0 + n->ndev; d++) {
                if (w->devs[d].d->id == src->device_ids[k])
                    found = d;
            }
            devices_ok = found != NONE;
            p.devs[p.ndev++] = found;
        }
        if (!devices_ok)
            continue;
        p.memory = src->memory_bytes > 0 ? src->memory_bytes
                   : p.model != NONE     ? w->models[p.model].m->memory_bytes
                                         : 0;
        p.share = ceil_div(p.memory, (int64_t)p.ndev);
        w->pls = xgrow(w->pls, &w->cap_pls, w->n_pls + 1, sizeof *w->pls);
        size_t idx = w->n_pls++;
        w->pls[idx] = p;
        for (size_t k = 0; k < p.ndev; k++)
            w->devs[p.devs[k]].used += p.share;
        if (p.model != NONE)
            w->models[p.model].live++;
        if (p.state == PLAN_PLACEMENT_UNLOADING)
            pl_leave(w, idx);
    }
}

static void work_free(struct work *w)
{
    free(w->nodes);
    free(w->devs);
    free(w->models);
    free(w->pls);
    free(w->wants);
}

/* ---- finding room ----------------------------------------------------------------------- */

static int64_t dev_free(const struct work *w, size_t d, enum fit fit)
{
    const struct wdev *v = &w->devs[d];
    switch (fit) {
    case FIT_NOW:
        return v->cap - v->used;
    case FIT_AFTER_LEAVING:
        return v->cap - v->used + v->leaving;
    case FIT_EMPTY:
        return v->cap;
    }
    return 0;
}

/* Whether node n may take a new replica of model m (only_node: NONE or the one node allowed). */
static bool node_candidate(const struct work *w, size_t n, size_t m, size_t only_node)
{
    if (!node_usable(w, n) || (only_node != NONE && n != only_node))
        return false;
    return !w->s->require_files || node_holds_files(w, n, m);
}

/* Whether node n already runs a replica of model m that is staying. */
static bool node_has_replica(const struct work *w, size_t n, size_t m)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        const struct wpl *p = &w->pls[i];
        if (!p->gone && !p->leaving && p->model == m && p->node == n)
            return true;
    }
    return false;
}

/* Node preference for a new replica of model m, lower is better: spread replicas over nodes
 * first, then avoid a node where its load just failed, then prefer holders of its files. */
static int node_rank(const struct work *w, size_t n, size_t m)
{
    return (node_has_replica(w, n, m) ? 4 : 0) + (node_failed_model(w, n, m) ? 2 : 0) +
           (node_holds_files(w, n, m) ? 0 : 1);
}

/* The devices of node n a replica of model m may use (excluded: optional per-device flags),
 * the group size and the per-device share. Returns the number of eligible devices. */
static size_t node_group_shape(const struct work *w, size_t n, size_t m, const bool *excluded,
                               size_t *eligible, size_t *group, int64_t *share)
{
    const struct wnode *node = &w->nodes[n];
    const struct plan_model *pm = w->models[m].m;
    size_t count = 0;
    for (size_t d = node->dev0; d < node->dev0 + node->ndev; d++) {
        if (excluded != NULL && excluded[d])
            continue;
        if (node->gpu == !w->devs[d].d->cpu)
            eligible[count++] = d;
    }
    *group = node->gpu ? (size_t)(pm->tensor_parallel > 0 ? pm->tensor_parallel : 1) : 1;
    *share = node->gpu ? ceil_div(pm->memory_bytes, (int64_t)*group) : pm->memory_bytes;
    return count;
}

/* Steps idx[0..k) to the next k-combination of 0..n-1; false after the last one. */
static bool combination_next(size_t *idx, size_t k, size_t n)
{
    size_t i = k;
    while (i > 0) {
        i--;
        if (idx[i] < n - k + i) {
            idx[i]++;
            for (size_t j = i + 1; j < k; j++)
                idx[j] = idx[j - 1] + 1;
            return true;
        }
    }
    return false;
}

/* Best fit for one replica of model m: the candidate group with the best node rank, then the
 * least memory left over. Returns false when no group fits under fit. */
static bool slot_find(const struct work *w, size_t m, size_t only_node, const bool *excluded,
                      enum fit fit, struct slot *best)
{
    bool found = false;
    size_t eligible[PLAN_MAX_DEVICES * 4];
    size_t idx[PLAN_MAX_DEVICES];
    for (size_t n = 0; n < w->n_nodes; n++) {
        if (!node_candidate(w, n, m, only_node) || w->nodes[n].ndev > PLAN_MAX_DEVICES * 4)
            continue;
        size_t group;
        int64_t share;
        size_t count = node_group_shape(w, n, m, excluded, eligible, &group, &share);
        if (group == 0 || group > count || group > PLAN_MAX_DEVICES)
            continue;
        int rank = node_rank(w, n, m);
        for (size_t i = 0; i < group; i++)
            idx[i] = i;
        size_t tries = 0;
        do {
            int64_t leftover = 0;
            bool fits = true;
            for (size_t i = 0; i < group && fits; i++) {
                int64_t free_ = dev_free(w, eligible[idx[i]], fit);
                fits = free_ >= share;
                leftover += free_ - share;
            }
            if (fits && (!found || rank < best->rank ||
                         (rank == best->rank && leftover < best->leftover))) {
                found = true;
                best->node = n;
                best->ndev = group;
                for (size_t i = 0; i < group; i++)
                    best->devs[i] = eligible[idx[i]];
                best->share = share;
                best->leftover = leftover;
                best->rank = rank;
            }
        } while (++tries < PLAN_MAX_GROUPS && combination_next(idx, group, count));
    }
    return found;
}

/* Whether any live, non-draining node could take model m (files permitting) at all. */
static bool any_candidate_node(const struct work *w, size_t m, size_t only_node)
{
    for (size_t n = 0; n < w->n_nodes; n++) {
        if (node_candidate(w, n, m, only_node))
            return true;
    }
    return false;
}

/* ---- eviction --------------------------------------------------------------------------- */

/* Whether placement i may be evicted to make room for model m. */
static bool evictable(const struct work *w, size_t i, size_t m)
{
    const struct wpl *p = &w->pls[i];
    if (p->gone || p->leaving || p->p == NULL || p->state != PLAN_PLACEMENT_READY ||
        p->model == NONE || p->model == m)
        return false;
    const struct wmodel *pm = &w->models[p->model];
    if (pm->m->pinned || pm->demanded)
        return false;
    if (p->in_flight != 0 && !w->s->evict_in_flight)
        return false;
    /* A replacement whose original still runs is a move in progress, not a spare replica. */
    return p->replaces_id == 0 || work_find_placement(w, p->replaces_id) == NONE;
}

/* Orders eviction candidates: lru = idle longest first; priority = lowest priority first,
 * then idle longest. Ties by placement id, so plans are deterministic. */
static int evict_compare(const void *a, const void *b, void *ud)
{
    const struct work *w = ud;
    const struct wpl *x = &w->pls[*(const size_t *)a], *y = &w->pls[*(const size_t *)b];
    if (w->s->eviction == PLAN_EVICTION_PRIORITY) {
        int px = w->models[x->model].m->priority, py = w->models[y->model].m->priority;
        if (px != py)
            return px < py ? -1 : 1;
    }
    if (x->idle_ms != y->idle_ms)
        return x->idle_ms > y->idle_ms ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

struct eviction {
    struct slot slot;
    size_t *victims; /* placement indices, in eviction order */
    size_t n_victims;
    size_t max_rank; /* position of the most valuable victim in eviction order */
    int64_t leftover;
};

/* Finds the cheapest set of replicas to evict so that model m fits on one group: the set whose
 * most valuable victim comes earliest in eviction order, then the fewest victims, then the
 * best node, then the best fit. ev->victims is allocated (the caller frees it). */
static bool evict_find(const struct work *w, size_t m, size_t only_node, struct eviction *ev)
{
    size_t *order = xcalloc(w->n_pls ? w->n_pls : 1, sizeof *order);
    size_t n_order = 0;
    for (size_t i = 0; i < w->n_pls; i++) {
        if (evictable(w, i, m))
            order[n_order++] = i;
    }
    qsort_r(order, n_order, sizeof *order, evict_compare, (void *)w);

    size_t *taken = xcalloc(n_order ? n_order : 1, sizeof *taken);
    int *taken_of_model = xcalloc(w->n_models ? w->n_models : 1, sizeof *taken_of_model);
    size_t eligible[PLAN_MAX_DEVICES * 4];
    size_t idx[PLAN_MAX_DEVICES];
    int64_t need[PLAN_MAX_DEVICES];
    bool found = false;
    ev->victims = NULL;
    ev->n_victims = 0;

    for (size_t n = 0; n < w->n_nodes && n_order > 0; n++) {
        if (!node_candidate(w, n, m, only_node) || w->nodes[n].ndev > PLAN_MAX_DEVICES * 4)
            continue;
        size_t group;
        int64_t share;
        size_t count = node_group_shape(w, n, m, NULL, eligible, &group, &share);
        if (group == 0 || group > count || group > PLAN_MAX_DEVICES)
            continue;
        int rank = node_rank(w, n, m);
        for (size_t i = 0; i < group; i++)
            idx[i] = i;
        size_t tries = 0;
        do {
            bool short_ = false, impossible = false;
            for (size_t i = 0; i < group; i++) {
                size_t d = eligible[idx[i]];
                need[i] = share - dev_free(w, d, FIT_AFTER_LEAVING);
                short_ = short_ || need[i] > 0;
                impossible = impossible || w->devs[d].cap < share;
            }
            if (!short_ || impossible)
                continue;
            memset(taken_of_model, 0, w->n_models * sizeof *taken_of_model);
            size_t n_taken = 0, max_rank = 0;
            bool done = false;
            for (size_t r = 0; r < n_order && !done; r++) {
                const struct wpl *v = &w->pls[order[r]];
                if (v->node != n)
                    continue;
                const struct wmodel *vm = &w->models[v->model];
                if (vm->live - taken_of_model[v->model] <= vm->m->min_replicas)
                    continue;
                bool helps = false;
                for (size_t k = 0; k < v->ndev; k++) {
                    for (size_t i = 0; i < group; i++)
                        helps = helps || (v->devs[k] == eligible[idx[i]] && need[i] > 0);
                }
                if (!helps)
                    continue;
                for (size_t k = 0; k < v->ndev; k++) {
                    for (size_t i = 0; i < group; i++) {
                        if (v->devs[k] == eligible[idx[i]])
                            need[i] -= v->share;
                    }
                }
                taken_of_model[v->model]++;
                taken[n_taken++] = order[r];
                max_rank = r;
                done = true;
                for (size_t i = 0; i < group; i++)
                    done = done && need[i] <= 0;
            }
            if (!done)
                continue;
            int64_t leftover = 0;
            for (size_t i = 0; i < group; i++)
                leftover -= need[i];
            bool better = !found || max_rank < ev->max_rank ||
                          (max_rank == ev->max_rank &&
                           (n_taken < ev->n_victims ||
                            (n_taken == ev->n_victims &&
                             (rank < ev->slot.rank ||
                              (rank == ev->slot.rank && leftover < ev->leftover)))));
            if (!better)
                continue;
            found = true;
            ev->slot.node = n;
            ev->slot.ndev = group;
            for (size_t i = 0; i < group; i++)
                ev->slot.devs[i] = eligible[idx[i]];
            ev->slot.share = share;
            ev->slot.rank = rank;
            ev->max_rank = max_rank;
            ev->leftover = leftover;
            free(ev->victims);
            ev->victims = xcalloc(n_taken, sizeof *ev->victims);
            memcpy(ev->victims, taken, n_taken * sizeof *taken);
            ev->n_victims = n_taken;
        } while (++tries < PLAN_MAX_GROUPS && combination_next(idx, group, count));
    }
    free(order);
    free(taken);
    free(taken_of_model);
    return found;
}

/* ---- defragmentation -------------------------------------------------------------------- */

struct move {
    size_t placement;
    struct slot to;
};

struct defrag {
    struct slot slot; /* where the waiting model will fit */
    struct move *moves;
    size_t n_moves;
    int64_t bytes_moved;
};

static int blocker_compare(const void *a, const void *b, void *ud)
{
    const struct work *w = ud;
    const struct wpl *x = &w->pls[*(const size_t *)a], *y = &w->pls[*(const size_t *)b];
    if (x->memory != y->memory)
        return x->memory < y->memory ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Whether any move (a replacement whose original still runs) is in progress. */
static bool moves_in_progress(const struct work *w)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        if (!w->pls[i].gone && w->pls[i].replaces_id != 0 &&
            work_find_placement(w, w->pls[i].replaces_id) != NONE)
            return true;
    }
    return false;
}

/* Finds replicas to move (make before break, no eviction) off one group of devices so that
 * model m fits there: the plan moving the fewest bytes. d->moves is allocated. */
static bool defrag_find(struct work *w, size_t m, size_t only_node, struct defrag *df)
{
    size_t eligible[PLAN_MAX_DEVICES * 4];
    size_t idx[PLAN_MAX_DEVICES];
    int64_t need[PLAN_MAX_DEVICES];
    int64_t *saved = xcalloc(w->n_devs ? w->n_devs : 1, sizeof *saved);
    bool *excluded = xcalloc(w->n_devs ? w->n_devs : 1, sizeof *excluded);
    size_t *blockers = xcalloc(w->n_pls ? w->n_pls : 1, sizeof *blockers);
    struct move *moves = xcalloc(w->n_pls ? w->n_pls : 1, sizeof *moves);
    bool found = false;
    df->moves = NULL;
    df->n_moves = 0;

    for (size_t n = 0; n < w->n_nodes; n++) {
        if (!node_candidate(w, n, m, only_node) || w->nodes[n].ndev > PLAN_MAX_DEVICES * 4)
            continue;
        size_t group;
        int64_t share;
        size_t count = node_group_shape(w, n, m, NULL, eligible, &group, &share);
        if (group == 0 || group > count || group > PLAN_MAX_DEVICES)
            continue;
        for (size_t i = 0; i < group; i++)
            idx[i] = i;
        size_t tries = 0;
        do {
            bool possible = true;
            for (size_t i = 0; i < group; i++) {
                size_t d = eligible[idx[i]];
                need[i] = share - dev_free(w, d, FIT_NOW);
                possible = possible && w->devs[d].cap >= share && w->devs[d].leaving == 0;
            }
            if (!possible)
                continue;
            /* Only ready, settled replicas can be moved; anything else on the group waits. */
            size_t n_blockers = 0;
            for (size_t i = 0; i < w->n_pls && possible; i++) {
                const struct wpl *p = &w->pls[i];
                if (p->gone)
                    continue;
                bool touches = false;
                for (size_t k = 0; k < p->ndev; k++) {
                    for (size_t g = 0; g < group; g++)
                        touches = touches || p->devs[k] == eligible[idx[g]];
                }
                if (!touches)
                    continue;
                if (p->state != PLAN_PLACEMENT_READY || p->model == NONE || p->p == NULL)
                    possible = false;
                else
                    blockers[n_blockers++] = i;
            }
            if (!possible || n_blockers == 0)
                continue;
            qsort_r(blockers, n_blockers, sizeof *blockers, blocker_compare, w);

            for (size_t d = 0; d < w->n_devs; d++)
                saved[d] = w->devs[d].used;
            memset(excluded, 0, w->n_devs * sizeof *excluded);
            for (size_t g = 0; g < group; g++)
                excluded[eligible[idx[g]]] = true;
            size_t n_moves = 0;
            int64_t bytes = 0;
            bool done = false;
            for (size_t b = 0; b < n_blockers && !done; b++) {
                const struct wpl *p = &w->pls[blockers[b]];
                bool helps = false;
                for (size_t k = 0; k < p->ndev; k++) {
                    for (size_t g = 0; g < group; g++)
                        helps = helps || (p->devs[k] == eligible[idx[g]] && need[g] > 0);
                }
                struct slot to;
                if (!helps || !slot_find(w, p->model, NONE, excluded, FIT_NOW, &to))
                    continue;
                for (size_t k = 0; k < to.ndev; k++)
                    w->devs[to.devs[k]].used += to.share;
                moves[n_moves].placement = blockers[b];
                moves[n_moves++].to = to;
                bytes += p->memory;
                for (size_t k = 0; k < p->ndev; k++) {
                    for (size_t g = 0; g < group; g++) {
                        if (p->devs[k] == eligible[idx[g]])
                            need[g] -= p->share;
                    }
                }
                done = true;
                for (size_t g = 0; g < group; g++)
                    done = done && need[g] <= 0;
            }
            for (size_t d = 0; d < w->n_devs; d++)
                w->devs[d].used = saved[d];
            if (!done || (found && bytes >= df->bytes_moved))
                continue;
            found = true;
            df->slot.node = n;
            df->slot.ndev = group;
            for (size_t g = 0; g < group; g++)
                df->slot.devs[g] = eligible[idx[g]];
            df->slot.share = share;
            df->bytes_moved = bytes;
            free(df->moves);
            df->moves = xcalloc(n_moves, sizeof *df->moves);
            memcpy(df->moves, moves, n_moves * sizeof *moves);
            df->n_moves = n_moves;
        } while (++tries < PLAN_MAX_GROUPS && combination_next(idx, group, count));
    }
    free(saved);
    free(excluded);
    free(blockers);
    free(moves);
    return found;
}

/* ---- the policies ----------------------------------------------------------------------- */

static void plan_load(struct work *w, size_t m, const struct slot *s, enum plan_cause cause,
                      int64_t demand_id, int64_t replaces_id, const char *why)
{
    const struct plan_model *pm = w->models[m].m;
    char need[32], left[32];
    struct buf where = BUF_INIT;
    group_label(w, s->node, s->devs, s->ndev, &where);
    struct plan_action *a = plan_push(
            w, PLAN_ACTION_LOAD, cause, "%s: load %s on %s (needs %s; best fit leaves %s free%s)",
            why, pm->name, buf_cstr(&where), plan_format_bytes(pm->memory_bytes, need, sizeof need),
            plan_format_bytes(s->leftover, left, sizeof left),
            node_holds_files(w, s->node, m) ? "; the node holds its files" : "");
    buf_free(&where);
    a->model_id = pm->id;
    a->node_id = w->nodes[s->node].n->id;
    a->demand_id = demand_id;
    a->replaces_id = replaces_id;
    a->memory_bytes = pm->memory_bytes;
    a->n_devices = s->ndev;
    for (size_t i = 0; i < s->ndev; i++) {
        a->device_ids[i] = w->devs[s->devs[i]].d->id;
        a->device_ordinals[i] = w->devs[s->devs[i]].d->ordinal;
    }
    pl_add(w, m, s, pm->memory_bytes, replaces_id);
}

static struct plan_action *plan_unload(struct work *w, size_t i, enum plan_cause cause,
                                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Plans the unload of placement i with a reason and marks it leaving. */
static struct plan_action *plan_unload(struct work *w, size_t i, enum plan_cause cause,
                                       const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&b, fmt, ap);
    va_end(ap);
    struct plan_action *a = plan_push(w, PLAN_ACTION_UNLOAD, cause, "%s", buf_cstr(&b));
    buf_free(&b);
    const struct wpl *p = &w->pls[i];
    a->placement_id = p->id;
    a->model_id = p->model != NONE ? w->models[p->model].m->id : 0;
    a->node_id = w->nodes[p->node].n->id;
    pl_leave(w, i);
    return a;
}

static struct plan_action *plan_wait(struct work *w, size_t m, enum plan_cause cause,
                                     int64_t demand_id, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static struct plan_action *plan_wait(struct work *w, size_t m, enum plan_cause cause,
                                     int64_t demand_id, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&b, fmt, ap);
    va_end(ap);
    struct plan_action *a = plan_push(w, PLAN_ACTION_WAIT, cause, "%s", buf_cstr(&b));
    buf_free(&b);
    a->model_id = w->models[m].m->id;
    a->demand_id = demand_id;
    return a;
}

static void plan_resolve(struct work *w, const struct plan_demand *d,
                         enum plan_resolution resolution, enum plan_cause cause,
                         int64_t placement_id, const char *reason)
{
    struct plan_action *a = plan_push(w, PLAN_ACTION_RESOLVE, cause, "%s", reason);
    a->demand_id = d->id;
    a->model_id = d->model_id;
    a->node_id = d->node_id;
    a->placement_id = placement_id;
    a->resolution = resolution;
}

/* 1. Nodes silent beyond the grace period: mark them down; their placements are over. */
static void policy_dead_nodes(struct work *w)
{
    for (size_t n = 0; n < w->n_nodes; n++) {
        if (w->nodes[n].n->state != PLAN_NODE_DEAD)
            continue;
        size_t ended = 0;
        for (size_t i = 0; i < w->n_pls; i++) {
            if (w->pls[i].node == n && !w->pls[i].gone) {
                pl_gone(w, i);
                ended++;
            }
        }
        struct plan_action *a =
                plan_push(w, PLAN_ACTION_MARK_DEAD, PLAN_CAUSE_NODE_DEAD,
                          "node %s sent no heartbeat within heartbeat_grace: marked down, %zu "
                          "placement(s) end",
                          node_name(w, n), ended);
        a->node_id = w->nodes[n].n->id;
    }
}

/* 2. Loads and unloads that took longer than load_timeout fail. */
static void policy_timeouts(struct work *w)
{
    char took[32], limit[32];
    for (size_t i = 0; i < w->n_pls; i++) {
        struct wpl *p = &w->pls[i];
        if (p->gone || p->p == NULL || p->in_state_ms <= w->s->load_timeout_ms)
            continue;
        bool loading = p->state == PLAN_PLACEMENT_REQUESTED || p->state == PLAN_PLACEMENT_LOADING;
        if (!loading && p->state != PLAN_PLACEMENT_UNLOADING)
            continue;
        struct plan_action *a = plan_push(
                w, PLAN_ACTION_FAIL, PLAN_CAUSE_TIMEOUT,
                "%s of %s on %s did not finish within load_timeout %s (%s for %s)",
                loading ? "load" : "unload", model_name(w, p->model), node_name(w, p->node),
                plan_format_duration(w->s->load_timeout_ms, limit, sizeof limit),
                p->state == PLAN_PLACEMENT_REQUESTED ? "requested"
                : loading                            ? "loading"
                                                     : "unloading",
                plan_format_duration(p->in_state_ms, took, sizeof took));
        a->placement_id = p->id;
        a->model_id = p->model != NONE ? w->models[p->model].m->id : 0;
        a->node_id = w->nodes[p->node].n->id;
        if (loading && p->model != NONE)
            w->models[p->model].failures++;
        pl_gone(w, i);
    }
}

/* 3. Moves: a ready replacement retires the placement it replaces; a pending one marks it as
 * leaving, so nobody else claims the room the move is making. */
static void policy_moves(struct work *w)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        if (w->pls[i].gone || w->pls[i].replaces_id == 0)
            continue;
        size_t old = work_find_placement(w, w->pls[i].replaces_id);
        if (old == NONE || w->pls[old].leaving)
            continue;
        const struct wpl *r = &w->pls[i], *o = &w->pls[old];
        if (r->state == PLAN_PLACEMENT_READY && o->state == PLAN_PLACEMENT_READY) {
            if (o->in_flight == 0 || w->s->evict_in_flight) {
                struct buf where = BUF_INIT;
                group_label(w, r->node, r->devs, r->ndev, &where);
                plan_unload(w, old, PLAN_CAUSE_MOVED, "moved: placement %lld on %s is ready",
                            (long long)r->id, buf_cstr(&where));
                buf_free(&where);
            } else {
                if (o->model != NONE)
                    plan_wait(w, o->model, PLAN_CAUSE_MOVED, 0,
                              "moved to placement %lld; the old replica on %s finishes %d "
                              "request(s) first",
                              (long long)r->id, node_name(w, o->node), o->in_flight);
                pl_leave(w, old);
            }
        } else if (r->state == PLAN_PLACEMENT_REQUESTED || r->state == PLAN_PLACEMENT_LOADING) {
            pl_leave(w, old);
        }
    }
}

static void want_add(struct work *w, enum want_kind kind, size_t m, int64_t demand_id,
                     size_t only_node, size_t moving)
{
    w->wants = xgrow(w->wants, &w->cap_wants, w->n_wants + 1, sizeof *w->wants);
    w->wants[w->n_wants++] = (struct want){.kind = kind,
                                           .model = m,
                                           .demand_id = demand_id,
                                           .only_node = only_node,
                                           .moving = moving};
}

/* The first live placement of model m (on node n unless NONE) in one of the states wanted. */
static size_t find_model_placement(const struct work *w, size_t m, size_t n, bool ready,
                                   bool pending)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        const struct wpl *p = &w->pls[i];
        if (p->gone || p->model != m || (n != NONE && p->node != n))
            continue;
        if (ready && p->state == PLAN_PLACEMENT_READY)
            return i;
        if (pending && !p->leaving &&
            (p->state == PLAN_PLACEMENT_REQUESTED || p->state == PLAN_PLACEMENT_LOADING))
            return i;
    }
    return NONE;
}

/* Whether model m has failed too often to be placed; a demand opened after the latest failure
 * (after_failure) asks again: then the count is reset (RETRY) once per plan. */
static bool model_blocked(struct work *w, size_t m, bool after_failure)
{
    struct wmodel *wm = &w->models[m];
    if (wm->failures < w->s->max_load_attempts)
        return false;
    if (!after_failure)
        return true;
    struct plan_action *a = plan_push(w, PLAN_ACTION_RETRY, PLAN_CAUSE_DEMAND,
                                      "new demand after %d failed loads of %s: trying again",
                                      wm->failures, wm->m->name);
    a->model_id = wm->m->id;
    wm->failures = 0;
    wm->retried = true;
    return false;
}

/* 4. Open demand. */
static void policy_demand(struct work *w)
{
    char ago[32], ttl[32], need[32];
    for (size_t i = 0; i < w->f->n_demands; i++) {
        const struct plan_demand *d = &w->f->demands[i];
        size_t m = work_find_model(w, d->model_id);
        if (m == NONE) {
            plan_resolve(w, d, PLAN_RESOLUTION_CANCELLED, PLAN_CAUSE_DEMAND, 0,
                         "the model is no longer in the catalogue");
            continue;
        }
        const struct plan_model *pm = w->models[m].m;
        size_t node = NONE;
        if (d->node_id != 0) {
            node = work_find_node(w, d->node_id);
            if (node == NONE) {
                plan_resolve(w, d, PLAN_RESOLUTION_CANCELLED, PLAN_CAUSE_DEMAND, 0,
                             "the node is no longer registered");
                continue;
            }
        }

        if (d->kind == PLAN_DEMAND_UNLOAD) {
            if (pm->pinned) {
                plan_resolve(w, d, PLAN_RESOLUTION_CANCELLED, PLAN_CAUSE_DEMAND, 0,
                             "the model is pinned; unpin it first");
                continue;
            }
            size_t unloaded = 0;
            bool requested = false;
            for (size_t k = 0; k < w->n_pls; k++) {
                const struct wpl *p = &w->pls[k];
                if (p->gone || p->leaving || p->model != m || (node != NONE && p->node != node))
                    continue;
                if (p->state == PLAN_PLACEMENT_REQUESTED) {
                    requested = true;
                    continue;
                }
                plan_unload(w, k, PLAN_CAUSE_DEMAND, "operator asked to unload %s", pm->name);
                unloaded++;
            }
            if (requested) {
                plan_wait(w, m, PLAN_CAUSE_DEMAND, d->id,
                          "unload of %s waits until its requested load has started", pm->name);
                continue;
            }
            struct buf why = BUF_INIT;
            buf_appendf(&why, "unloading %zu replica(s) of %s", unloaded, pm->name);
            plan_resolve(w, d, PLAN_RESOLUTION_SATISFIED, PLAN_CAUSE_DEMAND, 0, buf_cstr(&why));
            buf_free(&why);
            continue;
        }

        if (d->wanted_ago_ms > w->s->demand_ttl_ms) {
            struct buf why = BUF_INIT;
            buf_appendf(&why, "nobody asked for %s for %s (demand_ttl %s)", pm->name,
                        plan_format_duration(d->wanted_ago_ms, ago, sizeof ago),
                        plan_format_duration(w->s->demand_ttl_ms, ttl, sizeof ttl));
            plan_resolve(w, d, PLAN_RESOLUTION_EXPIRED, PLAN_CAUSE_DEMAND, 0, buf_cstr(&why));
            buf_free(&why);
            continue;
        }
        size_t ready = find_model_placement(w, m, node, true, false);
        if (ready != NONE) {
            struct buf why = BUF_INIT;
            buf_appendf(&why, "%s is ready on %s", pm->name, node_name(w, w->pls[ready].node));
            plan_resolve(w, d, PLAN_RESOLUTION_SATISFIED, PLAN_CAUSE_DEMAND, w->pls[ready].id,
                         buf_cstr(&why));
            buf_free(&why);
            continue;
        }
        if (find_model_placement(w, m, node, false, true) != NONE)
            continue; /* loading: resolved once ready (or failed: placed again) */
        if (node != NONE &&
            (w->nodes[node].n->state == PLAN_NODE_DEAD ||
             w->nodes[node].n->state == PLAN_NODE_DOWN || w->nodes[node].n->draining)) {
            struct buf why = BUF_INIT;
            buf_appendf(&why, "node %s is %s", node_name(w, node),
                        w->nodes[node].n->draining ? "draining" : "down");
            plan_resolve(w, d, PLAN_RESOLUTION_CANCELLED, PLAN_CAUSE_DEMAND, 0, buf_cstr(&why));
            buf_free(&why);
            continue;
        }
        if (pm->memory_bytes <= 0) {
            plan_resolve(w, d, PLAN_RESOLUTION_FAILED, PLAN_CAUSE_DEMAND, 0,
                         "the memory need of the model is unknown: no node's scan estimated it "
                         "and models.memory_bytes is not set");
            continue;
        }
        if (model_blocked(w, m, d->after_failure)) {
            struct buf why = BUF_INIT;
            buf_appendf(&why, "%d failed loads (max_load_attempts %d): %s", w->models[m].failures,
                        w->s->max_load_attempts,
                        pm->last_load_error ? pm->last_load_error : "no reason recorded");
            plan_resolve(w, d, PLAN_RESOLUTION_FAILED, PLAN_CAUSE_FAILURES, 0, buf_cstr(&why));
            buf_free(&why);
            continue;
        }
        /* A model too big for every candidate node can never be served: say so now. */
        struct slot s;
        if (any_candidate_node(w, m, node) && !slot_find(w, m, node, NULL, FIT_EMPTY, &s)) {
            struct buf why = BUF_INIT;
            buf_appendf(&why,
                        "%s needs %s on %d device(s) of one node; no live node has devices that "
                        "large",
                        pm->name, plan_format_bytes(pm->memory_bytes, need, sizeof need),
                        pm->tensor_parallel);
            plan_resolve(w, d, PLAN_RESOLUTION_FAILED, PLAN_CAUSE_DEMAND, 0, buf_cstr(&why));
            buf_free(&why);
            continue;
        }
        want_add(w, WANT_DEMAND, m, d->id, node, NONE);
    }
}

/* 5. Idle replicas past their TTL. */
static void policy_idle(struct work *w)
{
    char idle[32], ttl[32];
    for (size_t i = 0; i < w->n_pls; i++) {
        const struct wpl *p = &w->pls[i];
        if (p->gone || p->leaving || p->p == NULL || p->state != PLAN_PLACEMENT_READY ||
            p->model == NONE || p->in_flight != 0)
            continue;
        const struct wmodel *wm = &w->models[p->model];
        if (wm->m->pinned || wm->demanded || wm->m->idle_ttl_ms <= 0 ||
            p->idle_ms <= wm->m->idle_ttl_ms || wm->live <= wm->m->min_replicas)
            continue;
        plan_unload(w, i, PLAN_CAUSE_IDLE, "%s on %s idle for %s (idle_ttl %s)", wm->m->name,
                    node_name(w, p->node), plan_format_duration(p->idle_ms, idle, sizeof idle),
                    plan_format_duration(wm->m->idle_ttl_ms, ttl, sizeof ttl));
    }
}

/* Number of replicas model m should keep without demand. */
static int replicas_target(const struct plan_model *pm)
{
    int target = pm->min_replicas;
    if (pm->pinned && target < 1)
        target = 1;
    return target;
}

/* 6a. Pinned models and min_replicas. */
static void collect_replica_wants(struct work *w)
{
    for (size_t m = 0; m < w->n_models; m++) {
        struct wmodel *wm = &w->models[m];
        int target = replicas_target(wm->m);
        if (wm->live >= target)
            continue;
        if (wm->m->memory_bytes <= 0) {
            plan_wait(w, m, PLAN_CAUSE_REPLICAS, 0,
                      "%s should keep %d replica(s) but its memory need is unknown", wm->m->name,
                      target);
            continue;
        }
        if (wm->failures >= w->s->max_load_attempts) {
            plan_wait(w, m, PLAN_CAUSE_FAILURES, 0,
                      "%s failed %d loads (max_load_attempts): not retried until "
                      "cortex.request_load or new demand; last error: %s",
                      wm->m->name, wm->failures,
                      wm->m->last_load_error ? wm->m->last_load_error : "none recorded");
            continue;
        }
        for (int k = wm->live; k < target; k++)
            want_add(w, WANT_REPLICAS, m, 0, NONE, NONE);
    }
}

/* 6b. Replicas on draining nodes move (make before break) when they are still needed. */
static void collect_drain_wants(struct work *w)
{
    for (size_t i = 0; i < w->n_pls; i++) {
        const struct wpl *p = &w->pls[i];
        if (p->gone || p->leaving || p->p == NULL || p->model == NONE ||
            !w->nodes[p->node].n->draining || p->state != PLAN_PLACEMENT_READY)
            continue;
        const struct wmodel *wm = &w->models[p->model];
        int elsewhere = 0;
        for (size_t k = 0; k < w->n_pls; k++) {
            const struct wpl *q = &w->pls[k];
            elsewhere += k != i && !q->gone && !q->leaving && q->model == p->model &&
                         !w->nodes[q->node].n->draining && q->state == PLAN_PLACEMENT_READY;
        }
        /* Replicas the model needs off draining nodes: its pinned/min_replicas count (a
         * min_replicas of 2 with one replica elsewhere still needs this one moved), else one
         * while it is demanded or used within its TTL. */
        int keep = replicas_target(wm->m);
        if (keep < 1 && (wm->demanded || p->idle_ms < wm->m->idle_ttl_ms))
            keep = 1;
        if (elsewhere < keep) {
            want_add(w, WANT_DRAIN, p->model, 0, NONE, i);
            continue;
        }
        if (p->in_flight != 0) {
            plan_wait(w, p->model, PLAN_CAUSE_DRAIN, 0,
                      "%s drains; %s finishes %d request(s) before it unloads",
                      node_name(w, p->node), wm->m->name, p->in_flight);
            continue;
        }
        plan_unload(w, i, PLAN_CAUSE_DRAIN, "%s drains; %s %s", node_name(w, p->node), wm->m->name,
                    elsewhere ? "has a ready replica elsewhere" : "is not in use");
    }
}

static int want_compare(const void *a, const void *b, void *ud)
{
    const struct work *w = ud;
    const struct want *x = a, *y = b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    const struct plan_model *mx = w->models[x->model].m, *my = w->models[y->model].m;
    if (x->kind == WANT_REPLICAS && mx->pinned != my->pinned)
        return mx->pinned ? -1 : 1;
    if (x->kind != WANT_DRAIN && mx->priority != my->priority)
        return mx->priority > my->priority ? -1 : 1;
    if (x->demand_id != y->demand_id)
        return x->demand_id < y->demand_id ? -1 : 1;
    if (x->moving != y->moving)
        return x->moving < y->moving ? -1 : 1;
    return mx->id < my->id ? -1 : mx->id > my->id;
}

static enum plan_cause want_cause(const struct want *wt)
{
    switch (wt->kind) {
    case WANT_REPLICAS:
        return PLAN_CAUSE_REPLICAS;
    case WANT_DEMAND:
        return PLAN_CAUSE_DEMAND;
    case WANT_DRAIN:
        return PLAN_CAUSE_DRAIN;
    }
    return PLAN_CAUSE_DEMAND;
}

/* Whether the want still needs a new replica, now that earlier wants were served. */
static bool want_current(const struct work *w, const struct want *wt)
{
    switch (wt->kind) {
    case WANT_REPLICAS:
        return w->models[wt->model].live < replicas_target(w->models[wt->model].m);
    case WANT_DEMAND:
        return find_model_placement(w, wt->model, wt->only_node, true, true) == NONE;
    case WANT_DRAIN:
        return !w->pls[wt->moving].gone && !w->pls[wt->moving].leaving;
    }
    return false;
}

/* Evicts for want wt if that makes room; returns whether it did. */
static bool want_evict(struct work *w, const struct want *wt)
{
    struct eviction ev;
    if (!evict_find(w, wt->model, wt->only_node, &ev))
        return false;
    const char *name = w->models[wt->model].m->name;
    struct buf victims = BUF_INIT;
    char idle[32];
    for (size_t v = 0; v < ev.n_victims; v++) {
        const struct wpl *p = &w->pls[ev.victims[v]];
        const struct plan_model *vm = w->models[p->model].m;
        plan_format_duration(p->idle_ms, idle, sizeof idle);
        if (w->s->eviction == PLAN_EVICTION_PRIORITY)
            plan_unload(w, ev.victims[v], PLAN_CAUSE_EVICT,
                        "evicted (priority: %s has priority %d, idle %s) to make room for %s on %s",
                        vm->name, vm->priority, idle, name, node_name(w, ev.slot.node));
        else
            plan_unload(w, ev.victims[v], PLAN_CAUSE_EVICT,
                        "evicted (lru: %s idle %s) to make room for %s on %s", vm->name, idle, name,
                        node_name(w, ev.slot.node));
        buf_appendf(&victims, "%s%s", v > 0 ? ", " : "", vm->name);
    }
    struct buf where = BUF_INIT;
    group_label(w, ev.slot.node, ev.slot.devs, ev.slot.ndev, &where);
    plan_wait(w, wt->model, PLAN_CAUSE_EVICT, wt->demand_id,
              "no free room for %s: evicting %s to make room on %s", name, buf_cstr(&victims),
              buf_cstr(&where));
    buf_free(&where);
    buf_free(&victims);
    free(ev.victims);
    return true;
}

/* Moves replicas out of the way for want wt if that makes room; returns whether it did. */
static bool want_defrag(struct work *w, const struct want *wt)
{
    struct defrag df = {0};
    if (!defrag_find(w, wt->model, wt->only_node, &df))
        return false;
    const char *name = w->models[wt->model].m->name;
    struct buf what = BUF_INIT, target = BUF_INIT;
    group_label(w, df.slot.node, df.slot.devs, df.slot.ndev, &target);
    for (size_t k = 0; k < df.n_moves; k++) {
        size_t i = df.moves[k].placement;
        struct buf from = BUF_INIT, why = BUF_INIT;
        group_label(w, w->pls[i].node, w->pls[i].devs, w->pls[i].ndev, &from);
        buf_appendf(&why, "defragmenting to make room for %s on %s: move from %s", name,
                    buf_cstr(&target), buf_cstr(&from));
        plan_load(w, w->pls[i].model, &df.moves[k].to, PLAN_CAUSE_DEFRAG, 0, w->pls[i].id,
                  buf_cstr(&why));
        pl_leave(w, i);
        buf_appendf(&what, "%s%s (from %s)", k > 0 ? ", " : "", model_name(w, w->pls[i].model),
                    buf_cstr(&from));
        buf_free(&from);
        buf_free(&why);
    }
    plan_wait(w, wt->model, PLAN_CAUSE_DEFRAG, wt->demand_id,
              "defragmenting to make room for %s on %s: moving %s", name, buf_cstr(&target),
              buf_cstr(&what));
    buf_free(&what);
    buf_free(&target);
    free(df.moves);
    return true;
}

/* 6c. Serve the wants in order: place, wait for leaving memory, evict, defragment or wait. */
static void policy_wants(struct work *w)
{
    if (w->n_wants > 1)
        qsort_r(w->wants, w->n_wants, sizeof *w->wants, want_compare, w);
    bool defrag_used = false;
    for (size_t i = 0; i < w->n_wants; i++) {
        const struct want *wt = &w->wants[i];
        if (!want_current(w, wt))
            continue;
        const struct plan_model *pm = w->models[wt->model].m;
        enum plan_cause cause = want_cause(wt);
        struct slot s;
        if (slot_find(w, wt->model, wt->only_node, NULL, FIT_NOW, &s)) {
            struct buf why = BUF_INIT;
            if (wt->kind == WANT_DEMAND)
                buf_appendf(&why, "demand %lld", (long long)wt->demand_id);
            else if (wt->kind == WANT_REPLICAS)
                buf_appendf(&why, "%s keeps %d replica(s)", pm->pinned ? "pinned" : "min_replicas",
                            replicas_target(pm));
            else
                buf_appendf(&why, "%s drains", node_name(w, w->pls[wt->moving].node));
            plan_load(w, wt->model, &s, cause, wt->demand_id,
                      wt->kind == WANT_DRAIN ? w->pls[wt->moving].id : 0, buf_cstr(&why));
            buf_free(&why);
            if (wt->kind == WANT_DRAIN)
                pl_leave(w, wt->moving);
            continue;
        }
        if (slot_find(w, wt->model, wt->only_node, NULL, FIT_AFTER_LEAVING, &s)) {
            struct buf where = BUF_INIT;
            group_label(w, s.node, s.devs, s.ndev, &where);
            plan_wait(w, wt->model, cause, wt->demand_id, "%s waits for memory being freed on %s",
                      pm->name, buf_cstr(&where));
            buf_free(&where);
            continue;
        }
        if (wt->kind == WANT_DRAIN) {
            size_t p = wt->moving;
            if (w->pls[p].in_flight != 0) {
                plan_wait(w, wt->model, cause, 0,
                          "%s drains; no room elsewhere for %s, which finishes %d request(s) "
                          "first",
                          node_name(w, w->pls[p].node), pm->name, w->pls[p].in_flight);
                continue;
            }
            plan_unload(w, p, PLAN_CAUSE_DRAIN, "%s drains; no room elsewhere for %s",
                        node_name(w, w->pls[p].node), pm->name);
            continue;
        }
        if (want_evict(w, wt))
            continue;
        if (w->defrag_allowed && !defrag_used && want_defrag(w, wt)) {
            defrag_used = true;
            continue;
        }
        if (!any_candidate_node(w, wt->model, wt->only_node)) {
            plan_wait(w, wt->model, cause, wt->demand_id,
                      w->s->require_files ? "no live, non-draining node holds the files of %s"
                                          : "no live, non-draining node for %s",
                      pm->name);
        } else if (!slot_find(w, wt->model, wt->only_node, NULL, FIT_EMPTY, &s)) {
            char need[32];
            plan_wait(w, wt->model, cause, wt->demand_id,
                      "%s needs %s on %d device(s) of one node; no live node has devices that "
                      "large",
                      pm->name, plan_format_bytes(pm->memory_bytes, need, sizeof need),
                      pm->tensor_parallel);
        } else {
            plan_wait(w, wt->model, cause, wt->demand_id,
                      "no room for %s: the memory is held by pinned, busy or still-wanted "
                      "replicas",
                      pm->name);
        }
    }
}

void plan_compute(const struct plan_fleet *fleet, const struct plan_settings *settings,
                  uint64_t cycle, struct plan *out)
{
    struct work w = {.f = fleet, .s = settings, .out = out};
    work_build(&w);
    policy_dead_nodes(&w);
    policy_timeouts(&w);
    policy_moves(&w);
    w.defrag_allowed = settings->defrag_after_cycles > 0 && cycle > 0 &&
                       cycle % (uint64_t)settings->defrag_after_cycles == 0 &&
                       !moves_in_progress(&w);
    policy_demand(&w);
    policy_idle(&w);
    collect_replica_wants(&w);
    collect_drain_wants(&w);
    policy_wants(&w);
    work_free(&w);
}
