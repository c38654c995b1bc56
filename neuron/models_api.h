/*
 * neuron/models_api.h — the neuron's management endpoints: GET /models, POST /models/load,
 * POST /models/unload, GET /v1/models, GET /healthz and GET /metrics.
 *
 * Contract: every handler answers at once on the HTTP thread (loads and unloads run in the
 * registry's lifecycle threads; 202 means "started"). Errors use the OpenAI error form
 * (common/error.h): 400 bad body, 404 unknown model, 409 memory budget or state conflict.
 * The struct is borrowed by the handlers; registry and metrics must outlive the HTTP server.
 */
#ifndef CORTEX_NEURON_MODELS_API_H
#define CORTEX_NEURON_MODELS_API_H

#include "http_request.h"
#include "metrics.h"
#include "registry.h"

struct models_api {
    struct registry *registry;
    struct metrics *metrics;
    const char *node;      /* this node's name */
    const char *advertise; /* its advertised URL */
};

void models_api_list(http_request_t *req, struct models_api *api);
void models_api_load(http_request_t *req, struct models_api *api);
void models_api_unload(http_request_t *req, struct models_api *api);
/* OpenAI's model list, limited to the models ready on this node. */
void models_api_openai_list(http_request_t *req, struct models_api *api);
void models_api_healthz(http_request_t *req, struct models_api *api);
void models_api_metrics(http_request_t *req, struct models_api *api);

#endif
