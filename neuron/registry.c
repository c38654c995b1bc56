/*
 * neuron/registry.c — model scan, memory accounting and the load/unload lifecycle threads
 * (see registry.h for the contract).
 *
 * Protocol: `mu` guards the file list, the model list and every field of a model listed under
 * "guarded" below. Each model has one lifecycle thread from registry_load() until the model is
 * removed: it loads, then sleeps on the registry's condition variable until unload_requested,
 * then unloads, unlinks the model and moves it to the `finished` list. Finished threads are
 * joined (and their models freed) by the next registry call or by registry_destroy().
 * bytes_read is atomic so GET /models reads progress without waiting for the loader.
 */
#include "registry.h"

#include "buf.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REGISTRY_READ_CHUNK    (4u << 20)
#define REGISTRY_PROGRESS_STEP (64u << 20) /* bytes between progress events */

struct registry_model {
    char *name, *path;
    int64_t placement_id;
    uint64_t memory_bytes; /* reserved estimate */
    uint64_t *dev_bytes;   /* [r->n_devices]: memory_bytes split over the chosen devices */
    uint64_t cache_budget; /* the part of memory_bytes that is cache */
    uint64_t kv_budget;    /* its attention KV part: a GPU model's paged cache, reserved at load */
    int64_t ctx;
    pthread_t thread;
    atomic_uint_fast64_t bytes_read;
    uint64_t bytes_total;
    uint64_t t_start_ns;
    struct registry *r;
    struct registry_model *next;
    /* guarded by r->mu */
    enum registry_state state;
    bool unload_requested;
    bool retired; /* no longer found by name: a newer entry replaced this failed one */
    int refs;     /* request handlers holding the model */
    char *error;
    double load_ms;
    struct engine *engine;
    struct batcher *batcher;
};

struct registry {
    struct registry_options opt;
    char *models_dir;
    char *chat_template;    /* NULL: each model's own */
    struct device *devices; /* opt.devices points here */
    size_t n_devices;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* unload requested, refs dropped, model finished */
    struct registry_file *files;
    size_t n_files;
    struct registry_model *models;   /* listed models, newest first */
    struct registry_model *finished; /* threads to join */
    bool stopping;
    uint64_t scan_generation;
};

const char *registry_state_name(enum registry_state s)
{
    switch (s) {
    case REGISTRY_STATE_LOADING:
        return "loading";
    case REGISTRY_STATE_READY:
        return "ready";
    case REGISTRY_STATE_UNLOADING:
        return "unloading";
    case REGISTRY_STATE_FAILED:
        return "failed";
    case REGISTRY_STATE_GONE:
        return "gone";
    }
    return "unknown";
}

uint64_t registry_estimate_kv_bytes(const struct model_config *c, int64_t ctx, int max_batch)
{
    uint64_t per_seq = 0;
    for (int l = 0; l < c->n_layers && l < MODEL_MAX_LAYERS; l++)
        if (!(c->arch == MODEL_ARCH_QWEN3_5 && c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION))
            per_seq += 2 * (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim * (uint64_t)ctx *
                       sizeof(float);
    return (uint64_t)max_batch * per_seq;
}

uint64_t registry_estimate_memory(const struct model_config *c, uint64_t weights_bytes, int64_t ctx,
                                  int max_batch)
{
    uint64_t per_seq = 0;
    for (int l = 0; l < c->n_layers && l < MODEL_MAX_LAYERS; l++) {
        if (c->arch == MODEL_ARCH_QWEN3_5 && c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION) {
            uint64_t rec =
                    (uint64_t)c->lin_v_heads * (uint64_t)c->lin_k_dim * (uint64_t)c->lin_v_dim;
            uint64_t conv_ch = 2 * (uint64_t)c->lin_k_heads * (uint64_t)c->lin_k_dim +
                               (uint64_t)c->lin_v_heads * (uint64_t)c->lin_v_dim;
            uint64_t conv = conv_ch * (uint64_t)(c->lin_conv_kernel > 0 ? c->lin_conv_kernel : 1);
            per_seq += (rec + conv) * sizeof(float);
        } else {
            per_seq += 2 * (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim * (uint64_t)ctx *
                       sizeof(float);
        }
    }
    uint64_t logits = (uint64_t)c->vocab_size * sizeof(float);
    return weights_bytes + (uint64_t)max_batch * (per_seq + logits);
}

uint64_t registry_gpu_weight_bytes(const struct model_file *mf, uint64_t *embed_bytes)
{
    uint64_t total = 0;
    *embed_bytes = 0;
    for (size_t i = 0; i < mf->n_tensors; i++) {
        const struct model_tensor *t = &mf->tensors[i];
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++)
            elems *= (uint64_t)t->shape[d];
        uint64_t bytes = elems * (t->ndim >= 2 ? 2u : 4u);
        total += bytes;
        if (strcmp(t->name, "model.embed_tokens.weight") == 0)
            *embed_bytes = bytes;
    }
    return total;
}

/* Whether loaded models run on this node's GPUs (else on the CPU, made-up GPUs included). */
static bool registry_has_gdn(const struct model_config *c)
{
    for (int l = 0; l < c->n_layers && l < MODEL_MAX_LAYERS; l++)
        if (c->arch == MODEL_ARCH_QWEN3_5 && c->layer_kinds[l] == LAYER_KIND_LINEAR_ATTENTION)
            return true;
    return false;
}

static bool registry_on_gpus(const struct registry *r)
{
    if (r->opt.compute_on_cpu)
        return false;
    for (size_t i = 0; i < r->n_devices; i++)
        if (r->devices[i].kind == DEVICE_KIND_CUDA)
            return true;
    return false;
}

/* ---- scanning ---------------------------------------------------------------------------- */

static void registry_files_free(struct registry_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(files[i].name);
        free(files[i].path);
    }
    free(files);
}

