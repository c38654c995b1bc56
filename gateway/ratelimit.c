/*
 * gateway/ratelimit.c — request slices leased from cortex.rate_take, token charges sent in
 * batches (see ratelimit.h).
 *
 * Thread protocol: `mu` guards the key table and every field of every key. The database
 * connection has its own mutex `db_mu`, taken without holding `mu` (a round trip never blocks
 * the admission of other keys that still have slice left). For one key, at most one lease is
 * under way (`leasing`); other admitters of that key wait on `leased`. The sync thread copies
 * what it must send under `mu`, sends it under `db_mu`, and applies the answers under `mu`
 * again, looking each key up anew (keys idle for two minutes are dropped in between).
 */
#include "ratelimit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

#define RATELIMIT_BUCKETS 256
/* A key unseen for this long (and with nothing to send) is forgotten. */
#define RATELIMIT_FORGET_MS 120000
/* A key whose tokens are limited has its minute's totals re-read while it was used this
 * recently. */
#define RATELIMIT_ACTIVE_MS 60000
/* After the database said the minute's requests are spent, requests are refused locally for
 * this long before asking again (slices given back by other gateways are found then), so a
 * client hammering past its limit costs no round trip per request. */
#define RATELIMIT_SPENT_RECHECK_MS 500

struct ratelimit_key {
    int64_t id;
    int64_t rpm, tpm;        /* 0: unlimited */
    bool have_window;        /* the fields below describe a minute that has not ended */
    int64_t window;          /* the minute (Unix seconds of the database's window_start); 0
                                for a minute made up locally while PostgreSQL is away */
    uint64_t window_end_ms;  /* monotonic */
    int64_t granted, used;   /* requests leased for this minute, and admitted from them */
    int64_t tokens_known;    /* the minute's tokens, as the database last said */
    int64_t tokens_pending;  /* charged here, not sent yet */
    int64_t tokens_sending;  /* being sent now */
    bool leasing;            /* a lease round trip is under way */
    uint64_t spent_until_ms; /* monotonic: refuse without asking until then (0: ask) */
    uint64_t last_used_ms;   /* monotonic: last admission or charge */
    uint64_t last_synced_ms; /* monotonic: last answer from the database */
    struct ratelimit_key *next;
};

struct ratelimit {
    struct ratelimit_config cfg; /* conninfo owned */
    pthread_mutex_t db_mu;
    db_t *db;

    pthread_mutex_t mu;
    pthread_cond_t leased; /* a lease ended */
    pthread_cond_t wake;   /* the sync thread: poke or stop */
    struct ratelimit_key *buckets[RATELIMIT_BUCKETS];
    bool stopping, poked;
    struct ratelimit_stats stats;
    pthread_t thread;
    bool started;
};

/* One cortex.rate_take answer. */
struct ratelimit_answer {
    int64_t window;
    int64_t granted, requests_used, tokens_used, rpm, tpm, reset_ms;
};

/* ---- keys --------------------------------------------------------------------------------- */

static struct ratelimit_key **ratelimit_bucket(struct ratelimit *rl, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return &rl->buckets[h >> 56];
}

/* The key's state, or NULL; under mu. */
static struct ratelimit_key *ratelimit_find(struct ratelimit *rl, int64_t id)
{
    for (struct ratelimit_key *k = *ratelimit_bucket(rl, id); k; k = k->next) {
        if (k->id == id)
            return k;
    }
    return NULL;
}

/* The key's state, made when new; under mu. */
static struct ratelimit_key *ratelimit_get(struct ratelimit *rl, int64_t id)
{
    struct ratelimit_key *k = ratelimit_find(rl, id);
    if (k)
        return k;
    struct ratelimit_key **b = ratelimit_bucket(rl, id);
    k = xcalloc(1, sizeof *k);
    k->id = id;
    k->next = *b;
    *b = k;
    return k;
}

/* Forgets the minute once it has ended (its slice and totals go with it); under mu. */
static void ratelimit_roll(struct ratelimit_key *k, uint64_t now)
{
    if (k->have_window && now >= k->window_end_ms) {
        k->have_window = false;
        k->granted = k->used = 0;
        k->tokens_known = 0;
        k->spent_until_ms = 0;
    }
}

/* Seconds until the key's minute ends (at least 1); under mu. */
static int ratelimit_retry_after(const struct ratelimit_key *k, uint64_t now)
{
    if (!k->have_window || k->window_end_ms <= now)
        return 1;
    return (int)((k->window_end_ms - now + 999) / 1000);
}

