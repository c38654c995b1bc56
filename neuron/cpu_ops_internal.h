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

/* Activations for quantised weights are 16-bit integers q in [-16256, 16256] with one float
 * unit per block (x ~ d * q, d = absmax / 16256, rounded to nearest even). Plain 8-bit
 * activations (llama.cpp's choice) cost about 4% relative error in SmolLM2's logits, enough to
 * change its greedy answers; 16 bits bring that near 0.02%. The AVX2 kernels widen the weights to
 * int16 (times their sub-block scale for the K-quants) and use _mm256_madd_epi16; the bounds
 * that keep the int32 sums from overflowing are noted at each kernel. Sums of x that weight
 * offsets and minimums multiply are kept exactly, in float. */
#define CPU_ACT_UNIT 16256.0f /* 127 * 128 */

/* Activation block for Q8_0 / Q4_0 / Q4_1 weights. */
struct cpu_act32 {
    float d;   /* x ~ d * q */
    float sum; /* sum of the 32 x */
    int16_t q[32];
};

/* Activation block for the K-quants. */
struct cpu_act256 {
    float d;
    float bsum[16]; /* sums of x[16i .. 16i + 15] */
    int16_t q[256];
};

enum cpu_act {
    CPU_ACT_F32, /* F32, F16, BF16 weights */
    CPU_ACT_32,  /* Q8_0, Q4_0, Q4_1: struct cpu_act32 */
    CPU_ACT_256, /* Q4_K, Q5_K, Q6_K: struct cpu_act256 */
};

typedef void (*cpu_dot_fn)(const void *w, const void *x, size_t x_stride, int ntok, int64_t n,
                           float *out, size_t out_stride);

struct cpu_kernels {
    cpu_dot_fn dot[DTYPE_COUNT];
    /* n is a multiple of 32 / 256 */
    void (*quant_act32)(const float *x, struct cpu_act32 *y, int64_t n);
    void (*quant_act256)(const float *x, struct cpu_act256 *y, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    void (*dot_rows)(float *out, const float *q, const float *rows, int64_t stride, int64_t n_rows,
                     int64_t dim, float scale);
    void (*weighted_rows)(float *out, const float *w, const float *rows, int64_t stride,
                          int64_t n_rows, int64_t dim);
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
