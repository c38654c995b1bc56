/*
 * gateway/openai.c — OpenAI-dialect requests checked and normalised for the neurons, and
 * neurons' error answers mapped back to error codes (see openai.h).
 */
#include "openai.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "xalloc.h"

/* Room for a member path such as "messages[123].tool_calls[45].function". */
#define OPENAI_PATH_SIZE 128

/* Formats a member path for error messages into out (OPENAI_PATH_SIZE bytes); a path too long
 * is cut, which only shortens a message. */
static void openai_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void openai_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, OPENAI_PATH_SIZE, fmt, ap);
    va_end(ap);
}
/* More stop strings than this is a mistake, not a use. */
#define OPENAI_MAX_STOP 16

/* Sets err for a member that must be one of a list; returns -1. */
static int openai_bad_value(const char *path, const char *allowed, struct error *err)
{
    error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be %s", path, allowed);
    return -1;
}

/* Appends text to b after a blank line (when b is not empty); empty text adds nothing. */
static void openai_join(struct buf *b, const char *text, size_t len)
{
    if (len == 0)
        return;
    if (b->len > 0)
        buf_append_str(b, "\n\n");
    buf_append(b, text, len);
}

/* Appends the text of content (a string, or an array of text parts) to b, joining parts with
 * nothing (they are pieces of one text). */
static int openai_text_content(const json_t *content, const char *path, struct buf *b,
                               struct error *err)
{
    if (json_is_string(content)) {
        buf_append(b, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (!json_is_array(content))
        return openai_bad_value(path, "a string or an array of text parts", err);
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part)
    {
        char ppath[OPENAI_PATH_SIZE];
        openai_path(ppath, "%s[%zu]", path, i);
        const char *type, *text;
        if (!json_is_object(part))
            return openai_bad_value(ppath, "an object", err);
        if (jsonutil_get_string(part, ppath, "type", JSONUTIL_REQUIRED, &type, err) < 0)
            return -1;
        if (strcmp(type, "text") != 0) {
            error_set(err, ERR_UNSUPPORTED, ppath, "'%s': only text parts are allowed here", ppath);
            return -1;
        }
        if (jsonutil_get_string(part, ppath, "text", JSONUTIL_REQUIRED, &text, err) < 0)
            return -1;
        buf_append_str(b, text);
    }
    return 0;
}

/* A checked copy of a user message's content: a string, or parts (text, image_url). */
static json_t *openai_user_content(const json_t *content, const char *path, struct error *err)
{
    if (json_is_string(content))
        return json_deep_copy(content);
    if (!json_is_array(content)) {
        openai_bad_value(path, "a string or an array of content parts", err);
        return NULL;
    }
    json_t *parts = json_array();
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part)
    {
        char ppath[OPENAI_PATH_SIZE];
        openai_path(ppath, "%s[%zu]", path, i);
        const char *type, *text;
        if (!json_is_object(part)) {
            openai_bad_value(ppath, "an object", err);
            goto fail;
        }
        if (jsonutil_get_string(part, ppath, "type", JSONUTIL_REQUIRED, &type, err) < 0)
            goto fail;
        if (strcmp(type, "text") == 0) {
            if (jsonutil_get_string(part, ppath, "text", JSONUTIL_REQUIRED, &text, err) < 0)
                goto fail;
            json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", text));
        } else if (strcmp(type, "image_url") == 0) {
            const json_t *image = json_object_get(part, "image_url");
            const char *url = NULL;
            char ipath[OPENAI_PATH_SIZE];
            openai_path(ipath, "%s.image_url", ppath);
            if (json_is_string(image))
                url = json_string_value(image);
            else if (json_is_object(image)) {
                if (jsonutil_get_string(image, ipath, "url", JSONUTIL_REQUIRED, &url, err) < 0)
                    goto fail;
            } else {
                openai_bad_value(ipath, "an object with a url", err);
                goto fail;
            }
            json_t *obj = json_pack("{s:s}", "url", url);
            const json_t *detail = json_is_object(image) ? json_object_get(image, "detail") : NULL;
            if (json_is_string(detail))
                json_object_set_new(obj, "detail", json_deep_copy(detail));
            json_array_append_new(parts,
                                  json_pack("{s:s, s:o}", "type", "image_url", "image_url", obj));
        } else {
            error_set(err, ERR_UNSUPPORTED, ppath,
                      "'%s': content parts of type '%s' are not "
                      "supported",
                      ppath, type);
            goto fail;
        }
    }
    return parts;
fail:
    json_decref(parts);
    return NULL;
}

