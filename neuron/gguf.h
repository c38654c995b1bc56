/*
 * neuron/gguf.h — reader for GGUF files (versions 2 and 3), the model format of llama.cpp.
 *
 * Contract: gguf_open() memory-maps the file read-only and validates all of it before returning:
 * header, every metadata value (all value types, arrays nested to a small depth), every tensor
 * info, and that each tensor's data lies inside the file. Every length and count is checked
 * against the bytes that remain, with overflow-safe arithmetic, so a malformed or truncated file
 * yields an error message (naming the file and the problem) and never a crash or a huge
 * allocation. Tensor element types outside enum dtype are refused with their ggml name.
 *
 * Metadata becomes one jansson object keyed exactly as in the file ("general.architecture",
 * "llama.block_count", "tokenizer.ggml.tokens", ...): integers -> JSON integers (a uint64 above
 * INT64_MAX -> real), floats -> reals, bools -> booleans, strings -> strings (bytes that are not
 * valid UTF-8 are kept as they are), arrays -> JSON arrays.
 *
 * Tensor shapes are converted from GGUF order (innermost dimension first) to PyTorch order
 * (outermost first): a GGUF weight with ne = {in, out} becomes shape {out, in}. Names stay the
 * GGUF names ("blk.0.attn_q.weight"); model_file.c maps them.
 */
#ifndef CORTEX_NEURON_GGUF_H
#define CORTEX_NEURON_GGUF_H

#include "dtype.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

struct gguf_tensor {
    char *name;         /* GGUF name */
    enum dtype type;    /* mapped from the ggml type id */
    uint32_t ggml_type; /* the id as stored in the file */
    int ndim;
    int64_t shape[GGUF_MAX_DIMS]; /* PyTorch order */
    uint64_t offset;              /* absolute file offset of the data */
    size_t nbytes;
    const void *data; /* inside the mapping */
};

struct gguf_file {
    char *path;
    uint32_t version;
    json_t *meta; /* owned */
    uint64_t alignment;
    uint64_t data_offset; /* start of the tensor data section */
    struct gguf_tensor *tensors;
    size_t n_tensors;
    const void *map; /* the whole file, read-only */
    size_t size;
};

/* Maps and parses path. On success *out owns the mapping and everything parsed; release it with
 * gguf_close(). On failure returns -1, *out is untouched and err holds "<path>: <problem>". */
int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen)
        __attribute__((warn_unused_result));
void gguf_close(struct gguf_file *g);

/* Whether the first bytes of a buffer are the GGUF magic ("GGUF"); size may be below 4. */
int gguf_has_magic(const void *buf, size_t size);
/* Name of a ggml type id for messages ("q5_0"); "unknown" for ids it does not know. */
const char *gguf_ggml_type_name(uint32_t ggml_type);

#endif
