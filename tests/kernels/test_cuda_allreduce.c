/*
 * tests/kernels/test_cuda_allreduce.c — the one-shot all-reduce over peer memory
 * (kernels/cuda_allreduce) on GPUs 0 and 1 against its CPU twin, the sum in rank order.
 *
 * One host thread queues both ranks' calls (the launches are asynchronous, so the two kernels
 * of a call run at once and meet on the GPUs). Cases: sizes from 1 float to the group's
 * capacity, odd ones and a misaligned x (the scalar path); results must equal the twin's exactly
 * (same fp32 adds in the same order) and be bit-identical on both ranks. Graphs: each rank
 * captures a graph of three calls of different sizes on chained buffers and both replay it 64
 * times back to back with no host wait; each call doubles the (rank-equal) values, so the
 * result must be exactly 2^63 times the first call's sum: a call that read a stale staging
 * buffer or a stale flag anywhere in the 192 calls breaks it. Eager calls after the replays
 * check that graphs and eager calls share the sequence values. Bad arguments are refused; an
 * abort releases a rank whose peer never comes (bounded by an alarm, which fails the program
 * rather than hanging). Last, a timing of 128 calls of 5120 floats (a 27B decode step's
 * all-reduces at batch 1) in one graph per rank, printed, not checked.
 * Exits 77 with fewer than two GPUs or without peer access between them.
 */
#include "cuda_allreduce.h"
#include "cuda_device.h"
#include "ktest.h"
#include "xalloc.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RANKS    2
#define MAX_N    (1 << 18) /* 1 MiB of floats: the model's threshold */
#define REPLAYS  64
#define IN_GRAPH 3

static void check_cuda(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "FAIL %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: an all-reduce hung (alarm)\n";
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(1);
    _exit(1);
}

/* The CPU twin: out = sum over ranks of parts[r], added in rank order. */
static void twin_sum(float *const parts[RANKS], int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        float acc = parts[0][i];
        for (int r = 1; r < RANKS; r++)
            acc += parts[r][i];
        out[i] = acc;
    }
}

struct rank {
    int device;
    cudaStream_t stream;
    float *x; /* device, MAX_N + 1 floats (room for a misaligned start) */
};

static struct rank ranks[RANKS];

static void *dev_alloc(int r, size_t bytes)
{
    void *p = NULL;
    check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    return p;
}

static void upload(int r, void *dst, const void *src, size_t bytes)
{
    check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
    check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload");
}

