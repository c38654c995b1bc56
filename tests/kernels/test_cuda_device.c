/*
 * tests/kernels/test_cuda_device.c — GPU discovery through cortex_kernels.
 *
 * On a host without a GPU it checks that discovery reports zero devices with a reason and exits
 * 77 (skipped) after that check; on a GPU host it checks every device's facts are plausible
 * (name, compute capability >= 8.0, free <= total memory, distinct UUIDs).
 */
#include "cuda_device.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    int n = -1;
    if (cuda_device_count(&n) != 0) {
        fprintf(stderr, "FAIL: cuda_device_count: %s\n", cuda_last_error());
        return 1;
    }
    if (n == 0) {
        if (cuda_last_error()[0] == '\0') {
            fprintf(stderr, "FAIL: zero devices but no reason given\n");
            return 1;
        }
        printf("no CUDA device here (%s): skipped\n", cuda_last_error());
        return 77;
    }
    char first_uuid[48] = "";
    for (int i = 0; i < n; i++) {
        struct cuda_device_info info;
        if (cuda_device_query(i, &info) != 0) {
            fprintf(stderr, "FAIL: cuda_device_query(%d): %s\n", i, cuda_last_error());
            return 1;
        }
        printf("device %d: %s sm_%d%d, %d SMs, %.1f GiB total, %.1f GiB free, %s\n", i, info.name,
               info.cc_major, info.cc_minor, info.multiprocessors,
               (double)info.mem_total / (1 << 30), (double)info.mem_free / (1 << 30), info.uuid);
        if (info.name[0] == '\0' || info.cc_major < 8 || info.mem_total == 0 ||
            info.mem_free > info.mem_total || strncmp(info.uuid, "GPU-", 4) != 0) {
            fprintf(stderr, "FAIL: implausible facts for device %d\n", i);
            return 1;
        }
        if (i == 0)
            memcpy(first_uuid, info.uuid, sizeof first_uuid);
        else if (strcmp(first_uuid, info.uuid) == 0) {
            fprintf(stderr, "FAIL: devices 0 and %d share a UUID\n", i);
            return 1;
        }
    }
    if (cuda_device_query(n, &(struct cuda_device_info){0}) == 0) {
        fprintf(stderr, "FAIL: querying device %d of %d succeeded\n", n, n);
        return 1;
    }
    return 0;
}
