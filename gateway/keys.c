/*
 * gateway/keys.c — the API key cache in front of cortex.api_key_lookup (see keys.h).
 */
#include "keys.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

/* Most secrets remembered; beyond, the oldest lookup is forgotten. */
#define KEYS_CACHE_MAX 4096

struct keys_entry {
    char *secret;
    struct keys_key key; /* id -1: refused */
    uint64_t checked;    /* monotonic ms of the lookup */
};

struct keys {
    pthread_mutex_t mu; /* guards the cache and the connection */
    db_t *db;
    int64_t ttl_ms;
    struct keys_entry *cache;
    size_t n;
};

struct keys *keys_create(const char *conninfo, int64_t ttl_ms, char **errmsg)
{
    *errmsg = NULL;
    db_options_t opts = {.application_name = "cortex-gateway-keys",
                         .connect_timeout_s = 2,
                         .statement_timeout_ms = 2000,
                         .keepalives = true,
                         .backoff_max_ms = 2000};
    db_t *db = db_create(conninfo, &opts, errmsg);
    if (!db)
        return NULL;
    struct keys *k = xcalloc(1, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    k->db = db;
    k->ttl_ms = ttl_ms > 0 ? ttl_ms : 5000;
    k->cache = xcalloc(KEYS_CACHE_MAX, sizeof *k->cache);
    return k;
}

void keys_destroy(struct keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        free(k->cache[i].secret);
    free(k->cache);
    db_destroy(k->db);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

/* The cache entry for secret, or NULL; called with mu held. */
static struct keys_entry *keys_find(struct keys *k, const char *secret)
{
    for (size_t i = 0; i < k->n; i++) {
        if (strcmp(k->cache[i].secret, secret) == 0)
            return &k->cache[i];
    }
    return NULL;
}

/* A slot for secret (the oldest one is reused when full); called with mu held. */
static struct keys_entry *keys_slot(struct keys *k, const char *secret)
{
    struct keys_entry *e;
    if (k->n < KEYS_CACHE_MAX) {
        e = &k->cache[k->n++];
    } else {
        e = &k->cache[0];
        for (size_t i = 1; i < k->n; i++) {
            if (k->cache[i].checked < e->checked)
                e = &k->cache[i];
        }
        free(e->secret);
    }
    e->secret = xstrdup(secret);
    return e;
}

/* Fills e from a lookup's result (no row: refused). */
static void keys_entry_set(struct keys_entry *e, PGresult *res)
{
    e->key = (struct keys_key){.id = -1};
    if (!res || PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        return;
    e->key.id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    e->key.requests_per_minute = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    e->key.tokens_per_minute = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
}

enum keys_result keys_check(struct keys *k, const char *secret, struct keys_key *out)
{
    enum keys_result res = KEYS_UNAVAILABLE;
    *out = (struct keys_key){0};
    if (!secret || !secret[0] || strlen(secret) > 512)
        return KEYS_DENIED;
    pthread_mutex_lock(&k->mu);
    uint64_t now = timing_now_ms();
    struct keys_entry *e = keys_find(k, secret);
    if (e && now - e->checked < (uint64_t)k->ttl_ms)
        goto answer;
    PGresult *found = NULL;
    if (db_ensure(k->db) == 0) {
        const char *params[] = {secret};
        found = db_exec_params(k->db,
                               "SELECT id, COALESCE(requests_per_minute, 0), "
                               "COALESCE(tokens_per_minute, 0) FROM cortex.api_key_lookup($1)",
                               1, params);
    }
    if (!found) {
        LOG_WARN("API key lookup failed: %s", db_last_error(k->db));
        if (!e)
            goto out;
        /* PostgreSQL is away: the last answer stands until it is back. */
    } else {
        if (!e)
            e = keys_slot(k, secret);
        keys_entry_set(e, found);
        e->checked = timing_now_ms();
        PQclear(found);
    }
answer:
    if (e->key.id > 0) {
        *out = e->key;
        res = KEYS_OK;
    } else {
        res = KEYS_DENIED;
    }
out:
    pthread_mutex_unlock(&k->mu);
    return res;
}
