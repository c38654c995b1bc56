/*
 * tests/unit/neuron/test_dtype.c — element types: geometry, float16/bfloat16 conversion, and
 * dequantisation of every block format.
 *
 * Two independent references: blocks encoded here from chosen quantised values (an encoder
 * written from the format description, element by element, so a layout mistake in dtype.c
 * cannot cancel out), and random blocks dequantised by llama.cpp's `gguf` Python package
 * (gguf_reference.py). When python3 with gguf is absent, the hand-built cases still run and the
 * program exits 77 (skipped) instead of claiming full coverage.
 */
#include "dtype.h"
#include "neuron/model_fixture.h"

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- deterministic random numbers -------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static int rng_int(int lo, int hi) /* inclusive */
{
    return lo + (int)(rng_u32() % (uint32_t)(hi - lo + 1));
}

static float rng_float(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rng_u32() >> 8) / (float)(1u << 24);
}

static void put_f16(uint8_t *p, uint16_t h)
{
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* A scale that is exactly representable in f16, so expected values are exact too. */
static float f16_exact(float f, uint16_t *bits)
{
    *bits = dtype_f32_to_f16(f);
    return dtype_f16_to_f32(*bits);
}

static void assert_close(const float *got, const double *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        ck_assert_msg(err <= tol * (1.0 + fabs(want[i])), "element %zu: got %.9g, want %.9g", i,
                      (double)got[i], want[i]);
    }
}

/* ---- geometry and scalar conversions ----------------------------------------------------- */

START_TEST(test_geometry)
{
    static const struct {
        enum dtype t;
        const char *name;
        size_t elems, bytes;
    } want[] = {
            {DTYPE_F32, "f32", 1, 4},       {DTYPE_F16, "f16", 1, 2},
            {DTYPE_BF16, "bf16", 1, 2},     {DTYPE_Q8_0, "q8_0", 32, 34},
            {DTYPE_Q4_0, "q4_0", 32, 18},   {DTYPE_Q4_1, "q4_1", 32, 20},
            {DTYPE_Q4_K, "q4_k", 256, 144}, {DTYPE_Q5_K, "q5_k", 256, 176},
            {DTYPE_Q6_K, "q6_k", 256, 210},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_str_eq(dtype_name(want[i].t), want[i].name);
        ck_assert_uint_eq(dtype_block_elems(want[i].t), want[i].elems);
        ck_assert_uint_eq(dtype_block_bytes(want[i].t), want[i].bytes);
        ck_assert_uint_eq(dtype_row_bytes(want[i].t, want[i].elems * 3), want[i].bytes * 3);
    }
    ck_assert_ptr_null(dtype_name(DTYPE_COUNT));
    ck_assert_ptr_null(dtype_name((enum dtype) - 1));
}
END_TEST

