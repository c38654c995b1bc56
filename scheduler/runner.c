/*
 * scheduler/runner.c — the scheduler's main loop: wake-ups, leadership, planning cycles, and
 * carrying the plan out against the database and the neurons.
 *
 * Loop state, all reset whenever the epoch this process acts under changes (a new leader knows
 * nothing of what its predecessor sent):
 *   sent   — per placement, the last load or unload told to its neuron: when, whether it was
 *            accepted, or why it failed; drives "tell again" and failure handling;
 *   probes — per node, the latest GET /models (requests in flight per model) and its age;
 *   waits  — per model, the reason of the latest wait recorded as an event.
 */
#include "runner.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "jsonutil.h"
#include "leader.h"
#include "log.h"
#include "plan.h"
#include "timing.h"
#include "xalloc.h"

#define RUNNER_DEFAULT_TICK_MS   2000
#define RUNNER_DEFAULT_LEASE_MS  10000
#define RUNNER_DEFAULT_RESEND_MS 30000
#define RUNNER_MIN_GAP_MS        100 /* between cycles woken by notifications */

struct sent {
    int64_t placement_id;
    enum dispatch_kind kind;
    uint64_t sent_ms;
    bool accepted;
    bool failed;  /* refused or unreachable after every attempt */
    char *reason; /* why it failed */
    char *model, *node;
    bool seen; /* still waiting for the neuron in the latest snapshot */
};

struct probe {
    int64_t node_id;
    uint64_t fetched_ms;
    struct dispatch_probe_entry *entries;
    size_t n;
};

struct wait_note {
    int64_t model_id;
    char *reason;
    bool seen;
};

struct runner {
    struct runner_options opt;
    char *holder;
    db_t *db;
    leader_t *leader;
    dispatch_t *dispatch;
    struct metrics *metrics;
    int64_t epoch_seen;
    uint64_t cycles;
    int64_t tick_ms, lease_ms, resend_ms;
    uint64_t generation_seen;
    int64_t session_lease_ms; /* the lease idle_in_transaction_session_timeout was set for */
    bool timing_read;         /* tick_ms and lease_ms came from the settings at least once */
    bool wake;
    struct sent *sent;
    size_t n_sent, cap_sent;
    struct probe *probes;
    size_t n_probes, cap_probes;
    struct wait_note *waits;
    size_t n_waits, cap_waits;
};

static bool runner_fence(void *ud)
{
    runner_t *r = ud;
    return timing_now_ms() < leader_valid_until_ms(r->leader);
}

static void sent_clear(struct sent *s)
{
    free(s->reason);
    free(s->model);
    free(s->node);
}

static void runner_reset(runner_t *r)
{
    for (size_t i = 0; i < r->n_sent; i++)
        sent_clear(&r->sent[i]);
    r->n_sent = 0;
    for (size_t i = 0; i < r->n_probes; i++) {
        for (size_t k = 0; k < r->probes[i].n; k++) {
            free(r->probes[i].entries[k].model);
            free(r->probes[i].entries[k].state);
        }
        free(r->probes[i].entries);
    }
    r->n_probes = 0;
    for (size_t i = 0; i < r->n_waits; i++)
        free(r->waits[i].reason);
    r->n_waits = 0;
}

