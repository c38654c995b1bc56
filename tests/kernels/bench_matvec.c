/*
 * tests/kernels/bench_matvec.c — how fast cuda_matvec() streams weights, against the GPU's
 * measured copy bandwidth and against cuBLAS, on the 27B qwen3_5 shapes.
 *
 *   bench_matvec [--no-model | --quant]
 *
 * 1. cudaMemcpy device-to-device of 1 GiB, launched one by one and as a graph: bytes read +
 *    written per second (the reference ceiling).
 * 2. Each weight shape of the 27B model (and its lm_head) at batch 1, 2, 4 and 8: every kernel
 *    configuration, the default one with and without the launch overlap, and cublasGemmEx
 *    (bf16 x, fp32 y), each as a CUDA graph of launches that rotate over enough copies of the
 *    matrix to defeat the 50 MB L2; GB/s counts weight bytes only.
 * 3. (unless --no-model) Every Linear of the 27B model (48 GDN + 16 attention layers, MLPs,
 *    lm_head; 51.3 GB of random bf16 made on the GPU) as one graph: ours one launch per matrix
 *    with and without the overlap, ours grouped by shared input (qkv/z/b/a, q/k/v, gate/up),
 *    and cuBLAS: the decode step's floor when nothing but weights is read.
 * 4. (--quant: instead of 2 and 3) The dequantising products: every GGUF weight type on the
 *    17408 x 5120 gate/up shape at batch 1, 4 and 8, weight GB/s of the quantised bytes (random
 *    bytes: the values do not change the speed).
 * Timings are medians of graph replays measured with events, after warm-up.
 */
#include "kbench.h"
#include "cuda_device.h"
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

/* Median milliseconds per replay of graph g (warm-up first). */
static float bench_graph(cudaGraphExec_t g, int reps)
{
    return kbench_graph(g, stream, 3, reps);
}

/* GB/s (read + write) of 1 GiB device-to-device copies: one by one (median of single copies
 * timed with events) in *single, and four back to back in a graph in *graphed. */
