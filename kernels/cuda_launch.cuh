/*
 * kernels/cuda_launch.cuh — launching the decode kernels with programmatic dependent launch.
 *
 * Contract: cuda_launch(kernel, grid, block, smem, stream, args...) queues kernel exactly as
 * kernel<<<grid, block, smem, stream>>>(args...) would, except that where cuda_overlap_on()
 * holds for the current device (sm_90+, not switched off; cuda_device.h) it carries the
 * attribute that lets it begin while the kernel ahead of it on the stream is still running:
 * its blocks can be resident and issue loads of immutable data (weights) as soon as every
 * block of that kernel has called cuda_pdl_trigger() (or exited). A kernel launched this way
 * must call cuda_pdl_wait() in every thread before it touches anything another kernel reads or
 * writes, and before any early return (cuda_util.cuh); then it stays ordered after its
 * predecessor, and by induction after everything queued earlier, in CUDA graphs as well.
 * Kernels launched plainly keep the usual full ordering whatever their neighbours do.
 *
 * Why: a batch-1 decode step is ~550 launches, most of them small (norms, attention and GDN
 * steps, all-reduces) between products that stream hundreds of megabytes of weights. With
 * the attribute, each product's first blocks start during the small kernels before it and
 * prefetch their rows of weights into L2 (cuda_prefetch_bytes()), so the memory keeps
 * streaming while the small kernels run, and no launch waits for the previous one's tail.
 */
#ifndef CORTEX_KERNELS_CUDA_LAUNCH_CUH
#define CORTEX_KERNELS_CUDA_LAUNCH_CUH

#include "cuda_device.h"

#include <cuda_runtime.h>
#include <utility>

/* cuda_launch() with the overlap chosen by the caller (benchmarks compare both); overlap must
 * only be true where cuda_overlap_on() holds. */
template <typename... P, typename... A>
static inline cudaError_t cuda_launch_as(bool overlap, void (*kernel)(P...), dim3 grid, dim3 block,
                                         size_t smem, cudaStream_t stream, A &&...args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = overlap ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

template <typename... P, typename... A>
static inline cudaError_t cuda_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                      cudaStream_t stream, A &&...args)
{
    return cuda_launch_as(cuda_overlap_on(), kernel, grid, block, smem, stream,
                          std::forward<A>(args)...);
}

/* How many of a product's first blocks prefetch their weights into L2 when launched with the
 * overlap: bytes_per_block each, cuda_prefetch_bytes() in all; 0 without the overlap. */
static inline int64_t cuda_prefetch_blocks(int64_t bytes_per_block)
{
    if (bytes_per_block <= 0 || !cuda_overlap_on())
        return 0;
    return cuda_prefetch_bytes() / bytes_per_block;
}

#endif