/* A checked copy of an assistant message's tool_calls. */
static json_t *openai_tool_calls(const json_t *calls, const char *path, struct error *err)
{
    json_t *out = json_array();
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call)
    {
        char cpath[OPENAI_PATH_SIZE], fpath[OPENAI_PATH_SIZE];
        openai_path(cpath, "%s.tool_calls[%zu]", path, i);
        openai_path(fpath, "%s.function", cpath);
        const char *id = NULL, *type = NULL, *name;
        json_t *function;
        if (!json_is_object(call)) {
            openai_bad_value(cpath, "an object", err);
            goto fail;
        }
        if (jsonutil_get_string(call, cpath, "id", JSONUTIL_OPTIONAL, &id, err) < 0 ||
            jsonutil_get_string(call, cpath, "type", JSONUTIL_OPTIONAL, &type, err) < 0 ||
            jsonutil_get_object(call, cpath, "function", JSONUTIL_REQUIRED, &function, err) < 0 ||
            jsonutil_get_string(function, fpath, "name", JSONUTIL_REQUIRED, &name, err) < 0)
            goto fail;
        if (type && strcmp(type, "function") != 0) {
            char tpath[OPENAI_PATH_SIZE];
            openai_path(tpath, "%s.type", cpath);
            openai_bad_value(tpath, "\"function\"", err);
            goto fail;
        }
        const json_t *args = json_object_get(function, "arguments");
        json_t *arguments;
        if (json_is_string(args)) {
            arguments = json_deep_copy(args);
        } else if (json_is_object(args)) {
            char *text = jsonutil_dumps(args);
            arguments = json_string(text);
            free(text);
        } else if (!args || json_is_null(args)) {
            arguments = json_string("{}");
        } else {
            char apath[OPENAI_PATH_SIZE];
            openai_path(apath, "%s.arguments", fpath);
            openai_bad_value(apath, "a string of JSON", err);
            goto fail;
        }
        json_t *c = json_object();
        if (id)
            json_object_set_new(c, "id", json_string(id));
        json_object_set_new(c, "type", json_string("function"));
        json_object_set_new(c, "function",
                            json_pack("{s:s, s:o}", "name", name, "arguments", arguments));
        json_array_append_new(out, c);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* One non-system message, checked and copied with only the members templates read. */
static json_t *openai_message(const json_t *msg, const char *role, const char *path,
                              struct error *err)
{
    json_t *out = json_pack("{s:s}", "role", role);
    const json_t *content = json_object_get(msg, "content");
    char cpath[OPENAI_PATH_SIZE];
    openai_path(cpath, "%s.content", path);
    const char *name = NULL;
    if (jsonutil_get_string(msg, path, "name", JSONUTIL_OPTIONAL, &name, err) < 0)
        goto fail;
    if (strcmp(role, "user") == 0) {
        json_t *c = content ? openai_user_content(content, cpath, err) : NULL;
        if (!c) {
            if (!content)
                error_set(err, ERR_INVALID_REQUEST, cpath, "'%s' is required", cpath);
            goto fail;
        }
        json_object_set_new(out, "content", c);
    } else if (strcmp(role, "assistant") == 0) {
        json_t *calls = NULL;
        const char *reasoning = NULL;
        if (!content || json_is_null(content)) {
            json_object_set_new(out, "content", json_null());
        } else {
            struct buf text = BUF_INIT;
            /* Parts may also be {"type":"refusal"}: only the text parts carry content. */
            if (json_is_array(content)) {
                size_t i;
                const json_t *part;
                json_array_foreach(content, i, part)
                {
                    const json_t *t = json_object_get(part, "text");
                    if (json_is_string(t))
                        buf_append(&text, json_string_value(t), json_string_length(t));
                }
            } else if (!json_is_string(content)) {
                openai_bad_value(cpath, "a string, an array of parts or null", err);
                goto fail;
            } else {
                buf_append(&text, json_string_value(content), json_string_length(content));
            }
            json_object_set_new(out, "content", json_stringn(buf_cstr(&text), text.len));
            buf_free(&text);
        }
        if (jsonutil_get_array(msg, path, "tool_calls", JSONUTIL_OPTIONAL, &calls, err) < 0 ||
            jsonutil_get_string(msg, path, "reasoning_content", JSONUTIL_OPTIONAL, &reasoning,
                                err) < 0)
            goto fail;
        if (reasoning)
            json_object_set_new(out, "reasoning_content", json_string(reasoning));
        if (calls && json_array_size(calls) > 0) {
            json_t *c = openai_tool_calls(calls, path, err);
            if (!c)
                goto fail;
            json_object_set_new(out, "tool_calls", c);
        }
    } else { /* tool */
        const char *id;
        struct buf text = BUF_INIT;
        if (jsonutil_get_string(msg, path, "tool_call_id", JSONUTIL_REQUIRED, &id, err) < 0)
            goto fail;
        if (content && !json_is_null(content) &&
            openai_text_content(content, cpath, &text, err) < 0) {
            buf_free(&text);
            goto fail;
        }
        json_object_set_new(out, "tool_call_id", json_string(id));
        json_object_set_new(out, "content", json_stringn(buf_cstr(&text), text.len));
        buf_free(&text);
    }
    if (name)
        json_object_set_new(out, "name", json_string(name));
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* The messages with one leading system message; NULL with err set. */
static json_t *openai_messages(const json_t *messages, struct error *err)
{
    if (json_array_size(messages) == 0) {
        error_set(err, ERR_INVALID_REQUEST, "messages",
                  "'messages' must hold at least one message");
        return NULL;
    }
    json_t *rest = json_array();
    struct buf system = BUF_INIT, text = BUF_INIT;
    size_t i;
    const json_t *msg;
    json_array_foreach(messages, i, msg)
    {
        char path[OPENAI_PATH_SIZE], cpath[OPENAI_PATH_SIZE];
        openai_path(path, "messages[%zu]", i);
        openai_path(cpath, "%s.content", path);
        const char *role;
        if (!json_is_object(msg)) {
            openai_bad_value(path, "an object", err);
            goto fail;
        }
        if (jsonutil_get_string(msg, path, "role", JSONUTIL_REQUIRED, &role, err) < 0)
            goto fail;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            buf_reset(&text);
            const json_t *content = json_object_get(msg, "content");
            if (!content) {
                error_set(err, ERR_INVALID_REQUEST, cpath, "'%s' is required", cpath);
                goto fail;
            }
            if (openai_text_content(content, cpath, &text, err) < 0)
                goto fail;
            openai_join(&system, buf_cstr(&text), text.len);
        } else if (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0 ||
                   strcmp(role, "tool") == 0) {
            json_t *m = openai_message(msg, role, path, err);
            if (!m)
                goto fail;
            json_array_append_new(rest, m);
        } else {
            char rpath[OPENAI_PATH_SIZE];
            openai_path(rpath, "%s.role", path);
            openai_bad_value(rpath,
                             "one of \"system\", \"developer\", \"user\", \"assistant\", \"tool\"",
                             err);
            goto fail;
        }
    }
    json_t *out = json_array();
    if (system.len > 0)
        json_array_append_new(out, json_pack("{s:s, s:s%}", "role", "system", "content",
                                             buf_cstr(&system), system.len));
    json_array_extend(out, rest);
    json_decref(rest);
    buf_free(&system);
    buf_free(&text);
    return out;
fail:
    json_decref(rest);
    buf_free(&system);
    buf_free(&text);
    return NULL;
}

/* A checked copy of tools[] (function tools). */
static json_t *openai_tools(const json_t *tools, struct error *err)
{
    json_t *out = json_array();
    size_t i;
    const json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        char path[OPENAI_PATH_SIZE], fpath[OPENAI_PATH_SIZE];
        openai_path(path, "tools[%zu]", i);
        openai_path(fpath, "%s.function", path);
        const char *type, *name, *description = NULL;
        json_t *function, *parameters = NULL;
        bool strict = false;
        int has_strict;
        if (!json_is_object(tool)) {
            openai_bad_value(path, "an object", err);
            goto fail;
        }
        if (jsonutil_get_string(tool, path, "type", JSONUTIL_REQUIRED, &type, err) < 0)
            goto fail;
        if (strcmp(type, "function") != 0) {
            error_set(err, ERR_UNSUPPORTED, path,
                      "'%s.type': only \"function\" tools are "
                      "supported",
                      path);
            goto fail;
        }
        if (jsonutil_get_object(tool, path, "function", JSONUTIL_REQUIRED, &function, err) < 0 ||
            jsonutil_get_string(function, fpath, "name", JSONUTIL_REQUIRED, &name, err) < 0 ||
            jsonutil_get_string(function, fpath, "description", JSONUTIL_OPTIONAL, &description,
                                err) < 0 ||
            jsonutil_get_object(function, fpath, "parameters", JSONUTIL_OPTIONAL, &parameters,
                                err) < 0 ||
            (has_strict = jsonutil_get_bool(function, fpath, "strict", JSONUTIL_OPTIONAL, &strict,
                                            err)) < 0)
            goto fail;
        json_t *f = json_pack("{s:s}", "name", name);
        if (description)
            json_object_set_new(f, "description", json_string(description));
        if (parameters)
            json_object_set_new(f, "parameters", json_deep_copy(parameters));
        if (has_strict > 0)
            json_object_set_new(f, "strict", json_boolean(strict));
        json_array_append_new(out, json_pack("{s:s, s:o}", "type", "function", "function", f));
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static int openai_tool_choice(const json_t *choice, json_t *out, struct error *err)
{
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        if (strcmp(c, "none") != 0 && strcmp(c, "auto") != 0 && strcmp(c, "required") != 0)
            return openai_bad_value("tool_choice",
                                    "\"none\", \"auto\", \"required\" or a function choice", err);
        json_object_set_new(out, "tool_choice", json_string(c));
        return 0;
    }
    const char *type, *name;
    json_t *function;
    if (!json_is_object(choice))
        return openai_bad_value("tool_choice",
                                "\"none\", \"auto\", \"required\" or a function choice", err);
    if (jsonutil_get_string(choice, "tool_choice", "type", JSONUTIL_REQUIRED, &type, err) < 0)
        return -1;
    if (strcmp(type, "function") != 0)
        return openai_bad_value("tool_choice.type", "\"function\"", err);
    if (jsonutil_get_object(choice, "tool_choice", "function", JSONUTIL_REQUIRED, &function, err) <
                0 ||
        jsonutil_get_string(function, "tool_choice.function", "name", JSONUTIL_REQUIRED, &name,
                            err) < 0)
        return -1;
    json_object_set_new(out, "tool_choice",
                        json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name));
    return 0;
}

