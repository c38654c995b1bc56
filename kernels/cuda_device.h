/*
 * kernels/cuda_device.h — what the neuron needs to know about the GPUs of its host.
 *
 * Contract: plain C interface over the CUDA runtime. Every function returns 0 on success and -1
 * on failure; the reason (with the CUDA error name) is then in cuda_last_error(), which is
 * thread-local. A host without a GPU or without a driver is not an error for
 * cuda_device_count(): it reports 0 devices and leaves the reason in cuda_last_error().
 */
#ifndef CORTEX_KERNELS_CUDA_DEVICE_H
#define CORTEX_KERNELS_CUDA_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cuda_device_info {
    int index;
    char name[256];
    char uuid[48]; /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    int cc_major, cc_minor;
    int multiprocessors;
    uint64_t mem_total; /* bytes */
    uint64_t mem_free;  /* bytes, at the time of the call */
};

/* Number of usable CUDA devices in *count (0 when there is no GPU or driver). */
int cuda_device_count(int *count);
/* Fills *info for device index (0 <= index < count). */
int cuda_device_query(int index, struct cuda_device_info *info);
/* The last failure's text for this thread ("" when none). */
const char *cuda_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
