/*
 * common/timing.c — monotonic and wall clocks, RFC 3339 formatting, durations (see timing.h).
 */
#include "timing.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct timing_unit {
    const char *suffix;
    int64_t ms;
} timing_units[] = {
        /* Largest first: timing_format_duration_ms() picks the first exact divisor. */
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

uint64_t timing_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t timing_now_ms(void)
{
    return timing_now_ns() / 1000000u;
}

int64_t timing_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t timing_wall_s(void)
{
    return timing_wall_ms() / 1000;
}

char *timing_format_rfc3339(int64_t wall_ms, bool with_ms, char *out)
{
    /* Floor division so that instants before 1970 still get a millisecond part in 0..999. */
    int64_t ms = wall_ms % 1000;
    int64_t s = wall_ms / 1000;
    if (ms < 0) {
        ms += 1000;
        s -= 1;
    }
    time_t t = (time_t)s;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(out, TIMING_RFC3339_SIZE, "1970-01-01T00:00:00Z");
        return out;
    }
    size_t n = strftime(out, TIMING_RFC3339_SIZE, "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out + n, TIMING_RFC3339_SIZE - n, ".%03dZ", (int)ms);
    else
        snprintf(out + n, TIMING_RFC3339_SIZE - n, "Z");
    return out;
}

void timing_sleep_ms(uint64_t ms)
{
    struct timespec req = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
}

int timing_parse_duration_ms(const char *text, int64_t *out_ms)
{
    const char *p = text;
    while (isblank((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    int64_t n = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, *p - '0', &n))
            return -1;
    }
    size_t unit_len = 0;
    while (isalpha((unsigned char)p[unit_len]))
        unit_len++;
    int64_t scale = 1; /* no unit: milliseconds */
    if (unit_len > 0) {
        scale = 0;
        for (size_t i = 0; i < sizeof timing_units / sizeof timing_units[0]; i++) {
            if (strlen(timing_units[i].suffix) == unit_len &&
                strncmp(p, timing_units[i].suffix, unit_len) == 0)
                scale = timing_units[i].ms;
        }
        if (!scale)
            return -1;
    }
    p += unit_len;
    while (isblank((unsigned char)*p))
        p++;
    if (*p != '\0')
        return -1;
    int64_t ms;
    if (__builtin_mul_overflow(n, scale, &ms))
        return -1;
    *out_ms = ms;
    return 0;
}

char *timing_format_duration_ms(int64_t ms, char *out)
{
    for (size_t i = 0; i < sizeof timing_units / sizeof timing_units[0]; i++) {
        const struct timing_unit *u = &timing_units[i];
        if (ms != 0 && ms % u->ms == 0) {
            snprintf(out, TIMING_DURATION_SIZE, "%" PRId64 "%s", ms / u->ms, u->suffix);
            return out;
        }
    }
    snprintf(out, TIMING_DURATION_SIZE, "%" PRId64 "ms", ms);
    return out;
}
