/*
 * tests/unit/neuron/test_registry_smollm2.c — per-device memory accounting of the registry on a
 * made-up two-GPU host, with loads that succeed (SmolLM2-135M-Instruct GGUF, path in
 * CORTEX_SMOLLM2_GGUF; exit 77 without it), and the observer's word on refused loads.
 *
 * Checks: without devices a load goes to the device with the most free memory; a load named on
 * two devices is split evenly over them (the odd byte on the first); a device without room for
 * its share refuses with 409 naming it; unloading gives each device its share back; bad device
 * lists get 400; a refused load with a placement id is told to the observer (failed, refused,
 * with the reason), one without a placement id is not. Expected numbers come from the estimate
 * GET /models shows for the file and from the budgets the test chose.
 */
#include "registry.h"

#include "buf.h"
#include "model_fixture.h"

#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *gguf;
static char *dir;

struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int ready, gone, refused;
    int64_t refused_id;
    char refused_error[512];
};

static void seen_observe(void *ud, const struct registry_event *ev)
{
    struct seen *s = ud;
    pthread_mutex_lock(&s->mu);
    s->ready += ev->state == REGISTRY_STATE_READY;
    s->gone += ev->state == REGISTRY_STATE_GONE;
    if (ev->refused) {
        ck_assert_int_eq(ev->state, REGISTRY_STATE_FAILED);
        s->refused++;
        s->refused_id = ev->placement_id;
        snprintf(s->refused_error, sizeof s->refused_error, "%s", ev->error ? ev->error : "");
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* Waits (at most 2 minutes) until *counter reaches want. */
static bool seen_wait(struct seen *s, const int *counter, int want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 120;
    pthread_mutex_lock(&s->mu);
    while (*counter < want && pthread_cond_timedwait(&s->cond, &s->mu, &deadline) == 0)
        ;
    bool ok = *counter >= want;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void setup(void)
{
    dir = fixture_tmpdir();
    for (const char *n = "abcd"; *n; n++) {
        char *link = xasprintf("%s/%c.gguf", dir, *n);
        ck_assert_int_eq(symlink(gguf, link), 0);
        free(link);
    }
}

static void teardown(void)
{
    fixture_rmdir(dir);
}

static struct registry *make(const struct device *devices, size_t n, struct seen *s)
{
    struct registry_options o = {
            .models_dir = dir,
            .threads = 1,
            .ctx = 64,
            .max_batch = 2,
            .queue_depth = 1,
            .memory_budget = 1,
            .devices = devices,
            .n_devices = n,
            .compute_on_cpu = true, /* the GPUs below are made up: accounting only */
            .observer = seen_observe,
            .observer_ud = s,
    };
    return registry_create(&o);
}

static uint64_t estimate_of(struct registry *r)
{
    json_t *doc = registry_describe(r);
    json_t *m = json_array_get(json_object_get(doc, "available"), 0);
    uint64_t est = (uint64_t)json_integer_value(json_object_get(m, "estimated_memory_bytes"));
    json_decref(doc);
    ck_assert_uint_gt(est, 0);
    return est;
}

static void used_of(struct registry *r, uint64_t *used0, uint64_t *used1)
{
    struct registry_device_usage u[2];
    ck_assert_uint_eq(registry_get_devices(r, u, 2), 2);
    *used0 = u[0].used;
    *used1 = u[1].used;
    ck_assert_uint_eq(u[0].free, u[0].device->budget - u[0].used);
    ck_assert_uint_eq(u[1].free, u[1].device->budget - u[1].used);
    ck_assert(!u[0].has_driver_free); /* made-up GPUs: no driver to ask */
}

/* The "devices" list GET /models shows for a loaded model, as "cuda:0,cuda:1". */
static char *devices_of(struct registry *r, const char *name)
{
    json_t *doc = registry_describe(r);
    size_t i;
    json_t *m;
    char *out = NULL;
    json_array_foreach(json_object_get(doc, "loaded"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) != 0)
            continue;
        struct buf b = BUF_INIT;
        size_t k;
        json_t *d;
        json_array_foreach(json_object_get(m, "devices"), k, d)
                buf_appendf(&b, "%s%s", k ? "," : "", json_string_value(d));
        out = buf_steal(&b, NULL);
    }
    json_decref(doc);
    ck_assert_ptr_nonnull(out);
    return out;
}

static void load_ok(struct registry *r, const char *name, json_t *devices)
{
    struct error err = ERROR_INIT;
    ck_assert_msg(registry_load(r, name, devices, 0, &err) == 0, "%s", error_message(&err));
    json_decref(devices);
}

static enum err_code load_refused(struct registry *r, const char *name, json_t *devices,
                                  int64_t placement_id, char *msg, size_t msglen)
{
    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_load(r, name, devices, placement_id, &err), -1);
    snprintf(msg, msglen, "%s", error_message(&err));
    enum err_code code = err.code;
    error_clear(&err);
    json_decref(devices);
    return code;
}

START_TEST(test_per_device_accounting)
{
    struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    struct registry *probe = make(NULL, 0, NULL);
    uint64_t est = estimate_of(probe);
    registry_destroy(probe);
    struct device gpus[2] = {
            {.kind = DEVICE_KIND_CUDA, .ordinal = 0, .memory_total = 4 * est, .budget = 2 * est},
            {.kind = DEVICE_KIND_CUDA,
             .ordinal = 1,
             .memory_total = 4 * est,
             .budget = 2 * est + 1},
    };
    snprintf(gpus[0].name, sizeof gpus[0].name, "Made-up GPU");
    snprintf(gpus[1].name, sizeof gpus[1].name, "Made-up GPU");
    struct registry *r = make(gpus, 2, &s);
    ck_assert_uint_eq(registry_device_count(r), 2);
    uint64_t u0, u1;
    char msg[1024];

    /* no devices named: the one with the most free memory */
    load_ok(r, "a", NULL);
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u0, 0);
    ck_assert_uint_eq(u1, est);
    load_ok(r, "b", NULL);
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u0, est);
    ck_assert_uint_eq(u1, est);
    char *devs = devices_of(r, "a");
    ck_assert_str_eq(devs, "cuda:1");
    free(devs);
    devs = devices_of(r, "b");
    ck_assert_str_eq(devs, "cuda:0");
    free(devs);

    /* named on two devices, by name and by ordinal: split, the odd byte on the first */
    load_ok(r, "c", json_pack("[s, i]", "cuda:1", 0));
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u0, est + (est - est / 2));
    ck_assert_uint_eq(u1, est + est / 2);
    devs = devices_of(r, "c");
    ck_assert_str_eq(devs, "cuda:0,cuda:1");
    free(devs);
    ck_assert(seen_wait(&s, &s.ready, 3));

    /* no room left for a whole model on either device */
    ck_assert_int_eq(load_refused(r, "d", json_pack("[s]", "cuda:0"), 0, msg, sizeof msg),
                     ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "memory budget of cuda:0") != NULL, "%s", msg);
    ck_assert_int_eq(load_refused(r, "d", NULL, 0, msg, sizeof msg), ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "memory budget of cuda:1") != NULL, "%s", msg);
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u0 + u1, 3 * est);

    /* bad device lists */
    ck_assert_int_eq(load_refused(r, "d", json_pack("[s]", "cpu"), 0, msg, sizeof msg),
                     ERR_INVALID_REQUEST);
    ck_assert_msg(strstr(msg, "\"cuda:0\", \"cuda:1\"") != NULL, "%s", msg);
    ck_assert_int_eq(load_refused(r, "d", json_pack("[i, s]", 1, "cuda:1"), 0, msg, sizeof msg),
                     ERR_INVALID_REQUEST);
    ck_assert_msg(strstr(msg, "twice") != NULL, "%s", msg);
    ck_assert_int_eq(load_refused(r, "d", json_pack("[i]", 2), 0, msg, sizeof msg),
                     ERR_INVALID_REQUEST);
    ck_assert_int_eq(load_refused(r, "d", json_string("cuda:0"), 0, msg, sizeof msg),
                     ERR_INVALID_REQUEST);
    ck_assert_int_eq(s.refused, 0); /* no placement id: nothing to tell */

    /* unloading gives each device its share back */
    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_unload(r, "c", &err), 0);
    ck_assert(seen_wait(&s, &s.gone, 1));
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u0, est);
    ck_assert_uint_eq(u1, est);
    load_ok(r, "d", json_pack("[s]", "cuda:1"));
    used_of(r, &u0, &u1);
    ck_assert_uint_eq(u1, 2 * est);
    registry_destroy(r);
}
END_TEST

