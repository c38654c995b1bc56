/*
 * neuron/cpu_ops_avx2.c — the AVX2/FMA/F16C kernels of the CPU backend (see cpu_ops_internal.h).
 *
 * Every function carries the target attribute, so this file builds with the default flags and
 * its code only runs after cpu_ops.c has checked the CPU. The quantised dots decode one weight
 * block into registers (widened to int16, times the sub-block scale for the K-quants) and
 * reuse it for every token of the tile; the activations are 16-bit, so the inner products are
 * _mm256_madd_epi16.
 */
#include "cpu_ops_internal.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX2        __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

AVX2_INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AVX2_INLINE float f16(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* ---- activation quantisation (same arithmetic as the portable version) ------------------- */

AVX2_INLINE float absmax8x(const float *x, int n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE float sum8x(const float *x, int n)
{
    __m256 s = _mm256_loadu_ps(x);
    for (int i = 8; i < n; i += 8)
        s = _mm256_add_ps(s, _mm256_loadu_ps(x + i));
    return hsum_ps(s);
}

/* Rounds 16 floats times id to int16 at q. */
AVX2_INLINE void quant16_i16(const float *x, __m256 vid, int16_t *q)
{
    __m256i a = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), vid),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i b = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    /* packs interleaves the 128-bit lanes; the 64-bit permute restores element order */
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256((__m256i *)q, p);
}

AVX2 static void avx2_quant_act32(const float *x, struct cpu_act32 *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, x += 32) {
        float d = absmax8x(x, 32) / CPU_ACT_UNIT;
        __m256 vid = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        quant16_i16(x, vid, y[b].q);
        quant16_i16(x + 16, vid, y[b].q + 16);
        y[b].d = d;
        y[b].sum = sum8x(x, 32);
    }
}

AVX2 static void avx2_quant_act256(const float *x, struct cpu_act256 *y, int64_t n)
{
    for (int64_t b = 0; b < n / 256; b++, x += 256) {
        float d = absmax8x(x, 256) / CPU_ACT_UNIT;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        for (int j = 0; j < 16; j++)
            quant16_i16(x + 16 * j, vid, y[b].q + 16 * j);
        for (int g = 0; g < 16; g++)
            y[b].bsum[g] = sum8x(x + 16 * g, 16);
        y[b].d = d;
    }
}

/* ---- float weights ----------------------------------------------------------------------- */

#define XROW(x, xs, t) ((const float *)((const char *)(x) + (size_t)(t) * (xs)))

/* Converts 8 weights of type T (0 f32, 1 f16, 2 bf16) at w + i to floats. */
AVX2_INLINE __m256 load8(const void *w, int64_t i, int kind)
{
    if (kind == 0)
        return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (kind == 1)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2_INLINE float scalar_w(const void *w, int64_t i, int kind)
{
    if (kind == 0)
        return ((const float *)w)[i];
    uint16_t h = ((const uint16_t *)w)[i];
    if (kind == 1)
        return f16(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

AVX2_INLINE void dot_float_body(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                                float *out, size_t os, int kind)
{
    __m256 acc[CPU_TILE][2];
    for (int t = 0; t < ntok; t++)
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = load8(w, i, kind), w1 = load8(w, i + 8, kind);
        for (int t = 0; t < ntok; t++) {
            const float *xr = XROW(x, xs, t);
            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + i), acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + i + 8), acc[t][1]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 w0 = load8(w, i, kind);
        for (int t = 0; t < ntok; t++)
            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(XROW(x, xs, t) + i), acc[t][0]);
    }
    for (int t = 0; t < ntok; t++) {
        float s = hsum_ps(_mm256_add_ps(acc[t][0], acc[t][1]));
        for (int64_t j = i; j < n; j++)
            s += scalar_w(w, j, kind) * XROW(x, xs, t)[j];
        out[t * os] = s;
    }
}

/* Each kernel is instantiated for one token (decode) and for the general tile, so the
 * compiler can keep the single-token case entirely in registers. */
