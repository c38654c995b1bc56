/*
 * neuron/chat_template.c — request normalisation and the template context for chat rendering.
 *
 * The context mirrors what transformers passes to the template (see chat_template.h); the
 * normalisation mirrors what OpenAI-compatible servers do before calling it, and is also
 * implemented by tests/chat_templates/render_reference.py so both sides render the same input.
 */
#include "chat_template.h"
#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

struct chat_template {
    struct jinja_template *tmpl;
};

int chat_template_create(const char *text, size_t len, const struct jinja_options *opt,
                         struct chat_template **out, struct jinja_error *err)
{
    struct jinja_template *t;
    *out = NULL;
    if (jinja_template_parse(text, len, opt, &t, err) != 0)
        return -1;
    *out = xcalloc(1, sizeof **out);
    (*out)->tmpl = t;
    return 0;
}

void chat_template_destroy(struct chat_template *ct)
{
    if (!ct)
        return;
    jinja_template_destroy(ct->tmpl);
    free(ct);
}

const char *chat_template_find(const json_t *meta, bool want_tools)
{
    json_t *t = json_object_get(meta, "tokenizer.chat_template");
    if (json_is_string(t))
        return json_string_value(t);
    t = json_object_get(meta, "chat_template");
    if (json_is_string(t))
        return json_string_value(t);
    if (!json_is_array(t))
        return NULL;
    const char *def = NULL, *tool_use = NULL, *first = NULL;
    size_t i;
    json_t *entry;
    json_array_foreach(t, i, entry)
    {
        const char *name = json_string_value(json_object_get(entry, "name"));
        const char *text = json_string_value(json_object_get(entry, "template"));
        if (!name || !text)
            continue;
        if (!first)
            first = text;
        if (!strcmp(name, "default"))
            def = text;
        else if (!strcmp(name, "tool_use"))
            tool_use = text;
    }
    if (want_tools && tool_use)
        return tool_use;
    return def ? def : first;
}

/* The concatenated text of a content list made only of text parts; NULL otherwise. */
static json_t *text_parts_joined(const json_t *content)
{
    size_t i, total = 0;
    json_t *part;
    if (!json_is_array(content) || json_array_size(content) == 0)
        return NULL;
    json_array_foreach(content, i, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) ||
            strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return NULL;
        total += json_string_length(text);
    }
    char *buf = xmalloc(total + 1);
    size_t off = 0;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        memcpy(buf + off, json_string_value(text), json_string_length(text));
        off += json_string_length(text);
    }
    json_t *s = json_stringn(buf, total);
    free(buf);
    return s;
}

static json_t *normalize_tool_calls(const json_t *calls)
{
    json_t *out = json_array(), *call;
    size_t i;
    json_array_foreach(calls, i, call)
    {
        json_t *fn = json_object_get(call, "function");
        json_t *args = json_object_get(fn, "arguments");
        if (!json_is_object(call) || !json_is_object(fn) || !json_is_string(args)) {
            json_array_append(out, call);
            continue;
        }
        json_t *parsed = json_loadb(json_string_value(args), json_string_length(args),
                                    JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!json_is_object(parsed)) {
            json_decref(parsed);
            json_array_append(out, call);
            continue;
        }
        json_t *c = json_copy(call), *f = json_copy(fn);
        json_object_set_new(f, "arguments", parsed);
        json_object_set_new(c, "function", f);
        json_array_append_new(out, c);
    }
    return out;
}

json_t *chat_template_normalize_messages(const json_t *messages)
{
    json_t *out, *m;
    size_t i;
    if (!json_is_array(messages))
        return json_incref((json_t *)messages);
    out = json_array();
    json_array_foreach(messages, i, m)
    {
        if (!json_is_object(m)) {
            json_array_append(out, m);
            continue;
        }
        json_t *c = json_copy(m), *content = json_object_get(m, "content");
        json_t *role = json_object_get(m, "role"), *joined;
        if (json_is_null(content) && json_is_string(role) &&
            !strcmp(json_string_value(role), "assistant"))
            json_object_set_new(c, "content", json_string(""));
        else if ((joined = text_parts_joined(content)))
            json_object_set_new(c, "content", joined);
        json_t *calls = json_object_get(m, "tool_calls");
        if (json_is_array(calls))
            json_object_set_new(c, "tool_calls", normalize_tool_calls(calls));
        json_array_append_new(out, c);
    }
    return out;
}

int chat_template_render(const struct chat_template *ct, const struct chat_template_request *req,
                         char **out, size_t *out_len, struct jinja_error *err)
{
    json_t *ctx = json_object();
    const char *k;
    json_t *v;
    if (json_is_object(req->extra))
        json_object_foreach((json_t *)req->extra, k, v) json_object_set(ctx, k, v);
    if (req->bos_token)
        json_object_set_new(ctx, "bos_token", json_string(req->bos_token));
    if (req->eos_token)
        json_object_set_new(ctx, "eos_token", json_string(req->eos_token));
    json_object_set_new(ctx, "messages",
                        req->messages ? chat_template_normalize_messages(req->messages)
                                      : json_array());
    json_object_set_new(ctx, "tools", req->tools ? json_incref((json_t *)req->tools) : json_null());
    json_object_set_new(ctx, "documents", json_null());
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(req->add_generation_prompt));
    int rc = jinja_template_render(ct->tmpl, ctx, out, out_len, err);
    json_decref(ctx);
    return rc;
}

int chat_template_render_text(const char *text, const struct chat_template_request *req, char **out,
                              size_t *out_len, struct jinja_error *err)
{
    struct chat_template *ct;
    *out = NULL;
    if (chat_template_create(text, strlen(text), NULL, &ct, err) != 0)
        return -1;
    int rc = chat_template_render(ct, req, out, out_len, err);
    chat_template_destroy(ct);
    return rc;
}
