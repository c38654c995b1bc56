/*
 * gateway/anthropic.c — Anthropic Messages requests, responses and streams translated to and
 * from the neurons' OpenAI chat dialect (see anthropic.h).
 */
#include "anthropic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids.h"
#include "jsonutil.h"
#include "openai.h"
#include "xalloc.h"

/* Room for a member path such as "messages[123].content[45].content[6].source". */
#define ANTHROPIC_PATH_SIZE 128

/* Formats a member path for error messages into out (ANTHROPIC_PATH_SIZE bytes); a path too long
 * is cut, which only shortens a message. */
static void anthropic_path(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void anthropic_path(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, ANTHROPIC_PATH_SIZE, fmt, ap);
    va_end(ap);
}

/* Claude Code's first system block changes on every request; it must not reach the prompt. */
static const char anthropic_billing_prefix[] = "x-anthropic-billing-header:";

/* Appends text to b, separated from what b already holds by a blank line; empty text adds
 * nothing. */
static void anthropic_join(struct buf *b, const char *text)
{
    if (!text[0])
        return;
    if (b->len > 0)
        buf_append_str(b, "\n\n");
    buf_append_str(b, text);
}

/* The block's "type" as a string; -1 with err set when it is missing or not a string. */
static int anthropic_block_type(const json_t *block, const char *path, const char **type,
                                struct error *err)
{
    if (!json_is_object(block)) {
        error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be an object", path);
        return -1;
    }
    return jsonutil_get_string(block, path, "type", JSONUTIL_REQUIRED, type, err) < 0 ? -1 : 0;
}

static int anthropic_unsupported_block(const char *path, const char *type, struct error *err)
{
    error_set(err, ERR_UNSUPPORTED, path, "'%s': content blocks of type '%s' are not supported",
              path, type);
    return -1;
}

/* Appends the text of a system prompt (string or text blocks) to text. */
static int anthropic_system_text(const json_t *system, struct buf *text, struct error *err)
{
    if (!system || json_is_null(system))
        return 0;
    if (json_is_string(system)) {
        anthropic_join(text, json_string_value(system));
        return 0;
    }
    if (!json_is_array(system)) {
        error_set(err, ERR_INVALID_REQUEST, "system",
                  "'system' must be a string or an array of text blocks");
        return -1;
    }
    size_t i;
    const json_t *block;
    json_array_foreach(system, i, block)
    {
        char path[ANTHROPIC_PATH_SIZE];
        anthropic_path(path, "system[%zu]", i);
        const char *type, *t;
        if (anthropic_block_type(block, path, &type, err) < 0)
            return -1;
        if (strcmp(type, "text") != 0) {
            error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be a text block", path);
            return -1;
        }
        if (jsonutil_get_string(block, path, "text", JSONUTIL_REQUIRED, &t, err) < 0)
            return -1;
        if (strncmp(t, anthropic_billing_prefix, sizeof anthropic_billing_prefix - 1) == 0)
            continue;
        anthropic_join(text, t);
    }
    return 0;
}

/* An OpenAI image_url part for an Anthropic image block; NULL with err set. */
static json_t *anthropic_image_part(const json_t *block, const char *path, struct error *err)
{
    char spath[ANTHROPIC_PATH_SIZE];
    anthropic_path(spath, "%s.source", path);
    json_t *source;
    const char *type;
    if (jsonutil_get_object(block, path, "source", JSONUTIL_REQUIRED, &source, err) < 0 ||
        jsonutil_get_string(source, spath, "type", JSONUTIL_REQUIRED, &type, err) < 0)
        return NULL;
    struct buf url = BUF_INIT;
    if (strcmp(type, "base64") == 0) {
        const char *media_type, *data;
        if (jsonutil_get_string(source, spath, "media_type", JSONUTIL_REQUIRED, &media_type, err) <
                    0 ||
            jsonutil_get_string(source, spath, "data", JSONUTIL_REQUIRED, &data, err) < 0)
            return NULL;
        buf_append_str(&url, "data:");
        buf_append_str(&url, media_type);
        buf_append_str(&url, ";base64,");
        buf_append_str(&url, data);
    } else if (strcmp(type, "url") == 0) {
        const char *u;
        if (jsonutil_get_string(source, spath, "url", JSONUTIL_REQUIRED, &u, err) < 0)
            return NULL;
        buf_append_str(&url, u);
    } else {
        error_set(err, ERR_UNSUPPORTED, spath,
                  "'%s.type': image sources of type '%s' are not "
                  "supported (use base64 or url)",
                  spath, type);
        return NULL;
    }
    json_t *part = json_pack("{s:s, s:{s:s%}}", "type", "image_url", "image_url", "url",
                             buf_cstr(&url), url.len);
    buf_free(&url);
    return part;
}

/*
 * Collects content parts: adjacent texts are joined (with a blank line) into one text part,
 * images are parts of their own. The parts end up in an array; a lone text part becomes a
 * plain string (what templates handle best).
 */
struct anthropic_parts {
    json_t *parts;    /* array */
    struct buf text;  /* text not yet made a part */
    bool has_content; /* any text or image was added */
};

static void anthropic_parts_init(struct anthropic_parts *p)
{
    p->parts = json_array();
    buf_init(&p->text);
    p->has_content = false;
}

static void anthropic_parts_flush_text(struct anthropic_parts *p)
{
    if (p->text.len == 0)
        return;
    json_array_append_new(p->parts, json_pack("{s:s, s:s%}", "type", "text", "text",
                                              buf_cstr(&p->text), p->text.len));
    buf_reset(&p->text);
}