#define AVX2_DOT_WRAPPER(name, body, ...)                                                          \
    AVX2 static void name(const void *w, const void *x, size_t xs, int ntok, int64_t n,            \
                          float *out, size_t os)                                                   \
    {                                                                                              \
        if (ntok == 1)                                                                             \
            body(w, x, xs, 1, n, out, os, ##__VA_ARGS__);                                          \
        else if (ntok == CPU_TILE)                                                                 \
            body(w, x, xs, CPU_TILE, n, out, os, ##__VA_ARGS__);                                   \
        else                                                                                       \
            body(w, x, xs, ntok, n, out, os, ##__VA_ARGS__);                                       \
    }

AVX2_DOT_WRAPPER(avx2_dot_f32, dot_float_body, 0)
AVX2_DOT_WRAPPER(avx2_dot_f16, dot_float_body, 1)
AVX2_DOT_WRAPPER(avx2_dot_bf16, dot_float_body, 2)

/* ---- 32-element blocks ------------------------------------------------------------------- */

#define ACT32(x, xs, t) ((const struct cpu_act32 *)((const char *)(x) + (size_t)(t) * (xs)))

/* sum over 32 of w * q for 32 int16 weights (w0: elements 0..15, w1: 16..31), 8 int32 lanes */
AVX2_INLINE __m256i dot_w16(__m256i w0, __m256i w1, const struct cpu_act32 *xb)
{
    return _mm256_add_epi32(
            _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xb->q)),
            _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xb->q + 16))));
}

AVX2_INLINE void dot_q8_0_body(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                               float *out, size_t os)
{
    const struct cpu_block_q8_0 *wb = w;
    __m256 acc[CPU_TILE];
    for (int t = 0; t < ntok; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[b].qs));
        __m256i q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb[b].qs + 16)));
        __m256 d = _mm256_set1_ps(f16(wb[b].d));
        for (int t = 0; t < ntok; t++) {
            const struct cpu_act32 *xb = ACT32(x, xs, t) + b;
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_broadcast_ss(&xb->d)),
                                     _mm256_cvtepi32_ps(dot_w16(q0, q1, xb)), acc[t]);
        }
    }
    for (int t = 0; t < ntok; t++)
        out[t * os] = hsum_ps(acc[t]);
}
AVX2_DOT_WRAPPER(avx2_dot_q8_0, dot_q8_0_body)

/* The sum field of up to four tokens' activation blocks b, as one vector (0 past ntok). */
AVX2_INLINE __m128 act32_sums(const void *x, size_t xs, int ntok, int64_t b)
{
    float s[4];
    for (int t = 0; t < 4; t++)
        s[t] = t < ntok ? ACT32(x, xs, t)[b].sum : 0.0f;
    return _mm_setr_ps(s[0], s[1], s[2], s[3]);
}

/* Q4_0 (offset -8) and Q4_1 (min m): dot = d * x.d * sum(q * Q) + c * x.sum, c = -8d or m.
 * The c terms of all tokens of the tile share one vector accumulator. */
AVX2_INLINE void dot_q4_body(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                             float *out, size_t os, int has_min)
{
    _Static_assert(CPU_TILE <= 4, "act32_sums handles four tokens");
    __m256 acc[CPU_TILE];
    for (int t = 0; t < ntok; t++)
        acc[t] = _mm256_setzero_ps();
    __m128 corr = _mm_setzero_ps();
    const __m128i m4 = _mm_set1_epi8(0x0F);
    size_t bsize = has_min ? sizeof(struct cpu_block_q4_1) : sizeof(struct cpu_block_q4_0);
    for (int64_t b = 0; b < n / 32; b++) {
        const char *blk = (const char *)w + (size_t)b * bsize;
        float dw, c;
        const uint8_t *qs;
        if (has_min) {
            const struct cpu_block_q4_1 *wb = (const void *)blk;
            dw = f16(wb->d);
            c = f16(wb->m);
            qs = wb->qs;
        } else {
            const struct cpu_block_q4_0 *wb = (const void *)blk;
            dw = f16(wb->d);
            c = -8.0f * dw;
            qs = wb->qs;
        }
        /* low nibbles are elements 0..15, high nibbles 16..31 */
        __m128i v = _mm_loadu_si128((const __m128i *)qs);
        __m256i q0 = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
        __m256i q1 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
        __m256 d = _mm256_set1_ps(dw);
        for (int t = 0; t < ntok; t++) {
            const struct cpu_act32 *xb = ACT32(x, xs, t) + b;
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_broadcast_ss(&xb->d)),
                                     _mm256_cvtepi32_ps(dot_w16(q0, q1, xb)), acc[t]);
        }
        corr = _mm_fmadd_ps(_mm_set1_ps(c), act32_sums(x, xs, ntok, b), corr);
    }
    float cs[4];
    _mm_storeu_ps(cs, corr);
    for (int t = 0; t < ntok; t++)
        out[t * os] = hsum_ps(acc[t]) + cs[t];
}
AVX2_DOT_WRAPPER(avx2_dot_q4_0, dot_q4_body, 0)
AVX2_DOT_WRAPPER(avx2_dot_q4_1, dot_q4_body, 1)

/* ---- K-quants (256-element super-blocks) ------------------------------------------------- */