/* Takes a database answer into the key's state; under mu. */
static void ratelimit_apply(struct ratelimit_key *k, const struct ratelimit_answer *a, uint64_t now)
{
    if (!k->have_window || k->window != a->window) {
        k->granted = k->used = 0; /* a new minute (or the first one seen) */
        k->window = a->window;
        k->have_window = true;
    }
    k->window_end_ms = now + (uint64_t)(a->reset_ms > 0 ? a->reset_ms : 1);
    k->granted += a->granted;
    k->tokens_known = a->tokens_used;
    k->rpm = a->rpm;
    k->tpm = a->tpm;
    k->last_synced_ms = now;
}

/* ---- the database ------------------------------------------------------------------------- */

/*
 * One cortex.rate_take call under db_mu (taken here; the caller holds neither lock). give_back
 * is for the minute `window`. 0 with *out filled, or -1 when PostgreSQL cannot be reached or
 * refused (logged at debug level; the caller falls back on local limits).
 */
static int ratelimit_call(struct ratelimit *rl, int64_t key_id, int64_t want, int64_t give_back,
                          int64_t window, int64_t tokens, struct ratelimit_answer *out)
{
    char id_s[24], want_s[24], back_s[24], window_s[24], tokens_s[24];
    snprintf(id_s, sizeof id_s, "%lld", (long long)key_id);
    snprintf(want_s, sizeof want_s, "%lld", (long long)want);
    snprintf(back_s, sizeof back_s, "%lld", (long long)give_back);
    snprintf(window_s, sizeof window_s, "%lld", (long long)window);
    snprintf(tokens_s, sizeof tokens_s, "%lld", (long long)tokens);
    const char *params[] = {id_s, want_s, back_s, give_back > 0 ? window_s : NULL, tokens_s};
    int rc = -1;
    PGresult *res = NULL;
    pthread_mutex_lock(&rl->db_mu);
    if (db_ensure(rl->db) < 0)
        goto out;
    res = db_exec_params(rl->db,
                         "SELECT extract(epoch FROM window_start)::bigint, granted, requests_used, "
                         "tokens_used, COALESCE(requests_per_minute, 0), "
                         "COALESCE(tokens_per_minute, 0), reset_ms "
                         "FROM cortex.rate_take($1::bigint, $2::int, $3::int, "
                         "to_timestamp($4::bigint), $5::bigint)",
                         5, params);
    if (!res || PQntuples(res) != 1)
        goto out;
    int64_t v[7];
    for (int c = 0; c < 7; c++)
        v[c] = strtoll(PQgetvalue(res, 0, c), NULL, 10);
    *out = (struct ratelimit_answer){.window = v[0],
                                     .granted = v[1],
                                     .requests_used = v[2],
                                     .tokens_used = v[3],
                                     .rpm = v[4],
                                     .tpm = v[5],
                                     .reset_ms = v[6]};
    rc = 0;
out:
    if (rc < 0)
        LOG_DEBUG("rate limit call for key %lld failed: %s", (long long)key_id,
                  db_last_error(rl->db));
    if (res)
        PQclear(res);
    pthread_mutex_unlock(&rl->db_mu);
    pthread_mutex_lock(&rl->mu);
    rl->stats.db_calls++;
    if (rc < 0)
        rl->stats.db_failures++;
    pthread_mutex_unlock(&rl->mu);
    return rc;
}

/* ---- admission ---------------------------------------------------------------------------- */

