/*
 * tests/unit/gateway/test_upstream.c — the upstream pool (gateway/upstream.h): model lists,
 * the choice by fewest outstanding requests, exclusions, ejection after consecutive failures
 * and return after the ejection time, and refreshing model lists over HTTP from a server on
 * 127.0.0.1 (and keeping the old list when an upstream does not answer).
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "http_server.h"
#include "timing.h"
#include "upstream.h"

#include "common/test_util.h"

START_TEST(test_models)
{
    const char *urls[] = {"http://a:1/", "http://b:2"};
    struct upstream_pool *p = upstream_pool_create(urls, 2, 0, 0);
    ck_assert_uint_eq(upstream_pool_size(p), 2);
    ck_assert_str_eq(upstream_pool_url(p, 0), "http://a:1");
    ck_assert_ptr_null(upstream_pool_url(p, 2));
    const char *m0[] = {"zeta", "alpha"};
    const char *m1[] = {"alpha", "mid"};
    upstream_pool_set_models(p, 0, m0, 2);
    upstream_pool_set_models(p, 1, m1, 2);
    ck_assert(upstream_pool_has_model(p, "mid"));
    ck_assert(!upstream_pool_has_model(p, "nope"));
    json_t *all = upstream_pool_models(p);
    json_t *want = json_pack("[s, s, s]", "alpha", "mid", "zeta");
    ck_assert(json_equal(all, want));
    json_decref(all);
    json_decref(want);
    upstream_pool_set_models(p, 1, NULL, 0);
    ck_assert(!upstream_pool_has_model(p, "mid"));
    upstream_pool_destroy(p);
    upstream_pool_destroy(NULL);
    ck_assert_ptr_null(upstream_pool_create(urls, UPSTREAM_MAX + 1, 0, 0));
}
END_TEST

/* The database snapshot feeds (endpoint, model) rows: URLs join with stable indexes and one
 * missing from the rows serves nothing until it comes back. */
START_TEST(test_sync)
{
    struct upstream_pool *p = upstream_pool_create(NULL, 0, 0, 0);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(upstream_pool_size(p), 0);
    struct upstream_lease lease;
    ck_assert_int_eq(upstream_pool_acquire(p, "m1", 0, &lease), -1);

    const char *urls[] = {"http://n1:13131/", "http://n2:13131", "http://n1:13131"};
    const char *models[] = {"m1", "m1", "m2"};
    ck_assert_int_eq(upstream_pool_sync(p, urls, models, 3), 0);
    ck_assert_uint_eq(upstream_pool_size(p), 2);
    ck_assert_str_eq(upstream_pool_url(p, 0), "http://n1:13131");
    ck_assert_str_eq(upstream_pool_url(p, 1), "http://n2:13131");
    ck_assert(upstream_pool_has_model(p, "m2"));
    ck_assert_int_eq(upstream_pool_acquire(p, "m2", 0, &lease), 0);
    ck_assert_int_eq(lease.index, 0);

    /* n1 leaves the rows while its lease is out: it keeps its index and its count. */
    const char *urls2[] = {"http://n2:13131", "http://n3:13131"};
    const char *models2[] = {"m1", "m2"};
    ck_assert_int_eq(upstream_pool_sync(p, urls2, models2, 2), 0);
    ck_assert_uint_eq(upstream_pool_size(p), 3);
    ck_assert_str_eq(upstream_pool_url(p, 2), "http://n3:13131");
    int64_t in_flight = 0;
    upstream_pool_state(p, 0, &in_flight, NULL, NULL);
    ck_assert_int_eq(in_flight, 1);
    struct upstream_lease l2;
    ck_assert_int_eq(upstream_pool_acquire(p, "m2", 0, &l2), 0);
    ck_assert_int_eq(l2.index, 2);
    upstream_pool_release(p, l2.index, UPSTREAM_OUTCOME_OK);
    upstream_pool_release(p, lease.index, UPSTREAM_OUTCOME_OK);
    ck_assert_int_eq(upstream_pool_acquire(p, "m1", 1u << 1, &l2), -1); /* only n2 has m1 */

    ck_assert_int_eq(upstream_pool_sync(p, NULL, NULL, 0), 0);
    ck_assert(!upstream_pool_has_model(p, "m1"));
    upstream_pool_destroy(p);
}
END_TEST

