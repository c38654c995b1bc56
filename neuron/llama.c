/*
 * neuron/llama.c — the Llama-family decoder layer: Llama 2/3, SmolLM2, Mistral, Qwen2/2.5
 * (q/k/v biases) and Qwen3 (q/k RMSNorm), from HF or GGUF files.
 *
 *   h   = x + o_proj(attention(rope(q_proj(N(x))), rope(k_proj(N(x))), v_proj(N(x))))
 *   out = h + down(silu(gate(N(h))) * up(N(h)))
 * with N the plain RMSNorm. GGUF llama files have q/k rows permuted per head so that RoPE
 * applies to interleaved pairs; model_file reports that as config.rope_neox = false and the
 * attention block rotates accordingly, so the weights are used as stored.
 */
#include "model_internal.h"

int llama_bind_layer(struct model *m, int l, char *err, size_t errlen)
{
    m->layers[l].kind = LAYER_KIND_ATTENTION;
    if (model_bind_attention(m, l, err, errlen))
        return -1;
    return model_bind_mlp(m, l, err, errlen);
}

void llama_forward_layer(struct model *m, int l, const struct model_batch *b, float *x)
{
    struct model_layer *ly = &m->layers[l];
    int64_t n = b->n_rows, H = m->cfg.hidden;
    float *xn = model_buf(m, MODEL_BUF_XN, (size_t)(n * H));
    float *out = model_buf(m, MODEL_BUF_OUT, (size_t)(n * H));

    model_norm_rows(m, xn, x, ly->attn_norm, n);
    model_block_attention(m, l, b, xn, out);
    for (int64_t i = 0; i < n * H; i++)
        x[i] += out[i];

    model_norm_rows(m, xn, x, ly->ffn_norm, n);
    model_block_mlp(m, l, n, xn, out);
    for (int64_t i = 0; i < n * H; i++)
        x[i] += out[i];
}
