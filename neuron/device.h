/*
 * neuron/device.h — the compute devices of this host, as the neuron accounts and reports them.
 *
 * Contract: device_discover() runs once at start-up. Built with CUDA (CORTEX_HAVE_CUDA, which
 * links kernels/cuda_device.h), it lists the GPUs the CUDA runtime sees, each with its name,
 * UUID, compute capability and memory; on a host without a GPU or driver, or in a CPU-only
 * build (which has no CUDA dependency at all), the list is one CPU device whose memory is the
 * configured budget. The list is plain data, read-only once filled, and may be shared by every
 * thread; its owner frees it with device_list_free().
 *
 * A model placed on a GPU runs there (the CUDA backend, neuron/cuda_model.h; a placement over
 * several GPUs runs on the first); a model placed on the CPU device runs on the CPU
 * (docs/neuron.md).
 *
 * A device is named "cpu" or "cuda:N" (N = CUDA ordinal) in the HTTP API and in metrics; in
 * the database its kind is "cpu" or "cuda" with the ordinal (cortex.gpus).
 */
#ifndef CORTEX_NEURON_DEVICE_H
#define CORTEX_NEURON_DEVICE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum device_kind {
    DEVICE_KIND_CPU,
    DEVICE_KIND_CUDA,
};

struct device {
    enum device_kind kind;
    int ordinal;                 /* CUDA ordinal; 0 for the CPU */
    char name[256];              /* "NVIDIA H100 80GB HBM3"; "cpu" */
    char uuid[48];               /* "GPU-xxxxxxxx-..."; "" for the CPU */
    char compute_capability[16]; /* "9.0"; "" for the CPU */
    uint64_t memory_total;       /* bytes: the GPU's memory, or the CPU memory budget */
    uint64_t budget;             /* bytes models may reserve: the GPU's free memory when it
                                    was discovered, or the CPU memory budget */
    bool made_up;                /* device_list_init_made_up(): no such GPU exists */
};

struct device_list {
    struct device *v; /* owned */
    size_t n;
};

/* Fills *out with the host's GPUs, or with one CPU device of cpu_budget bytes when there is
 * none (or no CUDA in this build). Never fails: a CUDA error is logged and the CPU is used. */
void device_discover(struct device_list *out, uint64_t cpu_budget);
/* Fills *out with the one CPU device of cpu_budget bytes. */
void device_list_init_cpu(struct device_list *out, uint64_t cpu_budget);
/* Fills *out with n >= 1 made-up GPUs (cuda:0 .. cuda:n-1, name "made-up GPU", UUID
 * "GPU-made-up-N") sharing budget bytes evenly: for tests that exercise placement over several
 * GPUs on a host without any. Nothing runs on them (the registry's compute_on_cpu) and their
 * driver is never asked (device_query_free answers -1). */
void device_list_init_made_up(struct device_list *out, size_t n, uint64_t budget);
/* Releases the list's array; accepts an empty list. */
void device_list_free(struct device_list *l);

/* "cpu" or "cuda": the kind as cortex.gpus stores it. */
const char *device_kind_name(enum device_kind k);
/* Writes the device's API name ("cpu", "cuda:N") into buf. */
void device_label(const struct device *d, char *buf, size_t len);
/* The index in v[0..n) of the device a load request names: "cpu", "cuda:N", or an integer N
 * (the GPU of ordinal N; on a host without GPUs, 0 names the CPU). -1 when none matches. */
int device_find(const struct device *v, size_t n, const json_t *ref);
/* The bytes d's driver reports free now, in *free_bytes. Returns 0, or -1 for the CPU device
 * (its budget is accounting only) and when the driver cannot be asked. */
int device_query_free(const struct device *d, uint64_t *free_bytes)
        __attribute__((warn_unused_result));

#endif