static void download(int r, void *dst, const void *src, size_t bytes)
{
    check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
    check_cuda(cudaStreamSynchronize(ranks[r].stream), "cudaStreamSynchronize");
    check_cuda(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download");
}

/* Both ranks' calls on x + off of n floats; returns the first failing rc. */
static int sum_all(struct cuda_allreduce *ar, float *const xs[RANKS], int64_t n)
{
    int rc = 0;
    for (int r = 0; r < RANKS; r++) {
        check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
        int e = cuda_allreduce_sum(ar, r, xs[r], n, ranks[r].stream);
        rc = rc ? rc : e;
    }
    return rc;
}

/* Fresh inputs, one eager call, exact twin and bitwise rank equality. */
static void case_eager(struct cuda_allreduce *ar, int64_t n, int64_t off)
{
    float *in[RANKS], *got[RANKS], *xs[RANKS];
    float *ref = xmalloc(sizeof(float) * (size_t)n);
    for (int r = 0; r < RANKS; r++) {
        in[r] = ktest_random((size_t)n, -2.0f, 2.0f);
        got[r] = xmalloc(sizeof(float) * (size_t)n);
        xs[r] = ranks[r].x + off;
        upload(r, xs[r], in[r], sizeof(float) * (size_t)n);
    }
    twin_sum(in, n, ref);
    int rc = sum_all(ar, xs, n);
    for (int r = 0; r < RANKS; r++)
        download(r, got[r], xs[r], sizeof(float) * (size_t)n);
    char shape[96];
    snprintf(shape, sizeof(shape), "n %lld%s", (long long)n, off ? " misaligned" : "");
    ktest_check("sum = twin (rank 0)", shape, rc, got[0], ref, (size_t)n, 0.0);
    float same = memcmp(got[0], got[1], sizeof(float) * (size_t)n) == 0 ? 1.0f : 0.0f, one = 1.0f;
    ktest_check("rank 1 bits = rank 0", shape, rc, &same, &one, 1, 0.0);
    for (int r = 0; r < RANKS; r++) {
        free(in[r]);
        free(got[r]);
    }
    free(ref);
}

/* Three chained buffers per rank in one graph, replayed REPLAYS times without host waits. */
static void case_graph(struct cuda_allreduce *ar)
{
    static const int64_t ns[IN_GRAPH] = {5123, 37, MAX_N};
    float *in[IN_GRAPH][RANKS], *buf[IN_GRAPH][RANKS], *ref[IN_GRAPH];
    for (int k = 0; k < IN_GRAPH; k++) {
        ref[k] = xmalloc(sizeof(float) * (size_t)ns[k]);
        for (int r = 0; r < RANKS; r++) {
            in[k][r] = ktest_random((size_t)ns[k], -1.0f, 1.0f);
            buf[k][r] = dev_alloc(r, sizeof(float) * (size_t)ns[k]);
            upload(r, buf[k][r], in[k][r], sizeof(float) * (size_t)ns[k]);
        }
        twin_sum(in[k], ns[k], ref[k]);
        for (int64_t i = 0; i < ns[k]; i++) /* each later call doubles the values exactly */
            ref[k][i] = ldexpf(ref[k][i], REPLAYS - 1);
    }
    cudaGraphExec_t exec[RANKS] = {NULL};
    int rc = 0;
    for (int r = 0; r < RANKS; r++) {
        check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
        cudaGraph_t graph = NULL;
        check_cuda(cudaStreamBeginCapture(ranks[r].stream, cudaStreamCaptureModeThreadLocal),
                   "cudaStreamBeginCapture");
        for (int k = 0; k < IN_GRAPH; k++) {
            int e = cuda_allreduce_sum(ar, r, buf[k][r], ns[k], ranks[r].stream);
            rc = rc ? rc : e;
        }
        check_cuda(cudaStreamEndCapture(ranks[r].stream, &graph), "cudaStreamEndCapture");
        check_cuda(cudaGraphInstantiate(&exec[r], graph, 0), "cudaGraphInstantiate");
        cudaGraphDestroy(graph);
    }
    for (int i = 0; i < REPLAYS && rc == 0; i++)
        for (int r = 0; r < RANKS; r++) {
            check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
            check_cuda(cudaGraphLaunch(exec[r], ranks[r].stream), "cudaGraphLaunch");
        }
    for (int k = 0; k < IN_GRAPH; k++) {
        float *got[RANKS];
        for (int r = 0; r < RANKS; r++) {
            got[r] = xmalloc(sizeof(float) * (size_t)ns[k]);
            download(r, got[r], buf[k][r], sizeof(float) * (size_t)ns[k]);
        }
        char shape[96];
        snprintf(shape, sizeof(shape), "n %lld, %d replays of %d calls", (long long)ns[k], REPLAYS,
                 IN_GRAPH);
        ktest_check("graph replays = 2^k twin", shape, rc, got[0], ref[k], (size_t)ns[k], 0.0);
        float same = memcmp(got[0], got[1], sizeof(float) * (size_t)ns[k]) == 0 ? 1.0f : 0.0f;
        float one = 1.0f;
        ktest_check("graph rank 1 bits = rank 0", shape, rc, &same, &one, 1, 0.0);
        for (int r = 0; r < RANKS; r++) {
            free(got[r]);
            free(in[k][r]);
            check_cuda(cudaFree(buf[k][r]), "cudaFree");
        }
        free(ref[k]);
    }
    for (int r = 0; r < RANKS; r++)
        cudaGraphExecDestroy(exec[r]);
}

/* 128 calls of 5120 floats per rank in one graph each; prints the time per call. */
static void time_decode_step(struct cuda_allreduce *ar)
{
    const int calls = 128, reps = 20;
    const int64_t n = 5120;
    cudaGraphExec_t exec[RANKS] = {NULL};
    cudaEvent_t ev[2];
    int rc = 0;
    for (int r = 0; r < RANKS; r++) {
        check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
        cudaGraph_t graph = NULL;
        check_cuda(cudaStreamBeginCapture(ranks[r].stream, cudaStreamCaptureModeThreadLocal),
                   "cudaStreamBeginCapture");
        for (int i = 0; i < calls; i++)
            rc = rc ? rc : cuda_allreduce_sum(ar, r, ranks[r].x, n, ranks[r].stream);
        check_cuda(cudaStreamEndCapture(ranks[r].stream, &graph), "cudaStreamEndCapture");
        check_cuda(cudaGraphInstantiate(&exec[r], graph, 0), "cudaGraphInstantiate");
        cudaGraphDestroy(graph);
    }
    check_cuda(cudaSetDevice(ranks[0].device), "cudaSetDevice");
    check_cuda(cudaEventCreate(&ev[0]), "cudaEventCreate");
    check_cuda(cudaEventCreate(&ev[1]), "cudaEventCreate");
    float best = 1e30f, ms = 0.0f;
    for (int i = 0; i < reps + 2 && rc == 0; i++) {
        check_cuda(cudaSetDevice(ranks[0].device), "cudaSetDevice");
        check_cuda(cudaEventRecord(ev[0], ranks[0].stream), "cudaEventRecord");
        for (int r = 0; r < RANKS; r++) {
            check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
            check_cuda(cudaGraphLaunch(exec[r], ranks[r].stream), "cudaGraphLaunch");
        }
        check_cuda(cudaSetDevice(ranks[0].device), "cudaSetDevice");
        check_cuda(cudaEventRecord(ev[1], ranks[0].stream), "cudaEventRecord");
        check_cuda(cudaEventSynchronize(ev[1]), "cudaEventSynchronize");
        check_cuda(cudaEventElapsedTime(&ms, ev[0], ev[1]), "cudaEventElapsedTime");
        if (i >= 2 && ms < best)
            best = ms;
    }
    for (int r = 0; r < RANKS; r++) {
        check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
        check_cuda(cudaStreamSynchronize(ranks[r].stream), "cudaStreamSynchronize");
        cudaGraphExecDestroy(exec[r]);
    }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    if (rc == 0)
        printf("timing: %d calls of %lld floats in a graph: best of %d %.3f ms = %.2f us per "
               "call\n",
               calls, (long long)n, reps, best, 1000.0 * best / calls);
}

/* Rank 0 calls alone; the abort must release it and refuse later calls. */
static void case_abort(void)
{
    struct cuda_allreduce *ar = NULL;
    int devs[RANKS] = {ranks[0].device, ranks[1].device};
    int rc = cuda_allreduce_create(RANKS, devs, 4096, &ar);
    float zero = 0.0f;
    if (rc) {
        ktest_check("abort: create", "4096", rc, &zero, &zero, 1, 0.0);
        return;
    }
    check_cuda(cudaSetDevice(ranks[0].device), "cudaSetDevice");
    rc = cuda_allreduce_sum(ar, 0, ranks[0].x, 1000, ranks[0].stream);
    usleep(200 * 1000); /* the lone kernel is spinning by now (or soon: the abort holds) */
    cudaError_t q = cudaStreamQuery(ranks[0].stream);
    float waiting = q == cudaErrorNotReady ? 1.0f : 0.0f, one = 1.0f;
    cuda_allreduce_abort(ar);
    alarm(30);
    check_cuda(cudaStreamSynchronize(ranks[0].stream), "abort: cudaStreamSynchronize");
    alarm(0);
    /* checked only now: ktest_check waits for the device */
    ktest_check("abort: lone rank waits", "n 1000", rc, &waiting, &one, 1, 0.0);
    float aborted = cuda_allreduce_aborted(ar) ? 1.0f : 0.0f;
    ktest_check("abort: released", "n 1000", 0, &aborted, &one, 1, 0.0);
    ktest_check_rejected("abort: later call refused", "n 1000",
                         cuda_allreduce_sum(ar, 1, ranks[1].x, 1000, ranks[1].stream));
    cuda_allreduce_destroy(ar);
}

int main(void)
{
    ktest_init("test_cuda_allreduce");
    int n_dev = 0;
    if (cuda_device_count(&n_dev) != 0 || n_dev < RANKS) {
        printf("test_cuda_allreduce: %d CUDA device(s), the all-reduce needs %d: skipped\n", n_dev,
               RANKS);
        return 77;
    }
    signal(SIGALRM, on_alarm);
    for (int r = 0; r < RANKS; r++) {
        ranks[r].device = r;
        check_cuda(cudaSetDevice(r), "cudaSetDevice");
        check_cuda(cudaStreamCreateWithFlags(&ranks[r].stream, cudaStreamNonBlocking),
                   "cudaStreamCreate");
        ranks[r].x = dev_alloc(r, sizeof(float) * (MAX_N + 1));
    }
    int devs[RANKS] = {0, 1};
    struct cuda_allreduce *ar = NULL;
    if (cuda_allreduce_create(RANKS, devs, MAX_N, &ar)) {
        printf("test_cuda_allreduce: no group over GPUs 0 and 1 (%s): skipped\n",
               cuda_last_error());
        return 77;
    }
    alarm(60); /* every case below must finish: a hang fails the program */
    static const int64_t sizes[] = {1, 3, 4, 5, 37, 1000, 4097, 5120, 5123, 40960, 65537, MAX_N};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        case_eager(ar, sizes[i], 0);
    case_eager(ar, 5121, 1);
    case_eager(ar, 8, 1);
    case_graph(ar);
    case_eager(ar, 5120, 0); /* eager after graph replays: the sequence values agree */
    case_eager(ar, 77, 1);
    ktest_check_rejected("cuda_allreduce_sum", "n > max_elems",
                         cuda_allreduce_sum(ar, 0, ranks[0].x, MAX_N + 4, ranks[0].stream));
    ktest_check_rejected("cuda_allreduce_sum", "rank 2 of 2",
                         cuda_allreduce_sum(ar, 2, ranks[0].x, 16, ranks[0].stream));
    int dup[2] = {0, 0};
    struct cuda_allreduce *bad = NULL;
    ktest_check_rejected("cuda_allreduce_create", "device twice",
                         cuda_allreduce_create(2, dup, 16, &bad));
    time_decode_step(ar);
    alarm(0);
    cuda_allreduce_destroy(ar);
    case_abort();
    for (int r = 0; r < RANKS; r++) {
        check_cuda(cudaSetDevice(ranks[r].device), "cudaSetDevice");
        cudaFree(ranks[r].x);
        cudaStreamDestroy(ranks[r].stream);
    }
    return ktest_finish();
}
