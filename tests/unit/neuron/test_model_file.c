/*
 * tests/unit/neuron/test_model_file.c — opening models: tiny GGUF files (llama, qwen2, qwen3,
 * qwen35) and Hugging Face directories (llama, qwen3_5 with its nested text config) written
 * here; canonical tensor names, struct model_config, the metadata object, and the refusals
 * (unsupported architecture, missing or out-of-range config fields, wrong tensor shapes).
 * The real SmolLM2 file is tested in test_model_file_smollm2.c.
 */
#include "model_file.h"
#include "neuron/model_fixture.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char *path; /* dir/model.gguf */
static char err[512];

static void setup(void)
{
    dir = fixture_tmpdir();
    path = xasprintf("%s/model.gguf", dir);
    err[0] = '\0';
}

static void teardown(void)
{
    free(path);
    fixture_rmdir(dir);
}

static void expect_error(const char *target, const char *file, const char *want)
{
    struct model_file *mf = NULL;
    ck_assert_int_eq(model_file_open(target, &mf, err, sizeof err), -1);
    ck_assert_ptr_null(mf);
    ck_assert_msg(strncmp(err, file, strlen(file)) == 0, "error does not name %s: %s", file, err);
    ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
}

static struct model_file *open_ok(const char *target)
{
    struct model_file *mf = NULL;
    ck_assert_msg(model_file_open(target, &mf, err, sizeof err) == 0, "open failed: %s", err);
    return mf;
}

static const struct model_tensor *tensor(const struct model_file *mf, const char *name)
{
    const struct model_tensor *t = model_file_tensor(mf, name);
    ck_assert_msg(t != NULL, "tensor %s missing", name);
    return t;
}

static void assert_shape(const struct model_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    ck_assert_int_eq(t->ndim, ndim);
    ck_assert_int_eq(t->shape[0], d0);
    if (ndim > 1)
        ck_assert_int_eq(t->shape[1], d1);
    if (ndim > 2)
        ck_assert_int_eq(t->shape[2], d2);
}

/* ---- GGUF fixtures ----------------------------------------------------------------------- */

enum { H = 64, V = 32, FFN = 96, HEADS = 4, KV = 2, HD = 16 };

/* Adds a zero-filled f32 tensor with GGUF dims ne (innermost first). */
static void gguf_zeros(struct fixture_gguf *g, const char *name, int ndim, uint64_t n0, uint64_t n1)
{
    uint64_t ne[2] = {n0, n1};
    size_t n = (size_t)n0 * (ndim > 1 ? (size_t)n1 : 1);
    float *z = xcalloc(n ? n : 1, sizeof(float));
    fixture_gguf_tensor(g, name, FX_GGML_F32, ndim, ne, z, n * sizeof(float));
    free(z);
}

static void gguf_layer_name(char *buf, size_t len, int layer, const char *rest)
{
    snprintf(buf, len, "blk.%d.%s", layer, rest);
}

static void gguf_attention_layer(struct fixture_gguf *g, int i, bool bias, bool qk_norm)
{
    char n[64];
    gguf_layer_name(n, sizeof n, i, "attn_norm.weight");
    gguf_zeros(g, n, 1, H, 0);
    gguf_layer_name(n, sizeof n, i, "attn_q.weight");
    gguf_zeros(g, n, 2, H, HEADS * HD);
    gguf_layer_name(n, sizeof n, i, "attn_k.weight");
    gguf_zeros(g, n, 2, H, KV * HD);
    gguf_layer_name(n, sizeof n, i, "attn_v.weight");
    gguf_zeros(g, n, 2, H, KV * HD);
    gguf_layer_name(n, sizeof n, i, "attn_output.weight");
    gguf_zeros(g, n, 2, HEADS * HD, H);
    if (bias) {
        gguf_layer_name(n, sizeof n, i, "attn_q.bias");
        gguf_zeros(g, n, 1, HEADS * HD, 0);
    }
    if (qk_norm) {
        gguf_layer_name(n, sizeof n, i, "attn_q_norm.weight");
        gguf_zeros(g, n, 1, HD, 0);
        gguf_layer_name(n, sizeof n, i, "attn_k_norm.weight");
        gguf_zeros(g, n, 1, HD, 0);
    }
}

static void gguf_mlp(struct fixture_gguf *g, int i, const char *norm)
{
    char n[64];
    gguf_layer_name(n, sizeof n, i, norm);
    gguf_zeros(g, n, 1, H, 0);
    gguf_layer_name(n, sizeof n, i, "ffn_gate.weight");
    gguf_zeros(g, n, 2, H, FFN);
    gguf_layer_name(n, sizeof n, i, "ffn_up.weight");
    gguf_zeros(g, n, 2, H, FFN);
    gguf_layer_name(n, sizeof n, i, "ffn_down.weight");
    gguf_zeros(g, n, 2, FFN, H);
}

