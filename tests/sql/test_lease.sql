-- tests/sql/test_lease.sql — the scheduler leader lease and epoch fencing.
--
-- Expiry is simulated by moving expires_at into the past (the lease compares it with
-- clock_timestamp()). That a successor waits for the old leader's open write transaction
-- (lease_check holds the row FOR SHARE) needs two sessions and is not covered here.
BEGIN;
SELECT plan(22);

-- Start from a free lease whatever earlier epochs the database has seen.
UPDATE cortex.scheduler_lease SET expires_at = '-infinity';
CREATE TEMP TABLE e0 AS SELECT epoch FROM cortex.scheduler_lease;

SELECT is(cortex.lease_acquire('sched-a', '10 seconds'), (SELECT epoch + 1 FROM e0),
          'a free lease is taken with the next epoch');
SELECT is(cortex.lease_acquire('sched-b', '10 seconds'), NULL,
          'another scheduler cannot take a held lease');
SELECT is(cortex.lease_acquire('sched-a', '10 seconds'), (SELECT epoch + 1 FROM e0),
          'the holder acquiring again keeps its epoch (renewal)');
SELECT is(cortex.lease_renew('sched-a', (SELECT epoch + 1 FROM e0)), true, 'the holder renews');
SELECT is(cortex.lease_renew('sched-b', (SELECT epoch + 1 FROM e0)), false,
          'another holder cannot renew it');
SELECT lives_ok(format('SELECT cortex.lease_check(%s)', (SELECT epoch + 1 FROM e0)),
                'lease_check accepts the current epoch');
SELECT throws_ok(format('SELECT cortex.lease_check(%s)', (SELECT epoch FROM e0)),
                 'CX001', format('stale scheduler epoch %s', (SELECT epoch FROM e0)),
                 'lease_check rejects an older epoch');
SELECT throws_ok('SELECT cortex.lease_check(NULL)', 'CX001', NULL, 'lease_check rejects NULL');
SELECT is((SELECT ARRAY[actor, epoch::text] FROM cortex.events
            WHERE kind = 'lease.acquired' ORDER BY id DESC LIMIT 1),
          ARRAY['sched-a', (SELECT (epoch + 1)::text FROM e0)],
          'taking the lease is recorded with the new holder and epoch');

-- Writes after lease_check carry the epoch and the holder.
SELECT cortex.record_event('scheduler.test', 'after check') \g /dev/null
SELECT is((SELECT ARRAY[actor, epoch::text] FROM cortex.events
            WHERE kind = 'scheduler.test' ORDER BY id DESC LIMIT 1),
          ARRAY['sched-a', (SELECT (epoch + 1)::text FROM e0)],
          'events written after lease_check carry holder and epoch');

-- The lease runs out: the old epoch is dead even before anyone else takes over.
UPDATE cortex.scheduler_lease SET expires_at = clock_timestamp() - interval '1 second';
SELECT throws_ok(format('SELECT cortex.lease_check(%s)', (SELECT epoch + 1 FROM e0)),
                 'CX001', NULL, 'an expired lease fails lease_check');
SELECT is(cortex.lease_renew('sched-a', (SELECT epoch + 1 FROM e0)), false,
          'an expired lease cannot be renewed');
SELECT is(cortex.lease_acquire('sched-b', '10 seconds'), (SELECT epoch + 2 FROM e0),
          'a standby takes the expired lease with a new epoch');
SELECT throws_ok(format('SELECT cortex.lease_check(%s)', (SELECT epoch + 1 FROM e0)),
                 'CX001', NULL, 'the previous leader is fenced off');
SELECT throws_ok(format('SELECT cortex.demand_resolve(%s, 1, ''satisfied'')', (SELECT epoch + 1 FROM e0)),
                 'CX001', NULL, 'the previous leader cannot resolve demand');
SELECT throws_ok(format('SELECT cortex.mark_dead_nodes(%s)', (SELECT epoch + 1 FROM e0)),
                 'CX001', NULL, 'the previous leader cannot mark nodes down');
SELECT is(cortex.lease_acquire('sched-a', '10 seconds'), NULL,
          'the previous leader cannot take it back while it is held');

-- A clean hand-over.
SELECT is(cortex.lease_release('sched-a', (SELECT epoch + 2 FROM e0)), false,
          'only the holder can release');
SELECT is(cortex.lease_release('sched-b', (SELECT epoch + 2 FROM e0)), true, 'the holder releases');
SELECT is(cortex.lease_acquire('sched-a', '10 seconds'), (SELECT epoch + 3 FROM e0),
          'after a release the lease is free at once, with a new epoch');

-- Bad input.
SELECT throws_ok('SELECT cortex.lease_acquire('''')', '22023', 'lease holder must not be empty',
                 'an empty holder is rejected');
SELECT throws_ok('SELECT cortex.lease_acquire(''x'', ''-5 seconds'')', '22023', NULL,
                 'a negative duration is rejected');

SELECT * FROM finish();
ROLLBACK;
