/*
 * neuron/engine.h — one model ready to serve: weights, tokenizer and chat template together.
 *
 * Contract: engine_open() opens a model file (GGUF or HF directory), binds its weights to the
 * CPU backend, builds its tokenizer and compiles its chat template (the model's own, or the
 * one the options give instead, as llama.cpp's --chat-template-file does). Every
 * failure returns -1 with a message naming the file and what is wrong; nothing is left open.
 * The engine owns everything it opened; engine_close() frees it all (accepts NULL).
 * Thread safety: rendering and tokenising may run on any thread at any time; the model itself
 * (engine->model) runs one forward pass at a time, which the caller serialises (see generate.h).
 */
#ifndef CORTEX_NEURON_ENGINE_H
#define CORTEX_NEURON_ENGINE_H

#include "chat_template.h"
#include "model.h"
#include "model_file.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct engine_options {
    int threads;               /* CPU threads for the forward pass; < 1: all online CPUs */
    int64_t max_context;       /* tokens per sequence; < 1: the model's own limit */
    const char *chat_template; /* Jinja text used instead of the model's own template (borrowed
                                  for the call); NULL: the model's own */
    const char *device;        /* "cpu" (or NULL) or "cuda:N": where the forward pass runs */
    uint64_t kv_cache_bytes;   /* > 0: on a GPU, the paged KV cache reserved at load */
};

struct engine {
    struct model_file *file;
    struct model *model;
    struct tokenizer *tok;
    struct chat_template *chat; /* NULL when the model ships no template and none was given */
    char *bos_text;             /* the BOS token's text, or NULL */
    char *eos_text;             /* the EOS token's text, or NULL */
};

int engine_open(const char *path, const struct engine_options *opt, struct engine **out, char *err,
                size_t errlen) __attribute__((warn_unused_result));
void engine_close(struct engine *e);

/* Renders an OpenAI-shaped message list (and optional tool list) with the model's own chat
 * template. extra (may be NULL) adds template variables such as enable_thinking. On success
 * *out is a NUL-terminated string the caller frees. */
int engine_render_chat(const struct engine *e, const json_t *messages, const json_t *tools,
                       bool add_generation_prompt, const json_t *extra, char **out, size_t *out_len,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Tokenises a prompt. A rendered chat (chat = true) has its special tokens recognised and gets
 * no extra BOS (templates write their own); a raw prompt gets the BOS the tokenizer asks for and
 * treats special-token text as plain text. ids is appended to; the caller frees ids->v. */
int engine_tokenize(const struct engine *e, const char *text, size_t len, bool chat,
                    struct tokenizer_ids *ids, char *err, size_t errlen)
        __attribute__((warn_unused_result));

#endif
