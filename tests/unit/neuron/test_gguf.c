/*
 * tests/unit/neuron/test_gguf.c — the GGUF reader on files written here: every metadata type,
 * tensor placement and shapes, and every kind of damage (truncation at every byte, wrong magic,
 * bad version, absurd lengths and counts, data out of range, unsupported types), each of which
 * must give an error naming the file and the problem, never a crash (run under ASan).
 */
#include "gguf.h"
#include "neuron/model_fixture.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char *path;
static char err[512];

static void setup(void)
{
    dir = fixture_tmpdir();
    path = xasprintf("%s/model.gguf", dir);
    err[0] = '\0';
}

static void teardown(void)
{
    free(path);
    fixture_rmdir(dir);
}

/* Opening must fail with a message naming the file and containing want. */
static void expect_error(const char *want)
{
    struct gguf_file *g = NULL;
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof err), -1);
    ck_assert_ptr_null(g);
    ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "error does not name the file: %s", err);
    ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
}

/* A small valid model: a few keys and three tensors (f32 [2,3], f16 [4], q8_0 [2,32]). */
static float f32_data[6] = {1, 2, 3, 4, 5, 6};
static uint8_t f16_data[8];
static uint8_t q8_data[2 * 34];

static void small_model(struct fixture_gguf *g)
{
    fixture_gguf_init(g);
    fixture_gguf_str(g, "general.architecture", "llama");
    fixture_gguf_u32(g, "llama.block_count", 1);
    const char *tokens[] = {"<s>", "hello", "wörld"};
    fixture_gguf_strs(g, "tokenizer.ggml.tokens", tokens, 3);
    for (int i = 0; i < 4; i++) {
        uint16_t h = dtype_f32_to_f16((float)i - 1.5f);
        f16_data[2 * i] = (uint8_t)h;
        f16_data[2 * i + 1] = (uint8_t)(h >> 8);
    }
    for (int b = 0; b < 2; b++) {
        uint16_t h = dtype_f32_to_f16(0.25f);
        q8_data[34 * b] = (uint8_t)h;
        q8_data[34 * b + 1] = (uint8_t)(h >> 8);
        for (int i = 0; i < 32; i++)
            q8_data[34 * b + 2 + i] = (uint8_t)(int8_t)(i - 16 + b);
    }
    uint64_t ne_a[2] = {3, 2}, ne_b[1] = {4}, ne_c[2] = {32, 2};
    fixture_gguf_tensor(g, "a.weight", FX_GGML_F32, 2, ne_a, f32_data, sizeof f32_data);
    fixture_gguf_tensor(g, "b.weight", FX_GGML_F16, 1, ne_b, f16_data, sizeof f16_data);
    fixture_gguf_tensor(g, "c.weight", FX_GGML_Q8_0, 2, ne_c, q8_data, sizeof q8_data);
}

