/*
 * neuron/gguf.c — GGUF v2/v3 reader: header, metadata (into jansson), tensor infos, data bounds.
 *
 * Layout (all little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count, the
 * metadata key/values, the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64
 * offset relative to the data section), padding to the alignment, the data section.
 *
 * Every read goes through struct gguf_reader, which refuses to step past the end of the mapping
 * and turns that into a "truncated" message. Counts are bounded by the bytes left divided by the
 * smallest encoding of one element, so a corrupt count can neither overrun the file nor make us
 * allocate more than the file could describe.
 */
#include "gguf.h"

#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_ARRAY_DEPTH 3

enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* Smallest encoding of one value of each type, used to bound element counts. */
static const size_t gguf_value_min_bytes[GGUF_TYPE_COUNT] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,   [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4, [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,   [GGUF_TYPE_STRING] = 8,
        [GGUF_TYPE_ARRAY] = 12,  [GGUF_TYPE_UINT64] = 8, [GGUF_TYPE_INT64] = 8,
        [GGUF_TYPE_FLOAT64] = 8,
};

/* ggml type ids (ggml.h); gaps are ids ggml retired. */
static const char *const gguf_ggml_names[] = {
        [0] = "f32",     [1] = "f16",      [2] = "q4_0",   [3] = "q4_1",    [6] = "q5_0",
        [7] = "q5_1",    [8] = "q8_0",     [9] = "q8_1",   [10] = "q2_k",   [11] = "q3_k",
        [12] = "q4_k",   [13] = "q5_k",    [14] = "q6_k",  [15] = "q8_k",   [16] = "iq2_xxs",
        [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s",
        [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",    [25] = "i16",    [26] = "i32",
        [27] = "i64",    [28] = "f64",     [29] = "iq1_m", [30] = "bf16",   [34] = "tq1_0",
        [35] = "tq2_0",  [39] = "mxfp4",
};

const char *gguf_ggml_type_name(uint32_t ggml_type)
{
    if (ggml_type < sizeof gguf_ggml_names / sizeof gguf_ggml_names[0] &&
        gguf_ggml_names[ggml_type])
        return gguf_ggml_names[ggml_type];
    return "unknown";
}

static bool gguf_ggml_to_dtype(uint32_t ggml_type, enum dtype *out)
{
    switch (ggml_type) {
    case 0:
        *out = DTYPE_F32;
        return true;
    case 1:
        *out = DTYPE_F16;
        return true;
    case 2:
        *out = DTYPE_Q4_0;
        return true;
    case 3:
        *out = DTYPE_Q4_1;
        return true;
    case 8:
        *out = DTYPE_Q8_0;
        return true;
    case 12:
        *out = DTYPE_Q4_K;
        return true;
    case 13:
        *out = DTYPE_Q5_K;
        return true;
    case 14:
        *out = DTYPE_Q6_K;
        return true;
    case 30:
        *out = DTYPE_BF16;
        return true;
    default:
        return false;
    }
}

int gguf_has_magic(const void *buf, size_t size)
{
    return size >= 4 && memcmp(buf, "GGUF", 4) == 0;
}

/* ---- bounded reader ---------------------------------------------------------------------- */

struct gguf_reader {
    const char *path;
    const uint8_t *base;
    size_t size;
    size_t pos;
    char *err;
    size_t errlen;
    char what[200]; /* what is being read, for truncation messages */
};

static void gguf_fail(struct gguf_reader *r, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void gguf_fail(struct gguf_reader *r, const char *fmt, ...)
{
    int n = snprintf(r->err, r->errlen, "%s: ", r->path);
    if (n < 0 || (size_t)n >= r->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static int gguf_need(struct gguf_reader *r, size_t n)
{
    if (n <= r->size - r->pos)
        return 0;
    gguf_fail(r, "file is truncated: %s needs %zu bytes at offset %zu, but the file has %zu",
              r->what, n, r->pos, r->size);
    return -1;
}

static uint64_t gguf_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int gguf_read_u32(struct gguf_reader *r, uint32_t *v)
{
    if (gguf_need(r, 4) < 0)
        return -1;
    *v = (uint32_t)gguf_le(r->base + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int gguf_read_u64(struct gguf_reader *r, uint64_t *v)
{
    if (gguf_need(r, 8) < 0)
        return -1;
    *v = gguf_le(r->base + r->pos, 8);
    r->pos += 8;
    return 0;
}

/* Reads a GGUF string (u64 length + bytes); *s points into the mapping. */
static int gguf_read_str(struct gguf_reader *r, const char **s, size_t *len)
{
    uint64_t n;
    size_t at = r->pos;
    if (gguf_read_u64(r, &n) < 0)
        return -1;
    if (n > r->size - r->pos) {
        gguf_fail(r,
                  "%s: string of %llu bytes at offset %zu runs past the end of the file "
                  "(%zu bytes)",
                  r->what, (unsigned long long)n, at, r->size);
        return -1;
    }
    *s = (const char *)r->base + r->pos;
    *len = (size_t)n;
    r->pos += (size_t)n;
    return 0;
}

/* ---- metadata values --------------------------------------------------------------------- */

static json_t *gguf_json_string(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    /* Vocabularies may hold byte sequences that are not UTF-8; keep the bytes. */
    return j ? j : json_stringn_nocheck(s, len);
}

static json_t *gguf_read_value(struct gguf_reader *r, uint32_t type, int depth);

static json_t *gguf_read_array(struct gguf_reader *r, int depth)
{
    uint32_t elem;
    uint64_t count;
    size_t at = r->pos;
    if (gguf_read_u32(r, &elem) < 0 || gguf_read_u64(r, &count) < 0)
        return NULL;
    if (elem >= GGUF_TYPE_COUNT) {
        gguf_fail(r, "%s: array at offset %zu has unknown element type %u", r->what, at, elem);
        return NULL;
    }
    if (elem == GGUF_TYPE_ARRAY && depth + 1 >= GGUF_MAX_ARRAY_DEPTH) {
        gguf_fail(r, "%s: arrays nested deeper than %d levels", r->what, GGUF_MAX_ARRAY_DEPTH);
        return NULL;
    }
    if (count > (r->size - r->pos) / gguf_value_min_bytes[elem]) {
        gguf_fail(r,
                  "%s: array of %llu elements at offset %zu runs past the end of the file "
                  "(%zu bytes)",
                  r->what, (unsigned long long)count, at, r->size);
        return NULL;
    }
    json_t *arr = json_array();
    for (uint64_t i = 0; i < count; i++) {
        json_t *v = gguf_read_value(r, elem, depth + 1);
        if (!v) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, v);
    }
    return arr;
}

/* Returns a new JSON value, or NULL with the error set. */
static json_t *gguf_read_value(struct gguf_reader *r, uint32_t type, int depth)
{
    if (type >= GGUF_TYPE_COUNT) {
        gguf_fail(r, "%s: unknown value type %u at offset %zu", r->what, type, r->pos);
        return NULL;
    }
    if (type == GGUF_TYPE_ARRAY)
        return gguf_read_array(r, depth);
    if (type == GGUF_TYPE_STRING) {
        const char *s;
        size_t len;
        if (gguf_read_str(r, &s, &len) < 0)
            return NULL;
        return gguf_json_string(s, len);
    }
    size_t n = gguf_value_min_bytes[type];
    if (gguf_need(r, n) < 0)
        return NULL;
    uint64_t u = gguf_le(r->base + r->pos, (int)n);
    r->pos += n;
    switch ((enum gguf_value_type)type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
        return json_integer((json_int_t)u);
    case GGUF_TYPE_INT8:
        return json_integer((int8_t)u);
    case GGUF_TYPE_INT16:
        return json_integer((int16_t)u);
    case GGUF_TYPE_INT32:
        return json_integer((int32_t)u);
    case GGUF_TYPE_UINT64:
        return u > INT64_MAX ? json_real((double)u) : json_integer((json_int_t)u);
    case GGUF_TYPE_INT64:
        return json_integer((json_int_t)(int64_t)u);
    case GGUF_TYPE_BOOL:
        return json_boolean(u != 0);
    case GGUF_TYPE_FLOAT32: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, sizeof f);
        return json_real(f);
    }
    case GGUF_TYPE_FLOAT64: {
        double d;
        memcpy(&d, &u, sizeof d);
        return json_real(d);
    }
    default:
        break;
    }
    gguf_fail(r, "%s: unknown value type %u", r->what, type);
    return NULL;
}

static int gguf_read_metadata(struct gguf_reader *r, struct gguf_file *g, uint64_t n_kv)
{
    for (uint64_t i = 0; i < n_kv; i++) {
        const char *key;
        size_t klen;
        size_t at = r->pos;
        snprintf(r->what, sizeof r->what, "metadata entry %llu", (unsigned long long)i);
        if (gguf_read_str(r, &key, &klen) < 0)
            return -1;
        if (klen == 0 || memchr(key, '\0', klen)) {
            gguf_fail(r, "metadata entry %llu at offset %zu has an empty or malformed key",
                      (unsigned long long)i, at);
            return -1;
        }
        json_t *check = json_stringn(key, klen); /* object keys must be UTF-8 */
        if (!check) {
            gguf_fail(r, "metadata entry %llu at offset %zu has a key that is not UTF-8",
                      (unsigned long long)i, at);
            return -1;
        }
        json_decref(check);
        char *k = xstrndup(key, klen);
        snprintf(r->what, sizeof r->what, "metadata key '%s'", k);
        if (json_object_get(g->meta, k)) {
            gguf_fail(r, "duplicate metadata key '%s'", k);
            free(k);
            return -1;
        }
        uint32_t type;
        json_t *v = NULL;
        if (gguf_read_u32(r, &type) == 0)
            v = gguf_read_value(r, type, 0);
        if (!v) {
            free(k);
            return -1;
        }
        json_object_set_new(g->meta, k, v);
        free(k);
    }
    return 0;
}

static int gguf_read_alignment(struct gguf_reader *r, struct gguf_file *g)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    json_t *a = json_object_get(g->meta, "general.alignment");
    if (!a)
        return 0;
    if (!json_is_integer(a) || json_integer_value(a) <= 0 || json_integer_value(a) > UINT32_MAX ||
        (json_integer_value(a) & (json_integer_value(a) - 1)) != 0) {
        gguf_fail(r, "general.alignment must be a power of two below 2^32");
        return -1;
    }
    g->alignment = (uint64_t)json_integer_value(a);
    return 0;
}

/* ---- tensor infos ------------------------------------------------------------------------ */

static int gguf_read_tensor_info(struct gguf_reader *r, struct gguf_tensor *t, uint64_t index)
{
    const char *name;
    size_t nlen;
    size_t at = r->pos;
    snprintf(r->what, sizeof r->what, "tensor info %llu", (unsigned long long)index);
    if (gguf_read_str(r, &name, &nlen) < 0)
        return -1;
    if (nlen == 0 || memchr(name, '\0', nlen)) {
        gguf_fail(r, "tensor info %llu at offset %zu has an empty or malformed name",
                  (unsigned long long)index, at);
        return -1;
    }
    t->name = xstrndup(name, nlen);
    snprintf(r->what, sizeof r->what, "tensor '%s'", t->name);

    uint32_t ndim;
    if (gguf_read_u32(r, &ndim) < 0)
        return -1;
    if (ndim == 0 || ndim > GGUF_MAX_DIMS) {
        gguf_fail(r, "tensor '%s' has %u dimensions (1 to %d supported)", t->name, ndim,
                  GGUF_MAX_DIMS);
        return -1;
    }
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        if (gguf_read_u64(r, &ne[d]) < 0)
            return -1;
        if (ne[d] > INT64_MAX || __builtin_mul_overflow(nelem, ne[d], &nelem) ||
            nelem > INT64_MAX) {
            gguf_fail(r, "tensor '%s' has an element count that overflows", t->name);
            return -1;
        }
    }
    t->ndim = (int)ndim;
    for (uint32_t d = 0; d < ndim; d++)
        t->shape[d] = (int64_t)ne[ndim - 1 - d];

    if (gguf_read_u32(r, &t->ggml_type) < 0)
        return -1;
    if (!gguf_ggml_to_dtype(t->ggml_type, &t->type)) {
        gguf_fail(r,
                  "tensor '%s' has type %s (ggml type %u), which is not supported "
                  "(supported: f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k)",
                  t->name, gguf_ggml_type_name(t->ggml_type), t->ggml_type);
        return -1;
    }
    size_t bs = dtype_block_elems(t->type);
    if (ne[0] % bs != 0) {
        gguf_fail(r,
                  "tensor '%s': innermost dimension %llu is not a multiple of the %s block "
                  "size %zu",
                  t->name, (unsigned long long)ne[0], dtype_name(t->type), bs);
        return -1;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(nelem / bs, (uint64_t)dtype_block_bytes(t->type), &nbytes) ||
        nbytes > SIZE_MAX) {
        gguf_fail(r, "tensor '%s' is too large", t->name);
        return -1;
    }
    t->nbytes = (size_t)nbytes;
    return gguf_read_u64(r, &t->offset); /* relative for now; made absolute by the caller */
}

static int gguf_place_tensors(struct gguf_reader *r, struct gguf_file *g)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        uint64_t begin, end;
        if (t->offset % g->alignment != 0) {
            gguf_fail(r, "tensor '%s': data offset %llu is not a multiple of the alignment %llu",
                      t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
            return -1;
        }
        if (__builtin_add_overflow(g->data_offset, t->offset, &begin) ||
            __builtin_add_overflow(begin, (uint64_t)t->nbytes, &end) || end > g->size) {
            gguf_fail(r,
                      "tensor '%s': data (%zu bytes at data offset %llu) lies beyond the end "
                      "of the file (%zu bytes)",
                      t->name, t->nbytes, (unsigned long long)t->offset, g->size);
            return -1;
        }
        t->offset = begin;
        t->data = (const uint8_t *)g->map + begin;
    }
    return 0;
}

static int gguf_cmp_name(const void *a, const void *b)
{
    const struct gguf_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int gguf_check_unique(struct gguf_reader *r, struct gguf_file *g)
{
    if (g->n_tensors < 2)
        return 0;
    struct gguf_tensor **sorted = xmalloc(g->n_tensors * sizeof *sorted);
    for (size_t i = 0; i < g->n_tensors; i++)
        sorted[i] = &g->tensors[i];
    qsort(sorted, g->n_tensors, sizeof *sorted, gguf_cmp_name);
    int rc = 0;
    for (size_t i = 1; i < g->n_tensors; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            gguf_fail(r, "duplicate tensor name '%s'", sorted[i]->name);
            rc = -1;
            break;
        }
    }
    free(sorted);
    return rc;
}

/* ---- open / close ------------------------------------------------------------------------ */

static int gguf_parse(struct gguf_reader *r, struct gguf_file *g)
{
    snprintf(r->what, sizeof r->what, "the header");
    if (r->size < 4 || !gguf_has_magic(r->base, r->size)) {
        char shown[40] = "";
        for (size_t i = 0; i < 4 && i < r->size; i++)
            snprintf(shown + strlen(shown), sizeof shown - strlen(shown), "%02x", r->base[i]);
        gguf_fail(r, "not a GGUF file (starts with bytes '%s', expected 'GGUF')", shown);
        return -1;
    }
    r->pos = 4;
    if (gguf_read_u32(r, &g->version) < 0)
        return -1;
    if (g->version != 2 && g->version != 3) {
        uint32_t swapped = __builtin_bswap32(g->version);
        if (swapped == 2 || swapped == 3)
            gguf_fail(r, "big-endian GGUF files are not supported");
        else
            gguf_fail(r, "unsupported GGUF version %u (supported: 2, 3)", g->version);
        return -1;
    }
    uint64_t n_tensors, n_kv;
    if (gguf_read_u64(r, &n_tensors) < 0 || gguf_read_u64(r, &n_kv) < 0)
        return -1;
    /* a metadata entry takes at least 13 bytes, a tensor info at least 24 */
    if (n_kv > (r->size - r->pos) / 13) {
        gguf_fail(r, "metadata count %llu is larger than the file could hold",
                  (unsigned long long)n_kv);
        return -1;
    }
    if (n_tensors > (r->size - r->pos) / 24) {
        gguf_fail(r, "tensor count %llu is larger than the file could hold",
                  (unsigned long long)n_tensors);
        return -1;
    }
    if (gguf_read_metadata(r, g, n_kv) < 0 || gguf_read_alignment(r, g) < 0)
        return -1;

    g->tensors = xcalloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (size_t)i + 1; /* so that close frees the name read so far */
        if (gguf_read_tensor_info(r, &g->tensors[i], i) < 0)
            return -1;
    }
    g->n_tensors = (size_t)n_tensors;
    /* the data section starts at the next multiple of the alignment */
    uint64_t pos = r->pos;
    g->data_offset = (pos + g->alignment - 1) / g->alignment * g->alignment;
    if (gguf_check_unique(r, g) < 0 || gguf_place_tensors(r, g) < 0)
        return -1;
    return 0;
}

int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen)
{
    struct gguf_file *g = xcalloc(1, sizeof *g);
    g->path = xstrdup(path);
    g->meta = json_object();
    struct gguf_reader r = {.path = path, .err = err, .errlen = errlen, .what = "the header"};

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gguf_fail(&r, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        gguf_fail(&r, "not a regular file");
        close(fd);
        goto fail;
    }
    if (st.st_size == 0) {
        gguf_fail(&r, "file is empty");
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        gguf_fail(&r, "cannot map: %s", strerror(map_errno));
        goto fail;
    }
    g->map = map;
    g->size = (size_t)st.st_size;
    r.base = map;
    r.size = g->size;
    if (gguf_parse(&r, g) < 0)
        goto fail;
    *out = g;
    return 0;
fail:
    gguf_close(g);
    return -1;
}

void gguf_close(struct gguf_file *g)
{
    if (!g)
        return;
    if (g->map)
        munmap((void *)g->map, g->size);
    for (size_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->tensors);
    json_decref(g->meta);
    free(g->path);
    free(g);
}