/* The keys every llama-family GGUF has, for architecture arch. skip names one to leave out. */
static void gguf_keys(struct fixture_gguf *g, const char *arch, int layers, const char *skip)
{
    char k[96];
#define KEY(suffix) (snprintf(k, sizeof k, "%s." suffix, arch), k)
    if (!skip || strcmp(skip, "general.architecture") != 0)
        fixture_gguf_str(g, "general.architecture", arch);
    const struct {
        const char *suffix;
        uint32_t v;
    } ints[] = {{"context_length", 4096},          {"embedding_length", H},
                {"block_count", (uint32_t)layers}, {"feed_forward_length", FFN},
                {"attention.head_count", HEADS},   {"attention.head_count_kv", KV}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (skip && strcmp(skip, ints[i].suffix) == 0)
            continue;
        snprintf(k, sizeof k, "%s.%s", arch, ints[i].suffix);
        fixture_gguf_u32(g, k, ints[i].v);
    }
    fixture_gguf_f32(g, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    fixture_gguf_f32(g, KEY("rope.freq_base"), 100000.0f);
    fixture_gguf_u32(g, "tokenizer.ggml.bos_token_id", 1);
    fixture_gguf_u32(g, "tokenizer.ggml.eos_token_id", 2);
    fixture_gguf_str(g, "tokenizer.chat_template", "{{ messages[0]['content'] }}");
#undef KEY
}

static void gguf_llama(struct fixture_gguf *g, const char *arch, bool bias, bool qk_norm,
                       bool untied, const char *skip)
{
    fixture_gguf_init(g);
    gguf_keys(g, arch, 2, skip);
    gguf_zeros(g, "token_embd.weight", 2, H, V);
    for (int i = 0; i < 2; i++) {
        gguf_attention_layer(g, i, bias, qk_norm);
        gguf_mlp(g, i, "ffn_norm.weight");
    }
    gguf_zeros(g, "output_norm.weight", 1, H, 0);
    if (untied)
        gguf_zeros(g, "output.weight", 2, H, V);
    gguf_zeros(g, "rope_freqs.weight", 1, HD / 2, 0);
}

START_TEST(test_gguf_llama)
{
    struct fixture_gguf g;
    gguf_llama(&g, "llama", false, false, false, NULL);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    struct model_file *mf = open_ok(path);
    const struct model_config *c = &mf->config;
    ck_assert_int_eq(mf->format, MODEL_FORMAT_GGUF);
    ck_assert_int_eq(c->arch, MODEL_ARCH_LLAMA);
    ck_assert_str_eq(c->arch_name, "llama");
    ck_assert_int_eq(c->vocab_size, V);
    ck_assert_int_eq(c->hidden, H);
    ck_assert_int_eq(c->intermediate, FFN);
    ck_assert_int_eq(c->n_layers, 2);
    ck_assert_int_eq(c->n_heads, HEADS);
    ck_assert_int_eq(c->n_kv_heads, KV);
    ck_assert_int_eq(c->head_dim, HD);
    ck_assert_int_eq(c->rotary_dim, HD);
    ck_assert_float_eq(c->rms_eps, 1e-5f);
    ck_assert_float_eq(c->rope_theta, 100000.0f);
    ck_assert_int_eq(c->max_context, 4096);
    ck_assert(!c->rope_neox); /* llama.cpp permuted q/k for interleaved rotation */
    ck_assert(c->tie_embeddings);
    ck_assert(!c->attn_qkv_bias && !c->attn_qk_norm && !c->attn_output_gate);
    ck_assert(!c->norm_zero_centred);
    ck_assert_int_eq(c->layer_kinds[0], LAYER_KIND_ATTENTION);
    ck_assert_int_eq(c->layer_kinds[1], LAYER_KIND_ATTENTION);
    ck_assert_int_eq(c->bos_token_id, 1);
    ck_assert_int_eq(c->eos_token_id, 2);
    ck_assert_int_eq(c->pad_token_id, -1);

    ck_assert_uint_eq(mf->n_tensors, 1 + 2 * 9 + 1 + 1);
    assert_shape(tensor(mf, "model.embed_tokens.weight"), 2, V, H, 0);
    assert_shape(tensor(mf, "model.layers.1.self_attn.q_proj.weight"), 2, HEADS * HD, H, 0);
    assert_shape(tensor(mf, "model.layers.1.self_attn.k_proj.weight"), 2, KV * HD, H, 0);
    assert_shape(tensor(mf, "model.layers.0.self_attn.o_proj.weight"), 2, H, HEADS * HD, 0);
    assert_shape(tensor(mf, "model.layers.0.mlp.down_proj.weight"), 2, H, FFN, 0);
    assert_shape(tensor(mf, "model.layers.0.mlp.gate_proj.weight"), 2, FFN, H, 0);
    assert_shape(tensor(mf, "model.layers.0.mlp.up_proj.weight"), 2, FFN, H, 0);
    assert_shape(tensor(mf, "model.layers.0.input_layernorm.weight"), 1, H, 0, 0);
    assert_shape(tensor(mf, "model.layers.0.post_attention_layernorm.weight"), 1, H, 0, 0);
    assert_shape(tensor(mf, "model.norm.weight"), 1, H, 0, 0);
    assert_shape(tensor(mf, "rope_freqs.weight"), 1, HD / 2, 0, 0); /* unknown: kept */
    ck_assert_ptr_null(model_file_tensor(mf, "lm_head.weight"));
    ck_assert_ptr_null(model_file_tensor(mf, "blk.0.attn_q.weight"));
    uint64_t total = 0;
    for (size_t i = 0; i < mf->n_tensors; i++) {
        ck_assert(mf->tensors[i].gguf_layout);
        total += mf->tensors[i].nbytes;
    }
    ck_assert_uint_eq(mf->total_bytes, total);
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "chat_template")),
                     "{{ messages[0]['content'] }}");
    ck_assert_int_eq(json_integer_value(json_object_get(mf->meta, "llama.block_count")), 2);
    model_file_close(mf);
}
END_TEST

