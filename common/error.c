/*
 * common/error.c — the error-code table and error bodies (see error.h).
 *
 * The OpenAI "type" strings name the class of failure; the "code" strings are the ones the
 * OpenAI API itself uses (invalid_api_key, model_not_found, context_length_exceeded,
 * rate_limit_exceeded). SDKs pick their exception class from the HTTP status alone, so the
 * status column is what matters most to clients. Anthropic types are exactly those of its API.
 */
#include "error.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

/* clang-format off */
static const struct error_info error_table[ERR_CODE_COUNT] = {
    /* code, name, http, openai type, openai code, anthropic status, anthropic type, retry, message */
    [ERR_NONE] = {ERR_NONE, "none", 200, NULL, NULL, 200, NULL, false, "ok"},
    [ERR_INVALID_REQUEST] = {ERR_INVALID_REQUEST, "invalid_request", 400,
        "invalid_request_error", NULL, 400, "invalid_request_error", false,
        "The request is not valid."},
    [ERR_INVALID_JSON] = {ERR_INVALID_JSON, "invalid_json", 400,
        "invalid_request_error", NULL, 400, "invalid_request_error", false,
        "The request body is not valid JSON."},
    [ERR_UNSUPPORTED] = {ERR_UNSUPPORTED, "unsupported", 400,
        "invalid_request_error", "unsupported_parameter", 400, "invalid_request_error", false,
        "This parameter value is not supported."},
    [ERR_PROMPT_TOO_LONG] = {ERR_PROMPT_TOO_LONG, "prompt_too_long", 400,
        "invalid_request_error", "context_length_exceeded", 400, "invalid_request_error", false,
        "prompt is too long"},
    [ERR_UNAUTHORIZED] = {ERR_UNAUTHORIZED, "unauthorized", 401,
        "authentication_error", "invalid_api_key", 401, "authentication_error", false,
        "Invalid or missing API key."},
    [ERR_PERMISSION] = {ERR_PERMISSION, "permission_denied", 403,
        "permission_error", NULL, 403, "permission_error", false,
        "This API key is not allowed to make this request."},
    [ERR_NOT_FOUND] = {ERR_NOT_FOUND, "not_found", 404,
        "not_found_error", NULL, 404, "not_found_error", false,
        "Not found."},
    [ERR_MODEL_NOT_FOUND] = {ERR_MODEL_NOT_FOUND, "model_not_found", 404,
        "not_found_error", "model_not_found", 404, "not_found_error", false,
        "The model does not exist."},
    [ERR_METHOD_NOT_ALLOWED] = {ERR_METHOD_NOT_ALLOWED, "method_not_allowed", 405,
        "invalid_request_error", NULL, 405, "invalid_request_error", false,
        "Method not allowed."},
    [ERR_CONFLICT] = {ERR_CONFLICT, "conflict", 409,
        "invalid_request_error", "conflict", 409, "invalid_request_error", false,
        "The request conflicts with the current state."},
    [ERR_BODY_TOO_LARGE] = {ERR_BODY_TOO_LARGE, "body_too_large", 413,
        "invalid_request_error", "request_too_large", 413, "request_too_large", false,
        "The request body is too large."},
    [ERR_RATE_LIMITED] = {ERR_RATE_LIMITED, "rate_limited", 429,
        "rate_limit_error", "rate_limit_exceeded", 429, "rate_limit_error", true,
        "Rate limit exceeded; retry later."},
    [ERR_INTERNAL] = {ERR_INTERNAL, "internal", 500,
        "server_error", NULL, 500, "api_error", false,
        "Internal server error."},
    [ERR_UPSTREAM] = {ERR_UPSTREAM, "upstream", 502,
        "server_error", NULL, 502, "api_error", false,
        "The model server failed to answer."},
    [ERR_UNAVAILABLE] = {ERR_UNAVAILABLE, "unavailable", 503,
        "server_error", "service_unavailable", 503, "api_error", true,
        "The service is temporarily unavailable; retry later."},
    [ERR_MODEL_LOADING] = {ERR_MODEL_LOADING, "model_loading", 503,
        "server_error", "model_loading", 529, "overloaded_error", true,
        "The model is loading; retry shortly."},
    [ERR_OVERLOADED] = {ERR_OVERLOADED, "overloaded", 503,
        "server_error", "overloaded", 529, "overloaded_error", true,
        "The server is overloaded; retry shortly."},
    [ERR_TIMEOUT] = {ERR_TIMEOUT, "timeout", 504,
        "server_error", "timeout", 504, "timeout_error", false,
        "The request timed out."},
};
/* clang-format on */

