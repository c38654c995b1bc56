/*
 * scheduler/leader.c — leader election: an advisory lock on a dedicated connection plus the
 * lease row's epoch.
 *
 * State: epoch (0 = standby), the local deadline of the lease (monotonic ms), when to renew, and
 * whether the advisory lock is held — which is lost with the session, so a change of the
 * connection's generation clears it.
 */
#include "leader.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "timing.h"
#include "xalloc.h"

#define LEADER_LOCK_CLASS "1668248180"
#define LEADER_LOCK_KEY   "2"

struct leader {
    db_t *db;
    char *holder;
    int64_t epoch;
    _Atomic uint64_t valid_until_ms;
    uint64_t renew_at_ms;
    bool has_lock;
    uint64_t lock_generation; /* db generation the lock was taken in */
};

leader_t *leader_create(const char *conninfo, const char *holder, char **errmsg)
{
    db_options_t opts = {.application_name = "cortex-scheduler-leader",
                         .connect_timeout_s = 5,
                         .statement_timeout_ms = 5000,
                         .keepalives = true};
    db_t *db = db_create(conninfo, &opts, errmsg);
    if (db == NULL)
        return NULL;
    leader_t *l = xcalloc(1, sizeof *l);
    l->db = db;
    l->holder = xstrdup(holder);
    return l;
}

void leader_destroy(leader_t *l)
{
    if (l == NULL)
        return;
    leader_resign(l);
    db_destroy(l->db);
    free(l->holder);
    free(l);
}

static void leader_set_standby(leader_t *l, const char *why)
{
    if (l->epoch != 0)
        LOG_WARN("leadership lost (epoch %" PRId64 "): %s", l->epoch, why);
    l->epoch = 0;
    atomic_store(&l->valid_until_ms, 0);
}

/* A query failed: if the session is gone, the advisory lock went with it. */
static void leader_query_failed(leader_t *l, const char *what)
{
    if (db_last_error_kind(l->db) == DB_ERROR_CONNECTION)
        l->has_lock = false;
    LOG_WARN("%s: %s", what, db_last_error(l->db));
}

/* Takes the advisory lock when it is free. */
static void leader_try_lock(leader_t *l)
{
    if (l->has_lock && l->lock_generation == db_generation(l->db))
        return;
    l->has_lock = false;
    char *got = NULL;
    if (db_query_value(l->db,
                       "SELECT pg_try_advisory_lock(" LEADER_LOCK_CLASS ", " LEADER_LOCK_KEY ")", 0,
                       NULL, &got) < 0) {
        leader_query_failed(l, "advisory lock");
        return;
    }
    l->has_lock = got != NULL && got[0] == 't';
    l->lock_generation = db_generation(l->db);
    free(got);
    if (l->has_lock)
        LOG_INFO("holding the scheduler advisory lock: next in line for the lease");
}

/* Whether the lease has expired (by the database clock). */
static bool leader_lease_expired(leader_t *l)
{
    char *v = NULL;
    int rc = db_query_value(l->db,
                            "SELECT expires_at <= clock_timestamp() FROM cortex.scheduler_lease", 0,
                            NULL, &v);
    if (rc < 0)
        leader_query_failed(l, "reading the lease");
    bool expired = rc == 1 && v != NULL && v[0] == 't';
    free(v);
    return expired;
}

enum leader_role leader_step(leader_t *l, int64_t lease_ms)
{
    uint64_t now = timing_now_ms();
    if (l->epoch != 0 && now >= atomic_load(&l->valid_until_ms))
        leader_set_standby(l, "the lease ran out before it could be renewed");
    if (db_ensure(l->db) < 0) {
        l->has_lock = false;
        LOG_DEBUG("leader connection: %s", db_last_error(l->db));
        return leader_role(l);
    }
    leader_try_lock(l);

    char duration[48], epoch[24];
    snprintf(duration, sizeof duration, "%" PRId64 " milliseconds", lease_ms);
    if (l->epoch != 0) {
        if (now < l->renew_at_ms)
            return LEADER_ROLE_LEADER;
        snprintf(epoch, sizeof epoch, "%" PRId64, l->epoch);
        const char *params[] = {l->holder, epoch, duration};
        char *ok = NULL;
        uint64_t start = timing_now_ms();
        int rc = db_query_value(l->db, "SELECT cortex.lease_renew($1, $2::bigint, $3::interval)", 3,
                                params, &ok);
        bool renewed = rc == 1 && ok != NULL && ok[0] == 't';
        free(ok);
        if (renewed) {
            atomic_store(&l->valid_until_ms, start + (uint64_t)lease_ms);
            l->renew_at_ms = start + (uint64_t)lease_ms / 3;
        } else if (rc == 1) {
            leader_set_standby(l, "another scheduler holds the lease");
        } else {
            leader_query_failed(l, "lease renewal");
        }
        return leader_role(l);
    }

    if (!l->has_lock && !leader_lease_expired(l))
        return LEADER_ROLE_STANDBY;
    const char *params[] = {l->holder, duration};
    char *got = NULL;
    uint64_t start = timing_now_ms();
    if (db_query_value(l->db, "SELECT cortex.lease_acquire($1, $2::interval)", 2, params, &got) <
        0) {
        leader_query_failed(l, "lease acquisition");
        return LEADER_ROLE_STANDBY;
    }
    if (got != NULL) {
        l->epoch = strtoll(got, NULL, 10);
        atomic_store(&l->valid_until_ms, start + (uint64_t)lease_ms);
        l->renew_at_ms = start + (uint64_t)lease_ms / 3;
        LOG_INFO("leading the fleet: epoch %" PRId64 " (holder %s)", l->epoch, l->holder);
    }
    free(got);
    return leader_role(l);
}

enum leader_role leader_role(const leader_t *l)
{
    return l->epoch != 0 ? LEADER_ROLE_LEADER : LEADER_ROLE_STANDBY;
}

int64_t leader_epoch(const leader_t *l)
{
    return l->epoch;
}

bool leader_valid(const leader_t *l)
{
    return l->epoch != 0 && timing_now_ms() < atomic_load(&l->valid_until_ms);
}

uint64_t leader_valid_until_ms(const leader_t *l)
{
    return atomic_load(&((leader_t *)l)->valid_until_ms);
}

bool leader_has_lock(const leader_t *l)
{
    return l->has_lock;
}

void leader_lost(leader_t *l)
{
    leader_set_standby(l, "the database rejected our epoch (CX001)");
}

void leader_resign(leader_t *l)
{
    if (l->epoch != 0 && db_is_connected(l->db)) {
        char epoch[24];
        snprintf(epoch, sizeof epoch, "%" PRId64, l->epoch);
        const char *params[] = {l->holder, epoch};
        char *ok = NULL;
        if (db_query_value(l->db, "SELECT cortex.lease_release($1, $2::bigint)", 2, params, &ok) <
            0)
            LOG_WARN("lease release failed: %s", db_last_error(l->db));
        else
            LOG_INFO("lease released (epoch %" PRId64 ")", l->epoch);
        free(ok);
    }
    l->epoch = 0;
    atomic_store(&l->valid_until_ms, 0);
    if (l->has_lock && db_is_connected(l->db)) {
        char *v = NULL;
        if (db_query_value(l->db,
                           "SELECT pg_advisory_unlock(" LEADER_LOCK_CLASS ", " LEADER_LOCK_KEY ")",
                           0, NULL, &v) < 0)
            db_reset(l->db); /* the session, and the lock with it, goes */
        free(v);
    }
    l->has_lock = false;
}
