/*
 * tests/unit/neuron/test_registry.c — the model registry on the tiny checkpoints of
 * tests/fixtures: directory scan (what counts as a model, names, format, architecture), the
 * memory estimate against its formula, load refusals (unknown model, bad devices, over budget)
 * and the lifecycle of a load that fails (the fixture has no tokenizer): failed with its error,
 * memory released, then unloaded and gone, each step seen by the observer.
 */
#include "registry.h"

#include "model_fixture.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *source_dir(void)
{
    const char *s = getenv("CORTEX_SOURCE_DIR");
    return s ? s : ".";
}

/* Observer that records states so the test can wait for one. */
struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    enum registry_state states[32];
    int n;
    char error[512];
};

static void seen_observe(void *ud, const struct registry_event *ev)
{
    struct seen *s = ud;
    pthread_mutex_lock(&s->mu);
    if (s->n < 32)
        s->states[s->n++] = ev->state;
    if (ev->error)
        snprintf(s->error, sizeof s->error, "%s", ev->error);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static bool seen_wait(struct seen *s, enum registry_state want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < s->n; i++)
            found |= s->states[i] == want;
        if (found || pthread_cond_timedwait(&s->cond, &s->mu, &deadline) != 0)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

static char *dir;
static uint64_t tiny_weights, tiny_estimate;

static void setup(void)
{
    dir = fixture_tmpdir();
    char *target = xasprintf("%s/tests/fixtures/llama", source_dir());
    char *link = xasprintf("%s/tiny-llama", dir);
    ck_assert_int_eq(symlink(target, link), 0);
    char *junk = xasprintf("%s/broken.gguf", dir);
    FILE *f = fopen(junk, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("not a gguf file", f);
    fclose(f);
    char *notes = xasprintf("%s/notes.txt", dir);
    f = fopen(notes, "wb");
    fclose(f);
    struct model_file *mf = NULL;
    char err[512];
    ck_assert_msg(model_file_open(target, &mf, err, sizeof err) == 0, "%s", err);
    tiny_weights = mf->total_bytes;
    /* 2 layers x (K and V) x 2 kv heads x head_dim 16 x ctx 128 x 4 bytes, plus 256 fp32
     * logits, per sequence; 2 sequences. */
    tiny_estimate = tiny_weights + 2 * (2 * 2 * 2 * 16 * 128 * 4 + 256 * 4);
    model_file_close(mf);
    free(target);
    free(link);
    free(junk);
    free(notes);
}

static void teardown(void)
{
    fixture_rmdir(dir); /* also frees dir */
}

static struct registry *make(uint64_t budget, struct seen *s)
{
    struct registry_options o = {
            .models_dir = dir,
            .threads = 1,
            .ctx = 128,
            .max_batch = 2,
            .queue_depth = 1,
            .memory_budget = budget,
            .observer = s ? seen_observe : NULL,
            .observer_ud = s,
    };
    return registry_create(&o);
}

START_TEST(test_scan_lists_models_only)
{
    struct registry *r = make(1u << 30, NULL);
    json_t *doc = registry_describe(r);
    json_t *avail = json_object_get(doc, "available");
    ck_assert_int_eq(json_array_size(avail), 1);
    json_t *m = json_array_get(avail, 0);
    ck_assert_str_eq(json_string_value(json_object_get(m, "name")), "tiny-llama");
    ck_assert_str_eq(json_string_value(json_object_get(m, "format")), "hf");
    ck_assert_str_eq(json_string_value(json_object_get(m, "architecture")), "llama");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "context_tokens")), 128);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "weights_bytes")), tiny_weights);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "estimated_memory_bytes")),
                     tiny_estimate);
    ck_assert_int_gt(json_integer_value(json_object_get(m, "size_bytes")), tiny_weights);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "loaded")), 0);
    json_decref(doc);
    registry_destroy(r);
}
END_TEST