START_TEST(test_gguf_qwen2_qwen3)
{
    struct fixture_gguf g;
    gguf_llama(&g, "qwen2", true, false, true, NULL);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    struct model_file *mf = open_ok(path);
    ck_assert_str_eq(mf->config.arch_name, "qwen2");
    ck_assert(mf->config.rope_neox);
    ck_assert(!mf->config.tie_embeddings);
    ck_assert(mf->config.attn_qkv_bias);
    ck_assert(!mf->config.attn_qk_norm);
    assert_shape(tensor(mf, "lm_head.weight"), 2, V, H, 0);
    assert_shape(tensor(mf, "model.layers.1.self_attn.q_proj.bias"), 1, HEADS * HD, 0, 0);
    model_file_close(mf);

    gguf_llama(&g, "qwen3", false, true, false, NULL);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    mf = open_ok(path);
    ck_assert_int_eq(mf->config.arch, MODEL_ARCH_LLAMA);
    ck_assert(mf->config.attn_qk_norm && !mf->config.attn_qkv_bias);
    assert_shape(tensor(mf, "model.layers.0.self_attn.k_norm.weight"), 1, HD, 0, 0);
    model_file_close(mf);
}
END_TEST

/* qwen35: Nk = 2 key heads, Nv = 4 value heads, Dk = Dv = 16, conv kernel 4. */
enum { NK = 2, NV = 4, DK = 16, DV = 16, KC = 4, CONV = 2 * NK * DK + NV * DV };

static void gguf_qwen35(struct fixture_gguf *g, bool interval_key)
{
    fixture_gguf_init(g);
    gguf_keys(g, "qwen35", 4, NULL);
    fixture_gguf_u32(g, "qwen35.attention.key_length", HD);
    fixture_gguf_u32(g, "qwen35.rope.dimension_count", HD / 4);
    fixture_gguf_u32(g, "qwen35.ssm.conv_kernel", KC);
    fixture_gguf_u32(g, "qwen35.ssm.state_size", DK);
    fixture_gguf_u32(g, "qwen35.ssm.group_count", NK);
    fixture_gguf_u32(g, "qwen35.ssm.time_step_rank", NV);
    fixture_gguf_u32(g, "qwen35.ssm.inner_size", NV * DV);
    if (interval_key)
        fixture_gguf_u32(g, "qwen35.full_attention_interval", 4);
    gguf_zeros(g, "token_embd.weight", 2, H, V);
    char n[64];
    for (int i = 0; i < 3; i++) {
        gguf_layer_name(n, sizeof n, i, "attn_norm.weight");
        gguf_zeros(g, n, 1, H, 0);
        gguf_layer_name(n, sizeof n, i, "attn_qkv.weight");
        gguf_zeros(g, n, 2, H, CONV);
        gguf_layer_name(n, sizeof n, i, "attn_gate.weight");
        gguf_zeros(g, n, 2, H, NV * DV);
        gguf_layer_name(n, sizeof n, i, "ssm_beta.weight");
        gguf_zeros(g, n, 2, H, NV);
        gguf_layer_name(n, sizeof n, i, "ssm_alpha.weight");
        gguf_zeros(g, n, 2, H, NV);
        gguf_layer_name(n, sizeof n, i, "ssm_conv1d.weight");
        gguf_zeros(g, n, 2, KC, CONV);
        gguf_layer_name(n, sizeof n, i, "ssm_a");
        gguf_zeros(g, n, 1, NV, 0);
        gguf_layer_name(n, sizeof n, i, "ssm_dt.bias");
        gguf_zeros(g, n, 1, NV, 0);
        gguf_layer_name(n, sizeof n, i, "ssm_norm.weight");
        gguf_zeros(g, n, 1, DV, 0);
        gguf_layer_name(n, sizeof n, i, "ssm_out.weight");
        gguf_zeros(g, n, 2, NV * DV, H);
        gguf_mlp(g, i, "post_attention_norm.weight");
    }
    /* layer 3: gated full attention, q_proj holds query and gate per head */
    gguf_zeros(g, "blk.3.attn_norm.weight", 1, H, 0);
    gguf_zeros(g, "blk.3.attn_q.weight", 2, H, 2 * HEADS * HD);
    gguf_zeros(g, "blk.3.attn_k.weight", 2, H, KV * HD);
    gguf_zeros(g, "blk.3.attn_v.weight", 2, H, KV * HD);
    gguf_zeros(g, "blk.3.attn_output.weight", 2, HEADS * HD, H);
    gguf_zeros(g, "blk.3.attn_q_norm.weight", 1, HD, 0);
    gguf_zeros(g, "blk.3.attn_k_norm.weight", 1, HD, 0);
    gguf_mlp(g, 3, "post_attention_norm.weight");
    gguf_zeros(g, "output_norm.weight", 1, H, 0);
}

