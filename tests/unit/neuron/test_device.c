/*
 * tests/unit/neuron/test_device.c — the neuron's device list.
 *
 * Checks: a CPU-only build (or a CUDA build on a host without a GPU) lists one CPU device whose
 * memory is the budget; a CUDA build on a GPU host lists exactly the GPUs nvidia-smi lists, with
 * the same names, UUIDs and total memory, and a budget no larger than the total; device names
 * from load requests ("cpu", "cuda:N", ordinals) resolve as docs/neuron.md says, on a CPU host
 * and on a made-up two-GPU host; device_list_init_made_up (the neuron's --test-gpus) lists N
 * CUDA devices sharing the budget whose driver is never asked.
 */
#include "device.h"

#include "xalloc.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUDGET ((uint64_t)3 << 30)

/* One GPU as nvidia-smi (NVML, not the CUDA runtime) describes it. */
struct smi_gpu {
    int index;
    char name[256];
    char uuid[64];
    uint64_t mib;
};

/* The GPUs nvidia-smi lists into v (at most cap); -1 when it cannot be run or lists none. */
static int smi_gpus(struct smi_gpu *v, int cap)
{
    FILE *p = popen("nvidia-smi --query-gpu=index,name,uuid,memory.total "
                    "--format=csv,noheader,nounits 2>/dev/null",
                    "r");
    if (!p)
        return -1;
    char line[512];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, p)) {
        struct smi_gpu *g = &v[n];
        char *fields[4];
        char *save = NULL, *tok = strtok_r(line, ",\n", &save);
        int k = 0;
        while (tok && k < 4) {
            while (*tok == ' ')
                tok++;
            fields[k++] = tok;
            tok = strtok_r(NULL, ",\n", &save);
        }
        if (k != 4)
            continue;
        g->index = atoi(fields[0]);
        snprintf(g->name, sizeof g->name, "%s", fields[1]);
        snprintf(g->uuid, sizeof g->uuid, "%s", fields[2]);
        g->mib = strtoull(fields[3], NULL, 10);
        n++;
    }
    int rc = pclose(p);
    return rc == 0 && n > 0 ? n : -1;
}

static void check_cpu_list(const struct device_list *l)
{
    ck_assert_uint_eq(l->n, 1);
    ck_assert_int_eq(l->v[0].kind, DEVICE_KIND_CPU);
    ck_assert_int_eq(l->v[0].ordinal, 0);
    ck_assert_str_eq(l->v[0].name, "cpu");
    ck_assert_str_eq(l->v[0].uuid, "");
    ck_assert_uint_eq(l->v[0].memory_total, BUDGET);
    ck_assert_uint_eq(l->v[0].budget, BUDGET);
    char label[32];
    device_label(&l->v[0], label, sizeof label);
    ck_assert_str_eq(label, "cpu");
    ck_assert_str_eq(device_kind_name(l->v[0].kind), "cpu");
    uint64_t free_bytes = 1;
    ck_assert_int_eq(device_query_free(&l->v[0], &free_bytes), -1);
}

START_TEST(test_discover)
{
    struct device_list l;
    device_discover(&l, BUDGET);
    struct smi_gpu smi[16];
    int n_smi = smi_gpus(smi, 16);
#ifndef CORTEX_HAVE_CUDA
    /* Without CUDA in the build, GPUs are never looked for, whatever the host has. */
    check_cpu_list(&l);
    (void)n_smi;
#else
    if (n_smi < 0) {
        check_cpu_list(&l);
    } else {
        ck_assert_uint_eq(l.n, (size_t)n_smi);
        for (int i = 0; i < n_smi; i++) {
            const struct device *d = &l.v[i];
            ck_assert_int_eq(d->kind, DEVICE_KIND_CUDA);
            ck_assert_int_eq(d->ordinal, smi[i].index);
            ck_assert_str_eq(d->name, smi[i].name);
            ck_assert_str_eq(d->uuid, smi[i].uuid);
            /* NVML and the runtime may round the total differently: within 1% */
            uint64_t mib = d->memory_total >> 20;
            ck_assert_msg(mib * 100 >= smi[i].mib * 99 && mib * 100 <= smi[i].mib * 101,
                          "GPU %d: runtime says %llu MiB, nvidia-smi %llu MiB", i,
                          (unsigned long long)mib, (unsigned long long)smi[i].mib);
            ck_assert_uint_gt(d->budget, 0);
            ck_assert_uint_le(d->budget, d->memory_total);
            ck_assert_msg(strchr(d->compute_capability, '.') != NULL, "compute capability '%s'",
                          d->compute_capability);
            char label[32], want[32];
            device_label(d, label, sizeof label);
            snprintf(want, sizeof want, "cuda:%d", smi[i].index);
            ck_assert_str_eq(label, want);
            ck_assert_str_eq(device_kind_name(d->kind), "cuda");
            uint64_t free_bytes = 0;
            ck_assert_int_eq(device_query_free(d, &free_bytes), 0);
            ck_assert_uint_gt(free_bytes, 0);
            ck_assert_uint_le(free_bytes, d->memory_total);
            printf("GPU %d: %s %s cc %s, %llu bytes, budget %llu, free now %llu\n", d->ordinal,
                   d->name, d->uuid, d->compute_capability, (unsigned long long)d->memory_total,
                   (unsigned long long)d->budget, (unsigned long long)free_bytes);
        }
    }
#endif
    device_list_free(&l);
    ck_assert_uint_eq(l.n, 0);
    device_list_free(&l); /* an empty list again: nothing to free */
}
END_TEST

