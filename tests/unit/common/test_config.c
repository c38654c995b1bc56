/*
 * tests/unit/common/test_config.c — settings tables: precedence, every type, bounds, bad
 * values, flag forms and the generated --help (common/config.h).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#include "common/test_util.h"

static struct {
    char *listen;
    char *pg;
    int64_t port;
    double temperature;
    bool verbose;
    int64_t idle;
    int64_t max_body;
} cfg;

static const struct config_entry table[] = {
        {.name = "listen",
         .env = "T_LISTEN",
         .type = CONFIG_TYPE_STRING,
         .def = "0.0.0.0:8080",
         .help = "address to listen on",
         .target = &cfg.listen},
        {.name = "pg",
         .env = "T_PG",
         .type = CONFIG_TYPE_STRING,
         .help = "connection string",
         .target = &cfg.pg},
        {.name = "port",
         .env = "T_PORT",
         .type = CONFIG_TYPE_INT,
         .def = "8080",
         .min = "1",
         .max = "65535",
         .unit = "tcp port",
         .help = "port number",
         .target = &cfg.port},
        {.name = "temperature",
         .env = "T_TEMP",
         .type = CONFIG_TYPE_DOUBLE,
         .def = "0.7",
         .min = "0",
         .max = "2",
         .reloadable = true,
         .help = "sampling temperature",
         .target = &cfg.temperature},
        {.name = "verbose",
         .env = "T_VERBOSE",
         .type = CONFIG_TYPE_BOOL,
         .def = "false",
         .help = "log more",
         .target = &cfg.verbose},
        {.name = "idle",
         .env = "T_IDLE",
         .type = CONFIG_TYPE_DURATION,
         .def = "5m",
         .min = "250ms",
         .max = "1d",
         .reloadable = true,
         .help = "idle timeout",
         .target = &cfg.idle},
        {.name = "max-body",
         .env = "T_MAX_BODY",
         .type = CONFIG_TYPE_SIZE,
         .def = "32MiB",
         .min = "1KiB",
         .help = "largest request body",
         .target = &cfg.max_body},
};
#define N (sizeof table / sizeof table[0])

static char err[CONFIG_ERR_SIZE];

static int parse(char *const *argv, char *const *envp)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    err[0] = '\0';
    return config_parse(table, N, argc, argv, envp, err, sizeof err);
}

static void teardown(void)
{
    config_free(table, N);
}

static char *const no_env[] = {NULL};

START_TEST(test_defaults)
{
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, no_env), 0);
    ck_assert_str_eq(cfg.listen, "0.0.0.0:8080");
    ck_assert_ptr_null(cfg.pg);
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_double_eq(cfg.temperature, 0.7);
    ck_assert(!cfg.verbose);
    ck_assert_int_eq(cfg.idle, 300000);
    ck_assert_int_eq(cfg.max_body, 32 * 1024 * 1024);
}
END_TEST

START_TEST(test_env_overrides_default_and_flag_overrides_env)
{
    char *envp[] = {"T_PORT=9000",
                    "T_LISTEN=127.0.0.1:1",
                    "T_VERBOSE=yes",
                    "T_IDLE=90s",
                    "T_PORTX=1",
                    "OTHER=2",
                    NULL};
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, envp), 0);
    ck_assert_int_eq(cfg.port, 9000);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:1");
    ck_assert(cfg.verbose);
    ck_assert_int_eq(cfg.idle, 90000);

    char *argv2[] = {"prog", "--port=9100", "--listen", "[::1]:2", "--no-verbose", NULL};
    ck_assert_int_eq(parse(argv2, envp), 0);
    ck_assert_int_eq(cfg.port, 9100);
    ck_assert_str_eq(cfg.listen, "[::1]:2");
    ck_assert(!cfg.verbose);
    ck_assert_int_eq(cfg.idle, 90000); /* from env, untouched by flags */
}
END_TEST

START_TEST(test_empty_env_is_unset)
{
    char *envp[] = {"T_PORT=", "T_LISTEN=", NULL};
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, envp), 0);
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_str_eq(cfg.listen, "0.0.0.0:8080");
}
END_TEST