START_TEST(test_gguf_qwen35)
{
    struct fixture_gguf g;
    gguf_qwen35(&g, _i == 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    struct model_file *mf = open_ok(path);
    const struct model_config *c = &mf->config;
    ck_assert_int_eq(c->arch, MODEL_ARCH_QWEN3_5);
    ck_assert_str_eq(c->arch_name, "qwen35");
    ck_assert_int_eq(c->n_layers, 4);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(c->layer_kinds[i], LAYER_KIND_LINEAR_ATTENTION);
    ck_assert_int_eq(c->layer_kinds[3], LAYER_KIND_ATTENTION);
    ck_assert_int_eq(c->lin_k_heads, NK);
    ck_assert_int_eq(c->lin_v_heads, NV);
    ck_assert_int_eq(c->lin_k_dim, DK);
    ck_assert_int_eq(c->lin_v_dim, DV);
    ck_assert_int_eq(c->lin_conv_kernel, KC);
    ck_assert_int_eq(c->head_dim, HD);
    ck_assert_int_eq(c->rotary_dim, HD / 4);
    ck_assert(c->rope_neox);
    ck_assert(c->attn_output_gate);
    ck_assert(c->attn_qk_norm);
    ck_assert(!c->norm_zero_centred); /* GGUF stores 1 + w */
    ck_assert(c->tie_embeddings);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.in_proj_qkv.weight"), 2, CONV, H, 0);
    assert_shape(tensor(mf, "model.layers.1.linear_attn.in_proj_z.weight"), 2, NV * DV, H, 0);
    assert_shape(tensor(mf, "model.layers.2.linear_attn.in_proj_b.weight"), 2, NV, H, 0);
    assert_shape(tensor(mf, "model.layers.2.linear_attn.in_proj_a.weight"), 2, NV, H, 0);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.conv1d.weight"), 3, CONV, 1, KC);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.A_log"), 1, NV, 0, 0);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.dt_bias"), 1, NV, 0, 0);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.norm.weight"), 1, DV, 0, 0);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.out_proj.weight"), 2, H, NV * DV, 0);
    assert_shape(tensor(mf, "model.layers.0.post_attention_layernorm.weight"), 1, H, 0, 0);
    assert_shape(tensor(mf, "model.layers.3.self_attn.q_proj.weight"), 2, 2 * HEADS * HD, H, 0);
    assert_shape(tensor(mf, "model.layers.3.self_attn.q_norm.weight"), 1, HD, 0, 0);
    for (size_t i = 0; i < mf->n_tensors; i++)
        ck_assert_msg(strncmp(mf->tensors[i].name, "blk.", 4) != 0, "unmapped %s",
                      mf->tensors[i].name);
    model_file_close(mf);
}
END_TEST

START_TEST(test_gguf_unsupported_arch)
{
    struct fixture_gguf g;
    gguf_llama(&g, "gpt2", false, false, false, NULL);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    char *want = xasprintf("%s: architecture 'gpt2' is not supported (supported: llama, qwen2, "
                           "qwen3, qwen35)",
                           path);
    expect_error(path, path, want);
    ck_assert_str_eq(err, want);
    free(want);
}
END_TEST

