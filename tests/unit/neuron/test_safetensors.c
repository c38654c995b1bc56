/*
 * tests/unit/neuron/test_safetensors.c — safetensors files and sharded checkpoints written
 * here: dtypes, shapes, data pointers, "__metadata__", index.json shards, and the damaged cases
 * (header length beyond the file, bad JSON, unsupported dtype, offsets out of range or not
 * matching the shape, shards missing or naming tensors they lack).
 */
#include "safetensors.h"
#include "neuron/model_fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char *path;
static char err[512];

static void setup(void)
{
    dir = fixture_tmpdir();
    path = xasprintf("%s/model.safetensors", dir);
    err[0] = '\0';
}

static void teardown(void)
{
    free(path);
    fixture_rmdir(dir);
}

static void expect_error(const char *file, const char *want)
{
    struct safetensors_file *f = NULL;
    ck_assert_int_eq(safetensors_open(file, &f, err, sizeof err), -1);
    ck_assert_ptr_null(f);
    ck_assert_msg(strncmp(err, file, strlen(file)) == 0, "error does not name %s: %s", file, err);
    ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
}

static void expect_dir_error(const char *file, const char *want)
{
    struct safetensors_set *s = NULL;
    ck_assert_int_eq(safetensors_dir_open(dir, &s, err, sizeof err), -1);
    ck_assert_ptr_null(s);
    ck_assert_msg(strncmp(err, file, strlen(file)) == 0, "error does not name %s: %s", file, err);
    ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err, want);
}

/* Writes a raw file: 8-byte length, header text, data bytes. */
static void write_raw(const char *file, uint64_t hlen, const char *header, const void *data,
                      size_t dlen)
{
    struct fixture_buf b = {0};
    fixture_le(&b, hlen, 8);
    fixture_bytes(&b, header, strlen(header));
    fixture_bytes(&b, data, dlen);
    fixture_write(file, b.p, b.len);
    free(b.p);
}

START_TEST(test_read_tensors)
{
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[4] = {0x3c00, 0xc000, 0x0000, 0x3800};
    uint16_t bf[2] = {0x3f80, 0xc020};
    float scalar = 42;
    struct fixture_st st = {0};
    fixture_st_tensor(&st, "w", "F32", "[2, 3]", w, sizeof w);
    fixture_st_tensor(&st, "h", "F16", "[4]", h, sizeof h);
    fixture_st_tensor(&st, "conv", "BF16", "[2, 1, 1]", bf, sizeof bf);
    fixture_st_tensor(&st, "s", "F32", "[]", &scalar, sizeof scalar);
    fixture_st_tensor(&st, "empty", "F32", "[0, 4]", NULL, 0);
    fixture_st_write(&st, path);

    struct safetensors_file *f;
    ck_assert_int_eq(safetensors_open(path, &f, err, sizeof err), 0);
    ck_assert_uint_eq(f->n_tensors, 5); /* __metadata__ is not a tensor */
    const struct safetensors_tensor *t = &f->tensors[0];
    ck_assert_str_eq(t->name, "w");
    ck_assert_int_eq(t->type, DTYPE_F32);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], 2);
    ck_assert_int_eq(t->shape[1], 3);
    ck_assert_uint_eq(t->nbytes, 24);
    ck_assert_mem_eq(t->data, w, 24);
    t = &f->tensors[1];
    ck_assert_int_eq(t->type, DTYPE_F16);
    ck_assert_mem_eq(t->data, h, 8);
    t = &f->tensors[2];
    ck_assert_int_eq(t->type, DTYPE_BF16);
    ck_assert_int_eq(t->ndim, 3);
    ck_assert_int_eq(t->shape[1], 1);
    ck_assert_mem_eq(t->data, bf, 4);
    t = &f->tensors[3];
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->nbytes, 4);
    ck_assert_mem_eq(t->data, &scalar, 4);
    ck_assert_uint_eq(f->tensors[4].nbytes, 0);
    safetensors_close(f);
}
END_TEST

START_TEST(test_header_beyond_file)
{
    write_raw(path, 1000, "{}", NULL, 0);
    expect_error(path, "header length 1000 runs past the end of the file (10 bytes)");
    write_raw(path, UINT64_MAX, "{}", NULL, 0);
    expect_error(path, "header length 18446744073709551615 runs past the end");
    fixture_write(path, "\x02\x00\x00", 3);
    expect_error(path, "file is truncated: 3 bytes");
    fixture_write(path, "", 0);
    expect_error(path, "file is truncated: 0 bytes");
}
END_TEST

START_TEST(test_bad_header_json)
{
    write_raw(path, 9, "{\"a\": [1,", NULL, 0);
    expect_error(path, "header is not valid JSON");
    write_raw(path, 2, "[]", NULL, 0);
    expect_error(path, "header is not a JSON object");
    const char *dup = "{\"a\": 1, \"a\": 2}";
    write_raw(path, strlen(dup), dup, NULL, 0);
    expect_error(path, "header is not valid JSON");
    const char *h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x' needs \"dtype\" (string), \"shape\" (array) and "
                       "\"data_offsets\"");
    h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x' has an invalid shape");
    h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1], \"data_offsets\": [0, 4]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x' has 5 dimensions (at most 4 supported)");
    h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x' has invalid data_offsets");
    h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
        "\"data_offsets\": [0, 4]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x' has an invalid shape");
}
END_TEST

START_TEST(test_unsupported_dtype)
{
    int64_t ids[2] = {1, 2};
    struct fixture_st st = {0};
    fixture_st_tensor(&st, "position_ids", "I64", "[2]", ids, sizeof ids);
    fixture_st_write(&st, path);
    expect_error(path, "tensor 'position_ids' has dtype I64, which is not supported "
                       "(supported: F32, F16, BF16)");
}
END_TEST