enum ratelimit_result ratelimit_admit(struct ratelimit *rl, int64_t key_id, int64_t rpm,
                                      int64_t tpm, int *retry_after_s)
{
    enum ratelimit_result res = RATELIMIT_OK;
    *retry_after_s = 0;
    if (key_id <= 0 || (rpm <= 0 && tpm <= 0))
        return RATELIMIT_OK;
    pthread_mutex_lock(&rl->mu);
    struct ratelimit_key *k = ratelimit_get(rl, key_id);
    k->rpm = rpm > 0 ? rpm : 0;
    k->tpm = tpm > 0 ? tpm : 0;
    for (;;) {
        uint64_t now = timing_now_ms();
        k->last_used_ms = now;
        ratelimit_roll(k, now);
        if (k->tpm > 0 && k->tokens_known + k->tokens_pending + k->tokens_sending >= k->tpm) {
            res = RATELIMIT_TOKENS;
            rl->stats.refused_tokens++;
            *retry_after_s = ratelimit_retry_after(k, now);
            break;
        }
        /* A round trip is needed when this gateway's slice is used up, or when the key's
         * minute is unknown here and its tokens are limited (the totals so far are read
         * before the first admission, so a gateway new to the key cannot overshoot). */
        bool lease = k->rpm > 0 && k->used >= k->granted;
        if (!lease && (k->tpm <= 0 || k->have_window)) {
            if (k->rpm > 0)
                k->used++;
            break;
        }
        if (lease && now < k->spent_until_ms) {
            res = RATELIMIT_REQUESTS;
            rl->stats.refused_requests++;
            *retry_after_s = ratelimit_retry_after(k, now);
            break;
        }
        if (k->leasing) {
            pthread_cond_wait(&rl->leased, &rl->mu);
            continue;
        }
        k->leasing = true;
        int64_t tokens = k->tokens_pending; /* the charges ride along */
        k->tokens_pending = 0;
        k->tokens_sending += tokens;
        int64_t want = lease ? k->rpm : 0; /* the database caps it at a tenth of what is left */
        pthread_mutex_unlock(&rl->mu);
        struct ratelimit_answer a;
        int rc = ratelimit_call(rl, key_id, want, 0, 0, tokens, &a);
        pthread_mutex_lock(&rl->mu);
        k->leasing = false;
        k->tokens_sending -= tokens;
        pthread_cond_broadcast(&rl->leased);
        now = timing_now_ms();
        if (rc < 0) {
            /* PostgreSQL is away: this gateway alone admits up to the limit per minute. */
            k->tokens_pending += tokens;
            if (!k->have_window) {
                k->have_window = true;
                k->window = 0;
                k->window_end_ms = now + 60000;
                k->granted = k->used = 0;
            }
            if (!lease)
                continue;
            if (k->granted < k->rpm) {
                k->granted = k->rpm;
                continue;
            }
            res = RATELIMIT_REQUESTS;
            rl->stats.refused_requests++;
            *retry_after_s = ratelimit_retry_after(k, now);
            break;
        }
        ratelimit_apply(k, &a, now);
        if (lease && a.rpm > 0 && a.granted <= 0) {
            uint64_t recheck = now + RATELIMIT_SPENT_RECHECK_MS;
            k->spent_until_ms = recheck < k->window_end_ms ? recheck : k->window_end_ms;
            res = RATELIMIT_REQUESTS;
            rl->stats.refused_requests++;
            *retry_after_s = ratelimit_retry_after(k, now);
            break;
        }
    }
    pthread_mutex_unlock(&rl->mu);
    return res;
}

void ratelimit_charge(struct ratelimit *rl, int64_t key_id, int64_t tpm, int64_t tokens)
{
    if (key_id <= 0 || tpm <= 0 || tokens <= 0)
        return;
    pthread_mutex_lock(&rl->mu);
    struct ratelimit_key *k = ratelimit_get(rl, key_id);
    k->tpm = tpm;
    k->tokens_pending += tokens;
    k->last_used_ms = timing_now_ms();
    pthread_mutex_unlock(&rl->mu);
}

/* ---- the sync thread ---------------------------------------------------------------------- */

/* What the sync thread sends for one key. */
struct ratelimit_job {
    int64_t key_id;
    int64_t give_back, window, tokens;
};

/* Collects this round's work under mu and drops forgotten keys. *n receives the count; the
 * caller frees the array. */
static struct ratelimit_job *ratelimit_collect(struct ratelimit *rl, bool final, size_t *n)
{
    struct ratelimit_job *jobs = NULL;
    size_t cap = 0;
    *n = 0;
    uint64_t now = timing_now_ms();
    for (size_t b = 0; b < RATELIMIT_BUCKETS; b++) {
        struct ratelimit_key **link = &rl->buckets[b];
        while (*link) {
            struct ratelimit_key *k = *link;
            ratelimit_roll(k, now);
            if (!k->leasing && k->tokens_pending == 0 && k->tokens_sending == 0 &&
                now - k->last_used_ms > RATELIMIT_FORGET_MS) {
                *link = k->next;
                free(k);
                continue;
            }
            link = &k->next;
            if (k->leasing)
                continue;
            struct ratelimit_job job = {.key_id = k->id};
            /* An unused slice of a key that went quiet goes back to the other gateways. */
            if (!final && k->have_window && k->window > 0 && k->granted > k->used &&
                now - k->last_used_ms >= (uint64_t)rl->cfg.give_back_ms) {
                job.give_back = k->granted - k->used;
                job.window = k->window;
                k->granted = k->used;
            }
            job.tokens = k->tokens_pending;
            bool refresh = !final && k->tpm > 0 && now - k->last_used_ms < RATELIMIT_ACTIVE_MS;
            if (job.give_back == 0 && job.tokens == 0 && !refresh)
                continue;
            k->tokens_sending += job.tokens;
            k->tokens_pending = 0;
            jobs = xgrow(jobs, &cap, *n + 1, sizeof *jobs);
            jobs[(*n)++] = job;
        }
    }
    return jobs;
}