START_TEST(test_gguf_missing_fields)
{
    static const char *const skips[] = {"general.architecture", "embedding_length",
                                        "block_count",          "context_length",
                                        "feed_forward_length",  "attention.head_count"};
    for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++) {
        struct fixture_gguf g;
        gguf_llama(&g, "llama", false, false, false, skips[i]);
        fixture_gguf_write(&g, path);
        fixture_gguf_free(&g);
        char *want = i == 0 ? xstrdup("missing required field 'general.architecture'")
                            : xasprintf("missing required field 'llama.%s'", skips[i]);
        expect_error(path, path, want);
        free(want);
    }
}
END_TEST

START_TEST(test_gguf_bad_values)
{
    struct fixture_gguf g;
    gguf_llama(&g, "llama", false, false, false, "block_count");
    fixture_gguf_u32(&g, "llama.block_count", 1000);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error(path, path, "'llama.block_count' is 1000, outside the supported range 1..256");

    gguf_llama(&g, "llama", false, false, false, "attention.head_count");
    fixture_gguf_str(&g, "llama.attention.head_count", "four");
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error(path, path, "'llama.attention.head_count' must be an integer");

    gguf_llama(&g, "llama", false, false, false, "embedding_length");
    fixture_gguf_u32(&g, "llama.embedding_length", 2 * H);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error(path, path,
                 "tensor 'model.embed_tokens.weight' has the wrong shape for hidden size 128");

    gguf_llama(&g, "llama", false, false, false, "attention.head_count_kv");
    fixture_gguf_u32(&g, "llama.attention.head_count_kv", 3);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error(path, path, "4 attention heads are not a multiple of 3 KV heads");
}
END_TEST

START_TEST(test_gguf_damaged)
{
    struct fixture_gguf g;
    gguf_llama(&g, "llama", false, false, false, NULL);
    struct fixture_buf whole;
    fixture_gguf_build(&g, &whole);
    fixture_gguf_free(&g);
    fixture_write(path, whole.p, whole.len / 2);
    expect_error(path, path, "lies beyond the end of the file");
    fixture_write(path, whole.p, 100);
    expect_error(path, path, "metadata count 12 is larger than the file could hold");
    uint8_t *name = memmem(whole.p, whole.len, "blk.1.ffn_up.weight", 19);
    ck_assert_ptr_nonnull(name);
    fixture_write(path, whole.p, (size_t)(name - whole.p) + 5);
    expect_error(path, path, ": string of 19 bytes at offset");
    free(whole.p);
    char *missing = xasprintf("%s/nope.gguf", dir);
    expect_error(missing, missing, "cannot open: No such file or directory");
    free(missing);
}
END_TEST

/* ---- Hugging Face directories ------------------------------------------------------------ */

static void st_zeros(struct fixture_st *st, const char *name, int64_t d0, int64_t d1, int64_t d2)
{
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1) * (size_t)(d2 ? d2 : 1);
    uint16_t *z = xcalloc(n, sizeof *z);
    char shape[64];
    if (d2)
        snprintf(shape, sizeof shape, "[%lld, %lld, %lld]", (long long)d0, (long long)d1,
                 (long long)d2);
    else if (d1)
        snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)d0, (long long)d1);
    else
        snprintf(shape, sizeof shape, "[%lld]", (long long)d0);
    fixture_st_tensor(st, name, "BF16", shape, z, n * sizeof *z);
    free(z);
}

static void hf_file(const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", dir, name);
    fixture_write_str(p, text);
    free(p);
}

static const char llama_config[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
        " \"vocab_size\": 32, \"hidden_size\": 64, \"intermediate_size\": 96,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
        " \"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"
        " \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": [2, 3]}";

static void hf_llama_weights(void)
{
    struct fixture_st st = {0};
    char n[96];
    st_zeros(&st, "model.embed_tokens.weight", V, H, 0);
    st_zeros(&st, "lm_head.weight", V, H, 0);
    st_zeros(&st, "model.norm.weight", H, 0, 0);
    for (int i = 0; i < 2; i++) {
        snprintf(n, sizeof n, "model.layers.%d.self_attn.q_proj.weight", i);
        st_zeros(&st, n, HEADS * HD, H, 0);
        snprintf(n, sizeof n, "model.layers.%d.self_attn.k_proj.weight", i);
        st_zeros(&st, n, KV * HD, H, 0);
        snprintf(n, sizeof n, "model.layers.%d.mlp.down_proj.weight", i);
        st_zeros(&st, n, H, FFN, 0);
    }
    char *p = xasprintf("%s/model.safetensors", dir);
    fixture_st_write(&st, p);
    free(p);
}