START_TEST(test_offsets)
{
    const char *h = "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x': data (bytes 0..8 of the data buffer) lies beyond the end of "
                       "the file (the buffer has 4 bytes)");
    h = "{\"x\": {\"dtype\": \"F16\", \"shape\": [3], \"data_offsets\": [0, 4]}}";
    write_raw(path, strlen(h), h, "abcd", 4);
    expect_error(path, "tensor 'x': data_offsets span 4 bytes but its shape needs 6");
}
END_TEST

START_TEST(test_single_file_dir)
{
    float w[2] = {1, 2};
    struct fixture_st st = {0};
    fixture_st_tensor(&st, "b", "F32", "[2]", w, sizeof w);
    fixture_st_tensor(&st, "a", "F32", "[1]", w, 4);
    fixture_st_write(&st, path);
    struct safetensors_set *s;
    ck_assert_int_eq(safetensors_dir_open(dir, &s, err, sizeof err), 0);
    ck_assert_uint_eq(s->n_files, 1);
    ck_assert_uint_eq(s->n_tensors, 2);
    ck_assert_str_eq(s->tensors[0]->name, "a"); /* sorted by name */
    ck_assert_str_eq(s->tensors[1]->name, "b");
    safetensors_set_close(s);
}
END_TEST

START_TEST(test_no_weights)
{
    expect_dir_error(dir, "no model.safetensors or model.safetensors.index.json");
}
END_TEST

static void write_shards(void)
{
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    char *p1 = xasprintf("%s/model-00001-of-00002.safetensors", dir);
    char *p2 = xasprintf("%s/model-00002-of-00002.safetensors", dir);
    struct fixture_st st = {0};
    fixture_st_tensor(&st, "layer.0.w", "F32", "[2, 2]", a, sizeof a);
    fixture_st_write(&st, p1);
    fixture_st_tensor(&st, "layer.1.w", "F32", "[2]", b, sizeof b);
    fixture_st_tensor(&st, "extra", "F32", "[1]", b, 4);
    fixture_st_write(&st, p2);
    free(p1);
    free(p2);
}

static char *index_path(void)
{
    return xasprintf("%s/model.safetensors.index.json", dir);
}

START_TEST(test_sharded)
{
    write_shards();
    char *ip = index_path();
    fixture_write_str(ip, "{\"metadata\": {\"total_size\": 24}, \"weight_map\": {"
                          "\"layer.0.w\": \"model-00001-of-00002.safetensors\","
                          "\"layer.1.w\": \"model-00002-of-00002.safetensors\"}}");
    struct safetensors_set *s;
    ck_assert_int_eq(safetensors_dir_open(dir, &s, err, sizeof err), 0);
    ck_assert_uint_eq(s->n_files, 2);
    ck_assert_uint_eq(s->n_tensors, 3);
    ck_assert_str_eq(s->tensors[0]->name, "extra");
    ck_assert_str_eq(s->tensors[2]->name, "layer.1.w");
    float want[2] = {5, 6};
    ck_assert_mem_eq(s->tensors[2]->data, want, sizeof want);
    safetensors_set_close(s);
    free(ip);
}
END_TEST

START_TEST(test_shard_errors)
{
    write_shards();
    char *ip = index_path();
    char *p1 = xasprintf("%s/model-00001-of-00002.safetensors", dir);
    char *p3 = xasprintf("%s/model-00003-of-00003.safetensors", dir);

    /* the index names a tensor its shard lacks */
    fixture_write_str(ip,
                      "{\"weight_map\": {\"layer.1.w\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_error(p1, "tensor 'layer.1.w' listed in model.safetensors.index.json is missing "
                         "from this shard");
    /* the index names a shard that is not there */
    fixture_write_str(ip,
                      "{\"weight_map\": {\"layer.1.w\": \"model-00003-of-00003.safetensors\"}}");
    expect_dir_error(p3, "cannot open: No such file or directory");
    /* shard names must stay inside the directory */
    fixture_write_str(ip, "{\"weight_map\": {\"layer.1.w\": \"../model.safetensors\"}}");
    expect_dir_error(ip, "tensor 'layer.1.w' names an invalid shard file");
    fixture_write_str(ip, "{\"weight_map\": {}}");
    expect_dir_error(ip, "missing or empty \"weight_map\" object");
    fixture_write_str(ip, "{\"weight_map\": ");
    expect_dir_error(ip, "not valid JSON");
    /* the same tensor in two shards */
    float x = 1;
    struct fixture_st st = {0};
    fixture_st_tensor(&st, "layer.0.w", "F32", "[1]", &x, 4);
    fixture_st_write(&st, p3);
    fixture_write_str(ip, "{\"weight_map\": {\"layer.0.w\": \"model-00001-of-00002.safetensors\","
                          "\"extra\": \"model-00003-of-00003.safetensors\"}}");
    struct safetensors_set *s = NULL;
    ck_assert_int_eq(safetensors_dir_open(dir, &s, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "tensor 'layer.0.w' is also present in another shard"));
    /* a damaged shard is reported under its own name */
    write_raw(p1, 500, "{}", NULL, 0);
    fixture_write_str(ip,
                      "{\"weight_map\": {\"layer.0.w\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_error(p1, "header length 500 runs past the end");
    free(ip);
    free(p1);
    free(p3);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_read_tensors);
    tcase_add_test(tc, test_header_beyond_file);
    tcase_add_test(tc, test_bad_header_json);
    tcase_add_test(tc, test_unsupported_dtype);
    tcase_add_test(tc, test_offsets);
    tcase_add_test(tc, test_single_file_dir);
    tcase_add_test(tc, test_no_weights);
    tcase_add_test(tc, test_sharded);
    tcase_add_test(tc, test_shard_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