static void anthropic_parts_add_text(struct anthropic_parts *p, const char *text)
{
    anthropic_join(&p->text, text);
    p->has_content = true;
}

static void anthropic_parts_add_image(struct anthropic_parts *p, json_t *image)
{
    anthropic_parts_flush_text(p);
    json_array_append_new(p->parts, image);
    p->has_content = true;
}

/* The content: "" when empty, a string for text only, else the parts array. Consumes p. */
static json_t *anthropic_parts_take(struct anthropic_parts *p)
{
    json_t *content;
    if (json_array_size(p->parts) == 0) {
        content = json_stringn(buf_cstr(&p->text), p->text.len);
    } else {
        anthropic_parts_flush_text(p);
        if (json_array_size(p->parts) == 1 &&
            strcmp(json_string_value(json_object_get(json_array_get(p->parts, 0), "type")),
                   "text") == 0)
            content = json_incref(json_object_get(json_array_get(p->parts, 0), "text"));
        else
            content = json_incref(p->parts);
    }
    json_decref(p->parts);
    buf_free(&p->text);
    p->parts = NULL;
    return content;
}

static void anthropic_parts_free(struct anthropic_parts *p)
{
    json_decref(p->parts);
    buf_free(&p->text);
    p->parts = NULL;
}

/* Adds the text and image blocks of blocks[] (a tool_result's content) to p. */
static int anthropic_tool_result_blocks(const json_t *blocks, const char *path,
                                        struct anthropic_parts *p, struct error *err)
{
    size_t i;
    const json_t *block;
    json_array_foreach(blocks, i, block)
    {
        char bpath[ANTHROPIC_PATH_SIZE];
        anthropic_path(bpath, "%s.content[%zu]", path, i);
        const char *type, *t;
        if (anthropic_block_type(block, bpath, &type, err) < 0)
            return -1;
        if (strcmp(type, "text") == 0) {
            if (jsonutil_get_string(block, bpath, "text", JSONUTIL_REQUIRED, &t, err) < 0)
                return -1;
            anthropic_parts_add_text(p, t);
        } else if (strcmp(type, "image") == 0) {
            json_t *image = anthropic_image_part(block, bpath, err);
            if (!image)
                return -1;
            anthropic_parts_add_image(p, image);
        } else {
            return anthropic_unsupported_block(bpath, type, err);
        }
    }
    return 0;
}

/* Appends the role "tool" message of a tool_result block to messages. */
static int anthropic_tool_result(const json_t *block, const char *path, json_t *messages,
                                 struct error *err)
{
    const char *id;
    bool is_error = false;
    json_t *content = json_object_get(block, "content");
    if (jsonutil_get_string(block, path, "tool_use_id", JSONUTIL_REQUIRED, &id, err) < 0 ||
        jsonutil_get_bool(block, path, "is_error", JSONUTIL_OPTIONAL, &is_error, err) < 0)
        return -1;
    struct anthropic_parts p;
    anthropic_parts_init(&p);
    if (is_error)
        buf_append_str(&p.text, "Error: ");
    if (json_is_string(content)) {
        buf_append_str(&p.text, json_string_value(content));
    } else if (json_is_array(content)) {
        /* "Error: " must run into the first text, not be joined to it with a blank line. */
        struct anthropic_parts inner;
        anthropic_parts_init(&inner);
        if (anthropic_tool_result_blocks(content, path, &inner, err) < 0) {
            anthropic_parts_free(&inner);
            anthropic_parts_free(&p);
            return -1;
        }
        json_t *c = anthropic_parts_take(&inner);
        if (json_is_string(c)) {
            buf_append_str(&p.text, json_string_value(c));
        } else {
            size_t i;
            json_t *part;
            json_array_foreach(c, i, part)
            {
                json_t *text = json_object_get(part, "text");
                if (i == 0 && json_is_string(text)) {
                    buf_append_str(&p.text, json_string_value(text));
                    continue;
                }
                anthropic_parts_flush_text(&p);
                json_array_append(p.parts, part);
            }
        }
        json_decref(c);
    } else if (content && !json_is_null(content)) {
        char cpath[ANTHROPIC_PATH_SIZE];
        anthropic_path(cpath, "%s.content", path);
        anthropic_parts_free(&p);
        error_set(err, ERR_INVALID_REQUEST, cpath,
                  "'%s' must be a string or an array of content blocks", cpath);
        return -1;
    }
    json_t *msg = json_pack("{s:s, s:s, s:o}", "role", "tool", "tool_call_id", id, "content",
                            anthropic_parts_take(&p));
    json_array_append_new(messages, msg);
    return 0;
}

/* Appends one user turn: its tool results first, then a user message with the rest. */
static int anthropic_user_turn(const json_t *content, const char *path, json_t *messages,
                               struct error *err)
{
    if (json_is_string(content)) {
        json_array_append_new(messages,
                              json_pack("{s:s, s:s%}", "role", "user", "content",
                                        json_string_value(content), json_string_length(content)));
        return 0;
    }
    struct anthropic_parts p;
    anthropic_parts_init(&p);
    bool had_tool_result = false;
    size_t i;
    const json_t *block;
    json_array_foreach(content, i, block)
    {
        char bpath[ANTHROPIC_PATH_SIZE];
        anthropic_path(bpath, "%s.content[%zu]", path, i);
        const char *type, *t;
        if (anthropic_block_type(block, bpath, &type, err) < 0)
            goto fail;
        if (strcmp(type, "text") == 0) {
            if (jsonutil_get_string(block, bpath, "text", JSONUTIL_REQUIRED, &t, err) < 0)
                goto fail;
            anthropic_parts_add_text(&p, t);
        } else if (strcmp(type, "image") == 0) {
            json_t *image = anthropic_image_part(block, bpath, err);
            if (!image)
                goto fail;
            anthropic_parts_add_image(&p, image);
        } else if (strcmp(type, "tool_result") == 0) {
            if (anthropic_tool_result(block, bpath, messages, err) < 0)
                goto fail;
            had_tool_result = true;
        } else {
            anthropic_unsupported_block(bpath, type, err);
            goto fail;
        }
    }
    if (p.has_content || !had_tool_result)
        json_array_append_new(messages, json_pack("{s:s, s:o}", "role", "user", "content",
                                                  anthropic_parts_take(&p)));
    anthropic_parts_free(&p);
    return 0;
fail:
    anthropic_parts_free(&p);
    return -1;
}

