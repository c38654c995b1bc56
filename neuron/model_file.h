/*
 * neuron/model_file.h — one opened model on disk: a GGUF file or a Hugging Face directory.
 *
 * Contract: model_file_open() memory-maps the weights (never copies them) and parses the
 * metadata into:
 *   - a tensor table: name -> (dtype, shape, pointer into the mapping);
 *   - the normalised model configuration (struct model_config) for the architectures Cortex runs;
 *   - the raw metadata as a jansson object (GGUF key/values, or config.json merged with
 *     tokenizer_config.json / generation_config.json for HF) for the tokenizer and chat template.
 * Tensor names are canonical Hugging Face names, the Llama-style layout that every supported
 * architecture shares:
 *   model.embed_tokens.weight, model.norm.weight, lm_head.weight (absent when tied),
 *   model.layers.N.{input_layernorm,post_attention_layernorm}.weight,
 *   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias}, .self_attn.{q,k}_norm.weight,
 *   model.layers.N.mlp.{gate,up,down}_proj.weight,
 *   model.layers.N.linear_attn.{in_proj_qkv,in_proj_z,in_proj_a,in_proj_b,conv1d,norm,
 *                               out_proj}.weight, .linear_attn.{A_log,dt_bias}   (qwen3_5)
 * HF qwen3_5 checkpoints prefix these "model.language_model." (renamed to "model."; the vision
 * tower "model.visual." is skipped; "mtp." is kept as is). GGUF names are mapped on load
 * (token_embd -> model.embed_tokens, blk.N.attn_q -> model.layers.N.self_attn.q_proj,
 * attn_norm -> input_layernorm, ffn_norm / post_attention_norm -> post_attention_layernorm,
 * output_norm -> model.norm, output -> lm_head, attn_qkv / attn_gate / ssm_alpha / ssm_beta /
 * ssm_conv1d / ssm_a / ssm_dt.bias / ssm_norm / ssm_out -> the linear_attn names); names it does
 * not know are kept unchanged. The GGUF conv1d weight [C, K] is given HF's shape [C, 1, K].
 *
 * gguf_layout is true for every tensor read from a GGUF file. What differs from HF:
 *   - llama (general.architecture "llama", which includes Mistral): the converter permuted the
 *     rows of q_proj/k_proj within each head so that RoPE on interleaved pairs (2i, 2i+1) of the
 *     GGUF weights equals HF's rotate-half (pairs i, i + d/2). config.rope_neox says which rotation
 *     to apply: false for GGUF llama, true for HF llama and for every Qwen (GGUF or HF).
 *   - qwen3_5 ("qwen35" in GGUF): every zero-centred norm (input/post-attention layernorms,
 *     model.norm, q_norm, k_norm) already holds 1 + w, so config.norm_zero_centred is false
 *     and y = x_hat * w; linear_attn.A_log holds -exp(A_log) (use it as is, not -exp of it);
 *     when value heads outnumber key heads, value heads are stored in tiled order (stored head
 *     p is HF head (p % Nk) * r + p / Nk, so it reads key head p % Nk) in in_proj_qkv's v rows,
 *     in_proj_z, in_proj_a/b, conv1d's v channels, A_log, dt_bias and out_proj's columns. A
 *     forward pass that uses "key head = p % Nk" on GGUF weights needs no other change.
 *
 * meta: for GGUF, the file's key/values as gguf.h describes them. For HF, config.json with the
 * keys only tokenizer_config.json / generation_config.json have added to it, plus
 * "tokenizer.json" (that file's parsed object, when present). Both formats put the chat template
 * text under "chat_template" (GGUF: tokenizer.chat_template; HF: chat_template.jinja, else
 * tokenizer_config.json's chat_template, the "default" entry when it is a list).
 * Shapes are in PyTorch order: shape[0] is the outermost (rows); a Linear weight is
 * [out_features, in_features], and each row is contiguous in memory.
 * Errors: every failure returns -1 with a message naming the file and the problem in err
 * (the caller provides the buffer); a malformed or truncated file never crashes.
 * The model_file owns the mapping; tensors' data pointers stay valid until model_file_close().
 */
#ifndef CORTEX_NEURON_MODEL_FILE_H
#define CORTEX_NEURON_MODEL_FILE_H

#include "dtype.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_DIMS   4
#define MODEL_MAX_LAYERS 256

enum model_arch {
    MODEL_ARCH_LLAMA,   /* Llama 2/3, SmolLM2, Mistral, Qwen2/2.5 (qkv bias), Qwen3 (q/k norm) */
    MODEL_ARCH_QWEN3_5, /* Gated DeltaNet hybrid (QWEN35.md) */
};

enum model_format { MODEL_FORMAT_GGUF, MODEL_FORMAT_HF };

enum layer_kind { LAYER_KIND_ATTENTION, LAYER_KIND_LINEAR_ATTENTION };

struct model_tensor {
    char *name; /* HF-style name */
    enum dtype type;
    int ndim;
    int64_t shape[MODEL_MAX_DIMS]; /* PyTorch order */
    const void *data;              /* inside the mapping */
    size_t nbytes;
    bool gguf_layout; /* came from GGUF: see the layout notes above */
};

struct model_config {
    enum model_arch arch;
    char arch_name[64]; /* as the file names it: "llama", "qwen2", "qwen3_5", ... */
    int64_t vocab_size;
    int64_t hidden;       /* H */
    int64_t intermediate; /* I */
    int n_layers;
    int n_heads, n_kv_heads, head_dim; /* attention */
    float rms_eps;
    float rope_theta;
    int rotary_dim; /* head_dim * partial_rotary_factor; head_dim for llama */
    bool rope_neox; /* rotate-half (NeoX/HF) vs interleaved pairs (GGUF llama only) */
    int64_t max_context;
    bool tie_embeddings;
    bool attn_qkv_bias;     /* Qwen2 */
    bool attn_qk_norm;      /* Qwen3, qwen3_5 */
    bool attn_output_gate;  /* qwen3_5 gated attention */
    bool norm_zero_centred; /* HF qwen3_5: y = x_hat * (1 + w); false for GGUF (see above) */
    /* qwen3_5 linear attention (Gated DeltaNet) */
    int lin_k_heads, lin_v_heads, lin_k_dim, lin_v_dim, lin_conv_kernel;
    enum layer_kind layer_kinds[MODEL_MAX_LAYERS];
    int32_t bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
};

struct model_file {
    char *path; /* the file or directory opened */
    enum model_format format;
    struct model_config config;
    json_t *meta; /* owned; see above */
    struct model_tensor *tensors;
    size_t n_tensors;
    uint64_t total_bytes; /* sum of tensor bytes */
    /* private: mappings, name index */
    void *priv;
};

/* Opens path (a .gguf file or an HF directory). On success *out owns everything; close it with
 * model_file_close(). On failure returns -1 and writes a message of at most errlen bytes. */
int model_file_open(const char *path, struct model_file **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void model_file_close(struct model_file *mf);
/* Reads an HF config.json object (already parsed) into *out as model_file_open() would, for
 * programs that build a model without weight files (neuron-bench). A config that does not say
 * tie_word_embeddings counts as tied. -1 with a message naming name on a bad config. */
int model_file_config_from_json(const json_t *config, const char *name, struct model_config *out,
                                char *err, size_t errlen) __attribute__((warn_unused_result));
/* Looks a tensor up by its HF name; NULL when absent. */
const struct model_tensor *model_file_tensor(const struct model_file *mf, const char *name);

#endif
