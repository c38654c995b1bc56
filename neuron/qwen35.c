/*
 * neuron/qwen35.c — the qwen3_5 decoder layer (QWEN35.md): Gated DeltaNet or gated attention,
 * then the MLP, with zero-centred RMSNorm (HF files; GGUF files store 1 + w and say so in the
 * config).
 *
 * The Gated DeltaNet block, for the n rows of a batch:
 *   qkv, z, b, a = projections of N(x)                       (one parallel job for all four)
 *   per sequence: causal conv1d + SiLU over its rows with its conv state
 *   per row: L2-normalise q (times Dk^-0.5) and k per key head; beta, g per value head
 *   per (sequence, value head): the delta rule on that head's state, chunked for a prefill and
 *                               recurrent for a single token (parallel over heads)
 *   per (row, value head): gated RMSNorm with z; then out_proj
 * Value head p reads key head p / r (HF) or p % Nk (GGUF's tiled value heads).
 */
#include "gdn.h"
#include "model_internal.h"

#include <math.h>
#include <stdio.h>

static int qwen35_bind_gdn(struct model *m, int l, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    int64_t H = c->hidden, Nv = c->lin_v_heads;
    int64_t vdim = Nv * c->lin_v_dim;
    int64_t conv_dim = 2 * (int64_t)c->lin_k_heads * c->lin_k_dim + vdim;
    char name[160];
    LAYER_NAME(name, l, "linear_attn.in_proj_qkv.weight");
    if (model_bind_matrix(m, name, conv_dim, H, &ly->qkv, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.in_proj_z.weight");
    if (model_bind_matrix(m, name, vdim, H, &ly->z, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.in_proj_b.weight");
    if (model_bind_matrix(m, name, Nv, H, &ly->b, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.in_proj_a.weight");
    if (model_bind_matrix(m, name, Nv, H, &ly->a, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.out_proj.weight");
    if (model_bind_matrix(m, name, H, vdim, &ly->out, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.conv1d.weight");
    if (model_bind_vector(m, name, conv_dim * c->lin_conv_kernel, false, &ly->conv_w, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.dt_bias");
    if (model_bind_vector(m, name, Nv, false, &ly->dt_bias, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.norm.weight");
    if (model_bind_vector(m, name, c->lin_v_dim, false, &ly->lin_norm, err, errlen))
        return -1;
    LAYER_NAME(name, l, "linear_attn.A_log");
    if (model_bind_vector(m, name, Nv, false, &ly->neg_a, err, errlen))
        return -1;
    /* GGUF stores -exp(A_log) already; HF stores A_log */
    if (!model_file_tensor(m->mf, name)->gguf_layout)
        for (int64_t h = 0; h < Nv; h++)
            ly->neg_a[h] = -expf(ly->neg_a[h]);
    return 0;
}

int qwen35_bind_layer(struct model *m, int l, char *err, size_t errlen)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    ly->kind = c->layer_kinds[l];
    if (ly->kind == LAYER_KIND_LINEAR_ATTENTION) {
        if (c->lin_k_heads < 1 || c->lin_v_heads % c->lin_k_heads != 0 || c->lin_k_dim < 1 ||
            c->lin_v_dim < 1 || c->lin_conv_kernel < 1)
            return model_fail(m, err, errlen,
                              "inconsistent linear attention configuration (key heads %d, value "
                              "heads %d, dims %d/%d, conv kernel %d)",
                              c->lin_k_heads, c->lin_v_heads, c->lin_k_dim, c->lin_v_dim,
                              c->lin_conv_kernel);
        if (qwen35_bind_gdn(m, l, err, errlen))
            return -1;
        char name[160];
        LAYER_NAME(name, l, "linear_attn.in_proj_qkv.weight");
        m->gdn_tiled = model_file_tensor(m->mf, name)->gguf_layout;
    } else if (model_bind_attention(m, l, err, errlen)) {
        return -1;
    }
    return model_bind_mlp(m, l, err, errlen);
}

struct qwen35_gdn_job {
    struct model *m;
    struct model_layer *ly;
    const struct model_batch *b;
    int layer;
    float *qkv, *g, *beta, *core;
};

/* Task = (sequence, value head). */
static void qwen35_gdn_head_task(void *ctx, int task, int thread)
{
    struct qwen35_gdn_job *job = ctx;
    const struct model_config *c = &job->m->cfg;
    int Nk = c->lin_k_heads, Nv = c->lin_v_heads, Dk = c->lin_k_dim, Dv = c->lin_v_dim;
    int seq = task / Nv, p = task % Nv;
    int kh = job->m->gdn_tiled ? p % Nk : p / (Nv / Nk);
    int64_t conv_dim = 2 * (int64_t)Nk * Dk + (int64_t)Nv * Dv;
    int64_t r0 = job->b->row0[seq];
    const float *row = job->qkv + r0 * conv_dim;
    struct gdn_head h = {
            .n_tok = job->b->n_tokens[seq],
            .k_dim = Dk,
            .v_dim = Dv,
            .q = row + (int64_t)kh * Dk,
            .k = row + (int64_t)Nk * Dk + (int64_t)kh * Dk,
            .qk_stride = conv_dim,
            .v = row + 2 * (int64_t)Nk * Dk + (int64_t)p * Dv,
            .v_stride = conv_dim,
            .g = job->g + r0 * Nv + p,
            .beta = job->beta + r0 * Nv + p,
            .gb_stride = Nv,
            .out = job->core + r0 * Nv * Dv + (int64_t)p * Dv,
            .out_stride = (int64_t)Nv * Dv,
            .state = job->b->seqs[seq]->layers[job->layer].ssm + (size_t)p * Dk * Dv,
    };
    if (h.n_tok == 1)
        gdn_head_recurrent(&h);
    else
        gdn_head_chunked(&h, GDN_CHUNK);
}

static void qwen35_gdn_block(struct model *m, int l, const struct model_batch *b, const float *xn,
                             float *out)
{
    const struct model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[l];
    int64_t n = b->n_rows;
    int Nk = c->lin_k_heads, Nv = c->lin_v_heads, Dk = c->lin_k_dim, Dv = c->lin_v_dim;
    int64_t conv_dim = ly->qkv.rows, vdim = (int64_t)Nv * Dv;

    float *qkv = model_buf(m, MODEL_BUF_QKV, (size_t)(n * conv_dim));
    float *z = model_buf(m, MODEL_BUF_Z, (size_t)(n * vdim));
    float *bb = model_buf(m, MODEL_BUF_B, (size_t)(n * Nv));
    float *aa = model_buf(m, MODEL_BUF_A, (size_t)(n * Nv));
    const struct cpu_matrix *w[4] = {&ly->qkv, &ly->z, &ly->b, &ly->a};
    float *y[4] = {qkv, z, bb, aa};
    cpu_matmul_multi(m->tp, 4, w, xn, n, y);

    for (int i = 0; i < b->n_seqs; i++)
        gdn_conv(qkv + b->row0[i] * conv_dim, b->n_tokens[i], conv_dim, (int)conv_dim,
                 b->seqs[i]->layers[l].conv, ly->conv_w, c->lin_conv_kernel);

    float *g = model_buf(m, MODEL_BUF_G, (size_t)(n * Nv));
    float *beta = model_buf(m, MODEL_BUF_BETA, (size_t)(n * Nv));
    for (int64_t r = 0; r < n; r++) {
        float *qk = qkv + r * conv_dim;
        gdn_l2norm(qk, Nk, Dk, 1.0f / sqrtf((float)Dk));
        gdn_l2norm(qk + (int64_t)Nk * Dk, Nk, Dk, 1.0f);
        gdn_gates(aa + r * Nv, bb + r * Nv, ly->neg_a, ly->dt_bias, Nv, g + r * Nv, beta + r * Nv);
    }

    float *core = model_buf(m, MODEL_BUF_CORE, (size_t)(n * vdim));
    struct qwen35_gdn_job job = {
            .m = m, .ly = ly, .b = b, .layer = l, .qkv = qkv, .g = g, .beta = beta, .core = core};
    threadpool_run(m->tp, qwen35_gdn_head_task, &job, b->n_seqs * Nv);

    for (int64_t r = 0; r < n; r++)
        for (int p = 0; p < Nv; p++)
            gdn_gated_norm(core + r * vdim + (int64_t)p * Dv, z + r * vdim + (int64_t)p * Dv,
                           ly->lin_norm, Dv, c->rms_eps);
    cpu_matmul(m->tp, &ly->out, core, n, out);
}

void qwen35_forward_layer(struct model *m, int l, const struct model_batch *b, float *x)
{
    struct model_layer *ly = &m->layers[l];
    int64_t n = b->n_rows, H = m->cfg.hidden;
    float *xn = model_buf(m, MODEL_BUF_XN, (size_t)(n * H));
    float *out = model_buf(m, MODEL_BUF_OUT, (size_t)(n * H));

    model_norm_rows(m, xn, x, ly->attn_norm, n);
    if (ly->kind == LAYER_KIND_LINEAR_ATTENTION)
        qwen35_gdn_block(m, l, b, xn, out);
    else
        model_block_attention(m, l, b, xn, out);
    for (int64_t i = 0; i < n * H; i++)
        x[i] += out[i];

    model_norm_rows(m, xn, x, ly->ffn_norm, n);
    model_block_mlp(m, l, n, xn, out);
    for (int64_t i = 0; i < n * H; i++)
        x[i] += out[i];
}
