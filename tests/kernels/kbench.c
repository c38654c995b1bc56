/*
 * tests/kernels/kbench.c — timing helpers shared by the kernel benchmarks (see kbench.h).
 */
#include "kbench.h"

static int kbench_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float kbench_median(float *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], kbench_cmp_float);
    return t[n / 2];
}

float kbench_graph(cudaGraphExec_t g, cudaStream_t stream, int warmups, int reps)
{
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < warmups; i++)
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
    return kbench_median(t, reps);
}
