/*
 * tests/unit/scheduler/test_plan.c — the scheduler's decision core on small hand-built fleets.
 *
 * Table-driven: each case builds a fleet (nodes, devices, models, placements, demand) with a
 * few helper calls, runs plan_compute, renders every action as one line
 *
 *     <kind> <cause> <model|-> <node|-> [devices] [P<n> | replaces=P<n>] [<resolution>]
 *
 * (P<n> is the n-th placement the case created) and compares the whole plan, in order, with
 * the lines written in the table, which were worked out by hand from the policies in
 * scheduler/plan.h. Some cases also check a word of a reason.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define GIB    ((int64_t)1 << 30)
#define MIN_MS ((int64_t)60 * 1000)
#define MAXN   6
#define MAXM   8
#define MAXP   16

struct tf {
    struct plan_node nodes[MAXN];
    struct plan_device devs[MAXN][8];
    struct plan_model models[MAXM];
    int64_t files[MAXM][MAXN];
    int64_t failed[MAXM][MAXN];
    bool files_listed[MAXM];
    struct plan_placement pls[MAXP];
    int64_t pl_devs[MAXP][8];
    struct plan_demand demands[8];
    size_t n_nodes, n_models, n_pls, n_demands;
    struct plan_settings s;
    uint64_t cycle;
};

static void tf_init(struct tf *t)
{
    memset(t, 0, sizeof *t);
    t->s = (struct plan_settings){.eviction = PLAN_EVICTION_LRU,
                                  .defrag_after_cycles = 0,
                                  .max_load_attempts = 3,
                                  .device_reserve_bytes = 0,
                                  .load_timeout_ms = 15 * MIN_MS,
                                  .demand_ttl_ms = 10 * MIN_MS,
                                  .evict_in_flight = false,
                                  .require_files = true};
    t->cycle = 1;
}

static struct plan_node *add_node(struct tf *t, const char *name, int n_devices, double gib,
                                  bool cpu)
{
    ck_assert_uint_lt(t->n_nodes, MAXN);
    size_t i = t->n_nodes++;
    for (int k = 0; k < n_devices; k++)
        t->devs[i][k] = (struct plan_device){.id = (int64_t)(i + 1) * 100 + k,
                                             .ordinal = k,
                                             .cpu = cpu,
                                             .total_bytes = (int64_t)(gib * (double)GIB)};
    t->nodes[i] = (struct plan_node){.id = (int64_t)i + 1,
                                     .name = name,
                                     .state = PLAN_NODE_ALIVE,
                                     .devices = t->devs[i],
                                     .n_devices = (size_t)n_devices};
    return &t->nodes[i];
}

static struct plan_node *gpu_node(struct tf *t, const char *name, int n_gpus, double gib)
{
    return add_node(t, name, n_gpus, gib, false);
}

static struct plan_node *cpu_node(struct tf *t, const char *name, double gib)
{
    return add_node(t, name, 1, gib, true);
}

static size_t node_index(const struct tf *t, const char *name)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        if (strcmp(t->nodes[i].name, name) == 0)
            return i;
    }
    ck_abort_msg("no node %s", name);
    return 0;
}

/* A model with files on every node (unless files_on says otherwise), idle TTL 30 minutes. */
static struct plan_model *model(struct tf *t, const char *name, double gib, int tp)
{
    ck_assert_uint_lt(t->n_models, MAXM);
    size_t i = t->n_models++;
    t->models[i] = (struct plan_model){.id = 101 + (int64_t)i,
                                       .name = name,
                                       .memory_bytes = (int64_t)(gib * (double)GIB),
                                       .tensor_parallel = tp,
                                       .max_replicas = 1,
                                       .idle_ttl_ms = 30 * MIN_MS};
    return &t->models[i];
}

static size_t model_index(const struct tf *t, const char *name)
{
    for (size_t i = 0; i < t->n_models; i++) {
        if (strcmp(t->models[i].name, name) == 0)
            return i;
    }
    ck_abort_msg("no model %s", name);
    return 0;
}

static void files_on(struct tf *t, const char *m, const char *node)
{
    size_t i = model_index(t, m);
    t->files_listed[i] = true;
    struct plan_model *pm = &t->models[i];
    t->files[i][pm->n_file_nodes++] = t->nodes[node_index(t, node)].id;
}

static void failed_on(struct tf *t, const char *m, const char *node)
{
    size_t i = model_index(t, m);
    t->failed[i][t->models[i].n_failed_nodes++] = t->nodes[node_index(t, node)].id;
}

