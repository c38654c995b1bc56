/*
 * neuron/safetensors.h — reader for safetensors files and sharded checkpoints (index.json).
 *
 * Contract: a safetensors file is an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}})
 * and the byte buffer the offsets point into. safetensors_open() maps the file read-only and
 * validates every entry: dtype (F32, F16, BF16; others are refused with their name), shape,
 * offsets inside the buffer and matching the shape's size. "__metadata__" is ignored.
 *
 * safetensors_dir_open() opens a Hugging Face checkpoint directory: model.safetensors, or
 * model.safetensors.index.json with its "weight_map" and every shard it names (each mapped).
 * Every tensor the index lists must be found in the shard it names; a name found in two shards
 * is an error.
 *
 * Errors return -1 with "<file>: <problem>" in err; a malformed file never crashes.
 */
#ifndef CORTEX_NEURON_SAFETENSORS_H
#define CORTEX_NEURON_SAFETENSORS_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 4

struct safetensors_tensor {
    char *name;
    enum dtype type;
    int ndim; /* 0 for a scalar */
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const void *data; /* inside the file's mapping */
    size_t nbytes;
};

struct safetensors_file {
    char *path;
    struct safetensors_tensor *tensors; /* in header order */
    size_t n_tensors;
    const void *map;
    size_t size;
};

/* A whole checkpoint: one or more files; tensors points into their tables. */
struct safetensors_set {
    struct safetensors_file **files;
    size_t n_files;
    const struct safetensors_tensor **tensors; /* every tensor of every file, sorted by name */
    size_t n_tensors;
};

/* Maps and validates one file. On success *out owns it (safetensors_close()); on failure -1
 * with the message in err and *out untouched. */
int safetensors_open(const char *path, struct safetensors_file **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void safetensors_close(struct safetensors_file *f);

/* Opens the checkpoint in directory dir (see above). Same ownership and error rules. */
int safetensors_dir_open(const char *dir, struct safetensors_set **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void safetensors_set_close(struct safetensors_set *s);

#endif