const struct error_info *error_info(enum err_code code)
{
    if ((int)code < 0 || code >= ERR_CODE_COUNT)
        code = ERR_INTERNAL;
    return &error_table[code];
}

const char *error_code_name(enum err_code code)
{
    return error_info(code)->name;
}

int error_code_parse(const char *name, enum err_code *out)
{
    for (int i = 0; i < ERR_CODE_COUNT; i++) {
        if (strcmp(name, error_table[i].name) == 0) {
            *out = (enum err_code)i;
            return 0;
        }
    }
    return -1;
}

int error_http_status(enum err_code code, enum error_dialect dialect)
{
    const struct error_info *info = error_info(code);
    return dialect == ERROR_DIALECT_ANTHROPIC ? info->anthropic_status : info->http_status;
}

void error_set(struct error *e, enum err_code code, const char *param, const char *fmt, ...)
{
    if (!e)
        return;
    char *message = NULL;
    if (fmt) {
        struct buf b = BUF_INIT;
        va_list ap;
        va_start(ap, fmt);
        buf_vappendf(&b, fmt, ap);
        va_end(ap);
        message = buf_steal(&b, NULL);
    }
    /* Build the new strings before freeing the old: param may point into e->param. */
    char *new_param = param ? xstrdup(param) : NULL;
    error_clear(e);
    e->code = code;
    e->message = message;
    e->param = new_param;
}

void error_clear(struct error *e)
{
    if (!e)
        return;
    free(e->message);
    free(e->param);
    e->code = ERR_NONE;
    e->message = NULL;
    e->param = NULL;
}

const char *error_message(const struct error *e)
{
    return e->message ? e->message : error_info(e->code)->message;
}

/* A JSON string for text that may hold invalid UTF-8 (it can echo client input). */
static json_t *error_json_string(const char *text)
{
    json_t *s = json_string(text);
    if (s)
        return s;
    struct buf b = BUF_INIT;
    buf_append_utf8(&b, text, strlen(text));
    s = json_stringn(buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

json_t *error_body_openai(enum err_code code, const char *message, const char *param)
{
    const struct error_info *info = error_info(code);
    json_t *err = json_object();
    json_object_set_new(err, "message", error_json_string(message ? message : info->message));
    json_object_set_new(err, "type", json_string(info->openai_type ? info->openai_type : ""));
    json_object_set_new(err, "param", param ? error_json_string(param) : json_null());
    json_object_set_new(err, "code",
                        info->openai_code ? json_string(info->openai_code) : json_null());
    json_t *body = json_object();
    json_object_set_new(body, "error", err);
    return body;
}

json_t *error_body_anthropic(enum err_code code, const char *message, const char *request_id)
{
    const struct error_info *info = error_info(code);
    json_t *err = json_object();
    json_object_set_new(err, "type", json_string(info->anthropic_type ? info->anthropic_type : ""));
    json_object_set_new(err, "message", error_json_string(message ? message : info->message));
    json_t *body = json_object();
    json_object_set_new(body, "type", json_string("error"));
    json_object_set_new(body, "error", err);
    if (request_id)
        json_object_set_new(body, "request_id", error_json_string(request_id));
    return body;
}

json_t *error_body(enum error_dialect dialect, const struct error *e, const char *request_id)
{
    if (dialect == ERROR_DIALECT_ANTHROPIC)
        return error_body_anthropic(e->code, e->message, request_id);
    return error_body_openai(e->code, e->message, e->param);
}