static int find(const struct device *v, size_t n, json_t *ref)
{
    int i = device_find(v, n, ref);
    json_decref(ref);
    return i;
}

START_TEST(test_find_on_a_cpu_host)
{
    struct device_list l;
    device_list_init_cpu(&l, BUDGET);
    check_cpu_list(&l);
    ck_assert_int_eq(find(l.v, l.n, json_string("cpu")), 0);
    ck_assert_int_eq(find(l.v, l.n, json_integer(0)), 0);
    ck_assert_int_eq(find(l.v, l.n, json_integer(1)), -1);
    ck_assert_int_eq(find(l.v, l.n, json_string("cuda:0")), -1);
    ck_assert_int_eq(find(l.v, l.n, json_string("CPU")), -1);
    ck_assert_int_eq(find(l.v, l.n, json_true()), -1);
    ck_assert_int_eq(find(l.v, l.n, json_real(0.0)), -1);
    device_list_free(&l);
}
END_TEST

START_TEST(test_find_on_a_gpu_host)
{
    struct device v[2] = {
            {.kind = DEVICE_KIND_CUDA, .ordinal = 0, .memory_total = 100, .budget = 90},
            {.kind = DEVICE_KIND_CUDA, .ordinal = 1, .memory_total = 100, .budget = 90},
    };
    ck_assert_int_eq(find(v, 2, json_string("cuda:1")), 1);
    ck_assert_int_eq(find(v, 2, json_string("cuda:0")), 0);
    ck_assert_int_eq(find(v, 2, json_integer(1)), 1);
    ck_assert_int_eq(find(v, 2, json_integer(0)), 0);
    ck_assert_int_eq(find(v, 2, json_integer(2)), -1);
    ck_assert_int_eq(find(v, 2, json_integer(-1)), -1);
    ck_assert_int_eq(find(v, 2, json_string("cpu")), -1); /* a GPU host has no CPU device */
    ck_assert_int_eq(find(v, 2, json_string("cuda:2")), -1);
    ck_assert_int_eq(find(v, 2, json_string("cuda:")), -1);
    char label[32];
    device_label(&v[1], label, sizeof label);
    ck_assert_str_eq(label, "cuda:1");
}
END_TEST

START_TEST(test_made_up_gpus)
{
    struct device_list l;
    device_list_init_made_up(&l, 2, BUDGET + 1); /* an odd budget: each gets the floor half */
    ck_assert_uint_eq(l.n, 2);
    for (int i = 0; i < 2; i++) {
        const struct device *d = &l.v[i];
        ck_assert_int_eq(d->kind, DEVICE_KIND_CUDA);
        ck_assert_int_eq(d->ordinal, i);
        ck_assert(d->made_up);
        ck_assert_uint_eq(d->budget, BUDGET / 2);
        ck_assert_uint_eq(d->memory_total, BUDGET / 2);
        char label[32], want[32];
        device_label(d, label, sizeof label);
        snprintf(want, sizeof want, "cuda:%d", i);
        ck_assert_str_eq(label, want);
        ck_assert_str_ne(d->uuid, "");
        /* even in a CUDA build on a GPU host, a made-up device's driver is never asked */
        uint64_t free_bytes = 1;
        ck_assert_int_eq(device_query_free(d, &free_bytes), -1);
        ck_assert_uint_eq(free_bytes, 0);
    }
    ck_assert_str_ne(l.v[0].uuid, l.v[1].uuid);
    ck_assert_int_eq(find(l.v, l.n, json_string("cuda:1")), 1);
    ck_assert_int_eq(find(l.v, l.n, json_string("cpu")), -1);
    device_list_free(&l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("device");
    TCase *tc = tcase_create("device");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_discover);
    tcase_add_test(tc, test_find_on_a_cpu_host);
    tcase_add_test(tc, test_find_on_a_gpu_host);
    tcase_add_test(tc, test_made_up_gpus);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