START_TEST(test_hf_llama)
{
    hf_file("config.json", llama_config);
    hf_file("tokenizer_config.json",
            "{\"bos_token\": \"<s>\", \"model_max_length\": 2048, \"hidden_size\": 1,"
            " \"chat_template\": \"{{ bos_token }}\"}");
    hf_file("generation_config.json", "{\"eos_token_id\": 7, \"temperature\": 0.6}");
    hf_file("tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}");
    hf_llama_weights();
    struct model_file *mf = open_ok(dir);
    const struct model_config *c = &mf->config;
    ck_assert_int_eq(mf->format, MODEL_FORMAT_HF);
    ck_assert_int_eq(c->arch, MODEL_ARCH_LLAMA);
    ck_assert_str_eq(c->arch_name, "llama");
    ck_assert_int_eq(c->vocab_size, V);
    ck_assert_int_eq(c->hidden, H);
    ck_assert_int_eq(c->n_heads, HEADS);
    ck_assert_int_eq(c->n_kv_heads, KV);
    ck_assert_int_eq(c->head_dim, HD);
    ck_assert_int_eq(c->rotary_dim, HD);
    ck_assert_float_eq(c->rope_theta, 500000.0f);
    ck_assert_float_eq(c->rms_eps, 1e-5f);
    ck_assert_int_eq(c->max_context, 2048);
    ck_assert(c->rope_neox);
    ck_assert(!c->tie_embeddings);
    ck_assert_int_eq(c->bos_token_id, 1);
    ck_assert_int_eq(c->eos_token_id, 7); /* generation_config.json wins */
    ck_assert_int_eq(c->pad_token_id, -1);
    const struct model_tensor *q = tensor(mf, "model.layers.1.self_attn.q_proj.weight");
    assert_shape(q, 2, HEADS * HD, H, 0);
    ck_assert_int_eq(q->type, DTYPE_BF16);
    ck_assert(!q->gguf_layout);
    /* meta: config.json first, then keys only the other files have */
    ck_assert_int_eq(json_integer_value(json_object_get(mf->meta, "hidden_size")), H);
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "bos_token")), "<s>");
    ck_assert_double_eq(json_real_value(json_object_get(mf->meta, "temperature")), 0.6);
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "chat_template")),
                     "{{ bos_token }}");
    ck_assert_str_eq(
            json_string_value(json_object_get(
                    json_object_get(json_object_get(mf->meta, "tokenizer.json"), "model"), "type")),
            "BPE");
    model_file_close(mf);
}
END_TEST

static void hf_qwen35_weights(bool with_lm_head)
{
    struct fixture_st st = {0};
    char n[128];
    const char *p = "model.language_model.";
    snprintf(n, sizeof n, "%sembed_tokens.weight", p);
    st_zeros(&st, n, V, H, 0);
    snprintf(n, sizeof n, "%snorm.weight", p);
    st_zeros(&st, n, H, 0, 0);
    for (int i = 0; i < 3; i++) {
        snprintf(n, sizeof n, "%slayers.%d.linear_attn.in_proj_qkv.weight", p, i);
        st_zeros(&st, n, CONV, H, 0);
        snprintf(n, sizeof n, "%slayers.%d.linear_attn.conv1d.weight", p, i);
        st_zeros(&st, n, CONV, 1, KC);
        snprintf(n, sizeof n, "%slayers.%d.linear_attn.A_log", p, i);
        st_zeros(&st, n, NV, 0, 0);
    }
    snprintf(n, sizeof n, "%slayers.3.self_attn.q_proj.weight", p);
    st_zeros(&st, n, 2 * HEADS * 32, H, 0);
    snprintf(n, sizeof n, "%slayers.3.self_attn.q_norm.weight", p);
    st_zeros(&st, n, 32, 0, 0);
    st_zeros(&st, "model.visual.blocks.0.attn.qkv.weight", 8, 8, 0);
    st_zeros(&st, "mtp.fc.weight", H, 2 * H, 0);
    if (with_lm_head)
        st_zeros(&st, "lm_head.weight", V, H, 0);
    char *file = xasprintf("%s/model.safetensors", dir);
    fixture_st_write(&st, file);
    free(file);
}

static void hf_qwen35_config(bool layer_types, const char *tie)
{
    char *cfg =
            xasprintf("{\"architectures\": [\"Qwen3_5ForConditionalGeneration\"], \"model_type\": "
                      "\"qwen3_5\", \"tie_word_embeddings\": %s,"
                      " \"text_config\": {\"model_type\": \"qwen3_5_text\", \"vocab_size\": 32,"
                      " \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 4,"
                      " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
                      " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-06,"
                      " \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4,"
                      " \"linear_key_head_dim\": 16, \"linear_value_head_dim\": 16,"
                      " \"linear_conv_kernel_dim\": 4, %s"
                      " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000000,"
                      " \"partial_rotary_factor\": 0.25, \"mrope_section\": [11, 11, 10]},"
                      " \"eos_token_id\": 5},"
                      " \"vision_config\": {\"depth\": 1}}",
                      tie,
                      layer_types ? "\"layer_types\": [\"linear_attention\", \"linear_attention\","
                                    " \"linear_attention\", \"full_attention\"],"
                                  : "\"full_attention_interval\": 4,");
    hf_file("config.json", cfg);
    free(cfg);
}

