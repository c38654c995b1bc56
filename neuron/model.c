/*
 * neuron/model.c — binding a model file's weights, per-sequence state, the forward driver and
 * the blocks every architecture shares (attention, MLP). See model.h.
 *
 * Data flow of model_forward(): token ids -> embedding rows -> for each layer, the
 * architecture's layer function updates the residual stream x [n, H] in place -> final norm of
 * the rows whose logits are wanted -> lm_head -> logits.
 */
#include "model.h"

#include "model_internal.h"
#include "xalloc.h"

#ifdef CORTEX_HAVE_CUDA
#include "cuda_model.h"
#endif

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int model_fail(const struct model *m, char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return -1;
    int n = snprintf(err, errlen, "%s: ", m->mf->path);
    if (n < 0 || (size_t)n >= errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- binding ----------------------------------------------------------------------------- */

float *model_buf(struct model *m, enum model_buf which, size_t n)
{
    if (m->buf_cap[which] < n) {
        free(m->buf[which]);
        m->buf[which] = xmalloc(n * sizeof(float));
        m->buf_cap[which] = n;
    }
    return m->buf[which];
}

static int64_t model_tensor_elems(const struct model_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int model_bind_matrix(struct model *m, const char *name, int64_t rows, int64_t cols,
                      struct cpu_matrix *out, char *err, size_t errlen)
{
    const struct model_tensor *t = model_file_tensor(m->mf, name);
    if (!t)
        return model_fail(m, err, errlen, "tensor %s is missing", name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return model_fail(m, err, errlen,
                          "tensor %s has shape [%lld, %lld] (%d dims), expected "
                          "[%lld, %lld]",
                          name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                          t->ndim, (long long)rows, (long long)cols);
    if ((unsigned)t->type >= DTYPE_COUNT || cols % (int64_t)dtype_block_elems(t->type) != 0)
        return model_fail(m, err, errlen, "tensor %s: type %s with %lld columns is not supported",
                          name, dtype_name(t->type) ? dtype_name(t->type) : "?", (long long)cols);
    *out = cpu_matrix_make(t->type, rows, cols, t->data);
    /* The kernels read whole elements / block scales; safetensors data can sit at any offset. */
    size_t align = t->type == DTYPE_F32 ? 4 : 2;
    if ((uintptr_t)t->data % align != 0) {
        void *copy = xmalloc(out->row_bytes * (size_t)rows);
        memcpy(copy, t->data, out->row_bytes * (size_t)rows);
        m->owned = xrealloc(m->owned, (m->n_owned + 1) * sizeof(void *));
        m->owned[m->n_owned++] = copy;
        out->data = copy;
    }
    return 0;
}

int model_bind_vector(struct model *m, const char *name, int64_t n, bool optional, float **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    const struct model_tensor *t = model_file_tensor(m->mf, name);
    if (!t)
        return optional ? 0 : model_fail(m, err, errlen, "tensor %s is missing", name);
    if (model_tensor_elems(t) != n)
        return model_fail(m, err, errlen, "tensor %s has %lld elements, expected %lld", name,
                          (long long)model_tensor_elems(t), (long long)n);
    if (t->type != DTYPE_F32 && t->type != DTYPE_F16 && t->type != DTYPE_BF16)
        return model_fail(m, err, errlen, "tensor %s: type %s is not supported for a vector", name,
                          dtype_name(t->type) ? dtype_name(t->type) : "?");
    *out = xmalloc(sizeof(float) * (size_t)n);
    dtype_dequant_row(t->type, t->data, *out, (size_t)n);
    return 0;
}

int model_bind_attention(struct model *m, int l, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    int64_t H = c->hidden, hd = c->head_dim;
    int64_t q_rows = (int64_t)c->n_heads * hd * (c->attn_output_gate ? 2 : 1);
    int64_t kv_rows = (int64_t)c->n_kv_heads * hd;
    char name[160];
    LAYER_NAME(name, l, "self_attn.q_proj.weight");
    if (model_bind_matrix(m, name, q_rows, H, &ly->wq, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.k_proj.weight");
    if (model_bind_matrix(m, name, kv_rows, H, &ly->wk, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.v_proj.weight");
    if (model_bind_matrix(m, name, kv_rows, H, &ly->wv, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.o_proj.weight");
    if (model_bind_matrix(m, name, H, (int64_t)c->n_heads * hd, &ly->wo, err, errlen))
        return -1;
    /* biases: Qwen2 always has q/k/v ones; any Llama-family file may carry them */
    LAYER_NAME(name, l, "self_attn.q_proj.bias");
    if (model_bind_vector(m, name, q_rows, !c->attn_qkv_bias, &ly->bq, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.k_proj.bias");
    if (model_bind_vector(m, name, kv_rows, !c->attn_qkv_bias, &ly->bk, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.v_proj.bias");
    if (model_bind_vector(m, name, kv_rows, !c->attn_qkv_bias, &ly->bv, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.o_proj.bias");
    if (model_bind_vector(m, name, H, true, &ly->bo, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.q_norm.weight");
    if (model_bind_vector(m, name, hd, !c->attn_qk_norm, &ly->q_norm, err, errlen))
        return -1;
    LAYER_NAME(name, l, "self_attn.k_norm.weight");
    if (model_bind_vector(m, name, hd, !c->attn_qk_norm, &ly->k_norm, err, errlen))
        return -1;
    return 0;
}

int model_bind_mlp(struct model *m, int l, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    char name[160];
    LAYER_NAME(name, l, "input_layernorm.weight");
    if (model_bind_vector(m, name, c->hidden, false, &ly->attn_norm, err, errlen))
        return -1;
    LAYER_NAME(name, l, "post_attention_layernorm.weight");
    if (model_bind_vector(m, name, c->hidden, false, &ly->ffn_norm, err, errlen))
        return -1;
    LAYER_NAME(name, l, "mlp.gate_proj.weight");
    if (model_bind_matrix(m, name, c->intermediate, c->hidden, &ly->gate, err, errlen))
        return -1;
    LAYER_NAME(name, l, "mlp.up_proj.weight");
    if (model_bind_matrix(m, name, c->intermediate, c->hidden, &ly->up, err, errlen))
        return -1;
    LAYER_NAME(name, l, "mlp.down_proj.weight");
    if (model_bind_matrix(m, name, c->hidden, c->intermediate, &ly->down, err, errlen))
        return -1;
    return 0;
}

#define MODEL_MAX_GPUS 8 /* CUDA_MODEL_MAX_TP */

/* The CUDA ordinals a device name picks into ord[]: "cuda:N" one GPU, "cuda:N,M,..." a
 * tensor-parallel model over those GPUs (distinct, at most MODEL_MAX_GPUS). Returns their
 * count, 0 for the CPU ("cpu" or NULL), -1 when malformed. */
static int model_parse_device(const char *device, int ord[MODEL_MAX_GPUS])
{
    if (!device || strcmp(device, "cpu") == 0)
        return 0;
    if (strncmp(device, "cuda:", 5) != 0)
        return -1;
    const char *s = device + 5;
    int n = 0;
    for (;;) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 1023 || n == MODEL_MAX_GPUS || (*end != '\0' && *end != ','))
            return -1;
        for (int i = 0; i < n; i++)
            if (ord[i] == v)
                return -1;
        ord[n++] = (int)v;
        if (*end == '\0')
            return n;
        s = end + 1;
    }
}

/* model_create() for GPUs: the CUDA backend owns the weights and the sequence state. */
static int model_create_gpu(struct model *m, const int *ord, int n_gpus,
                            const struct model_options *opt, char *err, size_t errlen)
{
#ifdef CORTEX_HAVE_CUDA
    struct cuda_model_options co = {
            .device = ord[0], .max_context = opt->max_context, .cache_bytes = opt->kv_cache_bytes};
    if (n_gpus > 1) {
        co.tp = n_gpus;
        for (int i = 0; i < n_gpus; i++)
            co.devices[i] = ord[i];
    }
    if (cuda_model_create(m->mf, &co, &m->gpu, err, errlen))
        return -1;
    m->max_context = cuda_model_max_context(m->gpu);
    return 0;
#else
    (void)ord;
    (void)n_gpus;
    (void)opt;
    return model_fail(m, err, errlen, "device %s: this build has no CUDA backend", m->device);
#endif
}

int model_create(const struct model_file *mf, const struct model_options *opt, struct model **out,
                 char *err, size_t errlen)
{
    *out = NULL;
    struct model *m = xcalloc(1, sizeof(*m));
    m->mf = mf;
    m->cfg = mf->config;
    const struct model_config *c = &m->cfg;
    int ord[MODEL_MAX_GPUS];
    int n_gpus = model_parse_device(opt ? opt->device : NULL, ord);
    if (n_gpus < 0) {
        model_fail(m, err, errlen,
                   "unknown device '%s' (expected \"cpu\", \"cuda:N\" or \"cuda:N,M,...\")",
                   opt->device);
        goto fail;
    }
    if (n_gpus > 0) {
        snprintf(m->device, sizeof(m->device), "%s", opt->device);
        if (model_create_gpu(m, ord, n_gpus, opt, err, errlen))
            goto fail;
        *out = m;
        return 0;
    }
    snprintf(m->device, sizeof(m->device), "cpu");

    if (c->arch != MODEL_ARCH_LLAMA && c->arch != MODEL_ARCH_QWEN3_5) {
        model_fail(m, err, errlen, "architecture %s is not supported by the CPU backend",
                   c->arch_name);
        goto fail;
    }
    if (c->n_layers < 1 || c->n_layers > MODEL_MAX_LAYERS || c->hidden < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0 || c->head_dim < 2 ||
        c->rotary_dim < 2 || c->rotary_dim > c->head_dim || c->vocab_size < 1) {
        model_fail(m, err, errlen,
                   "inconsistent attention configuration (heads %d/%d, head "
                   "dim %d, rotary dim %d)",
                   c->n_heads, c->n_kv_heads, c->head_dim, c->rotary_dim);
        goto fail;
    }
    m->max_context = opt && opt->max_context > 0 ? opt->max_context : c->max_context;
    if (m->max_context < 1)
        m->max_context = 4096;
    int threads = opt ? opt->threads : 0;
    if (threads < 1) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    m->tp = threadpool_create(threads);
    if (!m->tp) {
        model_fail(m, err, errlen, "cannot start %d threads", threads);
        goto fail;
    }

    m->embed = model_file_tensor(mf, "model.embed_tokens.weight");
    if (!m->embed || m->embed->ndim != 2 || m->embed->shape[0] != c->vocab_size ||
        m->embed->shape[1] != c->hidden) {
        model_fail(m, err, errlen,
                   "tensor model.embed_tokens.weight is missing or not [%lld, "
                   "%lld]",
                   (long long)c->vocab_size, (long long)c->hidden);
        goto fail;
    }
    const char *head = model_file_tensor(mf, "lm_head.weight") ? "lm_head.weight"
                                                               : "model.embed_tokens.weight";
    if (!c->tie_embeddings && strcmp(head, "lm_head.weight") != 0) {
        model_fail(m, err, errlen, "tensor lm_head.weight is missing (embeddings not tied)");
        goto fail;
    }
    if (model_bind_matrix(m, head, c->vocab_size, c->hidden, &m->lm_head, err, errlen))
        goto fail;
    if (model_bind_vector(m, "model.norm.weight", c->hidden, false, &m->final_norm, err, errlen))
        goto fail;
    m->inv_freq = xmalloc(sizeof(float) * (size_t)(c->rotary_dim / 2));
    cpu_rope_inv_freq(m->inv_freq, c->rotary_dim, c->rope_theta);

    m->layers = xcalloc((size_t)c->n_layers, sizeof(struct model_layer));
    for (int l = 0; l < c->n_layers; l++) {
        int rc = c->arch == MODEL_ARCH_QWEN3_5 ? qwen35_bind_layer(m, l, err, errlen)
                                               : llama_bind_layer(m, l, err, errlen);
        if (rc)
            goto fail;
    }
    *out = m;
    return 0;
fail:
    model_destroy(m);
    return -1;
}

void model_destroy(struct model *m)
{
    if (!m)
        return;
#ifdef CORTEX_HAVE_CUDA
    cuda_model_destroy(m->gpu);
#endif
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            struct model_layer *ly = &m->layers[l];
            float *vecs[] = {ly->attn_norm, ly->ffn_norm, ly->bq,      ly->bk,
                             ly->bv,        ly->bo,       ly->q_norm,  ly->k_norm,
                             ly->conv_w,    ly->neg_a,    ly->dt_bias, ly->lin_norm};
            for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++)
                free(vecs[i]);
        }
        free(m->layers);
    }
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    for (int i = 0; i < MODEL_BUF_COUNT; i++)
        free(m->buf[i]);
    free(m->final_norm);
    free(m->inv_freq);
    threadpool_destroy(m->tp);
    free(m);
}

const struct model_config *model_config(const struct model *m)
{
    return &m->cfg;
}

int64_t model_max_context(const struct model *m)
{
    return m->max_context;
}

int model_threads(const struct model *m)
{
    return threadpool_size(m->tp);
}

const char *model_device(const struct model *m)
{
    return m->device;
}

uint64_t model_device_weight_bytes(const struct model *m)
{
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu)
        return cuda_model_weight_bytes(m->gpu);
#endif
    return 0;
}

/* ---- sequences --------------------------------------------------------------------------- */

static int64_t model_conv_dim(const struct model_config *c)
{
    return 2 * (int64_t)c->lin_k_heads * c->lin_k_dim + (int64_t)c->lin_v_heads * c->lin_v_dim;
}

struct model_seq *model_seq_create(struct model *m)
{
    const struct model_config *c = &m->cfg;
    struct model_seq *s = xcalloc(1, sizeof(*s));
    s->m = m;
    s->gpu_slot = -1;
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu) {
        char err[256];
        if (cuda_model_slot_acquire(m->gpu, &s->gpu_slot, err, sizeof(err))) {
            fprintf(stderr, "model_seq_create: %s\n", err);
            free(s);
            return NULL;
        }
        return s;
    }
#endif
    s->layers = xcalloc((size_t)c->n_layers, sizeof(struct model_seq_layer));
    for (int l = 0; l < c->n_layers; l++) {
        if (m->layers[l].kind != LAYER_KIND_LINEAR_ATTENTION)
            continue;
        s->layers[l].conv =
                xcalloc((size_t)((c->lin_conv_kernel - 1) * model_conv_dim(c)), sizeof(float));
        s->layers[l].ssm =
                xcalloc((size_t)c->lin_v_heads * (size_t)c->lin_k_dim * (size_t)c->lin_v_dim,
                        sizeof(float));
    }
    return s;
}

void model_seq_destroy(struct model_seq *s)
{
    if (!s)
        return;
#ifdef CORTEX_HAVE_CUDA
    if (s->m->gpu)
        cuda_model_slot_release(s->m->gpu, s->gpu_slot);
#endif
    for (int l = 0; s->layers && l < s->m->cfg.n_layers; l++) {
        free(s->layers[l].k);
        free(s->layers[l].v);
        free(s->layers[l].conv);
        free(s->layers[l].ssm);
    }
    free(s->layers);
    free(s);
}

void model_seq_reset(struct model_seq *s)
{
    const struct model_config *c = &s->m->cfg;
    s->n_past = 0;
#ifdef CORTEX_HAVE_CUDA
    if (s->m->gpu) {
        char err[256];
        /* a failed memset means a broken device, which the next forward reports */
        if (cuda_model_slot_reset(s->m->gpu, s->gpu_slot, err, sizeof(err)))
            fprintf(stderr, "model_seq_reset: %s\n", err);
        return;
    }
#endif
    for (int l = 0; l < c->n_layers; l++) {
        if (s->layers[l].conv)
            memset(s->layers[l].conv, 0,
                   sizeof(float) * (size_t)((c->lin_conv_kernel - 1) * model_conv_dim(c)));
        if (s->layers[l].ssm)
            memset(s->layers[l].ssm, 0,
                   sizeof(float) * (size_t)c->lin_v_heads * (size_t)c->lin_k_dim *
                           (size_t)c->lin_v_dim);
    }
}

int64_t model_seq_length(const struct model_seq *s)
{
    return s->n_past;
}

uint64_t model_seq_memory_bytes(const struct model_seq *s)
{
    const struct model_config *c = &s->m->cfg;
#ifdef CORTEX_HAVE_CUDA
    if (s->m->gpu)
        return cuda_model_slot_bytes(s->m->gpu, s->gpu_slot);
#endif
    uint64_t kv_row = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim * sizeof(float);
    uint64_t conv = (uint64_t)((c->lin_conv_kernel - 1) * model_conv_dim(c)) * sizeof(float);
    uint64_t ssm = (uint64_t)c->lin_v_heads * (uint64_t)c->lin_k_dim * (uint64_t)c->lin_v_dim *
                   sizeof(float);
    uint64_t bytes = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_seq_layer *sl = &s->layers[l];
        if (sl->k)
            bytes += kv_row * (uint64_t)s->cap;
        if (sl->v)
            bytes += kv_row * (uint64_t)s->cap;
        if (sl->conv)
            bytes += conv;
        if (sl->ssm)
            bytes += ssm;
    }
    return bytes;
}

/* Makes room in s's KV caches for need positions (doubling, capped at max_context). */
static void model_seq_reserve(struct model_seq *s, int64_t need)
{
    if (need <= s->cap)
        return;
    struct model *m = s->m;
    int64_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > m->max_context)
        cap = m->max_context;
    size_t row = (size_t)m->cfg.n_kv_heads * (size_t)m->cfg.head_dim * sizeof(float);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (m->layers[l].kind != LAYER_KIND_ATTENTION)
            continue;
        s->layers[l].k = xrealloc(s->layers[l].k, row * (size_t)cap);
        s->layers[l].v = xrealloc(s->layers[l].v, row * (size_t)cap);
    }
    s->cap = cap;
}

/* ---- shared blocks ----------------------------------------------------------------------- */

void model_norm_rows(const struct model *m, float *y, const float *x, const float *w,
                     int64_t n_rows)
{
    int64_t H = m->cfg.hidden;
    for (int64_t r = 0; r < n_rows; r++)
        cpu_rmsnorm(y + r * H, x + r * H, w, H, m->cfg.rms_eps, m->cfg.norm_zero_centred);
}

static void model_add_bias(float *y, const float *bias, int64_t n_rows, int64_t n)
{
    if (!bias)
        return;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] += bias[i];
}

void model_block_attention(struct model *m, int l, const struct model_batch *b, const float *xn,
                           float *out)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    int64_t n = b->n_rows, hd = c->head_dim;
    int64_t q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    bool gated = c->attn_output_gate;

    float *qfull = model_buf(m, MODEL_BUF_QFULL, (size_t)(n * ly->wq.rows));
    float *k = model_buf(m, MODEL_BUF_K, (size_t)(n * kv_dim));
    float *v = model_buf(m, MODEL_BUF_V, (size_t)(n * kv_dim));
    const struct cpu_matrix *w[3] = {&ly->wq, &ly->wk, &ly->wv};
    float *y[3] = {qfull, k, v};
    cpu_matmul_multi(m->tp, 3, w, xn, n, y);
    model_add_bias(qfull, ly->bq, n, ly->wq.rows);
    model_add_bias(k, ly->bk, n, kv_dim);
    model_add_bias(v, ly->bv, n, kv_dim);

    /* the gated q projection holds, per head, [query hd | gate hd] */
    float *q = qfull, *gate = NULL;
    if (gated) {
        q = model_buf(m, MODEL_BUF_Q, (size_t)(n * q_dim));
        gate = model_buf(m, MODEL_BUF_GATE, (size_t)(n * q_dim));
        for (int64_t r = 0; r < n; r++)
            for (int h = 0; h < c->n_heads; h++) {
                const float *src = qfull + r * 2 * q_dim + h * 2 * hd;
                memcpy(q + r * q_dim + h * hd, src, sizeof(float) * (size_t)hd);
                memcpy(gate + r * q_dim + h * hd, src + hd, sizeof(float) * (size_t)hd);
            }
    }
    for (int64_t r = 0; r < n; r++) {
        if (ly->q_norm)
            for (int h = 0; h < c->n_heads; h++)
                cpu_rmsnorm(q + r * q_dim + h * hd, q + r * q_dim + h * hd, ly->q_norm, hd,
                            c->rms_eps, c->norm_zero_centred);
        if (ly->k_norm)
            for (int h = 0; h < c->n_kv_heads; h++)
                cpu_rmsnorm(k + r * kv_dim + h * hd, k + r * kv_dim + h * hd, ly->k_norm, hd,
                            c->rms_eps, c->norm_zero_centred);
    }

    float *att = model_buf(m, MODEL_BUF_ATT, (size_t)(n * q_dim));
    struct cpu_attention *jobs = xmalloc(sizeof(*jobs) * (size_t)b->n_seqs);
    for (int i = 0; i < b->n_seqs; i++) {
        struct model_seq *s = b->seqs[i];
        struct model_seq_layer *sl = &s->layers[l];
        int64_t r0 = b->row0[i], nt = b->n_tokens[i];
        for (int64_t j = 0; j < nt; j++) {
            int64_t pos = s->n_past + j;
            cpu_rope(q + (r0 + j) * q_dim, c->n_heads, (int)hd, c->rotary_dim, m->inv_freq, pos,
                     c->rope_neox);
            cpu_rope(k + (r0 + j) * kv_dim, c->n_kv_heads, (int)hd, c->rotary_dim, m->inv_freq, pos,
                     c->rope_neox);
        }
        memcpy(sl->k + s->n_past * kv_dim, k + r0 * kv_dim, sizeof(float) * (size_t)(nt * kv_dim));
        memcpy(sl->v + s->n_past * kv_dim, v + r0 * kv_dim, sizeof(float) * (size_t)(nt * kv_dim));
        jobs[i] = (struct cpu_attention){
                .q = q + r0 * q_dim,
                .k = sl->k,
                .v = sl->v,
                .kv_stride = kv_dim,
                .out = att + r0 * q_dim,
                .n_q = nt,
                .pos0 = s->n_past,
                .n_heads = c->n_heads,
                .n_kv_heads = c->n_kv_heads,
                .head_dim = (int)hd,
                .scale = 1.0f / sqrtf((float)hd),
        };
    }
    /* every sequence's attention in one parallel job */
    cpu_attention_batch(m->tp, jobs, b->n_seqs);
    free(jobs);
    if (gated)
        cpu_mul_sigmoid(att, gate, n * q_dim);
    cpu_matmul(m->tp, &ly->wo, att, n, out);
    model_add_bias(out, ly->bo, n, c->hidden);
}

void model_block_mlp(struct model *m, int l, int64_t n_rows, const float *xn, float *out)
{
    struct model_layer *ly = &m->layers[l];
    int64_t I = m->cfg.intermediate;
    float *g = model_buf(m, MODEL_BUF_MLP_G, (size_t)(n_rows * I));
    float *u = model_buf(m, MODEL_BUF_MLP_U, (size_t)(n_rows * I));
    const struct cpu_matrix *w[2] = {&ly->gate, &ly->up};
    float *y[2] = {g, u};
    cpu_matmul_multi(m->tp, 2, w, xn, n_rows, y);
    cpu_silu_mul(g, u, n_rows * I);
    cpu_matmul(m->tp, &ly->down, g, n_rows, out);
}

/* ---- forward ----------------------------------------------------------------------------- */

static int model_forward_check(struct model *m, struct model_seq *const *seqs,
                               const int32_t *const *tokens, const int64_t *n_tokens, int n_seqs,
                               char *err, size_t errlen)
{
    if (n_seqs < 1)
        return model_fail(m, err, errlen, "no sequence to run");
    for (int i = 0; i < n_seqs; i++) {
        if (seqs[i]->m != m)
            return model_fail(m, err, errlen, "sequence %d belongs to another model", i);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return model_fail(m, err, errlen, "sequence %d appears twice in one batch", i);
        if (n_tokens[i] < 1)
            return model_fail(m, err, errlen, "sequence %d has no tokens", i);
        if (seqs[i]->n_past + n_tokens[i] > m->max_context)
            return model_fail(m, err, errlen,
                              "sequence %d would hold %lld tokens, more than "
                              "the context of %lld",
                              i, (long long)(seqs[i]->n_past + n_tokens[i]),
                              (long long)m->max_context);
        for (int64_t j = 0; j < n_tokens[i]; j++)
            if (tokens[i][j] < 0 || tokens[i][j] >= m->cfg.vocab_size)
                return model_fail(m, err, errlen,
                                  "token id %d is outside the vocabulary of "
                                  "%lld",
                                  (int)tokens[i][j], (long long)m->cfg.vocab_size);
    }
    return 0;
}

#ifdef CORTEX_HAVE_CUDA
/* model_forward() on the GPU: the sequences' slots and lengths go to the CUDA backend. */
static int model_forward_gpu(struct model *m, struct model_seq *const *seqs,
                             const int32_t *const *tokens, const int64_t *n_tokens, int n_seqs,
                             enum model_logits which, float *logits, char *err, size_t errlen)
{
    int *slots = xmalloc(sizeof(int) * (size_t)n_seqs);
    int64_t *n_past = xmalloc(sizeof(int64_t) * (size_t)n_seqs);
    for (int i = 0; i < n_seqs; i++) {
        slots[i] = seqs[i]->gpu_slot;
        n_past[i] = seqs[i]->n_past;
    }
    int rc = cuda_model_forward(m->gpu, slots, n_past, tokens, n_tokens, n_seqs, which, logits, err,
                                errlen);
    if (rc == 0)
        for (int i = 0; i < n_seqs; i++)
            seqs[i]->n_past += n_tokens[i];
    free(slots);
    free(n_past);
    return rc;
}
#endif

int model_forward(struct model *m, struct model_seq *const *seqs, const int32_t *const *tokens,
                  const int64_t *n_tokens, int n_seqs, enum model_logits which, float *logits,
                  char *err, size_t errlen)
{
    if (model_forward_check(m, seqs, tokens, n_tokens, n_seqs, err, errlen))
        return -1;
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu)
        return model_forward_gpu(m, seqs, tokens, n_tokens, n_seqs, which, logits, err, errlen);
#endif
    const struct model_config *c = &m->cfg;
    int64_t H = c->hidden;
    int64_t *row0 = xmalloc(sizeof(int64_t) * (size_t)n_seqs);
    int64_t n = 0;
    for (int i = 0; i < n_seqs; i++) {
        row0[i] = n;
        n += n_tokens[i];
        model_seq_reserve(seqs[i], seqs[i]->n_past + n_tokens[i]);
    }
    struct model_batch b = {
            .n_seqs = n_seqs, .seqs = seqs, .n_tokens = n_tokens, .row0 = row0, .n_rows = n};

    float *x = model_buf(m, MODEL_BUF_X, (size_t)(n * H));
    size_t emb_row = dtype_row_bytes(m->embed->type, (size_t)H);
    for (int i = 0; i < n_seqs; i++)
        for (int64_t j = 0; j < n_tokens[i]; j++)
            dtype_dequant_row(m->embed->type,
                              (const char *)m->embed->data + (size_t)tokens[i][j] * emb_row,
                              x + (row0[i] + j) * H, (size_t)H);

    for (int l = 0; l < c->n_layers; l++) {
        if (c->arch == MODEL_ARCH_QWEN3_5)
            qwen35_forward_layer(m, l, &b, x);
        else
            llama_forward_layer(m, l, &b, x);
    }
    for (int i = 0; i < n_seqs; i++)
        seqs[i]->n_past += n_tokens[i];

    /* final norm and lm_head on the rows whose logits are wanted */
    int64_t n_out = which == MODEL_LOGITS_ALL ? n : n_seqs;
    float *xo = model_buf(m, MODEL_BUF_XN, (size_t)(n_out * H));
    for (int64_t r = 0; r < n_out; r++) {
        int64_t src = which == MODEL_LOGITS_ALL ? r : row0[r] + n_tokens[r] - 1;
        cpu_rmsnorm(xo + r * H, x + src * H, m->final_norm, H, c->rms_eps, c->norm_zero_centred);
    }
    cpu_matmul(m->tp, &m->lm_head, xo, n_out, logits);
    free(row0);
    return 0;
}

/* ---- saved prefixes ---------------------------------------------------------------------- */

struct model_prefix {
    struct model *m;
    int64_t length;
    int gpu_prefix;                 /* the CUDA backend's handle; -1 on the CPU */
    uint64_t bytes;                 /* CPU: the copies below */
    struct model_seq_layer *layers; /* CPU: k, v [length][Nkv * hd]; conv; ssm (as a sequence's) */
};

int model_prefix_granule(const struct model *m)
{
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu)
        return cuda_model_kv_block(m->gpu);
#endif
    (void)m;
    return 1;
}

/* Bytes of one GDN layer's conv and recurrent state. */
static size_t model_gdn_conv_bytes(const struct model_config *c)
{
    return sizeof(float) * (size_t)((c->lin_conv_kernel - 1) * model_conv_dim(c));
}

static size_t model_gdn_ssm_bytes(const struct model_config *c)
{
    return sizeof(float) * (size_t)c->lin_v_heads * (size_t)c->lin_k_dim * (size_t)c->lin_v_dim;
}

struct model_prefix *model_prefix_save(struct model_seq *s, char *err, size_t errlen)
{
    struct model *m = s->m;
    const struct model_config *c = &m->cfg;
    int granule = model_prefix_granule(m);
    if (s->n_past <= 0 || s->n_past % granule != 0) {
        model_fail(m, err, errlen,
                   "cannot save a prefix of %lld tokens: it must be a positive multiple of %d",
                   (long long)s->n_past, granule);
        return NULL;
    }
    struct model_prefix *p = xcalloc(1, sizeof(*p));
    p->m = m;
    p->length = s->n_past;
    p->gpu_prefix = -1;
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu) {
        if (cuda_model_prefix_save(m->gpu, s->gpu_slot, s->n_past, &p->gpu_prefix, err, errlen)) {
            free(p);
            return NULL;
        }
        return p;
    }
#endif
    size_t rows = (size_t)c->n_kv_heads * (size_t)c->head_dim * sizeof(float) * (size_t)p->length;
    p->layers = xcalloc((size_t)c->n_layers, sizeof(struct model_seq_layer));
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_seq_layer *from = &s->layers[l];
        struct model_seq_layer *to = &p->layers[l];
        if (from->k) {
            to->k = xmalloc(rows);
            to->v = xmalloc(rows);
            memcpy(to->k, from->k, rows);
            memcpy(to->v, from->v, rows);
            p->bytes += 2 * rows;
        }
        if (from->conv) {
            to->conv = xmalloc(model_gdn_conv_bytes(c));
            to->ssm = xmalloc(model_gdn_ssm_bytes(c));
            memcpy(to->conv, from->conv, model_gdn_conv_bytes(c));
            memcpy(to->ssm, from->ssm, model_gdn_ssm_bytes(c));
            p->bytes += model_gdn_conv_bytes(c) + model_gdn_ssm_bytes(c);
        }
    }
    return p;
}

int model_prefix_restore(struct model_seq *s, const struct model_prefix *p, char *err,
                         size_t errlen)
{
    struct model *m = s->m;
    const struct model_config *c = &m->cfg;
    if (p->m != m)
        return model_fail(m, err, errlen, "the saved prefix belongs to another model");
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu) {
        s->n_past = 0;
        if (cuda_model_prefix_restore(m->gpu, p->gpu_prefix, s->gpu_slot, err, errlen)) {
            model_seq_reset(s);
            return -1;
        }
        s->n_past = p->length;
        return 0;
    }
#endif
    model_seq_reserve(s, p->length);
    size_t rows = (size_t)c->n_kv_heads * (size_t)c->head_dim * sizeof(float) * (size_t)p->length;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_seq_layer *from = &p->layers[l];
        struct model_seq_layer *to = &s->layers[l];
        if (from->k) {
            memcpy(to->k, from->k, rows);
            memcpy(to->v, from->v, rows);
        }
        if (from->conv) {
            memcpy(to->conv, from->conv, model_gdn_conv_bytes(c));
            memcpy(to->ssm, from->ssm, model_gdn_ssm_bytes(c));
        }
    }
    s->n_past = p->length;
    return 0;
}

