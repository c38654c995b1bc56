/*
 * gateway/ratelimit.h — per-API-key limits on requests and tokens per minute that hold across
 * every gateway of the fleet, without a database round trip per request.
 *
 * Contract: the budget of a key lives in PostgreSQL, one counter row per key and minute of
 * database time (cortex.rate_windows, changed only by cortex.rate_take). A gateway leases
 * slices of the minute's request budget with one atomic call and admits requests locally until
 * its slice is used up; the database hands out at most a tenth of what is left per lease (at
 * least 1), so little budget is stranded on other gateways when the minute runs out, and never
 * more than the limit in total. A slice that sees no request for give_back_ms goes back. Once
 * the database says the minute is spent, the key is refused locally, asking again at most every
 * 500 ms (a client hammering past its limit costs no round trip per request).
 * Tokens are charged after a request ends (ratelimit_charge, never blocking); a background
 * thread sends the charges and re-reads the minute's totals every sync_ms, and a key whose
 * minute total (as last read, plus what this gateway has charged since) has reached its tokens
 * limit gets no new requests until the minute ends.
 *
 * So requests per minute hold exactly within a minute (fixed windows: a burst straddling the
 * change of minute can see up to twice the limit, as with any fixed window), tokens per minute
 * to within what the fleet charges in one sync period plus the requests already running.
 *
 * While PostgreSQL cannot be reached a gateway admits up to the whole limit per minute on its
 * own (so a fleet of N admits at most N times the limit) and keeps the token charges for later.
 * Keys without limits (0) never touch the database. All functions are thread-safe.
 */
#ifndef CORTEX_GATEWAY_RATELIMIT_H
#define CORTEX_GATEWAY_RATELIMIT_H

#include <stdint.h>

struct ratelimit_config {
    const char *conninfo; /* required; copied */
    int64_t sync_ms;      /* token charges sent and totals re-read this often; default 250 */
    int64_t give_back_ms; /* an unused slice idle this long is given back; default 2000 */
};

enum ratelimit_result {
    RATELIMIT_OK,       /* admitted */
    RATELIMIT_REQUESTS, /* refused: the minute's requests are used up */
    RATELIMIT_TOKENS,   /* refused: the minute's tokens are used up */
};

struct ratelimit_stats {
    uint64_t refused_requests; /* admissions refused for the requests limit */
    uint64_t refused_tokens;   /* admissions refused for the tokens limit */
    uint64_t db_calls;         /* cortex.rate_take calls (leases and syncs) */
    uint64_t db_failures;      /* of which failed (PostgreSQL away: local limits applied) */
};

struct ratelimit;

/* Starts the sync thread (it connects on its own). NULL with *errmsg set (the caller frees it)
 * on a malformed conninfo. */
struct ratelimit *ratelimit_create(const struct ratelimit_config *cfg, char **errmsg)
        __attribute__((warn_unused_result));
/* Stops the thread, sends the token charges it can within a second, frees. Accepts NULL. */
void ratelimit_destroy(struct ratelimit *rl);

/*
 * Admits one request of key_id, whose limits (from the key lookup; 0 = unlimited) are rpm and
 * tpm. Blocks for one round trip when this gateway's slice of the minute is used up (call it
 * from a worker thread, not a server thread). On refusal *retry_after_s (>= 1) is the number of
 * seconds until the minute ends.
 */
enum ratelimit_result ratelimit_admit(struct ratelimit *rl, int64_t key_id, int64_t rpm,
                                      int64_t tpm, int *retry_after_s)
        __attribute__((warn_unused_result));
/* Charges tokens (input + output) of a finished request of key_id. Never blocks on the
 * network; a key without a tokens limit (tpm 0) is not charged. */
void ratelimit_charge(struct ratelimit *rl, int64_t key_id, int64_t tpm, int64_t tokens);
/* Asks the sync thread to run now (does not wait). */
void ratelimit_sync(struct ratelimit *rl);

void ratelimit_get_stats(struct ratelimit *rl, struct ratelimit_stats *out);

#endif
