/*
 * neuron/prefix_cache.c — chained-hash index of saved prompt prefixes with LRU eviction (see
 * prefix_cache.h for the contract).
 *
 * Layout: a chained hash table (buckets by hash, grown to keep about one entry per bucket)
 * and a doubly linked LRU list, most recently used at the head. Entries with the same hash
 * (collisions, or every entry under a test mask) share a bucket and are told apart by their
 * lengths and token lists.
 */
#include "prefix_cache.h"

#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

struct prefix_entry {
    uint64_t hash;
    int64_t length;
    int32_t *tokens; /* [length] */
    void *value;
    uint64_t bytes;                   /* value bytes as last measured + the token list */
    struct prefix_entry *bucket_next; /* same bucket */
    struct prefix_entry *newer, *older;
};

struct prefix_cache {
    struct prefix_cache_options opt;
    struct prefix_entry **buckets;
    size_t n_buckets; /* a power of two */
    struct prefix_entry *newest, *oldest;
    struct prefix_cache_stats stats;
};

struct prefix_cache *prefix_cache_create(const struct prefix_cache_options *opt)
{
    struct prefix_cache *pc = xcalloc(1, sizeof *pc);
    pc->opt = *opt;
    if (pc->opt.interval < 1)
        pc->opt.interval = 1;
    pc->n_buckets = 64;
    pc->buckets = xcalloc(pc->n_buckets, sizeof *pc->buckets);
    return pc;
}

int64_t prefix_cache_interval(const struct prefix_cache *pc)
{
    return pc->opt.interval;
}

bool prefix_cache_fits(const struct prefix_cache *pc, uint64_t value_bytes, int64_t length)
{
    return value_bytes + (uint64_t)length * sizeof(int32_t) <= pc->opt.budget_bytes;
}

/* The previous hash, then each token, mixed FNV-1a style per 32-bit token, finished with the
 * splitmix64 finaliser so that spans differing in one token spread over all 64 bits. */
