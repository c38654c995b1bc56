/*
 * tests/kernels/test_cuda_prefix.c — prefix caching in the CUDA backend (neuron/cuda_model.h:
 * cuda_model_prefix_save / restore / release, block reference counts) end to end on the tiny
 * fixtures (llama: attention only; qwen3_5: attention and Gated DeltaNet) and on random-weight
 * qwen3_5 models of random shapes, block sizes and prompt lengths.
 *
 * Every sequence's prompt is one shared prefix of L tokens (a multiple of the KV block) followed
 * by a suffix of its own. References: each sequence run cold, alone, on a model whose pool grows
 * (its whole prompt in one call, then STEPS decode steps). On a second model with a pool reserved
 * at load, a first request reads the prefix, saves it, then finishes its own prompt and decodes:
 * it must still give the cold logits. It is released; then NSEQ slots restore the prefix and
 * read their suffixes together in one call, and decode together (through graphs, then again on
 * a model without graphs); half-way the prefix is released while the slots still use it. Every
 * prefill's last row and every decode step must equal the cold run within BOUND_BATCHED (one
 * long call against a restored state plus a short one: the bf16 rounding of the batched
 * products differs). cuda_model_cache_stats() checks the bookkeeping at each point: the
 * prefix's blocks stay off the free list while anything references them (shared while a slot
 * does too), the pool never grows, and every block is free at the end; prefix_bytes counts the
 * GDN snapshot (computed here from the configuration) plus the blocks only the prefix holds.
 * Bad arguments are refused. Exits 77 without a GPU (ktest_init). CORTEX_SOURCE_DIR locates
 * tests/fixtures.
 */
#include "cuda_model.h"
#include "kmodel.h"
#include "ktest.h"
#include "model_file.h"
#include "xalloc.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* test_cuda_paged's bound: batched rows against single ones, bf16 activations. */
#define BOUND_BATCHED 1.5e-2
#define NSEQ          3
#define STEPS         4

/* One case: a model (file or random configuration), its block size and prompts. */
struct pcase {
    char name[160];
    const struct model_file *mf; /* or NULL: random weights of cfg */
    struct model_config cfg;
    int block;
    int64_t L;       /* shared prefix tokens, a multiple of block */
    int64_t m[NSEQ]; /* suffix tokens of each sequence */
    int64_t max_context;
};

static const char *source_dir(void)
{
    const char *s = getenv("CORTEX_SOURCE_DIR");
    return s ? s : ".";
}

static void fail_case(const char *what, const char *name, const char *err)
{
    fprintf(stderr, "FAIL %s(%s): %s\n", what, name, err);
    float z = 0;
    ktest_check(what, name, -1, &z, &z, 1, 1);
}

static void check_count(const char *what, const char *name, int64_t got, int64_t want)
{
    float g = (float)got, w = (float)want;
    if (got != want)
        fprintf(stderr, "%s %s: %lld, want %lld\n", name, what, (long long)got, (long long)want);
    ktest_check(what, name, 0, &g, &w, 1, 1e-9);
}

static int create(const struct pcase *c, int block, uint64_t cache_bytes, bool no_graphs,
                  struct cuda_model **g)
{
    char err[512];
    struct cuda_model_options o = {.device = 0,
                                   .max_context = c->max_context,
                                   .kv_block = block,
                                   .cache_bytes = cache_bytes,
                                   .no_graphs = no_graphs};
    int rc = c->mf ? cuda_model_create(c->mf, &o, g, err, sizeof(err))
                   : cuda_model_create_random(&c->cfg, c->name, 11, &o, g, err, sizeof(err));
    if (rc)
        fail_case("create", c->name, err);
    return rc;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Bytes of one GDN snapshot from the configuration alone (fp32 conv + recurrent state of every
 * linear-attention layer). */
static uint64_t snapshot_bytes(const struct model_config *c)
{
    if (c->arch != MODEL_ARCH_QWEN3_5)
        return 0;
    int64_t conv =
            2 * (int64_t)c->lin_k_heads * c->lin_k_dim + (int64_t)c->lin_v_heads * c->lin_v_dim;
    int64_t per = (int64_t)(c->lin_conv_kernel - 1) * conv +
                  (int64_t)c->lin_v_heads * c->lin_k_dim * c->lin_v_dim;
    uint64_t n = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION)
            n += 4 * (uint64_t)per;
    return n;
}

/* The prompts: prefix then suffix i; the decode tokens dec[i][s]. */
struct inputs {
    int32_t *prompt[NSEQ];
    int32_t dec[NSEQ][STEPS];
};

