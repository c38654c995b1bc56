/*
 * tests/kernels/kbench.h — what the kernel benchmarks (bench_*.c) share: exit-on-error checks
 * for CUDA and kernel calls, the median of a set of timings, and timed replays of a CUDA graph.
 *
 * Contract: benchmarks are programs, not tests, so any error prints where it happened and
 * exits 1. kbench_median() sorts its array in place.
 */
#ifndef CORTEX_TESTS_KERNELS_KBENCH_H
#define CORTEX_TESTS_KERNELS_KBENCH_H

#include "cuda_device.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));     \
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

/* The median of t[0..n) (sorted in place); n >= 1. */
float kbench_median(float *t, int n);
/* Median milliseconds per replay of g on stream: `warmups` untimed replays, then min(reps, 64)
 * replays each timed with events. */
float kbench_graph(cudaGraphExec_t g, cudaStream_t stream, int warmups, int reps);

#endif
