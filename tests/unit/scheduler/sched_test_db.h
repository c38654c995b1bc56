/*
 * tests/unit/scheduler/sched_test_db.h — a migrated scratch database for the scheduler tests.
 *
 * Header-only (static inline): every test is one executable. sched_test_db_create() makes a
 * database with a unique name on the server of CORTEX_TEST_PG, applies sql/ with ops/migrate
 * (found through CORTEX_SOURCE_DIR, which ctest sets, or this file's own path) and returns a
 * connection string for it; sched_test_db_drop() removes it. Tests exit 77 (skipped) when
 * CORTEX_TEST_PG is unset. Helpers that check something fail the calling test with ck_assert.
 */
#ifndef CORTEX_SCHED_TEST_DB_H
#define CORTEX_SCHED_TEST_DB_H

#include <check.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "ids.h"
#include "xalloc.h"

extern char **environ;

struct sched_test_db {
    char *name;
    char *conninfo;
};

/* The repository root: CORTEX_SOURCE_DIR, or three folders above this header. */
static inline char *sched_test_source_dir(void)
{
    const char *env = getenv("CORTEX_SOURCE_DIR");
    if (env != NULL && env[0] != '\0')
        return xstrdup(env);
    const char *here = __FILE__;
    const char *cut = strstr(here, "/tests/unit/scheduler/");
    return cut ? xstrndup(here, (size_t)(cut - here)) : xstrdup(".");
}

/* base pointed at database name: key=value strings get a trailing dbname (the last one wins);
 * URIs get their path replaced. */
static inline char *sched_test_conninfo_for(const char *base, const char *name)
{
    if (strncmp(base, "postgres://", 11) != 0 && strncmp(base, "postgresql://", 13) != 0)
        return xasprintf("%s dbname=%s", base, name);
    const char *rest = strstr(base, "://") + 3;
    size_t host_len = strcspn(rest, "/?");
    const char *query = strchr(rest, '?');
    return xasprintf("%.*s/%s%s", (int)(rest - base + (long)host_len), base, name,
                     query ? query : "");
}

static inline db_t *sched_test_connect(const char *conninfo)
{
    char *err = NULL;
    db_t *db = db_create(conninfo, NULL, &err);
    ck_assert_msg(db != NULL, "db_create: %s", err ? err : "?");
    ck_assert_msg(db_ensure(db) == 0, "connect: %s", db_last_error(db));
    return db;
}

/* Runs a constant statement of the test, failing the test on error. */
static inline void sched_test_sql(db_t *db, const char *sql)
{
    ck_assert_msg(db_exec_command(db, sql, 0, NULL, NULL) == 0, "%s: %s", sql, db_last_error(db));
}

/* The first value of a constant query of the test (caller frees; NULL for SQL NULL). */
static inline char *sched_test_value(db_t *db, const char *sql)
{
    char *v = NULL;
    ck_assert_msg(db_query_value(db, sql, 0, NULL, &v) >= 0, "%s: %s", sql, db_last_error(db));
    return v;
}

/* As sched_test_value, compared with want ("NULL" for SQL NULL). */
static inline void sched_test_expect(db_t *db, const char *sql, const char *want)
{
    char *v = sched_test_value(db, sql);
    ck_assert_msg(strcmp(v ? v : "NULL", want) == 0, "%s: got %s, want %s", sql, v ? v : "NULL",
                  want);
    free(v);
}

/* Creates and migrates a scratch database; returns false when CORTEX_TEST_PG is unset. */
static inline bool sched_test_db_create(struct sched_test_db *t)
{
    const char *base = getenv("CORTEX_TEST_PG");
    if (base == NULL || base[0] == '\0')
        return false;
    char suffix[17];
    ids_random_hex(suffix, 8);
    t->name = xasprintf("cortex_sched_%d_%s", (int)getpid(), suffix);
    db_t *admin = sched_test_connect(base);
    char *create = xasprintf("CREATE DATABASE %s", t->name); /* a name we generated */
    sched_test_sql(admin, create);
    free(create);
    db_destroy(admin);
    t->conninfo = sched_test_conninfo_for(base, t->name);

    char *src = sched_test_source_dir();
    char *migrate = xasprintf("%s/ops/migrate", src);
    char *argv[] = {migrate, t->conninfo, NULL};
    pid_t pid;
    posix_spawn_file_actions_t quiet; /* "applied ..." lines on stdout are noise here */
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    ck_assert_int_eq(posix_spawn(&pid, migrate, &quiet, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&quiet);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "ops/migrate failed");
    free(migrate);
    free(src);
    return true;
}

static inline void sched_test_db_drop(struct sched_test_db *t)
{
    if (t->name == NULL)
        return;
    db_t *admin = sched_test_connect(getenv("CORTEX_TEST_PG"));
    char *drop = xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
    sched_test_sql(admin, drop);
    free(drop);
    db_destroy(admin);
    free(t->name);
    free(t->conninfo);
    t->name = t->conninfo = NULL;
}

#endif