/* Bytes of a file, or of every regular file directly inside a directory. */
static uint64_t registry_disk_bytes(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return (uint64_t)st.st_size;
    uint64_t total = 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *p = xasprintf("%s/%s", path, de->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
        free(p);
    }
    closedir(d);
    return total;
}

static int registry_file_cmp(const void *a, const void *b)
{
    return strcmp(((const struct registry_file *)a)->name, ((const struct registry_file *)b)->name);
}

/* The context a load of c would use under the registry's options. */
static int64_t registry_ctx_for(const struct registry *r, const struct model_config *c)
{
    int64_t model_ctx = c->max_context > 0 ? c->max_context : 4096;
    if (r->opt.ctx > 0 && r->opt.ctx < model_ctx)
        return r->opt.ctx;
    return model_ctx;
}

int registry_scan(struct registry *r, char *err, size_t errlen)
{
    DIR *d = opendir(r->models_dir);
    if (!d) {
        snprintf(err, errlen, "cannot read the models directory %s: %s", r->models_dir,
                 strerror(errno));
        return -1;
    }
    struct registry_file *files = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *path = xasprintf("%s/%s", r->models_dir, de->d_name);
        char *name = NULL;
        struct stat st;
        size_t len = strlen(de->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && len > 5 &&
            strcmp(de->d_name + len - 5, ".gguf") == 0) {
            name = xstrndup(de->d_name, len - 5);
        } else if (S_ISDIR(st.st_mode)) {
            char *cfg = xasprintf("%s/config.json", path);
            if (access(cfg, R_OK) == 0)
                name = xstrdup(de->d_name);
            free(cfg);
        }
        if (!name) {
            free(path);
            continue;
        }
        struct model_file *mf = NULL;
        char merr[512];
        if (model_file_open(path, &mf, merr, sizeof merr) != 0) {
            LOG_WARN("models dir: skipping %s: %s", path, merr);
            free(name);
            free(path);
            continue;
        }
        files = xgrow(files, &cap, n + 1, sizeof *files);
        struct registry_file *f = &files[n++];
        memset(f, 0, sizeof *f);
        f->name = name;
        f->path = path;
        f->format = mf->format;
        snprintf(f->architecture, sizeof f->architecture, "%s", mf->config.arch_name);
        f->size_bytes = registry_disk_bytes(path);
        f->weights_bytes = mf->total_bytes;
        f->device_bytes = mf->total_bytes;
        if (registry_on_gpus(r))
            f->device_bytes = registry_gpu_weight_bytes(mf, &f->embed_bytes);
        f->ctx = registry_ctx_for(r, &mf->config);
        f->estimate_bytes =
                registry_estimate_memory(&mf->config, f->device_bytes, f->ctx, r->opt.max_batch);
        f->kv_bytes = registry_estimate_kv_bytes(&mf->config, f->ctx, r->opt.max_batch);
        /* on a GPU a saved prefix of a Gated DeltaNet model keeps a device copy of the GDN
         * state outside the reservation (its KV blocks come from the reserved pool): the
         * prefix cache's budget is reserved too */
        if (registry_on_gpus(r) && registry_has_gdn(&mf->config))
            f->prefix_bytes = r->opt.prefix_cache_bytes;
        f->estimate_bytes += f->prefix_bytes;
        model_file_close(mf);
    }
    closedir(d);
    if (n > 1)
        qsort(files, n, sizeof *files, registry_file_cmp);
    pthread_mutex_lock(&r->mu);
    registry_files_free(r->files, r->n_files);
    r->files = files;
    r->n_files = n;
    r->scan_generation++;
    pthread_mutex_unlock(&r->mu);
    LOG_INFO("models dir %s: %zu models", r->models_dir, n);
    return 0;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void registry_notify(struct registry *r, struct registry_model *m, enum registry_state s,
                            const char *error)
{
    if (!r->opt.observer)
        return;
    struct registry_event ev = {
            .model = m->name,
            .placement_id = m->placement_id,
            .state = s,
            .bytes_read = atomic_load(&m->bytes_read),
            .bytes_total = m->bytes_total,
            .memory_bytes = m->memory_bytes,
            .error = error,
            .load_ms = m->load_ms,
    };
    r->opt.observer(r->opt.observer_ud, &ev);
}

