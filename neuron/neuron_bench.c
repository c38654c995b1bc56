/*
 * neuron/neuron_bench.c — neuron-bench: the GPU forward pass timed on one GPU (or N, --tp),
 * against the device's own copy bandwidth measured in the same run. Needs only CUDA (no database, no HTTP).
 *
 * The model comes from a config JSON (an HF config.json; bench/configs/ holds the Qwen3.6-27B
 * shape and small ones) with random bf16 weights drawn on the GPU, or from real files (-m).
 * Reported, each the median of --repeats runs after a warm-up:
 *   - copy: a 1 GiB cudaMemcpy device to device, bytes read + written per second;
 *   - prefill tok/s for each --prefill length (one sequence, logits of the last token);
 *   - decode tok/s for each --batch at each --context (every sequence holds that many tokens;
 *     one token per sequence per step; each step is one CUDA graph), the bytes a step must read
 *     (weights, KV cache, GDN state read and written) over the step time as GB/s and as a share
 *     of the copy bandwidth;
 *   - one profiling pass per decode shape (no graph, CUDA events around each kernel class):
 *     milliseconds per step in matmul, attention, GDN, the rest and (--tp) the all-reduces.
 * With --tp N the model spans devices 0 .. N-1 (tensor parallelism, cuda_model.h); GB/s then
 * count every GPU's bytes and the copy share is of N times device 0's copy bandwidth;
 * --no-custom-allreduce sends every all-reduce through NCCL (the peer-memory kernel's baseline).
 * --no-overlap launches the decode kernels plainly instead of with programmatic dependent
 * launch (kernels/cuda_launch.cuh); --prefetch-mb sets how many MiB of weights each product
 * launched with the overlap prefetches into L2 while the kernel before it runs.
 * The logits stay on the GPU (no device-to-host copy is timed). --json prints one JSON object.
 * Serving mode (--streams N,...): for each N, N sequences arrive together with --prompt-token
 * prompts and each generates --gen tokens, stepped as the batcher does (neuron/batcher.h): every
 * call carries one token of each decoding sequence and the next --chunk prompt tokens of each
 * one still reading its prompt (with --step-tokens, only as many prompt rows as fit under that
 * cap, oldest sequence first); reported are the output tokens per second over the whole run and
 * the time to first token (the end of the call that read a sequence's last prompt token) at p50
 * and p99, after one untimed warm-up run of the same shape. --shared-prefix S puts the same S
 * tokens before every prompt and runs each N twice: cold (every sequence reads all S + prompt
 * tokens) and warm (a first request read the S tokens and saved them with
 * cuda_model_prefix_save(); every sequence restores that prefix when the run starts, inside the
 * timed run, and reads only its own tokens), with the speed-ups of warm over cold. Token ids are random (no sampling: the
 * logits stay on the GPU), so the numbers are the engine's, not a tokenizer's or sampler's.
 */
#include "cuda_device.h"
#include "cuda_model.h"
#include "model_file.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_LIST 16

struct bench_opts {
    const char *config, *model;
    int device, repeats, steps;
    int tp; /* tensor-parallel degree: devices 0 .. tp-1 */
    int64_t prefill[BENCH_MAX_LIST], context[BENCH_MAX_LIST];
    int batch[BENCH_MAX_LIST];
    int n_prefill, n_context, n_batch;
    const char *json; /* NULL, a file, or "-" (stdout, instead of the table) */
    bool no_graphs, no_fusion;
    bool no_custom_allreduce; /* --tp: NCCL for every all-reduce */
    bool no_overlap;          /* plain launches instead of programmatic dependent launch */
    int64_t prefetch_mb;      /* -1: the default */
    uint64_t seed;
    int streams[BENCH_MAX_LIST]; /* serving mode: sequences arriving together, per run */
    int n_streams;               /* 0: serving mode off */
    int64_t step_tokens;         /* serving: rows per forward call at most (0: no cap) */
    int64_t shared;              /* serving: shared prefix tokens before each prompt (0: none) */
    int64_t prompt;              /* their own prompt tokens */
    int64_t gen;                 /* tokens each generates */
    int64_t chunk;               /* prompt tokens per sequence per call */
};