/* One tool_use block as an OpenAI tool call. */
static json_t *anthropic_tool_call(const json_t *block, const char *path, struct error *err)
{
    const char *id, *name;
    json_t *input = NULL;
    if (jsonutil_get_string(block, path, "id", JSONUTIL_REQUIRED, &id, err) < 0 ||
        jsonutil_get_string(block, path, "name", JSONUTIL_REQUIRED, &name, err) < 0 ||
        jsonutil_get_object(block, path, "input", JSONUTIL_OPTIONAL, &input, err) < 0)
        return NULL;
    char *arguments = input ? jsonutil_dumps(input) : xstrdup("{}");
    json_t *call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function",
                             "name", name, "arguments", arguments);
    free(arguments);
    return call;
}

/* Appends one assistant turn. */
static int anthropic_assistant_turn(const json_t *content, const char *path, json_t *messages,
                                    struct error *err)
{
    if (json_is_string(content)) {
        json_array_append_new(messages,
                              json_pack("{s:s, s:s%}", "role", "assistant", "content",
                                        json_string_value(content), json_string_length(content)));
        return 0;
    }
    struct buf text = BUF_INIT, reasoning = BUF_INIT;
    json_t *calls = json_array();
    size_t i;
    const json_t *block;
    json_array_foreach(content, i, block)
    {
        char bpath[ANTHROPIC_PATH_SIZE];
        anthropic_path(bpath, "%s.content[%zu]", path, i);
        const char *type, *t;
        if (anthropic_block_type(block, bpath, &type, err) < 0)
            goto fail;
        if (strcmp(type, "text") == 0) {
            if (jsonutil_get_string(block, bpath, "text", JSONUTIL_REQUIRED, &t, err) < 0)
                goto fail;
            anthropic_join(&text, t);
        } else if (strcmp(type, "tool_use") == 0) {
            json_t *call = anthropic_tool_call(block, bpath, err);
            if (!call)
                goto fail;
            json_array_append_new(calls, call);
        } else if (strcmp(type, "thinking") == 0) {
            if (jsonutil_get_string(block, bpath, "thinking", JSONUTIL_REQUIRED, &t, err) < 0)
                goto fail;
            anthropic_join(&reasoning, t);
        } else if (strcmp(type, "redacted_thinking") != 0) {
            anthropic_unsupported_block(bpath, type, err);
            goto fail;
        }
    }
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    if (text.len == 0 && json_array_size(calls) > 0)
        json_object_set_new(msg, "content", json_null());
    else
        json_object_set_new(msg, "content", json_stringn(buf_cstr(&text), text.len));
    if (reasoning.len > 0)
        json_object_set_new(msg, "reasoning_content",
                            json_stringn(buf_cstr(&reasoning), reasoning.len));
    if (json_array_size(calls) > 0)
        json_object_set(msg, "tool_calls", calls);
    json_array_append_new(messages, msg);
    json_decref(calls);
    buf_free(&text);
    buf_free(&reasoning);
    return 0;
fail:
    json_decref(calls);
    buf_free(&text);
    buf_free(&reasoning);
    return -1;
}

