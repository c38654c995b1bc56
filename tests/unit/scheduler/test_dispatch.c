/*
 * tests/unit/scheduler/test_dispatch.c — requests to neurons on worker threads, against a fake
 * neuron on 127.0.0.1.
 *
 * Covers: the load and unload bodies; 2xx accepted; a 4xx refusal is final with the neuron's
 * message; 5xx is retried with backoff and then accepted or given up "after N attempts"; a
 * refused connection is unreachable; the fence drops a job before anything is sent; one job per
 * placement at a time; GET /models parsed into requests in flight per model.
 */
#include <check.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "timing.h"

#include "scheduler/fake_neuron.h"

static struct fake_neuron fn;
static atomic_bool fence_open;

static bool test_fence(void *ud)
{
    (void)ud;
    return atomic_load(&fence_open);
}

static dispatch_t *start(int attempts)
{
    atomic_store(&fence_open, true);
    struct dispatch_options opt = {.workers = 2,
                                   .timeout_ms = 2000,
                                   .connect_timeout_ms = 1000,
                                   .attempts = attempts,
                                   .backoff_initial_ms = 10,
                                   .backoff_max_ms = 40,
                                   .fence = test_fence};
    char *err = NULL;
    dispatch_t *d = dispatch_create(&opt, &err);
    ck_assert_msg(d != NULL, "dispatch_create: %s", err ? err : "?");
    return d;
}

/* Waits (bounded) for the next result and returns it; the caller frees with
 * dispatch_results_free(r, 1). */
static struct dispatch_result *next_result(dispatch_t *d)
{
    uint64_t deadline = timing_now_ms() + 10000;
    for (;;) {
        struct pollfd p = {.fd = dispatch_fd(d), .events = POLLIN};
        int left = (int)(deadline - timing_now_ms());
        ck_assert_msg(left > 0, "no result within 10 s");
        ck_assert_int_ge(poll(&p, 1, left), 0);
        struct dispatch_result *r = NULL;
        size_t n = dispatch_take_results(d, &r);
        if (n == 0) {
            dispatch_results_free(r, 0);
            continue;
        }
        ck_assert_uint_eq(n, 1);
        return r;
    }
}

static struct dispatch_job load_job(int64_t placement)
{
    struct dispatch_job j = {.kind = DISPATCH_LOAD,
                             .placement_id = placement,
                             .node_id = 1,
                             .endpoint = fn.endpoint,
                             .model = "qwen\"3",
                             .ordinals = {2, 3},
                             .n_ordinals = 2};
    return j;
}

START_TEST(test_load_accepted)
{
    fake_neuron_start(&fn);
    dispatch_t *d = start(3);
    struct dispatch_job j = load_job(7);
    char slash[80];
    snprintf(slash, sizeof slash, "%s/", fn.endpoint); /* a trailing slash is tolerated */
    j.endpoint = slash;
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_ACCEPTED);
    ck_assert_int_eq(r->kind, DISPATCH_LOAD);
    ck_assert_int_eq(r->placement_id, 7);
    ck_assert_int_eq(r->status, 202);
    ck_assert_int_eq(r->attempts, 1);
    ck_assert_str_eq(r->model, "qwen\"3");
    dispatch_results_free(r, 1);
    ck_assert_str_eq(fn.bodies[0],
                     "{\"model\":\"qwen\\\"3\",\"devices\":[2,3],\"placement_id\":7}");
    ck_assert(!dispatch_pending(d, 7));

    struct dispatch_job u = {
            .kind = DISPATCH_UNLOAD, .placement_id = 7, .endpoint = fn.endpoint, .model = "m"};
    ck_assert_int_eq(dispatch_submit(d, &u), 0);
    r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_ACCEPTED);
    dispatch_results_free(r, 1);
    ck_assert_str_eq(fn.bodies[1], "{\"model\":\"m\"}");
    dispatch_destroy(d);
    fake_neuron_stop(&fn);
}
END_TEST

START_TEST(test_refusal_is_final)
{
    fake_neuron_start(&fn);
    fn.load_status = 409;
    fn.load_answer = "{\"error\":{\"message\":\"memory budget too small: need 6 GiB\"}}";
    dispatch_t *d = start(3);
    struct dispatch_job j = load_job(8);
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_REFUSED);
    ck_assert_int_eq(r->status, 409);
    ck_assert_int_eq(r->attempts, 1);
    ck_assert_str_eq(r->reason,
                     "neuron refused to load (HTTP 409): memory budget too small: need 6 GiB");
    dispatch_results_free(r, 1);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 1);

    fn.unload_status = 404;
    struct dispatch_job u = {
            .kind = DISPATCH_UNLOAD, .placement_id = 9, .endpoint = fn.endpoint, .model = "m"};
    ck_assert_int_eq(dispatch_submit(d, &u), 0);
    r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_REFUSED);
    ck_assert_int_eq(r->status, 404);
    ck_assert_ptr_nonnull(strstr(r->reason, "model not loaded"));
    dispatch_results_free(r, 1);
    dispatch_destroy(d);
    fake_neuron_stop(&fn);
}
END_TEST

