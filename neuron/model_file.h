/*
 * neuron/model_file.h — one opened model on disk: a GGUF file or a Hugging Face directory.
 *
 * Contract: model_file_open() memory-maps the weights (never copies them) and parses the
 * metadata into:
 *   - a tensor table: name -> (dtype, shape, pointer into the mapping);
 *   - the normalised model configuration (struct model_config) for the architectures Cortex runs;
 *   - the raw metadata as a jansson object (GGUF key/values, or config.json merged with
 *     tokenizer_config.json / generation_config.json for HF) for the tokenizer and chat template.
 * Tensor names are the Hugging Face names ("model.layers.0.self_attn.q_proj.weight"); GGUF names
 * ("blk.0.attn_q.weight") are mapped on load, and GGUF-specific layouts (llama's permuted q/k rows,
 * qwen3_5's +1 norm weights, -exp(A_log), reordered value heads) are recorded in the tensor's
 * `gguf_layout` flag so the model code can undo them.
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
    bool rope_neox; /* rotate-half (NeoX/HF) vs interleaved pairs */
    int64_t max_context;
    bool tie_embeddings;
    bool attn_qkv_bias;     /* Qwen2 */
    bool attn_qk_norm;      /* Qwen3, qwen3_5 */
    bool attn_output_gate;  /* qwen3_5 gated attention */
    bool norm_zero_centred; /* qwen3_5: y = x_hat * (1 + w) */
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
/* Looks a tensor up by its HF name; NULL when absent. */
const struct model_tensor *model_file_tensor(const struct model_file *mf, const char *name);

#endif