/* Appends the translation of messages[] to out (which may already hold the system message). */
static int anthropic_messages(const json_t *messages, json_t *out, struct error *err)
{
    if (json_array_size(messages) == 0) {
        error_set(err, ERR_INVALID_REQUEST, "messages",
                  "'messages' must hold at least one message");
        return -1;
    }
    size_t i;
    const json_t *msg;
    json_array_foreach(messages, i, msg)
    {
        char path[ANTHROPIC_PATH_SIZE];
        anthropic_path(path, "messages[%zu]", i);
        if (!json_is_object(msg)) {
            error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be an object", path);
            return -1;
        }
        const char *role;
        if (jsonutil_get_string(msg, path, "role", JSONUTIL_REQUIRED, &role, err) < 0)
            return -1;
        const json_t *content = json_object_get(msg, "content");
        char mpath[ANTHROPIC_PATH_SIZE];
        if (!json_is_string(content) && !json_is_array(content)) {
            anthropic_path(mpath, "%s.content", path);
            error_set(err, ERR_INVALID_REQUEST, mpath,
                      "'%s' must be a string or an array of content blocks", mpath);
            return -1;
        }
        int rc;
        if (strcmp(role, "user") == 0) {
            rc = anthropic_user_turn(content, path, out, err);
        } else if (strcmp(role, "assistant") == 0) {
            rc = anthropic_assistant_turn(content, path, out, err);
        } else {
            anthropic_path(mpath, "%s.role", path);
            error_set(err, ERR_INVALID_REQUEST, mpath,
                      "'%s' must be \"user\" or \"assistant\" (the system prompt goes in the "
                      "top-level 'system' member)",
                      mpath);
            rc = -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The OpenAI tools for Anthropic tools[]. */
static json_t *anthropic_tools(const json_t *tools, struct error *err)
{
    json_t *out = json_array();
    size_t i;
    const json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        char path[ANTHROPIC_PATH_SIZE];
        anthropic_path(path, "tools[%zu]", i);
        if (!json_is_object(tool)) {
            error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be an object", path);
            goto fail;
        }
        const char *type = NULL, *name, *description = NULL;
        json_t *schema = NULL;
        if (jsonutil_get_string(tool, path, "type", JSONUTIL_OPTIONAL, &type, err) < 0)
            goto fail;
        if (type && strcmp(type, "custom") != 0) {
            error_set(err, ERR_UNSUPPORTED, path,
                      "'%s': tools of type '%s' are not supported (only client tools with an "
                      "input_schema)",
                      path, type);
            goto fail;
        }
        if (jsonutil_get_string(tool, path, "name", JSONUTIL_REQUIRED, &name, err) < 0 ||
            jsonutil_get_string(tool, path, "description", JSONUTIL_OPTIONAL, &description, err) <
                    0 ||
            jsonutil_get_object(tool, path, "input_schema", JSONUTIL_REQUIRED, &schema, err) < 0)
            goto fail;
        json_t *function = json_pack("{s:s}", "name", name);
        if (description)
            json_object_set_new(function, "description", json_string(description));
        json_object_set_new(function, "parameters", json_deep_copy(schema));
        json_array_append_new(out,
                              json_pack("{s:s, s:o}", "type", "function", "function", function));
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* Sets tool_choice (and parallel_tool_calls) on out from the Anthropic tool_choice. */
static int anthropic_tool_choice(const json_t *choice, json_t *out, struct error *err)
{
    const char *type, *name;
    bool no_parallel = false;
    if (jsonutil_get_string(choice, "tool_choice", "type", JSONUTIL_REQUIRED, &type, err) < 0 ||
        jsonutil_get_bool(choice, "tool_choice", "disable_parallel_tool_use", JSONUTIL_OPTIONAL,
                          &no_parallel, err) < 0)
        return -1;
    if (strcmp(type, "auto") == 0) {
        json_object_set_new(out, "tool_choice", json_string("auto"));
    } else if (strcmp(type, "any") == 0) {
        json_object_set_new(out, "tool_choice", json_string("required"));
    } else if (strcmp(type, "none") == 0) {
        json_object_set_new(out, "tool_choice", json_string("none"));
    } else if (strcmp(type, "tool") == 0) {
        if (jsonutil_get_string(choice, "tool_choice", "name", JSONUTIL_REQUIRED, &name, err) < 0)
            return -1;
        json_object_set_new(
                out, "tool_choice",
                json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name));
    } else {
        error_set(err, ERR_INVALID_REQUEST, "tool_choice.type",
                  "'tool_choice.type' must be one of \"auto\", \"any\", \"tool\", \"none\"");
        return -1;
    }
    if (no_parallel)
        json_object_set_new(out, "parallel_tool_calls", json_false());
    return 0;
}

/* stop_sequences as the OpenAI stop array (or nothing when empty). */
static int anthropic_stop(const json_t *req, json_t *out, struct error *err)
{
    json_t *stops = NULL;
    if (jsonutil_get_array(req, NULL, "stop_sequences", JSONUTIL_OPTIONAL, &stops, err) < 0)
        return -1;
    if (!stops || json_array_size(stops) == 0)
        return 0;
    size_t i;
    const json_t *s;
    json_array_foreach(stops, i, s)
    {
        if (!json_is_string(s)) {
            char path[ANTHROPIC_PATH_SIZE];
            anthropic_path(path, "stop_sequences[%zu]", i);
            error_set(err, ERR_INVALID_REQUEST, path, "'%s' must be a string", path);
            return -1;
        }
    }
    json_object_set_new(out, "stop", json_deep_copy(stops));
    return 0;
}

/* The sampling members and max_tokens. */
static int anthropic_sampling(const json_t *req, const struct anthropic_options *opt, json_t *out,
                              struct error *err)
{
    int64_t max_tokens = 0, top_k = 0;
    double temperature = 0, top_p = 0;
    int rc = jsonutil_get_int_range(req, NULL, "max_tokens",
                                    opt->count_tokens ? JSONUTIL_OPTIONAL : JSONUTIL_REQUIRED, 1,
                                    INT64_MAX, &max_tokens, err);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        if (opt->max_tokens_cap > 0 && max_tokens > opt->max_tokens_cap)
            max_tokens = opt->max_tokens_cap;
        json_object_set_new(out, "max_tokens", json_integer(max_tokens));
    }
    if ((rc = jsonutil_get_number_range(req, NULL, "temperature", JSONUTIL_OPTIONAL, 0.0, 1.0,
                                        &temperature, err)) < 0)
        return -1;
    if (rc > 0)
        json_object_set_new(out, "temperature", json_real(temperature));
    if ((rc = jsonutil_get_number_range(req, NULL, "top_p", JSONUTIL_OPTIONAL, 0.0, 1.0, &top_p,
                                        err)) < 0)
        return -1;
    if (rc > 0)
        json_object_set_new(out, "top_p", json_real(top_p));
    if ((rc = jsonutil_get_int_range(req, NULL, "top_k", JSONUTIL_OPTIONAL, 0, INT32_MAX, &top_k,
                                     err)) < 0)
        return -1;
    if (rc > 0)
        json_object_set_new(out, "top_k", json_integer(top_k));
    return 0;
}

int anthropic_request_to_openai(const json_t *req, const struct anthropic_options *opt,
                                json_t **out, struct error *err)
{
    static const struct anthropic_options defaults = {0};
    if (!opt)
        opt = &defaults;
    *out = NULL;
    json_t *res = json_object(), *messages = json_array(), *tools = NULL, *choice = NULL;
    struct buf system = BUF_INIT;
    const char *model;
    bool stream = false;
    if (!json_is_object(req)) {
        error_set(err, ERR_INVALID_REQUEST, NULL, "the request body must be a JSON object");
        goto fail;
    }
    if (jsonutil_get_string(req, NULL, "model", JSONUTIL_REQUIRED, &model, err) < 0)
        goto fail;
    json_object_set_new(res, "model", json_string(model));

    if (anthropic_system_text(json_object_get(req, "system"), &system, err) < 0)
        goto fail;
    if (system.len > 0)
        json_array_append_new(messages, json_pack("{s:s, s:s%}", "role", "system", "content",
                                                  buf_cstr(&system), system.len));
    json_t *in_messages;
    if (jsonutil_get_array(req, NULL, "messages", JSONUTIL_REQUIRED, &in_messages, err) < 0 ||
        anthropic_messages(in_messages, messages, err) < 0)
        goto fail;
    json_object_set(res, "messages", messages);

    json_t *in_tools = NULL;
    if (jsonutil_get_array(req, NULL, "tools", JSONUTIL_OPTIONAL, &in_tools, err) < 0)
        goto fail;
    if (in_tools && json_array_size(in_tools) > 0) {
        if (!(tools = anthropic_tools(in_tools, err)))
            goto fail;
        json_object_set(res, "tools", tools);
    }
    if (jsonutil_get_object(req, NULL, "tool_choice", JSONUTIL_OPTIONAL, &choice, err) < 0 ||
        (choice && anthropic_tool_choice(choice, res, err) < 0))
        goto fail;

    if (anthropic_sampling(req, opt, res, err) < 0 || anthropic_stop(req, res, err) < 0 ||
        jsonutil_get_bool(req, NULL, "stream", JSONUTIL_OPTIONAL, &stream, err) < 0)
        goto fail;
    if (stream && !opt->count_tokens) {
        json_object_set_new(res, "stream", json_true());
        json_object_set_new(res, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    json_decref(messages);
    json_decref(tools);
    buf_free(&system);
    *out = res;
    return 0;
fail:
    json_decref(res);
    json_decref(messages);
    json_decref(tools);
    buf_free(&system);
    return -1;
}

/* ---- responses ---------------------------------------------------------------------------- */

char *anthropic_tool_id(const char *openai_id, char *out)
{
    static const char prefix[] = "toolu_";
    if (!openai_id || !openai_id[0])
        return ids_new(IDS_KIND_TOOL_USE, out);
    const char *rest = openai_id;
    if (strncmp(rest, prefix, sizeof prefix - 1) == 0)
        rest += sizeof prefix - 1;
    else if (strncmp(rest, "call_", 5) == 0 && rest[5])
        rest += 5;
    size_t n = sizeof prefix - 1;
    memcpy(out, prefix, n);
    for (; *rest && n < ANTHROPIC_TOOL_ID_SIZE - 1; rest++) {
        char c = *rest;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        out[n++] = ok ? c : '_';
    }
    if (n == sizeof prefix - 1)
        out[n++] = '_'; /* "toolu_" alone: the id was only the prefix */
    out[n] = '\0';
    return out;
}

/* An integer member, or 0 when absent or not an integer (engines' usage objects). */
static int64_t anthropic_int_member(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

/* Token counts read from an OpenAI usage object. */
struct anthropic_tokens {
    int64_t prompt, completion, cached;
};

static bool anthropic_tokens_read(const json_t *usage, struct anthropic_tokens *t)
{
    if (!json_is_object(usage))
        return false;
    t->prompt = anthropic_int_member(usage, "prompt_tokens");
    t->completion = anthropic_int_member(usage, "completion_tokens");
    t->cached =
            anthropic_int_member(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    if (t->cached > t->prompt)
        t->cached = t->prompt;
    return true;
}

static json_t *anthropic_usage(const struct anthropic_tokens *t)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)(t->prompt - t->cached),
                     "output_tokens", (json_int_t)t->completion, "cache_creation_input_tokens",
                     (json_int_t)0, "cache_read_input_tokens", (json_int_t)t->cached);
}

/* The Anthropic stop_reason for an OpenAI finish_reason. */
static const char *anthropic_stop_reason(const char *finish, bool stop_sequence, bool tool_use)
{
    if (finish && strcmp(finish, "length") == 0)
        return "max_tokens";
    if (finish && strcmp(finish, "content_filter") == 0)
        return "refusal";
    if (tool_use)
        return "tool_use";
    if (stop_sequence && finish && strcmp(finish, "stop") == 0)
        return "stop_sequence";
    return "end_turn";
}

/* The engine's reasoning text (a JSON string) in a message or delta, or NULL. */
static const json_t *anthropic_reasoning(const json_t *msg)
{
    const json_t *r = json_object_get(msg, "reasoning_content");
    if (!json_is_string(r))
        r = json_object_get(msg, "reasoning");
    return json_is_string(r) ? r : NULL;
}

/* The matched stop string an engine reports on a finished choice, or NULL. */
static const char *anthropic_matched_stop(const json_t *choice)
{
    const json_t *s = json_object_get(choice, "stop_reason");
    return json_is_string(s) && json_string_length(s) > 0 ? json_string_value(s) : NULL;
}

/* The text of a message's content: a string, or the concatenated text parts. */
static void anthropic_message_text(const json_t *content, struct buf *text)
{
    if (json_is_string(content)) {
        buf_append(text, json_string_value(content), json_string_length(content));
        return;
    }
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part)
    {
        const json_t *t = json_object_get(part, "text");
        if (json_is_string(t))
            buf_append(text, json_string_value(t), json_string_length(t));
    }
}

/* The input object for a tool call's arguments text; {} when it is not an object. */
static json_t *anthropic_tool_input(const json_t *arguments)
{
    json_t *input = NULL;
    if (json_is_string(arguments))
        input = json_loadb(json_string_value(arguments), json_string_length(arguments), 0, NULL);
    else if (json_is_object(arguments))
        input = json_deep_copy(arguments);
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    return input;
}

int anthropic_response_from_openai(const json_t *chat, const char *message_id, const char *model,
                                   json_t **out, struct error *err)
{
    *out = NULL;
    const json_t *choice = json_array_get(json_object_get(chat, "choices"), 0);
    const json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(msg)) {
        error_set(err, ERR_UPSTREAM, NULL, "the model server sent a response without a message");
        return -1;
    }
    json_t *content = json_array();
    const json_t *reasoning = anthropic_reasoning(msg);
    if (json_string_length(reasoning) > 0)
        json_array_append_new(content, json_pack("{s:s, s:s%, s:s}", "type", "thinking", "thinking",
                                                 json_string_value(reasoning),
                                                 json_string_length(reasoning), "signature", ""));
    struct buf text = BUF_INIT;
    anthropic_message_text(json_object_get(msg, "content"), &text);
    if (text.len > 0)
        json_array_append_new(content, json_pack("{s:s, s:s%}", "type", "text", "text",
                                                 buf_cstr(&text), text.len));
    buf_free(&text);
    bool tool_use = false;
    size_t i;
    const json_t *call;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        const json_t *function = json_object_get(call, "function");
        const json_t *name = json_object_get(function, "name");
        char id[ANTHROPIC_TOOL_ID_SIZE];
        anthropic_tool_id(json_string_value(json_object_get(call, "id")), id);
        json_array_append_new(
                content, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", id, "name",
                                   json_is_string(name) ? json_string_value(name) : "", "input",
                                   anthropic_tool_input(json_object_get(function, "arguments"))));
        tool_use = true;
    }
    const json_t *finish = json_object_get(choice, "finish_reason");
    const char *stop = anthropic_matched_stop(choice);
    struct anthropic_tokens tokens = {0};
    anthropic_tokens_read(json_object_get(chat, "usage"), &tokens);
    if (!model)
        model = json_string_value(json_object_get(chat, "model"));
    char fresh_id[IDS_SIZE];
    if (!message_id)
        message_id = ids_new(IDS_KIND_MESSAGE, fresh_id);
    const char *stop_reason =
            anthropic_stop_reason(json_string_value(finish), stop != NULL, tool_use);
    json_t *res = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "id", message_id, "type", "message",
                            "role", "assistant", "content", content, "model", model ? model : "",
                            "stop_reason", stop_reason);
    json_object_set_new(res, "stop_sequence",
                        strcmp(stop_reason, "stop_sequence") == 0 ? json_string(stop)
                                                                  : json_null());
    json_object_set_new(res, "usage", anthropic_usage(&tokens));
    *out = res;
    return 0;
}

