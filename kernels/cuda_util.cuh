/*
 * kernels/cuda_util.cuh — device helpers shared by the .cu files of kernels/: element loads and
 * stores that convert to and from fp32, warp and row-group sums, and the SiLU used by several
 * ops.
 *
 * Contract: every kernel computes in fp32 whatever its storage type; bf16 stores round to
 * nearest even (as dtype_f32_to_bf16 does on the CPU). Nothing here allocates.
 *
 * Programmatic dependent launch (sm_90+, see cuda_launch.cuh): cuda_pdl_trigger() lets the
 * next kernel on the stream start launching; cuda_pdl_wait() returns once the previous kernel
 * has finished and its writes are visible. A kernel launched through cuda_launch() calls
 * cuda_pdl_wait() in every thread before it reads or writes anything but its immutable inputs
 * (weights, tables) and before any early return. Both are no-ops below sm_90 and when the
 * kernel was launched plainly.
 */
#ifndef CORTEX_KERNELS_CUDA_UTIL_CUH
#define CORTEX_KERNELS_CUDA_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float cuda_to_f32(float v)
{
    return v;
}
__device__ __forceinline__ float cuda_to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
__device__ __forceinline__ float cuda_to_f32(__half v)
{
    return __half2float(v);
}

__device__ __forceinline__ void cuda_from_f32(float *p, float v)
{
    *p = v;
}
__device__ __forceinline__ void cuda_from_f32(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

/* Sum over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ float cuda_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over a group of TPR consecutive threads that handle one row: a warp (TPR == 32) or a
 * whole block (TPR == blockDim.x, a multiple of 32 up to 1024). Every thread of the group gets
 * the result. Block-wide groups use shared memory and barriers, so all threads of the block
 * must call it. */
template <int TPR> __device__ __forceinline__ float cuda_row_sum(float v)
{
    v = cuda_warp_sum(v);
    if (TPR == 32)
        return v;
    __shared__ float part[32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* an earlier call's readers are done with part[] */
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    float s = lane < TPR / 32 ? part[lane] : 0.0f;
    return cuda_warp_sum(s);
}

__device__ __forceinline__ void cuda_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void cuda_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Asks the memory system to bring bytes (a multiple of 16) at p (16-byte aligned, global) into
 * L2 without waiting for them: one instruction for a whole row of weights (sm_90+; a no-op
 * below). */
__device__ __forceinline__ void cuda_prefetch_l2(const void *p, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ float cuda_silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* The row of a KV cache that holds position p of a sequence: p itself in a contiguous cache,
 * else through the sequence's block table (table[i] is the pool block of positions
 * i * block_size .. (i + 1) * block_size - 1; rows of a block are consecutive). */
__device__ __forceinline__ int64_t cuda_kv_row(const int32_t *table, int block_size, int64_t p)
{
    if (!table)
        return p;
    unsigned bs = (unsigned)block_size, pp = (unsigned)p;
    return (int64_t)table[pp / bs] * block_size + (int64_t)(pp % bs);
}

/* Blocks for n items at threads per block, as the grid's x size (n > 0). */
static inline unsigned cuda_blocks(int64_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

#endif