/* The files a load reads: the .gguf, or the safetensors files of an HF directory. */
static char **registry_load_files(const char *path, size_t *n_out, uint64_t *total)
{
    char **list = NULL;
    size_t n = 0, cap = 0;
    struct stat st;
    *total = 0;
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
        list = xgrow(list, &cap, 1, sizeof *list);
        list[n++] = xstrdup(path);
        *total = (uint64_t)st.st_size;
    } else {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            size_t len = strlen(de->d_name);
            if (len < 12 || strcmp(de->d_name + len - 12, ".safetensors") != 0)
                continue;
            char *p = xasprintf("%s/%s", path, de->d_name);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                list = xgrow(list, &cap, n + 1, sizeof *list);
                list[n++] = p;
                *total += (uint64_t)st.st_size;
            } else {
                free(p);
            }
        }
        if (d)
            closedir(d);
    }
    *n_out = n;
    return list;
}

static bool registry_unload_wanted(struct registry_model *m)
{
    pthread_mutex_lock(&m->r->mu);
    bool v = m->unload_requested;
    pthread_mutex_unlock(&m->r->mu);
    return v;
}

/* Reads every weight file once, so the page cache holds it when the engine maps it and the
 * progress is real bytes. Returns false when an unload was requested meanwhile. */
static bool registry_preread(struct registry_model *m)
{
    size_t n;
    uint64_t total;
    char **list = registry_load_files(m->path, &n, &total);
    m->bytes_total = total;
    char *buf = xmalloc(REGISTRY_READ_CHUNK);
    uint64_t next_event = REGISTRY_PROGRESS_STEP;
    bool go_on = true;
    for (size_t i = 0; i < n && go_on; i++) {
        int fd = open(list[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* engine_open reports it */
        ssize_t got;
        while ((got = read(fd, buf, REGISTRY_READ_CHUNK)) > 0) {
            uint64_t done = atomic_fetch_add(&m->bytes_read, (uint64_t)got) + (uint64_t)got;
            if (done >= next_event) {
                next_event = done + REGISTRY_PROGRESS_STEP;
                if (registry_unload_wanted(m)) {
                    go_on = false;
                    break;
                }
                registry_notify(m->r, m, REGISTRY_STATE_LOADING, NULL);
            }
        }
        close(fd);
    }
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
    free(buf);
    return go_on;
}

static void registry_load_model(struct registry_model *m)
{
    struct registry *r = m->r;
    char err[1024] = "";
    struct engine *e = NULL;
    struct batcher *b = NULL;
    registry_notify(r, m, REGISTRY_STATE_LOADING, NULL);
    if (!registry_preread(m))
        goto out;
    /* the forward pass runs on the GPUs the model was placed on ("cuda:0,1": tensor
     * parallelism over them, cuda_model.h), else on the CPU */
    char device[64] = "cpu";
    for (size_t i = 0, n = 0; i < r->n_devices && !r->opt.compute_on_cpu; i++)
        if (m->dev_bytes[i] > 0 && r->devices[i].kind == DEVICE_KIND_CUDA) {
            size_t at = n ? strlen(device) : 0;
            snprintf(device + at, sizeof device - at, n ? ",%d" : "cuda:%d", r->devices[i].ordinal);
            n++;
        }
    struct engine_options eo = {
            .threads = r->opt.threads,
            .max_context = m->ctx,
            .chat_template = r->chat_template,
            .device = device,
            .kv_cache_bytes = m->kv_budget,
    };
    if (engine_open(m->path, &eo, &e, err, sizeof err) != 0) {
        LOG_ERROR("model %s: load failed: %s", m->name, err);
        goto out;
    }
    if (strcmp(device, "cpu") != 0)
        LOG_INFO("model %s: running on %s, %.2f GB of weights in GPU memory", m->name, device,
                 (double)model_device_weight_bytes(e->model) / 1e9);
    struct batcher_options bo = {
            .max_batch = r->opt.max_batch,
            .queue_depth = r->opt.queue_depth,
            .prefill_chunk = r->opt.prefill_chunk,
            .prefix_cache_bytes = r->opt.prefix_cache_bytes,
            .prefix_interval = r->opt.prefix_interval,
            .model = m->name,
    };
    b = batcher_create(e, &bo);
out:
    pthread_mutex_lock(&r->mu);
    m->load_ms = (double)(timing_now_ns() - m->t_start_ns) / 1e6;
    if (b) {
        m->engine = e;
        m->batcher = b;
        m->state = REGISTRY_STATE_READY;
    } else if (!m->unload_requested) {
        engine_close(e);
        m->state = REGISTRY_STATE_FAILED;
        m->error = xstrdup(err[0] ? err : "load failed");
    }
    enum registry_state s = m->state;
    pthread_mutex_unlock(&r->mu);
    if (s == REGISTRY_STATE_READY)
        LOG_INFO("model %s: ready in %.0f ms (%llu bytes reserved)", m->name, m->load_ms,
                 (unsigned long long)m->memory_bytes);
    if (s != REGISTRY_STATE_LOADING)
        registry_notify(r, m, s, m->error);
}

static void registry_unload_model(struct registry_model *m)
{
    struct registry *r = m->r;
    pthread_mutex_lock(&r->mu);
    bool was_failed = m->state == REGISTRY_STATE_FAILED;
    m->state = REGISTRY_STATE_UNLOADING;
    pthread_mutex_unlock(&r->mu);
    if (!was_failed)
        registry_notify(r, m, REGISTRY_STATE_UNLOADING, NULL);
    if (m->batcher)
        batcher_stop(m->batcher, "the model is being unloaded");
    pthread_mutex_lock(&r->mu);
    while (m->refs > 0)
        pthread_cond_wait(&r->cond, &r->mu);
    pthread_mutex_unlock(&r->mu);
    batcher_destroy(m->batcher);
    engine_close(m->engine);
    m->batcher = NULL;
    m->engine = NULL;
    LOG_INFO("model %s: unloaded", m->name);
}

static void *registry_lifecycle(void *arg)
{
    struct registry_model *m = arg;
    struct registry *r = m->r;
    registry_load_model(m);
    pthread_mutex_lock(&r->mu);
    while (!m->unload_requested)
        pthread_cond_wait(&r->cond, &r->mu);
    pthread_mutex_unlock(&r->mu);
    registry_unload_model(m);
    pthread_mutex_lock(&r->mu);
    for (struct registry_model **pp = &r->models; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    m->state = REGISTRY_STATE_GONE;
    m->next = r->finished;
    r->finished = m;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
    registry_notify(r, m, REGISTRY_STATE_GONE, NULL);
    return NULL;
}

static void registry_model_free(struct registry_model *m)
{
    free(m->dev_bytes);
    free(m->name);
    free(m->path);
    free(m->error);
    free(m);
}

/* Joins finished lifecycle threads and frees their models. Called with mu held; the threads
 * have already left mu (they unlink themselves last), so joining here never deadlocks. The
 * observer call after unlinking is the only work left to them. */
static void registry_reap_locked(struct registry *r)
{
    while (r->finished) {
        struct registry_model *m = r->finished;
        r->finished = m->next;
        pthread_mutex_unlock(&r->mu);
        pthread_join(m->thread, NULL);
        registry_model_free(m);
        pthread_mutex_lock(&r->mu);
    }
}

/* The listed (not retired) model called name, or NULL. mu held. */
static struct registry_model *registry_find_locked(struct registry *r, const char *name)
{
    for (struct registry_model *m = r->models; m; m = m->next)
        if (!m->retired && strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

static const struct registry_file *registry_file_locked(struct registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_files; i++)
        if (strcmp(r->files[i].name, name) == 0)
            return &r->files[i];
    return NULL;
}

static uint64_t registry_used_locked(struct registry *r)
{
    uint64_t used = 0;
    for (struct registry_model *m = r->models; m; m = m->next)
        if (m->state != REGISTRY_STATE_FAILED)
            used += m->memory_bytes;
    return used;
}

/* Bytes reserved on device i. mu held. */
static uint64_t registry_device_used_locked(struct registry *r, size_t i)
{
    uint64_t used = 0;
    for (struct registry_model *m = r->models; m; m = m->next)
        if (m->state != REGISTRY_STATE_FAILED)
            used += m->dev_bytes[i];
    return used;
}

/* "cpu", "cuda:0" and "cuda:1" for the message of an unknown device. Caller frees. */
static char *registry_device_names(const struct registry *r)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < r->n_devices; i++) {
        char label[32];
        device_label(&r->devices[i], label, sizeof label);
        buf_appendf(&b, "%s\"%s\"", i ? ", " : "", label);
    }
    return buf_steal(&b, NULL);
}

/* Reads the request's devices into chosen[0 .. n_devices) (true: named). Returns the number
 * named (0 when the request names none), or -1 with err. */
static int registry_parse_devices(const struct registry *r, const json_t *devices, bool *chosen,
                                  struct error *err)
{
    memset(chosen, 0, r->n_devices * sizeof *chosen);
    if (!devices || json_is_null(devices))
        return 0;
    if (!json_is_array(devices)) {
        error_set(err, ERR_INVALID_REQUEST, "devices", "'devices' must be an array");
        return -1;
    }
    int n = 0;
    size_t i;
    const json_t *d;
    json_array_foreach(devices, i, d)
    {
        int k = device_find(r->devices, r->n_devices, d);
        if (k < 0) {
            char *names = registry_device_names(r);
            error_set(err, ERR_INVALID_REQUEST, "devices",
                      "unknown device in 'devices' at index %zu: this node has %s (a GPU may "
                      "also be named by its ordinal)",
                      i, names);
            free(names);
            return -1;
        }
        if (chosen[k]) {
            error_set(err, ERR_INVALID_REQUEST, "devices",
                      "'devices' names the same device twice (index %zu)", i);
            return -1;
        }
        chosen[k] = true;
        n++;
    }
    return n;
}

/* Splits f's estimate over the chosen devices (or, when none is named, puts it on the device
 * with the most free memory) into dev_bytes, checking every share against its device's free
 * budget; *need receives the whole (on several GPUs, every rank's copy of the embedding table
 * included). mu held. Returns 0, or -1 with ERR_CONFLICT. */
static int registry_place_locked(struct registry *r, const struct registry_file *f, bool *chosen,
                                 int n_chosen, uint64_t *dev_bytes, uint64_t *need,
                                 struct error *err)
{
    if (n_chosen == 0) {
        size_t best = 0;
        uint64_t best_free = 0;
        for (size_t i = 0; i < r->n_devices; i++) {
            uint64_t used = registry_device_used_locked(r, i);
            uint64_t avail = r->devices[i].budget > used ? r->devices[i].budget - used : 0;
            if (i == 0 || avail > best_free) {
                best = i;
                best_free = avail;
            }
        }
        chosen[best] = true;
        n_chosen = 1;
    }
    *need = f->estimate_bytes + (uint64_t)(n_chosen - 1) * f->embed_bytes;
    uint64_t share = *need / (uint64_t)n_chosen;
    uint64_t rest = *need - share * (uint64_t)n_chosen;
    for (size_t i = 0; i < r->n_devices; i++) {
        dev_bytes[i] = 0;
        if (!chosen[i])
            continue;
        dev_bytes[i] = share + rest;
        rest = 0;
        const struct device *d = &r->devices[i];
        uint64_t used = registry_device_used_locked(r, i);
        if (used + dev_bytes[i] > d->budget) {
            char label[32];
            device_label(d, label, sizeof label);
            char prefix[96] = "";
            if (f->prefix_bytes > 0)
                snprintf(prefix, sizeof prefix, " + %llu for saved prefixes",
                         (unsigned long long)f->prefix_bytes);
            error_set(
                    err, ERR_CONFLICT, "model",
                    "model '%s' needs %llu bytes (weights %llu + cache for %d sequences of "
                    "%lld tokens%s)%s but only %llu of the %llu-byte memory budget of %s are free",
                    f->name, (unsigned long long)*need,
                    (unsigned long long)(*need - (f->estimate_bytes - f->device_bytes)),
                    r->opt.max_batch, (long long)f->ctx, prefix,
                    n_chosen > 1 ? ", split over the chosen devices," : "",
                    (unsigned long long)(d->budget > used ? d->budget - used : 0),
                    (unsigned long long)d->budget, label);
            return -1;
        }
    }
    return 0;
}

/* Tells the observer that a load for placement_id was refused at once. */
static void registry_notify_refused(struct registry *r, const char *name, int64_t placement_id,
                                    const struct error *err)
{
    pthread_mutex_lock(&r->mu);
    registry_observer_fn fn = r->opt.observer;
    void *ud = r->opt.observer_ud;
    pthread_mutex_unlock(&r->mu);
    if (!fn || placement_id <= 0)
        return;
    struct registry_event ev = {
            .model = name,
            .placement_id = placement_id,
            .state = REGISTRY_STATE_FAILED,
            .error = error_message(err),
            .refused = true,
    };
    fn(ud, &ev);
}

int registry_load(struct registry *r, const char *name, const json_t *devices, int64_t placement_id,
                  struct error *err)
{
    int rc = -1;
    bool locked = false;
    struct registry_model *old = NULL;
    bool own = false; /* the refusal concerns the placement the listed model holds */
    bool *chosen = xcalloc(r->n_devices, sizeof *chosen);
    uint64_t *dev_bytes = xcalloc(r->n_devices, sizeof *dev_bytes);
    int n_chosen = registry_parse_devices(r, devices, chosen, err);
    if (n_chosen < 0)
        goto out;
    pthread_mutex_lock(&r->mu);
    bool known = registry_file_locked(r, name) != NULL;
    pthread_mutex_unlock(&r->mu);
    if (!known) {
        char serr[512];
        if (registry_scan(r, serr, sizeof serr) != 0)
            LOG_WARN("%s", serr);
    }
    pthread_mutex_lock(&r->mu);
    locked = true;
    registry_reap_locked(r);
    const struct registry_file *f = registry_file_locked(r, name);
    old = registry_find_locked(r, name);
    if (r->stopping) {
        error_set(err, ERR_UNAVAILABLE, NULL, "the node is shutting down");
        goto out;
    }
    if (old && (old->state == REGISTRY_STATE_LOADING || old->state == REGISTRY_STATE_READY) &&
        !old->unload_requested) {
        rc = 0;
        goto out;
    }
    if (old && old->state != REGISTRY_STATE_FAILED) {
        error_set(err, ERR_CONFLICT, "model", "model '%s' is being unloaded; load it again later",
                  name);
        goto out;
    }
    if (!f) {
        error_set(err, ERR_MODEL_NOT_FOUND, "model", "model '%s' is not in the models directory",
                  name);
        goto out;
    }
    uint64_t need = 0;
    if (registry_place_locked(r, f, chosen, n_chosen, dev_bytes, &need, err) != 0)
        goto out;
    if (old) { /* a failed entry: it goes away, the new load takes its name */
        old->retired = true;
        old->unload_requested = true;
        pthread_cond_broadcast(&r->cond);
    }
    struct registry_model *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name);
    m->path = xstrdup(f->path);
    m->placement_id = placement_id;
    m->memory_bytes = need;
    m->cache_budget = f->estimate_bytes - f->device_bytes;
    m->kv_budget = f->kv_bytes;
    m->dev_bytes = dev_bytes;
    dev_bytes = NULL;
    m->ctx = f->ctx;
    m->r = r;
    m->state = REGISTRY_STATE_LOADING;
    m->t_start_ns = timing_now_ns();
    atomic_init(&m->bytes_read, 0);
    m->bytes_total = f->size_bytes;
    if (pthread_create(&m->thread, NULL, registry_lifecycle, m) != 0) {
        error_set(err, ERR_INTERNAL, NULL, "cannot start a loader thread");
        registry_model_free(m);
        goto out;
    }
    m->next = r->models;
    r->models = m;
    LOG_INFO("model %s: loading %s (%llu bytes reserved)", name, m->path,
             (unsigned long long)m->memory_bytes);
    rc = 0;
out:
    /* A refusal for the placement the listed model already holds is not this placement's
     * failure: its own lifecycle reports it. (Read under mu: old may go once it is released.) */
    own = old && old->placement_id == placement_id;
    if (locked)
        pthread_mutex_unlock(&r->mu);
    if (rc != 0 && !own)
        registry_notify_refused(r, name, placement_id, err);
    free(chosen);
    free(dev_bytes);
    return rc;
}

int registry_unload(struct registry *r, const char *name, struct error *err)
{
    pthread_mutex_lock(&r->mu);
    registry_reap_locked(r);
    struct registry_model *m = registry_find_locked(r, name);
    if (m) {
        m->unload_requested = true;
        pthread_cond_broadcast(&r->cond);
    } else {
        error_set(err, ERR_MODEL_NOT_FOUND, "model", "model '%s' is not loaded on this node", name);
    }
    pthread_mutex_unlock(&r->mu);
    return m ? 0 : -1;
}

void registry_unload_all(struct registry *r)
{
    pthread_mutex_lock(&r->mu);
    for (struct registry_model *m = r->models; m; m = m->next)
        m->unload_requested = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

uint64_t registry_scan_generation(struct registry *r)
{
    pthread_mutex_lock(&r->mu);
    uint64_t g = r->scan_generation;
    pthread_mutex_unlock(&r->mu);
    return g;
}

struct registry_model *registry_acquire(struct registry *r, const char *name, struct error *err)
{
    pthread_mutex_lock(&r->mu);
    struct registry_model *m = registry_find_locked(r, name);
    if (m && m->state == REGISTRY_STATE_READY && !m->unload_requested) {
        m->refs++;
    } else if (m && m->state == REGISTRY_STATE_LOADING && !m->unload_requested) {
        error_set(err, ERR_MODEL_LOADING, "model", "model '%s' is still loading", name);
        m = NULL;
    } else {
        error_set(err, ERR_MODEL_NOT_FOUND, "model",
                  "The model '%s' does not exist or is not loaded on this node", name);
        m = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    return m;
}

void registry_release(struct registry *r, struct registry_model *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&r->mu);
    if (--m->refs == 0)
        pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

struct engine *registry_model_engine(const struct registry_model *m)
{
    return m->engine;
}

struct batcher *registry_model_batcher(const struct registry_model *m)
{
    return m->batcher;
}

const char *registry_model_name(const struct registry_model *m)
{
    return m->name;
}

/* ---- reporting --------------------------------------------------------------------------- */

static const char *registry_format_name(enum model_format f)
{
    return f == MODEL_FORMAT_GGUF ? "gguf" : "hf";
}

json_t *registry_describe(struct registry *r)
{
    json_t *available = json_array(), *loaded = json_array();
    pthread_mutex_lock(&r->mu);
    registry_reap_locked(r);
    for (size_t i = 0; i < r->n_files; i++) {
        const struct registry_file *f = &r->files[i];
        json_array_append_new(
                available,
                json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "name", f->name, "path",
                          f->path, "format", registry_format_name(f->format), "architecture",
                          f->architecture, "size_bytes", (json_int_t)f->size_bytes, "weights_bytes",
                          (json_int_t)f->weights_bytes, "context_tokens", (json_int_t)f->ctx,
                          "estimated_memory_bytes", (json_int_t)f->estimate_bytes));
    }
    for (struct registry_model *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        bool failed = m->state == REGISTRY_STATE_FAILED;
        json_t *devs = json_array();
        for (size_t i = 0; i < r->n_devices; i++) {
            char label[32];
            device_label(&r->devices[i], label, sizeof label);
            if (m->dev_bytes[i])
                json_array_append_new(devs, json_string(label));
        }
        json_t *o = json_pack("{s:s, s:s, s:{s:I, s:I}, s:o, s:I, s:I, s:I}", "name", m->name,
                              "state", registry_state_name(m->state), "progress", "bytes_read",
                              (json_int_t)atomic_load(&m->bytes_read), "bytes_total",
                              (json_int_t)m->bytes_total, "devices", devs, "memory_bytes",
                              (json_int_t)(failed ? 0 : m->memory_bytes), "cache_budget_bytes",
                              (json_int_t)(failed ? 0 : m->cache_budget), "context_tokens",
                              (json_int_t)m->ctx);
        if (m->state != REGISTRY_STATE_LOADING)
            json_object_set_new(o, "load_ms", json_real(m->load_ms));
        if (m->placement_id)
            json_object_set_new(o, "placement_id", json_integer(m->placement_id));
        if (m->error)
            json_object_set_new(o, "error", json_string(m->error));
        if (m->batcher && m->state == REGISTRY_STATE_READY) {
            struct batcher_stats s;
            batcher_get_stats(m->batcher, &s);
            json_object_set_new(o, "active_sequences", json_integer(s.active));
            json_object_set_new(o, "queued_requests", json_integer(s.queued));
            json_object_set_new(o, "cache_bytes", json_integer((json_int_t)s.cache_bytes));
        }
        json_array_append_new(loaded, o);
    }
    pthread_mutex_unlock(&r->mu);

    size_t n = registry_device_count(r);
    struct registry_device_usage *use = xcalloc(n, sizeof *use);
    n = registry_get_devices(r, use, n);
    json_t *devices = json_array();
    uint64_t budget = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        const struct device *d = use[i].device;
        char label[32];
        device_label(d, label, sizeof label);
        json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:I, s:I, s:I, s:I}", "id", label, "kind",
                              device_kind_name(d->kind), "ordinal", d->ordinal, "name", d->name,
                              "memory_total_bytes", (json_int_t)d->memory_total, "budget_bytes",
                              (json_int_t)d->budget, "used_bytes", (json_int_t)use[i].used,
                              "free_bytes", (json_int_t)use[i].free);
        if (d->kind == DEVICE_KIND_CUDA) {
            json_object_set_new(o, "uuid", json_string(d->uuid));
            json_object_set_new(o, "compute_capability", json_string(d->compute_capability));
        }
        if (use[i].has_driver_free)
            json_object_set_new(o, "driver_free_bytes",
                                json_integer((json_int_t)use[i].driver_free));
        json_array_append_new(devices, o);
        budget += d->budget;
        used += use[i].used;
    }
    free(use);
    json_t *doc = json_pack("{s:{s:I, s:I, s:I}, s:o, s:o, s:o}", "memory", "budget_bytes",
                            (json_int_t)budget, "used_bytes", (json_int_t)used, "free_bytes",
                            (json_int_t)(budget > used ? budget - used : 0), "devices", devices,
                            "available", available, "loaded", loaded);
    return doc;
}