/* ---- streams ------------------------------------------------------------------------------ */

enum anthropic_block {
    ANTHROPIC_BLOCK_NONE,
    ANTHROPIC_BLOCK_TEXT,
    ANTHROPIC_BLOCK_THINKING,
    ANTHROPIC_BLOCK_TOOL_USE,
};

struct anthropic_stream {
    char message_id[IDS_SIZE + 64];
    char *model;
    bool started;              /* message_start sent */
    bool finished;             /* a finish_reason arrived */
    bool completed;            /* message_stop sent */
    bool done;                 /* the stream ended: message_stop or an error event sent */
    enum anthropic_block open; /* the block now open */
    int64_t next_index;        /* index of the next block to open */
    int64_t open_tool;         /* upstream tool-call index of the open tool_use block */
    int64_t last_tool;         /* highest upstream tool-call index opened so far, or -1 */
    bool tool_use;             /* a tool_use block was sent */
    char *finish_reason;
    char *stop_sequence;
    bool have_usage;
    struct anthropic_tokens tokens;
    int64_t deltas; /* content deltas received: output_tokens when no usage arrives */
};

struct anthropic_stream *anthropic_stream_create(const char *message_id, const char *model)
{
    struct anthropic_stream *s = xcalloc(1, sizeof *s);
    if (message_id)
        snprintf(s->message_id, sizeof s->message_id, "%s", message_id);
    else
        ids_new(IDS_KIND_MESSAGE, s->message_id);
    s->model = xstrdup(model ? model : "");
    s->last_tool = -1;
    return s;
}

