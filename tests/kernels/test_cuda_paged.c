/*
 * tests/kernels/test_cuda_paged.c — the CUDA backend's paged KV cache (neuron/cuda_model.h)
 * end to end on the tiny fixtures (llama: attention only; qwen3_5: attention and Gated
 * DeltaNet), through cuda_model directly.
 *
 * Six sequences of mixed prompt lengths (1 to 64 tokens) run one at a time on a model whose
 * block pool grows on demand; then together on a model with blocks of 4 positions and a pool
 * reserved at load (options.cache_bytes): prompts read 8 tokens per sequence per call, all
 * sequences in each call (so their blocks interleave in the pool), then decode steps of the
 * whole batch through CUDA graphs. Every prefill's last row and every decode step must give
 * the logits of the sequence alone. The pool's bookkeeping is checked through
 * cuda_model_cache_stats(): blocks held = the sequences' ceil(length / 4), released slots give
 * their blocks back, a new sequence after that takes freed blocks (the pool does not grow) and
 * still gives its alone logits, and a sequence wanting more blocks than are free is refused.
 * Exits 77 without a GPU (ktest_init). CORTEX_SOURCE_DIR locates tests/fixtures.
 */
#include "cuda_model.h"
#include "kmodel.h"
#include "ktest.h"
#include "model_file.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Batched rows (cuBLASLt, the norm to bf16) against single ones (cuda_matvec_rms): the
 * activations' bf16 rounding differs; test_cuda_model's BOUND_BATCHED. */
#define BOUND_BATCHED 1.5e-2
#define NS            6
#define STEPS         5
#define BLOCK         4
#define CHUNK         8

static const int64_t plen[NS] = {37, 5, 64, 1, 23, 50};

struct ref {
    float *prefill; /* [NS][V] last prompt row */
    float *decode;  /* [NS][STEPS][V] */
};

/* Sequence i alone: its prompt in one call, then STEPS decode steps. */
static int run_alone(struct cuda_model *g, int32_t *const *prompt, const int32_t *dec, int i,
                     int64_t V, float *pre, float *steps)
{
    int slot = -1;
    if (kmodel_acquire(g, &slot))
        return -1;
    int64_t past = 0;
    const int32_t *t = prompt[i];
    int rc = kmodel_forward(g, 1, &slot, &past, &t, &plen[i], pre);
    past = plen[i];
    for (int s = 0; s < STEPS && rc == 0; s++, past++) {
        int64_t one = 1;
        const int32_t *d = &dec[s];
        rc = kmodel_forward(g, 1, &slot, &past, &d, &one, steps + s * V);
    }
    cuda_model_slot_release(g, slot);
    return rc;
}

static int64_t blocks_for(int64_t positions)
{
    return (positions + BLOCK - 1) / BLOCK;
}

static void check_count(const char *what, const char *name, int64_t got, int64_t want)
{
    float g = (float)got, w = (float)want;
    if (got != want)
        fprintf(stderr, "%s %s: %lld, want %lld\n", name, what, (long long)got, (long long)want);
    ktest_check(what, name, 0, &g, &w, 1, 1e-9);
}