/* Sends one round; returns false when the database could not be reached. */
static bool ratelimit_round(struct ratelimit *rl, bool final)
{
    size_t n;
    pthread_mutex_lock(&rl->mu);
    struct ratelimit_job *jobs = ratelimit_collect(rl, final, &n);
    pthread_mutex_unlock(&rl->mu);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        struct ratelimit_answer a;
        int rc = -1;
        if (ok)
            rc = ratelimit_call(rl, jobs[i].key_id, 0, jobs[i].give_back, jobs[i].window,
                                jobs[i].tokens, &a);
        if (rc < 0)
            ok = false; /* the rest waits for the next round */
        pthread_mutex_lock(&rl->mu);
        struct ratelimit_key *k = ratelimit_find(rl, jobs[i].key_id);
        if (k) { /* it cannot have been dropped while tokens were being sent */
            k->tokens_sending -= jobs[i].tokens;
            if (rc < 0)
                k->tokens_pending += jobs[i].tokens;
            else
                ratelimit_apply(k, &a, timing_now_ms());
        }
        pthread_mutex_unlock(&rl->mu);
    }
    free(jobs);
    return ok;
}

static void *ratelimit_thread(void *arg)
{
    struct ratelimit *rl = arg;
    pthread_mutex_lock(&rl->mu);
    while (!rl->stopping) {
        if (!rl->poked) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += rl->cfg.sync_ms / 1000;
            until.tv_nsec += (rl->cfg.sync_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&rl->wake, &rl->mu, &until);
        }
        rl->poked = false;
        if (rl->stopping)
            break;
        pthread_mutex_unlock(&rl->mu);
        ratelimit_round(rl, false);
        pthread_mutex_lock(&rl->mu);
    }
    pthread_mutex_unlock(&rl->mu);
    /* Last charges, while the database answers, for about a second. */
    uint64_t give_up = timing_now_ms() + 1000;
    while (!ratelimit_round(rl, true) && timing_now_ms() < give_up)
        timing_sleep_ms(100);
    return NULL;
}

/* ---- life cycle --------------------------------------------------------------------------- */

struct ratelimit *ratelimit_create(const struct ratelimit_config *cfg, char **errmsg)
{
    *errmsg = NULL;
    db_options_t opts = {.application_name = "cortex-gateway-ratelimit",
                         .connect_timeout_s = 2,
                         .statement_timeout_ms = 2000,
                         .keepalives = true,
                         .backoff_max_ms = 2000};
    db_t *db = db_create(cfg->conninfo, &opts, errmsg);
    if (!db)
        return NULL;
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    rl->cfg = *cfg;
    rl->cfg.conninfo = xstrdup(cfg->conninfo);
    if (rl->cfg.sync_ms <= 0)
        rl->cfg.sync_ms = 250;
    if (rl->cfg.give_back_ms <= 0)
        rl->cfg.give_back_ms = 2000;
    rl->db = db;
    pthread_mutex_init(&rl->db_mu, NULL);
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->leased, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rl->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&rl->thread, NULL, ratelimit_thread, rl) != 0) {
        *errmsg = xstrdup("cannot start the rate limit thread");
        ratelimit_destroy(rl);
        return NULL;
    }
    rl->started = true;
    return rl;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    if (rl->started) {
        pthread_mutex_lock(&rl->mu);
        rl->stopping = true;
        pthread_cond_signal(&rl->wake);
        pthread_mutex_unlock(&rl->mu);
        pthread_join(rl->thread, NULL);
    }
    for (size_t b = 0; b < RATELIMIT_BUCKETS; b++) {
        struct ratelimit_key *k = rl->buckets[b];
        while (k) {
            struct ratelimit_key *next = k->next;
            free(k);
            k = next;
        }
    }
    db_destroy(rl->db);
    free((char *)rl->cfg.conninfo);
    pthread_cond_destroy(&rl->wake);
    pthread_cond_destroy(&rl->leased);
    pthread_mutex_destroy(&rl->mu);
    pthread_mutex_destroy(&rl->db_mu);
    free(rl);
}

void ratelimit_sync(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    rl->poked = true;
    pthread_cond_signal(&rl->wake);
    pthread_mutex_unlock(&rl->mu);
}

void ratelimit_get_stats(struct ratelimit *rl, struct ratelimit_stats *out)
{
    pthread_mutex_lock(&rl->mu);
    *out = rl->stats;
    pthread_mutex_unlock(&rl->mu);
}