/* A placement of m on node's devices (ordinals "0" or "0,1"), idle for idle_min minutes. */
static struct plan_placement *place(struct tf *t, const char *m, const char *node,
                                    enum plan_placement_state state, const char *ordinals,
                                    double idle_min)
{
    ck_assert_uint_lt(t->n_pls, MAXP);
    size_t i = t->n_pls++;
    size_t n = node_index(t, node);
    size_t nd = 0;
    for (const char *c = ordinals; *c; c++) {
        if (*c >= '0' && *c <= '9')
            t->pl_devs[i][nd++] = t->devs[n][*c - '0'].id;
    }
    t->pls[i] = (struct plan_placement){.id = 1001 + (int64_t)i,
                                        .model_id = t->models[model_index(t, m)].id,
                                        .node_id = t->nodes[n].id,
                                        .state = state,
                                        .device_ids = t->pl_devs[i],
                                        .n_devices = nd,
                                        .in_state_ms = MIN_MS,
                                        .idle_ms = (int64_t)(idle_min * (double)MIN_MS)};
    return &t->pls[i];
}

static int64_t pid(int n)
{
    return 1000 + n; /* P1 is the first placement a case creates */
}

static struct plan_demand *demand(struct tf *t, const char *m, enum plan_demand_kind kind)
{
    size_t i = t->n_demands++;
    t->demands[i] = (struct plan_demand){.id = 501 + (int64_t)i,
                                         .model_id = t->models[model_index(t, m)].id,
                                         .kind = kind,
                                         .wanted_ago_ms = 1000};
    return &t->demands[i];
}

static const char *name_of_node(const struct tf *t, int64_t id)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        if (t->nodes[i].id == id)
            return t->nodes[i].name;
    }
    return "-";
}

static const char *name_of_model(const struct tf *t, int64_t id)
{
    for (size_t i = 0; i < t->n_models; i++) {
        if (t->models[i].id == id)
            return t->models[i].name;
    }
    return "-";
}

static const struct plan_device *device_of(const struct tf *t, int64_t id)
{
    for (size_t n = 0; n < t->n_nodes; n++) {
        for (size_t k = 0; k < t->nodes[n].n_devices; k++) {
            if (t->devs[n][k].id == id)
                return &t->devs[n][k];
        }
    }
    return NULL;
}

static void render(const struct tf *t, const struct plan_action *a, char *out, size_t size)
{
    int n = snprintf(out, size, "%s %s %s %s", plan_action_kind_name(a->kind),
                     plan_cause_name(a->cause), name_of_model(t, a->model_id),
                     name_of_node(t, a->node_id));
    if (a->kind == PLAN_ACTION_LOAD) {
        for (size_t i = 0; i < a->n_devices; i++) {
            const struct plan_device *d = device_of(t, a->device_ids[i]);
            ck_assert_ptr_nonnull(d);
            ck_assert_int_eq(d->ordinal, a->device_ordinals[i]);
            n += snprintf(out + n, size - (size_t)n, "%s%s:%d", i == 0 ? " " : ",",
                          d->cpu ? "cpu" : "cuda", d->ordinal);
        }
        if (a->replaces_id != 0)
            n += snprintf(out + n, size - (size_t)n, " replaces=P%lld",
                          (long long)(a->replaces_id - 1000));
    }
    if ((a->kind == PLAN_ACTION_UNLOAD || a->kind == PLAN_ACTION_FAIL ||
         a->kind == PLAN_ACTION_RESOLVE) &&
        a->placement_id != 0)
        n += snprintf(out + n, size - (size_t)n, " P%lld", (long long)(a->placement_id - 1000));
    if (a->kind == PLAN_ACTION_RESOLVE)
        snprintf(out + n, size - (size_t)n, " %s", plan_resolution_name(a->resolution));
}

static void tf_plan(struct tf *t, struct plan *out)
{
    for (size_t i = 0; i < t->n_models; i++) {
        if (!t->files_listed[i]) {
            t->models[i].n_file_nodes = t->n_nodes;
            for (size_t n = 0; n < t->n_nodes; n++)
                t->files[i][n] = t->nodes[n].id;
        }
        t->models[i].file_node_ids = t->files[i];
        t->models[i].failed_node_ids = t->failed[i];
    }
    struct plan_fleet f = {.nodes = t->nodes,
                           .n_nodes = t->n_nodes,
                           .models = t->models,
                           .n_models = t->n_models,
                           .placements = t->pls,
                           .n_placements = t->n_pls,
                           .demands = t->demands,
                           .n_demands = t->n_demands};
    memset(out, 0, sizeof *out);
    plan_compute(&f, &t->s, t->cycle, out);
}

/* ---- the cases --------------------------------------------------------------------------- */

