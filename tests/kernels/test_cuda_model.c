/*
 * tests/kernels/test_cuda_model.c — the whole forward pass on the GPU (neuron/cuda_model.c,
 * through model.h with device "cuda:0") against HF transformers' golden logits and against the CPU
 * backend.
 *
 * For each tiny fixture of tests/fixtures (llama, qwen2, qwen3, qwen3_5; made by
 * make_fixtures.py): the prefill logits of every position, then token-by-token decode (each step a
 * CUDA graph), within bf16 tolerance of HF's; a prefill split in two pieces; several sequences of
 * different lengths decoded in one batch (graph and launch by launch) equal to each decoded alone;
 * a batch mixing a prefill with decode rows; and greedy token ids equal to the CPU backend's in
 * the same process. The same greedy comparison runs on a random-weight model of SmolLM2-135M's
 * shape stored as GGUF Q4_1 (written by this test), which exercises the host dequantisation of the
 * upload, on the real SmolLM2-135M-Instruct Q4_1 file when CORTEX_SMOLLM2_GGUF names it, and on a
 * random qwen35 GGUF with more value than key heads (stored tiled; the GPU reorders them on
 * upload), whose 80-token prompt (past one chunk of the chunked GDN prefill) must also give the
 * CPU backend's last-row logits. Greedy steps where the two backends' choices differ are allowed
 * only where the CPU's logits for the two tokens are within 1% of the row's largest |logit| (15%
 * for the random qwen35 GGUF, whose rows differ between the backends by up to that) (a near tie
 * that bf16 rounding may break either way); the CPU's choice is then fed to both. Exits 77 without
 * a GPU (ktest_init). CORTEX_SOURCE_DIR (default: the current directory) locates tests/fixtures.
 */
#include "cuda_model.h"
#include "dtype.h"
#include "ktest.h"
#include "model.h"
#include "model_file.h"
#include "xalloc.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* bf16 weights and activations against HF's fp32. For scale: the CPU backend (fp32) with the
 * fixtures' weights rounded to bf16 is 3.9e-3 (llama) and 1.2e-2 (qwen3_5) from HF over the
 * whole prefill, and 4.8e-2 on qwen3_5's worst single row; the GPU measured 5.5e-3 and 1.35e-2
 * (H100, 2026-11-25). One row alone gets the looser bound. */
#define BOUND_GOLDEN     2e-2
#define BOUND_GOLDEN_ROW 6e-2
#define BOUND_RANDOM_ROW 1.5e-1
#define BOUND_SAME       5e-3 /* GPU against GPU: only summation order and batch kernels differ */
/* Batched decode (NB = 4 rows: the norm to bf16, then cuBLASLt) against one sequence at a time
 * (1 row: cuda_matvec_rms, which reads the fp32 residual): the activations' bf16 rounding
 * differs too. Measured on an H200 (2026-11-26): 6.9e-3 on qwen3_5, under 5e-3 elsewhere. */
#define BOUND_BATCHED 1.5e-2
#define NEAR_TIE      1e-2

struct golden {
    char dir[1024];
    int32_t *prefill, *decode;
    int64_t n_prefill, n_decode, vocab;
    float *prefill_logits, *decode_logits;
};

static const char *source_dir(void)
{
    const char *s = getenv("CORTEX_SOURCE_DIR");
    return s ? s : ".";
}

static int32_t *json_ids(json_t *arr, int64_t *n)
{
    *n = (int64_t)json_array_size(arr);
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)(*n ? *n : 1));
    for (int64_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static float *read_floats(const char *dir, const char *file, int64_t n)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    float *v = xmalloc(sizeof(float) * (size_t)n);
    size_t got = fread(v, sizeof(float), (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        fprintf(stderr, "%s: short read\n", path);
        exit(1);
    }
    return v;
}

static void golden_load(struct golden *g, const char *name)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->dir, sizeof(g->dir), "%s/tests/fixtures/%s", source_dir(), name);
    char path[1200];
    snprintf(path, sizeof(path), "%s/golden.json", g->dir);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) {
        fprintf(stderr, "%s: %s\n", path, jerr.text);
        exit(1);
    }
    g->prefill = json_ids(json_object_get(j, "prefill_tokens"), &g->n_prefill);
    g->decode = json_ids(json_object_get(j, "decode_tokens"), &g->n_decode);
    g->vocab = json_integer_value(json_object_get(j, "vocab_size"));
    g->prefill_logits = read_floats(g->dir, "prefill_logits.bin", g->n_prefill * g->vocab);
    g->decode_logits = read_floats(g->dir, "decode_logits.bin", g->n_decode * g->vocab);
    json_decref(j);
}

