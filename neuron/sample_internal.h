/*
 * neuron/sample_internal.h — the pieces of sample.c that its unit test checks one by one.
 *
 * Contract: not for use outside sample.c and tests/unit/neuron/test_sample.c. Candidates are
 * ranked by one strict total order: higher logit first, then lower id.
 */
#ifndef CORTEX_NEURON_SAMPLE_INTERNAL_H
#define CORTEX_NEURON_SAMPLE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sample_candidate {
    float v; /* logit */
    int32_t id;
};

/* e^x for x in [-87, 0]; 0 for anything else (x < -87, NaN, +inf). The argument is always
 * (logit - max) / temperature, so only masked and non-finite logits fall outside. Written with
 * plain float operations rather than libm's expf so that it vectorises and gives the same bits
 * under every C library: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2, n rounded by
 * the 1.5 * 2^23 trick), e^r by its Taylor series to r^7 (truncation < 1e-8), times 2^n built
 * in the exponent bits. Relative error about 1e-7. Branch-free for the vectoriser. */
static inline float sample_exp(float x)
{
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t t_bits, scale_bits, y_bits;
    memcpy(&t_bits, &t, sizeof(t_bits));
    scale_bits = (t_bits - 0x4b400000u + 127u) << 23; /* 2^n: n sits in t's low mantissa bits */
    float scale, y;
    memcpy(&scale, &scale_bits, sizeof(scale));
    y = p * scale;
    memcpy(&y_bits, &y, sizeof(y_bits));
    y_bits &= 0u - (uint32_t)((x >= -87.0f) & (x <= 0.0f));
    memcpy(&y, &y_bits, sizeof(y));
    return y;
}

/* Draws an index of w[0..n) with probability w[i] / sum(w); u is uniform in [0, 1). Returns an
 * index with w > 0 (n when no weight is positive). */
size_t sample_pick(const float *w, size_t n, double u);

/* Rearranges c[0..n) so that its k best candidates come first, in no particular order but the
 * same on every run. */
void sample_select(struct sample_candidate *c, size_t n, size_t k);

/* The k best of the tokens i < n_vocab with w[i] > 0 and w[i] >= floor, placed in c[0..k) in
 * heap order; returns how many (fewer than k when fewer qualify). */
#define SAMPLE_HEAP_MAX_K 1024
size_t sample_top_k_heap(struct sample_candidate *c, const float *logits, const float *w,
                         size_t n_vocab, float floor, size_t k);

/* Moves the shortest prefix of c[0..n)'s ranking whose weight (w[id]) reaches target to the
 * front; returns its length (n if the whole set falls short). */
size_t sample_top_p(struct sample_candidate *c, size_t n, const float *w, double target);

#endif