static void bench_usage(FILE *f)
{
    fprintf(f,
            "usage: neuron-bench (-c CONFIG.json | -m MODEL) [options]\n"
            "\n"
            "Times the CUDA forward pass of a model on one GPU and compares decode with the\n"
            "GPU's copy bandwidth measured in the same run. Medians of several repeats.\n"
            "\n"
            "  -c, --config FILE    HF config.json of the shape to build with random bf16 weights\n"
            "  -m, --model PATH     a real model (.gguf file or HF directory) instead\n"
            "  -d, --device N       CUDA device (default 0)\n"
            "      --tp N           tensor parallelism over devices 0 .. N-1 (NCCL); copy\n"
            "                       shares are then of N times device 0's copy bandwidth\n"
            "      --no-custom-allreduce  (--tp) NCCL for every all-reduce instead of the\n"
            "                       one-shot peer-memory kernel for small messages\n"
            "  -p, --prefill LIST   prompt lengths, comma-separated (default 512,4096; 0: none)\n"
            "  -b, --batch LIST     decode batch sizes (default 1,8,32)\n"
            "  -x, --context LIST   tokens each decoding sequence holds (default 1024,8192)\n"
            "  -s, --steps N        decode steps per timed run (default 16)\n"
            "  -r, --repeats N      timed runs per measurement (default 5)\n"
            "      --seed N         seed of the random weights (default 1)\n"
            "      --no-graphs      decode launch by launch instead of CUDA graphs\n"
            "      --no-fusion      separate norm and SwiGLU launches around the decode\n"
            "                       products (the unfused path, for comparison)\n"
            "      --no-overlap     launch the decode kernels plainly, without programmatic\n"
            "                       dependent launch (sm_90+; also CORTEX_CUDA_OVERLAP=0)\n"
            "      --prefetch-mb N  MiB of weights a product prefetches into L2 while the\n"
            "                       kernel before it runs (default 16; 0: none)\n"
            "      --streams LIST   serving mode: N sequences arrive together, a run for each\n"
            "                       N of the list; reports output tok/s and time to first\n"
            "                       token p50 / p99\n"
            "      --prompt N       their prompt tokens (default 1024)\n"
            "      --step-tokens N  rows of one forward call at most: decode tokens first,\n"
            "                       then prompt chunks in arrival order (default 0: no cap;\n"
            "                       the scratch grows with the rows of a call)\n"
            "      --shared-prefix N  every prompt starts with the same N tokens (a system\n"
            "                       prompt; a multiple of the KV block); each N of --streams\n"
            "                       runs cold (every stream reads it) and warm (a first\n"
            "                       request saved it; every stream restores it and reads\n"
            "                       only its own --prompt tokens)\n"
            "      --gen N          tokens each generates (default 128)\n"
            "      --chunk N        prompt tokens per sequence per step (default 256,\n"
            "                       the neuron's prefill-chunk)\n"
            "      --json FILE      also write the results as one JSON object to FILE ('-':\n"
            "                       to stdout instead of the table)\n"
            "  -h, --help           this text\n");
}

/* Parses "a,b,c" into up to BENCH_MAX_LIST positive integers (a lone 0 gives an empty list);
 * -1 when malformed. */
static int bench_parse_list(const char *s, int64_t *out, int *n)
{
    *n = 0;
    if (strcmp(s, "0") == 0)
        return 0;
    while (*s) {
        char *end = NULL;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || *n >= BENCH_MAX_LIST)
            return -1;
        out[(*n)++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return -1;
    }
    return 0;
}