static void run_fixture(const char *name)
{
    char dir[1200], err[512];
    const char *src = getenv("CORTEX_SOURCE_DIR");
    snprintf(dir, sizeof(dir), "%s/tests/fixtures/%s", src ? src : ".", name);
    struct model_file *mf = NULL;
    if (model_file_open(dir, &mf, err, sizeof(err))) {
        fprintf(stderr, "FAIL model_file_open: %s\n", err);
        exit(1);
    }
    int64_t V = mf->config.vocab_size;
    int32_t *prompt[NS], dec[STEPS];
    for (int i = 0; i < NS; i++) {
        prompt[i] = xmalloc(sizeof(int32_t) * (size_t)plen[i]);
        for (int64_t j = 0; j < plen[i]; j++)
            prompt[i][j] = (int32_t)ktest_below(V);
    }
    for (int s = 0; s < STEPS; s++)
        dec[s] = (int32_t)ktest_below(V);
    struct ref ref = {xmalloc(sizeof(float) * (size_t)(NS * V)),
                      xmalloc(sizeof(float) * (size_t)(NS * STEPS * V))};
    float *pre = xmalloc(sizeof(float) * (size_t)(NS * V));
    float *dec_got = xmalloc(sizeof(float) * (size_t)(NS * STEPS * V));
    float *row = xmalloc(sizeof(float) * (size_t)(NS * V));
    struct cuda_model *alone = NULL, *g = NULL;
    struct cuda_model_options ao = {.device = 0, .max_context = 256};
    int rc = cuda_model_create(mf, &ao, &alone, err, sizeof(err));
    for (int i = 0; i < NS && rc == 0; i++)
        rc = run_alone(alone, prompt, dec, i, V, ref.prefill + i * V,
                       ref.decode + (int64_t)i * STEPS * V);
    if (rc) {
        fprintf(stderr, "FAIL %s alone: %s\n", name, err);
        float z = 0;
        ktest_check("sequences alone", name, -1, &z, &z, 1, 1);
        goto out;
    }

    /* the pool: what the six sequences hold at the end, plus 3 */
    int64_t held = 0;
    for (int i = 0; i < NS; i++)
        held += blocks_for(plen[i] + STEPS);
    int64_t pool = held + 3;
    struct cuda_model_cache_stats st;
    cuda_model_cache_stats(alone, &st);
    struct cuda_model_options po = {.device = 0,
                                    .max_context = 256,
                                    .kv_block = BLOCK,
                                    .cache_bytes = (uint64_t)pool * st.block_bytes /
                                                   (uint64_t)st.block_size * BLOCK};
    rc = cuda_model_create(mf, &po, &g, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "FAIL %s paged model: %s\n", name, err);
        float z = 0;
        ktest_check("paged model", name, -1, &z, &z, 1, 1);
        goto out;
    }
    cuda_model_cache_stats(g, &st);
    check_count("pool blocks reserved at load", name, st.blocks, pool);

    int slots[NS];
    int64_t past[NS] = {0};
    for (int i = 0; i < NS && rc == 0; i++)
        rc = kmodel_acquire(g, &slots[i]);
    /* chunked prefill: every sequence with prompt left reads up to CHUNK tokens per call */
    for (int64_t done = 0; rc == 0 && done < 64; done += CHUNK) {
        int idx[NS], ss[NS], n = 0;
        int64_t pp[NS], nt[NS];
        const int32_t *tk[NS];
        for (int i = 0; i < NS; i++) {
            if (done >= plen[i])
                continue;
            idx[n] = i, ss[n] = slots[i], pp[n] = done;
            nt[n] = plen[i] - done < CHUNK ? plen[i] - done : CHUNK;
            tk[n] = prompt[i] + done;
            n++;
        }
        rc = kmodel_forward(g, n, ss, pp, tk, nt, row);
        for (int k = 0; k < n && rc == 0; k++)
            if (pp[k] + nt[k] == plen[idx[k]])
                memcpy(pre + idx[k] * V, row + k * V, sizeof(float) * (size_t)V);
    }
    for (int i = 0; i < NS; i++)
        past[i] = plen[i];
    char shape[128];
    snprintf(shape, sizeof(shape), "%s %d seqs, prompts 1-64 in chunks of %d, block %d", name, NS,
             CHUNK, BLOCK);
    ktest_check("paged chunked prefill vs alone", shape, rc, pre, ref.prefill, (size_t)(NS * V),
                BOUND_BATCHED);
    for (int s = 0; s < STEPS && rc == 0; s++) {
        const int32_t *tk[NS];
        int64_t ones[NS];
        for (int i = 0; i < NS; i++)
            tk[i] = &dec[s], ones[i] = 1;
        rc = kmodel_forward(g, NS, slots, past, tk, ones, row);
        for (int i = 0; i < NS; i++) {
            memcpy(dec_got + ((int64_t)i * STEPS + s) * V, row + i * V, sizeof(float) * (size_t)V);
            past[i]++;
        }
    }
    snprintf(shape, sizeof(shape), "%s %d seqs x %d steps (graphs)", name, NS, STEPS);
    ktest_check("paged batched decode vs alone", shape, rc, dec_got, ref.decode,
                (size_t)(NS * STEPS * V), BOUND_BATCHED);

    cuda_model_cache_stats(g, &st);
    check_count("blocks free after the batch", name, st.blocks_free, pool - held);
    check_count("blocks handed out", name, (int64_t)st.block_allocs, held);
    /* release sequences 0, 2 and 4: their blocks come back */
    int64_t back = 0;
    for (int i = 0; i < NS; i += 2) {
        cuda_model_slot_release(g, slots[i]);
        back += blocks_for(plen[i] + STEPS);
    }
    cuda_model_cache_stats(g, &st);
    check_count("blocks free after releases", name, st.blocks_free, pool - held + back);
    /* sequence 2 (64 tokens + 5) again in a new slot: only freed blocks can hold it */
    float *steps = xmalloc(sizeof(float) * (size_t)(STEPS * V));
    rc = run_alone(g, prompt, dec, 2, V, row, steps);
    memcpy(row + V, steps + (STEPS - 1) * V, sizeof(float) * (size_t)V);
    memcpy(pre, ref.prefill + 2 * V, sizeof(float) * (size_t)V);
    memcpy(pre + V, ref.decode + ((int64_t)2 * STEPS + STEPS - 1) * V, sizeof(float) * (size_t)V);
    snprintf(shape, sizeof(shape), "%s 69 tokens in freed blocks", name);
    ktest_check("reused blocks vs alone", shape, rc, row, pre, (size_t)(2 * V), BOUND_BATCHED);
    free(steps);
    cuda_model_cache_stats(g, &st);
    check_count("pool did not grow", name, st.blocks, pool);
    check_count("blocks handed out incl. reuse", name, (int64_t)st.block_allocs,
                held + blocks_for(plen[2] + STEPS));
    check_count("blocks free after the reuse", name, st.blocks_free, pool - held + back);

    /* more blocks than are free: refused, and the cache still serves afterwards */
    int big = -1;
    if (kmodel_acquire(g, &big) == 0) {
        int32_t *toks = xcalloc(256, sizeof(int32_t));
        int64_t zero = 0, n = (pool - held + back + 1) * BLOCK;
        if (n > 256)
            n = 256;
        const int32_t *tp = toks;
        int frc = cuda_model_forward(g, &big, &zero, &tp, &n, 1, MODEL_LOGITS_LAST, row, err,
                                     sizeof(err));
        float z = 0;
        bool full = frc == -1 && strstr(err, "full");
        if (!full)
            fprintf(stderr, "%s: wanted a 'cache full' refusal, got %d (%s)\n", name, frc, err);
        ktest_check("cache full refused", name, full ? 0 : -1, &z, &z, 1, 1);
        cuda_model_slot_release(g, big);
        free(toks);
    }
    cuda_model_cache_stats(g, &st);
    check_count("blocks free after the refusal", name, st.blocks_free, pool - held + back);
    for (int i = 1; i < NS; i += 2)
        cuda_model_slot_release(g, slots[i]);
    cuda_model_cache_stats(g, &st);
    check_count("every block free at the end", name, st.blocks_free, pool);
out:
    cuda_model_destroy(g);
    cuda_model_destroy(alone);
    for (int i = 0; i < NS; i++)
        free(prompt[i]);
    free(ref.prefill), free(ref.decode), free(pre), free(dec_got), free(row);
    model_file_close(mf);
}

int main(void)
{
    ktest_init("test_cuda_paged");
    run_fixture("llama");
    run_fixture("qwen3_5");
    return ktest_finish();
}
