/*
 * neuron/model_file.c — opens a model (GGUF file or Hugging Face directory) into one tensor table
 * with canonical names and a normalised struct model_config.
 *
 * Data flow: gguf.c / safetensors.c map and validate the files; this file renames the tensors
 * (GGUF names and "model.language_model." checkpoints to the canonical "model.layers.N..." names
 * documented in model_file.h), reads the architecture and its hyper-parameters from the model's
 * own metadata (GGUF keys or config.json), refuses architectures Cortex does not run, and gathers
 * the metadata the tokenizer and chat template need into one jansson object.
 */
#include "model_file.h"

#include "gguf.h"
#include "safetensors.h"
#include "xalloc.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct model_file_priv {
    struct gguf_file *gguf;
    struct safetensors_set *st;
    const struct model_tensor **by_name; /* sorted by name for lookups */
};

/* Everything the config readers need to report an error. */
struct mf_ctx {
    struct model_file *mf;
    const char *file; /* the file errors name: the .gguf or config.json */
    char *err;
    size_t errlen;
    bool config_only; /* model_file_config_from_json(): no tensors to check against */
};

static void mf_fail(struct mf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void mf_fail(struct mf_ctx *c, const char *fmt, ...)
{
    int n = snprintf(c->err, c->errlen, "%s: ", c->file);
    if (n < 0 || (size_t)n >= c->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---- tensor table ------------------------------------------------------------------------ */

static int mf_cmp_tensor(const void *a, const void *b)
{
    const struct model_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

const struct model_tensor *model_file_tensor(const struct model_file *mf, const char *name)
{
    const struct model_file_priv *p = mf->priv;
    struct model_tensor key = {.name = (char *)name};
    const struct model_tensor *kp = &key;
    const struct model_tensor *const *hit =
            bsearch(&kp, p->by_name, mf->n_tensors, sizeof *p->by_name, mf_cmp_tensor);
    return hit ? *hit : NULL;
}

static int mf_index(struct mf_ctx *c)
{
    struct model_file *mf = c->mf;
    struct model_file_priv *p = mf->priv;
    p->by_name = xmalloc((mf->n_tensors ? mf->n_tensors : 1) * sizeof *p->by_name);
    for (size_t i = 0; i < mf->n_tensors; i++) {
        p->by_name[i] = &mf->tensors[i];
        mf->total_bytes += mf->tensors[i].nbytes;
    }
    qsort(p->by_name, mf->n_tensors, sizeof *p->by_name, mf_cmp_tensor);
    for (size_t i = 1; i < mf->n_tensors; i++) {
        if (strcmp(p->by_name[i - 1]->name, p->by_name[i]->name) == 0) {
            mf_fail(c, "two tensors are both named (or renamed to) '%s'", p->by_name[i]->name);
            return -1;
        }
    }
    return 0;
}

/* GGUF per-block tensor names -> canonical suffixes. The ".weight"/".bias" ending is kept. */
static const struct {
    const char *gguf, *hf;
} mf_gguf_block_names[] = {
        {"attn_norm", "input_layernorm"},
        {"attn_q", "self_attn.q_proj"},
        {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"},
        {"attn_q_norm", "self_attn.q_norm"},
        {"attn_k_norm", "self_attn.k_norm"},
        {"ffn_norm", "post_attention_layernorm"},
        {"post_attention_norm", "post_attention_layernorm"}, /* qwen35 */
        {"ffn_gate", "mlp.gate_proj"},
        {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"},
        /* qwen35 Gated DeltaNet layers */
        {"attn_qkv", "linear_attn.in_proj_qkv"},
        {"attn_gate", "linear_attn.in_proj_z"},
        {"ssm_beta", "linear_attn.in_proj_b"},
        {"ssm_alpha", "linear_attn.in_proj_a"},
        {"ssm_conv1d", "linear_attn.conv1d"},
        {"ssm_norm", "linear_attn.norm"},
        {"ssm_out", "linear_attn.out_proj"},
};

/* Returns the canonical name for a GGUF tensor name (caller frees). Names it does not know are
 * kept unchanged so that nothing in the file is lost. */
static char *mf_gguf_name(const char *g)
{
    if (strcmp(g, "token_embd.weight") == 0)
        return xstrdup("model.embed_tokens.weight");
    if (strcmp(g, "output_norm.weight") == 0)
        return xstrdup("model.norm.weight");
    if (strcmp(g, "output.weight") == 0)
        return xstrdup("lm_head.weight");
    unsigned layer;
    int consumed = 0;
    if (sscanf(g, "blk.%u.%n", &layer, &consumed) != 1 || consumed == 0)
        return xstrdup(g);
    const char *rest = g + consumed;
    /* ssm_a is stored without a suffix; dt_bias is the bias of the (absent) dt projection */
    if (strcmp(rest, "ssm_a") == 0)
        return xasprintf("model.layers.%u.linear_attn.A_log", layer);
    if (strcmp(rest, "ssm_dt.bias") == 0 || strcmp(rest, "ssm_dt") == 0)
        return xasprintf("model.layers.%u.linear_attn.dt_bias", layer);
    const char *dot = strrchr(rest, '.');
    if (!dot)
        return xstrdup(g);
    size_t base_len = (size_t)(dot - rest);
    for (size_t i = 0; i < sizeof mf_gguf_block_names / sizeof mf_gguf_block_names[0]; i++) {
        const char *name = mf_gguf_block_names[i].gguf;
        if (strlen(name) == base_len && strncmp(rest, name, base_len) == 0)
            return xasprintf("model.layers.%u.%s%s", layer, mf_gguf_block_names[i].hf, dot);
    }
    return xstrdup(g);
}

static bool mf_has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void mf_tensors_from_gguf(struct model_file *mf, const struct gguf_file *g)
{
    mf->tensors = xcalloc(g->n_tensors ? g->n_tensors : 1, sizeof *mf->tensors);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const struct gguf_tensor *gt = &g->tensors[i];
        struct model_tensor *t = &mf->tensors[mf->n_tensors++];
        t->name = mf_gguf_name(gt->name);
        t->type = gt->type;
        t->ndim = gt->ndim;
        memcpy(t->shape, gt->shape, sizeof t->shape);
        t->data = gt->data;
        t->nbytes = gt->nbytes;
        t->gguf_layout = true;
        /* GGUF drops the conv weight's middle dimension of 1; restore HF's [C, 1, K] */
        if (mf_has_suffix(t->name, ".linear_attn.conv1d.weight") && t->ndim == 2) {
            t->shape[2] = t->shape[1];
            t->shape[1] = 1;
            t->ndim = 3;
        }
    }
}

/* Canonical name of an HF checkpoint tensor, or NULL for tensors a text model never uses. */
static char *mf_hf_name(const char *n)
{
    static const char lm_prefix[] = "model.language_model.";
    if (strncmp(n, "model.visual.", 13) == 0 || strncmp(n, "visual.", 7) == 0)
        return NULL;
    if (strncmp(n, lm_prefix, sizeof lm_prefix - 1) == 0)
        return xasprintf("model.%s", n + sizeof lm_prefix - 1);
    return xstrdup(n);
}

static void mf_tensors_from_safetensors(struct model_file *mf, const struct safetensors_set *s)
{
    mf->tensors = xcalloc(s->n_tensors ? s->n_tensors : 1, sizeof *mf->tensors);
    for (size_t i = 0; i < s->n_tensors; i++) {
        const struct safetensors_tensor *st = s->tensors[i];
        char *name = mf_hf_name(st->name);
        if (!name)
            continue;
        struct model_tensor *t = &mf->tensors[mf->n_tensors++];
        t->name = name;
        t->type = st->type;
        t->ndim = st->ndim;
        memcpy(t->shape, st->shape, sizeof t->shape);
        t->data = st->data;
        t->nbytes = st->nbytes;
    }
}

/* ---- metadata helpers -------------------------------------------------------------------- */

/* A metadata integer; a per-layer array is accepted when its non-zero entries agree (hybrid
 * models list 0 KV heads for their recurrent layers). Returns 1 found, 0 absent, -1 error. */
static int mf_json_int(struct mf_ctx *c, const json_t *v, const char *key, int64_t *out)
{
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 1;
    }
    if (json_is_array(v) && json_array_size(v) > 0) {
        int64_t val = 0;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_integer(e))
                break;
            int64_t x = json_integer_value(e);
            if (x != 0 && val != 0 && x != val) {
                mf_fail(c, "'%s' differs between layers, which is not supported", key);
                return -1;
            }
            if (x != 0)
                val = x;
        }
        if (i == json_array_size(v)) {
            *out = val;
            return 1;
        }
    }
    mf_fail(c, "'%s' must be an integer", key);
    return -1;
}

static int mf_json_num(struct mf_ctx *c, const json_t *v, const char *key, double *out)
{
    if (!v)
        return 0;
    if (!json_is_number(v)) {
        mf_fail(c, "'%s' must be a number", key);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

/* Reads an integer field into *out, checking lo <= value <= hi. A missing field is an error when
 * required, otherwise *out keeps its default. */
static int mf_get_int(struct mf_ctx *c, const json_t *v, const char *key, bool required, int64_t lo,
                      int64_t hi, int64_t *out)
{
    int64_t x;
    int found = mf_json_int(c, v, key, &x);
    if (found < 0)
        return -1;
    if (!found) {
        if (required) {
            mf_fail(c, "missing required field '%s'", key);
            return -1;
        }
        return 0;
    }
    if (x < lo || x > hi) {
        mf_fail(c, "'%s' is %lld, outside the supported range %lld..%lld", key, (long long)x,
                (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int mf_get_num(struct mf_ctx *c, const json_t *v, const char *key, bool required,
                      double *out)
{
    double x;
    int found = mf_json_num(c, v, key, &x);
    if (found < 0)
        return -1;
    if (!found) {
        if (required) {
            mf_fail(c, "missing required field '%s'", key);
            return -1;
        }
        return 0;
    }
    if (!isfinite(x) || x <= 0) {
        mf_fail(c, "'%s' must be a positive number", key);
        return -1;
    }
    *out = x;
    return 0;
}

/* Checks shared by both formats once the config is filled in. */
static int mf_check_config(struct mf_ctx *c)
{
    struct model_config *cfg = &c->mf->config;
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        mf_fail(c, "%d attention heads are not a multiple of %d KV heads", cfg->n_heads,
                cfg->n_kv_heads);
        return -1;
    }
    if (cfg->rotary_dim <= 0 || cfg->rotary_dim > cfg->head_dim || cfg->rotary_dim % 2 != 0) {
        mf_fail(c, "rotary dimension %d does not fit head dimension %d", cfg->rotary_dim,
                cfg->head_dim);
        return -1;
    }
    if (cfg->arch == MODEL_ARCH_QWEN3_5) {
        if (cfg->lin_v_heads % cfg->lin_k_heads != 0) {
            mf_fail(c, "%d linear-attention value heads are not a multiple of %d key heads",
                    cfg->lin_v_heads, cfg->lin_k_heads);
            return -1;
        }
    }

    if (c->config_only) {
        /* no tensors to read the features from: the architectures' own */
        cfg->attn_qkv_bias = strcmp(cfg->arch_name, "qwen2") == 0;
        cfg->attn_qk_norm = strcmp(cfg->arch_name, "qwen3") == 0 || cfg->arch == MODEL_ARCH_QWEN3_5;
        return 0;
    }
    const struct model_tensor *emb = model_file_tensor(c->mf, "model.embed_tokens.weight");
    if (!emb) {
        mf_fail(c, "missing tensor 'model.embed_tokens.weight' (token embeddings)");
        return -1;
    }
    if (emb->ndim != 2 || emb->shape[1] != cfg->hidden) {
        mf_fail(c, "tensor 'model.embed_tokens.weight' has the wrong shape for hidden size %lld",
                (long long)cfg->hidden);
        return -1;
    }
    if (cfg->vocab_size <= 0)
        cfg->vocab_size = emb->shape[0];
    if (emb->shape[0] != cfg->vocab_size) {
        mf_fail(c, "tensor 'model.embed_tokens.weight' has %lld rows but the vocabulary has %lld",
                (long long)emb->shape[0], (long long)cfg->vocab_size);
        return -1;
    }
    const struct model_tensor *head = model_file_tensor(c->mf, "lm_head.weight");
    if (head && !cfg->tie_embeddings &&
        (head->ndim != 2 || head->shape[0] != cfg->vocab_size || head->shape[1] != cfg->hidden)) {
        mf_fail(c, "tensor 'lm_head.weight' has the wrong shape");
        return -1;
    }
    if (!head && !cfg->tie_embeddings) {
        mf_fail(c, "missing tensor 'lm_head.weight' and the embeddings are not tied");
        return -1;
    }

    /* features that follow from which tensors exist in the first attention layer */
    for (int i = 0; i < cfg->n_layers; i++) {
        if (cfg->layer_kinds[i] != LAYER_KIND_ATTENTION)
            continue;
        char name[96];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.bias", i);
        cfg->attn_qkv_bias = model_file_tensor(c->mf, name) != NULL;
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", i);
        cfg->attn_qk_norm = model_file_tensor(c->mf, name) != NULL;
        break;
    }
    return 0;
}

/* ---- GGUF -------------------------------------------------------------------------------- */

static const json_t *mf_gguf_key(const json_t *meta, const char *arch, const char *suffix,
                                 char *key, size_t keylen)
{
    snprintf(key, keylen, "%s.%s", arch, suffix);
    return json_object_get(meta, key);
}

static int mf_gguf_int(struct mf_ctx *c, const char *arch, const char *suffix, bool required,
                       int64_t lo, int64_t hi, int64_t *out)
{
    char key[128];
    const json_t *v = mf_gguf_key(c->mf->meta, arch, suffix, key, sizeof key);
    return mf_get_int(c, v, key, required, lo, hi, out);
}

static int mf_gguf_num(struct mf_ctx *c, const char *arch, const char *suffix, bool required,
                       double *out)
{
    char key[128];
    const json_t *v = mf_gguf_key(c->mf->meta, arch, suffix, key, sizeof key);
    return mf_get_num(c, v, key, required, out);
}

static int32_t mf_token_id(const json_t *v)
{
    if (json_is_array(v))
        v = json_array_get(v, 0);
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT32_MAX)
        return (int32_t)json_integer_value(v);
    return -1;
}

static int mf_gguf_config(struct mf_ctx *c)
{
    struct model_file *mf = c->mf;
    struct model_config *cfg = &mf->config;
    const json_t *a = json_object_get(mf->meta, "general.architecture");
    if (!json_is_string(a)) {
        mf_fail(c, "missing required field 'general.architecture'");
        return -1;
    }
    const char *arch = json_string_value(a);
    if (strcmp(arch, "llama") == 0 || strcmp(arch, "qwen2") == 0 || strcmp(arch, "qwen3") == 0)
        cfg->arch = MODEL_ARCH_LLAMA;
    else if (strcmp(arch, "qwen35") == 0)
        cfg->arch = MODEL_ARCH_QWEN3_5;
    else {
        mf_fail(c, "architecture '%s' is not supported (supported: llama, qwen2, qwen3, qwen35)",
                arch);
        return -1;
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", arch);

    int64_t ctx = 0, hidden = 0, ffn = 0, layers = 0, heads = 0, kv = 0, hd = 0, rot = 0;
    double eps = 0, theta = 10000.0;
    if (mf_gguf_int(c, arch, "context_length", true, 1, INT64_MAX, &ctx) < 0 ||
        mf_gguf_int(c, arch, "embedding_length", true, 1, INT32_MAX, &hidden) < 0 ||
        mf_gguf_int(c, arch, "feed_forward_length", true, 1, INT32_MAX, &ffn) < 0 ||
        mf_gguf_int(c, arch, "block_count", true, 1, MODEL_MAX_LAYERS, &layers) < 0 ||
        mf_gguf_int(c, arch, "attention.head_count", true, 1, 65536, &heads) < 0)
        return -1;
    kv = heads;
    hd = hidden / heads;
    if (mf_gguf_int(c, arch, "attention.head_count_kv", false, 1, 65536, &kv) < 0 ||
        mf_gguf_int(c, arch, "attention.key_length", false, 1, 65536, &hd) < 0)
        return -1;
    rot = hd;
    if (mf_gguf_int(c, arch, "rope.dimension_count", false, 1, 65536, &rot) < 0 ||
        mf_gguf_num(c, arch, "attention.layer_norm_rms_epsilon", true, &eps) < 0 ||
        mf_gguf_num(c, arch, "rope.freq_base", false, &theta) < 0)
        return -1;
    if (hd <= 0) {
        mf_fail(c, "head dimension is 0 (%s.embedding_length / head count)", arch);
        return -1;
    }
    /* every value below was range-checked by mf_get_int, so the narrowing casts are safe */
    cfg->max_context = ctx;
    cfg->hidden = hidden;
    cfg->intermediate = ffn;
    cfg->n_layers = (int)layers;
    cfg->n_heads = (int)heads;
    cfg->n_kv_heads = (int)kv;
    cfg->head_dim = (int)hd;
    cfg->rotary_dim = (int)rot;
    cfg->rms_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    /* llama.cpp's converter permutes llama's q/k rows so that rotating interleaved pairs on the
     * GGUF weights equals HF's rotate-half; the Qwen converters leave the rows alone. */
    cfg->rope_neox = strcmp(arch, "llama") != 0;
    cfg->tie_embeddings = model_file_tensor(mf, "lm_head.weight") == NULL;
    cfg->vocab_size = 0; /* from the embedding rows, checked in mf_check_config */

    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_kinds[i] = LAYER_KIND_ATTENTION;
    if (cfg->arch == MODEL_ARCH_QWEN3_5) {
        int64_t kc = 0, ds = 0, groups = 0, vheads = 0, inner = 0, interval = 0;
        if (mf_gguf_int(c, arch, "ssm.conv_kernel", true, 1, 64, &kc) < 0 ||
            mf_gguf_int(c, arch, "ssm.state_size", true, 1, 65536, &ds) < 0 ||
            mf_gguf_int(c, arch, "ssm.group_count", true, 1, 65536, &groups) < 0 ||
            mf_gguf_int(c, arch, "ssm.time_step_rank", true, 1, 65536, &vheads) < 0 ||
            mf_gguf_int(c, arch, "ssm.inner_size", true, 1, INT32_MAX, &inner) < 0 ||
            mf_gguf_int(c, arch, "full_attention_interval", false, 1, MODEL_MAX_LAYERS, &interval) <
                    0)
            return -1;
        if (inner % vheads != 0) {
            mf_fail(c, "%s.ssm.inner_size %lld is not a multiple of %s.ssm.time_step_rank %lld",
                    arch, (long long)inner, arch, (long long)vheads);
            return -1;
        }
        cfg->lin_conv_kernel = (int)kc;
        cfg->lin_k_dim = (int)ds;
        cfg->lin_k_heads = (int)groups;
        cfg->lin_v_heads = (int)vheads;
        cfg->lin_v_dim = (int)(inner / vheads);
        for (int i = 0; i < cfg->n_layers; i++) {
            bool full;
            if (interval > 0) {
                full = (i + 1) % interval == 0;
            } else { /* no key: a layer is recurrent when it has the recurrent weights */
                char name[96];
                snprintf(name, sizeof name, "model.layers.%d.linear_attn.A_log", i);
                full = model_file_tensor(mf, name) == NULL;
            }
            cfg->layer_kinds[i] = full ? LAYER_KIND_ATTENTION : LAYER_KIND_LINEAR_ATTENTION;
        }
        cfg->attn_output_gate = true;
        /* the converter stored 1 + w in every zero-centred norm: the plain formula applies */
        cfg->norm_zero_centred = false;
    }

    cfg->bos_token_id = mf_token_id(json_object_get(mf->meta, "tokenizer.ggml.bos_token_id"));
    cfg->eos_token_id = mf_token_id(json_object_get(mf->meta, "tokenizer.ggml.eos_token_id"));
    cfg->pad_token_id = mf_token_id(json_object_get(mf->meta, "tokenizer.ggml.padding_token_id"));

    json_t *tmpl = json_object_get(mf->meta, "tokenizer.chat_template");
    if (json_is_string(tmpl))
        json_object_set(mf->meta, "chat_template", tmpl);
    return mf_check_config(c);
}

static int mf_open_gguf(struct model_file *mf, char *err, size_t errlen)
{
    struct model_file_priv *p = mf->priv;
    struct mf_ctx c = {.mf = mf, .file = mf->path, .err = err, .errlen = errlen};
    if (gguf_open(mf->path, &p->gguf, err, errlen) < 0)
        return -1;
    mf->format = MODEL_FORMAT_GGUF;
    mf->meta = json_incref(p->gguf->meta);
    mf_tensors_from_gguf(mf, p->gguf);
    if (mf_index(&c) < 0)
        return -1;
    return mf_gguf_config(&c);
}

/* ---- Hugging Face directories ------------------------------------------------------------ */

/* Loads dir/name as JSON. Returns 1 loaded, 0 absent (when optional), -1 error. */
static int mf_load_json(const char *dir, const char *name, bool required, json_t **out, char *err,
                        size_t errlen)
{
    char *path = xasprintf("%s/%s", dir, name);
    struct mf_ctx c = {.file = path, .err = err, .errlen = errlen};
    int rc = -1;
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT && !required) {
            rc = 0;
            goto out;
        }
        mf_fail(&c, "cannot open: %s", strerror(errno));
        goto out;
    }
    json_error_t jerr;
    *out = json_load_file(path, JSON_DECODE_ANY, &jerr);
    if (!*out) {
        mf_fail(&c, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(*out)) {
        mf_fail(&c, "not a JSON object");
        json_decref(*out);
        *out = NULL;
        goto out;
    }
    rc = 1;
out:
    free(path);
    return rc;
}

/* Reads dir/name as text into a new string; 1 read, 0 absent, -1 error. */
static int mf_load_text(const char *dir, const char *name, char **out, char *err, size_t errlen)
{
    char *path = xasprintf("%s/%s", dir, name);
    struct mf_ctx c = {.file = path, .err = err, .errlen = errlen};
    int rc = -1;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            rc = 0;
        else
            mf_fail(&c, "cannot open: %s", strerror(errno));
        goto out;
    }
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0)
            buf = xgrow(buf, &cap, cap + 1, 1);
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        mf_fail(&c, "read error");
        free(buf);
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    rc = 1;
out:
    free(path);
    return rc;
}

/* A config value: the text config first (qwen3_5 nests it under "text_config"), then the top. */
static json_t *mf_hf_get(const json_t *text, const json_t *root, const char *key)
{
    json_t *v = json_object_get(text, key);
    return v ? v : json_object_get(root, key);
}

/* rope settings sit at the top of the text config or inside rope_parameters / rope_scaling */
static json_t *mf_hf_rope(const json_t *text, const char *key)
{
    json_t *v = json_object_get(text, key);
    if (v)
        return v;
    v = json_object_get(json_object_get(text, "rope_parameters"), key);
    if (v)
        return v;
    return json_object_get(json_object_get(text, "rope_scaling"), key);
}

static int mf_hf_layer_types(struct mf_ctx *c, const json_t *text)
{
    struct model_config *cfg = &c->mf->config;
    json_t *types = json_object_get(text, "layer_types");
    if (types) {
        if (!json_is_array(types) || json_array_size(types) != (size_t)cfg->n_layers) {
            mf_fail(c, "'layer_types' must list one type for each of the %d layers", cfg->n_layers);
            return -1;
        }
        for (int i = 0; i < cfg->n_layers; i++) {
            const char *t = json_string_value(json_array_get(types, (size_t)i));
            if (t && strcmp(t, "full_attention") == 0)
                cfg->layer_kinds[i] = LAYER_KIND_ATTENTION;
            else if (t && strcmp(t, "linear_attention") == 0)
                cfg->layer_kinds[i] = LAYER_KIND_LINEAR_ATTENTION;
            else {
                mf_fail(c,
                        "'layer_types' entry %d is not 'full_attention' or "
                        "'linear_attention'",
                        i);
                return -1;
            }
        }
        return 0;
    }
    int64_t interval = 4;
    if (mf_get_int(c, json_object_get(text, "full_attention_interval"), "full_attention_interval",
                   false, 1, MODEL_MAX_LAYERS, &interval) < 0)
        return -1;
    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_kinds[i] =
                (i + 1) % interval == 0 ? LAYER_KIND_ATTENTION : LAYER_KIND_LINEAR_ATTENTION;
    return 0;
}

static int mf_hf_config(struct mf_ctx *c, const json_t *root, const json_t *gen)
{
    struct model_config *cfg = &c->mf->config;
    const char *type = json_string_value(json_object_get(root, "model_type"));
    if (!type) {
        mf_fail(c, "missing required field 'model_type'");
        return -1;
    }
    if (strcmp(type, "llama") == 0 || strcmp(type, "mistral") == 0 || strcmp(type, "qwen2") == 0 ||
        strcmp(type, "qwen3") == 0)
        cfg->arch = MODEL_ARCH_LLAMA;
    else if (strcmp(type, "qwen3_5") == 0 || strcmp(type, "qwen3_5_text") == 0)
        cfg->arch = MODEL_ARCH_QWEN3_5;
    else {
        mf_fail(c,
                "architecture '%s' is not supported (supported: llama, mistral, qwen2, qwen3, "
                "qwen3_5)",
                type);
        return -1;
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", type);
    const json_t *text = json_object_get(root, "text_config");
    if (!json_is_object(text))
        text = root;

    int64_t vocab = 0, hidden = 0, ffn = 0, layers = 0, heads = 0, kv = 0, hd = 0, ctx = 0;
    double eps = 0, theta = 10000.0, partial = 1.0;
    if (mf_get_int(c, mf_hf_get(text, root, "vocab_size"), "vocab_size", true, 1, INT32_MAX,
                   &vocab) < 0 ||
        mf_get_int(c, json_object_get(text, "hidden_size"), "hidden_size", true, 1, INT32_MAX,
                   &hidden) < 0 ||
        mf_get_int(c, json_object_get(text, "intermediate_size"), "intermediate_size", true, 1,
                   INT32_MAX, &ffn) < 0 ||
        mf_get_int(c, json_object_get(text, "num_hidden_layers"), "num_hidden_layers", true, 1,
                   MODEL_MAX_LAYERS, &layers) < 0 ||
        mf_get_int(c, json_object_get(text, "num_attention_heads"), "num_attention_heads", true, 1,
                   65536, &heads) < 0 ||
        mf_get_int(c, json_object_get(text, "max_position_embeddings"), "max_position_embeddings",
                   true, 1, INT64_MAX, &ctx) < 0 ||
        mf_get_num(c, json_object_get(text, "rms_norm_eps"), "rms_norm_eps", true, &eps) < 0)
        return -1;
    kv = heads;
    hd = hidden / heads;
    const json_t *jhd = json_object_get(text, "head_dim");
    if (mf_get_int(c, json_object_get(text, "num_key_value_heads"), "num_key_value_heads", false, 1,
                   65536, &kv) < 0 ||
        mf_get_int(c, json_is_null(jhd) ? NULL : jhd, "head_dim", false, 1, 65536, &hd) < 0 ||
        mf_get_num(c, mf_hf_rope(text, "rope_theta"), "rope_theta", false, &theta) < 0 ||
        mf_get_num(c, mf_hf_rope(text, "partial_rotary_factor"), "partial_rotary_factor", false,
                   &partial) < 0)
        return -1;
    if (hd <= 0 || partial > 1.0) {
        mf_fail(c, "head_dim or partial_rotary_factor out of range");
        return -1;
    }
    /* every value below was range-checked by mf_get_int, so the narrowing casts are safe */
    cfg->vocab_size = vocab;
    cfg->hidden = hidden;
    cfg->intermediate = ffn;
    cfg->n_layers = (int)layers;
    cfg->n_heads = (int)heads;
    cfg->n_kv_heads = (int)kv;
    cfg->head_dim = (int)hd;
    cfg->rotary_dim = (int)((double)hd * partial);
    cfg->rms_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    cfg->rope_neox = true;
    cfg->max_context = ctx;
    json_t *tie = mf_hf_get(text, root, "tie_word_embeddings");
    cfg->tie_embeddings =
            json_is_true(tie) || (!tie && !model_file_tensor(c->mf, "lm_head.weight"));
    /* a tied model may still ship lm_head (a copy); an untied one must have it */
    if (!c->config_only && !cfg->tie_embeddings && json_is_false(tie) &&
        !model_file_tensor(c->mf, "lm_head.weight")) {
        mf_fail(c, "tie_word_embeddings is false but the checkpoint has no lm_head.weight");
        return -1;
    }

    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_kinds[i] = LAYER_KIND_ATTENTION;
    if (cfg->arch == MODEL_ARCH_QWEN3_5) {
        int64_t kh = 0, vh = 0, kd = 0, vd = 0, kc = 0;
        if (mf_get_int(c, json_object_get(text, "linear_num_key_heads"), "linear_num_key_heads",
                       true, 1, 65536, &kh) < 0 ||
            mf_get_int(c, json_object_get(text, "linear_num_value_heads"), "linear_num_value_heads",
                       true, 1, 65536, &vh) < 0 ||
            mf_get_int(c, json_object_get(text, "linear_key_head_dim"), "linear_key_head_dim", true,
                       1, 65536, &kd) < 0 ||
            mf_get_int(c, json_object_get(text, "linear_value_head_dim"), "linear_value_head_dim",
                       true, 1, 65536, &vd) < 0 ||
            mf_get_int(c, json_object_get(text, "linear_conv_kernel_dim"), "linear_conv_kernel_dim",
                       true, 1, 64, &kc) < 0 ||
            mf_hf_layer_types(c, text) < 0)
            return -1;
        cfg->lin_k_heads = (int)kh;
        cfg->lin_v_heads = (int)vh;
        cfg->lin_k_dim = (int)kd;
        cfg->lin_v_dim = (int)vd;
        cfg->lin_conv_kernel = (int)kc;
        json_t *gate = json_object_get(text, "attn_output_gate");
        cfg->attn_output_gate = gate ? json_is_true(gate) : true;
        cfg->norm_zero_centred = true;
    }

    /* generation_config.json is what HF generation uses, so its ids win */
    const char *ids[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    int32_t *dst[3] = {&cfg->bos_token_id, &cfg->eos_token_id, &cfg->pad_token_id};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(gen, ids[i]);
        if (!v)
            v = mf_hf_get(text, root, ids[i]);
        *dst[i] = mf_token_id(v);
    }
    return mf_check_config(c);
}

/* tokenizer_config.json's chat_template: a string, or a list of {name, template} */
static json_t *mf_hf_tokenizer_template(const json_t *tok_cfg)
{
    json_t *t = json_object_get(tok_cfg, "chat_template");
    if (json_is_string(t))
        return t;
    if (!json_is_array(t))
        return NULL;
    size_t i;
    json_t *e, *first = NULL;
    json_array_foreach(t, i, e)
    {
        json_t *tmpl = json_object_get(e, "template");
        if (!json_is_string(tmpl))
            continue;
        if (!first)
            first = tmpl;
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name && strcmp(name, "default") == 0)
            return tmpl;
    }
    return first;
}

static int mf_open_hf(struct model_file *mf, char *err, size_t errlen)
{
    struct model_file_priv *p = mf->priv;
    const char *dir = mf->path;
    char *config_path = xasprintf("%s/config.json", dir);
    struct mf_ctx c = {.mf = mf, .file = config_path, .err = err, .errlen = errlen};
    json_t *config = NULL, *tok_cfg = NULL, *gen = NULL, *tok = NULL;
    char *jinja = NULL;
    int rc = -1;
    mf->format = MODEL_FORMAT_HF;

    if (mf_load_json(dir, "config.json", true, &config, err, errlen) < 0 ||
        mf_load_json(dir, "tokenizer_config.json", false, &tok_cfg, err, errlen) < 0 ||
        mf_load_json(dir, "generation_config.json", false, &gen, err, errlen) < 0 ||
        mf_load_json(dir, "tokenizer.json", false, &tok, err, errlen) < 0 ||
        mf_load_text(dir, "chat_template.jinja", &jinja, err, errlen) < 0)
        goto out;
    if (safetensors_dir_open(dir, &p->st, err, errlen) < 0)
        goto out;

    /* meta: config.json, then keys only the tokenizer / generation configs have */
    mf->meta = json_deep_copy(config);
    if (tok_cfg)
        json_object_update_missing(mf->meta, tok_cfg);
    if (gen)
        json_object_update_missing(mf->meta, gen);
    if (tok)
        json_object_set(mf->meta, "tokenizer.json", tok);
    if (jinja) {
        json_t *s = json_string(jinja);
        if (!s) {
            char *path = xasprintf("%s/chat_template.jinja", dir);
            struct mf_ctx jc = {.file = path, .err = err, .errlen = errlen};
            mf_fail(&jc, "not valid UTF-8 text");
            free(path);
            goto out;
        }
        json_object_set_new(mf->meta, "chat_template", s);
    } else {
        json_t *tmpl = mf_hf_tokenizer_template(tok_cfg);
        if (tmpl)
            json_object_set(mf->meta, "chat_template", tmpl);
    }

    mf_tensors_from_safetensors(mf, p->st);
    if (mf_index(&c) < 0 || mf_hf_config(&c, config, gen) < 0)
        goto out;
    rc = 0;
out:
    json_decref(config);
    json_decref(tok_cfg);
    json_decref(gen);
    json_decref(tok);
    free(jinja);
    free(config_path);
    return rc;
}

/* ---- open / close ------------------------------------------------------------------------ */

int model_file_config_from_json(const json_t *config, const char *name, struct model_config *out,
                                char *err, size_t errlen)
{
    struct model_file_priv priv = {0};
    struct model_file mf = {.path = (char *)name, .priv = &priv};
    mf.config.bos_token_id = mf.config.eos_token_id = mf.config.pad_token_id = -1;
    struct mf_ctx c = {.mf = &mf, .file = name, .err = err, .errlen = errlen, .config_only = true};
    if (mf_hf_config(&c, config, NULL) < 0)
        return -1;
    *out = mf.config;
    return 0;
}

int model_file_open(const char *path, struct model_file **out, char *err, size_t errlen)
{
    struct model_file *mf = xcalloc(1, sizeof *mf);
    mf->path = xstrdup(path);
    mf->priv = xcalloc(1, sizeof(struct model_file_priv));
    mf->config.bos_token_id = mf->config.eos_token_id = mf->config.pad_token_id = -1;
    struct mf_ctx c = {.mf = mf, .file = path, .err = err, .errlen = errlen};
    struct stat st;
    int rc;
    if (stat(path, &st) < 0) {
        mf_fail(&c, "cannot open: %s", strerror(errno));
        rc = -1;
    } else if (S_ISDIR(st.st_mode)) {
        rc = mf_open_hf(mf, err, errlen);
    } else {
        rc = mf_open_gguf(mf, err, errlen);
    }
    if (rc < 0) {
        model_file_close(mf);
        return -1;
    }
    *out = mf;
    return 0;
}

void model_file_close(struct model_file *mf)
{
    if (!mf)
        return;
    struct model_file_priv *p = mf->priv;
    if (p) {
        gguf_close(p->gguf);
        safetensors_set_close(p->st);
        free(p->by_name);
        free(p);
    }
    for (size_t i = 0; i < mf->n_tensors; i++)
        free(mf->tensors[i].name);
    free(mf->tensors);
    json_decref(mf->meta);
    free(mf->path);
    free(mf);
}
