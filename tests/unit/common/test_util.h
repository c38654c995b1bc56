/*
 * tests/unit/common/test_util.h — helpers shared by the common/ unit tests: running a suite,
 * capturing log output, waiting for a counter with a deadline, a port that refuses
 * connections, and an http_server on 127.0.0.1.
 *
 * Header-only (static inline): every test is one executable built from one .c file. Helpers
 * that check something fail the calling test with ck_assert.
 */
#ifndef CORTEX_TEST_UTIL_H
#define CORTEX_TEST_UTIL_H

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "log.h"

/* Runs every test of s (and frees it); returns the process exit status: 0, or 1 on failure. */
static inline int test_util_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

/* Sends log lines to a fresh temporary file until test_util_log_capture_end(). */
static inline FILE *test_util_log_capture_start(void)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    log_set_fd(fileno(f));
    return f;
}

/* Puts logging back on stderr, closes f and returns everything logged to it (caller frees). */
static inline char *test_util_log_capture_end(FILE *f)
{
    log_set_fd(2);
    off_t end = lseek(fileno(f), 0, SEEK_END);
    ck_assert_int_ge(end, 0);
    char *text = calloc(1, (size_t)end + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(fileno(f), text, (size_t)end, 0), end);
    fclose(f);
    return text;
}

/* An absolute CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static inline struct timespec test_util_deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* Waits until *counter >= want, where counter is guarded by mu and changes are broadcast on
 * cond; fails the test when that has not happened within ms. */
static inline void test_util_wait_count(pthread_mutex_t *mu, pthread_cond_t *cond,
                                        const int *counter, int want, int ms)
{
    struct timespec deadline = test_util_deadline_in(ms);
    pthread_mutex_lock(mu);
    while (*counter < want) {
        if (pthread_cond_timedwait(cond, mu, &deadline) == ETIMEDOUT)
            break;
    }
    int got = *counter;
    pthread_mutex_unlock(mu);
    ck_assert_msg(got >= want, "waited for %d, got %d", want, got);
}

/* A TCP port on 127.0.0.1 that refuses connections: bound (so nobody else takes it) but not
 * listening. Returns the socket, which the caller closes. */
static inline int test_util_refusing_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Starts an http_server for cfg on a free port of 127.0.0.1 (cfg->listen is ignored). */
static inline http_server_t *test_util_server_start(const http_server_config_t *cfg)
{
    http_server_config_t c = *cfg;
    c.listen = "127.0.0.1:0";
    char *err = NULL;
    http_server_t *s = http_server_create(&c, &err);
    ck_assert_msg(s != NULL, "http_server_create: %s", err ? err : "?");
    ck_assert_uint_gt(http_server_port(s), 0);
    return s;
}

#endif
