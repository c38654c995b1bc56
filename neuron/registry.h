/*
 * neuron/registry.h — the models of this node: what is on disk, what is loaded, and their
 * lifecycle (loading -> ready -> unloading -> gone, or failed).
 *
 * Contract: the registry scans the models directory (each `*.gguf` file and each directory
 * holding a config.json is a model, named after the file without ".gguf" or after the
 * directory) and keeps one entry per loaded model. registry_load() places the model on devices
 * of the host (device.h: the GPUs, or the CPU budget) and checks their memory budgets (weights
 * plus the cache of max_batch sequences of ctx tokens each, see registry_estimate_memory, split
 * evenly over the chosen devices; on GPUs the weights count as uploaded, bf16, with the
 * embedding table whole on every tensor-parallel rank, see registry_gpu_weight_bytes), then starts a lifecycle thread that reads the files
 * (progress = bytes read / total), opens the engine and starts the model's batcher; it returns
 * at once. The same
 * thread later unloads the model when registry_unload() asks: it stops the batcher (which ends
 * every running request), waits until no request handler holds the model, frees everything and
 * removes the entry. A failed load stays listed (state failed, with the error) until it is
 * unloaded or loaded again; its memory is released at once.
 *
 * Request handlers use registry_acquire()/registry_release() around their use of a ready
 * model's engine (rendering, tokenising) and batcher (submitting); the model is not freed while
 * held. State changes and load progress are also told to an optional observer (the database
 * reporter) from the lifecycle threads, and so is a load with a placement id that
 * registry_load() refuses at once (event.refused).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef CORTEX_NEURON_REGISTRY_H
#define CORTEX_NEURON_REGISTRY_H

#include "batcher.h"
#include "device.h"
#include "engine.h"
#include "error.h"
#include "model_file.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum registry_state {
    REGISTRY_STATE_LOADING,
    REGISTRY_STATE_READY,
    REGISTRY_STATE_UNLOADING,
    REGISTRY_STATE_FAILED,
    REGISTRY_STATE_GONE, /* only in events: the entry has been removed */
};

/* "loading", "ready", "unloading", "failed", "gone". */
const char *registry_state_name(enum registry_state s);

/* One state change or progress report of a loaded model, for the observer. Borrowed. */
struct registry_event {
    const char *model;
    int64_t placement_id; /* from the load request; 0 when none */
    enum registry_state state;
    uint64_t bytes_read, bytes_total; /* load progress */
    uint64_t memory_bytes;            /* reserved for the model */
    const char *error;                /* failed: why */
    double load_ms;                   /* ready: how long the load took */
    bool refused; /* registry_load() refused this placement's load at once (state failed, error
                     says why); the model is not listed */
};

/* Called from lifecycle threads (and from registry_load() for refusals); must be quick and must
 * not call back into the registry. */
typedef void (*registry_observer_fn)(void *ud, const struct registry_event *ev);

struct registry_options {
    const char *models_dir;
    int threads;     /* forward-pass threads per model; < 1: all CPUs */
    int64_t ctx;     /* tokens per sequence, capped at the model's own; < 1: the model's */
    int max_batch;   /* sequences per batch */
    int queue_depth; /* waiting requests per model */
    int64_t prefill_chunk;
    uint64_t prefix_cache_bytes; /* saved prompt prefixes per model (batcher.h); 0: none */
    int64_t prefix_interval;
    uint64_t memory_budget;       /* bytes on the CPU device when devices is NULL */
    const struct device *devices; /* the host's devices (copied); NULL: one CPU device with
                                     memory_budget */
    size_t n_devices;
    const char *chat_template; /* template text used instead of every model's own (copied);
                                  NULL: each model's own */
    bool compute_on_cpu;       /* run every forward pass on the CPU, whatever devices a model is
                            accounted on (tests that make up GPU devices to check the
                            accounting); false: on the GPUs it is placed on */
    registry_observer_fn observer;
    void *observer_ud;
};

/* A model found on disk. */
struct registry_file {
    char *name;
    char *path;
    enum model_format format;
    char architecture[64];
    uint64_t size_bytes;     /* bytes on disk */
    uint64_t weights_bytes;  /* tensor bytes */
    uint64_t device_bytes;   /* the weights as this node holds them: weights_bytes on the CPU,
                                registry_gpu_weight_bytes() where models run on GPUs */
    uint64_t embed_bytes;    /* on GPUs: the embedding table, held whole by every TP rank */
    int64_t ctx;             /* context a load would use */
    uint64_t estimate_bytes; /* device_bytes + cache budget (on one device) */
    uint64_t kv_bytes;       /* the cache budget's attention KV part */
    uint64_t prefix_bytes;   /* its saved-prefix part: on GPUs, for models with GDN layers, the
                                prefix cache's budget (GDN snapshots live on the device) */
};

/* Totals for heartbeats and /metrics (memory summed over the devices). */
struct registry_totals {
    uint64_t memory_budget, memory_used; /* reserved by loading/ready/unloading models */
    int models_loading, models_ready, models_failed;
    int active_sequences, queued_requests;
};

struct registry;
struct registry_model;

/* Creates the registry (options copied) and scans the directory once; a scan problem is logged,
 * not fatal. Destroy with registry_destroy(), which unloads every model and waits. */
