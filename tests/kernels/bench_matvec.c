/*
 * tests/kernels/bench_matvec.c — how fast cuda_matvec() streams weights, against the GPU's
 * measured copy bandwidth and against cuBLAS, on the 27B qwen3_5 shapes.
 *
 *   bench_matvec [--no-model]
 *
 * 1. cudaMemcpy device-to-device of 1 GiB: bytes read + written per second (the ceiling).
 * 2. Each weight shape of the 27B model (and its lm_head) at batch 1, 2, 4 and 8: every kernel
 *    configuration, the default one and cublasGemmEx (bf16 x, fp32 y), each as a CUDA graph of
 *    launches that rotate over enough copies of the matrix to defeat the 50 MB L2; GB/s counts
 *    weight bytes only.
 * 3. (unless --no-model) Every Linear of the 27B model (48 GDN + 16 attention layers, MLPs,
 *    lm_head; 51.3 GB of random bf16 made on the GPU) as one graph, ours vs cuBLAS: the
 *    batch-1 decode step's floor when nothing but weights is read.
 * Timings are medians of graph replays measured with events, after warm-up.
 */
#include "cuda_device.h"
#include "cuda_matvec.h"
#include "cuda_random.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CB(x)                                                                                      \
    do {                                                                                           \
        cublasStatus_t s_ = (x);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d %s: cuBLAS status %d\n", __FILE__, __LINE__, #x, (int)s_);      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define KC(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) {                                                                            \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cuda_last_error());          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static cudaStream_t stream;
static cublasHandle_t blas;

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds per replay of graph g (warm-up first). */
static float bench_graph(cudaGraphExec_t g, int reps)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++)
        CK(cudaGraphLaunch(g, stream));
    float t[64];
    if (reps > 64)
        reps = 64;
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0, stream));
        CK(cudaGraphLaunch(g, stream));
        CK(cudaEventRecord(e1, stream));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    qsort(t, (size_t)reps, sizeof t[0], cmp_float);
    return t[reps / 2];
}

