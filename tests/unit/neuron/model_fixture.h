/*
 * tests/unit/neuron/model_fixture.h — builders for the model files the loader tests write:
 * a scratch directory, a little-endian byte buffer, a GGUF writer (any metadata type, any
 * tensor, custom alignment, deliberately broken fields), a safetensors writer, and a runner for
 * the Python reference helper (tests/unit/neuron/gguf_reference.py).
 *
 * Header-only (static inline) because each test file is its own executable. Everything aborts
 * the test on I/O failure: these are fixtures, not code under test.
 */
#ifndef CORTEX_TESTS_MODEL_FIXTURE_H
#define CORTEX_TESTS_MODEL_FIXTURE_H

#include "model_file.h"
#include "xalloc.h"

#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- scratch files ----------------------------------------------------------------------- */

/* Creates a fresh directory under /tmp; the caller frees the path and calls fixture_rmdir. */
static inline char *fixture_tmpdir(void)
{
    char *d = xstrdup("/tmp/cortex-model-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static inline int fixture_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void fixture_rmdir(char *dir)
{
    if (dir)
        nftw(dir, fixture_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static inline void fixture_write(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static inline void fixture_write_str(const char *path, const char *text)
{
    fixture_write(path, text, strlen(text));
}

static inline void *fixture_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    void *buf = xmalloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* ---- byte buffer ------------------------------------------------------------------------- */

struct fixture_buf {
    uint8_t *p;
    size_t len, cap;
};

static inline void fixture_bytes(struct fixture_buf *b, const void *src, size_t n)
{
    b->p = xgrow(b->p, &b->cap, b->len + n + 1, 1);
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static inline void fixture_le(struct fixture_buf *b, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    fixture_bytes(b, tmp, (size_t)n);
}

static inline void fixture_pad(struct fixture_buf *b, size_t align)
{
    while (b->len % align)
        fixture_bytes(b, "", 1); /* the string's terminating zero */
}

/* ---- GGUF writer ------------------------------------------------------------------------- */

enum {
    FX_U8 = 0,
    FX_I8 = 1,
    FX_U16 = 2,
    FX_I16 = 3,
    FX_U32 = 4,
    FX_I32 = 5,
    FX_F32 = 6,
    FX_BOOL = 7,
    FX_STR = 8,
    FX_ARR = 9,
    FX_U64 = 10,
    FX_I64 = 11,
    FX_F64 = 12,
};

/* ggml type ids */
enum {
    FX_GGML_F32 = 0,
    FX_GGML_F16 = 1,
    FX_GGML_Q4_0 = 2,
    FX_GGML_Q4_1 = 3,
    FX_GGML_Q5_0 = 6,
    FX_GGML_Q8_0 = 8,
    FX_GGML_Q4_K = 12,
    FX_GGML_Q5_K = 13,
    FX_GGML_Q6_K = 14,
    FX_GGML_BF16 = 30
};

struct fixture_gguf {
    uint32_t version;
    uint64_t alignment; /* used to place tensor data; write general.alignment yourself */
    struct fixture_buf kv, info, data;
    uint64_t n_kv, n_tensors;
};

static inline void fixture_gguf_init(struct fixture_gguf *g)
{
    memset(g, 0, sizeof *g);
    g->version = 3;
    g->alignment = 32;
}

static inline void fixture_gguf_free(struct fixture_gguf *g)
{
    free(g->kv.p);
    free(g->info.p);
    free(g->data.p);
}

static inline void fixture_str(struct fixture_buf *b, const char *s)
{
    fixture_le(b, strlen(s), 8);
    fixture_bytes(b, s, strlen(s));
}

/* Starts a key/value: writes the key and the type; the caller writes the value. */
static inline struct fixture_buf *fixture_gguf_key(struct fixture_gguf *g, const char *key,
                                                   uint32_t type)
{
    g->n_kv++;
    fixture_str(&g->kv, key);
    fixture_le(&g->kv, type, 4);
    return &g->kv;
}

static inline void fixture_gguf_u32(struct fixture_gguf *g, const char *key, uint32_t v)
{
    fixture_le(fixture_gguf_key(g, key, FX_U32), v, 4);
}

static inline void fixture_gguf_f32(struct fixture_gguf *g, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    fixture_le(fixture_gguf_key(g, key, FX_F32), u, 4);
}

static inline void fixture_gguf_str(struct fixture_gguf *g, const char *key, const char *v)
{
    fixture_str(fixture_gguf_key(g, key, FX_STR), v);
}

static inline void fixture_gguf_strs(struct fixture_gguf *g, const char *key, const char *const *v,
                                     size_t n)
{
    struct fixture_buf *b = fixture_gguf_key(g, key, FX_ARR);
    fixture_le(b, FX_STR, 4);
    fixture_le(b, n, 8);
    for (size_t i = 0; i < n; i++)
        fixture_str(b, v[i]);
}

/* Appends a tensor: its info, and its bytes at the next aligned data offset. */
static inline void fixture_gguf_tensor(struct fixture_gguf *g, const char *name, uint32_t type,
                                       int ndim, const uint64_t *ne, const void *data,
                                       size_t nbytes)
{
    fixture_pad(&g->data, g->alignment);
    uint64_t offset = g->data.len;
    fixture_bytes(&g->data, data, nbytes);
    g->n_tensors++;
    fixture_str(&g->info, name);
    fixture_le(&g->info, (uint64_t)ndim, 4);
    for (int i = 0; i < ndim; i++)
        fixture_le(&g->info, ne[i], 8);
    fixture_le(&g->info, type, 4);
    fixture_le(&g->info, offset, 8);
}

/* A tensor info with a chosen offset and no data (for out-of-range tests). */
static inline void fixture_gguf_tensor_at(struct fixture_gguf *g, const char *name, uint32_t type,
                                          int ndim, const uint64_t *ne, uint64_t offset)
{
    g->n_tensors++;
    fixture_str(&g->info, name);
    fixture_le(&g->info, (uint64_t)ndim, 4);
    for (int i = 0; i < ndim; i++)
        fixture_le(&g->info, ne[i], 8);
    fixture_le(&g->info, type, 4);
    fixture_le(&g->info, offset, 8);
}

/* Serialises the whole file into out (the caller frees out->p). */
static inline void fixture_gguf_build(const struct fixture_gguf *g, struct fixture_buf *out)
{
    memset(out, 0, sizeof *out);
    fixture_bytes(out, "GGUF", 4);
    fixture_le(out, g->version, 4);
    fixture_le(out, g->n_tensors, 8);
    fixture_le(out, g->n_kv, 8);
    fixture_bytes(out, g->kv.p, g->kv.len);
    fixture_bytes(out, g->info.p, g->info.len);
    if (g->data.len) {
        fixture_pad(out, g->alignment);
        fixture_bytes(out, g->data.p, g->data.len);
    }
}

static inline void fixture_gguf_write(const struct fixture_gguf *g, const char *path)
{
    struct fixture_buf out;
    fixture_gguf_build(g, &out);
    fixture_write(path, out.p, out.len);
    free(out.p);
}

/* ---- safetensors writer ------------------------------------------------------------------ */

struct fixture_st {
    struct fixture_buf header; /* JSON object text without the closing brace */
    struct fixture_buf data;
};

/* Adds one tensor entry; shape_json is e.g. "[2, 3]". */
static inline void fixture_st_tensor(struct fixture_st *s, const char *name, const char *dtype,
                                     const char *shape_json, const void *data, size_t nbytes)
{
    char *entry = xasprintf("%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, "
                            "\"data_offsets\": [%zu, %zu]}",
                            s->header.len ? ", " : "{", name, dtype, shape_json, s->data.len,
                            s->data.len + nbytes);
    fixture_bytes(&s->header, entry, strlen(entry));
    free(entry);
    fixture_bytes(&s->data, data, nbytes);
}

/* Writes the file: 8-byte header length, header (padded with spaces to 8 bytes), data. */
static inline void fixture_st_write(struct fixture_st *s, const char *path)
{
    struct fixture_buf out = {0};
    const char *meta = s->header.len ? ", \"__metadata__\": {\"format\": \"pt\"}}"
                                     : "{\"__metadata__\": {\"format\": \"pt\"}}";
    struct fixture_buf h = {0};
    fixture_bytes(&h, s->header.p, s->header.len);
    fixture_bytes(&h, meta, strlen(meta));
    while (h.len % 8)
        fixture_bytes(&h, " ", 1);
    fixture_le(&out, h.len, 8);
    fixture_bytes(&out, h.p, h.len);
    fixture_bytes(&out, s->data.p, s->data.len);
    fixture_write(path, out.p, out.len);
    free(out.p);
    free(h.p);
    free(s->header.p);
    free(s->data.p);
    memset(s, 0, sizeof *s);
}

/* ---- Python reference -------------------------------------------------------------------- */

/* Path of the Python helper, from CORTEX_SOURCE_DIR (set by ctest). Caller frees. */
static inline char *fixture_reference_script(void)
{
    const char *src = getenv("CORTEX_SOURCE_DIR");
    return xasprintf("%s/tests/unit/neuron/gguf_reference.py", src ? src : ".");
}

/* Runs python3 with the helper and the given arguments (NULL-terminated); returns its status. */
static inline int fixture_run_reference(const char *const *args)
{
    char *script = fixture_reference_script();
    const char *argv[64] = {"python3", script};
    int n = 2;
    for (int i = 0; args[i]; i++) {
        if (n == 63)
            abort(); /* a fixture bug; also called outside tests, so no ck_assert here */
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    free(script);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Whether python3 with the gguf package can run the helper (its "check" command). */
static inline int fixture_reference_available(void)
{
    const char *args[] = {"check", NULL};
    return fixture_run_reference(args) == 0;
}

/* max |got - want| / max |want| over one row of logits */
static inline double fixture_rel_err(const float *got, const float *want, int64_t n)
{
    double diff = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)got[i] - want[i]));
        mag = fmax(mag, fabs((double)want[i]));
    }
    return diff / (mag > 0.0 ? mag : 1.0);
}

/* Bytes of a CPU sequence's state as the layout says (model.h): per attention layer K and V
 * rows of n_kv_heads * head_dim floats for each of positions; per GDN layer (kernel - 1) conv
 * rows and the [v_heads][k_dim][v_dim] recurrent state. */
static inline uint64_t fixture_state_bytes(const struct model_config *c, int64_t positions)
{
    uint64_t bytes = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (c->arch == MODEL_ARCH_QWEN3_5 && c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION) {
            uint64_t conv_dim = 2 * (uint64_t)c->lin_k_heads * (uint64_t)c->lin_k_dim +
                                (uint64_t)c->lin_v_heads * (uint64_t)c->lin_v_dim;
            bytes += (uint64_t)(c->lin_conv_kernel - 1) * conv_dim * 4;
            bytes += (uint64_t)c->lin_v_heads * (uint64_t)c->lin_k_dim * (uint64_t)c->lin_v_dim * 4;
        } else {
            bytes += 2 * (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim * 4 * (uint64_t)positions;
        }
    }
    return bytes;
}

#endif
