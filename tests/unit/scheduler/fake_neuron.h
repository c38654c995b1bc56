/*
 * tests/unit/scheduler/fake_neuron.h — a scripted stand-in for a neuron's model API, on
 * 127.0.0.1, for the dispatcher and runner tests.
 *
 * Header-only (static inline). It answers POST /models/load, POST /models/unload and
 * GET /models with the statuses and bodies a test sets, counts the requests (guarded by mu,
 * changes broadcast on cond so tests wait with test_util_wait_count) and keeps the bodies it
 * received. fail_first makes the first N load requests answer 500. With hold set, load requests
 * are deferred until fake_neuron_release(). Everything it sends is JSON.
 */
#ifndef CORTEX_FAKE_NEURON_H
#define CORTEX_FAKE_NEURON_H

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/test_util.h"
#include "http_request.h"
#include "http_server.h"

#define FAKE_NEURON_MAX_BODIES 32

struct fake_neuron {
    http_server_t *server;
    char endpoint[64];
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int loads, unloads, probes, requests;
    char bodies[FAKE_NEURON_MAX_BODIES][256]; /* load and unload bodies, in arrival order */
    int load_status, unload_status;
    const char *load_answer; /* body of a non-2xx load answer */
    int fail_first;
    const char *models_answer; /* GET /models body */
    bool hold;
    http_request_t *held[8];
    int n_held;
};

static inline void fake_neuron_note(struct fake_neuron *n, http_request_t *req, int *counter)
{
    size_t len = 0;
    const char *body = http_request_body(req, &len);
    if (n->loads + n->unloads < FAKE_NEURON_MAX_BODIES)
        snprintf(n->bodies[n->loads + n->unloads], sizeof n->bodies[0], "%.*s", (int)len,
                 body ? body : "");
    (*counter)++;
    n->requests++;
}

static inline void fake_neuron_load(http_request_t *req, void *ud)
{
    struct fake_neuron *n = ud;
    pthread_mutex_lock(&n->mu);
    fake_neuron_note(n, req, &n->loads);
    int status = n->loads <= n->fail_first ? 500 : n->load_status;
    const char *answer = status >= 200 && status < 300 ? "{\"status\":\"loading\"}"
                         : n->load_answer              ? n->load_answer
                                                       : "{\"error\":{\"message\":\"scripted\"}}";
    bool hold = n->hold && n->n_held < 8;
    if (hold) {
        http_request_defer(req, NULL, NULL);
        n->held[n->n_held++] = req;
    }
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mu);
    if (!hold)
        http_request_reply(req, status, "application/json", answer, strlen(answer));
}

static inline void fake_neuron_unload(http_request_t *req, void *ud)
{
    struct fake_neuron *n = ud;
    pthread_mutex_lock(&n->mu);
    fake_neuron_note(n, req, &n->unloads);
    int status = n->unload_status;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mu);
    const char *answer = status == 404 ? "{\"error\":{\"message\":\"model not loaded\"}}"
                                       : "{\"status\":\"unloading\"}";
    http_request_reply(req, status, "application/json", answer, strlen(answer));
}

static inline void fake_neuron_models(http_request_t *req, void *ud)
{
    struct fake_neuron *n = ud;
    pthread_mutex_lock(&n->mu);
    n->probes++;
    n->requests++;
    const char *answer = n->models_answer ? n->models_answer : "{\"loaded\":[]}";
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->mu);
    http_request_reply(req, 200, "application/json", answer, strlen(answer));
}

static inline void fake_neuron_start(struct fake_neuron *n)
{
    memset(n, 0, sizeof *n);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cond, NULL);
    n->load_status = 202;
    n->unload_status = 202;
    static const http_route_t routes[] = {{"POST", "/models/load", fake_neuron_load},
                                          {"POST", "/models/unload", fake_neuron_unload},
                                          {"GET", "/models", fake_neuron_models}};
    http_server_config_t cfg = {.routes = routes, .n_routes = 3, .ud = n};
    n->server = test_util_server_start(&cfg);
    snprintf(n->endpoint, sizeof n->endpoint, "http://127.0.0.1:%u",
             (unsigned)http_server_port(n->server));
}

/* Answers the held load requests with load_status. */
static inline void fake_neuron_release(struct fake_neuron *n)
{
    pthread_mutex_lock(&n->mu);
    int count = n->n_held;
    http_request_t *held[8];
    memcpy(held, n->held, sizeof held);
    n->n_held = 0;
    n->hold = false;
    int status = n->load_status;
    pthread_mutex_unlock(&n->mu);
    for (int i = 0; i < count; i++)
        http_request_reply(held[i], status, "application/json", "{}", 2);
}

static inline int fake_neuron_count(struct fake_neuron *n, const int *counter)
{
    pthread_mutex_lock(&n->mu);
    int v = *counter;
    pthread_mutex_unlock(&n->mu);
    return v;
}

static inline void fake_neuron_stop(struct fake_neuron *n)
{
    fake_neuron_release(n);
    http_server_destroy(n->server);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->mu);
}

#endif
