/*
 * neuron/safetensors.c — safetensors files and sharded Hugging Face checkpoints.
 *
 * The JSON header is parsed with jansson straight from the mapping (json_loadb, no copy of the
 * data). Every number taken from the header is checked before it is used as a size or an
 * offset: shapes multiply without overflow, offsets stay inside the byte buffer, and the byte
 * count of each tensor equals its element count times the element size.
 */
#include "safetensors.h"

#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format's own limit on the header size; it keeps a corrupt length from costing memory. */
#define SAFETENSORS_MAX_HEADER (100u * 1024 * 1024)

static void st_fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void st_fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static bool st_dtype(const char *name, enum dtype *out)
{
    if (strcmp(name, "F32") == 0)
        *out = DTYPE_F32;
    else if (strcmp(name, "F16") == 0)
        *out = DTYPE_F16;
    else if (strcmp(name, "BF16") == 0)
        *out = DTYPE_BF16;
    else
        return false;
    return true;
}

/* A JSON integer that is >= 0; false for anything else. */
static bool st_uint(const json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

/* Validates one header entry and fills t (t->name is set by the caller). */
static int st_parse_entry(struct safetensors_file *f, struct safetensors_tensor *t, json_t *v,
                          const uint8_t *buf, uint64_t buflen, char *err, size_t errlen)
{
    const char *name = t->name;
    if (!json_is_object(v)) {
        st_fail(err, errlen, f->path, "header entry '%s' is not an object", name);
        return -1;
    }
    json_t *jd = json_object_get(v, "dtype");
    json_t *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
        json_array_size(jo) != 2) {
        st_fail(err, errlen, f->path,
                "tensor '%s' needs \"dtype\" (string), \"shape\" (array) and "
                "\"data_offsets\" ([begin, end])",
                name);
        return -1;
    }
    if (!st_dtype(json_string_value(jd), &t->type)) {
        st_fail(err, errlen, f->path,
                "tensor '%s' has dtype %s, which is not supported (supported: F32, F16, BF16)",
                name, json_string_value(jd));
        return -1;
    }
    if (json_array_size(js) > SAFETENSORS_MAX_DIMS) {
        st_fail(err, errlen, f->path, "tensor '%s' has %zu dimensions (at most %d supported)", name,
                json_array_size(js), SAFETENSORS_MAX_DIMS);
        return -1;
    }
    uint64_t nelem = 1;
    t->ndim = (int)json_array_size(js);
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim;
        if (!st_uint(json_array_get(js, (size_t)d), &dim) ||
            __builtin_mul_overflow(nelem, dim, &nelem) || nelem > INT64_MAX) {
            st_fail(err, errlen, f->path, "tensor '%s' has an invalid shape", name);
            return -1;
        }
        t->shape[d] = (int64_t)dim;
    }
    uint64_t begin, end, nbytes;
    if (!st_uint(json_array_get(jo, 0), &begin) || !st_uint(json_array_get(jo, 1), &end) ||
        end < begin) {
        st_fail(err, errlen, f->path, "tensor '%s' has invalid data_offsets", name);
        return -1;
    }
    if (end > buflen) {
        st_fail(err, errlen, f->path,
                "tensor '%s': data (bytes %llu..%llu of the data buffer) lies beyond the end "
                "of the file (the buffer has %llu bytes)",
                name, (unsigned long long)begin, (unsigned long long)end,
                (unsigned long long)buflen);
        return -1;
    }
    if (__builtin_mul_overflow(nelem, (uint64_t)dtype_block_bytes(t->type), &nbytes) ||
        nbytes != end - begin) {
        st_fail(err, errlen, f->path,
                "tensor '%s': data_offsets span %llu bytes but its shape needs %llu", name,
                (unsigned long long)(end - begin), (unsigned long long)nbytes);
        return -1;
    }
    t->nbytes = (size_t)nbytes;
    t->data = buf + begin;
    return 0;
}

