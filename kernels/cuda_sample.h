/*
 * kernels/cuda_sample.h — choosing the next token on the GPU: argmax, and a seeded draw after
 * temperature, top-k and top-p (the CPU sampler, neuron/sample.h, is the reference for the
 * order of the steps; the tests hold a twin of this exact algorithm).
 *
 * Contract: row r of logits (F32 or BF16) starts at r * stride elements and holds n values.
 * NaN and infinite logits are never chosen (-inf is the usual mask); ties rank by the lower id.
 * Both calls write one token id per row to out (device int32); a row with no finite logit gives
 * 0 for argmax and the lowest id for sampling. All pointers are device memory; the work is
 * queued on stream; nothing is allocated. One block serves a row, so batches fill the GPU and
 * batch 1 is a single block (its row is read from L2 after the first pass).
 */
#ifndef CORTEX_KERNELS_CUDA_SAMPLE_H
#define CORTEX_KERNELS_CUDA_SAMPLE_H

#include "dtype.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_SAMPLE_MAX_K 1024 /* candidates a truncated draw ranks */

struct cuda_argmax {
    enum dtype type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *logits;
    int64_t stride, rows, n;
    int32_t *out;
};

/* Queues the argmax of every row; -1 (reason in cuda_last_error()) for bad arguments or a
 * launch error. */
int cuda_argmax(const struct cuda_argmax *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

/* One row's settings, in device memory so that a captured graph replays with new values. The
 * kernel advances rng by one draw per call (splitmix64: rng += 0x9E3779B97F4A7C15, the mixed
 * value's top 24 bits give u in [0, 1)), so a row seeded once yields a fixed sequence.
 *   temperature <= 0, top_k == 1 or top_p <= 0: greedy (the argmax; rng still advances).
 *   top_k > 0: keep the min(top_k, 1024, n) best (truncated = 1 when top_k > 1024 was cut).
 *   top_p < 1: of those, keep the shortest best-first prefix whose weight reaches top_p times
 *     the weight of the kept set (top_k > 0) or of the whole row (top_k == 0); when the 1024
 *     best do not reach it, keep them and set truncated = 1.
 *   top_k == 0 and top_p >= 1: draw over the whole row (exact, no candidate limit).
 * Weights are exp((logit - max) / temperature) in fp32; the draw walks the kept tokens best
 * first (the whole-row draw in id order) and takes the first whose running sum exceeds u times
 * the total. Sums run in a fixed order: the same GPU gives the same tokens for the same seed. */
struct cuda_sample_row {
    float temperature, top_p;
    int32_t top_k;
    int32_t truncated; /* written by the kernel */
    uint64_t rng;
};

struct cuda_sample {
    enum dtype type; /* DTYPE_F32 or DTYPE_BF16 */
    const void *logits;
    int64_t stride, rows, n;
    struct cuda_sample_row *params; /* [rows] */
    int32_t *out;
};

/* Queues one draw per row; -1 (reason in cuda_last_error()) for bad arguments or a launch
 * error. */
int cuda_sample(const struct cuda_sample *a, cudaStream_t stream)
        __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