/* The cold references: each sequence alone, whole prompt in one call. */
static int cold_refs(struct cuda_model *g, const struct pcase *c, const struct inputs *in,
                     int64_t V, float *pre, float *dec)
{
    int rc = 0;
    for (int i = 0; i < NSEQ && rc == 0; i++) {
        int slot = -1;
        if (kmodel_acquire(g, &slot))
            return -1;
        int64_t past = 0, n = c->L + c->m[i], one = 1;
        const int32_t *t = in->prompt[i];
        rc = kmodel_forward(g, 1, &slot, &past, &t, &n, pre + i * V);
        past = n;
        for (int s = 0; s < STEPS && rc == 0; s++, past++) {
            const int32_t *d = &in->dec[i][s];
            rc = kmodel_forward(g, 1, &slot, &past, &d, &one, dec + ((int64_t)i * STEPS + s) * V);
        }
        cuda_model_slot_release(g, slot);
    }
    return rc;
}

/* The prefix model: first request saves, NSEQ slots restore. */
static void run_prefix(const struct pcase *c, const struct inputs *in, int64_t V, const float *cpre,
                       const float *cdec, uint64_t block_bytes1, bool no_graphs)
{
    char err[512], shape[256];
    const int B = c->block;
    const int64_t P = c->L / B;
    int64_t own = 0;
    for (int i = 0; i < NSEQ; i++)
        own += ceil_div(c->L + c->m[i] + STEPS, B) - P;
    int64_t first = ceil_div(c->L + c->m[0] + STEPS, B) - P;
    int64_t pool = P + own + first + 2;
    struct cuda_model *g = NULL;
    if (create(c, B, (uint64_t)pool * block_bytes1 * (uint64_t)B, no_graphs, &g))
        return;
    const char *gr = no_graphs ? "no graphs" : "graphs";
    struct cuda_model_cache_stats st;
    cuda_model_cache_stats(g, &st);
    check_count("pool reserved", c->name, st.blocks, pool);
    check_count("kv_block", c->name, cuda_model_kv_block(g), B);
    float *pre = xcalloc((size_t)(NSEQ * V), sizeof(float));
    float *dec = xcalloc((size_t)(NSEQ * STEPS * V), sizeof(float));
    float *row = xcalloc((size_t)(NSEQ * V), sizeof(float));
    int slots[NSEQ] = {-1, -1, -1}, w = -1, pfx = -1, rc = kmodel_acquire(g, &w);

    /* the first request: the prefix, saved, then the rest of its prompt and its decode steps */
    int64_t past = 0, one = 1, L = c->L;
    const int32_t *t = in->prompt[0];
    if (rc == 0)
        rc = kmodel_forward(g, 1, &w, &past, &t, &L, row);
    if (rc == 0 && (rc = cuda_model_prefix_save(g, w, c->L, &pfx, err, sizeof(err))) != 0)
        fprintf(stderr, "cuda_model_prefix_save: %s\n", err);
    cuda_model_cache_stats(g, &st);
    check_count("free after save", c->name, st.blocks_free, pool - P);
    check_count("shared after save", c->name, st.blocks_shared, P);
    uint64_t snap = snapshot_bytes(&c->cfg);
    check_count("prefix bytes while its writer lives", c->name,
                (int64_t)cuda_model_prefix_bytes(g, pfx), (int64_t)snap);
    past = c->L, t = in->prompt[0] + c->L;
    if (rc == 0)
        rc = kmodel_forward(g, 1, &w, &past, &t, &c->m[0], pre);
    past += c->m[0];
    for (int s = 0; s < STEPS && rc == 0; s++, past++) {
        const int32_t *d = &in->dec[0][s];
        rc = kmodel_forward(g, 1, &w, &past, &d, &one, dec + s * V);
    }
    snprintf(shape, sizeof(shape), "%s first request, L %lld + %lld, %s", c->name, (long long)c->L,
             (long long)c->m[0], gr);
    ktest_check("saving leaves the writer's prefill", shape, rc, pre, cpre, (size_t)V,
                BOUND_BATCHED);
    ktest_check("saving leaves the writer's decode", shape, rc, dec, cdec, (size_t)(STEPS * V),
                BOUND_BATCHED);
    cuda_model_slot_release(g, w);
    cuda_model_cache_stats(g, &st);
    check_count("prefix blocks kept after the writer left", c->name, st.blocks_free, pool - P);
    check_count("nothing shared after the writer left", c->name, st.blocks_shared, 0);
    check_count("prefix bytes alone", c->name, (int64_t)cuda_model_prefix_bytes(g, pfx),
                (int64_t)(snap + (uint64_t)P * st.block_bytes));

    /* refusals: unknown prefix, unaligned length; nothing changes */
    int bad = -1, pb = -1;
    if (rc == 0 && kmodel_acquire(g, &bad) == 0) {
        int r1 = cuda_model_prefix_restore(g, pfx + 7, bad, err, sizeof(err));
        int r2 = cuda_model_prefix_save(g, bad, B + 1, &pb, err, sizeof(err));
        int r3 = cuda_model_prefix_restore(g, pfx, bad + 100, err, sizeof(err));
        float z = 0;
        ktest_check("bad prefix arguments refused", c->name,
                    r1 == -1 && r2 == -1 && r3 == -1 && pb == -1 ? 0 : -1, &z, &z, 1, 1);
        cuda_model_slot_release(g, bad);
    }

    /* NSEQ slots restore the prefix and read their suffixes in one call */
    for (int i = 0; i < NSEQ && rc == 0; i++) {
        rc = kmodel_acquire(g, &slots[i]);
        if (rc == 0 && (rc = cuda_model_prefix_restore(g, pfx, slots[i], err, sizeof(err))) != 0)
            fprintf(stderr, "cuda_model_prefix_restore: %s\n", err);
    }
    cuda_model_cache_stats(g, &st);
    check_count("free after the restores", c->name, st.blocks_free, pool - P);
    check_count("shared after the restores", c->name, st.blocks_shared, P);
    int64_t pp[NSEQ], nt[NSEQ], ones[NSEQ];
    const int32_t *tk[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        pp[i] = c->L, nt[i] = c->m[i], ones[i] = 1;
        tk[i] = in->prompt[i] + c->L;
    }
    if (rc == 0)
        rc = kmodel_forward(g, NSEQ, slots, pp, tk, nt, pre);
    snprintf(shape, sizeof(shape), "%s %d restored, L %lld + %lld/%lld/%lld, block %d", c->name,
             NSEQ, (long long)c->L, (long long)c->m[0], (long long)c->m[1], (long long)c->m[2], B);
    ktest_check("restored prefill vs cold", shape, rc, pre, cpre, (size_t)(NSEQ * V),
                BOUND_BATCHED);
    for (int i = 0; i < NSEQ; i++)
        pp[i] += c->m[i];
    for (int s = 0; s < STEPS && rc == 0; s++) {
        if (s == STEPS / 2) { /* the prefix goes while the slots still read its blocks */
            cuda_model_cache_stats(g, &st);
            int64_t free_before = st.blocks_free;
            cuda_model_prefix_release(g, pfx);
            cuda_model_prefix_release(g, -1);
            cuda_model_cache_stats(g, &st);
            check_count("release while used frees nothing", c->name, st.blocks_free, free_before);
            check_count("still shared by the slots", c->name, st.blocks_shared, P);
            check_count("released prefix has no bytes", c->name,
                        (int64_t)cuda_model_prefix_bytes(g, pfx), 0);
        }
        for (int i = 0; i < NSEQ; i++)
            tk[i] = &in->dec[i][s];
        rc = kmodel_forward(g, NSEQ, slots, pp, tk, ones, row);
        for (int i = 0; i < NSEQ; i++) {
            memcpy(dec + ((int64_t)i * STEPS + s) * V, row + i * V, sizeof(float) * (size_t)V);
            pp[i]++;
        }
    }
    snprintf(shape, sizeof(shape), "%s %d restored x %d steps, %s", c->name, NSEQ, STEPS, gr);
    ktest_check("restored decode vs cold", shape, rc, dec, cdec, (size_t)(NSEQ * STEPS * V),
                BOUND_BATCHED);
    cuda_model_cache_stats(g, &st);
    check_count("pool did not grow", c->name, st.blocks, pool);
    check_count("free with the slots holding", c->name, st.blocks_free, pool - P - own);
    for (int i = 0; i < NSEQ; i++)
        cuda_model_slot_release(g, slots[i]);
    cuda_model_cache_stats(g, &st);
    check_count("every block free at the end", c->name, st.blocks_free, pool);
    check_count("nothing shared at the end", c->name, st.blocks_shared, 0);
    free(pre), free(dec), free(row);
    cuda_model_destroy(g);
}