void anthropic_stream_destroy(struct anthropic_stream *s)
{
    if (!s)
        return;
    free(s->model);
    free(s->finish_reason);
    free(s->stop_sequence);
    free(s);
}

void anthropic_sse_event(struct buf *out, const char *name, const json_t *data)
{
    buf_append_str(out, "event: ");
    buf_append_str(out, name);
    buf_append_str(out, "\ndata: ");
    jsonutil_dump_buf(out, data);
    buf_append_str(out, "\n\n");
}

/* anthropic_sse_event, consuming data. */
static void anthropic_sse_event_new(struct buf *out, const char *name, json_t *data)
{
    anthropic_sse_event(out, name, data);
    json_decref(data);
}

void anthropic_sse_ping(struct buf *out)
{
    buf_append_str(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

void anthropic_stream_start(struct anthropic_stream *s, int64_t input_tokens, struct buf *out)
{
    if (s->started || s->done)
        return;
    s->started = true;
    json_t *msg = json_pack("{s:s, s:s, s:s, s:[], s:s, s:n, s:n, s:{s:I, s:I, s:I, s:I}}", "id",
                            s->message_id, "type", "message", "role", "assistant", "content",
                            "model", s->model, "stop_reason", "stop_sequence", "usage",
                            "input_tokens", (json_int_t)(input_tokens > 0 ? input_tokens : 0),
                            "output_tokens", (json_int_t)0, "cache_creation_input_tokens",
                            (json_int_t)0, "cache_read_input_tokens", (json_int_t)0);
    anthropic_sse_event_new(out, "message_start",
                            json_pack("{s:s, s:o}", "type", "message_start", "message", msg));
    anthropic_sse_ping(out);
}

static void anthropic_stream_close_block(struct anthropic_stream *s, struct buf *out)
{
    if (s->open == ANTHROPIC_BLOCK_NONE)
        return;
    buf_appendf(out,
                "event: content_block_stop\ndata: "
                "{\"type\":\"content_block_stop\",\"index\":%lld}\n\n",
                (long long)(s->next_index - 1));
    s->open = ANTHROPIC_BLOCK_NONE;
}

/* Closes the open block and opens one described by block (consumed). */
static void anthropic_stream_open_block(struct anthropic_stream *s, enum anthropic_block kind,
                                        json_t *block, struct buf *out)
{
    anthropic_stream_close_block(s, out);
    anthropic_sse_event_new(out, "content_block_start",
                            json_pack("{s:s, s:I, s:o}", "type", "content_block_start", "index",
                                      (json_int_t)s->next_index, "content_block", block));
    s->open = kind;
    s->next_index++;
}

/* A content_block_delta for the open block; the delta is formatted by hand (the hot path). */
static void anthropic_stream_delta(struct anthropic_stream *s, const char *delta_type,
                                   const char *field, const char *text, size_t len, struct buf *out)
{
    buf_appendf(out,
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                "\"index\":%lld,\"delta\":{\"type\":\"%s\",\"%s\":",
                (long long)(s->next_index - 1), delta_type, field);
    buf_append_json_string(out, text, len);
    buf_append_str(out, "}}\n\n");
    s->deltas++;
}

static void anthropic_stream_text(struct anthropic_stream *s, enum anthropic_block kind,
                                  const json_t *text, struct buf *out)
{
    if (json_string_length(text) == 0)
        return;
    if (s->open != kind) {
        json_t *block = kind == ANTHROPIC_BLOCK_TEXT
                                ? json_pack("{s:s, s:s}", "type", "text", "text", "")
                                : json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "",
                                            "signature", "");
        anthropic_stream_open_block(s, kind, block, out);
    }
    if (kind == ANTHROPIC_BLOCK_TEXT)
        anthropic_stream_delta(s, "text_delta", "text", json_string_value(text),
                               json_string_length(text), out);
    else
        anthropic_stream_delta(s, "thinking_delta", "thinking", json_string_value(text),
                               json_string_length(text), out);
}

/* One element of delta.tool_calls. */
static int anthropic_stream_tool_call(struct anthropic_stream *s, const json_t *call,
                                      struct buf *out, struct error *err)
{
    const json_t *index = json_object_get(call, "index");
    const json_t *function = json_object_get(call, "function");
    const json_t *arguments = json_object_get(function, "arguments");
    /* Engines that stream one call at a time sometimes leave index out. */
    int64_t k = json_is_integer(index) ? (int64_t)json_integer_value(index)
                                       : (s->last_tool < 0 ? 0 : s->last_tool);
    if (!(s->open == ANTHROPIC_BLOCK_TOOL_USE && s->open_tool == k)) {
        if (k <= s->last_tool) {
            error_set(err, ERR_UPSTREAM, NULL,
                      "the model server interleaved tool calls (index %lld after %lld)",
                      (long long)k, (long long)s->last_tool);
            return -1;
        }
        const json_t *name = json_object_get(function, "name");
        char id[ANTHROPIC_TOOL_ID_SIZE];
        anthropic_tool_id(json_string_value(json_object_get(call, "id")), id);
        json_t *block = json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", id, "name",
                                  json_is_string(name) ? json_string_value(name) : "", "input");
        anthropic_stream_open_block(s, ANTHROPIC_BLOCK_TOOL_USE, block, out);
        s->open_tool = k;
        s->last_tool = k;
        s->tool_use = true;
    }
    if (json_string_length(arguments) > 0)
        anthropic_stream_delta(s, "input_json_delta", "partial_json", json_string_value(arguments),
                               json_string_length(arguments), out);
    return 0;
}

