/*
 * kernels/cuda_random.cu — random fills (see cuda_random.h): splitmix64 of (seed, index), so
 * a grid-stride loop needs no generator state.
 */
#include "cuda_check.cuh"
#include "cuda_random.h"
#include "cuda_util.cuh"

__device__ __forceinline__ float random_uniform(uint64_t seed, int64_t i)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; /* [-1, 1) */
}

template <typename T>
__global__ void random_fill_kernel(T *p, int64_t n, uint64_t seed, float scale)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cuda_from_f32(p + i, scale * random_uniform(seed, i));
}

extern "C" int cuda_random_fill(enum dtype type, void *p, int64_t n, uint64_t seed, float scale,
                                cudaStream_t stream)
{
    if ((type != DTYPE_F32 && type != DTYPE_BF16) || n < 0 || !p)
        return cuda_fail_args("cuda_random_fill", "type f32/bf16, n >= 0");
    if (n == 0)
        return 0;
    unsigned blocks = n / 256 + 1 < 65536 ? (unsigned)(n / 256 + 1) : 65536;
    if (type == DTYPE_F32)
        random_fill_kernel<float><<<blocks, 256, 0, stream>>>((float *)p, n, seed, scale);
    else
        random_fill_kernel<__nv_bfloat16>
                <<<blocks, 256, 0, stream>>>((__nv_bfloat16 *)p, n, seed, scale);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
