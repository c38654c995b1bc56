/*
 * kernels/cuda_device.h — what the neuron needs to know about the GPUs of its host, and the
 * process-wide launch settings of the decode kernels.
 *
 * Contract: plain C interface over the CUDA runtime. Every function returns 0 on success and -1
 * on failure; the reason (with the CUDA error name) is then in cuda_last_error(), which is
 * thread-local. A host without a GPU or without a driver is not an error for
 * cuda_device_count(): it reports 0 devices and leaves the reason in cuda_last_error().
 */
#ifndef CORTEX_KERNELS_CUDA_DEVICE_H
#define CORTEX_KERNELS_CUDA_DEVICE_H

#include <stdbool.h>
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

/* Launch overlap for the decode kernels (programmatic dependent launch, cuda_launch.cuh):
 * cuda_set_overlap(1) turns it on wherever the device takes it (sm_90+), 0 off, -1 back to
 * the default: on, unless the environment sets CORTEX_CUDA_OVERLAP=0 (read once).
 * Process-wide; a graph keeps what was set when it was captured. cuda_overlap_on() answers for
 * the calling thread's current device. */
void cuda_set_overlap(int mode);
bool cuda_overlap_on(void);
/* Bytes of weights that a product launched with the overlap prefetches into L2 (spread over
 * its first blocks) while it waits for the kernel before it: default 16 MiB, or
 * CORTEX_CUDA_PREFETCH_MB from the environment; cuda_set_prefetch_bytes(-1) restores that. */
void cuda_set_prefetch_bytes(int64_t bytes);
int64_t cuda_prefetch_bytes(void);

#ifdef __cplusplus
}
#endif

#endif