static int st_parse(struct safetensors_file *f, char *err, size_t errlen)
{
    const uint8_t *base = f->map;
    if (f->size < 8) {
        st_fail(err, errlen, f->path,
                "file is truncated: %zu bytes, too short for the 8-byte header length", f->size);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | base[i];
    if (hlen > f->size - 8) {
        st_fail(err, errlen, f->path,
                "header length %llu runs past the end of the file (%zu bytes)",
                (unsigned long long)hlen, f->size);
        return -1;
    }
    if (hlen > SAFETENSORS_MAX_HEADER) {
        st_fail(err, errlen, f->path, "header length %llu is above the %u-byte limit",
                (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st_fail(err, errlen, f->path, "header is not valid JSON: %s (at byte %d)", jerr.text,
                jerr.position);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        st_fail(err, errlen, f->path, "header is not a JSON object");
        goto out;
    }
    const uint8_t *buf = base + 8 + hlen;
    uint64_t buflen = f->size - 8 - hlen;
    f->tensors = xcalloc(json_object_size(root) + 1, sizeof *f->tensors);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        struct safetensors_tensor *t = &f->tensors[f->n_tensors++];
        t->name = xstrdup(key);
        if (st_parse_entry(f, t, v, buf, buflen, err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int safetensors_open(const char *path, struct safetensors_file **out, char *err, size_t errlen)
{
    struct safetensors_file *f = xcalloc(1, sizeof *f);
    f->path = xstrdup(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st_fail(err, errlen, path, "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        st_fail(err, errlen, path, "not a regular file");
        close(fd);
        goto fail;
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st_fail(err, errlen, path, "cannot map: %s", strerror(errno));
            close(fd);
            goto fail;
        }
        f->map = map;
    }
    close(fd);
    if (st_parse(f, err, errlen) < 0)
        goto fail;
    *out = f;
    return 0;
fail:
    safetensors_close(f);
    return -1;
}

void safetensors_close(struct safetensors_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->size);
    for (size_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    free(f);
}

/* ---- checkpoint directories -------------------------------------------------------------- */

static int st_cmp_tensor(const void *a, const void *b)
{
    const struct safetensors_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static const struct safetensors_tensor *st_set_find(const struct safetensors_set *s,
                                                    const char *name)
{
    struct safetensors_tensor key = {.name = (char *)name};
    const struct safetensors_tensor *kp = &key;
    const struct safetensors_tensor *const *hit =
            bsearch(&kp, s->tensors, s->n_tensors, sizeof *s->tensors, st_cmp_tensor);
    return hit ? *hit : NULL;
}

static void st_set_add_file(struct safetensors_set *s, struct safetensors_file *f)
{
    s->files = xrealloc(s->files, (s->n_files + 1) * sizeof *s->files);
    s->files[s->n_files++] = f;
}

/* Builds the sorted table of every tensor and refuses names present in two files. */
static int st_set_index(struct safetensors_set *s, char *err, size_t errlen)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++)
        n += s->files[i]->n_tensors;
    s->tensors = xmalloc((n ? n : 1) * sizeof *s->tensors);
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i]->n_tensors; j++)
            s->tensors[s->n_tensors++] = &s->files[i]->tensors[j];
    qsort(s->tensors, s->n_tensors, sizeof *s->tensors, st_cmp_tensor);
    for (size_t i = 1; i < s->n_tensors; i++) {
        if (strcmp(s->tensors[i - 1]->name, s->tensors[i]->name) == 0) {
            const char *path = "";
            for (size_t k = 0; k < s->n_files; k++) {
                const struct safetensors_file *f = s->files[k];
                if (s->tensors[i] >= f->tensors && s->tensors[i] < f->tensors + f->n_tensors)
                    path = f->path;
            }
            st_fail(err, errlen, path, "tensor '%s' is also present in another shard",
                    s->tensors[i]->name);
            return -1;
        }
    }
    return 0;
}

static bool st_shard_name_ok(const char *name)
{
    return name[0] != '\0' && !strchr(name, '/') && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

static int st_open_index(struct safetensors_set *s, const char *dir, const char *index_path,
                         char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *index = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!index) {
        st_fail(err, errlen, index_path, "not valid JSON: %s (line %d)", jerr.text, jerr.line);
        return -1;
    }
    int rc = -1;
    json_t *map = json_object_get(index, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        st_fail(err, errlen, index_path, "missing or empty \"weight_map\" object");
        goto out;
    }
    /* open each shard once, in order of first mention */
    const char *name;
    json_t *v;
    json_t *opened = json_object();
    json_object_foreach(map, name, v)
    {
        if (!json_is_string(v) || !st_shard_name_ok(json_string_value(v))) {
            st_fail(err, errlen, index_path, "tensor '%s' names an invalid shard file", name);
            json_decref(opened);
            goto out;
        }
        const char *shard = json_string_value(v);
        if (json_object_get(opened, shard))
            continue;
        json_object_set_new(opened, shard, json_true());
        char *path = xasprintf("%s/%s", dir, shard);
        struct safetensors_file *f;
        int orc = safetensors_open(path, &f, err, errlen);
        free(path);
        if (orc < 0) {
            json_decref(opened);
            goto out;
        }
        st_set_add_file(s, f);
    }
    json_decref(opened);
    if (st_set_index(s, err, errlen) < 0)
        goto out;
    json_object_foreach(map, name, v)
    {
        const struct safetensors_tensor *t = st_set_find(s, name);
        const char *shard = json_string_value(v);
        bool in_shard = false;
        for (size_t k = 0; t && k < s->n_files; k++) {
            const struct safetensors_file *f = s->files[k];
            const char *base = strrchr(f->path, '/') + 1;
            if (t >= f->tensors && t < f->tensors + f->n_tensors && strcmp(base, shard) == 0)
                in_shard = true;
        }
        if (!in_shard) {
            char *path = xasprintf("%s/%s", dir, shard);
            st_fail(err, errlen, path, "tensor '%s' listed in %s is missing from this shard", name,
                    "model.safetensors.index.json");
            free(path);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(index);
    return rc;
}

int safetensors_dir_open(const char *dir, struct safetensors_set **out, char *err, size_t errlen)
{
    struct safetensors_set *s = xcalloc(1, sizeof *s);
    char *index_path = xasprintf("%s/model.safetensors.index.json", dir);
    char *single_path = xasprintf("%s/model.safetensors", dir);
    struct stat st;
    int rc = -1;
    if (stat(index_path, &st) == 0) {
        if (st_open_index(s, dir, index_path, err, errlen) < 0)
            goto out;
    } else if (stat(single_path, &st) == 0) {
        struct safetensors_file *f;
        if (safetensors_open(single_path, &f, err, errlen) < 0)
            goto out;
        st_set_add_file(s, f);
        if (st_set_index(s, err, errlen) < 0)
            goto out;
    } else {
        st_fail(err, errlen, dir, "no model.safetensors or model.safetensors.index.json");
        goto out;
    }
    rc = 0;
out:
    free(index_path);
    free(single_path);
    if (rc < 0) {
        safetensors_set_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void safetensors_set_close(struct safetensors_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++)
        safetensors_close(s->files[i]);
    free(s->files);
    free(s->tensors);
    free(s);
}