static void run_case(const struct pcase *c)
{
    int64_t V = c->cfg.vocab_size;
    struct inputs in;
    for (int i = 0; i < NSEQ; i++) {
        int64_t n = c->L + c->m[i];
        in.prompt[i] = xmalloc(sizeof(int32_t) * (size_t)n);
        for (int64_t j = 0; j < n; j++)
            in.prompt[i][j] = j < c->L && i > 0 ? in.prompt[0][j] : (int32_t)ktest_below(V);
        for (int s = 0; s < STEPS; s++)
            in.dec[i][s] = (int32_t)ktest_below(V);
    }
    float *cpre = xmalloc(sizeof(float) * (size_t)(NSEQ * V));
    float *cdec = xmalloc(sizeof(float) * (size_t)(NSEQ * STEPS * V));
    struct cuda_model *cold = NULL;
    if (create(c, c->block, 0, false, &cold) == 0) {
        struct cuda_model_cache_stats st;
        cuda_model_cache_stats(cold, &st);
        uint64_t per_position = st.block_bytes / (uint64_t)st.block_size;
        if (cold_refs(cold, c, &in, V, cpre, cdec) == 0) {
            cuda_model_destroy(cold);
            cold = NULL;
            run_prefix(c, &in, V, cpre, cdec, per_position, false);
            run_prefix(c, &in, V, cpre, cdec, per_position, true);
        } else {
            fail_case("cold references", c->name, "forward failed");
        }
    }
    cuda_model_destroy(cold);
    for (int i = 0; i < NSEQ; i++)
        free(in.prompt[i]);
    free(cpre), free(cdec);
}