#define ACT256(x, xs, t) ((const struct cpu_act256 *)((const char *)(x) + (size_t)(t) * (xs)))

/* sum of w * q over 16 int16 weights and activations, added to 8 int32 lanes */
AVX2_INLINE __m256i madd16(__m256i acc, __m256i w, const int16_t *q)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_loadu_si256((const __m256i *)q)));
}

/* Q4_K (has_high 0) and Q5_K (has_high 1): weights widened to int16 and multiplied by their
 * 6-bit sub-block scale (at most 31 * 63 = 1953), so one madd lane adds at most
 * 2 * 1953 * 16256 per 16 elements and 16 of them per super-block stay below 2^31. */
AVX2_INLINE void dot_q45k_body(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                               float *out, size_t os, int has_high)
{
    __m256 acc[CPU_TILE];
    float mins[CPU_TILE];
    for (int t = 0; t < ntok; t++) {
        acc[t] = _mm256_setzero_ps();
        mins[t] = 0.0f;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    size_t bsize = has_high ? sizeof(struct cpu_block_q5_k) : sizeof(struct cpu_block_q4_k);
    for (int64_t b = 0; b < n / 256; b++) {
        const char *blk = (const char *)w + (size_t)b * bsize;
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        if (has_high) {
            const struct cpu_block_q5_k *wb = (const void *)blk;
            d = f16(wb->d);
            dmin = f16(wb->dmin);
            scales = wb->scales;
            qs = wb->qs;
            qh = wb->qh;
        } else {
            const struct cpu_block_q4_k *wb = (const void *)blk;
            d = f16(wb->d);
            dmin = f16(wb->dmin);
            scales = wb->scales;
            qs = wb->qs;
        }
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++)
            cpu_kquant_scale_min(j, scales, &sc[j], &m[j]);
        __m256i hbits = has_high ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        __m256i si[CPU_TILE];
        for (int t = 0; t < ntok; t++)
            si[t] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            /* 32 bytes: low nibbles are sub-block 2j, high nibbles sub-block 2j + 1 */
            __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (has_high) {
                __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one);
                __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
            }
            __m256i s0 = _mm256_set1_epi16(sc[2 * j]), s1 = _mm256_set1_epi16(sc[2 * j + 1]);
            __m256i wv[4] = {
                    _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(lo)), s0),
                    _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(lo, 1)), s0),
                    _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(hi)), s1),
                    _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(hi, 1)), s1),
            };
            for (int t = 0; t < ntok; t++) {
                const int16_t *q = ACT256(x, xs, t)[b].q + 64 * j;
                for (int k = 0; k < 4; k++)
                    si[t] = madd16(si[t], wv[k], q + 16 * k);
            }
        }
        for (int t = 0; t < ntok; t++) {
            const struct cpu_act256 *xb = ACT256(x, xs, t) + b;
            float summ = 0.0f;
            for (int j = 0; j < 8; j++)
                summ += (float)m[j] * (xb->bsum[2 * j] + xb->bsum[2 * j + 1]);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(si[t]), acc[t]);
            mins[t] += dmin * summ;
        }
    }
    for (int t = 0; t < ntok; t++)
        out[t * os] = hsum_ps(acc[t]) - mins[t];
}
AVX2_DOT_WRAPPER(avx2_dot_q4_k, dot_q45k_body, 0)
AVX2_DOT_WRAPPER(avx2_dot_q5_k, dot_q45k_body, 1)

/* Q6_K: each 16 weights share one int8 scale; (q - 32) * scale is at most 32 * 128 = 4096, so
 * a madd lane adds at most 2 * 4096 * 16256 per 16 elements and 16 of them per super-block
 * (2,130,706,432) stay below 2^31. */