static int bench_parse(int argc, char **argv, struct bench_opts *o)
{
    *o = (struct bench_opts){.repeats = 5,
                             .steps = 16,
                             .seed = 1,
                             .tp = 1,
                             .prompt = 1024,
                             .gen = 128,
                             .chunk = 256,
                             .prefetch_mb = -1};
    o->prefill[0] = 512, o->prefill[1] = 4096, o->n_prefill = 2;
    o->context[0] = 1024, o->context[1] = 8192, o->n_context = 2;
    o->batch[0] = 1, o->batch[1] = 8, o->batch[2] = 32, o->n_batch = 3;
    static const struct option longs[] = {{"config", required_argument, NULL, 'c'},
                                          {"model", required_argument, NULL, 'm'},
                                          {"device", required_argument, NULL, 'd'},
                                          {"prefill", required_argument, NULL, 'p'},
                                          {"batch", required_argument, NULL, 'b'},
                                          {"context", required_argument, NULL, 'x'},
                                          {"steps", required_argument, NULL, 's'},
                                          {"repeats", required_argument, NULL, 'r'},
                                          {"seed", required_argument, NULL, 'S'},
                                          {"no-graphs", no_argument, NULL, 'G'},
                                          {"no-fusion", no_argument, NULL, 'F'},
                                          {"no-overlap", no_argument, NULL, 'O'},
                                          {"prefetch-mb", required_argument, NULL, 'M'},
                                          {"json", required_argument, NULL, 'J'},
                                          {"tp", required_argument, NULL, 'T'},
                                          {"no-custom-allreduce", no_argument, NULL, 'A'},
                                          {"streams", required_argument, NULL, 'N'},
                                          {"prompt", required_argument, NULL, 'P'},
                                          {"gen", required_argument, NULL, 'g'},
                                          {"chunk", required_argument, NULL, 'C'},
                                          {"step-tokens", required_argument, NULL, 'K'},
                                          {"shared-prefix", required_argument, NULL, 'H'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int ch;
    int64_t list[BENCH_MAX_LIST];
    int n;
    while ((ch = getopt_long(argc, argv, "c:m:d:p:b:x:s:r:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'c':
            o->config = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'd':
            o->device = atoi(optarg);
            break;
        case 'T':
            o->tp = atoi(optarg);
            if (o->tp < 1 || o->tp > CUDA_MODEL_MAX_TP)
                goto bad;
            break;
        case 'p':
            if (bench_parse_list(optarg, o->prefill, &o->n_prefill))
                goto bad;
            break;
        case 'x':
            if (bench_parse_list(optarg, o->context, &o->n_context) || o->n_context == 0)
                goto bad;
            break;
        case 'b':
            if (bench_parse_list(optarg, list, &n) || n == 0)
                goto bad;
            for (int i = 0; i < n; i++)
                o->batch[i] = (int)list[i];
            o->n_batch = n;
            break;
        case 's':
            o->steps = atoi(optarg);
            break;
        case 'r':
            o->repeats = atoi(optarg);
            break;
        case 'S':
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case 'G':
            o->no_graphs = true;
            break;
        case 'F':
            o->no_fusion = true;
            break;
        case 'A':
            o->no_custom_allreduce = true;
            break;
        case 'O':
            o->no_overlap = true;
            break;
        case 'M':
            o->prefetch_mb = atoll(optarg);
            if (o->prefetch_mb < 0 || o->prefetch_mb > 1024)
                goto bad;
            break;
        case 'J':
            o->json = optarg;
            break;
        case 'N':
            if (bench_parse_list(optarg, list, &n) || n == 0)
                goto bad;
            for (int i = 0; i < n; i++)
                o->streams[i] = (int)list[i];
            o->n_streams = n;
            break;
        case 'K':
            o->step_tokens = atoll(optarg);
            break;
        case 'H':
            o->shared = atoll(optarg);
            break;
        case 'P':
            o->prompt = atoll(optarg);
            break;
        case 'g':
            o->gen = atoll(optarg);
            break;
        case 'C':
            o->chunk = atoll(optarg);
            break;
        case 'h':
            bench_usage(stdout);
            exit(0);
        default:
            goto bad;
        }
    }
    if ((!o->config) == (!o->model) || o->steps < 1 || o->repeats < 1 || optind != argc ||
        o->prompt < 1 || o->gen < 1 || o->chunk < 1 || o->step_tokens < 0 || o->shared < 0 ||
        (o->shared > 0 && o->n_streams == 0))
        goto bad;
    return 0;
bad:
    bench_usage(stderr);
    return -1;
}

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), bench_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Device-to-device copy of 1 GiB: (read + written bytes) / s, median of repeats. */
static double bench_copy_gbs(int repeats)
{
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    double gbs = 0.0, t[64];
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess)
        goto out;
    cudaMemset(a, 1, bytes);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    int n = repeats < 64 ? repeats : 64;
    for (int i = 0; i < n; i++) {
        float ms = 0.0f;
        cudaEventRecord(e0, 0);
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        t[i] = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    }
    gbs = bench_median(t, n);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
out:
    cudaFree(a);
    cudaFree(b);
    return gbs;
}

static uint64_t bench_rng = 0x243F6A8885A308D3ull;
static int32_t bench_token(int64_t vocab)
{
    bench_rng ^= bench_rng << 13, bench_rng ^= bench_rng >> 7, bench_rng ^= bench_rng << 17;
    return (int32_t)(bench_rng % (uint64_t)vocab);
}

/* Bytes a decode step of batch sequences holding ctx tokens must move: every weight but the
 * embedding table (of which only batch rows are read; tied models read it whole as lm_head),
 * the KV cache read, and the GDN state read and written. Over tp GPUs the embedding is
 * replicated on each and the lm_head split (cuda_model.h). */
static double bench_step_bytes(const struct model_config *c, uint64_t weights, int batch,
                               int64_t ctx, int tp)
{
    double w = (double)weights;
    if (!c->tie_embeddings || tp > 1)
        w -= 2.0 * tp * (double)c->vocab_size * (double)c->hidden;
    double kv = 0.0, gdn = 0.0;
    for (int l = 0; l < c->n_layers; l++)
        if (c->arch == MODEL_ARCH_QWEN3_5 && c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION)
            gdn += 2.0 * 4.0 * (double)c->lin_v_heads * c->lin_k_dim * c->lin_v_dim;
        else
            kv += 2.0 * 2.0 * (double)c->n_kv_heads * c->head_dim * (double)ctx;
    return w + (double)batch * (kv + gdn);
}

static json_t *bench_run(const struct bench_opts *o, struct cuda_model *g,
                         const struct model_config *c, double copy_gbs)
{
    char err[512];
    json_t *res = json_object(), *pre = json_array(), *dec = json_array();
    json_object_set_new(res, "prefill", pre);
    json_object_set_new(res, "decode", dec);
    int max_batch = 1;
    for (int i = 0; i < o->n_batch; i++)
        max_batch = o->batch[i] > max_batch ? o->batch[i] : max_batch;
    int *slots = calloc((size_t)max_batch, sizeof(int));
    int64_t *past = calloc((size_t)max_batch, sizeof(int64_t));
    int64_t *ones = calloc((size_t)max_batch, sizeof(int64_t));
    int32_t *tok = calloc((size_t)max_batch, sizeof(int32_t));
    const int32_t **toks = calloc((size_t)max_batch, sizeof(int32_t *));
    double *t = calloc((size_t)o->repeats, sizeof(double));
    for (int i = 0; i < max_batch; i++) {
        if (cuda_model_slot_acquire(g, &slots[i], err, sizeof(err))) {
            fprintf(stderr, "neuron-bench: %s\n", err);
            goto out;
        }
        ones[i] = 1;
        toks[i] = &tok[i];
    }

    for (int p = 0; p < o->n_prefill; p++) {
        int64_t n = o->prefill[p];
        int32_t *prompt = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            prompt[i] = bench_token(c->vocab_size);
        const int32_t *pp = prompt;
        int64_t zero = 0;
        int rc = 0;
        for (int r = -1; r < o->repeats && rc == 0; r++) {
            rc = cuda_model_slot_reset(g, slots[0], err, sizeof(err));
            double t0 = bench_now();
            if (rc == 0)
                rc = cuda_model_forward(g, slots, &zero, &pp, &n, 1, MODEL_LOGITS_LAST, NULL, err,
                                        sizeof(err));
            if (r >= 0)
                t[r] = bench_now() - t0;
        }
        json_t *row = json_pack("{s:I}", "tokens", (json_int_t)n);
        if (rc == 0) {
            double s = bench_median(t, o->repeats);
            json_object_set_new(row, "ms", json_real(s * 1e3));
            json_object_set_new(row, "tok_s", json_real((double)n / s));
            /* one more, profiled */
            double ms[CUDA_MODEL_OP_COUNT];
            rc = cuda_model_slot_reset(g, slots[0], err, sizeof(err));
            cuda_model_profile(g, true);
            if (rc == 0)
                rc = cuda_model_forward(g, slots, &zero, &pp, &n, 1, MODEL_LOGITS_LAST, NULL, err,
                                        sizeof(err));
            cuda_model_profile_read(g, ms);
            cuda_model_profile(g, false);
            json_t *prof = json_object();
            for (int k = 0; k < CUDA_MODEL_OP_COUNT; k++)
                json_object_set_new(prof, cuda_model_op_name(k), json_real(ms[k]));
            json_object_set_new(row, "profile_ms", prof);
        }
        if (rc) {
            fprintf(stderr, "neuron-bench: prefill %lld: %s\n", (long long)n, err);
            json_object_set_new(row, "error", json_string(err));
        }
        free(prompt);
        json_array_append_new(pre, row);
    }

    for (int x = 0; x < o->n_context; x++)
        for (int bi = 0; bi < o->n_batch; bi++) {
            int B = o->batch[bi];
            int64_t ctx = o->context[x];
            json_t *row = json_pack("{s:i,s:I}", "batch", B, "context", (json_int_t)ctx);
            json_array_append_new(dec, row);
            int rc = 0;
            /* the step writes position ctx - 1 of each sequence, over and over */
            for (int i = 0; i < B; i++)
                past[i] = ctx - 1;
            for (int r = -2; r < o->repeats && rc == 0; r++) {
                double t0 = bench_now();
                for (int s = 0; s < o->steps && rc == 0; s++) {
                    for (int i = 0; i < B; i++)
                        tok[i] = bench_token(c->vocab_size);
                    rc = cuda_model_forward(g, slots, past, toks, ones, B, MODEL_LOGITS_LAST, NULL,
                                            err, sizeof(err));
                }
                if (r >= 0)
                    t[r] = (bench_now() - t0) / o->steps;
            }
            if (rc) {
                fprintf(stderr, "neuron-bench: decode batch %d context %lld: %s\n", B,
                        (long long)ctx, err);
                json_object_set_new(row, "error", json_string(err));
                continue;
            }
            double step = bench_median(t, o->repeats);
            double bytes = bench_step_bytes(c, cuda_model_weight_bytes(g), B, ctx, o->tp);
            json_object_set_new(row, "step_ms", json_real(step * 1e3));
            json_object_set_new(row, "tok_s", json_real((double)B / step));
            json_object_set_new(row, "gb_s", json_real(bytes / step / 1e9));
            json_object_set_new(row, "copy_share",
                                json_real(bytes / step / 1e9 / (copy_gbs * o->tp)));
            /* profiling pass: kernel classes, launch by launch */
            double ms[CUDA_MODEL_OP_COUNT];
            cuda_model_profile(g, true);
            for (int s = 0; s < o->steps && rc == 0; s++)
                rc = cuda_model_forward(g, slots, past, toks, ones, B, MODEL_LOGITS_LAST, NULL, err,
                                        sizeof(err));
            cuda_model_profile_read(g, ms);
            cuda_model_profile(g, false);
            json_t *prof = json_object();
            for (int k = 0; k < CUDA_MODEL_OP_COUNT; k++)
                json_object_set_new(prof, cuda_model_op_name(k), json_real(ms[k] / o->steps));
            json_object_set_new(row, "profile_ms", prof);
        }
out:
    free(slots);
    free(past);
    free(ones);
    free(tok);
    free(toks);
    free(t);
    return res;
}

/* Wall times of a run's forward calls, those that carry prompt rows apart from decode-only
 * ones. */
struct bench_calls {
    double *prompt, *decode;
    int n_prompt, n_decode, cap;
};

static void bench_calls_add(struct bench_calls *k, bool prompt, double s)
{
    if (k->n_prompt >= k->cap || k->n_decode >= k->cap) {
        k->cap = k->cap ? 2 * k->cap : 256;
        k->prompt = xrealloc(k->prompt, sizeof(double) * (size_t)k->cap);
        k->decode = xrealloc(k->decode, sizeof(double) * (size_t)k->cap);
    }
    if (prompt)
        k->prompt[k->n_prompt++] = s;
    else
        k->decode[k->n_decode++] = s;
}

/* One serving run (see the file comment) of n streams whose prompts are shared[0 .. o->shared)
 * then their own o->prompt tokens. prefix >= 0 (warm): every stream's slot restores that saved
 * prefix when the run starts (timed) and reads only its own tokens. *out_s the wall time,
 * ttft[i] stream i's time to first token, calls each forward call's time (reset here). 0, or
 * -1 with err set. */
static int bench_streams_once(const struct bench_opts *o, struct cuda_model *g, int64_t vocab,
                              int n, const int32_t *shared, int prefix, double *out_s, double *ttft,
                              uint64_t *steps, struct bench_calls *calls, char *err, size_t errlen)
{
    calls->n_prompt = calls->n_decode = 0;
    int rc = 0;
    int64_t total = o->shared + o->prompt; /* every stream's whole prompt */
    int *slots = calloc((size_t)n, sizeof(int)), *ss = calloc((size_t)n, sizeof(int));
    int64_t *read = calloc((size_t)n, sizeof(int64_t)), *made = calloc((size_t)n, sizeof(int64_t));
    int64_t *past = calloc((size_t)n, sizeof(int64_t)), *cnt = calloc((size_t)n, sizeof(int64_t));
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)(n * total));
    int32_t *next = calloc((size_t)n, sizeof(int32_t));
    const int32_t **toks = calloc((size_t)n, sizeof(int32_t *));
    int *idx = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < total; j++)
            prompts[i * total + j] = j < o->shared ? shared[j] : bench_token(vocab);
    for (int i = 0; i < n; i++)
        slots[i] = -1;
    for (int i = 0; i < n && rc == 0; i++)
        rc = cuda_model_slot_acquire(g, &slots[i], err, errlen);
    *steps = 0;
    double t0 = bench_now();
    for (int i = 0; i < n && rc == 0 && prefix >= 0; i++) {
        rc = cuda_model_prefix_restore(g, prefix, slots[i], err, errlen);
        read[i] = o->shared;
    }
    for (int left = n; left > 0 && rc == 0;) {
        int b = 0, decoding = 0;
        int64_t rows = 0, cap = o->step_tokens > 0 ? o->step_tokens : INT64_MAX;
        for (int i = 0; i < n; i++) /* the decoding streams first: one row each */
            if (made[i] < o->gen && read[i] >= total) {
                idx[b] = i, ss[b] = slots[i], past[b] = read[i] + made[i] - 1;
                next[i] = bench_token(vocab);
                cnt[b] = 1, toks[b] = &next[i];
                b++, rows++, decoding++;
            }
        for (int i = 0; i < n && rows < cap; i++) /* then prompt chunks, oldest stream first */
            if (read[i] < total) {
                int64_t c = total - read[i] < o->chunk ? total - read[i] : o->chunk;
                if (c > cap - rows)
                    c = cap - rows;
                idx[b] = i, ss[b] = slots[i], past[b] = read[i];
                cnt[b] = c, toks[b] = prompts + i * total + read[i];
                b++, rows += c;
            }
        double t_call = bench_now();
        rc = cuda_model_forward(g, ss, past, toks, cnt, b, MODEL_LOGITS_LAST, NULL, err, errlen);
        double now = bench_now();
        (*steps)++;
        bench_calls_add(calls, b > decoding, now - t_call);
        for (int k = 0; k < b && rc == 0; k++) {
            int i = idx[k];
            if (read[i] < total) {
                read[i] += cnt[k];
                if (read[i] < total)
                    continue;
                ttft[i] = now - t0; /* the prompt's last row gives the first token */
            }
            if (++made[i] == o->gen)
                left--;
        }
    }
    *out_s = bench_now() - t0;
    for (int i = 0; i < n; i++)
        cuda_model_slot_release(g, slots[i]);
    free(slots), free(ss), free(read), free(made), free(past), free(cnt), free(prompts);
    free(next), free(toks), free(idx);
    return rc;
}