static double bench_copy(void)
{
    size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    KC(cuda_random_fill(DTYPE_F32, a, (int64_t)(bytes / 4), 1, 1.0f, stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 4; i++)
        CK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    float ms = bench_graph(exec, 15);
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 4.0 * 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
}

struct mv_job {
    const void *w;
    int64_t rows, cols;
};

/* Queues one product: variant >= 0 is ours (0 = default), -1 is cuBLAS (needs bf16 x). */
static void run_one(const struct mv_job *j, int batch, int variant, enum dtype xt, const void *x,
                    float *y)
{
    if (variant < 0) {
        const float one = 1.0f, zero = 0.0f;
        CB(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)j->rows, batch, (int)j->cols, &one,
                        j->w, CUDA_R_16BF, (int)j->cols, x, CUDA_R_16BF, (int)j->cols, &zero, y,
                        CUDA_R_32F, (int)j->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return;
    }
    struct cuda_matvec m = {.w_type = DTYPE_BF16,
                            .w = j->w,
                            .rows = j->rows,
                            .cols = j->cols,
                            .x_type = xt,
                            .x = x,
                            .x_stride = j->cols,
                            .y_type = DTYPE_F32,
                            .y = y,
                            .y_stride = j->rows,
                            .batch = batch};
    KC(cuda_matvec_variant(&m, variant, stream));
}

/* Median ms of one replay of all jobs in order. */
static float bench_jobs(const struct mv_job *jobs, int n, int batch, int variant, enum dtype xt,
                        const void *x, float *y, int reps)
{
    run_one(&jobs[0], batch, variant, xt, x, y); /* cuBLAS picks its kernels outside capture */
    CK(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < n; i++)
        run_one(&jobs[i], batch, variant, xt, x, y);
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
        {"lm_head", 248320, 5120},
};

static void bench_shapes(double copy_gbs, void *x_f32, void *x_bf16, float *y)
{
    int nv = cuda_matvec_variant_count();
    printf("\n== per shape: weight GB/s (%% of copy); graph of launches over rotating copies\n");
    printf("%-16s %5s | %-22s | %-15s | %-15s | %-15s | %-15s\n", "shape", "batch",
           "best variant (x f32)", "auto x f32", "auto x bf16", "cuBLAS x bf16", "variant sweep");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t bytes = (size_t)(shapes[s].rows * shapes[s].cols) * 2;
        int copies = (int)((((size_t)512 << 20) + bytes - 1) / bytes);
        if (copies > 16)
            copies = 16;
        struct mv_job jobs[32];
        void *buf;
        CK(cudaMalloc(&buf, bytes * (size_t)copies));
        KC(cuda_random_fill(DTYPE_BF16, buf, (int64_t)(bytes / 2 * (size_t)copies), 7 + s, 0.05f,
                            stream));
        int n = copies < 8 ? 2 * copies : copies;
        for (int i = 0; i < n; i++)
            jobs[i] = (struct mv_job){(char *)buf + bytes * (size_t)(i % copies), shapes[s].rows,
                                      shapes[s].cols};
        double gb = (double)bytes * n / 1e9;
        for (int batch = 1; batch <= 8; batch *= 2) {
            char sweep[256] = "";
            int best = 1;
            float best_ms = 1e30f;
            for (int v = 1; v <= nv; v++) {
                float ms = bench_jobs(jobs, n, batch, v, DTYPE_F32, x_f32, y, 9);
                size_t l = strlen(sweep);
                snprintf(sweep + l, sizeof sweep - l, "%s%s %.0f", l ? ", " : "",
                         cuda_matvec_variant_name(v), gb / (ms * 1e-3));
                if (ms < best_ms)
                    best_ms = ms, best = v;
            }
            float auto32 = bench_jobs(jobs, n, batch, 0, DTYPE_F32, x_f32, y, 9);
            float auto16 = bench_jobs(jobs, n, batch, 0, DTYPE_BF16, x_bf16, y, 9);
            float blas_ms = bench_jobs(jobs, n, batch, -1, DTYPE_BF16, x_bf16, y, 9);
#define GBS(ms) (gb / ((ms)*1e-3)), (100.0 * gb / ((ms)*1e-3) / copy_gbs)
            printf("%-16s %5d | %-5s %6.0f (%5.1f%%) | %6.0f (%5.1f%%) | %6.0f (%5.1f%%) | "
                   "%6.0f (%5.1f%%) | %s\n",
                   shapes[s].name, batch, cuda_matvec_variant_name(best), GBS(best_ms), GBS(auto32),
                   GBS(auto16), GBS(blas_ms), sweep);
        }
        CK(cudaFree(buf));
    }
}