START_TEST(test_hf_qwen35)
{
    hf_qwen35_config(_i == 0, "true");
    hf_qwen35_weights(false);
    hf_file("tokenizer_config.json", "{\"chat_template\": \"from tokenizer_config\"}");
    hf_file("chat_template.jinja", "{%- for m in messages %}{{ m.content }}{%- endfor %}\n");
    struct model_file *mf = open_ok(dir);
    const struct model_config *c = &mf->config;
    ck_assert_int_eq(c->arch, MODEL_ARCH_QWEN3_5);
    ck_assert_str_eq(c->arch_name, "qwen3_5");
    ck_assert_int_eq(c->hidden, H);
    ck_assert_int_eq(c->n_layers, 4);
    ck_assert_int_eq(c->head_dim, 32);
    ck_assert_int_eq(c->rotary_dim, 8);
    ck_assert_float_eq(c->rope_theta, 1e7f);
    ck_assert_float_eq(c->rms_eps, 1e-6f);
    ck_assert(c->rope_neox);
    ck_assert(c->tie_embeddings);
    ck_assert(c->norm_zero_centred);
    ck_assert(c->attn_output_gate);
    ck_assert(c->attn_qk_norm);
    ck_assert_int_eq(c->lin_k_heads, NK);
    ck_assert_int_eq(c->lin_v_heads, NV);
    ck_assert_int_eq(c->lin_k_dim, DK);
    ck_assert_int_eq(c->lin_v_dim, DV);
    ck_assert_int_eq(c->lin_conv_kernel, KC);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(c->layer_kinds[i], LAYER_KIND_LINEAR_ATTENTION);
    ck_assert_int_eq(c->layer_kinds[3], LAYER_KIND_ATTENTION);
    ck_assert_int_eq(c->eos_token_id, 5);
    ck_assert_int_eq(c->bos_token_id, -1);
    assert_shape(tensor(mf, "model.embed_tokens.weight"), 2, V, H, 0);
    assert_shape(tensor(mf, "model.layers.2.linear_attn.conv1d.weight"), 3, CONV, 1, KC);
    assert_shape(tensor(mf, "model.layers.0.linear_attn.A_log"), 1, NV, 0, 0);
    assert_shape(tensor(mf, "mtp.fc.weight"), 2, H, 2 * H, 0);
    ck_assert_ptr_null(model_file_tensor(mf, "model.visual.blocks.0.attn.qkv.weight"));
    ck_assert_ptr_null(model_file_tensor(mf, "model.language_model.norm.weight"));
    ck_assert_uint_eq(mf->n_tensors, 2 + 3 * 3 + 2 + 1);
    /* chat_template.jinja wins over tokenizer_config.json */
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "chat_template")),
                     "{%- for m in messages %}{{ m.content }}{%- endfor %}\n");
    ck_assert_ptr_nonnull(json_object_get(mf->meta, "text_config"));
    model_file_close(mf);
}
END_TEST

START_TEST(test_hf_template_list)
{
    hf_qwen35_config(true, "true");
    hf_qwen35_weights(false);
    hf_file("tokenizer_config.json",
            "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
            " {\"name\": \"default\", \"template\": \"D\"}]}");
    struct model_file *mf = open_ok(dir);
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "chat_template")), "D");
    model_file_close(mf);
}
END_TEST

START_TEST(test_hf_missing_field)
{
    static const char *const fields[] = {"hidden_size", "num_hidden_layers", "rms_norm_eps",
                                         "vocab_size", "model_type"};
    hf_llama_weights();
    char *cfg_path = xasprintf("%s/config.json", dir);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *cfg = json_loads(llama_config, 0, NULL);
        ck_assert_ptr_nonnull(cfg);
        json_object_del(cfg, fields[i]);
        ck_assert_int_eq(json_dump_file(cfg, cfg_path, 0), 0);
        json_decref(cfg);
        char *want = xasprintf("missing required field '%s'", fields[i]);
        expect_error(dir, cfg_path, want);
        free(want);
    }
    /* qwen3_5 needs its linear-attention sizes */
    hf_qwen35_weights(false);
    hf_file("config.json",
            "{\"model_type\": \"qwen3_5\", \"text_config\": {\"vocab_size\": 32,"
            " \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 4,"
            " \"num_attention_heads\": 4, \"max_position_embeddings\": 4096,"
            " \"rms_norm_eps\": 1e-06, \"linear_num_key_heads\": 2}}");
    expect_error(dir, cfg_path, "missing required field 'linear_num_value_heads'");
    free(cfg_path);
}
END_TEST