static void bench_copy(double *single, double *graphed)
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
    *single = 2.0 * (double)bytes / (med * 1e-3) / 1e9;
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 4; i++)
        CK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
    CK(cudaStreamEndCapture(stream, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    float ms = bench_graph(exec, 15);
    *graphed = 4.0 * 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    CK(cudaFree(a));
    CK(cudaFree(b));
}

/* One launch: n products sharing x (n = 1 for a single matrix). */
struct mv_job {
    int n;
    const void *w[4];
    int64_t rows[4], cols;
};

enum { RUN_CUBLAS = -1 };

/* Queues one job: variant >= 0 is ours (0 = default), RUN_CUBLAS one cublasGemmEx per matrix
 * (needs bf16 x). Outputs all go to y (the contents do not matter here). */
static void run_one(const struct mv_job *j, int batch, int variant, bool overlap, enum dtype xt,
                    const void *x, float *y)
{
    if (variant == RUN_CUBLAS) {
        const float one = 1.0f, zero = 0.0f;
        for (int i = 0; i < j->n; i++)
            CB(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)j->rows[i], batch, (int)j->cols,
                            &one, j->w[i], CUDA_R_16BF, (int)j->cols, x, CUDA_R_16BF, (int)j->cols,
                            &zero, y, CUDA_R_32F, (int)j->rows[i], CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
        return;
    }
    struct cuda_matvec m[4];
    int64_t off = 0;
    for (int i = 0; i < j->n; i++) {
        m[i] = (struct cuda_matvec){.w_type = DTYPE_BF16,
                                    .w = j->w[i],
                                    .rows = j->rows[i],
                                    .cols = j->cols,
                                    .x_type = xt,
                                    .x = x,
                                    .x_stride = j->cols,
                                    .y_type = DTYPE_F32,
                                    .y = y + off,
                                    .y_stride = j->rows[i]};
        m[i].batch = batch;
        off += j->rows[i] * batch;
    }
    KC(cuda_matvec_tuned(m, j->n, variant, overlap, stream));
}

/* Median ms of one replay of all jobs in order, as one graph. */
static float bench_jobs(const struct mv_job *jobs, int n, int batch, int variant, bool overlap,
                        enum dtype xt, const void *x, float *y, int reps)
{
    run_one(&jobs[0], batch, variant, overlap, xt, x, y); /* cuBLAS picks kernels outside capture */
    CK(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < n; i++)
        run_one(&jobs[i], batch, variant, overlap, xt, x, y);
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
    printf("%-16s %5s | %-21s | %-15s | %-15s | %-15s | %-15s | %s\n", "shape", "batch",
           "best variant (x f32)", "auto x f32", "auto, no overlap", "auto x bf16", "cuBLAS x bf16",
           "variant sweep (x f32, overlap)");
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
            jobs[i] = (struct mv_job){1,
                                      {(char *)buf + bytes * (size_t)(i % copies)},
                                      {shapes[s].rows},
                                      shapes[s].cols};
        double gb = (double)bytes * n / 1e9;
        for (int batch = 1; batch <= 8; batch *= 2) {
            char sweep[256] = "";
            int best = 1;
            float best_ms = 1e30f;
            for (int v = 1; v <= nv; v++) {
                float ms = bench_jobs(jobs, n, batch, v, true, DTYPE_F32, x_f32, y, 9);
                size_t l = strlen(sweep);
                snprintf(sweep + l, sizeof sweep - l, "%s%s %.0f", l ? ", " : "",
                         cuda_matvec_variant_name(v), gb / (ms * 1e-3));
                if (ms < best_ms)
                    best_ms = ms, best = v;
            }
            float auto32 = bench_jobs(jobs, n, batch, 0, true, DTYPE_F32, x_f32, y, 9);
            float serial = bench_jobs(jobs, n, batch, 0, false, DTYPE_F32, x_f32, y, 9);
            float auto16 = bench_jobs(jobs, n, batch, 0, true, DTYPE_BF16, x_bf16, y, 9);
            float blas_ms = bench_jobs(jobs, n, batch, RUN_CUBLAS, false, DTYPE_BF16, x_bf16, y, 9);
#define GBS(ms) (gb / ((ms)*1e-3)), (100.0 * gb / ((ms)*1e-3) / copy_gbs)
            printf("%-16s %5d | %-5s %5.0f (%5.1f%%) | %5.0f (%5.1f%%) | %5.0f (%5.1f%%) | "
                   "%5.0f (%5.1f%%) | %5.0f (%5.1f%%) | %s\n",
                   shapes[s].name, batch, cuda_matvec_variant_name(best), GBS(best_ms), GBS(auto32),
                   GBS(serial), GBS(auto16), GBS(blas_ms), sweep);
        }
        CK(cudaFree(buf));
    }
}

/* Every Linear of the 27B qwen3_5 model, in execution order, carved out of one allocation;
 * grouped: the products that share an input form one job. */