START_TEST(test_f16_values)
{
    static const struct {
        uint16_t bits;
        float value;
    } cases[] = {
            {0x0000, 0.0f},
            {0x3c00, 1.0f},
            {0xc000, -2.0f},
            {0x7bff, 65504.0f},
            {0x0400, 0x1p-14f},
            {0x0001, 0x1p-24f},
            {0x03ff, 1023 * 0x1p-24f},
            {0x3555, 0.333251953125f},
            {0x8001, -0x1p-24f},
            {0x3800, 0.5f},
            {0x4248, 3.140625f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_float_eq(dtype_f16_to_f32(cases[i].bits), cases[i].value);
        ck_assert_uint_eq(dtype_f32_to_f16(cases[i].value), cases[i].bits);
    }
    ck_assert(signbit(dtype_f16_to_f32(0x8000)) && dtype_f16_to_f32(0x8000) == 0.0f);
    ck_assert(isinf(dtype_f16_to_f32(0x7c00)) && dtype_f16_to_f32(0x7c00) > 0);
    ck_assert(isinf(dtype_f16_to_f32(0xfc00)) && dtype_f16_to_f32(0xfc00) < 0);
    ck_assert(isnan(dtype_f16_to_f32(0x7e00)));
    uint16_t nan = dtype_f32_to_f16(NAN);
    ck_assert_uint_eq(nan & 0x7c00, 0x7c00);
    ck_assert_uint_ne(nan & 0x03ff, 0);
    ck_assert_uint_eq(dtype_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(dtype_f32_to_f16(-INFINITY), 0xfc00);
}
END_TEST

START_TEST(test_f16_rounding)
{
    /* ties go to the even mantissa; everything else to the nearest */
    ck_assert_uint_eq(dtype_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    ck_assert_uint_eq(dtype_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    ck_assert_uint_eq(dtype_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    ck_assert_uint_eq(dtype_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(dtype_f32_to_f16(65520.0f), 0x7c00); /* rounds up into infinity */
    ck_assert_uint_eq(dtype_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(dtype_f32_to_f16(0x1p-25f), 0x0000);            /* tie to even 0 */
    ck_assert_uint_eq(dtype_f32_to_f16(0x1p-25f + 0x1p-35f), 0x0001); /* above the tie */
    ck_assert_uint_eq(dtype_f32_to_f16(3 * 0x1p-25f), 0x0002);        /* tie to even 2 */
    ck_assert_uint_eq(dtype_f32_to_f16(1e-10f), 0x0000);
    ck_assert_uint_eq(dtype_f32_to_f16(-1e-10f), 0x8000);
    ck_assert_uint_eq(dtype_f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400); /* into the normals */
    /* every finite half survives the round trip */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        ck_assert_uint_eq(dtype_f32_to_f16(dtype_f16_to_f32((uint16_t)h)), h);
    }
}
END_TEST

START_TEST(test_bf16)
{
    ck_assert_float_eq(dtype_bf16_to_f32(0x3f80), 1.0f);
    ck_assert_float_eq(dtype_bf16_to_f32(0xc020), -2.5f);
    ck_assert_uint_eq(dtype_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(dtype_f32_to_bf16(-2.5f), 0xc020);
    ck_assert_uint_eq(dtype_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie to even */
    ck_assert_uint_eq(dtype_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie to even */
    ck_assert_uint_eq(dtype_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    ck_assert_uint_eq(dtype_f32_to_bf16(3.4028235e38f), 0x7f80); /* FLT_MAX rounds to inf */
    ck_assert(isnan(dtype_bf16_to_f32(dtype_f32_to_bf16(NAN))));
    ck_assert_uint_eq(dtype_f32_to_bf16(INFINITY), 0x7f80);
    for (uint32_t b = 0; b < 0x10000; b++) {
        if ((b & 0x7f80) == 0x7f80 && (b & 0x7f))
            continue;
        ck_assert_uint_eq(dtype_f32_to_bf16(dtype_bf16_to_f32((uint16_t)b)), b);
    }
}
END_TEST

START_TEST(test_float_rows)
{
    float src[5] = {1.5f, -2.0f, 0.0f, 65504.0f, 0x1p-24f}, out[5];
    dtype_dequant_row(DTYPE_F32, src, out, 5);
    ck_assert_mem_eq(out, src, sizeof src);
    uint8_t h[10], b[10];
    for (int i = 0; i < 5; i++) {
        put_f16(h + 2 * i, dtype_f32_to_f16(src[i]));
        put_f16(b + 2 * i, dtype_f32_to_bf16(src[i]));
    }
    dtype_dequant_row(DTYPE_F16, h, out, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_float_eq(out[i], src[i]);
    dtype_dequant_row(DTYPE_BF16, b, out, 5);
    ck_assert_float_eq(out[0], 1.5f);
    ck_assert_float_eq(out[1], -2.0f);
    ck_assert_float_eq(out[3], 65536.0f); /* 65504 rounds to 2^16 in bf16 */
}
END_TEST

/* ---- hand-encoded blocks ----------------------------------------------------------------- */

START_TEST(test_q8_0)
{
    uint8_t blk[2 * 34];
    double want[64];
    for (int b = 0; b < 2; b++) {
        uint16_t dh;
        double d = f16_exact(b ? 0.5f : 0.0078125f, &dh);
        put_f16(blk + 34 * b, dh);
        for (int i = 0; i < 32; i++) {
            int q = b ? i * 8 - 128 : rng_int(-128, 127);
            blk[34 * b + 2 + i] = (uint8_t)(int8_t)q;
            want[32 * b + i] = d * q;
        }
    }
    float got[64];
    dtype_dequant_row(DTYPE_Q8_0, blk, got, 64);
    assert_close(got, want, 64, 0);
}
END_TEST

/* Q4_0 / Q4_1: element i < 16 is the low nibble of byte i, element i >= 16 the high nibble of
 * byte i - 16. */
static void put_nibble(uint8_t *qs, int i, int q)
{
    if (i < 16)
        qs[i] = (uint8_t)((qs[i] & 0xf0) | q);
    else
        qs[i - 16] = (uint8_t)((qs[i - 16] & 0x0f) | (q << 4));
}

START_TEST(test_q4_0_q4_1)
{
    uint8_t b0[18] = {0}, b1[20] = {0};
    uint16_t dh, mh;
    double d = f16_exact(-1.75f, &dh), m = f16_exact(3.25f, &mh);
    put_f16(b0, dh);
    put_f16(b1, dh);
    put_f16(b1 + 2, mh);
    double w0[32], w1[32];
    for (int i = 0; i < 32; i++) {
        int q = (i * 7 + 3) % 16;
        put_nibble(b0 + 2, i, q);
        put_nibble(b1 + 4, i, q);
        w0[i] = (q - 8) * d;
        w1[i] = q * d + m;
    }
    float got[32];
    dtype_dequant_row(DTYPE_Q4_0, b0, got, 32);
    assert_close(got, w0, 32, 0);
    dtype_dequant_row(DTYPE_Q4_1, b1, got, 32);
    assert_close(got, w1, 32, 1e-7);
}
END_TEST

/* Packs eight 6-bit scales and mins into the 12 bytes of a Q4_K/Q5_K block: sub-blocks 0..3 in
 * the low 6 bits of bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 split into a low
 * nibble (bytes 8..11: scale low, min high) and two top bits (bits 6..7 of bytes j-4 / j). */
static void pack_k4_scales(uint8_t *s, const int *sc, const int *mn)
{
    memset(s, 0, 12);
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4));
    }
}

/* Element i of a Q4_K/Q5_K super-block: sub-block s = i / 32, position l = i % 32; sub-blocks
 * 2k and 2k+1 share bytes 32k..32k+31 (2k low nibbles, 2k+1 high nibbles); in Q5_K bit s of
 * qh[l] is the fifth bit. */
static void build_k4(bool five, uint8_t *blk, double *want)
{
    int sc[8], mn[8];
    for (int s = 0; s < 8; s++) {
        sc[s] = rng_int(0, 63);
        mn[s] = rng_int(0, 63);
    }
    sc[5] = 63; /* exercise the top bits */
    mn[6] = 48;
    uint16_t dh, mh;
    double d = f16_exact(rng_float(0.001f, 0.01f), &dh);
    double dmin = f16_exact(rng_float(0.001f, 0.01f), &mh);
    put_f16(blk, dh);
    put_f16(blk + 2, mh);
    pack_k4_scales(blk + 4, sc, mn);
    uint8_t *qh = five ? blk + 16 : NULL;
    uint8_t *qs = five ? blk + 48 : blk + 16;
    memset(qs, 0, 128);
    if (qh)
        memset(qh, 0, 32);
    for (int i = 0; i < 256; i++) {
        int s = i / 32, l = i % 32;
        int q = rng_int(0, five ? 31 : 15);
        int lo = q & 15;
        uint8_t *byte = &qs[32 * (s / 2) + l];
        *byte = (uint8_t)(s % 2 ? (*byte | (lo << 4)) : (*byte | lo));
        if (qh && (q & 16))
            qh[l] = (uint8_t)(qh[l] | (1 << s));
        want[i] = d * sc[s] * q - dmin * mn[s];
    }
}

START_TEST(test_q4_k)
{
    uint8_t blk[2 * 144];
    double want[512];
    build_k4(false, blk, want);
    build_k4(false, blk + 144, want + 256);
    float got[512];
    dtype_dequant_row(DTYPE_Q4_K, blk, got, 512);
    assert_close(got, want, 512, 1e-5);
}
END_TEST

START_TEST(test_q5_k)
{
    uint8_t blk[2 * 176];
    double want[512];
    build_k4(true, blk, want);
    build_k4(true, blk + 176, want + 256);
    float got[512];
    dtype_dequant_row(DTYPE_Q5_K, blk, got, 512);
    assert_close(got, want, 512, 1e-5);
}
END_TEST

/* Q6_K element i: half h = i / 128, r = i % 128, quarter g = r / 32, l = r % 32. Low 4 bits:
 * ql[64h + l] (g = 0 low, g = 2 high) or ql[64h + 32 + l] (g = 1 low, g = 3 high); high 2 bits:
 * bits 2g..2g+1 of qh[32h + l]; scale: scales[8h + 2g + l / 16]; value d * scale * (q - 32). */
START_TEST(test_q6_k)
{
    uint8_t blk[210] = {0};
    uint8_t *ql = blk, *qh = blk + 128;
    int8_t sc[16];
    for (int i = 0; i < 16; i++) {
        sc[i] = (int8_t)rng_int(-128, 127);
        blk[192 + i] = (uint8_t)sc[i];
    }
    uint16_t dh;
    double d = f16_exact(-0.0123f, &dh);
    put_f16(blk + 208, dh);
    double want[256];
    for (int i = 0; i < 256; i++) {
        int h = i / 128, r = i % 128, g = r / 32, l = r % 32;
        int q = rng_int(0, 63);
        uint8_t *lo = &ql[64 * h + (g % 2 ? 32 : 0) + l];
        *lo = (uint8_t)(g < 2 ? (*lo | (q & 15)) : (*lo | ((q & 15) << 4)));
        qh[32 * h + l] = (uint8_t)(qh[32 * h + l] | ((q >> 4) << (2 * g)));
        want[i] = d * sc[8 * h + 2 * g + l / 16] * (q - 32);
    }
    float got[256];
    dtype_dequant_row(DTYPE_Q6_K, blk, got, 256);
    assert_close(got, want, 256, 1e-5);
}
END_TEST

/* ---- llama.cpp's Python reference -------------------------------------------------------- */

/* Random blocks with finite, modest f16 scales (random bytes there could be inf or NaN). */
static void random_blocks(enum dtype t, uint8_t *buf, size_t nblocks)
{
    size_t bb = dtype_block_bytes(t);
    for (size_t i = 0; i < nblocks * bb; i++)
        buf[i] = (uint8_t)rng_u32();
    for (size_t b = 0; b < nblocks; b++) {
        uint8_t *p = buf + b * bb;
        switch (t) {
        case DTYPE_Q8_0:
        case DTYPE_Q4_0:
            put_f16(p, dtype_f32_to_f16(rng_float(-0.1f, 0.1f)));
            break;
        case DTYPE_Q4_1:
        case DTYPE_Q4_K:
        case DTYPE_Q5_K:
            put_f16(p, dtype_f32_to_f16(rng_float(-0.1f, 0.1f)));
            put_f16(p + 2, dtype_f32_to_f16(rng_float(-0.1f, 0.1f)));
            break;
        case DTYPE_Q6_K:
            put_f16(p + 208, dtype_f32_to_f16(rng_float(-0.1f, 0.1f)));
            break;
        case DTYPE_F16:
            put_f16(p, dtype_f32_to_f16(rng_float(-100, 100)));
            break;
        case DTYPE_BF16:
            put_f16(p, dtype_f32_to_bf16(rng_float(-100, 100)));
            break;
        case DTYPE_F32: {
            float f = rng_float(-100, 100);
            memcpy(p, &f, 4);
            break;
        }
        default:
            break;
        }
    }
}

START_TEST(test_against_gguf_package)
{
    char *dir = fixture_tmpdir();
    char *in[DTYPE_COUNT], *out[DTYPE_COUNT];
    uint8_t *blocks[DTYPE_COUNT];
    size_t n[DTYPE_COUNT];
    const char *args[2 + 3 * DTYPE_COUNT] = {"dequant"};
    for (int t = 0; t < DTYPE_COUNT; t++) {
        size_t nblocks = dtype_block_elems((enum dtype)t) == 1 ? 512 : 16;
        size_t bytes = nblocks * dtype_block_bytes((enum dtype)t);
        n[t] = nblocks * dtype_block_elems((enum dtype)t);
        blocks[t] = xmalloc(bytes);
        random_blocks((enum dtype)t, blocks[t], nblocks);
        in[t] = xasprintf("%s/%s.blocks", dir, dtype_name((enum dtype)t));
        out[t] = xasprintf("%s/%s.values", dir, dtype_name((enum dtype)t));
        fixture_write(in[t], blocks[t], bytes);
        args[1 + 3 * t] = dtype_name((enum dtype)t);
        args[2 + 3 * t] = in[t];
        args[3 + 3 * t] = out[t];
    }
    ck_assert_int_eq(fixture_run_reference(args), 0);
    for (int t = 0; t < DTYPE_COUNT; t++) {
        size_t len;
        float *ref = fixture_read(out[t], &len);
        ck_assert_uint_eq(len, n[t] * sizeof(float));
        float *got = xmalloc(n[t] * sizeof(float));
        dtype_dequant_row((enum dtype)t, blocks[t], got, n[t]);
        /* the same float operations in the same order: results are bit-identical */
        for (size_t i = 0; i < n[t]; i++)
            ck_assert_msg(got[i] == ref[i], "%s element %zu: got %.9g, gguf says %.9g",
                          dtype_name((enum dtype)t), i, (double)got[i], (double)ref[i]);
        free(got);
        free(ref);
        free(blocks[t]);
        free(in[t]);
        free(out[t]);
    }
    fixture_rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dtype");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_geometry);
    tcase_add_test(tc, test_f16_values);
    tcase_add_test(tc, test_f16_rounding);
    tcase_add_test(tc, test_bf16);
    tcase_add_test(tc, test_float_rows);
    tcase_add_test(tc, test_q8_0);
    tcase_add_test(tc, test_q4_0_q4_1);
    tcase_add_test(tc, test_q4_k);
    tcase_add_test(tc, test_q5_k);
    tcase_add_test(tc, test_q6_k);
    suite_add_tcase(s, tc);

    int have_reference = fixture_reference_available();
    if (have_reference) {
        TCase *ref = tcase_create("gguf-reference");
        tcase_add_test(ref, test_against_gguf_package);
        suite_add_tcase(s, ref);
    } else {
        fprintf(stderr, "test_dtype: python3 with the gguf package is not available; "
                        "the cross-check against it is skipped\n");
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return EXIT_FAILURE;
    return have_reference ? EXIT_SUCCESS : 77;
}
