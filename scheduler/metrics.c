/*
 * scheduler/metrics.c — the scheduler's Prometheus metrics: decision counters and fleet gauges.
 *
 * Counters live in fixed arrays indexed by the enums they count. The fleet gauges are rendered
 * to text when a snapshot arrives (metrics_set_fleet) and kept as that text, so rendering a
 * scrape only concatenates under the lock.
 */
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

#define N_ACTIONS  (PLAN_ACTION_WAIT + 1)
#define N_CAUSES   (PLAN_CAUSE_FAILURES + 1)
#define N_DISPATCH (DISPATCH_PROBE + 1)
#define N_OUTCOMES (DISPATCH_ABORTED + 1)

struct metrics {
    pthread_mutex_t mu;
    uint64_t cycles;
    uint64_t decisions[N_ACTIONS][N_CAUSES];
    uint64_t neuron[N_DISPATCH][N_OUTCOMES];
    uint64_t db_errors;
    bool leader;
    int64_t epoch;
    char *fleet_text; /* gauges of the latest snapshot */
};

struct metrics *metrics_create(void)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (m == NULL)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->fleet_text);
    free(m);
}

void metrics_count_cycle(struct metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->cycles++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_decision(struct metrics *m, enum plan_action_kind kind, enum plan_cause cause)
{
    if ((unsigned)kind >= N_ACTIONS || (unsigned)cause >= N_CAUSES)
        return;
    pthread_mutex_lock(&m->mu);
    m->decisions[kind][cause]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_neuron(struct metrics *m, enum dispatch_kind kind, enum dispatch_outcome outcome)
{
    if ((unsigned)kind >= N_DISPATCH || (unsigned)outcome >= N_OUTCOMES)
        return;
    pthread_mutex_lock(&m->mu);
    m->neuron[kind][outcome]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_count_db_error(struct metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->db_errors++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_set_leader(struct metrics *m, bool leader, int64_t epoch)
{
    pthread_mutex_lock(&m->mu);
    m->leader = leader;
    m->epoch = epoch;
    pthread_mutex_unlock(&m->mu);
}

/* Label values here are node names (letters, digits, . _ -), fixed words, or model names
 * (letters, digits, . _ - : /): nothing that needs escaping in the exposition format. */
static void fleet_gauges(struct buf *b, const struct fleet *f)
{
    static const char *const liveness[] = {"alive", "late", "dead", "down"};
    size_t nodes[4] = {0}, draining = 0;
    for (size_t i = 0; i < f->n_nodes; i++) {
        nodes[f->nodes[i].state]++;
        draining += f->nodes[i].draining;
    }
    buf_append_str(b, "# HELP cortex_fleet_nodes Nodes by liveness (database clock).\n"
                      "# TYPE cortex_fleet_nodes gauge\n");
    for (int s = 0; s < 4; s++)
        buf_appendf(b, "cortex_fleet_nodes{liveness=\"%s\"} %zu\n", liveness[s], nodes[s]);
    buf_appendf(b,
                "# HELP cortex_fleet_nodes_draining Nodes being drained.\n"
                "# TYPE cortex_fleet_nodes_draining gauge\ncortex_fleet_nodes_draining %zu\n",
                draining);

    static const char *const pstate[] = {"requested", "loading", "ready", "unloading"};
    size_t placements[4] = {0};
    for (size_t i = 0; i < f->n_placements; i++)
        placements[f->placements[i].state]++;
    buf_append_str(b, "# HELP cortex_fleet_placements Live placements by state.\n"
                      "# TYPE cortex_fleet_placements gauge\n");
    for (int s = 0; s < 4; s++)
        buf_appendf(b, "cortex_fleet_placements{state=\"%s\"} %zu\n", pstate[s], placements[s]);

    /* A model's state is that of its most advanced replica; without one, failed when it hit
     * max_load_attempts, else unloaded. */
    static const char *const mstate[] = {"ready",     "loading", "requested",
                                         "unloading", "failed",  "unloaded"};
    size_t models[6] = {0};
    for (size_t i = 0; i < f->n_models; i++) {
        bool has[4] = {false};
        for (size_t k = 0; k < f->n_placements; k++) {
            if (f->placements[k].model_id == f->models[i].id)
                has[f->placements[k].state] = true;
        }
        int s = has[PLAN_PLACEMENT_READY]                                          ? 0
                : has[PLAN_PLACEMENT_LOADING]                                      ? 1
                : has[PLAN_PLACEMENT_REQUESTED]                                    ? 2
                : has[PLAN_PLACEMENT_UNLOADING]                                    ? 3
                : f->models[i].load_failures >= f->settings.plan.max_load_attempts ? 4
                                                                                   : 5;
        models[s]++;
    }
    buf_append_str(b, "# HELP cortex_fleet_models Catalogue models by state.\n"
                      "# TYPE cortex_fleet_models gauge\n");
    for (int s = 0; s < 6; s++)
        buf_appendf(b, "cortex_fleet_models{state=\"%s\"} %zu\n", mstate[s], models[s]);

    buf_append_str(b, "# HELP cortex_fleet_device_memory_bytes Device memory: total, reserved "
                      "by live placements, and used/free as last reported by the neuron.\n"
                      "# TYPE cortex_fleet_device_memory_bytes gauge\n");
    for (size_t i = 0; i < f->n_nodes; i++) {
        const struct plan_node *n = &f->nodes[i];
        for (size_t k = 0; k < n->n_devices; k++) {
            const struct plan_device *d = &n->devices[k];
            int64_t reserved = 0;
            for (size_t p = 0; p < f->n_placements; p++) {
                const struct plan_placement *pl = &f->placements[p];
                for (size_t g = 0; g < pl->n_devices; g++) {
                    if (pl->device_ids[g] == d->id)
                        reserved += pl->memory_bytes / (int64_t)pl->n_devices;
                }
            }
            const char *kind = d->cpu ? "cpu" : "cuda";
            buf_appendf(b,
                        "cortex_fleet_device_memory_bytes{node=\"%s\",device=\"%s:%d\","
                        "kind=\"total\"} %" PRId64 "\n"
                        "cortex_fleet_device_memory_bytes{node=\"%s\",device=\"%s:%d\","
                        "kind=\"reserved\"} %" PRId64 "\n",
                        n->name, kind, d->ordinal, d->total_bytes, n->name, kind, d->ordinal,
                        reserved);
            const struct fleet_device_info *di = &f->device_info[i][k];
            if (di->used_bytes >= 0)
                buf_appendf(b,
                            "cortex_fleet_device_memory_bytes{node=\"%s\",device=\"%s:%d\","
                            "kind=\"used\"} %" PRId64 "\n",
                            n->name, kind, d->ordinal, di->used_bytes);
            if (di->free_bytes >= 0)
                buf_appendf(b,
                            "cortex_fleet_device_memory_bytes{node=\"%s\",device=\"%s:%d\","
                            "kind=\"free\"} %" PRId64 "\n",
                            n->name, kind, d->ordinal, di->free_bytes);
        }
    }
    size_t open_load = 0, open_unload = 0;
    for (size_t i = 0; i < f->n_demands; i++) {
        if (f->demands[i].kind == PLAN_DEMAND_LOAD)
            open_load++;
        else
            open_unload++;
    }
    buf_appendf(b,
                "# HELP cortex_fleet_demand_open Open demand rows.\n"
                "# TYPE cortex_fleet_demand_open gauge\n"
                "cortex_fleet_demand_open{kind=\"load\"} %zu\n"
                "cortex_fleet_demand_open{kind=\"unload\"} %zu\n",
                open_load, open_unload);
}

void metrics_set_fleet(struct metrics *m, const struct fleet *f)
{
    struct buf b = BUF_INIT;
    fleet_gauges(&b, f);
    char *text = buf_steal(&b, NULL);
    pthread_mutex_lock(&m->mu);
    free(m->fleet_text);
    m->fleet_text = text;
    pthread_mutex_unlock(&m->mu);
}

char *metrics_render(struct metrics *m)
{
    struct buf b = BUF_INIT;
    pthread_mutex_lock(&m->mu);
    buf_appendf(&b,
                "# HELP cortex_scheduler_leader 1 while this scheduler leads the fleet.\n"
                "# TYPE cortex_scheduler_leader gauge\ncortex_scheduler_leader %d\n"
                "# HELP cortex_scheduler_epoch Lease epoch held (0 when standby).\n"
                "# TYPE cortex_scheduler_epoch gauge\ncortex_scheduler_epoch %" PRId64 "\n"
                "# HELP cortex_scheduler_cycles_total Planning cycles run as leader.\n"
                "# TYPE cortex_scheduler_cycles_total counter\n"
                "cortex_scheduler_cycles_total %" PRIu64 "\n"
                "# HELP cortex_scheduler_db_errors_total Failed reads and writes of the fleet.\n"
                "# TYPE cortex_scheduler_db_errors_total counter\n"
                "cortex_scheduler_db_errors_total %" PRIu64 "\n",
                m->leader ? 1 : 0, m->epoch, m->cycles, m->db_errors);
    buf_append_str(&b, "# HELP cortex_scheduler_decisions_total Actions carried out, by action "
                       "and cause.\n# TYPE cortex_scheduler_decisions_total counter\n");
    for (int a = 0; a < N_ACTIONS; a++) {
        for (int c = 0; c < N_CAUSES; c++) {
            if (m->decisions[a][c] == 0)
                continue;
            buf_appendf(&b,
                        "cortex_scheduler_decisions_total{action=\"%s\",cause=\"%s\"} %" PRIu64
                        "\n",
                        plan_action_kind_name((enum plan_action_kind)a),
                        plan_cause_name((enum plan_cause)c), m->decisions[a][c]);
        }
    }
    buf_append_str(&b, "# HELP cortex_scheduler_neuron_requests_total Requests to neurons, by "
                       "kind and outcome.\n# TYPE cortex_scheduler_neuron_requests_total "
                       "counter\n");
    for (int k = 0; k < N_DISPATCH; k++) {
        for (int o = 0; o < N_OUTCOMES; o++)
            buf_appendf(&b,
                        "cortex_scheduler_neuron_requests_total{kind=\"%s\",outcome=\"%s\"} "
                        "%" PRIu64 "\n",
                        dispatch_kind_name((enum dispatch_kind)k),
                        dispatch_outcome_name((enum dispatch_outcome)o), m->neuron[k][o]);
    }
    if (m->fleet_text != NULL)
        buf_append_str(&b, m->fleet_text);
    pthread_mutex_unlock(&m->mu);
    return buf_steal(&b, NULL);
}