static void golden_free(struct golden *g)
{
    free(g->prefill);
    free(g->decode);
    free(g->prefill_logits);
    free(g->decode_logits);
}

/* Opens a model on dev ("cpu" or "cuda:0"); NULL, with a failed case recorded, on failure. */
static struct model *open_model(const struct model_file *mf, const char *dev, const char *name)
{
    char err[512];
    struct model_options opt = {.threads = 0, .max_context = 256, .device = dev};
    struct model *m = NULL;
    if (model_create(mf, &opt, &m, err, sizeof(err))) {
        fprintf(stderr, "FAIL model_create(%s): %s\n", dev, err);
        float zero = 0.0f;
        ktest_check("model_create", name, -1, &zero, &zero, 1, 1.0);
        return NULL;
    }
    return m;
}

static int forward1(struct model *m, struct model_seq *s, const int32_t *tok, int64_t n,
                    enum model_logits which, float *logits)
{
    char err[512];
    struct model_seq *seqs[1] = {s};
    const int32_t *toks[1] = {tok};
    int64_t ns[1] = {n};
    int rc = model_forward(m, seqs, toks, ns, 1, which, logits, err, sizeof(err));
    if (rc)
        fprintf(stderr, "model_forward: %s\n", err);
    return rc;
}

/* Prefill (all rows), decode token by token, and a prefill in two pieces, against HF. */
static void case_golden(struct model *m, const struct golden *g, const char *name)
{
    char shape[96];
    int64_t V = g->vocab, np = g->n_prefill;
    float *out = xmalloc(sizeof(float) * (size_t)(np * V));
    float *dec = xmalloc(sizeof(float) * (size_t)(g->n_decode * V));
    struct model_seq *s = model_seq_create(m);
    int rc = forward1(m, s, g->prefill, np, MODEL_LOGITS_ALL, out);
    snprintf(shape, sizeof(shape), "%s prefill %lld tok", name, (long long)np);
    ktest_check("prefill vs HF", shape, rc, out, g->prefill_logits, (size_t)(np * V), BOUND_GOLDEN);
    rc = 0;
    for (int64_t t = 0; t < g->n_decode && rc == 0; t++)
        rc = forward1(m, s, &g->decode[t], 1, MODEL_LOGITS_LAST, dec + t * V);
    snprintf(shape, sizeof(shape), "%s decode %lld steps", name, (long long)g->n_decode);
    ktest_check("decode vs HF (graph)", shape, rc, dec, g->decode_logits, (size_t)(g->n_decode * V),
                BOUND_GOLDEN);

    /* reset, then the prompt in two pieces: the second continues the first's state */
    model_seq_reset(s);
    int64_t cut = np / 3;
    rc = forward1(m, s, g->prefill, cut, MODEL_LOGITS_ALL, out);
    if (rc == 0)
        rc = forward1(m, s, g->prefill + cut, np - cut, MODEL_LOGITS_ALL, out + cut * V);
    snprintf(shape, sizeof(shape), "%s %lld + %lld tok", name, (long long)cut,
             (long long)(np - cut));
    ktest_check("prefill in pieces vs HF", shape, rc, out, g->prefill_logits, (size_t)(np * V),
                BOUND_GOLDEN);
    model_seq_destroy(s);
    free(out);
    free(dec);
}

#define NB 4

/* NB sequences with prompts of different lengths decode together; each must give what it
 * gives alone. Then a batch where sequence 0 prefills while the others decode. */