struct registry *registry_create(const struct registry_options *opt);
/* Sets the observer (replacing the options' one). Call before the first load. */
void registry_set_observer(struct registry *r, registry_observer_fn fn, void *ud);
/* Refuses new loads, unloads every model and waits until all are gone; the registry stays
 * readable (describe, foreach) until registry_destroy(). Idempotent. */
void registry_shutdown(struct registry *r);
/* registry_shutdown() and frees everything; accepts NULL. */
void registry_destroy(struct registry *r);

/* Rescans the models directory. Returns 0, or -1 with a message when it cannot be read. */
int registry_scan(struct registry *r, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Bytes a model needs when loaded: its weights plus the KV/recurrent state of max_batch
 * sequences of ctx tokens (fp32), plus its logits rows. */
uint64_t registry_estimate_memory(const struct model_config *c, uint64_t weights_bytes, int64_t ctx,
                                  int max_batch);
/* Bytes mf's weights take on a GPU, whatever the file's types: cuda_model.h uploads every
 * matrix as bf16 and every vector as fp32 (a Q4 GGUF grows about 3.5x). *embed_bytes receives
 * the bf16 embedding table's share of that: under tensor parallelism over T GPUs each rank holds
 * the whole table and 1/T of the rest, so a placement needs (T - 1) * *embed_bytes more. */
uint64_t registry_gpu_weight_bytes(const struct model_file *mf, uint64_t *embed_bytes);
/* The attention layers' KV part of that estimate (fp32 keys and values of max_batch sequences
 * of ctx tokens): what a GPU model reserves for its paged KV cache at load (cuda_model.h; it
 * stores bf16, so the reservation holds twice the positions the estimate counts). */
uint64_t registry_estimate_kv_bytes(const struct model_config *c, int64_t ctx, int max_batch);

/* Starts loading name. devices may be NULL (the device with the most free memory is chosen), or
 * a JSON array naming devices as device_find() reads them ("cpu", "cuda:N" or an ordinal); the
 * model's memory is split evenly over them. placement_id (0: none) is the database placement
 * this load fulfils; it is kept with the model for the reporter. Returns 0 when the load
 * started (or the model is already loading or ready), else -1 with err:
 * ERR_MODEL_NOT_FOUND (not on disk), ERR_INVALID_REQUEST (bad devices), ERR_CONFLICT (a chosen
 * device's memory budget cannot hold its share, or the model is being unloaded). A refused load
 * with a placement_id is told to the observer (event.refused). */
int registry_load(struct registry *r, const char *name, const json_t *devices, int64_t placement_id,
                  struct error *err) __attribute__((warn_unused_result));
/* Starts unloading name (cancels a load in progress). Returns 0, or -1 with ERR_MODEL_NOT_FOUND
 * when no such model is loaded. */
int registry_unload(struct registry *r, const char *name, struct error *err)
        __attribute__((warn_unused_result));
/* Starts unloading every model (e.g. the database declared this node dead). */
void registry_unload_all(struct registry *r);
/* Counts completed scans, so observers know when the list of files on disk may have changed. */
uint64_t registry_scan_generation(struct registry *r);

/* The ready model called name, held until registry_release(). NULL with err set when it is not
 * loaded (ERR_MODEL_NOT_FOUND, message for OpenAI clients) or still loading (ERR_MODEL_LOADING). */
struct registry_model *registry_acquire(struct registry *r, const char *name, struct error *err)
        __attribute__((warn_unused_result));
void registry_release(struct registry *r, struct registry_model *m);
struct engine *registry_model_engine(const struct registry_model *m);
struct batcher *registry_model_batcher(const struct registry_model *m);
const char *registry_model_name(const struct registry_model *m);

/* The GET /models document: {"memory": {...}, "devices": [...], "available": [...],
 * "loaded": [...]} (docs/neuron.md). New reference. */
json_t *registry_describe(struct registry *r);
void registry_get_totals(struct registry *r, struct registry_totals *out);

/* One device's memory as the registry accounts it. */
struct registry_device_usage {
    const struct device *device; /* borrowed from the registry: valid while it lives */
    uint64_t used;               /* reserved by loading, ready and unloading models */
    uint64_t free;               /* budget - used; for a GPU at most what its driver reports free */
    bool has_driver_free;        /* a GPU whose driver answered: driver_free is set */
    uint64_t driver_free;        /* bytes free on the GPU as its driver says now */
};

/* Number of devices of the registry. */
size_t registry_device_count(const struct registry *r);
/* Fills out[0 .. min(cap, registry_device_count)) and returns that count. GPUs are asked for
 * their free memory (outside the registry's lock). */
size_t registry_get_devices(struct registry *r, struct registry_device_usage *out, size_t cap);

/* A listed model as registry_foreach() shows it. Borrowed for the duration of the call. */
struct registry_model_info {
    const char *name;
    int64_t placement_id; /* 0 when loaded without one */
    const char *path;
    enum registry_state state;
    uint64_t memory_bytes;            /* reserved (0 when failed) */
    uint64_t cache_budget_bytes;      /* the part of memory_bytes reserved for caches */
    uint64_t bytes_read, bytes_total; /* load progress */
    double load_ms;                   /* duration of the load, once it ended */
    const char *error;                /* failed: why */
    bool has_stats;                   /* ready: stats holds the batcher's counters */
    struct batcher_stats stats;
};

/* Calls fn for every listed model, under the registry's lock: fn must be quick and must not
 * call the registry. */
void registry_foreach(struct registry *r,
                      void (*fn)(void *ud, const struct registry_model_info *info), void *ud);

#endif
