/*
 * neuron/engine.c — opens a model and everything needed to talk to it (see engine.h).
 */
#include "engine.h"

#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The chat template text from the metadata: a string, or HF's list of named templates from
 * which the "default" one is taken. NULL when there is none. */
static const char *engine_template_text(const json_t *meta)
{
    const json_t *t = json_object_get(meta, "chat_template");
    if (!t)
        t = json_object_get(meta, "tokenizer.chat_template");
    if (json_is_string(t))
        return json_string_value(t);
    if (json_is_array(t)) {
        size_t i;
        const json_t *item;
        json_array_foreach(t, i, item)
        {
            const char *name = json_string_value(json_object_get(item, "name"));
            const json_t *text = json_object_get(item, "template");
            if (name && strcmp(name, "default") == 0 && json_is_string(text))
                return json_string_value(text);
        }
    }
    return NULL;
}

static char *engine_token_text(const struct tokenizer *tok, int32_t id)
{
    size_t len = 0;
    const char *text = id >= 0 ? tokenizer_token_text(tok, id, &len) : NULL;
    return text && len ? xstrndup(text, len) : NULL;
}

static int engine_open_tokenizer(struct engine *e, char *err, size_t errlen)
{
    const json_t *meta = e->file->meta;
    if (e->file->format == MODEL_FORMAT_GGUF)
        return tokenizer_create_from_gguf(meta, &e->tok, err, errlen);
    const json_t *tj = json_object_get(meta, "tokenizer.json");
    if (!tj) {
        snprintf(err, errlen, "%s: no tokenizer.json in the model directory", e->file->path);
        return -1;
    }
    char *text = json_dumps(tj, JSON_COMPACT);
    if (!text) {
        snprintf(err, errlen, "%s: tokenizer.json could not be serialised", e->file->path);
        return -1;
    }
    int rc = tokenizer_create_from_hf_json(text, strlen(text), meta, &e->tok, err, errlen);
    free(text);
    return rc;
}

int engine_open(const char *path, const struct engine_options *opt, struct engine **out, char *err,
                size_t errlen)
{
    struct engine *e = xcalloc(1, sizeof *e);
    *out = NULL;
    if (model_file_open(path, &e->file, err, errlen) != 0)
        goto fail;
    if (engine_open_tokenizer(e, err, errlen) != 0)
        goto fail;
    struct model_options mo = {.threads = opt ? opt->threads : 0,
                               .max_context = opt ? opt->max_context : 0,
                               .device = opt ? opt->device : NULL,
                               .kv_cache_bytes = opt ? opt->kv_cache_bytes : 0};
    if (model_create(e->file, &mo, &e->model, err, errlen) != 0)
        goto fail;
    bool given = opt && opt->chat_template;
    const char *tmpl = given ? opt->chat_template : engine_template_text(e->file->meta);
    if (tmpl) {
        struct jinja_error jerr = {0};
        if (chat_template_create(tmpl, strlen(tmpl), NULL, &e->chat, &jerr) != 0) {
            snprintf(err, errlen, "%s: %s chat template line %d column %d: %s", path,
                     given ? "the given" : "the model's", jerr.line, jerr.column, jerr.message);
            goto fail;
        }
    }
    e->bos_text = engine_token_text(e->tok, tokenizer_bos_id(e->tok));
    e->eos_text = engine_token_text(e->tok, tokenizer_eos_id(e->tok));
    *out = e;
    return 0;
fail:
    engine_close(e);
    return -1;
}

void engine_close(struct engine *e)
{
    if (!e)
        return;
    chat_template_destroy(e->chat);
    model_destroy(e->model);
    tokenizer_destroy(e->tok);
    model_file_close(e->file);
    free(e->bos_text);
    free(e->eos_text);
    free(e);
}

int engine_render_chat(const struct engine *e, const json_t *messages, const json_t *tools,
                       bool add_generation_prompt, const json_t *extra, char **out, size_t *out_len,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!e->chat) {
        snprintf(err, errlen, "model %s has no chat template; send a raw prompt instead",
                 e->file->path);
        return -1;
    }
    struct chat_template_request req = {
            .messages = messages,
            .tools = tools,
            .add_generation_prompt = add_generation_prompt,
            .bos_token = e->bos_text,
            .eos_token = e->eos_text,
            .extra = extra,
    };
    struct jinja_error jerr = {0};
    if (chat_template_render(e->chat, &req, out, out_len, &jerr) != 0) {
        if (jerr.kind == JINJA_ERROR_RAISED)
            snprintf(err, errlen, "%s", jerr.message);
        else
            snprintf(err, errlen, "chat template failed at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.message);
        return -1;
    }
    return 0;
}

int engine_tokenize(const struct engine *e, const char *text, size_t len, bool chat,
                    struct tokenizer_ids *ids, char *err, size_t errlen)
{
    unsigned flags = chat ? TOKENIZER_ENCODE_SPECIAL : 0;
    if (!chat && tokenizer_adds_bos(e->tok))
        flags |= TOKENIZER_ENCODE_ADD_BOS;
    return tokenizer_encode(e->tok, text, len, flags, ids, err, errlen);
}
