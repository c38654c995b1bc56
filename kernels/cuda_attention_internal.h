/*
 * kernels/cuda_attention_internal.h — private to cuda_attention*.cu: the tensor-core prefill
 * kernel (cuda_attention_tc.cu) that cuda_attention_prefill() hands the calls it can run to.
 *
 * Contract: the arguments were validated by cuda_attention_prefill() and n_q > 0; the calls
 * only ask about the device or queue the launch.
 */
#ifndef CORTEX_KERNELS_CUDA_ATTENTION_INTERNAL_H
#define CORTEX_KERNELS_CUDA_ATTENTION_INTERNAL_H

#include "cuda_attention.h"

/* Shared-memory bytes per block the tensor-core kernel needs for head_dim on the current
 * device's configuration, 0 when it has no configuration that fits (or head_dim is unknown). */
size_t cuda_attention_tc_smem(int head_dim);
/* Queues the tensor-core prefill; -1 on a launch error (reason in cuda_last_error()). */
int cuda_attention_tc_prefill(const struct cuda_attention_prefill *a, cudaStream_t stream);

#endif