static int model_jobs(struct mv_job *jobs, int grouped, size_t *total)
{
    const int layers = 64, H = 5120, I = 17408, V = 248320;
    const int64_t gdn_in[] = {10240, 6144, 48, 48}, attn_in[] = {12288, 1024, 1024};
    const int64_t mlp_in[] = {I, I};
    int n = 0;
    *total = 0;
#define ADD(cnt, rows_, cols_)                                                                     \
    do {                                                                                           \
        for (int a_ = 0; a_ < (cnt);) {                                                            \
            struct mv_job *j_ = &jobs[n++];                                                        \
            j_->n = grouped ? (cnt) : 1;                                                           \
            j_->cols = (cols_);                                                                    \
            for (int b_ = 0; b_ < j_->n; b_++, a_++) {                                             \
                j_->rows[b_] = (rows_)[a_];                                                        \
                j_->w[b_] = (void *)*total;                                                        \
                *total += ((size_t)((rows_)[a_] * (cols_)) * 2 + 255) & ~(size_t)255;              \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    const int64_t o_rows[] = {H}, down_rows[] = {H}, head_rows[] = {V};
    for (int l = 0; l < layers; l++) {
        if ((l + 1) % 4 == 0) { /* full_attention_interval 4 */
            ADD(3, attn_in, H);
            ADD(1, o_rows, 6144);
        } else {
            ADD(4, gdn_in, H);
            ADD(1, o_rows, 6144);
        }
        ADD(2, mlp_in, H);
        ADD(1, down_rows, I);
    }
    ADD(1, head_rows, H);
#undef ADD
    return n;
}

static void bench_model(double copy_gbs, void *x_f32, void *x_bf16, float *y)
{
    static struct mv_job single[1024], grouped[1024];
    size_t total = 0, total2 = 0;
    int n1 = model_jobs(single, 0, &total), n2 = model_jobs(grouped, 1, &total2);
    size_t free_b, total_b;
    CK(cudaMemGetInfo(&free_b, &total_b));
    printf("\n== 27B qwen3_5 Linear set: %d products (%d launches grouped), %.2f GB of bf16 "
           "weights (%.1f GB free)\n",
           n1, n2, total / 1e9, free_b / 1e9);
    if (total + ((size_t)1 << 30) > free_b) {
        printf("not enough GPU memory: skipped\n");
        return;
    }
    char *slab;
    CK(cudaMalloc((void **)&slab, total));
    KC(cuda_random_fill(DTYPE_BF16, slab, (int64_t)(total / 2), 99, 0.02f, stream));
    for (int i = 0; i < n1; i++)
        single[i].w[0] = slab + (size_t)single[i].w[0];
    for (int i = 0; i < n2; i++)
        for (int k = 0; k < grouped[i].n; k++)
            grouped[i].w[k] = slab + (size_t)grouped[i].w[k];
    printf("%-40s %5s %10s %9s %8s %10s\n", "kernel", "batch", "ms/step", "GB/s", "of copy",
           "steps/s");
#define MODEL_ROW(name_, batch_, ms_)                                                              \
    printf("%-40s %5d %10.2f %9.0f %7.1f%% %10.1f\n", name_, batch_, ms_,                          \
           total / 1e9 / ((ms_)*1e-3), 100.0 * total / 1e9 / ((ms_)*1e-3) / copy_gbs, 1e3 / (ms_))
    int nv = cuda_matvec_variant_count();
    for (int batch = 1; batch <= 8; batch *= 2) {
        int best = 1;
        float best_ms = 1e30f;
        char name[64];
        for (int v = 1; v <= nv; v++) {
            float ms = bench_jobs(grouped, n2, batch, v, true, DTYPE_F32, x_f32, y, 9);
            snprintf(name, sizeof name, "ours %s, grouped, overlap", cuda_matvec_variant_name(v));
            MODEL_ROW(name, batch, ms);
            if (ms < best_ms)
                best_ms = ms, best = v;
        }
        const char *bn = cuda_matvec_variant_name(best);
        float ms = bench_jobs(grouped, n2, batch, best, true, DTYPE_F32, x_f32, y, 9);
        snprintf(name, sizeof name, "ours %s, grouped, overlap (again)", bn);
        MODEL_ROW(name, batch, ms);
        ms = bench_jobs(grouped, n2, batch, best, false, DTYPE_F32, x_f32, y, 9);
        snprintf(name, sizeof name, "ours %s, grouped, serial", bn);
        MODEL_ROW(name, batch, ms);
        ms = bench_jobs(single, n1, batch, best, true, DTYPE_F32, x_f32, y, 9);
        snprintf(name, sizeof name, "ours %s, 1 per matrix, overlap", bn);
        MODEL_ROW(name, batch, ms);
        ms = bench_jobs(grouped, n2, batch, best, true, DTYPE_BF16, x_bf16, y, 9);
        snprintf(name, sizeof name, "ours %s, grouped, overlap, x bf16", bn);
        MODEL_ROW(name, batch, ms);
        ms = bench_jobs(grouped, n2, batch, 0, true, DTYPE_F32, x_f32, y, 9);
        MODEL_ROW("ours auto, grouped, overlap", batch, ms);
        ms = bench_jobs(single, n1, batch, RUN_CUBLAS, false, DTYPE_BF16, x_bf16, y, 9);
        MODEL_ROW("cuBLAS, x bf16", batch, ms);
        printf("-- batch %d: best %s at %.2f ms\n", batch, bn, best_ms);
    }
#undef MODEL_ROW
    CK(cudaFree(slab));
}

/* GB/s of cuda_matvec() with weights of each GGUF type (bytes as stored) on one shape. */
static void bench_quant(double copy_gbs, void *x_f32, float *y)
{
    const enum dtype types[] = {DTYPE_BF16, DTYPE_F16,  DTYPE_Q8_0, DTYPE_Q4_0,
                                DTYPE_Q4_1, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
    const int64_t rows = 17408, cols = 5120;
    printf("\n== dequantising products, %lld x %lld, x f32: weight GB/s (%% of copy)\n",
           (long long)rows, (long long)cols);
    printf("%-6s %10s | %-16s | %-16s | %-16s\n", "type", "MB", "batch 1", "batch 4", "batch 8");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        size_t be = dtype_block_elems(types[t]);
        size_t bytes = (size_t)rows * ((size_t)cols / be) * dtype_block_bytes(types[t]);
        size_t stride = (bytes + 255) & ~(size_t)255;
        int copies = (int)((((size_t)512 << 20) + bytes - 1) / bytes);
        if (copies > 16)
            copies = 16;
        char *buf;
        CK(cudaMalloc((void **)&buf, stride * (size_t)copies));
        KC(cuda_random_fill(DTYPE_BF16, buf, (int64_t)(stride * (size_t)copies / 2), 11 + t, 0.05f,
                            stream));
        char cells[3][32];
        for (int bi = 0, batch = 1; bi < 3; bi++, batch = bi == 1 ? 4 : 8) {
            struct cuda_matvec m = {.w_type = types[t],
                                    .rows = rows,
                                    .cols = cols,
                                    .x_type = DTYPE_F32,
                                    .x = x_f32,
                                    .x_stride = cols,
                                    .y_type = DTYPE_F32,
                                    .y = y,
                                    .y_stride = rows,
                                    .batch = batch};
            m.w = buf;
            KC(cuda_matvec(&m, stream)); /* warm-up outside the capture */
            CK(cudaStreamSynchronize(stream));
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            int n = 2 * copies;
            CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < n; i++) {
                m.w = buf + stride * (size_t)(i % copies);
                KC(cuda_matvec(&m, stream));
            }
            CK(cudaStreamEndCapture(stream, &graph));
            CK(cudaGraphInstantiate(&exec, graph, 0));
            float ms = bench_graph(exec, 9);
            CK(cudaGraphExecDestroy(exec));
            CK(cudaGraphDestroy(graph));
            double gbs = (double)bytes * n / 1e9 / (ms * 1e-3);
            snprintf(cells[bi], sizeof cells[bi], "%5.0f (%5.1f%%)", gbs, 100.0 * gbs / copy_gbs);
        }
        printf("%-6s %10.1f | %-16s | %-16s | %-16s\n", dtype_name(types[t]), bytes / 1e6, cells[0],
               cells[1], cells[2]);
        CK(cudaFree(buf));
    }
}

int main(int argc, char **argv)
{
    int model = !(argc > 1 && strcmp(argv[1], "--no-model") == 0);
    int quant = argc > 1 && strcmp(argv[1], "--quant") == 0;
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

    double copy, copy_graph;
    bench_copy(&copy, &copy_graph);
    printf("cudaMemcpy device-to-device, 1 GiB: %.0f GB/s one by one, %.0f GB/s as a graph "
           "(read + write); %% of copy below is against %.0f\n",
           copy, copy_graph, copy);

    /* activations: up to 8 tokens of the widest input; outputs: 8 x the widest output */
    void *x_f32, *x_bf16;
    float *y;
    CK(cudaMalloc(&x_f32, (size_t)8 * 17408 * 4));
    CK(cudaMalloc(&x_bf16, (size_t)8 * 17408 * 2));
    CK(cudaMalloc((void **)&y, (size_t)8 * 248320 * 4 * 2));
    KC(cuda_random_fill(DTYPE_F32, x_f32, 8 * 17408, 3, 1.0f, stream));
    KC(cuda_random_fill(DTYPE_BF16, x_bf16, 8 * 17408, 4, 1.0f, stream));

    if (quant) {
        bench_quant(copy, x_f32, y);
    } else {
        bench_shapes(copy, x_f32, x_bf16, y);
        if (model)
            bench_model(copy, x_f32, x_bf16, y);
    }
    CK(cudaStreamSynchronize(stream));
    CB(cublasDestroy(blas));
    CK(cudaFree(ws));
    CK(cudaFree(x_f32));
    CK(cudaFree(x_bf16));
    CK(cudaFree(y));
    CK(cudaStreamDestroy(stream));
    return 0;
}