uint64_t model_prefix_save_bytes(const struct model_seq *s)
{
    const struct model_config *c = &s->m->cfg;
    if (s->m->gpu)
        return 0;
    uint64_t bytes = 0;
    uint64_t rows =
            (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim * sizeof(float) * (uint64_t)s->n_past;
    for (int l = 0; l < c->n_layers; l++) {
        if (s->layers[l].k)
            bytes += 2 * rows;
        if (s->layers[l].conv)
            bytes += model_gdn_conv_bytes(c) + model_gdn_ssm_bytes(c);
    }
    return bytes;
}

int64_t model_prefix_length(const struct model_prefix *p)
{
    return p->length;
}

uint64_t model_prefix_bytes(const struct model_prefix *p)
{
#ifdef CORTEX_HAVE_CUDA
    if (p->m->gpu)
        return cuda_model_prefix_bytes(p->m->gpu, p->gpu_prefix);
#endif
    return p->bytes;
}

void model_prefix_destroy(struct model_prefix *p)
{
    if (!p)
        return;
#ifdef CORTEX_HAVE_CUDA
    if (p->m->gpu)
        cuda_model_prefix_release(p->m->gpu, p->gpu_prefix);
#endif
    for (int l = 0; p->layers && l < p->m->cfg.n_layers; l++) {
        free(p->layers[l].k);
        free(p->layers[l].v);
        free(p->layers[l].conv);
        free(p->layers[l].ssm);
    }
    free(p->layers);
    free(p);
}

void model_cache_stats(const struct model *m, struct model_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
#ifdef CORTEX_HAVE_CUDA
    if (m->gpu) {
        struct cuda_model_cache_stats cs;
        cuda_model_cache_stats(m->gpu, &cs);
        out->block_size = cs.block_size;
        out->blocks = cs.blocks;
        out->blocks_free = cs.blocks_free;
        out->block_allocs = cs.block_allocs;
        out->block_bytes = cs.block_bytes;
    }
#endif
    (void)m;
}