START_TEST(test_process_environment_when_envp_null)
{
    setenv("T_PG", "host=/tmp dbname=cortex", 1);
    setenv("T_MAX_BODY", "1GiB", 1);
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, NULL), 0);
    ck_assert_str_eq(cfg.pg, "host=/tmp dbname=cortex");
    ck_assert_int_eq(cfg.max_body, 1024LL * 1024 * 1024);
    unsetenv("T_PG");
    unsetenv("T_MAX_BODY");
}
END_TEST

START_TEST(test_every_type_from_flags)
{
    char *argv[] = {"prog",
                    "--pg=",
                    "--port",
                    "1",
                    "--temperature=2",
                    "--verbose",
                    "--idle=250ms",
                    "--max-body=64 KB",
                    "--listen=a=b",
                    NULL};
    ck_assert_int_eq(parse(argv, no_env), 0);
    ck_assert_str_eq(cfg.pg, "");
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_double_eq(cfg.temperature, 2.0);
    ck_assert(cfg.verbose);
    ck_assert_int_eq(cfg.idle, 250);
    ck_assert_int_eq(cfg.max_body, 64000);
    ck_assert_str_eq(cfg.listen, "a=b");
    char *argv2[] = {"prog", "--verbose=off", "--temperature", "1e-1", "--idle", "1d", NULL};
    ck_assert_int_eq(parse(argv2, no_env), 0);
    ck_assert(!cfg.verbose);
    ck_assert_double_eq_tol(cfg.temperature, 0.1, 1e-12);
    ck_assert_int_eq(cfg.idle, 86400000);
}
END_TEST

/* Each bad input must fail and the message must contain every listed fragment. */
START_TEST(test_bad_values)
{
    static const struct {
        const char *arg;
        const char *fragments[4];
    } cases[] = {
            {"--port=12a", {"'port'", "--port", "'12a'", "not an integer"}},
            {"--port=", {"'port'", "''", "not an integer"}},
            {"--port=99999999999999999999", {"'port'", "not an integer"}},
            {"--port=70000", {"'port'", "'70000'", "out of range", "1..65535"}},
            {"--port=0", {"'port'", "'0'", "1..65535"}},
            {"--temperature=nan", {"'temperature'", "'nan'", "not a number"}},
            {"--temperature=1e999", {"'temperature'", "not a number"}},
            {"--temperature=2.5", {"'temperature'", "'2.5'", "0..2"}},
            {"--temperature=-0.1", {"'temperature'", "0..2"}},
            {"--verbose=maybe", {"'verbose'", "'maybe'", "not a boolean"}},
            {"--idle=5x", {"'idle'", "'5x'", "not a duration"}},
            {"--idle=100ms", {"'idle'", "'100ms'", "out of range", "250ms..1d"}},
            {"--idle=2d", {"'idle'", "250ms..1d"}},
            {"--max-body=1XB", {"'max-body'", "'1XB'", "not a size"}},
            {"--max-body=1000", {"'max-body'", "'1000'", ">= 1KiB"}},
            {"--max-body=-5", {"'max-body'", "not a size"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {"prog", (char *)cases[i].arg, NULL};
        ck_assert_int_eq(parse(argv, no_env), -1);
        for (int f = 0; f < 4 && cases[i].fragments[f]; f++)
            ck_assert_msg(strstr(err, cases[i].fragments[f]), "%s: '%s' not in: %s", cases[i].arg,
                          cases[i].fragments[f], err);
    }
}
END_TEST

START_TEST(test_bad_env_names_its_source)
{
    char *envp[] = {"T_PORT=80000", NULL};
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, envp), -1);
    ck_assert_ptr_nonnull(strstr(err, "'port'"));
    ck_assert_ptr_nonnull(strstr(err, "T_PORT"));
    ck_assert_ptr_nonnull(strstr(err, "'80000'"));
    ck_assert_ptr_nonnull(strstr(err, "1..65535"));
    /* A valid flag does not rescue a bad environment value: env is checked first. */
    char *argv2[] = {"prog", "--port=80", NULL};
    ck_assert_int_eq(parse(argv2, envp), -1);
}
END_TEST

