/*
 * kernels/cuda_device.cu — GPU discovery for the neuron (see cuda_device.h).
 */
#include "cuda_check.cuh"
#include "cuda_device.h"

#include <stdio.h>
#include <string.h>

static thread_local char cuda_error_text[512];

extern "C" void cuda_check_fail(const char *what, cudaError_t err, const char *file, int line)
{
    snprintf(cuda_error_text, sizeof cuda_error_text, "%s failed: %s (%s) at %s:%d", what,
             cudaGetErrorString(err), cudaGetErrorName(err), file, line);
}

extern "C" int cuda_fail_args(const char *entry, const char *why)
{
    snprintf(cuda_error_text, sizeof cuda_error_text, "%s: bad arguments: %s", entry, why);
    return -1;
}

extern "C" const char *cuda_last_error(void)
{
    return cuda_error_text;
}

extern "C" int cuda_device_count(int *count)
{
    *count = 0;
    cuda_error_text[0] = '\0';
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
        err == cudaErrorInitializationError) {
        cuda_check_fail("cudaGetDeviceCount", err, __FILE__, __LINE__);
        (void)cudaGetLastError(); /* clear the sticky-free error so later calls are unaffected */
        return 0;
    }
    CUDA_TRY(err);
    *count = n;
    return 0;
}

extern "C" int cuda_device_query(int index, struct cuda_device_info *info)
{
    memset(info, 0, sizeof *info);
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, index));
    info->index = index;
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    const unsigned char *u = (const unsigned char *)prop.uuid.bytes;
    snprintf(info->uuid, sizeof info->uuid,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->multiprocessors = prop.multiProcessorCount;
    int prev = 0;
    CUDA_TRY(cudaGetDevice(&prev));
    CUDA_TRY(cudaSetDevice(index));
    size_t free_b = 0, total_b = 0;
    cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
    (void)cudaSetDevice(prev);
    CUDA_TRY(err);
    info->mem_total = total_b;
    info->mem_free = free_b;
    return 0;
}
