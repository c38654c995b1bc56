/*
 * neuron/cpu_ops_internal.h — what cpu_ops.c (dispatch, portable kernels) and cpu_ops_avx2.c
 * (AVX2/FMA/F16C kernels) share: the quantised activation formats and the kernel table.
 *
 * Contract: a dot kernel multiplies one weight row of n elements with ntok (1..CPU_TILE)
 * activation rows, x_stride bytes apart, in the activation format its weight type needs
 * (cpu_act_of()), and writes ntok results out_stride floats apart. Both kernel sets quantise
 * activations identically (same scale, round-to-nearest-even), so they differ only in float
 * summation order.
 */
#ifndef CORTEX_NEURON_CPU_OPS_INTERNAL_H
#define CORTEX_NEURON_CPU_OPS_INTERNAL_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

/* Tokens one dot kernel call handles: the weight row is decoded once for all of them. */
#define CPU_TILE 4

/* Activation block for Q8_0 / Q4_0 / Q4_1 weights: x ~ d * q, s = d * sum(q). */
struct cpu_q8_32 {
    float d;
    float s;
    int8_t q[32];
};

/* Activation block for the K-quants: x ~ d * q, bsums[i] = sum of q[16i .. 16i + 15]. */
struct cpu_q8_256 {
    float d;
    int16_t bsums[16];
    int8_t q[256];
};

enum cpu_act {
    CPU_ACT_F32,    /* F32, F16, BF16 weights */
    CPU_ACT_Q8_32,  /* Q8_0, Q4_0, Q4_1 */
    CPU_ACT_Q8_256, /* Q4_K, Q5_K, Q6_K */
};

typedef void (*cpu_dot_fn)(const void *w, const void *x, size_t x_stride, int ntok, int64_t n,
                           float *out, size_t out_stride);

struct cpu_kernels {
    cpu_dot_fn dot[DTYPE_COUNT];
    /* n is a multiple of 32 / 256 */
    void (*quant_q8_32)(const float *x, struct cpu_q8_32 *y, int64_t n);
    void (*quant_q8_256)(const float *x, struct cpu_q8_256 *y, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
};

#if defined(__x86_64__)
#define CPU_OPS_HAVE_AVX2 1
extern const struct cpu_kernels cpu_kernels_avx2;
#endif

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block. */
static inline void cpu_kquant_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Block layouts as GGUF stores them (little-endian, packed). */
struct cpu_block_q8_0 {
    uint16_t d;
    int8_t qs[32];
};
struct cpu_block_q4_0 {
    uint16_t d;
    uint8_t qs[16];
};
struct cpu_block_q4_1 {
    uint16_t d, m;
    uint8_t qs[16];
};
struct cpu_block_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
};
struct cpu_block_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
};
struct cpu_block_q6_k {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
};

_Static_assert(sizeof(struct cpu_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(struct cpu_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(struct cpu_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(struct cpu_block_q4_k) == 144, "q4_k block");
_Static_assert(sizeof(struct cpu_block_q5_k) == 176, "q5_k block");
_Static_assert(sizeof(struct cpu_block_q6_k) == 210, "q6_k block");

#endif