size_t registry_device_count(const struct registry *r)
{
    return r->n_devices;
}

size_t registry_get_devices(struct registry *r, struct registry_device_usage *out, size_t cap)
{
    size_t n = cap < r->n_devices ? cap : r->n_devices;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].device = &r->devices[i];
        out[i].used = registry_device_used_locked(r, i);
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        const struct device *d = out[i].device;
        out[i].free = d->budget > out[i].used ? d->budget - out[i].used : 0;
        /* The driver's view also counts what other processes hold on the GPU. */
        if (device_query_free(d, &out[i].driver_free) == 0) {
            out[i].has_driver_free = true;
            if (out[i].driver_free < out[i].free)
                out[i].free = out[i].driver_free;
        }
    }
    return n;
}

void registry_get_totals(struct registry *r, struct registry_totals *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_devices; i++)
        out->memory_budget += r->devices[i].budget;
    out->memory_used = registry_used_locked(r);
    for (struct registry_model *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        out->models_loading += m->state == REGISTRY_STATE_LOADING;
        out->models_ready += m->state == REGISTRY_STATE_READY;
        out->models_failed += m->state == REGISTRY_STATE_FAILED;
        if (m->batcher && m->state == REGISTRY_STATE_READY) {
            struct batcher_stats s;
            batcher_get_stats(m->batcher, &s);
            out->active_sequences += s.active;
            out->queued_requests += s.queued;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

void registry_foreach(struct registry *r,
                      void (*fn)(void *ud, const struct registry_model_info *info), void *ud)
{
    pthread_mutex_lock(&r->mu);
    for (struct registry_model *m = r->models; m; m = m->next) {
        if (m->retired)
            continue;
        struct registry_model_info info = {
                .name = m->name,
                .placement_id = m->placement_id,
                .path = m->path,
                .state = m->state,
                .memory_bytes = m->state == REGISTRY_STATE_FAILED ? 0 : m->memory_bytes,
                .cache_budget_bytes = m->state == REGISTRY_STATE_FAILED ? 0 : m->cache_budget,
                .bytes_read = atomic_load(&m->bytes_read),
                .bytes_total = m->bytes_total,
                .load_ms = m->state == REGISTRY_STATE_LOADING ? 0 : m->load_ms,
                .error = m->error,
        };
        if (m->batcher && m->state == REGISTRY_STATE_READY) {
            batcher_get_stats(m->batcher, &info.stats);
            info.has_stats = true;
        }
        fn(ud, &info);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- create / destroy -------------------------------------------------------------------- */

struct registry *registry_create(const struct registry_options *opt)
{
    struct registry *r = xcalloc(1, sizeof *r);
    r->opt = *opt;
    r->models_dir = xstrdup(opt->models_dir ? opt->models_dir : ".");
    r->opt.models_dir = r->models_dir;
    r->chat_template = opt->chat_template ? xstrdup(opt->chat_template) : NULL;
    r->opt.chat_template = r->chat_template;
    if (opt->devices && opt->n_devices > 0) {
        r->devices = xmalloc(opt->n_devices * sizeof *r->devices);
        memcpy(r->devices, opt->devices, opt->n_devices * sizeof *r->devices);
        r->n_devices = opt->n_devices;
    } else {
        struct device_list cpu;
        device_list_init_cpu(&cpu, opt->memory_budget);
        r->devices = cpu.v;
        r->n_devices = cpu.n;
    }
    r->opt.devices = r->devices;
    r->opt.n_devices = r->n_devices;
    if (r->opt.max_batch < 1)
        r->opt.max_batch = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    char err[512];
    if (registry_scan(r, err, sizeof err) != 0)
        LOG_WARN("%s", err);
    return r;
}

void registry_set_observer(struct registry *r, registry_observer_fn fn, void *ud)
{
    pthread_mutex_lock(&r->mu);
    r->opt.observer = fn;
    r->opt.observer_ud = ud;
    pthread_mutex_unlock(&r->mu);
}

void registry_shutdown(struct registry *r)
{
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    for (struct registry_model *m = r->models; m; m = m->next)
        m->unload_requested = true;
    pthread_cond_broadcast(&r->cond);
    while (r->models)
        pthread_cond_wait(&r->cond, &r->mu);
    registry_reap_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void registry_destroy(struct registry *r)
{
    if (!r)
        return;
    registry_shutdown(r);
    registry_files_free(r->files, r->n_files);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r->devices);
    free(r->chat_template);
    free(r->models_dir);
    free(r);
}
