/*
 * tests/unit/gateway/test_metrics.c — gateway/metrics: exact text-format output for a few
 * observations (written out by hand), label escaping, cumulative histogram buckets, and the
 * bounds on label cardinality (models beyond METRICS_MAX_MODELS share "_other", statuses
 * beyond METRICS_MAX_STATUSES share "other").
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"
#include "xalloc.h"

static char *render(struct metrics *m)
{
    struct buf b = BUF_INIT;
    metrics_render(m, &b);
    char *s = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

static void has(const char *text, const char *line)
{
    ck_assert_msg(strstr(text, line) != NULL, "missing:\n%s\nin:\n%s", line, text);
}

static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            n++;
    }
    return n;
}

START_TEST(test_exact_series)
{
    struct metrics *m = metrics_create();
    struct metrics_request ok = {.model = "qwen",
                                 .status = 200,
                                 .proxied = true,
                                 .duration_s = 0.3,
                                 .ttft_s = 0.02,
                                 .tokens_in = 10,
                                 .tokens_out = 4};
    metrics_observe_request(m, &ok);
    ok.duration_s = 7;
    ok.ttft_s = -1; /* no first event */
    metrics_observe_request(m, &ok);
    struct metrics_request refused = {.model = NULL, .anthropic = true, .status = 401};
    metrics_observe_request(m, &refused);
    char *t = render(m);
    has(t, "# HELP cortex_gateway_requests_total ");
    has(t, "# TYPE cortex_gateway_requests_total counter\n");
    has(t, "cortex_gateway_requests_total{model=\"qwen\",dialect=\"openai\",status=\"200\"} 2\n");
    has(t, "cortex_gateway_requests_total{model=\"\",dialect=\"anthropic\",status=\"401\"} 1\n");
    has(t, "# TYPE cortex_gateway_request_duration_seconds histogram\n");
    has(t, "cortex_gateway_request_duration_seconds_bucket{model=\"qwen\",dialect=\"openai\","
           "le=\"0.25\"} 0\n");
    has(t, "cortex_gateway_request_duration_seconds_bucket{model=\"qwen\",dialect=\"openai\","
           "le=\"0.5\"} 1\n");
    has(t, "cortex_gateway_request_duration_seconds_bucket{model=\"qwen\",dialect=\"openai\","
           "le=\"5\"} 1\n");
    has(t, "cortex_gateway_request_duration_seconds_bucket{model=\"qwen\",dialect=\"openai\","
           "le=\"10\"} 2\n");
    has(t, "cortex_gateway_request_duration_seconds_bucket{model=\"qwen\",dialect=\"openai\","
           "le=\"+Inf\"} 2\n");
    has(t, "cortex_gateway_request_duration_seconds_sum{model=\"qwen\",dialect=\"openai\"} "
           "7.300000\n");
    has(t, "cortex_gateway_request_duration_seconds_count{model=\"qwen\",dialect=\"openai\"} 2\n");
    has(t, "cortex_gateway_ttft_seconds_bucket{model=\"qwen\",dialect=\"openai\",le=\"0.025\"} "
           "1\n");
    has(t, "cortex_gateway_ttft_seconds_count{model=\"qwen\",dialect=\"openai\"} 1\n");
    has(t, "cortex_gateway_tokens_in_total{model=\"qwen\"} 20\n");
    has(t, "cortex_gateway_tokens_out_total{model=\"qwen\"} 8\n");
    /* nothing proxied without a model: no histogram or token series for model="" */
    ck_assert_ptr_null(strstr(t, "_bucket{model=\"\""));
    ck_assert_ptr_null(strstr(t, "tokens_in_total{model=\"\""));
    ck_assert_uint_eq(metrics_requests(m, "qwen", false, 200), 2);
    ck_assert_uint_eq(metrics_requests(m, "", true, 401), 1);
    free(t);
    metrics_destroy(m);
}
END_TEST

START_TEST(test_label_escaping)
{
    struct buf b = BUF_INIT;
    metrics_append_label(&b, "a\"b\\c\nd");
    ck_assert_str_eq(buf_cstr(&b), "\"a\\\"b\\\\c\\nd\"");
    buf_free(&b);
    struct metrics *m = metrics_create();
    struct metrics_request r = {.model = "we\"ird\n", .status = 200, .proxied = true};
    metrics_observe_request(m, &r);
    char *t = render(m);
    has(t, "cortex_gateway_requests_total{model=\"we\\\"ird\\n\",dialect=\"openai\","
           "status=\"200\"} 1\n");
    free(t);
    metrics_destroy(m);
}
END_TEST

START_TEST(test_cardinality_bounded)
{
    struct metrics *m = metrics_create();
    char name[32];
    for (int i = 0; i < METRICS_MAX_MODELS + 50; i++) {
        snprintf(name, sizeof name, "model-%d", i);
        struct metrics_request r = {.model = name, .status = 200, .proxied = true};
        metrics_observe_request(m, &r);
    }
    for (int s = 0; s < METRICS_MAX_STATUSES + 10; s++) {
        struct metrics_request r = {.model = "model-0", .status = 400 + s};
        metrics_observe_request(m, &r);
    }
    char *t = render(m);
    /* METRICS_MAX_MODELS - 1 own names plus "_other" (which took the 51 beyond); 200 and
     * METRICS_MAX_STATUSES - 2 other statuses, then "other" for the 12 left */
    ck_assert_int_eq(count_lines(t, "cortex_gateway_tokens_in_total{"), METRICS_MAX_MODELS);
    has(t, "cortex_gateway_requests_total{model=\"_other\",dialect=\"openai\",status=\"200\"} "
           "51\n");
    ck_assert_ptr_null(strstr(t, "model-300"));
    ck_assert_int_eq(count_lines(t, "cortex_gateway_requests_total{model=\"model-0\","),
                     METRICS_MAX_STATUSES);
    has(t, "cortex_gateway_requests_total{model=\"model-0\",dialect=\"openai\",status=\"other\"} "
           "12\n");
    free(t);
    metrics_destroy(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_exact_series);
    tcase_add_test(tc, test_label_escaping);
    tcase_add_test(tc, test_cardinality_bounded);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
