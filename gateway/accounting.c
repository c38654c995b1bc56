/*
 * gateway/accounting.c — batched, asynchronous request rows (see accounting.h).
 */
#include "accounting.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "db.h"
#include "log.h"
#include "timing.h"
#include "xalloc.h"

/* Rows in one INSERT (ACCOUNTING_COLS parameters each; PostgreSQL allows 65535). */
#define ACCOUNTING_BATCH 500
#define ACCOUNTING_COLS  19

/* A queued row: every column already as text (NULL = SQL NULL), owned. */
struct accounting_item {
    char *v[ACCOUNTING_COLS];
};

struct accounting {
    db_t *db; /* the writer thread's */
    char *gateway;
    size_t max_rows;
    int64_t flush_ms;

    pthread_mutex_t mu;
    pthread_cond_t wake;
    struct accounting_item *queue; /* pending rows, oldest first, under mu */
    size_t n, cap;
    size_t in_writer; /* rows the writer holds (counted against max_rows) */
    bool stopping, flush_now;
    uint64_t written, dropped;
    pthread_t thread;
    bool started;
};

static void accounting_item_free(struct accounting_item *it)
{
    for (int c = 0; c < ACCOUNTING_COLS; c++)
        free(it->v[c]);
}

static char *accounting_text(const char *s)
{
    return s && s[0] ? xstrdup(s) : NULL;
}

static char *accounting_num(double v, const char *fmt)
{
    return v < 0 ? NULL : xasprintf(fmt, v);
}

