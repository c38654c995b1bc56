/*
 * kernels/cuda_device.cu — GPU discovery for the neuron, and the process-wide launch settings
 * (launch overlap, L2 prefetch size) of the decode kernels (see cuda_device.h).
 */
#include "cuda_check.cuh"
#include "cuda_device.h"

#include <stdio.h>
#include <stdlib.h>
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

/* Launch overlap: the requested mode (-1 = default from the environment), the environment's
 * answers (read once: the launches ask on every call; -1 not read yet), and per device whether
 * it takes programmatic dependent launch (0 unknown, 1 yes, 2 no). */
#define CUDA_MAX_DEVICES 64
static int overlap_mode = -1, overlap_env = -1;
static signed char overlap_device[CUDA_MAX_DEVICES];
static int64_t prefetch_bytes = -1, prefetch_env = -1;

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    return end && *end == '\0' && n >= 0 && n <= 1 << 20 ? (int)n : fallback;
}

extern "C" void cuda_set_overlap(int mode)
{
    __atomic_store_n(&overlap_mode, mode < 0 ? -1 : mode > 0, __ATOMIC_RELAXED);
}

extern "C" bool cuda_overlap_on(void)
{
    int mode = __atomic_load_n(&overlap_mode, __ATOMIC_RELAXED);
    if (mode < 0) {
        mode = __atomic_load_n(&overlap_env, __ATOMIC_RELAXED);
        if (mode < 0) {
            mode = env_int("CORTEX_CUDA_OVERLAP", 1) != 0;
            __atomic_store_n(&overlap_env, mode, __ATOMIC_RELAXED);
        }
    }
    if (!mode)
        return false;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= CUDA_MAX_DEVICES)
        return false;
    signed char known = __atomic_load_n(&overlap_device[dev], __ATOMIC_RELAXED);
    if (!known) {
        int major = 0;
        bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
                          cudaSuccess &&
                  major >= 9;
        known = ok ? 1 : 2;
        __atomic_store_n(&overlap_device[dev], known, __ATOMIC_RELAXED);
    }
    return known == 1;
}

extern "C" void cuda_set_prefetch_bytes(int64_t bytes)
{
    __atomic_store_n(&prefetch_bytes, bytes < 0 ? (int64_t)-1 : bytes, __ATOMIC_RELAXED);
}

extern "C" int64_t cuda_prefetch_bytes(void)
{
    int64_t b = __atomic_load_n(&prefetch_bytes, __ATOMIC_RELAXED);
    if (b >= 0)
        return b;
    b = __atomic_load_n(&prefetch_env, __ATOMIC_RELAXED);
    if (b < 0) {
        b = (int64_t)env_int("CORTEX_CUDA_PREFETCH_MB", 16) << 20;
        __atomic_store_n(&prefetch_env, b, __ATOMIC_RELAXED);
    }
    return b;
}