START_TEST(test_every_value_type)
{
    struct fixture_gguf g;
    fixture_gguf_init(&g);
    g.version = (uint32_t)_i; /* v2 and v3 share the layout */
    fixture_le(fixture_gguf_key(&g, "t.u8", FX_U8), 200, 1);
    fixture_le(fixture_gguf_key(&g, "t.i8", FX_I8), (uint8_t)-5, 1);
    fixture_le(fixture_gguf_key(&g, "t.u16", FX_U16), 60000, 2);
    fixture_le(fixture_gguf_key(&g, "t.i16", FX_I16), (uint16_t)-300, 2);
    fixture_le(fixture_gguf_key(&g, "t.u32", FX_U32), 4000000000u, 4);
    fixture_le(fixture_gguf_key(&g, "t.i32", FX_I32), (uint32_t)-7, 4);
    fixture_gguf_f32(&g, "t.f32", 0.5f);
    fixture_le(fixture_gguf_key(&g, "t.bool", FX_BOOL), 1, 1);
    fixture_gguf_str(&g, "t.str", "héllo");
    fixture_le(fixture_gguf_key(&g, "t.u64", FX_U64), 1ull << 40, 8);
    fixture_le(fixture_gguf_key(&g, "t.u64big", FX_U64), 1ull << 63, 8);
    fixture_le(fixture_gguf_key(&g, "t.i64", FX_I64), (uint64_t) - (1ll << 40), 8);
    double d = 1.25;
    uint64_t du;
    memcpy(&du, &d, 8);
    fixture_le(fixture_gguf_key(&g, "t.f64", FX_F64), du, 8);
    struct fixture_buf *b = fixture_gguf_key(&g, "t.ints", FX_ARR);
    fixture_le(b, FX_I32, 4);
    fixture_le(b, 3, 8);
    fixture_le(b, 1, 4);
    fixture_le(b, (uint32_t)-2, 4);
    fixture_le(b, 3, 4);
    b = fixture_gguf_key(&g, "t.nested", FX_ARR); /* [[1, 2], []] of u8 */
    fixture_le(b, FX_ARR, 4);
    fixture_le(b, 2, 8);
    fixture_le(b, FX_U8, 4);
    fixture_le(b, 2, 8);
    fixture_le(b, 1, 1);
    fixture_le(b, 2, 1);
    fixture_le(b, FX_U8, 4);
    fixture_le(b, 0, 8);
    fixture_str(fixture_gguf_key(&g, "t.bytes", FX_STR), "\xff\xfe"); /* not UTF-8 */
    const char *strs[] = {"a", "", "c"};
    fixture_gguf_strs(&g, "t.strs", strs, 3);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);

    struct gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    ck_assert_uint_eq(f->version, (uint32_t)_i);
    ck_assert_uint_eq(f->n_tensors, 0);
    json_t *m = f->meta;
    ck_assert_int_eq(json_object_size(m), 17);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.u8")), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.i8")), -5);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.u16")), 60000);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.i16")), -300);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.u32")), 4000000000ll);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.i32")), -7);
    ck_assert_double_eq(json_real_value(json_object_get(m, "t.f32")), 0.5);
    ck_assert(json_is_true(json_object_get(m, "t.bool")));
    ck_assert_str_eq(json_string_value(json_object_get(m, "t.str")), "héllo");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.u64")), 1ll << 40);
    ck_assert_double_eq(json_real_value(json_object_get(m, "t.u64big")), 9223372036854775808.0);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "t.i64")), -(1ll << 40));
    ck_assert_double_eq(json_real_value(json_object_get(m, "t.f64")), 1.25);
    json_t *ints = json_object_get(m, "t.ints");
    ck_assert_int_eq(json_array_size(ints), 3);
    ck_assert_int_eq(json_integer_value(json_array_get(ints, 1)), -2);
    json_t *nested = json_object_get(m, "t.nested");
    ck_assert_int_eq(json_array_size(nested), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(json_array_get(nested, 0), 1)), 2);
    ck_assert_int_eq(json_array_size(json_array_get(nested, 1)), 0);
    json_t *bytes = json_object_get(m, "t.bytes");
    ck_assert_uint_eq(json_string_length(bytes), 2);
    ck_assert_mem_eq(json_string_value(bytes), "\xff\xfe", 2);
    json_t *s = json_object_get(m, "t.strs");
    ck_assert_str_eq(json_string_value(json_array_get(s, 1)), "");
    ck_assert_str_eq(json_string_value(json_array_get(s, 2)), "c");
    gguf_close(f);
}
END_TEST

