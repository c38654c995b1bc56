/*
 * common/timing.h — clocks, sleeping, RFC 3339 timestamps and human durations.
 *
 * Contract: two clocks, never mixed. The monotonic clock (timing_now_ns/ms) measures intervals
 * inside one process: latencies, timeouts, deadlines. The wall clock (timing_wall_ms/s) is only
 * for stamping things a person or a client reads (log lines, "created" fields); it can jump.
 * Fleet-wide time comes from PostgreSQL's now(), never from these.
 *
 * Durations are written "250ms", "5s", "2m", "1h", "1d" (a bare number means milliseconds) and
 * are held as int64_t milliseconds. All functions are thread-safe and allocate nothing.
 */
#ifndef CORTEX_TIMING_H
#define CORTEX_TIMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes needed for the longest timing_format_rfc3339() result, "2026-11-25T20:24:25.123Z". */
#define TIMING_RFC3339_SIZE 32
/* Bytes needed for any timing_format_duration_ms() result. */
#define TIMING_DURATION_SIZE 32

/* Monotonic clock (CLOCK_MONOTONIC) in nanoseconds / milliseconds since an arbitrary origin. */
uint64_t timing_now_ns(void);
uint64_t timing_now_ms(void);

/* Wall clock (CLOCK_REALTIME): milliseconds / seconds since the Unix epoch. */
int64_t timing_wall_ms(void);
int64_t timing_wall_s(void);

/*
 * Writes wall_ms as an RFC 3339 UTC timestamp into out (size >= TIMING_RFC3339_SIZE) and
 * returns out: "2026-11-25T20:24:25.123Z" with with_ms, "2026-11-25T20:24:25Z" without.
 */
char *timing_format_rfc3339(int64_t wall_ms, bool with_ms, char *out);

/* Sleeps for ms milliseconds, resuming after signal interruptions. For pacing, never for
 * synchronisation. */
void timing_sleep_ms(uint64_t ms);

/*
 * Parses a duration: an unsigned decimal integer followed by an optional unit, one of ms, s, m,
 * h, d (no unit: milliseconds), with optional blanks around it. Returns 0 and sets *out_ms, or
 * -1 (leaving *out_ms untouched) on empty text, a sign, a fraction, an unknown unit or overflow.
 */
int timing_parse_duration_ms(const char *text, int64_t *out_ms) __attribute__((warn_unused_result));

/*
 * Writes ms in the largest unit that divides it exactly ("2m", "90s", "250ms", "0ms") into out
 * (size >= TIMING_DURATION_SIZE) and returns out; timing_parse_duration_ms() reads it back.
 */
char *timing_format_duration_ms(int64_t ms, char *out);

#endif