/* Every Linear of the 27B qwen3_5 model, in execution order, carved out of one allocation. */
static void bench_model(double copy_gbs, void *x_f32, void *x_bf16, float *y)
{
    const int layers = 64, H = 5120, I = 17408, V = 248320;
    const int64_t gdn[][2] = {{10240, H}, {6144, H}, {48, H}, {48, H}, {H, 6144}};
    const int64_t attn[][2] = {{12288, H}, {1024, H}, {1024, H}, {H, 6144}};
    const int64_t mlp[][2] = {{I, H}, {I, H}, {H, I}};
    static struct mv_job jobs[1024];
    size_t offset[1024];
    int n = 0;
    size_t total = 0;
    for (int l = 0; l < layers; l++) {
        int full = (l + 1) % 4 == 0; /* full_attention_interval 4 */
        for (int i = 0; i < (full ? 4 : 5); i++)
            jobs[n++] = (struct mv_job){NULL, full ? attn[i][0] : gdn[i][0],
                                        full ? attn[i][1] : gdn[i][1]};
        for (int i = 0; i < 3; i++)
            jobs[n++] = (struct mv_job){NULL, mlp[i][0], mlp[i][1]};
    }
    jobs[n++] = (struct mv_job){NULL, V, H};
    for (int i = 0; i < n; i++) {
        offset[i] = total;
        total += ((size_t)(jobs[i].rows * jobs[i].cols) * 2 + 255) & ~(size_t)255;
    }
    char *slab;
    size_t free_b, total_b;
    CK(cudaMemGetInfo(&free_b, &total_b));
    printf("\n== 27B qwen3_5 Linear set: %d products, %.2f GB of bf16 weights (%.1f GB free)\n", n,
           total / 1e9, free_b / 1e9);
    if (total + ((size_t)1 << 30) > free_b) {
        printf("not enough GPU memory: skipped\n");
        return;
    }
    CK(cudaMalloc((void **)&slab, total));
    KC(cuda_random_fill(DTYPE_BF16, slab, (int64_t)(total / 2), 99, 0.02f, stream));
    for (int i = 0; i < n; i++)
        jobs[i].w = slab + offset[i];
    const struct {
        const char *name;
        int batch, variant;
        enum dtype xt;
    } runs[] = {
            {"ours, x f32", 1, 0, DTYPE_F32},      {"ours, x bf16", 1, 0, DTYPE_BF16},
            {"cuBLAS, x bf16", 1, -1, DTYPE_BF16}, {"ours, x f32", 8, 0, DTYPE_F32},
            {"cuBLAS, x bf16", 8, -1, DTYPE_BF16},
    };
    printf("%-16s %5s %10s %9s %8s %10s\n", "kernel", "batch", "ms/step", "GB/s", "of copy",
           "steps/s");
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        float ms = bench_jobs(jobs, n, runs[r].batch, runs[r].variant, runs[r].xt,
                              runs[r].xt == DTYPE_F32 ? x_f32 : x_bf16, y, 9);
        double gbs = total / 1e9 / (ms * 1e-3);
        printf("%-16s %5d %10.2f %9.0f %7.1f%% %10.1f\n", runs[r].name, runs[r].batch, ms, gbs,
               100.0 * gbs / copy_gbs, 1e3 / ms);
    }
    CK(cudaFree(slab));
}

int main(int argc, char **argv)
{
    int model = !(argc > 1 && strcmp(argv[1], "--no-model") == 0);
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_matvec on %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20);
    CK(cudaStreamCreate(&stream));
    CB(cublasCreate(&blas));
    CB(cublasSetStream(blas, stream));
    void *ws;
    CK(cudaMalloc(&ws, (size_t)64 << 20));
    CB(cublasSetWorkspace(blas, ws, (size_t)64 << 20));

    double copy = bench_copy();
    printf("cudaMemcpy device-to-device, 1 GiB: %.0f GB/s (read + write)\n", copy);

    /* activations: up to 8 tokens of the widest input; outputs: 8 x the widest output */
    void *x_f32, *x_bf16;
    float *y;
    CK(cudaMalloc(&x_f32, (size_t)8 * 17408 * 4));
    CK(cudaMalloc(&x_bf16, (size_t)8 * 17408 * 2));
    CK(cudaMalloc((void **)&y, (size_t)8 * 248320 * 4));
    KC(cuda_random_fill(DTYPE_F32, x_f32, 8 * 17408, 3, 1.0f, stream));
    KC(cuda_random_fill(DTYPE_BF16, x_bf16, 8 * 17408, 4, 1.0f, stream));

    bench_shapes(copy, x_f32, x_bf16, y);
    if (model)
        bench_model(copy, x_f32, x_bf16, y);
    CK(cudaStreamSynchronize(stream));
    CB(cublasDestroy(blas));
    CK(cudaFree(ws));
    CK(cudaFree(x_f32));
    CK(cudaFree(x_bf16));
    CK(cudaFree(y));
    CK(cudaStreamDestroy(stream));
    return 0;
}