START_TEST(test_refusals_reach_the_observer)
{
    struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    struct registry *r = make(NULL, 0, &s); /* one CPU device of 1 byte */
    char msg[1024];
    ck_assert_int_eq(load_refused(r, "nothing-here", NULL, 41, msg, sizeof msg),
                     ERR_MODEL_NOT_FOUND);
    ck_assert_int_eq(s.refused, 1);
    ck_assert_int_eq(s.refused_id, 41);
    ck_assert_str_eq(s.refused_error, msg);
    ck_assert_int_eq(load_refused(r, "a", NULL, 42, msg, sizeof msg), ERR_CONFLICT);
    ck_assert_int_eq(s.refused, 2);
    ck_assert_int_eq(s.refused_id, 42);
    ck_assert_msg(strstr(s.refused_error, "memory budget of cpu") != NULL, "%s", s.refused_error);
    ck_assert_int_eq(load_refused(r, "a", NULL, 0, msg, sizeof msg), ERR_CONFLICT);
    ck_assert_int_eq(s.refused, 2);
    registry_destroy(r);
}
END_TEST

int main(void)
{
    gguf = getenv("CORTEX_SMOLLM2_GGUF");
    if (!gguf || access(gguf, R_OK) != 0) {
        fprintf(stderr, "CORTEX_SMOLLM2_GGUF not set or unreadable: skipped\n");
        return 77;
    }
    Suite *s = suite_create("registry_smollm2");
    TCase *tc = tcase_create("registry_smollm2");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_per_device_accounting);
    tcase_add_test(tc, test_refusals_reach_the_observer);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