runner_t *runner_create(const struct runner_options *opt, struct metrics *m, char **errmsg)
{
    runner_t *r = xcalloc(1, sizeof *r);
    r->opt = *opt;
    r->holder = xstrdup(opt->holder);
    r->opt.holder = r->holder;
    r->metrics = m;
    r->tick_ms = opt->tick_ms > 0 ? opt->tick_ms : RUNNER_DEFAULT_TICK_MS;
    r->lease_ms = opt->lease_ms > 0 ? opt->lease_ms : RUNNER_DEFAULT_LEASE_MS;
    r->resend_ms = opt->resend_after_ms > 0 ? opt->resend_after_ms : RUNNER_DEFAULT_RESEND_MS;
    const char *conninfo = opt->conninfo ? opt->conninfo : "";
    db_options_t dbo = {.application_name = "cortex-scheduler",
                        .connect_timeout_s = 5,
                        .statement_timeout_ms = 15000,
                        .keepalives = true};
    r->db = db_create(conninfo, &dbo, errmsg);
    if (r->db == NULL)
        goto fail;
    static const char *const channels[] = {"cortex_demand", "cortex_placement", "cortex_node",
                                           "cortex_catalogue", "cortex_setting"};
    for (size_t i = 0; i < sizeof channels / sizeof channels[0]; i++) {
        if (db_listen(r->db, channels[i]) < 0) {
            *errmsg = xasprintf("LISTEN %s: %s", channels[i], db_last_error(r->db));
            goto fail;
        }
    }
    r->leader = leader_create(conninfo, r->holder, errmsg);
    if (r->leader == NULL)
        goto fail;
    struct dispatch_options dopt = opt->dispatch;
    dopt.fence = runner_fence;
    dopt.fence_ud = r;
    r->dispatch = dispatch_create(&dopt, errmsg);
    if (r->dispatch == NULL)
        goto fail;
    return r;
fail:
    runner_destroy(r);
    return NULL;
}

void runner_destroy(runner_t *r)
{
    if (r == NULL)
        return;
    dispatch_destroy(r->dispatch); /* no neuron hears from us after this */
    leader_destroy(r->leader);     /* resigns: a standby takes over at once */
    db_destroy(r->db);
    runner_reset(r);
    free(r->sent);
    free(r->probes);
    free(r->waits);
    free(r->holder);
    free(r);
}

bool runner_is_leader(const runner_t *r)
{
    return leader_valid(r->leader);
}

int64_t runner_epoch(const runner_t *r)
{
    return leader_epoch(r->leader);
}

uint64_t runner_cycles(const runner_t *r)
{
    return r->cycles;
}

dispatch_t *runner_dispatch(runner_t *r)
{
    return r->dispatch;
}

/* ---- what was sent to the neurons -------------------------------------------------------- */

static struct sent *sent_find(runner_t *r, int64_t placement_id)
{
    for (size_t i = 0; i < r->n_sent; i++) {
        if (r->sent[i].placement_id == placement_id)
            return &r->sent[i];
    }
    return NULL;
}

/* Tells a placement's neuron to load or unload it (no-op when a job for it is pending). */
static void runner_send(runner_t *r, const struct fleet *f, enum dispatch_kind kind,
                        int64_t placement_id, int64_t model_id, int64_t node_id,
                        const int *ordinals, size_t n_ordinals, bool best_effort)
{
    const struct plan_model *m = fleet_find_model(f, model_id);
    const struct fleet_node_info *info = NULL;
    const struct plan_node *n = fleet_find_node(f, node_id, &info);
    if (m == NULL || n == NULL || info->endpoint == NULL)
        return;
    struct dispatch_job job = {.kind = kind,
                               .placement_id = placement_id,
                               .node_id = node_id,
                               .endpoint = info->endpoint,
                               .model = m->name,
                               .n_ordinals = n_ordinals,
                               .best_effort = best_effort};
    for (size_t i = 0; i < n_ordinals && i < PLAN_MAX_DEVICES; i++)
        job.ordinals[i] = ordinals[i];
    if (dispatch_submit(r->dispatch, &job) < 0)
        return;
    if (best_effort)
        return;
    struct sent *s = sent_find(r, placement_id);
    if (s == NULL) {
        r->sent = xgrow(r->sent, &r->cap_sent, r->n_sent + 1, sizeof *r->sent);
        s = &r->sent[r->n_sent++];
    } else {
        sent_clear(s);
    }
    *s = (struct sent){.placement_id = placement_id,
                       .kind = kind,
                       .sent_ms = timing_now_ms(),
                       .model = xstrdup(m->name),
                       .node = xstrdup(n->name),
                       .seen = true};
}

