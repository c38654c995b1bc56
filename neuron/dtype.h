/*
 * neuron/dtype.h — the tensor element types the engine reads from model files.
 *
 * Contract: quantised types are stored in blocks exactly as GGUF lays them out (little-endian);
 * dtype_block_elems() elements take dtype_block_bytes() bytes. A row of n elements (n a multiple
 * of the block size) takes dtype_row_bytes(t, n) bytes. dtype_dequant_row() is the scalar
 * reference every optimised path (AVX2, CUDA) is tested against.
 */
#ifndef CORTEX_NEURON_DTYPE_H
#define CORTEX_NEURON_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum dtype {
    DTYPE_F32,
    DTYPE_F16,
    DTYPE_BF16,
    DTYPE_Q8_0, /* 32 elems: f16 scale + 32 int8 */
    DTYPE_Q4_0, /* 32 elems: f16 scale + 16 bytes of nibbles, value (q - 8) * d */
    DTYPE_Q4_1, /* 32 elems: f16 scale, f16 min + 16 bytes of nibbles, value q * d + m */
    DTYPE_Q4_K, /* 256 elems, super-block with 6-bit sub-block scales and mins */
    DTYPE_Q5_K, /* 256 elems */
    DTYPE_Q6_K, /* 256 elems */
    DTYPE_COUNT
};

/* "f32", "bf16", "q4_k", ...; NULL for an out-of-range value. */
const char *dtype_name(enum dtype t);
/* Number of elements in one block (1 for the float types). */
size_t dtype_block_elems(enum dtype t);
/* Bytes of one block. */
size_t dtype_block_bytes(enum dtype t);
/* Bytes of a row of n elements; n must be a multiple of dtype_block_elems(t). */
size_t dtype_row_bytes(enum dtype t, size_t n);
/* Converts n elements (a multiple of the block size) starting at src into floats at dst. */
void dtype_dequant_row(enum dtype t, const void *src, float *dst, size_t n);

/* Scalar conversions used everywhere. */
float dtype_f16_to_f32(uint16_t h);
uint16_t dtype_f32_to_f16(float f);
float dtype_bf16_to_f32(uint16_t b);
uint16_t dtype_f32_to_bf16(float f); /* round to nearest even */

#endif