START_TEST(test_hf_refusals)
{
    char *cfg_path = xasprintf("%s/config.json", dir);
    hf_llama_weights();
    hf_file("config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64}");
    char *want = xasprintf("%s: architecture 'gpt2' is not supported (supported: llama, "
                           "mistral, qwen2, qwen3, qwen3_5)",
                           cfg_path);
    expect_error(dir, cfg_path, want);
    ck_assert_str_eq(err, want);
    free(want);

    hf_file("config.json", "{\"model_type\": \"llama\", ");
    expect_error(dir, cfg_path, "not valid JSON");
    hf_file("config.json", "[1, 2]");
    expect_error(dir, cfg_path, "not a JSON object");

    /* untied config without lm_head */
    hf_qwen35_config(true, "false");
    hf_qwen35_weights(false);
    expect_error(dir, cfg_path,
                 "tie_word_embeddings is false but the checkpoint has no "
                 "lm_head.weight");

    /* layer_types of the wrong length */
    hf_file("config.json",
            "{\"model_type\": \"qwen3_5_text\", \"vocab_size\": 32, \"hidden_size\": 64,"
            " \"intermediate_size\": 96, \"num_hidden_layers\": 4, \"num_attention_heads\": 4,"
            " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-06,"
            " \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4,"
            " \"linear_key_head_dim\": 16, \"linear_value_head_dim\": 16,"
            " \"linear_conv_kernel_dim\": 4, \"layer_types\": [\"full_attention\"]}");
    expect_error(dir, cfg_path, "'layer_types' must list one type for each of the 4 layers");

    /* no config.json at all */
    remove(cfg_path);
    expect_error(dir, cfg_path, "cannot open: No such file or directory");
    free(cfg_path);

    /* no weights */
    char *st = xasprintf("%s/model.safetensors", dir);
    remove(st);
    free(st);
    hf_file("config.json", llama_config);
    expect_error(dir, dir, "no model.safetensors or model.safetensors.index.json");
}
END_TEST

/* A config alone (neuron-bench): the 27B shape of bench/configs, and a refusal. */
START_TEST(test_config_from_json)
{
    const char *src = getenv("CORTEX_SOURCE_DIR");
    char *cfg = xasprintf("%s/bench/configs/qwen36_27b.json", src ? src : ".");
    json_error_t jerr;
    json_t *j = json_load_file(cfg, 0, &jerr);
    ck_assert_msg(j != NULL, "%s: %s", cfg, jerr.text);
    struct model_config c;
    char msg[256];
    ck_assert_int_eq(model_file_config_from_json(j, cfg, &c, msg, sizeof(msg)), 0);
    ck_assert_int_eq(c.arch, MODEL_ARCH_QWEN3_5);
    ck_assert_int_eq(c.n_layers, 64);
    ck_assert_int_eq(c.hidden, 5120);
    ck_assert_int_eq(c.vocab_size, 248320);
    ck_assert_int_eq(c.n_heads, 24);
    ck_assert_int_eq(c.n_kv_heads, 4);
    ck_assert_int_eq(c.head_dim, 256);
    ck_assert_int_eq(c.rotary_dim, 64);
    ck_assert_int_eq(c.lin_k_heads, 16);
    ck_assert_int_eq(c.lin_v_heads, 48);
    ck_assert(c.attn_output_gate && c.attn_qk_norm && !c.attn_qkv_bias);
    ck_assert(!c.tie_embeddings && c.norm_zero_centred);
    for (int l = 0; l < 64; l++)
        ck_assert_int_eq(c.layer_kinds[l],
                         (l + 1) % 4 == 0 ? LAYER_KIND_ATTENTION : LAYER_KIND_LINEAR_ATTENTION);
    json_object_del(j, "hidden_size");
    ck_assert_int_eq(model_file_config_from_json(j, cfg, &c, msg, sizeof(msg)), -1);
    ck_assert_msg(strstr(msg, "hidden_size") != NULL, "%s", msg);
    json_decref(j);
    free(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_file");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_gguf_llama);
    tcase_add_test(tc, test_gguf_qwen2_qwen3);
    tcase_add_loop_test(tc, test_gguf_qwen35, 0, 2);
    tcase_add_test(tc, test_gguf_unsupported_arch);
    tcase_add_test(tc, test_gguf_missing_fields);
    tcase_add_test(tc, test_gguf_bad_values);
    tcase_add_test(tc, test_gguf_damaged);
    tcase_add_test(tc, test_hf_llama);
    tcase_add_loop_test(tc, test_hf_qwen35, 0, 2);
    tcase_add_test(tc, test_hf_template_list);
    tcase_add_test(tc, test_hf_missing_field);
    tcase_add_test(tc, test_hf_refusals);
    tcase_add_test(tc, test_config_from_json);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
