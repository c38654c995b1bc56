/*
 * neuron/models_api.c — GET /models, POST /models/load|unload, /v1/models, /healthz, /metrics
 * (see models_api.h).
 */
#include "models_api.h"

#include "buf.h"
#include "error.h"
#include "jsonutil.h"
#include "log.h"
#include "timing.h"

#include <stdlib.h>
#include <string.h>

static void models_api_error(http_request_t *req, const struct error *e)
{
    if (error_info(e->code)->retry_after)
        http_request_add_reply_header(req, "Retry-After", "1");
    json_t *body = error_body(ERROR_DIALECT_OPENAI, e, NULL);
    http_request_reply_json(req, error_http_status(e->code, ERROR_DIALECT_OPENAI), body);
    json_decref(body);
}

void models_api_list(http_request_t *req, struct models_api *api)
{
    const char *rescan = http_request_query_param(req, "rescan");
    if (rescan && strcmp(rescan, "0") != 0) {
        char err[512];
        if (registry_scan(api->registry, err, sizeof err) != 0)
            LOG_WARN("%s", err);
    }
    json_t *doc = registry_describe(api->registry);
    json_object_set_new(doc, "node", json_string(api->node));
    json_object_set_new(doc, "advertise", json_string(api->advertise));
    http_request_reply_json(req, 200, doc);
    json_decref(doc);
}

/* Parses {"model": ..., ...} for load and unload; returns the body (new reference) or NULL. */
static json_t *models_api_body(http_request_t *req, const char **model, struct error *err)
{
    size_t len;
    const char *text = http_request_body(req, &len);
    json_t *body = jsonutil_parse_object(text, len, err);
    if (!body)
        return NULL;
    if (jsonutil_get_string(body, NULL, "model", JSONUTIL_REQUIRED, model, err) < 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

void models_api_load(http_request_t *req, struct models_api *api)
{
    struct error err = ERROR_INIT;
    const char *model = NULL;
    int64_t placement_id = 0;
    json_t *body = models_api_body(req, &model, &err);
    if (!body)
        goto fail;
    if (jsonutil_get_int_range(body, NULL, "placement_id", JSONUTIL_OPTIONAL, 1, INT64_MAX,
                               &placement_id, &err) < 0)
        goto fail;
    if (registry_load(api->registry, model, json_object_get(body, "devices"), placement_id, &err) !=
        0)
        goto fail;
    json_t *doc = json_pack("{s:s, s:s}", "model", model, "state", "loading");
    http_request_reply_json(req, 202, doc);
    json_decref(doc);
    goto out;
fail:
    models_api_error(req, &err);
out:
    json_decref(body);
    error_clear(&err);
}

void models_api_unload(http_request_t *req, struct models_api *api)
{
    struct error err = ERROR_INIT;
    const char *model = NULL;
    json_t *body = models_api_body(req, &model, &err);
    if (!body || registry_unload(api->registry, model, &err) != 0) {
        models_api_error(req, &err);
        goto out;
    }
    json_t *doc = json_pack("{s:s, s:s}", "model", model, "state", "unloading");
    http_request_reply_json(req, 202, doc);
    json_decref(doc);
out:
    json_decref(body);
    error_clear(&err);
}

static void models_api_collect_ready(void *ud, const struct registry_model_info *info)
{
    json_t *data = ud;
    if (info->state == REGISTRY_STATE_READY)
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", info->name, "object",
                                              "model", "created", (json_int_t)timing_wall_s(),
                                              "owned_by", "cortex"));
}

void models_api_openai_list(http_request_t *req, struct models_api *api)
{
    json_t *data = json_array();
    registry_foreach(api->registry, models_api_collect_ready, data);
    json_t *doc = json_pack("{s:s, s:o}", "object", "list", "data", data);
    http_request_reply_json(req, 200, doc);
    json_decref(doc);
}

void models_api_healthz(http_request_t *req, struct models_api *api)
{
    struct registry_totals t;
    registry_get_totals(api->registry, &t);
    json_t *doc =
            json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "status", "ok", "node", api->node,
                      "models_ready", t.models_ready, "models_loading", t.models_loading,
                      "active_sequences", t.active_sequences, "queued_requests", t.queued_requests);
    http_request_reply_json(req, 200, doc);
    json_decref(doc);
}

void models_api_metrics(http_request_t *req, struct models_api *api)
{
    struct buf b = BUF_INIT;
    metrics_render(api->metrics, api->registry, &b);
    http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
                       b.len);
    buf_free(&b);
}