static void run_fixture(const char *name, int block, int64_t L, int64_t m0, int64_t m1, int64_t m2)
{
    char dir[1200], err[512];
    snprintf(dir, sizeof(dir), "%s/tests/fixtures/%s", source_dir(), name);
    struct model_file *mf = NULL;
    if (model_file_open(dir, &mf, err, sizeof(err))) {
        fail_case("model_file_open", name, err);
        return;
    }
    struct pcase c = {.mf = mf,
                      .cfg = mf->config,
                      .block = block,
                      .L = L,
                      .m = {m0, m1, m2},
                      .max_context = 256};
    snprintf(c.name, sizeof(c.name), "%s", name);
    run_case(&c);
    model_file_close(mf);
}

/* The qwen3_5 fixture's configuration at a random larger shape, random weights, random block
 * size and prompt lengths (the prefix crosses the chunked GDN prefill's 64 tokens at times). */
static void run_random(int k)
{
    char path[1200], err[512];
    snprintf(path, sizeof(path), "%s/tests/fixtures/qwen3_5/config.json", source_dir());
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) {
        fail_case("config", "random qwen3_5", jerr.text);
        return;
    }
    static const int hds[] = {64, 128}, kvs[] = {1, 2}, lins[] = {32, 64}, blocks[] = {8, 16, 32};
    int hd = hds[ktest_below(2)], kv = kvs[ktest_below(2)], lin = lins[ktest_below(2)];
    int nk = 1 + (int)ktest_below(4), block = blocks[ktest_below(3)];
    int64_t vocab = 300 + ktest_below(1200);
    json_t *t = json_object_get(j, "text_config");
    json_object_set_new(t, "hidden_size", json_integer(128 * (1 + ktest_below(3))));
    json_object_set_new(t, "head_dim", json_integer(hd));
    json_object_set_new(t, "num_attention_heads", json_integer(kv * (1 + ktest_below(4))));
    json_object_set_new(t, "num_key_value_heads", json_integer(kv));
    json_object_set_new(t, "linear_num_key_heads", json_integer(nk));
    json_object_set_new(t, "linear_num_value_heads", json_integer(nk * (1 + ktest_below(2))));
    json_object_set_new(t, "linear_key_head_dim", json_integer(lin));
    json_object_set_new(t, "linear_value_head_dim", json_integer(lin));
    json_object_set_new(t, "intermediate_size", json_integer(128 * (1 + ktest_below(4))));
    json_object_set_new(t, "vocab_size", json_integer(vocab));
    json_object_set_new(t, "max_position_embeddings", json_integer(512));
    struct pcase c = {.block = block, .max_context = 512};
    int rc = model_file_config_from_json(j, "random qwen3_5", &c.cfg, err, sizeof(err));
    json_decref(j);
    if (rc) {
        fail_case("config", "random qwen3_5", err);
        return;
    }
    c.L = block * (1 + ktest_below(160 / block));
    for (int i = 0; i < NSEQ; i++)
        c.m[i] = 1 + ktest_below(80);
    snprintf(c.name, sizeof(c.name), "random%d qwen3_5 H%lld hd%d kv%d lin%dx%d V%lld", k,
             (long long)c.cfg.hidden, hd, kv, nk, lin, (long long)vocab);
    run_case(&c);
}

int main(void)
{
    ktest_init("test_cuda_prefix");
    /* fixtures: prefixes of 1 and several blocks, suffixes of 1 token up to past a block */
    run_fixture("llama", 4, 4, 1, 9, 3);
    run_fixture("llama", 8, 40, 7, 1, 20);
    run_fixture("qwen3_5", 4, 4, 1, 9, 3);
    run_fixture("qwen3_5", 16, 96, 5, 33, 1);
    for (int k = 0; k < 3; k++)
        run_random(k);
    return ktest_finish();
}
