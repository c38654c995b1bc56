/*
 * tests/kernels/bench_gemm.c — where cuda_gemm() (cuBLASLt) takes over from cuda_matvec(), and
 * how fast the prefill products run, on the 27B qwen3_5 shapes.
 *
 *   bench_gemm [--no-model]
 *
 * 1. Per weight shape of the 27B model, for n = 1..32 tokens: ms per product and weight GB/s of
 *    cuda_matvec() (n <= 8, default configuration, x f32), cuda_gemm() with bf16 and with f32
 *    activations (the latter includes the rounding pass), and plain cublasGemmEx (bf16 x, fp32
 *    y); each a CUDA graph of launches rotating over enough copies of the matrix to defeat
 *    the L2.
 * 2. (unless --no-model) Every Linear of the 27B model (51.3 GB of random bf16 made on the GPU)
 *    as one graph: the decode step's weight floor at n = 1..32 for the grouped matrix-vector
 *    kernel (n <= 8) and for cuda_gemm(); then the prefill products (every layer Linear, the
 *    lm_head on one token) at n = 512 and 4096, as TFLOP/s.
 * Timings are medians of graph replays measured with events, after warm-up.
 */
#include "kbench.h"
#include "cuda_device.h"
#include "cuda_gemm.h"
#include "cuda_matvec.h"
#include "cuda_random.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CB(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, (int)s_);      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static cudaStream_t stream;
static cublasHandle_t blas;
static struct cuda_gemm_ctx *gctx;

static float bench_graph(cudaGraphExec_t g, int reps)
{
    return kbench_graph(g, stream, 2, reps);
}

/* One launch: n products sharing x. */
struct job {
    int n;
    const void *w[4];
    int64_t rows[4], cols;
};

enum runner { RUN_MATVEC, RUN_GEMM, RUN_CUBLAS };

/* Queues one job for ntok tokens; outputs all go to y (contents do not matter). */
static void run_one(const struct job *j, int64_t ntok, enum runner how, enum dtype xt,
                    const void *x, void *y, enum dtype yt)
{
    if (how == RUN_CUBLAS) {
        const float one = 1.0f, zero = 0.0f;
        for (int i = 0; i < j->n; i++)
            CB(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)j->rows[i], (int)ntok,
                            (int)j->cols, &one, j->w[i], CUDA_R_16BF, (int)j->cols, x, CUDA_R_16BF,
                            (int)j->cols, &zero, y, CUDA_R_32F, (int)j->rows[i], CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
        return;
    }
    if (how == RUN_GEMM) {
        for (int i = 0; i < j->n; i++) {
            struct cuda_gemm_args a = {.w = j->w[i],
                                       .rows = j->rows[i],
                                       .cols = j->cols,
                                       .x_type = xt,
                                       .x = x,
                                       .x_stride = j->cols,
                                       .y_type = yt,
                                       .y = y,
                                       .y_stride = j->rows[i],
                                       .n = ntok};
            KC(cuda_gemm(gctx, &a));
        }
        return;
    }
    struct cuda_matvec m[4];
    for (int i = 0; i < j->n; i++)
        m[i] = (struct cuda_matvec){.w_type = DTYPE_BF16,
                                    .w = j->w[i],
                                    .rows = j->rows[i],
                                    .cols = j->cols,
                                    .x_type = xt,
                                    .x = x,
                                    .x_stride = j->cols,
                                    .y_type = yt,
                                    .y = y,
                                    .y_stride = j->rows[i],
                                    .batch = (int)ntok};
    KC(cuda_matvec_group(m, j->n, stream));
}

/* Median ms of one replay of all jobs as one graph (jobs[skip_last] excluded when set). */
static float bench_jobs(const struct job *jobs, int n, int64_t ntok, enum runner how, enum dtype xt,
                        const void *x, void *y, enum dtype yt, int reps)
{
    for (int i = 0; i < n; i++) /* plans and staging sized outside the capture */
        run_one(&jobs[i], ntok, how, xt, x, y, yt);
    CK(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < n; i++)
        run_one(&jobs[i], ntok, how, xt, x, y, yt);
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    float ms = bench_graph(exec, reps);
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    return ms;
}

static const struct {
    const char *name;
    int64_t rows, cols;
} shapes[] = {
        {"gdn in_proj_qkv", 10240, 5120}, {"gdn in_proj_z", 6144, 5120},
        {"gdn out_proj", 5120, 6144},     {"attn q_proj", 12288, 5120},
        {"mlp gate/up", 17408, 5120},     {"mlp down", 5120, 17408},
};

static const int ntoks[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32};
#define N_NTOKS ((int)(sizeof ntoks / sizeof ntoks[0]))