START_TEST(test_tensors)
{
    struct fixture_gguf g;
    small_model(&g);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);

    struct gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    ck_assert_uint_eq(f->alignment, 32);
    ck_assert_uint_eq(f->data_offset % 32, 0);
    ck_assert_uint_eq(f->n_tensors, 3);
    const struct gguf_tensor *a = &f->tensors[0], *b = &f->tensors[1], *c = &f->tensors[2];
    ck_assert_str_eq(a->name, "a.weight");
    ck_assert_int_eq(a->type, DTYPE_F32);
    ck_assert_int_eq(a->ndim, 2);
    ck_assert_int_eq(a->shape[0], 2); /* GGUF ne {3, 2} is PyTorch [2, 3] */
    ck_assert_int_eq(a->shape[1], 3);
    ck_assert_uint_eq(a->nbytes, 24);
    ck_assert_mem_eq(a->data, f32_data, 24);
    ck_assert_uint_eq(a->offset, f->data_offset);
    ck_assert_ptr_eq(a->data, (const uint8_t *)f->map + a->offset);
    ck_assert_int_eq(b->type, DTYPE_F16);
    ck_assert_int_eq(b->ndim, 1);
    ck_assert_int_eq(b->shape[0], 4);
    ck_assert_uint_eq(b->offset, f->data_offset + 32);
    ck_assert_mem_eq(b->data, f16_data, 8);
    ck_assert_int_eq(c->type, DTYPE_Q8_0);
    ck_assert_uint_eq(c->ggml_type, 8);
    ck_assert_int_eq(c->shape[0], 2);
    ck_assert_int_eq(c->shape[1], 32);
    ck_assert_uint_eq(c->nbytes, 68);
    ck_assert_uint_eq(c->offset, f->data_offset + 64);
    ck_assert_mem_eq(c->data, q8_data, 68);
    ck_assert_str_eq(
            json_string_value(json_array_get(json_object_get(f->meta, "tokenizer.ggml.tokens"), 2)),
            "wörld");
    gguf_close(f);
}
END_TEST

START_TEST(test_custom_alignment)
{
    struct fixture_gguf g;
    fixture_gguf_init(&g);
    g.alignment = 64;
    fixture_gguf_u32(&g, "general.alignment", 64);
    uint64_t ne[1] = {3};
    float x[3] = {7, 8, 9}, y[3] = {-1, -2, -3};
    fixture_gguf_tensor(&g, "x", FX_GGML_F32, 1, ne, x, sizeof x);
    fixture_gguf_tensor(&g, "y", FX_GGML_F32, 1, ne, y, sizeof y);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    struct gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    ck_assert_uint_eq(f->alignment, 64);
    ck_assert_uint_eq(f->data_offset % 64, 0);
    ck_assert_uint_eq(f->tensors[1].offset, f->data_offset + 64);
    ck_assert_mem_eq(f->tensors[1].data, y, sizeof y);
    gguf_close(f);
}
END_TEST

START_TEST(test_wrong_magic)
{
    fixture_write_str(path, "GGML\x03\x00\x00\x00 and then some more bytes");
    expect_error("not a GGUF file");
    fixture_write_str(path, "GG");
    expect_error("not a GGUF file");
}
END_TEST

START_TEST(test_empty_file)
{
    fixture_write(path, "", 0);
    expect_error("file is empty");
}
END_TEST

START_TEST(test_bad_version)
{
    struct fixture_gguf g;
    small_model(&g);
    g.version = 1;
    fixture_gguf_write(&g, path);
    expect_error("unsupported GGUF version 1 (supported: 2, 3)");
    g.version = 0x03000000; /* a big-endian writer's version 3 */
    fixture_gguf_write(&g, path);
    expect_error("big-endian GGUF files are not supported");
    fixture_gguf_free(&g);
}
END_TEST

/* Cut a valid file at every length: each prefix is refused cleanly. */
START_TEST(test_truncated_everywhere)
{
    struct fixture_gguf g;
    small_model(&g);
    struct fixture_buf whole;
    fixture_gguf_build(&g, &whole);
    fixture_gguf_free(&g);
    for (size_t len = 0; len < whole.len; len++) {
        fixture_write(path, whole.p, len);
        struct gguf_file *f = NULL;
        ck_assert_msg(gguf_open(path, &f, err, sizeof err) == -1, "length %zu accepted", len);
        ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "length %zu: %s", len, err);
        ck_assert_msg(strstr(err, "truncated") || strstr(err, "beyond the end") ||
                              strstr(err, "past the end") || strstr(err, "not a GGUF") ||
                              strstr(err, "empty") || strstr(err, "could hold"),
                      "length %zu: unexpected message %s", len, err);
    }
    /* cut inside the last tensor's data: the message names that tensor */
    fixture_write(path, whole.p, whole.len - 1);
    expect_error("tensor 'c.weight': data (68 bytes at data offset 64) lies beyond the end");
    /* cut inside the vocabulary */
    size_t at = (size_t)((uint8_t *)memmem(whole.p, whole.len, "wörld", 6) - whole.p);
    fixture_write(path, whole.p, at + 2);
    expect_error("metadata key 'tokenizer.ggml.tokens': string of 6 bytes");
    free(whole.p);
}
END_TEST