static int openai_response_format(const json_t *format, json_t *out, struct error *err)
{
    const char *type;
    json_t *schema;
    if (jsonutil_get_string(format, "response_format", "type", JSONUTIL_REQUIRED, &type, err) < 0)
        return -1;
    if (strcmp(type, "text") == 0 || strcmp(type, "json_object") == 0) {
        json_object_set_new(out, "response_format", json_pack("{s:s}", "type", type));
        return 0;
    }
    if (strcmp(type, "json_schema") != 0)
        return openai_bad_value("response_format.type",
                                "one of \"text\", \"json_object\", \"json_schema\"", err);
    if (jsonutil_get_object(format, "response_format", "json_schema", JSONUTIL_REQUIRED, &schema,
                            err) < 0)
        return -1;
    const char *name;
    json_t *inner = NULL;
    if (jsonutil_get_string(schema, "response_format.json_schema", "name", JSONUTIL_REQUIRED, &name,
                            err) < 0 ||
        jsonutil_get_object(schema, "response_format.json_schema", "schema", JSONUTIL_OPTIONAL,
                            &inner, err) < 0)
        return -1;
    json_object_set_new(
            out, "response_format",
            json_pack("{s:s, s:o}", "type", "json_schema", "json_schema", json_deep_copy(schema)));
    return 0;
}