/* The warm runs' first request: one stream reads the shared prefix (--chunk tokens per call)
 * and saves it. *prefix the handle, *out_s the time. 0, or -1 with err set. */
static int bench_prefix_make(const struct bench_opts *o, struct cuda_model *g,
                             const int32_t *shared, int *prefix, double *out_s, char *err,
                             size_t errlen)
{
    int slot = -1;
    *prefix = -1;
    double t0 = bench_now();
    int rc = cuda_model_slot_acquire(g, &slot, err, errlen);
    for (int64_t done = 0; rc == 0 && done < o->shared; done += o->chunk) {
        int64_t c = o->shared - done < o->chunk ? o->shared - done : o->chunk;
        const int32_t *t = shared + done;
        rc = cuda_model_forward(g, &slot, &done, &t, &c, 1, MODEL_LOGITS_LAST, NULL, err, errlen);
    }
    if (rc == 0)
        rc = cuda_model_prefix_save(g, slot, o->shared, prefix, err, errlen);
    cuda_model_slot_release(g, slot);
    *out_s = bench_now() - t0;
    return rc;
}

static double bench_quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof(double), bench_cmp);
    int i = (int)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* One row of the serving table: n streams, cold or warm (prefix >= 0), after one untimed
 * warm-up run of the same shape (graphs captured, scratch sized). */
