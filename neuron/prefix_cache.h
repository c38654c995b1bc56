/*
 * neuron/prefix_cache.h — the index of saved prompt prefixes: which token prefixes have a saved
 * model state, found by chained hashes, kept within a byte budget by LRU eviction.
 *
 * Contract: entries are keyed by the tokens of a prefix whose length is a positive multiple of
 * the interval I. A prefix's key is a chain of 64-bit hashes, one per span of I tokens: the hash
 * of span k is computed from the hash of span k - 1 and the span's tokens, so the key of
 * tokens[0 .. kI) extends the key of tokens[0 .. (k-1)I) and a lookup walks one prompt once.
 * Every entry also keeps its full token list, compared on a hit, so a hash collision never
 * returns another prompt's state. The cache owns each entry's value (a struct model_prefix in
 * the neuron; opaque here) through the free_value callback, and measures it through
 * value_bytes; the bytes of all entries (values plus token lists) stay within the budget by
 * evicting the least recently used entries (a hit or an insertion makes an entry the most
 * recently used).
 * Threads: none of its own and no locks; one thread owns a cache (in the neuron, the model's
 * batch worker).
 */
#ifndef CORTEX_NEURON_PREFIX_CACHE_H
#define CORTEX_NEURON_PREFIX_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct prefix_cache_options {
    uint64_t budget_bytes;           /* bytes of all entries together; 0: nothing is ever kept */
    int64_t interval;                /* I: entry lengths are multiples of it; >= 1 */
    void (*free_value)(void *value); /* frees an entry's value; required */
    uint64_t (*value_bytes)(const void *value); /* bytes a value keeps alive now; required */
    uint64_t hash_mask; /* tests: 0 keeps full hashes; else each chained hash is ANDed with it
                            (e.g. 1 makes most prefixes collide) */
};

/* Counters for /metrics. */
struct prefix_cache_stats {
    uint64_t lookups;    /* prefix_cache_lookup() calls */
    uint64_t hits;       /* of which found a prefix */
    uint64_t hit_tokens; /* sum of the lengths found */
    uint64_t inserts;    /* entries added */
    uint64_t evictions;  /* entries dropped to stay within the budget (or asked to) */
    uint64_t entries;    /* entries now */
    uint64_t bytes;      /* bytes of the entries now (values as last measured + token lists) */
};

struct prefix_cache;

/* A new, empty cache (options copied); freed with prefix_cache_destroy(). */
struct prefix_cache *prefix_cache_create(const struct prefix_cache_options *opt);
/* Frees every entry's value and the cache; accepts NULL. */
void prefix_cache_destroy(struct prefix_cache *pc);
int64_t prefix_cache_interval(const struct prefix_cache *pc);
/* Whether an entry of value_bytes for a prefix of length tokens could be held at all. */
bool prefix_cache_fits(const struct prefix_cache *pc, uint64_t value_bytes, int64_t length);

/* The longest saved prefix of tokens[0 .. n) no longer than max_len tokens: its value (still
 * the cache's) with *length set, and the entry becomes the most recently used; NULL (and
 * *length 0) when there is none. Counts a lookup, and a hit with its tokens. */
void *prefix_cache_lookup(struct prefix_cache *pc, const int32_t *tokens, int64_t n,
                          int64_t max_len, int64_t *length);
/* Whether tokens[0 .. length) has an entry (no counters, no LRU change). */
bool prefix_cache_contains(const struct prefix_cache *pc, const int32_t *tokens, int64_t length);
/* Adds an entry for tokens[0 .. length) (copied) holding value, then evicts the least recently
 * used other entries until the budget holds. On 0 the cache owns value. -1 (the caller keeps
 * value) when length is not a positive multiple of the interval, the entry exists already, or
 * it alone would exceed the budget. */
int prefix_cache_insert(struct prefix_cache *pc, const int32_t *tokens, int64_t length, void *value)
        __attribute__((warn_unused_result));
/* Measures every value again (a value's bytes may grow, e.g. GPU blocks it stopped sharing)
 * and evicts until the budget holds. */
void prefix_cache_trim(struct prefix_cache *pc);
/* Drops the least recently used entry; false when the cache is empty. */
bool prefix_cache_evict_lru(struct prefix_cache *pc);
void prefix_cache_stats(const struct prefix_cache *pc, struct prefix_cache_stats *out);

/* One link of the chain: the hash of a prefix extended by span[0 .. n), from the hash prev of
 * the prefix before it (0 for the empty prefix). Pure; exposed for tests. */
uint64_t prefix_cache_hash_span(uint64_t prev, const int32_t *span, int64_t n);

#endif