/* Where a numeric member goes and its bounds. */
struct openai_number {
    const char *key;
    bool integer;
    double min, max;
};

/* Copies the numeric members of the table that req holds, checked. */
static int openai_numbers(const json_t *req, const struct openai_number *table, size_t n,
                          json_t *out, struct error *err)
{
    for (size_t i = 0; i < n; i++) {
        const struct openai_number *m = &table[i];
        int rc;
        if (m->integer) {
            int64_t v;
            rc = jsonutil_get_int_range(req, NULL, m->key, JSONUTIL_OPTIONAL, (int64_t)m->min,
                                        (int64_t)m->max, &v, err);
            if (rc > 0)
                json_object_set_new(out, m->key, json_integer(v));
        } else {
            double v;
            rc = jsonutil_get_number_range(req, NULL, m->key, JSONUTIL_OPTIONAL, m->min, m->max, &v,
                                           err);
            if (rc > 0)
                json_object_set_new(out, m->key, json_real(v));
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Sampling members shared by chat and completions. */
static const struct openai_number openai_sampling[] = {
        {"temperature", false, 0.0, 2.0},
        {"top_p", false, 0.0, 1.0},
        {"presence_penalty", false, -2.0, 2.0},
        {"frequency_penalty", false, -2.0, 2.0},
        {"seed", true, -9007199254740991.0, 9007199254740991.0},
        /* engine extras */
        {"top_k", true, -1, 2147483647.0},
        {"min_p", false, 0.0, 1.0},
        {"repetition_penalty", false, 0.0, 10.0},
};

/* max_tokens (from max_completion_tokens when given), lowered to the cap. */
static int openai_max_tokens(const json_t *req, const struct openai_options *opt, int64_t def,
                             json_t *out, struct error *err)
{
    int64_t v = def;
    int rc = jsonutil_get_int_range(req, NULL, "max_completion_tokens", JSONUTIL_OPTIONAL, 1,
                                    INT64_MAX, &v, err);
    if (rc == 0)
        rc = jsonutil_get_int_range(req, NULL, "max_tokens", JSONUTIL_OPTIONAL, 1, INT64_MAX, &v,
                                    err);
    if (rc < 0)
        return -1;
    if (v <= 0)
        return 0;
    if (opt->max_tokens_cap > 0 && v > opt->max_tokens_cap)
        v = opt->max_tokens_cap;
    json_object_set_new(out, "max_tokens", json_integer(v));
    return 0;
}

/* stop as an array of strings. */
static int openai_stop(const json_t *req, json_t *out, struct error *err)
{
    const json_t *stop = json_object_get(req, "stop");
    if (!stop || json_is_null(stop))
        return 0;
    if (json_is_string(stop)) {
        json_object_set_new(out, "stop", json_pack("[s]", json_string_value(stop)));
        return 0;
    }
    if (!json_is_array(stop) || json_array_size(stop) > OPENAI_MAX_STOP)
        return openai_bad_value("stop", "a string or an array of at most 16 strings", err);
    size_t i;
    const json_t *s;
    json_array_foreach(stop, i, s)
    {
        if (!json_is_string(s))
            return openai_bad_value("stop", "a string or an array of at most 16 strings", err);
    }
    if (json_array_size(stop) > 0)
        json_object_set_new(out, "stop", json_deep_copy(stop));
    return 0;
}

/* n, stream and stream_options. */
static int openai_n_and_stream(const json_t *req, json_t *out, struct error *err)
{
    int64_t n = 1;
    bool stream = false, include_usage = false;
    json_t *options = NULL;
    if (jsonutil_get_int(req, NULL, "n", JSONUTIL_OPTIONAL, &n, err) < 0)
        return -1;
    if (n != 1) {
        error_set(err, ERR_UNSUPPORTED, "n", "'n' must be 1: one choice per request is served");
        return -1;
    }
    if (jsonutil_get_bool(req, NULL, "stream", JSONUTIL_OPTIONAL, &stream, err) < 0 ||
        jsonutil_get_object(req, NULL, "stream_options", JSONUTIL_OPTIONAL, &options, err) < 0 ||
        (options && jsonutil_get_bool(options, "stream_options", "include_usage", JSONUTIL_OPTIONAL,
                                      &include_usage, err) < 0))
        return -1;
    if (stream) {
        json_object_set_new(out, "stream", json_true());
        if (include_usage)
            json_object_set_new(out, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return 0;
}

int openai_chat_request_normalize(const json_t *req, const struct openai_options *opt, json_t **out,
                                  struct error *err)
{
    static const struct openai_options defaults = {0};
    if (!opt)
        opt = &defaults;
    *out = NULL;
    json_t *res = json_object();
    const char *model;
    json_t *messages, *tools = NULL, *format = NULL;
    bool b;
    int rc;
    if (!json_is_object(req)) {
        error_set(err, ERR_INVALID_REQUEST, NULL, "the request body must be a JSON object");
        goto fail;
    }
    if (jsonutil_get_string(req, NULL, "model", JSONUTIL_REQUIRED, &model, err) < 0 ||
        jsonutil_get_array(req, NULL, "messages", JSONUTIL_REQUIRED, &messages, err) < 0)
        goto fail;
    json_object_set_new(res, "model", json_string(model));
    json_t *m = openai_messages(messages, err);
    if (!m)
        goto fail;
    json_object_set_new(res, "messages", m);

    if (jsonutil_get_array(req, NULL, "tools", JSONUTIL_OPTIONAL, &tools, err) < 0)
        goto fail;
    if (tools && json_array_size(tools) > 0) {
        json_t *t = openai_tools(tools, err);
        if (!t)
            goto fail;
        json_object_set_new(res, "tools", t);
    }
    const json_t *choice = json_object_get(req, "tool_choice");
    if (choice && !json_is_null(choice) && openai_tool_choice(choice, res, err) < 0)
        goto fail;
    if ((rc = jsonutil_get_bool(req, NULL, "parallel_tool_calls", JSONUTIL_OPTIONAL, &b, err)) < 0)
        goto fail;
    if (rc > 0)
        json_object_set_new(res, "parallel_tool_calls", json_boolean(b));

    if (openai_max_tokens(req, opt, 0, res, err) < 0 ||
        openai_numbers(req, openai_sampling, sizeof openai_sampling / sizeof openai_sampling[0],
                       res, err) < 0 ||
        openai_stop(req, res, err) < 0)
        goto fail;
    if ((rc = jsonutil_get_bool(req, NULL, "logprobs", JSONUTIL_OPTIONAL, &b, err)) < 0)
        goto fail;
    if (rc > 0)
        json_object_set_new(res, "logprobs", json_boolean(b));
    static const struct openai_number top_logprobs[] = {{"top_logprobs", true, 0, 20}};
    if (openai_numbers(req, top_logprobs, 1, res, err) < 0)
        goto fail;
    if (jsonutil_get_object(req, NULL, "response_format", JSONUTIL_OPTIONAL, &format, err) < 0 ||
        (format && openai_response_format(format, res, err) < 0))
        goto fail;
    if (openai_n_and_stream(req, res, err) < 0)
        goto fail;
    *out = res;
    return 0;
fail:
    json_decref(res);
    return -1;
}

/* Whether v is an array of token ids (non-negative integers), and not empty. */
static bool openai_is_token_ids(const json_t *v)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_integer(t) || json_integer_value(t) < 0)
            return false;
    }
    return true;
}

int openai_completion_request_normalize(const json_t *req, const struct openai_options *opt,
                                        json_t **out, struct error *err)
{
    static const struct openai_options defaults = {0};
    if (!opt)
        opt = &defaults;
    *out = NULL;
    json_t *res = json_object();
    const char *model;
    bool b;
    int rc;
    if (!json_is_object(req)) {
        error_set(err, ERR_INVALID_REQUEST, NULL, "the request body must be a JSON object");
        goto fail;
    }
    if (jsonutil_get_string(req, NULL, "model", JSONUTIL_REQUIRED, &model, err) < 0)
        goto fail;
    json_object_set_new(res, "model", json_string(model));
    const json_t *prompt = json_object_get(req, "prompt");
    if (json_is_array(prompt) && json_array_size(prompt) == 1 &&
        (json_is_string(json_array_get(prompt, 0)) ||
         openai_is_token_ids(json_array_get(prompt, 0))))
        prompt = json_array_get(prompt, 0);
    if (json_is_string(prompt) || openai_is_token_ids(prompt)) {
        json_object_set_new(res, "prompt", json_deep_copy(prompt));
    } else if (json_is_array(prompt) && json_array_size(prompt) > 1) {
        error_set(err, ERR_UNSUPPORTED, "prompt", "'prompt': one prompt per request is served");
        goto fail;
    } else {
        openai_bad_value("prompt", "a string or an array of token ids", err);
        goto fail;
    }
    if (openai_max_tokens(req, opt, 16, res, err) < 0 ||
        openai_numbers(req, openai_sampling, sizeof openai_sampling / sizeof openai_sampling[0],
                       res, err) < 0 ||
        openai_stop(req, res, err) < 0)
        goto fail;
    if ((rc = jsonutil_get_bool(req, NULL, "echo", JSONUTIL_OPTIONAL, &b, err)) < 0)
        goto fail;
    if (rc > 0)
        json_object_set_new(res, "echo", json_boolean(b));
    static const struct openai_number logprobs[] = {{"logprobs", true, 0, 5}};
    if (openai_numbers(req, logprobs, 1, res, err) < 0)
        goto fail;
    const json_t *suffix = json_object_get(req, "suffix");
    if (suffix && !json_is_null(suffix)) {
        error_set(err, ERR_UNSUPPORTED, "suffix", "'suffix' is not supported");
        goto fail;
    }
    int64_t best_of = 1;
    if (jsonutil_get_int(req, NULL, "best_of", JSONUTIL_OPTIONAL, &best_of, err) < 0)
        goto fail;
    if (best_of != 1) {
        error_set(err, ERR_UNSUPPORTED, "best_of", "'best_of' must be 1");
        goto fail;
    }
    if (openai_n_and_stream(req, res, err) < 0)
        goto fail;
    *out = res;
    return 0;
fail:
    json_decref(res);
    return -1;
}

int openai_embedding_request_normalize(const json_t *req, json_t **out, struct error *err)
{
    *out = NULL;
    json_t *res = json_object();
    const char *model, *format = "float";
    int64_t dimensions;
    int rc;
    if (!json_is_object(req)) {
        error_set(err, ERR_INVALID_REQUEST, NULL, "the request body must be a JSON object");
        goto fail;
    }
    if (jsonutil_get_string(req, NULL, "model", JSONUTIL_REQUIRED, &model, err) < 0)
        goto fail;
    json_object_set_new(res, "model", json_string(model));
    const json_t *input = json_object_get(req, "input");
    bool ok = json_is_string(input) || openai_is_token_ids(input);
    if (!ok && json_is_array(input) && json_array_size(input) > 0) {
        ok = true;
        size_t i;
        const json_t *item;
        json_array_foreach(input, i, item)
        {
            if (!json_is_string(item) && !openai_is_token_ids(item))
                ok = false;
        }
    }
    if (!ok) {
        openai_bad_value("input", "a string, an array of strings, or token ids", err);
        goto fail;
    }
    json_object_set_new(res, "input", json_deep_copy(input));
    if (jsonutil_get_string(req, NULL, "encoding_format", JSONUTIL_OPTIONAL, &format, err) < 0)
        goto fail;
    if (strcmp(format, "float") != 0 && strcmp(format, "base64") != 0) {
        openai_bad_value("encoding_format", "\"float\" or \"base64\"", err);
        goto fail;
    }
    json_object_set_new(res, "encoding_format", json_string(format));
    if ((rc = jsonutil_get_int_range(req, NULL, "dimensions", JSONUTIL_OPTIONAL, 1, INT32_MAX,
                                     &dimensions, err)) < 0)
        goto fail;
    if (rc > 0)
        json_object_set_new(res, "dimensions", json_integer(dimensions));
    *out = res;
    return 0;
fail:
    json_decref(res);
    return -1;
}

/* ---- upstream errors ---------------------------------------------------------------------- */

/* The error code a neuron's error.code string names, or ERR_NONE. */
static enum err_code openai_code_by_name(const char *code)
{
    static const struct {
        const char *name;
        enum err_code code;
    } names[] = {
            {"context_length_exceeded", ERR_PROMPT_TOO_LONG},
            {"model_not_found", ERR_MODEL_NOT_FOUND},
            {"model_loading", ERR_MODEL_LOADING},
            {"rate_limit_exceeded", ERR_OVERLOADED},
            {"overloaded", ERR_OVERLOADED},
            {"unsupported_parameter", ERR_UNSUPPORTED},
    };
    for (size_t i = 0; code && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(code, names[i].name) == 0)
            return names[i].code;
    }
    return ERR_NONE;
}

static enum err_code openai_code_by_status(long status)
{
    switch (status) {
    case 400:
    case 422:
        return ERR_INVALID_REQUEST;
    case 404: /* the neuron does not serve the model (any more): another one may */
    case 503:
        return ERR_UNAVAILABLE;
    case 413:
        return ERR_BODY_TOO_LARGE;
    case 429:
        return ERR_OVERLOADED;
    case 504:
        return ERR_TIMEOUT;
    }
    return ERR_NONE;
}

void openai_error_from_upstream(long status, const json_t *body, struct error *err)
{
    const json_t *e = json_object_get(body, "error");
    const char *message = NULL, *code = NULL, *type = NULL;
    if (json_is_string(e)) {
        message = json_string_value(e);
    } else if (json_is_object(e)) {
        message = json_string_value(json_object_get(e, "message"));
        code = json_string_value(json_object_get(e, "code"));
        type = json_string_value(json_object_get(e, "type"));
    }
    enum err_code c = openai_code_by_name(code);
    if (c == ERR_NONE)
        c = openai_code_by_status(status);
    if (c == ERR_NONE && type && strcmp(type, "invalid_request_error") == 0)
        c = ERR_INVALID_REQUEST;
    if (c == ERR_NONE)
        c = ERR_UPSTREAM;
    if (message && !message[0])
        message = NULL;
    if (c == ERR_PROMPT_TOO_LONG) {
        static const char lead[] = "prompt is too long";
        if (!message)
            error_set(err, c, NULL, "%s", lead);
        else if (strncmp(message, lead, sizeof lead - 1) == 0)
            error_set(err, c, NULL, "%s", message);
        else
            error_set(err, c, NULL, "%s: %s", lead, message);
    } else if (message) {
        error_set(err, c, NULL, "%s", message);
    } else {
        error_set(err, c, NULL, NULL);
    }
}

/* ---- stream events ------------------------------------------------------------------------ */

void openai_sse_data(struct buf *out, const json_t *data)
{
    buf_append_str(out, "data: ");
    jsonutil_dump_buf(out, data);
    buf_append_str(out, "\n\n");
}

void openai_sse_error(struct buf *out, const struct error *e)
{
    json_t *body = error_body_openai(e->code, e->message, e->param);
    openai_sse_data(out, body);
    json_decref(body);
}

void openai_sse_done(struct buf *out)
{
    buf_append_str(out, "data: [DONE]\n\n");
}

void openai_sse_keepalive(struct buf *out)
{
    buf_append_str(out, ": keep-alive\n\n");
}