static void bench_shapes(void *x_f32, void *x_bf16, void *y)
{
    printf("\n== per shape: ms per product (weight GB/s); graph over rotating copies\n");
    printf("%-16s %4s | %-16s | %-16s | %-16s | %-16s | %s\n", "shape", "n", "matvec x f32",
           "gemm x bf16", "gemm x f32", "cublasGemmEx", "best");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t bytes = (size_t)(shapes[s].rows * shapes[s].cols) * 2;
        int copies = (int)((((size_t)512 << 20) + bytes - 1) / bytes);
        if (copies > 16)
            copies = 16;
        struct job jobs[32];
        void *buf;
        CK(cudaMalloc(&buf, bytes * (size_t)copies));
        KC(cuda_random_fill(DTYPE_BF16, buf, (int64_t)(bytes / 2 * (size_t)copies), 7 + s, 0.05f,
                            stream));
        int n = copies < 8 ? 2 * copies : copies;
        for (int i = 0; i < n; i++)
            jobs[i] = (struct job){1,
                                   {(char *)buf + bytes * (size_t)(i % copies)},
                                   {shapes[s].rows},
                                   shapes[s].cols};
        double gb = (double)bytes / 1e9;
        for (int t = 0; t < N_NTOKS; t++) {
            int64_t nt = ntoks[t];
            float mv = nt <= CUDA_MATVEC_MAX_BATCH ? bench_jobs(jobs, n, nt, RUN_MATVEC, DTYPE_F32,
                                                                x_f32, y, DTYPE_F32, 9) /
                                                             n
                                                   : 0.0f;
            float g16 = bench_jobs(jobs, n, nt, RUN_GEMM, DTYPE_BF16, x_bf16, y, DTYPE_F32, 9) / n;
            float g32 = bench_jobs(jobs, n, nt, RUN_GEMM, DTYPE_F32, x_f32, y, DTYPE_F32, 9) / n;
            float cb = bench_jobs(jobs, n, nt, RUN_CUBLAS, DTYPE_BF16, x_bf16, y, DTYPE_F32, 9) / n;
            const char *best = mv > 0.0f && mv < g16 && mv < cb ? "matvec"
                               : g16 <= cb                      ? "gemm"
                                                                : "cublasGemmEx";
            char mvs[32] = "-";
            if (mv > 0.0f)
                snprintf(mvs, sizeof mvs, "%.4f (%4.0f)", mv, gb / (mv * 1e-3));
            printf("%-16s %4lld | %-16s | %.4f (%4.0f) | %.4f (%4.0f) | %.4f (%4.0f) | %s\n",
                   shapes[s].name, (long long)nt, mvs, g16, gb / (g16 * 1e-3), g32,
                   gb / (g32 * 1e-3), cb, gb / (cb * 1e-3), best);
        }
        CK(cudaFree(buf));
    }
}

/* Every Linear of the 27B qwen3_5 model in execution order, grouped by shared input; the
 * lm_head last. Offsets into one slab. */
static int model_jobs(struct job *jobs, size_t *total)
{
    const int layers = 64, H = 5120, I = 17408, V = 248320;
    int n = 0;
    *total = 0;
#define ADD1(rows_, cols_)                                                                         \
    do {                                                                                           \
        struct job *j_ = &jobs[n++];                                                               \
        j_->n = 1;                                                                                 \
        j_->cols = (cols_);                                                                        \
        j_->rows[0] = (rows_);                                                                     \
        j_->w[0] = (void *)*total;                                                                 \
        *total += ((size_t)((rows_) * (int64_t)(cols_)) * 2 + 255) & ~(size_t)255;                 \
    } while (0)
#define ADDN(cnt, rows_, cols_)                                                                    \
    do {                                                                                           \
        struct job *j_ = &jobs[n++];                                                               \
        j_->n = (cnt);                                                                             \
        j_->cols = (cols_);                                                                        \
        for (int b_ = 0; b_ < (cnt); b_++) {                                                       \
            j_->rows[b_] = (rows_)[b_];                                                            \
            j_->w[b_] = (void *)*total;                                                            \
            *total += ((size_t)((rows_)[b_] * (cols_)) * 2 + 255) & ~(size_t)255;                  \
        }                                                                                          \
    } while (0)
    const int64_t gdn_in[] = {10240, 6144, 48, 48}, attn_in[] = {12288, 1024, 1024};
    const int64_t mlp_in[] = {I, I};
    for (int l = 0; l < layers; l++) {
        if ((l + 1) % 4 == 0) {
            ADDN(3, attn_in, H);
            ADD1(H, 6144);
        } else {
            ADDN(4, gdn_in, H);
            ADD1(H, 6144);
        }
        ADDN(2, mlp_in, H);
        ADD1(H, I);
    }
    ADD1(V, H);
#undef ADD1
#undef ADDN
    return n;
}

static void bench_model(void *x_f32, void *x_bf16, void *y, void *y_big)
{
    static struct job jobs[1024];
    size_t total = 0;
    int n = model_jobs(jobs, &total);
    size_t free_b, total_b;
    CK(cudaMemGetInfo(&free_b, &total_b));
    printf("\n== 27B qwen3_5 Linear set: %d launches, %.2f GB of bf16 weights (%.1f GB free)\n", n,
           total / 1e9, free_b / 1e9);
    if (total + ((size_t)1 << 30) > free_b) {
        printf("not enough GPU memory: skipped\n");
        return;
    }
    char *slab;
    CK(cudaMalloc((void **)&slab, total));
    KC(cuda_random_fill(DTYPE_BF16, slab, (int64_t)(total / 2), 99, 0.02f, stream));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < jobs[i].n; k++)
            jobs[i].w[k] = slab + (size_t)jobs[i].w[k];
    printf("%-34s %5s %10s %9s %10s\n", "decode step (weights only)", "n", "ms/step", "GB/s",
           "tokens/s");