static void case_batched(struct model *m, const struct golden *g, const char *name)
{
    char shape[96];
    int64_t V = g->vocab, steps = g->n_decode;
    int64_t plen[NB];
    for (int i = 0; i < NB; i++)
        plen[i] = g->n_prefill - 3 * i;
    float *alone = xmalloc(sizeof(float) * (size_t)(NB * steps * V));
    float *batch = xmalloc(sizeof(float) * (size_t)(NB * steps * V));
    float *tmp = xmalloc(sizeof(float) * (size_t)(g->n_prefill * V));
    int rc = 0;
    /* one at a time: sequence i's step t is row (i * steps + t) */
    for (int i = 0; i < NB && rc == 0; i++) {
        struct model_seq *s = model_seq_create(m);
        rc = forward1(m, s, g->prefill, plen[i], MODEL_LOGITS_LAST, tmp);
        for (int64_t t = 0; t < steps && rc == 0; t++)
            rc = forward1(m, s, &g->decode[t], 1, MODEL_LOGITS_LAST, alone + (i * steps + t) * V);
        model_seq_destroy(s);
    }
    struct model_seq *s[NB];
    for (int i = 0; i < NB; i++)
        s[i] = model_seq_create(m);
    char err[512];
    for (int i = 0; i < NB && rc == 0; i++)
        rc = forward1(m, s[i], g->prefill, plen[i], MODEL_LOGITS_LAST, tmp);
    float *row = xmalloc(sizeof(float) * (size_t)(NB * V));
    for (int64_t t = 0; t < steps && rc == 0; t++) {
        const int32_t *toks[NB];
        int64_t ones[NB];
        for (int i = 0; i < NB; i++)
            toks[i] = &g->decode[t], ones[i] = 1;
        rc = model_forward(m, s, toks, ones, NB, MODEL_LOGITS_LAST, row, err, sizeof(err));
        if (rc)
            fprintf(stderr, "model_forward: %s\n", err);
        for (int i = 0; i < NB; i++)
            memcpy(batch + (i * steps + t) * V, row + i * V, sizeof(float) * (size_t)V);
    }
    snprintf(shape, sizeof(shape), "%s %d seqs x %lld steps", name, NB, (long long)steps);
    ktest_check("batched decode vs alone", shape, rc, batch, alone, (size_t)(NB * steps * V),
                BOUND_BATCHED);

    /* mixed: sequence 0 restarts with a 9-token prompt while the others decode one token */
    model_seq_reset(s[0]);
    const int32_t *toks[NB];
    int64_t n[NB];
    toks[0] = g->prefill, n[0] = 9;
    for (int i = 1; i < NB; i++)
        toks[i] = &g->decode[0], n[i] = 1;
    rc = model_forward(m, s, toks, n, NB, MODEL_LOGITS_LAST, row, err, sizeof(err));
    if (rc)
        fprintf(stderr, "model_forward: %s\n", err);
    snprintf(shape, sizeof(shape), "%s prefill 9 + %d decode rows", name, NB - 1);
    ktest_check("mixed batch: prefill row vs HF", shape, rc, row, g->prefill_logits + 8 * V,
                (size_t)V, BOUND_GOLDEN_ROW);
    /* the same 9-token prompt alone, on the GPU: the same weights, so only summation order */
    struct model_seq *one = model_seq_create(m);
    rc = forward1(m, one, g->prefill, 9, MODEL_LOGITS_LAST, tmp);
    model_seq_destroy(one);
    ktest_check("mixed batch: prefill row vs alone", shape, rc, row, tmp, (size_t)V, BOUND_SAME);
    for (int i = 0; i < NB; i++)
        model_seq_destroy(s[i]);
    free(row);
    free(alone);
    free(batch);
    free(tmp);
}

static int64_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Greedy decoding of steps tokens after prompt on both backends; the CPU's token is fed to
 * both. Records one case: the GPU's choices must be the CPU's except at near ties. */