START_TEST(test_load_refusals)
{
    struct registry *r = make(1u << 30, NULL);
    struct error err = ERROR_INIT;
    ck_assert_int_eq(registry_load(r, "no-such-model", NULL, 0, &err), -1);
    ck_assert_int_eq(err.code, ERR_MODEL_NOT_FOUND);
    error_clear(&err);
    json_t *devices = json_pack("[i]", 3);
    ck_assert_int_eq(registry_load(r, "tiny-llama", devices, 0, &err), -1);
    ck_assert_int_eq(err.code, ERR_INVALID_REQUEST);
    ck_assert_str_eq(err.param, "devices");
    error_clear(&err);
    json_decref(devices);
    ck_assert_int_eq(registry_unload(r, "tiny-llama", &err), -1);
    ck_assert_int_eq(err.code, ERR_MODEL_NOT_FOUND);
    error_clear(&err);
    ck_assert_ptr_null(registry_acquire(r, "tiny-llama", &err));
    ck_assert_int_eq(err.code, ERR_MODEL_NOT_FOUND);
    error_clear(&err);
    registry_destroy(r);

    r = make(tiny_estimate - 1, NULL);
    ck_assert_int_eq(registry_load(r, "tiny-llama", NULL, 0, &err), -1);
    ck_assert_int_eq(err.code, ERR_CONFLICT);
    ck_assert_ptr_nonnull(strstr(error_message(&err), "memory budget"));
    error_clear(&err);
    struct registry_totals t;
    registry_get_totals(r, &t);
    ck_assert_int_eq(t.memory_used, 0);
    registry_destroy(r);
}
END_TEST

/* The tiny llama fixture as a GPU holds it, from its configuration (V 256, H 64, I 128, 2
 * layers, 4 heads and 2 KV heads of 16): every matrix bf16, every vector fp32. */
enum {
    TINY_MATRIX_ELEMS = 2 * 256 * 64 /* embedding, untied lm_head */ +
                        2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 128 * 64) /* layers */,
    TINY_VECTOR_ELEMS = 2 * 2 * 64 + 64, /* two norms per layer, the final norm */
    TINY_GPU_WEIGHTS = 2 * TINY_MATRIX_ELEMS + 4 * TINY_VECTOR_ELEMS,
    TINY_GPU_EMBED = 2 * 256 * 64,
};

START_TEST(test_gpu_weight_bytes)
{
    char *target = xasprintf("%s/tests/fixtures/llama", source_dir());
    struct model_file *mf = NULL;
    char err[512];
    ck_assert_msg(model_file_open(target, &mf, err, sizeof err) == 0, "%s", err);
    uint64_t embed = 0;
    ck_assert_int_eq(registry_gpu_weight_bytes(mf, &embed), TINY_GPU_WEIGHTS);
    ck_assert_int_eq(embed, TINY_GPU_EMBED);
    model_file_close(mf);
    free(target);
}
END_TEST

/* The estimate of every model in a registry over dir2 (name -> bytes in out[0..1] for
 * tiny-llama, tiny-qwen35), with the given prefix cache budget, on two made-up GPUs or on the
 * CPU. */
static void estimates(const char *dir2, bool gpus, uint64_t prefix, uint64_t out[2])
{
    struct device_list devs;
    if (gpus)
        device_list_init_made_up(&devs, 2, 1ull << 34);
    struct registry_options o = {
            .models_dir = dir2,
            .threads = 1,
            .ctx = 128,
            .max_batch = 2,
            .queue_depth = 1,
            .memory_budget = 1ull << 34,
            .prefix_cache_bytes = prefix,
            .devices = gpus ? devs.v : NULL,
            .n_devices = gpus ? devs.n : 0,
    };
    struct registry *r = registry_create(&o);
    json_t *doc = registry_describe(r);
    json_t *avail = json_object_get(doc, "available");
    ck_assert_int_eq(json_array_size(avail), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *m = json_array_get(avail, i);
        const char *name = json_string_value(json_object_get(m, "name"));
        int k = strcmp(name, "tiny-llama") == 0 ? 0 : 1;
        out[k] = (uint64_t)json_integer_value(json_object_get(m, "estimated_memory_bytes"));
    }
    json_decref(doc);
    registry_destroy(r);
    if (gpus)
        device_list_free(&devs);
}

/* On GPUs a saved prefix of a Gated DeltaNet model keeps a device copy of its GDN state
 * outside the model's reservation, so such a model reserves the prefix cache's budget as well;
 * a model without GDN layers (its prefixes are KV blocks of the reserved pool) and any model on
 * the CPU do not. */
START_TEST(test_gpu_gdn_model_reserves_prefix_budget)
{
    char *dir2 = fixture_tmpdir();
    const char *names[2] = {"llama", "qwen3_5"}, *links[2] = {"tiny-llama", "tiny-qwen35"};
    for (int i = 0; i < 2; i++) {
        char *target = xasprintf("%s/tests/fixtures/%s", source_dir(), names[i]);
        char *link = xasprintf("%s/%s", dir2, links[i]);
        ck_assert_int_eq(symlink(target, link), 0);
        free(target);
        free(link);
    }
    const uint64_t P = 64ull << 20;
    uint64_t gpu0[2], gpuP[2], cpu0[2], cpuP[2];
    estimates(dir2, true, 0, gpu0);
    estimates(dir2, true, P, gpuP);
    estimates(dir2, false, 0, cpu0);
    estimates(dir2, false, P, cpuP);
    ck_assert_uint_eq(gpuP[1] - gpu0[1], P); /* qwen3_5 on GPUs */
    ck_assert_uint_eq(gpuP[0], gpu0[0]);     /* llama on GPUs */
    ck_assert_uint_eq(cpuP[0], cpu0[0]);
    ck_assert_uint_eq(cpuP[1], cpu0[1]);
    fixture_rmdir(dir2);
}
END_TEST