START_TEST(test_choice)
{
    const char *urls[] = {"http://a", "http://b", "http://c"};
    struct upstream_pool *p = upstream_pool_create(urls, 3, 0, 0);
    const char *m[] = {"m"};
    upstream_pool_set_models(p, 0, m, 1);
    upstream_pool_set_models(p, 1, m, 1);
    /* c serves another model only. */
    const char *other[] = {"other"};
    upstream_pool_set_models(p, 2, other, 1);

    struct upstream_lease l1, l2, l3;
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l1), 0);
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l2), 0);
    ck_assert_int_ne(l1.index, l2.index); /* the idle one is preferred */
    ck_assert_int_eq(l1.in_flight, 1);
    ck_assert_int_eq(l2.in_flight, 1);
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l3), 0);
    ck_assert_int_eq(l3.in_flight, 2);
    /* Ties go either way, but the next choice is the less busy one. */
    struct upstream_lease l4;
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l4), 0);
    ck_assert_int_ne(l4.index, l3.index);
    int64_t a_in = -1, b_in = -1;
    upstream_pool_state(p, 0, &a_in, NULL, NULL);
    upstream_pool_state(p, 1, &b_in, NULL, NULL);
    ck_assert_int_eq(a_in, 2);
    ck_assert_int_eq(b_in, 2);
    /* After l1 ends, its upstream has fewer outstanding requests than the other. */
    upstream_pool_release(p, l1.index, UPSTREAM_OUTCOME_OK);
    struct upstream_lease l6;
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l6), 0);
    ck_assert_int_eq(l6.index, l1.index);
    /* Exclusions and models. */
    struct upstream_lease l5;
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 1u << 0, &l5), 0);
    ck_assert_int_eq(l5.index, 1);
    ck_assert_str_eq(l5.url, "http://b");
    ck_assert_int_eq(upstream_pool_acquire(p, "m", (1u << 0) | (1u << 1), &l5), -1);
    ck_assert_int_eq(upstream_pool_acquire(p, "nope", 0, &l5), -1);
    ck_assert_int_eq(upstream_pool_acquire(p, "other", 0, &l5), 0);
    ck_assert_int_eq(l5.index, 2);
    upstream_pool_destroy(p);
}
END_TEST

START_TEST(test_ejection)
{
    const char *urls[] = {"http://a", "http://b"};
    struct upstream_pool *p = upstream_pool_create(urls, 2, 2, 150);
    const char *m[] = {"m"};
    upstream_pool_set_models(p, 0, m, 1);
    upstream_pool_set_models(p, 1, m, 1);
    struct upstream_lease l;
    bool ejected = true;
    int failures = -1;
    /* One failure, then a success: the record is cleared. */
    upstream_pool_release(p, 0, UPSTREAM_OUTCOME_FAILED);
    upstream_pool_release(p, 0, UPSTREAM_OUTCOME_OK);
    upstream_pool_state(p, 0, NULL, &failures, &ejected);
    ck_assert_int_eq(failures, 0);
    ck_assert(!ejected);
    /* Two consecutive failures eject; neutral outcomes change nothing. */
    upstream_pool_release(p, 0, UPSTREAM_OUTCOME_FAILED);
    upstream_pool_release(p, 0, UPSTREAM_OUTCOME_NEUTRAL);
    upstream_pool_state(p, 0, NULL, NULL, &ejected);
    ck_assert(!ejected);
    upstream_pool_release(p, 0, UPSTREAM_OUTCOME_FAILED);
    upstream_pool_state(p, 0, NULL, NULL, &ejected);
    ck_assert(ejected);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(upstream_pool_acquire(p, "m", 0, &l), 0);
        ck_assert_int_eq(l.index, 1);
        upstream_pool_release(p, l.index, UPSTREAM_OUTCOME_OK);
    }
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 1u << 1, &l), -1);
    /* The ejection is timed (150 ms): afterwards it is chosen again. */
    timing_sleep_ms(400);
    upstream_pool_state(p, 0, NULL, NULL, &ejected);
    ck_assert(!ejected);
    ck_assert_int_eq(upstream_pool_acquire(p, "m", 1u << 1, &l), 0);
    ck_assert_int_eq(l.index, 0);
    /* On probation: one more failure ejects it again at once. */
    upstream_pool_release(p, l.index, UPSTREAM_OUTCOME_FAILED);
    upstream_pool_state(p, 0, NULL, NULL, &ejected);
    ck_assert(ejected);
    upstream_pool_destroy(p);
}
END_TEST

static void models_route(http_request_t *req, void *ud)
{
    (void)ud;
    static const char body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"b\"},{\"id\":\"a\"},"
                               "{\"no_id\":1},{\"id\":7}]}";
    http_request_reply(req, 200, "application/json", body, sizeof body - 1);
}

START_TEST(test_refresh)
{
    static const http_route_t routes[] = {{"GET", "/v1/models", models_route}};
    http_server_config_t cfg = {.routes = routes, .n_routes = 1};
    http_server_t *server = test_util_server_start(&cfg);
    int port;
    int fd = test_util_refusing_port(&port);
    char live[64], dead[64];
    snprintf(live, sizeof live, "http://127.0.0.1:%u", http_server_port(server));
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", port);
    const char *urls[] = {live, dead};
    struct upstream_pool *p = upstream_pool_create(urls, 2, 0, 0);
    const char *old[] = {"kept"};
    upstream_pool_set_models(p, 1, old, 1);
    ck_assert_uint_eq(upstream_pool_refresh(p, 2000), 1);
    json_t *all = upstream_pool_models(p);
    json_t *want = json_pack("[s, s, s]", "a", "b", "kept");
    ck_assert(json_equal(all, want));
    json_decref(all);
    json_decref(want);
    upstream_pool_destroy(p);
    close(fd);
    http_server_destroy(server);
}
END_TEST

static Suite *upstream_suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_models);
    tcase_add_test(tc, test_sync);
    tcase_add_test(tc, test_choice);
    tcase_add_test(tc, test_ejection);
    tcase_add_test(tc, test_refresh);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_util_run_suite(upstream_suite());
}