/* The ordinals of a placement's devices, in rank order. */
static size_t placement_ordinals(const struct fleet *f, const struct plan_placement *p, int *out)
{
    const struct plan_node *n = fleet_find_node(f, p->node_id, NULL);
    size_t k = 0;
    for (size_t i = 0; n != NULL && i < p->n_devices && i < PLAN_MAX_DEVICES; i++) {
        for (size_t d = 0; d < n->n_devices; d++) {
            if (n->devices[d].id == p->device_ids[i])
                out[k++] = n->devices[d].ordinal;
        }
    }
    return k;
}

/* Ends a placement whose neuron refused or failed a request. Returns false when leadership is
 * gone. */
static bool runner_end_placement(runner_t *r, int64_t placement_id, const char *state,
                                 const char *reason, const char *event, const char *model,
                                 const char *node)
{
    if (!leader_valid(r->leader))
        return false;
    char *err = NULL;
    enum fleet_result res = fleet_end_placement(r->db, leader_epoch(r->leader), placement_id, state,
                                                reason, event, model, node, &err);
    struct log_ctx ctx = {.model = model, .node = node};
    if (res == FLEET_OK)
        LOGC_INFO(&ctx, "placement %" PRId64 " %s: %s", placement_id, state, reason);
    else if (res == FLEET_REJECTED)
        LOGC_DEBUG(&ctx, "placement %" PRId64 " moved on already: %s", placement_id, err);
    else if (res == FLEET_STALE)
        leader_lost(r->leader);
    else
        metrics_count_db_error(r->metrics);
    free(err);
    r->wake = true; /* re-plan now: another node, or the demand's end */
    return res != FLEET_STALE;
}

size_t runner_handle_results(runner_t *r)
{
    struct dispatch_result *res = NULL;
    size_t n = dispatch_take_results(r->dispatch, &res);
    for (size_t i = 0; i < n; i++) {
        struct dispatch_result *x = &res[i];
        metrics_count_neuron(r->metrics, x->kind, x->outcome);
        if (x->kind == DISPATCH_PROBE) {
            struct probe *p = NULL;
            for (size_t k = 0; k < r->n_probes && p == NULL; k++) {
                if (r->probes[k].node_id == x->node_id)
                    p = &r->probes[k];
            }
            if (x->outcome != DISPATCH_ACCEPTED)
                continue; /* a stale answer ages out; the heartbeat's view stands */
            if (p == NULL) {
                r->probes = xgrow(r->probes, &r->cap_probes, r->n_probes + 1, sizeof *r->probes);
                p = &r->probes[r->n_probes++];
                memset(p, 0, sizeof *p);
                p->node_id = x->node_id;
            }
            for (size_t k = 0; k < p->n; k++) {
                free(p->entries[k].model);
                free(p->entries[k].state);
            }
            free(p->entries);
            p->entries = x->probe;
            p->n = x->n_probe;
            p->fetched_ms = timing_now_ms();
            x->probe = NULL;
            x->n_probe = 0;
            continue;
        }
        if (x->best_effort)
            continue;
        struct sent *s = sent_find(r, x->placement_id);
        if (s != NULL && s->kind != x->kind)
            s = NULL;
        if (x->outcome == DISPATCH_ACCEPTED) {
            if (s != NULL)
                s->accepted = true;
            continue;
        }
        if (x->outcome == DISPATCH_ABORTED)
            continue;
        if (s != NULL) {
            s->failed = true;
            free(s->reason);
            s->reason = xstrdup(x->reason);
        }
        const char *node = s ? s->node : NULL;
        if (x->kind == DISPATCH_LOAD)
            runner_end_placement(r, x->placement_id, "failed", x->reason, "scheduler.load_failed",
                                 x->model, node);
        else if (x->status == 404)
            runner_end_placement(r, x->placement_id, "gone",
                                 "the neuron does not hold the model (unload answered 404)",
                                 "scheduler.unload_done", x->model, node);
    }
    dispatch_results_free(res, n);
    return n;
}