/* On a node whose models run on GPUs the estimate counts bf16 weights, and a tensor-parallel
 * placement adds every further rank's copy of the embedding table. */
START_TEST(test_gpu_estimate_and_tp_embedding)
{
    uint64_t cache = 2 * (2 * 2 * 2 * 16 * 128 * 4 + 256 * 4);
    uint64_t one = TINY_GPU_WEIGHTS + cache, two = one + TINY_GPU_EMBED;
    for (int fits = 0; fits < 2; fits++) {
        struct device_list gpus;
        /* the first device takes the odd byte of an uneven split */
        uint64_t per_gpu = (two + 1) / 2 - (fits ? 0 : 1);
        device_list_init_made_up(&gpus, 2, 2 * per_gpu);
        struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
        struct registry_options o = {
                .models_dir = dir,
                .threads = 1,
                .ctx = 128,
                .max_batch = 2,
                .queue_depth = 1,
                .devices = gpus.v,
                .n_devices = gpus.n,
                .observer = seen_observe,
                .observer_ud = &s,
        };
        struct registry *r = registry_create(&o);
        json_t *doc = registry_describe(r);
        json_t *m = json_array_get(json_object_get(doc, "available"), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(m, "estimated_memory_bytes")), one);
        json_decref(doc);
        struct error err = ERROR_INIT;
        json_t *both = json_pack("[s, s]", "cuda:0", "cuda:1");
        int rc = registry_load(r, "tiny-llama", both, 0, &err);
        json_decref(both);
        if (!fits) {
            /* enough for half of one, not for half of two */
            ck_assert_int_eq(rc, -1);
            ck_assert_int_eq(err.code, ERR_CONFLICT);
            char want[64];
            snprintf(want, sizeof want, "needs %llu bytes", (unsigned long long)two);
            ck_assert_msg(strstr(error_message(&err), want), "%s", error_message(&err));
        } else {
            ck_assert_int_eq(rc, 0); /* accounted; the load itself then fails (no tokenizer) */
            ck_assert_msg(seen_wait(&s, REGISTRY_STATE_FAILED), "the load never ended");
        }
        error_clear(&err);
        registry_destroy(r);
        device_list_free(&gpus);
    }
}
END_TEST

START_TEST(test_failed_load_then_unload)
{
    struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    struct registry *r = make(tiny_estimate, &s);
    struct error err = ERROR_INIT;
    json_t *cpu = json_pack("[s]", "cpu");
    ck_assert_int_eq(registry_load(r, "tiny-llama", cpu, 7, &err), 0);
    json_decref(cpu);
    ck_assert_msg(seen_wait(&s, REGISTRY_STATE_FAILED), "the load never failed");
    ck_assert_ptr_nonnull(strstr(s.error, "tokenizer.json"));
    json_t *doc = registry_describe(r);
    json_t *m = json_array_get(json_object_get(doc, "loaded"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(m, "state")), "failed");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "placement_id")), 7);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "memory_bytes")), 0);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(m, "error")), "tokenizer"));
    json_decref(doc);
    struct registry_totals t;
    registry_get_totals(r, &t);
    ck_assert_int_eq(t.memory_used, 0);
    ck_assert_int_eq(t.models_failed, 1);
    ck_assert_ptr_null(registry_acquire(r, "tiny-llama", &err));
    error_clear(&err);

    ck_assert_int_eq(registry_unload(r, "tiny-llama", &err), 0);
    ck_assert_msg(seen_wait(&s, REGISTRY_STATE_GONE), "the failed model was never removed");
    doc = registry_describe(r);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "loaded")), 0);
    json_decref(doc);
    ck_assert_int_eq(s.states[0], REGISTRY_STATE_LOADING);
    registry_destroy(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_scan_lists_models_only);
    tcase_add_test(tc, test_load_refusals);
    tcase_add_test(tc, test_failed_load_then_unload);
    tcase_add_test(tc, test_gpu_weight_bytes);
    tcase_add_test(tc, test_gpu_estimate_and_tp_embedding);
    tcase_add_test(tc, test_gpu_gdn_model_reserves_prefix_budget);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
