/*
 * tests/unit/common/test_log.c — level filtering, line format, escaping and thread safety of
 * common/log.h. Output is captured in a temporary file set with log_set_fd().
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#include "common/test_util.h"

static FILE *capture_file;

static void capture_start(void)
{
    capture_file = test_util_log_capture_start();
}

/* Everything logged since capture_start(); the caller frees it. */
static char *capture_end(void)
{
    char *text = test_util_log_capture_end(capture_file);
    capture_file = NULL;
    return text;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static void setup(void)
{
    log_set_level(LOG_LEVEL_INFO);
    log_set_component(NULL);
}

START_TEST(test_level_parse_and_name)
{
    static const struct {
        const char *text;
        enum log_level level;
    } cases[] = {
            {"trace", LOG_LEVEL_TRACE}, {"debug", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},
            {"INFO", LOG_LEVEL_INFO},   {"warn", LOG_LEVEL_WARN},   {"warning", LOG_LEVEL_WARN},
            {"error", LOG_LEVEL_ERROR}, {"off", LOG_LEVEL_OFF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum log_level level = LOG_LEVEL_OFF;
        ck_assert_int_eq(log_level_parse(cases[i].text, &level), 0);
        ck_assert_int_eq(level, cases[i].level);
    }
    enum log_level level = LOG_LEVEL_DEBUG;
    ck_assert_int_eq(log_level_parse("verbose", &level), -1);
    ck_assert_int_eq(log_level_parse("", &level), -1);
    ck_assert_int_eq(level, LOG_LEVEL_DEBUG);
    ck_assert_str_eq(log_level_name(LOG_LEVEL_WARN), "warn");
    ck_assert_str_eq(log_level_name(LOG_LEVEL_TRACE), "trace");
    ck_assert_str_eq(log_level_name((enum log_level)42), "unknown");
}
END_TEST

static int evaluations;

static int count_evaluation(void)
{
    return ++evaluations;
}

static const struct log_ctx *ctx_evaluation(void)
{
    static const struct log_ctx ctx = {"req_x", NULL, NULL};
    evaluations++;
    return &ctx;
}

START_TEST(test_disabled_levels_do_not_evaluate_arguments)
{
    log_set_level(LOG_LEVEL_WARN);
    ck_assert_int_eq(log_get_level(), LOG_LEVEL_WARN);
    evaluations = 0;
    capture_start();
    LOG_TRACE("t %d", count_evaluation());
    LOG_DEBUG("d %d", count_evaluation());
    LOG_INFO("i %d", count_evaluation());
    LOGC_INFO(ctx_evaluation(), "ci %d", count_evaluation());
    ck_assert_int_eq(evaluations, 0);
    LOG_WARN("w %d", count_evaluation());
    LOGC_ERROR(ctx_evaluation(), "e %d", count_evaluation());
    ck_assert_int_eq(evaluations, 3);
    char *out = capture_end();
    ck_assert_uint_eq(count_lines(out), 2);
    ck_assert_ptr_nonnull(strstr(out, "level=warn"));
    ck_assert_ptr_nonnull(strstr(out, "msg=\"w 1\""));
    ck_assert_ptr_nonnull(strstr(out, "level=error"));
    ck_assert_ptr_null(strstr(out, "level=info"));
    free(out);

    log_set_level(LOG_LEVEL_OFF);
    capture_start();
    LOG_ERROR("nothing %d", count_evaluation());
    out = capture_end();
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(evaluations, 3);
    free(out);

    log_set_level(LOG_LEVEL_TRACE);
    capture_start();
    LOG_TRACE("all %d", count_evaluation());
    out = capture_end();
    ck_assert_ptr_nonnull(strstr(out, "level=trace"));
    free(out);
}
END_TEST

START_TEST(test_line_format_with_context)
{
    log_set_component("gateway");
    struct log_ctx ctx = {.request_id = "req_abc123", .node = "gpu-01", .model = "qwen3.6-27b"};
    capture_start();
    LOGC_INFO(&ctx, "loaded in %.1fs", 3.25);
    char *out = capture_end();
    char pattern[512];
    snprintf(pattern, sizeof pattern,
             "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z level=info "
             "pid=%ld component=gateway request=req_abc123 node=gpu-01 model=qwen3\\.6-27b "
             "msg=\"loaded in 3\\.2s\"\n$",
             (long)getpid());
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    ck_assert_msg(regexec(&re, out, 0, NULL, 0) == 0, "line did not match: %s", out);
    regfree(&re);
    free(out);
}
END_TEST

START_TEST(test_partial_and_absent_context)
{
    struct log_ctx only_model = {.model = "m1"};
    capture_start();
    LOG_INFO("plain");
    LOGC_WARN(&only_model, "model only");
    char *out = capture_end();
    char *second = strchr(out, '\n') + 1;
    ck_assert_ptr_null(strstr(out, "component="));
    ck_assert_ptr_null(strstr(out, "request="));
    ck_assert_ptr_null(strstr(out, "node="));
    ck_assert_ptr_nonnull(strstr(second, " model=m1 msg=\"model only\"\n"));
    ck_assert(strstr(out, "msg=\"plain\"\n") < second);
    free(out);
}
END_TEST

START_TEST(test_message_escaping_keeps_one_line)
{
    capture_start();
    LOG_ERROR("%s", "bad \"input\"\nforged ts=1 level=error\r\ttab \\ \x01 end");
    char *out = capture_end();
    ck_assert_uint_eq(count_lines(out), 1);
    ck_assert_ptr_nonnull(strstr(
            out,
            " msg=\"bad \\\"input\\\"\\nforged ts=1 level=error\\r\\ttab \\\\ \\u0001 end\"\n"));
    free(out);
}
END_TEST

START_TEST(test_context_values_are_quoted_when_needed)
{
    struct log_ctx ctx = {.request_id = "", .node = "node with space", .model = "a=b\n\"c\""};
    capture_start();
    LOGC_INFO(&ctx, "x");
    char *out = capture_end();
    ck_assert_uint_eq(count_lines(out), 1);
    ck_assert_ptr_nonnull(
            strstr(out, " request=\"\" node=\"node with space\" model=\"a=b\\n\\\"c\\\"\" msg="));
    free(out);
}
END_TEST

START_TEST(test_long_message_truncated)
{
    size_t n = LOG_MSG_MAX + 1000;
    char *big = malloc(n + 1);
    memset(big, 'z', n);
    big[n] = '\0';
    capture_start();
    LOG_INFO("%s", big);
    char *out = capture_end();
    ck_assert_uint_eq(count_lines(out), 1);
    char *msg = strstr(out, "msg=\"");
    ck_assert_ptr_nonnull(msg);
    msg += 5;
    size_t zs = strspn(msg, "z");
    ck_assert_uint_eq(zs, LOG_MSG_MAX);
    ck_assert_str_eq(msg + zs, "\" truncated=true\n");
    free(out);
    free(big);
}
END_TEST

START_TEST(test_errno_preserved)
{
    capture_start();
    errno = ERANGE;
    LOG_WARN("keeps errno");
    ck_assert_int_eq(errno, ERANGE);
    free(capture_end());
}
END_TEST

#define THREADS          4
#define LINES_PER_THREAD 300

static void *log_worker(void *arg)
{
    long id = (long)arg;
    char pad[600];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        LOG_INFO("thread=%ld seq=%d %s end", id, i, pad);
    return NULL;
}

START_TEST(test_threads_never_interleave_lines)
{
    pthread_t t[THREADS];
    capture_start();
    for (long i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, log_worker, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *out = capture_end();
    ck_assert_uint_eq(count_lines(out), THREADS * LINES_PER_THREAD);
    int seen[THREADS] = {0};
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long id;
        int seq;
        ck_assert_int_eq(strncmp(line, "ts=", 3), 0);
        char *msg = strstr(line, " msg=\"thread=");
        ck_assert_ptr_nonnull(msg);
        ck_assert_int_eq(sscanf(msg, " msg=\"thread=%ld seq=%d", &id, &seq), 2);
        ck_assert(id >= 0 && id < THREADS);
        ck_assert_int_eq(seq, seen[id]); /* each thread's lines whole and in its own order */
        seen[id]++;
        size_t len = strlen(line);
        ck_assert_str_eq(line + len - 5, " end\"");
    }
    for (int i = 0; i < THREADS; i++)
        ck_assert_int_eq(seen[i], LINES_PER_THREAD);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_level_parse_and_name);
    tcase_add_test(tc, test_disabled_levels_do_not_evaluate_arguments);
    tcase_add_test(tc, test_line_format_with_context);
    tcase_add_test(tc, test_partial_and_absent_context);
    tcase_add_test(tc, test_message_escaping_keeps_one_line);
    tcase_add_test(tc, test_context_values_are_quoted_when_needed);
    tcase_add_test(tc, test_long_message_truncated);
    tcase_add_test(tc, test_errno_preserved);
    tcase_add_test(tc, test_threads_never_interleave_lines);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