START_TEST(test_server_errors_are_retried)
{
    fake_neuron_start(&fn);
    fn.fail_first = 2;
    dispatch_t *d = start(3);
    struct dispatch_job j = load_job(10);
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_ACCEPTED);
    ck_assert_int_eq(r->attempts, 3);
    dispatch_results_free(r, 1);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 3);

    fn.fail_first = 100; /* always 500 from now on */
    j.placement_id = 11;
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_UNREACHABLE);
    ck_assert_int_eq(r->attempts, 3);
    ck_assert_int_eq(r->status, 500);
    ck_assert_ptr_nonnull(strstr(r->reason, "neuron failed to load (HTTP 500)"));
    ck_assert_ptr_nonnull(strstr(r->reason, "(after 3 attempts)"));
    dispatch_results_free(r, 1);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 6);
    dispatch_destroy(d);
    fake_neuron_stop(&fn);
}
END_TEST

START_TEST(test_connection_refused)
{
    int port = 0;
    int fd = test_util_refusing_port(&port);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);
    dispatch_t *d = start(2);
    struct dispatch_job j = {
            .kind = DISPATCH_UNLOAD, .placement_id = 12, .endpoint = endpoint, .model = "m"};
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_UNREACHABLE);
    ck_assert_int_eq(r->status, 0);
    ck_assert_int_eq(r->attempts, 2);
    ck_assert_ptr_nonnull(strstr(r->reason, "unload failed"));
    dispatch_results_free(r, 1);
    dispatch_destroy(d);
    close(fd);
}
END_TEST

START_TEST(test_fence_drops_jobs)
{
    fake_neuron_start(&fn);
    dispatch_t *d = start(3);
    atomic_store(&fence_open, false); /* e.g. stopped past the end of the lease */
    struct dispatch_job j = load_job(13);
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_ABORTED);
    ck_assert_int_eq(r->attempts, 0);
    dispatch_results_free(r, 1);
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.requests), 0);
    dispatch_destroy(d);
    fake_neuron_stop(&fn);
}
END_TEST

START_TEST(test_one_job_per_placement)
{
    fake_neuron_start(&fn);
    fn.hold = true;
    dispatch_t *d = start(3);
    struct dispatch_job j = load_job(14);
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    test_util_wait_count(&fn.mu, &fn.cond, &fn.loads, 1, 10000);
    pthread_mutex_lock(&fn.mu);
    fn.hold = false; /* only the first load is held */
    pthread_mutex_unlock(&fn.mu);
    ck_assert(dispatch_pending(d, 14));
    ck_assert_int_eq(dispatch_submit(d, &j), -1); /* the same load again */
    j.kind = DISPATCH_UNLOAD;
    ck_assert_int_eq(dispatch_submit(d, &j), -1); /* anything for that placement */
    j.placement_id = 15;
    ck_assert_int_eq(dispatch_submit(d, &j), 0); /* another placement is fine */
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->placement_id, 15);
    dispatch_results_free(r, 1);
    fake_neuron_release(&fn);
    r = next_result(d);
    ck_assert_int_eq(r->placement_id, 14);
    ck_assert_int_eq(r->outcome, DISPATCH_ACCEPTED);
    dispatch_results_free(r, 1);
    ck_assert(!dispatch_pending(d, 14));
    ck_assert_int_eq(fake_neuron_count(&fn, &fn.loads), 1);
    dispatch_destroy(d);
    fake_neuron_stop(&fn);
}
END_TEST

START_TEST(test_probe)
{
    fake_neuron_start(&fn);
    fn.models_answer = "{\"loaded\":[{\"name\":\"a\",\"state\":\"ready\",\"active_sequences\":2,"
                       "\"queued_requests\":3},{\"name\":\"b\",\"state\":\"loading\"}],"
                       "\"available\":[]}";
    dispatch_t *d = start(3);
    struct dispatch_job j = {.kind = DISPATCH_PROBE, .node_id = 4, .endpoint = fn.endpoint};
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    struct dispatch_result *r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_ACCEPTED);
    ck_assert_int_eq(r->node_id, 4);
    ck_assert_uint_eq(r->n_probe, 2);
    ck_assert_str_eq(r->probe[0].model, "a");
    ck_assert_str_eq(r->probe[0].state, "ready");
    ck_assert_int_eq(r->probe[0].in_flight, 5);
    ck_assert_str_eq(r->probe[1].model, "b");
    ck_assert_int_eq(r->probe[1].in_flight, 0);
    dispatch_results_free(r, 1);

    fn.models_answer = "not json";
    ck_assert_int_eq(dispatch_submit(d, &j), 0);
    r = next_result(d);
    ck_assert_int_eq(r->outcome, DISPATCH_UNREACHABLE);
    ck_assert_int_eq(r->attempts, 1); /* probes are not retried */
    dispatch_results_free(r, 1);
    ck_assert_str_eq(dispatch_kind_name(DISPATCH_PROBE), "probe");
    ck_assert_str_eq(dispatch_outcome_name(DISPATCH_REFUSED), "refused");
    dispatch_destroy(d);
    dispatch_destroy(NULL);
    fake_neuron_stop(&fn);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LEVEL_WARN);
    Suite *s = suite_create("dispatch");
    TCase *tc = tcase_create("dispatch");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_load_accepted);
    tcase_add_test(tc, test_refusal_is_final);
    tcase_add_test(tc, test_server_errors_are_retried);
    tcase_add_test(tc, test_connection_refused);
    tcase_add_test(tc, test_fence_drops_jobs);
    tcase_add_test(tc, test_one_job_per_placement);
    tcase_add_test(tc, test_probe);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