/* ---- one cycle ------------------------------------------------------------------------- */

/* Requests in flight per ready placement from fresh probes of its node. */
static void runner_refine_in_flight(runner_t *r, struct fleet *f)
{
    uint64_t now = timing_now_ms();
    uint64_t fresh = (uint64_t)(2 * r->tick_ms > 5000 ? 2 * r->tick_ms : 5000);
    for (size_t i = 0; i < f->n_placements; i++) {
        struct plan_placement *p = &f->placements[i];
        if (p->state != PLAN_PLACEMENT_READY)
            continue;
        const struct probe *pr = NULL;
        for (size_t k = 0; k < r->n_probes; k++) {
            if (r->probes[k].node_id == p->node_id && now - r->probes[k].fetched_ms <= fresh)
                pr = &r->probes[k];
        }
        const struct plan_model *m = fleet_find_model(f, p->model_id);
        if (pr == NULL || m == NULL)
            continue;
        p->in_flight = 0;
        for (size_t k = 0; k < pr->n; k++) {
            if (strcmp(pr->entries[k].model, m->name) == 0)
                p->in_flight = pr->entries[k].in_flight;
        }
    }
}

/* Asks the live nodes serving models what each has in flight (used by later cycles). */
static void runner_probe(runner_t *r, const struct fleet *f)
{
    uint64_t now = timing_now_ms();
    for (size_t i = 0; i < f->n_nodes; i++) {
        const struct plan_node *n = &f->nodes[i];
        if (n->state != PLAN_NODE_ALIVE && n->state != PLAN_NODE_LATE)
            continue;
        bool serving = false;
        for (size_t k = 0; k < f->n_placements && !serving; k++)
            serving = f->placements[k].node_id == n->id &&
                      f->placements[k].state == PLAN_PLACEMENT_READY;
        if (!serving || dispatch_probe_pending(r->dispatch, n->id))
            continue;
        bool recent = false;
        for (size_t k = 0; k < r->n_probes; k++)
            recent = recent || (r->probes[k].node_id == n->id &&
                                now - r->probes[k].fetched_ms < (uint64_t)r->tick_ms);
        if (recent)
            continue;
        struct dispatch_job job = {
                .kind = DISPATCH_PROBE, .node_id = n->id, .endpoint = f->node_info[i].endpoint};
        if (dispatch_submit(r->dispatch, &job) < 0)
            LOG_DEBUG("probe of %s already pending", n->name);
    }
}

/* Records a wait as an event when its reason differs from the last one recorded. */
static bool runner_note_wait(runner_t *r, const struct fleet *f, const struct plan_action *a,
                             int64_t epoch)
{
    struct wait_note *w = NULL;
    for (size_t i = 0; i < r->n_waits && w == NULL; i++) {
        if (r->waits[i].model_id == a->model_id)
            w = &r->waits[i];
    }
    if (w != NULL && strcmp(w->reason, a->reason) == 0) {
        w->seen = true;
        return true;
    }
    const struct plan_model *m = fleet_find_model(f, a->model_id);
    char *detail = xasprintf("{\"cause\":\"%s\"}", plan_cause_name(a->cause));
    char *err = NULL;
    enum fleet_result res = fleet_record_event(r->db, epoch, "scheduler.wait", a->reason, detail,
                                               m ? m->name : NULL, NULL, 0, a->demand_id, &err);
    free(detail);
    free(err);
    if (res == FLEET_STALE) {
        leader_lost(r->leader);
        return false;
    }
    if (res != FLEET_OK)
        return res == FLEET_REJECTED;
    struct log_ctx ctx = {.model = m ? m->name : NULL};
    LOGC_INFO(&ctx, "waiting (%s): %s", plan_cause_name(a->cause), a->reason);
    metrics_count_decision(r->metrics, a->kind, a->cause);
    if (w == NULL) {
        r->waits = xgrow(r->waits, &r->cap_waits, r->n_waits + 1, sizeof *r->waits);
        w = &r->waits[r->n_waits++];
        w->model_id = a->model_id;
        w->reason = NULL;
    }
    free(w->reason);
    w->reason = xstrdup(a->reason);
    w->seen = true;
    return true;
}