static json_t *bench_streams_row(const struct bench_opts *o, struct cuda_model *g,
                                 const struct model_config *c, int n, const int32_t *shared,
                                 int prefix)
{
    char err[512];
    double s = 0.0, *ttft = calloc((size_t)n, sizeof(double));
    uint64_t steps = 0;
    struct bench_calls calls = {0};
    json_t *row = json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:s}", "streams", n, "shared",
                            (json_int_t)o->shared, "prompt", (json_int_t)o->prompt, "gen",
                            (json_int_t)o->gen, "chunk", (json_int_t)o->chunk, "step_tokens",
                            (json_int_t)o->step_tokens, "prefix",
                            o->shared == 0 ? "none"
                            : prefix >= 0  ? "warm"
                                           : "cold");
    int rc = bench_streams_once(o, g, c->vocab_size, n, shared, prefix, &s, ttft, &steps, &calls,
                                err, sizeof(err));
    if (rc == 0)
        rc = bench_streams_once(o, g, c->vocab_size, n, shared, prefix, &s, ttft, &steps, &calls,
                                err, sizeof(err));
    if (rc) {
        fprintf(stderr, "neuron-bench: streams: %s\n", err);
        json_object_set_new(row, "error", json_string(err));
    } else {
        struct cuda_model_cache_stats st;
        cuda_model_cache_stats(g, &st);
        json_object_set_new(row, "s", json_real(s));
        json_object_set_new(row, "steps", json_integer((json_int_t)steps));
        json_object_set_new(row, "out_tok_s", json_real((double)n * (double)o->gen / s));
        json_object_set_new(row, "ttft_p50_ms", json_real(1e3 * bench_quantile(ttft, n, 0.5)));
        json_object_set_new(row, "ttft_p99_ms", json_real(1e3 * bench_quantile(ttft, n, 0.99)));
        if (calls.n_prompt > 0)
            json_object_set_new(row, "prompt_call_p50_ms",
                                json_real(1e3 * bench_quantile(calls.prompt, calls.n_prompt, 0.5)));
        if (calls.n_decode > 0)
            json_object_set_new(row, "decode_step_p50_ms",
                                json_real(1e3 * bench_quantile(calls.decode, calls.n_decode, 0.5)));
        json_object_set_new(row, "kv_blocks", json_integer(st.blocks));
        json_object_set_new(row, "kv_block_tokens", json_integer(st.block_size));
    }
    free(ttft);
    free(calls.prompt);
    free(calls.decode);
    return row;
}

