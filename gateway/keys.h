/*
 * gateway/keys.h — API keys checked against PostgreSQL (cortex.api_key_lookup), with a short
 * cache so a busy key costs one round trip every few seconds, and a revoked one stops working
 * within the cache time.
 *
 * Contract: keys_check looks a secret up in the cache; a fresh entry (younger than ttl_ms,
 * accepted or refused) answers at once, otherwise one lookup runs on the keys' own connection
 * (serialised by a mutex; statement timeout 2 s). When PostgreSQL cannot be reached, a key
 * that was valid at its last lookup stays valid (the gateway keeps serving through an outage)
 * and an unknown one gets KEYS_UNAVAILABLE. Secrets are kept only in memory. Thread-safe.
 */
#ifndef CORTEX_GATEWAY_KEYS_H
#define CORTEX_GATEWAY_KEYS_H

#include <stdint.h>

enum keys_result {
    KEYS_OK,          /* *out set */
    KEYS_DENIED,      /* unknown, revoked or expired */
    KEYS_UNAVAILABLE, /* no answer from the database and nothing cached */
};

/* What a valid key carries: its id and its limits (ratelimit.h). */
struct keys_key {
    int64_t id;
    int64_t requests_per_minute; /* 0: unlimited */
    int64_t tokens_per_minute;   /* 0: unlimited */
};

struct keys;

/* ttl_ms 0 means 5000. NULL with *errmsg set (the caller frees it) on a malformed conninfo. */
struct keys *keys_create(const char *conninfo, int64_t ttl_ms, char **errmsg)
        __attribute__((warn_unused_result));
void keys_destroy(struct keys *k); /* accepts NULL */

/* Checks secret (the bearer token or x-api-key value); *out is zeroed unless KEYS_OK. A
 * change of a key's limits is seen with the next lookup, like a revocation. Blocking on a
 * cache miss. */
enum keys_result keys_check(struct keys *k, const char *secret, struct keys_key *out);

#endif