static void c_best_fit_smallest_leftover(struct tf *t)
{
    gpu_node(t, "n1", 1, 24);
    gpu_node(t, "n2", 1, 16);
    model(t, "A", 12, 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_best_fit_device_within_node(struct tf *t)
{
    gpu_node(t, "n1", 2, 16);
    model(t, "B", 10, 1);
    model(t, "A", 5, 1);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_files_preferred_over_fit(struct tf *t)
{
    t->s.require_files = false;
    gpu_node(t, "n1", 1, 14);
    gpu_node(t, "n2", 1, 24);
    model(t, "A", 12, 1);
    files_on(t, "A", "n2");
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_files_required(struct tf *t)
{
    gpu_node(t, "n1", 1, 24);
    gpu_node(t, "n2", 1, 24)->draining = true;
    model(t, "A", 12, 1);
    files_on(t, "A", "n2");
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_tensor_parallel_one_node(struct tf *t)
{
    gpu_node(t, "n1", 1, 80);
    gpu_node(t, "n2", 4, 16);
    model(t, "B", 10, 1);
    model(t, "C", 16, 1);
    model(t, "T", 24, 2);
    place(t, "B", "n2", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "C", "n2", PLAN_PLACEMENT_READY, "1", 1);
    demand(t, "T", PLAN_DEMAND_LOAD);
}

static void c_tensor_parallel_on_cpu(struct tf *t)
{
    cpu_node(t, "n1", 32);
    model(t, "T", 24, 2);
    demand(t, "T", PLAN_DEMAND_LOAD);
}

static void c_reserve_on_gpus_only(struct tf *t)
{
    t->s.device_reserve_bytes = GIB;
    gpu_node(t, "n1", 1, 16);
    cpu_node(t, "n2", 16);
    model(t, "A", 15.5, 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_unusable_nodes(struct tf *t)
{
    gpu_node(t, "n1", 1, 16)->state = PLAN_NODE_LATE;
    gpu_node(t, "n2", 1, 16)->draining = true;
    gpu_node(t, "n3", 1, 16)->state = PLAN_NODE_DEAD;
    gpu_node(t, "n4", 1, 8);
    model(t, "A", 6, 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_dead_node_demand_replaced(struct tf *t)
{
    cpu_node(t, "n1", 16)->state = PLAN_NODE_DEAD;
    cpu_node(t, "n2", 16);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_demand_satisfied(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_demand_waits_while_loading(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_LOADING, "0", 0);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_demand_expires(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 8, 1);
    demand(t, "A", PLAN_DEMAND_LOAD)->wanted_ago_ms = 11 * MIN_MS;
}

static void c_memory_unknown(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 0, 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_too_big(struct tf *t)
{
    gpu_node(t, "n1", 1, 16);
    model(t, "A", 20, 1);
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_failures_block(struct tf *t)
{
    cpu_node(t, "n1", 16);
    struct plan_model *a = model(t, "A", 8, 1);
    a->load_failures = 3;
    a->last_load_error = "boom: bad magic";
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_new_demand_retries(struct tf *t)
{
    c_failures_block(t);
    t->demands[0].after_failure = true;
}

static void c_failed_node_tried_last(struct tf *t)
{
    cpu_node(t, "n1", 16);
    cpu_node(t, "n2", 32);
    model(t, "A", 8, 1);
    failed_on(t, "A", "n1");
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_node_targeted_demand(struct tf *t)
{
    cpu_node(t, "n1", 10);
    cpu_node(t, "n2", 32);
    model(t, "A", 8, 1);
    demand(t, "A", PLAN_DEMAND_LOAD)->node_id = 2;
}

static void c_unload_demand(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    demand(t, "A", PLAN_DEMAND_UNLOAD);
}

static void c_unload_demand_pinned(struct tf *t)
{
    c_unload_demand(t);
    t->models[0].pinned = true;
}

/* n1 (10 GiB): A 4 GiB idle 1m, B 4 GiB idle 10m; C (4 GiB) is demanded. */
static void c_full_fleet(struct tf *t)
{
    cpu_node(t, "n1", 10);
    model(t, "A", 4, 1);
    model(t, "B", 4, 1);
    model(t, "C", 4, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 10);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_priority_lowest_first(struct tf *t)
{
    c_full_fleet(t);
    t->s.eviction = PLAN_EVICTION_PRIORITY;
    t->models[0].priority = 0; /* A: idle 1m */
    t->models[1].priority = 5; /* B: idle 10m */
}

static void c_priority_ties_by_lru(struct tf *t)
{
    t->s.eviction = PLAN_EVICTION_PRIORITY;
    cpu_node(t, "n1", 12);
    model(t, "A", 4, 1)->priority = 1;
    model(t, "B", 4, 1)->priority = 1;
    model(t, "D", 4, 1)->priority = 3;
    model(t, "C", 4, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 10);
    place(t, "D", "n1", PLAN_PLACEMENT_READY, "0", 20); /* idle longest, priority highest */
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_pinned_never_evicted(struct tf *t)
{
    c_full_fleet(t);
    t->models[1].pinned = true; /* B, the least recently used */
}

static void c_all_pinned_wait(struct tf *t)
{
    c_full_fleet(t);
    t->models[0].pinned = true;
    t->models[1].pinned = true;
}

static void c_busy_not_evicted(struct tf *t)
{
    c_full_fleet(t);
    t->pls[1].in_flight = 2; /* B */
}

static void c_busy_evicted_when_forced(struct tf *t)
{
    c_busy_not_evicted(t);
    t->s.evict_in_flight = true;
}

static void c_unknown_in_flight_is_busy(struct tf *t)
{
    c_full_fleet(t);
    t->pls[1].in_flight = -1;
}

static void c_min_replicas_not_evicted(struct tf *t)
{
    c_full_fleet(t);
    t->models[1].min_replicas = 1;
}

static void c_demanded_not_evicted(struct tf *t)
{
    c_full_fleet(t);
    demand(t, "B", PLAN_DEMAND_LOAD);
}

static void c_cheapest_set_across_nodes(struct tf *t)
{
    cpu_node(t, "n1", 8);
    cpu_node(t, "n2", 8);
    model(t, "A", 6, 1);
    model(t, "B", 6, 1);
    model(t, "C", 5, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 10);
    place(t, "B", "n2", PLAN_PLACEMENT_READY, "0", 5);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_evicts_several(struct tf *t)
{
    cpu_node(t, "n1", 10);
    model(t, "A", 3, 1);
    model(t, "B", 3, 1);
    model(t, "D", 3, 1);
    model(t, "C", 7, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 5);
    place(t, "D", "n1", PLAN_PLACEMENT_READY, "0", 10);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_waits_for_freed_memory(struct tf *t)
{
    cpu_node(t, "n1", 10);
    model(t, "A", 4, 1);
    model(t, "B", 4, 1);
    model(t, "C", 4, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n1", PLAN_PLACEMENT_UNLOADING, "0", 10);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_tp_eviction_picks_group(struct tf *t)
{
    gpu_node(t, "n1", 3, 16);
    model(t, "A", 10, 1);
    model(t, "B", 10, 1);
    model(t, "D", 10, 1);
    model(t, "T", 20, 2);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 10);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "1", 1);
    place(t, "D", "n1", PLAN_PLACEMENT_READY, "2", 5);
    demand(t, "T", PLAN_DEMAND_LOAD);
}

static void c_idle_unload(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 2, 1);
    model(t, "B", 2, 1)->pinned = true;
    model(t, "D", 2, 1);
    model(t, "E", 2, 1)->min_replicas = 1;
    model(t, "F", 2, 1);
    model(t, "G", 2, 1);
    model(t, "H", 2, 1)->idle_ttl_ms = 5 * MIN_MS;
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 31);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 60);
    place(t, "D", "n1", PLAN_PLACEMENT_READY, "0", 5);
    place(t, "E", "n1", PLAN_PLACEMENT_READY, "0", 60);
    place(t, "F", "n1", PLAN_PLACEMENT_READY, "0", 60)->in_flight = 1;
    place(t, "G", "n1", PLAN_PLACEMENT_READY, "0", 60);
    place(t, "H", "n1", PLAN_PLACEMENT_READY, "0", 6);
    demand(t, "G", PLAN_DEMAND_LOAD);
}

static void c_idle_keeps_min_replicas(struct tf *t)
{
    cpu_node(t, "n1", 16);
    cpu_node(t, "n2", 16);
    struct plan_model *a = model(t, "A", 4, 1);
    a->min_replicas = 1;
    a->max_replicas = 2;
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 60);
    place(t, "A", "n2", PLAN_PLACEMENT_READY, "0", 60);
}

static void c_pinned_loaded(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 8, 1)->pinned = true;
}

static void c_min_replicas_spread(struct tf *t)
{
    cpu_node(t, "n1", 16);
    cpu_node(t, "n2", 16);
    struct plan_model *a = model(t, "A", 8, 1);
    a->min_replicas = 2;
    a->max_replicas = 2;
}

static void c_pinned_failures_wait(struct tf *t)
{
    cpu_node(t, "n1", 16);
    struct plan_model *a = model(t, "A", 8, 1);
    a->pinned = true;
    a->load_failures = 3;
}

static void c_pinned_before_demand(struct tf *t)
{
    cpu_node(t, "n1", 10);
    model(t, "A", 6, 1)->priority = 5;
    model(t, "B", 6, 1)->pinned = true;
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_demand_priority_order(struct tf *t)
{
    cpu_node(t, "n1", 10);
    model(t, "A", 6, 1);
    model(t, "B", 6, 1)->priority = 5;
    demand(t, "A", PLAN_DEMAND_LOAD);
    demand(t, "B", PLAN_DEMAND_LOAD);
}

static void c_pinned_and_demanded_one_load(struct tf *t)
{
    cpu_node(t, "n1", 16);
    cpu_node(t, "n2", 16);
    model(t, "A", 8, 1)->pinned = true;
    demand(t, "A", PLAN_DEMAND_LOAD);
}

static void c_timeouts(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 4, 1);
    model(t, "B", 4, 1);
    model(t, "D", 4, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_LOADING, "0", 0)->in_state_ms = 16 * MIN_MS;
    place(t, "B", "n1", PLAN_PLACEMENT_UNLOADING, "0", 0)->in_state_ms = 20 * MIN_MS;
    place(t, "D", "n1", PLAN_PLACEMENT_REQUESTED, "0", 0)->in_state_ms = MIN_MS;
}

static void c_drain_moves(struct tf *t)
{
    cpu_node(t, "n1", 16)->draining = true;
    cpu_node(t, "n2", 16);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
}

static void c_drain_move_completes(struct tf *t)
{
    c_drain_moves(t);
    place(t, "A", "n2", PLAN_PLACEMENT_READY, "0", 0)->replaces_id = pid(1);
}

static void c_drain_move_waits_for_requests(struct tf *t)
{
    c_drain_move_completes(t);
    t->pls[0].in_flight = 3;
}

static void c_drain_move_loading(struct tf *t)
{
    c_drain_moves(t);
    place(t, "A", "n2", PLAN_PLACEMENT_LOADING, "0", 0)->replaces_id = pid(1);
}

static void c_drain_replica_elsewhere(struct tf *t)
{
    c_drain_moves(t);
    t->models[0].max_replicas = 2;
    place(t, "A", "n2", PLAN_PLACEMENT_READY, "0", 1);
}

/* min_replicas 2: the replica elsewhere is not enough, the drained one moves. */
static void c_drain_min_replicas_moves(struct tf *t)
{
    cpu_node(t, "n1", 16)->draining = true;
    cpu_node(t, "n2", 16);
    cpu_node(t, "n3", 16);
    model(t, "A", 8, 1)->min_replicas = 2;
    t->models[0].max_replicas = 2;
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "A", "n2", PLAN_PLACEMENT_READY, "0", 1);
}

static void c_drain_no_room(struct tf *t)
{
    cpu_node(t, "n1", 16)->draining = true;
    cpu_node(t, "n2", 4);
    model(t, "A", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
}

/* n1: two 16 GiB GPUs, pinned A and B (8 GiB each) one per GPU; C (12 GiB) is demanded. */
static void c_defrag_within_node(struct tf *t)
{
    t->s.defrag_after_cycles = 5;
    t->cycle = 5;
    gpu_node(t, "n1", 2, 16);
    model(t, "A", 8, 1)->pinned = true;
    model(t, "B", 8, 1)->pinned = true;
    model(t, "C", 12, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "1", 1);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_defrag_other_cycle(struct tf *t)
{
    c_defrag_within_node(t);
    t->cycle = 4;
}

static void c_defrag_across_nodes(struct tf *t)
{
    t->s.defrag_after_cycles = 5;
    t->cycle = 10;
    cpu_node(t, "n1", 10);
    cpu_node(t, "n2", 10);
    model(t, "A", 5, 1)->pinned = true;
    model(t, "B", 5, 1)->pinned = true;
    model(t, "C", 8, 1);
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    place(t, "B", "n2", PLAN_PLACEMENT_READY, "0", 1);
    demand(t, "C", PLAN_DEMAND_LOAD);
}

static void c_defrag_move_in_progress(struct tf *t)
{
    c_defrag_across_nodes(t);
    place(t, "A", "n2", PLAN_PLACEMENT_REQUESTED, "0", 0)->replaces_id = pid(1);
}

static void c_steady_state(struct tf *t)
{
    cpu_node(t, "n1", 16);
    model(t, "A", 4, 1);
    model(t, "B", 4, 1)->pinned = true;
    place(t, "A", "n1", PLAN_PLACEMENT_READY, "0", 5);
    place(t, "B", "n1", PLAN_PLACEMENT_READY, "0", 500);
}

struct reason_check {
    size_t action;
    const char *contains;
};

struct plan_case {
    const char *name;
    void (*setup)(struct tf *t);
    const char *expected[8]; /* rendered actions in order; NULL ends the list */
    struct reason_check reasons[2];
};

static const struct plan_case cases[] = {
        {.name = "best fit: the smallest leftover",
         .setup = c_best_fit_smallest_leftover,
         .expected = {"load demand A n2 cuda:0"}},
        {.name = "best fit: the fullest device that still fits",
         .setup = c_best_fit_device_within_node,
         .expected = {"load demand A n1 cuda:0"}},
        {.name = "holders of the files come before a tighter fit",
         .setup = c_files_preferred_over_fit,
         .expected = {"load demand A n2 cuda:0"},
         .reasons = {{0, "holds its files"}}},
        {.name = "require_files: only holders qualify",
         .setup = c_files_required,
         .expected = {"wait demand A -"},
         .reasons = {{0, "holds the files"}}},
        {.name = "tensor parallel: T free devices of one node",
         .setup = c_tensor_parallel_one_node,
         .expected = {"load demand T n2 cuda:2,cuda:3"}},
        {.name = "tensor parallel on a CPU node: its one device",
         .setup = c_tensor_parallel_on_cpu,
         .expected = {"load demand T n1 cpu:0"}},
        {.name = "device reserve applies to GPUs only",
         .setup = c_reserve_on_gpus_only,
         .expected = {"load demand A n2 cpu:0"}},
        {.name = "late, draining and dead nodes get no new placement",
         .setup = c_unusable_nodes,
         .expected = {"mark_dead node_dead - n3", "load demand A n4 cuda:0"}},
        {.name = "a dead node is marked down and its demanded model placed elsewhere",
         .setup = c_dead_node_demand_replaced,
         .expected = {"mark_dead node_dead - n1", "load demand A n2 cpu:0"}},
        {.name = "demand is satisfied by a ready replica",
         .setup = c_demand_satisfied,
         .expected = {"resolve demand A - P1 satisfied"}},
        {.name = "no duplicate load while one is in progress",
         .setup = c_demand_waits_while_loading,
         .expected = {NULL}},
        {.name = "demand expires after demand_ttl",
         .setup = c_demand_expires,
         .expected = {"resolve demand A - expired"},
         .reasons = {{0, "demand_ttl"}}},
        {.name = "unknown memory need fails the demand",
         .setup = c_memory_unknown,
         .expected = {"resolve demand A - failed"},
         .reasons = {{0, "unknown"}}},
        {.name = "a model too big for every node fails at once",
         .setup = c_too_big,
         .expected = {"resolve demand A - failed"},
         .reasons = {{0, "no live node has devices that large"}}},
        {.name = "max_load_attempts failures fail the demand with the last error",
         .setup = c_failures_block,
         .expected = {"resolve failures A - failed"},
         .reasons = {{0, "boom: bad magic"}}},
        {.name = "demand opened after the failures retries",
         .setup = c_new_demand_retries,
         .expected = {"retry demand A -", "load demand A n1 cpu:0"}},
        {.name = "a node where the load just failed is tried last",
         .setup = c_failed_node_tried_last,
         .expected = {"load demand A n2 cpu:0"}},
        {.name = "demand for a named node",
         .setup = c_node_targeted_demand,
         .expected = {"load demand A n2 cpu:0"}},
        {.name = "unload demand",
         .setup = c_unload_demand,
         .expected = {"unload demand A n1 P1", "resolve demand A - satisfied"}},
        {.name = "unload demand for a pinned model is cancelled",
         .setup = c_unload_demand_pinned,
         .expected = {"resolve demand A - cancelled"}},
        {.name = "lru evicts the least recently used",
         .setup = c_full_fleet,
         .expected = {"unload evict B n1 P2", "wait evict C -"},
         .reasons = {{0, "lru"}, {1, "evicting B"}}},
        {.name = "priority evicts the lowest priority first",
         .setup = c_priority_lowest_first,
         .expected = {"unload evict A n1 P1", "wait evict C -"},
         .reasons = {{0, "priority 0"}}},
        {.name = "priority: equal priorities by lru",
         .setup = c_priority_ties_by_lru,
         .expected = {"unload evict B n1 P2", "wait evict C -"}},
        {.name = "a pinned model is never evicted",
         .setup = c_pinned_never_evicted,
         .expected = {"unload evict A n1 P1", "wait evict C -"}},
        {.name = "nothing evictable: wait",
         .setup = c_all_pinned_wait,
         .expected = {"wait demand C -"},
         .reasons = {{0, "pinned, busy"}}},
        {.name = "requests in flight protect a replica",
         .setup = c_busy_not_evicted,
         .expected = {"unload evict A n1 P1", "wait evict C -"}},
        {.name = "evict_in_flight forces it",
         .setup = c_busy_evicted_when_forced,
         .expected = {"unload evict B n1 P2", "wait evict C -"}},
        {.name = "unknown requests in flight count as busy",
         .setup = c_unknown_in_flight_is_busy,
         .expected = {"unload evict A n1 P1", "wait evict C -"}},
        {.name = "min_replicas are not evicted",
         .setup = c_min_replicas_not_evicted,
         .expected = {"unload evict A n1 P1", "wait evict C -"}},
        {.name = "a demanded model is not evicted",
         .setup = c_demanded_not_evicted,
         .expected = {"resolve demand B - P2 satisfied", "unload evict A n1 P1", "wait evict C -"}},
        {.name = "the cheapest victim set over all nodes",
         .setup = c_cheapest_set_across_nodes,
         .expected = {"unload evict A n1 P1", "wait evict C -"}},
        {.name = "several victims, least recently used first",
         .setup = c_evicts_several,
         .expected = {"unload evict D n1 P3", "unload evict B n1 P2", "wait evict C -"}},
        {.name = "memory being freed is waited for, not evicted again",
         .setup = c_waits_for_freed_memory,
         .expected = {"wait demand C -"},
         .reasons = {{0, "being freed"}}},
        {.name = "tensor-parallel eviction picks the cheapest device group",
         .setup = c_tp_eviction_picks_group,
         .expected = {"unload evict A n1 P1", "unload evict D n1 P3", "wait evict T -"}},
        {.name = "idle TTL unloads; pinned, min_replicas, busy, demanded and recent stay",
         .setup = c_idle_unload,
         .expected = {"resolve demand G - P6 satisfied", "unload idle A n1 P1",
                      "unload idle H n1 P7"},
         .reasons = {{1, "idle_ttl 30m00s"}, {2, "idle_ttl 5m00s"}}},
        {.name = "idle unload keeps min_replicas",
         .setup = c_idle_keeps_min_replicas,
         .expected = {"unload idle A n1 P1"}},
        {.name = "a pinned model is loaded",
         .setup = c_pinned_loaded,
         .expected = {"load replicas A n1 cpu:0"}},
        {.name = "min_replicas spread over nodes",
         .setup = c_min_replicas_spread,
         .expected = {"load replicas A n1 cpu:0", "load replicas A n2 cpu:0"}},
        {.name = "a pinned model that keeps failing waits for the operator",
         .setup = c_pinned_failures_wait,
         .expected = {"wait failures A -"},
         .reasons = {{0, "cortex.request_load"}}},
        {.name = "pinned models are placed before demand",
         .setup = c_pinned_before_demand,
         .expected = {"load replicas B n1 cpu:0", "wait demand A -"}},
        {.name = "higher priority demand first",
         .setup = c_demand_priority_order,
         .expected = {"load demand B n1 cpu:0", "wait demand A -"}},
        {.name = "pinned and demanded: one load",
         .setup = c_pinned_and_demanded_one_load,
         .expected = {"load replicas A n1 cpu:0"}},
        {.name = "loads and unloads past load_timeout fail",
         .setup = c_timeouts,
         .expected = {"fail timeout A n1 P1", "fail timeout B n1 P2"},
         .reasons = {{0, "load of A"}, {1, "unload of B"}}},
        {.name = "drain moves a replica that is in use",
         .setup = c_drain_moves,
         .expected = {"load drain A n2 cpu:0 replaces=P1"}},
        {.name = "a ready replacement retires the drained replica",
         .setup = c_drain_move_completes,
         .expected = {"unload moved A n1 P1"}},
        {.name = "the drained replica finishes its requests first",
         .setup = c_drain_move_waits_for_requests,
         .expected = {"wait moved A -"}},
        {.name = "a loading replacement: nothing to do",
         .setup = c_drain_move_loading,
         .expected = {NULL}},
        {.name = "drain unloads when a replica runs elsewhere",
         .setup = c_drain_replica_elsewhere,
         .expected = {"unload drain A n1 P1"},
         .reasons = {{0, "elsewhere"}}},
        {.name = "drain moves a replica that min_replicas needs despite one elsewhere",
         .setup = c_drain_min_replicas_moves,
         .expected = {"load drain A n3 cpu:0 replaces=P1"}},
        {.name = "drain without room elsewhere unloads",
         .setup = c_drain_no_room,
         .expected = {"unload drain A n1 P1"},
         .reasons = {{0, "no room elsewhere"}}},
        {.name = "defragmentation inside a node",
         .setup = c_defrag_within_node,
         .expected = {"load defrag A n1 cuda:1 replaces=P1", "wait defrag C -"}},
        {.name = "no defragmentation between its cycles",
         .setup = c_defrag_other_cycle,
         .expected = {"wait demand C -"},
         .reasons = {{0, "pinned, busy"}}},
        {.name = "defragmentation across nodes",
         .setup = c_defrag_across_nodes,
         .expected = {"load defrag A n2 cpu:0 replaces=P1", "wait defrag C -"}},
        {.name = "no new defragmentation while a move runs",
         .setup = c_defrag_move_in_progress,
         .expected = {"wait demand C -"},
         .reasons = {{0, "being freed"}}},
        {.name = "steady state: nothing to do", .setup = c_steady_state, .expected = {NULL}},
};

START_TEST(test_plan_case)
{
    const struct plan_case *c = &cases[_i];
    struct tf t;
    tf_init(&t);
    c->setup(&t);
    struct plan p;
    tf_plan(&t, &p);

    char got[8][256];
    size_t n_expected = 0;
    while (n_expected < 8 && c->expected[n_expected] != NULL)
        n_expected++;
    for (size_t i = 0; i < p.n_actions && i < 8; i++) {
        render(&t, &p.actions[i], got[i], sizeof got[i]);
        ck_assert_ptr_nonnull(p.actions[i].reason);
        ck_assert_uint_gt(strlen(p.actions[i].reason), 0);
    }
    for (size_t i = 0; i < p.n_actions && i < 8; i++) {
        ck_assert_msg(i < n_expected, "%s: unexpected action %zu: \"%s\" (%s)", c->name, i, got[i],
                      p.actions[i].reason);
        ck_assert_msg(strcmp(got[i], c->expected[i]) == 0,
                      "%s: action %zu is \"%s\" (%s), expected \"%s\"", c->name, i, got[i],
                      p.actions[i].reason, c->expected[i]);
    }
    ck_assert_msg(p.n_actions == n_expected, "%s: %zu actions, expected %zu", c->name, p.n_actions,
                  n_expected);
    for (size_t r = 0; r < 2; r++) {
        const struct reason_check *rc = &c->reasons[r];
        if (rc->contains == NULL)
            continue;
        ck_assert_uint_lt(rc->action, p.n_actions);
        ck_assert_msg(strstr(p.actions[rc->action].reason, rc->contains) != NULL,
                      "%s: reason of action %zu is \"%s\", expected it to mention \"%s\"", c->name,
                      rc->action, p.actions[rc->action].reason, rc->contains);
    }
    plan_free(&p);
}
END_TEST

/* LOAD actions carry what the executor needs: memory, devices in rank order, the demand. */
START_TEST(test_load_action_fields)
{
    struct tf t;
    tf_init(&t);
    c_tensor_parallel_one_node(&t);
    struct plan p;
    tf_plan(&t, &p);
    ck_assert_uint_eq(p.n_actions, 1);
    const struct plan_action *a = &p.actions[0];
    ck_assert_int_eq(a->memory_bytes, 24 * GIB);
    ck_assert_int_eq(a->model_id, 103);
    ck_assert_int_eq(a->node_id, 2);
    ck_assert_int_eq(a->demand_id, 501);
    ck_assert_uint_eq(a->n_devices, 2);
    ck_assert_int_eq(a->device_ids[0], 202);
    ck_assert_int_eq(a->device_ids[1], 203);
    ck_assert_int_eq(a->device_ordinals[0], 2);
    ck_assert_int_eq(a->device_ordinals[1], 3);
    plan_free(&p);
    plan_free(&p); /* empty again: harmless */
    plan_free(NULL);
}
END_TEST

/* The same snapshot always gives the same plan. */
START_TEST(test_deterministic)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct tf t1, t2;
        tf_init(&t1);
        tf_init(&t2);
        cases[c].setup(&t1);
        cases[c].setup(&t2);
        struct plan p1, p2;
        tf_plan(&t1, &p1);
        tf_plan(&t2, &p2);
        ck_assert_uint_eq(p1.n_actions, p2.n_actions);
        for (size_t i = 0; i < p1.n_actions; i++)
            ck_assert_str_eq(p1.actions[i].reason, p2.actions[i].reason);
        plan_free(&p1);
        plan_free(&p2);
    }
}
END_TEST

/* Snapshot rows that do not add up are ignored, not trusted. */
START_TEST(test_inconsistent_rows_ignored)
{
    struct tf t;
    tf_init(&t);
    cpu_node(&t, "n1", 16);
    model(&t, "A", 8, 1);
    model(&t, "B", 8, 1);
    struct plan_placement *p = place(&t, "A", "n1", PLAN_PLACEMENT_READY, "0", 1);
    p->node_id = 99; /* unknown node */
    p = place(&t, "B", "n1", PLAN_PLACEMENT_READY, "0", 1);
    t.pl_devs[1][0] = 12345; /* a device that is not on n1 */
    demand(&t, "A", PLAN_DEMAND_LOAD);
    struct plan out;
    tf_plan(&t, &out);
    ck_assert_uint_eq(out.n_actions, 1);
    char line[256];
    render(&t, &out.actions[0], line, sizeof line);
    ck_assert_str_eq(line, "load demand A n1 cpu:0");
    plan_free(&out);
}
END_TEST

START_TEST(test_names_and_formatting)
{
    ck_assert_str_eq(plan_action_kind_name(PLAN_ACTION_MARK_DEAD), "mark_dead");
    ck_assert_str_eq(plan_action_kind_name((enum plan_action_kind)99), "unknown");
    ck_assert_str_eq(plan_cause_name(PLAN_CAUSE_EVICT), "evict");
    ck_assert_str_eq(plan_cause_name((enum plan_cause)99), "unknown");
    ck_assert_str_eq(plan_resolution_name(PLAN_RESOLUTION_EXPIRED), "expired");
    enum plan_eviction e = PLAN_EVICTION_LRU;
    ck_assert_int_eq(plan_eviction_parse("priority", &e), 0);
    ck_assert_int_eq(e, PLAN_EVICTION_PRIORITY);
    ck_assert_int_eq(plan_eviction_parse("lru", &e), 0);
    ck_assert_int_eq(e, PLAN_EVICTION_LRU);
    ck_assert_int_eq(plan_eviction_parse("LRU", &e), -1);
    ck_assert_int_eq(plan_eviction_parse(NULL, &e), -1);
    char b[32];
    ck_assert_str_eq(plan_format_bytes(512, b, sizeof b), "512 B");
    ck_assert_str_eq(plan_format_bytes(300 * ((int64_t)1 << 20), b, sizeof b), "300.0 MiB");
    ck_assert_str_eq(plan_format_bytes(3 * GIB / 2, b, sizeof b), "1.5 GiB");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_add_loop_test(tc, test_plan_case, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_load_action_fields);
    tcase_add_test(tc, test_deterministic);
    tcase_add_test(tc, test_inconsistent_rows_ignored);
    tcase_add_test(tc, test_names_and_formatting);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
