/*
 * neuron/device.c — device discovery through the CUDA runtime, or the CPU budget (see
 * device.h). Everything CUDA is behind CORTEX_HAVE_CUDA, so a CPU-only build neither includes
 * nor links anything of it.
 */
#include "device.h"

#include "log.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CORTEX_HAVE_CUDA
#include "cuda_device.h"
#endif

void device_list_init_cpu(struct device_list *out, uint64_t cpu_budget)
{
    out->v = xcalloc(1, sizeof *out->v);
    out->n = 1;
    struct device *d = &out->v[0];
    d->kind = DEVICE_KIND_CPU;
    d->ordinal = 0;
    snprintf(d->name, sizeof d->name, "cpu");
    d->memory_total = cpu_budget;
    d->budget = cpu_budget;
}

void device_list_init_made_up(struct device_list *out, size_t n, uint64_t budget)
{
    out->v = xcalloc(n, sizeof *out->v);
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        struct device *d = &out->v[i];
        d->kind = DEVICE_KIND_CUDA;
        d->ordinal = (int)i;
        snprintf(d->name, sizeof d->name, "made-up GPU");
        snprintf(d->uuid, sizeof d->uuid, "GPU-made-up-%zu", i);
        snprintf(d->compute_capability, sizeof d->compute_capability, "0.0");
        d->memory_total = budget / n;
        d->budget = budget / n;
        d->made_up = true;
    }
}

#ifdef CORTEX_HAVE_CUDA
/* The GPUs the runtime sees, into *out; false when there are none or the runtime failed. */
static bool device_discover_cuda(struct device_list *out)
{
    int count = 0;
    if (cuda_device_count(&count) != 0) {
        LOG_WARN("CUDA: cannot count the GPUs (%s); using the CPU memory budget",
                 cuda_last_error());
        return false;
    }
    if (count == 0) {
        LOG_INFO("CUDA: no GPU found (%s); using the CPU memory budget",
                 cuda_last_error()[0] ? cuda_last_error() : "none present");
        return false;
    }
    struct device *v = xcalloc((size_t)count, sizeof *v);
    for (int i = 0; i < count; i++) {
        struct cuda_device_info info;
        if (cuda_device_query(i, &info) != 0) {
            LOG_WARN("CUDA: cannot query GPU %d (%s); using the CPU memory budget", i,
                     cuda_last_error());
            free(v);
            return false;
        }
        struct device *d = &v[i];
        d->kind = DEVICE_KIND_CUDA;
        d->ordinal = info.index;
        snprintf(d->name, sizeof d->name, "%s", info.name);
        snprintf(d->uuid, sizeof d->uuid, "%s", info.uuid);
        snprintf(d->compute_capability, sizeof d->compute_capability, "%d.%d", info.cc_major,
                 info.cc_minor);
        d->memory_total = info.mem_total;
        d->budget = info.mem_free;
        LOG_INFO("CUDA: GPU %d: %s (%s), compute capability %s, %llu bytes, %llu free", i, d->name,
                 d->uuid, d->compute_capability, (unsigned long long)d->memory_total,
                 (unsigned long long)d->budget);
    }
    out->v = v;
    out->n = (size_t)count;
    return true;
}
#endif

void device_discover(struct device_list *out, uint64_t cpu_budget)
{
    out->v = NULL;
    out->n = 0;
#ifdef CORTEX_HAVE_CUDA
    if (device_discover_cuda(out))
        return;
#endif
    device_list_init_cpu(out, cpu_budget);
}

void device_list_free(struct device_list *l)
{
    if (!l)
        return;
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

const char *device_kind_name(enum device_kind k)
{
    return k == DEVICE_KIND_CUDA ? "cuda" : "cpu";
}

void device_label(const struct device *d, char *buf, size_t len)
{
    if (d->kind == DEVICE_KIND_CUDA)
        snprintf(buf, len, "cuda:%d", d->ordinal);
    else
        snprintf(buf, len, "cpu");
}

int device_find(const struct device *v, size_t n, const json_t *ref)
{
    bool has_gpu = false;
    for (size_t i = 0; i < n; i++)
        has_gpu |= v[i].kind == DEVICE_KIND_CUDA;
    for (size_t i = 0; i < n; i++) {
        const struct device *d = &v[i];
        if (json_is_integer(ref)) {
            json_int_t want = json_integer_value(ref);
            if (has_gpu ? d->kind == DEVICE_KIND_CUDA && d->ordinal == want
                        : d->kind == DEVICE_KIND_CPU && want == 0)
                return (int)i;
        } else if (json_is_string(ref)) {
            char label[32];
            device_label(d, label, sizeof label);
            if (strcmp(label, json_string_value(ref)) == 0)
                return (int)i;
        }
    }
    return -1;
}

int device_query_free(const struct device *d, uint64_t *free_bytes)
{
    *free_bytes = 0;
    if (d->kind != DEVICE_KIND_CUDA || d->made_up)
        return -1;
#ifdef CORTEX_HAVE_CUDA
    struct cuda_device_info info;
    if (cuda_device_query(d->ordinal, &info) != 0) {
        LOG_WARN("CUDA: cannot query GPU %d: %s", d->ordinal, cuda_last_error());
        return -1;
    }
    *free_bytes = info.mem_free;
    return 0;
#else
    return -1;
#endif
}