static void case_greedy(struct model *cpu, struct model *gpu, const int32_t *prompt,
                        int64_t n_prompt, int steps, double near_tie, const char *name)
{
    int64_t V = model_config(cpu)->vocab_size;
    float *lc = xmalloc(sizeof(float) * (size_t)V), *lg = xmalloc(sizeof(float) * (size_t)V);
    struct model_seq *sc = model_seq_create(cpu), *sg = model_seq_create(gpu);
    int rc = forward1(cpu, sc, prompt, n_prompt, MODEL_LOGITS_LAST, lc);
    if (rc == 0)
        rc = forward1(gpu, sg, prompt, n_prompt, MODEL_LOGITS_LAST, lg);
    int same = 0, ties = 0, wrong = 0;
    char ids[512] = "";
    size_t used = 0;
    for (int t = 0; t < steps && rc == 0; t++) {
        int64_t a = argmax(lc, V), b = argmax(lg, V);
        double mag = 0.0;
        for (int64_t i = 0; i < V; i++)
            mag = fmax(mag, fabs((double)lc[i]));
        if (a == b)
            same++;
        else if (fabs((double)lc[a] - lc[b]) <= near_tie * mag)
            ties++;
        else
            wrong++;
        if (used + 16 < sizeof(ids))
            used += (size_t)snprintf(ids + used, sizeof(ids) - used, "%lld%s ", (long long)a,
                                     a == b ? "" : "*");
        int32_t tok = (int32_t)a;
        rc = forward1(cpu, sc, &tok, 1, MODEL_LOGITS_LAST, lc);
        if (rc == 0)
            rc = forward1(gpu, sg, &tok, 1, MODEL_LOGITS_LAST, lg);
    }
    printf("greedy %s: cpu ids %s(* = gpu differs): %d same, %d near ties, %d wrong\n", name, ids,
           same, ties, wrong);
    char shape[96];
    snprintf(shape, sizeof(shape), "%s %d tokens (%d ties)", name, steps, ties);
    float got = 1.0f + (float)wrong, ref = 1.0f;
    /* wrong must be 0: the relative error of 1 + wrong against 1 is wrong */
    ktest_check("greedy ids gpu == cpu", shape, rc, &got, &ref, 1, 1e-9);
    model_seq_destroy(sc);
    model_seq_destroy(sg);
    free(lc);
    free(lg);
}

static void run_fixture(const char *name)
{
    struct golden g;
    golden_load(&g, name);
    char err[512];
    struct model_file *mf = NULL;
    if (model_file_open(g.dir, &mf, err, sizeof(err))) {
        fprintf(stderr, "FAIL model_file_open: %s\n", err);
        exit(1);
    }
    struct model *gpu = open_model(mf, "cuda:0", name);
    struct model *cpu = open_model(mf, "cpu", name);
    if (gpu && cpu) {
        case_golden(gpu, &g, name);
        case_batched(gpu, &g, name);
        case_greedy(cpu, gpu, g.prefill, g.n_prefill, 24, NEAR_TIE, name);
    }
    model_destroy(gpu);
    model_destroy(cpu);
    model_file_close(mf);
    golden_free(&g);
}

/* ---- a SmolLM2-135M-shaped GGUF with random Q4_1 weights -------------------------------- */

static void put(FILE *f, const void *p, size_t n)
{
    if (fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "FAIL writing the GGUF file\n");
        exit(1);
    }
}
static void put_u32(FILE *f, uint32_t v)
{
    put(f, &v, 4);
}
static void put_u64(FILE *f, uint64_t v)
{
    put(f, &v, 8);
}
static void put_str(FILE *f, const char *s)
{
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}
static void kv_u32(FILE *f, const char *key, uint32_t v)
{
    put_str(f, key);
    put_u32(f, 4); /* GGUF uint32 */
    put_u32(f, v);
}
static void kv_f32(FILE *f, const char *key, float v)
{
    put_str(f, key);
    put_u32(f, 6); /* GGUF float32 */
    put(f, &v, 4);
}

struct gg_tensor {
    char name[64];
    int64_t rows, cols; /* cols = ne[0] */
    bool q41;
    uint64_t offset, bytes;
};

/* Writes path: llama architecture, H 576, 30 layers, 9/3 heads of 64, I 1536, V 49152, tied
 * embeddings; matrices Q4_1 (random nibbles, scale and min per block), norms f32. */