/* Ends the stream with an error event for err. */
static void anthropic_stream_error_event(struct anthropic_stream *s, const struct error *e,
                                         struct buf *out)
{
    json_t *body = error_body_anthropic(e->code, error_message(e), NULL);
    anthropic_sse_event_new(out, "error", body);
    s->done = true;
}

void anthropic_stream_fail(struct anthropic_stream *s, const struct error *e, struct buf *out)
{
    if (!s->done)
        anthropic_stream_error_event(s, e, out);
}

/* Ends the stream with the error event for err (already set); returns -1. */
static int anthropic_stream_failed(struct anthropic_stream *s, struct buf *out, struct error *err)
{
    anthropic_stream_error_event(s, err, out);
    return -1;
}

/* One choice of a chunk. */
static int anthropic_stream_choice(struct anthropic_stream *s, const json_t *choice,
                                   struct buf *out, struct error *err)
{
    if (s->finished)
        return 0;
    const json_t *delta = json_object_get(choice, "delta");
    const json_t *reasoning = anthropic_reasoning(delta);
    if (reasoning)
        anthropic_stream_text(s, ANTHROPIC_BLOCK_THINKING, reasoning, out);
    const json_t *content = json_object_get(delta, "content");
    if (json_is_string(content))
        anthropic_stream_text(s, ANTHROPIC_BLOCK_TEXT, content, out);
    size_t i;
    const json_t *call;
    json_array_foreach(json_object_get(delta, "tool_calls"), i, call)
    {
        if (json_is_object(call) && anthropic_stream_tool_call(s, call, out, err) < 0)
            return -1;
    }
    const json_t *finish = json_object_get(choice, "finish_reason");
    if (json_is_string(finish)) {
        s->finished = true;
        s->finish_reason = xstrdup(json_string_value(finish));
        const char *stop = anthropic_matched_stop(choice);
        if (stop)
            s->stop_sequence = xstrdup(stop);
        anthropic_stream_close_block(s, out);
    }
    return 0;
}