/* Every --streams count; with --shared-prefix each cold, then warm from a prefix saved once. */
static json_t *bench_streams(const struct bench_opts *o, struct cuda_model *g,
                             const struct model_config *c)
{
    json_t *rows = json_array();
    int32_t *shared = malloc(sizeof(int32_t) * (size_t)(o->shared ? o->shared : 1));
    for (int64_t j = 0; j < o->shared; j++)
        shared[j] = bench_token(c->vocab_size);
    int prefix = -1;
    double save_s = 0.0;
    if (o->shared > 0) {
        char err[512];
        int rc = bench_prefix_make(o, g, shared, &prefix, &save_s, err, sizeof(err));
        if (rc == 0) { /* the first time captured graphs and sized the scratch: time again */
            cuda_model_prefix_release(g, prefix);
            rc = bench_prefix_make(o, g, shared, &prefix, &save_s, err, sizeof(err));
        }
        if (rc) {
            fprintf(stderr, "neuron-bench: shared prefix: %s\n", err);
            json_array_append_new(rows, json_pack("{s:s}", "error", err));
            free(shared);
            return rows;
        }
    }
    for (int k = 0; k < o->n_streams; k++) {
        json_t *cold = bench_streams_row(o, g, c, o->streams[k], shared, -1);
        json_array_append_new(rows, cold);
        if (o->shared == 0)
            continue;
        json_t *warm = bench_streams_row(o, g, c, o->streams[k], shared, prefix);
        json_object_set_new(warm, "prefix_save_s", json_real(save_s));
        json_object_set_new(warm, "prefix_bytes",
                            json_integer((json_int_t)cuda_model_prefix_bytes(g, prefix)));
        double a = json_real_value(json_object_get(cold, "out_tok_s"));
        double b = json_real_value(json_object_get(warm, "out_tok_s"));
        double ta = json_real_value(json_object_get(cold, "ttft_p50_ms"));
        double tb = json_real_value(json_object_get(warm, "ttft_p50_ms"));
        if (a > 0 && b > 0 && ta > 0 && tb > 0) {
            json_object_set_new(warm, "out_tok_s_speedup", json_real(b / a));
            json_object_set_new(warm, "ttft_p50_speedup", json_real(ta / tb));
        }
        json_array_append_new(rows, warm);
    }
    cuda_model_prefix_release(g, prefix);
    free(shared);
    return rows;
}