AVX2_INLINE void dot_q6k_body(const void *w, const void *x, size_t xs, int ntok, int64_t n,
                              float *out, size_t os)
{
    const struct cpu_block_q6_k *wb = w;
    __m256 acc[CPU_TILE];
    for (int t = 0; t < ntok; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    const __m256i c32 = _mm256_set1_epi8(32);
    for (int64_t b = 0; b < n / 256; b++) {
        float d = f16(wb[b].d);
        __m256i si[CPU_TILE];
        for (int t = 0; t < ntok; t++)
            si[t] = _mm256_setzero_si256();
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = wb[b].ql + 64 * half, *qh = wb[b].qh + 32 * half;
            const int8_t *sc = wb[b].scales + 8 * half;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)qh);
            /* q[k] holds elements 32k .. 32k + 31 of this half, as q - 32 */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
            q[1] = _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
            q[2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
            q[3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
            __m256i wv[8];
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_sub_epi8(q[k], c32);
                /* elements 0..15 use scale 2k, 16..31 scale 2k + 1 */
                wv[2 * k] = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                                               _mm256_set1_epi16(sc[2 * k]));
                wv[2 * k + 1] =
                        _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)),
                                           _mm256_set1_epi16(sc[2 * k + 1]));
            }
            for (int t = 0; t < ntok; t++) {
                const int16_t *xq = ACT256(x, xs, t)[b].q + 128 * half;
                for (int k = 0; k < 8; k++)
                    si[t] = madd16(si[t], wv[k], xq + 16 * k);
            }
        }
        for (int t = 0; t < ntok; t++) {
            const struct cpu_act256 *xb = ACT256(x, xs, t) + b;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(si[t]), acc[t]);
        }
    }
    for (int t = 0; t < ntok; t++)
        out[t * os] = hsum_ps(acc[t]);
}
AVX2_DOT_WRAPPER(avx2_dot_q6_k, dot_q6k_body)

/* ---- vector helpers ---------------------------------------------------------------------- */

AVX2 static float avx2_dot_f32_vec(const float *a, const float *b, int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum_ps(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

AVX2 static void avx2_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

AVX2 static void avx2_dot_rows(float *out, const float *q, const float *rows, int64_t stride,
                               int64_t n_rows, int64_t dim, float scale)
{
    int64_t p = 0;
    if (dim % 8 == 0) {
        /* eight rows at once, reduced together by a tree of horizontal adds */
        for (; p + 8 <= n_rows; p += 8) {
            __m256 a[8];
            for (int j = 0; j < 8; j++)
                a[j] = _mm256_setzero_ps();
            for (int64_t i = 0; i < dim; i += 8) {
                __m256 qv = _mm256_loadu_ps(q + i);
                for (int j = 0; j < 8; j++)
                    a[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(rows + (p + j) * stride + i), a[j]);
            }
            __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
            __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
            __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
            __m256 r = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                     _mm256_permute2f128_ps(u0, u1, 0x31));
            _mm256_storeu_ps(out + p, _mm256_mul_ps(r, _mm256_set1_ps(scale)));
        }
    }
    for (; p < n_rows; p++)
        out[p] = scale * avx2_dot_f32_vec(q, rows + p * stride, dim);
}

AVX2 static void avx2_weighted_rows(float *out, const float *w, const float *rows, int64_t stride,
                                    int64_t n_rows, int64_t dim)
{
    int64_t i = 0;
    /* 32 output floats stay in registers while every row passes */
    for (; i + 32 <= dim; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t p = 0; p < n_rows; p++) {
            const float *r = rows + p * stride + i;
            __m256 wp = _mm256_broadcast_ss(w + p);
            a0 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(r), a0);
            a1 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(r + 8), a1);
            a2 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(r + 16), a2);
            a3 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(r + 24), a3);
        }
        _mm256_storeu_ps(out + i, a0);
        _mm256_storeu_ps(out + i + 8, a1);
        _mm256_storeu_ps(out + i + 16, a2);
        _mm256_storeu_ps(out + i + 24, a3);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int64_t p = 0; p < n_rows; p++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + p), _mm256_loadu_ps(rows + p * stride + i),
                                 a0);
        _mm256_storeu_ps(out + i, a0);
    }
    for (; i < dim; i++) {
        float a = 0.0f;
        for (int64_t p = 0; p < n_rows; p++)
            a += w[p] * rows[p * stride + i];
        out[i] = a;
    }
}

const struct cpu_kernels cpu_kernels_avx2 = {
        .dot =
                {
                        [DTYPE_F32] = avx2_dot_f32,
                        [DTYPE_F16] = avx2_dot_f16,
                        [DTYPE_BF16] = avx2_dot_bf16,
                        [DTYPE_Q8_0] = avx2_dot_q8_0,
                        [DTYPE_Q4_0] = avx2_dot_q4_0,
                        [DTYPE_Q4_1] = avx2_dot_q4_1,
                        [DTYPE_Q4_K] = avx2_dot_q4_k,
                        [DTYPE_Q5_K] = avx2_dot_q5_k,
                        [DTYPE_Q6_K] = avx2_dot_q6_k,
                },
        .quant_act32 = avx2_quant_act32,
        .quant_act256 = avx2_quant_act256,
        .dot_f32 = avx2_dot_f32_vec,
        .axpy_f32 = avx2_axpy_f32,
        .dot_rows = avx2_dot_rows,
        .weighted_rows = avx2_weighted_rows,
};

#endif