static void write_smollm2_gguf(const char *path)
{
    const int64_t H = 576, I = 1536, V = 49152, L = 30, hd = 64, nq = 9, nkv = 3;
    struct gg_tensor *t = xcalloc((size_t)(2 + 9 * L), sizeof(*t));
    int nt = 0;
#define ADD(nm, r, c, q)                                                                           \
    do {                                                                                           \
        snprintf(t[nt].name, sizeof t[nt].name, "%s", nm);                                         \
        t[nt].rows = (r), t[nt].cols = (c), t[nt].q41 = (q);                                       \
        nt++;                                                                                      \
    } while (0)
    ADD("token_embd.weight", V, H, true);
    ADD("output_norm.weight", 1, H, false);
    char nm[64];
    for (int l = 0; l < L; l++) {
        const char *sfx[9] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                              "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
        int64_t rows[9] = {1, nq * hd, nkv * hd, nkv * hd, H, 1, I, I, H};
        int64_t cols[9] = {H, H, H, H, nq * hd, H, H, H, I};
        for (int k = 0; k < 9; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, sfx[k]);
            ADD(nm, rows[k], cols[k], rows[k] > 1);
        }
    }
#undef ADD
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        t[i].offset = off;
        t[i].bytes = t[i].q41 ? (uint64_t)(t[i].rows * t[i].cols / 32 * 20)
                              : (uint64_t)(t[i].rows * t[i].cols * 4);
        off = (off + t[i].bytes + 31) / 32 * 32;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "FAIL cannot write %s\n", path);
        exit(1);
    }
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, (uint64_t)nt);
    put_u64(f, 9);
    put_str(f, "general.architecture");
    put_u32(f, 8); /* GGUF string */
    put_str(f, "llama");
    kv_u32(f, "llama.context_length", 8192);
    kv_u32(f, "llama.embedding_length", (uint32_t)H);
    kv_u32(f, "llama.feed_forward_length", (uint32_t)I);
    kv_u32(f, "llama.block_count", (uint32_t)L);
    kv_u32(f, "llama.attention.head_count", (uint32_t)nq);
    kv_u32(f, "llama.attention.head_count_kv", (uint32_t)nkv);
    kv_f32(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_f32(f, "llama.rope.freq_base", 100000.0f);
    for (int i = 0; i < nt; i++) {
        put_str(f, t[i].name);
        bool vec = t[i].rows == 1;
        put_u32(f, vec ? 1 : 2);
        put_u64(f, (uint64_t)t[i].cols);
        if (!vec)
            put_u64(f, (uint64_t)t[i].rows);
        put_u32(f, t[i].q41 ? 3 : 0); /* ggml Q4_1 / F32 */
        put_u64(f, t[i].offset);
    }
    long pos = ftell(f);
    static const char zeros[32];
    put(f, zeros, (size_t)((32 - pos % 32) % 32));
    uint64_t written = 0;
    uint8_t *blk = xmalloc(1 << 20);
    for (int i = 0; i < nt; i++) {
        put(f, zeros, (size_t)(t[i].offset - written));
        written = t[i].offset;
        if (t[i].q41) {
            float s = 1.0f / sqrtf((float)t[i].cols);
            int64_t n_blocks = t[i].rows * t[i].cols / 32;
            for (int64_t b0 = 0; b0 < n_blocks; b0 += 50000) {
                int64_t nb = n_blocks - b0 < 50000 ? n_blocks - b0 : 50000;
                for (int64_t b = 0; b < nb; b++) {
                    uint8_t *p = blk + b * 20;
                    uint16_t d = dtype_f32_to_f16(2.0f * s / 15.0f * ktest_uniform(0.5f, 1.0f));
                    uint16_t mn = dtype_f32_to_f16(-s * ktest_uniform(0.5f, 1.0f));
                    memcpy(p, &d, 2);
                    memcpy(p + 2, &mn, 2);
                    for (int k = 0; k < 16; k++)
                        p[4 + k] = (uint8_t)ktest_below(256);
                }
                put(f, blk, (size_t)nb * 20);
            }
        } else {
            for (int64_t k = 0; k < t[i].cols; k++) {
                float w = ktest_uniform(0.8f, 1.2f);
                put(f, &w, 4);
            }
        }
        written += t[i].bytes;
    }
    free(blk);
    fclose(f);
    free(t);
}

/* Makes a file from the mkstemp template path (rewritten in place), fills it with write() and
 * opens it; exits on failure. The caller closes the model_file and unlinks path. */