static void bench_print_streams(const json_t *rows)
{
    printf("\nstreams shared prompt   gen chunk  cap prefix  steps      s  out tok/s  TTFT p50 ms  "
           "TTFT p99 ms  prompt call / decode step p50 ms  speed-up tok/s, TTFT p50\n");
    size_t i;
    json_t *e;
    json_array_foreach(rows, i, e)
    {
        long long n = (long long)json_integer_value(json_object_get(e, "streams"));
        long long sh = (long long)json_integer_value(json_object_get(e, "shared"));
        long long p = (long long)json_integer_value(json_object_get(e, "prompt"));
        long long g = (long long)json_integer_value(json_object_get(e, "gen"));
        long long c = (long long)json_integer_value(json_object_get(e, "chunk"));
        long long cap = (long long)json_integer_value(json_object_get(e, "step_tokens"));
        const char *px = json_string_value(json_object_get(e, "prefix"));
        if (json_object_get(e, "error")) {
            printf("%7lld %6lld %6lld %5lld %5lld %4lld %6s  error: %s\n", n, sh, p, g, c, cap,
                   px ? px : "-", json_string_value(json_object_get(e, "error")));
            continue;
        }
        printf("%7lld %6lld %6lld %5lld %5lld %4lld %6s %6lld %6.2f %10.1f %12.1f %12.1f", n, sh, p,
               g, c, cap, px, (long long)json_integer_value(json_object_get(e, "steps")),
               json_real_value(json_object_get(e, "s")),
               json_real_value(json_object_get(e, "out_tok_s")),
               json_real_value(json_object_get(e, "ttft_p50_ms")),
               json_real_value(json_object_get(e, "ttft_p99_ms")));
        printf(" %12.2f / %6.2f", json_real_value(json_object_get(e, "prompt_call_p50_ms")),
               json_real_value(json_object_get(e, "decode_step_p50_ms")));
        if (json_object_get(e, "out_tok_s_speedup"))
            printf("  %.2fx, %.2fx (prefix saved in %.0f ms, %.0f MB)",
                   json_real_value(json_object_get(e, "out_tok_s_speedup")),
                   json_real_value(json_object_get(e, "ttft_p50_speedup")),
                   1e3 * json_real_value(json_object_get(e, "prefix_save_s")),
                   (double)json_integer_value(json_object_get(e, "prefix_bytes")) / 1e6);
        printf("\n");
    }
}