static void runner_execute(runner_t *r, const struct fleet *f, const struct plan *p, int64_t epoch)
{
    for (size_t i = 0; i < r->n_waits; i++)
        r->waits[i].seen = false;
    for (size_t i = 0; i < p->n_actions; i++) {
        const struct plan_action *a = &p->actions[i];
        if (!leader_valid(r->leader))
            break;
        if (a->kind == PLAN_ACTION_WAIT) {
            if (!runner_note_wait(r, f, a, epoch))
                break;
            continue;
        }
        const struct plan_model *m = fleet_find_model(f, a->model_id);
        const struct plan_node *n = fleet_find_node(f, a->node_id, NULL);
        struct log_ctx ctx = {.model = m ? m->name : NULL, .node = n ? n->name : NULL};
        int64_t pid = 0;
        char *err = NULL;
        enum fleet_result res = fleet_apply(r->db, epoch, f, a, &pid, &err);
        if (res != FLEET_OK) {
            LOG_AT(res == FLEET_REJECTED ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, &ctx,
                   "%s (%s) not done: %s", plan_action_kind_name(a->kind),
                   plan_cause_name(a->cause), err ? err : "?");
            free(err);
            if (res == FLEET_REJECTED)
                continue;
            if (res == FLEET_STALE)
                leader_lost(r->leader);
            else
                metrics_count_db_error(r->metrics);
            break;
        }
        metrics_count_decision(r->metrics, a->kind, a->cause);
        LOGC_INFO(&ctx, "%s (%s): %s", plan_action_kind_name(a->kind), plan_cause_name(a->cause),
                  a->reason);
        if (a->kind == PLAN_ACTION_LOAD)
            runner_send(r, f, DISPATCH_LOAD, pid, a->model_id, a->node_id, a->device_ordinals,
                        a->n_devices, false);
        else if (a->kind == PLAN_ACTION_UNLOAD)
            runner_send(r, f, DISPATCH_UNLOAD, a->placement_id, a->model_id, a->node_id, NULL, 0,
                        false);
        else if (a->kind == PLAN_ACTION_FAIL && a->model_id != 0)
            runner_send(r, f, DISPATCH_UNLOAD, a->placement_id, a->model_id, a->node_id, NULL, 0,
                        true); /* cancel whatever the neuron still does */
    }
    /* A model that no longer waits, and later waits again, gets a new event. */
    size_t kept = 0;
    for (size_t i = 0; i < r->n_waits; i++) {
        if (r->waits[i].seen)
            r->waits[kept++] = r->waits[i];
        else
            free(r->waits[i].reason);
    }
    r->n_waits = kept;
}

/* Tells neurons again about placements waiting on them that this process has not told (a new
 * leader), that were not acted on for resend_after, or whose earlier failure still has to be
 * written. */
