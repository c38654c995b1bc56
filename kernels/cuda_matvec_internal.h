/*
 * kernels/cuda_matvec_internal.h — private to cuda_matvec*.cu: the dequantising products that
 * cuda_matvec.cu hands its non-bf16 weight types to.
 *
 * Contract: m[0..n) were validated by cuda_matvec_tuned() (known w_type shared by the group,
 * cols a multiple of the type's block, one x for the group); the call only queues the launch.
 */
#ifndef CORTEX_KERNELS_CUDA_MATVEC_INTERNAL_H
#define CORTEX_KERNELS_CUDA_MATVEC_INTERNAL_H

#include "cuda_matvec.h"

/* Elements per block of a weight type the products take (1 for F16 and BF16), 0 for others. */
int cuda_matvec_block_elems(enum dtype t);
/* Queues the products with weights of type m[0].w_type (not BF16); -1 on a launch error. */
int cuda_matvec_quant_group(const struct cuda_matvec *m, int n, cudaStream_t stream);

#endif