static struct model_file *open_written_gguf(char *path, void (*write)(const char *path))
{
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "FAIL mkstemp %s: %s\n", path, strerror(errno));
        exit(1);
    }
    close(fd);
    write(path);
    char err[512];
    struct model_file *mf = NULL;
    if (model_file_open(path, &mf, err, sizeof(err))) {
        fprintf(stderr, "FAIL model_file_open: %s\n", err);
        exit(1);
    }
    return mf;
}

static void run_smollm2_shape(void)
{
    char path[] = "/tmp/cortex-smollm2-shape-XXXXXX";
    struct model_file *mf = open_written_gguf(path, write_smollm2_gguf);
    struct model *gpu = open_model(mf, "cuda:0", "smollm2-shape");
    struct model *cpu = open_model(mf, "cpu", "smollm2-shape");
    int32_t prompt[12];
    for (int i = 0; i < 12; i++)
        prompt[i] = (int32_t)ktest_below(49152);
    if (gpu && cpu)
        case_greedy(cpu, gpu, prompt, 12, 32, NEAR_TIE, "smollm2-shape q4_1");
    model_destroy(gpu);
    model_destroy(cpu);
    model_file_close(mf);
    unlink(path);
}

/* ---- the real SmolLM2-135M-Instruct Q4_1 GGUF, when CORTEX_SMOLLM2_GGUF names it ---------- */

/* Greedy ids on the real file: the prompt is the model's own chat template around "What is the
 * capital of France? Answer in one sentence." with its default system message, as Cortex's
 * tokenizer cuts it (the same ids the CPU tests see); the CPU and GPU backends must choose the
 * same 48 tokens (near ties aside). Without the variable the case is left out (the file is
 * larger than what travels to a GPU machine in one piece; tests/kernels/README.md says how to
 * bring it). */
static void run_smollm2_real(void)
{
    static const int32_t prompt[] = {
            1,    9690, 198, 2683,  359,  253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28,
            7018, 411,  407, 19712, 8182, 2,   198,  1,    4093,  198,  1780, 314, 260,   3575,
            282,  4649, 47,  19842, 281,  582, 6330, 30,   2,     198,  1,    520, 9531,  198};
    const char *path = getenv("CORTEX_SMOLLM2_GGUF");
    if (!path || access(path, R_OK) != 0) {
        printf("smollm2 real file: CORTEX_SMOLLM2_GGUF not set or unreadable, case left out\n");
        return;
    }
    char err[512];
    struct model_file *mf = NULL;
    if (model_file_open(path, &mf, err, sizeof(err))) {
        fprintf(stderr, "FAIL model_file_open: %s\n", err);
        exit(1);
    }
    struct model *gpu = open_model(mf, "cuda:0", "smollm2");
    struct model *cpu = open_model(mf, "cpu", "smollm2");
    if (gpu && cpu)
        case_greedy(cpu, gpu, prompt, (int64_t)(sizeof(prompt) / sizeof(prompt[0])), 48, NEAR_TIE,
                    "smollm2-135m-instruct q4_1 (real file)");
    model_destroy(gpu);
    model_destroy(cpu);
    model_file_close(mf);
}

/* ---- a qwen35 GGUF with tiled value heads --------------------------------------------- */

enum gq_kind { GQ_MATRIX, GQ_NORM, GQ_NEG_A, GQ_PLAIN };

struct gq_tensor {
    char name[64];
    int64_t rows, cols; /* cols = ne[0]; rows 1: a vector */
    enum gq_kind kind;
    uint64_t offset;
};

/* Writes path: qwen35 with 2 key / 6 value heads of 16 (so the file's value heads are tiled:
 * stored head p reads key head p % 2), 3 GDN layers and one gated attention layer (4/2 heads
 * of 32, rotary 8), H 64, I 96, V 512, tied embeddings; every tensor f32 and random. */