static void runner_reconcile(runner_t *r, const struct fleet *f)
{
    uint64_t now = timing_now_ms();
    for (size_t i = 0; i < r->n_sent; i++)
        r->sent[i].seen = false;
    for (size_t i = 0; i < f->n_placements && leader_valid(r->leader); i++) {
        const struct plan_placement *p = &f->placements[i];
        enum dispatch_kind kind;
        if (p->state == PLAN_PLACEMENT_REQUESTED)
            kind = DISPATCH_LOAD;
        else if (p->state == PLAN_PLACEMENT_UNLOADING)
            kind = DISPATCH_UNLOAD;
        else
            continue;
        struct sent *s = sent_find(r, p->id);
        if (s != NULL && s->kind == kind)
            s->seen = true;
        else
            s = NULL;
        if (dispatch_pending(r->dispatch, p->id))
            continue;
        if (s != NULL && s->failed && kind == DISPATCH_LOAD) {
            char *reason = xstrdup(s->reason), *model = xstrdup(s->model), *node = xstrdup(s->node);
            runner_end_placement(r, p->id, "failed", reason, "scheduler.load_failed", model, node);
            free(reason);
            free(model);
            free(node);
            continue;
        }
        if (s != NULL && now - s->sent_ms < (uint64_t)r->resend_ms)
            continue;
        const struct plan_model *m = fleet_find_model(f, p->model_id);
        const struct plan_node *n = fleet_find_node(f, p->node_id, NULL);
        struct log_ctx ctx = {.model = m ? m->name : NULL, .node = n ? n->name : NULL};
        LOGC_INFO(&ctx, "telling the neuron %s: placement %" PRId64 " is %s",
                  s ? "again" : "(first time from this leader)", p->id,
                  kind == DISPATCH_LOAD ? "requested" : "unloading");
        int ordinals[PLAN_MAX_DEVICES];
        size_t n_ordinals = placement_ordinals(f, p, ordinals);
        runner_send(r, f, kind, p->id, p->model_id, p->node_id, ordinals, n_ordinals, false);
    }
    size_t kept = 0;
    for (size_t i = 0; i < r->n_sent; i++) {
        if (r->sent[i].seen || dispatch_pending(r->dispatch, r->sent[i].placement_id))
            r->sent[kept++] = r->sent[i];
        else
            sent_clear(&r->sent[i]);
    }
    r->n_sent = kept;
}

/* Takes the settings the loop runs by from the database unless the command line fixed them. */
static void runner_adopt_timing(runner_t *r, int64_t tick_ms, int64_t lease_ms)
{
    if (r->opt.tick_ms <= 0 && tick_ms > 0)
        r->tick_ms = tick_ms;
    if (r->opt.lease_ms <= 0 && lease_ms > 0)
        r->lease_ms = lease_ms;
}

/* Per database session: a leader stopped inside a write transaction holds the lease row FOR
 * SHARE and would keep any successor from taking over, so the server ends such a transaction
 * after half a lease. */
static void runner_setup_session(runner_t *r)
{
    if (db_generation(r->db) == r->generation_seen && r->lease_ms == r->session_lease_ms)
        return;
    char ms[32];
    snprintf(ms, sizeof ms, "%" PRId64, r->lease_ms / 2 > 0 ? r->lease_ms / 2 : 1);
    const char *params[] = {ms};
    if (db_exec_command(r->db,
                        "SELECT set_config('idle_in_transaction_session_timeout', $1, false)", 1,
                        params, NULL) < 0)
        LOG_WARN("idle_in_transaction_session_timeout: %s", db_last_error(r->db));
    r->generation_seen = db_generation(r->db);
    r->session_lease_ms = r->lease_ms;
}

/* Whether the lease length is known: read from the settings, or fixed by the command line.
 * Until then this process does not stand for election: a lease taken with the built-in
 * default would last longer (or shorter) than the operator's lease_duration. */
static bool runner_may_stand(const runner_t *r)
{
    return r->timing_read || r->opt.lease_ms > 0;
}

