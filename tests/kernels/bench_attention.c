/*
 * tests/kernels/bench_attention.c — how fast the attention and sampling kernels run on the 27B
 * qwen3_5 shapes (24 query / 4 KV heads of 256, bf16 cache, vocabulary 248320).
 *
 *   bench_attention [prefill]      (prefill: only part 3)
 *
 * 1. cudaMemcpy device-to-device of 1 GiB: bytes read + written per second (the ceiling).
 * 2. Decode attention at batch 1, 8 and 32 and context 1k, 8k and 32k: a graph of one call per
 *    layer over enough layers' caches (up to 16, as the model has) to defeat the 50 MB L2;
 *    GB/s counts the K and V bytes read.
 * 3. Prefill attention, the CUDA-core (tiled) and the tensor-core kernel side by side: 512- and
 *    4096-token prompts from position 0 and 512 tokens after 3584 cached (TFLOP/s of the causal
 *    part of QK^T and PV, and their share of the H100's dense bf16 peak).
 * 4. argmax and sampling over bf16 logits at batch 1 and 32.
 * Timings are medians of graph replays measured with events, after warm-up. Not a test.
 */
#include "kbench.h"
#include "cuda_attention.h"
#include "cuda_device.h"
#include "cuda_random.h"
#include "cuda_sample.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NH    24
#define NKV   4
#define HD    256
#define VOCAB 248320

static cudaStream_t stream;

/* Median milliseconds of reps timed replays of the graph captured so far by the caller. */
static float bench_capture_end(int reps)
{
    cudaGraph_t graph;
    cudaGraphExec_t g;
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&g, graph, 0));
    float ms = kbench_graph(g, stream, 3, reps);
    CK(cudaGraphExecDestroy(g));
    CK(cudaGraphDestroy(graph));
    return ms;
}