static void write_qwen35_gguf(const char *path)
{
    const int64_t H = 64, I = 96, V = 512, L = 4, hd = 32, nq = 4, nkv = 2;
    const int64_t Nk = 2, Nv = 6, Dk = 16, Dv = 16, Kc = 4;
    const int64_t vdim = Nv * Dv, conv = 2 * Nk * Dk + vdim;
    struct gq_tensor *t = xcalloc((size_t)(2 + 14 * L), sizeof(*t));
    int nt = 0;
    char nm[64];
#define ADD(r, c, k)                                                                               \
    do {                                                                                           \
        snprintf(t[nt].name, sizeof t[nt].name, "%s", nm);                                         \
        t[nt].rows = (r), t[nt].cols = (c), t[nt].kind = (k);                                      \
        nt++;                                                                                      \
    } while (0)
#define BLK(sfx) snprintf(nm, sizeof nm, "blk.%d.%s", l, sfx)
    snprintf(nm, sizeof nm, "token_embd.weight");
    ADD(V, H, GQ_MATRIX);
    snprintf(nm, sizeof nm, "output_norm.weight");
    ADD(1, H, GQ_NORM);
    for (int l = 0; l < L; l++) {
        BLK("attn_norm.weight");
        ADD(1, H, GQ_NORM);
        BLK("post_attention_norm.weight");
        ADD(1, H, GQ_NORM);
        BLK("ffn_gate.weight");
        ADD(I, H, GQ_MATRIX);
        BLK("ffn_up.weight");
        ADD(I, H, GQ_MATRIX);
        BLK("ffn_down.weight");
        ADD(H, I, GQ_MATRIX);
        if (l == 3) {
            BLK("attn_q.weight");
            ADD(2 * nq * hd, H, GQ_MATRIX);
            BLK("attn_k.weight");
            ADD(nkv * hd, H, GQ_MATRIX);
            BLK("attn_v.weight");
            ADD(nkv * hd, H, GQ_MATRIX);
            BLK("attn_output.weight");
            ADD(H, nq * hd, GQ_MATRIX);
            BLK("attn_q_norm.weight");
            ADD(1, hd, GQ_NORM);
            BLK("attn_k_norm.weight");
            ADD(1, hd, GQ_NORM);
            continue;
        }
        BLK("attn_qkv.weight");
        ADD(conv, H, GQ_MATRIX);
        BLK("attn_gate.weight");
        ADD(vdim, H, GQ_MATRIX);
        BLK("ssm_beta.weight");
        ADD(Nv, H, GQ_MATRIX);
        BLK("ssm_alpha.weight");
        ADD(Nv, H, GQ_MATRIX);
        BLK("ssm_conv1d.weight");
        ADD(conv, Kc, GQ_PLAIN);
        BLK("ssm_a");
        ADD(1, Nv, GQ_NEG_A);
        BLK("ssm_dt.bias");
        ADD(1, Nv, GQ_PLAIN);
        BLK("ssm_norm.weight");
        ADD(1, Dv, GQ_NORM);
        BLK("ssm_out.weight");
        ADD(H, vdim, GQ_MATRIX);
    }
#undef BLK
#undef ADD
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        t[i].offset = off;
        off = (off + (uint64_t)(t[i].rows * t[i].cols * 4) + 31) / 32 * 32;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "FAIL cannot write %s\n", path);
        exit(1);
    }
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, (uint64_t)nt);
    put_u64(f, 17);
    put_str(f, "general.architecture");
    put_u32(f, 8); /* GGUF string */
    put_str(f, "qwen35");
    kv_u32(f, "qwen35.context_length", 4096);
    kv_u32(f, "qwen35.embedding_length", (uint32_t)H);
    kv_u32(f, "qwen35.feed_forward_length", (uint32_t)I);
    kv_u32(f, "qwen35.block_count", (uint32_t)L);
    kv_u32(f, "qwen35.attention.head_count", (uint32_t)nq);
    kv_u32(f, "qwen35.attention.head_count_kv", (uint32_t)nkv);
    kv_u32(f, "qwen35.attention.key_length", (uint32_t)hd);
    kv_u32(f, "qwen35.rope.dimension_count", (uint32_t)(hd / 4));
    kv_f32(f, "qwen35.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_f32(f, "qwen35.rope.freq_base", 1e7f);
    kv_u32(f, "qwen35.ssm.conv_kernel", (uint32_t)Kc);
    kv_u32(f, "qwen35.ssm.state_size", (uint32_t)Dk);
    kv_u32(f, "qwen35.ssm.group_count", (uint32_t)Nk);
    kv_u32(f, "qwen35.ssm.time_step_rank", (uint32_t)Nv);
    kv_u32(f, "qwen35.ssm.inner_size", (uint32_t)vdim);
    kv_u32(f, "qwen35.full_attention_interval", 4);
    for (int i = 0; i < nt; i++) {
        put_str(f, t[i].name);
        bool vec = t[i].rows == 1;
        put_u32(f, vec ? 1 : 2);
        put_u64(f, (uint64_t)t[i].cols);
        if (!vec)
            put_u64(f, (uint64_t)t[i].rows);
        put_u32(f, 0); /* F32 */
        put_u64(f, t[i].offset);
    }
    long pos = ftell(f);
    static const char zeros[32];
    put(f, zeros, (size_t)((32 - pos % 32) % 32));
    uint64_t written = 0;
    for (int i = 0; i < nt; i++) {
        put(f, zeros, (size_t)(t[i].offset - written));
        written = t[i].offset;
        float s = 1.0f / sqrtf((float)t[i].cols);
        for (int64_t k = 0; k < t[i].rows * t[i].cols; k++) {
            float w = t[i].kind == GQ_MATRIX  ? s * ktest_uniform(-1.7f, 1.7f)
                      : t[i].kind == GQ_NORM  ? ktest_uniform(0.8f, 1.2f)
                      : t[i].kind == GQ_NEG_A ? -expf(ktest_uniform(-1.0f, 1.0f))
                                              : ktest_uniform(-0.5f, 0.5f);
            put(f, &w, 4);
        }
        written += (uint64_t)(t[i].rows * t[i].cols * 4);
    }
    fclose(f);
    free(t);
}