START_TEST(test_bad_arguments)
{
    static const struct {
        const char *args[3];
        const char *fragment;
    } cases[] = {
            {{"--nope=1"}, "unknown option '--nope'"},
            {{"--nope"}, "unknown option '--nope'"},
            {{"--no-port"}, "unknown option '--no-port'"},
            {{"--no-verbose=1"}, "unknown option '--no-verbose'"},
            {{"positional"}, "unexpected argument 'positional'"},
            {{"-p", "80"}, "unexpected argument '-p'"},
            {{"--"}, "unexpected argument '--'"},
            {{"--port"}, "'--port' needs a value"},
            {{"--port=80", "--listen"}, "'--listen' needs a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[5] = {"prog"};
        for (int a = 0; a < 3 && cases[i].args[a]; a++)
            argv[a + 1] = (char *)cases[i].args[a];
        ck_assert_int_eq(parse(argv, no_env), -1);
        ck_assert_msg(strstr(err, cases[i].fragment), "'%s' not in: %s", cases[i].fragment, err);
    }
}
END_TEST

START_TEST(test_help_requested)
{
    char *argv[] = {"prog", "--port=bad", "--help", NULL};
    ck_assert_int_eq(parse(argv, no_env), CONFIG_PARSE_HELP);
    char *argv2[] = {"prog", "-h", NULL};
    ck_assert_int_eq(parse(argv2, no_env), CONFIG_PARSE_HELP);
}
END_TEST

START_TEST(test_help_text_lists_every_entry)
{
    char *help = config_help("cortex-test", "A test program.", table, N);
    ck_assert_int_eq(strncmp(help, "Usage: cortex-test ", 19), 0);
    ck_assert_ptr_nonnull(strstr(help, "A test program."));
    for (size_t i = 0; i < N; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", table[i].name);
        ck_assert_msg(strstr(help, flag), "%s missing", flag);
        ck_assert_msg(strstr(help, table[i].env), "%s missing", table[i].env);
        ck_assert_msg(strstr(help, table[i].help), "help of %s missing", table[i].name);
        if (table[i].def)
            ck_assert_msg(strstr(help, table[i].def), "default of %s missing", table[i].name);
    }
    ck_assert_ptr_nonnull(strstr(help, "--port=INT (tcp port)"));
    ck_assert_ptr_nonnull(strstr(help, "range 1..65535"));
    ck_assert_ptr_nonnull(strstr(help, "range 250ms..1d, reloadable"));
    ck_assert_ptr_nonnull(strstr(help, "range >= 1KiB"));
    ck_assert_ptr_nonnull(strstr(help, "--verbose[=BOOL], --no-verbose"));
    ck_assert_ptr_nonnull(strstr(help, "--max-body=SIZE"));
    ck_assert_ptr_nonnull(strstr(help, "--idle=DURATION"));
    ck_assert_ptr_nonnull(strstr(help, "default (unset)"));
    ck_assert_ptr_nonnull(strstr(help, "--help"));
    free(help);
}
END_TEST

START_TEST(test_size_syntax)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } good[] = {
            {"0", 0},
            {"512", 512},
            {"512B", 512},
            {"1kb", 1000},
            {"1KB", 1000},
            {"32MB", 32000000},
            {"2GB", 2000000000},
            {"1TB", 1000000000000LL},
            {"64KiB", 65536},
            {"64 kib", 65536},
            {"1MiB", 1048576},
            {"1GiB", 1073741824},
            {"2TiB", 2199023255552LL},
            {" 7 MiB ", 7340032},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        ck_assert_msg(config_parse_size(good[i].text, &v) == 0, "'%s'", good[i].text);
        ck_assert_int_eq(v, good[i].bytes);
    }
    static const char *const bad[] = {"",      "MB",          "-1",
                                      "1.5GB", "1 M B",       "1PB",
                                      "1MiBx", "99999999TiB", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = -1;
        ck_assert_msg(config_parse_size(bad[i], &v) == -1, "'%s' accepted", bad[i]);
        ck_assert_int_eq(v, -1);
    }
}
END_TEST

START_TEST(test_bool_syntax)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "on", "1"};
    static const char *const no[] = {"false", "No", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        bool b = false;
        ck_assert_int_eq(config_parse_bool(yes[i], &b), 0);
        ck_assert(b);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        bool b = true;
        ck_assert_int_eq(config_parse_bool(no[i], &b), 0);
        ck_assert(!b);
    }
    bool b = true;
    ck_assert_int_eq(config_parse_bool("2", &b), -1);
    ck_assert_int_eq(config_parse_bool("", &b), -1);
    ck_assert(b);
}
END_TEST

