/*
 * scheduler/leader.h — leader election: an advisory lock on a dedicated connection plus the
 * lease row's epoch.
 *
 * Contract: every scheduler process owns one leader_t, with its own PostgreSQL connection used
 * for nothing else, and calls leader_step() at least three times per lease period. The epoch is
 * the authority: cortex.lease_acquire() hands out a new epoch only when the lease is free or has
 * expired, and every write of the leader runs cortex.lease_check(epoch), so a stalled or
 * partitioned former leader cannot write once a successor has taken over (FLEET_STALE).
 *
 * The session advisory lock pg_try_advisory_lock(1668248180, 2) says which standby is next in
 * line: the process holding it asks for the lease at every step (and so takes it over as soon
 * as the leader's lease ends: a killed leader's session, and with it its lock, is gone at once);
 * the others ask only once the lease has expired, which covers a leader that stalls while still
 * holding the lock. Either way a standby takes over within one lease period.
 *
 * Locally, leadership is trusted only until the monotonic time at which the last successful
 * acquire or renew started plus the lease duration (leader_valid): a process that was stopped
 * (SIGSTOP) or cut off stops acting on its own, before its writes would fail anyway.
 *
 * Not thread-safe except leader_valid_until_ms(), which any thread may read.
 */
#ifndef CORTEX_SCHEDULER_LEADER_H
#define CORTEX_SCHEDULER_LEADER_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"

typedef struct leader leader_t;

enum leader_role {
    LEADER_ROLE_STANDBY,
    LEADER_ROLE_LEADER,
};

/* A leader for holder (the lease's holder name, e.g. host:pid) on a connection of its own to
 * conninfo. Does not connect. NULL with *errmsg (caller frees) on a malformed conninfo. */
leader_t *leader_create(const char *conninfo, const char *holder, char **errmsg)
        __attribute__((warn_unused_result));
/* Resigns (leader_resign) and closes the connection; accepts NULL. */
void leader_destroy(leader_t *l);

/* One election step with a lease of lease_ms: renews the lease when a third of it has passed
 * (leader), or tries to take it (standby). Returns the role after the step; any failure means
 * standby unless the lease is still locally valid. */
enum leader_role leader_step(leader_t *l, int64_t lease_ms);

/* The role and epoch (0 when standby) as of the last step. */
enum leader_role leader_role(const leader_t *l);
int64_t leader_epoch(const leader_t *l);
/* Whether this process leads and its lease has not run out by the local monotonic clock. */
bool leader_valid(const leader_t *l);
/* Monotonic ms (timing_now_ms) until which leadership is trusted; 0 when standby. */
uint64_t leader_valid_until_ms(const leader_t *l);
/* Whether this process holds the advisory lock (next in line, or leading). */
bool leader_has_lock(const leader_t *l);

/* The database told us (CX001) that our epoch is stale: become standby at once. */
void leader_lost(leader_t *l);
/* Gives the lease up (cortex.lease_release) and the advisory lock, so a standby takes over at
 * once; becomes standby. */
void leader_resign(leader_t *l);

#endif
