/*
 * tests/unit/gateway/test_catalog.c — model aliases and the model-list answers
 * (gateway/catalog.h), against hand-written expectations from shared/API.md (both SDKs' list
 * forms in one answer).
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"

#include "common/test_util.h"
#include "gateway/case_util.h"

static bool exists_tiny(const char *name, void *ud)
{
    (void)ud;
    return strcmp(name, "tiny") == 0 || strcmp(name, "claude-local") == 0;
}

START_TEST(test_aliases)
{
    struct catalog_aliases *a = NULL;
    char err[128];
    ck_assert_int_eq(catalog_aliases_parse(" claude-*= tiny ,gpt-4o=big,claude-opus-*=never", &a,
                                           err, sizeof err),
                     0);
    ck_assert_str_eq(catalog_resolve(a, "claude-sonnet-4-5", exists_tiny, NULL), "tiny");
    /* The first matching pattern wins, in order. */
    ck_assert_str_eq(catalog_resolve(a, "claude-opus-4-1", exists_tiny, NULL), "tiny");
    ck_assert_str_eq(catalog_resolve(a, "gpt-4o", exists_tiny, NULL), "big");
    ck_assert_str_eq(catalog_resolve(a, "gpt-4o-mini", exists_tiny, NULL), "gpt-4o-mini");
    /* A served model of that name is never aliased away. */
    ck_assert_str_eq(catalog_resolve(a, "claude-local", exists_tiny, NULL), "claude-local");
    ck_assert_str_eq(catalog_resolve(a, "claude-local", NULL, NULL), "tiny");
    catalog_aliases_destroy(a);

    ck_assert_int_eq(catalog_aliases_parse(NULL, &a, err, sizeof err), 0);
    ck_assert_str_eq(catalog_resolve(a, "x", NULL, NULL), "x");
    catalog_aliases_destroy(a);
    ck_assert_int_eq(catalog_aliases_parse("", &a, err, sizeof err), 0);
    catalog_aliases_destroy(a);
    catalog_aliases_destroy(NULL);

    static const char *const bad[] = {"claude-*", "=tiny", "claude-*=", "a=b,,c", " = "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = (struct catalog_aliases *)1;
        ck_assert_msg(catalog_aliases_parse(bad[i], &a, err, sizeof err) == -1, "%s", bad[i]);
        ck_assert_ptr_null(a);
        ck_assert_ptr_nonnull(strstr(err, "pattern=model"));
    }
}
END_TEST

START_TEST(test_list_forms)
{
    json_t *ids = json_pack("[s, s]", "qwen3.6-27b", "smollm2");
    json_t *list = catalog_list_json(ids, 1700000000);
    json_t *want = json_loads(
            "{\"object\":\"list\",\"has_more\":false,\"first_id\":\"qwen3.6-27b\","
            "\"last_id\":\"smollm2\",\"data\":["
            "{\"id\":\"qwen3.6-27b\",\"object\":\"model\",\"created\":1700000000,"
            "\"owned_by\":\"cortex\",\"type\":\"model\",\"display_name\":\"qwen3.6-27b\","
            "\"created_at\":\"2023-11-14T22:13:20Z\"},"
            "{\"id\":\"smollm2\",\"object\":\"model\",\"created\":1700000000,"
            "\"owned_by\":\"cortex\",\"type\":\"model\",\"display_name\":\"smollm2\","
            "\"created_at\":\"2023-11-14T22:13:20Z\"}]}",
            0, NULL);
    ck_assert_ptr_nonnull(want);
    case_util_assert_match("list", want, list);
    json_decref(want);
    json_decref(list);
    json_decref(ids);

    ids = json_array();
    list = catalog_list_json(ids, 0);
    want = json_loads("{\"object\":\"list\",\"data\":[],\"has_more\":false,\"first_id\":null,"
                      "\"last_id\":null}",
                      0, NULL);
    case_util_assert_match("empty list", want, list);
    json_decref(want);
    json_decref(list);
    json_decref(ids);
}
END_TEST

static Suite *catalog_suite(void)
{
    Suite *s = suite_create("catalog");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_aliases);
    tcase_add_test(tc, test_list_forms);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_util_run_suite(catalog_suite());
}