START_TEST(test_set_and_find)
{
    char *argv[] = {"prog", NULL};
    ck_assert_int_eq(parse(argv, no_env), 0);
    const struct config_entry *e = config_find(table, N, "idle");
    ck_assert_ptr_nonnull(e);
    ck_assert(e->reloadable);
    ck_assert_ptr_null(config_find(table, N, "idl"));
    ck_assert_int_eq(config_set(table, N, "idle", "10s", err, sizeof err), 0);
    ck_assert_int_eq(cfg.idle, 10000);
    ck_assert_int_eq(config_set(table, N, "idle", "10ms", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "'idle'"));
    ck_assert_int_eq(cfg.idle, 10000);
    ck_assert_int_eq(config_set(table, N, "nope", "1", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown setting 'nope'"));
    ck_assert_int_eq(config_set(table, N, "listen", "x:1", err, sizeof err), 0);
    ck_assert_str_eq(cfg.listen, "x:1");
    config_free(table, N);
    ck_assert_ptr_null(cfg.listen);
    ck_assert_ptr_null(cfg.pg);
}
END_TEST

START_TEST(test_table_mistakes_are_reported)
{
    static int64_t v;
    static const struct {
        struct config_entry entry;
        const char *fragment;
    } cases[] = {
            {{.name = "a", .type = CONFIG_TYPE_INT, .help = "h", .target = &v}, "no default"},
            {{.name = "a", .type = CONFIG_TYPE_INT, .def = "x", .help = "h", .target = &v},
             "default does not parse"},
            {{.name = "a",
              .type = CONFIG_TYPE_INT,
              .def = "5",
              .min = "10",
              .help = "h",
              .target = &v},
             "default out of range"},
            {{.name = "a",
              .type = CONFIG_TYPE_INT,
              .def = "5",
              .min = "9",
              .max = "1",
              .help = "h",
              .target = &v},
             "min > max"},
            {{.name = "a", .type = CONFIG_TYPE_INT, .def = "5", .help = "h"}, "no target"},
            {{.name = "help", .type = CONFIG_TYPE_INT, .def = "5", .help = "h", .target = &v},
             "bad name"},
            {{.name = "a",
              .type = CONFIG_TYPE_BOOL,
              .def = "true",
              .min = "1",
              .help = "h",
              .target = &v},
             "bounds on a non-numeric type"},
    };
    char *argv[] = {"prog", NULL};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(config_parse(&cases[i].entry, 1, 1, argv, no_env, err, sizeof err), -1);
        ck_assert_msg(strstr(err, cases[i].fragment), "'%s' not in: %s", cases[i].fragment, err);
    }
    struct config_entry dup[2] = {
            {.name = "a", .type = CONFIG_TYPE_INT, .def = "1", .help = "h", .target = &v},
            {.name = "a", .type = CONFIG_TYPE_INT, .def = "1", .help = "h", .target = &v},
    };
    ck_assert_int_eq(config_parse(dup, 2, 1, argv, no_env, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "duplicate name"));
}
END_TEST

START_TEST(test_small_error_buffer_is_safe)
{
    char *argv[] = {"prog", "--port=70000", NULL};
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    ck_assert_int_eq(config_parse(table, N, 2, argv, no_env, tiny, sizeof tiny), -1);
    ck_assert_uint_eq(strlen(tiny), sizeof tiny - 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_env_overrides_default_and_flag_overrides_env);
    tcase_add_test(tc, test_empty_env_is_unset);
    tcase_add_test(tc, test_process_environment_when_envp_null);
    tcase_add_test(tc, test_every_type_from_flags);
    tcase_add_test(tc, test_bad_values);
    tcase_add_test(tc, test_bad_env_names_its_source);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_help_requested);
    tcase_add_test(tc, test_help_text_lists_every_entry);
    tcase_add_test(tc, test_size_syntax);
    tcase_add_test(tc, test_bool_syntax);
    tcase_add_test(tc, test_set_and_find);
    tcase_add_test(tc, test_table_mistakes_are_reported);
    tcase_add_test(tc, test_small_error_buffer_is_safe);
    suite_add_tcase(s, tc);
    return test_util_run_suite(s);
}