START_TEST(test_tensor_out_of_range)
{
    struct fixture_gguf g;
    small_model(&g);
    uint64_t ne[2] = {32, 4};
    fixture_gguf_tensor_at(&g, "far.weight", FX_GGML_F32, 2, ne, 1ull << 20);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'far.weight': data (512 bytes at data offset 1048576) lies beyond the "
                 "end of the file");

    /* an offset so large that offset + size wraps around */
    small_model(&g);
    fixture_gguf_tensor_at(&g, "wrap.weight", FX_GGML_F32, 2, ne, UINT64_MAX - 31);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'wrap.weight'");
}
END_TEST

START_TEST(test_misaligned_offset)
{
    struct fixture_gguf g;
    small_model(&g);
    uint64_t ne[1] = {4};
    fixture_gguf_tensor_at(&g, "odd.weight", FX_GGML_F32, 1, ne, 4);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'odd.weight': data offset 4 is not a multiple of the alignment 32");
}
END_TEST

START_TEST(test_absurd_string_length)
{
    struct fixture_gguf g;
    small_model(&g);
    struct fixture_buf *b = fixture_gguf_key(&g, "general.name", FX_STR);
    fixture_le(b, 0x7fffffffffffffffull, 8);
    fixture_bytes(b, "short", 5);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("metadata key 'general.name': string of 9223372036854775807 bytes at offset");

    /* the same for a key and for a tensor name */
    fixture_gguf_init(&g);
    g.n_kv = 1;
    fixture_le(&g.kv, UINT64_MAX, 8);
    fixture_bytes(&g.kv, "0123456789abcdefghij", 20);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("metadata entry 0: string of 18446744073709551615 bytes");
    fixture_gguf_init(&g);
    g.n_tensors = 1;
    fixture_le(&g.info, 1ull << 50, 8);
    fixture_bytes(&g.info, "abcdefghijklmnopqrstuvwxyz", 26);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor info 0: string of 1125899906842624 bytes");
}
END_TEST

START_TEST(test_huge_array_count)
{
    struct fixture_gguf g;
    small_model(&g);
    struct fixture_buf *b = fixture_gguf_key(&g, "tokenizer.ggml.scores", FX_ARR);
    fixture_le(b, FX_F32, 4);
    fixture_le(b, 1ull << 62, 8);
    fixture_le(b, 0, 4);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("metadata key 'tokenizer.ggml.scores': array of 4611686018427387904 elements");

    /* a string array: each element needs at least its 8-byte length */
    small_model(&g);
    b = fixture_gguf_key(&g, "tokenizer.ggml.merges", FX_ARR);
    fixture_le(b, FX_STR, 4);
    fixture_le(b, 100000, 8);
    fixture_str(b, "a b");
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("array of 100000 elements");
}
END_TEST

START_TEST(test_huge_counts_in_header)
{
    struct fixture_gguf g;
    small_model(&g);
    g.n_tensors = 1ull << 40;
    fixture_gguf_write(&g, path);
    expect_error("tensor count 1099511627776 is larger than the file could hold");
    g.n_tensors = 3;
    g.n_kv = UINT64_MAX;
    fixture_gguf_write(&g, path);
    expect_error("metadata count 18446744073709551615 is larger than the file could hold");
    fixture_gguf_free(&g);
}
END_TEST

