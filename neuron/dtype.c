/*
 * neuron/dtype.c — element types: block geometry, float16/bfloat16 conversion and the scalar
 * reference dequantisation of every quantised block format (bit-for-bit the layouts of ggml).
 *
 * The dequantisers are written for clarity, not speed: they are what the vectorised CPU paths
 * and the CUDA kernels are checked against. The order of the float operations follows ggml's
 * reference code (scale products first, then multiply-add) so results match it exactly.
 */
#include "dtype.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#define QK_K 256 /* elements of one k-quant super-block */

struct dtype_info {
    const char *name;
    size_t block_elems;
    size_t block_bytes;
};

static const struct dtype_info dtype_table[DTYPE_COUNT] = {
        [DTYPE_F32] = {"f32", 1, 4},
        [DTYPE_F16] = {"f16", 1, 2},
        [DTYPE_BF16] = {"bf16", 1, 2},
        [DTYPE_Q8_0] = {"q8_0", 32, 2 + 32},
        [DTYPE_Q4_0] = {"q4_0", 32, 2 + 16},
        [DTYPE_Q4_1] = {"q4_1", 32, 2 + 2 + 16},
        /* d, dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles */
        [DTYPE_Q4_K] = {"q4_k", QK_K, 2 + 2 + 12 + QK_K / 2},
        /* as q4_k plus 32 bytes holding the fifth bit of every element */
        [DTYPE_Q5_K] = {"q5_k", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2},
        /* 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, d */
        [DTYPE_Q6_K] = {"q6_k", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2},
};

const char *dtype_name(enum dtype t)
{
    if ((unsigned)t >= DTYPE_COUNT)
        return NULL;
    return dtype_table[t].name;
}

size_t dtype_block_elems(enum dtype t)
{
    assert((unsigned)t < DTYPE_COUNT);
    return dtype_table[t].block_elems;
}

size_t dtype_block_bytes(enum dtype t)
{
    assert((unsigned)t < DTYPE_COUNT);
    return dtype_table[t].block_bytes;
}

size_t dtype_row_bytes(enum dtype t, size_t n)
{
    assert((unsigned)t < DTYPE_COUNT);
    assert(n % dtype_table[t].block_elems == 0);
    return n / dtype_table[t].block_elems * dtype_table[t].block_bytes;
}

/* ---- scalar conversions ------------------------------------------------------------------ */

static uint32_t dtype_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float dtype_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float dtype_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f) /* inf / NaN: keep the payload */
        return dtype_bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)
        return dtype_bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    /* zero or subnormal: mant * 2^-24 is exact in float */
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
}

uint16_t dtype_f32_to_f16(float f)
{
    uint32_t u = dtype_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff;
    uint32_t mant = u & 0x7fffff;

    if (exp == 0xff) /* inf stays inf; NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    int e = (int)exp - 127 + 15; /* biased half exponent */
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00); /* overflow */
    if (e <= 0) {
        /* subnormal half (or zero): shift the full significand, rounding to nearest even */
        if (e < -10)
            return sign;
        uint32_t m = mant | 0x800000;
        int shift = 14 - e; /* 13 for the mantissa width, 1 - e for the exponent */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    /* a carry out of the mantissa correctly bumps the exponent, up to infinity */
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

float dtype_bf16_to_f32(uint16_t b)
{
    return dtype_bits_f32((uint32_t)b << 16);
}

uint16_t dtype_f32_to_bf16(float f)
{
    uint32_t u = dtype_f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) /* NaN: truncate but keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* ---- block dequantisation --------------------------------------------------------------- */

static float dtype_load_f16(const uint8_t *p)
{
    return dtype_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static void dtype_dequant_q8_0(const uint8_t *b, float *y)
{
    float d = dtype_load_f16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int i = 0; i < 32; i++)
        y[i] = (float)qs[i] * d;
}

/* Q4_0 / Q4_1: byte j holds element j in its low nibble and element j + 16 in its high one. */
static void dtype_dequant_q4_0(const uint8_t *b, float *y)
{
    float d = dtype_load_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dtype_dequant_q4_1(const uint8_t *b, float *y)
{
    float d = dtype_load_f16(b);
    float m = dtype_load_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0f) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* The 12 scale bytes of Q4_K/Q5_K pack eight 6-bit scales and eight 6-bit mins: sub-blocks 0-3
 * keep theirs in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 keep
 * their low 4 bits in bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-7. */
static void dtype_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void dtype_dequant_q4_k(const uint8_t *b, float *y)
{
    float d = dtype_load_f16(b);
    float dmin = dtype_load_f16(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *q = b + 16;
    int is = 0;
    /* 64 elements per step: two sub-blocks sharing 32 bytes, low nibbles then high */
    for (int j = 0; j < QK_K; j += 64) {
        uint8_t sc, m;
        dtype_k4_scale_min(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        dtype_k4_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)(q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
        is += 2;
    }
}

static void dtype_dequant_q5_k(const uint8_t *b, float *y)
{
    float d = dtype_load_f16(b);
    float dmin = dtype_load_f16(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *qh = b + 16;
    const uint8_t *ql = b + 48;
    int is = 0;
    uint8_t u1 = 1, u2 = 2; /* qh bit of sub-block is, is + 1 */
    for (int j = 0; j < QK_K; j += 64) {
        uint8_t sc, m;
        dtype_k4_scale_min(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        dtype_k4_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        ql += 32;
        is += 2;
        u1 = (uint8_t)(u1 << 2);
        u2 = (uint8_t)(u2 << 2);
    }
}

static void dtype_dequant_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b;
    const uint8_t *qh = b + QK_K / 2;
    const int8_t *sc = (const int8_t *)(b + QK_K / 2 + QK_K / 4);
    float d = dtype_load_f16(b + QK_K / 2 + QK_K / 4 + QK_K / 16);
    /* each half of 128 elements: 64 bytes of low nibbles, 32 bytes of 2-bit high parts */
    for (int n = 0; n < QK_K; n += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
            int q2 = (int)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

void dtype_dequant_row(enum dtype t, const void *src, float *dst, size_t n)
{
    assert((unsigned)t < DTYPE_COUNT);
    const uint8_t *s = src;
    size_t bs = dtype_table[t].block_elems, bb = dtype_table[t].block_bytes;
    assert(n % bs == 0);

    switch (t) {
    case DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = dtype_load_f16(s + 2 * i);
        return;
    case DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = dtype_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        return;
    default:
        break;
    }
    void (*block)(const uint8_t *, float *) = NULL;
    switch (t) {
    case DTYPE_Q8_0:
        block = dtype_dequant_q8_0;
        break;
    case DTYPE_Q4_0:
        block = dtype_dequant_q4_0;
        break;
    case DTYPE_Q4_1:
        block = dtype_dequant_q4_1;
        break;
    case DTYPE_Q4_K:
        block = dtype_dequant_q4_k;
        break;
    case DTYPE_Q5_K:
        block = dtype_dequant_q5_k;
        break;
    case DTYPE_Q6_K:
        block = dtype_dequant_q6_k;
        break;
    default:
        assert(!"unreachable");
        return;
    }
    for (size_t i = 0; i < n / bs; i++)
        block(s + i * bb, dst + i * bs);
}