int anthropic_stream_feed(struct anthropic_stream *s, const json_t *chunk, struct buf *out,
                          struct error *err)
{
    struct error local = ERROR_INIT;
    if (!err)
        err = &local;
    if (s->done)
        return 0;
    anthropic_stream_start(s, 0, out);
    if (!json_is_object(chunk)) {
        error_set(err, ERR_UPSTREAM, NULL, "the model server sent a malformed stream chunk");
        goto fail;
    }
    const json_t *error = json_object_get(chunk, "error");
    if (error && !json_is_null(error)) {
        openai_error_from_upstream(0, chunk, err);
        goto fail;
    }
    if (anthropic_tokens_read(json_object_get(chunk, "usage"), &s->tokens))
        s->have_usage = true;
    const json_t *choices = json_object_get(chunk, "choices");
    size_t i;
    const json_t *choice;
    json_array_foreach(choices, i, choice)
    {
        const json_t *index = json_object_get(choice, "index");
        if (json_is_integer(index) && json_integer_value(index) != 0)
            continue; /* n is always 1; anything else is not ours to show */
        if (anthropic_stream_choice(s, choice, out, err) < 0)
            goto fail;
    }
    error_clear(&local);
    return 0;
fail:
    anthropic_stream_failed(s, out, err);
    error_clear(&local);
    return -1;
}

int anthropic_stream_end(struct anthropic_stream *s, struct buf *out, struct error *err)
{
    struct error local = ERROR_INIT;
    if (!err)
        err = &local;
    if (s->done)
        return 0;
    anthropic_stream_start(s, 0, out);
    if (!s->finished) {
        error_set(err, ERR_UPSTREAM, NULL, "the model server ended the stream before finishing");
        anthropic_stream_failed(s, out, err);
        error_clear(&local);
        return -1;
    }
    anthropic_stream_close_block(s, out);
    const char *stop_reason =
            anthropic_stop_reason(s->finish_reason, s->stop_sequence != NULL, s->tool_use);
    json_t *usage;
    if (s->have_usage) {
        usage = anthropic_usage(&s->tokens);
    } else {
        usage = json_pack("{s:I}", "output_tokens", (json_int_t)s->deltas);
    }
    json_t *delta = json_pack("{s:s}", "stop_reason", stop_reason);
    json_object_set_new(delta, "stop_sequence",
                        strcmp(stop_reason, "stop_sequence") == 0 ? json_string(s->stop_sequence)
                                                                  : json_null());
    anthropic_sse_event_new(
            out, "message_delta",
            json_pack("{s:s, s:o, s:o}", "type", "message_delta", "delta", delta, "usage", usage));
    anthropic_sse_event_new(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    s->done = true;
    s->completed = true;
    error_clear(&local);
    return 0;
}

int anthropic_stream_feed_data(struct anthropic_stream *s, const char *data, size_t len,
                               struct buf *out, struct error *err)
{
    if (s->done)
        return s->completed ? 1 : -1;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        return anthropic_stream_end(s, out, err) == 0 ? 1 : -1;
    struct error local = ERROR_INIT;
    json_t *chunk = json_loadb(data, len, 0, NULL);
    if (!chunk) {
        error_set(err ? err : &local, ERR_UPSTREAM, NULL,
                  "the model server sent a stream event that is not JSON");
        anthropic_stream_start(s, 0, out);
        anthropic_stream_failed(s, out, err ? err : &local);
        error_clear(&local);
        return -1;
    }
    int rc = anthropic_stream_feed(s, chunk, out, err);
    json_decref(chunk);
    return rc;
}

bool anthropic_stream_done(const struct anthropic_stream *s)
{
    return s->done;
}

void anthropic_stream_usage(const struct anthropic_stream *s, int64_t *input_tokens,
                            int64_t *output_tokens, int64_t *cached_tokens)
{
    if (input_tokens)
        *input_tokens = s->tokens.prompt - s->tokens.cached;
    if (output_tokens)
        *output_tokens = s->have_usage ? s->tokens.completion : s->deltas;
    if (cached_tokens)
        *cached_tokens = s->tokens.cached;
}