int runner_cycle(runner_t *r)
{
    runner_handle_results(r);
    r->wake = false;
    bool db_ok = db_ensure(r->db) == 0;
    if (db_ok) {
        int64_t tick_ms = 0, lease_ms = 0;
        char *terr = NULL;
        if (fleet_read_timing(r->db, &tick_ms, &lease_ms, &terr) == 0) {
            runner_adopt_timing(r, tick_ms, lease_ms);
            r->timing_read = true;
        } else {
            db_ok = false;
            LOG_WARN("reading the settings: %s", terr ? terr : "?");
        }
        free(terr);
    }
    if (db_ok)
        runner_setup_session(r);
    if (runner_may_stand(r))
        leader_step(r->leader, r->lease_ms);
    int64_t epoch = leader_valid(r->leader) ? leader_epoch(r->leader) : 0;
    if (epoch != r->epoch_seen) {
        runner_reset(r);
        r->epoch_seen = epoch;
    }
    metrics_set_leader(r->metrics, epoch != 0, epoch);
    if (!db_ok) {
        metrics_count_db_error(r->metrics);
        LOG_WARN("database: %s", db_last_error(r->db));
        return -1;
    }
    struct fleet *f = NULL;
    char *err = NULL;
    if (fleet_read(r->db, &f, &err) < 0) {
        metrics_count_db_error(r->metrics);
        LOG_WARN("reading the fleet: %s", err ? err : "?");
        free(err);
        return -1;
    }
    runner_adopt_timing(r, f->settings.tick_ms, f->settings.lease_ms);
    metrics_set_fleet(r->metrics, f);
    if (epoch != 0 && leader_valid(r->leader)) {
        runner_refine_in_flight(r, f);
        r->cycles++;
        metrics_count_cycle(r->metrics);
        struct plan p = {0};
        plan_compute(&f->snapshot, &f->settings.plan, r->cycles, &p);
        runner_execute(r, f, &p, epoch);
        plan_free(&p);
        if (leader_valid(r->leader)) {
            runner_reconcile(r, f);
            runner_probe(r, f);
        }
    }
    fleet_destroy(f);
    return 0;
}

static void runner_on_notify(const char *channel, const char *payload, int pid, void *ud)
{
    runner_t *r = ud;
    LOG_DEBUG("NOTIFY %s %s (backend %d)", channel, payload, pid);
    r->wake = true;
}

int runner_run(runner_t *r, int stop_fd)
{
    uint64_t next_cycle = 0, last_cycle = 0, next_step = 0;
    for (;;) {
        uint64_t now = timing_now_ms();
        if (db_generation(r->db) != r->generation_seen)
            r->wake = true; /* reconnected: NOTIFYs may have been missed */
        if (r->wake && last_cycle + RUNNER_MIN_GAP_MS < next_cycle)
            next_cycle = last_cycle + RUNNER_MIN_GAP_MS;
        if (now >= next_cycle) {
            if (runner_cycle(r) < 0)
                r->wake = false; /* the tick retries; no busy loop while the database is away */
            last_cycle = timing_now_ms();
            next_cycle = last_cycle + (uint64_t)r->tick_ms;
            next_step = last_cycle + (uint64_t)r->lease_ms / 4;
            continue;
        }
        if (now >= next_step) {
            /* Renew on time even when the tick is longer than a third of the lease. */
            if (runner_may_stand(r))
                leader_step(r->leader, r->lease_ms);
            next_step = now + (uint64_t)r->lease_ms / 4;
        }
        uint64_t until = next_cycle < next_step ? next_cycle : next_step;
        int timeout = (int)(until > now ? until - now : 0);
        struct pollfd fds[3] = {{.fd = stop_fd, .events = POLLIN},
                                {.fd = dispatch_fd(r->dispatch), .events = POLLIN},
                                {.fd = db_socket(r->db), .events = POLLIN}};
        int nfds = fds[2].fd >= 0 ? 3 : 2;
        int rc = poll(fds, (nfds_t)nfds, timeout);
        if (rc < 0 && errno != EINTR) {
            LOG_ERROR("poll: %s", strerror(errno));
            return -1;
        }
        if (rc <= 0)
            continue;
        if (fds[0].revents)
            break;
        if (fds[1].revents)
            runner_handle_results(r);
        if (nfds == 3 && fds[2].revents &&
            db_consume_notifications(r->db, runner_on_notify, r) < 0) {
            LOG_WARN("database connection lost: %s", db_last_error(r->db));
            r->wake = true;
        }
    }
    return 0;
}