static void bench_print(const json_t *r)
{
    printf("neuron-bench: %s on %lld x %s, copy %.0f GB/s (one GPU), weights %.2f GB, "
           "all-reduce %s, launch overlap %s (prefetch %lld MiB)\n",
           json_string_value(json_object_get(r, "model")),
           (long long)json_integer_value(json_object_get(r, "tp")),
           json_string_value(json_object_get(r, "device")),
           json_real_value(json_object_get(r, "copy_gb_s")),
           json_real_value(json_object_get(r, "weight_gb")),
           json_string_value(json_object_get(r, "allreduce")),
           json_is_true(json_object_get(r, "overlap")) ? "on" : "off",
           (long long)json_integer_value(json_object_get(r, "prefetch_mb")));
    size_t i;
    json_t *e;
    if (json_object_get(r, "serving")) {
        bench_print_streams(json_object_get(r, "serving"));
        return;
    }
    printf("\nprefill   tokens      ms     tok/s | profile ms: matmul attention gdn other "
           "allreduce\n");
    json_array_foreach(json_object_get(r, "prefill"), i, e)
    {
        if (json_object_get(e, "error"))
            printf("          %6lld  error: %s\n",
                   (long long)json_integer_value(json_object_get(e, "tokens")),
                   json_string_value(json_object_get(e, "error")));
        else {
            json_t *p = json_object_get(e, "profile_ms");
            printf("          %6lld %7.1f %9.0f | %7.1f %7.1f %7.1f %7.1f %7.1f\n",
                   (long long)json_integer_value(json_object_get(e, "tokens")),
                   json_real_value(json_object_get(e, "ms")),
                   json_real_value(json_object_get(e, "tok_s")),
                   json_real_value(json_object_get(p, "matmul")),
                   json_real_value(json_object_get(p, "attention")),
                   json_real_value(json_object_get(p, "gdn")),
                   json_real_value(json_object_get(p, "other")),
                   json_real_value(json_object_get(p, "allreduce")));
        }
    }
    printf("\ndecode  batch context  ms/step    tok/s    GB/s  of copy | profile ms/step: matmul "
           "attention gdn other allreduce\n");
    json_array_foreach(json_object_get(r, "decode"), i, e)
    {
        int b = (int)json_integer_value(json_object_get(e, "batch"));
        long long x = (long long)json_integer_value(json_object_get(e, "context"));
        if (json_object_get(e, "error")) {
            printf("        %5d %7lld  error: %s\n", b, x,
                   json_string_value(json_object_get(e, "error")));
            continue;
        }
        json_t *p = json_object_get(e, "profile_ms");
        printf("        %5d %7lld %8.2f %8.1f %7.0f %6.1f%% | %6.2f %6.2f %6.2f %6.2f %6.2f\n", b,
               x, json_real_value(json_object_get(e, "step_ms")),
               json_real_value(json_object_get(e, "tok_s")),
               json_real_value(json_object_get(e, "gb_s")),
               100.0 * json_real_value(json_object_get(e, "copy_share")),
               json_real_value(json_object_get(p, "matmul")),
               json_real_value(json_object_get(p, "attention")),
               json_real_value(json_object_get(p, "gdn")),
               json_real_value(json_object_get(p, "other")),
               json_real_value(json_object_get(p, "allreduce")));
    }
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    if (bench_parse(argc, argv, &o))
        return 2;
    char err[512];
    struct model_config cfg;
    struct model_file *mf = NULL;
    struct cuda_model *g = NULL;
    json_t *res = NULL;
    int status = 1;
    if (cudaSetDevice(o.device) != cudaSuccess) {
        fprintf(stderr, "neuron-bench: no CUDA device %d\n", o.device);
        return 1;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, o.device);
    double copy = bench_copy_gbs(o.repeats < 5 ? 5 : o.repeats);

    int64_t max_ctx = 1, max_batch = 1;
    for (int i = 0; i < o.n_prefill; i++)
        max_ctx = o.prefill[i] > max_ctx ? o.prefill[i] : max_ctx;
    for (int i = 0; i < o.n_context; i++)
        max_ctx = o.context[i] > max_ctx ? o.context[i] : max_ctx;
    for (int i = 0; i < o.n_batch; i++)
        max_batch = o.batch[i] > max_batch ? o.batch[i] : max_batch;
    if (o.n_streams > 0) { /* serving mode only: the streams and a first request */
        max_ctx = o.shared + o.prompt + o.gen;
        max_batch = 0;
        for (int i = 0; i < o.n_streams; i++)
            max_batch = o.streams[i] > max_batch ? o.streams[i] : max_batch;
        max_batch += o.shared > 0;
    }
    if (o.no_overlap)
        cuda_set_overlap(0);
    if (o.prefetch_mb >= 0)
        cuda_set_prefetch_bytes(o.prefetch_mb << 20);
    struct cuda_model_options co = {.device = o.device,
                                    .max_context = max_ctx,
                                    .no_graphs = o.no_graphs,
                                    .no_fusion = o.no_fusion,
                                    .no_custom_allreduce = o.no_custom_allreduce,
                                    .tp = o.tp};
    for (int i = 0; i < o.tp; i++)
        co.devices[i] = i;
    double t0 = bench_now();
    if (o.model) {
        if (model_file_open(o.model, &mf, err, sizeof(err)))
            goto fail;
        cfg = mf->config;
        if (cuda_model_create(mf, &co, &g, err, sizeof(err)))
            goto fail;
    } else {
        json_error_t jerr;
        json_t *j = json_load_file(o.config, 0, &jerr);
        if (!j) {
            snprintf(err, sizeof(err), "%s: %s", o.config, jerr.text);
            goto fail;
        }
        int rc = model_file_config_from_json(j, o.config, &cfg, err, sizeof(err));
        json_decref(j);
        if (rc || cuda_model_create_random(&cfg, o.config, o.seed, &co, &g, err, sizeof(err)))
            goto fail;
    }
    double load_s = bench_now() - t0;
    /* every slot and position the runs touch, reserved once (no growth while timing) */
    if (cuda_model_reserve(g, (int)max_batch, max_ctx, err, sizeof(err)))
        goto fail;

    if (o.n_streams > 0) {
        res = json_object();
        json_object_set_new(res, "serving", bench_streams(&o, g, &cfg));
    } else {
        res = bench_run(&o, g, &cfg, copy);
    }
    json_object_set_new(res, "model", json_string(o.model ? o.model : o.config));
    json_object_set_new(res, "device", json_string(prop.name));
    json_object_set_new(res, "copy_gb_s", json_real(copy));
    json_object_set_new(res, "tp", json_integer(o.tp));
    json_object_set_new(res, "allreduce", json_string(cuda_model_allreduce_name(g)));
    json_object_set_new(res, "weight_gb", json_real((double)cuda_model_weight_bytes(g) / 1e9));
    json_object_set_new(res, "load_s", json_real(load_s));
    json_object_set_new(res, "graphs", json_boolean(!o.no_graphs));
    json_object_set_new(res, "fusion", json_boolean(!o.no_fusion));
    cudaSetDevice(o.device);
    json_object_set_new(res, "overlap", json_boolean(cuda_overlap_on()));
    json_object_set_new(res, "prefetch_mb", json_integer(cuda_prefetch_bytes() >> 20));
    json_object_set_new(res, "repeats", json_integer(o.repeats));
    json_object_set_new(res, "steps", json_integer(o.steps));
    if (!o.json || strcmp(o.json, "-") != 0)
        bench_print(res);
    if (o.json && json_dump_file(res, strcmp(o.json, "-") == 0 ? "/dev/stdout" : o.json,
                                 JSON_INDENT(1)) != 0) {
        snprintf(err, sizeof(err), "cannot write %s", o.json);
        goto fail;
    }
    status = 0;
    goto out;
fail:
    fprintf(stderr, "neuron-bench: %s\n", err);
out:
    json_decref(res);
    cuda_model_destroy(g);
    model_file_close(mf);
    return status;
}