#define ROW(name_, nt_, ms_)                                                                       \
    printf("%-34s %5lld %10.2f %9.0f %10.0f\n", name_, (long long)(nt_), ms_,                      \
           total / 1e9 / ((ms_)*1e-3), (nt_)*1e3 / (ms_))
    for (int t = 0; t < N_NTOKS; t++) {
        int64_t nt = ntoks[t];
        if (nt <= CUDA_MATVEC_MAX_BATCH) {
            float ms = bench_jobs(jobs, n, nt, RUN_MATVEC, DTYPE_F32, x_f32, y, DTYPE_F32, 7);
            ROW("matvec grouped, x f32", nt, ms);
        }
        float ms = bench_jobs(jobs, n, nt, RUN_GEMM, DTYPE_BF16, x_bf16, y, DTYPE_F32, 7);
        ROW("cuda_gemm, x bf16", nt, ms);
        ms = bench_jobs(jobs, n, nt, RUN_GEMM, DTYPE_F32, x_f32, y, DTYPE_F32, 7);
        ROW("cuda_gemm, x f32", nt, ms);
    }
#undef ROW
    /* prefill: every layer product at ntok tokens; the lm_head for the last token only */
    printf("%-34s %5s %10s %9s\n", "prefill products", "n", "ms", "TFLOP/s");
    double flops_layers = 0.0;
    for (int i = 0; i < n - 1; i++)
        for (int k = 0; k < jobs[i].n; k++)
            flops_layers += 2.0 * (double)jobs[i].rows[k] * (double)jobs[i].cols;
    const int64_t pre[] = {512, 4096};
    for (int p = 0; p < 2; p++) {
        float ms =
                bench_jobs(jobs, n - 1, pre[p], RUN_GEMM, DTYPE_BF16, x_bf16, y_big, DTYPE_BF16, 3);
        float head = bench_jobs(&jobs[n - 1], 1, 1, RUN_GEMM, DTYPE_BF16, x_bf16, y, DTYPE_F32, 5);
        printf("%-34s %5lld %10.2f %9.1f   (+ lm_head for 1 token %.2f ms; %.0f tok/s for the "
               "products alone)\n",
               "cuda_gemm bf16 -> bf16", (long long)pre[p], ms,
               flops_layers * (double)pre[p] / (ms * 1e-3) / 1e12, head,
               (double)pre[p] / ((ms + head) * 1e-3));
    }
    CK(cudaFree(slab));
}

int main(int argc, char **argv)
{
    int model = !(argc > 1 && strcmp(argv[1], "--no-model") == 0);
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_gemm on %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20);
    CK(cudaStreamCreate(&stream));
    CB(cublasCreate(&blas));
    CB(cublasSetStream(blas, stream));
    void *ws;
    CK(cudaMalloc(&ws, (size_t)32 << 20));
    CB(cublasSetWorkspace(blas, ws, (size_t)32 << 20));
    gctx = cuda_gemm_ctx_create(stream);
    if (!gctx) {
        fprintf(stderr, "cuda_gemm_ctx_create: %s\n", cuda_last_error());
        return 1;
    }
    /* activations: up to 4096 tokens of the widest input; outputs: 32 x the lm_head, or 4096
     * x the widest layer output in bf16 */
    void *x_f32, *x_bf16, *y, *y_big;
    size_t xn = (size_t)4096 * 17408;
    CK(cudaMalloc(&x_f32, xn * 4));
    CK(cudaMalloc(&x_bf16, xn * 2));
    CK(cudaMalloc(&y, (size_t)32 * 248320 * 4));
    CK(cudaMalloc(&y_big, (size_t)4096 * 17408 * 2));
    KC(cuda_random_fill(DTYPE_F32, x_f32, (int64_t)xn, 3, 1.0f, stream));
    KC(cuda_random_fill(DTYPE_BF16, x_bf16, (int64_t)xn, 4, 1.0f, stream));
    KC(cuda_gemm_ctx_reserve(gctx, (int64_t)xn));

    bench_shapes(x_f32, x_bf16, y);
    if (model)
        bench_model(x_f32, x_bf16, y, y_big);
    CK(cudaStreamSynchronize(stream));
    cuda_gemm_ctx_destroy(gctx);
    CB(cublasDestroy(blas));
    CK(cudaFree(ws));
    CK(cudaFree(x_f32));
    CK(cudaFree(x_bf16));
    CK(cudaFree(y));
    CK(cudaFree(y_big));
    CK(cudaStreamDestroy(stream));
    return 0;
}