static double bench_copy(void)
{
    size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    KC(cuda_random_fill(DTYPE_F32, a, (int64_t)(bytes / 4), 1, 1.0f, stream));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[15];
    for (int i = -3; i < 15; i++) {
        CK(cudaEventRecord(e0, stream));
        CK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
        CK(cudaEventRecord(e1, stream));
        CK(cudaEventSynchronize(e1));
        if (i >= 0)
            CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    float med = kbench_median(t, 15);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * (double)bytes / (med * 1e-3) / 1e9;
}

static void bench_decode(double copy_gbs)
{
    const int batches[3] = {1, 8, 32};
    const int64_t ctxs[3] = {1024, 8192, 32768};
    printf("\ndecode attention, %d/%d heads of %d, bf16 q/cache/out\n", NH, NKV, HD);
    printf("%6s %7s %6s %7s %10s %9s %6s\n", "batch", "context", "layers", "splits", "us/layer",
           "GB/s", "%copy");
    for (int bi = 0; bi < 3; bi++)
        for (int ci = 0; ci < 3; ci++) {
            int batch = batches[bi];
            int64_t ctx = ctxs[ci], kv_stride = NKV * HD;
            size_t layer_bytes = 2 * (size_t)batch * (size_t)ctx * (size_t)kv_stride * 2;
            int layers = (int)((((size_t)512 << 20) + layer_bytes - 1) / layer_bytes);
            layers = layers > 16 ? 16 : layers;
            void *k[16], *v[16];
            for (int l = 0; l < layers; l++) {
                CK(cudaMalloc(&k[l], layer_bytes / 2));
                CK(cudaMalloc(&v[l], layer_bytes / 2));
                KC(cuda_random_fill(DTYPE_BF16, k[l], (int64_t)(layer_bytes / 4), 2 * l + 1, 1.0f,
                                    stream));
                KC(cuda_random_fill(DTYPE_BF16, v[l], (int64_t)(layer_bytes / 4), 2 * l + 2, 1.0f,
                                    stream));
            }
            void *q, *out, *lens, *work;
            CK(cudaMalloc(&q, (size_t)batch * NH * HD * 2));
            CK(cudaMalloc(&out, (size_t)batch * NH * HD * 2));
            KC(cuda_random_fill(DTYPE_BF16, q, (int64_t)batch * NH * HD, 9, 1.0f, stream));
            int32_t *hl = malloc(sizeof(int32_t) * (size_t)batch);
            for (int s = 0; s < batch; s++)
                hl[s] = (int32_t)ctx;
            CK(cudaMalloc(&lens, sizeof(int32_t) * (size_t)batch));
            CK(cudaMemcpy(lens, hl, sizeof(int32_t) * (size_t)batch, cudaMemcpyHostToDevice));
            int splits = cuda_attention_decode_splits(batch, NH, NKV, ctx);
            CK(cudaMalloc(&work, cuda_attention_decode_work_bytes(batch, NH, HD, splits)));
            CK(cudaStreamSynchronize(stream));
            CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            for (int l = 0; l < layers; l++) {
                struct cuda_attention_decode a = {.q_type = DTYPE_BF16,
                                                  .kv_type = DTYPE_BF16,
                                                  .out_type = DTYPE_BF16,
                                                  .q = q,
                                                  .q_stride = NH * HD,
                                                  .k = k[l],
                                                  .v = v[l],
                                                  .kv_stride = kv_stride,
                                                  .seq_stride = ctx * kv_stride,
                                                  .lens = lens,
                                                  .max_len = ctx,
                                                  .out = out,
                                                  .out_stride = NH * HD,
                                                  .n_seqs = batch,
                                                  .n_heads = NH,
                                                  .n_kv_heads = NKV,
                                                  .head_dim = HD,
                                                  .scale = 0.0625f,
                                                  .n_splits = splits,
                                                  .work = work};
                KC(cuda_attention_decode(&a, stream));
            }
            float ms = bench_capture_end(20) / (float)layers;
            double gbs = (double)layer_bytes / (ms * 1e-3) / 1e9;
            printf("%6d %7lld %6d %7d %10.1f %9.0f %5.0f%%\n", batch, (long long)ctx, layers,
                   splits, ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
            for (int l = 0; l < layers; l++) {
                CK(cudaFree(k[l]));
                CK(cudaFree(v[l]));
            }
            CK(cudaFree(q));
            CK(cudaFree(out));
            CK(cudaFree(lens));
            CK(cudaFree(work));
            free(hl);
        }
}

static void bench_prefill(void)
{
    printf("\nprefill attention, %d/%d heads of %d, bf16 cache; TFLOP/s of the causal "
           "QK^T and PV (H100 SXM dense bf16 peak: 989)\n",
           NH, NKV, HD);
    printf("%7s %6s %-18s %10s %9s %6s %12s\n", "tokens", "pos0", "kernel", "ms/layer", "TFLOP/s",
           "%peak", "16 layers ms");
    const int64_t lens[3] = {512, 4096, 512}, pos0s[3] = {0, 0, 3584};
    /* the CUDA-core kernel, the tensor-core one, and the tensor-core one with the engine's f32
     * queries and outputs */
    const enum cuda_attention_impl impls[3] = {
            CUDA_ATTENTION_IMPL_TILED, CUDA_ATTENTION_IMPL_TENSOR, CUDA_ATTENTION_IMPL_TENSOR};
    const char *names[3] = {"tiled", "tensor", "tensor, f32 q/out"};
    for (int i = 0; i < 3; i++) {
        int64_t n = lens[i], pos0 = pos0s[i], n_ctx = pos0 + n, kv_stride = NKV * HD;
        void *q, *k, *v, *out, *qf, *outf;
        CK(cudaMalloc(&q, (size_t)n * NH * HD * 2));
        CK(cudaMalloc(&out, (size_t)n * NH * HD * 2));
        CK(cudaMalloc(&qf, (size_t)n * NH * HD * 4));
        CK(cudaMalloc(&outf, (size_t)n * NH * HD * 4));
        CK(cudaMalloc(&k, (size_t)n_ctx * kv_stride * 2));
        CK(cudaMalloc(&v, (size_t)n_ctx * kv_stride * 2));
        KC(cuda_random_fill(DTYPE_BF16, q, n * NH * HD, 3, 1.0f, stream));
        KC(cuda_random_fill(DTYPE_F32, qf, n * NH * HD, 6, 1.0f, stream));
        KC(cuda_random_fill(DTYPE_BF16, k, n_ctx * kv_stride, 4, 1.0f, stream));
        KC(cuda_random_fill(DTYPE_BF16, v, n_ctx * kv_stride, 5, 1.0f, stream));
        CK(cudaStreamSynchronize(stream));
        for (int m = 0; m < 3; m++) {
            bool f32 = m == 2;
            struct cuda_attention_prefill a = {.q_type = f32 ? DTYPE_F32 : DTYPE_BF16,
                                               .kv_type = DTYPE_BF16,
                                               .out_type = f32 ? DTYPE_F32 : DTYPE_BF16,
                                               .q = f32 ? qf : q,
                                               .q_stride = NH * HD,
                                               .k = k,
                                               .v = v,
                                               .kv_stride = kv_stride,
                                               .out = f32 ? outf : out,
                                               .out_stride = NH * HD,
                                               .n_q = n,
                                               .pos0 = pos0,
                                               .n_heads = NH,
                                               .n_kv_heads = NKV,
                                               .head_dim = HD,
                                               .scale = 0.0625f,
                                               .impl = impls[m]};
            /* the first call of each kernel is made inside the capture: its one-time set-up
             * (the shared-memory limit) must be legal there, as in the engine's graphs */
            CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            KC(cuda_attention_prefill(&a, stream));
            float ms = bench_capture_end(10);
            /* query i sees pos0 + i + 1 positions: 4 hd FLOPs per (query, position, head) */
            double pairs = (double)n * (double)pos0 + (double)n * (double)(n + 1) / 2.0;
            double tflops = 4.0 * pairs * HD * NH / (ms * 1e-3) / 1e12;
            printf("%7lld %6lld %-18s %10.3f %9.1f %5.1f%% %12.1f\n", (long long)n, (long long)pos0,
                   names[m], ms, tflops, 100.0 * tflops / 989.0, 16.0 * ms);
        }
        CK(cudaFree(q));
        CK(cudaFree(k));
        CK(cudaFree(v));
        CK(cudaFree(out));
        CK(cudaFree(qf));
        CK(cudaFree(outf));
    }
}

static void bench_sampling(void)
{
    printf("\nsampling over %d bf16 logits\n", VOCAB);
    printf("%-28s %6s %10s\n", "what", "rows", "us/call");
    const int rows_set[2] = {1, 32};
    for (int ri = 0; ri < 2; ri++) {
        int rows = rows_set[ri];
        void *logits, *out, *params;
        CK(cudaMalloc(&logits, (size_t)rows * VOCAB * 2));
        CK(cudaMalloc(&out, sizeof(int32_t) * (size_t)rows));
        CK(cudaMalloc(&params, sizeof(struct cuda_sample_row) * (size_t)rows));
        KC(cuda_random_fill(DTYPE_BF16, logits, (int64_t)rows * VOCAB, 7, 8.0f, stream));
        const struct {
            const char *what;
            float t, p;
            int k;
        } modes[4] = {{"argmax", 0, 1, 0},
                      {"T=0.7 top_k=50 top_p=0.9", 0.7f, 0.9f, 50},
                      {"T=1 top_p=0.95", 1.0f, 0.95f, 0},
                      {"T=1 whole row", 1.0f, 1.0f, 0}};
        for (int m = 0; m < 4; m++) {
            struct cuda_sample_row *hp = calloc((size_t)rows, sizeof *hp);
            for (int r = 0; r < rows; r++)
                hp[r].temperature = modes[m].t, hp[r].top_p = modes[m].p, hp[r].top_k = modes[m].k,
                hp[r].rng = (uint64_t)r;
            CK(cudaMemcpy(params, hp, sizeof *hp * (size_t)rows, cudaMemcpyHostToDevice));
            CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < 10; i++) {
                if (m == 0) {
                    struct cuda_argmax a = {.type = DTYPE_BF16,
                                            .logits = logits,
                                            .stride = VOCAB,
                                            .rows = rows,
                                            .n = VOCAB,
                                            .out = out};
                    KC(cuda_argmax(&a, stream));
                } else {
                    struct cuda_sample a = {.type = DTYPE_BF16,
                                            .logits = logits,
                                            .stride = VOCAB,
                                            .rows = rows,
                                            .n = VOCAB,
                                            .params = params,
                                            .out = out};
                    KC(cuda_sample(&a, stream));
                }
            }
            float ms = bench_capture_end(20) / 10.0f;
            printf("%-28s %6d %10.1f\n", modes[m].what, rows, ms * 1e3);
            free(hp);
        }
        CK(cudaFree(logits));
        CK(cudaFree(out));
        CK(cudaFree(params));
    }
}

int main(int argc, char **argv)
{
    bool only_prefill = argc > 1 && strcmp(argv[1], "prefill") == 0;
    struct cuda_device_info info;
    int count = 0;
    if (cuda_device_count(&count) != 0 || count < 1 || cuda_device_query(0, &info) != 0) {
        fprintf(stderr, "bench_attention: no CUDA device\n");
        return 1;
    }
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    double copy = bench_copy();
    printf("%s: device copy %.0f GB/s\n", info.name, copy);
    if (!only_prefill)
        bench_decode(copy);
    bench_prefill();
    if (!only_prefill)
        bench_sampling();
    return 0;
}