void accounting_submit(struct accounting *acc, const struct accounting_row *row)
{
    struct accounting_item it = {{NULL}};
    time_t secs = (time_t)(row->created_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char when[64];
    size_t len = strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(when + len, sizeof when - len, ".%06lld+00", (long long)(row->created_us % 1000000));
    it.v[0] = xstrndup(row->request_id, 128);
    it.v[1] = xstrdup(when);
    it.v[2] = accounting_text(acc->gateway);
    it.v[3] = row->api_key_id > 0 ? xasprintf("%lld", (long long)row->api_key_id) : NULL;
    it.v[4] = xstrdup(row->anthropic ? "anthropic" : "openai");
    it.v[5] = xstrdup(row->endpoint ? row->endpoint : "chat");
    it.v[6] = accounting_text(row->requested_model);
    it.v[7] = accounting_text(row->served_model);
    it.v[8] = accounting_text(row->node);
    it.v[9] = xstrdup(row->stream ? "true" : "false");
    it.v[10] = xasprintf("%d", row->status >= 100 && row->status <= 599 ? row->status : 500);
    it.v[11] = xstrdup(row->cancelled ? "true" : "false");
    it.v[12] = xstrdup(row->cold_start ? "true" : "false");
    it.v[13] = xasprintf("%lld", (long long)(row->tokens_in > 0 ? row->tokens_in : 0));
    it.v[14] = xasprintf("%lld", (long long)(row->tokens_out > 0 ? row->tokens_out : 0));
    it.v[15] = accounting_num(row->queue_wait_ms, "%.3f");
    it.v[16] = accounting_num(row->ttft_ms, "%.3f");
    it.v[17] = accounting_num(row->total_ms, "%.3f");
    it.v[18] = accounting_num(row->decode_tps, "%.3f");
    pthread_mutex_lock(&acc->mu);
    if (acc->n + acc->in_writer >= acc->max_rows || acc->stopping) {
        acc->dropped++;
        pthread_mutex_unlock(&acc->mu);
        accounting_item_free(&it);
        return;
    }
    acc->queue = xgrow(acc->queue, &acc->cap, acc->n + 1, sizeof *acc->queue);
    acc->queue[acc->n++] = it;
    if (acc->n >= ACCOUNTING_BATCH)
        pthread_cond_signal(&acc->wake);
    pthread_mutex_unlock(&acc->mu);
}

/* Writes items[0..n) in one statement. 0 on success; -1 on a connection failure (keep them);
 * -2 when the server refused the batch (drop it). */
static int accounting_write(struct accounting *acc, struct accounting_item *items, size_t n)
{
    static const char head[] =
            "INSERT INTO cortex.requests (request_id, created_at, gateway, api_key_id, dialect, "
            "endpoint, requested_model, served_model, node, stream, status_code, cancelled, "
            "cold_start, tokens_in, tokens_out, queue_wait_ms, ttft_ms, total_ms, decode_tps) "
            "VALUES ";
    static const char *const types[ACCOUNTING_COLS] = {
            "text", "timestamptz", "text",    "bigint", "text",    "text",    "text",
            "text", "text",        "boolean", "int",    "boolean", "boolean", "int",
            "int",  "float8",      "float8",  "float8", "float8"};
    if (db_ensure(acc->db) < 0)
        return -1;
    struct buf sql = BUF_INIT;
    buf_append_str(&sql, head);
    const char **params = xcalloc(n * ACCOUNTING_COLS, sizeof *params);
    for (size_t r = 0; r < n; r++) {
        buf_append_str(&sql, r ? ",(" : "(");
        for (int c = 0; c < ACCOUNTING_COLS; c++) {
            buf_appendf(&sql, "%s$%zu::%s", c ? "," : "", r * ACCOUNTING_COLS + (size_t)c + 1,
                        types[c]);
            params[r * ACCOUNTING_COLS + (size_t)c] = items[r].v[c];
        }
        buf_append_str(&sql, ")");
    }
    buf_append_str(&sql, " ON CONFLICT DO NOTHING");
    int rc = db_exec_command(acc->db, buf_cstr(&sql), (int)(n * ACCOUNTING_COLS), params, NULL);
    if (rc < 0) {
        rc = db_last_error_kind(acc->db) == DB_ERROR_QUERY ? -2 : -1;
        LOG_WARN("request rows not written (%s): %s", rc == -2 ? "dropped" : "kept for later",
                 db_last_error(acc->db));
    }
    free(params);
    buf_free(&sql);
    return rc;
}

static void *accounting_thread(void *arg)
{
    struct accounting *acc = arg;
    struct accounting_item *batch = NULL; /* rows taken from the queue, not yet written */
    size_t nb = 0, cap = 0;
    pthread_mutex_lock(&acc->mu);
    for (;;) {
        uint64_t give_up = 0;
        if (!acc->stopping && !acc->flush_now && acc->n < ACCOUNTING_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += acc->flush_ms / 1000;
            until.tv_nsec += (acc->flush_ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&acc->wake, &acc->mu, &until);
        }
        acc->flush_now = false;
        bool stopping = acc->stopping;
        /* Take everything queued (the writer's rows still count against max_rows). */
        batch = xgrow(batch, &cap, nb + acc->n + 1, sizeof *batch);
        if (acc->n)
            memcpy(batch + nb, acc->queue, acc->n * sizeof *batch);
        nb += acc->n;
        acc->in_writer = nb;
        acc->n = 0;
        pthread_mutex_unlock(&acc->mu);
        if (stopping)
            give_up = timing_now_ms() + 3000;
        size_t done = 0;
        uint64_t written = 0, dropped = 0;
        while (done < nb) {
            size_t k = nb - done < ACCOUNTING_BATCH ? nb - done : ACCOUNTING_BATCH;
            int rc = accounting_write(acc, batch + done, k);
            if (rc == -1) {
                if (!stopping || timing_now_ms() >= give_up)
                    break;
                struct timespec pause = {0, 100 * 1000000};
                nanosleep(&pause, NULL);
                continue;
            }
            for (size_t i = done; i < done + k; i++)
                accounting_item_free(&batch[i]);
            if (rc == 0)
                written += k;
            else
                dropped += k;
            done += k;
        }
        memmove(batch, batch + done, (nb - done) * sizeof *batch);
        nb -= done;
        pthread_mutex_lock(&acc->mu);
        acc->written += written;
        acc->dropped += dropped;
        acc->in_writer = nb;
        if (stopping) {
            acc->dropped += nb + acc->n;
            break;
        }
    }
    pthread_mutex_unlock(&acc->mu);
    for (size_t i = 0; i < nb; i++)
        accounting_item_free(&batch[i]);
    free(batch);
    return NULL;
}

struct accounting *accounting_create(const char *conninfo, const char *gateway, size_t max_rows,
                                     int64_t flush_ms, char **errmsg)
{
    *errmsg = NULL;
    db_options_t opts = {.application_name = "cortex-gateway-accounting",
                         .connect_timeout_s = 3,
                         .statement_timeout_ms = 10000,
                         .keepalives = true,
                         .backoff_max_ms = 2000};
    db_t *db = db_create(conninfo, &opts, errmsg);
    if (!db)
        return NULL;
    struct accounting *acc = xcalloc(1, sizeof *acc);
    acc->db = db;
    acc->gateway = xstrdup(gateway ? gateway : "");
    acc->max_rows = max_rows ? max_rows : 100000;
    acc->flush_ms = flush_ms > 0 ? flush_ms : 1000;
    pthread_mutex_init(&acc->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&acc->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&acc->thread, NULL, accounting_thread, acc) != 0) {
        *errmsg = xstrdup("cannot start the accounting thread");
        accounting_destroy(acc);
        return NULL;
    }
    acc->started = true;
    return acc;
}

void accounting_destroy(struct accounting *acc)
{
    if (!acc)
        return;
    if (acc->started) {
        pthread_mutex_lock(&acc->mu);
        acc->stopping = true;
        pthread_cond_signal(&acc->wake);
        pthread_mutex_unlock(&acc->mu);
        pthread_join(acc->thread, NULL);
    }
    if (acc->dropped)
        LOG_WARN("%llu request rows were dropped", (unsigned long long)acc->dropped);
    for (size_t i = 0; i < acc->n; i++)
        accounting_item_free(&acc->queue[i]);
    free(acc->queue);
    free(acc->gateway);
    db_destroy(acc->db);
    pthread_cond_destroy(&acc->wake);
    pthread_mutex_destroy(&acc->mu);
    free(acc);
}

void accounting_flush(struct accounting *acc)
{
    pthread_mutex_lock(&acc->mu);
    acc->flush_now = true;
    pthread_cond_signal(&acc->wake);
    pthread_mutex_unlock(&acc->mu);
}

void accounting_get_stats(struct accounting *acc, struct accounting_stats *out)
{
    pthread_mutex_lock(&acc->mu);
    out->written = acc->written;
    out->dropped = acc->dropped;
    out->buffered = acc->n + acc->in_writer;
    pthread_mutex_unlock(&acc->mu);
}
