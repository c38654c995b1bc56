/*
 * neuron/chat_template.h — renders a chat request with the model's own Jinja chat template.
 *
 * Contract: chat_template_create() compiles a template once (from GGUF tokenizer.chat_template or
 * the HF chat_template.jinja / tokenizer_config.json text); chat_template_render() turns an
 * OpenAI-shaped request into the prompt text exactly as Hugging Face transformers'
 * apply_chat_template(tokenize=False) would: the template sees `messages`, `tools` (none when the
 * request has none), `documents` (none), `add_generation_prompt`, `bos_token` / `eos_token` (when
 * the model has them) and any extra keyword variables (e.g. enable_thinking).
 * Before rendering, messages get the normalisation OpenAI-compatible servers apply
 * (chat_template_normalize_messages()). Templates are untrusted: every failure, including the
 * template's own raise_exception(), returns -1 with a struct jinja_error; nothing crashes.
 */
#ifndef CORTEX_NEURON_CHAT_TEMPLATE_H
#define CORTEX_NEURON_CHAT_TEMPLATE_H

#include "jinja.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct chat_template;

struct chat_template_request {
    const json_t *messages; /* array of {role, content, tool_calls?, tool_call_id?, ...} */
    const json_t *tools;    /* OpenAI tool list, or NULL */
    bool add_generation_prompt;
    const char *bos_token; /* NULL when the model has none (the variable stays undefined) */
    const char *eos_token;
    const json_t *extra; /* object of additional template variables, or NULL */
};

/* Compiles template text (copied). opt may be NULL for Hugging Face's settings. On failure returns
 * -1 with a syntax error in *err. */
int chat_template_create(const char *text, size_t len, const struct jinja_options *opt,
                         struct chat_template **out, struct jinja_error *err)
        __attribute__((warn_unused_result));
void chat_template_destroy(struct chat_template *ct);

/* Renders req. On success *out is a NUL-terminated prompt the caller frees (length in *out_len
 * when out_len is not NULL). On failure returns -1, *out is NULL and *err tells why; a template's
 * raise_exception(msg) gives JINJA_ERROR_RAISED with msg as the message. */
int chat_template_render(const struct chat_template *ct, const struct chat_template_request *req,
                         char **out, size_t *out_len, struct jinja_error *err)
        __attribute__((warn_unused_result));

/* One-shot form: compile text, render req, free the compiled template. */
int chat_template_render_text(const char *text, const struct chat_template_request *req, char **out,
                              size_t *out_len, struct jinja_error *err)
        __attribute__((warn_unused_result));

/* Finds the chat template text in a model's metadata (struct model_file's meta): the GGUF key
 * "tokenizer.chat_template", or tokenizer_config.json's "chat_template", which is either a string
 * or a list of {"name", "template"}; from a list, "tool_use" is chosen when want_tools is set and
 * present (as transformers does), else "default", else the first. Returns a borrowed string, or
 * NULL when the model has no template. */
const char *chat_template_find(const json_t *meta, bool want_tools);

/* Returns a new array (the caller decrefs) with the request normalisation applied:
 *   - tool_calls[].function.arguments that is a JSON string holding an object becomes that
 *     object (templates such as Qwen's iterate `arguments|items` or print it with tojson);
 *   - an assistant message with null content gets content "";
 *   - a content list made only of {"type": "text", "text": ...} parts becomes their
 *     concatenation (what Qwen3.5's own template does with such lists).
 * Anything else is passed through unchanged. messages that is not an array is returned as is. */
json_t *chat_template_normalize_messages(const json_t *messages);

#endif