START_TEST(test_unsupported_tensor_type)
{
    struct fixture_gguf g;
    small_model(&g);
    uint8_t q5[22] = {0};
    uint64_t ne[1] = {32};
    fixture_gguf_tensor(&g, "q5.weight", FX_GGML_Q5_0, 1, ne, q5, sizeof q5);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'q5.weight' has type q5_0 (ggml type 6), which is not supported");

    small_model(&g);
    fixture_gguf_tensor_at(&g, "odd.weight", 77, 1, ne, 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'odd.weight' has type unknown (ggml type 77)");
}
END_TEST

START_TEST(test_bad_shapes)
{
    struct fixture_gguf g;
    small_model(&g);
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    fixture_gguf_tensor_at(&g, "five.weight", FX_GGML_F32, 5, ne5, 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'five.weight' has 5 dimensions (1 to 4 supported)");

    small_model(&g);
    uint64_t ne_q[2] = {48, 2};
    fixture_gguf_tensor_at(&g, "q.weight", FX_GGML_Q4_K, 2, ne_q, 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'q.weight': innermost dimension 48 is not a multiple of the q4_k block "
                 "size 256");

    small_model(&g);
    uint64_t ne_big[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    fixture_gguf_tensor_at(&g, "big.weight", FX_GGML_F32, 3, ne_big, 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'big.weight' has an element count that overflows");

    small_model(&g);
    uint64_t ne_huge[2] = {1ull << 31, 1ull << 31}; /* 2^62 elements of 4 bytes */
    fixture_gguf_tensor_at(&g, "huge.weight", FX_GGML_F32, 2, ne_huge, 0);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("tensor 'huge.weight'");
}
END_TEST

START_TEST(test_duplicates)
{
    struct fixture_gguf g;
    small_model(&g);
    fixture_gguf_u32(&g, "llama.block_count", 2);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("duplicate metadata key 'llama.block_count'");

    small_model(&g);
    uint64_t ne[1] = {3};
    fixture_gguf_tensor(&g, "a.weight", FX_GGML_F32, 1, ne, f32_data, 12);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("duplicate tensor name 'a.weight'");
}
END_TEST

START_TEST(test_bad_alignment_and_types)
{
    struct fixture_gguf g;
    small_model(&g);
    fixture_gguf_u32(&g, "general.alignment", 48);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("general.alignment must be a power of two");

    small_model(&g);
    fixture_le(fixture_gguf_key(&g, "x.weird", 13), 0, 4);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("metadata key 'x.weird': unknown value type 13");

    /* arrays nested four deep */
    small_model(&g);
    struct fixture_buf *b = fixture_gguf_key(&g, "x.deep", FX_ARR);
    for (int i = 0; i < 3; i++) {
        fixture_le(b, FX_ARR, 4);
        fixture_le(b, 1, 8);
    }
    fixture_le(b, FX_U8, 4);
    fixture_le(b, 1, 8);
    fixture_le(b, 1, 1);
    fixture_gguf_write(&g, path);
    fixture_gguf_free(&g);
    expect_error("metadata key 'x.deep': arrays nested deeper than 3 levels");
}
END_TEST

START_TEST(test_missing_file)
{
    expect_error("cannot open: No such file or directory");
    struct gguf_file *g = NULL;
    ck_assert_int_eq(gguf_open(dir, &g, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
    gguf_close(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_every_value_type, 2, 4);
    tcase_add_test(tc, test_tensors);
    tcase_add_test(tc, test_custom_alignment);
    tcase_add_test(tc, test_wrong_magic);
    tcase_add_test(tc, test_empty_file);
    tcase_add_test(tc, test_bad_version);
    tcase_add_test(tc, test_truncated_everywhere);
    tcase_add_test(tc, test_tensor_out_of_range);
    tcase_add_test(tc, test_misaligned_offset);
    tcase_add_test(tc, test_absurd_string_length);
    tcase_add_test(tc, test_huge_array_count);
    tcase_add_test(tc, test_huge_counts_in_header);
    tcase_add_test(tc, test_unsupported_tensor_type);
    tcase_add_test(tc, test_bad_shapes);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_bad_alignment_and_types);
    tcase_add_test(tc, test_missing_file);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
