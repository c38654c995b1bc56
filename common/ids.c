/*
 * common/ids.c — random identifiers from getrandom(2) (see ids.h).
 */
#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char ids_base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static const char *const ids_prefixes[IDS_KIND_COUNT] = {
        [IDS_KIND_REQUEST] = "req_",     [IDS_KIND_CHAT_COMPLETION] = "chatcmpl-",
        [IDS_KIND_COMPLETION] = "cmpl-", [IDS_KIND_MESSAGE] = "msg_",
        [IDS_KIND_TOOL_USE] = "toolu_",  [IDS_KIND_TOOL_CALL] = "call_",
};

/* The longest prefix plus the random part and the NUL must fit the caller's buffer. */
_Static_assert(sizeof "chatcmpl-" + IDS_RANDOM_CHARS <= IDS_SIZE, "IDS_SIZE too small");

const char *ids_kind_prefix(enum ids_kind kind)
{
    if ((int)kind < 0 || kind >= IDS_KIND_COUNT)
        return "";
    return ids_prefixes[kind];
}

void ids_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fatal: getrandom failed: %s\n", strerror(errno));
            abort();
        }
        p += got;
        n -= (size_t)got;
    }
}

void ids_random_base62(char *out, size_t n)
{
    unsigned char pool[64];
    size_t used = sizeof pool;
    size_t i = 0;
    while (i < n) {
        if (used == sizeof pool) {
            ids_random_bytes(pool, sizeof pool);
            used = 0;
        }
        /* 6 bits give 0..63; rejecting 62 and 63 keeps every character equally likely. */
        unsigned v = pool[used++] & 63u;
        if (v < 62)
            out[i++] = ids_base62[v];
    }
    out[n] = '\0';
}

void ids_random_hex(char *out, size_t n_bytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char chunk[32];
    size_t done = 0;
    while (done < n_bytes) {
        size_t k = n_bytes - done < sizeof chunk ? n_bytes - done : sizeof chunk;
        ids_random_bytes(chunk, k);
        for (size_t i = 0; i < k; i++) {
            out[2 * (done + i)] = hex[chunk[i] >> 4];
            out[2 * (done + i) + 1] = hex[chunk[i] & 15];
        }
        done += k;
    }
    out[2 * n_bytes] = '\0';
}

char *ids_new(enum ids_kind kind, char *out)
{
    const char *prefix = ids_kind_prefix(kind);
    size_t plen = strlen(prefix);
    memcpy(out, prefix, plen);
    ids_random_base62(out + plen, IDS_RANDOM_CHARS);
    return out;
}