/* The GPU reorders the tiled value heads on upload; the CPU backend reads them in place. Both
 * must give the same logits (bf16 weights on the GPU) and the same greedy tokens. */
static void run_qwen35_gguf(void)
{
    char path[] = "/tmp/cortex-qwen35-tiled-XXXXXX";
    struct model_file *mf = open_written_gguf(path, write_qwen35_gguf);
    struct model *gpu = open_model(mf, "cuda:0", "qwen35-tiled");
    struct model *cpu = open_model(mf, "cpu", "qwen35-tiled");
    enum { N = 80 }; /* past one chunk of the chunked GDN prefill */
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = (int32_t)ktest_below(512);
    if (gpu && cpu) {
        float *lc = xmalloc(sizeof(float) * 512), *lg = xmalloc(sizeof(float) * 512);
        struct model_seq *sc = model_seq_create(cpu), *sg = model_seq_create(gpu);
        int rc = forward1(cpu, sc, prompt, N, MODEL_LOGITS_LAST, lc);
        if (rc == 0)
            rc = forward1(gpu, sg, prompt, N, MODEL_LOGITS_LAST, lg);
        /* One row of a random-weight model through 80 tokens: bf16 weights on the GPU against
         * the file's values on the CPU moved it by up to 8.6e-2 for some seeds (both with and
         * without the paged cache), so the bound is BOUND_RANDOM_ROW. A wrong head order or
         * state mix-up gives an unrelated row (error ~1.4), far above it. */
        ktest_check("qwen35 gguf tiled heads", "prefill 80, last row gpu vs cpu", rc, lg, lc, 512,
                    BOUND_RANDOM_ROW);
        model_seq_destroy(sc);
        model_seq_destroy(sg);
        free(lc);
        free(lg);
        /* Random weights give flat logits, and this model's rows differ between the backends
         * by up to BOUND_RANDOM_ROW (bf16 weights on the GPU, checked just above): a gap
         * smaller than that is a tie here (1 % failed one run in several on an H100). A
         * wrong head order would fail the logits check above long before this one. */
        case_greedy(cpu, gpu, prompt, 12, 24, BOUND_RANDOM_ROW, "qwen35 gguf tiled heads");
    }
    model_destroy(gpu);
    model_destroy(cpu);
    model_file_close(mf);
    unlink(path);
}

int main(void)
{
    ktest_init("test_cuda_model");
    static const char *const fixtures[] = {"llama", "qwen2", "qwen3", "qwen3_5"};
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++)
        run_fixture(fixtures[i]);
    run_smollm2_shape();
    run_smollm2_real();
    run_qwen35_gguf();
    return ktest_finish();
}
