/*
 * gateway/accounting.h — one row per request into cortex.requests, written off the request
 * path in batches.
 *
 * Contract: accounting_submit copies a row into a bounded in-memory buffer and returns at
 * once; a background thread with its own connection (db.h) writes the buffer every flush_ms
 * (or as soon as a batch fills) with multi-row INSERT ... ON CONFLICT DO NOTHING, so a batch
 * retried after a lost answer is harmless ((request_id, created_at) is the key and created_at
 * is the gateway's receive time, fixed in the row). While PostgreSQL is down rows wait in the
 * buffer and are written once it is back; a row that finds the buffer full is dropped and
 * counted, and so is a batch the server refuses as invalid (logged). accounting_destroy writes
 * what it can within a few seconds, then counts the rest as dropped. Thread-safe.
 */
#ifndef CORTEX_GATEWAY_ACCOUNTING_H
#define CORTEX_GATEWAY_ACCOUNTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One request. Strings are borrowed for the call (copied by accounting_submit); NULL or ""
 * is SQL NULL. Negative timings and speeds are SQL NULL. */
struct accounting_row {
    const char *request_id; /* required, 1-128 bytes */
    int64_t created_us;     /* receive time, Unix microseconds */
    int64_t api_key_id;     /* 0: none (open mode) */
    bool anthropic;         /* the client's dialect */
    const char *endpoint;   /* chat, completions, embeddings, messages, count_tokens */
    const char *requested_model, *served_model, *node;
    bool stream;
    int status; /* what the client got (100-599) */
    bool cancelled, cold_start;
    int64_t tokens_in, tokens_out;
    double queue_wait_ms, ttft_ms, total_ms, decode_tps;
};

struct accounting_stats {
    uint64_t written;  /* rows the database accepted (or already had) */
    uint64_t dropped;  /* rows lost: buffer full, refused batch, shutdown */
    uint64_t buffered; /* rows waiting now */
};

struct accounting;

/* gateway names this process in each row. max_rows 0 means 100000, flush_ms 0 means 1000.
 * NULL with *errmsg set (the caller frees it) on a malformed conninfo. */
struct accounting *accounting_create(const char *conninfo, const char *gateway, size_t max_rows,
                                     int64_t flush_ms, char **errmsg)
        __attribute__((warn_unused_result));
void accounting_destroy(struct accounting *acc); /* accepts NULL */

/* Queues a copy of row (or counts it dropped when the buffer is full). */
void accounting_submit(struct accounting *acc, const struct accounting_row *row);
/* Asks the writer to flush now (does not wait). */
void accounting_flush(struct accounting *acc);
void accounting_get_stats(struct accounting *acc, struct accounting_stats *out);

#endif