uint64_t prefix_cache_hash_span(uint64_t prev, const int32_t *span, int64_t n)
{
    uint64_t h = prev ^ 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) {
        h ^= (uint32_t)span[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

/* The chained hash as the cache keys it (with the test mask applied). */
static uint64_t prefix_cache_chain(const struct prefix_cache *pc, uint64_t prev,
                                   const int32_t *span, int64_t n)
{
    uint64_t h = prefix_cache_hash_span(prev, span, n);
    return pc->opt.hash_mask ? h & pc->opt.hash_mask : h;
}

/* The hash of tokens[0 .. length) (length a multiple of the interval). */
static uint64_t prefix_cache_hash(const struct prefix_cache *pc, const int32_t *tokens,
                                  int64_t length)
{
    uint64_t h = 0;
    for (int64_t at = 0; at < length; at += pc->opt.interval)
        h = prefix_cache_chain(pc, h, tokens + at, pc->opt.interval);
    return h;
}

static struct prefix_entry *prefix_cache_find(const struct prefix_cache *pc, uint64_t hash,
                                              const int32_t *tokens, int64_t length)
{
    for (struct prefix_entry *e = pc->buckets[hash & (pc->n_buckets - 1)]; e; e = e->bucket_next)
        if (e->hash == hash && e->length == length &&
            memcmp(e->tokens, tokens, (size_t)length * sizeof *tokens) == 0)
            return e;
    return NULL;
}

static void prefix_cache_lru_unlink(struct prefix_cache *pc, struct prefix_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        pc->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        pc->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void prefix_cache_lru_push(struct prefix_cache *pc, struct prefix_entry *e)
{
    e->older = pc->newest;
    e->newer = NULL;
    if (pc->newest)
        pc->newest->newer = e;
    else
        pc->oldest = e;
    pc->newest = e;
}

/* Unlinks e from its bucket and the LRU list and frees it with its value. */
static void prefix_cache_remove(struct prefix_cache *pc, struct prefix_entry *e)
{
    struct prefix_entry **pp = &pc->buckets[e->hash & (pc->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->bucket_next;
    *pp = e->bucket_next;
    prefix_cache_lru_unlink(pc, e);
    pc->stats.entries--;
    pc->stats.bytes -= e->bytes;
    pc->opt.free_value(e->value);
    free(e->tokens);
    free(e);
}

void prefix_cache_destroy(struct prefix_cache *pc)
{
    if (!pc)
        return;
    while (pc->oldest)
        prefix_cache_remove(pc, pc->oldest);
    free(pc->buckets);
    free(pc);
}

void *prefix_cache_lookup(struct prefix_cache *pc, const int32_t *tokens, int64_t n,
                          int64_t max_len, int64_t *length)
{
    pc->stats.lookups++;
    *length = 0;
    if (max_len > n)
        max_len = n;
    struct prefix_entry *best = NULL;
    uint64_t h = 0;
    int64_t I = pc->opt.interval;
    for (int64_t at = 0; at + I <= max_len && pc->stats.entries > 0; at += I) {
        h = prefix_cache_chain(pc, h, tokens + at, I);
        struct prefix_entry *e = prefix_cache_find(pc, h, tokens, at + I);
        if (e)
            best = e;
    }
    if (!best)
        return NULL;
    prefix_cache_lru_unlink(pc, best);
    prefix_cache_lru_push(pc, best);
    pc->stats.hits++;
    pc->stats.hit_tokens += (uint64_t)best->length;
    *length = best->length;
    return best->value;
}

bool prefix_cache_contains(const struct prefix_cache *pc, const int32_t *tokens, int64_t length)
{
    if (length <= 0 || length % pc->opt.interval != 0)
        return false;
    return prefix_cache_find(pc, prefix_cache_hash(pc, tokens, length), tokens, length) != NULL;
}

/* Doubles the bucket array once entries outnumber buckets. */
static void prefix_cache_grow(struct prefix_cache *pc)
{
    if (pc->stats.entries < pc->n_buckets)
        return;
    size_t n = pc->n_buckets * 2;
    struct prefix_entry **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < pc->n_buckets; i++) {
        struct prefix_entry *e = pc->buckets[i];
        while (e) {
            struct prefix_entry *next = e->bucket_next;
            e->bucket_next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(pc->buckets);
    pc->buckets = b;
    pc->n_buckets = n;
}

/* Evicts the least recently used entries other than keep until the budget holds. */
static void prefix_cache_fit(struct prefix_cache *pc, const struct prefix_entry *keep)
{
    while (pc->stats.bytes > pc->opt.budget_bytes) {
        struct prefix_entry *victim = pc->oldest;
        if (victim == keep)
            victim = victim->newer;
        if (!victim)
            break;
        prefix_cache_remove(pc, victim);
        pc->stats.evictions++;
    }
}

int prefix_cache_insert(struct prefix_cache *pc, const int32_t *tokens, int64_t length, void *value)
{
    if (length <= 0 || length % pc->opt.interval != 0)
        return -1;
    uint64_t hash = prefix_cache_hash(pc, tokens, length);
    if (prefix_cache_find(pc, hash, tokens, length))
        return -1;
    uint64_t bytes = pc->opt.value_bytes(value) + (uint64_t)length * sizeof *tokens;
    if (bytes > pc->opt.budget_bytes)
        return -1;
    struct prefix_entry *e = xcalloc(1, sizeof *e);
    e->hash = hash;
    e->length = length;
    e->tokens = xmalloc((size_t)length * sizeof *tokens);
    memcpy(e->tokens, tokens, (size_t)length * sizeof *tokens);
    e->value = value;
    e->bytes = bytes;
    pc->stats.entries++;
    pc->stats.inserts++;
    pc->stats.bytes += bytes;
    prefix_cache_grow(pc);
    size_t b = hash & (pc->n_buckets - 1);
    e->bucket_next = pc->buckets[b];
    pc->buckets[b] = e;
    prefix_cache_lru_push(pc, e);
    prefix_cache_fit(pc, e);
    return 0;
}

void prefix_cache_trim(struct prefix_cache *pc)
{
    uint64_t total = 0;
    for (struct prefix_entry *e = pc->newest; e; e = e->older) {
        e->bytes = pc->opt.value_bytes(e->value) + (uint64_t)e->length * sizeof *e->tokens;
        total += e->bytes;
    }
    pc->stats.bytes = total;
    prefix_cache_fit(pc, NULL);
}

bool prefix_cache_evict_lru(struct prefix_cache *pc)
{
    if (!pc->oldest)
        return false;
    prefix_cache_remove(pc, pc->oldest);
    pc->stats.evictions++;
    return true;
}

void prefix_cache_stats(const struct prefix_cache *pc, struct prefix_cache_stats *out)
{
    *out = pc->stats;
}
